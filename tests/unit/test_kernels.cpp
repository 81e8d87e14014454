// CPU kernels: finite-difference gradient checks for every op (the loss and
// the perturbation arithmetic in double, central differences on the float
// kernels), and the BitNet quantizers' value sets and edge cases.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>

#include "core/rng.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/ternary.h"
#include "train/loss.h"

using namespace bk;

namespace {

std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.0f) {
  Rng r;
  rng_seed(&r, seed);
  std::vector<float> v(n);
  for (auto& x : v) x = scale * rng_normal(&r);
  return v;
}

// sum_i r_i y_i in double: a scalar loss whose gradient w.r.t. y is r.
double dot_loss(const std::vector<float>& y, const std::vector<float>& r) {
  double s = 0.0;
  for (size_t i = 0; i < y.size(); i++) s += (double)y[i] * r[i];
  return s;
}

// Norm-wise relative error ||analytic - numeric|| / ||numeric|| of the
// central-difference gradient of loss() w.r.t. every entry of x.
double fd_rel_error(std::vector<float>& x, const std::vector<float>& analytic, const std::function<double()>& loss,
                    float h, const char* what) {
  double num2 = 0.0, diff2 = 0.0;
  for (size_t i = 0; i < x.size(); i++) {
    const float x0 = x[i];
    x[i] = x0 + h;
    const double dp = (double)x[i] - x0;
    const double lp = loss();
    x[i] = x0 - h;
    const double dm = (double)x0 - x[i];
    const double lm = loss();
    x[i] = x0;
    const double num = (lp - lm) / (dp + dm);
    num2 += num * num;
    diff2 += (num - analytic[i]) * (num - analytic[i]);
  }
  const double rel = std::sqrt(diff2) / std::max(std::sqrt(num2), 1e-30);
  printf("  grad check %-28s rel err %.3e\n", what, rel);
  return rel;
}

const double kTol = 2e-3;  // float kernels, h = 1e-2 .. 1e-3: the FD noise sits around 1e-5 .. 1e-4

}  // namespace

TEST(Kernels, LinearGrad) {
  const int n = 5, in = 7, out = 6;
  auto x = randn(n * in, 1), w = randn(out * in, 2), r = randn(n * out, 3);
  std::vector<float> y(n * out);
  auto loss = [&]() {
    matmul_forward(y.data(), x.data(), w.data(), n, in, out);
    return dot_loss(y, r);
  };
  std::vector<float> dx(n * in, 0.0f), dw(out * in, 0.0f);
  matmul_backward_dx(dx.data(), r.data(), w.data(), n, in, out, false);
  matmul_backward_dw(dw.data(), r.data(), x.data(), n, in, out);
  EXPECT_LT(fd_rel_error(x, dx, loss, 1e-2f, "linear dx"), kTol);
  EXPECT_LT(fd_rel_error(w, dw, loss, 1e-2f, "linear dW"), kTol);
  // accumulate flags
  std::vector<float> dx2(dx);
  matmul_backward_dx(dx2.data(), r.data(), w.data(), n, in, out, true);
  for (size_t i = 0; i < dx.size(); i++) EXPECT_NEAR(dx2[i], 2 * dx[i], 1e-5f);
  std::vector<float> dw2(dw);
  matmul_backward_dw(dw2.data(), r.data(), x.data(), n, in, out);
  for (size_t i = 0; i < dw.size(); i++) EXPECT_NEAR(dw2[i], 2 * dw[i], 1e-5f);
}

TEST(Kernels, RmsNormGrad) {
  const int n = 4, c = 24;
  auto x = randn(n * c, 10), g = randn(c, 11, 0.5f), r = randn(n * c, 12);
  for (auto& v : g) v += 1.0f;
  std::vector<float> y(n * c), rstd(n);
  auto loss = [&]() {
    rmsnorm_forward(y.data(), rstd.data(), x.data(), g.data(), n, c, 1e-5f);
    return dot_loss(y, r);
  };
  loss();
  std::vector<float> dx(n * c, 0.0f), dg(c, 0.0f);
  rmsnorm_backward(dx.data(), dg.data(), r.data(), x.data(), g.data(), rstd.data(), n, c, false);
  EXPECT_LT(fd_rel_error(x, dx, loss, 1e-2f, "rmsnorm dx"), kTol);
  EXPECT_LT(fd_rel_error(g, dg, loss, 1e-2f, "rmsnorm dg"), kTol);
  // accumulate = true adds to what is there
  std::vector<float> dx2(dx), dg2(c, 0.0f);
  rmsnorm_backward(dx2.data(), dg2.data(), r.data(), x.data(), g.data(), rstd.data(), n, c, true);
  for (size_t i = 0; i < dx.size(); i++) EXPECT_NEAR(dx2[i], 2 * dx[i], 1e-5f);
  // a zero row stays finite (rstd = 1/sqrt(eps))
  std::vector<float> z(c, 0.0f), zo(c);
  float zr;
  rmsnorm_forward(zo.data(), &zr, z.data(), g.data(), 1, c, 1e-5f);
  for (float v : zo) EXPECT_EQ(v, 0.0f);
  EXPECT_TRUE(std::isfinite(zr));
}

TEST(Kernels, RmsNormQuantFusedMatchesSeparate) {
  const int n = 6, c = 40;
  auto x = randn(n * c, 20), g = randn(c, 21);
  for (int bits : {8, 4}) {
    std::vector<float> a(n * c), b(n * c), ra(n), rb(n), sa(n), sb(n);
    rmsnorm_quant_forward(a.data(), sa.data(), ra.data(), x.data(), g.data(), n, c, 1e-5f, bits);
    rmsnorm_forward(b.data(), rb.data(), x.data(), g.data(), n, c, 1e-5f);
    quant_act_codes(b.data(), sb.data(), b.data(), n, c, bits);
    for (int i = 0; i < n * c; i++) ASSERT_EQ(a[i], b[i]) << "bits " << bits << " at " << i;
    EXPECT_EQ(sa, sb);
    EXPECT_EQ(ra, rb);
  }
}

TEST(Kernels, RopeGradAndConvention) {
  const int B = 2, T = 5, H = 3, d = 8, stride = H * d + 4;  // padded stride: only the heads are touched
  std::vector<float> cs(T * d / 2), sn(T * d / 2);
  rope_tables(cs.data(), sn.data(), T, d, 10000.0f);
  // convention: position 1, pair (0, d/2) rotated by angle 1 * theta^0 = 1 rad
  EXPECT_NEAR(cs[d / 2 + 0], std::cos(1.0), 1e-7);
  EXPECT_NEAR(sn[d / 2 + 1], std::sin(std::pow(10000.0, -2.0 / d)), 1e-7);
  auto x = randn(B * T * stride, 30), r = randn(B * T * stride, 31);
  for (int t = 0; t < B * T; t++)
    for (int j = H * d; j < stride; j++) r[t * stride + j] = 0.0f;
  {
    std::vector<float> y(x);
    rope_forward(y.data(), cs.data(), sn.data(), B, T, H, d, stride);
    const int tok = 1, h = 2, i = 1;  // batch 0, position 1
    const float* xv = &x[tok * stride + h * d];
    const float* yv = &y[tok * stride + h * d];
    const double a = 1.0 * std::pow(10000.0, -2.0 * i / d);
    EXPECT_NEAR(yv[i], xv[i] * std::cos(a) - xv[i + d / 2] * std::sin(a), 1e-5);
    EXPECT_NEAR(yv[i + d / 2], xv[i + d / 2] * std::cos(a) + xv[i] * std::sin(a), 1e-5);
    for (int j = H * d; j < stride; j++) EXPECT_EQ(y[tok * stride + j], x[tok * stride + j]);
    // position 0 is the identity
    for (int j = 0; j < H * d; j++) EXPECT_EQ(y[j], x[j]);
  }
  std::vector<float> y(x.size());
  auto loss = [&]() {
    y = x;
    rope_forward(y.data(), cs.data(), sn.data(), B, T, H, d, stride);
    return dot_loss(y, r);
  };
  std::vector<float> dx(r);
  rope_backward(dx.data(), cs.data(), sn.data(), B, T, H, d, stride);
  EXPECT_LT(fd_rel_error(x, dx, loss, 1e-2f, "rope dx"), kTol);
}

TEST(Kernels, AttentionGradWithMaskAndGqa) {
  const int B = 2, T = 6, H = 4, KV = 2, d = 8;
  // row 0: no padding; row 1: left padding (positions 0, 1) and one interior pad (4)
  std::vector<uint8_t> mask = {1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1};
  auto q = randn(B * T * H * d, 40), k = randn(B * T * KV * d, 41), v = randn(B * T * KV * d, 42);
  auto r = randn(B * T * H * d, 43);
  std::vector<float> out(B * T * H * d), att(B * H * T * T);
  auto loss = [&]() {
    attention_forward(out.data(), att.data(), q.data(), k.data(), v.data(), mask.data(), B, T, H, KV, d);
    return dot_loss(out, r);
  };
  loss();
  for (float o : out) ASSERT_TRUE(std::isfinite(o));
  // queries of row 1 at positions 0 and 1 see only padding: zero output
  for (int t = 0; t < 2; t++)
    for (int j = 0; j < H * d; j++) EXPECT_EQ(out[((1 * T) + t) * H * d + j], 0.0f);
  // probabilities: zero on padded and future keys, rows sum to 1 otherwise
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++)
      for (int t = 0; t < T; t++) {
        double s = 0.0;
        bool any = false;
        for (int t2 = 0; t2 < T; t2++) {
          float p = att[((b * H + h) * T + t) * T + t2];
          if (t2 > t || !mask[b * T + t2]) {
            EXPECT_EQ(p, 0.0f);
          }
          if (t2 <= t && mask[b * T + t2]) any = true;
          s += p;
        }
        EXPECT_NEAR(s, any ? 1.0 : 0.0, 1e-5);
      }
  std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
  attention_backward(dq.data(), dk.data(), dv.data(), r.data(), q.data(), k.data(), v.data(), att.data(), B, T, H,
                     KV, d);
  EXPECT_LT(fd_rel_error(q, dq, loss, 1e-2f, "attention dq"), kTol);
  EXPECT_LT(fd_rel_error(k, dk, loss, 1e-2f, "attention dk"), kTol);
  EXPECT_LT(fd_rel_error(v, dv, loss, 1e-2f, "attention dv"), kTol);
  // padded keys receive no gradient and do not influence any output
  for (int t : {0, 1, 4})
    for (int j = 0; j < KV * d; j++) {
      EXPECT_EQ(dk[(1 * T + t) * KV * d + j], 0.0f);
      EXPECT_EQ(dv[(1 * T + t) * KV * d + j], 0.0f);
    }
  loss();  // out at the unperturbed inputs (the checks above end on a perturbed call)
  std::vector<float> before(out);
  for (int j = 0; j < KV * d; j++) v[(1 * T + 4) * KV * d + j] += 100.0f, k[(1 * T + 4) * KV * d + j] -= 50.0f;
  loss();
  EXPECT_EQ(before, out);
  // no mask == all-ones mask
  std::vector<uint8_t> ones(B * T, 1);
  std::vector<float> o1(out.size()), o2(out.size()), a1(att.size()), a2(att.size());
  attention_forward(o1.data(), a1.data(), q.data(), k.data(), v.data(), nullptr, B, T, H, KV, d);
  attention_forward(o2.data(), a2.data(), q.data(), k.data(), v.data(), ones.data(), B, T, H, KV, d);
  EXPECT_EQ(o1, o2);
}

TEST(Kernels, SoftmaxGrad) {
  const int n = 3, c = 37;
  auto x = randn(n * c, 50, 3.0f), r = randn(n * c, 51);
  std::vector<float> y(n * c);
  auto loss = [&]() {
    y = x;
    softmax_forward(y.data(), n, c);
    return dot_loss(y, r);
  };
  loss();
  for (int i = 0; i < n; i++) {
    double s = 0;
    for (int j = 0; j < c; j++) s += y[i * c + j];
    EXPECT_NEAR(s, 1.0, 1e-6);
  }
  std::vector<float> dx(n * c);
  softmax_backward(dx.data(), r.data(), y.data(), n, c);
  EXPECT_LT(fd_rel_error(x, dx, loss, 1e-2f, "softmax dx"), kTol);
  // huge logits: no overflow
  std::vector<float> big = {1e4f, -1e4f, 1e4f, 0.0f};
  softmax_forward(big.data(), 1, 4);
  EXPECT_FLOAT_EQ(big[0], 0.5f);
  EXPECT_FLOAT_EQ(big[1], 0.0f);
}

TEST(Kernels, ExpMatchesLibm) {
  std::vector<float> x(1000);
  for (int i = 0; i < 1000; i++) x[i] = -87.0f + 0.0875f * i;
  std::vector<float> y(x);
  vec_exp_shift_sum(y.data(), y.size(), 0.0f);
  double worst = 0.0;
  for (int i = 0; i < 1000; i++) worst = std::max(worst, std::fabs(y[i] - std::exp((double)x[i])) / std::exp((double)x[i]));
  printf("  exp max rel err %.3e\n", worst);
  EXPECT_LT(worst, 5e-7);
}

TEST(Kernels, SwigluGrad) {
  const size_t n = 300;  // > one 256-element block, with a tail
  auto gate = randn(n, 60, 2.0f), up = randn(n, 61), r = randn(n, 62);
  std::vector<float> y(n);
  auto loss = [&]() {
    swiglu_forward(y.data(), gate.data(), up.data(), n);
    return dot_loss(y, r);
  };
  loss();
  for (size_t i = 0; i < n; i++) {
    double g = gate[i];
    EXPECT_NEAR(y[i], g / (1.0 + std::exp(-g)) * up[i], 1e-5);
  }
  std::vector<float> dg(n), du(n);
  swiglu_backward(dg.data(), du.data(), r.data(), gate.data(), up.data(), n);
  EXPECT_LT(fd_rel_error(gate, dg, loss, 1e-2f, "swiglu dgate"), kTol);
  EXPECT_LT(fd_rel_error(up, du, loss, 1e-2f, "swiglu dup"), kTol);
}

TEST(Kernels, Relu2Grad) {
  const size_t n = 200;
  auto x = randn(n, 70), r = randn(n, 71);
  for (auto& v : x)
    if (std::fabs(v) < 0.05f) v = 0.3f;  // keep away from the kink at 0
  std::vector<float> y(n);
  auto loss = [&]() {
    relu2_forward(y.data(), x.data(), n);
    return dot_loss(y, r);
  };
  loss();
  for (size_t i = 0; i < n; i++) EXPECT_FLOAT_EQ(y[i], x[i] > 0 ? x[i] * x[i] : 0.0f);
  std::vector<float> dx(n);
  relu2_backward(dx.data(), r.data(), x.data(), n);
  EXPECT_LT(fd_rel_error(x, dx, loss, 1e-2f, "relu2 dx"), kTol);
}

TEST(Kernels, CrossEntropyGrad) {
  const int n = 6, V = 50;
  auto z = randn(n * V, 80, 2.0f);
  std::vector<int32_t> t = {3, 49, 0, -1, 17, 17};
  std::vector<float> w = {1.0f, 0.5f, 2.0f, 0.0f, 1.0f, 0.0f};
  auto loss = [&]() {
    std::vector<float> tmp(z);
    return (double)ce_loss_forward_backward(tmp.data(), t.data(), w.data(), n, V, nullptr);
  };
  std::vector<float> g(z);
  float wsum = 0.0f;
  const float l = ce_loss_forward_backward(g.data(), t.data(), w.data(), n, V, &wsum);
  EXPECT_FLOAT_EQ(wsum, 4.5f);
  // direct formula in double
  double ref = 0.0;
  for (int i = 0; i < n; i++) {
    if (w[i] == 0.0f) continue;
    double mx = -1e30, s = 0.0;
    for (int j = 0; j < V; j++) mx = std::max(mx, (double)z[i * V + j]);
    for (int j = 0; j < V; j++) s += std::exp(z[i * V + j] - mx);
    ref += w[i] * (std::log(s) + mx - z[i * V + t[i]]);
  }
  ref /= 4.5;
  printf("  CE loss %.7f reference %.7f\n", l, ref);
  EXPECT_NEAR(l, ref, 1e-5 * std::fabs(ref));
  EXPECT_LT(fd_rel_error(z, g, loss, 1e-2f, "cross-entropy dlogits"), kTol);
  for (int j = 0; j < V; j++) {
    EXPECT_EQ(g[3 * V + j], 0.0f);  // ignored rows get zero gradient
    EXPECT_EQ(g[5 * V + j], 0.0f);
  }
  // no weights at all: loss 0, gradient 0, no NaN
  std::vector<float> zero_w(n, 0.0f), g0(z);
  const float l0 = ce_loss_forward_backward(g0.data(), t.data(), zero_w.data(), n, V, &wsum);
  EXPECT_EQ(l0, 0.0f);
  EXPECT_EQ(wsum, 0.0f);
  for (float v : g0) EXPECT_EQ(v, 0.0f);
  // extreme logits stay finite; nullptr weights = all ones
  std::vector<float> ext(2 * V, -3e4f);
  ext[7] = 3e4f;
  ext[V + 1] = 3e4f;
  std::vector<int32_t> te = {7, 0};
  const float le = ce_loss_forward_backward(ext.data(), te.data(), nullptr, 2, V, &wsum);
  EXPECT_TRUE(std::isfinite(le));
  EXPECT_NEAR(le, 3e4f, 1.0f);  // row 1: target 0 has logit -3e4 vs 3e4 -> CE 6e4, mean 3e4
  EXPECT_FLOAT_EQ(wsum, 2.0f);
  for (float v : ext) EXPECT_TRUE(std::isfinite(v));
}

// ---- quantizers ---------------------------------------------------------------------

TEST(Quant, TernaryValues) {
  auto w = randn(3000, 90, 0.05f);
  std::vector<float> wq(w.size());
  const float gamma = quant_ternary(wq.data(), w.data(), w.size());
  double s = 0.0;
  for (float v : w) s += std::fabs((double)v);
  EXPECT_FLOAT_EQ(gamma, (float)(s / w.size()));
  int counts[3] = {0, 0, 0};
  for (size_t i = 0; i < w.size(); i++) {
    ASSERT_TRUE(wq[i] == -gamma || wq[i] == 0.0f || wq[i] == gamma) << wq[i];
    counts[wq[i] < 0 ? 0 : (wq[i] == 0 ? 1 : 2)]++;
    // RoundClip: |w| / gamma below one half goes to 0, above to the sign
    const float ratio = w[i] / (gamma + kQuantEps);
    if (std::fabs(ratio) < 0.499f) {
      EXPECT_EQ(wq[i], 0.0f);
    }
    if (ratio > 0.501f) {
      EXPECT_EQ(wq[i], gamma);
    }
    if (ratio < -0.501f) {
      EXPECT_EQ(wq[i], -gamma);
    }
  }
  EXPECT_GT(counts[0], 0);
  EXPECT_GT(counts[1], 0);
  EXPECT_GT(counts[2], 0);
  std::vector<int8_t> codes(w.size());
  EXPECT_EQ(quant_ternary_codes(codes.data(), w.data(), w.size()), gamma);
  for (size_t i = 0; i < w.size(); i++) EXPECT_EQ(codes[i] * gamma, wq[i]);
  // in place, and all-zero tensors
  std::vector<float> z(100, 0.0f);
  EXPECT_EQ(quant_ternary(z.data(), z.data(), z.size()), 0.0f);
  for (float v : z) EXPECT_EQ(v, 0.0f);
}

// Float codes and steps come from the packed engine's row rule (act_quant_row_*),
// and the fake-quant values are code * step.
TEST(Quant, Int8Rows) {
  const int n = 5, c = 64;
  auto x = randn(n * c, 100, 2.0f);
  for (int j = 0; j < c; j++) x[3 * c + j] = 0.0f;   // zero row
  for (int j = 0; j < c; j++) x[4 * c + j] = -0.7f;  // constant row
  std::vector<float> q(n * c), step(n), xq(n * c);
  quant_act_codes(q.data(), step.data(), x.data(), n, c, 8);
  quant_act(xq.data(), x.data(), n, c, 8);
  for (int i = 0; i < n; i++) {
    float amax = 0.0f;
    for (int j = 0; j < c; j++) amax = std::max(amax, std::fabs(x[i * c + j]));
    const float s = 127.0f / std::max(amax, kQuantEps);
    EXPECT_EQ(step[i], 1.0f / s);
    std::vector<int8_t> qi(c);
    EXPECT_EQ(act_quant_row_i8(x.data() + i * c, c, qi.data(), nullptr), step[i]);
    for (int j = 0; j < c; j++) {
      const float k = q[i * c + j];
      ASSERT_EQ(k, (float)qi[j]);
      EXPECT_GE(k, -128.0f);
      EXPECT_LE(k, 127.0f);
      EXPECT_EQ(xq[i * c + j], k * step[i]);
      EXPECT_LE(std::fabs(xq[i * c + j] - x[i * c + j]), 0.5f / s * 1.0001f + 1e-7f);
    }
  }
  for (int j = 0; j < c; j++) EXPECT_EQ(xq[3 * c + j], 0.0f);
  for (int j = 0; j < c; j++) EXPECT_NEAR(xq[4 * c + j], -0.7f, 1e-6f);
}

TEST(Quant, Int4Rows) {
  const int n = 5, c = 64;
  auto x = randn(n * c, 110, 1.5f);
  for (int j = 0; j < c; j++) x[3 * c + j] = 0.0f;
  for (int j = 0; j < c; j++) x[4 * c + j] = 2.5f;
  x[2 * c + 5] = 40.0f;  // an outlier gets clipped to 7 steps
  std::vector<float> q(n * c), step(n), xq(n * c);
  quant_act_codes(q.data(), step.data(), x.data(), n, c, 4);
  quant_act(xq.data(), x.data(), n, c, 4);
  const float sqrt7 = std::sqrt(7.0f);
  for (int i = 0; i < n; i++) {
    double sum = 0.0;
    for (int j = 0; j < c; j++) sum += std::fabs(x[i * c + j]);
    const float b = (float)(sum / c);
    EXPECT_EQ(step[i], b / sqrt7);
    for (int j = 0; j < c; j++) {
      EXPECT_GE(q[i * c + j], -8.0f);
      EXPECT_LE(q[i * c + j], 7.0f);
      EXPECT_EQ(xq[i * c + j], q[i * c + j] * step[i]);
    }
  }
  EXPECT_EQ(q[2 * c + 5], 7.0f);
  for (int j = 0; j < c; j++) EXPECT_EQ(xq[3 * c + j], 0.0f);
  // a constant row c: round(sqrt7 * c / c) = 3 steps of c / sqrt7
  for (int j = 0; j < c; j++) EXPECT_EQ(q[4 * c + j], 3.0f);
  // bits 0 is a copy with unit steps
  std::vector<float> cp(n * c), ones(n);
  quant_act_codes(cp.data(), ones.data(), x.data(), n, c, 0);
  EXPECT_EQ(cp, x);
  for (float v : ones) EXPECT_EQ(v, 1.0f);
}

// The OpenMP paths (taken above the size thresholds) give the same results as
// one thread: no races, no order-dependent reductions in the gradients.
TEST(Kernels, ThreadedMatchesSingleThread) {
  const int B = 2, T = 128, H = 4, KV = 2, d = 16, N = B * T, C = 160, V = 1000;
  std::vector<uint8_t> mask(N, 1);
  for (int t = 0; t < 9; t++) mask[T + t] = 0;
  auto q = randn(N * H * d, 130), k = randn(N * KV * d, 131), v = randn(N * KV * d, 132), r = randn(N * H * d, 133);
  auto x = randn(N * C, 134), g = randn(C, 135), dy = randn(N * C, 136), z = randn(64 * V, 137);
  std::vector<int32_t> tg(64);
  for (int i = 0; i < 64; i++) tg[i] = (i * 37) % V;
  struct Out {
    std::vector<float> o, att, dq, dk, dv, xn, rs, dx, dg, dz;
    float loss;
  };
  auto run = [&](int threads) {
    kernels_set_threads(threads);
    Out o;
    o.o.resize(N * H * d), o.att.resize((size_t)B * H * T * T);
    attention_forward(o.o.data(), o.att.data(), q.data(), k.data(), v.data(), mask.data(), B, T, H, KV, d);
    o.dq.resize(q.size()), o.dk.resize(k.size()), o.dv.resize(v.size());
    attention_backward(o.dq.data(), o.dk.data(), o.dv.data(), r.data(), q.data(), k.data(), v.data(), o.att.data(),
                       B, T, H, KV, d);
    o.xn.resize(N * C), o.rs.resize(N);
    rmsnorm_quant_forward(o.xn.data(), nullptr, o.rs.data(), x.data(), g.data(), N, C, 1e-5f, 8);
    o.dx.assign(N * C, 0.0f), o.dg.assign(C, 0.0f);
    rmsnorm_backward(o.dx.data(), o.dg.data(), dy.data(), x.data(), g.data(), o.rs.data(), N, C, false);
    o.dz = z;
    o.loss = ce_loss_forward_backward(o.dz.data(), tg.data(), nullptr, 64, V, nullptr);
    return o;
  };
  Out one = run(1), two = run(2);
  kernels_set_threads(0);
  EXPECT_EQ(one.o, two.o);
  EXPECT_EQ(one.att, two.att);
  EXPECT_EQ(one.dq, two.dq);
  EXPECT_EQ(one.dk, two.dk);
  EXPECT_EQ(one.dv, two.dv);
  EXPECT_EQ(one.xn, two.xn);
  EXPECT_EQ(one.dx, two.dx);
  EXPECT_EQ(one.dg, two.dg);
  EXPECT_EQ(one.dz, two.dz);
  EXPECT_NEAR(one.loss, two.loss, 1e-6f * std::fabs(one.loss));
  // padded rows of batch 1: queries before the first real token output zeros
  for (int t = 0; t < 9; t++)
    for (int j = 0; j < H * d; j++) ASSERT_EQ(two.o[(size_t)(T + t) * H * d + j], 0.0f);
}

// attention_row computes every score with the same fixed-order dot product
// whether a key falls in a block of eight (the vector path) or in the tail:
// a query's output over n keys equals, bit for bit, a reference that sums
// each dot product lane by lane in that order (any n, any head size).
TEST(Kernels, AttentionRowScoresAreFixedOrderDots) {
  for (int d : {8, 16, 24, 64, 67}) {
    for (int n : {1, 7, 8, 9, 23, 64}) {
      auto q = randn(d, 300 + d), k = randn((size_t)n * d, 400 + n), v = randn((size_t)n * d, 500 + n);
      std::vector<float> out(d), probs(n), ref_scores(n);
      const float scale = 0.25f;
      attention_row(out.data(), probs.data(), q.data(), k.data(), v.data(), d, nullptr, n, d, scale);
      // The reference: lanes i % 8 over whole groups of 8, combined pairwise, then the tail.
      std::vector<float> e(n);
      for (int j = 0; j < n; j++) {
        float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int i = 0;
        for (; i + 8 <= d; i += 8)
          for (int l = 0; l < 8; l++) lane[l] = lane[l] + q[i + l] * k[(size_t)j * d + i + l];
        float s = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
        for (; i < d; i++) s = s + q[i] * k[(size_t)j * d + i];
        ref_scores[j] = s * scale;
      }
      // Same probabilities as softmax of the reference scores through the same helpers.
      std::vector<float> p = ref_scores;
      const float mx = vec_max(p.data(), n);
      const double sum = vec_exp_shift_sum(p.data(), n, mx);
      vec_scale(p.data(), n, (float)(1.0 / sum));
      ASSERT_EQ(probs, p) << "d " << d << " n " << n;
    }
  }
}
