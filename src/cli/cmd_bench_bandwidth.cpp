// bitkd bench bandwidth: the machine's memory read bandwidth on the kernels'
// threads (the THREADS rule), as one JSON object; decode's ceiling.
#include <omp.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "cli/machine_json.h"
#include "core/fs.h"
#include "kernels/cpu/bandwidth.h"

namespace bk {

static int run_bench_bandwidth(Args& a) {
  long long mib = 0, passes = 0;
  if (!arg_int_or_report(a, "mib", &mib) || !arg_int_or_report(a, "passes", &passes)) return 2;
  if (mib < 0 || passes < 1) return cli_fail(a, errorf("--mib must be >= 0 (0: automatic) and --passes >= 1"));
  const MeasuredBandwidth bw = measure_read_bandwidth(omp_get_max_threads(), (size_t)mib << 20, (int)passes);
  if (bw.passes.empty()) return cli_fail(a, errorf("bench bandwidth: %s", bw.method.c_str()));
  nlohmann::ordered_json j;
  j["bench"] = "bandwidth";
  j["machine"] = machine_json();
  j["threads"] = bw.threads;
  j["read_GB_per_s"] = bw.gb_per_s;
  j["best_GB_per_s"] = bw.best_gb_per_s;
  j["passes_GB_per_s"] = bw.passes;
  j["buffer_bytes"] = bw.buffer_bytes;
  j["last_level_cache_bytes"] = bw.llc_bytes;
  j["method"] = bw.method;
  std::string text = j.dump(2) + "\n";
  const std::string out = arg_str(a, "out");
  if (!out.empty()) {
    Status st = write_file_atomic(out, text);
    if (!st.ok()) return cli_fail(a, st);
  }
  fputs(text.c_str(), stdout);
  return 0;
}

const Command& command_bench_bandwidth() {
  static const Command c = {
      "bench bandwidth",
      "Memory read bandwidth (GB/s) on the kernels' threads, the ceiling of decode (JSON)",
      "Streams a buffer larger than the last-level cache (default max(2 x LLC, 1 GiB)), one contiguous slice\n"
      "per thread (THREADS), and prints the median and best GB/s of the timed passes with the machine\n"
      "object. bench infer measures the same way and reports decode's bytes per token against it.",
      {
          {"mib", nullptr, "0", "Buffer size in MiB (0: max(2 x last-level cache, 1 GiB))"},
          {"passes", nullptr, "7", "Timed passes over the buffer (median reported)"},
          {"out", nullptr, "", "Also write the JSON here"},
      },
      run_bench_bandwidth,
  };
  return c;
}

}  // namespace bk
