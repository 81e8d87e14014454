// bitkd pipeline: argument handling; the pipeline itself is src/pipeline.
#include <set>

#include "cli/cli.h"
#include "pipeline/pipeline.h"

namespace bk {

namespace {

std::set<std::string> split_commas(const std::string& s) {
  std::set<std::string> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t comma = s.find(',', pos);
    if (comma == std::string::npos) comma = s.size();
    std::string part = s.substr(pos, comma - pos);
    if (!part.empty()) out.insert(part);
    pos = comma + 1;
  }
  return out;
}

int run_pipeline(Args& a) {
  bool tiny = false;
  PipelineOptions o;
  Status st = arg_bool(a, "tiny", &tiny);
  if (st.ok()) st = arg_bool(a, "force", &o.force_all);
  if (!st.ok()) return cli_fail(a, st);
  if (tiny) config_set(&a.cfg, "PIPELINE_SCALE", "tiny", SRC_FLAG);
  o.force_stages = split_commas(arg_str(a, "force-stage"));
  o.only = split_commas(arg_str(a, "only"));
  o.until = arg_str(a, "until");
  o.env_file = arg_str(a, "env-file");
  st = pipeline_run(a.cfg, o);
  return st.ok() ? 0 : cli_fail(a, st);
}

}  // namespace

const Command& command_pipeline() {
  static const Command c = {
      "pipeline",
      "Run every stage (tasks, tokenizers, teacher, baseline, collect, train, eval, dryrun) -> reports/pipeline_summary.json",
      "With no teacher configured: the built-in task suite, a teacher (BPE) and a student (unigram) tokenizer,\n"
      "a small float teacher pretrained on the suite and served by `bitkd serve` on 127.0.0.1 (a free port,\n"
      "stopped at the end), then the teacher baseline, KD collection, ternary student training, eval with\n"
      "QEI and the 7B dry run. With TEACHER_PROVIDER (or PROVIDER with its key) naming another teacher, that\n"
      "teacher is used and no local one is trained. Each stage runs as `bitkd <command>` with its log in\n"
      "LOGS_DIR/<stage>.log and is skipped when its outputs exist and its inputs are unchanged: the values of\n"
      "every variable its commands read, the files they read and the stages before it (stamps in\n"
      "<artifacts>/stamps). PIPELINE_SCALE sizes the run: 1 (the default, about 15 minutes on 2 cores),\n"
      "2, 4, ... multiply steps and data; tiny is a smoke run of a minute or two. Variables you set\n"
      "(MINI_DIM, TOTAL_STEPS, KD_MAX_PROMPTS, EVAL_MAX_PROMPTS, ...) override the preset (README, \"Pipeline\n"
      "presets\").",
      {
          {"scale", "PIPELINE_SCALE", nullptr, "tiny, 1, 2, 4, ... (size of the run)"},
          {"tiny", nullptr, "", "Same as --scale tiny", true},
          {"force", nullptr, "", "Rerun every stage", true},
          {"force-stage", nullptr, "", "Rerun these stages (comma-separated); later ones rerun when their inputs changed"},
          {"only", nullptr, "", "Run only these stages (comma-separated); the ones before must be done"},
          {"until", nullptr, "", "Run the stages up to and including this one (what `make <stage>` does)"},
      },
      run_pipeline,
  };
  return c;
}

}  // namespace bk
