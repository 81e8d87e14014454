// Data-parallel training and collection under a real `mpirun -np 2` (Open
// MPI, oversubscribed, shared memory and loopback only): the weights after K
// steps equal a one-process run at the same global batch, a 2-rank run killed
// mid-way resumes (with 2 ranks, or with 1) to the same weights as an
// uninterrupted run, and 2 ranks collect disjoint shards. Waits are on files
// appearing (inotify), never on the clock.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/inotify.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/fs.h"
#include "integration/serve_harness.h"
#include "io/safetensors.h"
#include "testutil/testutil.h"

extern char** environ;

namespace {

using json = nlohmann::json;
using serve_harness::q;

// Open MPI refuses root without these, and must stay on this machine: shared
// memory between ranks, loopback for its own control traffic.
const char* k_mpirun =
    "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader "
    "OMPI_MCA_oob_tcp_if_include=lo OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_rmaps_base_oversubscribe=1 mpirun -np 2 ";

bool mpi_ready(std::string* why) {
  std::string out;
  if (bk_test::run_command("mpirun --version", &out) != 0) {
    *why = "mpirun is not installed: run bash scripts/setup.sh --test (it installs openmpi-bin and libopenmpi-dev)";
    return false;
  }
  if (bk_test::run_command(bk_test::bitkd_exe() + " check-env --env-file= 2>&1 | grep -q '; MPI: yes'", &out) != 0) {
    *why = "this bitkd was built without MPI: install libopenmpi-dev (bash scripts/setup.sh --test) and rebuild";
    return false;
  }
  return true;
}

struct Data {
  serve_harness::TinyModel tm;
  std::string dir;
};

const Data& data() {
  static Data d = [] {
    Data x;
    serve_harness::make_tiny_model("mpi_data", &x.tm);
    x.dir = x.tm.dir;
    return x;
  }();
  return d;
}

// A small ternary student trained on the tiny corpus; global batch 4 x 2.
std::string pretrain_args(const std::string& out, long steps) {
  const Data& d = data();
  return " pretrain --env-file= --log-level WARNING --threads 1 --artifacts " + q(d.dir + "/art") + " --data " +
         q(d.dir + "/corpus.jsonl") + " --tokenizer " + q(d.tm.tokenizer) +
         " --dim 32 --layers 1 --heads 2 --head-dim 16 --ffn 64 --weight-quant ternary --act-bits 8 --seq 32"
         " --batch 4 --grad-accum 2 --steps " +
         std::to_string(steps) + " --warmup 2 --checkpoint-interval 4 --log-interval 4 --out " + q(out) +
         " --metrics " + q(out + "/metrics.jsonl");
}

// SIGKILL to a process and all its descendants (mpirun's ranks are its
// children but not in its process group), children found through /proc.
void kill_tree(pid_t root) {
  std::vector<std::pair<pid_t, pid_t>> procs;  // (pid, ppid)
  for (const std::string& e : bk::list_files("/proc", "", "")) {
    if (e.empty() || e.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream st("/proc/" + e + "/stat");
    std::string text;
    std::getline(st, text);
    const size_t close = text.rfind(')');  // the command name may hold spaces
    if (close == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (sscanf(text.c_str() + close + 1, " %c %d", &state, &ppid) == 2) procs.emplace_back(atoi(e.c_str()), ppid);
  }
  std::vector<pid_t> todo = {root}, all;
  while (!todo.empty()) {
    const pid_t p = todo.back();
    todo.pop_back();
    all.push_back(p);
    for (auto& pr : procs)
      if (pr.second == p) todo.push_back(pr.first);
  }
  for (pid_t p : all) kill(p, SIGKILL);
}

// Two checkpoints hold the same weights bit for bit, at the same step, data
// position and RNG state.
void expect_same_checkpoint(const std::string& a, const std::string& b) {
  bk::SafeTensorsFile fa, fb;
  ASSERT_TRUE(bk::safetensors_read(a, &fa).ok()) << a;
  ASSERT_TRUE(bk::safetensors_read(b, &fb).ok()) << b;
  ASSERT_EQ(fa.tensors.size(), fb.tensors.size());
  for (size_t i = 0; i < fa.tensors.size(); i++) {
    const bk::StTensor& ta = fa.tensors[i];
    const bk::StTensor* tb = bk::safetensors_find(fb, ta.name);
    ASSERT_NE(tb, nullptr) << ta.name;
    ASSERT_EQ(ta.nbytes(), tb->nbytes()) << ta.name;
    EXPECT_EQ(memcmp(bk::safetensors_data(fa, ta), bk::safetensors_data(fb, *tb), ta.nbytes()), 0)
        << ta.name << " differs between " << a << " and " << b;
  }
  for (const char* k : {"step", "seen_tokens", "data_position", "rng", "flip_state", "last_loss"})
    EXPECT_EQ(fa.metadata[k], fb.metadata[k]) << k;
}

TEST(Mpi, TwoRanksGiveTheWeightsOfOneProcess) {
  std::string why;
  ASSERT_TRUE(mpi_ready(&why)) << why;
  const std::string dir = bk_test::scratch_dir("mpi_equal");
  std::string out;
  ASSERT_EQ(bk_test::run_command(bk_test::bitkd_exe() + pretrain_args(dir + "/one", 12) + " > " + q(dir + "/one.json"),
                                 &out),
            0)
      << out;
  ASSERT_EQ(bk_test::run_command(std::string(k_mpirun) + bk_test::bitkd_exe() + pretrain_args(dir + "/two", 12) +
                                     " > " + q(dir + "/two.json"),
                                 &out),
            0)
      << out;
  expect_same_checkpoint(dir + "/one/mini_bitnet_step_12.safetensors", dir + "/two/mini_bitnet_step_12.safetensors");
  // Rank 0 alone wrote: one summary (JSON) line, one metrics line per 4 steps,
  // the same as one process's (the losses are summed over ranks).
  std::ifstream f(dir + "/two.json");
  std::string line, summary;
  int summaries = 0;
  while (std::getline(f, line))
    if (!line.empty() && line[0] == '{') summaries++, summary = line;
  EXPECT_EQ(summaries, 1);
  json s = json::parse(summary, nullptr, false);
  ASSERT_TRUE(s.is_object()) << summary;
  EXPECT_EQ(s["steps"], 12);
  auto losses = [](const std::string& path) {
    std::ifstream m(path);
    std::vector<std::string> v;
    std::string l;
    while (std::getline(m, l)) v.push_back(json::parse(l)["loss"].dump());
    return v;
  };
  EXPECT_EQ(losses(dir + "/two/metrics.jsonl").size(), 3u);
  EXPECT_EQ(losses(dir + "/two/metrics.jsonl"), losses(dir + "/one/metrics.jsonl"));

  // A global batch the ranks cannot share evenly is refused with the fix.
  const int rc = bk_test::run_command(std::string(k_mpirun) + bk_test::bitkd_exe() +
                                          pretrain_args(dir + "/odd", 2) + " --grad-accum 3",
                                      &out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("GRAD_ACCUM=3 is not a multiple of the 2 MPI ranks"), std::string::npos) << out;
  EXPECT_NE(out.find("--grad-accum 4"), std::string::npos) << out;
}

TEST(Mpi, AKilledTwoRankRunResumesWithTwoRanksOrOne) {
  std::string why;
  ASSERT_TRUE(mpi_ready(&why)) << why;
  const std::string dir = bk_test::scratch_dir("mpi_resume");
  const long steps = 120;
  std::string out;
  // The reference: one process, uninterrupted.
  ASSERT_EQ(bk_test::run_command(bk_test::bitkd_exe() + pretrain_args(dir + "/ref", steps) + " > /dev/null", &out), 0)
      << out;

  for (int resume_ranks : {2, 1}) {
    SCOPED_TRACE("resumed with " + std::to_string(resume_ranks) + " rank(s)");
    const std::string ck = dir + "/run" + std::to_string(resume_ranks);
    ASSERT_TRUE(bk::make_dirs(ck).ok());
    int ino = inotify_init1(IN_CLOEXEC);
    ASSERT_GE(ino, 0);
    ASSERT_GE(inotify_add_watch(ino, ck.c_str(), IN_MOVED_TO), 0);
    const std::string cmd = std::string(k_mpirun) + bk_test::bitkd_exe() + pretrain_args(ck, steps) + " > " +
                            q(ck + "/first.log") + " 2>&1";
    const char* argv[] = {"/bin/sh", "-c", cmd.c_str(), nullptr};
    pid_t pid = -1;
    ASSERT_EQ(posix_spawn(&pid, "/bin/sh", nullptr, nullptr, const_cast<char* const*>(argv), environ), 0);
    // Killed once the step-8 checkpoint's model file lands (written last, by rename).
    bool killed = false, exited = false;
    int status = 0;
    while (!killed && !exited) {
      struct pollfd pfd = {ino, POLLIN, 0};
      if (poll(&pfd, 1, 1000) > 0) {  // wakes on an event; the timeout only rechecks the child
        char buf[4096];
        const ssize_t len = read(ino, buf, sizeof buf);
        for (ssize_t at = 0; at < len;) {
          const struct inotify_event* ev = (const struct inotify_event*)(buf + at);
          if (ev->len && std::string(ev->name) == "mini_bitnet_step_8.safetensors") {
            kill_tree(pid);  // the shell, mpirun and both ranks
            killed = true;
          }
          at += (ssize_t)sizeof(struct inotify_event) + ev->len;
        }
      }
      if (!killed && waitpid(pid, &status, WNOHANG) == pid) exited = true;
    }
    close(ino);
    if (killed) waitpid(pid, &status, 0);
    ASSERT_TRUE(killed) << "the run ended before its step-8 checkpoint (exit status " << status << ")";
    EXPECT_FALSE(bk::file_exists(ck + "/mini_bitnet_step_" + std::to_string(steps) + ".safetensors"))
        << "killed before the end";

    const std::string launcher = resume_ranks == 2 ? std::string(k_mpirun) : std::string();
    ASSERT_EQ(bk_test::run_command(launcher + bk_test::bitkd_exe() + pretrain_args(ck, steps) + " --resume > " +
                                       q(ck + "/resumed.json"),
                                   &out),
              0)
        << out;
    expect_same_checkpoint(dir + "/ref/mini_bitnet_step_" + std::to_string(steps) + ".safetensors",
                           ck + "/mini_bitnet_step_" + std::to_string(steps) + ".safetensors");
    std::ifstream rf(ck + "/resumed.json");
    std::string line, last;
    while (std::getline(rf, line))
      if (!line.empty() && line[0] == '{') last = line;  // the summary (stderr lines are in the file too)
    json s = json::parse(last, nullptr, false);
    ASSERT_TRUE(s.is_object()) << last;
    EXPECT_LT(s["steps_this_run"].get<long>(), steps) << "it resumed, not restarted";
    EXPECT_GT(s["steps_this_run"].get<long>(), 0) << "the killed run had not finished";
  }
}

TEST(Mpi, TwoRanksCollectDisjointShardsAndDistillFromThem) {
  std::string why;
  ASSERT_TRUE(mpi_ready(&why)) << why;
  const Data& d = data();
  const std::string dir = bk_test::scratch_dir("mpi_collect");
  serve_harness::Server srv;
  serve_harness::start_server(d.tm, {}, {}, &srv);
  if (HasFatalFailure()) return;
  const std::string url = "http://127.0.0.1:" + std::to_string(srv.port) + "/v1";
  std::string out;
  const int rc = bk_test::run_command(
      std::string(k_mpirun) + "env -u TEACHER_PROVIDER -u PROVIDER " + bk_test::bitkd_exe() +
          " collect --env-file= --log-level WARNING --threads 1 --artifacts " + q(dir + "/art") +
          " --provider bitkd --base-url " + url + " --prompts " + q(d.dir + "/corpus.jsonl") +
          " --max-prompts 12 --max-tokens 8 --tokenizer " + q(d.tm.tokenizer) + " --out " + q(dir + "/traces"),
      &out);
  serve_harness::stop_server(&srv, SIGTERM);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("collect, all 2 ranks: 12 prompts ok, 0 failed"), std::string::npos) << out;
  // One stats file and one set of shards per rank, named after its split.
  for (const char* s : {"collect_stats_0of2.json", "collect_stats_1of2.json"}) {
    json st = json::parse(serve_harness::read_file(dir + "/art/logs/" + s), nullptr, false);
    ASSERT_TRUE(st.is_object()) << s;
    EXPECT_EQ(st["prompts"]["ok"], 6) << s;
  }
  std::vector<std::string> shards = bk::list_files(dir + "/traces", "kd_prompts_", ".parquet");
  EXPECT_EQ(shards.size(), 2u);

  // KD training on those traces: 2 ranks give the weights of one process.
  auto train = [&](const std::string& launcher, const std::string& out_dir) {
    std::string o;
    const int r = bk_test::run_command(
        launcher + bk_test::bitkd_exe() + " train --env-file= --log-level WARNING --threads 1 --artifacts " +
            q(dir + "/art") + " --data " + q(dir + "/traces") + " --tokenizer " + q(d.tm.tokenizer) +
            " --dim 32 --layers 1 --heads 2 --ffn 64 --seq 48 --batch 2 --grad-accum 2 --steps 6 --warmup 0"
            " --checkpoint-interval 0 --out " +
            q(out_dir) + " --metrics " + q(out_dir + "/metrics.jsonl") + " > /dev/null",
        &o);
    EXPECT_EQ(r, 0) << o;
  };
  train("", dir + "/kd_one");
  train(k_mpirun, dir + "/kd_two");
  expect_same_checkpoint(dir + "/kd_one/mini_bitnet_step_6.safetensors", dir + "/kd_two/mini_bitnet_step_6.safetensors");
}

}  // namespace
