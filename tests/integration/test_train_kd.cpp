// `bitkd train` end to end on KD shards written here with the kd_schema
// writers: traces of a FIXED teacher (a bigram distribution over eight words,
// three candidates + "other" per step), so the KL a student can reach is 0.
// Checks: KL falls toward zero, the A8 -> A4 flip at exactly the token budget
// (step and tokens in the health files and the log), bitwise resume with one
// thread (stopped before and after the flip), checkpoints/health/metrics, and
// bad input: another tokenizer, empty shards, only invalid steps, NaN values.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "core/fs.h"
#include "core/rng.h"
#include "data/kd_schema.h"
#include "model/model.h"
#include "testutil/spm_fixture.h"
#include "testutil/testutil.h"
#include "tokenizer/tokenizer.h"
#include "io/config.h"
#include "kernels/cpu/kernels.h"
#include "train/checkpoint.h"
#include "train/kd_train.h"

using namespace bk;

namespace {

const char* const kWords[] = {"red", "green", "blue", "cat", "dog", "sun", "moon", "tree"};
constexpr int kNumWords = 8;
constexpr int kRespWords = 10;  // response length in words (each one student token)
const float kProbs[3] = {0.6f, 0.25f, 0.1f};  // teacher mass on the three candidates; other = 0.05

std::string q(const std::string& s) { return "'" + s + "'"; }
std::string render(const std::string& p) { return "<|user|>\n" + p + "\n\n<|assistant|>\n"; }
int cand(int prev, int j) { return (prev + 1 + 2 * j) % kNumWords; }  // j-th candidate after word `prev`

struct Fixture {
  std::string dir, tok_path;
  Tokenizer tok;
  int32_t word_id[kNumWords];
};

const Fixture& fx() {
  static Fixture* f = [] {
    auto* x = new Fixture;
    x->dir = bk_test::scratch_dir("train_kd");
    TokenizerTrainOptions o;
    Rng r;
    rng_seed(&r, 5);
    for (int i = 0; i < 3000; i++) {
      std::string s = render(kWords[rng_below(&r, kNumWords)]);
      for (int k = 0; k < kRespWords; k++) s += std::string(" ") + kWords[rng_below(&r, kNumWords)];
      o.texts.push_back(s);
    }
    o.vocab_size = 120;
    o.byte_fallback = false;  // a tiny vocabulary; every text here is plain ASCII
    std::string err;
    x->tok_path = bk_test::spm_fixture_train_opts(o, x->dir, "tok", &err);
    EXPECT_FALSE(x->tok_path.empty()) << err;
    EXPECT_TRUE(tokenizer_load(x->tok_path, &x->tok).ok());
    for (int w = 0; w < kNumWords; w++) {
      std::vector<int32_t> ids;
      EXPECT_TRUE(tokenizer_encode_continuation(x->tok, std::string(" ") + kWords[w], &ids).ok());
      EXPECT_EQ(ids.size(), 1u) << "\" " << kWords[w] << "\" is not one token";
      x->word_id[w] = ids.empty() ? 0 : ids[0];
    }
    return x;
  }();
  return *f;
}

enum class Shape { normal, all_invalid, some_nan, all_nan, empty };

// n prompts of the fixed teacher into dir (one shard + its prompts table).
void write_shards(const std::string& dir, int n, Shape shape, const std::string& hash_override = "") {
  const Fixture& f = fx();
  ASSERT_TRUE(make_dirs(dir).ok());
  KdMeta meta;
  meta.tokenizer_hash = hash_override.empty() ? tokenizer_hash(f.tok) : hash_override;
  meta.teacher_model = "fixed-bigram";
  KdStepWriter sw;
  KdPromptWriter pw;
  ASSERT_TRUE(sw.open(path_join(dir, kd_shard_name(0)), meta).ok());
  ASSERT_TRUE(pw.open(path_join(dir, kd_prompts_name(0)), meta).ok());
  Rng r;
  rng_seed(&r, 11);
  for (int i = 0; i < n && shape != Shape::empty; i++) {
    int prev = (int)rng_below(&r, kNumWords);
    KdPrompt p;
    p.prompt_idx = i;
    p.prompt_text = kWords[prev];
    p.rendered_prompt = render(p.prompt_text);
    p.finish_reason = "stop";
    p.teacher_model = meta.teacher_model;
    std::string resp;
    std::vector<KdStep> steps;
    for (int k = 0; k < kRespWords; k++) {
      // Sample among the three candidates (renormalised: the "other" mass is never sampled).
      float u = rng_uniform(&r) * (kProbs[0] + kProbs[1] + kProbs[2]);
      int j = u < kProbs[0] ? 0 : (u < kProbs[0] + kProbs[1] ? 1 : 2);
      int w = cand(prev, j);
      KdStep s;
      s.prompt_idx = i;
      s.step_idx = k;
      s.teacher_sample_id = f.word_id[w];
      s.teacher_sample_text = std::string(" ") + kWords[w];
      for (int c = 0; c < 3; c++) {
        s.topk_ids.push_back(f.word_id[cand(prev, c)]);
        s.topk_logprobs.push_back(std::log(kProbs[c]));
        s.raw_topk_tokens.push_back(std::string(" ") + kWords[cand(prev, c)]);
        s.raw_topk_logprobs.push_back(std::log(kProbs[c]));
      }
      s.other_logprob = std::log(0.05f);
      s.tokenizer_hash = meta.tokenizer_hash;
      s.teacher_sample_logprob = std::log(kProbs[j]);
      s.byte_offset = (int32_t)resp.size();
      s.valid = true;
      if (shape == Shape::all_invalid) s.valid = false, s.other_logprob = 0;
      if (shape == Shape::all_nan || (shape == Shape::some_nan && i % 3 == 0 && k == 4)) s.topk_logprobs[1] = NAN;
      resp += s.teacher_sample_text;
      steps.push_back(s);
      prev = w;
    }
    p.response_text = resp;
    p.completion_tokens = kRespWords;
    ASSERT_TRUE(pw.append(p).ok());
    for (const KdStep& s : steps) ASSERT_TRUE(sw.append(s).ok());
  }
  ASSERT_TRUE(sw.close().ok());
  ASSERT_TRUE(pw.close().ok());
}

std::string train_cmd(const std::string& data, const std::string& out, const std::string& extra) {
  const Fixture& f = fx();
  return bk_test::bitkd_exe() + " train --env-file /dev/null --threads 1 --artifacts " + q(out + "/art") +
         " --tokenizer " + q(f.tok_path) + " --data " + q(data) + " --out " + q(out) + " --metrics " +
         q(out + "/train_metrics.jsonl") + " --dim 32 --layers 2 --heads 2 --seq 24 --topk 4 " + extra;
}

nlohmann::json last_json_line(const std::string& out) {
  size_t p = out.rfind("\n{");
  std::string line = p == std::string::npos ? out : out.substr(p + 1);
  line = line.substr(0, line.find('\n'));
  return nlohmann::json::parse(line, nullptr, false);
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::string text;
  EXPECT_TRUE(read_file(path, &text).ok()) << path;
  std::vector<nlohmann::json> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    if (nl > pos) out.push_back(nlohmann::json::parse(text.substr(pos, nl - pos)));
    pos = nl + 1;
  }
  return out;
}

nlohmann::json read_json(const std::string& path) {
  std::string text;
  EXPECT_TRUE(read_file(path, &text).ok()) << path;
  return nlohmann::json::parse(text, nullptr, false);
}

int count(const std::string& hay, const std::string& needle) {
  int n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) n++;
  return n;
}

// Response positions per example: ten words + EOS.
constexpr int kTargetsPerExample = kRespWords + 1;

}  // namespace

TEST(TrainKd, StudentLearnsTheFixedTeacherKlFalls) {
  const Fixture& f = fx();
  std::string data = f.dir + "/data_normal";
  write_shards(data, 64, Shape::normal);
  std::string out = f.dir + "/run_kl", log;
  int rc = bk_test::run_command(
      train_cmd(data, out,
                "--steps 160 --batch 8 --lr 4e-3 --warmup 10 --log-interval 20 --checkpoint-interval 50 "
                "--keep-checkpoints 2 --no-flip"),
      &log);
  ASSERT_EQ(rc, 0) << log;
  nlohmann::json r = last_json_line(log);
  ASSERT_TRUE(r.is_object()) << log;
  const double kl0 = r["first_kl"], kl1 = r["last_kl"];
  printf("[train_kd] KL first %.4f last %.4f (CE %.4f -> %.4f)\n", kl0, kl1, r["first_ce"].get<double>(),
         r["last_ce"].get<double>());
  EXPECT_GT(kl0, 0.5);
  EXPECT_LT(kl1, 0.1 * kl0);
  EXPECT_EQ(r["steps"], 160);
  EXPECT_EQ(r["skipped_steps"], 0);
  EXPECT_EQ(r["nan_guards"], 0);
  EXPECT_EQ(r["seen_tokens"].get<long long>(), 160LL * 8 * kTargetsPerExample);
  // Keep the last 2 checkpoints: 150 and 160 (the final one).
  auto cks = checkpoint_list(out);
  ASSERT_EQ(cks.size(), 2u);
  EXPECT_EQ(cks[0].first, 150);
  EXPECT_EQ(cks[1].first, 160);
  // Metrics every LOG_INTERVAL with the KD parts.
  auto lines = read_jsonl(out + "/train_metrics.jsonl");
  ASSERT_EQ(lines.size(), 8u);
  for (const auto& j : lines) {
    EXPECT_TRUE(j.contains("kl") && j.contains("ce") && j.contains("format") && j.contains("loss")) << j.dump();
    EXPECT_EQ(j["act_bits"], 8);
  }
  EXPECT_LT(lines.back()["kl"].get<double>(), lines.front()["kl"].get<double>());
}

TEST(TrainKd, FlipAtTheBudgetAndBitwiseResume) {
  const Fixture& f = fx();
  std::string data = f.dir + "/data_flip";
  write_shards(data, 40, Shape::normal);
  const int B = 4;
  const long long per_step = (long long)B * kTargetsPerExample;
  // Threshold 2.5 steps of tokens: the flip must happen before step index 3
  // (after 3 steps, 3 * per_step >= threshold > 2 * per_step).
  const long long threshold = per_step * 5 / 2;
  const std::string common = "--batch " + std::to_string(B) + " --lr 3e-3 --tmax 12 --log-interval 1 "
                             "--checkpoint-interval 1 --keep-checkpoints 0 --budget " + std::to_string(threshold) +
                             " --flip-fraction 1 --a4-scope hybrid";
  std::string full = f.dir + "/run_full", log;
  ASSERT_EQ(bk_test::run_command(train_cmd(data, full, common + " --steps 12"), &log), 0) << log;
  EXPECT_EQ(count(log, "activations now 4-bit"), 1) << log;
  EXPECT_NE(log.find("step 3: " + std::to_string(3 * per_step) + " tokens seen >= " + std::to_string(threshold)),
            std::string::npos)
      << log;
  // Health files: flip state, PoC fields and ours.
  for (int s = 1; s <= 12; s++) {
    nlohmann::json h = read_json(checkpoint_health_path(checkpoint_path_for_step(full, s)));
    ASSERT_TRUE(h.is_object()) << s;
    EXPECT_EQ(h["step"], s);
    EXPECT_EQ(h["seen_tokens"].get<long long>(), s * per_step);
    // The flip happens between steps: before step index 3, the 4th step, the
    // first one trained with 4-bit activations.
    EXPECT_EQ(h["flip_done"], s >= 4) << s;
    EXPECT_EQ(h["activation_bits"], s >= 4 ? 4 : 8) << s;
    EXPECT_EQ(h["flip_step"], s >= 4 ? 3 : -1) << s;
    EXPECT_EQ(h["flip_tokens"].get<long long>(), s >= 4 ? 3 * per_step : -1) << s;
    for (const char* k : {"last_loss", "timestamp", "kl", "ce", "format", "lr", "grad_norm", "tokens_per_s",
                          "skipped_steps", "nan_guards", "data_position"})
      EXPECT_TRUE(h.contains(k)) << "health of step " << s << " lacks " << k;
    EXPECT_EQ(h["data_position"]["batches"], s);
  }
  auto lines = read_jsonl(full + "/train_metrics.jsonl");
  ASSERT_EQ(lines.size(), 12u);
  for (int s = 1; s <= 12; s++) EXPECT_EQ(lines[s - 1]["act_bits"], s >= 4 ? 4 : 8) << s;

  Model ref;
  TrainState ref_st;
  ASSERT_TRUE(checkpoint_load(checkpoint_path_for_step(full, 12), &ref, &ref_st).ok());
  EXPECT_EQ(ref.cfg.act_bits, 4);
  EXPECT_EQ(ref.cfg.a4_scope, A4_HYBRID);
  for (int stop : {2, 7}) {  // before and after the flip
    std::string part = f.dir + "/run_resume_" + std::to_string(stop), log1, log2;
    ASSERT_EQ(bk_test::run_command(train_cmd(data, part, common + " --steps " + std::to_string(stop)), &log1), 0)
        << log1;
    ASSERT_EQ(bk_test::run_command(train_cmd(data, part, common + " --steps 12 --resume"), &log2), 0) << log2;
    EXPECT_NE(log2.find("resumed from"), std::string::npos) << log2;
    EXPECT_EQ(count(log1 + log2, "activations now 4-bit"), 1) << "stop " << stop << "\n" << log1 << log2;
    Model m;
    TrainState st;
    ASSERT_TRUE(checkpoint_load(checkpoint_path_for_step(part, 12), &m, &st).ok());
    EXPECT_EQ(st.step, 12);
    EXPECT_EQ(st.seen_tokens, ref_st.seen_tokens);
    EXPECT_EQ(st.flip.flip_done, true);
    EXPECT_EQ(st.flip.flip_step, 3) << "stop " << stop;
    EXPECT_EQ(st.flip.flip_tokens, 3 * per_step) << "stop " << stop;
    EXPECT_EQ(m.cfg.act_bits, 4);
    ASSERT_EQ(m.params.size(), ref.params.size());
    size_t diff = 0;
    for (size_t i = 0; i < m.params.size(); i++) diff += m.params[i] != ref.params[i];
    EXPECT_EQ(diff, 0u) << "stop " << stop << ": " << diff << " parameters differ from the uninterrupted run";
    EXPECT_EQ(st.last_loss, ref_st.last_loss);
  }
}

TEST(TrainKd, RefusesAnotherTokenizerUnlessAllowed) {
  const Fixture& f = fx();
  std::string data = f.dir + "/data_foreign";
  write_shards(data, 12, Shape::normal, std::string(64, 'a'));
  std::string out = f.dir + "/run_foreign", log;
  int rc = bk_test::run_command(train_cmd(data, out, "--steps 2 --batch 2"), &log);
  EXPECT_NE(rc, 0) << log;
  EXPECT_NE(log.find("tokenizer"), std::string::npos) << log;
  EXPECT_NE(log.find(std::string(64, 'a')), std::string::npos) << log;
  EXPECT_NE(log.find("KD_ALLOW_TOKENIZER_MISMATCH"), std::string::npos) << log;
  EXPECT_TRUE(checkpoint_list(out).empty());
  rc = bk_test::run_command(train_cmd(data, out, "--steps 2 --batch 2 --allow-tokenizer-mismatch"), &log);
  EXPECT_EQ(rc, 0) << log;
  EXPECT_EQ(checkpoint_list(out).size(), 1u);
}

TEST(TrainKd, EmptyAndInvalidShardsFailClearly) {
  const Fixture& f = fx();
  std::string out = f.dir + "/run_bad", log;
  // No data directory at all.
  int rc = bk_test::run_command(train_cmd(f.dir + "/no_such_dir", out, "--steps 2"), &log);
  EXPECT_NE(rc, 0);
  EXPECT_NE(log.find("no_such_dir"), std::string::npos) << log;
  // Shards without a single row.
  std::string empty = f.dir + "/data_empty";
  write_shards(empty, 0, Shape::empty);
  rc = bk_test::run_command(train_cmd(empty, out, "--steps 2"), &log);
  EXPECT_NE(rc, 0);
  EXPECT_NE(log.find("no readable teacher step"), std::string::npos) << log;
  // Only invalid steps: nothing to distil; CE-only on the responses is allowed.
  std::string inv = f.dir + "/data_invalid";
  write_shards(inv, 12, Shape::all_invalid);
  rc = bk_test::run_command(train_cmd(inv, out, "--steps 2"), &log);
  EXPECT_NE(rc, 0);
  EXPECT_NE(log.find("marked invalid"), std::string::npos) << log;
  EXPECT_NE(log.find("--kd-weight 0"), std::string::npos) << log;
  rc = bk_test::run_command(train_cmd(inv, out, "--steps 2 --batch 2 --kd-weight 0"), &log);
  EXPECT_EQ(rc, 0) << log;
  // All teacher values NaN: every row is unreadable.
  std::string nan_all = f.dir + "/data_nan_all";
  write_shards(nan_all, 12, Shape::all_nan);
  rc = bk_test::run_command(train_cmd(nan_all, f.dir + "/run_nan_all", "--steps 2"), &log);
  EXPECT_NE(rc, 0);
  EXPECT_NE(log.find("no readable teacher step"), std::string::npos) << log;
  EXPECT_NE(log.find("NaN"), std::string::npos) << log;
}

TEST(TrainKd, NanTeacherValuesAreSkippedAndCounted) {
  const Fixture& f = fx();
  std::string data = f.dir + "/data_nan_some";
  write_shards(data, 30, Shape::some_nan);
  std::string out = f.dir + "/run_nan_some", log;
  int rc = bk_test::run_command(train_cmd(data, out, "--steps 20 --batch 4 --lr 3e-3 --log-interval 5"), &log);
  ASSERT_EQ(rc, 0) << log;
  nlohmann::json r = last_json_line(log);
  ASSERT_TRUE(r.is_object()) << log;
  EXPECT_GT(r["nan_guards"].get<long long>(), 0) << log;
  EXPECT_GT(r["data"]["bad_step_rows"].get<long long>(), 0) << log;
  EXPECT_TRUE(std::isfinite(r["last_loss"].get<double>()));
  Model m;
  TrainState st;
  ASSERT_TRUE(checkpoint_load(checkpoint_path_for_step(out, 20), &m, &st).ok());
  for (float x : m.params) ASSERT_TRUE(std::isfinite(x));
  nlohmann::json h = read_json(checkpoint_health_path(checkpoint_path_for_step(out, 20)));
  EXPECT_GT(h["nan_guards"].get<long long>(), 0);
}

TEST(TrainKd, BadFlagsFailWithTheVariableName) {
  const Fixture& f = fx();
  std::string data = f.dir + "/data_flags";
  write_shards(data, 4, Shape::normal);
  std::string log;
  EXPECT_NE(bk_test::run_command(train_cmd(data, f.dir + "/run_flags", "--tau 0"), &log), 0);
  EXPECT_NE(log.find("KD_TAU"), std::string::npos) << log;
  EXPECT_NE(bk_test::run_command(train_cmd(data, f.dir + "/run_flags", "--kd-loss mse"), &log), 0);
  EXPECT_NE(log.find("KD_LOSS"), std::string::npos) << log;
}

TEST(TrainKd, GradientAccumulationConsumesMicroBatches) {
  const Fixture& f = fx();
  std::string data = f.dir + "/data_accum";
  write_shards(data, 16, Shape::normal);
  std::string out = f.dir + "/run_accum", log;
  int rc = bk_test::run_command(train_cmd(data, out, "--steps 5 --batch 2 --grad-accum 3 --lr 3e-3 --no-flip"), &log);
  ASSERT_EQ(rc, 0) << log;
  nlohmann::json r = last_json_line(log);
  ASSERT_TRUE(r.is_object()) << log;
  EXPECT_EQ(r["seen_tokens"].get<long long>(), 5LL * 3 * 2 * kTargetsPerExample);
  nlohmann::json h = read_json(checkpoint_health_path(checkpoint_path_for_step(out, 5)));
  EXPECT_EQ(h["data_position"]["batches"], 15);  // 5 steps x 3 micro-batches
  EXPECT_TRUE(std::isfinite(h["last_loss"].get<double>()));
}

// The same training through the library entry point (no binary): an
// interrupted run resumed from its checkpoint ends bit for bit where an
// uninterrupted one does.
TEST(KdTrainLibrary, ExactResumeWithoutTheBinary) {
  const Fixture& f = fx();
  const std::string data = f.dir + "/data_lib";
  write_shards(data, 24, Shape::normal);
  auto options = [&](const std::string& out, long steps) {
    KdTrainOptions o;
    Config defaults;
    EXPECT_TRUE(config_load(&defaults, "", {}).ok());
    EXPECT_TRUE(loader_options_from_config(defaults, &o.data).ok());
    o.data.data_dir = data;
    o.trainer.label = "lib";
    o.trainer.batch = 4;
    o.trainer.seq = 32;
    o.trainer.total_steps = steps;
    o.trainer.sched.lr_peak = 3e-3;
    o.trainer.sched.t_max = 8;
    o.trainer.checkpoint_dir = out;
    o.trainer.checkpoint_interval = 1;
    o.trainer.keep_checkpoints = 0;
    o.trainer.flip_at_tokens = 60;
    o.trainer.progress = false;
    o.model.vocab_size = tokenizer_vocab_size(f.tok);
    o.model.dim = 32;
    o.model.n_layers = 1;
    o.model.n_heads = 2;
    o.model.n_kv_heads = 2;
    o.model.head_dim = 16;
    o.model.ffn_dim = 64;
    o.model.max_seq_len = 32;
    o.model.weight_quant = WQ_TERNARY;
    o.model.act_bits = 8;
    return o;
  };
  kernels_set_threads(1);
  Model full;
  KdTrainResult rf;
  ASSERT_TRUE(kd_train_run(options(f.dir + "/lib_full", 8), f.tok, &full, &rf).ok());
  EXPECT_TRUE(rf.train.flip.flip_done);
  Model part;
  KdTrainResult rp;
  ASSERT_TRUE(kd_train_run(options(f.dir + "/lib_part", 3), f.tok, &part, &rp).ok());
  KdTrainOptions again = options(f.dir + "/lib_part", 8);
  again.trainer.resume_from = checkpoint_find_latest(f.dir + "/lib_part");
  ASSERT_FALSE(again.trainer.resume_from.empty());
  Model resumed;
  ASSERT_TRUE(kd_train_run(again, f.tok, &resumed, &rp).ok());
  kernels_set_threads(0);
  EXPECT_EQ(rp.train.steps_done, 8);
  EXPECT_EQ(rp.train.seen_tokens, rf.train.seen_tokens);
  EXPECT_EQ(rp.train.flip.flip_step, rf.train.flip.flip_step);
  EXPECT_TRUE(resumed.params == full.params) << "the resumed run differs from the uninterrupted one";
}

// A student from a float teacher's weights: the teacher's shape and every
// tensor by name, the student's quantization, SubLN added where the teacher
// had none (its gains start at 1).
TEST(KdTrainLibrary, StudentFromTeacherWeights) {
  const Fixture& f = fx();
  ModelConfig tc;
  tc.vocab_size = tokenizer_vocab_size(f.tok);
  tc.dim = 32;
  tc.n_layers = 2;
  tc.n_heads = 2;
  tc.n_kv_heads = 2;
  tc.head_dim = 16;
  tc.ffn_dim = 64;
  tc.max_seq_len = 32;
  tc.subln = false;
  tc.weight_quant = WQ_NONE;
  tc.act_bits = 0;
  Model teacher;
  ASSERT_TRUE(model_init(&teacher, tc, 3).ok());
  for (float& x : teacher.params) x += 0.01f;  // norms too: distinguishable from a fresh init
  const std::string dir = f.dir + "/teacher_for_init";
  TrainState ts;
  std::string path;
  ASSERT_TRUE(checkpoint_save(dir, teacher, nullptr, nullptr, ts, "", 0, &path).ok());
  ModelConfig quant;
  quant.weight_quant = WQ_TERNARY;
  quant.act_bits = 8;
  quant.max_seq_len = 64;
  Model s;
  int copied = 0;
  ASSERT_TRUE(student_from_teacher(path, quant, 1, &s, &copied).ok());
  EXPECT_EQ(s.cfg.dim, 32);
  EXPECT_EQ(s.cfg.n_layers, 2);
  EXPECT_TRUE(s.cfg.subln);
  EXPECT_EQ(s.cfg.weight_quant, WQ_TERNARY);
  EXPECT_EQ(s.cfg.act_bits, 8);
  EXPECT_EQ(s.cfg.max_seq_len, 64);
  EXPECT_EQ(copied, (int)teacher.info.size());
  for (const ParamInfo& p : s.info) {
    const ParamInfo* q = model_find_param(teacher, p.name);
    if (q) {
      EXPECT_TRUE(std::equal(s.params.begin() + p.offset, s.params.begin() + p.offset + p.numel,
                             teacher.params.begin() + q->offset))
          << p.name;
    } else {
      for (size_t i = 0; i < p.numel; i++) ASSERT_EQ(s.params[p.offset + i], 1.0f) << p.name << " (a new SubLN gain)";
    }
  }

  // The same teacher through the CLI with attention-relation distillation:
  // the term is logged and falls; without --init-from it is refused.
  const std::string data = f.dir + "/attn_rel_data", out = f.dir + "/attn_rel_out";
  write_shards(data, 32, Shape::normal);
  std::string log;
  int rc = bk_test::run_command(train_cmd(data, out, "--init-from " + q(path) +
                                                         " --attn-relation-weight 1 --steps 12 --batch 2 --lr 3e-3 "
                                                         "--warmup 0 --log-interval 1 --checkpoint-interval 0 --no-flip") +
                                    " 2>&1",
                                &log);
  ASSERT_EQ(rc, 0) << log;
  std::vector<nlohmann::json> rows = read_jsonl(out + "/train_metrics.jsonl");
  ASSERT_GE(rows.size(), 10u) << log;
  ASSERT_TRUE(rows.front().contains("attn_rel")) << rows.front();
  EXPECT_LT(rows.back()["attn_rel"].get<double>(), rows.front()["attn_rel"].get<double>());
  rc = bk_test::run_command(train_cmd(data, out + "2", "--attn-relation-weight 1 --steps 2") + " 2>&1", &log);
  EXPECT_NE(rc, 0);
  EXPECT_NE(log.find("--init-from"), std::string::npos) << log;
}
