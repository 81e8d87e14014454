// Child processes (process.h).
#include "core/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "core/timing.h"

extern char** environ;

namespace bk {

namespace {

constexpr int kTracked = 8;
volatile sig_atomic_t g_interrupted = 0;
volatile pid_t g_children[kTracked] = {0, 0, 0, 0, 0, 0, 0, 0};

void on_signal(int sig) {
  g_interrupted = sig;
  // Forward to the children so none outlives this process.
  for (int i = 0; i < kTracked; i++)
    if (g_children[i] > 0) kill(g_children[i], SIGTERM);
}

std::vector<std::string> build_envp(const ProcessEnv& env) {
  std::vector<std::string> out;
  for (char** e = environ; e && *e; e++) {
    const char* eq = strchr(*e, '=');
    if (!eq) continue;
    if (env.count(std::string(*e, eq - *e))) continue;
    out.push_back(*e);
  }
  for (auto& kv : env) out.push_back(kv.first + "=" + kv.second);
  return out;
}

double rusage_cpu_s(const struct rusage& ru) {
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

void append_text(const std::string& path, const std::string& text) {
  FILE* f = fopen(path.c_str(), "ab");
  if (!f) return;
  fwrite(text.data(), 1, text.size(), f);
  fclose(f);
}

}  // namespace

void process_install_interrupt_handlers() {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: waits return early
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);
}

int process_interrupted() { return (int)g_interrupted; }

void process_track(pid_t pid) {
  for (int i = 0; i < kTracked; i++)
    if (g_children[i] == 0) {
      g_children[i] = pid;
      return;
    }
}

void process_untrack(pid_t pid) {
  for (int i = 0; i < kTracked; i++)
    if (g_children[i] == pid) g_children[i] = 0;
}

void sleep_seconds(double s) {
  struct timespec ts;
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
  nanosleep(&ts, nullptr);
}

std::string shell_join(const std::vector<std::string>& argv) {
  std::string out;
  for (size_t i = 0; i < argv.size(); i++) {
    const std::string& s = argv[i];
    bool plain = !s.empty();
    for (char c : s)
      if (!(isalnum((unsigned char)c) || strchr("-_./=:,+@%", c))) plain = false;
    std::string q = s;
    if (!plain) {
      q = "'";
      for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
      q += "'";
    }
    out += (i ? " " : "") + q;
  }
  return out;
}

std::string self_exe_path() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "bitkd";
  buf[n] = 0;
  return buf;
}

Status process_spawn(const std::vector<std::string>& argv, const ProcessEnv& env, const std::string& log_path,
                     pid_t* pid_out) {
  if (argv.empty()) return errorf("process_spawn: no command");
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
    dprintf(2, "cannot execute %s: %s\n", cargv[0], strerror(errno));
    _exit(127);
  }
  close(fd);
  *pid_out = pid;
  return ok_status();
}

bool process_ended(pid_t pid, int* status) { return waitpid(pid, status, WNOHANG) == pid; }

double process_stop(pid_t pid, double grace_s) {
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
    sleep_seconds(0.05);
  }
  kill(pid, SIGKILL);
  wait4(pid, &status, 0, &ru);
  return rusage_cpu_s(ru);
}

std::string process_describe_exit(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("killed by signal ") + strsignal(WTERMSIG(status));
  return "ended abnormally";
}

Status process_run(const std::vector<std::string>& argv, const ProcessEnv& env, const std::string& log_path,
                   const std::function<void()>& on_wait, double* cpu_s) {
  append_text(log_path, "\n# " + utc_timestamp_iso() + "\n$ " + shell_join(argv) + "\n");
  pid_t pid = 0;
  BK_TRY(process_spawn(argv, env, log_path, &pid));
  process_track(pid);
  int status = 0;
  struct rusage ru;
  memset(&ru, 0, sizeof ru);
  while (true) {
    pid_t r = wait4(pid, &status, WNOHANG, &ru);
    if (r == pid) {
      *cpu_s += rusage_cpu_s(ru);
      break;
    }
    if (r < 0 && errno != EINTR) {
      process_untrack(pid);
      return errorf("waiting for `%s`: %s", shell_join(argv).c_str(), strerror(errno));
    }
    sleep_seconds(0.2);
    if (on_wait) on_wait();
  }
  process_untrack(pid);
  if (g_interrupted) return errorf("interrupted (signal %d)", (int)g_interrupted);
  if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
    return errorf("`%s` failed (%s)", shell_join(argv).c_str(), process_describe_exit(status).c_str());
  return ok_status();
}

}  // namespace bk
