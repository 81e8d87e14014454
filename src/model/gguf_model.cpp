// bitkd Model <-> GGUF mapping (see gguf_model.h for the conventions).
#include "model/gguf_model.h"

#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/half.h"
#include "core/ternary_block.h"
#include "core/version.h"
#include "kernels/cpu/kernels.h"
#include "model/infer_impl.h"
#include "tokenizer/spm_model.h"

namespace bk {

// ---- names --------------------------------------------------------------------------
Status gguf_weight_format_from_name(const std::string& name, GgufWeightFormat* out) {
  static const std::pair<const char*, GgufWeightFormat> k[] = {
      {"auto", GGUF_W_AUTO}, {"tq2_0", GGUF_W_TQ2_0}, {"tq1_0", GGUF_W_TQ1_0}, {"f16", GGUF_W_F16}, {"f32", GGUF_W_F32}};
  for (auto& e : k)
    if (name == e.first) {
      *out = e.second;
      return ok_status();
    }
  return errorf("unknown GGUF weight type '%s' (expected auto, tq2_0, tq1_0, f16 or f32)", name.c_str());
}

const char* gguf_weight_format_name(GgufWeightFormat f) {
  switch (f) {
    case GGUF_W_AUTO: return "auto";
    case GGUF_W_TQ2_0: return "tq2_0";
    case GGUF_W_TQ1_0: return "tq1_0";
    case GGUF_W_F16: return "f16";
    case GGUF_W_F32: return "f32";
  }
  return "?";
}

namespace {

// llama_ftype values (llama.h) for general.file_type.
enum : uint32_t { FTYPE_ALL_F32 = 0, FTYPE_MOSTLY_F16 = 1, FTYPE_MOSTLY_TQ1_0 = 36, FTYPE_MOSTLY_TQ2_0 = 37 };

// One projection of a layer: bitkd parameter suffix, GGUF tensor base name.
struct ProjName {
  const char* hf;
  const char* gguf;
};
const ProjName k_norms[] = {
    {"input_layernorm.weight", "attn_norm"},
    {"self_attn.inner_norm.weight", "attn_sub_norm"},
    {"post_attention_layernorm.weight", "ffn_norm"},
    {"mlp.ffn_layernorm.weight", "ffn_sub_norm"},
};

std::string layer_prefix(int l) { return "model.layers." + std::to_string(l) + "."; }
std::string blk(int l, const char* base, const char* suffix) {
  return "blk." + std::to_string(l) + "." + base + "." + suffix;
}

// HF rotate_half -> llama.cpp NORM rope: within each head of d rows, row
// 2i + j of the output takes row j*d/2 + i of the input (convert_hf_to_gguf's
// permute). inverse=true undoes it.
void permute_qk_rows(const float* src, float* dst, int heads, int head_dim, int cols, bool inverse) {
  const int half = head_dim / 2;
  for (int h = 0; h < heads; h++)
    for (int i = 0; i < half; i++)
      for (int j = 0; j < 2; j++) {
        size_t gguf_row = (size_t)h * head_dim + 2 * i + j;
        size_t hf_row = (size_t)h * head_dim + j * half + i;
        size_t from = inverse ? gguf_row : hf_row, to = inverse ? hf_row : gguf_row;
        memcpy(dst + to * cols, src + from * cols, sizeof(float) * cols);
      }
}

}  // namespace

// ---- ternary latent weights ---------------------------------------------------------
// bitkd's absmean is (float)(sum_i |w_i| accumulated in double / n). Target sum
// S = gamma * n (exact in double). Non-zero codes get magnitude c, the largest
// float with nnz * c <= S; the remainder R = S - nnz * c is a multiple of
// ulp(gamma) (c >= gamma) and is spread over the zero-code positions in whole
// ulp(gamma) units, each far below the rounding threshold gamma / 2. Every
// term is a multiple of ulp(gamma), so the double sum is exact in any order
// and absmean gives gamma back bit for bit; the codes are unchanged because
// c >= gamma and the zero positions stay below gamma / 2.
static float absmean_of_constant(float c, size_t nnz, size_t n) {
  return (float)((double)c * (double)nnz / (double)n);
}

void ternary_latent_from_codes(const int8_t* codes, size_t n, float gamma, float* w) {
  size_t nnz = 0;
  for (size_t i = 0; i < n; i++) nnz += codes[i] != 0;
  if (nnz == 0 || !(gamma > 0.0f) || !std::isfinite(gamma)) {
    for (size_t i = 0; i < n; i++) w[i] = 0.0f;
    return;
  }
  const double S = (double)gamma * (double)n;
  float c = (float)(S / (double)nnz);
  while ((double)c * (double)nnz > S) c = std::nextafter(c, 0.0f);
  const double R = S - (double)c * (double)nnz;
  const size_t nz = n - nnz;
  const double ug = (double)std::nextafter(gamma, INFINITY) - (double)gamma;
  if (R > 0 && nz > 0 && c >= gamma && R / (double)nz < 0.25 * (double)gamma) {
    const double units = std::round(R / ug);
    const double base = std::floor(units / (double)nz);
    size_t extra = (size_t)(units - base * (double)nz);
    for (size_t i = 0; i < n; i++) {
      if (codes[i] != 0) {
        w[i] = c * (float)codes[i];
      } else {
        double k = base + (extra > 0 ? 1.0 : 0.0);
        if (extra > 0) extra--;
        w[i] = (float)(k * ug);
      }
    }
    return;
  }
  // No zero positions to carry the remainder: best uniform magnitude (gamma
  // may then differ from the original by an ulp).
  float best = c;
  float best_err = std::fabs(absmean_of_constant(c, nnz, n) - gamma);
  for (int step = 0; step < 64 && best_err > 0.0f; step++) {
    float g = absmean_of_constant(c, nnz, n);
    c = std::nextafter(c, g < gamma ? INFINITY : 0.0f);
    float e = std::fabs(absmean_of_constant(c, nnz, n) - gamma);
    if (e < best_err) best = c, best_err = e;
  }
  for (size_t i = 0; i < n; i++) w[i] = best * (float)codes[i];
}

// ---- export -------------------------------------------------------------------------
namespace {

struct ExportCtx {
  const Model& m;
  const GgufExportOptions& opt;
  GgufWriter* w;
  GgufExportReport* rep;
  std::string arch;
  GgufWeightFormat fmt;
  bool ternary;
  uint32_t embed_type;
  std::vector<std::string> fallback;  // projections not in TQ blocks
};

const float* param_ptr(const Model& m, const std::string& name, const ParamInfo** info) {
  const ParamInfo* p = model_find_param(m, name);
  if (info) *info = p;
  return p ? m.params.data() + p->offset : nullptr;
}

Status add_f32_vector(ExportCtx& x, const std::string& gguf_name, const std::string& hf_name) {
  const ParamInfo* pi;
  const float* p = param_ptr(x.m, hf_name, &pi);
  if (!p) return errorf("GGUF export: parameter %s missing from the model", hf_name.c_str());
  return gguf_add_tensor_f32(x.w, gguf_name, GGML_TYPE_F32, {(int64_t)pi->numel}, p);
}

// One projection matrix [rows, cols] (PyTorch layout) -> GGUF ne {cols, rows}.
Status add_projection(ExportCtx& x, int layer, const char* base, const float* src, int rows, int cols,
                      int permute_heads) {
  const std::string name = blk(layer, base, "weight");
  const std::vector<int64_t> ne{cols, rows};
  std::vector<float> buf;
  const float* w = src;
  if (permute_heads > 0) {
    buf.resize((size_t)rows * cols);
    permute_qk_rows(src, buf.data(), permute_heads, x.m.cfg.head_dim, cols, false);
    w = buf.data();
  }
  if (!x.ternary) {
    uint32_t t = x.fmt == GGUF_W_F32 ? GGML_TYPE_F32 : GGML_TYPE_F16;
    return gguf_add_tensor_f32(x.w, name, t, ne, w);
  }
  // Ternary: the codes and gamma the training forward uses (quant_ternary's rule).
  // Permuting rows does not change gamma or the set of codes.
  std::vector<int8_t> codes((size_t)rows * cols);
  const float gamma = quant_ternary_codes(codes.data(), w, codes.size());
  const bool bitnet = x.arch == "bitnet";
  const bool tq = (x.fmt == GGUF_W_TQ2_0 || x.fmt == GGUF_W_TQ1_0) && cols % kQK_K == 0;
  if ((x.fmt == GGUF_W_TQ2_0 || x.fmt == GGUF_W_TQ1_0) && !tq) x.fallback.push_back(name);
  if (tq) {
    const uint32_t t = x.fmt == GGUF_W_TQ2_0 ? GGML_TYPE_TQ2_0 : GGML_TYPE_TQ1_0;
    std::string data;
    // bitnet: d = 1 and gamma in the scale tensor (exact); llama: gamma in d (fp16).
    BK_TRY(ternary_codes_to_tq(t, codes.data(), rows, cols, f32_to_f16(bitnet ? 1.0f : gamma), &data));
    BK_TRY(gguf_add_tensor(x.w, name, t, ne, std::move(data)));
  } else {
    const uint32_t t = x.fmt == GGUF_W_F32 ? GGML_TYPE_F32 : GGML_TYPE_F16;
    std::vector<float> v(codes.size());
    for (size_t i = 0; i < v.size(); i++) v[i] = bitnet ? (float)codes[i] : gamma * (float)codes[i];
    BK_TRY(gguf_add_tensor_f32(x.w, name, t, ne, v.data()));
  }
  if (bitnet) BK_TRY(gguf_add_tensor_f32(x.w, blk(layer, base, "scale"), GGML_TYPE_F32, {1}, &gamma));
  return ok_status();
}

Status add_tokenizer(ExportCtx& x) {
  SpmVocab v;
  BK_TRY(with_context(spm_parse_model(x.opt.tokenizer_model, &v), "GGUF export"));
  const int V = x.m.cfg.vocab_size;
  if ((int)v.pieces.size() > V)
    return errorf("GGUF export: the tokenizer has %zu pieces but the model's vocab_size is %d; export with the "
                  "tokenizer the model was trained with",
                  v.pieces.size(), V);
  if ((int)v.pieces.size() < V) {
    // Embedding rows beyond the tokenizer: llama.cpp needs one token per row.
    x.rep->warnings.push_back("the model has " + std::to_string(V) + " embedding rows but the tokenizer only " +
                              std::to_string(v.pieces.size()) + " pieces; the rest are written as unused tokens");
    for (int i = (int)v.pieces.size(); i < V; i++) {
      v.pieces.push_back("<bitkd_unused_" + std::to_string(i) + ">");
      v.scores.push_back(0.0f);
      v.types.push_back(5);
    }
  }
  for (int& t : v.types)
    if (t < 1 || t > 6) t = 1;
  // Unigram models go to llama.cpp's UGM tokenizer ("t5": SentencePiece's
  // Viterbi search, normalizer table included); BPE models to its SPM
  // tokenizer ("llama": merges by score, as SentencePiece's BPE does). Running
  // a unigram vocabulary through the SPM merges splits most words differently.
  const bool ugm = v.model_type == 1;
  gguf_set(x.w, "tokenizer.ggml.model", gguf_str(ugm ? "t5" : "llama"));
  gguf_set(x.w, "tokenizer.ggml.tokens", gguf_arr_str(v.pieces));
  gguf_set(x.w, "tokenizer.ggml.scores", gguf_arr_f32(v.scores));
  gguf_set(x.w, "tokenizer.ggml.token_type", gguf_arr_i32(v.types));
  auto set_id = [&](const char* key, int id) {
    if (id >= 0 && id < V) gguf_set(x.w, key, gguf_u32((uint32_t)id));
  };
  set_id("tokenizer.ggml.bos_token_id", v.bos_id);
  set_id("tokenizer.ggml.eos_token_id", v.eos_id);
  set_id("tokenizer.ggml.unknown_token_id", v.unk_id);
  set_id("tokenizer.ggml.padding_token_id", v.pad_id);
  gguf_set(x.w, "tokenizer.ggml.add_bos_token", gguf_bool(v.bos_id >= 0));
  gguf_set(x.w, "tokenizer.ggml.add_eos_token", gguf_bool(false));
  // SentencePiece adds its dummy-prefix space once, at the start of the text;
  // llama.cpp adds it to every text fragment, i.e. again after each special or
  // user-defined token (the chat markers and "\n" of bitkd tokenizers). So
  // the prefix is off here and a prompt given with one leading space
  // tokenizes exactly as SentencePiece tokenizes it without (docs/gguf.md).
  gguf_set(x.w, "tokenizer.ggml.add_space_prefix", gguf_bool(false));
  if (ugm) {
    gguf_set(x.w, "tokenizer.ggml.remove_extra_whitespaces", gguf_bool(v.remove_extra_whitespaces));
    if (!v.precompiled_charsmap.empty())
      gguf_set(x.w, "tokenizer.ggml.precompiled_charsmap", gguf_arr_u8(v.precompiled_charsmap));
  }
  // The original model, so bitkd (and anything SentencePiece-based) tokenizes exactly as in training.
  gguf_set(x.w, "bitkd.tokenizer.sentencepiece_model", gguf_arr_u8(x.opt.tokenizer_model));
  gguf_set(x.w, "bitkd.tokenizer.add_dummy_prefix", gguf_bool(v.add_dummy_prefix));

  // Where llama.cpp's tokenizer differs from SentencePiece.
  if (v.add_dummy_prefix)
    x.rep->warnings.push_back(
        "tokenizer: llama.cpp would add SentencePiece's leading space after every special token, so the GGUF "
        "turns it off; start llama.cpp prompts with one space to get exactly bitkd's tokens");
  if (ugm && v.byte_fallback)
    x.rep->warnings.push_back(
        "tokenizer: characters missing from the vocabulary become byte tokens in SentencePiece but <unk> in "
        "llama.cpp's unigram tokenizer");
  if (!ugm && v.model_type != 2)
    x.rep->warnings.push_back("tokenizer: SentencePiece model type " + std::to_string(v.model_type) +
                              " (word/char) has no llama.cpp equivalent; written as SPM (\"llama\"), which may "
                              "split text differently");
  if (!ugm && (v.remove_extra_whitespaces || !v.precompiled_charsmap.empty()))
    x.rep->warnings.push_back(
        "tokenizer: this BPE model normalizes text (" +
        (v.normalizer_name.empty() ? std::string("charsmap") : v.normalizer_name) +
        (v.remove_extra_whitespaces ? ", collapses repeated spaces" : "") +
        "); llama.cpp's SPM tokenizer does not, so non-normalized input tokenizes differently");
  return ok_status();
}

}  // namespace

Status gguf_export_build(const Model& m, const GgufExportOptions& opt, GgufWriter* w, GgufExportReport* rep) {
  *w = GgufWriter();
  *rep = GgufExportReport();
  const ModelConfig& c = m.cfg;
  BK_TRY(model_config_validate(c));
  if (c.rope_scale_factor != 0.0f)
    return errorf("GGUF export: this model uses llama3 RoPE scaling (factor %g), which bitkd does not write to GGUF "
                  "yet (llama.cpp reads it as rope_freqs.weight); export a model with plain RoPE",
                  (double)c.rope_scale_factor);
  ExportCtx x{m, opt, w, rep, c.subln ? "bitnet" : "llama", opt.weights, c.weight_quant == WQ_TERNARY,
              GGML_TYPE_F16, {}};
  rep->arch = x.arch;
  if (x.fmt == GGUF_W_AUTO) x.fmt = x.ternary ? GGUF_W_TQ2_0 : GGUF_W_F16;
  if (!x.ternary && (x.fmt == GGUF_W_TQ2_0 || x.fmt == GGUF_W_TQ1_0))
    return errorf("GGUF export: --type %s stores ternary weights, but this model is full precision "
                  "(weight_quant=none); use f16 or f32",
                  gguf_weight_format_name(x.fmt));
  if (x.arch == "bitnet" && !c.tie_embeddings)
    return errorf("GGUF export: llama.cpp's bitnet architecture (needed for SubLN models) always uses "
                  "token_embd as the LM head, so a model with an untied lm_head cannot be exported to it; train "
                  "with tie_embeddings=true");
  x.embed_type = (opt.embed_f32 || x.fmt == GGUF_W_F32) ? GGML_TYPE_F32 : GGML_TYPE_F16;
  const std::string& a = x.arch;
  uint32_t ftype = x.fmt == GGUF_W_TQ2_0   ? FTYPE_MOSTLY_TQ2_0
                   : x.fmt == GGUF_W_TQ1_0 ? FTYPE_MOSTLY_TQ1_0
                   : x.fmt == GGUF_W_F16   ? FTYPE_MOSTLY_F16
                                           : FTYPE_ALL_F32;
  rep->file_type = ftype;

  // ---- metadata ----
  gguf_set(w, "general.architecture", gguf_str(a));
  gguf_set(w, "general.name", gguf_str(opt.name.empty() ? std::string("bitkd-model") : opt.name));
  gguf_set(w, "general.file_type", gguf_u32(ftype));
  gguf_set(w, "general.quantization_version", gguf_u32(2));
  gguf_set(w, "general.alignment", gguf_u32(kGgufDefaultAlignment));
  gguf_set(w, a + ".vocab_size", gguf_u32((uint32_t)c.vocab_size));
  gguf_set(w, a + ".context_length", gguf_u32((uint32_t)c.max_seq_len));
  gguf_set(w, a + ".embedding_length", gguf_u32((uint32_t)c.dim));
  gguf_set(w, a + ".block_count", gguf_u32((uint32_t)c.n_layers));
  gguf_set(w, a + ".feed_forward_length", gguf_u32((uint32_t)c.ffn_dim));
  gguf_set(w, a + ".attention.head_count", gguf_u32((uint32_t)c.n_heads));
  gguf_set(w, a + ".attention.head_count_kv", gguf_u32((uint32_t)c.n_kv_heads));
  gguf_set(w, a + ".rope.freq_base", gguf_f32(c.rope_theta));
  gguf_set(w, a + ".rope.dimension_count", gguf_u32((uint32_t)c.head_dim));
  gguf_set(w, a + ".attention.layer_norm_rms_epsilon", gguf_f32(c.norm_eps));
  if (c.ffn_act == FFN_RELU2) gguf_set(w, a + ".hidden_activation", gguf_str("relu"));
  gguf_set(w, "bitkd.version", gguf_str(BITKD_VERSION));
  gguf_set(w, "bitkd.config", gguf_str(model_config_to_json(c)));
  if (!opt.training_json.empty()) gguf_set(w, "bitkd.training", gguf_str(opt.training_json));
  if (!opt.tokenizer_model.empty()) BK_TRY(add_tokenizer(x));

  // ---- tensors ----
  const ParamInfo* emb;
  const float* e = param_ptr(m, "model.embed_tokens.weight", &emb);
  if (!e) return errorf("GGUF export: model.embed_tokens.weight missing");
  BK_TRY(gguf_add_tensor_f32(w, "token_embd.weight", x.embed_type, {c.dim, c.vocab_size}, e));
  BK_TRY(add_f32_vector(x, "output_norm.weight", "model.norm.weight"));
  if (!c.tie_embeddings) {
    const float* h = param_ptr(m, "lm_head.weight", nullptr);
    if (!h) return errorf("GGUF export: lm_head.weight missing from an untied model");
    BK_TRY(gguf_add_tensor_f32(w, "output.weight", x.embed_type, {c.dim, c.vocab_size}, h));
  }
  const int D = c.dim, Q = c.n_heads * c.head_dim, K = c.n_kv_heads * c.head_dim, F = c.ffn_dim;
  const bool llama_rope = a == "llama";
  for (int l = 0; l < c.n_layers; l++) {
    const std::string p = layer_prefix(l);
    for (const ProjName& n : k_norms) {
      if (!model_find_param(m, p + n.hf)) continue;  // sub-norms exist only with subln
      BK_TRY(add_f32_vector(x, blk(l, n.gguf, "weight"), p + n.hf));
    }
    const LayerWeights& lw = m.w.layers[l];
    BK_TRY(add_projection(x, l, "attn_q", lw.wq, Q, D, llama_rope ? c.n_heads : 0));
    BK_TRY(add_projection(x, l, "attn_k", lw.wk, K, D, llama_rope ? c.n_kv_heads : 0));
    BK_TRY(add_projection(x, l, "attn_v", lw.wv, K, D, 0));
    BK_TRY(add_projection(x, l, "attn_output", lw.wo, D, Q, 0));
    // relu2 has no gate: ffn_gate = ffn_up makes llama.cpp's relu(gate) * up equal relu(up)^2.
    BK_TRY(add_projection(x, l, "ffn_gate", lw.w_gate ? lw.w_gate : lw.w_up, F, D, 0));
    BK_TRY(add_projection(x, l, "ffn_up", lw.w_up, F, D, 0));
    BK_TRY(add_projection(x, l, "ffn_down", lw.w_down, D, F, 0));
  }

  // ---- where llama.cpp computes something else ----
  if (!x.fallback.empty())
    rep->warnings.push_back(std::to_string(x.fallback.size()) + " projection(s) have rows of a length that is not a "
                            "multiple of 256 (first: " + x.fallback[0] + "), so they are stored as F16 instead of " +
                            gguf_weight_format_name(x.fmt) + " (same values, larger file)");
  if (c.ffn_act == FFN_RELU2)
    rep->warnings.push_back(
        "ffn_act=relu2: written as ffn_gate = ffn_up with " + a + ".hidden_activation = \"relu\" (relu(u) * u = "
        "relu(u)^2); llama.cpp builds whose " + a + " graph ignores that key apply SiLU (silu(u) * u) and give "
        "different outputs");
  if (x.ternary && c.act_bits == 8)
    rep->warnings.push_back(
        "activations: bitkd quantizes each BitLinear input to int8 per token (absmax over the whole row); "
        "llama.cpp quantizes it to int8 per block of 256 values (Q8_K) for TQ weights and not at all for F16/F32 "
        "weights, so logits differ slightly (see docs/gguf.md)");
  if (x.ternary && c.act_bits == 4)
    rep->warnings.push_back(
        std::string("activations: this student runs 4-bit absmean activations (a4_scope=") + a4_scope_name(c.a4_scope) +
        "); llama.cpp has no 4-bit activation path and uses int8 blocks (Q8_K) or full precision, so its outputs "
        "differ more than for 8-bit students (see docs/gguf.md)");
  if (!x.ternary && c.act_bits != 0)
    rep->warnings.push_back("activations: this float model fake-quantizes activations to " +
                            std::to_string(c.act_bits) + " bits; llama.cpp runs them in full precision");
  if (x.ternary && a == "llama")
    rep->warnings.push_back("llama architecture (no SubLN) has no per-tensor scale tensors: each ternary gamma is "
                            "folded into the fp16 block scales, a relative rounding of up to 2^-11");
  if (x.embed_type == GGML_TYPE_F16)
    rep->warnings.push_back("token_embd" + std::string(c.tie_embeddings ? "" : "/output") +
                            " stored as F16 (relative rounding up to 2^-11); --embed-type f32 keeps them exact");
  if (opt.tokenizer_model.empty())
    rep->warnings.push_back("no tokenizer given: the file has no tokenizer.ggml.* metadata and llama.cpp will "
                            "refuse to load it");
  return ok_status();
}

Status gguf_export_model(const Model& m, const GgufExportOptions& opt, const std::string& path,
                         GgufExportReport* rep) {
  GgufWriter w;
  BK_TRY(gguf_export_build(m, opt, &w, rep));
  return gguf_write(path, w);
}

// ---- load ---------------------------------------------------------------------------
namespace {

Status get_u(const GgufFile& f, const std::string& key, int* out, bool required) {
  int64_t v = *out;
  BK_TRY(gguf_get_int(f, key, &v, required));
  if (v < 0 || v > INT32_MAX) return errorf("%s: metadata %s = %lld is out of range", f.path.c_str(), key.c_str(), (long long)v);
  *out = (int)v;
  return ok_status();
}

// Reads a GGUF tensor into dst [rows, cols] (PyTorch layout) checking ne = {cols, rows}.
Status read_matrix(const GgufFile& f, const std::string& name, int rows, int cols, std::vector<float>* dst,
                   const GgufTensorInfo** info) {
  const GgufTensorInfo* t = gguf_find_tensor(f, name);
  if (!t) return errorf("%s: tensor '%s' is missing", f.path.c_str(), name.c_str());
  bool ok = (rows == 1 && t->ne.size() == 1 && t->ne[0] == cols) ||
            (t->ne.size() == 2 && t->ne[0] == cols && t->ne[1] == rows);
  if (!ok) {
    std::string got;
    for (int64_t d : t->ne) got += (got.empty() ? "" : ", ") + std::to_string(d);
    return errorf("%s: tensor '%s' has shape {%s}, expected {%d, %d} for this config", f.path.c_str(), name.c_str(),
                  got.c_str(), cols, rows);
  }
  dst->resize((size_t)rows * cols);
  if (info) *info = t;
  BK_TRY(gguf_tensor_to_f32(f, *t, dst->data(), dst->size()));
  gguf_release_tensor(f, *t);  // a mapped file holds about one tensor at a time
  return ok_status();
}

// A ternary projection from GGUF into latent weights [rows, cols].
Status load_ternary(const GgufFile& f, const std::string& base_name, const std::string& scale_name, int rows, int cols,
                    float* dst, std::vector<std::string>* warnings) {
  const GgufTensorInfo* t = gguf_find_tensor(f, base_name);
  if (!t) return errorf("%s: tensor '%s' is missing", f.path.c_str(), base_name.c_str());
  if (!(t->ne.size() == 2 && t->ne[0] == cols && t->ne[1] == rows))
    return errorf("%s: tensor '%s' has the wrong shape for this config (expected {%d, %d})", f.path.c_str(),
                  base_name.c_str(), cols, rows);
  const size_t n = (size_t)rows * cols;
  std::vector<int8_t> codes(n);
  // Per-element magnitudes (block scale, or |value| for float tensors) of non-zero weights.
  double mag_sum = 0.0, mag_min = INFINITY, mag_max = 0.0;
  size_t nnz = 0;
  if (t->type == GGML_TYPE_TQ1_0 || t->type == GGML_TYPE_TQ2_0) {
    std::vector<uint16_t> bd;
    BK_TRY(tq_to_ternary_codes(t->type, gguf_tensor_data(f, *t), rows, cols, codes.data(), &bd));
    for (size_t b = 0; b < bd.size(); b++) {
      float d = f16_to_f32(bd[b]);
      for (int j = 0; j < kQK_K; j++) {
        int8_t& cde = codes[b * kQK_K + j];
        if (cde == 0) continue;
        if (d < 0) cde = (int8_t)-cde;  // a negative block scale flips signs
        float ad = std::fabs(d);
        if (ad == 0.0f) {
          cde = 0;
          continue;
        }
        nnz++, mag_sum += ad, mag_min = std::min(mag_min, (double)ad), mag_max = std::max(mag_max, (double)ad);
      }
    }
  } else {
    std::vector<float> v(n);
    BK_TRY(gguf_tensor_to_f32(f, *t, v.data(), n));
    for (size_t i = 0; i < n; i++) {
      codes[i] = v[i] > 0 ? 1 : (v[i] < 0 ? -1 : 0);
      if (codes[i]) {
        double a = std::fabs((double)v[i]);
        nnz++, mag_sum += a, mag_min = std::min(mag_min, a), mag_max = std::max(mag_max, a);
      }
    }
  }
  gguf_release_tensor(f, *t);
  float scale = 1.0f;
  if (const GgufTensorInfo* s = gguf_find_tensor(f, scale_name)) {
    if (s->numel() != 1)
      return errorf("%s: scale tensor '%s' has %lld elements, expected 1", f.path.c_str(), scale_name.c_str(),
                    (long long)s->numel());
    BK_TRY(gguf_tensor_to_f32(f, *s, &scale, 1));
  }
  float gamma = 0.0f;
  if (nnz > 0) {
    if (mag_max > mag_min * (1.0 + 1e-6))
      warnings->push_back(base_name + ": non-zero weights have different magnitudes (" + std::to_string(mag_min) +
                          " .. " + std::to_string(mag_max) +
                          "); bitkd keeps one scale per tensor and uses their mean");
    gamma = (float)(mag_sum / (double)nnz * (double)std::fabs(scale));
    if (scale < 0)
      for (int8_t& cde : codes) cde = (int8_t)-cde;
    if ((double)gamma * n / nnz / (gamma + kQuantEps) < 0.5)
      warnings->push_back(base_name + ": gamma " + std::to_string(gamma) +
                          " is so small that bitkd's quantizer (eps 1e-5) rounds these weights to zero");
  }
  ternary_latent_from_codes(codes.data(), n, gamma, dst);
  return ok_status();
}

// The model config and what else the metadata says (name, training record,
// embedding type, warnings); tensors are not read.
Status config_from_file(const GgufFile& f, ModelConfig* out, GgufLoadInfo* info) {
  *info = GgufLoadInfo();
  BK_TRY(gguf_get_str(f, "general.architecture", &info->arch, true));
  const std::string a = info->arch;
  if (a != "bitnet" && a != "llama")
    return errorf("%s: architecture '%s' is not supported; bitkd loads 'bitnet' and 'llama' GGUF files",
                  f.path.c_str(), a.c_str());
  BK_TRY(gguf_get_str(f, "general.name", &info->name, false));
  BK_TRY(gguf_get_str(f, "bitkd.training", &info->training_json, false));

  // Config: bitkd's own record first, then the standard keys (which must agree).
  ModelConfig c;
  std::string cfg_json;
  bool have_cfg = false;
  BK_TRY(gguf_get_str(f, "bitkd.config", &cfg_json, false, &have_cfg));
  if (have_cfg) {
    BK_TRY(with_context(model_config_from_json(cfg_json, &c), f.path + ": bitkd.config"));
  } else {
    c.subln = a == "bitnet";
    c.weight_quant = WQ_NONE;
    c.act_bits = 0;
    c.ffn_act = FFN_SWIGLU;
    std::string act;
    if (gguf_get_str(f, a + ".hidden_activation", &act, false).ok() && !act.empty() && act != "silu" && act != "swiglu")
      return errorf("%s: %s.hidden_activation '%s' has no bitkd equivalent (bitkd runs SwiGLU, or relu2 from its "
                    "own files)",
                    f.path.c_str(), a.c_str(), act.c_str());
    if (a == "bitnet") {
      // llama.cpp's bitnet: ternary weights, int8 activations.
      c.weight_quant = WQ_TERNARY;
      c.act_bits = 8;
    } else {
      const GgufTensorInfo* q = gguf_find_tensor(f, "blk.0.attn_q.weight");
      if (q && (q->type == GGML_TYPE_TQ1_0 || q->type == GGML_TYPE_TQ2_0)) c.weight_quant = WQ_TERNARY, c.act_bits = 8;
    }
  }
  BK_TRY(get_u(f, a + ".embedding_length", &c.dim, true));
  BK_TRY(get_u(f, a + ".block_count", &c.n_layers, true));
  BK_TRY(get_u(f, a + ".feed_forward_length", &c.ffn_dim, true));
  BK_TRY(get_u(f, a + ".attention.head_count", &c.n_heads, true));
  c.n_kv_heads = c.n_heads;
  BK_TRY(get_u(f, a + ".attention.head_count_kv", &c.n_kv_heads, false));
  BK_TRY(get_u(f, a + ".context_length", &c.max_seq_len, false));
  double d = c.rope_theta;
  BK_TRY(gguf_get_float(f, a + ".rope.freq_base", &d, false));
  c.rope_theta = (float)d;
  d = c.norm_eps;
  BK_TRY(gguf_get_float(f, a + ".attention.layer_norm_rms_epsilon", &d, false));
  c.norm_eps = (float)d;
  c.head_dim = c.n_heads > 0 ? c.dim / c.n_heads : 0;
  int rot = c.head_dim;
  BK_TRY(get_u(f, a + ".rope.dimension_count", &rot, false));
  if (rot != c.head_dim)
    return errorf("%s: partial RoPE (%s.rope.dimension_count %d < head size %d) is not supported by bitkd",
                  f.path.c_str(), a.c_str(), rot, c.head_dim);
  // Llama 3.1+ files carry their rope scaling as per-frequency factors; bitkd runs plain RoPE.
  std::string scaling;
  BK_TRY(gguf_get_str(f, a + ".rope.scaling.type", &scaling, false));
  if (gguf_find_tensor(f, "rope_freqs.weight") || (!scaling.empty() && scaling != "none"))
    return errorf("%s: RoPE scaling (%s) is not supported: bitkd runs plain RoPE with %s.rope.freq_base "
                  "(supported: no rope_freqs.weight tensor, %s.rope.scaling.type absent or \"none\")",
                  f.path.c_str(), scaling.empty() ? "tensor rope_freqs.weight" : scaling.c_str(), a.c_str(),
                  a.c_str());
  const GgufTensorInfo* emb = gguf_find_tensor(f, "token_embd.weight");
  if (!emb || emb->ne.size() != 2)
    return errorf("%s: tensor 'token_embd.weight' is missing or not 2-D", f.path.c_str());
  c.vocab_size = (int)emb->ne[1];
  info->embed_type = emb->type == GGML_TYPE_F16    ? ROWS_F16
                     : emb->type == GGML_TYPE_BF16 ? ROWS_BF16
                     : emb->type == GGML_TYPE_Q8_0 ? ROWS_Q8_0
                                                   : ROWS_F32;
  c.tie_embeddings = gguf_find_tensor(f, "output.weight") == nullptr;
  if (a == "bitnet" && !c.tie_embeddings)
    info->warnings.push_back("output.weight present in a bitnet file; llama.cpp's bitnet graph ignores it, bitkd uses it");
  *out = c;
  return ok_status();
}

// The tokenizer: the SentencePiece model bitkd embedded, else one rebuilt
// from tokenizer.ggml.* (llama/SPM and t5/UGM vocabularies).
Status tokenizer_from_file(const GgufFile& f, GgufLoadInfo* info) {
  if (const GgufKv* kv = gguf_find_kv(f, "bitkd.tokenizer.sentencepiece_model")) {
    if (kv->value.type == GGUF_TYPE_ARRAY && kv->value.arr_type == GGUF_TYPE_UINT8) {
      info->tokenizer_model.resize(kv->value.arr_int.size());
      for (size_t i = 0; i < kv->value.arr_int.size(); i++) info->tokenizer_model[i] = (char)kv->value.arr_int[i];
    }
  }
  std::string tok_model;
  if (info->tokenizer_model.empty() && gguf_get_str(f, "tokenizer.ggml.model", &tok_model, false).ok() &&
      (tok_model == "llama" || tok_model == "t5")) {
    const GgufKv* toks = gguf_find_kv(f, "tokenizer.ggml.tokens");
    const GgufKv* scores = gguf_find_kv(f, "tokenizer.ggml.scores");
    const GgufKv* types = gguf_find_kv(f, "tokenizer.ggml.token_type");
    if (toks && toks->value.type == GGUF_TYPE_ARRAY && toks->value.arr_type == GGUF_TYPE_STRING) {
      SpmVocab v;
      // llama.cpp's SPM tokenizer is SentencePiece's BPE encoding, its UGM ("t5") the unigram one.
      v.model_type = tok_model == "t5" ? 1 : 2;
      v.pieces = toks->value.arr_str;
      size_t n = v.pieces.size();
      v.scores.assign(n, 0.0f);
      v.types.assign(n, 1);
      if (scores && scores->value.arr_f.size() == n)
        for (size_t i = 0; i < n; i++) v.scores[i] = (float)scores->value.arr_f[i];
      if (types && types->value.arr_int.size() == n)
        for (size_t i = 0; i < n; i++) v.types[i] = (int32_t)(int64_t)types->value.arr_int[i];
      for (int32_t t : v.types) v.byte_fallback = v.byte_fallback || t == 6;
      int64_t id;
      bool found;
      if (gguf_get_int(f, "tokenizer.ggml.unknown_token_id", &id, false, &found).ok() && found) v.unk_id = (int)id;
      if (gguf_get_int(f, "tokenizer.ggml.bos_token_id", &id, false, &found).ok() && found) v.bos_id = (int)id;
      if (gguf_get_int(f, "tokenizer.ggml.eos_token_id", &id, false, &found).ok() && found) v.eos_id = (int)id;
      if (gguf_get_int(f, "tokenizer.ggml.padding_token_id", &id, false, &found).ok() && found) v.pad_id = (int)id;
      bool sp = tok_model == "llama";  // llama.cpp's defaults
      BK_TRY(gguf_get_bool(f, "tokenizer.ggml.add_space_prefix", &sp, false));
      v.add_dummy_prefix = sp;
      bool rw = false;
      BK_TRY(gguf_get_bool(f, "tokenizer.ggml.remove_extra_whitespaces", &rw, false));
      v.remove_extra_whitespaces = rw;
      // llama.cpp's UGM puts a space before every word when it merges spaces: a dummy prefix.
      if (tok_model == "t5" && rw) v.add_dummy_prefix = true;
      v.normalizer_name = "identity";
      if (const GgufKv* cm = gguf_find_kv(f, "tokenizer.ggml.precompiled_charsmap"))
        if (cm->value.type == GGUF_TYPE_ARRAY && cm->value.arr_type == GGUF_TYPE_UINT8 && !cm->value.arr_int.empty()) {
          v.precompiled_charsmap.assign(cm->value.arr_int.begin(), cm->value.arr_int.end());
          v.normalizer_name = "charsmap";
        }
      info->tokenizer_model = spm_serialize_model(v);
      info->tokenizer_rebuilt = true;
    }
  }
  return ok_status();
}

}  // namespace

Status gguf_model_from_file(const GgufFile& f, Model* m, GgufLoadInfo* info) {
  ModelConfig c;
  BK_TRY(config_from_file(f, &c, info));
  const std::string a = info->arch;
  BK_TRY(with_context(model_build_layout(m, c), f.path));

  // ---- tensors ----
  std::vector<float> buf;
  auto put = [&](const std::string& hf) -> float* {
    const ParamInfo* p = model_find_param(*m, hf);
    return p ? m->params.data() + p->offset : nullptr;
  };
  BK_TRY(read_matrix(f, "token_embd.weight", c.vocab_size, c.dim, &buf, nullptr));
  memcpy(put("model.embed_tokens.weight"), buf.data(), buf.size() * sizeof(float));
  BK_TRY(read_matrix(f, "output_norm.weight", 1, c.dim, &buf, nullptr));
  memcpy(put("model.norm.weight"), buf.data(), buf.size() * sizeof(float));
  if (!c.tie_embeddings) {
    BK_TRY(read_matrix(f, "output.weight", c.vocab_size, c.dim, &buf, nullptr));
    memcpy(put("lm_head.weight"), buf.data(), buf.size() * sizeof(float));
  }
  const int D = c.dim, Q = c.n_heads * c.head_dim, K = c.n_kv_heads * c.head_dim, F = c.ffn_dim;
  const bool ternary = c.weight_quant == WQ_TERNARY;
  for (int l = 0; l < c.n_layers; l++) {
    const std::string p = layer_prefix(l);
    for (const ProjName& n : k_norms) {
      float* dst = put(p + n.hf);
      if (!dst) continue;
      int len = (std::string(n.gguf) == "ffn_sub_norm") ? F : (std::string(n.gguf) == "attn_sub_norm" ? Q : D);
      BK_TRY(read_matrix(f, blk(l, n.gguf, "weight"), 1, len, &buf, nullptr));
      memcpy(dst, buf.data(), buf.size() * sizeof(float));
    }
    struct {
      const char* hf;
      const char* gguf;
      int rows, cols, permute_heads;
    } projs[] = {{"self_attn.q_proj.weight", "attn_q", Q, D, a == "llama" ? c.n_heads : 0},
                 {"self_attn.k_proj.weight", "attn_k", K, D, a == "llama" ? c.n_kv_heads : 0},
                 {"self_attn.v_proj.weight", "attn_v", K, D, 0},
                 {"self_attn.o_proj.weight", "attn_output", D, Q, 0},
                 {"mlp.gate_proj.weight", "ffn_gate", F, D, 0},
                 {"mlp.up_proj.weight", "ffn_up", F, D, 0},
                 {"mlp.down_proj.weight", "ffn_down", D, F, 0}};
    for (auto& pr : projs) {
      float* dst = put(p + pr.hf);
      if (!dst) continue;  // relu2: the file's ffn_gate duplicates ffn_up
      const std::string name = blk(l, pr.gguf, "weight");
      buf.resize((size_t)pr.rows * pr.cols);
      if (ternary) {
        BK_TRY(load_ternary(f, name, blk(l, pr.gguf, "scale"), pr.rows, pr.cols, buf.data(), &info->warnings));
      } else {
        BK_TRY(read_matrix(f, name, pr.rows, pr.cols, &buf, nullptr));
        if (const GgufTensorInfo* s = gguf_find_tensor(f, blk(l, pr.gguf, "scale"))) {
          float sc = 1.0f;
          if (s->numel() == 1) BK_TRY(gguf_tensor_to_f32(f, *s, &sc, 1));
          for (float& v : buf) v *= sc;
        }
      }
      if (pr.permute_heads > 0) {
        // Row permutation keeps the codes and gamma, so it may follow load_ternary.
        std::vector<float> tmp(buf);
        permute_qk_rows(tmp.data(), buf.data(), pr.permute_heads, c.head_dim, pr.cols, true);
      }
      memcpy(dst, buf.data(), buf.size() * sizeof(float));
    }
  }

  return tokenizer_from_file(f, info);
}

Status gguf_load_model(const std::string& path, Model* m, GgufLoadInfo* info) {
  GgufFile f;
  BK_TRY(gguf_map(path, &f));  // tensors converted one at a time into the fp32 model
  return gguf_model_from_file(f, m, info);
}

// ---- straight into packed inference weights ---------------------------------------
namespace {

// A TQ2_0 or TQ1_0 projection [rows, cols] into an I2 matrix: TQ2_0 by
// copying each block's 64 bytes of codes (core/ternary_block.h: the same
// layout), TQ1_0 by decoding each block's trits and packing them (1.6 bits in
// the file, 2 in memory, for the faster kernels). gamma = the blocks' one
// scale d times the tensor's .scale. permute_heads > 0 undoes llama's q/k row
// permutation (rows are moved whole, so the codes are unchanged).
Status packed_projection(const GgufFile& f, const std::string& name, const std::string& scale_name, int rows,
                         int cols, int permute_heads, int head_dim, TernaryMatrix* out) {
  const GgufTensorInfo* t = gguf_find_tensor(f, name);
  if (!t) return errorf("%s: tensor '%s' is missing", f.path.c_str(), name.c_str());
  if (!(t->ne.size() == 2 && t->ne[0] == cols && t->ne[1] == rows))
    return errorf("%s: tensor '%s' has the wrong shape for this config (expected {%d, %d})", f.path.c_str(),
                  name.c_str(), cols, rows);
  const bool tq2 = t->type == GGML_TYPE_TQ2_0;
  if ((!tq2 && t->type != GGML_TYPE_TQ1_0) || cols % kQK_K != 0)
    return errorf("%s: tensor '%s' is %s with rows of %d; loading straight into the packed engine needs TQ2_0 or "
                  "TQ1_0 (rows a multiple of 256): load it through the float path (bitkd serve and eval fall back "
                  "to it) or convert it with llama-quantize --allow-requantize ... TQ2_0",
                  f.path.c_str(), name.c_str(), ggml_type_name(t->type), cols);
  const uint8_t* src = gguf_tensor_data(f, *t);
  const int64_t bs = ggml_type_size(t->type), nb = cols / kQK_K;
  const int64_t d_at = bs - 2;  // both block types end with their f16 scale
  uint16_t d0;
  memcpy(&d0, src + d_at, 2);
  for (int64_t b = 1; b < (int64_t)rows * nb; b++)
    if (memcmp(src + b * bs + d_at, &d0, 2) != 0)
      return errorf("%s: tensor '%s' has blocks with different scales; bitkd's packed engine keeps one scale per "
                    "tensor: load it through the float path, which averages them and says so",
                    f.path.c_str(), name.c_str());
  float scale = 1.0f;
  if (const GgufTensorInfo* st = gguf_find_tensor(f, scale_name)) {
    if (st->numel() != 1)
      return errorf("%s: scale tensor '%s' has %lld elements, expected 1", f.path.c_str(), scale_name.c_str(),
                    (long long)st->numel());
    BK_TRY(gguf_tensor_to_f32(f, *st, &scale, 1));
  }
  const float gamma = f16_to_f32(d0) * scale;
  if (!(gamma > 0.0f) || !std::isfinite(gamma))
    return errorf("%s: tensor '%s' has scale %g (block d times .scale); the packed engine needs a positive one",
                  f.path.c_str(), name.c_str(), gamma);
  out->type = TERNARY_I2;
  out->rows = rows;
  out->cols = cols;
  out->cols_pad = ternary_cols_pad(TERNARY_I2, cols);
  out->row_bytes = cols / 4;
  out->gamma = gamma;
  out->data.resize((size_t)rows * out->row_bytes);
  const int half = head_dim / 2;
  int8_t codes[kQK_K];
  uint16_t d;
  for (int r = 0; r < rows; r++) {
    int from = r;  // the file's row for bitkd's row r
    if (permute_heads > 0) {
      const int h = r / head_dim, rem = r % head_dim;
      from = h * head_dim + 2 * (rem % half) + rem / half;
    }
    const uint8_t* s = src + (int64_t)from * nb * bs;
    uint8_t* dst = out->data.data() + (size_t)r * out->row_bytes;
    for (int64_t b = 0; b < nb; b++) {
      if (tq2) {
        memcpy(dst + b * 64, s + b * bs, 64);
      } else {
        tq1_0_unpack_block(s + b * bs, codes, &d);
        i2_block_pack(codes, 32, dst + b * 64);
        i2_block_pack(codes + 128, 32, dst + b * 64 + 32);
      }
    }
  }
  gguf_release_tensor(f, *t);
  return ok_status();
}

// token_embd / output rows in the file's type where rows.h has it, else f32.
Status packed_rows(const GgufFile& f, const std::string& name, int rows, int cols, RowMatrix* out) {
  const GgufTensorInfo* t = gguf_find_tensor(f, name);
  if (!t || !(t->ne.size() == 2 && t->ne[0] == cols && t->ne[1] == rows))
    return errorf("%s: tensor '%s' is missing or not [%d, %d]", f.path.c_str(), name.c_str(), rows, cols);
  const RowType type = t->type == GGML_TYPE_F32    ? ROWS_F32
                       : t->type == GGML_TYPE_F16  ? ROWS_F16
                       : t->type == GGML_TYPE_BF16 ? ROWS_BF16
                       : t->type == GGML_TYPE_Q8_0 ? ROWS_Q8_0
                                                   : (RowType)-1;
  if (type == (RowType)-1) {
    std::vector<float> v((size_t)rows * cols);
    BK_TRY(gguf_tensor_to_f32(f, *t, v.data(), v.size()));
    BK_TRY(rows_from_f32(ROWS_F32, v.data(), rows, cols, out));
  } else {
    BK_TRY(rows_alloc(type, rows, cols, out));
    if (t->nbytes != out->data.size())
      return errorf("%s: tensor '%s' has %llu bytes, expected %zu", f.path.c_str(), name.c_str(),
                    (unsigned long long)t->nbytes, out->data.size());
    memcpy(out->data.data(), gguf_tensor_data(f, *t), out->data.size());
  }
  gguf_release_tensor(f, *t);
  return ok_status();
}

}  // namespace

Status gguf_load_packed(const std::string& path, InferWeights** out, GgufLoadInfo* info) {
  *out = nullptr;
  GgufFile f;
  BK_TRY(gguf_map(path, &f));
  ModelConfig c;
  BK_TRY(config_from_file(f, &c, info));
  BK_TRY(with_context(model_config_validate(c), path));
  if (c.weight_quant != WQ_TERNARY || (c.act_bits != 8 && c.act_bits != 4))
    return errorf("%s: the packed engine runs ternary models with integer activations; this one is %s with "
                  "act_bits %d (use the float backend)",
                  path.c_str(), weight_quant_name(c.weight_quant), c.act_bits);
  std::unique_ptr<InferWeights> w(new InferWeights());
  w->cfg = c;
  w->backend = INFER_PACKED;
  projection_bits(c, &w->bits_qkv, &w->bits_o, &w->bits_gateup, &w->bits_down);
  const int L = c.n_layers, D = c.dim, Q = c.n_heads * c.head_dim, K = c.n_kv_heads * c.head_dim, F = c.ffn_dim;
  BK_TRY(packed_rows(f, "token_embd.weight", c.vocab_size, D, &w->embed_rows));
  if (!c.tie_embeddings) BK_TRY(packed_rows(f, "output.weight", c.vocab_size, D, &w->head_rows));

  // Norms in one fp32 buffer: final, then per layer attn, attn_sub, ffn, ffn_sub.
  const size_t per_layer = (size_t)D + (c.subln ? Q : 0) + D + (c.subln ? F : 0);
  w->f32.assign((size_t)D + per_layer * L, 0.0f);
  auto norm = [&](const std::string& name, int len, float* dst) -> Status {
    const GgufTensorInfo* t = gguf_find_tensor(f, name);
    if (!t || t->numel() != len)
      return errorf("%s: tensor '%s' is missing or does not have %d values", f.path.c_str(), name.c_str(), len);
    return gguf_tensor_to_f32(f, *t, dst, (size_t)len);
  };
  BK_TRY(norm("output_norm.weight", D, w->f32.data()));
  w->final_norm = w->f32.data();
  w->layers.resize(L);
  const bool llama = info->arch == "llama";
  for (int l = 0; l < L; l++) {
    InferLayer& ly = w->layers[l];
    float* p = w->f32.data() + D + per_layer * l;
    BK_TRY(norm(blk(l, "attn_norm", "weight"), D, p));
    ly.attn_norm = p, p += D;
    if (c.subln) {
      BK_TRY(norm(blk(l, "attn_sub_norm", "weight"), Q, p));
      ly.attn_sub_norm = p, p += Q;
    }
    BK_TRY(norm(blk(l, "ffn_norm", "weight"), D, p));
    ly.ffn_norm = p, p += D;
    if (c.subln) {
      BK_TRY(norm(blk(l, "ffn_sub_norm", "weight"), F, p));
      ly.ffn_sub_norm = p;
    }
    struct {
      InferLinear* dst;
      const char* gguf;
      int rows, cols, permute_heads;
      bool present;
    } projs[] = {{&ly.wq, "attn_q", Q, D, llama ? c.n_heads : 0, true},
                 {&ly.wk, "attn_k", K, D, llama ? c.n_kv_heads : 0, true},
                 {&ly.wv, "attn_v", K, D, 0, true},
                 {&ly.wo, "attn_output", D, Q, 0, true},
                 {&ly.w_gate, "ffn_gate", F, D, 0, c.ffn_act == FFN_SWIGLU},
                 {&ly.w_up, "ffn_up", F, D, 0, true},
                 {&ly.w_down, "ffn_down", D, F, 0, true}};
    for (auto& pr : projs) {
      if (!pr.present) continue;
      BK_TRY(packed_projection(f, blk(l, pr.gguf, "weight"), blk(l, pr.gguf, "scale"), pr.rows, pr.cols,
                               pr.permute_heads, c.head_dim, &pr.dst->p));
      pr.dst->out = pr.rows;
      pr.dst->in = pr.cols;
    }
  }
  w->bytes = w->f32.size() * sizeof(float) + rows_bytes(w->embed_rows) + rows_bytes(w->head_rows);
  for (const InferLayer& ly : w->layers)
    for (const InferLinear* lin : {&ly.wq, &ly.wk, &ly.wv, &ly.wo, &ly.w_gate, &ly.w_up, &ly.w_down})
      if (lin->p.rows) w->bytes += (size_t)ternary_size(lin->p).bytes;
  BK_TRY(tokenizer_from_file(f, info));
  info->embed_type = w->embed_rows.type;
  *out = w.release();
  return ok_status();
}

}  // namespace bk
