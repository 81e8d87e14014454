#pragma once
// KD trace collection (`bitkd collect`, docs/data_schema.md): prompts -> teacher
// completions with top-K logprobs -> projection onto the student tokenizer ->
// KD shards (data/kd_shard_T.parquet, one row per teacher step) and prompt
// tables (data/kd_prompts_T.parquet, one row per prompt), T = "NNN", or
// "IofN_NNN" for collector i of n (--shard i/n).
//
// Crash safety and resume (the design): the open shard pair is rewritten
// atomically at each flush (every KD_FLUSH_PROMPTS prompts or KD_FLUSH_SECONDS):
// the committed rows are streamed from the current files into new temp files,
// the new prompts' rows are appended, then the step file is renamed into place
// and the prompt file after it. The prompt tables are the commit record: a
// prompt is collected iff its row is in a kd_prompts file. A crash between the
// two renames leaves step rows whose prompt is in no prompt table; they are
// dropped when the pair is next rewritten (at startup, and at every flush), and
// the prompt is collected again. So a crash loses at most the prompts not yet
// flushed, never leaves a partial row (files only appear by rename) and never
// duplicates one. Rewriting costs O(shard size) per flush; KD_SHARD_ROWS bounds
// it, and shards rotate once they hold that many step rows (a prompt's rows
// never straddle two shards).
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/status.h"
#include "kd/prompts.h"
#include "kd/providers.h"

namespace bk {

struct Tokenizer;

struct CollectOptions {
  std::string data_dir;
  std::string template_text;  // unescaped; rendered prompts and template_hash use it
  std::string instruction;    // chat API teacher_sample: a system message before the prompt ("" = none)
  int top_logprobs = 20;      // requested per step; also the projected top-K kept
  double temperature = 0.8;
  double top_p = 0.95;
  int max_tokens = 512;
  int concurrency = 4;        // worker threads (the client caps requests in flight too)
  int64_t shard_rows = 200000;
  int64_t flush_prompts = 64;
  double flush_seconds = 30;
  int shard_i = 0, shard_n = 1;  // this collector takes prompt_idx % n == i
  int64_t seed = 1234;           // request seed = seed + prompt_idx (< 0: none sent)
  bool progress = true;
  // Test hook: stop (as if killed) after this many flushes; 0 = never.
  int64_t stop_after_flushes = 0;
  // Trace source, recorded in every prompt row (KdPrompt::source):
  //   "teacher_sample"  the teacher answers (sampling settings above);
  //   "reference"       the teacher scores the item's reference answer;
  //   "on_policy"       the teacher scores what `continuation` returns for
  //                     the rendered prompt (a student's sample).
  // Scoring needs a server that scores a given text (provider_score).
  std::string source = "teacher_sample";
  std::function<Status(const PromptItem& item, const std::string& rendered, std::string* text)> continuation;
};

struct CollectStats {
  int64_t prompts_listed = 0;     // in the whole prompt list
  int64_t prompts_assigned = 0;   // this collector's share
  int64_t prompts_already = 0;    // skipped: committed by an earlier run
  int64_t prompts_ok = 0, prompts_failed = 0;
  std::map<std::string, int64_t> failed_by_kind;
  std::vector<std::string> first_errors;  // a few messages, for the log and the stats file
  int64_t steps = 0, steps_valid = 0;
  std::map<std::string, int64_t> invalid_by_reason;
  int64_t steps_other_floored = 0;
  int64_t steps_end_of_text = 0;  // final end-of-text steps the server reported (not stored, not invalid)
  int64_t unmapped_candidates = 0;
  double mass_sum = 0;
  int64_t mass_n = 0;
  int64_t offset_mismatch_prompts = 0;  // token bytes did not spell the response text
  int64_t orphan_rows_dropped = 0;      // step rows of uncommitted prompts (after a crash)
  int64_t flushes = 0;
  int64_t bytes_written = 0;            // all committed files, rewrites included
  std::vector<std::string> shard_files;  // step files this run wrote
  double elapsed_s = 0;
  bool aborted = false;
  std::string abort_reason;
  ProviderStats provider;
};

// "000", or "2of4_000" for collector 2 of 4.
std::string collect_shard_tag(int shard_i, int shard_n, int index);
// Parses "--shard i/n" ("" -> 0/1).
Status collect_parse_shard(const std::string& text, int* i, int* n);
// prompt_idx of every committed prompt in dir (all kd_prompts_*.parquet).
Status collect_committed_prompts(const std::string& dir, std::set<int64_t>* out);

// Collects every prompt of this collector's share not yet committed. Per-prompt
// failures are counted and skipped (a rerun tries them again); errors that
// would fail every prompt (401/403/404, no logprobs at all) abort after
// committing what is done. teacher_model/provider go into the tables.
Status collect_run(ProviderClient* client, const Tokenizer& student, const std::vector<PromptItem>& prompts,
                   const CollectOptions& opt, CollectStats* stats);

// logs/collect_stats.json content.
std::string collect_stats_json(const CollectStats& s, const CollectOptions& opt, const ProviderSettings& ps);

}  // namespace bk
