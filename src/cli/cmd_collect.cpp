// bitkd collect: KD traces from the teacher (<--out>/kd_shard_*.parquet + kd_prompts_*.parquet).
#include <cstdio>
#include <map>
#include <memory>

#include "cli/cli.h"
#include "core/dist.h"
#include "core/fs.h"
#include "core/log.h"
#include "kd/collector.h"
#include "kd/prompts.h"
#include "kd/providers.h"
#include "eval/eval.h"
#include "model/infer.h"
#include "train/model_load.h"
#include "tokenizer/tokenizer.h"

namespace bk {

static Status collect_options_from_args(const Args& a, CollectOptions* o) {
  long long v = 0;
  double d = 0;
  BK_TRY(arg_int(a, "top-logprobs", &v));
  if (v < 1 || v > 20) return errorf("TEACHER_TOP_LOGPROBS=%lld: use 1..20", v);
  o->top_logprobs = (int)v;
  BK_TRY(arg_double(a, "temperature", &d));
  if (d < 0) return errorf("KD_TEACHER_TEMPERATURE=%g must be >= 0", d);
  o->temperature = d;
  BK_TRY(arg_double(a, "top-p", &d));
  if (d <= 0 || d > 1) return errorf("KD_TEACHER_TOP_P=%g must be in (0, 1]", d);
  o->top_p = d;
  BK_TRY(arg_int(a, "max-tokens", &v));
  o->max_tokens = (int)v;
  BK_TRY(arg_int(a, "TEACHER_CONCURRENCY", &v));
  o->concurrency = (int)v;
  BK_TRY(arg_int(a, "shard-rows", &v));
  o->shard_rows = v;
  BK_TRY(arg_int(a, "KD_FLUSH_PROMPTS", &v));
  o->flush_prompts = v;
  BK_TRY(arg_double(a, "KD_FLUSH_SECONDS", &d));
  o->flush_seconds = d;
  BK_TRY(arg_int(a, "SEED", &v));
  o->seed = v;
  o->template_text = template_unescape(config_str(a.cfg, "TEMPLATE"));
  o->instruction = template_unescape(config_str(a.cfg, "TEACHER_INSTRUCTION"));
  o->source = arg_str(a, "source");
  if (o->source != "teacher_sample" && o->source != "reference" && o->source != "on_policy")
    return errorf("KD_SOURCE=%s: use teacher_sample, reference or on_policy", o->source.c_str());
  return ok_status();
}

// On-policy traces: the student's own answers to every prompt, generated
// before collection (packed engine, KD_STUDENT_TEMPERATURE), for the teacher
// to score.
static Status student_samples(const Args& a, const Tokenizer& tok, const std::vector<PromptItem>& prompts,
                              const CollectOptions& opt, std::map<int64_t, std::string>* out) {
  const std::string path = arg_str(a, "student");
  if (path.empty()) return errorf("KD_SOURCE=on_policy needs the student to sample from: --student CHECKPOINT");
  Model m;
  BK_TRY(with_context(model_load_any(path, &m, nullptr), "the student " + path));
  InferWeights* w = nullptr;
  BK_TRY(infer_weights_create(&m, m.cfg.weight_quant == WQ_TERNARY && m.cfg.act_bits ? INFER_PACKED : INFER_FLOAT, &w));
  std::unique_ptr<InferWeights, void (*)(InferWeights*)> guard(w, infer_weights_destroy);
  EvalGenOptions go;
  go.template_text = opt.template_text;
  go.max_new_tokens = opt.max_tokens;
  double t = 1.0;
  BK_TRY(arg_double(a, "student-temperature", &t));
  go.sampling.temperature = (float)t;
  go.seed = (uint64_t)opt.seed;
  std::vector<EvalPromptResult> res;
  BK_LOG_INFO("collect: sampling the student %s on %zu prompts (temperature %g)", path.c_str(), prompts.size(), t);
  BK_TRY(eval_generate(w, tok, prompts, go, &res));
  for (const EvalPromptResult& r : res) (*out)[r.item.idx] = r.response;
  return ok_status();
}

static int run_collect(Args& a) {
  const Config& c = a.cfg;
  ProviderSettings ps;
  Status st = provider_resolve(c, &ps);
  if (!st.ok()) return cli_fail(a, st);
  CollectOptions opt;
  st = collect_options_from_args(a, &opt);
  if (!st.ok()) return cli_fail(a, st);
  // Refused before anything else (no tokenizer load, no request) when the
  // provider has no logprobs, or cannot score a given text.
  st = opt.source == "teacher_sample" ? provider_check_kd(ps, opt.top_logprobs)
                                      : provider_check_score(ps, opt.top_logprobs);
  if (!st.ok()) return cli_fail(a, st);
  st = collect_parse_shard(arg_str(a, "shard"), &opt.shard_i, &opt.shard_n);
  if (!st.ok()) return cli_fail(a, st);
  // Under mpirun each rank is one more split of the shard: --shard i/n with R
  // ranks gives rank r the prompts with prompt_idx % (n R) == i R + r, and
  // files named after that split, so no two ranks write the same file.
  if (dist_size() > 1) {
    opt.shard_i = opt.shard_i * dist_size() + dist_rank();
    opt.shard_n *= dist_size();
  }

  ArtifactPaths paths = artifact_paths(c);
  st = ensure_artifact_dirs(c, paths);
  if (!st.ok()) return cli_fail(a, st);
  opt.data_dir = arg_str(a, "out");
  if (opt.data_dir.empty()) opt.data_dir = paths.data;

  long long max_prompts = 0, seed = 0;
  if (!arg_int_or_report(a, "max-prompts", &max_prompts) || !arg_int_or_report(a, "SEED", &seed)) return 1;
  PromptSource src;
  src.file = arg_str(a, "prompts");
  src.split = TASK_SPLIT_TRAIN;
  src.max_prompts = max_prompts;
  src.seed = (uint64_t)seed;
  if (src.file.empty() && src.max_prompts == 0) {
    src.max_prompts = 1000;
    BK_LOG_INFO("KD_MAX_PROMPTS=0 with the task suite: collecting 1000 train-split prompts");
  }
  std::vector<PromptItem> prompts;
  std::string desc;
  st = prompts_load(src, &prompts, &desc);
  if (!st.ok()) return cli_fail(a, st);

  Tokenizer student;
  std::string tok_path;
  st = student_tokenizer_load(a, &student, &tok_path);
  if (!st.ok()) return cli_fail(a, st);

  std::map<int64_t, std::string> samples;
  if (opt.source == "on_policy") {
    st = student_samples(a, student, prompts, opt, &samples);
    if (!st.ok()) return cli_fail(a, st);
    opt.continuation = [&samples](const PromptItem& item, const std::string&, std::string* text) {
      auto it = samples.find(item.idx);
      *text = it == samples.end() ? "" : it->second;
      return ok_status();
    };
  }
  ProviderClient client;
  st = provider_client_init(&client, ps);
  if (!st.ok()) return cli_fail(a, st);
  if (ps.model.empty()) {
    st = provider_discover_model(&client);
    if (!st.ok()) return cli_fail(a, st);
  }
  BK_LOG_INFO("collect: teacher %s, prompts from %s, student tokenizer %s",
              provider_describe(provider_client_settings(client)).c_str(), desc.c_str(), tok_path.c_str());

  CollectStats stats;
  Status run = collect_run(&client, student, prompts, opt, &stats);
  std::string stats_path = arg_str(a, "stats");
  if (!stats_path.empty() && dist_size() > 1) stats_path += ".rank" + std::to_string(dist_rank());
  if (stats_path.empty())
    stats_path = path_join(paths.logs, opt.shard_n <= 1 ? std::string("collect_stats.json")
                                                        : "collect_stats_" + std::to_string(opt.shard_i) + "of" +
                                                              std::to_string(opt.shard_n) + ".json");
  // Stats are written even when the run stopped early: they say why and how far it got.
  st = write_file_atomic(stats_path, collect_stats_json(stats, opt, provider_client_settings(client)));
  if (!st.ok()) return cli_fail(a, st);
  if (!run.ok()) return cli_fail(a, run);
  if (dist_size() > 1) {
    long long t[5] = {stats.prompts_ok, stats.prompts_failed, stats.prompts_already, stats.steps,
                      stats.steps - stats.steps_valid};
    st = dist_allreduce_sum(t, 5);
    if (!st.ok()) return cli_fail(a, st);
    printf("collect, all %d ranks: %lld prompts ok, %lld failed, %lld already collected; %lld steps (%lld invalid)\n",
           dist_size(), t[0], t[1], t[2], t[3], t[4]);
  }
  printf("collect: %lld prompts ok, %lld failed, %lld already collected; %lld steps (%lld invalid), %.1f steps/s\n",
         (long long)stats.prompts_ok, (long long)stats.prompts_failed, (long long)stats.prompts_already,
         (long long)stats.steps, (long long)(stats.steps - stats.steps_valid),
         stats.elapsed_s > 0 ? stats.steps / stats.elapsed_s : 0.0);
  printf("shards in %s; stats in %s\n", opt.data_dir.c_str(), stats_path.c_str());
  if (stats.prompts_failed > 0)
    BK_LOG_WARN("%lld prompts failed and were skipped (see %s); rerun `bitkd collect` to retry them",
                (long long)stats.prompts_failed, stats_path.c_str());
  return 0;
}

const Command& command_collect() {
  static const Command c = {
      "collect",
      "Collect KD traces (teacher top-K logprobs projected onto the student tokenizer) -> <--out>/kd_shard_*.parquet",
      "Prompts (KD_PROMPTS_FILE: one per line, or .jsonl; default: the task suite's train split, KD_MAX_PROMPTS)\n"
      "go to the teacher with logprobs; each generated token becomes a step row (top-K projected onto\n"
      "TOKENIZER_NAME, raw candidates kept), each prompt a row of kd_prompts_*.parquet. KD_SOURCE=reference or\n"
      "on_policy has the teacher score the reference answers or a student's answers instead (a server that\n"
      "scores a given text: bitkd serve, vLLM, llama.cpp); collect each source into its own --out directory\n"
      "(default KD_DATA_PATH, else DATA_DIR: data/kd_shard_000.parquet; `bitkd pipeline` writes teacher\n"
      "samples to data/, reference scores to data/reference/, held-out traces to data/heldout/).\n"
      "Resumable: a rerun skips committed prompts; a crash loses at most the prompts not yet flushed\n"
      "(KD_FLUSH_PROMPTS /\n"
      "KD_FLUSH_SECONDS). --shard i/n splits the prompts among n collectors (prompt_idx % n == i).\n"
      "Prompts that fail after retries are skipped and counted (rerun to retry them): logs/collect_stats.json.",
      {
          {"provider", "TEACHER_PROVIDER", nullptr, "Teacher provider"},
          {"model", "TEACHER_MODEL", nullptr, "Teacher model"},
          {"base-url", "TEACHER_BASE_URL", nullptr, "Teacher base URL"},
          {"api", "TEACHER_API", nullptr, "chat or completions"},
          {"prompts", "KD_PROMPTS_FILE", nullptr, "Prompts file"},
          {"max-prompts", "KD_MAX_PROMPTS", nullptr, "Prompt count (0: all of the file)"},
          {"tokenizer", "TOKENIZER_NAME", nullptr, "Student SentencePiece tokenizer.model"},
          {"top-logprobs", "TEACHER_TOP_LOGPROBS", nullptr, "Candidates per step (<= 20)"},
          {"temperature", "KD_TEACHER_TEMPERATURE", nullptr, "Teacher sampling temperature"},
          {"top-p", "KD_TEACHER_TOP_P", nullptr, "Teacher top_p"},
          {"max-tokens", "KD_MAX_TOKENS_PER_PROMPT", nullptr, "Max teacher tokens per prompt"},
          {"concurrency", "TEACHER_CONCURRENCY", nullptr, "Parallel requests"},
          {"rpm", "TEACHER_RPM", nullptr, "Requests-per-minute cap (0: none)"},
          {"timeout", "TEACHER_TIMEOUT_S", nullptr, "Per-request timeout in seconds"},
          {"retries", "TEACHER_MAX_RETRIES", nullptr, "Retries on 429, 5xx, timeouts, dropped connections"},
          {"shard-rows", "KD_SHARD_ROWS", nullptr, "Step rows per shard before rotating"},
          {"flush-prompts", "KD_FLUSH_PROMPTS", nullptr, "Commit after this many prompts"},
          {"flush-seconds", "KD_FLUSH_SECONDS", nullptr, "... or after this many seconds"},
          {"template", "TEMPLATE", nullptr, "Chat template with {prompt} (\\n escapes): rendered_prompt and template_hash"},
          {"shard", nullptr, "", "i/n: this collector takes prompt_idx % n == i"},
          {"out", "KD_DATA_PATH", nullptr, "Shard directory (default DATA_DIR)"},
          {"source", "KD_SOURCE", nullptr,
           "teacher_sample (the teacher answers), reference (it scores the reference answers) or on_policy (it "
           "scores the student's answers)"},
          {"student", nullptr, "", "on_policy: the student checkpoint that answers"},
          {"student-temperature", "KD_STUDENT_TEMPERATURE", nullptr, "on_policy: the student's sampling temperature"},
          {"stats", nullptr, "", "Stats file (default LOGS_DIR/collect_stats.json)"},
      },
      run_collect,
  };
  return c;
}

}  // namespace bk
