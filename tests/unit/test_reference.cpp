// The engine against an independent PyTorch implementation of the same
// architecture (tests/reference/model_ref.py): logits, loss and every
// parameter gradient, in float mode and with ternary weights + 8-bit or 4-bit
// activations (fake-quant with STE on both sides, same rounding rule).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "core/rng.h"
#include "kernels/cpu/ternary.h"
#include "model/activations.h"
#include "model/model.h"
#include "testutil/testutil.h"
#include "train/loss.h"

using namespace bk;

namespace {


bool torch_available(std::string* why) {
  std::string out;
  int rc = bk_test::run_command(bk_test::torch_python() + " -c 'import torch, numpy'", &out);
  if (rc != 0) *why = bk_test::torch_python() + " cannot import torch/numpy: " + out;
  return rc == 0;
}


double rel_err(const float* a, const float* b, size_t n) {
  double d2 = 0.0, n2 = 0.0;
  for (size_t i = 0; i < n; i++) {
    d2 += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    n2 += (double)b[i] * b[i];
  }
  if (n2 == 0.0) return std::sqrt(d2);
  return std::sqrt(d2 / n2);
}

struct RefCase {
  const char* name;
  bool tied, swiglu, subln;
  int n_kv_heads;
  WeightQuant wq;
  int act_bits;
  A4Scope scope;
};

void compare_with_torch(const RefCase& rc) {
  std::string why;
  // The only independent check of the engine's math: missing PyTorch is a failure, not a skip.
  ASSERT_TRUE(torch_available(&why)) << why
                                     << "\ninstall it with: bash scripts/setup.sh --test "
                                        "(Debian packages python3-torch python3-numpy)";

  ModelConfig c;
  c.vocab_size = 37;
  c.dim = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = rc.n_kv_heads;
  c.head_dim = 8;
  c.ffn_dim = 48;
  c.max_seq_len = 16;
  c.tie_embeddings = rc.tied;
  c.ffn_act = rc.swiglu ? FFN_SWIGLU : FFN_RELU2;
  c.subln = rc.subln;
  c.weight_quant = rc.wq;
  c.act_bits = rc.act_bits;
  c.a4_scope = rc.scope;
  Model m;
  ASSERT_TRUE(model_init(&m, c, 101).ok());
  // wider than the default init so signals reach every layer
  Rng r;
  rng_seed(&r, 102);
  for (const ParamInfo& p : m.info) {
    float* x = m.params.data() + p.offset;
    for (size_t i = 0; i < p.numel; i++)
      x[i] = p.kind == PARAM_NORM ? 1.0f + 0.2f * rng_normal(&r)
                                  : (p.kind == PARAM_LINEAR ? 0.15f : 0.5f) * rng_normal(&r);
  }
  model_alloc_grads(&m);

  const int B = 2, T = 8, N = B * T;
  std::vector<int32_t> tokens(N), targets(N);
  std::vector<uint8_t> mask(N, 1);
  std::vector<float> weights(N, 1.0f);
  for (int i = 0; i < N; i++) tokens[i] = (int)rng_below(&r, c.vocab_size), targets[i] = (int)rng_below(&r, c.vocab_size);
  for (int t = 0; t < 3; t++) mask[T + t] = 0, weights[T + t] = 0.0f, targets[T + t] = -1;  // left padding, row 1
  weights[1] = 0.25f;

  Activations* a = activations_create(m, B, T);
  ASSERT_NE(a, nullptr);
  Status st = model_forward(&m, a, tokens.data(), mask.data(), B, T);
  ASSERT_TRUE(st.ok()) << st.msg;
  std::vector<float> logits(activations_logits(a), activations_logits(a) + (size_t)N * c.vocab_size);
  // Every quantized projection input (codes and steps), in the order the
  // reference quantizes: per layer q/k/v, o_proj, gate/up, down_proj.
  std::vector<float> quant;
  {
    int bq, bo, bg, bd;
    projection_bits(c, &bq, &bo, &bg, &bd);
    const int D = c.dim, Qd = c.n_heads * c.head_dim, F = c.ffn_dim;
    for (int l = 0; l < c.n_layers; l++) {
      const LayerActs& la = a->layers[l];
      const struct {
        int bits, cols;
        const float *codes, *steps;
      } sites[] = {{bq, D, la.xq_attn, la.xs_attn}, {bo, Qd, la.xq_o, la.xs_o}, {bg, D, la.xq_ffn, la.xs_ffn},
                   {bd, F, la.xq_down, la.xs_down}};
      for (const auto& q : sites) {
        if (!q.bits) continue;
        quant.insert(quant.end(), q.codes, q.codes + (size_t)N * q.cols);
        quant.insert(quant.end(), q.steps, q.steps + N);
      }
    }
  }
  const float loss = ce_loss_forward_backward(activations_logits(a), targets.data(), weights.data(), N,
                                              c.vocab_size, nullptr);
  model_zero_grads(&m);
  ASSERT_TRUE(model_backward(&m, a).ok());
  activations_destroy(a);

  // ---- hand the same case to the reference
  const std::string dir = bk_test::scratch_dir(std::string("reference_") + rc.name);
  std::string cfg = model_config_to_json(c);
  std::string params_json = "[";
  for (size_t i = 0; i < m.info.size(); i++) {
    const ParamInfo& p = m.info[i];
    params_json += (i ? "," : "") + std::string("{\"name\":\"") + p.name + "\",\"offset\":" + std::to_string(p.offset) +
                   ",\"rows\":" + std::to_string(p.rows) + ",\"cols\":" + std::to_string(p.cols) + "}";
  }
  params_json += "]";
  {
    std::ofstream f(dir + "/case.json");
    f << "{\"config\":" << cfg << ",\"batch\":" << B << ",\"seq\":" << T << ",\"rounding\":\""
      << (BITKD_QUANT_ROUND_HALF_EVEN ? "half_even" : "half_away") << "\",\"params\":" << params_json << "}";
  }
  ASSERT_TRUE(bk_test::write_raw(dir + "/params.bin", m.params)) << "write failed";
  ASSERT_TRUE(bk_test::write_raw(dir + "/tokens.bin", tokens)) << "write failed";
  ASSERT_TRUE(bk_test::write_raw(dir + "/mask.bin", mask)) << "write failed";
  ASSERT_TRUE(bk_test::write_raw(dir + "/targets.bin", targets)) << "write failed";
  ASSERT_TRUE(bk_test::write_raw(dir + "/weights.bin", weights)) << "write failed";
  ASSERT_TRUE(bk_test::write_raw(dir + "/quant.bin", quant)) << "write failed";
  std::string out;
  const std::string cmd =
      bk_test::torch_python() + " '" + bk_test::source_dir() + "/tests/reference/model_ref.py' '" + dir + "'";
  ASSERT_EQ(bk_test::run_command(cmd, &out), 0) << cmd << "\n" << out;

  std::vector<float> ref_logits = bk_test::read_raw<float>(dir + "/logits.bin");
  std::vector<float> ref_grads = bk_test::read_raw<float>(dir + "/grads.bin");
  ASSERT_EQ(ref_logits.size(), logits.size());
  ASSERT_EQ(ref_grads.size(), m.grads.size());
  double ref_loss = 0.0;
  {
    std::ifstream f(dir + "/loss.txt");
    f >> ref_loss;
  }
  // The reference quantizes its own values and compares the codes with ours
  // before it continues from ours (so a rounding tie cannot send the two
  // implementations down different paths): codes may differ only where the
  // reference's value lies within 1e-3 of a step of a rounding boundary, by
  // one step; the steps may differ by float rounding only.
  if (c.act_bits) {
    std::ifstream f(dir + "/quant_check.txt");
    long long codes = 0, mismatches = 0;
    double worst_tie = 0, worst_step = 0;
    f >> codes >> mismatches >> worst_tie >> worst_step;
    ASSERT_TRUE(f.good()) << dir << "/quant_check.txt unreadable";
    printf("  activation codes: %lld, %lld differ (each within %.2e of a tie), steps within %.2e\n", codes,
           mismatches, worst_tie, worst_step);
    EXPECT_GT(codes, 0);
    EXPECT_LE(worst_tie, 1e-3) << "a code differs away from a rounding tie";
    EXPECT_LE(mismatches, codes / 1000 + 1);
    EXPECT_LE(worst_step, 1e-5);
  }

  const double tol = 1e-4;
  printf("case %s (config %s)\n", rc.name, cfg.c_str());
  const double el = rel_err(logits.data(), ref_logits.data(), logits.size());
  const double eloss = std::fabs(loss - ref_loss) / std::fabs(ref_loss);
  printf("  %-44s rel err %.3e\n  %-44s rel err %.3e (bitkd %.7f, torch %.7f)\n", "logits", el, "loss", eloss,
         loss, ref_loss);
  EXPECT_LT(el, tol);
  EXPECT_LT(eloss, tol);
  double worst = 0.0;
  for (const ParamInfo& p : m.info) {
    const double e = rel_err(m.grads.data() + p.offset, ref_grads.data() + p.offset, p.numel);
    printf("  grad %-39s rel err %.3e\n", p.name.c_str(), e);
    worst = std::max(worst, e);
    EXPECT_LT(e, tol) << p.name;
  }
  printf("  worst gradient rel err %.3e\n", worst);
}

}  // namespace

TEST(Reference, FloatUntiedSwigluSublnGqa) {
  compare_with_torch({"float_untied_swiglu_subln_gqa", false, true, true, 2, WQ_NONE, 0, A4_HYBRID});
}
TEST(Reference, FloatTiedRelu2NoSubln) {
  compare_with_torch({"float_tied_relu2_nosubln", true, false, false, 4, WQ_NONE, 0, A4_HYBRID});
}
TEST(Reference, TernaryA8TiedSwigluSubln) {
  compare_with_torch({"ternary_a8_tied_swiglu_subln", true, true, true, 4, WQ_TERNARY, 8, A4_HYBRID});
}
TEST(Reference, TernaryA8UntiedRelu2NoSublnGqa) {
  compare_with_torch({"ternary_a8_untied_relu2_nosubln_gqa", false, false, false, 2, WQ_TERNARY, 8, A4_HYBRID});
}
TEST(Reference, TernaryA4HybridSwigluSubln) {
  compare_with_torch({"ternary_a4_hybrid_swiglu_subln", true, true, true, 2, WQ_TERNARY, 4, A4_HYBRID});
}
TEST(Reference, TernaryA4AllRelu2Subln) {
  compare_with_torch({"ternary_a4_all_relu2_subln", false, false, true, 4, WQ_TERNARY, 4, A4_ALL});
}
