#pragma once
// A whole student evaluation (what `bitkd eval` runs): load the student into
// an inference backend, generate and score the prompts, optionally an
// untrained reference of the same shape, the teacher's baseline rescored on
// the same prompts, the teacher's memory, agreement and KL on a KD shard.
#include <string>
#include <vector>

#include "core/status.h"
#include "eval/eval.h"
#include "kd/prompts.h"
#include "model/infer.h"

namespace bk {

struct EvaluateOptions {
  std::string model_path;      // a checkpoint or GGUF file
  std::string tokenizer_path;  // "" = the one the GGUF embeds, else default_tokenizer_path
  std::string default_tokenizer_path;
  InferBackend backend = INFER_PACKED;
  PromptSource prompts;
  EvalGenOptions gen;
  bool save_generations = true;
  bool untrained_reference = false;  // also random weights of the student's shape, same seed as gen
  std::string baseline_path;         // teacher_baseline.json ("" or missing: no teacher side)
  // The teacher's memory: its checkpoint's weight bytes when given, else the
  // baseline's recorded value, else declared (TEACHER_MEMORY_GB text; empty:
  // unknown, and QEI is not evaluated).
  std::string teacher_checkpoint;
  std::string teacher_memory_gb;
  // With a local teacher checkpoint: time its decode in this process on the
  // same prompts (QEI_speed like for like) instead of the baseline's TPS.
  bool teacher_tps_in_process = true;
  std::string teacher_tokenizer_path;  // the teacher's tokenizer ("" = the student's)
  // Agreement and KL: kd_shard when set (an error if unusable), else the last
  // shard of kd_data_dir (a note if unusable); kd_eval false skips them.
  bool kd_eval = true;
  std::string kd_shard, kd_data_dir;
  KdAgreementOptions agreement;  // shard set from the above
  std::vector<std::string> notes;
};

// Fills every field of *rep but the timestamp and peak RSS.
Status evaluate_student(const EvaluateOptions& o, EvalReport* rep);

}  // namespace bk
