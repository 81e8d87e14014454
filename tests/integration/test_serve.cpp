// The real `bitkd serve` binary on 127.0.0.1 (--port 0) over a tiny
// checkpoint and tokenizer made with `bitkd tokenizer train` and `bitkd
// pretrain`, exercised with an HTTP client: OpenAI response shapes, logprobs,
// determinism, seeds, stop strings, streaming, concurrency, bad requests,
// authentication and clean shutdown on signals.
#include <fcntl.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "integration/serve_harness.h"
#include "testutil/testutil.h"

using json = nlohmann::json;
using namespace serve_harness;

namespace {

struct Reply {
  int status = 0;
  std::string body, content_type;
  json j;
};

Reply post(int port, const std::string& path, const std::string& body, const std::string& key = "") {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(300, 0);
  httplib::Headers h;
  if (!key.empty()) h.emplace("Authorization", "Bearer " + key);
  auto res = c.Post(path.c_str(), h, body, "application/json");
  Reply r;
  if (!res) return r;
  r.status = res->status;
  r.body = res->body;
  r.content_type = res->get_header_value("Content-Type");
  if (r.content_type.find("json") != std::string::npos) r.j = json::parse(r.body, nullptr, false);
  return r;
}

Reply get(int port, const std::string& path, const std::string& key = "") {
  httplib::Client c("127.0.0.1", port);
  httplib::Headers h;
  if (!key.empty()) h.emplace("Authorization", "Bearer " + key);
  auto res = c.Get(path.c_str(), h);
  Reply r;
  if (!res) return r;
  r.status = res->status;
  r.body = res->body;
  r.j = json::parse(r.body, nullptr, false);
  return r;
}

// Server-sent events -> JSON payloads; *done is set by "data: [DONE]".
std::vector<json> parse_sse(const std::string& body, bool* done) {
  std::vector<json> out;
  *done = false;
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("data: ", 0) != 0) continue;
    std::string payload = line.substr(6);
    if (payload == "[DONE]") {
      *done = true;
      continue;
    }
    out.push_back(json::parse(payload));
  }
  return out;
}

void expect_error_object(const Reply& r, int status, const char* what) {
  EXPECT_EQ(r.status, status) << what << ": " << r.body;
  ASSERT_TRUE(r.j.is_object()) << what << ": " << r.body;
  ASSERT_TRUE(r.j.contains("error")) << what;
  const json& e = r.j["error"];
  EXPECT_TRUE(e["message"].is_string() && !e["message"].get<std::string>().empty()) << what;
  EXPECT_TRUE(e["type"].is_string()) << what;
  EXPECT_TRUE(e.contains("param")) << what;
  EXPECT_TRUE(e.contains("code")) << what;
}

std::vector<int> bytes_of(const std::string& s) {
  std::vector<int> b;
  for (unsigned char c : s) b.push_back(c);
  return b;
}

json chat_body(const std::string& prompt, int max_tokens, double temperature, int top_logprobs = -1) {
  json b = {{"model", "tiny"},
            {"messages", json::array({{{"role", "user"}, {"content", prompt}}})},
            {"max_tokens", max_tokens},
            {"temperature", temperature}};
  if (top_logprobs >= 0) {
    b["logprobs"] = true;
    b["top_logprobs"] = top_logprobs;
  }
  return b;
}

}  // namespace

TEST(Serve, OpenAiApiEndToEnd) {
  TinyModel m;
  ASSERT_NO_FATAL_FAILURE(make_tiny_model("serve_api", &m));
  Server s;
  ASSERT_NO_FATAL_FAILURE(start_server(m, {"--workers", "4", "--max-body-bytes", "4096", "--model-name", "tiny"}, {}, &s));
  const int port = s.port;

  // health and models
  Reply h = get(port, "/health");
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(h.j["status"], "ok");
  Reply models = get(port, "/v1/models");
  ASSERT_EQ(models.status, 200) << models.body;
  EXPECT_EQ(models.j["object"], "list");
  ASSERT_EQ(models.j["data"].size(), 1u);
  EXPECT_EQ(models.j["data"][0]["id"], "tiny");
  EXPECT_EQ(models.j["data"][0]["object"], "model");

  // chat completion with logprobs
  Reply c = post(port, "/v1/chat/completions", chat_body("list 3 gamma", 12, 0.0, 3).dump());
  ASSERT_EQ(c.status, 200) << c.body;
  const json& cj = c.j;
  EXPECT_EQ(cj["object"], "chat.completion");
  EXPECT_EQ(cj["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  EXPECT_TRUE(cj["created"].is_number_integer());
  EXPECT_EQ(cj["model"], "tiny");
  ASSERT_EQ(cj["choices"].size(), 1u);
  const json& ch = cj["choices"][0];
  EXPECT_EQ(ch["index"], 0);
  EXPECT_EQ(ch["message"]["role"], "assistant");
  ASSERT_TRUE(ch["message"]["content"].is_string());
  const std::string content = ch["message"]["content"];
  std::string fr = ch["finish_reason"];
  EXPECT_TRUE(fr == "stop" || fr == "length") << fr;
  const json& u = cj["usage"];
  EXPECT_GT(u["prompt_tokens"].get<int>(), 3);
  EXPECT_EQ(u["total_tokens"].get<int>(), u["prompt_tokens"].get<int>() + u["completion_tokens"].get<int>());
  if (fr == "length") {
    EXPECT_EQ(u["completion_tokens"].get<int>(), 12);
  }
  const json& lc = ch["logprobs"]["content"];
  ASSERT_TRUE(lc.is_array());
  EXPECT_EQ((int)lc.size(), u["completion_tokens"].get<int>());
  std::vector<int> all_bytes;
  for (const json& e : lc) {
    ASSERT_TRUE(e["token"].is_string());
    ASSERT_TRUE(e["bytes"].is_array());
    EXPECT_LE(e["logprob"].get<double>(), 0.0);
    ASSERT_EQ(e["top_logprobs"].size(), 3u);
    double prev = 0.0;
    for (const json& t : e["top_logprobs"]) {
      EXPECT_LE(t["logprob"].get<double>(), prev + 1e-9);
      prev = t["logprob"].get<double>();
      EXPECT_TRUE(t["token"].is_string());
      EXPECT_TRUE(t["bytes"].is_array());
    }
    // Greedy: the chosen token is the most likely one.
    EXPECT_EQ(e["token"], e["top_logprobs"][0]["token"]);
    EXPECT_DOUBLE_EQ(e["logprob"].get<double>(), e["top_logprobs"][0]["logprob"].get<double>());
    for (const json& b : e["bytes"]) all_bytes.push_back(b.get<int>());
  }
  EXPECT_EQ(all_bytes, bytes_of(content)) << "token bytes concatenate to the content";

  // greedy determinism
  Reply c2 = post(port, "/v1/chat/completions", chat_body("list 3 gamma", 12, 0.0, 3).dump());
  ASSERT_EQ(c2.status, 200);
  EXPECT_EQ(c2.j["choices"][0]["message"]["content"], content);
  EXPECT_EQ(c2.j["choices"][0]["logprobs"], ch["logprobs"]);

  // completions with logprobs
  json cb = {{"model", "tiny"}, {"prompt", "<|user|>\nlist 5 red\n\n<|assistant|>\n"}, {"max_tokens", 16},
             {"temperature", 0}, {"logprobs", 2}};
  Reply t = post(port, "/v1/completions", cb.dump());
  ASSERT_EQ(t.status, 200) << t.body;
  EXPECT_EQ(t.j["object"], "text_completion");
  EXPECT_EQ(t.j["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  const json& tc = t.j["choices"][0];
  ASSERT_TRUE(tc["text"].is_string());
  const std::string ctext = tc["text"];
  const json& tl = tc["logprobs"];
  size_t nt = tl["tokens"].size();
  EXPECT_EQ(nt, (size_t)t.j["usage"]["completion_tokens"].get<int>());
  EXPECT_EQ(tl["token_logprobs"].size(), nt);
  EXPECT_EQ(tl["top_logprobs"].size(), nt);
  ASSERT_EQ(tl["text_offset"].size(), nt);
  if (nt) {
    EXPECT_EQ(tl["text_offset"][0], 0);
  }
  for (size_t i = 0; i < nt; i++) {
    EXPECT_TRUE(tl["top_logprobs"][i].is_object());
    EXPECT_LE(tl["top_logprobs"][i].size(), 2u);
    EXPECT_GE(tl["top_logprobs"][i].size(), 1u);
    if (i) {
      EXPECT_GE(tl["text_offset"][i].get<int>(), tl["text_offset"][i - 1].get<int>());
    }
  }

  // seeded sampling: same seed, same text; some other seed differs
  json sb = chat_body("list 7 blue", 24, 1.5);
  sb["seed"] = 123;
  Reply s1 = post(port, "/v1/chat/completions", sb.dump());
  Reply s2 = post(port, "/v1/chat/completions", sb.dump());
  ASSERT_EQ(s1.status, 200);
  ASSERT_EQ(s2.status, 200);
  EXPECT_EQ(s1.j["choices"][0]["message"]["content"], s2.j["choices"][0]["message"]["content"]);
  bool differs = false;
  for (int seed = 124; seed < 132 && !differs; seed++) {
    sb["seed"] = seed;
    Reply s3 = post(port, "/v1/chat/completions", sb.dump());
    ASSERT_EQ(s3.status, 200);
    differs = s3.j["choices"][0]["message"]["content"] != s1.j["choices"][0]["message"]["content"];
  }
  EXPECT_TRUE(differs) << "eight other seeds all reproduced seed 123's sample";

  // stop strings: cut the greedy completion where a chosen substring starts
  json lb = cb;
  lb["max_tokens"] = 40;
  lb.erase("logprobs");
  Reply full = post(port, "/v1/completions", lb.dump());
  ASSERT_EQ(full.status, 200);
  std::string ftext = full.j["choices"][0]["text"];
  std::string stop;
  size_t cut = std::string::npos;
  for (size_t k = 2; k + 2 <= ftext.size() && cut == std::string::npos; k++) {
    std::string cand = ftext.substr(k, 2);
    if ((unsigned char)cand[0] < 0x80 && (unsigned char)cand[1] < 0x80) cut = ftext.find(cand), stop = cand;
  }
  ASSERT_NE(cut, std::string::npos) << "greedy text too short for a stop test: " << ftext;
  lb["stop"] = json::array({stop, "\x01never"});
  Reply st = post(port, "/v1/completions", lb.dump());
  ASSERT_EQ(st.status, 200);
  EXPECT_EQ(st.j["choices"][0]["text"], ftext.substr(0, cut)) << "stop=" << json(stop).dump();
  EXPECT_EQ(st.j["choices"][0]["finish_reason"], "stop");

  // streaming chat: chunks concatenate to the non-streamed content
  json stb = chat_body("list 3 gamma", 12, 0.0, 3);
  stb["stream"] = true;
  stb["stream_options"] = {{"include_usage", true}};
  Reply sr = post(port, "/v1/chat/completions", stb.dump());
  ASSERT_EQ(sr.status, 200);
  EXPECT_NE(sr.content_type.find("text/event-stream"), std::string::npos) << sr.content_type;
  bool done = false;
  std::vector<json> chunks = parse_sse(sr.body, &done);
  EXPECT_TRUE(done);
  ASSERT_GE(chunks.size(), 3u);
  EXPECT_EQ(chunks[0]["choices"][0]["delta"]["role"], "assistant");
  std::string streamed;
  size_t streamed_tokens = 0;
  std::string finish;
  for (const json& k : chunks) {
    EXPECT_EQ(k["object"], "chat.completion.chunk");
    EXPECT_EQ(k["id"], chunks[0]["id"]);
    if (k["choices"].empty()) {  // the usage chunk
      EXPECT_EQ(k["usage"]["completion_tokens"], u["completion_tokens"]);
      continue;
    }
    const json& c0 = k["choices"][0];
    if (c0["delta"].contains("content")) streamed += c0["delta"]["content"].get<std::string>();
    if (c0["logprobs"].is_object()) streamed_tokens += c0["logprobs"]["content"].size();
    if (!c0["finish_reason"].is_null()) finish = c0["finish_reason"];
  }
  EXPECT_EQ(streamed, content);
  EXPECT_EQ(streamed_tokens, lc.size());
  EXPECT_EQ(finish, fr);

  // streaming completion with the stop string
  json scb = lb;
  scb["stream"] = true;
  Reply scr = post(port, "/v1/completions", scb.dump());
  ASSERT_EQ(scr.status, 200);
  std::vector<json> cchunks = parse_sse(scr.body, &done);
  EXPECT_TRUE(done);
  std::string ctext_stream;
  for (const json& k : cchunks) {
    EXPECT_EQ(k["object"], "text_completion");
    ctext_stream += k["choices"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(ctext_stream, ftext.substr(0, cut));
  EXPECT_EQ(cchunks.back()["choices"][0]["finish_reason"], "stop");

  // 8 parallel requests (4 workers): each equals its sequential answer
  const char* prompts[2] = {"list 1 alpha", "list 9 omega"};
  std::string expect[2];
  for (int i = 0; i < 2; i++) {
    Reply r = post(port, "/v1/chat/completions", chat_body(prompts[i], 10, 0.0).dump());
    ASSERT_EQ(r.status, 200);
    expect[i] = r.j["choices"][0]["message"]["content"];
  }
  std::vector<Reply> par(8);
  std::vector<std::thread> th;
  for (int i = 0; i < 8; i++)
    th.emplace_back([&, i] { par[i] = post(port, "/v1/chat/completions", chat_body(prompts[i % 2], 10, 0.0).dump()); });
  for (auto& x : th) x.join();
  for (int i = 0; i < 8; i++) {
    ASSERT_EQ(par[i].status, 200) << par[i].body;
    EXPECT_EQ(par[i].j["choices"][0]["message"]["content"], expect[i % 2]) << "request " << i;
  }

  // bad requests: 4xx with an OpenAI error object, and the server keeps answering
  struct Bad {
    const char* path;
    std::string body;
    int status;
    const char* what;
  };
  std::string big(6000, 'x');
  std::vector<Bad> bad = {
      {"/v1/chat/completions", "{\"messages\": [", 400, "malformed JSON"},
      {"/v1/chat/completions", R"({"messages":[{"role":"user","content":"x"}],"max_tokens":"ten"})", 400, "max_tokens string"},
      {"/v1/chat/completions", R"({"messages":{"role":"user","content":"x"}})", 400, "messages not an array"},
      {"/v1/chat/completions", R"({"messages":[{"role":"user","content":"x"}],"temperature":-1})", 400, "temperature < 0"},
      {"/v1/chat/completions", R"({"messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":21})", 400,
       "top_logprobs > 20"},
      {"/v1/completions", R"({"prompt":"x","max_tokens":1000})", 400, "beyond the context"},
      {"/v1/completions", "{\"prompt\": \"" + big + "\"}", 413, "body over the limit"},
      {"/v1/nothing", "{}", 404, "unknown route"},
  };
  for (const Bad& b : bad) {
    Reply r = post(port, b.path, b.body);
    expect_error_object(r, b.status, b.what);
    if (std::string(b.what) == "beyond the context") {
      std::string msg = r.j["error"]["message"];
      EXPECT_NE(msg.find("64"), std::string::npos) << msg;    // the context
      EXPECT_NE(msg.find("1000"), std::string::npos) << msg;  // max_tokens
      EXPECT_EQ(r.j["error"]["code"], "context_length_exceeded");
    }
    EXPECT_EQ(get(port, "/health").status, 200) << "after " << b.what;
  }
  // still generating after all that
  Reply again = post(port, "/v1/chat/completions", chat_body("list 3 gamma", 12, 0.0, 3).dump());
  ASSERT_EQ(again.status, 200);
  EXPECT_EQ(again.j["choices"][0]["message"]["content"], content);

  EXPECT_EQ(stop_server(&s, SIGTERM), 0) << read_file(s.log_path);
}

// Scoring a given text (teacher scoring for KD on references and on-policy
// traces): echo + logprobs with max_tokens 0 returns every prompt token, its
// logprob under the model and its top alternatives, with offsets that place
// the tokens in the text.
TEST(Serve, EchoScoresTheGivenText) {
  TinyModel m;
  ASSERT_NO_FATAL_FAILURE(make_tiny_model("serve_echo", &m));
  Server s;
  ASSERT_NO_FATAL_FAILURE(start_server(m, {"--model-name", "tiny"}, {}, &s));
  const std::string text = "<|user|>\nlist 3 gamma\n\n<|assistant|>\n{\"items\": [\"gamma\"], \"n\": 3}";
  json b = {{"model", "tiny"}, {"prompt", text}, {"echo", true}, {"logprobs", 3}, {"max_tokens", 0}};
  Reply r = post(s.port, "/v1/completions", b.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const json& ch = r.j["choices"][0];
  EXPECT_EQ(ch["text"], text);
  EXPECT_EQ(r.j["usage"]["completion_tokens"], 0);
  const json& lp = ch["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), lp["token_logprobs"].size());
  ASSERT_EQ(lp["tokens"].size(), lp["text_offset"].size());
  ASSERT_EQ(lp["tokens"].size(), lp["top_logprobs"].size());
  std::string spelled;
  for (size_t i = 0; i < lp["tokens"].size(); i++) {
    EXPECT_EQ(lp["text_offset"][i].get<size_t>(), spelled.size()) << i;  // ASCII: code points are bytes
    spelled += lp["tokens"][i].get<std::string>();
    // After a BOS every token has context: a logprob, and a best alternative at least as likely.
    ASSERT_TRUE(lp["token_logprobs"][i].is_number()) << i;
    const double own = lp["token_logprobs"][i].get<double>();
    EXPECT_LE(own, 0.0);
    ASSERT_TRUE(lp["top_logprobs"][i].is_object());
    EXPECT_EQ(lp["top_logprobs"][i].size(), 3u);
    double best = -1e30;
    for (auto it = lp["top_logprobs"][i].begin(); it != lp["top_logprobs"][i].end(); ++it)
      best = std::max(best, it.value().get<double>());
    EXPECT_GE(best + 1e-6, own) << i;
  }
  EXPECT_EQ(spelled, text);
  // Without max_tokens 0, generation continues after the scored prompt; with
  // streaming, echo is refused.
  b["max_tokens"] = 4;
  Reply g = post(s.port, "/v1/completions", b.dump());
  ASSERT_EQ(g.status, 200) << g.body;
  EXPECT_EQ(g.j["choices"][0]["text"].get<std::string>().rfind(text, 0), 0u);
  b["stream"] = true;
  Reply bad = post(s.port, "/v1/completions", b.dump());
  EXPECT_EQ(bad.status, 400) << bad.body;
}

// A ternary student exported as TQ2_0 (rows of 256, F32 embedding) is served
// straight from the file's blocks (no float model) and answers exactly as its
// checkpoint, logprobs included.
TEST(Serve, TernaryGgufServedFromItsBlocks) {
  TinyModel tm;
  make_tiny_model("serve_tq2_gguf", &tm);
  if (HasFatalFailure()) return;
  const std::string common = " --env-file " + q(tm.dir + "/none.env") + " --artifacts " + q(tm.dir + "/art") +
                             " --threads 1 --log-level WARNING";
  std::string out;
  int rc = bk_test::run_command(bk_test::bitkd_exe() + " pretrain --data " + q(tm.dir + "/corpus.jsonl") +
                                    " --tokenizer " + q(tm.tokenizer) +
                                    " --dim 256 --layers 1 --heads 4 --head-dim 64 --ffn 512 --weight-quant ternary"
                                    " --act-bits 8 --seq 64 --batch 4 --steps 4 --lr 3e-3 --warmup 0"
                                    " --checkpoint-interval 0 --out " +
                                    q(tm.dir + "/student") + common + " > /dev/null",
                                &out);
  ASSERT_EQ(rc, 0) << out;
  TinyModel student = tm, gguf = tm;
  student.checkpoint = tm.dir + "/student/mini_bitnet_step_4.safetensors";
  gguf.checkpoint = tm.dir + "/student.gguf";
  rc = bk_test::run_command(bk_test::bitkd_exe() + " export --model " + q(student.checkpoint) + " --tokenizer " +
                                q(tm.tokenizer) + " --type tq2_0 --embed-type f32 --out " + q(gguf.checkpoint) + common,
                            &out);
  ASSERT_EQ(rc, 0) << out;
  const std::string body = R"({"prompt": "list 3 red", "max_tokens": 6, "temperature": 0, "logprobs": 3})";
  json answers[2];
  std::string logs[2];
  const TinyModel* models[2] = {&student, &gguf};
  for (int i = 0; i < 2; i++) {
    Server srv;
    start_server(*models[i], {"--backend", "packed"}, {}, &srv);
    if (HasFatalFailure()) return;
    Reply r = post(srv.port, "/v1/completions", body);
    EXPECT_EQ(stop_server(&srv, SIGTERM), 0);
    ASSERT_EQ(r.status, 200) << r.body;
    answers[i] = r.j["choices"][0];
    logs[i] = read_file(srv.log_path);
  }
  EXPECT_NE(logs[1].find("straight into the packed engine"), std::string::npos) << logs[1];
  EXPECT_EQ(answers[0]["text"], answers[1]["text"]);
  EXPECT_EQ(answers[0]["logprobs"], answers[1]["logprobs"]);
}

TEST(Serve, ApiKeyAndSigint) {
  TinyModel m;
  ASSERT_NO_FATAL_FAILURE(make_tiny_model("serve_auth", &m));
  const std::string key = "sk-test-5f1e0c9a7b";
  for (int variant = 0; variant < 2; variant++) {
    Server s;
    if (variant == 0)
      ASSERT_NO_FATAL_FAILURE(start_server(m, {}, {"BITKD_API_KEY=" + key}, &s));
    else
      ASSERT_NO_FATAL_FAILURE(start_server(m, {"--api-key", key}, {}, &s));
    std::string body = chat_body("list 2 beta", 4, 0.0).dump();
    expect_error_object(post(s.port, "/v1/chat/completions", body), 401, "no key");
    expect_error_object(post(s.port, "/v1/chat/completions", body, key + "x"), 401, "wrong key");
    expect_error_object(get(s.port, "/v1/models"), 401, "models without key");
    EXPECT_EQ(post(s.port, "/v1/chat/completions", body, key).status, 200);
    EXPECT_EQ(get(s.port, "/v1/models", key).status, 200);
    EXPECT_EQ(get(s.port, "/health").status, 200);
    EXPECT_EQ(stop_server(&s, variant == 0 ? SIGINT : SIGTERM), 0);
    std::string log = read_file(s.log_path);
    EXPECT_EQ(log.find(key), std::string::npos) << "the API key appears in the server log";
    EXPECT_NE(log.find("API key required"), std::string::npos) << log;
  }
}
