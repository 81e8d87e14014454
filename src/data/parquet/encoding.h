#pragma once
// Value-level codecs: the RLE/bit-packed hybrid (levels, dictionary indices,
// RLE booleans) and page compression. Internal to src/data/parquet.
#include <cstdint>
#include <string>
#include <vector>

namespace bk::pq::enc {

inline int bit_width(uint32_t max_value) {
  int w = 0;
  while (max_value) {
    w++;
    max_value >>= 1;
  }
  return w;
}

// Appends the hybrid encoding of v (each < 2^width) to *out (no length prefix).
void rle_encode(const uint32_t* v, size_t n, int width, std::string* out);
void rle_encode_u8(const uint8_t* v, size_t n, int width, std::string* out);

// Decodes exactly n values into out[0..n). Returns false with *why set when
// the data ends early or a value is malformed.
struct RleDecoder {
  const uint8_t* p;
  const uint8_t* end;
  int width;
  RleDecoder(const uint8_t* data, size_t len, int w) : p(data), end(data + len), width(w) {}
  bool decode(uint32_t* out, size_t n, std::string* why);
  bool decode_u8(uint8_t* out, size_t n, std::string* why);  // width <= 8
};

// Page compression; the codec ids are fmt::CodecId.
bool compress(int codec, int zstd_level, const char* src, size_t n, std::string* out, std::string* why);
// Decompresses into out[0..expect); false unless exactly `expect` bytes result.
bool decompress(int codec, const uint8_t* src, size_t n, uint8_t* out, size_t expect, std::string* why);

}  // namespace bk::pq::enc
