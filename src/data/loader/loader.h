#pragma once
// Training data loader for KD traces (docs/data_schema.md, "From traces to training examples"): streams
// kd_shard_NNN.parquet (steps) with its kd_prompts_NNN.parquet (prompts),
// groups steps by prompt_idx, aligns each prompt to the student tokenizer,
// shuffles within a buffer and emits padded or packed batches.
//
// Determinism: the batch sequence is a function of the files, the options
// and the seed. Resuming at a position (batches already consumed) replays the
// stream and drops that many batches, so a resumed run sees exactly the
// batches an uninterrupted run would have seen.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/align/align.h"
#include "tokenizer/tokenizer.h"

namespace bk {

struct LoaderOptions {
  // kd_shard_*.parquet with their kd_prompts_*.parquet beside them; several
  // directories separated by commas (one per trace source) are read in order.
  std::string data_dir;
  std::vector<std::string> shard_files;  // explicit step shards (override data_dir)
  int batch_size = 4;
  int max_seq_len = 256;
  int max_topk = 20;
  uint64_t seed = 1234;
  int shuffle_buffer = 1024;  // examples; <= 1 keeps file order (shards too)
  bool pack = false;          // several examples per row (segment ids keep them apart)
  bool trim_batch = true;     // Batch::T = longest row rounded up to 8 (else always max_seq_len)
  bool loop = true;           // start a new epoch (new order) at the end of the data
  bool skip_bad_rows = true;  // count and skip bad rows/prompts (false: the first one is an error)
  bool allow_tokenizer_mismatch = false;  // train on shards projected for another tokenizer
  // Shards without prompt rows (the PoC wrote none): the response is the
  // concatenated sampled texts, with no prompt. false: skip and count them.
  bool allow_missing_prompts = true;
  int64_t start_batch = 0;  // resume: batches already consumed
  // Trace sources to train on (KdPrompt::source: teacher_sample, reference,
  // on_policy); empty: all. On-policy examples carry no CE (the student's own
  // tokens are not targets), only the teacher's distribution.
  std::vector<std::string> sources;
  // Teacher samples the task scorer gave less than this are dropped (NaN
  // scores, i.e. no scorer, are kept); below 0: keep every sample.
  double sample_min_score = -1;
  // How often each source's examples are used per epoch (KD_SOURCE_WEIGHTS):
  // weight w gives floor(w) copies of an example plus one more with
  // probability frac(w), drawn from (seed, epoch, prompt_idx), so 0.5 keeps
  // about half of them and 2 shows each twice. Sources not named: 1.
  std::vector<std::pair<std::string, double>> source_weights;
  // CE weights per position (see AlignOptions); max_seq_len/max_topk above win.
  AlignOptions align;
};

// One batch; B rows of T positions, K top-K slots per position. (Named
// LoaderBatch: train/trainer.h has its own bk::Batch, and two different
// classes with one name in one program break the one-definition rule.)
struct LoaderBatch {
  int B = 0, T = 0, K = 0;
  std::vector<int32_t> tokens;       // [B*T] input ids; pad id in padding
  std::vector<int32_t> targets;      // [B*T] next-token id; -1: no loss (label mask = targets >= 0)
  std::vector<float> ce_weight;      // [B*T] CE weight (0 where targets is -1)
  std::vector<uint8_t> key_mask;     // [B*T] 1: a real token attention may look at; 0: padding
  std::vector<int32_t> segment;      // [B*T] example index within its row; -1 in padding
  std::vector<int32_t> position;     // [B*T] position within its example (RoPE); 0 in padding
  std::vector<uint8_t> kd_mask;      // [B*T] 1: KD buckets apply
  std::vector<uint8_t> is_struct;    // [B*T] structural teacher step (format loss)
  std::vector<int32_t> topk_ids;     // [B*T*K] student ids; -1: empty slot (ignore)
  std::vector<float> topk_logprobs;  // [B*T*K] teacher logprobs; 0 in empty slots
  std::vector<float> other_logprob;  // [B*T] teacher log mass of everything else; 0 without KD
  int64_t loss_tokens = 0;           // positions with a target or a KD bucket (real seen tokens)
  int64_t kd_positions = 0;
  int examples = 0;
  int64_t epoch = 0;  // epoch of the data in this batch
};

struct LoaderStats {
  int64_t shards_opened = 0;
  int64_t epochs_completed = 0;
  int64_t step_rows = 0;          // rows read from step shards
  int64_t bad_step_rows = 0;      // skipped by the shard reader (nulls, NaN, bad lengths)
  int64_t prompt_rows = 0;
  int64_t bad_prompt_rows = 0;
  int64_t prompts = 0;            // step groups seen
  int64_t prompts_used = 0;       // became examples
  int64_t prompts_missing_row = 0;  // no prompt row for the prompt_idx
  int64_t prompts_no_target = 0;    // nothing to learn inside max_seq_len (prompt too long, empty)
  int64_t prompts_error = 0;        // alignment failed
  int64_t prompts_filtered = 0;     // left out by the source or score filter
  int64_t examples_repeated = 0;    // extra copies from KD_SOURCE_WEIGHTS > 1
  int64_t examples_weighted_out = 0;  // left out by KD_SOURCE_WEIGHTS < 1 (this epoch's draw)
  int64_t prompts_split = 0;        // a prompt_idx whose steps are not contiguous in its shard
  int64_t offsets_derived = 0;      // prompts whose byte offsets came from the sampled texts
  int64_t tokenizer_mismatch_shards = 0;
  AlignStats align;
  int64_t examples = 0, batches = 0;
  std::string first_error;  // the first skipped problem, for the log
};
// "prompts=120 used=118 missing_row=2 ... steps=3000 aligned=2950 unaligned=..." on one line.
std::string loader_stats_line(const LoaderStats& s);

struct Config;
// Options from the configuration: KD_DATA_PATH (else DATA_DIR), TRAIN_BATCH_SIZE,
// MAX_SEQ_LEN, MAX_TOPK, SEED, KD_SHUFFLE_BUFFER, KD_PACK, KD_SKIP_BAD_ROWS,
// KD_ALLOW_TOKENIZER_MISMATCH, KD_CE_WEIGHT, FORMAT_LOSS_WEIGHT, KD_PLAIN_CE_WEIGHT,
// KD_SOURCES, KD_SAMPLE_MIN_SCORE, KD_SOURCE_WEIGHTS.
Status loader_options_from_config(const Config& c, LoaderOptions* o);

struct KdLoaderImpl;
struct KdLoader {
  std::unique_ptr<KdLoaderImpl> impl;
  KdLoader();
  ~KdLoader();
  KdLoader(KdLoader&&) noexcept;
  KdLoader& operator=(KdLoader&&) noexcept;
};

// Lists the shards, checks each one's tokenizer hash against the student's
// (an error unless allow_tokenizer_mismatch) and prepares the stream. The
// tokenizer must outlive the loader.
Status loader_open(const LoaderOptions& opt, const Tokenizer& student, KdLoader* out);
// The next batch. *done (with an empty batch) once the data is exhausted
// (loop = false); the last batch may hold fewer than batch_size rows.
Status loader_next(KdLoader* l, LoaderBatch* out, bool* done);
// Batches delivered since the start of training (start_batch included): the
// position to store in a checkpoint and pass back as start_batch.
int64_t loader_position(const KdLoader& l);
const LoaderStats& loader_stats(const KdLoader& l);
// Target tokens (positions with a loss) per example over one pass of the
// data with these options, exactly as training counts its seen tokens:
// what the A8 -> A4 flip budget is measured in.
Status loader_count_targets(LoaderOptions opt, const Tokenizer& student, double* mean_per_example,
                            int64_t* examples);
// The step shards in stream order of epoch 0 (after listing).
const std::vector<std::string>& loader_shards(const KdLoader& l);

}  // namespace bk
