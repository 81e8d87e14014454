// Dequantization of ggml's block types (layouts in gguf_quants.h's header
// comment). Every value is computed as ggml's dequantize_row_* computes it:
// the fp16 scales widened to f32, then the same multiplies and subtracts in the
// same order (the build has -ffp-contract=off, so none is fused), which makes
// the result bit-identical to ggml and to gguf-py's numpy code.
#include "io/gguf_quants.h"

#include <cstring>

#include "core/half.h"
#include "io/gguf.h"

namespace bk {
namespace {

constexpr int QK4 = 32;  // weights per Q4_0 .. Q8_0 block
constexpr int QK_K = 256;
constexpr int K_SCALE_SIZE = 12;

// fp16 fields hold the raw bit pattern.
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[QK4 / 2];  // weight j in the low nibble of byte j, weight j + 16 in the high nibble
};
struct BlockQ4_1 {
  uint16_t d, m;
  uint8_t qs[QK4 / 2];
};
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];  // bit j (little-endian u32) is the fifth bit of weight j
  uint8_t qs[QK4 / 2];
};
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[QK4 / 2];
};
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[QK4];
};
struct BlockQ2_K {
  uint8_t scales[QK_K / 16];  // per 16 weights: scale in the low nibble, min in the high nibble
  uint8_t qs[QK_K / 4];       // 2-bit codes
  uint16_t d, dmin;
};
struct BlockQ3_K {
  uint8_t hmask[QK_K / 8];  // high bit of each code (set: no offset of -4)
  uint8_t qs[QK_K / 4];     // low 2 bits
  uint8_t scales[12];       // 16 scales of 6 bits, stored with an offset of 32
  uint16_t d;
};
struct BlockQ4_K {
  uint16_t d, dmin;
  uint8_t scales[K_SCALE_SIZE];  // 8 scales and 8 mins of 6 bits
  uint8_t qs[QK_K / 2];
};
struct BlockQ5_K {
  uint16_t d, dmin;
  uint8_t scales[K_SCALE_SIZE];
  uint8_t qh[QK_K / 8];
  uint8_t qs[QK_K / 2];
};
struct BlockQ6_K {
  uint8_t ql[QK_K / 2];      // low 4 bits
  uint8_t qh[QK_K / 4];      // high 2 bits
  int8_t scales[QK_K / 16];  // per 16 weights
  uint16_t d;
};
static_assert(sizeof(BlockQ4_0) == 18, "ggml block_q4_0");
static_assert(sizeof(BlockQ4_1) == 20, "ggml block_q4_1");
static_assert(sizeof(BlockQ5_0) == 22, "ggml block_q5_0");
static_assert(sizeof(BlockQ5_1) == 24, "ggml block_q5_1");
static_assert(sizeof(BlockQ8_0) == 34, "ggml block_q8_0");
static_assert(sizeof(BlockQ2_K) == 84, "ggml block_q2_K");
static_assert(sizeof(BlockQ3_K) == 110, "ggml block_q3_K");
static_assert(sizeof(BlockQ4_K) == 144, "ggml block_q4_K");
static_assert(sizeof(BlockQ5_K) == 176, "ggml block_q5_K");
static_assert(sizeof(BlockQ6_K) == 210, "ggml block_q6_K");

// Tensor data is only 2-byte aligned per block at best: copy each block out.
template <typename B>
B load_block(const uint8_t* src, int64_t i) {
  B b;
  memcpy(&b, src + i * (int64_t)sizeof(B), sizeof(B));
  return b;
}

// Weight j of a 32-weight block with a fifth bit: ((qh >> j) & 1) << 4 | nibble.
int q5_code(const uint8_t* qs, const uint8_t* qh4, int j) {
  uint32_t qh;
  memcpy(&qh, qh4, 4);
  int nib = j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
  return nib | (int)(((qh >> j) & 1u) << 4);
}

void deq_q4_0(const uint8_t* src, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; i++, y += QK4) {
    const BlockQ4_0 b = load_block<BlockQ4_0>(src, i);
    const float d = f16_to_f32(b.d);
    for (int j = 0; j < 16; j++) {
      y[j] = (float)((b.qs[j] & 0xF) - 8) * d;
      y[j + 16] = (float)((b.qs[j] >> 4) - 8) * d;
    }
  }
}

void deq_q4_1(const uint8_t* src, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; i++, y += QK4) {
    const BlockQ4_1 b = load_block<BlockQ4_1>(src, i);
    const float d = f16_to_f32(b.d), m = f16_to_f32(b.m);
    for (int j = 0; j < 16; j++) {
      y[j] = (float)(b.qs[j] & 0xF) * d + m;
      y[j + 16] = (float)(b.qs[j] >> 4) * d + m;
    }
  }
}

void deq_q5_0(const uint8_t* src, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; i++, y += QK4) {
    const BlockQ5_0 b = load_block<BlockQ5_0>(src, i);
    const float d = f16_to_f32(b.d);
    for (int j = 0; j < QK4; j++) y[j] = (float)(q5_code(b.qs, b.qh, j) - 16) * d;
  }
}

void deq_q5_1(const uint8_t* src, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; i++, y += QK4) {
    const BlockQ5_1 b = load_block<BlockQ5_1>(src, i);
    const float d = f16_to_f32(b.d), m = f16_to_f32(b.m);
    for (int j = 0; j < QK4; j++) y[j] = (float)q5_code(b.qs, b.qh, j) * d + m;
  }
}

void deq_q8_0(const uint8_t* src, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; i++, y += QK4) {
    const BlockQ8_0 b = load_block<BlockQ8_0>(src, i);
    const float d = f16_to_f32(b.d);
    for (int j = 0; j < QK4; j++) y[j] = (float)b.qs[j] * d;
  }
}

// Q2_K: each half of 128 weights reads 32 bytes of codes four times (shift
// 0, 2, 4, 6); 16 weights share a scale/min byte.
void deq_q2_k(const uint8_t* src, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; i++) {
    const BlockQ2_K b = load_block<BlockQ2_K>(src, i);
    const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
    const uint8_t* q = b.qs;
    int is = 0;
    for (int n = 0; n < QK_K; n += 128, q += 32)
      for (int shift = 0; shift < 8; shift += 2)
        for (int half = 0; half < 2; half++) {
          const uint8_t sc = b.scales[is++];
          const float dl = d * (float)(sc & 0xF), ml = dmin * (float)(sc >> 4);
          for (int l = 0; l < 16; l++) *y++ = dl * (float)((q[16 * half + l] >> shift) & 3) - ml;
        }
  }
}

// Q3_K's 6-bit scale k: low 4 bits from byte k % 8 (nibble k / 8), high 2 bits
// from byte 8 + k % 4 (bits 2 * (k / 4)), minus 32.
int q3_k_scale(const uint8_t* s, int k) {
  const int lo = (s[k % 8] >> (4 * (k / 8))) & 0xF;
  const int hi = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
  return (lo | (hi << 4)) - 32;
}

void deq_q3_k(const uint8_t* src, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; i++) {
    const BlockQ3_K b = load_block<BlockQ3_K>(src, i);
    const float d = f16_to_f32(b.d);
    const uint8_t* q = b.qs;
    int is = 0;
    uint8_t m = 1;  // the hmask bit of the current 32-weight group
    for (int n = 0; n < QK_K; n += 128, q += 32)
      for (int shift = 0; shift < 8; shift += 2, m = (uint8_t)(m << 1))
        for (int half = 0; half < 2; half++) {
          const float dl = d * (float)q3_k_scale(b.scales, is++);
          for (int l = 16 * half; l < 16 * half + 16; l++) {
            const int code = ((q[l] >> shift) & 3) - ((b.hmask[l] & m) ? 0 : 4);
            *y++ = dl * (float)code;
          }
        }
  }
}

// Q4_K / Q5_K: scale and min j (0..7) of 6 bits each from the 12 bytes.
void k4_scale_min(const uint8_t* q, int j, uint8_t* sc, uint8_t* mn) {
  if (j < 4) {
    *sc = q[j] & 63;
    *mn = q[j + 4] & 63;
  } else {
    *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *mn = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Q4_K (qh == nullptr) and Q5_K: 64 weights per step, the low nibbles of 32
// bytes then their high nibbles, each 32 with their own scale and min; Q5_K's
// fifth bit for the pair of groups j is bit 2j / 2j+1 of qh[l].
void deq_k4_k5(const uint16_t dh, const uint16_t dminh, const uint8_t* scales, const uint8_t* qh, const uint8_t* qs,
               float* y) {
  const float d = f16_to_f32(dh), dmin = f16_to_f32(dminh);
  for (int j = 0; j < 4; j++, qs += 32) {
    uint8_t sc, mn;
    for (int nib = 0; nib < 2; nib++) {
      k4_scale_min(scales, 2 * j + nib, &sc, &mn);
      const float d1 = d * (float)sc, m1 = dmin * (float)mn;
      const uint8_t u = (uint8_t)(1u << (2 * j + nib));
      for (int l = 0; l < 32; l++) {
        int code = nib ? (qs[l] >> 4) : (qs[l] & 0xF);
        if (qh && (qh[l] & u)) code += 16;
        *y++ = d1 * (float)code - m1;
      }
    }
  }
}

void deq_q4_k(const uint8_t* src, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; i++, y += QK_K) {
    const BlockQ4_K b = load_block<BlockQ4_K>(src, i);
    deq_k4_k5(b.d, b.dmin, b.scales, nullptr, b.qs, y);
  }
}

void deq_q5_k(const uint8_t* src, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; i++, y += QK_K) {
    const BlockQ5_K b = load_block<BlockQ5_K>(src, i);
    deq_k4_k5(b.d, b.dmin, b.scales, b.qh, b.qs, y);
  }
}

// Q6_K: per 128 weights, 64 bytes of low nibbles and 32 bytes of high 2-bit
// pairs; weight l + 32k (k = 0..3) of the group has scale 2k + l / 16.
void deq_q6_k(const uint8_t* src, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; i++) {
    const BlockQ6_K b = load_block<BlockQ6_K>(src, i);
    const float d = f16_to_f32(b.d);
    const uint8_t *ql = b.ql, *qh = b.qh;
    const int8_t* sc = b.scales;
    for (int n = 0; n < QK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8)
      for (int l = 0; l < 32; l++) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * (float)sc[is] * (float)q1;
        y[l + 32] = d * (float)sc[is + 2] * (float)q2;
        y[l + 64] = d * (float)sc[is + 4] * (float)q3;
        y[l + 96] = d * (float)sc[is + 6] * (float)q4;
      }
  }
}

struct QuantTraits {
  uint32_t type;
  const char* name;
  int block, bytes;
  void (*deq)(const uint8_t*, int64_t, float*);
};

const QuantTraits kQuants[] = {
    {GGML_TYPE_Q4_0, "q4_0", QK4, sizeof(BlockQ4_0), deq_q4_0},
    {GGML_TYPE_Q4_1, "q4_1", QK4, sizeof(BlockQ4_1), deq_q4_1},
    {GGML_TYPE_Q5_0, "q5_0", QK4, sizeof(BlockQ5_0), deq_q5_0},
    {GGML_TYPE_Q5_1, "q5_1", QK4, sizeof(BlockQ5_1), deq_q5_1},
    {GGML_TYPE_Q8_0, "q8_0", QK4, sizeof(BlockQ8_0), deq_q8_0},
    {GGML_TYPE_Q2_K, "q2_k", QK_K, sizeof(BlockQ2_K), deq_q2_k},
    {GGML_TYPE_Q3_K, "q3_k", QK_K, sizeof(BlockQ3_K), deq_q3_k},
    {GGML_TYPE_Q4_K, "q4_k", QK_K, sizeof(BlockQ4_K), deq_q4_k},
    {GGML_TYPE_Q5_K, "q5_k", QK_K, sizeof(BlockQ5_K), deq_q5_k},
    {GGML_TYPE_Q6_K, "q6_k", QK_K, sizeof(BlockQ6_K), deq_q6_k},
};

const QuantTraits* find_quant(uint32_t t) {
  for (const QuantTraits& q : kQuants)
    if (q.type == t) return &q;
  return nullptr;
}

}  // namespace

bool ggml_is_dequant_type(uint32_t t) { return find_quant(t) != nullptr; }

const char* ggml_quant_name(uint32_t t) {
  const QuantTraits* q = find_quant(t);
  return q ? q->name : nullptr;
}

int64_t ggml_quant_block_size(uint32_t t) {
  const QuantTraits* q = find_quant(t);
  return q ? q->block : 0;
}

int64_t ggml_quant_type_size(uint32_t t) {
  const QuantTraits* q = find_quant(t);
  return q ? q->bytes : 0;
}

const char* ggml_refused_type_name(uint32_t t) {
  switch (t) {
    case 9: return "q8_1";
    case 15: return "q8_k";
    case 16: return "iq2_xxs";
    case 17: return "iq2_xs";
    case 18: return "iq3_xxs";
    case 19: return "iq1_s";
    case 20: return "iq4_nl";
    case 21: return "iq3_s";
    case 22: return "iq2_s";
    case 23: return "iq4_xs";
    case 24: return "i8";
    case 25: return "i16";
    case 26: return "i32";
    case 27: return "i64";
    case 28: return "f64";
    case 29: return "iq1_m";
    case 39: return "mxfp4";
    case 40: return "nvfp4";
  }
  return nullptr;
}

const char* ggml_supported_types_text() {
  return "f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k, tq1_0, tq2_0";
}

bool dequantize_blocks(uint32_t t, const uint8_t* src, int64_t n_blocks, float* dst) {
  const QuantTraits* q = find_quant(t);
  if (!q) return false;
  q->deq(src, n_blocks, dst);
  return true;
}

}  // namespace bk
