#pragma once
// The fused knowledge-distillation loss of docs/training.md ("The loss"), computed in place on
// the model's logits buffer (like train/loss.h): one row at a time it reads
// the logits z [vocab] and overwrites them with dL/dz, so no second
// [n, vocab] buffer exists (and no [vocab] scratch row: the tempering acts on
// the K+1 buckets only).
//
// Per position i with a KD bucket (K' distinct valid top-K ids + "other"),
// both sides' buckets formed the same way: the masses at temperature 1, then
// tempered over the K'+1 buckets (so a student equal to the teacher has zero
// loss and zero gradient at every tau):
//   q  = softmax([topk_logprobs, other_logprob] / tau)          (K'+1 buckets)
//   P1 = softmax(z),  l = log([P1[id_k], 1 - sum_k P1[id_k]]),  p = softmax(l / tau)
//   D  = KL(q || p)  |  KL(p || q)  |  JSD(q, p)                 (over the buckets)
//   L_i = kd_weight * (tau2_scale ? tau^2 : 1) * D
//       + (ce_weight + format_weight * is_struct) * CE(z, target)
// Positions with a target but no (usable) KD bucket:   L_i = plain_ce_weight * CE(z, target)
// The loss is sum_i L_i / n_c, n_c = the number of contributing positions
// (a target with a non-zero CE weight, or a trained KD bucket).
// CE is at temperature 1 on the raw logits (the sampled token is the student
// target at that position: same tokenizer on both sides).
//
// What contributes nothing: positions with target -1 and no KD bucket
// (prompt, padding), top-K slots with id -1, and duplicate ids (merged into
// one bucket by log-sum-exp of their teacher logprobs, counted). A KD bucket
// with a NaN/+inf teacher value or an id outside [0, vocab) is not used: the
// position falls back to plain CE (as the aligner does for invalid steps) and
// is counted in bad_kd. Teacher log values below kKdTeacherLogFloor
// (including -inf) are raised to it, so reverse KL and JSD stay finite.
//
// p_other is computed without cancellation: the top-K logits are masked out
// of the exponent pass, so sum_{v not in top-K} exp(z_v - max) is summed
// directly. It is floored at kKdStudentOtherFloor (that bucket then passes no
// gradient; counted in other_clamped).
//
// --kd-weight 0 is the CE-only baseline on the same data: every position
// with a target gets plain_ce_weight * CE (plus format_weight * CE at
// structural positions, as with KD, so the baseline differs in the KD term
// only); KD buckets are only measured (KdLossParts::kd_mean) and pass no
// gradient.
#include <cstdint>
#include <string>

#include "core/status.h"

namespace bk {

enum KdDivergence { KD_FORWARD_KL = 0, KD_REVERSE_KL = 1, KD_JSD = 2 };
// "kl", "reverse_kl", "jsd".
const char* kd_divergence_name(KdDivergence d);
bool kd_divergence_from_name(const std::string& name, KdDivergence* out);

constexpr double kKdStudentOtherFloor = 1e-12;  // floor of the student's p_other
constexpr double kKdTeacherLogFloor = -1e4;     // floor of teacher logprobs (OpenAI reports -9999)

struct KdLossConfig {
  KdDivergence divergence = KD_FORWARD_KL;
  float tau = 1.3f;              // KD_TAU
  float kd_weight = 1.0f;        // KD_WEIGHT (0: CE-only baseline)
  bool tau2_scale = false;       // KD_TAU2_SCALE: multiply the KD term by tau^2 (Hinton)
  float ce_weight = 0.25f;       // KD_CE_WEIGHT: CE on the sampled token at KD positions
  float format_weight = 0.2f;    // FORMAT_LOSS_WEIGHT: extra CE at structural KD positions
  float plain_ce_weight = 1.0f;  // KD_PLAIN_CE_WEIGHT: CE at target positions without a KD bucket
};
// tau > 0 and finite, weights >= 0 and finite; the message names the variable.
Status kd_loss_config_validate(const KdLossConfig& c);

// The targets of n = B*T positions with K slots each (views, not owned).
struct KdTargets {
  int n = 0, K = 0;
  const int32_t* targets = nullptr;      // [n] next-token id; -1 (or out of range): no CE
  const uint8_t* kd_mask = nullptr;      // [n] 1: the KD bucket applies (nullptr: none does)
  const uint8_t* is_struct = nullptr;    // [n] structural teacher step (nullptr: none)
  const int32_t* topk_ids = nullptr;     // [n*K] student ids, -1: empty slot
  const float* topk_logprobs = nullptr;  // [n*K] teacher logprobs
  const float* other_logprob = nullptr;  // [n] teacher log mass of everything else
};

struct KdLossParts {
  double loss = 0;         // sum_i L_i / n_c: what was differentiated
  // The loss split into its terms (kd_term + ce_term + format_term == loss).
  double kd_term = 0, ce_term = 0, format_term = 0;
  // Unweighted means, for logs: the divergence over KD positions ("kl" in the
  // logs whatever the divergence), CE over positions with a target, CE over
  // structural KD positions.
  double kd_mean = 0, ce_mean = 0, format_mean = 0;
  int64_t positions = 0;         // n_c, the normaliser
  int64_t kd_positions = 0;      // positions with a usable KD bucket
  int64_t ce_positions = 0;      // positions with a target
  int64_t struct_positions = 0;  // structural KD positions with a target
  int64_t bad_kd = 0;            // KD buckets not used (non-finite teacher value, id out of range)
  int64_t duplicate_ids = 0;     // top-K slots merged into an earlier slot with the same id
  int64_t other_clamped = 0;     // KD positions whose p_other hit kKdStudentOtherFloor
};

// Fused forward + backward, OpenMP over rows. logits [n, vocab] becomes
// dL/dlogits (rows that contribute nothing become zero). Never produces NaN
// for finite logits; when nothing contributes the loss is 0 and every
// gradient 0.
void kd_loss_forward_backward(float* logits, int vocab, const KdTargets& t, const KdLossConfig& c,
                              KdLossParts* out);

}  // namespace bk
