// `bitkd pretrain` end to end: the real binary, a tokenizer trained by
// `bitkd tokenizer train`, a tiny JSONL file; checkpoints, metrics, falling
// loss, resume, and clear failures on bad flags and broken checkpoints.
#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "core/fs.h"
#include "testutil/testutil.h"

namespace {

std::string q(const std::string& s) { return "'" + s + "'"; }

struct Fixture {
  std::string dir, tok;
};

// Data and tokenizer, made once for the whole file.
const Fixture& fixture() {
  static Fixture f = [] {
    Fixture x;
    x.dir = bk_test::scratch_dir("pretrain_cli");
    std::string corpus, jsonl;
    unsigned s = 12345;
    auto rnd = [&s](unsigned n) {
      s = s * 1103515245u + 12345u;
      return (s >> 16) % n;
    };
    for (int i = 0; i < 120; i++) {
      int a = (int)rnd(50), b = (int)rnd(50);
      std::string p = "add " + std::to_string(a) + " and " + std::to_string(b);
      std::string r = std::to_string(a) + " + " + std::to_string(b) + " = " + std::to_string(a + b);
      corpus += p + " " + r + "\n";
      jsonl += nlohmann::json({{"prompt", p}, {"response", r}}).dump() + "\n";
    }
    EXPECT_TRUE(bk::write_file_atomic(x.dir + "/corpus.txt", corpus).ok());
    EXPECT_TRUE(bk::write_file_atomic(x.dir + "/data.jsonl", jsonl).ok());
    std::string out;
    int rc = bk_test::run_command(bk_test::bitkd_exe() + " tokenizer train --env-file /dev/null --input " +
                                      q(x.dir + "/corpus.txt") + " --vocab-size 300 --out " + q(x.dir + "/tok"),
                                  &out);
    EXPECT_EQ(rc, 0) << out;
    x.tok = x.dir + "/tok.model";
    return x;
  }();
  return f;
}

std::string pretrain_cmd(const std::string& out_dir, const std::string& extra) {
  const Fixture& f = fixture();
  return bk_test::bitkd_exe() + " pretrain --env-file /dev/null --threads 1 --artifacts " + q(f.dir + "/art") +
         " --tokenizer " + q(f.tok) + " --out " + q(out_dir) + " --metrics " + q(out_dir + "/train_metrics.jsonl") +
         " --dim 32 --layers 2 --heads 2 --seq 40 --batch 8 --lr 5e-3 --warmup 3 --log-interval 10 " + extra;
}

nlohmann::json last_json_line(const std::string& out) {
  size_t p = out.rfind("\n{");
  std::string line = p == std::string::npos ? out : out.substr(p + 1);
  line = line.substr(0, line.find('\n'));
  return nlohmann::json::parse(line);
}

}  // namespace

TEST(PretrainCli, JsonlTrainsCheckpointsAndResumes) {
  const Fixture& f = fixture();
  ASSERT_TRUE(bk::file_exists(f.tok));
  std::string ck = f.dir + "/ck_jsonl", out;
  int rc = bk_test::run_command(
      pretrain_cmd(ck, "--data " + q(f.dir + "/data.jsonl") + " --steps 40 --checkpoint-interval 20"), &out);
  ASSERT_EQ(rc, 0) << out;
  nlohmann::json r = last_json_line(out);
  EXPECT_EQ(r["steps"], 40);
  EXPECT_EQ(r["checkpoint"], ck + "/mini_bitnet_step_40.safetensors");
  EXPECT_TRUE(bk::file_exists(ck + "/mini_bitnet_step_20.safetensors"));
  EXPECT_TRUE(bk::file_exists(ck + "/mini_bitnet_step_40.optim.safetensors"));
  EXPECT_TRUE(bk::file_exists(ck + "/mini_bitnet_step_40_health.json"));
  double first = r["first_loss"], last = r["last_loss"];
  std::printf("jsonl pretrain: loss %.4f -> %.4f\n", first, last);
  EXPECT_LT(last, 0.8 * first) << "loss did not decrease";

  // Metrics: one line per LOG_INTERVAL, losses falling.
  std::string text;
  ASSERT_TRUE(bk::read_file(ck + "/train_metrics.jsonl", &text).ok());
  std::vector<nlohmann::json> lines;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    lines.push_back(nlohmann::json::parse(text.substr(pos, nl - pos)));
    pos = nl + 1;
  }
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_LT(lines[3]["loss"].get<double>(), lines[0]["loss"].get<double>());
  EXPECT_EQ(lines[3]["act_bits"], 8);

  // Resume to 50 steps from the newest checkpoint.
  rc = bk_test::run_command(pretrain_cmd(ck, "--data " + q(f.dir + "/data.jsonl") + " --steps 50 --resume"), &out);
  ASSERT_EQ(rc, 0) << out;
  r = last_json_line(out);
  EXPECT_EQ(r["steps"], 50);
  EXPECT_EQ(r["steps_this_run"], 10);
  EXPECT_NE(out.find("resumed from"), std::string::npos) << out;
}

TEST(PretrainCli, PlainTextFloatModel) {
  const Fixture& f = fixture();
  std::string ck = f.dir + "/ck_text", out;
  int rc = bk_test::run_command(pretrain_cmd(ck, "--data " + q(f.dir + "/corpus.txt") +
                                                     " --steps 5 --weight-quant none --act-bits 0 --ffn-act relu2"),
                                &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_TRUE(bk::file_exists(ck + "/mini_bitnet_step_5.safetensors"));
  std::string header;
  ASSERT_TRUE(bk::read_file(ck + "/mini_bitnet_step_5.safetensors", &header).ok());
  EXPECT_NE(header.find("\\\"weight_quant\\\":\\\"none\\\""), std::string::npos);
}

TEST(PretrainCli, BadInputsFailClearly) {
  const Fixture& f = fixture();
  std::string data = " --data " + q(f.dir + "/data.jsonl") + " --steps 2";
  struct Case {
    std::string args, expect;
  } cases[] = {
      // Checked against the registry before any work, naming the flag.
      {"--dim 0", "MINI_DIM=0 (from flag --dim): must be >= 1"},
      {"--heads 3", "not divisible by n_heads 3"},
      {"--ffn-act gelu", "MINI_FFN_ACT=gelu (from flag --ffn-act): must be one of: swiglu, relu2"},
      {"--kv-heads 3 --heads 2", "n_kv_heads 3 does not divide n_heads 2"},
      {"--lr abc", "LR=abc"},
  };
  for (const Case& c : cases) {
    std::string out;
    int rc = bk_test::run_command(pretrain_cmd(f.dir + "/ck_bad", data + " " + c.args), &out);
    EXPECT_NE(rc, 0) << c.args;
    EXPECT_NE(out.find(c.expect), std::string::npos) << c.args << "\n" << out;
  }
  // Missing data file, malformed JSONL.
  std::string out;
  int rc = bk_test::run_command(pretrain_cmd(f.dir + "/ck_bad", "--data " + q(f.dir + "/nope.jsonl")), &out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("nope.jsonl"), std::string::npos) << out;
  ASSERT_TRUE(bk::write_file_atomic(f.dir + "/bad.jsonl", "{\"prompt\":\"a\",\"response\":\"b\"}\n{oops\n").ok());
  rc = bk_test::run_command(pretrain_cmd(f.dir + "/ck_bad", "--data " + q(f.dir + "/bad.jsonl")), &out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("bad.jsonl:2"), std::string::npos) << out;

  // A truncated checkpoint: --resume must refuse it, naming the file.
  std::string ck = f.dir + "/ck_trunc";
  rc = bk_test::run_command(pretrain_cmd(ck, data), &out);
  ASSERT_EQ(rc, 0) << out;
  std::string bytes;
  ASSERT_TRUE(bk::read_file(ck + "/mini_bitnet_step_2.safetensors", &bytes).ok());
  ASSERT_TRUE(bk::write_file_atomic(ck + "/mini_bitnet_step_9.safetensors", bytes.substr(0, bytes.size() - 100)).ok());
  rc = bk_test::run_command(pretrain_cmd(ck, data + " --resume"), &out);
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(out.find("mini_bitnet_step_9.safetensors"), std::string::npos) << out;
  EXPECT_NE(out.find("truncated"), std::string::npos) << out;
}
