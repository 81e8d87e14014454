#pragma once
// The KD trace tables (docs/data_schema.md): one row per teacher step in
// data/kd_shard_NNN.parquet, one row per prompt in data/kd_prompts_NNN.parquet.
// The PoC's step columns come first with its names and types; bitkd's follow.
// Writers stream rows (row groups by row count); readers check the schema
// and validate rows per row group.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/parquet/parquet.h"

namespace bk {

constexpr const char* kKdSchemaVersion = "2";

struct KdStep {
  // PoC columns
  int64_t prompt_idx = 0;
  int32_t step_idx = 0;
  int32_t teacher_sample_id = 0;        // sampled token, as a student token id
  std::string teacher_sample_text;      // sampled token text
  std::vector<int32_t> topk_ids;        // projected student ids, K' <= K
  std::vector<float> topk_logprobs;     // same length as topk_ids
  float other_logprob = 0;              // log(1 - sum exp(topk_logprobs))
  bool is_struct_token = false;
  std::string template_hash;
  std::string tokenizer_hash;
  // bitkd columns
  float teacher_sample_logprob = 0;
  int32_t byte_offset = 0;              // of the step's token in the response text
  bool valid = true;                    // false: kept for the record, ignored by the KD loss
  std::vector<std::string> raw_topk_tokens;  // teacher's own candidates
  std::vector<float> raw_topk_logprobs;      // same length as raw_topk_tokens
};

struct KdPrompt {
  int64_t prompt_idx = 0;
  std::string prompt_text;
  std::string rendered_prompt;  // template applied
  std::string response_text;
  std::string finish_reason;
  std::string teacher_model;
  std::string provider;
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  double latency_ms = 0;
  std::string task;
  std::string reference;
  // Where the response came from: "teacher_sample" (the teacher generated it),
  // "reference" (the dataset's answer, scored by the teacher) or "on_policy"
  // (the student generated it, the teacher scored it).
  std::string source = "teacher_sample";
  double score = NAN;  // the task scorer's score of the response (NaN: no scorer or reference)
};

pq::Schema kd_step_schema();
pq::Schema kd_prompt_schema();
constexpr int kKdStepPocColumns = 10;  // the first 10 step columns are the PoC's

// "kd_shard_007.parquet", "kd_prompts_007.parquet".
std::string kd_shard_name(int index);
std::string kd_prompts_name(int index);

// File-level key-value metadata (keys bitkd_schema_version, bitkd_table,
// bitkd_tokenizer_hash, bitkd_teacher_model, bitkd_teacher_temperature,
// bitkd_teacher_top_p, bitkd_template, plus `extra`).
struct KdMeta {
  std::string schema_version;  // filled on read; writers always write kKdSchemaVersion
  std::string tokenizer_hash;
  std::string teacher_model;
  double teacher_temperature = -1;  // < 0: unknown
  double teacher_top_p = -1;
  std::string template_text;
  pq::KeyValues extra;  // on read: every key not listed above
};

struct KdWriterOptions {
  pq::Codec codec = pq::Codec::ZSTD;
  int zstd_level = 3;
  bool page_v2 = false;
  int64_t row_group_rows = 0;  // 0: 65536 for steps, 4096 for prompts
};

// Streams steps into one shard. Structurally bad rows (list lengths that
// disagree) are refused; values are written as given (see KdStep::valid).
struct KdStepWriter {
  Status open(const std::string& path, const KdMeta& meta, const KdWriterOptions& opts = KdWriterOptions());
  Status append(const KdStep& s);
  Status close();  // footer + atomic rename
  int64_t rows() const { return w.rows_written(); }
  pq::Writer w;
};

struct KdPromptWriter {
  Status open(const std::string& path, const KdMeta& meta, const KdWriterOptions& opts = KdWriterOptions());
  Status append(const KdPrompt& p);
  Status close();
  int64_t rows() const { return w.rows_written(); }
  pq::Writer w;
};

struct KdReadOptions {
  bool skip_bad_rows = false;      // false: the first bad row is an error
  float logprob_tolerance = 1e-4f;  // logprobs above this count as positive
  // Read PoC shards that lack bitkd's columns: teacher_sample_logprob 0,
  // byte_offset -1, valid true, empty raw lists.
  bool allow_missing_bitkd_columns = false;
};

struct KdReadStats {
  int64_t rows_read = 0;   // rows returned
  int64_t bad_rows = 0;    // rows skipped (skip_bad_rows)
  std::string first_bad;   // message of the first skipped row
};

// Checks one step. Valid rows: no NaN and no positive logprob (beyond the
// tolerance), no negative topk id. Every row: topk_ids/topk_logprobs and
// raw_topk_tokens/raw_topk_logprobs lengths agree. On failure sets *column
// and *what and returns false.
bool kd_check_step(const KdStep& s, float logprob_tolerance, std::string* column, std::string* what);

struct KdStepReader {
  Status open(const std::string& path, const KdReadOptions& opts = KdReadOptions());
  const KdMeta& meta() const { return meta_; }
  int num_row_groups() const { return r.num_row_groups(); }
  int64_t num_rows() const { return r.num_rows(); }
  // Rows of row group rg (replaces *rows), validated per the options.
  Status read_row_group(int rg, std::vector<KdStep>* rows);
  const KdReadStats& stats() const { return stats_; }

  pq::Reader r;
  KdReadOptions opts_;
  KdMeta meta_;
  KdReadStats stats_;
  std::vector<int> col_;  // reader column of each schema column, -1 = absent
};

struct KdPromptReader {
  Status open(const std::string& path, const KdReadOptions& opts = KdReadOptions());
  const KdMeta& meta() const { return meta_; }
  int num_row_groups() const { return r.num_row_groups(); }
  int64_t num_rows() const { return r.num_rows(); }
  Status read_row_group(int rg, std::vector<KdPrompt>* rows);
  const KdReadStats& stats() const { return stats_; }

  pq::Reader r;
  KdReadOptions opts_;
  KdMeta meta_;
  KdReadStats stats_;
  std::vector<int> col_;
};

}  // namespace bk
