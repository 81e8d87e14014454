// bitkd eval: the student through the packed engine, quality against the
// teacher baseline, agreement on a KD shard, QEI -> reports/mini_evaluation_report.json.
#include <omp.h>

#include <cmath>
#include <cstdio>

#include "cli/cli.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/timing.h"
#include "eval/eval.h"
#include "kd/prompts.h"
#include "kernels/cpu/ternary.h"
#include "model/infer.h"
#include "model/infer_synthetic.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"
#include "train/model_load.h"

namespace bk {

namespace {

// The student: --model (a file, or a directory of checkpoints), else the
// newest checkpoint in CHECKPOINTS_DIR. No checkpoint is an error: a QEI for
// a student that does not exist would be invented.
Status resolve_student(const Args& a, std::string* path) {
  std::string p = arg_str(a, "model");
  if (p.empty() || dir_exists(p)) {
    std::string dir = p.empty() ? artifact_paths(a.cfg).checkpoints : p;
    *path = checkpoint_find_latest(dir);
    if (path->empty())
      return errorf("no student checkpoint: %s has no mini_bitnet_step_N.safetensors. Train a student first "
                    "(`bitkd train`, make train) or pass --model FILE.safetensors|FILE.gguf; no report was written "
                    "(a QEI without a trained student would be invented)",
                    dir.c_str());
    return ok_status();
  }
  if (!file_exists(p)) return errorf("--model %s: no such file", p.c_str());
  *path = p;
  return ok_status();
}

Status load_tokenizer(const Args& a, const ModelSource& src, Tokenizer* tok, std::string* desc) {
  std::string p = arg_str(a, "tokenizer");
  if (p.empty() && !src.tokenizer_model.empty()) {
    *desc = "embedded in the GGUF";
    return tokenizer_load_from_bytes(src.tokenizer_model, tok);
  }
  if (p.empty()) {
    std::string def = path_join(path_join(artifact_paths(a.cfg).root, "tokenizer"), "tokenizer.model");
    if (!file_exists(def))
      return errorf("no tokenizer: pass --tokenizer PATH/tokenizer.model (or set TOKENIZER_NAME), the one the "
                    "student was trained with");
    p = def;
  }
  *desc = p;
  return with_context(tokenizer_load(p, tok), "loading tokenizer " + p);
}

// Weight bytes a local teacher holds when served (fp32 backend, as `bitkd serve` defaults).
Status measure_teacher(const std::string& path, double* bytes) {
  Model m;
  BK_TRY(with_context(model_load_any(path, &m, nullptr), "TEACHER_CHECKPOINT " + path));
  InferWeights* w = nullptr;
  BK_TRY(with_context(infer_weights_create(&m, INFER_FLOAT, &w), path));
  *bytes = (double)infer_weights_bytes(w);
  infer_weights_destroy(w);
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
  double temperature = 0, top_p = 1, mem_gb = 0;
  bool save = true, bos = true, no_kd = false, mismatch = false, untrained = false;
  if (!arg_int_or_report(a, "max-prompts", &max_prompts) || !arg_int_or_report(a, "max-new-tokens", &max_new) ||
      !arg_int_or_report(a, "SEED", &seed) || !arg_int_or_report(a, "kd-eval-max-examples", &kd_max) ||
      !arg_int_or_report(a, "MAX_SEQ_LEN", &max_seq) || !arg_int_or_report(a, "MAX_TOPK", &max_topk) ||
      !arg_double_or_report(a, "temperature", &temperature) || !arg_double_or_report(a, "top-p", &top_p) ||
      !arg_double_or_report(a, "TEACHER_MEMORY_GB", &mem_gb))
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

  // ---- student: latent checkpoint -> inference weights (the fp32 model is dropped)
  InferWeights* weights = nullptr;
  ModelSource src;
  Tokenizer tok;
  std::string tok_desc;
  {
    Model m;
    st = model_load_any(model_path, &m, &src);
    if (!st.ok()) return cli_fail(a, with_context(st, "loading the student " + model_path));
    for (const std::string& w : src.warnings) BK_LOG_WARN("%s: %s", model_path.c_str(), w.c_str());
    st = load_tokenizer(a, src, &tok, &tok_desc);
    if (!st.ok()) return cli_fail(a, st);
    st = infer_weights_create(&m, be, &weights);
    if (!st.ok())
      return cli_fail(a, with_context(st, model_path + (be == INFER_PACKED ? " (pass --backend float for a float model)"
                                                                            : "")));
    rep.model_config_json = model_config_to_json(m.cfg);
    rep.model_params = (int64_t)model_num_params(m);
  }
  struct WeightsGuard {
    InferWeights* w;
    ~WeightsGuard() { infer_weights_destroy(w); }
  } guard{weights};
  rep.rss_after_load_bytes = current_rss_bytes();
  const ModelConfig& mc = infer_weights_config(weights);
  rep.model_path = model_path;
  rep.model_format = src.format;
  rep.model_step = src.step;
  rep.training_json = src.training_json;
  rep.backend = be == INFER_PACKED ? "packed" : "float";
  rep.tokenizer_path = tok_desc;
  rep.tokenizer_hash = tokenizer_hash(tok);
  rep.tokenizer_vocab = tokenizer_vocab_size(tok);
  infer_weights_bytes_by_component(weights, &rep.weights);
  rep.threads = omp_get_max_threads();
  std::string cpu = cpu_model_name();
  rep.device = "cpu" + (cpu.empty() ? std::string() : " (" + cpu + ")") + ", " + std::to_string(rep.threads) +
               " threads, ternary kernels " + ternary_backend();
  char dt[256];
  if (be == INFER_PACKED)
    snprintf(dt, sizeof dt,
             "%s weights (%.3f bits/weight incl. padding and gamma), int%d activations%s, %s embedding/norms/head",
             rep.weights.projection_format.c_str(), rep.weights.projection_bits_per_weight, mc.act_bits,
             mc.act_bits == 4 ? (mc.a4_scope == A4_HYBRID ? " (hybrid: o/down inputs int8)" : " (all projections)")
                              : "",
             rep.weights.embedding_dtype.c_str());
  else
    snprintf(dt, sizeof dt, "fp32%s", mc.weight_quant == WQ_TERNARY ? " (fake-quant ternary weights and activations)" : "");
  rep.dtype = dt;
  rep.sources["model"] = model_path;
  rep.sources["tokenizer"] = tok_desc;

  // ---- prompts and generation
  PromptSource ps;
  ps.file = arg_str(a, "prompts");
  ps.split = TASK_SPLIT_EVAL;
  ps.max_prompts = max_prompts;
  ps.seed = (uint64_t)seed;
  std::vector<PromptItem> prompts;
  st = prompts_load(ps, &prompts, &rep.prompts_source);
  if (!st.ok()) return cli_fail(a, st);
  if (prompts.empty()) return cli_fail(a, errorf("no eval prompts (%s)", rep.prompts_source.c_str()));
  rep.prompts_hash = prompts_hash(prompts);
  rep.sources["prompts"] = rep.prompts_source;
  EvalGenOptions go;
  go.template_text = template_unescape(arg_str(a, "template"));
  go.max_new_tokens = (int)max_new;
  go.sampling.temperature = (float)temperature;
  go.sampling.top_p = (float)top_p;
  go.seed = (uint64_t)seed;
  go.add_bos = bos;
  rep.template_text = go.template_text;
  rep.max_new_tokens = go.max_new_tokens;
  rep.max_prompts = max_prompts;
  rep.temperature = temperature;
  rep.top_p = top_p;
  rep.seed = (uint64_t)seed;
  rep.save_generations = save;
  BK_LOG_INFO("eval: %s (%s backend, %.2f MB of weights), %zu prompts from %s", model_path.c_str(),
              rep.backend.c_str(), rep.weights.total / 1e6, prompts.size(), rep.prompts_source.c_str());
  st = eval_generate(weights, tok, prompts, go, &rep.results);
  if (!st.ok()) return cli_fail(a, st);
  rep.throughput = eval_throughput(rep.results);

  // ---- reference: the same shape with random weights, same prompts and scorers
  if (untrained) {
    Model m0;
    InferWeights* w0 = nullptr;
    rep.untrained_seed = (uint64_t)seed;
    st = model_init(&m0, mc, rep.untrained_seed);
    if (st.ok()) st = infer_weights_create(&m0, be, &w0);
    std::vector<EvalPromptResult> r0;
    if (st.ok()) {
      BK_LOG_INFO("eval: untrained reference (random weights, seed %llu)", (unsigned long long)rep.untrained_seed);
      st = eval_generate(w0, tok, prompts, go, &r0);
      infer_weights_destroy(w0);
    }
    QualityComparison q0;
    if (st.ok()) st = compare_quality(r0, nullptr, &q0);
    if (!st.ok()) return cli_fail(a, with_context(st, "untrained reference"));
    rep.have_untrained = true;
    rep.untrained = q0.student;
  }

  // ---- teacher baseline: quality on the same prompts, TPS, memory
  std::string bpath = arg_str(a, "teacher-baseline");
  if (bpath.empty()) bpath = path_join(paths.reports, "teacher_baseline.json");
  TeacherBaseline tb;
  if (file_exists(bpath)) {
    st = teacher_baseline_load(bpath, &tb);
    if (!st.ok()) return cli_fail(a, st);
    rep.have_baseline = true;
    rep.baseline_path = bpath;
    rep.teacher_model = tb.model;
    rep.teacher_provider = tb.provider;
    rep.teacher_tps = tb.avg_decode_tps;
    rep.sources["teacher_quality"] = "responses in " + bpath + " rescored with the task scorers";
    rep.sources["teacher_tps"] = bpath + " metrics.avg_decode_tps_8k";
  } else {
    std::string msg = "no teacher baseline at " + bpath + ": run `bitkd teacher` (make teacher) for teacher quality "
                      "and TPS; qei is null until then";
    BK_LOG_WARN("%s", msg.c_str());
    rep.notes.push_back(msg);
    rep.sources["teacher_quality"] = "none (no baseline)";
  }
  st = compare_quality(rep.results, rep.have_baseline ? &tb : nullptr, &rep.quality);
  if (!st.ok()) return cli_fail(a, st);
  if (rep.have_baseline && (rep.quality.student_only || rep.quality.teacher_only)) {
    BK_LOG_WARN("%s", rep.quality.note.c_str());
    rep.notes.push_back(rep.quality.note);
  }
  std::string tckpt = arg_str(a, "teacher-checkpoint");
  if (!tckpt.empty()) {
    st = measure_teacher(tckpt, &rep.teacher_memory_bytes);
    if (!st.ok()) return cli_fail(a, st);
    rep.teacher_memory_source = "measured: fp32 inference weight bytes of " + tckpt;
  } else if (rep.have_baseline && tb.memory_bytes > 0) {
    rep.teacher_memory_bytes = tb.memory_bytes;
    rep.teacher_memory_source = bpath + " memory_teacher_constant" +
                                (tb.memory_source.empty() ? std::string() : " (" + tb.memory_source + ")");
  } else {
    rep.teacher_memory_bytes = mem_gb * 1e9;
    char buf[64];
    snprintf(buf, sizeof buf, "TEACHER_MEMORY_GB=%g", mem_gb);
    rep.teacher_memory_source = buf;
  }
  rep.sources["teacher_memory"] = rep.teacher_memory_source;
  rep.sources["student_memory"] = "inference weight bytes of the " + rep.backend + " backend";

  // ---- agreement with the teacher's distributions on a KD shard
  if (no_kd) {
    rep.agreement_reason = "skipped (--no-kd-eval)";
  } else {
    std::string shard = arg_str(a, "kd-eval-shard");
    const bool explicit_shard = !shard.empty();
    if (!explicit_shard) {
      std::vector<std::string> shards = list_files(kd_data_dir(c), "kd_shard_", ".parquet");
      if (!shards.empty()) shard = path_join(kd_data_dir(c), shards.back());
    }
    if (shard.empty()) {
      rep.agreement_reason = "no KD shard in " + kd_data_dir(c) + " (run `bitkd collect`, or pass --kd-eval-shard)";
    } else {
      KdAgreementOptions ko;
      ko.shard = shard;
      ko.max_examples = (int)kd_max;
      ko.max_seq_len = (int)max_seq;
      ko.max_topk = (int)max_topk;
      ko.allow_tokenizer_mismatch = mismatch;
      st = kd_agreement_run(weights, tok, ko, &rep.agreement);
      if (st.ok()) {
        rep.have_agreement = true;
        rep.sources["agreement"] = shard + (explicit_shard ? "" : " (the last shard; pass --kd-eval-shard for one the "
                                                                  "student did not train on)");
      } else if (explicit_shard) {
        return cli_fail(a, st);
      } else {
        rep.agreement_reason = st.msg;
        BK_LOG_WARN("agreement on %s: %s", shard.c_str(), st.msg.c_str());
      }
    }
  }

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
          {"model", nullptr, "", "Student .safetensors/.gguf, or a checkpoint directory (default CHECKPOINTS_DIR)"},
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
