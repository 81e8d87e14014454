#include "train/lm_data.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/rng.h"

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

}  // namespace bk
