// bitkd: one binary for the whole distillation pipeline. This file only parses
// the command line and dispatches; each command lives in cmd_<name>.cpp.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>

#include "cli/cli.h"
#include "core/dist.h"
#include "core/log.h"
#include "core/version.h"
#include "train/setup.h"

namespace bk {

// One line per command; each is defined in its cmd_*.cpp.
const Command& command_check_env();
const Command& command_teacher();
const Command& command_collect();
const Command& command_bench_collect();
const Command& command_serve();
const Command& command_tasks();
const Command& command_tasks_score();
const Command& command_tokenizer_train();
const Command& command_tokenizer_encode();
const Command& command_tokenizer_decode();
const Command& command_export();
const Command& command_pretrain();
const Command& command_bench_train();
const Command& command_train();
const Command& command_eval();
const Command& command_dryrun();
const Command& command_bench_infer();
const Command& command_bench_bandwidth();
const Command& command_pipeline();
const Command& command_experiment();
const Command& command_report();

const std::vector<const Command*>& all_commands() {
  static const std::vector<const Command*> cmds = {
      &command_check_env(),
      &command_teacher(),
      &command_collect(),
      &command_serve(),
      &command_tasks(),
      &command_tasks_score(),
      &command_tokenizer_train(),
      &command_tokenizer_encode(),
      &command_tokenizer_decode(),
      &command_export(),
      &command_pretrain(),
      &command_train(),
      &command_bench_train(),
      &command_bench_collect(),
      &command_eval(),
      &command_dryrun(),
      &command_bench_infer(),
      &command_bench_bandwidth(),
      &command_pipeline(),
      &command_experiment(),
      &command_report(),
  };
  return cmds;
}

// Flags every command accepts.
static const std::vector<Flag> k_common_flags = {
    {"env-file", nullptr, ".env", "Read variables from this .env file (missing file: skipped)"},
    {"artifacts", "ARTIFACTS_DIR", nullptr, "Artifact root directory"},
    {"threads", "THREADS", nullptr, "Worker threads (0: all cores)"},
    {"log-level", "LOG_LEVEL", nullptr, "DEBUG, INFO, WARNING or ERROR"},
    {"seed", "SEED", nullptr, "Random seed"},
};

static void print_flag(const Flag& f) {
  std::string lhs = std::string("  --") + f.name + (f.boolean ? "" : " VALUE");
  std::string rhs = f.help;
  if (f.var) {
    const ConfigVar* v = config_find_var(f.var);
    rhs += std::string(" [env ") + f.var;
    if (v && v->default_value[0]) rhs += std::string(", default ") + v->default_value;
    rhs += "]";
  } else if (f.def && f.def[0] && !f.boolean) {
    rhs += std::string(" [default ") + f.def + "]";
  }
  printf("%-28s %s\n", lhs.c_str(), rhs.c_str());
}

static void print_main_help() {
  printf("bitkd %s: distill a teacher LLM into a BitNet b1.58 ternary student\n\n", BITKD_VERSION);
  printf("usage: bitkd <command> [flags]\n       bitkd <command> --help\n\ncommands:\n");
  for (const Command* c : all_commands()) printf("  %-20s %s\n", c->name, c->summary);
  printf("\nconfiguration: flags > environment > .env > defaults; `bitkd check-env` shows the result.\n");
}

static void print_command_help(const Command* c) {
  printf("usage: bitkd %s [flags]\n\n%s\n", c->name, c->summary);
  if (c->description && c->description[0]) printf("\n%s\n", c->description);
  if (!c->flags.empty()) {
    printf("\nflags:\n");
    for (const Flag& f : c->flags) print_flag(f);
  }
  printf("\ncommon flags:\n");
  for (const Flag& f : k_common_flags) print_flag(f);
  printf("  %-26s %s\n", "--help", "Show this help");
}

static const Flag* lookup(const Command* c, const std::string& name) {
  for (const Flag& f : c->flags)
    if (name == f.name) return &f;
  for (const Flag& f : k_common_flags)
    if (name == f.name) return &f;
  return nullptr;
}

static int run_main(int argc, char** argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    print_main_help();
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
    printf("bitkd %s\n", BITKD_VERSION);
    return 0;
  }
  // Two-word commands first ("tokenizer train"), then one word.
  const Command* cmd = nullptr;
  int first_arg = 2;
  if (argc >= 3) {
    std::string two = std::string(argv[1]) + " " + argv[2];
    for (const Command* c : all_commands())
      if (two == c->name) cmd = c, first_arg = 3;
  }
  if (!cmd)
    for (const Command* c : all_commands())
      if (!strcmp(argv[1], c->name)) cmd = c;
  if (!cmd) {
    // A group name alone ("bitkd bench") lists its sub-commands.
    bool group = false;
    for (const Command* c : all_commands())
      if (!strncmp(c->name, argv[1], strlen(argv[1])) && c->name[strlen(argv[1])] == ' ') {
        if (!group) printf("usage: bitkd %s <sub-command> [flags]\n\n", argv[1]);
        group = true;
        printf("  %-20s %s\n", c->name, c->summary);
      }
    if (group) return 2;
    fprintf(stderr, "bitkd: unknown command '%s' (see bitkd --help)\n", argv[1]);
    return 2;
  }

  Args a;
  a.cmd = cmd;
  std::map<std::string, std::string> var_flags, var_flag_names;
  for (const Flag& f : cmd->flags)
    if (!f.var) a.values[f.name] = f.def ? f.def : "";
  for (const Flag& f : k_common_flags)
    if (!f.var) a.values[f.name] = f.def ? f.def : "";
  for (int i = first_arg; i < argc; i++) {
    std::string s = argv[i];
    if (s == "--help" || s == "-h") {
      print_command_help(cmd);
      return 0;
    }
    if (s.size() > 2 && s.compare(0, 2, "--") == 0) {
      std::string name = s.substr(2), value;
      size_t eq = name.find('=');
      bool has_value = eq != std::string::npos;
      if (has_value) value = name.substr(eq + 1), name = name.substr(0, eq);
      const Flag* f = lookup(cmd, name);
      if (!f) {
        fprintf(stderr, "bitkd %s: unknown flag --%s (see bitkd %s --help)\n", cmd->name, name.c_str(), cmd->name);
        return 2;
      }
      if (f->boolean) {
        if (!has_value) value = "1";
      } else if (!has_value) {
        if (i + 1 >= argc) {
          fprintf(stderr, "bitkd %s: flag --%s needs a value\n", cmd->name, name.c_str());
          return 2;
        }
        value = argv[++i];
      }
      a.given.insert(name);
      if (f->var) var_flags[f->var] = value, var_flag_names[f->var] = "flag --" + name;
      else a.values[name] = value;
    } else {
      a.positional.push_back(s);
    }
  }
  Status st = config_load(&a.cfg, a.values["env-file"], var_flags);
  if (!st.ok()) return cli_fail(a, st);
  for (auto& it : var_flag_names) a.cfg.origins[it.first] = it.second;
  // Every value checked against the registry before any work, all bad ones
  // at once (check-env prints the whole configuration first, then them).
  if (strcmp(cmd->name, "check-env") != 0) {
    st = config_validate_status(a.cfg);
    if (!st.ok()) return cli_fail(a, st);
  }
  if (!log_set_level_name(config_str(a.cfg, "LOG_LEVEL", "INFO")))
    fprintf(stderr, "bitkd: unknown LOG_LEVEL '%s', using INFO\n", config_str(a.cfg, "LOG_LEVEL").c_str());
  long long threads = 0;
  st = config_int(a.cfg, "THREADS", &threads);
  if (!st.ok()) return cli_fail(a, st);
  if (dist_size() > 1) {
    // Under mpirun: the commands that split their work by rank, rank 0 speaks
    // for the job, and the ranks on one machine share its cores.
    if (strcmp(cmd->name, "train") && strcmp(cmd->name, "pretrain") && strcmp(cmd->name, "collect"))
      return cli_fail(a, errorf("bitkd %s runs as one process; under mpirun (%d ranks) use train, pretrain or "
                                "collect",
                                cmd->name, dist_size()));
    if (dist_rank() != 0) {
      if (!freopen("/dev/null", "w", stdout)) fprintf(stderr, "bitkd: rank %d: cannot silence stdout\n", dist_rank());
      if (log_get_level() < LOG_ERROR) log_set_level(LOG_ERROR);
    }
    threads = train_thread_count(false, threads, omp_get_num_procs(), dist_local_size());
    BK_LOG_INFO("%s, %lld threads per rank", dist_describe().c_str(), threads);
  }
  if (threads > 0) omp_set_num_threads((int)threads);
  const int rc = cmd->run(a);
  // What this command read from the configuration, for `bitkd pipeline`'s
  // stage fingerprints (one name per line, appended).
  const char* reads_path = getenv("BITKD_CONFIG_READS");
  if (reads_path && *reads_path) {
    FILE* f = fopen(reads_path, "a");
    if (f) {
      for (const std::string& n : a.cfg.reads) fprintf(f, "%s\n", n.c_str());
      fclose(f);
    }
  }
  return rc;
}

}  // namespace bk

int main(int argc, char** argv) {
  bk::Status st = bk::dist_init(&argc, &argv);
  if (!st.ok()) {
    fprintf(stderr, "bitkd: %s\n", st.msg.c_str());
    return 2;
  }
  int rc = 1;
  // Exceptions stop here: modules return Status, but a library may still throw.
  try {
    rc = bk::run_main(argc, argv);
  } catch (const std::exception& e) {
    fprintf(stderr, "bitkd: fatal: %s\n", e.what());
  }
  bk::dist_finalize(rc);  // a failed rank takes the job down instead of leaving the others waiting
  return rc;
}
