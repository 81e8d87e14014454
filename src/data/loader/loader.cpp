#include "data/loader/loader.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>
#include <unordered_set>

#include "core/fs.h"
#include "core/log.h"
#include "core/rng.h"
#include "data/kd_schema.h"
#include "io/config.h"

namespace bk {

std::string loader_stats_line(const LoaderStats& s) {
  char buf[1024];
  snprintf(buf, sizeof buf,
           "shards=%lld epochs=%lld step_rows=%lld bad_step_rows=%lld prompt_rows=%lld bad_prompt_rows=%lld "
           "prompts=%lld used=%lld filtered=%lld repeated=%lld weighted_out=%lld missing_row=%lld no_target=%lld error=%lld split=%lld offsets_derived=%lld "
           "tokenizer_mismatch_shards=%lld steps=%lld aligned=%lld invalid=%lld unaligned=%lld duplicate=%lld "
           "truncated=%lld bad_ids=%lld kd_positions=%lld ce_positions=%lld examples=%lld batches=%lld",
           (long long)s.shards_opened, (long long)s.epochs_completed, (long long)s.step_rows,
           (long long)s.bad_step_rows, (long long)s.prompt_rows, (long long)s.bad_prompt_rows, (long long)s.prompts,
           (long long)s.prompts_used, (long long)s.prompts_filtered, (long long)s.examples_repeated,
           (long long)s.examples_weighted_out, (long long)s.prompts_missing_row, (long long)s.prompts_no_target,
           (long long)s.prompts_error, (long long)s.prompts_split, (long long)s.offsets_derived,
           (long long)s.tokenizer_mismatch_shards, (long long)s.align.steps, (long long)s.align.steps_aligned,
           (long long)s.align.steps_invalid, (long long)s.align.steps_unaligned, (long long)s.align.steps_duplicate,
           (long long)s.align.steps_truncated, (long long)s.align.steps_bad_ids, (long long)s.align.positions_kd,
           (long long)s.align.positions_ce, (long long)s.examples, (long long)s.batches);
  return buf;
}

struct KdLoaderImpl {
  LoaderOptions opt;
  const Tokenizer* tok = nullptr;
  std::vector<std::string> shards;  // listed order
  std::vector<std::string> order;   // this epoch's order
  LoaderStats stats;
  Rng rng;
  int64_t epoch = 0;
  int64_t epoch_examples = 0;
  int64_t delivered = 0;
  bool replayed = false;
  // current shard
  size_t shard_pos = 0;
  bool shard_open = false;
  bool check_row_hash = false;
  bool shard_drained = false;  // every row read; closes on the next call
  std::string shard_path;
  std::unique_ptr<KdStepReader> reader;  // not movable: owned by pointer
  std::unordered_map<int64_t, KdPrompt> prompts;
  bool have_prompts = false;
  int rg = 0;
  std::vector<KdStep> rows;
  size_t row_pos = 0;
  std::vector<KdStep> group;
  std::unordered_set<int64_t> seen_prompts;
  // examples
  std::vector<AlignedExample> buffer;
  bool epoch_source_done = false;
  AlignedExample carry;
  bool has_carry = false;
};

KdLoader::KdLoader() = default;
KdLoader::~KdLoader() = default;
KdLoader::KdLoader(KdLoader&&) noexcept = default;
KdLoader& KdLoader::operator=(KdLoader&&) noexcept = default;

namespace {

std::string prompts_path_for(const std::string& shard) {
  std::string base = path_basename(shard);
  const std::string pre = "kd_shard_";
  if (base.compare(0, pre.size(), pre) != 0) return "";
  return path_join(path_dirname(shard), "kd_prompts_" + base.substr(pre.size()));
}

void note(KdLoaderImpl* L, const std::string& what) {
  if (L->stats.first_error.empty()) L->stats.first_error = what;
  BK_LOG_DEBUG("loader: %s", what.c_str());
}

Status hash_mismatch(KdLoaderImpl* L, const std::string& path, const std::string& got) {
  const std::string& want = tokenizer_hash(*L->tok);
  if (got == want) return ok_status();
  if (L->opt.allow_tokenizer_mismatch) {
    L->stats.tokenizer_mismatch_shards++;
    BK_LOG_WARN("%s: traces were projected for tokenizer %s, the student's is %s; training anyway "
                "(KD_ALLOW_TOKENIZER_MISMATCH)",
                path.c_str(), got.empty() ? "(unknown)" : got.c_str(), want.c_str());
    return ok_status();
  }
  return errorf("%s: traces were projected for tokenizer %s but the student tokenizer (%s) is %s; collect again "
                "with this tokenizer (TOKENIZER_NAME), or set KD_ALLOW_TOKENIZER_MISMATCH=1 to train anyway",
                path.c_str(), got.empty() ? "(none recorded)" : got.c_str(),
                tokenizer_path(*L->tok).empty() ? "in memory" : tokenizer_path(*L->tok).c_str(), want.c_str());
}

void start_epoch(KdLoaderImpl* L) {
  L->order = L->shards;
  if (L->opt.shuffle_buffer > 1)
    for (size_t i = L->order.size(); i > 1; i--) std::swap(L->order[i - 1], L->order[rng_below(&L->rng, i)]);
  L->shard_pos = 0;
  L->shard_open = false;
  L->epoch_source_done = false;
  L->epoch_examples = 0;
}

Status open_shard(KdLoaderImpl* L, const std::string& path) {
  KdReadOptions ro;
  ro.skip_bad_rows = L->opt.skip_bad_rows;
  ro.allow_missing_bitkd_columns = true;
  L->reader = std::make_unique<KdStepReader>();
  BK_TRY(L->reader->open(path, ro));
  L->shard_path = path;
  L->check_row_hash = L->reader->meta().tokenizer_hash.empty();
  if (!L->check_row_hash) BK_TRY(hash_mismatch(L, path, L->reader->meta().tokenizer_hash));
  L->prompts.clear();
  L->have_prompts = false;
  std::string pp = prompts_path_for(path);
  if (!pp.empty() && file_exists(pp)) {
    KdPromptReader pr;
    BK_TRY(pr.open(pp, ro));
    std::vector<KdPrompt> rows;
    for (int g = 0; g < pr.num_row_groups(); g++) {
      BK_TRY(pr.read_row_group(g, &rows));
      for (KdPrompt& p : rows) L->prompts[p.prompt_idx] = std::move(p);
    }
    L->stats.prompt_rows += pr.stats().rows_read;
    L->stats.bad_prompt_rows += pr.stats().bad_rows;
    if (pr.stats().bad_rows) note(L, pr.stats().first_bad);
    L->have_prompts = true;
  }
  L->rg = 0;
  L->shard_drained = false;
  L->rows.clear();
  L->row_pos = 0;
  L->group.clear();
  L->seen_prompts.clear();
  L->shard_open = true;
  L->stats.shards_opened++;
  return ok_status();
}

void close_shard(KdLoaderImpl* L) {
  L->stats.bad_step_rows += L->reader->stats().bad_rows;
  if (L->reader->stats().bad_rows) note(L, L->reader->stats().first_bad);
  L->reader.reset();
  L->prompts.clear();
  L->shard_open = false;
  L->shard_pos++;
}

// The steps of the next prompt (contiguous rows with one prompt_idx).
Status next_group(KdLoaderImpl* L, std::vector<KdStep>* out, bool* got) {
  *got = false;
  while (true) {
    if (!L->shard_open) {
      if (L->shard_pos >= L->order.size()) return ok_status();
      BK_TRY(open_shard(L, L->order[L->shard_pos]));
    }
    if (L->row_pos >= L->rows.size()) {
      if (L->rg < L->reader->num_row_groups()) {
        BK_TRY(L->reader->read_row_group(L->rg++, &L->rows));
        L->row_pos = 0;
        L->stats.step_rows += (int64_t)L->rows.size();
        if (L->check_row_hash && !L->rows.empty()) {
          BK_TRY(hash_mismatch(L, L->shard_path, L->rows[0].tokenizer_hash));
          L->check_row_hash = false;
        }
        continue;
      }
      if (!L->group.empty() && !L->shard_drained) {
        // The shard's last prompt; the shard (and its prompt rows) closes on
        // the next call, after this group is aligned.
        out->swap(L->group);
        L->group.clear();
        L->shard_drained = true;
        *got = true;
        return ok_status();
      }
      close_shard(L);
      continue;
    }
    KdStep& s = L->rows[L->row_pos];
    if (!L->group.empty() && s.prompt_idx != L->group[0].prompt_idx) {
      out->swap(L->group);
      L->group.clear();
      *got = true;
      return ok_status();
    }
    L->group.push_back(std::move(s));
    L->row_pos++;
  }
}

bool finished_reason(const std::string& r) {
  return r == "stop" || r == "eos" || r == "end_turn" || r == "stop_sequence" || r == "eos_token";
}

// The KD_SOURCE_WEIGHTS weight of a source (1 when not named).
double source_weight(const LoaderOptions& o, const std::string& source) {
  for (const auto& sw : o.source_weights)
    if (sw.first == source) return sw.second;
  return 1.0;
}

// Aligns one prompt's steps. *got false: skipped (counted). *weight: its
// source's weight (KD_SOURCE_WEIGHTS).
Status make_example(KdLoaderImpl* L, std::vector<KdStep>& steps, AlignedExample* ex, bool* got, double* weight) {
  *got = false;
  *weight = 1.0;
  L->stats.prompts++;
  const int64_t idx = steps[0].prompt_idx;
  if (!L->seen_prompts.insert(idx).second) L->stats.prompts_split++;
  std::stable_sort(steps.begin(), steps.end(),
                   [](const KdStep& a, const KdStep& b) { return a.step_idx < b.step_idx; });
  std::vector<std::string> texts;
  texts.reserve(steps.size());
  std::string concat;
  for (const KdStep& s : steps) {
    texts.push_back(s.teacher_sample_text);
    concat += s.teacher_sample_text;
  }
  AlignInput in;
  bool on_policy = false;
  auto it = L->prompts.find(idx);
  if (it != L->prompts.end()) {
    const KdPrompt& p = it->second;
    const std::vector<std::string>& want = L->opt.sources;
    if ((!want.empty() && std::find(want.begin(), want.end(), p.source) == want.end()) ||
        (p.source == "teacher_sample" && L->opt.sample_min_score >= 0 && std::isfinite(p.score) &&
         p.score < L->opt.sample_min_score)) {
      L->stats.prompts_filtered++;
      return ok_status();
    }
    on_policy = p.source == "on_policy";
    *weight = source_weight(L->opt, p.source);
    in.rendered_prompt = p.rendered_prompt.empty() ? p.prompt_text : p.rendered_prompt;
    in.response = p.response_text.empty() ? concat : p.response_text;
    in.finished = finished_reason(p.finish_reason);
  } else {
    L->stats.prompts_missing_row++;
    if (!L->opt.allow_missing_prompts || L->have_prompts) {
      note(L, L->shard_path + ": prompt_idx " + std::to_string(idx) + " has no row in the prompts table");
      if (!L->opt.skip_bad_rows)
        return errorf("%s: prompt_idx %lld has steps but no row in %s", L->shard_path.c_str(), (long long)idx,
                      prompts_path_for(L->shard_path).c_str());
      return ok_status();
    }
    // PoC shards: the sampled texts are the response; the prompt is unknown.
    in.response = concat;
    in.finished = false;
  }
  std::vector<AlignStep> as(steps.size());
  bool need_offsets = false;
  for (size_t i = 0; i < steps.size(); i++) {
    const KdStep& s = steps[i];
    AlignStep& a = as[i];
    a.step_idx = s.step_idx;
    a.byte_offset = s.byte_offset;
    a.sampled_id = s.teacher_sample_id;
    a.is_struct = s.is_struct_token;
    a.valid = s.valid;
    a.topk_ids = s.topk_ids;
    a.topk_logprobs = s.topk_logprobs;
    a.other_logprob = s.other_logprob;
    need_offsets |= s.byte_offset < 0;
  }
  if (need_offsets) {
    std::vector<int32_t> off;
    derive_byte_offsets(texts, in.response, &off);
    for (size_t i = 0; i < as.size(); i++) as[i].byte_offset = off[i];
    L->stats.offsets_derived++;
  }
  AlignOptions ao = L->opt.align;
  ao.max_seq_len = L->opt.max_seq_len;
  ao.max_topk = L->opt.max_topk;
  Status st = align_example(*L->tok, in, as, ao, ex, &L->stats.align);
  if (!st.ok()) {
    L->stats.prompts_error++;
    std::string msg = L->shard_path + ": prompt_idx " + std::to_string(idx) + ": " + st.msg;
    note(L, msg);
    if (!L->opt.skip_bad_rows) return Status{msg};
    return ok_status();
  }
  if (on_policy) {
    // The student's own tokens are not targets: only the teacher's
    // distribution at them is (KD positions keep their bucket).
    for (size_t i = 0; i < ex->targets.size(); i++) ex->targets[i] = -1, ex->ce_weight[i] = 0.f;
  }
  if (ex->response_tokens == 0) {
    L->stats.prompts_no_target++;
    note(L, L->shard_path + ": prompt_idx " + std::to_string(idx) + ": no response token within MAX_SEQ_LEN");
    return ok_status();
  }
  L->stats.prompts_used++;
  *got = true;
  return ok_status();
}

// Keeps the shuffle buffer full, then takes one example from it.
Status take_example(KdLoaderImpl* L, AlignedExample* ex, bool* got) {
  *got = false;
  size_t cap = (size_t)std::max(1, L->opt.shuffle_buffer);
  std::vector<KdStep> group;
  while (L->buffer.size() < cap && !L->epoch_source_done) {
    bool have = false;
    BK_TRY(next_group(L, &group, &have));
    if (!have) {
      L->epoch_source_done = true;
      break;
    }
    AlignedExample e;
    bool ok = false;
    double w = 1.0;
    BK_TRY(make_example(L, group, &e, &ok, &w));
    if (!ok) continue;
    // floor(w) copies, one more with probability frac(w): a draw from
    // (seed, epoch, prompt_idx), the same whatever came before it.
    int copies = (int)std::floor(w);
    const double frac = w - std::floor(w);
    if (frac > 0) {
      Rng r;
      rng_seed(&r, L->opt.seed ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(L->epoch + 1)) ^
                       (0xc2b2ae3d27d4eb4fULL * (uint64_t)(group[0].prompt_idx + 1)));
      if (rng_uniform_f64(&r) < frac) copies++;
    }
    if (copies == 0) L->stats.examples_weighted_out++;
    if (copies > 1) L->stats.examples_repeated += copies - 1;
    for (int k = 1; k < copies; k++) L->buffer.push_back(e);
    if (copies > 0) L->buffer.push_back(std::move(e));
  }
  if (L->buffer.empty()) return ok_status();
  size_t i = cap > 1 ? (size_t)rng_below(&L->rng, L->buffer.size()) : 0;
  std::swap(L->buffer[i], L->buffer.back());
  *ex = std::move(L->buffer.back());
  L->buffer.pop_back();
  L->epoch_examples++;
  L->stats.examples++;
  *got = true;
  return ok_status();
}

// Next example across epochs; *got false only when the data is exhausted (no loop).
Status next_example(KdLoaderImpl* L, AlignedExample* ex, bool* got) {
  if (L->has_carry) {
    *ex = std::move(L->carry);
    L->has_carry = false;
    *got = true;
    return ok_status();
  }
  BK_TRY(take_example(L, ex, got));
  if (*got || !L->opt.loop) return ok_status();
  if (L->epoch_examples == 0)
    return errorf("loader: no usable example in %zu shard(s) (%s); first problem: %s", L->shards.size(),
                  loader_stats_line(L->stats).c_str(),
                  L->stats.first_error.empty() ? "none recorded" : L->stats.first_error.c_str());
  L->stats.epochs_completed++;
  L->epoch++;
  start_epoch(L);
  return take_example(L, ex, got);
}

Status build_batch(KdLoaderImpl* L, LoaderBatch* b, bool* done) {
  *b = LoaderBatch();
  *done = false;
  const int cap = L->opt.max_seq_len;
  std::vector<std::vector<AlignedExample>> rows;
  b->epoch = L->epoch;
  while ((int)rows.size() < L->opt.batch_size) {
    std::vector<AlignedExample> row;
    int used = 0;
    while (true) {
      AlignedExample ex;
      bool got = false;
      BK_TRY(next_example(L, &ex, &got));
      if (!got) break;
      int n = (int)ex.tokens.size();
      if (!row.empty() && (!L->opt.pack || used + n > cap)) {
        L->carry = std::move(ex);
        L->has_carry = true;
        break;
      }
      used += n;
      row.push_back(std::move(ex));
      if (!L->opt.pack || used >= cap) break;
    }
    if (row.empty()) break;
    rows.push_back(std::move(row));
  }
  if (rows.empty()) {
    *done = true;
    return ok_status();
  }
  int longest = 0;
  for (auto& row : rows) {
    int n = 0;
    for (auto& e : row) n += (int)e.tokens.size();
    longest = std::max(longest, n);
  }
  const int B = (int)rows.size(), K = L->opt.max_topk;
  const int T = L->opt.trim_batch ? std::min(cap, (longest + 7) / 8 * 8) : cap;
  b->B = B, b->T = T, b->K = K;
  const size_t BT = (size_t)B * T;
  b->tokens.assign(BT, tokenizer_pad_id(*L->tok));
  b->targets.assign(BT, -1);
  b->ce_weight.assign(BT, 0.f);
  b->key_mask.assign(BT, 0);
  b->segment.assign(BT, -1);
  b->position.assign(BT, 0);
  b->kd_mask.assign(BT, 0);
  b->is_struct.assign(BT, 0);
  b->topk_ids.assign(BT * K, -1);
  b->topk_logprobs.assign(BT * K, 0.f);
  b->other_logprob.assign(BT, 0.f);
  for (int r = 0; r < B; r++) {
    size_t o = (size_t)r * T;
    for (size_t si = 0; si < rows[r].size(); si++) {
      const AlignedExample& e = rows[r][si];
      for (size_t i = 0; i < e.tokens.size(); i++, o++) {
        b->tokens[o] = e.tokens[i];
        b->targets[o] = e.targets[i];
        b->ce_weight[o] = e.ce_weight[i];
        b->key_mask[o] = 1;
        b->segment[o] = (int32_t)si;
        b->position[o] = (int32_t)i;
        if (e.targets[i] >= 0 || e.kd_slot[i] >= 0) b->loss_tokens++;
        int s = e.kd_slot[i];
        if (s < 0) continue;
        b->kd_mask[o] = 1;
        b->is_struct[o] = e.slot_struct[s];
        b->other_logprob[o] = e.slot_other[s];
        for (int k = 0; k < K && k < e.topk; k++) {
          b->topk_ids[o * K + k] = e.slot_ids[(size_t)s * e.topk + k];
          b->topk_logprobs[o * K + k] = e.slot_logprobs[(size_t)s * e.topk + k];
        }
        b->kd_positions++;
      }
      b->examples++;
    }
  }
  L->stats.batches++;
  return ok_status();
}

}  // namespace

Status loader_options_from_config(const Config& c, LoaderOptions* o) {
  long long v = 0;
  double d = 0;
  bool b = false;
  o->data_dir = config_str(c, "KD_DATA_PATH", artifact_paths(c).data);
  BK_TRY(config_int(c, "TRAIN_BATCH_SIZE", &v));
  o->batch_size = (int)v;
  BK_TRY(config_int(c, "MAX_SEQ_LEN", &v));
  o->max_seq_len = (int)v;
  BK_TRY(config_int(c, "MAX_TOPK", &v));
  o->max_topk = (int)v;
  BK_TRY(config_int(c, "SEED", &v));
  o->seed = (uint64_t)v;
  BK_TRY(config_int(c, "KD_SHUFFLE_BUFFER", &v));
  o->shuffle_buffer = (int)v;
  BK_TRY(config_bool(c, "KD_PACK", &b));
  o->pack = b;
  BK_TRY(config_bool(c, "KD_SKIP_BAD_ROWS", &b));
  o->skip_bad_rows = b;
  BK_TRY(config_bool(c, "KD_ALLOW_TOKENIZER_MISMATCH", &b));
  o->allow_tokenizer_mismatch = b;
  BK_TRY(config_double(c, "KD_CE_WEIGHT", &d));
  o->align.kd_ce_weight = (float)d;
  BK_TRY(config_double(c, "FORMAT_LOSS_WEIGHT", &d));
  o->align.format_weight = (float)d;
  BK_TRY(config_double(c, "KD_PLAIN_CE_WEIGHT", &d));
  o->align.plain_ce_weight = (float)d;
  o->sources.clear();
  const std::string src = config_str(c, "KD_SOURCES");
  for (size_t at = 0; at <= src.size();) {
    size_t comma = src.find(',', at);
    if (comma == std::string::npos) comma = src.size();
    const std::string one = src.substr(at, comma - at);
    if (!one.empty()) {
      if (one != "teacher_sample" && one != "reference" && one != "on_policy")
        return errorf("KD_SOURCES=%s: '%s' is not a trace source (teacher_sample, reference, on_policy)", src.c_str(),
                      one.c_str());
      o->sources.push_back(one);
    }
    at = comma + 1;
  }
  BK_TRY(config_double(c, "KD_SAMPLE_MIN_SCORE", &o->sample_min_score));
  // KD_SOURCE_WEIGHTS: source=weight pairs, comma-separated.
  o->source_weights.clear();
  const std::string sw = config_str(c, "KD_SOURCE_WEIGHTS");
  for (size_t at = 0; at <= sw.size();) {
    size_t comma = sw.find(',', at);
    if (comma == std::string::npos) comma = sw.size();
    const std::string one = sw.substr(at, comma - at);
    at = comma + 1;
    if (one.empty()) continue;
    const size_t eq = one.find('=');
    const std::string name = one.substr(0, eq);
    char* end = nullptr;
    const double w = eq == std::string::npos ? NAN : std::strtod(one.c_str() + eq + 1, &end);
    if (name != "teacher_sample" && name != "reference" && name != "on_policy")
      return errorf("KD_SOURCE_WEIGHTS=%s: '%s' is not a trace source (teacher_sample, reference, on_policy)",
                    sw.c_str(), name.c_str());
    if (!std::isfinite(w) || w < 0 || w > 100 || (end && *end))
      return errorf("KD_SOURCE_WEIGHTS=%s: the weight of %s must be a number from 0 to 100 (e.g. %s=0.5)", sw.c_str(),
                    name.c_str(), name.c_str());
    o->source_weights.push_back({name, w});
  }
  return ok_status();
}

Status loader_open(const LoaderOptions& opt, const Tokenizer& student, KdLoader* out) {
  if (!tokenizer_loaded(student)) return errorf("loader: the student tokenizer is not loaded");
  if (opt.batch_size < 1) return errorf("loader: batch size must be >= 1 (TRAIN_BATCH_SIZE=%d)", opt.batch_size);
  if (opt.max_seq_len < 2) return errorf("loader: MAX_SEQ_LEN must be >= 2 (got %d)", opt.max_seq_len);
  if (opt.max_topk < 1) return errorf("loader: MAX_TOPK must be >= 1 (got %d)", opt.max_topk);
  if (opt.start_batch < 0) return errorf("loader: start position %lld is negative", (long long)opt.start_batch);
  auto L = std::make_unique<KdLoaderImpl>();
  L->opt = opt;
  L->tok = &student;
  if (!opt.shard_files.empty()) {
    L->shards = opt.shard_files;
    for (const std::string& f : L->shards)
      if (!file_exists(f)) return errorf("loader: shard %s does not exist", f.c_str());
  } else {
    // One directory, or several separated by commas (traces of several sources).
    for (size_t at = 0; at <= opt.data_dir.size();) {
      size_t comma = opt.data_dir.find(',', at);
      if (comma == std::string::npos) comma = opt.data_dir.size();
      const std::string dir = opt.data_dir.substr(at, comma - at);
      at = comma + 1;
      if (dir.empty()) continue;
      if (!dir_exists(dir))
        return errorf("loader: KD data directory %s does not exist (run `bitkd collect` or set KD_DATA_PATH)",
                      dir.c_str());
      for (const std::string& f : list_files(dir, "kd_shard_", ".parquet")) L->shards.push_back(path_join(dir, f));
    }
    if (L->shards.empty())
      return errorf("loader: no kd_shard_*.parquet in %s (run `bitkd collect` first)", opt.data_dir.c_str());
  }
  // Fail early on a tokenizer mismatch recorded in the file metadata (rows
  // are checked as they are read).
  if (!opt.allow_tokenizer_mismatch)
    for (const std::string& f : L->shards) {
      KdStepReader r;
      KdReadOptions ro;
      ro.allow_missing_bitkd_columns = true;
      BK_TRY(r.open(f, ro));
      if (!r.meta().tokenizer_hash.empty()) BK_TRY(hash_mismatch(L.get(), f, r.meta().tokenizer_hash));
    }
  rng_seed(&L->rng, opt.seed);
  start_epoch(L.get());
  out->impl = std::move(L);
  return ok_status();
}

Status loader_next(KdLoader* l, LoaderBatch* out, bool* done) {
  KdLoaderImpl* L = l->impl.get();
  if (!L) return errorf("loader: not opened");
  if (!L->replayed) {
    // Resume: replay the stream and drop the batches already consumed.
    L->replayed = true;
    LoaderBatch skip;
    while (L->delivered < L->opt.start_batch) {
      BK_TRY(build_batch(L, &skip, done));
      if (*done) {
        *out = LoaderBatch();
        return ok_status();
      }
      L->delivered++;
    }
  }
  BK_TRY(build_batch(L, out, done));
  if (!*done) L->delivered++;
  return ok_status();
}

int64_t loader_position(const KdLoader& l) { return l.impl ? l.impl->delivered : 0; }
const LoaderStats& loader_stats(const KdLoader& l) { return l.impl->stats; }
const std::vector<std::string>& loader_shards(const KdLoader& l) { return l.impl->shards; }

Status loader_count_targets(LoaderOptions opt, const Tokenizer& student, double* mean_per_example,
                            int64_t* examples) {
  opt.loop = false;
  opt.start_batch = 0;
  KdLoader l;
  BK_TRY(loader_open(opt, student, &l));
  int64_t tokens = 0, rows = 0;
  for (;;) {
    LoaderBatch b;
    bool done = false;
    BK_TRY(loader_next(&l, &b, &done));
    if (done) break;
    tokens += b.loss_tokens;
    rows += b.B;
  }
  if (rows == 0) return errorf("no training example in %s", opt.data_dir.c_str());
  *mean_per_example = (double)tokens / (double)rows;
  *examples = rows;
  return ok_status();
}

}  // namespace bk
