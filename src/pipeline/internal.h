#pragma once
// Private to src/pipeline: the run context, stamps and the stage table that
// runner.cpp, stages.cpp and summary.cpp share.
#include <sys/types.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "core/process.h"
#include "io/config.h"
#include "kd/providers.h"
#include "pipeline/pipeline.h"
#include "pipeline/plan.h"
#include "storage/storage.h"

namespace bk {

using ojson = nlohmann::ordered_json;

// What happened to one stage in this run.
struct PipelineStage {
  std::string name;
  std::string status;               // ok | skipped | failed | not_run | not_needed
  std::string detail;               // why skipped / failed / not needed
  double duration_s = 0;            // this run (0 when skipped)
  double recorded_duration_s = -1;  // the duration stored in the stamp (skipped stages), -1 unknown
  double cpu_s = 0;                 // CPU seconds (user + system) of its commands, this run
  double recorded_cpu_s = -1;       // the CPU seconds stored in the stamp (skipped stages)
  std::string log;                  // logs/<stage>.log
  std::string fingerprint;
  std::vector<std::string> commands;  // the bitkd command lines it ran (or would have run)
  ojson numbers = ojson::object();    // key numbers
};

// A stage's stamp file.
struct Stamp {
  bool exists = false;
  std::string state;  // "running" or "done"
  std::string fingerprint, run_id;
  double duration_s = -1, cpu_s = -1;
  ojson inputs = ojson::object();  // plan values, hashes, upstream run ids, and "config": {name: value}
  ojson numbers = ojson::object();
  std::vector<std::string> commands;
};

struct Ctx {
  Config cfg;
  PipelineOptions opt;
  PipelinePlan plan;
  ArtifactPaths paths;
  std::string exe, stamps_dir;
  std::set<std::string> needed;  // stages the --only ones read (must be done)
  bool local_teacher = true;
  ProviderSettings hosted;  // when !local_teacher
  std::string teacher_desc;
  std::string tasks_dir, train_jsonl, val_jsonl, eval_jsonl;
  std::string teacher_dir, teacher_tok, student_tok;
  bool student_tok_user = false;
  // prompt files: the pipeline's unless the user named their own
  bool baseline_prompts_user = false, eval_prompts_user = false, kd_prompts_user = false;
  // run ids of finished stages, feeding the fingerprints of the stages after them
  std::map<std::string, std::string> run_ids;
  // the local teacher server
  pid_t server_pid = 0;
  std::string server_url;   // http://127.0.0.1:PORT/v1
  double server_cpu_s = 0;  // CPU the teacher server used (teacher and collect stages)
  std::vector<PipelineStage> stages;
  int stage_no = 0, stage_total = 0;
  // The remote the artifact root is mirrored to (local: none), and when a
  // running stage's new files were last pushed.
  Storage storage;
  double storage_pushed_at = 0;
  bool storage_mid_failed = false;  // a push failed during this stage: retried when it ends
};

// The stage names, written once: the table, the checklist and the runner
// refer to stages through these.
namespace stage {
constexpr const char* kTasks = "tasks";
constexpr const char* kTokenizers = "tokenizers";
constexpr const char* kPretrain = "pretrain";
constexpr const char* kTeacher = "teacher";
constexpr const char* kCollect = "collect";
constexpr const char* kHeldout = "heldout";
constexpr const char* kTrain = "train";
constexpr const char* kEval = "eval";
constexpr const char* kDryrun = "dryrun";
}  // namespace stage

// Formatting for the summary's key numbers (summary.cpp): "n/a" for
// anything not finite.
double json_number(const ojson& j, std::initializer_list<const char*> path);  // NAN when absent
std::string fmt_number(double v, const char* f = "%.3g");
std::string fmt_percent(double fraction);
std::string fmt_bytes(double bytes);   // "2.40 GiB"
std::string fmt_params(double count);  // "8.85B"

// One row of the stage table.
struct StageSpec {
  const char* name;
  std::vector<const char*> reads;  // stages whose outputs it reads
  bool local_teacher_only = false;  // pretrain: only when bitkd trains the teacher
  bool needs_server = false;        // the local teacher answers during this stage
  std::string (*what)(const Ctx&);  // one line for the screen
  void (*inputs)(const Ctx&, ojson*);  // plan values and content hashes it depends on
  std::vector<std::string> (*outputs)(const Ctx&);  // must exist for a skip
  Status (*run)(Ctx&, bool resume, PipelineStage*);
  void (*clean)(Ctx&);  // removes what a run with other inputs left (may be null)
  ojson (*numbers)(const Ctx&, const Stamp&);  // key numbers from its outputs
  std::string (*note)(const ojson& numbers);   // those numbers in one line of the summary
  // Variables set for its commands beyond the common ones (may be null).
  void (*env)(const Ctx&, ProcessEnv*) = nullptr;
};
const std::vector<StageSpec>& stage_table();
const StageSpec* stage_find(const std::string& name);

// Helpers the stage definitions use (runner.cpp).
std::string stage_log_path(const Ctx& cx, const std::string& stage);
std::string heldout_dir(const Ctx& cx);  // KD traces of the held-out eval prompts
// Where the traces of one source go: data/ (teacher_sample), data/reference/,
// data/on_policy/; and the collector's stats file for it.
std::string traces_dir(const Ctx& cx, const std::string& source);
std::string traces_stats(const Ctx& cx, const std::string& source);
// The training data: the trace directories of the plan's sources, comma-separated.
std::string train_data_dirs(const Ctx& cx);
std::vector<std::string> command_argv(const Ctx& cx, std::initializer_list<const char*> cmd);
void add_flag(std::vector<std::string>* v, const std::string& name, const std::string& value);
void add_flag(std::vector<std::string>* v, const std::string& name, long long value);
void add_flag_num(std::vector<std::string>* v, const std::string& name, double value);
Status run_command(Ctx& cx, PipelineStage* rec, const std::vector<std::string>& argv);
// The environment of the pipeline's commands (artifact layout, threads, seed, student tokenizer, local teacher).
ProcessEnv child_env(const Ctx& cx);
// The local teacher server (`bitkd serve` on a free loopback port), started once.
Status ensure_server(Ctx& cx);
void stop_server(Ctx& cx);
// Resolves the plan, the teacher and the artifact paths of a run (runner.cpp).
Status pipeline_setup(Ctx& cx);
std::string upstream_run_id(const Ctx& cx, const char* stage);
std::string fmt_num(double v);  // %.6g, for display and flags where 6 digits suffice
std::string fmt_exact(double v);  // every digit a double holds (%.17g): a value passed on must not move
std::string fmt_duration(double s);
bool read_json_file(const std::string& path, ojson* out);
void append_to_file(const std::string& path, const std::string& text);
void remove_files(const std::vector<std::string>& paths);
std::string file_hash(const std::string& path);       // content identity ("" when missing)
std::string tokenizer_file_hash(const std::string& path);

// reports/pipeline_summary.json and the closing text (summary.cpp).
struct PipelineFacts {
  std::string started, finished;  // ISO timestamps
  double wall_s = 0;
  std::string baseline_report, eval_report, dryrun_report, summary_path;
  std::string failed_stage;  // "" when every stage passed
};
Status pipeline_summary_build(const Ctx& cx, const PipelineFacts& facts, std::string* json_text,
                              std::string* human_text);

}  // namespace bk
