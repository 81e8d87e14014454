#include "data/parquet/encoding.h"

#include <snappy-c.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>

#include "data/parquet/format.h"

namespace bk::pq::enc {

static void put_varint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back((char)(uint8_t)(v | 0x80));
    v >>= 7;
  }
  out->push_back((char)(uint8_t)v);
}

// Bit-packs v[0..n) LSB first; n is a multiple of 8 (callers pad).
template <typename T>
static void bit_pack(const T* v, size_t n, int width, std::string* out) {
  uint64_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    acc |= (uint64_t)v[i] << bits;
    bits += width;
    while (bits >= 8) {
      out->push_back((char)(uint8_t)acc);
      acc >>= 8;
      bits -= 8;
    }
  }
  if (bits > 0) out->push_back((char)(uint8_t)acc);
}

template <typename T>
static void rle_encode_t(const T* v, size_t n, int width, std::string* out) {
  const int vbytes = (width + 7) / 8;
  size_t lit = 0;  // start of pending literals (bit-packed)
  auto flush_literals = [&](size_t upto) {
    size_t cnt = upto - lit;
    if (cnt == 0) return;
    size_t groups = (cnt + 7) / 8;
    put_varint((groups << 1) | 1, out);
    if (cnt % 8 == 0) {
      bit_pack(v + lit, cnt, width, out);
    } else {
      T pad[8] = {};
      size_t full = cnt / 8 * 8;
      bit_pack(v + lit, full, width, out);
      for (size_t k = 0; k < cnt - full; k++) pad[k] = v[lit + full + k];
      bit_pack(pad, 8, width, out);
    }
    lit = upto;
  };
  size_t i = 0;
  while (i < n) {
    size_t j = i + 1;
    while (j < n && v[j] == v[i]) j++;
    size_t run = j - i;
    if (run >= 8) {
      // Literals must come in whole groups of 8: lend them the run's head.
      size_t pending = i - lit;
      size_t borrow = pending % 8 ? 8 - pending % 8 : 0;
      if (run - borrow >= 8) {
        flush_literals(i + borrow);
        size_t cnt = run - borrow;
        put_varint((uint64_t)cnt << 1, out);
        uint32_t val = (uint32_t)v[i];
        for (int b = 0; b < vbytes; b++) out->push_back((char)(uint8_t)(val >> (8 * b)));
        lit = j;
      }
    }
    i = j;
  }
  flush_literals(n);
}

void rle_encode(const uint32_t* v, size_t n, int width, std::string* out) { rle_encode_t(v, n, width, out); }
void rle_encode_u8(const uint8_t* v, size_t n, int width, std::string* out) { rle_encode_t(v, n, width, out); }

template <typename T>
static bool rle_decode_t(RleDecoder& d, T* out, size_t n, std::string* why) {
  const int w = d.width;
  if (w < 0 || w > 32) {
    *why = "bit width " + std::to_string(w) + " out of range";
    return false;
  }
  const int vbytes = (w + 7) / 8;
  const uint64_t mask = w == 64 ? ~0ull : ((1ull << w) - 1);
  size_t got = 0;
  while (got < n) {
    uint64_t h = 0;
    int shift = 0;
    for (;;) {
      if (d.p >= d.end) {
        *why = "run header truncated after " + std::to_string(got) + " of " + std::to_string(n) + " values";
        return false;
      }
      uint8_t b = *d.p++;
      h |= (uint64_t)(b & 0x7f) << shift;
      if (!(b & 0x80)) break;
      shift += 7;
      if (shift > 63) {
        *why = "run header too long";
        return false;
      }
    }
    if (h & 1) {
      uint64_t groups = h >> 1;
      uint64_t remaining = (uint64_t)(d.end - d.p);
      uint64_t take64 = std::min<uint64_t>(groups > (1ull << 40) ? (1ull << 43) : groups * 8, n - got);
      uint64_t nbytes = groups > (1ull << 40) ? remaining + 1 : groups * (uint64_t)w;
      if (nbytes > remaining) {
        // Some writers end the last run early when the page ends: fine if
        // the bytes present hold the values still needed.
        if ((take64 * w + 7) / 8 > remaining) {
          *why = "bit-packed run truncated after " + std::to_string(got) + " of " + std::to_string(n) + " values";
          return false;
        }
        nbytes = remaining;
      }
      size_t take = (size_t)take64;
      const uint8_t* base = d.p;
      size_t len = (size_t)nbytes;
      for (size_t k = 0; k < take; k++) {
        uint64_t bit = (uint64_t)k * w;
        size_t byte = (size_t)(bit >> 3);
        uint64_t word = 0;
        if (byte + 8 <= len) {
          memcpy(&word, base + byte, 8);
        } else {
          for (size_t q = 0; byte + q < len && q < 8; q++) word |= (uint64_t)base[byte + q] << (8 * q);
        }
        out[got + k] = (T)((word >> (bit & 7)) & mask);
      }
      got += take;
      d.p += len;
    } else {
      uint64_t cnt = h >> 1;
      if (d.end - d.p < vbytes) {
        *why = "RLE run value truncated";
        return false;
      }
      uint32_t val = 0;
      for (int b = 0; b < vbytes; b++) val |= (uint32_t)d.p[b] << (8 * b);
      d.p += vbytes;
      if (w < 32 && (val >> w) != 0) {
        *why = "RLE run value " + std::to_string(val) + " wider than " + std::to_string(w) + " bits";
        return false;
      }
      size_t take = (size_t)std::min<uint64_t>(cnt, n - got);
      for (size_t k = 0; k < take; k++) out[got + k] = (T)val;
      got += take;
    }
  }
  return true;
}

bool RleDecoder::decode(uint32_t* out, size_t n, std::string* why) { return rle_decode_t(*this, out, n, why); }

bool RleDecoder::decode_u8(uint8_t* out, size_t n, std::string* why) {
  if (width > 8) {
    *why = "level bit width " + std::to_string(width) + " too large";
    return false;
  }
  return rle_decode_t(*this, out, n, why);
}

bool compress(int codec, int zstd_level, const char* src, size_t n, std::string* out, std::string* why) {
  if (codec == fmt::UNCOMPRESSED) {
    out->assign(src, n);
    return true;
  }
  if (codec == fmt::SNAPPY) {
    size_t cap = snappy_max_compressed_length(n);
    out->resize(cap);
    if (snappy_compress(src, n, &(*out)[0], &cap) != SNAPPY_OK) {
      *why = "snappy compression failed";
      return false;
    }
    out->resize(cap);
    return true;
  }
  if (codec == fmt::ZSTD) {
    size_t cap = ZSTD_compressBound(n);
    out->resize(cap);
    size_t r = ZSTD_compress(&(*out)[0], cap, src, n, zstd_level);
    if (ZSTD_isError(r)) {
      *why = std::string("zstd compression failed: ") + ZSTD_getErrorName(r);
      return false;
    }
    out->resize(r);
    return true;
  }
  *why = std::string("cannot write codec ") + fmt::codec_name(codec);
  return false;
}

bool decompress(int codec, const uint8_t* src, size_t n, uint8_t* out, size_t expect, std::string* why) {
  if (codec == fmt::UNCOMPRESSED) {
    if (n != expect) {
      *why = "uncompressed page size " + std::to_string(n) + " differs from the declared " + std::to_string(expect);
      return false;
    }
    memcpy(out, src, n);
    return true;
  }
  if (codec == fmt::SNAPPY) {
    size_t len = 0;
    if (snappy_uncompressed_length((const char*)src, n, &len) != SNAPPY_OK || len != expect) {
      *why = "snappy data is corrupt (bad length header)";
      return false;
    }
    if (snappy_uncompress((const char*)src, n, (char*)out, &len) != SNAPPY_OK || len != expect) {
      *why = "snappy data is corrupt";
      return false;
    }
    return true;
  }
  if (codec == fmt::ZSTD) {
    // Some writers concatenate frames; ZSTD_decompress handles that.
    size_t r = ZSTD_decompress(out, expect, src, n);
    if (ZSTD_isError(r)) {
      *why = std::string("zstd data is corrupt: ") + ZSTD_getErrorName(r);
      return false;
    }
    if (r != expect) {
      *why = "zstd page decompressed to " + std::to_string(r) + " bytes, header says " + std::to_string(expect);
      return false;
    }
    return true;
  }
  *why = std::string("codec ") + fmt::codec_name(codec) + " is not supported (bitkd reads UNCOMPRESSED, SNAPPY, ZSTD; rewrite the file with one of them)";
  return false;
}

}  // namespace bk::pq::enc
