// Hugging Face model directories (model/hf_model.h): random-weight Llama and
// Mistral models written by tests/reference/hf_ref.py (F32, F16, BF16; single
// file and sharded; tied and untied; Llama 3.1 rope scaling) load through model_load_any, and bitkd's
// logits (training forward and inference session) match the reference's
// independent float64 PyTorch forward; a student initializes from one; bad
// directories get errors naming the file, the field or tensor and what is
// supported.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "core/fs.h"
#include "io/safetensors.h"
#include "model/activations.h"
#include "model/hf_model.h"
#include "model/infer.h"
#include "model/model.h"
#include "testutil/testutil.h"
#include "train/kd_train.h"
#include "train/model_load.h"

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

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
  ASSERT_TRUE(f.good()) << path;
}

// Relative L2 error of a against the reference b.
double rel_err(const float* a, const float* b, size_t n) {
  double d2 = 0.0, n2 = 0.0;
  for (size_t i = 0; i < n; i++) d2 += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), n2 += (double)b[i] * b[i];
  return std::sqrt(d2 / n2);
}

const std::vector<int32_t> kTokens = {1, 17, 5, 93, 42, 42, 7, 0, 64, 3, 88, 21};  // hf_ref.py's TOKENS

class HfModel : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = bk_test::scratch_dir("hf_model");
    std::string out;
    const std::string cmd = python() + " '" + bk_test::source_dir() + "/tests/reference/hf_ref.py' '" + dir_ + "'";
    int rc = bk_test::run_command(cmd, &out);
    ASSERT_EQ(rc, 0) << cmd << "\n"
                     << out << "\n(needs python3-torch python3-numpy: apt-get install python3-torch python3-numpy)";
  }
  // Copies case `name` to a new directory for a bad-input variant.
  std::string copy_case(const std::string& name, const std::string& to) {
    const std::string d = dir_ + "/" + to;
    std::string out;
    EXPECT_EQ(bk_test::run_command("rm -rf '" + d + "' && cp -r '" + dir_ + "/" + name + "' '" + d + "'", &out), 0);
    return d;
  }
  std::string load_error(const std::string& d) {
    Model m;
    Status st = model_load_any(d, &m, nullptr);
    EXPECT_FALSE(st.ok()) << d;
    return st.msg;
  }
  std::string dir_;
};

// fp32 against the float64 reference on the same (rounded) weights: each
// logit is a chain of dot products of length <= 160 through 2 layers, whose
// fp32 rounding error is bounded by about n * 2^-24 relative per product
// (1e-5) before the softmax/RMSNorm condition; 1e-4 relative (L2 over all
// logits) leaves that margin for any summation order a BLAS picks.
TEST_F(HfModel, LogitsMatchTheIndependentPyTorchForward) {
  for (const char* name : {"llama_f32", "llama_bf16_sharded", "mistral_f16", "llama3_scaled"}) {
    SCOPED_TRACE(name);
    Model m;
    ModelSource src;
    Status st = model_load_any(dir_ + "/" + name, &m, &src);
    ASSERT_TRUE(st.ok()) << st.msg;
    EXPECT_EQ(src.format, "hf");
    EXPECT_EQ(m.cfg.n_kv_heads, 2);
    EXPECT_EQ(m.cfg.tie_embeddings, std::string(name) == "llama_bf16_sharded");
    EXPECT_EQ(m.cfg.rope_scale_factor, std::string(name) == "llama3_scaled" ? 8.0f : 0.0f);
    const std::vector<float> want = read_floats(dir_ + "/" + name + ".logits.bin");
    const int T = (int)kTokens.size(), V = m.cfg.vocab_size;
    ASSERT_EQ(want.size(), (size_t)T * V);

    Activations* a = activations_create(m, 1, T);
    ASSERT_NE(a, nullptr);
    st = model_forward(&m, a, kTokens.data(), nullptr, 1, T);
    ASSERT_TRUE(st.ok()) << st.msg;
    const double e_train = rel_err(activations_logits(a), want.data(), want.size());
    EXPECT_LT(e_train, 1e-4);
    printf("%s: relative error, training forward %.3g\n", name, e_train);
    activations_destroy(a);

    // The inference session (what bitkd serve runs on a float model).
    InferWeights* w = nullptr;
    ASSERT_TRUE(infer_weights_create(&m, INFER_FLOAT, &w).ok());
    InferSession* s = nullptr;
    ASSERT_TRUE(infer_session_create(w, T, &s).ok());
    std::vector<float> got((size_t)T * V);
    st = infer_session_eval_all(s, kTokens.data(), T, got.data());
    ASSERT_TRUE(st.ok()) << st.msg;
    const double e_infer = rel_err(got.data(), want.data(), want.size());
    EXPECT_LT(e_infer, 1e-4);
    printf("%s: relative error, inference session %.3g\n", name, e_infer);
    infer_session_destroy(s);
    infer_weights_destroy(w);
  }
}

// STUDENT_INIT / --init-from a HF directory: the student takes every teacher
// tensor by name, with SubLN inserted and ternary weights.
TEST_F(HfModel, StudentInitializedFromTheDirectory) {
  ModelConfig quant;  // the defaults: ternary weights, 8-bit activations
  Model s;
  int copied = 0;
  Status st = student_from_teacher(dir_ + "/llama_f32", quant, 7, &s, &copied);
  ASSERT_TRUE(st.ok()) << st.msg;
  Model t;
  ASSERT_TRUE(model_load_any(dir_ + "/llama_f32", &t, nullptr).ok());
  EXPECT_EQ(copied, (int)t.info.size());
  EXPECT_TRUE(s.cfg.subln);
  EXPECT_EQ(s.cfg.weight_quant, WQ_TERNARY);
  EXPECT_GT(s.info.size(), t.info.size());  // the sub-norms
  for (const ParamInfo& p : t.info) {
    const ParamInfo* q = model_find_param(s, p.name);
    ASSERT_NE(q, nullptr) << p.name;
    EXPECT_EQ(memcmp(s.params.data() + q->offset, t.params.data() + p.offset, p.numel * sizeof(float)), 0) << p.name;
  }
}

TEST_F(HfModel, BadDirectoriesNameTheFileAndWhatIsSupported) {
  auto has_all = [](const std::string& msg, std::initializer_list<const char*> parts) {
    for (const char* p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' in: " << msg;
  };
  // An architecture bitkd does not load.
  std::string d = copy_case("llama_f32", "qwen2");
  std::string cfg;
  ASSERT_TRUE(read_file(d + "/config.json", &cfg).ok());
  const std::string arch = "\"LlamaForCausalLM\"";
  std::string q = cfg;
  q.replace(q.find(arch), arch.size(), "\"Qwen2ForCausalLM\"");
  write_text(d + "/config.json", q);
  has_all(load_error(d), {"qwen2/config.json", "architectures", "Qwen2ForCausalLM", "LlamaForCausalLM",
                          "MistralForCausalLM"});

  // A rope_scaling type other than llama3: refused by field.
  d = copy_case("llama_f32", "rope_scaling");
  q = cfg;
  q.replace(q.find("\"rope_scaling\": null"), strlen("\"rope_scaling\": null"),
            "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}");
  write_text(d + "/config.json", q);
  has_all(load_error(d), {"config.json", "rope_scaling", "yarn", "llama3", "supported"});

  // A shard named in the index but missing.
  d = copy_case("llama_bf16_sharded", "missing_shard");
  ASSERT_EQ(std::remove((d + "/model-00002-of-00003.safetensors").c_str()), 0);
  has_all(load_error(d), {"model.safetensors.index.json", "model-00002-of-00003.safetensors", "missing"});

  // A tensor of the wrong shape (config says a larger FFN).
  d = copy_case("llama_f32", "wrong_shape");
  q = cfg;
  q.replace(q.find("\"intermediate_size\": 160"), strlen("\"intermediate_size\": 160"), "\"intermediate_size\": 192");
  write_text(d + "/config.json", q);
  has_all(load_error(d), {"model.safetensors", "mlp.gate_proj.weight", "[160, 64]", "expected [192, 64]"});

  // A tensor of a dtype bitkd does not take (F64), and one with no place in
  // the model (a q bias, as Qwen2 has).
  for (int variant = 0; variant < 2; variant++) {
    d = copy_case("llama_f32", variant ? "extra_bias" : "f64");
    SafeTensorsFile f;
    ASSERT_TRUE(safetensors_read(d + "/model.safetensors", &f).ok());
    SafeTensorsWriter w;
    std::vector<double> norm64;
    std::vector<float> bias(64, 0.5f);
    for (const StTensor& t : f.tensors) {
      if (!variant && t.name == "model.norm.weight") {
        std::vector<float> v(t.numel());
        ASSERT_TRUE(safetensors_get_f32(f, t.name, nullptr, v.data(), v.size()).ok());
        norm64.assign(v.begin(), v.end());
        st_writer_add(&w, t.name, ST_F64, t.shape, norm64.data());
      } else {
        st_writer_add(&w, t.name, t.dtype, t.shape, safetensors_data(f, t));
      }
    }
    if (variant) st_writer_add(&w, "model.layers.0.self_attn.q_proj.bias", ST_F32, {64}, bias.data());
    ASSERT_TRUE(safetensors_write(d + "/model.safetensors", w).ok());
    if (variant)
      has_all(load_error(d), {"extra_bias/model.safetensors", "model.layers.0.self_attn.q_proj.bias", "LlamaForCausalLM"});
    else
      has_all(load_error(d), {"f64/model.safetensors", "model.norm.weight", "F64", "F32, F16, BF16"});
  }
}

}  // namespace
