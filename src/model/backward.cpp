// Training backward pass: the forward's ops in reverse (see forward.cpp),
// accumulating parameter gradients into m->grads. BitLinear uses the
// straight-through estimator: dX = dY Wq (the cached ternary codes times
// gamma) and dW = dY^T Xq (the input's codes times its step), quantizers pass
// gradients unchanged.
#include <cstring>

#include "core/timing.h"
#include "kernels/cpu/kernels.h"
#include "model/activations.h"

namespace bk {

namespace {

// The LM head y[N,out] = x[N,in] W^T:  dW += dy^T x;  dx (+)= dy W.
void linear_backward(Activations* a, float* dx, float* dw, const float* dy, const float* x, const float* w, int n,
                     int in, int out, bool accumulate_dx) {
  double t0 = now_seconds();
  matmul_backward_dw(dw, dy, x, n, in, out);
  matmul_backward_dx(dx, dy, w, n, in, out, accumulate_dx);
  a->timings.matmul_s += now_seconds() - t0;
  a->timings.flops_backward += 4.0 * n * in * out;
}

// One BitLinear y[N,out] = (xc[N,in] wc[out,in]^T) * (gamma * step[n]), under
// the STE (the quantized values Xq = xc * step and Wq = gamma * wc stand in for
// the latent ones):
//   dW += dy^T Xq = (dy * step)^T xc;      dx (+)= dy Wq = gamma * (dy wc)
// When the layer does not quantize (scaled false) this is the plain linear.
void bitlinear_backward(Activations* a, float* dx, float* dw, const float* dy, const float* xc, const float* step,
                        const float* wc, float gamma, bool scaled, int n, int in, int out, bool accumulate_dx) {
  if (!scaled) return linear_backward(a, dx, dw, dy, xc, wc, n, in, out, accumulate_dx);
  double t0 = now_seconds();
  float* dys = a->d_scaled;  // [n, out]
#pragma omp parallel for schedule(static) if ((size_t)n * out > 32768)
  for (int i = 0; i < n; i++)
    for (int o = 0; o < out; o++) dys[(size_t)i * out + o] = dy[(size_t)i * out + o] * step[i];
  matmul_backward_dw(dw, dys, xc, n, in, out);
  gemm(false, false, n, in, out, gamma, dy, out, wc, in, accumulate_dx ? 1.0f : 0.0f, dx, in);
  a->timings.matmul_s += now_seconds() - t0;
  a->timings.flops_backward += 4.0 * n * in * out;
}

}  // namespace

Status model_backward(Model* m, Activations* a) {
  if (!a || !a->fwd_valid) return errorf("model_backward: no forward pass to differentiate (call model_forward first)");
  if (m->grads.size() != m->params.size())
    return errorf("model_backward: gradients are not allocated (call model_alloc_grads)");
  const double t_start = now_seconds();
  const ModelConfig& c = m->cfg;
  const int B = a->batch, T = a->seq, N = B * T;
  const int D = c.dim, H = c.n_heads, KV = c.n_kv_heads, hd = c.head_dim, F = c.ffn_dim, V = c.vocab_size;
  const int Q = H * hd, K = KV * hd, L = c.n_layers;
  const bool swiglu = c.ffn_act == FFN_SWIGLU;
  const bool tern = a->fwd_ternary;
  a->timings.flops_backward = 0.0;

  // ---- LM head: logits[N,V] = final_out[N,D] W_out^T; the loss left dlogits in place.
  // For tied embeddings g.output is the embedding gradient, so both uses add up.
  linear_backward(a, a->d_xd, m->g.output, a->logits, a->final_out, m->w.output, N, D, V, false);
  // final norm: d_res = dL/dx_L
  rmsnorm_backward(a->d_res, m->g.final_norm, a->d_xd, a->residual + (size_t)L * N * D, m->w.final_norm,
                   a->final_rstd, N, D, false);

  for (int l = L - 1; l >= 0; l--) {
    const LayerWeights& w = m->w.layers[l];
    LayerWeights& g = m->g.layers[l];
    const ProjWeights pw = layer_proj_weights(m, a, l);
    LayerActs& la = a->layers[l];
    const float* x = a->residual + (size_t)l * N * D;
    const float* h = a->h + (size_t)l * N * D;

    // ---- feed-forward: out = h + down_in Wdown^T; d_res holds dL/dout ----
    // d_xq [N,F] = dL/d(down_in)
    bitlinear_backward(a, a->d_xq, g.w_down, a->d_res, down_proj_input(a, l), la.xs_down, pw.w_down, pw.g_down,
                       tern || a->fwd_bits_down, N, F, D, false);
    // through subln (quantization is identity under STE): d_act [N,F]
    float* d_act = a->d_xq;
    if (c.subln) {
      rmsnorm_backward(a->d_pre, g.ffn_sub_norm, a->d_xq, la.act, w.ffn_sub_norm, la.sub_ffn_rstd, N, F, false);
      d_act = a->d_pre;
    }
    // d_xd [N,D] = dL/d(xq_ffn)
    const bool sc_gu = tern || a->fwd_bits_gateup;
    if (swiglu) {
      swiglu_backward(a->d_gate, a->d_up, d_act, la.gate, la.up, (size_t)N * F);
      bitlinear_backward(a, a->d_xd, g.w_gate, a->d_gate, la.xq_ffn, la.xs_ffn, pw.w_gate, pw.g_gate, sc_gu, N, D, F,
                         false);
      bitlinear_backward(a, a->d_xd, g.w_up, a->d_up, la.xq_ffn, la.xs_ffn, pw.w_up, pw.g_up, sc_gu, N, D, F, true);
    } else {
      relu2_backward(a->d_up, d_act, la.up, (size_t)N * F);
      bitlinear_backward(a, a->d_xd, g.w_up, a->d_up, la.xq_ffn, la.xs_ffn, pw.w_up, pw.g_up, sc_gu, N, D, F, false);
    }
    // ffn_norm: d_res += dL/dh through the norm (the residual path already carries dL/dout)
    rmsnorm_backward(a->d_res, g.ffn_norm, a->d_xd, h, w.ffn_norm, la.ffn_rstd, N, D, true);

    // ---- attention: h = x + o_in Wo^T; d_res holds dL/dh ----
    bitlinear_backward(a, a->d_xq, g.wo, a->d_res, o_proj_input(a, l), la.xs_o, pw.wo, pw.g_o, tern || a->fwd_bits_o,
                       N, Q, D, false);
    float* d_attn = a->d_xq;  // [N,Q]
    if (c.subln) {
      rmsnorm_backward(a->d_pre, g.attn_sub_norm, a->d_xq, la.attn_out, w.attn_sub_norm, la.sub_attn_rstd, N, Q,
                       false);
      d_attn = a->d_pre;
    }
    {
      double t0 = now_seconds();
      attention_backward(a->d_q, a->d_k, a->d_v, d_attn, la.q, la.k, la.v, la.att, B, T, H, KV, hd);
      a->timings.matmul_s += now_seconds() - t0;
      a->timings.flops_backward += 2.0 * attention_flops_forward(B, T, H, hd);
    }
    if (l == a->extra_qkv_layer) {
      add_vectors(a->d_q, a->d_q, a->extra_dq, (size_t)N * Q);
      add_vectors(a->d_k, a->d_k, a->extra_dk, (size_t)N * K);
      add_vectors(a->d_v, a->d_v, a->extra_dv, (size_t)N * K);
    }
    // gradients w.r.t. the pre-RoPE projections
    rope_backward(a->d_q, a->rope_cos, a->rope_sin, B, T, H, hd, Q);
    rope_backward(a->d_k, a->rope_cos, a->rope_sin, B, T, KV, hd, K);
    // d_xd [N,D] = dL/d(xq_attn)
    const bool sc_qkv = tern || a->fwd_bits_qkv;
    bitlinear_backward(a, a->d_xd, g.wq, a->d_q, la.xq_attn, la.xs_attn, pw.wq, pw.g_q, sc_qkv, N, D, Q, false);
    bitlinear_backward(a, a->d_xd, g.wk, a->d_k, la.xq_attn, la.xs_attn, pw.wk, pw.g_k, sc_qkv, N, D, K, true);
    bitlinear_backward(a, a->d_xd, g.wv, a->d_v, la.xq_attn, la.xs_attn, pw.wv, pw.g_v, sc_qkv, N, D, K, true);
    // attn_norm: d_res becomes dL/dx (residual path + norm path)
    rmsnorm_backward(a->d_res, g.attn_norm, a->d_xd, x, w.attn_norm, la.attn_rstd, N, D, true);
  }

  // ---- embedding: dE[token] += dL/dx0 (serial over tokens: repeated ids must not race)
  const int* tok = a->tokens.data();
  float* gE = m->g.tok_embeddings;
  for (int n = 0; n < N; n++) {
    float* dst = gE + (size_t)tok[n] * D;
    const float* src = a->d_res + (size_t)n * D;
#pragma omp simd
    for (int j = 0; j < D; j++) dst[j] += src[j];
  }

  a->timings.backward_s = now_seconds() - t_start;
  return ok_status();
}

}  // namespace bk
