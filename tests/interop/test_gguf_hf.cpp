// GGUF interop: @huggingface/gguf (npm, an independent parser) reads files
// written by `bitkd export` and sees llama.cpp's keys, value types, tensor
// names, shapes and types.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/fs.h"
#include "io/gguf.h"
#include "model/model.h"
#include "testutil/spm_fixture.h"
#include "testutil/testutil.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"

using namespace bk;
using nlohmann::json;

namespace {

bool hf_gguf_ready(std::string* why) {
  std::string out;
  if (bk_test::run_command("node --version", &out) != 0) {
    *why = "node is not installed: run bash scripts/setup.sh --test";
    return false;
  }
  std::string mod = path_join(bk_test::source_dir(), "tests/interop/node_modules/@huggingface/gguf/package.json");
  if (!file_exists(mod)) {
    *why = "tests/interop/node_modules lacks @huggingface/gguf: run bash scripts/setup.sh --test (it runs npm install there)";
    return false;
  }
  return true;
}

json inspect(const std::string& gguf_path, const std::string& out_json) {
  std::string script = path_join(bk_test::source_dir(), "tests/interop/gguf_inspect.mjs");
  std::string cmd = "node '" + script + "' '" + gguf_path + "' '" + out_json + "'";
  std::string out;
  int rc = bk_test::run_command(cmd, &out);
  EXPECT_EQ(rc, 0) << cmd << "\n" << out;
  std::string text;
  if (rc != 0 || !read_file(out_json, &text).ok()) return json();
  return json::parse(text, nullptr, false);
}

struct Fixture {
  std::string dir, tokenizer, ckpt;
  ModelConfig cfg;
  int n_pieces = 0;
};

// A checkpoint and a tokenizer, as the pipeline would leave them.
void make_fixture(const std::string& name, bool ternary, bool subln, bool tied, const char* tok_type, Fixture* fx) {
  fx->dir = bk_test::scratch_dir(name);
  TokenizerTrainOptions o;
  o.vocab_size = 400;
  o.model_type = tok_type;
  std::string err;
  fx->tokenizer = bk_test::spm_fixture_train_opts(o, fx->dir, "tok", &err);
  ASSERT_FALSE(fx->tokenizer.empty()) << err;
  Tokenizer tok;
  ASSERT_TRUE(tokenizer_load(fx->tokenizer, &tok).ok());
  fx->n_pieces = tokenizer_vocab_size(tok);
  ModelConfig c;
  c.vocab_size = fx->n_pieces;
  c.dim = 256;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 64;
  c.ffn_dim = 512;
  c.max_seq_len = 128;
  c.subln = subln;
  c.tie_embeddings = tied;
  c.weight_quant = ternary ? WQ_TERNARY : WQ_NONE;
  c.act_bits = ternary ? 8 : 0;
  fx->cfg = c;
  Model m;
  ASSERT_TRUE(model_init(&m, c, 5).ok());
  TrainState st;
  st.step = 42;
  st.summary_json = "{\"run\":\"interop\"}";
  Status s = checkpoint_save(fx->dir, m, nullptr, nullptr, st, "", 0, &fx->ckpt);
  ASSERT_TRUE(s.ok()) << s.msg;
}

void export_cli(const Fixture& fx, const std::string& type, const std::string& out) {
  std::string cmd = bk_test::bitkd_exe() + " export --model '" + fx.ckpt + "' --tokenizer '" + fx.tokenizer +
                    "' --out '" + out + "' --format gguf --type " + type + " --env-file /dev/null";
  std::string log;
  int rc = bk_test::run_command(cmd, &log);
  ASSERT_EQ(rc, 0) << cmd << "\n" << log;
  EXPECT_NE(log.find("wrote"), std::string::npos) << log;
}

void expect_u32(const json& md, const std::string& key, long long v) {
  ASSERT_TRUE(md.contains(key)) << key;
  EXPECT_EQ(md[key]["type"], (int)GGUF_TYPE_UINT32) << key;
  EXPECT_EQ(md[key]["value"].get<long long>(), v) << key;
}

void expect_f32(const json& md, const std::string& key, double v) {
  ASSERT_TRUE(md.contains(key)) << key;
  EXPECT_EQ(md[key]["type"], (int)GGUF_TYPE_FLOAT32) << key;
  EXPECT_FLOAT_EQ(md[key]["value"].get<double>(), v) << key;
}

void expect_hparams(const json& md, const std::string& a, const ModelConfig& c) {
  EXPECT_EQ(md["general.architecture"]["value"], a);
  expect_u32(md, a + ".vocab_size", c.vocab_size);
  expect_u32(md, a + ".context_length", c.max_seq_len);
  expect_u32(md, a + ".embedding_length", c.dim);
  expect_u32(md, a + ".block_count", c.n_layers);
  expect_u32(md, a + ".feed_forward_length", c.ffn_dim);
  expect_u32(md, a + ".attention.head_count", c.n_heads);
  expect_u32(md, a + ".attention.head_count_kv", c.n_kv_heads);
  expect_u32(md, a + ".rope.dimension_count", c.head_dim);
  expect_f32(md, a + ".rope.freq_base", c.rope_theta);
  expect_f32(md, a + ".attention.layer_norm_rms_epsilon", c.norm_eps);
}

void expect_tokenizer(const json& md, int n_pieces, const char* ggml_model) {
  // unigram SentencePiece -> llama.cpp's UGM ("t5"), BPE -> its SPM ("llama")
  EXPECT_EQ(md["tokenizer.ggml.model"]["value"], ggml_model);
  EXPECT_EQ(md["tokenizer.ggml.tokens"]["type"], (int)GGUF_TYPE_ARRAY);
  EXPECT_EQ(md["tokenizer.ggml.tokens"]["subType"], (int)GGUF_TYPE_STRING);
  EXPECT_EQ(md["tokenizer.ggml.tokens"]["length"], n_pieces);
  EXPECT_EQ(md["tokenizer.ggml.tokens"]["head"][0], "<unk>");
  EXPECT_EQ(md["tokenizer.ggml.scores"]["subType"], (int)GGUF_TYPE_FLOAT32);
  EXPECT_EQ(md["tokenizer.ggml.scores"]["length"], n_pieces);
  EXPECT_EQ(md["tokenizer.ggml.token_type"]["subType"], (int)GGUF_TYPE_INT32);
  EXPECT_EQ(md["tokenizer.ggml.token_type"]["length"], n_pieces);
  EXPECT_EQ(md["tokenizer.ggml.token_type"]["head"][0], 2);  // <unk>: unknown
  EXPECT_EQ(md["tokenizer.ggml.token_type"]["head"][1], 3);  // <s>: control
  expect_u32(md, "tokenizer.ggml.bos_token_id", 1);
  expect_u32(md, "tokenizer.ggml.eos_token_id", 2);
  expect_u32(md, "tokenizer.ggml.unknown_token_id", 0);
  EXPECT_EQ(md["tokenizer.ggml.add_bos_token"]["type"], (int)GGUF_TYPE_BOOL);
  EXPECT_EQ(md["tokenizer.ggml.add_bos_token"]["value"], true);
  EXPECT_EQ(md["tokenizer.ggml.add_space_prefix"]["value"], false);
  EXPECT_EQ(md["bitkd.tokenizer.sentencepiece_model"]["subType"], (int)GGUF_TYPE_UINT8);
}

// name -> (shape, dtype) as @huggingface/gguf reports them.
std::map<std::string, std::pair<std::vector<long long>, int>> tensor_map(const json& j) {
  std::map<std::string, std::pair<std::vector<long long>, int>> m;
  for (const json& t : j["tensors"]) m[t["name"]] = {t["shape"].get<std::vector<long long>>(), t["dtype"].get<int>()};
  return m;
}

}  // namespace

TEST(GgufHf, TernaryStudentAsBitnet) {
  std::string why;
  ASSERT_TRUE(hf_gguf_ready(&why)) << why;
  Fixture fx;
  make_fixture("gguf_hf_student", true, true, true, "unigram", &fx);
  for (const char* type : {"tq2_0", "tq1_0"}) {
    SCOPED_TRACE(type);
    std::string out = fx.dir + "/student." + type + ".gguf";
    export_cli(fx, type, out);
    json j = inspect(out, fx.dir + "/inspect.json");
    ASSERT_TRUE(j.is_object());
    const json& md = j["metadata"];
    expect_hparams(md, "bitnet", fx.cfg);
    expect_tokenizer(md, fx.n_pieces, "t5");
    uint32_t tq = std::string(type) == "tq2_0" ? GGML_TYPE_TQ2_0 : GGML_TYPE_TQ1_0;
    expect_u32(md, "general.file_type", std::string(type) == "tq2_0" ? 37 : 36);
    EXPECT_EQ(md["general.name"]["value"], "mini_bitnet_step_42");
    EXPECT_NE(md["bitkd.training"]["value"].get<std::string>().find("\"step\":42"), std::string::npos);
    EXPECT_NE(md["bitkd.config"]["value"].get<std::string>().find("\"weight_quant\":\"ternary\""), std::string::npos);

    const int D = 256, F = 512, K = 128, V = fx.n_pieces;
    std::map<std::string, std::pair<std::vector<long long>, int>> want = {
        {"token_embd.weight", {{D, V}, GGML_TYPE_F16}},
        {"output_norm.weight", {{D}, GGML_TYPE_F32}},
    };
    for (int l = 0; l < 2; l++) {
      std::string p = "blk." + std::to_string(l) + ".";
      for (const char* n : {"attn_norm", "attn_sub_norm", "ffn_norm"}) want[p + n + ".weight"] = {{D}, GGML_TYPE_F32};
      want[p + "ffn_sub_norm.weight"] = {{F}, GGML_TYPE_F32};
      want[p + "attn_q.weight"] = {{D, D}, (int)tq};
      want[p + "attn_k.weight"] = {{D, K}, (int)tq};
      want[p + "attn_v.weight"] = {{D, K}, (int)tq};
      want[p + "attn_output.weight"] = {{D, D}, (int)tq};
      want[p + "ffn_gate.weight"] = {{D, F}, (int)tq};
      want[p + "ffn_up.weight"] = {{D, F}, (int)tq};
      want[p + "ffn_down.weight"] = {{F, D}, (int)tq};
      for (const char* n : {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"})
        want[p + n + ".scale"] = {{1}, GGML_TYPE_F32};
    }
    EXPECT_EQ(tensor_map(j), want);
    // Same layout as bitkd's own reader sees.
    GgufFile f;
    ASSERT_TRUE(gguf_read(out, &f).ok());
    EXPECT_EQ(j["tensorDataOffset"], std::to_string(f.data_start));
    long long params = 0;
    for (const GgufTensorInfo& t : f.tensors) params += t.numel();
    EXPECT_EQ(j["parameterCount"].get<long long>(), params);
    EXPECT_TRUE(j["littleEndian"].get<bool>());
  }
}

TEST(GgufHf, FloatTeacherAsLlama) {
  std::string why;
  ASSERT_TRUE(hf_gguf_ready(&why)) << why;
  Fixture fx;
  make_fixture("gguf_hf_teacher", false, false, false, "bpe", &fx);
  std::string out = fx.dir + "/teacher.gguf";
  export_cli(fx, "f16", out);
  json j = inspect(out, fx.dir + "/inspect.json");
  ASSERT_TRUE(j.is_object());
  const json& md = j["metadata"];
  expect_hparams(md, "llama", fx.cfg);
  expect_tokenizer(md, fx.n_pieces, "llama");
  expect_u32(md, "general.file_type", 1);
  const int D = 256, F = 512, K = 128, V = fx.n_pieces;
  std::map<std::string, std::pair<std::vector<long long>, int>> want = {
      {"token_embd.weight", {{D, V}, GGML_TYPE_F16}},
      {"output.weight", {{D, V}, GGML_TYPE_F16}},
      {"output_norm.weight", {{D}, GGML_TYPE_F32}},
  };
  for (int l = 0; l < 2; l++) {
    std::string p = "blk." + std::to_string(l) + ".";
    for (const char* n : {"attn_norm", "ffn_norm"}) want[p + n + ".weight"] = {{D}, GGML_TYPE_F32};
    want[p + "attn_q.weight"] = {{D, D}, GGML_TYPE_F16};
    want[p + "attn_k.weight"] = {{D, K}, GGML_TYPE_F16};
    want[p + "attn_v.weight"] = {{D, K}, GGML_TYPE_F16};
    want[p + "attn_output.weight"] = {{D, D}, GGML_TYPE_F16};
    want[p + "ffn_gate.weight"] = {{D, F}, GGML_TYPE_F16};
    want[p + "ffn_up.weight"] = {{D, F}, GGML_TYPE_F16};
    want[p + "ffn_down.weight"] = {{F, D}, GGML_TYPE_F16};
  }
  EXPECT_EQ(tensor_map(j), want);
}

TEST(GgufHf, ExportErrorsAreClear) {
  Fixture fx;
  make_fixture("gguf_hf_errors", true, true, false, "bpe", &fx);  // untied SubLN student
  auto run = [&](const std::string& args, std::string* log) {
    return bk_test::run_command(bk_test::bitkd_exe() + " export --env-file /dev/null --model '" + fx.ckpt + "' --out '" +
                                    fx.dir + "/x.gguf' " + args,
                                log);
  };
  std::string log;
  EXPECT_EQ(run("--tokenizer '" + fx.tokenizer + "'", &log), 1);
  EXPECT_NE(log.find("tie_embeddings"), std::string::npos) << log;
  EXPECT_EQ(run("--tokenizer '" + fx.tokenizer + "' --format onnx", &log), 1);
  EXPECT_NE(log.find("--format onnx"), std::string::npos) << log;
  EXPECT_EQ(run("--tokenizer '" + fx.tokenizer + "' --type q4_k", &log), 1);
  EXPECT_NE(log.find("q4_k"), std::string::npos) << log;
  EXPECT_EQ(run("--artifacts '" + fx.dir + "/empty'", &log), 1);
  EXPECT_NE(log.find("--tokenizer"), std::string::npos) << log;
  EXPECT_FALSE(file_exists(fx.dir + "/x.gguf"));
}
