// The stage table: every stage of `bitkd pipeline`, once, in run order. Each
// row says what the stage reads, what makes it stale, what it writes, the
// `bitkd` commands it runs and the key numbers it reports.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/fs.h"
#include "core/log.h"
#include "data/kd_schema.h"
#include "data/loader/loader.h"
#include "pipeline/internal.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"
#include "train/setup.h"

namespace bk {

namespace {

std::string reports(const Ctx& cx, const char* f) { return path_join(cx.paths.reports, f); }
std::string logs(const Ctx& cx, const char* f) { return path_join(cx.paths.logs, f); }

std::vector<std::string> checkpoint_files(const std::string& dir) {
  std::vector<std::string> out;
  for (const std::string& f : list_files(dir, "mini_bitnet_step_", "")) out.push_back(path_join(dir, f));
  return out;
}

// The newest checkpoint of dir (or a placeholder name that does not exist).
std::string latest_checkpoint(const std::string& dir) {
  std::string latest = checkpoint_find_latest(dir);
  return latest.empty() ? path_join(dir, "mini_bitnet_step_N.safetensors") : latest;
}

ojson tokenizer_numbers(const std::string& path) {
  ojson j = ojson::object();
  Tokenizer t;
  if (!tokenizer_load(path, &t).ok()) return j;
  j["path"] = path;
  j["vocab_size"] = tokenizer_vocab_size(t);
  j["sha256"] = tokenizer_hash(t);
  return j;
}

// ---- tasks: the built-in task suite ------------------------------------------------

std::string tasks_what(const Ctx& cx) {
  return "task suite: " + std::to_string(cx.plan.tasks_train) + " train + " + std::to_string(cx.plan.tasks_eval) +
         " held-out items";
}
void tasks_inputs(const Ctx& cx, ojson* in) {
  (*in)["train"] = cx.plan.tasks_train;
  (*in)["val"] = cx.plan.tasks_val;
  (*in)["eval"] = cx.plan.tasks_eval;
}
std::vector<std::string> tasks_outputs(const Ctx& cx) { return {cx.train_jsonl, cx.val_jsonl, cx.eval_jsonl}; }
Status tasks_run(Ctx& cx, bool, PipelineStage* rec) {
  BK_TRY(make_dirs(cx.tasks_dir));
  // Validation items come from the train split but are kept out of it: no
  // teacher pretraining or trace ever sees them (recipes are chosen on them).
  std::vector<std::string> a = command_argv(cx, {"tasks"});
  add_flag(&a, "split", "train");
  add_flag(&a, "n", cx.plan.tasks_train);
  add_flag(&a, "out", cx.train_jsonl);
  add_flag(&a, "val-n", cx.plan.tasks_val);
  add_flag(&a, "val-out", cx.val_jsonl);
  BK_TRY(run_command(cx, rec, a));
  a = command_argv(cx, {"tasks"});
  add_flag(&a, "split", "eval");
  add_flag(&a, "n", cx.plan.tasks_eval);
  add_flag(&a, "out", cx.eval_jsonl);
  return run_command(cx, rec, a);
}
ojson tasks_numbers(const Ctx& cx, const Stamp&) {
  return ojson{{"train_items", cx.plan.tasks_train}, {"val_items", cx.plan.tasks_val},
               {"eval_items", cx.plan.tasks_eval}, {"train_file", cx.train_jsonl}, {"val_file", cx.val_jsonl},
               {"eval_file", cx.eval_jsonl}};
}

// ---- tokenizers: teacher (local teacher only) and student ---------------------------

std::string tokenizers_what(const Ctx& cx) {
  const PipelinePlan& p = cx.plan;
  std::string what;
  if (cx.local_teacher) what = "teacher " + p.teacher_tok_type + " " + std::to_string(p.teacher_vocab);
  what += std::string(what.empty() ? "" : ", ") + "student " +
          (cx.student_tok_user                ? cx.student_tok + " (TOKENIZER_NAME)"
           : p.student_shares_tokenizer ? std::string("the teacher's")
                                        : p.student_tok_type + " " + std::to_string(p.student_vocab));
  return "tokenizers: " + what;
}
void tokenizers_inputs(const Ctx& cx, ojson* in) {
  const PipelinePlan& p = cx.plan;
  (*in)["corpus_tasks"] = p.tokenizer_tasks;
  if (cx.local_teacher) (*in)["teacher"] = p.teacher_tok_type + "/" + std::to_string(p.teacher_vocab);
  (*in)["student"] = cx.student_tok_user               ? "user: " + file_hash(cx.student_tok)
                     : p.student_shares_tokenizer ? std::string("teacher's")
                                                  : p.student_tok_type + "/" + std::to_string(p.student_vocab);
}
std::vector<std::string> tokenizers_outputs(const Ctx& cx) {
  std::vector<std::string> o = {cx.student_tok};
  if (cx.local_teacher) o.push_back(cx.teacher_tok);
  return o;
}
Status tokenizers_run(Ctx& cx, bool, PipelineStage* rec) {
  auto train = [&](const std::string& type, long long vocab, const std::string& out_model) -> Status {
    BK_TRY(make_dirs(path_dirname(out_model)));
    std::vector<std::string> a = command_argv(cx, {"tokenizer", "train"});
    add_flag(&a, "model-type", type);
    add_flag(&a, "vocab-size", vocab);
    add_flag(&a, "tasks", cx.plan.tokenizer_tasks);
    add_flag(&a, "out", out_model.substr(0, out_model.size() - 6));  // without ".model"
    return run_command(cx, rec, a);
  };
  if (cx.local_teacher) BK_TRY(train(cx.plan.teacher_tok_type, cx.plan.teacher_vocab, cx.teacher_tok));
  if (!cx.student_tok_user && !cx.plan.student_shares_tokenizer)
    BK_TRY(train(cx.plan.student_tok_type, cx.plan.student_vocab, cx.student_tok));
  return ok_status();
}
ojson tokenizers_numbers(const Ctx& cx, const Stamp&) {
  ojson j;
  if (cx.local_teacher) j["teacher"] = tokenizer_numbers(cx.teacher_tok);
  j["student"] = tokenizer_numbers(cx.student_tok);
  return j;
}

// These keys of the training report (train/setup.h) a pretrain or train
// stage's command printed last in its log; no log: the stamp's numbers.
ojson report_numbers(const std::string& log, const Stamp& st, std::initializer_list<const char*> keys) {
  std::string text;
  TrainReport r;
  if (!read_file(log, &text).ok() || !train_report_parse(text, &r).ok()) return st.numbers;
  const ojson all = ojson::parse(train_report_to_json(r));
  ojson j = ojson::object();
  for (const char* k : keys)
    if (all.contains(k)) j[k] = all[k];
  return j;
}

// ---- pretrain: the local float teacher ----------------------------------------------

std::string pretrain_what(const Ctx& cx) {
  const PipelinePlan& p = cx.plan;
  return "float teacher " + std::to_string(p.t_dim) + "x" + std::to_string(p.t_layers) + ", " +
         std::to_string(p.t_steps) + " steps of " + std::to_string(p.t_batch) + " on " + cx.train_jsonl;
}
void pretrain_inputs(const Ctx& cx, ojson* in) {
  const PipelinePlan& p = cx.plan;
  (*in)["tasks"] = file_hash(cx.train_jsonl);
  (*in)["tokenizer"] = tokenizer_file_hash(cx.teacher_tok);
  (*in)["model"] = {p.t_dim, p.t_layers, p.t_heads, p.t_seq};
  (*in)["train"] = {p.t_batch, p.t_steps, p.t_lr, p.t_min_lr, p.t_warmup, p.t_wd};
}
std::vector<std::string> pretrain_outputs(const Ctx& cx) { return {latest_checkpoint(cx.teacher_dir)}; }
// The teacher is defined by the plan (PIPELINE_TEACHER_* and the presets):
// the student's training and model variables a user sets must not change it,
// so its command sees their defaults.
// (MINI_HEAD_DIM counts only when set, so the command gets --head-dim instead.)
void pretrain_env(const Ctx&, ProcessEnv* e) {
  for (const ConfigVar& v : config_vars())
    if ((strcmp(v.group, "train") == 0 || strcmp(v.group, "model") == 0) && strcmp(v.name, "MINI_HEAD_DIM") != 0)
      (*e)[v.name] = v.default_value;
}
void pretrain_clean(Ctx& cx) { remove_files(checkpoint_files(cx.teacher_dir)); }
Status pretrain_run(Ctx& cx, bool resume, PipelineStage* rec) {
  const PipelinePlan& p = cx.plan;
  BK_TRY(make_dirs(cx.teacher_dir));
  std::vector<std::string> a = command_argv(cx, {"pretrain"});
  add_flag(&a, "data", cx.train_jsonl);
  add_flag(&a, "tokenizer", cx.teacher_tok);
  add_flag(&a, "weight-quant", "none");
  add_flag(&a, "act-bits", "0");
  add_flag(&a, "dim", p.t_dim);
  add_flag(&a, "layers", p.t_layers);
  add_flag(&a, "heads", p.t_heads);
  add_flag(&a, "head-dim", p.t_dim / p.t_heads);
  add_flag(&a, "kv-heads", "0");
  add_flag(&a, "ffn", "0");
  add_flag(&a, "ffn-act", "swiglu");
  a.push_back("--subln=1");
  a.push_back("--tie=1");
  add_flag(&a, "seq", p.t_seq);
  add_flag(&a, "batch", p.t_batch);
  add_flag(&a, "grad-accum", "1");
  add_flag(&a, "steps", p.t_steps);
  add_flag(&a, "tmax", p.t_steps);
  add_flag_num(&a, "lr", p.t_lr);
  add_flag_num(&a, "min-lr", p.t_min_lr);
  add_flag(&a, "warmup", p.t_warmup);
  add_flag(&a, "schedule", "cosine");
  add_flag_num(&a, "weight-decay", p.t_wd);
  a.push_back("--two-stage=0");
  add_flag(&a, "log-interval", std::max(1LL, std::min(25LL, p.t_steps / 10)));
  add_flag(&a, "checkpoint-interval", std::max(1LL, p.t_steps / 4));
  add_flag(&a, "keep-checkpoints", "1");
  add_flag(&a, "out", cx.teacher_dir);
  add_flag(&a, "metrics", logs(cx, "pretrain_metrics.jsonl"));
  if (resume) a.push_back("--resume");
  else remove_files({logs(cx, "pretrain_metrics.jsonl")});
  return run_command(cx, rec, a);
}
ojson pretrain_numbers(const Ctx& cx, const Stamp& st) {
  ojson j = report_numbers(stage_log_path(cx, stage::kPretrain), st,
                           {"checkpoint", "steps", "first_loss", "last_loss", "seen_tokens", "tokens_per_s"});
  ModelConfig mc;
  std::string ck = checkpoint_find_latest(cx.teacher_dir);
  if (!ck.empty() && checkpoint_read_config(ck, &mc).ok()) {
    j["checkpoint"] = ck;
    j["config"] = ojson::parse(model_config_to_json(mc), nullptr, false);
  }
  return j;
}

// ---- teacher: the locked baseline ----------------------------------------------------

std::string teacher_what(const Ctx& cx) {
  return "teacher baseline on " + std::to_string(cx.plan.baseline_prompts) + " held-out prompts (" + cx.teacher_desc +
         ")";
}
void teacher_inputs(const Ctx& cx, ojson* in) {
  if (!cx.local_teacher) (*in)["teacher"] = cx.teacher_desc;
  (*in)["tasks"] = cx.baseline_prompts_user ? file_hash(config_str(cx.cfg, "TEACHER_BASELINE_PROMPTS_FILE"))
                                            : file_hash(cx.eval_jsonl);
  (*in)["prompts"] = cx.plan.baseline_prompts;
  (*in)["max_tokens"] = cx.plan.baseline_tokens;
}
std::vector<std::string> teacher_outputs(const Ctx& cx) { return {reports(cx, "teacher_baseline.json")}; }
Status teacher_run(Ctx& cx, bool, PipelineStage* rec) {
  std::vector<std::string> a = command_argv(cx, {"teacher"});
  if (!cx.baseline_prompts_user) add_flag(&a, "prompts", cx.eval_jsonl);
  add_flag(&a, "max-prompts", cx.plan.baseline_prompts);
  add_flag(&a, "max-tokens", cx.plan.baseline_tokens);
  // The pipeline knows the inputs changed (or --force): the old baseline is stale.
  a.push_back("--force");
  return run_command(cx, rec, a);
}
ojson teacher_numbers(const Ctx& cx, const Stamp&) {
  ojson r, j = ojson::object();
  if (!read_json_file(reports(cx, "teacher_baseline.json"), &r)) return j;
  if (r.contains("quality")) {
    j["quality"] = r["quality"].value("score", ojson());
    j["json_validity"] = r["quality"].value("json_validity", ojson());
    j["scored_prompts"] = r["quality"].value("scored_prompts", ojson());
    if (r["quality"].contains("per_task")) j["per_task"] = r["quality"]["per_task"];
  }
  if (r.contains("metrics")) {
    j["avg_decode_tps"] = r["metrics"].value("avg_decode_tps_8k", ojson());
    j["ok_prompts"] = r["metrics"].value("ok_prompts", ojson());
    j["failed_prompts"] = r["metrics"].value("failed_prompts", ojson());
    j["latency_p50_s"] = r["metrics"].value("latency_p50_s", ojson());
  }
  j["memory_bytes"] = r.value("memory_teacher_constant", ojson());
  j["memory_source"] = r.value("memory_teacher_source", ojson());
  j["model"] = r.value("model", ojson());
  j["provider"] = r.value("provider", ojson());
  return j;
}

// ---- collect: KD traces (train prompts, and the held-out ones apart) -----------------

std::string collect_what(const Ctx& cx) {
  std::string src;
  for (const std::string& x : cx.plan.kd_sources) src += (src.empty() ? "" : " + ") + x;
  return "KD traces (" + src + ") for " + std::to_string(cx.plan.kd_prompts) + " prompts, top-" +
         config_str(cx.cfg, "TEACHER_TOP_LOGPROBS", "20") + " logprobs";
}
void collect_inputs(const Ctx& cx, ojson* in) {
  if (!cx.local_teacher) (*in)["teacher"] = cx.teacher_desc;
  (*in)["tokenizer"] = tokenizer_file_hash(cx.student_tok);
  (*in)["tasks"] = cx.kd_prompts_user ? file_hash(config_str(cx.cfg, "KD_PROMPTS_FILE")) : file_hash(cx.train_jsonl);
  (*in)["prompts"] = cx.plan.kd_prompts;
  (*in)["max_tokens"] = cx.plan.kd_tokens;
  (*in)["sources"] = cx.plan.kd_sources;
}
std::vector<std::string> collect_outputs(const Ctx& cx) {
  std::vector<std::string> o;
  for (const std::string& src : cx.plan.kd_sources) {
    o.push_back(traces_stats(cx, src));
    o.push_back(path_join(traces_dir(cx, src), kd_shard_name(0)));
  }
  return o;
}
// Traces of a hosted teacher cost money: never deleted automatically (a rerun
// resumes and adds what is missing). Local traces are remade.
void remove_traces(const Ctx& cx, const std::string& dir, const std::string& stats) {
  if (!cx.local_teacher) {
    if (list_files(dir, "kd_prompts_", ".parquet").empty()) return;
    BK_LOG_WARN("inputs changed; existing shards in %s are kept and the collector resumes (delete them to start "
                "over)",
                dir.c_str());
    return;
  }
  std::vector<std::string> f = {stats};
  for (const std::string& n : list_files(dir, "kd_shard_", ".parquet")) f.push_back(path_join(dir, n));
  for (const std::string& n : list_files(dir, "kd_prompts_", ".parquet")) f.push_back(path_join(dir, n));
  remove_files(f);
}
void collect_clean(Ctx& cx) {
  for (const char* src : {"teacher_sample", "reference"}) remove_traces(cx, traces_dir(cx, src), traces_stats(cx, src));
}
Status collect_run(Ctx& cx, bool, PipelineStage* rec) {
  for (const std::string& src : cx.plan.kd_sources) {
    std::vector<std::string> a = command_argv(cx, {"collect"});
    if (!cx.kd_prompts_user) add_flag(&a, "prompts", cx.train_jsonl);
    add_flag(&a, "max-prompts", cx.plan.kd_prompts);
    add_flag(&a, "max-tokens", cx.plan.kd_tokens);
    add_flag(&a, "concurrency", cx.plan.concurrency);
    add_flag(&a, "tokenizer", cx.student_tok);
    add_flag(&a, "source", src);
    add_flag(&a, "out", traces_dir(cx, src));
    add_flag(&a, "stats", traces_stats(cx, src));
    // Scoring a given text needs legacy Completions with echo (bitkd serve, vLLM, llama.cpp).
    if (src != "teacher_sample") add_flag(&a, "api", "completions");
    BK_TRY(run_command(cx, rec, a));
    // A run where prompts failed leaves holes; say so rather than train on less.
    ojson s;
    if (read_json_file(traces_stats(cx, src), &s) && s.contains("prompts")) {
      long long failed = s["prompts"].value("failed", 0LL);
      long long ok = s["prompts"].value("ok", 0LL) + s["prompts"].value("already_collected", 0LL);
      if (ok == 0) return errorf("no %s prompt was collected (%lld failed); see %s", src.c_str(), failed,
                                 traces_stats(cx, src).c_str());
      if (failed > 0)
        BK_LOG_WARN("collect: %lld %s prompts failed (kept going with %lld); rerun to retry them", failed, src.c_str(),
                    ok);
    }
  }
  return ok_status();
}
ojson collect_numbers(const Ctx& cx, const Stamp&) {
  ojson j = ojson::object();
  long long ok = 0, already = 0, failed = 0, steps = 0, valid = 0;
  double mass = 0;
  int nmass = 0;
  for (const std::string& src : cx.plan.kd_sources) {
    ojson s;
    if (!read_json_file(traces_stats(cx, src), &s)) continue;
    ojson one = ojson::object();
    if (s.contains("prompts")) {
      ok += s["prompts"].value("ok", 0LL), already += s["prompts"].value("already_collected", 0LL);
      failed += s["prompts"].value("failed", 0LL);
      one["prompts_ok"] = s["prompts"].value("ok", 0LL) + s["prompts"].value("already_collected", 0LL);
    }
    if (s.contains("steps")) {
      steps += s["steps"].value("total", 0LL), valid += s["steps"].value("valid", 0LL);
      if (s["steps"].contains("mean_topk_mass") && s["steps"]["mean_topk_mass"].is_number())
        mass += s["steps"]["mean_topk_mass"].get<double>(), nmass++;
      one["steps"] = s["steps"].value("total", ojson());
      one["steps_valid"] = s["steps"].value("valid", ojson());
    }
    j["sources"][src] = one;
  }
  j["prompts_ok"] = ok;
  j["prompts_already"] = already;
  j["prompts_failed"] = failed;
  j["steps"] = steps;
  j["steps_valid"] = valid;
  j["mean_topk_mass"] = nmass ? ojson(mass / nmass) : ojson();
  return j;
}

// ---- heldout: KD traces of the held-out eval prompts -----------------------------------
// In their own folder so training never reads them: eval measures agreement
// and KL on prompts the student did not train on.

// The teacher's scores of the held-out references, as the train traces are;
// a teacher that cannot score a given text (KD_SOURCES without reference)
// gives its own samples here too.
std::string heldout_source(const Ctx& cx) {
  for (const std::string& s : cx.plan.kd_sources)
    if (s == "reference") return s;
  return "teacher_sample";
}
std::string heldout_what(const Ctx& cx) {
  return "KD traces of the " + std::to_string(cx.plan.eval_prompts) + " held-out prompts (for eval only)";
}
void heldout_inputs(const Ctx& cx, ojson* in) {
  if (!cx.local_teacher) (*in)["teacher"] = cx.teacher_desc;
  (*in)["tokenizer"] = tokenizer_file_hash(cx.student_tok);
  (*in)["tasks"] = cx.eval_prompts_user ? file_hash(config_str(cx.cfg, "EVAL_PROMPTS_FILE")) : file_hash(cx.eval_jsonl);
  (*in)["prompts"] = cx.plan.eval_prompts;
  (*in)["max_tokens"] = cx.plan.kd_tokens;
  (*in)["source"] = heldout_source(cx);
}
std::vector<std::string> heldout_outputs(const Ctx& cx) {
  return {logs(cx, "collect_heldout_stats.json"), path_join(heldout_dir(cx), kd_shard_name(0))};
}
void heldout_clean(Ctx& cx) { remove_traces(cx, heldout_dir(cx), logs(cx, "collect_heldout_stats.json")); }
Status heldout_run(Ctx& cx, bool, PipelineStage* rec) {
  std::vector<std::string> h = command_argv(cx, {"collect"});
  add_flag(&h, "prompts", cx.eval_prompts_user ? config_str(cx.cfg, "EVAL_PROMPTS_FILE") : cx.eval_jsonl);
  add_flag(&h, "max-prompts", cx.plan.eval_prompts);
  add_flag(&h, "max-tokens", cx.plan.kd_tokens);
  add_flag(&h, "concurrency", cx.plan.concurrency);
  add_flag(&h, "tokenizer", cx.student_tok);
  const std::string src = heldout_source(cx);
  add_flag(&h, "source", src);
  if (src != "teacher_sample") add_flag(&h, "api", "completions");  // scoring needs echo, as in collect
  add_flag(&h, "out", heldout_dir(cx));
  add_flag(&h, "stats", logs(cx, "collect_heldout_stats.json"));
  return run_command(cx, rec, h);
}
ojson heldout_numbers(const Ctx& cx, const Stamp&) {
  ojson h, j = ojson::object();
  if (read_json_file(logs(cx, "collect_heldout_stats.json"), &h) && h.contains("prompts") && h.contains("steps")) {
    j["prompts_ok"] = h["prompts"].value("ok", 0LL) + h["prompts"].value("already_collected", 0LL);
    j["steps"] = h["steps"].value("total", ojson());
    j["steps_valid"] = h["steps"].value("valid", ojson());
  }
  return j;
}

// ---- train: KD training of the ternary student ----------------------------------------

std::string train_what(const Ctx& cx) {
  const PipelinePlan& p = cx.plan;
  return "ternary student " +
         (p.init_from_teacher ? std::string("from the teacher's weights")
                              : std::to_string(p.s_dim) + "x" + std::to_string(p.s_layers)) +
         ", " + std::to_string(p.s_steps) + " steps of " + std::to_string(p.s_batch) + " (KD, A8 -> A4 flip)";
}
void train_inputs(const Ctx& cx, ojson* in) {
  const PipelinePlan& p = cx.plan;
  (*in)["tokenizer"] = tokenizer_file_hash(cx.student_tok);
  (*in)["sources"] = p.kd_sources;
  (*in)["init"] = p.init_from_teacher ? "teacher" : "random";
  (*in)["model"] = {p.s_dim, p.s_layers, p.s_heads, p.s_ffn, p.s_seq};
  (*in)["train"] = {p.s_batch, p.s_steps, p.s_lr, p.s_warmup, p.kd_weight, p.ce_weight};
}
std::vector<std::string> train_outputs(const Ctx& cx) { return {latest_checkpoint(cx.paths.checkpoints)}; }
void train_clean(Ctx& cx) {
  remove_files(checkpoint_files(cx.paths.checkpoints));
  remove_files({logs(cx, "train_metrics.jsonl")});
}
Status train_run(Ctx& cx, bool resume, PipelineStage* rec) {
  const PipelinePlan& p = cx.plan;
  std::vector<std::string> a = command_argv(cx, {"train"});
  add_flag(&a, "tokenizer", cx.student_tok);
  add_flag(&a, "data", train_data_dirs(cx));
  if (p.init_from_teacher) add_flag(&a, "init-from", checkpoint_find_latest(cx.teacher_dir));
  add_flag(&a, "dim", p.s_dim);
  add_flag(&a, "layers", p.s_layers);
  add_flag(&a, "heads", p.s_heads);
  add_flag(&a, "ffn", p.s_ffn);
  add_flag(&a, "seq", p.s_seq);
  add_flag(&a, "batch", p.s_batch);
  add_flag(&a, "steps", p.s_steps);
  add_flag_num(&a, "lr", p.s_lr);
  add_flag(&a, "warmup", p.s_warmup);
  add_flag_num(&a, "kd-weight", p.kd_weight);
  add_flag_num(&a, "ce-weight", p.ce_weight);
  // The flip belongs inside the run: unless BUDGET_TOKENS is set, the budget
  // is the real target tokens this run will see, counted by the train
  // command's own loader (train/setup.h), so FLIP_FRACTION of it is reached.
  if (p.budget_user) add_flag(&a, "budget", fmt_exact(p.budget_user_value));
  else a.push_back("--budget-from-data");
  add_flag(&a, "checkpoint-interval", p.s_ckpt_interval);
  add_flag(&a, "log-interval", p.s_log_interval);
  if (resume) a.push_back("--resume");
  return run_command(cx, rec, a);
}
ojson train_numbers(const Ctx& cx, const Stamp& st) {
  return report_numbers(stage_log_path(cx, stage::kTrain), st,
                        {"checkpoint", "steps", "first_loss", "last_loss", "first_kl", "last_kl", "first_ce", "last_ce",
                         "seen_tokens", "flip_done", "flip_step", "flip_tokens", "act_bits", "nan_guards",
                         "skipped_steps", "tokens_per_s"});
}

// ---- eval: the student on the held-out prompts, QEI ----------------------------------

std::string eval_what(const Ctx& cx) {
  return "student eval on " + std::to_string(cx.plan.eval_prompts) + " held-out prompts (packed engine), QEI";
}
void eval_inputs(const Ctx& cx, ojson* in) {
  (*in)["tasks"] =
      cx.eval_prompts_user ? file_hash(config_str(cx.cfg, "EVAL_PROMPTS_FILE")) : file_hash(cx.eval_jsonl);
  (*in)["prompts"] = cx.plan.eval_prompts;
  (*in)["max_new_tokens"] = cx.plan.eval_tokens;
}
std::vector<std::string> eval_outputs(const Ctx& cx) { return {reports(cx, "mini_evaluation_report.json")}; }
Status eval_run(Ctx& cx, bool, PipelineStage* rec) {
  std::vector<std::string> a = command_argv(cx, {"eval"});
  add_flag(&a, "tokenizer", cx.student_tok);
  if (!cx.eval_prompts_user) add_flag(&a, "prompts", cx.eval_jsonl);
  add_flag(&a, "max-prompts", cx.plan.eval_prompts);
  add_flag(&a, "max-new-tokens", cx.plan.eval_tokens);
  a.push_back("--untrained-reference");
  add_flag(&a, "kd-eval-shard", path_join(heldout_dir(cx), kd_shard_name(0)));
  add_flag(&a, "kd-eval-max-examples", 0);
  return run_command(cx, rec, a);
}
ojson eval_numbers(const Ctx& cx, const Stamp&) {
  ojson r, j = ojson::object();
  if (!read_json_file(reports(cx, "mini_evaluation_report.json"), &r)) return j;
  if (r.contains("qei_metrics")) {
    for (const char* k : {"student_quality", "teacher_quality", "student_memory_gb", "teacher_memory_gb", "student_tps",
                          "teacher_tps", "qei", "qei_speed", "gates"})
      if (r["qei_metrics"].contains(k)) j[k] = r["qei_metrics"][k];
  }
  if (r.contains("quality") && r["quality"].is_object()) {
    const ojson& q = r["quality"];
    if (q.contains("student") && q["student"].is_object()) j["student_json_validity"] = q["student"].value("json_validity", ojson());
    if (q.contains("teacher") && q["teacher"].is_object()) j["teacher_json_validity"] = q["teacher"].value("json_validity", ojson());
    j["matched_prompts"] = q.value("matched_prompts", ojson());
    if (q.contains("untrained") && q["untrained"].is_object()) {
      j["untrained_quality"] = q["untrained"].value("score", ojson());
      j["untrained_json_validity"] = q["untrained"].value("json_validity", ojson());
    }
  }
  if (r.contains("agreement")) {
    j["agreement_top1"] = r["agreement"].value("top1", ojson());
    j["agreement_kl"] = r["agreement"].value("kl", ojson());
  }
  if (r.contains("throughput")) j["decode_tokens_per_s"] = r["throughput"].value("decode_tokens_per_s", ojson());
  if (r.contains("memory")) j["peak_rss_bytes"] = r["memory"].value("peak_rss_bytes", ojson());
  if (r.contains("teacher")) j["teacher_memory_source"] = r["teacher"].value("memory_source", ojson());
  return j;
}

// ---- dryrun: the 7B shape, forward only -----------------------------------------------

std::string dryrun_what(const Ctx& cx) {
  return cx.plan.tiny ? "dry run of a small shape (tiny run)" : "7B dry run: synthetic packed ternary forward, A8 and A4";
}
void dryrun_inputs(const Ctx& cx, ojson* in) { (*in)["flags"] = shell_join(cx.plan.dryrun_flags); }
std::vector<std::string> dryrun_outputs(const Ctx& cx) { return {reports(cx, "dryrun_7b.json")}; }
Status dryrun_run(Ctx& cx, bool, PipelineStage* rec) {
  std::vector<std::string> a = command_argv(cx, {"dryrun"});
  for (const std::string& f : cx.plan.dryrun_flags) a.push_back(f);
  return run_command(cx, rec, a);
}
ojson dryrun_numbers(const Ctx& cx, const Stamp&) {
  ojson r, j = ojson::object();
  if (!read_json_file(reports(cx, "dryrun_7b.json"), &r)) return j;
  if (r.contains("params")) j["params"] = r["params"].value("count", ojson());
  j["peak_rss_bytes"] = r.value("peak_rss_bytes", ojson());
  if (r.contains("weight_bytes")) j["weight_bytes"] = r["weight_bytes"].value("total", ojson());
  if (r.contains("runs") && r["runs"].is_object()) {
    for (auto it = r["runs"].begin(); it != r["runs"].end(); ++it)
      if (it.value().is_object()) j[it.key() + "_time_s"] = it.value().value("time_s", ojson());
  } else if (r.contains("runs") && r["runs"].is_array()) {
    for (const ojson& run : r["runs"])
      if (run.is_object() && run.contains("name")) j[run["name"].get<std::string>() + "_time_s"] = run.value("time_s", ojson());
  }
  if (r.contains("agreement")) j["a8_a4_agreement"] = r["agreement"];
  if (r.contains("runs") && r["runs"].is_array() && !r["runs"].empty() && r["runs"][0].contains("decode"))
    j["decode_tokens_per_s"] = r["runs"][0]["decode"].value("tokens_per_s", ojson());  // the first (A8) run
  return j;
}

// ---- each stage's key numbers in one line of the summary

std::string tasks_note(const ojson& n) {
  return fmt_number(json_number(n, {"train_items"}), "%.0f") + " train / " +
         fmt_number(json_number(n, {"eval_items"}), "%.0f") + " held-out items";
}
std::string tokenizers_note(const ojson& n) {
  std::string s = "student vocab " + fmt_number(json_number(n, {"student", "vocab_size"}), "%.0f");
  if (n.contains("teacher")) s = "teacher vocab " + fmt_number(json_number(n, {"teacher", "vocab_size"}), "%.0f") + ", " + s;
  return s;
}
std::string loss_line(const ojson& n) {
  return "loss " + fmt_number(json_number(n, {"first_loss"}), "%.3f") + " -> " +
         fmt_number(json_number(n, {"last_loss"}), "%.3f");
}
std::string pretrain_note(const ojson& n) {
  return n.contains("last_loss") ? loss_line(n) + " in " + fmt_number(json_number(n, {"steps"}), "%.0f") + " steps" : "";
}
std::string teacher_note(const ojson& n) {
  if (!n.contains("quality")) return "";
  return "quality " + fmt_number(json_number(n, {"quality"})) + ", JSON valid " +
         fmt_percent(json_number(n, {"json_validity"})) + ", " +
         fmt_number(json_number(n, {"avg_decode_tps"}), "%.0f") + " tok/s";
}
std::string collect_note(const ojson& n) {
  if (!n.contains("steps")) return "";
  const double already = json_number(n, {"prompts_already"});
  return fmt_number(json_number(n, {"prompts_ok"}) + (std::isfinite(already) ? already : 0), "%.0f") + " prompts, " +
         fmt_number(json_number(n, {"steps"}), "%.0f") + " steps (" +
         fmt_number(json_number(n, {"steps"}) - json_number(n, {"steps_valid"}), "%.0f") + " invalid), top-K mass " +
         fmt_number(json_number(n, {"mean_topk_mass"}), "%.3f");
}
std::string heldout_note(const ojson& n) {
  if (!n.contains("steps")) return "";
  return fmt_number(json_number(n, {"prompts_ok"}), "%.0f") + " held-out prompts, " +
         fmt_number(json_number(n, {"steps_valid"}), "%.0f") + " valid steps (eval's agreement and KL)";
}
std::string train_note(const ojson& n) {
  if (!n.contains("last_loss")) return "";
  return loss_line(n) + ", KL " + fmt_number(json_number(n, {"last_kl"}), "%.3f") + ", A" +
         fmt_number(json_number(n, {"act_bits"}), "%.0f") +
         (n.value("flip_done", false) ? " (flipped at step " + fmt_number(json_number(n, {"flip_step"}), "%.0f") + ")"
                                      : " (no flip)");
}
std::string eval_note(const ojson& n) {
  if (!n.contains("student_quality")) return "";
  return "student " + fmt_number(json_number(n, {"student_quality"})) + " vs teacher " +
         fmt_number(json_number(n, {"teacher_quality"})) + ", QEI " + fmt_number(json_number(n, {"qei"}));
}
std::string dryrun_note(const ojson& n) {
  if (!n.contains("params")) return "";
  const double decode = json_number(n, {"decode_tokens_per_s"});
  return fmt_params(json_number(n, {"params"})) + " params, peak RSS " + fmt_bytes(json_number(n, {"peak_rss_bytes"})) +
         (std::isfinite(decode) ? ", decode " + fmt_number(decode, "%.1f") + " tok/s" : "");
}

using namespace stage;
const std::vector<StageSpec> k_stages = {
    {kTasks, {}, false, false, tasks_what, tasks_inputs, tasks_outputs, tasks_run, nullptr, tasks_numbers, tasks_note},
    {kTokenizers, {}, false, false, tokenizers_what, tokenizers_inputs, tokenizers_outputs, tokenizers_run, nullptr,
     tokenizers_numbers, tokenizers_note},
    {kPretrain, {kTasks, kTokenizers}, true, false, pretrain_what, pretrain_inputs, pretrain_outputs, pretrain_run,
     pretrain_clean, pretrain_numbers, pretrain_note, pretrain_env},
    {kTeacher, {kTasks, kPretrain}, false, true, teacher_what, teacher_inputs, teacher_outputs, teacher_run, nullptr,
     teacher_numbers, teacher_note},
    {kCollect, {kTasks, kTokenizers, kPretrain}, false, true, collect_what, collect_inputs, collect_outputs,
     collect_run, collect_clean, collect_numbers, collect_note},
    {kHeldout, {kTasks, kTokenizers, kPretrain}, false, true, heldout_what, heldout_inputs, heldout_outputs,
     heldout_run, heldout_clean, heldout_numbers, heldout_note},
    {kTrain, {kTokenizers, kPretrain, kCollect}, false, false, train_what, train_inputs, train_outputs, train_run,
     train_clean, train_numbers, train_note},
    {kEval, {kTasks, kTokenizers, kTeacher, kHeldout, kTrain}, false, false, eval_what, eval_inputs, eval_outputs,
     eval_run, nullptr, eval_numbers, eval_note},
    {kDryrun, {}, false, false, dryrun_what, dryrun_inputs, dryrun_outputs, dryrun_run, nullptr, dryrun_numbers,
     dryrun_note},
};

}  // namespace

const std::vector<StageSpec>& stage_table() { return k_stages; }

const StageSpec* stage_find(const std::string& name) {
  for (const StageSpec& s : k_stages)
    if (name == s.name) return &s;
  return nullptr;
}

std::vector<std::string> pipeline_stage_names() {
  std::vector<std::string> out;
  for (const StageSpec& s : k_stages) out.push_back(s.name);
  return out;
}

}  // namespace bk
