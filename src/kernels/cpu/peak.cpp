// Peak measurements (peak.h).
#include "kernels/cpu/peak.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "core/fs.h"
#include "core/timing.h"
#include "kernels/cpu/kernels.h"

namespace bk {

namespace {

constexpr int kChains = 12;  // hides a 4-5 cycle FMA latency on two FMA ports

__attribute__((target("avx2,fma"))) float fma_loop_256(long iters, float seed) {
  __m256 acc[kChains];
  for (int i = 0; i < kChains; i++) acc[i] = _mm256_set1_ps(seed + 0.001f * i);
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (long it = 0; it < iters; it++)
    for (int i = 0; i < kChains; i++) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  __m256 s = acc[0];
  for (int i = 1; i < kChains; i++) s = _mm256_add_ps(s, acc[i]);
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0];  // consumed by the caller so the loop is not dead code
}

__attribute__((target("avx512f"))) float fma_loop_512(long iters, float seed) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; i++) acc[i] = _mm512_set1_ps(seed + 0.001f * i);
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (long it = 0; it < iters; it++)
    for (int i = 0; i < kChains; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  __m512 s = acc[0];
  for (int i = 1; i < kChains; i++) s = _mm512_add_ps(s, acc[i]);
  float out[16];
  _mm512_storeu_ps(out, s);
  return out[0];  // consumed by the caller so the loop is not dead code
}

double cpuinfo_mhz() {
  std::string text;
  if (!read_file("/proc/cpuinfo", &text).ok()) return 0;
  size_t p = text.find("cpu MHz");
  if (p == std::string::npos) return 0;
  p = text.find(':', p);
  return p == std::string::npos ? 0 : atof(text.c_str() + p + 1);
}

}  // namespace

MeasuredPeak measure_fma_peak(int threads) {
  MeasuredPeak pk;
  pk.mhz = cpuinfo_mhz();
  const KernelInfo& k = kernels_info();
  const bool w512 = k.vector_bits == 512;
  if (!w512 && k.vector_isa != "avx2") {
    pk.method = "unavailable: the CPU has neither AVX-512 nor AVX2/FMA";
    return pk;
  }
  const int lanes = w512 ? 16 : 8;
  auto loop = [&](long iters, float seed) { return w512 ? fma_loop_512(iters, seed) : fma_loop_256(iters, seed); };
  // Calibrate the iteration count to ~0.25 s on one thread, then run it on all threads at once.
  long iters = 1 << 20;
  volatile double sink = 0;
  for (;;) {
    double t0 = now_seconds();
    sink = sink + loop(iters, 1.0f);
    double dt = now_seconds() - t0;
    if (dt > 0.05) {
      iters = (long)(iters * 0.25 / dt);
      break;
    }
    iters *= 4;
  }
  double best = 0;
  for (int rep = 0; rep < 3; rep++) {
    double t0 = now_seconds();
#pragma omp parallel num_threads(threads)
    {
      double r = loop(iters, 1.0f + omp_get_thread_num());
#pragma omp atomic
      sink += r;
    }
    double dt = now_seconds() - t0;
    best = std::max(best, (double)threads * iters * kChains * lanes * 2 / dt);
  }
  pk.gflops = best / 1e9;
  if (pk.mhz > 0) pk.flops_per_cycle_per_core = best / threads / (pk.mhz * 1e6);
  pk.method = std::string("measured: ") + std::to_string(kChains) + " independent " + (w512 ? "512" : "256") +
              "-bit FMA chains per thread on " + std::to_string(threads) +
              " threads, best of 3 runs of ~0.25 s (flops = threads x iterations x " + std::to_string(kChains) +
              " x " + std::to_string(lanes) + " lanes x 2)";
  return pk;
}

MeasuredPeak measure_sgemm_peak(int threads, int n) {
  MeasuredPeak pk;
  pk.mhz = cpuinfo_mhz();
  const int saved = kernels_get_threads();
  kernels_set_threads(threads);
  std::vector<float> a((size_t)n * n), b((size_t)n * n), c((size_t)n * n);
  for (size_t i = 0; i < a.size(); i++) a[i] = (float)(i % 7) * 0.1f, b[i] = (float)(i % 5) * 0.1f;
  gemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);  // warm-up
  double best = 0;
  for (int rep = 0; rep < 3; rep++) {
    double t0 = now_seconds();
    gemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    best = std::max(best, 2.0 * n * n * (double)n / (now_seconds() - t0));
  }
  kernels_set_threads(saved);
  pk.gflops = best / 1e9;
  if (pk.mhz > 0) pk.flops_per_cycle_per_core = best / threads / (pk.mhz * 1e6);
  pk.method = "measured: sgemm " + std::to_string(n) + "^3 on " + std::to_string(threads) + " threads with " +
              kernels_info().blas_family + " kernels, best of 3 after a warm-up call";
  return pk;
}

}  // namespace bk
