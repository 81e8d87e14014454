#pragma once
// The bitkd model: a Llama-style decoder whose projections are BitLinear
// layers (docs/architecture.md, "Model"). Parameters and gradients live in single contiguous
// buffers (llm.c style); every tensor is a view at an offset.
//
// Training:   model_forward -> (loss writes dlogits) -> model_backward
// Inference:  see model/infer.h (KV-cache session over the same weights)
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace bk {

enum FfnAct { FFN_SWIGLU = 0, FFN_RELU2 = 1 };
enum WeightQuant { WQ_NONE = 0, WQ_TERNARY = 1 };
enum A4Scope { A4_HYBRID = 0, A4_ALL = 1 };

struct ModelConfig {
  int vocab_size = 32000;
  int dim = 256;
  int n_layers = 4;
  int n_heads = 4;
  int n_kv_heads = 4;  // GQA when < n_heads; must divide n_heads
  int head_dim = 64;   // must equal dim / n_heads
  int ffn_dim = 1024;
  FfnAct ffn_act = FFN_SWIGLU;
  float rope_theta = 10000.0f;
  // Llama 3.1's RoPE scaling (HF rope_scaling rope_type "llama3"):
  // rope_scale_factor 0 = plain RoPE (the default; no other field is read).
  float rope_scale_factor = 0.0f;
  float rope_low_freq_factor = 1.0f;
  float rope_high_freq_factor = 4.0f;
  int rope_orig_ctx = 8192;  // original_max_position_embeddings
  float norm_eps = 1e-5f;
  int max_seq_len = 256;
  bool tie_embeddings = true;
  bool subln = true;
  WeightQuant weight_quant = WQ_TERNARY;
  int act_bits = 8;  // 8, 4 or 0 (no activation quantization)
  A4Scope a4_scope = A4_HYBRID;
};

// Names used in JSON, flags and reports.
const char* ffn_act_name(FfnAct a);
const char* weight_quant_name(WeightQuant q);
const char* a4_scope_name(A4Scope s);

// Activation bits of each BitLinear input, one rule for training and
// inference: act_bits 0 -> none, 8 -> all 8-bit, 4 -> 4-bit on the q/k/v and
// gate/up inputs and, with a4_scope hybrid, 8-bit on the o_proj and down_proj
// inputs (BitNet a4.8; a4_scope all: 4-bit there too).
void projection_bits(const ModelConfig& c, int* qkv, int* o, int* gateup, int* down);

// cos/sin tables [seq, head_dim / 2] of c's RoPE (plain, or llama3-scaled
// frequencies), one rule for training and inference.
void model_rope_tables(const ModelConfig& c, float* cos_t, float* sin_t, int seq);

// Checks every field; the message names the field, its value and the rule.
Status model_config_validate(const ModelConfig& c);
std::string model_config_to_json(const ModelConfig& c);
// Missing keys keep the defaults above; unknown enum names are errors.
Status model_config_from_json(const std::string& json, ModelConfig* c);

enum ParamKind {
  PARAM_EMBEDDING = 0,  // token embedding (full precision, no weight decay by default)
  PARAM_NORM = 1,       // RMSNorm gains (full precision, no weight decay by default)
  PARAM_LINEAR = 2,     // BitLinear latent weights (ternary when weight_quant=ternary)
  PARAM_HEAD = 3,       // untied LM head (full precision)
};

struct ParamInfo {
  std::string name;  // Hugging Face style, e.g. "model.layers.0.self_attn.q_proj.weight"
  size_t offset;     // in floats, into Model::params / Model::grads
  size_t numel;
  int rows, cols;    // matrices [rows, cols] row-major (out, in); vectors: rows = n, cols = 1
  ParamKind kind;
  int layer;         // -1 for non-layer tensors
};

// Views into the contiguous buffers for one decoder layer. Linear weights are
// [out, in] row-major, as in PyTorch and safetensors.
struct LayerWeights {
  float* attn_norm;      // [dim]
  float* wq;             // [n_heads*head_dim, dim]
  float* wk;             // [n_kv_heads*head_dim, dim]
  float* wv;             // [n_kv_heads*head_dim, dim]
  float* attn_sub_norm;  // [n_heads*head_dim]   (subln only, else nullptr)
  float* wo;             // [dim, n_heads*head_dim]
  float* ffn_norm;       // [dim]
  float* w_gate;         // [ffn_dim, dim]      (swiglu only, else nullptr)
  float* w_up;           // [ffn_dim, dim]
  float* ffn_sub_norm;   // [ffn_dim]           (subln only, else nullptr)
  float* w_down;         // [dim, ffn_dim]
};

struct ModelWeights {
  float* tok_embeddings;  // [vocab, dim]
  std::vector<LayerWeights> layers;
  float* final_norm;      // [dim]
  float* output;          // [vocab, dim]; == tok_embeddings when tied
};

struct Model {
  ModelConfig cfg;
  std::vector<ParamInfo> info;
  std::vector<float> params;  // all parameters, contiguous
  std::vector<float> grads;   // same layout; empty until model_alloc_grads
  ModelWeights w;             // views into params
  ModelWeights g;             // views into grads (valid after model_alloc_grads)
};

// Builds the layout for cfg (validated) and initialises parameters: normal(0, 0.02)
// for matrices (output projections scaled by 1/sqrt(2*n_layers)), ones for norms.
Status model_init(Model* m, const ModelConfig& cfg, uint64_t seed);
// Builds the layout only (parameters zero), e.g. before loading a checkpoint.
Status model_build_layout(Model* m, const ModelConfig& cfg);
void model_alloc_grads(Model* m);
void model_zero_grads(Model* m);
size_t model_num_params(const Model& m);
const ParamInfo* model_find_param(const Model& m, const std::string& name);

// Activation arena for training, sized once for (batch, seq). Holds everything
// the backward pass needs plus the logits, which the loss overwrites in place
// with dL/dlogits.
struct Activations;  // defined in model/activations.h (private to model/ and train/)
Activations* activations_create(const Model& m, int batch, int seq);
void activations_destroy(Activations* a);
size_t activations_bytes(const Activations* a);
// [batch*seq, vocab] row-major; valid after model_forward. The loss replaces it
// with dL/dlogits (already divided by whatever normalisation the loss uses).
float* activations_logits(Activations* a);

// tokens: [batch*seq] ids; key_mask: [batch*seq], 1 = real token, 0 = padding
// (nullptr = no padding). Padding is never attended; a fully padded row gives
// zeros. Returns an error for an id outside [0, vocab). act_bits and the flip
// scope are read from m->cfg at every call, so the trainer flips by editing cfg.
// batch/seq may be smaller than the arena's; seq <= cfg.max_seq_len. RoPE
// position = column in the row (left padding is harmless: RoPE is relative).
Status model_forward(Model* m, Activations* a, const int32_t* tokens, const uint8_t* key_mask, int batch, int seq);
// Accumulates parameter gradients into m->grads from the dlogits left in the
// logits buffer by the loss (STE through every quantizer). Errors when no
// forward ran on this arena or model_alloc_grads was not called.
Status model_backward(Model* m, Activations* a);

// Time split of the last forward/backward (seconds), for benchmarks.
// matmul_s covers both passes: every sgemm, attention included; the FLOP
// counts are the useful matmul FLOPs (projections, LM head, and attention over
// the causal triangle), so MFU = (flops_forward + flops_backward) / time / peak.
// The loss between the two passes is not included in any of them.
struct ModelTimings {
  double forward_s, backward_s, matmul_s;
  double flops_forward, flops_backward;
};
ModelTimings model_last_timings(const Activations* a);

}  // namespace bk
