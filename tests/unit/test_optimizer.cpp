// AdamW against a double-precision reference, decay masks, the LR schedule at
// its key steps, the two-stage recipe, clipping and the non-finite guard.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdio>

#include "core/rng.h"
#include "train/optimizer.h"

using namespace bk;

namespace {

ParamInfo pinfo(const char* name, size_t off, size_t n, ParamKind k) {
  ParamInfo p;
  p.name = name;
  p.offset = off;
  p.numel = n;
  p.rows = (int)n;
  p.cols = 1;
  p.kind = k;
  p.layer = -1;
  return p;
}

// embedding [0,4), norm [4,7), linear [7,13), head [13,15)
std::vector<ParamInfo> layout() {
  return {pinfo("emb", 0, 4, PARAM_EMBEDDING), pinfo("norm", 4, 3, PARAM_NORM), pinfo("lin", 7, 6, PARAM_LINEAR),
          pinfo("head", 13, 2, PARAM_HEAD)};
}
constexpr size_t N = 15;

// PyTorch AdamW (torch.optim.AdamW, single-tensor path) in double.
struct RefAdamW {
  std::vector<double> p, m, v;
  long t = 0;
  void step(const std::vector<double>& g, const std::vector<bool>& decay, double lr, double wd, double b1, double b2,
            double eps) {
    t++;
    for (size_t i = 0; i < p.size(); i++) {
      if (decay[i]) p[i] *= 1 - lr * wd;
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      double bc1 = 1 - std::pow(b1, (double)t), bc2 = 1 - std::pow(b2, (double)t);
      p[i] -= (lr / bc1) * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + eps);
    }
  }
};

}  // namespace

TEST(AdamW, MatchesDoubleReference) {
  AdamWConfig c;
  c.grad_clip = 0;  // clipping tested separately
  c.weight_decay = 0.1;
  Optimizer o;
  ASSERT_TRUE(optimizer_init(&o, c, layout(), N).ok());
  Rng r;
  rng_seed(&r, 7);
  std::vector<float> p(N), g(N);
  RefAdamW ref;
  ref.p.resize(N);
  ref.m.assign(N, 0);
  ref.v.assign(N, 0);
  for (size_t i = 0; i < N; i++) p[i] = rng_normal(&r), ref.p[i] = p[i];
  std::vector<bool> decay(N, false);
  for (size_t i = 7; i < 15; i++) decay[i] = true;  // linear + head
  double max_rel = 0;
  for (int step = 0; step < 5; step++) {
    std::vector<double> gd(N);
    for (size_t i = 0; i < N; i++) g[i] = rng_normal(&r) * (step + 1), gd[i] = g[i];
    double lr = 1e-2 * (step + 1);
    StepStats st = optimizer_step(&o, p.data(), g.data(), N, lr, 0.1, 1.0);
    ASSERT_FALSE(st.skipped);
    ref.step(gd, decay, lr, 0.1, 0.9, 0.95, 1e-8);
    for (size_t i = 0; i < N; i++) {
      double rel = std::fabs(p[i] - ref.p[i]) / std::max(1e-3, std::fabs(ref.p[i]));
      max_rel = std::max(max_rel, rel);
      EXPECT_NEAR(o.m[i], ref.m[i], 1e-5 * std::max(1.0, std::fabs(ref.m[i])));
      EXPECT_NEAR(o.v[i], ref.v[i], 1e-5 * std::max(1.0, std::fabs(ref.v[i])));
    }
  }
  std::printf("AdamW vs double reference, 5 steps: max relative error %.3g\n", max_rel);
  EXPECT_LT(max_rel, 2e-6);
  EXPECT_EQ(o.step, 5);
}

TEST(AdamW, DecayMasks) {
  for (int variant = 0; variant < 2; variant++) {
    AdamWConfig c;
    c.grad_clip = 0;
    c.decay_embedding = variant == 1;
    c.decay_norm = variant == 1;
    c.decay_head = variant == 0;
    Optimizer o;
    ASSERT_TRUE(optimizer_init(&o, c, layout(), N).ok());
    std::vector<float> p(N, 2.0f), g(N, 0.0f);
    // Zero gradients: Adam's step is 0, only decay moves the weights.
    optimizer_step(&o, p.data(), g.data(), N, 0.5, 0.1, 0.0);
    const float decayed = 2.0f * (float)(1.0 - 0.5 * 0.1);
    for (size_t i = 0; i < N; i++) {
      bool emb_or_norm = i < 7, head = i >= 13;
      bool want = variant == 0 ? !emb_or_norm : !head;
      EXPECT_EQ(p[i], want ? decayed : 2.0f) << "variant " << variant << " index " << i;
    }
  }
}

TEST(AdamW, ClipsToGlobalNorm) {
  AdamWConfig c;
  c.grad_clip = 1.0;
  Optimizer o;
  ASSERT_TRUE(optimizer_init(&o, c, layout(), N).ok());
  std::vector<float> p(N, 0.0f), g(N, 0.0f);
  g[0] = 6.0f;
  g[9] = 8.0f;  // norm 10
  StepStats st = optimizer_step(&o, p.data(), g.data(), N, 1e-3, 0.0, 1.0);
  EXPECT_DOUBLE_EQ(st.grad_norm, 10.0);
  EXPECT_NEAR(st.clip_scale, 1.0 / (10.0 + 1e-6), 1e-12);
  EXPECT_NEAR(g[0], 0.6f, 1e-6);
  EXPECT_NEAR(g[9], 0.8f, 1e-6);
  // m holds the clipped gradient: (1 - beta1) * 0.6
  EXPECT_NEAR(o.m[0], 0.1f * 0.6f, 1e-7);
  // Below the threshold nothing is scaled.
  std::vector<float> g2(N, 0.0f);
  g2[3] = 0.5f;
  st = optimizer_step(&o, p.data(), g2.data(), N, 1e-3, 0.0, 1.0);
  EXPECT_EQ(st.clip_scale, 1.0);
  EXPECT_EQ(g2[3], 0.5f);
}

TEST(AdamW, NonFiniteGuardSkipsAndCounts) {
  AdamWConfig c;
  Optimizer o;
  ASSERT_TRUE(optimizer_init(&o, c, layout(), N).ok());
  std::vector<float> p(N, 1.0f), g(N, 0.25f);
  optimizer_step(&o, p.data(), g.data(), N, 1e-2, 0.1, 1.0);
  std::vector<float> p0 = p, m0 = o.m, v0 = o.v;
  for (int kind = 0; kind < 3; kind++) {
    std::fill(g.begin(), g.end(), 0.5f);
    double loss = 1.0;
    if (kind == 0) g[5] = NAN;
    if (kind == 1) g[12] = INFINITY;
    if (kind == 2) loss = NAN;
    StepStats st = optimizer_step(&o, p.data(), g.data(), N, 1e-2, 0.1, loss);
    EXPECT_TRUE(st.skipped) << kind;
    for (size_t i = 0; i < N; i++) {
      EXPECT_EQ(g[i], 0.0f) << "grads are zeroed";
      EXPECT_EQ(p[i], p0[i]);
      EXPECT_EQ(o.m[i], m0[i]);
      EXPECT_EQ(o.v[i], v0[i]);
    }
  }
  EXPECT_EQ(o.skipped, 3);
  EXPECT_EQ(o.step, 1) << "skipped updates do not advance bias correction";
}

TEST(AdamW, GradNormIndependentOfThreads) {
  std::vector<float> g(1000003);
  Rng r;
  rng_seed(&r, 3);
  for (float& x : g) x = rng_normal(&r);
  int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  double a = grad_global_norm(g.data(), g.size());
  omp_set_num_threads(2);
  double b = grad_global_norm(g.data(), g.size());
  omp_set_num_threads(saved);
  EXPECT_EQ(a, b);
  EXPECT_NEAR(a, std::sqrt((double)g.size()), 0.01 * std::sqrt((double)g.size()));
}

TEST(AdamW, RejectsBadConfig) {
  Optimizer o;
  AdamWConfig c;
  c.beta2 = 1.0;
  EXPECT_FALSE(optimizer_init(&o, c, layout(), N).ok());
  c = AdamWConfig();
  EXPECT_FALSE(optimizer_init(&o, c, layout(), 10).ok()) << "tensor outside the buffer";
}

TEST(Schedule, CosineWarmupLinearConstant) {
  ScheduleConfig s;
  s.lr_peak = 1e-3;
  s.eta_min = 1e-4;
  s.warmup_steps = 10;
  s.t_max = 110;
  ASSERT_TRUE(schedule_validate(s).ok());
  EXPECT_DOUBLE_EQ(schedule_at(s, 0, 0.1).lr, 1e-4);  // (0 + 1) / 10 * peak
  EXPECT_DOUBLE_EQ(schedule_at(s, 4, 0.1).lr, 5e-4);
  EXPECT_DOUBLE_EQ(schedule_at(s, 9, 0.1).lr, 1e-3);
  EXPECT_DOUBLE_EQ(schedule_at(s, 10, 0.1).lr, 1e-3);   // decay starts at the peak
  EXPECT_NEAR(schedule_at(s, 60, 0.1).lr, 5.5e-4, 1e-15);  // halfway: (peak + eta_min) / 2
  EXPECT_NEAR(schedule_at(s, 35, 0.1).lr, 1e-4 + 9e-4 * 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-15);
  EXPECT_DOUBLE_EQ(schedule_at(s, 110, 0.1).lr, 1e-4);
  EXPECT_DOUBLE_EQ(schedule_at(s, 500, 0.1).lr, 1e-4);  // stays at eta_min
  EXPECT_EQ(schedule_at(s, 50, 0.1).weight_decay, 0.1);
  s.kind = SCHED_LINEAR;
  EXPECT_NEAR(schedule_at(s, 60, 0.1).lr, 5.5e-4, 1e-15);
  EXPECT_NEAR(schedule_at(s, 35, 0.1).lr, 1e-4 + 9e-4 * 0.75, 1e-15);
  s.kind = SCHED_CONSTANT;
  EXPECT_DOUBLE_EQ(schedule_at(s, 5, 0.1).lr, 6e-4);  // warmup still applies
  EXPECT_DOUBLE_EQ(schedule_at(s, 1000, 0.1).lr, 1e-3);
  // The PoC's setting: no warmup, CosineAnnealingLR(T_max=1000, eta_min=6e-5) with LR 6e-4.
  ScheduleConfig poc;
  EXPECT_DOUBLE_EQ(schedule_at(poc, 0, 0.1).lr, 6e-4);
  EXPECT_NEAR(schedule_at(poc, 250, 0.1).lr, 6e-5 + 5.4e-4 * 0.5 * (1 + std::cos(M_PI / 4)), 1e-15);
}

TEST(Schedule, TwoStage) {
  ScheduleConfig s;
  s.lr_peak = 1e-3;
  s.eta_min = 0;
  s.t_max = 100;
  s.two_stage = true;
  s.stage2_start = 50;
  s.stage2_lr_scale = 0.5;
  ASSERT_TRUE(schedule_validate(s).ok());
  ScheduleValue a = schedule_at(s, 49, 0.1), b = schedule_at(s, 50, 0.1);
  EXPECT_EQ(a.stage, 1);
  EXPECT_EQ(a.weight_decay, 0.1);
  EXPECT_NEAR(a.lr, 1e-3 * 0.5 * (1 + std::cos(M_PI * 0.49)), 1e-15);
  EXPECT_EQ(b.stage, 2);
  EXPECT_EQ(b.weight_decay, 0.0);
  EXPECT_NEAR(b.lr, 0.5e-3 * 0.5 * (1 + std::cos(M_PI * 0.5)), 1e-15);
  EXPECT_LT(b.lr, 0.6 * a.lr);  // abrupt drop at the stage boundary
  EXPECT_NEAR(schedule_at(s, 100, 0.1).lr, 0.0, 1e-18);
  // JSON round trip.
  ScheduleConfig back;
  ASSERT_TRUE(schedule_from_json(schedule_to_json(s), &back).ok());
  EXPECT_EQ(schedule_to_json(back), schedule_to_json(s));
  for (long step : {0L, 37L, 50L, 99L}) EXPECT_EQ(schedule_at(back, step, 0.1).lr, schedule_at(s, step, 0.1).lr);
}

TEST(Schedule, Validation) {
  ScheduleConfig s;
  s.lr_peak = -1;
  EXPECT_NE(schedule_validate(s).msg.find("LR"), std::string::npos);
  s = ScheduleConfig();
  s.eta_min = 1;
  EXPECT_NE(schedule_validate(s).msg.find("SCHEDULER_ETA_MIN"), std::string::npos);
  s = ScheduleConfig();
  s.t_max = 0;
  EXPECT_NE(schedule_validate(s).msg.find("SCHEDULER_TMAX"), std::string::npos);
  // A run shorter than its warmup is fine: warmup, then the floor.
  s = ScheduleConfig();
  s.warmup_steps = 10;
  s.t_max = 5;
  EXPECT_TRUE(schedule_validate(s).ok());
  EXPECT_DOUBLE_EQ(schedule_at(s, 4, 0.1).lr, 6e-4 * 0.5);
  EXPECT_DOUBLE_EQ(schedule_at(s, 10, 0.1).lr, s.eta_min);
  LrSchedule k;
  EXPECT_TRUE(lr_schedule_from_name("linear", &k));
  EXPECT_EQ(k, SCHED_LINEAR);
  EXPECT_FALSE(lr_schedule_from_name("exp", &k));
}
