// Softmax, vector helpers used by the losses, and FFN activations.
#include <cmath>

#include "kernels/cpu/kernels.h"
#include "kernels/cpu/simd.h"

namespace bk {

float vec_max(const float* x, size_t n) {
  size_t i = 0;
  float m = -INFINITY;
#ifdef BK_AVX2
  if (n >= 8) {
    __m256 vm = _mm256_loadu_ps(x);
    for (i = 8; i + 8 <= n; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
    m = simd::hmax256(vm);
  }
#endif
  for (; i < n; i++) m = x[i] > m ? x[i] : m;
  return m;
}

double vec_exp_shift_sum(float* x, size_t n, float shift) {
  size_t i = 0;
  double sum = 0.0;
#ifdef BK_AVX2
  const __m256 vs = _mm256_set1_ps(shift);
  __m256 acc = _mm256_setzero_ps();
  // Partial sums stay short (flushed to double every 64 vectors) so the float
  // accumulator does not lose precision over a 32k-wide row.
  while (i + 8 <= n) {
    size_t end = i + 512 < n ? i + 512 : n;
    for (; i + 8 <= end; i += 8) {
      __m256 e = simd::exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vs));
      _mm256_storeu_ps(x + i, e);
      acc = _mm256_add_ps(acc, e);
    }
    sum += simd::hsum256(acc);
    acc = _mm256_setzero_ps();
  }
#endif
  for (; i < n; i++) {
    const float e = simd::exp1(x[i] - shift);
    x[i] = e;
    sum += e;
  }
  return sum;
}

void vec_scale(float* x, size_t n, float a) {
#pragma omp simd
  for (size_t i = 0; i < n; i++) x[i] *= a;
}

// x [n, c] in place
void add_vectors(float* out, const float* a, const float* b, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void softmax_forward(float* x, int n, int c) {
#pragma omp parallel for schedule(static) if ((size_t)n * c > 32768)
  for (int i = 0; i < n; i++) {
    float* xi = x + (size_t)i * c;
    const float m = vec_max(xi, c);
    const double s = vec_exp_shift_sum(xi, c, m);
    vec_scale(xi, c, (float)(1.0 / s));
  }
}

void softmax_backward(float* dx, const float* dy, const float* y, int n, int c) {
#pragma omp parallel for schedule(static) if ((size_t)n * c > 32768)
  for (int i = 0; i < n; i++) {
    const float* dyi = dy + (size_t)i * c;
    const float* yi = y + (size_t)i * c;
    float* dxi = dx + (size_t)i * c;
    double dot = 0.0;
#pragma omp simd reduction(+ : dot)
    for (int j = 0; j < c; j++) dot += (double)dyi[j] * yi[j];
    const float fd = (float)dot;
#pragma omp simd
    for (int j = 0; j < c; j++) dxi[j] = yi[j] * (dyi[j] - fd);
  }
}

// ---- SwiGLU ---------------------------------------------------------------------
// sig = 1 / (1 + exp(-g)); out = g * sig * up
// dgate = dout * up * sig * (1 + g * (1 - sig)); dup = dout * g * sig
static inline void sigmoid_block(float* sig, const float* g, size_t n) {
  size_t i = 0;
#ifdef BK_AVX2
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 zero = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    __m256 e = simd::exp256(_mm256_sub_ps(zero, _mm256_loadu_ps(g + i)));
    _mm256_storeu_ps(sig + i, _mm256_div_ps(one, _mm256_add_ps(one, e)));
  }
#endif
  for (; i < n; i++) sig[i] = 1.0f / (1.0f + simd::exp1(-g[i]));
}

void swiglu_forward(float* out, const float* gate, const float* up, size_t n) {
  const size_t blk = 256;
  const long nb = (long)((n + blk - 1) / blk);
#pragma omp parallel for schedule(static) if (nb > 128)
  for (long b = 0; b < nb; b++) {
    const size_t i0 = (size_t)b * blk, m = i0 + blk < n ? blk : n - i0;
    float sig[256];
    sigmoid_block(sig, gate + i0, m);
#pragma omp simd
    for (size_t j = 0; j < m; j++) out[i0 + j] = gate[i0 + j] * sig[j] * up[i0 + j];
  }
}

void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, size_t n) {
  const size_t blk = 256;
  const long nb = (long)((n + blk - 1) / blk);
#pragma omp parallel for schedule(static) if (nb > 128)
  for (long b = 0; b < nb; b++) {
    const size_t i0 = (size_t)b * blk, m = i0 + blk < n ? blk : n - i0;
    float sig[256];
    sigmoid_block(sig, gate + i0, m);
#pragma omp simd
    for (size_t j = 0; j < m; j++) {
      const float g = gate[i0 + j], s = sig[j], d = dout[i0 + j];
      const float silu = g * s;
      dgate[i0 + j] = d * up[i0 + j] * s * (1.0f + g * (1.0f - s));
      dup[i0 + j] = d * silu;
    }
  }
}

// ---- ReLU^2 ---------------------------------------------------------------------
void relu2_forward(float* out, const float* x, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; i++) {
    const float r = x[i] > 0.0f ? x[i] : 0.0f;
    out[i] = r * r;
  }
}

void relu2_backward(float* dx, const float* dout, const float* x, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; i++) {
    const float r = x[i] > 0.0f ? x[i] : 0.0f;
    dx[i] = dout[i] * 2.0f * r;
  }
}

}  // namespace bk
