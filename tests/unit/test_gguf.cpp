// GGUF: format round trips, ternary block layouts against a reference written
// from the layout description, bitkd Model <-> GGUF (same logits after a
// round trip), tokenizer metadata, and malformed files.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "core/fs.h"
#include "core/half.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "kernels/cpu/kernels.h"
#include "model/gguf_model.h"
#include "model/infer.h"
#include "model/model.h"
#include "testutil/spm_fixture.h"
#include "testutil/testutil.h"
#include "tokenizer/spm_model.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"
#include "train/model_load.h"

using namespace bk;

namespace {

// ---- reference block codecs (positions computed element by element) ---------------
// TQ2_0: element e of a 256 block sits in byte (e / 128) * 32 + e % 32, bits 2 * ((e % 128) / 32).
void ref_tq2_pack(const int8_t* codes, uint16_t d, uint8_t* out) {
  memset(out, 0, 66);
  for (int e = 0; e < 256; e++) {
    int byte = (e / 128) * 32 + e % 32, shift = 2 * ((e % 128) / 32);
    out[byte] |= (uint8_t)((codes[e] + 1) << shift);
  }
  out[64] = (uint8_t)(d & 0xff);
  out[65] = (uint8_t)(d >> 8);
}

// TQ1_0: (byte, trit index k counted from the most significant, trits in that byte).
void tq1_position(int e, int* byte, int* k, int* ntrits) {
  if (e < 160) *byte = e % 32, *k = e / 32, *ntrits = 5;
  else if (e < 240) *byte = 32 + (e - 160) % 16, *k = (e - 160) / 16, *ntrits = 5;
  else *byte = 48 + (e - 240) % 4, *k = (e - 240) / 4, *ntrits = 4;
}

void ref_tq1_pack(const int8_t* codes, uint16_t d, uint8_t* out) {
  int v[52] = {0};
  for (int e = 0; e < 256; e++) {
    int byte, k, nt;
    tq1_position(e, &byte, &k, &nt);
    int p = 1;
    for (int i = 0; i < 4 - k; i++) p *= 3;  // trit k has weight 3^(4-k) in a 5-trit number
    v[byte] += (codes[e] + 1) * p;
  }
  for (int b = 0; b < 52; b++) out[b] = (uint8_t)((v[b] * 256 + 242) / 243);  // ceil(v * 256 / 243)
  out[52] = (uint8_t)(d & 0xff);
  out[53] = (uint8_t)(d >> 8);
}

// Decoding by arithmetic: v = floor(byte * 243 / 256), then base-3 digits.
void ref_tq1_unpack(const uint8_t* in, int8_t* codes) {
  for (int e = 0; e < 256; e++) {
    int byte, k, nt;
    tq1_position(e, &byte, &k, &nt);
    int v = in[byte] * 243 / 256;
    for (int i = 0; i < 4 - k; i++) v /= 3;
    codes[e] = (int8_t)(v % 3 - 1);
  }
}

std::vector<int8_t> random_codes(std::mt19937& g, size_t n) {
  std::vector<int8_t> c(n);
  for (auto& x : c) x = (int8_t)((int)(g() % 3) - 1);
  return c;
}

// ---- models -----------------------------------------------------------------------
ModelConfig small_cfg(bool ternary, bool subln, FfnAct act, int dim = 256, int ffn = 512) {
  ModelConfig c;
  c.vocab_size = 300;
  c.dim = dim;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = dim / 4;
  c.ffn_dim = ffn;
  c.ffn_act = act;
  c.max_seq_len = 64;
  c.subln = subln;
  c.weight_quant = ternary ? WQ_TERNARY : WQ_NONE;
  c.act_bits = ternary ? 8 : 0;
  return c;
}

// Randomised norms too, so a swapped or missing norm shows in the logits.
void init_model(Model* m, const ModelConfig& c, uint64_t seed) {
  ASSERT_TRUE(model_init(m, c, seed).ok());
  std::mt19937 g((unsigned)seed);
  std::uniform_real_distribution<float> u(0.5f, 1.5f);
  for (const ParamInfo& p : m->info)
    if (p.kind == PARAM_NORM)
      for (size_t i = 0; i < p.numel; i++) m->params[p.offset + i] = u(g);
}

std::vector<float> logits_of(Model* m, const std::vector<int32_t>& toks) {
  Activations* a = activations_create(*m, 1, (int)toks.size());
  Status st = model_forward(m, a, toks.data(), nullptr, 1, (int)toks.size());
  EXPECT_TRUE(st.ok()) << st.msg;
  const float* l = activations_logits(a);
  std::vector<float> out(l, l + toks.size() * (size_t)m->cfg.vocab_size);
  activations_destroy(a);
  return out;
}

std::vector<int32_t> test_tokens(int vocab) {
  std::vector<int32_t> t;
  for (int i = 0; i < 24; i++) t.push_back((int32_t)((i * 37 + 11) % vocab));
  return t;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0;
  for (size_t i = 0; i < a.size(); i++) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// Export -> load through the file; returns the loaded model.
void round_trip(const Model& m, const GgufExportOptions& opt, const std::string& path, Model* back,
                GgufExportReport* rep, GgufLoadInfo* info) {
  Status st = gguf_export_model(m, opt, path, rep);
  ASSERT_TRUE(st.ok()) << st.msg;
  st = gguf_load_model(path, back, info);
  ASSERT_TRUE(st.ok()) << st.msg;
}

void expect_same_ternary(const Model& a, const Model& b) {
  for (const ParamInfo& p : a.info) {
    if (p.kind != PARAM_LINEAR) continue;
    const ParamInfo* q = model_find_param(b, p.name);
    ASSERT_NE(q, nullptr) << p.name;
    std::vector<int8_t> ca(p.numel), cb(p.numel);
    float ga = quant_ternary_codes(ca.data(), a.params.data() + p.offset, p.numel);
    float gb = quant_ternary_codes(cb.data(), b.params.data() + q->offset, q->numel);
    EXPECT_EQ(ga, gb) << p.name;
    EXPECT_TRUE(ca == cb) << p.name;
  }
}

}  // namespace

// ---- format -------------------------------------------------------------------------
TEST(Gguf, MetadataAndTensorsRoundTrip) {
  for (uint32_t alignment : {32u, 64u}) {
    GgufWriter w;
    w.alignment = alignment;
    gguf_set(&w, "general.architecture", gguf_str("llama"));
    GgufValue v;
    v.type = GGUF_TYPE_UINT8, v.u = 200;
    gguf_set(&w, "t.u8", v);
    v.type = GGUF_TYPE_INT8, v.u = (uint64_t)(int64_t)-5;
    gguf_set(&w, "t.i8", v);
    v.type = GGUF_TYPE_UINT16, v.u = 65000;
    gguf_set(&w, "t.u16", v);
    v.type = GGUF_TYPE_INT16, v.u = (uint64_t)(int64_t)-30000;
    gguf_set(&w, "t.i16", v);
    gguf_set(&w, "t.u32", gguf_u32(4000000000u));
    gguf_set(&w, "t.i32", gguf_i32(-123456));
    gguf_set(&w, "t.u64", gguf_u64(1ull << 40));
    v.type = GGUF_TYPE_INT64, v.u = (uint64_t)(int64_t)-(1ll << 40);
    gguf_set(&w, "t.i64", v);
    gguf_set(&w, "t.f32", gguf_f32(0.1f));
    v = GgufValue();
    v.type = GGUF_TYPE_FLOAT64, v.f = 0.1;
    gguf_set(&w, "t.f64", v);
    gguf_set(&w, "t.bool", gguf_bool(true));
    gguf_set(&w, "t.str", gguf_str("h\xC3\xA9llo\n"));
    gguf_set(&w, "t.astr", gguf_arr_str({"a", "", "\xE2\x96\x81x"}));
    gguf_set(&w, "t.af32", gguf_arr_f32({1.5f, -2.0f}));
    gguf_set(&w, "t.ai32", gguf_arr_i32({-1, 7}));
    gguf_set(&w, "t.au8", gguf_arr_u8(std::string("\x00\xff\x10", 3)));
    GgufValue ab;
    ab.type = GGUF_TYPE_ARRAY, ab.arr_type = GGUF_TYPE_BOOL, ab.arr_int = {1, 0, 1};
    gguf_set(&w, "t.abool", ab);

    std::mt19937 g(5);
    std::vector<float> f32(3 * 5);
    for (auto& x : f32) x = (float)(g() % 1000) / 100.0f - 5.0f;
    ASSERT_TRUE(gguf_add_tensor_f32(&w, "a.f32", GGML_TYPE_F32, {5, 3}, f32.data()).ok());
    ASSERT_TRUE(gguf_add_tensor_f32(&w, "b.f16", GGML_TYPE_F16, {5, 3}, f32.data()).ok());
    ASSERT_TRUE(gguf_add_tensor_f32(&w, "c.bf16", GGML_TYPE_BF16, {15}, f32.data()).ok());
    std::vector<int8_t> codes = random_codes(g, 2 * 512);
    std::string tq2, tq1;
    ASSERT_TRUE(ternary_codes_to_tq(GGML_TYPE_TQ2_0, codes.data(), 2, 512, f32_to_f16(0.25f), &tq2).ok());
    ASSERT_TRUE(ternary_codes_to_tq(GGML_TYPE_TQ1_0, codes.data(), 2, 512, f32_to_f16(0.25f), &tq1).ok());
    ASSERT_TRUE(gguf_add_tensor(&w, "d.tq2", GGML_TYPE_TQ2_0, {512, 2}, tq2).ok());
    ASSERT_TRUE(gguf_add_tensor(&w, "e.tq1", GGML_TYPE_TQ1_0, {512, 2}, tq1).ok());
    // Q8_0 (read only): blocks of {fp16 d, 32 x int8}.
    std::string q8(2 * 34, '\0');
    for (int b = 0; b < 2; b++) {
      uint16_t d = f32_to_f16(0.5f * (b + 1));
      memcpy(&q8[34 * b], &d, 2);
      for (int j = 0; j < 32; j++) q8[34 * b + 2 + j] = (char)(int8_t)(j - 16);
    }
    ASSERT_TRUE(gguf_add_tensor(&w, "f.q8", GGML_TYPE_Q8_0, {64}, q8).ok());

    std::string path = bk_test::scratch_dir("gguf_rt_" + std::to_string(alignment)) + "/x.gguf";
    ASSERT_TRUE(gguf_write(path, w).ok());
    std::string bytes;
    ASSERT_TRUE(gguf_serialize(w, &bytes).ok());
    std::string disk;
    ASSERT_TRUE(read_file(path, &disk).ok());
    EXPECT_EQ(disk, bytes);

    GgufFile f;
    Status st = gguf_read(path, &f);
    ASSERT_TRUE(st.ok()) << st.msg;
    EXPECT_EQ(f.version, 3u);
    EXPECT_EQ(f.alignment, alignment);
    EXPECT_EQ(f.data_start % alignment, 0u);
    int64_t i = 0;
    double d = 0;
    bool b = false;
    std::string s;
    ASSERT_TRUE(gguf_get_int(f, "t.u8", &i, true).ok()); EXPECT_EQ(i, 200);
    ASSERT_TRUE(gguf_get_int(f, "t.i8", &i, true).ok()); EXPECT_EQ(i, -5);
    ASSERT_TRUE(gguf_get_int(f, "t.u16", &i, true).ok()); EXPECT_EQ(i, 65000);
    ASSERT_TRUE(gguf_get_int(f, "t.i16", &i, true).ok()); EXPECT_EQ(i, -30000);
    ASSERT_TRUE(gguf_get_int(f, "t.u32", &i, true).ok()); EXPECT_EQ(i, 4000000000ll);
    ASSERT_TRUE(gguf_get_int(f, "t.i32", &i, true).ok()); EXPECT_EQ(i, -123456);
    ASSERT_TRUE(gguf_get_int(f, "t.u64", &i, true).ok()); EXPECT_EQ(i, 1ll << 40);
    ASSERT_TRUE(gguf_get_int(f, "t.i64", &i, true).ok()); EXPECT_EQ(i, -(1ll << 40));
    ASSERT_TRUE(gguf_get_float(f, "t.f32", &d, true).ok()); EXPECT_EQ(d, (double)0.1f);
    ASSERT_TRUE(gguf_get_float(f, "t.f64", &d, true).ok()); EXPECT_EQ(d, 0.1);
    ASSERT_TRUE(gguf_get_bool(f, "t.bool", &b, true).ok()); EXPECT_TRUE(b);
    ASSERT_TRUE(gguf_get_str(f, "t.str", &s, true).ok()); EXPECT_EQ(s, "h\xC3\xA9llo\n");
    EXPECT_EQ(gguf_find_kv(f, "t.astr")->value.arr_str, (std::vector<std::string>{"a", "", "\xE2\x96\x81x"}));
    EXPECT_EQ(gguf_find_kv(f, "t.af32")->value.arr_f, (std::vector<double>{1.5, -2.0}));
    EXPECT_EQ((int64_t)gguf_find_kv(f, "t.ai32")->value.arr_int[0], -1);
    EXPECT_EQ(gguf_find_kv(f, "t.au8")->value.arr_int, (std::vector<uint64_t>{0, 255, 16}));
    EXPECT_EQ(gguf_find_kv(f, "t.abool")->value.arr_int, (std::vector<uint64_t>{1, 0, 1}));
    EXPECT_FALSE(gguf_get_str(f, "t.u8", &s, true).ok());       // wrong type
    EXPECT_FALSE(gguf_get_int(f, "missing", &i, true).ok());    // required
    EXPECT_TRUE(gguf_get_int(f, "missing", &i, false).ok());    // optional

    ASSERT_EQ(f.tensors.size(), 6u);
    std::vector<float> q8v(64);
    ASSERT_TRUE(gguf_tensor_to_f32(f, *gguf_find_tensor(f, "f.q8"), q8v.data(), 64).ok());
    for (int k = 0; k < 64; k++) EXPECT_EQ(q8v[k], 0.5f * (k / 32 + 1) * (k % 32 - 16)) << k;
    uint64_t expect_off = 0;
    for (const GgufTensorInfo& t : f.tensors) {
      EXPECT_EQ(t.offset, expect_off) << t.name;  // back to back, as llama.cpp requires
      expect_off += (t.nbytes + alignment - 1) / alignment * alignment;
    }
    std::vector<float> back(15);
    ASSERT_TRUE(gguf_tensor_to_f32(f, *gguf_find_tensor(f, "a.f32"), back.data(), 15).ok());
    EXPECT_EQ(back, f32);
    ASSERT_TRUE(gguf_tensor_to_f32(f, *gguf_find_tensor(f, "b.f16"), back.data(), 15).ok());
    for (int k = 0; k < 15; k++) EXPECT_EQ(back[k], f16_to_f32(f32_to_f16(f32[k])));
    ASSERT_TRUE(gguf_tensor_to_f32(f, *gguf_find_tensor(f, "c.bf16"), back.data(), 15).ok());
    for (int k = 0; k < 15; k++) EXPECT_NEAR(back[k], f32[k], std::fabs(f32[k]) / 128);
    for (const char* name : {"d.tq2", "e.tq1"}) {
      const GgufTensorInfo* t = gguf_find_tensor(f, name);
      ASSERT_NE(t, nullptr);
      EXPECT_EQ(t->ne, (std::vector<int64_t>{512, 2}));
      std::vector<float> vals(1024);
      ASSERT_TRUE(gguf_tensor_to_f32(f, *t, vals.data(), vals.size()).ok());
      for (size_t k = 0; k < vals.size(); k++) ASSERT_EQ(vals[k], 0.25f * codes[k]) << name << " " << k;
    }
  }
}

TEST(Gguf, Tq2BlocksMatchReferenceLayout) {
  std::mt19937 g(1);
  for (int it = 0; it < 200; it++) {
    std::vector<int8_t> c = random_codes(g, 256);
    if (it == 0) std::fill(c.begin(), c.end(), -1);
    if (it == 1) std::fill(c.begin(), c.end(), 1);
    uint16_t d = (uint16_t)g();
    uint8_t mine[66], ref[66];
    tq2_0_pack_block(c.data(), d, mine);
    ref_tq2_pack(c.data(), d, ref);
    ASSERT_EQ(memcmp(mine, ref, 66), 0) << "iteration " << it;
    int8_t back[256];
    uint16_t d2;
    tq2_0_unpack_block(mine, back, &d2);
    EXPECT_EQ(d2, d);
    ASSERT_EQ(memcmp(back, c.data(), 256), 0);
  }
}

TEST(Gguf, Tq1BlocksMatchReferenceLayout) {
  // Every 5-trit value in every byte position decodes back exactly, both by
  // llama.cpp's multiply-shift rule (tq1_0_unpack_block) and by arithmetic.
  std::mt19937 g(2);
  for (int it = 0; it < 300; it++) {
    std::vector<int8_t> c = random_codes(g, 256);
    if (it < 243)  // sweep all 243 digit patterns through every byte
      for (int e = 0; e < 256; e++) {
        int byte, k, nt;
        tq1_position(e, &byte, &k, &nt);
        int v = (it + byte) % 243;
        for (int i = 0; i < 4 - k; i++) v /= 3;
        c[e] = (int8_t)(v % 3 - 1);
      }
    uint16_t d = (uint16_t)g();
    uint8_t mine[54], ref[54];
    tq1_0_pack_block(c.data(), d, mine);
    ref_tq1_pack(c.data(), d, ref);
    ASSERT_EQ(memcmp(mine, ref, 54), 0) << "iteration " << it;
    int8_t back[256], back_ref[256];
    uint16_t d2;
    tq1_0_unpack_block(mine, back, &d2);
    ref_tq1_unpack(mine, back_ref);
    EXPECT_EQ(d2, d);
    ASSERT_EQ(memcmp(back, c.data(), 256), 0) << "iteration " << it;
    ASSERT_EQ(memcmp(back_ref, c.data(), 256), 0) << "iteration " << it;
  }
}

TEST(Gguf, TqRejectsBadInput) {
  std::vector<int8_t> c(256, 0);
  std::string out;
  c[7] = 2;
  EXPECT_FALSE(ternary_codes_to_tq(GGML_TYPE_TQ2_0, c.data(), 1, 256, 0, &out).ok());
  c[7] = 0;
  EXPECT_FALSE(ternary_codes_to_tq(GGML_TYPE_TQ2_0, c.data(), 2, 128, 0, &out).ok());  // cols % 256
  EXPECT_FALSE(ternary_codes_to_tq(GGML_TYPE_F16, c.data(), 1, 256, 0, &out).ok());
  GgufWriter w;
  EXPECT_FALSE(gguf_add_tensor(&w, "x", GGML_TYPE_TQ2_0, {128, 2}, std::string(132, '\0')).ok());
  EXPECT_FALSE(gguf_add_tensor(&w, std::string(64, 'n'), GGML_TYPE_F32, {1}, std::string(4, '\0')).ok());
  ASSERT_TRUE(gguf_add_tensor(&w, "x", GGML_TYPE_F32, {1}, std::string(4, '\0')).ok());
  EXPECT_FALSE(gguf_add_tensor(&w, "x", GGML_TYPE_F32, {1}, std::string(4, '\0')).ok());  // duplicate
  EXPECT_FALSE(gguf_add_tensor(&w, "y", GGML_TYPE_F32, {2}, std::string(4, '\0')).ok());  // size
}

TEST(Gguf, LatentWeightsRequantizeToSameCodesAndGamma) {
  std::mt19937 g(3);
  for (int it = 0; it < 50; it++) {
    size_t n = 1 + g() % 5000;
    std::vector<float> w(n);
    std::normal_distribution<float> nd(0.0f, 0.02f + 0.1f * (it % 5));
    for (auto& x : w) x = nd(g);
    std::vector<int8_t> c(n), c2(n);
    float gamma = quant_ternary_codes(c.data(), w.data(), n);
    std::vector<float> latent(n);
    ternary_latent_from_codes(c.data(), n, gamma, latent.data());
    float gamma2 = quant_ternary_codes(c2.data(), latent.data(), n);
    EXPECT_EQ(gamma2, gamma) << "n=" << n;
    EXPECT_TRUE(c == c2) << "n=" << n;
  }
}

// ---- model <-> GGUF -------------------------------------------------------------------
TEST(GgufModel, TernaryStudentSameLogitsAllTypes) {
  std::string dir = bk_test::scratch_dir("gguf_ternary");
  for (FfnAct act : {FFN_SWIGLU, FFN_RELU2}) {
    Model m;
    init_model(&m, small_cfg(true, true, act), 11);
    auto toks = test_tokens(m.cfg.vocab_size);
    std::vector<float> ref = logits_of(&m, toks);
    for (GgufWeightFormat f : {GGUF_W_TQ2_0, GGUF_W_TQ1_0, GGUF_W_F16, GGUF_W_F32}) {
      SCOPED_TRACE(std::string(ffn_act_name(act)) + " " + gguf_weight_format_name(f));
      GgufExportOptions opt;
      opt.weights = f;
      opt.embed_f32 = true;
      Model back;
      GgufExportReport rep;
      GgufLoadInfo info;
      round_trip(m, opt, dir + "/s.gguf", &back, &rep, &info);
      EXPECT_EQ(rep.arch, "bitnet");
      EXPECT_EQ(info.arch, "bitnet");
      EXPECT_EQ(info.embed_type, ROWS_F32);
      EXPECT_EQ(model_config_to_json(back.cfg), model_config_to_json(m.cfg));
      expect_same_ternary(m, back);
      std::vector<float> got = logits_of(&back, toks);
      EXPECT_EQ(max_abs_diff(ref, got), 0.0f);
      // The file holds what llama.cpp's bitnet graph expects.
      GgufFile gf;
      ASSERT_TRUE(gguf_read(dir + "/s.gguf", &gf).ok());
      const GgufTensorInfo* q = gguf_find_tensor(gf, "blk.0.attn_q.weight");
      ASSERT_NE(q, nullptr);
      uint32_t want = f == GGUF_W_TQ2_0 ? GGML_TYPE_TQ2_0
                      : f == GGUF_W_TQ1_0 ? GGML_TYPE_TQ1_0
                      : f == GGUF_W_F16 ? GGML_TYPE_F16 : GGML_TYPE_F32;
      EXPECT_EQ(q->type, want);
      EXPECT_NE(gguf_find_tensor(gf, "blk.1.ffn_down.scale"), nullptr);
      EXPECT_NE(gguf_find_tensor(gf, "blk.1.ffn_gate.weight"), nullptr);  // relu2 too (= ffn_up)
      EXPECT_EQ(gguf_find_tensor(gf, "output.weight"), nullptr);
      std::string hidden;
      ASSERT_TRUE(gguf_get_str(gf, "bitnet.hidden_activation", &hidden, false).ok());
      EXPECT_EQ(hidden, act == FFN_RELU2 ? "relu" : "");
    }
  }
}

TEST(GgufModel, F16EmbeddingsAreCloseNotExact) {
  Model m;
  init_model(&m, small_cfg(true, true, FFN_SWIGLU), 12);
  auto toks = test_tokens(m.cfg.vocab_size);
  std::vector<float> ref = logits_of(&m, toks);
  Model back;
  GgufExportReport rep;
  GgufLoadInfo info;
  GgufExportOptions opt;  // auto: tq2_0 + F16 embeddings
  round_trip(m, opt, bk_test::scratch_dir("gguf_f16emb") + "/s.gguf", &back, &rep, &info);
  expect_same_ternary(m, back);
  float diff = max_abs_diff(ref, logits_of(&back, toks));
  printf("tq2_0 + f16 token_embd: max |logit diff| = %g\n", diff);
  EXPECT_LT(diff, 5e-2f);
  EXPECT_EQ(info.embed_type, ROWS_F16);  // packed inference keeps it as f16
  bool warned = false;
  for (auto& w : rep.warnings) warned |= w.find("F16") != std::string::npos;
  EXPECT_TRUE(warned);
}

TEST(GgufModel, NonMultipleOf256RowsFallBackExactly) {
  Model m;
  init_model(&m, small_cfg(true, true, FFN_SWIGLU, 64, 160), 13);
  auto toks = test_tokens(m.cfg.vocab_size);
  std::vector<float> ref = logits_of(&m, toks);
  Model back;
  GgufExportReport rep;
  GgufLoadInfo info;
  GgufExportOptions opt;
  opt.embed_f32 = true;
  std::string path = bk_test::scratch_dir("gguf_fallback") + "/s.gguf";
  round_trip(m, opt, path, &back, &rep, &info);
  EXPECT_EQ(max_abs_diff(ref, logits_of(&back, toks)), 0.0f);
  GgufFile gf;
  ASSERT_TRUE(gguf_read(path, &gf).ok());
  EXPECT_EQ(gguf_find_tensor(gf, "blk.0.attn_q.weight")->type, (uint32_t)GGML_TYPE_F16);
  bool warned = false;
  for (auto& w : rep.warnings) warned |= w.find("multiple of 256") != std::string::npos;
  EXPECT_TRUE(warned);
}

TEST(GgufModel, FloatTeacherLlamaArchBitExact) {
  for (bool tied : {true, false}) {
    ModelConfig c = small_cfg(false, false, FFN_SWIGLU);
    c.tie_embeddings = tied;
    Model m;
    init_model(&m, c, 14);
    auto toks = test_tokens(c.vocab_size);
    std::vector<float> ref = logits_of(&m, toks);
    GgufExportOptions opt;
    opt.weights = GGUF_W_F32;
    Model back;
    GgufExportReport rep;
    GgufLoadInfo info;
    std::string path = bk_test::scratch_dir("gguf_teacher") + "/t.gguf";
    round_trip(m, opt, path, &back, &rep, &info);
    EXPECT_EQ(rep.arch, "llama");
    ASSERT_EQ(back.params.size(), m.params.size());
    EXPECT_TRUE(back.params == m.params);  // q/k permutation undone exactly
    EXPECT_EQ(max_abs_diff(ref, logits_of(&back, toks)), 0.0f);
    GgufFile gf;
    ASSERT_TRUE(gguf_read(path, &gf).ok());
    EXPECT_EQ(gguf_find_tensor(gf, "output.weight") != nullptr, !tied);
    EXPECT_EQ(gguf_find_tensor(gf, "blk.0.attn_sub_norm.weight"), nullptr);
    // The stored q rows are permuted for llama.cpp's NORM RoPE: row 2i+j of a head is HF row j*d/2+i.
    std::vector<float> q(gguf_find_tensor(gf, "blk.0.attn_q.weight")->numel());
    ASSERT_TRUE(gguf_tensor_to_f32(gf, *gguf_find_tensor(gf, "blk.0.attn_q.weight"), q.data(), q.size()).ok());
    const int D = c.dim, hd = c.head_dim;
    const float* hf = m.w.layers[0].wq;
    for (int h = 0; h < c.n_heads; h++)
      for (int i = 0; i < hd / 2; i++)
        for (int j = 0; j < 2; j++)
          ASSERT_EQ(q[(size_t)(h * hd + 2 * i + j) * D + 5], hf[(size_t)(h * hd + j * hd / 2 + i) * D + 5]);
  }
}

TEST(GgufModel, FloatTeacherF16IsClose) {
  Model m;
  init_model(&m, small_cfg(false, false, FFN_SWIGLU), 15);
  auto toks = test_tokens(m.cfg.vocab_size);
  std::vector<float> ref = logits_of(&m, toks);
  Model back;
  GgufExportReport rep;
  GgufLoadInfo info;
  round_trip(m, GgufExportOptions(), bk_test::scratch_dir("gguf_teacher16") + "/t.gguf", &back, &rep, &info);
  float diff = max_abs_diff(ref, logits_of(&back, toks));
  printf("float teacher f16: max |logit diff| = %g\n", diff);
  EXPECT_GT(diff, 0.0f);
  EXPECT_LT(diff, 5e-2f);
}

TEST(GgufModel, FloatSublnModelUsesBitnetArch) {
  ModelConfig c = small_cfg(false, true, FFN_SWIGLU);
  Model m;
  init_model(&m, c, 16);
  auto toks = test_tokens(c.vocab_size);
  std::vector<float> ref = logits_of(&m, toks);
  GgufExportOptions opt;
  opt.weights = GGUF_W_F32;
  Model back;
  GgufExportReport rep;
  GgufLoadInfo info;
  round_trip(m, opt, bk_test::scratch_dir("gguf_float_subln") + "/t.gguf", &back, &rep, &info);
  EXPECT_EQ(rep.arch, "bitnet");
  EXPECT_TRUE(back.params == m.params);
  EXPECT_EQ(max_abs_diff(ref, logits_of(&back, toks)), 0.0f);
}

TEST(GgufModel, TernaryWithoutSublnUsesLlamaArch) {
  ModelConfig c = small_cfg(true, false, FFN_SWIGLU);
  Model m;
  init_model(&m, c, 17);
  auto toks = test_tokens(c.vocab_size);
  std::vector<float> ref = logits_of(&m, toks);
  GgufExportOptions opt;
  opt.embed_f32 = true;
  Model back;
  GgufExportReport rep;
  GgufLoadInfo info;
  round_trip(m, opt, bk_test::scratch_dir("gguf_ternary_llama") + "/t.gguf", &back, &rep, &info);
  EXPECT_EQ(rep.arch, "llama");
  // gamma goes through fp16 block scales: same codes, gamma within fp16 rounding.
  for (const ParamInfo& p : m.info) {
    if (p.kind != PARAM_LINEAR) continue;
    std::vector<int8_t> ca(p.numel), cb(p.numel);
    float ga = quant_ternary_codes(ca.data(), m.params.data() + p.offset, p.numel);
    float gb = quant_ternary_codes(cb.data(), back.params.data() + model_find_param(back, p.name)->offset, p.numel);
    EXPECT_TRUE(ca == cb) << p.name;
    EXPECT_EQ(gb, f16_to_f32(f32_to_f16(ga))) << p.name;
  }
  float diff = max_abs_diff(ref, logits_of(&back, toks));
  EXPECT_LT(diff, 5e-2f);
}

// The packed engine from a GGUF's blocks (no float model) holds the same
// weights as the float path's load-then-pack: the same bytes and bit-identical
// logits, for bitnet (TQ2_0, scale tensors) and llama (TQ1_0, fp16 block
// scales, permuted q/k rows) files, with F16 and F32 embeddings.
TEST(GgufModel, PackedLoadEqualsLoadThenPack) {
  const std::string dir = bk_test::scratch_dir("gguf_packed_load");
  for (bool subln : {true, false})
    for (bool embed_f32 : {false, true}) {
      SCOPED_TRACE(std::string(subln ? "bitnet" : "llama") + (embed_f32 ? " f32 embed" : " f16 embed"));
      Model m;
      init_model(&m, small_cfg(true, subln, FFN_SWIGLU), 21);
      GgufExportOptions opt;
      opt.embed_f32 = embed_f32;
      // TQ1_0 for the llama files: its trits are decoded into the same I2 rows.
      opt.weights = subln ? GGUF_W_TQ2_0 : GGUF_W_TQ1_0;
      GgufExportReport rep;
      const std::string path = dir + "/m.gguf";
      ASSERT_TRUE(gguf_export_model(m, opt, path, &rep).ok());
      Model back;
      ModelSource src;
      ASSERT_TRUE(model_load_any(path, &back, &src).ok());
      EXPECT_EQ(src.embed_type, embed_f32 ? ROWS_F32 : ROWS_F16);
      InferWeights *a = nullptr, *b = nullptr;
      ASSERT_TRUE(infer_weights_create(&back, INFER_PACKED, &a, src.embed_type).ok());
      GgufLoadInfo info;
      Status st = gguf_load_packed(path, &b, &info);
      ASSERT_TRUE(st.ok()) << st.msg;
      EXPECT_EQ(info.embed_type, src.embed_type);
      EXPECT_EQ(info.tokenizer_model, src.tokenizer_model);
      EXPECT_EQ(infer_weights_bytes(a), infer_weights_bytes(b));
      const int V = back.cfg.vocab_size;
      std::vector<int32_t> toks = test_tokens(V);
      InferSession *sa = nullptr, *sb = nullptr;
      ASSERT_TRUE(infer_session_create(a, 32, &sa).ok());
      ASSERT_TRUE(infer_session_create(b, 32, &sb).ok());
      ASSERT_TRUE(infer_session_eval(sa, toks.data(), 8).ok());
      ASSERT_TRUE(infer_session_eval(sb, toks.data(), 8).ok());
      EXPECT_EQ(0, memcmp(infer_session_logits(sa), infer_session_logits(sb), sizeof(float) * V));
      for (int i = 8; i < 12; i++) {
        ASSERT_TRUE(infer_session_eval(sa, &toks[i], 1).ok());
        ASSERT_TRUE(infer_session_eval(sb, &toks[i], 1).ok());
        EXPECT_EQ(0, memcmp(infer_session_logits(sa), infer_session_logits(sb), sizeof(float) * V)) << i;
      }
      infer_session_destroy(sa);
      infer_session_destroy(sb);
      infer_weights_destroy(a);
      infer_weights_destroy(b);
    }
  // Projections that are neither TQ2_0 nor TQ1_0 are refused with the tensor named.
  Model m;
  init_model(&m, small_cfg(true, true, FFN_SWIGLU), 22);
  GgufExportOptions opt;
  opt.weights = GGUF_W_F16;
  GgufExportReport rep;
  ASSERT_TRUE(gguf_export_model(m, opt, dir + "/f16.gguf", &rep).ok());
  InferWeights* w = nullptr;
  GgufLoadInfo info;
  Status st = gguf_load_packed(dir + "/f16.gguf", &w, &info);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("blk.0.attn_q.weight"), std::string::npos) << st.msg;
  EXPECT_NE(st.msg.find("f16"), std::string::npos) << st.msg;
  EXPECT_EQ(w, nullptr);
}

TEST(GgufModel, UntiedBitnetIsRefused) {
  ModelConfig c = small_cfg(true, true, FFN_SWIGLU);
  c.tie_embeddings = false;
  Model m;
  init_model(&m, c, 18);
  GgufWriter w;
  GgufExportReport rep;
  Status st = gguf_export_build(m, GgufExportOptions(), &w, &rep);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("tie_embeddings"), std::string::npos) << st.msg;
  GgufExportOptions opt;
  opt.weights = GGUF_W_TQ2_0;
  Model f;
  init_model(&f, small_cfg(false, false, FFN_SWIGLU), 19);
  st = gguf_export_build(f, opt, &w, &rep);
  EXPECT_FALSE(st.ok());  // ternary blocks for a float model
}

TEST(GgufModel, LoadAnyDispatchesOnMagic) {
  std::string dir = bk_test::scratch_dir("gguf_load_any");
  Model m;
  init_model(&m, small_cfg(true, true, FFN_SWIGLU), 20);
  TrainState ts;
  ts.step = 7;
  ts.summary_json = "{\"kd\":true}";
  std::string ckpt;
  Status st = checkpoint_save(dir, m, nullptr, nullptr, ts, "", 0, &ckpt);
  ASSERT_TRUE(st.ok()) << st.msg;
  Model a, b;
  ModelSource sa, sb;
  st = model_load_any(ckpt, &a, &sa);
  ASSERT_TRUE(st.ok()) << st.msg;
  EXPECT_EQ(sa.format, "safetensors");
  EXPECT_EQ(sa.step, 7);
  GgufExportOptions opt;
  opt.embed_f32 = true;
  opt.training_json = "{\"step\":7}";
  GgufExportReport rep;
  // A .safetensors name on a GGUF file: the magic decides.
  ASSERT_TRUE(gguf_export_model(a, opt, dir + "/odd_name.safetensors", &rep).ok());
  st = model_load_any(dir + "/odd_name.safetensors", &b, &sb);
  ASSERT_TRUE(st.ok()) << st.msg;
  EXPECT_EQ(sb.format, "gguf");
  EXPECT_EQ(sb.training_json, "{\"step\":7}");
  auto toks = test_tokens(m.cfg.vocab_size);
  EXPECT_EQ(max_abs_diff(logits_of(&m, toks), logits_of(&b, toks)), 0.0f);
  EXPECT_FALSE(model_load_any(dir + "/missing.gguf", &b, &sb).ok());
}

// ---- tokenizer metadata ---------------------------------------------------------------
TEST(GgufTokenizer, VocabularyKeysAndRebuild) {
  std::string dir = bk_test::scratch_dir("gguf_tok");
  for (const char* type : {"unigram", "bpe"}) {
    SCOPED_TRACE(type);
    TokenizerTrainOptions o;
    o.vocab_size = 400;
    o.model_type = type;
    std::string err;
    std::string path = bk_test::spm_fixture_train_opts(o, dir, std::string("tok_") + type, &err);
    ASSERT_FALSE(path.empty()) << err;
    Tokenizer tok;
    ASSERT_TRUE(tokenizer_load(path, &tok).ok());
    const int n = tokenizer_vocab_size(tok);

    ModelConfig c = small_cfg(true, true, FFN_SWIGLU);
    c.vocab_size = n + 3;  // padded embedding rows become unused tokens
    Model m;
    init_model(&m, c, 21);
    GgufExportOptions opt;
    opt.tokenizer_model = tokenizer_model_bytes(tok);
    opt.name = "tiny";
    GgufExportReport rep;
    std::string gpath = dir + "/m.gguf";
    ASSERT_TRUE(gguf_export_model(m, opt, gpath, &rep).ok());
    GgufFile f;
    ASSERT_TRUE(gguf_read(gpath, &f).ok());
    std::string s;
    ASSERT_TRUE(gguf_get_str(f, "tokenizer.ggml.model", &s, true).ok());
    EXPECT_EQ(s, std::string(type) == "bpe" ? "llama" : "t5");  // SPM merges vs unigram Viterbi
    const GgufValue& toks = gguf_find_kv(f, "tokenizer.ggml.tokens")->value;
    const GgufValue& types = gguf_find_kv(f, "tokenizer.ggml.token_type")->value;
    const GgufValue& scores = gguf_find_kv(f, "tokenizer.ggml.scores")->value;
    ASSERT_EQ(toks.arr_str.size(), (size_t)c.vocab_size);
    ASSERT_EQ(types.arr_int.size(), (size_t)c.vocab_size);
    ASSERT_EQ(scores.arr_f.size(), (size_t)c.vocab_size);
    for (int i = 0; i < n; i++) {
      EXPECT_EQ(toks.arr_str[i], tokenizer_piece(tok, i)) << i;
      int t = (int)types.arr_int[i];
      if (tokenizer_is_byte(tok, i)) EXPECT_EQ(t, 6) << i;
      else if (tokenizer_is_control(tok, i)) EXPECT_EQ(t, 3) << i;
      else if (tokenizer_is_unknown(tok, i)) EXPECT_EQ(t, 2) << i;
      else EXPECT_TRUE(t == 1 || t == 4) << i;
    }
    EXPECT_EQ(types.arr_int[n], 5u);  // padding rows
    EXPECT_EQ(toks.arr_str[n + 2], "<bitkd_unused_" + std::to_string(n + 2) + ">");
    int user_defined = 0;
    for (int i = 0; i < n; i++) user_defined += types.arr_int[i] == 4;
    EXPECT_EQ(user_defined, 3);  // <|user|>, <|assistant|>, "\n"
    int64_t id = -1;
    ASSERT_TRUE(gguf_get_int(f, "tokenizer.ggml.bos_token_id", &id, true).ok());
    EXPECT_EQ(id, tokenizer_bos_id(tok));
    ASSERT_TRUE(gguf_get_int(f, "tokenizer.ggml.eos_token_id", &id, true).ok());
    EXPECT_EQ(id, tokenizer_eos_id(tok));
    ASSERT_TRUE(gguf_get_int(f, "tokenizer.ggml.unknown_token_id", &id, true).ok());
    EXPECT_EQ(id, tokenizer_unk_id(tok));
    bool add_bos = false, add_space = false;
    ASSERT_TRUE(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &add_bos, true).ok());
    EXPECT_TRUE(add_bos);
    ASSERT_TRUE(gguf_get_bool(f, "tokenizer.ggml.add_space_prefix", &add_space, true).ok());
    EXPECT_FALSE(add_space);  // llama.cpp would add it after every special token
    ASSERT_TRUE(gguf_get_bool(f, "bitkd.tokenizer.add_dummy_prefix", &add_space, true).ok());
    EXPECT_EQ(add_space, tokenizer_adds_dummy_prefix(tok));
    ASSERT_TRUE(gguf_get_str(f, "general.name", &s, true).ok());
    EXPECT_EQ(s, "tiny");

    // bitkd gets the original model back; without it, one rebuilt from tokenizer.ggml.*.
    Model back;
    GgufLoadInfo info;
    ASSERT_TRUE(gguf_model_from_file(f, &back, &info).ok());
    EXPECT_EQ(info.tokenizer_model, tokenizer_model_bytes(tok));
    EXPECT_FALSE(info.tokenizer_rebuilt);
    GgufFile stripped = f;
    for (size_t i = 0; i < stripped.kv.size(); i++)
      if (stripped.kv[i].key == "bitkd.tokenizer.sentencepiece_model") stripped.kv.erase(stripped.kv.begin() + i);
    ASSERT_TRUE(gguf_model_from_file(stripped, &back, &info).ok());
    ASSERT_TRUE(info.tokenizer_rebuilt);
    Tokenizer rebuilt;
    Status st = tokenizer_load_from_bytes(info.tokenizer_model, &rebuilt);
    ASSERT_TRUE(st.ok()) << st.msg;
    EXPECT_EQ(tokenizer_vocab_size(rebuilt), c.vocab_size);
    EXPECT_EQ(tokenizer_bos_id(rebuilt), tokenizer_bos_id(tok));
    EXPECT_EQ(tokenizer_eos_id(rebuilt), tokenizer_eos_id(tok));
    // The rebuilt model has the same pieces, scores and algorithm, and no dummy
    // prefix (as the GGUF says): one leading space gives the original's tokens,
    // the rule documented for llama.cpp prompts.
    for (const char* text : {"Hello world", "{\"key\": [1, 2, 3]}", "def f(x):\n    return x + 1",
                             "<|user|>\nsort the list\n\n<|assistant|>\nSure, data"}) {
      std::vector<int32_t> a, b;
      ASSERT_TRUE(tokenizer_encode(tok, text, true, &a).ok());
      ASSERT_TRUE(tokenizer_encode(rebuilt, std::string(" ") + text, true, &b).ok());
      EXPECT_EQ(a, b) << text;
    }
  }
}

TEST(GgufTokenizer, SpmParseRejectsGarbage) {
  SpmVocab v;
  EXPECT_FALSE(spm_parse_model("", &v).ok());
  EXPECT_FALSE(spm_parse_model("\x0a\xff\xff\xff\xff\x0f", &v).ok());
  EXPECT_FALSE(spm_parse_model("hello, not a protobuf", &v).ok());
}

// ---- malformed files --------------------------------------------------------------------
namespace {

std::string tiny_file() {
  GgufWriter w;
  gguf_set(&w, "general.architecture", gguf_str("llama"));
  gguf_set(&w, "a.list", gguf_arr_str({"x", "yy"}));
  float v[4] = {1, 2, 3, 4};
  EXPECT_TRUE(gguf_add_tensor_f32(&w, "t0", GGML_TYPE_F32, {4}, v).ok());
  EXPECT_TRUE(gguf_add_tensor_f32(&w, "t1", GGML_TYPE_F32, {2, 2}, v).ok());
  std::string s;
  EXPECT_TRUE(gguf_serialize(w, &s).ok());
  return s;
}

Status parse(const std::string& bytes) {
  GgufFile f;
  return gguf_parse(bytes, "bad.gguf", &f);
}

void put_u32_at(std::string* s, size_t off, uint32_t v) { memcpy(&(*s)[off], &v, 4); }

}  // namespace

TEST(GgufBadFiles, EveryTruncationIsAnErrorNamingTheFile) {
  std::string good = tiny_file();
  ASSERT_TRUE(parse(good).ok());
  for (size_t n = 0; n < good.size(); n++) {
    // The last tensor's padding is not data: a file cut inside it is still complete.
    Status st = parse(good.substr(0, n));
    GgufFile f;
    if (st.ok()) {
      ASSERT_TRUE(gguf_parse(good.substr(0, n), "bad.gguf", &f).ok());
      EXPECT_GE(n, f.data_start + f.tensors.back().offset + f.tensors.back().nbytes) << n;
      continue;
    }
    EXPECT_NE(st.msg.find("bad.gguf"), std::string::npos) << st.msg;
  }
  EXPECT_NE(parse(good.substr(0, good.size() / 2)).msg.find("truncated"), std::string::npos);
}

TEST(GgufBadFiles, ForeignAndInconsistentFiles) {
  std::string good = tiny_file();
  std::string s = good;
  s[0] = 'P';
  EXPECT_NE(parse(s).msg.find("not a GGUF file"), std::string::npos) << parse(s).msg;
  EXPECT_NE(parse("PK\x03\x04 zip").msg.find("not a GGUF file"), std::string::npos);
  EXPECT_NE(parse("").msg.find("not a GGUF file"), std::string::npos);
  s = good;
  put_u32_at(&s, 4, 1);
  EXPECT_NE(parse(s).msg.find("version 1"), std::string::npos) << parse(s).msg;
  s = good;
  put_u32_at(&s, 4, 7);
  EXPECT_NE(parse(s).msg.find("unsupported GGUF version 7"), std::string::npos);
  // Absurd counts.
  s = good;
  uint64_t big = 1ull << 40;
  memcpy(&s[8], &big, 8);
  EXPECT_FALSE(parse(s).ok());

  // Hand-built files for the other rules.
  auto header = [](uint64_t nt, uint64_t nkv) {
    std::string h = "GGUF";
    uint32_t v = 3;
    h.append((const char*)&v, 4).append((const char*)&nt, 8).append((const char*)&nkv, 8);
    return h;
  };
  auto str = [](const std::string& x) {
    uint64_t n = x.size();
    return std::string((const char*)&n, 8) + x;
  };
  auto u32 = [](uint32_t x) { return std::string((const char*)&x, 4); };
  auto u64 = [](uint64_t x) { return std::string((const char*)&x, 8); };
  // array of arrays
  s = header(0, 1) + str("k") + u32(GGUF_TYPE_ARRAY) + u32(GGUF_TYPE_ARRAY) + u64(0);
  EXPECT_NE(parse(s).msg.find("array of arrays"), std::string::npos) << parse(s).msg;
  // unknown value type
  s = header(0, 1) + str("k") + u32(99);
  EXPECT_NE(parse(s).msg.find("unknown value type"), std::string::npos);
  // duplicate key
  s = header(0, 2) + str("k") + u32(GGUF_TYPE_UINT32) + u32(1) + str("k") + u32(GGUF_TYPE_UINT32) + u32(2);
  EXPECT_NE(parse(s).msg.find("duplicate metadata key 'k'"), std::string::npos);
  // alignment not a power of two
  s = header(0, 1) + str("general.alignment") + u32(GGUF_TYPE_UINT32) + u32(24);
  EXPECT_NE(parse(s).msg.find("power of two"), std::string::npos);
  // huge array count
  s = header(0, 1) + str("k") + u32(GGUF_TYPE_ARRAY) + u32(GGUF_TYPE_UINT32) + u64(1ull << 60);
  EXPECT_NE(parse(s).msg.find("truncated"), std::string::npos) << parse(s).msg;
  // tensor: unknown ggml type, 5 dims, misaligned offset, data past the end, bad block multiple
  auto tensor = [&](uint32_t dims, std::vector<uint64_t> ne, uint32_t type, uint64_t off) {
    std::string t = str("w") + u32(dims);
    for (uint64_t d : ne) t += u64(d);
    return t + u32(type) + u64(off);
  };
  auto padded = [](std::string x) {
    x.resize((x.size() + 31) / 32 * 32, '\0');
    return x;
  };
  s = padded(header(1, 0) + tensor(1, {4}, 99, 0)) + std::string(64, '\0');
  EXPECT_NE(parse(s).msg.find("ggml type number 99"), std::string::npos) << parse(s).msg;
  s = padded(header(1, 0) + tensor(5, {1, 1, 1, 1, 1}, 0, 0)) + std::string(64, '\0');
  EXPECT_NE(parse(s).msg.find("dimensions"), std::string::npos);
  s = padded(header(1, 0) + tensor(1, {4}, 0, 8)) + std::string(64, '\0');
  EXPECT_NE(parse(s).msg.find("not a multiple of the alignment"), std::string::npos);
  s = padded(header(1, 0) + tensor(1, {1000}, 0, 0)) + std::string(64, '\0');
  EXPECT_NE(parse(s).msg.find("truncated"), std::string::npos) << parse(s).msg;
  s = padded(header(1, 0) + tensor(1, {100}, GGML_TYPE_TQ2_0, 0)) + std::string(64, '\0');
  EXPECT_NE(parse(s).msg.find("block size"), std::string::npos);
  s = padded(header(2, 0) + tensor(1, {4}, 0, 0) + tensor(1, {4}, 0, 32)) + std::string(64, '\0');
  EXPECT_NE(parse(s).msg.find("duplicate tensor 'w'"), std::string::npos);

  // Model-level: a GGUF of another architecture, a missing tensor.
  std::string dir = bk_test::scratch_dir("gguf_bad_model");
  GgufWriter w;
  gguf_set(&w, "general.architecture", gguf_str("mamba"));
  ASSERT_TRUE(gguf_write(dir + "/m.gguf", w).ok());
  Model m;
  GgufLoadInfo info;
  Status st = gguf_load_model(dir + "/m.gguf", &m, &info);
  EXPECT_NE(st.msg.find("'mamba' is not supported"), std::string::npos) << st.msg;
  Model good_m;
  init_model(&good_m, small_cfg(true, true, FFN_SWIGLU), 22);
  GgufWriter gw;
  GgufExportReport rep;
  ASSERT_TRUE(gguf_export_build(good_m, GgufExportOptions(), &gw, &rep).ok());
  for (size_t i = 0; i < gw.tensors.size(); i++)
    if (gw.tensors[i].name == "blk.1.ffn_up.weight") gw.tensors.erase(gw.tensors.begin() + i);
  ASSERT_TRUE(gguf_write(dir + "/missing.gguf", gw).ok());
  st = gguf_load_model(dir + "/missing.gguf", &m, &info);
  EXPECT_NE(st.msg.find("blk.1.ffn_up.weight"), std::string::npos) << st.msg;
  EXPECT_NE(st.msg.find("missing.gguf"), std::string::npos) << st.msg;
  st = gguf_load_model(dir + "/does_not_exist.gguf", &m, &info);
  EXPECT_NE(st.msg.find("does_not_exist.gguf"), std::string::npos) << st.msg;
}
