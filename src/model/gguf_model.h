#pragma once
// bitkd Model <-> GGUF (llama.cpp) mapping.
//
// Architecture chosen from the config:
//   subln = true   -> llama.cpp "bitnet": attn_sub_norm / ffn_sub_norm, NEOX
//                     (rotate_half) RoPE as bitkd, so q/k are written as they are.
//                     Ternary projections: TQ2_0/TQ1_0 blocks of codes with d = 1
//                     and the per-tensor gamma in an F32 "<tensor>.scale" tensor
//                     [1], which llama.cpp's bitnet graph multiplies into the
//                     matmul output: exactly gamma * (x . codes). llama.cpp's
//                     bitnet graph always uses token_embd as the LM head, so an
//                     untied model cannot be exported to it.
//   subln = false  -> llama.cpp "llama": NORM (adjacent pairs) RoPE, so q/k
//                     rows are permuted per head as convert_hf_to_gguf.py does;
//                     optional "output" tensor for untied heads; no scale
//                     tensors, so ternary gamma is folded into the fp16 block
//                     scales (rounded to fp16).
// Projections whose row length is not a multiple of 256 cannot be TQ blocks;
// they are written as F16 (codes, exact) with their scale tensor, or F16
// values on the llama architecture, and reported as a warning.
//
// Tensor names (GGUF <- bitkd):
//   token_embd.weight            model.embed_tokens.weight
//   output_norm.weight           model.norm.weight
//   output.weight                lm_head.weight (untied, llama only)
//   blk.N.attn_norm.weight       model.layers.N.input_layernorm.weight
//   blk.N.attn_{q,k,v}.weight    model.layers.N.self_attn.{q,k,v}_proj.weight
//   blk.N.attn_sub_norm.weight   model.layers.N.self_attn.inner_norm.weight
//   blk.N.attn_output.weight     model.layers.N.self_attn.o_proj.weight
//   blk.N.ffn_norm.weight        model.layers.N.post_attention_layernorm.weight
//   blk.N.ffn_{gate,up}.weight   model.layers.N.mlp.{gate,up}_proj.weight
//   blk.N.ffn_sub_norm.weight    model.layers.N.mlp.ffn_layernorm.weight
//   blk.N.ffn_down.weight        model.layers.N.mlp.down_proj.weight
//   blk.N.<proj>.scale           per-tensor ternary gamma (bitnet only)
// A relu2 FFN (no gate) is written with ffn_gate = ffn_up and
// <arch>.hidden_activation = "relu": relu(u) * u == relu(u)^2 in llama.cpp
// builds that read that key (older builds use SiLU: see docs/gguf.md).
#include <string>
#include <vector>

#include "core/status.h"
#include "io/gguf.h"
#include "kernels/cpu/rows.h"
#include "model/model.h"

namespace bk {

enum GgufWeightFormat {
  GGUF_W_AUTO = 0,  // tq2_0 for ternary models, f16 for float models
  GGUF_W_TQ2_0,
  GGUF_W_TQ1_0,
  GGUF_W_F16,
  GGUF_W_F32,
};
// "auto", "tq2_0", "tq1_0", "f16", "f32".
Status gguf_weight_format_from_name(const std::string& name, GgufWeightFormat* out);
const char* gguf_weight_format_name(GgufWeightFormat f);

struct GgufExportOptions {
  GgufWeightFormat weights = GGUF_W_AUTO;  // projection matrices
  bool embed_f32 = false;     // token_embd/output as F32 (default F16 unless weights are F32)
  std::string name;           // general.name
  // SentencePiece model (tokenizer.model bytes). Empty: no tokenizer.* keys
  // (llama.cpp then refuses the file).
  std::string tokenizer_model;
  std::string training_json;  // JSON object summarising training (bitkd.training); may be empty
};

struct GgufExportReport {
  std::string arch;                   // "bitnet" or "llama"
  std::vector<std::string> warnings;  // numerical differences from llama.cpp, fallbacks
  uint32_t file_type = 0;             // llama_ftype written to general.file_type
};

// Builds the GGUF content (metadata + tensors) for m.
Status gguf_export_build(const Model& m, const GgufExportOptions& opt, GgufWriter* w, GgufExportReport* rep);
// Builds and writes atomically.
Status gguf_export_model(const Model& m, const GgufExportOptions& opt, const std::string& path,
                         GgufExportReport* rep);

struct GgufLoadInfo {
  std::string arch;
  std::string name;
  // SentencePiece model bytes: the one bitkd embedded, else rebuilt from
  // tokenizer.ggml.* (llama/SPM vocabularies); empty when neither exists.
  std::string tokenizer_model;
  bool tokenizer_rebuilt = false;
  std::string training_json;          // bitkd.training ("" when absent)
  std::vector<std::string> warnings;  // e.g. per-block scales that differ
  // token_embd's stored type where packed inference can keep it (f16, bf16,
  // q8_0; anything else f32): infer_weights_create(..., embed_type).
  RowType embed_type = ROWS_F32;
};

// Loads a .gguf into a bitkd Model (layout built from the metadata).
// Ternary blocks become latent weights c * codes with c chosen so that bitkd's
// absmean quantizer gives back the same codes and the same gamma, so the
// loaded model's forward equals the exported one's.
Status gguf_load_model(const std::string& path, Model* m, GgufLoadInfo* info);
Status gguf_model_from_file(const GgufFile& f, Model* m, GgufLoadInfo* info);

// Loads a ternary .gguf (TQ2_0 or TQ1_0 projections with one block scale per
// tensor, as bitkd and llama-quantize write them) straight into packed
// inference weights: each TQ2_0 block's 2-bit codes are copied into I2 rows
// (TQ1_0 trits decoded and packed the same way), token_embd (and
// output) keep their type (rows.h), and no float copy of a projection is
// made. The file is mapped and each tensor's pages released once copied, so
// peak memory is about the packed weights (a 7B model fits in under 3 GiB).
// Files that need the float path (other projection types, per-block scales
// that differ) are refused with the tensor named.
struct InferWeights;
Status gguf_load_packed(const std::string& path, InferWeights** out, GgufLoadInfo* info);

// Latent weights for codes [n] with absmean quantization giving exactly
// gamma and the same codes (bitkd's quant_ternary rule). Exposed for tests.
void ternary_latent_from_codes(const int8_t* codes, size_t n, float gamma, float* w);

}  // namespace bk
