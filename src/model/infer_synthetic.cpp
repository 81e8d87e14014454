// Synthetic packed weights, per-component byte counts and the activation-bit
// switch for prepared inference weights (model/infer_synthetic.h).
#include "model/infer_synthetic.h"

#include <omp.h>

#include <cmath>
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "core/half.h"
#include "core/rng.h"
#include "model/infer_impl.h"

namespace bk {

namespace {

uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// One independent stream per (tensor, row): rows can be generated in any
// order on any thread and still come out the same.
uint64_t stream_seed(uint64_t seed, uint64_t tensor, uint64_t row) {
  return mix64(mix64(mix64(seed) ^ tensor) ^ (row * 0x9e3779b97f4a7c15ull + 1));
}

// Two random bits -> a ternary code: P(-1) = P(+1) = 1/4, P(0) = 1/2.
inline int8_t code_of(uint64_t two_bits) { return two_bits == 0 ? -1 : two_bits == 3 ? 1 : 0; }

constexpr uint64_t kEmbeddingTensor = 1ull << 40;
constexpr uint64_t kHeadTensor = (1ull << 40) + 1;

// A packed byte for every combination of random bits, built with the public
// packer so the generator never re-implements the layout. A byte holds 4
// (I2) or 5 (T1) codes; in a half block of one row, byte 0 holds weights
// 0, 16, 32, ... (ternary.h), so packing a one-row matrix with the codes at
// those columns yields the byte. Full blocks use the same per-byte encoding
// at other weight positions, which does not matter for i.i.d. codes.
struct ByteTable {
  TernaryType type = TERNARY_I2;
  int codes_per_byte = 4;        // 4 (I2) or 5 (T1)
  int bits_per_byte = 8;         // random bits consumed per byte: 2 per code
  int block_weights = 128;       // weights in a full 32-byte block
  std::vector<uint8_t> table;    // [1 << bits_per_byte]
};

Status pack_rows(TernaryType type, const int8_t* wq, int32_t rows, int32_t cols, float gamma, TernaryMatrix* out) {
  return type == TERNARY_I2 ? pack_ternary_i2(wq, rows, cols, gamma, out) : pack_ternary_t1(wq, rows, cols, gamma, out);
}

Status build_byte_table(TernaryType type, ByteTable* t) {
  t->type = type;
  t->codes_per_byte = type == TERNARY_I2 ? 4 : 5;
  t->bits_per_byte = 2 * t->codes_per_byte;
  t->block_weights = type == TERNARY_I2 ? 128 : 160;
  const int half = ternary_granularity(type);  // 64 or 80: one half block
  t->table.resize((size_t)1 << t->bits_per_byte);
  std::vector<int8_t> wq(half), back(half);
  TernaryMatrix m;
  for (uint32_t r = 0; r < t->table.size(); r++) {
    std::fill(wq.begin(), wq.end(), 0);
    for (int k = 0; k < t->codes_per_byte; k++) wq[16 * k] = code_of((r >> (2 * k)) & 3);
    BK_TRY(pack_rows(type, wq.data(), 1, half, 1.0f, &m));
    if (m.row_bytes != 16)
      return errorf("synthetic weights: a %d-weight row packs into %lld bytes, expected one 16-byte half block", half,
                    (long long)m.row_bytes);
    // Guard against a layout change: byte 0 must decode to exactly these codes.
    unpack_ternary(m, back.data());
    for (int k = 0; k < t->codes_per_byte; k++)
      if (back[16 * k] != wq[16 * k])
        return errorf("synthetic weights: the %s half-block layout is not the one documented in ternary.h",
                      type == TERNARY_I2 ? "I2" : "T1");
    t->table[r] = m.data[0];
  }
  return ok_status();
}

// Packs a [rows, cols] matrix of random codes straight into *m.
Status synth_matrix(const ByteTable& bt, uint64_t seed, uint64_t tensor, int32_t rows, int32_t cols, float gamma,
                    TernaryMatrix* m) {
  // Shape of a packed row from the packer itself (one zero row).
  {
    std::vector<int8_t> zero(cols, 0);
    BK_TRY(pack_rows(bt.type, zero.data(), 1, cols, gamma, m));
  }
  const int64_t row_bytes = m->row_bytes;
  const int32_t n_full = cols / bt.block_weights;
  const int32_t tail = cols - n_full * bt.block_weights;
  const int64_t full_bytes = (int64_t)n_full * 32;
  int64_t tail_bytes = 0;
  if (tail > 0) {
    std::vector<int8_t> zero(tail, 0);
    TernaryMatrix t;
    BK_TRY(pack_rows(bt.type, zero.data(), 1, tail, gamma, &t));
    tail_bytes = t.row_bytes;
  }
  if (full_bytes + tail_bytes != row_bytes)
    return errorf("synthetic weights: a %d-column row is %lld packed bytes, but %d full blocks and a %d-weight tail "
                  "give %lld",
                  cols, (long long)row_bytes, n_full, tail, (long long)(full_bytes + tail_bytes));
  m->rows = rows;
  m->gamma = gamma;
  m->data.assign((size_t)rows * row_bytes, 0);
  const uint64_t mask = ((uint64_t)1 << bt.bits_per_byte) - 1;
  int failed = 0;
#pragma omp parallel reduction(+ : failed)
  {
    std::vector<int8_t> codes(tail);
    TernaryMatrix tm;
#pragma omp for schedule(static)
    for (int32_t r = 0; r < rows; r++) {
      Rng rng;
      rng_seed(&rng, stream_seed(seed, tensor, (uint64_t)r));
      uint8_t* dst = m->data.data() + (size_t)r * row_bytes;
      uint64_t bits = 0;
      int avail = 0;
      int64_t i = 0;
      if (bt.bits_per_byte == 8)  // I2: one draw fills 8 bytes (full_bytes is a multiple of 32)
        for (; i < full_bytes; i += 8) {
          uint64_t u = rng_next_u64(&rng);
          for (int k = 0; k < 8; k++, u >>= 8) dst[i + k] = bt.table[u & 255];
        }
      for (; i < full_bytes; i++) {
        if (avail < bt.bits_per_byte) bits = rng_next_u64(&rng), avail = 64;
        dst[i] = bt.table[bits & mask];
        bits >>= bt.bits_per_byte;
        avail -= bt.bits_per_byte;
      }
      if (tail > 0) {
        for (int32_t i = 0; i < tail; i++) {
          if (avail < 2) bits = rng_next_u64(&rng), avail = 64;
          codes[i] = code_of(bits & 3);
          bits >>= 2;
          avail -= 2;
        }
        if (!pack_rows(bt.type, codes.data(), 1, tail, gamma, &tm).ok()) {
          failed++;
          continue;
        }
        memcpy(dst + full_bytes, tm.data.data(), (size_t)tail_bytes);
      }
    }
  }
  if (failed) return errorf("synthetic weights: packing %d row tails failed", failed);
  return ok_status();
}

// Rows of m, zero mean, standard deviation stddev: each value is the sum of
// two 16-bit uniforms (a triangular distribution), two values per 64-bit
// draw, then stored in m's type. Only the scale matters for a memory/speed test.
void synth_rows(uint64_t seed, uint64_t tensor, float stddev, RowMatrix* m) {
  const float scale = stddev * std::sqrt(6.0f) / 65536.0f;
  const int32_t dim = m->cols;
#pragma omp parallel
  {
    std::vector<float> row(dim);
#pragma omp for schedule(static)
    for (int32_t r = 0; r < m->rows; r++) {
      Rng rng;
      rng_seed(&rng, stream_seed(seed, tensor, (uint64_t)r));
      uint64_t u = 0;
      for (int32_t i = 0; i < dim; i++) {
        if ((i & 1) == 0) u = rng_next_u64(&rng);
        else u >>= 32;
        float s = (float)(u & 0xffff) + (float)((u >> 16) & 0xffff);
        row[i] = (s - 65535.0f) * scale;
      }
      rows_set_row(m, r, row.data());
    }
  }
}

}  // namespace

Status synthetic_ternary_matrix(TernaryType layout, uint64_t seed, uint64_t tensor, int32_t rows, int32_t cols,
                                float gamma, TernaryMatrix* out) {
  if (layout != TERNARY_I2 && layout != TERNARY_T1) return errorf("synthetic weights: unknown ternary layout %d", (int)layout);
  if (rows <= 0 || cols <= 0) return errorf("synthetic weights: shape [%d, %d] must be positive", rows, cols);
  ByteTable bt;
  BK_TRY(build_byte_table(layout, &bt));
  return synth_matrix(bt, seed, tensor, rows, cols, gamma, out);
}

Status infer_weights_create_synthetic(const SyntheticWeightsOptions& opt, InferWeights** out) {
  *out = nullptr;
  const ModelConfig& c = opt.cfg;
  BK_TRY(with_context(model_config_validate(c), "synthetic weights"));
  if (c.weight_quant != WQ_TERNARY)
    return errorf("synthetic weights are packed ternary: weight_quant must be ternary, not %s",
                  weight_quant_name(c.weight_quant));
  if (c.act_bits != 8 && c.act_bits != 4)
    return errorf("synthetic packed weights need integer activations: act_bits 8 or 4, not %d", c.act_bits);
  if (opt.layout != TERNARY_I2 && opt.layout != TERNARY_T1)
    return errorf("synthetic weights: unknown ternary layout %d", (int)opt.layout);
  ByteTable bt;
  BK_TRY(build_byte_table(opt.layout, &bt));

  std::unique_ptr<InferWeights> w(new InferWeights());
  w->cfg = c;
  w->backend = INFER_PACKED;
  projection_bits(c, &w->bits_qkv, &w->bits_o, &w->bits_gateup, &w->bits_down);
  const int L = c.n_layers, D = c.dim, Q = c.n_heads * c.head_dim, K = c.n_kv_heads * c.head_dim, F = c.ffn_dim;
  const int V = c.vocab_size;

  // Norm gains (ones): final norm, then per layer attn, attn_sub, ffn, ffn_sub.
  const size_t per_layer = (size_t)D + (c.subln ? Q : 0) + D + (c.subln ? F : 0);
  w->f32.assign((size_t)D + per_layer * L, 1.0f);
  w->final_norm = w->f32.data();
  // Embedding (and an untied head) in the requested row type.
  BK_TRY(with_context(rows_alloc(opt.embed_type, V, D, &w->embed_rows), "synthetic embedding"));
  synth_rows(opt.seed, kEmbeddingTensor, 1.0f, &w->embed_rows);
  if (!c.tie_embeddings) {
    BK_TRY(with_context(rows_alloc(opt.embed_type, V, D, &w->head_rows), "synthetic head"));
    synth_rows(opt.seed, kHeadTensor, 1.0f / std::sqrt((float)D), &w->head_rows);
  }
  w->bytes = w->f32.size() * sizeof(float) + rows_bytes(w->embed_rows) + rows_bytes(w->head_rows);

  // gamma: unit-RMS outputs for unit-RMS inputs with half the codes non-zero;
  // the residual branches are scaled down as in model_init.
  const float branch = 1.0f / std::sqrt(2.0f * L);
  w->layers.resize(L);
  for (int l = 0; l < L; l++) {
    InferLayer& ly = w->layers[l];
    float* norms = w->f32.data() + D + per_layer * l;
    ly.attn_norm = norms;
    norms += D;
    if (c.subln) ly.attn_sub_norm = norms, norms += Q;
    ly.ffn_norm = norms;
    norms += D;
    if (c.subln) ly.ffn_sub_norm = norms;
    struct {
      InferLinear* dst;
      int rows, cols, kind;
      float scale;
      bool present;
    } lin[] = {{&ly.wq, Q, D, 0, 1.0f, true},        {&ly.wk, K, D, 1, 1.0f, true},
               {&ly.wv, K, D, 2, 1.0f, true},        {&ly.wo, D, Q, 3, branch, true},
               {&ly.w_gate, F, D, 4, 1.0f, c.ffn_act == FFN_SWIGLU},
               {&ly.w_up, F, D, 5, 1.0f, true},      {&ly.w_down, D, F, 6, branch, true}};
    for (auto& e : lin) {
      if (!e.present) continue;
      float gamma = e.scale / std::sqrt(0.5f * e.cols);
      Status st = synth_matrix(bt, opt.seed, (uint64_t)l * 16 + e.kind, e.rows, e.cols, gamma, &e.dst->p);
      if (!st.ok()) return with_context(st, "layer " + std::to_string(l));
      e.dst->out = e.rows;
      e.dst->in = e.cols;
      w->bytes += (size_t)ternary_size(e.dst->p).bytes;
    }
  }
  *out = w.release();
  return ok_status();
}

void infer_weights_bytes_by_component(const InferWeights* w, InferWeightBytes* out) {
  *out = InferWeightBytes();
  if (!w) return;
  const ModelConfig& c = w->cfg;
  const int64_t vd = (int64_t)c.vocab_size * c.dim;
  out->embedding_params = vd;
  if (w->backend == INFER_PACKED) {
    out->embedding_dtype = row_type_name(w->embed_rows.type);
    out->embeddings = rows_bytes(w->embed_rows);
    out->head_tied = w->head_rows.rows == 0;
    out->head = rows_bytes(w->head_rows);
  } else {
    out->embedding_dtype = "f32";
    out->embeddings = (size_t)vd * sizeof(float);
    out->head_tied = w->output == w->tok_embeddings;
    out->head = out->head_tied ? 0 : (size_t)vd * sizeof(float);
  }
  if (!out->head_tied) out->head_params = vd;
  int64_t norm_params = w->final_norm ? c.dim : 0;
  int64_t proj_params = 0;
  size_t proj_bytes = 0;
  TernaryType type = TERNARY_I2;
  bool any_packed = false;
  for (const InferLayer& ly : w->layers) {
    if (ly.attn_norm) norm_params += c.dim;
    if (ly.attn_sub_norm) norm_params += (int64_t)c.n_heads * c.head_dim;
    if (ly.ffn_norm) norm_params += c.dim;
    if (ly.ffn_sub_norm) norm_params += c.ffn_dim;
    for (const InferLinear* l : {&ly.wq, &ly.wk, &ly.wv, &ly.wo, &ly.w_gate, &ly.w_up, &ly.w_down}) {
      if (w->backend == INFER_PACKED) {
        if (l->p.rows == 0) continue;
        proj_bytes += (size_t)ternary_size(l->p).bytes;
        type = l->p.type;
        any_packed = true;
      } else {
        if (!l->f) continue;
        proj_bytes += (size_t)l->out * l->in * sizeof(float);
      }
      proj_params += (int64_t)l->out * l->in;
    }
  }
  out->norm_params = norm_params;
  out->norms = (size_t)norm_params * sizeof(float);
  out->projection_params = proj_params;
  out->projections = proj_bytes;
  out->projection_bits_per_weight = proj_params ? proj_bytes * 8.0 / proj_params : 0;
  out->projection_format = !any_packed ? "f32" : type == TERNARY_I2 ? "ternary-i2" : "ternary-t1";
  out->total = out->embeddings + out->norms + out->projections + out->head;
}

void infer_decode_bytes(const InferWeights* w, double context, DecodeBytes* out) {
  *out = DecodeBytes();
  if (!w) return;
  InferWeightBytes b;
  infer_weights_bytes_by_component(w, &b);
  const ModelConfig& c = w->cfg;
  out->weights = b.projections + b.norms;
  out->embedding_row = b.embeddings / std::max(1, c.vocab_size);
  out->head = b.head_tied ? b.embeddings : b.head;
  out->kv_cache = (size_t)(2.0 * c.n_layers * context * c.n_kv_heads * c.head_dim * sizeof(float));
  out->total = out->weights + out->embedding_row + out->head + out->kv_cache;
}

Status infer_weights_set_act_bits(InferWeights* w, int act_bits, A4Scope scope) {
  if (!w) return errorf("infer_weights_set_act_bits: no weights");
  if (act_bits != 8 && act_bits != 4 && act_bits != 0)
    return errorf("activation bits %d: use 8, 4 or 0", act_bits);
  if (w->backend == INFER_PACKED && act_bits == 0)
    return errorf("the packed backend needs integer activations (8 or 4 bits), not 0");
  w->cfg.act_bits = act_bits;
  w->cfg.a4_scope = scope;
  projection_bits(w->cfg, &w->bits_qkv, &w->bits_o, &w->bits_gateup, &w->bits_down);
  return ok_status();
}

}  // namespace bk
