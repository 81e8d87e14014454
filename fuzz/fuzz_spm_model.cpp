// libFuzzer target: the SentencePiece ModelProto reader (tokenizer/spm_model),
// what tokenizer files and GGUF exports are read with. A model that parses is
// serialized and parsed again: the second parse must succeed.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "tokenizer/spm_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bk::SpmVocab v;
  if (!bk::spm_parse_model(std::string((const char*)data, size), &v).ok()) return 0;
  bk::SpmVocab again;
  if (!bk::spm_parse_model(bk::spm_serialize_model(v), &again).ok()) abort();
  return 0;
}
