#include "cli/machine_json.h"

#include "core/fs.h"
#include "core/timing.h"
#include "kernels/cpu/kernels.h"

namespace bk {

namespace {

// 1, 5 and 15-minute load averages: a benchmark on a shared machine says so.
std::string load_average() {
  std::string text;
  if (!read_file("/proc/loadavg", &text).ok()) return "";
  size_t p = 0;
  for (int i = 0; i < 3 && p != std::string::npos; i++) p = text.find(' ', p + 1);
  return text.substr(0, p);
}

}  // namespace

nlohmann::ordered_json machine_json() {
  const KernelInfo& k = kernels_info();
  nlohmann::ordered_json j;
  j["cpu"] = k.cpu.empty() ? "unknown" : k.cpu;
  j["cores"] = hardware_threads();
  j["vector_isa"] = k.vector_isa;
  j["avx512_vnni"] = k.avx512_vnni;
  j["avx512_bf16"] = k.avx512_bf16;
  j["blas"] = k.blas;
  j["blas_kernels"] = k.blas_family;
  j["blas_kernels_chosen_by"] = k.blas_family_source;
  j["ternary_kernels"] = k.ternary;
  j["loadavg"] = load_average();
  return j;
}

}  // namespace bk
