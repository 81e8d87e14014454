#pragma once
// `bitkd pipeline` internals shared by cmd_pipeline.cpp (orchestration) and
// pipeline_summary.cpp (reports/pipeline_summary.json and the closing text).
#include <string>
#include <vector>

#include "core/status.h"

namespace bk {

// What happened to one stage in this run.
struct PipelineStage {
  std::string name;
  std::string status;     // ok | skipped | failed | not_run | not_needed
  std::string detail;     // why skipped / failed / not needed
  double duration_s = 0;  // this run (0 when skipped)
  double recorded_duration_s = -1;  // the duration stored in the stamp (skipped stages), -1 unknown
  double cpu_s = 0;       // CPU seconds (user + system) of its commands, this run
  double recorded_cpu_s = -1;  // the CPU seconds stored in the stamp (skipped stages)
  std::string log;        // logs/<stage>.log
  std::string fingerprint;
  std::vector<std::string> commands;  // the bitkd command lines it ran (or would have run)
  std::string numbers_json;           // key numbers as a JSON object ("{}" when none)
};

// Paths and facts the summary needs besides the stages.
struct PipelineFacts {
  std::string started, finished;  // ISO timestamps
  double wall_s = 0;
  std::string scale;              // PIPELINE_SCALE as resolved ("1", "tiny", ...)
  std::string teacher_mode;       // "local" or "external"
  std::string teacher_desc;       // provider and model, never a key
  std::string artifacts_root;
  std::string baseline_report, eval_report, dryrun_report, collect_stats, summary_path;
  std::string machine;            // cpu model and cores
  int threads = 0;
  std::string settings_json;      // resolved preset values (JSON object)
  std::string failed_stage;       // "" when every stage passed
  double server_cpu_s = 0;        // CPU of the local teacher server (serves teacher and collect)
};

// Builds the summary JSON (stage table, key numbers read from the reports,
// checklist with gates as pass / fail / not_measured) and the human summary.
Status pipeline_summary_build(const std::vector<PipelineStage>& stages, const PipelineFacts& facts,
                              std::string* json_text, std::string* human_text);

}  // namespace bk
