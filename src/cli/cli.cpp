#include "cli/cli.h"

#include <cstdio>

#include "core/fs.h"
#include "tokenizer/tokenizer.h"

namespace bk {

static const Flag* find_flag(const Command* c, const char* name) {
  for (const Flag& f : c->flags)
    if (std::string(f.name) == name) return &f;
  return nullptr;
}

std::string arg_str(const Args& a, const char* flag) {
  const Flag* f = a.cmd ? find_flag(a.cmd, flag) : nullptr;
  if (f && f->var) return config_str(a.cfg, f->var);
  if (!f) {
    // Not a flag of this command: maybe a configuration variable name.
    if (config_find_var(flag)) return config_str(a.cfg, flag);
  }
  auto it = a.values.find(flag);
  return it == a.values.end() ? "" : it->second;
}

bool arg_given(const Args& a, const char* flag) { return a.given.count(flag) > 0; }

static Status parse_int(const std::string& v, const char* flag, long long* out) {
  char* end = nullptr;
  long long x = strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end) return errorf("--%s expects an integer, got '%s'", flag, v.c_str());
  *out = x;
  return ok_status();
}

Status arg_int(const Args& a, const char* flag, long long* out) {
  const Flag* f = a.cmd ? find_flag(a.cmd, flag) : nullptr;
  if (f && f->var) return config_int(a.cfg, f->var, out);
  if (!f && config_find_var(flag)) return config_int(a.cfg, flag, out);
  return parse_int(arg_str(a, flag), flag, out);
}

Status arg_double(const Args& a, const char* flag, double* out) {
  const Flag* f = a.cmd ? find_flag(a.cmd, flag) : nullptr;
  if (f && f->var) return config_double(a.cfg, f->var, out);
  if (!f && config_find_var(flag)) return config_double(a.cfg, flag, out);
  std::string v = arg_str(a, flag);
  char* end = nullptr;
  double x = strtod(v.c_str(), &end);
  if (v.empty() || *end) return errorf("--%s expects a number, got '%s'", flag, v.c_str());
  *out = x;
  return ok_status();
}

Status arg_bool(const Args& a, const char* flag, bool* out) {
  const Flag* f = a.cmd ? find_flag(a.cmd, flag) : nullptr;
  if (f && f->var) return config_bool(a.cfg, f->var, out);
  if (!f && config_find_var(flag)) return config_bool(a.cfg, flag, out);
  std::string v = arg_str(a, flag);
  if (v == "1" || v == "true" || v == "yes" || v == "on") *out = true;
  else if (v.empty() || v == "0" || v == "false" || v == "no" || v == "off") *out = false;
  else return errorf("--%s expects true or false, got '%s'", flag, v.c_str());
  return ok_status();
}

int cli_fail(const Args& a, const Status& s) {
  fprintf(stderr, "bitkd %s: error: %s\n", a.cmd ? a.cmd->name : "", s.msg.c_str());
  return 1;
}

bool arg_int_or_report(const Args& a, const char* flag, long long* out) {
  Status s = arg_int(a, flag, out);
  if (!s.ok()) cli_fail(a, s);
  return s.ok();
}

bool arg_double_or_report(const Args& a, const char* flag, double* out) {
  Status s = arg_double(a, flag, out);
  if (!s.ok()) cli_fail(a, s);
  return s.ok();
}

Status student_tokenizer_load(const Args& a, Tokenizer* tok, std::string* path) {
  *path = arg_str(a, "tokenizer");
  if (path->empty()) {
    std::string def = path_join(path_join(artifact_paths(a.cfg).root, "tokenizer"), "tokenizer.model");
    if (!file_exists(def))
      return errorf("no student tokenizer: set TOKENIZER_NAME (or --tokenizer) to a SentencePiece tokenizer.model, "
                    "or train one with `bitkd tokenizer train`");
    *path = def;
  }
  return with_context(tokenizer_load(*path, tok), "loading the student tokenizer " + *path);
}

}  // namespace bk
