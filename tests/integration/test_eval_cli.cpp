// `bitkd eval`, `bitkd dryrun` and `bitkd bench infer` end to end with the real
// binary: a tokenizer, a float teacher and a ternary student made by the real
// commands, the teacher served by `bitkd serve`, its baseline and KD traces
// collected by `bitkd teacher` / `bitkd collect`, then the evaluation.
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "integration/serve_harness.h"
#include "testutil/testutil.h"

namespace {

using json = nlohmann::json;
using serve_harness::q;

int bitkd(const std::string& args, std::string* out) {
  return bk_test::run_command(bk_test::bitkd_exe() + " " + args, out);
}

json read_json(const std::string& path) {
  return json::parse(serve_harness::read_file(path), nullptr, false);
}

// ctest runs every test of this file in its own process, possibly in
// parallel: scratch directories carry the test filter so two processes never
// share (and delete) one.
std::string run_tag() {
  std::string f = ::testing::GTEST_FLAG(filter), t;
  for (char c : f) t += isalnum((unsigned char)c) ? c : '_';
  return t.substr(0, 80);
}

struct World {
  serve_harness::TinyModel teacher;
  std::string art;      // artifacts of the student side
  std::string common;   // flags every command gets
  bool ready = false;
};

// Built on first use: a tokenizer and a float teacher (serve_harness), and a
// ternary A8 student trained on the same corpus with the same tokenizer.
const World& world() {
  static World w = [] {
    World x;
    serve_harness::make_tiny_model("eval_cli_" + run_tag(), &x.teacher);
    if (::testing::Test::HasFatalFailure()) return x;
    x.art = x.teacher.dir + "/art";
    x.common = " --env-file " + q(x.teacher.dir + "/none.env") + " --artifacts " + q(x.art) + " --threads 1";
    std::string out;
    int rc = bitkd("pretrain --data " + q(x.teacher.dir + "/corpus.jsonl") + " --tokenizer " + q(x.teacher.tokenizer) +
                       " --dim 64 --layers 2 --heads 4 --head-dim 16 --ffn 160 --weight-quant ternary --act-bits 8"
                       " --seq 64 --batch 8 --steps 20 --lr 3e-3 --warmup 0 --checkpoint-interval 0"
                       " --log-interval 50 --out " +
                       q(x.art + "/checkpoints") + x.common,
                   &out);
    EXPECT_EQ(rc, 0) << out;
    x.ready = rc == 0;
    return x;
  }();
  return w;
}

class EvalCli : public ::testing::Test {};

TEST_F(EvalCli, NoCheckpointIsAnErrorWithoutReport) {
  std::string dir = bk_test::scratch_dir("eval_cli_empty_" + run_tag());
  std::string out;
  // The checkpoint is looked for first: no tokenizer is needed to fail.
  int rc = bitkd("eval --env-file /dev/null --artifacts " + q(dir) + " --tokenizer " + q(dir + "/none.model"), &out);
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(out.find("no student checkpoint"), std::string::npos) << out;
  EXPECT_NE(out.find("bitkd train"), std::string::npos) << out;
  EXPECT_FALSE(bk_test::run_command("test -e " + q(dir + "/reports/mini_evaluation_report.json"), &out) == 0);
}

TEST_F(EvalCli, EvalAgainstServedTeacherWritesConsistentReport) {
  const World& g = world();
  ASSERT_TRUE(g.ready);
  // A prompts file in the task suite's JSONL shape, so every item is scored;
  // the teacher saw these prompt shapes in pretraining.
  const std::string prompts = g.teacher.dir + "/eval_prompts.jsonl";
  {
    std::string text;
    const char* words[] = {"alpha", "beta", "gamma", "delta"};
    for (int i = 0; i < 5; i++) {
      std::string resp = std::string("{\"items\": [\"") + words[i % 4] + "\"], \"n\": " + std::to_string(i) + "}";
      text += json({{"prompt", "list " + std::to_string(i) + " " + words[i % 4]}, {"response", resp},
                    {"task", "json_object"}})
                  .dump() +
              "\n";
    }
    std::ofstream(prompts) << text;
  }
  serve_harness::Server srv;
  serve_harness::start_server(g.teacher, {}, {}, &srv);
  ASSERT_GT(srv.port, 0);
  const std::string url = "http://127.0.0.1:" + std::to_string(srv.port) + "/v1";
  std::string out;
  // Baseline on 4 of the prompts (the student runs 5: the sets differ by one).
  int rc = bitkd("teacher --provider bitkd --base-url " + q(url) + " --prompts " + q(prompts) +
                     " --max-prompts 4 --max-tokens 16 --teacher-checkpoint " + q(g.teacher.checkpoint) + g.common,
                 &out);
  EXPECT_EQ(rc, 0) << out;
  rc = bitkd("collect --provider bitkd --base-url " + q(url) + " --tokenizer " + q(g.teacher.tokenizer) +
                 " --prompts " + q(prompts) + " --max-prompts 4 --max-tokens 16 --top-logprobs 5" + g.common,
             &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(serve_harness::stop_server(&srv, SIGTERM), 0);

  rc = bitkd("eval --tokenizer " + q(g.teacher.tokenizer) + " --prompts " + q(prompts) +
                 " --max-prompts 5 --max-new-tokens 16" + g.common,
             &out);
  ASSERT_EQ(rc, 0) << out;
  json r = read_json(g.art + "/reports/mini_evaluation_report.json");
  ASSERT_TRUE(r.is_object()) << out;
  for (const char* k : {"timestamp", "device", "dtype", "tokenizer", "model_meta", "eval_config", "qei_metrics",
                        "results", "throughput", "memory", "quality", "agreement", "sources"})
    EXPECT_TRUE(r.contains(k)) << k;
  EXPECT_EQ(r["model_meta"]["backend"], "packed");
  EXPECT_EQ(r["model_meta"]["format"], "safetensors");
  EXPECT_NE(r["model_meta"]["path"].get<std::string>().find("mini_bitnet_step_20.safetensors"), std::string::npos);
  EXPECT_EQ(r["memory"]["projection_format"], "ternary-i2");
  const json& qm = r["qei_metrics"];
  ASSERT_EQ(r["results"].size(), 5u);
  double sum = 0, tsum = 0;
  int counted = 0;
  for (const json& e : r["results"]) {
    for (const char* k : {"prompt", "response", "generation_time_s", "tokens_generated", "tokens_per_second", "score"})
      EXPECT_TRUE(e.contains(k)) << k;
    if (e["counted"].get<bool>()) {
      counted++;
      sum += e["score"].get<double>();
      tsum += e["teacher_score"].get<double>();
    }
  }
  EXPECT_EQ(counted, 4);  // the prompt the teacher did not answer is not counted
  EXPECT_EQ(r["quality"]["matched_prompts"], 4);
  EXPECT_EQ(r["quality"]["student_only_prompts"], 1);
  EXPECT_NEAR(qm["student_quality"].get<double>(), sum / counted, 1e-12);
  EXPECT_NEAR(qm["teacher_quality"].get<double>(), tsum / counted, 1e-12);
  // Teacher memory was measured (a small checkpoint), not TEACHER_MEMORY_GB.
  EXPECT_GT(qm["teacher_memory_gb"].get<double>(), 0.0);
  EXPECT_LT(qm["teacher_memory_gb"].get<double>(), 0.1);
  EXPECT_GT(qm["teacher_tps"].get<double>(), 0.0);
  const json& wb = r["memory"]["weight_bytes"];
  EXPECT_NEAR(qm["student_memory_gb"].get<double>(), wb["total"].get<double>() / 1e9, 1e-15);
  if (qm["teacher_quality"].get<double>() > 0) {
    double qei = (qm["student_quality"].get<double>() / qm["teacher_quality"].get<double>()) /
                 (qm["student_memory_gb"].get<double>() / qm["teacher_memory_gb"].get<double>());
    EXPECT_NEAR(qm["qei"].get<double>(), qei, 1e-9 * std::max(1.0, qei));
    EXPECT_NEAR(qm["qei_speed"].get<double>(),
                qei * qm["student_tps"].get<double>() / qm["teacher_tps"].get<double>(), 1e-9 * std::max(1.0, qei));
  } else {
    EXPECT_TRUE(qm["qei"].is_null());
    EXPECT_TRUE(qm.contains("qei_reason"));
  }
  // Agreement and KL on the collected shard.
  ASSERT_TRUE(r["agreement"]["top1"].is_number()) << r["agreement"].dump();
  EXPECT_GE(r["agreement"]["top1"].get<double>(), 0.0);
  EXPECT_LE(r["agreement"]["top1"].get<double>(), 1.0);
  EXPECT_GE(r["agreement"]["kl"].get<double>(), 0.0);
  EXPECT_GT(r["agreement"]["positions"].get<int64_t>(), 0);
  EXPECT_GT(r["throughput"]["decode_tokens_per_s"].get<double>(), 0.0);
  EXPECT_GT(r["memory"]["peak_rss_bytes"].get<int64_t>(), 0);

  // The float backend on the same prompts, and the PoC's placeholders named as ignored.
  rc = bk_test::run_command("EVAL_TEACHER_QUALITY=1.0 " + bk_test::bitkd_exe() + " eval --backend float --tokenizer " +
                                q(g.teacher.tokenizer) + " --prompts " + q(prompts) +
                                " --max-prompts 5 --max-new-tokens 16 --no-kd-eval --untrained-reference --out " +
                                q(g.art + "/float_report.json") + g.common,
                            &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("EVAL_TEACHER_QUALITY=1.0 is ignored"), std::string::npos) << out;
  json f = read_json(g.art + "/float_report.json");
  ASSERT_TRUE(f.is_object());
  EXPECT_EQ(f["model_meta"]["backend"], "float");
  EXPECT_EQ(f["memory"]["projection_format"], "f32");
  EXPECT_GT(f["qei_metrics"]["student_memory_gb"].get<double>(), qm["student_memory_gb"].get<double>());
  EXPECT_TRUE(f["agreement"]["top1"].is_null());
  ASSERT_EQ(f["results"].size(), 5u);
  // The untrained reference: random weights of the same shape, every scored prompt.
  ASSERT_TRUE(f["quality"].contains("untrained")) << f["quality"].dump();
  EXPECT_EQ(f["quality"]["untrained"]["scored_prompts"], 5);
  EXPECT_GE(f["quality"]["untrained"]["score"].get<double>(), 0.0);
  EXPECT_LE(f["quality"]["untrained"]["score"].get<double>(), 1.0);
  EXPECT_FALSE(r["quality"].contains("untrained"));  // only when asked
  bool noted = false;
  for (const json& n : f["notes"]) noted |= n.get<std::string>().find("EVAL_TEACHER_QUALITY") != std::string::npos;
  EXPECT_TRUE(noted);
}

TEST_F(EvalCli, DryRunFromEnvironment) {
  std::string dir = bk_test::scratch_dir("eval_cli_dryrun_" + run_tag());
  std::string out;
  int rc = bk_test::run_command(
      "DRYRUN_DIM=128 DRYRUN_LAYERS=2 DRYRUN_HEADS=2 DRYRUN_HEAD_DIM=64 DRYRUN_VOCAB=300 DRYRUN_SEQ_LEN=8 "
      "DRYRUN_BATCH_SIZE=2 " +
          bk_test::bitkd_exe() + " dryrun --env-file /dev/null --threads 1 --artifacts " + q(dir),
      &out);
  ASSERT_EQ(rc, 0) << out;
  json r = read_json(dir + "/reports/dryrun_7b.json");
  ASSERT_TRUE(r.is_object()) << out;
  EXPECT_EQ(r["config_requested"]["dim"], 128);
  EXPECT_EQ(r["config_requested"]["seq_len"], 8);
  EXPECT_EQ(r["config_used"]["ffn_dim"], 512);
  EXPECT_EQ(r["config_used"]["vocab_size"], 300);
  EXPECT_GT(r["params"]["count"].get<int64_t>(), 0);
  ASSERT_EQ(r["runs"].size(), 2u);
  EXPECT_EQ(r["runs"][0]["name"], "A8_forward");
  EXPECT_EQ(r["runs"][1]["name"], "A4_forward");
  EXPECT_EQ(r["runs"][1]["shape"], json({2, 8, 300}));
  EXPECT_TRUE(r["runs"][0]["memory"].contains("after_gb"));
  EXPECT_TRUE(r["runs"][0]["memory"].contains("peak_gb"));
  EXPECT_GT(r["runs"][0]["decode"]["tokens_per_s"].get<double>(), 0.0);
  EXPECT_GT(r["peak_rss_bytes"].get<int64_t>(), 0);

  // A bad shape names the variable and fails.
  rc = bk_test::run_command("DRYRUN_DIM=100 " + bk_test::bitkd_exe() + " dryrun --env-file /dev/null --artifacts " +
                                q(dir),
                            &out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("DRYRUN_DIM=100"), std::string::npos) << out;
}

TEST_F(EvalCli, BenchInferPrintsOneJsonObject) {
  std::string out;
  int rc = bitkd("bench infer --env-file /dev/null --threads 1 --vocab 300 --dim 64 --layers 2 --heads 4 --ffn 128"
                 " --prompt 16 --decode 8 --reps 1 2>/dev/null",
                 &out);
  ASSERT_EQ(rc, 0) << out;
  json r = json::parse(out, nullptr, false);
  ASSERT_TRUE(r.is_object()) << out;
  for (const char* k : {"machine", "threads", "config", "packed", "fp32", "ratios"}) EXPECT_TRUE(r.contains(k)) << k;
  for (const char* e : {"packed", "fp32"}) {
    EXPECT_GT(r[e]["decode_tokens_per_s"].get<double>(), 0.0) << e;
    EXPECT_GT(r[e]["prefill_tokens_per_s"].get<double>(), 0.0) << e;
    EXPECT_GT(r[e]["weight_bytes"].get<double>(), 0.0) << e;
  }
  EXPECT_LT(r["packed"]["weight_bytes"].get<double>(), r["fp32"]["weight_bytes"].get<double>());
  EXPECT_EQ(r["config"]["dim"], 64);

  // A checkpoint works too (the trained student).
  const World& g = world();
  ASSERT_TRUE(g.ready);
  rc = bitkd("bench infer --env-file /dev/null --threads 1 --model " +
                 q(g.art + "/checkpoints/mini_bitnet_step_20.safetensors") + " --prompt 8 --decode 4 --reps 1 2>/dev/null",
             &out);
  ASSERT_EQ(rc, 0) << out;
  r = json::parse(out, nullptr, false);
  ASSERT_TRUE(r.is_object()) << out;
  EXPECT_EQ(r["config"]["ffn_dim"], 160);
  EXPECT_TRUE(r["packed"].is_object());

  // --packed-only: random weights straight into the packed layout, no fp32 engine.
  rc = bitkd("bench infer --env-file /dev/null --threads 1 --vocab 300 --dim 64 --layers 2 --heads 4 --ffn 128"
             " --prompt 8 --decode 4 --reps 1 --packed-only --embed q8_0 2>/dev/null",
             &out);
  ASSERT_EQ(rc, 0) << out;
  r = json::parse(out, nullptr, false);
  ASSERT_TRUE(r.is_object()) << out;
  EXPECT_TRUE(r["fp32"].is_null());
  EXPECT_EQ(r["packed"]["embedding_type"], "q8_0");
  EXPECT_GT(r["packed"]["decode_tokens_per_s"].get<double>(), 0.0);

  // A GGUF whose projections are not TQ2_0 (rows of 64 are not 256-blocks)
  // cannot go straight into the packed engine: the error names the tensor.
  const std::string gguf = g.art + "/bench_infer_student.gguf";
  rc = bitkd("export --env-file /dev/null --model " + q(g.art + "/checkpoints/mini_bitnet_step_20.safetensors") +
                 " --tokenizer " + q(g.teacher.tokenizer) + " --out " + q(gguf) + " 2>&1",
             &out);
  ASSERT_EQ(rc, 0) << out;
  rc = bitkd("bench infer --env-file /dev/null --threads 1 --model " + q(gguf) + " --packed-only --reps 1 2>&1", &out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("blk.0.attn_q.weight"), std::string::npos) << out;
}

}  // namespace
