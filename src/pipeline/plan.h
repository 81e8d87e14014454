#pragma once
// The sizes and settings of one `bitkd pipeline` run: every value comes from
// the variable the user set (flag, environment or .env) or else from the
// preset of PIPELINE_SCALE in the preset table below, the one place those
// numbers live (the README's preset table is generated from it).
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/status.h"
#include "io/config.h"

namespace bk {

struct PipelinePreset {
  const char* var;     // the variable that overrides it
  const char* value;   // at PIPELINE_SCALE=1
  bool scales;         // multiplied by PIPELINE_SCALE (rounded)
  const char* tiny;    // at PIPELINE_SCALE=tiny
  const char* what;
};
const std::vector<PipelinePreset>& pipeline_presets();
// The preset table as Markdown (README, `bitkd check-env --markdown`).
std::string pipeline_presets_markdown();

struct PipelinePlan {
  std::string scale_name;  // "1", "2", "tiny", ...
  double scale = 1;
  bool tiny = false;
  // task suite
  long long tasks_train = 0, tasks_val = 0, tasks_eval = 0, tokenizer_tasks = 0;
  // tokenizers
  long long teacher_vocab = 0, student_vocab = 0;
  std::string teacher_tok_type, student_tok_type;
  // float teacher
  long long t_dim = 0, t_layers = 0, t_heads = 0, t_seq = 0, t_batch = 0, t_steps = 0, t_warmup = 0;
  double t_lr = 0, t_min_lr = 0, t_wd = 0;
  // baseline, eval, collect
  long long baseline_prompts = 0, baseline_tokens = 0, eval_prompts = 0, eval_tokens = 0;
  long long kd_prompts = 0, kd_tokens = 0, concurrency = 0;
  std::vector<std::string> kd_sources;  // "reference", "teacher_sample"
  // student
  long long s_dim = 0, s_layers = 0, s_heads = 0, s_ffn = 0, s_seq = 0, s_batch = 0, s_steps = 0, s_warmup = 0;
  long long s_ckpt_interval = 0, s_log_interval = 0;
  double s_lr = 0, kd_weight = 0, ce_weight = 0;
  // With a local teacher: the student uses its tokenizer, and starts from its weights.
  bool student_shares_tokenizer = true, init_from_teacher = true;
  bool budget_user = false;  // BUDGET_TOKENS set by the user (else counted from the traces)
  double budget_user_value = 0;
  // dry run: empty = the 7B defaults
  std::vector<std::string> dryrun_flags;
  nlohmann::ordered_json settings;  // everything above, for the summary
};

Status pipeline_plan_make(const Config& c, PipelinePlan* p);

}  // namespace bk
