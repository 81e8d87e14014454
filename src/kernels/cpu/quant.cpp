// BitNet quantizers, one implementation of each rule, shared by training and
// both inference backends (kernels.h):
//   - absmean ternary weights (codes, or gamma * codes);
//   - per-token int8 absmax / int4 absmean activations, whose row rule lives
//     in ternary.cpp (act_quant_row_i8/i4, scalar and AVX2 bit-identical);
//     here it is applied to whole matrices and written as float codes.
#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/kernels.h"
#include "kernels/cpu/ternary.h"

namespace bk {

namespace {

constexpr size_t kBlock = 4096;

// mean |w|: each block of 4096 values summed in double over 8 lanes (value i
// to lane i % 8, lanes combined pairwise), then the blocks in order. The order
// depends on n only, never on the thread count or the vector unit, so every
// caller (training, packing, GGUF) gets the same gamma for the same tensor.
float absmean_fixed(const float* w, size_t n) {
  if (n == 0) return 0.0f;
  const size_t nb = (n + kBlock - 1) / kBlock;
  std::vector<double> part(nb);
#pragma omp parallel for schedule(static) if (n > 65536)
  for (size_t b = 0; b < nb; b++) {
    const size_t i0 = b * kBlock, i1 = i0 + kBlock < n ? i0 + kBlock : n;
    double p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (size_t i = i0; i < i1; i++) p[(i - i0) & 7] += std::fabs((double)w[i]);
    part[b] = ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
  }
  double sum = 0.0;
  for (size_t b = 0; b < nb; b++) sum += part[b];
  return (float)(sum / (double)n);
}

template <class T>
float ternary_codes(T* q, const float* w, size_t n) {
  const float gamma = absmean_fixed(w, n);
  const float denom = gamma + kQuantEps;
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; i++) {
    const float r = quant_round(w[i] / denom);
    q[i] = (T)(r < -1.0f ? -1.0f : (r > 1.0f ? 1.0f : r));
  }
  return gamma;
}

// One row to float codes through the shared row rule; returns the step.
// q may equal x (the row is read completely before q is written).
float act_codes_row(float* q, const float* x, int c, int bits, std::vector<int8_t>* buf) {
  if ((int)buf->size() < c) buf->resize(c);
  int8_t* b = buf->data();
  const float step = bits == 8 ? act_quant_row_i8(x, c, b, nullptr) : act_quant_row_i4(x, c, b, nullptr);
  for (int j = 0; j < c; j++) q[j] = (float)b[j];
  return step;
}

}  // namespace

// ---- ternary weights ----------------------------------------------------------

float quant_ternary_codes(int8_t* q, const float* w, size_t n) { return ternary_codes(q, w, n); }
float quant_ternary_codes_f32(float* q, const float* w, size_t n) { return ternary_codes(q, w, n); }

float quant_ternary(float* wq, const float* w, size_t n) {
  const float gamma = ternary_codes(wq, w, n);
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; i++) wq[i] = gamma * wq[i];
  return gamma;
}

// ---- activations ----------------------------------------------------------------

void quant_act_codes(float* q, float* step, const float* x, int n, int c, int bits) {
  if (bits == 0) {
    if (q != x) memcpy(q, x, sizeof(float) * (size_t)n * c);
    if (step)
      for (int i = 0; i < n; i++) step[i] = 1.0f;
    return;
  }
#pragma omp parallel if ((size_t)n * c > 32768)
  {
    std::vector<int8_t> buf;
#pragma omp for schedule(static)
    for (int i = 0; i < n; i++) {
      const float s = act_codes_row(q + (size_t)i * c, x + (size_t)i * c, c, bits, &buf);
      if (step) step[i] = s;
    }
  }
}

void quant_act(float* out, const float* x, int n, int c, int bits) {
  if (bits == 0) {
    if (out != x) memcpy(out, x, sizeof(float) * (size_t)n * c);
    return;
  }
  std::vector<float> step(n);
  quant_act_codes(out, step.data(), x, n, c, bits);
  for (int i = 0; i < n; i++)
    for (int j = 0; j < c; j++) out[(size_t)i * c + j] *= step[i];
}

void scale_rows(float* y, const float* step, float gamma, int n, int c) {
#pragma omp parallel for schedule(static) if ((size_t)n * c > 32768)
  for (int i = 0; i < n; i++) {
    const float f = bitlinear_scale(gamma, step[i]);
    float* yi = y + (size_t)i * c;
#pragma omp simd
    for (int j = 0; j < c; j++) yi[j] = yi[j] * f;
  }
}

// Used by rmsnorm_quant_forward (norm_rope.cpp) on a row that is still in cache.
float quant_act_row_codes_inplace(float* x, int c, int bits) {
  thread_local std::vector<int8_t> buf;
  return act_codes_row(x, x, c, bits, &buf);
}

}  // namespace bk
