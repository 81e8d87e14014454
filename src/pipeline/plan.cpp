// The pipeline's presets and the plan of a run (plan.h).
#include "pipeline/plan.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/process.h"

namespace bk {

namespace {

// Sized so that `make run` finishes in about 15 minutes on 2 cores: the float
// teacher learns several task families in about 7 minutes (two layers with
// narrow heads learn to copy from the prompt far sooner than deeper or wider
// models per CPU second); the longest reference answer is about 35 tokens.
const std::vector<PipelinePreset> k_presets = {
    {"PIPELINE_VAL_PROMPTS", "200", false, "16", "validation items carved from the train split (choosing recipes)"},
    {"TOKENIZER_TRAIN_TASKS", "20000", false, "2000", "task items the tokenizers are trained on"},
    {"PIPELINE_STUDENT_TOKENIZER", "teacher", false, "teacher",
     "local teacher: the student uses the teacher's tokenizer (teacher), or one of its own (own)"},
    {"PIPELINE_TEACHER_VOCAB", "2048", false, "512", "teacher tokenizer vocabulary"},
    {"PIPELINE_STUDENT_VOCAB", "768", false, "384", "student tokenizer vocabulary"},
    {"PIPELINE_TEACHER_TOKENIZER_TYPE", "bpe", false, "bpe", "teacher tokenizer type"},
    {"PIPELINE_STUDENT_TOKENIZER_TYPE", "unigram", false, "unigram", "student tokenizer type"},
    {"PIPELINE_TEACHER_DIM", "128", false, "64", "float teacher hidden size (heads = dim / 32)"},
    {"PIPELINE_TEACHER_LAYERS", "2", false, "2", "float teacher layers"},
    {"PIPELINE_TEACHER_STEPS", "2400", true, "40", "float teacher pretraining steps (batch 16, seq 96)"},
    {"PIPELINE_TEACHER_LR", "3e-3", false, "3e-3", "float teacher peak learning rate (cosine to 1/20)"},
    {"TEACHER_BASELINE_MAX_PROMPTS", "200", false, "16", "held-out prompts for the baseline"},
    {"TEACHER_BASELINE_MAX_TOKENS", "40", false, "40", "answer length limit of baseline, eval and collection"},
    {"EVAL_MAX_PROMPTS", "200", false, "16", "held-out prompts for eval (= the baseline's)"},
    {"KD_MAX_PROMPTS", "5000", true, "48", "train prompts the teacher answers or scores with logprobs"},
    {"KD_SOURCES", "reference", false, "reference",
     "trace sources collected and trained on: reference (the teacher scores the reference answers), teacher_sample"},
    {"PIPELINE_STUDENT_INIT", "teacher", false, "teacher",
     "the student starts from the local teacher's weights (teacher, with a shared tokenizer) or random ones (random)"},
    {"TEACHER_CONCURRENCY", "2", false, "2", "requests in flight to the teacher"},
    {"MINI_DIM", "128", false, "64", "student hidden size"},
    {"MINI_LAYERS", "2", false, "2", "student layers"},
    {"MINI_HEADS", "4", false, "2", "student attention heads"},
    {"MINI_FFN_DIM", "0", false, "0", "student FFN width (0: 8/3 x dim, rounded up to 64)"},
    {"MAX_SEQ_LEN", "104", false, "104", "student training sequence length"},
    {"TRAIN_BATCH_SIZE", "16", false, "8", "student batch"},
    {"TOTAL_STEPS", "2000", true, "40", "student training steps"},
    {"LR", "3e-3", false, "3e-3", "student peak learning rate"},
    {"KD_WEIGHT", "0.25", false, "0.25", "weight of the KD term (the teacher's distribution)"},
    {"KD_CE_WEIGHT", "1.0", false, "1.0", "weight of CE on the trace's tokens (the reference answers)"},
};

const PipelinePreset& preset(const char* var) {
  for (const PipelinePreset& p : k_presets)
    if (strcmp(p.var, var) == 0) return p;
  // A programming error: every preset lookup names a row of the table.
  fprintf(stderr, "pipeline: no preset for %s\n", var);
  abort();
}

long long scaled(long long base, double s) { return std::max(1LL, (long long)llround((double)base * s)); }

// The value of var: the user's, else the preset (at this scale).
Status pick_str(const Config& c, const PipelinePlan& p, const char* var, std::string* out) {
  const PipelinePreset& pr = preset(var);
  *out = config_user_set(c, var) ? config_str(c, var) : (p.tiny ? pr.tiny : pr.value);
  return ok_status();
}

Status pick_int(const Config& c, const PipelinePlan& p, const char* var, long long* out) {
  if (config_user_set(c, var)) return config_int(c, var, out);
  const PipelinePreset& pr = preset(var);
  long long v = atoll(p.tiny ? pr.tiny : pr.value);
  *out = pr.scales && !p.tiny ? scaled(v, p.scale) : v;
  return ok_status();
}

Status pick_double(const Config& c, const PipelinePlan& p, const char* var, double* out) {
  if (config_user_set(c, var)) return config_double(c, var, out);
  const PipelinePreset& pr = preset(var);
  *out = atof(p.tiny ? pr.tiny : pr.value);
  return ok_status();
}

// A variable that is not a preset: the user's value, else what the plan derives.
Status pick_derived(const Config& c, const char* var, long long derived, long long* out) {
  if (config_user_set(c, var)) return config_int(c, var, out);
  *out = derived;
  return ok_status();
}

}  // namespace

const std::vector<PipelinePreset>& pipeline_presets() { return k_presets; }

std::string pipeline_presets_markdown() {
  std::string s = "| variable | preset | tiny | what |\n| --- | --- | --- | --- |\n";
  for (const PipelinePreset& p : k_presets)
    s += std::string("| `") + p.var + "` | `" + p.value + "`" + (p.scales ? " x scale" : "") + " | `" + p.tiny +
         "` | " + p.what + " |\n";
  return s;
}

Status pipeline_plan_make(const Config& c, PipelinePlan* p) {
  std::string sc = config_str(c, "PIPELINE_SCALE", "1");
  for (char& ch : sc) ch = (char)tolower((unsigned char)ch);
  if (sc == "tiny") {
    p->tiny = true;
    p->scale = 1;
  } else {
    char* end = nullptr;
    p->scale = strtod(sc.c_str(), &end);
    if (end == sc.c_str() || *end || !(p->scale > 0) || p->scale > 1000)
      return errorf("PIPELINE_SCALE=%s: use tiny, 1 (the default), or a larger number such as 2 or 4", sc.c_str());
  }
  p->scale_name = sc;
  const bool tiny = p->tiny;

  p->tasks_train = tiny ? 2000 : scaled(20000, p->scale);
  BK_TRY(pick_int(c, *p, "PIPELINE_VAL_PROMPTS", &p->tasks_val));
  std::string stok, sinit, sources;
  BK_TRY(pick_str(c, *p, "PIPELINE_STUDENT_TOKENIZER", &stok));
  BK_TRY(pick_str(c, *p, "PIPELINE_STUDENT_INIT", &sinit));
  BK_TRY(pick_str(c, *p, "KD_SOURCES", &sources));
  if (stok != "teacher" && stok != "own")
    return errorf("PIPELINE_STUDENT_TOKENIZER=%s: use teacher or own", stok.c_str());
  if (sinit != "teacher" && sinit != "random")
    return errorf("PIPELINE_STUDENT_INIT=%s: use teacher or random", sinit.c_str());
  p->student_shares_tokenizer = stok == "teacher";
  p->init_from_teacher = sinit == "teacher";
  p->kd_sources.clear();
  for (size_t at = 0; at <= sources.size();) {
    size_t comma = sources.find(',', at);
    if (comma == std::string::npos) comma = sources.size();
    std::string one = sources.substr(at, comma - at);
    at = comma + 1;
    if (one.empty()) continue;
    if (one != "teacher_sample" && one != "reference")
      return errorf("KD_SOURCES=%s: the pipeline collects teacher_sample and reference traces ('%s' is neither; "
                    "on_policy traces need a student first: see `bitkd experiment`)",
                    sources.c_str(), one.c_str());
    p->kd_sources.push_back(one);
  }
  if (p->kd_sources.empty()) return errorf("KD_SOURCES is empty: name teacher_sample and/or reference");
  BK_TRY(pick_int(c, *p, "TOKENIZER_TRAIN_TASKS", &p->tokenizer_tasks));
  BK_TRY(pick_int(c, *p, "PIPELINE_TEACHER_VOCAB", &p->teacher_vocab));
  BK_TRY(pick_int(c, *p, "PIPELINE_STUDENT_VOCAB", &p->student_vocab));
  BK_TRY(pick_str(c, *p, "PIPELINE_TEACHER_TOKENIZER_TYPE", &p->teacher_tok_type));
  BK_TRY(pick_str(c, *p, "PIPELINE_STUDENT_TOKENIZER_TYPE", &p->student_tok_type));

  BK_TRY(pick_int(c, *p, "PIPELINE_TEACHER_DIM", &p->t_dim));
  BK_TRY(pick_int(c, *p, "PIPELINE_TEACHER_LAYERS", &p->t_layers));
  p->t_heads = std::max(1LL, p->t_dim / 32);
  p->t_seq = 96;
  p->t_batch = tiny ? 8 : 16;
  BK_TRY(pick_int(c, *p, "PIPELINE_TEACHER_STEPS", &p->t_steps));
  BK_TRY(pick_double(c, *p, "PIPELINE_TEACHER_LR", &p->t_lr));
  p->t_min_lr = p->t_lr / 20;
  p->t_warmup = std::min(30LL, std::max(1LL, p->t_steps / 10));
  p->t_wd = 0.01;

  BK_TRY(pick_int(c, *p, "TEACHER_BASELINE_MAX_PROMPTS", &p->baseline_prompts));
  BK_TRY(pick_int(c, *p, "TEACHER_BASELINE_MAX_TOKENS", &p->baseline_tokens));
  BK_TRY(pick_derived(c, "EVAL_MAX_PROMPTS", p->baseline_prompts, &p->eval_prompts));
  BK_TRY(pick_derived(c, "EVAL_MAX_NEW_TOKENS", p->baseline_tokens, &p->eval_tokens));
  p->tasks_eval = std::max(p->baseline_prompts, p->eval_prompts);
  BK_TRY(pick_int(c, *p, "KD_MAX_PROMPTS", &p->kd_prompts));
  BK_TRY(pick_derived(c, "KD_MAX_TOKENS_PER_PROMPT", p->baseline_tokens, &p->kd_tokens));
  BK_TRY(pick_int(c, *p, "TEACHER_CONCURRENCY", &p->concurrency));

  BK_TRY(pick_int(c, *p, "MINI_DIM", &p->s_dim));
  BK_TRY(pick_int(c, *p, "MINI_LAYERS", &p->s_layers));
  BK_TRY(pick_int(c, *p, "MINI_HEADS", &p->s_heads));
  BK_TRY(pick_int(c, *p, "MINI_FFN_DIM", &p->s_ffn));
  BK_TRY(pick_int(c, *p, "MAX_SEQ_LEN", &p->s_seq));
  BK_TRY(pick_int(c, *p, "TRAIN_BATCH_SIZE", &p->s_batch));
  BK_TRY(pick_int(c, *p, "TOTAL_STEPS", &p->s_steps));
  BK_TRY(pick_double(c, *p, "LR", &p->s_lr));
  BK_TRY(pick_double(c, *p, "KD_WEIGHT", &p->kd_weight));
  BK_TRY(pick_double(c, *p, "KD_CE_WEIGHT", &p->ce_weight));
  BK_TRY(pick_derived(c, "WARMUP_STEPS", std::min(30LL, std::max(1LL, p->s_steps / 10)), &p->s_warmup));
  BK_TRY(pick_derived(c, "CHECKPOINT_INTERVAL", std::max(1LL, p->s_steps / 2), &p->s_ckpt_interval));
  BK_TRY(pick_derived(c, "LOG_INTERVAL", std::max(1LL, std::min(25LL, p->s_steps / 10)), &p->s_log_interval));
  p->budget_user = config_user_set(c, "BUDGET_TOKENS");
  if (p->budget_user) BK_TRY(config_double(c, "BUDGET_TOKENS", &p->budget_user_value));

  if (tiny) {
    // A small shape instead of 7B, so the smoke run takes seconds.
    p->dryrun_flags = {"--dim", "256", "--layers", "2", "--heads", "4", "--head-dim", "64", "--vocab", "1024", "--seq",
                       "16"};
  } else if (!config_user_set(c, "DRYRUN_VOCAB")) {
    p->dryrun_flags = {"--vocab", "32000"};  // the PoC's 7B used TinyLlama's 32000-token vocabulary
  }

  nlohmann::ordered_json& j = p->settings;
  j["scale"] = p->scale_name;
  j["tasks"] = {{"train", p->tasks_train}, {"val", p->tasks_val}, {"eval", p->tasks_eval},
                {"tokenizer_corpus", p->tokenizer_tasks}};
  j["tokenizers"] = {{"teacher", {{"type", p->teacher_tok_type}, {"vocab", p->teacher_vocab}}},
                     {"student", {{"type", p->student_tok_type}, {"vocab", p->student_vocab}}}};
  j["teacher"] = {{"dim", p->t_dim},     {"layers", p->t_layers}, {"heads", p->t_heads},
                  {"seq", p->t_seq},     {"batch", p->t_batch},   {"steps", p->t_steps},
                  {"lr", p->t_lr},       {"min_lr", p->t_min_lr}, {"warmup", p->t_warmup},
                  {"weight_decay", p->t_wd}, {"weight_quant", "none"}, {"act_bits", 0}};
  j["baseline"] = {{"prompts", p->baseline_prompts}, {"max_tokens", p->baseline_tokens}};
  j["collect"] = {{"prompts", p->kd_prompts}, {"max_tokens", p->kd_tokens}, {"concurrency", p->concurrency},
                  {"sources", p->kd_sources}};
  j["student"] = {{"dim", p->s_dim},     {"layers", p->s_layers}, {"heads", p->s_heads},   {"ffn", p->s_ffn},
                  {"seq", p->s_seq},     {"batch", p->s_batch},   {"steps", p->s_steps},   {"lr", p->s_lr},
                  {"warmup", p->s_warmup}, {"weight_quant", "ternary"}, {"kd_weight", p->kd_weight},
                  {"ce_weight", p->ce_weight},
                  {"tokenizer", p->student_shares_tokenizer ? "teacher's (local teacher)" : "its own"},
                  {"init", p->init_from_teacher ? "teacher's weights (local teacher)" : "random"}};
  j["eval"] = {{"prompts", p->eval_prompts}, {"max_new_tokens", p->eval_tokens}};
  j["dryrun"] = p->dryrun_flags.empty() ? nlohmann::ordered_json("DRYRUN_* settings")
                                        : nlohmann::ordered_json(shell_join(p->dryrun_flags));
  return ok_status();
}

}  // namespace bk
