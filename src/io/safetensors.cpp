#include "io/safetensors.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/fs.h"
#include "core/half.h"
#include "io/mapped_file.h"

namespace bk {

namespace {

struct DtypeInfo {
  StDtype d;
  const char* name;
  size_t size;
};

const DtypeInfo k_dtypes[] = {
    {ST_BOOL, "BOOL", 1}, {ST_U8, "U8", 1},   {ST_I8, "I8", 1},   {ST_I16, "I16", 2}, {ST_U16, "U16", 2},
    {ST_F16, "F16", 2},   {ST_BF16, "BF16", 2}, {ST_I32, "I32", 4}, {ST_U32, "U32", 4}, {ST_F32, "F32", 4},
    {ST_I64, "I64", 8},   {ST_U64, "U64", 8}, {ST_F64, "F64", 8},
};

// The reference implementation refuses headers above 100 MB; so do we, which
// also turns most foreign files into a clear "not a safetensors file".
constexpr uint64_t k_max_header = 100u * 1000u * 1000u;

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

void write_u64_le(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

template <typename T>
T load_le(const uint8_t* p) {
  // x86-64 and every platform we target are little-endian; memcpy handles alignment.
  T v;
  memcpy(&v, p, sizeof(T));
  return v;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); i++) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

}  // namespace

const char* st_dtype_name(StDtype d) {
  for (const DtypeInfo& i : k_dtypes)
    if (i.d == d) return i.name;
  return "?";
}

size_t st_dtype_size(StDtype d) {
  for (const DtypeInfo& i : k_dtypes)
    if (i.d == d) return i.size;
  return 0;
}

bool st_dtype_from_name(const std::string& name, StDtype* out) {
  for (const DtypeInfo& i : k_dtypes)
    if (name == i.name) {
      *out = i.d;
      return true;
    }
  return false;
}

size_t StTensor::numel() const {
  size_t n = 1;
  for (int64_t d : shape) n *= (size_t)d;
  return n;
}

// ---- reading -------------------------------------------------------------------

namespace {
Status parse_file(SafeTensorsFile* out);
const uint8_t* file_base(const SafeTensorsFile& f) {
  return f.mapping ? (const uint8_t*)f.mapping.get() : (const uint8_t*)f.bytes.data();
}
}  // namespace

Status safetensors_read(const std::string& path, SafeTensorsFile* out) {
  std::string bytes;
  if (!file_exists(path)) return errorf("%s: no such file", path.c_str());
  BK_TRY(read_file(path, &bytes));
  return safetensors_parse(std::move(bytes), path, out);
}

Status safetensors_parse(std::string bytes, const std::string& name, SafeTensorsFile* out) {
  *out = SafeTensorsFile();
  out->path = name;
  out->bytes = std::move(bytes);
  return parse_file(out);
}

Status safetensors_map(const std::string& path, SafeTensorsFile* out) {
  *out = SafeTensorsFile();
  out->path = path;
  if (!file_exists(path)) return errorf("%s: no such file", path.c_str());
  BK_TRY(map_file_readonly(path, "safetensors file", &out->mapping, &out->size));
  return parse_file(out);
}

void safetensors_release(const SafeTensorsFile& f, const StTensor& t) {
  if (f.mapping) release_mapped_range(safetensors_data(f, t), t.nbytes());
}

namespace {

// Validates the header of out's bytes (read or mapped) and fills the tensor list.
Status parse_file(SafeTensorsFile* out) {
  const char* fn = out->path.c_str();
  const char* bytes = (const char*)file_base(*out);
  const size_t size = out->mapping ? out->size : out->bytes.size();
  if (size < 8)
    return errorf("%s: not a safetensors file: %zu bytes, too short for the 8-byte header length (truncated?)", fn,
                  size);
  const uint64_t hlen = read_u64_le((const uint8_t*)bytes);
  if (hlen > k_max_header)
    return errorf("%s: not a safetensors file: header length %llu is implausible (limit %llu bytes)", fn,
                  (unsigned long long)hlen, (unsigned long long)k_max_header);
  if (hlen > size - 8)
    return errorf("%s: header length %llu runs past the end of the file (%zu bytes): truncated or not a "
                  "safetensors file",
                  fn, (unsigned long long)hlen, size);
  if (hlen < 2 || bytes[8] != '{')
    return errorf("%s: not a safetensors file: the header does not start with a JSON object", fn);

  nlohmann::json h;
  try {
    h = nlohmann::json::parse(bytes + 8, bytes + 8 + hlen);
  } catch (const std::exception& e) {
    return errorf("%s: header is not valid JSON (%s): not a safetensors file or corrupted", fn, e.what());
  }
  if (!h.is_object()) return errorf("%s: header JSON is not an object", fn);

  out->data_start = 8 + (size_t)hlen;
  const size_t data_size = size - out->data_start;
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& key = it.key();
    const nlohmann::json& v = it.value();
    if (key == "__metadata__") {
      if (!v.is_object()) return errorf("%s: __metadata__ must be an object of strings", fn);
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          return errorf("%s: __metadata__ value for '%s' is not a string (safetensors metadata is string -> string)",
                        fn, m.key().c_str());
        out->metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const char* tn = key.c_str();
    if (!v.is_object()) return errorf("%s: tensor '%s': header entry is not an object", fn, tn);
    StTensor t;
    t.name = key;
    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) return errorf("%s: tensor '%s': missing dtype", fn, tn);
    if (!st_dtype_from_name(dt->get<std::string>(), &t.dtype))
      return errorf("%s: tensor '%s': unknown dtype '%s'", fn, tn, dt->get<std::string>().c_str());
    auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array()) return errorf("%s: tensor '%s': missing shape array", fn, tn);
    size_t numel = 1;
    bool overflow = false;
    for (const auto& d : *sh) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0)
        return errorf("%s: tensor '%s': shape %s has a dimension that is not a non-negative integer", fn, tn,
                      sh->dump().c_str());
      int64_t dim = d.get<int64_t>();
      t.shape.push_back(dim);
      if (dim != 0 && numel > SIZE_MAX / (size_t)dim) overflow = true;
      numel *= (size_t)dim;
    }
    auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      return errorf("%s: tensor '%s': data_offsets must be [begin, end] non-negative integers", fn, tn);
    uint64_t b = (*off)[0].get<uint64_t>(), e = (*off)[1].get<uint64_t>();
    if (b > e) return errorf("%s: tensor '%s': data_offsets [%llu, %llu] end before begin", fn, tn,
                             (unsigned long long)b, (unsigned long long)e);
    if (e > data_size)
      return errorf("%s: tensor '%s': data_offsets [%llu, %llu] out of range: the data section has %zu bytes "
                    "(file truncated?)",
                    fn, tn, (unsigned long long)b, (unsigned long long)e, data_size);
    t.begin = (size_t)b;
    t.end = (size_t)e;
    if (overflow || numel > SIZE_MAX / st_dtype_size(t.dtype) || numel * st_dtype_size(t.dtype) != t.nbytes())
      return errorf("%s: tensor '%s': %s x %s needs %zu bytes but data_offsets span %zu", fn, tn,
                    st_dtype_name(t.dtype), shape_str(t.shape).c_str(), numel * st_dtype_size(t.dtype),
                    t.nbytes());
    out->tensors.push_back(std::move(t));
  }
  std::stable_sort(out->tensors.begin(), out->tensors.end(), [](const StTensor& a, const StTensor& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  // The tensors must tile the data section exactly.
  size_t pos = 0;
  const StTensor* prev = nullptr;
  for (const StTensor& t : out->tensors) {
    if (t.begin < pos)
      return errorf("%s: tensors '%s' and '%s' overlap (bytes %zu..%zu and %zu..%zu)", fn, prev->name.c_str(),
                    t.name.c_str(), prev->begin, prev->end, t.begin, t.end);
    if (t.begin > pos)
      return errorf("%s: hole in the data section before tensor '%s' (bytes %zu..%zu are not part of any tensor)",
                    fn, t.name.c_str(), pos, t.begin);
    pos = t.end;
    prev = &t;
  }
  if (pos != data_size)
    return errorf("%s: the data section has %zu bytes but the tensors cover %zu (%zu trailing bytes)", fn, data_size,
                  pos, data_size - pos);
  return ok_status();
}

}  // namespace

const StTensor* safetensors_find(const SafeTensorsFile& f, const std::string& name) {
  for (const StTensor& t : f.tensors)
    if (t.name == name) return &t;
  return nullptr;
}

const uint8_t* safetensors_data(const SafeTensorsFile& f, const StTensor& t) {
  return file_base(f) + f.data_start + t.begin;
}

Status safetensors_get_f32(const SafeTensorsFile& f, const std::string& name, const std::vector<int64_t>* expect_shape,
                           float* dst, size_t dst_numel) {
  const StTensor* t = safetensors_find(f, name);
  if (!t) return errorf("%s: tensor '%s' is missing", f.path.c_str(), name.c_str());
  if (expect_shape && *expect_shape != t->shape)
    return errorf("%s: tensor '%s' has shape %s, expected %s", f.path.c_str(), name.c_str(),
                  shape_str(t->shape).c_str(), shape_str(*expect_shape).c_str());
  const size_t n = t->numel();
  if (n != dst_numel)
    return errorf("%s: tensor '%s' has %zu elements, expected %zu", f.path.c_str(), name.c_str(), n, dst_numel);
  const uint8_t* p = safetensors_data(f, *t);
  switch (t->dtype) {
    case ST_F32: memcpy(dst, p, n * 4); break;
    case ST_F16: for (size_t i = 0; i < n; i++) dst[i] = f16_to_f32(load_le<uint16_t>(p + 2 * i)); break;
    case ST_BF16: for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(load_le<uint16_t>(p + 2 * i)); break;
    case ST_F64: for (size_t i = 0; i < n; i++) dst[i] = (float)load_le<double>(p + 8 * i); break;
    case ST_BOOL:
    case ST_U8: for (size_t i = 0; i < n; i++) dst[i] = (float)p[i]; break;
    case ST_I8: for (size_t i = 0; i < n; i++) dst[i] = (float)(int8_t)p[i]; break;
    case ST_I16: for (size_t i = 0; i < n; i++) dst[i] = (float)load_le<int16_t>(p + 2 * i); break;
    case ST_U16: for (size_t i = 0; i < n; i++) dst[i] = (float)load_le<uint16_t>(p + 2 * i); break;
    case ST_I32: for (size_t i = 0; i < n; i++) dst[i] = (float)load_le<int32_t>(p + 4 * i); break;
    case ST_U32: for (size_t i = 0; i < n; i++) dst[i] = (float)load_le<uint32_t>(p + 4 * i); break;
    case ST_I64: for (size_t i = 0; i < n; i++) dst[i] = (float)load_le<int64_t>(p + 8 * i); break;
    case ST_U64: for (size_t i = 0; i < n; i++) dst[i] = (float)load_le<uint64_t>(p + 8 * i); break;
  }
  return ok_status();
}

// ---- writing -------------------------------------------------------------------

void st_writer_add(SafeTensorsWriter* w, const std::string& name, StDtype dtype, const std::vector<int64_t>& shape,
                   const void* data) {
  w->entries.push_back(StWriteEntry{name, dtype, shape, data});
}

namespace {

// The header (padded) and the order in which tensor data follow it.
Status build_layout(const SafeTensorsWriter& w, std::string* header, std::vector<size_t>* order,
                    std::vector<size_t>* nbytes, size_t* data_size) {
  order->resize(w.entries.size());
  for (size_t i = 0; i < order->size(); i++) (*order)[i] = i;
  std::stable_sort(order->begin(), order->end(), [&](size_t a, size_t b) {
    return st_dtype_size(w.entries[a].dtype) > st_dtype_size(w.entries[b].dtype);
  });
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!w.metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (auto& kv : w.metadata) m[kv.first] = kv.second;
    h["__metadata__"] = m;
  }
  nbytes->assign(w.entries.size(), 0);
  size_t pos = 0;
  for (size_t i : *order) {
    const StWriteEntry& e = w.entries[i];
    if (e.name.empty() || e.name == "__metadata__")
      return errorf("safetensors: invalid tensor name '%s'", e.name.c_str());
    if (h.contains(e.name)) return errorf("safetensors: duplicate tensor name '%s'", e.name.c_str());
    size_t n = 1;
    for (int64_t d : e.shape) {
      if (d < 0) return errorf("safetensors: tensor '%s' has a negative dimension", e.name.c_str());
      n *= (size_t)d;
    }
    (*nbytes)[i] = n * st_dtype_size(e.dtype);
    if ((*nbytes)[i] && !e.data) return errorf("safetensors: tensor '%s' has no data", e.name.c_str());
    nlohmann::ordered_json t;
    t["dtype"] = st_dtype_name(e.dtype);
    t["shape"] = e.shape;
    t["data_offsets"] = {pos, pos + (*nbytes)[i]};
    h[e.name] = t;
    pos += (*nbytes)[i];
  }
  try {
    *header = h.dump();
  } catch (const std::exception& ex) {
    return errorf("safetensors: cannot encode the header (%s): names and metadata must be valid UTF-8", ex.what());
  }
  // Pad with spaces so the data section starts 8-byte aligned.
  header->append((8 - header->size() % 8) % 8, ' ');
  *data_size = pos;
  return ok_status();
}

}  // namespace

Status safetensors_serialize(const SafeTensorsWriter& w, std::string* out) {
  std::string header;
  std::vector<size_t> order, nbytes;
  size_t data_size = 0;
  BK_TRY(build_layout(w, &header, &order, &nbytes, &data_size));
  out->assign(8 + header.size() + data_size, '\0');
  uint8_t* p = (uint8_t*)&(*out)[0];
  write_u64_le(p, header.size());
  memcpy(p + 8, header.data(), header.size());
  size_t at = 8 + header.size();
  for (size_t i : order) {
    if (nbytes[i]) memcpy(p + at, w.entries[i].data, nbytes[i]);
    at += nbytes[i];
  }
  return ok_status();
}

// Streams straight from the caller's buffers to a temp file (no copy of the
// whole checkpoint in memory), then renames it over `path`.
Status safetensors_write(const std::string& path, const SafeTensorsWriter& w) {
  std::string header;
  std::vector<size_t> order, nbytes;
  size_t data_size = 0;
  BK_TRY(with_context(build_layout(w, &header, &order, &nbytes, &data_size), "writing " + path));
  std::string dir = path_dirname(path);
  if (!dir.empty() && dir != ".") BK_TRY(make_dirs(dir));
  std::string tmp = temp_path_for(path);
  FILE* f = fopen(tmp.c_str(), "wb");
  if (!f) return errorf("cannot create %s: %s", tmp.c_str(), strerror(errno));
  uint8_t len[8];
  write_u64_le(len, header.size());
  bool bad = fwrite(len, 1, 8, f) != 8 || fwrite(header.data(), 1, header.size(), f) != header.size();
  for (size_t k = 0; k < order.size() && !bad; k++) {
    size_t i = order[k];
    if (nbytes[i]) bad = fwrite(w.entries[i].data, 1, nbytes[i], f) != nbytes[i];
  }
  bad = fflush(f) != 0 || bad;
  fclose(f);
  if (bad) {
    unlink(tmp.c_str());
    return errorf("cannot write %s (disk full?)", path.c_str());
  }
  return commit_temp_file(tmp, path);
}

}  // namespace bk
