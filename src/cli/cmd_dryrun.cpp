// bitkd dryrun: forward-only memory test of the 7B config with synthetic packed
// ternary weights -> reports/dryrun_7b.json.
#include <cstdio>

#include "cli/cli.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/timing.h"
#include "eval/dryrun.h"
#include "tokenizer/tokenizer.h"

namespace bk {

static Status dryrun_request_from_args(const Args& a, DryRunRequest* r) {
  long long v = 0;
  struct {
    const char* flag;
    int* dst;
  } ints[] = {{"dim", &r->dim},          {"layers", &r->n_layers},         {"heads", &r->n_heads},
              {"head-dim", &r->head_dim}, {"seq", &r->seq_len},             {"batch", &r->batch},
              {"bits-start", &r->act_bits_start}, {"bits-after", &r->act_bits_after}, {"ffn", &r->ffn_dim},
              {"decode", &r->decode_tokens}};
  for (auto& e : ints) {
    BK_TRY(arg_int(a, e.flag, &v));
    if (v < -1000000000LL || v > 1000000000LL) return errorf("--%s %lld is out of range", e.flag, v);
    *e.dst = (int)v;
  }
  r->preset = arg_str(a, "preset");
  std::string scope = arg_str(a, "a4-scope");
  if (scope == "hybrid") r->a4_scope = A4_HYBRID;
  else if (scope == "all") r->a4_scope = A4_ALL;
  else return errorf("A4_SCOPE=%s: use hybrid or all", scope.c_str());
  std::string layout = arg_str(a, "layout");
  if (layout == "i2") r->layout = TERNARY_I2;
  else if (layout == "t1") r->layout = TERNARY_T1;
  else return errorf("--layout %s: use i2 (2 bits/weight) or t1 (1.6 bits/weight)", layout.c_str());
  BK_TRY(with_context(row_type_from_name(arg_str(a, "embed"), &r->embed_type), "--embed"));
  if (r->decode_tokens < 0) return errorf("--decode %d: use 0 (no decode) or more", r->decode_tokens);
  BK_TRY(arg_bool(a, "tie", &r->tie_embeddings));
  BK_TRY(arg_int(a, "SEED", &v));
  r->seed = (uint64_t)v;
  r->allow_downgrade = config_str(a.cfg, "DRYRUN_ALLOW_DOWNGRADE");
  r->force_cpu = config_str(a.cfg, "DRYRUN_FORCE_CPU");
  r->max_alloc_frac = config_str(a.cfg, "DRYRUN_MAX_ALLOC_FRAC");

  // Vocabulary: DRYRUN_VOCAB, else the tokenizer's (TOKENIZER_NAME), else 32000.
  BK_TRY(arg_int(a, "vocab", &v));
  if (v < 0) return errorf("DRYRUN_VOCAB=%lld must be >= 0 (0: the tokenizer's, else 32000)", v);
  std::string tok_path = arg_str(a, "tokenizer");
  if (v > 0) {
    r->vocab = (int)v;
    r->vocab_source = "DRYRUN_VOCAB";
  } else if (!tok_path.empty()) {
    Tokenizer tok;
    BK_TRY(with_context(tokenizer_load(tok_path, &tok), "TOKENIZER_NAME " + tok_path));
    r->vocab = tokenizer_vocab_size(tok);
    r->vocab_source = "tokenizer " + tok_path;
  } else {
    r->vocab = 32000;
    r->vocab_source = "default 32000 (no DRYRUN_VOCAB or TOKENIZER_NAME)";
  }
  return ok_status();
}

static int run_dryrun(Args& a) {
  DryRunRequest req;
  Status st = dryrun_request_from_args(a, &req);
  if (!st.ok()) return cli_fail(a, st);
  ArtifactPaths paths = artifact_paths(a.cfg);
  std::string out = arg_str(a, "out");
  if (out.empty()) {
    st = ensure_artifact_dirs(a.cfg, paths);
    if (!st.ok()) return cli_fail(a, st);
    out = path_join(paths.reports, "dryrun_7b.json");
  }
  DryRunResult res;
  st = dryrun_run(req, &res);
  if (!st.ok()) return cli_fail(a, st);
  st = write_file_atomic(out, dryrun_report_json(req, res, utc_timestamp_iso()));
  if (!st.ok()) return cli_fail(a, st);
  const double GiB = 1024.0 * 1024.0 * 1024.0;
  printf("dryrun: %.3fB parameters (dim %d, %d layers, ffn %d, vocab %d), weights %.3f GB (%s %.3f bits/weight), "
         "generated in %.1f s\n",
         res.params / 1e9, res.cfg.dim, res.cfg.n_layers, res.cfg.ffn_dim, res.cfg.vocab_size,
         res.bytes.total / 1e9, res.bytes.projection_format.c_str(), res.bytes.projection_bits_per_weight,
         res.weight_gen_s);
  for (const DryRunForward& f : res.runs)
    printf("  %s: %.2f s for [%d, %d] tokens (%.1f tok/s), then decode %.2f tok/s over %d tokens; RSS after %.2f "
           "GiB, peak %.2f GiB\n",
           f.name.c_str(), f.time_s, req.batch, req.seq_len, f.tokens_per_s, f.decode_tokens_per_s, f.decode_tokens,
           f.rss_after_bytes / GiB, f.peak_rss_bytes / GiB);
  printf("  A%d vs A%d: top-1 agreement %.3f, logit cosine mean %.4f (min %.4f); peak RSS %.2f GiB (fp16 weights "
         "alone: %.2f GiB)\nwrote %s\n",
         req.act_bits_start, req.act_bits_after, res.top1_agreement, res.cosine_mean, res.cosine_min,
         res.peak_rss_bytes / GiB, res.params * 2 / GiB, out.c_str());
  return 0;
}

const Command& command_dryrun() {
  static const Command c = {
      "dryrun",
      "Forward-only memory test of the 7B config with synthetic packed ternary weights -> reports/dryrun_7b.json",
      "Generates deterministic ternary weights straight into the packed layout (no float copy), a q8_0\n"
      "embedding and head (--embed), then runs DRYRUN_SEQ_LEN tokens per batch row through the packed engine with\n"
      "DRYRUN_ACT_BITS_START and again with DRYRUN_ACT_BITS_AFTER activations, each followed by --decode\n"
      "single-token steps. Reports parameter count, bytes per component, bits per weight, peak RSS,\n"
      "prefill and decode speed and A8/A4 agreement.",
      {
          {"preset", "DRYRUN_PRESET", nullptr, "poc (ffn 4*dim) or llama2-7b (ffn 11008 at dim 4096)"},
          {"dim", "DRYRUN_DIM", nullptr, "Hidden size"},
          {"layers", "DRYRUN_LAYERS", nullptr, "Layers"},
          {"heads", "DRYRUN_HEADS", nullptr, "Attention heads"},
          {"head-dim", "DRYRUN_HEAD_DIM", nullptr, "Head dim (heads x head_dim = dim)"},
          {"vocab", "DRYRUN_VOCAB", nullptr, "Vocabulary (0: the tokenizer's, else 32000)"},
          {"tokenizer", "TOKENIZER_NAME", nullptr, "Tokenizer whose vocabulary size is used when DRYRUN_VOCAB is 0"},
          {"seq", "DRYRUN_SEQ_LEN", nullptr, "Tokens per forward"},
          {"batch", "DRYRUN_BATCH_SIZE", nullptr, "Sequences per forward"},
          {"bits-start", "DRYRUN_ACT_BITS_START", nullptr, "Activation bits of the first forward (8 or 4)"},
          {"bits-after", "DRYRUN_ACT_BITS_AFTER", nullptr, "Activation bits of the second forward (8 or 4)"},
          {"a4-scope", "A4_SCOPE", nullptr, "hybrid or all (which projections get 4-bit inputs)"},
          {"ffn", nullptr, "0", "FFN width (0: from the preset)"},
          {"decode", nullptr, "16", "Single-token decode steps timed after each forward (0: none)"},
          {"layout", nullptr, "i2", "Packed layout: i2 (2 bits/weight) or t1 (1.6 bits/weight)"},
          {"embed", nullptr, "q8_0", "Embedding and head rows: q8_0 (8.5 bits, as llama.cpp's Q8_0), bf16, f16 or f32"},
          {"tie", nullptr, "0", "Tie the LM head to the embedding", true},
          {"out", nullptr, "", "Report path (default REPORTS_DIR/dryrun_7b.json)"},
      },
      run_dryrun,
  };
  return c;
}

}  // namespace bk
