// GGUF block-quant dequantization against llama.cpp's gguf-py, an independent
// implementation (numpy) of the same formats: a random-weight llama model
// written by gguf-py's GGUFWriter with tensors in every block type bitkd reads
// (tests/reference/gguf_quants_ref.py), read back by bitkd, every tensor
// bit-identical to gguf-py's own dequantization; the float-model loader keeps
// those values; i-quants are refused by name.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "io/gguf_quants.h"
#include "model/gguf_model.h"
#include "model/model.h"
#include "testutil/testutil.h"

using namespace bk;

namespace {

std::string python() {
  const char* p = std::getenv("BITKD_TORCH_PYTHON");
  return p && *p ? p : "/usr/bin/python3";
}

std::vector<float> read_floats(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<float> v(bytes.size() / sizeof(float));
  memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

// gguf-py extracted from node-llama-cpp's llama.cpp bundle, then the reference
// model and its dequantized tensors. Every case runs in its own process (CTest
// entry per case), so the bundle clone is kept in the build tree and reused.
class GgufQuants : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = bk_test::scratch_dir("gguf_quants");
    std::string out;
    const std::string src = bk_test::source_dir();
    int rc = bk_test::run_command("sh '" + src + "/tests/reference/gguf_py.sh' '" + src + "' '" +
                                      std::string(BITKD_BINARY_DIR) + "/reference/gguf_py'",
                                  &out);
    ASSERT_EQ(rc, 0) << "extracting gguf-py failed: " << out;
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    const std::string pp = out.substr(out.find_last_of('\n') + 1);
    const std::string cmd = "PYTHONPATH='" + pp + "' " + python() + " '" + src +
                            "/tests/reference/gguf_quants_ref.py' '" + dir_ + "'";
    rc = bk_test::run_command(cmd, &out);
    ASSERT_EQ(rc, 0) << cmd << "\n"
                     << out << "\n(needs python3-numpy: apt-get install python3-numpy, see scripts/setup.sh)";
    std::ifstream mf(dir_ + "/ref.json");
    manifest_ = nlohmann::json::parse(mf);
  }
  std::string dir_;
  nlohmann::json manifest_;
};

TEST_F(GgufQuants, EveryTensorBitIdenticalToGgufPy) {
  GgufFile f;
  ASSERT_TRUE(gguf_map(dir_ + "/llama.gguf", &f).ok());
  std::set<std::string> types;
  ASSERT_EQ(manifest_.size(), f.tensors.size());
  for (const auto& e : manifest_) {
    const std::string name = e["name"];
    const GgufTensorInfo* t = gguf_find_tensor(f, name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(std::string(ggml_type_name(t->type)), e["type"].get<std::string>()) << name;
    std::vector<float> want = read_floats(dir_ + "/ref/" + name + ".bin");
    ASSERT_EQ(want.size(), (size_t)e["numel"].get<int64_t>()) << name;
    std::vector<float> got(want.size());
    Status st = gguf_tensor_to_f32(f, *t, got.data(), got.size());
    ASSERT_TRUE(st.ok()) << st.msg;
    size_t diff = 0, first = 0;
    for (size_t i = 0; i < want.size(); i++)
      if (memcmp(&got[i], &want[i], sizeof(float)) != 0 && diff++ == 0) first = i;
    EXPECT_EQ(diff, 0u) << name << " (" << ggml_type_name(t->type) << "): " << diff << " of " << want.size()
                        << " values differ, first at " << first << ": " << got[first] << " vs " << want[first];
    types.insert(ggml_type_name(t->type));
  }
  // The file covers every block type bitkd dequantizes (and the float types).
  for (const char* q : {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "f16", "bf16"})
    EXPECT_TRUE(types.count(q)) << q;
}

// GGUF name of a bitkd parameter (gguf_model.h's table, for the tensors this model has).
std::string gguf_name(const std::string& hf) {
  static const std::map<std::string, std::string> top = {{"model.embed_tokens.weight", "token_embd.weight"},
                                                         {"model.norm.weight", "output_norm.weight"},
                                                         {"lm_head.weight", "output.weight"}};
  static const std::map<std::string, std::string> layer = {
      {"input_layernorm", "attn_norm"},      {"post_attention_layernorm", "ffn_norm"},
      {"self_attn.q_proj", "attn_q"},        {"self_attn.k_proj", "attn_k"},
      {"self_attn.v_proj", "attn_v"},        {"self_attn.o_proj", "attn_output"},
      {"mlp.gate_proj", "ffn_gate"},         {"mlp.up_proj", "ffn_up"},
      {"mlp.down_proj", "ffn_down"}};
  auto it = top.find(hf);
  if (it != top.end()) return it->second;
  const std::string pre = "model.layers.";
  size_t dot = hf.find('.', pre.size());
  std::string l = hf.substr(pre.size(), dot - pre.size());
  std::string mid = hf.substr(dot + 1, hf.size() - dot - 1 - std::string(".weight").size());
  auto jt = layer.find(mid);
  return jt == layer.end() ? "" : "blk." + l + "." + jt->second + ".weight";
}

TEST_F(GgufQuants, FloatModelHoldsTheDequantizedWeights) {
  Model m;
  GgufLoadInfo info;
  Status st = gguf_load_model(dir_ + "/llama.gguf", &m, &info);
  ASSERT_TRUE(st.ok()) << st.msg;
  EXPECT_EQ(m.cfg.n_kv_heads, 2);
  EXPECT_FALSE(m.cfg.tie_embeddings);
  size_t checked = 0;
  for (const ParamInfo& p : m.info) {
    const std::string g = gguf_name(p.name);
    ASSERT_FALSE(g.empty()) << p.name;
    std::vector<float> want = read_floats(dir_ + "/ref/" + g + ".bin");
    ASSERT_EQ(want.size(), p.numel) << p.name;
    std::vector<float> got(m.params.begin() + p.offset, m.params.begin() + p.offset + p.numel);
    if (g.find("attn_q") != std::string::npos || g.find("attn_k") != std::string::npos) {
      // The llama file's q/k rows are in llama.cpp's rope order; bitkd permutes
      // them back per head, so compare the rows as a set.
      auto rows = [&](const std::vector<float>& v) {
        std::vector<std::vector<float>> r;
        for (int i = 0; i < p.rows; i++) r.emplace_back(v.begin() + (size_t)i * p.cols, v.begin() + (size_t)(i + 1) * p.cols);
        std::sort(r.begin(), r.end());
        return r;
      };
      EXPECT_TRUE(rows(got) == rows(want)) << p.name;
    } else {
      EXPECT_EQ(memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0) << p.name;
    }
    checked++;
  }
  EXPECT_EQ(checked, 3u + 9u * 2u);
}

// An i-quant tensor: the parser names the file, the tensor, the type and the
// types it reads.
TEST(GgufQuantsRefusal, IQuantNamedWithTheSupportedTypes) {
  GgufWriter w;
  gguf_set(&w, "general.architecture", gguf_str("llama"));
  ASSERT_TRUE(gguf_add_tensor(&w, "blk.0.attn_q.weight", GGML_TYPE_Q4_0, {32, 1}, std::string(18, '\0')).ok());
  std::string bytes;
  ASSERT_TRUE(gguf_serialize(w, &bytes).ok());
  // Tensor info: name (u64 length + bytes), u32 n_dims, ne[n_dims] u64, u32 type.
  size_t at = bytes.find("blk.0.attn_q.weight");
  ASSERT_NE(at, std::string::npos);
  at += strlen("blk.0.attn_q.weight") + 4 + 2 * 8;
  const uint32_t iq2_xxs = 16;
  memcpy(&bytes[at], &iq2_xxs, 4);
  GgufFile f;
  Status st = gguf_parse(bytes, "iq.gguf", &f);
  ASSERT_FALSE(st.ok());
  const std::string msg = st.msg;
  for (const char* s : {"iq.gguf", "blk.0.attn_q.weight", "iq2_xxs", "q4_k", "q6_k", "llama-quantize"})
    EXPECT_NE(msg.find(s), std::string::npos) << s << " in: " << msg;
}

// Llama 3.1+ GGUFs carry rope scaling as rope_freqs.weight: refused, not run
// with plain RoPE.
TEST(GgufQuantsRefusal, RopeScalingNamed) {
  GgufWriter w;
  gguf_set(&w, "general.architecture", gguf_str("llama"));
  gguf_set(&w, "llama.embedding_length", gguf_u32(64));
  gguf_set(&w, "llama.block_count", gguf_u32(1));
  gguf_set(&w, "llama.feed_forward_length", gguf_u32(128));
  gguf_set(&w, "llama.attention.head_count", gguf_u32(4));
  std::vector<float> freqs(8, 1.0f);
  ASSERT_TRUE(gguf_add_tensor_f32(&w, "rope_freqs.weight", GGML_TYPE_F32, {8}, freqs.data()).ok());
  std::string bytes;
  ASSERT_TRUE(gguf_serialize(w, &bytes).ok());
  GgufFile f;
  ASSERT_TRUE(gguf_parse(bytes, "l31.gguf", &f).ok());
  Model m;
  GgufLoadInfo info;
  Status st = gguf_model_from_file(f, &m, &info);
  ASSERT_FALSE(st.ok());
  for (const char* s : {"l31.gguf", "rope_freqs.weight", "llama.rope.scaling.type"})
    EXPECT_NE(st.msg.find(s), std::string::npos) << s << " in: " << st.msg;
}

}  // namespace
