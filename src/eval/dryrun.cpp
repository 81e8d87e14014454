// The dry run (eval/dryrun.h).
#include "eval/dryrun.h"

#include <omp.h>
#include <time.h>

#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/log.h"
#include "core/rng.h"
#include "core/timing.h"
#include "core/version.h"
#include "model/infer.h"

namespace bk {

using json = nlohmann::ordered_json;

Status dryrun_ffn_dim(const std::string& preset, int dim, int* ffn) {
  if (preset == "poc") {
    *ffn = 4 * dim;
  } else if (preset == "llama2-7b") {
    // Llama's rule: 2/3 of 4*dim, rounded up to a multiple of 256.
    int h = (int)((int64_t)8 * dim / 3);
    *ffn = (h + 255) / 256 * 256;
  } else {
    return errorf("DRYRUN_PRESET=%s: use poc (ffn 4*dim) or llama2-7b (ffn 11008 at dim 4096)", preset.c_str());
  }
  return ok_status();
}

Status dryrun_model_config(const DryRunRequest& r, ModelConfig* out) {
  ModelConfig c;
  if (r.dim <= 0) return errorf("DRYRUN_DIM=%d must be positive", r.dim);
  if (r.n_layers <= 0) return errorf("DRYRUN_LAYERS=%d must be positive", r.n_layers);
  if (r.n_heads <= 0) return errorf("DRYRUN_HEADS=%d must be positive", r.n_heads);
  if (r.head_dim <= 0 || r.head_dim % 2) return errorf("DRYRUN_HEAD_DIM=%d must be positive and even", r.head_dim);
  if ((int64_t)r.n_heads * r.head_dim != r.dim)
    return errorf("DRYRUN_HEADS=%d x DRYRUN_HEAD_DIM=%d = %lld, but DRYRUN_DIM=%d: heads x head_dim must equal dim",
                  r.n_heads, r.head_dim, (long long)r.n_heads * r.head_dim, r.dim);
  if (r.vocab <= 1) return errorf("DRYRUN_VOCAB=%d must be at least 2", r.vocab);
  if (r.seq_len <= 0) return errorf("DRYRUN_SEQ_LEN=%d must be positive", r.seq_len);
  if (r.batch <= 0) return errorf("DRYRUN_BATCH_SIZE=%d must be positive", r.batch);
  for (int b : {r.act_bits_start, r.act_bits_after})
    if (b != 8 && b != 4)
      return errorf("DRYRUN_ACT_BITS_START/AFTER=%d: the packed engine runs 8- or 4-bit activations", b);
  c.vocab_size = r.vocab;
  c.dim = r.dim;
  c.n_layers = r.n_layers;
  c.n_heads = r.n_heads;
  c.n_kv_heads = r.n_heads;
  c.head_dim = r.head_dim;
  if (r.ffn_dim > 0) c.ffn_dim = r.ffn_dim;
  else BK_TRY(dryrun_ffn_dim(r.preset, r.dim, &c.ffn_dim));
  c.ffn_act = FFN_SWIGLU;
  c.max_seq_len = r.seq_len;
  c.tie_embeddings = r.tie_embeddings;
  c.subln = true;
  c.weight_quant = WQ_TERNARY;
  c.act_bits = r.act_bits_start;
  c.a4_scope = r.a4_scope;
  BK_TRY(with_context(model_config_validate(c), "dry-run config"));
  *out = c;
  return ok_status();
}

std::vector<int32_t> dryrun_tokens(uint64_t seed, int b, int seq_len, int vocab) {
  Rng r;
  rng_seed(&r, seed * 1000003ull + 17 + (uint64_t)b);
  std::vector<int32_t> t(seq_len);
  for (int32_t& x : t) x = (int32_t)rng_below(&r, (uint64_t)vocab);
  return t;
}

namespace {

// CPU seconds of the whole process (all threads): next to wall time it shows
// how much a loaded machine stretched the run.
double process_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int64_t count_params(const ModelConfig& c) {
  const int64_t D = c.dim, Q = (int64_t)c.n_heads * c.head_dim, K = (int64_t)c.n_kv_heads * c.head_dim,
                F = c.ffn_dim, V = c.vocab_size;
  int64_t per_layer = D * Q + 2 * D * K + Q * D + (c.ffn_act == FFN_SWIGLU ? 2 : 1) * D * F + F * D;
  per_layer += D + D + (c.subln ? Q + F : 0);
  return V * D * (c.tie_embeddings ? 1 : 2) + D + per_layer * c.n_layers;
}

Status forward_all(InferWeights* w, const DryRunRequest& req, int bits, std::vector<float>* logits,
                   DryRunForward* run) {
  const ModelConfig& c = infer_weights_config(w);
  BK_TRY(infer_weights_set_act_bits(w, bits, req.a4_scope));
  InferSession* s = nullptr;
  BK_TRY(infer_session_create(w, req.seq_len + std::max(0, req.decode_tokens), &s));
  std::unique_ptr<InferSession, void (*)(InferSession*)> guard(s, infer_session_destroy);
  const size_t per_row = (size_t)req.seq_len * c.vocab_size;
  logits->assign(per_row * req.batch, 0.0f);
  // One token first: thread pools and first-touch costs stay out of time_s.
  {
    std::vector<int32_t> one = dryrun_tokens(req.seed, 0, 1, c.vocab_size);
    double w0 = now_seconds();
    BK_TRY(infer_session_eval(s, one.data(), 1));
    run->warmup_s = now_seconds() - w0;
  }
  double t0 = now_seconds(), c0 = process_cpu_seconds();
  for (int b = 0; b < req.batch; b++) {
    std::vector<int32_t> toks = dryrun_tokens(req.seed, b, req.seq_len, c.vocab_size);
    infer_session_reset(s);
    BK_TRY(infer_session_eval_all(s, toks.data(), req.seq_len, logits->data() + per_row * b));
  }
  run->time_s = now_seconds() - t0;
  run->cpu_s = process_cpu_seconds() - c0;
  run->act_bits = bits;
  run->tokens_per_s = run->time_s > 0 ? (double)req.seq_len * req.batch / run->time_s : 0;
  // Decode after the last row: what a user waits for per generated token.
  if (req.decode_tokens > 0) {
    std::vector<int32_t> next = dryrun_tokens(req.seed, req.batch, req.decode_tokens, c.vocab_size);
    const double d0 = now_seconds();
    for (int i = 0; i < req.decode_tokens; i++) BK_TRY(infer_session_eval(s, &next[i], 1));
    run->decode_tokens = req.decode_tokens;
    run->decode_s = now_seconds() - d0;
    run->decode_tokens_per_s = run->decode_s > 0 ? req.decode_tokens / run->decode_s : 0;
  }
  run->rss_after_bytes = current_rss_bytes();
  run->peak_rss_bytes = peak_rss_bytes();
  double ss = 0;
  bool finite = true;
  for (float v : *logits) {
    finite = finite && std::isfinite(v);
    ss += (double)v * v;
  }
  run->finite = finite;
  run->logit_rms = logits->empty() ? 0 : std::sqrt(ss / logits->size());
  return ok_status();
}

}  // namespace

Status dryrun_run(const DryRunRequest& req, DryRunResult* out) {
  *out = DryRunResult();
  BK_TRY(dryrun_model_config(req, &out->cfg));
  const ModelConfig& c = out->cfg;
  out->params = count_params(c);
  out->threads = omp_get_max_threads();
  out->kernels = ternary_backend();

  SyntheticWeightsOptions so;
  so.cfg = c;
  so.layout = req.layout;
  so.embed_type = req.embed_type;
  so.seed = req.seed;
  InferWeights* w = nullptr;
  BK_LOG_INFO("dryrun: generating %.2fB synthetic parameters into the packed layout", out->params / 1e9);
  double t0 = now_seconds(), c0 = process_cpu_seconds();
  BK_TRY(infer_weights_create_synthetic(so, &w));
  std::unique_ptr<InferWeights, void (*)(InferWeights*)> guard(w, infer_weights_destroy);
  out->weight_gen_s = now_seconds() - t0;
  out->weight_gen_cpu_s = process_cpu_seconds() - c0;
  out->rss_after_weights_bytes = current_rss_bytes();
  infer_weights_bytes_by_component(w, &out->bytes);
  BK_LOG_INFO("dryrun: weights %.3f GB in %.1f s (projections %.3f bits/weight)", out->bytes.total / 1e9,
              out->weight_gen_s, out->bytes.projection_bits_per_weight);

  std::vector<float> la, lb;
  DryRunForward a, b;
  a.name = "A" + std::to_string(req.act_bits_start) + "_forward";
  b.name = "A" + std::to_string(req.act_bits_after) + "_forward";
  BK_TRY(with_context(forward_all(w, req, req.act_bits_start, &la, &a), a.name));
  BK_LOG_INFO("dryrun: %s %.2f s", a.name.c_str(), a.time_s);
  BK_TRY(with_context(forward_all(w, req, req.act_bits_after, &lb, &b), b.name));
  BK_LOG_INFO("dryrun: %s %.2f s", b.name.c_str(), b.time_s);
  out->runs = {a, b};

  const int V = c.vocab_size;
  const int64_t n = (int64_t)req.batch * req.seq_len;
  int64_t agree = 0;
  double cos_sum = 0, cos_min = 1;
  for (int64_t i = 0; i < n; i++) {
    const float* x = la.data() + i * V;
    const float* y = lb.data() + i * V;
    int ax = 0, ay = 0;
    double xy = 0, xx = 0, yy = 0;
    for (int v = 0; v < V; v++) {
      if (x[v] > x[ax]) ax = v;
      if (y[v] > y[ay]) ay = v;
      xy += (double)x[v] * y[v];
      xx += (double)x[v] * x[v];
      yy += (double)y[v] * y[v];
    }
    agree += ax == ay;
    double cs = xx > 0 && yy > 0 ? xy / std::sqrt(xx * yy) : 0;
    cos_sum += cs;
    cos_min = std::min(cos_min, cs);
  }
  out->positions = n;
  out->top1_agreement = n ? (double)agree / n : 0;
  out->cosine_mean = n ? cos_sum / n : 0;
  out->cosine_min = n ? cos_min : 0;
  out->peak_rss_bytes = peak_rss_bytes();
  return ok_status();
}

std::string dryrun_report_json(const DryRunRequest& req, const DryRunResult& res, const std::string& timestamp) {
  const ModelConfig& c = res.cfg;
  const double GB = 1e9, GiB = 1024.0 * 1024.0 * 1024.0;
  json j = json::object();
  j["timestamp"] = timestamp;
  json rq;
  rq["preset"] = req.preset;
  rq["dim"] = req.dim;
  rq["n_layers"] = req.n_layers;
  rq["n_heads"] = req.n_heads;
  rq["head_dim"] = req.head_dim;
  rq["ffn_dim"] = req.ffn_dim > 0 ? json(req.ffn_dim) : json("preset");
  rq["vocab_size"] = req.vocab;
  rq["seq_len"] = req.seq_len;
  rq["batch_size"] = req.batch;
  rq["decode_tokens"] = req.decode_tokens;
  rq["act_bits_start"] = req.act_bits_start;
  rq["act_bits_after"] = req.act_bits_after;
  rq["allow_downgrade"] = req.allow_downgrade;
  rq["force_cpu"] = req.force_cpu;
  rq["max_alloc_frac"] = req.max_alloc_frac;
  j["config_requested"] = rq;

  json cu = json::parse(model_config_to_json(c), nullptr, false);
  if (!cu.is_object()) cu = json::object();
  cu["seq_len"] = req.seq_len;
  cu["batch_size"] = req.batch;
  cu["vocab_source"] = req.vocab_source;
  cu["a4_scope"] = a4_scope_name(req.a4_scope);
  cu["weight_layout"] = res.bytes.projection_format;
  cu["embedding_dtype"] = res.bytes.embedding_dtype;
  cu["weights"] = "synthetic, seed " + std::to_string(req.seed) +
                  ": ternary codes drawn per row straight into the packed layout (P(0) = 1/2), " +
                  row_type_name(req.embed_type) + " embedding/head";
  cu["device"] = "cpu";
  cu["threads"] = res.threads;
  cu["kernels"] = res.kernels;
  cu["downgraded"] = false;
  j["config_used"] = cu;

  const InferWeightBytes& b = res.bytes;
  json p;
  p["count"] = res.params;
  p["embeddings"] = b.embedding_params;
  p["ternary_projections"] = b.projection_params;
  p["norms"] = b.norm_params;
  p["head"] = b.head_params;
  p["head_tied"] = b.head_tied;
  p["billions"] = res.params / 1e9;
  j["params"] = p;

  json by;
  by["embeddings"] = b.embeddings;
  by["ternary_projections"] = b.projections;
  by["norms"] = b.norms;
  by["head"] = b.head;
  by["total"] = b.total;
  j["weight_bytes"] = by;
  json bpw;
  bpw["ternary_projections"] = b.projection_bits_per_weight;
  bpw["all_parameters"] = res.params ? b.total * 8.0 / res.params : 0;
  bpw["note"] = "bytes x 8 / weights; projections include row padding and the per-tensor gamma";
  j["bits_per_weight"] = bpw;
  json f16;
  f16["bytes"] = res.params * 2;
  f16["gb"] = res.params * 2 / GB;
  f16["packed_over_fp16"] = res.params ? b.total / (res.params * 2.0) : 0;
  f16["peak_rss_over_fp16"] = res.params ? res.peak_rss_bytes / (res.params * 2.0) : 0;
  j["fp16_weights"] = f16;

  json runs = json::array();
  for (const DryRunForward& r : res.runs) {
    json e;
    e["name"] = r.name;
    e["act_bits"] = r.act_bits;
    e["time_s"] = r.time_s;
    e["tokens_per_s"] = r.tokens_per_s;
    e["warmup_s"] = r.warmup_s;
    e["cpu_s"] = r.cpu_s;
    e["shape"] = {req.batch, req.seq_len, c.vocab_size};
    e["decode"] = {{"tokens", r.decode_tokens},
                   {"time_s", r.decode_s},
                   {"tokens_per_s", r.decode_tokens_per_s},
                   {"note", "single-token steps with the KV cache after the last row's prefill"}};
    json m;
    m["after_gb"] = r.rss_after_bytes / GB;
    m["peak_gb"] = r.peak_rss_bytes / GB;
    m["after_bytes"] = r.rss_after_bytes;
    m["peak_bytes"] = r.peak_rss_bytes;
    m["kind"] = "process RSS (VmRSS after the forward, VmHWM so far); GB = 1e9 bytes";
    e["memory"] = m;
    e["logits_finite"] = r.finite;
    e["logit_rms"] = r.logit_rms;
    runs.push_back(e);
  }
  j["runs"] = runs;

  json ag;
  ag["top1"] = res.top1_agreement;
  ag["cosine_mean"] = res.cosine_mean;
  ag["cosine_min"] = res.cosine_min;
  ag["positions"] = res.positions;
  ag["compared"] = res.runs.size() == 2 ? res.runs[0].name + " vs " + res.runs[1].name : "";
  j["agreement"] = ag;

  j["weight_generation_s"] = res.weight_gen_s;
  j["weight_generation_cpu_s"] = res.weight_gen_cpu_s;
  j["rss_after_weights_bytes"] = res.rss_after_weights_bytes;
  j["peak_rss_bytes"] = res.peak_rss_bytes;
  j["peak_rss_gib"] = res.peak_rss_bytes / GiB;
  j["bitkd_version"] = BITKD_VERSION;
  return j.dump(2) + "\n";
}

}  // namespace bk
