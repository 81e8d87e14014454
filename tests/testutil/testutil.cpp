#include "testutil/testutil.h"

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>

namespace bk_test {

std::string scratch_dir(const std::string& name) {
  std::string dir = std::string(BITKD_BINARY_DIR) + "/test_scratch/" + name;
  std::string cmd = "rm -rf '" + dir + "' && mkdir -p '" + dir + "'";
  if (system(cmd.c_str()) != 0) abort();
  return dir;
}

int run_command(const std::string& cmd, std::string* output) {
  std::string full = cmd + " 2>&1";
  FILE* p = popen(full.c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  size_t n;
  if (output) output->clear();
  while ((n = fread(buf, 1, sizeof buf, p)) > 0)
    if (output) output->append(buf, n);
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

std::string bitkd_exe() { return BITKD_EXE; }
std::string source_dir() { return BITKD_SOURCE_DIR; }

}  // namespace bk_test
