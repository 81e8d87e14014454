#include "cli/train_flags.h"

#include <string>

namespace bk {

std::vector<Flag> model_flags_env() {
  return {
      {"vocab", nullptr, "", "Vocabulary size (default: the tokenizer's)"},
      {"dim", "MINI_DIM", nullptr, "Hidden size"},
      {"layers", "MINI_LAYERS", nullptr, "Decoder layers"},
      {"heads", "MINI_HEADS", nullptr, "Attention heads (must divide --dim)"},
      {"kv-heads", "MINI_KV_HEADS", nullptr, "Key/value heads (0: = heads; must divide --heads)"},
      {"head-dim", "MINI_HEAD_DIM", nullptr, "Head size (must equal dim / heads)"},
      {"ffn", "MINI_FFN_DIM", nullptr, "FFN width (0: 8/3*dim rounded up to 64 for swiglu, 4*dim for relu2)"},
      {"ffn-act", "MINI_FFN_ACT", nullptr, "swiglu or relu2"},
      {"weight-quant", "MINI_WEIGHT_QUANT", nullptr, "ternary or none"},
      {"act-bits", "MINI_ACT_BITS", nullptr, "Activation bits: 8, 4 or 0"},
      {"a4-scope", "A4_SCOPE", nullptr, "hybrid or all (which projections get 4-bit inputs after the flip)"},
      {"subln", "MINI_SUBLN", nullptr, "SubLN before o_proj/down_proj (--subln=0 to disable)", true},
      {"tie", "MINI_TIE_EMBEDDINGS", nullptr, "Tie the LM head to the embedding (--tie=0 to untie)", true},
      {"rope-theta", "MINI_ROPE_THETA", nullptr, "RoPE base"},
  };
}

std::vector<Flag> model_flags_bench() {
  return {
      {"vocab", nullptr, "32000", "Vocabulary size"},
      {"dim", nullptr, "256", "Hidden size"},
      {"layers", nullptr, "4", "Decoder layers"},
      {"heads", nullptr, "4", "Attention heads"},
      {"kv-heads", nullptr, "0", "Key/value heads (0: = heads)"},
      {"ffn", nullptr, "0", "FFN width (0: 8/3*dim rounded up to 64 for swiglu, 4*dim for relu2)"},
      {"ffn-act", nullptr, "swiglu", "swiglu or relu2"},
      {"weight-quant", nullptr, "ternary", "ternary or none"},
      {"act-bits", nullptr, "8", "Activation bits: 8, 4 or 0"},
      {"a4-scope", nullptr, "hybrid", "hybrid or all"},
      {"subln", nullptr, "1", "SubLN (--subln=0 to disable)", true},
      {"tie", nullptr, "1", "Tie the LM head to the embedding (--tie=0 to untie)", true},
      {"rope-theta", nullptr, "10000", "RoPE base"},
  };
}

std::vector<Flag> train_flags_env() {
  return {
      {"steps", "TOTAL_STEPS", nullptr, "Optimizer steps"},
      {"batch", "TRAIN_BATCH_SIZE", nullptr, "Sequences per micro-batch"},
      {"seq", "MAX_SEQ_LEN", nullptr, "Sequence length (tokens per row)"},
      {"grad-accum", "GRAD_ACCUM_STEPS", nullptr, "Micro-batches per optimizer step"},
      {"lr", "LR", nullptr, "Peak learning rate"},
      {"min-lr", "SCHEDULER_ETA_MIN", nullptr, "Final learning rate"},
      {"warmup", "WARMUP_STEPS", nullptr, "Linear warmup steps"},
      {"schedule", "LR_SCHEDULE", nullptr, "cosine, linear or constant"},
      {"tmax", "SCHEDULER_TMAX", nullptr, "Decay horizon in steps (default: --steps when only that is given)"},
      {"weight-decay", "WEIGHT_DECAY", nullptr, "Decoupled weight decay"},
      {"beta1", "ADAM_BETA1", nullptr, "AdamW beta1"},
      {"beta2", "ADAM_BETA2", nullptr, "AdamW beta2"},
      {"adam-eps", "ADAM_EPS", nullptr, "AdamW epsilon"},
      {"clip", "GRAD_CLIP_NORM", nullptr, "Global gradient-norm clip (0: off)"},
      {"two-stage", "TWO_STAGE", nullptr, "BitNet two-stage schedule (stage 2 = second half of --steps)", true},
      {"stage2-lr-scale", "STAGE2_LR_SCALE", nullptr, "Stage-2 peak LR as a fraction of --lr"},
      {"log-interval", "LOG_INTERVAL", nullptr, "Steps between metrics lines"},
      {"checkpoint-interval", "CHECKPOINT_INTERVAL", nullptr, "Steps between checkpoints (0: only at the end)"},
      {"keep-checkpoints", "KEEP_CHECKPOINTS", nullptr, "Checkpoints kept (0: all)"},
  };
}

int default_ffn_dim(int dim, FfnAct act) {
  if (act == FFN_RELU2) return 4 * dim;
  int f = (8 * dim + 2) / 3;
  return (f + 63) / 64 * 64;
}

static Status get_int(const Args& a, const char* flag, int* out) {
  long long v = 0;
  BK_TRY(arg_int(a, flag, &v));
  if (v < -2147483647LL || v > 2147483647LL) return errorf("--%s %lld is out of range", flag, v);
  *out = (int)v;
  return ok_status();
}

Status model_config_from_args(const Args& a, int default_vocab, int seq, ModelConfig* out) {
  ModelConfig c;
  c.vocab_size = default_vocab;
  if (!arg_str(a, "vocab").empty()) BK_TRY(get_int(a, "vocab", &c.vocab_size));
  BK_TRY(get_int(a, "dim", &c.dim));
  BK_TRY(get_int(a, "layers", &c.n_layers));
  BK_TRY(get_int(a, "heads", &c.n_heads));
  BK_TRY(get_int(a, "kv-heads", &c.n_kv_heads));
  if (c.n_kv_heads == 0) c.n_kv_heads = c.n_heads;
  c.head_dim = c.n_heads > 0 ? c.dim / c.n_heads : 0;
  // MINI_HEAD_DIM only matters when a user set it (its default describes the PoC's 768/12).
  bool has_head_dim_flag = false;
  for (const Flag& f : a.cmd->flags) has_head_dim_flag |= std::string(f.name) == "head-dim";
  if (has_head_dim_flag) {
    if (config_source(a.cfg, "MINI_HEAD_DIM") != SRC_DEFAULT) BK_TRY(get_int(a, "head-dim", &c.head_dim));
  }
  std::string act = arg_str(a, "ffn-act");
  if (act == "swiglu") c.ffn_act = FFN_SWIGLU;
  else if (act == "relu2") c.ffn_act = FFN_RELU2;
  else return errorf("--ffn-act '%s' is unknown: use swiglu or relu2", act.c_str());
  BK_TRY(get_int(a, "ffn", &c.ffn_dim));
  if (c.ffn_dim == 0 && c.dim > 0) c.ffn_dim = default_ffn_dim(c.dim, c.ffn_act);
  std::string wq = arg_str(a, "weight-quant");
  if (wq == "ternary") c.weight_quant = WQ_TERNARY;
  else if (wq == "none" || wq == "float") c.weight_quant = WQ_NONE;
  else return errorf("--weight-quant '%s' is unknown: use ternary or none", wq.c_str());
  BK_TRY(get_int(a, "act-bits", &c.act_bits));
  std::string scope = arg_str(a, "a4-scope");
  if (scope == "hybrid") c.a4_scope = A4_HYBRID;
  else if (scope == "all") c.a4_scope = A4_ALL;
  else return errorf("--a4-scope '%s' is unknown: use hybrid or all", scope.c_str());
  BK_TRY(arg_bool(a, "subln", &c.subln));
  BK_TRY(arg_bool(a, "tie", &c.tie_embeddings));
  double theta = 0;
  BK_TRY(arg_double(a, "rope-theta", &theta));
  c.rope_theta = (float)theta;
  c.max_seq_len = seq;
  BK_TRY(model_config_validate(c));
  *out = c;
  return ok_status();
}

Status trainer_options_from_args(const Args& a, TrainerOptions* o) {
  long long v = 0;
  BK_TRY(get_int(a, "batch", &o->batch));
  BK_TRY(get_int(a, "seq", &o->seq));
  BK_TRY(get_int(a, "grad-accum", &o->grad_accum));
  BK_TRY(arg_int(a, "steps", &v));
  o->total_steps = (long)v;
  BK_TRY(arg_int(a, "log-interval", &v));
  o->log_interval = (long)v;
  BK_TRY(arg_int(a, "checkpoint-interval", &v));
  o->checkpoint_interval = (long)v;
  BK_TRY(get_int(a, "keep-checkpoints", &o->keep_checkpoints));
  BK_TRY(config_int(a.cfg, "SEED", &v));
  o->seed = (uint64_t)v;

  AdamWConfig& ad = o->adam;
  BK_TRY(arg_double(a, "beta1", &ad.beta1));
  BK_TRY(arg_double(a, "beta2", &ad.beta2));
  BK_TRY(arg_double(a, "adam-eps", &ad.eps));
  BK_TRY(arg_double(a, "weight-decay", &ad.weight_decay));
  BK_TRY(arg_double(a, "clip", &ad.grad_clip));
  BK_TRY(config_bool(a.cfg, "WEIGHT_DECAY_EMBEDDINGS", &ad.decay_embedding));
  BK_TRY(config_bool(a.cfg, "WEIGHT_DECAY_NORMS", &ad.decay_norm));

  ScheduleConfig& s = o->sched;
  std::string kind = arg_str(a, "schedule");
  if (!lr_schedule_from_name(kind, &s.kind))
    return errorf("LR_SCHEDULE '%s' is unknown: use cosine, linear or constant", kind.c_str());
  BK_TRY(arg_double(a, "lr", &s.lr_peak));
  BK_TRY(arg_double(a, "min-lr", &s.eta_min));
  BK_TRY(arg_int(a, "warmup", &v));
  s.warmup_steps = (long)v;
  BK_TRY(arg_int(a, "tmax", &v));
  s.t_max = (long)v;
  auto src = [&](const char* var) {
    return config_source(a.cfg, var);
  };
  // The PoC kept T_max and TOTAL_STEPS separate; a user who only changes the
  // step count expects the decay to span it.
  if (src("SCHEDULER_TMAX") == SRC_DEFAULT && src("TOTAL_STEPS") != SRC_DEFAULT) s.t_max = o->total_steps;
  BK_TRY(arg_bool(a, "two-stage", &s.two_stage));
  BK_TRY(arg_double(a, "stage2-lr-scale", &s.stage2_lr_scale));
  s.stage2_start = o->total_steps / 2;
  s.stage2_weight_decay = 0.0;
  // A small --lr with the default floor: the floor follows.
  if (s.eta_min > s.lr_peak && src("SCHEDULER_ETA_MIN") == SRC_DEFAULT) s.eta_min = s.lr_peak;
  return schedule_validate(s);
}

}  // namespace bk
