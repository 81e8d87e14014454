// Inference sessions over prepared weights (model/infer.h).
//
// One forward step processes a chunk of n new tokens at absolute positions
// [pos, pos+n): the same op sequence as model_forward (kernels.h quantizers
// and norms), with K/V written into the session's cache and attention reading
// every cached position up to the query's own. Only the last token's logits
// are computed (the LM head is the largest matmul for small models).
#include "model/infer.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "core/half.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/ternary.h"
#include "model/infer_impl.h"

namespace bk {

namespace {

// Prefill chunk: bounds the scratch a long prompt needs.
constexpr int kChunk = 128;

}  // namespace

struct InferSession {
  const InferWeights* w = nullptr;
  int max_ctx = 0;
  int pos = 0;
  std::vector<float> kc, vc;        // [L, max_ctx, kv_dim]
  std::vector<float> rcos, rsin;    // [max_ctx, head_dim/2]
  int chunk = 0;                    // tokens per forward chunk: min(kChunk, max_ctx)
  // scratch for up to chunk tokens
  std::vector<float> x;             // [n, dim] residual stream
  std::vector<float> xn;            // [n, max(dim, q_dim, ffn)] normed/quantized projection input
  std::vector<float> q;             // [n, q_dim]
  std::vector<float> att;           // [n, q_dim]
  std::vector<float> proj;          // [n, dim]
  std::vector<float> hg, hu;        // [n, ffn]
  std::vector<float> rstd;          // [n]
  std::vector<float> scores;        // [threads, max_ctx]
  std::vector<float> logits;        // [vocab]
  bool have_logits = false;
  ActQuant aq;                      // activation codes of the current projection input
  std::vector<float> xc;            // float backend: the same codes as floats [n, in]
};

// ---------------------------------------------------------------------------
// weights

static Status pack_linear(const float* w, int rows, int cols, InferLinear* out, const char* what, int layer) {
  // The codes come from the training quantizer itself (same gamma, same
  // rounding), so packed weights are exactly the fake-quant weights.
  std::vector<int8_t> codes((size_t)rows * cols);
  float gamma = quant_ternary_codes(codes.data(), w, codes.size());
  Status st = pack_ternary_i2(codes.data(), rows, cols, gamma, &out->p);
  if (!st.ok()) return with_context(st, "packing layer " + std::to_string(layer) + " " + what);
  out->out = rows;
  out->in = cols;
  return ok_status();
}

Status infer_weights_create(const Model* m, InferBackend backend, InferWeights** out, RowType embed_type) {
  *out = nullptr;
  if (!m) return errorf("infer_weights_create: no model");
  BK_TRY(with_context(model_config_validate(m->cfg), "infer_weights_create"));
  const ModelConfig& c = m->cfg;
  if (m->params.empty() || m->w.layers.size() != (size_t)c.n_layers)
    return errorf("infer_weights_create: the model has no parameters (build or load it first)");
  if (backend == INFER_PACKED) {
    if (c.weight_quant != WQ_TERNARY)
      return errorf("the packed backend needs a ternary model (weight_quant is %s); use the float backend",
                    weight_quant_name(c.weight_quant));
    if (c.act_bits != 8 && c.act_bits != 4)
      return errorf("the packed backend needs integer activations (act_bits 8 or 4, the model has %d); use the "
                    "float backend",
                    c.act_bits);
  } else if (backend != INFER_FLOAT) {
    return errorf("infer_weights_create: unknown backend %d", (int)backend);
  }

  InferWeights* w = new InferWeights();
  w->cfg = c;
  w->backend = backend;
  projection_bits(c, &w->bits_qkv, &w->bits_o, &w->bits_gateup, &w->bits_down);
  const int D = c.dim, Q = c.n_heads * c.head_dim, K = c.n_kv_heads * c.head_dim, F = c.ffn_dim;
  const float* base = m->params.data();

  if (backend == INFER_FLOAT) {
    w->f32 = m->params;
    auto rebase = [&](const float* p) -> const float* { return p ? w->f32.data() + (p - base) : nullptr; };
    w->tok_embeddings = rebase(m->w.tok_embeddings);
    w->final_norm = rebase(m->w.final_norm);
    w->output = rebase(m->w.output);
    w->layers.resize(c.n_layers);
    for (int l = 0; l < c.n_layers; l++) {
      const LayerWeights& src = m->w.layers[l];
      InferLayer& L = w->layers[l];
      L.attn_norm = rebase(src.attn_norm);
      L.attn_sub_norm = rebase(src.attn_sub_norm);
      L.ffn_norm = rebase(src.ffn_norm);
      L.ffn_sub_norm = rebase(src.ffn_sub_norm);
      struct {
        InferLinear* dst;
        const float* src;
        int rows, cols;
      } lin[] = {{&L.wq, src.wq, Q, D},     {&L.wk, src.wk, K, D},         {&L.wv, src.wv, K, D},
                 {&L.wo, src.wo, D, Q},     {&L.w_gate, src.w_gate, F, D}, {&L.w_up, src.w_up, F, D},
                 {&L.w_down, src.w_down, D, F}};
      for (auto& e : lin) {
        if (!e.src) continue;
        float* dst = w->f32.data() + (e.src - base);
        e.dst->gamma = c.weight_quant == WQ_TERNARY ? quant_ternary_codes_f32(dst, dst, (size_t)e.rows * e.cols) : 1.0f;
        e.dst->f = dst;
        e.dst->out = e.rows;
        e.dst->in = e.cols;
      }
    }
    w->bytes = w->f32.size() * sizeof(float);
  } else {
    // The embedding and an untied head in the kept type; the norms (every
    // other full-precision tensor) into a compact buffer, remembering where
    // each one went.
    if (!m->w.tok_embeddings || !m->w.final_norm || !m->w.output) {
      delete w;
      return errorf("infer_weights_create: embedding, final norm or head missing from the parameter table");
    }
    Status st = rows_from_f32(embed_type, m->w.tok_embeddings, c.vocab_size, D, &w->embed_rows);
    if (st.ok() && m->w.output != m->w.tok_embeddings)
      st = rows_from_f32(embed_type, m->w.output, c.vocab_size, D, &w->head_rows);
    if (!st.ok()) {
      delete w;
      return with_context(st, "infer_weights_create: embedding/head");
    }
    const size_t embed_off = (size_t)(m->w.tok_embeddings - base), head_off = (size_t)(m->w.output - base);
    std::map<size_t, size_t> moved;  // offset in m->params -> offset in w->f32
    size_t total = 0;
    for (const ParamInfo& p : m->info)
      if (p.kind != PARAM_LINEAR && p.offset != embed_off && p.offset != head_off && !moved.count(p.offset))
        moved[p.offset] = total, total += p.numel;
    w->f32.resize(total);
    for (const ParamInfo& p : m->info) {
      auto it = moved.find(p.offset);
      if (it != moved.end()) memcpy(w->f32.data() + it->second, base + p.offset, p.numel * sizeof(float));
    }
    auto rebase = [&](const float* p) -> const float* {
      if (!p) return nullptr;
      auto it = moved.find((size_t)(p - base));
      return it == moved.end() ? nullptr : w->f32.data() + it->second;
    };
    w->final_norm = rebase(m->w.final_norm);
    w->bytes = w->f32.size() * sizeof(float) + rows_bytes(w->embed_rows) + rows_bytes(w->head_rows);
    w->layers.resize(c.n_layers);
    for (int l = 0; l < c.n_layers; l++) {
      const LayerWeights& src = m->w.layers[l];
      InferLayer& L = w->layers[l];
      L.attn_norm = rebase(src.attn_norm);
      L.attn_sub_norm = rebase(src.attn_sub_norm);
      L.ffn_norm = rebase(src.ffn_norm);
      L.ffn_sub_norm = rebase(src.ffn_sub_norm);
      struct {
        InferLinear* dst;
        const float* src;
        int rows, cols;
        const char* name;
      } lin[] = {{&L.wq, src.wq, Q, D, "q_proj"},         {&L.wk, src.wk, K, D, "k_proj"},
                 {&L.wv, src.wv, K, D, "v_proj"},         {&L.wo, src.wo, D, Q, "o_proj"},
                 {&L.w_gate, src.w_gate, F, D, "gate_proj"}, {&L.w_up, src.w_up, F, D, "up_proj"},
                 {&L.w_down, src.w_down, D, F, "down_proj"}};
      for (auto& e : lin) {
        if (!e.src) continue;
        Status st = pack_linear(e.src, e.rows, e.cols, e.dst, e.name, l);
        if (!st.ok()) {
          delete w;
          return st;
        }
        w->bytes += (size_t)ternary_size(e.dst->p).bytes;
      }
    }
  }
  *out = w;
  return ok_status();
}

void infer_weights_destroy(InferWeights* w) { delete w; }
size_t infer_weights_bytes(const InferWeights* w) { return w ? w->bytes : 0; }
InferBackend infer_weights_backend(const InferWeights* w) { return w->backend; }
const ModelConfig& infer_weights_config(const InferWeights* w) { return w->cfg; }

// ---------------------------------------------------------------------------
// kernels local to inference

static inline float dotf(const float* a, const float* b, int n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

// y [out] = W [out, in] x [in]: decode is memory bound, so a plain parallel
// row loop streams W once and beats a GEMM call with m = 1.
static void gemv(float* y, const float* x, const float* w, int in, int out) {
#pragma omp parallel for schedule(static) if ((size_t)in * out > 65536)
  for (int o = 0; o < out; o++) y[o] = dotf(w + (size_t)o * in, x, in);
}

// y [n, out] = x [n, in] W^T for the float backend.
static void linear_f32(float* y, const float* x, const InferLinear& l, int n) {
  if (n == 1)
    gemv(y, x, l.f, l.in, l.out);
  else
    matmul_forward(y, x, l.f, n, l.in, l.out);
}

// BitLinear y [n, out] for input x [n, in], the training forward's math:
// the input's activation codes (the packed kernels' own quantizer) times the
// weight codes, scaled by gamma * step. The packed backend sums in int32; the
// float backend sums the same codes in fp32, exactly, so both give the same
// bits. Several projections that share one input call this with quantize =
// false after the first. Without activation quantization (bits 0) the float
// backend multiplies x itself.
static Status project(InferSession* s, float* y, const float* x, const InferLinear& l, int n, int bits, bool quantize) {
  const bool packed = s->w->backend == INFER_PACKED;
  if (bits && quantize) {
    BK_TRY(quantize_acts(x, n, l.in, packed ? l.p.cols_pad : l.in, bits, &s->aq));
    if (!packed) {
      float* xc = s->xc.data();
      for (size_t i = 0; i < (size_t)n * l.in; i++) xc[i] = (float)s->aq.q[i];
    }
  }
  if (packed) return ternary_matmul(l.p, s->aq, y);
  if (!bits) {
    linear_f32(y, x, l, n);
    if (l.gamma != 1.0f) vec_scale(y, (size_t)n * l.out, bitlinear_scale(l.gamma, 1.0f));
    return ok_status();
  }
  linear_f32(y, s->xc.data(), l, n);
  scale_rows(y, s->aq.scale.data(), l.gamma, n, l.out);
  return ok_status();
}

// Causal attention of n new queries (absolute positions pos..pos+n-1) over
// the cache rows 0..pos+n-1, through the training forward's own per-row
// routine (kernels.h attention_row). q [n, H, d], out [n, H, d].
static void attention_cached(InferSession* s, int layer, int n, float* out) {
  const ModelConfig& c = s->w->cfg;
  const int H = c.n_heads, KV = c.n_kv_heads, d = c.head_dim, group = H / KV;
  const int kvd = KV * d, qd = H * d;
  const float* kc = s->kc.data() + (size_t)layer * s->max_ctx * kvd;
  const float* vc = s->vc.data() + (size_t)layer * s->max_ctx * kvd;
  const float scale = 1.0f / std::sqrt((float)d);
  const int nthreads = (int)(s->scores.size() / s->max_ctx);
  const int work = n * H;
  const int pos0 = s->pos;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) if (work > 1 && (size_t)work * (pos0 + n) * d > 32768)
  for (int item = 0; item < work; item++) {
    const int i = item / H, h = item % H;
    const int kvh = h / group;
    const int npos = pos0 + i + 1;  // keys visible to this query
    float* sc = s->scores.data() + (size_t)omp_get_thread_num() * s->max_ctx;
    const float* qv = s->q.data() + (size_t)i * qd + (size_t)h * d;
    attention_row(out + (size_t)i * qd + (size_t)h * d, sc, qv, kc + (size_t)kvh * d, vc + (size_t)kvh * d, kvd,
                  nullptr, npos, d, scale);
  }
}

// ---------------------------------------------------------------------------
// sessions

Status infer_session_create(const InferWeights* w, int max_ctx, InferSession** out) {
  *out = nullptr;
  if (!w) return errorf("infer_session_create: no weights");
  const ModelConfig& c = w->cfg;
  if (max_ctx <= 0) max_ctx = c.max_seq_len;
  if (max_ctx < 1 || max_ctx > (1 << 20))
    return errorf("infer_session_create: context of %d tokens is out of range (1..%d)", max_ctx, 1 << 20);
  InferSession* s = new InferSession();
  s->w = w;
  s->max_ctx = max_ctx;
  const int L = c.n_layers, D = c.dim, Q = c.n_heads * c.head_dim, K = c.n_kv_heads * c.head_dim;
  const int F = c.ffn_dim, half = c.head_dim / 2;
  s->kc.assign((size_t)L * max_ctx * K, 0.0f);
  s->vc.assign((size_t)L * max_ctx * K, 0.0f);
  s->rcos.resize((size_t)max_ctx * half);
  s->rsin.resize((size_t)max_ctx * half);
  model_rope_tables(c, s->rcos.data(), s->rsin.data(), max_ctx);
  const int wide = std::max(std::max(D, Q), F);
  // A session never holds more than max_ctx tokens, so neither does a chunk.
  const int C = s->chunk = std::min(kChunk, s->max_ctx);
  s->x.resize((size_t)C * D);
  s->xn.resize((size_t)C * wide);
  s->q.resize((size_t)C * Q);
  s->att.resize((size_t)C * Q);
  s->proj.resize((size_t)C * D);
  s->hg.resize((size_t)C * F);
  s->hu.resize((size_t)C * F);
  if (w->backend == INFER_FLOAT) s->xc.resize((size_t)C * wide);
  s->rstd.resize(C);
  s->scores.resize((size_t)std::max(1, omp_get_max_threads()) * max_ctx);
  s->logits.assign(c.vocab_size, 0.0f);
  *out = s;
  return ok_status();
}

void infer_session_destroy(InferSession* s) { delete s; }

void infer_session_reset(InferSession* s) {
  s->pos = 0;
  s->have_logits = false;
}

int infer_session_pos(const InferSession* s) { return s->pos; }
int infer_session_max_ctx(const InferSession* s) { return s->max_ctx; }
int infer_session_vocab(const InferSession* s) { return s->w->cfg.vocab_size; }
const float* infer_session_logits(const InferSession* s) { return s->logits.data(); }

// Token embedding row -> x [dim].
static void embed_row(const InferWeights* w, int32_t token, float* x) {
  if (w->backend == INFER_PACKED) rows_get_row(w->embed_rows, token, x);
  else memcpy(x, w->tok_embeddings + (size_t)token * w->cfg.dim, sizeof(float) * w->cfg.dim);
}

// logits [n, vocab] = xn [n, dim] head^T.
static void head_logits(const InferWeights* w, float* logits, const float* xn, int n) {
  const int D = w->cfg.dim, V = w->cfg.vocab_size;
  if (w->backend == INFER_PACKED) {
    rows_matmul(w->head_rows.rows ? w->head_rows : w->embed_rows, xn, n, logits);
  } else if (n == 1) {
    gemv(logits, xn, w->output, D, V);
  } else {
    matmul_forward(logits, xn, w->output, n, D, V);
  }
}

// n (<= s->chunk) tokens at positions pos..pos+n-1; logits of the last one when
// asked, and of every one into all_logits [n, vocab] when that is not null.
static Status forward_chunk(InferSession* s, const int32_t* tokens, int n, bool want_logits, float* all_logits) {
  const InferWeights* w = s->w;
  const ModelConfig& c = w->cfg;
  const int D = c.dim, H = c.n_heads, KV = c.n_kv_heads, d = c.head_dim;
  const int Q = H * d, K = KV * d, F = c.ffn_dim, half = d / 2;
  const float eps = c.norm_eps;
  float* x = s->x.data();
  float* xn = s->xn.data();
  for (int i = 0; i < n; i++) embed_row(w, tokens[i], x + (size_t)i * D);

  for (int l = 0; l < c.n_layers; l++) {
    const InferLayer& L = w->layers[l];
    float* kdst = s->kc.data() + ((size_t)l * s->max_ctx + s->pos) * K;
    float* vdst = s->vc.data() + ((size_t)l * s->max_ctx + s->pos) * K;

    // ---- attention: q, k, v from attn_norm(x) ([n, D] -> [n, Q], [n, K])
    rmsnorm_forward(xn, s->rstd.data(), x, L.attn_norm, n, D, eps);
    BK_TRY(project(s, s->q.data(), xn, L.wq, n, w->bits_qkv, true));
    BK_TRY(project(s, kdst, xn, L.wk, n, w->bits_qkv, false));
    BK_TRY(project(s, vdst, xn, L.wv, n, w->bits_qkv, false));
    rope_forward(s->q.data(), s->rcos.data() + (size_t)s->pos * half, s->rsin.data() + (size_t)s->pos * half, 1, n, H,
                 d, Q);
    rope_forward(kdst, s->rcos.data() + (size_t)s->pos * half, s->rsin.data() + (size_t)s->pos * half, 1, n, KV, d,
                 K);
    attention_cached(s, l, n, s->att.data());
    // o_proj input: subln(attn) [n, Q] -> [n, D]
    const float* o_in = s->att.data();
    if (L.attn_sub_norm) rmsnorm_forward(xn, s->rstd.data(), s->att.data(), L.attn_sub_norm, n, Q, eps), o_in = xn;
    BK_TRY(project(s, s->proj.data(), o_in, L.wo, n, w->bits_o, true));
    add_vectors(x, x, s->proj.data(), (size_t)n * D);

    // ---- FFN: gate/up from ffn_norm(h) [n, D] -> [n, F] -> down [n, D]
    rmsnorm_forward(xn, s->rstd.data(), x, L.ffn_norm, n, D, eps);
    float* act = s->hg.data();
    if (c.ffn_act == FFN_SWIGLU) {
      BK_TRY(project(s, s->hg.data(), xn, L.w_gate, n, w->bits_gateup, true));
      BK_TRY(project(s, s->hu.data(), xn, L.w_up, n, w->bits_gateup, false));
      swiglu_forward(act, s->hg.data(), s->hu.data(), (size_t)n * F);
    } else {
      BK_TRY(project(s, s->hu.data(), xn, L.w_up, n, w->bits_gateup, true));
      relu2_forward(act, s->hu.data(), (size_t)n * F);
    }
    const float* d_in = act;
    if (L.ffn_sub_norm) rmsnorm_forward(xn, s->rstd.data(), act, L.ffn_sub_norm, n, F, eps), d_in = xn;
    BK_TRY(project(s, s->proj.data(), d_in, L.w_down, n, w->bits_down, true));
    add_vectors(x, x, s->proj.data(), (size_t)n * D);
  }
  s->pos += n;
  if (all_logits) {
    // [n, D] -> [n, V], the same GEMM shape as the training forward's head.
    rmsnorm_forward(xn, s->rstd.data(), x, w->final_norm, n, D, eps);
    head_logits(w, all_logits, xn, n);
    memcpy(s->logits.data(), all_logits + (size_t)(n - 1) * c.vocab_size, sizeof(float) * c.vocab_size);
    s->have_logits = true;
  } else if (want_logits) {
    // Final norm and the full-precision head, last token only.
    rmsnorm_forward(xn, s->rstd.data(), x + (size_t)(n - 1) * D, w->final_norm, 1, D, eps);
    head_logits(w, s->logits.data(), xn, 1);
    s->have_logits = true;
  }
  return ok_status();
}

static Status eval_impl(InferSession* s, const int32_t* tokens, int n, float* all_logits) {
  const ModelConfig& c = s->w->cfg;
  if (n <= 0) return errorf("infer_session_eval: no tokens to evaluate");
  for (int i = 0; i < n; i++)
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
      return errorf("token id %d at input position %d is outside the vocabulary [0, %d)", tokens[i], i,
                    c.vocab_size);
  if (s->pos + n > s->max_ctx)
    return errorf("context full: %d cached + %d new tokens exceed the session's capacity of %d tokens", s->pos, n,
                  s->max_ctx);
  for (int i = 0; i < n; i += s->chunk) {
    int m = std::min(s->chunk, n - i);
    BK_TRY(forward_chunk(s, tokens + i, m, i + m == n,
                         all_logits ? all_logits + (size_t)i * c.vocab_size : nullptr));
  }
  return ok_status();
}

Status infer_session_eval(InferSession* s, const int32_t* tokens, int n) { return eval_impl(s, tokens, n, nullptr); }

Status infer_session_eval_all(InferSession* s, const int32_t* tokens, int n, float* logits) {
  return eval_impl(s, tokens, n, logits);
}

// ---------------------------------------------------------------------------
// sampling and log-probabilities

static double log_sum_exp(const float* logits, int vocab) {
  float mx = -INFINITY;
  for (int i = 0; i < vocab; i++) mx = logits[i] > mx ? logits[i] : mx;
  double sum = 0.0;
  for (int i = 0; i < vocab; i++) sum += std::exp((double)logits[i] - mx);
  return (double)mx + std::log(sum);
}

static int argmax_lowest(const float* logits, int vocab) {
  int best = 0;
  for (int i = 1; i < vocab; i++)
    if (logits[i] > logits[best]) best = i;
  return best;
}

int sample_token(const float* logits, int vocab, const SamplingParams& p, Rng* rng) {
  if (vocab <= 0) return -1;
  if (!(p.temperature > 0.0f) || p.top_k == 1) return argmax_lowest(logits, vocab);
  // Candidates in order of decreasing logit (ties: lower id first), cut by
  // top-k then top-p; the draw walks them in that order.
  const double inv_t = 1.0 / p.temperature;
  float mx = logits[argmax_lowest(logits, vocab)];
  std::vector<int> ids;
  std::vector<double> probs;
  const bool cut = p.top_k > 0 || p.top_p < 1.0f;
  if (!cut) {
    probs.resize(vocab);
    double total = 0.0;
    for (int i = 0; i < vocab; i++) total += probs[i] = std::exp(((double)logits[i] - mx) * inv_t);
    double u = rng_uniform_f64(rng) * total, acc = 0.0;
    for (int i = 0; i < vocab; i++) {
      acc += probs[i];
      if (u < acc && probs[i] > 0.0) return i;
    }
    return argmax_lowest(logits, vocab);
  }
  ids.resize(vocab);
  for (int i = 0; i < vocab; i++) ids[i] = i;
  auto better = [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  int keep = vocab;
  if (p.top_k > 0 && p.top_k < vocab) {
    keep = p.top_k;
    std::partial_sort(ids.begin(), ids.begin() + keep, ids.end(), better);
  } else {
    std::sort(ids.begin(), ids.end(), better);
  }
  probs.resize(keep);
  double total = 0.0;
  for (int j = 0; j < keep; j++) total += probs[j] = std::exp(((double)logits[ids[j]] - mx) * inv_t);
  if (p.top_p < 1.0f) {
    // Smallest prefix whose probability (within the kept set) reaches top_p;
    // always at least the most likely token.
    double target = (double)std::max(p.top_p, 0.0f) * total, acc = 0.0;
    int n = 0;
    while (n < keep) {
      acc += probs[n++];
      if (acc >= target) break;
    }
    keep = n;
    total = acc;
  }
  double u = rng_uniform_f64(rng) * total, acc = 0.0;
  for (int j = 0; j < keep; j++) {
    acc += probs[j];
    if (u < acc) return ids[j];
  }
  return ids[keep - 1];
}

void top_logprobs(const float* logits, int vocab, int k, std::vector<TokenLogprob>* out) {
  out->clear();
  if (k <= 0 || vocab <= 0) return;
  k = std::min(k, vocab);
  const double lse = log_sum_exp(logits, vocab);
  // Keep the k best in a small sorted buffer: one pass over the vocabulary.
  std::vector<int> best;
  best.reserve(k + 1);
  auto better = [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  for (int i = 0; i < vocab; i++) {
    if ((int)best.size() == k && !better(i, best.back())) continue;
    auto it = std::upper_bound(best.begin(), best.end(), i, better);
    best.insert(it, i);
    if ((int)best.size() > k) best.pop_back();
  }
  out->reserve(k);
  for (int id : best) out->push_back({id, (float)((double)logits[id] - lse)});
}

float token_logprob(const float* logits, int vocab, int id) {
  if (id < 0 || id >= vocab) return -INFINITY;
  return (float)((double)logits[id] - log_sum_exp(logits, vocab));
}

}  // namespace bk
