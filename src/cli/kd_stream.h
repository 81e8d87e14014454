#pragma once
// KD training batches for `bitkd train`: the aligned loader (data/loader)
// opened from the configuration, looping, with every batch exactly
// [batch, seq] as the trainer's activations are sized, and its counters.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/loader/loader.h"
#include "io/config.h"
#include "tokenizer/tokenizer.h"

namespace bk {

// Settings on top of the loader's configuration (loader_options_from_config:
// KD_DATA_PATH/DATA_DIR, MAX_TOPK, KD_SHUFFLE_BUFFER, KD_SKIP_BAD_ROWS, ...).
struct KdStreamOptions {
  std::string data_dir;           // "" = from the configuration
  int batch = 4, seq = 256;       // every batch is exactly [batch, seq] (no trimming)
  uint64_t seed = 1234;
  bool allow_tokenizer_mismatch = false;
  int64_t start_batch = 0;        // resume: batches already consumed
};

struct KdStreamImpl;
struct KdStream {
  std::unique_ptr<KdStreamImpl> impl;
  KdStream();
  ~KdStream();
};

// Opens the loader: lists the shards and checks their tokenizer hash against
// the student's (an error naming both unless allow_tokenizer_mismatch).
// The tokenizer must outlive the stream.
Status kd_stream_open(const Config& cfg, const KdStreamOptions& o, const Tokenizer& student, KdStream* s);
// The next batch; the stream loops over the data (new order each epoch).
Status kd_stream_next(KdStream* s, LoaderBatch* out);
int64_t kd_stream_position(const KdStream& s);  // batches delivered (start_batch included)
const std::vector<std::string>& kd_stream_shards(const KdStream& s);
std::string kd_stream_data_dir(const KdStream& s);
int kd_stream_topk(const KdStream& s);
// The loader's counters as a JSON object / one log line.
std::string kd_stream_stats_json(const KdStream& s);
std::string kd_stream_stats_line(const KdStream& s);

// A pass over the step shards without alignment, to refuse data that cannot
// train before any work: no rows at all, or no valid step.
struct KdShardScan {
  int64_t shards = 0;
  int64_t rows = 0;        // readable step rows
  int64_t valid_rows = 0;  // rows with valid = true
  int64_t bad_rows = 0;    // unreadable rows skipped (NaN teacher values, bad list lengths)
  std::string first_bad;
};
Status kd_scan_shards(const std::vector<std::string>& shards, KdShardScan* out);

}  // namespace bk
