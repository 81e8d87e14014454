#include <gtest/gtest.h>

#include "core/fs.h"
#include "core/rng.h"
#include "core/status.h"
#include "testutil/testutil.h"

using namespace bk;

TEST(Status, ErrorfAndContext) {
  Status s = errorf("bad value %d in %s", 7, "x.json");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.msg, "bad value 7 in x.json");
  Status c = with_context(s, "loading");
  EXPECT_EQ(c.msg, "loading: bad value 7 in x.json");
  EXPECT_TRUE(with_context(ok_status(), "x").ok());
}

TEST(Rng, DeterministicAndRoundTrip) {
  Rng a, b;
  rng_seed(&a, 42);
  rng_seed(&b, 42);
  for (int i = 0; i < 100; i++) EXPECT_EQ(rng_next_u64(&a), rng_next_u64(&b));
  std::string st = rng_state_to_string(a);
  Rng c;
  ASSERT_TRUE(rng_state_from_string(st, &c));
  for (int i = 0; i < 10; i++) EXPECT_EQ(rng_next_u64(&a), rng_next_u64(&c));
  EXPECT_FALSE(rng_state_from_string("nonsense", &c));
}

TEST(Rng, UniformRangeAndBelow) {
  Rng r;
  rng_seed(&r, 1);
  double sum = 0;
  for (int i = 0; i < 10000; i++) {
    float u = rng_uniform(&r);
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    sum += u;
    ASSERT_LT(rng_below(&r, 7), 7u);
  }
  EXPECT_NEAR(sum / 10000, 0.5, 0.02);
}

TEST(Fs, AtomicWriteReadBack) {
  std::string dir = bk_test::scratch_dir("core_fs");
  std::string p = path_join(dir, "a/b/c.txt");
  ASSERT_TRUE(write_file_atomic(p, "hello").ok());
  std::string got;
  ASSERT_TRUE(read_file(p, &got).ok());
  EXPECT_EQ(got, "hello");
  EXPECT_EQ(list_files(path_join(dir, "a/b"), "c", ".txt").size(), 1u);  // no temp files left behind
  Status s = read_file(path_join(dir, "missing"), &got);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.msg.find("missing"), std::string::npos);
}
