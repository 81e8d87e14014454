// reports/pipeline_summary.json and the text `bitkd pipeline` prints at the end.
// Every number comes from a report or a stage's own output; a check whose
// inputs are missing is "not_measured", never a pass. The QEI gates are
// eval's own (eval/eval.h qei_gates), read from its report.
#include <cmath>
#include <cstdio>
#include <map>

#include "core/fs.h"
#include "core/timing.h"
#include "core/version.h"
#include "kernels/cpu/kernels.h"
#include "pipeline/internal.h"

namespace bk {

double json_number(const ojson& j, std::initializer_list<const char*> path) {
  const ojson* cur = &j;
  for (const char* k : path) {
    if (!cur->is_object() || !cur->contains(k)) return NAN;
    cur = &(*cur)[k];
  }
  return cur->is_number() ? cur->get<double>() : NAN;
}

std::string fmt_number(double v, const char* f) {
  if (!std::isfinite(v)) return "n/a";
  char buf[48];
  snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string fmt_percent(double v) { return std::isfinite(v) ? fmt_number(100 * v, "%.1f") + "%" : "n/a"; }

std::string fmt_bytes(double b) {
  if (!std::isfinite(b)) return "n/a";
  if (b >= 1024.0 * 1024 * 1024) return fmt_number(b / (1024.0 * 1024 * 1024), "%.2f") + " GiB";
  if (b >= 1024.0 * 1024) return fmt_number(b / (1024.0 * 1024), "%.1f") + " MiB";
  return fmt_number(b / 1024.0, "%.1f") + " KiB";
}

std::string fmt_params(double n) {
  if (!std::isfinite(n)) return "n/a";
  if (n >= 1e9) return fmt_number(n / 1e9, "%.2f") + "B";
  return fmt_number(n / 1e6, "%.2f") + "M";
}

namespace {

bool load(const std::string& path, ojson* out) {
  std::string text;
  if (path.empty() || !read_file(path, &text).ok()) return false;
  *out = ojson::parse(text, nullptr, false);
  return out->is_object();
}

ojson num_json(double v) { return std::isfinite(v) ? ojson(v) : ojson(nullptr); }


struct Check {
  std::string item, status, detail;  // status: pass | fail | not_measured
};

std::string status_of(bool measured, bool ok) { return !measured ? "not_measured" : ok ? "pass" : "fail"; }

// The student's own early loss and its last: the first logged loss at or
// after a tenth of its steps, and the last logged loss (both the trainer's
// logged means, so alike). Step 1's loss is the freshly initialized model's
// (for the default, the freshly ternarized teacher's) and falls by
// construction, so "the loss fell" compares these two instead. NaN when the
// metrics file has no such records.
struct LossFell {
  double early = NAN, early_step = NAN, last = NAN, last_step = NAN;
};
LossFell loss_fell(const std::string& metrics_path, double steps) {
  LossFell o;
  std::string text;
  if (!std::isfinite(steps) || !read_file(metrics_path, &text).ok()) return o;
  const double from = std::max(1.0, std::ceil(steps / 10.0));
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const ojson r = ojson::parse(text.substr(pos, end - pos), nullptr, false);
    pos = end + 1;
    if (!r.is_object() || !r.contains("step") || !r["step"].is_number() || !r.contains("loss") ||
        !r["loss"].is_number())
      continue;
    const double step = r["step"].get<double>(), loss = r["loss"].get<double>();
    if (step >= from && !std::isfinite(o.early)) o.early = loss, o.early_step = step;
    o.last = loss, o.last_step = step;
  }
  if (!(o.last_step > o.early_step)) o.last = o.last_step = NAN;  // one record: nothing to compare
  return o;
}

}  // namespace

Status pipeline_summary_build(const Ctx& cx, const PipelineFacts& f, std::string* json_text, std::string* human_text) {
  const std::vector<PipelineStage>& stages = cx.stages;
  std::map<std::string, ojson> nums;
  std::map<std::string, const PipelineStage*> by_name;
  for (const PipelineStage& s : stages) {
    nums[s.name] = s.numbers.is_object() ? s.numbers : ojson::object();
    by_name[s.name] = &s;
  }
  auto stage_ok = [&](const char* n) {
    auto it = by_name.find(n);
    return it != by_name.end() && (it->second->status == "ok" || it->second->status == "skipped");
  };

  ojson baseline, eval, dryrun, collect;
  const bool have_baseline = stage_ok(stage::kTeacher) && load(f.baseline_report, &baseline);
  const bool have_eval = stage_ok(stage::kEval) && load(f.eval_report, &eval);
  const bool have_dryrun = stage_ok(stage::kDryrun) && load(f.dryrun_report, &dryrun);
  // The collect stage's numbers sum its sources' stats files.
  const bool have_collect = stage_ok(stage::kCollect) && nums[stage::kCollect].contains("steps");
  collect = nums[stage::kCollect];
  const ojson& tr = nums[stage::kTrain];
  const ojson& pt = nums[stage::kPretrain];

  // ---- key numbers (straight from the reports)
  ojson k;
  const double qt_base = have_baseline ? json_number(baseline, {"quality", "score"}) : NAN;
  const double qs = have_eval ? json_number(eval, {"qei_metrics", "student_quality"}) : NAN;
  const double qt = have_eval ? json_number(eval, {"qei_metrics", "teacher_quality"}) : NAN;
  const double qei = have_eval ? json_number(eval, {"qei_metrics", "qei"}) : NAN;
  const double qei_speed = have_eval ? json_number(eval, {"qei_metrics", "qei_speed"}) : NAN;
  const double ms = have_eval ? json_number(eval, {"qei_metrics", "student_memory_gb"}) : NAN;
  const double mt = have_eval ? json_number(eval, {"qei_metrics", "teacher_memory_gb"}) : NAN;
  const double tps_s = have_eval ? json_number(eval, {"qei_metrics", "student_tps"}) : NAN;
  const double tps_t = have_eval ? json_number(eval, {"qei_metrics", "teacher_tps"}) : NAN;
  const double json_s = have_eval ? json_number(eval, {"quality", "student", "json_validity"}) : NAN;
  const double json_t = have_eval ? json_number(eval, {"quality", "teacher", "json_validity"}) : NAN;
  const double top1 = have_eval ? json_number(eval, {"agreement", "top1"}) : NAN;
  const double qu = have_eval ? json_number(eval, {"quality", "untrained", "score"}) : NAN;
  const double dr_rss = have_dryrun ? json_number(dryrun, {"peak_rss_bytes"}) : NAN;
  const double dr_params = have_dryrun ? json_number(dryrun, {"params", "count"}) : NAN;
  // The first run's decode (A8, as the dry run starts).
  const double dr_decode = have_dryrun && dryrun.contains("runs") && dryrun["runs"].is_array() &&
                                   !dryrun["runs"].empty()
                               ? json_number(dryrun["runs"][0], {"decode", "tokens_per_s"})
                               : NAN;
  k["teacher_quality"] = num_json(have_eval && std::isfinite(qt) ? qt : qt_base);
  k["teacher_json_validity"] =
      num_json(have_eval ? json_t : (have_baseline ? json_number(baseline, {"quality", "json_validity"}) : NAN));
  k["teacher_decode_tps"] = num_json(have_baseline ? json_number(baseline, {"metrics", "avg_decode_tps_8k"}) : NAN);
  k["student_quality"] = num_json(qs);
  k["untrained_quality"] = num_json(qu);
  k["student_json_validity"] = num_json(json_s);
  k["qei"] = num_json(qei);
  k["qei_speed"] = num_json(qei_speed);
  k["student_memory_gb"] = num_json(ms);
  k["teacher_memory_gb"] = num_json(mt);
  k["student_tps"] = num_json(tps_s);
  k["teacher_tps"] = num_json(tps_t);
  k["student_teacher_top1_agreement"] = num_json(top1);
  k["dryrun_params"] = num_json(dr_params);
  k["dryrun_peak_rss_bytes"] = num_json(dr_rss);
  k["dryrun_decode_tokens_per_s"] = num_json(dr_decode);
  k["pretrain_final_loss"] = num_json(json_number(pt, {"last_loss"}));
  k["train_final_loss"] = num_json(json_number(tr, {"last_loss"}));
  k["train_final_kl"] = num_json(json_number(tr, {"last_kl"}));
  k["train_final_ce"] = num_json(json_number(tr, {"last_ce"}));
  k["train_flip_done"] = tr.contains("flip_done") ? tr["flip_done"] : ojson(nullptr);
  k["kd_steps"] = num_json(have_collect ? json_number(collect, {"steps"}) : NAN);
  k["kd_steps_valid"] = num_json(have_collect ? json_number(collect, {"steps_valid"}) : NAN);

  // ---- checklist (the PoC's, with real checks)
  std::vector<Check> cl;
  {
    double ok = have_baseline ? json_number(baseline, {"metrics", "ok_prompts"}) : NAN;
    double tot = have_baseline ? json_number(baseline, {"metrics", "total_prompts"}) : NAN;
    bool locked = have_baseline && baseline.contains("prompts_hash") && baseline["prompts_hash"].is_string();
    cl.push_back({"teacher baseline locked, every prompt answered", status_of(have_baseline, locked && tot > 0 && ok == tot),
                  have_baseline ? fmt_number(ok, "%.0f") + "/" + fmt_number(tot, "%.0f") + " prompts answered; prompts hash " +
                                      (locked ? baseline["prompts_hash"].get<std::string>().substr(0, 12) : "missing")
                                : "no reports/teacher_baseline.json"});
    cl.push_back({"teacher quality measured on held-out prompts (above 0)", status_of(std::isfinite(qt_base), qt_base > 0),
                  "task score " + fmt_number(qt_base)});
    // "Clearly above": at least 0.1 of task score over random weights of the
    // student's shape, generated and scored on the same prompts by eval.
    cl.push_back({"teacher clearly above an untrained model (by >= 0.1)",
                  status_of(std::isfinite(qt_base) && std::isfinite(qu), qt_base >= qu + 0.1),
                  "teacher " + fmt_number(qt_base) + ", untrained " + fmt_number(qu) + ", student " + fmt_number(qs)});
  }
  {
    double valid = have_collect ? json_number(collect, {"steps_valid"}) : NAN;
    double total = have_collect ? json_number(collect, {"steps"}) : NAN;
    double failed = have_collect ? json_number(collect, {"prompts_failed"}) : NAN;
    cl.push_back({"KD traces collected, >= 95% of steps valid", status_of(have_collect, total > 0 && valid >= 0.95 * total),
                  fmt_number(valid, "%.0f") + " valid of " + fmt_number(total, "%.0f") + " steps (" + fmt_percent(valid / total) + "); " +
                      fmt_number(failed, "%.0f") + " prompts failed"});
  }
  {
    const LossFell lf = loss_fell(path_join(cx.paths.logs, "train_metrics.jsonl"), json_number(tr, {"steps"}));
    double guards = json_number(tr, {"nan_guards"});
    cl.push_back({"student trained: the loss fell (against its own early loss)",
                  status_of(stage_ok(stage::kTrain) && std::isfinite(lf.early) && std::isfinite(lf.last),
                            lf.last < lf.early),
                  "logged loss " + fmt_number(lf.early, "%.4g") + " at step " + fmt_number(lf.early_step, "%.0f") +
                      " -> " + fmt_number(lf.last, "%.4g") + " at step " + fmt_number(lf.last_step, "%.0f") +
                      " (step 1: " + fmt_number(json_number(tr, {"first_loss"}), "%.4g") + "), KL " +
                      fmt_number(json_number(tr, {"last_kl"}), "%.4g") + ", NaN guards " + fmt_number(guards, "%.0f")});
    bool flip = tr.contains("flip_done") && tr["flip_done"].is_boolean() && tr["flip_done"].get<bool>();
    cl.push_back({"A8 -> A4 flip done", status_of(tr.contains("flip_done"), flip),
                  flip ? "at step " + fmt_number(json_number(tr, {"flip_step"}), "%.0f") + " (" + fmt_number(json_number(tr, {"flip_tokens"}), "%.0f") +
                             " tokens)"
                       : "not reached"});
  }
  {
    std::string msrc = have_eval && eval.contains("teacher") && eval["teacher"].is_object() &&
                               eval["teacher"].contains("memory_source") && eval["teacher"]["memory_source"].is_string()
                           ? eval["teacher"]["memory_source"].get<std::string>()
                           : "";
    // Measured (local weights) or declared (TEACHER_MEMORY_GB): the detail says
    // which. Unknown teacher memory is "not measured", naming what to set.
    bool inputs = std::isfinite(qs) && std::isfinite(qt) && std::isfinite(ms) && std::isfinite(mt);
    cl.push_back({"QEI computed from measured or declared values",
                  status_of(have_eval && std::isfinite(mt) && mt > 0, inputs && std::isfinite(qei)),
                  "Qs " + fmt_number(qs) + ", Qt " + fmt_number(qt) + ", Ms " + fmt_number(ms, "%.4g") + " GB (packed weights), Mt " +
                      fmt_number(mt, "%.4g") + " GB (" + (msrc.empty() ? std::string("source unknown") : msrc) + ")"});
  }
  {
    bool tiny = cx.plan.tiny;
    cl.push_back({tiny ? "dry run (small shape, tiny run) within 3 GiB" : "7B dry run within 3 GiB peak RSS",
                  status_of(std::isfinite(dr_rss), dr_rss <= 3.0 * 1024 * 1024 * 1024),
                  fmt_params(dr_params) + " params, peak RSS " + fmt_bytes(dr_rss)});
  }
  // The gates as eval evaluated them.
  {
    const ojson* gates = have_eval && eval.contains("qei_metrics") && eval["qei_metrics"].contains("gates")
                             ? &eval["qei_metrics"]["gates"]
                             : nullptr;
    for (const char* key : {"qei_ge_0.2", "qei_speed_ge_0.1", "quality_ge_0.8_teacher", "json_validity_ge_0.95"}) {
      if (!gates || !gates->contains(key) || !(*gates)[key].is_object()) {
        cl.push_back({std::string("gate: ") + key, "not_measured", "no eval report"});
        continue;
      }
      const ojson& g = (*gates)[key];
      const std::string status = g.value("status", "");
      std::string detail = g.value("detail", "");
      if (std::string(key) == "json_validity_ge_0.95") detail += "; teacher " + fmt_percent(json_t);
      cl.push_back({"gate: " + g.value("item", std::string(key)), status == "not_evaluated" ? "not_measured" : status,
                    detail});
    }
  }

  // ---- JSON
  ojson j;
  j["status"] = f.failed_stage.empty() ? "ok" : "failed";
  j["failed_stage"] = f.failed_stage.empty() ? ojson(nullptr) : ojson(f.failed_stage);
  j["timestamp"] = f.finished;
  j["started"] = f.started;
  j["finished"] = f.finished;
  j["wall_s"] = f.wall_s;
  j["bitkd_version"] = BITKD_VERSION;
  const KernelInfo& ki = kernels_info();
  j["machine"] = (ki.cpu.empty() ? std::string("unknown CPU") : ki.cpu) + ", " +
                 std::to_string(hardware_threads()) + " hardware threads, " + ki.vector_isa + ", " + ki.blas_family +
                 " BLAS kernels";
  j["threads"] = config_str(cx.cfg, "THREADS", "0");
  j["scale"] = cx.plan.scale_name;
  j["teacher"] = {{"mode", cx.local_teacher ? "local" : "external"}, {"description", cx.teacher_desc}};
  j["settings"] = cx.plan.settings;
  ojson st = ojson::array();
  double ran_s = 0;
  for (const PipelineStage& s : stages) {
    ojson e;
    e["name"] = s.name;
    e["status"] = s.status;
    e["duration_s"] = s.duration_s;
    e["cpu_s"] = s.cpu_s;
    if (s.recorded_duration_s >= 0) e["last_run_duration_s"] = s.recorded_duration_s;
    if (s.recorded_cpu_s >= 0) e["last_run_cpu_s"] = s.recorded_cpu_s;
    if (!s.detail.empty()) e["detail"] = s.detail;
    if (!s.log.empty()) e["log"] = s.log;
    if (!s.fingerprint.empty()) e["fingerprint"] = s.fingerprint;
    e["commands"] = s.commands;
    e["numbers"] = s.numbers;
    st.push_back(e);
    ran_s += s.duration_s;
  }
  j["stages"] = st;
  j["server_cpu_s"] = cx.server_cpu_s;
  j["key_numbers"] = k;
  ojson cj = ojson::array();
  int pass = 0, fail = 0, nm = 0;
  for (const Check& c : cl) {
    cj.push_back({{"item", c.item}, {"status", c.status}, {"detail", c.detail}});
    (c.status == "pass" ? pass : c.status == "fail" ? fail : nm)++;
  }
  j["checklist"] = cj;
  j["checklist_counts"] = {{"pass", pass}, {"fail", fail}, {"not_measured", nm}};
  ojson arts;
  std::vector<std::string> artifacts = {f.baseline_report, f.eval_report, f.dryrun_report};
  for (const std::string& src : cx.plan.kd_sources) artifacts.push_back(traces_stats(cx, src));
  for (const std::string& p : artifacts)
    arts[p] = file_exists(p);
  j["artifacts"] = arts;
  *json_text = j.dump(2) + "\n";

  // ---- text
  std::string t;
  char line[512];
  t += "stage       status      time      cpu       key numbers\n";
  for (const PipelineStage& s : stages) {
    const ojson& n = nums[s.name];
    const StageSpec* spec = stage_find(s.name);
    std::string note = spec && spec->note && n.is_object() && !n.empty() ? spec->note(n) : "";
    if (s.status == "failed") note = "see " + s.log;
    if (s.status == "not_needed") note = s.detail;
    std::string time = s.status == "skipped" ? "(" + fmt_duration(s.recorded_duration_s) + ")" : fmt_duration(s.duration_s);
    if (s.status == "not_run" || s.status == "not_needed") time = "-";
    std::string cpu = s.status == "ok" || s.status == "failed" ? fmt_duration(s.cpu_s)
                      : s.status == "skipped" && s.recorded_cpu_s >= 0 ? "(" + fmt_duration(s.recorded_cpu_s) + ")"
                                                                        : "-";
    snprintf(line, sizeof line, "%-11s %-11s %-9s %-9s %s\n", s.name.c_str(), s.status.c_str(), time.c_str(),
             cpu.c_str(), note.c_str());
    t += line;
  }
  snprintf(line, sizeof line,
           "total %s (stages %s; cpu = user + system time of the stage's commands; the teacher server used %s "
           "more; skipped stages show their last run in parentheses)\n\n",
           fmt_duration(f.wall_s).c_str(), fmt_duration(ran_s).c_str(), fmt_duration(cx.server_cpu_s).c_str());
  t += line;
  if (have_eval) {
    t += "quality (task score, held-out prompts): teacher " + fmt_number(qt) + ", student " + fmt_number(qs) + ", untrained " + fmt_number(qu) +
         "; JSON validity teacher " +
         fmt_percent(json_t) + ", student " + fmt_percent(json_s) + "\n";
    t += "memory (weights): teacher " + fmt_number(mt, "%.4g") + " GB, student " + fmt_number(ms, "%.4g") + " GB; decode: teacher " +
         fmt_number(tps_t, "%.0f") + " tok/s, student " + fmt_number(tps_s, "%.0f") + " tok/s\n";
    t += "QEI " + fmt_number(qei) + ", QEI_speed " + fmt_number(qei_speed) + "; student/teacher top-1 agreement " + fmt_percent(top1) + "\n";
  }
  t += "checklist:\n";
  for (const Check& c : cl) {
    const char* tag = c.status == "pass" ? "pass" : c.status == "fail" ? "FAIL" : "n/m ";
    t += std::string("  [") + tag + "] " + c.item + ": " + c.detail + "\n";
  }
  if (!f.failed_stage.empty()) t += "\nFAILED at stage " + f.failed_stage + " (log: " + by_name[f.failed_stage]->log + ")\n";
  *human_text = t;
  return ok_status();
}

}  // namespace bk
