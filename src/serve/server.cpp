// The HTTP side of `bitkd serve` (cpp-httplib): routes, authentication,
// OpenAI response shapes, server-sent-event streaming and clean shutdown on
// SIGINT/SIGTERM.
#include <fcntl.h>
#include <httplib.h>
#include <omp.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "core/log.h"
#include "core/timing.h"
#include "core/version.h"
#include "model/generate.h"
#include "serve/api.h"
#include "serve/serve.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace bk {

using json = nlohmann::json;
using namespace serve_detail;

namespace {

struct ServerState {
  ServeModel model;
  ServeOptions opt;
  int ctx = 0;      // the model's context (max_seq_len)
  int threads = 1;  // OpenMP threads per request
  int64_t started = 0;
  uint64_t seed_base = 0;
  std::atomic<uint64_t> counter{0};
};

// One validated request, tokenized and ready to run.
struct Job {
  GenRequest req;
  std::vector<int32_t> prompt_ids;
  int max_tokens = 0;
  uint64_t seed = 0;
  std::string id;
  int64_t created = 0;
};

uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t next_random(ServerState& st) { return mix64(st.seed_base + st.counter.fetch_add(1)); }

std::string new_id(ServerState& st, const char* prefix) {
  char buf[64];
  snprintf(buf, sizeof buf, "%s%016llx%08llx", prefix, (unsigned long long)next_random(st),
           (unsigned long long)(next_random(st) & 0xffffffffull));
  return buf;
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// With a charset parameter the HTTP library does not compress the body: on a
// local inference server compression only costs time, and its brotli encoder
// was seen to stall on large logprob answers.
const char* const k_json_type = "application/json; charset=utf-8";

void send_json(httplib::Response& res, int status, const json& j) {
  res.status = status;
  res.set_content(dump(j), k_json_type);
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(error_json(e), k_json_type);
}

bool authorized(const ServerState& st, const httplib::Request& req) {
  if (st.opt.api_key.empty()) return true;
  const std::string got = req.get_header_value("Authorization");
  const std::string want = "Bearer " + st.opt.api_key;
  // Constant time in the key's content.
  unsigned diff = got.size() ^ want.size();
  for (size_t i = 0; i < want.size(); i++) diff |= (unsigned char)want[i] ^ (unsigned char)(i < got.size() ? got[i] : 0);
  return diff == 0;
}

ApiError auth_error() {
  ApiError e;
  e.status = 401;
  e.message = "missing or incorrect API key: send the header 'Authorization: Bearer <key>' with the key this server "
              "was started with (--api-key or BITKD_API_KEY)";
  e.code = "invalid_api_key";
  return e;
}

// Logprobs are finite in JSON (a -inf would dump as null).
double finite_lp(float lp) { return std::isfinite(lp) ? (double)lp : -9999.0; }

json bytes_json(const std::string& b) {
  json a = json::array();
  for (unsigned char c : b) a.push_back((int)c);
  return a;
}

// Renders, tokenizes and checks the context budget.
bool prepare(ServerState& st, const GenRequest& r, Job* job, ApiError* err) {
  const Tokenizer& tok = *st.model.tokenizer;
  std::string text;
  if (r.chat) {
    Status s = render_chat(st.opt.chat_template, r.messages, &text);
    if (!s.ok()) {
      err->status = 400;
      err->param = "messages";
      err->message = s.msg;
      return false;
    }
  } else {
    text = r.prompt;
  }
  Status s = tokenizer_encode(tok, text, st.opt.add_bos && tokenizer_bos_id(tok) >= 0, &job->prompt_ids);
  if (!s.ok()) {
    err->status = 400;
    err->param = r.chat ? "messages" : "prompt";
    err->message = "cannot tokenize the prompt: " + s.msg;
    return false;
  }
  if (job->prompt_ids.empty()) {
    err->status = 400;
    err->param = r.chat ? "messages" : "prompt";
    err->message = "the prompt is empty";
    return false;
  }
  const int p = (int)job->prompt_ids.size();
  if (r.max_tokens >= 0) {
    if ((long long)p + r.max_tokens > st.ctx) {
      err->status = 400;
      err->param = "max_tokens";
      err->code = "context_length_exceeded";
      err->message = "the context of this model holds " + std::to_string(st.ctx) + " tokens, but the request needs " +
                     std::to_string(p + (long long)r.max_tokens) + " (" + std::to_string(p) + " in the prompt + " +
                     std::to_string(r.max_tokens) + " for max_tokens); shorten the prompt or lower max_tokens";
      return false;
    }
    job->max_tokens = r.max_tokens;
  } else {
    if (p >= st.ctx) {
      err->status = 400;
      err->param = r.chat ? "messages" : "prompt";
      err->code = "context_length_exceeded";
      err->message = "the prompt has " + std::to_string(p) + " tokens, but the context of this model holds " +
                     std::to_string(st.ctx) + " (at least one more is needed to generate); shorten the prompt";
      return false;
    }
    job->max_tokens = std::min(st.opt.default_max_tokens, st.ctx - p);
  }
  job->req = r;
  job->seed = r.has_seed ? r.seed : next_random(st);
  job->id = new_id(st, r.chat ? "chatcmpl-" : "cmpl-");
  job->created = (int64_t)time(nullptr);
  return true;
}

// The logprob of every prompt token after the first given the ones before it,
// with the top-k alternatives: the teacher scoring a given text (echo).
struct PromptScores {
  std::vector<float> logprobs;                 // [prompt tokens]; [0] unused (no context)
  std::vector<std::vector<TokenLogprob>> top;  // [prompt tokens]
};

Status score_prompt(InferSession* s, const std::vector<int32_t>& ids, int top_k, PromptScores* out) {
  const int n = (int)ids.size(), V = infer_session_vocab(s);
  std::vector<float> logits((size_t)n * V);
  infer_session_reset(s);
  BK_TRY(infer_session_eval_all(s, ids.data(), n, logits.data()));
  out->logprobs.assign(n, 0.0f);
  out->top.assign(n, {});
  for (int i = 1; i < n; i++) {
    const float* row = logits.data() + (size_t)(i - 1) * V;
    out->logprobs[i] = token_logprob(row, V, ids[i]);
    if (top_k > 0) top_logprobs(row, V, top_k, &out->top[i]);
  }
  return ok_status();
}

// Generates for one job in a fresh session. after_token runs after each
// token is recorded (streaming sends there); returning true ends generation.
// With echo and logprobs, the prompt is scored first (into *ps).
Status run_job(ServerState& st, Job& job, TextTracker* tt, GenerateResult* gr,
               const std::function<bool()>& after_token, PromptScores* ps = nullptr) {
  omp_set_num_threads(st.threads);  // per thread: the pool's threads start with the default
  InferSession* s = nullptr;
  BK_TRY(infer_session_create(st.model.weights, (int)job.prompt_ids.size() + std::max(1, job.max_tokens), &s));
  std::unique_ptr<InferSession, void (*)(InferSession*)> guard(s, infer_session_destroy);
  if (ps) BK_TRY(score_prompt(s, job.prompt_ids, job.req.top_logprobs, ps));
  if (job.max_tokens == 0) {
    gr->prompt_tokens = (int)job.prompt_ids.size();
    gr->finish_reason = "length";
    return ok_status();
  }
  tt->stops = job.req.stop;
  GenerateOptions go;
  go.max_new_tokens = job.max_tokens;
  go.sampling.temperature = job.req.temperature;
  go.sampling.top_p = job.req.top_p;
  go.sampling.top_k = job.req.top_k;
  go.seed = job.seed;
  go.eos_id = tokenizer_eos_id(*st.model.tokenizer);
  go.top_logprobs = job.req.logprobs ? job.req.top_logprobs : 0;
  const Tokenizer* tok = st.model.tokenizer;
  go.on_token = [&](int32_t id) {
    bool stop = tt->add(tokenizer_token_bytes(*tok, id));
    if (after_token && after_token()) return true;
    return stop;
  };
  return generate(s, job.prompt_ids, go, gr);
}

// ---- response pieces ------------------------------------------------------

json chat_logprob_entries(const Tokenizer& tok, const GenerateResult& gr, size_t a, size_t b) {
  json content = json::array();
  for (size_t i = a; i < b; i++) {
    std::string bytes = tokenizer_token_bytes(tok, gr.ids[i]);
    json e;
    e["token"] = token_display(bytes);
    e["logprob"] = finite_lp(gr.logprobs[i]);
    e["bytes"] = bytes_json(bytes);
    json tops = json::array();
    if (i < gr.top.size())
      for (const TokenLogprob& t : gr.top[i]) {
        std::string tb = tokenizer_token_bytes(tok, t.id);
        json te;
        te["token"] = token_display(tb);
        te["logprob"] = finite_lp(t.logprob);
        te["bytes"] = bytes_json(tb);
        tops.push_back(te);
      }
    e["top_logprobs"] = tops;
    content.push_back(e);
  }
  json lp;
  lp["content"] = content;
  return lp;
}

json completion_logprobs(const Tokenizer& tok, const GenerateResult& gr, const TextTracker& tt, size_t a, size_t b) {
  json tokens = json::array(), lps = json::array(), tops = json::array(), offs = json::array();
  for (size_t i = a; i < b; i++) {
    tokens.push_back(token_display(tokenizer_token_bytes(tok, gr.ids[i])));
    lps.push_back(finite_lp(gr.logprobs[i]));
    json m = json::object();
    if (i < gr.top.size())
      for (const TokenLogprob& t : gr.top[i]) {
        std::string key = token_display(tokenizer_token_bytes(tok, t.id));
        if (!m.contains(key)) m[key] = finite_lp(t.logprob);
      }
    tops.push_back(m);
    offs.push_back(utf8_codepoints(tt.text, tt.tok_start[i]));
  }
  json lp;
  lp["tokens"] = tokens;
  lp["token_logprobs"] = lps;
  lp["top_logprobs"] = tops;
  lp["text_offset"] = offs;
  return lp;
}

json usage_json(const Job& job, const GenerateResult& gr) {
  json u;
  u["prompt_tokens"] = (int)job.prompt_ids.size();
  u["completion_tokens"] = (int)gr.ids.size();
  u["total_tokens"] = (int)(job.prompt_ids.size() + gr.ids.size());
  return u;
}

json envelope(const ServerState& st, const Job& job, const char* object) {
  json r;
  r["id"] = job.id;
  r["object"] = object;
  r["created"] = job.created;
  r["model"] = st.opt.model_name;
  r["system_fingerprint"] = std::string("bitkd-") + BITKD_VERSION;
  return r;
}

// Prepends the echoed prompt's tokens to completion logprobs: each token, its
// logprob (null for the first, which has no context), its top alternatives and
// its offset in the returned text (the prompt's tokens first).
void prepend_prompt_logprobs(const Tokenizer& tok, const Job& job, const PromptScores& ps, json* lp) {
  // Each prompt token as the text it covers (its byte span: the tokenizer's
  // dummy-prefix space and BOS cover none and are left out, though they are
  // context for what follows), so the echoed tokens spell the prompt exactly.
  std::vector<int32_t> ids;
  std::vector<TokenSpan> spans;
  const std::string& prompt = job.req.prompt;
  const size_t first = job.prompt_ids.size() > 0 && job.prompt_ids[0] == tokenizer_bos_id(tok) ? 1 : 0;
  if (!tokenizer_encode_with_spans(tok, prompt, &ids, &spans).ok() || ids.size() + first != job.prompt_ids.size())
    spans.assign(job.prompt_ids.size() - first, TokenSpan{0, 0});
  json tokens = json::array(), lps = json::array(), tops = json::array(), offs = json::array();
  for (size_t i = first; i < job.prompt_ids.size(); i++) {
    const TokenSpan& sp = spans[i - first];
    if (sp.end <= sp.begin) continue;
    tokens.push_back(token_display(prompt.substr(sp.begin, sp.end - sp.begin)));
    lps.push_back(i == 0 ? json(nullptr) : json(finite_lp(ps.logprobs[i])));
    json m = json::object();
    for (const TokenLogprob& t : ps.top[i]) {
      std::string key = token_display(tokenizer_token_bytes(tok, t.id));
      if (!m.contains(key)) m[key] = finite_lp(t.logprob);
    }
    tops.push_back(i == 0 ? json(nullptr) : m);
    offs.push_back(utf8_codepoints(prompt, (size_t)sp.begin));
  }
  const size_t shift = utf8_codepoints(prompt, prompt.size());
  for (size_t k = 0; k < (*lp)["tokens"].size(); k++) {
    tokens.push_back((*lp)["tokens"][k]);
    lps.push_back((*lp)["token_logprobs"][k]);
    tops.push_back((*lp)["top_logprobs"][k]);
    offs.push_back((*lp)["text_offset"][k].get<size_t>() + shift);
  }
  (*lp)["tokens"] = tokens;
  (*lp)["token_logprobs"] = lps;
  (*lp)["top_logprobs"] = tops;
  (*lp)["text_offset"] = offs;
}

json full_response(const ServerState& st, const Job& job, const GenerateResult& gr, const TextTracker& tt,
                   const PromptScores* ps = nullptr) {
  const Tokenizer& tok = *st.model.tokenizer;
  const std::string text = tt.text.substr(0, tt.final_len());
  const size_t ntok = tt.output_tokens();
  json choice;
  choice["index"] = 0;
  json r;
  if (job.req.chat) {
    r = envelope(st, job, "chat.completion");
    json msg;
    msg["role"] = "assistant";
    msg["content"] = text;
    choice["message"] = msg;
    choice["logprobs"] = job.req.logprobs ? chat_logprob_entries(tok, gr, 0, ntok) : json(nullptr);
  } else {
    r = envelope(st, job, "text_completion");
    choice["text"] = job.req.echo ? job.req.prompt + text : text;
    choice["logprobs"] = job.req.logprobs ? completion_logprobs(tok, gr, tt, 0, ntok) : json(nullptr);
    if (ps) prepend_prompt_logprobs(tok, job, *ps, &choice["logprobs"]);
  }
  choice["finish_reason"] = gr.finish_reason;
  r["choices"] = json::array({choice});
  r["usage"] = usage_json(job, gr);
  return r;
}

// One streaming chunk with text and the logprobs of tokens [a, b).
json stream_chunk(const ServerState& st, const Job& job, const GenerateResult& gr, const TextTracker& tt,
                  const std::string& text, size_t a, size_t b, const char* finish, bool role) {
  const Tokenizer& tok = *st.model.tokenizer;
  json choice;
  choice["index"] = 0;
  json r;
  if (job.req.chat) {
    r = envelope(st, job, "chat.completion.chunk");
    json delta = json::object();
    if (role) delta["role"] = "assistant";
    if (role || !text.empty() || b > a) delta["content"] = text;
    if (finish && !role && text.empty() && b == a) delta = json::object();
    choice["delta"] = delta;
    choice["logprobs"] = job.req.logprobs && b > a ? chat_logprob_entries(tok, gr, a, b) : json(nullptr);
  } else {
    r = envelope(st, job, "text_completion");
    choice["text"] = text;
    choice["logprobs"] = job.req.logprobs && b > a ? completion_logprobs(tok, gr, tt, a, b) : json(nullptr);
  }
  choice["finish_reason"] = finish ? json(finish) : json(nullptr);
  r["choices"] = json::array({choice});
  if (job.req.include_usage) r["usage"] = nullptr;
  return r;
}

void log_request(const httplib::Request& req, int status, int prompt, int completion, double secs) {
  if (completion >= 0)
    BK_LOG_INFO("%s %s %d prompt=%d completion=%d %.3fs (%.1f tokens/s)", req.method.c_str(), req.path.c_str(),
                status, prompt, completion, secs, secs > 0 ? completion / secs : 0.0);
  else
    BK_LOG_INFO("%s %s %d %.3fs", req.method.c_str(), req.path.c_str(), status, secs);
}

void handle_generate(ServerState& st, bool chat, const httplib::Request& req, httplib::Response& res) {
  const double t0 = now_seconds();
  if (!authorized(st, req)) {
    send_error(res, auth_error());
    log_request(req, 401, -1, -1, now_seconds() - t0);
    return;
  }
  GenRequest r;
  ApiError err;
  auto job = std::make_shared<Job>();
  if (!parse_request(req.body, chat, &r, &err) || !prepare(st, r, job.get(), &err)) {
    send_error(res, err);
    BK_LOG_INFO("%s %s %d: %s", req.method.c_str(), req.path.c_str(), err.status, err.message.c_str());
    return;
  }

  if (!r.stream) {
    TextTracker tt;
    GenerateResult gr;
    PromptScores ps;
    const bool score = job->req.echo && job->req.logprobs;
    Status s = run_job(st, *job, &tt, &gr, nullptr, score ? &ps : nullptr);
    if (!s.ok()) {
      ApiError e;
      e.status = 500;
      e.type = "server_error";
      e.message = "generation failed: " + s.msg;
      send_error(res, e);
      BK_LOG_ERROR("%s %s 500: %s", req.method.c_str(), req.path.c_str(), s.msg.c_str());
      return;
    }
    send_json(res, 200, full_response(st, *job, gr, tt, score ? &ps : nullptr));
    log_request(req, 200, (int)job->prompt_ids.size(), (int)gr.ids.size(), now_seconds() - t0);
    return;
  }

  // Streaming: generation runs inside the content provider, on this worker
  // thread, writing one SSE event per step whose text is safe to release.
  res.set_header("Cache-Control", "no-cache");
  ServerState* stp = &st;
  std::string method = req.method, path = req.path;
  res.set_chunked_content_provider(
      "text/event-stream", [stp, job, t0, method, path](size_t, httplib::DataSink& sink) {
        ServerState& st = *stp;
        auto send = [&](const std::string& payload) {
          std::string ev = "data: " + payload + "\n\n";
          return sink.write(ev.data(), ev.size());
        };
        bool client_ok = true;
        TextTracker tt;
        GenerateResult gr;
        size_t emitted = 0, reported = 0;
        // Tokens whose bytes all lie within the released text.
        auto complete_tokens = [&](size_t upto) {
          size_t n = reported, limit = tt.output_tokens();
          while (n < limit) {
            size_t end = n + 1 < tt.tok_start.size() ? tt.tok_start[n + 1] : tt.text.size();
            if (end > upto) break;
            n++;
          }
          return n;
        };
        auto flush = [&](bool final) {
          size_t upto = final ? tt.final_len() : tt.safe_len();
          size_t ntok = final ? tt.output_tokens() : complete_tokens(upto);
          if (upto <= emitted && ntok <= reported) return true;
          std::string piece = upto > emitted ? tt.text.substr(emitted, upto - emitted) : "";
          json chunk = stream_chunk(st, *job, gr, tt, piece, reported, ntok, nullptr, false);
          emitted = std::max(emitted, upto);
          reported = ntok;
          return send(dump(chunk));
        };
        if (job->req.chat) client_ok = send(dump(stream_chunk(st, *job, gr, tt, "", 0, 0, nullptr, true)));
        Status s;
        if (client_ok)
          s = run_job(st, *job, &tt, &gr, [&]() {
            if (!flush(false)) client_ok = false;
            return !client_ok;
          });
        if (client_ok) {
          if (!s.ok()) {
            ApiError e;
            e.status = 500;
            e.type = "server_error";
            e.message = "generation failed: " + s.msg;
            send(error_json(e));
            BK_LOG_ERROR("%s %s stream: %s", method.c_str(), path.c_str(), s.msg.c_str());
          } else if (flush(true)) {
            send(dump(stream_chunk(st, *job, gr, tt, "", 0, 0, gr.finish_reason.c_str(), false)));
            if (job->req.include_usage) {
              json u = envelope(st, *job, job->req.chat ? "chat.completion.chunk" : "text_completion");
              u["choices"] = json::array();
              u["usage"] = usage_json(*job, gr);
              send(dump(u));
            }
          }
          send("[DONE]");
        }
        sink.done();
        BK_LOG_INFO("%s %s 200 stream prompt=%zu completion=%zu %.3fs%s", method.c_str(), path.c_str(),
                    job->prompt_ids.size(), gr.ids.size(), now_seconds() - t0,
                    client_ok ? "" : " (client went away)");
        return true;
      });
}

json model_object(const ServerState& st) {
  json m;
  m["id"] = st.opt.model_name;
  m["object"] = "model";
  m["created"] = st.started;
  m["owned_by"] = "bitkd";
  return m;
}

// ---- signals: a handler writes to a pipe; a watcher thread stops the server.
int g_sig_pipe[2] = {-1, -1};
std::atomic<int> g_signal{0};

void on_signal(int sig) {
  g_signal.store(sig);
  if (g_sig_pipe[1] >= 0) {
    ssize_t w = write(g_sig_pipe[1], "s", 1);
    (void)w;
  }
}

}  // namespace

Status serve_run(const ServeModel& model, const ServeOptions& opt) {
  if (!model.weights || !model.tokenizer) return errorf("serve: no model or tokenizer");
  BK_TRY(template_check(opt.chat_template));
  if (opt.workers < 1 || opt.workers > 1024) return errorf("--workers is %d; use 1..1024", opt.workers);
  const ModelConfig& cfg = infer_weights_config(model.weights);
  if (tokenizer_vocab_size(*model.tokenizer) > cfg.vocab_size)
    return errorf("the tokenizer has %d tokens but the model's vocabulary is %d: they do not belong together",
                  tokenizer_vocab_size(*model.tokenizer), cfg.vocab_size);

  ServerState st;
  st.model = model;
  st.opt = opt;
  st.ctx = cfg.max_seq_len;
  // Default: split the cores among the workers, so concurrent requests do not
  // oversubscribe them (OpenMP teams spin-wait badly when they do).
  st.threads = opt.threads > 0 ? opt.threads : std::max(1, hardware_threads() / opt.workers);
  st.started = (int64_t)time(nullptr);
  st.seed_base = ((uint64_t)std::random_device{}() << 32) ^ std::random_device{}() ^ (uint64_t)now_seconds();

  httplib::Server svr;
  const int workers = opt.workers;
  svr.new_task_queue = [workers] { return new httplib::ThreadPool((size_t)workers); };
  svr.set_payload_max_length(opt.max_body_bytes);
  svr.set_keep_alive_timeout(2);
  svr.set_read_timeout(30);
  svr.set_write_timeout(30);

  svr.Get("/health", [&st](const httplib::Request&, httplib::Response& res) {
    json j;
    j["status"] = "ok";
    j["model"] = st.opt.model_name;
    send_json(res, 200, j);
  });
  svr.Get("/v1/models", [&st](const httplib::Request& req, httplib::Response& res) {
    if (!authorized(st, req)) return send_error(res, auth_error());
    json j;
    j["object"] = "list";
    j["data"] = json::array({model_object(st)});
    send_json(res, 200, j);
  });
  svr.Get(R"(/v1/models/(.+))", [&st](const httplib::Request& req, httplib::Response& res) {
    if (!authorized(st, req)) return send_error(res, auth_error());
    if (req.matches[1] != st.opt.model_name) {
      ApiError e;
      e.status = 404;
      e.param = "model";
      e.code = "model_not_found";
      e.message = "model '" + std::string(req.matches[1]) + "' does not exist; this server has '" +
                  st.opt.model_name + "'";
      return send_error(res, e);
    }
    send_json(res, 200, model_object(st));
  });
  svr.Post("/v1/chat/completions",
           [&st](const httplib::Request& req, httplib::Response& res) { handle_generate(st, true, req, res); });
  svr.Post("/v1/completions",
           [&st](const httplib::Request& req, httplib::Response& res) { handle_generate(st, false, req, res); });

  const size_t max_body = opt.max_body_bytes;
  httplib::Server::HandlerWithResponse on_error = [max_body](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    ApiError e;
    e.status = res.status;
    if (res.status == 404) {
      e.message = "no route for " + req.method + " " + req.path +
                  " (this server has POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health)";
      e.code = "not_found";
    } else if (res.status == 413) {
      e.message = "the request body exceeds the server's limit of " + std::to_string(max_body) +
                  " bytes (--max-body-bytes)";
      e.code = "request_too_large";
    } else {
      e.message = "HTTP error " + std::to_string(res.status);
      if (res.status >= 500) e.type = "server_error";
    }
    res.set_content(error_json(e), k_json_type);
    BK_LOG_INFO("%s %s %d", req.method.c_str(), req.path.c_str(), res.status);
    return httplib::Server::HandlerResponse::Handled;
  };
  svr.set_error_handler(on_error);
  svr.set_exception_handler([](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
    ApiError e;
    e.status = 500;
    e.type = "server_error";
    e.message = "internal error";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& ex) {
      e.message = std::string("internal error: ") + ex.what();
    } catch (...) {
    }
    send_error(res, e);
    BK_LOG_ERROR("%s %s 500: %s", req.method.c_str(), req.path.c_str(), e.message.c_str());
  });

  int port = opt.port;
  if (port == 0) {
    port = svr.bind_to_any_port(opt.host);
    if (port <= 0) return errorf("cannot bind %s on any port (is the address valid on this machine?)", opt.host.c_str());
  } else if (port < 0 || port > 65535 || !svr.bind_to_port(opt.host, port)) {
    return errorf("cannot bind %s:%d (port in use, not permitted, or not a local address); pick another --port or "
                  "--port 0 for any free one",
                  opt.host.c_str(), port);
  }

  // Signals: installed only now, so that a failed bind leaves them untouched.
  if (pipe(g_sig_pipe) != 0) return errorf("serve: pipe() failed: %s", strerror(errno));
  fcntl(g_sig_pipe[1], F_SETFL, O_NONBLOCK);
  g_signal.store(0);
  struct sigaction sa {}, old_int{}, old_term{}, old_pipe{};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  struct sigaction ign {};
  ign.sa_handler = SIG_IGN;
  sigemptyset(&ign.sa_mask);
  sigaction(SIGPIPE, &ign, &old_pipe);
  std::atomic<bool> listen_done{false};
  std::thread watcher([&] {
    char c;
    while (read(g_sig_pipe[0], &c, 1) < 0 && errno == EINTR) {
    }
    int sig = g_signal.load();
    if (!sig) return;
    BK_LOG_INFO("serve: %s received, stopping (in-flight requests finish first)", sig == SIGINT ? "SIGINT" : "SIGTERM");
    // stop() only acts once listening started; a signal that lands before waits for it.
    while (!listen_done.load()) {
      if (svr.is_running()) {
        svr.stop();
        break;
      }
      std::this_thread::yield();
    }
  });

  const InferBackend be = infer_weights_backend(model.weights);
  BK_LOG_INFO("serve: model '%s' (%s backend, %.1f MiB weights, context %d), %d workers x %d threads%s",
              opt.model_name.c_str(), be == INFER_PACKED ? "packed" : "float",
              infer_weights_bytes(model.weights) / 1048576.0, st.ctx, workers, st.threads,
              opt.api_key.empty() ? "" : ", API key required");
  printf("listening on http://%s:%d\n", opt.host.c_str(), port);
  fflush(stdout);

  bool ok = svr.listen_after_bind();
  listen_done.store(true);
  {
    ssize_t w = write(g_sig_pipe[1], "q", 1);  // wake the watcher if no signal came
    (void)w;
  }
  watcher.join();
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  sigaction(SIGPIPE, &old_pipe, nullptr);
  close(g_sig_pipe[0]);
  close(g_sig_pipe[1]);
  g_sig_pipe[0] = g_sig_pipe[1] = -1;
  int sig = g_signal.load();
  if (sig) {
    BK_LOG_INFO("serve: stopped");
    return ok_status();
  }
  if (!ok) return errorf("serve: the HTTP server stopped unexpectedly on %s:%d", opt.host.c_str(), port);
  return ok_status();
}

}  // namespace bk
