#pragma once
// ggml's block-quantized tensor types that bitkd dequantizes on load (the
// types llama.cpp users' GGUF files have): Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (blocks
// of 32 weights) and the K-quants Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (super-blocks of
// 256 weights with 16 or 8 sub-block scales). The block layouts are ggml's
// (ggml-common.h); gguf_quants.cpp has one plain struct per block with its
// size checked, and one scalar dequantizer per type that evaluates each value
// with the same float operations in the same order as ggml's reference code
// and gguf-py's quants.py (so the results are bit-identical to both).
//
// The i-quants (IQ1_S .. IQ4_XS), Q8_1, Q8_K and MXFP4/NVFP4 are not read:
// a tensor of one of them is refused by name (ggml_refused_type_name).
#include <cstdint>

// The type numbers (GGML_TYPE_Q4_0 ...) are in io/gguf.h with the others.

namespace bk {

// The block-quantized types dequantize_blocks handles (Q8_0 included).
bool ggml_is_dequant_type(uint32_t t);
// For those types: name ("q4_k"), weights per block, bytes per block; nullptr / 0 otherwise.
const char* ggml_quant_name(uint32_t t);
int64_t ggml_quant_block_size(uint32_t t);
int64_t ggml_quant_type_size(uint32_t t);
// The name of a ggml type bitkd knows of but does not read (the i-quants,
// Q8_1, Q8_K, MXFP4, NVFP4, the integer types), nullptr for any other number.
const char* ggml_refused_type_name(uint32_t t);
// The types read, for messages: "f32, f16, bf16, q4_0, ... tq2_0".
const char* ggml_supported_types_text();

// Converts n_blocks blocks of type t at src to floats (n_blocks * block size
// values at dst). Returns false when t is not a dequant type.
bool dequantize_blocks(uint32_t t, const uint8_t* src, int64_t n_blocks, float* dst);

}  // namespace bk
