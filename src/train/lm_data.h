#pragma once
// Language-model training data, already tokenized: rows of at most seq+1
// tokens with a per-token "is a training target" flag, served as shuffled
// micro-batches (a new permutation per epoch, derived from seed and epoch
// alone, so the position {epoch, cursor} is all a checkpoint needs).
//
// Sources: a token stream (plain text) cut into windows, or one row per
// prompt/response example with loss on the response only.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "tokenizer/tokenizer.h"
#include "train/trainer.h"

namespace bk {

struct LmDataset {
  int seq = 0;        // model inputs per row; rows hold up to seq+1 tokens
  int pad_id = 0;
  uint64_t seed = 0;
  std::vector<int32_t> ids;       // every row's tokens, concatenated
  std::vector<uint8_t> target;    // [ids.size()] 1 = predict this token (from the one before)
  std::vector<size_t> row_begin;  // into ids
  std::vector<int32_t> row_len;
  long truncated = 0;             // examples cut to seq+1 tokens
  // position
  long epoch = 0;
  size_t cursor = 0;
  std::vector<uint32_t> perm;     // permutation of rows for `epoch`
};

void lm_init(LmDataset* d, int seq, int pad_id, uint64_t seed);
// A continuous stream (plain text): windows of seq+1 tokens with stride seq,
// so each token is predicted once; a last window shorter than 2 tokens is dropped.
void lm_add_stream(LmDataset* d, const std::vector<int32_t>& ids);
// One example; target[t] = 1 where ids[t] should be learned. Longer than
// seq+1 tokens: cut (counted in d->truncated). Fewer than 2 tokens: skipped.
void lm_add_example(LmDataset* d, const std::vector<int32_t>& ids, const std::vector<uint8_t>& target);
size_t lm_num_rows(const LmDataset& d);
long long lm_num_targets(const LmDataset& d);

// Fills a [batch, seq] micro-batch (short rows padded with pad_id, mask 0).
Status lm_next_batch(LmDataset* d, int batch, Batch* b);
// {"epoch", "cursor", "rows", "checksum"}; restore refuses a different dataset.
std::string lm_position_json(const LmDataset& d);
Status lm_restore_position(LmDataset* d, const std::string& json);

// Files (`bitkd pretrain --data`). Plain text: one stream (BOS, the text,
// EOS). JSONL: {"prompt": ..., "response": ...} per line rendered with the
// chat template `tmpl`, loss on the response and EOS ({"text": ...}: every
// token). Errors name the file and line.
Status lm_load_text(const std::string& path, const Tokenizer& tok, LmDataset* d);
Status lm_load_jsonl(const std::string& path, const Tokenizer& tok, const std::string& tmpl, LmDataset* d);
// One of the two by *format: text, jsonl, or auto (.jsonl/.json: jsonl, else
// text), which becomes the one chosen.
Status lm_load_file(const std::string& path, std::string* format, const Tokenizer& tok, const std::string& tmpl,
                    LmDataset* d);

}  // namespace bk
