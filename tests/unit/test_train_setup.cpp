// Training setup (train/setup.h): the A8 -> A4 flip budget, the thread rule,
// resume checks and the training report, each against numbers worked out by
// hand in the comments.
#include <gtest/gtest.h>

#include <cmath>

#include "core/fs.h"
#include "io/config.h"
#include "testutil/testutil.h"
#include "train/checkpoint.h"
#include "train/setup.h"

using namespace bk;

namespace {

ModelConfig small_config() {
  ModelConfig c;
  c.vocab_size = 64;
  c.dim = 32;
  c.n_layers = 1;
  c.n_heads = 4;
  c.n_kv_heads = 4;
  c.head_dim = 8;
  c.ffn_dim = 96;
  c.max_seq_len = 16;
  c.weight_quant = WQ_TERNARY;
  c.act_bits = 8;
  return c;
}

}  // namespace

// The tiny pipeline's numbers: 749 target tokens over 48 examples, 40 steps of
// 8, one micro-batch: 749 / 48 * 320 = 4993.33 -> 4993 tokens; 0.9 of that is
// 4493.7, which rounds to 4494 (the flip `bitkd train` logged before
// train/setup existed; truncation, as `bitkd pretrain --flip` did, gave 4493).
TEST(FlipBudget, TinyPipelineNumbers) {
  const double mean = 749.0 / 48.0;
  EXPECT_EQ(flip_budget_tokens(mean, 8, 1, 40), 4993.0);
  EXPECT_EQ(flip_at_tokens(4993.0, 0.9), 4494);
}

// The default preset (PIPELINE_SCALE 1): batch 16, 2000 steps, one micro-batch.
// With the same mean: 749 / 48 * 32000 = 499333.33 -> 499333, under a million,
// so the 6 significant digits the pipeline printed the budget with before
// (--budget 499333) held it exactly; 0.9 x 499333 = 449399.7 -> 449400.
TEST(FlipBudget, DefaultPresetNumbers) {
  const double mean = 749.0 / 48.0;
  EXPECT_EQ(flip_budget_tokens(mean, 16, 1, 2000), 499333.0);
  EXPECT_EQ(flip_at_tokens(499333.0, 0.9), 449400);
}

// Accumulation multiplies the examples per step: 10 steps of 2 x 8 examples of
// 2.5 tokens = 400 tokens, the same as 20 steps of 8. A budget counted for the
// preset's 40 steps without accumulation (800 here, `bitkd experiment`'s old
// count) lies past everything this run sees, so its flip never came.
TEST(FlipBudget, CountsAccumulationAndTheRunsSteps) {
  EXPECT_EQ(flip_budget_tokens(2.5, 8, 2, 10), 400.0);
  EXPECT_EQ(flip_budget_tokens(2.5, 8, 1, 20), 400.0);
  EXPECT_EQ(flip_budget_tokens(2.5, 8, 1, 40), 800.0);
  EXPECT_EQ(flip_at_tokens(flip_budget_tokens(2.5, 8, 2, 10), 0.9), 360);  // inside the 400 seen
  EXPECT_GT(flip_at_tokens(flip_budget_tokens(2.5, 8, 1, 40), 0.9), 400);  // the old count: never reached
  // GRAD_ACCUM_STEPS below 1 counts as 1 (the trainer refuses it anyway).
  EXPECT_EQ(flip_budget_tokens(2.5, 8, 0, 10), 200.0);
}

TEST(FlipBudget, RoundsToNearestAndNeverZero) {
  EXPECT_EQ(flip_at_tokens(10.0, 0.25), 3);   // 2.5 rounds away from zero
  EXPECT_EQ(flip_at_tokens(10.0, 0.24), 2);   // 2.4
  EXPECT_EQ(flip_at_tokens(0.0, 0.9), 1);     // a zero budget flips at the first step
  EXPECT_EQ(flip_at_tokens(100.0, 0.0), 1);
  EXPECT_EQ(flip_budget_tokens(15.9, 1, 1, 1), 15.0);  // the budget itself rounds down
}

// One thread when deterministic, THREADS when set, else the cores shared by
// the ranks on this machine (per rank under mpirun).
TEST(Threads, OneRuleForRanksAndDeterminism) {
  EXPECT_EQ(train_thread_count(true, 8, 16, 1), 1);
  EXPECT_EQ(train_thread_count(false, 3, 16, 4), 3);
  EXPECT_EQ(train_thread_count(false, 0, 16, 1), 16);
  EXPECT_EQ(train_thread_count(false, 0, 16, 4), 4);
  EXPECT_EQ(train_thread_count(false, 0, 2, 4), 1);  // more ranks than cores: one each
  EXPECT_EQ(train_thread_count(false, 0, 16, 0), 16);
}

TEST(Paths, FlagsElseTheArtifactLayout) {
  Config c;
  ASSERT_TRUE(config_load(&c, "", {{"ARTIFACTS_DIR", "/a"}}).ok());
  std::string ck, metrics;
  train_default_paths(c, "", "", &ck, &metrics);
  EXPECT_EQ(ck, "/a/checkpoints");
  EXPECT_EQ(metrics, "/a/logs/train_metrics.jsonl");
  train_default_paths(c, "/o", "/m.jsonl", &ck, &metrics);
  EXPECT_EQ(ck, "/o");
  EXPECT_EQ(metrics, "/m.jsonl");
}

TEST(Resume, CheckpointWinsAndIsChecked) {
  const std::string dir = bk_test::scratch_dir("setup_resume");
  ResumeRequest rq;
  rq.resume = true;
  rq.checkpoint_dir = dir;
  rq.tokenizer_vocab = 60;
  rq.seq = 16;
  ModelConfig flags = small_config();
  std::string from = "x";
  // No checkpoint: a fresh start.
  ASSERT_TRUE(train_resolve_resume(rq, &flags, &from).ok());
  EXPECT_EQ(from, "");

  Model m;
  ModelConfig saved = small_config();
  saved.dim = 48;
  saved.head_dim = 12;
  saved.act_bits = 4;  // past its flip
  ASSERT_TRUE(model_init(&m, saved, 1).ok());
  TrainState st;
  st.step = 7;
  ASSERT_TRUE(checkpoint_save(dir, m, nullptr, nullptr, st, "", 0, nullptr).ok());

  // Without --resume the checkpoint is not looked at.
  rq.resume = false;
  ModelConfig cfg = small_config();
  ASSERT_TRUE(train_resolve_resume(rq, &cfg, &from).ok());
  EXPECT_EQ(from, "");
  EXPECT_EQ(cfg.dim, 32);

  // --resume: the newest checkpoint and its model, whatever the flags said.
  rq.resume = true;
  ASSERT_TRUE(train_resolve_resume(rq, &cfg, &from).ok());
  EXPECT_EQ(from, checkpoint_path_for_step(dir, 7));
  EXPECT_EQ(cfg.dim, 48);
  EXPECT_EQ(cfg.act_bits, 4);

  // A tokenizer with more tokens than the checkpoint's vocabulary, or a longer
  // sequence than it was trained with: refused, naming the file.
  rq.tokenizer_vocab = 65;
  cfg = small_config();
  Status s = train_resolve_resume(rq, &cfg, &from);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.msg.find("vocab 64"), std::string::npos) << s.msg;
  EXPECT_NE(s.msg.find("mini_bitnet_step_7"), std::string::npos) << s.msg;
  rq.tokenizer_vocab = 64;
  rq.seq = 17;
  s = train_resolve_resume(rq, &cfg, &from);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.msg.find("max_seq_len 16"), std::string::npos) << s.msg;
}

TEST(Resume, VocabularyOfTheFlags) {
  ModelConfig c = small_config();
  EXPECT_TRUE(train_check_vocab(c, 64).ok());
  const Status s = train_check_vocab(c, 65);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.msg.find("--vocab 64"), std::string::npos) << s.msg;
}

// The report is written and read in one place: a round trip keeps every
// field, non-finite losses travel as null, and the reader takes the last JSON
// line of a log.
TEST(Report, RoundTripThroughALog) {
  TrainReport r;
  r.checkpoint = "ck/mini_bitnet_step_40.safetensors";
  r.steps = 40;
  r.steps_this_run = 20;
  r.first_loss = 4.25;
  r.last_loss = NAN;
  r.kd = true;
  r.first_kl = 0.5;
  r.last_kl = 0.125;
  r.first_ce = 3.0;
  r.last_ce = 2.0;
  r.seen_tokens = 4974;
  r.flip_done = true;
  r.flip_step = 36;
  r.flip_tokens = 4494;
  r.act_bits = 4;
  r.skipped_steps = 1;
  r.nan_guards = 2;
  r.tokens_per_s = 1000;
  r.ranks = 2;
  r.allreduce_s = 0.5;
  r.wall_s = 2;
  r.metrics = "logs/train_metrics.jsonl";
  r.data_json = "{\"batches\":40}";
  const std::string line = train_report_to_json(r);
  EXPECT_NE(line.find("\"last_loss\":null"), std::string::npos) << line;
  EXPECT_NE(line.find("\"allreduce_share\":0.25"), std::string::npos) << line;

  const std::string log = "[bitkd] info: train: starting\n{\"steps\":1}\n" + line + "\n[bitkd] info: done\n";
  TrainReport back;
  ASSERT_TRUE(train_report_parse(log, &back).ok());
  EXPECT_EQ(back.checkpoint, r.checkpoint);
  EXPECT_EQ(back.steps, 40);
  EXPECT_EQ(back.steps_this_run, 20);
  EXPECT_EQ(back.first_loss, 4.25);
  EXPECT_TRUE(std::isnan(back.last_loss));
  EXPECT_TRUE(back.kd);
  EXPECT_EQ(back.last_kl, 0.125);
  EXPECT_EQ(back.seen_tokens, 4974);
  EXPECT_TRUE(back.flip_done);
  EXPECT_EQ(back.flip_step, 36);
  EXPECT_EQ(back.flip_tokens, 4494);
  EXPECT_EQ(back.act_bits, 4);
  EXPECT_EQ(back.nan_guards, 2);
  EXPECT_EQ(back.ranks, 2);
  EXPECT_EQ(back.data_json, "{\"batches\":40}");
  EXPECT_EQ(train_report_to_json(back), line);

  // A pretrain report has no KD fields.
  TrainReport p;
  p.steps = 3;
  const std::string pl = train_report_to_json(p);
  EXPECT_EQ(pl.find("first_kl"), std::string::npos) << pl;
  ASSERT_TRUE(train_report_parse(pl, &back).ok());
  EXPECT_FALSE(back.kd);

  EXPECT_FALSE(train_report_parse("no json here\n{\"other\":1}\n", &back).ok());
  EXPECT_FALSE(train_report_parse("{\"steps\":\"forty\"}", &back).ok());
}
