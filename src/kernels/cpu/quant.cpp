// BitNet fake-quantizers for training (DESIGN.md §3): absmean ternary weights,
// absmax int8 and absmean int4 activations. Same arithmetic and the same
// rounding (quant_round) as the integer inference path in ternary.cpp, so both
// see the same codes.
#include <omp.h>

#include <cmath>
#include <cstring>

#include "kernels/cpu/kernels.h"
#include "kernels/cpu/simd.h"
#include "kernels/cpu/ternary.h"

namespace bk {

static const float kSqrt7 = 2.6457513110645907f;  // sqrtf(7)
static const int kMaxThreads = 256;

static inline float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

// mean |w| accumulated in double, rounded to float. Per-thread partial sums are
// combined in thread order, so a run is reproducible for a given thread count
// (and the order of double additions does not show at float precision anyway).
static float absmean(const float* w, size_t n) {
  double part[kMaxThreads] = {0.0};
  const long nb = (long)((n + 4095) / 4096);
  int used = 1;
#pragma omp parallel if (n > 65536)
  {
    const int tid = omp_get_thread_num();
#pragma omp single
    used = omp_get_num_threads();
    double acc = 0.0;
#pragma omp for schedule(static)
    for (long b = 0; b < nb; b++) {
      const size_t i0 = (size_t)b * 4096, i1 = i0 + 4096 < n ? i0 + 4096 : n;
      size_t i = i0;
#ifdef BK_AVX2
      __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
      for (; i + 8 <= i1; i += 8) simd::abs_sum_pd(_mm256_loadu_ps(w + i), &a0, &a1);
      acc += simd::hsum256d(_mm256_add_pd(a0, a1));
#endif
      for (; i < i1; i++) acc += std::fabs((double)w[i]);
    }
    if (tid < kMaxThreads) part[tid] = acc;
  }
  double sum = 0.0;
  for (int t = 0; t < used && t < kMaxThreads; t++) sum += part[t];
  return n ? (float)(sum / (double)n) : 0.0f;
}

// ---- ternary weights ----------------------------------------------------------
// W [n] (whole tensor) -> Wq = gamma * clamp(round(W / (gamma + eps)), -1, 1)
float quant_ternary(float* wq, const float* w, size_t n) {
  const float gamma = absmean(w, n);
  const float denom = gamma + kQuantEps;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (size_t b = 0; b < (n + 4095) / 4096; b++) {
    const size_t i0 = b * 4096, i1 = i0 + 4096 < n ? i0 + 4096 : n;
    size_t i = i0;
#ifdef BK_AVX2
    const __m256 vd = _mm256_set1_ps(denom), vg = _mm256_set1_ps(gamma);
    const __m256 lo = _mm256_set1_ps(-1.0f), hi = _mm256_set1_ps(1.0f);
    for (; i + 8 <= i1; i += 8) {
      __m256 r = simd::quant_round256(_mm256_div_ps(_mm256_loadu_ps(w + i), vd));
      r = _mm256_min_ps(_mm256_max_ps(r, lo), hi);
      _mm256_storeu_ps(wq + i, _mm256_mul_ps(vg, r));
    }
#endif
    for (; i < i1; i++) wq[i] = gamma * clampf(quant_round(w[i] / denom), -1.0f, 1.0f);
  }
  return gamma;
}

float quant_ternary_codes(int8_t* q, const float* w, size_t n) {
  const float gamma = absmean(w, n);
  const float denom = gamma + kQuantEps;
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; i++) q[i] = (int8_t)clampf(quant_round(w[i] / denom), -1.0f, 1.0f);
  return gamma;
}

// ---- activations, one row ------------------------------------------------------
static inline float row_absmax(const float* x, int c) {
  int j = 0;
  float m = 0.0f;
#ifdef BK_AVX2
  __m256 vm = _mm256_setzero_ps();
  for (; j + 8 <= c; j += 8) vm = _mm256_max_ps(vm, simd::abs256(_mm256_loadu_ps(x + j)));
  m = simd::hmax256(vm);
#endif
  for (; j < c; j++) m = std::fmax(m, std::fabs(x[j]));
  return m;
}

static inline float row_absmean(const float* x, int c) {
  int j = 0;
  double sum = 0.0;
#ifdef BK_AVX2
  __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
  for (; j + 8 <= c; j += 8) simd::abs_sum_pd(_mm256_loadu_ps(x + j), &a0, &a1);
  sum = simd::hsum256d(_mm256_add_pd(a0, a1));
#endif
  for (; j < c; j++) sum += std::fabs((double)x[j]);
  return c ? (float)(sum / (double)c) : 0.0f;
}

// out[c] = clamp(round(x * s), -128, 127) / s, s = 127 / max(absmax, eps)
static inline void int8_row(float* out, const float* x, int c) {
  const float amax = row_absmax(x, c);
  const float s = 127.0f / (amax > kQuantEps ? amax : kQuantEps);
  int j = 0;
#ifdef BK_AVX2
  const __m256 vs = _mm256_set1_ps(s), lo = _mm256_set1_ps(-128.0f), hi = _mm256_set1_ps(127.0f);
  for (; j + 8 <= c; j += 8) {
    __m256 r = simd::quant_round256(_mm256_mul_ps(_mm256_loadu_ps(x + j), vs));
    r = _mm256_min_ps(_mm256_max_ps(r, lo), hi);
    _mm256_storeu_ps(out + j, _mm256_div_ps(r, vs));
  }
#endif
  for (; j < c; j++) out[j] = clampf(quant_round(x[j] * s), -128.0f, 127.0f) / s;
}

// out[c] = (b / sqrt7) * clamp(round((x * sqrt7) / (b + eps)), -8, 7), b = mean|x|
static inline void int4_row(float* out, const float* x, int c) {
  const float b = row_absmean(x, c);
  const float denom = b + kQuantEps;
  const float step = b / kSqrt7;
  int j = 0;
#ifdef BK_AVX2
  const __m256 vd = _mm256_set1_ps(denom), vstep = _mm256_set1_ps(step), v7 = _mm256_set1_ps(kSqrt7);
  const __m256 lo = _mm256_set1_ps(-8.0f), hi = _mm256_set1_ps(7.0f);
  for (; j + 8 <= c; j += 8) {
    __m256 r = simd::quant_round256(_mm256_div_ps(_mm256_mul_ps(_mm256_loadu_ps(x + j), v7), vd));
    r = _mm256_min_ps(_mm256_max_ps(r, lo), hi);
    _mm256_storeu_ps(out + j, _mm256_mul_ps(vstep, r));
  }
#endif
  for (; j < c; j++) out[j] = step * clampf(quant_round(x[j] * kSqrt7 / denom), -8.0f, 7.0f);
}

void quant_act_int8(float* out, const float* x, int n, int c) {
#pragma omp parallel for schedule(static) if ((size_t)n * c > 32768)
  for (int i = 0; i < n; i++) int8_row(out + (size_t)i * c, x + (size_t)i * c, c);
}

void quant_act_int4(float* out, const float* x, int n, int c) {
#pragma omp parallel for schedule(static) if ((size_t)n * c > 32768)
  for (int i = 0; i < n; i++) int4_row(out + (size_t)i * c, x + (size_t)i * c, c);
}

void quant_act(float* out, const float* x, int n, int c, int bits) {
  if (bits == 8) {
    quant_act_int8(out, x, n, c);
  } else if (bits == 4) {
    quant_act_int4(out, x, n, c);
  } else if (out != x) {
    memcpy(out, x, sizeof(float) * (size_t)n * c);
  }
}

float quant_int8_codes(int8_t* q, const float* x, int c, float* s_out) {
  const float amax = row_absmax(x, c);
  const float s = 127.0f / (amax > kQuantEps ? amax : kQuantEps);
#pragma omp simd
  for (int j = 0; j < c; j++) q[j] = (int8_t)clampf(quant_round(x[j] * s), -128.0f, 127.0f);
  if (s_out) *s_out = s;
  return 1.0f / s;
}

float quant_int4_codes(int8_t* q, const float* x, int c) {
  const float b = row_absmean(x, c);
  const float denom = b + kQuantEps;
#pragma omp simd
  for (int j = 0; j < c; j++) q[j] = (int8_t)clampf(quant_round(x[j] * kSqrt7 / denom), -8.0f, 7.0f);
  return b / kSqrt7;
}

// Used by rmsnorm_quant_forward (norm.cpp) on a row that is still in cache.
void quant_act_row_inplace(float* x, int c, int bits) {
  if (bits == 8)
    int8_row(x, x, c);
  else if (bits == 4)
    int4_row(x, x, c);
}

}  // namespace bk
