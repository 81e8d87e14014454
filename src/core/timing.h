#pragma once
// Wall-clock and process metrics used by progress bars, benchmarks and reports.
#include <cstdint>
#include <string>

namespace bk {

double now_seconds();             // monotonic clock
std::string utc_timestamp_iso();  // "2026-11-23T16:27:43Z"
int64_t peak_rss_bytes();         // VmHWM of this process (0 if unknown)
int64_t current_rss_bytes();      // VmRSS of this process (0 if unknown)
std::string cpu_model_name();     // from /proc/cpuinfo, "" if unknown
int hardware_threads();

}  // namespace bk
