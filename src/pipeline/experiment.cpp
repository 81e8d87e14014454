// bitkd experiment (experiment.h): each arm and seed runs the same `bitkd`
// commands a user would (train, eval, and collect for on-policy traces), as
// child processes of this binary with their logs under
// <artifacts>/experiment/<arm>/seed<k>/.
#include "pipeline/experiment.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/fs.h"
#include "core/log.h"
#include "core/timing.h"
#include "data/kd_schema.h"
#include "data/loader/loader.h"
#include "pipeline/internal.h"
#include "report/report.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"
#include "train/setup.h"

namespace bk {

namespace {

const std::vector<ExperimentArm> k_arms = {
    {"ce_reference", "no teacher: CE on the reference answers", "reference", false, false, false},
    {"ce_teacher_samples", "CE on the teacher's samples (no logits)", "teacher_sample", false, false, false},
    {"kd_teacher_samples", "KD on the teacher's samples", "teacher_sample", true, false, false},
    {"kd_reference", "KD on the reference answers (the teacher scores them)", "reference", true, false, false},
    {"ce_teacher_init", "teacher-initialized student, CE on the references (no logits)", "reference", false, true,
     false},
    {"kd_teacher_init", "teacher-initialized student, KD on the references", "reference", true, true, false},
    {"kd_teacher_init_attn", "teacher-initialized, KD on the references plus attention-relation distillation",
     "reference", true, true, false, 1.0f},
    {"kd_on_policy", "teacher-initialized, KD on the references, then on its own answers scored by the teacher",
     "reference", true, true, true},
};

struct Run {
  std::string arm;
  int seed = 0;
  bool ok = false;
  std::string error;
  bool reused = false;  // training reused (--resume), only evaluated
  double val = NAN, heldout = NAN, heldout_json = NAN, agreement = NAN, wall_s = 0;
};

struct Stat {
  double mean = NAN, sd = NAN;
  int n = 0;
};

Stat stat_of(const std::vector<double>& v) {
  Stat s;
  std::vector<double> x;
  for (double d : v)
    if (std::isfinite(d)) x.push_back(d);
  s.n = (int)x.size();
  if (x.empty()) return s;
  double m = 0;
  for (double d : x) m += d;
  m /= x.size();
  double q = 0;
  for (double d : x) q += (d - m) * (d - m);
  s.mean = m;
  s.sd = x.size() > 1 ? std::sqrt(q / (x.size() - 1)) : 0.0;  // sample standard deviation
  return s;
}

std::string pm(const Stat& s) {
  if (!std::isfinite(s.mean)) return "n/a";
  char b[64];
  snprintf(b, sizeof b, "%.3f +- %.3f", s.mean, s.sd);
  return b;
}

double report_number(const std::string& path, std::initializer_list<const char*> keys) {
  ojson j;
  if (!read_json_file(path, &j)) return NAN;
  const ojson* cur = &j;
  for (const char* k : keys) {
    if (!cur->is_object() || !cur->contains(k)) return NAN;
    cur = &(*cur)[k];
  }
  return cur->is_number() ? cur->get<double>() : NAN;
}

// The A8 -> A4 budget of one run (train/setup.h), counted as the train
// command counts it for the pipeline's train stage (--budget-from-data): this
// experiment's steps and GRAD_ACCUM_STEPS, the loader seeded as the child
// is. Passed explicitly so that the on-policy arm's later parts keep the
// whole run's budget.
Status flip_budget(const Ctx& cx, const std::string& data, long long steps, long long grad_accum, int seed,
                   double* budget) {
  if (cx.plan.budget_user) {
    *budget = cx.plan.budget_user_value;
    return ok_status();
  }
  LoaderOptions lo;
  BK_TRY(loader_options_from_config(cx.cfg, &lo));
  lo.data_dir = data;
  lo.max_seq_len = (int)cx.plan.s_seq;
  lo.batch_size = (int)cx.plan.s_batch;
  lo.seed = (uint64_t)seed;
  Tokenizer tok;
  BK_TRY(tokenizer_load(cx.student_tok, &tok));
  return flip_budget_from_data(lo, tok, grad_accum, steps, budget, nullptr);
}

struct RunCtx {
  Ctx* cx;
  long long grad_accum = 1;  // GRAD_ACCUM_STEPS of every train command
  std::string dir, log;
  ProcessEnv env;
};

Status run(RunCtx& r, std::vector<std::string> argv) {
  argv.insert(argv.begin(), r.cx->exe);
  argv.push_back("--env-file");
  argv.push_back(r.cx->opt.env_file);
  double cpu = 0;
  return process_run(argv, r.env, r.log, nullptr, &cpu);
}

std::vector<std::string> train_argv(const RunCtx& r, const ExperimentArm& a, const std::string& data,
                                    const std::string& out, long long steps, long long horizon, double budget) {
  const Ctx& cx = *r.cx;
  const PipelinePlan& p = cx.plan;
  std::vector<std::string> v = {"train", "--tokenizer", cx.student_tok, "--data", data, "--out", out, "--metrics",
                                path_join(out, "train_metrics.jsonl"), "--dim", std::to_string(p.s_dim), "--layers",
                                std::to_string(p.s_layers), "--heads", std::to_string(p.s_heads), "--ffn",
                                std::to_string(p.s_ffn), "--seq", std::to_string(p.s_seq), "--batch",
                                std::to_string(p.s_batch), "--grad-accum", std::to_string(r.grad_accum), "--steps", std::to_string(steps), "--tmax", std::to_string(horizon), "--lr", fmt_num(p.s_lr),
                                "--warmup", std::to_string(p.s_warmup), "--budget", fmt_exact(budget),
                                "--checkpoint-interval", "0", "--log-interval", std::to_string(p.s_log_interval),
                                "--kd-weight", a.kd ? fmt_num(p.kd_weight) : "0", "--ce-weight", fmt_num(p.ce_weight),
                                "--plain-ce-weight", fmt_num(p.ce_weight)};
  if (a.init_from_teacher) v.insert(v.end(), {"--init-from", checkpoint_find_latest(cx.teacher_dir)});
  if (a.attn_relation > 0) v.insert(v.end(), {"--attn-relation-weight", fmt_num(a.attn_relation)});
  return v;
}

// The teacher's baseline on the validation prompts (reports/), next to the
// pipeline's held-out one.
std::string val_baseline(const Ctx& cx) { return path_join(cx.paths.reports, "teacher_val_baseline.json"); }
std::string heldout_baseline(const Ctx& cx) { return path_join(cx.paths.reports, "teacher_baseline.json"); }

std::vector<std::string> eval_argv(const Ctx& cx, const std::string& model, const std::string& prompts,
                                   const std::string& baseline, const std::string& out, bool agreement) {
  std::vector<std::string> v = {"eval", "--model", model, "--tokenizer", cx.student_tok, "--prompts", prompts,
                                "--max-prompts", "0", "--max-new-tokens", std::to_string(cx.plan.eval_tokens),
                                "--teacher-baseline", baseline, "--out", out};
  if (agreement) v.insert(v.end(), {"--kd-eval-shard", path_join(heldout_dir(cx), kd_shard_name(0)),
                                    "--kd-eval-max-examples", "0"});
  else v.push_back("--no-kd-eval");
  return v;
}

// Trains one arm: in one go, or for on-policy arms in R + 1 equal parts.
Status train_arm(RunCtx& r, const ExperimentArm& a, const std::string& data, const std::string& ckpt_dir,
                 long long steps, int on_policy_rounds, double budget) {
  Ctx& cx = *r.cx;
  if (!a.on_policy) return run(r, train_argv(r, a, data, ckpt_dir, steps, steps, budget));
  // R rounds split the steps into R + 1 equal parts. After each part but the
  // last, the student answers the KD prompts, the teacher scores those
  // answers, and training resumes on the references plus every on-policy
  // set so far (the schedule and the flip budget stay those of one run).
  const int rounds = std::max(1, on_policy_rounds);
  std::string mix = data;
  for (int k = 0; k <= rounds; k++) {
    const long long until = steps * (k + 1) / (rounds + 1);
    // Stops at `until` on the whole run's schedule (the decay horizon is all steps).
    std::vector<std::string> v = train_argv(r, a, mix, ckpt_dir, until, steps, budget);
    if (k > 0) v.push_back("--resume");
    BK_TRY(run(r, v));
    if (k == rounds) break;
    const std::string op = path_join(r.dir, "on_policy_" + std::to_string(k + 1));
    for (const std::string& f : list_files(op, "kd_", ".parquet")) remove_files({path_join(op, f)});
    BK_TRY(ensure_server(cx));
    ProcessEnv env = r.env;
    r.env["TEACHER_BASE_URL"] = cx.server_url;
    BK_TRY(run(r, {"collect", "--source", "on_policy", "--student", checkpoint_find_latest(ckpt_dir), "--api",
                   "completions", "--prompts", cx.train_jsonl, "--max-prompts", std::to_string(cx.plan.kd_prompts),
                   "--max-tokens", std::to_string(cx.plan.kd_tokens), "--concurrency",
                   std::to_string(cx.plan.concurrency), "--tokenizer", cx.student_tok, "--out", op, "--stats",
                   path_join(r.dir, "collect_on_policy_" + std::to_string(k + 1) + "_stats.json")}));
    r.env = env;
    stop_server(cx);
    mix += "," + op;
  }
  return ok_status();
}

// With --resume, a run whose training finished (its newest checkpoint is at
// the last step) is evaluated again without training, provided its recorded
// inputs (inputs.json: the train command, seed, rounds and the fingerprint of
// the traces it read) equal this run's. A run with no record (written by an
// older bitkd) is trusted, as the flag asks, and gets one. Anything else trains from scratch.
bool training_done(const std::string& ckpt_dir, long long steps, const ojson& inputs, const std::string& record) {
  const std::vector<std::pair<long, std::string>> ck = checkpoint_list(ckpt_dir);
  if (ck.empty() || ck.back().first != steps) return false;
  ojson old;
  if (!file_exists(record)) {
    BK_LOG_WARN("experiment: %s has no inputs record (an older run); reusing its finished training as --resume asks",
             ckpt_dir.c_str());
    return true;
  }
  return read_json_file(record, &old) && old == inputs;
}

// One arm, one seed: train (unless --resume finds it trained), then eval on
// the validation and held-out prompts.
Status run_arm(Ctx& cx, const ExperimentArm& a, int seed, long long steps, long long grad_accum, int on_policy_rounds,
               bool resume, Run* out) {
  RunCtx r;
  r.cx = &cx;
  r.grad_accum = grad_accum;
  r.dir = path_join(path_join(path_join(cx.paths.root, "experiment"), a.name), "seed" + std::to_string(seed));
  BK_TRY(make_dirs(r.dir));
  r.log = path_join(r.dir, "run.log");
  remove_files({r.log});
  r.env = child_env(cx);
  r.env["SEED"] = std::to_string(seed);
  const std::string ckpt_dir = path_join(r.dir, "checkpoints");
  const std::string data = traces_dir(cx, a.sources);
  double budget = 0;
  BK_TRY(flip_budget(cx, data, steps, grad_accum, seed, &budget));
  ojson stamp;
  read_json_file(path_join(cx.stamps_dir, "heldout.json"), &stamp);
  const ojson inputs = {{"train", train_argv(r, a, data, ckpt_dir, steps, steps, budget)},
                        {"seed", seed},
                        {"on_policy_rounds", a.on_policy ? on_policy_rounds : 0},
                        {"traces_fingerprint", stamp.value("fingerprint", "")}};
  const std::string record = path_join(r.dir, "inputs.json");
  out->reused = resume && training_done(ckpt_dir, steps, inputs, record);
  if (!out->reused) {
    remove_files({record, path_join(ckpt_dir, "train_metrics.jsonl")});
    for (const std::string& f : list_files(ckpt_dir, "mini_bitnet_step_", "")) remove_files({path_join(ckpt_dir, f)});
  }
  if (!out->reused || !file_exists(record)) BK_TRY(write_file_atomic(record, inputs.dump(2) + "\n"));
  if (!out->reused) BK_TRY(train_arm(r, a, data, ckpt_dir, steps, on_policy_rounds, budget));
  const std::string model = checkpoint_find_latest(ckpt_dir);
  const std::string val = path_join(r.dir, "val_report.json"), held = path_join(r.dir, "heldout_report.json");
  BK_TRY(run(r, eval_argv(cx, model, cx.val_jsonl, val_baseline(cx), val, false)));
  BK_TRY(run(r, eval_argv(cx, model, cx.eval_jsonl, heldout_baseline(cx), held, true)));
  out->val = report_number(val, {"qei_metrics", "student_quality"});
  out->heldout = report_number(held, {"qei_metrics", "student_quality"});
  out->heldout_json = report_number(held, {"quality", "student", "json_validity"});
  out->agreement = report_number(held, {"agreement", "top1"});
  return ok_status();
}

}  // namespace

const std::vector<ExperimentArm>& experiment_arms() { return k_arms; }
const char* experiment_default_arm() { return "kd_teacher_init"; }

Status experiment_run(const Config& cfg, const ExperimentOptions& o) {
  const double t0 = now_seconds();
  std::vector<const ExperimentArm*> arms;
  for (const ExperimentArm& a : k_arms)
    if (o.arms.empty() || std::find(o.arms.begin(), o.arms.end(), a.name) != o.arms.end()) arms.push_back(&a);
  for (const std::string& n : o.arms)
    if (std::none_of(k_arms.begin(), k_arms.end(), [&](const ExperimentArm& a) { return n == a.name; }))
      return errorf("unknown arm '%s' (arms: ce_reference, ce_teacher_samples, kd_teacher_samples, kd_reference, "
                    "ce_teacher_init, kd_teacher_init, kd_teacher_init_attn, kd_on_policy)",
                    n.c_str());
  if (o.seeds < 1) return errorf("--seeds %d: at least one", o.seeds);
  if (o.on_policy_rounds < 1) return errorf("--on-policy-rounds %d: at least one", o.on_policy_rounds);

  // The teacher, its tokenizer and the traces of both sources: the pipeline's
  // stages up to the held-out traces, with teacher samples collected too.
  Config c = cfg;
  if (!config_user_set(c, "KD_SOURCES")) config_set(&c, "KD_SOURCES", "reference,teacher_sample", SRC_FLAG);
  PipelineOptions po;
  po.until = stage::kHeldout;
  po.env_file = o.env_file;
  BK_TRY(pipeline_run(c, po));
  Ctx cx;
  cx.cfg = c;
  cx.opt = po;
  BK_TRY(pipeline_setup(cx));
  if (!cx.local_teacher || !cx.plan.student_shares_tokenizer)
    return errorf("bitkd experiment compares recipes with the pipeline's local teacher and its tokenizer shared "
                  "with the student (teacher initialization and scoring need both); unset TEACHER_PROVIDER, "
                  "TOKENIZER_NAME and PIPELINE_STUDENT_TOKENIZER");
  const long long steps = o.steps > 0 ? o.steps : cx.plan.s_steps;
  long long grad_accum = 1;
  BK_TRY(config_int(c, "GRAD_ACCUM_STEPS", &grad_accum));
  if (grad_accum < 1) return errorf("GRAD_ACCUM_STEPS=%lld must be >= 1", grad_accum);
  process_install_interrupt_handlers();
  {
    // The teacher on the validation prompts, for the table.
    RunCtx r;
    r.cx = &cx;
    r.log = path_join(cx.paths.logs, "experiment_teacher.log");
    BK_TRY(ensure_server(cx));
    r.env = child_env(cx);
    BK_TRY(run(r, {"teacher", "--prompts", cx.val_jsonl, "--max-prompts", "0", "--max-tokens",
                   std::to_string(cx.plan.baseline_tokens), "--out", val_baseline(cx), "--force"}));
    stop_server(cx);
  }
  const double teacher_val = report_number(val_baseline(cx), {"quality", "score"});
  const double teacher_heldout = report_number(heldout_baseline(cx), {"quality", "score"});

  std::vector<Run> runs;
  for (const ExperimentArm* a : arms)
    for (int s = 0; s < o.seeds; s++) {
      Run r;
      r.arm = a->name;
      r.seed = 1 + s;
      const double t = now_seconds();
      printf("[experiment] %-20s seed %d ...", a->name, r.seed);
      fflush(stdout);
      Status st = run_arm(cx, *a, r.seed, steps, grad_accum, o.on_policy_rounds, o.resume, &r);
      r.wall_s = now_seconds() - t;
      r.ok = st.ok();
      r.error = st.msg;
      if (st.ok())
        printf(" val %.3f, held-out %.3f (%s%s)\n", r.val, r.heldout, fmt_duration(r.wall_s).c_str(),
               r.reused ? ", training reused" : "");
      else printf(" FAILED: %s\n", st.msg.c_str());
      fflush(stdout);
      runs.push_back(r);
      if (process_interrupted()) {
        stop_server(cx);
        return errorf("interrupted (signal %d)", process_interrupted());
      }
    }
  stop_server(cx);

  // ---- the table
  ojson j;
  j["command"] = "experiment";
  j["timestamp"] = utc_timestamp_iso();
  j["seeds"] = o.seeds;
  j["budget"] = {{"steps", steps}, {"batch", cx.plan.s_batch}, {"grad_accum", grad_accum}, {"seq", cx.plan.s_seq},
                 {"on_policy_rounds", o.on_policy_rounds},
                 {"note", "every arm: the same steps of the same batch and sequence length"}};
  j["student"] = cx.plan.settings["student"];
  j["splits"] = {{"val", cx.val_jsonl + " (carved from the train split; for choosing)"},
                 {"heldout", cx.eval_jsonl + " (reported only)"}};
  j["default_arm"] = experiment_default_arm();
  j["teacher"] = {{"val", teacher_val}, {"heldout", teacher_heldout}};
  ojson rows = ojson::array(), raw = ojson::array();
  std::string md = "| arm | recipe | validation score | held-out score | held-out JSON validity | top-1 agreement |\n"
                   "| --- | --- | --- | --- | --- | --- |\n";
  for (const ExperimentArm* a : arms) {
    std::vector<double> val, held, js, ag;
    for (const Run& r : runs)
      if (r.arm == a->name && r.ok) val.push_back(r.val), held.push_back(r.heldout), js.push_back(r.heldout_json),
                                     ag.push_back(r.agreement);
    const Stat sv = stat_of(val), sh = stat_of(held), sj = stat_of(js), sa = stat_of(ag);
    ojson row;
    row["arm"] = a->name;
    row["recipe"] = a->what;
    row["runs"] = sv.n;
    row["val_mean"] = sv.mean;
    row["val_sd"] = sv.sd;
    row["heldout_mean"] = sh.mean;
    row["heldout_sd"] = sh.sd;
    row["heldout_json_validity_mean"] = sj.mean;
    row["agreement_top1_mean"] = sa.mean;
    rows.push_back(row);
    md += std::string("| ") + (std::string(a->name) == experiment_default_arm() ? "**" + std::string(a->name) + "** (default)"
                                                                                 : std::string(a->name)) +
          " | " + a->what + " | " + pm(sv) + " | " + pm(sh) + " | " + pm(sj) + " | " + pm(sa) + " |\n";
  }
  for (const Run& r : runs)
    raw.push_back({{"arm", r.arm}, {"seed", r.seed}, {"ok", r.ok}, {"error", r.error}, {"val", r.val},
                   {"heldout", r.heldout}, {"heldout_json_validity", r.heldout_json}, {"agreement_top1", r.agreement},
                   {"training_reused", r.reused}, {"wall_s", r.wall_s}});
  j["arms"] = rows;
  j["runs"] = raw;
  j["wall_s"] = now_seconds() - t0;
  char tline[160];
  snprintf(tline, sizeof tline, "| teacher | the float teacher itself | %.3f | %.3f | | |\n", teacher_val, teacher_heldout);
  md += tline;
  md += "\n" + std::to_string(o.seeds) + " seeds per arm, mean +- sample standard deviation; " +
        std::to_string(steps) + " steps of " + std::to_string(cx.plan.s_batch) + " sequences of " +
        std::to_string(cx.plan.s_seq) + " tokens per arm; validation: " + std::to_string(cx.plan.tasks_val) +
        " items carved from the train split, held-out: " + std::to_string(cx.plan.tasks_eval) + " items.\n";
  const std::string jpath = path_join(cx.paths.reports, "ablation.json"), mpath = path_join(cx.paths.reports, "ablation.md");
  BK_TRY(write_file_atomic(jpath, j.dump(2) + "\n"));
  BK_TRY(write_file_atomic(mpath, md));
  printf("\n%s\nwrote %s and %s\n", md.c_str(), jpath.c_str(), mpath.c_str());
  ReportPaths rp;
  rp.reports_dir = cx.paths.reports;
  rp.logs_dir = cx.paths.logs;
  ReportResult rr;
  if (report_write(rp, &rr).ok()) printf("report: %s\n", rr.path.c_str());
  for (const Run& r : runs)
    if (!r.ok) return errorf("arm %s seed %d failed: %s", r.arm.c_str(), r.seed, r.error.c_str());
  return ok_status();
}

}  // namespace bk
