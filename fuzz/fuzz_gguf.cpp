// libFuzzer target: GGUF files (io/gguf). Parses, then reads every metadata
// accessor and converts every small tensor, as a model loader would.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "io/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bk::GgufFile f;
  if (!bk::gguf_parse(std::string((const char*)data, size), "fuzz.gguf", &f).ok()) return 0;
  for (const bk::GgufKv& kv : f.kv) {
    int64_t i;
    double d;
    bool b;
    std::string s;
    (void)bk::gguf_get_int(f, kv.key, &i, false);
    (void)bk::gguf_get_float(f, kv.key, &d, false);
    (void)bk::gguf_get_bool(f, kv.key, &b, false);
    (void)bk::gguf_get_str(f, kv.key, &s, false);
  }
  std::vector<float> buf;
  for (const bk::GgufTensorInfo& t : f.tensors) {
    const int64_t n = t.numel();
    if (n <= 0 || n > (1 << 16)) continue;
    buf.resize((size_t)n);
    (void)bk::gguf_tensor_to_f32(f, t, buf.data(), buf.size());
  }
  return 0;
}
