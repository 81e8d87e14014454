// ColumnData helpers and names shared by the reader and writer.
#include <cctype>

#include "data/parquet/parquet.h"

namespace bk::pq {

const char* type_name(Type t) {
  switch (t) {
    case Type::BOOL: return "bool";
    case Type::INT32: return "int32";
    case Type::INT64: return "int64";
    case Type::FLOAT: return "float";
    case Type::DOUBLE: return "double";
    case Type::STRING: return "string";
    case Type::BYTES: return "binary";
  }
  return "?";
}

const char* codec_name(Codec c) {
  switch (c) {
    case Codec::UNCOMPRESSED: return "uncompressed";
    case Codec::SNAPPY: return "snappy";
    case Codec::ZSTD: return "zstd";
  }
  return "?";
}

bool parse_codec(const std::string& name, Codec* out) {
  std::string s;
  for (char ch : name) s.push_back((char)tolower((unsigned char)ch));
  if (s == "uncompressed" || s == "none") *out = Codec::UNCOMPRESSED;
  else if (s == "snappy") *out = Codec::SNAPPY;
  else if (s == "zstd") *out = Codec::ZSTD;
  else return false;
  return true;
}

std::string spec_type_string(const ColumnSpec& c) {
  std::string t = type_name(c.type);
  if (c.list) {
    t = "list<" + t + (c.element_nullable ? "?" : "") + ">";
  }
  if (c.nullable) t += "?";
  return t;
}

int64_t ColumnData::num_slots() const {
  switch (type) {
    case Type::BOOL: return (int64_t)b.size();
    case Type::INT32: return (int64_t)i32.size();
    case Type::INT64: return (int64_t)i64.size();
    case Type::FLOAT: return (int64_t)f32.size();
    case Type::DOUBLE: return (int64_t)f64.size();
    case Type::STRING:
    case Type::BYTES: return str_off.empty() ? 0 : (int64_t)str_off.size() - 1;
  }
  return 0;
}

int64_t ColumnData::num_rows() const {
  if (list) return offsets.empty() ? 0 : (int64_t)offsets.size() - 1;
  return num_slots();
}

ColumnData make_column(Type type, bool list) {
  ColumnData c;
  c.type = type;
  c.list = list;
  clear_column(&c);
  return c;
}

void clear_column(ColumnData* c) {
  c->b.clear();
  c->i32.clear();
  c->i64.clear();
  c->f32.clear();
  c->f64.clear();
  c->bytes.clear();
  c->str_off.assign(1, 0);
  c->offsets.clear();
  if (c->list) c->offsets.push_back(0);
  c->valid.clear();
  c->elem_valid.clear();
}

// A null flat row or null element: keeps validity vectors dense once the
// first null appears (all earlier entries valid).
static void mark_slot(ColumnData* c, bool ok) {
  std::vector<uint8_t>& v = c->list ? c->elem_valid : c->valid;
  if (ok) {
    if (!v.empty()) v.push_back(1);
    return;
  }
  if (v.empty()) v.assign((size_t)c->num_slots(), 1);
  v.push_back(0);
}

void push_bool(ColumnData* c, bool v) { mark_slot(c, true); c->b.push_back(v ? 1 : 0); }
void push_i32(ColumnData* c, int32_t v) { mark_slot(c, true); c->i32.push_back(v); }
void push_i64(ColumnData* c, int64_t v) { mark_slot(c, true); c->i64.push_back(v); }
void push_f32(ColumnData* c, float v) { mark_slot(c, true); c->f32.push_back(v); }
void push_f64(ColumnData* c, double v) { mark_slot(c, true); c->f64.push_back(v); }

void push_str(ColumnData* c, std::string_view v) {
  mark_slot(c, true);
  c->bytes.append(v.data(), v.size());
  c->str_off.push_back((int64_t)c->bytes.size());
}

void push_null(ColumnData* c) {
  mark_slot(c, false);
  switch (c->type) {
    case Type::BOOL: c->b.push_back(0); break;
    case Type::INT32: c->i32.push_back(0); break;
    case Type::INT64: c->i64.push_back(0); break;
    case Type::FLOAT: c->f32.push_back(0); break;
    case Type::DOUBLE: c->f64.push_back(0); break;
    case Type::STRING:
    case Type::BYTES: c->str_off.push_back((int64_t)c->bytes.size()); break;
  }
}

void end_list(ColumnData* c) {
  if (!c->valid.empty()) c->valid.push_back(1);
  c->offsets.push_back(c->num_slots());
}

void push_null_list(ColumnData* c) {
  if (c->valid.empty()) c->valid.assign(c->offsets.size() - 1, 1);
  c->valid.push_back(0);
  c->offsets.push_back(c->num_slots());
}

template <typename T>
static void append_range(std::vector<T>* dst, const std::vector<T>& src, int64_t a, int64_t b) {
  dst->insert(dst->end(), src.begin() + a, src.begin() + b);
}

// Appends validity entries [a, b) of src_v (empty = all valid) after dst_n
// existing entries of dst_v.
static void append_valid(std::vector<uint8_t>* dst_v, int64_t dst_n, const std::vector<uint8_t>& src_v, int64_t a,
                         int64_t b) {
  if (src_v.empty()) {
    if (!dst_v->empty()) dst_v->insert(dst_v->end(), (size_t)(b - a), 1);
    return;
  }
  if (dst_v->empty()) dst_v->assign((size_t)dst_n, 1);
  append_range(dst_v, src_v, a, b);
}

void append_rows(ColumnData* dst, const ColumnData& src, int64_t row_begin, int64_t row_end) {
  int64_t s0 = row_begin, s1 = row_end;
  int64_t dst_rows = dst->num_rows(), dst_slots = dst->num_slots();
  if (src.list) {
    s0 = src.offsets[row_begin];
    s1 = src.offsets[row_end];
    for (int64_t r = row_begin; r < row_end; r++) dst->offsets.push_back(dst_slots + src.offsets[r + 1] - s0);
    append_valid(&dst->valid, dst_rows, src.valid, row_begin, row_end);
    append_valid(&dst->elem_valid, dst_slots, src.elem_valid, s0, s1);
  } else {
    append_valid(&dst->valid, dst_rows, src.valid, row_begin, row_end);
  }
  switch (src.type) {
    case Type::BOOL: append_range(&dst->b, src.b, s0, s1); break;
    case Type::INT32: append_range(&dst->i32, src.i32, s0, s1); break;
    case Type::INT64: append_range(&dst->i64, src.i64, s0, s1); break;
    case Type::FLOAT: append_range(&dst->f32, src.f32, s0, s1); break;
    case Type::DOUBLE: append_range(&dst->f64, src.f64, s0, s1); break;
    case Type::STRING:
    case Type::BYTES: {
      int64_t base = (int64_t)dst->bytes.size() - src.str_off[s0];
      dst->bytes.append(src.bytes, (size_t)src.str_off[s0], (size_t)(src.str_off[s1] - src.str_off[s0]));
      for (int64_t i = s0 + 1; i <= s1; i++) dst->str_off.push_back(src.str_off[i] + base);
      break;
    }
  }
}

}  // namespace bk::pq
