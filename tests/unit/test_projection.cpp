// Teacher candidates -> student ids (first-subtoken rule), LSE merging, the
// other bucket and step validity (docs/data_schema.md), on a SentencePiece model
// trained in the test.
#include <gtest/gtest.h>

#include <cmath>

#include "kd/projection.h"
#include "testutil/spm_fixture.h"
#include "testutil/testutil.h"

using namespace bk;

namespace {

const Tokenizer& student() {
  static Tokenizer t = [] {
    std::string dir = bk_test::scratch_dir("projection");
    std::string err;
    std::string path = bk_test::spm_fixture_train(dir, "student", "unigram", 600, &err);
    if (path.empty()) fprintf(stderr, "training failed: %s\n", err.c_str());
    Tokenizer tok;
    Status st = tokenizer_load(path, &tok);
    if (!st.ok()) fprintf(stderr, "load failed: %s\n", st.msg.c_str());
    return tok;
  }();
  return t;
}

TeacherCandidate cand(const std::string& text, double lp) {
  TeacherCandidate c;
  c.text = text;
  c.logprob = (float)lp;
  return c;
}

TeacherCandidate cand_bytes(const std::string& bytes, double lp) {
  TeacherCandidate c;
  c.text = "\xef\xbf\xbd";  // what a provider shows for a partial character
  c.bytes = bytes;
  c.has_bytes = true;
  c.logprob = (float)lp;
  return c;
}

int32_t id_of(const std::string& piece) { return tokenizer_piece_to_id(student(), piece); }

const std::string ws = "\xe2\x96\x81";

}  // namespace

TEST(Projection, FirstSubtokenRule) {
  ASSERT_TRUE(tokenizer_loaded(student()));
  ASSERT_GE(id_of(ws + "Hello"), 0);
  ASSERT_GE(id_of("ing"), 0);
  // " Hello" -> "▁Hello", not a lone "▁".
  EXPECT_EQ(project_candidate(student(), cand(" Hello", -0.1)), id_of(ws + "Hello"));
  EXPECT_NE(project_candidate(student(), cand(" Hello", -0.1)), id_of(ws));
  // "ing" -> "ing", not "▁ing" or "▁".
  EXPECT_EQ(project_candidate(student(), cand("ing", -0.1)), id_of("ing"));
  // A longer text maps to its first student piece.
  std::vector<int32_t> ids;
  ASSERT_TRUE(tokenizer_encode_continuation(student(), " Hello world", &ids).ok());
  EXPECT_EQ(project_candidate(student(), cand(" Hello world", -0.1)), ids[0]);
  EXPECT_EQ(project_candidate(student(), cand("", -0.1)), -1);
  // Newline and JSON punctuation map to themselves.
  EXPECT_EQ(project_candidate(student(), cand("\n", -0.1)), id_of("\n"));
}

TEST(Projection, PartialUtf8UsesByteFallback) {
  // bytes [0xE2, 0x96]: the first two bytes of U+2581.
  int32_t id = project_candidate(student(), cand_bytes("\xe2\x96", -0.5));
  EXPECT_EQ(id, tokenizer_byte_id(student(), 0xE2));
  EXPECT_TRUE(tokenizer_is_byte(student(), id));
  // A lone continuation byte.
  EXPECT_EQ(project_candidate(student(), cand_bytes("\x81", -0.5)), tokenizer_byte_id(student(), 0x81));
  // OpenAI's textual form of the same bytes.
  EXPECT_EQ(project_candidate(student(), cand("bytes:\\xe2\\x96", -0.5)), tokenizer_byte_id(student(), 0xE2));
  // Complete leading character, partial tail: encoded up to the last complete character.
  std::vector<int32_t> ids;
  ASSERT_TRUE(tokenizer_encode_continuation(student(), "caf\xc3\xa9", &ids).ok());
  EXPECT_EQ(project_candidate(student(), cand_bytes("caf\xc3\xa9\xe2\x98", -0.5)), ids[0]);
  // Raw bytes win over the (replacement-character) text.
  EXPECT_EQ(project_candidate(student(), cand_bytes(" Hello", -0.5)), id_of(ws + "Hello"));
  // A whole step of partial and malformed candidates projects without error.
  ProjectedStep p;
  project_step(student(), {cand_bytes("\xe2\x96", -0.3), cand_bytes("\xff", -2.0), cand_bytes("\xc3", -3.0)}, 20, &p);
  EXPECT_TRUE(p.valid);
  EXPECT_EQ(p.ids[0], tokenizer_byte_id(student(), 0xE2));
  EXPECT_EQ(p.unmapped, 0);
}

TEST(Projection, DuplicatesMergeByLogSumExp) {
  ProjectedStep p;
  // Two teacher tokens with the same student first piece, plus another.
  project_step(student(), {cand(" Hello", std::log(0.3)), cand("ing", std::log(0.2)), cand(" Hello", std::log(0.25))},
               20, &p);
  ASSERT_TRUE(p.valid);
  ASSERT_EQ(p.ids.size(), 2u);
  EXPECT_EQ(p.ids[0], id_of(ws + "Hello"));
  EXPECT_NEAR(p.logprobs[0], std::log(0.55), 1e-6);
  EXPECT_EQ(p.ids[1], id_of("ing"));
  EXPECT_NEAR(p.logprobs[1], std::log(0.2), 1e-6);
  EXPECT_NEAR(p.other_logprob, std::log(0.25), 1e-6);
  EXPECT_NEAR(p.mass, 0.75, 1e-6);
  EXPECT_FALSE(p.other_floored);
  // LSE is exact for tiny probabilities too (no underflow to -inf).
  project_step(student(), {cand(" Hello", -800.0), cand(" Hello", -800.0), cand("ing", std::log(0.5))}, 20, &p);
  ASSERT_EQ(p.ids.size(), 2u);
  EXPECT_NEAR(p.logprobs[1], -800.0 + std::log(2.0), 1e-3);
}

TEST(Projection, ConfidentStepStaysValidWithFlooredOther) {
  ProjectedStep p;
  project_step(student(), {cand(" Hello", -1e-8)}, 20, &p);
  EXPECT_TRUE(p.valid);
  EXPECT_EQ(p.status, PROJ_VALID);
  EXPECT_TRUE(p.other_floored);
  EXPECT_FLOAT_EQ(p.other_logprob, kOtherLogprobFloor);
  EXPECT_NEAR(kOtherLogprobFloor, std::log(1e-6), 1e-6);
  // Mass a little above 1 (rounding in the provider) still counts as 1.
  project_step(student(), {cand(" Hello", std::log(0.6)), cand("ing", std::log(0.40004))}, 20, &p);
  EXPECT_TRUE(p.valid);
  EXPECT_TRUE(p.other_floored);
  EXPECT_FLOAT_EQ(p.other_logprob, kOtherLogprobFloor);
}

TEST(Projection, InvalidStepsAreMarkedButKept) {
  ProjectedStep p;
  project_step(student(), {cand(" Hello", std::log(0.7)), cand("ing", std::log(0.4))}, 20, &p);
  EXPECT_FALSE(p.valid);
  EXPECT_EQ(p.status, PROJ_MASS_ABOVE_ONE);
  EXPECT_EQ(p.ids.size(), 2u);  // kept for the record
  EXPECT_EQ(p.other_logprob, 0.0f);

  project_step(student(), {cand(" Hello", NAN), cand("ing", -1.0)}, 20, &p);
  EXPECT_FALSE(p.valid);
  EXPECT_EQ(p.status, PROJ_NONFINITE);
  EXPECT_EQ(p.ids.size(), 1u);

  project_step(student(), {cand(" Hello", -INFINITY)}, 20, &p);
  EXPECT_EQ(p.status, PROJ_NONFINITE);
  project_step(student(), {cand(" Hello", INFINITY)}, 20, &p);
  EXPECT_EQ(p.status, PROJ_NONFINITE);

  project_step(student(), {}, 20, &p);
  EXPECT_EQ(p.status, PROJ_NO_CANDIDATES);
  EXPECT_FALSE(p.valid);

  project_step(student(), {cand(" Hello", -2000.0)}, 20, &p);
  EXPECT_EQ(p.status, PROJ_MASS_NONPOSITIVE);

  project_step(student(), {cand("", -0.5), cand("", -1.5)}, 20, &p);
  EXPECT_EQ(p.status, PROJ_NOTHING_MAPPED);
  EXPECT_EQ(p.unmapped, 2);

  for (int s = 0; s < PROJ_STATUS_COUNT; s++) EXPECT_STRNE(projection_status_name(s), "unknown");
  EXPECT_STREQ(projection_status_name(PROJ_MASS_ABOVE_ONE), "mass_above_one");
}

TEST(Projection, UnmappedMassGoesToOther) {
  ProjectedStep p;
  project_step(student(), {cand(" Hello", std::log(0.5)), cand("", std::log(0.3))}, 20, &p);
  ASSERT_TRUE(p.valid);
  EXPECT_EQ(p.unmapped, 1);
  ASSERT_EQ(p.ids.size(), 1u);
  EXPECT_NEAR(p.other_logprob, std::log(0.5), 1e-6);
}

TEST(Projection, TopKTruncationAndOrder) {
  ProjectedStep p;
  std::vector<TeacherCandidate> c = {cand("ing", std::log(0.1)), cand(" Hello", std::log(0.4)),
                                     cand("\n", std::log(0.2)), cand("{", std::log(0.05))};
  project_step(student(), c, 2, &p);
  ASSERT_TRUE(p.valid);
  ASSERT_EQ(p.ids.size(), 2u);
  EXPECT_EQ(p.ids[0], id_of(ws + "Hello"));
  EXPECT_EQ(p.ids[1], id_of("\n"));
  EXPECT_NEAR(p.other_logprob, std::log(0.4), 1e-6);  // 1 - 0.4 - 0.2
  project_step(student(), c, 0, &p);
  EXPECT_EQ(p.ids.size(), 4u);
  for (size_t i = 1; i < p.logprobs.size(); i++) EXPECT_GE(p.logprobs[i - 1], p.logprobs[i]);
}

TEST(Projection, CacheGivesTheSameIds) {
  ProjectionCache cache;
  for (const char* s : {" Hello", "ing", "\n", "{\"", "bytes:\\xe2\\x96", ""}) {
    TeacherCandidate c = cand(s, -1);
    int32_t a = project_candidate(student(), c), b = project_candidate(student(), c, &cache),
            d = project_candidate(student(), c, &cache);
    EXPECT_EQ(a, b) << s;
    EXPECT_EQ(a, d) << s;
  }
  EXPECT_EQ(cache.first_id.size(), 5u);  // empty text is answered without a lookup
}

TEST(Projection, StructTokens) {
  for (const char* s : {"{", "}", "[", "]", ":", ",", "\"", "{\"", "\":", " [", "```", "```json"})
    EXPECT_TRUE(is_struct_token(s)) << s;
  for (const char* s : {"abc", " Hello", "``", "", "\n", "ing", "'"}) EXPECT_FALSE(is_struct_token(s)) << s;
}
