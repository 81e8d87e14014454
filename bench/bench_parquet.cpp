// KD shard I/O: write and read a 1M-step shard with K=20 (zstd and snappy).
// Counters: steps/s, MB/s of file bytes, bytes per step on disk.
//
//   bench_kernels --benchmark_filter=KdShard
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "core/fs.h"
#include "data/kd_schema.h"

namespace {

constexpr int64_t kSteps = 1000000;
constexpr int kK = 20;
constexpr int kPool = 65536;  // distinct steps, cycled: one period per row group

// Scratch shards live in a per-process folder in the temp directory, removed at exit.
struct BenchDir {
  std::string dir;
  BenchDir() {
    dir = bk::path_join(std::filesystem::temp_directory_path().string(),
                        "bitkd_bench_parquet_" + std::to_string(getpid()));
    // A constructor cannot return the error; each benchmark's first write into
    // the folder fails too and skips itself with that error, so only log here.
    bk::Status st = bk::make_dirs(dir);
    if (!st.ok()) fprintf(stderr, "bench_parquet: %s\n", st.msg.c_str());
  }
  ~BenchDir() {
    for (const std::string& f : bk::list_files(dir, "kd_shard_", ".parquet")) unlink(bk::path_join(dir, f).c_str());
    rmdir(dir.c_str());
  }
};

const std::string& bench_dir() {
  static BenchDir d;
  return d.dir;
}

// Teacher-like steps: ids skewed toward frequent tokens, descending logprobs
// from a softmax over random logits, token strings from a 5000-word vocabulary.
std::vector<bk::KdStep>& step_pool() {
  static std::vector<bk::KdStep> pool = [] {
    std::mt19937 g(1);
    std::vector<std::string> vocab;
    for (int i = 0; i < 5000; i++) vocab.push_back((i % 3 ? "\xC4\xA0" : "") + std::string("w") + std::to_string(i));
    std::vector<bk::KdStep> p(kPool);
    std::exponential_distribution<double> ex(1.0);
    for (int i = 0; i < kPool; i++) {
      bk::KdStep& s = p[i];
      double logits[kK], m = 0, z = 0;
      for (int k = 0; k < kK; k++) {
        logits[k] = -2.0 * k - 3.0 * ex(g);
        m = std::max(m, logits[k]);
      }
      for (int k = 0; k < kK; k++) z += std::exp(logits[k] - m);
      for (int k = 0; k < kK; k++) {
        int tok = (int)std::min(31999.0, std::floor(std::pow(ex(g), 2.0) * 3000));
        s.topk_ids.push_back(tok);
        float lp = (float)(logits[k] - m - std::log(z + 0.05));
        s.topk_logprobs.push_back(lp);
        s.raw_topk_tokens.push_back(vocab[(tok * 7 + k) % vocab.size()]);
        s.raw_topk_logprobs.push_back(lp);
      }
      s.other_logprob = (float)std::log(0.05 / (z + 0.05));
      s.teacher_sample_id = s.topk_ids[0];
      s.teacher_sample_text = s.raw_topk_tokens[0];
      s.teacher_sample_logprob = s.topk_logprobs[0];
      s.is_struct_token = i % 9 == 0;
      s.template_hash = "3f9a1c2b";
      s.tokenizer_hash = "a1b2c3d4";
    }
    return p;
  }();
  return pool;
}

bk::KdMeta bench_meta() {
  bk::KdMeta m;
  m.tokenizer_hash = "a1b2c3d4";
  m.teacher_model = "gpt-4o-mini";
  m.teacher_temperature = 0.8;
  m.teacher_top_p = 0.95;
  m.template_text = "<|user|>\n{prompt}\n\n<|assistant|>\n";
  return m;
}

bool write_shard(const std::string& path, bk::pq::Codec codec, std::string* err) {
  std::vector<bk::KdStep>& pool = step_pool();
  bk::KdWriterOptions o;
  o.codec = codec;
  bk::KdStepWriter w;
  bk::Status st = w.open(path, bench_meta(), o);
  for (int64_t i = 0; i < kSteps && st.ok(); i++) {
    bk::KdStep& src = pool[i % kPool];  // reused in place: copying would dominate
    src.prompt_idx = i / 256;
    src.step_idx = (int32_t)(i % 256);
    src.byte_offset = (int32_t)(i % 256) * 4;
    st = w.append(src);
  }
  if (st.ok()) st = w.close();
  if (!st.ok()) *err = st.msg;
  return st.ok();
}

void set_counters(benchmark::State& state, int64_t file_bytes) {
  int64_t it = (int64_t)state.iterations();
  state.SetItemsProcessed(it * kSteps);
  state.SetBytesProcessed(it * file_bytes);
  state.counters["bytes_per_step"] = (double)file_bytes / kSteps;
  state.counters["file_MB"] = (double)file_bytes / 1e6;
}

void BM_KdShardWrite(benchmark::State& state) {
  bk::pq::Codec codec = (bk::pq::Codec)state.range(0);
  std::string path = bk::path_join(bench_dir(), "kd_shard_write.parquet");
  step_pool();
  std::string err;
  for (auto _ : state) {
    if (!write_shard(path, codec, &err)) {
      state.SkipWithError(err.c_str());
      return;
    }
  }
  set_counters(state, bk::file_size(path));
  unlink(path.c_str());
  state.SetLabel(bk::pq::codec_name(codec));
}

// Full path to KdStep rows (what the trainer's loader sees).
void BM_KdShardReadRows(benchmark::State& state) {
  bk::pq::Codec codec = (bk::pq::Codec)state.range(0);
  std::string path = bk::path_join(bench_dir(), std::string("kd_shard_read_") + bk::pq::codec_name(codec) + ".parquet");
  std::string err;
  if (!bk::file_exists(path) && !write_shard(path, codec, &err)) {
    state.SkipWithError(err.c_str());
    return;
  }
  int64_t rows = 0;
  for (auto _ : state) {
    bk::KdStepReader r;
    bk::Status st = r.open(path);
    std::vector<bk::KdStep> steps;
    for (int g = 0; st.ok() && g < r.num_row_groups(); g++) {
      st = r.read_row_group(g, &steps);
      rows += (int64_t)steps.size();
    }
    if (!st.ok()) {
      state.SkipWithError(st.msg.c_str());
      return;
    }
    benchmark::DoNotOptimize(steps.data());
  }
  if (rows != kSteps * (int64_t)state.iterations()) state.SkipWithError("row count mismatch");
  set_counters(state, bk::file_size(path));
  state.SetLabel(bk::pq::codec_name(codec));
}

// Columns only (decode without building rows or validating).
void BM_KdShardReadColumns(benchmark::State& state) {
  bk::pq::Codec codec = (bk::pq::Codec)state.range(0);
  std::string path = bk::path_join(bench_dir(), std::string("kd_shard_read_") + bk::pq::codec_name(codec) + ".parquet");
  std::string err;
  if (!bk::file_exists(path) && !write_shard(path, codec, &err)) {
    state.SkipWithError(err.c_str());
    return;
  }
  for (auto _ : state) {
    bk::pq::Reader r;
    bk::Status st = r.open(path);
    bk::pq::ColumnData c;
    for (int g = 0; st.ok() && g < r.num_row_groups(); g++)
      for (int k = 0; st.ok() && k < (int)r.columns().size(); k++) st = r.read_column(g, k, &c);
    if (!st.ok()) {
      state.SkipWithError(st.msg.c_str());
      return;
    }
    benchmark::DoNotOptimize(c.num_rows());
  }
  set_counters(state, bk::file_size(path));
  state.SetLabel(bk::pq::codec_name(codec));
}

}  // namespace

BENCHMARK(BM_KdShardWrite)->Arg((int)bk::pq::Codec::ZSTD)->Arg((int)bk::pq::Codec::SNAPPY)
    ->Unit(benchmark::kMillisecond)->Iterations(2)->UseRealTime();
BENCHMARK(BM_KdShardReadRows)->Arg((int)bk::pq::Codec::ZSTD)->Arg((int)bk::pq::Codec::SNAPPY)
    ->Unit(benchmark::kMillisecond)->Iterations(2)->UseRealTime();
BENCHMARK(BM_KdShardReadColumns)->Arg((int)bk::pq::Codec::ZSTD)->Arg((int)bk::pq::Codec::SNAPPY)
    ->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
