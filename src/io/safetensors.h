#pragma once
// safetensors reader and writer (the Hugging Face format):
//
//   [8 bytes: header length N, little-endian u64]
//   [N bytes: JSON header, padded with spaces to a multiple of 8]
//   [data: raw little-endian tensors]
//
// The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
// with offsets relative to the first byte after the header; "__metadata__" is an
// optional string -> string map. The data section must be covered exactly by the
// tensors (no holes, no overlaps), as the reference implementation requires, so
// files written here load in Python's `safetensors` and vice versa.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"

namespace bk {

enum StDtype {
  ST_BOOL = 0,
  ST_U8,
  ST_I8,
  ST_I16,
  ST_U16,
  ST_F16,
  ST_BF16,
  ST_I32,
  ST_U32,
  ST_F32,
  ST_I64,
  ST_U64,
  ST_F64,
};

const char* st_dtype_name(StDtype d);  // "F32", "BF16", ...
size_t st_dtype_size(StDtype d);       // bytes per element
bool st_dtype_from_name(const std::string& name, StDtype* out);

struct StTensor {
  std::string name;
  StDtype dtype = ST_F32;
  std::vector<int64_t> shape;  // [] is a scalar (one element)
  size_t begin = 0, end = 0;   // byte range within the data section
  size_t numel() const;
  size_t nbytes() const { return end - begin; }
};

// A file read into memory (safetensors_read) or mapped read-only (safetensors_map).
struct SafeTensorsFile {
  std::string path;                            // for error messages
  std::string bytes;                           // safetensors_read: the entire file
  std::shared_ptr<void> mapping;               // safetensors_map: the mapping (unmapped with the last copy)
  size_t size = 0;                             // mapped file bytes
  size_t data_start = 0;                       // 8 + header length
  std::vector<StTensor> tensors;               // sorted by data offset
  std::map<std::string, std::string> metadata; // "__metadata__"
};

// Reads and validates a file. Every error names the file and the problem:
// too short, header length past the end, header not JSON, bad dtype/shape,
// offsets out of range, overlapping or leaving holes, size/shape mismatch.
Status safetensors_read(const std::string& path, SafeTensorsFile* out);
// Same, for bytes already in memory (`name` is used in messages).
Status safetensors_parse(std::string bytes, const std::string& name, SafeTensorsFile* out);
// Maps the file instead of reading it (io/mapped_file.h): a loader converting
// tensor by tensor and releasing each (safetensors_release) holds about one
// tensor of the file at a time. A no-op release for files read into memory.
Status safetensors_map(const std::string& path, SafeTensorsFile* out);
void safetensors_release(const SafeTensorsFile& f, const StTensor& t);

const StTensor* safetensors_find(const SafeTensorsFile& f, const std::string& name);
// Pointer to a tensor's raw little-endian bytes inside f.bytes (unaligned in general).
const uint8_t* safetensors_data(const SafeTensorsFile& f, const StTensor& t);
// Copies a tensor into floats, converting F16/BF16/F64 (and integer types) to F32.
// When `expect_shape` is non-null the shapes must match exactly; `dst` holds numel floats.
Status safetensors_get_f32(const SafeTensorsFile& f, const std::string& name, const std::vector<int64_t>* expect_shape,
                           float* dst, size_t dst_numel);

// Writer: entries point at caller-owned data, which must stay alive until
// safetensors_write returns. The file is written atomically.
struct StWriteEntry {
  std::string name;
  StDtype dtype;
  std::vector<int64_t> shape;
  const void* data;
};

struct SafeTensorsWriter {
  std::vector<StWriteEntry> entries;
  std::map<std::string, std::string> metadata;
};

void st_writer_add(SafeTensorsWriter* w, const std::string& name, StDtype dtype, const std::vector<int64_t>& shape,
                   const void* data);
// Checks names (non-empty, unique, not "__metadata__") and writes. Tensors are
// laid out by decreasing element size (then in insertion order) so every
// tensor is aligned to its element size, the header padded to 8 bytes.
Status safetensors_write(const std::string& path, const SafeTensorsWriter& w);
// The serialized file as bytes (what safetensors_write puts on disk).
Status safetensors_serialize(const SafeTensorsWriter& w, std::string* out);

}  // namespace bk
