// The server's request validation, chat template rendering and stop-string /
// streaming text bookkeeping (no HTTP).
#include <gtest/gtest.h>

#include "serve/api.h"
#include "serve/serve.h"
#include "tokenizer/chat_template.h"

using namespace bk;
using namespace bk::serve_detail;

TEST(ServeTemplate, UnescapeAndRender) {
  std::string t = template_unescape("<|user|>\\n{prompt}\\n\\n<|assistant|>\\n");
  EXPECT_EQ(t, "<|user|>\n{prompt}\n\n<|assistant|>\n");
  std::string out;
  ASSERT_TRUE(render_chat(t, {{"user", "hi"}}, &out).ok());
  EXPECT_EQ(out, "<|user|>\nhi\n\n<|assistant|>\n");
  ASSERT_TRUE(render_chat(t,
                          {{"system", "be brief"},
                           {"user", "a"},
                           {"assistant", "b"},
                           {"user", "c"},
                           {"user", "d"}},
                          &out)
                  .ok());
  EXPECT_EQ(out, "be brief\n\n<|user|>\na\n\n<|assistant|>\nb\n\n<|user|>\nc\nd\n\n<|assistant|>\n");
  // A final assistant message is continued.
  ASSERT_TRUE(render_chat(t, {{"user", "a"}, {"assistant", "{\"k\": "}}, &out).ok());
  EXPECT_EQ(out, "<|user|>\na\n\n<|assistant|>\n{\"k\": ");
  EXPECT_FALSE(render_chat(t, {{"system", "only"}}, &out).ok());
  EXPECT_FALSE(render_chat(t, {{"tool", "x"}}, &out).ok());
  EXPECT_FALSE(render_chat("no placeholder", {{"user", "x"}}, &out).ok());
}

TEST(ServeRequest, ValidChat) {
  GenRequest r;
  ApiError e;
  ASSERT_TRUE(parse_request(R"({"model":"m","messages":[{"role":"user","content":"hi"},
      {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
      "max_tokens":12,"temperature":0,"top_p":0.5,"seed":7,"stop":["x","", "yz"],
      "logprobs":true,"top_logprobs":5,"stream":true,"stream_options":{"include_usage":true}})",
                            true, &r, &e))
      << e.message;
  EXPECT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[1].content, "ab");
  EXPECT_EQ(r.max_tokens, 12);
  EXPECT_EQ(r.temperature, 0.0f);
  EXPECT_EQ(r.top_p, 0.5f);
  EXPECT_TRUE(r.has_seed);
  EXPECT_EQ(r.seed, 7u);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"x", "yz"}));
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.top_logprobs, 5);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
}

TEST(ServeRequest, ValidCompletion) {
  GenRequest r;
  ApiError e;
  ASSERT_TRUE(parse_request(R"({"prompt":"abc","logprobs":3,"stop":"\n","max_tokens":4})", false, &r, &e)) << e.message;
  EXPECT_EQ(r.prompt, "abc");
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.top_logprobs, 3);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n"}));
  EXPECT_EQ(r.temperature, 1.0f);  // OpenAI's default
}

TEST(ServeRequest, Rejections) {
  struct Case {
    bool chat;
    const char* body;
    const char* param;
  } cases[] = {
      {true, "{not json", ""},
      {true, "[1,2]", ""},
      {true, R"({"messages":"hi"})", "messages"},
      {true, R"({"messages":[]})", "messages"},
      {true, R"({})", "messages"},
      {true, R"({"messages":[{"role":"user","content":"x"}],"max_tokens":"ten"})", "max_tokens"},
      {true, R"({"messages":[{"role":"user","content":"x"}],"max_tokens":0})", "max_tokens"},
      {true, R"({"messages":[{"role":"user","content":"x"}],"max_tokens":2.5})", "max_tokens"},
      {true, R"({"messages":[{"role":"user","content":"x"}],"temperature":-0.1})", "temperature"},
      {true, R"({"messages":[{"role":"user","content":"x"}],"temperature":"hot"})", "temperature"},
      {true, R"({"messages":[{"role":"user","content":"x"}],"top_p":1.5})", "top_p"},
      {true, R"({"messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":21})", "top_logprobs"},
      {true, R"({"messages":[{"role":"user","content":"x"}],"top_logprobs":3})", "top_logprobs"},
      {true, R"({"messages":[{"role":"user","content":"x"}],"stop":5})", "stop"},
      {true, R"({"messages":[{"role":"user","content":"x"}],"stream":"yes"})", "stream"},
      {true, R"({"messages":[{"role":"user","content":"x"}],"n":2})", "n"},
      {true, R"({"messages":[{"role":"robot","content":"x"}]})", "messages[0].role"},
      {true, R"({"messages":[{"role":"user","content":5}]})", "messages[0].content"},
      {true, R"({"messages":[{"role":"user","content":"x"}],"model":3})", "model"},
      {false, R"({"prompt":7})", "prompt"},
      {false, R"({"prompt":"x","logprobs":true})", "logprobs"},
      {false, R"({"prompt":"x","logprobs":21})", "logprobs"},
      {false, R"({"prompt":["a","b"]})", "prompt"},
      {false, R"({"prompt":"x","echo":true,"stream":true})", "echo"},
      {false, R"({"prompt":"x","max_tokens":0})", "max_tokens"},
  };
  for (const Case& c : cases) {
    GenRequest r;
    ApiError e;
    EXPECT_FALSE(parse_request(c.body, c.chat, &r, &e)) << c.body;
    EXPECT_EQ(e.status, 400) << c.body;
    EXPECT_EQ(e.param, c.param) << c.body;
    EXPECT_FALSE(e.message.empty());
    std::string j = error_json(e);
    EXPECT_NE(j.find("\"invalid_request_error\""), std::string::npos) << j;
  }
}

TEST(ServeText, StopStringsAndHoldBack) {
  TextTracker t;
  t.stops = {"\n\n", "END"};
  EXPECT_FALSE(t.add("Hello"));
  EXPECT_EQ(t.safe_len(), 5u);
  EXPECT_FALSE(t.add(" E"));
  EXPECT_EQ(t.safe_len(), 6u);  // "E" may start "END"
  EXPECT_FALSE(t.add("x\n"));
  EXPECT_EQ(t.safe_len(), 8u);  // "\n" may start "\n\n"
  EXPECT_TRUE(t.add("\nmore"));  // stop string spans two tokens
  EXPECT_EQ(t.final_len(), 8u);
  EXPECT_EQ(t.text.substr(0, t.final_len()), "Hello Ex");
  EXPECT_EQ(t.output_tokens(), 3u);  // "\nmore" starts inside the stop string
}

TEST(ServeText, TokensAfterStopAreDropped) {
  TextTracker t;
  t.stops = {"##"};
  t.add("ab");
  t.add("c#");
  t.add("#d");
  EXPECT_EQ(t.final_len(), 3u);
  EXPECT_EQ(t.output_tokens(), 2u);  // "c#" starts before the stop, "#d" after
}

TEST(ServeText, Utf8) {
  std::string e = "\xE2\x82\xAC";  // euro sign
  EXPECT_TRUE(utf8_valid("a" + e));
  EXPECT_FALSE(utf8_valid("\xE2\x82"));
  EXPECT_FALSE(utf8_valid("\xC0\x80"));
  EXPECT_EQ(utf8_complete_prefix("a\xE2\x82", 3), 1u);
  EXPECT_EQ(utf8_complete_prefix("a" + e, 4), 4u);
  EXPECT_EQ(utf8_codepoints("a" + e + "b", 5), 3u);
  EXPECT_EQ(token_display("\xE2"), "bytes:\\xe2");
  EXPECT_EQ(token_display(" hi"), " hi");
  TextTracker t;
  t.add("x");
  t.add("\xE2");
  EXPECT_EQ(t.safe_len(), 1u);  // half a character is held back
  t.add("\x82\xAC");
  EXPECT_EQ(t.safe_len(), 4u);
}
