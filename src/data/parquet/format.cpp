#include "data/parquet/format.h"

#include "data/parquet/thrift.h"

namespace bk::pq::fmt {

using namespace bk::pq::thrift;

const char* encoding_name(int e) {
  switch (e) {
    case PLAIN: return "PLAIN";
    case 1: return "GROUP_VAR_INT";
    case PLAIN_DICTIONARY: return "PLAIN_DICTIONARY";
    case RLE: return "RLE";
    case BIT_PACKED: return "BIT_PACKED";
    case DELTA_BINARY_PACKED: return "DELTA_BINARY_PACKED";
    case DELTA_LENGTH_BYTE_ARRAY: return "DELTA_LENGTH_BYTE_ARRAY";
    case DELTA_BYTE_ARRAY: return "DELTA_BYTE_ARRAY";
    case RLE_DICTIONARY: return "RLE_DICTIONARY";
    case BYTE_STREAM_SPLIT: return "BYTE_STREAM_SPLIT";
  }
  return "UNKNOWN_ENCODING";
}

const char* codec_name(int c) {
  switch (c) {
    case UNCOMPRESSED: return "UNCOMPRESSED";
    case SNAPPY: return "SNAPPY";
    case GZIP: return "GZIP";
    case LZO: return "LZO";
    case BROTLI: return "BROTLI";
    case LZ4: return "LZ4";
    case ZSTD: return "ZSTD";
    case LZ4_RAW: return "LZ4_RAW";
  }
  return "UNKNOWN_CODEC";
}

const char* phys_type_name(int t) {
  switch (t) {
    case BOOLEAN: return "BOOLEAN";
    case INT32: return "INT32";
    case INT64: return "INT64";
    case INT96: return "INT96";
    case FLOAT: return "FLOAT";
    case DOUBLE: return "DOUBLE";
    case BYTE_ARRAY: return "BYTE_ARRAY";
    case FIXED_LEN_BYTE_ARRAY: return "FIXED_LEN_BYTE_ARRAY";
  }
  return "group";
}

// ---------------------------------------------------------------- encode

static void put_stats(Encoder& e, int16_t id, const Statistics& s) {
  e.begin_struct(id);
  if (s.has_null_count) e.i64(3, s.null_count);
  if (s.has_max) e.binary(5, s.max);
  if (s.has_min) e.binary(6, s.min);
  if (s.has_max) e.boolean(7, s.max_exact);
  if (s.has_min) e.boolean(8, s.min_exact);
  e.end_struct();
}

std::string encode_file_meta(const FileMetaData& m) {
  Encoder e;
  e.i32(1, m.version);
  e.begin_list(2, T_STRUCT, (int64_t)m.schema.size());
  for (const SchemaElement& s : m.schema) {
    e.begin_elem_struct();
    if (s.type >= 0) e.i32(1, s.type);
    if (s.repetition >= 0) e.i32(3, s.repetition);
    e.binary(4, s.name);
    if (s.num_children > 0) e.i32(5, s.num_children);
    if (s.converted >= 0) e.i32(6, s.converted);
    if (s.logical >= 0) {
      e.begin_struct(10);
      e.begin_struct((int16_t)s.logical);  // StringType / ListType: empty structs
      e.end_struct();
      e.end_struct();
    }
    e.end_struct();
  }
  e.i64(3, m.num_rows);
  e.begin_list(4, T_STRUCT, (int64_t)m.row_groups.size());
  for (const RowGroup& rg : m.row_groups) {
    e.begin_elem_struct();
    e.begin_list(1, T_STRUCT, (int64_t)rg.columns.size());
    for (const ColumnChunk& cc : rg.columns) {
      e.begin_elem_struct();
      e.i64(2, cc.file_offset);
      const ColumnMetaData& md = cc.meta;
      e.begin_struct(3);
      e.i32(1, md.type);
      e.begin_list(2, T_I32, (int64_t)md.encodings.size());
      for (int x : md.encodings) e.elem_i32(x);
      e.begin_list(3, T_BINARY, (int64_t)md.path.size());
      for (const std::string& p : md.path) e.elem_binary(p);
      e.i32(4, md.codec);
      e.i64(5, md.num_values);
      e.i64(6, md.total_uncompressed_size);
      e.i64(7, md.total_compressed_size);
      e.i64(9, md.data_page_offset);
      if (md.dictionary_page_offset >= 0) e.i64(11, md.dictionary_page_offset);
      if (md.has_stats) put_stats(e, 12, md.stats);
      e.end_struct();
      e.end_struct();
    }
    e.i64(2, rg.total_byte_size);
    e.i64(3, rg.num_rows);
    if (rg.file_offset >= 0) e.i64(5, rg.file_offset);
    if (rg.total_compressed_size >= 0) e.i64(6, rg.total_compressed_size);
    if (rg.ordinal >= 0) {
      e.field_header(7, T_I16);
      e.varint(((uint64_t)rg.ordinal << 1));
    }
    e.end_struct();
  }
  if (!m.kv.empty()) {
    e.begin_list(5, T_STRUCT, (int64_t)m.kv.size());
    for (const auto& kv : m.kv) {
      e.begin_elem_struct();
      e.binary(1, kv.first);
      e.binary(2, kv.second);
      e.end_struct();
    }
  }
  if (!m.created_by.empty()) e.binary(6, m.created_by);
  if (m.column_orders) {
    int64_t leaves = 0;
    for (const SchemaElement& s : m.schema)
      if (s.num_children == 0 && s.type >= 0) leaves++;
    e.begin_list(7, T_STRUCT, leaves);
    for (int64_t i = 0; i < leaves; i++) {
      e.begin_elem_struct();
      e.begin_struct(1);  // TYPE_ORDER
      e.end_struct();
      e.end_struct();
    }
  }
  e.stop();
  return e.out;
}

std::string encode_page_header(const PageHeader& h) {
  Encoder e;
  e.i32(1, h.type);
  e.i32(2, h.uncompressed_size);
  e.i32(3, h.compressed_size);
  if (h.type == DATA_PAGE) {
    e.begin_struct(5);
    e.i32(1, h.num_values);
    e.i32(2, h.encoding);
    e.i32(3, h.def_encoding);
    e.i32(4, h.rep_encoding);
    e.end_struct();
  } else if (h.type == DICTIONARY_PAGE) {
    e.begin_struct(7);
    e.i32(1, h.dict_num_values);
    e.i32(2, h.dict_encoding);
    e.end_struct();
  } else if (h.type == DATA_PAGE_V2) {
    e.begin_struct(8);
    e.i32(1, h.num_values);
    e.i32(2, h.num_nulls);
    e.i32(3, h.num_rows);
    e.i32(4, h.encoding);
    e.i32(5, h.def_len);
    e.i32(6, h.rep_len);
    e.boolean(7, h.is_compressed);
    e.end_struct();
  }
  e.stop();
  return e.out;
}

// ---------------------------------------------------------------- decode

static void get_stats(Decoder& d, Statistics* s) {
  d.enter_struct();
  int16_t id;
  uint8_t t;
  bool have_new_min = false, have_new_max = false;
  while (d.next_field(&id, &t)) {
    if (id == 1 && t == T_BINARY) {  // deprecated max: only if no max_value
      std::string v = d.read_binary();
      if (!have_new_max) { s->max = v; s->has_max = true; }
    } else if (id == 2 && t == T_BINARY) {
      std::string v = d.read_binary();
      if (!have_new_min) { s->min = v; s->has_min = true; }
    } else if (id == 3 && t == T_I64) {
      s->null_count = d.read_i64();
      s->has_null_count = true;
    } else if (id == 5 && t == T_BINARY) {
      s->max = d.read_binary();
      s->has_max = have_new_max = true;
    } else if (id == 6 && t == T_BINARY) {
      s->min = d.read_binary();
      s->has_min = have_new_min = true;
    } else if (id == 7 && (t == T_TRUE || t == T_FALSE)) {
      s->max_exact = t == T_TRUE;
    } else if (id == 8 && (t == T_TRUE || t == T_FALSE)) {
      s->min_exact = t == T_TRUE;
    } else {
      d.skip(t);
    }
  }
  d.leave_struct();
}

static int logical_member(Decoder& d) {
  int member = -1;
  d.enter_struct();
  int16_t id;
  uint8_t t;
  while (d.next_field(&id, &t)) {
    if (member < 0) member = id;
    d.skip(t);
  }
  d.leave_struct();
  return member;
}

static void get_schema_element(Decoder& d, SchemaElement* s) {
  d.enter_struct();
  int16_t id;
  uint8_t t;
  while (d.next_field(&id, &t)) {
    if (id == 1 && t == T_I32) s->type = d.read_i32();
    else if (id == 2 && t == T_I32) s->type_length = d.read_i32();
    else if (id == 3 && t == T_I32) s->repetition = d.read_i32();
    else if (id == 4 && t == T_BINARY) s->name = d.read_binary();
    else if (id == 5 && t == T_I32) s->num_children = d.read_i32();
    else if (id == 6 && t == T_I32) s->converted = d.read_i32();
    else if (id == 10 && t == T_STRUCT) s->logical = logical_member(d);
    else d.skip(t);
  }
  d.leave_struct();
}

static void get_column_meta(Decoder& d, ColumnMetaData* m) {
  d.enter_struct();
  int16_t id;
  uint8_t t;
  while (d.next_field(&id, &t)) {
    if (id == 1 && t == T_I32) {
      m->type = d.read_i32();
    } else if (id == 2 && t == T_LIST) {
      uint8_t et;
      int64_t n;
      d.list_header(&et, &n);
      for (int64_t i = 0; i < n && !d.failed; i++) {
        if (et == T_I32) m->encodings.push_back(d.read_i32());
        else d.skip(et);
      }
    } else if (id == 3 && t == T_LIST) {
      uint8_t et;
      int64_t n;
      d.list_header(&et, &n);
      for (int64_t i = 0; i < n && !d.failed; i++) {
        if (et == T_BINARY) m->path.push_back(d.read_binary());
        else d.skip(et);
      }
    } else if (id == 4 && t == T_I32) {
      m->codec = d.read_i32();
    } else if (id == 5 && t == T_I64) {
      m->num_values = d.read_i64();
    } else if (id == 6 && t == T_I64) {
      m->total_uncompressed_size = d.read_i64();
    } else if (id == 7 && t == T_I64) {
      m->total_compressed_size = d.read_i64();
    } else if (id == 9 && t == T_I64) {
      m->data_page_offset = d.read_i64();
    } else if (id == 11 && t == T_I64) {
      m->dictionary_page_offset = d.read_i64();
    } else if (id == 12 && t == T_STRUCT) {
      get_stats(d, &m->stats);
      m->has_stats = true;
    } else {
      d.skip(t);
    }
  }
  d.leave_struct();
}

static void get_column_chunk(Decoder& d, ColumnChunk* c) {
  d.enter_struct();
  int16_t id;
  uint8_t t;
  while (d.next_field(&id, &t)) {
    if (id == 1 && t == T_BINARY) c->file_path = d.read_binary();
    else if (id == 2 && t == T_I64) c->file_offset = d.read_i64();
    else if (id == 3 && t == T_STRUCT) { get_column_meta(d, &c->meta); c->has_meta = true; }
    else if (id == 8 || id == 9) { c->encrypted = true; d.skip(t); }
    else d.skip(t);
  }
  d.leave_struct();
}

static void get_row_group(Decoder& d, RowGroup* rg) {
  d.enter_struct();
  int16_t id;
  uint8_t t;
  while (d.next_field(&id, &t)) {
    if (id == 1 && t == T_LIST) {
      uint8_t et;
      int64_t n;
      d.list_header(&et, &n);
      if (et != T_STRUCT && n > 0) { d.fail("column chunk list of wrong type"); break; }
      rg->columns.resize((size_t)n);
      for (int64_t i = 0; i < n && !d.failed; i++) get_column_chunk(d, &rg->columns[i]);
    } else if (id == 2 && t == T_I64) {
      rg->total_byte_size = d.read_i64();
    } else if (id == 3 && t == T_I64) {
      rg->num_rows = d.read_i64();
    } else if (id == 5 && t == T_I64) {
      rg->file_offset = d.read_i64();
    } else if (id == 6 && t == T_I64) {
      rg->total_compressed_size = d.read_i64();
    } else if (id == 7 && t == T_I16) {
      rg->ordinal = (int)d.zigzag();
    } else {
      d.skip(t);
    }
  }
  d.leave_struct();
}

bool decode_file_meta(const void* data, size_t n, FileMetaData* m, std::string* why) {
  Decoder d(data, n);
  int16_t id;
  uint8_t t;
  bool have_schema = false, have_rows = false, have_rgs = false;
  while (d.next_field(&id, &t)) {
    if (id == 1 && t == T_I32) {
      m->version = d.read_i32();
    } else if (id == 2 && t == T_LIST) {
      uint8_t et;
      int64_t cnt;
      d.list_header(&et, &cnt);
      if (et != T_STRUCT && cnt > 0) { d.fail("schema list of wrong type"); break; }
      m->schema.resize((size_t)cnt);
      for (int64_t i = 0; i < cnt && !d.failed; i++) get_schema_element(d, &m->schema[i]);
      have_schema = true;
    } else if (id == 3 && t == T_I64) {
      m->num_rows = d.read_i64();
      have_rows = true;
    } else if (id == 4 && t == T_LIST) {
      uint8_t et;
      int64_t cnt;
      d.list_header(&et, &cnt);
      if (et != T_STRUCT && cnt > 0) { d.fail("row group list of wrong type"); break; }
      m->row_groups.resize((size_t)cnt);
      for (int64_t i = 0; i < cnt && !d.failed; i++) get_row_group(d, &m->row_groups[i]);
      have_rgs = true;
    } else if (id == 5 && t == T_LIST) {
      uint8_t et;
      int64_t cnt;
      d.list_header(&et, &cnt);
      for (int64_t i = 0; i < cnt && !d.failed; i++) {
        if (et != T_STRUCT) { d.skip(et); continue; }
        d.enter_struct();
        std::string k, v;
        int16_t fid;
        uint8_t ft;
        while (d.next_field(&fid, &ft)) {
          if (fid == 1 && ft == T_BINARY) k = d.read_binary();
          else if (fid == 2 && ft == T_BINARY) v = d.read_binary();
          else d.skip(ft);
        }
        d.leave_struct();
        m->kv.emplace_back(std::move(k), std::move(v));
      }
    } else if (id == 6 && t == T_BINARY) {
      m->created_by = d.read_binary();
    } else {
      d.skip(t);
    }
  }
  if (d.failed) {
    *why = "footer is malformed (" + d.why + " at footer byte " + std::to_string(d.pos()) + ")";
    return false;
  }
  if (!have_schema || !have_rows || !have_rgs) {
    *why = "footer lacks required fields (schema, num_rows or row_groups)";
    return false;
  }
  return true;
}

bool decode_page_header(const void* data, size_t n, PageHeader* h, size_t* used, std::string* why) {
  Decoder d(data, n);
  int16_t id;
  uint8_t t;
  bool have_type = false, have_sizes = false;
  while (d.next_field(&id, &t)) {
    if (id == 1 && t == T_I32) {
      h->type = d.read_i32();
      have_type = true;
    } else if (id == 2 && t == T_I32) {
      h->uncompressed_size = d.read_i32();
    } else if (id == 3 && t == T_I32) {
      h->compressed_size = d.read_i32();
      have_sizes = true;
    } else if (id == 5 && t == T_STRUCT) {
      h->has_data_header = true;
      d.enter_struct();
      int16_t f;
      uint8_t ft;
      while (d.next_field(&f, &ft)) {
        if (f == 1 && ft == T_I32) h->num_values = d.read_i32();
        else if (f == 2 && ft == T_I32) h->encoding = d.read_i32();
        else if (f == 3 && ft == T_I32) h->def_encoding = d.read_i32();
        else if (f == 4 && ft == T_I32) h->rep_encoding = d.read_i32();
        else d.skip(ft);
      }
      d.leave_struct();
    } else if (id == 7 && t == T_STRUCT) {
      h->has_dict_header = true;
      d.enter_struct();
      int16_t f;
      uint8_t ft;
      while (d.next_field(&f, &ft)) {
        if (f == 1 && ft == T_I32) h->dict_num_values = d.read_i32();
        else if (f == 2 && ft == T_I32) h->dict_encoding = d.read_i32();
        else d.skip(ft);
      }
      d.leave_struct();
    } else if (id == 8 && t == T_STRUCT) {
      h->has_v2_header = true;
      d.enter_struct();
      int16_t f;
      uint8_t ft;
      while (d.next_field(&f, &ft)) {
        if (f == 1 && ft == T_I32) h->num_values = d.read_i32();
        else if (f == 2 && ft == T_I32) h->num_nulls = d.read_i32();
        else if (f == 3 && ft == T_I32) h->num_rows = d.read_i32();
        else if (f == 4 && ft == T_I32) h->encoding = d.read_i32();
        else if (f == 5 && ft == T_I32) h->def_len = d.read_i32();
        else if (f == 6 && ft == T_I32) h->rep_len = d.read_i32();
        else if (f == 7 && (ft == T_TRUE || ft == T_FALSE)) h->is_compressed = ft == T_TRUE;
        else d.skip(ft);
      }
      d.leave_struct();
    } else {
      d.skip(t);
    }
  }
  if (d.failed) {
    *why = d.why == "truncated" ? "page header truncated" : "page header is malformed (" + d.why + ")";
    return false;
  }
  if (!have_type || !have_sizes) {
    *why = "page header lacks its type or sizes";
    return false;
  }
  if (h->compressed_size < 0 || h->uncompressed_size < 0) {
    *why = "page header has a negative page size";
    return false;
  }
  *used = d.pos();
  return true;
}

}  // namespace bk::pq::fmt
