// End to end against a real `bitkd serve` on a tiny model trained here:
// `bitkd teacher` (report, lock), `bitkd collect` (shards read back with the
// KD schema reader), faults injected in front of the real server, sharding,
// and a SIGKILL mid-run followed by a resume that must give the same rows as
// an uninterrupted run. Waits are on events (server output, inotify), never
// on the clock.
#include <fcntl.h>

#include <cmath>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/inotify.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "core/fs.h"
#include "data/kd_schema.h"
#include "kd/projection.h"
#include "kd/prompts.h"
#include "testutil/fault_server.h"
#include "testutil/testutil.h"
#include "tokenizer/tokenizer.h"

extern char** environ;

using bk_test::FaultAction;
using bk_test::FaultServer;
using json = nlohmann::json;

namespace {

const char* k_template = "<|user|>\n{prompt}\n\n<|assistant|>\n";

struct Shared {
  std::string dir, tok, ckpt_dir, ckpt, base_url, jsonl;
  int port = 0;
  pid_t serve_pid = -1;
  int serve_out = -1;
};
Shared g;

std::string q(const std::string& s) { return "'" + s + "'"; }

int bitkd(const std::string& args, std::string* out) {
  return bk_test::run_command(bk_test::bitkd_exe() + " " + args, out);
}

// Flags every run gets: no .env from the working directory, quiet logs.
std::string common(const std::string& artifacts) {
  return " --env-file= --log-level WARNING --artifacts " + q(artifacts);
}

pid_t spawn(const std::vector<std::string>& argv, const std::string& log_path, int stdout_fd, const char* extra_env) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (stdout_fd >= 0) posix_spawn_file_actions_adddup2(&fa, stdout_fd, 1);
  else posix_spawn_file_actions_addopen(&fa, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<char*> env;
  for (char** e = environ; *e; e++) env.push_back(*e);
  if (extra_env) env.push_back(const_cast<char*>(extra_env));
  env.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), env.data());
  posix_spawn_file_actions_destroy(&fa);
  return rc == 0 ? pid : -1;
}

struct Rows {
  // (prompt_idx, step_idx) -> (sample text, topk ids, valid, byte_offset)
  std::map<std::pair<int64_t, int32_t>, std::tuple<std::string, std::vector<int32_t>, bool, int32_t>> steps;
  std::map<int64_t, bk::KdPrompt> prompts;
  int64_t step_rows = 0, prompt_rows = 0;  // as read (duplicates would make these exceed the map sizes)
  std::vector<std::string> step_files, prompt_files;
  std::vector<bk::KdStep> all_steps;
};

// Reads every shard and prompt table in dir with the KD schema readers.
void read_rows(const std::string& dir, Rows* r) {
  *r = Rows();
  for (const std::string& n : bk::list_files(dir, "kd_shard_", ".parquet")) r->step_files.push_back(dir + "/" + n);
  for (const std::string& n : bk::list_files(dir, "kd_prompts_", ".parquet")) r->prompt_files.push_back(dir + "/" + n);
  for (const std::string& f : r->step_files) {
    bk::KdStepReader rd;
    bk::Status st = rd.open(f);
    ASSERT_TRUE(st.ok()) << st.msg;
    EXPECT_EQ(rd.meta().template_text, k_template);
    for (int rg = 0; rg < rd.num_row_groups(); rg++) {
      std::vector<bk::KdStep> rows;
      st = rd.read_row_group(rg, &rows);
      ASSERT_TRUE(st.ok()) << st.msg;
      for (bk::KdStep& s : rows) {
        r->step_rows++;
        r->steps[{s.prompt_idx, s.step_idx}] = {s.teacher_sample_text, s.topk_ids, s.valid, s.byte_offset};
        r->all_steps.push_back(std::move(s));
      }
    }
  }
  for (const std::string& f : r->prompt_files) {
    bk::KdPromptReader rd;
    bk::Status st = rd.open(f);
    ASSERT_TRUE(st.ok()) << st.msg;
    for (int rg = 0; rg < rd.num_row_groups(); rg++) {
      std::vector<bk::KdPrompt> rows;
      st = rd.read_row_group(rg, &rows);
      ASSERT_TRUE(st.ok()) << st.msg;
      for (bk::KdPrompt& p : rows) {
        r->prompt_rows++;
        r->prompts[p.prompt_idx] = p;
      }
    }
  }
}

// Every committed prompt has exactly its steps 0..n-1, offsets spell the
// response, and no step belongs to an uncommitted prompt.
void check_consistent(const Rows& r) {
  EXPECT_EQ(r.step_rows, (int64_t)r.steps.size()) << "duplicate step rows";
  EXPECT_EQ(r.prompt_rows, (int64_t)r.prompts.size()) << "duplicate prompt rows";
  std::map<int64_t, std::vector<const bk::KdStep*>> by_prompt;
  for (const bk::KdStep& s : r.all_steps) {
    EXPECT_TRUE(r.prompts.count(s.prompt_idx)) << "step of uncommitted prompt " << s.prompt_idx;
    by_prompt[s.prompt_idx].push_back(&s);
  }
  for (auto& it : r.prompts) {
    const bk::KdPrompt& p = it.second;
    auto& v = by_prompt[it.first];
    std::sort(v.begin(), v.end(), [](const bk::KdStep* a, const bk::KdStep* b) { return a->step_idx < b->step_idx; });
    EXPECT_EQ((int64_t)v.size(), (int64_t)p.completion_tokens) << "prompt " << it.first;
    std::string spelled;
    for (size_t k = 0; k < v.size(); k++) {
      EXPECT_EQ(v[k]->step_idx, (int32_t)k);
      EXPECT_EQ(v[k]->byte_offset, (int32_t)spelled.size());
      bk::TeacherCandidate c;
      c.text = v[k]->teacher_sample_text;
      spelled += bk::candidate_bytes(c);
      EXPECT_LE(v[k]->raw_topk_tokens.size(), 20u);
      EXPECT_LE(v[k]->topk_ids.size(), 20u);
    }
    // Steps are valid exactly up to where their bytes match the response text.
    size_t lcp = 0;
    while (lcp < spelled.size() && lcp < p.response_text.size() && spelled[lcp] == p.response_text[lcp]) lcp++;
    for (size_t k = 0; k < v.size(); k++) {
      size_t end = k + 1 < v.size() ? (size_t)v[k + 1]->byte_offset : spelled.size();
      if (end > lcp) {
        EXPECT_FALSE(v[k]->valid) << "prompt " << it.first << " step " << k;
      }
    }
  }
}

json read_json(const std::string& path) {
  std::string text;
  EXPECT_TRUE(bk::read_file(path, &text).ok()) << path;
  return json::parse(text, nullptr, false);
}

class Collect : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // ctest runs each test as its own process, possibly in parallel: one directory per process.
    g.dir = bk_test::scratch_dir("collect_e2e_" + std::to_string(getpid()));
    std::string out;
    std::string art = g.dir + "/setup";
    // Real commands: tokenizer, data, a tiny float teacher, then its server.
    ASSERT_EQ(bitkd("tokenizer train --tasks 1500 --vocab-size 400 --out " + q(g.dir + "/tok") + common(art), &out), 0)
        << out;
    g.tok = g.dir + "/tok.model";
    g.jsonl = g.dir + "/train.jsonl";
    ASSERT_EQ(bitkd("tasks --n 200 --out " + q(g.jsonl) + common(art), &out), 0) << out;
    g.ckpt_dir = g.dir + "/ckpt";
    ASSERT_EQ(bitkd("pretrain --data " + q(g.jsonl) + " --tokenizer " + q(g.tok) + " --out " + q(g.ckpt_dir) +
                        " --metrics " + q(g.dir + "/metrics.jsonl") +
                        " --dim 32 --layers 1 --heads 2 --head-dim 16 --weight-quant none --act-bits 0"
                        " --steps 6 --batch 2 --seq 128 --log-interval 100" +
                        common(art),
                    &out),
              0)
        << out;
    g.ckpt = g.ckpt_dir + "/mini_bitnet_step_6.safetensors";
    ASSERT_TRUE(bk::file_exists(g.ckpt)) << out;

    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    g.serve_pid = spawn({bk_test::bitkd_exe(), "serve", "--env-file=", "--model", g.ckpt, "--tokenizer", g.tok,
                         "--port", "0", "--workers", "8", "--threads", "1"},
                        g.dir + "/serve.log", fds[1], nullptr);
    close(fds[1]);
    ASSERT_GT(g.serve_pid, 0);
    g.serve_out = fds[0];
    // The server announces its port on stdout once it is ready.
    std::string line;
    char ch;
    while (read(g.serve_out, &ch, 1) == 1) {
      if (ch != '\n') {
        line += ch;
        continue;
      }
      size_t at = line.find("listening on http://127.0.0.1:");
      if (at != std::string::npos) {
        g.port = atoi(line.c_str() + at + strlen("listening on http://127.0.0.1:"));
        break;
      }
      line.clear();
    }
    ASSERT_GT(g.port, 0) << "bitkd serve did not start; see " << g.dir << "/serve.log";
    g.base_url = "http://127.0.0.1:" + std::to_string(g.port) + "/v1";
  }

  static void TearDownTestSuite() {
    if (g.serve_pid > 0) {
      kill(g.serve_pid, SIGTERM);
      int status = 0;
      waitpid(g.serve_pid, &status, 0);
    }
    if (g.serve_out >= 0) close(g.serve_out);
    // Kept for inspection when something failed.
    const ::testing::TestSuite* suite = ::testing::UnitTest::GetInstance()->current_test_suite();
    if (suite && suite->Passed()) {
      std::string out;
      bk_test::run_command("rm -rf " + q(g.dir), &out);
    }
  }

  // A collect command line against `url` into `data` (artifacts beside it).
  static std::string collect_args(const std::string& url, const std::string& data, int prompts,
                                  const std::string& extra = "") {
    return "collect --provider bitkd --base-url " + q(url) + " --tokenizer " + q(g.tok) + " --max-prompts " +
           std::to_string(prompts) + " --max-tokens 12 --top-logprobs 20 --concurrency 3 --out " + q(data) +
           " --stats " + q(data + "/stats.json") + " --template '<|user|>\\n{prompt}\\n\\n<|assistant|>\\n' " + extra +
           common(data + "_art");
  }
};

TEST_F(Collect, TeacherBaselineReportAndLock) {
  std::string art = g.dir + "/teacher";
  std::string out;
  std::string base = "teacher --provider bitkd --base-url " + q(g.base_url) + " --max-tokens 12 --teacher-checkpoint " +
                     q(g.ckpt) + common(art);
  ASSERT_EQ(bitkd(base + " --max-prompts 6", &out), 0) << out;
  json r = read_json(art + "/reports/teacher_baseline.json");
  ASSERT_TRUE(r.is_object());
  for (const char* k : {"timestamp", "provider", "model", "base_url", "template", "memory_teacher_constant",
                        "eval_config", "metrics", "results", "quality", "prompts_hash"})
    EXPECT_TRUE(r.contains(k)) << k;
  EXPECT_EQ(r["provider"], "bitkd");
  EXPECT_EQ(r["model"], "mini_bitnet_step_6");
  EXPECT_GT(r["memory_teacher_constant"].get<double>(), 0);
  EXPECT_LT(r["memory_teacher_constant"].get<double>(), 1e9);  // measured, not TEACHER_MEMORY_GB
  EXPECT_EQ(r["eval_config"]["total_prompts"], 6);
  EXPECT_EQ(r["eval_config"]["temperature"], 0.0);
  EXPECT_EQ(r["eval_config"]["max_tokens"], 12);
  for (const char* k : {"avg_decode_tps_8k", "total_prompts", "total_tokens", "total_latency_s", "latency_p50_s",
                        "latency_p95_s"})
    EXPECT_TRUE(r["metrics"].contains(k)) << k;
  ASSERT_EQ(r["results"].size(), 6u);
  int64_t tokens = 0;
  for (const json& e : r["results"]) {
    ASSERT_FALSE(e.contains("error")) << e.dump();
    for (const char* k : {"prompt_idx", "latency_s", "completion_tokens", "decode_tps", "response_preview", "response",
                          "task", "reference", "score"})
      EXPECT_TRUE(e.contains(k)) << k << " in " << e.dump();
    EXPECT_FALSE(e.contains("tokens_estimated"));  // bitkd serve reports usage
    tokens += e["completion_tokens"].get<int64_t>();
  }
  EXPECT_EQ(r["metrics"]["total_tokens"].get<int64_t>(), tokens);
  EXPECT_EQ(r["quality"]["scored_prompts"], 6);
  double qs = r["quality"]["score"].get<double>();
  EXPECT_GE(qs, 0.0);
  EXPECT_LE(qs, 1.0);
  EXPECT_TRUE(r["quality"]["per_task"].is_object());
  std::string hash6 = r["prompts_hash"];

  // Same prompts and model: rerun allowed. Another prompt set: refused, naming both hashes.
  ASSERT_EQ(bitkd(base + " --max-prompts 6", &out), 0) << out;
  EXPECT_NE(bitkd(base + " --max-prompts 5", &out), 0);
  EXPECT_NE(out.find("locked"), std::string::npos) << out;
  EXPECT_NE(out.find(hash6.substr(0, 16)), std::string::npos) << out;
  EXPECT_NE(out.find("--force"), std::string::npos) << out;
  EXPECT_EQ(read_json(art + "/reports/teacher_baseline.json")["prompts_hash"], hash6);
  ASSERT_EQ(bitkd(base + " --max-prompts 5 --force", &out), 0) << out;
  json r5 = read_json(art + "/reports/teacher_baseline.json");
  EXPECT_EQ(r5["results"].size(), 5u);
  EXPECT_NE(r5["prompts_hash"], hash6);
}

// The teacher scoring given texts: the reference answers (source reference)
// and a student's own answers (source on_policy; the teacher's checkpoint
// stands in for the student, it shares the tokenizer). Each row records its
// source and the task score of its text; the steps spell the scored text.
TEST_F(Collect, ScoresReferencesAndAStudentsAnswers) {
  for (const char* source : {"reference", "on_policy"}) {
    SCOPED_TRACE(source);
    const std::string data = g.dir + "/scored_" + source;
    std::string out;
    std::string extra = std::string("--api completions --source ") + source;
    if (std::string(source) == "on_policy") extra += " --student " + q(g.ckpt);
    ASSERT_EQ(bitkd(collect_args(g.base_url, data, 8, extra), &out), 0) << out;
    Rows r;
    read_rows(data, &r);
    ASSERT_EQ(r.prompts.size(), 8u);
    int64_t valid = 0;
    for (const auto& kv : r.prompts) {
      const bk::KdPrompt& p = kv.second;
      EXPECT_EQ(p.source, source);
      EXPECT_EQ(p.finish_reason, "stop");
      if (std::string(source) == "reference") {
        EXPECT_EQ(p.response_text, p.reference);
        EXPECT_EQ(p.score, 1.0) << "a reference scores itself perfectly";
      } else {
        EXPECT_TRUE(std::isfinite(p.score));
      }
          // The steps of this prompt spell its text from their byte offsets on.
      std::string spelled;
      int32_t first = -1;
      for (const auto& st : r.steps)
        if (st.first.first == p.prompt_idx) {
          if (first < 0) first = std::get<3>(st.second);
          spelled += std::get<0>(st.second);
          valid += std::get<2>(st.second);
        }
      if (p.response_text.empty()) continue;
      ASSERT_GE(first, 0) << "no step for prompt " << p.prompt_idx;
      // (A barely trained student's answers hold byte tokens, whose step text is an escape.)
      if (std::string(source) == "reference") {
        EXPECT_EQ(p.response_text.substr((size_t)first), spelled) << "prompt " << p.prompt_idx;
      }
    }
    EXPECT_GT(valid, 0);
  }
  // A chat-only API cannot score: refused before any request.
  std::string out;
  EXPECT_NE(bitkd(collect_args(g.base_url, g.dir + "/scored_chat", 2, "--api chat --provider openai --source reference"), &out),
            0);
}

TEST_F(Collect, CollectsReadableShardsAndResumes) {
  std::string data = g.dir + "/plain";
  std::string out;
  ASSERT_EQ(bitkd(collect_args(g.base_url, data, 10, "--flush-prompts 3"), &out), 0) << out;
  Rows r;
  read_rows(data, &r);
  ASSERT_EQ(r.step_files.size(), 1u);
  EXPECT_EQ(bk::path_basename(r.step_files[0]), "kd_shard_000.parquet");
  EXPECT_EQ(bk::path_basename(r.prompt_files[0]), "kd_prompts_000.parquet");
  EXPECT_EQ(r.prompts.size(), 10u);
  check_consistent(r);
  // Rows follow the prompt list whatever order the 3 concurrent requests
  // finished in, so a rerun trains on the same stream.
  for (size_t i = 1; i < r.all_steps.size(); i++)
    ASSERT_LE(r.all_steps[i - 1].prompt_idx, r.all_steps[i].prompt_idx) << "row " << i;
  bk::Tokenizer tok;
  ASSERT_TRUE(bk::tokenizer_load(g.tok, &tok).ok());
  int64_t valid = 0;
  for (const bk::KdStep& s : r.all_steps) {
    EXPECT_EQ(s.tokenizer_hash, bk::tokenizer_hash(tok));
    EXPECT_EQ(s.template_hash, bk::sha256_hex(k_template));
    if (!s.valid) continue;
    valid++;
    EXPECT_GE(s.teacher_sample_id, 0);
    ASSERT_FALSE(s.topk_ids.empty());
    for (int32_t id : s.topk_ids) EXPECT_LT(id, bk::tokenizer_vocab_size(tok));
  }
  EXPECT_GT(valid, 0);
  for (auto& it : r.prompts) {
    const bk::KdPrompt& p = it.second;
    EXPECT_FALSE(p.task.empty());
    EXPECT_FALSE(p.reference.empty());
    std::string rendered;
    ASSERT_TRUE(bk::template_render(k_template, p.prompt_text, &rendered).ok());
    EXPECT_EQ(p.rendered_prompt, rendered);
    EXPECT_EQ(p.provider, "bitkd");
    EXPECT_EQ(p.teacher_model, "mini_bitnet_step_6");
    EXPECT_GT(p.latency_ms, 0);
  }
  bk::KdStepReader rd;
  ASSERT_TRUE(rd.open(r.step_files[0]).ok());
  EXPECT_DOUBLE_EQ(rd.meta().teacher_temperature, 0.8);  // KD_TEACHER_TEMPERATURE default, recorded
  EXPECT_DOUBLE_EQ(rd.meta().teacher_top_p, 0.95);
  json stats = read_json(data + "/stats.json");
  EXPECT_EQ(stats["prompts"]["ok"], 10);
  EXPECT_EQ(stats["steps"]["total"].get<int64_t>(), (int64_t)r.all_steps.size());
  EXPECT_EQ(stats["steps"]["valid"].get<int64_t>(), valid);
  EXPECT_GT(stats["bytes_written"].get<int64_t>(), 0);
  EXPECT_GT(stats["steps"]["mean_topk_mass"].get<double>(), 0.0);

  // A rerun collects nothing new; a larger list collects only the new prompts.
  ASSERT_EQ(bitkd(collect_args(g.base_url, data, 10), &out), 0) << out;
  EXPECT_EQ(read_json(data + "/stats.json")["prompts"]["already_collected"], 10);
  Rows again;
  read_rows(data, &again);
  EXPECT_EQ(again.steps, r.steps);
  ASSERT_EQ(bitkd(collect_args(g.base_url, data, 14), &out), 0) << out;
  json s14 = read_json(data + "/stats.json");
  EXPECT_EQ(s14["prompts"]["already_collected"], 10);
  EXPECT_EQ(s14["prompts"]["ok"], 4);
  read_rows(data, &again);
  EXPECT_EQ(again.prompts.size(), 14u);
  check_consistent(again);
  for (auto& it : r.steps) EXPECT_EQ(again.steps.at(it.first), it.second);

  // Shard rotation by row count: a prompt's rows never straddle two shards.
  std::string rot = g.dir + "/rotate";
  ASSERT_EQ(bitkd(collect_args(g.base_url, rot, 8, "--shard-rows 20 --flush-prompts 100"), &out), 0) << out;
  Rows rr;
  read_rows(rot, &rr);
  EXPECT_GE(rr.step_files.size(), 3u);
  EXPECT_EQ(rr.step_files.size(), rr.prompt_files.size());
  check_consistent(rr);
  std::map<int64_t, std::set<std::string>> files_of_prompt;
  for (const std::string& f : rr.step_files) {
    bk::KdStepReader sr;
    ASSERT_TRUE(sr.open(f).ok());
    std::vector<bk::KdStep> rows;
    for (int rg = 0; rg < sr.num_row_groups(); rg++) {
      ASSERT_TRUE(sr.read_row_group(rg, &rows).ok());
      for (auto& s : rows) files_of_prompt[s.prompt_idx].insert(f);
    }
  }
  for (auto& it : files_of_prompt) EXPECT_EQ(it.second.size(), 1u) << "prompt " << it.first;
}

TEST_F(Collect, ShardsSplitPromptsDisjointly) {
  std::string data = g.dir + "/sharded";
  std::string out;
  ASSERT_EQ(bitkd(collect_args(g.base_url, data, 9, "--shard 0/2"), &out), 0) << out;
  ASSERT_EQ(bitkd(collect_args(g.base_url, data, 9, "--shard 1/2"), &out), 0) << out;
  Rows r;
  read_rows(data, &r);
  std::set<std::string> names;
  for (auto& f : r.step_files) names.insert(bk::path_basename(f));
  EXPECT_TRUE(names.count("kd_shard_0of2_000.parquet"));
  EXPECT_TRUE(names.count("kd_shard_1of2_000.parquet"));
  EXPECT_EQ(r.prompts.size(), 9u);  // disjoint halves: no duplicates, nothing missing
  EXPECT_EQ(r.prompt_rows, 9);
  check_consistent(r);
  for (const std::string& f : r.prompt_files) {
    bool odd = f.find("1of2") != std::string::npos;
    bk::KdPromptReader pr;
    ASSERT_TRUE(pr.open(f).ok());
    std::vector<bk::KdPrompt> rows;
    ASSERT_TRUE(pr.read_row_group(0, &rows).ok());
    for (auto& p : rows) EXPECT_EQ(p.prompt_idx % 2, odd ? 1 : 0);
  }
  // The same prompts unsharded give the same rows (seeded sampling per prompt).
  std::string whole = g.dir + "/unsharded";
  ASSERT_EQ(bitkd(collect_args(g.base_url, whole, 9), &out), 0) << out;
  Rows w;
  read_rows(whole, &w);
  EXPECT_EQ(w.steps, r.steps);
}

TEST_F(Collect, FaultsAreRetriedSkippedAndCounted) {
  // Prompts: the task suite's first 12 train items, one of them poisoned.
  std::string dir = g.dir + "/faults";
  ASSERT_TRUE(bk::make_dirs(dir).ok());
  bk::PromptSource src;
  src.max_prompts = 12;
  std::vector<bk::PromptItem> items;
  ASSERT_TRUE(bk::prompts_load(src, &items, nullptr).ok());
  std::string lines;
  for (auto& it : items) lines += (it.idx == 5 ? std::string("POISON: this prompt always fails") : it.prompt) + "\n";
  ASSERT_TRUE(bk::write_file_atomic(dir + "/prompts.txt", lines).ok());

  FaultServer fs;
  fs.upstream_host = "127.0.0.1";
  fs.upstream_port = g.port;
  // Per prompt (the request body is unique per prompt: its seed), decided by
  // the order prompts first arrive: the i-th prompt's first attempt fails with
  // fault i % 4, every other prompt's second attempt too, later attempts pass.
  // (Called under the server's lock.)
  std::map<std::string, std::pair<int, int>> seen;  // body -> (arrival order, attempts)
  auto fault = [](int kind) {
    switch (kind) {
      case 0: return FaultAction::error(429, R"({"error":{"message":"slow down"}})", "0");
      case 1: return FaultAction::error(500, R"({"error":{"message":"boom"}})");
      case 2: return FaultAction::drop();
      default: return FaultAction::malformed();
    }
  };
  fs.rule = [&seen, fault](int, const std::string& body) {
    if (body.find("POISON") != std::string::npos)
      return FaultAction::error(503, R"({"error":{"message":"poisoned upstream"}})");
    auto it = seen.find(body);
    if (it == seen.end()) it = seen.emplace(body, std::make_pair((int)seen.size(), 0)).first;
    int order = it->second.first, attempt = ++it->second.second;
    if (attempt == 1) return fault(order % 4);
    if (attempt == 2 && order % 2 == 0) return fault((order + 1) % 4);
    return FaultAction::pass();
  };
  fs.start();
  std::string out;
  std::string data = dir + "/data";
  std::string args = collect_args(fs.base_url(), data, 0, "--prompts " + q(dir + "/prompts.txt") + " --retries 6");
  ASSERT_EQ(bk_test::run_command("TEACHER_BACKOFF_S=0.001 " + bk_test::bitkd_exe() + " " + args, &out), 0) << out;
  json st = read_json(data + "/stats.json");
  EXPECT_EQ(st["prompts"]["ok"], 11) << st.dump(2);
  EXPECT_EQ(st["prompts"]["failed"], 1);
  EXPECT_EQ(st["prompts"]["failed_by_kind"]["http_5xx"], 1);
  EXPECT_GT(st["requests"]["http_429"].get<int>(), 0);
  EXPECT_GT(st["requests"]["http_5xx"].get<int>(), 0);
  EXPECT_GT(st["requests"]["connection_errors"].get<int>(), 0);
  EXPECT_GT(st["requests"]["malformed"].get<int>(), 0);
  EXPECT_EQ(st["requests"]["sent"].get<int>(), fs.post_count() + 1);  // + GET /v1/models (model discovery)
  Rows r;
  read_rows(data, &r);
  EXPECT_EQ(r.prompts.size(), 11u);
  EXPECT_FALSE(r.prompts.count(5));
  check_consistent(r);

  // The same prompts without faults give exactly these rows (plus the poisoned one).
  fs.rule = nullptr;
  std::string clean = dir + "/clean";
  ASSERT_EQ(bitkd(collect_args(g.base_url, clean, 0, "--prompts " + q(dir + "/prompts.txt")), &out), 0) << out;
  Rows c;
  read_rows(clean, &c);
  EXPECT_EQ(c.prompts.size(), 12u);
  for (auto& it : c.steps)
    if (it.first.first != 5) {
      EXPECT_EQ(r.steps.at(it.first), it.second);
    }

  // A rerun of the faulty collection retries only the failed prompt.
  fs.rule = [](int, const std::string&) { return FaultAction::pass(); };
  ASSERT_EQ(bitkd(args, &out), 0) << out;
  json st2 = read_json(data + "/stats.json");
  EXPECT_EQ(st2["prompts"]["already_collected"], 11);
  EXPECT_EQ(st2["prompts"]["ok"], 1);
  read_rows(data, &r);
  EXPECT_EQ(r.steps, c.steps);
  check_consistent(r);
}

TEST_F(Collect, FatalErrorsStopAtOnceAndKeyNeverLeaks) {
  const std::string key = "sk-collect-Hq4Tz81LmVwQ3x";
  FaultServer fs;
  fs.rule = [&key](int, const std::string&) {
    return FaultAction::error(401, std::string(R"({"error":{"message":"Incorrect API key provided: )") + key + "\"}}");
  };
  fs.start();
  std::string data = g.dir + "/fatal";
  std::string out;
  int rc = bk_test::run_command("TEACHER_API_KEY=" + key + " " + bk_test::bitkd_exe() + " " +
                                    collect_args(fs.base_url(), data, 20, "--concurrency 1"),
                                &out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("HTTP 401"), std::string::npos) << out;
  EXPECT_EQ(out.find(key), std::string::npos) << out;
  EXPECT_LE(fs.post_count(), 2);  // stopped at once, not 20 prompts x retries
  std::string stats;
  ASSERT_TRUE(bk::read_file(data + "/stats.json", &stats).ok());
  EXPECT_EQ(stats.find(key), std::string::npos);
  EXPECT_NE(stats.find("\"aborted\": true"), std::string::npos) << stats;

  // Providers without logprobs are refused before any request.
  FaultServer none;
  none.start();
  for (const char* p : {"anthropic", "groq"}) {
    rc = bk_test::run_command("TEACHER_API_KEY=" + key + " " + bk_test::bitkd_exe() + " collect --provider " + p +
                                  " --model x --base-url " + q(none.base_url()) + " --tokenizer " + q(g.tok) +
                                  " --out " + q(g.dir + "/none") + common(g.dir + "/none_art"),
                              &out);
    EXPECT_EQ(rc, 1);
    EXPECT_NE(out.find("cannot produce KD traces"), std::string::npos) << out;
    EXPECT_EQ(out.find(key), std::string::npos) << out;
  }
  EXPECT_EQ(none.post_count(), 0);
  EXPECT_TRUE(bk::list_files(g.dir + "/none", "kd_", ".parquet").empty());
}

TEST_F(Collect, KilledCollectorResumesToTheSameRows) {
  const int n = 40;
  std::string data = g.dir + "/killed";
  std::string out;
  ASSERT_TRUE(bk::make_dirs(data).ok());
  int ino = inotify_init1(IN_CLOEXEC);
  ASSERT_GE(ino, 0);
  ASSERT_GE(inotify_add_watch(ino, data.c_str(), IN_MOVED_TO), 0);
  // In front of the real server: requests after the 8th are held on the fault
  // server's condition variable, so the collector is mid-run when killed.
  FaultServer fs;
  fs.upstream_host = "127.0.0.1";
  fs.upstream_port = g.port;
  fs.gate = [&fs](int k) {
    if (k <= 8) return;
    std::unique_lock<std::mutex> lk(fs.mu);
    fs.cv.wait(lk, [&] { return fs.released; });
  };
  fs.start();
  std::vector<std::string> argv = {bk_test::bitkd_exe(), "collect", "--provider", "bitkd", "--base-url", fs.base_url(),
                                   "--tokenizer", g.tok, "--max-prompts", std::to_string(n), "--max-tokens", "12",
                                   "--concurrency", "2", "--flush-prompts", "2", "--out", data, "--stats",
                                   data + "/stats.json", "--template", "<|user|>\\n{prompt}\\n\\n<|assistant|>\\n",
                                   "--env-file=", "--log-level", "WARNING", "--artifacts", data + "_art"};
  pid_t pid = spawn(argv, g.dir + "/killed.log", -1, nullptr);
  ASSERT_GT(pid, 0);
  // Kill it once a commit holds at least 6 prompts: detected from the files (inotify), not by time.
  bool killed = false, exited = false;
  int status = 0;
  std::string prompts_file = data + "/kd_prompts_000.parquet";
  while (!killed && !exited) {
    struct pollfd pfd = {ino, POLLIN, 0};
    int pr = poll(&pfd, 1, 1000);  // wakes on an event; the timeout only rechecks the child
    if (pr > 0) {
      char buf[4096];
      ssize_t len = read(ino, buf, sizeof buf);
      (void)len;
      if (bk::file_exists(prompts_file)) {
        bk::KdPromptReader rd;
        if (rd.open(prompts_file).ok() && rd.num_rows() >= 6) {
          kill(pid, SIGKILL);
          killed = true;
        }
      }
    }
    if (!killed && waitpid(pid, &status, WNOHANG) == pid) exited = true;
  }
  close(ino);
  if (killed) waitpid(pid, &status, 0);
  fs.release();
  ASSERT_TRUE(killed && WIFSIGNALED(status)) << "the collector finished before it could be killed";
  Rows partial;
  read_rows(data, &partial);
  EXPECT_GE(partial.prompts.size(), 6u);
  EXPECT_LT(partial.prompts.size(), (size_t)n);

  // Resume, and compare with an uninterrupted run.
  ASSERT_EQ(bitkd(collect_args(g.base_url, data, n, "--concurrency 2 --flush-prompts 2"), &out), 0) << out;
  json st = read_json(data + "/stats.json");
  EXPECT_EQ(st["prompts"]["already_collected"].get<size_t>(), partial.prompts.size());
  Rows resumed;
  read_rows(data, &resumed);
  check_consistent(resumed);
  std::string clean = g.dir + "/uninterrupted";
  ASSERT_EQ(bitkd(collect_args(g.base_url, clean, n), &out), 0) << out;
  Rows whole;
  read_rows(clean, &whole);
  EXPECT_EQ(resumed.prompts.size(), (size_t)n);
  EXPECT_EQ(resumed.steps, whole.steps);
  for (auto& it : whole.prompts) EXPECT_EQ(resumed.prompts.at(it.first).response_text, it.second.response_text);
  EXPECT_TRUE(bk::list_files(data, "kd_", "").size() == resumed.step_files.size() + resumed.prompt_files.size())
      << "temp files left behind";
}

TEST_F(Collect, CrashBetweenStepAndPromptCommitIsRepaired) {
  // Collect 6 prompts, then fake the one crash window the design has: the
  // step file renamed, the prompt file not. One prompt loses its prompt row
  // but keeps its step rows.
  std::string data = g.dir + "/window";
  std::string out;
  ASSERT_EQ(bitkd(collect_args(g.base_url, data, 6), &out), 0) << out;
  Rows before;
  read_rows(data, &before);
  ASSERT_EQ(before.prompts.size(), 6u);
  int64_t victim = 0;
  for (auto& it : before.prompts)
    if (it.second.completion_tokens > before.prompts[victim].completion_tokens) victim = it.first;
  ASSERT_GT(before.prompts[victim].completion_tokens, 0);
  {
    std::string path = data + "/kd_prompts_000.parquet";
    bk::KdPromptReader rd;
    ASSERT_TRUE(rd.open(path).ok());
    bk::KdMeta meta = rd.meta();
    std::vector<bk::KdPrompt> rows;
    ASSERT_TRUE(rd.read_row_group(0, &rows).ok());
    bk::KdPromptWriter w;
    ASSERT_TRUE(w.open(path, meta).ok());
    for (auto& p : rows)
      if (p.prompt_idx != victim) {
        ASSERT_TRUE(w.append(p).ok());
      }
    ASSERT_TRUE(w.close().ok());
  }
  ASSERT_EQ(bitkd(collect_args(g.base_url, data, 6), &out), 0) << out;
  json st = read_json(data + "/stats.json");
  EXPECT_EQ(st["prompts"]["already_collected"], 5);
  EXPECT_EQ(st["prompts"]["ok"], 1);
  EXPECT_GT(st["orphan_rows_dropped"].get<int>(), 0);
  Rows after;
  read_rows(data, &after);
  check_consistent(after);
  EXPECT_EQ(after.steps, before.steps);  // collected again, its old rows gone, nothing doubled
}

}  // namespace
