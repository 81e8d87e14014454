// LmDataset: windows over a stream, prompt/response targets, shuffled
// batches, and position save/restore.
#include <gtest/gtest.h>

#include "train/lm_data.h"

using namespace bk;

TEST(LmData, StreamWindowsPredictEveryTokenOnce) {
  LmDataset d;
  lm_init(&d, 4, 0, 1);
  std::vector<int32_t> ids;
  for (int i = 1; i <= 10; i++) ids.push_back(i);
  lm_add_stream(&d, ids);
  // windows [1..5], [5..9], [9,10]: 4 + 4 + 1 targets = 9 = every token after the first
  ASSERT_EQ(lm_num_rows(d), 3u);
  EXPECT_EQ(lm_num_targets(d), 9);
  Batch b;
  ASSERT_TRUE(lm_next_batch(&d, 3, &b).ok());
  long long real = 0;
  for (int r = 0; r < 3; r++)
    for (int t = 0; t < 4; t++) {
      size_t i = (size_t)r * 4 + t;
      if (b.weights[i] > 0) {
        EXPECT_EQ(b.targets[i], b.tokens[i] + 1);  // consecutive ids: the target is the next one
        EXPECT_EQ(b.key_mask[i], 1);
        real++;
      } else {
        EXPECT_EQ(b.key_mask[i], 0);
        EXPECT_EQ(b.tokens[i], 0);  // pad id
      }
    }
  EXPECT_EQ(real, 9);
  EXPECT_EQ(b.real_tokens, 9);
}

TEST(LmData, ExampleTargetsAndTruncation) {
  LmDataset d;
  lm_init(&d, 4, 99, 1);
  lm_add_example(&d, {1, 2, 3, 4}, {0, 0, 1, 1});  // prompt 1 2, response 3 4
  lm_add_example(&d, {5, 6, 7, 8, 9, 10, 11}, {0, 1, 1, 1, 1, 1, 1});
  lm_add_example(&d, {7}, {1});  // too short: skipped
  EXPECT_EQ(lm_num_rows(d), 2u);
  EXPECT_EQ(d.truncated, 1);
  EXPECT_EQ(lm_num_targets(d), 2 + 4);
  Batch b;
  ASSERT_TRUE(lm_next_batch(&d, 2, &b).ok());
  for (int r = 0; r < 2; r++) {
    const int32_t* tok = b.tokens.data() + r * 4;
    const float* w = b.weights.data() + r * 4;
    if (tok[0] == 1) {  // the short example: positions 1, 2 predict 3, 4; position 3 is padding
      EXPECT_EQ(w[0], 0.0f);
      EXPECT_EQ(w[1], 1.0f);
      EXPECT_EQ(b.targets[r * 4 + 1], 3);
      EXPECT_EQ(w[2], 1.0f);
      EXPECT_EQ(tok[3], 99);
      EXPECT_EQ(b.key_mask[r * 4 + 3], 0);
    } else {
      EXPECT_EQ(tok[0], 5);
      EXPECT_EQ(b.targets[r * 4 + 3], 9);  // cut to seq+1 = 5 tokens
    }
  }
}

TEST(LmData, PositionRestoreReproducesBatches) {
  LmDataset a;
  lm_init(&a, 3, 0, 42);
  for (int e = 0; e < 7; e++) lm_add_example(&a, {e, e + 1, e + 2, e + 3}, {0, 1, 1, 1});
  Batch b;
  for (int i = 0; i < 5; i++) ASSERT_TRUE(lm_next_batch(&a, 2, &b).ok());  // crosses an epoch
  EXPECT_EQ(a.epoch, 1);
  std::string pos = lm_position_json(a);
  std::vector<Batch> want(4);
  for (Batch& w : want) ASSERT_TRUE(lm_next_batch(&a, 2, &w).ok());

  LmDataset c;
  lm_init(&c, 3, 0, 42);
  for (int e = 0; e < 7; e++) lm_add_example(&c, {e, e + 1, e + 2, e + 3}, {0, 1, 1, 1});
  ASSERT_TRUE(lm_restore_position(&c, pos).ok());
  for (const Batch& w : want) {
    Batch got;
    ASSERT_TRUE(lm_next_batch(&c, 2, &got).ok());
    EXPECT_EQ(got.tokens, w.tokens);
    EXPECT_EQ(got.targets, w.targets);
  }
  // Another dataset refuses the position.
  LmDataset other;
  lm_init(&other, 3, 0, 42);
  lm_add_example(&other, {1, 2, 3}, {0, 1, 1});
  Status s = lm_restore_position(&other, pos);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.msg.find("differs"), std::string::npos) << s.msg;
  EXPECT_FALSE(lm_restore_position(&other, "garbage").ok());
  // An empty dataset says so.
  LmDataset empty;
  lm_init(&empty, 3, 0, 1);
  EXPECT_FALSE(lm_next_batch(&empty, 1, &b).ok());
}
