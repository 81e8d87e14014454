#pragma once
// `bitkd report`: one self-contained HTML page (reports/report.html) with what
// a run measured: the stages, the training curves (loss, KL, CE, format and
// the learning rate, the A8 -> A4 flip marked), quality per task family for
// teacher, student and an untrained model, QEI and its gates, speed and
// memory, the 7B dry run and, when present, the experiment's table. Plots are
// SVG written here; the page needs no network. Inputs that do not exist (a
// run stopped after collect) leave their sections marked missing.
#include <string>
#include <vector>

#include "core/status.h"

namespace bk {

struct ReportPaths {
  std::string reports_dir, logs_dir;  // where the run wrote its reports and metrics
  std::string out;                    // the page ("" = reports_dir/report.html)
};

struct ReportResult {
  std::string path;
  int plots = 0;                      // SVG plots on the page
  std::vector<std::string> missing;   // inputs not found (their sections say so)
};

Status report_write(const ReportPaths& p, ReportResult* out);

}  // namespace bk
