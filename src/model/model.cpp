// Model configuration (validation, JSON), parameter layout and initialisation,
// and the training activation arena.
#include "model/model.h"

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "kernels/cpu/kernels.h"
#include "model/activations.h"

namespace bk {

// ---- config ----------------------------------------------------------------------

const char* ffn_act_name(FfnAct a) { return a == FFN_RELU2 ? "relu2" : "swiglu"; }
const char* weight_quant_name(WeightQuant q) { return q == WQ_TERNARY ? "ternary" : "none"; }
const char* a4_scope_name(A4Scope s) { return s == A4_ALL ? "all" : "hybrid"; }

void projection_bits(const ModelConfig& c, int* qkv, int* o, int* gateup, int* down) {
  if (c.act_bits == 0) {
    *qkv = *o = *gateup = *down = 0;
  } else if (c.act_bits == 8) {
    *qkv = *o = *gateup = *down = 8;
  } else {  // 4-bit: hybrid keeps the inputs of o_proj and down_proj at 8 bits
    *qkv = *gateup = 4;
    *o = *down = c.a4_scope == A4_ALL ? 4 : 8;
  }
}

Status model_config_validate(const ModelConfig& c) {
  struct {
    const char* name;
    int v;
  } pos[] = {{"vocab_size", c.vocab_size}, {"dim", c.dim},           {"n_layers", c.n_layers},
             {"n_heads", c.n_heads},       {"n_kv_heads", c.n_kv_heads}, {"head_dim", c.head_dim},
             {"ffn_dim", c.ffn_dim},       {"max_seq_len", c.max_seq_len}};
  for (auto& p : pos)
    if (p.v <= 0) return errorf("model config: %s is %d, must be a positive integer", p.name, p.v);
  if (c.dim % c.n_heads != 0)
    return errorf("model config: dim %d is not divisible by n_heads %d; pick n_heads that divides dim", c.dim,
                  c.n_heads);
  if (c.n_heads % c.n_kv_heads != 0)
    return errorf("model config: n_kv_heads %d does not divide n_heads %d (grouped-query attention needs "
                  "n_heads = k * n_kv_heads)",
                  c.n_kv_heads, c.n_heads);
  if (c.head_dim != c.dim / c.n_heads)
    return errorf("model config: head_dim is %d but dim / n_heads = %d / %d = %d; they must be equal", c.head_dim,
                  c.dim, c.n_heads, c.dim / c.n_heads);
  if (c.head_dim % 2 != 0)
    return errorf("model config: head_dim %d is odd; RoPE rotates pairs, so head_dim must be even", c.head_dim);
  if (c.ffn_act != FFN_SWIGLU && c.ffn_act != FFN_RELU2)
    return errorf("model config: ffn_act is %d, expected swiglu (0) or relu2 (1)", (int)c.ffn_act);
  if (c.weight_quant != WQ_NONE && c.weight_quant != WQ_TERNARY)
    return errorf("model config: weight_quant is %d, expected none (0) or ternary (1)", (int)c.weight_quant);
  if (c.a4_scope != A4_HYBRID && c.a4_scope != A4_ALL)
    return errorf("model config: a4_scope is %d, expected hybrid (0) or all (1)", (int)c.a4_scope);
  if (c.act_bits != 0 && c.act_bits != 4 && c.act_bits != 8)
    return errorf("model config: act_bits is %d, expected 8, 4 or 0 (no activation quantization)", c.act_bits);
  if (!(c.rope_theta > 0.0f) || !std::isfinite(c.rope_theta))
    return errorf("model config: rope_theta is %g, must be a positive number", (double)c.rope_theta);
  if (!(c.norm_eps > 0.0f) || !std::isfinite(c.norm_eps))
    return errorf("model config: norm_eps is %g, must be a positive number", (double)c.norm_eps);
  if (c.rope_scale_factor != 0.0f &&
      (!(c.rope_scale_factor >= 1.0f) || !std::isfinite(c.rope_scale_factor) || !(c.rope_low_freq_factor > 0.0f) ||
       !(c.rope_high_freq_factor > c.rope_low_freq_factor) || c.rope_orig_ctx <= 0))
    return errorf("model config: llama3 rope scaling factor %g, low/high_freq_factor %g/%g, original context %d: "
                  "needs factor >= 1, 0 < low < high and a positive context (factor 0 = no scaling)",
                  (double)c.rope_scale_factor, (double)c.rope_low_freq_factor, (double)c.rope_high_freq_factor,
                  c.rope_orig_ctx);
  return ok_status();
}

void model_rope_tables(const ModelConfig& c, float* cos_t, float* sin_t, int seq) {
  if (c.rope_scale_factor == 0.0f) {
    rope_tables(cos_t, sin_t, seq, c.head_dim, c.rope_theta);
    return;
  }
  // Llama 3.1 (HF _compute_llama3_parameters): wavelengths longer than
  // orig_ctx / low_freq_factor are slowed by `factor`, shorter than
  // orig_ctx / high_freq_factor kept, and those between interpolated.
  const int half = c.head_dim / 2;
  const double factor = c.rope_scale_factor, lo = c.rope_low_freq_factor, hi = c.rope_high_freq_factor;
  const double ctx = c.rope_orig_ctx, pi = 3.14159265358979323846;
  std::vector<double> freq(half);
  for (int i = 0; i < half; i++) {
    const double f = std::pow((double)c.rope_theta, -2.0 * i / (double)c.head_dim);
    const double wavelen = 2.0 * pi / f;
    if (wavelen < ctx / hi) {
      freq[i] = f;
    } else if (wavelen > ctx / lo) {
      freq[i] = f / factor;
    } else {
      const double smooth = (ctx / wavelen - lo) / (hi - lo);
      freq[i] = (1.0 - smooth) * f / factor + smooth * f;
    }
  }
  for (int p = 0; p < seq; p++)
    for (int i = 0; i < half; i++) {
      cos_t[(size_t)p * half + i] = (float)std::cos(p * freq[i]);
      sin_t[(size_t)p * half + i] = (float)std::sin(p * freq[i]);
    }
}

std::string model_config_to_json(const ModelConfig& c) {
  nlohmann::ordered_json j;
  j["vocab_size"] = c.vocab_size;
  j["dim"] = c.dim;
  j["n_layers"] = c.n_layers;
  j["n_heads"] = c.n_heads;
  j["n_kv_heads"] = c.n_kv_heads;
  j["head_dim"] = c.head_dim;
  j["ffn_dim"] = c.ffn_dim;
  j["ffn_act"] = ffn_act_name(c.ffn_act);
  j["rope_theta"] = c.rope_theta;
  j["norm_eps"] = c.norm_eps;
  j["max_seq_len"] = c.max_seq_len;
  j["tie_embeddings"] = c.tie_embeddings;
  j["subln"] = c.subln;
  j["weight_quant"] = weight_quant_name(c.weight_quant);
  j["act_bits"] = c.act_bits;
  j["a4_scope"] = a4_scope_name(c.a4_scope);
  if (c.rope_scale_factor != 0.0f) {  // written only when used: plain-RoPE records stay as they were
    j["rope_scale_factor"] = c.rope_scale_factor;
    j["rope_low_freq_factor"] = c.rope_low_freq_factor;
    j["rope_high_freq_factor"] = c.rope_high_freq_factor;
    j["rope_orig_ctx"] = c.rope_orig_ctx;
  }
  return j.dump();
}

namespace {

Status get_int(const nlohmann::json& j, const char* key, int* out) {
  auto it = j.find(key);
  if (it == j.end()) return ok_status();
  if (!it->is_number_integer())
    return errorf("model config JSON: \"%s\" must be an integer, got %s", key, it->dump().c_str());
  long long v = it->get<long long>();
  if (v < -2147483647LL || v > 2147483647LL)
    return errorf("model config JSON: \"%s\" = %lld is out of range", key, v);
  *out = (int)v;
  return ok_status();
}

Status get_float(const nlohmann::json& j, const char* key, float* out) {
  auto it = j.find(key);
  if (it == j.end()) return ok_status();
  if (!it->is_number()) return errorf("model config JSON: \"%s\" must be a number, got %s", key, it->dump().c_str());
  *out = it->get<float>();
  return ok_status();
}

Status get_bool(const nlohmann::json& j, const char* key, bool* out) {
  auto it = j.find(key);
  if (it == j.end()) return ok_status();
  if (!it->is_boolean())
    return errorf("model config JSON: \"%s\" must be true or false, got %s", key, it->dump().c_str());
  *out = it->get<bool>();
  return ok_status();
}

// Looks up an enum by name among names[0..n); missing key keeps *out.
Status get_enum(const nlohmann::json& j, const char* key, const char* const* names, int n, int* out) {
  auto it = j.find(key);
  if (it == j.end()) return ok_status();
  std::string allowed;
  for (int i = 0; i < n; i++) allowed += std::string(i ? ", " : "") + names[i];
  if (!it->is_string())
    return errorf("model config JSON: \"%s\" must be a string (one of %s), got %s", key, allowed.c_str(),
                  it->dump().c_str());
  std::string v = it->get<std::string>();
  for (int i = 0; i < n; i++)
    if (v == names[i]) {
      *out = i;
      return ok_status();
    }
  return errorf("model config JSON: unknown %s \"%s\"; expected one of %s", key, v.c_str(), allowed.c_str());
}

}  // namespace

Status model_config_from_json(const std::string& text, ModelConfig* out) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    return errorf("model config JSON: parse error: %s", e.what());
  }
  if (!j.is_object()) return errorf("model config JSON: expected an object, got %s", j.type_name());
  ModelConfig c = *out;
  BK_TRY(get_int(j, "vocab_size", &c.vocab_size));
  BK_TRY(get_int(j, "dim", &c.dim));
  BK_TRY(get_int(j, "n_layers", &c.n_layers));
  BK_TRY(get_int(j, "n_heads", &c.n_heads));
  // When the JSON sets the head count or width but not n_kv_heads / head_dim,
  // those follow (plain multi-head attention, head_dim = dim / n_heads).
  if (j.contains("n_heads") && !j.contains("n_kv_heads")) c.n_kv_heads = c.n_heads;
  BK_TRY(get_int(j, "n_kv_heads", &c.n_kv_heads));
  if ((j.contains("dim") || j.contains("n_heads")) && !j.contains("head_dim") && c.n_heads > 0)
    c.head_dim = c.dim / c.n_heads;
  BK_TRY(get_int(j, "head_dim", &c.head_dim));
  BK_TRY(get_int(j, "ffn_dim", &c.ffn_dim));
  BK_TRY(get_float(j, "rope_theta", &c.rope_theta));
  BK_TRY(get_float(j, "norm_eps", &c.norm_eps));
  BK_TRY(get_float(j, "rope_scale_factor", &c.rope_scale_factor));
  BK_TRY(get_float(j, "rope_low_freq_factor", &c.rope_low_freq_factor));
  BK_TRY(get_float(j, "rope_high_freq_factor", &c.rope_high_freq_factor));
  BK_TRY(get_int(j, "rope_orig_ctx", &c.rope_orig_ctx));
  BK_TRY(get_int(j, "max_seq_len", &c.max_seq_len));
  BK_TRY(get_bool(j, "tie_embeddings", &c.tie_embeddings));
  BK_TRY(get_bool(j, "subln", &c.subln));
  BK_TRY(get_int(j, "act_bits", &c.act_bits));
  static const char* const acts[] = {"swiglu", "relu2"};
  static const char* const wqs[] = {"none", "ternary"};
  static const char* const scopes[] = {"hybrid", "all"};
  int e = c.ffn_act;
  BK_TRY(get_enum(j, "ffn_act", acts, 2, &e));
  c.ffn_act = (FfnAct)e;
  e = c.weight_quant;
  BK_TRY(get_enum(j, "weight_quant", wqs, 2, &e));
  c.weight_quant = (WeightQuant)e;
  e = c.a4_scope;
  BK_TRY(get_enum(j, "a4_scope", scopes, 2, &e));
  c.a4_scope = (A4Scope)e;
  BK_TRY(model_config_validate(c));
  *out = c;
  return ok_status();
}

// ---- parameter layout -------------------------------------------------------------

static void set_views(const Model& m, float* base, ModelWeights* w) {
  const ModelConfig& c = m.cfg;
  auto at = [&](const std::string& name) -> float* {
    const ParamInfo* p = model_find_param(m, name);
    return p ? base + p->offset : nullptr;
  };
  w->tok_embeddings = at("model.embed_tokens.weight");
  w->layers.assign(c.n_layers, LayerWeights{});
  for (int l = 0; l < c.n_layers; l++) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights& L = w->layers[l];
    L.attn_norm = at(p + "input_layernorm.weight");
    L.wq = at(p + "self_attn.q_proj.weight");
    L.wk = at(p + "self_attn.k_proj.weight");
    L.wv = at(p + "self_attn.v_proj.weight");
    L.attn_sub_norm = at(p + "self_attn.inner_norm.weight");
    L.wo = at(p + "self_attn.o_proj.weight");
    L.ffn_norm = at(p + "post_attention_layernorm.weight");
    L.w_gate = at(p + "mlp.gate_proj.weight");
    L.w_up = at(p + "mlp.up_proj.weight");
    L.ffn_sub_norm = at(p + "mlp.ffn_layernorm.weight");
    L.w_down = at(p + "mlp.down_proj.weight");
  }
  w->final_norm = at("model.norm.weight");
  w->output = c.tie_embeddings ? w->tok_embeddings : at("lm_head.weight");
}

Status model_build_layout(Model* m, const ModelConfig& cfg) {
  BK_TRY(model_config_validate(cfg));
  m->cfg = cfg;
  m->info.clear();
  size_t off = 0;
  auto add = [&](const std::string& name, int rows, int cols, ParamKind kind, int layer) {
    ParamInfo p{name, off, (size_t)rows * cols, rows, cols, kind, layer};
    m->info.push_back(p);
    off += p.numel;
  };
  const int D = cfg.dim, Q = cfg.n_heads * cfg.head_dim, K = cfg.n_kv_heads * cfg.head_dim, F = cfg.ffn_dim;
  add("model.embed_tokens.weight", cfg.vocab_size, D, PARAM_EMBEDDING, -1);
  for (int l = 0; l < cfg.n_layers; l++) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", D, 1, PARAM_NORM, l);
    add(p + "self_attn.q_proj.weight", Q, D, PARAM_LINEAR, l);
    add(p + "self_attn.k_proj.weight", K, D, PARAM_LINEAR, l);
    add(p + "self_attn.v_proj.weight", K, D, PARAM_LINEAR, l);
    if (cfg.subln) add(p + "self_attn.inner_norm.weight", Q, 1, PARAM_NORM, l);
    add(p + "self_attn.o_proj.weight", D, Q, PARAM_LINEAR, l);
    add(p + "post_attention_layernorm.weight", D, 1, PARAM_NORM, l);
    if (cfg.ffn_act == FFN_SWIGLU) add(p + "mlp.gate_proj.weight", F, D, PARAM_LINEAR, l);
    add(p + "mlp.up_proj.weight", F, D, PARAM_LINEAR, l);
    if (cfg.subln) add(p + "mlp.ffn_layernorm.weight", F, 1, PARAM_NORM, l);
    add(p + "mlp.down_proj.weight", D, F, PARAM_LINEAR, l);
  }
  add("model.norm.weight", D, 1, PARAM_NORM, -1);
  if (!cfg.tie_embeddings) add("lm_head.weight", cfg.vocab_size, D, PARAM_HEAD, -1);
  m->params.assign(off, 0.0f);
  m->grads.clear();
  m->grads.shrink_to_fit();
  set_views(*m, m->params.data(), &m->w);
  m->g = ModelWeights{};
  return ok_status();
}

Status model_init(Model* m, const ModelConfig& cfg, uint64_t seed) {
  BK_TRY(model_build_layout(m, cfg));
  Rng rng;
  rng_seed(&rng, seed);
  const float out_scale = 1.0f / std::sqrt(2.0f * cfg.n_layers);
  for (const ParamInfo& p : m->info) {
    float* x = m->params.data() + p.offset;
    if (p.kind == PARAM_NORM) {
      for (size_t i = 0; i < p.numel; i++) x[i] = 1.0f;
      continue;
    }
    float std = 0.02f;
    // GPT-2 style: projections writing into the residual stream are scaled down
    // so the stream's variance does not grow with depth.
    if (p.name.find("o_proj") != std::string::npos || p.name.find("down_proj") != std::string::npos)
      std *= out_scale;
    for (size_t i = 0; i < p.numel; i++) x[i] = std * rng_normal(&rng);
  }
  return ok_status();
}

void model_alloc_grads(Model* m) {
  m->grads.assign(m->params.size(), 0.0f);
  set_views(*m, m->grads.data(), &m->g);
}

void model_zero_grads(Model* m) {
  if (!m->grads.empty()) memset(m->grads.data(), 0, sizeof(float) * m->grads.size());
}

size_t model_num_params(const Model& m) {
  size_t n = 0;
  for (const ParamInfo& p : m.info) n += p.numel;
  return n;
}

const ParamInfo* model_find_param(const Model& m, const std::string& name) {
  for (const ParamInfo& p : m.info)
    if (p.name == name) return &p;
  return nullptr;
}

// ---- activation arena -----------------------------------------------------------------

void activations_ensure_qweights(Activations* a, const Model& m) {
  if (!a->qw.empty()) return;
  const ModelConfig& c = a->cfg;
  const size_t D = c.dim, Q = (size_t)c.n_heads * c.head_dim, K = (size_t)c.n_kv_heads * c.head_dim,
               F = c.ffn_dim, L = c.n_layers;
  const bool swiglu = c.ffn_act == FFN_SWIGLU;
  size_t per_layer = 0;
  for (const ParamInfo& p : m.info)
    if (p.kind == PARAM_LINEAR && p.layer == 0) per_layer += p.numel;
  a->qmem.assign(per_layer * L, 0.0f);
  a->qw.assign(L, LayerQWeights{});
  float* q = a->qmem.data();
  for (size_t l = 0; l < L; l++) {
    LayerQWeights& w = a->qw[l];
    w.wq = q, q += Q * D;
    w.wk = q, q += K * D;
    w.wv = q, q += K * D;
    w.wo = q, q += D * Q;
    if (swiglu) w.w_gate = q, q += F * D;
    w.w_up = q, q += F * D;
    w.w_down = q, q += D * F;
  }
}

Activations* activations_create(const Model& m, int batch, int seq) {
  const ModelConfig& c = m.cfg;
  if (batch <= 0 || seq <= 0 || !model_config_validate(c).ok()) return nullptr;
  Activations* a = new Activations();
  a->max_batch = batch;
  a->max_seq = seq;
  a->cfg = c;
  const size_t N = (size_t)batch * seq, D = c.dim, Q = (size_t)c.n_heads * c.head_dim,
               K = (size_t)c.n_kv_heads * c.head_dim, F = c.ffn_dim, V = c.vocab_size, L = c.n_layers,
               H = c.n_heads, T = seq;
  const bool swiglu = c.ffn_act == FFN_SWIGLU;
  const size_t QF = Q > F ? Q : F;
  // Two passes over the same carve-up: the first only counts.
  size_t total = 0;
  float* base = nullptr;
  auto carve = [&](size_t n) -> float* {
    float* p = base ? base + total : nullptr;
    total += (n + 15) & ~(size_t)15;  // 64-byte aligned offsets
    return p;
  };
  for (int pass = 0; pass < 2; pass++) {
    total = 0;
    a->residual = carve((L + 1) * N * D);
    a->h = carve(L * N * D);
    a->layers.assign(L, LayerActs{});
    for (size_t l = 0; l < L; l++) {
      LayerActs& la = a->layers[l];
      la.attn_rstd = carve(N);
      la.xq_attn = carve(N * D);
      la.xs_attn = carve(N);
      la.q = carve(N * Q);
      la.k = carve(N * K);
      la.v = carve(N * K);
      la.att = carve((size_t)batch * H * T * T);
      la.attn_out = carve(N * Q);
      la.sub_attn_rstd = carve(N);
      la.xq_o = carve(N * Q);
      la.xs_o = carve(N);
      la.ffn_rstd = carve(N);
      la.xq_ffn = carve(N * D);
      la.xs_ffn = carve(N);
      la.gate = swiglu ? carve(N * F) : nullptr;
      la.up = carve(N * F);
      la.act = carve(N * F);
      la.sub_ffn_rstd = carve(N);
      la.xq_down = carve(N * F);
      la.xs_down = carve(N);
    }
    a->final_rstd = carve(N);
    a->final_out = carve(N * D);
    a->logits = carve(N * V);
    a->rope_cos = carve(T * (c.head_dim / 2));
    a->rope_sin = carve(T * (c.head_dim / 2));
    a->proj = carve(N * D);
    a->d_res = carve(N * D);
    a->d_xd = carve(N * D);
    a->d_xq = carve(N * QF);
    a->d_pre = carve(N * QF);
    a->d_gate = swiglu ? carve(N * F) : nullptr;
    a->d_up = carve(N * F);
    a->d_q = carve(N * Q);
    a->d_k = carve(N * K);
    a->d_v = carve(N * K);
    a->d_scaled = carve(N * (QF > D ? QF : D));
    if (pass == 0) {
      a->mem.assign(total + 16, 0.0f);
      // align the base to 64 bytes
      float* p = a->mem.data();
      size_t mis = ((uintptr_t)p / sizeof(float)) % 16;
      base = p + (mis ? 16 - mis : 0);
    }
  }
  model_rope_tables(c, a->rope_cos, a->rope_sin, seq);

  if (c.weight_quant == WQ_TERNARY) activations_ensure_qweights(a, m);
  return a;
}

void activations_destroy(Activations* a) { delete a; }

size_t activations_bytes(const Activations* a) {
  return a ? (a->mem.size() + a->qmem.size()) * sizeof(float) : 0;
}

float* activations_logits(Activations* a) { return a->logits; }

ModelTimings model_last_timings(const Activations* a) { return a->timings; }

}  // namespace bk
