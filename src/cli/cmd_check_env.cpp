// bitkd check-env: the resolved configuration, with where each value came from.
#include <cstdio>
#include <cstring>

#include "cli/cli.h"
#include "core/dist.h"
#include "kernels/cpu/kernels.h"
#include "pipeline/plan.h"
#include "storage/storage.h"

namespace bk {

// Every registered variable with its default, as Markdown tables per group:
// the README's configuration reference is this output, so it cannot drift.
static int print_markdown() {
  const char* group = "";
  for (const ConfigVar& v : config_vars()) {
    if (strcmp(group, v.group) != 0) {
      group = v.group;
      printf("\n**%s**\n\n| variable | default | meaning |\n| --- | --- | --- |\n", group);
    }
    std::string def = v.default_value;
    std::string cell;
    for (char ch : def) cell += ch == '|' ? std::string("\\|") : std::string(1, ch);
    std::string help;
    for (char ch : std::string(v.help)) {
      if (ch == '|') help += "\\|";
      else if (ch == '<') help += "&lt;";
      else if (ch == '>') help += "&gt;";
      else help += ch;
    }
    printf("| `%s` | %s | %s |\n", v.name, cell.empty() ? "" : ("`" + cell + "`").c_str(), help.c_str());
  }
  printf("\n**Pipeline presets**: what `bitkd pipeline` (`make run`) uses for a variable you did not set; "
         "\"x scale\" values are multiplied by `PIPELINE_SCALE`\n\n%s",
         pipeline_presets_markdown().c_str());
  return 0;
}

static int run_check_env(Args& a) {
  if (arg_given(a, "markdown")) return print_markdown();
  bool show_all = arg_given(a, "all");
  const Config& c = a.cfg;
  printf("bitkd configuration (flags > environment > .env > defaults)\n");
  printf(".env: %s\n", c.dotenv_path.empty() ? "(none found)" : c.dotenv_path.c_str());
  ArtifactPaths p = artifact_paths(c);
  printf("artifacts: root=%s data=%s checkpoints=%s reports=%s logs=%s\n", p.root.c_str(), p.data.c_str(),
         p.checkpoints.c_str(), p.reports.c_str(), p.logs.c_str());
  const KernelInfo& k = kernels_info();
  printf("machine: %s; vector unit %s%s%s; matmuls: %s kernels (%s); ternary kernels: %s; MPI: %s\n",
         k.cpu.empty() ? "unknown CPU" : k.cpu.c_str(), k.vector_isa.c_str(), k.avx512_vnni ? " +VNNI" : "",
         k.avx512_bf16 ? " +BF16" : "", k.blas_family.c_str(), k.blas_family_source.c_str(), k.ternary.c_str(),
         dist_built_with_mpi() ? "yes (mpirun -np N bitkd train|pretrain|collect)" : "no (one process)");
  printf("%s\n", storage_describe(c).c_str());
  const char* group = "";
  for (const ConfigVar& v : config_vars()) {
    std::string val = config_str(c, v.name);
    auto it = c.sources.find(v.name);
    ConfigSource src = it == c.sources.end() ? SRC_DEFAULT : it->second;
    if (!show_all && src == SRC_DEFAULT && val.empty()) continue;
    if (strcmp(group, v.group) != 0) {
      group = v.group;
      printf("\n[%s]\n", group);
    }
    if (config_is_secret(v.name)) val = config_redact(val);
    printf("  %-30s = %-36s (%s)\n", v.name, val.c_str(), config_source_name(src));
  }
  // Variables set in .env or the environment that bitkd does not know: likely typos.
  bool header = false;
  for (auto& it : c.values) {
    if (config_find_var(it.first) || it.second.empty()) continue;
    if (!header) printf("\n[not recognised: check the spelling]\n");
    header = true;
    std::string val = config_is_secret(it.first) ? config_redact(it.second) : it.second;
    printf("  %-30s = %s (%s)\n", it.first.c_str(), val.c_str(), config_source_name(c.sources.at(it.first)));
  }
  // Every value against the registry: all bad ones, each with where it was set.
  fflush(stdout);
  Status st = config_validate_status(c);
  if (!st.ok()) return cli_fail(a, st);
  st = ensure_artifact_dirs(c, p);
  if (!st.ok()) return cli_fail(a, st);
  return 0;
}

const Command& command_check_env() {
  static const Command c = {
      "check-env",
      "Print the resolved configuration (secrets redacted), check every value and create the artifact directories",
      "Every variable bitkd reads, its value and its source (flag, env, .env or default), then every value\n"
      "checked against its type, range and choices: all bad ones are listed with where each was set (the\n"
      "flag, the environment or the .env file and line) and the exit status is 1. Every other command runs\n"
      "the same check before it starts.\n"
      "API keys are shown only as '**** (set, N chars)'. Empty defaults are hidden unless --all.",
      {{"all", nullptr, "", "Show unset variables too", true},
       {"markdown", nullptr, "", "Print every variable and its default as Markdown tables (the README's reference)", true}},
      run_check_env,
  };
  return c;
}

}  // namespace bk
