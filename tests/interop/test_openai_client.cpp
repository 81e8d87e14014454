// The official `openai` npm client (tests/interop/openai_client.mjs) against
// a real `bitkd serve`: chat with logprobs/top_logprobs, streaming, legacy
// completions, and typed errors for a bad request and a wrong key.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "core/fs.h"
#include "integration/serve_harness.h"
#include "testutil/testutil.h"

using json = nlohmann::json;
using namespace serve_harness;

namespace {

// Missing tools are a failure with the fix, never a silent skip.
bool openai_ready(std::string* why) {
  std::string out;
  if (bk_test::run_command("node --version", &out) != 0) {
    *why = "node is not installed: run bash scripts/setup.sh --test";
    return false;
  }
  if (!bk::file_exists(bk::path_join(bk_test::source_dir(), "tests/interop/node_modules/openai/package.json"))) {
    *why = "tests/interop/node_modules lacks the openai package: run bash scripts/setup.sh --test (it runs npm install there)";
    return false;
  }
  return true;
}

}  // namespace

TEST(OpenAiClient, ChatStreamCompletionsAndErrors) {
  std::string why;
  ASSERT_TRUE(openai_ready(&why)) << why;
  TinyModel m;
  ASSERT_NO_FATAL_FAILURE(make_tiny_model("openai_client", &m));
  const std::string key = "sk-interop-42";
  Server s;
  ASSERT_NO_FATAL_FAILURE(start_server(m, {"--api-key", key, "--model-name", "bitkd-tiny"}, {}, &s));

  const std::string out_json = m.dir + "/client.json";
  std::string log;
  std::string cmd = "node '" + bk::path_join(bk_test::source_dir(), "tests/interop/openai_client.mjs") +
                    "' http://127.0.0.1:" + std::to_string(s.port) + "/v1 " + key + " '" + out_json + "'";
  int rc = bk_test::run_command(cmd, &log);
  int exit_code = stop_server(&s, SIGTERM);
  ASSERT_EQ(rc, 0) << log << "\nserver log:\n" << read_file(s.log_path);
  EXPECT_EQ(exit_code, 0);
  json o = json::parse(read_file(out_json), nullptr, false);
  ASSERT_TRUE(o.is_object()) << read_file(out_json);

  EXPECT_EQ(o["models"], json::array({"bitkd-tiny"}));

  const json& c = o["chat"];
  EXPECT_EQ(c["object"], "chat.completion");
  EXPECT_EQ(c["model"], "bitkd-tiny");
  EXPECT_EQ(c["role"], "assistant");
  ASSERT_TRUE(c["content"].is_string());
  const int completion = c["usage"]["completion_tokens"];
  EXPECT_EQ(c["logprobs"].size(), (size_t)completion);
  std::string joined;
  for (const json& e : c["logprobs"]) {
    EXPECT_LE(e["logprob"].get<double>(), 0.0);
    ASSERT_EQ(e["top"].size(), 3u);
    EXPECT_EQ(e["top"][0]["token"], e["token"]);  // greedy
    for (const json& b : e["bytes"]) joined.push_back((char)b.get<int>());
  }
  EXPECT_EQ(joined, c["content"].get<std::string>());

  const json& st = o["stream"];
  EXPECT_EQ(st["objects"], json::array({"chat.completion.chunk"}));
  EXPECT_EQ(st["role"], "assistant");
  EXPECT_EQ(st["content"], c["content"]);
  EXPECT_EQ(st["finish_reason"], c["finish_reason"]);
  EXPECT_EQ(st["logprob_tokens"].size(), c["logprobs"].size());
  ASSERT_TRUE(st["usage"].is_object());
  EXPECT_EQ(st["usage"]["completion_tokens"], completion);
  EXPECT_GE(st["chunks"].get<int>(), 3);

  const json& t = o["completion"];
  EXPECT_EQ(t["object"], "text_completion");
  ASSERT_TRUE(t["text"].is_string());
  size_t n = t["tokens"].size();
  EXPECT_EQ(n, (size_t)t["usage"]["completion_tokens"].get<int>());
  EXPECT_EQ(t["token_logprobs"].size(), n);
  EXPECT_EQ(t["top_logprobs"].size(), n);
  EXPECT_EQ(t["text_offset"].size(), n);

  const json& bad = o["bad_request"];
  EXPECT_TRUE(bad["thrown"].get<bool>());
  EXPECT_EQ(bad["name"], "BadRequestError");
  EXPECT_EQ(bad["status"], 400);
  EXPECT_EQ(bad["type"], "invalid_request_error");
  EXPECT_EQ(bad["param"], "top_logprobs");
  const json& auth = o["bad_key"];
  EXPECT_TRUE(auth["thrown"].get<bool>());
  EXPECT_EQ(auth["name"], "AuthenticationError");
  EXPECT_EQ(auth["status"], 401);
  EXPECT_EQ(auth["code"], "invalid_api_key");
}
