// RMSNorm (plain and fused with activation quantization) and rotary position
// embeddings, forward and backward.
#include <cmath>
#include <cstring>

#include "kernels/cpu/kernels.h"

namespace bk {

float quant_act_row_codes_inplace(float* x, int c, int bits);  // quant.cpp

// ---- RMSNorm -----------------------------------------------------------------

static inline float row_rstd(const float* x, int c, float eps) {
  double ss = 0.0;
#pragma omp simd reduction(+ : ss)
  for (int j = 0; j < c; j++) ss += (double)x[j] * (double)x[j];
  return (float)(1.0 / std::sqrt(ss / c + (double)eps));
}

// x [n,c], g [c] -> out [n,c], rstd [n]
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* g, int n, int c, float eps) {
  rmsnorm_quant_forward(out, nullptr, rstd, x, g, n, c, eps, 0);
}

void rmsnorm_quant_forward(float* out, float* step, float* rstd, const float* x, const float* g, int n, int c,
                           float eps, int bits) {
#pragma omp parallel for schedule(static) if ((size_t)n * c > 32768)
  for (int i = 0; i < n; i++) {
    const float* xi = x + (size_t)i * c;
    float* oi = out + (size_t)i * c;
    const float r = row_rstd(xi, c, eps);
    rstd[i] = r;
#pragma omp simd
    for (int j = 0; j < c; j++) oi[j] = xi[j] * r * g[j];
    const float st = bits ? quant_act_row_codes_inplace(oi, c, bits) : 1.0f;
    if (step) step[i] = st;
  }
}

// With xhat = x * rstd and y = xhat * g:
//   dx = rstd * (dy*g - xhat * mean(dy*g*xhat)),   dg = sum_rows dy * xhat
void rmsnorm_backward(float* dx, float* dg, const float* dout, const float* x, const float* g, const float* rstd,
                      int n, int c, bool accumulate) {
#pragma omp parallel for schedule(static) if ((size_t)n * c > 32768)
  for (int i = 0; i < n; i++) {
    const float* xi = x + (size_t)i * c;
    const float* di = dout + (size_t)i * c;
    float* dxi = dx + (size_t)i * c;
    const float r = rstd[i];
    double dot = 0.0;
#pragma omp simd reduction(+ : dot)
    for (int j = 0; j < c; j++) dot += (double)(di[j] * g[j]) * (double)(xi[j] * r);
    const float m = (float)(dot / c);
    if (accumulate) {
#pragma omp simd
      for (int j = 0; j < c; j++) dxi[j] += r * (di[j] * g[j] - xi[j] * r * m);
    } else {
#pragma omp simd
      for (int j = 0; j < c; j++) dxi[j] = r * (di[j] * g[j] - xi[j] * r * m);
    }
  }
  // dg: columns split across threads so no two threads write the same entry.
  const int chunk = 64;
  const int nchunks = (c + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (nchunks > 1 && (size_t)n * c > 32768)
  for (int cb = 0; cb < nchunks; cb++) {
    const int j0 = cb * chunk, j1 = j0 + chunk < c ? j0 + chunk : c;
    float acc[64];
    for (int j = 0; j < j1 - j0; j++) acc[j] = 0.0f;
    for (int i = 0; i < n; i++) {
      const float* xi = x + (size_t)i * c + j0;
      const float* di = dout + (size_t)i * c + j0;
      const float r = rstd[i];
#pragma omp simd
      for (int j = 0; j < j1 - j0; j++) acc[j] += di[j] * (xi[j] * r);
    }
    for (int j = 0; j < j1 - j0; j++) dg[j0 + j] += acc[j];
  }
}

// ---- RoPE (rotate_half) -------------------------------------------------------

// cos_t, sin_t [seq, head_dim/2]: angle(pos, i) = pos * theta^(-2i/head_dim)
void rope_tables(float* cos_t, float* sin_t, int seq, int head_dim, float theta) {
  const int half = head_dim / 2;
  for (int p = 0; p < seq; p++) {
    for (int i = 0; i < half; i++) {
      double freq = std::pow((double)theta, -2.0 * i / (double)head_dim);
      double a = p * freq;
      cos_t[(size_t)p * half + i] = (float)std::cos(a);
      sin_t[(size_t)p * half + i] = (float)std::sin(a);
    }
  }
}

// x [B*T, heads, d] with token stride row_stride; rotates (x[i], x[i+d/2]) by +angle
// (forward) or -angle (backward: the rotation is orthogonal, its transpose is its inverse).
static void rope_apply(float* x, const float* cos_t, const float* sin_t, int batch, int seq, int heads,
                       int head_dim, int row_stride, float sign) {
  const int half = head_dim / 2;
  const int rows = batch * seq;
#pragma omp parallel for schedule(static) if ((size_t)rows * heads * head_dim > 32768)
  for (int r = 0; r < rows; r++) {
    const int pos = r % seq;
    const float* cs = cos_t + (size_t)pos * half;
    const float* sn = sin_t + (size_t)pos * half;
    for (int h = 0; h < heads; h++) {
      float* v = x + (size_t)r * row_stride + (size_t)h * head_dim;
#pragma omp simd
      for (int i = 0; i < half; i++) {
        const float a = v[i], b = v[i + half];
        const float s = sign * sn[i];
        v[i] = a * cs[i] - b * s;
        v[i + half] = b * cs[i] + a * s;
      }
    }
  }
}

void rope_forward(float* x, const float* cos_t, const float* sin_t, int batch, int seq, int heads, int head_dim,
                  int row_stride) {
  rope_apply(x, cos_t, sin_t, batch, seq, heads, head_dim, row_stride, 1.0f);
}

void rope_backward(float* dx, const float* cos_t, const float* sin_t, int batch, int seq, int heads, int head_dim,
                   int row_stride) {
  rope_apply(dx, cos_t, sin_t, batch, seq, heads, head_dim, row_stride, -1.0f);
}

}  // namespace bk
