#pragma once
// Thrift compact protocol, just what Parquet's footer and page headers use:
// structs, lists, i16/i32/i64 (zigzag varints), binary, bool, double.
// Internal to src/data/parquet.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bk::pq::thrift {

enum CType : uint8_t {
  T_STOP = 0, T_TRUE = 1, T_FALSE = 2, T_BYTE = 3, T_I16 = 4, T_I32 = 5, T_I64 = 6,
  T_DOUBLE = 7, T_BINARY = 8, T_LIST = 9, T_SET = 10, T_MAP = 11, T_STRUCT = 12,
};

struct Encoder {
  std::string out;
  std::vector<int16_t> stack;  // last field id of each enclosing struct
  int16_t last = 0;

  void varint(uint64_t v);
  void field_header(int16_t id, uint8_t type);
  void i32(int16_t id, int32_t v);
  void i64(int16_t id, int64_t v);
  void boolean(int16_t id, bool v);
  void binary(int16_t id, std::string_view v);
  void begin_struct(int16_t id);  // a struct-valued field
  void end_struct();              // writes STOP, restores the outer field id
  void begin_list(int16_t id, uint8_t elem_type, int64_t size);
  // List elements (no field header).
  void elem_i32(int32_t v);
  void elem_binary(std::string_view v);
  void begin_elem_struct();  // a struct element of a list; close with end_struct
  void stop();               // STOP of the outermost struct
};

struct Decoder {
  const uint8_t* p = nullptr;
  const uint8_t* begin = nullptr;
  const uint8_t* end = nullptr;
  bool failed = false;
  std::string why;  // first failure
  std::vector<int16_t> stack;
  int16_t last = 0;

  Decoder(const void* data, size_t n) : p((const uint8_t*)data), begin(p), end(p + n) {}
  size_t pos() const { return (size_t)(p - begin); }
  void fail(const char* msg);

  uint64_t varint();
  int64_t zigzag() { uint64_t v = varint(); return (int64_t)(v >> 1) ^ -(int64_t)(v & 1); }
  // Next field of the current struct: false at STOP (or on failure).
  // For bools the value is in the type (T_TRUE/T_FALSE).
  bool next_field(int16_t* id, uint8_t* type);
  int32_t read_i32() { return (int32_t)zigzag(); }
  int64_t read_i64() { return zigzag(); }
  bool read_bool_elem();
  std::string read_binary();
  double read_double();
  void list_header(uint8_t* elem_type, int64_t* size);
  void enter_struct();  // after a struct field header or before a struct list element
  void leave_struct();  // after next_field returned false
  void skip(uint8_t type, int depth = 0);
};

}  // namespace bk::pq::thrift
