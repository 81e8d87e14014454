#pragma once
// CPU kernels for the training engine: dense GEMM (OpenBLAS), BitNet
// quantizers, RMSNorm, RoPE, causal attention, softmax and FFN activations.
// Kernels know nothing about models: they take raw row-major float buffers and
// sizes. Forward and backward of each op sit side by side (llm.c style).
//
// Conventions
//   - Row-major everywhere; "[N, C]" means N rows of C contiguous floats.
//   - Backward functions ACCUMULATE (+=) into parameter gradients; whether they
//     accumulate into input gradients is stated per function.
//   - Rounding in every quantizer is quant_round() from kernels/cpu/ternary.h:
//     half away from zero (std::round, as in the BitNet reference code) unless
//     the build defines BITKD_QUANT_ROUND_HALF_EVEN=1. The fake-quant here and
//     the integer inference kernels share it (same formulas, same operation
//     order), so training and inference see the same codes; the PyTorch
//     reference (tests/reference/model_ref.py) implements both rules exactly.
//   - Straight-through estimator: quantizers have no backward; callers pass the
//     gradient of the quantized value straight to the unquantized one.
#include <cstddef>
#include <cstdint>

namespace bk {

// ---- threads ---------------------------------------------------------------
// Sets the thread count of both our OpenMP loops and OpenBLAS (one pool: the
// OpenMP build of OpenBLAS). n <= 0 means all hardware threads.
void kernels_set_threads(int n);
int kernels_get_threads();

// ---- GEMM (cblas_sgemm) ----------------------------------------------------
// General row-major C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C.
void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
          int ldb, float beta, float* c, int ldc);
// Linear layer y = x W^T.        x [n, in], W [out, in] (PyTorch layout), y [n, out]; y overwritten.
void matmul_forward(float* y, const float* x, const float* w, int n, int in, int out);
// dx (+)= dy W.                  dy [n, out], W [out, in], dx [n, in]; accumulate selects += vs =.
void matmul_backward_dx(float* dx, const float* dy, const float* w, int n, int in, int out, bool accumulate);
// dW += dy^T x.                  dy [n, out], x [n, in], dW [out, in]; always accumulates.
void matmul_backward_dw(float* dw, const float* dy, const float* x, int n, int in, int out);

// ---- quantizers (DESIGN.md §3) ---------------------------------------------
constexpr float kQuantEps = 1e-5f;
// Absmean ternary, per tensor: gamma = mean|W| (accumulated in double, then
// rounded to float), Wq = gamma * clamp(round(W / (gamma + eps)), -1, 1).
// wq may equal w. Returns gamma. Every Wq value is exactly -gamma, 0 or +gamma.
float quant_ternary(float* wq, const float* w, size_t n);
// Same rule, codes only: q[i] in {-1, 0, 1}; returns gamma (Wq = gamma * q).
float quant_ternary_codes(int8_t* q, const float* w, size_t n);

// Activation fake-quant per row (token) of x [n, c]; out may equal x.
//  int8 absmax:  s = 127 / max(max|x|, eps), xq = clamp(round(x * s), -128, 127) / s
//  int4 absmean: b = mean|x| (double accumulation, rounded to float),
//                xq = (b / sqrt7) * clamp(round((x * sqrt7) / (b + eps)), -8, 7)
// with sqrt7 = sqrtf(7) and the float operations in exactly that order.
// bits 0 copies x unchanged.
void quant_act_int8(float* out, const float* x, int n, int c);
void quant_act_int4(float* out, const float* x, int n, int c);
void quant_act(float* out, const float* x, int n, int c, int bits);
// One row to integer codes (for integer inference), same scales and rounding
// as the fake-quant above. Returns the dequantisation step: x ~= q * step
// (int8: step = 1 / s, *s_out = s when non-null; int4: step = b / sqrt7).
// The int8 fake-quant value is q / s, which may differ from q * (1/s) in the
// last bit.
float quant_int8_codes(int8_t* q, const float* x, int c, float* s_out);
float quant_int4_codes(int8_t* q, const float* x, int c);

// ---- RMSNorm ---------------------------------------------------------------
// out[i,:] = x[i,:] * rstd[i] * g,  rstd[i] = 1 / sqrt(mean(x[i,:]^2) + eps)
// (mean of squares accumulated in double). x [n, c], g [c], out [n, c], rstd [n].
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* g, int n, int c, float eps);
// Fused RMSNorm then per-row activation fake-quant (bits 0, 4 or 8) of the
// normalised row while it is in cache.
void rmsnorm_quant_forward(float* out, float* rstd, const float* x, const float* g, int n, int c, float eps,
                           int bits);
// dx (+)= dL/dx, dg += dL/dg, given dout [n, c] and the saved x, rstd.
void rmsnorm_backward(float* dx, float* dg, const float* dout, const float* x, const float* g, const float* rstd,
                      int n, int c, bool accumulate);

// ---- RoPE (Hugging Face / Llama "rotate_half" convention) -------------------
// For a head vector x of size d and i < d/2, with pos the position in the
// sequence and freq_i = theta^(-2i/d):
//   x'[i]       = x[i] cos(pos*freq_i) - x[i+d/2] sin(pos*freq_i)
//   x'[i+d/2]   = x[i+d/2] cos(pos*freq_i) + x[i] sin(pos*freq_i)
// (llama.cpp applies the same rotation as "NORM" rope to GGUF-permuted q/k weights.)
// Tables: cos, sin [seq, d/2], angles computed in double.
void rope_tables(float* cos_t, float* sin_t, int seq, int head_dim, float theta);
// In place on x [batch*seq, heads, head_dim] (token row stride = row_stride floats);
// the position of token row r is r % seq.
void rope_forward(float* x, const float* cos_t, const float* sin_t, int batch, int seq, int heads, int head_dim,
                  int row_stride);
// In place: the transpose (inverse) rotation applied to the gradient.
void rope_backward(float* dx, const float* cos_t, const float* sin_t, int batch, int seq, int heads, int head_dim,
                   int row_stride);

// ---- causal self-attention with key padding mask ---------------------------
// q [B, T, H, d], k, v [B, T, KV, d] (KV divides H: query head h reads kv head
// h / (H / KV)), mask [B, T] (1 = real token, 0 = padding; nullptr = no padding),
// out [B, T, H, d], att [B, H, T, T] the saved softmax probabilities (entries
// outside the causal, unmasked set are 0). Scores are scaled by 1/sqrt(d).
// A query whose every visible key is padding gets a zero output row. Runs
// sgemm per (batch, head) inside an OpenMP loop (OpenBLAS goes single-threaded there).
void attention_forward(float* out, float* att, const float* q, const float* k, const float* v, const uint8_t* mask,
                       int B, int T, int H, int KV, int d);
// dq, dk, dv are OVERWRITTEN. dout [B, T, H, d].
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* att, int B, int T, int H, int KV, int d);
// Useful FLOPs of the two attention matmuls (QK^T, PV) over the causal
// triangle, forward; the backward does twice as many. (The kernels compute
// 64-row blocks, so they do up to ~25% more work on the block diagonal.)
double attention_flops_forward(int B, int T, int H, int d);

// ---- softmax and vector helpers ----------------------------------------------
// In place softmax over each row of x [n, c].
void softmax_forward(float* x, int n, int c);
// dx = y * (dy - sum(dy * y)), rows of [n, c]; dx overwritten (may equal dy).
void softmax_backward(float* dx, const float* dy, const float* y, int n, int c);
float vec_max(const float* x, size_t n);
// x[i] = exp(x[i] - shift) in place; returns the sum (accumulated in double).
double vec_exp_shift_sum(float* x, size_t n, float shift);
// x[i] *= a.
void vec_scale(float* x, size_t n, float a);

// ---- FFN activations (elementwise over n values) ----------------------------
// SwiGLU: out = silu(gate) * up, silu(g) = g * sigmoid(g).
void swiglu_forward(float* out, const float* gate, const float* up, size_t n);
// dgate, dup overwritten.
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, size_t n);
// ReLU^2: out = max(x, 0)^2.
void relu2_forward(float* out, const float* x, size_t n);
// dx overwritten: dx = dout * 2 * max(x, 0).
void relu2_backward(float* dx, const float* dout, const float* x, size_t n);

}  // namespace bk
