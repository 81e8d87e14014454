#pragma once
// The fields of a SentencePiece tokenizer.model (a serialized ModelProto) that
// bitkd reads: the vocabulary, the special ids and the normalizer flags. The
// tokenizer reads its flags here; GGUF export and import turn the vocabulary
// into llama.cpp tokenizer metadata and back.
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace bk {

struct SpmVocab {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<int32_t> types;  // SentencePiece / llama.cpp token types: 1 normal, 2 unknown,
                               // 3 control, 4 user-defined, 5 unused, 6 byte
  int model_type = 1;          // 1 unigram, 2 bpe, 3 word, 4 char
  int unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
  bool byte_fallback = false;
  std::string normalizer_name;       // "nmt_nfkc", "identity", ...
  std::string precompiled_charsmap;  // normalizer table (bytes)
};
// Parses a serialized SentencePiece ModelProto (protobuf wire format).
Status spm_parse_model(const std::string& bytes, SpmVocab* out);
// Serializes a vocabulary back to a ModelProto (identity normalizer with the
// given flags); used to rebuild a tokenizer from GGUF metadata.
std::string spm_serialize_model(const SpmVocab& v);

}  // namespace bk
