// libFuzzer target: safetensors files (io/safetensors): parse, then convert
// every small tensor to floats as the checkpoint loader does.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bk::SafeTensorsFile f;
  if (!bk::safetensors_parse(std::string((const char*)data, size), "fuzz.safetensors", &f).ok()) return 0;
  std::vector<float> buf;
  for (const bk::StTensor& t : f.tensors) {
    const size_t n = t.numel();
    if (n == 0 || n > (1 << 16)) continue;
    buf.resize(n);
    (void)bk::safetensors_get_f32(f, t.name, &t.shape, buf.data(), buf.size());
  }
  return 0;
}
