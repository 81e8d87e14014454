#pragma once
// The tokenizer: one interface for
// - SentencePiece tokenizer.model files (Llama, TinyLlama, ours; trained here),
// - Hugging Face tokenizer.json files (+ tokenizer_config.json next to it):
//   byte-level BPE (GPT-2, Llama 3, Qwen2/Qwen3) and SentencePiece-style BPE
//   with byte fallback (Llama 2, Mistral); see docs/tokenizers.md.
// tokenizer_load picks the kind from the file's content. SentencePiece
// headers stay inside tokenizer.cpp.
//
// Two encodings matter for distillation:
// - tokenizer_encode: ordinary encoding of a whole text. With the model's
//   add_dummy_prefix (Llama: on) a "▁" is prepended, so "Hello" -> "▁Hello".
// - tokenizer_encode_continuation: the text continues earlier text, so no
//   dummy prefix is added and no whitespace is trimmed: "ing" -> "ing",
//   " Hello" -> "▁Hello". This is how teacher candidate strings are projected.
//   It uses a second processor loaded from the same model bytes with the
//   normalizer's add_dummy_prefix and remove_extra_whitespaces switched off.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"

namespace bk {

struct TokenizerImpl;

// RAII: owns the SentencePiece processors. Movable, not copyable.
struct Tokenizer {
  std::unique_ptr<TokenizerImpl> impl;
  Tokenizer();
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
};

// Byte span of one token in the encoded text: [begin, end). The dummy-prefix
// "▁" covers no input bytes (begin == end == 0). Byte-fallback pieces of one
// character get one byte each when normalization left the character's bytes
// unchanged (identity, Llama), else the first gets the whole character and the
// rest empty spans at its end.
struct TokenSpan {
  int32_t begin = 0;
  int32_t end = 0;
};

// Every function below except tokenizer_load*, tokenizer_loaded, tokenizer_hash,
// tokenizer_path and tokenizer_model_bytes requires a loaded tokenizer.
// Encoding is const and safe to call from several threads at once.
// `path`: a tokenizer.model, a tokenizer.json, or a folder holding one of
// them (tokenizer.json preferred).
Status tokenizer_load(const std::string& path, Tokenizer* out);
// From the bytes of a tokenizer.model (a serialized ModelProto).
Status tokenizer_load_from_bytes(const std::string& model_bytes, Tokenizer* out);
bool tokenizer_loaded(const Tokenizer& t);
// "sentencepiece", "hf-bytelevel-bpe" or "hf-sentencepiece-bpe".
const char* tokenizer_kind(const Tokenizer& t);
// The Jinja chat template the tokenizer's config ships ("" when none).
const std::string& tokenizer_chat_template(const Tokenizer& t);

int32_t tokenizer_vocab_size(const Tokenizer& t);
int32_t tokenizer_bos_id(const Tokenizer& t);  // -1 if the model has none
int32_t tokenizer_eos_id(const Tokenizer& t);  // -1 if the model has none
int32_t tokenizer_unk_id(const Tokenizer& t);
// The model's pad id; when it defines none (Llama: -1) the fallback is EOS
// (the usual choice for Llama), else UNK. Padded positions never carry a loss,
// so the fallback only has to be a valid embedding row.
int32_t tokenizer_pad_id(const Tokenizer& t);
bool tokenizer_has_own_pad(const Tokenizer& t);
// The normalizer's add_dummy_prefix flag (tokenizer.json: a "▁" Prepend) and
// whether every byte has a token (byte fallback, or a byte-level alphabet).
bool tokenizer_adds_dummy_prefix(const Tokenizer& t);
bool tokenizer_has_byte_fallback(const Tokenizer& t);

// SHA-256 of the model file bytes (tokenizer.json: followed by the
// tokenizer_config.json bytes), lower-case hex (64 chars). Shards record it
// so traces projected for one tokenizer are never trained on with another.
const std::string& tokenizer_hash(const Tokenizer& t);
// The path it was loaded from ("" when loaded from bytes).
const std::string& tokenizer_path(const Tokenizer& t);
// The raw model file bytes (to embed or copy the tokenizer; a tokenizer.json
// for the hf-* kinds).
const std::string& tokenizer_model_bytes(const Tokenizer& t);

Status tokenizer_encode(const Tokenizer& t, const std::string& text, bool add_bos, std::vector<int32_t>* ids);
// Encoding plus each token's byte span in `text` (no BOS; spans index `text`).
Status tokenizer_encode_with_spans(const Tokenizer& t, const std::string& text, std::vector<int32_t>* ids,
                                   std::vector<TokenSpan>* spans);
// See the header comment: no dummy prefix, whitespace kept as is.
Status tokenizer_encode_continuation(const Tokenizer& t, const std::string& text, std::vector<int32_t>* ids);
// Inverse of tokenizer_encode (control tokens such as BOS/EOS are dropped).
Status tokenizer_decode(const Tokenizer& t, const std::vector<int32_t>& ids, std::string* text);
// Same, keeping the text of control tokens that tokenizer.json models split
// out of the input ("<|im_start|>"), so decode(encode(s)) == s holds for them.
Status tokenizer_decode_all(const Tokenizer& t, const std::vector<int32_t>& ids, std::string* text);

// The piece string of an id ("▁Hello", "<0x0A>", "<s>"); "" when out of range.
std::string tokenizer_piece(const Tokenizer& t, int32_t id);
// The bytes this token adds to the text when it follows other tokens:
// "▁" becomes a space, "<0xE2>" the single byte 0xE2, control and unknown
// pieces give "" (what a server reports as a token's text/bytes).
std::string tokenizer_token_bytes(const Tokenizer& t, int32_t id);
// Exact piece lookup; -1 when the piece is not in the vocabulary (never UNK).
int32_t tokenizer_piece_to_id(const Tokenizer& t, const std::string& piece);
// The id that spells one byte: the byte-fallback piece, or a byte-level
// model's byte token; -1 when the model has neither.
int32_t tokenizer_byte_id(const Tokenizer& t, uint8_t byte);
bool tokenizer_is_byte(const Tokenizer& t, int32_t id);
bool tokenizer_is_control(const Tokenizer& t, int32_t id);
bool tokenizer_is_unknown(const Tokenizer& t, int32_t id);

// Training (SentencePiece's own trainer). Deterministic for fixed inputs,
// options and seed: one trainer thread, no sentence sampling.
struct TokenizerTrainOptions {
  std::vector<std::string> input_files;  // plain text, one sentence per line
  std::vector<std::string> texts;        // in-memory training texts (may hold newlines)
  int vocab_size = 4000;
  std::string model_type = "bpe";  // bpe | unigram
  std::string out_prefix;              // writes <out_prefix>.model and .vocab
  bool byte_fallback = true;
  // One token per digit: arithmetic stays learnable. (SentencePiece 0.1.97's
  // unigram trainer learns a much smaller vocabulary with it on: 630 of 2048
  // pieces on the task suite; BPE, Llama's choice, is unaffected.)
  bool split_digits = true;
  // Chat template markers and newline, kept as single tokens.
  std::vector<std::string> user_symbols = {"<|user|>", "<|assistant|>", "\n"};
  double character_coverage = 1.0;
  // Normalizer: Llama's choices by default (text passes through unchanged, so
  // JSON and code keep their whitespace; one dummy-prefix space at the start).
  std::string normalization = "identity";  // or nmt_nfkc, nfkc, ...
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = false;
  bool pad_piece = true;  // false: no <pad> (pad_id -1, like Llama)
  uint64_t seed = 1234;
  // false: a corpus too small for vocab_size yields a smaller vocabulary
  // instead of an error.
  bool hard_vocab_limit = false;
};
// Trains and writes <out_prefix>.model/.vocab atomically; *model_path (if not
// null) receives the .model path.
Status tokenizer_train(const TokenizerTrainOptions& opt, std::string* model_path);

// SHA-256 of a byte string, lower-case hex. Exposed for tests and for other
// modules that need a content hash.
std::string sha256_hex(const std::string& data);

}  // namespace bk
