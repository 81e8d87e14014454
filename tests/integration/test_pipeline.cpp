// The whole pipeline at tiny size through the real binary: every stage runs
// as `bitkd <command>` (the local teacher served on a free loopback port),
// every artifact exists, the summary agrees with the reports it summarises,
// a second run skips every stage, a changed setting reruns only the stages
// that depend on it, a failing stage is named with its log, and a teacher
// given in the environment replaces the local one.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/kd_schema.h"
#include "testutil/testutil.h"

using json = nlohmann::json;

namespace {

// Variables of a developer's shell that would change what the pipeline does.
const char* kUnset =
    "env -u PROVIDER -u TEACHER_PROVIDER -u TEACHER_BASE_URL -u TEACHER_MODEL -u TEACHER_API_KEY -u TOKENIZER_NAME "
    "-u PIPELINE_SCALE -u DATA_DIR -u CHECKPOINTS_DIR -u REPORTS_DIR -u LOGS_DIR -u DRIVE_ROOT -u KD_DATA_PATH ";

std::string pipeline_cmd(const std::string& dir, const std::string& extra_env, const std::string& flags) {
  return "cd '" + dir + "' && " + kUnset + "OMP_WAIT_POLICY=PASSIVE ARTIFACTS_DIR='" + dir + "/artifacts' " +
         extra_env + " '" + bk_test::bitkd_exe() + "' pipeline --tiny --env-file '" + dir + "/no.env' " + flags;
}

bool exists(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0;
}

long long mtime_ns(const std::string& p) {
  struct stat st;
  if (stat(p.c_str(), &st) != 0) return -1;
  return (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
}

json load(const std::string& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return json::parse(ss.str(), nullptr, false);
}

const json& stage(const json& summary, const std::string& name) {
  static const json none;
  for (const json& s : summary["stages"])
    if (s["name"] == name) return s;
  return none;
}

const json& check(const json& summary, const std::string& prefix) {
  static const json none;
  for (const json& c : summary["checklist"])
    if (c["item"].get<std::string>().rfind(prefix, 0) == 0) return c;
  return none;
}

// A number or null in the summary equals the report's value.
void expect_same(const json& a, const json& b, const std::string& what) {
  if (b.is_null()) {
    EXPECT_TRUE(a.is_null()) << what << ": summary " << a << ", report null";
  } else {
    ASSERT_TRUE(a.is_number()) << what << ": " << a;
    EXPECT_NEAR(a.get<double>(), b.get<double>(), 1e-12 * (1 + std::fabs(b.get<double>()))) << what;
  }
}

// A gate is pass when the value clears the threshold, fail when not, and
// not_measured when the value is missing.
void expect_gate(const json& c, const json& value, double threshold) {
  ASSERT_TRUE(c.is_object());
  if (!value.is_number()) EXPECT_EQ(c["status"], "not_measured") << c;
  else EXPECT_EQ(c["status"], value.get<double>() >= threshold ? "pass" : "fail") << c << " value " << value;
}

const std::vector<std::string> kStages = {"tasks",   "tokenizers", "pretrain", "teacher", "collect",
                                          "heldout", "train",      "eval",     "dryrun"};

TEST(Pipeline, TinyRunWritesEveryArtifactAndSkipsWhenDone) {
  const std::string dir = bk_test::scratch_dir("pipeline_tiny");
  const std::string art = dir + "/artifacts";
  std::string out;
  int rc = bk_test::run_command(pipeline_cmd(dir, "", ""), &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("checklist:"), std::string::npos) << out;

  // Every artifact of the layout.
  for (const char* p :
       {"tasks/train.jsonl", "tasks/val.jsonl", "tasks/eval.jsonl", "teacher/tokenizer.model",
        "reports/teacher_baseline.json", "data/reference/kd_shard_000.parquet",
        "data/reference/kd_prompts_000.parquet", "logs/collect_reference_stats.json", "logs/train_metrics.jsonl",
        "logs/pretrain_metrics.jsonl",
        "reports/mini_evaluation_report.json", "reports/dryrun_7b.json", "reports/pipeline_summary.json",
        "logs/serve.log", "data/heldout/kd_shard_000.parquet", "logs/collect_heldout_stats.json"})
    EXPECT_TRUE(exists(art + "/" + p)) << p;
  for (const std::string& s : kStages) {
    EXPECT_TRUE(exists(art + "/logs/" + s + ".log")) << s;
    EXPECT_TRUE(exists(art + "/stamps/" + s + ".json")) << s;
  }

  json sum = load(art + "/reports/pipeline_summary.json");
  ASSERT_TRUE(sum.is_object());
  EXPECT_EQ(sum["status"], "ok");
  EXPECT_TRUE(sum["failed_stage"].is_null());
  EXPECT_EQ(sum["scale"], "tiny");
  EXPECT_EQ(sum["teacher"]["mode"], "local");
  ASSERT_EQ(sum["stages"].size(), kStages.size());
  for (size_t i = 0; i < kStages.size(); i++) {
    const json& s = sum["stages"][i];
    EXPECT_EQ(s["name"], kStages[i]);
    EXPECT_EQ(s["status"], "ok") << s;
    EXPECT_GT(s["duration_s"].get<double>(), 0.0) << s;
    EXPECT_FALSE(s["commands"].empty()) << s;
    EXPECT_NE(s["commands"][0].get<std::string>().find(" " + (kStages[i] == "tokenizers" ? std::string("tokenizer train")
                                                              : kStages[i] == "heldout" ? std::string("collect")
                                                                                        : kStages[i])),
              std::string::npos)
        << s["commands"][0];
  }

  // The page: every section found its input, the plots the real reports feed are there.
  std::ifstream page_in(art + "/reports/report.html");
  std::string page((std::istreambuf_iterator<char>(page_in)), std::istreambuf_iterator<char>());
  EXPECT_NE(out.find("report:  " + art + "/reports/report.html"), std::string::npos) << out;
  EXPECT_EQ(page.find("Missing:"), std::string::npos) << page.substr(0, 2000);
  for (const char* plot : {"student_losses", "student_lr", "teacher_loss", "quality_per_family", "quality_overall",
                           "decode_speed", "weight_memory"})
    EXPECT_NE(page.find(std::string("data-plot=\"") + plot + "\""), std::string::npos) << plot;
  EXPECT_NE(page.find("class=\"marker\""), std::string::npos) << "the A8 -> A4 flip is marked";

  // The server was started for the teacher stages and stopped by the pipeline.
  std::ifstream serve_log(art + "/logs/serve.log");
  std::string serve_text((std::istreambuf_iterator<char>(serve_log)), std::istreambuf_iterator<char>());
  EXPECT_NE(serve_text.find("listening on http://127.0.0.1:"), std::string::npos);
  EXPECT_NE(serve_text.find("stopped by the pipeline"), std::string::npos);

  // Key numbers are the reports' own.
  json ev = load(art + "/reports/mini_evaluation_report.json");
  json base = load(art + "/reports/teacher_baseline.json");
  json dry = load(art + "/reports/dryrun_7b.json");
  json stats = load(art + "/logs/collect_reference_stats.json");
  const json& k = sum["key_numbers"];
  for (const char* f : {"student_quality", "teacher_quality", "qei", "qei_speed", "student_memory_gb",
                        "teacher_memory_gb", "student_tps", "teacher_tps"})
    expect_same(k[f], ev["qei_metrics"][f], f);
  expect_same(k["student_json_validity"], ev["quality"]["student"]["json_validity"], "student_json_validity");
  // Agreement is measured on traces of the held-out prompts, which training never reads.
  EXPECT_NE(ev["agreement"]["shard"].get<std::string>().find("heldout/kd_shard_000.parquet"), std::string::npos)
      << ev["agreement"];
  EXPECT_GT(ev["agreement"]["examples"].get<long long>(), 8);
  // The untrained reference is measured by eval on the same prompts.
  ASSERT_TRUE(ev["quality"].contains("untrained")) << ev["quality"].dump();
  EXPECT_EQ(ev["quality"]["untrained"]["scored_prompts"].get<long long>(), 16);
  expect_same(k["untrained_quality"], ev["quality"]["untrained"]["score"], "untrained_quality");
  {
    const json& c = check(sum, "teacher clearly above an untrained model");
    const double t = base["quality"]["score"].get<double>(), u = ev["quality"]["untrained"]["score"].get<double>();
    EXPECT_EQ(c["status"], t >= u + 0.1 ? "pass" : "fail") << c;
  }
  expect_same(k["teacher_decode_tps"], base["metrics"]["avg_decode_tps_8k"], "teacher_decode_tps");
  expect_same(k["dryrun_peak_rss_bytes"], dry["peak_rss_bytes"], "dryrun_peak_rss_bytes");
  expect_same(k["dryrun_params"], dry["params"]["count"], "dryrun_params");
  expect_same(k["kd_steps"], stats["steps"]["total"], "kd_steps");
  EXPECT_EQ(stage(sum, "collect")["numbers"]["prompts_ok"], stats["prompts"]["ok"]);
  EXPECT_EQ(stats["prompts"]["ok"].get<long long>(), 48);  // the tiny preset's KD_MAX_PROMPTS
  // The default recipe: the teacher scores the reference answers, and the
  // student starts from its weights with its tokenizer.
  EXPECT_EQ(sum["settings"]["collect"]["sources"], json::array({"reference"}));
  EXPECT_NE(stage(sum, "train")["commands"][0].get<std::string>().find("--init-from"), std::string::npos);
  {
    bk::KdPromptReader pr;
    ASSERT_TRUE(pr.open(art + "/data/reference/kd_prompts_000.parquet").ok());
    std::vector<bk::KdPrompt> rows;
    ASSERT_TRUE(pr.read_row_group(0, &rows).ok());
    ASSERT_FALSE(rows.empty());
    for (const bk::KdPrompt& p : rows) {
      EXPECT_EQ(p.source, "reference");
      EXPECT_EQ(p.response_text, p.reference) << "the scored text is the reference answer";
    }
  }
  EXPECT_EQ(base["metrics"]["total_prompts"].get<long long>(), 16);
  EXPECT_EQ(ev["eval_config"]["total_prompts"].get<long long>(), 16);
  // The teacher's memory for QEI is measured from its checkpoint, not a constant.
  EXPECT_EQ(ev["teacher"]["memory_source"].get<std::string>().rfind("measured", 0), 0u) << ev["teacher"];

  // Training: the budget was sized so the flip happens inside the run.
  const json& tr = stage(sum, "train")["numbers"];
  EXPECT_TRUE(std::isfinite(tr["last_loss"].get<double>()));
  EXPECT_EQ(tr["flip_done"], true) << tr;
  EXPECT_EQ(tr["act_bits"], 4);
  EXPECT_EQ(k["train_flip_done"], true);
  EXPECT_EQ(check(sum, "A8 -> A4 flip")["status"], "pass");

  // Gates follow the numbers.
  expect_gate(check(sum, "gate: QEI >="), ev["qei_metrics"]["qei"], 0.2);
  expect_gate(check(sum, "gate: QEI_speed"), ev["qei_metrics"]["qei_speed"], 0.1);
  expect_gate(check(sum, "gate: student JSON"), ev["quality"]["student"]["json_validity"], 0.95);
  const json& qgate = check(sum, "gate: Qs >= 0.8 Qt");
  const json qs = ev["qei_metrics"]["student_quality"], qt = ev["qei_metrics"]["teacher_quality"];
  if (qt.is_number() && qt.get<double>() > 0)
    EXPECT_EQ(qgate["status"], qs.get<double>() >= 0.8 * qt.get<double>() ? "pass" : "fail");
  else
    EXPECT_EQ(qgate["status"], "not_measured");
  long long pass = 0, fail = 0, nm = 0;
  for (const json& c : sum["checklist"]) {
    const std::string s = c["status"];
    ASSERT_TRUE(s == "pass" || s == "fail" || s == "not_measured") << c;
    (s == "pass" ? pass : s == "fail" ? fail : nm)++;
  }
  EXPECT_EQ(sum["checklist_counts"]["pass"], pass);
  EXPECT_EQ(sum["checklist_counts"]["fail"], fail);
  EXPECT_EQ(sum["checklist_counts"]["not_measured"], nm);

  // A second run does nothing: every stage skipped, no artifact rewritten.
  const std::string ckpt_report = art + "/reports/mini_evaluation_report.json";
  const long long t_eval = mtime_ns(ckpt_report), t_shard = mtime_ns(art + "/data/reference/kd_shard_000.parquet");
  rc = bk_test::run_command(pipeline_cmd(dir, "", ""), &out);
  ASSERT_EQ(rc, 0) << out;
  json sum2 = load(art + "/reports/pipeline_summary.json");
  for (const std::string& s : kStages) {
    EXPECT_EQ(stage(sum2, s)["status"], "skipped") << s;
    EXPECT_EQ(stage(sum2, s)["duration_s"].get<double>(), 0.0) << s;
  }
  EXPECT_EQ(mtime_ns(ckpt_report), t_eval);
  EXPECT_EQ(mtime_ns(art + "/data/reference/kd_shard_000.parquet"), t_shard);
  EXPECT_EQ(out.find("teacher server: starting"), std::string::npos) << "no stage needed the server";
  // Numbers of skipped stages still come from their outputs.
  EXPECT_EQ(sum2["key_numbers"], sum["key_numbers"]);

  // The held-out prompt count: their traces and eval rerun, nothing else.
  rc = bk_test::run_command(pipeline_cmd(dir, "EVAL_MAX_PROMPTS=8", ""), &out);
  ASSERT_EQ(rc, 0) << out;
  json sum3 = load(art + "/reports/pipeline_summary.json");
  for (const std::string& s : kStages)
    EXPECT_EQ(stage(sum3, s)["status"], s == "eval" || s == "heldout" ? "ok" : "skipped") << s << "\n" << out;
  EXPECT_EQ(load(ckpt_report)["eval_config"]["total_prompts"].get<long long>(), 8);

  // Every variable `bitkd train` read is in the train stage's fingerprint,
  // recorded by the command itself, including the ones no flag sets.
  json stamp = load(art + "/stamps/train.json");
  const json& read = stamp["inputs"]["config"];
  for (const char* v : {"ADAM_EPS", "KD_PACK", "MINI_WEIGHT_QUANT", "MINI_HEAD_DIM", "SCHEDULER_TMAX",
                        "WEIGHT_DECAY_EMBEDDINGS", "WEIGHT_DECAY_NORMS", "KD_TAU", "FLIP_FRACTION"})
    EXPECT_TRUE(read.contains(v)) << v << " missing from " << read.dump();
  EXPECT_FALSE(read.contains("OPENAI_API_KEY")) << "secrets never reach a stamp";
  // Changing any of them reruns train (and what reads it), never what comes before.
  std::string env = "EVAL_MAX_PROMPTS=8";
  for (const char* change : {"ADAM_EPS=1e-7", "SCHEDULER_TMAX=77", "KD_TAU=1.5"}) {
    env += std::string(" ") + change;
    rc = bk_test::run_command(pipeline_cmd(dir, env, "--until train"), &out);
    ASSERT_EQ(rc, 0) << out;
    json sum4 = load(art + "/reports/pipeline_summary.json");
    EXPECT_EQ(stage(sum4, "train")["status"], "ok") << change << "\n" << out;
    for (const char* before : {"tasks", "tokenizers", "pretrain", "teacher", "collect", "heldout"})
      EXPECT_EQ(stage(sum4, before)["status"], "skipped") << change << " " << before;
    EXPECT_NE(out.find(std::string("inputs changed: ") + std::string(change).substr(0, std::string(change).find('='))),
              std::string::npos)
        << out;
  }
}

TEST(Pipeline, FailingStageIsNamedWithItsLog) {
  const std::string dir = bk_test::scratch_dir("pipeline_fail");
  std::string out;
  // --only a late stage on a fresh root: refused, naming what to run first.
  int rc = bk_test::run_command(pipeline_cmd(dir, "", "--only eval"), &out);
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(out.find("stage tasks is not done yet and a selected stage needs it"), std::string::npos) << out;

  // A bad value is refused before any stage runs, naming where it was set.
  rc = bk_test::run_command(pipeline_cmd(dir, "DRYRUN_BATCH_SIZE=0", ""), &out);
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(out.find("DRYRUN_BATCH_SIZE=0 (from environment): must be >= 1"), std::string::npos) << out;
  EXPECT_EQ(out.find("[1/9]"), std::string::npos) << "no stage ran\n" << out;

  // A stage that fails: the last one, so everything before it runs for real
  // (its report's path is taken by a directory, so it cannot be written).
  ASSERT_EQ(bk_test::run_command("mkdir -p '" + dir + "/artifacts/reports/dryrun_7b.json'", &out), 0) << out;
  rc = bk_test::run_command(pipeline_cmd(dir, "", ""), &out);
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(out.find("stage dryrun failed"), std::string::npos) << out;
  EXPECT_NE(out.find(dir + "/artifacts/logs/dryrun.log"), std::string::npos) << out;
  json sum = load(dir + "/artifacts/reports/pipeline_summary.json");
  ASSERT_TRUE(sum.is_object());
  EXPECT_EQ(sum["status"], "failed");
  EXPECT_EQ(sum["failed_stage"], "dryrun");
  EXPECT_EQ(stage(sum, "dryrun")["status"], "failed");
  EXPECT_EQ(stage(sum, "eval")["status"], "ok");
  EXPECT_EQ(check(sum, "7B dry run").is_null() ? check(sum, "dry run")["status"] : check(sum, "7B dry run")["status"],
            "not_measured");
}

// A teacher named in the environment (here a `bitkd serve` the test starts,
// as a user would run vLLM or llama.cpp): no local teacher is trained.
TEST(Pipeline, TeacherFromEnvironmentReplacesTheLocalOne) {
  const std::string dir = bk_test::scratch_dir("pipeline_external");
  std::string out;
  // A teacher to serve: the pipeline's own first stages in another root.
  int rc = bk_test::run_command(pipeline_cmd(dir + "", "ARTIFACTS_DIR='" + dir + "/teacher_root'",
                                             "--until pretrain"),
                                &out);
  ASSERT_EQ(rc, 0) << out;
  const std::string troot = dir + "/teacher_root";
  std::string ckpt;
  rc = bk_test::run_command("ls " + troot + "/teacher/mini_bitnet_step_*.safetensors | grep -v optim | tail -1", &ckpt);
  ASSERT_EQ(rc, 0);
  while (!ckpt.empty() && (ckpt.back() == '\n' || ckpt.back() == ' ')) ckpt.pop_back();

  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  const std::string serve_log = dir + "/external_serve.log";
  if (pid == 0) {
    dup2(fds[1], 1);
    int log = open(serve_log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (log >= 0) dup2(log, 2);
    close(fds[0]);
    execl(bk_test::bitkd_exe().c_str(), "bitkd", "serve", "--env-file=", "--model", ckpt.c_str(), "--tokenizer",
          (troot + "/teacher/tokenizer.model").c_str(), "--port", "0", "--model-name", "my-teacher", (char*)nullptr);
    _exit(127);
  }
  close(fds[1]);
  std::string line;
  char ch;
  while (read(fds[0], &ch, 1) == 1) {
    if (ch == '\n') {
      if (line.find("listening on ") != std::string::npos) break;
      line.clear();
    } else {
      line += ch;
    }
  }
  const size_t at = line.find("http://");
  ASSERT_NE(at, std::string::npos) << "bitkd serve did not start";
  const std::string url = line.substr(at) + "/v1";

  rc = bk_test::run_command(pipeline_cmd(dir, "TEACHER_PROVIDER=bitkd TEACHER_BASE_URL=" + url, ""), &out);
  // The teacher's memory is neither measured nor declared: no QEI, and the
  // checklist says what to set. Declared, it is used and named as declared.
  json sum_unknown = load(dir + "/artifacts/reports/pipeline_summary.json");
  std::string out2;
  const int rc2 = bk_test::run_command(
      pipeline_cmd(dir, "TEACHER_PROVIDER=bitkd TEACHER_BASE_URL=" + url + " TEACHER_MEMORY_GB=0.0025", ""), &out2);
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  close(fds[0]);
  ASSERT_EQ(rc, 0) << out;
  ASSERT_EQ(rc2, 0) << out2;
  const json& qei_unknown = check(sum_unknown, "QEI computed");
  EXPECT_EQ(qei_unknown["status"], "not_measured") << qei_unknown;
  EXPECT_NE(qei_unknown["detail"].get<std::string>().find("TEACHER_MEMORY_GB"), std::string::npos) << qei_unknown;
  EXPECT_TRUE(sum_unknown["key_numbers"]["qei"].is_null()) << sum_unknown["key_numbers"];
  json sum_declared = load(dir + "/artifacts/reports/pipeline_summary.json");
  const json& qei_declared = check(sum_declared, "QEI computed");
  EXPECT_NE(qei_declared["detail"].get<std::string>().find("declared: TEACHER_MEMORY_GB=0.0025"), std::string::npos)
      << qei_declared;
  EXPECT_EQ(sum_declared["key_numbers"]["teacher_memory_gb"], 0.0025) << sum_declared["key_numbers"];
  EXPECT_EQ(stage(sum_declared, "teacher")["status"], "ok") << "the baseline records the declared memory";
  EXPECT_EQ(stage(sum_declared, "eval")["status"], "ok");
  const json& sum = sum_unknown;
  EXPECT_EQ(sum["teacher"]["mode"], "external");
  EXPECT_EQ(stage(sum, "pretrain")["status"], "not_needed");
  EXPECT_FALSE(exists(dir + "/artifacts/teacher")) << "no local teacher is trained";
  EXPECT_FALSE(exists(dir + "/artifacts/logs/serve.log")) << "no local server is started";
  for (const char* s : {"tasks", "tokenizers", "teacher", "collect", "heldout", "train", "eval", "dryrun"})
    EXPECT_EQ(stage(sum, s)["status"], "ok") << s;
  json base = load(dir + "/artifacts/reports/teacher_baseline.json");
  EXPECT_EQ(base["model"], "my-teacher");
  json stats = load(dir + "/artifacts/logs/collect_reference_stats.json");
  EXPECT_EQ(stats["model"], "my-teacher");
  EXPECT_GT(stats["steps"]["valid"].get<long long>(), 0);
}

// `bitkd experiment` at the tiny scale: two arms (one of them on-policy, which
// collects the student's own answers twice during the run) x two seeds. The table is the
// mean and sample standard deviation of its own runs, every run has its logs,
// and an unknown arm is refused before anything runs.
TEST(Experiment, ArmsTimesSeedsGiveATableOfItsOwnRuns) {
  const std::string dir = bk_test::scratch_dir("experiment_tiny");
  const std::string art = dir + "/artifacts";
  std::string out;
  const std::string base = "cd '" + dir + "' && " + kUnset + "OMP_WAIT_POLICY=PASSIVE ARTIFACTS_DIR='" + art +
                           "' PIPELINE_SCALE=tiny '" + bk_test::bitkd_exe() + "' experiment --env-file '" + dir +
                           "/no.env' ";
  int rc = bk_test::run_command(base + "--arms ce_reference,no_such_arm", &out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("unknown arm 'no_such_arm'"), std::string::npos) << out;
  EXPECT_FALSE(exists(art + "/reports/ablation.json"));

  rc = bk_test::run_command(base + "--arms ce_reference,kd_on_policy --seeds 2 --steps 40 --on-policy-rounds 2", &out);
  ASSERT_EQ(rc, 0) << out;
  json abl = load(art + "/reports/ablation.json");
  ASSERT_TRUE(abl.is_object()) << out;
  EXPECT_EQ(abl["seeds"], 2);
  EXPECT_EQ(abl["budget"]["steps"], 40);
  EXPECT_TRUE(abl["teacher"]["val"].is_number());
  EXPECT_TRUE(abl["teacher"]["heldout"].is_number());
  ASSERT_EQ(abl["arms"].size(), 2u);
  ASSERT_EQ(abl["runs"].size(), 4u);
  for (const json& row : abl["arms"]) {
    const std::string arm = row["arm"];
    std::vector<double> val, held;
    for (const json& r : abl["runs"])
      if (r["arm"] == arm) {
        EXPECT_TRUE(r["ok"].get<bool>()) << r;
        val.push_back(r["val"]), held.push_back(r["heldout"]);
        const std::string run_dir = art + "/experiment/" + arm + "/seed" + std::to_string(r["seed"].get<int>());
        EXPECT_TRUE(exists(run_dir + "/run.log")) << run_dir;
        EXPECT_TRUE(exists(run_dir + "/val_report.json")) << run_dir;
        EXPECT_TRUE(exists(run_dir + "/heldout_report.json")) << run_dir;
      }
    ASSERT_EQ(val.size(), 2u) << arm;
    EXPECT_EQ(row["runs"], 2);
    EXPECT_NEAR(row["val_mean"].get<double>(), (val[0] + val[1]) / 2, 1e-12) << arm;
    EXPECT_NEAR(row["heldout_mean"].get<double>(), (held[0] + held[1]) / 2, 1e-12) << arm;
    // Sample sd of two values: |a - b| / sqrt(2).
    EXPECT_NEAR(row["val_sd"].get<double>(), std::fabs(val[0] - val[1]) / std::sqrt(2.0), 1e-12) << arm;
  }
  // The on-policy arm collected its student's answers twice, scored by the
  // teacher, and the last part trained on the references and both sets.
  for (const char* k : {"1", "2"}) {
    json op = load(art + "/experiment/kd_on_policy/seed1/collect_on_policy_" + k + "_stats.json");
    ASSERT_TRUE(op.is_object()) << k;
    EXPECT_GT(op["steps"]["valid"].get<long long>(), 0) << op;
  }
  std::ifstream log_in(art + "/experiment/kd_on_policy/seed1/run.log");
  std::string log((std::istreambuf_iterator<char>(log_in)), std::istreambuf_iterator<char>());
  EXPECT_NE(log.find("on_policy_1," + art + "/experiment/kd_on_policy/seed1/on_policy_2"), std::string::npos) << log;
  EXPECT_TRUE(exists(art + "/experiment/kd_on_policy/seed1/checkpoints/mini_bitnet_step_40.safetensors"));
  std::ifstream md_in(art + "/reports/ablation.md");
  std::string md((std::istreambuf_iterator<char>(md_in)), std::istreambuf_iterator<char>());
  EXPECT_NE(md.find("| ce_reference |"), std::string::npos) << md;
  EXPECT_NE(md.find("| teacher |"), std::string::npos) << md;
  std::ifstream page_in(art + "/reports/report.html");
  std::string page((std::istreambuf_iterator<char>(page_in)), std::istreambuf_iterator<char>());
  EXPECT_NE(page.find("data-plot=\"ablation\""), std::string::npos);

  // --resume after the fact: every run's training is reused and evaluated
  // again to the same numbers; a different step count retrains.
  rc = bk_test::run_command(base + "--arms ce_reference,kd_on_policy --seeds 2 --steps 40 --on-policy-rounds 2 --resume",
                            &out);
  ASSERT_EQ(rc, 0) << out;
  json again = load(art + "/reports/ablation.json");
  ASSERT_EQ(again["runs"].size(), 4u);
  for (size_t i = 0; i < 4; i++) {
    EXPECT_TRUE(again["runs"][i]["training_reused"].get<bool>()) << again["runs"][i];
    EXPECT_EQ(again["runs"][i]["val"], abl["runs"][i]["val"]);
    EXPECT_EQ(again["runs"][i]["heldout"], abl["runs"][i]["heldout"]);
  }
  rc = bk_test::run_command(base + "--arms ce_reference --seeds 1 --steps 30 --resume", &out);
  ASSERT_EQ(rc, 0) << out;
  again = load(art + "/reports/ablation.json");
  EXPECT_FALSE(again["runs"][0]["training_reused"].get<bool>()) << again;
  EXPECT_TRUE(exists(art + "/experiment/ce_reference/seed1/checkpoints/mini_bitnet_step_30.safetensors"));

  // Fewer steps than the preset (40) and two micro-batches per step: the flip
  // budget counts this run's steps and accumulation (train/setup.h), so the
  // student still reaches A4 at FLIP_FRACTION of what it sees (a budget
  // counted for the preset's 40 steps of one micro-batch would lie past the
  // end of these 10 steps of two).
  rc = bk_test::run_command(base + "--arms ce_reference --seeds 1 --steps 10 --grad-accum 2", &out);
  ASSERT_EQ(rc, 0) << out;
  std::ifstream run_in(art + "/experiment/ce_reference/seed1/run.log");
  const std::string run_log((std::istreambuf_iterator<char>(run_in)), std::istreambuf_iterator<char>());
  EXPECT_NE(run_log.find("--grad-accum 2"), std::string::npos) << run_log;
  const size_t at = run_log.rfind("{\"checkpoint\"");
  ASSERT_NE(at, std::string::npos) << run_log;
  const json rep = json::parse(run_log.substr(at, run_log.find('\n', at) - at));
  EXPECT_EQ(rep["steps"], 10) << rep;
  EXPECT_EQ(rep["flip_done"], true) << rep;
  EXPECT_EQ(rep["act_bits"], 4) << rep;
}

}  // namespace
