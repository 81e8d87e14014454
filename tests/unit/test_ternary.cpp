// Packed ternary layouts, activation quantizers and integer matmul kernels:
// every kernel (AVX2 and forced scalar) against a plain reference, exactly.
#include <gtest/gtest.h>
#include <omp.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/rng.h"
#include "io/gguf.h"
#include "core/half.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/rows.h"
#include "kernels/cpu/ternary.h"

using namespace bk;

namespace {

const TernaryType kTypes[] = {TERNARY_I2, TERNARY_T1};

const char* type_name(TernaryType t) { return t == TERNARY_T1 ? "T1" : "I2"; }

bool cpu_avx2() { return ternary_cpu_simd() >= TERNARY_SIMD_AVX2; }

void force_scalar(bool on) { ternary_limit_simd(on ? TERNARY_SIMD_SCALAR : TERNARY_SIMD_AVX512VNNI); }

// Every kernel level this CPU runs, the widest first; the others are named
// once so a log shows what was not checked here.
std::vector<TernarySimd> kernel_levels() {
  std::vector<TernarySimd> v;
  for (int l = ternary_cpu_simd(); l >= TERNARY_SIMD_SCALAR; l--) v.push_back((TernarySimd)l);
  static bool noted = false;
  if (!noted && ternary_cpu_simd() < TERNARY_SIMD_AVX512VNNI)
    std::printf("note: this CPU has no %s; those kernels are checked on CPUs that do\n",
                ternary_cpu_simd() < TERNARY_SIMD_AVX2 ? "AVX2 or AVX-512 VNNI" : "AVX-512 VNNI");
  noted = true;
  return v;
}

// Restores automatic backend selection when a test ends.
struct BackendGuard {
  ~BackendGuard() { ternary_limit_simd(TERNARY_SIMD_AVX512VNNI); }
};

std::vector<int8_t> random_ternary(Rng* r, int64_t n) {
  std::vector<int8_t> w((size_t)n);
  for (auto& v : w) v = (int8_t)((int)rng_below(r, 3) - 1);
  return w;
}

std::vector<float> random_normal(Rng* r, int64_t n, float scale) {
  std::vector<float> x((size_t)n);
  for (auto& v : x) v = scale * rng_normal(r);
  return x;
}

// Plain reference: acc[t, o] = sum_i q[t, i] * wq[o, i] over the logical columns.
std::vector<int32_t> ref_matmul(const std::vector<int8_t>& wq, int rows, int cols, const ActQuant& a) {
  std::vector<int32_t> acc((size_t)a.tokens * rows);
  for (int t = 0; t < a.tokens; t++)
    for (int o = 0; o < rows; o++) {
      int32_t s = 0;
      for (int i = 0; i < cols; i++) s += (int32_t)a.q[(size_t)t * a.stride + i] * wq[(size_t)o * cols + i];
      acc[(size_t)t * rows + o] = s;
    }
  return acc;
}

Status pack(TernaryType type, const std::vector<int8_t>& wq, int rows, int cols, float gamma, TernaryMatrix* m) {
  return type == TERNARY_T1 ? pack_ternary_t1(wq.data(), rows, cols, gamma, m)
                            : pack_ternary_i2(wq.data(), rows, cols, gamma, m);
}

// Spec formulas written directly (std::round, sequential double mean).
float spec_quant_i8(const std::vector<float>& x, std::vector<int8_t>* q) {
  float amax = 0.0f;
  for (float v : x) amax = std::max(amax, std::fabs(v));
  float s = 127.0f / std::max(amax, 1e-5f);
  q->resize(x.size());
  for (size_t i = 0; i < x.size(); i++) (*q)[i] = (int8_t)std::min(std::max(std::round(x[i] * s), -128.0f), 127.0f);
  return 1.0f / s;
}

float spec_quant_i4(const std::vector<float>& x, std::vector<int8_t>* q) {
  double sum = 0.0;
  for (float v : x) sum += std::fabs((double)v);
  float b = x.empty() ? 0.0f : (float)(sum / (double)x.size());
  const float sqrt7 = std::sqrt(7.0f);
  q->resize(x.size());
  for (size_t i = 0; i < x.size(); i++)
    (*q)[i] = (int8_t)std::min(std::max(std::round(sqrt7 * x[i] / (b + 1e-5f)), -8.0f), 7.0f);
  return b / sqrt7;
}

}  // namespace

// ---- layouts ----------------------------------------------------------------

TEST(TernaryPack, RoundTripRandomShapes) {
  Rng rng;
  rng_seed(&rng, 1);
  const int shapes[][2] = {{1, 1},   {3, 5},   {2, 63},  {7, 64},  {5, 65},   {4, 79},  {4, 80},
                           {3, 81},  {4, 127}, {2, 128}, {3, 129}, {2, 159},  {2, 160}, {3, 161},
                           {2, 192}, {2, 200}, {5, 240}, {5, 300}, {2, 1000}, {3, 1024}, {1, 4100}};
  for (TernaryType type : kTypes)
    for (auto& sh : shapes) {
      const int rows = sh[0], cols = sh[1];
      SCOPED_TRACE(std::string(type_name(type)) + " " + std::to_string(rows) + "x" + std::to_string(cols));
      std::vector<int8_t> wq = random_ternary(&rng, (int64_t)rows * cols);
      TernaryMatrix m;
      ASSERT_TRUE(pack(type, wq, rows, cols, 0.25f, &m).ok());
      EXPECT_EQ(m.rows, rows);
      EXPECT_EQ(m.cols, cols);
      EXPECT_EQ(m.cols_pad % ternary_granularity(type), 0);
      EXPECT_GE(m.cols_pad, cols);
      EXPECT_LT(m.cols_pad - cols, ternary_granularity(type));
      EXPECT_EQ(m.gamma, 0.25f);
      EXPECT_EQ((int64_t)m.data.size(), m.row_bytes * rows);
      std::vector<int8_t> back((size_t)rows * cols, 9);
      unpack_ternary(m, back.data());
      EXPECT_EQ(back, wq);
    }
}

TEST(TernaryPack, ConstantMatrices) {
  for (TernaryType type : kTypes)
    for (int v = -1; v <= 1; v++) {
      SCOPED_TRACE(std::string(type_name(type)) + " value " + std::to_string(v));
      const int rows = 3, cols = 333;
      std::vector<int8_t> wq((size_t)rows * cols, (int8_t)v);
      TernaryMatrix m;
      ASSERT_TRUE(pack(type, wq, rows, cols, 1.0f, &m).ok());
      std::vector<int8_t> back((size_t)rows * cols);
      unpack_ternary(m, back.data());
      EXPECT_EQ(back, wq);
    }
}

// Every 5-trit combination appears in a byte, in full and half blocks.
TEST(TernaryPack, T1AllByteValues) {
  for (int cols : {160, 80}) {
    const int rows = 243, step = cols == 160 ? 32 : 16;
    std::vector<int8_t> wq((size_t)rows * cols);
    for (int r = 0; r < rows; r++)
      for (int j = 0; j < step; j++) {
        int v = r;
        for (int k = 4; k >= 0; k--) {  // digit k is the k-th most significant
          wq[(size_t)r * cols + j + step * k] = (int8_t)(v % 3 - 1);
          v /= 3;
        }
      }
    TernaryMatrix m;
    ASSERT_TRUE(pack_ternary_t1(wq.data(), rows, cols, 1.0f, &m).ok());
    ASSERT_EQ(m.row_bytes, cols / 5);
    std::vector<int8_t> back(wq.size());
    unpack_ternary(m, back.data());
    EXPECT_EQ(back, wq) << "cols " << cols;
  }
}

TEST(TernaryPack, RejectsNonTernary) {
  std::vector<int8_t> wq(2 * 10, 0);
  wq[13] = 2;
  TernaryMatrix m;
  Status s = pack_ternary_i2(wq.data(), 2, 10, 1.0f, &m);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.msg.find("[1, 3]"), std::string::npos) << s.msg;
  EXPECT_FALSE(pack_ternary_t1(wq.data(), 2, 10, 1.0f, &m).ok());
}

TEST(TernaryPack, SizeAndBitsPerWeight) {
  TernaryMatrix m;
  std::vector<int8_t> wq((size_t)256 * 4096, 0);
  ASSERT_TRUE(pack_ternary_i2(wq.data(), 256, 4096, 1.0f, &m).ok());
  TernarySize s = ternary_size(m);
  EXPECT_EQ(s.bytes, 256 * 1024 + 4);
  EXPECT_NEAR(s.bits_per_weight, 2.0, 1e-4);
  ASSERT_TRUE(pack_ternary_t1(wq.data(), 256, 4096, 1.0f, &m).ok());
  s = ternary_size(m);
  EXPECT_EQ(m.cols_pad, 4160);
  EXPECT_EQ(s.bytes, 256 * 832 + 4);
  EXPECT_NEAR(s.bits_per_weight, 1.625, 1e-4);
  // Padding counts: 100 columns pad to 128 (I2).
  ASSERT_TRUE(pack_ternary_i2(wq.data(), 10, 100, 1.0f, &m).ok());
  EXPECT_EQ(m.cols_pad, 128);
  EXPECT_NEAR(ternary_size(m).bits_per_weight, (10.0 * 32 + 4) * 8 / 1000.0, 1e-9);
}

TEST(TernaryQuantize, AbsmeanRoundClip) {
  const float w[] = {0.9f, -0.05f, 0.3f, -1.5f, 0.0f, 0.25f, -0.5f, 0.04f};
  const int n = 8;
  double s = 0;
  for (float v : w) s += std::fabs((double)v);
  const float gamma = (float)(s / n);  // 0.443...
  int8_t wq[n];
  EXPECT_FLOAT_EQ(quant_ternary_codes(wq, w, n), gamma);
  for (int i = 0; i < n; i++) {
    float r = std::round(w[i] / (gamma + 1e-5f));
    EXPECT_EQ(wq[i], (int8_t)std::min(std::max(r, -1.0f), 1.0f)) << i;
  }
  EXPECT_EQ(wq[0], 1);
  EXPECT_EQ(wq[1], 0);
  EXPECT_EQ(wq[3], -1);
  EXPECT_EQ(wq[6], -1);  // -0.5 / 0.443 = -1.13
  // All zero: gamma 0, all codes 0.
  const float z[4] = {0, 0, 0, 0};
  int8_t zq[4] = {5, 5, 5, 5};
  EXPECT_EQ(quant_ternary_codes(zq, z, 4), 0.0f);
  for (int8_t v : zq) EXPECT_EQ(v, 0);
}

TEST(TernaryQuantize, RoundHalfAwayFromZero) {
#if !BITKD_QUANT_ROUND_HALF_EVEN
  const float in[] = {0.5f, -0.5f, 1.5f, -1.5f, 2.5f, -2.5f, 0.49999997f, -0.49999997f, 3.0f, -0.0f, 8388607.5f};
  for (float v : in) EXPECT_EQ(quant_round(v), std::round(v)) << v;
#else
  GTEST_SKIP() << "built with half-to-even rounding";
#endif
}

// ---- activations ------------------------------------------------------------

TEST(TernaryActQuant, Int8EdgeCases) {
  BackendGuard guard;
  for (bool scalar : {false, true}) {
    force_scalar(scalar);
    SCOPED_TRACE(ternary_backend());
    std::vector<int8_t> q(40, 99);
    int32_t sum = -1;
    // Zero row: scale is eps / 127, everything 0.
    std::vector<float> zero(40, 0.0f);
    float sc = act_quant_row_i8(zero.data(), 40, q.data(), &sum);
    EXPECT_FLOAT_EQ(sc, 1e-5f / 127.0f);
    EXPECT_EQ(sum, 0);
    for (int8_t v : q) EXPECT_EQ(v, 0);
    // Constant row: all 127 (or -127), scale c / 127.
    std::vector<float> c(40, -3.0f);
    sc = act_quant_row_i8(c.data(), 40, q.data(), &sum);
    EXPECT_FLOAT_EQ(sc, 3.0f / 127.0f);
    EXPECT_EQ(sum, -127 * 40);
    for (int8_t v : q) EXPECT_EQ(v, -127);
    // Ties with s = 1 round away from zero; 10 copies of the pattern so the
    // SIMD body (32 at a time) and the tail both see them.
    const float pattern[] = {127.0f, 2.5f, -2.5f, 0.5f, -0.5f, -127.0f, 1.49f};
    const int8_t expect[] = {127, 3, -3, 1, -1, -127, 1};
    std::vector<float> t;
    for (int r = 0; r < 10; r++) t.insert(t.end(), pattern, pattern + 7);
    std::vector<int8_t> qt(t.size());
    act_quant_row_i8(t.data(), (int)t.size(), qt.data(), &sum);
    for (size_t i = 0; i < t.size(); i++) EXPECT_EQ(qt[i], expect[i % 7]) << i;
    EXPECT_EQ(sum, 10);
    // Huge values do not overflow.
    std::vector<float> h(40, 1.0f);
    h[3] = FLT_MAX;
    h[37] = -FLT_MAX;
    sc = act_quant_row_i8(h.data(), 40, q.data(), &sum);
    EXPECT_EQ(q[3], 127);
    EXPECT_EQ(q[37], -127);
    EXPECT_EQ(q[0], 0);
    EXPECT_TRUE(std::isfinite(sc));
    EXPECT_FLOAT_EQ(sc, FLT_MAX / 127.0f);
  }
}

TEST(TernaryActQuant, Int4EdgeCases) {
  BackendGuard guard;
  for (bool scalar : {false, true}) {
    force_scalar(scalar);
    SCOPED_TRACE(ternary_backend());
    std::vector<int8_t> q(40, 99);
    int32_t sum = -1;
    std::vector<float> zero(40, 0.0f);
    EXPECT_EQ(act_quant_row_i4(zero.data(), 40, q.data(), &sum), 0.0f);
    EXPECT_EQ(sum, 0);
    for (int8_t v : q) EXPECT_EQ(v, 0);
    // Constant row c: sqrt7 * c / (c + eps) = 2.6457 -> 3; scale c / sqrt7.
    std::vector<float> c(40, 2.0f);
    float sc = act_quant_row_i4(c.data(), 40, q.data(), &sum);
    EXPECT_FLOAT_EQ(sc, 2.0f / std::sqrt(7.0f));
    for (int8_t v : q) EXPECT_EQ(v, 3);
    EXPECT_EQ(sum, 120);
    // Outliers clip to [-8, 7].
    for (float big : {1e30f, FLT_MAX}) {
      std::vector<float> h(40, 0.001f);
      h[1] = big;
      h[39] = -big;
      sc = act_quant_row_i4(h.data(), 40, q.data(), &sum);
      EXPECT_EQ(q[1], 7) << big;
      EXPECT_EQ(q[39], -8) << big;
      EXPECT_EQ(q[0], 0) << big;
      EXPECT_EQ(sum, -1) << big;
      EXPECT_TRUE(std::isfinite(sc)) << big;
    }
  }
}

TEST(TernaryActQuant, MatchesSpecFormulaAndBackendsAgree) {
  BackendGuard guard;
  const bool avx2 = cpu_avx2();
  Rng rng;
  rng_seed(&rng, 7);
  for (int n : {1, 7, 8, 31, 32, 33, 100, 1024, 1029}) {
    for (int bits : {8, 4}) {
      SCOPED_TRACE("n " + std::to_string(n) + " bits " + std::to_string(bits));
      std::vector<float> x = random_normal(&rng, n, 3.0f);
      if (n > 10) x[n / 2] = 40.0f;  // an outlier, as in real activations
      std::vector<int8_t> ref;
      float ref_scale = bits == 8 ? spec_quant_i8(x, &ref) : spec_quant_i4(x, &ref);
      int32_t ref_sum = 0;
      for (int8_t v : ref) ref_sum += v;
      std::vector<int8_t> q_by[2];
      float sc_by[2];
      int32_t sum_by[2];
      for (int scalar = 0; scalar < 2; scalar++) {
        force_scalar(scalar == 1);
        q_by[scalar].assign(n, 0);
        sc_by[scalar] = bits == 8 ? act_quant_row_i8(x.data(), n, q_by[scalar].data(), &sum_by[scalar])
                                  : act_quant_row_i4(x.data(), n, q_by[scalar].data(), &sum_by[scalar]);
        EXPECT_EQ(q_by[scalar], ref);
        EXPECT_EQ(sum_by[scalar], ref_sum);
        EXPECT_FLOAT_EQ(sc_by[scalar], ref_scale);
      }
      if (avx2) {
        EXPECT_EQ(std::memcmp(&sc_by[0], &sc_by[1], sizeof(float)), 0) << "scales differ between backends";
      }
    }
  }
}

TEST(TernaryActQuant, QuantizeActsPadsAndChecks) {
  Rng rng;
  rng_seed(&rng, 3);
  std::vector<float> x = random_normal(&rng, 3 * 70, 1.0f);
  ActQuant a;
  a.q.assign(1000, 55);  // stale contents must not leak into the padding
  ASSERT_TRUE(quantize_acts(x.data(), 3, 70, 128, 8, &a).ok());
  EXPECT_EQ(a.stride, 128);
  for (int t = 0; t < 3; t++) {
    std::vector<int8_t> q(70);
    int32_t sum;
    float sc = act_quant_row_i8(x.data() + t * 70, 70, q.data(), &sum);
    EXPECT_EQ(a.scale[t], sc);
    EXPECT_EQ(a.sum[t], sum);
    for (int i = 0; i < 70; i++) EXPECT_EQ(a.q[t * 128 + i], q[i]);
    for (int i = 70; i < 128; i++) EXPECT_EQ(a.q[t * 128 + i], 0);
  }
  EXPECT_FALSE(quantize_acts(x.data(), 3, 70, 64, 8, &a).ok());
  Status s = quantize_acts(x.data(), 3, 70, 128, 2, &a);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.msg.find("bits is 2"), std::string::npos) << s.msg;
}

// ---- matmul -----------------------------------------------------------------

TEST(TernaryMatmul, AllKernelsMatchReferenceExactly) {
  BackendGuard guard;
  const std::vector<TernarySimd> levels = kernel_levels();
  Rng rng;
  rng_seed(&rng, 11);
  const int shapes[][2] = {{1, 1},  {5, 17},  {3, 64},  {7, 80},  {4, 100},  {6, 128}, {3, 160},
                           {5, 192}, {4, 240}, {9, 257}, {3, 320}, {17, 700}, {8, 1024}, {2, 2900}};
  const int token_counts[] = {1, 2, 3, 5, 8, 13, 17};
  int checked = 0;
  for (TernaryType type : kTypes)
    for (auto& sh : shapes)
      for (int T : token_counts)
        for (int bits : {8, 4}) {
          const int rows = sh[0], cols = sh[1];
          SCOPED_TRACE(std::string(type_name(type)) + " " + std::to_string(rows) + "x" + std::to_string(cols) +
                       " T=" + std::to_string(T) + " bits=" + std::to_string(bits));
          std::vector<int8_t> wq = random_ternary(&rng, (int64_t)rows * cols);
          TernaryMatrix w;
          ASSERT_TRUE(pack(type, wq, rows, cols, 0.37f, &w).ok());
          std::vector<float> x = random_normal(&rng, (int64_t)T * cols, 2.0f);
          ActQuant a;
          // A stride beyond cols_pad must work too.
          const int stride = w.cols_pad + (T % 2 ? 0 : 32);
          ASSERT_TRUE(quantize_acts(x.data(), T, cols, stride, bits, &a).ok());
          std::vector<int32_t> ref = ref_matmul(wq, rows, cols, a);
          std::vector<float> y_first;
          for (TernarySimd level : levels) {
            ternary_limit_simd(level);
            std::vector<int32_t> acc((size_t)T * rows, 12345);
            ASSERT_TRUE(ternary_matmul_i32(w, a, acc.data()).ok());
            EXPECT_EQ(acc, ref) << ternary_backend();
            std::vector<float> y((size_t)T * rows, NAN);
            ASSERT_TRUE(ternary_matmul(w, a, y.data()).ok());
            for (int t = 0; t < T; t++)
              for (int o = 0; o < rows; o++)
                ASSERT_EQ(y[t * rows + o], (float)ref[t * rows + o] * (0.37f * a.scale[t])) << ternary_backend();
            if (y_first.empty()) y_first = y;
            EXPECT_EQ(std::memcmp(y_first.data(), y.data(), y.size() * sizeof(float)), 0) << ternary_backend();
          }
          checked++;
        }
  EXPECT_EQ(checked, 2 * 14 * 7 * 2);
}

// Large enough to run on several OpenMP threads.
TEST(TernaryMatmul, ThreadedShapesMatchReference) {
  BackendGuard guard;
  const std::vector<TernarySimd> levels = kernel_levels();
  Rng rng;
  rng_seed(&rng, 5);
  for (TernaryType type : kTypes)
    for (int T : {1, 19}) {
      const int rows = 301, cols = 1100;
      std::vector<int8_t> wq = random_ternary(&rng, (int64_t)rows * cols);
      TernaryMatrix w;
      ASSERT_TRUE(pack(type, wq, rows, cols, 1.0f, &w).ok());
      std::vector<float> x = random_normal(&rng, (int64_t)T * cols, 1.0f);
      ActQuant a;
      ASSERT_TRUE(quantize_acts(x.data(), T, cols, w.cols_pad, 8, &a).ok());
      std::vector<int32_t> ref = ref_matmul(wq, rows, cols, a);
      for (TernarySimd level : levels) {
        ternary_limit_simd(level);
        std::vector<int32_t> acc((size_t)T * rows);
        ASSERT_TRUE(ternary_matmul_i32(w, a, acc.data()).ok());
        EXPECT_EQ(acc, ref) << type_name(type) << " T=" << T << " " << ternary_backend();
      }
    }
}

// Extreme activations (-128 / 127) with all-(+1) and all-(-1) weights: the
// int16 stage of the AVX2 kernels must not saturate.
TEST(TernaryMatmul, ExtremeValuesDoNotSaturate) {
  BackendGuard guard;
  const std::vector<TernarySimd> levels = kernel_levels();
  for (TernaryType type : kTypes)
    for (int wv : {1, -1})
      for (int qv : {-128, 127}) {
        // 2900 columns: more full blocks than the AVX2 kernels sum in int16.
        const int rows = 3, cols = 2900;
        std::vector<int8_t> wq((size_t)rows * cols, (int8_t)wv);
        TernaryMatrix w;
        ASSERT_TRUE(pack(type, wq, rows, cols, 1.0f, &w).ok());
        ActQuant a;
        a.tokens = 2;
        a.cols = cols;
        a.stride = w.cols_pad;
        a.q.assign((size_t)2 * a.stride, 0);
        for (int t = 0; t < 2; t++)
          for (int i = 0; i < cols; i++) a.q[t * a.stride + i] = (int8_t)qv;
        a.scale.assign(2, 1.0f);
        a.sum.assign(2, qv * cols);
        for (TernarySimd level : levels) {
          ternary_limit_simd(level);
          std::vector<int32_t> acc(2 * rows);
          ASSERT_TRUE(ternary_matmul_i32(w, a, acc.data()).ok());
          for (int32_t v : acc) EXPECT_EQ(v, wv * qv * cols) << type_name(type) << " " << ternary_backend();
        }
      }
}

TEST(TernaryMatmul, RejectsMismatchedActivations) {
  std::vector<int8_t> wq(4 * 100, 1);
  TernaryMatrix w;
  ASSERT_TRUE(pack_ternary_i2(wq.data(), 4, 100, 1.0f, &w).ok());
  std::vector<float> x(100, 1.0f), y(4);
  ActQuant a;
  ASSERT_TRUE(quantize_acts(x.data(), 1, 100, 100, 8, &a).ok());
  Status s = ternary_matmul(w, a, y.data());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.msg.find("stride 100"), std::string::npos) << s.msg;
  ASSERT_TRUE(quantize_acts(x.data(), 1, 90, 128, 8, &a).ok());
  EXPECT_FALSE(ternary_matmul(w, a, y.data()).ok());
  ASSERT_TRUE(quantize_acts(x.data(), 1, 100, 128, 8, &a).ok());
  ASSERT_TRUE(ternary_matmul(w, a, y.data()).ok());
  // x = 1 -> q = 127 everywhere; all weights +1.
  for (float v : y) EXPECT_FLOAT_EQ(v, 100.0f * 127.0f * (1.0f / 127.0f));
}

// Float path end to end: packed y approximates the fp32 product of the
// dequantized operands within quantization error.
TEST(TernaryMatmul, FloatOutputApproximatesDequantizedProduct) {
  Rng rng;
  rng_seed(&rng, 9);
  const int rows = 32, cols = 256;
  std::vector<float> wf = random_normal(&rng, rows * cols, 0.02f);
  TernaryMatrix w;
  ASSERT_TRUE(pack_ternary_f32(TERNARY_I2, wf.data(), rows, cols, &w).ok());
  std::vector<int8_t> wq(rows * cols);
  unpack_ternary(w, wq.data());
  std::vector<float> x = random_normal(&rng, cols, 1.0f);
  ActQuant a;
  ASSERT_TRUE(quantize_acts(x.data(), 1, cols, w.cols_pad, 8, &a).ok());
  std::vector<float> y(rows);
  ASSERT_TRUE(ternary_matmul(w, a, y.data()).ok());
  for (int o = 0; o < rows; o++) {
    double ref = 0;  // fake-quant product in double
    for (int i = 0; i < cols; i++) ref += (double)w.gamma * wq[o * cols + i] * (a.q[i] * (double)a.scale[0]);
    EXPECT_NEAR(y[o], ref, 1e-5 * (1 + std::fabs(ref))) << o;
  }
}

// The packed I2 layout and GGUF's TQ2_0 store the same 2-bit code blocks
// (core/ternary_block.h): a row of 256 weights packed either way holds the
// same 64 bytes, so the formats convert by copying.
TEST(TernaryBlock, I2RowsAndTq2BlocksAreTheSameBytes) {
  std::vector<int8_t> codes(256);
  Rng r;
  rng_seed(&r, 21);
  for (int8_t& c : codes) c = (int8_t)rng_below(&r, 3) - 1;
  TernaryMatrix m;
  ASSERT_TRUE(pack_ternary_i2(codes.data(), 1, 256, 0.5f, &m).ok());
  ASSERT_EQ(m.row_bytes, 64);
  uint8_t tq[66];
  tq2_0_pack_block(codes.data(), 0x3800, tq);  // d = 0.5 in fp16
  EXPECT_EQ(memcmp(m.data.data(), tq, 64), 0);
  // The I2 row, with a scale appended, read as a TQ2_0 block.
  uint8_t block[66];
  memcpy(block, m.data.data(), 64);
  memcpy(block + 64, tq + 64, 2);
  std::vector<int8_t> back(256);
  uint16_t d = 0;
  tq2_0_unpack_block(block, back.data(), &d);
  EXPECT_EQ(back, codes);
  EXPECT_EQ(d, 0x3800);
}

// ---- row matrices in their stored type (rows.h) ----------------------------

namespace {
std::vector<float> random_floats(uint64_t seed, size_t n, float scale) {
  Rng r;
  rng_seed(&r, seed);
  std::vector<float> v(n);
  for (float& x : v) x = (rng_uniform(&r) * 2.0f - 1.0f) * scale;
  return v;
}
}  // namespace

TEST(RowMatrix, StoredValuesAndBounds) {
  const int R = 7, C = 96;
  std::vector<float> w = random_floats(5, (size_t)R * C, 3.0f);
  w[5] = 0.0f;
  for (int i = 0; i < 32; i++) w[(size_t)2 * C + 32 + i] = 0.0f;  // an all-zero Q8_0 block
  std::vector<float> back(C);
  for (RowType t : {ROWS_F32, ROWS_F16, ROWS_BF16, ROWS_Q8_0}) {
    RowMatrix m;
    ASSERT_TRUE(rows_from_f32(t, w.data(), R, C, &m).ok()) << row_type_name(t);
    EXPECT_EQ(rows_bytes(m), (size_t)R * (t == ROWS_F32 ? C * 4 : t == ROWS_Q8_0 ? C / 32 * 34 : C * 2));
    for (int r = 0; r < R; r++) {
      rows_get_row(m, r, back.data());
      for (int i = 0; i < C; i++) {
        const float x = w[(size_t)r * C + i];
        if (t == ROWS_F32) {
          EXPECT_EQ(back[i], x);
        } else if (t == ROWS_F16) {
          EXPECT_EQ(back[i], f16_to_f32(f32_to_f16(x)));
        } else if (t == ROWS_BF16) {
          EXPECT_EQ(back[i], bf16_to_f32(f32_to_bf16(x)));
        } else {
          // q = round(x / d) with d = max|x| / 127, stored as f16 d16: the
          // error is half a step plus |q| <= 127 times the scale's rounding
          // (and a few ulps of x * (1 / d)).
          float amax = 0;
          for (int k = i / 32 * 32; k < i / 32 * 32 + 32; k++) amax = std::max(amax, std::fabs(w[(size_t)r * C + k]));
          const float d = amax / 127.0f, d16 = f16_to_f32(f32_to_f16(d));
          EXPECT_LE(std::fabs(back[i] - x), 0.5f * d + 127.0f * std::fabs(d16 - d) + 4 * FLT_EPSILON * amax)
              << r << "," << i;
        }
      }
    }
  }
  RowMatrix bad;
  EXPECT_FALSE(rows_alloc(ROWS_Q8_0, 2, 40, &bad).ok());
  RowType t;
  EXPECT_TRUE(row_type_from_name("q8_0", &t).ok());
  EXPECT_EQ(t, ROWS_Q8_0);
  EXPECT_FALSE(row_type_from_name("q4_0", &t).ok());
}

// Values that came from a GGUF's Q8_0 (d * q) quantize back to the same
// blocks: keeping a file's embedding as Q8_0 loses nothing.
TEST(RowMatrix, Q8RoundTripOfStoredBlocksIsExact) {
  const int C = 256;
  std::vector<float> w = random_floats(9, C, 0.7f);
  std::vector<BlockQ8_0> q(C / 32), q2(C / 32);
  quantize_row_q8_0(w.data(), C, q.data());
  RowMatrix m;
  ASSERT_TRUE(rows_alloc(ROWS_Q8_0, 1, C, &m).ok());
  memcpy(m.data.data(), q.data(), m.row_bytes);
  std::vector<float> deq(C);
  rows_get_row(m, 0, deq.data());
  quantize_row_q8_0(deq.data(), C, q2.data());
  EXPECT_EQ(memcmp(q.data(), q2.data(), q.size() * sizeof(BlockQ8_0)), 0);
}

// rows_matmul: Q8_0 is the documented sum in block order (exact integer
// block sums), whatever the thread count; float types stay within the
// float summation bound of an fp64 reference.
TEST(RowMatrix, MatmulMatchesItsDefinition) {
  const int R = 37, C = 128, N = 3;
  std::vector<float> w = random_floats(11, (size_t)R * C, 1.0f), x = random_floats(12, (size_t)N * C, 2.0f);
  for (RowType t : {ROWS_F32, ROWS_F16, ROWS_BF16, ROWS_Q8_0}) {
    RowMatrix m;
    ASSERT_TRUE(rows_from_f32(t, w.data(), R, C, &m).ok());
    std::vector<float> y1((size_t)N * R), y2((size_t)N * R), row(C);
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    rows_matmul(m, x.data(), N, y1.data());
    omp_set_num_threads(2);
    rows_matmul(m, x.data(), N, y2.data());
    omp_set_num_threads(saved);
    if (t == ROWS_Q8_0) {
      EXPECT_EQ(y1, y2);
    }
    for (int tk = 0; tk < N; tk++) {
      const float* xt = x.data() + (size_t)tk * C;
      std::vector<BlockQ8_0> xq(C / 32);
      quantize_row_q8_0(xt, C, xq.data());
      for (int o = 0; o < R; o++) {
        rows_get_row(m, o, row.data());
        const float got = y1[(size_t)tk * R + o];
        if (t == ROWS_Q8_0) {
          const BlockQ8_0* wb = (const BlockQ8_0*)(m.data.data() + o * m.row_bytes);
          float s = 0;
          for (int k = 0; k < C / 32; k++) {
            int32_t is = 0;
            for (int i = 0; i < 32; i++) is += (int32_t)wb[k].qs[i] * xq[k].qs[i];
            s += f16_to_f32(wb[k].d) * f16_to_f32(xq[k].d) * (float)is;
          }
          EXPECT_EQ(got, s) << o;
        } else {
          double ref = 0, mag = 0;
          for (int i = 0; i < C; i++) ref += (double)row[i] * xt[i], mag += std::fabs((double)row[i] * xt[i]);
          EXPECT_LE(std::fabs(got - ref), C * FLT_EPSILON * mag) << row_type_name(t) << " " << o;
        }
      }
    }
  }
}
