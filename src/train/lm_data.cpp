#include "train/lm_data.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/fs.h"
#include "core/rng.h"
#include "tokenizer/chat_template.h"

namespace bk {

void lm_init(LmDataset* d, int seq, int pad_id, uint64_t seed) {
  *d = LmDataset();
  d->seq = seq;
  d->pad_id = pad_id;
  d->seed = seed;
}

static void add_row(LmDataset* d, const int32_t* ids, const uint8_t* target, int len) {
  d->row_begin.push_back(d->ids.size());
  d->row_len.push_back(len);
  d->ids.insert(d->ids.end(), ids, ids + len);
  d->target.insert(d->target.end(), target, target + len);
}

void lm_add_stream(LmDataset* d, const std::vector<int32_t>& ids) {
  const size_t n = ids.size();
  std::vector<uint8_t> tgt((size_t)d->seq + 1, 1);
  tgt[0] = 0;  // the first token of a window is only context
  for (size_t s = 0; s + 1 < n; s += (size_t)d->seq) {
    int len = (int)std::min<size_t>((size_t)d->seq + 1, n - s);
    if (len < 2) break;
    add_row(d, ids.data() + s, tgt.data(), len);
  }
}

void lm_add_example(LmDataset* d, const std::vector<int32_t>& ids, const std::vector<uint8_t>& target) {
  if (ids.size() < 2) return;
  int len = (int)ids.size();
  if (len > d->seq + 1) {
    len = d->seq + 1;
    d->truncated++;
  }
  add_row(d, ids.data(), target.data(), len);
}

size_t lm_num_rows(const LmDataset& d) { return d.row_len.size(); }

long long lm_num_targets(const LmDataset& d) {
  long long n = 0;
  for (size_t r = 0; r < d.row_len.size(); r++)
    for (int t = 1; t < d.row_len[r]; t++) n += d.target[d.row_begin[r] + t] != 0;
  return n;
}

// Rows in a fixed, seed- and epoch-dependent order.
static void make_perm(LmDataset* d) {
  const size_t n = d->row_len.size();
  d->perm.resize(n);
  for (size_t i = 0; i < n; i++) d->perm[i] = (uint32_t)i;
  Rng r;
  rng_seed(&r, d->seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(d->epoch + 1)));
  for (size_t i = n; i > 1; i--) std::swap(d->perm[i - 1], d->perm[rng_below(&r, i)]);
}

Status lm_next_batch(LmDataset* d, int batch, Batch* b) {
  if (d->row_len.empty()) return errorf("training data is empty (no sequence of at least 2 tokens)");
  if (d->perm.size() != d->row_len.size()) make_perm(d);
  batch_resize(b, batch, d->seq);
  for (int r = 0; r < batch; r++) {
    if (d->cursor >= d->perm.size()) {
      d->epoch++;
      d->cursor = 0;
      make_perm(d);
    }
    const uint32_t row = d->perm[d->cursor++];
    const int32_t* ids = d->ids.data() + d->row_begin[row];
    const uint8_t* tgt = d->target.data() + d->row_begin[row];
    const int len = d->row_len[row];
    for (int t = 0; t < d->seq; t++) {
      const size_t i = (size_t)r * d->seq + t;
      if (t < len - 1) {
        b->tokens[i] = ids[t];
        b->key_mask[i] = 1;
        b->targets[i] = ids[t + 1];
        if (tgt[t + 1]) {
          b->weights[i] = 1.0f;
          b->real_tokens++;
        }
      } else {
        b->tokens[i] = d->pad_id;
      }
    }
  }
  return ok_status();
}

static uint64_t checksum(const LmDataset& d) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over ids, flags and row lengths
  auto mix = [&](uint64_t v) {
    h ^= v;
    h *= 1099511628211ull;
  };
  for (size_t i = 0; i < d.ids.size(); i++) mix((uint64_t)(uint32_t)d.ids[i] * 2 + d.target[i]);
  for (int32_t l : d.row_len) mix((uint64_t)l);
  return h;
}

std::string lm_position_json(const LmDataset& d) {
  nlohmann::ordered_json j;
  j["epoch"] = d.epoch;
  j["cursor"] = d.cursor;
  j["rows"] = d.row_len.size();
  j["checksum"] = std::to_string(checksum(d));
  return j.dump();
}

Status lm_restore_position(LmDataset* d, const std::string& json) {
  try {
    nlohmann::json j = nlohmann::json::parse(json);
    size_t rows = j.at("rows").get<size_t>();
    std::string sum = j.at("checksum").get<std::string>();
    if (rows != d->row_len.size() || sum != std::to_string(checksum(*d)))
      return errorf("the training data differs from the checkpoint's (%zu rows then, %zu now, or different tokens): "
                    "resume with the same --data, --tokenizer and --seq, or start a new run",
                    rows, d->row_len.size());
    d->epoch = j.at("epoch").get<long>();
    d->cursor = j.at("cursor").get<size_t>();
  } catch (const std::exception& e) {
    return errorf("data position '%s' is not from `bitkd pretrain` (%s)", json.c_str(), e.what());
  }
  make_perm(d);
  return ok_status();
}

// ---- files -------------------------------------------------------------------

// Plain text: one token stream (BOS, the text, EOS). Encoded in pieces cut at
// line ends so huge files do not go through SentencePiece in one call; pieces
// after the first are continuations (no dummy-prefix space is inserted).
Status lm_load_text(const std::string& path, const Tokenizer& tok, LmDataset* d) {
  std::string text;
  BK_TRY(read_file(path, &text));
  if (text.empty()) return errorf("%s is empty", path.c_str());
  std::vector<int32_t> all, ids;
  const size_t piece = 1 << 16;
  size_t pos = 0;
  bool first = true;
  while (pos < text.size()) {
    size_t end = std::min(text.size(), pos + piece);
    if (end < text.size()) {
      size_t nl = text.find('\n', end);
      end = nl == std::string::npos ? text.size() : nl + 1;
    }
    std::string chunk = text.substr(pos, end - pos);
    if (first) BK_TRY(with_context(tokenizer_encode(tok, chunk, true, &ids), path));
    else BK_TRY(with_context(tokenizer_encode_continuation(tok, chunk, &ids), path));
    all.insert(all.end(), ids.begin(), ids.end());
    first = false;
    pos = end;
  }
  if (tokenizer_eos_id(tok) >= 0) all.push_back(tokenizer_eos_id(tok));
  lm_add_stream(d, all);
  return ok_status();
}

// JSONL: {"prompt": ..., "response": ...} per line (or {"text": ...} for a
// plain document, all tokens learned). Errors name the file and line.
Status lm_load_jsonl(const std::string& path, const Tokenizer& tok, const std::string& tmpl, LmDataset* d) {
  std::string text;
  BK_TRY(read_file(path, &text));
  size_t pos = 0;
  int line_no = 0, examples = 0;
  const int32_t eos = tokenizer_eos_id(tok);
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    line_no++;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      return errorf("%s:%d: not valid JSON (%s)", path.c_str(), line_no, e.what());
    }
    if (!j.is_object()) return errorf("%s:%d: expected a JSON object", path.c_str(), line_no);
    std::vector<int32_t> ids, resp;
    std::vector<uint8_t> target;
    if (j.contains("prompt") || j.contains("response")) {
      if (!j.contains("prompt") || !j["prompt"].is_string() || !j.contains("response") || !j["response"].is_string())
        return errorf("%s:%d: \"prompt\" and \"response\" must both be strings", path.c_str(), line_no);
      std::string rendered;
      BK_TRY(template_render(tmpl, j["prompt"].get<std::string>(), &rendered));
      BK_TRY(with_context(tokenizer_encode(tok, rendered, true, &ids), path + ":" + std::to_string(line_no)));
      BK_TRY(with_context(tokenizer_encode_continuation(tok, j["response"].get<std::string>(), &resp),
                          path + ":" + std::to_string(line_no)));
      target.assign(ids.size(), 0);
      ids.insert(ids.end(), resp.begin(), resp.end());
      if (eos >= 0) ids.push_back(eos);
      target.resize(ids.size(), 1);
    } else if (j.contains("text") && j["text"].is_string()) {
      BK_TRY(with_context(tokenizer_encode(tok, j["text"].get<std::string>(), true, &ids),
                          path + ":" + std::to_string(line_no)));
      if (eos >= 0) ids.push_back(eos);
      target.assign(ids.size(), 1);
      target[0] = 0;
    } else {
      return errorf("%s:%d: expected {\"prompt\": ..., \"response\": ...} or {\"text\": ...}", path.c_str(),
                    line_no);
    }
    lm_add_example(d, ids, target);
    examples++;
  }
  if (examples == 0) return errorf("%s has no examples", path.c_str());
  return ok_status();
}

static bool has_suffix(const std::string& s, const char* suf) {
  const size_t n = strlen(suf);
  return s.size() >= n && s.compare(s.size() - n, n, suf) == 0;
}

Status lm_load_file(const std::string& path, std::string* format, const Tokenizer& tok, const std::string& tmpl,
                    LmDataset* d) {
  if (*format == "auto") *format = (has_suffix(path, ".jsonl") || has_suffix(path, ".json")) ? "jsonl" : "text";
  if (*format == "jsonl") return lm_load_jsonl(path, tok, tmpl, d);
  if (*format == "text") return lm_load_text(path, tok, d);
  return errorf("--format '%s' is unknown: use auto, text or jsonl", format->c_str());
}

}  // namespace bk
