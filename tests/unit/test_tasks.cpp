// Synthetic task suite: determinism, disjoint splits, and every scorer.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "core/fs.h"
#include "data/tasks/tasks.h"
#include "testutil/testutil.h"

using namespace bk;

namespace {

std::vector<TaskItem> gen(int64_t n, TaskSplit split, uint64_t seed, std::vector<std::string> fams = {}) {
  TaskGenOptions o;
  o.n = n;
  o.split = split;
  o.seed = seed;
  o.families = fams;
  std::vector<TaskItem> v;
  Status st = tasks_generate(o, &v);
  EXPECT_TRUE(st.ok()) << st.msg;
  return v;
}

double score(const std::string& task, const std::string& ref, const std::string& resp, int* json_valid = nullptr) {
  TaskScore s;
  Status st = task_score(task, ref, resp, &s);
  EXPECT_TRUE(st.ok()) << st.msg;
  if (json_valid) *json_valid = s.json_valid;
  return s.score;
}

}  // namespace

TEST(Tasks, AtLeastEightFamilies) {
  const auto& f = task_families();
  EXPECT_GE(f.size(), 8u);
  for (const char* name :
       {"json_object", "json_list", "key_lookup", "arithmetic", "sort", "string_edit", "python", "sql"})
    EXPECT_TRUE(task_is_family(name)) << name;
  EXPECT_TRUE(task_is_json("json_object"));
  EXPECT_TRUE(task_is_json("json_list"));
  EXPECT_FALSE(task_is_json("sql"));
  EXPECT_FALSE(task_is_family("poetry"));
}

TEST(Tasks, DeterministicBySeed) {
  auto a = gen(200, TASK_SPLIT_TRAIN, 7), b = gen(200, TASK_SPLIT_TRAIN, 7), c = gen(200, TASK_SPLIT_TRAIN, 8);
  ASSERT_EQ(a.size(), 200u);
  ASSERT_EQ(b.size(), 200u);
  bool differs = false;
  for (size_t i = 0; i < a.size(); i++) {
    EXPECT_EQ(a[i].prompt, b[i].prompt);
    EXPECT_EQ(a[i].response, b[i].response);
    EXPECT_EQ(a[i].task, b[i].task);
    differs |= a[i].prompt != c[i].prompt;
  }
  EXPECT_TRUE(differs);
  // A shorter run is a prefix of a longer one.
  auto d = gen(50, TASK_SPLIT_TRAIN, 7);
  for (size_t i = 0; i < d.size(); i++) EXPECT_EQ(d[i].prompt, a[i].prompt);
}

TEST(Tasks, SplitsNeverOverlap) {
  std::set<std::string> train;
  for (uint64_t seed : {1, 2, 3})
    for (const TaskItem& it : gen(3000, TASK_SPLIT_TRAIN, seed)) {
      EXPECT_EQ(task_split_of(it.task, it.prompt), TASK_SPLIT_TRAIN);
      train.insert(it.task + "\n" + it.prompt);
    }
  int eval_items = 0;
  for (uint64_t seed : {1, 2, 3, 4})
    for (const TaskItem& it : gen(500, TASK_SPLIT_EVAL, seed)) {
      EXPECT_EQ(task_split_of(it.task, it.prompt), TASK_SPLIT_EVAL);
      EXPECT_EQ(train.count(it.task + "\n" + it.prompt), 0u) << it.prompt;
      eval_items++;
    }
  EXPECT_EQ(eval_items, 2000);
}

TEST(Tasks, ItemsAreDistinctBalancedAndScoreOne) {
  auto v = gen(800, TASK_SPLIT_TRAIN, 11);
  std::set<std::string> prompts;
  std::map<std::string, int> per_family;
  for (const TaskItem& it : v) {
    EXPECT_TRUE(prompts.insert(it.prompt).second) << "duplicate: " << it.prompt;
    per_family[it.task]++;
    EXPECT_FALSE(it.prompt.empty());
    EXPECT_FALSE(it.response.empty());
    EXPECT_LT(it.prompt.size(), 160u) << it.prompt;
    EXPECT_LT(it.response.size(), 100u) << it.response;
    int jv = 0;
    EXPECT_EQ(score(it.task, it.response, it.response, &jv), 1.0) << it.task << ": " << it.response;
    EXPECT_EQ(jv, task_is_json(it.task) ? 1 : -1);
  }
  EXPECT_EQ(per_family.size(), task_families().size());
  for (auto& kv : per_family) EXPECT_EQ(kv.second, 100) << kv.first;
}

TEST(Tasks, FamilyFilter) {
  auto v = gen(30, TASK_SPLIT_EVAL, 5, {"sql", "python"});
  for (size_t i = 0; i < v.size(); i++) EXPECT_EQ(v[i].task, i % 2 == 0 ? "sql" : "python");
  TaskGenOptions o;
  o.families = {"nope"};
  std::vector<TaskItem> out;
  Status st = tasks_generate(o, &out);
  EXPECT_NE(st.msg.find("nope"), std::string::npos);
  EXPECT_NE(st.msg.find("json_object"), std::string::npos);  // lists the known ones
}

TEST(Tasks, ReferencesAreCorrect) {
  // Recompute the answer of each family from its prompt where it is mechanical.
  for (const TaskItem& it : gen(400, TASK_SPLIT_TRAIN, 3, {"arithmetic"})) {
    long long a = 0, b = 0;
    char op = 0;
    ASSERT_EQ(sscanf(it.prompt.c_str(), "What is %lld %c %lld?", &a, &op, &b), 3) << it.prompt;
    EXPECT_EQ(it.response, std::to_string(op == '+' ? a + b : a - b));
  }
  for (const TaskItem& it : gen(200, TASK_SPLIT_TRAIN, 3, {"json_list"})) {
    long long a = 0, b = 0;
    if (sscanf(it.prompt.c_str(), "Make a JSON list of the integers from %lld to %lld.", &a, &b) == 2) {
      std::string exp = "[";
      for (long long x = a; x <= b; x++) exp += (x > a ? ", " : "") + std::to_string(x);
      EXPECT_EQ(it.response, exp + "]");
    }
  }
}

TEST(Tasks, ExactMatchScorers) {
  EXPECT_EQ(score("arithmetic", "5198", "5198"), 1.0);
  EXPECT_EQ(score("arithmetic", "5198", "  5198\n"), 1.0);
  EXPECT_EQ(score("arithmetic", "5198", "5199"), 0.0);
  EXPECT_EQ(score("arithmetic", "-6", "6"), 0.0);
  EXPECT_EQ(score("sort", "3, 7, 19", "3,  7,\n19"), 1.0);
  EXPECT_EQ(score("sort", "3, 7, 19", "3, 19, 7"), 0.0);
  EXPECT_EQ(score("string_edit", "tenalp", "tenalp"), 1.0);
  EXPECT_EQ(score("string_edit", "tenalp", "TENALP"), 0.0);
  EXPECT_EQ(score("python", "def f(x):\n    return x + 3", "def f(x):\n  return x + 3\n"), 1.0);
  EXPECT_EQ(score("python", "def f(x):\n    return x + 3", "def f(x):\n    return x + 4"), 0.0);
  EXPECT_EQ(score("sql", "SELECT id FROM users WHERE age > 30;", "SELECT id  FROM users\nWHERE age > 30;"), 1.0);
  EXPECT_EQ(score("sql", "SELECT id FROM users WHERE age > 30;", "SELECT id FROM users WHERE age > 31;"), 0.0);
  EXPECT_EQ(score("key_lookup", "9", " 9 "), 1.0);
  EXPECT_EQ(score("key_lookup", "9", "9.0"), 1.0);  // same JSON value
  EXPECT_EQ(score("key_lookup", "\"red\"", "\"red\""), 1.0);
  EXPECT_EQ(score("key_lookup", "\"red\"", "\"blue\""), 0.0);
  EXPECT_EQ(score("key_lookup", "9", "8"), 0.0);
  int jv = 7;
  score("sql", "x", "y", &jv);
  EXPECT_EQ(jv, -1);
  TaskScore s;
  EXPECT_FALSE(task_score("poetry", "a", "a", &s).ok());
}

TEST(Tasks, JsonScorersCompareValuesAndReportValidity) {
  int jv = -5;
  const std::string ref = "{\"name\": \"Ana\", \"age\": 31, \"active\": true}";
  EXPECT_EQ(score("json_object", ref, ref, &jv), 1.0);
  EXPECT_EQ(jv, 1);
  // Key order and whitespace do not matter.
  EXPECT_EQ(score("json_object", ref, "{\"active\":true,\"age\":31,\n \"name\":\"Ana\"}", &jv), 1.0);
  EXPECT_EQ(jv, 1);
  // Valid JSON, wrong value: validity 1, score 0.
  EXPECT_EQ(score("json_object", ref, "{\"name\": \"Ana\", \"age\": 32, \"active\": true}", &jv), 0.0);
  EXPECT_EQ(jv, 1);
  // Missing key.
  EXPECT_EQ(score("json_object", ref, "{\"name\": \"Ana\", \"age\": 31}", &jv), 0.0);
  EXPECT_EQ(jv, 1);
  // Invalid JSON: validity 0, score 0.
  EXPECT_EQ(score("json_object", ref, "{\"name\": \"Ana\", \"age\": 31, \"active\": true", &jv), 0.0);
  EXPECT_EQ(jv, 0);
  EXPECT_EQ(score("json_object", ref, "", &jv), 0.0);
  EXPECT_EQ(jv, 0);
  // Lists: order matters, spacing does not.
  EXPECT_EQ(score("json_list", "[3, 4, 5]", "[3,4,5]", &jv), 1.0);
  EXPECT_EQ(jv, 1);
  EXPECT_EQ(score("json_list", "[3, 4, 5]", "[5, 4, 3]", &jv), 0.0);
  EXPECT_EQ(jv, 1);
  EXPECT_EQ(score("json_list", "[\"red\", \"fig\"]", "[red, fig]", &jv), 0.0);
  EXPECT_EQ(jv, 0);
  TaskScore s;
  EXPECT_FALSE(task_score("json_list", "not json", "[1]", &s).ok());
}

// Replies in the shapes chat models give (one per provider family seen in
// practice), scored on the answer inside them; bare answers are unchanged.
TEST(Tasks, ChatRepliesAreScoredOnTheirAnswer) {
  struct Case {
    const char* who;
    const char* task;
    const char* reference;
    const char* reply;
    double score;
    int json_valid;
    bool extracted;
  };
  const Case cases[] = {
      // OpenAI chat: a sentence around the number.
      {"openai", "arithmetic", "-6008", "The answer is -6008.", 1.0, -1, true},
      {"openai", "arithmetic", "-6008", "The answer is -6007.", 0.0, -1, true},
      // Anthropic: prose, a fenced JSON block, prose.
      {"anthropic", "json_object", "{\"count\": 44, \"active\": false}",
       "Here is the JSON object:\n\n```json\n{\n  \"count\": 44,\n  \"active\": false\n}\n```\n\nLet me know if you need "
       "anything else.",
       1.0, 1, true},
      // Gemini: a fenced block with a language tag only.
      {"gemini", "sql", "SELECT name, id FROM users WHERE age < 64;",
       "```sql\nSELECT name, id\nFROM users\nWHERE age < 64;\n```\n", 1.0, -1, true},
      {"gemini", "python", "def do_it(x):\n    return x > 30", "```python\ndef do_it(x):\n    return x > 30\n```", 1.0,
       -1, true},
      // llama.cpp / small local chat models: reasoning, then a final line.
      {"llamacpp", "sort", "17, 28, 57, 85", "Let me sort them: 17 is smallest...\nAnswer: 17, 28, 57, 85", 1.0, -1,
       true},
      {"llamacpp", "key_lookup", "\"black\"", "The value is found under \"e\".\nFinal answer: \"black\"", 1.0, -1, true},
      // vLLM completions: the bare answer with stray whitespace.
      {"vllm", "arithmetic", "359", " 359\n", 1.0, -1, false},
      {"vllm", "json_list", "[\"gray\", \"chair\", \"blue\"]", "[\"gray\", \"chair\", \"blue\"]", 1.0, 1, false},
      // One JSON value with prose around it, no fence.
      {"openai", "json_list", "[19, 20, 21]", "Sure! [19, 20, 21] is the list.", 1.0, 1, true},
      // Inline code.
      {"openai", "string_edit", "CHERRY", "`CHERRY`", 1.0, -1, true},
      // Broken JSON stays broken: no span between the first opener and the last closer parses.
      {"student", "json_object", "{\"a\": 1}", "{\"a\": 1}}", 0.0, 0, false},
      {"student", "json_object", "{\"a\": 1}", "{\"a\": 1", 0.0, 0, false},
  };
  for (const Case& c : cases) {
    TaskScore s;
    ASSERT_TRUE(task_score(c.task, c.reference, c.reply, &s).ok()) << c.who;
    EXPECT_EQ(s.score, c.score) << c.who << " " << c.task << ": " << c.reply << " -> " << s.answer;
    EXPECT_EQ(s.json_valid, c.json_valid) << c.who << " " << c.reply;
    EXPECT_EQ(s.extracted, c.extracted) << c.who << " " << c.reply << " -> " << s.answer;
  }
  // Every reference, given bare, is its own answer.
  for (const TaskItem& it : gen(400, TASK_SPLIT_TRAIN, 5)) {
    TaskScore s;
    ASSERT_TRUE(task_score(it.task, it.response, it.response, &s).ok());
    EXPECT_FALSE(s.extracted) << it.response;
    EXPECT_EQ(s.answer, it.response);
  }
}

TEST(Tasks, NormalizeWhitespace) {
  EXPECT_EQ(task_normalize_ws("  a \t b\n\nc  "), "a b c");
  EXPECT_EQ(task_normalize_ws(""), "");
  EXPECT_EQ(task_normalize_ws(" \n "), "");
}

TEST(Tasks, SplitNames) {
  TaskSplit s;
  EXPECT_TRUE(task_split_parse("train", &s).ok());
  EXPECT_EQ(s, TASK_SPLIT_TRAIN);
  EXPECT_TRUE(task_split_parse("eval", &s).ok());
  EXPECT_EQ(s, TASK_SPLIT_EVAL);
  EXPECT_FALSE(task_split_parse("dev2", &s).ok());
  EXPECT_STREQ(task_split_name(TASK_SPLIT_EVAL), "eval");
}

TEST(Tasks, JsonlRoundTrip) {
  std::string dir = bk_test::scratch_dir("tasks_jsonl");
  auto v = gen(40, TASK_SPLIT_EVAL, 9);
  ASSERT_TRUE(tasks_write_jsonl(dir + "/t.jsonl", v).ok());
  std::vector<TaskItem> back;
  ASSERT_TRUE(tasks_read_jsonl(dir + "/t.jsonl", &back).ok());
  ASSERT_EQ(back.size(), v.size());
  for (size_t i = 0; i < v.size(); i++) {
    EXPECT_EQ(back[i].prompt, v[i].prompt);
    EXPECT_EQ(back[i].response, v[i].response);
    EXPECT_EQ(back[i].task, v[i].task);
  }
  ASSERT_TRUE(write_file_atomic(dir + "/bad.jsonl", "{\"prompt\": \"a\"}\n\n{\"response\": \"x\"}\n").ok());
  Status st = tasks_read_jsonl(dir + "/bad.jsonl", &back);
  EXPECT_NE(st.msg.find("bad.jsonl:3"), std::string::npos) << st.msg;
  EXPECT_NE(st.msg.find("prompt"), std::string::npos);
  ASSERT_TRUE(write_file_atomic(dir + "/bad2.jsonl", "not json\n").ok());
  st = tasks_read_jsonl(dir + "/bad2.jsonl", &back);
  EXPECT_NE(st.msg.find("bad2.jsonl:1"), std::string::npos) << st.msg;
}
