#pragma once
// The command-line layer: a table of commands, each with its flags. A flag may
// stand for a configuration variable (--lr for LR), so one precedence rule
// holds everywhere: flag > environment > .env > default (io/config.h).
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/status.h"
#include "io/config.h"

namespace bk {

struct Flag {
  const char* name;  // long name without dashes: "lr" is --lr
  const char* var;   // configuration variable it sets, or nullptr
  const char* def;   // default when var is nullptr ("" = unset)
  const char* help;
  bool boolean = false;  // a switch: --name means "1"
};

struct Args;

struct Command {
  const char* name;         // "train", or two words: "tokenizer train"
  const char* summary;      // one line for `bitkd --help`
  const char* description;  // paragraph(s) for `bitkd <command> --help`
  std::vector<Flag> flags;
  int (*run)(Args& args);   // exit code: 0 ok, 1 failure, 2 usage
};

struct Args {
  const Command* cmd = nullptr;
  Config cfg;                                 // resolved configuration, flags applied
  std::map<std::string, std::string> values;  // flags without a variable
  std::set<std::string> given;                // flags given on the command line
  std::vector<std::string> positional;
};

// The value of a flag: its variable's resolved value, or the flag's own.
std::string arg_str(const Args& a, const char* flag);
bool arg_given(const Args& a, const char* flag);
Status arg_int(const Args& a, const char* flag, long long* out);
Status arg_double(const Args& a, const char* flag, double* out);
Status arg_bool(const Args& a, const char* flag, bool* out);
// Int/double getters that print the error and return false, for terse command code.
bool arg_int_or_report(const Args& a, const char* flag, long long* out);
bool arg_double_or_report(const Args& a, const char* flag, double* out);

// Prints "bitkd <cmd>: <message>" to stderr and returns 1.
int cli_fail(const Args& a, const Status& s);

struct Tokenizer;
// The student tokenizer: --tokenizer / TOKENIZER_NAME, else the one `bitkd
// tokenizer train` writes by default; *path receives the path loaded.
Status student_tokenizer_load(const Args& a, Tokenizer* tok, std::string* path);

// Every command, in help order (cli/main.cpp).
const std::vector<const Command*>& all_commands();

}  // namespace bk
