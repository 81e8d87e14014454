// bitkd experiment: argument handling; the experiment itself is src/pipeline/experiment.
#include "cli/cli.h"
#include "pipeline/experiment.h"

namespace bk {

namespace {

int run_experiment(Args& a) {
  ExperimentOptions o;
  const std::string arms = arg_str(a, "arms");
  for (size_t at = 0; at <= arms.size();) {
    size_t comma = arms.find(',', at);
    if (comma == std::string::npos) comma = arms.size();
    if (comma > at) o.arms.push_back(arms.substr(at, comma - at));
    at = comma + 1;
  }
  long long v = 0;
  if (!arg_int_or_report(a, "seeds", &v)) return 2;
  o.seeds = (int)v;
  if (!arg_int_or_report(a, "steps", &v)) return 2;
  o.steps = v;
  if (!arg_int_or_report(a, "on-policy-rounds", &v)) return 2;
  o.on_policy_rounds = (int)v;
  o.env_file = arg_str(a, "env-file");
  Status st = arg_bool(a, "resume", &o.resume);
  if (st.ok()) st = experiment_run(a.cfg, o);
  return st.ok() ? 0 : cli_fail(a, st);
}

}  // namespace

const Command& command_experiment() {
  static const Command c = {
      "experiment",
      "Distillation recipes side by side (equal token budget, N seeds) -> reports/ablation.json and ablation.md",
      "Runs the pipeline up to the held-out traces (teacher samples collected too), then for every arm and\n"
      "seed trains a student with the same steps, batch and sequence length and evaluates it on the\n"
      "validation items (carved from the train split: what recipes are chosen on) and on the held-out items\n"
      "(reported only). Arms: ce_reference (no teacher), ce_teacher_samples, kd_teacher_samples,\n"
      "kd_reference, ce_teacher_init, kd_teacher_init (the pipeline's default), kd_teacher_init_attn\n"
      "(plus attention-relation distillation) and kd_on_policy. Each run's\n"
      "commands and logs are in <artifacts>/experiment/<arm>/seed<k>/.",
      {
          {"arms", nullptr, "", "Arms to run, comma-separated (default: all)"},
          {"seeds", nullptr, "3", "Seeds per arm"},
          {"steps", nullptr, "0", "Training steps per arm (0: the pipeline's TOTAL_STEPS)"},
          {"grad-accum", "GRAD_ACCUM_STEPS", nullptr,
           "Micro-batches per optimizer step of every arm (the A8 -> A4 flip budget counts them)"},
          {"on-policy-rounds", nullptr, "1",
           "kd_on_policy: times the student answers and the teacher scores it, evenly spaced over the steps"},
          {"resume", nullptr, "",
           "After an interruption: runs whose training finished with the same inputs are evaluated again, not "
           "retrained",
           true},
      },
      run_experiment,
  };
  return c;
}

}  // namespace bk
