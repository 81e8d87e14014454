#include "train/trainer.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/dist.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/timing.h"
#include "kernels/cpu/kernels.h"
#include "model/activations.h"
#include "train/attn_relation.h"
#include "train/loss.h"

namespace bk {

void batch_resize(Batch* b, int batch, int seq) {
  const size_t n = (size_t)batch * seq;
  b->batch = batch;
  b->seq = seq;
  b->tokens.assign(n, 0);
  b->key_mask.assign(n, 0);
  b->targets.assign(n, -1);
  b->weights.assign(n, 0.0f);
  b->real_tokens = 0;
}

namespace {

struct ActsDeleter {
  void operator()(Activations* a) const { activations_destroy(a); }
};

struct FileCloser {
  void operator()(FILE* f) const {
    if (f) fclose(f);
  }
};

Status check_options(const TrainerOptions& o, const TrainerCallbacks& cb) {
  if (!cb.next_batch) return errorf("trainer: no batch source");
  if (o.batch <= 0) return errorf("TRAIN_BATCH_SIZE=%d must be >= 1", o.batch);
  if (o.seq <= 1) return errorf("MAX_SEQ_LEN=%d must be >= 2", o.seq);
  if (o.grad_accum <= 0) return errorf("GRAD_ACCUM_STEPS=%d must be >= 1", o.grad_accum);
  if (o.total_steps < 0) return errorf("TOTAL_STEPS=%ld must be >= 0", o.total_steps);
  if (o.log_interval <= 0) return errorf("LOG_INTERVAL=%ld must be >= 1", o.log_interval);
  if (o.checkpoint_interval < 0) return errorf("CHECKPOINT_INTERVAL=%ld must be >= 0", o.checkpoint_interval);
  if (o.flip_at_tokens > 0 && o.flip_bits != 4 && o.flip_bits != 8 && o.flip_bits != 0)
    return errorf("flip target %d bits: expected 4, 8 or 0", o.flip_bits);
  return schedule_validate(o.sched);
}

// Merges a JSON object string's fields into j ("" or invalid: ignored with a warning).
void merge_json(nlohmann::ordered_json* j, const std::string& extra) {
  if (extra.empty()) return;
  try {
    nlohmann::ordered_json e = nlohmann::ordered_json::parse(extra);
    if (e.is_object())
      for (auto it = e.begin(); it != e.end(); ++it) (*j)[it.key()] = it.value();
  } catch (const std::exception& ex) {
    BK_LOG_WARN("trainer: ignoring extra metrics that are not JSON: %s", ex.what());
  }
}

std::string fmt_g(double v) {
  char buf[32];
  snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

}  // namespace

Status trainer_run(Model* m, const TrainerOptions& o, const TrainerCallbacks& cb, TrainResult* out) {
  BK_TRY(check_options(o, cb));
  *out = TrainResult();
  TrainState st;
  rng_seed(&st.rng, o.seed);
  st.summary_json = o.summary_json;
  Optimizer opt;
  if (!o.resume_from.empty()) {
    BK_TRY(checkpoint_load(o.resume_from, m, &st));
    BK_TRY(checkpoint_load_optimizer(o.resume_from, *m, o.adam, &opt, nullptr));
    if (cb.restore_position) BK_TRY(with_context(cb.restore_position(st.data_position), o.resume_from));
    st.summary_json = o.summary_json;
    BK_LOG_INFO("%s: resumed from %s at step %ld (%lld tokens seen, activations %d-bit%s)", o.label.c_str(),
                o.resume_from.c_str(), st.step, st.seen_tokens, m->cfg.act_bits,
                st.flip.flip_done ? ", flipped" : "");
  } else {
    if (m->params.empty()) return errorf("trainer: the model is not initialised");
    BK_TRY(optimizer_init(&opt, o.adam, m->info, m->params.size()));
    st.flip.current_bits = m->cfg.act_bits;
  }
  if (o.seq > m->cfg.max_seq_len)
    return errorf("sequence length %d exceeds the model's max_seq_len %d", o.seq, m->cfg.max_seq_len);
  if (m->grads.size() != m->params.size()) model_alloc_grads(m);

  std::unique_ptr<Activations, ActsDeleter> acts(activations_create(*m, o.batch, o.seq));
  if (!acts) return errorf("trainer: cannot allocate activations for batch %d x seq %d", o.batch, o.seq);
  // Data parallel (core/dist): every rank reads the whole batch stream (so the
  // data position, the RNG and the seen tokens are those of one process) and
  // computes the micro-batches k with k % ranks == rank; gradients, losses
  // and metrics are summed over ranks, every rank takes the same AdamW step,
  // and rank 0 writes checkpoints and metrics.
  const int ranks = dist_size(), rank = dist_rank();
  const bool writer = rank == 0;
  if (o.grad_accum % ranks != 0)
    return errorf("GRAD_ACCUM=%d is not a multiple of the %d MPI ranks: each rank computes an equal share of every "
                  "step's micro-batches (the global batch is TRAIN_BATCH_SIZE x GRAD_ACCUM, as in one process); use "
                  "--grad-accum %d",
                  o.grad_accum, ranks, ((o.grad_accum + ranks - 1) / ranks) * ranks);
  // With several micro-batches per step each one's gradient is computed alone
  // and added in micro-batch order, so a step's sum is the same whether one
  // process or one rank per micro-batch computed the terms.
  std::vector<float> grad_sum(o.grad_accum > 1 ? m->params.size() : 0);
  // Attention-relation distillation: the teacher's activations and the
  // student's extra q/k/v gradients for the chosen layer.
  const bool relation = o.relation_weight > 0;
  std::unique_ptr<Activations, ActsDeleter> tacts;
  std::vector<float> rel_dq, rel_dk, rel_dv;
  AttnRelationShape rel_shape;
  int rel_layer = -1;
  if (relation) {
    const ModelConfig &sc = m->cfg, &tc = o.relation_teacher ? o.relation_teacher->cfg : sc;
    if (!o.relation_teacher)
      return errorf("attention-relation distillation needs a teacher model (KD_ATTN_RELATION_WEIGHT > 0)");
    if (tc.n_layers != sc.n_layers || tc.n_heads != sc.n_heads || tc.n_kv_heads != sc.n_kv_heads ||
        tc.head_dim != sc.head_dim)
      return errorf("attention-relation distillation compares the teacher's and the student's heads one to one: the "
                    "teacher has %d layers of %d heads (%d key/value) of %d, the student %d of %d (%d) of %d; "
                    "initialize the student from the teacher (--init-from)",
                    tc.n_layers, tc.n_heads, tc.n_kv_heads, tc.head_dim, sc.n_layers, sc.n_heads, sc.n_kv_heads,
                    sc.head_dim);
    rel_layer = o.relation_layer < 0 ? sc.n_layers - 1 : o.relation_layer;
    if (rel_layer >= sc.n_layers)
      return errorf("KD_ATTN_RELATION_LAYER=%d: the model has layers 0..%d (-1: the last)", o.relation_layer,
                    sc.n_layers - 1);
    tacts.reset(activations_create(*o.relation_teacher, o.batch, o.seq));
    if (!tacts) return errorf("trainer: cannot allocate the relation teacher's activations");
    rel_shape = {o.batch, o.seq, sc.n_heads, sc.n_kv_heads, sc.head_dim};
    rel_dq.resize((size_t)o.batch * o.seq * sc.n_heads * sc.head_dim);
    rel_dk.resize((size_t)o.batch * o.seq * sc.n_kv_heads * sc.head_dim);
    rel_dv.resize(rel_dk.size());
  }
  std::unique_ptr<FILE, FileCloser> metrics;
  if (!o.metrics_path.empty() && writer) {
    std::string dir = path_dirname(o.metrics_path);
    if (!dir.empty() && dir != ".") BK_TRY(make_dirs(dir));
    metrics.reset(fopen(o.metrics_path.c_str(), "a"));
    if (!metrics) return errorf("cannot open %s for appending: %s", o.metrics_path.c_str(), strerror(errno));
  }

  const long start_step = st.step;
  const long todo = o.total_steps > start_step ? o.total_steps - start_step : 0;
  const double t0 = now_seconds();
  const long long tokens_per_step = (long long)o.batch * o.seq * o.grad_accum;
  Progress prog;
  const bool progress = o.progress && writer;
  if (progress) progress_begin(&prog, o.label, todo);

  // Interval accumulators for the metrics line.
  double iv_loss = 0, iv_t0 = t0;
  long iv_steps = 0, iv_losses = 0;
  std::map<std::string, double> iv_metrics;
  std::vector<std::string> metric_order;
  Batch b;
  const int vocab = m->cfg.vocab_size;
  bool saved_at_last = false;

  for (long step = start_step; step < o.total_steps; step++) {
    // The activation flip happens between steps, once the budget fraction is reached.
    if (o.flip_at_tokens > 0 && !st.flip.flip_done && st.seen_tokens >= o.flip_at_tokens) {
      m->cfg.act_bits = o.flip_bits;
      st.flip.flip_done = true;
      st.flip.flip_step = step;
      st.flip.flip_tokens = st.seen_tokens;
      BK_LOG_INFO("%s: step %ld: %lld tokens seen >= %lld, activations now %d-bit", o.label.c_str(), step,
                  st.seen_tokens, o.flip_at_tokens, o.flip_bits);
    }
    st.flip.current_bits = m->cfg.act_bits;
    const ScheduleValue sv = schedule_at(o.sched, step, o.adam.weight_decay);

    model_zero_grads(m);
    double loss_sum = 0;
    std::vector<std::pair<std::string, double>> step_metrics;  // this step's loss metrics (sums, then means)
    int mine = 0;  // micro-batches this rank computed
    for (int micro = 0; micro < o.grad_accum; micro++) {
      BK_TRY(cb.next_batch(&b, &st.rng));
      if (b.batch != o.batch || b.seq != o.seq)
        return errorf("trainer: batch source gave [%d, %d], expected [%d, %d]", b.batch, b.seq, o.batch, o.seq);
      st.seen_tokens += b.real_tokens;
      if (micro % ranks != rank) continue;
      if (!grad_sum.empty()) model_zero_grads(m);
      BK_TRY(model_forward(m, acts.get(), b.tokens.data(), b.key_mask.data(), b.batch, b.seq));
      float* logits = activations_logits(acts.get());
      LossResult lr;
      if (cb.loss) {
        BK_TRY(cb.loss(logits, b, *m, &lr));
      } else {
        lr.loss = ce_loss_forward_backward(logits, b.targets.data(), b.weights.data(), b.batch * b.seq, vocab,
                                           nullptr);
      }
      if (relation) {
        const uint8_t* km = b.key_mask.empty() ? nullptr : b.key_mask.data();
        BK_TRY(model_forward(o.relation_teacher, tacts.get(), b.tokens.data(), km, b.batch, b.seq));
        const LayerActs &ls = acts->layers[rel_layer], &lt = tacts->layers[rel_layer];
        const double rl = attn_relation_forward_backward(ls.q, ls.k, ls.v, lt.q, lt.k, lt.v, km, rel_shape,
                                                         o.relation_weight, rel_dq.data(), rel_dk.data(),
                                                         rel_dv.data());
        acts->extra_qkv_layer = rel_layer;
        acts->extra_dq = rel_dq.data(), acts->extra_dk = rel_dk.data(), acts->extra_dv = rel_dv.data();
        lr.loss += o.relation_weight * rl;
        lr.metrics.push_back({"attn_rel", rl});
      }
      BK_TRY(model_backward(m, acts.get()));
      if (!grad_sum.empty()) {
        if (mine == 0) std::copy(m->grads.begin(), m->grads.end(), grad_sum.begin());
        else
          for (size_t i = 0; i < grad_sum.size(); i++) grad_sum[i] += m->grads[i];
      }
      mine++;
      loss_sum += lr.loss;
      for (auto& kv : lr.metrics) {
        bool have = false;
        for (auto& sm : step_metrics)
          if (sm.first == kv.first) sm.second += kv.second, have = true;
        if (!have) step_metrics.emplace_back(kv.first, kv.second);
      }
    }
    if (!grad_sum.empty()) std::copy(grad_sum.begin(), grad_sum.end(), m->grads.begin());
    if (ranks > 1) {
      // One sum for the gradients, one for the loss and the metrics (every
      // rank has the same metric names in the same order: same loss function).
      const double tc = now_seconds();
      BK_TRY(dist_allreduce_sum(m->grads.data(), m->grads.size()));
      std::vector<double> sums = {loss_sum};
      for (auto& sm : step_metrics) sums.push_back(sm.second);
      BK_TRY(dist_allreduce_sum(sums.data(), sums.size()));
      loss_sum = sums[0];
      for (size_t i = 0; i < step_metrics.size(); i++) step_metrics[i].second = sums[1 + i];
      out->allreduce_s += now_seconds() - tc;
    }
    for (auto& sm : step_metrics) {
      sm.second /= o.grad_accum;
      if (!iv_metrics.count(sm.first)) metric_order.push_back(sm.first);
      iv_metrics[sm.first] += sm.second;
    }
    // Each micro-batch's loss is its own mean; the step's gradient is their average.
    if (o.grad_accum > 1) vec_scale(m->grads.data(), m->grads.size(), 1.0f / (float)o.grad_accum);
    const double loss = loss_sum / o.grad_accum;
    StepStats ss = optimizer_step(&opt, m->params.data(), m->grads.data(), m->params.size(), sv.lr,
                                  sv.weight_decay, loss);
    if (ss.skipped)
      BK_LOG_WARN("%s: step %ld: non-finite %s, update skipped (%ld so far)", o.label.c_str(), step + 1,
                  std::isfinite(loss) ? "gradient norm" : "loss", opt.skipped);
    st.step = step + 1;
    st.last_loss = loss;
    if (out->steps_this_run == 0) out->first_loss = loss;
    out->steps_this_run++;
    iv_steps++;
    if (std::isfinite(loss)) iv_loss += loss, iv_losses++;

    const bool last = st.step == o.total_steps;
    const double now = now_seconds();
    const double run_tps = tokens_per_step * (double)out->steps_this_run / std::max(1e-9, now - t0);
    if (st.step % o.log_interval == 0 || last) {
      const double iv_tps = tokens_per_step * (double)iv_steps / std::max(1e-9, now - iv_t0);
      nlohmann::ordered_json j;
      j["step"] = st.step;
      j["loss"] = iv_losses ? nlohmann::ordered_json(iv_loss / iv_losses) : nlohmann::ordered_json();
      j["lr"] = sv.lr;
      j["weight_decay"] = sv.weight_decay;
      j["grad_norm"] = std::isfinite(ss.grad_norm) ? nlohmann::ordered_json(ss.grad_norm) : nlohmann::ordered_json();
      j["tokens_per_s"] = iv_tps;
      j["seen_tokens"] = st.seen_tokens;
      j["act_bits"] = m->cfg.act_bits;
      j["skipped_steps"] = opt.skipped;
      if (o.sched.two_stage) j["stage"] = sv.stage;
      for (const std::string& k : metric_order) j[k] = iv_metrics[k] / (double)iv_steps;
      if (cb.extra_json) merge_json(&j, cb.extra_json());
      j["elapsed_s"] = now - t0;
      j["timestamp"] = utc_timestamp_iso();
      if (metrics) {
        fprintf(metrics.get(), "%s\n", j.dump().c_str());
        fflush(metrics.get());
      }
      if (!progress || !prog.tty)
        BK_LOG_INFO("%s: step %ld/%ld loss %.4f lr %.3g grad_norm %.3g %.0f tok/s A%d%s", o.label.c_str(), st.step,
                    o.total_steps, iv_losses ? iv_loss / iv_losses : NAN, sv.lr, ss.grad_norm, iv_tps,
                    m->cfg.act_bits, opt.skipped ? (" skipped " + std::to_string(opt.skipped)).c_str() : "");
      iv_loss = 0, iv_losses = 0, iv_steps = 0, iv_t0 = now;
      for (auto& kv : iv_metrics) kv.second = 0;
    }

    const bool ckpt_due = o.checkpoint_interval > 0 && st.step % o.checkpoint_interval == 0;
    if (!o.checkpoint_dir.empty() && (ckpt_due || last) && writer) {
      if (cb.save_position) st.data_position = cb.save_position();
      // The health file: the step's optimizer state and loss metrics, then the caller's extras.
      nlohmann::ordered_json hx;
      hx["lr"] = sv.lr;
      hx["grad_norm"] = std::isfinite(ss.grad_norm) ? nlohmann::ordered_json(ss.grad_norm) : nlohmann::ordered_json();
      hx["tokens_per_s"] = run_tps;
      hx["skipped_steps"] = opt.skipped;
      hx["flip_step"] = st.flip.flip_step;
      hx["flip_tokens"] = st.flip.flip_tokens;
      for (auto& kv : step_metrics) hx[kv.first] = kv.second;
      if (cb.extra_json) merge_json(&hx, cb.extra_json());
      BK_TRY(checkpoint_save(o.checkpoint_dir, *m, &opt, &o.sched, st, hx.dump(), o.keep_checkpoints,
                             &out->last_checkpoint));
      saved_at_last = last;
      BK_LOG_DEBUG("%s: saved %s", o.label.c_str(), out->last_checkpoint.c_str());
    }
    if (progress) {
      std::string bar = "step " + std::to_string(st.step) + " loss " + fmt_g(loss);
      for (auto& kv : step_metrics) bar += " " + kv.first + " " + fmt_g(kv.second);
      progress_update(&prog, out->steps_this_run, bar + " lr " + fmt_g(sv.lr) + " A" + std::to_string(m->cfg.act_bits),
                      run_tps, "tok/s");
    }
  }
  // Nothing left to do (resumed at or past total_steps): make sure the latest
  // state is on disk anyway when asked for checkpoints.
  if (todo == 0 && !o.checkpoint_dir.empty() && !saved_at_last && o.resume_from.empty() && writer) {
    if (cb.save_position) st.data_position = cb.save_position();
    BK_TRY(checkpoint_save(o.checkpoint_dir, *m, &opt, &o.sched, st, cb.extra_json ? cb.extra_json() : "",
                           o.keep_checkpoints, &out->last_checkpoint));
  }
  const double wall = now_seconds() - t0;
  if (progress && todo > 0) progress_end(&prog, "loss " + fmt_g(st.last_loss));
  out->steps_done = st.step;
  out->last_loss = st.last_loss;
  out->skipped = opt.skipped;
  out->seen_tokens = st.seen_tokens;
  out->flip = st.flip;
  out->wall_s = wall;
  out->ranks = ranks;
  out->tokens_per_s = wall > 0 ? tokens_per_step * (double)out->steps_this_run / wall : 0;
  if (out->last_checkpoint.empty() && !o.resume_from.empty()) out->last_checkpoint = o.resume_from;
  return ok_status();
}

}  // namespace bk
