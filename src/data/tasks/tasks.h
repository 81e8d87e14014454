#pragma once
// The built-in synthetic task suite (README, "What make run does"). Short, unambiguous prompts
// with one reference answer each, so a tiny teacher pretrained on a few
// thousand items learns them and student-versus-teacher quality is measured,
// not assumed.
//
// Families: json_object, json_list, key_lookup, arithmetic, sort, string_edit,
// python, sql. Generation is deterministic by seed. An item's split (train or
// eval) is a hash of its family and prompt, so the two splits never share a
// prompt whatever the seeds and counts.
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace bk {

struct TaskItem {
  std::string task;      // family name
  std::string prompt;    // the user message (before the chat template)
  std::string response;  // reference answer
};

enum TaskSplit { TASK_SPLIT_TRAIN = 0, TASK_SPLIT_EVAL = 1 };

// Percentage of the prompt space that belongs to the eval split.
constexpr int kTaskEvalPercent = 10;

const std::vector<std::string>& task_families();
bool task_is_family(const std::string& task);
// JSON families score parsed values and report JSON validity.
bool task_is_json(const std::string& task);
Status task_split_parse(const std::string& name, TaskSplit* out);  // "train" | "eval"
const char* task_split_name(TaskSplit s);
TaskSplit task_split_of(const std::string& task, const std::string& prompt);

struct TaskGenOptions {
  int64_t n = 100;
  TaskSplit split = TASK_SPLIT_TRAIN;
  uint64_t seed = 1234;
  std::vector<std::string> families;  // empty: all, in task_families() order
};

// n distinct items of the split, families in round robin. Deterministic:
// same options, same items in the same order.
Status tasks_generate(const TaskGenOptions& opt, std::vector<TaskItem>* out);

struct TaskScore {
  double score = 0;     // 0..1 (exact-match families: 0 or 1)
  int json_valid = -1;  // JSON families: 1 if the answer parses, 0 if not; -1: not a JSON family
  bool extracted = false;  // the answer was taken out of a longer reply (task_extract_answer)
  std::string answer;      // what was scored
};

// The answer inside a chat model's reply, by these rules in order (the same
// for every model scored, teacher or student; a bare answer is unchanged):
//  1. a fenced block (```lang ... ```): the first block's content;
//  2. else the last line that starts with "final answer:", "answer:" or "the
//     answer is" (any case): the rest of that line;
//  3. JSON families, when that does not parse: the span from the first '{' or
//     '[' to the last '}' or ']' (prose around one JSON value), if it parses;
//  4. surrounding whitespace and one pair of `inline code` backticks dropped.
std::string task_extract_answer(const std::string& task, const std::string& response);

// Scores a response against the reference, on task_extract_answer's answer.
// Exact-match families compare after whitespace normalisation (trimmed, runs
// of whitespace -> one space), one trailing '.' forgiven ("The answer is
// 42."); JSON families compare parsed values (object key order is
// irrelevant). Unknown family: an error.
Status task_score(const std::string& task, const std::string& reference, const std::string& response,
                  TaskScore* out);
std::string task_normalize_ws(const std::string& s);

// JSONL: one {"prompt","response","task"} object per line.
std::string tasks_to_jsonl(const std::vector<TaskItem>& items);
Status tasks_write_jsonl(const std::string& path, const std::vector<TaskItem>& items);
// Reads lines with at least "prompt"; "response" and "task" may be absent
// (then empty). Errors name the file and line.
Status tasks_read_jsonl(const std::string& path, std::vector<TaskItem>* items);

}  // namespace bk
