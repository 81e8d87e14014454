// Hugging Face model directory -> bitkd float model (see hf_model.h).
#include "model/hf_model.h"

#include <cstring>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "core/fs.h"
#include "io/safetensors.h"

namespace bk {
namespace {

const char* kSupportedArchs = "LlamaForCausalLM, MistralForCausalLM";

// An integer field; missing and required is an error naming the file.
Status get_int(const nlohmann::json& j, const std::string& file, const char* key, bool required, int* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) return errorf("%s: field '%s' is missing (a HF config.json has it)", file.c_str(), key);
    return ok_status();
  }
  if (!it->is_number_integer() || it->get<int64_t>() <= 0 || it->get<int64_t>() > INT32_MAX)
    return errorf("%s: field '%s' is %s, expected a positive integer", file.c_str(), key, it->dump().c_str());
  *out = it->get<int>();
  return ok_status();
}

Status get_float(const nlohmann::json& j, const std::string& file, const char* key, float* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return ok_status();
  if (!it->is_number()) return errorf("%s: field '%s' is %s, expected a number", file.c_str(), key, it->dump().c_str());
  *out = it->get<float>();
  return ok_status();
}

// Fields that must be absent, null, false or the one value bitkd runs.
Status check_unsupported(const nlohmann::json& j, const std::string& file) {
  for (const char* key : {"attention_bias", "mlp_bias"}) {
    auto it = j.find(key);
    if (it != j.end() && it->is_boolean() && it->get<bool>())
      return errorf("%s: field '%s' is true; bitkd's Llama has no projection biases (supported: false or absent)",
                    file.c_str(), key);
  }
  auto act = j.find("hidden_act");
  if (act != j.end() && !(act->is_string() && act->get<std::string>() == "silu"))
    return errorf("%s: field 'hidden_act' is %s; bitkd runs SwiGLU (supported: \"silu\")", file.c_str(),
                  act->dump().c_str());
  return ok_status();
}

// rope_scaling: null/absent (plain RoPE) or Llama 3.1's {"rope_type": "llama3", factor,
// low_freq_factor, high_freq_factor, original_max_position_embeddings}.
Status read_rope_scaling(const nlohmann::json& j, const std::string& file, ModelConfig* c) {
  auto rs = j.find("rope_scaling");
  if (rs == j.end() || rs->is_null()) return ok_status();
  std::string type;
  if (rs->is_object()) {
    auto t = rs->contains("rope_type") ? rs->find("rope_type") : rs->find("type");  // older configs say "type"
    if (t != rs->end() && t->is_string()) type = t->get<std::string>();
  }
  if (type == "default") return ok_status();
  if (type != "llama3")
    return errorf("%s: field 'rope_scaling' is %s; bitkd runs plain RoPE or Llama 3.1's scaling (supported: null, "
                  "or rope_type \"llama3\" with factor, low_freq_factor, high_freq_factor, "
                  "original_max_position_embeddings)",
                  file.c_str(), rs->dump().c_str());
  const std::string f = file + ": rope_scaling";
  c->rope_scale_factor = 0.0f;
  BK_TRY(get_float(*rs, f, "factor", &c->rope_scale_factor));
  BK_TRY(get_float(*rs, f, "low_freq_factor", &c->rope_low_freq_factor));
  BK_TRY(get_float(*rs, f, "high_freq_factor", &c->rope_high_freq_factor));
  BK_TRY(get_int(*rs, f, "original_max_position_embeddings", true, &c->rope_orig_ctx));
  if (c->rope_scale_factor == 0.0f) return errorf("%s: field 'factor' is missing or 0", f.c_str());
  return ok_status();
}

struct Shards {
  std::map<std::string, std::string> weight_map;  // tensor -> file (sharded only)
  std::map<std::string, std::unique_ptr<SafeTensorsFile>> files;
};

// Maps model.safetensors, or every shard model.safetensors.index.json names.
Status open_shards(const std::string& dir, Shards* s, HfLoadInfo* info) {
  const std::string index = dir + "/model.safetensors.index.json";
  std::vector<std::string> names;
  if (file_exists(index)) {
    std::string text;
    BK_TRY(read_file(index, &text));
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.contains("weight_map") || !j["weight_map"].is_object())
      return errorf("%s: not a safetensors index (expected a JSON object with a 'weight_map' object)", index.c_str());
    std::set<std::string> uniq;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string())
        return errorf("%s: weight_map['%s'] is not a file name", index.c_str(), it.key().c_str());
      const std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos)
        return errorf("%s: weight_map['%s'] = '%s' is not a file in the directory", index.c_str(), it.key().c_str(),
                      shard.c_str());
      s->weight_map[it.key()] = shard;
      if (uniq.insert(shard).second) names.push_back(shard);
    }
    for (const std::string& n : names)
      if (!file_exists(dir + "/" + n))
        return errorf("%s: shard '%s' (named in weight_map) is missing from %s", index.c_str(), n.c_str(),
                      dir.c_str());
  } else if (file_exists(dir + "/model.safetensors")) {
    names.push_back("model.safetensors");
  } else {
    return errorf("%s: no model.safetensors or model.safetensors.index.json (a HF model directory has one)",
                  dir.c_str());
  }
  for (const std::string& n : names) {
    auto f = std::make_unique<SafeTensorsFile>();
    BK_TRY(safetensors_map(dir + "/" + n, f.get()));
    info->files.push_back(dir + "/" + n);
    s->files[n] = std::move(f);
  }
  return ok_status();
}

// The file holding tensor `name` (the index's entry, else the single file), or nullptr.
const SafeTensorsFile* file_of(const Shards& s, const std::string& name) {
  if (s.weight_map.empty()) return s.files.begin()->second.get();
  auto it = s.weight_map.find(name);
  return it == s.weight_map.end() ? nullptr : s.files.at(it->second).get();
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string t = "[";
  for (size_t i = 0; i < shape.size(); i++) t += (i ? ", " : "") + std::to_string(shape[i]);
  return t + "]";
}

// One parameter: shape and dtype checked, converted into dst, pages dropped.
Status load_param(const Shards& s, const std::string& dir, const ParamInfo& p, float* dst) {
  const SafeTensorsFile* f = file_of(s, p.name);
  const StTensor* t = f ? safetensors_find(*f, p.name) : nullptr;
  if (!t)
    return errorf("%s: tensor '%s' is missing (%s)", f ? f->path.c_str() : (dir + "/model.safetensors.index.json").c_str(),
                  p.name.c_str(), f ? "not in the file" : "not in weight_map");
  const std::vector<int64_t> want =
      p.kind == PARAM_NORM ? std::vector<int64_t>{p.rows} : std::vector<int64_t>{p.rows, p.cols};
  if (t->shape != want)
    return errorf("%s: tensor '%s' has shape %s, expected %s from config.json", f->path.c_str(), p.name.c_str(),
                  shape_text(t->shape).c_str(), shape_text(want).c_str());
  if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
    return errorf("%s: tensor '%s' has dtype %s (supported: F32, F16, BF16)", f->path.c_str(), p.name.c_str(),
                  st_dtype_name(t->dtype));
  BK_TRY(safetensors_get_f32(*f, p.name, nullptr, dst, p.numel));
  safetensors_release(*f, *t);
  return ok_status();
}

}  // namespace

bool hf_is_model_dir(const std::string& path) { return dir_exists(path) && file_exists(path + "/config.json"); }

Status hf_config_from_file(const std::string& file, ModelConfig* out, HfLoadInfo* info) {
  std::string text;
  BK_TRY(read_file(file, &text));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return errorf("%s: not a JSON object", file.c_str());
  auto archs = j.find("architectures");
  if (archs == j.end() || !archs->is_array() || archs->empty() || !(*archs)[0].is_string())
    return errorf("%s: field 'architectures' is missing or not a list of names (supported: %s)", file.c_str(),
                  kSupportedArchs);
  info->arch = (*archs)[0].get<std::string>();
  if (info->arch != "LlamaForCausalLM" && info->arch != "MistralForCausalLM")
    return errorf("%s: field 'architectures' is [\"%s\"], which bitkd does not load (supported: %s)", file.c_str(),
                  info->arch.c_str(), kSupportedArchs);
  BK_TRY(check_unsupported(j, file));
  ModelConfig c;
  c.subln = false;
  c.weight_quant = WQ_NONE;
  c.act_bits = 0;
  c.ffn_act = FFN_SWIGLU;
  c.tie_embeddings = false;  // LlamaConfig's default
  c.norm_eps = 1e-6f;        // LlamaConfig's default
  c.max_seq_len = 2048;      // LlamaConfig's default max_position_embeddings
  BK_TRY(get_int(j, file, "hidden_size", true, &c.dim));
  BK_TRY(get_int(j, file, "num_hidden_layers", true, &c.n_layers));
  BK_TRY(get_int(j, file, "num_attention_heads", true, &c.n_heads));
  BK_TRY(get_int(j, file, "intermediate_size", true, &c.ffn_dim));
  BK_TRY(get_int(j, file, "vocab_size", true, &c.vocab_size));
  c.n_kv_heads = c.n_heads;
  BK_TRY(get_int(j, file, "num_key_value_heads", false, &c.n_kv_heads));
  BK_TRY(get_int(j, file, "max_position_embeddings", false, &c.max_seq_len));
  BK_TRY(get_float(j, file, "rms_norm_eps", &c.norm_eps));
  BK_TRY(get_float(j, file, "rope_theta", &c.rope_theta));
  c.head_dim = c.dim / c.n_heads;
  int head_dim = c.head_dim;
  BK_TRY(get_int(j, file, "head_dim", false, &head_dim));
  if (head_dim != c.head_dim || c.dim % c.n_heads != 0)
    return errorf("%s: field 'head_dim' is %d with hidden_size %d and %d heads; bitkd needs head_dim = "
                  "hidden_size / num_attention_heads",
                  file.c_str(), head_dim, c.dim, c.n_heads);
  BK_TRY(read_rope_scaling(j, file, &c));
  auto tie = j.find("tie_word_embeddings");
  if (tie != j.end() && tie->is_boolean()) c.tie_embeddings = tie->get<bool>();
  auto sw = j.find("sliding_window");
  if (sw != j.end() && sw->is_number_integer() && sw->get<int64_t>() < c.max_seq_len)
    info->warnings.push_back(file + ": sliding_window " + std::to_string(sw->get<int64_t>()) +
                             " is not applied: bitkd attends to the whole context (equal within the window)");
  BK_TRY(with_context(model_config_validate(c), file));
  *out = c;
  return ok_status();
}

Status hf_load_model(const std::string& dir, Model* m, HfLoadInfo* info) {
  *info = HfLoadInfo();
  ModelConfig c;
  BK_TRY(hf_config_from_file(dir + "/config.json", &c, info));
  Shards s;
  BK_TRY(open_shards(dir, &s, info));
  BK_TRY(model_build_layout(m, c));
  for (const ParamInfo& p : m->info) BK_TRY(load_param(s, dir, p, m->params.data() + p.offset));
  // Weights bitkd would silently drop (biases, extra norms) mean another architecture.
  std::set<std::string> used;
  for (const ParamInfo& p : m->info) used.insert(p.name);
  for (const auto& kv : s.files)
    for (const StTensor& t : kv.second->tensors) {
      const std::string inv = "rotary_emb.inv_freq";  // a RoPE cache some exports keep
      const bool rope_cache = t.name.size() >= inv.size() && t.name.compare(t.name.size() - inv.size(), inv.size(), inv) == 0;
      if (used.count(t.name) || rope_cache) continue;
      if (t.name == "lm_head.weight" && c.tie_embeddings) {
        info->warnings.push_back(kv.second->path + ": lm_head.weight is not used: config.json ties it to the embedding");
        continue;
      }
      return errorf("%s: tensor '%s' has no place in a %s model bitkd builds from config.json (a bias or norm of "
                    "another architecture?)",
                    kv.second->path.c_str(), t.name.c_str(), info->arch.c_str());
    }
  return ok_status();
}

}  // namespace bk
