#pragma once
// Configuration: flags > environment > .env > defaults (README, "Configuration").
// Every variable bitkd reads is registered in one table (config.cpp) with its
// default and help text; `bitkd check-env` and the README are generated from it.
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/status.h"

namespace bk {

// What a value must be. An empty value passes when the default is empty too
// ("unset": the command or the pipeline preset decides).
enum ConfigType {
  CT_STR = 0,  // any text
  CT_INT,      // an integer in [min, max]
  CT_NUM,      // a finite number in [min, max]
  CT_POS,      // a finite number > 0
  CT_BOOL,     // 1/0 true/false yes/no on/off
  CT_CHOICE,   // one of `choices` ("a|b|c")
};

struct ConfigVar {
  const char* name;
  const char* default_value;
  const char* group;  // "paths", "teacher", "collect", "train", "model", "eval", "dryrun", ...
  const char* help;
  ConfigType type = CT_STR;
  double min = -1e300, max = 1e300;
  const char* choices = nullptr;
};

// All registered variables, in display order.
const std::vector<ConfigVar>& config_vars();
const ConfigVar* config_find_var(const std::string& name);
// True for names that hold credentials (*_API_KEY, *_TOKEN, *SECRET*, *PASSWORD*).
bool config_is_secret(const std::string& name);
// "****" plus the length; never any character of the secret itself.
std::string config_redact(const std::string& value);

enum ConfigSource { SRC_DEFAULT = 0, SRC_DOTENV = 1, SRC_ENV = 2, SRC_FLAG = 3 };
const char* config_source_name(ConfigSource s);

struct Config {
  std::map<std::string, std::string> values;
  std::map<std::string, ConfigSource> sources;
  // Where each value set by the user came from, for messages: "flag --steps",
  // "environment", ".env:12" (the file's path and line).
  std::map<std::string, std::string> origins;
  std::string dotenv_path;  // the .env actually read ("" if none)
  // Every name looked up through the getters below: what a command reads.
  // `bitkd pipeline` fingerprints a stage by the values of what its commands
  // read (BITKD_CONFIG_READS, cli/main.cpp).
  mutable std::set<std::string> reads;
};

// Parses KEY=VALUE lines (comments, blank lines, `export `, single/double quotes).
// Errors name the file and line. *lines (may be null): each key's line number
// (the last one when a key repeats; the last one wins).
Status dotenv_parse(const std::string& text, const std::string& path, std::map<std::string, std::string>* out,
                    std::map<std::string, int>* lines = nullptr);

// Resolves every registered variable, plus any extra name found in .env or set
// by a flag. dotenv_path may not exist (then it is skipped); pass "" to skip.
Status config_load(Config* c, const std::string& dotenv_path, const std::map<std::string, std::string>& flag_values);
// Sets a value with the given source (used by flags after loading).
void config_set(Config* c, const std::string& name, const std::string& value, ConfigSource src);
// "from flag --steps", "from environment", "from .env:12", "default".
std::string config_where(const Config& c, const std::string& name);

// Checks one value against its registry entry: "" when it is valid, else why
// not ("is not an integer", "must be >= 1", "must be one of: a, b").
std::string config_check_value(const ConfigVar& v, const std::string& value);
// Every registered value of c checked at once: one line per bad value,
// "NAME=value (from ...): why". Empty: all valid.
std::vector<std::string> config_validate(const Config& c);
// config_validate as a Status: all the lines in one error, naming the count.
Status config_validate_status(const Config& c);

bool config_has(const Config& c, const std::string& name);  // set and non-empty
// Where the value came from (SRC_DEFAULT when never set).
ConfigSource config_source(const Config& c, const std::string& name);
// Set by the user (flag, environment or .env) to a non-empty value.
bool config_user_set(const Config& c, const std::string& name);
std::string config_str(const Config& c, const std::string& name, const std::string& fallback = "");
// Numeric getters: an unparsable value is an error naming the variable and its source.
Status config_int(const Config& c, const std::string& name, long long* out);
Status config_double(const Config& c, const std::string& name, double* out);
Status config_bool(const Config& c, const std::string& name, bool* out);  // 1/0 true/false yes/no on/off

// The artifact root and its sub-directories (README, "Artifacts"). ARTIFACTS_DIR wins,
// then DRIVE_ROOT (the PoC's), then ./artifacts; *_DIR variables override each.
struct ArtifactPaths {
  std::string root, data, checkpoints, reports, logs;
};
ArtifactPaths artifact_paths(const Config& c);
// mkdir -p for every directory (AUTO_CREATE_DIRS=0 turns this into a check).
Status ensure_artifact_dirs(const Config& c, const ArtifactPaths& p);

}  // namespace bk
