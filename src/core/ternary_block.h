#pragma once
// The 2-bit ternary code block, the one definition of that byte layout. 4 * g
// weights (g = 32: a block of 128; g = 16: a half block of 64) in g bytes:
// byte j holds weights j, j + g, j + 2g, j + 3g, each as code + 1 (0, 1, 2) in
// bits 0-1, 2-3, 4-5, 6-7. bitkd's packed I2 rows are runs of these blocks
// (kernels/cpu/ternary.h), and GGUF's TQ2_0 (ggml's) is two full blocks and
// an fp16 scale: the same bytes, so the two convert by copying.
#include <cstdint>

namespace bk {

constexpr int kI2BlockWeights = 128;  // a full block: 32 bytes

// codes [4g] in {-1, 0, 1} -> out [g] bytes.
inline void i2_block_pack(const int8_t* codes, int g, uint8_t* out) {
  for (int j = 0; j < g; j++) {
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) v |= (uint32_t)((codes[j + g * k] + 1) & 3) << (2 * k);
    out[j] = (uint8_t)v;
  }
}

// in [g] bytes -> codes [4g] in {-1, 0, 1} (the unused value 3 reads as 0).
inline void i2_block_unpack(const uint8_t* in, int g, int8_t* codes) {
  for (int k = 0; k < 4; k++)
    for (int j = 0; j < g; j++) {
      const int v = (in[j] >> (2 * k)) & 3;
      codes[j + g * k] = (int8_t)(v == 3 ? 0 : v - 1);
    }
}

}  // namespace bk
