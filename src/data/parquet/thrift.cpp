#include "data/parquet/thrift.h"

#include <cstring>

namespace bk::pq::thrift {

// ---------------------------------------------------------------- encoder

void Encoder::varint(uint64_t v) {
  while (v >= 0x80) {
    out.push_back((char)(uint8_t)(v | 0x80));
    v >>= 7;
  }
  out.push_back((char)(uint8_t)v);
}

static uint64_t zz(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }

void Encoder::field_header(int16_t id, uint8_t type) {
  int delta = id - last;
  if (delta > 0 && delta <= 15) {
    out.push_back((char)(uint8_t)((delta << 4) | type));
  } else {
    out.push_back((char)type);
    varint(zz(id));
  }
  last = id;
}

void Encoder::i32(int16_t id, int32_t v) { field_header(id, T_I32); varint(zz(v)); }
void Encoder::i64(int16_t id, int64_t v) { field_header(id, T_I64); varint(zz(v)); }
void Encoder::boolean(int16_t id, bool v) { field_header(id, v ? T_TRUE : T_FALSE); }

void Encoder::binary(int16_t id, std::string_view v) {
  field_header(id, T_BINARY);
  elem_binary(v);
}

void Encoder::begin_struct(int16_t id) {
  field_header(id, T_STRUCT);
  stack.push_back(last);
  last = 0;
}

void Encoder::begin_elem_struct() {
  stack.push_back(last);
  last = 0;
}

void Encoder::end_struct() {
  out.push_back((char)T_STOP);
  last = stack.empty() ? 0 : stack.back();
  if (!stack.empty()) stack.pop_back();
}

void Encoder::begin_list(int16_t id, uint8_t elem_type, int64_t size) {
  field_header(id, T_LIST);
  if (size < 15) {
    out.push_back((char)(uint8_t)((size << 4) | elem_type));
  } else {
    out.push_back((char)(uint8_t)(0xF0 | elem_type));
    varint((uint64_t)size);
  }
}

void Encoder::elem_i32(int32_t v) { varint(zz(v)); }

void Encoder::elem_binary(std::string_view v) {
  varint(v.size());
  out.append(v.data(), v.size());
}

void Encoder::stop() { out.push_back((char)T_STOP); }

// ---------------------------------------------------------------- decoder

void Decoder::fail(const char* msg) {
  if (!failed) {
    failed = true;
    why = msg;
  }
  p = end;
}

uint64_t Decoder::varint() {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (p >= end) {
      fail("truncated");
      return 0;
    }
    uint8_t b = *p++;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
  }
  fail("varint too long");
  return 0;
}

bool Decoder::next_field(int16_t* id, uint8_t* type) {
  if (failed) return false;
  if (p >= end) {
    fail("truncated");
    return false;
  }
  uint8_t b = *p++;
  if (b == T_STOP) return false;
  uint8_t t = b & 0x0f;
  int delta = b >> 4;
  if (delta) {
    *id = (int16_t)(last + delta);
  } else {
    *id = (int16_t)zigzag();
  }
  if (t > T_STRUCT) {
    fail("bad field type");
    return false;
  }
  last = *id;
  *type = t;
  return !failed;
}

bool Decoder::read_bool_elem() {
  if (p >= end) {
    fail("truncated");
    return false;
  }
  return *p++ == T_TRUE;
}

std::string Decoder::read_binary() {
  uint64_t n = varint();
  if (failed) return std::string();
  if (n > (uint64_t)(end - p)) {
    fail("string runs past the end");
    return std::string();
  }
  std::string s((const char*)p, (size_t)n);
  p += n;
  return s;
}

double Decoder::read_double() {
  if (end - p < 8) {
    fail("truncated");
    return 0;
  }
  double d;
  memcpy(&d, p, 8);
  p += 8;
  return d;
}

void Decoder::list_header(uint8_t* elem_type, int64_t* size) {
  if (p >= end) {
    fail("truncated");
    *size = 0;
    return;
  }
  uint8_t b = *p++;
  *elem_type = b & 0x0f;
  int64_t n = b >> 4;
  if (n == 15) n = (int64_t)varint();
  // Each element takes at least one byte, so a larger count is corrupt.
  if (n < 0 || n > (int64_t)(end - p)) {
    fail("list size larger than the data");
    n = 0;
  }
  *size = n;
}

void Decoder::enter_struct() {
  stack.push_back(last);
  last = 0;
}

void Decoder::leave_struct() {
  last = stack.empty() ? 0 : stack.back();
  if (!stack.empty()) stack.pop_back();
}

void Decoder::skip(uint8_t type, int depth) {
  if (depth > 32) {
    fail("nesting too deep");
    return;
  }
  switch (type) {
    case T_TRUE:
    case T_FALSE:
      return;  // value is in the field header
    case T_BYTE:
      if (p >= end) fail("truncated"); else p++;
      return;
    case T_I16:
    case T_I32:
    case T_I64:
      varint();
      return;
    case T_DOUBLE:
      read_double();
      return;
    case T_BINARY: {
      uint64_t n = varint();
      if (n > (uint64_t)(end - p)) fail("string runs past the end"); else p += n;
      return;
    }
    case T_LIST:
    case T_SET: {
      uint8_t et;
      int64_t n;
      list_header(&et, &n);
      for (int64_t i = 0; i < n && !failed; i++) {
        if (et == T_TRUE || et == T_FALSE) read_bool_elem();
        else skip(et, depth + 1);
      }
      return;
    }
    case T_MAP: {
      int64_t n = (int64_t)varint();
      if (n == 0) return;
      if (p >= end) { fail("truncated"); return; }
      uint8_t kv = *p++;
      auto one = [&](uint8_t t) {
        if (t == T_TRUE || t == T_FALSE) read_bool_elem();
        else skip(t, depth + 1);
      };
      for (int64_t i = 0; i < n && !failed; i++) {
        one(kv >> 4);
        one(kv & 0x0f);
      }
      return;
    }
    case T_STRUCT: {
      enter_struct();
      int16_t id;
      uint8_t t;
      while (next_field(&id, &t)) skip(t, depth + 1);
      leave_struct();
      return;
    }
    default:
      fail("bad type");
  }
}

}  // namespace bk::pq::thrift
