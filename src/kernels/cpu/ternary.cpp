// Packing, activation quantization, kernel dispatch and the scalar kernels for
// ternary matrices (layouts described in ternary.h).
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/ternary_block.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/ternary.h"
#include "kernels/cpu/ternary_impl.h"

namespace bk {

using namespace ternary_detail;

// ---- backend selection ------------------------------------------------------

namespace {

TernarySimd cpu_simd() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return TERNARY_SIMD_SCALAR;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512vnni"))
    return TERNARY_SIMD_AVX512VNNI;
  return TERNARY_SIMD_AVX2;
#else
  return TERNARY_SIMD_SCALAR;
#endif
}

// BITKD_SIMD=scalar or avx2 caps the kernels (read once).
TernarySimd env_simd_cap() {
  const char* v = std::getenv("BITKD_SIMD");
  if (v && std::strcmp(v, "scalar") == 0) return TERNARY_SIMD_SCALAR;
  if (v && std::strcmp(v, "avx2") == 0) return TERNARY_SIMD_AVX2;
  return TERNARY_SIMD_AVX512VNNI;
}

std::atomic<int> g_simd_cap{TERNARY_SIMD_AVX512VNNI};

TernarySimd simd_level() {
  static const TernarySimd hw = std::min(cpu_simd(), env_simd_cap());
  return std::min(hw, (TernarySimd)g_simd_cap.load(std::memory_order_relaxed));
}

bool use_avx2() { return simd_level() >= TERNARY_SIMD_AVX2; }

}  // namespace

void ternary_limit_simd(TernarySimd cap) { g_simd_cap.store(cap, std::memory_order_relaxed); }
TernarySimd ternary_cpu_simd() { return cpu_simd(); }
const char* ternary_backend() {
  switch (simd_level()) {
    case TERNARY_SIMD_SCALAR: return "scalar";
    case TERNARY_SIMD_AVX2: return "avx2";
    case TERNARY_SIMD_AVX512VNNI: return "avx512vnni";
  }
  return "?";
}

// ---- weights ------------------------------------------------------------------

int32_t ternary_granularity(TernaryType type) { return type == TERNARY_T1 ? 80 : 64; }

int32_t ternary_cols_pad(TernaryType type, int32_t cols) {
  int32_t g = ternary_granularity(type);
  return (cols + g - 1) / g * g;
}

namespace {

Status check_ternary(const int8_t* wq, int32_t rows, int32_t cols) {
  if (rows < 0 || cols < 0) return errorf("pack_ternary: bad shape [%d, %d]", rows, cols);
  for (int64_t i = 0; i < (int64_t)rows * cols; i++) {
    if (wq[i] < -1 || wq[i] > 1)
      return errorf("pack_ternary: weight [%lld, %lld] is %d, expected -1, 0 or 1 (quantize with quant_ternary_codes)",
                    (long long)(i / cols), (long long)(i % cols), (int)wq[i]);
  }
  return ok_status();
}

// code of weight c in row r, with the padding as a zero weight.
inline uint32_t code_at(const int8_t* wq, int32_t cols, int32_t r, int32_t c) {
  return c < cols ? (uint32_t)(wq[(int64_t)r * cols + c] + 1) : 1u;
}

void init_matrix(TernaryType type, int32_t rows, int32_t cols, float gamma, TernaryMatrix* m) {
  m->type = type;
  m->rows = rows;
  m->cols = cols;
  m->cols_pad = ternary_cols_pad(type, cols);
  m->row_bytes = type == TERNARY_T1 ? (int64_t)m->cols_pad / 5 : (int64_t)m->cols_pad / 4;
  m->gamma = gamma;
  m->data.assign((size_t)(m->row_bytes * rows), 0);
}

}  // namespace

Status pack_ternary_i2(const int8_t* wq, int32_t rows, int32_t cols, float gamma, TernaryMatrix* out) {
  BK_TRY(check_ternary(wq, rows, cols));
  init_matrix(TERNARY_I2, rows, cols, gamma, out);
  const int32_t nfull = out->cols_pad / kI2BlockWeights;
  const bool half = out->cols_pad % kI2BlockWeights != 0;
  std::vector<int8_t> row((size_t)out->cols_pad, 0);  // padding weighs 0
  for (int32_t r = 0; r < rows; r++) {
    memcpy(row.data(), wq + (int64_t)r * cols, (size_t)cols);
    uint8_t* dst = out->data.data() + (int64_t)r * out->row_bytes;
    for (int32_t b = 0; b < nfull; b++) i2_block_pack(row.data() + b * 128, 32, dst + b * 32);
    if (half) i2_block_pack(row.data() + nfull * 128, 16, dst + nfull * 32);
  }
  return ok_status();
}

Status pack_ternary_t1(const int8_t* wq, int32_t rows, int32_t cols, float gamma, TernaryMatrix* out) {
  BK_TRY(check_ternary(wq, rows, cols));
  init_matrix(TERNARY_T1, rows, cols, gamma, out);
  const int32_t nfull = out->cols_pad / 160;
  const bool half = out->cols_pad % 160 != 0;
  // v in [0, 243) -> ceil(v * 256 / 243): the fixed-point fraction v / 243
  // rounded up, so repeated "times 3" exposes the digits without borrow.
  auto encode = [](uint32_t v) { return (uint8_t)((v * 256 + 242) / 243); };
  for (int32_t r = 0; r < rows; r++) {
    uint8_t* dst = out->data.data() + (int64_t)r * out->row_bytes;
    for (int32_t b = 0; b < nfull; b++) {
      for (int32_t j = 0; j < 32; j++) {
        uint32_t v = 0;
        for (int32_t k = 0; k < 5; k++) v = v * 3 + code_at(wq, cols, r, b * 160 + j + 32 * k);
        dst[b * 32 + j] = encode(v);
      }
    }
    if (half) {
      for (int32_t j = 0; j < 16; j++) {
        uint32_t v = 0;
        for (int32_t k = 0; k < 5; k++) v = v * 3 + code_at(wq, cols, r, nfull * 160 + j + 16 * k);
        dst[nfull * 32 + j] = encode(v);
      }
    }
  }
  return ok_status();
}

Status pack_ternary_f32(TernaryType type, const float* w, int32_t rows, int32_t cols, TernaryMatrix* out) {
  if (rows < 0 || cols < 0) return errorf("pack_ternary_f32: bad shape [%d, %d]", rows, cols);
  std::vector<int8_t> wq((size_t)rows * cols);
  float gamma = quant_ternary_codes(wq.data(), w, (size_t)rows * cols);
  return type == TERNARY_T1 ? pack_ternary_t1(wq.data(), rows, cols, gamma, out)
                            : pack_ternary_i2(wq.data(), rows, cols, gamma, out);
}

namespace {

// Codes of one packed row in natural order: codes[0, cols_pad).
void decode_row(const TernaryMatrix& m, int32_t r, uint8_t* codes) {
  const uint8_t* src = m.data.data() + (int64_t)r * m.row_bytes;
  if (m.type == TERNARY_I2) {
    const int32_t nfull = m.cols_pad / kI2BlockWeights;
    std::vector<int8_t> c((size_t)m.cols_pad);
    for (int32_t b = 0; b < nfull; b++) i2_block_unpack(src + b * 32, 32, c.data() + b * 128);
    if (m.cols_pad % kI2BlockWeights) i2_block_unpack(src + nfull * 32, 16, c.data() + nfull * 128);
    for (int32_t i = 0; i < m.cols_pad; i++) codes[i] = (uint8_t)(c[i] + 1);
  } else {
    const int32_t nfull = m.cols_pad / 160;
    auto digits = [](uint32_t x, uint8_t* out, int32_t step) {
      for (int32_t k = 0; k < 5; k++) {
        x *= 3;
        out[step * k] = (uint8_t)(x >> 8);
        x &= 255;
      }
    };
    for (int32_t b = 0; b < nfull; b++)
      for (int32_t j = 0; j < 32; j++) digits(src[b * 32 + j], codes + b * 160 + j, 32);
    if (m.cols_pad % 160)
      for (int32_t j = 0; j < 16; j++) digits(src[nfull * 32 + j], codes + nfull * 160 + j, 16);
  }
}

}  // namespace

void unpack_ternary(const TernaryMatrix& m, int8_t* wq) {
  std::vector<uint8_t> codes((size_t)m.cols_pad);
  for (int32_t r = 0; r < m.rows; r++) {
    decode_row(m, r, codes.data());
    for (int32_t c = 0; c < m.cols; c++) wq[(int64_t)r * m.cols + c] = (int8_t)((int32_t)codes[c] - 1);
  }
}

TernarySize ternary_size(const TernaryMatrix& m) {
  TernarySize s;
  s.bytes = (int64_t)m.data.size() + (int64_t)sizeof(float);
  int64_t n = (int64_t)m.rows * m.cols;
  s.bits_per_weight = n > 0 ? (double)s.bytes * 8.0 / (double)n : 0.0;
  return s;
}

// ---- activations ----------------------------------------------------------

namespace {

void act_stats_scalar(const float* x, int32_t n, float* amax, double p[8]) {
  float m = 0.0f;
  for (int32_t i = 0; i < 8; i++) p[i] = 0.0;
  for (int32_t i = 0; i < n; i++) {
    float a = std::fabs(x[i]);
    m = std::fmax(m, a);
    p[i & 7] += (double)a;
  }
  *amax = m;
}

// Mirrors act_round_avx2 operation for operation.
int32_t act_round_scalar(const float* x, int32_t n, float mul, bool div, float div_by, float lo, float hi,
                         int8_t* q) {
  int32_t sum = 0;
  for (int32_t i = 0; i < n; i++) {
    float v = x[i] * mul;
    if (div) v = v / div_by;
    float r = std::fmin(std::fmax(quant_round(v), lo), hi);  // NaN -> lo
    int32_t qi = (int32_t)r;
    q[i] = (int8_t)qi;
    sum += qi;
  }
  return sum;
}

void act_stats(const float* x, int32_t n, float* amax, double p[8]) {
  if (use_avx2())
    act_stats_avx2(x, n, amax, p);
  else
    act_stats_scalar(x, n, amax, p);
}

int32_t act_round(const float* x, int32_t n, float mul, bool div, float div_by, float lo, float hi, int8_t* q) {
  return use_avx2() ? act_round_avx2(x, n, mul, div, div_by, lo, hi, q)
                    : act_round_scalar(x, n, mul, div, div_by, lo, hi, q);
}

}  // namespace

float act_quant_row_i8(const float* x, int32_t n, int8_t* q, int32_t* sum) {
  float amax;
  double p[8];
  act_stats(x, n, &amax, p);
  float s = 127.0f / std::fmax(amax, kActEps);
  int32_t total = act_round(x, n, s, false, 1.0f, -128.0f, 127.0f, q);
  if (sum) *sum = total;
  return 1.0f / s;
}

float act_quant_row_i4(const float* x, int32_t n, int8_t* q, int32_t* sum) {
  float amax;
  double p[8];
  act_stats(x, n, &amax, p);
  float b = n > 0 ? (float)(combine_partials(p) / (double)n) : 0.0f;
  int32_t total = act_round(x, n, kSqrt7, true, b + kActEps, -8.0f, 7.0f, q);
  if (sum) *sum = total;
  return b / kSqrt7;
}

Status quantize_acts(const float* x, int32_t tokens, int32_t cols, int32_t stride, int32_t bits, ActQuant* out) {
  if (bits != 8 && bits != 4) return errorf("quantize_acts: bits is %d, expected 8 or 4", bits);
  if (tokens < 0 || cols < 0 || stride < cols)
    return errorf("quantize_acts: bad shape tokens=%d cols=%d stride=%d (stride must be >= cols)", tokens, cols,
                  stride);
  out->tokens = tokens;
  out->cols = cols;
  out->stride = stride;
  out->bits = bits;
  out->q.resize((size_t)tokens * stride);
  out->scale.resize((size_t)tokens);
  out->sum.resize((size_t)tokens);
  int8_t* q = out->q.data();
  float* scale = out->scale.data();
  int32_t* sum = out->sum.data();
#pragma omp parallel for schedule(static) if ((int64_t)tokens * cols >= (1 << 16))
  for (int32_t t = 0; t < tokens; t++) {
    const float* xt = x + (int64_t)t * cols;
    int8_t* qt = q + (int64_t)t * stride;
    scale[t] = bits == 8 ? act_quant_row_i8(xt, cols, qt, &sum[t]) : act_quant_row_i4(xt, cols, qt, &sum[t]);
    std::memset(qt + cols, 0, (size_t)(stride - cols));
  }
  return ok_status();
}

// ---- matmul -----------------------------------------------------------------

namespace {

// Scalar kernels: the same packed formats and the same "codes minus sum(q)"
// arithmetic as the AVX2 ones, in plain C.
void i2_rows_scalar(const KernelArgs& k, int32_t r0, int32_t r1) {
  const TernaryMatrix& w = *k.w;
  const int32_t nfull = w.cols_pad / 128;
  const bool half = w.cols_pad % 128 != 0;
  for (int32_t o = r0; o < r1; o++) {
    const uint8_t* row = w.data.data() + (int64_t)o * w.row_bytes;
    for (int32_t t = 0; t < k.T; t++) {
      const int8_t* qt = k.q + (int64_t)t * k.stride;
      int32_t acc = 0;
      for (int32_t b = 0; b < nfull; b++) {
        const uint8_t* wb = row + b * 32;
        const int8_t* a = qt + b * 128;
        for (int32_t j = 0; j < 32; j++) {
          uint32_t v = wb[j];
          acc += (int32_t)(v & 3) * a[j] + (int32_t)((v >> 2) & 3) * a[j + 32] +
                 (int32_t)((v >> 4) & 3) * a[j + 64] + (int32_t)(v >> 6) * a[j + 96];
        }
      }
      if (half) {
        const uint8_t* wb = row + nfull * 32;
        const int8_t* a = qt + nfull * 128;
        for (int32_t j = 0; j < 16; j++) {
          uint32_t v = wb[j];
          acc += (int32_t)(v & 3) * a[j] + (int32_t)((v >> 2) & 3) * a[j + 16] +
                 (int32_t)((v >> 4) & 3) * a[j + 32] + (int32_t)(v >> 6) * a[j + 48];
        }
      }
      store_out(k, t, o, acc - k.qsum[t]);
    }
  }
}

inline int32_t t1_byte_dot(uint32_t x, const int8_t* a, int32_t step) {
  int32_t acc = 0;
  for (int32_t d = 0; d < 5; d++) {
    x *= 3;
    acc += (int32_t)(x >> 8) * a[step * d];
    x &= 255;
  }
  return acc;
}

void t1_rows_scalar(const KernelArgs& k, int32_t r0, int32_t r1) {
  const TernaryMatrix& w = *k.w;
  const int32_t nfull = w.cols_pad / 160;
  const bool half = w.cols_pad % 160 != 0;
  for (int32_t o = r0; o < r1; o++) {
    const uint8_t* row = w.data.data() + (int64_t)o * w.row_bytes;
    for (int32_t t = 0; t < k.T; t++) {
      const int8_t* qt = k.q + (int64_t)t * k.stride;
      int32_t acc = 0;
      for (int32_t b = 0; b < nfull; b++)
        for (int32_t j = 0; j < 32; j++) acc += t1_byte_dot(row[b * 32 + j], qt + b * 160 + j, 32);
      if (half)
        for (int32_t j = 0; j < 16; j++) acc += t1_byte_dot(row[nfull * 32 + j], qt + nfull * 160 + j, 16);
      store_out(k, t, o, acc - k.qsum[t]);
    }
  }
}

Status run_matmul(const TernaryMatrix& w, const ActQuant& a, int32_t* acc, float* y) {
  if (a.cols != w.cols)
    return errorf("ternary_matmul: activations have %d columns, weights [%d, %d] expect %d", a.cols, w.rows, w.cols,
                  w.cols);
  if (a.stride < w.cols_pad)
    return errorf("ternary_matmul: activation stride %d < padded weight columns %d (quantize with stride = cols_pad)",
                  a.stride, w.cols_pad);
  if ((int64_t)a.q.size() < (int64_t)a.tokens * a.stride || (int64_t)a.sum.size() < a.tokens ||
      (int64_t)a.scale.size() < a.tokens)
    return errorf("ternary_matmul: activation buffers smaller than tokens=%d stride=%d", a.tokens, a.stride);
  if ((int64_t)w.data.size() < (int64_t)w.rows * w.row_bytes)
    return errorf("ternary_matmul: packed data has %zu bytes, expected %lld", w.data.size(),
                  (long long)w.rows * w.row_bytes);
  KernelArgs k{&w, a.q.data(), a.stride, a.sum.data(), a.scale.data(), a.tokens, acc, y};
  if (a.tokens == 0 || w.rows == 0) return ok_status();
  // T1 has no VNNI kernel (its digit decoding, not the dot product, bounds it).
  const TernarySimd simd = simd_level();
  auto kernel = w.type == TERNARY_T1 ? (simd >= TERNARY_SIMD_AVX2 ? t1_rows_avx2 : t1_rows_scalar)
                : simd == TERNARY_SIMD_AVX512VNNI ? i2_rows_vnni
                : simd == TERNARY_SIMD_AVX2       ? i2_rows_avx2
                                                  : i2_rows_scalar;
  // Contiguous row ranges per thread; small problems stay on one thread
  // because waking the pool costs more than the work.
  const int64_t work = (int64_t)w.rows * w.cols_pad * a.tokens;
  const int32_t rows = w.rows;
#pragma omp parallel if (work >= (1 << 18))
  {
    const int32_t nth = omp_get_num_threads(), tid = omp_get_thread_num();
    const int32_t r0 = (int32_t)((int64_t)rows * tid / nth);
    const int32_t r1 = (int32_t)((int64_t)rows * (tid + 1) / nth);
    if (r1 > r0) kernel(k, r0, r1);
  }
  return ok_status();
}

}  // namespace

Status ternary_matmul_i32(const TernaryMatrix& w, const ActQuant& a, int32_t* acc) {
  return run_matmul(w, a, acc, nullptr);
}

Status ternary_matmul(const TernaryMatrix& w, const ActQuant& a, float* y) { return run_matmul(w, a, nullptr, y); }

}  // namespace bk
