// Configuration (io/config.h): .env syntax, precedence flag > environment >
// .env > default, where each value came from, and the registry's checks of
// every value at once.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <map>
#include <string>

#include "core/fs.h"
#include "io/config.h"
#include "testutil/testutil.h"

using namespace bk;

namespace {

std::map<std::string, std::string> parse_ok(const std::string& text) {
  std::map<std::string, std::string> kv;
  const Status s = dotenv_parse(text, "t.env", &kv);
  EXPECT_TRUE(s.ok()) << s.msg;
  return kv;
}

std::string parse_error(const std::string& text) {
  std::map<std::string, std::string> kv;
  const Status s = dotenv_parse(text, "t.env", &kv);
  EXPECT_FALSE(s.ok()) << text;
  return s.msg;
}

// An environment variable set for one scope.
struct ScopedEnv {
  std::string name;
  ScopedEnv(const char* n, const char* v) : name(n) { setenv(n, v, 1); }
  ~ScopedEnv() { unsetenv(name.c_str()); }
};

}  // namespace

TEST(Dotenv, QuotingExportCommentsAndEscapes) {
  const auto kv = parse_ok(
      "# a comment\n"
      "\n"
      "A=plain\n"
      "export B=exported\n"
      "  C = spaced  \n"
      "D=value # trailing comment\n"
      "E=\"double # not a comment\"\n"
      "F='single \\\" kept'\n"
      "G=\"say \\\"hi\\\"\"\n"
      "H=\"<|user|>\\n{prompt}\"\n"
      "I=a#b\n"
      "J=\n"
      "K=\"quoted\" # comment after the quote\n"
      "L=x\r\n");
  EXPECT_EQ(kv.at("A"), "plain");
  EXPECT_EQ(kv.at("B"), "exported");
  EXPECT_EQ(kv.at("C"), "spaced");
  EXPECT_EQ(kv.at("D"), "value");
  EXPECT_EQ(kv.at("E"), "double # not a comment");
  EXPECT_EQ(kv.at("F"), "single \\\" kept");         // single quotes keep backslashes
  EXPECT_EQ(kv.at("G"), "say \"hi\"");               // \" inside double quotes is a quote
  EXPECT_EQ(kv.at("H"), "<|user|>\\n{prompt}");      // \n stays two characters (TEMPLATE expands it)
  EXPECT_EQ(kv.at("I"), "a#b");                      // # starts a comment only after a space
  EXPECT_EQ(kv.at("J"), "");
  EXPECT_EQ(kv.at("K"), "quoted");
  EXPECT_EQ(kv.at("L"), "x");                        // CRLF files
  EXPECT_EQ(kv.size(), 12u);
}

TEST(Dotenv, ErrorsNameTheFileAndLine) {
  std::string e = parse_error("A=1\n\nno equals sign\n");
  EXPECT_NE(e.find("t.env:3:"), std::string::npos) << e;
  e = parse_error("A=1\nB=\"open\n");
  EXPECT_NE(e.find("t.env:2:"), std::string::npos) << e;
  EXPECT_NE(e.find("unterminated quote"), std::string::npos) << e;
  e = parse_error("BAD-NAME=1\n");
  EXPECT_NE(e.find("t.env:1:"), std::string::npos) << e;
  e = parse_error("A=\"x\"y\n");
  EXPECT_NE(e.find("t.env:1:"), std::string::npos) << e;
  EXPECT_NE(e.find("after the closing quote"), std::string::npos) << e;
  e = parse_error("=1\n");
  EXPECT_NE(e.find("t.env:1:"), std::string::npos) << e;
}

TEST(Config, FlagBeatsEnvironmentBeatsDotenvBeatsDefault) {
  const std::string dir = bk_test::scratch_dir("config_precedence");
  const std::string env_file = dir + "/.env";
  ASSERT_TRUE(write_file_atomic(env_file, "TOTAL_STEPS=30\nLR=1e-3\nKD_TAU=2\n").ok());
  ScopedEnv e1("LR", "2e-3"), e2("KD_TAU", "3");
  Config c;
  ASSERT_TRUE(config_load(&c, env_file, {{"KD_TAU", "4"}}).ok());
  EXPECT_EQ(config_str(c, "TOTAL_STEPS"), "30");  // .env over the default 1000
  EXPECT_EQ(config_source(c, "TOTAL_STEPS"), SRC_DOTENV);
  EXPECT_EQ(config_str(c, "LR"), "2e-3");  // environment over .env
  EXPECT_EQ(config_source(c, "LR"), SRC_ENV);
  EXPECT_EQ(config_str(c, "KD_TAU"), "4");  // flag over both
  EXPECT_EQ(config_source(c, "KD_TAU"), SRC_FLAG);
  EXPECT_EQ(config_str(c, "MAX_SEQ_LEN"), "256");  // the default
  EXPECT_EQ(config_source(c, "MAX_SEQ_LEN"), SRC_DEFAULT);
  EXPECT_EQ(config_where(c, "TOTAL_STEPS"), "from " + env_file + ":1");
  EXPECT_EQ(config_where(c, "LR"), "from environment");
  EXPECT_EQ(config_where(c, "MAX_SEQ_LEN"), "default");
  // A missing .env is skipped.
  ASSERT_TRUE(config_load(&c, dir + "/none.env", {}).ok());
  EXPECT_EQ(config_str(c, "TOTAL_STEPS"), "1000");
}

TEST(Config, DefaultsPassTheirOwnChecks) {
  Config c;
  ASSERT_TRUE(config_load(&c, "", {}).ok());
  for (const ConfigVar& v : config_vars())
    EXPECT_EQ(config_check_value(v, v.default_value), "") << v.name << "=" << v.default_value;
}

TEST(Config, TypesRangesAndChoicesFromTheRegistry) {
  auto check = [](const char* name, const char* value) { return config_check_value(*config_find_var(name), value); };
  EXPECT_EQ(check("KD_MAX_PROMPTS", "abc"), "is not an integer");
  EXPECT_EQ(check("KD_MAX_PROMPTS", "0"), "");
  EXPECT_EQ(check("KD_MAX_PROMPTS", "-1"), "must be >= 0");
  EXPECT_EQ(check("TOTAL_STEPS", "-5"), "must be >= 1");
  EXPECT_EQ(check("TOTAL_STEPS", "2.5"), "is not an integer");
  EXPECT_EQ(check("TEACHER_TOP_LOGPROBS", "21"), "must be <= 20");
  EXPECT_EQ(check("FLIP_FRACTION", "1.5"), "must be <= 1");
  EXPECT_EQ(check("FLIP_FRACTION", "nan"), "is not a number");
  EXPECT_EQ(check("LR", "0"), "must be > 0");
  EXPECT_EQ(check("LR", "3e-3"), "");
  EXPECT_EQ(check("DETERMINISTIC", "maybe"), "is not a boolean (use 1/0, true/false)");
  EXPECT_EQ(check("DETERMINISTIC", "Yes"), "");
  EXPECT_EQ(check("KD_LOSS", "mse"), "must be one of: kl, reverse_kl, jsd");
  EXPECT_EQ(check("KD_LOSS", "jsd"), "");
  EXPECT_EQ(check("TOTAL_STEPS", ""), "is empty (unset it for the default)");
  EXPECT_EQ(check("PIPELINE_TEACHER_STEPS", ""), "");  // empty default: empty is "unset"
  EXPECT_EQ(check("TEACHER_MODEL", "anything"), "");
}

// All bad values at once, each with where it was set; the variable named is
// the one the user set (TOTAL_STEPS, not the SCHEDULER_TMAX derived from it).
TEST(Config, ValidateReportsEveryBadValueWithItsOrigin) {
  const std::string dir = bk_test::scratch_dir("config_validate");
  const std::string env_file = dir + "/.env";
  ASSERT_TRUE(write_file_atomic(env_file, "# run\nexport TOTAL_STEPS=-5\n").ok());
  ScopedEnv e("KD_MAX_PROMPTS", "abc");
  Config c;
  ASSERT_TRUE(config_load(&c, env_file, {{"KD_LOSS", "mse"}}).ok());
  c.origins["KD_LOSS"] = "flag --kd-loss";
  const std::vector<std::string> bad = config_validate(c);
  ASSERT_EQ(bad.size(), 3u);
  std::string all;
  for (const std::string& b : bad) all += b + "\n";
  EXPECT_NE(all.find("KD_MAX_PROMPTS=abc (from environment): is not an integer"), std::string::npos) << all;
  EXPECT_NE(all.find("TOTAL_STEPS=-5 (from " + env_file + ":2): must be >= 1"), std::string::npos) << all;
  EXPECT_NE(all.find("KD_LOSS=mse (from flag --kd-loss): must be one of"), std::string::npos) << all;
  EXPECT_EQ(all.find("SCHEDULER_TMAX"), std::string::npos) << all;
  const Status s = config_validate_status(c);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.msg.find("3 bad configuration values"), std::string::npos) << s.msg;

  ASSERT_TRUE(config_load(&c, "", {}).ok());
  unsetenv("KD_MAX_PROMPTS");
  ASSERT_TRUE(config_load(&c, "", {}).ok());
  EXPECT_TRUE(config_validate(c).empty());
}
