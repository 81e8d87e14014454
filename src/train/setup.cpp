#include "train/setup.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "core/dist.h"
#include "core/fs.h"
#include "core/log.h"
#include "io/config.h"
#include "kernels/cpu/kernels.h"
#include "train/checkpoint.h"

namespace bk {

int train_thread_count(bool deterministic, long long threads, int cores, int local_ranks) {
  if (deterministic) return 1;
  if (threads > 0) return (int)threads;
  return std::max(1, cores / std::max(1, local_ranks));
}

Status train_setup_threads(const Config& c, int* threads, bool* deterministic) {
  bool det = false;
  long long t = 0;
  BK_TRY(config_bool(c, "DETERMINISTIC", &det));
  BK_TRY(config_int(c, "THREADS", &t));
  const int n = train_thread_count(det, t, omp_get_num_procs(), dist_local_size());
  kernels_set_threads(n);
  if (threads) *threads = n;
  if (deterministic) *deterministic = det;
  return ok_status();
}

void train_default_paths(const Config& c, const std::string& out_flag, const std::string& metrics_flag,
                         std::string* checkpoint_dir, std::string* metrics_path) {
  const ArtifactPaths p = artifact_paths(c);
  *checkpoint_dir = out_flag.empty() ? p.checkpoints : out_flag;
  *metrics_path = metrics_flag.empty() ? path_join(p.logs, "train_metrics.jsonl") : metrics_flag;
}

double flip_budget_tokens(double mean_targets, long long batch, long long grad_accum, long long steps) {
  return std::floor(mean_targets * (double)batch * (double)std::max(1LL, grad_accum) * (double)steps);
}

long long flip_at_tokens(double budget_tokens, double fraction) {
  const long long at = (long long)std::llround(budget_tokens * fraction);
  return at > 0 ? at : 1;
}

Status flip_budget_from_data(const LoaderOptions& lo, const Tokenizer& student, long long grad_accum, long long steps,
                             double* budget, std::string* note) {
  double mean = 0;
  int64_t n = 0;
  BK_TRY(loader_count_targets(lo, student, &mean, &n));
  *budget = flip_budget_tokens(mean, lo.batch_size, grad_accum, steps);
  char b[256];
  snprintf(b, sizeof b, "BUDGET_TOKENS = %.0f: %lld steps x %lld examples x %.6g mean target tokens over %lld training examples",
           *budget, steps, (long long)lo.batch_size * std::max(1LL, grad_accum), mean, (long long)n);
  if (note) *note = b;
  return ok_status();
}

Status train_check_vocab(const ModelConfig& cfg, int tokenizer_vocab) {
  if (cfg.vocab_size < tokenizer_vocab)
    return errorf("--vocab %d is smaller than the tokenizer's vocabulary (%d)", cfg.vocab_size, tokenizer_vocab);
  return ok_status();
}

// The shape a checkpoint and the flags are compared on: everything but what
// a run changes legitimately (the flip's activation bits, the sequence length).
static std::string shape_of(ModelConfig c) {
  c.act_bits = 0;
  c.max_seq_len = 0;
  return model_config_to_json(c);
}

Status train_resolve_resume(const ResumeRequest& r, ModelConfig* cfg, std::string* resume_from) {
  resume_from->clear();
  if (!r.resume) return ok_status();
  *resume_from = checkpoint_find_latest(r.checkpoint_dir);
  if (resume_from->empty()) {
    BK_LOG_WARN("%s: --resume: no checkpoint in %s, starting fresh", r.label, r.checkpoint_dir.c_str());
    return ok_status();
  }
  ModelConfig ck;
  BK_TRY(checkpoint_read_config(*resume_from, &ck));
  if (ck.vocab_size < r.tokenizer_vocab)
    return errorf("%s has vocab %d but the tokenizer has %d tokens: not the same tokenizer", resume_from->c_str(),
                  ck.vocab_size, r.tokenizer_vocab);
  if (ck.max_seq_len < r.seq)
    return errorf("%s was trained with max_seq_len %d; MAX_SEQ_LEN (--seq) %d is longer", resume_from->c_str(),
                  ck.max_seq_len, r.seq);
  if (r.shape_from_flags && shape_of(ck) != shape_of(*cfg))
    BK_LOG_WARN("%s: --resume uses the checkpoint's model %s, not the one the flags describe (%s)", r.label,
                model_config_to_json(ck).c_str(), model_config_to_json(*cfg).c_str());
  *cfg = ck;
  return ok_status();
}

// ---- the report ----------------------------------------------------------------

using ojson = nlohmann::ordered_json;

static ojson num_or_null(double v) { return std::isfinite(v) ? ojson(v) : ojson(); }

TrainReport train_report_from(const TrainResult& r, int act_bits, const std::string& metrics_path) {
  TrainReport t;
  t.checkpoint = r.last_checkpoint;
  t.steps = r.steps_done;
  t.steps_this_run = r.steps_this_run;
  t.first_loss = r.first_loss;
  t.last_loss = r.last_loss;
  t.seen_tokens = r.seen_tokens;
  t.flip_done = r.flip.flip_done;
  t.flip_step = r.flip.flip_step;
  t.flip_tokens = r.flip.flip_tokens;
  t.act_bits = act_bits;
  t.skipped_steps = r.skipped;
  t.tokens_per_s = r.tokens_per_s;
  t.ranks = r.ranks;
  t.allreduce_s = r.allreduce_s;
  t.wall_s = r.wall_s;
  t.metrics = metrics_path;
  return t;
}

std::string train_report_to_json(const TrainReport& r) {
  ojson out;
  out["checkpoint"] = r.checkpoint;
  out["steps"] = r.steps;
  out["steps_this_run"] = r.steps_this_run;
  out["first_loss"] = num_or_null(r.first_loss);
  out["last_loss"] = num_or_null(r.last_loss);
  if (r.kd) {
    out["first_kl"] = num_or_null(r.first_kl);
    out["last_kl"] = num_or_null(r.last_kl);
    out["first_ce"] = num_or_null(r.first_ce);
    out["last_ce"] = num_or_null(r.last_ce);
  }
  out["seen_tokens"] = r.seen_tokens;
  out["flip_done"] = r.flip_done;
  out["flip_step"] = r.flip_step;
  out["flip_tokens"] = r.flip_tokens;
  out["act_bits"] = r.act_bits;
  out["skipped_steps"] = r.skipped_steps;
  if (r.kd) out["nan_guards"] = r.nan_guards;
  out["tokens_per_s"] = r.tokens_per_s;
  if (r.ranks > 1) {
    out["ranks"] = r.ranks;
    out["allreduce_s"] = r.allreduce_s;
    out["allreduce_share"] = r.wall_s > 0 ? r.allreduce_s / r.wall_s : 0.0;
  }
  out["wall_s"] = r.wall_s;
  out["metrics"] = r.metrics;
  if (!r.data_json.empty()) out["data"] = ojson::parse(r.data_json, nullptr, false);
  return out.dump();
}

template <class T>
static void take(const ojson& j, const char* key, T* out) {
  if (j.contains(key) && !j[key].is_null()) *out = j[key].get<T>();
}
static void take_num(const ojson& j, const char* key, double* out) {
  if (!j.contains(key)) return;
  *out = j[key].is_number() ? j[key].get<double>() : NAN;  // null: the run wrote a non-finite value
}

Status train_report_parse(const std::string& text, TrainReport* out) {
  size_t end = text.size();
  while (end > 0) {
    size_t start = text.rfind('\n', end - 1);
    start = start == std::string::npos ? 0 : start + 1;
    if (start < end && text[start] == '{') {
      const ojson j = ojson::parse(text.substr(start, end - start), nullptr, false);
      if (j.is_object() && j.contains("steps")) {
        try {
          TrainReport r;
          take(j, "checkpoint", &r.checkpoint);
          take(j, "steps", &r.steps);
          take(j, "steps_this_run", &r.steps_this_run);
          take_num(j, "first_loss", &r.first_loss);
          take_num(j, "last_loss", &r.last_loss);
          r.kd = j.contains("first_kl");
          take_num(j, "first_kl", &r.first_kl);
          take_num(j, "last_kl", &r.last_kl);
          take_num(j, "first_ce", &r.first_ce);
          take_num(j, "last_ce", &r.last_ce);
          take(j, "seen_tokens", &r.seen_tokens);
          take(j, "flip_done", &r.flip_done);
          take(j, "flip_step", &r.flip_step);
          take(j, "flip_tokens", &r.flip_tokens);
          take(j, "act_bits", &r.act_bits);
          take(j, "skipped_steps", &r.skipped_steps);
          take(j, "nan_guards", &r.nan_guards);
          take(j, "tokens_per_s", &r.tokens_per_s);
          take(j, "ranks", &r.ranks);
          take(j, "allreduce_s", &r.allreduce_s);
          take(j, "wall_s", &r.wall_s);
          take(j, "metrics", &r.metrics);
          if (j.contains("data")) r.data_json = j["data"].dump();
          *out = r;
          return ok_status();
        } catch (const std::exception& e) {
          return errorf("a training report with a field of the wrong type (%s)", e.what());
        }
      }
    }
    if (start == 0) break;
    end = start - 1;
  }
  return errorf("no training report (a JSON line with \"steps\") found");
}

}  // namespace bk
