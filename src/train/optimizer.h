#pragma once
// AdamW (decoupled weight decay, PyTorch semantics), the learning-rate
// schedule, global gradient-norm clipping and a non-finite guard.
//
// The moments m and v are contiguous buffers with the layout of
// Model::params, so the update is one pass over three flat arrays. Every
// reduction uses a fixed block partition summed in order, so results do not
// depend on the thread count.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "model/model.h"

namespace bk {

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.1;  // base decay; the schedule may zero it in stage 2
  double grad_clip = 1.0;     // global L2 norm; 0 = off
  // Which parameter kinds are decayed (BitNet/Llama practice: not norms, not embeddings).
  bool decay_embedding = false;
  bool decay_norm = false;
  bool decay_linear = true;
  bool decay_head = true;
};

enum LrSchedule { SCHED_COSINE = 0, SCHED_LINEAR = 1, SCHED_CONSTANT = 2 };
const char* lr_schedule_name(LrSchedule s);
bool lr_schedule_from_name(const std::string& name, LrSchedule* out);

// lr(step) for the update with 0-based index `step`:
//   warmup (step < warmup_steps): peak * (step + 1) / warmup_steps
//   then p = (step - warmup) / (t_max - warmup) clamped to [0, 1] (1 when t_max <= warmup) and
//     cosine:   eta_min + (peak - eta_min) * (1 + cos(pi p)) / 2   (PyTorch CosineAnnealingLR)
//     linear:   eta_min + (peak - eta_min) * (1 - p)
//     constant: peak
// Two-stage (BitNet b1.58 training recipe): from stage2_start on, the peak is
// lr_peak * stage2_lr_scale (an abrupt drop halfway, then the same decay
// curve) and weight decay is stage2_weight_decay (0: off).
struct ScheduleConfig {
  LrSchedule kind = SCHED_COSINE;
  double lr_peak = 6e-4;
  double eta_min = 6e-5;
  long warmup_steps = 0;
  long t_max = 1000;
  bool two_stage = false;
  long stage2_start = 500;  // usually total_steps / 2
  double stage2_lr_scale = 0.5;
  double stage2_weight_decay = 0.0;
};

struct ScheduleValue {
  double lr;
  double weight_decay;  // the decay to apply at this step
  int stage;            // 1 or 2
};
ScheduleValue schedule_at(const ScheduleConfig& s, long step, double base_weight_decay);
// Checks ranges (lr > 0, 0 <= eta_min <= lr, t_max >= 1, ...); message names the variable.
Status schedule_validate(const ScheduleConfig& s);
std::string schedule_to_json(const ScheduleConfig& s);
Status schedule_from_json(const std::string& json, ScheduleConfig* s);

struct Optimizer {
  AdamWConfig cfg;
  std::vector<float> m, v;  // same layout as Model::params
  // Parameter ranges (offset, numel) with decay on / off, from ParamInfo kinds.
  std::vector<size_t> range_begin, range_end;
  std::vector<uint8_t> range_decay;
  long step = 0;          // applied updates (drives bias correction)
  long skipped = 0;       // updates skipped by the non-finite guard
};

// Sizes m, v to n_params (zeros) and derives decay ranges from `info`.
Status optimizer_init(Optimizer* o, const AdamWConfig& cfg, const std::vector<ParamInfo>& info, size_t n_params);

struct StepStats {
  double grad_norm = 0;   // before clipping (NaN/Inf when the guard fired)
  double clip_scale = 1;  // factor applied to the gradients
  double lr = 0;
  double weight_decay = 0;
  bool skipped = false;
};

// L2 norm of g[n], accumulated in double over fixed blocks (deterministic).
double grad_global_norm(const float* g, size_t n);

// One AdamW update of params from grads (both n floats, n == m.size()).
// Order: guard (loss or grad norm non-finite -> grads zeroed, skipped++,
// nothing else changes), clip, decay p *= 1 - lr*wd (masked), moments,
// bias-corrected step. Grads are left clipped (callers zero them before the
// next accumulation).
StepStats optimizer_step(Optimizer* o, float* params, float* grads, size_t n, double lr, double weight_decay,
                         double loss);

}  // namespace bk
