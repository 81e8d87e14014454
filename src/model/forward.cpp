// Training forward pass (docs/architecture.md, "Model"), one op after another over the
// activation arena. N = batch*seq tokens; D, Q, K, F as in activations.h.
//
//   x0 = embed(tokens)
//   per layer:  h   = x + o_proj( subln_attn( attention( rope(q), rope(k), v ) ) ),
//                     q,k,v = proj( quant( attn_norm(x) ) )
//               out = h + down( quant( subln_ffn( act(gate(u), up(u)) ) ) ),  u = quant( ffn_norm(h) )
//   logits = lm_head( final_norm(x_L) )
//
// BitLinear: ternary codes of W once per forward (cached for the backward), the
// input turned into activation codes per token, the code product scaled once
// by gamma * step (kernels.h); embedding, final norm and LM head stay fp32.
#include <cstring>

#include "core/timing.h"
#include "kernels/cpu/kernels.h"
#include "model/activations.h"

namespace bk {

static bool same_shape(const ModelConfig& a, const ModelConfig& b) {
  return a.vocab_size == b.vocab_size && a.dim == b.dim && a.n_layers == b.n_layers && a.n_heads == b.n_heads &&
         a.n_kv_heads == b.n_kv_heads && a.head_dim == b.head_dim && a.ffn_dim == b.ffn_dim &&
         a.ffn_act == b.ffn_act && a.subln == b.subln && a.rope_theta == b.rope_theta &&
         a.rope_scale_factor == b.rope_scale_factor;
}

// y[N,out] = x[N,in] W^T, timed and counted (the LM head, and BitLinear's code sums).
static void linear(Activations* a, float* y, const float* x, const float* w, int n, int in, int out) {
  double t0 = now_seconds();
  matmul_forward(y, x, w, n, in, out);
  a->timings.matmul_s += now_seconds() - t0;
  a->timings.flops_forward += 2.0 * n * in * out;
}

// BitLinear: y[N,out] = (xc[N,in] wc[out,in]^T) * (gamma * step[n]). The code
// sums are exact, so the result does not depend on the BLAS kernel; without
// quantization (scaled false) it is the plain product.
static void bitlinear(Activations* a, float* y, const float* xc, const float* step, const float* wc, float gamma,
                      bool scaled, int n, int in, int out) {
  linear(a, y, xc, wc, n, in, out);
  if (scaled) scale_rows(y, step, gamma, n, out);
}

// Without subln: the codes of x when quantizing; else x itself is the input
// (o_proj_input / down_proj_input) and only the steps are set, to 1.
static void act_codes_or_unit_steps(float* q, float* step, const float* x, int n, int c, int bits) {
  if (bits)
    quant_act_codes(q, step, x, n, c, bits);
  else
    for (int i = 0; i < n; i++) step[i] = 1.0f;
}

Status model_forward(Model* m, Activations* a, const int32_t* tokens, const uint8_t* key_mask, int B, int T) {
  const ModelConfig& c = m->cfg;
  if (!a) return errorf("model_forward: no activation arena (activations_create failed?)");
  if (!same_shape(c, a->cfg))
    return errorf("model_forward: the activation arena was created for a different model shape; recreate it");
  if (B <= 0 || T <= 0 || B > a->max_batch || T > a->max_seq)
    return errorf("model_forward: batch %d x seq %d does not fit the arena (created for %d x %d)", B, T,
                  a->max_batch, a->max_seq);
  if (T > c.max_seq_len)
    return errorf("model_forward: seq %d exceeds the model's max_seq_len %d", T, c.max_seq_len);
  const int N = B * T;
  for (int i = 0; i < N; i++) {
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
      return errorf("model_forward: token id %d at position %d (batch row %d, column %d) is outside [0, %d)",
                    tokens[i], i, i / T, i % T, c.vocab_size);
  }
  const double t_start = now_seconds();
  a->timings = ModelTimings{};
  a->fwd_valid = false;
  a->batch = B;
  a->seq = T;
  a->tokens.assign(tokens, tokens + N);
  a->has_mask = key_mask != nullptr;
  if (key_mask)
    a->mask.assign(key_mask, key_mask + N);
  else
    a->mask.assign(N, 1);
  const uint8_t* mask = key_mask ? a->mask.data() : nullptr;

  int bits_qkv, bits_o, bits_gu, bits_down;
  projection_bits(c, &bits_qkv, &bits_o, &bits_gu, &bits_down);
  a->fwd_bits_qkv = bits_qkv, a->fwd_bits_o = bits_o, a->fwd_bits_gateup = bits_gu, a->fwd_bits_down = bits_down;
  a->fwd_ternary = c.weight_quant == WQ_TERNARY;

  const int D = c.dim, H = c.n_heads, KV = c.n_kv_heads, hd = c.head_dim, F = c.ffn_dim, V = c.vocab_size;
  const int Q = H * hd, K = KV * hd, L = c.n_layers;
  const float eps = c.norm_eps;
  const bool swiglu = c.ffn_act == FFN_SWIGLU;

  // Ternary codes and gammas, once per forward; the backward reuses them.
  if (a->fwd_ternary) {
    activations_ensure_qweights(a, *m);
    for (int l = 0; l < L; l++) {
      const LayerWeights& w = m->w.layers[l];
      LayerQWeights& q = a->qw[l];
      q.g_q = quant_ternary_codes_f32(q.wq, w.wq, (size_t)Q * D);
      q.g_k = quant_ternary_codes_f32(q.wk, w.wk, (size_t)K * D);
      q.g_v = quant_ternary_codes_f32(q.wv, w.wv, (size_t)K * D);
      q.g_o = quant_ternary_codes_f32(q.wo, w.wo, (size_t)D * Q);
      if (swiglu) q.g_gate = quant_ternary_codes_f32(q.w_gate, w.w_gate, (size_t)F * D);
      q.g_up = quant_ternary_codes_f32(q.w_up, w.w_up, (size_t)F * D);
      q.g_down = quant_ternary_codes_f32(q.w_down, w.w_down, (size_t)D * F);
    }
  }
  const bool tern = a->fwd_ternary;

  // embedding: x0[n, :] = E[tokens[n], :]
  float* x0 = a->residual;
#pragma omp parallel for schedule(static) if ((size_t)N * D > 32768)
  for (int n = 0; n < N; n++) memcpy(x0 + (size_t)n * D, m->w.tok_embeddings + (size_t)tokens[n] * D, sizeof(float) * D);

  for (int l = 0; l < L; l++) {
    const LayerWeights& w = m->w.layers[l];
    const ProjWeights pw = layer_proj_weights(m, a, l);
    LayerActs& la = a->layers[l];
    const float* x = a->residual + (size_t)l * N * D;  // [N, D]
    float* h = a->h + (size_t)l * N * D;               // [N, D]
    float* out = a->residual + (size_t)(l + 1) * N * D;

    // ---- attention ----
    // xq_attn [N,D] = codes(rmsnorm(x) * attn_norm), steps xs_attn
    rmsnorm_quant_forward(la.xq_attn, la.xs_attn, la.attn_rstd, x, w.attn_norm, N, D, eps, bits_qkv);
    const bool sc_qkv = tern || bits_qkv;
    bitlinear(a, la.q, la.xq_attn, la.xs_attn, pw.wq, pw.g_q, sc_qkv, N, D, Q);  // [N,Q]
    bitlinear(a, la.k, la.xq_attn, la.xs_attn, pw.wk, pw.g_k, sc_qkv, N, D, K);  // [N,K]
    bitlinear(a, la.v, la.xq_attn, la.xs_attn, pw.wv, pw.g_v, sc_qkv, N, D, K);  // [N,K]
    rope_forward(la.q, a->rope_cos, a->rope_sin, B, T, H, hd, Q);
    rope_forward(la.k, a->rope_cos, a->rope_sin, B, T, KV, hd, K);
    {
      double t0 = now_seconds();
      attention_forward(la.attn_out, la.att, la.q, la.k, la.v, mask, B, T, H, KV, hd);  // [N,Q]
      a->timings.matmul_s += now_seconds() - t0;
      a->timings.flops_forward += attention_flops_forward(B, T, H, hd);
    }
    // o_proj input [N,Q]: subln then codes (o_in aliases attn_out when neither applies)
    const float* o_in = o_proj_input(a, l);
    if (c.subln)
      rmsnorm_quant_forward(la.xq_o, la.xs_o, la.sub_attn_rstd, la.attn_out, w.attn_sub_norm, N, Q, eps, bits_o);
    else
      act_codes_or_unit_steps(la.xq_o, la.xs_o, la.attn_out, N, Q, bits_o);
    // h = x + o_in Wo^T
    bitlinear(a, a->proj, o_in, la.xs_o, pw.wo, pw.g_o, tern || bits_o, N, Q, D);
    add_vectors(h, x, a->proj, (size_t)N * D);

    // ---- feed-forward ----
    // xq_ffn [N,D] = codes(rmsnorm(h) * ffn_norm)
    rmsnorm_quant_forward(la.xq_ffn, la.xs_ffn, la.ffn_rstd, h, w.ffn_norm, N, D, eps, bits_gu);
    const bool sc_gu = tern || bits_gu;
    bitlinear(a, la.up, la.xq_ffn, la.xs_ffn, pw.w_up, pw.g_up, sc_gu, N, D, F);  // [N,F]
    if (swiglu) {
      bitlinear(a, la.gate, la.xq_ffn, la.xs_ffn, pw.w_gate, pw.g_gate, sc_gu, N, D, F);  // [N,F]
      swiglu_forward(la.act, la.gate, la.up, (size_t)N * F);
    } else {
      relu2_forward(la.act, la.up, (size_t)N * F);
    }
    const float* d_in = down_proj_input(a, l);
    if (c.subln)
      rmsnorm_quant_forward(la.xq_down, la.xs_down, la.sub_ffn_rstd, la.act, w.ffn_sub_norm, N, F, eps, bits_down);
    else
      act_codes_or_unit_steps(la.xq_down, la.xs_down, la.act, N, F, bits_down);
    // out = h + d_in Wdown^T
    bitlinear(a, a->proj, d_in, la.xs_down, pw.w_down, pw.g_down, tern || bits_down, N, F, D);
    add_vectors(out, h, a->proj, (size_t)N * D);
  }

  // final norm and LM head (full precision)
  rmsnorm_forward(a->final_out, a->final_rstd, a->residual + (size_t)L * N * D, m->w.final_norm, N, D, eps);
  linear(a, a->logits, a->final_out, m->w.output, N, D, V);  // [N,V]

  a->fwd_valid = true;
  a->timings.forward_s = now_seconds() - t_start;
  return ok_status();
}

}  // namespace bk
