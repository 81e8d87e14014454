// bitkd teacher: the locked teacher baseline (reports/teacher_baseline.json).
#include <cstdio>

#include "cli/cli.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/timing.h"
#include "kd/baseline.h"
#include "kd/prompts.h"
#include "kd/providers.h"
#include "model/infer.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"

namespace bk {

// Weight bytes a local teacher holds, measured the way `bitkd serve` loads it.
static Status measure_checkpoint_bytes(const std::string& path, double* bytes) {
  Model m;
  BK_TRY(with_context(checkpoint_load(path, &m, nullptr), "TEACHER_CHECKPOINT " + path));
  InferWeights* w = nullptr;
  BK_TRY(with_context(infer_weights_create(&m, INFER_FLOAT, &w), path));
  *bytes = (double)infer_weights_bytes(w);
  infer_weights_destroy(w);
  return ok_status();
}

static int run_teacher(Args& a) {
  const Config& c = a.cfg;
  ProviderSettings ps;
  Status st = provider_resolve(c, &ps);
  if (!st.ok()) return cli_fail(a, st);

  long long max_prompts = 0, max_tokens = 0, ctx = 0, conc = 0, seed = 0;
  double temperature = 0, top_p = 1;
  bool force = false;
  if (!arg_int_or_report(a, "max-prompts", &max_prompts) || !arg_int_or_report(a, "max-tokens", &max_tokens) ||
      !arg_int_or_report(a, "TEACHER_CTX_LEN", &ctx) || !arg_int_or_report(a, "concurrency", &conc) ||
      !arg_int_or_report(a, "SEED", &seed) || !arg_double_or_report(a, "temperature", &temperature) ||
      !arg_double_or_report(a, "top-p", &top_p))
    return 1;
  st = arg_bool(a, "force", &force);
  if (!st.ok()) return cli_fail(a, st);
  if (max_tokens < 1) return cli_fail(a, errorf("TEACHER_BASELINE_MAX_TOKENS=%lld must be >= 1", max_tokens));
  if (conc < 1) return cli_fail(a, errorf("--concurrency %lld must be >= 1", conc));
  if (temperature != 0)
    BK_LOG_WARN("TEACHER_BASELINE_TEMPERATURE=%g: the baseline is meant to be greedy (0)", temperature);

  PromptSource src;
  src.file = arg_str(a, "prompts");
  src.split = TASK_SPLIT_EVAL;
  src.max_prompts = max_prompts;
  src.seed = (uint64_t)seed;
  std::vector<PromptItem> prompts;
  std::string prompts_desc;
  st = prompts_load(src, &prompts, &prompts_desc);
  if (!st.ok()) return cli_fail(a, st);
  std::string phash = prompts_hash(prompts);

  ArtifactPaths paths = artifact_paths(c);
  st = ensure_artifact_dirs(c, paths);
  if (!st.ok()) return cli_fail(a, st);
  std::string out = arg_str(a, "out");
  if (out.empty()) out = path_join(paths.reports, "teacher_baseline.json");

  ProviderClient client;
  st = provider_client_init(&client, ps);
  if (!st.ok()) return cli_fail(a, st);
  if (ps.model.empty()) {
    st = provider_discover_model(&client);
    if (!st.ok()) return cli_fail(a, st);
  }
  const ProviderSettings& rs = provider_client_settings(client);
  // The lock is checked before any completion is paid for.
  st = baseline_check_lock(out, phash, rs.model, force);
  if (!st.ok()) return cli_fail(a, st);

  BaselineInfo info;
  info.provider = rs.provider;
  info.model = rs.model;
  info.base_url = redact_secret(provider_safe_url(rs.base_url), rs.api_key);
  info.api = provider_api_name(rs.api);
  info.template_text = template_unescape(config_str(c, "TEMPLATE"));
  info.prompt_prefix = rs.prompt_prefix;
  info.prompts_source = prompts_desc;
  info.prompts_hash = phash;
  std::string ckpt = config_str(c, "TEACHER_CHECKPOINT");
  if (!ckpt.empty()) {
    st = measure_checkpoint_bytes(ckpt, &info.memory_bytes);
    if (!st.ok()) return cli_fail(a, st);
    info.memory_source = "measured: weight bytes of " + ckpt;
  } else {
    st = teacher_memory_declared(config_str(c, "TEACHER_MEMORY_GB"), &info.memory_bytes, &info.memory_source);
    if (!st.ok()) return cli_fail(a, st);
    if (info.memory_bytes <= 0) BK_LOG_WARN("teacher memory %s: QEI will not be evaluated", info.memory_source.c_str());
  }

  Tokenizer count_tok;
  const Tokenizer* count_ptr = nullptr;
  std::string tok_path = config_str(c, "TEACHER_TOKENIZER", config_str(c, "TOKENIZER_NAME"));
  if (!tok_path.empty()) {
    st = tokenizer_load(tok_path, &count_tok);
    if (st.ok()) count_ptr = &count_tok;
    else BK_LOG_WARN("cannot load %s to count tokens (%s); bytes/4 is used when usage is missing", tok_path.c_str(),
                     st.msg.c_str());
  }

  BaselineOptions opt;
  opt.temperature = temperature;
  opt.top_p = top_p;
  opt.max_tokens = (int)max_tokens;
  opt.context_length = (int)ctx;
  opt.concurrency = (int)conc;
  opt.template_text = info.template_text;
  opt.instruction = template_unescape(config_str(c, "TEACHER_INSTRUCTION"));
  BK_LOG_INFO("teacher baseline: %s, %zu prompts from %s", provider_describe(rs).c_str(), prompts.size(),
              prompts_desc.c_str());
  std::vector<BaselineRow> rows;
  st = baseline_run(&client, prompts, opt, count_ptr, &rows);
  if (!st.ok()) return cli_fail(a, st);
  info.timestamp = utc_timestamp_iso();
  std::string text = baseline_report_json(info, opt, rows);
  st = write_file_atomic(out, text);
  if (!st.ok()) return cli_fail(a, st);

  size_t ok = 0, scored = 0;
  double q = 0, tps = 0;
  for (const BaselineRow& r : rows) {
    if (r.ok) ok++, tps += r.decode_tps;
    if (!r.item.task.empty() && !r.item.reference.empty()) scored++, q += r.ok && r.scored ? r.score : 0;
  }
  printf("teacher baseline: %zu/%zu prompts ok, avg decode %.1f tok/s", ok, rows.size(), ok ? tps / ok : 0.0);
  if (scored) printf(", quality %.3f over %zu scored prompts", q / scored, scored);
  printf("\nwrote %s\n", out.c_str());
  if (ok < rows.size()) BK_LOG_WARN("%zu prompts failed; their errors are in the report", rows.size() - ok);
  return 0;
}

const Command& command_teacher() {
  static const Command c = {
      "teacher",
      "Measure the teacher baseline (latency, decode TPS, task quality) -> reports/teacher_baseline.json",
      "Greedy decoding of the eval prompts (TEACHER_BASELINE_PROMPTS_FILE: one prompt per line, or .jsonl with\n"
      "prompt/response/task; default: the task suite's held-out eval split, scored with its scorers).\n"
      "The report is locked: a run on another prompt set or model refuses to replace it without --force.\n"
      "Works with every provider, including anthropic, gemini and groq (no logprobs needed).",
      {
          {"provider", "TEACHER_PROVIDER", nullptr, "Teacher provider"},
          {"model", "TEACHER_MODEL", nullptr, "Teacher model"},
          {"base-url", "TEACHER_BASE_URL", nullptr, "Teacher base URL"},
          {"api", "TEACHER_API", nullptr, "chat or completions (OpenAI-compatible teachers)"},
          {"prompts", "TEACHER_BASELINE_PROMPTS_FILE", nullptr, "Prompts file"},
          {"max-prompts", "TEACHER_BASELINE_MAX_PROMPTS", nullptr, "Prompt count"},
          {"temperature", "TEACHER_BASELINE_TEMPERATURE", nullptr, "Sampling temperature"},
          {"top-p", "TEACHER_BASELINE_TOP_P", nullptr, "top_p"},
          {"max-tokens", "TEACHER_BASELINE_MAX_TOKENS", nullptr, "Max new tokens per prompt"},
          {"concurrency", nullptr, "1", "Parallel requests (1 keeps latency comparable with the PoC)"},
          {"timeout", "TEACHER_TIMEOUT_S", nullptr, "Per-request timeout in seconds"},
          {"teacher-checkpoint", "TEACHER_CHECKPOINT", nullptr, "Local teacher checkpoint (memory is measured)"},
          {"out", nullptr, "", "Report path (default REPORTS_DIR/teacher_baseline.json)"},
          {"force", nullptr, "", "Replace a baseline measured on other prompts or another model", true},
      },
      run_teacher,
  };
  return c;
}

}  // namespace bk
