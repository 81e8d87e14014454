#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/fs.h"
#include "core/half.h"
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

namespace {
uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
float bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
}  // namespace

TEST(Half, F16EveryValueRoundTrips) {
  // Every f16 widens exactly and narrows back to itself; a NaN comes back quiet.
  for (uint32_t h = 0; h < 0x10000; h++) {
    const bool nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
    float f = f16_to_f32((uint16_t)h);
    ASSERT_EQ(std::isnan(f), nan) << h;
    ASSERT_EQ(f32_to_f16(f), nan ? (h | 0x200) : h) << h;
  }
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(f16_to_f32(0x03ff), 1023 * std::ldexp(1.0f, -24));
  EXPECT_EQ(f16_to_f32(0x8000), 0.0f);
  EXPECT_TRUE(std::signbit(f16_to_f32(0x8000)));
  EXPECT_EQ(f16_to_f32(0xfc00), -INFINITY);
}

TEST(Half, F16RoundsToNearestEven) {
  const float u = std::ldexp(1.0f, -11);  // half an f16 ulp at 1
  EXPECT_EQ(f32_to_f16(1.0f + u), 0x3c00);                             // tie -> even (down)
  EXPECT_EQ(f32_to_f16(1.0f + 3 * u), 0x3c02);                         // tie -> even (up)
  EXPECT_EQ(f32_to_f16(1.0f + u + std::ldexp(1.0f, -20)), 0x3c01);     // above the tie
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // the tie above the largest finite -> inf
  EXPECT_EQ(f32_to_f16(-1e6f), 0xfc00);
  // Subnormal range: ties to even, the carry out of the largest subnormal, underflow.
  const float s = std::ldexp(1.0f, -24);  // smallest f16 subnormal
  EXPECT_EQ(f32_to_f16(0.5f * s), 0x0000);
  EXPECT_EQ(f32_to_f16(0.75f * s), 0x0001);
  EXPECT_EQ(f32_to_f16(1.5f * s), 0x0002);
  EXPECT_EQ(f32_to_f16(1023.5f * s), 0x0400);  // smallest normal
  EXPECT_EQ(f32_to_f16(0.25f * s), 0x0000);
  EXPECT_EQ(f32_to_f16(-0.25f * s), 0x8000);
  EXPECT_EQ(f32_to_f16(bits_f32(1)), 0x0000);  // f32 subnormal
}

TEST(Half, F16InfAndNaN) {
  EXPECT_EQ(f32_to_f16(INFINITY), 0x7c00);
  EXPECT_EQ(f32_to_f16(-INFINITY), 0xfc00);
  EXPECT_EQ(f32_to_f16(NAN), 0x7e00);
  EXPECT_EQ(f32_to_f16(-NAN), 0xfe00);
  EXPECT_EQ(f32_to_f16(bits_f32(0x7f800001)), 0x7e00);  // signalling NaN stays NaN (quiet), never inf
  EXPECT_EQ(f32_bits(f16_to_f32(0x7e00)), 0x7fc00000u);
  EXPECT_EQ(f32_bits(f16_to_f32(0x7c01)), 0x7f802000u);  // payload kept
  EXPECT_EQ(f16_to_f32(0x7c00), INFINITY);
}

TEST(Half, Bf16) {
  for (uint32_t h = 0; h < 0x10000; h++) {
    const bool nan = (h & 0x7f80) == 0x7f80 && (h & 0x7f);
    float f = bf16_to_f32((uint16_t)h);
    ASSERT_EQ(f32_bits(f), h << 16) << h;
    ASSERT_EQ(f32_to_bf16(f), nan ? (h | 0x40) : h) << h;
  }
  const float u = std::ldexp(1.0f, -8);  // half a bf16 ulp at 1
  EXPECT_EQ(f32_to_bf16(1.0f + u), 0x3f80);                          // tie -> even (down)
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * u), 0x3f82);                      // tie -> even (up)
  EXPECT_EQ(f32_to_bf16(1.0f + u + std::ldexp(1.0f, -20)), 0x3f81);  // above the tie
  EXPECT_EQ(f32_to_bf16(bits_f32(0x00008000)), 0x0000);  // subnormal tie -> even
  EXPECT_EQ(f32_to_bf16(bits_f32(0x00018000)), 0x0002);
  EXPECT_EQ(f32_to_bf16(bits_f32(0x7f7fffff)), 0x7f80);  // FLT_MAX rounds to inf
  EXPECT_EQ(f32_to_bf16(INFINITY), 0x7f80);
  EXPECT_EQ(f32_to_bf16(-INFINITY), 0xff80);
  EXPECT_EQ(f32_to_bf16(NAN), 0x7fc0);
  EXPECT_EQ(f32_to_bf16(-NAN), 0xffc0);
  EXPECT_EQ(f32_to_bf16(bits_f32(0x7f800001)), 0x7fc0);  // a NaN whose payload is below bf16: still NaN
}
