// KD training (kd_train.h).
#include "train/kd_train.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/log.h"
#include "data/kd_schema.h"
#include "train/model_load.h"

namespace bk {

namespace {

// The KD half of a batch (the trainer's Batch holds tokens, mask, targets).
struct KdAux {
  int K = 0;
  std::vector<uint8_t> kd_mask, is_struct;
  std::vector<int32_t> topk_ids;
  std::vector<float> topk_logprobs, other_logprob;
};

// Counters across the run, for health files, metrics and the result.
struct KdRunStats {
  long long bad_kd = 0, other_clamped = 0, duplicate_ids = 0, kd_positions = 0, loss_calls = 0;
  int64_t epoch = 0;
  double kl_first = NAN, ce_first = NAN;
  std::vector<double> recent_kl, recent_ce;  // the last grad_accum micro-batches
};

double mean_of(const std::vector<double>& v) {
  if (v.empty()) return NAN;
  double s = 0;
  for (double x : v) s += x;
  return s / (double)v.size();
}

std::string loader_stats_json(const LoaderStats& st) {
  nlohmann::ordered_json j;
  j["epochs_completed"] = st.epochs_completed;
  j["step_rows"] = st.step_rows;
  j["bad_step_rows"] = st.bad_step_rows;
  j["bad_prompt_rows"] = st.bad_prompt_rows;
  j["prompts"] = st.prompts;
  j["prompts_used"] = st.prompts_used;
  j["prompts_filtered"] = st.prompts_filtered;
  j["examples_repeated"] = st.examples_repeated;
  j["examples_weighted_out"] = st.examples_weighted_out;
  j["prompts_missing_row"] = st.prompts_missing_row;
  j["prompts_no_target"] = st.prompts_no_target;
  j["prompts_error"] = st.prompts_error;
  j["tokenizer_mismatch_shards"] = st.tokenizer_mismatch_shards;
  j["steps_aligned"] = st.align.steps_aligned;
  j["steps_invalid"] = st.align.steps_invalid;
  j["steps_unaligned"] = st.align.steps_unaligned;
  j["steps_truncated"] = st.align.steps_truncated;
  j["steps_bad_ids"] = st.align.steps_bad_ids;
  j["positions_kd"] = st.align.positions_kd;
  j["positions_ce"] = st.align.positions_ce;
  j["examples"] = st.examples;
  j["batches"] = st.batches;
  if (!st.first_error.empty()) j["first_problem"] = st.first_error;
  return j.dump();
}

// The next batch of a looping loader, exactly [batch, seq].
Status next_full_batch(KdLoader* l, const LoaderOptions& lo, LoaderBatch* out) {
  bool done = false;
  BK_TRY(loader_next(l, out, &done));
  if (done || out->B == 0)
    return errorf("KD training: the loader ran out of data (%s)", loader_stats_line(loader_stats(*l)).c_str());
  if (out->B != lo.batch_size || out->T != lo.max_seq_len)
    return errorf("KD training: the loader gave a [%d, %d] batch, expected [%d, %d]", out->B, out->T, lo.batch_size,
                  lo.max_seq_len);
  return ok_status();
}

}  // namespace

Status kd_scan_shards(const std::vector<std::string>& shards, KdShardScan* out) {
  *out = KdShardScan();
  for (const std::string& path : shards) {
    KdReadOptions ro;
    ro.skip_bad_rows = true;
    ro.allow_missing_bitkd_columns = true;
    KdStepReader r;
    BK_TRY(r.open(path, ro));
    std::vector<KdStep> rows;
    for (int g = 0; g < r.num_row_groups(); g++) {
      BK_TRY(r.read_row_group(g, &rows));
      for (const KdStep& st : rows) out->valid_rows += st.valid;
      out->rows += (int64_t)rows.size();
    }
    out->bad_rows += r.stats().bad_rows;
    if (out->first_bad.empty()) out->first_bad = r.stats().first_bad;  // names the file, row and column
    out->shards++;
  }
  return ok_status();
}

Status student_from_teacher(const std::string& path, const ModelConfig& quant, uint64_t seed, Model* m, int* copied) {
  Model t;
  BK_TRY(with_context(model_load_any(path, &t, nullptr), "the model to initialise the student from"));
  ModelConfig c = t.cfg;
  c.weight_quant = quant.weight_quant;
  c.act_bits = quant.act_bits;
  c.a4_scope = quant.a4_scope;
  c.subln = true;  // BitNet b1.58 normalises the inputs of o_proj and down_proj
  c.max_seq_len = std::max(c.max_seq_len, quant.max_seq_len);
  BK_TRY(model_init(m, c, seed));
  *copied = 0;
  for (const ParamInfo& p : m->info) {
    const ParamInfo* q = model_find_param(t, p.name);
    if (!q || q->numel != p.numel) continue;
    std::copy(t.params.begin() + q->offset, t.params.begin() + q->offset + q->numel, m->params.begin() + p.offset);
    (*copied)++;
  }
  return ok_status();
}

Status kd_train_run(const KdTrainOptions& o, const Tokenizer& student, Model* m, KdTrainResult* out) {
  *out = KdTrainResult();
  const TrainerOptions& opt = o.trainer;
  BK_TRY(kd_loss_config_validate(o.loss));
  LoaderOptions lo = o.data;
  if (lo.pack)
    return errorf("KD_PACK=1: packing several examples per row needs attention that respects segment ids, which "
                  "the training engine does not have; set KD_PACK=0");
  lo.batch_size = opt.batch;
  lo.max_seq_len = opt.seq;
  lo.seed = opt.seed;
  lo.trim_batch = false;  // the trainer's activations are sized for [batch, seq]
  lo.loop = true;
  lo.start_batch = 0;
  KdLoader loader;
  BK_TRY(loader_open(lo, student, &loader));
  out->data_dir = lo.data_dir;

  KdShardScan scan;
  BK_TRY(kd_scan_shards(loader_shards(loader), &scan));
  if (scan.rows == 0)
    return errorf("%lld KD shard(s) in %s hold no readable teacher step (%lld bad rows%s%s): nothing to train on; "
                  "collect traces with `bitkd collect`",
                  (long long)scan.shards, lo.data_dir.c_str(), (long long)scan.bad_rows,
                  scan.first_bad.empty() ? "" : "; first: ", scan.first_bad.c_str());
  if (scan.valid_rows == 0 && o.loss.kd_weight > 0)
    return errorf("all %lld teacher steps in %s are marked invalid (valid=false: non-finite logprobs or top-K mass "
                  "outside (0, 1]): there is no teacher distribution to distil. Check the collector's stats "
                  "(logs/collect_stats.json), or train on the responses alone with --kd-weight 0",
                  (long long)scan.rows, lo.data_dir.c_str());
  if (scan.bad_rows)
    BK_LOG_WARN("%s: %lld unreadable step row(s) will be skipped (first: %s)", opt.label.c_str(),
                (long long)scan.bad_rows, scan.first_bad.c_str());
  BK_LOG_INFO("%s: %lld shard(s) in %s, %lld teacher steps (%lld valid, %lld invalid, %lld unreadable)",
              opt.label.c_str(), (long long)scan.shards, lo.data_dir.c_str(), (long long)scan.rows,
              (long long)scan.valid_rows, (long long)(scan.rows - scan.valid_rows), (long long)scan.bad_rows);
  if (opt.resume_from.empty() && o.init_from.empty()) BK_TRY(model_init(m, o.model, opt.seed));
  if (opt.resume_from.empty() && !o.init_from.empty()) {
    int copied = 0;
    BK_TRY(student_from_teacher(o.init_from, o.model, opt.seed, m, &copied));
    if (m->cfg.vocab_size < tokenizer_vocab_size(student))
      return errorf("%s has a vocabulary of %d but the student tokenizer has %d pieces: a student initialised from "
                    "a teacher needs the teacher's tokenizer (TOKENIZER_NAME)",
                    o.init_from.c_str(), m->cfg.vocab_size, tokenizer_vocab_size(student));
    BK_LOG_INFO("%s: student initialised from %s (%d tensors copied): %s", opt.label.c_str(), o.init_from.c_str(),
                copied, model_config_to_json(m->cfg).c_str());
  }

  const KdLossConfig& lc = o.loss;
  KdAux aux;
  KdRunStats rs;
  rs.recent_kl.reserve(opt.grad_accum);
  LoaderBatch kb;
  TrainerCallbacks cb;
  cb.next_batch = [&](Batch* b, Rng*) -> Status {
    BK_TRY(next_full_batch(&loader, lo, &kb));
    batch_resize(b, kb.B, kb.T);
    b->tokens.swap(kb.tokens);
    b->key_mask.swap(kb.key_mask);
    b->targets.swap(kb.targets);
    for (size_t i = 0; i < b->targets.size(); i++) b->weights[i] = b->targets[i] >= 0 ? 1.0f : 0.0f;
    b->real_tokens = kb.loss_tokens;
    aux.K = kb.K;
    aux.kd_mask.swap(kb.kd_mask);
    aux.is_struct.swap(kb.is_struct);
    aux.topk_ids.swap(kb.topk_ids);
    aux.topk_logprobs.swap(kb.topk_logprobs);
    aux.other_logprob.swap(kb.other_logprob);
    rs.epoch = kb.epoch;
    b->user = &aux;
    return ok_status();
  };
  cb.loss = [&](float* logits, const Batch& b, const Model& mm, LossResult* res) -> Status {
    const KdAux* x = static_cast<const KdAux*>(b.user);
    if (!x) return errorf("KD training: batch without KD targets");
    KdTargets t;
    t.n = b.batch * b.seq;
    t.K = x->K;
    t.targets = b.targets.data();
    t.kd_mask = x->kd_mask.data();
    t.is_struct = x->is_struct.data();
    t.topk_ids = x->topk_ids.data();
    t.topk_logprobs = x->topk_logprobs.data();
    t.other_logprob = x->other_logprob.data();
    KdLossParts p;
    kd_loss_forward_backward(logits, mm.cfg.vocab_size, t, lc, &p);
    res->loss = p.loss;
    res->metrics = {{"kl", p.kd_mean}, {"ce", p.ce_mean}, {"format", p.format_mean}};
    rs.bad_kd += p.bad_kd;
    rs.other_clamped += p.other_clamped;
    rs.duplicate_ids += p.duplicate_ids;
    rs.kd_positions += p.kd_positions;
    if (rs.loss_calls == 0) rs.kl_first = p.kd_mean, rs.ce_first = p.ce_mean;
    rs.loss_calls++;
    if ((int)rs.recent_kl.size() == opt.grad_accum)
      rs.recent_kl.erase(rs.recent_kl.begin()), rs.recent_ce.erase(rs.recent_ce.begin());
    rs.recent_kl.push_back(p.kd_mean);
    rs.recent_ce.push_back(p.ce_mean);
    return ok_status();
  };
  auto position_json = [&]() {
    nlohmann::ordered_json j;
    j["batches"] = loader_position(loader);
    j["epoch"] = rs.epoch;
    return j;
  };
  cb.save_position = [&]() { return position_json().dump(); };
  cb.restore_position = [&](const std::string& s) -> Status {
    int64_t start = 0;
    try {
      nlohmann::json j = nlohmann::json::parse(s);
      start = j.at("batches").get<int64_t>();
    } catch (const std::exception& e) {
      return errorf("data_position '%s' is not a KD training position (%s)", s.c_str(), e.what());
    }
    LoaderOptions ro = lo;
    ro.start_batch = start;
    BK_LOG_INFO("%s: resuming the data stream after %lld batches", opt.label.c_str(), (long long)start);
    return loader_open(ro, student, &loader);
  };
  auto nan_guards = [&]() { return rs.bad_kd + (long long)loader_stats(loader).bad_step_rows; };
  cb.extra_json = [&]() {
    nlohmann::ordered_json j;
    j["kd_loss"] = kd_divergence_name(lc.divergence);
    j["kd_weight"] = lc.kd_weight;
    j["nan_guards"] = nan_guards();
    j["bad_kd_buckets"] = rs.bad_kd;
    j["bad_step_rows"] = (long long)loader_stats(loader).bad_step_rows;
    j["other_clamped"] = rs.other_clamped;
    j["kd_positions"] = rs.kd_positions;
    j["data_position"] = position_json();
    return j.dump();
  };
  TrainerOptions topt = opt;
  Model relation_teacher;
  if (o.attn_relation_weight > 0) {
    if (o.attn_relation_teacher.empty())
      return errorf("KD_ATTN_RELATION_WEIGHT=%g compares the student's attention with the teacher's: pass the teacher's "
                    "weights with --init-from (STUDENT_INIT)",
                    o.attn_relation_weight);
    BK_TRY(with_context(model_load_any(o.attn_relation_teacher, &relation_teacher, nullptr),
                        "attention-relation teacher"));
    // RoPE has no parameters: the teacher runs at the student's sequence length
    // as the student it initialized does.
    relation_teacher.cfg.max_seq_len = std::max(relation_teacher.cfg.max_seq_len, opt.seq);
    topt.relation_teacher = &relation_teacher;
    topt.relation_weight = o.attn_relation_weight;
    topt.relation_layer = o.attn_relation_layer;
  }
  BK_TRY(trainer_run(m, topt, cb, &out->train));
  out->first_kl = rs.kl_first;
  out->last_kl = mean_of(rs.recent_kl);
  out->first_ce = rs.ce_first;
  out->last_ce = mean_of(rs.recent_ce);
  out->act_bits = m->cfg.act_bits;
  out->nan_guards = nan_guards();
  out->data_stats_json = loader_stats_json(loader_stats(loader));
  out->data_stats_line = loader_stats_line(loader_stats(loader));
  return ok_status();
}

}  // namespace bk
