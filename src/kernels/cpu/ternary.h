#pragma once
// Packed ternary weights and integer matmul kernels for BitLinear inference
// (BitNet b1.58 weights, 8-bit absmax or 4-bit absmean activations per token).
//
//   weights  W [out, in]:  gamma = mean|W|, Wq = RoundClip(W / (gamma + 1e-5), -1, 1)
//   acts     x [T, in]:    q [T, in] int8, x ~= q * scale[t]
//   output   y [T, out]:   y[t, o] = gamma * scale[t] * sum_i q[t, i] * Wq[o, i]
//
// Two packed layouts, both storing code = w + 1 in {0, 1, 2} and padding each
// row with zero weights (code 1) up to a multiple of the layout's granularity:
//
//   TERNARY_I2  2 bits/weight. A row is a run of 32-byte blocks of 128 weights
//               (byte j holds weights j, j+32, j+64, j+96 in bits 0-1, 2-3,
//               4-5, 6-7), so one 256-bit load plus a shift and a mask yields
//               32 consecutive codes; a row whose padded length is not a
//               multiple of 128 ends with one 16-byte half block of 64 weights
//               (byte j holds j, j+16, j+32, j+48). Granularity 64.
//   TERNARY_T1  1.6 bits/weight: 5 trits per byte. A row is a run of 32-byte
//               blocks of 160 weights (byte j holds weights j+32k, k = 0..4)
//               and possibly one 16-byte half block of 80 weights (byte j holds
//               j+16k). A byte stores v = sum_k code_k * 3^(4-k) as
//               ceil(v * 256 / 243), so digit k comes out as the high byte of
//               3 * (byte * 3^k mod 256). Granularity 80.
//
// Bits per weight count the padding and the 4-byte gamma (ternary_size).
// Quantized activations are stored with a row stride >= the weight's cols_pad
// and zeros beyond cols, so kernels need no tail code.
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/status.h"

// Rounding for every quantizer here (weights and activations, scalar and SIMD):
// 0 = half away from zero (std::round; the BitNet reference), 1 = half to even
// (torch.round). The training fake-quant must round the same way, so it should
// call quant_round (or the act_quant_row_* functions) rather than its own.
#ifndef BITKD_QUANT_ROUND_HALF_EVEN
#define BITKD_QUANT_ROUND_HALF_EVEN 0
#endif

namespace bk {

// The one output scale of a BitLinear row: code sums times (gamma * step).
// Every path (training, float and packed inference) multiplies by this value.
inline float bitlinear_scale(float gamma, float step) { return gamma * step; }

inline float quant_round(float x) {
#if BITKD_QUANT_ROUND_HALF_EVEN
  return std::nearbyint(x);  // default FP environment rounds half to even
#else
  // Same result as std::round, written so that compilers vectorize it:
  // x - trunc(x) is exact for every float.
  float t = std::trunc(x);
  return std::fabs(x - t) >= 0.5f ? t + std::copysign(1.0f, x) : t;
#endif
}

// ---- weights --------------------------------------------------------------

enum TernaryType : int32_t {
  TERNARY_I2 = 0,  // 2 bits per weight
  TERNARY_T1 = 1,  // 1.6 bits per weight (5 trits per byte)
};

struct TernaryMatrix {
  TernaryType type = TERNARY_I2;
  int32_t rows = 0;        // out
  int32_t cols = 0;        // in
  int32_t cols_pad = 0;    // cols rounded up to ternary_granularity(type)
  int64_t row_bytes = 0;   // bytes per packed row
  float gamma = 0.0f;      // per-tensor scale
  std::vector<uint8_t> data;  // [rows, row_bytes]
};

struct TernarySize {
  int64_t bytes;           // packed data + gamma
  double bits_per_weight;  // bytes * 8 / (rows * cols), padding included
};

// The codes come from quant_ternary_codes (kernels.h), the one weight rule.
int32_t ternary_granularity(TernaryType type);                 // 64 or 80
int32_t ternary_cols_pad(TernaryType type, int32_t cols);      // round up
// wq [rows, cols] in {-1, 0, 1} -> *out. Fails naming the first bad value.
Status pack_ternary_i2(const int8_t* wq, int32_t rows, int32_t cols, float gamma, TernaryMatrix* out);
Status pack_ternary_t1(const int8_t* wq, int32_t rows, int32_t cols, float gamma, TernaryMatrix* out);
// Quantizes fp32 w [rows, cols] with quant_ternary_codes and packs it.
Status pack_ternary_f32(TernaryType type, const float* w, int32_t rows, int32_t cols, TernaryMatrix* out);
// Back to wq [rows, cols] (padding dropped); works for both layouts.
void unpack_ternary(const TernaryMatrix& m, int8_t* wq);
inline void unpack_ternary_i2(const TernaryMatrix& m, int8_t* wq) { unpack_ternary(m, wq); }
TernarySize ternary_size(const TernaryMatrix& m);

// ---- activations ----------------------------------------------------------

struct ActQuant {
  int32_t tokens = 0;
  int32_t cols = 0;
  int32_t stride = 0;         // row stride of q, >= cols, zero-filled past cols
  int32_t bits = 8;           // 8 (absmax) or 4 (absmean, values in [-8, 7])
  std::vector<int8_t> q;      // [tokens, stride]
  std::vector<float> scale;   // [tokens]  x ~= q * scale
  std::vector<int32_t> sum;   // [tokens]  sum of q over the row
};

// One token. int8: s = 127 / max(max|x|, 1e-5), q = clamp(round(x * s), -128, 127),
// returns 1 / s. int4: b = mean|x|, q = clamp(round(sqrt7 * x / (b + 1e-5)), -8, 7),
// returns b / sqrt7. *sum gets the sum of q (may be null).
float act_quant_row_i8(const float* x, int32_t n, int8_t* q, int32_t* sum);
float act_quant_row_i4(const float* x, int32_t n, int8_t* q, int32_t* sum);
// x [tokens, cols] -> *out (buffers reused across calls). Pass the weight's
// cols_pad (or anything >= it) as stride; bits is 8 or 4.
Status quantize_acts(const float* x, int32_t tokens, int32_t cols, int32_t stride, int32_t bits,
                     ActQuant* out);

// ---- matmul ---------------------------------------------------------------

// acc [tokens, rows]: exact int32 sum_i q[t, i] * Wq[o, i].
Status ternary_matmul_i32(const TernaryMatrix& w, const ActQuant& a, int32_t* acc);
// y [tokens, rows] = gamma * scale[t] * acc[t, o]. OpenMP over output rows.
Status ternary_matmul(const TernaryMatrix& w, const ActQuant& a, float* y);

// Kernel set, chosen at run time: AVX-512 VNNI (I2 matmul) where the CPU has
// it, else AVX2, else scalar; BITKD_SIMD=avx2 or =scalar (read once) or
// ternary_limit_simd cap it. Every level gives bit-identical results.
enum TernarySimd : int {
  TERNARY_SIMD_SCALAR = 0,
  TERNARY_SIMD_AVX2 = 1,
  TERNARY_SIMD_AVX512VNNI = 2,
};
void ternary_limit_simd(TernarySimd cap);  // TERNARY_SIMD_AVX512VNNI: no cap
TernarySimd ternary_cpu_simd();            // what the CPU supports
const char* ternary_backend();             // "avx512vnni", "avx2" or "scalar"

}  // namespace bk
