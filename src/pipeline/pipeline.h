#pragma once
// `bitkd pipeline` as a library: the stages of the embedded default (or of a
// teacher named in the configuration), each run as `bitkd <command>` in a
// child process with its own log, skipped when its inputs are unchanged.
//
//   tasks -> tokenizers -> pretrain (float teacher) -> teacher (baseline) ->
//   collect (KD traces) -> train (ternary student) -> eval (QEI) -> dryrun
//   -> reports/pipeline_summary.json
//
// A stage's fingerprint holds the values of every configuration variable its
// commands read in their last run (they record them: BITKD_CONFIG_READS), the
// sizes of the plan, the content hashes of the files it reads and the run ids
// of the stages before it. A stage whose fingerprint matches its stamp
// (<artifacts>/stamps/<stage>.json) and whose outputs exist is skipped; one
// interrupted with the same fingerprint resumes; any other runs clean.
#include <set>
#include <string>
#include <vector>

#include "core/status.h"
#include "io/config.h"

namespace bk {

// The stages in run order, from the one stage table (pipeline/stages.cpp).
std::vector<std::string> pipeline_stage_names();

struct PipelineOptions {
  bool force_all = false;
  std::set<std::string> force_stages;  // rerun these
  std::set<std::string> only;          // run only these (the ones they read must be done)
  std::string until;                   // run up to and including this one
  std::string env_file;                // passed on to every command
};

// Runs the pipeline, printing one line per stage and the summary at the end;
// writes reports/pipeline_summary.json. Returns the first failure.
Status pipeline_run(const Config& cfg, const PipelineOptions& opt);

}  // namespace bk
