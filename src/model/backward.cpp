// Training backward pass: the forward's ops in reverse (see forward.cpp),
// accumulating parameter gradients into m->grads. BitLinear uses the
// straight-through estimator: dX = dY Wq (the cached ternary weights) and
// dW = dY^T Xq (the quantized input), quantizers pass gradients unchanged.
#include <cstring>

#include "core/timing.h"
#include "kernels/cpu/kernels.h"
#include "model/activations.h"

namespace bk {

namespace {

// One BitLinear y[N,out] = x[N,in] W^T:  dW += dy^T x;  dx (+)= dy W.
void linear_backward(Activations* a, float* dx, float* dw, const float* dy, const float* x, const float* w, int n,
                     int in, int out, bool accumulate_dx) {
  double t0 = now_seconds();
  matmul_backward_dw(dw, dy, x, n, in, out);
  matmul_backward_dx(dx, dy, w, n, in, out, accumulate_dx);
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
    linear_backward(a, a->d_xq, g.w_down, a->d_res, down_proj_input(a, l), pw.w_down, N, F, D, false);
    // through subln (quantization is identity under STE): d_act [N,F]
    float* d_act = a->d_xq;
    if (c.subln) {
      rmsnorm_backward(a->d_pre, g.ffn_sub_norm, a->d_xq, la.act, w.ffn_sub_norm, la.sub_ffn_rstd, N, F, false);
      d_act = a->d_pre;
    }
    // d_xd [N,D] = dL/d(xq_ffn)
    if (swiglu) {
      swiglu_backward(a->d_gate, a->d_up, d_act, la.gate, la.up, (size_t)N * F);
      linear_backward(a, a->d_xd, g.w_gate, a->d_gate, la.xq_ffn, pw.w_gate, N, D, F, false);
      linear_backward(a, a->d_xd, g.w_up, a->d_up, la.xq_ffn, pw.w_up, N, D, F, true);
    } else {
      relu2_backward(a->d_up, d_act, la.up, (size_t)N * F);
      linear_backward(a, a->d_xd, g.w_up, a->d_up, la.xq_ffn, pw.w_up, N, D, F, false);
    }
    // ffn_norm: d_res += dL/dh through the norm (the residual path already carries dL/dout)
    rmsnorm_backward(a->d_res, g.ffn_norm, a->d_xd, h, w.ffn_norm, la.ffn_rstd, N, D, true);

    // ---- attention: h = x + o_in Wo^T; d_res holds dL/dh ----
    linear_backward(a, a->d_xq, g.wo, a->d_res, o_proj_input(a, l), pw.wo, N, Q, D, false);
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
    // gradients w.r.t. the pre-RoPE projections
    rope_backward(a->d_q, a->rope_cos, a->rope_sin, B, T, H, hd, Q);
    rope_backward(a->d_k, a->rope_cos, a->rope_sin, B, T, KV, hd, K);
    // d_xd [N,D] = dL/d(xq_attn)
    linear_backward(a, a->d_xd, g.wq, a->d_q, la.xq_attn, pw.wq, N, D, Q, false);
    linear_backward(a, a->d_xd, g.wk, a->d_k, la.xq_attn, pw.wk, N, D, K, true);
    linear_backward(a, a->d_xd, g.wv, a->d_v, la.xq_attn, pw.wv, N, D, K, true);
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
