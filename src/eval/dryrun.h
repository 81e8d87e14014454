#pragma once
// The 7B dry run (`bitkd dryrun`): a forward-only memory and speed test of a
// large BitNet config with deterministic synthetic weights generated straight
// into the packed layout (model/infer_synthetic.h), run through the packed
// inference engine twice: at the start activation bits (A8) and after the
// flip (A4), each followed by a timed decode of single tokens. Reports
// parameters, bytes per component, bits per weight, peak RSS, forward and
// decode times and the A8/A4 agreement (top-1, cosine of logits).
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "kernels/cpu/ternary.h"
#include "model/infer_synthetic.h"
#include "model/model.h"

namespace bk {

// The PoC's DRYRUN_* request plus bitkd's choices.
struct DryRunRequest {
  std::string preset = "poc";  // "poc" (ffn 4*dim) or "llama2-7b" (8/3*dim rounded up to 256: 11008 at 4096)
  int dim = 4096, n_layers = 32, n_heads = 32, head_dim = 128;
  int ffn_dim = 0;             // 0: from the preset
  int vocab = 32000;
  std::string vocab_source = "default 32000";
  int seq_len = 64, batch = 1;
  int decode_tokens = 16;      // single-token steps after the last row's prefill (KV cache); 0: none
  int act_bits_start = 8, act_bits_after = 4;
  A4Scope a4_scope = A4_HYBRID;
  TernaryType layout = TERNARY_I2;
  RowType embed_type = ROWS_Q8_0;  // embedding and head rows (rows.h)
  bool tie_embeddings = false;  // Llama: untied head
  uint64_t seed = 1234;
  // Accepted for compatibility with the PoC, reported, no effect on CPU.
  std::string allow_downgrade = "1", force_cpu = "0", max_alloc_frac = "0.85";
};

// FFN width of a preset (ffn_dim 0): poc 4*dim, llama2-7b 8/3*dim rounded up to 256.
Status dryrun_ffn_dim(const std::string& preset, int dim, int* ffn);
// The ModelConfig the run uses (validated; errors name the DRYRUN_* variable).
Status dryrun_model_config(const DryRunRequest& r, ModelConfig* out);

struct DryRunForward {
  std::string name;  // "A8_forward", "A4_forward"
  int act_bits = 8;
  double time_s = 0;           // all batch rows, prefill of seq_len tokens each
  double tokens_per_s = 0;
  double cpu_s = 0;             // process CPU time of the timed run (all threads)
  double warmup_s = 0;          // one-token forward before the timed run (not in time_s)
  int64_t rss_after_bytes = 0;  // VmRSS right after
  int64_t peak_rss_bytes = 0;   // VmHWM right after
  double logit_rms = 0;         // sanity: finite, non-degenerate logits
  bool finite = true;
  // Decode: decode_tokens single-token steps after the last row's prefill,
  // each appended to the KV cache (fixed tokens; not in time_s).
  int decode_tokens = 0;
  double decode_s = 0, decode_tokens_per_s = 0;
};

struct DryRunResult {
  ModelConfig cfg;
  InferWeightBytes bytes;
  int64_t params = 0;               // every parameter of the config
  double weight_gen_s = 0;          // generating the synthetic packed weights
  double weight_gen_cpu_s = 0;      // its process CPU time
  int64_t rss_after_weights_bytes = 0;
  std::vector<DryRunForward> runs;  // [A8, A4]
  // A8 vs A4 over every (batch row, position).
  double top1_agreement = 0;
  double cosine_mean = 0, cosine_min = 0;
  int64_t positions = 0;
  int64_t peak_rss_bytes = 0;       // whole process, end of run
  int threads = 1;
  std::string kernels;              // "avx2" or "scalar"
};

// Runs the dry run. The logits of both forwards are kept only for the
// agreement ([batch, seq, vocab] floats each).
Status dryrun_run(const DryRunRequest& req, DryRunResult* out);

// reports/dryrun_7b.json: the PoC's fields (config_requested, config_used,
// params{count, ...}, runs[{name, time_s, shape, memory{after_gb, peak_gb}}])
// plus peak_rss_bytes, bytes per component, bits per weight, agreement and
// the fp16 size of the same parameters.
std::string dryrun_report_json(const DryRunRequest& req, const DryRunResult& res, const std::string& timestamp);

// Deterministic input tokens of batch row b ([seq_len] ids in [0, vocab)).
std::vector<int32_t> dryrun_tokens(uint64_t seed, int b, int seq_len, int vocab);

}  // namespace bk
