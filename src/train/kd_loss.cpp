// Fused in-place KD loss (see kd_loss.h).
//
// Gradient, derived by hand. Write s = z / tau, S = sum_v exp(s_v - m),
// P_v = exp(s_v - m) / S, T = the set of top-K ids, S_o = sum_{v not in T}
// exp(s_v - m), and the student's bucket log-probabilities
//   log p_k = s_{id_k} - m - log S,        log p_o = log S_o - log S.
// Their derivatives with respect to s_v are
//   d log p_k / d s_v = [v = id_k] - P_v
//   d log p_o / d s_v = [v not in T] P_v / p_o - P_v = [v not in T] exp(s_v - m) / S_o - P_v.
// For any divergence D(log p) with g_b = dD / d log p_b and G = sum_b g_b:
//   dD/ds_v = g_k - p_k G                              (v = id_k)
//   dD/ds_v = exp(s_v - m) (g_o / S_o - G / S)         (v not in T)
// and dD/dz_v = dD/ds_v / tau. When p_o is floored it is a constant: g_o
// is taken as 0 in G and in the second line.
//   forward KL  D = sum_b q_b (log q_b - log p_b)              g_b = -q_b
//   reverse KL  D = sum_b p_b (log p_b - log q_b)              g_b = p_b (log p_b - log q_b + 1)
//   JSD         D = 1/2 KL(q || M) + 1/2 KL(p || M), M = (p + q) / 2
//                                                               g_b = 1/2 p_b (log p_b - log M_b)
// CE at temperature 1 adds w (softmax(z)_v - [v = target]) as usual. With
// per-position weights a = kd_weight (* tau^2) and w (CE), and the normaliser
// n_c, one row's gradient is
//   dz_v = (w / n_c) softmax(z)_v - (w / n_c) [v = target] + (a / n_c) dD/dz_v.
// The non-top part is c1 * exp(z_v - m) + c2 * exp((z_v - m) / tau): one combine
// pass over the vocab after the exponent passes; the K top ids and the target
// are patched afterwards.
#include "train/kd_loss.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/kernels.h"

namespace bk {

const char* kd_divergence_name(KdDivergence d) {
  switch (d) {
    case KD_FORWARD_KL: return "kl";
    case KD_REVERSE_KL: return "reverse_kl";
    case KD_JSD: return "jsd";
  }
  return "?";
}

bool kd_divergence_from_name(const std::string& name, KdDivergence* out) {
  if (name == "kl" || name == "forward_kl") *out = KD_FORWARD_KL;
  else if (name == "reverse_kl" || name == "rkl") *out = KD_REVERSE_KL;
  else if (name == "jsd") *out = KD_JSD;
  else return false;
  return true;
}

Status kd_loss_config_validate(const KdLossConfig& c) {
  if (!(c.tau > 0) || !std::isfinite(c.tau)) return errorf("KD_TAU=%g must be a positive number", c.tau);
  struct W {
    const char* name;
    float v;
  };
  for (W w : {W{"KD_WEIGHT", c.kd_weight}, W{"KD_CE_WEIGHT", c.ce_weight}, W{"FORMAT_LOSS_WEIGHT", c.format_weight},
              W{"KD_PLAIN_CE_WEIGHT", c.plain_ce_weight}})
    if (!(w.v >= 0) || !std::isfinite(w.v)) return errorf("%s=%g must be a finite number >= 0", w.name, w.v);
  return ok_status();
}

namespace {

// One position's KD bucket after dropping empty slots and merging duplicates.
struct Bucket {
  std::vector<int32_t> ids;
  std::vector<double> lq;  // teacher logprobs (floored, merged)
  double lo = 0;           // teacher other logprob (floored)
  int dups = 0;
};

double log_add(double a, double b) {
  const double hi = std::max(a, b), lo = std::min(a, b);
  return hi + std::log1p(std::exp(lo - hi));
}

// False when the bucket cannot be used (non-finite teacher value, bad id).
bool prepare_bucket(const KdTargets& t, int i, int vocab, Bucket* b) {
  b->ids.clear();
  b->lq.clear();
  b->dups = 0;
  const float lo = t.other_logprob ? t.other_logprob[i] : 0.0f;
  if (std::isnan(lo) || lo == INFINITY) return false;
  b->lo = std::max((double)lo, kKdTeacherLogFloor);
  for (int k = 0; k < t.K; k++) {
    const int32_t id = t.topk_ids[(size_t)i * t.K + k];
    if (id == -1) continue;
    if (id < 0 || id >= vocab) return false;
    const float lp = t.topk_logprobs[(size_t)i * t.K + k];
    if (std::isnan(lp) || lp == INFINITY) return false;
    const double l = std::max((double)lp, kKdTeacherLogFloor);
    size_t j = 0;
    while (j < b->ids.size() && b->ids[j] != id) j++;
    if (j < b->ids.size()) {
      b->lq[j] = log_add(b->lq[j], l);
      b->dups++;
    } else {
      b->ids.push_back(id);
      b->lq.push_back(l);
    }
  }
  return true;
}

struct RowKinds {
  bool has_t;     // a target inside the vocabulary
  bool want_kd;   // kd_mask set: a KD bucket was given
  bool kd_ok;     // ... and it is usable
  bool kd_train;  // ... and trained (kd_weight > 0)
  bool contrib;   // counts in the normaliser
  bool is_struct;
  double w_ce;
};

RowKinds classify(const KdTargets& t, int i, int vocab, const KdLossConfig& c, Bucket* b) {
  RowKinds r;
  const int32_t tg = t.targets ? t.targets[i] : -1;
  r.has_t = tg >= 0 && tg < vocab;
  r.want_kd = t.kd_mask && t.kd_mask[i] && t.K > 0 && t.topk_ids && t.topk_logprobs;
  r.kd_ok = r.want_kd && prepare_bucket(t, i, vocab, b);
  r.kd_train = r.kd_ok && c.kd_weight > 0;
  r.is_struct = r.kd_ok && t.is_struct && t.is_struct[i];
  r.w_ce = r.kd_train ? (double)c.ce_weight + (r.is_struct ? (double)c.format_weight : 0.0) : (double)c.plain_ce_weight;
  r.contrib = (r.has_t && r.w_ce > 0) || r.kd_train;
  return r;
}

}  // namespace

void kd_loss_forward_backward(float* logits, int vocab, const KdTargets& t, const KdLossConfig& c,
                              KdLossParts* out) {
  *out = KdLossParts();
  const int n = t.n;
  const double tau = c.tau, inv_tau = 1.0 / tau;
  const float inv_tau_f = (float)inv_tau;
  const bool same_temp = c.tau == 1.0f;
  const double kdw = (double)c.kd_weight * (c.tau2_scale ? tau * tau : 1.0);

  // Pass 1: the normaliser.
  int64_t n_c = 0;
  {
    Bucket b;
    for (int i = 0; i < n; i++) n_c += classify(t, i, vocab, c, &b).contrib;
  }
  const double inv_n = n_c > 0 ? 1.0 / (double)n_c : 0.0;

  double loss = 0, kd_term = 0, ce_term = 0, fmt_term = 0, kd_sum = 0, ce_sum = 0, fmt_sum = 0;
  int64_t kd_pos = 0, ce_pos = 0, st_pos = 0, bad_kd = 0, dups = 0, clamped_n = 0;

#pragma omp parallel reduction(+ : loss, kd_term, ce_term, fmt_term, kd_sum, ce_sum, fmt_sum, kd_pos, ce_pos, \
                                   st_pos, bad_kd, dups, clamped_n) if ((size_t)n * vocab > 32768)
  {
    Bucket b;
    std::vector<float> u;  // [vocab] scratch: exp(z/tau - m/tau) (only when tau != 1)
    std::vector<double> ztop, a, e, lp, lq, g;
#pragma omp for schedule(static)
    for (int i = 0; i < n; i++) {
      float* z = logits + (size_t)i * vocab;  // [vocab]
      const RowKinds r = classify(t, i, vocab, c, &b);
      if (r.want_kd && !r.kd_ok) bad_kd++;
      if (!r.has_t && !r.kd_ok) {
        memset(z, 0, sizeof(float) * vocab);
        continue;
      }
      const int32_t tg = r.has_t ? t.targets[i] : -1;
      const double cce = (r.contrib && r.has_t) ? r.w_ce * inv_n : 0.0;  // CE gradient scale

      if (!r.kd_ok) {
        // Plain CE row.
        const float m = vec_max(z, vocab);
        const float zt = z[tg];
        const double s1 = vec_exp_shift_sum(z, vocab, m);
        const double ce = std::log(s1) + (double)m - (double)zt;
        ce_sum += ce;
        ce_pos++;
        if (r.contrib) {
          loss += r.w_ce * ce * inv_n;
          ce_term += r.w_ce * ce * inv_n;
          vec_scale(z, vocab, (float)(cce / s1));
          z[tg] -= (float)cce;
        } else {
          memset(z, 0, sizeof(float) * vocab);
        }
        continue;
      }

      // KD row.
      const int K = (int)b.ids.size();
      dups += b.dups;
      ztop.resize(K), a.resize(K), e.resize(K), lp.resize(K + 1), lq.resize(K + 1), g.resize(K + 1);
      const float m = vec_max(z, vocab);
      for (int k = 0; k < K; k++) ztop[k] = z[b.ids[k]];
      const double zt = r.has_t ? (double)z[tg] : 0.0;
      double s_oth = 0;
      if (!same_temp) {
        u.resize(vocab);
        float* uu = u.data();
        // (z - m) / tau rather than z / tau - m / tau: no overflow for tau < 1.
#pragma omp simd
        for (int v = 0; v < vocab; v++) uu[v] = (z[v] - m) * inv_tau_f;
        for (int k = 0; k < K; k++) uu[b.ids[k]] = -INFINITY;
        s_oth = vec_exp_shift_sum(uu, vocab, 0.0f);
      }
      for (int k = 0; k < K; k++) z[b.ids[k]] = -INFINITY;
      const double s1_oth = vec_exp_shift_sum(z, vocab, m);  // z <- exp(z - m), 0 at the top ids
      double s1 = s1_oth, s = 0;
      for (int k = 0; k < K; k++) {
        a[k] = std::exp(ztop[k] - (double)m);
        e[k] = same_temp ? a[k] : std::exp((ztop[k] - (double)m) * inv_tau);
        s1 += a[k];
      }
      if (same_temp) {
        s_oth = s1_oth;
        s = s1;
      } else {
        s = s_oth;
        for (int k = 0; k < K; k++) s += e[k];
      }
      const double log_s = std::log(s);
      // Student buckets (index K = other).
      for (int k = 0; k < K; k++) lp[k] = (ztop[k] - (double)m) * inv_tau - log_s;
      const bool clamped = !(s_oth / s >= kKdStudentOtherFloor);
      lp[K] = clamped ? std::log(kKdStudentOtherFloor) : std::log(s_oth) - log_s;
      clamped_n += clamped;
      // Teacher buckets: log-softmax of the logprobs / tau.
      double tmax = b.lo * inv_tau;
      for (int k = 0; k < K; k++) tmax = std::max(tmax, b.lq[k] * inv_tau);
      double tsum = std::exp(b.lo * inv_tau - tmax);
      for (int k = 0; k < K; k++) tsum += std::exp(b.lq[k] * inv_tau - tmax);
      const double tlse = tmax + std::log(tsum);
      for (int k = 0; k < K; k++) lq[k] = b.lq[k] * inv_tau - tlse;
      lq[K] = b.lo * inv_tau - tlse;
      // Divergence and its derivative with respect to each log p_b.
      double d = 0;
      for (int k = 0; k <= K; k++) {
        const double pb = std::exp(lp[k]), qb = std::exp(lq[k]);
        switch (c.divergence) {
          case KD_FORWARD_KL:
            d += qb * (lq[k] - lp[k]);
            g[k] = -qb;
            break;
          case KD_REVERSE_KL:
            d += pb * (lp[k] - lq[k]);
            g[k] = pb * (lp[k] - lq[k] + 1.0);
            break;
          case KD_JSD: {
            const double lm = log_add(lp[k], lq[k]) + std::log(0.5);
            d += 0.5 * (qb * (lq[k] - lm) + pb * (lp[k] - lm));
            g[k] = 0.5 * pb * (lp[k] - lm);
            break;
          }
        }
      }
      if (clamped) g[K] = 0;
      double gsum = 0;
      for (int k = 0; k <= K; k++) gsum += g[k];
      const double ce = r.has_t ? std::log(s1) + (double)m - zt : 0.0;

      kd_sum += d;
      kd_pos++;
      if (r.has_t) {
        ce_sum += ce;
        ce_pos++;
        if (r.is_struct) fmt_sum += ce, st_pos++;
      }
      if (!r.contrib) {
        memset(z, 0, sizeof(float) * vocab);
        continue;
      }
      const double akd = r.kd_train ? kdw * inv_n * inv_tau : 0.0;  // KD gradient scale (d/dz = d/ds / tau)
      if (r.kd_train) {
        loss += kdw * d * inv_n;
        kd_term += kdw * d * inv_n;
      }
      if (r.has_t) {
        const double wf = (r.kd_train && r.is_struct) ? (double)c.format_weight : 0.0;
        loss += r.w_ce * ce * inv_n;
        ce_term += (r.w_ce - wf) * ce * inv_n;
        fmt_term += wf * ce * inv_n;
      }
      const double c1 = cce / s1;
      const double c2 = clamped ? -akd * gsum / s : akd * (g[K] / s_oth - gsum / s);
      if (same_temp) {
        vec_scale(z, vocab, (float)(c1 + c2));
      } else {
        const float f1 = (float)c1, f2 = (float)c2;
        const float* uu = u.data();
#pragma omp simd
        for (int v = 0; v < vocab; v++) z[v] = f1 * z[v] + f2 * uu[v];
      }
      for (int k = 0; k < K; k++) z[b.ids[k]] = (float)(c1 * a[k] + akd * (g[k] - std::exp(lp[k]) * gsum));
      if (r.has_t) z[tg] -= (float)cce;
    }
  }
  out->loss = loss;
  out->kd_term = kd_term;
  out->ce_term = ce_term;
  out->format_term = fmt_term;
  out->kd_mean = kd_pos ? kd_sum / (double)kd_pos : 0.0;
  out->ce_mean = ce_pos ? ce_sum / (double)ce_pos : 0.0;
  out->format_mean = st_pos ? fmt_sum / (double)st_pos : 0.0;
  out->positions = n_c;
  out->kd_positions = kd_pos;
  out->ce_positions = ce_pos;
  out->struct_positions = st_pos;
  out->bad_kd = bad_kd;
  out->duplicate_ids = dups;
  out->other_clamped = clamped_n;
}

}  // namespace bk
