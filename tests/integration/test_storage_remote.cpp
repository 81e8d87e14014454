// Artifacts on a remote (STORAGE_BACKEND=rclone) with a real `rclone serve
// webdav` on 127.0.0.1, configured through RCLONE_CONFIG_* variables:
// - the remote goes away during train: the run fails naming the remote, keeps
//   every file locally, and a rerun once it is back completes and pushes all;
// - a run killed during train (SIGKILL, once a checkpoint is on the remote)
//   is finished from an empty directory (a fresh machine) that pulls the
//   traces and the last checkpoint, with the same final tensors as the
//   first run, whose training was never interrupted.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "testutil/testutil.h"

using json = nlohmann::json;

namespace {

const char* kUnset =
    "env -u PROVIDER -u TEACHER_PROVIDER -u TEACHER_BASE_URL -u TEACHER_MODEL -u TEACHER_API_KEY -u TOKENIZER_NAME "
    "-u PIPELINE_SCALE -u DATA_DIR -u CHECKPOINTS_DIR -u REPORTS_DIR -u LOGS_DIR -u DRIVE_ROOT -u KD_DATA_PATH "
    "-u STORAGE_REMOTE -u STORAGE_BACKEND ";
// Long enough a train stage that a checkpoint reaches the remote before it ends.
const char* kFinal = "checkpoints/mini_bitnet_step_120.safetensors";
const char* kFirst = "checkpoints/mini_bitnet_step_20.safetensors";

bool exists(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0;
}

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A WebDAV server over root on a free port (or the given one).
struct Server {
  pid_t pid = 0;
  int port = 0;
  void start(const std::string& root, const std::string& log, int want_port) {
    unlink(log.c_str());
    pid = fork();
    if (pid == 0) {
      std::string addr = "127.0.0.1:" + std::to_string(want_port);
      freopen(log.c_str(), "w", stderr);
      execlp("rclone", "rclone", "serve", "webdav", root.c_str(), "--addr", addr.c_str(), (char*)nullptr);
      _exit(127);
    }
    // Its log names the port once it listens (bounded wait).
    for (int i = 0; i < 1000 && port == 0; i++) {
      std::string text = slurp(log);
      size_t p = text.find("started on http://127.0.0.1:");
      if (p != std::string::npos) port = atoi(text.c_str() + p + strlen("started on http://127.0.0.1:"));
      int ws;
      if (waitpid(pid, &ws, WNOHANG) == pid) break;
      usleep(20000);
    }
  }
  void stop() {
    if (pid > 0) kill(pid, SIGKILL), waitpid(pid, nullptr, 0);
    pid = 0;
  }
  ~Server() { stop(); }
};

std::string pipeline_cmd(const std::string& dir, int port, const std::string& path) {
  return "cd '" + dir + "' && " + kUnset + "OMP_WAIT_POLICY=PASSIVE TOTAL_STEPS=120 CHECKPOINT_INTERVAL=20 " +
         "STORAGE_BACKEND=rclone STORAGE_REMOTE=dav:" + path + " RCLONE_CONFIG_DAV_TYPE=webdav " +
         "RCLONE_CONFIG_DAV_URL=http://127.0.0.1:" + std::to_string(port) + "/ '" + bk_test::bitkd_exe() +
         "' pipeline --tiny --artifacts '" + dir + "/art' --env-file '" + dir + "/no.env' 2>&1";
}

// Starts cmd in its own process group; stdout to out.
pid_t start_group(const std::string& cmd, const std::string& out) {
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    execl("/bin/sh", "sh", "-c", (cmd + " > '" + out + "'").c_str(), (char*)nullptr);
    _exit(127);
  }
  setpgid(pid, pid);
  return pid;
}

// Polls until path exists or the process ends; true when it exists.
bool wait_for(const std::string& path, pid_t pid) {
  for (int i = 0; i < 20000; i++) {
    if (exists(path)) return true;
    int ws;
    if (waitpid(pid, &ws, WNOHANG) == pid) return exists(path);
    usleep(10000);
  }
  return false;
}

// A safetensors file's tensors (header without __metadata__, and the data).
std::string tensors(const std::string& path) {
  std::string b = slurp(path);
  if (b.size() < 8) return "";
  uint64_t n = 0;
  memcpy(&n, b.data(), 8);
  json h = json::parse(b.substr(8, n), nullptr, false);
  if (h.is_discarded()) return "";
  h.erase("__metadata__");
  return h.dump() + b.substr(8 + n);
}

// Every file of the local artifact root is on the remote with the same bytes.
void expect_all_pushed(const std::string& root, const std::string& remote_dir) {
  std::string list;
  bk_test::run_command("cd '" + root + "' && find . -type f", &list);
  std::istringstream in(list);
  std::string f;
  int n = 0;
  while (std::getline(in, f)) {
    n++;
    EXPECT_TRUE(slurp(root + "/" + f) == slurp(remote_dir + "/" + f) && exists(remote_dir + "/" + f))
        << f << " differs on the remote or is missing";
  }
  EXPECT_GT(n, 30);
  std::string partial;
  bk_test::run_command("find '" + remote_dir + "' -name '*.bitkd-partial'", &partial);
  EXPECT_EQ(partial, "") << "uploads left half-done on the remote";
}

}  // namespace

TEST(StorageRemote, RemoteLossThenKillAndResumeOnAFreshMachine) {
  std::string out;
  ASSERT_EQ(bk_test::run_command("command -v rclone", &out), 0)
      << "rclone is needed (the WebDAV server of this test): apt-get install rclone (or bash scripts/setup.sh --test)";
  const std::string base = bk_test::scratch_dir("storage_remote");
  const std::string root = base + "/dav", a = base + "/a", b = base + "/b", c = base + "/c";
  for (const std::string& d : {root, a, b, c}) ASSERT_EQ(mkdir(d.c_str(), 0755), 0) << d;

  // 1. The remote stops during train: a clear error, nothing lost here.
  Server srv;
  srv.start(root, base + "/serve1.log", 0);
  ASSERT_GT(srv.port, 0) << slurp(base + "/serve1.log");
  const int port = srv.port;
  // Unreachable before the first stage: stops at once, no stage runs.
  ASSERT_NE(bk_test::run_command(pipeline_cmd(a, 1, "x"), &out), 0);
  EXPECT_NE(out.find("not reachable"), std::string::npos) << out;
  EXPECT_EQ(out.find("[1/9]"), std::string::npos) << out;

  pid_t p = start_group(pipeline_cmd(a, port, "run1"), base + "/a.out");
  ASSERT_TRUE(wait_for(root + "/run1/" + kFirst, p)) << slurp(base + "/a.out");
  srv.stop();
  int ws = 0;
  waitpid(p, &ws, 0);
  out = slurp(base + "/a.out");
  EXPECT_NE(WEXITSTATUS(ws), 0) << out;
  EXPECT_NE(out.find("failed after 3 tries"), std::string::npos) << out;
  EXPECT_NE(out.find("dav:run1"), std::string::npos) << out;
  EXPECT_NE(out.find("the local files are kept"), std::string::npos) << out;
  ASSERT_TRUE(exists(a + "/art/" + std::string(kFinal))) << out;  // training itself finished here
  // Back (same port): the rerun completes and the remote holds everything.
  srv.start(root, base + "/serve2.log", port);
  ASSERT_EQ(srv.port, port) << slurp(base + "/serve2.log");
  ASSERT_EQ(bk_test::run_command(pipeline_cmd(a, port, "run1"), &out), 0) << out;
  expect_all_pushed(a + "/art", root + "/run1");
  const std::string reference = tensors(a + "/art/" + std::string(kFinal));
  ASSERT_FALSE(reference.empty());

  // 2. Killed during train once a checkpoint is on the remote.
  p = start_group(pipeline_cmd(b, port, "run2"), base + "/b.out");
  ASSERT_TRUE(wait_for(root + "/run2/" + kFirst, p)) << slurp(base + "/b.out");
  kill(-p, SIGKILL);
  waitpid(p, &ws, 0);
  ASSERT_FALSE(exists(b + "/art/" + std::string(kFinal))) << "train had finished before the kill";
  ASSERT_FALSE(exists(root + "/run2/" + std::string(kFinal)));

  // 3. A fresh machine: pulls, skips what is done, resumes train, same tensors.
  ASSERT_EQ(bk_test::run_command(pipeline_cmd(c, port, "run2"), &out), 0) << out;
  EXPECT_NE(out.find("collect    skipped"), std::string::npos) << out;
  EXPECT_NE(out.find("resuming an interrupted run"), std::string::npos) << out;
  EXPECT_TRUE(tensors(c + "/art/" + std::string(kFinal)) == reference)
      << "the resumed run's final checkpoint differs from the uninterrupted one";
  expect_all_pushed(c + "/art", root + "/run2");
}
