#include "kd/baseline.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/fs.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/timing.h"
#include "core/version.h"
#include "data/tasks/tasks.h"
#include "tokenizer/tokenizer.h"

namespace bk {

using json = nlohmann::ordered_json;

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  double pos = q * (double)(v.size() - 1);
  size_t lo = (size_t)std::floor(pos), hi = (size_t)std::ceil(pos);
  return v[lo] + (v[hi] - v[lo]) * (pos - (double)lo);
}

Status teacher_memory_declared(const std::string& gb_text, double* bytes, std::string* source) {
  *bytes = 0;
  if (gb_text.empty()) {
    *source = "unknown: set TEACHER_CHECKPOINT (local weights: measured) or TEACHER_MEMORY_GB (declared)";
    return ok_status();
  }
  char* end = nullptr;
  const double gb = strtod(gb_text.c_str(), &end);
  if (end == gb_text.c_str() || *end || !(gb > 0) || !std::isfinite(gb))
    return errorf("TEACHER_MEMORY_GB=%s is not a size in GB above 0 (leave it empty when unknown)", gb_text.c_str());
  *bytes = gb * 1e9;
  *source = "declared: TEACHER_MEMORY_GB=" + gb_text;
  return ok_status();
}

// Cuts at a UTF-8 character boundary so previews stay valid JSON strings.
static std::string preview(const std::string& s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  size_t n = max_bytes;
  while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
  return s.substr(0, n) + "...";
}

static void run_one(ProviderClient* client, const PromptItem& item, const BaselineOptions& opt,
                    const Tokenizer* count_tok, BaselineRow* row) {
  row->item = item;
  CompletionRequest req;
  req.temperature = opt.temperature;
  req.top_p = opt.top_p;
  req.max_tokens = opt.max_tokens;
  req.seed = opt.seed;
  req.messages = {{"user", item.prompt}};
  if (!opt.instruction.empty()) req.messages.insert(req.messages.begin(), {"system", opt.instruction});
  if (provider_api_takes_raw_prompt(provider_client_settings(*client).api)) {
    Status st = template_render(opt.template_text, item.prompt, &req.prompt);
    if (!st.ok()) {
      row->error = st.msg;
      row->error_kind = "config";
      return;
    }
  }
  CompletionResult res;
  Status st = provider_complete(client, req, &res);
  row->attempts = res.attempts;
  if (!st.ok()) {
    row->error = st.msg;
    row->error_kind = res.error_kind;
    return;
  }
  row->ok = true;
  row->response = res.text;
  row->finish_reason = res.finish_reason;
  row->latency_s = res.latency_s;
  if (res.has_usage) {
    row->completion_tokens = res.completion_tokens;
  } else if (res.has_logprobs) {
    row->completion_tokens = (int64_t)res.tokens.size();  // the server's own tokens
  } else {
    row->tokens_estimated = true;
    std::vector<int32_t> ids;
    if (count_tok && tokenizer_encode_continuation(*count_tok, res.text, &ids).ok())
      row->completion_tokens = (int64_t)ids.size();
    else
      row->completion_tokens = (int64_t)((res.text.size() + 3) / 4);
  }
  row->decode_tps = row->latency_s > 0 ? (double)row->completion_tokens / row->latency_s : 0;
  if (!item.task.empty() && !item.reference.empty()) {
    TaskScore sc;
    Status s2 = task_score(item.task, item.reference, res.text, &sc);
    if (s2.ok()) {
      row->scored = true;
      row->score = sc.score;
      row->json_valid = sc.json_valid;
      if (sc.extracted) row->answer = sc.answer;
    } else {
      BK_LOG_WARN("prompt %lld: cannot score: %s", (long long)item.idx, s2.msg.c_str());
    }
  }
}

Status baseline_run(ProviderClient* client, const std::vector<PromptItem>& prompts, const BaselineOptions& opt,
                    const Tokenizer* count_tok, std::vector<BaselineRow>* rows) {
  rows->assign(prompts.size(), BaselineRow());
  if (prompts.empty()) return errorf("no prompts to run");
  std::atomic<size_t> next{0};
  std::mutex mu;
  std::condition_variable cv;
  size_t done = 0, failed = 0;
  int64_t tokens = 0;
  int nthreads = std::max(1, std::min<int>(opt.concurrency, (int)prompts.size()));
  std::vector<std::thread> th;
  for (int t = 0; t < nthreads; t++)
    th.emplace_back([&] {
      for (;;) {
        size_t i = next.fetch_add(1);
        if (i >= prompts.size()) break;
        run_one(client, prompts[i], opt, count_tok, &(*rows)[i]);
        std::lock_guard<std::mutex> lk(mu);
        done++;
        if (!(*rows)[i].ok) failed++;
        tokens += (*rows)[i].completion_tokens;
        cv.notify_all();
      }
    });
  Progress pr;
  if (opt.progress) progress_begin(&pr, "teacher baseline", (long)prompts.size());
  double t0 = now_seconds();
  {
    std::unique_lock<std::mutex> lk(mu);
    while (done < prompts.size()) {
      cv.wait_for(lk, std::chrono::milliseconds(250));
      if (opt.progress) {
        double el = now_seconds() - t0;
        char extra[96];
        snprintf(extra, sizeof extra, "failed %zu | %lld tok", failed, (long long)tokens);
        progress_update(&pr, (long)done, extra, el > 0 ? tokens / el : 0, "tok/s");
      }
    }
  }
  for (auto& t : th) t.join();
  if (opt.progress) {
    char extra[96];
    snprintf(extra, sizeof extra, "failed %zu | %lld tok", failed, (long long)tokens);
    progress_end(&pr, extra);
  }
  if (failed == prompts.size())
    return errorf("every baseline prompt failed; the first error: %s", (*rows)[0].error.c_str());
  return ok_status();
}

std::string baseline_report_json(const BaselineInfo& info, const BaselineOptions& opt,
                                 const std::vector<BaselineRow>& rows) {
  json j = json::object();
  // The PoC's fields, in its order.
  j["timestamp"] = info.timestamp;
  j["provider"] = info.provider;
  j["model"] = info.model;
  j["base_url"] = info.base_url;
  j["template"] = info.template_text;
  j["instruction"] = opt.instruction;
  if (!info.api.empty())
    j["prompt_format"] = info.api == "completions" || info.api == "native"
                             ? std::string("raw: TEMPLATE rendered by bitkd") +
                                   (info.prompt_prefix.empty() ? "" : ", after TEACHER_PROMPT_PREFIX")
                             : "chat messages: the server applies its own chat template";
  if (!info.prompt_prefix.empty()) j["prompt_prefix"] = info.prompt_prefix;
  j["memory_teacher_constant"] = info.memory_bytes > 0 ? json(info.memory_bytes) : json(nullptr);
  json ec;
  ec["temperature"] = opt.temperature;
  ec["top_p"] = opt.top_p;
  ec["max_tokens"] = opt.max_tokens;
  ec["context_length"] = opt.context_length;
  ec["total_prompts"] = rows.size();
  ec["api"] = info.api;
  ec["concurrency"] = opt.concurrency;
  ec["prompts_source"] = info.prompts_source;
  if (opt.seed >= 0) ec["seed"] = opt.seed;
  j["eval_config"] = ec;

  std::vector<double> lat, tps;
  int64_t total_tokens = 0, estimated = 0;
  double total_latency = 0;
  size_t ok = 0;
  for (const BaselineRow& r : rows) {
    if (!r.ok) continue;
    ok++;
    lat.push_back(r.latency_s);
    tps.push_back(r.decode_tps);
    total_tokens += r.completion_tokens;
    total_latency += r.latency_s;
    if (r.tokens_estimated) estimated++;
  }
  double avg_tps = 0;
  for (double x : tps) avg_tps += x;
  avg_tps = tps.empty() ? 0 : avg_tps / tps.size();
  json m;
  m["avg_decode_tps_8k"] = avg_tps;  // the PoC's name: mean over prompts of tokens / request time
  m["total_prompts"] = rows.size();
  m["total_tokens"] = total_tokens;
  m["total_latency_s"] = total_latency;
  m["ok_prompts"] = ok;
  m["failed_prompts"] = rows.size() - ok;
  m["aggregate_decode_tps"] = total_latency > 0 ? total_tokens / total_latency : 0;
  double mean_lat = 0;
  for (double x : lat) mean_lat += x;
  m["latency_mean_s"] = lat.empty() ? 0 : mean_lat / lat.size();
  m["latency_p50_s"] = quantile(lat, 0.50);
  m["latency_p95_s"] = quantile(lat, 0.95);
  m["tokens_estimated_prompts"] = estimated;
  j["metrics"] = m;

  // Quality: mean task score over scored prompts; a failed request scores 0
  // (the teacher gave no answer), so quality never looks better by failing.
  struct Acc {
    int64_t n = 0, json_n = 0;
    double score = 0, json_ok = 0;
  };
  Acc all;
  std::map<std::string, Acc> per;
  for (const BaselineRow& r : rows) {
    bool scorable = !r.item.task.empty() && !r.item.reference.empty() && task_is_family(r.item.task);
    if (!scorable) continue;
    double s = r.ok && r.scored ? r.score : 0;
    int jv = r.ok && r.scored ? r.json_valid : (task_is_json(r.item.task) ? 0 : -1);
    for (Acc* a : {&all, &per[r.item.task]}) {
      a->n++;
      a->score += s;
      if (jv >= 0) a->json_n++, a->json_ok += jv;
    }
  }
  json q;
  q["scored_prompts"] = all.n;
  q["score"] = all.n ? json(all.score / all.n) : json(nullptr);
  q["json_validity"] = all.json_n ? json(all.json_ok / all.json_n) : json(nullptr);
  q["json_prompts"] = all.json_n;
  json pt = json::object();
  for (auto& it : per) {
    json t;
    t["n"] = it.second.n;
    t["score"] = it.second.score / it.second.n;
    if (it.second.json_n) t["json_validity"] = it.second.json_ok / it.second.json_n;
    pt[it.first] = t;
  }
  q["per_task"] = pt;
  q["note"] = "measured with the task suite's scorers (EVAL_TEACHER_QUALITY is not used)";
  j["quality"] = q;
  j["prompts_hash"] = info.prompts_hash;
  j["memory_teacher_source"] = info.memory_source;
  j["bitkd_version"] = BITKD_VERSION;

  json res = json::array();
  for (const BaselineRow& r : rows) {
    json e;
    e["prompt_idx"] = r.item.idx;
    if (r.ok) {
      e["latency_s"] = r.latency_s;
      e["completion_tokens"] = r.completion_tokens;
      e["decode_tps"] = r.decode_tps;
      e["response_preview"] = preview(r.response, 200);
      if (r.tokens_estimated) e["tokens_estimated"] = true;
      e["finish_reason"] = r.finish_reason;
      e["response"] = r.response;
      if (r.scored) {
        e["score"] = r.score;
        if (r.json_valid >= 0) e["json_valid"] = r.json_valid == 1;
        if (!r.answer.empty()) e["scored_answer"] = r.answer;
      }
    } else {
      e["error"] = r.error;
      e["error_kind"] = r.error_kind;
    }
    e["attempts"] = r.attempts;
    e["prompt"] = r.item.prompt;
    if (!r.item.task.empty()) e["task"] = r.item.task;
    if (!r.item.reference.empty()) e["reference"] = r.item.reference;
    res.push_back(e);
  }
  j["results"] = res;
  return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

Status baseline_check_lock(const std::string& report_path, const std::string& prompts_hash, const std::string& model,
                           bool force) {
  if (!file_exists(report_path)) return ok_status();
  std::string text;
  BK_TRY(read_file(report_path, &text));
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    if (force) return ok_status();
    return errorf("%s exists but is not valid JSON; move it away or pass --force to replace it", report_path.c_str());
  }
  std::string old_hash = j.contains("prompts_hash") && j["prompts_hash"].is_string() ? j["prompts_hash"].get<std::string>() : "";
  std::string old_model = j.contains("model") && j["model"].is_string() ? j["model"].get<std::string>() : "";
  bool same = old_hash == prompts_hash && old_model == model;
  if (same || force) {
    if (!same)
      BK_LOG_WARN("--force: replacing the locked baseline (prompts %.12s, model %s) with prompts %.12s, model %s",
                  old_hash.empty() ? "(none)" : old_hash.c_str(), old_model.c_str(), prompts_hash.c_str(),
                  model.c_str());
    return ok_status();
  }
  return errorf(
      "%s is locked: it was measured on prompts %s with model '%s'; this run has prompts %s with model '%s'. "
      "QEI compares every student with that baseline, so it is not replaced silently: pass --force to replace it, "
      "or use the same prompts and model",
      report_path.c_str(), old_hash.empty() ? "(no prompts_hash: a PoC report)" : old_hash.substr(0, 16).c_str(),
      old_model.c_str(), prompts_hash.substr(0, 16).c_str(), model.c_str());
}

}  // namespace bk
