#pragma once
// A progress bar with rate and ETA on a terminal; periodic plain log lines
// when stderr is not a terminal (CI, files).
#include <string>

namespace bk {

struct Progress {
  std::string label;
  long total = 0;        // 0 = unknown
  long done = 0;
  double t_start = 0;
  double t_last_draw = 0;
  bool tty = false;
  double line_interval_s = 10.0;  // non-tty: one line this often
};

void progress_begin(Progress* p, const std::string& label, long total);
// `extra` is printed after the counters ("loss 2.31 kl 0.8 A8"); `rate_unit`
// names what the rate counts ("tok/s"); rate is supplied by the caller when
// it differs from done/elapsed (pass a negative value to use done/elapsed).
void progress_update(Progress* p, long done, const std::string& extra, double rate = -1, const char* rate_unit = "it/s");
void progress_end(Progress* p, const std::string& extra);

}  // namespace bk
