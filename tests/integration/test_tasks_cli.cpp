// `bitkd tasks`, `bitkd tasks score` and `bitkd tokenizer ...` through the real binary.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>

#include "core/fs.h"
#include "data/tasks/tasks.h"
#include "testutil/testutil.h"

using namespace bk;

namespace {

int run(const std::string& args, std::string* out) {
  // --env-file none: a developer's .env must not change what the test sees.
  return bk_test::run_command(bk_test::bitkd_exe() + " " + args + " --env-file /nonexistent/.env", out);
}

std::vector<TaskItem> read_items(const std::string& path) {
  std::vector<TaskItem> v;
  Status st = tasks_read_jsonl(path, &v);
  EXPECT_TRUE(st.ok()) << st.msg;
  return v;
}

}  // namespace

TEST(TasksCli, ExportsDeterministicJsonl) {
  std::string dir = bk_test::scratch_dir("tasks_cli_export");
  std::string out;
  ASSERT_EQ(run("tasks --n 24 --split train --seed 3 --out " + dir + "/a.jsonl", &out), 0) << out;
  ASSERT_EQ(run("tasks --n 24 --split train --seed 3 --out " + dir + "/b.jsonl", &out), 0) << out;
  ASSERT_EQ(run("tasks --n 24 --split train --seed 4 --out " + dir + "/c.jsonl", &out), 0) << out;
  std::string a, b, c;
  ASSERT_TRUE(read_file(dir + "/a.jsonl", &a).ok());
  ASSERT_TRUE(read_file(dir + "/b.jsonl", &b).ok());
  ASSERT_TRUE(read_file(dir + "/c.jsonl", &c).ok());
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  // Exactly the three documented keys per line.
  size_t lines = 0, pos = 0;
  while (pos < a.size()) {
    size_t nl = a.find('\n', pos);
    nlohmann::json j = nlohmann::json::parse(a.substr(pos, nl - pos));
    EXPECT_EQ(j.size(), 3u);
    EXPECT_TRUE(j["prompt"].is_string());
    EXPECT_TRUE(j["response"].is_string());
    EXPECT_TRUE(task_is_family(j["task"].get<std::string>()));
    pos = nl + 1;
    lines++;
  }
  EXPECT_EQ(lines, 24u);
  // Same items as the library generates.
  TaskGenOptions g;
  g.n = 24;
  g.seed = 3;
  std::vector<TaskItem> lib;
  ASSERT_TRUE(tasks_generate(g, &lib).ok());
  EXPECT_EQ(a, tasks_to_jsonl(lib));
  // SEED from the environment is honoured the same way as --seed.
  ASSERT_EQ(bk_test::run_command("SEED=3 " + bk_test::bitkd_exe() + " tasks --n 24 --env-file /nonexistent/.env", &out),
            0);
  EXPECT_EQ(out, a);
}

TEST(TasksCli, TrainAndEvalDoNotOverlap) {
  std::string dir = bk_test::scratch_dir("tasks_cli_split");
  std::string out;
  ASSERT_EQ(run("tasks --n 2000 --split train --seed 1 --out " + dir + "/train.jsonl", &out), 0) << out;
  ASSERT_EQ(run("tasks --n 300 --split eval --seed 1 --out " + dir + "/eval.jsonl", &out), 0) << out;
  std::set<std::string> train;
  for (const TaskItem& it : read_items(dir + "/train.jsonl")) train.insert(it.prompt);
  auto eval = read_items(dir + "/eval.jsonl");
  ASSERT_EQ(eval.size(), 300u);
  for (const TaskItem& it : eval) EXPECT_EQ(train.count(it.prompt), 0u) << it.prompt;
}

// A validation split carved from the train split: the train file is what
// --n alone gives, the validation items are the next ones, disjoint from it.
TEST(TasksCli, ValidationItemsAreCarvedFromTheSplit) {
  std::string dir = bk_test::scratch_dir("tasks_cli_val");
  std::string out;
  ASSERT_EQ(run("tasks --n 40 --split train --seed 2 --out " + dir + "/plain.jsonl", &out), 0) << out;
  ASSERT_EQ(run("tasks --n 40 --split train --seed 2 --out " + dir + "/train.jsonl --val-n 10 --val-out " + dir +
                    "/val.jsonl",
                &out),
            0)
      << out;
  ASSERT_EQ(run("tasks --n 50 --split train --seed 2 --out " + dir + "/all.jsonl", &out), 0) << out;
  std::string plain, train;
  ASSERT_TRUE(read_file(dir + "/plain.jsonl", &plain).ok());
  ASSERT_TRUE(read_file(dir + "/train.jsonl", &train).ok());
  EXPECT_EQ(train, plain);
  auto all = read_items(dir + "/all.jsonl"), val = read_items(dir + "/val.jsonl");
  ASSERT_EQ(val.size(), 10u);
  std::set<std::string> tr;
  for (const TaskItem& it : read_items(dir + "/train.jsonl")) tr.insert(it.prompt);
  for (size_t i = 0; i < val.size(); i++) {
    EXPECT_EQ(val[i].prompt, all[40 + i].prompt);
    EXPECT_EQ(tr.count(val[i].prompt), 0u) << val[i].prompt;
  }
  EXPECT_NE(run("tasks --n 40 --val-n 5 --out " + dir + "/x.jsonl", &out), 0) << "--val-n without --val-out";
}

TEST(TasksCli, FamiliesAndErrors) {
  std::string out;
  ASSERT_EQ(run("tasks --n 5 --families sql", &out), 0) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 5);
  EXPECT_EQ(out.find("\"task\":\"python\""), std::string::npos);
  EXPECT_NE(run("tasks --split dev", &out), 0);
  EXPECT_NE(out.find("unknown split"), std::string::npos) << out;
  EXPECT_NE(run("tasks --families poetry", &out), 0);
  EXPECT_NE(out.find("poetry"), std::string::npos) << out;
  EXPECT_NE(run("tasks --n many", &out), 0);
  ASSERT_EQ(run("tasks --help", &out), 0);
  EXPECT_NE(out.find("json_object"), std::string::npos);
}

TEST(TasksCli, ScoresOutputs) {
  std::string dir = bk_test::scratch_dir("tasks_cli_score");
  std::string out;
  ASSERT_EQ(run("tasks --n 16 --split eval --seed 2 --out " + dir + "/eval.jsonl", &out), 0) << out;
  auto items = read_items(dir + "/eval.jsonl");
  std::string lines;
  int json_items = 0;
  for (size_t i = 0; i < items.size(); i++) {
    nlohmann::json j;
    j["task"] = items[i].task;
    j["response"] = items[i].response;
    // Even items answered right, odd items wrong (and, for JSON, invalid).
    j["output"] = i % 2 == 0 ? items[i].response : std::string("{not json");
    json_items += task_is_json(items[i].task);
    lines += j.dump() + "\n";
  }
  ASSERT_TRUE(write_file_atomic(dir + "/scored.jsonl", lines).ok());
  ASSERT_EQ(run("tasks score --in " + dir + "/scored.jsonl --out " + dir + "/summary.json", &out), 0) << out;
  std::string summary;
  ASSERT_TRUE(read_file(dir + "/summary.json", &summary).ok());
  nlohmann::json s = nlohmann::json::parse(summary);
  EXPECT_EQ(s["n"].get<int>(), 16);
  EXPECT_DOUBLE_EQ(s["accuracy"].get<double>(), 0.5);
  ASSERT_GT(json_items, 0);
  EXPECT_DOUBLE_EQ(s["json_valid_rate"].get<double>(), 0.5);
  EXPECT_EQ(s["per_task"].size(), task_families().size());
  ASSERT_TRUE(write_file_atomic(dir + "/bad.jsonl", "{\"task\": \"sql\"}\n").ok());
  EXPECT_NE(run("tasks score --in " + dir + "/bad.jsonl", &out), 0);
  EXPECT_NE(out.find("bad.jsonl:1"), std::string::npos) << out;
}

TEST(TokenizerCli, TrainEncodeDecode) {
  std::string dir = bk_test::scratch_dir("tokenizer_cli");
  std::string out;
  ASSERT_EQ(run("tokenizer train --tasks 1500 --vocab-size 500 --out " + dir + "/tok", &out), 0) << out;
  ASSERT_TRUE(file_exists(dir + "/tok.model"));
  ASSERT_TRUE(file_exists(dir + "/tok.vocab"));
  EXPECT_NE(out.find("\"vocab_size\": 500"), std::string::npos) << out;
  std::string first;
  ASSERT_TRUE(read_file(dir + "/tok.model", &first).ok());
  // Deterministic: training again gives the same bytes.
  ASSERT_EQ(run("tokenizer train --tasks 1500 --vocab-size 500 --out " + dir + "/tok2.model", &out), 0) << out;
  std::string second;
  ASSERT_TRUE(read_file(dir + "/tok2.model", &second).ok());
  EXPECT_EQ(first, second);
  ASSERT_EQ(run("tokenizer encode --model " + dir + "/tok.model --text '<|user|>'", &out), 0) << out;
  EXPECT_NE(out.find("<|user|>"), std::string::npos) << out;
  ASSERT_EQ(run("tokenizer encode --model " + dir + "/tok.model --continuation --text ' return'", &out), 0) << out;
  std::string ids = out.substr(0, out.find('\n'));
  ASSERT_EQ(run("tokenizer decode --model " + dir + "/tok.model --ids '" + ids + "'", &out), 0) << out;
  EXPECT_EQ(out, "return\n");  // decoding drops the leading space of the first piece
  EXPECT_NE(run("tokenizer encode --model " + dir + "/missing.model --text x", &out), 0);
  EXPECT_NE(out.find("missing.model"), std::string::npos);
  EXPECT_NE(run("tokenizer train --tasks 100 --model-type word --out " + dir + "/w", &out), 0);
}
