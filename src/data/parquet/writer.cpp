// Parquet writer: rows are buffered per column until a row group fills, then
// each column chunk is encoded (levels, PLAIN or dictionary values), cut into
// pages at row boundaries, compressed and appended to a temp file. close()
// writes the footer and renames the temp file into place.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <unordered_map>

#include "core/fs.h"
#include "core/version.h"
#include "data/parquet/encoding.h"
#include "data/parquet/format.h"
#include "data/parquet/parquet.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "Parquet PLAIN values are little-endian; this code copies them as is");

namespace bk::pq {

namespace {

int phys_of(Type t) {
  switch (t) {
    case Type::BOOL: return fmt::BOOLEAN;
    case Type::INT32: return fmt::INT32;
    case Type::INT64: return fmt::INT64;
    case Type::FLOAT: return fmt::FLOAT;
    case Type::DOUBLE: return fmt::DOUBLE;
    case Type::STRING:
    case Type::BYTES: return fmt::BYTE_ARRAY;
  }
  return -1;
}

int codec_id(Codec c) {
  switch (c) {
    case Codec::UNCOMPRESSED: return fmt::UNCOMPRESSED;
    case Codec::SNAPPY: return fmt::SNAPPY;
    case Codec::ZSTD: return fmt::ZSTD;
  }
  return fmt::UNCOMPRESSED;
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

const void* fixed_data(const ColumnData& c) {
  switch (c.type) {
    case Type::INT32: return c.i32.data();
    case Type::INT64: return c.i64.data();
    case Type::FLOAT: return c.f32.data();
    case Type::DOUBLE: return c.f64.data();
    default: return nullptr;
  }
}

uint64_t fixed_bits(const ColumnData& c, int64_t s) {
  switch (c.type) {
    case Type::INT32: return (uint32_t)c.i32[s];
    case Type::INT64: return (uint64_t)c.i64[s];
    case Type::FLOAT: { uint32_t u; memcpy(&u, &c.f32[s], 4); return u; }
    case Type::DOUBLE: { uint64_t u; memcpy(&u, &c.f64[s], 8); return u; }
    default: return 0;
  }
}

// Levels of a column: def/rep maxima and the def value of a present, empty list.
struct Levels {
  int max_def = 0, max_rep = 0, d_list = 0;
};

Levels levels_of(const ColumnSpec& s) {
  Levels l;
  if (s.list) {
    l.d_list = s.nullable ? 1 : 0;
    l.max_def = l.d_list + 1 + (s.element_nullable ? 1 : 0);
    l.max_rep = 1;
  } else {
    l.max_def = s.nullable ? 1 : 0;
  }
  return l;
}

// Per-chunk min/max over non-null values, kept as PLAIN bytes.
struct StatsAcc {
  bool any = false;
  int64_t i_min = 0, i_max = 0;
  double d_min = 0, d_max = 0;
  std::string_view s_min, s_max;
  bool b_min = true, b_max = false;

  void add_int(int64_t v) {
    if (!any) { i_min = i_max = v; any = true; return; }
    if (v < i_min) i_min = v;
    if (v > i_max) i_max = v;
  }
  void add_double(double v) {
    if (std::isnan(v)) return;  // NaN has no place in an ordering
    if (!any) { d_min = d_max = v; any = true; return; }
    if (v < d_min) d_min = v;
    if (v > d_max) d_max = v;
  }
  void add_str(std::string_view v) {
    if (!any) { s_min = s_max = v; any = true; return; }
    if (v < s_min) s_min = v;
    if (v > s_max) s_max = v;
  }
  void add_bool(bool v) {
    any = true;
    b_min = b_min && v;
    b_max = b_max || v;
  }
};

constexpr size_t kStatMaxBytes = 64;

void finish_stats(Type t, const StatsAcc& a, int64_t nulls, fmt::Statistics* st) {
  st->has_null_count = true;
  st->null_count = nulls;
  if (!a.any) return;
  auto put = [](std::string* s, const void* p, size_t n) { s->assign((const char*)p, n); };
  switch (t) {
    case Type::BOOL: {
      uint8_t lo = a.b_min, hi = a.b_max;
      put(&st->min, &lo, 1);
      put(&st->max, &hi, 1);
      break;
    }
    case Type::INT32: {
      int32_t lo = (int32_t)a.i_min, hi = (int32_t)a.i_max;
      put(&st->min, &lo, 4);
      put(&st->max, &hi, 4);
      break;
    }
    case Type::INT64:
      put(&st->min, &a.i_min, 8);
      put(&st->max, &a.i_max, 8);
      break;
    case Type::FLOAT: {
      // The spec asks for -0.0 as a zero min and +0.0 as a zero max.
      float lo = a.d_min == 0 ? -0.0f : (float)a.d_min, hi = a.d_max == 0 ? 0.0f : (float)a.d_max;
      put(&st->min, &lo, 4);
      put(&st->max, &hi, 4);
      break;
    }
    case Type::DOUBLE: {
      double lo = a.d_min == 0 ? -0.0 : a.d_min, hi = a.d_max == 0 ? 0.0 : a.d_max;
      put(&st->min, &lo, 8);
      put(&st->max, &hi, 8);
      break;
    }
    case Type::STRING:
    case Type::BYTES: {
      // Long strings: a prefix is still a lower bound; for the upper bound,
      // bump the last byte that can be bumped.
      st->min.assign(a.s_min.substr(0, kStatMaxBytes));
      st->min_exact = a.s_min.size() <= kStatMaxBytes;
      if (a.s_max.size() <= kStatMaxBytes) {
        st->max.assign(a.s_max);
      } else {
        std::string m(a.s_max.substr(0, kStatMaxBytes));
        while (!m.empty() && (uint8_t)m.back() == 0xff) m.pop_back();
        if (m.empty()) {
          st->has_min = true;
          return;
        }
        m.back() = (char)((uint8_t)m.back() + 1);
        st->max = m;
        st->max_exact = false;
      }
      break;
    }
  }
  st->has_min = st->has_max = true;
}

}  // namespace

struct WriterImpl {
  std::string path, tmp;
  FILE* f = nullptr;
  Schema schema;
  WriterOptions opts;
  std::vector<ColumnData> buf;
  int64_t offset = 0;  // bytes written so far
  fmt::FileMetaData meta;
  bool closed = false;
  bool any_v2 = false;
  // scratch
  std::string page, cpage, levels_buf, values_buf, header;
  std::vector<uint8_t> rep, def;
  std::vector<uint32_t> dict_idx;
  std::vector<int64_t> dict_slots;  // first slot of each dictionary entry

  Status fail_io() { return errorf("%s: write failed (disk full?)", path.c_str()); }

  Status out(const std::string& s) {
    if (!s.empty() && fwrite(s.data(), 1, s.size(), f) != s.size()) return fail_io();
    offset += (int64_t)s.size();
    return ok_status();
  }

  Status check_shape(int col, const ColumnData& c) const;
  Status encode_chunk(int col, int64_t nrows, fmt::ColumnChunk* cc);
  Status write_page(int page_type, const std::string& body_levels, const std::string& body_values,
                    fmt::PageHeader h, int64_t* unc_total, int64_t* comp_total, int col);
  Status flush();
  int64_t buffered_rows() const { return buf.empty() ? 0 : buf[0].num_rows(); }
  int64_t buffered_bytes() const;
};

int64_t WriterImpl::buffered_bytes() const {
  int64_t n = 0;
  for (const ColumnData& c : buf) {
    n += (int64_t)(c.b.size() + c.i32.size() * 4 + c.i64.size() * 8 + c.f32.size() * 4 + c.f64.size() * 8 +
                   c.bytes.size() + c.str_off.size() * 4 + c.offsets.size());
  }
  return n;
}

Status WriterImpl::check_shape(int col, const ColumnData& c) const {
  const ColumnSpec& s = schema[col];
  if (c.type != s.type || c.list != s.list)
    return errorf("%s: column %s is %s but the data given is %s%s%s", path.c_str(), s.name.c_str(),
                  spec_type_string(s).c_str(), c.list ? "list<" : "", type_name(c.type), c.list ? ">" : "");
  int64_t slots = c.num_slots();
  int64_t rows = c.num_rows();
  if ((c.type == Type::STRING || c.type == Type::BYTES) &&
      (c.str_off.empty() || c.str_off.back() != (int64_t)c.bytes.size()))
    return errorf("%s: column %s: string offsets do not match the bytes (use push_str)", path.c_str(), s.name.c_str());
  if (c.list) {
    if (c.offsets.empty() || c.offsets[0] != 0 || c.offsets.back() != slots)
      return errorf("%s: column %s: list offsets do not match the %lld values (end each row with end_list)",
                    path.c_str(), s.name.c_str(), (long long)slots);
    if (!c.elem_valid.empty() && (int64_t)c.elem_valid.size() != slots)
      return errorf("%s: column %s: element validity has %zu entries for %lld values", path.c_str(), s.name.c_str(),
                    c.elem_valid.size(), (long long)slots);
  }
  if (!c.valid.empty() && (int64_t)c.valid.size() != rows)
    return errorf("%s: column %s: validity has %zu entries for %lld rows", path.c_str(), s.name.c_str(),
                  c.valid.size(), (long long)rows);
  return ok_status();
}

Status WriterImpl::write_page(int page_type, const std::string& body_levels, const std::string& body_values,
                              fmt::PageHeader h, int64_t* unc_total, int64_t* comp_total, int col) {
  std::string why;
  int codec = codec_id(opts.codec);
  h.type = page_type;
  if (page_type == fmt::DATA_PAGE_V2) {
    // v2: levels stay uncompressed in front of the (compressed) values.
    if (!enc::compress(codec, opts.zstd_level, body_values.data(), body_values.size(), &cpage, &why))
      return errorf("%s: column %s: %s", path.c_str(), schema[col].name.c_str(), why.c_str());
    h.is_compressed = codec != fmt::UNCOMPRESSED;
    h.uncompressed_size = (int32_t)(body_levels.size() + body_values.size());
    h.compressed_size = (int32_t)(body_levels.size() + cpage.size());
    header = fmt::encode_page_header(h);
    BK_TRY(out(header));
    BK_TRY(out(body_levels));
    BK_TRY(out(cpage));
  } else {
    page = body_levels;
    page += body_values;
    if (!enc::compress(codec, opts.zstd_level, page.data(), page.size(), &cpage, &why))
      return errorf("%s: column %s: %s", path.c_str(), schema[col].name.c_str(), why.c_str());
    h.uncompressed_size = (int32_t)page.size();
    h.compressed_size = (int32_t)cpage.size();
    header = fmt::encode_page_header(h);
    BK_TRY(out(header));
    BK_TRY(out(cpage));
  }
  *unc_total += (int64_t)header.size() + h.uncompressed_size;
  *comp_total += (int64_t)header.size() + h.compressed_size;
  return ok_status();
}

Status WriterImpl::encode_chunk(int col, int64_t nrows, fmt::ColumnChunk* cc) {
  const ColumnSpec& s = schema[col];
  const ColumnData& c = buf[col];
  const Levels lv = levels_of(s);
  const int64_t nslots = c.num_slots();
  const bool is_str = s.type == Type::STRING || s.type == Type::BYTES;
  const size_t fw = fixed_width(s.type);
  auto slot_ok = [&](int64_t slot, int64_t row) -> bool {
    return s.list ? c.elem_is_valid(slot) : c.is_valid(row);
  };

  // Nulls where the schema has none would silently change meaning.
  if (!s.nullable && !c.valid.empty()) {
    for (int64_t r = 0; r < nrows; r++)
      if (!c.valid[r])
        return errorf("%s: column %s, row %lld: null in a column that is not nullable", path.c_str(), s.name.c_str(),
                      (long long)(meta.num_rows + r));
  }
  if (s.list && !s.element_nullable && !c.elem_valid.empty()) {
    for (int64_t r = 0; r < nrows; r++)
      for (int64_t k = c.offsets[r]; k < c.offsets[r + 1]; k++)
        if (!c.elem_valid[k])
          return errorf("%s: column %s, row %lld: null list element but elements are not nullable", path.c_str(),
                        s.name.c_str(), (long long)(meta.num_rows + r));
  }
  if (s.list && !c.valid.empty()) {
    for (int64_t r = 0; r < nrows; r++)
      if (!c.valid[r] && c.offsets[r + 1] != c.offsets[r])
        return errorf("%s: column %s, row %lld: a null list cannot hold elements", path.c_str(), s.name.c_str(),
                      (long long)(meta.num_rows + r));
  }

  // Null and level counts; statistics come later (over the dictionary when
  // there is one: its entries are exactly the distinct values).
  StatsAcc acc;
  int64_t nulls = 0;
  int64_t n_levels = 0;
  {
    for (int64_t r = 0; r < nrows; r++) {
      int64_t a = s.list ? c.offsets[r] : r, b = s.list ? c.offsets[r + 1] : r + 1;
      if (s.list && a == b) {  // empty or null list: one level entry, no value
        nulls++;
        n_levels++;
        continue;
      }
      n_levels += b - a;
      const std::vector<uint8_t>& v = s.list ? c.elem_valid : c.valid;
      if (!v.empty())
        for (int64_t k = a; k < b; k++) nulls += v[k] == 0;
    }
  }
  auto add_stat = [&](int64_t k) {
    switch (s.type) {
      case Type::BOOL: acc.add_bool(c.b[k]); break;
      case Type::INT32: acc.add_int(c.i32[k]); break;
      case Type::INT64: acc.add_int(c.i64[k]); break;
      case Type::FLOAT: acc.add_double(c.f32[k]); break;
      case Type::DOUBLE: acc.add_double(c.f64[k]); break;
      default: acc.add_str(c.str(k)); break;
    }
  };

  // Dictionary: indices for non-null slots in slot order.
  bool use_dict = false;
  std::string dict_page;
  uint32_t dict_size = 0;
  dict_slots.clear();
  if (opts.dictionary && s.type != Type::BOOL && nslots > 0) {
    use_dict = true;
    dict_idx.clear();
    dict_idx.reserve((size_t)nslots);
    int64_t dict_bytes = 0, seen = 0;
    const double ratio = opts.dictionary_max_ratio;
    auto too_big = [&](int64_t processed) {
      return dict_bytes > opts.dictionary_max_bytes || (processed >= 4096 && dict_size > ratio * processed);
    };
    if (is_str) {
      std::unordered_map<std::string_view, uint32_t> m;
      for (int64_t r = 0, k = 0; k < nslots && use_dict; k++) {
        if (s.list) { while (c.offsets[r + 1] <= k) r++; } else { r = k; }
        if (!slot_ok(k, r)) continue;
        std::string_view v = c.str(k);
        auto it = m.find(v);
        if (it == m.end()) {
          it = m.emplace(v, dict_size++).first;
          dict_slots.push_back(k);
          uint32_t len = (uint32_t)v.size();
          dict_page.append((const char*)&len, 4);
          dict_page.append(v.data(), v.size());
          dict_bytes += 4 + (int64_t)v.size();
        }
        dict_idx.push_back(it->second);
        if ((++seen & 4095) == 0 && too_big(seen)) use_dict = false;
      }
    } else {
      std::unordered_map<uint64_t, uint32_t> m;
      const char* base = (const char*)fixed_data(c);
      for (int64_t r = 0, k = 0; k < nslots && use_dict; k++) {
        if (s.list) { while (c.offsets[r + 1] <= k) r++; } else { r = k; }
        if (!slot_ok(k, r)) continue;
        uint64_t bits = fixed_bits(c, k);
        auto it = m.find(bits);
        if (it == m.end()) {
          it = m.emplace(bits, dict_size++).first;
          dict_slots.push_back(k);
          dict_page.append(base + k * fw, fw);
          dict_bytes += (int64_t)fw;
        }
        dict_idx.push_back(it->second);
        if ((++seen & 4095) == 0 && too_big(seen)) use_dict = false;
      }
    }
    if (use_dict && (dict_bytes > opts.dictionary_max_bytes || dict_size > ratio * seen || dict_size == 0))
      use_dict = false;
  }

  if (opts.statistics) {
    if (use_dict) {
      for (int64_t k : dict_slots) add_stat(k);
    } else {
      for (int64_t r = 0; r < nrows; r++) {
        int64_t a = s.list ? c.offsets[r] : r, b = s.list ? c.offsets[r + 1] : r + 1;
        for (int64_t k = a; k < b; k++)
          if (slot_ok(k, r)) add_stat(k);
      }
    }
  }

  fmt::ColumnMetaData& md = cc->meta;
  cc->has_meta = true;
  md.type = phys_of(s.type);
  md.path = {s.name};
  if (s.list) {
    md.path.push_back("list");
    md.path.push_back("element");
  }
  md.codec = codec_id(opts.codec);
  md.num_values = n_levels;
  int64_t unc = 0, comp = 0;
  const int64_t chunk_start = offset;

  if (use_dict) {
    md.dictionary_page_offset = offset;
    fmt::PageHeader h;
    h.dict_num_values = (int32_t)dict_size;
    h.dict_encoding = fmt::PLAIN;
    BK_TRY(write_page(fmt::DICTIONARY_PAGE, std::string(), dict_page, h, &unc, &comp, col));
  }
  // v2 pages carry booleans RLE-encoded (as pyarrow does); v1 keeps PLAIN
  // bits for the oldest readers.
  const bool rle_bool = s.type == Type::BOOL && opts.page_v2;
  const int value_enc = use_dict ? fmt::RLE_DICTIONARY : rle_bool ? fmt::RLE : fmt::PLAIN;
  const int idx_width = use_dict ? std::max(1, enc::bit_width(dict_size - 1)) : 0;
  md.encodings = {value_enc};
  if (value_enc != fmt::RLE) md.encodings.push_back(fmt::RLE);
  if (use_dict) md.encodings.insert(md.encodings.begin(), fmt::PLAIN);
  md.data_page_offset = offset;

  // Pages at row boundaries, each about page_bytes of raw values.
  int64_t value_cursor = 0;  // index into dict_idx (non-null values so far)
  int64_t r0 = 0;
  while (r0 < nrows) {
    int64_t r1 = r0, est = 0;
    while (r1 < nrows && (r1 == r0 || est < opts.page_bytes)) {
      int64_t a = s.list ? c.offsets[r1] : r1, b = s.list ? c.offsets[r1 + 1] : r1 + 1;
      est += 1 + (is_str ? (c.str_off[b] - c.str_off[a]) + 4 * (b - a) : (int64_t)(fw ? fw : 1) * (b - a));
      r1++;
    }
    // Levels and values of rows [r0, r1).
    rep.clear();
    def.clear();
    values_buf.clear();
    int64_t page_nulls = 0, page_values = 0;
    std::vector<int64_t> value_slots;  // non-null slots (PLAIN path)
    for (int64_t r = r0; r < r1; r++) {
      if (s.list) {
        int64_t a = c.offsets[r], b = c.offsets[r + 1];
        if (a == b) {
          rep.push_back(0);
          def.push_back((uint8_t)(c.is_valid(r) ? lv.d_list : lv.d_list - 1));
          page_nulls++;
          continue;
        }
        for (int64_t k = a; k < b; k++) {
          rep.push_back(k == a ? 0 : 1);
          bool ok = c.elem_is_valid(k);
          def.push_back((uint8_t)(ok ? lv.max_def : lv.max_def - 1));
          if (ok) value_slots.push_back(k); else page_nulls++;
        }
      } else {
        bool ok = c.is_valid(r);
        if (lv.max_def) def.push_back(ok ? 1 : 0);
        if (ok) value_slots.push_back(r); else page_nulls++;
      }
    }
    page_values = (int64_t)value_slots.size();
    if (use_dict) {
      values_buf.push_back((char)idx_width);
      enc::rle_encode(dict_idx.data() + value_cursor, (size_t)page_values, idx_width, &values_buf);
      value_cursor += page_values;
    } else if (rle_bool) {
      std::vector<uint8_t> bits((size_t)page_values);
      for (int64_t i = 0; i < page_values; i++) bits[i] = c.b[value_slots[i]];
      values_buf.assign(4, '\0');
      enc::rle_encode_u8(bits.data(), bits.size(), 1, &values_buf);
      uint32_t len = (uint32_t)(values_buf.size() - 4);
      memcpy(&values_buf[0], &len, 4);
    } else if (s.type == Type::BOOL) {
      values_buf.assign((size_t)(page_values + 7) / 8, '\0');
      for (int64_t i = 0; i < page_values; i++)
        if (c.b[value_slots[i]]) values_buf[i >> 3] |= (char)(1 << (i & 7));
    } else if (is_str) {
      for (int64_t k : value_slots) {
        std::string_view v = c.str(k);
        uint32_t len = (uint32_t)v.size();
        values_buf.append((const char*)&len, 4);
        values_buf.append(v.data(), v.size());
      }
    } else {
      const char* base = (const char*)fixed_data(c);
      // Runs of consecutive slots go in one copy.
      int64_t i = 0;
      while (i < page_values) {
        int64_t j = i + 1;
        while (j < page_values && value_slots[j] == value_slots[j - 1] + 1) j++;
        values_buf.append(base + value_slots[i] * fw, (size_t)(j - i) * fw);
        i = j;
      }
    }
    int64_t n_entries = s.list ? (int64_t)rep.size() : (r1 - r0);
    if (n_entries > INT32_MAX)
      return errorf("%s: column %s: a page would hold %lld values; lower page_bytes", path.c_str(), s.name.c_str(),
                    (long long)n_entries);

    fmt::PageHeader h;
    h.num_values = (int32_t)n_entries;
    h.encoding = value_enc;
    levels_buf.clear();
    const int rep_w = enc::bit_width((uint32_t)lv.max_rep), def_w = enc::bit_width((uint32_t)lv.max_def);
    if (opts.page_v2) {
      if (lv.max_rep) enc::rle_encode_u8(rep.data(), rep.size(), rep_w, &levels_buf);
      h.rep_len = (int32_t)levels_buf.size();
      if (lv.max_def) enc::rle_encode_u8(def.data(), def.size(), def_w, &levels_buf);
      h.def_len = (int32_t)levels_buf.size() - h.rep_len;
      h.num_nulls = (int32_t)page_nulls;
      h.num_rows = (int32_t)(r1 - r0);
      any_v2 = true;
      BK_TRY(write_page(fmt::DATA_PAGE_V2, levels_buf, values_buf, h, &unc, &comp, col));
    } else {
      // v1: each level stream carries a 4-byte length prefix.
      auto put_levels = [&](const std::vector<uint8_t>& v, int w) {
        size_t at = levels_buf.size();
        levels_buf.append(4, '\0');
        enc::rle_encode_u8(v.data(), v.size(), w, &levels_buf);
        uint32_t len = (uint32_t)(levels_buf.size() - at - 4);
        memcpy(&levels_buf[at], &len, 4);
      };
      if (lv.max_rep) put_levels(rep, rep_w);
      if (lv.max_def) put_levels(def, def_w);
      BK_TRY(write_page(fmt::DATA_PAGE, levels_buf, values_buf, h, &unc, &comp, col));
    }
    r0 = r1;
  }
  md.total_uncompressed_size = unc;
  md.total_compressed_size = comp;
  cc->file_offset = chunk_start;
  if (opts.statistics) {
    md.has_stats = true;
    finish_stats(s.type, acc, nulls, &md.stats);
  }
  return ok_status();
}

Status WriterImpl::flush() {
  int64_t nrows = buffered_rows();
  if (nrows == 0) return ok_status();
  for (int i = 0; i < (int)buf.size(); i++) {
    BK_TRY(check_shape(i, buf[i]));
    if (buf[i].num_rows() != nrows)
      return errorf("%s: column %s has %lld rows, column %s has %lld", path.c_str(), schema[i].name.c_str(),
                    (long long)buf[i].num_rows(), schema[0].name.c_str(), (long long)nrows);
  }
  fmt::RowGroup rg;
  rg.num_rows = nrows;
  rg.file_offset = offset;
  rg.ordinal = (int)meta.row_groups.size();
  rg.columns.resize(buf.size());
  int64_t start = offset;
  for (int i = 0; i < (int)buf.size(); i++) {
    BK_TRY(encode_chunk(i, nrows, &rg.columns[i]));
    rg.total_byte_size += rg.columns[i].meta.total_uncompressed_size;
    clear_column(&buf[i]);
  }
  rg.total_compressed_size = offset - start;
  meta.row_groups.push_back(std::move(rg));
  meta.num_rows += nrows;
  return ok_status();
}

Writer::Writer() = default;
Writer::~Writer() { abort(); }

Status Writer::open(const std::string& path, const Schema& schema, const WriterOptions& opts) {
  abort();
  if (schema.empty()) return errorf("%s: a Parquet file needs at least one column", path.c_str());
  for (size_t i = 0; i < schema.size(); i++) {
    if (schema[i].name.empty()) return errorf("%s: column %zu has no name", path.c_str(), i);
    for (size_t j = 0; j < i; j++)
      if (schema[j].name == schema[i].name)
        return errorf("%s: column name %s appears twice", path.c_str(), schema[i].name.c_str());
  }
  if (opts.row_group_rows <= 0 || opts.page_bytes <= 0)
    return errorf("%s: row_group_rows and page_bytes must be positive", path.c_str());
  auto w = std::make_unique<WriterImpl>();
  w->path = path;
  w->schema = schema;
  w->opts = opts;
  std::string dir = path_dirname(path);
  if (!dir.empty() && dir != ".") BK_TRY(make_dirs(dir));
  w->tmp = temp_path_for(path);
  w->f = fopen(w->tmp.c_str(), "wb");
  if (!w->f) return errorf("cannot create %s: %s", w->tmp.c_str(), strerror(errno));
  setvbuf(w->f, nullptr, _IOFBF, 1 << 20);
  for (const ColumnSpec& s : schema) w->buf.push_back(make_column(s.type, s.list));
  BK_TRY(w->out("PAR1"));
  impl = std::move(w);
  return ok_status();
}

ColumnData* Writer::buffer(int col) {
  if (!impl || col < 0 || col >= (int)impl->buf.size()) return nullptr;
  return &impl->buf[col];
}

Status Writer::commit_rows() {
  if (!impl) return errorf("parquet writer is not open");
  WriterImpl& w = *impl;
  int64_t n = w.buf[0].num_rows();
  for (size_t i = 1; i < w.buf.size(); i++)
    if (w.buf[i].num_rows() != n)
      return errorf("%s: column %s has %lld rows, column %s has %lld", w.path.c_str(), w.schema[i].name.c_str(),
                    (long long)w.buf[i].num_rows(), w.schema[0].name.c_str(), (long long)n);
  if (n >= w.opts.row_group_rows || w.buffered_bytes() >= w.opts.row_group_bytes) return w.flush();
  return ok_status();
}

Status Writer::write(const std::vector<ColumnData>& cols) {
  if (!impl) return errorf("parquet writer is not open");
  WriterImpl& w = *impl;
  if (cols.size() != w.schema.size())
    return errorf("%s: %zu columns given, the schema has %zu", w.path.c_str(), cols.size(), w.schema.size());
  int64_t n = cols[0].num_rows();
  for (size_t i = 0; i < cols.size(); i++) {
    BK_TRY(w.check_shape((int)i, cols[i]));
    if (cols[i].num_rows() != n)
      return errorf("%s: column %s has %lld rows, column %s has %lld", w.path.c_str(), w.schema[i].name.c_str(),
                    (long long)cols[i].num_rows(), w.schema[0].name.c_str(), (long long)n);
  }
  int64_t pos = 0;
  while (pos < n) {
    int64_t take = std::min<int64_t>({n - pos, w.opts.row_group_rows - w.buffered_rows(), 16384});
    for (size_t i = 0; i < cols.size(); i++) append_rows(&w.buf[i], cols[i], pos, pos + take);
    pos += take;
    BK_TRY(commit_rows());
  }
  return ok_status();
}

Status Writer::flush_row_group() {
  if (!impl) return errorf("parquet writer is not open");
  BK_TRY(commit_rows());
  return impl->flush();
}

void Writer::set_key_value(const std::string& key, const std::string& value) {
  if (!impl) return;
  for (auto& kv : impl->opts.key_values)
    if (kv.first == key) {
      kv.second = value;
      return;
    }
  impl->opts.key_values.emplace_back(key, value);
}

Status Writer::close() {
  if (!impl) return errorf("parquet writer is not open");
  WriterImpl& w = *impl;
  Status st = commit_rows();
  if (st.ok()) st = w.flush();
  if (st.ok()) {
    fmt::FileMetaData& m = w.meta;
    m.version = w.any_v2 ? 2 : 1;
    m.created_by = std::string("bitkd version ") + BITKD_VERSION;
    m.kv = w.opts.key_values;
    m.column_orders = w.opts.statistics;
    fmt::SchemaElement root;
    root.name = "schema";
    root.repetition = fmt::REQUIRED;
    root.num_children = (int)w.schema.size();
    m.schema.push_back(root);
    for (const ColumnSpec& s : w.schema) {
      fmt::SchemaElement leaf;
      leaf.type = phys_of(s.type);
      if (s.type == Type::STRING) {
        leaf.converted = fmt::CT_UTF8;
        leaf.logical = fmt::LT_STRING;
      }
      if (s.list) {
        fmt::SchemaElement g;
        g.name = s.name;
        g.repetition = s.nullable ? fmt::OPTIONAL : fmt::REQUIRED;
        g.num_children = 1;
        g.converted = fmt::CT_LIST;
        g.logical = fmt::LT_LIST;
        m.schema.push_back(g);
        fmt::SchemaElement rep;
        rep.name = "list";
        rep.repetition = fmt::REPEATED;
        rep.num_children = 1;
        m.schema.push_back(rep);
        leaf.name = "element";
        leaf.repetition = s.element_nullable ? fmt::OPTIONAL : fmt::REQUIRED;
      } else {
        leaf.name = s.name;
        leaf.repetition = s.nullable ? fmt::OPTIONAL : fmt::REQUIRED;
      }
      m.schema.push_back(leaf);
    }
    std::string footer = fmt::encode_file_meta(m);
    uint32_t len = (uint32_t)footer.size();
    footer.append((const char*)&len, 4);
    footer += "PAR1";
    st = w.out(footer);
  }
  if (st.ok() && fflush(w.f) != 0) st = w.fail_io();
  if (fclose(w.f) != 0 && st.ok()) st = w.fail_io();
  w.f = nullptr;
  if (st.ok()) st = commit_temp_file(w.tmp, w.path);
  if (!st.ok()) {
    unlink(w.tmp.c_str());
    impl.reset();
    return st;
  }
  w.closed = true;
  return ok_status();
}

void Writer::abort() {
  if (!impl) return;
  if (impl->f) {
    fclose(impl->f);
    impl->f = nullptr;
  }
  if (!impl->closed) unlink(impl->tmp.c_str());
  impl.reset();
}

int64_t Writer::rows_written() const {
  if (!impl) return 0;
  return impl->meta.num_rows + impl->buffered_rows();
}

int64_t Writer::bytes_written() const { return impl ? impl->offset : 0; }

}  // namespace bk::pq
