#pragma once
// The training activation arena (private to model/ and train/). One float
// allocation sized once for (batch, seq) at creation; a forward with a smaller
// batch or seq uses a contiguous prefix of every buffer. Shapes below use
// N = batch*seq tokens, D = dim, Q = n_heads*head_dim, K = n_kv_heads*head_dim,
// F = ffn_dim, H = n_heads, T = seq, V = vocab.
#include <cstdint>
#include <vector>

#include "model/model.h"

namespace bk {

// What one decoder layer saves for its backward pass. The inputs of the
// BitLinear projections (xq_*) hold integer activation codes stored as floats
// when the projection quantizes its input, with the dequant step per row in
// xs_* (x ~= code * step); without activation quantization they hold the
// plain values and xs_* is 1 (kernels.h, "quantizers").
struct LayerActs {
  float* attn_rstd;      // [N]     1/rms of the layer input (attn_norm)
  float* xq_attn;        // [N, D]  attn_norm output (codes): input of q/k/v
  float* xs_attn;        // [N]
  float* q;              // [N, Q]  after RoPE
  float* k;              // [N, K]  after RoPE
  float* v;              // [N, K]
  float* att;            // [B, H, T, T] softmax probabilities
  float* attn_out;       // [N, Q]  attention output (subln input, or o_proj input when no subln)
  float* sub_attn_rstd;  // [N]     (subln)
  float* xq_o;           // [N, Q]  o_proj input after subln (codes)
  float* xs_o;           // [N]
  float* ffn_rstd;       // [N]     1/rms of h (ffn_norm)
  float* xq_ffn;         // [N, D]  ffn_norm output (codes): input of gate/up
  float* xs_ffn;         // [N]
  float* gate;           // [N, F]  gate_proj output (swiglu)
  float* up;             // [N, F]  up_proj output
  float* act;            // [N, F]  silu(gate)*up or relu(up)^2 (subln input, or down input)
  float* sub_ffn_rstd;   // [N]     (subln)
  float* xq_down;        // [N, F]  down_proj input after subln (codes)
  float* xs_down;        // [N]
};

// Ternary codes (-1, 0, 1 as floats) of the BitLinear weights and their
// gammas, refreshed at every forward and reused by the backward. Same shapes
// as LayerWeights.
struct LayerQWeights {
  float *wq, *wk, *wv, *wo, *w_gate, *w_up, *w_down;
  float g_q, g_k, g_v, g_o, g_gate, g_up, g_down;
};

struct Activations {
  // capacity
  int max_batch = 0, max_seq = 0;
  ModelConfig cfg;  // layout the arena was sized for (dims only; bits are read from the model)
  // last forward
  int batch = 0, seq = 0;
  bool fwd_valid = false;   // a forward ran and backward has its inputs
  int fwd_bits_qkv = 0, fwd_bits_o = 0, fwd_bits_gateup = 0, fwd_bits_down = 0;
  bool fwd_ternary = false;
  std::vector<int32_t> tokens;  // [N]
  std::vector<uint8_t> mask;    // [N] (all ones when no mask was given)
  bool has_mask = false;

  std::vector<float> mem;  // the arena
  float* residual;         // [L+1, N, D]  residual stream: layer l reads residual[l], writes residual[l+1]
  float* h;                // [L, N, D]    residual after attention, per layer
  std::vector<LayerActs> layers;
  float* final_rstd;       // [N]
  float* final_out;        // [N, D]  final norm output (LM head input, full precision)
  float* logits;           // [N, V]  (dlogits after the loss)
  float* rope_cos;         // [max_seq, head_dim/2]
  float* rope_sin;
  float* proj;             // [N, D]  forward scratch: o_proj / down_proj output before the residual add

  // backward scratch
  float* d_res;     // [N, D]
  float* d_xd;      // [N, D]   grad of a D-wide projection input (final_out, xq_attn, xq_ffn)
  float* d_xq;      // [N, max(Q, F)] grad of o_proj / down_proj input
  float* d_pre;     // [N, max(Q, F)] grad of attn_out / act (through subln)
  float* d_gate;    // [N, F]
  float* d_up;      // [N, F]
  float* d_q;       // [N, Q]
  float* d_k;       // [N, K]
  float* d_v;       // [N, K]
  float* d_scaled;  // [N, max(D, Q, F)] a projection's dy rows times its input's step

  // Extra loss terms on one layer's q/k/v (after RoPE), e.g. attention-relation
  // distillation: model_backward adds these [N, Q] / [N, K] gradients to that
  // layer's before it goes through RoPE and the projections. layer -1: none.
  int extra_qkv_layer = -1;
  const float *extra_dq = nullptr, *extra_dk = nullptr, *extra_dv = nullptr;

  // quantized weights (ternary only)
  std::vector<float> qmem;
  std::vector<LayerQWeights> qw;

  ModelTimings timings{};
};

// What the projections of layer l multiply by in the last forward: the
// ternary codes and gammas, or the latent weights (gamma 1) in float mode.
struct ProjWeights {
  const float *wq, *wk, *wv, *wo, *w_gate, *w_up, *w_down;
  float g_q, g_k, g_v, g_o, g_gate, g_up, g_down;
};
inline ProjWeights layer_proj_weights(const Model* m, const Activations* a, int l) {
  if (a->fwd_ternary) {
    const LayerQWeights& q = a->qw[l];
    return {q.wq, q.wk, q.wv, q.wo, q.w_gate, q.w_up, q.w_down, q.g_q, q.g_k, q.g_v, q.g_o, q.g_gate, q.g_up, q.g_down};
  }
  const LayerWeights& w = m->w.layers[l];
  return {w.wq, w.wk, w.wv, w.wo, w.w_gate, w.w_up, w.w_down, 1, 1, 1, 1, 1, 1, 1};
}
// Inputs of o_proj / down_proj: their own buffer when subln or activation
// quantization transforms them, else the attention output / FFN activation itself.
inline float* o_proj_input(Activations* a, int l) {
  return (a->cfg.subln || a->fwd_bits_o) ? a->layers[l].xq_o : a->layers[l].attn_out;
}
inline float* down_proj_input(Activations* a, int l) {
  return (a->cfg.subln || a->fwd_bits_down) ? a->layers[l].xq_down : a->layers[l].act;
}

// Allocates the quantized-weight copies if the arena has none yet (a model
// switched to weight_quant=ternary after the arena was created).
void activations_ensure_qweights(Activations* a, const Model& m);

}  // namespace bk
