#pragma once
// Helpers shared by tests: scratch directories, running the bitkd binary.
#include <string>

namespace bk_test {

// A fresh empty directory under the build tree, unique per test (removed first if present).
std::string scratch_dir(const std::string& name);
// Runs a shell command, captures stdout+stderr into *output, returns the exit code.
int run_command(const std::string& cmd, std::string* output);
// Path of the bitkd executable and of the source tree.
std::string bitkd_exe();
std::string source_dir();

}  // namespace bk_test
