// Packed ternary matmul (I2: 2 bits/weight, T1: 1.6 bits/weight, int8
// activations) against fp32 OpenBLAS sgemv/sgemm on the same shapes.
//
//   decode:  T = 1 (memory bound: bytes/s of weights is the figure of merit)
//   prefill: T = 64
//   stack:   a whole decoder's projections at T = 1 (dim 1024, 12 layers,
//            ffn 4096), and a side-by-side comparison with the speedup.
// Shapes are [out, in]. The ternary timings include quantizing the
// activations, as a real forward pass must.
#include <benchmark/benchmark.h>
#include <cblas.h>
#include <omp.h>

#include <time.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "core/rng.h"
#include "kernels/cpu/ternary.h"

namespace {

using namespace bk;

struct Weights {
  int rows = 0, cols = 0;
  std::vector<float> f32;  // [rows, cols]
  TernaryMatrix i2, t1;
};

void fill_uniform(Rng* r, float* p, int64_t n, float scale) {
  for (int64_t i = 0; i < n; i++) p[i] = scale * (2.0f * rng_uniform(r) - 1.0f);
}

// Built once per shape and reused by every benchmark that needs it.
const Weights& weights(int rows, int cols, int salt = 0) {
  static std::map<std::tuple<int, int, int>, std::unique_ptr<Weights>> cache;
  auto& slot = cache[{rows, cols, salt}];
  if (!slot) {
    slot = std::make_unique<Weights>();
    slot->rows = rows;
    slot->cols = cols;
    slot->f32.resize((size_t)rows * cols);
    Rng r;
    rng_seed(&r, 1000003ull * rows + cols + 7919ull * salt);
    fill_uniform(&r, slot->f32.data(), (int64_t)rows * cols, 0.05f);
    if (!pack_ternary_f32(TERNARY_I2, slot->f32.data(), rows, cols, &slot->i2).ok() ||
        !pack_ternary_f32(TERNARY_T1, slot->f32.data(), rows, cols, &slot->t1).ok())
      std::abort();
  }
  return *slot;
}

std::vector<float> input(int tokens, int cols) {
  std::vector<float> x((size_t)tokens * cols);
  Rng r;
  rng_seed(&r, 42);
  fill_uniform(&r, x.data(), (int64_t)x.size(), 1.0f);
  return x;
}

// One machine-description line in the JSON/console context.
struct Context {
  Context() {
    benchmark::AddCustomContext("omp_threads", std::to_string(omp_get_max_threads()));
    benchmark::AddCustomContext("ternary_backend", ternary_backend());
    benchmark::AddCustomContext("openblas", openblas_get_config());
  }
} context_once;

void f32_matmul(const Weights& w, const float* x, int tokens, float* y) {
  if (tokens == 1)
    cblas_sgemv(CblasRowMajor, CblasNoTrans, w.rows, w.cols, 1.0f, w.f32.data(), w.cols, x, 1, 0.0f, y, 1);
  else  // y [T, rows] = x [T, cols] * W^T
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, tokens, w.rows, w.cols, 1.0f, x, w.cols, w.f32.data(),
                w.cols, 0.0f, y, w.rows);
}

void packed_matmul(const TernaryMatrix& w, const float* x, int tokens, ActQuant* a, float* y) {
  if (!quantize_acts(x, tokens, w.cols, w.cols_pad, 8, a).ok() || !ternary_matmul(w, *a, y).ok()) std::abort();
}

enum Kind { F32 = 0, I2 = 1, T1 = 2 };

const char* kind_name(int k) { return k == F32 ? "f32" : k == I2 ? "i2" : "t1"; }

int64_t weight_bytes(const Weights& w, int kind) {
  if (kind == F32) return (int64_t)w.f32.size() * 4;
  return ternary_size(kind == I2 ? w.i2 : w.t1).bytes;
}

// args: kind, rows, cols, tokens
void BM_ternary_matmul(benchmark::State& state) {
  const int kind = (int)state.range(0), rows = (int)state.range(1), cols = (int)state.range(2);
  const int tokens = (int)state.range(3);
  const Weights& w = weights(rows, cols);
  std::vector<float> x = input(tokens, cols), y((size_t)tokens * rows);
  ActQuant a;
  for (auto _ : state) {
    if (kind == F32)
      f32_matmul(w, x.data(), tokens, y.data());
    else
      packed_matmul(kind == I2 ? w.i2 : w.t1, x.data(), tokens, &a, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  const int64_t wb = weight_bytes(w, kind);
  state.SetBytesProcessed(state.iterations() * wb);
  state.counters["GOPS"] =
      benchmark::Counter(2.0 * rows * cols * tokens, benchmark::Counter::kIsIterationInvariantRate,
                         benchmark::Counter::kIs1000);
  state.counters["w_MiB"] = (double)wb / (1 << 20);
  if (kind != F32) state.counters["bpw"] = ternary_size(kind == I2 ? w.i2 : w.t1).bits_per_weight;
  state.SetLabel(std::string(kind_name(kind)) + " " + std::to_string(rows) + "x" + std::to_string(cols) +
                 " T=" + std::to_string(tokens));
}

void matmul_args(benchmark::internal::Benchmark* b) {
  const int shapes[][2] = {{1024, 1024}, {4096, 1024}, {1024, 4096}, {4096, 4096}, {11008, 4096}, {4096, 11008}};
  for (int tokens : {1, 64})
    for (auto& s : shapes)
      for (int kind : {F32, I2, T1}) b->Args({kind, s[0], s[1], tokens});
}

BENCHMARK(BM_ternary_matmul)->Apply(matmul_args)->ArgNames({"kind", "rows", "cols", "T"})->Unit(benchmark::kMicrosecond)->UseRealTime();

// ---- a decoder's projections at T = 1 -----------------------------------------

constexpr int kDim = 1024, kFfn = 4096, kLayers = 12;

struct Layer {
  const Weights *q, *k, *v, *o, *gate, *up, *down;
};

const std::vector<Layer>& stack() {
  static std::vector<Layer> layers;
  if (layers.empty())
    for (int l = 0; l < kLayers; l++) {
      int s = 10 * l;
      layers.push_back({&weights(kDim, kDim, s + 1), &weights(kDim, kDim, s + 2), &weights(kDim, kDim, s + 3),
                        &weights(kDim, kDim, s + 4), &weights(kFfn, kDim, s + 5), &weights(kFfn, kDim, s + 6),
                        &weights(kDim, kFfn, s + 7)});
    }
  return layers;
}

struct StackBuffers {
  std::vector<float> x = input(1, kDim), h = std::vector<float>(kFfn), g = std::vector<float>(kFfn);
  std::vector<float> q = std::vector<float>(kDim), k = std::vector<float>(kDim), v = std::vector<float>(kDim);
  ActQuant a;
};

// q, k, v share one quantized input, as do gate and up; o and down get their own.
void run_stack(int kind, StackBuffers* b) {
  for (const Layer& L : stack()) {
    if (kind == F32) {
      f32_matmul(*L.q, b->x.data(), 1, b->q.data());
      f32_matmul(*L.k, b->x.data(), 1, b->k.data());
      f32_matmul(*L.v, b->x.data(), 1, b->v.data());
      f32_matmul(*L.o, b->q.data(), 1, b->x.data());
      f32_matmul(*L.gate, b->x.data(), 1, b->g.data());
      f32_matmul(*L.up, b->x.data(), 1, b->h.data());
      f32_matmul(*L.down, b->h.data(), 1, b->x.data());
    } else {
      auto W = [&](const Weights* w) -> const TernaryMatrix& { return kind == I2 ? w->i2 : w->t1; };
      if (!quantize_acts(b->x.data(), 1, kDim, W(L.q).cols_pad, 8, &b->a).ok()) std::abort();
      if (!ternary_matmul(W(L.q), b->a, b->q.data()).ok() || !ternary_matmul(W(L.k), b->a, b->k.data()).ok() ||
          !ternary_matmul(W(L.v), b->a, b->v.data()).ok())
        std::abort();
      packed_matmul(W(L.o), b->q.data(), 1, &b->a, b->x.data());
      if (!quantize_acts(b->x.data(), 1, kDim, W(L.gate).cols_pad, 8, &b->a).ok()) std::abort();
      if (!ternary_matmul(W(L.gate), b->a, b->g.data()).ok() || !ternary_matmul(W(L.up), b->a, b->h.data()).ok())
        std::abort();
      packed_matmul(W(L.down), b->h.data(), 1, &b->a, b->x.data());
    }
    // Keep activations bounded and non-degenerate between layers.
    for (float& v : b->x) v = v > 1.0f ? 1.0f : (v < -1.0f ? -1.0f : v);
  }
}

int64_t stack_bytes(int kind) {
  int64_t n = 0;
  for (const Layer& L : stack())
    for (const Weights* w : {L.q, L.k, L.v, L.o, L.gate, L.up, L.down}) n += weight_bytes(*w, kind);
  return n;
}

void BM_decode_stack(benchmark::State& state) {
  const int kind = (int)state.range(0);
  stack();  // build the weights outside the timed loop
  StackBuffers b;
  for (auto _ : state) {
    run_stack(kind, &b);
    benchmark::DoNotOptimize(b.x.data());
  }
  state.SetBytesProcessed(state.iterations() * stack_bytes(kind));
  state.counters["tok/s"] = benchmark::Counter(1.0, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["w_MiB"] = (double)stack_bytes(kind) / (1 << 20);
  state.SetLabel(std::string(kind_name(kind)) + " dim 1024, 12 layers, ffn 4096");
}
BENCHMARK(BM_decode_stack)->Arg(F32)->Arg(I2)->Arg(T1)->ArgName("kind")->Unit(benchmark::kMillisecond)->UseRealTime();

// All three in each iteration, so the speedup is measured under the same
// machine load. Wall and process-CPU seconds are both reported: on a shared
// machine, the CPU figure with OMP_NUM_THREADS=1 is the one less disturbed by
// other processes.
double cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void BM_decode_stack_compare(benchmark::State& state) {
  stack();
  StackBuffers b;
  double wall[3] = {0, 0, 0}, cpu[3] = {0, 0, 0};
  for (auto _ : state) {
    for (int kind : {F32, I2, T1}) {
      const auto t0 = std::chrono::steady_clock::now();
      const double c0 = cpu_seconds();
      run_stack(kind, &b);
      cpu[kind] += cpu_seconds() - c0;
      wall[kind] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    benchmark::DoNotOptimize(b.x.data());
  }
  const double n = (double)state.iterations();
  state.counters["f32_tok/s"] = n / wall[F32];
  state.counters["i2_tok/s"] = n / wall[I2];
  state.counters["t1_tok/s"] = n / wall[T1];
  state.counters["i2_speedup"] = wall[F32] / wall[I2];
  state.counters["t1_speedup"] = wall[F32] / wall[T1];
  state.counters["i2_speedup_cpu"] = cpu[F32] / cpu[I2];
  state.counters["t1_speedup_cpu"] = cpu[F32] / cpu[T1];
}
BENCHMARK(BM_decode_stack_compare)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

}  // namespace
