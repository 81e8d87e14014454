// Fused in-place KD loss (see kd_loss.h).
//
// Both sides' K+1 buckets are formed the same way: bucket masses at
// temperature 1, then tempered over the K+1 buckets. A student equal to the
// teacher therefore has zero loss and zero gradient at every tau.
//
// Gradient, derived by hand. Write S1 = sum_v exp(z_v - m), T = the set of
// top-K ids, S1_o = sum_{v not in T} exp(z_v - m), and the student's bucket
// log-masses at temperature 1
//   l_k = z_{id_k} - m - log S1,        l_o = log S1_o - log S1,
// with d l_k / d z_v = [v = id_k] - P1_v and
//      d l_o / d z_v = [v not in T] exp(z_v - m) / S1_o - P1_v   (P1 = softmax(z)).
// The tempered buckets are lp_b = l_b / tau - logsumexp_c(l_c / tau), p_b = exp(lp_b),
// so d lp_b / d l_c = ([b = c] - p_c) / tau. For any divergence D(lp) with
// g_b = dD / d lp_b and G = sum_b g_b, the derivative with respect to l_c is
//   h_c = (g_c - p_c G) / tau,
// and with H = sum_c h_c (0 up to rounding, since sum_c p_c = 1):
//   dD/dz_v = h_k - P1_{id_k} H                       (v = id_k)
//   dD/dz_v = exp(z_v - m) (h_o / S1_o - H / S1)      (v not in T)
// When p1_o is floored l_o is a constant: h_o is left out of H and of the
// second line.
//   forward KL  D = sum_b q_b (log q_b - log p_b)              g_b = -q_b
//   reverse KL  D = sum_b p_b (log p_b - log q_b)              g_b = p_b (log p_b - log q_b + 1)
//   JSD         D = 1/2 KL(q || M) + 1/2 KL(p || M), M = (p + q) / 2
//                                                               g_b = 1/2 p_b (log p_b - log M_b)
// CE at temperature 1 adds w (softmax(z)_v - [v = target]) as usual. With
// per-position weights a = kd_weight (* tau^2) and w (CE), and the normaliser
// n_c, one row's gradient is
//   dz_v = (w / n_c) softmax(z)_v - (w / n_c) [v = target] + (a / n_c) dD/dz_v.
// Both parts of a non-top entry are multiples of exp(z_v - m): one exponent
// pass and one scale pass over the vocab; the K top ids and the target are
// patched afterwards.

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

struct RowKinds {
  bool has_t;     // a target inside the vocabulary
  bool want_kd;   // kd_mask set: a KD bucket was given
  bool kd_ok;     // ... and it is usable
  bool kd_train;  // ... and trained (kd_weight > 0)
  bool contrib;   // counts in the normaliser
  bool is_struct;
  double w_ce;
};

// Every row's kind and KD bucket, prepared once. Row i's bucket (empty slots
// dropped, duplicates merged) is ids/lq[i*K .. i*K + nk[i]).
struct Rows {
  std::vector<RowKinds> kinds;
  std::vector<int32_t> ids;
  std::vector<double> lq;  // teacher logprobs (floored, merged)
  std::vector<double> lo;  // teacher other logprob (floored)
  std::vector<int> nk, dups;
};

double log_add(double a, double b) {
  const double hi = std::max(a, b), lo = std::min(a, b);
  return hi + std::log1p(std::exp(lo - hi));
}

// False when the bucket cannot be used (non-finite teacher value, bad id).
bool prepare_bucket(const KdTargets& t, int i, int vocab, Rows* rs) {
  int32_t* ids = rs->ids.data() + (size_t)i * t.K;
  double* lq = rs->lq.data() + (size_t)i * t.K;
  int nk = 0, dups = 0;
  const float lo = t.other_logprob ? t.other_logprob[i] : 0.0f;
  if (std::isnan(lo) || lo == INFINITY) return false;
  rs->lo[i] = std::max((double)lo, kKdTeacherLogFloor);
  for (int k = 0; k < t.K; k++) {
    const int32_t id = t.topk_ids[(size_t)i * t.K + k];
    if (id == -1) continue;
    if (id < 0 || id >= vocab) return false;
    const float lp = t.topk_logprobs[(size_t)i * t.K + k];
    if (std::isnan(lp) || lp == INFINITY) return false;
    const double l = std::max((double)lp, kKdTeacherLogFloor);
    int j = 0;
    while (j < nk && ids[j] != id) j++;
    if (j < nk) {
      lq[j] = log_add(lq[j], l);
      dups++;
    } else {
      ids[nk] = id;
      lq[nk++] = l;
    }
  }
  rs->nk[i] = nk;
  rs->dups[i] = dups;
  return true;
}

// The per-position weights of kd_loss.h. The format weight applies to every
// structural position with a target, whatever the KD weight, so the CE-only
// baseline (--kd-weight 0) changes only the KD term.
RowKinds classify(const KdTargets& t, int i, int vocab, const KdLossConfig& c, Rows* rs) {
  RowKinds r;
  const int32_t tg = t.targets ? t.targets[i] : -1;
  r.has_t = tg >= 0 && tg < vocab;
  r.want_kd = t.kd_mask && t.kd_mask[i] && t.K > 0 && t.topk_ids && t.topk_logprobs;
  r.kd_ok = r.want_kd && prepare_bucket(t, i, vocab, rs);
  r.kd_train = r.kd_ok && c.kd_weight > 0;
  r.is_struct = r.kd_ok && t.is_struct && t.is_struct[i];
  r.w_ce = (r.kd_train ? (double)c.ce_weight : (double)c.plain_ce_weight) +
           (r.is_struct ? (double)c.format_weight : 0.0);
  r.contrib = (r.has_t && r.w_ce > 0) || r.kd_train;
  return r;
}

// Phase 1: every row classified once; returns the normaliser n_c.
int64_t prepare_rows(const KdTargets& t, int vocab, const KdLossConfig& c, Rows* rs) {
  const size_t slots = (size_t)t.n * (size_t)std::max(t.K, 0);
  rs->kinds.resize(t.n);
  rs->ids.assign(slots, -1);
  rs->lq.assign(slots, 0.0);
  rs->lo.assign(t.n, 0.0);
  rs->nk.assign(t.n, 0);
  rs->dups.assign(t.n, 0);
  int64_t n_c = 0;
  for (int i = 0; i < t.n; i++) {
    rs->kinds[i] = classify(t, i, vocab, c, rs);
    n_c += rs->kinds[i].contrib;
  }
  return n_c;
}

// One row's share of KdLossParts; summed in row order at the end, so the
// loss does not depend on the thread count.
struct RowOut {
  double loss = 0, kd_term = 0, ce_term = 0, fmt_term = 0;
  double d = 0, ce = 0;  // unweighted divergence and CE
  bool kd_pos = false, ce_pos = false, st_pos = false, bad = false, clamped = false;
  int dups = 0;
};

// Per-thread scratch of one KD row (K+1 entries, index K = other).
struct Scratch {
  std::vector<double> ztop, a, l, lt, lp, lq, g, h;
  void resize(int K) {
    ztop.resize(K), a.resize(K);
    for (auto* v : {&l, &lt, &lp, &lq, &g, &h}) v->resize(K + 1);
  }
};

// out_b = l_b / tau - logsumexp_c(l_c / tau): masses tempered over the buckets.
void temper(const double* l, int nb, double inv_tau, double* out) {
  double mx = -INFINITY;
  for (int b = 0; b < nb; b++) mx = std::max(mx, l[b] * inv_tau);
  double sum = 0;
  for (int b = 0; b < nb; b++) sum += std::exp(l[b] * inv_tau - mx);
  const double lse = mx + std::log(sum);
  for (int b = 0; b < nb; b++) out[b] = l[b] * inv_tau - lse;
}

// D over nb buckets and g_b = dD / d lp_b.
double divergence(KdDivergence dv, const double* lp, const double* lq, int nb, double* g) {
  double d = 0;
  for (int b = 0; b < nb; b++) {
    const double pb = std::exp(lp[b]), qb = std::exp(lq[b]);
    switch (dv) {
      case KD_FORWARD_KL:
        d += qb * (lq[b] - lp[b]);
        g[b] = -qb;
        break;
      case KD_REVERSE_KL:
        d += pb * (lp[b] - lq[b]);
        g[b] = pb * (lp[b] - lq[b] + 1.0);
        break;
      case KD_JSD: {
        const double lm = log_add(lp[b], lq[b]) + std::log(0.5);
        d += 0.5 * (qb * (lq[b] - lm) + pb * (lp[b] - lm));
        g[b] = 0.5 * pb * (lp[b] - lm);
        break;
      }
    }
  }
  return d;
}

// Phase 2a: a row with a target and no usable KD bucket. z becomes its gradient.
void ce_row(float* z, int vocab, int32_t tg, const RowKinds& r, double inv_n, RowOut* o) {
  const float m = vec_max(z, vocab);
  const float zt = z[tg];
  const double s1 = vec_exp_shift_sum(z, vocab, m);
  o->ce = std::log(s1) + (double)m - (double)zt;
  o->ce_pos = true;
  if (!r.contrib) {
    memset(z, 0, sizeof(float) * vocab);
    return;
  }
  const double cce = r.w_ce * inv_n;
  o->loss = o->ce_term = r.w_ce * o->ce * inv_n;
  vec_scale(z, vocab, (float)(cce / s1));
  z[tg] -= (float)cce;
}

// Phase 2b: a row with a usable KD bucket (and maybe a target). z becomes its
// gradient; the derivation is at the top of this file.
void kd_row(float* z, int vocab, int32_t tg, const RowKinds& r, const Rows& rows, int i, int K_slots,
            const KdLossConfig& c, double inv_n, Scratch* sc, RowOut* o) {
  const int K = rows.nk[i];
  const int32_t* ids = rows.ids.data() + (size_t)i * K_slots;
  const double* lqt = rows.lq.data() + (size_t)i * K_slots;
  const double inv_tau = 1.0 / (double)c.tau;
  sc->resize(K);
  o->kd_pos = true;
  o->dups = rows.dups[i];

  // The student's bucket log-masses at temperature 1; z <- exp(z - m), 0 at the top ids.
  const float m = vec_max(z, vocab);
  const double zt = r.has_t ? (double)z[tg] : 0.0;
  for (int k = 0; k < K; k++) sc->ztop[k] = z[ids[k]], z[ids[k]] = -INFINITY;
  const double s1_oth = vec_exp_shift_sum(z, vocab, m);
  double s1 = s1_oth;
  for (int k = 0; k < K; k++) s1 += (sc->a[k] = std::exp(sc->ztop[k] - (double)m));
  const double log_s1 = std::log(s1);
  for (int k = 0; k < K; k++) sc->l[k] = (sc->ztop[k] - (double)m) - log_s1;
  const bool clamped = !(s1_oth / s1 >= kKdStudentOtherFloor);
  sc->l[K] = clamped ? std::log(kKdStudentOtherFloor) : std::log(s1_oth) - log_s1;
  o->clamped = clamped;

  // Both sides tempered over the same K+1 buckets.
  for (int k = 0; k < K; k++) sc->lt[k] = lqt[k];
  sc->lt[K] = rows.lo[i];
  temper(sc->l.data(), K + 1, inv_tau, sc->lp.data());
  temper(sc->lt.data(), K + 1, inv_tau, sc->lq.data());
  o->d = divergence(c.divergence, sc->lp.data(), sc->lq.data(), K + 1, sc->g.data());

  // Back through the tempering: h_c = dD / d l_c; a floored l_o passes nothing.
  double gsum = 0, hsum = 0;
  for (int b = 0; b <= K; b++) gsum += sc->g[b];
  for (int b = 0; b <= K; b++) sc->h[b] = (sc->g[b] - std::exp(sc->lp[b]) * gsum) * inv_tau;
  for (int b = 0; b < K; b++) hsum += sc->h[b];
  if (!clamped) hsum += sc->h[K];

  const double ce = r.has_t ? log_s1 + (double)m - zt : 0.0;
  if (r.has_t) {
    o->ce = ce;
    o->ce_pos = true;
    o->st_pos = r.is_struct;
  }
  if (!r.contrib) {
    memset(z, 0, sizeof(float) * vocab);
    return;
  }
  const double kdw = (double)c.kd_weight * (c.tau2_scale ? (double)c.tau * c.tau : 1.0);
  const double akd = r.kd_train ? kdw * inv_n : 0.0;  // KD gradient scale
  if (r.kd_train) o->loss += (o->kd_term = kdw * o->d * inv_n);
  const double cce = r.has_t ? r.w_ce * inv_n : 0.0;  // CE gradient scale
  if (r.has_t) {
    const double wf = r.is_struct ? (double)c.format_weight : 0.0;
    o->loss += r.w_ce * ce * inv_n;
    o->ce_term = (r.w_ce - wf) * ce * inv_n;
    o->fmt_term = wf * ce * inv_n;
  }
  const double c1 = cce / s1;
  const double c2 = akd * ((clamped ? 0.0 : sc->h[K] / s1_oth) - hsum / s1);
  vec_scale(z, vocab, (float)(c1 + c2));
  for (int k = 0; k < K; k++) z[ids[k]] = (float)(c1 * sc->a[k] + akd * (sc->h[k] - sc->a[k] / s1 * hsum));
  if (r.has_t) z[tg] -= (float)cce;
}

// Phase 3: the rows' shares summed in row order.
void sum_rows(const std::vector<RowOut>& ro, int64_t n_c, KdLossParts* out) {
  double kd_sum = 0, ce_sum = 0, fmt_sum = 0;
  for (const RowOut& o : ro) {
    out->loss += o.loss;
    out->kd_term += o.kd_term;
    out->ce_term += o.ce_term;
    out->format_term += o.fmt_term;
    if (o.kd_pos) kd_sum += o.d, out->kd_positions++;
    if (o.ce_pos) ce_sum += o.ce, out->ce_positions++;
    if (o.st_pos) fmt_sum += o.ce, out->struct_positions++;
    out->bad_kd += o.bad;
    out->duplicate_ids += o.dups;
    out->other_clamped += o.clamped;
  }
  out->kd_mean = out->kd_positions ? kd_sum / (double)out->kd_positions : 0.0;
  out->ce_mean = out->ce_positions ? ce_sum / (double)out->ce_positions : 0.0;
  out->format_mean = out->struct_positions ? fmt_sum / (double)out->struct_positions : 0.0;
  out->positions = n_c;
}

}  // namespace

void kd_loss_forward_backward(float* logits, int vocab, const KdTargets& t, const KdLossConfig& c,
                              KdLossParts* out) {
  *out = KdLossParts();
  const int n = t.n;
  Rows rows;
  const int64_t n_c = prepare_rows(t, vocab, c, &rows);
  const double inv_n = n_c > 0 ? 1.0 / (double)n_c : 0.0;
  std::vector<RowOut> ro(n);
#pragma omp parallel if ((size_t)n * vocab > 32768)
  {
    Scratch sc;
#pragma omp for schedule(static)
    for (int i = 0; i < n; i++) {
      float* z = logits + (size_t)i * vocab;  // [vocab]
      const RowKinds& r = rows.kinds[i];
      ro[i].bad = r.want_kd && !r.kd_ok;
      if (!r.has_t && !r.kd_ok) {
        memset(z, 0, sizeof(float) * vocab);
        continue;
      }
      const int32_t tg = r.has_t ? t.targets[i] : -1;
      if (r.kd_ok)
        kd_row(z, vocab, tg, r, rows, i, t.K, c, inv_n, &sc, &ro[i]);
      else
        ce_row(z, vocab, tg, r, inv_n, &ro[i]);
    }
  }
  sum_rows(ro, n_c, out);
}

}  // namespace bk
