#pragma once
// Parquet files for bitkd's tables (KD steps, prompts): a streaming writer and
// a reader that hands out one row group's column at a time, so memory stays
// bounded by a row group whatever the file size.
//
// Covered: BOOLEAN, INT32, INT64, FLOAT, DOUBLE, BYTE_ARRAY (STRING/UTF8 or raw
// bytes); required or optional columns; 3-level LIST of those (and the legacy
// 2-level forms on read); PLAIN, dictionary (PLAIN_DICTIONARY/RLE_DICTIONARY),
// RLE booleans; RLE/bit-packed levels; data pages v1 and v2; UNCOMPRESSED,
// SNAPPY, ZSTD; statistics; key-value metadata. Structs, maps, nested lists
// are listed by the reader but cannot be read.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace bk::pq {

enum class Type : uint8_t { BOOL, INT32, INT64, FLOAT, DOUBLE, STRING, BYTES };
const char* type_name(Type t);  // "bool", "int32", ..., "string", "binary"

enum class Codec : uint8_t { UNCOMPRESSED, SNAPPY, ZSTD };
const char* codec_name(Codec c);  // "uncompressed", "snappy", "zstd"
bool parse_codec(const std::string& name, Codec* out);  // case-insensitive

using KeyValues = std::vector<std::pair<std::string, std::string>>;

struct ColumnSpec {
  std::string name;
  Type type = Type::INT32;
  bool list = false;              // LIST of `type`
  bool nullable = false;          // flat: a value may be null; list: the whole list may be null
  bool element_nullable = false;  // list only: elements may be null
};
using Schema = std::vector<ColumnSpec>;
// "int32", "list<float>", "string?" (? = nullable), "list<int32?>?".
std::string spec_type_string(const ColumnSpec& c);

// One column's values for a run of rows, in flat buffers.
// Flat column: slot i is row i. List column: row r owns slots
// [offsets[r], offsets[r+1]). A null slot holds 0 / "" so slots line up.
// Only the vector for `type` is used (STRING and BYTES share bytes/str_off).
struct ColumnData {
  Type type = Type::INT32;
  bool list = false;
  std::vector<uint8_t> b;    // BOOL, 0 or 1
  std::vector<int32_t> i32;
  std::vector<int64_t> i64;
  std::vector<float> f32;
  std::vector<double> f64;
  std::string bytes;              // STRING/BYTES: slot i = bytes[str_off[i], str_off[i+1])
  std::vector<int64_t> str_off;   // num_slots + 1 entries, str_off[0] = 0
  std::vector<int64_t> offsets;   // list: num_rows + 1 entries, offsets[0] = 0
  std::vector<uint8_t> valid;     // per row, 1 = not null; empty = no nulls
  std::vector<uint8_t> elem_valid;  // list: per slot; empty = no null elements

  int64_t num_rows() const;
  int64_t num_slots() const;
  std::string_view str(int64_t slot) const {
    return std::string_view(bytes.data() + str_off[slot], (size_t)(str_off[slot + 1] - str_off[slot]));
  }
  bool is_valid(int64_t row) const { return valid.empty() || valid[row]; }
  bool elem_is_valid(int64_t slot) const { return elem_valid.empty() || elem_valid[slot]; }
};

// An empty column of this shape (offsets/str_off primed with their leading 0).
ColumnData make_column(Type type, bool list);
void clear_column(ColumnData* c);  // drops the rows, keeps the shape
// Row-building helpers. For a list row: push_* the elements, then end_list(c).
void push_bool(ColumnData* c, bool v);
void push_i32(ColumnData* c, int32_t v);
void push_i64(ColumnData* c, int64_t v);
void push_f32(ColumnData* c, float v);
void push_f64(ColumnData* c, double v);
void push_str(ColumnData* c, std::string_view v);
void push_null(ColumnData* c);  // a null slot (flat: null row; list: null element)
void end_list(ColumnData* c);
void push_null_list(ColumnData* c);
// Appends rows [row_begin, row_end) of src to dst (same type and shape).
void append_rows(ColumnData* dst, const ColumnData& src, int64_t row_begin, int64_t row_end);

// ---------------------------------------------------------------- writer

struct WriterOptions {
  Codec codec = Codec::ZSTD;
  int zstd_level = 3;
  bool page_v2 = false;          // data page v2 instead of v1
  bool dictionary = true;        // dictionary-encode a chunk when it pays (not for BOOL)
  double dictionary_max_ratio = 0.5;     // give up when distinct/values exceeds this
  int64_t dictionary_max_bytes = 1 << 20;  // or when the dictionary page exceeds this
  int64_t row_group_rows = 65536;  // a row group is written when it holds this many rows
  int64_t row_group_bytes = 128LL << 20;  // ... or about this many bytes of raw values
  int64_t page_bytes = 1 << 20;  // target uncompressed size of a data page
  bool statistics = true;        // min/max/null_count per column chunk
  KeyValues key_values;          // key-value metadata (more may be added before close)
};

struct WriterImpl;
// Writes to a temp file beside `path`; close() writes the footer and renames
// it over `path`. A writer destroyed without close() leaves nothing behind.
struct Writer {
  Writer();
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  Status open(const std::string& path, const Schema& schema, const WriterOptions& opts);
  // Appends rows: cols[i] holds column i (schema order), all the same row count.
  Status write(const std::vector<ColumnData>& cols);
  // Row-at-a-time alternative: fill buffer(i) for every column, then commit.
  ColumnData* buffer(int col);
  Status commit_rows();  // checks the buffers agree, writes a row group if full
  Status flush_row_group();  // ends the current row group now (no-op if empty)
  void set_key_value(const std::string& key, const std::string& value);
  Status close();
  void abort();  // drops the temp file
  int64_t rows_written() const;  // including buffered rows
  int64_t bytes_written() const;  // file bytes so far (after close: file size)

  std::unique_ptr<WriterImpl> impl;
};

// ---------------------------------------------------------------- reader

struct ColumnStats {
  bool has_min_max = false;
  std::string min, max;  // PLAIN bytes of the value (strings: raw bytes)
  bool has_null_count = false;
  int64_t null_count = 0;
};

struct ColumnChunkInfo {
  Codec codec = Codec::UNCOMPRESSED;
  bool codec_supported = true;
  std::string codec_label;           // as the file names it, e.g. "GZIP"
  std::vector<std::string> encodings;  // e.g. {"PLAIN", "RLE", "RLE_DICTIONARY"}
  int64_t num_values = 0;            // leaf values incl. nulls
  int64_t compressed_bytes = 0;
  int64_t uncompressed_bytes = 0;
  ColumnStats stats;
};

struct ColumnInfo {
  ColumnSpec spec;           // meaningful when readable
  std::string unsupported;   // empty = readable; else why not (e.g. "struct")
  std::string file_type;     // how the file declares it, e.g. "list<int32>", "INT96"
};

struct ReaderImpl;
struct Reader {
  Reader();
  ~Reader();
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  Status open(const std::string& path);
  const std::string& path() const;
  const std::vector<ColumnInfo>& columns() const;  // top-level fields, file order
  int find_column(const std::string& name) const;  // -1 if absent
  const KeyValues& key_values() const;
  const std::string* key_value(const std::string& key) const;  // null if absent
  const std::string& created_by() const;
  int64_t num_rows() const;
  int num_row_groups() const;
  int64_t row_group_num_rows(int rg) const;
  // Chunk facts of a readable column (its single leaf).
  Status chunk_info(int rg, int col, ColumnChunkInfo* out) const;
  // Decodes one column of one row group (replaces *out).
  Status read_column(int rg, int col, ColumnData* out);

  std::unique_ptr<ReaderImpl> impl;
};

}  // namespace bk::pq
