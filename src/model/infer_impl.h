#pragma once
// Private to src/model/infer*.cpp: the prepared-weights structures that
// infer.cpp (sessions) and infer_synthetic.cpp (synthetic packed weights,
// per-component byte counts) share. Nothing outside model/ includes this.
#include <cstdint>
#include <vector>

#include "kernels/cpu/rows.h"
#include "kernels/cpu/ternary.h"
#include "model/infer.h"

namespace bk {

// A BitLinear weight as the backend holds it. Float backend: f points at
// [out, in] floats: the ternary codes (-1, 0, 1) with gamma for ternary models,
// the weights themselves (gamma 1) for float ones. Packed backend: p holds the
// 2-bit codes and gamma.
struct InferLinear {
  const float* f = nullptr;
  float gamma = 1.0f;
  TernaryMatrix p;
  int out = 0, in = 0;
};

struct InferLayer {
  const float* attn_norm = nullptr;      // [dim]
  const float* attn_sub_norm = nullptr;  // [q_dim] or null
  const float* ffn_norm = nullptr;       // [dim]
  const float* ffn_sub_norm = nullptr;   // [ffn_dim] or null
  InferLinear wq, wk, wv, wo, w_gate, w_up, w_down;
};

struct InferWeights {
  ModelConfig cfg;
  InferBackend backend = INFER_FLOAT;
  // Full-precision tensors the session reads. Float backend: a copy of every
  // parameter (BitLinear weights of ternary models replaced by their codes).
  // Packed backend: the norms only; BitLinear weights live packed in the
  // layers, the embedding and an untied head in embed_rows / head_rows.
  std::vector<float> f32;
  const float* tok_embeddings = nullptr;  // [vocab, dim], float backend
  const float* final_norm = nullptr;      // [dim]
  const float* output = nullptr;          // [vocab, dim], float backend
  // Packed backend: the embedding and the untied head in their kept type
  // (f32, f16, bf16 or q8_0); head_rows has no rows when the head is tied.
  RowMatrix embed_rows, head_rows;
  std::vector<InferLayer> layers;
  size_t bytes = 0;
  // Activation bits per BitLinear input class (projection_bits; 0 = none), fixed at creation.
  int bits_qkv = 0, bits_o = 0, bits_gateup = 0, bits_down = 0;
};

}  // namespace bk
