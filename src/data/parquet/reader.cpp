// Parquet reader: parses the footer once, then decodes one column chunk at a
// time (read with pread, so memory is bounded by the largest chunk). Every
// length and offset from the file is checked before use: a corrupt file gives
// an error naming the row group, column and byte, never a crash.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>

#include "data/parquet/encoding.h"
#include "data/parquet/format.h"
#include "data/parquet/parquet.h"

namespace bk::pq {

namespace {

struct Node {
  int elem = 0;  // index into schema
  std::vector<int> children;
  int leaves = 0;
};

struct ColumnLayout {
  int leaf = 0;  // index of its leaf among the file's leaf columns
  int phys = -1;
  int max_def = 0, max_rep = 0;
  int d_list = 0;  // def level of a present, empty list
};

bool is_list_group(const fmt::SchemaElement& e) { return e.converted == fmt::CT_LIST || e.logical == fmt::LT_LIST; }

bool is_string_leaf(const fmt::SchemaElement& e) {
  return e.converted == fmt::CT_UTF8 || e.converted == fmt::CT_ENUM || e.converted == fmt::CT_JSON ||
         e.logical == fmt::LT_STRING || e.logical == fmt::LT_ENUM || e.logical == fmt::LT_JSON;
}

// Maps a leaf's physical type to ours; false (with *why) when unsupported.
bool leaf_type(const fmt::SchemaElement& e, Type* t, std::string* why) {
  switch (e.type) {
    case fmt::BOOLEAN: *t = Type::BOOL; return true;
    case fmt::INT32: *t = Type::INT32; return true;
    case fmt::INT64: *t = Type::INT64; return true;
    case fmt::FLOAT: *t = Type::FLOAT; return true;
    case fmt::DOUBLE: *t = Type::DOUBLE; return true;
    case fmt::BYTE_ARRAY: *t = is_string_leaf(e) ? Type::STRING : Type::BYTES; return true;
  }
  *why = std::string(fmt::phys_type_name(e.type)) + " values are not supported";
  return false;
}

size_t fixed_width(Type t) {
  switch (t) {
    case Type::INT32:
    case Type::FLOAT: return 4;
    case Type::INT64:
    case Type::DOUBLE: return 8;
    default: return 0;
  }
}

char* fixed_grow(ColumnData* c, int64_t n) {  // appends n zeroed values, returns their bytes
  switch (c->type) {
    case Type::INT32: c->i32.resize(c->i32.size() + n); return (char*)(c->i32.data() + c->i32.size() - n);
    case Type::INT64: c->i64.resize(c->i64.size() + n); return (char*)(c->i64.data() + c->i64.size() - n);
    case Type::FLOAT: c->f32.resize(c->f32.size() + n); return (char*)(c->f32.data() + c->f32.size() - n);
    case Type::DOUBLE: c->f64.resize(c->f64.size() + n); return (char*)(c->f64.data() + c->f64.size() - n);
    default: return nullptr;
  }
}

const char* fixed_ptr(const ColumnData& c) {
  switch (c.type) {
    case Type::INT32: return (const char*)c.i32.data();
    case Type::INT64: return (const char*)c.i64.data();
    case Type::FLOAT: return (const char*)c.f32.data();
    case Type::DOUBLE: return (const char*)c.f64.data();
    default: return nullptr;
  }
}

// Appends values [a, b) of the flat column v to out's value storage.
void append_vals(ColumnData* out, const ColumnData& v, int64_t a, int64_t b) {
  if (b <= a) return;
  if (v.type == Type::BOOL) {
    out->b.insert(out->b.end(), v.b.begin() + a, v.b.begin() + b);
  } else if (v.type == Type::STRING || v.type == Type::BYTES) {
    int64_t base = (int64_t)out->bytes.size() - v.str_off[a];
    out->bytes.append(v.bytes, (size_t)v.str_off[a], (size_t)(v.str_off[b] - v.str_off[a]));
    for (int64_t i = a + 1; i <= b; i++) out->str_off.push_back(v.str_off[i] + base);
  } else {
    size_t fw = fixed_width(v.type);
    memcpy(fixed_grow(out, b - a), fixed_ptr(v) + a * fw, (size_t)(b - a) * fw);
  }
}

void append_default(ColumnData* out) {
  switch (out->type) {
    case Type::BOOL: out->b.push_back(0); break;
    case Type::INT32: out->i32.push_back(0); break;
    case Type::INT64: out->i64.push_back(0); break;
    case Type::FLOAT: out->f32.push_back(0); break;
    case Type::DOUBLE: out->f64.push_back(0); break;
    default: out->str_off.push_back((int64_t)out->bytes.size()); break;
  }
}

Codec to_codec(int id, bool* ok) {
  *ok = true;
  if (id == fmt::SNAPPY) return Codec::SNAPPY;
  if (id == fmt::ZSTD) return Codec::ZSTD;
  if (id != fmt::UNCOMPRESSED) *ok = false;
  return Codec::UNCOMPRESSED;
}

}  // namespace

struct ReaderImpl {
  std::string path;
  int fd = -1;
  int64_t size = 0;
  int64_t data_end = 0;  // start of the footer
  fmt::FileMetaData meta;
  std::vector<ColumnInfo> cols;
  std::vector<ColumnLayout> layout;
  int n_leaves = 0;
  // scratch
  std::vector<uint8_t> chunk, page, values_raw;
  std::vector<uint8_t> rep, def;
  std::vector<uint32_t> idx;
  ColumnData vals, dict;

  ~ReaderImpl() {
    if (fd >= 0) ::close(fd);
  }

  Status read_at(int64_t off, size_t n, void* dst) const {
    size_t got = 0;
    while (got < n) {
      ssize_t r = pread(fd, (char*)dst + got, n - got, (off_t)(off + got));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return errorf("%s: read failed at byte %lld: %s", path.c_str(), (long long)(off + got),
                                r < 0 ? strerror(errno) : "unexpected end of file");
      got += (size_t)r;
    }
    return ok_status();
  }

  Status parse_schema();
  Status decode_values(int encoding, const uint8_t* p, size_t n, int64_t count, Type type, bool have_dict);
};

Status ReaderImpl::parse_schema() {
  const std::vector<fmt::SchemaElement>& s = meta.schema;
  if (s.empty()) return errorf("%s: the footer has an empty schema", path.c_str());
  // Rebuild the tree from its depth-first listing.
  std::vector<Node> nodes(s.size());
  size_t cursor = 1;
  std::vector<int> stack;
  std::function<Status(int, int)> build = [&](int id, int depth) -> Status {
    nodes[id].elem = id;
    if (depth > 64) return errorf("%s: schema nests deeper than 64 levels", path.c_str());
    int nc = s[id].num_children;
    if (nc < 0 || (size_t)nc > s.size()) return errorf("%s: schema element %s has %d children", path.c_str(), s[id].name.c_str(), nc);
    if (nc == 0 && id != 0) {
      if (s[id].type < 0) return errorf("%s: schema element %s has no type and no children", path.c_str(), s[id].name.c_str());
      nodes[id].leaves = 1;
      return ok_status();
    }
    for (int k = 0; k < nc; k++) {
      if (cursor >= s.size())
        return errorf("%s: schema is truncated (element %s expects %d children)", path.c_str(), s[id].name.c_str(), nc);
      int child = (int)cursor++;
      nodes[id].children.push_back(child);
      BK_TRY(build(child, depth + 1));
      nodes[id].leaves += nodes[child].leaves;
    }
    return ok_status();
  };
  BK_TRY(build(0, 0));
  if (cursor != s.size()) return errorf("%s: schema has %zu stray elements", path.c_str(), s.size() - cursor);
  n_leaves = nodes[0].leaves;

  int leaf = 0;
  for (int id : nodes[0].children) {
    const fmt::SchemaElement& e = s[id];
    ColumnInfo ci;
    ColumnLayout lay;
    lay.leaf = leaf;
    ci.spec.name = e.name;
    std::string why;
    const bool optional = e.repetition == fmt::OPTIONAL;
    if (nodes[id].children.empty()) {
      Type t;
      if (!leaf_type(e, &t, &why)) {
        ci.unsupported = why;
        ci.file_type = fmt::phys_type_name(e.type);
      } else if (e.repetition == fmt::REPEATED) {
        // Legacy: a bare repeated field is a required list of required values.
        ci.spec.type = t;
        ci.spec.list = true;
        lay.max_def = 1;
        lay.max_rep = 1;
        lay.d_list = 0;
      } else {
        ci.spec.type = t;
        ci.spec.nullable = optional;
        lay.max_def = optional ? 1 : 0;
      }
      lay.phys = e.type;
    } else if (is_list_group(e) && nodes[id].children.size() == 1 &&
               s[nodes[id].children[0]].repetition == fmt::REPEATED) {
      int rid = nodes[id].children[0];
      const fmt::SchemaElement& r = s[rid];
      int eid = -1;
      bool elem_optional = false;
      if (nodes[rid].children.empty()) {
        eid = rid;  // 2-level: the repeated field holds the values
      } else if (nodes[rid].children.size() == 1 && r.name != "array" && r.name != e.name + "_tuple") {
        eid = nodes[rid].children[0];
        if (!nodes[eid].children.empty()) {
          ci.unsupported = "nested list or list of struct";
          eid = -1;
        } else if (s[eid].repetition == fmt::REPEATED) {
          ci.unsupported = "nested list";
          eid = -1;
        } else {
          elem_optional = s[eid].repetition == fmt::OPTIONAL;
        }
      } else {
        ci.unsupported = "list of struct";
      }
      Type t;
      if (eid >= 0 && !leaf_type(s[eid], &t, &why)) {
        ci.unsupported = why;
        ci.file_type = std::string("list<") + fmt::phys_type_name(s[eid].type) + ">";
        eid = -1;
      }
      if (eid >= 0) {
        ci.spec.type = t;
        ci.spec.list = true;
        ci.spec.nullable = optional;
        ci.spec.element_nullable = elem_optional;
        lay.d_list = optional ? 1 : 0;
        lay.max_def = lay.d_list + 1 + (elem_optional ? 1 : 0);
        lay.max_rep = 1;
        lay.phys = s[eid].type;
      }
    } else {
      ci.unsupported = (e.converted == fmt::CT_MAP || e.logical == fmt::LT_MAP || e.converted == fmt::CT_MAP_KEY_VALUE)
                           ? "map"
                           : is_list_group(e) ? "list of an unsupported shape" : "struct";
    }
    if (ci.file_type.empty()) ci.file_type = ci.unsupported.empty() ? spec_type_string(ci.spec) : ci.unsupported;
    leaf += nodes[id].leaves;
    cols.push_back(ci);
    layout.push_back(lay);
  }
  return ok_status();
}

Status Reader::open(const std::string& path) {
  impl.reset();
  auto r = std::make_unique<ReaderImpl>();
  r->path = path;
  r->fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (r->fd < 0) return errorf("cannot open %s: %s", path.c_str(), strerror(errno));
  struct stat st;
  if (fstat(r->fd, &st) != 0) return errorf("cannot stat %s: %s", path.c_str(), strerror(errno));
  r->size = (int64_t)st.st_size;
  if (r->size < 12)
    return errorf("%s: not a Parquet file (only %lld bytes; truncated?)", path.c_str(), (long long)r->size);
  char head[4], tail[8];
  BK_TRY(r->read_at(0, 4, head));
  BK_TRY(r->read_at(r->size - 8, 8, tail));
  if (memcmp(head, "PARE", 4) == 0 || memcmp(tail + 4, "PARE", 4) == 0)
    return errorf("%s: the file is an encrypted Parquet file, which bitkd cannot read", path.c_str());
  if (memcmp(head, "PAR1", 4) != 0)
    return errorf("%s: not a Parquet file (it does not start with PAR1)", path.c_str());
  if (memcmp(tail + 4, "PAR1", 4) != 0)
    return errorf("%s: Parquet footer missing (file does not end with PAR1; truncated or still being written?)",
                  path.c_str());
  uint32_t flen;
  memcpy(&flen, tail, 4);
  if ((int64_t)flen > r->size - 12)
    return errorf("%s: footer length %u is larger than the file (%lld bytes); the file is truncated or corrupt",
                  path.c_str(), flen, (long long)r->size);
  r->data_end = r->size - 8 - flen;
  std::vector<uint8_t> footer(flen);
  BK_TRY(r->read_at(r->data_end, flen, footer.data()));
  std::string why;
  if (!fmt::decode_file_meta(footer.data(), footer.size(), &r->meta, &why))
    return errorf("%s: %s", path.c_str(), why.c_str());
  BK_TRY(r->parse_schema());
  int64_t sum = 0;
  for (size_t g = 0; g < r->meta.row_groups.size(); g++) {
    const fmt::RowGroup& rg = r->meta.row_groups[g];
    if ((int)rg.columns.size() != r->n_leaves)
      return errorf("%s: row group %zu has %zu column chunks, the schema has %d leaf columns", path.c_str(), g,
                    rg.columns.size(), r->n_leaves);
    if (rg.num_rows < 0) return errorf("%s: row group %zu has a negative row count", path.c_str(), g);
    sum += rg.num_rows;
  }
  if (sum != r->meta.num_rows)
    return errorf("%s: the row groups hold %lld rows but the footer says %lld", path.c_str(), (long long)sum,
                  (long long)r->meta.num_rows);
  impl = std::move(r);
  return ok_status();
}

Reader::Reader() = default;
Reader::~Reader() = default;

static const std::string kEmpty;
static const KeyValues kNoKv;
static const std::vector<ColumnInfo> kNoCols;

const std::string& Reader::path() const { return impl ? impl->path : kEmpty; }
const std::vector<ColumnInfo>& Reader::columns() const { return impl ? impl->cols : kNoCols; }
const KeyValues& Reader::key_values() const { return impl ? impl->meta.kv : kNoKv; }
const std::string& Reader::created_by() const { return impl ? impl->meta.created_by : kEmpty; }
int64_t Reader::num_rows() const { return impl ? impl->meta.num_rows : 0; }
int Reader::num_row_groups() const { return impl ? (int)impl->meta.row_groups.size() : 0; }

int64_t Reader::row_group_num_rows(int rg) const {
  if (!impl || rg < 0 || rg >= num_row_groups()) return 0;
  return impl->meta.row_groups[rg].num_rows;
}

int Reader::find_column(const std::string& name) const {
  if (!impl) return -1;
  for (size_t i = 0; i < impl->cols.size(); i++)
    if (impl->cols[i].spec.name == name) return (int)i;
  return -1;
}

const std::string* Reader::key_value(const std::string& key) const {
  if (!impl) return nullptr;
  for (const auto& kv : impl->meta.kv)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

Status Reader::chunk_info(int rg, int col, ColumnChunkInfo* out) const {
  if (!impl) return errorf("parquet reader is not open");
  if (rg < 0 || rg >= num_row_groups() || col < 0 || col >= (int)impl->cols.size())
    return errorf("%s: no row group %d / column %d", impl->path.c_str(), rg, col);
  const fmt::ColumnChunk& cc = impl->meta.row_groups[rg].columns[impl->layout[col].leaf];
  const fmt::ColumnMetaData& m = cc.meta;
  *out = ColumnChunkInfo();
  out->codec = to_codec(m.codec, &out->codec_supported);
  out->codec_label = fmt::codec_name(m.codec);
  for (int e : m.encodings) out->encodings.push_back(fmt::encoding_name(e));
  out->num_values = m.num_values;
  out->compressed_bytes = m.total_compressed_size;
  out->uncompressed_bytes = m.total_uncompressed_size;
  if (m.has_stats) {
    out->stats.has_min_max = m.stats.has_min && m.stats.has_max;
    out->stats.min = m.stats.min;
    out->stats.max = m.stats.max;
    out->stats.has_null_count = m.stats.has_null_count;
    out->stats.null_count = m.stats.null_count;
  }
  return ok_status();
}

// Decodes `count` non-null values in `encoding` from p[0..n) into vals.
Status ReaderImpl::decode_values(int encoding, const uint8_t* p, size_t n, int64_t count, Type type, bool have_dict) {
  clear_column(&vals);
  vals.type = type;
  vals.list = false;
  vals.str_off.assign(1, 0);
  auto fail = [&](const std::string& w) {
    return Status{w};
  };
  if (count == 0) return ok_status();
  if (encoding == fmt::PLAIN) {
    if (type == Type::BOOL) {
      if ((uint64_t)(count + 7) / 8 > n) return fail("PLAIN booleans truncated");
      vals.b.resize((size_t)count);
      for (int64_t i = 0; i < count; i++) vals.b[i] = (p[i >> 3] >> (i & 7)) & 1;
    } else if (type == Type::STRING || type == Type::BYTES) {
      size_t pos = 0;
      vals.str_off.reserve((size_t)count + 1);
      for (int64_t i = 0; i < count; i++) {
        if (n - pos < 4) return fail("PLAIN byte array length truncated at value " + std::to_string(i));
        uint32_t len;
        memcpy(&len, p + pos, 4);
        pos += 4;
        if (len > n - pos) return fail("PLAIN byte array value " + std::to_string(i) + " runs past the page end");
        vals.bytes.append((const char*)p + pos, len);
        vals.str_off.push_back((int64_t)vals.bytes.size());
        pos += len;
      }
    } else {
      size_t fw = fixed_width(type);
      if ((uint64_t)count * fw > n)
        return fail("PLAIN values truncated (" + std::to_string(n) + " bytes for " + std::to_string(count) + " values)");
      memcpy(fixed_grow(&vals, count), p, (size_t)count * fw);
    }
    return ok_status();
  }
  if (encoding == fmt::PLAIN_DICTIONARY || encoding == fmt::RLE_DICTIONARY) {
    if (!have_dict) return fail("dictionary-encoded page but the chunk has no dictionary page");
    if (n < 1) return fail("dictionary indices missing");
    int w = p[0];
    idx.resize((size_t)count);
    enc::RleDecoder d(p + 1, n - 1, w);
    std::string why;
    if (!d.decode(idx.data(), (size_t)count, &why)) return fail("dictionary indices: " + why);
    int64_t dn = dict.num_slots();
    for (int64_t i = 0; i < count; i++)
      if ((int64_t)idx[i] >= dn)
        return fail("dictionary index " + std::to_string(idx[i]) + " out of range (dictionary has " +
                    std::to_string(dn) + " values)");
    switch (type) {
      case Type::BOOL:
        vals.b.resize((size_t)count);
        for (int64_t i = 0; i < count; i++) vals.b[i] = dict.b[idx[i]];
        break;
      case Type::INT32:
        vals.i32.resize((size_t)count);
        for (int64_t i = 0; i < count; i++) vals.i32[i] = dict.i32[idx[i]];
        break;
      case Type::INT64:
        vals.i64.resize((size_t)count);
        for (int64_t i = 0; i < count; i++) vals.i64[i] = dict.i64[idx[i]];
        break;
      case Type::FLOAT:
        vals.f32.resize((size_t)count);
        for (int64_t i = 0; i < count; i++) vals.f32[i] = dict.f32[idx[i]];
        break;
      case Type::DOUBLE:
        vals.f64.resize((size_t)count);
        for (int64_t i = 0; i < count; i++) vals.f64[i] = dict.f64[idx[i]];
        break;
      default:
        vals.str_off.reserve((size_t)count + 1);
        for (int64_t i = 0; i < count; i++) {
          std::string_view v = dict.str(idx[i]);
          vals.bytes.append(v.data(), v.size());
          vals.str_off.push_back((int64_t)vals.bytes.size());
        }
    }
    return ok_status();
  }
  if (encoding == fmt::RLE && type == Type::BOOL) {
    if (n < 4) return fail("RLE booleans: length prefix truncated");
    uint32_t len;
    memcpy(&len, p, 4);
    if (len > n - 4) return fail("RLE booleans run past the page end");
    vals.b.resize((size_t)count);
    enc::RleDecoder d(p + 4, len, 1);
    std::string why;
    if (!d.decode_u8(vals.b.data(), (size_t)count, &why)) return fail("RLE booleans: " + why);
    return ok_status();
  }
  return fail(std::string("encoding ") + fmt::encoding_name(encoding) + " is not supported for " + type_name(type) +
              " values (bitkd reads PLAIN, dictionary and RLE booleans)");
}

Status Reader::read_column(int rg, int col, ColumnData* out) {
  if (!impl) return errorf("parquet reader is not open");
  ReaderImpl& R = *impl;
  if (rg < 0 || rg >= num_row_groups())
    return errorf("%s: row group %d does not exist (the file has %d)", R.path.c_str(), rg, num_row_groups());
  if (col < 0 || col >= (int)R.cols.size())
    return errorf("%s: column %d does not exist (the file has %zu)", R.path.c_str(), col, R.cols.size());
  const ColumnInfo& ci = R.cols[col];
  const ColumnLayout& lay = R.layout[col];
  const std::string& cname = ci.spec.name;
  auto err = [&](const std::string& what) {
    return Status{R.path + ": row group " + std::to_string(rg) + ", column " + cname + ": " + what};
  };
  if (!ci.unsupported.empty()) return err("cannot be read: " + ci.unsupported);
  const fmt::RowGroup& g = R.meta.row_groups[rg];
  const fmt::ColumnChunk& cc = g.columns[lay.leaf];
  if (cc.encrypted) return err("column is encrypted");
  if (!cc.file_path.empty()) return err("data lives in another file (" + cc.file_path + "), which bitkd does not follow");
  if (!cc.has_meta) return err("column chunk has no metadata");
  const fmt::ColumnMetaData& md = cc.meta;
  if (md.type != lay.phys)
    return err(std::string("chunk type ") + fmt::phys_type_name(md.type) + " differs from the schema's " +
               fmt::phys_type_name(lay.phys));
  bool codec_ok;
  to_codec(md.codec, &codec_ok);
  if (!codec_ok)
    return err(std::string("codec ") + fmt::codec_name(md.codec) +
               " is not supported (bitkd reads UNCOMPRESSED, SNAPPY, ZSTD; rewrite the file with one of them)");
  int64_t start = md.data_page_offset;
  if (md.dictionary_page_offset > 0 && md.dictionary_page_offset < start) start = md.dictionary_page_offset;
  int64_t len = md.total_compressed_size;
  if (start < 4 || len < 0 || start + len > R.data_end)
    return err("column chunk bytes " + std::to_string(start) + ".." + std::to_string(start + len) +
               " lie outside the data area (file truncated or corrupt)");
  R.chunk.resize((size_t)len);
  BK_TRY(with_context(R.read_at(start, (size_t)len, R.chunk.data()), "row group " + std::to_string(rg) + ", column " + cname));

  const Type type = ci.spec.type;
  *out = make_column(type, ci.spec.list);
  std::vector<uint8_t> row_valid, slot_valid;
  const bool is_list = ci.spec.list;
  const int max_def = lay.max_def, max_rep = lay.max_rep, d_list = lay.d_list;
  bool have_dict = false;
  int64_t levels_done = 0;
  int64_t rows = 0;
  size_t pos = 0;
  std::string why;
  while (pos < R.chunk.size() && levels_done < md.num_values) {
    const int64_t at = start + (int64_t)pos;
    fmt::PageHeader h;
    size_t hlen = 0;
    if (!fmt::decode_page_header(R.chunk.data() + pos, R.chunk.size() - pos, &h, &hlen, &why))
      return err(why + " at byte " + std::to_string(at));
    pos += hlen;
    if ((uint64_t)h.compressed_size > R.chunk.size() - pos)
      return err("page at byte " + std::to_string(at) + " runs past the end of the column chunk (" +
                 std::to_string(h.compressed_size) + " bytes declared, " + std::to_string(R.chunk.size() - pos) +
                 " left)");
    if (h.uncompressed_size > (1 << 30))
      return err("page at byte " + std::to_string(at) + " claims " + std::to_string(h.uncompressed_size) +
                 " bytes uncompressed; refusing (corrupt header?)");
    const uint8_t* body = R.chunk.data() + pos;
    const size_t body_len = (size_t)h.compressed_size;
    pos += body_len;
    auto perr = [&](const std::string& what) { return err(what + " (page at byte " + std::to_string(at) + ")"); };

    if (h.type == fmt::DICTIONARY_PAGE) {
      if (!h.has_dict_header) return perr("dictionary page without its header");
      if (h.dict_encoding != fmt::PLAIN && h.dict_encoding != fmt::PLAIN_DICTIONARY)
        return perr(std::string("dictionary page encoding ") + fmt::encoding_name(h.dict_encoding) + " is not supported");
      R.page.resize((size_t)h.uncompressed_size);
      if (!enc::decompress(md.codec, body, body_len, R.page.data(), R.page.size(), &why)) return perr(why);
      if (h.dict_num_values < 0) return perr("negative dictionary size");
      Status s = R.decode_values(fmt::PLAIN, R.page.data(), R.page.size(), h.dict_num_values, type, false);
      if (!s.ok()) return perr("dictionary: " + s.msg);
      std::swap(R.dict, R.vals);
      have_dict = true;
      continue;
    }
    if (h.type != fmt::DATA_PAGE && h.type != fmt::DATA_PAGE_V2) continue;  // index pages etc.
    const bool v2 = h.type == fmt::DATA_PAGE_V2;
    if (v2 ? !h.has_v2_header : !h.has_data_header) return perr("data page without its header");
    const int64_t nv = h.num_values;
    if (nv < 0 || nv > md.num_values - levels_done)
      return perr("page claims " + std::to_string(nv) + " values but the chunk has " +
                  std::to_string(md.num_values - levels_done) + " left");

    // Levels, then the values section.
    const uint8_t* vp;
    size_t vn;
    R.rep.assign((size_t)nv, 0);
    R.def.assign((size_t)nv, (uint8_t)max_def);
    const int rep_w = enc::bit_width((uint32_t)max_rep), def_w = enc::bit_width((uint32_t)max_def);
    if (v2) {
      if (h.rep_len < 0 || h.def_len < 0 || (uint64_t)h.rep_len + (uint64_t)h.def_len > body_len)
        return perr("level lengths exceed the page");
      if (max_rep) {
        enc::RleDecoder d(body, (size_t)h.rep_len, rep_w);
        if (!d.decode_u8(R.rep.data(), (size_t)nv, &why)) return perr("repetition levels: " + why);
      }
      if (max_def) {
        enc::RleDecoder d(body + h.rep_len, (size_t)h.def_len, def_w);
        if (!d.decode_u8(R.def.data(), (size_t)nv, &why)) return perr("definition levels: " + why);
      }
      size_t lv = (size_t)h.rep_len + (size_t)h.def_len;
      if (h.is_compressed && md.codec != fmt::UNCOMPRESSED) {
        if ((int64_t)h.uncompressed_size < (int64_t)lv) return perr("uncompressed size smaller than the levels");
        R.values_raw.resize((size_t)h.uncompressed_size - lv);
        if (!enc::decompress(md.codec, body + lv, body_len - lv, R.values_raw.data(), R.values_raw.size(), &why))
          return perr(why);
        vp = R.values_raw.data();
        vn = R.values_raw.size();
      } else {
        vp = body + lv;
        vn = body_len - lv;
      }
    } else {
      R.page.resize((size_t)h.uncompressed_size);
      if (!enc::decompress(md.codec, body, body_len, R.page.data(), R.page.size(), &why)) return perr(why);
      const uint8_t* p = R.page.data();
      size_t n = R.page.size();
      auto levels = [&](int encoding, int w, std::vector<uint8_t>* dst, const char* what) -> Status {
        if (encoding != fmt::RLE)
          return perr(std::string(what) + " level encoding " + fmt::encoding_name(encoding) + " is not supported");
        if (n < 4) return perr(std::string(what) + " levels truncated");
        uint32_t l;
        memcpy(&l, p, 4);
        if (l > n - 4) return perr(std::string(what) + " levels run past the page end");
        enc::RleDecoder d(p + 4, l, w);
        if (!d.decode_u8(dst->data(), (size_t)nv, &why)) return perr(std::string(what) + " levels: " + why);
        p += 4 + l;
        n -= 4 + l;
        return ok_status();
      };
      if (max_rep) BK_TRY(levels(h.rep_encoding, rep_w, &R.rep, "repetition"));
      if (max_def) BK_TRY(levels(h.def_encoding, def_w, &R.def, "definition"));
      vp = p;
      vn = n;
    }
    int64_t nonnull = 0;
    for (int64_t i = 0; i < nv; i++) {
      if (R.def[i] > max_def)
        return perr("definition level " + std::to_string(R.def[i]) + " exceeds the maximum " + std::to_string(max_def));
      if (R.rep[i] > max_rep)
        return perr("repetition level " + std::to_string(R.rep[i]) + " exceeds the maximum " + std::to_string(max_rep));
      nonnull += R.def[i] == max_def;
    }
    {
      Status s = R.decode_values(h.encoding, vp, vn, nonnull, type, have_dict);
      if (!s.ok()) return perr(s.msg);
    }
    // Assemble rows from levels.
    if (!is_list) {
      if (nonnull == nv) {
        append_vals(out, R.vals, 0, nv);
        row_valid.insert(row_valid.end(), (size_t)nv, 1);
      } else {
        int64_t k = 0;
        for (int64_t i = 0; i < nv; i++) {
          if (R.def[i] == max_def) {
            append_vals(out, R.vals, k, k + 1);
            k++;
            row_valid.push_back(1);
          } else {
            append_default(out);
            row_valid.push_back(0);
          }
        }
      }
      rows += nv;
    } else {
      int64_t k = 0;
      int64_t slots = out->num_slots();
      int64_t i = 0;
      while (i < nv) {
        if (R.rep[i] == 0) {
          if (rows > 0) out->offsets.push_back(slots);
          rows++;
          row_valid.push_back(R.def[i] >= d_list ? 1 : 0);
        } else if (rows == 0) {
          return perr("the first value continues a row (repetition level 1)");
        }
        uint8_t d = R.def[i];
        if (d <= d_list) {
          if (R.rep[i] != 0) return perr("a continued list entry has an empty-list level");
          i++;
          continue;
        }
        // Run of present values: copy in one go.
        if (d == max_def) {
          int64_t j = i + 1;
          while (j < nv && R.rep[j] == 1 && R.def[j] == max_def) j++;
          append_vals(out, R.vals, k, k + (j - i));
          k += j - i;
          slot_valid.insert(slot_valid.end(), (size_t)(j - i), 1);
          slots += j - i;
          i = j;
        } else {
          append_default(out);
          slot_valid.push_back(0);
          slots++;
          i++;
        }
      }
    }
    levels_done += nv;
  }
  if (levels_done != md.num_values)
    return err("column chunk ended after " + std::to_string(levels_done) + " of " + std::to_string(md.num_values) +
               " values (truncated or corrupt)");
  if (is_list && rows > 0) out->offsets.push_back(out->num_slots());
  if (rows != g.num_rows)
    return err("decoded " + std::to_string(rows) + " rows, the row group has " + std::to_string(g.num_rows));
  if (std::find(row_valid.begin(), row_valid.end(), 0) != row_valid.end()) out->valid = std::move(row_valid);
  if (is_list && std::find(slot_valid.begin(), slot_valid.end(), 0) != slot_valid.end())
    out->elem_valid = std::move(slot_valid);
  return ok_status();
}

}  // namespace bk::pq
