#pragma once
// BPE tokenizers as Hugging Face `tokenizers` defines them (tokenizer.json),
// written from the format's documentation: byte-level BPE (GPT-2, Llama 3,
// Qwen2/Qwen3) and SentencePiece-style BPE with byte fallback (Llama 2,
// Mistral). Internal to the tokenizer module; callers use tokenizer.h.
//
// Encoding, in the order the format applies it:
//   1. added tokens are split out of the raw text (leftmost, then longest);
//   2. each remaining segment is normalized (NFC, Prepend "▁", Replace);
//   3. pre-tokenized (a Split regex with Unicode categories, PCRE2);
//   4. each piece becomes symbols (bytes mapped through GPT-2's
//      bytes_to_unicode table, or UTF-8 characters with byte fallback) that
//      are merged pairwise, lowest merge rank first, leftmost on ties.
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/status.h"

namespace bk {

// GPT-2's reversible byte <-> character table: bytes 33..126, 161..172 and
// 174..255 are their own code point, the other 68 bytes get 256, 257, ...
// in byte order. Out: the UTF-8 string of the character for each byte.
void bpe_byte_to_unicode(std::string out[256]);

enum BpeTokenKind : uint8_t {
  BPE_NORMAL = 0,
  BPE_SPECIAL,  // added token with special: true (BOS, <|im_start|>): a control token
  BPE_ADDED,    // added token with special: false (Qwen's <think>): text, split out whole
  BPE_BYTE,     // byte-fallback piece <0xAB>
  BPE_UNKNOWN,
};

struct BpeRegex;  // a compiled PCRE2 pattern
struct BpeRegexDeleter {
  void operator()(BpeRegex* r) const;
};
// Compiles `pattern` with UTF and Unicode properties (\p{L}, \s = Unicode
// space). Errors name `where` and PCRE2's message.
Status bpe_regex_compile(const std::string& pattern, const std::string& where,
                         std::unique_ptr<BpeRegex, BpeRegexDeleter>* out);

struct BpeModel {
  std::vector<std::string> pieces;  // id -> vocabulary string
  std::vector<uint8_t> kinds;       // id -> BpeTokenKind
  std::unordered_map<std::string, int32_t> vocab;
  // (left id << 32 | right id) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;
  struct Added {
    std::string content;
    int32_t id;
  };
  std::vector<Added> added;  // longest content first
  bool added_first[256] = {};  // bytes an added token can start with

  bool byte_level = false;     // symbols are bytes in bytes_to_unicode form
  bool byte_fallback = false;  // unknown characters become <0xAB> pieces
  bool fuse_unk = false;
  bool ignore_merges = false;  // a piece found whole in the vocabulary is one token
  int32_t unk_id = -1;
  bool nfc = false;                 // NFC normalizer
  std::string prepend;              // "▁" (Prepend normalizer / Metaspace prepend)
  bool prepend_every_segment = false;  // Prepend normalizer: after each added token too
  std::string replace_from, replace_to;  // Replace normalizer (" " -> "▁")
  std::unique_ptr<BpeRegex, BpeRegexDeleter> split;  // pre-tokenizer; null = whole segment
  // Decoder of SentencePiece-style models: "▁" -> " ", then strip this many
  // leading spaces (Strip decoder).
  int strip_leading = 0;

  int32_t bos_id = -1, eos_id = -1, pad_id = -1;
  std::string byte_char[256];          // byte-level: the character of each byte
  int32_t byte_ids[256];               // the id that spells one byte, -1 if none
  std::unordered_map<std::string, uint8_t> char_byte;  // byte-level inverse table

  BpeModel();
};

struct BpeSpan {
  int32_t begin, end;
};

// Encodes `text`. continuation: no Prepend "▁" (the text follows earlier
// text). spans (may be null): each token's byte range in `text`.
Status bpe_encode(const BpeModel& m, const std::string& text, bool continuation, std::vector<int32_t>* ids,
                  std::vector<BpeSpan>* spans);
// Text of ids. skip_special: control tokens give "" (as BOS/EOS do in
// tokenizer_decode); otherwise their text is kept.
Status bpe_decode(const BpeModel& m, const std::vector<int32_t>& ids, bool skip_special, std::string* text);
// The bytes one token adds to a text ("" for control tokens).
std::string bpe_token_bytes(const BpeModel& m, int32_t id);

// Builds a model from tokenizer.json bytes (and tokenizer_config.json bytes,
// may be empty). `where` names the file in errors. chat_template receives the
// config's chat_template ("" when none).
Status bpe_from_hf_json(const std::string& json, const std::string& config_json, const std::string& where,
                        BpeModel* m, std::string* chat_template);
// Fills the derived tables (byte ids, inverse table) after pieces/kinds are set.
void bpe_finish(BpeModel* m);

}  // namespace bk
