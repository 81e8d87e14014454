#pragma once
// Shared by the serve integration and interop tests: a tiny checkpoint and
// tokenizer made with the real `bitkd tokenizer train` and `bitkd pretrain`,
// and a `bitkd serve` child process on 127.0.0.1 with --port 0.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "testutil/testutil.h"

namespace serve_harness {

using json = nlohmann::json;

// Writes a small corpus (prompt/response pairs in the task style) and trains a
// tokenizer and a tiny float model on it with the real commands.
struct TinyModel {
  std::string dir, tokenizer, checkpoint;
};

inline std::string q(const std::string& s) { return "'" + s + "'"; }

inline void make_tiny_model(const std::string& name, TinyModel* out) {
  out->dir = bk_test::scratch_dir(name);
  const std::string& d = out->dir;
  std::ofstream txt(d + "/corpus.txt"), jl(d + "/corpus.jsonl");
  const char* words[] = {"alpha", "beta", "gamma", "delta", "omega", "red", "green", "blue"};
  for (int i = 0; i < 160; i++) {
    std::string prompt = "list " + std::to_string(i % 10) + " " + words[i % 8];
    std::string resp = "{\"items\": [";
    for (int k = 0; k < 3 + i % 4; k++) resp += (k ? ", " : "") + std::string("\"") + words[(i + k) % 8] + "\"";
    resp += "], \"n\": " + std::to_string(i % 10) + "}";
    txt << "<|user|>\n" << prompt << "\n\n<|assistant|>\n" << resp << "\n";
    jl << json({{"prompt", prompt}, {"response", resp}}).dump() << "\n";
  }
  txt.close();
  jl.close();
  const std::string common = " --env-file " + q(d + "/none.env") + " --artifacts " + q(d + "/artifacts");
  std::string log;
  int rc = bk_test::run_command(bk_test::bitkd_exe() + " tokenizer train --input " + q(d + "/corpus.txt") +
                                    " --vocab-size 320 --out " + q(d + "/tok") + common,
                                &log);
  ASSERT_EQ(rc, 0) << log;
  out->tokenizer = d + "/tok.model";
  rc = bk_test::run_command(bk_test::bitkd_exe() + " pretrain --data " + q(d + "/corpus.jsonl") + " --tokenizer " +
                                q(out->tokenizer) +
                                " --dim 64 --layers 2 --heads 4 --head-dim 16 --kv-heads 2 --ffn 128"
                                " --weight-quant none --act-bits 0 --seq 64 --batch 8 --steps 30 --lr 3e-3 --threads 1"
                                " --warmup 0 --checkpoint-interval 0 --log-interval 20 --out " +
                                q(d + "/ckpt") + common + " > " + q(d + "/pretrain.json"),
                            &log);
  ASSERT_EQ(rc, 0) << log;
  std::ifstream sf(d + "/pretrain.json");
  std::string line, last;
  while (std::getline(sf, line))
    if (!line.empty() && line[0] == '{') last = line;
  json summary = json::parse(last, nullptr, false);
  ASSERT_TRUE(summary.is_object() && summary["checkpoint"].is_string()) << "pretrain printed: " << last << "\n" << log;
  out->checkpoint = summary["checkpoint"].get<std::string>();
}

// A running `bitkd serve`. A server the test did not stop (it forgot, or an
// ASSERT returned early) is stopped when this goes out of scope.
struct Server {
  pid_t pid = -1;
  int out_fd = -1;
  int port = 0;
  std::string log_path;
  Server() = default;
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  ~Server() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      int status = 0;
      waitpid(pid, &status, 0);
    }
    if (out_fd >= 0) close(out_fd);
  }
};

// Starts `bitkd serve` and reads "listening on http://127.0.0.1:PORT" from its
// stdout (bounded wait on the pipe; no sleeping).
inline void start_server(const TinyModel& m, const std::vector<std::string>& extra, const std::vector<std::string>& env,
                  Server* s) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  s->log_path = m.dir + "/serve_" + std::to_string(getpid()) + "_" + std::to_string(rand()) + ".log";
  std::vector<std::string> args = {bk_test::bitkd_exe(), "serve", "--model", m.checkpoint, "--tokenizer", m.tokenizer,
                                   "--host", "127.0.0.1", "--port", "0", "--env-file", m.dir + "/none.env",
                                   "--threads", "1"};
  args.insert(args.end(), extra.begin(), extra.end());
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(fds[1], 1);
    int logfd = open(s->log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (logfd >= 0) dup2(logfd, 2);
    close(fds[0]);
    for (const std::string& e : env) putenv(strdup(e.c_str()));
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fds[1]);
  s->pid = pid;
  s->out_fd = fds[0];
  std::string buf;
  const std::string marker = "listening on http://127.0.0.1:";
  auto have_line = [&] {
    size_t at = buf.find(marker);
    return at != std::string::npos && buf.find('\n', at) != std::string::npos;
  };
  for (int i = 0; i < 600 && !have_line(); i++) {
    struct pollfd p = {s->out_fd, POLLIN, 0};
    int r = poll(&p, 1, 1000);  // waits for output; at most 10 minutes in all
    if (r <= 0) continue;
    char tmp[256];
    ssize_t n = read(s->out_fd, tmp, sizeof tmp);
    if (n <= 0) break;
    buf.append(tmp, n);
  }
  size_t at = buf.find(marker);
  ASSERT_NE(at, std::string::npos) << "server output: " << buf;
  s->port = atoi(buf.c_str() + at + marker.size());
  ASSERT_GT(s->port, 0);
}

// Signals the server and returns its exit code (-1 when it did not exit normally).
inline int stop_server(Server* s, int sig) {
  kill(s->pid, sig);
  int status = 0;
  waitpid(s->pid, &status, 0);
  close(s->out_fd);
  s->pid = -1, s->out_fd = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

inline std::string read_file(const std::string& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace serve_harness
