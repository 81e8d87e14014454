// safetensors reader/writer: round trips, the on-disk layout that Python's
// `safetensors` expects (checked byte by byte, since that package is not in
// Debian), and every malformed-input error.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/fs.h"
#include "io/safetensors.h"
#include "testutil/testutil.h"

using namespace bk;

namespace {

uint64_t le64(const std::string& b, size_t at) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | (uint8_t)b[at + i];
  return v;
}

void put_le64(std::string* b, size_t at, uint64_t v) {
  for (int i = 0; i < 8; i++) (*b)[at + i] = (char)(v >> (8 * i));
}

// A file built by hand from a header string and a data blob.
std::string raw_file(const std::string& header, const std::string& data) {
  std::string b(8, '\0');
  put_le64(&b, 0, header.size());
  return b + header + data;
}

struct Sample {
  std::vector<float> f32{1.5f, -2.25f, 3e-8f, 1e30f, -0.0f, 7.0f};
  std::vector<uint16_t> f16{0x3c00, 0xc000, 0x7bff, 0x0001};
  std::vector<uint16_t> bf16{0x3f80, 0xc040, 0x0000};
  std::vector<int32_t> i32{-1, 0, 2147483647, -2147483647 - 1};
  std::vector<int64_t> i64{-5, 1LL << 40};
  std::vector<uint8_t> u8{0, 1, 254, 255, 7};
  std::vector<int8_t> i8{-128, 127, 0};
  std::vector<double> f64{3.141592653589793};
  std::vector<uint8_t> boolv{1, 0, 1, 1};
  float scalar = 42.0f;
};

SafeTensorsWriter sample_writer(const Sample& s) {
  SafeTensorsWriter w;
  st_writer_add(&w, "u8", ST_U8, {5}, s.u8.data());  // 1-byte first: the writer must still align F32/I64
  st_writer_add(&w, "f32", ST_F32, {2, 3}, s.f32.data());
  st_writer_add(&w, "f16", ST_F16, {4}, s.f16.data());
  st_writer_add(&w, "bf16", ST_BF16, {3, 1}, s.bf16.data());
  st_writer_add(&w, "i32", ST_I32, {2, 2}, s.i32.data());
  st_writer_add(&w, "i64", ST_I64, {2}, s.i64.data());
  st_writer_add(&w, "i8", ST_I8, {3}, s.i8.data());
  st_writer_add(&w, "f64", ST_F64, {1}, s.f64.data());
  st_writer_add(&w, "flags", ST_BOOL, {2, 2}, s.boolv.data());
  st_writer_add(&w, "scalar", ST_F32, {}, &s.scalar);
  st_writer_add(&w, "empty", ST_F32, {0, 4}, nullptr);
  w.metadata["format"] = "pt";
  w.metadata["config"] = "{\"dim\": 8, \"note\": \"quotes \\\" and unicode \xc3\xa9\"}";
  return w;
}

void expect_error(const std::string& bytes, const std::string& fragment) {
  SafeTensorsFile f;
  Status s = safetensors_parse(bytes, "bad.safetensors", &f);
  ASSERT_FALSE(s.ok()) << "expected an error containing '" << fragment << "'";
  EXPECT_NE(s.msg.find("bad.safetensors"), std::string::npos) << s.msg;
  EXPECT_NE(s.msg.find(fragment), std::string::npos) << s.msg;
  std::printf("  error: %s\n", s.msg.c_str());
}

}  // namespace

TEST(Safetensors, RoundTripAllDtypes) {
  std::string dir = bk_test::scratch_dir("st_roundtrip");
  std::string path = dir + "/t.safetensors";
  Sample s;
  ASSERT_TRUE(safetensors_write(path, sample_writer(s)).ok());
  // Atomic write leaves no temp file behind.
  EXPECT_EQ(list_files(dir, "t.safetensors.tmp", "").size(), 0u);

  SafeTensorsFile f;
  Status st = safetensors_read(path, &f);
  ASSERT_TRUE(st.ok()) << st.msg;
  EXPECT_EQ(f.tensors.size(), 11u);
  EXPECT_EQ(f.metadata.at("format"), "pt");
  EXPECT_EQ(f.metadata.at("config"), sample_writer(s).metadata.at("config"));

  auto check = [&](const char* name, StDtype dt, std::vector<int64_t> shape, const void* data, size_t nbytes) {
    const StTensor* t = safetensors_find(f, name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->dtype, dt) << name;
    EXPECT_EQ(t->shape, shape) << name;
    ASSERT_EQ(t->nbytes(), nbytes) << name;
    if (nbytes) {
      EXPECT_EQ(memcmp(safetensors_data(f, *t), data, nbytes), 0) << name;
    }
    // Every tensor starts aligned to its element size.
    EXPECT_EQ((f.data_start + t->begin) % st_dtype_size(dt), 0u) << name;
  };
  check("f32", ST_F32, {2, 3}, s.f32.data(), 24);
  check("f16", ST_F16, {4}, s.f16.data(), 8);
  check("bf16", ST_BF16, {3, 1}, s.bf16.data(), 6);
  check("i32", ST_I32, {2, 2}, s.i32.data(), 16);
  check("i64", ST_I64, {2}, s.i64.data(), 16);
  check("u8", ST_U8, {5}, s.u8.data(), 5);
  check("i8", ST_I8, {3}, s.i8.data(), 3);
  check("f64", ST_F64, {1}, s.f64.data(), 8);
  check("flags", ST_BOOL, {2, 2}, s.boolv.data(), 4);
  check("scalar", ST_F32, {}, &s.scalar, 4);
  check("empty", ST_F32, {0, 4}, nullptr, 0);

  // Conversions to float.
  std::vector<float> out(4);
  ASSERT_TRUE(safetensors_get_f32(f, "f16", nullptr, out.data(), 4).ok());
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.0f);
  EXPECT_EQ(out[2], 65504.0f);
  EXPECT_EQ(out[3], std::ldexp(1.0f, -24));
  ASSERT_TRUE(safetensors_get_f32(f, "bf16", nullptr, out.data(), 3).ok());
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -3.0f);
  std::vector<int64_t> want{2, 2};
  ASSERT_TRUE(safetensors_get_f32(f, "i32", &want, out.data(), 4).ok());
  EXPECT_EQ(out[0], -1.0f);
  std::vector<int64_t> wrong{4};
  Status bad = safetensors_get_f32(f, "i32", &wrong, out.data(), 4);
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.msg.find("shape [2, 2], expected [4]"), std::string::npos) << bad.msg;
  EXPECT_FALSE(safetensors_get_f32(f, "nope", nullptr, out.data(), 4).ok());
}

// The conventions the reference (Rust/Python) implementation checks, verified by hand.
TEST(Safetensors, LayoutMatchesReferenceConventions) {
  Sample s;
  std::string b;
  ASSERT_TRUE(safetensors_serialize(sample_writer(s), &b).ok());
  uint64_t n = le64(b, 0);
  ASSERT_LE(8 + n, b.size());
  EXPECT_EQ(n % 8, 0u) << "header must be padded to 8 bytes";
  std::string header = b.substr(8, n);
  EXPECT_EQ(header[0], '{');
  size_t last = header.find_last_not_of(' ');
  EXPECT_EQ(header[last], '}');
  EXPECT_LT(header.size() - 1 - last, 8u) << "only padding spaces after the JSON";
  nlohmann::json h = nlohmann::json::parse(header);
  ASSERT_TRUE(h.contains("__metadata__"));
  for (auto& kv : h["__metadata__"].items()) EXPECT_TRUE(kv.value().is_string());
  // Offsets are relative to the data section and tile it without holes.
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (auto& kv : h.items()) {
    if (kv.key() == "__metadata__") continue;
    auto off = kv.value()["data_offsets"];
    spans.push_back({off[0].get<uint64_t>(), off[1].get<uint64_t>()});
    EXPECT_TRUE(kv.value()["dtype"].is_string());
    EXPECT_TRUE(kv.value()["shape"].is_array());
  }
  std::sort(spans.begin(), spans.end());
  uint64_t pos = 0;
  for (auto& sp : spans) {
    EXPECT_EQ(sp.first, pos);
    pos = sp.second;
  }
  EXPECT_EQ(8 + n + pos, b.size());
  // "f32" bytes sit exactly at 8 + n + begin.
  auto off = h["f32"]["data_offsets"];
  EXPECT_EQ(memcmp(b.data() + 8 + n + off[0].get<uint64_t>(), s.f32.data(), 24), 0);
}

TEST(Safetensors, MalformedInputs) {
  Sample s;
  std::string good;
  ASSERT_TRUE(safetensors_serialize(sample_writer(s), &good).ok());

  expect_error("", "too short");
  expect_error("abc", "too short");
  // Truncated: the data section is cut short.
  expect_error(good.substr(0, good.size() - 3), "out of range");
  // Truncated inside the header.
  expect_error(good.substr(0, 40), "past the end");
  // A foreign file: text whose first 8 bytes read as a huge length.
  expect_error("This is plainly not a safetensors file, just some text.\n", "not a safetensors file");
  // A small length pointing at something that is not JSON.
  expect_error(raw_file("{not json at all}       ", ""), "not valid JSON");
  expect_error(raw_file("[1, 2, 3]", ""), "not a safetensors file");
  // Header length larger than the file.
  {
    std::string b = good;
    put_le64(&b, 0, b.size());
    expect_error(b, "past the end");
  }
  // Unknown dtype, bad shape, bad offsets.
  expect_error(raw_file(R"({"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0')),
               "unknown dtype");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", std::string(4, '\0')),
               "non-negative");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,0]}})", std::string(8, '\0')),
               "end before begin");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", std::string(4, '\0')),
               "out of range");
  // dtype/shape size mismatch: 3 floats need 12 bytes.
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')),
               "needs 12 bytes");
  // Overlap and hole.
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                        std::string(12, '\0')),
               "overlap");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                        std::string(12, '\0')),
               "hole");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(8, '\0')),
               "trailing");
  expect_error(raw_file(R"({"__metadata__":{"step":3}})", ""), "not a string");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[1]}})", std::string(4, '\0')), "data_offsets");

  // A good hand-made file with an empty data section parses.
  SafeTensorsFile f;
  EXPECT_TRUE(safetensors_parse(raw_file(R"({"__metadata__":{"k":"v"}})", ""), "x", &f).ok());
  EXPECT_EQ(f.metadata.at("k"), "v");

  // Files on disk: missing, and a foreign file; messages name the path.
  std::string dir = bk_test::scratch_dir("st_bad");
  Status st = safetensors_read(dir + "/missing.safetensors", &f);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("missing.safetensors"), std::string::npos) << st.msg;
  ASSERT_TRUE(write_file_atomic(dir + "/notes.txt", "hello\nworld\n").ok());
  st = safetensors_read(dir + "/notes.txt", &f);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("notes.txt"), std::string::npos) << st.msg;
}

TEST(Safetensors, WriterRejectsBadNames) {
  float x = 1;
  SafeTensorsWriter w;
  st_writer_add(&w, "a", ST_F32, {1}, &x);
  st_writer_add(&w, "a", ST_F32, {1}, &x);
  std::string b;
  EXPECT_FALSE(safetensors_serialize(w, &b).ok());
  SafeTensorsWriter w2;
  st_writer_add(&w2, "__metadata__", ST_F32, {1}, &x);
  EXPECT_FALSE(safetensors_serialize(w2, &b).ok());
}
