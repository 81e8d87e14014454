#pragma once
// Inference weights beyond infer.h's Model -> weights path:
// - synthetic packed ternary weights generated straight into the packed layout
//   (the 7B dry run: no float model, no float copy of any projection);
// - what prepared weights hold, by component (reports, QEI memory);
// - switching the activation bits of prepared weights (A8 -> A4) without
//   repacking.
#include <cstdint>
#include <string>

#include "core/status.h"
#include "kernels/cpu/ternary.h"
#include "model/infer.h"

namespace bk {

struct SyntheticWeightsOptions {
  ModelConfig cfg;                  // weight_quant ternary, act_bits 8 or 4 (validated)
  TernaryType layout = TERNARY_I2;  // packed projection layout
  RowType embed_type = ROWS_BF16;   // embedding and head rows
  uint64_t seed = 1234;
};

// Deterministic random weights for cfg, built without a Model:
// - projections: every packed byte is drawn per row from a generator seeded by
//   (seed, layer, projection, row), each 2-bit draw giving a code with
//   P(-1) = P(+1) = 1/4, P(0) = 1/2; a row tail shorter than one layout block
//   is packed from explicit codes so padding stays zero weights. gamma scales
//   outputs to about unit RMS (o/down also by 1/sqrt(2 * n_layers)).
// - embedding and head: rows of embed_type (zero mean, standard deviation 1
//   and 1/sqrt(dim); triangular, not normal) drawn per row;
//   norms: ones (fp32).
// Same options -> bit-identical weights, whatever the thread count.
Status infer_weights_create_synthetic(const SyntheticWeightsOptions& opt, InferWeights** out);

// The projection generator on its own: [rows, cols] codes for stream
// `tensor` (infer_weights_create_synthetic uses layer * 16 + projection index,
// q k v o gate up down = 0..6), packed into *out with the given gamma.
Status synthetic_ternary_matrix(TernaryType layout, uint64_t seed, uint64_t tensor, int32_t rows, int32_t cols,
                                float gamma, TernaryMatrix* out);

// Bytes held, by component; the four parts add up to infer_weights_bytes.
struct InferWeightBytes {
  size_t embeddings = 0;    // token embedding
  size_t norms = 0;         // every RMSNorm gain
  size_t projections = 0;   // BitLinear weights (packed codes + gammas, or fp32)
  size_t head = 0;          // untied LM head (0 when tied to the embedding)
  size_t total = 0;
  int64_t embedding_params = 0, norm_params = 0, projection_params = 0, head_params = 0;
  bool head_tied = false;
  // Projection bytes * 8 / projection weights (padding and gammas included).
  double projection_bits_per_weight = 0;
  std::string embedding_dtype;   // the embedding's row type: "f32", "f16", "bf16" or "q8_0"
  std::string projection_format; // "ternary-i2", "ternary-t1", "f32"
};
void infer_weights_bytes_by_component(const InferWeights* w, InferWeightBytes* out);

// Bytes one decode step (a single-token forward with a KV cache) reads from
// memory, by what reads them: every projection and norm once, one embedding
// row, the whole head (the embedding again when tied), and the fp32 K and V
// of `context` cached positions in every layer. Activations and scratch are
// left out: they stay in cache.
struct DecodeBytes {
  size_t weights = 0;        // projections + norms
  size_t embedding_row = 0;  // the token's row
  size_t head = 0;           // logits: every vocabulary row
  size_t kv_cache = 0;       // 2 * layers * context * kv_dim * 4
  size_t total = 0;
};
void infer_decode_bytes(const InferWeights* w, double context, DecodeBytes* out);

// Sets the activation bits (8 or 4 for the packed backend; also 0 for float)
// and the 4-bit scope, as a flip does in training. Must not run while a
// session evaluates on w.
Status infer_weights_set_act_bits(InferWeights* w, int act_bits, A4Scope scope);

}  // namespace bk
