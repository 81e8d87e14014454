// KD loader over real Parquet shards written with the kd_schema writers:
// grouping, alignment, batches and masks, shuffling determinism, resume,
// packing, tokenizer-hash check and skip-and-count of bad rows.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "core/fs.h"
#include "data/kd_schema.h"
#include "data/loader/loader.h"
#include "data/tasks/tasks.h"
#include "io/config.h"
#include "kd/projection.h"
#include "testutil/spm_fixture.h"
#include "testutil/testutil.h"

using namespace bk;

namespace {

std::string render(const std::string& p) { return "<|user|>\n" + p + "\n\n<|assistant|>\n"; }

const Tokenizer& tok() {
  static Tokenizer t = [] {
    std::string dir = bk_test::scratch_dir("loader_tok");
    TaskGenOptions g;
    g.n = 2000;
    std::vector<TaskItem> items;
    if (!tasks_generate(g, &items).ok()) abort();
    TokenizerTrainOptions o;
    for (const TaskItem& it : items) o.texts.push_back(render(it.prompt) + it.response);
    o.vocab_size = 600;
    std::string err;
    std::string path = bk_test::spm_fixture_train_opts(o, dir, "tok", &err);
    Tokenizer r;
    if (path.empty() || !tokenizer_load(path, &r).ok()) abort();
    return r;
  }();
  return t;
}

struct Corpus {
  int prompts = 0;
  int64_t steps = 0;
};

// Teacher = the student tokenizer: one step per response token.
std::vector<KdStep> steps_for(int64_t idx, const std::string& prompt, const std::string& resp,
                              const std::string& hash) {
  std::string full = prompt + resp;
  std::vector<int32_t> ids;
  std::vector<TokenSpan> spans;
  EXPECT_TRUE(tokenizer_encode_with_spans(tok(), full, &ids, &spans).ok());
  std::vector<KdStep> out;
  int32_t P = (int32_t)prompt.size();
  for (size_t k = 0; k < ids.size(); k++) {
    if (spans[k].begin < P || spans[k].end == spans[k].begin) continue;
    KdStep s;
    s.prompt_idx = idx;
    s.step_idx = (int32_t)out.size();
    s.teacher_sample_text = full.substr(spans[k].begin, spans[k].end - spans[k].begin);
    s.teacher_sample_id = ids[k];
    s.topk_ids = {ids[k], (ids[k] + 7) % tokenizer_vocab_size(tok())};
    s.topk_logprobs = {std::log(0.8f), std::log(0.15f)};
    s.other_logprob = std::log(0.05f);
    s.is_struct_token = is_struct_token(s.teacher_sample_text);
    s.tokenizer_hash = hash;
    s.teacher_sample_logprob = s.topk_logprobs[0];
    s.byte_offset = spans[k].begin - P;
    s.raw_topk_tokens = {s.teacher_sample_text};
    s.raw_topk_logprobs = {s.topk_logprobs[0]};
    out.push_back(s);
  }
  return out;
}

// Writes n_shards shards of `per_shard` task prompts into dir.
Corpus write_corpus(const std::string& dir, int n_shards, int per_shard, const std::string& hash,
                    bool with_prompts = true, bool drop_offsets = false, const char* source = "teacher_sample") {
  Corpus c;
  TaskGenOptions g;
  g.n = n_shards * per_shard;
  g.seed = 99;
  std::vector<TaskItem> items;
  EXPECT_TRUE(tasks_generate(g, &items).ok());
  KdMeta meta;
  meta.tokenizer_hash = hash;
  for (int s = 0; s < n_shards; s++) {
    KdStepWriter sw;
    KdPromptWriter pw;
    KdWriterOptions wo;
    wo.row_group_rows = 50;  // several row groups: prompts straddle them
    EXPECT_TRUE(sw.open(path_join(dir, kd_shard_name(s)), meta, wo).ok());
    if (with_prompts) {
      EXPECT_TRUE(pw.open(path_join(dir, kd_prompts_name(s)), meta, wo).ok());
    }
    for (int i = 0; i < per_shard; i++) {
      const TaskItem& it = items[(size_t)(s * per_shard + i)];
      int64_t idx = s * per_shard + i;
      KdPrompt p;
      p.prompt_idx = idx;
      p.prompt_text = it.prompt;
      p.rendered_prompt = render(it.prompt);
      p.response_text = it.response;
      p.finish_reason = "stop";
      p.task = it.task;
      p.reference = it.response;
      p.source = source;
      p.score = idx % 2 ? 1.0 : 0.0;  // every other teacher sample "wrong"
      if (with_prompts) {
        EXPECT_TRUE(pw.append(p).ok());
      }
      for (KdStep& st : steps_for(idx, p.rendered_prompt, it.response, hash)) {
        if (drop_offsets) st.byte_offset = -1;
        EXPECT_TRUE(sw.append(st).ok());
        c.steps++;
      }
      c.prompts++;
    }
    EXPECT_TRUE(sw.close().ok());
    if (with_prompts) {
      EXPECT_TRUE(pw.close().ok());
    }
  }
  return c;
}

LoaderOptions base_opts(const std::string& dir) {
  LoaderOptions o;
  o.data_dir = dir;
  o.batch_size = 4;
  o.max_seq_len = 128;
  o.max_topk = 4;
  o.shuffle_buffer = 16;
  o.loop = false;
  o.seed = 5;
  return o;
}

std::vector<LoaderBatch> drain(const LoaderOptions& o, int max_batches = 1 << 30, LoaderStats* stats = nullptr) {
  KdLoader l;
  Status st = loader_open(o, tok(), &l);
  EXPECT_TRUE(st.ok()) << st.msg;
  std::vector<LoaderBatch> out;
  if (!st.ok()) return out;
  for (int i = 0; i < max_batches; i++) {
    LoaderBatch b;
    bool done = false;
    st = loader_next(&l, &b, &done);
    EXPECT_TRUE(st.ok()) << st.msg;
    if (!st.ok() || done) break;
    out.push_back(std::move(b));
  }
  if (stats) *stats = loader_stats(l);
  return out;
}

void check_batch(const LoaderBatch& b) {
  size_t BT = (size_t)b.B * b.T;
  ASSERT_EQ(b.tokens.size(), BT);
  ASSERT_EQ(b.targets.size(), BT);
  ASSERT_EQ(b.topk_ids.size(), BT * b.K);
  int64_t loss = 0, kd = 0;
  for (size_t i = 0; i < BT; i++) {
    if (!b.key_mask[i]) {
      EXPECT_EQ(b.tokens[i], tokenizer_pad_id(tok()));
      EXPECT_EQ(b.targets[i], -1);
      EXPECT_EQ(b.segment[i], -1);
      EXPECT_EQ(b.kd_mask[i], 0);
    }
    if (b.targets[i] >= 0) {
      EXPECT_GT(b.ce_weight[i], 0.f);
    }
    if (b.targets[i] >= 0 || b.kd_mask[i]) loss++;
    if (b.kd_mask[i]) {
      kd++;
      EXPECT_GE(b.topk_ids[i * b.K], 0);
      EXPECT_LT(b.other_logprob[i], 0.f);
    } else {
      for (int k = 0; k < b.K; k++) EXPECT_EQ(b.topk_ids[i * b.K + k], -1);
    }
    // Positions restart with each segment.
    if (b.key_mask[i] && i % b.T > 0 && b.segment[i] == b.segment[i - 1]) {
      EXPECT_EQ(b.position[i], b.position[i - 1] + 1);
    }
    if (b.key_mask[i] && (i % b.T == 0 || b.segment[i] != b.segment[i - 1])) {
      EXPECT_EQ(b.position[i], 0);
    }
  }
  EXPECT_EQ(loss, b.loss_tokens);
  EXPECT_EQ(kd, b.kd_positions);
}

}  // namespace

TEST(Loader, OneEpochAlignsEveryPrompt) {
  std::string dir = bk_test::scratch_dir("loader_epoch");
  Corpus c = write_corpus(dir, 2, 30, tokenizer_hash(tok()));
  LoaderStats st;
  std::vector<LoaderBatch> batches = drain(base_opts(dir), 1000, &st);
  int examples = 0;
  for (const LoaderBatch& b : batches) {
    check_batch(b);
    examples += b.examples;
    EXPECT_LE(b.T, 128);
    EXPECT_EQ(b.T % 8, 0);
    EXPECT_EQ(b.K, 4);
  }
  EXPECT_EQ(examples, c.prompts);
  EXPECT_EQ((int)batches.size(), (c.prompts + 3) / 4);
  EXPECT_EQ(st.prompts, c.prompts);
  EXPECT_EQ(st.prompts_used, c.prompts);
  EXPECT_EQ(st.step_rows, c.steps);
  EXPECT_EQ(st.align.steps_aligned, c.steps);  // same tokenizer: every step aligns
  EXPECT_EQ(st.prompts_split, 0);
  EXPECT_EQ(st.shards_opened, 2);
  printf("%s\n", loader_stats_line(st).c_str());
}

TEST(Loader, DeterministicBySeedAndShuffled) {
  std::string dir = bk_test::scratch_dir("loader_det");
  write_corpus(dir, 2, 20, tokenizer_hash(tok()));
  LoaderOptions o = base_opts(dir);
  auto a = drain(o), b = drain(o);
  o.seed = 6;
  auto c = drain(o);
  o.shuffle_buffer = 1;
  auto d = drain(o);
  ASSERT_EQ(a.size(), b.size());
  bool differs = false, differs_from_file_order = false;
  for (size_t i = 0; i < a.size(); i++) {
    EXPECT_EQ(a[i].tokens, b[i].tokens);
    EXPECT_EQ(a[i].targets, b[i].targets);
    EXPECT_EQ(a[i].topk_ids, b[i].topk_ids);
    if (i < c.size()) differs |= a[i].tokens != c[i].tokens;
    if (i < d.size()) differs_from_file_order |= a[i].tokens != d[i].tokens;
  }
  EXPECT_TRUE(differs);
  EXPECT_TRUE(differs_from_file_order);
}

TEST(Loader, ResumeAtAPosition) {
  std::string dir = bk_test::scratch_dir("loader_resume");
  write_corpus(dir, 2, 15, tokenizer_hash(tok()));
  LoaderOptions o = base_opts(dir);
  o.loop = true;  // crosses an epoch boundary
  auto full = drain(o, 14);
  ASSERT_EQ(full.size(), 14u);
  EXPECT_EQ(full.back().epoch, 1);
  o.start_batch = 9;
  KdLoader l;
  ASSERT_TRUE(loader_open(o, tok(), &l).ok());
  EXPECT_EQ(loader_position(l), 0);
  for (int i = 9; i < 14; i++) {
    LoaderBatch b;
    bool done = false;
    ASSERT_TRUE(loader_next(&l, &b, &done).ok());
    ASSERT_FALSE(done);
    EXPECT_EQ(b.tokens, full[i].tokens) << "batch " << i;
    EXPECT_EQ(b.topk_logprobs, full[i].topk_logprobs);
    EXPECT_EQ(loader_position(l), i + 1);
  }
  EXPECT_GE(loader_stats(l).epochs_completed, 1);
}

TEST(Loader, PackingFillsRows) {
  std::string dir = bk_test::scratch_dir("loader_pack");
  Corpus c = write_corpus(dir, 1, 40, tokenizer_hash(tok()));
  LoaderOptions o = base_opts(dir);
  o.pack = true;
  o.trim_batch = false;
  auto batches = drain(o);
  int examples = 0, rows = 0, multi = 0;
  for (const LoaderBatch& b : batches) {
    check_batch(b);
    EXPECT_EQ(b.T, 128);
    examples += b.examples;
    for (int r = 0; r < b.B; r++) {
      rows++;
      int max_seg = -1;
      for (int t = 0; t < b.T; t++) max_seg = std::max(max_seg, b.segment[(size_t)r * b.T + t]);
      multi += max_seg > 0;
    }
  }
  EXPECT_EQ(examples, c.prompts);
  EXPECT_GT(multi, 0);
  EXPECT_LT(rows, c.prompts);
}

TEST(Loader, TokenizerHashMustMatch) {
  std::string dir = bk_test::scratch_dir("loader_hash");
  write_corpus(dir, 1, 5, "0123456789abcdef");
  KdLoader l;
  Status st = loader_open(base_opts(dir), tok(), &l);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("kd_shard_000.parquet"), std::string::npos) << st.msg;
  EXPECT_NE(st.msg.find("KD_ALLOW_TOKENIZER_MISMATCH"), std::string::npos) << st.msg;
  LoaderOptions o = base_opts(dir);
  o.allow_tokenizer_mismatch = true;
  LoaderStats stats;
  auto b = drain(o, 100, &stats);
  EXPECT_FALSE(b.empty());
  EXPECT_EQ(stats.tokenizer_mismatch_shards, 1);
}

TEST(Loader, BadRowsAreSkippedAndCounted) {
  std::string dir = bk_test::scratch_dir("loader_bad");
  std::string hash = tokenizer_hash(tok());
  {
    KdMeta meta;
    meta.tokenizer_hash = hash;
    KdStepWriter sw;
    KdPromptWriter pw;
    ASSERT_TRUE(sw.open(path_join(dir, kd_shard_name(0)), meta).ok());
    ASSERT_TRUE(pw.open(path_join(dir, kd_prompts_name(0)), meta).ok());
    const char* prompts[] = {"What is 1 + 2?", "What is 3 + 4?", "What is 5 + 6?"};
    const char* answers[] = {"3", "7", "11"};
    for (int i = 0; i < 3; i++) {
      KdPrompt p;
      p.prompt_idx = i;
      p.rendered_prompt = render(prompts[i]);
      p.response_text = answers[i];
      p.finish_reason = i == 2 ? "length" : "stop";
      if (i != 1) {
        ASSERT_TRUE(pw.append(p).ok());  // prompt 1 has no prompt row
      }
      for (KdStep& s : steps_for(i, p.rendered_prompt, p.response_text, hash)) {
        if (i == 2 && s.step_idx == 0) s.topk_logprobs[0] = NAN;  // a bad row
        ASSERT_TRUE(sw.append(s).ok());
      }
    }
    ASSERT_TRUE(sw.close().ok());
    ASSERT_TRUE(pw.close().ok());
  }
  LoaderStats st;
  auto batches = drain(base_opts(dir), 10, &st);
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].examples, 2);
  EXPECT_EQ(st.prompts_missing_row, 1);
  EXPECT_EQ(st.bad_step_rows, 1);
  EXPECT_FALSE(st.first_error.empty());
  // Without skipping, the first bad row is an error naming the shard.
  LoaderOptions o = base_opts(dir);
  o.skip_bad_rows = false;
  KdLoader l;
  ASSERT_TRUE(loader_open(o, tok(), &l).ok());
  LoaderBatch b;
  bool done = false;
  Status s = loader_next(&l, &b, &done);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.msg.find("kd_shard_000.parquet"), std::string::npos) << s.msg;
}

TEST(Loader, PocShardsWithoutPromptsOrOffsets) {
  std::string dir = bk_test::scratch_dir("loader_poc");
  Corpus c = write_corpus(dir, 1, 12, tokenizer_hash(tok()), /*with_prompts=*/false, /*drop_offsets=*/true);
  LoaderStats st;
  auto batches = drain(base_opts(dir), 100, &st);
  int examples = 0;
  for (const LoaderBatch& b : batches) {
    check_batch(b);
    examples += b.examples;
  }
  EXPECT_EQ(examples, c.prompts);
  EXPECT_EQ(st.prompts_missing_row, c.prompts);
  EXPECT_EQ(st.offsets_derived, c.prompts);
  EXPECT_GT(st.align.steps_aligned, c.steps * 9 / 10);
  LoaderOptions o = base_opts(dir);
  o.allow_missing_prompts = false;
  drain(o, 100, &st);
  EXPECT_EQ(st.prompts_used, 0);
}

TEST(Loader, PromptLongerThanWindowIsCounted) {
  std::string dir = bk_test::scratch_dir("loader_long");
  Corpus c = write_corpus(dir, 1, 6, tokenizer_hash(tok()));
  LoaderOptions o = base_opts(dir);
  o.max_seq_len = 4;
  KdLoader l;
  ASSERT_TRUE(loader_open(o, tok(), &l).ok());
  LoaderBatch b;
  bool done = false;
  ASSERT_TRUE(loader_next(&l, &b, &done).ok());
  EXPECT_TRUE(done);
  EXPECT_EQ(loader_stats(l).prompts_no_target, c.prompts);
  // With looping and nothing usable, the loader says so instead of spinning.
  o.loop = true;
  KdLoader l2;
  ASSERT_TRUE(loader_open(o, tok(), &l2).ok());
  Status st = loader_next(&l2, &b, &done);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("no usable example"), std::string::npos);
}

TEST(Loader, OpenErrors) {
  KdLoader l;
  LoaderOptions o;
  o.data_dir = bk_test::scratch_dir("loader_empty");
  Status st = loader_open(o, tok(), &l);
  EXPECT_NE(st.msg.find("kd_shard_"), std::string::npos);
  o.data_dir += "/missing";
  EXPECT_FALSE(loader_open(o, tok(), &l).ok());
  o.shard_files = {"/nonexistent/kd_shard_000.parquet"};
  EXPECT_FALSE(loader_open(o, tok(), &l).ok());
}

TEST(Loader, OptionsFromConfig) {
  Config c;
  ASSERT_TRUE(config_load(&c, "", {{"TRAIN_BATCH_SIZE", "8"}, {"MAX_SEQ_LEN", "64"}, {"KD_PACK", "1"},
                                   {"KD_DATA_PATH", "/x/data"}, {"KD_CE_WEIGHT", "0.5"}})
                  .ok());
  LoaderOptions o;
  ASSERT_TRUE(loader_options_from_config(c, &o).ok());
  EXPECT_EQ(o.batch_size, 8);
  EXPECT_EQ(o.max_seq_len, 64);
  EXPECT_EQ(o.max_topk, 20);
  EXPECT_TRUE(o.pack);
  EXPECT_TRUE(o.skip_bad_rows);
  EXPECT_FALSE(o.allow_tokenizer_mismatch);
  EXPECT_EQ(o.data_dir, "/x/data");
  EXPECT_FLOAT_EQ(o.align.kd_ce_weight, 0.5f);
  EXPECT_FLOAT_EQ(o.align.format_weight, 0.2f);
  EXPECT_FLOAT_EQ(o.align.plain_ce_weight, 1.0f);
  config_set(&c, "KD_PACK", "maybe", SRC_FLAG);
  EXPECT_FALSE(loader_options_from_config(c, &o).ok());
}

// Trace sources: several directories read as one stream, a filter by source,
// teacher samples dropped by their task score, and on-policy examples that
// train the teacher's distribution only (no target on the student's own tokens).
TEST(Loader, SourcesScoresAndOnPolicyExamples) {
  const std::string a = bk_test::scratch_dir("loader_src_samples"), b = bk_test::scratch_dir("loader_src_onpolicy");
  write_corpus(a, 1, 20, tokenizer_hash(tok()));
  write_corpus(b, 1, 10, tokenizer_hash(tok()), true, false, "on_policy");
  LoaderOptions o = base_opts(a + "," + b);
  LoaderStats st;
  std::vector<LoaderBatch> all = drain(o, 1000, &st);
  EXPECT_EQ(st.examples, 30);
  int64_t on_policy_rows = 0;
  for (const LoaderBatch& x : all) {
    check_batch(x);
    for (int r = 0; r < x.B; r++) {
      bool any_kd = false, any_target = false;
      for (int t = 0; t < x.T; t++) {
        any_kd |= x.kd_mask[(size_t)r * x.T + t] != 0;
        any_target |= x.targets[(size_t)r * x.T + t] >= 0;
      }
      if (any_kd && !any_target) on_policy_rows++;
    }
  }
  EXPECT_EQ(on_policy_rows, 10) << "on-policy rows carry KD buckets and no target";

  o.sources = {"on_policy"};
  drain(o, 1000, &st);
  EXPECT_EQ(st.examples, 10);
  EXPECT_EQ(st.prompts_filtered, 20);

  o.sources.clear();
  o.sample_min_score = 1.0;  // only the teacher samples the scorer marked correct (odd prompt_idx)
  drain(o, 1000, &st);
  EXPECT_EQ(st.examples, 10 + 10);
  EXPECT_EQ(st.prompts_filtered, 10);

  // KD_SOURCE_WEIGHTS: on-policy examples twice per epoch; teacher samples
  // about half of them, the same half whenever the draw is repeated.
  o.sample_min_score = -1;
  o.source_weights = {{"on_policy", 2.0}};
  drain(o, 1000, &st);
  EXPECT_EQ(st.examples, 20 + 2 * 10);
  EXPECT_EQ(st.examples_repeated, 10);
  o.source_weights = {{"teacher_sample", 0.5}};
  drain(o, 1000, &st);
  EXPECT_EQ(st.examples + st.examples_weighted_out, 30);
  EXPECT_GT(st.examples_weighted_out, 0);
  EXPECT_LT(st.examples_weighted_out, 20);
  LoaderStats again;
  drain(o, 1000, &again);
  EXPECT_EQ(again.examples, st.examples);

  Config c;
  ASSERT_TRUE(config_load(&c, "", {{"KD_SOURCES", "reference,bogus"}}).ok());
  LoaderOptions bad;
  Status s = loader_options_from_config(c, &bad);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.msg.find("'bogus' is not a trace source"), std::string::npos) << s.msg;
  Config w;
  ASSERT_TRUE(config_load(&w, "", {{"KD_SOURCE_WEIGHTS", "on_policy=2, reference=0.5"}}).ok());
  s = loader_options_from_config(w, &bad);
  EXPECT_FALSE(s.ok()) << "' reference' is not a source name";
  ASSERT_TRUE(config_load(&w, "", {{"KD_SOURCE_WEIGHTS", "on_policy=2,reference=0.5"}}).ok());
  ASSERT_TRUE(loader_options_from_config(w, &bad).ok());
  ASSERT_EQ(bad.source_weights.size(), 2u);
  EXPECT_EQ(bad.source_weights[1].first, "reference");
  EXPECT_EQ(bad.source_weights[1].second, 0.5);
  ASSERT_TRUE(config_load(&w, "", {{"KD_SOURCE_WEIGHTS", "reference=lots"}}).ok());
  s = loader_options_from_config(w, &bad);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.msg.find("reference=0.5"), std::string::npos) << s.msg;
}

// Settings that would otherwise be accepted and ignored are refused, and the
// configuration records every name a command looks up (what `bitkd
// pipeline` fingerprints a stage by).
TEST(Config, RefusesUnsupportedStorageAndRecordsReads) {
  Config c;
  ASSERT_TRUE(config_load(&c, "", {{"STORAGE_BACKEND", "ftp"}}).ok());
  Status s = config_validate_status(c);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.msg.find("STORAGE_BACKEND=ftp"), std::string::npos) << s.msg;
  EXPECT_NE(s.msg.find("must be one of: local, gdrive, rclone"), std::string::npos) << s.msg;
  ASSERT_TRUE(config_load(&c, "", {{"STORAGE_BACKEND", "gdrive"}}).ok());
  ASSERT_TRUE(config_validate_status(c).ok());
  c.reads.clear();
  long long v = 0;
  ASSERT_TRUE(config_int(c, "TRAIN_BATCH_SIZE", &v).ok());
  EXPECT_FALSE(config_user_set(c, "ADAM_EPS"));
  EXPECT_EQ(c.reads, (std::set<std::string>{"TRAIN_BATCH_SIZE", "ADAM_EPS"}));
}
