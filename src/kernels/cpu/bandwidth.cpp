// Read bandwidth measurement (bandwidth.h).
#include "kernels/cpu/bandwidth.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include <unistd.h>

#include "core/fs.h"
#include "core/timing.h"
#include "kernels/cpu/kernels.h"

namespace bk {

namespace {

// Four independent accumulators so the adds never wait on each other: the
// loop is bound by the loads alone. The sums are returned so that no pass is
// dead code.
__attribute__((target("avx512f"))) uint64_t sum_512(const uint8_t* p, size_t n) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 256 <= n; i += 256) {
    a0 = _mm512_add_epi64(a0, _mm512_load_si512((const void*)(p + i)));
    a1 = _mm512_add_epi64(a1, _mm512_load_si512((const void*)(p + i + 64)));
    a2 = _mm512_add_epi64(a2, _mm512_load_si512((const void*)(p + i + 128)));
    a3 = _mm512_add_epi64(a3, _mm512_load_si512((const void*)(p + i + 192)));
  }
  alignas(64) uint64_t out[8];
  _mm512_store_si512((void*)out, _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)));
  uint64_t s = 0;
  for (uint64_t v : out) s += v;
  return s;
}

__attribute__((target("avx2"))) uint64_t sum_256(const uint8_t* p, size_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 128 <= n; i += 128) {
    a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i*)(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i*)(p + i + 32)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i*)(p + i + 64)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i*)(p + i + 96)));
  }
  alignas(32) uint64_t out[4];
  _mm256_store_si256((__m256i*)out, _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
  return out[0] + out[1] + out[2] + out[3];
}

uint64_t sum_scalar(const uint8_t* p, size_t n) {
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  const uint64_t* q = (const uint64_t*)p;
  for (size_t i = 0; i + 4 <= n / 8; i += 4) a0 += q[i], a1 += q[i + 1], a2 += q[i + 2], a3 += q[i + 3];
  return a0 + a1 + a2 + a3;
}

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};

}  // namespace

size_t last_level_cache_bytes() {
  // The largest cache of cpu0 is the last level (L3 on x86 servers).
  size_t best = 0;
  for (int i = 0; i < 8; i++) {
    std::string text;
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    if (!read_file(dir + "size", &text).ok()) break;
    size_t v = (size_t)strtoull(text.c_str(), nullptr, 10);
    if (text.find('K') != std::string::npos) v <<= 10;
    if (text.find('M') != std::string::npos) v <<= 20;
    best = std::max(best, v);
  }
  if (best == 0) {  // no sysfs cache entries (some VMs): what the C library reads from cpuid
    const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE), l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    best = (size_t)std::max(0L, std::max(l3, l2));
  }
  return best;
}

MeasuredBandwidth measure_read_bandwidth(int threads, size_t buffer_bytes, int passes) {
  MeasuredBandwidth bw;
  bw.threads = std::max(1, threads);
  bw.llc_bytes = last_level_cache_bytes();
  if (buffer_bytes == 0) buffer_bytes = std::max<size_t>(2 * bw.llc_bytes, (size_t)1 << 30);
  const size_t slice = (buffer_bytes / bw.threads) & ~(size_t)4095;
  bw.buffer_bytes = slice * bw.threads;
  std::unique_ptr<uint8_t, FreeDeleter> buf((uint8_t*)std::aligned_alloc(4096, bw.buffer_bytes));
  if (!buf || slice == 0) {
    bw.method = "unavailable: could not allocate the buffer";
    return bw;
  }
  const KernelInfo& k = kernels_info();
  const bool w512 = k.vector_bits == 512, w256 = !w512 && k.vector_isa == "avx2";
  auto sum = [&](const uint8_t* p, size_t n) { return w512 ? sum_512(p, n) : w256 ? sum_256(p, n) : sum_scalar(p, n); };
  uint8_t* base = buf.get();
  volatile uint64_t sink = 0;
  for (int pass = -1; pass < passes; pass++) {
    uint64_t total = 0;
    double t0 = now_seconds();
#pragma omp parallel num_threads(bw.threads) reduction(+ : total)
    {
      uint8_t* p = base + (size_t)omp_get_thread_num() * slice;
      if (pass < 0)
        memset(p, omp_get_thread_num() + 1, slice);  // first touch: pages land near the reader
      else
        total += sum(p, slice);
    }
    const double dt = now_seconds() - t0;
    sink = sink + total;
    if (pass >= 0) bw.passes.push_back(bw.buffer_bytes / dt / 1e9);
  }
  std::vector<double> s = bw.passes;
  std::sort(s.begin(), s.end());
  bw.best_gb_per_s = s.back();
  bw.gb_per_s = s.size() % 2 ? s[s.size() / 2] : 0.5 * (s[s.size() / 2 - 1] + s[s.size() / 2]);
  bw.method = std::string("measured: ") + std::to_string(bw.threads) + " threads each summing one contiguous " +
              std::to_string(slice >> 20) + " MiB slice with " + (w512 ? "512" : w256 ? "256" : "64") +
              "-bit loads, median of " + std::to_string(passes) + " passes after a first-touch pass";
  return bw;
}

}  // namespace bk
