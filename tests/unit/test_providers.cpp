// Provider client against a fault-injecting local server: retries, fail-fast,
// timeouts, limits, parsing of every API shape, and the API key never leaking.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/fs.h"
#include "core/log.h"
#include "kd/baseline.h"
#include "kd/providers.h"
#include "testutil/fault_server.h"
#include "testutil/testutil.h"

using bk_test::FaultAction;
using bk_test::FaultServer;
using json = nlohmann::json;

namespace {

const char* k_key = "sk-test-Zq8YwV3nR5tKp2LmX9cA";

const char* k_chat_body = R"({
  "id": "chatcmpl-1", "object": "chat.completion", "model": "m-1",
  "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "stop",
    "logprobs": {"content": [
      {"token": "Hi", "logprob": -0.1, "bytes": [72, 105],
       "top_logprobs": [{"token": "Hello", "logprob": -2.5, "bytes": [72, 101, 108, 108, 111]},
                        {"token": "Hi", "logprob": -0.1, "bytes": [72, 105]},
                        {"token": "Hey", "logprob": null, "bytes": null}]},
      {"token": "!", "logprob": -0.2, "bytes": [33],
       "top_logprobs": [{"token": "!", "logprob": -0.2, "bytes": [33]}]}]}}],
  "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})";

struct Sleeps {
  std::mutex mu;
  std::vector<std::pair<double, std::string>> calls;
  double clock = 1000.0;
};

// Client with hooks: sleeps are recorded and advance a virtual clock, never the real one.
bk::ProviderClient make_client(const std::string& base_url, Sleeps* sl, double timeout_s = 30, int retries = 5,
                               int concurrency = 4, double rpm = 0, double burst = 1) {
  bk::ProviderSettings s;
  s.provider = "openai";
  s.model = "m-1";
  s.base_url = base_url;
  s.api_key = k_key;
  s.timeout_s = timeout_s;
  s.max_retries = retries;
  s.concurrency = concurrency;
  s.rpm = rpm;
  s.burst = burst;
  bk::ProviderHooks h;
  h.clock = [sl] {
    std::lock_guard<std::mutex> lk(sl->mu);
    return sl->clock;
  };
  h.sleep = [sl](double sec, const char* why) {
    std::lock_guard<std::mutex> lk(sl->mu);
    sl->calls.push_back({sec, why});
    sl->clock += sec;
  };
  bk::ProviderClient c;
  EXPECT_TRUE(bk::provider_client_init(&c, s, &h).ok());
  return c;
}

bk::CompletionRequest chat_request(bool logprobs = true) {
  bk::CompletionRequest r;
  r.messages = {{"user", "Say hi"}};
  r.max_tokens = 8;
  r.logprobs = logprobs;
  r.top_logprobs = logprobs ? 3 : 0;
  return r;
}

std::string openai_error(const std::string& msg) {
  return std::string(R"({"error":{"message":")") + msg + R"(","type":"invalid_request_error","code":null}})";
}

}  // namespace

TEST(Providers, ParsesChatWithLogprobs) {
  FaultServer fs;
  fs.canned_body = k_chat_body;
  fs.start();
  Sleeps sl;
  bk::ProviderClient c = make_client(fs.base_url(), &sl);
  bk::CompletionResult r;
  bk::Status st = bk::provider_complete(&c, chat_request(), &r);
  ASSERT_TRUE(st.ok()) << st.msg;
  EXPECT_EQ(r.text, "Hi!");
  EXPECT_EQ(r.finish_reason, "stop");
  EXPECT_EQ(r.model, "m-1");
  EXPECT_TRUE(r.has_usage);
  EXPECT_EQ(r.prompt_tokens, 5);
  EXPECT_EQ(r.completion_tokens, 2);
  ASSERT_TRUE(r.has_logprobs);
  ASSERT_EQ(r.tokens.size(), 2u);
  EXPECT_EQ(r.tokens[0].text, "Hi");
  EXPECT_TRUE(r.tokens[0].has_bytes);
  EXPECT_EQ(r.tokens[0].bytes, "Hi");
  EXPECT_FLOAT_EQ(r.tokens[0].logprob, -0.1f);
  ASSERT_EQ(r.tokens[0].top.size(), 3u);
  // Sorted by logprob; null logprob is -inf and last; null bytes means no bytes.
  EXPECT_EQ(r.tokens[0].top[0].text, "Hi");
  EXPECT_EQ(r.tokens[0].top[1].text, "Hello");
  EXPECT_EQ(r.tokens[0].top[1].bytes, "Hello");
  EXPECT_TRUE(std::isinf(r.tokens[0].top[2].logprob));
  EXPECT_FALSE(r.tokens[0].top[2].has_bytes);
  EXPECT_EQ(r.attempts, 1);
  EXPECT_EQ(r.http_status, 200);
  // The request carried what KD needs, and the key only in the header.
  ASSERT_EQ(fs.bodies.size(), 1u);
  EXPECT_NE(fs.bodies[0].find("\"top_logprobs\":3"), std::string::npos) << fs.bodies[0];
  EXPECT_NE(fs.bodies[0].find("\"logprobs\":true"), std::string::npos);
  EXPECT_NE(fs.bodies[0].find("\"model\":\"m-1\""), std::string::npos);
  EXPECT_EQ(fs.paths[0], "/v1/chat/completions");
  EXPECT_EQ(fs.auth_headers[0], std::string("Bearer ") + k_key);
  EXPECT_EQ(fs.bodies[0].find(k_key), std::string::npos);
}

TEST(Providers, RetriesAfter429HonouringRetryAfter) {
  FaultServer fs;
  fs.canned_body = k_chat_body;
  fs.script.push_back(FaultAction::error(429, openai_error("Rate limit reached"), "7"));
  fs.start();
  Sleeps sl;
  bk::ProviderClient c = make_client(fs.base_url(), &sl);
  bk::CompletionResult r;
  bk::Status st = bk::provider_complete(&c, chat_request(), &r);
  ASSERT_TRUE(st.ok()) << st.msg;
  EXPECT_EQ(r.attempts, 2);
  EXPECT_EQ(fs.post_count(), 2);
  ASSERT_EQ(sl.calls.size(), 1u);
  EXPECT_EQ(sl.calls[0].second, "retry-after");
  EXPECT_GE(sl.calls[0].first, 7.0);  // backoff alone would be <= 0.5 s
  bk::ProviderStats ps = bk::provider_stats(c);
  EXPECT_EQ(ps.http_429, 1);
  EXPECT_EQ(ps.retries, 1);
  EXPECT_EQ(ps.ok, 1);
}

TEST(Providers, RetriesServerErrorsWithExponentialBackoff) {
  FaultServer fs;
  fs.canned_body = k_chat_body;
  fs.script.push_back(FaultAction::error(500, openai_error("internal")));
  fs.script.push_back(FaultAction::error(502, "<html>bad gateway</html>"));
  fs.script.push_back(FaultAction::error(503, openai_error("overloaded")));
  fs.start();
  Sleeps sl;
  bk::ProviderClient c = make_client(fs.base_url(), &sl);
  bk::CompletionResult r;
  bk::Status st = bk::provider_complete(&c, chat_request(), &r);
  ASSERT_TRUE(st.ok()) << st.msg;
  EXPECT_EQ(r.attempts, 4);
  ASSERT_EQ(sl.calls.size(), 3u);
  for (int k = 0; k < 3; k++) {
    double cap = 0.5 * std::pow(2.0, k);  // TEACHER_BACKOFF_S default 0.5, doubling
    EXPECT_EQ(sl.calls[k].second, "backoff");
    EXPECT_GE(sl.calls[k].first, 0.5 * cap);  // equal jitter: [cap/2, cap]
    EXPECT_LE(sl.calls[k].first, cap);
  }
  EXPECT_EQ(bk::provider_stats(c).http_5xx, 3);
}

TEST(Providers, GivesUpAfterMaxRetries) {
  FaultServer fs;
  fs.rule = [](int, const std::string&) { return FaultAction::error(500, openai_error("down")); };
  fs.start();
  Sleeps sl;
  bk::ProviderClient c = make_client(fs.base_url(), &sl, 30, /*retries=*/2);
  bk::CompletionResult r;
  bk::Status st = bk::provider_complete(&c, chat_request(), &r);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(r.attempts, 3);
  EXPECT_EQ(fs.post_count(), 3);
  EXPECT_EQ(r.error_kind, "http_5xx");
  EXPECT_NE(st.msg.find("gave up after 3 attempts"), std::string::npos) << st.msg;
  EXPECT_NE(st.msg.find("HTTP 500: down"), std::string::npos) << st.msg;
}

TEST(Providers, RetriesDroppedConnection) {
  FaultServer fs;
  fs.canned_body = k_chat_body;
  fs.script.push_back(FaultAction::drop());
  fs.start();
  Sleeps sl;
  bk::ProviderClient c = make_client(fs.base_url(), &sl);
  bk::CompletionResult r;
  bk::Status st = bk::provider_complete(&c, chat_request(), &r);
  ASSERT_TRUE(st.ok()) << st.msg;
  EXPECT_EQ(r.attempts, 2);
  EXPECT_EQ(bk::provider_stats(c).connection_errors, 1);
  EXPECT_EQ(r.text, "Hi!");
}

TEST(Providers, RetriesMalformedJsonThenFails) {
  FaultServer fs;
  fs.canned_body = k_chat_body;
  fs.script.push_back(FaultAction::malformed());
  fs.script.push_back(FaultAction::error(200, R"({"object":"chat.completion"})"));  // valid JSON, no choices
  fs.start();
  Sleeps sl;
  bk::ProviderClient c = make_client(fs.base_url(), &sl);
  bk::CompletionResult r;
  bk::Status st = bk::provider_complete(&c, chat_request(), &r);
  ASSERT_TRUE(st.ok()) << st.msg;
  EXPECT_EQ(r.attempts, 3);
  EXPECT_EQ(bk::provider_stats(c).malformed, 2);

  fs.rule = [](int, const std::string&) { return FaultAction::malformed(); };
  st = bk::provider_complete(&c, chat_request(), &r);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(r.error_kind, "malformed");
  EXPECT_EQ(r.attempts, 6);
  EXPECT_NE(st.msg.find("not valid JSON"), std::string::npos) << st.msg;
}

TEST(Providers, FailsFastOn400And401WithProviderMessage) {
  FaultServer fs;
  fs.script.push_back(FaultAction::error(400, openai_error("max_tokens is too large: 99999")));
  // Like OpenAI, the 401 message quotes (part of) the key; it must not leak.
  fs.script.push_back(FaultAction::error(401, openai_error(std::string("Incorrect API key provided: ") + k_key)));
  fs.script.push_back(
      FaultAction::error(403, R"({"type":"error","error":{"type":"permission_error","message":"key sk-test-Zq8Y...cA lacks access"}})"));
  fs.start();
  Sleeps sl;
  bk::ProviderClient c = make_client(fs.base_url(), &sl);
  bk::CompletionResult r;

  bk::Status st = bk::provider_complete(&c, chat_request(), &r);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(r.attempts, 1);
  EXPECT_EQ(r.http_status, 400);
  EXPECT_EQ(r.error_kind, "http_400");
  EXPECT_NE(st.msg.find("HTTP 400"), std::string::npos) << st.msg;
  EXPECT_NE(st.msg.find("max_tokens is too large: 99999"), std::string::npos) << st.msg;

  st = bk::provider_complete(&c, chat_request(), &r);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(r.attempts, 1);
  EXPECT_EQ(r.http_status, 401);
  EXPECT_NE(st.msg.find("HTTP 401"), std::string::npos) << st.msg;
  EXPECT_NE(st.msg.find("Incorrect API key provided"), std::string::npos) << st.msg;
  EXPECT_NE(st.msg.find("TEACHER_API_KEY"), std::string::npos) << st.msg;
  EXPECT_EQ(st.msg.find(k_key), std::string::npos) << st.msg;
  EXPECT_EQ(st.msg.find(std::string(k_key).substr(8, 10)), std::string::npos) << st.msg;

  st = bk::provider_complete(&c, chat_request(), &r);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(r.http_status, 403);
  EXPECT_NE(st.msg.find("lacks access"), std::string::npos) << st.msg;
  EXPECT_EQ(st.msg.find("Zq8Y"), std::string::npos) << st.msg;  // the key's own prefix, quoted by the server
  EXPECT_EQ(fs.post_count(), 3);
  EXPECT_TRUE(sl.calls.empty());  // no retry waits at all
}

TEST(Providers, TimesOutAndRetries) {
  FaultServer fs;
  fs.canned_body = k_chat_body;
  fs.script.push_back(FaultAction::hang());  // held on the server's condition variable
  fs.start();
  Sleeps sl;
  bk::ProviderClient c = make_client(fs.base_url(), &sl, /*timeout_s=*/0.3, /*retries=*/2);
  bk::CompletionResult r;
  bk::Status st = bk::provider_complete(&c, chat_request(), &r);
  ASSERT_TRUE(st.ok()) << st.msg;
  EXPECT_EQ(r.attempts, 2);
  EXPECT_EQ(bk::provider_stats(c).timeouts, 1);

  fs.rule = [](int, const std::string&) { return FaultAction::hang(); };
  st = bk::provider_complete(&c, chat_request(), &r);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(r.error_kind, "timeout");
  EXPECT_EQ(r.attempts, 3);
  EXPECT_NE(st.msg.find("TEACHER_TIMEOUT_S"), std::string::npos) << st.msg;
  fs.release();
}

TEST(Providers, RpmCapIsCounted) {
  FaultServer fs;
  fs.canned_body = k_chat_body;
  fs.start();
  {
    // 60 rpm, no burst: 5 back-to-back requests need 4 waits totalling 4 virtual seconds.
    Sleeps sl;
    bk::ProviderClient c = make_client(fs.base_url(), &sl, 30, 5, 4, /*rpm=*/60, /*burst=*/1);
    bk::CompletionResult r;
    for (int i = 0; i < 5; i++) ASSERT_TRUE(bk::provider_complete(&c, chat_request(), &r).ok());
    bk::ProviderStats ps = bk::provider_stats(c);
    EXPECT_EQ(ps.rate_limit_waits, 4);
    EXPECT_NEAR(ps.rate_limit_wait_s, 4.0, 1e-6);
    ASSERT_EQ(sl.calls.size(), 4u);
    for (auto& call : sl.calls) {
      EXPECT_EQ(call.second, "rate-limit");
      EXPECT_NEAR(call.first, 1.0, 1e-6);
    }
  }
  {
    // 30 rpm with a burst of 3: the first 3 go at once, then one per 2 s.
    Sleeps sl;
    bk::ProviderClient c = make_client(fs.base_url(), &sl, 30, 5, 4, /*rpm=*/30, /*burst=*/3);
    bk::CompletionResult r;
    for (int i = 0; i < 5; i++) ASSERT_TRUE(bk::provider_complete(&c, chat_request(), &r).ok());
    bk::ProviderStats ps = bk::provider_stats(c);
    EXPECT_EQ(ps.rate_limit_waits, 2);
    EXPECT_NEAR(ps.rate_limit_wait_s, 4.0, 1e-6);
  }
  EXPECT_EQ(fs.post_count(), 10);
}

TEST(Providers, ConcurrencyLimitSharedAcrossThreads) {
  FaultServer fs;
  fs.canned_body = k_chat_body;
  // Odd arrivals wait for the next arrival, so with room for 2 there are always
  // 2 in flight together; a missing limit would let all 8 in at once.
  fs.gate = [&fs](int n) {
    std::unique_lock<std::mutex> lk(fs.mu);
    int need = n % 2 ? n + 1 : n;
    fs.cv.notify_all();
    fs.cv.wait(lk, [&] { return fs.posts >= need || fs.released; });
  };
  fs.start();
  Sleeps sl;
  bk::ProviderClient c = make_client(fs.base_url(), &sl, 60, 0, /*concurrency=*/2);
  std::atomic<int> ok{0};
  std::vector<std::thread> th;
  for (int i = 0; i < 8; i++)
    th.emplace_back([&] {
      bk::CompletionResult r;
      if (bk::provider_complete(&c, chat_request(), &r).ok()) ok++;
    });
  for (auto& t : th) t.join();
  EXPECT_EQ(ok.load(), 8);
  EXPECT_EQ(fs.max_in_flight, 2);
  EXPECT_EQ(bk::provider_stats(c).max_in_flight, 2);
}

TEST(Providers, ParsesLegacyCompletionsAnthropicGemini) {
  FaultServer fs;
  fs.start();
  Sleeps sl;
  bk::CompletionResult r;
  {
    fs.canned_body = R"({"object":"text_completion","model":"m","choices":[{"text":" 42","index":0,
      "finish_reason":"length","logprobs":{"tokens":[" 4","2"],"token_logprobs":[-0.5,-0.01],
      "top_logprobs":[{" 4":-0.5," 3":-1.2},{"2":-0.01,"1":-4.6}],"text_offset":[10,12]}}],
      "usage":{"prompt_tokens":3,"completion_tokens":2}})";
    bk::ProviderSettings s;
    s.provider = "vllm";
    s.base_url = fs.base_url();
    s.api = bk::API_COMPLETIONS;
    bk::ProviderClient c;
    ASSERT_TRUE(bk::provider_client_init(&c, s).ok());
    bk::CompletionRequest q;
    q.prompt = "<|user|>\nx\n\n<|assistant|>\n";
    q.logprobs = true;
    q.top_logprobs = 2;
    ASSERT_TRUE(bk::provider_complete(&c, q, &r).ok());
    EXPECT_EQ(r.text, " 42");
    EXPECT_EQ(r.finish_reason, "length");
    ASSERT_EQ(r.tokens.size(), 2u);
    EXPECT_EQ(r.tokens[0].text, " 4");
    ASSERT_EQ(r.tokens[0].top.size(), 2u);
    EXPECT_EQ(r.tokens[0].top[0].text, " 4");
    EXPECT_FLOAT_EQ(r.tokens[0].top[1].logprob, -1.2f);
    EXPECT_EQ(fs.paths.back(), "/v1/completions");
    EXPECT_NE(fs.bodies.back().find("\"logprobs\":2"), std::string::npos) << fs.bodies.back();
    EXPECT_EQ(fs.auth_headers.back(), "");  // local server, no key: no header
  }
  {
    fs.canned_body = R"({"id":"msg_1","type":"message","role":"assistant","model":"claude-x",
      "content":[{"type":"text","text":"Hello"},{"type":"text","text":" world"}],
      "stop_reason":"end_turn","usage":{"input_tokens":9,"output_tokens":3}})";
    bk::ProviderSettings s;
    s.provider = "anthropic";
    s.model = "claude-x";
    s.base_url = fs.base_url();
    s.api_key = k_key;
    s.api = bk::API_ANTHROPIC;
    s.logprobs_supported = false;
    s.logprobs_reason = "none";
    bk::ProviderClient c;
    ASSERT_TRUE(bk::provider_client_init(&c, s).ok());
    bk::CompletionRequest q = chat_request(false);
    q.messages.insert(q.messages.begin(), {"system", "Be brief."});
    ASSERT_TRUE(bk::provider_complete(&c, q, &r).ok());
    EXPECT_EQ(r.text, "Hello world");
    EXPECT_EQ(r.finish_reason, "end_turn");
    EXPECT_TRUE(r.has_usage);
    EXPECT_EQ(r.completion_tokens, 3);
    EXPECT_EQ(fs.paths.back(), "/v1/messages");
    EXPECT_EQ(fs.api_key_headers.back(), k_key);
    EXPECT_NE(fs.bodies.back().find("\"system\":\"Be brief.\""), std::string::npos);
  }
  {
    fs.canned_body = R"({"candidates":[{"content":{"role":"model","parts":[{"text":"{\"a\": 1}"}]},
      "finishReason":"STOP","logprobsResult":{"topCandidates":[{"candidates":[{"token":"{","logProbability":-0.01},
      {"token":"[","logProbability":-5.0}]}],"chosenCandidates":[{"token":"{","logProbability":-0.01}]}}],
      "usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":5},"modelVersion":"gemini-x"})";
    bk::ProviderSettings s;
    s.provider = "gemini";
    s.model = "gemini-x";
    s.base_url = fs.base_url();
    s.api_key = k_key;
    s.api = bk::API_GEMINI;
    bk::ProviderClient c;
    ASSERT_TRUE(bk::provider_client_init(&c, s).ok());
    ASSERT_TRUE(bk::provider_complete(&c, chat_request(true), &r).ok());
    EXPECT_EQ(r.text, "{\"a\": 1}");
    EXPECT_EQ(r.finish_reason, "stop");
    EXPECT_EQ(r.completion_tokens, 5);
    ASSERT_EQ(r.tokens.size(), 1u);
    EXPECT_EQ(r.tokens[0].top.size(), 2u);
    EXPECT_EQ(fs.paths.back(), "/v1/models/gemini-x:generateContent");
    EXPECT_EQ(fs.api_key_headers.back(), k_key);
    EXPECT_NE(fs.bodies.back().find("\"responseLogprobs\":true"), std::string::npos);
  }
}

static bk::Config config_with(const std::map<std::string, std::string>& flags) {
  bk::Config c;
  std::map<std::string, std::string> f = flags;
  // Blank the environment's teacher settings so the test sees only its own.
  for (const char* k : {"TEACHER_PROVIDER", "PROVIDER", "TEACHER_MODEL", "TEACHER_BASE_URL", "TEACHER_API_KEY",
                        "OPENAI_API_KEY", "DEEPSEEK_API_KEY", "GROQ_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"})
    if (!f.count(k)) f[k] = "";
  EXPECT_TRUE(bk::config_load(&c, "", f).ok());
  return c;
}

TEST(Providers, ResolvesFromConfig) {
  bk::ProviderSettings s;
  bk::Config c = config_with({{"TEACHER_PROVIDER", "deepseek"}, {"DEEPSEEK_API_KEY", "dk-1234567890"}});
  ASSERT_TRUE(bk::provider_resolve(c, &s).ok());
  EXPECT_EQ(s.provider, "deepseek");
  EXPECT_EQ(s.model, "deepseek-chat");
  EXPECT_EQ(s.base_url, "https://api.deepseek.com/v1");
  EXPECT_EQ(s.api_key, "dk-1234567890");
  EXPECT_EQ(s.api, bk::API_CHAT);

  // TEACHER_* win over the provider's own variables.
  c = config_with({{"PROVIDER", "openai"}, {"OPENAI_API_KEY", "sk-provider-key"}, {"TEACHER_API_KEY", "sk-teacher-key"},
                   {"TEACHER_MODEL", "gpt-x"}, {"TEACHER_BASE_URL", "http://127.0.0.1:9/v1/"}, {"TEACHER_API", "completions"}});
  ASSERT_TRUE(bk::provider_resolve(c, &s).ok());
  EXPECT_EQ(s.provider, "openai");
  EXPECT_EQ(s.api_key, "sk-teacher-key");
  EXPECT_EQ(s.model, "gpt-x");
  EXPECT_EQ(s.base_url, "http://127.0.0.1:9/v1");
  EXPECT_EQ(s.api, bk::API_COMPLETIONS);
  EXPECT_EQ(s.max_top_logprobs, 5);
  bk::Status st = bk::provider_check_kd(s, 20);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("1..5"), std::string::npos) << st.msg;
  EXPECT_EQ(bk::provider_describe(s).find("sk-teacher-key"), std::string::npos);

  // No provider at all: the embedded local teacher.
  c = config_with({});
  ASSERT_TRUE(bk::provider_resolve(c, &s).ok());
  EXPECT_EQ(s.provider, "bitkd");
  EXPECT_TRUE(s.local);

  // A hosted provider without a key names what to set.
  c = config_with({{"TEACHER_PROVIDER", "openai"}});
  st = bk::provider_resolve(c, &s);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("TEACHER_API_KEY or OPENAI_API_KEY"), std::string::npos) << st.msg;

  // Any name with a base URL is an OpenAI-compatible server.
  c = config_with({{"TEACHER_PROVIDER", "myserver"}, {"TEACHER_BASE_URL", "http://10.0.0.1:8000/v1"}});
  ASSERT_TRUE(bk::provider_resolve(c, &s).ok());
  EXPECT_TRUE(s.local);
  EXPECT_TRUE(s.logprobs_supported);
  c = config_with({{"TEACHER_PROVIDER", "myserver"}});
  EXPECT_FALSE(bk::provider_resolve(c, &s).ok());

  // A prompt prefix belongs to llama.cpp's native route only.
  c = config_with({{"TEACHER_PROVIDER", "llamacpp"}, {"TEACHER_API", "native"}, {"TEACHER_PROMPT_PREFIX", " "}});
  ASSERT_TRUE(bk::provider_resolve(c, &s).ok());
  EXPECT_EQ(s.prompt_prefix, " ");
  c = config_with({{"TEACHER_PROVIDER", "vllm"}, {"TEACHER_API", "completions"}, {"TEACHER_PROMPT_PREFIX", " "}});
  st = bk::provider_resolve(c, &s);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("TEACHER_API=native"), std::string::npos) << st.msg;
}

TEST(Providers, KdRefusedBeforeAnyRequestForProvidersWithoutLogprobs) {
  FaultServer fs;
  fs.canned_body = k_chat_body;
  fs.start();
  for (const char* p : {"groq", "anthropic", "gemini"}) {
    bk::Config c = config_with({{"TEACHER_PROVIDER", p}, {"TEACHER_API_KEY", k_key}, {"TEACHER_MODEL", "x"},
                                {"TEACHER_BASE_URL", fs.base_url()}});
    bk::ProviderSettings s;
    ASSERT_TRUE(bk::provider_resolve(c, &s).ok()) << p;
    EXPECT_FALSE(s.logprobs_supported) << p;
    bk::Status st = bk::provider_check_kd(s, 20);
    ASSERT_FALSE(st.ok()) << p;
    EXPECT_NE(st.msg.find(p), std::string::npos) << st.msg;
    if (std::string(p) == "groq") {
      EXPECT_NE(st.msg.find("HTTP 400"), std::string::npos) << st.msg;
    }
    if (std::string(p) == "gemini") {
      EXPECT_NE(st.msg.find("GEMINI_LOGPROBS=1"), std::string::npos) << st.msg;
    }
    bk::ProviderClient cl;
    ASSERT_TRUE(bk::provider_client_init(&cl, s).ok());
    bk::CompletionResult r;
    st = bk::provider_complete(&cl, chat_request(true), &r);
    ASSERT_FALSE(st.ok()) << p;
    EXPECT_EQ(r.error_kind, "config");
    EXPECT_EQ(st.msg.find(k_key), std::string::npos);
  }
  EXPECT_EQ(fs.post_count(), 0);  // refused before any request

  // Gemini becomes a KD teacher when configured.
  bk::Config c = config_with({{"TEACHER_PROVIDER", "gemini"}, {"TEACHER_API_KEY", k_key}, {"TEACHER_MODEL", "x"},
                              {"GEMINI_LOGPROBS", "1"}});
  bk::ProviderSettings s;
  ASSERT_TRUE(bk::provider_resolve(c, &s).ok());
  EXPECT_TRUE(bk::provider_check_kd(s, 20).ok());
  EXPECT_FALSE(bk::provider_check_kd(s, 21).ok());
}

TEST(Providers, KeyNeverInErrorsOrLogs) {
  std::string dir = bk_test::scratch_dir("providers_key_leak");
  std::string log_path = dir + "/client.log";
  bk::log_set_file(log_path);
  FaultServer fs;
  fs.canned_body = k_chat_body;
  std::string leak = std::string("bad key ") + k_key + " (Bearer " + k_key + ")";
  fs.script.push_back(FaultAction::error(429, openai_error(leak), "0"));
  fs.script.push_back(FaultAction::error(500, leak));  // not JSON: the raw body is quoted
  fs.script.push_back(FaultAction::error(404, openai_error(leak)));
  fs.start();
  Sleeps sl;
  bk::ProviderClient c = make_client(fs.base_url(), &sl);
  bk::CompletionResult r;
  bk::Status st = bk::provider_complete(&c, chat_request(), &r);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(r.http_status, 404);
  EXPECT_EQ(st.msg.find(k_key), std::string::npos) << st.msg;
  EXPECT_NE(st.msg.find("bad key ****"), std::string::npos) << st.msg;

  // A connection error (nothing listens on the port) with the key set.
  c = bk::ProviderClient();  // close its keep-alive connection so the server stops at once
  fs.stop();
  bk::ProviderClient c2 = make_client(fs.base_url(), &sl, 5, 1);
  st = bk::provider_complete(&c2, chat_request(), &r);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(r.error_kind, "connection");
  EXPECT_EQ(st.msg.find(k_key), std::string::npos) << st.msg;

  // A base URL carrying the key as a credential is not echoed either.
  bk::Config cfg = config_with({{"TEACHER_PROVIDER", "openai"}, {"TEACHER_API_KEY", k_key},
                                {"TEACHER_BASE_URL", std::string("ftp://user:") + k_key + "@host/v1"}});
  bk::ProviderSettings s;
  st = bk::provider_resolve(cfg, &s);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.msg.find(k_key), std::string::npos) << st.msg;

  bk::log_set_file("");
  std::string log;
  ASSERT_TRUE(bk::read_file(log_path, &log).ok());
  EXPECT_NE(log.find("retrying"), std::string::npos) << log;  // the retries were logged
  EXPECT_EQ(log.find(k_key), std::string::npos) << log;
  EXPECT_EQ(log.find(std::string(k_key).substr(10, 8)), std::string::npos) << log;
}

TEST(Providers, RedactSecret) {
  EXPECT_EQ(bk::redact_secret("x sk-abcdef123456 y", "sk-abcdef123456"), "x **** y");
  EXPECT_EQ(bk::redact_secret("key sk-ab...3456 end", "sk-abcdef123456"), "key sk-ab...3456 end");
  EXPECT_EQ(bk::redact_secret("prefix sk-abcdef... end", "sk-abcdef123456"), "prefix ****... end");
  EXPECT_EQ(bk::redact_secret("nothing here", ""), "nothing here");
}

// ---- scoring a given text ----------------------------------------------------------

namespace {

// "ab" + "cd" scored: tokens "a", "bc" (straddles the boundary: dropped), "d".
const char* k_echo_body = R"({"object": "text_completion", "model": "m-1",
  "choices": [{"index": 0, "text": "abcd", "finish_reason": "length",
    "logprobs": {"tokens": ["a", "bc", "d"], "token_logprobs": [null, -0.5, -0.25],
                 "top_logprobs": [null, {"bc": -0.5, "bd": -1.5}, {"d": -0.25, "e": -2.0}],
                 "text_offset": [0, 1, 3]}}]})";

// vLLM's prompt_logprobs: ids 7 ("ab"), 8 ("c"), 9 ("d"); the first has no context.
const char* k_vllm_body = R"({"object": "text_completion", "model": "m-1",
  "choices": [{"index": 0, "text": "", "finish_reason": "length", "logprobs": null,
    "prompt_token_ids": [7, 8, 9],
    "prompt_logprobs": [null,
      {"8": {"logprob": -0.7, "rank": 2, "decoded_token": "c"}, "3": {"logprob": -0.6, "rank": 1, "decoded_token": "x"}},
      {"9": {"logprob": -0.1, "rank": 1, "decoded_token": "d"}}]}]})";

bk::ProviderClient score_client(const std::string& base_url, const std::string& provider, Sleeps* sl) {
  bk::ProviderSettings s;
  s.provider = provider;
  s.model = "m-1";
  s.base_url = base_url;
  s.local = provider != "openai";
  bk::ProviderHooks h;
  h.clock = [sl] { return sl->clock; };
  h.sleep = [sl](double sec, const char*) { sl->clock += sec; };
  bk::ProviderClient c;
  EXPECT_TRUE(bk::provider_client_init(&c, s, &h).ok());
  return c;
}

}  // namespace

TEST(ProviderScore, EchoShapeKeepsTheContinuationsWholeTokens) {
  FaultServer fs;
  fs.canned_body = k_echo_body;
  fs.start();
  Sleeps sl;
  bk::ProviderClient c = score_client(fs.base_url(), "bitkd", &sl);
  bk::ScoreRequest req;
  req.prompt = "ab";
  req.continuation = "cd";
  req.top_logprobs = 2;
  bk::CompletionResult r;
  bk::Status st = bk::provider_score(&c, req, &r);
  ASSERT_TRUE(st.ok()) << st.msg;
  EXPECT_EQ(r.text, "cd");
  EXPECT_EQ(r.finish_reason, "stop");
  ASSERT_EQ(r.tokens.size(), 1u) << "the token straddling the boundary is dropped";
  EXPECT_EQ(r.tokens[0].text, "d");
  EXPECT_EQ(r.tokens[0].byte_offset, 1);
  EXPECT_FLOAT_EQ(r.tokens[0].logprob, -0.25f);
  ASSERT_EQ(r.tokens[0].top.size(), 2u);
  EXPECT_EQ(r.tokens[0].top[0].text, "d");
  // One legacy Completions request: the whole text, echoed and scored, nothing generated.
  ASSERT_EQ(fs.bodies.size(), 1u);
  EXPECT_EQ(fs.paths[0], "/v1/completions");
  for (const char* want : {"\"prompt\":\"abcd\"", "\"echo\":true", "\"max_tokens\":0", "\"logprobs\":2"})
    EXPECT_NE(fs.bodies[0].find(want), std::string::npos) << want << " in " << fs.bodies[0];
}

TEST(ProviderScore, VllmPromptLogprobsShape) {
  FaultServer fs;
  fs.canned_body = k_vllm_body;
  fs.start();
  Sleeps sl;
  bk::ProviderClient c = score_client(fs.base_url(), "vllm", &sl);
  bk::ScoreRequest req;
  req.prompt = "ab";
  req.continuation = "cd";
  req.top_logprobs = 2;
  bk::CompletionResult r;
  bk::Status st = bk::provider_score(&c, req, &r);
  ASSERT_TRUE(st.ok()) << st.msg;
  ASSERT_EQ(r.tokens.size(), 2u);
  EXPECT_EQ(r.tokens[0].text, "c");
  EXPECT_EQ(r.tokens[0].byte_offset, 0);
  EXPECT_FLOAT_EQ(r.tokens[0].logprob, -0.7f);
  ASSERT_EQ(r.tokens[0].top.size(), 2u);
  EXPECT_EQ(r.tokens[0].top[0].text, "x") << "sorted by logprob";
  EXPECT_EQ(r.tokens[1].text, "d");
  EXPECT_EQ(r.tokens[1].byte_offset, 1);
  EXPECT_NE(fs.bodies[0].find("\"prompt_logprobs\":2"), std::string::npos) << fs.bodies[0];
}

TEST(ProviderScore, HostedChatApisAreRefusedBeforeAnyRequest) {
  FaultServer fs;
  fs.canned_body = k_echo_body;
  fs.start();
  Sleeps sl;
  bk::ProviderClient c = score_client(fs.base_url(), "openai", &sl);
  bk::ScoreRequest req;
  req.prompt = "ab";
  req.continuation = "cd";
  bk::CompletionResult r;
  bk::Status st = bk::provider_score(&c, req, &r);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("cannot score a given text"), std::string::npos) << st.msg;
  EXPECT_EQ(r.error_kind, "config");
  EXPECT_TRUE(fs.bodies.empty());
}

// TEACHER_INSTRUCTION reaches a chat teacher as a system message before the
// prompt, the reply is scored on the answer inside it, and the baseline
// records both.
TEST(Providers, InstructionGoesFirstAndTheReplyIsScoredOnItsAnswer) {
  FaultServer fs;
  fs.canned_body = R"({"id":"c","object":"chat.completion","model":"m-1","choices":[{"index":0,
    "message":{"role":"assistant","content":"Let me compute that.\nThe answer is 42."},"finish_reason":"stop"}],
    "usage":{"prompt_tokens":9,"completion_tokens":8}})";
  fs.start();
  Sleeps sl;
  bk::ProviderClient c = make_client(fs.base_url(), &sl);
  bk::PromptItem item;
  item.prompt = "What is 40 + 2?";
  item.task = "arithmetic";
  item.reference = "42";
  bk::BaselineOptions opt;
  opt.instruction = "Reply with the answer only.";
  opt.max_tokens = 16;
  opt.progress = false;
  std::vector<bk::BaselineRow> rows;
  ASSERT_TRUE(bk::baseline_run(&c, {item}, opt, nullptr, &rows).ok());
  ASSERT_EQ(fs.bodies.size(), 1u);
  json body = json::parse(fs.bodies[0]);
  ASSERT_EQ(body["messages"].size(), 2u) << body;
  EXPECT_EQ(body["messages"][0]["role"], "system");
  EXPECT_EQ(body["messages"][0]["content"], "Reply with the answer only.");
  EXPECT_EQ(body["messages"][1]["role"], "user");
  EXPECT_EQ(body["messages"][1]["content"], "What is 40 + 2?");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_TRUE(rows[0].scored);
  EXPECT_EQ(rows[0].score, 1.0);
  EXPECT_EQ(rows[0].answer, "42.");
  bk::BaselineInfo info;
  json rep = json::parse(bk::baseline_report_json(info, opt, rows));
  EXPECT_EQ(rep["instruction"], "Reply with the answer only.");
  EXPECT_EQ(rep["results"][0]["scored_answer"], "42.");
}

// llama.cpp's native /completion: at the server's root (not under /v1), the raw
// prompt with n_probs; both the current and the older probability shapes.
TEST(Providers, LlamaCppNativeRouteBothProbabilityShapes) {
  FaultServer fs;
  fs.start();
  bk::ProviderSettings s;
  s.provider = "llamacpp";
  s.base_url = fs.base_url();  // ends in /v1
  s.api = bk::API_LLAMACPP;
  s.max_retries = 0;
  bk::ProviderClient c;
  ASSERT_TRUE(bk::provider_client_init(&c, s).ok());
  bk::CompletionRequest q;
  q.prompt = "<|user|>\nx\n\n<|assistant|>\n";
  q.max_tokens = 8;
  q.logprobs = true;
  q.top_logprobs = 2;
  {
    fs.canned_body = R"({"content":" 42","model":"m.gguf","stop":true,"stop_type":"limit","tokens_predicted":2,
      "tokens_evaluated":9,"completion_probabilities":[
      {"id":5,"token":" 4","bytes":[32,52],"logprob":-0.5,"top_logprobs":[{"id":6,"token":" 3","bytes":[32,51],"logprob":-1.2},
                                                                        {"id":5,"token":" 4","bytes":[32,52],"logprob":-0.5}]},
      {"id":7,"token":"2","bytes":[50],"logprob":-0.01,"top_logprobs":[{"id":7,"token":"2","bytes":[50],"logprob":-0.01}]}]})";
    bk::CompletionResult r;
    bk::Status st = bk::provider_complete(&c, q, &r);
    ASSERT_TRUE(st.ok()) << st.msg;
    EXPECT_EQ(fs.paths.back(), "/completion");
    json body = json::parse(fs.bodies.back());
    EXPECT_EQ(body["prompt"], q.prompt);
    EXPECT_EQ(body["n_predict"], 8);
    // TEACHER_PROMPT_PREFIX goes before the rendered prompt.
    bk::ProviderSettings sp = s;
    sp.prompt_prefix = " ";
    bk::ProviderClient cp;
    ASSERT_TRUE(bk::provider_client_init(&cp, sp).ok());
    bk::CompletionResult rp;
    ASSERT_TRUE(bk::provider_complete(&cp, q, &rp).ok());
    EXPECT_EQ(json::parse(fs.bodies.back())["prompt"], " " + q.prompt);
    EXPECT_EQ(body["n_probs"], 2);
    EXPECT_EQ(body["post_sampling_probs"], false);
    EXPECT_EQ(r.text, " 42");
    EXPECT_EQ(r.finish_reason, "length");
    EXPECT_EQ(r.model, "m.gguf");
    EXPECT_EQ(r.completion_tokens, 2);
    EXPECT_EQ(r.prompt_tokens, 9);
    ASSERT_EQ(r.tokens.size(), 2u);
    EXPECT_EQ(bk::token_bytes(r.tokens[0]), " 4");
    EXPECT_FLOAT_EQ(r.tokens[0].logprob, -0.5f);
    ASSERT_EQ(r.tokens[0].top.size(), 2u);
    EXPECT_EQ(bk::token_bytes(r.tokens[0].top[0]), " 4");  // sorted by logprob
    EXPECT_FLOAT_EQ(r.tokens[0].top[1].logprob, -1.2f);
  }
  {
    // Older builds: probabilities, no logprob or bytes; stopped_eos instead of stop_type.
    fs.canned_body = R"({"content":"ok","stopped_eos":true,"completion_probabilities":[
      {"content":"ok","probs":[{"tok_str":"ok","prob":0.5},{"tok_str":"no","prob":0.25}]}]})";
    bk::CompletionResult r;
    bk::Status st = bk::provider_complete(&c, q, &r);
    ASSERT_TRUE(st.ok()) << st.msg;
    EXPECT_EQ(r.finish_reason, "stop");
    ASSERT_EQ(r.tokens.size(), 1u);
    EXPECT_EQ(r.tokens[0].text, "ok");
    EXPECT_FLOAT_EQ(r.tokens[0].logprob, std::log(0.5f));
    ASSERT_EQ(r.tokens[0].top.size(), 2u);
    EXPECT_FLOAT_EQ(r.tokens[0].top[1].logprob, std::log(0.25f));
  }
}

// Found by fuzz/fuzz_providers: an empty prompt_logprobs with an empty
// prompt_token_ids list used to index the first token of an empty vector.
TEST(Providers, ScoredResponseWithNoTokensIsAnError) {
  std::vector<bk::TokenStep> toks;
  const std::string e =
      bk::provider_parse_scored(R"({"choices":[{"prompt_logprobs":[],"prompt_token_ids":[]}]})", "some text", &toks);
  EXPECT_NE(e.find("prompt_logprobs is empty"), std::string::npos) << e;
  EXPECT_TRUE(toks.empty());
}
