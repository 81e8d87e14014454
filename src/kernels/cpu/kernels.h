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
//     the build defines BITKD_QUANT_ROUND_HALF_EVEN=1. Training and inference
//     share the quantizers below, so they see the same codes; the PyTorch
//     reference (tests/reference/model_ref.py) implements both rules exactly.
//   - Straight-through estimator: quantizers have no backward; callers pass the
//     gradient of the quantized value straight to the unquantized one.
#include <cstddef>
#include <cstdint>
#include <string>

namespace bk {

// ---- CPU features and the kernels that run -----------------------------------
// OpenBLAS's dynamic-arch build picks its kernel family from the CPU model
// number when it loads, and CPUs newer than the library (Sapphire Rapids,
// Zen 4/5) get AVX2 or SSE3 kernels, up to 5x slower. kernels_init() instead
// derives the family from the CPU's features (AVX-512 -> SkylakeX, or
// Cooperlake with AVX512-BF16; AVX2+FMA -> Haswell) before the first matmul.
// OPENBLAS_CORETYPE, when set, wins (tests use it to force other families).
struct KernelInfo {
  std::string cpu;                   // model name ("" if unknown)
  std::string vector_isa;            // widest vector unit: "avx512" (F/BW/DQ/VL), "avx2" (+FMA), "avx", "sse"
  int vector_bits = 128;             // 512, 256 or 128
  bool avx512_vnni = false, avx512_bf16 = false;
  std::string blas;                  // OpenBLAS build ("OpenBLAS 0.3.21 DYNAMIC_ARCH ...")
  std::string blas_family;           // the kernel family the matmuls run ("SkylakeX")
  std::string blas_family_openblas;  // what OpenBLAS chose on its own
  std::string blas_family_source;    // who chose blas_family, in words
  std::string ternary;               // packed ternary kernels (ternary_backend())
};
// Idempotent and thread-safe; every matmul entry point calls it.
void kernels_init();
const KernelInfo& kernels_info();
// Switches OpenBLAS to another kernel family ("Prescott", "Haswell", ...) while
// no matmul runs; false when this OpenBLAS cannot (single-architecture build,
// unknown name). For tests and benchmarks that compare families in one process.
bool kernels_use_blas_family(const char* family);

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

// ---- quantizers ----------------------------------------------------------------
// One implementation of each rule, shared by training and both inference
// backends (docs/training.md, "BitLinear"). BitLinear multiplies CODES, not
// dequantized values:
//   y[n, o] = (sum_i xc[n, i] * wc[o, i]) * (gamma * step[n])
// The codes are small integers held exactly in fp32 and every partial sum stays
// below 2^24, so the sum is exact whatever the BLAS kernel, summation order or
// thread count; the packed integer kernels compute the same value in int32.
// Only the one multiplication by (gamma * step[n]) rounds, identically everywhere.
constexpr float kQuantEps = 1e-5f;
// Absmean ternary, per tensor: gamma = mean|W| (double, fixed summation order,
// rounded to float), code = clamp(round(W / (gamma + eps)), -1, 1). Returns gamma.
float quant_ternary_codes(int8_t* q, const float* w, size_t n);
float quant_ternary_codes_f32(float* q, const float* w, size_t n);  // codes as floats (-1, 0, 1)
// Dequantized: wq = gamma * code (wq may equal w).
float quant_ternary(float* wq, const float* w, size_t n);

// Per-row (token) activation codes of x [n, c], as floats, and the dequant step
// per row (x ~= q * step):
//   int8 absmax:  s = 127 / max(max|x|, eps), q = clamp(round(x * s), -128, 127), step = 1 / s
//   int4 absmean: b = mean|x|, q = clamp(round((x * sqrt7) / (b + eps)), -8, 7), step = b / sqrt7
// The row rule is act_quant_row_i8/i4 (ternary.h), the packed engine's own.
// bits 0 copies x and sets step to 1. q may equal x; step may be null.
void quant_act_codes(float* q, float* step, const float* x, int n, int c, int bits);
// Dequantized (fake-quant): out = q * step. out may equal x.
void quant_act(float* out, const float* x, int n, int c, int bits);
// The BitLinear output scale, in place: y[i, j] *= gamma * step[i] for y [n, c]
// (the factor rounded once per row, as the packed kernels do).
void scale_rows(float* y, const float* step, float gamma, int n, int c);

// ---- RMSNorm ---------------------------------------------------------------
// out[i,:] = x[i,:] * rstd[i] * g,  rstd[i] = 1 / sqrt(mean(x[i,:]^2) + eps)
// (mean of squares accumulated in double). x [n, c], g [c], out [n, c], rstd [n].
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* g, int n, int c, float eps);
// Fused RMSNorm then, for bits 4 or 8, the row's activation codes (quant_act_codes)
// while it is in cache; step [n] gets the dequant step (1 for bits 0; may be null then).
void rmsnorm_quant_forward(float* out, float* step, float* rstd, const float* x, const float* g, int n, int c,
                           float eps, int bits);
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
// One query row of one head over nkeys keys (the caller passes the keys the
// query may see): probs [nkeys] = softmax(scale * q . k_j), keys with
// mask[j] == 0 (mask may be null) getting 0, and out [d] = sum_j probs[j] v_j;
// no visible key gives zeros. Rows of k and v are kv_stride floats apart. The
// summation order is fixed (no BLAS), so the training forward and the
// inference sessions, whatever their chunking, compute the same bits.
void attention_row(float* out, float* probs, const float* q, const float* k, const float* v, int kv_stride,
                   const uint8_t* mask, int nkeys, int d, float scale);
// q [B, T, H, d], k, v [B, T, KV, d] (KV divides H: query head h reads kv head
// h / (H / KV)), mask [B, T] (1 = real token, 0 = padding; nullptr = no padding),
// out [B, T, H, d], att [B, H, T, T] the saved softmax probabilities (entries
// outside the causal, unmasked set are 0). Scores are scaled by 1/sqrt(d).
// A query whose every visible key is padding gets a zero output row.
// attention_row per query; OpenMP over (batch, head).
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
// out[i] = a[i] + b[i] (out may equal a or b).
void add_vectors(float* out, const float* a, const float* b, size_t n);

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
