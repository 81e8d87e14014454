// bitkd train: distil KD shards (kd_shard_*.parquet + kd_prompts_*) into
// a ternary student with the fused KD loss (train/kd_loss.h), through the
// shared training loop (train/trainer.h): AdamW + schedule, gradient
// accumulation, the A8 -> A4 flip at FLIP_FRACTION * BUDGET_TOKENS real seen
// tokens, checkpoints with health files, metrics, exact resume.
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "cli/train_flags.h"
#include "core/fs.h"
#include "core/log.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"
#include "train/kd_loss.h"
#include "train/kd_train.h"
#include "train/setup.h"
#include "train/trainer.h"

namespace bk {

namespace {

Status kd_config_from_args(const Args& a, KdLossConfig* c) {
  double v = 0;
  BK_TRY(arg_double(a, "tau", &v));
  c->tau = (float)v;
  BK_TRY(arg_double(a, "kd-weight", &v));
  c->kd_weight = (float)v;
  BK_TRY(arg_double(a, "ce-weight", &v));
  c->ce_weight = (float)v;
  BK_TRY(arg_double(a, "format-weight", &v));
  c->format_weight = (float)v;
  BK_TRY(arg_double(a, "plain-ce-weight", &v));
  c->plain_ce_weight = (float)v;
  BK_TRY(arg_bool(a, "tau2", &c->tau2_scale));
  const std::string div = arg_str(a, "kd-loss");
  if (!kd_divergence_from_name(div, &c->divergence))
    return errorf("KD_LOSS '%s' is unknown: use kl, reverse_kl or jsd", div.c_str());
  return kd_loss_config_validate(*c);
}

// The run's settings, stored in every checkpoint's metadata.
std::string summary_json(const Args& a, const KdTrainOptions& ko, const Tokenizer& tok, const std::string& tok_path,
                         bool deterministic) {
  const TrainerOptions& opt = ko.trainer;
  const KdLossConfig& lc = ko.loss;
  nlohmann::ordered_json s;
  s["command"] = "train";
  s["data"] = ko.data.data_dir;
  s["tokenizer"] = tok_path;
  s["tokenizer_hash"] = tokenizer_hash(tok);
  s["kd_loss"] = kd_divergence_name(lc.divergence);
  s["tau"] = lc.tau;
  s["tau2_scale"] = lc.tau2_scale;
  s["kd_weight"] = lc.kd_weight;
  s["ce_weight"] = lc.ce_weight;
  s["format_weight"] = lc.format_weight;
  s["plain_ce_weight"] = lc.plain_ce_weight;
  double rel_w = 0;
  if (arg_double(a, "attn-relation-weight", &rel_w).ok() && rel_w > 0) s["attn_relation_weight"] = rel_w;
  s["topk"] = ko.data.max_topk;
  s["batch"] = opt.batch;
  s["seq"] = opt.seq;
  s["grad_accum"] = opt.grad_accum;
  s["total_steps"] = opt.total_steps;
  s["flip_at_tokens"] = opt.flip_at_tokens;
  s["a4_scope"] = a4_scope_name(ko.model.a4_scope);
  s["schedule"] = nlohmann::ordered_json::parse(schedule_to_json(opt.sched));
  s["deterministic"] = deterministic;
  return s.dump();
}

Status attn_relation_from_args(const Args& a, KdTrainOptions* ko) {
  double w = 0;
  long long layer = -1;
  BK_TRY(arg_double(a, "attn-relation-weight", &w));
  BK_TRY(arg_int(a, "attn-relation-layer", &layer));
  if (!std::isfinite(w) || w < 0) return errorf("KD_ATTN_RELATION_WEIGHT=%g: use 0 (off) or a positive weight", w);
  ko->attn_relation_weight = (float)w;
  ko->attn_relation_layer = (int)layer;
  return ok_status();
}

// BUDGET_TOKENS: --budget, or with --budget-from-data the real target tokens
// this run will see (train/setup.h), counted with the loader options training uses.
Status budget_from_args(const Args& a, const KdTrainOptions& ko, const Tokenizer& tok, double* budget) {
  bool from_data = false;
  BK_TRY(arg_bool(a, "budget-from-data", &from_data));
  if (!from_data) return arg_double(a, "budget", budget);
  LoaderOptions lo = ko.data;
  lo.batch_size = ko.trainer.batch;
  lo.max_seq_len = ko.trainer.seq;
  lo.seed = ko.trainer.seed;
  std::string note;
  BK_TRY(flip_budget_from_data(lo, tok, ko.trainer.grad_accum, ko.trainer.total_steps, budget, &note));
  BK_LOG_INFO("train: %s", note.c_str());
  return ok_status();
}

Status train_from_args(Args& a) {
  KdTrainOptions ko;
  TrainerOptions& opt = ko.trainer;
  BK_TRY(trainer_options_from_args(a, &opt));
  KdLossConfig& lc = ko.loss;
  BK_TRY(kd_config_from_args(a, &lc));
  ModelConfig& cfg = ko.model;
  BK_TRY(model_config_from_args(a, 32000, opt.seq, &cfg));  // checks the flags before slower work
  bool deterministic = false, allow_mismatch = false, no_flip = false, resume = false;
  double frac = 0;
  BK_TRY(arg_bool(a, "allow-tokenizer-mismatch", &allow_mismatch));
  BK_TRY(arg_bool(a, "no-flip", &no_flip));
  BK_TRY(arg_bool(a, "resume", &resume));
  BK_TRY(arg_double(a, "flip-fraction", &frac));
  BK_TRY(attn_relation_from_args(a, &ko));
  BK_TRY(train_setup_threads(a.cfg, nullptr, &deterministic));

  Tokenizer tok;
  std::string tok_path;
  BK_TRY(student_tokenizer_load(a, &tok, &tok_path));
  BK_TRY(model_config_from_args(a, tokenizer_vocab_size(tok), opt.seq, &cfg));
  BK_TRY(train_check_vocab(cfg, tokenizer_vocab_size(tok)));
  BK_TRY(loader_options_from_config(a.cfg, &ko.data));
  ko.data.allow_tokenizer_mismatch = ko.data.allow_tokenizer_mismatch || allow_mismatch;
  train_default_paths(a.cfg, arg_str(a, "out"), arg_str(a, "metrics"), &opt.checkpoint_dir, &opt.metrics_path);
  opt.label = "train";
  opt.flip_bits = 4;
  double budget = 0;
  BK_TRY(budget_from_args(a, ko, tok, &budget));
  if (!(budget >= 0) || !(frac >= 0)) return errorf("BUDGET_TOKENS and FLIP_FRACTION must be >= 0");
  if (!no_flip) opt.flip_at_tokens = flip_at_tokens(budget, frac);

  ko.init_from = arg_str(a, "init-from");
  ko.attn_relation_teacher = ko.init_from;  // kept when resuming
  ResumeRequest rq;
  rq.label = "train";
  rq.resume = resume;
  rq.checkpoint_dir = opt.checkpoint_dir;
  rq.tokenizer_vocab = tokenizer_vocab_size(tok);
  rq.seq = opt.seq;
  rq.shape_from_flags = ko.init_from.empty();
  BK_TRY(train_resolve_resume(rq, &cfg, &opt.resume_from));
  if (opt.resume_from.empty())
    BK_LOG_INFO("train: student %s, checkpoints in %s", model_config_to_json(cfg).c_str(), opt.checkpoint_dir.c_str());
  else ko.init_from.clear();  // the checkpoint already holds it
  if (opt.flip_at_tokens > 0 && cfg.act_bits != 8) {
    // Fresh: the student starts at 4 or 0 bits. Resumed: the checkpoint is past
    // its flip (its flip state, restored by the trainer, says when).
    if (opt.resume_from.empty())
      BK_LOG_INFO("train: activations start at %d bits, so there is no A8 -> A4 flip", cfg.act_bits);
    opt.flip_at_tokens = 0;
  }
  if (opt.flip_at_tokens > 0)
    BK_LOG_INFO("train: A8 -> A4 flip (scope %s) at %lld real seen tokens (FLIP_FRACTION %g x BUDGET_TOKENS %.0f)",
                a4_scope_name(cfg.a4_scope), opt.flip_at_tokens, frac, budget);
  BK_LOG_INFO("train: loss %s tau %g kd_weight %g%s ce_weight %g format_weight %g plain_ce_weight %g",
              kd_divergence_name(lc.divergence), lc.tau, lc.kd_weight, lc.tau2_scale ? " (x tau^2)" : "",
              lc.ce_weight, lc.format_weight, lc.plain_ce_weight);
  if (lc.kd_weight == 0) BK_LOG_INFO("train: --kd-weight 0: CE-only baseline (KD divergence measured, not trained)");
  opt.summary_json = summary_json(a, ko, tok, tok_path, deterministic);

  Model m;
  KdTrainResult r;
  BK_TRY(kd_train_run(ko, tok, &m, &r));
  BK_LOG_INFO("train: data: %s", r.data_stats_line.c_str());
  if (opt.flip_at_tokens > 0 && !r.train.flip.flip_done)
    BK_LOG_WARN("train: stopped at %lld real seen tokens, before the A8 -> A4 flip at %lld (FLIP_FRACTION x "
                "BUDGET_TOKENS): the student still uses %d-bit activations",
                r.train.seen_tokens, opt.flip_at_tokens, m.cfg.act_bits);
  TrainReport rep = train_report_from(r.train, r.act_bits, opt.metrics_path);
  rep.kd = true;
  rep.first_kl = r.first_kl;
  rep.last_kl = r.last_kl;
  rep.first_ce = r.first_ce;
  rep.last_ce = r.last_ce;
  rep.nan_guards = r.nan_guards;
  rep.data_json = r.data_stats_json;
  printf("%s\n", train_report_to_json(rep).c_str());
  return ok_status();
}

int run_train(Args& a) {
  const Status st = train_from_args(a);
  return st.ok() ? 0 : cli_fail(a, st);
}

}  // namespace

const Command& command_train() {
  static const Command c = [] {
    Command cmd{
        "train",
        "Distil KD shards into a ternary student (KL over top-K + other, CE, format loss; A8->A4 flip)",
        "Reads kd_shard_*.parquet with kd_prompts_*.parquet in KD_DATA_PATH (else DATA_DIR; several folders\n"
        "comma-separated, e.g. the pipeline's data/reference), aligns each\n"
        "teacher step to the student tokenization and trains a MINI_* student (vocabulary from TOKENIZER_NAME)\n"
        "with L = kd_weight * D(q || p) + ce_weight * CE + format_weight * CE[structural steps] over the K+1\n"
        "buckets (top-K + other) at temperature KD_TAU; D is KL, reverse KL or JSD (KD_LOSS). Response tokens\n"
        "without a usable teacher step get KD_PLAIN_CE_WEIGHT * CE. --kd-weight 0 is the CE-only baseline on\n"
        "the same data. Activations flip 8 -> 4 bit (A4_SCOPE) once FLIP_FRACTION * BUDGET_TOKENS real target\n"
        "tokens were seen. Shards projected for another tokenizer are refused unless\n"
        "--allow-tokenizer-mismatch. Checkpoints (mini_bitnet_step_N.safetensors + .optim + _health.json)\n"
        "every CHECKPOINT_INTERVAL in --out, metrics in logs/train_metrics.jsonl every LOG_INTERVAL; --resume\n"
        "continues from the newest checkpoint exactly (same batches, same weights). Prints a JSON summary.",
        {
            {"data", "KD_DATA_PATH", nullptr, "KD shard directory (default: DATA_DIR)"},
            {"tokenizer", "TOKENIZER_NAME", nullptr, "Student SentencePiece tokenizer.model"},
            {"topk", "MAX_TOPK", nullptr, "Top-K slots per position"},
            {"tau", "KD_TAU", nullptr, "Distillation temperature"},
            {"kd-weight", "KD_WEIGHT", nullptr, "Weight of the KD term (0: CE-only baseline)"},
            {"kd-loss", "KD_LOSS", nullptr, "kl, reverse_kl or jsd"},
            {"tau2", "KD_TAU2_SCALE", nullptr, "Multiply the KD term by tau^2", true},
            {"ce-weight", "KD_CE_WEIGHT", nullptr, "CE weight on the teacher's sampled token"},
            {"format-weight", "FORMAT_LOSS_WEIGHT", nullptr, "Extra CE weight on structural steps"},
            {"plain-ce-weight", "KD_PLAIN_CE_WEIGHT", nullptr, "CE weight where no teacher step aligns"},
            {"allow-tokenizer-mismatch", "KD_ALLOW_TOKENIZER_MISMATCH", nullptr,
             "Train on shards projected for another tokenizer", true},
            {"budget", "BUDGET_TOKENS", nullptr, "Token budget (the flip happens at FLIP_FRACTION of it)"},
            {"budget-from-data", nullptr, "",
             "BUDGET_TOKENS = the target tokens this run sees: steps x batch x GRAD_ACCUM_STEPS x the mean per example",
             true},
            {"flip-fraction", "FLIP_FRACTION", nullptr, "Fraction of BUDGET_TOKENS at which activations go 8 -> 4 bit"},
            {"no-flip", nullptr, "", "Never flip activations", true},
            {"out", nullptr, "", "Checkpoint directory (default: CHECKPOINTS_DIR)"},
            {"metrics", nullptr, "", "Metrics JSONL (default: LOGS_DIR/train_metrics.jsonl)"},
            {"resume", nullptr, "", "Continue from the newest checkpoint in --out", true},
            {"init-from", "STUDENT_INIT", nullptr,
             "Start from this float model's weights and shape (a teacher sharing the student's tokenizer)"},
            {"attn-relation-weight", "KD_ATTN_RELATION_WEIGHT", nullptr,
             "Attention-relation distillation against the --init-from teacher (0: off)"},
            {"attn-relation-layer", "KD_ATTN_RELATION_LAYER", nullptr, "Its layer (-1: the last)"},
        },
        run_train,
    };
    for (const Flag& f : model_flags_env()) cmd.flags.push_back(f);
    for (const Flag& f : train_flags_env()) cmd.flags.push_back(f);
    return cmd;
  }();
  return c;
}

}  // namespace bk
