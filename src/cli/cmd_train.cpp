// bitkd train: distil KD shards (data/kd_shard_*.parquet + kd_prompts_*) into
// a ternary student with the fused KD loss (train/kd_loss.h), through the
// shared training loop (train/trainer.h): AdamW + schedule, gradient
// accumulation, the A8 -> A4 flip at FLIP_FRACTION * BUDGET_TOKENS real seen
// tokens, checkpoints with health files, metrics, exact resume.
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "cli/kd_stream.h"
#include "cli/train_flags.h"
#include "core/fs.h"
#include "core/log.h"
#include "kernels/cpu/kernels.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"
#include "train/kd_loss.h"
#include "train/trainer.h"

namespace bk {

namespace {

// The KD half of a batch (the trainer's Batch holds tokens, mask, targets).
struct KdAux {
  int K = 0;
  std::vector<uint8_t> kd_mask, is_struct;
  std::vector<int32_t> topk_ids;
  std::vector<float> topk_logprobs, other_logprob;
};

// Counters across the run, for health files, metrics and the summary.
struct KdRunStats {
  long long bad_kd = 0, other_clamped = 0, duplicate_ids = 0, kd_positions = 0, loss_calls = 0;
  int64_t epoch = 0;
  double kl_first = NAN, ce_first = NAN;
  std::vector<double> recent_kl, recent_ce;  // the last grad_accum micro-batches
};

Status load_student_tokenizer(const Args& a, Tokenizer* tok, std::string* path) {
  *path = arg_str(a, "tokenizer");
  if (path->empty()) {
    std::string def = path_join(path_join(artifact_paths(a.cfg).root, "tokenizer"), "tokenizer.model");
    if (!file_exists(def))
      return errorf("no student tokenizer: set TOKENIZER_NAME (or --tokenizer) to the SentencePiece tokenizer.model "
                    "the traces were collected for, or train one with `bitkd tokenizer train`");
    *path = def;
  }
  return with_context(tokenizer_load(*path, tok), "loading the student tokenizer " + *path);
}

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

double mean_of(const std::vector<double>& v) {
  if (v.empty()) return NAN;
  double s = 0;
  for (double x : v) s += x;
  return s / (double)v.size();
}

nlohmann::ordered_json num_or_null(double v) {
  return std::isfinite(v) ? nlohmann::ordered_json(v) : nlohmann::ordered_json();
}

int run_train(Args& a) {
  TrainerOptions opt;
  Status st = trainer_options_from_args(a, &opt);
  if (!st.ok()) return cli_fail(a, st);
  KdLossConfig lc;
  st = kd_config_from_args(a, &lc);
  if (!st.ok()) return cli_fail(a, st);
  ModelConfig cfg;
  st = model_config_from_args(a, 32000, opt.seq, &cfg);  // checks the flags before slower work
  if (!st.ok()) return cli_fail(a, st);

  bool deterministic = false, allow_mismatch = false, no_flip = false, resume = false;
  long long threads = 0;
  st = config_bool(a.cfg, "DETERMINISTIC", &deterministic);
  if (st.ok()) st = config_int(a.cfg, "THREADS", &threads);
  if (st.ok()) st = arg_bool(a, "allow-tokenizer-mismatch", &allow_mismatch);
  if (st.ok()) st = arg_bool(a, "no-flip", &no_flip);
  if (st.ok()) st = arg_bool(a, "resume", &resume);
  double budget = 0, frac = 0;
  if (st.ok()) st = arg_double(a, "budget", &budget);
  if (st.ok()) st = arg_double(a, "flip-fraction", &frac);
  if (!st.ok()) return cli_fail(a, st);
  if (!(budget >= 0) || !(frac >= 0)) return cli_fail(a, errorf("BUDGET_TOKENS and FLIP_FRACTION must be >= 0"));
  kernels_set_threads(deterministic ? 1 : (int)threads);

  Tokenizer tok;
  std::string tok_path;
  st = load_student_tokenizer(a, &tok, &tok_path);
  if (!st.ok()) return cli_fail(a, st);
  st = model_config_from_args(a, tokenizer_vocab_size(tok), opt.seq, &cfg);
  if (!st.ok()) return cli_fail(a, st);
  if (cfg.vocab_size < tokenizer_vocab_size(tok))
    return cli_fail(a, errorf("--vocab %d is smaller than the student tokenizer's vocabulary (%d)", cfg.vocab_size,
                              tokenizer_vocab_size(tok)));

  // The data: shards listed and their tokenizer hash checked by the loader.
  KdStreamOptions so;
  so.batch = opt.batch;
  so.seq = opt.seq;
  so.seed = opt.seed;
  so.allow_tokenizer_mismatch = allow_mismatch;
  KdStream stream;
  st = kd_stream_open(a.cfg, so, tok, &stream);
  if (!st.ok()) return cli_fail(a, st);
  const std::string data_dir = kd_stream_data_dir(stream);
  KdShardScan scan;
  st = kd_scan_shards(kd_stream_shards(stream), &scan);
  if (!st.ok()) return cli_fail(a, st);
  if (scan.rows == 0)
    return cli_fail(a, errorf("%lld KD shard(s) in %s hold no readable teacher step (%lld bad rows%s%s): nothing to "
                              "train on; collect traces with `bitkd collect`",
                              (long long)scan.shards, data_dir.c_str(), (long long)scan.bad_rows,
                              scan.first_bad.empty() ? "" : "; first: ", scan.first_bad.c_str()));
  if (scan.valid_rows == 0 && lc.kd_weight > 0)
    return cli_fail(a, errorf("all %lld teacher steps in %s are marked invalid (valid=false: non-finite logprobs or "
                              "top-K mass outside (0, 1]): there is no teacher distribution to distil. Check the "
                              "collector's stats (logs/collect_stats.json), or train on the responses alone with "
                              "--kd-weight 0",
                              (long long)scan.rows, data_dir.c_str()));
  if (scan.bad_rows)
    BK_LOG_WARN("train: %lld unreadable step row(s) will be skipped (first: %s)", (long long)scan.bad_rows,
                scan.first_bad.c_str());
  BK_LOG_INFO("train: %lld shard(s) in %s, %lld teacher steps (%lld valid, %lld invalid, %lld unreadable)",
              (long long)scan.shards, data_dir.c_str(), (long long)scan.rows, (long long)scan.valid_rows,
              (long long)(scan.rows - scan.valid_rows), (long long)scan.bad_rows);

  ArtifactPaths paths = artifact_paths(a.cfg);
  opt.checkpoint_dir = arg_str(a, "out").empty() ? paths.checkpoints : arg_str(a, "out");
  opt.metrics_path =
      arg_str(a, "metrics").empty() ? path_join(paths.logs, "train_metrics.jsonl") : arg_str(a, "metrics");
  opt.label = "train";
  opt.flip_bits = 4;
  const long long flip_at = (long long)std::llround(budget * frac);
  if (!no_flip) opt.flip_at_tokens = flip_at > 0 ? flip_at : 1;

  Model m;
  if (resume) {
    opt.resume_from = checkpoint_find_latest(opt.checkpoint_dir);
    if (opt.resume_from.empty())
      BK_LOG_WARN("train: --resume: no checkpoint in %s, starting fresh", opt.checkpoint_dir.c_str());
  }
  if (!opt.resume_from.empty()) {
    ModelConfig ck;
    st = checkpoint_read_config(opt.resume_from, &ck);
    if (!st.ok()) return cli_fail(a, st);
    if (ck.vocab_size < tokenizer_vocab_size(tok))
      return cli_fail(a, errorf("%s has vocab %d but the student tokenizer has %d tokens: not the same tokenizer",
                                opt.resume_from.c_str(), ck.vocab_size, tokenizer_vocab_size(tok)));
    if (ck.max_seq_len < opt.seq)
      return cli_fail(a, errorf("%s was trained with max_seq_len %d; MAX_SEQ_LEN %d is longer",
                                opt.resume_from.c_str(), ck.max_seq_len, opt.seq));
    cfg = ck;
  } else {
    st = model_init(&m, cfg, opt.seed);
    if (!st.ok()) return cli_fail(a, st);
    BK_LOG_INFO("train: student %s (%zu parameters), checkpoints in %s", model_config_to_json(cfg).c_str(),
                model_num_params(m), opt.checkpoint_dir.c_str());
  }
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
  {
    nlohmann::ordered_json s;
    s["command"] = "train";
    s["data"] = data_dir;
    s["shards"] = scan.shards;
    s["teacher_steps"] = scan.rows;
    s["tokenizer"] = tok_path;
    s["tokenizer_hash"] = tokenizer_hash(tok);
    s["kd_loss"] = kd_divergence_name(lc.divergence);
    s["tau"] = lc.tau;
    s["tau2_scale"] = lc.tau2_scale;
    s["kd_weight"] = lc.kd_weight;
    s["ce_weight"] = lc.ce_weight;
    s["format_weight"] = lc.format_weight;
    s["plain_ce_weight"] = lc.plain_ce_weight;
    s["topk"] = kd_stream_topk(stream);
    s["batch"] = opt.batch;
    s["seq"] = opt.seq;
    s["grad_accum"] = opt.grad_accum;
    s["total_steps"] = opt.total_steps;
    s["flip_at_tokens"] = opt.flip_at_tokens;
    s["a4_scope"] = a4_scope_name(cfg.a4_scope);
    s["schedule"] = nlohmann::ordered_json::parse(schedule_to_json(opt.sched));
    s["deterministic"] = deterministic;
    opt.summary_json = s.dump();
  }

  KdAux aux;
  KdRunStats rs;
  rs.recent_kl.reserve(opt.grad_accum);
  LoaderBatch kb;
  TrainerCallbacks cb;
  cb.next_batch = [&](Batch* b, Rng*) -> Status {
    BK_TRY(kd_stream_next(&stream, &kb));
    batch_resize(b, kb.B, kb.T);
    b->tokens.swap(kb.tokens);
    b->key_mask.swap(kb.key_mask);
    b->targets.swap(kb.targets);
    for (size_t i = 0; i < b->targets.size(); i++) b->weights[i] = b->targets[i] >= 0 ? 1.0f : 0.0f;
    b->real_tokens = kb.loss_tokens;
    aux.K = kb.K;
    aux.kd_mask.swap(kb.kd_mask);
    aux.is_struct.swap(kb.is_struct);
    aux.topk_ids.swap(kb.topk_ids);
    aux.topk_logprobs.swap(kb.topk_logprobs);
    aux.other_logprob.swap(kb.other_logprob);
    rs.epoch = kb.epoch;
    b->user = &aux;
    return ok_status();
  };
  cb.loss = [&](float* logits, const Batch& b, const Model& mm, LossResult* out) -> Status {
    const KdAux* x = static_cast<const KdAux*>(b.user);
    if (!x) return errorf("train: batch without KD targets");
    KdTargets t;
    t.n = b.batch * b.seq;
    t.K = x->K;
    t.targets = b.targets.data();
    t.kd_mask = x->kd_mask.data();
    t.is_struct = x->is_struct.data();
    t.topk_ids = x->topk_ids.data();
    t.topk_logprobs = x->topk_logprobs.data();
    t.other_logprob = x->other_logprob.data();
    KdLossParts p;
    kd_loss_forward_backward(logits, mm.cfg.vocab_size, t, lc, &p);
    out->loss = p.loss;
    out->metrics = {{"kl", p.kd_mean}, {"ce", p.ce_mean}, {"format", p.format_mean}};
    rs.bad_kd += p.bad_kd;
    rs.other_clamped += p.other_clamped;
    rs.duplicate_ids += p.duplicate_ids;
    rs.kd_positions += p.kd_positions;
    if (rs.loss_calls == 0) rs.kl_first = p.kd_mean, rs.ce_first = p.ce_mean;
    rs.loss_calls++;
    if ((int)rs.recent_kl.size() == opt.grad_accum) rs.recent_kl.erase(rs.recent_kl.begin()),
                                                  rs.recent_ce.erase(rs.recent_ce.begin());
    rs.recent_kl.push_back(p.kd_mean);
    rs.recent_ce.push_back(p.ce_mean);
    return ok_status();
  };
  auto position_json = [&]() {
    nlohmann::ordered_json j;
    j["batches"] = kd_stream_position(stream);
    j["epoch"] = rs.epoch;
    return j;
  };
  cb.save_position = [&]() { return position_json().dump(); };
  cb.restore_position = [&](const std::string& s) -> Status {
    int64_t start = 0;
    try {
      nlohmann::json j = nlohmann::json::parse(s);
      start = j.at("batches").get<int64_t>();
    } catch (const std::exception& e) {
      return errorf("data_position '%s' is not a KD training position (%s)", s.c_str(), e.what());
    }
    KdStreamOptions ro = so;
    ro.start_batch = start;
    BK_LOG_INFO("train: resuming the data stream after %lld batches", (long long)start);
    return kd_stream_open(a.cfg, ro, tok, &stream);
  };
  cb.extra_json = [&]() {
    nlohmann::ordered_json j;
    j["kd_loss"] = kd_divergence_name(lc.divergence);
    j["kd_weight"] = lc.kd_weight;
    nlohmann::ordered_json ls = nlohmann::ordered_json::parse(kd_stream_stats_json(stream));
    const long long bad_rows = ls.value("bad_step_rows", 0LL);
    j["nan_guards"] = rs.bad_kd + bad_rows;
    j["bad_kd_buckets"] = rs.bad_kd;
    j["bad_step_rows"] = bad_rows;
    j["other_clamped"] = rs.other_clamped;
    j["kd_positions"] = rs.kd_positions;
    j["data_position"] = position_json();
    return j.dump();
  };
  TrainResult r;
  st = trainer_run(&m, opt, cb, &r);
  if (!st.ok()) return cli_fail(a, st);
  BK_LOG_INFO("train: data: %s", kd_stream_stats_line(stream).c_str());
  if (opt.flip_at_tokens > 0 && !r.flip.flip_done)
    BK_LOG_WARN("train: stopped at %lld real seen tokens, before the A8 -> A4 flip at %lld (FLIP_FRACTION x "
                "BUDGET_TOKENS): the student still uses %d-bit activations",
                r.seen_tokens, opt.flip_at_tokens, m.cfg.act_bits);

  nlohmann::ordered_json out;
  out["checkpoint"] = r.last_checkpoint;
  out["steps"] = r.steps_done;
  out["steps_this_run"] = r.steps_this_run;
  out["first_loss"] = num_or_null(r.first_loss);
  out["last_loss"] = num_or_null(r.last_loss);
  out["first_kl"] = num_or_null(rs.kl_first);
  out["last_kl"] = num_or_null(mean_of(rs.recent_kl));
  out["first_ce"] = num_or_null(rs.ce_first);
  out["last_ce"] = num_or_null(mean_of(rs.recent_ce));
  out["seen_tokens"] = r.seen_tokens;
  out["flip_done"] = r.flip.flip_done;
  out["flip_step"] = r.flip.flip_step;
  out["flip_tokens"] = r.flip.flip_tokens;
  out["act_bits"] = m.cfg.act_bits;
  out["skipped_steps"] = r.skipped;
  out["nan_guards"] = nlohmann::ordered_json::parse(cb.extra_json())["nan_guards"];
  out["tokens_per_s"] = r.tokens_per_s;
  out["wall_s"] = r.wall_s;
  out["metrics"] = opt.metrics_path;
  out["data"] = nlohmann::ordered_json::parse(kd_stream_stats_json(stream));
  printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace

const Command& command_train() {
  static const Command c = [] {
    Command cmd{
        "train",
        "Distil KD shards into a ternary student (KL over top-K + other, CE, format loss; A8->A4 flip)",
        "Reads data/kd_shard_*.parquet with kd_prompts_*.parquet (KD_DATA_PATH, else DATA_DIR), aligns each\n"
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
            {"flip-fraction", "FLIP_FRACTION", nullptr, "Fraction of BUDGET_TOKENS at which activations go 8 -> 4 bit"},
            {"no-flip", nullptr, "", "Never flip activations", true},
            {"out", nullptr, "", "Checkpoint directory (default: CHECKPOINTS_DIR)"},
            {"metrics", nullptr, "", "Metrics JSONL (default: LOGS_DIR/train_metrics.jsonl)"},
            {"resume", nullptr, "", "Continue from the newest checkpoint in --out", true},
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
