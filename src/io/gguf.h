#pragma once
// GGUF v3 reader and writer (the llama.cpp / ggml model file format).
//
//   header     "GGUF", u32 version (3; 2 is read too), u64 n_tensors, u64 n_kv
//   kv         n_kv x { string key, u32 value type, value }
//   tensors    n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset }
//   padding    to general.alignment (default 32)
//   data       tensor data; each offset (relative to the data start) is a
//              multiple of the alignment, tensors back to back in info order
//
// Strings are u64 length + bytes (no terminator). Arrays are u32 element type +
// u64 count + elements; arrays of arrays are rejected, as llama.cpp does.
// Everything is little-endian. ne[0] is the innermost (contiguous) dimension,
// so a PyTorch [out, in] matrix has ne = {in, out}.
//
// Tensor types handled: F32, F16, BF16, TQ1_0 and TQ2_0 (read and written),
// and the block quants Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K .. Q6_K (read and
// dequantized: io/gguf_quants.h). TQ1_0 and TQ2_0 are BitNet b1.58 ternary
// blocks of 256 weights with one fp16 scale each:
//
//   TQ2_0  66 bytes: qs[64], d. A block is two 32-byte halves of 128 weights;
//          byte m of half h holds weights 128h + m + 32k in bits 2k..2k+1
//          (k = 0..3) as code = w + 1 in {0, 1, 2}.
//   TQ1_0  54 bytes: qs[48], qh[4], d. 5 trits per byte, most significant trit
//          first, stored as ceil(v * 256 / 243) for v = sum_k code_k 3^(4-k):
//          qs[0..32)  weights m + 32k        (160 weights),
//          qs[32..48) weights 160 + m + 16k  (80 weights),
//          qh[0..4)   weights 240 + j + 4k, k = 0..3, the fifth trit 0 (16 weights).
//          Digit k of a byte b is the high byte of 3 * (uint8)(b * 3^k).
//   Weight value = (code - 1) * d.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"

namespace bk {

enum GgufType : uint32_t {
  GGUF_TYPE_UINT8 = 0,
  GGUF_TYPE_INT8 = 1,
  GGUF_TYPE_UINT16 = 2,
  GGUF_TYPE_INT16 = 3,
  GGUF_TYPE_UINT32 = 4,
  GGUF_TYPE_INT32 = 5,
  GGUF_TYPE_FLOAT32 = 6,
  GGUF_TYPE_BOOL = 7,
  GGUF_TYPE_STRING = 8,
  GGUF_TYPE_ARRAY = 9,
  GGUF_TYPE_UINT64 = 10,
  GGUF_TYPE_INT64 = 11,
  GGUF_TYPE_FLOAT64 = 12,
};
const char* gguf_type_name(GgufType t);

// ggml tensor types (numbering from ggml.h; only those bitkd reads or writes).
enum GgmlType : uint32_t {
  GGML_TYPE_F32 = 0,
  GGML_TYPE_F16 = 1,
  GGML_TYPE_Q4_0 = 2,  // Q4_0 .. Q6_K: read and dequantized (io/gguf_quants.h)
  GGML_TYPE_Q4_1 = 3,
  GGML_TYPE_Q5_0 = 6,
  GGML_TYPE_Q5_1 = 7,
  GGML_TYPE_Q8_0 = 8,
  GGML_TYPE_Q2_K = 10,
  GGML_TYPE_Q3_K = 11,
  GGML_TYPE_Q4_K = 12,
  GGML_TYPE_Q5_K = 13,
  GGML_TYPE_Q6_K = 14,
  GGML_TYPE_BF16 = 30,
  GGML_TYPE_TQ1_0 = 34,
  GGML_TYPE_TQ2_0 = 35,
};
bool ggml_type_known(uint32_t t);
const char* ggml_type_name(uint32_t t);  // "f32", "tq2_0", ... ("?" when unknown)
int64_t ggml_block_size(uint32_t t);     // elements per block (1 for F32/F16/BF16)
int64_t ggml_type_size(uint32_t t);      // bytes per block
// Bytes for a row of ne0 elements (ne0 must be a multiple of the block size).
int64_t ggml_row_bytes(uint32_t t, int64_t ne0);

constexpr int kQK_K = 256;
constexpr int kTQ2_0Bytes = 66;
constexpr int kTQ1_0Bytes = 54;
constexpr uint32_t kGgufDefaultAlignment = 32;
constexpr size_t kGgmlMaxName = 64;  // names must be shorter (llama.cpp's GGML_MAX_NAME)

// One metadata value. Integer and bool scalars live in `u` (signed values as
// two's complement), floats in `f`, strings in `str`; arrays in the arr_*
// vector matching arr_type.
struct GgufValue {
  GgufType type = GGUF_TYPE_UINT32;
  GgufType arr_type = GGUF_TYPE_UINT8;  // element type when type == ARRAY
  uint64_t u = 0;
  double f = 0.0;
  std::string str;
  std::vector<uint64_t> arr_int;  // integer / bool elements (raw bits)
  std::vector<double> arr_f;      // FLOAT32 / FLOAT64 elements
  std::vector<std::string> arr_str;
  size_t arr_size() const;
};

GgufValue gguf_u32(uint32_t v);
GgufValue gguf_i32(int32_t v);
GgufValue gguf_u64(uint64_t v);
GgufValue gguf_f32(float v);
GgufValue gguf_bool(bool v);
GgufValue gguf_str(const std::string& v);
GgufValue gguf_arr_str(const std::vector<std::string>& v);
GgufValue gguf_arr_f32(const std::vector<float>& v);
GgufValue gguf_arr_i32(const std::vector<int32_t>& v);
GgufValue gguf_arr_u8(const std::string& bytes);

struct GgufKv {
  std::string key;
  GgufValue value;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // ne[0] innermost; 1 to 4 dims
  uint32_t type = GGML_TYPE_F32;
  uint64_t offset = 0;      // relative to the data section
  uint64_t nbytes = 0;
  int64_t numel() const;
};

// A GGUF file, read into memory (gguf_read) or mapped read-only (gguf_map).
struct GgufFile {
  std::string path;  // for messages
  std::string bytes;              // gguf_read: the whole file
  std::shared_ptr<void> mapping;  // gguf_map: the mapping (unmapped with the last copy)
  uint64_t size = 0;              // file bytes
  uint32_t version = 3;
  uint32_t alignment = kGgufDefaultAlignment;
  uint64_t data_start = 0;
  std::vector<GgufKv> kv;
  std::vector<GgufTensorInfo> tensors;
};

// Reads and validates. Errors name the file and the problem: not a GGUF file
// (magic), unsupported version, truncated at byte N while reading X, bad value
// type, array of arrays, duplicate key or tensor, bad shape or type, tensor
// data misaligned or past the end of the file.
Status gguf_read(const std::string& path, GgufFile* out);
Status gguf_parse(std::string bytes, const std::string& name, GgufFile* out);
// Maps the file instead of reading it: tensor data is paged in when read, so a
// loader that copies tensor by tensor and releases each one
// (gguf_release_tensor) holds about one tensor of the file at a time.
Status gguf_map(const std::string& path, GgufFile* out);
const uint8_t* gguf_file_data(const GgufFile& f);
// Mapped files: drops the tensor's pages from this process's memory (they are
// read again from the file if touched). A no-op for files read into memory.
void gguf_release_tensor(const GgufFile& f, const GgufTensorInfo& t);

const GgufKv* gguf_find_kv(const GgufFile& f, const std::string& key);
const GgufTensorInfo* gguf_find_tensor(const GgufFile& f, const std::string& name);
const uint8_t* gguf_tensor_data(const GgufFile& f, const GgufTensorInfo& t);

// Typed getters. A missing key gives an error only when `required`; the
// value is then left unchanged and *found (if given) set false. Integer
// getters accept any integer type whose value fits.
Status gguf_get_int(const GgufFile& f, const std::string& key, int64_t* out, bool required, bool* found = nullptr);
Status gguf_get_float(const GgufFile& f, const std::string& key, double* out, bool required, bool* found = nullptr);
Status gguf_get_bool(const GgufFile& f, const std::string& key, bool* out, bool required, bool* found = nullptr);
Status gguf_get_str(const GgufFile& f, const std::string& key, std::string* out, bool required, bool* found = nullptr);

// Converts a tensor of any type read to floats; dst holds numel.
Status gguf_tensor_to_f32(const GgufFile& f, const GgufTensorInfo& t, float* dst, size_t dst_numel);

// ---- writer ------------------------------------------------------------------
struct GgufWriterTensor {
  std::string name;
  std::vector<int64_t> ne;
  uint32_t type;
  std::string data;  // exactly ggml_row_bytes(type, ne[0]) * rows bytes
};

struct GgufWriter {
  uint32_t alignment = kGgufDefaultAlignment;
  std::vector<GgufKv> kv;  // written in insertion order
  std::vector<GgufWriterTensor> tensors;
};

// Sets (or replaces) a key.
void gguf_set(GgufWriter* w, const std::string& key, const GgufValue& v);
// Checks the name (unique, < 64 chars), shape and data size.
Status gguf_add_tensor(GgufWriter* w, const std::string& name, uint32_t type, const std::vector<int64_t>& ne,
                       std::string data);
// F32 data converted to `type` (F32, F16 or BF16).
Status gguf_add_tensor_f32(GgufWriter* w, const std::string& name, uint32_t type, const std::vector<int64_t>& ne,
                           const float* data);
// Writes atomically (temp file + rename). general.alignment is written when it
// is not the default.
Status gguf_write(const std::string& path, const GgufWriter& w);
Status gguf_serialize(const GgufWriter& w, std::string* out);

// ---- ternary blocks ----------------------------------------------------------
// codes: 256 values in {-1, 0, 1}; d: the fp16 bit pattern of the block scale.
void tq2_0_pack_block(const int8_t* codes, uint16_t d, uint8_t* out);
void tq2_0_unpack_block(const uint8_t* in, int8_t* codes, uint16_t* d);
void tq1_0_pack_block(const int8_t* codes, uint16_t d, uint8_t* out);
void tq1_0_unpack_block(const uint8_t* in, int8_t* codes, uint16_t* d);
// A [rows, cols] matrix of codes (cols a multiple of 256) as TQ blocks, every
// block with scale d (fp16 bits). type is GGML_TYPE_TQ1_0 or GGML_TYPE_TQ2_0.
Status ternary_codes_to_tq(uint32_t type, const int8_t* codes, int64_t rows, int64_t cols, uint16_t d,
                           std::string* out);
// Back to codes plus one fp16 scale per block ([rows * cols / 256]).
Status tq_to_ternary_codes(uint32_t type, const uint8_t* data, int64_t rows, int64_t cols, int8_t* codes,
                           std::vector<uint16_t>* block_d);

}  // namespace bk
