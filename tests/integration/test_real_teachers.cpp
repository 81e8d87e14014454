// Real teachers, each provider's wire shape served from one stand-in server on
// 127.0.0.1 (OpenAI chat, Anthropic messages, Gemini generateContent, vLLM
// legacy completions, llama.cpp's native /completion), answering the way
// chat models do: sentences, fences, a final "Answer:" line, or bare. The
// real `bitkd teacher` scores them (expected values fixed by the fixture),
// `bitkd collect` takes llama.cpp's traces with its end-of-text step, and
// `bitkd eval` reports where the teacher's memory came from.
#include <gtest/gtest.h>
#include <httplib.h>

#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "integration/serve_harness.h"
#include "testutil/testutil.h"

namespace {

using json = nlohmann::json;
using serve_harness::q;

struct Item {
  const char* task;
  const char* prompt;
  const char* reference;
};
const Item k_items[] = {
    {"arithmetic", "What is 40 + 2?", "42"},
    {"json_object", "Make a JSON object with a=1.", "{\"a\": 1}"},
    {"sort", "Sort in ascending order: 3, 1, 2", "1, 2, 3"},
    {"key_lookup", "What is the value of \"k\" in {\"k\": 9}?", "9"},
};

// Per provider shape, what the "model" replies to each item (same order).
// Expected scores: the arithmetic and JSON answers are right inside their
// wrapping; "Sorted: ..." is a wording no rule takes apart (0); the lookup is
// wrong (0). So every provider's baseline scores 0.5.
const std::map<std::string, std::vector<std::string>> k_replies = {
    {"openai", {"The answer is 42.", "Here is the JSON object:\n\n```json\n{\"a\": 1}\n```", "Sorted: 1, 2, 3",
                "The answer is 8."}},
    {"anthropic", {"Let me work it out: 40 plus 2.\n\nAnswer: 42", "Sure! {\"a\": 1} is the object you asked for.",
                   "Sorted: 1, 2, 3", "Answer: 8"}},
    {"gemini", {"```\n42\n```", "```json\n{\"a\": 1}\n```\n", "Sorted: 1, 2, 3", "`8`"}},
    {"vllm", {" 42\n", "{\"a\": 1}", "Sorted: 1, 2, 3", "8"}},
    {"llamacpp", {" 42", " {\"a\": 1}", " Sorted: 1, 2, 3", " 8"}},
};

// The user prompt inside a chat request or a rendered template.
int item_of(const std::string& text) {
  for (int i = 0; i < 4; i++)
    if (text.find(k_items[i].prompt) != std::string::npos) return i;
  return -1;
}

// Splits a reply into tokens of at most 3 bytes (the stand-in's "vocabulary").
std::vector<std::string> tokens_of(const std::string& s) {
  std::vector<std::string> t;
  for (size_t i = 0; i < s.size(); i += 3) t.push_back(s.substr(i, 3));
  return t;
}

json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back((int)c);
  return b;
}

struct StandIn {
  httplib::Server svr;
  std::thread th;
  int port = 0;
  std::mutex mu;
  std::vector<json> requests;  // every body received

  void start() {
    // Records the body and finds which item it asks about (-1: none).
    auto reply = [this](const httplib::Request& req, json* body) -> int {
      *body = json::parse(req.body, nullptr, false);
      std::lock_guard<std::mutex> lk(mu);
      requests.push_back(*body);
      std::string text;
      if (body->contains("messages"))
        for (const json& m : (*body)["messages"]) text += m.value("content", std::string()) + "\n";
      if (body->contains("contents")) text = body->dump();
      if (body->contains("prompt") && (*body)["prompt"].is_string()) text = (*body)["prompt"].get<std::string>();
      return item_of(text);
    };
    svr.Post("/v1/chat/completions", [&, reply](const httplib::Request& req, httplib::Response& res) {
      json b;
      const int i = reply(req, &b);
      if (i < 0) return (void)(res.status = 400);
      json r = {{"id", "c"}, {"object", "chat.completion"}, {"model", "gpt-stand-in"},
                {"choices", {{{"index", 0}, {"finish_reason", "stop"},
                              {"message", {{"role", "assistant"}, {"content", k_replies.at("openai")[i]}}}}}},
                {"usage", {{"prompt_tokens", 12}, {"completion_tokens", 6}}}};
      res.set_content(r.dump(), "application/json");
    });
    svr.Post("/v1/messages", [&, reply](const httplib::Request& req, httplib::Response& res) {
      json b;
      const int i = reply(req, &b);
      if (i < 0) return (void)(res.status = 400);
      json r = {{"id", "msg"}, {"type", "message"}, {"role", "assistant"}, {"model", "claude-stand-in"},
                {"content", {{{"type", "text"}, {"text", k_replies.at("anthropic")[i]}}}},
                {"stop_reason", "end_turn"}, {"usage", {{"input_tokens", 12}, {"output_tokens", 9}}}};
      res.set_content(r.dump(), "application/json");
    });
    svr.Post(R"(/v1beta/models/gem-1:generateContent)", [&, reply](const httplib::Request& req, httplib::Response& res) {
      json b;
      const int i = reply(req, &b);
      if (i < 0) return (void)(res.status = 400);
      json r = {{"candidates", {{{"content", {{"role", "model"}, {"parts", {{{"text", k_replies.at("gemini")[i]}}}}}},
                                 {"finishReason", "STOP"}}}},
                {"usageMetadata", {{"promptTokenCount", 12}, {"candidatesTokenCount", 7}}},
                {"modelVersion", "gem-1"}};
      res.set_content(r.dump(), "application/json");
    });
    svr.Post("/v1/completions", [&, reply](const httplib::Request& req, httplib::Response& res) {
      json b;
      const int i = reply(req, &b);
      if (i < 0) return (void)(res.status = 400);
      json r = {{"id", "cmpl"}, {"object", "text_completion"}, {"model", "vllm-stand-in"},
                {"choices", {{{"index", 0}, {"text", k_replies.at("vllm")[i]}, {"finish_reason", "stop"}}}},
                {"usage", {{"prompt_tokens", 12}, {"completion_tokens", 3}}}};
      res.set_content(r.dump(), "application/json");
    });
    // llama.cpp's native route, in its current shape: per generated token its
    // id, text, bytes and logprob and the top candidates; the end-of-text
    // token last, with no text.
    svr.Post("/completion", [&, reply](const httplib::Request& req, httplib::Response& res) {
      json b;
      const int i = reply(req, &b);
      if (i < 0) return (void)(res.status = 400);
      const std::string text = k_replies.at("llamacpp")[i];
      json probs = json::array();
      const int n_probs = b.value("n_probs", 0);
      int id = 100;
      for (const std::string& t : tokens_of(text)) {
        json top = json::array({{{"id", id}, {"token", t}, {"bytes", bytes_of(t)}, {"logprob", -0.05}}});
        if (n_probs > 1) top.push_back({{"id", 7}, {"token", "zz"}, {"bytes", bytes_of("zz")}, {"logprob", -3.1}});
        probs.push_back({{"id", id}, {"token", t}, {"bytes", bytes_of(t)}, {"logprob", -0.05}, {"top_logprobs", top}});
        id++;
      }
      json eos_top = json::array({{{"id", 2}, {"token", ""}, {"bytes", json::array()}, {"logprob", -0.01}}});
      probs.push_back({{"id", 2}, {"token", ""}, {"bytes", json::array()}, {"logprob", -0.01}, {"top_logprobs", eos_top}});
      json r = {{"content", text}, {"model", "stand-in.gguf"}, {"stop", true}, {"stop_type", "eos"},
                {"tokens_predicted", (int)tokens_of(text).size() + 1}, {"tokens_evaluated", 20}};
      if (n_probs > 0) r["completion_probabilities"] = probs;
      res.set_content(r.dump(), "application/json");
    });
    // Local servers are asked which model they serve.
    svr.Get("/v1/models", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(R"({"object":"list","data":[{"id":"stand-in.gguf","object":"model"}]})", "application/json");
    });
    port = svr.bind_to_any_port("127.0.0.1");
    th = std::thread([this] { svr.listen_after_bind(); });
    while (!svr.is_running()) std::this_thread::yield();  // stop() needs the accept loop running
  }
  ~StandIn() {
    svr.stop();
    if (th.joinable()) th.join();
  }
};

json read_json(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return json::parse(ss.str(), nullptr, false);
}

// Every variable that could point bitkd at another teacher is cleared first.
const char* k_clean =
    "env -u PROVIDER -u TEACHER_PROVIDER -u TEACHER_BASE_URL -u TEACHER_MODEL -u TEACHER_API_KEY -u TEACHER_API "
    "-u TEACHER_MEMORY_GB -u TEACHER_CHECKPOINT -u TEACHER_INSTRUCTION -u OPENAI_API_KEY -u ANTHROPIC_API_KEY "
    "-u GEMINI_API_KEY ";

TEST(RealTeachers, EachProviderShapeIsScoredOnItsAnswersAndSaysWhereQeiMemoryCameFrom) {
  StandIn si;
  si.start();
  ASSERT_GT(si.port, 0);
  const std::string dir = bk_test::scratch_dir("real_teachers");
  const std::string url = "http://127.0.0.1:" + std::to_string(si.port);
  {
    std::ofstream f(dir + "/prompts.jsonl");
    for (const Item& it : k_items)
      f << json({{"prompt", it.prompt}, {"response", it.reference}, {"task", it.task}}).dump() << "\n";
  }
  struct Teacher {
    const char* name;
    std::string env;
    const char* prompt_format;
  };
  const std::vector<Teacher> teachers = {
      {"openai", "TEACHER_PROVIDER=openai OPENAI_API_KEY=sk-test OPENAI_BASE_URL=" + url +
                     "/v1 OPENAI_MODEL=gpt-stand-in TEACHER_MEMORY_GB=140 TEACHER_INSTRUCTION='Reply with the answer "
                     "only.'",
       "chat messages"},
      {"anthropic", "TEACHER_PROVIDER=anthropic ANTHROPIC_API_KEY=sk-test ANTHROPIC_BASE_URL=" + url +
                        "/v1 ANTHROPIC_MODEL=claude-stand-in",
       "chat messages"},
      {"gemini", "TEACHER_PROVIDER=gemini GEMINI_API_KEY=test GEMINI_BASE_URL=" + url + "/v1beta GEMINI_MODEL=gem-1",
       "chat messages"},
      {"vllm", "TEACHER_PROVIDER=vllm VLLM_BASE_URL=" + url + "/v1 VLLM_MODEL=vllm-stand-in TEACHER_API=completions",
       "raw"},
      {"llamacpp", "TEACHER_PROVIDER=llamacpp LLAMACPP_BASE_URL=" + url + "/v1 TEACHER_API=native TEACHER_PROMPT_PREFIX=' '",
       "raw"},
  };
  for (const Teacher& t : teachers) {
    SCOPED_TRACE(t.name);
    const std::string out_path = dir + "/baseline_" + t.name + ".json";
    std::string out;
    const int rc = bk_test::run_command(std::string(k_clean) + t.env + " " + bk_test::bitkd_exe() +
                                            " teacher --env-file= --log-level WARNING --artifacts " + q(dir + "/art") +
                                            " --prompts " + q(dir + "/prompts.jsonl") +
                                            " --max-prompts 0 --max-tokens 32 --out " + q(out_path),
                                        &out);
    ASSERT_EQ(rc, 0) << out;
    json b = read_json(out_path);
    ASSERT_TRUE(b.is_object()) << out;
    EXPECT_EQ(b["quality"]["score"], 0.5) << b["results"];
    EXPECT_EQ(b["quality"]["scored_prompts"], 4);
    EXPECT_EQ(b["quality"]["per_task"]["arithmetic"]["score"], 1.0);
    EXPECT_EQ(b["quality"]["per_task"]["json_object"]["score"], 1.0);
    EXPECT_EQ(b["quality"]["per_task"]["sort"]["score"], 0.0);
    EXPECT_EQ(b["quality"]["json_validity"], 1.0);
    EXPECT_EQ(b["prompt_format"].get<std::string>().rfind(t.prompt_format, 0), 0u) << b["prompt_format"];
    if (std::string(t.name) == "llamacpp") {
      EXPECT_EQ(b["prompt_prefix"], " ");  // recorded with the baseline
    }
    const std::string src = b["memory_teacher_source"];
    if (std::string(t.name) == "openai") {
      EXPECT_EQ(src, "declared: TEACHER_MEMORY_GB=140");
      EXPECT_EQ(b["memory_teacher_constant"], 140e9);
      EXPECT_EQ(b["instruction"], "Reply with the answer only.");
    } else {
      EXPECT_EQ(src.rfind("unknown:", 0), 0u) << src;
      EXPECT_TRUE(b["memory_teacher_constant"].is_null());
    }
  }
  // What the servers received: the instruction as a system message (OpenAI),
  // the rendered template as the raw prompt (vLLM, llama.cpp), n_probs on
  // llama.cpp's native route only when traces ask for it.
  {
    std::lock_guard<std::mutex> lk(si.mu);
    bool saw_system = false, saw_raw = false;
    for (const json& r : si.requests) {
      if (r.contains("messages") && r["messages"][0]["role"] == "system") saw_system = true;
      if (r.contains("n_predict")) {
        EXPECT_NE(r["prompt"].get<std::string>().find("<|assistant|>"), std::string::npos) << r;
        EXPECT_EQ(r["prompt"].get<std::string>().rfind(" <|user|>", 0), 0u) << "TEACHER_PROMPT_PREFIX first: " << r;
        EXPECT_FALSE(r.contains("n_probs")) << "the baseline asks for no logprobs";
        saw_raw = true;
      }
    }
    EXPECT_TRUE(saw_system);
    EXPECT_TRUE(saw_raw);
  }

  // KD traces through llama.cpp's native route: every step valid, the final
  // end-of-text step counted as such (not invalid, not stored).
  serve_harness::TinyModel tm;
  serve_harness::make_tiny_model("real_teachers_model", &tm);
  if (::testing::Test::HasFatalFailure()) return;
  {
    std::string out;
    const int rc = bk_test::run_command(
        std::string(k_clean) + teachers[4].env + " " + bk_test::bitkd_exe() +
            " collect --env-file= --log-level WARNING --artifacts " + q(dir + "/art") + " --prompts " +
            q(dir + "/prompts.jsonl") + " --max-prompts 0 --max-tokens 16 --tokenizer " + q(tm.tokenizer) +
            " --out " + q(dir + "/traces") + " --stats " + q(dir + "/collect_stats.json"),
        &out);
    ASSERT_EQ(rc, 0) << out;
    json st = read_json(dir + "/collect_stats.json");
    ASSERT_TRUE(st.is_object()) << out;
    EXPECT_EQ(st["prompts"]["ok"], 4) << st;
    EXPECT_EQ(st["steps"]["end_of_text"], 4) << st;
    EXPECT_EQ(st["steps"]["invalid"], 0) << st;
    EXPECT_GT(st["steps"]["valid"].get<long long>(), 8) << st;
    std::lock_guard<std::mutex> lk(si.mu);
    EXPECT_EQ(si.requests.back().value("n_probs", 0), 20) << si.requests.back();
  }

  // eval says where Mt came from: declared (the OpenAI teacher's baseline),
  // or unknown, and then QEI is null with the variables to set.
  std::string out;
  int rc = bk_test::run_command(
      std::string(k_clean) + bk_test::bitkd_exe() + " pretrain --env-file= --log-level WARNING --artifacts " +
          q(dir + "/art") + " --data " + q(tm.dir + "/corpus.jsonl") + " --tokenizer " + q(tm.tokenizer) +
          " --dim 32 --layers 1 --heads 2 --head-dim 16 --ffn 64 --weight-quant ternary --act-bits 8 --seq 64"
          " --batch 4 --steps 4 --warmup 0 --checkpoint-interval 0 --out " +
          q(dir + "/student") + " > /dev/null",
      &out);
  ASSERT_EQ(rc, 0) << out;
  for (const char* t : {"openai", "anthropic"}) {
    SCOPED_TRACE(t);
    const std::string rep = dir + "/eval_" + t + ".json";
    rc = bk_test::run_command(std::string(k_clean) + bk_test::bitkd_exe() +
                                  " eval --env-file= --log-level WARNING --artifacts " + q(dir + "/art") + " --model " +
                                  q(dir + "/student/mini_bitnet_step_4.safetensors") + " --tokenizer " +
                                  q(tm.tokenizer) + " --prompts " + q(dir + "/prompts.jsonl") +
                                  " --max-prompts 0 --max-new-tokens 8 --no-kd-eval --teacher-baseline " +
                                  q(dir + "/baseline_" + t + ".json") + " --out " + q(rep),
                              &out);
    ASSERT_EQ(rc, 0) << out;
    json e = read_json(rep);
    const std::string msrc = e["teacher"]["memory_source"];
    if (std::string(t) == "openai") {
      EXPECT_NE(msrc.find("declared: TEACHER_MEMORY_GB=140"), std::string::npos) << msrc;
      EXPECT_EQ(e["qei_metrics"]["teacher_memory_gb"], 140.0);
    } else {
      EXPECT_NE(msrc.find("unknown"), std::string::npos) << msrc;
      EXPECT_TRUE(e["qei_metrics"]["qei"].is_null());
      EXPECT_EQ(e["qei_metrics"]["gates"]["qei_ge_0.2"]["status"], "not_evaluated");
      EXPECT_NE(e["qei_metrics"]["gates"]["qei_ge_0.2"]["detail"].get<std::string>().find("TEACHER_MEMORY_GB"),
                std::string::npos);
    }
  }
}

}  // namespace
