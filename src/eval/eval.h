#pragma once
// Student evaluation (`bitkd eval`): generation through the inference engine
// with timing, task quality against the teacher baseline's responses scored
// the same way, top-1 agreement and KL against teacher distributions on a KD
// shard, QEI, and reports/mini_evaluation_report.json.
//
//   QEI       = (Qs / Qt) / (Ms / Mt)      quality ratio per memory ratio
//   QEI_speed = QEI * (TPSs / TPSt)
//
// Q: mean task score over the prompts both sides answered (the teacher's
// baseline responses rescored with the same scorer); M: weight bytes held for
// inference (GB = 1e9 bytes); TPS: the teacher baseline's definition, mean over
// prompts of generated tokens / generation wall time.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "kd/prompts.h"
#include "model/infer.h"
#include "model/infer_synthetic.h"

namespace bk {

struct Tokenizer;

// ---- generation -------------------------------------------------------------

struct EvalGenOptions {
  std::string template_text;  // chat template with {prompt}, escapes already resolved
  int max_new_tokens = 256;
  SamplingParams sampling;    // EVAL_TEMPERATURE / EVAL_TOP_P
  uint64_t seed = 1234;
  bool add_bos = true;        // as `bitkd serve` does for the teacher
  bool progress = true;
};

struct EvalPromptResult {
  PromptItem item;
  std::string response;
  std::string finish_reason;  // "stop" (EOS) or "length"
  int prompt_tokens = 0;
  int tokens_generated = 0;
  int decode_steps = 0;       // single-token forwards after the prefill
  double prefill_s = 0, decode_s = 0;
  bool scored = false;        // the item has a task and a reference
  double score = 0;
  int json_valid = -1;        // JSON families: 1/0; else -1
  std::string answer;         // the answer scored, when taken out of a longer reply ("" otherwise)
};

// Renders, encodes and generates every prompt on one session, then scores the
// responses with the task suite's scorers.
Status eval_generate(const InferWeights* w, const Tokenizer& tok, const std::vector<PromptItem>& items,
                     const EvalGenOptions& opt, std::vector<EvalPromptResult>* out);

struct EvalThroughput {
  int64_t prompt_tokens = 0, generated_tokens = 0, decode_steps = 0;
  double prefill_s = 0, decode_s = 0;
  double prefill_tps = 0;        // prompt tokens / prefill time, over all prompts
  double decode_tps = 0;         // decode steps / decode time, over all prompts
  double mean_prompt_tps = 0;    // mean over prompts of tokens_generated / (prefill + decode): the PoC's TPS
};
EvalThroughput eval_throughput(const std::vector<EvalPromptResult>& results);

// ---- teacher baseline ----------------------------------------------------------

struct TeacherBaselineRow {
  std::string prompt, response, task, reference;
  bool ok = false;  // the request succeeded
};

struct TeacherBaseline {
  std::string path, provider, model, timestamp, prompts_hash;
  double memory_bytes = 0;     // memory_teacher_constant
  std::string memory_source;   // memory_teacher_source ("" in PoC reports)
  double avg_decode_tps = 0;   // metrics.avg_decode_tps_8k
  std::vector<TeacherBaselineRow> rows;
};

// Reads reports/teacher_baseline.json (bitkd's or the PoC's). Errors name the
// file and the field.
Status teacher_baseline_load(const std::string& path, TeacherBaseline* out);

// ---- quality ---------------------------------------------------------------------

struct QualitySide {
  int64_t n = 0;              // scored prompts
  double score = 0;           // mean task score
  int64_t json_n = 0;         // JSON-family prompts among them
  double json_validity = 0;   // fraction of those whose response parses
  struct Family {
    int64_t n = 0;
    double score = 0;  // mean over its n prompts
  };
  std::map<std::string, Family> per_task;  // by task family (same shape as the baseline's)
};

struct QualityComparison {
  bool have_teacher = false;
  QualitySide student, teacher;  // both over the same counted prompts
  int64_t student_prompts = 0, teacher_prompts = 0;
  int64_t matched = 0;           // student prompts found in the baseline (by prompt text)
  int64_t student_only = 0, teacher_only = 0;
  int64_t unscored = 0;          // student prompts without task/reference
  // Per student result: counts toward quality; baseline row (-1: none); the
  // teacher's rescored score and JSON validity when matched and scored.
  std::vector<uint8_t> counted;
  std::vector<int> teacher_row;
  std::vector<double> teacher_score;
  std::vector<int> teacher_json_valid;
  std::string note;              // how the sets were compared
};

// Matches student prompts to baseline rows by prompt text and rescores the
// teacher's responses with the student item's task and reference (a failed
// teacher request scores 0, as in the baseline). tb may be null (no baseline:
// student-only quality over every scored prompt).
Status compare_quality(const std::vector<EvalPromptResult>& results, const TeacherBaseline* tb,
                       QualityComparison* out);

// ---- QEI -----------------------------------------------------------------------

struct QeiValue {
  bool defined = false;
  double value = 0;
  std::string reason;  // why it is undefined ("" when defined)
};
struct QeiResult {
  QeiValue qei, qei_speed;
};
// Inputs that are unknown are NaN. Never divides by zero: Qt = 0, Ms = 0 or
// TPSt = 0 leave the value undefined with the reason.
QeiResult qei_compute(double qs, double qt, double ms_gb, double mt_gb, double tps_s, double tps_t);

// The PoC's acceptance gates, one definition: eval writes them into its
// report (qei_metrics.gates) and the pipeline summary shows them from there.
// A gate whose inputs are unknown is not evaluated, never a pass.
struct QeiGate {
  const char* key;     // "qei_ge_0.2", ...
  const char* item;    // "QEI >= 0.2"
  const char* status;  // "pass", "fail" or "not_evaluated"
  std::string detail;  // the measured values it compared
};
// json_validity: the student's share of valid JSON answers over json_n JSON
// tasks (json_n 0: none scored).
std::vector<QeiGate> qei_gates(double qs, double qt, const QeiResult& qr, double json_validity, int json_n);

// ---- agreement with teacher distributions on a KD shard ----------------------------

struct KdAgreementOptions {
  std::string shard;           // data/kd_shard_NNN.parquet (its kd_prompts_NNN.parquet beside it)
  int max_examples = 32;       // prompts evaluated (0: all)
  int max_seq_len = 256;       // tokens per example (the model's context)
  int max_topk = 20;
  bool allow_tokenizer_mismatch = false;
};

struct KdAgreement {
  std::string shard;
  int64_t examples = 0;
  int64_t positions = 0;       // positions with a teacher distribution
  int64_t agree = 0;           // student argmax == teacher top-1
  double top1 = 0;             // agree / positions
  double kl_mean = 0;          // mean KL(teacher || student) over the K+1 buckets, tau 1
  int64_t kl_positions = 0;
  std::string loader_stats;
};

// Runs the student over the aligned sequences of the shard (prompt + teacher
// response) and compares its next-token distribution with the teacher's at
// every position that has a teacher top-K.
Status kd_agreement_run(const InferWeights* w, const Tokenizer& tok, const KdAgreementOptions& opt, KdAgreement* out);

// KL(q || p) over K'+1 buckets at temperature 1 (docs/evaluation.md): q from the
// teacher's top-K logprobs and other_logprob (renormalised), p the student's
// softmax mass on the same ids and on everything else. Slots with id < 0 are
// ignored, duplicate ids merged by log-sum-exp; teacher logs are floored at
// -1e4 and the student's other mass at 1e-12, as in the training loss.
// Returns false (and no value) when no slot is usable or a value is not finite.
bool kd_bucket_kl(const float* logits, int vocab, const int32_t* ids, const float* logprobs, int K, float other_logprob,
                  double* kl);

// ---- report -----------------------------------------------------------------------

struct EvalReport {
  std::string timestamp, device, dtype;
  std::string tokenizer_path, tokenizer_hash;
  int tokenizer_vocab = 0;
  // model_meta
  std::string model_path, model_format, model_config_json, training_json;
  long model_step = -1;
  int64_t model_params = 0;
  std::string backend;          // "packed" or "float"
  // eval_config
  std::string template_text, prompts_source, prompts_hash;
  int max_new_tokens = 0;
  int64_t max_prompts = 0;
  double temperature = 0, top_p = 1;
  uint64_t seed = 0;
  int threads = 1;
  bool save_generations = true;
  std::vector<EvalPromptResult> results;
  QualityComparison quality;
  EvalThroughput throughput;
  InferWeightBytes weights;
  int64_t peak_rss_bytes = 0, rss_after_load_bytes = 0;
  // teacher
  bool have_baseline = false;
  std::string baseline_path, teacher_model, teacher_provider;
  double teacher_tps = 0;
  // How teacher_tps was measured: "in_process" (the local teacher generated
  // the same prompts through the same session code as the student, so
  // QEI_speed compares like with like) or "baseline" (the baseline's TPS,
  // over HTTP for a served teacher).
  std::string teacher_tps_source;
  double teacher_memory_bytes = 0;
  std::string teacher_memory_source;
  // agreement
  bool have_agreement = false;
  KdAgreement agreement;
  std::string agreement_reason;  // why there is none
  // Reference: a randomly initialised model of the student's shape, generated
  // and scored on the same prompts (what "untrained" gets on this suite).
  bool have_untrained = false;
  QualitySide untrained;
  uint64_t untrained_seed = 0;
  std::map<std::string, std::string> sources;
  std::vector<std::string> notes;
};

// The report as JSON text: the PoC's fields (timestamp, device, dtype,
// tokenizer, model_meta, eval_config, qei_metrics, results) plus bitkd's
// (throughput, memory, quality, agreement, sources, notes). student_quality
// is the mean of results[].score over the results with counted = true.
std::string eval_report_json(const EvalReport& r);

}  // namespace bk
