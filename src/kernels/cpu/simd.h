#pragma once
// Private to kernels/cpu: small AVX2 helpers (compiled in when the build
// targets AVX2, e.g. -march=native on this machine) with scalar fallbacks.
#include <cmath>
#include <cstddef>

#include "kernels/cpu/ternary.h"  // quant_round and BITKD_QUANT_ROUND_HALF_EVEN

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define BK_AVX2 1
#endif

namespace bk {
namespace simd {

#ifdef BK_AVX2
// exp(x) for 8 floats: Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2,
// then a degree-6 minimax polynomial for e^r (relative error ~1.5e-7, close to
// expf). Inputs are clamped to about [-88.4, 88.7]; below the lower end the
// result flushes to 0, which is what softmax wants.
static inline __m256 exp256(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.3762626647949f);
  const __m256 lo = _mm256_set1_ps(-88.3762626647949f);
  x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
  __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
  fx = _mm256_floor_ps(fx);
  // r = x - fx*ln2, with ln2 split in two so the product is exact in the high part.
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 z = _mm256_mul_ps(x, x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, z, x);
  y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
  // 2^n by building the exponent bits; n = -127 gives 0 (flush).
  __m256i n = _mm256_cvttps_epi32(fx);
  n = _mm256_add_epi32(n, _mm256_set1_epi32(127));
  n = _mm256_max_epi32(n, _mm256_setzero_si256());
  __m256 pow2n = _mm256_castsi256_ps(_mm256_slli_epi32(n, 23));
  return _mm256_mul_ps(y, pow2n);
}

// quant_round() for 8 floats, bit for bit (same rule, same operations).
static inline __m256 quant_round256(__m256 x) {
#if BITKD_QUANT_ROUND_HALF_EVEN
  return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  const __m256 t = _mm256_round_ps(x, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 frac = _mm256_andnot_ps(sign_bit, _mm256_sub_ps(x, t));  // |x - t|, exact
  const __m256 ge = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
  const __m256 one = _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(x, sign_bit));  // copysign(1, x)
  return _mm256_add_ps(t, _mm256_and_ps(ge, one));
#endif
}

static inline __m256 abs256(__m256 x) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x); }

// sum of |x| over 8 floats into two double accumulators (exact products, no rounding
// beyond the double additions).
static inline void abs_sum_pd(__m256 x, __m256d* a0, __m256d* a1) {
  x = abs256(x);
  *a0 = _mm256_add_pd(*a0, _mm256_cvtps_pd(_mm256_castps256_ps128(x)));
  *a1 = _mm256_add_pd(*a1, _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)));
}

static inline double hsum256d(__m256d v) {
  __m128d lo = _mm256_castpd256_pd128(v), hi = _mm256_extractf128_pd(v, 1);
  lo = _mm_add_pd(lo, hi);
  return _mm_cvtsd_f64(_mm_add_sd(lo, _mm_unpackhi_pd(lo, lo)));
}

static inline float hsum256(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  __m128 sh = _mm_movehdup_ps(lo);
  lo = _mm_add_ps(lo, sh);
  sh = _mm_movehl_ps(sh, lo);
  lo = _mm_add_ss(lo, sh);
  return _mm_cvtss_f32(lo);
}

static inline float hmax256(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_max_ps(lo, hi);
  lo = _mm_max_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_max_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}
#endif

// Scalar exp with the same algorithm and the same fused operations as exp256,
// so vector bodies and scalar tails agree bit for bit.
static inline float exp1(float x) {
  if (x > 88.3762626647949f) x = 88.3762626647949f;
  if (x < -88.3762626647949f) x = -88.3762626647949f;
  float fx = std::floor(std::fma(x, 1.44269504088896341f, 0.5f));
  float r = std::fma(-fx, 0.693359375f, x);
  r = std::fma(-fx, -2.12194440e-4f, r);
  float z = r * r;
  float y = 1.9875691500e-4f;
  y = std::fma(y, r, 1.3981999507e-3f);
  y = std::fma(y, r, 8.3334519073e-3f);
  y = std::fma(y, r, 4.1665795894e-2f);
  y = std::fma(y, r, 1.6666665459e-1f);
  y = std::fma(y, r, 5.0000001201e-1f);
  y = std::fma(y, z, r);
  y = y + 1.0f;
  int n = (int)fx + 127;
  if (n <= 0) return 0.0f;
  return std::ldexp(y, n - 127);
}

}  // namespace simd
}  // namespace bk
