#include "tokenizer/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdio>
#include <cstring>
#include <unordered_map>

#include "core/fs.h"
#include "core/log.h"
#include "tokenizer/bpe.h"
#include "tokenizer/spm_model.h"

// Exported by libsentencepiece but declared only in its internal logging.h:
// the trainer logs every EM iteration at INFO, which we hide unless DEBUG.
namespace sentencepiece {
namespace logging {
int GetMinLogLevel();
void SetMinLogLevel(int v);
}  // namespace logging
}  // namespace sentencepiece

namespace bk {

namespace spm = sentencepiece;

struct TokenizerImpl {
  spm::SentencePieceProcessor sp;    // the model as shipped
  spm::SentencePieceProcessor cont;  // same model, no dummy prefix, whitespace kept
  std::string path;
  std::string bytes;
  std::string hash;
  bool dummy_prefix = true;
  bool byte_fallback = false;
  int32_t byte_ids[256];
  // tokenizer.json models: the BPE model replaces the processors above.
  std::unique_ptr<BpeModel> bpe;
  std::string chat_template;
  std::string kind = "sentencepiece";
};

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

// ---------------------------------------------------------------------------
// SHA-256 (FIPS 180-4).

namespace {

const uint32_t k_sha_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

void sha256_block(uint32_t h[8], const uint8_t* p) {
  uint32_t w[64];
  for (int i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
  for (int i = 0; i < 64; i++) {
    uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k_sha_k[i] + w[i];
    uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    hh = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
  }
  h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
}

}  // namespace

std::string sha256_hex(const std::string& data) {
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  const uint8_t* p = (const uint8_t*)data.data();
  size_t n = data.size(), full = n / 64 * 64;
  for (size_t i = 0; i < full; i += 64) sha256_block(h, p + i);
  uint8_t tail[128] = {0};
  size_t rem = n - full;
  memcpy(tail, p + full, rem);
  tail[rem] = 0x80;
  size_t tail_len = rem + 9 <= 64 ? 64 : 128;
  uint64_t bits = (uint64_t)n * 8;
  for (int i = 0; i < 8; i++) tail[tail_len - 1 - i] = (uint8_t)(bits >> (8 * i));
  for (size_t i = 0; i < tail_len; i += 64) sha256_block(h, tail + i);
  static const char* hex = "0123456789abcdef";
  std::string out(64, '0');
  for (int i = 0; i < 8; i++)
    for (int j = 0; j < 8; j++) out[i * 8 + j] = hex[(h[i] >> (28 - 4 * j)) & 15];
  return out;
}

namespace {

std::string sp_error(const spm::util::Status& s) { return s.ToString(); }

Status load_impl(const std::string& bytes, const std::string& path, Tokenizer* out) {
  const std::string where = path.empty() ? std::string("tokenizer bytes") : path;
  auto impl = std::make_unique<TokenizerImpl>();
  spm::util::Status st = impl->sp.LoadFromSerializedProto(bytes);
  if (!st.ok())
    return errorf("%s: not a SentencePiece model (%s); pass a tokenizer.model file", where.c_str(),
                  sp_error(st).c_str());
  // SentencePiece does not expose the normalizer's add_dummy_prefix flag.
  SpmVocab v;
  BK_TRY(with_context(spm_parse_model(bytes, &v), where));
  impl->dummy_prefix = v.add_dummy_prefix;
  // Protobuf merges repeated occurrences of a message field, last scalar
  // wins: appending normalizer_spec{add_dummy_prefix=false,
  // remove_extra_whitespaces=false} overrides just those two flags.
  static const char k_patch[] = {0x1a, 0x04, 0x18, 0x00, 0x20, 0x00};
  std::string patched = bytes + std::string(k_patch, sizeof k_patch);
  st = impl->cont.LoadFromSerializedProto(patched);
  if (!st.ok()) return errorf("%s: cannot build the continuation encoder (%s)", where.c_str(), sp_error(st).c_str());
  for (int i = 0; i < 256; i++) impl->byte_ids[i] = -1;
  int n = impl->sp.GetPieceSize();
  for (int id = 0; id < n; id++) {
    if (!impl->sp.IsByte(id)) continue;
    const std::string& p = impl->sp.IdToPiece(id);  // "<0xAB>"
    unsigned v = 0;
    if (p.size() == 6 && sscanf(p.c_str(), "<0x%2X>", &v) == 1 && v < 256) impl->byte_ids[v] = id;
  }
  impl->byte_fallback = impl->byte_ids[0] >= 0 || impl->byte_ids[0x41] >= 0;
  impl->bytes = bytes;
  impl->path = path;
  impl->hash = sha256_hex(bytes);
  out->impl = std::move(impl);
  return ok_status();
}

const std::string k_empty;

}  // namespace

namespace {

// tokenizer.json, with tokenizer_config.json from the same folder when present.
Status load_hf_json(const std::string& bytes, const std::string& path, Tokenizer* out) {
  std::string cfg;
  const std::string cfg_path = path_join(path_dirname(path), "tokenizer_config.json");
  if (file_exists(cfg_path)) BK_TRY(read_file(cfg_path, &cfg));
  auto impl = std::make_unique<TokenizerImpl>();
  impl->bpe = std::make_unique<BpeModel>();
  BK_TRY(bpe_from_hf_json(bytes, cfg, path, impl->bpe.get(), &impl->chat_template));
  const BpeModel& m = *impl->bpe;
  impl->kind = m.byte_level ? "hf-bytelevel-bpe" : "hf-sentencepiece-bpe";
  impl->dummy_prefix = !m.prepend.empty();
  impl->byte_fallback = m.byte_level || m.byte_fallback;
  for (int i = 0; i < 256; i++) impl->byte_ids[i] = m.byte_ids[i];
  impl->bytes = bytes;
  impl->path = path;
  // The config decides BOS/EOS and the chat template, so it is part of the identity.
  impl->hash = cfg.empty() ? sha256_hex(bytes) : sha256_hex(bytes + cfg);
  out->impl = std::move(impl);
  return ok_status();
}

}  // namespace

Status tokenizer_load(const std::string& path_in, Tokenizer* out) {
  std::string bytes, path = path_in;
  // A model folder: its tokenizer.json, else its tokenizer.model.
  if (file_exists(path_join(path, "tokenizer.json"))) path = path_join(path, "tokenizer.json");
  else if (file_exists(path_join(path, "tokenizer.model"))) path = path_join(path, "tokenizer.model");
  if (!file_exists(path))
    return errorf("tokenizer %s does not exist (set TOKENIZER_NAME to a SentencePiece tokenizer.model or a "
                  "tokenizer.json, or train one with `bitkd tokenizer train`)",
                  path.c_str());
  BK_TRY(read_file(path, &bytes));
  size_t first = bytes.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && bytes[first] == '{') return load_hf_json(bytes, path, out);
  return load_impl(bytes, path, out);
}

Status tokenizer_load_from_bytes(const std::string& model_bytes, Tokenizer* out) {
  return load_impl(model_bytes, "", out);
}

bool tokenizer_loaded(const Tokenizer& t) { return t.impl != nullptr; }

const char* tokenizer_kind(const Tokenizer& t) { return t.impl->kind.c_str(); }
const std::string& tokenizer_chat_template(const Tokenizer& t) { return t.impl ? t.impl->chat_template : k_empty; }

int32_t tokenizer_vocab_size(const Tokenizer& t) {
  return t.impl->bpe ? (int32_t)t.impl->bpe->pieces.size() : t.impl->sp.GetPieceSize();
}
int32_t tokenizer_bos_id(const Tokenizer& t) { return t.impl->bpe ? t.impl->bpe->bos_id : t.impl->sp.bos_id(); }
int32_t tokenizer_eos_id(const Tokenizer& t) { return t.impl->bpe ? t.impl->bpe->eos_id : t.impl->sp.eos_id(); }
int32_t tokenizer_unk_id(const Tokenizer& t) { return t.impl->bpe ? t.impl->bpe->unk_id : t.impl->sp.unk_id(); }
static int32_t own_pad(const Tokenizer& t) { return t.impl->bpe ? t.impl->bpe->pad_id : t.impl->sp.pad_id(); }
bool tokenizer_has_own_pad(const Tokenizer& t) { return own_pad(t) >= 0; }
int32_t tokenizer_pad_id(const Tokenizer& t) {
  int p = own_pad(t);
  if (p >= 0) return p;
  p = tokenizer_eos_id(t);
  if (p >= 0) return p;
  p = tokenizer_unk_id(t);
  return p >= 0 ? p : 0;  // byte-level models may have neither: any row will do
}
bool tokenizer_adds_dummy_prefix(const Tokenizer& t) { return t.impl->dummy_prefix; }
bool tokenizer_has_byte_fallback(const Tokenizer& t) { return t.impl->byte_fallback; }
const std::string& tokenizer_hash(const Tokenizer& t) { return t.impl ? t.impl->hash : k_empty; }
const std::string& tokenizer_path(const Tokenizer& t) { return t.impl ? t.impl->path : k_empty; }
const std::string& tokenizer_model_bytes(const Tokenizer& t) { return t.impl ? t.impl->bytes : k_empty; }

static Status encode_with(const spm::SentencePieceProcessor& sp, const std::string& text, std::vector<int32_t>* ids) {
  std::vector<int> tmp;
  spm::util::Status st = sp.Encode(text, &tmp);
  if (!st.ok()) return errorf("tokenizer: cannot encode text of %zu bytes: %s", text.size(), sp_error(st).c_str());
  ids->insert(ids->end(), tmp.begin(), tmp.end());
  return ok_status();
}

Status tokenizer_encode(const Tokenizer& t, const std::string& text, bool add_bos, std::vector<int32_t>* ids) {
  ids->clear();
  if (t.impl->bpe) {
    BK_TRY(bpe_encode(*t.impl->bpe, text, false, ids, nullptr));
    if (add_bos && t.impl->bpe->bos_id >= 0) ids->insert(ids->begin(), t.impl->bpe->bos_id);
    return ok_status();
  }
  if (add_bos && t.impl->sp.bos_id() >= 0) ids->push_back(t.impl->sp.bos_id());
  return encode_with(t.impl->sp, text, ids);
}

Status tokenizer_encode_continuation(const Tokenizer& t, const std::string& text, std::vector<int32_t>* ids) {
  ids->clear();
  if (t.impl->bpe) return bpe_encode(*t.impl->bpe, text, true, ids, nullptr);
  return encode_with(t.impl->cont, text, ids);
}

Status tokenizer_encode_with_spans(const Tokenizer& t, const std::string& text, std::vector<int32_t>* ids,
                                   std::vector<TokenSpan>* spans) {
  ids->clear();
  spans->clear();
  if (t.impl->bpe) {
    std::vector<BpeSpan> bs;
    BK_TRY(bpe_encode(*t.impl->bpe, text, false, ids, &bs));
    for (const BpeSpan& b : bs) spans->push_back(TokenSpan{b.begin, b.end});
    return ok_status();
  }
  spm::ImmutableSentencePieceText spt;
  spm::util::Status st = t.impl->sp.Encode(text, spt.mutable_proto());
  if (!st.ok()) return errorf("tokenizer: cannot encode text of %zu bytes: %s", text.size(), sp_error(st).c_str());
  size_t n = spt.pieces_size();
  ids->reserve(n);
  spans->reserve(n);
  for (size_t i = 0; i < n; i++) {
    auto p = spt.pieces((int)i);
    ids->push_back((int32_t)p.id());
    TokenSpan s;
    s.begin = (int32_t)p.begin();
    s.end = (int32_t)p.end();
    spans->push_back(s);
  }
  // SentencePiece gives the byte-fallback pieces of one character empty spans
  // except the last, which spans the whole character. Alignment needs where
  // each token starts, so give each byte piece its own byte when the bytes are
  // the character's own (identity normalization), else the whole span to the
  // first piece.
  for (size_t i = 0; i < n;) {
    if (!t.impl->sp.IsByte((*ids)[i])) {
      i++;
      continue;
    }
    size_t j = i;
    int32_t b = (*spans)[i].begin, e = (*spans)[i].end;
    while (j + 1 < n && t.impl->sp.IsByte((*ids)[j + 1]) && (*spans)[j + 1].begin == b && (*spans)[j].end == b) {
      j++;
      e = (*spans)[j].end;
    }
    size_t k = j - i + 1;
    for (size_t m = i; m <= j; m++) {
      if ((size_t)(e - b) == k) {
        (*spans)[m].begin = b + (int32_t)(m - i);
        (*spans)[m].end = b + (int32_t)(m - i) + 1;
      } else {
        (*spans)[m].begin = m == i ? b : e;
        (*spans)[m].end = e;
      }
    }
    i = j + 1;
  }
  return ok_status();
}

Status tokenizer_decode_all(const Tokenizer& t, const std::vector<int32_t>& ids, std::string* text) {
  if (t.impl->bpe) return bpe_decode(*t.impl->bpe, ids, false, text);
  return tokenizer_decode(t, ids, text);
}

Status tokenizer_decode(const Tokenizer& t, const std::vector<int32_t>& ids, std::string* text) {
  if (t.impl->bpe) return bpe_decode(*t.impl->bpe, ids, true, text);
  std::vector<int> tmp(ids.begin(), ids.end());
  int n = t.impl->sp.GetPieceSize();
  for (int id : tmp)
    if (id < 0 || id >= n) return errorf("tokenizer: id %d is outside the vocabulary [0, %d)", id, n);
  spm::util::Status st = t.impl->sp.Decode(tmp, text);
  if (!st.ok()) return errorf("tokenizer: cannot decode %zu ids: %s", ids.size(), sp_error(st).c_str());
  return ok_status();
}

std::string tokenizer_piece(const Tokenizer& t, int32_t id) {
  if (t.impl->bpe) return id >= 0 && id < (int32_t)t.impl->bpe->pieces.size() ? t.impl->bpe->pieces[id] : "";
  if (id < 0 || id >= t.impl->sp.GetPieceSize()) return "";
  return t.impl->sp.IdToPiece(id);
}

std::string tokenizer_token_bytes(const Tokenizer& t, int32_t id) {
  if (t.impl->bpe) return bpe_token_bytes(*t.impl->bpe, id);
  if (id < 0 || id >= t.impl->sp.GetPieceSize()) return "";
  const spm::SentencePieceProcessor& sp = t.impl->sp;
  if (sp.IsControl(id) || sp.IsUnknown(id)) return "";
  const std::string& p = sp.IdToPiece(id);
  if (sp.IsByte(id)) {
    unsigned v = 0;
    if (sscanf(p.c_str(), "<0x%2X>", &v) == 1) return std::string(1, (char)v);
    return "";
  }
  static const char k_ws[] = "\xe2\x96\x81";  // U+2581, SentencePiece's visible space
  std::string out;
  out.reserve(p.size());
  for (size_t i = 0; i < p.size();) {
    if (p.compare(i, 3, k_ws) == 0) {
      out.push_back(' ');
      i += 3;
    } else {
      out.push_back(p[i++]);
    }
  }
  return out;
}

int32_t tokenizer_piece_to_id(const Tokenizer& t, const std::string& piece) {
  if (t.impl->bpe) {
    auto it = t.impl->bpe->vocab.find(piece);
    return it == t.impl->bpe->vocab.end() ? -1 : it->second;
  }
  int id = t.impl->sp.PieceToId(piece);
  if (id < 0) return -1;
  // PieceToId maps unknown pieces to UNK; only a real match counts.
  if (t.impl->sp.IdToPiece(id) != piece) return -1;
  return id;
}

int32_t tokenizer_byte_id(const Tokenizer& t, uint8_t byte) { return t.impl->byte_ids[byte]; }
static bool bpe_kind_is(const Tokenizer& t, int32_t id, int kind) {
  const BpeModel& m = *t.impl->bpe;
  return id >= 0 && id < (int32_t)m.kinds.size() && m.kinds[id] == kind;
}
bool tokenizer_is_byte(const Tokenizer& t, int32_t id) {
  if (t.impl->bpe) return bpe_kind_is(t, id, BPE_BYTE);
  return id >= 0 && id < t.impl->sp.GetPieceSize() && t.impl->sp.IsByte(id);
}
bool tokenizer_is_control(const Tokenizer& t, int32_t id) {
  if (t.impl->bpe) return bpe_kind_is(t, id, BPE_SPECIAL);
  return id >= 0 && id < t.impl->sp.GetPieceSize() && t.impl->sp.IsControl(id);
}
bool tokenizer_is_unknown(const Tokenizer& t, int32_t id) {
  if (t.impl->bpe) return bpe_kind_is(t, id, BPE_UNKNOWN);
  return id >= 0 && id < t.impl->sp.GetPieceSize() && t.impl->sp.IsUnknown(id);
}

// ---------------------------------------------------------------------------
// Training.

namespace {

// Feeds in-memory texts, then the lines of each input file.
struct TrainIterator : spm::SentenceIterator {
  const TokenizerTrainOptions* opt;
  size_t text_i = 0, file_i = 0;
  std::string file_data;
  size_t line_pos = 0;
  std::string cur;
  bool finished = false;
  spm::util::Status st;

  explicit TrainIterator(const TokenizerTrainOptions* o) : opt(o) { Next(); }
  bool done() const override { return finished; }
  const std::string& value() const override { return cur; }
  spm::util::Status status() const override { return st; }
  void Next() override {
    while (true) {
      if (text_i < opt->texts.size()) {
        cur = opt->texts[text_i++];
        if (cur.empty()) continue;
        return;
      }
      if (line_pos < file_data.size()) {
        size_t nl = file_data.find('\n', line_pos);
        if (nl == std::string::npos) nl = file_data.size();
        cur = file_data.substr(line_pos, nl - line_pos);
        line_pos = nl + 1;
        if (!cur.empty() && cur.back() == '\r') cur.pop_back();
        if (cur.empty()) continue;
        return;
      }
      if (file_i < opt->input_files.size()) {
        file_data.clear();
        line_pos = 0;
        Status s = read_file(opt->input_files[file_i], &file_data);
        file_i++;
        if (!s.ok()) {
          st = spm::util::Status(spm::util::StatusCode::kNotFound, s.msg);
          finished = true;
          return;
        }
        continue;
      }
      finished = true;
      return;
    }
  }
};

}  // namespace

Status tokenizer_train(const TokenizerTrainOptions& opt, std::string* model_path) {
  if (opt.out_prefix.empty()) return errorf("tokenizer train: an output prefix is required (--out)");
  if (opt.model_type != "unigram" && opt.model_type != "bpe")
    return errorf("tokenizer train: model type '%s' is not supported (use unigram or bpe)", opt.model_type.c_str());
  if (opt.vocab_size < 300 && opt.byte_fallback)
    return errorf("tokenizer train: vocab size %d is too small for byte fallback (256 byte pieces + specials); use "
                  ">= 300",
                  opt.vocab_size);
  if (opt.vocab_size < 8) return errorf("tokenizer train: vocab size %d is too small", opt.vocab_size);
  if (opt.texts.empty() && opt.input_files.empty())
    return errorf("tokenizer train: no training text (give --input files or --tasks N)");
  for (const std::string& f : opt.input_files)
    if (!file_exists(f)) return errorf("tokenizer train: input file %s does not exist", f.c_str());
  std::string syms;
  for (const std::string& s : opt.user_symbols) {
    if (s.empty()) continue;
    if (s.find(',') != std::string::npos)
      return errorf("tokenizer train: user symbol '%s' contains a comma (not supported by SentencePiece)", s.c_str());
    if (!syms.empty()) syms += ",";
    syms += s;
  }
  std::unordered_map<std::string, std::string> kw = {
      // No model_prefix: the model comes back in memory and we write it atomically.
      {"vocab_size", std::to_string(opt.vocab_size)},
      {"model_type", opt.model_type},
      {"character_coverage", std::to_string(opt.character_coverage)},
      {"byte_fallback", opt.byte_fallback ? "true" : "false"},
      {"split_digits", opt.split_digits ? "true" : "false"},
      {"hard_vocab_limit", opt.hard_vocab_limit ? "true" : "false"},
      {"normalization_rule_name", opt.normalization},
      {"remove_extra_whitespaces", opt.remove_extra_whitespaces ? "true" : "false"},
      {"add_dummy_prefix", opt.add_dummy_prefix ? "true" : "false"},
      {"allow_whitespace_only_pieces", "true"},
      {"split_by_whitespace", "true"},
      {"num_threads", "1"},
      {"input_sentence_size", "0"},
      {"shuffle_input_sentence", "false"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", opt.pad_piece ? "3" : "-1"},
      {"max_sentence_length", "16384"},
  };
  if (!syms.empty()) kw["user_defined_symbols"] = syms;
  spm::SetRandomGeneratorSeed((unsigned int)(opt.seed & 0x7fffffffu));
  int old_level = spm::logging::GetMinLogLevel();
  if (log_get_level() > LOG_DEBUG) spm::logging::SetMinLogLevel(1);
  TrainIterator it(&opt);
  std::string proto;
  spm::util::Status st = spm::SentencePieceTrainer::Train(kw, &it, &proto);
  spm::logging::SetMinLogLevel(old_level);
  if (!st.ok()) return errorf("tokenizer train: %s", sp_error(st).c_str());
  if (proto.empty()) return errorf("tokenizer train: the trainer returned no model");

  Tokenizer tok;
  BK_TRY(tokenizer_load_from_bytes(proto, &tok));
  std::string vocab;
  int n = tok.impl->sp.GetPieceSize();
  for (int id = 0; id < n; id++) {
    char score[32];
    snprintf(score, sizeof score, "%g", tok.impl->sp.GetScore(id));
    std::string piece = tok.impl->sp.IdToPiece(id);
    if (piece == "\n") piece = "\\n";  // keep the .vocab file one piece per line
    vocab += piece + "\t" + score + "\n";
  }
  std::string dir = path_dirname(opt.out_prefix);
  if (!dir.empty() && dir != ".") BK_TRY(make_dirs(dir));
  std::string path = opt.out_prefix + ".model";
  BK_TRY(write_file_atomic(path, proto));
  BK_TRY(write_file_atomic(opt.out_prefix + ".vocab", vocab));
  if (model_path) *model_path = path;
  return ok_status();
}

}  // namespace bk
