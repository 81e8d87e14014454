// Student evaluation (eval/eval.h).
#include "eval/eval.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "core/fs.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/version.h"
#include "data/loader/loader.h"
#include "data/tasks/tasks.h"
#include "model/generate.h"
#include "tokenizer/tokenizer.h"

namespace bk {

using json = nlohmann::ordered_json;

namespace {

constexpr double kTeacherLogFloor = -1e4;      // = kKdTeacherLogFloor (train/kd_loss.h)
constexpr double kStudentOtherFloor = 1e-12;   // = kKdStudentOtherFloor

double log_add(double a, double b) {
  const double hi = std::max(a, b), lo = std::min(a, b);
  if (hi == -INFINITY) return -INFINITY;
  return hi + std::log1p(std::exp(lo - hi));
}

bool scorable(const PromptItem& it) {
  return !it.task.empty() && !it.reference.empty() && task_is_family(it.task);
}

struct SessionDeleter {
  void operator()(InferSession* s) const { infer_session_destroy(s); }
};

}  // namespace

// ---- generation ---------------------------------------------------------------

Status eval_generate(const InferWeights* w, const Tokenizer& tok, const std::vector<PromptItem>& items,
                     const EvalGenOptions& opt, std::vector<EvalPromptResult>* out) {
  out->clear();
  BK_TRY(template_check(opt.template_text));
  if (opt.max_new_tokens < 1) return errorf("EVAL_MAX_NEW_TOKENS=%d must be >= 1", opt.max_new_tokens);
  const ModelConfig& c = infer_weights_config(w);
  if (tokenizer_vocab_size(tok) > c.vocab_size)
    return errorf("the tokenizer has %d pieces but the model's vocab_size is %d: not the tokenizer this model was "
                  "trained with (--tokenizer / TOKENIZER_NAME)",
                  tokenizer_vocab_size(tok), c.vocab_size);
  InferSession* raw = nullptr;
  BK_TRY(infer_session_create(w, c.max_seq_len, &raw));
  std::unique_ptr<InferSession, SessionDeleter> s(raw);
  const int max_ctx = infer_session_max_ctx(raw);
  const bool bos = opt.add_bos && tokenizer_bos_id(tok) >= 0;

  Progress prog;
  if (opt.progress) progress_begin(&prog, "eval", (long)items.size());
  int64_t gen_tokens = 0;
  double gen_time = 0;
  for (size_t i = 0; i < items.size(); i++) {
    EvalPromptResult r;
    r.item = items[i];
    std::string rendered;
    BK_TRY(template_render(opt.template_text, items[i].prompt, &rendered));
    std::vector<int32_t> ids;
    BK_TRY(with_context(tokenizer_encode(tok, rendered, bos, &ids), "prompt " + std::to_string(items[i].idx)));
    r.prompt_tokens = (int)ids.size();
    if (ids.empty() || (int)ids.size() >= max_ctx) {
      // Nothing can be generated: the answer is empty and scores as such.
      r.finish_reason = ids.empty() ? "error: the prompt encodes to no tokens"
                                    : "error: the prompt (" + std::to_string(ids.size()) +
                                          " tokens) fills the model's context of " + std::to_string(max_ctx);
      BK_LOG_WARN("eval prompt %lld: %s", (long long)items[i].idx, r.finish_reason.c_str());
    } else {
      GenerateOptions go;
      go.max_new_tokens = opt.max_new_tokens;
      go.sampling = opt.sampling;
      go.seed = opt.seed + (uint64_t)items[i].idx;
      go.eos_id = tokenizer_eos_id(tok);
      GenerateResult gr;
      BK_TRY(with_context(generate(raw, ids, go, &gr), "prompt " + std::to_string(items[i].idx)));
      BK_TRY(tokenizer_decode(tok, gr.ids, &r.response));
      r.finish_reason = gr.finish_reason;
      r.tokens_generated = (int)gr.ids.size();
      r.decode_steps = infer_session_pos(raw) - r.prompt_tokens;
      r.prefill_s = gr.prefill_s;
      r.decode_s = gr.decode_s;
    }
    if (scorable(r.item)) {
      TaskScore ts;
      BK_TRY(with_context(task_score(r.item.task, r.item.reference, r.response, &ts),
                          "scoring prompt " + std::to_string(items[i].idx)));
      r.scored = true;
      r.score = ts.score;
      r.json_valid = ts.json_valid;
      if (ts.extracted) r.answer = ts.answer;
    }
    gen_tokens += r.tokens_generated;
    gen_time += r.prefill_s + r.decode_s;
    out->push_back(std::move(r));
    if (opt.progress) {
      char extra[64];
      snprintf(extra, sizeof extra, "%lld tokens", (long long)gen_tokens);
      progress_update(&prog, (long)(i + 1), extra, gen_time > 0 ? gen_tokens / gen_time : 0, "tok/s");
    }
  }
  if (opt.progress) progress_end(&prog, "");
  return ok_status();
}

EvalThroughput eval_throughput(const std::vector<EvalPromptResult>& results) {
  EvalThroughput t;
  double tps_sum = 0;
  int64_t tps_n = 0;
  for (const EvalPromptResult& r : results) {
    t.prompt_tokens += r.prompt_tokens;
    t.generated_tokens += r.tokens_generated;
    t.decode_steps += r.decode_steps;
    t.prefill_s += r.prefill_s;
    t.decode_s += r.decode_s;
    const double g = r.prefill_s + r.decode_s;
    if (g > 0) tps_sum += r.tokens_generated / g, tps_n++;
  }
  t.prefill_tps = t.prefill_s > 0 ? t.prompt_tokens / t.prefill_s : 0;
  t.decode_tps = t.decode_s > 0 ? t.decode_steps / t.decode_s : 0;
  t.mean_prompt_tps = tps_n ? tps_sum / tps_n : 0;
  return t;
}

// ---- teacher baseline ----------------------------------------------------------

Status teacher_baseline_load(const std::string& path, TeacherBaseline* out) {
  *out = TeacherBaseline();
  out->path = path;
  std::string text;
  BK_TRY(read_file(path, &text));
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return errorf("%s is not a JSON object (expected the teacher baseline report of `bitkd teacher`)", path.c_str());
  auto str = [](const json& o, const char* k) {
    return o.contains(k) && o[k].is_string() ? o[k].get<std::string>() : std::string();
  };
  out->provider = str(j, "provider");
  out->model = str(j, "model");
  out->timestamp = str(j, "timestamp");
  out->prompts_hash = str(j, "prompts_hash");
  out->memory_source = str(j, "memory_teacher_source");
  // null: the teacher's memory was neither measured nor declared.
  if (!j.contains("memory_teacher_constant") ||
      !(j["memory_teacher_constant"].is_number() || j["memory_teacher_constant"].is_null()))
    return errorf("%s: field memory_teacher_constant (teacher memory in bytes, or null when unknown) is missing or "
                  "not a number",
                  path.c_str());
  out->memory_bytes = j["memory_teacher_constant"].is_number() ? j["memory_teacher_constant"].get<double>() : 0.0;
  if (!j.contains("metrics") || !j["metrics"].is_object() || !j["metrics"].contains("avg_decode_tps_8k") ||
      !j["metrics"]["avg_decode_tps_8k"].is_number())
    return errorf("%s: field metrics.avg_decode_tps_8k (teacher decode TPS) is missing or not a number", path.c_str());
  out->avg_decode_tps = j["metrics"]["avg_decode_tps_8k"].get<double>();
  if (!j.contains("results") || !j["results"].is_array())
    return errorf("%s: field results is missing or not an array", path.c_str());
  size_t i = 0;
  for (const json& e : j["results"]) {
    if (!e.is_object()) return errorf("%s: results[%zu] is not an object", path.c_str(), i);
    TeacherBaselineRow r;
    r.prompt = str(e, "prompt");
    r.ok = !e.contains("error");
    // The full response when bitkd wrote it; the PoC kept only a preview,
    // which cannot be scored faithfully, so such rows stay unmatched.
    r.response = str(e, "response");
    r.task = str(e, "task");
    r.reference = str(e, "reference");
    if (!r.prompt.empty() && (!r.ok || e.contains("response"))) out->rows.push_back(std::move(r));
    i++;
  }
  return ok_status();
}

// ---- quality ---------------------------------------------------------------------

Status compare_quality(const std::vector<EvalPromptResult>& results, const TeacherBaseline* tb,
                       QualityComparison* out) {
  *out = QualityComparison();
  const size_t n = results.size();
  out->counted.assign(n, 0);
  out->teacher_row.assign(n, -1);
  out->teacher_score.assign(n, std::numeric_limits<double>::quiet_NaN());
  out->teacher_json_valid.assign(n, -1);
  out->student_prompts = (int64_t)n;
  out->have_teacher = tb != nullptr;
  std::unordered_map<std::string, int> by_prompt;
  if (tb) {
    out->teacher_prompts = (int64_t)tb->rows.size();
    for (size_t k = 0; k < tb->rows.size(); k++) by_prompt.emplace(tb->rows[k].prompt, (int)k);
  }
  std::vector<uint8_t> teacher_used(tb ? tb->rows.size() : 0, 0);
  double ss = 0, ts = 0, sj = 0, tj = 0;
  for (size_t i = 0; i < n; i++) {
    const EvalPromptResult& r = results[i];
    if (!r.scored) out->unscored++;
    int row = -1;
    if (tb) {
      auto it = by_prompt.find(r.item.prompt);
      if (it != by_prompt.end()) row = it->second;
    }
    if (tb && row < 0) out->student_only++;
    if (row >= 0) {
      out->matched++;
      teacher_used[row] = 1;
      out->teacher_row[i] = row;
    }
    if (!r.scored) continue;
    if (tb && row < 0) continue;  // only prompts both sides answered count
    out->counted[i] = 1;
    out->student.n++;
    ss += r.score;
    out->student.per_task[r.item.task].n++;
    out->student.per_task[r.item.task].score += r.score;
    if (r.json_valid >= 0) out->student.json_n++, sj += r.json_valid;
    if (row >= 0) {
      const TeacherBaselineRow& t = tb->rows[row];
      double s = 0;
      int jv = task_is_json(r.item.task) ? 0 : -1;
      if (t.ok) {
        TaskScore sc;
        BK_TRY(with_context(task_score(r.item.task, r.item.reference, t.response, &sc),
                            "scoring the teacher's response to prompt " + std::to_string(r.item.idx)));
        s = sc.score;
        jv = sc.json_valid;
      }
      out->teacher_score[i] = s;
      out->teacher_json_valid[i] = jv;
      out->teacher.n++;
      ts += s;
      out->teacher.per_task[r.item.task].n++;
      out->teacher.per_task[r.item.task].score += s;
      if (jv >= 0) out->teacher.json_n++, tj += jv;
    }
  }
  for (uint8_t u : teacher_used) out->teacher_only += !u;
  for (QualitySide* side : {&out->student, &out->teacher})
    for (auto& kv : side->per_task) kv.second.score /= (double)kv.second.n;
  if (out->student.n) out->student.score = ss / out->student.n;
  if (out->student.json_n) out->student.json_validity = sj / out->student.json_n;
  if (out->teacher.n) out->teacher.score = ts / out->teacher.n;
  if (out->teacher.json_n) out->teacher.json_validity = tj / out->teacher.json_n;
  char buf[512];
  if (!tb) {
    snprintf(buf, sizeof buf, "no teacher baseline: student quality over its %lld scored prompts only",
             (long long)out->student.n);
  } else if (out->student_only == 0 && out->teacher_only == 0) {
    snprintf(buf, sizeof buf, "same %lld prompts on both sides (matched by prompt text)", (long long)out->matched);
  } else {
    snprintf(buf, sizeof buf,
             "the prompt sets differ: %lld student prompts, %lld teacher prompts, %lld in common (matched by prompt "
             "text); quality compares the %lld scored prompts in common only",
             (long long)n, (long long)out->teacher_prompts, (long long)out->matched, (long long)out->student.n);
  }
  out->note = buf;
  return ok_status();
}

// ---- QEI -----------------------------------------------------------------------

QeiResult qei_compute(double qs, double qt, double ms, double mt, double tps_s, double tps_t) {
  QeiResult r;
  auto bad = [](double x) { return !std::isfinite(x); };
  if (bad(qs)) r.qei.reason = "student quality unknown (no scored prompt)";
  else if (bad(qt)) r.qei.reason = "teacher quality unknown (no teacher baseline, or no scored prompt in common)";
  else if (qt <= 0) r.qei.reason = "teacher quality is 0 (the teacher scored nothing on these prompts): Qs/Qt is undefined";
  else if (bad(ms) || ms <= 0) r.qei.reason = "student memory unknown or 0";
  else if (bad(mt) || mt <= 0)
    r.qei.reason = "teacher memory unknown: set TEACHER_CHECKPOINT (local weights: measured) or TEACHER_MEMORY_GB "
                   "(declared)";
  if (r.qei.reason.empty()) {
    r.qei.defined = true;
    r.qei.value = (qs / qt) / (ms / mt);
  }
  if (!r.qei.defined) r.qei_speed.reason = "QEI undefined: " + r.qei.reason;
  else if (bad(tps_s) || tps_s <= 0) r.qei_speed.reason = "student TPS unknown or 0";
  else if (bad(tps_t) || tps_t <= 0) r.qei_speed.reason = "teacher TPS unknown or 0 (teacher baseline metrics)";
  if (r.qei.defined && r.qei_speed.reason.empty()) {
    r.qei_speed.defined = true;
    r.qei_speed.value = r.qei.value * (tps_s / tps_t);
  }
  return r;
}

std::vector<QeiGate> qei_gates(double qs, double qt, const QeiResult& qr, double json_validity, int json_n) {
  auto st = [](bool known, bool ok) { return !known ? "not_evaluated" : ok ? "pass" : "fail"; };
  auto f = [](double v) {
    char b[32];
    snprintf(b, sizeof b, "%.3g", v);
    return std::string(std::isfinite(v) ? b : "n/a");
  };
  std::vector<QeiGate> g;
  g.push_back({"qei_ge_0.2", "QEI >= 0.2", st(qr.qei.defined, qr.qei.value >= 0.2),
               qr.qei.defined ? "QEI " + f(qr.qei.value) : qr.qei.reason});
  g.push_back({"qei_speed_ge_0.1", "QEI_speed >= 0.1", st(qr.qei_speed.defined, qr.qei_speed.value >= 0.1),
               qr.qei_speed.defined ? "QEI_speed " + f(qr.qei_speed.value) : qr.qei_speed.reason});
  // With a teacher that scores 0 the ratio says nothing: not a pass.
  const bool q_known = std::isfinite(qs) && std::isfinite(qt) && qt > 0;
  g.push_back({"quality_ge_0.8_teacher", "Qs >= 0.8 Qt", st(q_known, qs >= 0.8 * qt),
               "Qs " + f(qs) + " vs 0.8 x Qt = " + f(0.8 * qt) + (std::isfinite(qt) && qt <= 0 ? " (teacher scores 0)" : "")});
  g.push_back({"json_validity_ge_0.95", "student JSON validity >= 95%", st(json_n > 0, json_validity >= 0.95),
               json_n > 0 ? f(100 * json_validity) + "% of " + std::to_string(json_n) + " JSON answers valid"
                          : "no JSON task scored"});
  return g;
}

// ---- agreement --------------------------------------------------------------------

bool kd_bucket_kl(const float* logits, int vocab, const int32_t* ids, const float* logprobs, int K, float other_logprob,
                  double* kl) {
  if (std::isnan(other_logprob) || other_logprob == INFINITY) return false;
  std::vector<int32_t> bid;
  std::vector<double> bq;
  for (int k = 0; k < K; k++) {
    if (ids[k] == -1) continue;
    if (ids[k] < 0 || ids[k] >= vocab) return false;
    if (std::isnan(logprobs[k]) || logprobs[k] == INFINITY) return false;
    const double l = std::max((double)logprobs[k], kTeacherLogFloor);
    size_t j = 0;
    while (j < bid.size() && bid[j] != ids[k]) j++;
    if (j < bid.size()) bq[j] = log_add(bq[j], l);
    else bid.push_back(ids[k]), bq.push_back(l);
  }
  if (bid.empty()) return false;
  const double lo = std::max((double)other_logprob, kTeacherLogFloor);
  // Teacher buckets: log-softmax of [bq, lo].
  double tmax = lo;
  for (double x : bq) tmax = std::max(tmax, x);
  double tsum = std::exp(lo - tmax);
  for (double x : bq) tsum += std::exp(x - tmax);
  const double tlse = tmax + std::log(tsum);
  // Student: log-softmax over the vocabulary; "other" summed directly over the
  // ids outside the bucket (no 1 - sum cancellation).
  float m = -INFINITY;
  for (int v = 0; v < vocab; v++) m = std::max(m, logits[v]);
  if (!std::isfinite(m)) return false;
  double total = 0;
  for (int v = 0; v < vocab; v++) total += std::exp((double)logits[v] - m);
  double in_bucket = 0;
  for (int32_t id : bid) in_bucket += std::exp((double)logits[id] - m);
  const double log_total = std::log(total);
  double other = (total - in_bucket) / total;
  // Recompute the remainder without cancellation when the bucket holds most mass.
  if (other < 1e-3) {
    std::vector<uint8_t> mark(vocab, 0);
    for (int32_t id : bid) mark[id] = 1;
    double rest = 0;
    for (int v = 0; v < vocab; v++)
      if (!mark[v]) rest += std::exp((double)logits[v] - m);
    other = rest / total;
  }
  const double lp_other = other >= kStudentOtherFloor ? std::log(other) : std::log(kStudentOtherFloor);
  double d = 0;
  for (size_t k = 0; k < bid.size(); k++) {
    const double lq = bq[k] - tlse;
    const double lp = (double)logits[bid[k]] - m - log_total;
    d += std::exp(lq) * (lq - lp);
  }
  const double lqo = lo - tlse;
  d += std::exp(lqo) * (lqo - lp_other);
  if (!std::isfinite(d)) return false;
  *kl = d;
  return true;
}

Status kd_agreement_run(const InferWeights* w, const Tokenizer& tok, const KdAgreementOptions& opt, KdAgreement* out) {
  *out = KdAgreement();
  out->shard = opt.shard;
  if (!file_exists(opt.shard)) return errorf("KD shard %s does not exist", opt.shard.c_str());
  const ModelConfig& c = infer_weights_config(w);
  LoaderOptions lo;
  lo.shard_files = {opt.shard};
  lo.batch_size = 1;
  lo.max_seq_len = std::min(opt.max_seq_len, c.max_seq_len);
  lo.max_topk = opt.max_topk;
  lo.shuffle_buffer = 1;  // file order: the first max_examples prompts
  lo.pack = false;
  lo.trim_batch = true;
  lo.loop = false;
  lo.skip_bad_rows = true;
  lo.allow_tokenizer_mismatch = opt.allow_tokenizer_mismatch;
  KdLoader loader;
  BK_TRY(with_context(loader_open(lo, tok, &loader), opt.shard));

  InferSession* raw = nullptr;
  BK_TRY(infer_session_create(w, c.max_seq_len, &raw));
  std::unique_ptr<InferSession, SessionDeleter> s(raw);
  const int V = c.vocab_size;
  std::vector<float> logits;
  double kl_sum = 0;
  LoaderBatch b;
  for (;;) {
    if (opt.max_examples > 0 && out->examples >= opt.max_examples) break;
    bool done = false;
    BK_TRY(with_context(loader_next(&loader, &b, &done), opt.shard));
    if (done) break;
    for (int row = 0; row < b.B; row++) {
      const size_t base = (size_t)row * b.T;
      int len = 0;
      while (len < b.T && b.key_mask[base + len]) len++;
      if (len == 0) continue;
      bool any_kd = false;
      for (int t = 0; t < len; t++) any_kd = any_kd || b.kd_mask[base + t];
      out->examples++;
      if (!any_kd) continue;
      for (int t = 0; t < len; t++)
        if (b.tokens[base + t] < 0 || b.tokens[base + t] >= V)
          return errorf("%s: token id %d is outside the model's vocabulary of %d (another tokenizer?)",
                        opt.shard.c_str(), b.tokens[base + t], V);
      logits.resize((size_t)len * V);
      infer_session_reset(raw);
      BK_TRY(infer_session_eval_all(raw, b.tokens.data() + base, len, logits.data()));
      for (int t = 0; t < len; t++) {
        if (!b.kd_mask[base + t]) continue;
        const int32_t* ids = b.topk_ids.data() + (base + t) * b.K;
        const float* lps = b.topk_logprobs.data() + (base + t) * b.K;
        int best = -1;
        for (int k = 0; k < b.K; k++)
          if (ids[k] >= 0 && (best < 0 || lps[k] > lps[best])) best = k;
        if (best < 0) continue;
        const float* z = logits.data() + (size_t)t * V;
        int arg = 0;
        for (int v = 1; v < V; v++)
          if (z[v] > z[arg]) arg = v;
        out->positions++;
        out->agree += arg == ids[best];
        double kl = 0;
        if (kd_bucket_kl(z, V, ids, lps, b.K, b.other_logprob[base + t], &kl)) kl_sum += kl, out->kl_positions++;
      }
    }
  }
  out->top1 = out->positions ? (double)out->agree / out->positions : 0;
  out->kl_mean = out->kl_positions ? kl_sum / out->kl_positions : 0;
  out->loader_stats = loader_stats_line(loader_stats(loader));
  if (out->positions == 0)
    return errorf("%s: no position with a teacher distribution among %lld examples (%s)", opt.shard.c_str(),
                  (long long)out->examples, out->loader_stats.c_str());
  return ok_status();
}

// ---- report -----------------------------------------------------------------------

namespace {

json num_or_null(bool defined, double v) { return defined && std::isfinite(v) ? json(v) : json(nullptr); }

std::string preview(const std::string& s, size_t n) {
  if (s.size() <= n) return s;
  size_t cut = n;
  while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80) cut--;  // whole UTF-8 characters
  return s.substr(0, cut) + "...";
}

}  // namespace

std::string eval_report_json(const EvalReport& r) {
  const double GB = 1e9;
  const QualityComparison& q = r.quality;
  json j = json::object();
  j["timestamp"] = r.timestamp;
  j["device"] = r.device;
  j["dtype"] = r.dtype;
  j["tokenizer"] = {{"path", r.tokenizer_path}, {"sha256", r.tokenizer_hash}, {"vocab_size", r.tokenizer_vocab}};

  json mm;
  mm["path"] = r.model_path;
  mm["format"] = r.model_format;
  mm["step"] = r.model_step >= 0 ? json(r.model_step) : json(nullptr);
  mm["params"] = r.model_params;
  json cfg = json::parse(r.model_config_json, nullptr, false);
  mm["config"] = cfg.is_discarded() ? json(r.model_config_json) : cfg;
  if (!r.training_json.empty()) {
    json tj = json::parse(r.training_json, nullptr, false);
    mm["training"] = tj.is_discarded() ? json(r.training_json) : tj;
  }
  mm["backend"] = r.backend;
  j["model_meta"] = mm;

  json ec;
  ec["max_new_tokens"] = r.max_new_tokens;
  ec["max_prompts"] = r.max_prompts;
  ec["total_prompts"] = r.results.size();
  ec["temperature"] = r.temperature;
  ec["top_p"] = r.top_p;
  ec["template"] = r.template_text;
  ec["prompts_source"] = r.prompts_source;
  ec["prompts_hash"] = r.prompts_hash;
  ec["backend"] = r.backend;
  ec["seed"] = r.seed;
  ec["threads"] = r.threads;
  ec["save_sample_generations"] = r.save_generations;
  j["eval_config"] = ec;

  // QEI from exactly the numbers written next to it.
  const double qs = q.student.n ? q.student.score : NAN;
  const double qt = q.have_teacher && q.teacher.n ? q.teacher.score : NAN;
  const double ms = r.weights.total / GB;
  const double mt = r.teacher_memory_bytes > 0 ? r.teacher_memory_bytes / GB : NAN;
  const double tps_s = r.throughput.mean_prompt_tps;
  const double tps_t = r.teacher_tps > 0 ? r.teacher_tps : NAN;
  QeiResult qr = qei_compute(qs, qt, ms, mt, tps_s, tps_t);
  json qm;
  qm["student_tps"] = tps_s;
  qm["teacher_tps"] = num_or_null(r.teacher_tps > 0, tps_t);
  qm["teacher_tps_source"] = r.teacher_tps_source;
  qm["student_memory_gb"] = ms;
  qm["teacher_memory_gb"] = num_or_null(true, mt);
  qm["student_quality"] = num_or_null(true, qs);
  qm["teacher_quality"] = num_or_null(true, qt);
  qm["qei"] = num_or_null(qr.qei.defined, qr.qei.value);
  qm["qei_speed"] = num_or_null(qr.qei_speed.defined, qr.qei_speed.value);
  if (!qr.qei.defined) qm["qei_reason"] = qr.qei.reason;
  if (!qr.qei_speed.defined) qm["qei_speed_reason"] = qr.qei_speed.reason;
  qm["definition"] =
      "qei = (student_quality / teacher_quality) / (student_memory_gb / teacher_memory_gb); qei_speed = qei * "
      "student_tps / teacher_tps. Quality: mean task score over the prompts both sides answered (results with "
      "counted = true); memory: weight bytes held for inference, GB = 1e9 bytes; TPS: mean over prompts of generated "
      "tokens / generation time (the teacher baseline's definition)";
  json gates = json::object();
  for (const QeiGate& g : qei_gates(qs, qt, qr, q.student.json_validity, q.student.json_n))
    gates[g.key] = {{"item", g.item}, {"status", g.status}, {"detail", g.detail}};
  qm["gates"] = gates;
  j["qei_metrics"] = qm;

  json res = json::array();
  for (size_t i = 0; i < r.results.size(); i++) {
    const EvalPromptResult& e = r.results[i];
    json x;
    x["prompt"] = e.item.prompt;
    if (r.save_generations) x["response"] = e.response;
    x["response_preview"] = preview(e.response, 200);
    const double gt = e.prefill_s + e.decode_s;
    x["generation_time_s"] = gt;
    x["tokens_generated"] = e.tokens_generated;
    x["tokens_per_second"] = gt > 0 ? e.tokens_generated / gt : 0.0;
    x["score"] = e.scored ? json(e.score) : json(nullptr);
    x["counted"] = i < q.counted.size() && q.counted[i] != 0;
    x["prompt_idx"] = e.item.idx;
    if (!e.item.task.empty()) x["task"] = e.item.task;
    if (!e.item.reference.empty()) x["reference"] = e.item.reference;
    if (e.json_valid >= 0) x["json_valid"] = e.json_valid == 1;
    if (!e.answer.empty()) x["scored_answer"] = e.answer;
    x["prompt_tokens"] = e.prompt_tokens;
    x["prefill_s"] = e.prefill_s;
    x["decode_s"] = e.decode_s;
    x["decode_steps"] = e.decode_steps;
    x["finish_reason"] = e.finish_reason;
    if (i < q.teacher_row.size() && q.teacher_row[i] >= 0) {
      x["teacher_score"] = num_or_null(true, q.teacher_score[i]);
      if (q.teacher_json_valid[i] >= 0) x["teacher_json_valid"] = q.teacher_json_valid[i] == 1;
    }
    res.push_back(x);
  }
  j["results"] = res;

  // ---- bitkd's fields
  const EvalThroughput& t = r.throughput;
  j["throughput"] = {{"prefill_tokens_per_s", t.prefill_tps},
                     {"decode_tokens_per_s", t.decode_tps},
                     {"mean_prompt_tokens_per_s", t.mean_prompt_tps},
                     {"prompt_tokens", t.prompt_tokens},
                     {"generated_tokens", t.generated_tokens},
                     {"decode_steps", t.decode_steps},
                     {"prefill_s", t.prefill_s},
                     {"decode_s", t.decode_s},
                     {"note", "prefill: prompt tokens / prefill time; decode: single-token forwards / decode time "
                              "(sampling included), summed over prompts"}};

  const InferWeightBytes& wb = r.weights;
  j["memory"] = {{"weight_bytes",
                  {{"embeddings", wb.embeddings},
                   {"norms", wb.norms},
                   {"ternary_projections", wb.projections},
                   {"head", wb.head},
                   {"total", wb.total}}},
                 {"head_tied", wb.head_tied},
                 {"projection_format", wb.projection_format},
                 {"embedding_dtype", wb.embedding_dtype},
                 {"projection_bits_per_weight", wb.projection_bits_per_weight},
                 {"params",
                  {{"embeddings", wb.embedding_params},
                   {"norms", wb.norm_params},
                   {"ternary_projections", wb.projection_params},
                   {"head", wb.head_params}}},
                 {"peak_rss_bytes", r.peak_rss_bytes},
                 {"rss_after_load_bytes", r.rss_after_load_bytes},
                 {"note", "peak RSS covers loading the fp32 checkpoint before packing"}};

  auto per_task_json = [](const QualitySide& s) {
    json pt = json::object();
    for (const auto& kv : s.per_task) pt[kv.first] = {{"n", kv.second.n}, {"score", kv.second.score}};
    return pt;
  };
  auto side = [&](const QualitySide& s) {
    return json{{"score", s.n ? json(s.score) : json(nullptr)},
                {"json_validity", s.json_n ? json(s.json_validity) : json(nullptr)},
                {"scored_prompts", s.n},
                {"json_prompts", s.json_n},
                {"per_task", per_task_json(s)}};
  };
  json qj;
  qj["student"] = side(q.student);
  qj["teacher"] = q.have_teacher ? side(q.teacher) : json(nullptr);
  qj["student_prompts"] = q.student_prompts;
  qj["teacher_prompts"] = q.teacher_prompts;
  qj["matched_prompts"] = q.matched;
  qj["student_only_prompts"] = q.student_only;
  qj["teacher_only_prompts"] = q.teacher_only;
  qj["unscored_prompts"] = q.unscored;
  qj["note"] = q.note;
  if (r.have_untrained) {
    json u = side(r.untrained);
    u["seed"] = r.untrained_seed;
    u["note"] = "a randomly initialised model of the student's shape, same prompts, tokenizer and scorers";
    qj["untrained"] = u;
  }
  j["quality"] = qj;

  if (r.have_agreement) {
    const KdAgreement& a = r.agreement;
    j["agreement"] = {{"top1", a.top1},
                      {"kl", a.kl_mean},
                      {"positions", a.positions},
                      {"kl_positions", a.kl_positions},
                      {"examples", a.examples},
                      {"shard", a.shard},
                      {"loader", a.loader_stats},
                      {"definition",
                       "top1: student argmax == teacher top-1 at every position with a teacher top-K; kl: mean "
                       "KL(teacher || student) over the K+1 buckets (top-K + other) at tau 1"}};
  } else {
    j["agreement"] = {{"top1", nullptr}, {"kl", nullptr}, {"reason", r.agreement_reason}};
  }
  j["teacher"] = {{"baseline", r.have_baseline ? json(r.baseline_path) : json(nullptr)},
                  {"model", r.teacher_model},
                  {"provider", r.teacher_provider},
                  {"memory_bytes", r.teacher_memory_bytes},
                  {"memory_source", r.teacher_memory_source}};
  json src = json::object();
  for (const auto& it : r.sources) src[it.first] = it.second;
  j["sources"] = src;
  j["notes"] = r.notes;
  j["bitkd_version"] = BITKD_VERSION;
  return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

}  // namespace bk
