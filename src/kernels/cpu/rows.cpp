// Row matrices in their stored type (rows.h).
#include "kernels/cpu/rows.h"

#include <cmath>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "core/half.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/ternary.h"

namespace bk {

namespace {

// f16 -> f32 for n values: F16C where the CPU has it (the conversion is exact,
// so both paths give the same floats).
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("f16c,avx"))) void f16_to_f32_f16c(const uint16_t* h, float* out, int32_t n) {
  int32_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(h + i))));
  for (; i < n; i++) out[i] = f16_to_f32(h[i]);
}
bool cpu_has_f16c() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
}
#endif

void f16_row_to_f32(const uint16_t* h, float* out, int32_t n) {
#if defined(__x86_64__) || defined(__i386__)
  static const bool f16c = cpu_has_f16c();
  if (f16c) {
    f16_to_f32_f16c(h, out, n);
    return;
  }
#endif
  for (int32_t i = 0; i < n; i++) out[i] = f16_to_f32(h[i]);
}

}  // namespace

const char* row_type_name(RowType t) {
  switch (t) {
    case ROWS_F32: return "f32";
    case ROWS_F16: return "f16";
    case ROWS_BF16: return "bf16";
    case ROWS_Q8_0: return "q8_0";
  }
  return "?";
}

Status row_type_from_name(const std::string& name, RowType* out) {
  for (RowType t : {ROWS_F32, ROWS_F16, ROWS_BF16, ROWS_Q8_0})
    if (name == row_type_name(t)) {
      *out = t;
      return ok_status();
    }
  return errorf("row type '%s': use f32, f16, bf16 or q8_0", name.c_str());
}

Status rows_alloc(RowType t, int32_t rows, int32_t cols, RowMatrix* out) {
  if (rows < 0 || cols <= 0) return errorf("rows_alloc: bad shape [%d, %d]", rows, cols);
  if (t == ROWS_Q8_0 && cols % kQ8Block != 0)
    return errorf("q8_0 rows need a length that is a multiple of %d (this one is %d); use f16", kQ8Block, cols);
  out->type = t;
  out->rows = rows;
  out->cols = cols;
  switch (t) {
    case ROWS_F32: out->row_bytes = (size_t)cols * 4; break;
    case ROWS_F16:
    case ROWS_BF16: out->row_bytes = (size_t)cols * 2; break;
    case ROWS_Q8_0: out->row_bytes = (size_t)cols / kQ8Block * sizeof(BlockQ8_0); break;
  }
  out->data.assign(out->row_bytes * rows, 0);
  return ok_status();
}

void quantize_row_q8_0(const float* x, int32_t cols, BlockQ8_0* out) {
  for (int32_t b = 0; b < cols / kQ8Block; b++) {
    const float* v = x + (size_t)b * kQ8Block;
    float amax = 0.0f;
    for (int i = 0; i < kQ8Block; i++) amax = std::max(amax, std::fabs(v[i]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    out[b].d = f32_to_f16(d);
    for (int i = 0; i < kQ8Block; i++) out[b].qs[i] = (int8_t)quant_round(v[i] * id);
  }
}

void rows_set_row(RowMatrix* m, int32_t r, const float* x) {
  uint8_t* dst = m->data.data() + (size_t)r * m->row_bytes;
  const int32_t n = m->cols;
  switch (m->type) {
    case ROWS_F32: memcpy(dst, x, sizeof(float) * n); break;
    case ROWS_F16: {
      uint16_t* h = (uint16_t*)dst;
      for (int32_t i = 0; i < n; i++) h[i] = f32_to_f16(x[i]);
      break;
    }
    case ROWS_BF16: {
      uint16_t* h = (uint16_t*)dst;
      for (int32_t i = 0; i < n; i++) h[i] = f32_to_bf16(x[i]);
      break;
    }
    case ROWS_Q8_0: quantize_row_q8_0(x, n, (BlockQ8_0*)dst); break;
  }
}

void rows_get_row(const RowMatrix& m, int32_t r, float* out) {
  const uint8_t* src = m.data.data() + (size_t)r * m.row_bytes;
  const int32_t n = m.cols;
  switch (m.type) {
    case ROWS_F32: memcpy(out, src, sizeof(float) * n); break;
    case ROWS_F16: f16_row_to_f32((const uint16_t*)src, out, n); break;
    case ROWS_BF16: {
      const uint16_t* h = (const uint16_t*)src;
      for (int32_t i = 0; i < n; i++) out[i] = bf16_to_f32(h[i]);
      break;
    }
    case ROWS_Q8_0: {
      const BlockQ8_0* b = (const BlockQ8_0*)src;
      for (int32_t k = 0; k < n / kQ8Block; k++) {
        const float d = f16_to_f32(b[k].d);
        for (int i = 0; i < kQ8Block; i++) out[k * kQ8Block + i] = d * (float)b[k].qs[i];
      }
      break;
    }
  }
}

Status rows_from_f32(RowType t, const float* w, int32_t rows, int32_t cols, RowMatrix* out) {
  BK_TRY(rows_alloc(t, rows, cols, out));
#pragma omp parallel for schedule(static) if ((size_t)rows * cols > 65536)
  for (int32_t r = 0; r < rows; r++) rows_set_row(out, r, w + (size_t)r * cols);
  return ok_status();
}

namespace {

float dot_f32(const float* a, const float* b, int32_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int32_t i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

// Exact: |sum| <= 32 * 128 * 128.
inline int32_t dot_i8_block(const int8_t* a, const int8_t* b) {
  int32_t s = 0;
  for (int i = 0; i < kQ8Block; i++) s += (int32_t)a[i] * (int32_t)b[i];
  return s;
}

}  // namespace

void rows_matmul(const RowMatrix& m, const float* x, int32_t n, float* y) {
  const int32_t R = m.rows, C = m.cols;
  if (m.type == ROWS_F32) {
    const float* w = (const float*)m.data.data();
    if (n > 1) {
      matmul_forward(y, x, w, n, C, R);
      return;
    }
#pragma omp parallel for schedule(static) if ((size_t)R * C > 65536)
    for (int32_t o = 0; o < R; o++) y[o] = dot_f32(w + (size_t)o * C, x, C);
    return;
  }
  if (m.type == ROWS_Q8_0) {
    // Activations to Q8_0 once; every row then reads 34 bytes per 32 values.
    const int32_t nb = C / kQ8Block;
    std::vector<BlockQ8_0> xq((size_t)n * nb);
    std::vector<float> xd((size_t)n * nb);
    for (int32_t t = 0; t < n; t++) quantize_row_q8_0(x + (size_t)t * C, C, xq.data() + (size_t)t * nb);
    for (size_t i = 0; i < xq.size(); i++) xd[i] = f16_to_f32(xq[i].d);
#pragma omp parallel for schedule(static) if ((size_t)R * C > 65536)
    for (int32_t o = 0; o < R; o++) {
      const BlockQ8_0* w = (const BlockQ8_0*)(m.data.data() + (size_t)o * m.row_bytes);
      for (int32_t t = 0; t < n; t++) {
        const BlockQ8_0* a = xq.data() + (size_t)t * nb;
        const float* ad = xd.data() + (size_t)t * nb;
        float s = 0.0f;
        for (int32_t k = 0; k < nb; k++) s += f16_to_f32(w[k].d) * ad[k] * (float)dot_i8_block(w[k].qs, a[k].qs);
        y[(size_t)t * R + o] = s;
      }
    }
    return;
  }
  // f16 / bf16: each row widened once, used for all n tokens.
#pragma omp parallel
  {
    std::vector<float> row(C);
#pragma omp for schedule(static)
    for (int32_t o = 0; o < R; o++) {
      rows_get_row(m, o, row.data());
      for (int32_t t = 0; t < n; t++) y[(size_t)t * R + o] = dot_f32(row.data(), x + (size_t)t * C, C);
    }
  }
}

}  // namespace bk
