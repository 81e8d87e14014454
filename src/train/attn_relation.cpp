// Attention-relation distillation (attn_relation.h).
#include "train/attn_relation.h"

#include <cmath>
#include <cstring>
#include <vector>

namespace bk {

namespace {

// One relation type (X = Q, K or V) with nh heads of width hd in rows of
// width nh * hd. Adds weight * d(sum of KL) / count to dx; returns the sum of
// KL over (row, head, query), each term computed per (row, head) in a fixed
// order and added serially, so the value does not depend on the thread count.
double relation_one(const float* xs, const float* xt, const uint8_t* mask, int B, int T, int nh, int hd,
                    double scale_grad, float* dx) {
  const int W = nh * hd;
  const double c = 1.0 / std::sqrt((double)hd);
  std::vector<double> part((size_t)B * nh, 0.0);
#pragma omp parallel
  {
    std::vector<double> ss(T), st(T), g(T);
#pragma omp for schedule(static)
    for (int bh = 0; bh < B * nh; bh++) {
      const int b = bh / nh, h = bh % nh;
      const float* S = xs + (size_t)b * T * W + (size_t)h * hd;
      const float* R = xt + (size_t)b * T * W + (size_t)h * hd;
      float* D = dx + (size_t)b * T * W + (size_t)h * hd;
      double kl_sum = 0;
      for (int i = 0; i < T; i++) {
        if (mask && !mask[(size_t)b * T + i]) continue;
        const float* si = S + (size_t)i * W;
        const float* ri = R + (size_t)i * W;
        double ms = -INFINITY, mt = -INFINITY;
        for (int j = 0; j <= i; j++) {
          if (mask && !mask[(size_t)b * T + j]) {
            ss[j] = st[j] = -INFINITY;
            continue;
          }
          const float* sj = S + (size_t)j * W;
          const float* rj = R + (size_t)j * W;
          double a = 0, t = 0;
          for (int k = 0; k < hd; k++) a += (double)si[k] * sj[k], t += (double)ri[k] * rj[k];
          ss[j] = a * c, st[j] = t * c;
          ms = std::max(ms, ss[j]), mt = std::max(mt, st[j]);
        }
        double zs = 0, zt = 0;
        for (int j = 0; j <= i; j++)
          if (std::isfinite(ss[j])) zs += std::exp(ss[j] - ms), zt += std::exp(st[j] - mt);
        const double lzs = std::log(zs) + ms, lzt = std::log(zt) + mt;
        for (int j = 0; j <= i; j++) {
          if (!std::isfinite(ss[j])) {
            g[j] = 0;
            continue;
          }
          const double lps = ss[j] - lzs, lpt = st[j] - lzt, pt = std::exp(lpt);
          kl_sum += pt * (lpt - lps);
          g[j] = (std::exp(lps) - pt) * scale_grad;  // d(KL_i)/d(score_ij), scaled
        }
        // score_ij = c x_i . x_j:  dx_i += c g_ij x_j,  dx_j += c g_ij x_i
        for (int j = 0; j <= i; j++) {
          if (g[j] == 0) continue;
          const float* sj = S + (size_t)j * W;
          float* dj = D + (size_t)j * W;
          float* di = D + (size_t)i * W;
          const double f = c * g[j];
          for (int k = 0; k < hd; k++) {
            di[k] += (float)(f * sj[k]);
            dj[k] += (float)(f * si[k]);
          }
        }
      }
      part[bh] = kl_sum;
    }
  }
  double total = 0;
  for (double p : part) total += p;
  return total;
}

}  // namespace

double attn_relation_forward_backward(const float* qs, const float* ks, const float* vs, const float* qt,
                                      const float* kt, const float* vt, const uint8_t* key_mask,
                                      const AttnRelationShape& s, float weight, float* dq, float* dk, float* dv) {
  const size_t N = (size_t)s.B * s.T;
  std::memset(dq, 0, sizeof(float) * N * s.H * s.hd);
  std::memset(dk, 0, sizeof(float) * N * s.KV * s.hd);
  std::memset(dv, 0, sizeof(float) * N * s.KV * s.hd);
  size_t queries = 0;
  for (size_t n = 0; n < N; n++) queries += !key_mask || key_mask[n];
  const double count = (double)queries * (s.H + 2.0 * s.KV);
  if (count == 0) return 0.0;
  const double gs = weight / count;
  double kl = relation_one(qs, qt, key_mask, s.B, s.T, s.H, s.hd, gs, dq);
  kl += relation_one(ks, kt, key_mask, s.B, s.T, s.KV, s.hd, gs, dk);
  kl += relation_one(vs, vt, key_mask, s.B, s.T, s.KV, s.hd, gs, dv);
  return kl / count;
}

}  // namespace bk
