// The fused KD loss (train/kd_loss.h) against a plain, unfused double
// precision implementation written here from docs/training.md (softmax over the
// whole vocabulary, p_other = 1 - sum p_k, explicit bucket lists, the buckets
// tempered afterwards), its gradient against central finite differences of
// that double loss, and both against an independent PyTorch reference
// (tests/reference/kd_loss_ref.py: the teacher's buckets from its full logits,
// autograd for the gradient).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "core/rng.h"
#include "kernels/cpu/kernels.h"
#include "train/kd_loss.h"
#include "train/loss.h"
#include "testutil/testutil.h"

using namespace bk;

namespace {

// A batch of positions in the layout the loss reads.
struct Case {
  int n = 0, V = 0, K = 0;
  std::vector<float> z;  // [n, V]
  std::vector<int32_t> targets;
  std::vector<uint8_t> kd_mask, is_struct;
  std::vector<int32_t> ids;
  std::vector<float> lps, other;
  KdTargets view() const {
    KdTargets t;
    t.n = n, t.K = K;
    t.targets = targets.data();
    t.kd_mask = kd_mask.data();
    t.is_struct = is_struct.data();
    t.topk_ids = ids.data();
    t.topk_logprobs = lps.data();
    t.other_logprob = other.data();
    return t;
  }
};

// Teacher top-K over `kk` distinct random ids with a random distribution;
// `mass` of it on the listed ids, the rest on "other".
void set_bucket(Case* c, int i, Rng* r, int kk, double mass) {
  std::vector<double> w(kk);
  double s = 0;
  for (auto& x : w) s += (x = std::exp(2.0 * rng_normal(r)));
  std::vector<int32_t> chosen;
  while ((int)chosen.size() < kk) {
    int32_t id = (int32_t)rng_below(r, c->V);
    bool dup = false;
    for (int32_t x : chosen) dup |= x == id;
    if (!dup) chosen.push_back(id);
  }
  for (int k = 0; k < c->K; k++) {
    if (k < kk) {
      c->ids[(size_t)i * c->K + k] = chosen[k];
      c->lps[(size_t)i * c->K + k] = (float)std::log(mass * w[k] / s);
    } else {
      c->ids[(size_t)i * c->K + k] = -1;
      c->lps[(size_t)i * c->K + k] = 0.0f;
    }
  }
  c->other[i] = (float)std::log(std::max(1.0 - mass, 1e-6));
  c->kd_mask[i] = 1;
}

// n positions of random logits (scale zscale) with no target and no bucket.
Case blank_case(int n, int V, int K, uint64_t seed, float zscale, Rng* r) {
  Case c;
  c.n = n, c.V = V, c.K = K;
  rng_seed(r, seed);
  c.z.resize((size_t)c.n * V);
  for (auto& x : c.z) x = zscale * rng_normal(r);
  c.targets.assign(c.n, -1);
  c.kd_mask.assign(c.n, 0);
  c.is_struct.assign(c.n, 0);
  c.ids.assign((size_t)c.n * K, -1);
  c.lps.assign((size_t)c.n * K, 0.0f);
  c.other.assign(c.n, 0.0f);
  return c;
}

// Positions: 0 prompt (no target), 1 CE only, 2 KD full K, 3 KD with padded
// slots + struct, 4 KD invalid (NaN other -> CE only), 5 padding, 6 KD with a
// duplicate id, 7 KD struct, 8 KD without a target.
Case make_case(int V, int K, uint64_t seed, float zscale = 2.0f) {
  Rng r;
  Case c = blank_case(9, V, K, seed, zscale, &r);
  for (int i = 1; i < c.n; i++) c.targets[i] = (int32_t)rng_below(&r, V);
  c.targets[5] = -1;
  c.targets[8] = -1;
  set_bucket(&c, 2, &r, K, 0.9);
  set_bucket(&c, 3, &r, K / 2, 0.7);
  c.is_struct[3] = 1;
  set_bucket(&c, 4, &r, K, 0.8);
  c.other[4] = NAN;
  set_bucket(&c, 6, &r, K - 1, 0.95);
  c.ids[6 * K + K - 1] = c.ids[6 * K + 0];  // duplicate of slot 0
  c.lps[6 * K + K - 1] = -3.0f;
  set_bucket(&c, 7, &r, K, 0.99);
  c.is_struct[7] = 1;
  set_bucket(&c, 8, &r, K, 0.5);
  // The teacher's sampled token is usually in its top-K.
  c.targets[2] = c.ids[2 * K + 1];
  c.targets[7] = c.ids[7 * K + 0];
  return c;
}

// ---- the unfused reference, in double ---------------------------------------
struct RefOut {
  double loss = 0, kd_mean = 0, ce_mean = 0;
  int64_t positions = 0, kd_positions = 0, bad = 0;
};

RefOut ref_loss(const Case& c, const std::vector<double>& z, const KdLossConfig& cfg) {
  const double tau = cfg.tau;
  const double kdw = cfg.kd_weight * (cfg.tau2_scale ? tau * tau : 1.0);
  struct Pos {
    bool has_t, kd, train, contrib, st;
    double w;
    std::vector<int> ids;
    std::vector<double> lq;
    double lo;
  };
  std::vector<Pos> ps(c.n);
  RefOut o;
  for (int i = 0; i < c.n; i++) {
    Pos& p = ps[i];
    p.has_t = c.targets[i] >= 0 && c.targets[i] < c.V;
    p.kd = c.kd_mask[i] != 0;
    p.lo = c.other[i];
    if (p.kd && (std::isnan(p.lo) || p.lo == INFINITY)) p.kd = false, o.bad++;
    if (p.kd) {
      for (int k = 0; k < c.K; k++) {
        int id = c.ids[(size_t)i * c.K + k];
        double l = c.lps[(size_t)i * c.K + k];
        if (id < 0) continue;
        l = std::max(l, kKdTeacherLogFloor);
        bool merged = false;
        for (size_t j = 0; j < p.ids.size(); j++)
          if (p.ids[j] == id) p.lq[j] = std::log(std::exp(p.lq[j]) + std::exp(l)), merged = true;
        if (!merged) p.ids.push_back(id), p.lq.push_back(l);
      }
      p.lo = std::max(p.lo, kKdTeacherLogFloor);
    }
    p.train = p.kd && cfg.kd_weight > 0;
    p.st = p.kd && c.is_struct[i];
    p.w = (p.train ? cfg.ce_weight : cfg.plain_ce_weight) + (p.st ? cfg.format_weight : 0.0);
    p.contrib = (p.has_t && p.w > 0) || p.train;
    o.positions += p.contrib;
  }
  double sum = 0, kd_sum = 0, ce_sum = 0;
  int64_t ce_n = 0;
  for (int i = 0; i < c.n; i++) {
    const Pos& p = ps[i];
    const double* zi = z.data() + (size_t)i * c.V;
    if (p.has_t) {
      double mx = -1e300, s = 0;
      for (int v = 0; v < c.V; v++) mx = std::max(mx, zi[v]);
      for (int v = 0; v < c.V; v++) s += std::exp(zi[v] - mx);
      const double ce = std::log(s) + mx - zi[c.targets[i]];
      ce_sum += ce, ce_n++;
      if (p.contrib) sum += p.w * ce;
    }
    if (!p.kd) continue;
    // Student: full softmax at temperature 1, buckets picked out of it.
    std::vector<double> P(c.V);
    double mx = -1e300, s = 0;
    for (int v = 0; v < c.V; v++) mx = std::max(mx, zi[v]);
    for (int v = 0; v < c.V; v++) s += (P[v] = std::exp(zi[v] - mx));
    for (auto& x : P) x /= s;
    const int K = (int)p.ids.size();
    std::vector<double> pb(K + 1), qb(K + 1);
    double top = 0;
    for (int k = 0; k < K; k++) top += (pb[k] = P[p.ids[k]]);
    pb[K] = std::max(1.0 - top, kKdStudentOtherFloor);
    // Teacher: the bucket masses.
    for (int k = 0; k < K; k++) qb[k] = std::exp(p.lq[k]);
    qb[K] = std::exp(p.lo);
    // Both tempered the same way: mass^(1/tau), renormalised over the K+1 buckets.
    for (auto* m : {&pb, &qb}) {
      double t = 0;
      for (auto& x : *m) t += (x = std::pow(x, 1.0 / tau));
      for (auto& x : *m) x /= t;
    }
    double d = 0;
    for (int b = 0; b <= K; b++) {
      switch (cfg.divergence) {
        case KD_FORWARD_KL: d += qb[b] * std::log(qb[b] / pb[b]); break;
        case KD_REVERSE_KL: d += pb[b] * std::log(pb[b] / qb[b]); break;
        case KD_JSD: {
          const double m = 0.5 * (pb[b] + qb[b]);
          d += 0.5 * qb[b] * std::log(qb[b] / m) + 0.5 * pb[b] * std::log(pb[b] / m);
          break;
        }
      }
    }
    kd_sum += d;
    o.kd_positions++;
    if (p.train) sum += kdw * d;
  }
  o.loss = o.positions ? sum / o.positions : 0;
  o.kd_mean = o.kd_positions ? kd_sum / o.kd_positions : 0;
  o.ce_mean = ce_n ? ce_sum / ce_n : 0;
  return o;
}

std::vector<double> to_double(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

// Runs the fused loss on a copy of the logits; returns the gradient.
std::vector<float> fused(const Case& c, const KdLossConfig& cfg, KdLossParts* parts) {
  std::vector<float> g = c.z;
  kd_loss_forward_backward(g.data(), c.V, c.view(), cfg, parts);
  return g;
}

// Checks value and gradient of the fused loss against the reference and
// central differences of the reference (h in double). Returns the relative
// gradient error ||g - fd|| / ||fd||.
double check_case(const Case& c, const KdLossConfig& cfg, const char* what) {
  KdLossParts parts;
  std::vector<float> g = fused(c, cfg, &parts);
  std::vector<double> z = to_double(c.z);
  RefOut ref = ref_loss(c, z, cfg);
  EXPECT_EQ(parts.positions, ref.positions) << what;
  EXPECT_EQ(parts.kd_positions, ref.kd_positions) << what;
  EXPECT_EQ(parts.bad_kd, ref.bad) << what;
  EXPECT_NEAR(parts.loss, ref.loss, 1e-5 * std::max(1.0, std::fabs(ref.loss))) << what;
  EXPECT_NEAR(parts.kd_mean, ref.kd_mean, 1e-5 * std::max(1.0, std::fabs(ref.kd_mean))) << what;
  EXPECT_NEAR(parts.ce_mean, ref.ce_mean, 1e-5 * std::max(1.0, std::fabs(ref.ce_mean))) << what;
  EXPECT_NEAR(parts.kd_term + parts.ce_term + parts.format_term, parts.loss, 1e-9) << what;
  const double h = 1e-5;
  double num2 = 0, diff2 = 0, maxabs = 0;
  for (size_t j = 0; j < z.size(); j++) {
    const double z0 = z[j];
    z[j] = z0 + h;
    const double lp = ref_loss(c, z, cfg).loss;
    z[j] = z0 - h;
    const double lm = ref_loss(c, z, cfg).loss;
    z[j] = z0;
    const double fd = (lp - lm) / (2 * h);
    num2 += fd * fd;
    diff2 += (g[j] - fd) * (g[j] - fd);
    maxabs = std::max(maxabs, std::fabs(g[j] - fd));
    EXPECT_TRUE(std::isfinite(g[j])) << what << " entry " << j;
  }
  const double rel = std::sqrt(diff2 / std::max(num2, 1e-300));
  printf("[kd_loss] %-34s loss %.6f (ref %.6f) grad rel err %.3e max abs %.3e\n", what, parts.loss, ref.loss, rel,
         maxabs);
  EXPECT_LT(rel, 1e-4) << what;
  return rel;
}

TEST(KdLoss, ForwardKlMatchesReferenceAndFiniteDifferences) {
  Case c = make_case(37, 6, 1);
  KdLossConfig cfg;  // kl, tau 1.3, ce 0.25, format 0.2
  check_case(c, cfg, "kl tau=1.3");
  KdLossParts parts;
  fused(c, cfg, &parts);
  EXPECT_EQ(parts.duplicate_ids, 1);
  EXPECT_EQ(parts.bad_kd, 1);  // position 4 (NaN other) fell back to CE
  EXPECT_EQ(parts.struct_positions, 2);
  EXPECT_EQ(parts.positions, 7);  // 1,2,3,4,6,7 with targets + 8 (KD only)
}

TEST(KdLoss, TemperatureOneTakesTheSinglePassPath) {
  Case c = make_case(37, 6, 2);
  KdLossConfig cfg;
  cfg.tau = 1.0f;
  check_case(c, cfg, "kl tau=1");
}

TEST(KdLoss, ReverseKlAndJsd) {
  Case c = make_case(41, 5, 3);
  KdLossConfig cfg;
  cfg.divergence = KD_REVERSE_KL;
  check_case(c, cfg, "reverse_kl tau=1.3");
  cfg.divergence = KD_JSD;
  check_case(c, cfg, "jsd tau=1.3");
  cfg.tau = 0.7f;
  check_case(c, cfg, "jsd tau=0.7");
  cfg.tau = 1.0f;
  cfg.divergence = KD_REVERSE_KL;
  check_case(c, cfg, "reverse_kl tau=1");
}

TEST(KdLoss, Tau2ScalingAndWeights) {
  Case c = make_case(37, 6, 4);
  KdLossConfig cfg;
  cfg.tau = 2.0f;
  cfg.tau2_scale = true;
  cfg.kd_weight = 0.7f;
  cfg.ce_weight = 0.1f;
  cfg.format_weight = 0.5f;
  cfg.plain_ce_weight = 0.3f;
  check_case(c, cfg, "kl tau=2 tau^2 weights");
  // tau^2 multiplies exactly the KD term.
  KdLossParts a, b;
  fused(c, cfg, &a);
  cfg.tau2_scale = false;
  fused(c, cfg, &b);
  EXPECT_NEAR(a.kd_term, 4.0 * b.kd_term, 1e-6 * std::fabs(a.kd_term));
  EXPECT_NEAR(a.ce_term, b.ce_term, 1e-12);
  EXPECT_NEAR(a.format_term, b.format_term, 1e-12);
}

TEST(KdLoss, LargerVocabularyMatches) {
  Case c = make_case(301, 20, 5, 3.0f);
  KdLossConfig cfg;
  check_case(c, cfg, "kl V=301 K=20");
}

TEST(KdLoss, KdWeightZeroIsPlainCrossEntropy) {
  Case c = make_case(37, 6, 6);
  KdLossConfig cfg;
  cfg.kd_weight = 0.0f;
  check_case(c, cfg, "kd_weight=0");
  // The format weight does not depend on the KD weight: the CE-only
  // baseline keeps it (positions 3 and 7 are structural).
  KdLossParts with_format;
  fused(c, cfg, &with_format);
  EXPECT_GT(with_format.format_term, 0.0);
  cfg.kd_weight = 1.0f;
  KdLossParts kd_on;
  fused(c, cfg, &kd_on);
  EXPECT_GT(kd_on.format_term, 0.0);
  cfg.kd_weight = 0.0f;
  cfg.format_weight = 0.0f;
  KdLossParts parts;
  std::vector<float> g = fused(c, cfg, &parts);
  // Same as the engine's CE with weight 1 on every target position.
  std::vector<float> g2 = c.z;
  std::vector<float> w(c.n);
  for (int i = 0; i < c.n; i++) w[i] = c.targets[i] >= 0 ? 1.0f : 0.0f;
  float ce = ce_loss_forward_backward(g2.data(), c.targets.data(), w.data(), c.n, c.V, nullptr);
  EXPECT_NEAR(parts.loss, ce, 1e-5);
  EXPECT_EQ(parts.kd_term, 0.0);
  for (size_t j = 0; j < g.size(); j++) ASSERT_NEAR(g[j], g2[j], 1e-6) << j;
  EXPECT_GT(parts.kd_mean, 0.0);  // the divergence is still measured
}

TEST(KdLoss, PaddedSlotsAndPositionsContributeExactlyNothing) {
  Case c = make_case(37, 6, 7);
  KdLossConfig cfg;
  KdLossParts a, b;
  std::vector<float> ga = fused(c, cfg, &a);
  Case d = c;
  // Garbage where nothing may be read: logprobs of empty slots, buckets of
  // positions without kd_mask, logits of padded/prompt rows.
  for (size_t j = 0; j < d.ids.size(); j++)
    if (d.ids[j] == -1) d.lps[j] = (j % 2) ? NAN : 5.0f;
  for (int i : {0, 5}) {
    for (int k = 0; k < d.K; k++) d.ids[(size_t)i * d.K + k] = 0, d.lps[(size_t)i * d.K + k] = NAN;
    d.other[i] = NAN;
    for (int v = 0; v < d.V; v++) d.z[(size_t)i * d.V + v] = 1e30f * ((v % 3) - 1);
  }
  std::vector<float> gb = fused(d, cfg, &b);
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(a.positions, b.positions);
  for (int i = 0; i < c.n; i++)
    for (int v = 0; v < c.V; v++) {
      const size_t j = (size_t)i * c.V + v;
      if (i == 0 || i == 5) ASSERT_EQ(gb[j], 0.0f) << "padded row " << i;
      else ASSERT_EQ(ga[j], gb[j]) << "row " << i << " id " << v;
    }
  // An extra empty slot on every position changes nothing either.
  Case e = c;
  e.K = c.K + 1;
  e.ids.assign((size_t)e.n * e.K, -1);
  e.lps.assign((size_t)e.n * e.K, 0.0f);
  for (int i = 0; i < c.n; i++)
    for (int k = 0; k < c.K; k++) {
      e.ids[(size_t)i * e.K + k + 1] = c.ids[(size_t)i * c.K + k];
      e.lps[(size_t)i * e.K + k + 1] = c.lps[(size_t)i * c.K + k];
    }
  KdLossParts ee;
  std::vector<float> ge = fused(e, cfg, &ee);
  EXPECT_EQ(ee.loss, a.loss);
  for (size_t j = 0; j < ga.size(); j++) ASSERT_EQ(ga[j], ge[j]) << j;
}

TEST(KdLoss, NothingToLearnGivesZero) {
  Case c = make_case(37, 6, 8);
  for (auto& t : c.targets) t = -1;
  for (auto& m : c.kd_mask) m = 0;
  KdLossParts p;
  std::vector<float> g = fused(c, KdLossConfig(), &p);
  EXPECT_EQ(p.loss, 0.0);
  EXPECT_EQ(p.positions, 0);
  for (float x : g) ASSERT_EQ(x, 0.0f);
}

TEST(KdLoss, NoNanOnExtremeInputs) {
  const int V = 29, K = 5;
  Case c;
  c.n = 6, c.V = V, c.K = K;
  c.z.assign((size_t)c.n * V, 0.0f);
  c.targets.assign(c.n, 3);
  c.kd_mask.assign(c.n, 1);
  c.is_struct.assign(c.n, 0);
  c.ids.assign((size_t)c.n * K, -1);
  c.lps.assign((size_t)c.n * K, 0.0f);
  c.other.assign(c.n, 0.0f);
  // 0: confident teacher (mass rounds to 1, other at the projection floor), confident student.
  c.ids[0] = 3, c.lps[0] = 0.0f, c.other[0] = -13.815510557964274f;
  c.z[3] = 60.0f;
  // 1: huge logits with a wide spread; teacher favours an unlikely id.
  for (int v = 0; v < V; v++) c.z[(size_t)1 * V + v] = (v % 2 ? 1e4f : -1e4f) * (v % 5);
  c.ids[1 * K] = 2, c.lps[1 * K] = -0.01f, c.other[1] = -5.0f;
  // 3: teacher -inf logprobs and -inf other, -9999 as OpenAI reports.
  c.ids[3 * K] = 1, c.lps[3 * K] = -INFINITY;
  c.ids[3 * K + 1] = 2, c.lps[3 * K + 1] = -9999.0f;
  c.ids[3 * K + 2] = 3, c.lps[3 * K + 2] = 0.0f;
  c.other[3] = -INFINITY;
  // 4: logits near float max.
  for (int v = 0; v < V; v++) c.z[(size_t)4 * V + v] = (v == 7) ? 3e38f : -3e38f;
  c.ids[4 * K] = 8, c.lps[4 * K] = -0.5f, c.other[4] = -1.0f;
  // 5: an empty bucket (all slots padded): only "other".
  c.other[5] = 0.0f;
  // 2: the student's mass entirely on the top-K ids (its other mass underflows to 0).
  for (int v = 0; v < V; v++) c.z[(size_t)2 * V + v] = (v < K) ? 50.0f : -150.0f;
  for (int k = 0; k < K; k++) c.ids[2 * K + k] = k, c.lps[2 * K + k] = -1.6094379f;
  c.other[2] = -13.8f;
  for (KdDivergence d : {KD_FORWARD_KL, KD_REVERSE_KL, KD_JSD})
    for (float tau : {1.0f, 1.3f, 0.5f}) {
      KdLossConfig cfg;
      cfg.divergence = d;
      cfg.tau = tau;
      cfg.tau2_scale = true;
      KdLossParts p;
      std::vector<float> g = fused(c, cfg, &p);
      EXPECT_TRUE(std::isfinite(p.loss)) << kd_divergence_name(d) << " tau " << tau;
      EXPECT_TRUE(std::isfinite(p.kd_mean));
      EXPECT_EQ(p.bad_kd, 0);
      EXPECT_GE(p.other_clamped, 1);  // rows 0 and 2: the student's other mass underflows
      for (size_t j = 0; j < g.size(); j++) ASSERT_TRUE(std::isfinite(g[j])) << kd_divergence_name(d) << " " << j;
    }
}

TEST(KdLoss, ConfidentStepNearTheFloorMatchesReference) {
  // Top-K covering almost all of the student's mass (p_other ~ 1e-9): the
  // masked exponent pass keeps p_other accurate where 1 - sum p_k cancels.
  const int V = 64, K = 4;
  Case c;
  c.n = 1, c.V = V, c.K = K;
  c.z.assign(V, -12.0f);
  c.targets = {0};
  c.kd_mask = {1};
  c.is_struct = {0};
  c.ids = {0, 1, 2, 3};
  c.lps = {-0.2f, -2.0f, -3.0f, -4.0f};
  c.other = {-9.0f};
  for (int k = 0; k < K; k++) c.z[k] = 8.0f - k;
  KdLossConfig cfg;
  cfg.tau = 1.0f;
  KdLossParts p;
  fused(c, cfg, &p);
  // Exact p_other in double from the non-top logits alone.
  double mx = 8.0, s = 0, so = 0;
  for (int v = 0; v < V; v++) s += std::exp(c.z[v] - mx);
  for (int v = K; v < V; v++) so += std::exp(c.z[v] - mx);
  const double p_other = so / s;
  EXPECT_LT(p_other, 1e-7);
  // Rebuild the KL with that exact p_other.
  double lq[5], ts = 0;
  for (int k = 0; k < K; k++) ts += std::exp(c.lps[k]);
  ts += std::exp(c.other[0]);
  for (int k = 0; k < K; k++) lq[k] = c.lps[k] - std::log(ts);
  lq[K] = c.other[0] - std::log(ts);
  double kl = 0;
  for (int k = 0; k < K; k++) kl += std::exp(lq[k]) * (lq[k] - (c.z[k] - mx - std::log(s)));
  kl += std::exp(lq[K]) * (lq[K] - std::log(p_other));
  EXPECT_NEAR(p.kd_mean, kl, 1e-5 * kl);
  EXPECT_EQ(p.other_clamped, 0);
}

TEST(KdLoss, ThreadCountDoesNotChangeGradients) {
  Case c = make_case(3001, 20, 9);
  // Enough rows to go parallel.
  Case big = c;
  const int reps = 8;
  big.n = c.n * reps;
  big.z.clear(), big.targets.clear(), big.kd_mask.clear(), big.is_struct.clear();
  big.ids.clear(), big.lps.clear(), big.other.clear();
  for (int r = 0; r < reps; r++) {
    big.z.insert(big.z.end(), c.z.begin(), c.z.end());
    big.targets.insert(big.targets.end(), c.targets.begin(), c.targets.end());
    big.kd_mask.insert(big.kd_mask.end(), c.kd_mask.begin(), c.kd_mask.end());
    big.is_struct.insert(big.is_struct.end(), c.is_struct.begin(), c.is_struct.end());
    big.ids.insert(big.ids.end(), c.ids.begin(), c.ids.end());
    big.lps.insert(big.lps.end(), c.lps.begin(), c.lps.end());
    big.other.insert(big.other.end(), c.other.begin(), c.other.end());
  }
  const int saved = kernels_get_threads();
  kernels_set_threads(1);
  KdLossParts p1, p2;
  std::vector<float> g1 = fused(big, KdLossConfig(), &p1);
  kernels_set_threads(2);
  std::vector<float> g2 = fused(big, KdLossConfig(), &p2);
  kernels_set_threads(saved);
  EXPECT_NEAR(p1.loss, p2.loss, 1e-9 * std::fabs(p1.loss));
  for (size_t j = 0; j < g1.size(); j++) ASSERT_EQ(g1[j], g2[j]) << j;
}

TEST(KdLoss, ConfigValidationNamesTheVariable) {
  KdLossConfig c;
  c.tau = 0;
  EXPECT_NE(kd_loss_config_validate(c).msg.find("KD_TAU"), std::string::npos);
  c = KdLossConfig();
  c.ce_weight = -1;
  EXPECT_NE(kd_loss_config_validate(c).msg.find("KD_CE_WEIGHT"), std::string::npos);
  c = KdLossConfig();
  c.kd_weight = NAN;
  EXPECT_NE(kd_loss_config_validate(c).msg.find("KD_WEIGHT"), std::string::npos);
  EXPECT_TRUE(kd_loss_config_validate(KdLossConfig()).ok());
  KdDivergence d;
  EXPECT_TRUE(kd_divergence_from_name("jsd", &d));
  EXPECT_EQ(d, KD_JSD);
  EXPECT_FALSE(kd_divergence_from_name("mse", &d));
}

// A teacher's K+1 buckets from its full logits, in double: the K most
// likely ids and the log mass of the rest.
void buckets_from_logits(Case* c, int i, const float* zt) {
  std::vector<double> lp(c->V);
  double mx = -1e300, s = 0;
  for (int v = 0; v < c->V; v++) mx = std::max(mx, (double)zt[v]);
  for (int v = 0; v < c->V; v++) s += std::exp(zt[v] - mx);
  for (int v = 0; v < c->V; v++) lp[v] = zt[v] - mx - std::log(s);
  std::vector<int> order(c->V);
  for (int v = 0; v < c->V; v++) order[v] = v;
  std::partial_sort(order.begin(), order.begin() + c->K, order.end(), [&](int a, int b) { return lp[a] > lp[b]; });
  double rest = 0;
  for (int j = c->K; j < c->V; j++) rest += std::exp(lp[order[j]]);
  for (int k = 0; k < c->K; k++) {
    c->ids[(size_t)i * c->K + k] = order[k];
    c->lps[(size_t)i * c->K + k] = (float)lp[order[k]];
  }
  c->other[i] = (float)std::log(rest);
  c->kd_mask[i] = 1;
}

// A student whose logits equal the teacher's has nothing to learn: the
// divergence and its gradient are zero at every temperature (up to the float
// rounding of the teacher's logprobs, ~1e-7 relative, so the KL, quadratic in
// that error, stays below 1e-10).
TEST(KdLoss, IdenticalStudentHasZeroLossAndGradientAtEveryTau) {
  for (int V : {37, 301}) {
    const int K = V > 100 ? 20 : 6;
    Rng r;
    Case c = blank_case(4, V, K, 11 + V, 2.5f, &r);
    for (int i = 0; i < c.n; i++) buckets_from_logits(&c, i, c.z.data() + (size_t)i * V);
    for (float tau : {0.5f, 1.0f, 1.3f, 2.0f, 5.0f}) {
      KdLossConfig cfg;
      cfg.tau = tau;
      cfg.tau2_scale = true;
      KdLossParts p;
      std::vector<float> g = fused(c, cfg, &p);
      float gmax = 0;
      for (float x : g) gmax = std::max(gmax, std::fabs(x));
      printf("[kd_loss] identical student V=%d K=%d tau=%.1f: KL %.3e, max |grad| %.3e\n", V, K, tau, p.kd_mean,
             gmax);
      EXPECT_LT(p.kd_mean, 1e-10) << "V " << V << " tau " << tau;
      EXPECT_LT(gmax, 1e-5f) << "V " << V << " tau " << tau;
    }
  }
}

// ---- the independent PyTorch reference ------------------------------------------


TEST(KdLoss, MatchesPyTorchReferenceBuiltFromFullLogits) {
  std::string out;
  ASSERT_EQ(bk_test::run_command(bk_test::torch_python() + " -c 'import torch, numpy'", &out), 0)
      << bk_test::torch_python() << " cannot import torch/numpy: " << out
      << "\ninstall it with: bash scripts/setup.sh --test (Debian packages python3-torch python3-numpy)";
  const int n = 6, V = 53, K = 8;
  Rng r;
  rng_seed(&r, 77);
  std::vector<float> teacher((size_t)n * V), student((size_t)n * V);
  for (auto& x : teacher) x = 2.0f * rng_normal(&r);
  // A student near the teacher (as after some training) and one far from it.
  for (size_t j = 0; j < student.size(); j++)
    student[j] = j < (size_t)3 * V ? teacher[j] + 0.5f * rng_normal(&r) : 2.0f * rng_normal(&r);
  std::vector<int32_t> targets = {3, 17, -1, 40, 8, 21};
  std::vector<uint8_t> is_struct = {0, 1, 0, 1, 0, 0};
  struct Cfg {
    KdDivergence d;
    float tau, kd_weight;
    bool tau2;
  };
  const std::vector<Cfg> cfgs = {{KD_FORWARD_KL, 1.3f, 1.0f, false}, {KD_FORWARD_KL, 5.0f, 2.0f, true},
                                 {KD_FORWARD_KL, 1.0f, 1.0f, false}, {KD_REVERSE_KL, 0.7f, 1.0f, false},
                                 {KD_JSD, 2.0f, 1.0f, true},         {KD_FORWARD_KL, 1.3f, 0.0f, false}};
  const std::string dir = bk_test::scratch_dir("kd_loss_torch");
  {
    std::string js = "{\"n\":" + std::to_string(n) + ",\"V\":" + std::to_string(V) + ",\"K\":" + std::to_string(K) +
                     ",\"configs\":[";
    for (size_t j = 0; j < cfgs.size(); j++) {
      const KdLossConfig d;
      char buf[256];
      snprintf(buf, sizeof buf,
               "%s{\"divergence\":\"%s\",\"tau\":%.9g,\"kd_weight\":%.9g,\"tau2_scale\":%s,\"ce_weight\":%.9g,"
               "\"format_weight\":%.9g,\"plain_ce_weight\":%.9g}",
               j ? "," : "", kd_divergence_name(cfgs[j].d), cfgs[j].tau, cfgs[j].kd_weight,
               cfgs[j].tau2 ? "true" : "false", d.ce_weight, d.format_weight, d.plain_ce_weight);
      js += buf;
    }
    std::ofstream f(dir + "/case.json");
    f << js << "]}";
  }
  ASSERT_TRUE(bk_test::write_raw(dir + "/teacher.bin", teacher)) << "write failed";
  ASSERT_TRUE(bk_test::write_raw(dir + "/student.bin", student)) << "write failed";
  ASSERT_TRUE(bk_test::write_raw(dir + "/targets.bin", targets)) << "write failed";
  ASSERT_TRUE(bk_test::write_raw(dir + "/struct.bin", is_struct)) << "write failed";
  const std::string cmd =
      bk_test::torch_python() + " '" + bk_test::source_dir() + "/tests/reference/kd_loss_ref.py' '" + dir + "'";
  ASSERT_EQ(bk_test::run_command(cmd, &out), 0) << cmd << "\n" << out;

  Case c;
  c.n = n, c.V = V, c.K = K;
  c.z = student;
  c.targets = targets;
  c.is_struct = is_struct;
  c.kd_mask.assign(n, 1);
  c.ids = bk_test::read_raw<int32_t>(dir + "/ids.bin");
  c.lps = bk_test::read_raw<float>(dir + "/lps.bin");
  c.other = bk_test::read_raw<float>(dir + "/other.bin");
  ASSERT_EQ(c.ids.size(), (size_t)n * K);
  ASSERT_EQ(c.other.size(), (size_t)n);
  for (size_t j = 0; j < cfgs.size(); j++) {
    KdLossConfig cfg;
    cfg.divergence = cfgs[j].d;
    cfg.tau = cfgs[j].tau;
    cfg.kd_weight = cfgs[j].kd_weight;
    cfg.tau2_scale = cfgs[j].tau2;
    KdLossParts p;
    std::vector<float> g = fused(c, cfg, &p);
    double ref = 0;
    {
      std::ifstream f(dir + "/loss_" + std::to_string(j) + ".txt");
      f >> ref;
      ASSERT_TRUE(f.good()) << dir << "/loss_" << j << ".txt unreadable";
    }
    std::vector<float> rg = bk_test::read_raw<float>(dir + "/grad_" + std::to_string(j) + ".bin");
    ASSERT_EQ(rg.size(), g.size());
    double d2 = 0, n2 = 0;
    for (size_t k = 0; k < g.size(); k++) d2 += ((double)g[k] - rg[k]) * ((double)g[k] - rg[k]), n2 += (double)rg[k] * rg[k];
    const double rel = std::sqrt(d2 / std::max(n2, 1e-300));
    printf("[kd_loss] torch %-10s tau=%.1f w=%.1f%s: loss %.7f (torch %.7f), grad rel err %.2e\n",
           kd_divergence_name(cfg.divergence), cfg.tau, cfg.kd_weight, cfg.tau2_scale ? " tau^2" : "", p.loss, ref,
           rel);
    // The teacher's logprobs reach the fused loss as float: ~1e-7 relative.
    EXPECT_NEAR(p.loss, ref, 1e-5 * std::max(1.0, std::fabs(ref))) << "config " << j;
    EXPECT_LT(rel, 1e-4) << "config " << j;
  }
}

}  // namespace
