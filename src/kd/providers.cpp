#include "kd/providers.h"

#include <curl/curl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/log.h"
#include "core/rng.h"
#include "core/timing.h"
#include "tokenizer/chat_template.h"

namespace bk {

using json = nlohmann::json;

// ---------------------------------------------------------------- provider table

struct ProviderInfo {
  const char* name;
  const char* prefix;  // <PREFIX>_MODEL, <PREFIX>_BASE_URL, <PREFIX>_API_KEY
  ProviderApi api;     // native API (OpenAI-compatible ones may pick completions)
  bool local;          // key optional, model discoverable
  const char* no_logprobs;  // why KD is impossible, or nullptr
};

static const ProviderInfo k_providers[] = {
    {"openai", "OPENAI", API_CHAT, false, nullptr},
    {"deepseek", "DEEPSEEK", API_CHAT, false, nullptr},
    {"openrouter", "OPENROUTER", API_CHAT, false, nullptr},
    {"aimlapi", "AIMLAPI", API_CHAT, false, nullptr},
    {"vllm", "VLLM", API_CHAT, true, nullptr},
    {"llamacpp", "LLAMACPP", API_CHAT, true, nullptr},
    {"bitkd", "BITKD", API_CHAT, true, nullptr},
    {"custom", "CUSTOM", API_CHAT, true, nullptr},
    {"groq", "GROQ", API_CHAT, false, "Groq answers requests that ask for logprobs with HTTP 400 (not supported)"},
    {"anthropic", "ANTHROPIC", API_ANTHROPIC, false, "the Anthropic Messages API returns no token logprobs"},
    {"gemini", "GEMINI", API_GEMINI, false,
     "Gemini returns logprobs only on some models; set GEMINI_LOGPROBS=1 if yours does"},
};

bool provider_api_takes_raw_prompt(ProviderApi api) { return api == API_COMPLETIONS || api == API_LLAMACPP; }

static const ProviderInfo* find_provider(const std::string& name) {
  for (const ProviderInfo& p : k_providers)
    if (name == p.name) return &p;
  return nullptr;
}

const char* provider_api_name(ProviderApi api) {
  switch (api) {
    case API_CHAT: return "chat";
    case API_COMPLETIONS: return "completions";
    case API_ANTHROPIC: return "anthropic";
    case API_GEMINI: return "gemini";
    case API_LLAMACPP: return "native";
  }
  return "?";
}

static std::string lower(std::string s) {
  for (char& ch : s) ch = (char)tolower((unsigned char)ch);
  return s;
}

// A URL fit for logs: no user:password@ and no query string (either may hold a credential).
static std::string safe_url(const std::string& url) {
  std::string u = url;
  size_t q = u.find('?');
  if (q != std::string::npos) u = u.substr(0, q);
  size_t scheme = u.find("://");
  size_t host = scheme == std::string::npos ? 0 : scheme + 3;
  size_t at = u.find('@', host);
  size_t slash = u.find('/', host);
  if (at != std::string::npos && (slash == std::string::npos || at < slash)) u.erase(host, at + 1 - host);
  return u;
}

std::string provider_safe_url(const std::string& url) { return safe_url(url); }

std::string redact_secret(const std::string& text, const std::string& secret) {
  if (secret.empty() || text.empty()) return text;
  const size_t min_run = std::min<size_t>(6, secret.size());
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    size_t best = 0;
    for (size_t len = min_run; i + len <= text.size(); len++) {
      if (secret.find(text.data() + i, 0, len) == std::string::npos) break;
      best = len;
    }
    if (best > 0) {
      out += "****";
      i += best;
    } else {
      out += text[i++];
    }
  }
  return out;
}

std::string provider_describe(const ProviderSettings& s) {
  std::string d = s.provider + " " + (s.model.empty() ? std::string("(model from server)") : s.model) + " at " +
                  safe_url(s.base_url) + " [" + provider_api_name(s.api) + "]";
  return redact_secret(d, s.api_key);
}

Status provider_resolve(const Config& c, ProviderSettings* out) {
  ProviderSettings s;
  std::string name = lower(config_str(c, "TEACHER_PROVIDER", config_str(c, "PROVIDER", "bitkd")));
  const ProviderInfo* info = find_provider(name);
  if (!info) {
    // An unknown name with an explicit base URL is an OpenAI-compatible server.
    if (!config_has(c, "TEACHER_BASE_URL"))
      return errorf(
          "unknown TEACHER_PROVIDER '%s' (known: openai, deepseek, openrouter, aimlapi, vllm, llamacpp, bitkd, groq, "
          "anthropic, gemini; or set TEACHER_BASE_URL for any OpenAI-compatible server)",
          name.c_str());
    info = find_provider("custom");
  }
  s.provider = name;
  s.local = info->local;
  std::string prefix = info->prefix;
  s.model = config_str(c, "TEACHER_MODEL", config_str(c, prefix + "_MODEL"));
  s.base_url = config_str(c, "TEACHER_BASE_URL", config_str(c, prefix + "_BASE_URL"));
  s.api_key = config_str(c, "TEACHER_API_KEY", config_str(c, prefix + "_API_KEY"));
  while (!s.base_url.empty() && s.base_url.back() == '/') s.base_url.pop_back();
  if (s.base_url.empty())
    return errorf("no base URL for provider %s: set TEACHER_BASE_URL (or %s_BASE_URL)", name.c_str(), prefix.c_str());
  if (s.base_url.compare(0, 7, "http://") != 0 && s.base_url.compare(0, 8, "https://") != 0)
    return errorf("TEACHER_BASE_URL / %s_BASE_URL must start with http:// or https:// (got '%s')", prefix.c_str(),
                  redact_secret(safe_url(s.base_url), s.api_key).c_str());
  if (!s.local && s.api_key.empty())
    return errorf("no API key for provider %s: set TEACHER_API_KEY or %s_API_KEY (in .env or the environment)",
                  name.c_str(), prefix.c_str());
  if (!s.local && s.model.empty())
    return errorf("no model for provider %s: set TEACHER_MODEL or %s_MODEL", name.c_str(), prefix.c_str());

  s.api = info->api;
  std::string api = lower(config_str(c, "TEACHER_API", "chat"));
  if (info->api == API_CHAT) {
    if (api == "completions") s.api = API_COMPLETIONS;
    else if (api == "native" && name == "llamacpp") s.api = API_LLAMACPP;
    else if (api != "chat")
      return errorf("TEACHER_API=%s: expected chat or completions%s", api.c_str(),
                    name == "llamacpp" ? " or native (llama.cpp's /completion with n_probs)" : "");
  }
  if (info->no_logprobs) {
    s.logprobs_supported = false;
    s.logprobs_reason = info->no_logprobs;
  }
  if (s.api == API_GEMINI) {
    bool gl = false;
    BK_TRY(config_bool(c, "GEMINI_LOGPROBS", &gl));
    if (gl) s.logprobs_supported = true, s.logprobs_reason.clear();
  }
  s.prompt_prefix = template_unescape(config_str(c, "TEACHER_PROMPT_PREFIX"));
  if (!s.prompt_prefix.empty() && s.api != API_LLAMACPP)
    return errorf("TEACHER_PROMPT_PREFIX is for llama.cpp's native route only (TEACHER_PROVIDER=llamacpp "
                  "TEACHER_API=native); unset it for provider %s with TEACHER_API=%s",
                  name.c_str(), provider_api_name(s.api));
  // OpenAI's legacy Completions return at most 5 candidates per position.
  s.max_top_logprobs = (s.api == API_COMPLETIONS && name == "openai") ? 5 : 20;

  long long iv = 0;
  double dv = 0;
  BK_TRY(config_double(c, "TEACHER_TIMEOUT_S", &dv));
  if (dv <= 0) return errorf("TEACHER_TIMEOUT_S=%g must be > 0", dv);
  s.timeout_s = dv;
  BK_TRY(config_int(c, "TEACHER_MAX_RETRIES", &iv));
  if (iv < 0) return errorf("TEACHER_MAX_RETRIES=%lld must be >= 0", iv);
  s.max_retries = (int)iv;
  BK_TRY(config_int(c, "TEACHER_CONCURRENCY", &iv));
  if (iv < 1 || iv > 1024) return errorf("TEACHER_CONCURRENCY=%lld must be in 1..1024", iv);
  s.concurrency = (int)iv;
  BK_TRY(config_double(c, "TEACHER_RPM", &dv));
  if (dv < 0) return errorf("TEACHER_RPM=%g must be >= 0 (0: no cap)", dv);
  s.rpm = dv;
  BK_TRY(config_double(c, "TEACHER_BACKOFF_S", &dv));
  if (dv < 0) return errorf("TEACHER_BACKOFF_S=%g must be >= 0", dv);
  s.backoff_base_s = dv;
  *out = s;
  return ok_status();
}

Status provider_check_kd(const ProviderSettings& s, int top_logprobs) {
  if (!s.logprobs_supported)
    return errorf(
        "provider %s cannot produce KD traces: %s. Use a provider that returns logprobs (openai, deepseek, "
        "openrouter, aimlapi, vllm, llamacpp, bitkd) for `bitkd collect`; %s still works for `bitkd teacher`",
        s.provider.c_str(), s.logprobs_reason.c_str(), s.provider.c_str());
  if (s.api == API_ANTHROPIC)
    return errorf("provider %s: the Anthropic Messages API returns no token logprobs", s.provider.c_str());
  std::string m = lower(s.model);
  if (s.provider == "deepseek" && m.find("reasoner") != std::string::npos)
    return errorf("model %s returns no logprobs (DeepSeek's reasoner rejects them): use deepseek-chat",
                  s.model.c_str());
  if (s.provider == "openai" && (m.compare(0, 2, "o1") == 0 || m.compare(0, 2, "o3") == 0 || m.compare(0, 2, "o4") == 0))
    return errorf("model %s is a reasoning model and OpenAI gives no logprobs for those: use e.g. gpt-4o-mini",
                  s.model.c_str());
  if (top_logprobs < 1 || top_logprobs > s.max_top_logprobs)
    return errorf("TEACHER_TOP_LOGPROBS=%d: %s via %s API accepts 1..%d", top_logprobs, s.provider.c_str(),
                  provider_api_name(s.api), s.max_top_logprobs);
  return ok_status();
}

// ---------------------------------------------------------------- client

struct ProviderClientImpl {
  ProviderSettings s;
  ProviderHooks hooks;

  std::mutex pool_mu;
  std::vector<CURL*> pool;  // idle easy handles; each keeps its connection alive

  std::mutex slot_mu;
  std::condition_variable slot_cv;
  int in_flight = 0;

  // RPM cap as a token bucket in GCRA form: `tat` is the theoretical arrival
  // time of the next request; a request may start once now >= tat - tolerance.
  std::mutex rate_mu;
  double tat = -1e300;

  std::mutex rng_mu;
  Rng rng;

  std::mutex stats_mu;
  ProviderStats stats;

  ~ProviderClientImpl() {
    for (CURL* h : pool) curl_easy_cleanup(h);
  }

  double now() { return hooks.clock ? hooks.clock() : now_seconds(); }
  void sleep(double sec, const char* why) {
    if (sec <= 0) return;
    if (hooks.sleep) hooks.sleep(sec, why);
    else std::this_thread::sleep_for(std::chrono::duration<double>(sec));
  }
};

ProviderClient::ProviderClient() = default;
ProviderClient::~ProviderClient() = default;
ProviderClient::ProviderClient(ProviderClient&&) noexcept = default;
ProviderClient& ProviderClient::operator=(ProviderClient&&) noexcept = default;

static void curl_global() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

Status provider_client_init(ProviderClient* c, const ProviderSettings& s, const ProviderHooks* hooks) {
  curl_global();
  auto impl = std::make_unique<ProviderClientImpl>();
  impl->s = s;
  if (hooks) impl->hooks = *hooks;
  rng_seed(&impl->rng, (uint64_t)(now_seconds() * 1e9) ^ (uint64_t)(uintptr_t)impl.get());
  c->impl = std::move(impl);
  return ok_status();
}

const ProviderSettings& provider_client_settings(const ProviderClient& c) { return c.impl->s; }

ProviderStats provider_stats(const ProviderClient& c) {
  std::lock_guard<std::mutex> lk(c.impl->stats_mu);
  return c.impl->stats;
}

// Slot in the concurrency limit, held for one HTTP attempt (not during backoff).
struct SlotGuard {
  ProviderClientImpl* c;
  explicit SlotGuard(ProviderClientImpl* impl) : c(impl) {
    std::unique_lock<std::mutex> lk(c->slot_mu);
    c->slot_cv.wait(lk, [&] { return c->in_flight < c->s.concurrency; });
    c->in_flight++;
    std::lock_guard<std::mutex> sl(c->stats_mu);
    c->stats.max_in_flight = std::max<int64_t>(c->stats.max_in_flight, c->in_flight);
  }
  ~SlotGuard() {
    {
      std::lock_guard<std::mutex> lk(c->slot_mu);
      c->in_flight--;
    }
    c->slot_cv.notify_one();
  }
};

static void rate_limit(ProviderClientImpl* c) {
  if (c->s.rpm <= 0) return;
  double interval = 60.0 / c->s.rpm;
  double tolerance = std::max(0.0, c->s.burst - 1) * interval;
  double wait = 0;
  {
    std::lock_guard<std::mutex> lk(c->rate_mu);
    double t = c->now();
    double tat = std::max(c->tat, t);
    double allowed = tat - tolerance;
    wait = allowed > t ? allowed - t : 0;
    c->tat = tat + interval;  // reserve this request's place before sleeping
  }
  if (wait > 0) {
    {
      std::lock_guard<std::mutex> lk(c->stats_mu);
      c->stats.rate_limit_waits++;
      c->stats.rate_limit_wait_s += wait;
    }
    c->sleep(wait, "rate-limit");
  }
}

struct HttpAttempt {
  long status = 0;
  std::string body;
  double retry_after = -1;  // seconds, -1 when absent or not in seconds form
  CURLcode code = CURLE_OK;
  std::string curl_error;
  double seconds = 0;
};

static size_t on_body(char* p, size_t size, size_t n, void* ud) {
  static_cast<std::string*>(ud)->append(p, size * n);
  return size * n;
}

static size_t on_header(char* p, size_t size, size_t n, void* ud) {
  HttpAttempt* a = static_cast<HttpAttempt*>(ud);
  size_t len = size * n;
  std::string line(p, len);
  // A new status line (e.g. after "100 Continue") resets what we saw.
  if (line.compare(0, 5, "HTTP/") == 0) a->retry_after = -1;
  size_t colon = line.find(':');
  if (colon != std::string::npos && lower(line.substr(0, colon)) == "retry-after") {
    std::string v = line.substr(colon + 1);
    size_t a0 = v.find_first_not_of(" \t"), a1 = v.find_last_not_of(" \t\r\n");
    if (a0 != std::string::npos) {
      v = v.substr(a0, a1 - a0 + 1);
      char* end = nullptr;
      double sec = strtod(v.c_str(), &end);
      // Only the delta-seconds form; an HTTP-date falls back to our backoff.
      if (end && *end == 0 && std::isfinite(sec) && sec >= 0) a->retry_after = sec;
    }
  }
  return len;
}

static bool is_loopback(const std::string& url) {
  size_t scheme = url.find("://");
  size_t host = scheme == std::string::npos ? 0 : scheme + 3;
  for (const char* h : {"127.", "localhost", "[::1]"})
    if (url.compare(host, strlen(h), h) == 0) return true;
  return false;
}

static CURL* take_handle(ProviderClientImpl* c) {
  {
    std::lock_guard<std::mutex> lk(c->pool_mu);
    if (!c->pool.empty()) {
      CURL* h = c->pool.back();
      c->pool.pop_back();
      return h;
    }
  }
  return curl_easy_init();
}

static void give_handle(ProviderClientImpl* c, CURL* h) {
  std::lock_guard<std::mutex> lk(c->pool_mu);
  c->pool.push_back(h);
}

static void http_attempt(ProviderClientImpl* c, bool post, const std::string& url,
                         const std::vector<std::string>& headers, const std::string& body, HttpAttempt* a) {
  CURL* h = take_handle(c);
  if (!h) {
    a->code = CURLE_FAILED_INIT;
    a->curl_error = "curl_easy_init failed";
    return;
  }
  curl_easy_reset(h);  // keeps the connection cache
  char errbuf[CURL_ERROR_SIZE];
  errbuf[0] = 0;
  struct curl_slist* hl = nullptr;
  for (const std::string& line : headers) hl = curl_slist_append(hl, line.c_str());
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &a->body);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, a);
  long timeout_ms = (long)std::max(1.0, c->s.timeout_s * 1000);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, std::min(timeout_ms, 30000L));
  // gzip only, and only off-host: a loopback teacher (bitkd serve, vLLM) would
  // spend more time compressing its large logprob answers than sending them,
  // and brotli at its default quality is slower still.
  if (!is_loopback(url)) curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "gzip");
  curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
  if (post) {
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body.size());
  } else {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  }
  double t0 = now_seconds();
  a->code = curl_easy_perform(h);
  a->seconds = now_seconds() - t0;
  if (a->code == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &a->status);
  else a->curl_error = errbuf[0] ? errbuf : curl_easy_strerror(a->code);
  curl_slist_free_all(hl);
  if (a->code == CURLE_OK) give_handle(c, h);
  else curl_easy_cleanup(h);  // a broken connection is not reused
}

// The provider's own words from an error body: OpenAI/DeepSeek/Groq/OpenRouter
// {"error":{"message"}}, Anthropic {"type":"error","error":{...}}, Gemini
// {"error":{"code","message","status"}}, vLLM {"message"}, FastAPI {"detail"}.
static std::string error_message_from_body(const std::string& body) {
  json j = json::parse(body, nullptr, false);
  std::string msg;
  try {
    if (!j.is_discarded() && j.is_object()) {
      if (j.contains("error")) {
        const json& e = j["error"];
        if (e.is_string()) msg = e.get<std::string>();
        else if (e.is_object() && e.contains("message") && e["message"].is_string()) msg = e["message"].get<std::string>();
        else if (!e.is_null()) msg = e.dump();
      }
      if (msg.empty() && j.contains("message") && j["message"].is_string()) msg = j["message"].get<std::string>();
      if (msg.empty() && j.contains("detail")) msg = j["detail"].is_string() ? j["detail"].get<std::string>() : j["detail"].dump();
    }
  } catch (const std::exception&) {
    msg.clear();
  }
  if (msg.empty()) msg = body;
  for (char& ch : msg)
    if (ch == '\n' || ch == '\r' || ch == '\t') ch = ' ';
  if (msg.size() > 400) msg = msg.substr(0, 400) + "...";
  if (msg.empty()) msg = "(empty body)";
  return msg;
}

// ---------------------------------------------------------------- request bodies

static std::string build_body(const ProviderSettings& s, const CompletionRequest& r) {
  json b;
  switch (s.api) {
    case API_CHAT: {
      if (!s.model.empty()) b["model"] = s.model;
      json msgs = json::array();
      for (const ChatTurn& m : r.messages) msgs.push_back({{"role", m.role}, {"content", m.content}});
      b["messages"] = msgs;
      b["max_tokens"] = r.max_tokens;
      b["temperature"] = r.temperature;
      b["top_p"] = r.top_p;
      b["stream"] = false;
      if (r.logprobs) {
        b["logprobs"] = true;
        b["top_logprobs"] = r.top_logprobs;
      }
      if (r.seed >= 0) b["seed"] = r.seed;
      break;
    }
    case API_COMPLETIONS: {
      if (!s.model.empty()) b["model"] = s.model;
      std::string prompt = r.prompt;
      if (prompt.empty())
        for (const ChatTurn& m : r.messages) prompt += m.content;
      b["prompt"] = prompt;
      b["max_tokens"] = r.max_tokens;
      b["temperature"] = r.temperature;
      b["top_p"] = r.top_p;
      b["stream"] = false;
      if (r.logprobs) b["logprobs"] = r.top_logprobs;
      if (r.seed >= 0) b["seed"] = r.seed;
      break;
    }
    case API_ANTHROPIC: {
      b["model"] = s.model;
      b["max_tokens"] = r.max_tokens;
      json msgs = json::array();
      std::string system;
      for (const ChatTurn& m : r.messages) {
        if (m.role == "system") system += m.content;
        else msgs.push_back({{"role", m.role}, {"content", m.content}});
      }
      if (!system.empty()) b["system"] = system;
      b["messages"] = msgs;
      b["temperature"] = r.temperature;
      // Recent Claude models reject temperature and top_p together; send top_p only when it matters.
      if (r.top_p < 1.0) b["top_p"] = r.top_p;
      break;
    }
    case API_LLAMACPP: {
      // The raw prompt as rendered; greedy when temperature is 0. Probabilities
      // before sampling (post_sampling_probs false) are the model's own.
      std::string prompt = r.prompt;
      if (prompt.empty())
        for (const ChatTurn& m : r.messages) prompt += m.content;
      b["prompt"] = s.prompt_prefix + prompt;
      b["n_predict"] = r.max_tokens;
      b["temperature"] = r.temperature;
      b["top_p"] = r.top_p;
      b["stream"] = false;
      b["cache_prompt"] = true;
      if (r.logprobs) {
        b["n_probs"] = r.top_logprobs;
        b["post_sampling_probs"] = false;
      }
      if (r.seed >= 0) b["seed"] = r.seed;
      break;
    }
    case API_GEMINI: {
      json contents = json::array();
      std::string system;
      for (const ChatTurn& m : r.messages) {
        if (m.role == "system") {
          system += m.content;
          continue;
        }
        contents.push_back({{"role", m.role == "assistant" ? "model" : "user"},
                            {"parts", json::array({{{"text", m.content}}})}});
      }
      b["contents"] = contents;
      if (!system.empty()) b["systemInstruction"] = {{"parts", json::array({{{"text", system}}})}};
      json gc = {{"temperature", r.temperature}, {"topP", r.top_p}, {"maxOutputTokens", r.max_tokens},
                 {"candidateCount", 1}};
      if (r.logprobs) {
        gc["responseLogprobs"] = true;
        gc["logprobs"] = r.top_logprobs;
      }
      if (r.seed >= 0) gc["seed"] = r.seed;
      b["generationConfig"] = gc;
      break;
    }
  }
  return b.dump(-1, ' ', false, json::error_handler_t::replace);
}

static std::string endpoint(const ProviderSettings& s) {
  switch (s.api) {
    case API_CHAT: return s.base_url + "/chat/completions";
    case API_COMPLETIONS: return s.base_url + "/completions";
    case API_ANTHROPIC: return s.base_url + "/messages";
    case API_GEMINI: return s.base_url + "/models/" + s.model + ":generateContent";
    case API_LLAMACPP: {
      // The OpenAI-compatible routes live under /v1, the native one at the root.
      std::string root = s.base_url;
      if (root.size() >= 3 && root.compare(root.size() - 3, 3, "/v1") == 0) root.resize(root.size() - 3);
      return root + "/completion";
    }
  }
  return s.base_url;
}

static std::vector<std::string> request_headers(const ProviderSettings& s) {
  std::vector<std::string> h = {"Content-Type: application/json", "Accept: application/json",
                                "Expect:"};  // no 100-continue round trip
  if (s.api == API_ANTHROPIC) {
    h.push_back("anthropic-version: 2023-06-01");
    if (!s.api_key.empty()) h.push_back("x-api-key: " + s.api_key);
  } else if (s.api == API_GEMINI) {
    // Header, not ?key=: a URL ends up in logs and error messages.
    if (!s.api_key.empty()) h.push_back("x-goog-api-key: " + s.api_key);
  } else {
    if (!s.api_key.empty()) h.push_back("Authorization: Bearer " + s.api_key);
    if (s.provider == "openrouter") h.push_back("X-Title: bitkd");
  }
  return h;
}

// ---------------------------------------------------------------- response parsing

static float json_logprob(const json& v) {
  // JSON has no -inf; servers send null (or a large negative number) instead.
  if (v.is_number()) return v.get<float>();
  return -INFINITY;
}

static bool json_bytes(const json& v, std::string* out) {
  if (!v.is_array()) return false;
  out->clear();
  for (const json& b : v) {
    if (!b.is_number_integer()) return false;
    int x = b.get<int>();
    if (x < 0 || x > 255) return false;
    out->push_back((char)(uint8_t)x);
  }
  return true;
}

static std::string json_str(const json& o, const char* key) {
  if (!o.is_object() || !o.contains(key) || !o[key].is_string()) return "";
  return o[key].get<std::string>();
}

static void sort_candidates(std::vector<TokenCandidate>* v) {
  std::stable_sort(v->begin(), v->end(),
                   [](const TokenCandidate& a, const TokenCandidate& b) { return a.logprob > b.logprob; });
}

// Returns "" on success, else what was wrong with the body.
static std::string parse_chat(const json& j, CompletionResult* r) {
  if (!j.is_object() || !j.contains("choices") || !j["choices"].is_array() || j["choices"].empty())
    return "no choices[] in the response";
  const json& ch = j["choices"][0];
  if (!ch.is_object() || !ch.contains("message") || !ch["message"].is_object()) return "choices[0].message missing";
  r->text = json_str(ch["message"], "content");
  r->finish_reason = json_str(ch, "finish_reason");
  r->model = json_str(j, "model");
  if (ch.contains("logprobs") && ch["logprobs"].is_object() && ch["logprobs"].contains("content") &&
      ch["logprobs"]["content"].is_array()) {
    r->has_logprobs = true;
    for (const json& t : ch["logprobs"]["content"]) {
      if (!t.is_object()) return "logprobs.content[] holds a non-object";
      TokenStep st;
      st.text = json_str(t, "token");
      st.logprob = t.contains("logprob") ? json_logprob(t["logprob"]) : -INFINITY;
      if (t.contains("bytes")) st.has_bytes = json_bytes(t["bytes"], &st.bytes);
      if (t.contains("top_logprobs") && t["top_logprobs"].is_array()) {
        for (const json& cj : t["top_logprobs"]) {
          if (!cj.is_object()) continue;
          TokenCandidate cand;
          cand.text = json_str(cj, "token");
          cand.logprob = cj.contains("logprob") ? json_logprob(cj["logprob"]) : -INFINITY;
          if (cj.contains("bytes")) cand.has_bytes = json_bytes(cj["bytes"], &cand.bytes);
          st.top.push_back(std::move(cand));
        }
      }
      sort_candidates(&st.top);
      r->tokens.push_back(std::move(st));
    }
  }
  return "";
}

static std::string parse_completions(const json& j, CompletionResult* r) {
  if (!j.is_object() || !j.contains("choices") || !j["choices"].is_array() || j["choices"].empty())
    return "no choices[] in the response";
  const json& ch = j["choices"][0];
  if (!ch.is_object() || !ch.contains("text") || !ch["text"].is_string()) return "choices[0].text missing";
  r->text = ch["text"].get<std::string>();
  r->finish_reason = json_str(ch, "finish_reason");
  r->model = json_str(j, "model");
  if (ch.contains("logprobs") && ch["logprobs"].is_object()) {
    const json& lp = ch["logprobs"];
    if (lp.contains("tokens") && lp["tokens"].is_array()) {
      r->has_logprobs = true;
      const json& toks = lp["tokens"];
      for (size_t i = 0; i < toks.size(); i++) {
        TokenStep st;
        st.text = toks[i].is_string() ? toks[i].get<std::string>() : "";
        if (lp.contains("token_logprobs") && lp["token_logprobs"].is_array() && i < lp["token_logprobs"].size())
          st.logprob = json_logprob(lp["token_logprobs"][i]);
        else st.logprob = -INFINITY;
        if (lp.contains("top_logprobs") && lp["top_logprobs"].is_array() && i < lp["top_logprobs"].size() &&
            lp["top_logprobs"][i].is_object()) {
          for (auto it = lp["top_logprobs"][i].begin(); it != lp["top_logprobs"][i].end(); ++it) {
            TokenCandidate cand;
            cand.text = it.key();
            cand.logprob = json_logprob(it.value());
            st.top.push_back(std::move(cand));
          }
        }
        sort_candidates(&st.top);
        r->tokens.push_back(std::move(st));
      }
    }
  }
  return "";
}

static std::string parse_anthropic(const json& j, CompletionResult* r) {
  if (!j.is_object() || !j.contains("content") || !j["content"].is_array()) return "no content[] in the response";
  for (const json& b : j["content"])
    if (json_str(b, "type") == "text") r->text += json_str(b, "text");
  r->finish_reason = json_str(j, "stop_reason");
  r->model = json_str(j, "model");
  if (j.contains("usage") && j["usage"].is_object()) {
    const json& u = j["usage"];
    if (u.contains("output_tokens") && u["output_tokens"].is_number_integer()) {
      r->has_usage = true;
      r->completion_tokens = u["output_tokens"].get<int64_t>();
      if (u.contains("input_tokens") && u["input_tokens"].is_number_integer())
        r->prompt_tokens = u["input_tokens"].get<int64_t>();
    }
  }
  return "";
}

static std::string parse_gemini(const json& j, CompletionResult* r) {
  if (!j.is_object() || !j.contains("candidates") || !j["candidates"].is_array() || j["candidates"].empty())
    return "no candidates[] in the response";
  const json& cand = j["candidates"][0];
  if (cand.contains("content") && cand["content"].is_object() && cand["content"].contains("parts") &&
      cand["content"]["parts"].is_array())
    for (const json& p : cand["content"]["parts"]) r->text += json_str(p, "text");
  r->finish_reason = lower(json_str(cand, "finishReason"));
  r->model = json_str(j, "modelVersion");
  if (j.contains("usageMetadata") && j["usageMetadata"].is_object()) {
    const json& u = j["usageMetadata"];
    if (u.contains("candidatesTokenCount") && u["candidatesTokenCount"].is_number_integer()) {
      r->has_usage = true;
      r->completion_tokens = u["candidatesTokenCount"].get<int64_t>();
      if (u.contains("promptTokenCount") && u["promptTokenCount"].is_number_integer())
        r->prompt_tokens = u["promptTokenCount"].get<int64_t>();
    }
  }
  if (cand.contains("logprobsResult") && cand["logprobsResult"].is_object()) {
    const json& lr = cand["logprobsResult"];
    if (lr.contains("chosenCandidates") && lr["chosenCandidates"].is_array()) {
      r->has_logprobs = true;
      const json& chosen = lr["chosenCandidates"];
      for (size_t i = 0; i < chosen.size(); i++) {
        TokenStep st;
        st.text = json_str(chosen[i], "token");
        st.logprob = chosen[i].contains("logProbability") ? json_logprob(chosen[i]["logProbability"]) : -INFINITY;
        if (lr.contains("topCandidates") && lr["topCandidates"].is_array() && i < lr["topCandidates"].size()) {
          const json& tc = lr["topCandidates"][i];
          if (tc.contains("candidates") && tc["candidates"].is_array())
            for (const json& c : tc["candidates"]) {
              TokenCandidate tcnd;
              tcnd.text = json_str(c, "token");
              tcnd.logprob = c.contains("logProbability") ? json_logprob(c["logProbability"]) : -INFINITY;
              st.top.push_back(std::move(tcnd));
            }
        }
        sort_candidates(&st.top);
        r->tokens.push_back(std::move(st));
      }
    }
  }
  return "";
}

// llama.cpp's native /completion: content, stop_type (or the older
// stopped_* flags), and per generated token completion_probabilities, either
// {id, token, bytes, logprob, top_logprobs: [{id, token, bytes, logprob}]}
// (current builds) or {content, probs: [{tok_str, prob}]} (older ones).
static std::string parse_llamacpp(const json& j, CompletionResult* r) {
  if (!j.is_object() || !j.contains("content") || !j["content"].is_string()) return "no content in the response";
  r->text = j["content"].get<std::string>();
  const std::string stop = json_str(j, "stop_type");
  auto flag = [&](const char* k) { return j.contains(k) && j[k].is_boolean() && j[k].get<bool>(); };
  if (stop == "eos" || stop == "word" || flag("stopped_eos") || flag("stopped_word")) r->finish_reason = "stop";
  else if (stop == "limit" || flag("stopped_limit")) r->finish_reason = "length";
  else r->finish_reason = stop;
  r->model = json_str(j, "model");
  if (j.contains("tokens_predicted") && j["tokens_predicted"].is_number_integer()) {
    r->has_usage = true;
    r->completion_tokens = j["tokens_predicted"].get<int64_t>();
    if (j.contains("tokens_evaluated") && j["tokens_evaluated"].is_number_integer())
      r->prompt_tokens = j["tokens_evaluated"].get<int64_t>();
  }
  if (!j.contains("completion_probabilities") || !j["completion_probabilities"].is_array()) return "";
  r->has_logprobs = true;
  auto prob_to_logprob = [](const json& p) {
    return p.is_number() && p.get<double>() > 0 ? (float)std::log(p.get<double>()) : -INFINITY;
  };
  for (const json& t : j["completion_probabilities"]) {
    if (!t.is_object()) return "completion_probabilities[] holds a non-object";
    TokenStep st;
    st.text = t.contains("token") ? json_str(t, "token") : json_str(t, "content");
    if (t.contains("bytes")) st.has_bytes = json_bytes(t["bytes"], &st.bytes);
    const json* cands = t.contains("top_logprobs") && t["top_logprobs"].is_array() ? &t["top_logprobs"]
                        : t.contains("probs") && t["probs"].is_array()             ? &t["probs"]
                                                                                   : nullptr;
    st.logprob = t.contains("logprob") ? json_logprob(t["logprob"]) : -INFINITY;
    if (cands)
      for (const json& cj : *cands) {
        if (!cj.is_object()) continue;
        TokenCandidate c;
        c.text = cj.contains("token") ? json_str(cj, "token") : json_str(cj, "tok_str");
        c.logprob = cj.contains("logprob") ? json_logprob(cj["logprob"]) : prob_to_logprob(cj.contains("prob") ? cj["prob"] : json());
        if (cj.contains("bytes")) c.has_bytes = json_bytes(cj["bytes"], &c.bytes);
        // Older builds give no logprob of the sampled token itself: take it from the candidates.
        if (!t.contains("logprob") && token_bytes(c) == token_bytes(st)) st.logprob = std::max(st.logprob, c.logprob);
        st.top.push_back(std::move(c));
      }
    sort_candidates(&st.top);
    r->tokens.push_back(std::move(st));
  }
  return "";
}

static void parse_openai_usage(const json& j, CompletionResult* r) {
  if (!j.contains("usage") || !j["usage"].is_object()) return;
  const json& u = j["usage"];
  if (u.contains("completion_tokens") && u["completion_tokens"].is_number_integer()) {
    r->has_usage = true;
    r->completion_tokens = u["completion_tokens"].get<int64_t>();
    if (u.contains("prompt_tokens") && u["prompt_tokens"].is_number_integer())
      r->prompt_tokens = u["prompt_tokens"].get<int64_t>();
  }
}

std::string provider_parse_response(ProviderApi api, const std::string& body, CompletionResult* r) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) return "the body is not valid JSON";
  try {
    switch (api) {
      case API_CHAT: {
        std::string e = parse_chat(j, r);
        if (e.empty()) parse_openai_usage(j, r);
        return e;
      }
      case API_COMPLETIONS: {
        std::string e = parse_completions(j, r);
        if (e.empty()) parse_openai_usage(j, r);
        return e;
      }
      case API_ANTHROPIC: return parse_anthropic(j, r);
      case API_GEMINI: return parse_gemini(j, r);
      case API_LLAMACPP: return parse_llamacpp(j, r);
    }
  } catch (const std::exception& e) {
    return std::string("unexpected JSON shape: ") + e.what();
  }
  return "unknown API";
}

// ---------------------------------------------------------------- retry loop

static double backoff_delay(ProviderClientImpl* c, int retry_no) {
  double d = c->s.backoff_base_s * std::pow(2.0, retry_no);
  d = std::min(d, c->s.backoff_max_s);
  double u;
  {
    std::lock_guard<std::mutex> lk(c->rng_mu);
    u = rng_uniform_f64(&c->rng);
  }
  // "Equal jitter": half fixed, half random, so threads that failed together spread out.
  return d * (0.5 + 0.5 * u);
}

static Status run_with_retries(ProviderClientImpl* c, bool post, const std::string& url, const std::string& body,
                               const char* what, std::string* ok_body, CompletionResult* res,
                               const std::function<std::string(const std::string&)>& validate) {
  const ProviderSettings& s = c->s;
  std::vector<std::string> headers = request_headers(s);
  double t_begin = now_seconds();
  std::string last_err;
  for (int attempt = 0;; attempt++) {
    HttpAttempt a;
    {
      SlotGuard slot(c);
      rate_limit(c);
      {
        std::lock_guard<std::mutex> lk(c->stats_mu);
        c->stats.requests++;
      }
      http_attempt(c, post, url, headers, body, &a);
    }
    res->attempts = attempt + 1;
    res->http_status = (int)a.status;
    bool retryable = false;
    std::string kind;
    if (a.code != CURLE_OK) {
      retryable = true;
      kind = a.code == CURLE_OPERATION_TIMEDOUT ? "timeout" : "connection";
      char tbuf[64];
      snprintf(tbuf, sizeof tbuf, "%g", s.timeout_s);
      last_err = kind == "timeout" ? std::string("no complete answer within TEACHER_TIMEOUT_S=") + tbuf + " s"
                                   : std::string("connection error: ") + a.curl_error;
      std::lock_guard<std::mutex> lk(c->stats_mu);
      if (kind == "timeout") c->stats.timeouts++;
      else c->stats.connection_errors++;
    } else if (a.status >= 200 && a.status < 300) {
      std::string bad = validate(a.body);
      if (bad.empty()) {
        *ok_body = std::move(a.body);
        res->latency_s = a.seconds;
        res->total_s = now_seconds() - t_begin;
        res->error_kind.clear();
        std::lock_guard<std::mutex> lk(c->stats_mu);
        c->stats.ok++;
        return ok_status();
      }
      retryable = true;
      kind = "malformed";
      last_err = "malformed answer (HTTP " + std::to_string(a.status) + "): " + bad;
      std::lock_guard<std::mutex> lk(c->stats_mu);
      c->stats.malformed++;
    } else {
      std::string msg = error_message_from_body(a.body);
      last_err = "HTTP " + std::to_string(a.status) + ": " + msg;
      if (a.status == 429 || a.status == 408 || a.status >= 500) {
        retryable = true;
        kind = a.status == 429 ? "http_429" : a.status == 408 ? "timeout" : "http_5xx";
        std::lock_guard<std::mutex> lk(c->stats_mu);
        if (a.status == 429) c->stats.http_429++;
        else if (a.status == 408) c->stats.timeouts++;
        else c->stats.http_5xx++;
      } else {
        kind = "http_" + std::to_string(a.status);
      }
    }
    res->error_kind = kind;
    if (!retryable || attempt >= s.max_retries) {
      res->total_s = now_seconds() - t_begin;
      {
        std::lock_guard<std::mutex> lk(c->stats_mu);
        c->stats.failed++;
      }
      std::string hint;
      if (a.status == 401 || a.status == 403) hint = " (check TEACHER_API_KEY / the provider's *_API_KEY)";
      else if (a.status == 404) hint = " (check TEACHER_MODEL and TEACHER_BASE_URL)";
      std::string msg = retryable ? "gave up after " + std::to_string(attempt + 1) + " attempts; last: " + last_err
                                  : last_err + hint;
      msg = std::string(what) + " " + safe_url(url) + " (" + s.provider + "): " + msg;
      return Status{redact_secret(msg, s.api_key)};
    }
    double delay = backoff_delay(c, attempt);
    const char* why = "backoff";
    if (a.retry_after >= 0) {
      double ra = std::min(a.retry_after, s.retry_after_max_s);
      if (ra >= delay) delay = ra, why = "retry-after";
    }
    {
      std::lock_guard<std::mutex> lk(c->stats_mu);
      c->stats.retries++;
    }
    BK_LOG_WARN("teacher %s: %s (attempt %d/%d), retrying in %.1f s", s.provider.c_str(),
                redact_secret(last_err, s.api_key).c_str(), attempt + 1, s.max_retries + 1, delay);
    c->sleep(delay, why);
  }
}

Status provider_complete(ProviderClient* client, const CompletionRequest& req, CompletionResult* out) {
  *out = CompletionResult();
  ProviderClientImpl* c = client->impl.get();
  if (!c) return errorf("provider client not initialised");
  const ProviderSettings& s = c->s;
  if (req.logprobs) {
    Status st = provider_check_kd(s, req.top_logprobs);
    if (!st.ok()) {
      out->error_kind = "config";
      return st;
    }
  }
  std::string body = build_body(s, req);
  std::string url = endpoint(s);
  std::string ok_body;
  CompletionResult parsed;
  auto validate = [&](const std::string& b) {
    parsed = CompletionResult();
    return provider_parse_response(s.api, b, &parsed);
  };
  Status st = run_with_retries(c, true, url, body, "POST", &ok_body, out, validate);
  if (!st.ok()) return st;
  parsed.http_status = out->http_status;
  parsed.attempts = out->attempts;
  parsed.latency_s = out->latency_s;
  parsed.total_s = out->total_s;
  *out = std::move(parsed);
  if (req.logprobs && !out->has_logprobs) {
    out->error_kind = "no_logprobs";
    return errorf("%s (%s) answered without logprobs although they were requested (a routed provider may not "
                  "support them; pick another model or route)",
                  s.provider.c_str(), redact_secret(safe_url(url), s.api_key).c_str());
  }
  return ok_status();
}

// ---------------------------------------------------------------- scoring

Status provider_check_score(const ProviderSettings& s, int top_logprobs) {
  BK_TRY(provider_check_kd(s, top_logprobs));
  if (s.api == API_GEMINI)
    return errorf("provider %s cannot score a given text (the Gemini API returns logprobs only for what it "
                  "generates): trace sources reference and on_policy need a server with legacy Completions, echo "
                  "and logprobs (bitkd serve, vLLM, llama.cpp)",
                  s.provider.c_str());
  if (!s.local && s.provider != "custom")
    return errorf("provider %s cannot score a given text (its API returns logprobs only for generated tokens, and "
                  "legacy Completions with echo is gone): trace sources reference and on_policy need a server that "
                  "scores its prompt (bitkd serve, vLLM, llama.cpp); %s still gives teacher samples",
                  s.provider.c_str(), s.provider.c_str());
  return ok_status();
}

namespace {

// Byte offset of code point k in text (OpenAI's text_offset counts code points).
size_t byte_of_codepoint(const std::string& text, size_t k) {
  size_t i = 0, cp = 0;
  while (i < text.size() && cp < k) {
    i++;
    while (i < text.size() && ((unsigned char)text[i] & 0xC0) == 0x80) i++;
    cp++;
  }
  return i;
}

// The whole scored text's tokens from the OpenAI echo shape (logprobs.tokens,
// token_logprobs, top_logprobs, text_offset) or vLLM's prompt_logprobs
// ([null, {id: {logprob, rank, decoded_token}}, ...]); byte_offset set from
// text_offset, or by spelling the tokens out.
std::string parse_scored(const json& j, const std::string& full, std::vector<TokenStep>* toks) {
  if (!j.is_object() || !j.contains("choices") || !j["choices"].is_array() || j["choices"].empty())
    return "no choices[] in the response";
  const json& ch = j["choices"][0];
  if (ch.contains("logprobs") && ch["logprobs"].is_object()) {
    CompletionResult r;
    std::string e = parse_completions(j, &r);
    if (!e.empty()) return e;
    const json& lp = ch["logprobs"];
    const bool offsets = lp.contains("text_offset") && lp["text_offset"].is_array();
    size_t at = 0;
    for (size_t i = 0; i < r.tokens.size(); i++) {
      TokenStep& st = r.tokens[i];
      if (offsets && i < lp["text_offset"].size() && lp["text_offset"][i].is_number())
        at = byte_of_codepoint(full, lp["text_offset"][i].get<size_t>());
      st.byte_offset = (int64_t)at;
      at += token_bytes(st).size();
    }
    *toks = std::move(r.tokens);
    return "";
  }
  if (!ch.contains("prompt_logprobs") || !ch["prompt_logprobs"].is_array())
    return "no logprobs for the echoed prompt (the server must support echo with logprobs, or prompt_logprobs)";
  // vLLM: per position a dict {token_id: {logprob, rank, decoded_token}} holding
  // the top candidates and the prompt's own token, named by prompt_token_ids.
  const json& pl = ch["prompt_logprobs"];
  const json* ids = ch.contains("prompt_token_ids") && ch["prompt_token_ids"].is_array() ? &ch["prompt_token_ids"]
                    : j.contains("prompt_token_ids") && j["prompt_token_ids"].is_array() ? &j["prompt_token_ids"]
                                                                                           : nullptr;
  if (!ids || ids->size() != pl.size()) return "prompt_logprobs without prompt_token_ids: the scored tokens are unknown";
  if (pl.empty()) return "prompt_logprobs is empty: no token of the scored text";
  for (size_t i = 0; i < pl.size(); i++) {
    TokenStep st;
    const std::string own = (*ids)[i].dump();
    if (pl[i].is_object()) {
      for (auto it = pl[i].begin(); it != pl[i].end(); ++it) {
        if (!it.value().is_object()) continue;
        TokenCandidate c;
        c.text = json_str(it.value(), "decoded_token");
        c.logprob = it.value().contains("logprob") ? json_logprob(it.value()["logprob"]) : -INFINITY;
        if (it.key() == own) st.text = c.text, st.logprob = c.logprob;
        st.top.push_back(std::move(c));
      }
      sort_candidates(&st.top);
    }
    toks->push_back(std::move(st));
  }
  // The first token has no entry (no context), so its text is unknown: the
  // others spell the end of the text, which places them.
  size_t rest = 0;
  for (size_t i = 1; i < toks->size(); i++) rest += (*toks)[i].text.size();
  if (rest > full.size()) return "prompt_logprobs tokens spell more than the scored text";
  size_t at = full.size() - rest;
  (*toks)[0].byte_offset = 0;
  for (size_t i = 1; i < toks->size(); i++) (*toks)[i].byte_offset = (int64_t)at, at += (*toks)[i].text.size();
  return "";
}

}  // namespace

std::string provider_parse_scored(const std::string& body, const std::string& full, std::vector<TokenStep>* toks) {
  toks->clear();
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) return "the body is not valid JSON";
  try {
    return parse_scored(j, full, toks);
  } catch (const std::exception& e) {
    return std::string("unexpected JSON shape: ") + e.what();
  }
}

Status provider_score(ProviderClient* client, const ScoreRequest& req, CompletionResult* out) {
  *out = CompletionResult();
  ProviderClientImpl* c = client->impl.get();
  if (!c) return errorf("provider client not initialised");
  const ProviderSettings& s = c->s;
  Status st = provider_check_score(s, req.top_logprobs);
  if (!st.ok()) {
    out->error_kind = "config";
    return st;
  }
  const std::string full = req.prompt + req.continuation;
  json b;
  if (!s.model.empty()) b["model"] = s.model;
  b["prompt"] = full;
  b["max_tokens"] = 0;
  b["echo"] = true;
  b["logprobs"] = req.top_logprobs;
  b["temperature"] = 0;
  if (s.provider == "vllm") b["prompt_logprobs"] = req.top_logprobs;
  const std::string url = s.base_url + "/completions";
  std::vector<TokenStep> toks;
  auto validate = [&](const std::string& body) { return provider_parse_scored(body, full, &toks); };
  std::string ok_body;
  st = run_with_retries(c, true, url, b.dump(-1, ' ', false, json::error_handler_t::replace), "POST", &ok_body, out,
                        validate);
  if (!st.ok()) return st;
  // Keep the continuation's tokens: those that start at or after the boundary.
  const int64_t boundary = (int64_t)req.prompt.size();
  for (TokenStep& t : toks) {
    if (t.byte_offset < boundary) {
      out->prompt_tokens++;
      continue;
    }
    t.byte_offset -= boundary;
    out->tokens.push_back(std::move(t));
  }
  out->text = req.continuation;
  out->finish_reason = "stop";
  out->has_logprobs = true;
  out->completion_tokens = (int64_t)out->tokens.size();
  out->model = s.model;
  return ok_status();
}

Status provider_list_models(ProviderClient* client, std::vector<std::string>* ids) {
  ProviderClientImpl* c = client->impl.get();
  if (!c) return errorf("provider client not initialised");
  ids->clear();
  std::string body;
  CompletionResult res;
  std::vector<std::string> found;
  auto validate = [&](const std::string& b) -> std::string {
    found.clear();
    json j = json::parse(b, nullptr, false);
    if (j.is_discarded()) return "the body is not valid JSON";
    try {
      const json* list = nullptr;
      if (j.is_object() && j.contains("data") && j["data"].is_array()) list = &j["data"];
      else if (j.is_object() && j.contains("models") && j["models"].is_array()) list = &j["models"];
      if (!list) return "no data[] in the /models answer";
      for (const json& m : *list) {
        std::string id = json_str(m, "id");
        if (id.empty()) id = json_str(m, "name");
        if (!id.empty()) found.push_back(id);
      }
    } catch (const std::exception& e) {
      return std::string("unexpected JSON shape: ") + e.what();
    }
    return "";
  };
  BK_TRY(run_with_retries(c, false, c->s.base_url + "/models", "", "GET", &body, &res, validate));
  *ids = found;
  return ok_status();
}

Status provider_discover_model(ProviderClient* client) {
  ProviderClientImpl* c = client->impl.get();
  if (!c) return errorf("provider client not initialised");
  if (!c->s.model.empty()) return ok_status();
  std::vector<std::string> ids;
  BK_TRY(provider_list_models(client, &ids));
  if (ids.empty())
    return errorf("%s lists no models at %s/models: set TEACHER_MODEL", c->s.provider.c_str(),
                  safe_url(c->s.base_url).c_str());
  c->s.model = ids[0];
  return ok_status();
}

}  // namespace bk
