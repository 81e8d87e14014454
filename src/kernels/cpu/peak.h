#pragma once
// Measured fp32 peaks of this machine, for MFU in benchmarks: an FMA loop on
// the widest vector unit present, and a large sgemm through the BLAS kernel
// family that the matmuls run (kernels_info()).
#include <string>

namespace bk {

struct MeasuredPeak {
  double gflops = 0;                     // all threads together; 0 if it could not be measured
  double flops_per_cycle_per_core = 0;   // at the /proc/cpuinfo clock (0 if unknown)
  double mhz = 0;                        // /proc/cpuinfo "cpu MHz" (0 if unknown)
  std::string method;                    // what was run, in words
};

// 12 independent FMA chains per thread (256- or 512-bit, whichever is the
// widest unit), calibrated to ~0.25 s, best of 3 runs on `threads` threads.
MeasuredPeak measure_fma_peak(int threads);
// C[n,n] = A B, n = 2048 by default, best of 3 after one untimed call.
MeasuredPeak measure_sgemm_peak(int threads, int n = 2048);

}  // namespace bk
