// Parquet writer/reader round trips, statistics, metadata, corrupt input, and
// the KD step/prompt tables built on them.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "core/fs.h"
#include "data/kd_schema.h"
#include "data/parquet/encoding.h"
#include "data/parquet/parquet.h"
#include "testutil/testutil.h"

using namespace bk;
using namespace bk::pq;

namespace {

// Random column contents: nulls, empty lists, NaN/-0.0, long and empty strings.
ColumnData random_column(const ColumnSpec& s, int64_t rows, std::mt19937& g) {
  ColumnData c = make_column(s.type, s.list);
  std::uniform_int_distribution<int> pct(0, 99);
  auto push_value = [&]() {
    switch (s.type) {
      case Type::BOOL: push_bool(&c, pct(g) < 30); break;
      case Type::INT32: push_i32(&c, pct(g) < 50 ? (int32_t)(g() % 17) - 8 : (int32_t)g()); break;
      case Type::INT64: push_i64(&c, pct(g) < 50 ? (int64_t)(g() % 5) : ((int64_t)g() << 32) ^ (int64_t)g()); break;
      case Type::FLOAT: {
        int k = pct(g);
        float v = k < 2 ? std::numeric_limits<float>::quiet_NaN() : k < 4 ? -0.0f : k < 40 ? (float)(g() % 9) * 0.5f
                                                                              : std::ldexp((float)(int32_t)g(), -20);
        push_f32(&c, v);
        break;
      }
      case Type::DOUBLE: {
        int k = pct(g);
        double v = k < 2 ? -std::numeric_limits<double>::infinity() : k < 40 ? (double)(g() % 7) : std::ldexp((double)(int32_t)g(), -30);
        push_f64(&c, v);
        break;
      }
      case Type::STRING:
      case Type::BYTES: {
        int k = pct(g);
        std::string v;
        if (k < 10) v = "";
        else if (k < 60) v = "tok" + std::to_string(g() % 11);
        else if (k < 65) v.assign(100 + g() % 50, (char)('a' + g() % 26));  // longer than the stats limit
        else for (int n = (int)(g() % 12); n > 0; n--) v.push_back((char)(g() % 256));
        if (s.type == Type::STRING)
          for (char& ch : v) ch = (char)(32 + ((unsigned char)ch % 90));
        push_str(&c, v);
        break;
      }
    }
  };
  for (int64_t r = 0; r < rows; r++) {
    if (s.list) {
      if (s.nullable && pct(g) < 10) {
        push_null_list(&c);
        continue;
      }
      int n = pct(g) < 15 ? 0 : (int)(g() % 25);
      for (int k = 0; k < n; k++) {
        if (s.element_nullable && pct(g) < 10) push_null(&c);
        else push_value();
      }
      end_list(&c);
    } else {
      if (s.nullable && pct(g) < 20) push_null(&c);
      else push_value();
    }
  }
  return c;
}

bool same_slot(const ColumnData& a, int64_t i, const ColumnData& b, int64_t j) {
  switch (a.type) {
    case Type::BOOL: return a.b[i] == b.b[j];
    case Type::INT32: return a.i32[i] == b.i32[j];
    case Type::INT64: return a.i64[i] == b.i64[j];
    case Type::FLOAT: return memcmp(&a.f32[i], &b.f32[j], 4) == 0;  // bit-exact, NaN included
    case Type::DOUBLE: return memcmp(&a.f64[i], &b.f64[j], 8) == 0;
    default: return a.str(i) == b.str(j);
  }
}

// Empty string when equal, else where they differ.
std::string diff_columns(const ColumnData& want, const ColumnData& got) {
  if (want.type != got.type || want.list != got.list) return "shape differs";
  if (want.num_rows() != got.num_rows())
    return "rows " + std::to_string(want.num_rows()) + " vs " + std::to_string(got.num_rows());
  for (int64_t r = 0; r < want.num_rows(); r++) {
    if (want.is_valid(r) != got.is_valid(r)) return "validity of row " + std::to_string(r);
    if (!want.is_valid(r)) continue;
    if (!want.list) {
      if (!same_slot(want, r, got, r)) return "value of row " + std::to_string(r);
      continue;
    }
    int64_t n = want.offsets[r + 1] - want.offsets[r];
    if (got.offsets[r + 1] - got.offsets[r] != n) return "list length of row " + std::to_string(r);
    for (int64_t k = 0; k < n; k++) {
      int64_t i = want.offsets[r] + k, j = got.offsets[r] + k;
      if (want.elem_is_valid(i) != got.elem_is_valid(j)) return "element validity in row " + std::to_string(r);
      if (want.elem_is_valid(i) && !same_slot(want, i, got, j)) return "element value in row " + std::to_string(r);
    }
  }
  return "";
}

Schema all_types_schema() {
  Schema s;
  const Type types[] = {Type::BOOL, Type::INT32, Type::INT64, Type::FLOAT, Type::DOUBLE, Type::STRING, Type::BYTES};
  for (Type t : types) {
    std::string n = type_name(t);
    s.push_back({n + "_req", t, false, false, false});
    s.push_back({n + "_opt", t, false, true, false});
    s.push_back({"list_" + n, t, true, false, false});
    s.push_back({"list_" + n + "_opt", t, true, true, true});
  }
  return s;
}

Status read_all(Reader& r, int col, ColumnData* out) {
  *out = make_column(r.columns()[col].spec.type, r.columns()[col].spec.list);
  for (int g = 0; g < r.num_row_groups(); g++) {
    ColumnData part;
    BK_TRY(r.read_column(g, col, &part));
    append_rows(out, part, 0, part.num_rows());
  }
  return ok_status();
}

std::string write_sample(const std::string& dir, const std::string& name, const WriterOptions& o, int64_t rows,
                         std::vector<ColumnData>* data, Schema* schema_out, unsigned seed = 7) {
  Schema s = all_types_schema();
  std::mt19937 g(seed);
  data->clear();
  for (const ColumnSpec& c : s) data->push_back(random_column(c, rows, g));
  std::string path = path_join(dir, name);
  Writer w;
  EXPECT_TRUE(w.open(path, s, o).ok());
  EXPECT_TRUE(w.write(*data).msg.empty());
  Status st = w.close();
  EXPECT_TRUE(st.ok()) << st.msg;
  if (schema_out) *schema_out = s;
  return path;
}

// Plain write (no fsync): the corruption tests write hundreds of files.
void put_file(const std::string& path, const std::string& data) {
  unlink(path.c_str());  // truncating in place makes ext4 flush on close
  FILE* f = fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(fwrite(data.data(), 1, data.size(), f), data.size());
  fclose(f);
}

std::string slurp(const std::string& path) {
  std::string d;
  EXPECT_TRUE(read_file(path, &d).ok());
  return d;
}

}  // namespace

TEST(ParquetRle, RoundTripAllWidths) {
  std::mt19937 g(1);
  for (int w = 0; w <= 20; w++) {
    std::vector<uint32_t> v;
    uint32_t maxv = w == 0 ? 0 : (w == 32 ? ~0u : (1u << w) - 1);
    for (int i = 0; i < 5000; i++) {
      if (g() % 4 == 0) {
        uint32_t x = maxv ? g() % (maxv + 1) : 0;
        int run = 1 + g() % 40;
        for (int k = 0; k < run; k++) v.push_back(x);
      } else {
        v.push_back(maxv ? g() % (maxv + 1) : 0);
      }
    }
    std::string enc;
    enc::rle_encode(v.data(), v.size(), w, &enc);
    std::vector<uint32_t> back(v.size());
    enc::RleDecoder d((const uint8_t*)enc.data(), enc.size(), w);
    std::string why;
    ASSERT_TRUE(d.decode(back.data(), back.size(), &why)) << "width " << w << ": " << why;
    EXPECT_EQ(v, back) << "width " << w;
    // Asking for more values than encoded is an error, not garbage.
    enc::RleDecoder d2((const uint8_t*)enc.data(), enc.size(), w);
    std::vector<uint32_t> more(v.size() + 100);
    EXPECT_FALSE(d2.decode(more.data(), more.size(), &why) && w > 0 && v.size() % 8 == 0);
  }
}

TEST(Parquet, RandomRoundTripEveryCodecPageAndDictionary) {
  std::string dir = bk_test::scratch_dir("parquet_roundtrip");
  const Codec codecs[] = {Codec::UNCOMPRESSED, Codec::SNAPPY, Codec::ZSTD};
  unsigned seed = 100;
  for (Codec codec : codecs) {
    for (int v2 = 0; v2 < 2; v2++) {
      for (int dict = 0; dict < 2; dict++) {
        WriterOptions o;
        o.codec = codec;
        o.page_v2 = v2;
        o.dictionary = dict;
        o.dictionary_max_ratio = 1.0;  // dictionary-encode every chunk when on
        o.row_group_rows = 450;
        o.page_bytes = 1500;  // several pages per chunk
        o.key_values = {{"k1", "v1"}, {"empty", ""}, {"bin", std::string("a\0b", 3)}};
        std::vector<ColumnData> data;
        Schema s;
        std::string name = std::string("rt_") + codec_name(codec) + (v2 ? "_v2" : "_v1") + (dict ? "_dict" : "_plain") + ".parquet";
        SCOPED_TRACE(name);
        std::string path = write_sample(dir, name, o, 1000, &data, &s, seed++);
        Reader r;
        Status st = r.open(path);
        ASSERT_TRUE(st.ok()) << st.msg;
        EXPECT_EQ(r.num_rows(), 1000);
        EXPECT_EQ(r.num_row_groups(), 3);
        EXPECT_EQ(r.row_group_num_rows(2), 100);
        ASSERT_EQ(r.columns().size(), s.size());
        ASSERT_NE(r.key_value("k1"), nullptr);
        EXPECT_EQ(*r.key_value("k1"), "v1");
        EXPECT_EQ(*r.key_value("empty"), "");
        EXPECT_EQ(*r.key_value("bin"), std::string("a\0b", 3));
        EXPECT_EQ(r.key_value("nope"), nullptr);
        for (size_t c = 0; c < s.size(); c++) {
          const ColumnInfo& ci = r.columns()[c];
          EXPECT_EQ(ci.spec.name, s[c].name);
          EXPECT_EQ(spec_type_string(ci.spec), spec_type_string(s[c]));
          ColumnData got;
          st = read_all(r, (int)c, &got);
          ASSERT_TRUE(st.ok()) << st.msg;
          EXPECT_EQ(diff_columns(data[c], got), "") << s[c].name;
          ColumnChunkInfo info;
          ASSERT_TRUE(r.chunk_info(0, (int)c, &info).ok());
          EXPECT_EQ(info.codec, codec);
          bool has_dict = false;
          for (const std::string& e : info.encodings) has_dict |= e == "RLE_DICTIONARY";
          EXPECT_EQ(has_dict, dict == 1 && s[c].type != Type::BOOL) << s[c].name;
          if (s[c].type == Type::BOOL) {  // v2 pages carry booleans RLE-encoded
            EXPECT_EQ(info.encodings[0], v2 ? "RLE" : "PLAIN");
          }
          EXPECT_TRUE(info.stats.has_null_count);
        }
      }
    }
  }
}

TEST(Parquet, StatisticsMatchTheData) {
  std::string dir = bk_test::scratch_dir("parquet_stats");
  Schema s = {{"i", Type::INT32, false, true}, {"f", Type::FLOAT}, {"s", Type::STRING}, {"l", Type::INT64, true},
              {"b", Type::BOOL}, {"long", Type::STRING}};
  std::vector<ColumnData> cols;
  for (const ColumnSpec& c : s) cols.push_back(make_column(c.type, c.list));
  const int32_t iv[] = {5, -3, 9, 0};
  const float fv[] = {0.5f, std::nanf(""), -2.25f, 0.0f};
  const char* sv[] = {"pear", "apple", "zebra", "mango"};
  for (int r = 0; r < 4; r++) {
    if (r == 2) push_null(&cols[0]); else push_i32(&cols[0], iv[r]);
    push_f32(&cols[1], fv[r]);
    push_str(&cols[2], sv[r]);
    for (int k = 0; k < r; k++) push_i64(&cols[3], 100 * r + k);
    end_list(&cols[3]);
    push_bool(&cols[4], r == 1);
    push_str(&cols[5], std::string(80, (char)('b' + r)));
  }
  std::string path = path_join(dir, "stats.parquet");
  Writer w;
  ASSERT_TRUE(w.open(path, s, WriterOptions()).ok());
  ASSERT_TRUE(w.write(cols).ok());
  ASSERT_TRUE(w.close().ok());
  Reader r;
  ASSERT_TRUE(r.open(path).ok());
  ColumnChunkInfo ci;
  auto as_i32 = [](const std::string& b) { int32_t v; memcpy(&v, b.data(), 4); return v; };
  auto as_f32 = [](const std::string& b) { float v; memcpy(&v, b.data(), 4); return v; };
  auto as_i64 = [](const std::string& b) { int64_t v; memcpy(&v, b.data(), 8); return v; };
  ASSERT_TRUE(r.chunk_info(0, 0, &ci).ok());
  ASSERT_TRUE(ci.stats.has_min_max);
  EXPECT_EQ(as_i32(ci.stats.min), -3);
  EXPECT_EQ(as_i32(ci.stats.max), 5);
  EXPECT_EQ(ci.stats.null_count, 1);
  ASSERT_TRUE(r.chunk_info(0, 1, &ci).ok());
  EXPECT_EQ(as_f32(ci.stats.min), -2.25f);  // NaN is left out of min/max
  EXPECT_EQ(as_f32(ci.stats.max), 0.5f);
  EXPECT_EQ(ci.stats.null_count, 0);
  ASSERT_TRUE(r.chunk_info(0, 2, &ci).ok());
  EXPECT_EQ(ci.stats.min, "apple");
  EXPECT_EQ(ci.stats.max, "zebra");
  ASSERT_TRUE(r.chunk_info(0, 3, &ci).ok());
  EXPECT_EQ(as_i64(ci.stats.min), 100);
  EXPECT_EQ(as_i64(ci.stats.max), 302);
  EXPECT_EQ(ci.stats.null_count, 1);  // the empty list of row 0
  EXPECT_EQ(ci.num_values, 7);        // 1 empty-list entry + 6 values
  ASSERT_TRUE(r.chunk_info(0, 4, &ci).ok());
  EXPECT_EQ(ci.stats.min, std::string(1, '\0'));
  EXPECT_EQ(ci.stats.max, std::string(1, '\1'));
  ASSERT_TRUE(r.chunk_info(0, 5, &ci).ok());
  // Truncated bounds still bracket the data: min <= every value <= max.
  ASSERT_TRUE(ci.stats.has_min_max);
  EXPECT_LE(ci.stats.min.size(), 64u);
  EXPECT_LE(ci.stats.max.size(), 64u);
  EXPECT_LE(ci.stats.min, std::string(80, 'b'));
  EXPECT_GE(ci.stats.max, std::string(80, 'e'));
}

TEST(Parquet, RowAppendApiAndEmptyFile) {
  std::string dir = bk_test::scratch_dir("parquet_rowapi");
  Schema s = {{"id", Type::INT64}, {"tags", Type::STRING, true}};
  std::string path = path_join(dir, "rows.parquet");
  {
    Writer w;
    WriterOptions o;
    o.row_group_rows = 3;
    ASSERT_TRUE(w.open(path, s, o).ok());
    for (int r = 0; r < 7; r++) {
      push_i64(w.buffer(0), r);
      for (int k = 0; k < r % 3; k++) push_str(w.buffer(1), "t" + std::to_string(k));
      end_list(w.buffer(1));
      ASSERT_TRUE(w.commit_rows().ok());
    }
    // Mismatched buffers are caught before anything is written.
    push_i64(w.buffer(0), 99);
    EXPECT_FALSE(w.commit_rows().ok());
    end_list(w.buffer(1));
    ASSERT_TRUE(w.commit_rows().ok());
    w.set_key_value("note", "x");
    EXPECT_FALSE(file_exists(path));  // still a temp file
    ASSERT_TRUE(w.close().ok());
  }
  Reader r;
  ASSERT_TRUE(r.open(path).ok());
  EXPECT_EQ(r.num_rows(), 8);
  EXPECT_EQ(r.num_row_groups(), 3);
  EXPECT_EQ(*r.key_value("note"), "x");
  ColumnData tags;
  ASSERT_TRUE(read_all(r, 1, &tags).ok());
  EXPECT_EQ(tags.offsets, (std::vector<int64_t>{0, 0, 1, 3, 3, 4, 6, 6, 6}));
  EXPECT_EQ(tags.str(2), "t1");

  // A file with no rows is still valid Parquet.
  std::string empty = path_join(dir, "empty.parquet");
  Writer w;
  ASSERT_TRUE(w.open(empty, s, WriterOptions()).ok());
  ASSERT_TRUE(w.close().ok());
  Reader e;
  ASSERT_TRUE(e.open(empty).ok());
  EXPECT_EQ(e.num_rows(), 0);
  EXPECT_EQ(e.num_row_groups(), 0);
  EXPECT_EQ(e.columns().size(), 2u);
}

TEST(Parquet, AbortedWriterLeavesNothing) {
  std::string dir = bk_test::scratch_dir("parquet_abort");
  std::string path = path_join(dir, "x.parquet");
  {
    Writer w;
    ASSERT_TRUE(w.open(path, {{"a", Type::INT32}}, WriterOptions()).ok());
    push_i32(w.buffer(0), 1);
    ASSERT_TRUE(w.commit_rows().ok());
  }  // destroyed without close
  EXPECT_TRUE(list_files(dir, "x.", "").empty());  // no target, no temp file
  // Nulls in a non-nullable column are refused.
  Writer w;
  ASSERT_TRUE(w.open(path, {{"a", Type::INT32}}, WriterOptions()).ok());
  push_null(w.buffer(0));
  ASSERT_TRUE(w.commit_rows().ok());
  Status st = w.close();
  EXPECT_NE(st.msg.find("column a, row 0: null"), std::string::npos) << st.msg;
  EXPECT_FALSE(file_exists(path));
}

TEST(ParquetBadInput, TruncatedWrongMagicAndMissingFile) {
  std::string dir = bk_test::scratch_dir("parquet_bad");
  std::vector<ColumnData> data;
  std::string path = write_sample(dir, "good.parquet", WriterOptions(), 200, &data, nullptr);
  std::string bytes = slurp(path);
  Reader r;
  for (size_t cut : {size_t(0), size_t(3), size_t(11), bytes.size() / 2, bytes.size() - 1, bytes.size() - 5}) {
    std::string p = path_join(dir, "cut.parquet");
    ASSERT_TRUE(write_file_atomic(p, bytes.substr(0, cut)).ok());
    Status st = r.open(p);
    ASSERT_FALSE(st.ok()) << "cut at " << cut;
    EXPECT_NE(st.msg.find("cut.parquet"), std::string::npos) << st.msg;
    EXPECT_TRUE(st.msg.find("truncated") != std::string::npos || st.msg.find("not a Parquet") != std::string::npos ||
                st.msg.find("footer") != std::string::npos)
        << st.msg;
  }
  std::string bad = bytes;
  memcpy(&bad[0], "PAR2", 4);
  std::string p = path_join(dir, "magic.parquet");
  ASSERT_TRUE(write_file_atomic(p, bad).ok());
  Status st = r.open(p);
  EXPECT_NE(st.msg.find("not a Parquet file"), std::string::npos) << st.msg;
  st = r.open(path_join(dir, "absent.parquet"));
  EXPECT_NE(st.msg.find("cannot open"), std::string::npos) << st.msg;
  // A footer length pointing before the start of the file.
  bad = bytes;
  uint32_t huge = (uint32_t)bytes.size();
  memcpy(&bad[bad.size() - 8], &huge, 4);
  ASSERT_TRUE(write_file_atomic(p, bad).ok());
  st = r.open(p);
  EXPECT_NE(st.msg.find("footer length"), std::string::npos) << st.msg;
  // Garbage footer.
  bad = bytes;
  uint32_t flen;
  memcpy(&flen, &bad[bad.size() - 8], 4);
  for (size_t i = bad.size() - 8 - flen; i < bad.size() - 8; i++) bad[i] = (char)0xAB;
  ASSERT_TRUE(write_file_atomic(p, bad).ok());
  st = r.open(p);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("magic.parquet"), std::string::npos) << st.msg;
}

TEST(ParquetBadInput, CorruptPageHeaderNamesRowGroupColumnAndByte) {
  std::string dir = bk_test::scratch_dir("parquet_corrupt");
  Schema s = {{"a", Type::INT32}, {"topk_logprobs", Type::FLOAT, true}};
  std::vector<ColumnData> cols = {make_column(Type::INT32, false), make_column(Type::FLOAT, true)};
  for (int r = 0; r < 100; r++) {
    push_i32(&cols[0], r);
    for (int k = 0; k < 5; k++) push_f32(&cols[1], -0.1f * k);
    end_list(&cols[1]);
  }
  WriterOptions o;
  o.row_group_rows = 25;
  o.codec = Codec::UNCOMPRESSED;
  std::string path = path_join(dir, "kd_shard_000.parquet");
  {
    Writer w;
    ASSERT_TRUE(w.open(path, s, o).ok());
    ASSERT_TRUE(w.write(cols).ok());
    ASSERT_TRUE(w.close().ok());
  }
  Reader r;
  ASSERT_TRUE(r.open(path).ok());
  ColumnChunkInfo info;
  ASSERT_TRUE(r.chunk_info(2, 1, &info).ok());
  // Find the chunk: row group 2, column topk_logprobs starts after row group
  // 2's column a. Locate it by reading offsets from a fresh decode of sizes.
  std::string bytes = slurp(path);
  // The page header of the chunk starts with field 1 (type): byte 0x15.
  // Walk row groups: each holds two chunks written back to back.
  int64_t off = 4;
  ColumnChunkInfo a_info;
  for (int g = 0; g <= 2; g++) {
    ASSERT_TRUE(r.chunk_info(g, 0, &a_info).ok());
    off += a_info.compressed_bytes;
    if (g == 2) break;
    ASSERT_TRUE(r.chunk_info(g, 1, &info).ok());
    off += info.compressed_bytes;
  }
  // Overwrite the header's first bytes with a truncated varint run.
  std::string bad = bytes;
  for (int k = 0; k < 3; k++) bad[off + k] = (char)0xFF;
  std::string p = path_join(dir, "kd_shard_001.parquet");
  ASSERT_TRUE(write_file_atomic(p, bad).ok());
  Reader rb;
  ASSERT_TRUE(rb.open(p).ok());
  ColumnData c;
  EXPECT_TRUE(rb.read_column(1, 1, &c).ok());
  Status st = rb.read_column(2, 1, &c);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("kd_shard_001.parquet: row group 2, column topk_logprobs: page header"), std::string::npos)
      << st.msg;
  EXPECT_NE(st.msg.find("at byte " + std::to_string(off)), std::string::npos) << st.msg;
}

TEST(ParquetBadInput, RandomByteFlipsNeverCrash) {
  std::string dir = bk_test::scratch_dir("parquet_flips");
  const Codec codecs[] = {Codec::UNCOMPRESSED, Codec::SNAPPY, Codec::ZSTD};
  std::mt19937 g(5);
  for (Codec codec : codecs) {
    for (int v2 = 0; v2 < 2; v2++) {
      WriterOptions o;
      o.codec = codec;
      o.page_v2 = v2;
      o.row_group_rows = 60;
      o.page_bytes = 800;
      std::vector<ColumnData> data;
      std::string path = write_sample(dir, "src.parquet", o, 150, &data, nullptr, 11);
      std::string bytes = slurp(path);
      uint32_t flen;
      memcpy(&flen, &bytes[bytes.size() - 8], 4);
      size_t data_end = bytes.size() - 8 - flen;
      int errors = 0;
      for (int trial = 0; trial < 150; trial++) {
        std::string bad = bytes;
        int flips = 1 + (int)(g() % 4);
        for (int k = 0; k < flips; k++) bad[4 + g() % (data_end - 4)] ^= (char)(1 + g() % 255);
        std::string p = path_join(dir, "flip.parquet");
        put_file(p, bad);
        Reader r;
        ASSERT_TRUE(r.open(p).ok());  // footer untouched
        for (int rg = 0; rg < r.num_row_groups(); rg++)
          for (int c = 0; c < (int)r.columns().size(); c++) {
            ColumnData out;
            Status st = r.read_column(rg, c, &out);
            if (!st.ok()) {
              errors++;
              EXPECT_EQ(st.msg.rfind(p + ": row group " + std::to_string(rg) + ", column ", 0), 0u) << st.msg;
            }
          }
      }
      EXPECT_GT(errors, 0) << codec_name(codec) << (v2 ? " v2" : " v1");
    }
  }
}

// ------------------------------------------------------------------ KD tables

namespace {

KdStep random_step(std::mt19937& g, int64_t prompt, int32_t step) {
  KdStep s;
  s.prompt_idx = prompt;
  s.step_idx = step;
  s.teacher_sample_id = (int32_t)(g() % 32000);
  s.teacher_sample_text = g() % 5 ? " word" + std::to_string(g() % 50) : "{";
  int k = (int)(g() % 21);
  for (int i = 0; i < k; i++) {
    s.topk_ids.push_back((int32_t)(g() % 32000));
    s.topk_logprobs.push_back(-(float)(g() % 10000) / 1000.0f);
    s.raw_topk_tokens.push_back("tok" + std::to_string(g() % 300));
    s.raw_topk_logprobs.push_back(-(float)(g() % 10000) / 997.0f);
  }
  s.other_logprob = -(float)(g() % 1000) / 100.0f;
  s.is_struct_token = s.teacher_sample_text == "{";
  s.template_hash = "tmpl1234";
  s.tokenizer_hash = "tok5678";
  s.teacher_sample_logprob = -(float)(g() % 500) / 100.0f;
  s.byte_offset = step * 3;
  s.valid = g() % 10 != 0;
  return s;
}

bool same_step(const KdStep& a, const KdStep& b) {
  return a.prompt_idx == b.prompt_idx && a.step_idx == b.step_idx && a.teacher_sample_id == b.teacher_sample_id &&
         a.teacher_sample_text == b.teacher_sample_text && a.topk_ids == b.topk_ids &&
         a.topk_logprobs == b.topk_logprobs && a.other_logprob == b.other_logprob &&
         a.is_struct_token == b.is_struct_token && a.template_hash == b.template_hash &&
         a.tokenizer_hash == b.tokenizer_hash && a.teacher_sample_logprob == b.teacher_sample_logprob &&
         a.byte_offset == b.byte_offset && a.valid == b.valid && a.raw_topk_tokens == b.raw_topk_tokens &&
         a.raw_topk_logprobs == b.raw_topk_logprobs;
}

KdMeta sample_meta() {
  KdMeta m;
  m.tokenizer_hash = "tok5678";
  m.teacher_model = "gpt-4o-mini";
  m.teacher_temperature = 0.8;
  m.teacher_top_p = 0.95;
  m.template_text = "<|user|>\n{prompt}\n\n<|assistant|>\n";
  m.extra = {{"run_id", "abc"}};
  return m;
}

// Writes steps through the generic writer, so tests can store rows the KD
// writer refuses (list lengths that disagree).
void write_raw_steps(const std::string& path, const std::vector<KdStep>& steps, const Schema& schema) {
  Writer w;
  ASSERT_TRUE(w.open(path, schema, WriterOptions()).ok());
  for (const KdStep& s : steps) {
    for (size_t c = 0; c < schema.size(); c++) {
      ColumnData* b = w.buffer((int)c);
      const std::string& n = schema[c].name;
      if (n == "prompt_idx") push_i64(b, s.prompt_idx);
      else if (n == "step_idx") push_i32(b, s.step_idx);
      else if (n == "teacher_sample_id") push_i32(b, s.teacher_sample_id);
      else if (n == "teacher_sample_text") push_str(b, s.teacher_sample_text);
      else if (n == "topk_ids") { for (int32_t v : s.topk_ids) push_i32(b, v); end_list(b); }
      else if (n == "topk_logprobs" && schema[c].type == Type::DOUBLE) { for (float v : s.topk_logprobs) push_f64(b, v); end_list(b); }
      else if (n == "topk_logprobs") { for (float v : s.topk_logprobs) push_f32(b, v); end_list(b); }
      else if (n == "other_logprob") push_f32(b, s.other_logprob);
      else if (n == "is_struct_token") push_bool(b, s.is_struct_token);
      else if (n == "template_hash") push_str(b, s.template_hash);
      else if (n == "tokenizer_hash") push_str(b, s.tokenizer_hash);
      else if (n == "teacher_sample_logprob") push_f32(b, s.teacher_sample_logprob);
      else if (n == "byte_offset") push_i32(b, s.byte_offset);
      else if (n == "valid") push_bool(b, s.valid);
      else if (n == "raw_topk_tokens") { for (auto& t : s.raw_topk_tokens) push_str(b, t); end_list(b); }
      else if (n == "raw_topk_logprobs") { for (float v : s.raw_topk_logprobs) push_f32(b, v); end_list(b); }
    }
    ASSERT_TRUE(w.commit_rows().ok());
  }
  Status st = w.close();
  ASSERT_TRUE(st.ok()) << st.msg;
}

}  // namespace

TEST(KdSchema, ColumnsInOrder) {
  Schema s = kd_step_schema();
  std::string got;
  for (const ColumnSpec& c : s) got += c.name + ":" + spec_type_string(c) + " ";
  EXPECT_EQ(got,
            "prompt_idx:int64 step_idx:int32 teacher_sample_id:int32 teacher_sample_text:string "
            "topk_ids:list<int32> topk_logprobs:list<float> other_logprob:float is_struct_token:bool "
            "template_hash:string tokenizer_hash:string teacher_sample_logprob:float byte_offset:int32 valid:bool "
            "raw_topk_tokens:list<string> raw_topk_logprobs:list<float> ");
  got.clear();
  for (const ColumnSpec& c : kd_prompt_schema()) got += c.name + ":" + spec_type_string(c) + " ";
  EXPECT_EQ(got,
            "prompt_idx:int64 prompt_text:string rendered_prompt:string response_text:string finish_reason:string "
            "teacher_model:string provider:string prompt_tokens:int32 completion_tokens:int32 latency_ms:double "
            "task:string reference:string source:string score:double ");
  EXPECT_EQ(kd_shard_name(3), "kd_shard_003.parquet");
  EXPECT_EQ(kd_prompts_name(12), "kd_prompts_012.parquet");
}

TEST(KdSchema, StepAndPromptRoundTrip) {
  std::string dir = bk_test::scratch_dir("kd_roundtrip");
  std::mt19937 g(3);
  std::vector<KdStep> steps;
  for (int p = 0; p < 40; p++)
    for (int t = 0; t < 25; t++) steps.push_back(random_step(g, p, t));
  for (Codec codec : {Codec::SNAPPY, Codec::ZSTD}) {
    std::string path = path_join(dir, kd_shard_name((int)codec));
    KdWriterOptions wo;
    wo.codec = codec;
    wo.row_group_rows = 300;
    KdStepWriter w;
    ASSERT_TRUE(w.open(path, sample_meta(), wo).ok());
    for (const KdStep& s : steps) ASSERT_TRUE(w.append(s).ok());
    EXPECT_EQ(w.rows(), 1000);
    ASSERT_TRUE(w.close().ok());

    KdStepReader r;
    Status st = r.open(path);
    ASSERT_TRUE(st.ok()) << st.msg;
    EXPECT_EQ(r.meta().schema_version, kKdSchemaVersion);
    EXPECT_EQ(r.meta().tokenizer_hash, "tok5678");
    EXPECT_EQ(r.meta().teacher_model, "gpt-4o-mini");
    EXPECT_DOUBLE_EQ(r.meta().teacher_temperature, 0.8);
    EXPECT_DOUBLE_EQ(r.meta().teacher_top_p, 0.95);
    EXPECT_EQ(r.meta().template_text, "<|user|>\n{prompt}\n\n<|assistant|>\n");
    ASSERT_EQ(r.meta().extra.size(), 1u);
    EXPECT_EQ(r.meta().extra[0].second, "abc");
    EXPECT_EQ(r.num_row_groups(), 4);
    size_t i = 0;
    for (int rg = 0; rg < r.num_row_groups(); rg++) {
      std::vector<KdStep> rows;
      st = r.read_row_group(rg, &rows);
      ASSERT_TRUE(st.ok()) << st.msg;
      for (const KdStep& s : rows) {
        ASSERT_LT(i, steps.size());
        EXPECT_TRUE(same_step(steps[i], s)) << "row " << i;
        i++;
      }
    }
    EXPECT_EQ(i, steps.size());
    EXPECT_EQ(r.stats().rows_read, 1000);
    EXPECT_EQ(r.stats().bad_rows, 0);
  }

  std::string ppath = path_join(dir, kd_prompts_name(0));
  KdPromptWriter pw;
  ASSERT_TRUE(pw.open(ppath, sample_meta()).ok());
  for (int p = 0; p < 30; p++) {
    KdPrompt k;
    k.prompt_idx = p;
    k.prompt_text = "Return JSON for item " + std::to_string(p);
    k.rendered_prompt = "<|user|>\n" + k.prompt_text + "\n\n<|assistant|>\n";
    k.response_text = "{\"item\": " + std::to_string(p) + "}";
    k.finish_reason = p % 7 ? "stop" : "length";
    k.teacher_model = "gpt-4o-mini";
    k.provider = "openai";
    k.prompt_tokens = 10 + p;
    k.completion_tokens = 5 + p;
    k.latency_ms = 100.5 + p;
    k.task = "json";
    k.reference = p % 2 ? "" : "{}";
    k.source = p % 3 == 0 ? "reference" : "teacher_sample";
    k.score = p % 2 ? NAN : 0.5 * (p % 4);
    ASSERT_TRUE(pw.append(k).ok());
  }
  ASSERT_TRUE(pw.close().ok());
  KdPromptReader pr;
  ASSERT_TRUE(pr.open(ppath).ok());
  std::vector<KdPrompt> prompts;
  ASSERT_TRUE(pr.read_row_group(0, &prompts).ok());
  ASSERT_EQ(prompts.size(), 30u);
  EXPECT_EQ(prompts[7].finish_reason, "length");
  EXPECT_EQ(prompts[7].rendered_prompt, "<|user|>\nReturn JSON for item 7\n\n<|assistant|>\n");
  EXPECT_EQ(prompts[29].completion_tokens, 34);
  EXPECT_DOUBLE_EQ(prompts[3].latency_ms, 103.5);
  EXPECT_EQ(prompts[3].source, "reference");
  EXPECT_EQ(prompts[4].source, "teacher_sample");
  EXPECT_TRUE(std::isnan(prompts[5].score));
  EXPECT_DOUBLE_EQ(prompts[6].score, 1.0);
  // A prompt table from before schema version 2 (no source, no score) reads as teacher samples, unscored.
  {
    const std::string old_path = path_join(dir, "old_prompts.parquet");
    Schema old = kd_prompt_schema();
    old.resize(old.size() - 2);
    pq::Writer w;
    pq::WriterOptions wo;
    ASSERT_TRUE(w.open(old_path, old, wo).ok());
    pq::push_i64(w.buffer(0), 7);
    for (int c = 1; c <= 6; c++) pq::push_str(w.buffer(c), "x");
    pq::push_i32(w.buffer(7), 1);
    pq::push_i32(w.buffer(8), 1);
    pq::push_f64(w.buffer(9), 1.0);
    pq::push_str(w.buffer(10), "sort");
    pq::push_str(w.buffer(11), "a b");
    ASSERT_TRUE(w.commit_rows().ok());
    ASSERT_TRUE(w.close().ok());
    KdPromptReader r2;
    ASSERT_TRUE(r2.open(old_path).ok());
    std::vector<KdPrompt> rows;
    ASSERT_TRUE(r2.read_row_group(0, &rows).ok());
    ASSERT_EQ(rows.size(), 1u);
    EXPECT_EQ(rows[0].source, "teacher_sample");
    EXPECT_TRUE(std::isnan(rows[0].score));
  }
  // A step shard is not a prompt table.
  Status st = pr.open(path_join(dir, kd_shard_name((int)Codec::ZSTD)));
  EXPECT_NE(st.msg.find("column prompt_text is missing (expected string)"), std::string::npos) << st.msg;
}

TEST(KdSchema, MissingAndMistypedColumns) {
  std::string dir = bk_test::scratch_dir("kd_schema_check");
  std::mt19937 g(4);
  std::vector<KdStep> steps;
  for (int i = 0; i < 10; i++) steps.push_back(random_step(g, 0, i));

  Schema no_other = kd_step_schema();
  no_other.erase(no_other.begin() + 6);  // other_logprob
  std::string p1 = path_join(dir, "missing.parquet");
  write_raw_steps(p1, steps, no_other);
  KdStepReader r;
  Status st = r.open(p1);
  EXPECT_NE(st.msg.find("missing.parquet: column other_logprob is missing (expected float)"), std::string::npos)
      << st.msg;

  Schema dbl = kd_step_schema();
  dbl[5].type = Type::DOUBLE;  // topk_logprobs as list<double>
  std::string p2 = path_join(dir, "mistyped.parquet");
  write_raw_steps(p2, steps, dbl);
  st = r.open(p2);
  EXPECT_NE(st.msg.find("mistyped.parquet: column topk_logprobs has type list<double>, expected list<float>"),
            std::string::npos)
      << st.msg;

  // PoC shards (no bitkd columns) read only when asked to.
  Schema poc = kd_step_schema();
  poc.resize(kKdStepPocColumns);
  std::string p3 = path_join(dir, "poc.parquet");
  write_raw_steps(p3, steps, poc);
  st = r.open(p3);
  EXPECT_NE(st.msg.find("column teacher_sample_logprob is missing"), std::string::npos) << st.msg;
  KdReadOptions o;
  o.allow_missing_bitkd_columns = true;
  ASSERT_TRUE(r.open(p3, o).ok());
  std::vector<KdStep> rows;
  st = r.read_row_group(0, &rows);
  ASSERT_TRUE(st.ok()) << st.msg;
  ASSERT_EQ(rows.size(), 10u);
  EXPECT_EQ(rows[4].topk_ids, steps[4].topk_ids);
  EXPECT_TRUE(rows[4].valid);
  EXPECT_EQ(rows[4].byte_offset, -1);
  EXPECT_TRUE(rows[4].raw_topk_tokens.empty());
}

TEST(KdSchema, BadRowsErrorOrSkipAndCount) {
  std::string dir = bk_test::scratch_dir("kd_bad_rows");
  std::mt19937 g(9);
  std::vector<KdStep> steps;
  for (int i = 0; i < 50; i++) {
    KdStep s = random_step(g, i / 10, i % 10);
    s.valid = true;
    if (s.topk_ids.empty()) {
      s.topk_ids = {1, 2};
      s.topk_logprobs = {-0.5f, -1.5f};
    }
    steps.push_back(s);
  }
  steps[12].topk_logprobs.pop_back();                                        // lengths disagree
  steps[23].topk_logprobs[0] = std::nanf("");                                // NaN
  steps[31].other_logprob = 0.5f;                                            // positive
  steps[40].raw_topk_tokens.push_back("extra");                              // raw lengths disagree
  steps[44].topk_logprobs[0] = 5e-5f;                                        // within tolerance: fine
  steps[45].valid = false;                                                   // invalid rows may hold NaN
  steps[45].other_logprob = std::nanf("");
  std::string path = path_join(dir, "kd_shard_000.parquet");
  write_raw_steps(path, steps, kd_step_schema());

  // The KD writer refuses lengths that disagree.
  KdStepWriter kw;
  ASSERT_TRUE(kw.open(path_join(dir, "w.parquet"), sample_meta()).ok());
  EXPECT_NE(kw.append(steps[12]).msg.find("topk_logprobs"), std::string::npos);

  KdStepReader r;
  ASSERT_TRUE(r.open(path).ok());
  std::vector<KdStep> rows;
  Status st = r.read_row_group(0, &rows);
  EXPECT_NE(st.msg.find("kd_shard_000.parquet: row group 0, column topk_logprobs, row 12: list has"),
            std::string::npos)
      << st.msg;

  // One bad row at a time, each named.
  auto first_error = [&](std::vector<KdStep> v) {
    std::string p = path_join(dir, "one.parquet");
    write_raw_steps(p, v, kd_step_schema());
    KdStepReader rr;
    EXPECT_TRUE(rr.open(p).ok());
    std::vector<KdStep> out;
    return rr.read_row_group(0, &out).msg;
  };
  std::vector<KdStep> v = steps;
  v[12] = steps[0];
  std::string m = first_error(v);
  EXPECT_NE(m.find("column topk_logprobs, row 23: NaN logprob at list position 0"), std::string::npos) << m;
  v[23] = steps[0];
  m = first_error(v);
  EXPECT_NE(m.find("column other_logprob, row 31: positive logprob"), std::string::npos) << m;
  v[31] = steps[0];
  m = first_error(v);
  EXPECT_NE(m.find("column raw_topk_logprobs, row 40:"), std::string::npos) << m;
  v[40] = steps[0];
  EXPECT_EQ(first_error(v), "");

  KdReadOptions o;
  o.skip_bad_rows = true;
  ASSERT_TRUE(r.open(path, o).ok());
  st = r.read_row_group(0, &rows);
  ASSERT_TRUE(st.ok()) << st.msg;
  EXPECT_EQ(rows.size(), 46u);
  EXPECT_EQ(r.stats().bad_rows, 4);
  EXPECT_EQ(r.stats().rows_read, 46);
  EXPECT_NE(r.stats().first_bad.find("row 12"), std::string::npos) << r.stats().first_bad;
  for (const KdStep& s : rows) EXPECT_FALSE(s.prompt_idx == 1 && s.step_idx == 2);  // row 12 is gone
}
