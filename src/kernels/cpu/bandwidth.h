#pragma once
// Measured memory read bandwidth of this machine, the ceiling of decode: a
// buffer several times the last-level cache, split in one contiguous slice
// per thread (the threads the kernels use, OpenMP), summed with the widest
// loads present, timed per pass. Decode reads its weights once per token, so
// bytes per token / seconds per token against this figure says how close to
// the memory it runs.
#include <cstddef>
#include <string>
#include <vector>

namespace bk {

struct MeasuredBandwidth {
  double gb_per_s = 0;           // median of the passes, 1e9 bytes/s
  double best_gb_per_s = 0;      // fastest pass
  std::vector<double> passes;    // GB/s of every timed pass
  size_t buffer_bytes = 0;
  size_t llc_bytes = 0;          // last-level cache of cpu0 (0 if unknown)
  int threads = 0;
  std::string method;            // what was run, in words
};

// Last-level cache size of cpu0: sysfs, else sysconf (0 if unknown).
size_t last_level_cache_bytes();
// buffer_bytes 0: max(2 x last-level cache, 1 GiB). One untimed pass (first
// touch by the thread that reads the slice), then `passes` timed ones.
MeasuredBandwidth measure_read_bandwidth(int threads, size_t buffer_bytes = 0, int passes = 7);

}  // namespace bk
