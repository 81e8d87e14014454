#include "train/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/fs.h"
#include "core/log.h"
#include "core/timing.h"
#include "core/version.h"
#include "io/safetensors.h"

namespace bk {

const char* const k_checkpoint_prefix = "mini_bitnet_step_";
static const char* const k_model_kind = "bitkd.model";
static const char* const k_optim_kind = "bitkd.optimizer";

std::string checkpoint_path_for_step(const std::string& dir, long step) {
  return path_join(dir, std::string(k_checkpoint_prefix) + std::to_string(step) + ".safetensors");
}

static std::string strip_suffix(const std::string& s, const std::string& suf) {
  if (s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0)
    return s.substr(0, s.size() - suf.size());
  return s;
}

std::string checkpoint_optim_path(const std::string& model_path) {
  return strip_suffix(model_path, ".safetensors") + ".optim.safetensors";
}

std::string checkpoint_health_path(const std::string& model_path) {
  return strip_suffix(model_path, ".safetensors") + "_health.json";
}

static std::vector<int64_t> param_shape(const ParamInfo& p) {
  if (p.cols == 1) return {(int64_t)p.rows};  // vectors (norm gains) are 1-D, as in PyTorch
  return {(int64_t)p.rows, (int64_t)p.cols};
}

// JSON numbers that must survive exactly: doubles are written with 17
// significant digits by nlohmann, which round-trips.
static std::string flip_to_json(const FlipState& f) {
  nlohmann::ordered_json j;
  j["flip_done"] = f.flip_done;
  j["current_bits"] = f.current_bits;
  j["flip_step"] = f.flip_step;
  j["flip_tokens"] = f.flip_tokens;
  return j.dump();
}

static Status save_optimizer(const std::string& path, const Model& m, const Optimizer& opt,
                             const ScheduleConfig* sched, long step) {
  if (opt.m.size() != m.params.size() || opt.v.size() != m.params.size())
    return errorf("optimizer state has %zu moments for a model of %zu parameters", opt.m.size(), m.params.size());
  SafeTensorsWriter w;
  std::vector<std::string> names;
  for (const ParamInfo& p : m.info) {
    st_writer_add(&w, "exp_avg." + p.name, ST_F32, param_shape(p), opt.m.data() + p.offset);
    st_writer_add(&w, "exp_avg_sq." + p.name, ST_F32, param_shape(p), opt.v.data() + p.offset);
  }
  nlohmann::ordered_json o;
  o["type"] = "adamw";
  o["step"] = opt.step;
  o["skipped"] = opt.skipped;
  o["beta1"] = opt.cfg.beta1;
  o["beta2"] = opt.cfg.beta2;
  o["eps"] = opt.cfg.eps;
  o["weight_decay"] = opt.cfg.weight_decay;
  o["grad_clip"] = opt.cfg.grad_clip;
  o["decay_embedding"] = opt.cfg.decay_embedding;
  o["decay_norm"] = opt.cfg.decay_norm;
  o["decay_linear"] = opt.cfg.decay_linear;
  o["decay_head"] = opt.cfg.decay_head;
  w.metadata["format"] = "pt";
  w.metadata["bitkd_kind"] = k_optim_kind;
  w.metadata["bitkd_version"] = BITKD_VERSION;
  w.metadata["step"] = std::to_string(step);
  w.metadata["optimizer"] = o.dump();
  if (sched) w.metadata["scheduler"] = schedule_to_json(*sched);
  return safetensors_write(path, w);
}

static Status write_health(const std::string& path, const Model& m, const TrainState& st,
                           const std::string& extra_json) {
  nlohmann::ordered_json h;
  h["step"] = st.step;
  h["seen_tokens"] = st.seen_tokens;
  h["flip_done"] = st.flip.flip_done;
  h["activation_bits"] = m.cfg.act_bits;
  h["last_loss"] = std::isfinite(st.last_loss) ? nlohmann::ordered_json(st.last_loss) : nlohmann::ordered_json();
  h["timestamp"] = st.timestamp;
  if (!extra_json.empty()) {
    try {
      nlohmann::ordered_json e = nlohmann::ordered_json::parse(extra_json);
      if (!e.is_object()) return errorf("health extras must be a JSON object, got %s", e.type_name());
      for (auto it = e.begin(); it != e.end(); ++it) h[it.key()] = it.value();
    } catch (const std::exception& ex) {
      return errorf("health extras are not valid JSON: %s", ex.what());
    }
  }
  return write_file_atomic(path, h.dump(2) + "\n");
}

static void remove_checkpoint(const std::string& model_path) {
  for (const std::string& p : {model_path, checkpoint_optim_path(model_path), checkpoint_health_path(model_path)})
    if (file_exists(p)) unlink(p.c_str());
}

Status checkpoint_save(const std::string& dir, const Model& m, const Optimizer* opt, const ScheduleConfig* sched,
                       const TrainState& st_in, const std::string& health_extra_json, int keep_last,
                       std::string* out_path) {
  BK_TRY(make_dirs(dir));
  TrainState st = st_in;
  st.timestamp = utc_timestamp_iso();
  const std::string path = checkpoint_path_for_step(dir, st.step);
  if (opt) BK_TRY(save_optimizer(checkpoint_optim_path(path), m, *opt, sched, st.step));
  BK_TRY(write_health(checkpoint_health_path(path), m, st, health_extra_json));

  SafeTensorsWriter w;
  for (const ParamInfo& p : m.info) st_writer_add(&w, p.name, ST_F32, param_shape(p), m.params.data() + p.offset);
  w.metadata["format"] = "pt";  // what transformers expects of a PyTorch safetensors file
  w.metadata["bitkd_kind"] = k_model_kind;
  w.metadata["bitkd_version"] = BITKD_VERSION;
  w.metadata["config"] = model_config_to_json(m.cfg);
  w.metadata["step"] = std::to_string(st.step);
  w.metadata["seen_tokens"] = std::to_string(st.seen_tokens);
  w.metadata["flip_state"] = flip_to_json(st.flip);
  w.metadata["data_position"] = st.data_position;
  w.metadata["rng"] = rng_state_to_string(st.rng);
  {
    nlohmann::json l = st.last_loss;  // 17 digits: exact round trip
    w.metadata["last_loss"] = std::isfinite(st.last_loss) ? l.dump() : "null";
  }
  w.metadata["timestamp"] = st.timestamp;
  w.metadata["training_summary"] = st.summary_json.empty() ? "{}" : st.summary_json;
  BK_TRY(safetensors_write(path, w));
  if (out_path) *out_path = path;

  if (keep_last > 0) {
    auto all = checkpoint_list(dir);
    for (size_t i = 0; i + (size_t)keep_last < all.size(); i++) {
      if (all[i].second == path) continue;
      remove_checkpoint(all[i].second);
      BK_LOG_DEBUG("removed old checkpoint %s (KEEP_CHECKPOINTS=%d)", all[i].second.c_str(), keep_last);
    }
  }
  return ok_status();
}

std::vector<std::pair<long, std::string>> checkpoint_list(const std::string& dir) {
  std::vector<std::pair<long, std::string>> out;
  for (const std::string& name : list_files(dir, k_checkpoint_prefix, ".safetensors")) {
    // Exactly <prefix><digits>.safetensors (not .optim.safetensors, not temp files).
    std::string mid = name.substr(strlen(k_checkpoint_prefix),
                                  name.size() - strlen(k_checkpoint_prefix) - strlen(".safetensors"));
    if (mid.empty() || mid.size() > 18 || mid.find_first_not_of("0123456789") != std::string::npos) continue;
    out.push_back({atol(mid.c_str()), path_join(dir, name)});
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string checkpoint_find_latest(const std::string& dir) {
  auto all = checkpoint_list(dir);
  return all.empty() ? "" : all.back().second;
}

static Status meta_get(const SafeTensorsFile& f, const char* key, std::string* out) {
  auto it = f.metadata.find(key);
  if (it == f.metadata.end())
    return errorf("%s: __metadata__ has no \"%s\" (not a bitkd checkpoint, or from an incompatible version)",
                  f.path.c_str(), key);
  *out = it->second;
  return ok_status();
}

static Status meta_i64(const SafeTensorsFile& f, const char* key, long long* out) {
  std::string v;
  BK_TRY(meta_get(f, key, &v));
  char* end = nullptr;
  long long x = strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end) return errorf("%s: metadata \"%s\" = '%s' is not an integer", f.path.c_str(), key, v.c_str());
  *out = x;
  return ok_status();
}

static Status config_from_file(const SafeTensorsFile& f, ModelConfig* cfg) {
  std::string json;
  auto it = f.metadata.find("bitkd_kind");
  if (it != f.metadata.end() && it->second != k_model_kind)
    return errorf("%s: is a %s file, not a model checkpoint (pass the model's .safetensors, not the .optim one)",
                  f.path.c_str(), it->second.c_str());
  if (it == f.metadata.end() || !f.metadata.count("config"))
    return errorf("%s: not a bitkd model checkpoint (its __metadata__ has no bitkd model config)", f.path.c_str());
  BK_TRY(meta_get(f, "config", &json));
  ModelConfig c;
  BK_TRY(with_context(model_config_from_json(json, &c), f.path));
  *cfg = c;
  return ok_status();
}

Status checkpoint_read_config(const std::string& model_path, ModelConfig* cfg) {
  SafeTensorsFile f;
  BK_TRY(safetensors_read(model_path, &f));
  return config_from_file(f, cfg);
}

static Status load_weights_from(const SafeTensorsFile& f, Model* m) {
  for (const ParamInfo& p : m->info) {
    const StTensor* t = safetensors_find(f, p.name);
    if (!t)
      return errorf("%s: tensor '%s' is missing (the file does not match this model config)", f.path.c_str(),
                    p.name.c_str());
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16 && t->dtype != ST_F64)
      return errorf("%s: tensor '%s' has dtype %s; a float type is required", f.path.c_str(), p.name.c_str(),
                    st_dtype_name(t->dtype));
    std::vector<int64_t> want = param_shape(p);
    BK_TRY(safetensors_get_f32(f, p.name, &want, m->params.data() + p.offset, p.numel));
  }
  return ok_status();
}

Status checkpoint_load_weights(const std::string& path, Model* m) {
  SafeTensorsFile f;
  BK_TRY(safetensors_read(path, &f));
  return load_weights_from(f, m);
}

Status checkpoint_load(const std::string& model_path, Model* m, TrainState* st) {
  SafeTensorsFile f;
  BK_TRY(safetensors_read(model_path, &f));
  ModelConfig cfg;
  BK_TRY(config_from_file(f, &cfg));
  Model fresh;
  BK_TRY(with_context(model_build_layout(&fresh, cfg), model_path));
  BK_TRY(load_weights_from(f, &fresh));
  if (st) {
    TrainState s;
    long long v = 0;
    BK_TRY(meta_i64(f, "step", &v));
    s.step = (long)v;
    BK_TRY(meta_i64(f, "seen_tokens", &s.seen_tokens));
    std::string text;
    BK_TRY(meta_get(f, "flip_state", &text));
    try {
      nlohmann::json j = nlohmann::json::parse(text);
      s.flip.flip_done = j.at("flip_done").get<bool>();
      s.flip.current_bits = j.at("current_bits").get<int>();
      s.flip.flip_step = j.at("flip_step").get<long>();
      s.flip.flip_tokens = j.at("flip_tokens").get<long long>();
    } catch (const std::exception& e) {
      return errorf("%s: metadata flip_state is malformed (%s)", model_path.c_str(), e.what());
    }
    BK_TRY(meta_get(f, "data_position", &s.data_position));
    BK_TRY(meta_get(f, "rng", &text));
    if (!rng_state_from_string(text, &s.rng))
      return errorf("%s: metadata rng = '%s' is not a generator state", model_path.c_str(), text.c_str());
    BK_TRY(meta_get(f, "last_loss", &text));
    s.last_loss = text == "null" ? NAN : strtod(text.c_str(), nullptr);
    auto it = f.metadata.find("training_summary");
    s.summary_json = it == f.metadata.end() ? "" : it->second;
    it = f.metadata.find("timestamp");
    s.timestamp = it == f.metadata.end() ? "" : it->second;
    *st = s;
  }
  // Keep any allocated gradients sized to the new layout.
  bool had_grads = !m->grads.empty();
  *m = std::move(fresh);
  if (had_grads) model_alloc_grads(m);
  return ok_status();
}

Status checkpoint_load_optimizer(const std::string& model_path, const Model& m, const AdamWConfig& cfg,
                                 Optimizer* opt, ScheduleConfig* sched) {
  const std::string path = checkpoint_optim_path(model_path);
  if (!file_exists(path))
    return errorf("%s: optimizer state is missing (expected beside %s); cannot resume exactly", path.c_str(),
                  model_path.c_str());
  SafeTensorsFile f;
  BK_TRY(safetensors_read(path, &f));
  auto it = f.metadata.find("bitkd_kind");
  if (it == f.metadata.end() || it->second != k_optim_kind)
    return errorf("%s: not a bitkd optimizer state file", path.c_str());
  long long step = 0;
  BK_TRY(meta_i64(f, "step", &step));
  // The model file's step must agree (a crash between writes would leave a mismatch).
  SafeTensorsFile mf;
  BK_TRY(safetensors_read(model_path, &mf));
  long long mstep = -1;
  BK_TRY(meta_i64(mf, "step", &mstep));
  if (mstep != step)
    return errorf("%s is for step %lld but %s is step %lld", path.c_str(), step, model_path.c_str(), mstep);

  Optimizer o;
  BK_TRY(optimizer_init(&o, cfg, m.info, m.params.size()));
  for (const ParamInfo& p : m.info) {
    std::vector<int64_t> want = param_shape(p);
    BK_TRY(safetensors_get_f32(f, "exp_avg." + p.name, &want, o.m.data() + p.offset, p.numel));
    BK_TRY(safetensors_get_f32(f, "exp_avg_sq." + p.name, &want, o.v.data() + p.offset, p.numel));
  }
  std::string text;
  BK_TRY(meta_get(f, "optimizer", &text));
  try {
    nlohmann::json j = nlohmann::json::parse(text);
    o.step = j.at("step").get<long>();
    o.skipped = j.at("skipped").get<long>();
  } catch (const std::exception& e) {
    return errorf("%s: metadata optimizer is malformed (%s)", path.c_str(), e.what());
  }
  if (sched) {
    auto s = f.metadata.find("scheduler");
    if (s != f.metadata.end()) BK_TRY(with_context(schedule_from_json(s->second, sched), path));
  }
  *opt = std::move(o);
  return ok_status();
}

}  // namespace bk
