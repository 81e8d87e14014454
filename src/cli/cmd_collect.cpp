// bitkd collect: KD traces from the teacher (data/kd_shard_*.parquet + kd_prompts_*.parquet).
// bitkd bench collect: client-side throughput (canned local server) and
// collection steps/s against a real teacher at several concurrencies.
#include <httplib.h>

#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/cli.h"
#include "cli/machine_json.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/timing.h"
#include "kd/collector.h"
#include "kd/prompts.h"
#include "kd/providers.h"
#include "eval/eval.h"
#include "model/infer.h"
#include "train/model_load.h"
#include "tokenizer/tokenizer.h"

namespace bk {

// Student tokenizer: TOKENIZER_NAME, else the one `bitkd tokenizer train` writes by default.
static Status load_student_tokenizer(const Args& a, Tokenizer* tok, std::string* path) {
  *path = arg_str(a, "tokenizer");
  if (path->empty()) {
    std::string def = path_join(path_join(artifact_paths(a.cfg).root, "tokenizer"), "tokenizer.model");
    if (!file_exists(def))
      return errorf("no student tokenizer: set TOKENIZER_NAME (or --tokenizer) to a SentencePiece tokenizer.model, "
                    "or train one with `bitkd tokenizer train`");
    *path = def;
  }
  return with_context(tokenizer_load(*path, tok), "loading the student tokenizer " + *path);
}

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
  st = load_student_tokenizer(a, &student, &tok_path);
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
  if (stats_path.empty())
    stats_path = path_join(paths.logs, opt.shard_n <= 1 ? std::string("collect_stats.json")
                                                        : "collect_stats_" + std::to_string(opt.shard_i) + "of" +
                                                              std::to_string(opt.shard_n) + ".json");
  // Stats are written even when the run stopped early: they say why and how far it got.
  st = write_file_atomic(stats_path, collect_stats_json(stats, opt, provider_client_settings(client)));
  if (!st.ok()) return cli_fail(a, st);
  if (!run.ok()) return cli_fail(a, run);
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
      "Collect KD traces (teacher top-K logprobs projected onto the student tokenizer) -> data/kd_shard_*.parquet",
      "Prompts (KD_PROMPTS_FILE: one per line, or .jsonl; default: the task suite's train split, KD_MAX_PROMPTS)\n"
      "go to the teacher with logprobs; each generated token becomes a step row (top-K projected onto\n"
      "TOKENIZER_NAME, raw candidates kept), each prompt a row of kd_prompts_*.parquet. KD_SOURCE=reference or\n"
      "on_policy has the teacher score the reference answers or a student's answers instead (a server that\n"
      "scores a given text: bitkd serve, vLLM, llama.cpp); collect each source into its own --out directory.\n"
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

// ---------------------------------------------------------------- bench collect

// A chat completion with `tokens` generated tokens and `k` candidates each,
// built from the student's own pieces so projection does real work.
static std::string canned_completion(const Tokenizer* tok, int tokens, int k) {
  nlohmann::json content = nlohmann::json::array();
  std::string text;
  int vocab = tok ? tokenizer_vocab_size(*tok) : 0;
  for (int t = 0; t < tokens; t++) {
    nlohmann::json top = nlohmann::json::array();
    std::string sampled;
    for (int j = 0; j < k; j++) {
      std::string piece;
      if (tok && vocab > 0) piece = tokenizer_token_bytes(*tok, (int32_t)((t * 31 + j * 7 + 5) % vocab));
      if (piece.empty()) piece = " w" + std::to_string((t + j) % 97);
      if (j == 0) sampled = piece;
      nlohmann::json bytes = nlohmann::json::array();
      for (unsigned char ch : piece) bytes.push_back((int)ch);
      top.push_back({{"token", piece}, {"logprob", -0.2 - 0.3 * j}, {"bytes", bytes}});
    }
    nlohmann::json bytes = nlohmann::json::array();
    for (unsigned char ch : sampled) bytes.push_back((int)ch);
    content.push_back({{"token", sampled}, {"logprob", -0.2}, {"bytes", bytes}, {"top_logprobs", top}});
    text += sampled;
  }
  nlohmann::json j = {
      {"id", "bench"},
      {"object", "chat.completion"},
      {"model", "canned"},
      {"choices",
       {{{"index", 0}, {"message", {{"role", "assistant"}, {"content", text}}}, {"finish_reason", "length"},
         {"logprobs", {{"content", content}}}}}},
      {"usage", {{"prompt_tokens", 10}, {"completion_tokens", tokens}}}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

static std::vector<int> parse_int_list(const std::string& s) {
  std::vector<int> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t comma = s.find(',', pos);
    if (comma == std::string::npos) comma = s.size();
    int v = atoi(s.substr(pos, comma - pos).c_str());
    if (v > 0) out.push_back(v);
    pos = comma + 1;
  }
  return out;
}

static int run_bench_collect(Args& a) {
  long long requests = 0, tokens = 0, k = 0, prompts_n = 0, max_tokens = 0;
  if (!arg_int_or_report(a, "requests", &requests) || !arg_int_or_report(a, "canned-tokens", &tokens) ||
      !arg_int_or_report(a, "top-logprobs", &k) || !arg_int_or_report(a, "prompts", &prompts_n) ||
      !arg_int_or_report(a, "max-tokens", &max_tokens))
    return 1;
  std::vector<int> concs = parse_int_list(arg_str(a, "concurrency"));
  if (concs.empty()) return cli_fail(a, errorf("--concurrency: give a list such as 1,4,8"));
  Tokenizer tok;
  std::string tok_path;
  Status st = load_student_tokenizer(a, &tok, &tok_path);
  if (!st.ok()) return cli_fail(a, st);
  std::string scratch = arg_str(a, "scratch");
  if (scratch.empty()) scratch = path_join(artifact_paths(a.cfg).root, "bench_collect");

  nlohmann::ordered_json out;
  out["bench"] = "collect";
  out["machine"] = machine_json();
  out["tokenizer"] = tok_path;

  // 1. Client overhead: a canned completion from an in-process server.
  std::string body = canned_completion(&tok, (int)tokens, (int)k);
  httplib::Server svr;
  svr.new_task_queue = [] { return new httplib::ThreadPool(16); };
  svr.Post(R"(.*)", [&body](const httplib::Request&, httplib::Response& res) {
    res.set_content(body, "application/json");
  });
  int port = svr.bind_to_any_port("127.0.0.1");
  if (port <= 0) return cli_fail(a, errorf("bench: cannot bind a local port"));
  std::thread th([&] { svr.listen_after_bind(); });
  while (!svr.is_running()) std::this_thread::yield();  // stop() only works once the loop runs
  std::string canned_url = "http://127.0.0.1:" + std::to_string(port) + "/v1";
  nlohmann::ordered_json client = nlohmann::ordered_json::array();
  for (int conc : concs) {
    ProviderSettings ps;
    ps.provider = "custom";
    ps.model = "canned";
    ps.base_url = canned_url;
    ps.local = true;
    ps.concurrency = conc;
    ProviderClient cl;
    provider_client_init(&cl, ps);
    CompletionRequest req;
    req.messages = {{"user", "bench"}};
    req.logprobs = true;
    req.top_logprobs = (int)k;
    std::atomic<long long> next{0}, fails{0};
    double t0 = now_seconds();
    std::vector<std::thread> ws;
    for (int w = 0; w < conc; w++)
      ws.emplace_back([&] {
        CompletionResult r;
        while (next.fetch_add(1) < requests)
          if (!provider_complete(&cl, req, &r).ok()) fails++;
      });
    for (auto& w : ws) w.join();
    double el = now_seconds() - t0;
    // Full client path: request, parse, projection, Parquet commit, into a scratch dir.
    CollectOptions co;
    co.data_dir = path_join(scratch, "canned_c" + std::to_string(conc));
    system(("rm -rf '" + co.data_dir + "'").c_str());
    co.template_text = "<|user|>\n{prompt}\n\n<|assistant|>\n";
    co.top_logprobs = (int)k;
    co.concurrency = conc;
    co.progress = false;
    co.flush_prompts = 1 << 30;
    std::vector<PromptItem> items;
    for (long long i = 0; i < prompts_n; i++) items.push_back({i, "bench prompt " + std::to_string(i), "", ""});
    CollectStats cs;
    st = collect_run(&cl, tok, items, co, &cs);
    if (!st.ok()) BK_LOG_WARN("bench collect (canned): %s", st.msg.c_str());
    client.push_back({{"concurrency", conc},
                      {"requests", requests},
                      {"failed", fails.load()},
                      {"requests_per_s", requests / el},
                      {"us_per_request", el / requests * 1e6},
                      {"tokens_per_request", tokens},
                      {"top_logprobs", k},
                      {"collect_prompts", prompts_n},
                      {"collect_steps_per_s", cs.elapsed_s > 0 ? cs.steps / cs.elapsed_s : 0.0},
                      {"collect_us_per_step", cs.steps > 0 ? cs.elapsed_s / cs.steps * 1e6 : 0.0}});
  }
  svr.stop();
  th.join();
  out["canned_server"] = client;

  // 2. Collection against a real teacher (e.g. a local `bitkd serve`).
  std::string base = arg_str(a, "base-url");
  if (!base.empty()) {
    nlohmann::ordered_json real = nlohmann::ordered_json::array();
    PromptSource src;
    src.split = TASK_SPLIT_TRAIN;
    src.max_prompts = prompts_n;
    std::vector<PromptItem> items;
    st = prompts_load(src, &items, nullptr);
    if (!st.ok()) return cli_fail(a, st);
    for (int conc : concs) {
      ProviderSettings ps;
      ps.provider = "bitkd";
      ps.base_url = base;
      ps.local = true;
      ps.concurrency = conc;
      ps.timeout_s = 600;
      ProviderClient cl;
      provider_client_init(&cl, ps);
      st = provider_discover_model(&cl);
      if (!st.ok()) return cli_fail(a, st);
      CollectOptions co;
      co.data_dir = path_join(scratch, "real_c" + std::to_string(conc));
      system(("rm -rf '" + co.data_dir + "'").c_str());
      co.template_text = "<|user|>\n{prompt}\n\n<|assistant|>\n";
      co.top_logprobs = (int)k;
      co.max_tokens = (int)max_tokens;
      co.concurrency = conc;
      co.progress = false;
      CollectStats cs;
      st = collect_run(&cl, tok, items, co, &cs);
      if (!st.ok()) return cli_fail(a, st);
      real.push_back({{"concurrency", conc},
                      {"prompts", cs.prompts_ok},
                      {"failed", cs.prompts_failed},
                      {"steps", cs.steps},
                      {"elapsed_s", cs.elapsed_s},
                      {"steps_per_s", cs.elapsed_s > 0 ? cs.steps / cs.elapsed_s : 0.0}});
    }
    out["teacher"] = {{"base_url", base}, {"max_tokens", max_tokens}, {"runs", real}};
  }
  printf("%s\n", out.dump(2).c_str());
  return 0;
}

const Command& command_bench_collect() {
  static const Command c = {
      "bench collect",
      "KD collection throughput: client overhead (canned local server) and steps/s against a teacher",
      "Part 1 starts an in-process server that returns one canned chat completion (--canned-tokens tokens,\n"
      "--top-logprobs candidates each) and measures requests/s through the provider client, then a full\n"
      "collect (parse, projection, Parquet) of --prompts prompts. Part 2 (with --base-url, e.g. a local\n"
      "`bitkd serve`) collects --prompts task-suite prompts at each --concurrency. Prints JSON.",
      {
          {"tokenizer", "TOKENIZER_NAME", nullptr, "Student SentencePiece tokenizer.model"},
          {"base-url", nullptr, "", "Teacher base URL for part 2 (skipped when empty)"},
          {"concurrency", nullptr, "1,4,8", "Concurrency levels"},
          {"requests", nullptr, "2000", "Requests per level against the canned server"},
          {"canned-tokens", nullptr, "64", "Tokens in the canned completion"},
          {"top-logprobs", nullptr, "20", "Candidates per token"},
          {"prompts", nullptr, "64", "Prompts per collect run"},
          {"max-tokens", nullptr, "64", "max_tokens per prompt in part 2"},
          {"scratch", nullptr, "", "Scratch directory (default <artifacts>/bench_collect)"},
      },
      run_bench_collect,
  };
  return c;
}

}  // namespace bk
