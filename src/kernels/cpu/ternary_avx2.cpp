// AVX2 (and AVX-512 VNNI) kernels for packed ternary matrices. Compiled with
// per-function target attributes so the library still runs on x86-64 without
// them; ternary.cpp only calls these after checking the CPU.
//
// Dot products use unsigned codes (w + 1 in {0, 1, 2}) times signed int8
// activations with maddubs: each int16 lane is c0*q0 + c1*q1, |.| <= 2*2*128 =
// 512, and at most 5 planes are added in int16 before widening (<= 2560), so
// nothing saturates. sum_i q_i * w_i = sum_i q_i * code_i - sum_i q_i.
#include "kernels/cpu/ternary_impl.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#include <algorithm>

#define BK_AVX2 __attribute__((target("avx2,fma")))

namespace bk {
namespace ternary_detail {

namespace {

BK_AVX2 inline int32_t hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

BK_AVX2 inline __m256i load256(const void* p) { return _mm256_loadu_si256((const __m256i*)p); }
BK_AVX2 inline __m128i load128(const void* p) { return _mm_loadu_si128((const __m128i*)p); }
BK_AVX2 inline __m256i join128(__m128i lo, __m128i hi) {
  return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}

// The 4 code planes of a 32-byte I2 block: 32 consecutive codes each.
BK_AVX2 inline void i2_planes(__m256i wb, __m256i c[4]) {
  const __m256i m3 = _mm256_set1_epi8(3);
  c[0] = _mm256_and_si256(wb, m3);
  c[1] = _mm256_and_si256(_mm256_srli_epi16(wb, 2), m3);
  c[2] = _mm256_and_si256(_mm256_srli_epi16(wb, 4), m3);
  c[3] = _mm256_and_si256(_mm256_srli_epi16(wb, 6), m3);
}

// Independent accumulators per token in the I2 tiles: with one or two tokens
// one chain of dependent multiply-adds would bound the loop.
constexpr int accumulators(int tokens) { return tokens == 1 ? 4 : tokens == 2 ? 2 : 1; }

// Blocks summed in int16 before widening: a block adds at most 5 planes of
// 512 per lane, so 8 blocks stay below 8 * 5 * 512 = 20480 < 32767.
constexpr int32_t kGroup = 8;

// --- I2 ---------------------------------------------------------------------

// One output row o for tokens [t0, t0 + TT): the 4 code planes of each block
// are unpacked once and reused for all TT tokens.
// With one or two tokens the planes go to NA separate int16 sums, so the
// loop is not one chain of dependent adds (which bounded decode); each sum
// then takes fewer planes per block, so the int16 bound above still holds.
template <int TT>
BK_AVX2 void i2_row_tile(const KernelArgs& k, int32_t o, int32_t t0) {
  constexpr int NA = accumulators(TT);
  const TernaryMatrix& w = *k.w;
  const uint8_t* row = w.data.data() + (int64_t)o * w.row_bytes;
  const int32_t nfull = w.cols_pad / 128;
  const __m256i m3 = _mm256_set1_epi8(3);
  const __m256i ones = _mm256_set1_epi16(1);
  const int8_t* qt[TT];
  __m256i acc[TT];
  for (int t = 0; t < TT; t++) {
    qt[t] = k.q + (int64_t)(t0 + t) * k.stride;
    acc[t] = _mm256_setzero_si256();
  }
  for (int32_t g0 = 0; g0 < nfull; g0 += kGroup) {
    const int32_t g1 = g0 + kGroup < nfull ? g0 + kGroup : nfull;
    __m256i s[TT][NA];
    for (int t = 0; t < TT; t++)
      for (int j = 0; j < NA; j++) s[t][j] = _mm256_setzero_si256();
    for (int32_t b = g0; b < g1; b++) {
      const __m256i wb = load256(row + b * 32);
      __m256i c[4];
      i2_planes(wb, c);
      for (int t = 0; t < TT; t++) {
        const int8_t* a = qt[t] + b * 128;
        for (int p = 0; p < 4; p++)
          s[t][p % NA] = _mm256_add_epi16(s[t][p % NA], _mm256_maddubs_epi16(c[p], load256(a + 32 * p)));
      }
    }
    for (int t = 0; t < TT; t++)
      for (int j = 0; j < NA; j++) acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(s[t][j], ones));
  }
  if (w.cols_pad % 128) {
    // Half block: byte j holds weights j + 16k, so planes (0, 1) and (2, 3)
    // side by side cover weights [0, 32) and [32, 64) in order.
    const __m128i wb = load128(row + nfull * 32);
    const __m256i c01 = _mm256_and_si256(join128(wb, _mm_srli_epi16(wb, 2)), m3);
    const __m256i c23 = _mm256_and_si256(join128(_mm_srli_epi16(wb, 4), _mm_srli_epi16(wb, 6)), m3);
    for (int t = 0; t < TT; t++) {
      const int8_t* a = qt[t] + nfull * 128;
      __m256i s = _mm256_maddubs_epi16(c01, load256(a));
      s = _mm256_add_epi16(s, _mm256_maddubs_epi16(c23, load256(a + 32)));
      acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(s, ones));
    }
  }
  for (int t = 0; t < TT; t++) store_out(k, t0 + t, o, hsum_epi32(acc[t]) - k.qsum[t0 + t]);
}

// --- T1 ---------------------------------------------------------------------

// Digits are read from xs = x ^ 0x80 (x as a signed byte minus 128). The top
// base-3 digit of x is floor(3x / 256) = (x >= 86) + (x >= 171), i.e.
// (xs > -43) + (xs > 42), and the next x is 3x mod 256, which in the biased
// form is again xs <- 3 * xs mod 256 (3 * 128 = 128 mod 256), so the bias is
// applied once per block rather than once per digit.
BK_AVX2 inline __m256i t1_bias(__m256i x) { return _mm256_xor_si256(x, _mm256_set1_epi8((char)0x80)); }

BK_AVX2 inline __m256i t1_digit(__m256i* xs) {
  const __m256i ge86 = _mm256_cmpgt_epi8(*xs, _mm256_set1_epi8(85 - 128));
  const __m256i ge171 = _mm256_cmpgt_epi8(*xs, _mm256_set1_epi8(170 - 128));
  *xs = _mm256_add_epi8(*xs, _mm256_add_epi8(*xs, *xs));
  return _mm256_sub_epi8(_mm256_sub_epi8(_mm256_setzero_si256(), ge86), ge171);
}

template <int TT>
BK_AVX2 void t1_row_tile(const KernelArgs& k, int32_t o, int32_t t0) {
  const TernaryMatrix& w = *k.w;
  const uint8_t* row = w.data.data() + (int64_t)o * w.row_bytes;
  const int32_t nfull = w.cols_pad / 160;
  const __m256i ones = _mm256_set1_epi16(1);
  const int8_t* qt[TT];
  __m256i acc[TT];
  for (int t = 0; t < TT; t++) {
    qt[t] = k.q + (int64_t)(t0 + t) * k.stride;
    acc[t] = _mm256_setzero_si256();
  }
  for (int32_t g0 = 0; g0 < nfull; g0 += kGroup) {
    const int32_t g1 = g0 + kGroup < nfull ? g0 + kGroup : nfull;
    __m256i s[TT];
    for (int t = 0; t < TT; t++) s[t] = _mm256_setzero_si256();
    for (int32_t b = g0; b < g1; b++) {
      __m256i x = t1_bias(load256(row + b * 32));
      const __m256i c0 = t1_digit(&x);
      const __m256i c1 = t1_digit(&x);
      const __m256i c2 = t1_digit(&x);
      const __m256i c3 = t1_digit(&x);
      const __m256i c4 = t1_digit(&x);
      for (int t = 0; t < TT; t++) {
        const int8_t* a = qt[t] + b * 160;
        s[t] = _mm256_add_epi16(s[t], _mm256_maddubs_epi16(c0, load256(a)));
        s[t] = _mm256_add_epi16(s[t], _mm256_maddubs_epi16(c1, load256(a + 32)));
        s[t] = _mm256_add_epi16(s[t], _mm256_maddubs_epi16(c2, load256(a + 64)));
        s[t] = _mm256_add_epi16(s[t], _mm256_maddubs_epi16(c3, load256(a + 96)));
        s[t] = _mm256_add_epi16(s[t], _mm256_maddubs_epi16(c4, load256(a + 128)));
      }
    }
    for (int t = 0; t < TT; t++) acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(s[t], ones));
  }
  if (w.cols_pad % 160) {
    // Half block (byte j holds weights j + 16k): put the 16 bytes in the low
    // lane and the bytes times 3 (one digit ahead) in the high lane, so each
    // 256-bit digit step yields planes (0, 1), then (2, 3), then (4, junk).
    const __m128i lo = load128(row + nfull * 32);
    __m256i x = t1_bias(join128(lo, _mm_add_epi8(lo, _mm_add_epi8(lo, lo))));
    const __m256i c01 = t1_digit(&x);
    x = _mm256_add_epi8(x, _mm256_add_epi8(x, x));  // skip the digit the other lane used
    const __m256i c23 = t1_digit(&x);
    x = _mm256_add_epi8(x, _mm256_add_epi8(x, x));
    const __m256i c4 = _mm256_castsi128_si256(_mm256_castsi256_si128(t1_digit(&x)));
    for (int t = 0; t < TT; t++) {
      const int8_t* a = qt[t] + nfull * 160;
      const __m256i a4 = _mm256_inserti128_si256(_mm256_setzero_si256(), load128(a + 64), 0);
      __m256i s = _mm256_maddubs_epi16(c01, load256(a));
      s = _mm256_add_epi16(s, _mm256_maddubs_epi16(c23, load256(a + 32)));
      s = _mm256_add_epi16(s, _mm256_maddubs_epi16(c4, a4));
      acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(s, ones));
    }
  }
  for (int t = 0; t < TT; t++) store_out(k, t0 + t, o, hsum_epi32(acc[t]) - k.qsum[t0 + t]);
}

// Rows are taken in chunks of about 32 KiB of packed weights; within a chunk,
// token tiles of TMAX (then 4, 2, 1 for the remainder) run over every row, so
// the weight chunk stays in L2 while a token tile's activations stay in L1.
template <void (*FMAX)(const KernelArgs&, int32_t, int32_t), int TMAX,
          void (*F4)(const KernelArgs&, int32_t, int32_t), void (*F2)(const KernelArgs&, int32_t, int32_t),
          void (*F1)(const KernelArgs&, int32_t, int32_t)>
void rows_tiled(const KernelArgs& k, int32_t r0, int32_t r1) {
  const int64_t rb = k.w->row_bytes > 0 ? k.w->row_bytes : 1;
  const int32_t chunk = k.T == 1 ? r1 - r0 : (int32_t)std::max<int64_t>(1, (32 << 10) / rb);
  for (int32_t c0 = r0; c0 < r1; c0 += chunk) {
    const int32_t c1 = std::min(r1, c0 + chunk);
    int32_t t = 0;
    for (; t + TMAX <= k.T; t += TMAX)
      for (int32_t o = c0; o < c1; o++) FMAX(k, o, t);
    if (TMAX > 4 && t + 4 <= k.T) {
      for (int32_t o = c0; o < c1; o++) F4(k, o, t);
      t += 4;
    }
    if (t + 2 <= k.T) {
      for (int32_t o = c0; o < c1; o++) F2(k, o, t);
      t += 2;
    }
    if (t < k.T)
      for (int32_t o = c0; o < c1; o++) F1(k, o, t);
  }
}

// --- I2 with AVX-512 VNNI -----------------------------------------------------

#define BK_VNNI __attribute__((target("avx2,fma,avx512f,avx512vl,avx512vnni")))

// i2_row_tile with vpdpbusd (256-bit, AVX512-VL): each code plane times the
// activations is summed straight into int32 lanes, no int16 stage. With few
// tokens the planes go to NA separate accumulators, so the loop is not one
// chain of dependent vpdpbusd (their latency, not memory, bounded decode).
// Integer sums are exact, so the result equals the AVX2 and scalar kernels'
// bit for bit.
template <int TT>
BK_VNNI void i2_row_tile_vnni(const KernelArgs& k, int32_t o, int32_t t0) {
  constexpr int NA = accumulators(TT);
  const TernaryMatrix& w = *k.w;
  const uint8_t* row = w.data.data() + (int64_t)o * w.row_bytes;
  const int32_t nfull = w.cols_pad / 128;
  const __m256i m3 = _mm256_set1_epi8(3);
  const int8_t* qt[TT];
  __m256i acc[TT][NA];
  for (int t = 0; t < TT; t++) {
    qt[t] = k.q + (int64_t)(t0 + t) * k.stride;
    for (int j = 0; j < NA; j++) acc[t][j] = _mm256_setzero_si256();
  }
  for (int32_t b = 0; b < nfull; b++) {
    const __m256i wb = _mm256_loadu_si256((const __m256i*)(row + b * 32));
    __m256i c[4];
    i2_planes(wb, c);
    for (int t = 0; t < TT; t++) {
      const int8_t* a = qt[t] + b * 128;
      for (int p = 0; p < 4; p++)
        acc[t][p % NA] = _mm256_dpbusd_epi32(acc[t][p % NA], c[p], _mm256_loadu_si256((const __m256i*)(a + 32 * p)));
    }
  }
  if (w.cols_pad % 128) {
    const __m128i wb = _mm_loadu_si128((const __m128i*)(row + nfull * 32));
    const __m256i c01 = _mm256_and_si256(join128(wb, _mm_srli_epi16(wb, 2)), m3);
    const __m256i c23 = _mm256_and_si256(join128(_mm_srli_epi16(wb, 4), _mm_srli_epi16(wb, 6)), m3);
    for (int t = 0; t < TT; t++) {
      const int8_t* a = qt[t] + nfull * 128;
      acc[t][0] = _mm256_dpbusd_epi32(acc[t][0], c01, _mm256_loadu_si256((const __m256i*)a));
      acc[t][NA - 1] = _mm256_dpbusd_epi32(acc[t][NA - 1], c23, _mm256_loadu_si256((const __m256i*)(a + 32)));
    }
  }
  for (int t = 0; t < TT; t++) {
    __m256i sum = acc[t][0];
    for (int j = 1; j < NA; j++) sum = _mm256_add_epi32(sum, acc[t][j]);
    store_out(k, t0 + t, o, hsum_epi32(sum) - k.qsum[t0 + t]);
  }
}

}  // namespace

void i2_rows_vnni(const KernelArgs& k, int32_t r0, int32_t r1) {
  rows_tiled<i2_row_tile_vnni<8>, 8, i2_row_tile_vnni<4>, i2_row_tile_vnni<2>, i2_row_tile_vnni<1>>(k, r0, r1);
}

void i2_rows_avx2(const KernelArgs& k, int32_t r0, int32_t r1) {
  rows_tiled<i2_row_tile<8>, 8, i2_row_tile<4>, i2_row_tile<2>, i2_row_tile<1>>(k, r0, r1);
}

void t1_rows_avx2(const KernelArgs& k, int32_t r0, int32_t r1) {
  rows_tiled<t1_row_tile<8>, 8, t1_row_tile<4>, t1_row_tile<2>, t1_row_tile<1>>(k, r0, r1);
}

// --- activation quantization -----------------------------------------------

BK_AVX2 void act_stats_avx2(const float* x, int32_t n, float* amax, double p[8]) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 m = _mm256_setzero_ps();
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  int32_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + i), absmask);
    m = _mm256_max_ps(a, m);  // a NaN keeps m, like std::fmax
    s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(a)));
    s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)));
  }
  _mm256_storeu_pd(p, s0);
  _mm256_storeu_pd(p + 4, s1);
  float lanes[8];
  _mm256_storeu_ps(lanes, m);
  float mx = 0.0f;
  for (int l = 0; l < 8; l++) mx = std::fmax(mx, lanes[l]);
  for (; i < n; i++) {
    const float a = std::fabs(x[i]);
    mx = std::fmax(mx, a);
    p[i & 7] += (double)a;
  }
  *amax = mx;
}

namespace {

// quant_round on 8 lanes.
BK_AVX2 inline __m256 round_q(__m256 v) {
#if BITKD_QUANT_ROUND_HALF_EVEN
  return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
  const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 frac = _mm256_and_ps(_mm256_sub_ps(v, t), absmask);
  const __m256 ge = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
  const __m256 one = _mm256_or_ps(_mm256_andnot_ps(absmask, v), _mm256_set1_ps(1.0f));  // copysign(1, v)
  return _mm256_add_ps(t, _mm256_and_ps(ge, one));
#endif
}

}  // namespace

BK_AVX2 int32_t act_round_avx2(const float* x, int32_t n, float mul, bool div, float div_by, float lo, float hi,
                               int8_t* q) {
  const __m256 vmul = _mm256_set1_ps(mul), vdiv = _mm256_set1_ps(div_by);
  const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
  // packs interleave 128-bit lanes; this puts the 32 values back in order.
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  __m256i vsum = _mm256_setzero_si256();
  int32_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256i r[4];
    for (int g = 0; g < 4; g++) {
      __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i + 8 * g), vmul);
      if (div) v = _mm256_div_ps(v, vdiv);
      // max(r, lo) returns lo for NaN, as std::fmax(NaN, lo) does.
      v = _mm256_min_ps(_mm256_max_ps(round_q(v), vlo), vhi);
      r[g] = _mm256_cvttps_epi32(v);
      vsum = _mm256_add_epi32(vsum, r[g]);
    }
    const __m256i p16a = _mm256_packs_epi32(r[0], r[1]);
    const __m256i p16b = _mm256_packs_epi32(r[2], r[3]);
    const __m256i p8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p16a, p16b), perm);
    _mm256_storeu_si256((__m256i*)(q + i), p8);
  }
  int32_t sum = hsum_epi32(vsum);
  for (; i < n; i++) {
    float v = x[i] * mul;
    if (div) v = v / div_by;
    const float r = std::fmin(std::fmax(quant_round(v), lo), hi);
    const int32_t qi = (int32_t)r;
    q[i] = (int8_t)qi;
    sum += qi;
  }
  return sum;
}

}  // namespace ternary_detail
}  // namespace bk

#else  // not x86: ternary.cpp never selects these.

#include <cstdlib>

namespace bk {
namespace ternary_detail {
void i2_rows_avx2(const KernelArgs&, int32_t, int32_t) { std::abort(); }
void i2_rows_vnni(const KernelArgs&, int32_t, int32_t) { std::abort(); }
void t1_rows_avx2(const KernelArgs&, int32_t, int32_t) { std::abort(); }
void act_stats_avx2(const float*, int32_t, float*, double*) { std::abort(); }
int32_t act_round_avx2(const float*, int32_t, float, bool, float, float, float, int8_t*) { std::abort(); }
}  // namespace ternary_detail
}  // namespace bk

#endif
