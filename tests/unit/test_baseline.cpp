// Baseline report pieces without a server: quantiles, the report's fields and
// quality aggregation, the lock, prompt lists and the chat template.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/fs.h"
#include "kd/baseline.h"
#include "kd/prompts.h"
#include "testutil/testutil.h"

using json = nlohmann::json;

TEST(Baseline, Quantile) {
  EXPECT_EQ(bk::quantile({}, 0.5), 0);
  EXPECT_DOUBLE_EQ(bk::quantile({3, 1, 2}, 0.5), 2);
  EXPECT_DOUBLE_EQ(bk::quantile({1, 2, 3, 4}, 0.5), 2.5);
  EXPECT_DOUBLE_EQ(bk::quantile({0, 10}, 0.95), 9.5);
  EXPECT_DOUBLE_EQ(bk::quantile({7}, 0.95), 7);
}

static bk::BaselineRow row(int64_t idx, const char* task, const char* ref, bool ok, double score, int json_valid,
                           double lat, int64_t toks) {
  bk::BaselineRow r;
  r.item.idx = idx;
  r.item.task = task;
  r.item.reference = ref;
  r.item.prompt = "p" + std::to_string(idx);
  r.ok = ok;
  if (ok) {
    r.response = std::string(300, 'x');
    r.latency_s = lat;
    r.completion_tokens = toks;
    r.decode_tps = toks / lat;
    r.scored = true;
    r.score = score;
    r.json_valid = json_valid;
  } else {
    r.error = "HTTP 500: boom";
    r.error_kind = "http_5xx";
  }
  return r;
}

TEST(Baseline, ReportFieldsAndQuality) {
  std::vector<bk::BaselineRow> rows = {
      row(0, "arithmetic", "42", true, 1.0, -1, 1.0, 10),
      row(1, "json_object", "{\"a\": 1}", true, 0.0, 0, 2.0, 40),
      row(2, "json_object", "{\"a\": 2}", true, 1.0, 1, 4.0, 20),
      row(3, "sort", "a b", false, 0, -1, 0, 0),  // failed: scores 0
  };
  bk::BaselineInfo info;
  info.provider = "openai";
  info.model = "gpt-x";
  info.base_url = "https://api.openai.com/v1";
  info.api = "chat";
  info.template_text = "<|user|>\n{prompt}\n\n<|assistant|>\n";
  ASSERT_TRUE(bk::teacher_memory_declared("670", &info.memory_bytes, &info.memory_source).ok());
  info.prompts_hash = "abc";
  info.timestamp = "2026-01-01T00:00:00Z";
  bk::BaselineOptions opt;
  opt.max_tokens = 64;
  json j = json::parse(bk::baseline_report_json(info, opt, rows));
  EXPECT_EQ(j["memory_teacher_constant"], 670e9);
  EXPECT_EQ(j["memory_teacher_source"], "declared: TEACHER_MEMORY_GB=670");
  EXPECT_EQ(j["eval_config"]["total_prompts"], 4);
  EXPECT_EQ(j["eval_config"]["max_tokens"], 64);
  EXPECT_EQ(j["metrics"]["total_tokens"], 70);
  EXPECT_DOUBLE_EQ(j["metrics"]["total_latency_s"].get<double>(), 7.0);
  EXPECT_DOUBLE_EQ(j["metrics"]["avg_decode_tps_8k"].get<double>(), (10.0 + 20.0 + 5.0) / 3);
  EXPECT_DOUBLE_EQ(j["metrics"]["latency_p50_s"].get<double>(), 2.0);
  EXPECT_EQ(j["metrics"]["failed_prompts"], 1);
  EXPECT_DOUBLE_EQ(j["quality"]["score"].get<double>(), 2.0 / 4);
  EXPECT_DOUBLE_EQ(j["quality"]["json_validity"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j["quality"]["per_task"]["json_object"]["score"].get<double>(), 0.5);
  EXPECT_EQ(j["quality"]["per_task"]["sort"]["score"], 0.0);
  ASSERT_EQ(j["results"].size(), 4u);
  EXPECT_EQ(j["results"][3]["error"], "HTTP 500: boom");
  EXPECT_FALSE(j["results"][3].contains("response_preview"));
  EXPECT_EQ(j["results"][1]["response"].get<std::string>().size(), 300u);
  EXPECT_LE(j["results"][1]["response_preview"].get<std::string>().size(), 203u);
  EXPECT_EQ(j["results"][2]["reference"], "{\"a\": 2}");
  EXPECT_EQ(j["results"][2]["json_valid"], true);
  // The PoC's fields come first, in its order (checked on the text: parsing sorts keys).
  std::string text = bk::baseline_report_json(info, opt, rows);
  EXPECT_LT(text.find("\"timestamp\""), text.find("\"provider\""));
  EXPECT_LT(text.find("\"memory_teacher_constant\""), text.find("\"eval_config\""));
  EXPECT_LT(text.find("\"metrics\""), text.find("\"quality\""));
}

// A teacher's memory is measured or declared; with neither it is unknown (null
// in the report) and the source names what to set. There is no built-in size.
TEST(Baseline, TeacherMemoryDeclaredOrUnknown) {
  double bytes = -1;
  std::string src;
  ASSERT_TRUE(bk::teacher_memory_declared("", &bytes, &src).ok());
  EXPECT_EQ(bytes, 0.0);
  EXPECT_NE(src.find("unknown"), std::string::npos) << src;
  EXPECT_NE(src.find("TEACHER_MEMORY_GB"), std::string::npos) << src;
  EXPECT_NE(src.find("TEACHER_CHECKPOINT"), std::string::npos) << src;
  ASSERT_TRUE(bk::teacher_memory_declared("2.5", &bytes, &src).ok());
  EXPECT_EQ(bytes, 2.5e9);
  EXPECT_EQ(src, "declared: TEACHER_MEMORY_GB=2.5");
  for (const char* bad : {"0", "-3", "big", "1.5GB", "nan"}) {
    bk::Status st = bk::teacher_memory_declared(bad, &bytes, &src);
    EXPECT_FALSE(st.ok()) << bad;
    EXPECT_NE(st.msg.find("TEACHER_MEMORY_GB=" + std::string(bad)), std::string::npos) << st.msg;
  }

  bk::BaselineInfo info;
  ASSERT_TRUE(bk::teacher_memory_declared("", &info.memory_bytes, &info.memory_source).ok());
  json j = json::parse(bk::baseline_report_json(info, bk::BaselineOptions(), {row(0, "arithmetic", "42", true, 1.0, -1, 1.0, 10)}));
  EXPECT_TRUE(j["memory_teacher_constant"].is_null());
  EXPECT_EQ(j["memory_teacher_source"], info.memory_source);
}

TEST(Baseline, LockRefusesOtherPromptsOrModel) {
  std::string dir = bk_test::scratch_dir("baseline_lock");
  std::string path = dir + "/teacher_baseline.json";
  EXPECT_TRUE(bk::baseline_check_lock(path, "h1", "m1", false).ok());  // no report yet
  ASSERT_TRUE(bk::write_file_atomic(path, R"({"model": "m1", "prompts_hash": "h1aaaaaaaaaaaaaaaaaaaa"})").ok());
  EXPECT_TRUE(bk::baseline_check_lock(path, "h1aaaaaaaaaaaaaaaaaaaa", "m1", false).ok());
  bk::Status st = bk::baseline_check_lock(path, "h2bbbbbbbbbbbbbbbbbbbb", "m1", false);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("h1aaaaaaaaaaaaaa"), std::string::npos) << st.msg;
  EXPECT_NE(st.msg.find("h2bbbbbbbbbbbbbb"), std::string::npos) << st.msg;
  st = bk::baseline_check_lock(path, "h1aaaaaaaaaaaaaaaaaaaa", "m2", false);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("'m1'"), std::string::npos) << st.msg;
  EXPECT_NE(st.msg.find("'m2'"), std::string::npos) << st.msg;
  EXPECT_TRUE(bk::baseline_check_lock(path, "h2", "m2", true).ok());
  // A PoC report has no prompts_hash: also locked.
  ASSERT_TRUE(bk::write_file_atomic(path, R"({"model": "gpt-4o-mini", "results": []})").ok());
  st = bk::baseline_check_lock(path, "h1", "gpt-4o-mini", false);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("PoC"), std::string::npos) << st.msg;
}

TEST(Baseline, PromptLists) {
  std::string dir = bk_test::scratch_dir("baseline_prompts");
  ASSERT_TRUE(bk::write_file_atomic(dir + "/p.txt", "first prompt\n\n  \nsecond\r\nthird\n").ok());
  bk::PromptSource src;
  src.file = dir + "/p.txt";
  std::vector<bk::PromptItem> items;
  ASSERT_TRUE(bk::prompts_load(src, &items, nullptr).ok());
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[1].prompt, "second");
  EXPECT_EQ(items[2].idx, 2);
  EXPECT_TRUE(items[0].task.empty());
  src.max_prompts = 2;
  ASSERT_TRUE(bk::prompts_load(src, &items, nullptr).ok());
  EXPECT_EQ(items.size(), 2u);

  ASSERT_TRUE(bk::write_file_atomic(dir + "/p.jsonl", "{\"prompt\": \"2+2=\", \"response\": \"4\", \"task\": \"arithmetic\"}\n").ok());
  src.file = dir + "/p.jsonl";
  ASSERT_TRUE(bk::prompts_load(src, &items, nullptr).ok());
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].reference, "4");
  EXPECT_EQ(items[0].task, "arithmetic");

  bk::PromptSource suite;
  suite.split = bk::TASK_SPLIT_EVAL;
  suite.max_prompts = 16;
  std::vector<bk::PromptItem> a, b;
  ASSERT_TRUE(bk::prompts_load(suite, &a, nullptr).ok());
  ASSERT_TRUE(bk::prompts_load(suite, &b, nullptr).ok());
  EXPECT_EQ(bk::prompts_hash(a), bk::prompts_hash(b));
  for (auto& p : a) EXPECT_FALSE(p.reference.empty());
  b.pop_back();
  EXPECT_NE(bk::prompts_hash(a), bk::prompts_hash(b));
  suite.max_prompts = 0;
  EXPECT_FALSE(bk::prompts_load(suite, &a, nullptr).ok());
}
