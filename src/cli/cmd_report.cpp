// bitkd report: argument handling; the page itself is src/report.
#include "cli/cli.h"
#include "io/config.h"
#include "report/report.h"

namespace bk {

namespace {

int run_report(Args& a) {
  const ArtifactPaths ap = artifact_paths(a.cfg);
  ReportPaths p;
  p.reports_dir = ap.reports;
  p.logs_dir = ap.logs;
  p.out = arg_str(a, "out");
  ReportResult r;
  Status st = report_write(p, &r);
  if (!st.ok()) return cli_fail(a, st);
  for (const std::string& m : r.missing) printf("missing (its section says so): %s\n", m.c_str());
  printf("report: %s (%d plots)\n", r.path.c_str(), r.plots);
  return 0;
}

}  // namespace

const Command& command_report() {
  static const Command c = {
      "report",
      "One self-contained HTML page of a run: curves, quality, QEI and gates, speed, memory -> reports/report.html",
      "Reads what the pipeline wrote under ARTIFACTS_DIR (reports/*.json, logs/*_metrics.jsonl) and writes\n"
      "one page with SVG plots (no network, no scripts from elsewhere): the stages, the student's loss terms\n"
      "and learning rate with the A8 -> A4 flip marked, the teacher's pretraining loss, task score per\n"
      "family for teacher and student, QEI and its gates, the checklist, decode speed and weight memory,\n"
      "the 7B dry run and, when `bitkd experiment` ran, its table. `bitkd pipeline` writes it at the end;\n"
      "sections whose inputs are missing say which file is missing.",
      {
          {"out", nullptr, "", "Where to write the page (default <reports>/report.html)"},
      },
      run_report,
  };
  return c;
}

}  // namespace bk
