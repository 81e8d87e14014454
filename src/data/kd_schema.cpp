#include "data/kd_schema.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace bk {

using pq::ColumnData;
using pq::ColumnSpec;
using pq::Type;

namespace {

ColumnSpec col(const char* name, Type t, bool list = false) {
  ColumnSpec c;
  c.name = name;
  c.type = t;
  c.list = list;
  return c;
}

// Step column order (kd_step_schema); the enum indexes buffers.
enum StepCol {
  S_PROMPT_IDX, S_STEP_IDX, S_SAMPLE_ID, S_SAMPLE_TEXT, S_TOPK_IDS, S_TOPK_LOGPROBS, S_OTHER, S_STRUCT,
  S_TEMPLATE_HASH, S_TOKENIZER_HASH, S_SAMPLE_LOGPROB, S_BYTE_OFFSET, S_VALID, S_RAW_TOKENS, S_RAW_LOGPROBS,
  S_NCOLS
};

enum PromptCol {
  P_PROMPT_IDX, P_PROMPT_TEXT, P_RENDERED, P_RESPONSE, P_FINISH, P_MODEL, P_PROVIDER, P_PROMPT_TOKENS,
  P_COMPLETION_TOKENS, P_LATENCY, P_TASK, P_REFERENCE, P_SOURCE, P_SCORE, P_NCOLS
};

const char* kKeyVersion = "bitkd_schema_version";
const char* kKeyTable = "bitkd_table";
const char* kKeyTokenizer = "bitkd_tokenizer_hash";
const char* kKeyModel = "bitkd_teacher_model";
const char* kKeyTemp = "bitkd_teacher_temperature";
const char* kKeyTopP = "bitkd_teacher_top_p";
const char* kKeyTemplate = "bitkd_template";

// Shortest of %.15g/%.17g that reads back exactly ("0.8", not "0.80000000000000004").
std::string fmt_double(double v) {
  char buf[64];
  snprintf(buf, sizeof buf, "%.15g", v);
  if (strtod(buf, nullptr) != v) snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

pq::KeyValues meta_to_kv(const KdMeta& m, const char* table) {
  pq::KeyValues kv;
  kv.emplace_back(kKeyVersion, kKdSchemaVersion);
  kv.emplace_back(kKeyTable, table);
  kv.emplace_back(kKeyTokenizer, m.tokenizer_hash);
  kv.emplace_back(kKeyModel, m.teacher_model);
  if (m.teacher_temperature >= 0) kv.emplace_back(kKeyTemp, fmt_double(m.teacher_temperature));
  if (m.teacher_top_p >= 0) kv.emplace_back(kKeyTopP, fmt_double(m.teacher_top_p));
  kv.emplace_back(kKeyTemplate, m.template_text);
  for (const auto& e : m.extra) kv.push_back(e);
  return kv;
}

Status meta_from_kv(const pq::Reader& r, KdMeta* m) {
  *m = KdMeta();
  for (const auto& [k, v] : r.key_values()) {
    if (k == kKeyVersion) {
      m->schema_version = v;
    } else if (k == kKeyTokenizer) {
      m->tokenizer_hash = v;
    } else if (k == kKeyModel) {
      m->teacher_model = v;
    } else if (k == kKeyTemplate) {
      m->template_text = v;
    } else if (k == kKeyTemp || k == kKeyTopP) {
      char* end = nullptr;
      double d = strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0')
        return errorf("%s: metadata %s is not a number: \"%s\"", r.path().c_str(), k.c_str(), v.c_str());
      (k == kKeyTemp ? m->teacher_temperature : m->teacher_top_p) = d;
    } else if (k != kKeyTable) {
      m->extra.emplace_back(k, v);
    }
  }
  if (!m->schema_version.empty() && m->schema_version != kKdSchemaVersion)
    return errorf("%s: KD schema version %s; this bitkd reads version %s (upgrade bitkd or re-collect the traces)",
                  r.path().c_str(), m->schema_version.c_str(), kKdSchemaVersion);
  return ok_status();
}

pq::WriterOptions writer_opts(const KdWriterOptions& o, int64_t default_rows, const KdMeta& m, const char* table) {
  pq::WriterOptions w;
  w.codec = o.codec;
  w.zstd_level = o.zstd_level;
  w.page_v2 = o.page_v2;
  w.row_group_rows = o.row_group_rows > 0 ? o.row_group_rows : default_rows;
  w.key_values = meta_to_kv(m, table);
  return w;
}

// Maps the expected schema onto the file's columns: a missing or mistyped
// column is an error naming it with the expected and found types.
Status map_columns(const pq::Reader& r, const pq::Schema& want, int optional_from, std::vector<int>* out) {
  out->assign(want.size(), -1);
  for (size_t i = 0; i < want.size(); i++) {
    const ColumnSpec& w = want[i];
    int c = r.find_column(w.name);
    if (c < 0) {
      if ((int)i >= optional_from) continue;
      return errorf("%s: column %s is missing (expected %s)", r.path().c_str(), w.name.c_str(),
                    pq::spec_type_string(w).c_str());
    }
    const pq::ColumnInfo& ci = r.columns()[c];
    if (!ci.unsupported.empty() || ci.spec.type != w.type || ci.spec.list != w.list)
      return errorf("%s: column %s has type %s, expected %s", r.path().c_str(), w.name.c_str(), ci.file_type.c_str(),
                    pq::spec_type_string(w).c_str());
    (*out)[i] = c;
  }
  return ok_status();
}

Status read_columns(pq::Reader& r, int rg, const std::vector<int>& map, std::vector<ColumnData>* cols) {
  cols->resize(map.size());
  for (size_t i = 0; i < map.size(); i++) {
    if (map[i] < 0) {
      (*cols)[i] = ColumnData();
      continue;
    }
    BK_TRY(r.read_column(rg, map[i], &(*cols)[i]));
  }
  return ok_status();
}

// A null in a column our rows cannot represent; returns the column name.
const char* null_at(const std::vector<ColumnData>& cols, const pq::Schema& sch, int64_t row) {
  for (size_t i = 0; i < cols.size(); i++) {
    const ColumnData& c = cols[i];
    if (c.list && c.offsets.empty()) continue;  // absent column
    if (!c.is_valid(row)) return sch[i].name.c_str();
    if (c.list && !c.elem_valid.empty())
      for (int64_t k = c.offsets[row]; k < c.offsets[row + 1]; k++)
        if (!c.elem_valid[k]) return sch[i].name.c_str();
  }
  return nullptr;
}

}  // namespace

pq::Schema kd_step_schema() {
  return {
      col("prompt_idx", Type::INT64),
      col("step_idx", Type::INT32),
      col("teacher_sample_id", Type::INT32),
      col("teacher_sample_text", Type::STRING),
      col("topk_ids", Type::INT32, true),
      col("topk_logprobs", Type::FLOAT, true),
      col("other_logprob", Type::FLOAT),
      col("is_struct_token", Type::BOOL),
      col("template_hash", Type::STRING),
      col("tokenizer_hash", Type::STRING),
      col("teacher_sample_logprob", Type::FLOAT),
      col("byte_offset", Type::INT32),
      col("valid", Type::BOOL),
      col("raw_topk_tokens", Type::STRING, true),
      col("raw_topk_logprobs", Type::FLOAT, true),
  };
}

pq::Schema kd_prompt_schema() {
  return {
      col("prompt_idx", Type::INT64),     col("prompt_text", Type::STRING),   col("rendered_prompt", Type::STRING),
      col("response_text", Type::STRING), col("finish_reason", Type::STRING), col("teacher_model", Type::STRING),
      col("provider", Type::STRING),      col("prompt_tokens", Type::INT32),  col("completion_tokens", Type::INT32),
      col("latency_ms", Type::DOUBLE),    col("task", Type::STRING),          col("reference", Type::STRING),
      col("source", Type::STRING),        col("score", Type::DOUBLE),
  };
}

std::string kd_shard_name(int index) {
  char buf[64];
  snprintf(buf, sizeof buf, "kd_shard_%03d.parquet", index);
  return buf;
}

std::string kd_prompts_name(int index) {
  char buf[64];
  snprintf(buf, sizeof buf, "kd_prompts_%03d.parquet", index);
  return buf;
}

bool kd_check_step(const KdStep& s, float tol, std::string* column, std::string* what) {
  auto bad = [&](const char* c, const std::string& w) {
    *column = c;
    *what = w;
    return false;
  };
  if (s.topk_ids.size() != s.topk_logprobs.size())
    return bad("topk_logprobs", "list has " + std::to_string(s.topk_logprobs.size()) + " entries but topk_ids has " +
                                    std::to_string(s.topk_ids.size()));
  if (s.raw_topk_tokens.size() != s.raw_topk_logprobs.size())
    return bad("raw_topk_logprobs", "list has " + std::to_string(s.raw_topk_logprobs.size()) +
                                        " entries but raw_topk_tokens has " + std::to_string(s.raw_topk_tokens.size()));
  if (!s.valid) return true;  // kept for the record; the loss ignores it
  auto check_lp = [&](float v, const char* c, int pos) {
    if (!(v <= tol)) {  // NaN or positive
      std::string where = pos >= 0 ? " at list position " + std::to_string(pos) : "";
      if (std::isnan(v)) return bad(c, "NaN logprob" + where);
      return bad(c, "positive logprob " + std::to_string(v) + where);
    }
    return true;
  };
  for (size_t k = 0; k < s.topk_logprobs.size(); k++)
    if (!check_lp(s.topk_logprobs[k], "topk_logprobs", (int)k)) return false;
  for (size_t k = 0; k < s.topk_ids.size(); k++)
    if (s.topk_ids[k] < 0) return bad("topk_ids", "negative token id " + std::to_string(s.topk_ids[k]) +
                                                      " at list position " + std::to_string(k));
  if (!check_lp(s.other_logprob, "other_logprob", -1)) return false;
  if (!check_lp(s.teacher_sample_logprob, "teacher_sample_logprob", -1)) return false;
  for (size_t k = 0; k < s.raw_topk_logprobs.size(); k++)
    if (!check_lp(s.raw_topk_logprobs[k], "raw_topk_logprobs", (int)k)) return false;
  return true;
}

// ---------------------------------------------------------------- writers

Status KdStepWriter::open(const std::string& path, const KdMeta& meta, const KdWriterOptions& opts) {
  return w.open(path, kd_step_schema(), writer_opts(opts, 65536, meta, "kd_steps"));
}

Status KdStepWriter::append(const KdStep& s) {
  if (!w.impl) return errorf("KD step writer is not open");
  if (s.topk_ids.size() != s.topk_logprobs.size())
    return errorf("KD step (prompt %lld, step %d): %zu topk_ids but %zu topk_logprobs", (long long)s.prompt_idx,
                  s.step_idx, s.topk_ids.size(), s.topk_logprobs.size());
  if (s.raw_topk_tokens.size() != s.raw_topk_logprobs.size())
    return errorf("KD step (prompt %lld, step %d): %zu raw_topk_tokens but %zu raw_topk_logprobs",
                  (long long)s.prompt_idx, s.step_idx, s.raw_topk_tokens.size(), s.raw_topk_logprobs.size());
  pq::push_i64(w.buffer(S_PROMPT_IDX), s.prompt_idx);
  pq::push_i32(w.buffer(S_STEP_IDX), s.step_idx);
  pq::push_i32(w.buffer(S_SAMPLE_ID), s.teacher_sample_id);
  pq::push_str(w.buffer(S_SAMPLE_TEXT), s.teacher_sample_text);
  ColumnData* ids = w.buffer(S_TOPK_IDS);
  ids->i32.insert(ids->i32.end(), s.topk_ids.begin(), s.topk_ids.end());
  pq::end_list(ids);
  ColumnData* lps = w.buffer(S_TOPK_LOGPROBS);
  lps->f32.insert(lps->f32.end(), s.topk_logprobs.begin(), s.topk_logprobs.end());
  pq::end_list(lps);
  pq::push_f32(w.buffer(S_OTHER), s.other_logprob);
  pq::push_bool(w.buffer(S_STRUCT), s.is_struct_token);
  pq::push_str(w.buffer(S_TEMPLATE_HASH), s.template_hash);
  pq::push_str(w.buffer(S_TOKENIZER_HASH), s.tokenizer_hash);
  pq::push_f32(w.buffer(S_SAMPLE_LOGPROB), s.teacher_sample_logprob);
  pq::push_i32(w.buffer(S_BYTE_OFFSET), s.byte_offset);
  pq::push_bool(w.buffer(S_VALID), s.valid);
  ColumnData* toks = w.buffer(S_RAW_TOKENS);
  for (const std::string& t : s.raw_topk_tokens) pq::push_str(toks, t);
  pq::end_list(toks);
  ColumnData* rlp = w.buffer(S_RAW_LOGPROBS);
  rlp->f32.insert(rlp->f32.end(), s.raw_topk_logprobs.begin(), s.raw_topk_logprobs.end());
  pq::end_list(rlp);
  return w.commit_rows();
}

Status KdStepWriter::close() { return w.close(); }

Status KdPromptWriter::open(const std::string& path, const KdMeta& meta, const KdWriterOptions& opts) {
  return w.open(path, kd_prompt_schema(), writer_opts(opts, 4096, meta, "kd_prompts"));
}

Status KdPromptWriter::append(const KdPrompt& p) {
  if (!w.impl) return errorf("KD prompt writer is not open");
  pq::push_i64(w.buffer(P_PROMPT_IDX), p.prompt_idx);
  pq::push_str(w.buffer(P_PROMPT_TEXT), p.prompt_text);
  pq::push_str(w.buffer(P_RENDERED), p.rendered_prompt);
  pq::push_str(w.buffer(P_RESPONSE), p.response_text);
  pq::push_str(w.buffer(P_FINISH), p.finish_reason);
  pq::push_str(w.buffer(P_MODEL), p.teacher_model);
  pq::push_str(w.buffer(P_PROVIDER), p.provider);
  pq::push_i32(w.buffer(P_PROMPT_TOKENS), p.prompt_tokens);
  pq::push_i32(w.buffer(P_COMPLETION_TOKENS), p.completion_tokens);
  pq::push_f64(w.buffer(P_LATENCY), p.latency_ms);
  pq::push_str(w.buffer(P_TASK), p.task);
  pq::push_str(w.buffer(P_REFERENCE), p.reference);
  pq::push_str(w.buffer(P_SOURCE), p.source);
  pq::push_f64(w.buffer(P_SCORE), p.score);
  return w.commit_rows();
}

Status KdPromptWriter::close() { return w.close(); }

// ---------------------------------------------------------------- readers

Status KdStepReader::open(const std::string& path, const KdReadOptions& opts) {
  opts_ = opts;
  stats_ = KdReadStats();
  BK_TRY(r.open(path));
  BK_TRY(meta_from_kv(r, &meta_));
  return map_columns(r, kd_step_schema(), opts.allow_missing_bitkd_columns ? kKdStepPocColumns : S_NCOLS, &col_);
}

Status KdStepReader::read_row_group(int rg, std::vector<KdStep>* rows) {
  rows->clear();
  std::vector<ColumnData> c;
  BK_TRY(read_columns(r, rg, col_, &c));
  const pq::Schema sch = kd_step_schema();
  const int64_t n = r.row_group_num_rows(rg);
  int64_t first_row = 0;
  for (int g = 0; g < rg; g++) first_row += r.row_group_num_rows(g);
  const bool has_bitkd[5] = {col_[S_SAMPLE_LOGPROB] >= 0, col_[S_BYTE_OFFSET] >= 0, col_[S_VALID] >= 0,
                             col_[S_RAW_TOKENS] >= 0, col_[S_RAW_LOGPROBS] >= 0};
  rows->reserve((size_t)n);
  auto reject = [&](int64_t i, const std::string& column, const std::string& what) -> Status {
    std::string msg = r.path() + ": row group " + std::to_string(rg) + ", column " + column + ", row " +
                      std::to_string(first_row + i) + ": " + what;
    if (!opts_.skip_bad_rows) return Status{msg};
    if (stats_.bad_rows == 0) stats_.first_bad = msg;
    stats_.bad_rows++;
    return ok_status();
  };
  for (int64_t i = 0; i < n; i++) {
    if (const char* cn = null_at(c, sch, i)) {
      BK_TRY(reject(i, cn, "null value (KD columns have no nulls)"));
      continue;
    }
    KdStep s;
    s.prompt_idx = c[S_PROMPT_IDX].i64[i];
    s.step_idx = c[S_STEP_IDX].i32[i];
    s.teacher_sample_id = c[S_SAMPLE_ID].i32[i];
    s.teacher_sample_text.assign(c[S_SAMPLE_TEXT].str(i));
    {
      const ColumnData& a = c[S_TOPK_IDS];
      s.topk_ids.assign(a.i32.begin() + a.offsets[i], a.i32.begin() + a.offsets[i + 1]);
      const ColumnData& b = c[S_TOPK_LOGPROBS];
      s.topk_logprobs.assign(b.f32.begin() + b.offsets[i], b.f32.begin() + b.offsets[i + 1]);
    }
    s.other_logprob = c[S_OTHER].f32[i];
    s.is_struct_token = c[S_STRUCT].b[i] != 0;
    s.template_hash.assign(c[S_TEMPLATE_HASH].str(i));
    s.tokenizer_hash.assign(c[S_TOKENIZER_HASH].str(i));
    s.teacher_sample_logprob = has_bitkd[0] ? c[S_SAMPLE_LOGPROB].f32[i] : 0.0f;
    s.byte_offset = has_bitkd[1] ? c[S_BYTE_OFFSET].i32[i] : -1;
    s.valid = has_bitkd[2] ? c[S_VALID].b[i] != 0 : true;
    if (has_bitkd[3]) {
      const ColumnData& t = c[S_RAW_TOKENS];
      s.raw_topk_tokens.reserve((size_t)(t.offsets[i + 1] - t.offsets[i]));
      for (int64_t k = t.offsets[i]; k < t.offsets[i + 1]; k++) s.raw_topk_tokens.emplace_back(t.str(k));
    }
    if (has_bitkd[4]) {
      const ColumnData& t = c[S_RAW_LOGPROBS];
      s.raw_topk_logprobs.assign(t.f32.begin() + t.offsets[i], t.f32.begin() + t.offsets[i + 1]);
    }
    std::string column, what;
    if (!kd_check_step(s, opts_.logprob_tolerance, &column, &what)) {
      BK_TRY(reject(i, column, what));
      continue;
    }
    rows->push_back(std::move(s));
  }
  stats_.rows_read += (int64_t)rows->size();
  return ok_status();
}

Status KdPromptReader::open(const std::string& path, const KdReadOptions& opts) {
  opts_ = opts;
  stats_ = KdReadStats();
  BK_TRY(r.open(path));
  BK_TRY(meta_from_kv(r, &meta_));
  // source and score came with schema version 2; older tables read as teacher samples, unscored.
  return map_columns(r, kd_prompt_schema(), P_SOURCE, &col_);
}

Status KdPromptReader::read_row_group(int rg, std::vector<KdPrompt>* rows) {
  rows->clear();
  std::vector<ColumnData> c;
  BK_TRY(read_columns(r, rg, col_, &c));
  const pq::Schema sch = kd_prompt_schema();
  const int64_t n = r.row_group_num_rows(rg);
  int64_t first_row = 0;
  for (int g = 0; g < rg; g++) first_row += r.row_group_num_rows(g);
  rows->reserve((size_t)n);
  for (int64_t i = 0; i < n; i++) {
    if (const char* cn = null_at(c, sch, i)) {
      std::string msg = r.path() + ": row group " + std::to_string(rg) + ", column " + cn + ", row " +
                        std::to_string(first_row + i) + ": null value (prompt columns have no nulls)";
      if (!opts_.skip_bad_rows) return Status{msg};
      if (stats_.bad_rows == 0) stats_.first_bad = msg;
      stats_.bad_rows++;
      continue;
    }
    KdPrompt p;
    p.prompt_idx = c[P_PROMPT_IDX].i64[i];
    p.prompt_text.assign(c[P_PROMPT_TEXT].str(i));
    p.rendered_prompt.assign(c[P_RENDERED].str(i));
    p.response_text.assign(c[P_RESPONSE].str(i));
    p.finish_reason.assign(c[P_FINISH].str(i));
    p.teacher_model.assign(c[P_MODEL].str(i));
    p.provider.assign(c[P_PROVIDER].str(i));
    p.prompt_tokens = c[P_PROMPT_TOKENS].i32[i];
    p.completion_tokens = c[P_COMPLETION_TOKENS].i32[i];
    p.latency_ms = c[P_LATENCY].f64[i];
    p.task.assign(c[P_TASK].str(i));
    p.reference.assign(c[P_REFERENCE].str(i));
    if (col_[P_SOURCE] >= 0) p.source.assign(c[P_SOURCE].str(i));
    if (col_[P_SCORE] >= 0) p.score = c[P_SCORE].f64[i];
    rows->push_back(std::move(p));
  }
  stats_.rows_read += (int64_t)rows->size();
  return ok_status();
}

}  // namespace bk
