// GGUF reader/writer; see gguf.h for the layout.
#include "io/gguf.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>

#include "core/fs.h"
#include "core/half.h"
#include "core/ternary_block.h"
#include "io/gguf_quants.h"
#include "io/mapped_file.h"

namespace bk {

namespace {

// ---- byte cursor ----------------------------------------------------------------
struct Cursor {
  const std::string& name;
  const uint8_t* p;
  uint64_t size;
  uint64_t pos = 0;
  std::string what;  // what is being read, for truncation messages

  Cursor(const std::string& n, const uint8_t* b, uint64_t sz) : name(n), p(b), size(sz) {}

  Status need(uint64_t n) const {
    if (n > size - pos)
      return errorf("%s: truncated GGUF file: needs %llu more bytes at offset %llu while reading %s, file has %llu bytes",
                    name.c_str(), (unsigned long long)n, (unsigned long long)pos, what.c_str(),
                    (unsigned long long)size);
    return ok_status();
  }
  template <typename T>
  Status get(T* v) {
    BK_TRY(need(sizeof(T)));
    memcpy(v, p + pos, sizeof(T));
    pos += sizeof(T);
    return ok_status();
  }
  // An array of n elements of es bytes each must fit in what is left.
  Status need_array(uint64_t n, uint64_t es) const {
    if (n > (size - pos) / es)
      return errorf("%s: truncated GGUF file: an array of %llu elements at offset %llu (reading %s) does not fit in "
                    "the %llu-byte file",
                    name.c_str(), (unsigned long long)n, (unsigned long long)pos, what.c_str(),
                    (unsigned long long)size);
    return ok_status();
  }
  Status get_str(std::string* s) {
    uint64_t n = 0;
    BK_TRY(get(&n));
    BK_TRY(need(n));
    s->assign((const char*)p + pos, n);
    pos += n;
    return ok_status();
  }
};

size_t scalar_size(GgufType t) {
  switch (t) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_BOOL:
      return 1;
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_INT16:
      return 2;
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_FLOAT32:
      return 4;
    case GGUF_TYPE_UINT64:
    case GGUF_TYPE_INT64:
    case GGUF_TYPE_FLOAT64:
      return 8;
    default:
      return 0;
  }
}

bool is_int_type(GgufType t) {
  return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_INT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_INT16 ||
         t == GGUF_TYPE_UINT32 || t == GGUF_TYPE_INT32 || t == GGUF_TYPE_UINT64 || t == GGUF_TYPE_INT64;
}
bool is_signed(GgufType t) {
  return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 || t == GGUF_TYPE_INT64;
}

// Raw little-endian scalar bytes -> value slots (integers sign-extended into u).
void decode_scalar(GgufType t, const uint8_t* b, uint64_t* u, double* f) {
  switch (t) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_BOOL:
      *u = b[0];
      break;
    case GGUF_TYPE_INT8:
      *u = (uint64_t)(int64_t)(int8_t)b[0];
      break;
    case GGUF_TYPE_UINT16: {
      uint16_t v;
      memcpy(&v, b, 2);
      *u = v;
    } break;
    case GGUF_TYPE_INT16: {
      int16_t v;
      memcpy(&v, b, 2);
      *u = (uint64_t)(int64_t)v;
    } break;
    case GGUF_TYPE_UINT32: {
      uint32_t v;
      memcpy(&v, b, 4);
      *u = v;
    } break;
    case GGUF_TYPE_INT32: {
      int32_t v;
      memcpy(&v, b, 4);
      *u = (uint64_t)(int64_t)v;
    } break;
    case GGUF_TYPE_UINT64:
    case GGUF_TYPE_INT64:
      memcpy(u, b, 8);
      break;
    case GGUF_TYPE_FLOAT32: {
      float v;
      memcpy(&v, b, 4);
      *f = v;
    } break;
    case GGUF_TYPE_FLOAT64:
      memcpy(f, b, 8);
      break;
    default:
      break;
  }
}

void encode_scalar(GgufType t, uint64_t u, double f, std::string* out) {
  uint8_t b[8];
  size_t n = scalar_size(t);
  if (t == GGUF_TYPE_FLOAT32) {
    float v = (float)f;
    memcpy(b, &v, 4);
  } else if (t == GGUF_TYPE_FLOAT64) {
    memcpy(b, &f, 8);
  } else {
    memcpy(b, &u, 8);  // little-endian: the low bytes come first
  }
  out->append((const char*)b, n);
}

void put_u32(std::string* out, uint32_t v) { out->append((const char*)&v, 4); }
void put_u64(std::string* out, uint64_t v) { out->append((const char*)&v, 8); }
void put_str(std::string* out, const std::string& s) {
  put_u64(out, s.size());
  out->append(s);
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

// ---- names and sizes ------------------------------------------------------------
const char* gguf_type_name(GgufType t) {
  switch (t) {
    case GGUF_TYPE_UINT8: return "u8";
    case GGUF_TYPE_INT8: return "i8";
    case GGUF_TYPE_UINT16: return "u16";
    case GGUF_TYPE_INT16: return "i16";
    case GGUF_TYPE_UINT32: return "u32";
    case GGUF_TYPE_INT32: return "i32";
    case GGUF_TYPE_FLOAT32: return "f32";
    case GGUF_TYPE_BOOL: return "bool";
    case GGUF_TYPE_STRING: return "str";
    case GGUF_TYPE_ARRAY: return "arr";
    case GGUF_TYPE_UINT64: return "u64";
    case GGUF_TYPE_INT64: return "i64";
    case GGUF_TYPE_FLOAT64: return "f64";
  }
  return "?";
}

bool ggml_type_known(uint32_t t) {
  return t == GGML_TYPE_F32 || t == GGML_TYPE_F16 || t == GGML_TYPE_BF16 || t == GGML_TYPE_TQ1_0 ||
         t == GGML_TYPE_TQ2_0 || ggml_is_dequant_type(t);
}

const char* ggml_type_name(uint32_t t) {
  switch (t) {
    case GGML_TYPE_F32: return "f32";
    case GGML_TYPE_F16: return "f16";
    case GGML_TYPE_BF16: return "bf16";
    case GGML_TYPE_TQ1_0: return "tq1_0";
    case GGML_TYPE_TQ2_0: return "tq2_0";
  }
  if (const char* q = ggml_quant_name(t)) return q;
  if (const char* r = ggml_refused_type_name(t)) return r;
  return "?";
}

int64_t ggml_block_size(uint32_t t) {
  if (ggml_is_dequant_type(t)) return ggml_quant_block_size(t);
  switch (t) {
    case GGML_TYPE_TQ1_0:
    case GGML_TYPE_TQ2_0: return kQK_K;
    default: return 1;
  }
}

int64_t ggml_type_size(uint32_t t) {
  switch (t) {
    case GGML_TYPE_F32: return 4;
    case GGML_TYPE_F16:
    case GGML_TYPE_BF16: return 2;
    case GGML_TYPE_TQ1_0: return kTQ1_0Bytes;
    case GGML_TYPE_TQ2_0: return kTQ2_0Bytes;
  }
  return ggml_quant_type_size(t);
}

int64_t ggml_row_bytes(uint32_t t, int64_t ne0) { return ne0 / ggml_block_size(t) * ggml_type_size(t); }

size_t GgufValue::arr_size() const {
  if (type != GGUF_TYPE_ARRAY) return 0;
  if (arr_type == GGUF_TYPE_STRING) return arr_str.size();
  if (arr_type == GGUF_TYPE_FLOAT32 || arr_type == GGUF_TYPE_FLOAT64) return arr_f.size();
  return arr_int.size();
}

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

GgufValue gguf_u32(uint32_t v) {
  GgufValue x;
  x.type = GGUF_TYPE_UINT32;
  x.u = v;
  return x;
}
GgufValue gguf_i32(int32_t v) {
  GgufValue x;
  x.type = GGUF_TYPE_INT32;
  x.u = (uint64_t)(int64_t)v;
  return x;
}
GgufValue gguf_u64(uint64_t v) {
  GgufValue x;
  x.type = GGUF_TYPE_UINT64;
  x.u = v;
  return x;
}
GgufValue gguf_f32(float v) {
  GgufValue x;
  x.type = GGUF_TYPE_FLOAT32;
  x.f = v;
  return x;
}
GgufValue gguf_bool(bool v) {
  GgufValue x;
  x.type = GGUF_TYPE_BOOL;
  x.u = v ? 1 : 0;
  return x;
}
GgufValue gguf_str(const std::string& v) {
  GgufValue x;
  x.type = GGUF_TYPE_STRING;
  x.str = v;
  return x;
}
GgufValue gguf_arr_str(const std::vector<std::string>& v) {
  GgufValue x;
  x.type = GGUF_TYPE_ARRAY;
  x.arr_type = GGUF_TYPE_STRING;
  x.arr_str = v;
  return x;
}
GgufValue gguf_arr_f32(const std::vector<float>& v) {
  GgufValue x;
  x.type = GGUF_TYPE_ARRAY;
  x.arr_type = GGUF_TYPE_FLOAT32;
  x.arr_f.assign(v.begin(), v.end());
  return x;
}
GgufValue gguf_arr_i32(const std::vector<int32_t>& v) {
  GgufValue x;
  x.type = GGUF_TYPE_ARRAY;
  x.arr_type = GGUF_TYPE_INT32;
  x.arr_int.reserve(v.size());
  for (int32_t e : v) x.arr_int.push_back((uint64_t)(int64_t)e);
  return x;
}
GgufValue gguf_arr_u8(const std::string& bytes) {
  GgufValue x;
  x.type = GGUF_TYPE_ARRAY;
  x.arr_type = GGUF_TYPE_UINT8;
  x.arr_int.assign((const uint8_t*)bytes.data(), (const uint8_t*)bytes.data() + bytes.size());
  return x;
}

// ---- reader -----------------------------------------------------------------------
static Status read_value(Cursor* c, GgufType type, const std::string& key, GgufValue* v) {
  v->type = type;
  if (type == GGUF_TYPE_STRING) return c->get_str(&v->str);
  if (type == GGUF_TYPE_ARRAY) {
    uint32_t et = 0;
    uint64_t n = 0;
    BK_TRY(c->get(&et));
    BK_TRY(c->get(&n));
    if (et == GGUF_TYPE_ARRAY)
      return errorf("%s: key '%s' is an array of arrays, which GGUF readers (llama.cpp) do not support",
                    c->name.c_str(), key.c_str());
    if (et != GGUF_TYPE_STRING && scalar_size((GgufType)et) == 0)
      return errorf("%s: key '%s' is an array of unknown value type %u", c->name.c_str(), key.c_str(), et);
    v->arr_type = (GgufType)et;
    if (et == GGUF_TYPE_STRING) {
      BK_TRY(c->need_array(n, 8));  // each string has at least its 8-byte length
      v->arr_str.resize(n);
      for (uint64_t i = 0; i < n; i++) BK_TRY(c->get_str(&v->arr_str[i]));
      return ok_status();
    }
    size_t es = scalar_size((GgufType)et);
    BK_TRY(c->need_array(n, es));
    const uint8_t* b = c->p + c->pos;
    if (et == GGUF_TYPE_FLOAT32 || et == GGUF_TYPE_FLOAT64) {
      v->arr_f.resize(n);
      uint64_t dummy;
      for (uint64_t i = 0; i < n; i++) decode_scalar((GgufType)et, b + i * es, &dummy, &v->arr_f[i]);
    } else {
      v->arr_int.resize(n);
      double dummy;
      for (uint64_t i = 0; i < n; i++) decode_scalar((GgufType)et, b + i * es, &v->arr_int[i], &dummy);
    }
    c->pos += n * es;
    return ok_status();
  }
  size_t es = scalar_size(type);
  if (es == 0) return errorf("%s: key '%s' has unknown value type %u", c->name.c_str(), key.c_str(), (unsigned)type);
  BK_TRY(c->need(es));
  decode_scalar(type, c->p + c->pos, &v->u, &v->f);
  if (type == GGUF_TYPE_BOOL && v->u > 1)
    return errorf("%s: key '%s' is a bool with byte value %llu (expected 0 or 1)", c->name.c_str(), key.c_str(),
                  (unsigned long long)v->u);
  c->pos += es;
  return ok_status();
}

// Parses out's file (bytes or mapping, out->size bytes).
static Status parse_file(const std::string& name, GgufFile* out) {
  const uint8_t* data = gguf_file_data(*out);
  Cursor c(name, data, out->size);
  c.what = "the header";
  if (out->size < 4 || memcmp(data, "GGUF", 4) != 0) {
    std::string got;
    for (size_t i = 0; i < 4 && i < out->size; i++) {
      unsigned char ch = data[i];
      char buf[8];
      snprintf(buf, sizeof buf, ch >= 32 && ch < 127 ? "%c" : "\\x%02x", ch);
      got += buf;
    }
    return errorf("%s: not a GGUF file (starts with '%s', expected 'GGUF')", name.c_str(), got.c_str());
  }
  c.pos = 4;
  BK_TRY(c.get(&out->version));
  if (out->version == 1)
    return errorf("%s: GGUF version 1 is obsolete and not supported; re-convert the model with a current tool",
                  name.c_str());
  if (out->version != 2 && out->version != 3)
    return errorf("%s: unsupported GGUF version %u (bitkd reads versions 2 and 3)", name.c_str(), out->version);
  uint64_t n_tensors = 0, n_kv = 0;
  BK_TRY(c.get(&n_tensors));
  BK_TRY(c.get(&n_kv));
  // Every kv needs >= 12 bytes and every tensor info >= 24: reject absurd counts early.
  if (n_kv > out->size / 12 || n_tensors > out->size / 24)
    return errorf("%s: truncated or corrupt GGUF file: the header claims %llu tensors and %llu metadata keys, more "
                  "than a %llu-byte file can hold",
                  name.c_str(), (unsigned long long)n_tensors, (unsigned long long)n_kv,
                  (unsigned long long)out->size);

  std::set<std::string> keys;
  out->kv.resize(n_kv);
  for (uint64_t i = 0; i < n_kv; i++) {
    GgufKv& kv = out->kv[i];
    c.what = "metadata key #" + std::to_string(i);
    BK_TRY(c.get_str(&kv.key));
    if (kv.key.empty()) return errorf("%s: metadata key #%llu is empty", name.c_str(), (unsigned long long)i);
    if (!keys.insert(kv.key).second) return errorf("%s: duplicate metadata key '%s'", name.c_str(), kv.key.c_str());
    c.what = "the value of '" + kv.key + "'";
    uint32_t type = 0;
    BK_TRY(c.get(&type));
    BK_TRY(read_value(&c, (GgufType)type, kv.key, &kv.value));
  }
  if (const GgufKv* a = gguf_find_kv(*out, "general.alignment")) {
    if (a->value.type != GGUF_TYPE_UINT32)
      return errorf("%s: general.alignment must be a u32, is %s", name.c_str(), gguf_type_name(a->value.type));
    uint64_t al = a->value.u;
    if (al == 0 || (al & (al - 1)) != 0)
      return errorf("%s: general.alignment %llu is not a power of two", name.c_str(), (unsigned long long)al);
    out->alignment = (uint32_t)al;
  }

  std::set<std::string> names;
  out->tensors.resize(n_tensors);
  for (uint64_t i = 0; i < n_tensors; i++) {
    GgufTensorInfo& t = out->tensors[i];
    c.what = "tensor info #" + std::to_string(i);
    BK_TRY(c.get_str(&t.name));
    if (t.name.size() >= kGgmlMaxName)
      return errorf("%s: tensor name '%s' is %zu bytes; ggml allows at most %zu", name.c_str(), t.name.c_str(),
                    t.name.size(), kGgmlMaxName - 1);
    if (!names.insert(t.name).second) return errorf("%s: duplicate tensor '%s'", name.c_str(), t.name.c_str());
    c.what = "the info of tensor '" + t.name + "'";
    uint32_t n_dims = 0;
    BK_TRY(c.get(&n_dims));
    if (n_dims == 0 || n_dims > 4)
      return errorf("%s: tensor '%s' has %u dimensions (1 to 4 allowed)", name.c_str(), t.name.c_str(), n_dims);
    t.ne.resize(n_dims);
    for (uint32_t d = 0; d < n_dims; d++) {
      BK_TRY(c.get(&t.ne[d]));
      if (t.ne[d] < 0)
        return errorf("%s: tensor '%s' dimension %u is negative (%lld)", name.c_str(), t.name.c_str(), d,
                      (long long)t.ne[d]);
    }
    BK_TRY(c.get(&t.type));
    BK_TRY(c.get(&t.offset));
    if (!ggml_type_known(t.type)) {
      const char* refused = ggml_refused_type_name(t.type);
      return errorf("%s: tensor '%s' has ggml type %s, which bitkd does not read (it reads %s); requantize the "
                    "file from its source model to one of those (llama-quantize <in> <out> Q4_K_M, say)",
                    name.c_str(), t.name.c_str(), refused ? refused : ("number " + std::to_string(t.type)).c_str(),
                    ggml_supported_types_text());
    }
    // Overflow-safe size: bound every dimension by the file size first.
    uint64_t numel = 1;
    for (int64_t d : t.ne) {
      if (d != 0 && numel > (uint64_t)INT64_MAX / (uint64_t)d)
        return errorf("%s: tensor '%s' has too many elements", name.c_str(), t.name.c_str());
      numel *= (uint64_t)d;
    }
    if (t.ne[0] % ggml_block_size(t.type) != 0)
      return errorf("%s: tensor '%s' of type %s has rows of %lld elements, not a multiple of its block size %lld",
                    name.c_str(), t.name.c_str(), ggml_type_name(t.type), (long long)t.ne[0],
                    (long long)ggml_block_size(t.type));
    uint64_t blocks = numel / (uint64_t)ggml_block_size(t.type);
    if (blocks > out->size)  // also keeps blocks * type size from overflowing
      return errorf("%s: truncated or corrupt GGUF file: tensor '%s' has %llu elements, more than the %llu-byte file "
                    "can hold",
                    name.c_str(), t.name.c_str(), (unsigned long long)numel, (unsigned long long)out->size);
    t.nbytes = blocks * (uint64_t)ggml_type_size(t.type);
  }
  out->data_start = align_up(c.pos, out->alignment);
  if (out->data_start > out->size && n_tensors > 0)
    return errorf("%s: truncated GGUF file: the tensor data section would start at byte %llu, past the end (%llu bytes)",
                  name.c_str(), (unsigned long long)out->data_start, (unsigned long long)out->size);
  for (const GgufTensorInfo& t : out->tensors) {
    if (t.offset % out->alignment != 0)
      return errorf("%s: tensor '%s' data offset %llu is not a multiple of the alignment %u", name.c_str(),
                    t.name.c_str(), (unsigned long long)t.offset, out->alignment);
    uint64_t avail = out->size - out->data_start;
    if (t.offset > avail || t.nbytes > avail - t.offset)
      return errorf("%s: truncated GGUF file: tensor '%s' needs bytes %llu..%llu of the data section, which has %llu",
                    name.c_str(), t.name.c_str(), (unsigned long long)t.offset,
                    (unsigned long long)(t.offset + t.nbytes), (unsigned long long)avail);
  }
  return ok_status();
}

Status gguf_parse(std::string bytes, const std::string& name, GgufFile* out) {
  *out = GgufFile();
  out->path = name;
  out->bytes = std::move(bytes);
  out->size = out->bytes.size();
  return parse_file(name, out);
}

Status gguf_read(const std::string& path, GgufFile* out) {
  std::string bytes;
  Status st = read_file(path, &bytes);
  if (!st.ok()) return errorf("%s: cannot read GGUF file: %s", path.c_str(), st.msg.c_str());
  return gguf_parse(std::move(bytes), path, out);
}

Status gguf_map(const std::string& path, GgufFile* out) {
  *out = GgufFile();
  out->path = path;
  size_t len = 0;
  BK_TRY(map_file_readonly(path, "GGUF file", &out->mapping, &len));
  out->size = len;
  return parse_file(path, out);
}

const uint8_t* gguf_file_data(const GgufFile& f) {
  return f.mapping ? (const uint8_t*)f.mapping.get() : (const uint8_t*)f.bytes.data();
}

void gguf_release_tensor(const GgufFile& f, const GgufTensorInfo& t) {
  if (f.mapping) release_mapped_range(gguf_tensor_data(f, t), t.nbytes);
}

const GgufKv* gguf_find_kv(const GgufFile& f, const std::string& key) {
  for (const GgufKv& kv : f.kv)
    if (kv.key == key) return &kv;
  return nullptr;
}

const GgufTensorInfo* gguf_find_tensor(const GgufFile& f, const std::string& name) {
  for (const GgufTensorInfo& t : f.tensors)
    if (t.name == name) return &t;
  return nullptr;
}

const uint8_t* gguf_tensor_data(const GgufFile& f, const GgufTensorInfo& t) {
  return gguf_file_data(f) + f.data_start + t.offset;
}

static Status missing(const GgufFile& f, const std::string& key, bool required, bool* found) {
  if (found) *found = false;
  if (required) return errorf("%s: metadata key '%s' is missing", f.path.c_str(), key.c_str());
  return ok_status();
}

Status gguf_get_int(const GgufFile& f, const std::string& key, int64_t* out, bool required, bool* found) {
  const GgufKv* kv = gguf_find_kv(f, key);
  if (!kv) return missing(f, key, required, found);
  if (!is_int_type(kv->value.type))
    return errorf("%s: metadata key '%s' is %s, expected an integer", f.path.c_str(), key.c_str(),
                  gguf_type_name(kv->value.type));
  if (kv->value.type == GGUF_TYPE_UINT64 && kv->value.u > (uint64_t)INT64_MAX)
    return errorf("%s: metadata key '%s' value %llu is too large", f.path.c_str(), key.c_str(),
                  (unsigned long long)kv->value.u);
  *out = (int64_t)kv->value.u;
  if (found) *found = true;
  return ok_status();
}

Status gguf_get_float(const GgufFile& f, const std::string& key, double* out, bool required, bool* found) {
  const GgufKv* kv = gguf_find_kv(f, key);
  if (!kv) return missing(f, key, required, found);
  if (kv->value.type == GGUF_TYPE_FLOAT32 || kv->value.type == GGUF_TYPE_FLOAT64) {
    *out = kv->value.f;
  } else if (is_int_type(kv->value.type)) {
    *out = is_signed(kv->value.type) ? (double)(int64_t)kv->value.u : (double)kv->value.u;
  } else {
    return errorf("%s: metadata key '%s' is %s, expected a number", f.path.c_str(), key.c_str(),
                  gguf_type_name(kv->value.type));
  }
  if (found) *found = true;
  return ok_status();
}

Status gguf_get_bool(const GgufFile& f, const std::string& key, bool* out, bool required, bool* found) {
  const GgufKv* kv = gguf_find_kv(f, key);
  if (!kv) return missing(f, key, required, found);
  if (kv->value.type != GGUF_TYPE_BOOL)
    return errorf("%s: metadata key '%s' is %s, expected bool", f.path.c_str(), key.c_str(),
                  gguf_type_name(kv->value.type));
  *out = kv->value.u != 0;
  if (found) *found = true;
  return ok_status();
}

Status gguf_get_str(const GgufFile& f, const std::string& key, std::string* out, bool required, bool* found) {
  const GgufKv* kv = gguf_find_kv(f, key);
  if (!kv) return missing(f, key, required, found);
  if (kv->value.type != GGUF_TYPE_STRING)
    return errorf("%s: metadata key '%s' is %s, expected a string", f.path.c_str(), key.c_str(),
                  gguf_type_name(kv->value.type));
  *out = kv->value.str;
  if (found) *found = true;
  return ok_status();
}

// ---- ternary blocks ----------------------------------------------------------------
// TQ2_0: two 2-bit code blocks of 128 weights (core/ternary_block.h), then d.
void tq2_0_pack_block(const int8_t* codes, uint16_t d, uint8_t* out) {
  i2_block_pack(codes, 32, out);
  i2_block_pack(codes + 128, 32, out + 32);
  memcpy(out + 64, &d, 2);
}

void tq2_0_unpack_block(const uint8_t* in, int8_t* codes, uint16_t* d) {
  i2_block_unpack(in, 32, codes);
  i2_block_unpack(in + 32, 32, codes + 128);
  memcpy(d, in + 64, 2);
}

// n trits (most significant first) -> one byte holding ceil(v * 256 / 243).
static uint8_t pack_trits(const int8_t* c, int stride, int n) {
  uint32_t v = 0;
  for (int k = 0; k < n; k++) v = v * 3 + (uint32_t)(c[k * stride] + 1);
  for (int k = n; k < 5; k++) v *= 3;  // pad with zero trits at the low end
  return (uint8_t)((v * 256 + 242) / 243);
}

static int unpack_trit(uint8_t b, int k) {
  static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
  uint8_t q = (uint8_t)(b * pow3[k]);
  return ((uint16_t)q * 3) >> 8;  // 0, 1 or 2
}

void tq1_0_pack_block(const int8_t* codes, uint16_t d, uint8_t* out) {
  for (int m = 0; m < 32; m++) out[m] = pack_trits(codes + m, 32, 5);
  for (int m = 0; m < 16; m++) out[32 + m] = pack_trits(codes + 160 + m, 16, 5);
  for (int j = 0; j < 4; j++) out[48 + j] = pack_trits(codes + 240 + j, 4, 4);
  memcpy(out + 52, &d, 2);
}

void tq1_0_unpack_block(const uint8_t* in, int8_t* codes, uint16_t* d) {
  for (int k = 0; k < 5; k++)
    for (int m = 0; m < 32; m++) codes[m + 32 * k] = (int8_t)(unpack_trit(in[m], k) - 1);
  for (int k = 0; k < 5; k++)
    for (int m = 0; m < 16; m++) codes[160 + m + 16 * k] = (int8_t)(unpack_trit(in[32 + m], k) - 1);
  for (int k = 0; k < 4; k++)
    for (int j = 0; j < 4; j++) codes[240 + j + 4 * k] = (int8_t)(unpack_trit(in[48 + j], k) - 1);
  memcpy(d, in + 52, 2);
}

Status ternary_codes_to_tq(uint32_t type, const int8_t* codes, int64_t rows, int64_t cols, uint16_t d,
                           std::string* out) {
  if (type != GGML_TYPE_TQ1_0 && type != GGML_TYPE_TQ2_0)
    return errorf("ternary_codes_to_tq: type %s is not a ternary type", ggml_type_name(type));
  if (cols % kQK_K != 0)
    return errorf("ternary_codes_to_tq: %lld columns is not a multiple of %d", (long long)cols, kQK_K);
  int64_t n = rows * cols;
  for (int64_t i = 0; i < n; i++)
    if (codes[i] < -1 || codes[i] > 1)
      return errorf("ternary_codes_to_tq: code %d at [%lld, %lld] is not -1, 0 or 1", codes[i], (long long)(i / cols),
                    (long long)(i % cols));
  int64_t bs = ggml_type_size(type);
  out->assign((size_t)(n / kQK_K * bs), '\0');
  uint8_t* o = (uint8_t*)&(*out)[0];
  for (int64_t b = 0; b < n / kQK_K; b++) {
    if (type == GGML_TYPE_TQ2_0) tq2_0_pack_block(codes + b * kQK_K, d, o + b * bs);
    else tq1_0_pack_block(codes + b * kQK_K, d, o + b * bs);
  }
  return ok_status();
}

Status tq_to_ternary_codes(uint32_t type, const uint8_t* data, int64_t rows, int64_t cols, int8_t* codes,
                           std::vector<uint16_t>* block_d) {
  if (type != GGML_TYPE_TQ1_0 && type != GGML_TYPE_TQ2_0)
    return errorf("tq_to_ternary_codes: type %s is not a ternary type", ggml_type_name(type));
  if (cols % kQK_K != 0)
    return errorf("tq_to_ternary_codes: %lld columns is not a multiple of %d", (long long)cols, kQK_K);
  int64_t nb = rows * cols / kQK_K, bs = ggml_type_size(type);
  block_d->resize(nb);
  for (int64_t b = 0; b < nb; b++) {
    if (type == GGML_TYPE_TQ2_0) tq2_0_unpack_block(data + b * bs, codes + b * kQK_K, &(*block_d)[b]);
    else tq1_0_unpack_block(data + b * bs, codes + b * kQK_K, &(*block_d)[b]);
  }
  return ok_status();
}

Status gguf_tensor_to_f32(const GgufFile& f, const GgufTensorInfo& t, float* dst, size_t dst_numel) {
  int64_t n = t.numel();
  if ((size_t)n != dst_numel)
    return errorf("%s: tensor '%s' has %lld elements, the destination %zu", f.path.c_str(), t.name.c_str(),
                  (long long)n, dst_numel);
  const uint8_t* p = gguf_tensor_data(f, t);
  switch (t.type) {
    case GGML_TYPE_F32:
      memcpy(dst, p, (size_t)n * 4);
      break;
    case GGML_TYPE_F16:
      for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
      break;
    case GGML_TYPE_BF16:
      for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      break;
    case GGML_TYPE_TQ1_0:
    case GGML_TYPE_TQ2_0: {
      int8_t codes[kQK_K];
      int64_t bs = ggml_type_size(t.type);
      for (int64_t b = 0; b < n / kQK_K; b++) {
        uint16_t h;
        if (t.type == GGML_TYPE_TQ2_0) tq2_0_unpack_block(p + b * bs, codes, &h);
        else tq1_0_unpack_block(p + b * bs, codes, &h);
        float d = f16_to_f32(h);
        for (int j = 0; j < kQK_K; j++) dst[kQK_K * b + j] = d * (float)codes[j];
      }
    } break;
    default:
      if (dequantize_blocks(t.type, p, n / ggml_block_size(t.type), dst)) break;
      return errorf("%s: tensor '%s' has type %s, which cannot be converted to f32", f.path.c_str(), t.name.c_str(),
                    ggml_type_name(t.type));
  }
  return ok_status();
}

// ---- writer -------------------------------------------------------------------------
void gguf_set(GgufWriter* w, const std::string& key, const GgufValue& v) {
  for (GgufKv& kv : w->kv)
    if (kv.key == key) {
      kv.value = v;
      return;
    }
  w->kv.push_back(GgufKv{key, v});
}

Status gguf_add_tensor(GgufWriter* w, const std::string& name, uint32_t type, const std::vector<int64_t>& ne,
                       std::string data) {
  if (name.empty() || name.size() >= kGgmlMaxName)
    return errorf("GGUF tensor name '%s' must be 1 to %zu bytes", name.c_str(), kGgmlMaxName - 1);
  for (const GgufWriterTensor& t : w->tensors)
    if (t.name == name) return errorf("GGUF tensor '%s' added twice", name.c_str());
  if (!ggml_type_known(type)) return errorf("GGUF tensor '%s': unknown ggml type %u", name.c_str(), type);
  if (ne.empty() || ne.size() > 4) return errorf("GGUF tensor '%s' needs 1 to 4 dimensions", name.c_str());
  int64_t numel = 1;
  for (int64_t d : ne) {
    if (d <= 0) return errorf("GGUF tensor '%s' has a dimension %lld", name.c_str(), (long long)d);
    numel *= d;
  }
  if (ne[0] % ggml_block_size(type) != 0)
    return errorf("GGUF tensor '%s': %s needs rows that are a multiple of %lld elements, got %lld", name.c_str(),
                  ggml_type_name(type), (long long)ggml_block_size(type), (long long)ne[0]);
  uint64_t want = (uint64_t)(numel / ggml_block_size(type) * ggml_type_size(type));
  if (data.size() != want)
    return errorf("GGUF tensor '%s': %zu data bytes, expected %llu for %s", name.c_str(), data.size(),
                  (unsigned long long)want, ggml_type_name(type));
  w->tensors.push_back(GgufWriterTensor{name, ne, type, std::move(data)});
  return ok_status();
}

Status gguf_add_tensor_f32(GgufWriter* w, const std::string& name, uint32_t type, const std::vector<int64_t>& ne,
                           const float* data) {
  int64_t numel = 1;
  for (int64_t d : ne) numel *= d;
  std::string bytes;
  if (type == GGML_TYPE_F32) {
    bytes.assign((const char*)data, (size_t)numel * 4);
  } else if (type == GGML_TYPE_F16 || type == GGML_TYPE_BF16) {
    bytes.resize((size_t)numel * 2);
    for (int64_t i = 0; i < numel; i++) {
      uint16_t h = type == GGML_TYPE_F16 ? f32_to_f16(data[i]) : f32_to_bf16(data[i]);
      memcpy(&bytes[2 * i], &h, 2);
    }
  } else {
    return errorf("GGUF tensor '%s': gguf_add_tensor_f32 writes f32, f16 or bf16, not %s", name.c_str(),
                  ggml_type_name(type));
  }
  return gguf_add_tensor(w, name, type, ne, std::move(bytes));
}

static void serialize_value(const GgufValue& v, std::string* out) {
  put_u32(out, v.type);
  if (v.type == GGUF_TYPE_STRING) {
    put_str(out, v.str);
  } else if (v.type == GGUF_TYPE_ARRAY) {
    put_u32(out, v.arr_type);
    put_u64(out, v.arr_size());
    if (v.arr_type == GGUF_TYPE_STRING) {
      for (const std::string& s : v.arr_str) put_str(out, s);
    } else if (v.arr_type == GGUF_TYPE_FLOAT32 || v.arr_type == GGUF_TYPE_FLOAT64) {
      for (double x : v.arr_f) encode_scalar(v.arr_type, 0, x, out);
    } else {
      for (uint64_t x : v.arr_int) encode_scalar(v.arr_type, x, 0.0, out);
    }
  } else {
    encode_scalar(v.type, v.u, v.f, out);
  }
}

// Header + kv + tensor infos + padding; tensor offsets follow info order.
static Status serialize_head(const GgufWriter& w, std::string* out, uint64_t* data_bytes) {
  uint64_t al = w.alignment;
  if (al == 0 || (al & (al - 1)) != 0) return errorf("GGUF alignment %llu is not a power of two", (unsigned long long)al);
  std::vector<GgufKv> kv = w.kv;
  bool has_align = false;
  for (GgufKv& e : kv)
    if (e.key == "general.alignment") has_align = true, e.value = gguf_u32(w.alignment);
  if (!has_align && w.alignment != kGgufDefaultAlignment) kv.push_back(GgufKv{"general.alignment", gguf_u32(w.alignment)});
  std::set<std::string> keys;
  for (const GgufKv& e : kv) {
    if (e.key.empty()) return errorf("GGUF metadata key is empty");
    if (!keys.insert(e.key).second) return errorf("GGUF metadata key '%s' set twice", e.key.c_str());
    if (e.value.type == GGUF_TYPE_ARRAY && e.value.arr_type == GGUF_TYPE_ARRAY)
      return errorf("GGUF metadata key '%s': arrays of arrays are not supported", e.key.c_str());
  }
  out->clear();
  out->append("GGUF", 4);
  put_u32(out, 3);
  put_u64(out, w.tensors.size());
  put_u64(out, kv.size());
  for (const GgufKv& e : kv) {
    put_str(out, e.key);
    serialize_value(e.value, out);
  }
  uint64_t off = 0;
  for (const GgufWriterTensor& t : w.tensors) {
    put_str(out, t.name);
    put_u32(out, (uint32_t)t.ne.size());
    for (int64_t d : t.ne) put_u64(out, (uint64_t)d);
    put_u32(out, t.type);
    put_u64(out, off);
    off += align_up(t.data.size(), al);
  }
  out->resize(align_up(out->size(), al), '\0');
  *data_bytes = off;
  return ok_status();
}

Status gguf_serialize(const GgufWriter& w, std::string* out) {
  uint64_t data_bytes = 0;
  BK_TRY(serialize_head(w, out, &data_bytes));
  for (const GgufWriterTensor& t : w.tensors) {
    out->append(t.data);
    out->resize(align_up(out->size(), w.alignment), '\0');
  }
  return ok_status();
}

Status gguf_write(const std::string& path, const GgufWriter& w) {
  std::string head;
  uint64_t data_bytes = 0;
  BK_TRY(serialize_head(w, &head, &data_bytes));
  std::string tmp = temp_path_for(path);
  FILE* fp = fopen(tmp.c_str(), "wb");
  if (!fp) return errorf("%s: cannot create %s: %s", path.c_str(), tmp.c_str(), strerror(errno));
  bool ok = fwrite(head.data(), 1, head.size(), fp) == head.size();
  static const char zeros[256] = {0};
  for (const GgufWriterTensor& t : w.tensors) {
    if (!ok) break;
    ok = fwrite(t.data.data(), 1, t.data.size(), fp) == t.data.size();
    size_t pad = align_up(t.data.size(), w.alignment) - t.data.size();
    while (ok && pad > 0) {
      size_t k = pad < sizeof zeros ? pad : sizeof zeros;
      ok = fwrite(zeros, 1, k, fp) == k;
      pad -= k;
    }
  }
  if (fclose(fp) != 0) ok = false;
  if (!ok) {
    remove(tmp.c_str());
    return errorf("%s: writing the GGUF file failed (disk full?)", path.c_str());
  }
  return commit_temp_file(tmp, path);
}

}  // namespace bk
