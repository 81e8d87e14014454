// bitkd pipeline: every stage of the embedded default (or of a hosted teacher
// named in .env), each as a child process of this same binary with its own log:
//
//   tasks -> tokenizers -> pretrain (float teacher) -> serve (loopback) ->
//   teacher (baseline) -> collect (KD traces) -> train (ternary student) ->
//   eval (QEI) -> dryrun (7B memory) -> reports/pipeline_summary.json
//
// A stage is skipped when its artifacts exist and the fingerprint of its
// inputs (the settings that change its output, and the run ids of the stages
// it reads) matches its stamp file (<root>/stamps/<stage>.json). A stage that
// was interrupted with the same fingerprint resumes (pretrain/train --resume,
// collect skips committed prompts); one whose inputs changed starts clean.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "cli/cli.h"
#include "cli/pipeline.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/timing.h"
#include "core/version.h"
#include "data/kd_schema.h"
#include "kd/providers.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"

extern char** environ;

namespace bk {

namespace {

using ojson = nlohmann::ordered_json;

// Bumped when a stage's recipe changes in a way its inputs do not show, so
// old stamps stop matching.
constexpr const char* kRecipeVersion = "1";
constexpr const char* kServedTeacherName = "bitkd-teacher";

// ------------------------------------------------------------ signals

volatile sig_atomic_t g_interrupted = 0;
volatile pid_t g_child_pid = 0;
volatile pid_t g_server_pid = 0;

void on_signal(int sig) {
  g_interrupted = sig;
  // Forward to the children so none outlives the pipeline.
  if (g_child_pid > 0) kill(g_child_pid, SIGTERM);
  if (g_server_pid > 0) kill(g_server_pid, SIGTERM);
}

void install_signal_handlers() {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: waits return early
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);
}

void sleep_s(double s) {
  struct timespec ts;
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
  nanosleep(&ts, nullptr);
}

// ------------------------------------------------------------ small helpers

std::string lower(std::string s) {
  for (char& c : s) c = (char)tolower((unsigned char)c);
  return s;
}

std::string fmt_duration(double s) {
  char buf[32];
  if (s < 0) return "-";
  if (s < 60) snprintf(buf, sizeof buf, "%.1fs", s);
  else if (s < 3600) snprintf(buf, sizeof buf, "%dm%02ds", (int)(s / 60), (int)s % 60);
  else snprintf(buf, sizeof buf, "%dh%02dm", (int)(s / 3600), ((int)s % 3600) / 60);
  return buf;
}

std::string fmt_num(double v) {
  char buf[32];
  snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

// Quotes an argument for display (the log shows copy-pasteable commands).
std::string shell_quote(const std::string& s) {
  bool plain = !s.empty();
  for (char c : s)
    if (!(isalnum((unsigned char)c) || strchr("-_./=:,+@%", c))) plain = false;
  if (plain) return s;
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') q += "'\\''";
    else q += c;
  }
  return q + "'";
}

std::string join_command(const std::vector<std::string>& argv) {
  std::string s;
  for (size_t i = 0; i < argv.size(); i++) s += (i ? " " : "") + shell_quote(argv[i]);
  return s;
}

std::string self_exe() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "bitkd";
  buf[n] = 0;
  return buf;
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

// The last line of a log that parses as a JSON object (a command's summary on stdout).
bool last_json_line(const std::string& path, ojson* out) {
  std::string text;
  if (!read_file(path, &text).ok()) return false;
  size_t end = text.size();
  while (end > 0) {
    size_t start = text.rfind('\n', end - 1);
    start = start == std::string::npos ? 0 : start + 1;
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line[0] == '{') {
      ojson j = ojson::parse(line, nullptr, false);
      if (j.is_object()) {
        *out = j;
        return true;
      }
    }
    if (start == 0) break;
    end = start - 1;
  }
  return false;
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

// Every file of a checkpoint directory that trainer_run writes.
std::vector<std::string> checkpoint_files(const std::string& dir) {
  std::vector<std::string> out;
  for (const std::string& f : list_files(dir, "mini_bitnet_step_", "")) out.push_back(path_join(dir, f));
  return out;
}

// ------------------------------------------------------------ child processes

struct ChildEnv {
  std::map<std::string, std::string> set;  // NAME -> value (overrides the environment)
};

std::vector<std::string> build_envp(const ChildEnv& env) {
  std::vector<std::string> out;
  for (char** e = environ; e && *e; e++) {
    const char* eq = strchr(*e, '=');
    if (!eq) continue;
    std::string name(*e, eq - *e);
    if (env.set.count(name)) continue;
    out.push_back(*e);
  }
  for (auto& kv : env.set) out.push_back(kv.first + "=" + kv.second);
  return out;
}

// Starts argv with stdout and stderr appended to log_path. The child gets
// SIGTERM if this process dies, so a crashed pipeline leaves no server behind.
Status spawn_child(const std::vector<std::string>& argv, const ChildEnv& env, const std::string& log_path,
                   pid_t* pid_out) {
  int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return errorf("cannot open log %s: %s", log_path.c_str(), strerror(errno));
  std::vector<std::string> envs = build_envp(env);
  std::vector<char*> cargv, cenv;
  for (const std::string& s : argv) cargv.push_back(const_cast<char*>(s.c_str()));
  cargv.push_back(nullptr);
  for (const std::string& s : envs) cenv.push_back(const_cast<char*>(s.c_str()));
  cenv.push_back(nullptr);
  const pid_t parent = getpid();
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    close(fd);
    return errorf("fork failed: %s", strerror(errno));
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127);
    // Default dispositions: the child handles its own signals.
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    execve(cargv[0], cargv.data(), cenv.data());
    dprintf(2, "bitkd pipeline: cannot execute %s: %s\n", cargv[0], strerror(errno));
    _exit(127);
  }
  close(fd);
  *pid_out = pid;
  return ok_status();
}

double rusage_cpu_s(const struct rusage& ru) {
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

// Stops a child: SIGTERM, then SIGKILL after grace_s. Returns its CPU seconds.
double stop_child(pid_t pid, double grace_s) {
  if (pid <= 0) return 0;
  kill(pid, SIGTERM);
  double t0 = now_seconds();
  int status = 0;
  struct rusage ru;
  memset(&ru, 0, sizeof ru);
  while (true) {
    pid_t r = wait4(pid, &status, WNOHANG, &ru);
    if (r == pid) return rusage_cpu_s(ru);
    if (r < 0 && errno == ECHILD) return 0;
    if (now_seconds() - t0 > grace_s) break;
    sleep_s(0.05);
  }
  kill(pid, SIGKILL);
  wait4(pid, &status, 0, &ru);
  return rusage_cpu_s(ru);
}

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("killed by signal ") + strsignal(WTERMSIG(status));
  return "ended abnormally";
}

// Runs one command to completion. While it runs, its newest log line is shown
// (one updating line on a terminal, a line a minute otherwise).
Status run_child(const std::string& stage, const std::vector<std::string>& argv, const ChildEnv& env,
                 const std::string& log_path, double* cpu_s) {
  append_to_file(log_path, "\n# " + utc_timestamp_iso() + "\n$ " + join_command(argv) + "\n");
  pid_t pid = 0;
  BK_TRY(spawn_child(argv, env, log_path, &pid));
  g_child_pid = pid;
  const bool tty = isatty(fileno(stdout));
  double last_show = now_seconds();
  int status = 0;
  bool shown = false;
  struct rusage ru;
  memset(&ru, 0, sizeof ru);
  while (true) {
    pid_t r = wait4(pid, &status, WNOHANG, &ru);
    if (r == pid) {
      *cpu_s += rusage_cpu_s(ru);
      break;
    }
    if (r < 0 && errno != EINTR) {
      g_child_pid = 0;
      return errorf("waiting for %s: %s", stage.c_str(), strerror(errno));
    }
    sleep_s(0.2);
    const double now = now_seconds();
    if (now - last_show >= (tty ? 1.0 : 60.0)) {
      last_show = now;
      std::string line = last_line(log_path);
      if (line.size() > 110) line = line.substr(0, 107) + "...";
      if (!line.empty()) {
        if (tty) printf("\r\033[K      %s", line.c_str()), shown = true;
        else printf("      %s\n", line.c_str());
        fflush(stdout);
      }
    }
  }
  g_child_pid = 0;
  if (tty && shown) printf("\r\033[K"), fflush(stdout);
  if (g_interrupted) return errorf("interrupted (signal %d)", (int)g_interrupted);
  if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
    return errorf("`%s` failed (%s)", join_command(argv).c_str(), describe_exit(status).c_str());
  return ok_status();
}

// ------------------------------------------------------------ the plan

// Sizes and settings of one run. Values the user set explicitly (flag,
// environment or .env) win over the preset of PIPELINE_SCALE.
struct Plan {
  std::string scale_name;
  double scale = 1;
  bool tiny = false;
  // task suite
  long long tasks_train = 0, tasks_eval = 0, tokenizer_tasks = 0;
  // tokenizers
  long long teacher_vocab = 0, student_vocab = 0;
  std::string teacher_tok_type, student_tok_type;
  // float teacher
  long long t_dim = 0, t_layers = 0, t_heads = 0, t_seq = 0, t_batch = 0, t_steps = 0, t_warmup = 0;
  double t_lr = 0, t_min_lr = 0, t_wd = 0;
  // baseline, eval, collect
  long long baseline_prompts = 0, baseline_tokens = 0, eval_prompts = 0, eval_tokens = 0;
  long long kd_prompts = 0, kd_tokens = 0, concurrency = 0;
  // student
  long long s_dim = 0, s_layers = 0, s_heads = 0, s_ffn = 0, s_seq = 0, s_batch = 0, s_steps = 0, s_warmup = 0;
  long long s_ckpt_interval = 0, s_log_interval = 0;
  double s_lr = 0;
  bool budget_user = false;  // BUDGET_TOKENS set by the user (else estimated from the traces)
  double budget_user_value = 0;
  // dry run: empty = the 7B defaults
  std::vector<std::string> dryrun_flags;
  ojson settings;  // everything above, for the summary
};

bool user_set(const Config& c, const char* var) {
  auto it = c.sources.find(var);
  return it != c.sources.end() && it->second != SRC_DEFAULT && !config_str(c, var).empty();
}

Status pick_int(const Config& c, const char* var, long long preset, long long* out) {
  if (!user_set(c, var)) {
    *out = preset;
    return ok_status();
  }
  return config_int(c, var, out);
}

Status pick_double(const Config& c, const char* var, double preset, double* out) {
  if (!user_set(c, var)) {
    *out = preset;
    return ok_status();
  }
  return config_double(c, var, out);
}

Status pick_str(const Config& c, const char* var, const std::string& preset, std::string* out) {
  *out = user_set(c, var) ? config_str(c, var) : preset;
  return ok_status();
}

long long scaled(long long base, double s) { return std::max(1LL, (long long)llround((double)base * s)); }

Status make_plan(const Config& c, Plan* p) {
  std::string sc = lower(config_str(c, "PIPELINE_SCALE", "1"));
  if (sc == "tiny") {
    p->tiny = true;
    p->scale = 1;
  } else {
    char* end = nullptr;
    p->scale = strtod(sc.c_str(), &end);
    if (end == sc.c_str() || *end || !(p->scale > 0) || p->scale > 1000)
      return errorf("PIPELINE_SCALE=%s: use tiny, 1 (the default), or a larger number such as 2 or 4",
                    sc.c_str());
  }
  p->scale_name = sc;
  const double s = p->scale;
  const bool tiny = p->tiny;

  // Task suite and tokenizers.
  p->tasks_train = tiny ? 2000 : scaled(20000, s);
  BK_TRY(pick_int(c, "TOKENIZER_TRAIN_TASKS", tiny ? 2000 : 20000, &p->tokenizer_tasks));
  {
    long long v = 0;
    BK_TRY(pick_int(c, "PIPELINE_TEACHER_VOCAB", tiny ? 512 : 2048, &v));
    p->teacher_vocab = v;
    BK_TRY(pick_int(c, "PIPELINE_STUDENT_VOCAB", tiny ? 384 : 768, &v));
    p->student_vocab = v;
  }
  BK_TRY(pick_str(c, "PIPELINE_TEACHER_TOKENIZER_TYPE", "bpe", &p->teacher_tok_type));
  BK_TRY(pick_str(c, "PIPELINE_STUDENT_TOKENIZER_TYPE", "unigram", &p->student_tok_type));

  // Float teacher: sized to learn several task families in about 7 minutes on 2 cores.
  // Two layers with several narrow heads learn to copy from the prompt (what
  // most families need) far sooner than deeper or wider models per CPU second.
  BK_TRY(pick_int(c, "PIPELINE_TEACHER_DIM", tiny ? 64 : 128, &p->t_dim));
  BK_TRY(pick_int(c, "PIPELINE_TEACHER_LAYERS", 2, &p->t_layers));
  p->t_heads = std::max(1LL, p->t_dim / 32);
  p->t_seq = 96;
  p->t_batch = tiny ? 8 : 16;
  BK_TRY(pick_int(c, "PIPELINE_TEACHER_STEPS", tiny ? 40 : scaled(2400, s), &p->t_steps));
  BK_TRY(pick_double(c, "PIPELINE_TEACHER_LR", 3e-3, &p->t_lr));
  p->t_min_lr = p->t_lr / 20;
  p->t_warmup = std::min(30LL, std::max(1LL, p->t_steps / 10));
  p->t_wd = 0.01;

  // Baseline and eval on the same held-out prompts; generation long enough for
  // every reference answer (the longest is about 35 tokens).
  BK_TRY(pick_int(c, "TEACHER_BASELINE_MAX_PROMPTS", tiny ? 16 : 200, &p->baseline_prompts));
  BK_TRY(pick_int(c, "TEACHER_BASELINE_MAX_TOKENS", 40, &p->baseline_tokens));
  BK_TRY(pick_int(c, "EVAL_MAX_PROMPTS", p->baseline_prompts, &p->eval_prompts));
  BK_TRY(pick_int(c, "EVAL_MAX_NEW_TOKENS", p->baseline_tokens, &p->eval_tokens));
  p->tasks_eval = std::max(p->baseline_prompts, p->eval_prompts);
  BK_TRY(pick_int(c, "KD_MAX_PROMPTS", tiny ? 48 : scaled(5000, s), &p->kd_prompts));
  BK_TRY(pick_int(c, "KD_MAX_TOKENS_PER_PROMPT", p->baseline_tokens, &p->kd_tokens));
  BK_TRY(pick_int(c, "TEACHER_CONCURRENCY", 2, &p->concurrency));

  // Ternary student.
  BK_TRY(pick_int(c, "MINI_DIM", tiny ? 64 : 128, &p->s_dim));
  BK_TRY(pick_int(c, "MINI_LAYERS", 2, &p->s_layers));
  BK_TRY(pick_int(c, "MINI_HEADS", tiny ? 2 : 4, &p->s_heads));
  BK_TRY(pick_int(c, "MINI_FFN_DIM", 0, &p->s_ffn));
  BK_TRY(pick_int(c, "MAX_SEQ_LEN", 104, &p->s_seq));
  BK_TRY(pick_int(c, "TRAIN_BATCH_SIZE", tiny ? 8 : 16, &p->s_batch));
  BK_TRY(pick_int(c, "TOTAL_STEPS", tiny ? 40 : scaled(2000, s), &p->s_steps));
  BK_TRY(pick_double(c, "LR", 3e-3, &p->s_lr));
  BK_TRY(pick_int(c, "WARMUP_STEPS", std::min(30LL, std::max(1LL, p->s_steps / 10)), &p->s_warmup));
  BK_TRY(pick_int(c, "CHECKPOINT_INTERVAL", std::max(1LL, p->s_steps / 2), &p->s_ckpt_interval));
  BK_TRY(pick_int(c, "LOG_INTERVAL", std::max(1LL, std::min(25LL, p->s_steps / 10)), &p->s_log_interval));
  p->budget_user = user_set(c, "BUDGET_TOKENS");
  if (p->budget_user) BK_TRY(config_double(c, "BUDGET_TOKENS", &p->budget_user_value));

  if (tiny) {
    // A small shape instead of 7B, so the smoke run takes seconds.
    p->dryrun_flags = {"--dim", "256", "--layers", "2", "--heads", "4", "--head-dim", "64", "--vocab", "1024", "--seq",
                       "16"};
  } else if (!user_set(c, "DRYRUN_VOCAB")) {
    p->dryrun_flags = {"--vocab", "32000"};  // the PoC's 7B used TinyLlama's 32000-token vocabulary
  }

  ojson& j = p->settings;
  j["scale"] = p->scale_name;
  j["tasks"] = {{"train", p->tasks_train}, {"eval", p->tasks_eval}, {"tokenizer_corpus", p->tokenizer_tasks}};
  j["tokenizers"] = {{"teacher", {{"type", p->teacher_tok_type}, {"vocab", p->teacher_vocab}}},
                     {"student", {{"type", p->student_tok_type}, {"vocab", p->student_vocab}}}};
  j["teacher"] = {{"dim", p->t_dim},     {"layers", p->t_layers}, {"heads", p->t_heads},
                  {"seq", p->t_seq},     {"batch", p->t_batch},   {"steps", p->t_steps},
                  {"lr", p->t_lr},       {"min_lr", p->t_min_lr}, {"warmup", p->t_warmup},
                  {"weight_decay", p->t_wd}, {"weight_quant", "none"}, {"act_bits", 0}};
  j["baseline"] = {{"prompts", p->baseline_prompts}, {"max_tokens", p->baseline_tokens}};
  j["collect"] = {{"prompts", p->kd_prompts}, {"max_tokens", p->kd_tokens}, {"concurrency", p->concurrency}};
  j["student"] = {{"dim", p->s_dim},     {"layers", p->s_layers}, {"heads", p->s_heads},   {"ffn", p->s_ffn},
                  {"seq", p->s_seq},     {"batch", p->s_batch},   {"steps", p->s_steps},   {"lr", p->s_lr},
                  {"warmup", p->s_warmup}, {"weight_quant", "ternary"}};
  j["eval"] = {{"prompts", p->eval_prompts}, {"max_new_tokens", p->eval_tokens}};
  j["dryrun"] = p->dryrun_flags.empty() ? ojson("DRYRUN_* settings") : ojson(join_command(p->dryrun_flags));
  return ok_status();
}

// ------------------------------------------------------------ stamps

struct Stamp {
  bool exists = false;
  std::string state;  // "running" or "done"
  std::string fingerprint, run_id;
  double duration_s = -1, cpu_s = -1;
  ojson inputs = ojson::object();
  ojson numbers = ojson::object();
  std::vector<std::string> commands;
};

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

// ------------------------------------------------------------ the run

struct Ctx {
  const Args* args = nullptr;
  Plan plan;
  ArtifactPaths paths;
  std::string exe;
  std::string env_file;
  std::string stamps_dir;
  bool force_all = false;
  std::set<std::string> force_stages;
  std::set<std::string> only;  // empty: all
  std::set<std::string> needed;  // stages the --only ones read (must be done)
  bool local_teacher = true;
  ProviderSettings hosted;       // when !local_teacher
  std::string teacher_desc;
  // paths
  std::string tasks_dir, train_jsonl, eval_jsonl;
  std::string teacher_dir, teacher_tok, student_tok;
  bool student_tok_user = false;
  // prompt files: the pipeline's unless the user named their own
  bool baseline_prompts_user = false, eval_prompts_user = false, kd_prompts_user = false;
  // run ids of finished stages, feeding the fingerprints of the stages after them
  std::map<std::string, std::string> run_ids;
  // server
  pid_t server_pid = 0;
  std::string server_url;  // http://127.0.0.1:PORT/v1
  double server_cpu_s = 0;  // CPU the teacher server used (teacher and collect stages)
  std::vector<PipelineStage> stages;
};

std::string log_path(const Ctx& cx, const std::string& stage) { return path_join(cx.paths.logs, stage + ".log"); }
std::string stamp_path(const Ctx& cx, const std::string& stage) {
  return path_join(cx.stamps_dir, stage + ".json");
}

// KD traces of the held-out eval prompts (never read by training).
std::string heldout_dir(const Ctx& cx) { return path_join(cx.paths.data, "heldout"); }

std::vector<std::string> base_argv(const Ctx& cx, std::initializer_list<const char*> cmd) {
  std::vector<std::string> v = {cx.exe};
  for (const char* s : cmd) v.push_back(s);
  v.push_back("--env-file");
  v.push_back(cx.env_file);
  return v;
}

void add_flag(std::vector<std::string>* v, const std::string& name, const std::string& value) {
  v->push_back("--" + name);
  v->push_back(value);
}
void add_flag(std::vector<std::string>* v, const std::string& name, long long value) {
  add_flag(v, name, std::to_string(value));
}
void add_flag_d(std::vector<std::string>* v, const std::string& name, double value) {
  add_flag(v, name, fmt_num(value));
}

// The environment every child sees: the resolved artifact layout, threads,
// seed and log level (so flags given to `bitkd pipeline` reach the stages),
// the student tokenizer and, for the local teacher, where it is served.
ChildEnv child_env(const Ctx& cx) {
  const Config& c = cx.args->cfg;
  ChildEnv e;
  e.set["ARTIFACTS_DIR"] = cx.paths.root;
  e.set["DATA_DIR"] = cx.paths.data;
  e.set["CHECKPOINTS_DIR"] = cx.paths.checkpoints;
  e.set["REPORTS_DIR"] = cx.paths.reports;
  e.set["LOGS_DIR"] = cx.paths.logs;
  e.set["THREADS"] = config_str(c, "THREADS", "0");
  e.set["SEED"] = config_str(c, "SEED", "1234");
  e.set["LOG_LEVEL"] = config_str(c, "LOG_LEVEL", "INFO");
  e.set["TOKENIZER_NAME"] = cx.student_tok;
  // Stages overlap (the server beside the collector) and machines are often
  // shared: idle OpenMP threads sleep instead of spinning on the other's cores.
  if (!getenv("OMP_WAIT_POLICY")) e.set["OMP_WAIT_POLICY"] = "PASSIVE";
  if (cx.local_teacher) {
    e.set["TEACHER_PROVIDER"] = "bitkd";
    e.set["TEACHER_MODEL"] = kServedTeacherName;
    e.set["TEACHER_BASE_URL"] = cx.server_url;
    e.set["TEACHER_API"] = "chat";
    // The bitkd provider falls back to BITKD_API_KEY, which `bitkd serve` also reads.
    e.set["TEACHER_API_KEY"] = "";
    e.set["TEACHER_CHECKPOINT"] = checkpoint_find_latest(cx.teacher_dir);
    e.set["TEACHER_TOKENIZER"] = cx.teacher_tok;
  }
  return e;
}

// Fingerprint inputs common to every stage.
ojson base_inputs(const Ctx& cx, const std::string& stage) {
  ojson in;
  in["stage"] = stage;
  in["recipe"] = kRecipeVersion;
  in["seed"] = config_str(cx.args->cfg, "SEED", "1234");
  return in;
}

std::string fingerprint_of(const ojson& inputs) { return sha256_hex(inputs.dump()).substr(0, 16); }

// Which inputs differ between two fingerprint input sets ("a, b").
std::string changed_inputs(const ojson& a, const ojson& b) {
  std::string out;
  for (auto it = b.begin(); it != b.end(); ++it) {
    if (!a.contains(it.key()) || a[it.key()] != it.value()) out += (out.empty() ? "" : ", ") + it.key();
  }
  for (auto it = a.begin(); it != a.end(); ++it)
    if (!b.contains(it.key())) out += (out.empty() ? "" : ", ") + it.key();
  return out;
}

// One stage as the runner sees it.
struct StageDef {
  std::string name;
  std::string what;  // one line for the screen
  ojson inputs;
  std::vector<std::string> artifacts;  // must exist for a skip
  // Runs the stage (resume: an interrupted run with the same inputs is continued).
  std::function<Status(Ctx&, bool resume, PipelineStage*)> run;
  // Removes what a previous run with other inputs left (before a clean run).
  std::function<void(Ctx&)> clean;
  // Key numbers, from the stage's outputs (also for skipped stages).
  std::function<ojson(Ctx&, const Stamp&)> numbers;
  bool needs_server = false;
};

int g_stage_no = 0, g_stage_total = 0;

void print_stage_line(const std::string& name, const std::string& status, const std::string& rest) {
  printf("[%d/%d] %-10s %-8s %s\n", g_stage_no, g_stage_total, name.c_str(), status.c_str(), rest.c_str());
  fflush(stdout);
}

Status ensure_server(Ctx& cx);

// Runs or skips one stage; records it in cx.stages. Returns an error when it failed.
Status do_stage(Ctx& cx, StageDef& d) {
  g_stage_no++;
  PipelineStage rec;
  rec.name = d.name;
  rec.log = log_path(cx, d.name);
  rec.fingerprint = fingerprint_of(d.inputs);
  const std::string sp = stamp_path(cx, d.name);
  Stamp old = read_stamp(sp);
  bool artifacts_ok = true;
  std::string missing;
  for (const std::string& a : d.artifacts)
    if (!file_exists(a)) artifacts_ok = false, missing = a;
  const bool forced = cx.force_all || cx.force_stages.count(d.name);
  const bool selected = cx.only.empty() || cx.only.count(d.name);
  const bool up_to_date = old.exists && old.state == "done" && old.fingerprint == rec.fingerprint && artifacts_ok;

  if (up_to_date && !forced) {
    rec.status = "skipped";
    rec.detail = "up to date (inputs unchanged since the last run; --force-stage " + d.name + " reruns it)";
    rec.recorded_duration_s = old.duration_s;
    rec.recorded_cpu_s = old.cpu_s;
    rec.commands = old.commands;
    cx.run_ids[d.name] = old.run_id;
    ojson nums = d.numbers ? d.numbers(cx, old) : ojson::object();
    rec.numbers_json = nums.dump();
    print_stage_line(d.name, "skipped", "up to date (last run took " + fmt_duration(old.duration_s) + ")");
    cx.stages.push_back(rec);
    return ok_status();
  }
  if (!selected) {
    rec.status = "not_run";
    rec.detail = old.exists ? "not selected (--only), and out of date" : "not selected (--only), never run";
    print_stage_line(d.name, "not run", rec.detail);
    cx.stages.push_back(rec);
    if (!cx.needed.count(d.name)) return ok_status();
    return errorf("stage %s is %s and a selected stage needs it; run `bitkd pipeline --until %s` (or `make %s`) first",
                  d.name.c_str(), old.exists ? "out of date" : "not done yet", d.name.c_str(), d.name.c_str());
  }

  std::string why;
  bool resume = false;
  if (forced) why = "forced";
  else if (!old.exists) why = "first run";
  else if (old.fingerprint != rec.fingerprint) why = "inputs changed: " + changed_inputs(old.inputs, d.inputs);
  else if (old.state == "running") why = "resuming an interrupted run", resume = true;
  else why = "artifact missing: " + missing;
  // A fresh run starts from nothing: outputs of other inputs (or of a manual
  // run) would otherwise be mixed in (eval picks the newest checkpoint).
  if (!resume && d.clean) d.clean(cx);

  print_stage_line(d.name, "running", d.what + " (" + why + "; log " + rec.log + ")");
  // A fresh log per run of the stage.
  if (!resume) remove_files({rec.log});
  const double t0 = now_seconds();
  Status st = ok_status();
  if (d.needs_server) st = ensure_server(cx);
  if (st.ok()) {
    ojson running;
    running["stage"] = d.name;
    running["state"] = "running";
    running["fingerprint"] = rec.fingerprint;
    running["inputs"] = d.inputs;
    running["started"] = utc_timestamp_iso();
    st = write_file_atomic(sp, running.dump(2) + "\n");
  }
  if (st.ok()) st = d.run(cx, resume, &rec);
  rec.duration_s = now_seconds() - t0;
  if (!st.ok()) {
    rec.status = "failed";
    rec.detail = st.msg;
    print_stage_line(d.name, "FAILED", "after " + fmt_duration(rec.duration_s) + ": " + st.msg);
    printf("      log: %s\n", rec.log.c_str());
    std::string tail = last_line(rec.log);
    if (!tail.empty()) printf("      last log line: %s\n", tail.c_str());
    cx.stages.push_back(rec);
    return errorf("stage %s failed: %s (log: %s)", d.name.c_str(), st.msg.c_str(), rec.log.c_str());
  }
  Stamp now;
  ojson nums = d.numbers ? d.numbers(cx, now) : ojson::object();
  std::string finished = utc_timestamp_iso();
  std::string run_id = sha256_hex(rec.fingerprint + finished + std::to_string(getpid())).substr(0, 16);
  ojson done;
  done["stage"] = d.name;
  done["state"] = "done";
  done["fingerprint"] = rec.fingerprint;
  done["run_id"] = run_id;
  done["finished"] = finished;
  done["duration_s"] = rec.duration_s;
  done["cpu_s"] = rec.cpu_s;
  done["inputs"] = d.inputs;
  done["commands"] = rec.commands;
  done["numbers"] = nums;
  st = write_file_atomic(sp, done.dump(2) + "\n");
  if (!st.ok()) return st;
  cx.run_ids[d.name] = run_id;
  rec.status = "ok";
  rec.numbers_json = nums.dump();
  print_stage_line(d.name, "ok", fmt_duration(rec.duration_s));
  cx.stages.push_back(rec);
  return ok_status();
}

Status run_cmd(Ctx& cx, PipelineStage* rec, const std::vector<std::string>& argv) {
  rec->commands.push_back(join_command(argv));
  return run_child(rec->name, argv, child_env(cx), rec->log, &rec->cpu_s);
}

// ------------------------------------------------------------ the teacher server

Status ensure_server(Ctx& cx) {
  if (!cx.local_teacher || cx.server_pid > 0) return ok_status();
  const std::string ckpt = checkpoint_find_latest(cx.teacher_dir);
  if (ckpt.empty()) return errorf("no teacher checkpoint in %s (the pretrain stage writes it)", cx.teacher_dir.c_str());
  const std::string log = log_path(cx, "serve");
  remove_files({log});
  std::vector<std::string> argv = base_argv(cx, {"serve"});
  add_flag(&argv, "model", ckpt);
  add_flag(&argv, "tokenizer", cx.teacher_tok);
  add_flag(&argv, "host", "127.0.0.1");
  add_flag(&argv, "port", "0");
  add_flag(&argv, "model-name", kServedTeacherName);
  add_flag(&argv, "workers", std::max(1LL, cx.plan.concurrency));
  append_to_file(log, "# " + utc_timestamp_iso() + "\n$ " + join_command(argv) + "\n");
  ChildEnv env = child_env(cx);
  pid_t pid = 0;
  BK_TRY(spawn_child(argv, env, log, &pid));
  cx.server_pid = pid;
  g_server_pid = pid;
  printf("      teacher server: starting `bitkd serve` on 127.0.0.1 (log %s)\n", log.c_str());
  // Ready when it prints "listening on http://HOST:PORT".
  const double t0 = now_seconds();
  while (true) {
    std::string text;
    if (read_file(log, &text).ok()) {
      size_t at = text.find("listening on http://");
      if (at != std::string::npos) {
        size_t end = text.find_first_of("\r\n", at);
        if (end != std::string::npos) {
          std::string url = text.substr(at + strlen("listening on "), end - at - strlen("listening on "));
          cx.server_url = url + "/v1";
          printf("      teacher server: %s (pid %d)\n", cx.server_url.c_str(), (int)pid);
          fflush(stdout);
          return ok_status();
        }
      }
    }
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      cx.server_pid = 0;
      g_server_pid = 0;
      return errorf("the teacher server stopped before it was ready (%s); see %s", describe_exit(status).c_str(),
                    log.c_str());
    }
    if (g_interrupted) return errorf("interrupted (signal %d)", (int)g_interrupted);
    if (now_seconds() - t0 > 300) return errorf("the teacher server did not report a port within 300 s; see %s", log.c_str());
    sleep_s(0.1);
  }
}

void stop_server(Ctx& cx) {
  if (cx.server_pid <= 0) return;
  cx.server_cpu_s += stop_child(cx.server_pid, 10.0);
  append_to_file(log_path(cx, "serve"), "# " + utc_timestamp_iso() + " stopped by the pipeline (SIGTERM)\n");
  printf("      teacher server: stopped\n");
  cx.server_pid = 0;
  g_server_pid = 0;
}

// ------------------------------------------------------------ stage numbers

ojson summary_line_numbers(const std::string& log, const Stamp& st, std::initializer_list<const char*> keys) {
  ojson j;
  if (!last_json_line(log, &j)) return st.numbers;
  ojson out = ojson::object();
  for (const char* k : keys)
    if (j.contains(k)) out[k] = j[k];
  return out;
}

ojson tokenizer_numbers(const std::string& path) {
  ojson j = ojson::object();
  Tokenizer t;
  if (!tokenizer_load(path, &t).ok()) return j;
  j["path"] = path;
  j["vocab_size"] = tokenizer_vocab_size(t);
  j["sha256"] = tokenizer_hash(t);
  return j;
}

// Mean student target tokens (response + EOS) per collected prompt, from the
// prompt table: what the trainer counts as real seen tokens per example.
Status mean_student_targets(const std::string& data_dir, const std::string& tok_path, int seq, double* mean,
                            long long* prompts) {
  Tokenizer tok;
  BK_TRY(tokenizer_load(tok_path, &tok));
  long long n = 0;
  double total = 0;
  for (const std::string& f : list_files(data_dir, "kd_prompts_", ".parquet")) {
    KdPromptReader r;
    BK_TRY(r.open(path_join(data_dir, f)));
    std::vector<KdPrompt> rows;
    for (int g = 0; g < r.num_row_groups(); g++) {
      BK_TRY(r.read_row_group(g, &rows));
      for (const KdPrompt& p : rows) {
        std::vector<int32_t> ids;
        BK_TRY(tokenizer_encode_continuation(tok, p.response_text, &ids));
        std::vector<int32_t> pids;
        BK_TRY(tokenizer_encode(tok, p.rendered_prompt, true, &pids));
        long long room = std::max(0LL, (long long)seq + 1 - (long long)pids.size());
        long long t = (long long)ids.size() + (p.finish_reason == "stop" ? 1 : 0);
        total += (double)std::min(t, room);
        n++;
      }
    }
  }
  if (n == 0) return errorf("no collected prompts in %s", data_dir.c_str());
  *mean = total / (double)n;
  *prompts = n;
  return ok_status();
}

// Content identities: regenerating an identical file does not make the
// stages that read it stale.
std::string file_hash(const std::string& path) {
  std::string text;
  if (!read_file(path, &text).ok()) return "";
  return sha256_hex(text).substr(0, 16);
}

std::string tok_hash(const std::string& path) {
  Tokenizer t;
  if (!tokenizer_load(path, &t).ok()) return "";
  return tokenizer_hash(t).substr(0, 16);
}

// ------------------------------------------------------------ stage definitions

std::vector<StageDef> make_stages(Ctx& cx) {
  const Config& c = cx.args->cfg;
  const Plan& p = cx.plan;
  std::vector<StageDef> v;
  auto up = [&cx](const char* stage) {
    auto it = cx.run_ids.find(stage);
    return it == cx.run_ids.end() ? std::string("") : it->second;
  };
  const std::string tmpl = config_str(c, "TEMPLATE");

  // 1. task suite
  {
    StageDef d;
    d.name = "tasks";
    d.what = "task suite: " + std::to_string(p.tasks_train) + " train + " + std::to_string(p.tasks_eval) +
             " held-out items";
    d.inputs = base_inputs(cx, d.name);
    d.inputs["train"] = p.tasks_train;
    d.inputs["eval"] = p.tasks_eval;
    d.artifacts = {cx.train_jsonl, cx.eval_jsonl};
    d.run = [](Ctx& cx, bool, PipelineStage* rec) -> Status {
      BK_TRY(make_dirs(cx.tasks_dir));
      std::vector<std::string> a = base_argv(cx, {"tasks"});
      add_flag(&a, "split", "train");
      add_flag(&a, "n", cx.plan.tasks_train);
      add_flag(&a, "out", cx.train_jsonl);
      BK_TRY(run_cmd(cx, rec, a));
      a = base_argv(cx, {"tasks"});
      add_flag(&a, "split", "eval");
      add_flag(&a, "n", cx.plan.tasks_eval);
      add_flag(&a, "out", cx.eval_jsonl);
      return run_cmd(cx, rec, a);
    };
    d.numbers = [](Ctx& cx, const Stamp&) {
      return ojson{{"train_items", cx.plan.tasks_train}, {"eval_items", cx.plan.tasks_eval},
                   {"train_file", cx.train_jsonl}, {"eval_file", cx.eval_jsonl}};
    };
    v.push_back(std::move(d));
  }

  // 2. tokenizers
  {
    StageDef d;
    d.name = "tokenizers";
    d.inputs = base_inputs(cx, d.name);
    d.inputs["corpus_tasks"] = p.tokenizer_tasks;
    d.inputs["template"] = tmpl;
    std::string what;
    if (cx.local_teacher) {
      d.inputs["teacher"] = p.teacher_tok_type + "/" + std::to_string(p.teacher_vocab);
      d.artifacts.push_back(cx.teacher_tok);
      what = "teacher " + p.teacher_tok_type + " " + std::to_string(p.teacher_vocab);
    }
    if (cx.student_tok_user) {
      d.inputs["student"] = "user: " + cx.student_tok;
      what += std::string(what.empty() ? "" : ", ") + "student " + cx.student_tok + " (TOKENIZER_NAME)";
    } else {
      d.inputs["student"] = p.student_tok_type + "/" + std::to_string(p.student_vocab);
      what += std::string(what.empty() ? "" : ", ") + "student " + p.student_tok_type + " " +
              std::to_string(p.student_vocab);
    }
    d.artifacts.push_back(cx.student_tok);
    d.what = "tokenizers: " + what;
    d.run = [](Ctx& cx, bool, PipelineStage* rec) -> Status {
      auto train = [&](const std::string& type, long long vocab, const std::string& out_model) -> Status {
        BK_TRY(make_dirs(path_dirname(out_model)));
        std::vector<std::string> a = base_argv(cx, {"tokenizer", "train"});
        add_flag(&a, "model-type", type);
        add_flag(&a, "vocab-size", vocab);
        add_flag(&a, "tasks", cx.plan.tokenizer_tasks);
        add_flag(&a, "out", out_model.substr(0, out_model.size() - 6));  // without ".model"
        return run_cmd(cx, rec, a);
      };
      if (cx.local_teacher) BK_TRY(train(cx.plan.teacher_tok_type, cx.plan.teacher_vocab, cx.teacher_tok));
      if (!cx.student_tok_user) BK_TRY(train(cx.plan.student_tok_type, cx.plan.student_vocab, cx.student_tok));
      return ok_status();
    };
    d.numbers = [](Ctx& cx, const Stamp&) {
      ojson j;
      if (cx.local_teacher) j["teacher"] = tokenizer_numbers(cx.teacher_tok);
      j["student"] = tokenizer_numbers(cx.student_tok);
      return j;
    };
    v.push_back(std::move(d));
  }

  // 3. pretrain the float teacher
  if (cx.local_teacher) {
    StageDef d;
    d.name = "pretrain";
    d.what = "float teacher " + std::to_string(p.t_dim) + "x" + std::to_string(p.t_layers) + ", " +
             std::to_string(p.t_steps) + " steps of " + std::to_string(p.t_batch) + " on " + cx.train_jsonl;
    d.inputs = base_inputs(cx, d.name);
    d.inputs["tasks"] = file_hash(cx.train_jsonl);
    d.inputs["tokenizer"] = tok_hash(cx.teacher_tok);
    d.inputs["model"] = {p.t_dim, p.t_layers, p.t_heads, p.t_seq};
    d.inputs["train"] = {p.t_batch, p.t_steps, p.t_lr, p.t_min_lr, p.t_warmup, p.t_wd};
    d.inputs["template"] = tmpl;
    d.artifacts = {};  // checked through the checkpoint below
    std::string latest = checkpoint_find_latest(cx.teacher_dir);
    d.artifacts.push_back(latest.empty() ? path_join(cx.teacher_dir, "mini_bitnet_step_N.safetensors") : latest);
    d.clean = [](Ctx& cx) { remove_files(checkpoint_files(cx.teacher_dir)); };
    d.run = [](Ctx& cx, bool resume, PipelineStage* rec) -> Status {
      const Plan& p = cx.plan;
      BK_TRY(make_dirs(cx.teacher_dir));
      std::vector<std::string> a = base_argv(cx, {"pretrain"});
      add_flag(&a, "data", cx.train_jsonl);
      add_flag(&a, "tokenizer", cx.teacher_tok);
      add_flag(&a, "weight-quant", "none");
      add_flag(&a, "act-bits", "0");
      add_flag(&a, "dim", p.t_dim);
      add_flag(&a, "layers", p.t_layers);
      add_flag(&a, "heads", p.t_heads);
      add_flag(&a, "kv-heads", "0");
      add_flag(&a, "ffn", "0");
      add_flag(&a, "ffn-act", "swiglu");
      a.push_back("--subln=1");
      a.push_back("--tie=1");
      add_flag(&a, "seq", p.t_seq);
      add_flag(&a, "batch", p.t_batch);
      add_flag(&a, "grad-accum", "1");
      add_flag(&a, "steps", p.t_steps);
      add_flag(&a, "tmax", p.t_steps);
      add_flag_d(&a, "lr", p.t_lr);
      add_flag_d(&a, "min-lr", p.t_min_lr);
      add_flag(&a, "warmup", p.t_warmup);
      add_flag(&a, "schedule", "cosine");
      add_flag_d(&a, "weight-decay", p.t_wd);
      a.push_back("--two-stage=0");
      add_flag(&a, "log-interval", std::max(1LL, std::min(25LL, p.t_steps / 10)));
      add_flag(&a, "checkpoint-interval", std::max(1LL, p.t_steps / 4));
      add_flag(&a, "keep-checkpoints", "1");
      add_flag(&a, "out", cx.teacher_dir);
      add_flag(&a, "metrics", path_join(cx.paths.logs, "pretrain_metrics.jsonl"));
      if (resume) a.push_back("--resume");
      else remove_files({path_join(cx.paths.logs, "pretrain_metrics.jsonl")});
      return run_cmd(cx, rec, a);
    };
    d.numbers = [](Ctx& cx, const Stamp& st) {
      ojson j = summary_line_numbers(log_path(cx, "pretrain"), st,
                                     {"checkpoint", "steps", "first_loss", "last_loss", "seen_tokens", "tokens_per_s"});
      ModelConfig mc;
      std::string ck = checkpoint_find_latest(cx.teacher_dir);
      if (!ck.empty() && checkpoint_read_config(ck, &mc).ok()) {
        j["checkpoint"] = ck;
        j["config"] = ojson::parse(model_config_to_json(mc), nullptr, false);
      }
      return j;
    };
    v.push_back(std::move(d));
  }

  // 4. teacher baseline
  {
    StageDef d;
    d.name = "teacher";
    d.needs_server = cx.local_teacher;
    d.what = "teacher baseline on " + std::to_string(p.baseline_prompts) + " held-out prompts (" + cx.teacher_desc + ")";
    d.inputs = base_inputs(cx, d.name);
    d.inputs["teacher"] = cx.local_teacher ? up("pretrain") : cx.teacher_desc;
    d.inputs["tasks"] = cx.baseline_prompts_user ? config_str(c, "TEACHER_BASELINE_PROMPTS_FILE") : file_hash(cx.eval_jsonl);
    d.inputs["prompts"] = p.baseline_prompts;
    d.inputs["max_tokens"] = p.baseline_tokens;
    d.inputs["sampling"] = config_str(c, "TEACHER_BASELINE_TEMPERATURE") + "/" + config_str(c, "TEACHER_BASELINE_TOP_P");
    d.inputs["template"] = tmpl;
    d.artifacts = {path_join(cx.paths.reports, "teacher_baseline.json")};
    d.run = [](Ctx& cx, bool, PipelineStage* rec) -> Status {
      std::vector<std::string> a = base_argv(cx, {"teacher"});
      if (!cx.baseline_prompts_user) add_flag(&a, "prompts", cx.eval_jsonl);
      add_flag(&a, "max-prompts", cx.plan.baseline_prompts);
      add_flag(&a, "max-tokens", cx.plan.baseline_tokens);
      // The pipeline knows the inputs changed (or --force): the old baseline is stale.
      a.push_back("--force");
      return run_cmd(cx, rec, a);
    };
    d.numbers = [](Ctx& cx, const Stamp&) {
      ojson r, j = ojson::object();
      if (!read_json_file(path_join(cx.paths.reports, "teacher_baseline.json"), &r)) return j;
      if (r.contains("quality")) {
        j["quality"] = r["quality"].value("score", ojson());
        j["json_validity"] = r["quality"].value("json_validity", ojson());
        j["scored_prompts"] = r["quality"].value("scored_prompts", ojson());
        if (r["quality"].contains("per_task")) j["per_task"] = r["quality"]["per_task"];
      }
      if (r.contains("metrics")) {
        j["avg_decode_tps"] = r["metrics"].value("avg_decode_tps_8k", ojson());
        j["ok_prompts"] = r["metrics"].value("ok_prompts", ojson());
        j["failed_prompts"] = r["metrics"].value("failed_prompts", ojson());
        j["latency_p50_s"] = r["metrics"].value("latency_p50_s", ojson());
      }
      j["memory_bytes"] = r.value("memory_teacher_constant", ojson());
      j["memory_source"] = r.value("memory_teacher_source", ojson());
      j["model"] = r.value("model", ojson());
      j["provider"] = r.value("provider", ojson());
      return j;
    };
    v.push_back(std::move(d));
  }

  // 5. KD trace collection
  {
    StageDef d;
    d.name = "collect";
    d.needs_server = cx.local_teacher;
    d.what = "KD traces for " + std::to_string(p.kd_prompts) + " prompts, top-" +
             config_str(c, "TEACHER_TOP_LOGPROBS", "20") + " logprobs";
    d.inputs = base_inputs(cx, d.name);
    d.inputs["teacher"] = cx.local_teacher ? up("pretrain") : cx.teacher_desc;
    d.inputs["tokenizer"] = tok_hash(cx.student_tok);
    d.inputs["tasks"] = cx.kd_prompts_user ? config_str(c, "KD_PROMPTS_FILE") : file_hash(cx.train_jsonl);
    d.inputs["prompts"] = p.kd_prompts;
    d.inputs["max_tokens"] = p.kd_tokens;
    d.inputs["sampling"] = config_str(c, "KD_TEACHER_TEMPERATURE") + "/" + config_str(c, "KD_TEACHER_TOP_P") + "/" +
                           config_str(c, "TEACHER_TOP_LOGPROBS");
    d.inputs["template"] = tmpl;
    d.artifacts = {path_join(cx.paths.logs, "collect_stats.json"), path_join(cx.paths.data, kd_shard_name(0)),
                   path_join(cx.paths.logs, "collect_heldout_stats.json"), path_join(heldout_dir(cx), kd_shard_name(0))};
    // Traces of a hosted teacher cost money: never deleted automatically (a
    // rerun resumes and adds what is missing). Local traces are remade.
    d.clean = [](Ctx& cx) {
      if (!cx.local_teacher) {
        if (list_files(cx.paths.data, "kd_prompts_", ".parquet").empty()) return;
        BK_LOG_WARN("collect: inputs changed; existing shards in %s are kept and the collector resumes (delete them "
                    "to start over)", cx.paths.data.c_str());
        return;
      }
      std::vector<std::string> f;
      for (const std::string& n : list_files(cx.paths.data, "kd_shard_", ".parquet")) f.push_back(path_join(cx.paths.data, n));
      for (const std::string& n : list_files(cx.paths.data, "kd_prompts_", ".parquet"))
        f.push_back(path_join(cx.paths.data, n));
      for (const std::string& n : list_files(heldout_dir(cx), "kd_", ".parquet")) f.push_back(path_join(heldout_dir(cx), n));
      f.push_back(path_join(cx.paths.logs, "collect_stats.json"));
      f.push_back(path_join(cx.paths.logs, "collect_heldout_stats.json"));
      remove_files(f);
    };
    d.run = [](Ctx& cx, bool, PipelineStage* rec) -> Status {
      std::vector<std::string> a = base_argv(cx, {"collect"});
      if (!cx.kd_prompts_user) add_flag(&a, "prompts", cx.train_jsonl);
      add_flag(&a, "max-prompts", cx.plan.kd_prompts);
      add_flag(&a, "max-tokens", cx.plan.kd_tokens);
      add_flag(&a, "concurrency", cx.plan.concurrency);
      add_flag(&a, "tokenizer", cx.student_tok);
      BK_TRY(run_cmd(cx, rec, a));
      // Traces of the held-out eval prompts, in their own folder so training
      // never reads them: eval measures agreement and KL on prompts the
      // student did not train on.
      std::vector<std::string> h = base_argv(cx, {"collect"});
      add_flag(&h, "prompts", cx.eval_prompts_user ? config_str(cx.args->cfg, "EVAL_PROMPTS_FILE") : cx.eval_jsonl);
      add_flag(&h, "max-prompts", cx.plan.eval_prompts);
      add_flag(&h, "max-tokens", cx.plan.kd_tokens);
      add_flag(&h, "concurrency", cx.plan.concurrency);
      add_flag(&h, "tokenizer", cx.student_tok);
      add_flag(&h, "out", heldout_dir(cx));
      add_flag(&h, "stats", path_join(cx.paths.logs, "collect_heldout_stats.json"));
      BK_TRY(run_cmd(cx, rec, h));
      // A run where prompts failed leaves holes; say so rather than train on less.
      ojson s;
      if (read_json_file(path_join(cx.paths.logs, "collect_stats.json"), &s) && s.contains("prompts")) {
        long long failed = s["prompts"].value("failed", 0LL);
        long long ok = s["prompts"].value("ok", 0LL) + s["prompts"].value("already_collected", 0LL);
        if (ok == 0) return errorf("no prompt was collected (%lld failed); see logs/collect_stats.json", failed);
        if (failed > 0)
          BK_LOG_WARN("collect: %lld prompts failed (kept going with %lld); rerun to retry them", failed, ok);
      }
      return ok_status();
    };
    d.numbers = [](Ctx& cx, const Stamp&) {
      ojson s, j = ojson::object();
      if (!read_json_file(path_join(cx.paths.logs, "collect_stats.json"), &s)) return j;
      if (s.contains("prompts")) {
        j["prompts_ok"] = s["prompts"].value("ok", ojson());
        j["prompts_already"] = s["prompts"].value("already_collected", ojson());
        j["prompts_failed"] = s["prompts"].value("failed", ojson());
      }
      if (s.contains("steps")) {
        j["steps"] = s["steps"].value("total", ojson());
        j["steps_valid"] = s["steps"].value("valid", ojson());
        j["mean_topk_mass"] = s["steps"].value("mean_topk_mass", ojson());
      }
      j["steps_per_s"] = s.value("steps_per_s", ojson());
      j["bytes_written"] = s.value("bytes_written", ojson());
      j["shards"] = (int64_t)list_files(cx.paths.data, "kd_shard_", ".parquet").size();
      ojson h;
      if (read_json_file(path_join(cx.paths.logs, "collect_heldout_stats.json"), &h) && h.contains("prompts") &&
          h.contains("steps")) {
        j["heldout_prompts_ok"] = h["prompts"].value("ok", 0LL) + h["prompts"].value("already_collected", 0LL);
        j["heldout_steps_valid"] = h["steps"].value("valid", ojson());
      }
      return j;
    };
    v.push_back(std::move(d));
  }

  // 6. KD training of the ternary student
  {
    StageDef d;
    d.name = "train";
    d.what = "ternary student " + std::to_string(p.s_dim) + "x" + std::to_string(p.s_layers) + ", " +
             std::to_string(p.s_steps) + " steps of " + std::to_string(p.s_batch) + " (KD, A8 -> A4 flip)";
    d.inputs = base_inputs(cx, d.name);
    d.inputs["collect"] = up("collect");
    d.inputs["tokenizer"] = tok_hash(cx.student_tok);
    d.inputs["model"] = {p.s_dim, p.s_layers, p.s_heads, p.s_ffn, p.s_seq};
    d.inputs["train"] = {p.s_batch, p.s_steps, p.s_lr, p.s_warmup};
    // Every other training variable the user may set changes the result too.
    for (const char* var : {"MINI_FFN_ACT", "MINI_SUBLN", "MINI_TIE_EMBEDDINGS", "MINI_ACT_BITS", "MINI_KV_HEADS",
                            "MINI_ROPE_THETA", "A4_SCOPE", "KD_TAU", "KD_CE_WEIGHT", "FORMAT_LOSS_WEIGHT", "KD_WEIGHT",
                            "KD_LOSS", "KD_TAU2_SCALE", "KD_PLAIN_CE_WEIGHT", "FLIP_FRACTION", "BUDGET_TOKENS",
                            "WEIGHT_DECAY", "SCHEDULER_ETA_MIN", "LR_SCHEDULE", "GRAD_ACCUM_STEPS", "GRAD_CLIP_NORM",
                            "ADAM_BETA1", "ADAM_BETA2", "TWO_STAGE", "STAGE2_LR_SCALE", "MAX_TOPK",
                            "KD_SHUFFLE_BUFFER"})
      d.inputs[var] = config_str(c, var);
    d.artifacts = {};
    std::string latest = checkpoint_find_latest(cx.paths.checkpoints);
    d.artifacts.push_back(latest.empty() ? path_join(cx.paths.checkpoints, "mini_bitnet_step_N.safetensors") : latest);
    d.clean = [](Ctx& cx) {
      remove_files(checkpoint_files(cx.paths.checkpoints));
      remove_files({path_join(cx.paths.logs, "train_metrics.jsonl")});
    };
    d.run = [](Ctx& cx, bool resume, PipelineStage* rec) -> Status {
      const Plan& p = cx.plan;
      double budget = p.budget_user_value;
      if (!p.budget_user) {
        // The flip belongs inside the run: the budget is the real target
        // tokens this run will see, so FLIP_FRACTION of it is reached.
        double mean = 0;
        long long n = 0;
        BK_TRY(mean_student_targets(cx.paths.data, cx.student_tok, (int)p.s_seq, &mean, &n));
        long long accum = 1;
        config_int(cx.args->cfg, "GRAD_ACCUM_STEPS", &accum);
        budget = std::floor(mean * (double)p.s_batch * (double)std::max(1LL, accum) * (double)p.s_steps);
        append_to_file(rec->log, "# BUDGET_TOKENS = " + fmt_num(budget) + ": " + std::to_string(p.s_steps) +
                                     " steps x " + std::to_string(p.s_batch * std::max(1LL, accum)) + " examples x " +
                                     fmt_num(mean) + " mean student target tokens over " + std::to_string(n) +
                                     " collected prompts\n");
      }
      std::vector<std::string> a = base_argv(cx, {"train"});
      add_flag(&a, "tokenizer", cx.student_tok);
      add_flag(&a, "dim", p.s_dim);
      add_flag(&a, "layers", p.s_layers);
      add_flag(&a, "heads", p.s_heads);
      add_flag(&a, "ffn", p.s_ffn);
      add_flag(&a, "seq", p.s_seq);
      add_flag(&a, "batch", p.s_batch);
      add_flag(&a, "steps", p.s_steps);
      add_flag_d(&a, "lr", p.s_lr);
      add_flag(&a, "warmup", p.s_warmup);
      add_flag(&a, "budget", fmt_num(budget));
      add_flag(&a, "checkpoint-interval", p.s_ckpt_interval);
      add_flag(&a, "log-interval", p.s_log_interval);
      if (resume) a.push_back("--resume");
      return run_cmd(cx, rec, a);
    };
    d.numbers = [](Ctx& cx, const Stamp& st) {
      return summary_line_numbers(log_path(cx, "train"), st,
                                  {"checkpoint", "steps", "first_loss", "last_loss", "first_kl", "last_kl", "first_ce",
                                   "last_ce", "seen_tokens", "flip_done", "flip_step", "flip_tokens", "act_bits",
                                   "nan_guards", "skipped_steps", "tokens_per_s"});
    };
    v.push_back(std::move(d));
  }

  // 7. eval + QEI
  {
    StageDef d;
    d.name = "eval";
    d.what = "student eval on " + std::to_string(p.eval_prompts) + " held-out prompts (packed engine), QEI";
    d.inputs = base_inputs(cx, d.name);
    d.inputs["train"] = up("train");
    d.inputs["teacher"] = up("teacher");
    d.inputs["collect"] = up("collect");  // the held-out traces
    d.inputs["tasks"] = cx.eval_prompts_user ? config_str(c, "EVAL_PROMPTS_FILE") : file_hash(cx.eval_jsonl);
    d.inputs["prompts"] = p.eval_prompts;
    d.inputs["max_new_tokens"] = p.eval_tokens;
    d.inputs["sampling"] = config_str(c, "EVAL_TEMPERATURE") + "/" + config_str(c, "EVAL_TOP_P");
    d.inputs["teacher_memory"] = cx.local_teacher ? std::string("measured") : config_str(c, "TEACHER_MEMORY_GB");
    d.artifacts = {path_join(cx.paths.reports, "mini_evaluation_report.json")};
    d.run = [](Ctx& cx, bool, PipelineStage* rec) -> Status {
      std::vector<std::string> a = base_argv(cx, {"eval"});
      add_flag(&a, "tokenizer", cx.student_tok);
      if (!cx.eval_prompts_user) add_flag(&a, "prompts", cx.eval_jsonl);
      add_flag(&a, "max-prompts", cx.plan.eval_prompts);
      add_flag(&a, "max-new-tokens", cx.plan.eval_tokens);
      a.push_back("--untrained-reference");
      add_flag(&a, "kd-eval-shard", path_join(heldout_dir(cx), kd_shard_name(0)));
      add_flag(&a, "kd-eval-max-examples", 0);
      return run_cmd(cx, rec, a);
    };
    d.numbers = [](Ctx& cx, const Stamp&) {
      ojson r, j = ojson::object();
      if (!read_json_file(path_join(cx.paths.reports, "mini_evaluation_report.json"), &r)) return j;
      if (r.contains("qei_metrics")) {
        for (const char* k : {"student_quality", "teacher_quality", "student_memory_gb", "teacher_memory_gb",
                              "student_tps", "teacher_tps", "qei", "qei_speed", "gates"})
          if (r["qei_metrics"].contains(k)) j[k] = r["qei_metrics"][k];
      }
      if (r.contains("quality") && r["quality"].is_object()) {
        const ojson& q = r["quality"];
        if (q.contains("student") && q["student"].is_object()) j["student_json_validity"] = q["student"].value("json_validity", ojson());
        if (q.contains("teacher") && q["teacher"].is_object()) j["teacher_json_validity"] = q["teacher"].value("json_validity", ojson());
        j["matched_prompts"] = q.value("matched_prompts", ojson());
        if (q.contains("untrained") && q["untrained"].is_object()) {
          j["untrained_quality"] = q["untrained"].value("score", ojson());
          j["untrained_json_validity"] = q["untrained"].value("json_validity", ojson());
        }
      }
      if (r.contains("agreement")) {
        j["agreement_top1"] = r["agreement"].value("top1", ojson());
        j["agreement_kl"] = r["agreement"].value("kl", ojson());
      }
      if (r.contains("throughput")) j["decode_tokens_per_s"] = r["throughput"].value("decode_tokens_per_s", ojson());
      if (r.contains("memory")) j["peak_rss_bytes"] = r["memory"].value("peak_rss_bytes", ojson());
      if (r.contains("teacher")) j["teacher_memory_source"] = r["teacher"].value("memory_source", ojson());
      return j;
    };
    v.push_back(std::move(d));
  }

  // 8. 7B dry run
  {
    StageDef d;
    d.name = "dryrun";
    d.what = p.tiny ? "dry run of a small shape (tiny run)" : "7B dry run: synthetic packed ternary forward, A8 and A4";
    d.inputs = base_inputs(cx, d.name);
    d.inputs["flags"] = join_command(p.dryrun_flags);
    for (const char* var : {"DRYRUN_PRESET", "DRYRUN_DIM", "DRYRUN_LAYERS", "DRYRUN_HEADS", "DRYRUN_HEAD_DIM",
                            "DRYRUN_VOCAB", "DRYRUN_SEQ_LEN", "DRYRUN_BATCH_SIZE", "DRYRUN_ACT_BITS_START",
                            "DRYRUN_ACT_BITS_AFTER", "A4_SCOPE"})
      d.inputs[var] = config_str(c, var);
    d.artifacts = {path_join(cx.paths.reports, "dryrun_7b.json")};
    d.run = [](Ctx& cx, bool, PipelineStage* rec) -> Status {
      std::vector<std::string> a = base_argv(cx, {"dryrun"});
      for (const std::string& f : cx.plan.dryrun_flags) a.push_back(f);
      return run_cmd(cx, rec, a);
    };
    d.numbers = [](Ctx& cx, const Stamp&) {
      ojson r, j = ojson::object();
      if (!read_json_file(path_join(cx.paths.reports, "dryrun_7b.json"), &r)) return j;
      if (r.contains("params")) j["params"] = r["params"].value("count", ojson());
      j["peak_rss_bytes"] = r.value("peak_rss_bytes", ojson());
      if (r.contains("weight_bytes")) j["weight_bytes"] = r["weight_bytes"].value("total", ojson());
      if (r.contains("runs") && r["runs"].is_object()) {
        for (auto it = r["runs"].begin(); it != r["runs"].end(); ++it)
          if (it.value().is_object()) j[it.key() + "_time_s"] = it.value().value("time_s", ojson());
      } else if (r.contains("runs") && r["runs"].is_array()) {
        for (const ojson& run : r["runs"])
          if (run.is_object() && run.contains("name")) j[run["name"].get<std::string>() + "_time_s"] = run.value("time_s", ojson());
      }
      if (r.contains("agreement")) j["a8_a4_agreement"] = r["agreement"];
      return j;
    };
    v.push_back(std::move(d));
  }
  return v;
}

// ------------------------------------------------------------ teacher mode

// The embedded local teacher unless .env names another one. A PoC .env that
// only says PROVIDER=openai without a key falls back to the local teacher
// with a warning; an explicit TEACHER_PROVIDER that does not resolve is an error.
Status resolve_teacher(Ctx& cx) {
  const Config& c = cx.args->cfg;
  const std::string tp = lower(config_str(c, "TEACHER_PROVIDER"));
  const std::string prov = tp.empty() ? lower(config_str(c, "PROVIDER")) : tp;
  if (prov.empty() || prov == "local" || prov == "embedded") {
    cx.local_teacher = true;
    cx.teacher_desc = "embedded float teacher served by `bitkd serve` on 127.0.0.1";
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
      cx.teacher_desc = "embedded float teacher served by `bitkd serve` on 127.0.0.1";
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

int run_pipeline(Args& a) {
  const double t_start = now_seconds();
  const std::string started = utc_timestamp_iso();
  Ctx cx;
  cx.args = &a;
  Status st = ok_status();

  bool tiny = false, force = false;
  st = arg_bool(a, "tiny", &tiny);
  if (st.ok()) st = arg_bool(a, "force", &force);
  if (!st.ok()) return cli_fail(a, st);
  if (tiny) config_set(&a.cfg, "PIPELINE_SCALE", "tiny", SRC_FLAG);
  cx.force_all = force;
  auto split = [](const std::string& s) {
    std::set<std::string> out;
    size_t pos = 0;
    while (pos <= s.size()) {
      size_t comma = s.find(',', pos);
      if (comma == std::string::npos) comma = s.size();
      std::string part = s.substr(pos, comma - pos);
      if (!part.empty()) out.insert(part);
      pos = comma + 1;
    }
    return out;
  };
  cx.force_stages = split(arg_str(a, "force-stage"));
  cx.only = split(arg_str(a, "only"));
  const std::string until = arg_str(a, "until");
  const std::set<std::string> known = {"tasks", "tokenizers", "pretrain", "teacher", "collect",
                                       "train", "eval",       "dryrun"};
  if (!until.empty() && !cx.only.empty()) return cli_fail(a, errorf("give --only or --until, not both"));
  std::set<std::string> until_set;
  if (!until.empty()) until_set.insert(until);
  for (const std::set<std::string>* s : std::vector<const std::set<std::string>*>{&cx.force_stages, &cx.only, &until_set})
    for (const std::string& n : *s)
      if (!known.count(n))
        return cli_fail(a, errorf("unknown stage '%s' (stages: tasks, tokenizers, pretrain, teacher, collect, train, "
                                  "eval, dryrun)",
                                  n.c_str()));

  st = make_plan(a.cfg, &cx.plan);
  if (!st.ok()) return cli_fail(a, st);
  st = resolve_teacher(cx);
  if (!st.ok()) return cli_fail(a, st);

  cx.paths = artifact_paths(a.cfg);
  st = ensure_artifact_dirs(a.cfg, cx.paths);
  if (!st.ok()) return cli_fail(a, st);
  cx.exe = self_exe();
  cx.env_file = arg_str(a, "env-file");
  cx.stamps_dir = path_join(cx.paths.root, "stamps");
  cx.tasks_dir = path_join(cx.paths.root, "tasks");
  cx.train_jsonl = path_join(cx.tasks_dir, "train.jsonl");
  cx.eval_jsonl = path_join(cx.tasks_dir, "eval.jsonl");
  cx.teacher_dir = path_join(cx.paths.root, "teacher");
  cx.teacher_tok = path_join(cx.teacher_dir, "tokenizer.model");
  cx.student_tok_user = user_set(a.cfg, "TOKENIZER_NAME");
  cx.student_tok = cx.student_tok_user ? config_str(a.cfg, "TOKENIZER_NAME")
                                       : path_join(path_join(cx.paths.root, "tokenizer"), "tokenizer.model");
  cx.baseline_prompts_user = user_set(a.cfg, "TEACHER_BASELINE_PROMPTS_FILE");
  cx.eval_prompts_user = user_set(a.cfg, "EVAL_PROMPTS_FILE");
  cx.kd_prompts_user = user_set(a.cfg, "KD_PROMPTS_FILE");
  if (cx.student_tok_user && !file_exists(cx.student_tok))
    return cli_fail(a, errorf("TOKENIZER_NAME=%s: no such file", cx.student_tok.c_str()));
  st = make_dirs(cx.stamps_dir);
  if (!st.ok()) return cli_fail(a, st);

  long long threads = 0;
  config_int(a.cfg, "THREADS", &threads);
  printf("bitkd pipeline %s: scale %s, teacher: %s\n", BITKD_VERSION, cx.plan.scale_name.c_str(),
         cx.teacher_desc.c_str());
  printf("artifacts in %s, logs in %s, %d cores%s\n", cx.paths.root.c_str(), cx.paths.logs.c_str(),
         hardware_threads(), threads > 0 ? (", " + std::to_string(threads) + " threads").c_str() : "");
  fflush(stdout);

  install_signal_handlers();
  // Stages are defined one at a time: each definition reads the run ids of
  // the stages before it, which exist only once those ran or were skipped.
  std::vector<std::string> order = {"tasks", "tokenizers", "pretrain", "teacher", "collect", "train", "eval", "dryrun"};
  if (!cx.local_teacher) order.erase(order.begin() + 2);
  g_stage_total = (int)order.size();
  size_t last_selected = order.size() - 1;
  if (!until.empty()) {
    auto it = std::find(order.begin(), order.end(), until);
    if (it == order.end())
      return cli_fail(a, errorf("--until %s: that stage does not run with this teacher (%s)", until.c_str(),
                                cx.teacher_desc.c_str()));
    last_selected = (size_t)(it - order.begin());
  }
  if (!cx.only.empty()) {
    last_selected = 0;
    for (size_t i = 0; i < order.size(); i++)
      if (cx.only.count(order[i])) last_selected = i;
    for (const std::string& n : cx.only)
      if (std::find(order.begin(), order.end(), n) == order.end())
        return cli_fail(a, errorf("--only %s: that stage does not run with this teacher (%s)", n.c_str(),
                                  cx.teacher_desc.c_str()));
    // What each stage reads; with --only, those must be done already.
    const std::map<std::string, std::vector<std::string>> deps = {
        {"tasks", {}},
        {"tokenizers", {}},
        {"pretrain", {"tasks", "tokenizers"}},
        {"teacher", {"tasks", "pretrain"}},
        {"collect", {"tasks", "tokenizers", "pretrain"}},
        {"train", {"tokenizers", "collect"}},
        {"eval", {"tasks", "tokenizers", "teacher", "collect", "train"}},
        {"dryrun", {}},
    };
    std::vector<std::string> pending(cx.only.begin(), cx.only.end());
    while (!pending.empty()) {
      std::string n = pending.back();
      pending.pop_back();
      for (const std::string& dep : deps.at(n))
        if (!cx.only.count(dep) && cx.needed.insert(dep).second) pending.push_back(dep);
    }
  }
  Status failure = ok_status();
  std::string failed_stage;
  for (size_t i = 0; i < order.size(); i++) {
    std::vector<StageDef> defs = make_stages(cx);
    StageDef* d = nullptr;
    for (StageDef& x : defs)
      if (x.name == order[i]) d = &x;
    if (!d) continue;
    if (i > last_selected) {
      // --only: stages after the selected ones are left alone.
      PipelineStage rec;
      rec.name = order[i];
      rec.status = "not_run";
      rec.detail = "not selected (--only / --until)";
      rec.log = log_path(cx, order[i]);
      rec.numbers_json = "{}";
      cx.stages.push_back(rec);
      continue;
    }
    // The server is needed only while the teacher answers.
    if (cx.server_pid > 0 && !d->needs_server) stop_server(cx);
    failure = do_stage(cx, *d);
    if (!failure.ok()) {
      failed_stage = order[i];
      for (size_t k = i + 1; k < order.size(); k++) {
        PipelineStage rec;
        rec.name = order[k];
        rec.status = "not_run";
        rec.detail = "an earlier stage failed";
        rec.log = log_path(cx, order[k]);
        rec.numbers_json = "{}";
        cx.stages.push_back(rec);
      }
      break;
    }
  }
  stop_server(cx);
  if (!cx.local_teacher) {
    for (const char* n : {"pretrain"}) {
      PipelineStage rec;
      rec.name = n;
      rec.status = "not_needed";
      rec.detail = "teacher from the configuration: " + cx.teacher_desc;
      rec.numbers_json = "{}";
      cx.stages.insert(cx.stages.begin() + std::min<size_t>(2, cx.stages.size()), rec);
    }
  }

  PipelineFacts f;
  f.started = started;
  f.finished = utc_timestamp_iso();
  f.wall_s = now_seconds() - t_start;
  f.scale = cx.plan.scale_name;
  f.teacher_mode = cx.local_teacher ? "local" : "external";
  f.teacher_desc = cx.teacher_desc;
  f.artifacts_root = cx.paths.root;
  f.baseline_report = path_join(cx.paths.reports, "teacher_baseline.json");
  f.eval_report = path_join(cx.paths.reports, "mini_evaluation_report.json");
  f.dryrun_report = path_join(cx.paths.reports, "dryrun_7b.json");
  f.collect_stats = path_join(cx.paths.logs, "collect_stats.json");
  f.summary_path = path_join(cx.paths.reports, "pipeline_summary.json");
  std::string cpu = cpu_model_name();
  f.machine = (cpu.empty() ? std::string("unknown CPU") : cpu) + ", " + std::to_string(hardware_threads()) + " hardware threads";
  f.threads = (int)threads;
  f.settings_json = cx.plan.settings.dump();
  f.server_cpu_s = cx.server_cpu_s;
  f.failed_stage = failed_stage;
  std::string json_text, human;
  Status s2 = pipeline_summary_build(cx.stages, f, &json_text, &human);
  if (s2.ok()) s2 = write_file_atomic(f.summary_path, json_text);
  printf("\n%s", human.c_str());
  if (s2.ok()) printf("summary: %s\n", f.summary_path.c_str());
  else fprintf(stderr, "bitkd pipeline: cannot write the summary: %s\n", s2.msg.c_str());
  fflush(stdout);
  if (!failure.ok()) return cli_fail(a, failure);
  return s2.ok() ? 0 : 1;
}

}  // namespace

const Command& command_pipeline() {
  static const Command c = {
      "pipeline",
      "Run every stage (tasks, tokenizers, teacher, baseline, collect, train, eval, dryrun) -> reports/pipeline_summary.json",
      "With no teacher configured: the built-in task suite, a teacher (BPE) and a student (unigram) tokenizer,\n"
      "a small float teacher pretrained on the suite and served by `bitkd serve` on 127.0.0.1 (a free port,\n"
      "stopped at the end), then the teacher baseline, KD collection, ternary student training, eval with\n"
      "QEI and the 7B dry run. With TEACHER_PROVIDER (or PROVIDER with its key) naming another teacher, that\n"
      "teacher is used and no local one is trained. Each stage runs as `bitkd <command>` with its log in\n"
      "LOGS_DIR/<stage>.log and is skipped when its outputs exist and its inputs are unchanged (stamps in\n"
      "<artifacts>/stamps). PIPELINE_SCALE sizes the run: 1 (the default, about 14 minutes on 2 cores),\n"
      "2, 4, ... multiply steps and data; tiny is a smoke run of a minute or two. Variables you set\n"
      "(MINI_DIM, TOTAL_STEPS, KD_MAX_PROMPTS, EVAL_MAX_PROMPTS, ...) override the preset.",
      {
          {"scale", "PIPELINE_SCALE", nullptr, "tiny, 1, 2, 4, ... (size of the run)"},
          {"tiny", nullptr, "", "Same as --scale tiny", true},
          {"force", nullptr, "", "Rerun every stage", true},
          {"force-stage", nullptr, "", "Rerun these stages (comma-separated); later ones rerun when their inputs changed"},
          {"only", nullptr, "", "Run only these stages (comma-separated); the ones before must be done"},
          {"until", nullptr, "", "Run the stages up to and including this one (what `make <stage>` does)"},
      },
      run_pipeline,
  };
  return c;
}

}  // namespace bk
