#pragma once
// KD training of a student from KD traces: the aligned loader (data/loader),
// looping with every batch exactly [batch, seq], the fused KD loss
// (train/kd_loss.h) and the shared training loop (train/trainer.h: AdamW,
// the A8 -> A4 flip, checkpoints, exact resume). `bitkd train` is this plus
// argument handling; tests call it directly.
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/loader/loader.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "train/kd_loss.h"
#include "train/trainer.h"

namespace bk {

struct KdTrainOptions {
  TrainerOptions trainer;  // steps, batch, seq, schedule, checkpoints, flip, resume_from
  KdLossConfig loss;
  // loader_options_from_config plus overrides; batch, seq and seed come from
  // trainer, and the stream loops and never trims.
  LoaderOptions data;
  ModelConfig model;       // a fresh student (resuming: the checkpoint's config wins)
  // A float model (checkpoint or GGUF) the student starts from instead of
  // random weights (BitDistill's recipe): its shape and weights, with the
  // student's quantization (model.weight_quant, act_bits, a4_scope) and SubLN
  // added where it had none. Needs the student's tokenizer.
  std::string init_from;
  // Attention-relation distillation against this float teacher (its weights
  // stay fixed; trainer.h relation_*): weight 0 is off. The teacher is the
  // init_from model, kept when resuming.
  std::string attn_relation_teacher;
  float attn_relation_weight = 0;
  int attn_relation_layer = -1;
};

// The student model of init_from: the source's shape and weights copied by
// name (SubLN gains it lacks start at 1), with the quantization of `quant`.
// *copied counts the tensors taken from the source.
Status student_from_teacher(const std::string& path, const ModelConfig& quant, uint64_t seed, Model* m, int* copied);

struct KdTrainResult {
  TrainResult train;
  double first_kl = 0, last_kl = 0, first_ce = 0, last_ce = 0;  // last: mean over the last step's micro-batches
  int act_bits = 0;           // at the end
  long long nan_guards = 0;   // non-finite KD buckets plus unreadable step rows
  std::string data_stats_json;  // the loader's counters
  std::string data_stats_line;
  std::string data_dir;
};

// Refuses data that cannot train before any work (no readable step; no valid
// teacher step while the KD term is on), then trains. *m is the model after
// the last step.
Status kd_train_run(const KdTrainOptions& o, const Tokenizer& student, Model* m, KdTrainResult* out);

// A pass over the step shards without alignment: rows, valid rows, unreadable rows.
struct KdShardScan {
  int64_t shards = 0;
  int64_t rows = 0;        // readable step rows
  int64_t valid_rows = 0;  // rows with valid = true
  int64_t bad_rows = 0;    // unreadable rows skipped (NaN teacher values, bad list lengths)
  std::string first_bad;
};
Status kd_scan_shards(const std::vector<std::string>& shards, KdShardScan* out);

}  // namespace bk
