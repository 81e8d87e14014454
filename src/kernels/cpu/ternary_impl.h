#pragma once
// Private to ternary*.cpp: what the scalar and AVX2 translation units share.
#include <cstdint>

#include "kernels/cpu/ternary.h"

namespace bk {
namespace ternary_detail {

constexpr float kSqrt7 = 2.6457513110645906f;
constexpr float kActEps = 1e-5f;

// One matmul call, as the row kernels see it. Exactly one of acc / y is set.
struct KernelArgs {
  const TernaryMatrix* w;
  const int8_t* q;        // [T, stride]
  int64_t stride;
  const int32_t* qsum;    // [T]
  const float* scale;     // [T]
  int32_t T;
  int32_t* acc;           // [T, rows] or null
  float* y;               // [T, rows] or null
};

// The single epilogue both backends use, so they round identically.
inline void store_out(const KernelArgs& k, int32_t t, int32_t o, int32_t v) {
  int64_t idx = (int64_t)t * k.w->rows + o;
  if (k.y)
    k.y[idx] = (float)v * bitlinear_scale(k.w->gamma, k.scale[t]);
  else
    k.acc[idx] = v;
}

// Fixed-order sum of |x| in double: element i goes to partial i % 8, partials
// are combined pairwise. The AVX2 path fills the same partials in the same
// order, so int4 scales agree bit for bit.
inline double combine_partials(const double p[8]) {
  return ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
}

// Rows [r0, r1) of w for all T tokens.
void i2_rows_avx2(const KernelArgs& k, int32_t r0, int32_t r1);
void i2_rows_vnni(const KernelArgs& k, int32_t r0, int32_t r1);  // AVX-512 VNNI (VL)
void t1_rows_avx2(const KernelArgs& k, int32_t r0, int32_t r1);
// max|x| and the 8 abs-sum partials over x[0, n).
void act_stats_avx2(const float* x, int32_t n, float* amax, double partials[8]);
// q[i] = clamp(round(x[i] * mul), lo, hi); returns sum of q. When div is true
// the value is (x[i] * mul) / div_by instead (the int4 formula).
int32_t act_round_avx2(const float* x, int32_t n, float mul, bool div, float div_by, float lo, float hi,
                       int8_t* q);

}  // namespace ternary_detail
}  // namespace bk
