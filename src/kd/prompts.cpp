#include "kd/prompts.h"

#include <cstring>

#include "core/fs.h"
#include "tokenizer/tokenizer.h"

namespace bk {

static bool ends_with(const std::string& s, const char* suf) {
  size_t n = strlen(suf);
  return s.size() >= n && s.compare(s.size() - n, n, suf) == 0;
}

Status prompts_load(const PromptSource& src, std::vector<PromptItem>* out, std::string* description) {
  out->clear();
  if (src.max_prompts < 0) return errorf("prompt count %lld is negative", (long long)src.max_prompts);
  if (!src.file.empty()) {
    if (!file_exists(src.file)) return errorf("prompts file %s does not exist", src.file.c_str());
    if (ends_with(src.file, ".jsonl") || ends_with(src.file, ".json")) {
      std::vector<TaskItem> items;
      BK_TRY(tasks_read_jsonl(src.file, &items));
      for (const TaskItem& it : items) {
        if (src.max_prompts > 0 && (int64_t)out->size() >= src.max_prompts) break;
        PromptItem p;
        p.idx = (int64_t)out->size();
        p.prompt = it.prompt;
        p.task = it.task;
        p.reference = it.response;
        out->push_back(std::move(p));
      }
    } else {
      std::string text;
      BK_TRY(read_file(src.file, &text));
      size_t pos = 0;
      while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        if (nl == std::string::npos) nl = text.size();
        std::string line = text.substr(pos, nl - pos);
        pos = nl + 1;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find_first_not_of(" \t") == std::string::npos) continue;
        if (src.max_prompts > 0 && (int64_t)out->size() >= src.max_prompts) break;
        PromptItem p;
        p.idx = (int64_t)out->size();
        p.prompt = line;
        out->push_back(std::move(p));
      }
    }
    if (out->empty()) return errorf("prompts file %s holds no prompts", src.file.c_str());
    if (description) *description = "file " + src.file + " (" + std::to_string(out->size()) + " prompts)";
    return ok_status();
  }
  if (src.max_prompts <= 0)
    return errorf("the task suite needs a prompt count (set the *_MAX_PROMPTS variable or give a prompts file)");
  TaskGenOptions g;
  g.n = src.max_prompts;
  g.split = src.split;
  g.seed = src.seed;
  std::vector<TaskItem> items;
  BK_TRY(tasks_generate(g, &items));
  for (const TaskItem& it : items) {
    PromptItem p;
    p.idx = (int64_t)out->size();
    p.prompt = it.prompt;
    p.task = it.task;
    p.reference = it.response;
    out->push_back(std::move(p));
  }
  if (description)
    *description = std::string("task suite ") + task_split_name(src.split) + " split (" +
                   std::to_string(out->size()) + " items, seed " + std::to_string(src.seed) + ")";
  return ok_status();
}

std::string prompts_hash(const std::vector<PromptItem>& items) {
  // Unit and record separators keep "a|bc" and "ab|c" apart.
  std::string all;
  for (const PromptItem& p : items) {
    all += p.task;
    all += '\x1f';
    all += p.prompt;
    all += '\x1f';
    all += p.reference;
    all += '\x1e';
  }
  return sha256_hex(all);
}

}  // namespace bk
