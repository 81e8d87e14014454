#pragma once
// Prompt lists for the teacher baseline and KD collection, which render them
// with the chat template (tokenizer/chat_template.h). A list comes from a file
// (plain text: one prompt per non-empty line; .jsonl: {"prompt", "response",
// "task"} objects, so items carry a task and a reference and get scored) or
// from the built-in task suite (a split).
// prompt_idx is the item's position in the full list, so it is stable across
// runs with the same inputs: resuming, sharding and rescoring rely on that.
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/tasks/tasks.h"
#include "tokenizer/chat_template.h"

namespace bk {

struct PromptItem {
  int64_t idx = 0;
  std::string prompt;
  std::string task;       // "" for plain-text files
  std::string reference;  // "" when unknown
};

struct PromptSource {
  std::string file;            // "" -> the task suite
  TaskSplit split = TASK_SPLIT_TRAIN;
  int64_t max_prompts = 0;     // 0: all (a task-suite source then needs a count)
  uint64_t seed = 1234;
};

// Loads the list; *description says where it came from ("file x.txt (12 prompts)",
// "task suite eval split, seed 1234").
Status prompts_load(const PromptSource& src, std::vector<PromptItem>* out, std::string* description);
// SHA-256 over every item's task, prompt and reference: the identity of a prompt set.
std::string prompts_hash(const std::vector<PromptItem>& items);

}  // namespace bk
