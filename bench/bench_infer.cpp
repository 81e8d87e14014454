// Inference session throughput: decode (one token per step over a growing KV
// cache) and batched prefill, float vs packed backend, for a small model
// (dim 256, 4 layers, 4 heads, vocab 8000, ternary A8).
#include <benchmark/benchmark.h>

#include <vector>

#include "model/infer.h"
#include "model/model.h"

namespace {

bk::ModelConfig bench_config() {
  bk::ModelConfig c;
  c.vocab_size = 8000;
  c.dim = 256;
  c.n_layers = 4;
  c.n_heads = 4;
  c.n_kv_heads = 4;
  c.head_dim = 64;
  c.ffn_dim = 704;
  c.max_seq_len = 512;
  c.weight_quant = bk::WQ_TERNARY;
  c.act_bits = 8;
  return c;
}

struct Prepared {
  bk::Model m;
  bk::InferWeights* w = nullptr;
};

// One model per backend, built on first use.
Prepared& prepared(int backend) {
  static Prepared p[2];
  if (!p[backend].w) {
    if (!bk::model_init(&p[backend].m, bench_config(), 1).ok()) abort();
    if (!bk::infer_weights_create(&p[backend].m, (bk::InferBackend)backend, &p[backend].w).ok()) abort();
  }
  return p[backend];
}

// range(0): backend (0 float, 1 packed); range(1): context tokens decoded per iteration.
void BM_infer_decode(benchmark::State& state) {
  Prepared& p = prepared((int)state.range(0));
  const int n = (int)state.range(1);
  bk::InferSession* s = nullptr;
  if (!bk::infer_session_create(p.w, n + 1, &s).ok()) abort();
  int32_t tok = 1;
  for (auto _ : state) {
    bk::infer_session_reset(s);
    for (int i = 0; i < n; i++) {
      if (!bk::infer_session_eval(s, &tok, 1).ok()) abort();
      tok = (tok * 31 + 7) % 8000;
    }
  }
  state.counters["tokens_per_s"] = benchmark::Counter((double)n * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["weight_bytes"] = (double)bk::infer_weights_bytes(p.w);
  state.SetLabel(state.range(0) ? "packed" : "float");
  bk::infer_session_destroy(s);
}
BENCHMARK(BM_infer_decode)->Args({0, 128})->Args({1, 128})->ArgNames({"backend", "tokens"})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

// Prefill of range(1) tokens in one infer_session_eval.
void BM_infer_prefill(benchmark::State& state) {
  Prepared& p = prepared((int)state.range(0));
  const int n = (int)state.range(1);
  bk::InferSession* s = nullptr;
  if (!bk::infer_session_create(p.w, n, &s).ok()) abort();
  std::vector<int32_t> toks(n);
  for (int i = 0; i < n; i++) toks[i] = (i * 37 + 11) % 8000;
  for (auto _ : state) {
    bk::infer_session_reset(s);
    if (!bk::infer_session_eval(s, toks.data(), n).ok()) abort();
  }
  state.counters["tokens_per_s"] = benchmark::Counter((double)n * state.iterations(), benchmark::Counter::kIsRate);
  state.SetLabel(state.range(0) ? "packed" : "float");
  bk::infer_session_destroy(s);
}
BENCHMARK(BM_infer_prefill)->Args({0, 128})->Args({1, 128})->ArgNames({"backend", "tokens"})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
