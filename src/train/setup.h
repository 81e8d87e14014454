#pragma once
// What every training command decides before its first step, one rule each:
// the kernels' thread count, the default checkpoint and metrics paths, the
// A8 -> A4 flip budget, resuming from a checkpoint, and the result a run
// reports (the JSON line `bitkd train` prints and `bitkd pipeline` reads).
// `bitkd train`, `bitkd pretrain`, the pipeline's train stage and
// `bitkd experiment` all go through these functions.
#include <string>

#include "core/status.h"
#include "data/loader/loader.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "train/trainer.h"

namespace bk {

struct Config;

// ---- threads
// The kernels' thread count: DETERMINISTIC=1 gives 1 (reductions in one
// order), THREADS > 0 gives that many, else the machine's cores shared by the
// ranks on it (`mpirun -np N` on one machine: cores / N each).
int train_thread_count(bool deterministic, long long threads, int cores, int local_ranks);
// Reads DETERMINISTIC and THREADS, applies train_thread_count to the kernels
// (OpenMP and OpenBLAS) and returns it in *threads (may be null).
Status train_setup_threads(const Config& c, int* threads, bool* deterministic);

// ---- paths
// --out else CHECKPOINTS_DIR (<root>/checkpoints); --metrics else
// LOGS_DIR/train_metrics.jsonl. Empty flags take the defaults.
void train_default_paths(const Config& c, const std::string& out_flag, const std::string& metrics_flag,
                         std::string* checkpoint_dir, std::string* metrics_path);

// ---- the A8 -> A4 flip budget
// BUDGET_TOKENS for a run that sees `steps` optimizer steps of `batch` x
// `grad_accum` examples with `mean_targets` target tokens each: the real
// target tokens it will see, rounded down. GRAD_ACCUM_STEPS is the global
// count of micro-batches per step: under MPI the ranks split them
// (trainer.cpp) and every rank counts all of them, so ranks do not enter.
double flip_budget_tokens(double mean_targets, long long batch, long long grad_accum, long long steps);
// The seen-token count the flip happens at: fraction x budget, rounded to the
// nearest integer (std::llround, what `bitkd train` always did; `bitkd
// pretrain --flip` truncated before), and at least 1 so a zero budget still
// flips at the first step.
long long flip_at_tokens(double budget_tokens, double fraction);
// flip_budget_tokens over the data itself: one pass of the loader with the
// training options `lo` (its batch and sequence length) to count the mean
// target tokens per example. *note: one line for the log saying how the
// number came about.
Status flip_budget_from_data(const LoaderOptions& lo, const Tokenizer& student, long long grad_accum, long long steps,
                             double* budget, std::string* note);

// ---- resume
struct ResumeRequest {
  const char* label = "train";  // the command, for messages
  bool resume = false;          // --resume
  std::string checkpoint_dir;   // where the newest checkpoint is looked for
  int tokenizer_vocab = 0;      // the tokenizer's vocabulary
  int seq = 0;                  // MAX_SEQ_LEN of this run
  // The flags describe the model's shape (false when the shape comes from
  // --init-from): a checkpoint whose shape differs gets one warning.
  bool shape_from_flags = true;
};
// With --resume, finds the newest checkpoint in checkpoint_dir (none: a
// warning and a fresh start, *resume_from empty). A checkpoint must hold the
// tokenizer's vocabulary and at least `seq` positions; its model wins over
// the flags (*cfg becomes its config), with one warning when the flags asked
// for another shape (activation bits and max_seq_len may differ: the flip and
// a shorter run change them legitimately).
Status train_resolve_resume(const ResumeRequest& r, ModelConfig* cfg, std::string* resume_from);
// The flags' model must hold the tokenizer's vocabulary.
Status train_check_vocab(const ModelConfig& cfg, int tokenizer_vocab);

// ---- the result of a run
// What `bitkd train` and `bitkd pretrain` print as their last stdout line
// (one JSON object) and `bitkd pipeline` reads back. NaN losses are null.
struct TrainReport {
  std::string checkpoint;
  long steps = 0, steps_this_run = 0;
  double first_loss = 0, last_loss = 0;
  bool kd = false;  // the KD fields below are present (bitkd train)
  double first_kl = 0, last_kl = 0, first_ce = 0, last_ce = 0;
  long long seen_tokens = 0;
  bool flip_done = false;
  long flip_step = 0;
  long long flip_tokens = 0;
  int act_bits = 0;
  long skipped_steps = 0;
  long long nan_guards = 0;
  double tokens_per_s = 0;
  int ranks = 1;
  double allreduce_s = 0, wall_s = 0;
  std::string metrics;
  std::string data_json;  // the loader's counters (bitkd train), a JSON object
};
// The report of a trainer run (the KD fields are left to the caller).
TrainReport train_report_from(const TrainResult& r, int act_bits, const std::string& metrics_path);
std::string train_report_to_json(const TrainReport& r);
// Parses the last line of `text` that is a JSON object (a command's stdout or
// its log). Missing fields keep their defaults; no such line is an error.
Status train_report_parse(const std::string& text, TrainReport* out);

}  // namespace bk
