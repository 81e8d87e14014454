#pragma once
// Teacher providers (docs/providers.md). One libcurl client speaks:
//   - OpenAI Chat Completions and legacy Completions, with logprobs and
//     top_logprobs (openai, deepseek, openrouter, aimlapi, vllm, llamacpp,
//     bitkd serve, groq, or any OpenAI-compatible base URL: "custom");
//   - Anthropic Messages and Gemini generateContent (text + usage; Gemini
//     logprobs only when GEMINI_LOGPROBS=1), for the baseline.
// Responses become plain structs. The client is shared by worker threads: it
// caps requests in flight and requests per minute for all of them, and retries
// 429 / 5xx / connection errors / timeouts / malformed bodies with exponential
// backoff and jitter, honouring Retry-After. 400/401/403 (any other 4xx) fail
// at once with the provider's own message and the HTTP status.
//
// The API key is sent only in a request header. It never appears in a log
// line, an error message or a report: every message built from a server
// answer or a curl error goes through redact_secret().
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "io/config.h"

namespace bk {

enum ProviderApi {
  API_CHAT = 0,         // POST {base}/chat/completions
  API_COMPLETIONS = 1,  // POST {base}/completions (legacy)
  API_ANTHROPIC = 2,    // POST {base}/messages
  API_GEMINI = 3,       // POST {base}/models/{model}:generateContent
  API_LLAMACPP = 4,     // POST {base without /v1}/completion: llama.cpp's native route (n_probs)
};
const char* provider_api_name(ProviderApi api);  // "chat", "completions", "anthropic", "gemini", "native"
// The API sends bitkd's rendered template as a raw prompt (the teacher sees
// exactly that text), not chat messages the server templates itself.
bool provider_api_takes_raw_prompt(ProviderApi api);

// Everything a client needs, resolved once from the configuration.
struct ProviderSettings {
  std::string provider;  // "openai", "deepseek", ..., "bitkd", "custom"
  std::string model;     // may be empty for local servers (see provider_discover_model)
  std::string base_url;  // without trailing '/'
  std::string api_key;   // secret: header only
  ProviderApi api = API_CHAT;
  bool local = false;    // vllm, llamacpp, bitkd, custom: no key required
  // KD needs per-token logprobs; providers that cannot give them say why.
  bool logprobs_supported = true;
  std::string logprobs_reason;
  int max_top_logprobs = 20;
  // API_LLAMACPP: text before every raw prompt (TEACHER_PROMPT_PREFIX; see config).
  std::string prompt_prefix;
  // Transport policy.
  double timeout_s = 120;      // per attempt
  int max_retries = 5;         // retries after the first attempt
  int concurrency = 4;         // requests in flight, all threads together
  double rpm = 0;              // requests per minute, 0 = no cap
  double burst = 1;            // requests allowed back to back before the RPM spacing applies
  double backoff_base_s = 0.5;  // first retry waits about this long, doubling each time
  double backoff_max_s = 30;
  double retry_after_max_s = 300;  // longest Retry-After honoured
};

// Provider, model, base URL and key from the configuration (docs/providers.md):
// provider = TEACHER_PROVIDER, else PROVIDER, else "bitkd" (the embedded local
// teacher behind `bitkd serve`); model = TEACHER_MODEL else <P>_MODEL; base
// URL = TEACHER_BASE_URL else <P>_BASE_URL; key = TEACHER_API_KEY else
// <P>_API_KEY; API = TEACHER_API (chat | completions) for OpenAI-compatible
// providers, and also native for llamacpp. Transport knobs from TEACHER_TIMEOUT_S, TEACHER_MAX_RETRIES,
// TEACHER_CONCURRENCY, TEACHER_RPM. A hosted provider without a key or model
// is an error naming the variables to set.
Status provider_resolve(const Config& c, ProviderSettings* out);
// Fails at once (before any request) when these settings cannot produce KD
// traces with `top_logprobs` candidates per step, naming the reason.
Status provider_check_kd(const ProviderSettings& s, int top_logprobs);
// One line for logs and reports: "openai gpt-4o-mini at https://...", never the key.
std::string provider_describe(const ProviderSettings& s);
// A URL fit for logs and reports: no user:password@ and no query string.
std::string provider_safe_url(const std::string& url);
// Replaces the secret, and any run of >= 6 characters copied from it, with "****".
std::string redact_secret(const std::string& text, const std::string& secret);

struct ChatTurn {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

struct CompletionRequest {
  std::vector<ChatTurn> messages;  // chat, anthropic, gemini
  std::string prompt;                 // legacy completions, llama.cpp native
  double temperature = 0.0;
  double top_p = 1.0;
  int max_tokens = 256;
  bool logprobs = false;  // ask for per-token logprobs
  int top_logprobs = 0;   // candidates per step (<= max_top_logprobs)
  int64_t seed = -1;      // sent when >= 0 (OpenAI-compatible, Gemini)
};

struct TokenCandidate {
  std::string text;   // as the server spells the token
  std::string bytes;  // raw UTF-8 bytes when the server gave them
  bool has_bytes = false;
  float logprob = 0;  // -inf when the server sent null
};

// One generated token and its top candidates (sorted by logprob, descending).
struct TokenStep {
  std::string text;
  std::string bytes;
  bool has_bytes = false;
  float logprob = 0;
  std::vector<TokenCandidate> top;
  int64_t byte_offset = -1;  // scoring: where the token starts in the scored continuation (bytes)
};
// The bytes a token adds to the response: `bytes` when given, else `text`.
inline const std::string& token_bytes(const TokenStep& t) { return t.has_bytes ? t.bytes : t.text; }
inline const std::string& token_bytes(const TokenCandidate& t) { return t.has_bytes ? t.bytes : t.text; }

struct CompletionResult {
  std::string text;
  std::string finish_reason;  // "stop", "length", ... as the provider says
  std::string model;          // as the provider reports it ("" if not)
  bool has_usage = false;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  bool has_logprobs = false;
  std::vector<TokenStep> tokens;
  int http_status = 0;    // of the last attempt (0: no HTTP answer)
  int attempts = 0;       // 1 + retries
  double latency_s = 0;   // the successful attempt, request to full body
  double total_s = 0;     // all attempts and waits
  // On failure, a short category for statistics: "http_400", "http_401",
  // "http_429", "http_5xx", "timeout", "connection", "malformed",
  // "no_logprobs", "config".
  std::string error_kind;
};

// Counters shared by all threads of one client (statistics, tests).
struct ProviderStats {
  int64_t requests = 0;  // HTTP attempts sent
  int64_t ok = 0;        // calls that succeeded
  int64_t failed = 0;    // calls that failed after retries or fast
  int64_t retries = 0;
  int64_t http_429 = 0, http_5xx = 0, timeouts = 0, connection_errors = 0, malformed = 0;
  int64_t rate_limit_waits = 0;  // attempts the RPM cap delayed
  double rate_limit_wait_s = 0;
  int64_t max_in_flight = 0;     // most attempts in flight at once
};

// Test hooks: a clock and a sleep, so backoff and the RPM cap can be checked by
// counting instead of timing. `why` is "backoff", "retry-after" or "rate-limit".
struct ProviderHooks {
  std::function<double()> clock;
  std::function<void(double seconds, const char* why)> sleep;
};

struct ProviderClientImpl;
// RAII: owns curl handles (pooled, keep-alive) and the shared limits.
struct ProviderClient {
  std::unique_ptr<ProviderClientImpl> impl;
  ProviderClient();
  ~ProviderClient();
  ProviderClient(ProviderClient&&) noexcept;
  ProviderClient& operator=(ProviderClient&&) noexcept;
};

Status provider_client_init(ProviderClient* c, const ProviderSettings& s, const ProviderHooks* hooks = nullptr);
const ProviderSettings& provider_client_settings(const ProviderClient& c);
// One completion, with retries. Thread-safe. On error `out` still carries
// attempts, http_status and error_kind.
Status provider_complete(ProviderClient* c, const CompletionRequest& req, CompletionResult* out);
// Scoring a given text: the teacher's logprob and top candidates at every
// token of `continuation` following `prompt`, as if it had generated it. Sent
// as one legacy Completions request (prompt + continuation, echo, logprobs,
// max_tokens 0) to any OpenAI-compatible server that scores its prompt
// (bitkd serve, vLLM, llama.cpp's server); answers in the OpenAI echo shape
// or vLLM's prompt_logprobs shape are read. The result holds the
// continuation's tokens (byte_offset relative to it, a token that straddles
// the boundary dropped), text = the continuation, finish_reason "stop".
// Providers whose API cannot score a given text are refused before any
// request, naming the reason.
struct ScoreRequest {
  std::string prompt;        // the rendered prompt, as the teacher should see it
  std::string continuation;  // the text to score (a reference answer, a student's sample)
  int top_logprobs = 20;
};
Status provider_check_score(const ProviderSettings& s, int top_logprobs);
Status provider_score(ProviderClient* c, const ScoreRequest& req, CompletionResult* out);
// The response parsers behind provider_complete and provider_score (fuzzing,
// tests): "" when the body parsed into *r / *toks, else what is wrong with it.
std::string provider_parse_response(ProviderApi api, const std::string& body, CompletionResult* r);
// `full` is the scored text (prompt + continuation) the tokens are placed in.
std::string provider_parse_scored(const std::string& body, const std::string& full, std::vector<TokenStep>* toks);

// GET {base}/models: the served model ids (OpenAI-compatible servers).
Status provider_list_models(ProviderClient* c, std::vector<std::string>* ids);
// For local servers with no model configured: the first id /models lists.
Status provider_discover_model(ProviderClient* c);
ProviderStats provider_stats(const ProviderClient& c);

}  // namespace bk
