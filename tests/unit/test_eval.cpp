// Evaluation, QEI, agreement/KL, the dry run and its synthetic packed weights.
#include <gtest/gtest.h>
#include <omp.h>

#include <cctype>
#include <cmath>
#include <map>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/fs.h"
#include "core/rng.h"
#include "data/align/align.h"
#include "data/kd_schema.h"
#include "data/tasks/tasks.h"
#include "eval/dryrun.h"
#include "eval/eval.h"
#include "model/infer.h"
#include "model/infer_synthetic.h"
#include "model/model.h"
#include "testutil/spm_fixture.h"
#include "testutil/testutil.h"
#include "tokenizer/tokenizer.h"
#include "train/kd_loss.h"

using namespace bk;
using json = nlohmann::json;

namespace {

const char* kTemplate = "<|user|>\n{prompt}\n\n<|assistant|>\n";

// A small random ternary model: latent weights well above the init's 0.02 so
// the logits have a real spread.
void random_model(Model* m, int vocab, int act_bits, uint64_t seed, int max_seq = 96) {
  ModelConfig c;
  c.vocab_size = vocab;
  c.dim = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.ffn_dim = 160;  // not a multiple of 128: packed rows end in a half block
  c.max_seq_len = max_seq;
  c.weight_quant = WQ_TERNARY;
  c.act_bits = act_bits;
  ASSERT_TRUE(model_init(m, c, seed).ok());
  Rng r;
  rng_seed(&r, seed + 1);
  for (const ParamInfo& p : m->info)
    if (p.kind != PARAM_NORM)
      for (size_t i = 0; i < p.numel; i++) m->params[p.offset + i] = 0.15f * rng_normal(&r);
}

struct WeightsPtr {
  InferWeights* w = nullptr;
  ~WeightsPtr() { infer_weights_destroy(w); }
};

// Logits [T, V] of every position through one engine.
std::vector<float> session_logits(const InferWeights* w, const std::vector<int32_t>& toks, bool token_by_token) {
  InferSession* s = nullptr;
  EXPECT_TRUE(infer_session_create(w, (int)toks.size(), &s).ok());
  const int V = infer_weights_config(w).vocab_size, T = (int)toks.size();
  std::vector<float> out((size_t)T * V);
  if (token_by_token) {
    for (int t = 0; t < T; t++) {
      EXPECT_TRUE(infer_session_eval(s, &toks[t], 1).ok());
      memcpy(out.data() + (size_t)t * V, infer_session_logits(s), sizeof(float) * V);
    }
  } else {
    EXPECT_TRUE(infer_session_eval_all(s, toks.data(), T, out.data()).ok());
  }
  infer_session_destroy(s);
  return out;
}

// ctest may run these tests in parallel processes: the shared tokenizer's
// directory carries the test filter so no process deletes another's.
std::string run_tag() {
  std::string f = ::testing::GTEST_FLAG(filter), t;
  for (char c : f) t += isalnum((unsigned char)c) ? c : '_';
  return t.substr(0, 80);
}

const std::string& fixture_tokenizer() {
  static std::string path = [] {
    std::string dir = bk_test::scratch_dir("eval_tok_" + run_tag());
    std::string err;
    std::string p = bk_test::spm_fixture_train(dir, "tok", "bpe", 320, &err);
    EXPECT_FALSE(p.empty()) << err;
    return p;
  }();
  return path;
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? NAN : s / v.size();
}

}  // namespace

// ---- QEI -----------------------------------------------------------------------

TEST(Qei, FormulaAndUndefinedCases) {
  QeiResult r = qei_compute(0.6, 0.8, 0.05, 670, 40, 20);
  ASSERT_TRUE(r.qei.defined);
  EXPECT_NEAR(r.qei.value, (0.6 / 0.8) / (0.05 / 670.0), 1e-9);
  ASSERT_TRUE(r.qei_speed.defined);
  EXPECT_NEAR(r.qei_speed.value, r.qei.value * 2.0, 1e-9);

  // Teacher scored 0: no division, a reason instead.
  r = qei_compute(0.5, 0.0, 0.05, 670, 40, 20);
  EXPECT_FALSE(r.qei.defined);
  EXPECT_NE(r.qei.reason.find("teacher quality is 0"), std::string::npos) << r.qei.reason;
  EXPECT_FALSE(r.qei_speed.defined);
  EXPECT_FALSE(r.qei_speed.reason.empty());
  // Unknown inputs.
  EXPECT_FALSE(qei_compute(NAN, 0.8, 0.05, 670, 40, 20).qei.defined);
  EXPECT_FALSE(qei_compute(0.5, NAN, 0.05, 670, 40, 20).qei.defined);
  EXPECT_FALSE(qei_compute(0.5, 0.8, 0.0, 670, 40, 20).qei.defined);
  EXPECT_FALSE(qei_compute(0.5, 0.8, 0.05, NAN, 40, 20).qei.defined);
  // Teacher TPS unknown: QEI defined, QEI_speed not.
  r = qei_compute(0.5, 0.8, 0.05, 670, 40, 0);
  EXPECT_TRUE(r.qei.defined);
  EXPECT_FALSE(r.qei_speed.defined);
  // Student scored 0 is a real QEI of 0.
  r = qei_compute(0.0, 0.8, 0.05, 670, 40, 20);
  ASSERT_TRUE(r.qei.defined);
  EXPECT_EQ(r.qei.value, 0.0);
}

// ---- packed engine vs float engine ---------------------------------------------------
//
// Both backends multiply the same activation codes by the same ternary codes
// and scale once by gamma * step; the packed kernels sum in int32, the float
// backend in fp32, and both sums are exact. So eval's packed numbers are the
// training forward's numbers: the logits agree bit for bit, for A8 and A4, in
// prefill and decode, on any machine and with any BLAS kernel.
namespace {

void expect_packed_equals_float(int act_bits) {
  for (uint64_t seed : {3, 11, 29}) {
    Model m;
    random_model(&m, 211, act_bits, seed);
    WeightsPtr pk, fl;
    ASSERT_TRUE(infer_weights_create(&m, INFER_PACKED, &pk.w).ok());
    ASSERT_TRUE(infer_weights_create(&m, INFER_FLOAT, &fl.w).ok());
    const int T = 40, V = 211;
    std::vector<int32_t> toks(T);
    Rng r;
    rng_seed(&r, seed * 7);
    for (auto& t : toks) t = (int32_t)rng_below(&r, V);
    for (bool tbt : {false, true})
      EXPECT_EQ(session_logits(pk.w, toks, tbt), session_logits(fl.w, toks, tbt))
          << "A" << act_bits << " seed " << seed << (tbt ? " decode" : " prefill");
  }
}

}  // namespace

TEST(PackedVsFloatBackend, A8BitIdentical) { expect_packed_equals_float(8); }
TEST(PackedVsFloatBackend, A4BitIdentical) { expect_packed_equals_float(4); }

TEST(InferWeightBytes, ComponentsAddUpAndActBitsSwitch) {
  Model m;
  random_model(&m, 211, 8, 5);
  WeightsPtr pk, fl;
  ASSERT_TRUE(infer_weights_create(&m, INFER_PACKED, &pk.w).ok());
  ASSERT_TRUE(infer_weights_create(&m, INFER_FLOAT, &fl.w).ok());
  InferWeightBytes p, f;
  infer_weights_bytes_by_component(pk.w, &p);
  infer_weights_bytes_by_component(fl.w, &f);
  EXPECT_EQ(p.total, infer_weights_bytes(pk.w));
  EXPECT_EQ(f.total, infer_weights_bytes(fl.w));
  EXPECT_EQ(p.embeddings + p.norms + p.projections + p.head, p.total);
  EXPECT_TRUE(p.head_tied);
  EXPECT_EQ(p.head, 0u);
  EXPECT_EQ(p.embeddings, f.embeddings);
  EXPECT_EQ(p.norms, f.norms);
  EXPECT_EQ(f.projections, (size_t)f.projection_params * 4);
  EXPECT_EQ(p.projection_params, f.projection_params);
  EXPECT_EQ(f.total, model_num_params(m) * sizeof(float));
  EXPECT_EQ(p.projection_format, "ternary-i2");
  EXPECT_GE(p.projection_bits_per_weight, 2.0);
  EXPECT_LT(p.projection_bits_per_weight, 2.5);  // 160-wide rows pad to 192, plus gammas

  // Switching to A4 on prepared weights equals preparing an A4 model.
  ASSERT_TRUE(infer_weights_set_act_bits(pk.w, 4, A4_HYBRID).ok());
  Model m4;
  random_model(&m4, 211, 4, 5);
  WeightsPtr pk4;
  ASSERT_TRUE(infer_weights_create(&m4, INFER_PACKED, &pk4.w).ok());
  std::vector<int32_t> toks = {1, 5, 9, 77, 3, 200, 42};
  EXPECT_EQ(session_logits(pk.w, toks, false), session_logits(pk4.w, toks, false));
  EXPECT_FALSE(infer_weights_set_act_bits(pk.w, 0, A4_HYBRID).ok());  // packed needs integer activations
  EXPECT_FALSE(infer_weights_set_act_bits(pk.w, 6, A4_HYBRID).ok());
}

// ---- KL against the training loss ------------------------------------------------------

TEST(KdKl, MatchesTrainingLossAtTau1) {
  const int V = 300, K = 6, N = 40;
  Rng r;
  rng_seed(&r, 4);
  std::vector<float> logits((size_t)N * V);
  for (auto& x : logits) x = 3.0f * rng_normal(&r);
  std::vector<int32_t> ids((size_t)N * K);
  std::vector<float> lps((size_t)N * K), other(N);
  for (int i = 0; i < N; i++) {
    double mass = 0;
    for (int k = 0; k < K; k++) {
      int32_t id = (int32_t)rng_below(&r, V);
      if (k == 3 && i % 3 == 0) id = ids[(size_t)i * K];  // a duplicate id
      if (k == 5 && i % 4 == 0) id = -1;                  // an empty slot
      ids[(size_t)i * K + k] = id;
      float p = 0.02f + 0.12f * rng_uniform(&r);
      lps[(size_t)i * K + k] = id < 0 ? 0.0f : std::log(p);
      if (id >= 0) mass += p;
    }
    other[i] = (float)std::log(std::max(1e-6, 1.0 - mass));
  }
  for (int i = 0; i < N; i++) {
    double mine = 0;
    ASSERT_TRUE(kd_bucket_kl(logits.data() + (size_t)i * V, V, ids.data() + (size_t)i * K, lps.data() + (size_t)i * K,
                             K, other[i], &mine));
    // The training loss on this one position, KD term only, tau 1.
    std::vector<float> z(logits.begin() + (size_t)i * V, logits.begin() + (size_t)(i + 1) * V);
    int32_t target = -1;
    uint8_t kd = 1;
    KdTargets t;
    t.n = 1;
    t.K = K;
    t.targets = &target;
    t.kd_mask = &kd;
    t.topk_ids = ids.data() + (size_t)i * K;
    t.topk_logprobs = lps.data() + (size_t)i * K;
    t.other_logprob = &other[i];
    KdLossConfig c;
    c.tau = 1.0f;
    c.ce_weight = 0;
    c.format_weight = 0;
    c.plain_ce_weight = 0;
    KdLossParts parts;
    kd_loss_forward_backward(z.data(), V, t, c, &parts);
    ASSERT_EQ(parts.kd_positions, 1);
    EXPECT_NEAR(mine, parts.kd_mean, 1e-5 * std::max(1.0, std::fabs(mine))) << "position " << i;
    EXPECT_GE(mine, -1e-9);
  }
  // Unusable buckets.
  double kl;
  int32_t bad[2] = {V, 1};
  float lp2[2] = {-1.0f, -2.0f};
  EXPECT_FALSE(kd_bucket_kl(logits.data(), V, bad, lp2, 2, -1.0f, &kl));
  int32_t empty[2] = {-1, -1};
  EXPECT_FALSE(kd_bucket_kl(logits.data(), V, empty, lp2, 2, -1.0f, &kl));
  int32_t ok2[2] = {3, 4};
  float nan2[2] = {NAN, -1.0f};
  EXPECT_FALSE(kd_bucket_kl(logits.data(), V, ok2, nan2, 2, -1.0f, &kl));
}

// ---- agreement on a KD shard --------------------------------------------------------------
//
// A shard whose teacher distributions are the student's own top-K: agreement 1
// and KL 0; then the teacher's top-1 is moved at known positions and the
// agreement drops by exactly those.
TEST(KdAgreementRun, OwnDistributionAgreesFully) {
  const std::string& tok_path = fixture_tokenizer();
  ASSERT_FALSE(tok_path.empty());
  Tokenizer tok;
  ASSERT_TRUE(tokenizer_load(tok_path, &tok).ok());
  const int V = tokenizer_vocab_size(tok);
  Model m;
  random_model(&m, V, 8, 13, 128);
  WeightsPtr w;
  ASSERT_TRUE(infer_weights_create(&m, INFER_PACKED, &w.w).ok());

  struct P {
    std::string prompt, response;
  };
  std::vector<P> items = {{"Hello world of the model", "{\"name\": 12, \"key\": [1, 2, 3]}"},
                          {"sort the list", "def f(x):\n    return x + 7"},
                          {"teacher and student", "Sure, the value of thinking"}};
  const int K = 5;
  std::string dir = bk_test::scratch_dir("eval_kd_shard");
  for (int variant = 0; variant < 2; variant++) {
    KdMeta meta;
    meta.tokenizer_hash = tokenizer_hash(tok);
    meta.teacher_model = "self";
    meta.template_text = kTemplate;
    KdStepWriter sw;
    KdPromptWriter pw;
    const std::string shard = dir + "/v" + std::to_string(variant) + "/kd_shard_000.parquet";
    ASSERT_TRUE(make_dirs(dir + "/v" + std::to_string(variant)).ok());
    ASSERT_TRUE(sw.open(shard, meta).ok());
    ASSERT_TRUE(pw.open(dir + "/v" + std::to_string(variant) + "/kd_prompts_000.parquet", meta).ok());
    int64_t steps = 0, moved = 0;
    for (size_t pi = 0; pi < items.size(); pi++) {
      std::string rendered;
      ASSERT_TRUE(template_render(kTemplate, items[pi].prompt, &rendered).ok());
      // Offsets of the response's tokens, as the aligner will see them.
      std::vector<int32_t> ids;
      std::vector<TokenSpan> spans;
      ASSERT_TRUE(tokenizer_encode_with_spans(tok, rendered + items[pi].response, &ids, &spans).ok());
      std::vector<int32_t> starts;
      token_starts(spans, &starts);
      std::vector<AlignStep> probe;
      for (int32_t s : starts)
        if (s >= (int32_t)rendered.size()) {
          AlignStep st;
          st.step_idx = (int32_t)probe.size();
          st.byte_offset = s - (int32_t)rendered.size();
          st.topk_ids = {0};
          st.topk_logprobs = {-1.0f};
          st.other_logprob = std::log(1 - std::exp(-1.0f));
          probe.push_back(st);
        }
      AlignInput in;
      in.rendered_prompt = rendered;
      in.response = items[pi].response;
      in.finished = true;
      AlignOptions ao;
      ao.max_seq_len = 128;
      ao.max_topk = K;
      AlignedExample ex;
      AlignStats stats;
      ASSERT_TRUE(align_example(tok, in, probe, ao, &ex, &stats).ok());
      ASSERT_EQ(ex.num_slots(), (int)probe.size()) << "every response token carries a step";
      // The student's own distribution at each slot's position.
      std::vector<float> lg = session_logits(w.w, ex.tokens, false);
      for (int sidx = 0; sidx < ex.num_slots(); sidx++) {
        const float* z = lg.data() + (size_t)ex.slot_position[sidx] * V;
        std::vector<TokenLogprob> top;
        top_logprobs(z, V, K, &top);
        KdStep st;
        st.prompt_idx = (int64_t)pi;
        st.step_idx = ex.slot_step[sidx];
        st.byte_offset = probe[ex.slot_step[sidx]].byte_offset;
        double mass = 0;
        for (const TokenLogprob& t : top) {
          st.topk_ids.push_back(t.id);
          st.topk_logprobs.push_back(t.logprob);
          mass += std::exp((double)t.logprob);
        }
        // Variant 1: every third step's teacher prefers its second choice.
        if (variant == 1 && sidx % 3 == 0 && top[0].logprob > top[1].logprob) {
          std::swap(st.topk_logprobs[0], st.topk_logprobs[1]);
          moved++;
        }
        st.other_logprob = (float)std::log(1.0 - mass);
        st.teacher_sample_id = top[0].id;
        st.teacher_sample_text = tokenizer_token_bytes(tok, top[0].id);
        st.tokenizer_hash = meta.tokenizer_hash;
        st.valid = true;
        ASSERT_TRUE(sw.append(st).ok());
        steps++;
      }
      KdPrompt p;
      p.prompt_idx = (int64_t)pi;
      p.prompt_text = items[pi].prompt;
      p.rendered_prompt = rendered;
      p.response_text = items[pi].response;
      p.finish_reason = "stop";
      p.teacher_model = "self";
      p.provider = "test";
      ASSERT_TRUE(pw.append(p).ok());
    }
    ASSERT_TRUE(sw.close().ok());
    ASSERT_TRUE(pw.close().ok());

    KdAgreementOptions ko;
    ko.shard = shard;
    ko.max_seq_len = 128;
    ko.max_topk = K;
    KdAgreement ag;
    Status st = kd_agreement_run(w.w, tok, ko, &ag);
    ASSERT_TRUE(st.ok()) << st.msg;
    printf("[variant %d] examples %lld positions %lld agree %lld kl %.3g moved %lld | %s\n", variant,
           (long long)ag.examples, (long long)ag.positions, (long long)ag.agree, ag.kl_mean, (long long)moved,
           ag.loader_stats.c_str());
    EXPECT_EQ(ag.examples, (int64_t)items.size());
    EXPECT_EQ(ag.positions, steps);
    EXPECT_EQ(ag.kl_positions, steps);
    if (variant == 0) {
      EXPECT_EQ(ag.agree, steps);
      EXPECT_DOUBLE_EQ(ag.top1, 1.0);
      EXPECT_LT(ag.kl_mean, 1e-4);  // logprobs were stored as float
    } else {
      EXPECT_GT(moved, 0);
      EXPECT_EQ(ag.agree, steps - moved);
      EXPECT_GT(ag.kl_mean, 1e-3);
    }
  }
  // A missing shard is an error naming it.
  KdAgreementOptions ko;
  ko.shard = dir + "/nope/kd_shard_000.parquet";
  KdAgreement ag;
  Status st = kd_agreement_run(w.w, tok, ko, &ag);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("nope"), std::string::npos);
}

// ---- the report ------------------------------------------------------------------------------

namespace {

// Generates with a random student, writes a baseline where the teacher answers
// `teacher_right` of the shared prompts correctly (plus one prompt only the
// teacher has), and returns the parsed report.
json make_report(int teacher_right, int drop_from_teacher, EvalReport* rep_out) {
  const std::string& tok_path = fixture_tokenizer();
  Tokenizer tok;
  EXPECT_TRUE(tokenizer_load(tok_path, &tok).ok());
  const int V = tokenizer_vocab_size(tok);
  Model m;
  random_model(&m, V, 8, 21, 128);
  WeightsPtr w;
  EXPECT_TRUE(infer_weights_create(&m, INFER_PACKED, &w.w).ok());

  TaskGenOptions to;
  to.n = 8;
  to.split = TASK_SPLIT_EVAL;
  std::vector<TaskItem> tasks;
  EXPECT_TRUE(tasks_generate(to, &tasks).ok());
  std::vector<PromptItem> items;
  for (size_t i = 0; i < tasks.size(); i++) items.push_back({(int64_t)i, tasks[i].prompt, tasks[i].task, tasks[i].response});
  // One unscored prompt (no reference), as a plain-text prompts file gives.
  items.push_back({(int64_t)items.size(), "Say something.", "", ""});

  EvalGenOptions go;
  go.template_text = kTemplate;
  go.max_new_tokens = 6;
  go.progress = false;
  EvalReport rep;
  Status st = eval_generate(w.w, tok, items, go, &rep.results);
  EXPECT_TRUE(st.ok()) << st.msg;
  EXPECT_EQ(rep.results.size(), items.size());

  // Baseline file: bitkd's fields, teacher right on the first teacher_right prompts.
  json b;
  b["timestamp"] = "2026-01-01T00:00:00Z";
  b["provider"] = "bitkd";
  b["model"] = "teacher";
  b["memory_teacher_constant"] = 2.5e9;
  b["memory_teacher_source"] = "measured: test";
  b["metrics"] = {{"avg_decode_tps_8k", 40.0}};
  json res = json::array();
  for (size_t i = drop_from_teacher; i < tasks.size(); i++) {
    json e;
    e["prompt"] = tasks[i].prompt;
    e["task"] = tasks[i].task;
    e["reference"] = tasks[i].response;
    e["response"] = (int)i < teacher_right + drop_from_teacher ? tasks[i].response : std::string("no idea");
    res.push_back(e);
  }
  json failed;
  failed["prompt"] = "a prompt only the teacher saw";
  failed["error"] = "timeout";
  res.push_back(failed);
  b["results"] = res;
  std::string dir = bk_test::scratch_dir("eval_report_" + std::to_string(teacher_right));
  std::string bpath = dir + "/teacher_baseline.json";
  EXPECT_TRUE(write_file_atomic(bpath, b.dump()).ok());
  TeacherBaseline tb;
  st = teacher_baseline_load(bpath, &tb);
  EXPECT_TRUE(st.ok()) << st.msg;
  EXPECT_EQ(tb.rows.size(), tasks.size() - drop_from_teacher + 1);

  st = compare_quality(rep.results, &tb, &rep.quality);
  EXPECT_TRUE(st.ok()) << st.msg;
  rep.throughput = eval_throughput(rep.results);
  infer_weights_bytes_by_component(w.w, &rep.weights);
  rep.have_baseline = true;
  rep.baseline_path = bpath;
  rep.teacher_tps = tb.avg_decode_tps;
  rep.teacher_memory_bytes = tb.memory_bytes;
  rep.teacher_memory_source = tb.memory_source;
  rep.timestamp = "now";
  rep.device = "cpu";
  rep.dtype = "ternary-i2";
  rep.model_config_json = model_config_to_json(m.cfg);
  rep.agreement_reason = "not run";
  std::string text = eval_report_json(rep);
  json j = json::parse(text, nullptr, false);
  EXPECT_TRUE(j.is_object()) << text;
  if (rep_out) *rep_out = rep;
  return j;
}

}  // namespace

TEST(EvalReportJson, PocFieldsAndConsistency) {
  EvalReport rep;
  json j = make_report(/*teacher_right=*/4, /*drop_from_teacher=*/1, &rep);
  for (const char* k : {"timestamp", "device", "dtype", "tokenizer", "model_meta", "eval_config", "qei_metrics",
                        "results", "throughput", "memory", "quality", "agreement", "sources"})
    EXPECT_TRUE(j.contains(k)) << k;
  const json& q = j["qei_metrics"];
  for (const char* k : {"student_tps", "teacher_tps", "student_memory_gb", "teacher_memory_gb", "student_quality",
                        "teacher_quality", "qei", "qei_speed"})
    EXPECT_TRUE(q.contains(k)) << k;
  ASSERT_EQ(j["results"].size(), 9u);
  std::vector<double> s_scores, t_scores, tps;
  for (const json& e : j["results"]) {
    for (const char* k : {"prompt", "response", "generation_time_s", "tokens_generated", "tokens_per_second", "score"})
      EXPECT_TRUE(e.contains(k)) << k;
    EXPECT_EQ(e["tokens_generated"].get<int>() > 0, e["generation_time_s"].get<double>() > 0);
    if (e["counted"].get<bool>()) {
      ASSERT_TRUE(e["score"].is_number());
      s_scores.push_back(e["score"]);
      ASSERT_TRUE(e["teacher_score"].is_number());
      t_scores.push_back(e["teacher_score"]);
    }
    if (e["generation_time_s"].get<double>() > 0) tps.push_back(e["tokens_per_second"]);
  }
  // 8 scored prompts, one missing from the baseline, one unscored: 7 counted.
  EXPECT_EQ(s_scores.size(), 7u);
  EXPECT_NEAR(q["student_quality"].get<double>(), mean(s_scores), 1e-12);
  EXPECT_NEAR(q["teacher_quality"].get<double>(), mean(t_scores), 1e-12);
  EXPECT_NEAR(q["teacher_quality"].get<double>(), 4.0 / 7.0, 1e-12);
  EXPECT_NEAR(q["student_tps"].get<double>(), mean(tps), 1e-9);
  // Per family: the mean over that family's counted prompts, on both sides.
  std::map<std::string, std::vector<double>> fam_s, fam_t;
  for (const json& e : j["results"])
    if (e["counted"].get<bool>()) fam_s[e["task"]].push_back(e["score"]), fam_t[e["task"]].push_back(e["teacher_score"]);
  const json& sp = j["quality"]["student"]["per_task"];
  const json& tp = j["quality"]["teacher"]["per_task"];
  ASSERT_EQ(sp.size(), fam_s.size());
  ASSERT_EQ(tp.size(), fam_t.size());
  for (const auto& kv : fam_s) {
    EXPECT_EQ(sp[kv.first]["n"].get<size_t>(), kv.second.size()) << kv.first;
    EXPECT_NEAR(sp[kv.first]["score"].get<double>(), mean(kv.second), 1e-12) << kv.first;
    EXPECT_EQ(tp[kv.first]["n"].get<size_t>(), kv.second.size()) << kv.first;
    EXPECT_NEAR(tp[kv.first]["score"].get<double>(), mean(fam_t[kv.first]), 1e-12) << kv.first;
  }
  // Student: 9 prompts; teacher: tasks 1..7 and a failed prompt of its own.
  EXPECT_EQ(j["quality"]["matched_prompts"], 7);
  EXPECT_EQ(j["quality"]["student_only_prompts"], 2);  // task 0 and the unscored prompt
  EXPECT_EQ(j["quality"]["teacher_only_prompts"], 1);
  // Memory: components add up to the student memory.
  const json& wb = j["memory"]["weight_bytes"];
  double sum = wb["embeddings"].get<double>() + wb["norms"].get<double>() + wb["ternary_projections"].get<double>() +
               wb["head"].get<double>();
  EXPECT_EQ(sum, wb["total"].get<double>());
  EXPECT_NEAR(q["student_memory_gb"].get<double>(), sum / 1e9, 1e-15);
  EXPECT_NEAR(q["teacher_memory_gb"].get<double>(), 2.5, 1e-12);
  EXPECT_NEAR(q["teacher_tps"].get<double>(), 40.0, 1e-12);
  // QEI recomputed from the report's own inputs.
  ASSERT_TRUE(q["qei"].is_number()) << q.dump();
  double qei = (q["student_quality"].get<double>() / q["teacher_quality"].get<double>()) /
               (q["student_memory_gb"].get<double>() / q["teacher_memory_gb"].get<double>());
  EXPECT_NEAR(q["qei"].get<double>(), qei, 1e-9 * std::max(1.0, qei));
  double qs = qei * q["student_tps"].get<double>() / q["teacher_tps"].get<double>();
  EXPECT_NEAR(q["qei_speed"].get<double>(), qs, 1e-9 * std::max(1.0, qs));
}

TEST(EvalReportJson, TeacherScoredZeroGivesNullQei) {
  json j = make_report(/*teacher_right=*/0, /*drop_from_teacher=*/0, nullptr);
  const json& q = j["qei_metrics"];
  EXPECT_EQ(q["teacher_quality"].get<double>(), 0.0);
  EXPECT_TRUE(q["qei"].is_null());
  EXPECT_TRUE(q["qei_speed"].is_null());
  ASSERT_TRUE(q.contains("qei_reason"));
  EXPECT_NE(q["qei_reason"].get<std::string>().find("teacher quality is 0"), std::string::npos);
  EXPECT_EQ(j["quality"]["student_only_prompts"], 1);  // the unscored prompt
}

// A baseline whose teacher memory is unknown (null): QEI and its gates are
// not evaluated, and the reason names the variables that would fix it.
TEST(EvalReportJson, UnknownTeacherMemoryGivesNullQei) {
  std::string dir = bk_test::scratch_dir("eval_unknown_memory");
  json b = {{"memory_teacher_constant", nullptr},
            {"memory_teacher_source", "unknown: set TEACHER_CHECKPOINT or TEACHER_MEMORY_GB"},
            {"metrics", {{"avg_decode_tps_8k", 40.0}}},
            {"results", json::array()}};
  ASSERT_TRUE(write_file_atomic(dir + "/b.json", b.dump()).ok());
  TeacherBaseline tb;
  Status st = teacher_baseline_load(dir + "/b.json", &tb);
  ASSERT_TRUE(st.ok()) << st.msg;
  EXPECT_EQ(tb.memory_bytes, 0.0);
  const QeiResult r = qei_compute(0.3, 0.4, 0.0005, tb.memory_bytes / 1e9, 3000, 1500);
  EXPECT_FALSE(r.qei.defined);
  EXPECT_FALSE(r.qei_speed.defined);
  EXPECT_NE(r.qei.reason.find("TEACHER_MEMORY_GB"), std::string::npos) << r.qei.reason;
  EXPECT_NE(r.qei.reason.find("TEACHER_CHECKPOINT"), std::string::npos) << r.qei.reason;
  const std::vector<QeiGate> g = qei_gates(0.3, 0.4, r, 1.0, 10);
  ASSERT_GE(g.size(), 2u);
  EXPECT_EQ(g[0].status, std::string("not_evaluated"));
  EXPECT_EQ(g[1].status, std::string("not_evaluated"));
  EXPECT_NE(g[0].detail.find("TEACHER_MEMORY_GB"), std::string::npos) << g[0].detail;
  EXPECT_EQ(g[2].status, std::string("fail"));  // quality is known: 0.3 < 0.8 x 0.4
}

TEST(EvalReportJson, BaselineErrorsNameTheField) {
  std::string dir = bk_test::scratch_dir("eval_bad_baseline");
  TeacherBaseline tb;
  ASSERT_TRUE(write_file_atomic(dir + "/a.json", "{\"metrics\": {}, \"results\": []}").ok());
  Status st = teacher_baseline_load(dir + "/a.json", &tb);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("memory_teacher_constant"), std::string::npos) << st.msg;
  ASSERT_TRUE(write_file_atomic(dir + "/b.json", "[1, 2]").ok());
  st = teacher_baseline_load(dir + "/b.json", &tb);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("b.json"), std::string::npos) << st.msg;
}

// ---- no checkpoint --------------------------------------------------------------------------

TEST(EvalCli, NoCheckpointIsAClearError) {
  std::string dir = bk_test::scratch_dir("eval_no_ckpt");
  std::string out;
  int rc = bk_test::run_command(bk_test::bitkd_exe() + " eval --env-file /dev/null --artifacts '" + dir +
                                    "/art' --tokenizer '" + dir + "/none.model'",
                                &out);
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(out.find("no student checkpoint"), std::string::npos) << out;
  EXPECT_NE(out.find(dir + "/art/checkpoints"), std::string::npos) << out;
  EXPECT_FALSE(file_exists(dir + "/art/reports/mini_evaluation_report.json"));
}

// ---- dry run ---------------------------------------------------------------------------------

namespace {

DryRunRequest tiny_request() {
  DryRunRequest r;
  r.dim = 256;
  r.n_layers = 2;
  r.n_heads = 4;
  r.head_dim = 64;
  r.vocab = 500;
  r.vocab_source = "test";
  r.seq_len = 12;
  r.batch = 2;
  return r;
}

}  // namespace

TEST(DryRun, TinyConfigReportsFields) {
  DryRunRequest req = tiny_request();
  DryRunResult res;
  Status st = dryrun_run(req, &res);
  ASSERT_TRUE(st.ok()) << st.msg;
  json j = json::parse(dryrun_report_json(req, res, "now"));
  for (const char* k : {"config_requested", "config_used", "params", "runs", "peak_rss_bytes", "weight_bytes",
                        "bits_per_weight", "agreement", "fp16_weights"})
    EXPECT_TRUE(j.contains(k)) << k;
  // 2 layers of q,k,v,o (256x256) + gate, up (1024x256) + down (256x1024), untied vocab 500.
  const int64_t proj = 2 * (4 * 256 * 256 + 3 * 256 * 1024);
  const int64_t norms = 256 + 2 * (256 + 256 + 256 + 1024);
  EXPECT_EQ(j["params"]["count"].get<int64_t>(), proj + norms + 2 * 500 * 256);
  EXPECT_EQ(j["params"]["ternary_projections"].get<int64_t>(), proj);
  EXPECT_EQ(j["fp16_weights"]["bytes"].get<int64_t>(), 2 * j["params"]["count"].get<int64_t>());
  ASSERT_EQ(j["runs"].size(), 2u);
  EXPECT_EQ(j["runs"][0]["name"], "A8_forward");
  EXPECT_EQ(j["runs"][1]["name"], "A4_forward");
  for (const json& r : j["runs"]) {
    EXPECT_GE(r["time_s"].get<double>(), 0.0);
    EXPECT_EQ(r["shape"], json({2, 12, 500}));
    EXPECT_GT(r["memory"]["peak_gb"].get<double>(), 0.0);
    EXPECT_GE(r["memory"]["peak_gb"].get<double>() + 1e-12, r["memory"]["after_gb"].get<double>());
    EXPECT_TRUE(r["logits_finite"].get<bool>());
    EXPECT_GT(r["logit_rms"].get<double>(), 0.0);
    EXPECT_EQ(r["decode"]["tokens"], 16);  // single-token steps after the last row
    EXPECT_GT(r["decode"]["tokens_per_s"].get<double>(), 0.0);
  }
  // 256- and 1024-wide rows need no padding: 2 bits + one gamma per matrix.
  double bpw = j["bits_per_weight"]["ternary_projections"];
  EXPECT_GE(bpw, 2.0);
  EXPECT_LT(bpw, 2.001);
  const json& wb = j["weight_bytes"];
  EXPECT_EQ(wb["embeddings"].get<int64_t>(), 500 * (256 / 32) * 34);  // Q8_0 rows: 34 bytes per 32 values
  EXPECT_EQ(wb["head"].get<int64_t>(), 500 * (256 / 32) * 34);
  EXPECT_EQ(j["config_used"]["embedding_dtype"], "q8_0");
  EXPECT_EQ(wb["embeddings"].get<int64_t>() + wb["norms"].get<int64_t>() + wb["ternary_projections"].get<int64_t>() +
                wb["head"].get<int64_t>(),
            wb["total"].get<int64_t>());
  EXPECT_GT(j["peak_rss_bytes"].get<int64_t>(), 0);
  double top1 = j["agreement"]["top1"], cmean = j["agreement"]["cosine_mean"], cmin = j["agreement"]["cosine_min"];
  EXPECT_GE(top1, 0.0);
  EXPECT_LE(top1, 1.0);
  EXPECT_LE(cmin, cmean);
  EXPECT_GT(cmin, 0.5);  // A4 changes the logits, not beyond recognition
  EXPECT_LE(cmean, 1.0 + 1e-9);
  EXPECT_EQ(j["agreement"]["positions"], 24);
  EXPECT_EQ(j["config_used"]["ffn_dim"], 1024);
  EXPECT_EQ(j["config_requested"]["n_layers"], 2);

  // llama2-7b preset FFN and bad shapes.
  int ffn = 0;
  ASSERT_TRUE(dryrun_ffn_dim("llama2-7b", 4096, &ffn).ok());
  EXPECT_EQ(ffn, 11008);
  ASSERT_TRUE(dryrun_ffn_dim("poc", 4096, &ffn).ok());
  EXPECT_EQ(ffn, 16384);
  EXPECT_FALSE(dryrun_ffn_dim("gpt", 4096, &ffn).ok());
  DryRunRequest bad = tiny_request();
  bad.head_dim = 32;
  ModelConfig c;
  st = dryrun_model_config(bad, &c);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("DRYRUN_HEAD_DIM"), std::string::npos) << st.msg;
}

namespace {

std::vector<float> synthetic_logits(uint64_t seed, TernaryType layout, int threads, int act_bits = 8) {
  SyntheticWeightsOptions o;
  o.cfg.vocab_size = 300;
  o.cfg.dim = 128;
  o.cfg.n_layers = 2;
  o.cfg.n_heads = 2;
  o.cfg.n_kv_heads = 2;
  o.cfg.head_dim = 64;
  o.cfg.ffn_dim = 200;  // rows of 200: a tail in both layouts
  o.cfg.max_seq_len = 16;
  o.cfg.tie_embeddings = false;
  o.cfg.act_bits = act_bits;
  o.layout = layout;
  o.seed = seed;
  int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  WeightsPtr w;
  Status st = infer_weights_create_synthetic(o, &w.w);
  omp_set_num_threads(saved);
  EXPECT_TRUE(st.ok()) << st.msg;
  if (!st.ok()) return {};
  std::vector<int32_t> toks = dryrun_tokens(seed, 0, 10, 300);
  return session_logits(w.w, toks, false);
}

}  // namespace

TEST(DryRun, SyntheticWeightsDeterministicBySeed) {
  for (TernaryType layout : {TERNARY_I2, TERNARY_T1}) {
    std::vector<float> a = synthetic_logits(7, layout, 1), b = synthetic_logits(7, layout, 2),
                       c = synthetic_logits(8, layout, 2);
    ASSERT_FALSE(a.empty());
    EXPECT_EQ(a, b) << "same seed, different thread count";
    EXPECT_NE(a, c) << "another seed";
    for (float x : a) ASSERT_TRUE(std::isfinite(x));
  }
  EXPECT_NE(synthetic_logits(7, TERNARY_I2, 1), synthetic_logits(7, TERNARY_T1, 1));
}

TEST(DryRun, SyntheticCodesAreTernaryWithTheStatedMix) {
  // Pack a single projection through the public API and unpack it: every code
  // in {-1, 0, 1}, P(0) ~ 1/2, P(+-1) ~ 1/4, padding stays zero.
  for (TernaryType layout : {TERNARY_I2, TERNARY_T1}) {
    SyntheticWeightsOptions o;
    o.cfg.vocab_size = 64;
    o.cfg.dim = 200;
    o.cfg.n_layers = 1;
    o.cfg.n_heads = 2;
    o.cfg.n_kv_heads = 2;
    o.cfg.head_dim = 100;
    o.cfg.ffn_dim = 520;
    o.cfg.max_seq_len = 8;
    o.layout = layout;
    WeightsPtr w;
    Status st = infer_weights_create_synthetic(o, &w.w);
    ASSERT_TRUE(st.ok()) << st.msg;
    InferWeightBytes b;
    infer_weights_bytes_by_component(w.w, &b);
    EXPECT_EQ(b.projection_format, layout == TERNARY_I2 ? "ternary-i2" : "ternary-t1");
    EXPECT_EQ(b.total, infer_weights_bytes(w.w));
    if (layout == TERNARY_T1) EXPECT_LT(b.projection_bits_per_weight, 1.9);
    else EXPECT_GE(b.projection_bits_per_weight, 2.0);
  }
  // Code statistics through the packer's own decoder, rows with full blocks
  // and a tail (300 = 2 x 128 + 44 for I2, 160 + 140 for T1).
  for (TernaryType layout : {TERNARY_I2, TERNARY_T1}) {
    TernaryMatrix m, m2, m3;
    ASSERT_TRUE(synthetic_ternary_matrix(layout, 5, 3, 200, 300, 0.25f, &m).ok());
    ASSERT_TRUE(synthetic_ternary_matrix(layout, 5, 3, 200, 300, 0.25f, &m2).ok());
    ASSERT_TRUE(synthetic_ternary_matrix(layout, 5, 4, 200, 300, 0.25f, &m3).ok());
    EXPECT_EQ(m.data, m2.data);
    EXPECT_NE(m.data, m3.data);
    EXPECT_EQ(m.rows, 200);
    EXPECT_EQ(m.cols, 300);
    EXPECT_EQ(m.gamma, 0.25f);
    EXPECT_EQ(m.cols_pad, ternary_cols_pad(layout, 300));
    std::vector<int8_t> wq((size_t)200 * 300, 9);
    unpack_ternary(m, wq.data());
    int64_t n[3] = {0, 0, 0};
    for (int8_t v : wq) {
      ASSERT_TRUE(v >= -1 && v <= 1) << (int)v;
      n[v + 1]++;
    }
    const double N = (double)wq.size();
    printf("[%s] P(-1) %.4f P(0) %.4f P(+1) %.4f\n", layout == TERNARY_I2 ? "i2" : "t1", n[0] / N, n[1] / N, n[2] / N);
    EXPECT_NEAR(n[0] / N, 0.25, 0.01);
    EXPECT_NEAR(n[1] / N, 0.50, 0.01);
    EXPECT_NEAR(n[2] / N, 0.25, 0.01);
    // Repacking the decoded codes gives the same bytes: padding holds zero weights.
    TernaryMatrix re;
    ASSERT_TRUE((layout == TERNARY_I2 ? pack_ternary_i2(wq.data(), 200, 300, 0.25f, &re)
                                      : pack_ternary_t1(wq.data(), 200, 300, 0.25f, &re))
                    .ok());
    EXPECT_EQ(re.data, m.data);
    EXPECT_EQ(re.row_bytes, m.row_bytes);
    // The tail (the last 44 / 140 columns) follows the same mix.
    int64_t tail_zero = 0, tail_n = 0;
    const int tail0 = layout == TERNARY_I2 ? 256 : 160;
    for (int r = 0; r < 200; r++)
      for (int c = tail0; c < 300; c++) tail_zero += wq[(size_t)r * 300 + c] == 0, tail_n++;
    EXPECT_NEAR((double)tail_zero / tail_n, 0.5, 0.03);
  }
}
