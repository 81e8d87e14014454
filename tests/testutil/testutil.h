#pragma once
// Helpers shared by tests: scratch directories, running the bitkd binary,
// raw arrays for the PyTorch references.
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace bk_test {

// A fresh empty directory under the build tree, unique per test (removed first if present).
std::string scratch_dir(const std::string& name);
// Runs a shell command, captures stdout+stderr into *output, returns the exit code.
int run_command(const std::string& cmd, std::string* output);
// Path of the bitkd executable and of the source tree.
std::string bitkd_exe();
std::string source_dir();

// The Debian python3 with python3-torch (not a virtualenv's); BITKD_TORCH_PYTHON overrides.
inline std::string torch_python() {
  const char* p = std::getenv("BITKD_TORCH_PYTHON");
  return p && *p ? p : "/usr/bin/python3";
}

// A vector as raw bytes (what the reference scripts read with numpy.fromfile); false on a write error.
template <class T>
bool write_raw(const std::string& path, const std::vector<T>& v) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()), sizeof(T) * v.size());
  return f.good();
}

template <class T>
std::vector<T> read_raw(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<T> v(bytes.size() / sizeof(T));
  memcpy(v.data(), bytes.data(), v.size() * sizeof(T));
  return v;
}

}  // namespace bk_test
