#pragma once
// Parquet's Thrift metadata (parquet.thrift), reduced to the fields bitkd
// reads or writes; unknown fields are skipped on read. Internal.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace bk::pq::fmt {

// Physical types, repetition, converted types, encodings, codecs, page types:
// the numeric values fixed by the Parquet spec.
enum PhysType { BOOLEAN = 0, INT32 = 1, INT64 = 2, INT96 = 3, FLOAT = 4, DOUBLE = 5, BYTE_ARRAY = 6, FIXED_LEN_BYTE_ARRAY = 7 };
enum Repetition { REQUIRED = 0, OPTIONAL = 1, REPEATED = 2 };
enum Converted { CT_UTF8 = 0, CT_MAP = 1, CT_MAP_KEY_VALUE = 2, CT_LIST = 3, CT_ENUM = 4, CT_JSON = 19 };
// Field ids of the LogicalType union that matter here.
enum Logical { LT_STRING = 1, LT_MAP = 2, LT_LIST = 3, LT_ENUM = 4, LT_JSON = 12 };
enum Encoding {
  PLAIN = 0, PLAIN_DICTIONARY = 2, RLE = 3, BIT_PACKED = 4, DELTA_BINARY_PACKED = 5,
  DELTA_LENGTH_BYTE_ARRAY = 6, DELTA_BYTE_ARRAY = 7, RLE_DICTIONARY = 8, BYTE_STREAM_SPLIT = 9,
};
enum CodecId { UNCOMPRESSED = 0, SNAPPY = 1, GZIP = 2, LZO = 3, BROTLI = 4, LZ4 = 5, ZSTD = 6, LZ4_RAW = 7 };
enum PageType { DATA_PAGE = 0, INDEX_PAGE = 1, DICTIONARY_PAGE = 2, DATA_PAGE_V2 = 3 };

const char* encoding_name(int e);
const char* codec_name(int c);
const char* phys_type_name(int t);

struct Statistics {
  bool has_min = false, has_max = false;
  std::string min, max;  // min_value/max_value (or the deprecated min/max)
  bool has_null_count = false;
  int64_t null_count = 0;
  bool min_exact = true, max_exact = true;
  bool any() const { return has_min || has_max || has_null_count; }
};

struct SchemaElement {
  int type = -1;  // PhysType, -1 for groups
  int type_length = 0;
  int repetition = -1;
  std::string name;
  int num_children = 0;
  int converted = -1;
  int logical = -1;  // LogicalType union member id
};

struct ColumnMetaData {
  int type = -1;
  std::vector<int> encodings;
  std::vector<std::string> path;
  int codec = 0;
  int64_t num_values = 0;
  int64_t total_uncompressed_size = 0;
  int64_t total_compressed_size = 0;
  int64_t data_page_offset = -1;
  int64_t dictionary_page_offset = -1;  // -1 = none
  bool has_stats = false;
  Statistics stats;
};

struct ColumnChunk {
  std::string file_path;  // non-empty = data in another file (unsupported)
  int64_t file_offset = 0;
  bool has_meta = false;
  ColumnMetaData meta;
  bool encrypted = false;
};

struct RowGroup {
  std::vector<ColumnChunk> columns;
  int64_t total_byte_size = 0;
  int64_t num_rows = 0;
  int64_t file_offset = -1;
  int64_t total_compressed_size = -1;
  int ordinal = -1;
};

struct FileMetaData {
  int version = 1;
  std::vector<SchemaElement> schema;
  int64_t num_rows = 0;
  std::vector<RowGroup> row_groups;
  std::vector<std::pair<std::string, std::string>> kv;
  std::string created_by;
  bool column_orders = false;  // write TypeDefinedOrder for every leaf
};

struct PageHeader {
  int type = -1;
  int32_t uncompressed_size = 0;
  int32_t compressed_size = 0;
  // DATA_PAGE / DATA_PAGE_V2
  int32_t num_values = 0;
  int encoding = 0;
  int def_encoding = RLE, rep_encoding = RLE;  // v1 only
  int32_t num_nulls = 0, num_rows = 0;          // v2
  int32_t def_len = 0, rep_len = 0;             // v2
  bool is_compressed = true;                    // v2
  // DICTIONARY_PAGE
  int32_t dict_num_values = 0;
  int dict_encoding = PLAIN;
  bool has_data_header = false, has_dict_header = false, has_v2_header = false;
};

std::string encode_file_meta(const FileMetaData& m);
// Returns false with *why set on malformed input.
bool decode_file_meta(const void* data, size_t n, FileMetaData* m, std::string* why);

std::string encode_page_header(const PageHeader& h);
// *used = header length in bytes. Returns false if truncated or malformed.
bool decode_page_header(const void* data, size_t n, PageHeader* h, size_t* used, std::string* why);

}  // namespace bk::pq::fmt
