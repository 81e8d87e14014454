// bitkd eval: the student through the packed engine, quality against the
// teacher baseline, agreement on a KD shard, QEI -> reports/mini_evaluation_report.json.
#include <cmath>
#include <cstdio>

#include "cli/cli.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/timing.h"
#include "eval/eval.h"
#include "eval/evaluate.h"
#include "kd/prompts.h"
#include "model/hf_model.h"
#include "model/infer.h"
#include "train/checkpoint.h"

namespace bk {

namespace {

// The student: --model (a file, or a directory of checkpoints), else the
// newest checkpoint in CHECKPOINTS_DIR. No checkpoint is an error: a QEI for
// a student that does not exist would be invented.
Status resolve_student(const Args& a, std::string* path) {
  std::string p = arg_str(a, "model");
  if (p.empty() || (dir_exists(p) && !hf_is_model_dir(p))) {  // a HF model directory is a model itself
    std::string dir = p.empty() ? artifact_paths(a.cfg).checkpoints : p;
    *path = checkpoint_find_latest(dir);
    if (path->empty())
      return errorf("no student checkpoint: %s has no mini_bitnet_step_N.safetensors. Train a student first "
                    "(`bitkd train`, make train) or pass --model FILE.safetensors|FILE.gguf; no report was written "
                    "(a QEI without a trained student would be invented)",
                    dir.c_str());
    return ok_status();
  }
  if (!file_exists(p) && !hf_is_model_dir(p)) return errorf("--model %s: no such file", p.c_str());
  *path = p;
  return ok_status();
}

std::string kd_data_dir(const Config& c) {
  std::string d = config_str(c, "KD_DATA_PATH");
  return d.empty() ? artifact_paths(c).data : d;
}

}  // namespace

static int run_eval(Args& a) {
  const Config& c = a.cfg;
  EvalReport rep;
  for (const char* v : {"EVAL_STUDENT_QUALITY", "EVAL_TEACHER_QUALITY"})
    if (config_has(c, v)) {
      std::string msg = std::string(v) + "=" + config_str(c, v) +
                        " is ignored: bitkd measures quality with the task scorers (the PoC's placeholder)";
      BK_LOG_WARN("%s", msg.c_str());
      rep.notes.push_back(msg);
    }

  long long max_prompts = 0, max_new = 0, seed = 0, kd_max = 0, max_seq = 0, max_topk = 0;
  double temperature = 0, top_p = 1;
  bool save = true, bos = true, no_kd = false, mismatch = false, untrained = false;
  if (!arg_int_or_report(a, "max-prompts", &max_prompts) || !arg_int_or_report(a, "max-new-tokens", &max_new) ||
      !arg_int_or_report(a, "SEED", &seed) || !arg_int_or_report(a, "kd-eval-max-examples", &kd_max) ||
      !arg_int_or_report(a, "MAX_SEQ_LEN", &max_seq) || !arg_int_or_report(a, "MAX_TOPK", &max_topk) ||
      !arg_double_or_report(a, "temperature", &temperature) || !arg_double_or_report(a, "top-p", &top_p))
    return 2;
  for (auto& b : std::vector<std::pair<const char*, bool*>>{
           {"SAVE_SAMPLE_GENERATIONS", &save}, {"bos", &bos}, {"no-kd-eval", &no_kd},
           {"allow-tokenizer-mismatch", &mismatch}, {"untrained-reference", &untrained}}) {
    Status st = arg_bool(a, b.first, b.second);
    if (!st.ok()) return cli_fail(a, st);
  }
  if (max_prompts < 0) return cli_fail(a, errorf("EVAL_MAX_PROMPTS=%lld must be >= 0 (0: all)", max_prompts));
  if (max_new < 1) return cli_fail(a, errorf("EVAL_MAX_NEW_TOKENS=%lld must be >= 1", max_new));
  if (!(temperature >= 0)) return cli_fail(a, errorf("EVAL_TEMPERATURE=%g must be >= 0", temperature));
  if (!(top_p > 0 && top_p <= 1)) return cli_fail(a, errorf("EVAL_TOP_P=%g must be in (0, 1]", top_p));
  std::string backend = arg_str(a, "backend");
  InferBackend be;
  if (backend == "packed") be = INFER_PACKED;
  else if (backend == "float") be = INFER_FLOAT;
  else return cli_fail(a, errorf("--backend %s: use packed (default) or float", backend.c_str()));

  std::string model_path;
  Status st = resolve_student(a, &model_path);
  if (!st.ok()) return cli_fail(a, st);
  ArtifactPaths paths = artifact_paths(c);
  std::string out = arg_str(a, "out");
  if (out.empty()) {
    st = ensure_artifact_dirs(c, paths);
    if (!st.ok()) return cli_fail(a, st);
    out = path_join(paths.reports, "mini_evaluation_report.json");
  }

  EvaluateOptions eo;
  eo.model_path = model_path;
  eo.tokenizer_path = arg_str(a, "tokenizer");
  eo.default_tokenizer_path = path_join(path_join(paths.root, "tokenizer"), "tokenizer.model");
  eo.backend = be;
  eo.prompts.file = arg_str(a, "prompts");
  eo.prompts.split = TASK_SPLIT_EVAL;
  eo.prompts.max_prompts = max_prompts;
  eo.prompts.seed = (uint64_t)seed;
  eo.gen.template_text = template_unescape(arg_str(a, "template"));
  eo.gen.max_new_tokens = (int)max_new;
  eo.gen.sampling.temperature = (float)temperature;
  eo.gen.sampling.top_p = (float)top_p;
  eo.gen.seed = (uint64_t)seed;
  eo.gen.add_bos = bos;
  eo.save_generations = save;
  eo.untrained_reference = untrained;
  eo.baseline_path = arg_str(a, "teacher-baseline");
  if (eo.baseline_path.empty()) eo.baseline_path = path_join(paths.reports, "teacher_baseline.json");
  eo.teacher_checkpoint = arg_str(a, "teacher-checkpoint");
  eo.teacher_tokenizer_path = config_str(c, "TEACHER_TOKENIZER");
  eo.teacher_memory_gb = config_str(a.cfg, "TEACHER_MEMORY_GB");
  eo.kd_eval = !no_kd;
  eo.kd_shard = arg_str(a, "kd-eval-shard");
  eo.kd_data_dir = kd_data_dir(c);
  eo.agreement.max_examples = (int)kd_max;
  eo.agreement.max_seq_len = (int)max_seq;
  eo.agreement.max_topk = (int)max_topk;
  eo.agreement.allow_tokenizer_mismatch = mismatch;
  eo.notes = rep.notes;
  st = evaluate_student(eo, &rep);
  if (!st.ok()) return cli_fail(a, st);

  rep.peak_rss_bytes = peak_rss_bytes();
  rep.timestamp = utc_timestamp_iso();
  st = write_file_atomic(out, eval_report_json(rep));
  if (!st.ok()) return cli_fail(a, st);

  const QualityComparison& q = rep.quality;
  QeiResult qr = qei_compute(q.student.n ? q.student.score : NAN, q.have_teacher && q.teacher.n ? q.teacher.score : NAN,
                             rep.weights.total / 1e9, rep.teacher_memory_bytes > 0 ? rep.teacher_memory_bytes / 1e9 : NAN,
                             rep.throughput.mean_prompt_tps, rep.have_baseline ? rep.teacher_tps : NAN);
  printf("eval: %zu prompts, prefill %.1f tok/s, decode %.1f tok/s, weights %.2f MB (%s)\n", rep.results.size(),
         rep.throughput.prefill_tps, rep.throughput.decode_tps, rep.weights.total / 1e6,
         rep.weights.projection_format.c_str());
  if (q.student.n) printf("  quality: student %.3f", q.student.score);
  else printf("  quality: no scored prompt (items without task/reference)");
  if (q.have_teacher && q.teacher.n) printf(", teacher %.3f", q.teacher.score);
  if (rep.have_untrained && rep.untrained.n) printf(", untrained %.3f", rep.untrained.score);
  if (q.student.n) printf(" over %lld prompts", (long long)q.student.n);
  if (rep.have_agreement) printf("; top-1 agreement %.3f, KL %.3f", rep.agreement.top1, rep.agreement.kl_mean);
  printf("\n  qei %s", qr.qei.defined ? std::to_string(qr.qei.value).c_str() : ("null (" + qr.qei.reason + ")").c_str());
  printf(", qei_speed %s\nwrote %s\n",
         qr.qei_speed.defined ? std::to_string(qr.qei_speed.value).c_str() : "null", out.c_str());
  return 0;
}

const Command& command_eval() {
  static const Command c = {
      "eval",
      "Evaluate the student (packed engine): speed, memory, quality vs teacher, agreement, QEI",
      "Loads the newest checkpoint in CHECKPOINTS_DIR (or --model: .safetensors or .gguf), generates the eval\n"
      "prompts (EVAL_PROMPTS_FILE, else the task suite's held-out eval split) with TEMPLATE through the packed\n"
      "engine, scores them with the task scorers, rescores the teacher's baseline responses on the same\n"
      "prompts, measures top-1 agreement and KL against the teacher's distributions on a KD shard, and writes\n"
      "reports/mini_evaluation_report.json with QEI = (Qs/Qt)/(Ms/Mt) and QEI_speed = QEI * TPSs/TPSt.\n"
      "EVAL_STUDENT_QUALITY / EVAL_TEACHER_QUALITY are ignored: quality is measured.",
      {
          {"model", nullptr, "", "Student .safetensors/.gguf, a HF model directory (config.json), or a checkpoint directory (default CHECKPOINTS_DIR)"},
          {"tokenizer", "TOKENIZER_NAME", nullptr, "SentencePiece tokenizer.model of the student"},
          {"prompts", "EVAL_PROMPTS_FILE", nullptr, "Eval prompts (.txt one per line, or .jsonl with prompt/response/task)"},
          {"max-prompts", "EVAL_MAX_PROMPTS", nullptr, "Prompt count (0: all)"},
          {"max-new-tokens", "EVAL_MAX_NEW_TOKENS", nullptr, "Max new tokens per prompt"},
          {"temperature", "EVAL_TEMPERATURE", nullptr, "Sampling temperature (0: greedy)"},
          {"top-p", "EVAL_TOP_P", nullptr, "top_p"},
          {"template", "TEMPLATE", nullptr, "Chat template with {prompt}"},
          {"backend", nullptr, "packed", "packed (2-bit ternary, integer kernels) or float (fp32 fake-quant)"},
          {"teacher-baseline", nullptr, "", "Teacher baseline report (default REPORTS_DIR/teacher_baseline.json)"},
          {"teacher-checkpoint", "TEACHER_CHECKPOINT", nullptr, "Local teacher checkpoint: its weight bytes are measured"},
          {"kd-eval-shard", nullptr, "", "KD shard for agreement/KL (default: the last kd_shard_*.parquet)"},
          {"kd-eval-max-examples", nullptr, "32", "Prompts of the KD shard evaluated (0: all)"},
          {"no-kd-eval", nullptr, "", "Skip agreement/KL", true},
          {"allow-tokenizer-mismatch", nullptr, "", "Use a shard projected for another tokenizer", true},
          {"untrained-reference", nullptr, "",
           "Also generate and score with random weights of the student's shape (report quality.untrained)", true},
          {"bos", nullptr, "1", "Prepend BOS to every prompt (1/0), as `bitkd serve` does"},
          {"out", nullptr, "", "Report path (default REPORTS_DIR/mini_evaluation_report.json)"},
      },
      run_eval,
  };
  return c;
}

}  // namespace bk
