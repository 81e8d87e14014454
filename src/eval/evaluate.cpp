// evaluate.h: one student evaluation, end to end.
#include "eval/evaluate.h"

#include <omp.h>

#include <cmath>
#include <cstdio>

#include "core/fs.h"
#include "core/log.h"
#include "core/timing.h"
#include "kd/baseline.h"
#include "kernels/cpu/kernels.h"
#include "model/infer_synthetic.h"
#include "tokenizer/tokenizer.h"
#include "train/model_load.h"

namespace bk {

namespace {

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

struct WeightsGuard {
  InferWeights* w = nullptr;
  ~WeightsGuard() { infer_weights_destroy(w); }
};

}  // namespace

Status evaluate_student(const EvaluateOptions& o, EvalReport* rep_out) {
  EvalReport& rep = *rep_out;
  rep.notes = o.notes;
  const InferBackend be = o.backend;

  // ---- student: latent checkpoint -> inference weights (the fp32 model is dropped)
  WeightsGuard guard;
  ModelSource src;
  Tokenizer tok;
  {
    Model m;
    BK_TRY(with_context(model_load_any(o.model_path, &m, &src), "loading the student " + o.model_path));
    for (const std::string& w : src.warnings) BK_LOG_WARN("%s: %s", o.model_path.c_str(), w.c_str());
    std::string tp = o.tokenizer_path;
    if (tp.empty() && !src.tokenizer_model.empty()) {
      BK_TRY(tokenizer_load_from_bytes(src.tokenizer_model, &tok));
      rep.tokenizer_path = "embedded in the GGUF";
    } else {
      if (tp.empty() && file_exists(o.default_tokenizer_path)) tp = o.default_tokenizer_path;
      if (tp.empty())
        return errorf("no tokenizer: pass --tokenizer PATH/tokenizer.model (or set TOKENIZER_NAME), the one the "
                      "student was trained with");
      BK_TRY(with_context(tokenizer_load(tp, &tok), "loading tokenizer " + tp));
      rep.tokenizer_path = tp;
    }
    BK_TRY(with_context(infer_weights_create(&m, be, &guard.w, src.embed_type),
                        o.model_path + (be == INFER_PACKED ? " (pass --backend float for a float model)" : "")));
    rep.model_config_json = model_config_to_json(m.cfg);
    rep.model_params = (int64_t)model_num_params(m);
  }
  InferWeights* weights = guard.w;
  rep.rss_after_load_bytes = current_rss_bytes();
  const ModelConfig& mc = infer_weights_config(weights);
  rep.model_path = o.model_path;
  rep.model_format = src.format;
  rep.model_step = src.step;
  rep.training_json = src.training_json;
  rep.backend = be == INFER_PACKED ? "packed" : "float";
  rep.tokenizer_hash = tokenizer_hash(tok);
  rep.tokenizer_vocab = tokenizer_vocab_size(tok);
  infer_weights_bytes_by_component(weights, &rep.weights);
  rep.threads = omp_get_max_threads();
  const KernelInfo& ki = kernels_info();
  rep.device = "cpu" + (ki.cpu.empty() ? std::string() : " (" + ki.cpu + ")") + ", " + std::to_string(rep.threads) +
               " threads, " + ki.vector_isa + ", ternary kernels " + ki.ternary + ", BLAS " + ki.blas_family;
  char dt[256];
  if (be == INFER_PACKED)
    snprintf(dt, sizeof dt,
             "%s weights (%.3f bits/weight incl. padding and gamma), int%d activations%s, %s embedding/norms/head",
             rep.weights.projection_format.c_str(), rep.weights.projection_bits_per_weight, mc.act_bits,
             mc.act_bits == 4 ? (mc.a4_scope == A4_HYBRID ? " (hybrid: o/down inputs int8)" : " (all projections)")
                              : "",
             rep.weights.embedding_dtype.c_str());
  else
    snprintf(dt, sizeof dt, "fp32%s", mc.weight_quant == WQ_TERNARY ? " (ternary codes, fp32 sums)" : "");
  rep.dtype = dt;
  rep.sources["model"] = o.model_path;
  rep.sources["tokenizer"] = rep.tokenizer_path;

  // ---- prompts and generation
  std::vector<PromptItem> prompts;
  BK_TRY(prompts_load(o.prompts, &prompts, &rep.prompts_source));
  if (prompts.empty()) return errorf("no eval prompts (%s)", rep.prompts_source.c_str());
  rep.prompts_hash = prompts_hash(prompts);
  rep.sources["prompts"] = rep.prompts_source;
  rep.template_text = o.gen.template_text;
  rep.max_new_tokens = o.gen.max_new_tokens;
  rep.max_prompts = o.prompts.max_prompts;
  rep.temperature = o.gen.sampling.temperature;
  rep.top_p = o.gen.sampling.top_p;
  rep.seed = o.gen.seed;
  rep.save_generations = o.save_generations;
  BK_LOG_INFO("eval: %s (%s backend, %.2f MB of weights), %zu prompts from %s", o.model_path.c_str(),
              rep.backend.c_str(), rep.weights.total / 1e6, prompts.size(), rep.prompts_source.c_str());
  BK_TRY(eval_generate(weights, tok, prompts, o.gen, &rep.results));
  rep.throughput = eval_throughput(rep.results);

  // ---- reference: the same shape with random weights, same prompts and scorers
  if (o.untrained_reference) {
    Model m0;
    WeightsGuard w0;
    rep.untrained_seed = o.gen.seed;
    Status st = model_init(&m0, mc, rep.untrained_seed);
    if (st.ok()) st = infer_weights_create(&m0, be, &w0.w);
    std::vector<EvalPromptResult> r0;
    if (st.ok()) {
      BK_LOG_INFO("eval: untrained reference (random weights, seed %llu)", (unsigned long long)rep.untrained_seed);
      st = eval_generate(w0.w, tok, prompts, o.gen, &r0);
    }
    QualityComparison q0;
    if (st.ok()) st = compare_quality(r0, nullptr, &q0);
    BK_TRY(with_context(st, "untrained reference"));
    rep.have_untrained = true;
    rep.untrained = q0.student;
  }

  // ---- teacher baseline: quality on the same prompts, TPS, memory
  TeacherBaseline tb;
  if (!o.baseline_path.empty() && file_exists(o.baseline_path)) {
    BK_TRY(teacher_baseline_load(o.baseline_path, &tb));
    rep.have_baseline = true;
    rep.baseline_path = o.baseline_path;
    rep.teacher_model = tb.model;
    rep.teacher_provider = tb.provider;
    rep.teacher_tps = tb.avg_decode_tps;
    rep.sources["teacher_quality"] = "responses in " + o.baseline_path + " rescored with the task scorers";
    rep.sources["teacher_tps"] = o.baseline_path + " metrics.avg_decode_tps_8k";
  } else {
    std::string msg = "no teacher baseline at " + o.baseline_path +
                      ": run `bitkd teacher` (make teacher) for teacher quality and TPS; qei is null until then";
    BK_LOG_WARN("%s", msg.c_str());
    rep.notes.push_back(msg);
    rep.sources["teacher_quality"] = "none (no baseline)";
  }
  BK_TRY(compare_quality(rep.results, rep.have_baseline ? &tb : nullptr, &rep.quality));
  if (rep.have_baseline && (rep.quality.student_only || rep.quality.teacher_only)) {
    BK_LOG_WARN("%s", rep.quality.note.c_str());
    rep.notes.push_back(rep.quality.note);
  }
  if (rep.have_baseline) rep.teacher_tps_source = "baseline: " + o.baseline_path + " (as the teacher was served)";
  if (!o.teacher_checkpoint.empty()) {
    BK_TRY(measure_teacher(o.teacher_checkpoint, &rep.teacher_memory_bytes));
    rep.teacher_memory_source = "measured: fp32 inference weight bytes of " + o.teacher_checkpoint;
    // Decode speed like for like: the local teacher generates the same prompts
    // in this process, through the same session code and threads as the
    // student (its own tokenizer when it has one, else the student's).
    if (o.teacher_tps_in_process) {
      Tokenizer ttok;
      if (!o.teacher_tokenizer_path.empty())
        BK_TRY(with_context(tokenizer_load(o.teacher_tokenizer_path, &ttok), "the teacher's tokenizer"));
      Model tm;
      BK_TRY(with_context(model_load_any(o.teacher_checkpoint, &tm, nullptr), "TEACHER_CHECKPOINT"));
      WeightsGuard tw;
      BK_TRY(infer_weights_create(&tm, INFER_FLOAT, &tw.w));
      std::vector<EvalPromptResult> tr;
      EvalGenOptions go = o.gen;
      go.progress = false;
      BK_LOG_INFO("eval: the teacher's decode speed, in process on the same prompts");
      BK_TRY(eval_generate(tw.w, o.teacher_tokenizer_path.empty() ? tok : ttok, prompts, go, &tr));
      rep.teacher_tps = eval_throughput(tr).mean_prompt_tps;
      rep.teacher_tps_source = "in_process: " + o.teacher_checkpoint + " (fp32), the same prompts, code and threads";
    }
  } else if (rep.have_baseline && tb.memory_bytes > 0) {
    rep.teacher_memory_bytes = tb.memory_bytes;
    rep.teacher_memory_source = o.baseline_path + " memory_teacher_constant" +
                                (tb.memory_source.empty() ? std::string() : " (" + tb.memory_source + ")");
  } else {
    BK_TRY(teacher_memory_declared(o.teacher_memory_gb, &rep.teacher_memory_bytes, &rep.teacher_memory_source));
  }
  rep.sources["teacher_memory"] = rep.teacher_memory_source;
  rep.sources["student_memory"] = "inference weight bytes of the " + rep.backend + " backend";

  // ---- agreement with the teacher's distributions on a KD shard
  if (!o.kd_eval) {
    rep.agreement_reason = "skipped (--no-kd-eval)";
    return ok_status();
  }
  std::string shard = o.kd_shard;
  const bool explicit_shard = !shard.empty();
  if (!explicit_shard) {
    std::vector<std::string> shards = list_files(o.kd_data_dir, "kd_shard_", ".parquet");
    if (!shards.empty()) shard = path_join(o.kd_data_dir, shards.back());
  }
  if (shard.empty()) {
    rep.agreement_reason = "no KD shard in " + o.kd_data_dir + " (run `bitkd collect`, or pass --kd-eval-shard)";
    return ok_status();
  }
  KdAgreementOptions ko = o.agreement;
  ko.shard = shard;
  Status st = kd_agreement_run(weights, tok, ko, &rep.agreement);
  if (st.ok()) {
    rep.have_agreement = true;
    rep.sources["agreement"] =
        shard + (explicit_shard ? "" : " (the last shard; pass --kd-eval-shard for one the student did not train on)");
  } else if (explicit_shard) {
    return st;
  } else {
    rep.agreement_reason = st.msg;
    BK_LOG_WARN("agreement on %s: %s", shard.c_str(), st.msg.c_str());
  }
  return ok_status();
}

}  // namespace bk
