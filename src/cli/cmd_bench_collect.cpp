// bitkd bench collect: client-side throughput (canned local server) and
// collection steps/s against a real teacher at several concurrencies.
#include <httplib.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
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
#include "tokenizer/tokenizer.h"

namespace bk {

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
  Status st = student_tokenizer_load(a, &tok, &tok_path);
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
    st = provider_client_init(&cl, ps);
    if (!st.ok()) {
      svr.stop();
      th.join();
      return cli_fail(a, st);
    }
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
      st = provider_client_init(&cl, ps);
      if (st.ok()) st = provider_discover_model(&cl);
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
