// The training engine as a whole: config validation and JSON, parameter
// layout, whole-model finite-difference gradient checks in float mode,
// padding behaviour, the straight-through estimator, and an overfit run of a
// ternary A8 model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "core/rng.h"
#include "kernels/cpu/kernels.h"
#include "model/activations.h"
#include "model/model.h"
#include "train/attn_relation.h"
#include "train/loss.h"

using namespace bk;

namespace {

ModelConfig tiny_config() {
  ModelConfig c;
  c.vocab_size = 13;
  c.dim = 16;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 4;
  c.ffn_dim = 24;
  c.max_seq_len = 8;
  c.weight_quant = WQ_NONE;
  c.act_bits = 0;
  return c;
}

// Larger-than-default weights so every path carries a visible gradient, and
// norm gains away from 1 so their gradients are exercised too.
void spread_params(Model* m, uint64_t seed) {
  Rng r;
  rng_seed(&r, seed);
  for (const ParamInfo& p : m->info) {
    float* x = m->params.data() + p.offset;
    for (size_t i = 0; i < p.numel; i++) {
      if (p.kind == PARAM_NORM)
        x[i] = 1.0f + 0.3f * rng_normal(&r);
      else if (p.kind == PARAM_LINEAR)
        x[i] = 0.35f * rng_normal(&r);
      else
        x[i] = 0.8f * rng_normal(&r);
    }
  }
}

struct Batch {
  int B, T;
  std::vector<int32_t> tokens, targets;
  std::vector<uint8_t> mask;
  std::vector<float> weights;
};

// Row 1 is left-padded by `pad` positions; padded positions have weight 0.
Batch make_batch(int B, int T, int vocab, int pad, uint64_t seed) {
  Batch b{B, T, {}, {}, {}, {}};
  Rng r;
  rng_seed(&r, seed);
  const int N = B * T;
  b.tokens.resize(N);
  b.targets.resize(N);
  b.mask.assign(N, 1);
  b.weights.assign(N, 1.0f);
  for (int i = 0; i < N; i++) {
    b.tokens[i] = (int)rng_below(&r, vocab);
    b.targets[i] = (int)rng_below(&r, vocab);
  }
  for (int t = 0; t < pad && B > 1; t++) {
    b.mask[T + t] = 0;
    b.weights[T + t] = 0.0f;
    b.targets[T + t] = -1;
  }
  b.weights[2] = 0.5f;
  return b;
}

// Forward + weighted CE (+ backward when grads): returns the loss.
double run(Model* m, Activations* a, const Batch& b, bool backward) {
  Status st = model_forward(m, a, b.tokens.data(), b.mask.data(), b.B, b.T);
  EXPECT_TRUE(st.ok()) << st.msg;
  float loss = ce_loss_forward_backward(activations_logits(a), b.targets.data(), b.weights.data(), b.B * b.T,
                                        m->cfg.vocab_size, nullptr);
  if (backward) {
    model_zero_grads(m);
    Status sb = model_backward(m, a);
    EXPECT_TRUE(sb.ok()) << sb.msg;
  }
  return loss;
}

struct GradCase {
  const char* name;
  bool tied, swiglu, subln;
  int n_kv_heads;
};

void whole_model_grad_check(const GradCase& gc) {
  ModelConfig c = tiny_config();
  c.tie_embeddings = gc.tied;
  c.ffn_act = gc.swiglu ? FFN_SWIGLU : FFN_RELU2;
  c.subln = gc.subln;
  c.n_kv_heads = gc.n_kv_heads;
  Model m;
  ASSERT_TRUE(model_init(&m, c, 7).ok());
  spread_params(&m, 8);
  model_alloc_grads(&m);
  Batch b = make_batch(2, 6, c.vocab_size, 2, 9);
  Activations* a = activations_create(m, b.B, b.T);
  ASSERT_NE(a, nullptr);
  run(&m, a, b, true);
  std::vector<float> analytic(m.grads);

  printf("case %s\n", gc.name);
  Rng r;
  rng_seed(&r, 10);
  double worst = 0.0;
  for (const ParamInfo& p : m.info) {
    // sample entries; for embeddings include rows of tokens that occur
    std::vector<size_t> idx;
    const int samples = 10;
    for (int s = 0; s < samples; s++) {
      size_t i;
      if (p.kind == PARAM_EMBEDDING && s % 2 == 0)
        i = (size_t)b.tokens[rng_below(&r, b.tokens.size())] * p.cols + rng_below(&r, p.cols);
      else
        i = rng_below(&r, p.numel);
      idx.push_back(i);
    }
    double num2 = 0.0, diff2 = 0.0;
    for (size_t i : idx) {
      float* x = m.params.data() + p.offset + i;
      const float x0 = *x, h = 1e-2f;
      *x = x0 + h;
      const double lp = run(&m, a, b, false);
      *x = x0 - h;
      const double lm = run(&m, a, b, false);
      *x = x0;
      const double num = (lp - lm) / (2.0 * h);
      const double an = analytic[p.offset + i];
      num2 += num * num;
      diff2 += (num - an) * (num - an);
    }
    // relative to the gradient's size, with a floor for entries whose gradient is ~0
    const double rel = std::sqrt(diff2) / std::max(std::sqrt(num2), 1e-3);
    printf("  %-44s |g| %.3e  rel err %.3e\n", p.name.c_str(), std::sqrt(num2), rel);
    worst = std::max(worst, rel);
    EXPECT_LT(rel, 1e-2) << p.name;
  }
  printf("  worst %.3e\n", worst);
  activations_destroy(a);
}

// CE plus weight x attention-relation distillation of layer `layer` against a
// fixed float teacher (train/attn_relation.h, fed to model_backward through
// the activations' extra q/k/v gradients).
double run_relation(Model* m, Activations* a, Model* t, Activations* ta, const Batch& b, int layer, float weight,
                    bool backward) {
  Status st = model_forward(m, a, b.tokens.data(), b.mask.data(), b.B, b.T);
  EXPECT_TRUE(st.ok()) << st.msg;
  double loss = ce_loss_forward_backward(activations_logits(a), b.targets.data(), b.weights.data(), b.B * b.T,
                                         m->cfg.vocab_size, nullptr);
  st = model_forward(t, ta, b.tokens.data(), b.mask.data(), b.B, b.T);
  EXPECT_TRUE(st.ok()) << st.msg;
  const ModelConfig& c = m->cfg;
  const size_t N = (size_t)b.B * b.T;
  static std::vector<float> dq, dk, dv;
  dq.assign(N * c.n_heads * c.head_dim, 0.f);
  dk.assign(N * c.n_kv_heads * c.head_dim, 0.f);
  dv.assign(dk.size(), 0.f);
  const LayerActs &ls = a->layers[layer], &lt = ta->layers[layer];
  const double rel = attn_relation_forward_backward(ls.q, ls.k, ls.v, lt.q, lt.k, lt.v, b.mask.data(),
                                                    {b.B, b.T, c.n_heads, c.n_kv_heads, c.head_dim}, weight,
                                                    dq.data(), dk.data(), dv.data());
  EXPECT_GT(rel, 0.0);
  loss += weight * rel;
  if (backward) {
    a->extra_qkv_layer = layer;
    a->extra_dq = dq.data(), a->extra_dk = dk.data(), a->extra_dv = dv.data();
    model_zero_grads(m);
    Status sb = model_backward(m, a);
    EXPECT_TRUE(sb.ok()) << sb.msg;
    a->extra_qkv_layer = -1;
  }
  return loss;
}

}  // namespace

// The relation term's gradient through the whole model (layer 0, so every
// parameter below it and the embedding see it), against finite differences.
TEST(ModelGrad, AttentionRelationDistillation) {
  ModelConfig c = tiny_config();
  Model m, t;
  ASSERT_TRUE(model_init(&m, c, 7).ok());
  ASSERT_TRUE(model_init(&t, c, 70).ok());
  spread_params(&m, 8);
  spread_params(&t, 80);
  model_alloc_grads(&m);
  Batch b = make_batch(2, 6, c.vocab_size, 2, 9);
  Activations* a = activations_create(m, b.B, b.T);
  Activations* ta = activations_create(t, b.B, b.T);
  const float w = 5.0f;  // large enough that the relation term dominates layer 0's gradient
  run_relation(&m, a, &t, ta, b, 0, w, true);
  std::vector<float> analytic(m.grads);
  Rng r;
  rng_seed(&r, 11);
  for (const char* name : {"model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
                           "model.layers.0.self_attn.v_proj.weight", "model.layers.0.input_layernorm.weight",
                           "model.embed_tokens.weight"}) {
    const ParamInfo* p = model_find_param(m, name);
    ASSERT_NE(p, nullptr);
    double num2 = 0, diff2 = 0;
    for (int s = 0; s < 12; s++) {
      const size_t i = p->kind == PARAM_EMBEDDING ? (size_t)b.tokens[rng_below(&r, b.tokens.size())] * p->cols +
                                                        rng_below(&r, p->cols)
                                                  : rng_below(&r, p->numel);
      float* x = m.params.data() + p->offset + i;
      const float x0 = *x, h = 1e-2f;
      *x = x0 + h;
      const double lp = run_relation(&m, a, &t, ta, b, 0, w, false);
      *x = x0 - h;
      const double lm = run_relation(&m, a, &t, ta, b, 0, w, false);
      *x = x0;
      const double num = (lp - lm) / (2.0 * h), an = analytic[p->offset + i];
      num2 += num * num;
      diff2 += (num - an) * (num - an);
    }
    const double rel = std::sqrt(diff2) / std::max(std::sqrt(num2), 1e-3);
    printf("  %-44s |g| %.3e  rel err %.3e\n", name, std::sqrt(num2), rel);
    EXPECT_LT(rel, 1e-2) << name;
  }
  activations_destroy(a);
  activations_destroy(ta);
}

// ---- config ---------------------------------------------------------------------

TEST(ModelConfig, DefaultsValid) { EXPECT_TRUE(model_config_validate(ModelConfig{}).ok()); }

TEST(ModelConfig, ValidationMessages) {
  struct Bad {
    std::function<void(ModelConfig&)> edit;
    std::vector<std::string> expect;
  };
  std::vector<Bad> cases = {
      {[](ModelConfig& c) { c.vocab_size = 0; }, {"vocab_size", "0"}},
      {[](ModelConfig& c) { c.dim = -4; }, {"dim", "-4"}},
      {[](ModelConfig& c) { c.n_layers = 0; }, {"n_layers"}},
      {[](ModelConfig& c) { c.ffn_dim = 0; }, {"ffn_dim"}},
      {[](ModelConfig& c) { c.max_seq_len = -1; }, {"max_seq_len"}},
      {[](ModelConfig& c) { c.n_heads = 3; }, {"dim", "n_heads", "3"}},
      {[](ModelConfig& c) { c.n_kv_heads = 3; }, {"n_kv_heads", "3", "divide"}},
      {[](ModelConfig& c) { c.head_dim = 32; }, {"head_dim", "32", "64"}},
      {[](ModelConfig& c) { c.dim = 12, c.n_heads = 4, c.n_kv_heads = 4, c.head_dim = 3; }, {"head_dim", "even"}},
      {[](ModelConfig& c) { c.act_bits = 2; }, {"act_bits", "2"}},
      {[](ModelConfig& c) { c.norm_eps = 0.0f; }, {"norm_eps"}},
      {[](ModelConfig& c) { c.rope_theta = -1.0f; }, {"rope_theta"}},
      {[](ModelConfig& c) { c.ffn_act = (FfnAct)7; }, {"ffn_act"}},
  };
  for (auto& bc : cases) {
    ModelConfig c;
    bc.edit(c);
    Status st = model_config_validate(c);
    ASSERT_FALSE(st.ok());
    for (auto& e : bc.expect) EXPECT_NE(st.msg.find(e), std::string::npos) << st.msg << " lacks " << e;
    printf("  %s\n", st.msg.c_str());
    Model m;
    EXPECT_FALSE(model_init(&m, c, 1).ok());
  }
}

TEST(ModelConfig, JsonRoundTripAndErrors) {
  ModelConfig c = tiny_config();
  c.ffn_act = FFN_RELU2;
  c.tie_embeddings = false;
  c.subln = false;
  c.weight_quant = WQ_TERNARY;
  c.act_bits = 4;
  c.a4_scope = A4_ALL;
  c.rope_theta = 500000.0f;
  c.norm_eps = 1e-6f;
  ModelConfig back;
  Status st = model_config_from_json(model_config_to_json(c), &back);
  ASSERT_TRUE(st.ok()) << st.msg;
  EXPECT_EQ(model_config_to_json(back), model_config_to_json(c));
  EXPECT_EQ(back.ffn_act, FFN_RELU2);
  EXPECT_EQ(back.a4_scope, A4_ALL);
  EXPECT_EQ(back.norm_eps, 1e-6f);
  EXPECT_FALSE(back.tie_embeddings);

  // missing keys keep defaults; head_dim and n_kv_heads follow dim / n_heads
  ModelConfig d;
  ASSERT_TRUE(model_config_from_json(R"({"dim": 128, "n_heads": 2, "vocab_size": 100})", &d).ok());
  EXPECT_EQ(d.head_dim, 64);
  EXPECT_EQ(d.n_kv_heads, 2);
  EXPECT_EQ(d.ffn_dim, ModelConfig{}.ffn_dim);

  struct Bad {
    const char* json;
    std::vector<std::string> expect;
  } bad[] = {
      {R"({"ffn_act": "gelu"})", {"ffn_act", "gelu", "swiglu", "relu2"}},
      {R"({"weight_quant": "binary"})", {"weight_quant", "binary", "ternary"}},
      {R"({"a4_scope": "some"})", {"a4_scope", "some", "hybrid"}},
      {R"({"act_bits": 3})", {"act_bits", "3"}},
      {R"({"dim": "big"})", {"dim", "integer"}},
      {R"({"dim": 2.5})", {"dim", "integer"}},
      {R"({"subln": 1})", {"subln"}},
      {R"({"dim": 100, "n_heads": 3, "head_dim": 33})", {"dim", "n_heads"}},
      {R"({"dim": )", {"parse"}},
      {R"([1, 2])", {"object"}},
  };
  for (auto& b : bad) {
    ModelConfig x;
    Status s = model_config_from_json(b.json, &x);
    ASSERT_FALSE(s.ok()) << b.json;
    for (auto& e : b.expect) EXPECT_NE(s.msg.find(e), std::string::npos) << s.msg << " lacks " << e;
    printf("  %s\n", s.msg.c_str());
  }
}

// ---- layout ---------------------------------------------------------------------

TEST(ModelLayout, NamesAndSizes) {
  ModelConfig c = tiny_config();
  Model m;
  ASSERT_TRUE(model_init(&m, c, 1).ok());
  const int D = c.dim, Q = c.n_heads * c.head_dim, K = c.n_kv_heads * c.head_dim, F = c.ffn_dim;
  size_t per_layer = D + Q * D + 2 * K * D + Q + D * Q + D + 2 * F * D + F + D * F;
  EXPECT_EQ(model_num_params(m), (size_t)c.vocab_size * D + c.n_layers * per_layer + D);
  EXPECT_EQ(m.params.size(), model_num_params(m));
  for (const char* name :
       {"model.embed_tokens.weight", "model.layers.1.input_layernorm.weight", "model.layers.1.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight",
        "model.layers.0.self_attn.inner_norm.weight", "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.post_attention_layernorm.weight", "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.ffn_layernorm.weight",
        "model.layers.0.mlp.down_proj.weight", "model.norm.weight"})
    EXPECT_NE(model_find_param(m, name), nullptr) << name;
  EXPECT_EQ(model_find_param(m, "lm_head.weight"), nullptr);
  EXPECT_EQ(m.w.output, m.w.tok_embeddings);
  const ParamInfo* k = model_find_param(m, "model.layers.0.self_attn.k_proj.weight");
  EXPECT_EQ(k->rows, K);
  EXPECT_EQ(k->cols, D);
  EXPECT_EQ(k->kind, PARAM_LINEAR);
  EXPECT_EQ(k->layer, 0);
  EXPECT_EQ(m.w.layers[0].wk, m.params.data() + k->offset);
  // init: norms are ones, matrices small
  for (float v : std::vector<float>(m.w.final_norm, m.w.final_norm + D)) EXPECT_EQ(v, 1.0f);

  c.tie_embeddings = false;
  c.ffn_act = FFN_RELU2;
  c.subln = false;
  Model u;
  ASSERT_TRUE(model_init(&u, c, 1).ok());
  const ParamInfo* head = model_find_param(u, "lm_head.weight");
  ASSERT_NE(head, nullptr);
  EXPECT_EQ(head->kind, PARAM_HEAD);
  EXPECT_EQ(u.w.output, u.params.data() + head->offset);
  EXPECT_EQ(model_find_param(u, "model.layers.0.mlp.gate_proj.weight"), nullptr);
  EXPECT_EQ(model_find_param(u, "model.layers.0.self_attn.inner_norm.weight"), nullptr);
  EXPECT_EQ(u.w.layers[0].w_gate, nullptr);
  EXPECT_EQ(u.w.layers[0].attn_sub_norm, nullptr);
  model_alloc_grads(&u);
  EXPECT_EQ(u.grads.size(), u.params.size());
  EXPECT_EQ(u.g.output, u.grads.data() + head->offset);
}

// ---- gradients --------------------------------------------------------------------

TEST(ModelGrad, TiedSwigluSublnGqa) { whole_model_grad_check({"tied swiglu subln gqa(4/2)", true, true, true, 2}); }
TEST(ModelGrad, UntiedRelu2NoSubln) { whole_model_grad_check({"untied relu2 no-subln mha", false, false, false, 4}); }
TEST(ModelGrad, UntiedSwigluSublnMqa) { whole_model_grad_check({"untied swiglu subln mqa(4/1)", false, true, true, 1}); }
TEST(ModelGrad, TiedRelu2Subln) { whole_model_grad_check({"tied relu2 subln mha", true, false, true, 4}); }

// With weight_quant=ternary (and no activation quantization), the latent
// weights' gradient must be exactly the float model's gradient at W = Wq:
// the quantizer is the identity in the backward.
TEST(ModelGrad, SteWeightGradientIsIdentity) {
  ModelConfig c = tiny_config();
  c.weight_quant = WQ_TERNARY;
  Model tm;
  ASSERT_TRUE(model_init(&tm, c, 3).ok());
  spread_params(&tm, 4);
  model_alloc_grads(&tm);
  Model fm;
  ModelConfig fc = c;
  fc.weight_quant = WQ_NONE;
  ASSERT_TRUE(model_build_layout(&fm, fc).ok());
  fm.params = tm.params;
  for (const ParamInfo& p : tm.info)
    if (p.kind == PARAM_LINEAR) quant_ternary(fm.params.data() + p.offset, tm.params.data() + p.offset, p.numel);
  model_alloc_grads(&fm);
  Batch b = make_batch(2, 6, c.vocab_size, 1, 5);
  Activations* ta = activations_create(tm, b.B, b.T);
  Activations* fa = activations_create(fm, b.B, b.T);
  const double lt = run(&tm, ta, b, true), lf = run(&fm, fa, b, true);
  // Same math up to where gamma is applied: (x . codes) * gamma vs x . (gamma * codes).
  EXPECT_NEAR(lt, lf, 1e-6 * std::fabs(lf));
  double d2 = 0.0, n2 = 0.0;
  for (size_t i = 0; i < tm.grads.size(); i++) {
    d2 += (double)(tm.grads[i] - fm.grads[i]) * (tm.grads[i] - fm.grads[i]);
    n2 += (double)fm.grads[i] * fm.grads[i];
  }
  printf("  STE: ternary vs float-at-Wq gradient rel diff %.3e\n", std::sqrt(d2 / n2));
  EXPECT_LT(std::sqrt(d2 / n2), 1e-6);
  // and quantization does change the forward
  Model lm;
  ASSERT_TRUE(model_build_layout(&lm, fc).ok());
  lm.params = tm.params;
  Activations* la = activations_create(lm, b.B, b.T);
  EXPECT_NE(run(&lm, la, b, false), lt);
  activations_destroy(ta);
  activations_destroy(fa);
  activations_destroy(la);
}

// ---- padding and errors ------------------------------------------------------------

TEST(ModelForward, LeftPaddingMatchesUnpadded) {
  ModelConfig c = tiny_config();
  Model m;
  ASSERT_TRUE(model_init(&m, c, 11).ok());
  spread_params(&m, 12);
  const int V = c.vocab_size;
  std::vector<int32_t> x = {3, 7, 1, 12, 5};
  Activations* a1 = activations_create(m, 1, 5);
  ASSERT_TRUE(model_forward(&m, a1, x.data(), nullptr, 1, 5).ok());
  std::vector<float> ref(activations_logits(a1), activations_logits(a1) + 5 * V);

  // two rows of 8: row 0 = 3 pads + x, row 1 fully padded
  std::vector<int32_t> tok(16, 0);
  std::vector<uint8_t> mask(16, 0);
  for (int i = 0; i < 5; i++) tok[3 + i] = x[i], mask[3 + i] = 1;
  Activations* a2 = activations_create(m, 2, 8);
  ASSERT_TRUE(model_forward(&m, a2, tok.data(), mask.data(), 2, 8).ok());
  std::vector<float> got(activations_logits(a2), activations_logits(a2) + 16 * V);
  double d2 = 0.0, n2 = 0.0;
  for (int i = 0; i < 5 * V; i++) {
    d2 += (double)(got[3 * V + i] - ref[i]) * (got[3 * V + i] - ref[i]);
    n2 += (double)ref[i] * ref[i];
  }
  printf("  left-padded vs unpadded logits rel diff %.3e (RoPE is relative)\n", std::sqrt(d2 / n2));
  EXPECT_LT(std::sqrt(d2 / n2), 1e-4);
  for (float v : got) ASSERT_TRUE(std::isfinite(v));  // the fully padded row too

  // pad ids never matter for real positions, in ternary A8 mode as well
  for (int mode = 0; mode < 2; mode++) {
    if (mode == 1) m.cfg.weight_quant = WQ_TERNARY, m.cfg.act_bits = 8;
    ASSERT_TRUE(model_forward(&m, a2, tok.data(), mask.data(), 2, 8).ok());
    std::vector<float> l1(activations_logits(a2), activations_logits(a2) + 16 * V);
    std::vector<int32_t> tok2(tok);
    for (int i = 0; i < 16; i++)
      if (!mask[i]) tok2[i] = (tok2[i] + 5 + i) % V;
    ASSERT_TRUE(model_forward(&m, a2, tok2.data(), mask.data(), 2, 8).ok());
    std::vector<float> l2(activations_logits(a2), activations_logits(a2) + 16 * V);
    for (int i = 3 * V; i < 8 * V; i++) ASSERT_EQ(l1[i], l2[i]) << "mode " << mode;
  }

  // backward over a batch whose second row is all padding stays finite
  model_alloc_grads(&m);
  std::vector<int32_t> tgt(16, -1);
  std::vector<float> w(16, 0.0f);
  for (int i = 3; i < 8; i++) tgt[i] = (i * 3) % V, w[i] = 1.0f;
  ASSERT_TRUE(model_forward(&m, a2, tok.data(), mask.data(), 2, 8).ok());
  const float loss = ce_loss_forward_backward(activations_logits(a2), tgt.data(), w.data(), 16, V, nullptr);
  EXPECT_TRUE(std::isfinite(loss));
  ASSERT_TRUE(model_backward(&m, a2).ok());
  for (float g : m.grads) ASSERT_TRUE(std::isfinite(g));
  activations_destroy(a1);
  activations_destroy(a2);
}

TEST(ModelForward, ErrorsInsteadOfCrashes) {
  ModelConfig c = tiny_config();
  Model m;
  ASSERT_TRUE(model_init(&m, c, 1).ok());
  Activations* a = activations_create(m, 2, 4);
  std::vector<int32_t> tok = {1, 2, 3, 4, 5, 6, 13, 0};
  Status st = model_forward(&m, a, tok.data(), nullptr, 2, 4);
  ASSERT_FALSE(st.ok());
  printf("  %s\n", st.msg.c_str());
  EXPECT_NE(st.msg.find("13"), std::string::npos);
  EXPECT_NE(st.msg.find("position 6"), std::string::npos);
  EXPECT_NE(st.msg.find("row 1"), std::string::npos);
  tok[6] = -2;
  st = model_forward(&m, a, tok.data(), nullptr, 2, 4);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("-2"), std::string::npos);
  // shapes beyond the arena or max_seq_len
  tok[6] = 0;
  EXPECT_FALSE(model_forward(&m, a, tok.data(), nullptr, 4, 2 + 2).ok());
  Activations* big = activations_create(m, 1, 16);
  std::vector<int32_t> t16(16, 1);
  st = model_forward(&m, big, t16.data(), nullptr, 1, 16);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("max_seq_len"), std::string::npos) << st.msg;
  // backward before forward, and without gradients
  Activations* fresh = activations_create(m, 2, 4);
  model_alloc_grads(&m);
  EXPECT_FALSE(model_backward(&m, fresh).ok());
  Model ng;
  ASSERT_TRUE(model_init(&ng, c, 1).ok());
  ASSERT_TRUE(model_forward(&ng, a, tok.data(), nullptr, 2, 4).ok());
  st = model_backward(&ng, a);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("model_alloc_grads"), std::string::npos);
  EXPECT_EQ(activations_create(m, 0, 4), nullptr);
  activations_destroy(a);
  activations_destroy(big);
  activations_destroy(fresh);
}

TEST(ModelForward, ActBitsReadAtEveryCall) {
  ModelConfig c = tiny_config();
  c.weight_quant = WQ_TERNARY;
  c.act_bits = 8;
  Model m;
  ASSERT_TRUE(model_init(&m, c, 21).ok());
  spread_params(&m, 22);
  Batch b = make_batch(2, 6, c.vocab_size, 0, 23);
  Activations* a = activations_create(m, b.B, b.T);
  std::vector<std::vector<float>> out;
  for (int bits : {8, 4, 0, 8}) {
    m.cfg.act_bits = bits;
    ASSERT_TRUE(model_forward(&m, a, b.tokens.data(), nullptr, b.B, b.T).ok());
    out.emplace_back(activations_logits(a), activations_logits(a) + b.B * b.T * c.vocab_size);
  }
  EXPECT_NE(out[0], out[1]);
  EXPECT_NE(out[1], out[2]);
  EXPECT_EQ(out[0], out[3]);
  // a4 scope: hybrid and all differ
  m.cfg.act_bits = 4;
  m.cfg.a4_scope = A4_ALL;
  ASSERT_TRUE(model_forward(&m, a, b.tokens.data(), nullptr, b.B, b.T).ok());
  std::vector<float> all(activations_logits(a), activations_logits(a) + b.B * b.T * c.vocab_size);
  EXPECT_NE(all, out[1]);
  activations_destroy(a);
}

// ---- overfit ---------------------------------------------------------------------------

// A tiny ternary A8 model memorises one fixed batch with a plain Adam loop:
// the whole engine (quantized forward, STE backward, loss) learns.
TEST(ModelTrain, TernaryA8OverfitsOneBatch) {
  ModelConfig c;
  c.vocab_size = 32;
  c.dim = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.ffn_dim = 128;
  c.max_seq_len = 16;
  c.weight_quant = WQ_TERNARY;
  c.act_bits = 8;
  Model m;
  ASSERT_TRUE(model_init(&m, c, 31).ok());
  model_alloc_grads(&m);
  const int B = 4, T = 16, N = B * T;
  Batch b = make_batch(B, T, c.vocab_size, 3, 32);
  // next-token targets within each row; the last position of a row is ignored
  for (int i = 0; i < N; i++) {
    const bool last = (i % T) == T - 1;
    b.targets[i] = last ? -1 : b.tokens[i + 1];
    b.weights[i] = (last || !b.mask[i]) ? 0.0f : 1.0f;
  }
  Activations* a = activations_create(m, B, T);
  std::vector<float> mom(m.params.size(), 0.0f), var(m.params.size(), 0.0f);
  const float lr = 1e-2f, b1 = 0.9f, b2 = 0.99f;
  double first = 0.0, loss = 0.0;
  int step = 0;
  for (; step < 400; step++) {
    loss = run(&m, a, b, true);
    if (step == 0) first = loss;
    if (step % 50 == 0) printf("  step %3d loss %.4f\n", step, loss);
    if (loss < 0.05) break;
    const float c1 = 1.0f - std::pow(b1, (float)(step + 1)), c2 = 1.0f - std::pow(b2, (float)(step + 1));
    for (size_t i = 0; i < m.params.size(); i++) {
      const float g = m.grads[i];
      mom[i] = b1 * mom[i] + (1 - b1) * g;
      var[i] = b2 * var[i] + (1 - b2) * g * g;
      m.params[i] -= lr * (mom[i] / c1) / (std::sqrt(var[i] / c2) + 1e-8f);
    }
  }
  printf("  ternary A8 overfit: loss %.4f -> %.4f after %d steps\n", first, loss, step);
  EXPECT_GT(first, 2.5);
  EXPECT_LT(loss, 0.1);
  activations_destroy(a);
}
