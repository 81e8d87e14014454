#pragma once
// A small reusable training loop: batches from a callback, micro-batches with
// gradient accumulation, forward -> loss (callback; CE by default) ->
// backward, AdamW with the schedule, clipping and the non-finite guard, the
// A8 -> A4 activation flip, logs/train_metrics.jsonl, periodic checkpoints, a
// progress bar, and exact resume (data position and RNG restored).
//
// Used by `bitkd pretrain` (CE on text) and by KD training (its own batch
// source and loss).
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/rng.h"
#include "core/status.h"
#include "model/model.h"
#include "train/checkpoint.h"
#include "train/optimizer.h"

namespace bk {

// One micro-batch, [B, T] row-major. Position t of a row is the model input
// tokens[t]; targets[t] is what the model should predict there (usually
// tokens[t+1]) and weights[t] its CE weight (0: no loss, e.g. prompt or pad).
struct Batch {
  int batch = 0, seq = 0;
  std::vector<int32_t> tokens;    // [B*T]
  std::vector<uint8_t> key_mask;  // [B*T] 1 = real token, 0 = padding
  std::vector<int32_t> targets;   // [B*T] -1 = none
  std::vector<float> weights;     // [B*T]
  long long real_tokens = 0;      // positions with a real target (counted as seen tokens)
  void* user = nullptr;           // the batch source's own per-batch data (KD targets, ...)
};
void batch_resize(Batch* b, int batch, int seq);  // pads everything (mask 0, target -1, weight 0)

struct LossResult {
  double loss = 0;  // mean loss of the micro-batch (what was differentiated)
  // Extra values to log: averaged over the interval in metrics lines; the
  // step's own values (mean over its micro-batches) go to the health file and
  // the progress bar.
  std::vector<std::pair<std::string, double>> metrics;
};

// Fills the next micro-batch. rng is the trainer's generator (saved in checkpoints).
using BatchFn = std::function<Status(Batch* b, Rng* rng)>;
// Reads the logits [B*T, vocab] and overwrites them with dL/dlogits (mean over
// the micro-batch); the trainer averages over accumulation steps.
using LossFn = std::function<Status(float* logits, const Batch& b, const Model& m, LossResult* out)>;

struct TrainerCallbacks {
  BatchFn next_batch;                                         // required
  std::function<std::string()> save_position;                 // the source's position (JSON) for checkpoints
  std::function<Status(const std::string&)> restore_position; // called on resume
  LossFn loss;                                                // empty: weighted CE on targets/weights
  // Optional: a JSON object added to every health file and metrics line (the
  // health file also gets lr, grad_norm, tokens_per_s, skipped_steps,
  // flip_step, flip_tokens and the step's loss metrics).
  std::function<std::string()> extra_json;
};

struct TrainerOptions {
  std::string label = "train";        // progress bar / log prefix
  int batch = 4, seq = 256, grad_accum = 1;
  long total_steps = 1000;            // optimizer steps, counted from 0 (a resumed run continues)
  long log_interval = 50;             // metrics line every this many steps (and at the last step)
  long checkpoint_interval = 200;     // 0: only at the end
  int keep_checkpoints = 3;
  std::string checkpoint_dir;         // "" = no checkpoints
  std::string metrics_path;           // "" = no metrics file
  AdamWConfig adam;
  ScheduleConfig sched;
  long long flip_at_tokens = 0;       // > 0: act_bits -> flip_bits once seen tokens reach this
  int flip_bits = 4;
  std::string resume_from;            // a model checkpoint path ("" = start fresh)
  uint64_t seed = 1234;               // seeds the trainer RNG on a fresh start
  std::string summary_json;           // stored in every checkpoint's metadata
  bool progress = true;
  // Attention-relation distillation (train/attn_relation.h): this float
  // teacher of the student's heads and head size runs on every micro-batch,
  // and relation_weight x the relation loss of one layer joins the loss
  // (logged as attn_rel). relation_weight 0: off.
  Model* relation_teacher = nullptr;
  int relation_layer = -1;  // -1: the last layer
  float relation_weight = 0;
};

struct TrainResult {
  long steps_done = 0;        // total optimizer steps completed (including before a resume)
  long steps_this_run = 0;
  double first_loss = 0, last_loss = 0;  // first and last step's mean loss of this run
  long skipped = 0;           // updates skipped by the non-finite guard (whole run)
  long long seen_tokens = 0;
  FlipState flip;
  std::string last_checkpoint;
  double tokens_per_s = 0;    // input tokens (B*T*accum per step) over this run's wall time
  double wall_s = 0;
  int ranks = 1;              // data-parallel ranks (core/dist)
  double allreduce_s = 0;     // of wall_s: time in the gradient and loss sums over ranks
};

// Trains *m in place. With resume_from, *m is replaced by the checkpoint's
// model (its config wins) and training continues from its step; otherwise *m
// must be initialised. Writes checkpoints at every checkpoint_interval and at
// the end.
Status trainer_run(Model* m, const TrainerOptions& opt, const TrainerCallbacks& cb, TrainResult* out);

}  // namespace bk
