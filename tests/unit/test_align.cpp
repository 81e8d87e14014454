// Teacher steps -> student positions: exact KD with identical tokenizers,
// CE-only fallback where tokenizers disagree, prompt masking, EOS,
// truncation and top-K slot handling.
#include <gtest/gtest.h>

#include <cmath>

#include "data/align/align.h"
#include "data/tasks/tasks.h"
#include "kd/projection.h"
#include "testutil/spm_fixture.h"
#include "testutil/testutil.h"

using namespace bk;

namespace {

const char* k_template_head = "<|user|>\n";
const char* k_template_tail = "\n\n<|assistant|>\n";

std::string render(const std::string& prompt) { return k_template_head + prompt + k_template_tail; }

// Tokenizers trained on task-suite text (two different ones).
struct Toks {
  Tokenizer uni, bpe;
};
const Toks& toks() {
  static Toks t = [] {
    Toks r;
    std::string dir = bk_test::scratch_dir("align");
    TaskGenOptions g;
    g.n = 3000;
    std::vector<TaskItem> items;
    if (!tasks_generate(g, &items).ok()) abort();
    TokenizerTrainOptions o;
    for (const TaskItem& it : items) o.texts.push_back(render(it.prompt) + it.response);
    o.vocab_size = 700;
    o.model_type = "unigram";
    std::string err;
    std::string a = bk_test::spm_fixture_train_opts(o, dir, "uni", &err);
    o.model_type = "bpe";
    o.vocab_size = 500;
    std::string b = bk_test::spm_fixture_train_opts(o, dir, "bpe", &err);
    if (a.empty() || b.empty()) fprintf(stderr, "training failed: %s\n", err.c_str());
    if (!tokenizer_load(a, &r.uni).ok() || !tokenizer_load(b, &r.bpe).ok()) abort();
    return r;
  }();
  return t;
}

// A teacher that runs `teacher` tokenization over the response, as a
// collector would see it: each token's text, byte offset, a top-3 of
// candidates (the sampled token first), projected onto the student.
std::vector<AlignStep> teacher_steps(const Tokenizer& teacher, const Tokenizer& student, const std::string& prompt,
                                     const std::string& response) {
  std::string full = prompt + response;
  std::vector<int32_t> ids;
  std::vector<TokenSpan> spans;
  EXPECT_TRUE(tokenizer_encode_with_spans(teacher, full, &ids, &spans).ok());
  std::vector<AlignStep> steps;
  int32_t P = (int32_t)prompt.size();
  for (size_t k = 0; k < ids.size(); k++) {
    if (spans[k].begin < P || spans[k].end == spans[k].begin) continue;
    std::string text = full.substr(spans[k].begin, spans[k].end - spans[k].begin);
    std::vector<TeacherCandidate> c(3);
    c[0].text = text;
    c[0].logprob = std::log(0.7f);
    c[1].text = " Sure";
    c[1].logprob = std::log(0.2f);
    c[2].text = "{";
    c[2].logprob = std::log(0.05f);
    ProjectedStep p;
    project_step(student, c, 20, &p);
    AlignStep s;
    s.step_idx = (int32_t)steps.size();
    s.byte_offset = spans[k].begin - P;
    s.sampled_id = project_text(student, text);
    s.is_struct = is_struct_token(text);
    s.valid = p.valid;
    s.topk_ids = p.ids;
    s.topk_logprobs = p.logprobs;
    s.other_logprob = p.other_logprob;
    steps.push_back(s);
  }
  return steps;
}

void check_invariants(const AlignedExample& ex, const AlignStats& st, int max_seq_len) {
  size_t T = ex.tokens.size();
  ASSERT_LE((int)T, max_seq_len);
  ASSERT_EQ(ex.targets.size(), T);
  ASSERT_EQ(ex.ce_weight.size(), T);
  ASSERT_EQ(ex.kd_slot.size(), T);
  EXPECT_EQ(ex.slot_ids.size(), (size_t)ex.num_slots() * ex.topk);
  EXPECT_EQ(ex.slot_logprobs.size(), ex.slot_ids.size());
  for (size_t i = 0; i < T; i++) {
    if ((int)i + 1 < ex.prompt_tokens) {
      EXPECT_EQ(ex.targets[i], -1) << "loss on the prompt at " << i;
    }
    if (ex.targets[i] < 0) {
      EXPECT_EQ(ex.kd_slot[i], -1);
      EXPECT_EQ(ex.ce_weight[i], 0.f);
    } else {
      EXPECT_GT(ex.ce_weight[i], 0.f);
      if (i + 1 < T) {
        EXPECT_EQ(ex.targets[i], ex.tokens[i + 1]);
      }
    }
    if (ex.kd_slot[i] >= 0) {
      EXPECT_EQ(ex.slot_position[ex.kd_slot[i]], (int32_t)i);
    }
  }
  EXPECT_EQ(st.steps, st.steps_aligned + st.steps_invalid + st.steps_unaligned + st.steps_duplicate +
                          st.steps_truncated + st.steps_bad_ids);
  EXPECT_EQ(st.positions_kd, ex.num_slots());
}

}  // namespace

TEST(Align, IdenticalTokenizersGiveExactTokenLevelKd) {
  const Tokenizer& tok = toks().uni;
  TaskGenOptions g;
  g.n = 200;
  g.split = TASK_SPLIT_EVAL;
  std::vector<TaskItem> items;
  ASSERT_TRUE(tasks_generate(g, &items).ok());
  AlignOptions opt;
  opt.max_seq_len = 512;
  AlignStats total;
  int64_t positions = 0, first_id_hits = 0;
  for (const TaskItem& it : items) {
    AlignInput in{render(it.prompt), it.response, true};
    std::vector<AlignStep> steps = teacher_steps(tok, tok, in.rendered_prompt, in.response);
    AlignedExample ex;
    AlignStats st;
    ASSERT_TRUE(align_example(tok, in, steps, opt, &ex, &st).ok());
    check_invariants(ex, st, opt.max_seq_len);
    EXPECT_EQ(st.steps_aligned, (int64_t)steps.size()) << it.prompt;
    EXPECT_EQ(st.steps_unaligned, 0);
    // Every response position has its KD bucket except the one predicting EOS.
    int T = (int)ex.tokens.size();
    EXPECT_EQ(ex.targets[T - 1], tokenizer_eos_id(tok));
    EXPECT_EQ(ex.kd_slot[T - 1], -1);
    EXPECT_EQ(ex.ce_weight[T - 1], opt.plain_ce_weight);
    for (int i = ex.prompt_tokens - 1; i < T - 1; i++) {
      ASSERT_GE(ex.kd_slot[i], 0) << it.prompt << " position " << i;
      positions++;
      first_id_hits += ex.slot_ids[(size_t)ex.kd_slot[i] * ex.topk] == ex.targets[i];
    }
    EXPECT_EQ(ex.response_tokens, T - (ex.prompt_tokens - 1));
    total.add(st);
  }
  // The top candidate (the teacher's own token text) projects back onto the
  // student's token almost always; SentencePiece may segment a piece's text
  // differently when it stands alone.
  printf("identical tokenizers: %lld positions, top-1 id == token for %.2f%%, sampled mismatches %lld\n",
         (long long)positions, 100.0 * first_id_hits / positions, (long long)total.sampled_mismatch);
  EXPECT_GE(first_id_hits * 100, positions * 99);
}

TEST(Align, DifferentTokenizersFallBackToCe) {
  const Tokenizer& student = toks().uni;
  const Tokenizer& teacher = toks().bpe;
  TaskGenOptions g;
  g.n = 100;
  std::vector<TaskItem> items;
  ASSERT_TRUE(tasks_generate(g, &items).ok());
  AlignOptions opt;
  AlignStats total;
  for (const TaskItem& it : items) {
    AlignInput in{render(it.prompt), it.response, true};
    std::vector<AlignStep> steps = teacher_steps(teacher, student, in.rendered_prompt, in.response);
    AlignedExample ex;
    AlignStats st;
    ASSERT_TRUE(align_example(student, in, steps, opt, &ex, &st).ok());
    check_invariants(ex, st, opt.max_seq_len);
    // Each KD slot sits where a teacher token and a student token start together.
    std::vector<int32_t> ids;
    std::vector<TokenSpan> spans;
    ASSERT_TRUE(tokenizer_encode_with_spans(student, in.rendered_prompt + in.response, &ids, &spans).ok());
    for (int s = 0; s < ex.num_slots(); s++) {
      int pos = ex.slot_position[s];
      int32_t step_offset = -1;
      for (const AlignStep& a : steps)
        if (a.step_idx == ex.slot_step[s]) step_offset = a.byte_offset;
      // Input position pos predicts student token pos+1 = ids[pos] (BOS shifts by one).
      EXPECT_EQ(spans[pos].begin - (int32_t)in.rendered_prompt.size(), step_offset);
    }
    total.add(st);
  }
  printf("bpe teacher -> unigram student: %lld steps, %lld aligned, %lld unaligned; %lld KD / %lld CE-only positions\n",
         (long long)total.steps, (long long)total.steps_aligned, (long long)total.steps_unaligned,
         (long long)total.positions_kd, (long long)total.positions_ce);
  EXPECT_GT(total.steps_aligned, 0);
  EXPECT_GT(total.steps_unaligned + total.positions_ce, 0);
}

TEST(Align, EosOnlyWhenTheTeacherStopped) {
  const Tokenizer& tok = toks().uni;
  AlignInput in{render("What is 2 + 2?"), "4", true};
  AlignedExample a, b;
  ASSERT_TRUE(align_example(tok, in, {}, AlignOptions(), &a, nullptr).ok());
  EXPECT_EQ(a.targets.back(), tokenizer_eos_id(tok));
  EXPECT_EQ(a.tokens[0], tokenizer_bos_id(tok));
  in.finished = false;
  ASSERT_TRUE(align_example(tok, in, {}, AlignOptions(), &b, nullptr).ok());
  EXPECT_EQ(b.tokens.size() + 1, a.tokens.size());
  EXPECT_NE(b.targets.back(), tokenizer_eos_id(tok));
  EXPECT_GE(b.targets.back(), 0);
  // Without steps every response position is CE only.
  for (size_t i = 0; i < a.tokens.size(); i++) EXPECT_EQ(a.kd_slot[i], -1);
  in.response = "";
  EXPECT_FALSE(align_example(tok, in, {}, AlignOptions(), &b, nullptr).ok());
}

TEST(Align, TruncationCountsSteps) {
  const Tokenizer& tok = toks().uni;
  std::string prompt = render("Make a JSON list of the integers from 10 to 17.");
  std::string resp = "[10, 11, 12, 13, 14, 15, 16, 17]";
  std::vector<AlignStep> steps = teacher_steps(tok, tok, prompt, resp);
  AlignedExample full, cut;
  AlignStats sf, sc;
  AlignOptions opt;
  ASSERT_TRUE(align_example(tok, {prompt, resp, true}, steps, opt, &full, &sf).ok());
  int T = (int)full.tokens.size();
  opt.max_seq_len = T - 5;
  ASSERT_TRUE(align_example(tok, {prompt, resp, true}, steps, opt, &cut, &sc).ok());
  check_invariants(cut, sc, opt.max_seq_len);
  EXPECT_EQ((int)cut.tokens.size(), T - 5);
  EXPECT_EQ(sc.tokens_truncated, 5);
  EXPECT_EQ(sc.steps_truncated, 4);  // the last 5 targets: 4 teacher tokens and EOS
  for (int i = 0; i < T - 5; i++) {
    EXPECT_EQ(cut.tokens[i], full.tokens[i]);
    EXPECT_EQ(cut.targets[i], full.targets[i]);
  }
  // A prompt longer than the window leaves no response position.
  opt.max_seq_len = 3;
  ASSERT_TRUE(align_example(tok, {prompt, resp, true}, steps, opt, &cut, nullptr).ok());
  EXPECT_EQ(cut.response_tokens, 0);
  EXPECT_EQ(cut.prompt_tokens, 3);
}

TEST(Align, SlotsPadFoldAndWeigh) {
  const Tokenizer& tok = toks().uni;
  std::string prompt = render("Write \"cat\" in uppercase.");
  std::string resp = "CAT";
  std::vector<int32_t> ids;
  std::vector<TokenSpan> spans;
  ASSERT_TRUE(tokenizer_encode_with_spans(tok, prompt + resp, &ids, &spans).ok());
  AlignOptions opt;
  opt.max_topk = 3;
  AlignStep s;
  s.byte_offset = 0;
  s.topk_ids = {5, 6};
  s.topk_logprobs = {std::log(0.5f), std::log(0.3f)};
  s.other_logprob = std::log(0.2f);
  s.is_struct = true;
  AlignedExample ex;
  AlignStats st;
  ASSERT_TRUE(align_example(tok, {prompt, resp, true}, {s}, opt, &ex, &st).ok());
  ASSERT_EQ(ex.num_slots(), 1);
  EXPECT_EQ(ex.slot_ids, (std::vector<int32_t>{5, 6, -1}));
  EXPECT_EQ(ex.slot_logprobs[2], 0.f);
  EXPECT_FLOAT_EQ(ex.ce_weight[ex.slot_position[0]], opt.kd_ce_weight + opt.format_weight);
  EXPECT_EQ(ex.slot_struct[0], 1);
  // Five ids, K = 3: the two least likely fold into other.
  s.topk_ids = {9, 8, 7, 6, 5};
  s.topk_logprobs = {std::log(0.05f), std::log(0.4f), std::log(0.1f), std::log(0.3f), std::log(0.05f)};
  s.other_logprob = std::log(0.1f);
  s.is_struct = false;
  ASSERT_TRUE(align_example(tok, {prompt, resp, true}, {s}, opt, &ex, &st).ok());
  EXPECT_EQ(ex.slot_ids, (std::vector<int32_t>{8, 6, 7}));
  EXPECT_NEAR(ex.slot_other[0], std::log(0.2), 1e-5);
  EXPECT_FLOAT_EQ(ex.ce_weight[ex.slot_position[0]], opt.kd_ce_weight);
}

TEST(Align, InvalidBadDuplicateAndUnalignedStepsAreCounted) {
  const Tokenizer& tok = toks().uni;
  std::string prompt = render("What is 12 + 30?");
  std::string resp = "42";
  AlignStep good;
  good.byte_offset = 0;
  good.topk_ids = {10};
  good.topk_logprobs = {-0.1f};
  good.other_logprob = std::log(1 - std::exp(-0.1f));
  AlignStep invalid = good;
  invalid.valid = false;
  invalid.byte_offset = 1;
  AlignStep dup = good;
  AlignStep bad = good;
  bad.byte_offset = 1;
  bad.topk_ids = {tokenizer_vocab_size(tok)};
  AlignStep off = good;
  off.byte_offset = 7;  // beyond the response
  AlignedExample ex;
  AlignStats st;
  ASSERT_TRUE(align_example(tok, {prompt, resp, true}, {good, invalid, dup, bad, off}, AlignOptions(), &ex, &st).ok());
  EXPECT_EQ(st.steps, 5);
  EXPECT_EQ(st.steps_aligned, 1);
  EXPECT_EQ(st.steps_invalid, 1);
  EXPECT_EQ(st.steps_duplicate, 1);
  EXPECT_EQ(st.steps_bad_ids, 1);
  EXPECT_EQ(st.steps_unaligned, 1);
  // The invalid step's position (digit "2") is CE only.
  check_invariants(ex, st, 256);
  AlignStep broken = good;
  broken.topk_logprobs.push_back(-3.f);
  EXPECT_FALSE(align_example(tok, {prompt, resp, true}, {broken}, AlignOptions(), &ex, &st).ok());
}

TEST(Align, ByteFallbackTokensAlignPerByte) {
  const Tokenizer& tok = toks().uni;
  std::string prompt = render("Echo the snowman.");
  std::string resp = "\xe2\x98\x83!";  // not in the vocabulary: three byte pieces
  std::vector<AlignStep> steps;
  for (int b = 0; b < 4; b++) {
    AlignStep s;
    s.step_idx = b;
    s.byte_offset = b;
    s.topk_ids = {tokenizer_byte_id(tok, (uint8_t)resp[b])};
    s.topk_logprobs = {-0.01f};
    s.other_logprob = std::log(1 - std::exp(-0.01f));
    steps.push_back(s);
  }
  AlignedExample ex;
  AlignStats st;
  ASSERT_TRUE(align_example(tok, {prompt, resp, true}, steps, AlignOptions(), &ex, &st).ok());
  EXPECT_EQ(st.steps_aligned, 4);
  check_invariants(ex, st, 256);
}

TEST(Align, DeriveByteOffsets) {
  std::vector<int32_t> off;
  EXPECT_TRUE(derive_byte_offsets({"{\"", "a", "\": ", "1}"}, "{\"a\": 1}", &off));
  EXPECT_EQ(off, (std::vector<int32_t>{0, 2, 3, 6}));
  EXPECT_FALSE(derive_byte_offsets({"{", "b"}, "{a", &off));
  EXPECT_FALSE(derive_byte_offsets({"{"}, "{a", &off));
}
