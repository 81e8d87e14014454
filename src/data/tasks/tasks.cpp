#include "data/tasks/tasks.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "core/fs.h"
#include "core/rng.h"

namespace bk {

namespace {

using json = nlohmann::json;

// Pools are small enough that a 2-core teacher learns them, large enough that
// the eval split holds prompts the models never saw.
const char* k_names[] = {"Ana", "Ben", "Cleo", "Dan", "Eva", "Finn", "Gia", "Hugo", "Ivy", "Jack", "Kim", "Leo",
                         "Mia", "Nora", "Omar", "Pia", "Quinn", "Rosa", "Sam", "Tara", "Uma", "Vic", "Wes", "Zoe"};
const char* k_cities[] = {"Lima", "Oslo",   "Rome",   "Paris", "Tokyo", "Cairo", "Delhi",  "Quito",
                          "Berlin", "Madrid", "Dublin", "Seoul", "Lagos", "Perth", "Vienna", "Prague"};
const char* k_colors[] = {"red", "blue", "green", "black", "white", "pink",
                          "gray", "gold", "teal", "brown", "orange", "purple"};
const char* k_words[] = {"apple",  "banana", "cherry", "grape",  "lemon",  "mango",  "melon",  "olive",  "peach",
                         "pear",   "plum",   "kiwi",   "fig",    "lime",   "cat",    "dog",    "fox",    "owl",
                         "bear",   "wolf",   "lion",   "tiger",  "zebra",  "horse",  "mouse",  "eagle",  "shark",
                         "whale",  "snake",  "frog",   "duck",   "goat",   "sheep",  "camel",  "table",  "chair",
                         "lamp",   "book",   "phone",  "clock",  "spoon",  "plate",  "glass",  "bottle", "window",
                         "door",   "pencil", "paper",  "river",  "forest", "garden", "planet", "rocket", "ocean",
                         "island", "bridge", "castle", "market", "school", "music",  "dance",  "story",  "dream",
                         "cloud",  "storm",  "light",  "stone",  "sugar",  "honey",  "bread"};
const char* k_funcs[] = {"f",    "g",     "h",      "calc", "compute", "step",  "apply", "shift",
                         "bump", "scale", "adjust", "op",   "fn",      "solve", "work",  "run",
                         "move", "tweak", "mix",    "map1", "do_it",   "go",    "next",  "eval1"};

template <size_t N>
const char* pick(Rng* r, const char* (&pool)[N]) {
  return pool[rng_below(r, N)];
}
int64_t randint(Rng* r, int64_t lo, int64_t hi) { return lo + (int64_t)rng_below(r, (uint64_t)(hi - lo + 1)); }

// k distinct indices below n, in random order.
std::vector<int> distinct(Rng* r, int n, int k) {
  std::vector<int> idx(n);
  for (int i = 0; i < n; i++) idx[i] = i;
  for (int i = 0; i < k; i++) std::swap(idx[i], idx[i + (int)rng_below(r, (uint64_t)(n - i))]);
  idx.resize(k);
  return idx;
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); i++) s += (i ? sep : "") + v[i];
  return s;
}

// JSON text in one fixed style: ", " between items, ": " after keys, keys in
// insertion order. The reference answers are written in this style.
std::string quote(const std::string& s) { return "\"" + s + "\""; }

TaskItem gen_json_object(Rng* r) {
  struct Field {
    const char* key;
    int kind;  // 0 string (pool), 1 int range, 2 bool
  };
  static const Field fields[] = {{"name", 0}, {"age", 1}, {"city", 0},  {"color", 0}, {"id", 1},
                                 {"score", 1}, {"active", 2}, {"count", 1}, {"price", 1}};
  int k = (int)randint(r, 2, 4);
  std::vector<int> which = distinct(r, 9, k);
  std::vector<std::string> args, items;
  for (int w : which) {
    const Field& f = fields[w];
    std::string shown, value;
    if (f.kind == 0) {
      const char* v = !strcmp(f.key, "name") ? pick(r, k_names) : !strcmp(f.key, "city") ? pick(r, k_cities)
                                                                                          : pick(r, k_colors);
      shown = v;
      value = quote(v);
    } else if (f.kind == 1) {
      int64_t hi = !strcmp(f.key, "age") ? 90 : !strcmp(f.key, "count") ? 50 : 999;
      shown = value = std::to_string(randint(r, !strcmp(f.key, "age") ? 18 : 0, hi));
    } else {
      shown = value = rng_below(r, 2) ? "true" : "false";
    }
    args.push_back(std::string(f.key) + "=" + shown);
    items.push_back(quote(f.key) + ": " + value);
  }
  return {"json_object", "Make a JSON object with " + join(args, ", ") + ".", "{" + join(items, ", ") + "}"};
}

TaskItem gen_json_list(Rng* r) {
  int kind = (int)rng_below(r, 3);
  if (kind == 2) {
    int k = (int)randint(r, 2, 5);
    std::vector<std::string> shown, items;
    for (int i = 0; i < k; i++) {
      std::string w = rng_below(r, 3) == 0 ? pick(r, k_colors) : pick(r, k_words);
      shown.push_back(w);
      items.push_back(quote(w));
    }
    return {"json_list", "Make a JSON list of the words: " + join(shown, ", ") + ".", "[" + join(items, ", ") + "]"};
  }
  int64_t len = randint(r, 2, 8), a = randint(r, 0, 60);
  std::vector<std::string> items;
  if (kind == 0) {
    for (int64_t i = 0; i < len; i++) items.push_back(std::to_string(a + i));
    return {"json_list",
            "Make a JSON list of the integers from " + std::to_string(a) + " to " + std::to_string(a + len - 1) + ".",
            "[" + join(items, ", ") + "]"};
  }
  int64_t top = a + len - 1;
  for (int64_t i = 0; i < len; i++) items.push_back(std::to_string(top - i));
  return {"json_list",
          "Make a JSON list of the integers from " + std::to_string(top) + " down to " + std::to_string(a) + ".",
          "[" + join(items, ", ") + "]"};
}

TaskItem gen_key_lookup(Rng* r) {
  static const char* keys[] = {"a", "b", "c", "d", "e", "x", "y", "z", "id", "name", "color", "size"};
  int k = (int)randint(r, 2, 4);
  std::vector<int> which = distinct(r, 12, k);
  std::vector<std::string> items, values;
  for (int w : which) {
    std::string v = rng_below(r, 2) ? std::to_string(randint(r, 0, 99)) : quote(pick(r, k_colors));
    items.push_back(quote(keys[w]) + ": " + v);
    values.push_back(v);
  }
  int ask = (int)rng_below(r, (uint64_t)k);
  return {"key_lookup",
          "What is the value of " + quote(keys[which[ask]]) + " in {" + join(items, ", ") + "}?", values[ask]};
}

int64_t rand_operand(Rng* r) {
  int digits = (int)randint(r, 1, 4);
  int64_t lo = digits == 1 ? 0 : 1, hi = 9;
  for (int i = 1; i < digits; i++) lo *= 10, hi = hi * 10 + 9;
  if (digits > 1) lo = (hi + 1) / 10;
  return randint(r, lo, hi);
}

TaskItem gen_arithmetic(Rng* r) {
  int64_t a = rand_operand(r), b = rand_operand(r);
  bool add = rng_below(r, 2) == 0;
  return {"arithmetic", "What is " + std::to_string(a) + (add ? " + " : " - ") + std::to_string(b) + "?",
          std::to_string(add ? a + b : a - b)};
}

TaskItem gen_sort(Rng* r) {
  int kind = (int)rng_below(r, 3);
  int k = (int)randint(r, 3, 6);
  if (kind == 2) {
    std::vector<int> which = distinct(r, (int)(sizeof k_words / sizeof k_words[0]), k);
    std::vector<std::string> w;
    for (int i : which) w.push_back(k_words[i]);
    std::vector<std::string> sorted = w;
    std::sort(sorted.begin(), sorted.end());
    return {"sort", "Sort alphabetically: " + join(w, ", "), join(sorted, ", ")};
  }
  std::vector<int> which = distinct(r, 100, k);
  std::vector<int> sorted = which;
  if (kind == 0) std::sort(sorted.begin(), sorted.end());
  else std::sort(sorted.begin(), sorted.end(), std::greater<int>());
  std::vector<std::string> a, b;
  for (int v : which) a.push_back(std::to_string(v));
  for (int v : sorted) b.push_back(std::to_string(v));
  return {"sort", std::string(kind == 0 ? "Sort in ascending order: " : "Sort in descending order: ") + join(a, ", "),
          join(b, ", ")};
}

TaskItem gen_string_edit(Rng* r) {
  int kind = (int)rng_below(r, 4);
  std::string w = pick(r, k_words);
  switch (kind) {
    case 0: {
      std::string rev(w.rbegin(), w.rend());
      return {"string_edit", "Reverse the letters of " + quote(w) + ".", rev};
    }
    case 1: {
      std::string up = w;
      for (char& c : up) c = (char)toupper((unsigned char)c);
      return {"string_edit", "Write " + quote(w) + " in uppercase.", up};
    }
    case 2: {
      std::string up = w;
      for (char& c : up) c = (char)toupper((unsigned char)c);
      return {"string_edit", "Write " + quote(up) + " in lowercase.", w};
    }
    default: {
      int k = (int)randint(r, 2, 4);
      std::vector<std::string> words, rev;
      for (int i = 0; i < k; i++) words.push_back(i == 0 ? w : std::string(pick(r, k_words)));
      rev.assign(words.rbegin(), words.rend());
      return {"string_edit", "Reverse the order of the words in " + quote(join(words, " ")) + ".", join(rev, " ")};
    }
  }
}

TaskItem gen_python(Rng* r) {
  std::string name = pick(r, k_funcs);
  int kind = (int)rng_below(r, 4);
  if (kind == 0) {
    static const char* words[] = {"plus", "minus", "times"};
    static const char* ops[] = {"+", "-", "*"};
    int op = (int)rng_below(r, 3);
    std::string k = std::to_string(randint(r, 1, 99));
    return {"python", "Write a Python function " + name + "(x) that returns x " + words[op] + " " + k + ".",
            "def " + name + "(x):\n    return x " + ops[op] + " " + k};
  }
  if (kind == 1) {
    static const char* words[] = {"greater than", "less than", "equal to"};
    static const char* ops[] = {">", "<", "=="};
    int op = (int)rng_below(r, 3);
    std::string k = std::to_string(randint(r, 0, 99));
    return {"python", "Write a Python function " + name + "(x) that returns True if x is " + words[op] + " " + k + ".",
            "def " + name + "(x):\n    return x " + ops[op] + " " + k};
  }
  if (kind == 2) {
    static const char* words[] = {"the sum of", "the largest item of", "the smallest item of", "the length of",
                                  "a sorted copy of"};
    static const char* exprs[] = {"sum(xs)", "max(xs)", "min(xs)", "len(xs)", "sorted(xs)"};
    int op = (int)rng_below(r, 5);
    return {"python", "Write a Python function " + name + "(xs) that returns " + words[op] + " xs.",
            "def " + name + "(xs):\n    return " + exprs[op]};
  }
  static const char* words[] = {"in uppercase", "in lowercase", "reversed", "without surrounding spaces"};
  static const char* exprs[] = {"s.upper()", "s.lower()", "s[::-1]", "s.strip()"};
  int op = (int)rng_below(r, 4);
  return {"python", "Write a Python function " + name + "(s) that returns s " + words[op] + ".",
          "def " + name + "(s):\n    return " + exprs[op]};
}

TaskItem gen_sql(Rng* r) {
  struct Table {
    const char* name;
    const char* cols[4];
    const char* num[2];  // numeric columns for comparisons
  };
  static const Table tables[] = {{"users", {"id", "name", "age", "city"}, {"age", "id"}},
                                 {"orders", {"id", "user_id", "total", "status"}, {"total", "user_id"}},
                                 {"products", {"id", "name", "price", "stock"}, {"price", "stock"}},
                                 {"employees", {"id", "name", "salary", "dept"}, {"salary", "id"}}};
  const Table& t = tables[rng_below(r, 4)];
  int kind = (int)rng_below(r, 3);
  std::string col = t.num[rng_below(r, 2)];
  std::string k = col == "age" ? std::to_string(randint(r, 18, 80))
                               : std::to_string(randint(r, 1, 99) * (rng_below(r, 2) ? 10 : 1));
  if (kind == 0) {
    std::vector<int> which = distinct(r, 4, (int)randint(r, 1, 2));
    std::vector<std::string> cols;
    for (int i : which) cols.push_back(t.cols[i]);
    bool gt = rng_below(r, 2) == 0;
    std::string sel = join(cols, ", ");
    return {"sql",
            "Write a SQL query that selects " + sel + " from " + t.name + " where " + col + (gt ? " > " : " < ") + k +
                ".",
            "SELECT " + sel + " FROM " + t.name + " WHERE " + col + (gt ? " > " : " < ") + k + ";"};
  }
  if (kind == 1) {
    bool gt = rng_below(r, 2) == 0;
    return {"sql",
            std::string("Write a SQL query that counts the rows of ") + t.name + " where " + col +
                (gt ? " > " : " < ") + k + ".",
            std::string("SELECT COUNT(*) FROM ") + t.name + " WHERE " + col + (gt ? " > " : " < ") + k + ";"};
  }
  bool desc = rng_below(r, 2) == 0;
  std::string ocol = t.cols[rng_below(r, 4)];
  return {"sql",
          std::string("Write a SQL query that selects all columns of ") + t.name + " ordered by " + ocol +
              (desc ? " descending." : " ascending."),
          std::string("SELECT * FROM ") + t.name + " ORDER BY " + ocol + (desc ? " DESC;" : " ASC;")};
}

typedef TaskItem (*GenFn)(Rng*);
struct Family {
  const char* name;
  GenFn gen;
  bool is_json;
};
const Family k_families[] = {
    {"json_object", gen_json_object, true}, {"json_list", gen_json_list, true},  {"key_lookup", gen_key_lookup, false},
    {"arithmetic", gen_arithmetic, false},  {"sort", gen_sort, false},           {"string_edit", gen_string_edit, false},
    {"python", gen_python, false},          {"sql", gen_sql, false},
};

const Family* find_family(const std::string& name) {
  for (const Family& f : k_families)
    if (name == f.name) return &f;
  return nullptr;
}

uint64_t fnv1a64(const std::string& s, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// splitmix64's finalizer: spreads FNV's low bits before the modulo.
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

bool parse_json(const std::string& s, json* out) {
  *out = json::parse(s, nullptr, /*allow_exceptions=*/false);
  return !out->is_discarded();
}

}  // namespace

const std::vector<std::string>& task_families() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const Family& f : k_families) v.push_back(f.name);
    return v;
  }();
  return names;
}

bool task_is_family(const std::string& task) { return find_family(task) != nullptr; }
bool task_is_json(const std::string& task) {
  const Family* f = find_family(task);
  return f && f->is_json;
}

Status task_split_parse(const std::string& name, TaskSplit* out) {
  if (name == "train") *out = TASK_SPLIT_TRAIN;
  else if (name == "eval" || name == "test" || name == "heldout") *out = TASK_SPLIT_EVAL;
  else return errorf("unknown split '%s' (use train or eval)", name.c_str());
  return ok_status();
}

const char* task_split_name(TaskSplit s) { return s == TASK_SPLIT_EVAL ? "eval" : "train"; }

TaskSplit task_split_of(const std::string& task, const std::string& prompt) {
  uint64_t h = mix64(fnv1a64(prompt, fnv1a64(task + "\n")));
  return (int)(h % 100) < kTaskEvalPercent ? TASK_SPLIT_EVAL : TASK_SPLIT_TRAIN;
}

Status tasks_generate(const TaskGenOptions& opt, std::vector<TaskItem>* out) {
  out->clear();
  if (opt.n < 0) return errorf("tasks: item count %lld is negative", (long long)opt.n);
  std::vector<const Family*> fams;
  if (opt.families.empty()) {
    for (const Family& f : k_families) fams.push_back(&f);
  } else {
    for (const std::string& name : opt.families) {
      const Family* f = find_family(name);
      if (!f) {
        std::string all;
        for (const Family& g : k_families) all += std::string(all.empty() ? "" : ", ") + g.name;
        return errorf("tasks: unknown task family '%s' (known: %s)", name.c_str(), all.c_str());
      }
      fams.push_back(f);
    }
  }
  Rng r;
  rng_seed(&r, opt.seed);
  std::unordered_set<std::string> seen;
  out->reserve((size_t)opt.n);
  const int max_draws = 20000;
  for (int64_t i = 0; i < opt.n; i++) {
    const Family* f = fams[(size_t)(i % (int64_t)fams.size())];
    bool found = false;
    for (int d = 0; d < max_draws && !found; d++) {
      TaskItem it = f->gen(&r);
      if (task_split_of(it.task, it.prompt) != opt.split) continue;
      if (!seen.insert(it.task + "\n" + it.prompt).second) continue;
      out->push_back(std::move(it));
      found = true;
    }
    if (!found)
      return errorf("tasks: family %s has no new %s item after %d draws (%lld made); ask for fewer items", f->name,
                    task_split_name(opt.split), max_draws, (long long)i);
  }
  return ok_status();
}

std::string task_normalize_ws(const std::string& s) {
  std::string out;
  bool pending_space = false;
  for (unsigned char c : s) {
    if (isspace(c)) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back((char)c);
  }
  return out;
}

namespace {

std::string trim_ws(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && isspace((unsigned char)s[a])) a++;
  while (b > a && isspace((unsigned char)s[b - 1])) b--;
  return s.substr(a, b - a);
}

std::string lower_ascii(std::string s) {
  for (char& c : s) c = (char)tolower((unsigned char)c);
  return s;
}

}  // namespace

std::string task_extract_answer(const std::string& task, const std::string& response) {
  std::string s = response;
  const size_t fence = s.find("```");
  const size_t body = fence == std::string::npos ? std::string::npos : s.find('\n', fence + 3);
  const size_t close = body == std::string::npos ? std::string::npos : s.find("```", body + 1);
  if (close != std::string::npos) {
    s = s.substr(body + 1, close - body - 1);
  } else {
    static const char* const k_prefixes[] = {"final answer:", "answer:", "the answer is:", "the answer is"};
    std::string found;
    bool have = false;
    size_t at = 0;
    while (at <= s.size()) {
      size_t nl = s.find('\n', at);
      if (nl == std::string::npos) nl = s.size();
      const std::string line = trim_ws(s.substr(at, nl - at)), low = lower_ascii(line);
      for (const char* p : k_prefixes)
        if (low.compare(0, strlen(p), p) == 0) {
          found = line.substr(strlen(p));
          have = true;
          break;
        }
      at = nl + 1;
    }
    if (have) s = found;
  }
  s = trim_ws(s);
  json j;
  if (task_is_json(task) && !parse_json(s, &j)) {
    const size_t a = s.find_first_of("{["), b = s.find_last_of("}]");
    if (a != std::string::npos && b != std::string::npos && b > a && parse_json(s.substr(a, b - a + 1), &j))
      s = s.substr(a, b - a + 1);
  }
  if (s.size() >= 2 && s.front() == '`' && s.back() == '`' && s.find('`', 1) == s.size() - 1)
    s = trim_ws(s.substr(1, s.size() - 2));
  return s;
}

Status task_score(const std::string& task, const std::string& reference, const std::string& response,
                  TaskScore* out) {
  const Family* f = find_family(task);
  if (!f) return errorf("task_score: unknown task family '%s'", task.c_str());
  *out = TaskScore();
  out->answer = task_extract_answer(task, response);
  out->extracted = out->answer != trim_ws(response);
  const std::string& answer = out->answer;
  if (f->is_json) {
    json ref, got;
    if (!parse_json(reference, &ref))
      return errorf("task_score: the %s reference is not valid JSON: %s", task.c_str(), reference.c_str());
    bool valid = parse_json(answer, &got);
    out->json_valid = valid ? 1 : 0;
    // nlohmann compares objects as maps (key order irrelevant) and numbers by value.
    out->score = valid && got == ref ? 1.0 : 0.0;
    return ok_status();
  }
  std::string a = task_normalize_ws(reference), b = task_normalize_ws(answer);
  bool same = a == b || (b.size() == a.size() + 1 && b.back() == '.' && b.compare(0, a.size(), a) == 0);
  if (!same && task == "key_lookup") {
    // The answer is a JSON value: 7 and 7.0 are the same value.
    json ja, jb;
    same = parse_json(a, &ja) && parse_json(b, &jb) && ja == jb;
  }
  out->score = same ? 1.0 : 0.0;
  return ok_status();
}

std::string tasks_to_jsonl(const std::vector<TaskItem>& items) {
  std::string s;
  for (const TaskItem& it : items) {
    json j;
    j["prompt"] = it.prompt;
    j["response"] = it.response;
    j["task"] = it.task;
    s += j.dump() + "\n";
  }
  return s;
}

Status tasks_write_jsonl(const std::string& path, const std::vector<TaskItem>& items) {
  return write_file_atomic(path, tasks_to_jsonl(items));
}

Status tasks_read_jsonl(const std::string& path, std::vector<TaskItem>* items) {
  items->clear();
  std::string text;
  BK_TRY(read_file(path, &text));
  size_t pos = 0;
  int line_no = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    line_no++;
    if (task_normalize_ws(line).empty()) continue;
    json j;
    if (!parse_json(line, &j) || !j.is_object())
      return errorf("%s:%d: not a JSON object (expected {\"prompt\": ..., \"response\": ..., \"task\": ...})",
                    path.c_str(), line_no);
    TaskItem it;
    auto get = [&](const char* key, std::string* dst, bool required) -> Status {
      auto f = j.find(key);
      if (f == j.end() || f->is_null()) {
        if (required) return errorf("%s:%d: field \"%s\" is missing", path.c_str(), line_no, key);
        return ok_status();
      }
      if (!f->is_string()) return errorf("%s:%d: field \"%s\" is not a string", path.c_str(), line_no, key);
      *dst = f->get<std::string>();
      return ok_status();
    };
    BK_TRY(get("prompt", &it.prompt, true));
    BK_TRY(get("response", &it.response, false));
    BK_TRY(get("task", &it.task, false));
    items->push_back(std::move(it));
  }
  return ok_status();
}

}  // namespace bk
