#pragma once
// `bitkd experiment`: distillation recipes side by side. Every arm trains a
// student of the same shape for the same number of steps of the same batch
// (an equal token budget) from the pipeline's teacher and traces, with N
// seeds, and is scored on the validation split (carved from the train split;
// what recipes are chosen on) and on the held-out split (reported only).
// Writes reports/ablation.json and reports/ablation.md (mean +- sd).
#include <string>
#include <vector>

#include "core/status.h"
#include "io/config.h"

namespace bk {

struct ExperimentArm {
  const char* name;
  const char* what;        // one line for the table
  const char* sources;     // the trace source trained on (teacher_sample or reference)
  bool kd;                 // the KD term (false: CE only)
  bool init_from_teacher;  // start from the teacher's weights (else random)
  bool on_policy;          // rounds of: train, the student answers, the teacher scores those answers
  float attn_relation = 0;  // attention-relation distillation weight (0: off)
};
// The arms, in table order; the pipeline's default recipe is the one named by
// experiment_default_arm().
const std::vector<ExperimentArm>& experiment_arms();
const char* experiment_default_arm();

struct ExperimentOptions {
  std::vector<std::string> arms;  // empty: all
  int seeds = 3;
  long long steps = 0;            // 0: the pipeline's TOTAL_STEPS preset
  int on_policy_rounds = 1;       // on-policy arms: collections from the student, evenly spaced
  bool resume = false;            // reuse runs whose training finished with the same inputs (re-evaluated)
  std::string env_file;
};

Status experiment_run(const Config& cfg, const ExperimentOptions& o);

}  // namespace bk
