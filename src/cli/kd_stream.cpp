// kd_stream.h: the KD loader as `bitkd train` uses it.
#include "cli/kd_stream.h"

#include <nlohmann/json.hpp>

#include "data/kd_schema.h"

namespace bk {

struct KdStreamImpl {
  LoaderOptions lo;
  KdLoader loader;
};

KdStream::KdStream() = default;
KdStream::~KdStream() = default;

Status kd_stream_open(const Config& cfg, const KdStreamOptions& o, const Tokenizer& student, KdStream* s) {
  auto impl = std::make_unique<KdStreamImpl>();
  LoaderOptions& lo = impl->lo;
  BK_TRY(loader_options_from_config(cfg, &lo));
  if (!o.data_dir.empty()) lo.data_dir = o.data_dir;
  if (lo.pack)
    return errorf("KD_PACK=1: packing several examples per row needs attention that respects segment ids, which "
                  "the training engine does not have; set KD_PACK=0");
  lo.batch_size = o.batch;
  lo.max_seq_len = o.seq;
  lo.seed = o.seed;
  lo.allow_tokenizer_mismatch = lo.allow_tokenizer_mismatch || o.allow_tokenizer_mismatch;
  lo.trim_batch = false;  // the trainer's activations are sized for [batch, seq]
  lo.loop = true;
  lo.start_batch = o.start_batch;
  BK_TRY(loader_open(lo, student, &impl->loader));
  s->impl = std::move(impl);
  return ok_status();
}

Status kd_stream_next(KdStream* s, LoaderBatch* out) {
  if (!s->impl) return errorf("kd stream: not opened");
  bool done = false;
  BK_TRY(loader_next(&s->impl->loader, out, &done));
  if (done || out->B == 0)
    return errorf("kd stream: the loader ran out of data (%s)", kd_stream_stats_line(*s).c_str());
  if (out->B != s->impl->lo.batch_size || out->T != s->impl->lo.max_seq_len)
    return errorf("kd stream: the loader gave a [%d, %d] batch, expected [%d, %d]", out->B, out->T,
                  s->impl->lo.batch_size, s->impl->lo.max_seq_len);
  return ok_status();
}

int64_t kd_stream_position(const KdStream& s) { return s.impl ? loader_position(s.impl->loader) : 0; }

const std::vector<std::string>& kd_stream_shards(const KdStream& s) { return loader_shards(s.impl->loader); }

std::string kd_stream_data_dir(const KdStream& s) { return s.impl ? s.impl->lo.data_dir : ""; }

int kd_stream_topk(const KdStream& s) { return s.impl ? s.impl->lo.max_topk : 0; }

std::string kd_stream_stats_json(const KdStream& s) {
  if (!s.impl) return "{}";
  const LoaderStats& st = loader_stats(s.impl->loader);
  nlohmann::ordered_json j;
  j["epochs_completed"] = st.epochs_completed;
  j["step_rows"] = st.step_rows;
  j["bad_step_rows"] = st.bad_step_rows;
  j["bad_prompt_rows"] = st.bad_prompt_rows;
  j["prompts"] = st.prompts;
  j["prompts_used"] = st.prompts_used;
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

std::string kd_stream_stats_line(const KdStream& s) {
  return s.impl ? loader_stats_line(loader_stats(s.impl->loader)) : "";
}

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

}  // namespace bk
