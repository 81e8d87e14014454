#include "train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

namespace bk {

const char* lr_schedule_name(LrSchedule s) {
  switch (s) {
    case SCHED_COSINE: return "cosine";
    case SCHED_LINEAR: return "linear";
    case SCHED_CONSTANT: return "constant";
  }
  return "?";
}

bool lr_schedule_from_name(const std::string& name, LrSchedule* out) {
  for (LrSchedule s : {SCHED_COSINE, SCHED_LINEAR, SCHED_CONSTANT})
    if (name == lr_schedule_name(s)) {
      *out = s;
      return true;
    }
  return false;
}

ScheduleValue schedule_at(const ScheduleConfig& s, long step, double base_weight_decay) {
  ScheduleValue r;
  r.stage = (s.two_stage && step >= s.stage2_start) ? 2 : 1;
  const double peak = r.stage == 2 ? s.lr_peak * s.stage2_lr_scale : s.lr_peak;
  r.weight_decay = r.stage == 2 ? s.stage2_weight_decay : base_weight_decay;
  if (step < s.warmup_steps) {
    r.lr = peak * (double)(step + 1) / (double)s.warmup_steps;
    return r;
  }
  // Two-stage with a stage-2 peak below eta_min would make the decay rise; clamp.
  const double lo = std::min(s.eta_min, peak);
  double p = 1.0;
  if (s.t_max > s.warmup_steps) p = (double)(step - s.warmup_steps) / (double)(s.t_max - s.warmup_steps);
  p = std::min(1.0, std::max(0.0, p));
  switch (s.kind) {
    case SCHED_COSINE: r.lr = lo + (peak - lo) * 0.5 * (1.0 + std::cos(M_PI * p)); break;
    case SCHED_LINEAR: r.lr = lo + (peak - lo) * (1.0 - p); break;
    case SCHED_CONSTANT: r.lr = peak; break;
  }
  return r;
}

Status schedule_validate(const ScheduleConfig& s) {
  if (!(s.lr_peak > 0) || !std::isfinite(s.lr_peak)) return errorf("LR=%g must be a positive number", s.lr_peak);
  if (!(s.eta_min >= 0) || s.eta_min > s.lr_peak)
    return errorf("SCHEDULER_ETA_MIN=%g must be in [0, LR=%g]", s.eta_min, s.lr_peak);
  if (s.warmup_steps < 0) return errorf("WARMUP_STEPS=%ld must be >= 0", s.warmup_steps);
  // t_max <= warmup is allowed (a short run): the decay then ends where the warmup does.
  if (s.kind != SCHED_CONSTANT && s.t_max < 1) return errorf("SCHEDULER_TMAX=%ld must be >= 1", s.t_max);
  if (s.two_stage && !(s.stage2_lr_scale > 0 && s.stage2_lr_scale <= 1))
    return errorf("STAGE2_LR_SCALE=%g must be in (0, 1]", s.stage2_lr_scale);
  if (s.two_stage && s.stage2_weight_decay < 0)
    return errorf("stage-2 weight decay %g must be >= 0", s.stage2_weight_decay);
  return ok_status();
}

std::string schedule_to_json(const ScheduleConfig& s) {
  nlohmann::ordered_json j;
  j["kind"] = lr_schedule_name(s.kind);
  j["lr_peak"] = s.lr_peak;
  j["eta_min"] = s.eta_min;
  j["warmup_steps"] = s.warmup_steps;
  j["t_max"] = s.t_max;
  j["two_stage"] = s.two_stage;
  j["stage2_start"] = s.stage2_start;
  j["stage2_lr_scale"] = s.stage2_lr_scale;
  j["stage2_weight_decay"] = s.stage2_weight_decay;
  return j.dump();
}

Status schedule_from_json(const std::string& json, ScheduleConfig* s) {
  try {
    nlohmann::json j = nlohmann::json::parse(json);
    ScheduleConfig r;
    std::string kind = j.value("kind", std::string("cosine"));
    if (!lr_schedule_from_name(kind, &r.kind)) return errorf("scheduler state: unknown schedule '%s'", kind.c_str());
    r.lr_peak = j.value("lr_peak", r.lr_peak);
    r.eta_min = j.value("eta_min", r.eta_min);
    r.warmup_steps = j.value("warmup_steps", r.warmup_steps);
    r.t_max = j.value("t_max", r.t_max);
    r.two_stage = j.value("two_stage", r.two_stage);
    r.stage2_start = j.value("stage2_start", r.stage2_start);
    r.stage2_lr_scale = j.value("stage2_lr_scale", r.stage2_lr_scale);
    r.stage2_weight_decay = j.value("stage2_weight_decay", r.stage2_weight_decay);
    *s = r;
  } catch (const std::exception& e) {
    return errorf("scheduler state is not valid JSON: %s", e.what());
  }
  return ok_status();
}

static bool kind_decays(const AdamWConfig& c, ParamKind k) {
  switch (k) {
    case PARAM_EMBEDDING: return c.decay_embedding;
    case PARAM_NORM: return c.decay_norm;
    case PARAM_LINEAR: return c.decay_linear;
    case PARAM_HEAD: return c.decay_head;
  }
  return false;
}

Status optimizer_init(Optimizer* o, const AdamWConfig& cfg, const std::vector<ParamInfo>& info, size_t n_params) {
  if (!(cfg.beta1 >= 0 && cfg.beta1 < 1)) return errorf("ADAM_BETA1=%g must be in [0, 1)", cfg.beta1);
  if (!(cfg.beta2 >= 0 && cfg.beta2 < 1)) return errorf("ADAM_BETA2=%g must be in [0, 1)", cfg.beta2);
  if (!(cfg.eps > 0)) return errorf("ADAM_EPS=%g must be > 0", cfg.eps);
  if (!(cfg.weight_decay >= 0)) return errorf("WEIGHT_DECAY=%g must be >= 0", cfg.weight_decay);
  if (!(cfg.grad_clip >= 0)) return errorf("GRAD_CLIP_NORM=%g must be >= 0 (0: off)", cfg.grad_clip);
  *o = Optimizer();
  o->cfg = cfg;
  o->m.assign(n_params, 0.0f);
  o->v.assign(n_params, 0.0f);
  std::vector<const ParamInfo*> sorted;
  for (const ParamInfo& p : info) {
    if (p.offset + p.numel > n_params)
      return errorf("optimizer: parameter %s [%zu, %zu) lies outside the %zu-float buffer", p.name.c_str(), p.offset,
                    p.offset + p.numel, n_params);
    sorted.push_back(&p);
  }
  std::sort(sorted.begin(), sorted.end(), [](const ParamInfo* a, const ParamInfo* b) { return a->offset < b->offset; });
  // Merge neighbours with the same decay flag; floats no tensor claims are not decayed.
  size_t pos = 0;
  auto push = [&](size_t b, size_t e, bool d) {
    if (b >= e) return;
    if (!o->range_end.empty() && o->range_end.back() == b && o->range_decay.back() == (uint8_t)d) {
      o->range_end.back() = e;
      return;
    }
    o->range_begin.push_back(b);
    o->range_end.push_back(e);
    o->range_decay.push_back(d);
  };
  for (const ParamInfo* p : sorted) {
    if (p->offset < pos) return errorf("optimizer: parameter %s overlaps another tensor", p->name.c_str());
    push(pos, p->offset, false);
    push(p->offset, p->offset + p->numel, kind_decays(cfg, p->kind));
    pos = p->offset + p->numel;
  }
  push(pos, n_params, false);
  return ok_status();
}

static constexpr size_t k_norm_block = 1 << 14;

double grad_global_norm(const float* g, size_t n) {
  const size_t nb = (n + k_norm_block - 1) / k_norm_block;
  std::vector<double> part(nb, 0.0);
#pragma omp parallel for schedule(static) if (nb > 4)
  for (size_t b = 0; b < nb; b++) {
    const float* x = g + b * k_norm_block;
    const size_t len = std::min(k_norm_block, n - b * k_norm_block);
    double s = 0.0;
    for (size_t i = 0; i < len; i++) s += (double)x[i] * (double)x[i];
    part[b] = s;
  }
  double total = 0.0;
  for (double s : part) total += s;
  return std::sqrt(total);
}

StepStats optimizer_step(Optimizer* o, float* params, float* grads, size_t n, double lr, double weight_decay,
                         double loss) {
  StepStats st;
  st.lr = lr;
  st.weight_decay = weight_decay;
  st.grad_norm = grad_global_norm(grads, n);
  if (!std::isfinite(loss) || !std::isfinite(st.grad_norm)) {
    // A bad batch or an overflow must not poison the moments: drop the update.
    memset(grads, 0, n * sizeof(float));
    o->skipped++;
    st.skipped = true;
    st.clip_scale = 0;
    return st;
  }
  const AdamWConfig& c = o->cfg;
  // As torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is < 1.
  if (c.grad_clip > 0) {
    double coef = c.grad_clip / (st.grad_norm + 1e-6);
    if (coef < 1.0) {
      st.clip_scale = coef;
      const float fc = (float)coef;
#pragma omp parallel for simd schedule(static) if (n > 65536)
      for (size_t i = 0; i < n; i++) grads[i] *= fc;
    }
  }
  o->step++;
  const double t = (double)o->step;
  const double bc1 = 1.0 - std::pow(c.beta1, t);
  const double bc2 = 1.0 - std::pow(c.beta2, t);
  const float step_size = (float)(lr / bc1);
  const float inv_bc2_sqrt = (float)(1.0 / std::sqrt(bc2));
  const float b1 = (float)c.beta1, b2 = (float)c.beta2;
  const float ob1 = (float)(1.0 - c.beta1), ob2 = (float)(1.0 - c.beta2);
  const float eps = (float)c.eps;
  float* m = o->m.data();
  float* v = o->v.data();
  for (size_t r = 0; r < o->range_begin.size(); r++) {
    const size_t b = o->range_begin[r], e = std::min(o->range_end[r], n);
    const float decay = o->range_decay[r] ? (float)(1.0 - lr * weight_decay) : 1.0f;
#pragma omp parallel for simd schedule(static) if (e - b > 65536)
    for (size_t i = b; i < e; i++) {
      const float g = grads[i];
      float p = params[i] * decay;
      const float mi = b1 * m[i] + ob1 * g;
      const float vi = b2 * v[i] + ob2 * g * g;
      m[i] = mi;
      v[i] = vi;
      p -= step_size * mi / (std::sqrt(vi) * inv_bc2_sqrt + eps);
      params[i] = p;
    }
  }
  return st;
}

}  // namespace bk
