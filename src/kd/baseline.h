#pragma once
// The teacher baseline (`bitkd teacher`): greedy decoding of the eval prompts,
// latency and decode TPS per prompt, quality from the task scorers, written to
// reports/teacher_baseline.json with the PoC's fields plus bitkd's (quality,
// latency percentiles, prompts_hash, full responses with task and reference so
// eval can rescore). The report is a lock: QEI compares every student against
// it, so a run on another prompt set or another model does not replace it
// unless forced.
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "kd/prompts.h"
#include "kd/providers.h"

namespace bk {

struct Tokenizer;

struct BaselineOptions {
  double temperature = 0.0;
  double top_p = 1.0;
  int max_tokens = 256;
  int context_length = 8192;  // TEACHER_CTX_LEN, reported
  int concurrency = 1;        // 1 keeps latencies comparable with the PoC's sequential runs
  std::string template_text;  // applied for the legacy Completions API; reported
  std::string instruction;    // chat API: a system message before the prompt ("" = none); reported
  int64_t seed = -1;          // sent to the provider when >= 0
  bool progress = true;
};

struct BaselineRow {
  PromptItem item;
  bool ok = false;
  std::string error, error_kind;
  int attempts = 0;
  std::string response, finish_reason;
  double latency_s = 0;          // the successful attempt (retries and waits excluded)
  int64_t completion_tokens = 0;
  bool tokens_estimated = false;  // no usage from the provider: counted locally
  double decode_tps = 0;          // completion_tokens / latency_s (the PoC's definition)
  bool scored = false;            // item had a task and reference
  double score = 0;
  int json_valid = -1;            // JSON families: 1/0; else -1
  std::string answer;             // the answer scored, when taken out of a longer reply ("" otherwise)
};

// Runs every prompt (chat: one user message; completions: the rendered
// template). count_tok (may be null) counts tokens when the provider reports
// no usage; without it, tokens are estimated as bytes/4. Per-prompt failures
// are recorded in the rows; the call fails only when nothing succeeded.
Status baseline_run(ProviderClient* client, const std::vector<PromptItem>& prompts, const BaselineOptions& opt,
                    const Tokenizer* count_tok, std::vector<BaselineRow>* rows);

struct BaselineInfo {
  std::string provider, model, base_url, api;
  std::string template_text;
  std::string prompt_prefix;    // TEACHER_PROMPT_PREFIX (native route), "" = none
  double memory_bytes = 0;      // memory_teacher_constant (0: unknown, written as null)
  std::string memory_source;    // "measured: ...", "declared: TEACHER_MEMORY_GB=..." or "unknown: ..."
  std::string prompts_source;   // prompts_load's description
  std::string prompts_hash;
  std::string timestamp;        // UTC ISO-8601
};

// A teacher's weight memory that cannot be measured: declared by the user
// (TEACHER_MEMORY_GB, a number > 0) or, with gb_text empty, unknown (0 bytes:
// QEI is then not evaluated, and the source says what to set).
Status teacher_memory_declared(const std::string& gb_text, double* bytes, std::string* source);

// The report as JSON text (the PoC's fields first).
std::string baseline_report_json(const BaselineInfo& info, const BaselineOptions& opt,
                                 const std::vector<BaselineRow>& rows);

// Refuses (before any request) to replace an existing baseline measured on a
// different prompt set or model, naming both; force overrides.
Status baseline_check_lock(const std::string& report_path, const std::string& prompts_hash, const std::string& model,
                           bool force);

// Quantile q in [0,1] of values with linear interpolation (numpy's default); 0 for none.
double quantile(std::vector<double> values, double q);

}  // namespace bk
