// bitkd tasks: export the synthetic task suite; bitkd tasks score: score outputs.
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "core/fs.h"
#include "data/tasks/tasks.h"

namespace bk {

namespace {

using json = nlohmann::json;

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t c = s.find(',', pos);
    if (c == std::string::npos) c = s.size();
    std::string part = task_normalize_ws(s.substr(pos, c - pos));
    if (!part.empty()) out.push_back(part);
    pos = c + 1;
  }
  return out;
}

int run_tasks(Args& a) {
  TaskGenOptions g;
  long long n = 0, seed = 0;
  if (!arg_int_or_report(a, "n", &n) || !arg_int_or_report(a, "SEED", &seed)) return 1;
  g.n = n;
  g.seed = (uint64_t)seed;
  Status st = task_split_parse(arg_str(a, "split"), &g.split);
  if (!st.ok()) return cli_fail(a, st);
  g.families = split_list(arg_str(a, "families"));
  long long val_n = 0;
  if (!arg_int_or_report(a, "val-n", &val_n)) return 1;
  const std::string val_out = arg_str(a, "val-out");
  if (val_n < 0 || (val_n > 0) != !val_out.empty())
    return cli_fail(a, errorf("--val-n and --val-out go together (--val-n >= 1)"));
  // A validation split: val_n more items of the same split, after the n
  // others, so the two are disjoint and the first n are what --n alone gives.
  g.n += val_n;
  std::vector<TaskItem> items;
  st = tasks_generate(g, &items);
  if (!st.ok()) return cli_fail(a, st);
  if (val_n > 0) {
    std::vector<TaskItem> val(items.end() - val_n, items.end());
    items.resize(items.size() - val_n);
    st = tasks_write_jsonl(val_out, val);
    if (!st.ok()) return cli_fail(a, st);
    fprintf(stderr, "wrote %zu validation items to %s\n", val.size(), val_out.c_str());
  }
  std::string out = arg_str(a, "out");
  if (out.empty() || out == "-") {
    std::string s = tasks_to_jsonl(items);
    fwrite(s.data(), 1, s.size(), stdout);
    return 0;
  }
  std::string dir = path_dirname(out);
  if (!dir.empty() && dir != ".") {
    st = make_dirs(dir);
    if (!st.ok()) return cli_fail(a, st);
  }
  st = tasks_write_jsonl(out, items);
  if (!st.ok()) return cli_fail(a, st);
  fprintf(stderr, "wrote %zu %s items to %s\n", items.size(), task_split_name(g.split), out.c_str());
  return 0;
}

struct Tally {
  int64_t n = 0, json_n = 0;
  double score = 0, json_valid = 0;
};

json tally_json(const Tally& t) {
  json j;
  j["n"] = t.n;
  j["accuracy"] = t.n ? t.score / (double)t.n : 0.0;
  if (t.json_n) j["json_valid_rate"] = t.json_valid / (double)t.json_n;
  return j;
}

int run_score(Args& a) {
  std::string in = arg_str(a, "in");
  if (in.empty()) return cli_fail(a, errorf("give the JSONL file to score with --in"));
  std::string text;
  Status st = read_file(in, &text);
  if (!st.ok()) return cli_fail(a, st);
  std::string out_field = arg_str(a, "output-field");
  Tally all;
  std::map<std::string, Tally> per;
  size_t pos = 0;
  int line_no = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    line_no++;
    if (task_normalize_ws(line).empty()) continue;
    json j = json::parse(line, nullptr, false);
    auto str = [&](const char* k) -> const json* {
      if (!j.is_object()) return nullptr;
      auto f = j.find(k);
      return f != j.end() && f->is_string() ? &*f : nullptr;
    };
    const json *task = str("task"), *ref = str("response"), *got = str(out_field.c_str());
    if (!task || !ref || !got)
      return cli_fail(a, errorf("%s:%d: need string fields \"task\", \"response\" (the reference) and \"%s\"",
                                in.c_str(), line_no, out_field.c_str()));
    TaskScore s;
    st = task_score(task->get<std::string>(), ref->get<std::string>(), got->get<std::string>(), &s);
    if (!st.ok()) return cli_fail(a, with_context(st, in + ":" + std::to_string(line_no)));
    for (Tally* t : {&all, &per[task->get<std::string>()]}) {
      t->n++;
      t->score += s.score;
      if (s.json_valid >= 0) t->json_n++, t->json_valid += s.json_valid;
    }
  }
  json r = tally_json(all);
  for (auto& kv : per) r["per_task"][kv.first] = tally_json(kv.second);
  std::string s = r.dump(2) + "\n";
  std::string out = arg_str(a, "out");
  if (!out.empty()) {
    st = write_file_atomic(out, s);
    if (!st.ok()) return cli_fail(a, st);
  }
  fwrite(s.data(), 1, s.size(), stdout);
  return 0;
}

}  // namespace

const Command& command_tasks() {
  static const Command c = {
      "tasks",
      "Export the built-in synthetic task suite as JSONL ({\"prompt\",\"response\",\"task\"})",
      "Families: json_object, json_list, key_lookup, arithmetic, sort, string_edit, python, sql.\n"
      "Deterministic for a seed. An item's split is a hash of its prompt, so train and eval\n"
      "never share a prompt, whatever the seeds.",
      {
          {"n", nullptr, "100", "Number of items"},
          {"split", nullptr, "train", "train or eval"},
          {"families", nullptr, "", "Comma-separated families (default: all, round robin)"},
          {"out", nullptr, "-", "Output JSONL file (- for stdout)"},
          {"val-n", nullptr, "0", "Also this many more items of the split, disjoint from the others, into --val-out"},
          {"val-out", nullptr, "", "The validation items' JSONL file (with --val-n)"},
      },
      run_tasks,
  };
  return c;
}

const Command& command_tasks_score() {
  static const Command c = {
      "tasks score",
      "Score model outputs against task-suite references (accuracy, JSON validity)",
      "Reads JSONL lines with \"task\", \"response\" (the reference) and the output field;\n"
      "prints accuracy and JSON validity overall and per family as JSON.",
      {
          {"in", nullptr, "", "JSONL file to score"},
          {"output-field", nullptr, "output", "Field holding the model's answer"},
          {"out", nullptr, "", "Also write the summary to this file"},
      },
      run_score,
  };
  return c;
}

}  // namespace bk
