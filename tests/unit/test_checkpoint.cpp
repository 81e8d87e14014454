// Checkpoints: bitwise round trip of model, optimizer and training state,
// keep-last-N, bad files, and the trainer's exact resume.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/fs.h"
#include "io/safetensors.h"
#include "kernels/cpu/kernels.h"
#include "testutil/testutil.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

using namespace bk;

namespace {

ModelConfig tiny_config() {
  ModelConfig c;
  c.vocab_size = 61;
  c.dim = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.ffn_dim = 48;
  c.max_seq_len = 16;
  c.weight_quant = WQ_TERNARY;
  c.act_bits = 8;
  c.tie_embeddings = false;
  return c;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

Optimizer filled_optimizer(const Model& m) {
  Optimizer o;
  AdamWConfig c;
  EXPECT_TRUE(optimizer_init(&o, c, m.info, m.params.size()).ok());
  Rng r;
  rng_seed(&r, 99);
  for (size_t i = 0; i < o.m.size(); i++) o.m[i] = rng_normal(&r) * 1e-3f, o.v[i] = rng_uniform(&r) * 1e-6f;
  o.step = 17;
  o.skipped = 2;
  return o;
}

std::string read_text(const std::string& p) {
  std::string s;
  EXPECT_TRUE(read_file(p, &s).ok());
  return s;
}

}  // namespace

TEST(Checkpoint, ExactRoundTrip) {
  std::string dir = bk_test::scratch_dir("ckpt_roundtrip");
  Model m;
  ASSERT_TRUE(model_init(&m, tiny_config(), 5).ok());
  m.params[3] = std::nextafter(1.0f, 2.0f);  // awkward values survive
  m.params[4] = -0.0f;
  m.params[5] = 1e-40f;  // subnormal
  Optimizer o = filled_optimizer(m);
  ScheduleConfig sched;
  sched.two_stage = true;
  sched.warmup_steps = 7;
  TrainState st;
  st.step = 17;
  st.seen_tokens = 123456789012LL;
  st.flip = {true, 4, 15, 98765};
  st.data_position = R"({"epoch":2,"index":31})";
  rng_seed(&st.rng, 42);
  rng_next_u64(&st.rng);
  st.last_loss = 1.0 / 3.0;
  st.summary_json = R"({"data":"x.jsonl"})";
  std::string path;
  Status s = checkpoint_save(dir, m, &o, &sched, st, R"({"tokens_per_s": 12.5})", 3, &path);
  ASSERT_TRUE(s.ok()) << s.msg;
  EXPECT_EQ(path, dir + "/mini_bitnet_step_17.safetensors");
  EXPECT_TRUE(file_exists(dir + "/mini_bitnet_step_17.optim.safetensors"));

  Model back;
  TrainState bst;
  s = checkpoint_load(path, &back, &bst);
  ASSERT_TRUE(s.ok()) << s.msg;
  EXPECT_EQ(model_config_to_json(back.cfg), model_config_to_json(m.cfg));
  EXPECT_TRUE(same_bits(back.params, m.params));
  EXPECT_EQ(bst.step, 17);
  EXPECT_EQ(bst.seen_tokens, 123456789012LL);
  EXPECT_TRUE(bst.flip.flip_done);
  EXPECT_EQ(bst.flip.current_bits, 4);
  EXPECT_EQ(bst.flip.flip_step, 15);
  EXPECT_EQ(bst.flip.flip_tokens, 98765);
  EXPECT_EQ(bst.data_position, st.data_position);
  EXPECT_EQ(memcmp(bst.rng.s, st.rng.s, sizeof st.rng.s), 0);
  EXPECT_EQ(bst.last_loss, st.last_loss);
  EXPECT_EQ(bst.summary_json, st.summary_json);
  EXPECT_FALSE(bst.timestamp.empty());

  Optimizer ob;
  ScheduleConfig sb;
  s = checkpoint_load_optimizer(path, back, AdamWConfig(), &ob, &sb);
  ASSERT_TRUE(s.ok()) << s.msg;
  EXPECT_TRUE(same_bits(ob.m, o.m));
  EXPECT_TRUE(same_bits(ob.v, o.v));
  EXPECT_EQ(ob.step, 17);
  EXPECT_EQ(ob.skipped, 2);
  EXPECT_EQ(schedule_to_json(sb), schedule_to_json(sched));

  // The file itself: F32 tensors with Hugging Face names and shapes, config in metadata.
  SafeTensorsFile f;
  ASSERT_TRUE(safetensors_read(path, &f).ok());
  const StTensor* q = safetensors_find(f, "model.layers.1.self_attn.k_proj.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->dtype, ST_F32);
  EXPECT_EQ(q->shape, (std::vector<int64_t>{16, 32}));
  const StTensor* norm = safetensors_find(f, "model.norm.weight");
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(norm->shape, (std::vector<int64_t>{32}));
  EXPECT_NE(safetensors_find(f, "lm_head.weight"), nullptr);
  EXPECT_EQ(f.metadata.at("format"), "pt");
  for (const char* k : {"config", "step", "seen_tokens", "flip_state", "data_position", "rng", "timestamp",
                        "bitkd_version", "training_summary"})
    EXPECT_TRUE(f.metadata.count(k)) << k;

  // Health record: the PoC's fields plus the extras.
  nlohmann::json h = nlohmann::json::parse(read_text(dir + "/mini_bitnet_step_17_health.json"));
  EXPECT_EQ(h["step"], 17);
  EXPECT_EQ(h["seen_tokens"], 123456789012LL);
  EXPECT_EQ(h["flip_done"], true);
  EXPECT_EQ(h["activation_bits"], 8);
  EXPECT_NEAR(h["last_loss"].get<double>(), 1.0 / 3.0, 1e-15);
  EXPECT_TRUE(h["timestamp"].is_string());
  EXPECT_EQ(h["tokens_per_s"], 12.5);

  // Config only.
  ModelConfig cfg;
  ASSERT_TRUE(checkpoint_read_config(path, &cfg).ok());
  EXPECT_EQ(cfg.n_kv_heads, 2);
}

TEST(Checkpoint, KeepLastNAndLatest) {
  std::string dir = bk_test::scratch_dir("ckpt_keep");
  Model m;
  ASSERT_TRUE(model_init(&m, tiny_config(), 1).ok());
  Optimizer o = filled_optimizer(m);
  EXPECT_EQ(checkpoint_find_latest(dir), "");
  for (long step : {2, 9, 10, 11}) {
    TrainState st;
    st.step = step;
    ASSERT_TRUE(checkpoint_save(dir, m, &o, nullptr, st, "", 2, nullptr).ok());
  }
  // Numeric order (10 > 9), and only the newest two survive with their companions.
  auto all = checkpoint_list(dir);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].first, 10);
  EXPECT_EQ(all[1].first, 11);
  EXPECT_EQ(checkpoint_find_latest(dir), dir + "/mini_bitnet_step_11.safetensors");
  EXPECT_FALSE(file_exists(dir + "/mini_bitnet_step_9.optim.safetensors"));
  EXPECT_FALSE(file_exists(dir + "/mini_bitnet_step_9_health.json"));
  EXPECT_TRUE(file_exists(dir + "/mini_bitnet_step_10_health.json"));
  EXPECT_EQ(list_files(dir, "mini_bitnet_step_", "").size(), 6u) << "no temp files left behind";
  // keep_last 0 keeps everything.
  TrainState st;
  st.step = 12;
  ASSERT_TRUE(checkpoint_save(dir, m, &o, nullptr, st, "", 0, nullptr).ok());
  EXPECT_EQ(checkpoint_list(dir).size(), 3u);
}

TEST(Checkpoint, BadFilesGiveClearErrors) {
  std::string dir = bk_test::scratch_dir("ckpt_bad");
  Model m;
  ASSERT_TRUE(model_init(&m, tiny_config(), 1).ok());
  TrainState st;
  st.step = 3;
  std::string path;
  ASSERT_TRUE(checkpoint_save(dir, m, nullptr, nullptr, st, "", 0, &path).ok());
  std::string good = read_text(path);
  Model out;
  auto expect_err = [&](const std::string& p, const std::string& frag) {
    Status s = checkpoint_load(p, &out, nullptr);
    ASSERT_FALSE(s.ok()) << p;
    EXPECT_NE(s.msg.find(path_basename(p)), std::string::npos) << s.msg;
    EXPECT_NE(s.msg.find(frag), std::string::npos) << s.msg;
    std::printf("  error: %s\n", s.msg.c_str());
  };
  // Foreign, truncated, missing.
  ASSERT_TRUE(write_file_atomic(dir + "/foreign.safetensors", "PK\x03\x04 this is a zip, not a checkpoint").ok());
  expect_err(dir + "/foreign.safetensors", "not a safetensors file");
  ASSERT_TRUE(write_file_atomic(dir + "/trunc.safetensors", good.substr(0, good.size() / 2)).ok());
  expect_err(dir + "/trunc.safetensors", "truncated");
  expect_err(dir + "/nope.safetensors", "no such file");
  // A valid safetensors file that is not a bitkd checkpoint.
  {
    float x[2] = {1, 2};
    SafeTensorsWriter w;
    st_writer_add(&w, "weight", ST_F32, {2}, x);
    ASSERT_TRUE(safetensors_write(dir + "/plain.safetensors", w).ok());
    expect_err(dir + "/plain.safetensors", "not a bitkd model checkpoint");
  }
  // A checkpoint lacking a tensor, and one with a wrong shape.
  SafeTensorsFile f;
  ASSERT_TRUE(safetensors_read(path, &f).ok());
  for (int variant = 0; variant < 2; variant++) {
    SafeTensorsWriter w;
    w.metadata = f.metadata;
    std::vector<std::vector<float>> keep;
    for (const StTensor& t : f.tensors) {
      std::vector<int64_t> shape = t.shape;
      if (t.name == "model.layers.0.mlp.up_proj.weight") {
        if (variant == 0) continue;
        shape = {shape[1], shape[0]};
      }
      st_writer_add(&w, t.name, t.dtype, shape, safetensors_data(f, t));
    }
    std::string p = dir + (variant ? "/shape.safetensors" : "/missing.safetensors");
    ASSERT_TRUE(safetensors_write(p, w).ok());
    expect_err(p, variant ? "has shape [32, 48], expected [48, 32]" : "'model.layers.0.mlp.up_proj.weight' is missing");
  }
  // The optimizer file passed as a model, and a model without its optimizer file.
  Optimizer o = filled_optimizer(m);
  st.step = 4;
  ASSERT_TRUE(checkpoint_save(dir, m, &o, nullptr, st, "", 0, &path).ok());
  expect_err(checkpoint_optim_path(path), "not a model checkpoint");
  Optimizer ob;
  Status s = checkpoint_load_optimizer(dir + "/mini_bitnet_step_3.safetensors", m, AdamWConfig(), &ob, nullptr);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.msg.find("optimizer state is missing"), std::string::npos) << s.msg;
}

// --- exact resume ------------------------------------------------------------

namespace {

// A deterministic synthetic source: each batch depends on its index (the data
// position) and on the trainer RNG, so a resume must restore both.
struct CountingSource {
  long index = 0;
  Status next(Batch* b, Rng* rng) {
    batch_resize(b, 2, 12);
    Rng local;
    rng_seed(&local, 1000 + (uint64_t)index);
    uint64_t salt = rng_next_u64(rng);
    for (int r = 0; r < 2; r++) {
      int len = 8 + (int)((salt >> (8 * r)) % 5);  // 8..12 real tokens, rest padding
      for (int t = 0; t < 12; t++) {
        size_t i = (size_t)r * 12 + t;
        if (t < len) {
          b->tokens[i] = (int32_t)((rng_next_u32(&local) + (salt & 7)) % 61);
          b->key_mask[i] = 1;
        }
      }
      for (int t = 0; t + 1 < len; t++) {
        size_t i = (size_t)r * 12 + t;
        b->targets[i] = b->tokens[i + 1];
        b->weights[i] = 1.0f;
        b->real_tokens++;
      }
    }
    index++;
    return ok_status();
  }
};

TrainerOptions resume_options(const std::string& dir, long total) {
  TrainerOptions o;
  o.label = "test";
  o.batch = 2;
  o.seq = 12;
  o.grad_accum = 2;
  o.total_steps = total;
  o.log_interval = 2;
  o.checkpoint_interval = 0;
  o.keep_checkpoints = 0;
  o.checkpoint_dir = dir;
  o.metrics_path = dir + "/train_metrics.jsonl";
  o.sched.lr_peak = 3e-3;
  o.sched.eta_min = 1e-4;
  o.sched.warmup_steps = 2;
  o.sched.t_max = 8;
  o.sched.two_stage = true;
  o.sched.stage2_start = 5;
  o.flip_at_tokens = 150;  // about 40 tokens per step: flips at step 4, after the resume point
  o.seed = 77;
  o.progress = false;
  return o;
}

TrainerCallbacks callbacks(CountingSource* src) {
  TrainerCallbacks cb;
  cb.next_batch = [src](Batch* b, Rng* r) { return src->next(b, r); };
  cb.save_position = [src]() { return "{\"index\":" + std::to_string(src->index) + "}"; };
  cb.restore_position = [src](const std::string& s) {
    nlohmann::json j = nlohmann::json::parse(s);
    src->index = j["index"].get<long>();
    return ok_status();
  };
  return cb;
}

}  // namespace

TEST(Trainer, ResumeIsBitwiseIdentical) {
  int saved = omp_get_max_threads();
  kernels_set_threads(1);
  const long n = 8, k = 3;
  std::string dir_a = bk_test::scratch_dir("resume_a"), dir_b = bk_test::scratch_dir("resume_b");

  Model a;
  ASSERT_TRUE(model_init(&a, tiny_config(), 11).ok());
  CountingSource src_a;
  TrainResult ra;
  Status s = trainer_run(&a, resume_options(dir_a, n), callbacks(&src_a), &ra);
  ASSERT_TRUE(s.ok()) << s.msg;
  EXPECT_EQ(ra.steps_done, n);
  EXPECT_TRUE(ra.flip.flip_done);
  EXPECT_GT(ra.flip.flip_step, k) << "the flip should happen after the resume point";
  EXPECT_EQ(a.cfg.act_bits, 4);

  Model b;
  ASSERT_TRUE(model_init(&b, tiny_config(), 11).ok());
  CountingSource src_b;
  TrainResult rb;
  s = trainer_run(&b, resume_options(dir_b, k), callbacks(&src_b), &rb);
  ASSERT_TRUE(s.ok()) << s.msg;
  EXPECT_EQ(rb.steps_done, k);
  // A new process would start from nothing: fresh model object and source.
  Model b2;
  CountingSource src_b2;
  TrainerOptions ob = resume_options(dir_b, n);
  ob.resume_from = checkpoint_find_latest(dir_b);
  ASSERT_EQ(ob.resume_from, dir_b + "/mini_bitnet_step_3.safetensors");
  TrainResult rb2;
  s = trainer_run(&b2, ob, callbacks(&src_b2), &rb2);
  ASSERT_TRUE(s.ok()) << s.msg;
  EXPECT_EQ(rb2.steps_done, n);
  EXPECT_EQ(rb2.steps_this_run, n - k);

  EXPECT_TRUE(same_bits(a.params, b2.params)) << "resumed parameters differ from the uninterrupted run";
  EXPECT_EQ(ra.last_loss, rb2.last_loss);
  EXPECT_EQ(ra.seen_tokens, rb2.seen_tokens);
  EXPECT_EQ(ra.flip.flip_step, rb2.flip.flip_step);
  EXPECT_EQ(b2.cfg.act_bits, 4);
  Optimizer oa, ob2;
  ASSERT_TRUE(checkpoint_load_optimizer(checkpoint_find_latest(dir_a), a, AdamWConfig(), &oa, nullptr).ok());
  ASSERT_TRUE(checkpoint_load_optimizer(checkpoint_find_latest(dir_b), b2, AdamWConfig(), &ob2, nullptr).ok());
  EXPECT_TRUE(same_bits(oa.m, ob2.m));
  EXPECT_TRUE(same_bits(oa.v, ob2.v));
  EXPECT_EQ(oa.step, ob2.step);

  // Metrics: one JSON line per log interval with the documented fields.
  std::string text = read_text(dir_a + "/train_metrics.jsonl");
  int lines = 0;
  size_t pos = 0;
  while ((pos = text.find('\n', pos)) != std::string::npos) pos++, lines++;
  EXPECT_EQ(lines, 4);
  nlohmann::json first = nlohmann::json::parse(text.substr(0, text.find('\n')));
  for (const char* key : {"step", "loss", "lr", "grad_norm", "tokens_per_s", "seen_tokens", "act_bits",
                          "skipped_steps"})
    EXPECT_TRUE(first.contains(key)) << key;
  EXPECT_EQ(first["step"], 2);
  std::printf("uninterrupted %ld steps: first loss %.4f, last loss %.4f\n", n, ra.first_loss, ra.last_loss);
  kernels_set_threads(saved);
}

TEST(Trainer, GuardSkipsNonFiniteLoss) {
  kernels_set_threads(1);
  std::string dir = bk_test::scratch_dir("trainer_guard");
  Model m;
  ASSERT_TRUE(model_init(&m, tiny_config(), 3).ok());
  CountingSource src;
  TrainerCallbacks cb = callbacks(&src);
  int calls = 0;
  // A loss that goes non-finite on the second call: that update must be skipped.
  cb.loss = [&calls](float* logits, const Batch& b, const Model& mm, LossResult* out) {
    calls++;
    size_t n = (size_t)b.batch * b.seq * mm.cfg.vocab_size;
    for (size_t i = 0; i < n; i++) logits[i] = 1e-3f;
    out->loss = calls == 2 ? NAN : 1.0;
    out->metrics.push_back({"custom", 2.0});
    return ok_status();
  };
  TrainerOptions o = resume_options(dir, 3);
  o.grad_accum = 1;
  o.flip_at_tokens = 0;
  TrainResult r;
  Status s = trainer_run(&m, o, cb, &r);
  ASSERT_TRUE(s.ok()) << s.msg;
  EXPECT_EQ(r.skipped, 1);
  EXPECT_EQ(r.steps_done, 3);
  std::string text = read_text(dir + "/train_metrics.jsonl");
  EXPECT_NE(text.find("\"skipped_steps\":1"), std::string::npos) << text;
  EXPECT_NE(text.find("\"custom\":2"), std::string::npos) << text;
}
