// Parquet interop with DuckDB (npm @duckdb/node-api), both directions:
// DuckDB reads what bitkd writes (KD shards, nullable/list columns), and
// bitkd reads what DuckDB writes with its defaults and with zstd.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "core/fs.h"
#include "data/kd_schema.h"
#include "data/parquet/parquet.h"
#include "testutil/testutil.h"

using namespace bk;
using namespace bk::pq;
using nlohmann::json;

namespace {

std::string script() { return path_join(bk_test::source_dir(), "tests/interop/duckdb_parquet.mjs"); }

// Missing tools are a failure with the fix, never a silent skip.
bool duckdb_ready(std::string* why) {
  std::string mod = path_join(bk_test::source_dir(), "tests/interop/node_modules/@duckdb/node-api/package.json");
  std::string out;
  if (bk_test::run_command("node --version", &out) != 0) {
    *why = "node is not installed: run bash scripts/setup.sh --test";
    return false;
  }
  if (!file_exists(mod)) {
    *why = "tests/interop/node_modules lacks @duckdb/node-api: run bash scripts/setup.sh --test (it runs npm install there)";
    return false;
  }
  return true;
}

json run_duckdb(const std::string& mode, const std::string& target, const std::string& out_json) {
  std::string out;
  std::string cmd = "node '" + script() + "' " + mode + " '" + target + "' '" + out_json + "'";
  int rc = bk_test::run_command(cmd, &out);
  EXPECT_EQ(rc, 0) << cmd << "\n" << out;
  std::string text;
  if (rc != 0 || !read_file(out_json, &text).ok()) return json();
  return json::parse(text, nullptr, false);
}

// DuckDB's JSON gives BIGINT as a string, other numbers as numbers.
int64_t as_i64(const json& v) { return v.is_string() ? std::stoll(v.get<std::string>()) : v.get<int64_t>(); }

KdStep make_step(std::mt19937& g, int64_t prompt, int32_t step) {
  static const char* texts[] = {" the", "{", "\"", "é", "\n", "Ġhello", "```", "日本", "a'b", ","};
  KdStep s;
  s.prompt_idx = prompt;
  s.step_idx = step;
  s.teacher_sample_id = (int32_t)(g() % 32000);
  s.teacher_sample_text = texts[g() % 10];
  int k = (int)(g() % 21);
  for (int i = 0; i < k; i++) {
    s.topk_ids.push_back((int32_t)(g() % 32000));
    s.topk_logprobs.push_back(-std::ldexp((float)(g() % 100000), -12));
    s.raw_topk_tokens.push_back(std::string(texts[g() % 10]) + std::to_string(g() % 40));
    s.raw_topk_logprobs.push_back(-std::ldexp((float)(g() % 100000), -13));
  }
  s.other_logprob = -std::ldexp((float)(g() % 100000), -11);
  s.is_struct_token = g() % 4 == 0;
  s.template_hash = "9f2c";
  s.tokenizer_hash = "tk01";
  s.teacher_sample_logprob = -std::ldexp((float)(g() % 1000), -8);
  s.byte_offset = step * 4;
  s.valid = g() % 20 != 0;
  return s;
}

void expect_step_equals_json(const KdStep& s, const json& j, size_t row) {
  SCOPED_TRACE("row " + std::to_string(row));
  EXPECT_EQ(as_i64(j["prompt_idx"]), s.prompt_idx);
  EXPECT_EQ(j["step_idx"].get<int32_t>(), s.step_idx);
  EXPECT_EQ(j["teacher_sample_id"].get<int32_t>(), s.teacher_sample_id);
  EXPECT_EQ(j["teacher_sample_text"].get<std::string>(), s.teacher_sample_text);
  ASSERT_EQ(j["topk_ids"].size(), s.topk_ids.size());
  for (size_t k = 0; k < s.topk_ids.size(); k++) {
    EXPECT_EQ(j["topk_ids"][k].get<int32_t>(), s.topk_ids[k]);
    EXPECT_EQ((float)j["topk_logprobs"][k].get<double>(), s.topk_logprobs[k]);
    EXPECT_EQ(j["raw_topk_tokens"][k].get<std::string>(), s.raw_topk_tokens[k]);
    EXPECT_EQ((float)j["raw_topk_logprobs"][k].get<double>(), s.raw_topk_logprobs[k]);
  }
  EXPECT_EQ((float)j["other_logprob"].get<double>(), s.other_logprob);
  EXPECT_EQ(j["is_struct_token"].get<bool>(), s.is_struct_token);
  EXPECT_EQ(j["template_hash"].get<std::string>(), s.template_hash);
  EXPECT_EQ(j["tokenizer_hash"].get<std::string>(), s.tokenizer_hash);
  EXPECT_EQ((float)j["teacher_sample_logprob"].get<double>(), s.teacher_sample_logprob);
  EXPECT_EQ(j["byte_offset"].get<int32_t>(), s.byte_offset);
  EXPECT_EQ(j["valid"].get<bool>(), s.valid);
}

// Sums bitkd computes from a column, to compare with DuckDB's (see the script).
struct Sums {
  double count = 0, len = 0, total = 0;
  bool has_total = false;
};

Sums column_sums(const ColumnData& c) {
  Sums s;
  s.has_total = true;
  auto value = [&](int64_t k) -> double {
    switch (c.type) {
      case Type::BOOL: return c.b[k] ? 1 : 0;
      case Type::INT32: return c.i32[k];
      case Type::INT64: return (double)c.i64[k];
      case Type::FLOAT: return c.f32[k];
      case Type::DOUBLE: return c.f64[k];
      default: return (double)c.str(k).size();
    }
  };
  for (int64_t r = 0; r < c.num_rows(); r++) {
    if (!c.is_valid(r)) continue;
    s.count++;
    if (!c.list) {
      s.total += value(r);
      continue;
    }
    s.len += (double)(c.offsets[r + 1] - c.offsets[r]);
    for (int64_t k = c.offsets[r]; k < c.offsets[r + 1]; k++)
      if (c.elem_is_valid(k)) s.total += value(k);
  }
  return s;
}

Status read_whole_column(Reader& r, int col, ColumnData* out) {
  *out = make_column(r.columns()[col].spec.type, r.columns()[col].spec.list);
  for (int g = 0; g < r.num_row_groups(); g++) {
    ColumnData part;
    BK_TRY(r.read_column(g, col, &part));
    append_rows(out, part, 0, part.num_rows());
  }
  return ok_status();
}

void expect_close(double got, double want, const std::string& what) {
  EXPECT_NEAR(got, want, 1e-9 * std::max(1.0, std::fabs(want))) << what;
}

// Compares bitkd's sums of every column of `path` with DuckDB's.
void expect_sums_match(const std::string& path, const json& duck_sums) {
  Reader r;
  Status st = r.open(path);
  ASSERT_TRUE(st.ok()) << st.msg;
  for (const ColumnInfo& ci : r.columns()) {
    ASSERT_TRUE(duck_sums.contains(ci.spec.name)) << ci.spec.name;
    const json& d = duck_sums[ci.spec.name];
    ColumnData c;
    st = read_whole_column(r, r.find_column(ci.spec.name), &c);
    ASSERT_TRUE(st.ok()) << st.msg;
    Sums s = column_sums(c);
    expect_close(s.count, d["count"].get<double>(), ci.spec.name + " count");
    if (ci.spec.list) {
      expect_close(s.len, d["len"].get<double>(), ci.spec.name + " list lengths");
      expect_close(s.total, d["elements"].is_null() ? 0.0 : d["elements"].get<double>(), ci.spec.name + " elements");
    } else {
      expect_close(s.total, d["total"].is_null() ? 0.0 : d["total"].get<double>(), ci.spec.name + " total");
    }
  }
}

}  // namespace

TEST(ParquetDuckDB, DuckDBReadsBitkdKdShards) {
  std::string why;
  ASSERT_TRUE(duckdb_ready(&why)) << why;
  std::string dir = bk_test::scratch_dir("pq_duckdb_kd");
  std::mt19937 g(21);
  std::vector<KdStep> steps;
  for (int p = 0; p < 60; p++)
    for (int t = 0; t < 50; t++) steps.push_back(make_step(g, p, t));
  KdMeta meta;
  meta.tokenizer_hash = "tk01";
  meta.teacher_model = "gpt-4o-mini";
  meta.teacher_temperature = 0.8;
  meta.teacher_top_p = 0.95;
  meta.template_text = "<|user|>\n{prompt}\n\n<|assistant|>\n";

  struct Variant { const char* name; Codec codec; bool v2; };
  const Variant variants[] = {{"kd_shard_000.parquet", Codec::ZSTD, false}, {"kd_shard_001.parquet", Codec::SNAPPY, true},
                              {"kd_shard_002.parquet", Codec::UNCOMPRESSED, false}};
  for (const Variant& v : variants) {
    SCOPED_TRACE(v.name);
    std::string path = path_join(dir, v.name);
    KdWriterOptions o;
    o.codec = v.codec;
    o.page_v2 = v.v2;
    o.row_group_rows = 700;
    KdStepWriter w;
    ASSERT_TRUE(w.open(path, meta, o).ok());
    for (const KdStep& s : steps) ASSERT_TRUE(w.append(s).ok());
    ASSERT_TRUE(w.close().ok());

    json j = run_duckdb("read", path, path + ".json");
    ASSERT_TRUE(j.is_object());
    EXPECT_EQ(j["rows"].get<size_t>(), steps.size());
    std::string types;
    for (const json& t : j["types"])
      types += t["column_name"].get<std::string>() + ":" + t["column_type"].get<std::string>() + " ";
    EXPECT_EQ(types,
              "prompt_idx:BIGINT step_idx:INTEGER teacher_sample_id:INTEGER teacher_sample_text:VARCHAR "
              "topk_ids:INTEGER[] topk_logprobs:FLOAT[] other_logprob:FLOAT is_struct_token:BOOLEAN "
              "template_hash:VARCHAR tokenizer_hash:VARCHAR teacher_sample_logprob:FLOAT byte_offset:INTEGER "
              "valid:BOOLEAN raw_topk_tokens:VARCHAR[] raw_topk_logprobs:FLOAT[] ");
    std::map<std::string, std::string> kv;
    for (const json& e : j["kv"]) kv[e["key"].get<std::string>()] = e["value"].get<std::string>();
    EXPECT_EQ(kv["bitkd_schema_version"], kKdSchemaVersion);
    EXPECT_EQ(kv["bitkd_tokenizer_hash"], "tk01");
    EXPECT_EQ(kv["bitkd_teacher_model"], "gpt-4o-mini");
    EXPECT_EQ(kv["bitkd_teacher_temperature"], "0.8");
    EXPECT_EQ(kv["bitkd_teacher_top_p"], "0.95");
    EXPECT_EQ(kv["bitkd_template"], meta.template_text);
    std::set<std::string> codecs;
    for (const json& c : j["chunks"]) codecs.insert(c["compression"].get<std::string>());
    EXPECT_EQ(codecs, (std::set<std::string>{v.codec == Codec::ZSTD     ? "ZSTD"
                                             : v.codec == Codec::SNAPPY ? "SNAPPY"
                                                                        : "UNCOMPRESSED"}));
    ASSERT_EQ(j["data"].size(), steps.size());
    for (size_t i = 0; i < steps.size(); i++) expect_step_equals_json(steps[i], j["data"][i], i);
    // Row counts, list lengths and value sums as DuckDB computes them.
    const json& sums = j["sums"];
    double ids = 0, lps = 0, lens = 0, raw_bytes = 0;
    for (const KdStep& s : steps) {
      lens += (double)s.topk_ids.size();
      for (int32_t x : s.topk_ids) ids += x;
      for (float x : s.topk_logprobs) lps += x;
      for (const std::string& t : s.raw_topk_tokens) raw_bytes += (double)t.size();
    }
    expect_close(sums["topk_ids"]["len"].get<double>(), lens, "topk_ids lengths");
    expect_close(sums["topk_logprobs"]["len"].get<double>(), lens, "topk_logprobs lengths");
    expect_close(sums["topk_ids"]["elements"].get<double>(), ids, "topk_ids sum");
    expect_close(sums["topk_logprobs"]["elements"].get<double>(), lps, "topk_logprobs sum");
    expect_close(sums["raw_topk_tokens"]["elements"].get<double>(), raw_bytes, "raw token bytes");
    expect_sums_match(path, sums);
  }
}

TEST(ParquetDuckDB, DuckDBReadsBitkdNullsAndEmptyLists) {
  std::string why;
  ASSERT_TRUE(duckdb_ready(&why)) << why;
  std::string dir = bk_test::scratch_dir("pq_duckdb_nulls");
  Schema s = {{"a", Type::INT32, false, true},      {"l", Type::INT32, true, true, true},
              {"s", Type::STRING, false, true},     {"ls", Type::STRING, true, false, false},
              {"b", Type::BOOL, false, true},       {"d", Type::DOUBLE},
              {"lf", Type::FLOAT, true, true, false}, {"i64", Type::INT64, false, true}};
  std::vector<ColumnData> cols;
  for (const ColumnSpec& c : s) cols.push_back(make_column(c.type, c.list));
  const int n = 900;
  for (int r = 0; r < n; r++) {
    if (r % 4 == 0) push_null(&cols[0]); else push_i32(&cols[0], r - 400);
    if (r % 6 == 0) {
      push_null_list(&cols[1]);
    } else {
      for (int k = 0; k < r % 5; k++) {
        if ((r + k) % 7 == 0) push_null(&cols[1]); else push_i32(&cols[1], r * 10 + k);
      }
      end_list(&cols[1]);
    }
    if (r % 9 == 0) push_null(&cols[2]); else push_str(&cols[2], "s" + std::to_string(r % 13));
    for (int k = 0; k < r % 3; k++) push_str(&cols[3], "x" + std::to_string(k));
    end_list(&cols[3]);
    if (r % 10 == 0) push_null(&cols[4]); else push_bool(&cols[4], r % 3 == 0);
    push_f64(&cols[5], r * 0.125);
    if (r % 8 == 0) {
      push_null_list(&cols[6]);
    } else {
      for (int k = 0; k < r % 4; k++) push_f32(&cols[6], (float)k - 0.5f);
      end_list(&cols[6]);
    }
    if (r % 3 == 0) push_null(&cols[7]); else push_i64(&cols[7], (int64_t)r << 33);
  }
  for (int v2 = 0; v2 < 2; v2++) {
    SCOPED_TRACE(v2 ? "page v2" : "page v1");
    std::string path = path_join(dir, v2 ? "nulls_v2.parquet" : "nulls_v1.parquet");
    WriterOptions o;
    o.page_v2 = v2;
    o.codec = v2 ? Codec::SNAPPY : Codec::ZSTD;
    o.row_group_rows = 250;
    o.page_bytes = 2000;
    Writer w;
    ASSERT_TRUE(w.open(path, s, o).ok());
    ASSERT_TRUE(w.write(cols).ok());
    ASSERT_TRUE(w.close().ok());
    json j = run_duckdb("read", path, path + ".json");
    ASSERT_TRUE(j.is_object());
    ASSERT_EQ(j["data"].size(), (size_t)n);
    for (int r = 0; r < n; r++) {
      const json& row = j["data"][r];
      SCOPED_TRACE("row " + std::to_string(r));
      EXPECT_EQ(row["a"].is_null(), !cols[0].is_valid(r));
      if (cols[0].is_valid(r)) {
        EXPECT_EQ(row["a"].get<int32_t>(), cols[0].i32[r]);
      }
      ASSERT_EQ(row["l"].is_null(), !cols[1].is_valid(r));
      if (cols[1].is_valid(r)) {
        ASSERT_EQ((int64_t)row["l"].size(), cols[1].offsets[r + 1] - cols[1].offsets[r]);
        for (int64_t k = cols[1].offsets[r], i = 0; k < cols[1].offsets[r + 1]; k++, i++) {
          EXPECT_EQ(row["l"][i].is_null(), !cols[1].elem_is_valid(k));
          if (cols[1].elem_is_valid(k)) {
            EXPECT_EQ(row["l"][i].get<int32_t>(), cols[1].i32[k]);
          }
        }
      }
      EXPECT_EQ(row["s"].is_null(), !cols[2].is_valid(r));
      if (cols[2].is_valid(r)) {
        EXPECT_EQ(row["s"].get<std::string>(), cols[2].str(r));
      }
      EXPECT_EQ((int64_t)row["ls"].size(), cols[3].offsets[r + 1] - cols[3].offsets[r]);
      EXPECT_EQ(row["b"].is_null(), !cols[4].is_valid(r));
      if (cols[4].is_valid(r)) {
        EXPECT_EQ(row["b"].get<bool>(), cols[4].b[r] != 0);
      }
      EXPECT_EQ(row["d"].get<double>(), cols[5].f64[r]);
      EXPECT_EQ(row["lf"].is_null(), !cols[6].is_valid(r));
      EXPECT_EQ(row["i64"].is_null(), !cols[7].is_valid(r));
      if (cols[7].is_valid(r)) {
        EXPECT_EQ(as_i64(row["i64"]), cols[7].i64[r]);
      }
    }
    expect_sums_match(path, j["sums"]);
  }
}

TEST(ParquetDuckDB, BitkdReadsDuckDBDefaultAndZstdFiles) {
  std::string why;
  ASSERT_TRUE(duckdb_ready(&why)) << why;
  std::string dir = bk_test::scratch_dir("pq_duckdb_written");
  json j = run_duckdb("write", dir, path_join(dir, "written.json"));
  ASSERT_TRUE(j.is_object());
  ASSERT_EQ(j["files"].size(), 4u);
  for (const json& f : j["files"]) {
    std::string name = f["file"].get<std::string>();
    SCOPED_TRACE(name);
    std::string path = path_join(dir, name);
    Reader r;
    Status st = r.open(path);
    ASSERT_TRUE(st.ok()) << st.msg;
    EXPECT_EQ(r.num_row_groups(), f["row_groups"].get<int>());
    const json& agg = f["agg"];
    EXPECT_EQ((double)r.num_rows(), agg["rows"].get<double>());
    std::string types;
    for (const ColumnInfo& ci : r.columns()) types += ci.spec.name + ":" + ci.file_type + " ";
    // DuckDB marks every column and list element nullable.
    EXPECT_EQ(types,
              "id:int64? i32:int32? f:float? d:double? flag:bool? s:string? u:string? n_int:int32? "
              "li:list<int32?>? lf:list<float?>? ls:list<string?>? lb:list<bool?>? ");
    std::map<std::string, ColumnData> c;
    for (const ColumnInfo& ci : r.columns()) {
      st = read_whole_column(r, r.find_column(ci.spec.name), &c[ci.spec.name]);
      ASSERT_TRUE(st.ok()) << st.msg;
    }
    auto chk = [&](const char* col, double got, const char* key) { expect_close(got, agg[key].get<double>(), std::string(col) + " " + key); };
    chk("id", column_sums(c["id"]).total, "id_sum");
    chk("i32", column_sums(c["i32"]).total, "i32_sum");
    chk("f", column_sums(c["f"]).total, "f_sum");
    chk("d", column_sums(c["d"]).total, "d_sum");
    chk("flag", column_sums(c["flag"]).total, "flag_true");
    chk("s", column_sums(c["s"]).total, "s_bytes");
    chk("u", column_sums(c["u"]).total, "u_bytes");
    chk("n_int", column_sums(c["n_int"]).count, "n_int_count");
    chk("n_int", column_sums(c["n_int"]).total, "n_int_sum");
    chk("li", column_sums(c["li"]).count, "li_lists");
    chk("li", column_sums(c["li"]).len, "li_len");
    chk("li", column_sums(c["li"]).total, "li_sum");
    int64_t null_elems = 0;
    for (uint8_t v : c["li"].elem_valid) null_elems += v == 0;
    chk("li", (double)null_elems, "li_null_elems");
    chk("lf", column_sums(c["lf"]).len, "lf_len");
    chk("lf", column_sums(c["lf"]).total, "lf_sum");
    chk("ls", column_sums(c["ls"]).len, "ls_len");
    chk("ls", column_sums(c["ls"]).total, "ls_bytes");
    chk("lb", column_sums(c["lb"]).total, "lb_true");
    if (!f.contains("data")) continue;
    // Small files: every value of every row.
    const json& data = f["data"];
    ASSERT_EQ((int64_t)data.size(), r.num_rows());
    for (int64_t i = 0; i < r.num_rows(); i++) {
      const json& row = data[i];
      SCOPED_TRACE("row " + std::to_string(i));
      EXPECT_EQ(c["id"].i64[i], as_i64(row["id"]));
      EXPECT_EQ(c["i32"].i32[i], row["i32"].get<int32_t>());
      EXPECT_EQ(c["f"].f32[i], (float)row["f"].get<double>());
      EXPECT_EQ(c["d"].f64[i], row["d"].get<double>());
      EXPECT_EQ(c["flag"].b[i] != 0, row["flag"].get<bool>());
      EXPECT_EQ(c["s"].str(i), row["s"].get<std::string>());
      EXPECT_EQ(c["u"].str(i), row["u"].get<std::string>());
      EXPECT_EQ(!c["n_int"].is_valid(i), row["n_int"].is_null());
      if (!row["n_int"].is_null()) {
        EXPECT_EQ(c["n_int"].i32[i], row["n_int"].get<int32_t>());
      }
      const ColumnData& li = c["li"];
      ASSERT_EQ(!li.is_valid(i), row["li"].is_null());
      if (!row["li"].is_null()) {
        ASSERT_EQ((int64_t)row["li"].size(), li.offsets[i + 1] - li.offsets[i]);
        for (int64_t k = 0; k < li.offsets[i + 1] - li.offsets[i]; k++) {
          const json& e = row["li"][k];
          EXPECT_EQ(!li.elem_is_valid(li.offsets[i] + k), e.is_null());
          if (!e.is_null()) {
            EXPECT_EQ(li.i32[li.offsets[i] + k], e.get<int32_t>());
          }
        }
      }
      const ColumnData& ls = c["ls"];
      ASSERT_EQ((int64_t)row["ls"].size(), ls.offsets[i + 1] - ls.offsets[i]);
      for (int64_t k = 0; k < ls.offsets[i + 1] - ls.offsets[i]; k++)
        EXPECT_EQ(ls.str(ls.offsets[i] + k), row["ls"][k].get<std::string>());
      const ColumnData& lf = c["lf"];
      ASSERT_EQ((int64_t)row["lf"].size(), lf.offsets[i + 1] - lf.offsets[i]);
      for (int64_t k = 0; k < lf.offsets[i + 1] - lf.offsets[i]; k++)
        EXPECT_EQ(lf.f32[lf.offsets[i] + k], (float)row["lf"][k].get<double>());
    }
  }
}
