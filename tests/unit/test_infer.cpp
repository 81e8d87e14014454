// Inference sessions against the training forward, sampling and log-probabilities.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "core/half.h"
#include "core/rng.h"
#include "kernels/cpu/kernels.h"
#include "model/generate.h"
#include "model/infer.h"
#include "model/infer_synthetic.h"
#include "model/model.h"

using namespace bk;

namespace {

ModelConfig small_config(WeightQuant wq, int act_bits, A4Scope scope = A4_HYBRID) {
  ModelConfig c;
  c.vocab_size = 97;
  c.dim = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;  // GQA: two query heads per KV head
  c.head_dim = 16;
  c.ffn_dim = 96;
  c.max_seq_len = 40;
  c.weight_quant = wq;
  c.act_bits = act_bits;
  c.a4_scope = scope;
  return c;
}

std::vector<int32_t> random_tokens(int n, int vocab, uint64_t seed) {
  Rng r;
  rng_seed(&r, seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = (int32_t)rng_below(&r, vocab);
  return t;
}

// Reference logits [T, V] from the training forward.
std::vector<float> forward_logits(Model* m, const std::vector<int32_t>& toks) {
  const int T = (int)toks.size();
  Activations* a = activations_create(*m, 1, T);
  EXPECT_NE(a, nullptr);
  Status st = model_forward(m, a, toks.data(), nullptr, 1, T);
  EXPECT_TRUE(st.ok()) << st.msg;
  const float* lg = activations_logits(a);
  std::vector<float> out(lg, lg + (size_t)T * m->cfg.vocab_size);
  activations_destroy(a);
  return out;
}

// max |a - b| / max |b|
double rel_err(const float* a, const float* b, int n) {
  double num = 0, den = 0;
  for (int i = 0; i < n; i++) {
    num = std::max(num, (double)std::fabs(a[i] - b[i]));
    den = std::max(den, (double)std::fabs(b[i]));
  }
  return num / std::max(den, 1e-30);
}

struct Fixture {
  Model m;
  InferWeights* w = nullptr;
  ~Fixture() { infer_weights_destroy(w); }
};

void build(Fixture* f, const ModelConfig& c, InferBackend be, uint64_t seed = 7) {
  Status st = model_init(&f->m, c, seed);
  ASSERT_TRUE(st.ok()) << st.msg;
  // Larger weights than the init's 0.02 so logits have a real spread.
  Rng r;
  rng_seed(&r, seed + 1);
  for (const ParamInfo& p : f->m.info)
    if (p.kind != PARAM_NORM)
      for (size_t i = 0; i < p.numel; i++) f->m.params[p.offset + i] = 0.15f * rng_normal(&r);
  st = infer_weights_create(&f->m, be, &f->w);
  ASSERT_TRUE(st.ok()) << st.msg;
}

// What an fp32 dot product of the LM head may differ by when two paths sum the
// same D products in different orders (the head is a GEMM in the training
// forward and in batched prefill, a GEMV in decode): |delta| <= 2 gamma_D
// sum_i |x_i w_i| with gamma_D = D u / (1 - D u), u = 2^-24, and, x being the
// final RMSNorm's output, sum_i |x_i w_i| <= ||x|| ||w_v|| <= sqrt(D) max|g| ||w_v||.
// Everything before the head is the same code on the same values in both
// paths (exact BitLinear code sums, one attention routine), so a difference
// beyond this bound at any logit is a real disagreement.
std::vector<double> head_rounding_bound(const Model& m) {
  const ModelConfig& c = m.cfg;
  const int D = c.dim, V = c.vocab_size;
  const double u = std::ldexp(1.0, -24), gamma_d = D * u / (1 - D * u);
  double gmax = 0;
  for (int i = 0; i < D; i++) gmax = std::max(gmax, (double)std::fabs(m.w.final_norm[i]));
  std::vector<double> bound(V);
  for (int v = 0; v < V; v++) {
    double n2 = 0;
    for (int i = 0; i < D; i++) n2 += (double)m.w.output[(size_t)v * D + i] * m.w.output[(size_t)v * D + i];
    bound[v] = 2 * gamma_d * std::sqrt((double)D) * gmax * std::sqrt(n2);
  }
  return bound;
}

// Logits [T, V] of a session against model_forward's: every logit within the
// head's rounding bound. Returns the largest |difference| seen. Float layers
// (no activation quantization) are not bit-identical between a GEMM and a
// GEMV either; with no quantizer to turn a last-bit difference into a whole
// step, their differences stay at the rounding level too, and 1e-4 of the
// position's largest logit bounds them with two orders of magnitude to spare.
double expect_within_head_bound(const float* got, const std::vector<float>& ref, std::vector<double> bound, int T,
                                int V, const std::string& what, bool float_layers) {
  double worst = 0;
  int bad = 0;
  for (int t = 0; t < T; t++) {
    if (float_layers) {
      double mx = 0;
      for (int v = 0; v < V; v++) mx = std::max(mx, (double)std::fabs(ref[(size_t)t * V + v]));
      bound.assign(V, 1e-4 * mx);
    }
    for (int v = 0; v < V; v++) {
      const double d = std::fabs((double)got[(size_t)t * V + v] - ref[(size_t)t * V + v]);
      worst = std::max(worst, d);
      if (d > bound[v] && bad++ < 3)
        ADD_FAILURE() << what << ": position " << t << " logit " << v << " differs by " << d << " > bound "
                      << bound[v];
    }
  }
  return worst;
}

// Session logits against model_forward, for every backend and model kind: one
// batch, two chunks (the second reading the first from the cache) and token
// by token (the decode path).
void check_matches_forward(const ModelConfig& c, const char* label, InferBackend be = INFER_FLOAT) {
  Fixture f;
  build(&f, c, be);
  const int T = 24, V = c.vocab_size;
  std::vector<int32_t> toks = random_tokens(T, V, 99);
  std::vector<float> ref = forward_logits(&f.m, toks);
  const std::vector<double> bound = head_rounding_bound(f.m);
  const bool fl = c.act_bits == 0;  // float layers: see expect_within_head_bound

  InferSession* s = nullptr;
  ASSERT_TRUE(infer_session_create(f.w, 0, &s).ok());
  ASSERT_EQ(infer_session_max_ctx(s), c.max_seq_len);

  // One batch, all positions.
  std::vector<float> all((size_t)T * V);
  ASSERT_TRUE(infer_session_eval_all(s, toks.data(), T, all.data()).ok());
  double worst = expect_within_head_bound(all.data(), ref, bound, T, V, std::string(label) + " one batch", fl);
  std::vector<float> last(infer_session_logits(s), infer_session_logits(s) + V);
  worst = std::max(worst, expect_within_head_bound(last.data(), std::vector<float>(ref.end() - V, ref.end()), bound,
                                                   1, V, std::string(label) + " last logits", fl));
  // Two chunks: the second attends to the cached first.
  infer_session_reset(s);
  ASSERT_TRUE(infer_session_eval_all(s, toks.data(), 9, all.data()).ok());
  ASSERT_TRUE(infer_session_eval_all(s, toks.data() + 9, T - 9, all.data() + (size_t)9 * V).ok());
  worst = std::max(worst, expect_within_head_bound(all.data(), ref, bound, T, V, std::string(label) + " two chunks", fl));
  // Token by token (decode path).
  infer_session_reset(s);
  for (int t = 0; t < T; t++) {
    ASSERT_TRUE(infer_session_eval(s, &toks[t], 1).ok());
    ASSERT_EQ(infer_session_pos(s), t + 1);
    memcpy(all.data() + (size_t)t * V, infer_session_logits(s), sizeof(float) * V);
  }
  worst = std::max(worst, expect_within_head_bound(all.data(), ref, bound, T, V, std::string(label) + " decode", fl));
  printf("[%s] largest logit difference to the training forward %.3g (head bound >= %.3g)\n", label, worst,
         *std::min_element(bound.begin(), bound.end()));
  infer_session_destroy(s);
}

// The two backends' logits for the same model and tokens: bit for bit (the
// packed kernels' int32 sums and the float backend's fp32 sums of the same
// codes are both exact), in one batch and token by token.
void expect_backends_identical(const ModelConfig& c, const char* label) {
  Fixture fl, pk;
  build(&fl, c, INFER_FLOAT);
  build(&pk, c, INFER_PACKED);
  const int T = 24, V = c.vocab_size;
  std::vector<int32_t> toks = random_tokens(T, V, 98);
  InferSession *a = nullptr, *b = nullptr;
  ASSERT_TRUE(infer_session_create(fl.w, 0, &a).ok());
  ASSERT_TRUE(infer_session_create(pk.w, 0, &b).ok());
  std::vector<float> la((size_t)T * V), lb((size_t)T * V);
  ASSERT_TRUE(infer_session_eval_all(a, toks.data(), T, la.data()).ok());
  ASSERT_TRUE(infer_session_eval_all(b, toks.data(), T, lb.data()).ok());
  EXPECT_EQ(la, lb) << label << " one batch";
  infer_session_reset(a);
  infer_session_reset(b);
  for (int t = 0; t < T; t++) {
    ASSERT_TRUE(infer_session_eval(a, &toks[t], 1).ok());
    ASSERT_TRUE(infer_session_eval(b, &toks[t], 1).ok());
    std::vector<float> da(infer_session_logits(a), infer_session_logits(a) + V);
    std::vector<float> db(infer_session_logits(b), infer_session_logits(b) + V);
    ASSERT_EQ(da, db) << label << " decode position " << t;
  }
  infer_session_destroy(a);
  infer_session_destroy(b);
}

}  // namespace

TEST(Infer, FloatMatchesForward) { check_matches_forward(small_config(WQ_NONE, 0), "float"); }

TEST(Infer, TernaryA8MatchesForward) { check_matches_forward(small_config(WQ_TERNARY, 8), "ternary A8"); }

TEST(Infer, TernaryA4HybridMatchesForward) {
  check_matches_forward(small_config(WQ_TERNARY, 4, A4_HYBRID), "ternary A4 hybrid");
}

TEST(Infer, TernaryA4AllMatchesForward) {
  check_matches_forward(small_config(WQ_TERNARY, 4, A4_ALL), "ternary A4 all");
}

TEST(Infer, Relu2NoSublnUntiedMatchesForward) {
  ModelConfig c = small_config(WQ_TERNARY, 8);
  c.ffn_act = FFN_RELU2;
  c.subln = false;
  c.tie_embeddings = false;
  c.n_kv_heads = 1;  // multi-query
  check_matches_forward(c, "relu2 no-subln untied MQA");
}

TEST(Infer, PackedMatchesForwardAndFloatBackendExactly) {
  ModelConfig a4all = small_config(WQ_TERNARY, 4, A4_ALL);
  a4all.ffn_act = FFN_RELU2;
  a4all.subln = false;
  a4all.tie_embeddings = false;
  const std::pair<ModelConfig, const char*> cases[] = {{small_config(WQ_TERNARY, 8), "packed A8"},
                                                       {small_config(WQ_TERNARY, 4, A4_HYBRID), "packed A4 hybrid"},
                                                       {a4all, "packed A4 all, relu2 no-subln untied"}};
  for (const auto& c : cases) {
    check_matches_forward(c.first, c.second, INFER_PACKED);
    expect_backends_identical(c.first, c.second);
  }
}

// The training forward of one quantized model under every OpenBLAS kernel
// family this CPU can run: everything before the LM head is exact or fixed-order
// (BitLinear code sums, the attention routine), so the logits agree within the
// head's rounding bound whichever family a machine gets.
TEST(KernelFamilies, QuantizedForwardDoesNotDependOnBlasKernels) {
  const KernelInfo& k = kernels_info();
  const std::string original = k.blas_family;
  std::vector<const char*> families = {"Prescott"};
  if (k.vector_isa == "avx" || k.vector_isa == "avx2" || k.vector_isa == "avx512") families.push_back("Sandybridge");
  if (k.vector_isa == "avx2" || k.vector_isa == "avx512") families.push_back("Haswell");
  if (k.vector_isa == "avx512") families.push_back("SkylakeX");
  Fixture f;
  build(&f, small_config(WQ_TERNARY, 4, A4_HYBRID), INFER_FLOAT);
  const int T = 24, V = f.m.cfg.vocab_size;
  std::vector<int32_t> toks = random_tokens(T, V, 5);
  const std::vector<double> bound = head_rounding_bound(f.m);
  std::vector<float> first;
  for (const char* fam : families) {
    if (!kernels_use_blas_family(fam)) {
      // A single-architecture OpenBLAS cannot switch: then only its own family runs anywhere.
      printf("this OpenBLAS cannot switch to %s (%s)\n", fam, k.blas.c_str());
      continue;
    }
    ASSERT_EQ(kernels_info().blas_family, std::string(fam));
    std::vector<float> lg = forward_logits(&f.m, toks);
    if (first.empty()) {
      first = lg;
      continue;
    }
    const double worst = expect_within_head_bound(lg.data(), first, bound, T, V, std::string("family ") + fam, false);
    printf("%s vs %s: largest logit difference %.3g\n", fam, families[0], worst);
  }
  ASSERT_TRUE(kernels_use_blas_family(original.c_str()));
}

TEST(Infer, PackedIsSmallerAndNeedsTernary) {
  Fixture f, g;
  build(&f, small_config(WQ_TERNARY, 8), INFER_FLOAT);
  build(&g, small_config(WQ_TERNARY, 8), INFER_PACKED);
  size_t fb = infer_weights_bytes(f.w), pb = infer_weights_bytes(g.w);
  printf("weights: float %zu bytes, packed %zu bytes\n", fb, pb);
  EXPECT_EQ(fb, model_num_params(f.m) * sizeof(float));
  EXPECT_LT(pb, fb);
  // Embedding (tied head) + norms stay fp32; projections cost about 2 bits each.
  const ModelConfig& c = f.m.cfg;
  size_t fp32 = ((size_t)c.vocab_size * c.dim + (size_t)c.n_layers * (2 * c.dim + c.n_heads * c.head_dim + c.ffn_dim) +
                 c.dim) * 4;
  EXPECT_GT(pb, fp32);
  EXPECT_LT(pb, fp32 + (model_num_params(f.m) - fp32 / 4) / 2);

  Model fm;
  ASSERT_TRUE(model_init(&fm, small_config(WQ_NONE, 0), 1).ok());
  InferWeights* w = nullptr;
  Status st = infer_weights_create(&fm, INFER_PACKED, &w);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("ternary"), std::string::npos) << st.msg;
}

// The packed engine keeps the embedding in a compact type. With values that
// f16 holds exactly, f16 rows give the same decode logits as f32 rows (the
// same values through the same dot product); q8_0 takes 34 bytes per 32.
TEST(Infer, PackedKeepsTheEmbeddingType) {
  Fixture f;
  build(&f, small_config(WQ_TERNARY, 8), INFER_PACKED);
  const ModelConfig& c = f.m.cfg;
  float* e = f.m.params.data() + model_find_param(f.m, "model.embed_tokens.weight")->offset;
  for (size_t i = 0; i < (size_t)c.vocab_size * c.dim; i++) e[i] = f16_to_f32(f32_to_f16(e[i]));
  InferWeights *w32 = nullptr, *w16 = nullptr, *wq8 = nullptr;
  ASSERT_TRUE(infer_weights_create(&f.m, INFER_PACKED, &w32, ROWS_F32).ok());
  ASSERT_TRUE(infer_weights_create(&f.m, INFER_PACKED, &w16, ROWS_F16).ok());
  ASSERT_TRUE(infer_weights_create(&f.m, INFER_PACKED, &wq8, ROWS_Q8_0).ok());
  const size_t vd = (size_t)c.vocab_size * c.dim;
  EXPECT_EQ(infer_weights_bytes(w32) - infer_weights_bytes(w16), vd * 2);
  EXPECT_EQ(infer_weights_bytes(w32) - infer_weights_bytes(wq8), vd * 4 - vd / 32 * 34);
  InferWeightBytes b;
  infer_weights_bytes_by_component(wq8, &b);
  EXPECT_EQ(b.embedding_dtype, "q8_0");
  EXPECT_EQ(b.embeddings, vd / 32 * 34);
  std::vector<int32_t> toks = random_tokens(6, c.vocab_size, 4);
  InferSession *s32 = nullptr, *s16 = nullptr, *sq8 = nullptr;
  ASSERT_TRUE(infer_session_create(w32, 8, &s32).ok());
  ASSERT_TRUE(infer_session_create(w16, 8, &s16).ok());
  ASSERT_TRUE(infer_session_create(wq8, 8, &sq8).ok());
  for (int32_t t : toks) {
    ASSERT_TRUE(infer_session_eval(s32, &t, 1).ok());
    ASSERT_TRUE(infer_session_eval(s16, &t, 1).ok());
    ASSERT_TRUE(infer_session_eval(sq8, &t, 1).ok());
    EXPECT_EQ(0, memcmp(infer_session_logits(s32), infer_session_logits(s16), sizeof(float) * c.vocab_size));
    for (int v = 0; v < c.vocab_size; v++) ASSERT_TRUE(std::isfinite(infer_session_logits(sq8)[v]));
  }
  infer_session_destroy(s32);
  infer_session_destroy(s16);
  infer_session_destroy(sq8);
  infer_weights_destroy(w32);
  infer_weights_destroy(w16);
  infer_weights_destroy(wq8);
}

TEST(Infer, WeightsOutliveModel) {
  ModelConfig c = small_config(WQ_TERNARY, 8);
  std::vector<int32_t> toks = random_tokens(10, c.vocab_size, 3);
  std::vector<float> ref;
  InferWeights* w = nullptr;
  {
    Fixture f;
    build(&f, c, INFER_PACKED);
    ref = forward_logits(&f.m, toks);
    w = f.w;
    f.w = nullptr;  // keep the weights, drop the model
  }
  InferSession* s = nullptr;
  ASSERT_TRUE(infer_session_create(w, 16, &s).ok());
  ASSERT_TRUE(infer_session_eval(s, toks.data(), 10).ok());
  EXPECT_LE(rel_err(infer_session_logits(s), ref.data() + 9 * c.vocab_size, c.vocab_size), 1e-4);
  infer_session_destroy(s);
  infer_weights_destroy(w);
}

TEST(Infer, Errors) {
  Fixture f;
  build(&f, small_config(WQ_NONE, 0), INFER_FLOAT);
  InferSession* s = nullptr;
  ASSERT_TRUE(infer_session_create(f.w, 5, &s).ok());
  int32_t bad = 97;
  Status st = infer_session_eval(s, &bad, 1);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("97"), std::string::npos) << st.msg;
  std::vector<int32_t> toks = random_tokens(6, 97, 1);
  st = infer_session_eval(s, toks.data(), 6);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("capacity of 5"), std::string::npos) << st.msg;
  EXPECT_EQ(infer_session_pos(s), 0);
  ASSERT_TRUE(infer_session_eval(s, toks.data(), 5).ok());
  st = infer_session_eval(s, toks.data(), 1);
  EXPECT_FALSE(st.ok());
  infer_session_destroy(s);
}

// ---- sampling ----------------------------------------------------------------

TEST(Sampling, GreedyTiesGoToLowestId) {
  float lg[6] = {0.5f, 2.0f, -1.0f, 2.0f, 1.9f, 2.0f};
  Rng r;
  rng_seed(&r, 1);
  SamplingParams p;
  EXPECT_EQ(sample_token(lg, 6, p, &r), 1);
  p.temperature = 1.0f;
  p.top_k = 1;
  EXPECT_EQ(sample_token(lg, 6, p, &r), 1);
}

TEST(Sampling, SeededReproducible) {
  std::vector<float> lg = {1.0f, 0.5f, 0.2f, 0.0f, -0.3f, 0.8f, 0.1f};
  SamplingParams p;
  p.temperature = 1.0f;
  auto draw = [&](uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    std::vector<int> v;
    for (int i = 0; i < 64; i++) v.push_back(sample_token(lg.data(), (int)lg.size(), p, &r));
    return v;
  };
  EXPECT_EQ(draw(42), draw(42));
  EXPECT_NE(draw(42), draw(43));
}

TEST(Sampling, TopPKeepsTheNucleus) {
  // probabilities 0.5, 0.3, 0.15, 0.05
  std::vector<float> lg = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.7f;  // nucleus {0, 1}: 0.5 < 0.7 <= 0.8
  Rng r;
  rng_seed(&r, 5);
  int counts[4] = {0, 0, 0, 0};
  const int n = 4000;
  for (int i = 0; i < n; i++) counts[sample_token(lg.data(), 4, p, &r)]++;
  EXPECT_EQ(counts[2], 0);
  EXPECT_EQ(counts[3], 0);
  // Renormalised within the nucleus: 0.625 / 0.375.
  EXPECT_NEAR(counts[0] / (double)n, 0.625, 0.03);
  EXPECT_NEAR(counts[1] / (double)n, 0.375, 0.03);

  p.top_p = 1.0f;
  p.top_k = 3;
  int k3[4] = {0, 0, 0, 0};
  for (int i = 0; i < n; i++) k3[sample_token(lg.data(), 4, p, &r)]++;
  EXPECT_EQ(k3[3], 0);
  EXPECT_GT(k3[2], 0);
  // Plain temperature sampling follows the softmax.
  p.top_k = 0;
  int all[4] = {0, 0, 0, 0};
  for (int i = 0; i < n; i++) all[sample_token(lg.data(), 4, p, &r)]++;
  EXPECT_NEAR(all[3] / (double)n, 0.05, 0.015);
  EXPECT_NEAR(all[0] / (double)n, 0.5, 0.03);
}

TEST(Logprobs, TopLogprobsOrderAndMass) {
  std::vector<float> lg(50);
  Rng r;
  rng_seed(&r, 9);
  for (auto& x : lg) x = 3.0f * rng_normal(&r);
  lg[17] = lg[4];  // a tie: the lower id comes first
  std::vector<TokenLogprob> top;
  top_logprobs(lg.data(), 50, 50, &top);
  ASSERT_EQ(top.size(), 50u);
  double mass = 0;
  for (size_t i = 0; i < top.size(); i++) {
    mass += std::exp((double)top[i].logprob);
    if (i) {
      EXPECT_GE(top[i - 1].logprob, top[i].logprob);
    }
    EXPECT_FLOAT_EQ(top[i].logprob, token_logprob(lg.data(), 50, top[i].id));
  }
  EXPECT_NEAR(mass, 1.0, 1e-5);
  for (size_t i = 0; i < top.size(); i++) {
    if (top[i].id != 17) continue;
    bool seen4 = false;
    for (size_t j = 0; j < i; j++) seen4 |= top[j].id == 4;
    EXPECT_TRUE(seen4);
  }
  std::vector<TokenLogprob> top5;
  top_logprobs(lg.data(), 50, 5, &top5);
  ASSERT_EQ(top5.size(), 5u);
  for (int i = 0; i < 5; i++) EXPECT_EQ(top5[i].id, top[i].id);
  float mx = lg[0];
  int am = 0;
  for (int i = 1; i < 50; i++)
    if (lg[i] > mx) mx = lg[i], am = i;
  EXPECT_EQ(top5[0].id, am);
  double partial = 0;
  for (auto& t : top5) partial += std::exp((double)t.logprob);
  EXPECT_LT(partial, 1.0);
}

// ---- generation ---------------------------------------------------------------

TEST(Generate, LengthStopAndEos) {
  Fixture f;
  build(&f, small_config(WQ_TERNARY, 8), INFER_FLOAT);
  InferSession* s = nullptr;
  ASSERT_TRUE(infer_session_create(f.w, 0, &s).ok());
  std::vector<int32_t> prompt = random_tokens(5, 97, 11);
  GenerateOptions o;
  o.max_new_tokens = 8;
  o.top_logprobs = 3;
  GenerateResult g;
  ASSERT_TRUE(generate(s, prompt, o, &g).ok());
  EXPECT_EQ(g.finish_reason, "length");
  ASSERT_EQ(g.ids.size(), 8u);
  ASSERT_EQ(g.logprobs.size(), 8u);
  ASSERT_EQ(g.top.size(), 8u);
  for (size_t i = 0; i < 8; i++) {
    ASSERT_EQ(g.top[i].size(), 3u);
    EXPECT_EQ(g.top[i][0].id, g.ids[i]);  // greedy picks the top token
    EXPECT_FLOAT_EQ(g.top[i][0].logprob, g.logprobs[i]);
  }
  // Greedy output equals argmax of the training forward over the growing sequence.
  std::vector<int32_t> seq = prompt;
  for (int i = 0; i < 8; i++) {
    std::vector<float> ref = forward_logits(&f.m, seq);
    const float* last = ref.data() + (seq.size() - 1) * 97;
    int am = 0;
    for (int v = 1; v < 97; v++)
      if (last[v] > last[am]) am = v;
    EXPECT_EQ(g.ids[i], am) << "step " << i;
    seq.push_back(g.ids[i]);
  }

  // EOS: the greedy third token as eos stops before it.
  GenerateOptions e = o;
  e.eos_id = g.ids[2];
  GenerateResult ge;
  ASSERT_TRUE(generate(s, prompt, e, &ge).ok());
  EXPECT_EQ(ge.finish_reason, "stop");
  size_t first = 0;
  while (g.ids[first] != g.ids[2]) first++;
  EXPECT_EQ(ge.ids.size(), first);

  // Callback stop after two tokens.
  GenerateOptions c = o;
  int calls = 0;
  c.on_token = [&](int32_t) { return ++calls == 2; };
  GenerateResult gc;
  ASSERT_TRUE(generate(s, prompt, c, &gc).ok());
  EXPECT_EQ(gc.finish_reason, "stop");
  EXPECT_EQ(gc.ids.size(), 2u);

  // Context full -> "length".
  InferSession* small = nullptr;
  ASSERT_TRUE(infer_session_create(f.w, 7, &small).ok());
  GenerateResult gl;
  ASSERT_TRUE(generate(small, prompt, o, &gl).ok());
  EXPECT_EQ(gl.finish_reason, "length");
  EXPECT_EQ(gl.ids.size(), 3u);  // 5 prompt + 2 evaluated + the last sampled one
  infer_session_destroy(small);
  infer_session_destroy(s);
}

TEST(Generate, ConcurrentSessionsMatchSequential) {
  Fixture f;
  build(&f, small_config(WQ_TERNARY, 4), INFER_FLOAT);
  GenerateOptions o;
  o.max_new_tokens = 20;
  o.sampling.temperature = 0.9f;
  o.sampling.top_p = 0.95f;
  o.top_logprobs = 2;
  std::vector<int32_t> p1 = random_tokens(7, 97, 21), p2 = random_tokens(12, 97, 22);
  auto run = [&](const std::vector<int32_t>& prompt, uint64_t seed, GenerateResult* out) {
    InferSession* s = nullptr;
    ASSERT_TRUE(infer_session_create(f.w, 0, &s).ok());
    GenerateOptions oo = o;
    oo.seed = seed;
    ASSERT_TRUE(generate(s, prompt, oo, out).ok());
    infer_session_destroy(s);
  };
  GenerateResult a_seq, b_seq, a_par, b_par;
  run(p1, 100, &a_seq);
  run(p2, 200, &b_seq);
  for (int rep = 0; rep < 3; rep++) {
    std::thread t1([&] { run(p1, 100, &a_par); });
    std::thread t2([&] { run(p2, 200, &b_par); });
    t1.join();
    t2.join();
    EXPECT_EQ(a_par.ids, a_seq.ids);
    EXPECT_EQ(b_par.ids, b_seq.ids);
    EXPECT_EQ(a_par.logprobs, a_seq.logprobs);
    EXPECT_EQ(b_par.logprobs, b_seq.logprobs);
  }
  // Same seed reproduces; the sampled run differs from another seed.
  GenerateResult a2;
  run(p1, 100, &a2);
  EXPECT_EQ(a2.ids, a_seq.ids);
  GenerateResult a3;
  run(p1, 101, &a3);
  EXPECT_NE(a3.ids, a_seq.ids);
}
