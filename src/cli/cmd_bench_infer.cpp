// bitkd bench infer: prefill and decode tokens/s of one model through the
// packed ternary engine and the fp32 (unpacked) engine, side by side in one
// run, as one JSON object.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "cli/machine_json.h"
#include "cli/train_flags.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/timing.h"
#include "kernels/cpu/bandwidth.h"
#include "kernels/cpu/ternary.h"
#include "model/infer.h"
#include "model/gguf_model.h"
#include "model/infer_synthetic.h"
#include "train/model_load.h"

namespace bk {

namespace {

using json = nlohmann::ordered_json;

struct Timing {
  std::vector<double> prefill_tps, decode_tps;
  int top1 = -1;  // argmax after the prefill (same for both engines?)
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// One repetition: prefill `prompt` tokens, then `decode` single-token steps
// (fixed tokens, so both engines do identical work; no sampling).
Status time_once(InferSession* s, const std::vector<int32_t>& toks, int prompt, int decode, Timing* t) {
  infer_session_reset(s);
  double t0 = now_seconds();
  BK_TRY(infer_session_eval(s, toks.data(), prompt));
  double t1 = now_seconds();
  const float* lg = infer_session_logits(s);
  const int V = infer_session_vocab(s);
  int arg = 0;
  for (int v = 1; v < V; v++)
    if (lg[v] > lg[arg]) arg = v;
  t->top1 = arg;
  for (int i = 0; i < decode; i++) BK_TRY(infer_session_eval(s, &toks[prompt + i], 1));
  double t2 = now_seconds();
  t->prefill_tps.push_back(prompt / (t1 - t0));
  if (decode > 0) t->decode_tps.push_back(decode / (t2 - t1));
  return ok_status();
}

// What decode reads per token against the measured read bandwidth: 1.0
// means decode runs at the memory's speed.
json decode_bytes_json(const InferWeights* w, double context, double decode_tps, double bandwidth_gbs) {
  DecodeBytes d;
  infer_decode_bytes(w, context, &d);
  const double gbs = d.total * decode_tps / 1e9;
  return json{{"total", d.total},
              {"weights", d.weights},
              {"embedding_row", d.embedding_row},
              {"head", d.head},
              {"kv_cache", d.kv_cache},
              {"mean_context", context},
              {"decode_read_GB_per_s", gbs},
              {"fraction_of_read_bandwidth", bandwidth_gbs > 0 ? json(gbs / bandwidth_gbs) : json(nullptr)}};
}

json engine_json(const InferWeights* w, const Timing& t, double context, double bandwidth_gbs) {
  InferWeightBytes b;
  infer_weights_bytes_by_component(w, &b);
  return json{{"prefill_tokens_per_s", median(t.prefill_tps)},
              {"decode_tokens_per_s", median(t.decode_tps)},
              {"prefill_runs", t.prefill_tps},
              {"decode_runs", t.decode_tps},
              {"weight_bytes", b.total},
              {"weight_bytes_by_component",
               {{"embeddings", b.embeddings}, {"norms", b.norms}, {"projections", b.projections}, {"head", b.head}}},
              {"projection_format", b.projection_format},
              {"embedding_type", b.embedding_dtype},
              {"projection_bits_per_weight", b.projection_bits_per_weight},
              {"decode_bytes_per_token", decode_bytes_json(w, context, median(t.decode_tps), bandwidth_gbs)}};
}

// Parameters of packed weights built without a float model.
int64_t packed_params(const InferWeights* w) {
  InferWeightBytes b;
  infer_weights_bytes_by_component(w, &b);
  return b.embedding_params + b.norm_params + b.projection_params + b.head_params;
}

}  // namespace

static int run_bench_infer(Args& a) {
  long long prompt = 0, decode = 0, reps = 0, seed = 0;
  if (!arg_int_or_report(a, "prompt", &prompt) || !arg_int_or_report(a, "decode", &decode) ||
      !arg_int_or_report(a, "reps", &reps) || !arg_int_or_report(a, "SEED", &seed))
    return 2;
  if (prompt < 1 || decode < 0 || reps < 1)
    return cli_fail(a, errorf("--prompt must be >= 1, --decode >= 0 and --reps >= 1"));

  std::string model_path = arg_str(a, "model");
  const std::string embed = arg_str(a, "embed");
  RowType embed_type = ROWS_F32;
  if (embed != "auto") {
    Status st = row_type_from_name(embed, &embed_type);
    if (!st.ok()) return cli_fail(a, with_context(st, "--embed (or auto)"));
  }
  bool packed_only = false;
  if (Status st = arg_bool(a, "packed-only", &packed_only); !st.ok()) return cli_fail(a, st);
  InferWeights* packed = nullptr;
  InferWeights* fp32 = nullptr;
  std::string packed_reason;
  ModelConfig cfg;
  int64_t params = 0;
  if (packed_only && !model_path.empty() && file_is_gguf(model_path)) {
    // The file's blocks straight into the packed layout: no float model.
    GgufLoadInfo info;
    Status st = gguf_load_packed(model_path, &packed, &info);
    if (!st.ok()) return cli_fail(a, st);
    if (embed != "auto" && embed_type != info.embed_type)
      BK_LOG_WARN("--embed %s ignored: a GGUF loaded straight into the packed engine keeps its own type (%s)",
                  embed.c_str(), row_type_name(info.embed_type));
    cfg = infer_weights_config(packed);
    params = packed_params(packed);
  } else if (packed_only && model_path.empty()) {
    // Random weights generated straight into the packed layout: no float
    // model, so shapes whose fp32 copy would not fit (7B) can be timed.
    SyntheticWeightsOptions so;
    Status st = model_config_from_args(a, 32000, (int)(prompt + decode), &so.cfg);
    if (!st.ok()) return cli_fail(a, st);
    so.seed = (uint64_t)seed;
    so.embed_type = embed == "auto" ? ROWS_BF16 : embed_type;
    const std::string layout = arg_str(a, "layout");
    if (layout != "i2" && layout != "t1")
      return cli_fail(a, errorf("--layout '%s' is unknown: use i2 (2 bits/weight) or t1 (1.6)", layout.c_str()));
    so.layout = layout == "t1" ? TERNARY_T1 : TERNARY_I2;
    st = infer_weights_create_synthetic(so, &packed);
    if (!st.ok()) return cli_fail(a, st);
    cfg = so.cfg;
    params = packed_params(packed);
  } else {
    Model m;
    Status st;
    if (!model_path.empty()) {
      ModelSource src;
      st = model_load_any(model_path, &m, &src);
      if (!st.ok()) return cli_fail(a, st);
      if (embed == "auto") embed_type = src.embed_type;
    } else {
      ModelConfig c;
      st = model_config_from_args(a, 32000, (int)(prompt + decode), &c);
      if (!st.ok()) return cli_fail(a, st);
      st = model_init(&m, c, (uint64_t)seed);
      if (!st.ok()) return cli_fail(a, st);
    }
    cfg = m.cfg;
    params = (int64_t)model_num_params(m);
    if (prompt + decode > cfg.max_seq_len)
      BK_LOG_WARN("--prompt + --decode = %lld exceeds the model's max_seq_len %d (timed anyway)", prompt + decode,
                  cfg.max_seq_len);
    if (!packed_only) {
      st = infer_weights_create(&m, INFER_FLOAT, &fp32);
      if (!st.ok()) return cli_fail(a, st);
    }
    st = infer_weights_create(&m, INFER_PACKED, &packed, embed_type);
    if (!st.ok()) {
      if (packed_only) return cli_fail(a, st);
      packed = nullptr;
      packed_reason = st.msg;
      BK_LOG_WARN("no packed engine for this model: %s", st.msg.c_str());
    }
  }
  struct Guard {
    InferWeights *a, *b;
    ~Guard() {
      infer_weights_destroy(a);
      infer_weights_destroy(b);
    }
  } guard{packed, fp32};

  const int ctx = (int)(prompt + decode);
  std::vector<int32_t> toks(ctx);
  Rng r;
  rng_seed(&r, (uint64_t)seed + 99);
  for (int32_t& x : toks) x = (int32_t)rng_below(&r, (uint64_t)cfg.vocab_size);
  InferSession *sp = nullptr, *sf = nullptr;
  Status st;
  if (fp32) st = infer_session_create(fp32, ctx, &sf);
  if (!st.ok()) return cli_fail(a, st);
  if (packed) {
    st = infer_session_create(packed, ctx, &sp);
    if (!st.ok()) return cli_fail(a, st);
  }
  Timing tp, tf;
  // Warm-up (page faults, thread pool), then interleaved repetitions so both
  // engines see the same machine load.
  Timing warm;
  if (sp) st = time_once(sp, toks, (int)prompt, (int)std::min<long long>(decode, 4), &warm);
  if (st.ok() && sf) st = time_once(sf, toks, (int)prompt, (int)std::min<long long>(decode, 4), &warm);
  for (long long i = 0; i < reps && st.ok(); i++) {
    if (sp) st = time_once(sp, toks, (int)prompt, (int)decode, &tp);
    if (st.ok() && sf) st = time_once(sf, toks, (int)prompt, (int)decode, &tf);
  }
  if (sp) infer_session_destroy(sp);
  if (sf) infer_session_destroy(sf);
  if (!st.ok()) return cli_fail(a, st);
  // The ceiling decode is measured against, on the same threads, right after.
  const MeasuredBandwidth bw = measure_read_bandwidth(omp_get_max_threads());
  // Decode step i attends prompt + i + 1 positions.
  const double context = decode > 0 ? prompt + (decode + 1) / 2.0 : 0.0;

  json j;
  j["bench"] = "infer";
  j["machine"] = machine_json();
  j["threads"] = omp_get_max_threads();
  j["read_bandwidth"] = {{"GB_per_s", bw.gb_per_s}, {"best_GB_per_s", bw.best_gb_per_s},
                         {"buffer_bytes", bw.buffer_bytes}, {"method", bw.method}};
  json cj = json::parse(model_config_to_json(cfg), nullptr, false);
  j["config"] = cj.is_discarded() ? json(nullptr) : cj;
  j["params"] = params;
  j["model"] = model_path.empty() ? "random weights (seed " + std::to_string(seed) + ")" : model_path;
  j["prompt_tokens"] = prompt;
  j["decode_tokens"] = decode;
  j["reps"] = reps;
  j["fp32"] = nullptr;  // --packed-only
  if (fp32) {
    j["fp32"] = engine_json(fp32, tf, context, bw.gb_per_s);
    j["fp32"]["engine"] = cfg.weight_quant == WQ_TERNARY ? "fp32 weights, fake-quant activations (unpacked)" : "fp32";
  }
  j["packed"] = nullptr;
  j["ratios"] = nullptr;
  if (packed) {
    j["packed"] = engine_json(packed, tp, context, bw.gb_per_s);
    j["packed"]["engine"] = std::string("packed ternary, int") + std::to_string(cfg.act_bits) + " activations";
  } else {
    j["packed_reason"] = packed_reason;
  }
  if (packed && fp32) {
    const double pd = j["packed"]["decode_tokens_per_s"], fd = j["fp32"]["decode_tokens_per_s"];
    const double pp = j["packed"]["prefill_tokens_per_s"], fp = j["fp32"]["prefill_tokens_per_s"];
    j["ratios"] = {{"decode_packed_over_fp32", fd > 0 ? json(pd / fd) : json(nullptr)},
                   {"prefill_packed_over_fp32", fp > 0 ? json(pp / fp) : json(nullptr)},
                   {"weight_bytes_fp32_over_packed",
                    (double)infer_weights_bytes(fp32) / std::max<size_t>(1, infer_weights_bytes(packed))}};
    j["top1_after_prefill_equal"] = tp.top1 == tf.top1;
  }
  j["note"] = "median of --reps interleaved runs (packed, then fp32, each rep); decode = single-token forwards with "
              "a KV cache after a --prompt-token prefill, no sampling";
  std::string text = j.dump(2) + "\n";
  std::string out = arg_str(a, "out");
  if (!out.empty()) {
    st = write_file_atomic(out, text);
    if (!st.ok()) return cli_fail(a, st);
  }
  fputs(text.c_str(), stdout);
  return 0;
}

const Command& command_bench_infer() {
  static const Command c = [] {
    Command cmd = {
        "bench infer",
        "Prefill/decode tokens/s of a model, packed ternary vs fp32, side by side (JSON)",
        "Times one model (--model: .safetensors/.gguf, else random weights of the given shape) through the\n"
        "packed engine (2-bit ternary weights, integer kernels) and the fp32 engine (unpacked weights), in\n"
        "interleaved repetitions. Prints one JSON object: machine, threads, config, packed.* and fp32.*\n"
        "(prefill_tokens_per_s, decode_tokens_per_s, weight_bytes) and their ratios. --packed-only times the\n"
        "packed engine alone.",
        model_flags_bench(),
        run_bench_infer,
    };
    cmd.flags.push_back({"model", nullptr, "", "Model file (.safetensors or .gguf); empty: random weights"});
    cmd.flags.push_back({"prompt", nullptr, "128", "Prefill tokens"});
    cmd.flags.push_back({"decode", nullptr, "64", "Decode steps after the prefill"});
    cmd.flags.push_back({"reps", nullptr, "3", "Repetitions per engine (median reported)"});
    cmd.flags.push_back({"out", nullptr, "", "Also write the JSON here"});
    cmd.flags.push_back({"embed", nullptr, "auto",
                         "Packed engine's embedding/head type: f32, f16, bf16, q8_0, or auto (a GGUF's own type; f32 "
                         "for checkpoints and random weights, bf16 with --packed-only)"});
    cmd.flags.push_back({"layout", nullptr, "i2",
                         "Projection layout of --packed-only random weights: i2 (2 bits/weight) or t1 (1.6 bits, "
                         "5 trits per byte)"});
    cmd.flags.push_back({"packed-only", nullptr, "",
                         "Time the packed engine alone, with no float model: a .gguf's TQ2_0 blocks are copied "
                         "straight into the packed layout, random weights generated into it, so 7B shapes fit",
                         true});
    return cmd;
  }();
  return c;
}

}  // namespace bk
