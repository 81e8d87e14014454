#pragma once
// Full-precision matrices read by rows, kept in a compact stored type: the
// token embedding (one row per token) and the LM head (every row per token,
// the biggest read of a small model's decode step). Packed inference keeps
// them as the GGUF file stored them instead of widening them to fp32.
//
//   ROWS_F32   4 bytes/value
//   ROWS_F16   IEEE binary16
//   ROWS_BF16  bfloat16
//   ROWS_Q8_0  GGUF's Q8_0: blocks of 32 values, value = f16 d * int8 q
//              (34 bytes per 32 values, 8.5 bits); needs cols % 32 == 0
//
// rows_matmul on Q8_0 rows quantizes the activations to Q8_0 blocks too
// (d = max|x| / 127, q = round(x / d)) and sums int8 products exactly per
// block, then adds the blocks' d_w * d_x * sum in block order: one fixed
// order of float operations, the same on every CPU and thread count.
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace bk {

enum RowType : int32_t {
  ROWS_F32 = 0,
  ROWS_F16 = 1,
  ROWS_BF16 = 2,
  ROWS_Q8_0 = 3,
};
const char* row_type_name(RowType t);  // "f32", "f16", "bf16", "q8_0"
Status row_type_from_name(const std::string& name, RowType* out);

constexpr int kQ8Block = 32;
struct BlockQ8_0 {
  uint16_t d;           // f16 scale
  int8_t qs[kQ8Block];  // value i = d * qs[i]
};
static_assert(sizeof(BlockQ8_0) == 34, "BlockQ8_0 must match GGUF's Q8_0 block (34 bytes)");

struct RowMatrix {
  RowType type = ROWS_F32;
  int32_t rows = 0, cols = 0;
  size_t row_bytes = 0;
  std::vector<uint8_t> data;  // [rows, row_bytes]
};

// Allocates rows x cols of type t (zeros). Fails for Q8_0 when cols % 32 != 0.
Status rows_alloc(RowType t, int32_t rows, int32_t cols, RowMatrix* out);
// Row r from fp32 values (rounded to the type: f16/bf16 to nearest even,
// Q8_0 by the block rule above).
void rows_set_row(RowMatrix* m, int32_t r, const float* x);
// Row r widened to fp32 (exact for every type).
void rows_get_row(const RowMatrix& m, int32_t r, float* out);
// The whole matrix from w [rows, cols].
Status rows_from_f32(RowType t, const float* w, int32_t rows, int32_t cols, RowMatrix* out);
inline size_t rows_bytes(const RowMatrix& m) { return m.data.size(); }

// y [n, rows] = x [n, cols] . M^T. OpenMP over rows (and over tokens for the
// fp32 sgemm of a prefill).
void rows_matmul(const RowMatrix& m, const float* x, int32_t n, float* y);

// One row of fp32 values to Q8_0 blocks (cols % 32 == 0): GGUF's rule.
void quantize_row_q8_0(const float* x, int32_t cols, BlockQ8_0* out);

}  // namespace bk
