#include "core/progress.h"

#include <unistd.h>

#include <cstdio>

#include "core/timing.h"

namespace bk {

static std::string fmt_duration(double s) {
  if (s < 0 || s > 1e7) return "?";
  char buf[32];
  int h = (int)(s / 3600), m = (int)(s / 60) % 60, sec = (int)s % 60;
  if (h > 0) snprintf(buf, sizeof buf, "%dh%02dm", h, m);
  else snprintf(buf, sizeof buf, "%dm%02ds", m, sec);
  return buf;
}

void progress_begin(Progress* p, const std::string& label, long total) {
  p->label = label;
  p->total = total;
  p->done = 0;
  p->t_start = now_seconds();
  p->t_last_draw = 0;
  p->tty = isatty(fileno(stderr));
}

static void draw(Progress* p, const std::string& extra, double rate, const char* unit, bool final) {
  double el = now_seconds() - p->t_start;
  double frac = p->total > 0 ? (double)p->done / p->total : 0;
  double items_rate = el > 0 ? p->done / el : 0;
  double eta = (p->total > 0 && items_rate > 0) ? (p->total - p->done) / items_rate : -1;
  if (rate < 0) rate = items_rate;
  char line[512];
  if (p->tty) {
    const int width = 24;
    int filled = (int)(frac * width + 0.5);
    char bar[width + 1];
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
    bar[width] = 0;
    snprintf(line, sizeof line, "\r%s [%s] %ld/%ld %s | %.1f %s | %s<%s ", p->label.c_str(), bar, p->done, p->total,
             extra.c_str(), rate, unit, fmt_duration(el).c_str(), fmt_duration(eta).c_str());
    fputs(line, stderr);
    fputs("\x1b[K", stderr);
    if (final) fputc('\n', stderr);
  } else {
    snprintf(line, sizeof line, "[bitkd] %s %ld/%ld (%.0f%%) %s | %.1f %s | elapsed %s eta %s\n", p->label.c_str(),
             p->done, p->total, 100 * frac, extra.c_str(), rate, unit, fmt_duration(el).c_str(),
             fmt_duration(eta).c_str());
    fputs(line, stderr);
  }
  fflush(stderr);
}

void progress_update(Progress* p, long done, const std::string& extra, double rate, const char* rate_unit) {
  p->done = done;
  double t = now_seconds();
  double interval = p->tty ? 0.2 : p->line_interval_s;
  if (t - p->t_last_draw < interval && done != p->total) return;
  p->t_last_draw = t;
  draw(p, extra, rate, rate_unit, false);
}

void progress_end(Progress* p, const std::string& extra) { draw(p, extra, -1, "it/s", true); }

}  // namespace bk
