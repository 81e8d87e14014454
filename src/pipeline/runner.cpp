// Running the stage table: skip rules, stamps, the local teacher server, and
// the run itself (pipeline.h).
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>

#include "core/fs.h"
#include "core/log.h"
#include "core/timing.h"
#include "core/version.h"
#include "pipeline/internal.h"
#include "report/report.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"

namespace bk {

namespace {

// Bumped when a stage's recipe changes in a way its inputs do not show, so
// old stamps stop matching.
constexpr const char* kRecipeVersion = "2";
constexpr const char* kServedTeacherName = "bitkd-teacher";

std::string lower(std::string s) {
  for (char& c : s) c = (char)tolower((unsigned char)c);
  return s;
}

// The last non-empty line of a file (progress lines end in \n or \r).
std::string last_line(const std::string& path) {
  FILE* f = fopen(path.c_str(), "rb");
  if (!f) return "";
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  long from = std::max(0L, size - 4096);
  fseek(f, from, SEEK_SET);
  std::string tail((size_t)(size - from), '\0');
  size_t got = fread(&tail[0], 1, tail.size(), f);
  fclose(f);
  tail.resize(got);
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == '\r' || tail.back() == ' ')) tail.pop_back();
  size_t cut = tail.find_last_of("\r\n");
  return cut == std::string::npos ? tail : tail.substr(cut + 1);
}

std::string stamp_path(const Ctx& cx, const std::string& stage) { return path_join(cx.stamps_dir, stage + ".json"); }
// Where the commands of a stage record the variables they read.
std::string reads_path(const Ctx& cx, const std::string& stage) { return path_join(cx.stamps_dir, stage + ".reads"); }

Stamp read_stamp(const std::string& path) {
  Stamp s;
  ojson j;
  if (!read_json_file(path, &j) || !j.is_object()) return s;
  s.exists = true;
  s.state = j.value("state", "");
  s.fingerprint = j.value("fingerprint", "");
  s.run_id = j.value("run_id", "");
  s.duration_s = j.value("duration_s", -1.0);
  s.cpu_s = j.value("cpu_s", -1.0);
  if (j.contains("inputs") && j["inputs"].is_object()) s.inputs = j["inputs"];
  if (j.contains("numbers") && j["numbers"].is_object()) s.numbers = j["numbers"];
  if (j.contains("commands") && j["commands"].is_array())
    for (const ojson& c : j["commands"])
      if (c.is_string()) s.commands.push_back(c.get<std::string>());
  return s;
}

// Variables that never change what a stage writes: where things go, how fast,
// how loud, and credentials (which must not reach a stamp file either).
bool fingerprinted(const std::string& name) {
  if (config_is_secret(name)) return false;
  static const char* const k_skip[] = {"THREADS", "LOG_LEVEL", "ARTIFACTS_DIR", "DRIVE_ROOT", "DATA_DIR",
                                       "CHECKPOINTS_DIR", "REPORTS_DIR", "LOGS_DIR", "AUTO_CREATE_DIRS",
                                       "STORAGE_BACKEND", "STORAGE_REMOTE"};
  for (const char* s : k_skip)
    if (name == s) return false;
  return true;
}

// The environment a stage's commands run with: the common one plus its own.
ProcessEnv stage_env(const Ctx& cx, const StageSpec& s) {
  ProcessEnv e = child_env(cx);
  if (s.env) s.env(cx, &e);
  return e;
}

// The values the stage's commands see for the named variables: what the
// pipeline sets for them, else the configuration's. Where the local teacher
// is served (a new port each run) is not an input; its checkpoint is, through
// the pretrain stage's run id.
// A path inside the artifact root, written relative to it: a run pulled
// onto another machine or folder (STORAGE_BACKEND) keeps its fingerprints.
std::string under_root(const Ctx& cx, const std::string& v) {
  const std::string& root = cx.paths.root;
  if (!root.empty() && v.size() > root.size() && v.compare(0, root.size(), root) == 0 && v[root.size()] == '/')
    return "<artifacts>" + v.substr(root.size());
  return v;
}

ojson config_values(const Ctx& cx, const StageSpec& s, const ojson& names) {
  const ProcessEnv env = stage_env(cx, s);
  ojson out = ojson::object();
  for (auto it = names.begin(); it != names.end(); ++it) {
    const std::string& n = it.key();
    auto e = env.find(n);
    if (cx.local_teacher && (n == "TEACHER_BASE_URL" || n == "TEACHER_CHECKPOINT")) out[n] = "(local teacher)";
    else out[n] = under_root(cx, e != env.end() ? e->second : config_str(cx.cfg, n));
  }
  return out;
}

// Names the stage's commands recorded (BITKD_CONFIG_READS), fingerprinted ones only.
ojson recorded_reads(const Ctx& cx, const std::string& stage) {
  ojson names = ojson::object();
  std::string text;
  if (!read_file(reads_path(cx, stage), &text).ok()) return names;
  std::istringstream in(text);
  std::string n;
  std::vector<std::string> all;
  while (std::getline(in, n))
    if (!n.empty() && fingerprinted(n)) all.push_back(n);
  std::sort(all.begin(), all.end());
  for (const std::string& x : all) names[x] = "";
  return names;
}

// Fingerprint inputs of a stage now: the recipe, the seed, upstream run ids,
// the stage's own inputs, and the current values of config_names.
ojson stage_inputs(const Ctx& cx, const StageSpec& s, const ojson& config_names) {
  ojson in;
  in["stage"] = s.name;
  in["recipe"] = kRecipeVersion;
  for (const char* up : s.reads) in["after_" + std::string(up)] = upstream_run_id(cx, up);
  s.inputs(cx, &in);
  in["config"] = config_values(cx, s, config_names);
  return in;
}

std::string fingerprint_of(const ojson& inputs) { return sha256_hex(inputs.dump()).substr(0, 16); }

// Which inputs differ between two fingerprint input sets ("a, b").
std::string changed_inputs(const ojson& a, const ojson& b) {
  std::string out;
  auto note = [&](const std::string& k) { out += (out.empty() ? "" : ", ") + k; };
  for (auto it = b.begin(); it != b.end(); ++it) {
    if (it.key() == "config" && a.contains("config") && a["config"].is_object() && it.value().is_object()) {
      for (auto c = it.value().begin(); c != it.value().end(); ++c)
        if (!a["config"].contains(c.key()) || a["config"][c.key()] != c.value()) note(c.key());
      continue;
    }
    if (!a.contains(it.key()) || a[it.key()] != it.value()) note(it.key());
  }
  for (auto it = a.begin(); it != a.end(); ++it)
    if (!b.contains(it.key())) note(it.key());
  return out;
}

void print_stage_line(Ctx& cx, const std::string& name, const std::string& status, const std::string& rest) {
  printf("[%d/%d] %-10s %-8s %s\n", cx.stage_no, cx.stage_total, name.c_str(), status.c_str(), rest.c_str());
  fflush(stdout);
}

}  // namespace

// The environment every command sees: the resolved artifact layout, threads,
// seed and log level (so flags given to `bitkd pipeline` reach the stages),
// the student tokenizer and, for the local teacher, where it is served.
ProcessEnv child_env(const Ctx& cx) {
  const Config& c = cx.cfg;
  ProcessEnv e;
  e["ARTIFACTS_DIR"] = cx.paths.root;
  e["DATA_DIR"] = cx.paths.data;
  e["CHECKPOINTS_DIR"] = cx.paths.checkpoints;
  e["REPORTS_DIR"] = cx.paths.reports;
  e["LOGS_DIR"] = cx.paths.logs;
  e["THREADS"] = config_str(c, "THREADS", "0");
  e["SEED"] = config_str(c, "SEED", "1234");
  e["LOG_LEVEL"] = config_str(c, "LOG_LEVEL", "INFO");
  e["TOKENIZER_NAME"] = cx.student_tok;
  // Stages overlap (the server beside the collector) and machines are often
  // shared: idle OpenMP threads sleep instead of spinning on the other's cores.
  if (!getenv("OMP_WAIT_POLICY")) e["OMP_WAIT_POLICY"] = "PASSIVE";
  if (cx.local_teacher) {
    e["TEACHER_PROVIDER"] = "bitkd";
    e["TEACHER_MODEL"] = kServedTeacherName;
    e["TEACHER_BASE_URL"] = cx.server_url;
    e["TEACHER_API"] = "chat";
    // The bitkd provider falls back to BITKD_API_KEY, which `bitkd serve` also reads.
    e["TEACHER_API_KEY"] = "";
    e["TEACHER_CHECKPOINT"] = checkpoint_find_latest(cx.teacher_dir);
    e["TEACHER_TOKENIZER"] = cx.teacher_tok;
  }
  return e;
}

namespace {

// ---- the remote (src/storage) -------------------------------------------------------

// Before the first stage: the remote answers, and what it holds that this
// machine lacks is here (a fresh machine resumes where the last one stopped).
Status storage_start(Ctx& cx) {
  BK_TRY(storage_open(cx.cfg, cx.paths.root, &cx.storage));
  if (cx.storage.backend == "local") return ok_status();
  for (const std::string* d : {&cx.paths.data, &cx.paths.checkpoints, &cx.paths.reports, &cx.paths.logs})
    if (d->rfind(cx.paths.root + "/", 0) != 0)
      return errorf("STORAGE_BACKEND=%s mirrors the artifact root %s, and %s is outside it: unset DATA_DIR, "
                    "CHECKPOINTS_DIR, REPORTS_DIR and LOGS_DIR (or point them inside the root)",
                    cx.storage.setting.c_str(), cx.paths.root.c_str(), d->c_str());
  BK_TRY(storage_pull(&cx.storage));
  printf("storage: %s via rclone (pulled what this machine lacked; new files are pushed as they are written)\n",
         cx.storage.remote.c_str());
  fflush(stdout);
  return ok_status();
}

// While a stage runs: its finished files (checkpoints, shards, stamps) every
// second. A failure is said once and retried when the stage ends.
void storage_tick(Ctx& cx) {
  if (cx.storage.backend == "local" || cx.storage_mid_failed || now_seconds() - cx.storage_pushed_at < 1.0) return;
  Status st = storage_push_changed(&cx.storage, true);
  cx.storage_pushed_at = now_seconds();
  if (st.ok()) return;
  cx.storage_mid_failed = true;
  printf("\n      %s (tried again when the stage ends)\n", st.msg.c_str());
  fflush(stdout);
}

// ---- one stage --------------------------------------------------------------------

PipelineStage not_run_record(const Ctx& cx, const std::string& name, const std::string& why) {
  PipelineStage rec;
  rec.name = name;
  rec.status = "not_run";
  rec.detail = why;
  rec.log = stage_log_path(cx, name);
  return rec;
}

// Runs or skips one stage; records it in cx.stages. Returns an error when it failed.
Status do_stage(Ctx& cx, const StageSpec& s) {
  cx.stage_no++;
  PipelineStage rec;
  rec.name = s.name;
  rec.log = stage_log_path(cx, s.name);
  const std::string sp = stamp_path(cx, s.name);
  Stamp old = read_stamp(sp);
  // Compare like with like: the variables the last run read, at today's values.
  const ojson names = old.inputs.contains("config") ? old.inputs["config"] : ojson::object();
  const ojson inputs = stage_inputs(cx, s, names);
  rec.fingerprint = fingerprint_of(inputs);
  std::string missing;
  for (const std::string& a : s.outputs(cx))
    if (!file_exists(a)) missing = a;
  const bool forced = cx.opt.force_all || cx.opt.force_stages.count(s.name);
  const bool selected = cx.opt.only.empty() || cx.opt.only.count(s.name);
  const bool up_to_date = old.exists && old.state == "done" && old.fingerprint == rec.fingerprint && missing.empty();

  if (up_to_date && !forced) {
    rec.status = "skipped";
    rec.detail = "up to date (inputs unchanged since the last run; --force-stage " + rec.name + " reruns it)";
    rec.recorded_duration_s = old.duration_s;
    rec.recorded_cpu_s = old.cpu_s;
    rec.commands = old.commands;
    cx.run_ids[s.name] = old.run_id;
    rec.numbers = s.numbers(cx, old);
    print_stage_line(cx, s.name, "skipped", "up to date (last run took " + fmt_duration(old.duration_s) + ")");
    cx.stages.push_back(rec);
    return ok_status();
  }
  if (!selected) {
    cx.stages.push_back(
        not_run_record(cx, s.name, old.exists ? "not selected (--only), and out of date" : "not selected (--only), never run"));
    print_stage_line(cx, s.name, "not run", cx.stages.back().detail);
    if (!cx.needed.count(s.name)) return ok_status();
    return errorf("stage %s is %s and a selected stage needs it; run `bitkd pipeline --until %s` (or `make %s`) first",
                  s.name, old.exists ? "out of date" : "not done yet", s.name, s.name);
  }

  std::string why;
  bool resume = false;
  if (forced) why = "forced";
  else if (!old.exists) why = "first run";
  else if (old.fingerprint != rec.fingerprint) why = "inputs changed: " + changed_inputs(old.inputs, inputs);
  else if (old.state == "running") why = "resuming an interrupted run", resume = true;
  else why = "output missing: " + missing;
  // A fresh run starts from nothing: outputs of other inputs (or of a manual
  // run) would otherwise be mixed in (eval picks the newest checkpoint).
  if (!resume && s.clean) s.clean(cx);

  print_stage_line(cx, s.name, "running", s.what(cx) + " (" + why + "; log " + rec.log + ")");
  if (!resume) remove_files({rec.log, reads_path(cx, s.name)});
  const double t0 = now_seconds();
  Status st = s.needs_server ? ensure_server(cx) : ok_status();
  if (st.ok()) {
    ojson running;
    running["stage"] = s.name;
    running["state"] = "running";
    running["fingerprint"] = rec.fingerprint;
    running["inputs"] = inputs;
    running["started"] = utc_timestamp_iso();
    st = write_file_atomic(sp, running.dump(2) + "\n");
  }
  cx.storage_pushed_at = 0;
  cx.storage_mid_failed = false;
  if (st.ok()) st = s.run(cx, resume, &rec);
  rec.duration_s = now_seconds() - t0;
  if (!st.ok()) {
    // What the failed stage left (its log above all) goes to the remote too.
    Status ps = storage_push_changed(&cx.storage, false);
    if (!ps.ok()) printf("      %s\n", ps.msg.c_str());
    rec.status = "failed";
    rec.detail = st.msg;
    print_stage_line(cx, s.name, "FAILED", "after " + fmt_duration(rec.duration_s) + ": " + st.msg);
    printf("      log: %s\n", rec.log.c_str());
    std::string tail = last_line(rec.log);
    if (!tail.empty()) printf("      last log line: %s\n", tail.c_str());
    cx.stages.push_back(rec);
    return errorf("stage %s failed: %s (log: %s)", s.name, st.msg.c_str(), rec.log.c_str());
  }
  // The stamp holds what the commands just read, at the values they ran with.
  const ojson done_inputs = stage_inputs(cx, s, recorded_reads(cx, s.name));
  rec.fingerprint = fingerprint_of(done_inputs);
  Stamp now;
  rec.numbers = s.numbers(cx, now);
  const std::string finished = utc_timestamp_iso();
  const std::string run_id = sha256_hex(rec.fingerprint + finished + std::to_string(getpid())).substr(0, 16);
  ojson done;
  done["stage"] = s.name;
  done["state"] = "done";
  done["fingerprint"] = rec.fingerprint;
  done["run_id"] = run_id;
  done["finished"] = finished;
  done["duration_s"] = rec.duration_s;
  done["cpu_s"] = rec.cpu_s;
  done["inputs"] = done_inputs;
  done["commands"] = rec.commands;
  done["numbers"] = rec.numbers;
  BK_TRY(write_file_atomic(sp, done.dump(2) + "\n"));
  cx.run_ids[s.name] = run_id;
  rec.status = "ok";
  print_stage_line(cx, s.name, "ok", fmt_duration(rec.duration_s));
  cx.stages.push_back(rec);
  return storage_push_changed(&cx.storage, false);
}

// ---- the teacher --------------------------------------------------------------------

// The embedded local teacher unless the configuration names another one. A
// PoC .env that only says PROVIDER=openai without a key falls back to the
// local teacher with a warning; an explicit TEACHER_PROVIDER that does not
// resolve is an error.
Status resolve_teacher(Ctx& cx) {
  const Config& c = cx.cfg;
  const std::string tp = lower(config_str(c, "TEACHER_PROVIDER"));
  const std::string prov = tp.empty() ? lower(config_str(c, "PROVIDER")) : tp;
  const char* local = "embedded float teacher served by `bitkd serve` on 127.0.0.1";
  if (prov.empty() || prov == "local" || prov == "embedded") {
    cx.local_teacher = true;
    cx.teacher_desc = local;
    return ok_status();
  }
  Config probe = c;
  if (!tp.empty() && tp != prov) config_set(&probe, "TEACHER_PROVIDER", tp, SRC_FLAG);
  Status st = provider_resolve(probe, &cx.hosted);
  if (!st.ok()) {
    if (tp.empty() && !config_has(c, "TEACHER_BASE_URL")) {
      BK_LOG_WARN("PROVIDER=%s is set but cannot be used (%s); using the embedded local teacher. Set TEACHER_PROVIDER "
                  "to make a hosted teacher mandatory.",
                  prov.c_str(), st.msg.c_str());
      cx.local_teacher = true;
      cx.teacher_desc = local;
      return ok_status();
    }
    return with_context(st, "teacher from .env/environment");
  }
  long long topk = 20;
  BK_TRY(config_int(c, "TEACHER_TOP_LOGPROBS", &topk));
  BK_TRY(provider_check_kd(cx.hosted, (int)topk));
  cx.local_teacher = false;
  cx.teacher_desc = provider_describe(cx.hosted);
  return ok_status();
}

long long topk_or_default(const Config& c) {
  long long k = 20;
  return config_int(c, "TEACHER_TOP_LOGPROBS", &k).ok() ? k : 20;
}

Status setup_impl(Ctx& cx) {
  const std::vector<std::string> names = pipeline_stage_names();
  std::string list;
  for (const std::string& n : names) list += (list.empty() ? "" : ", ") + n;
  std::vector<std::string> asked(cx.opt.force_stages.begin(), cx.opt.force_stages.end());
  asked.insert(asked.end(), cx.opt.only.begin(), cx.opt.only.end());
  if (!cx.opt.until.empty()) asked.push_back(cx.opt.until);
  for (const std::string& n : asked)
    if (!stage_find(n)) return errorf("unknown stage '%s' (stages: %s)", n.c_str(), list.c_str());
  if (!cx.opt.until.empty() && !cx.opt.only.empty()) return errorf("give --only or --until, not both");

  BK_TRY(pipeline_plan_make(cx.cfg, &cx.plan));
  BK_TRY(resolve_teacher(cx));
  cx.paths = artifact_paths(cx.cfg);
  BK_TRY(ensure_artifact_dirs(cx.cfg, cx.paths));
  cx.exe = self_exe_path();
  cx.stamps_dir = path_join(cx.paths.root, "stamps");
  cx.tasks_dir = path_join(cx.paths.root, "tasks");
  cx.train_jsonl = path_join(cx.tasks_dir, "train.jsonl");
  cx.val_jsonl = path_join(cx.tasks_dir, "val.jsonl");
  cx.eval_jsonl = path_join(cx.tasks_dir, "eval.jsonl");
  cx.teacher_dir = path_join(cx.paths.root, "teacher");
  cx.teacher_tok = path_join(cx.teacher_dir, "tokenizer.model");
  // A hosted teacher that cannot score a given text gives teacher samples only.
  if (!cx.local_teacher && !config_user_set(cx.cfg, "KD_SOURCES") &&
      !provider_check_score(cx.hosted, (int)topk_or_default(cx.cfg)).ok()) {
    cx.plan.kd_sources = {"teacher_sample"};
    cx.plan.settings["collect"]["sources"] = cx.plan.kd_sources;
    printf("note: %s cannot score a given text, so the traces are its own samples (KD_SOURCES=teacher_sample)\n",
           cx.teacher_desc.c_str());
  }
  cx.student_tok_user = config_user_set(cx.cfg, "TOKENIZER_NAME");
  // A local teacher's tokenizer serves the student too, unless the user names
  // one or asks for its own (then traces are projected between vocabularies).
  if (!cx.local_teacher || cx.student_tok_user) cx.plan.student_shares_tokenizer = false;
  if (!cx.plan.student_shares_tokenizer) cx.plan.init_from_teacher = false;  // the weights need the tokenizer
  cx.plan.settings["student"]["tokenizer"] = cx.plan.student_shares_tokenizer ? "the teacher's" : "its own";
  cx.plan.settings["student"]["init"] = cx.plan.init_from_teacher ? "the teacher's weights" : "random";
  cx.student_tok = cx.student_tok_user ? config_str(cx.cfg, "TOKENIZER_NAME")
                   : cx.plan.student_shares_tokenizer
                       ? cx.teacher_tok
                       : path_join(path_join(cx.paths.root, "tokenizer"), "tokenizer.model");
  cx.baseline_prompts_user = config_user_set(cx.cfg, "TEACHER_BASELINE_PROMPTS_FILE");
  cx.eval_prompts_user = config_user_set(cx.cfg, "EVAL_PROMPTS_FILE");
  cx.kd_prompts_user = config_user_set(cx.cfg, "KD_PROMPTS_FILE");
  if (cx.student_tok_user && !file_exists(cx.student_tok))
    return errorf("TOKENIZER_NAME=%s: no such file", cx.student_tok.c_str());
  BK_TRY(make_dirs(cx.stamps_dir));
  // --only: what the selected stages read must be done already.
  std::vector<std::string> pending(cx.opt.only.begin(), cx.opt.only.end());
  while (!pending.empty()) {
    const StageSpec* s = stage_find(pending.back());
    pending.pop_back();
    for (const char* dep : s->reads)
      if (!cx.opt.only.count(dep) && cx.needed.insert(dep).second) pending.push_back(dep);
  }
  return ok_status();
}

}  // namespace

// ---- the local teacher server ------------------------------------------------------

Status ensure_server(Ctx& cx) {
  if (!cx.local_teacher || cx.server_pid > 0) return ok_status();
  const std::string ckpt = checkpoint_find_latest(cx.teacher_dir);
  if (ckpt.empty()) return errorf("no teacher checkpoint in %s (the pretrain stage writes it)", cx.teacher_dir.c_str());
  const std::string log = stage_log_path(cx, "serve");
  remove_files({log});
  std::vector<std::string> argv = command_argv(cx, {"serve"});
  add_flag(&argv, "model", ckpt);
  add_flag(&argv, "tokenizer", cx.teacher_tok);
  add_flag(&argv, "host", "127.0.0.1");
  add_flag(&argv, "port", "0");
  add_flag(&argv, "model-name", kServedTeacherName);
  add_flag(&argv, "workers", std::max(1LL, cx.plan.concurrency));
  append_to_file(log, "# " + utc_timestamp_iso() + "\n$ " + shell_join(argv) + "\n");
  pid_t pid = 0;
  BK_TRY(process_spawn(argv, child_env(cx), log, &pid));
  cx.server_pid = pid;
  process_track(pid);
  printf("      teacher server: starting `bitkd serve` on 127.0.0.1 (log %s)\n", log.c_str());
  // Ready when it prints "listening on http://HOST:PORT".
  const double t0 = now_seconds();
  const std::string key = "listening on ";
  while (true) {
    std::string text;
    if (read_file(log, &text).ok()) {
      size_t at = text.find(key + "http://");
      size_t end = at == std::string::npos ? at : text.find_first_of("\r\n", at);
      if (end != std::string::npos) {
        cx.server_url = text.substr(at + key.size(), end - at - key.size()) + "/v1";
        printf("      teacher server: %s (pid %d)\n", cx.server_url.c_str(), (int)pid);
        fflush(stdout);
        return ok_status();
      }
    }
    int status = 0;
    if (process_ended(pid, &status)) {
      process_untrack(pid);
      cx.server_pid = 0;
      return errorf("the teacher server stopped before it was ready (%s); see %s",
                    process_describe_exit(status).c_str(), log.c_str());
    }
    if (process_interrupted()) return errorf("interrupted (signal %d)", process_interrupted());
    if (now_seconds() - t0 > 300) return errorf("the teacher server did not report a port within 300 s; see %s", log.c_str());
    sleep_seconds(0.1);
  }
}

void stop_server(Ctx& cx) {
  if (cx.server_pid <= 0) return;
  cx.server_cpu_s += process_stop(cx.server_pid, 10.0);
  process_untrack(cx.server_pid);
  append_to_file(stage_log_path(cx, "serve"), "# " + utc_timestamp_iso() + " stopped by the pipeline (SIGTERM)\n");
  printf("      teacher server: stopped\n");
  cx.server_pid = 0;
}

Status pipeline_setup(Ctx& cx) { return setup_impl(cx); }

// ---- helpers for the stage definitions ----------------------------------------------

std::string stage_log_path(const Ctx& cx, const std::string& stage) { return path_join(cx.paths.logs, stage + ".log"); }
std::string heldout_dir(const Ctx& cx) { return path_join(cx.paths.data, "heldout"); }

std::string traces_dir(const Ctx& cx, const std::string& source) {
  return source == "teacher_sample" ? cx.paths.data : path_join(cx.paths.data, source);
}

std::string traces_stats(const Ctx& cx, const std::string& source) {
  return path_join(cx.paths.logs, source == "teacher_sample" ? "collect_stats.json" : "collect_" + source + "_stats.json");
}

std::string train_data_dirs(const Ctx& cx) {
  std::string dirs;
  for (const std::string& s : cx.plan.kd_sources) dirs += (dirs.empty() ? "" : ",") + traces_dir(cx, s);
  return dirs;
}

std::vector<std::string> command_argv(const Ctx& cx, std::initializer_list<const char*> cmd) {
  std::vector<std::string> v = {cx.exe};
  for (const char* s : cmd) v.push_back(s);
  v.push_back("--env-file");
  v.push_back(cx.opt.env_file);
  return v;
}

void add_flag(std::vector<std::string>* v, const std::string& name, const std::string& value) {
  v->push_back("--" + name);
  v->push_back(value);
}
void add_flag(std::vector<std::string>* v, const std::string& name, long long value) {
  add_flag(v, name, std::to_string(value));
}
void add_flag_num(std::vector<std::string>* v, const std::string& name, double value) {
  add_flag(v, name, fmt_num(value));
}

Status run_command(Ctx& cx, PipelineStage* rec, const std::vector<std::string>& argv) {
  rec->commands.push_back(shell_join(argv));
  ProcessEnv env = stage_env(cx, *stage_find(rec->name));
  env["BITKD_CONFIG_READS"] = reads_path(cx, rec->name);
  // While it runs, its newest log line is shown (one updating line on a
  // terminal, a line a minute otherwise).
  const bool tty = isatty(fileno(stdout));
  double last_show = now_seconds();
  bool shown = false;
  auto show = [&]() {
    storage_tick(cx);
    const double now = now_seconds();
    if (now - last_show < (tty ? 1.0 : 60.0)) return;
    last_show = now;
    std::string line = last_line(rec->log);
    if (line.size() > 110) line = line.substr(0, 107) + "...";
    if (line.empty()) return;
    if (tty) printf("\r\033[K      %s", line.c_str()), shown = true;
    else printf("      %s\n", line.c_str());
    fflush(stdout);
  };
  Status st = process_run(argv, env, rec->log, show, &rec->cpu_s);
  if (tty && shown) printf("\r\033[K"), fflush(stdout);
  return st;
}

std::string upstream_run_id(const Ctx& cx, const char* stage) {
  auto it = cx.run_ids.find(stage);
  return it == cx.run_ids.end() ? std::string("") : it->second;
}

std::string fmt_num(double v) {
  char buf[32];
  snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

std::string fmt_exact(double v) {
  char buf[40];
  snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string fmt_duration(double s) {
  char buf[32];
  if (!(s >= 0)) return "-";
  if (s < 60) snprintf(buf, sizeof buf, "%.1fs", s);
  else if (s < 3600) snprintf(buf, sizeof buf, "%dm%02ds", (int)(s / 60), (int)s % 60);
  else snprintf(buf, sizeof buf, "%dh%02dm", (int)(s / 3600), ((int)s % 3600) / 60);
  return buf;
}

bool read_json_file(const std::string& path, ojson* out) {
  std::string text;
  if (!read_file(path, &text).ok()) return false;
  *out = ojson::parse(text, nullptr, false);
  return !out->is_discarded();
}

void append_to_file(const std::string& path, const std::string& text) {
  FILE* f = fopen(path.c_str(), "ab");
  if (!f) return;
  fwrite(text.data(), 1, text.size(), f);
  fclose(f);
}

void remove_files(const std::vector<std::string>& paths) {
  for (const std::string& p : paths)
    if (file_exists(p) && unlink(p.c_str()) != 0) BK_LOG_WARN("pipeline: cannot remove %s: %s", p.c_str(), strerror(errno));
}

std::string file_hash(const std::string& path) {
  std::string text;
  if (!read_file(path, &text).ok()) return "";
  return sha256_hex(text).substr(0, 16);
}

std::string tokenizer_file_hash(const std::string& path) {
  Tokenizer t;
  if (!tokenizer_load(path, &t).ok()) return "";
  return tokenizer_hash(t).substr(0, 16);
}

// ---- the run --------------------------------------------------------------------

Status pipeline_run(const Config& cfg, const PipelineOptions& opt) {
  const double t_start = now_seconds();
  const std::string started = utc_timestamp_iso();
  Ctx cx;
  cx.cfg = cfg;
  cx.opt = opt;
  BK_TRY(pipeline_setup(cx));

  long long threads = 0;
  BK_TRY(config_int(cfg, "THREADS", &threads));
  printf("bitkd pipeline %s: scale %s, teacher: %s\n", BITKD_VERSION, cx.plan.scale_name.c_str(),
         cx.teacher_desc.c_str());
  printf("artifacts in %s, logs in %s, %d cores%s\n", cx.paths.root.c_str(), cx.paths.logs.c_str(),
         hardware_threads(), threads > 0 ? (", " + std::to_string(threads) + " threads").c_str() : "");
  fflush(stdout);
  process_install_interrupt_handlers();
  BK_TRY(storage_start(cx));

  // The stages that run with this teacher, and the last one selected.
  std::vector<const StageSpec*> order;
  for (const StageSpec& s : stage_table())
    if (cx.local_teacher || !s.local_teacher_only) order.push_back(&s);
  cx.stage_total = (int)order.size();
  size_t last = order.size() - 1;
  auto index_of = [&](const std::string& n) -> int {
    for (size_t i = 0; i < order.size(); i++)
      if (n == order[i]->name) return (int)i;
    return -1;
  };
  for (const std::string& n : opt.only)
    if (index_of(n) < 0) return errorf("--only %s: that stage does not run with this teacher (%s)", n.c_str(), cx.teacher_desc.c_str());
  if (!opt.until.empty()) {
    if (index_of(opt.until) < 0)
      return errorf("--until %s: that stage does not run with this teacher (%s)", opt.until.c_str(),
                    cx.teacher_desc.c_str());
    last = (size_t)index_of(opt.until);
  } else if (!opt.only.empty()) {
    last = 0;
    for (const std::string& n : opt.only) last = std::max(last, (size_t)index_of(n));
  }

  Status failure = ok_status();
  std::string failed_stage;
  for (size_t i = 0; i < order.size(); i++) {
    const StageSpec& s = *order[i];
    if (i > last) {
      cx.stages.push_back(not_run_record(cx, s.name, "not selected (--only / --until)"));
      continue;
    }
    // The server is needed only while the teacher answers.
    if (cx.server_pid > 0 && !s.needs_server) stop_server(cx);
    failure = do_stage(cx, s);
    if (!failure.ok()) {
      failed_stage = s.name;
      for (size_t k = i + 1; k < order.size(); k++)
        cx.stages.push_back(not_run_record(cx, order[k]->name, "an earlier stage failed"));
      break;
    }
  }
  stop_server(cx);
  if (!cx.local_teacher) {
    PipelineStage rec;
    rec.name = stage::kPretrain;
    rec.status = "not_needed";
    rec.detail = "teacher from the configuration: " + cx.teacher_desc;
    cx.stages.insert(cx.stages.begin() + std::min<size_t>(2, cx.stages.size()), rec);
  }

  PipelineFacts f;
  f.started = started;
  f.finished = utc_timestamp_iso();
  f.wall_s = now_seconds() - t_start;
  f.baseline_report = path_join(cx.paths.reports, "teacher_baseline.json");
  f.eval_report = path_join(cx.paths.reports, "mini_evaluation_report.json");
  f.dryrun_report = path_join(cx.paths.reports, "dryrun_7b.json");
  f.summary_path = path_join(cx.paths.reports, "pipeline_summary.json");
  f.failed_stage = failed_stage;
  std::string json_text, human;
  Status s2 = pipeline_summary_build(cx, f, &json_text, &human);
  if (s2.ok()) s2 = write_file_atomic(f.summary_path, json_text);
  printf("\n%s", human.c_str());
  if (s2.ok()) printf("summary: %s\n", f.summary_path.c_str());
  if (s2.ok()) {
    // The page is a view of what was written; failing to write it does not fail the run.
    ReportPaths rp;
    rp.reports_dir = cx.paths.reports;
    rp.logs_dir = cx.paths.logs;
    ReportResult rr;
    Status s3 = report_write(rp, &rr);
    if (s3.ok()) printf("report:  %s (open in a browser)\n", rr.path.c_str());
    else printf("report:  not written: %s\n", s3.msg.c_str());
  }
  fflush(stdout);
  if (!failure.ok()) return failure;
  BK_TRY(with_context(s2, "writing the pipeline summary"));
  return storage_push_changed(&cx.storage, false);
}

}  // namespace bk
