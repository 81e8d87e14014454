// report.h: the run's HTML page.
#include "report/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/fs.h"
#include "core/timing.h"
#include "core/version.h"

namespace bk {

namespace {

using json = nlohmann::json;

const char* const k_colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"};

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}

std::string num(double v, const char* f = "%.3g") {
  if (!std::isfinite(v)) return "n/a";
  char b[48];
  snprintf(b, sizeof b, f, v);
  return b;
}

bool load_json(const std::string& path, json* out) {
  std::string text;
  if (!read_file(path, &text).ok()) return false;
  *out = json::parse(text, nullptr, false);
  return out->is_object();
}

std::vector<json> load_jsonl(const std::string& path) {
  std::vector<json> rows;
  std::string text;
  if (!read_file(path, &text).ok()) return rows;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    json j = json::parse(line, nullptr, false);
    if (j.is_object()) rows.push_back(j);
  }
  return rows;
}

double get(const json& j, std::initializer_list<const char*> keys) {
  const json* cur = &j;
  for (const char* k : keys) {
    if (!cur->is_object() || !cur->contains(k)) return NAN;
    cur = &(*cur)[k];
  }
  return cur->is_number() ? cur->get<double>() : NAN;
}

// ---- SVG plots -------------------------------------------------------------------

struct Series {
  std::string name;
  std::vector<double> x, y;
};

// About five round tick values covering [lo, hi].
std::vector<double> ticks(double lo, double hi) {
  std::vector<double> t;
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / 5, mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double step = raw / mag < 2 ? 2 * mag : raw / mag < 5 ? 5 * mag : 10 * mag;
  for (double v = std::ceil(lo / step) * step; v <= hi + 1e-9 * step; v += step)
    t.push_back(std::abs(v) < 1e-9 * step ? 0.0 : v);  // no "-0" label
  return t;
}

constexpr double kW = 640, kH = 310, kL = 60, kR = 20, kT = 50, kB = 44;

// The legend: one row under the title, left to right, never over the data.
std::string legend_item(double* x, const char* color, const std::string& name, bool line) {
  char b[400];
  snprintf(b, sizeof b,
           "<rect x=\"%.0f\" y=\"%.0f\" width=\"12\" height=\"%s\" fill=\"%s\"/>"
           "<text x=\"%.0f\" y=\"38\" class=\"legend\">%s</text>",
           *x, line ? 32.0 : 29.0, line ? "3" : "10", color, *x + 16, esc(name).c_str());
  *x += 28 + 7.0 * name.size();
  return b;
}

std::string svg_open(const std::string& id, const std::string& title) {
  char b[400];
  snprintf(b, sizeof b,
           "<svg class=\"plot\" data-plot=\"%s\" viewBox=\"0 0 %.0f %.0f\" role=\"img\" aria-label=\"%s\">"
           "<text x=\"%.0f\" y=\"20\" class=\"title\">%s</text>",
           id.c_str(), kW, kH, esc(title).c_str(), kL, esc(title).c_str());
  return b;
}

// Lines over a shared x axis; markers are labelled vertical lines (the flip).
std::string line_chart(const std::string& id, const std::string& title, const std::string& xlabel,
                       const std::vector<Series>& series, const std::vector<std::pair<double, std::string>>& markers,
                       bool log_y = false) {
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  auto ty = [&](double v) { return log_y ? std::log10(std::max(v, 1e-12)) : v; };
  for (const Series& s : series)
    for (size_t i = 0; i < s.x.size(); i++)
      if (std::isfinite(s.y[i])) {
        x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]);
        y0 = std::min(y0, ty(s.y[i])), y1 = std::max(y1, ty(s.y[i]));
      }
  if (!(x1 > x0)) x1 = x0 + 1;
  if (!(y1 > y0)) y1 = y0 + 1;
  const double pad = (y1 - y0) * 0.05;
  y0 -= pad, y1 += pad;
  auto px = [&](double x) { return kL + (x - x0) / (x1 - x0) * (kW - kL - kR); };
  auto py = [&](double y) { return kH - kB - (ty(y) - y0) / (y1 - y0) * (kH - kT - kB); };
  std::string s = svg_open(id, title);
  char b[512];
  std::vector<double> yt;
  if (log_y)  // decades where the range spans two or more
    for (double e = std::ceil(y0); e <= y1; e += 1) yt.push_back(e);
  if (yt.size() < 2) yt = ticks(y0, y1);
  for (double t : yt) {
    const double yy = kH - kB - (t - y0) / (y1 - y0) * (kH - kT - kB);
    snprintf(b, sizeof b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>"
                          "<text x=\"%.1f\" y=\"%.1f\" class=\"tick\" text-anchor=\"end\">%s</text>",
             kL, kW - kR, yy, yy, kL - 6, yy + 4, log_y ? num(std::pow(10.0, t)).c_str() : num(t).c_str());
    s += b;
  }
  for (double t : ticks(x0, x1)) {
    snprintf(b, sizeof b, "<text x=\"%.1f\" y=\"%.1f\" class=\"tick\" text-anchor=\"middle\">%s</text>", px(t),
             kH - kB + 16, num(t, "%.6g").c_str());
    s += b;
  }
  snprintf(b, sizeof b, "<text x=\"%.1f\" y=\"%.1f\" class=\"axis\" text-anchor=\"middle\">%s</text>",
           (kL + kW - kR) / 2, kH - 8, esc(xlabel).c_str());
  s += b;
  for (const auto& m : markers) {
    if (!std::isfinite(m.first)) continue;
    snprintf(b, sizeof b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" class=\"marker\"/>"
                          "<text x=\"%.1f\" y=\"%.1f\" class=\"marker-label\">%s</text>",
             px(m.first), px(m.first), kT, kH - kB, px(m.first) + 4, kT + 12, esc(m.second).c_str());
    s += b;
  }
  for (size_t k = 0; k < series.size(); k++) {
    const Series& sr = series[k];
    std::string d;
    for (size_t i = 0; i < sr.x.size(); i++) {
      if (!std::isfinite(sr.y[i])) continue;
      snprintf(b, sizeof b, "%s%.1f,%.1f", d.empty() ? "M" : " L", px(sr.x[i]), py(sr.y[i]));
      d += b;
    }
    const char* col = k_colors[k % 7];
    s += "<path d=\"" + d + "\" fill=\"none\" stroke=\"" + col + "\" stroke-width=\"1.8\"/>";
  }
  double lx = kL;
  for (size_t k = 0; k < series.size(); k++) s += legend_item(&lx, k_colors[k % 7], series[k].name, true);
  return s + "</svg>";
}

// Grouped bars (one group per category), with optional error bars.
std::string bar_chart(const std::string& id, const std::string& title, const std::vector<std::string>& cats,
                      const std::vector<Series>& groups, const std::vector<std::vector<double>>& err = {}) {
  double ymax = 0;
  for (size_t g = 0; g < groups.size(); g++)
    for (size_t i = 0; i < groups[g].y.size(); i++)
      if (std::isfinite(groups[g].y[i]))
        ymax = std::max(ymax, groups[g].y[i] + (g < err.size() && std::isfinite(err[g][i]) ? err[g][i] : 0.0));
  if (!(ymax > 0)) ymax = 1;
  ymax *= 1.1;
  const double plot_w = kW - kL - kR, slot = plot_w / std::max<size_t>(1, cats.size());
  const double bw = slot * 0.8 / std::max<size_t>(1, groups.size());
  auto py = [&](double y) { return kH - kB - y / ymax * (kH - kT - kB); };
  std::string s = svg_open(id, title);
  char b[512];
  for (double t : ticks(0, ymax)) {
    snprintf(b, sizeof b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>"
                          "<text x=\"%.1f\" y=\"%.1f\" class=\"tick\" text-anchor=\"end\">%s</text>",
             kL, kW - kR, py(t), py(t), kL - 6, py(t) + 4, num(t).c_str());
    s += b;
  }
  for (size_t i = 0; i < cats.size(); i++) {
    snprintf(b, sizeof b, "<text x=\"%.1f\" y=\"%.1f\" class=\"tick\" text-anchor=\"middle\">%s</text>",
             kL + slot * (i + 0.5), kH - kB + 16, esc(cats[i]).c_str());
    s += b;
    for (size_t g = 0; g < groups.size(); g++) {
      const double v = i < groups[g].y.size() ? groups[g].y[i] : NAN;
      if (!std::isfinite(v)) continue;
      const double x = kL + slot * i + slot * 0.1 + bw * g;
      snprintf(b, sizeof b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>%s: %s</title></rect>",
               x, py(v), bw * 0.92, std::max(0.0, kH - kB - py(v)), k_colors[g % 7], esc(groups[g].name).c_str(),
               num(v).c_str());
      s += b;
      if (g < err.size() && i < err[g].size() && std::isfinite(err[g][i]) && err[g][i] > 0) {
        snprintf(b, sizeof b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" class=\"err\"/>",
                 x + bw * 0.46, x + bw * 0.46, py(v - err[g][i]), py(v + err[g][i]));
        s += b;
      }
    }
  }
  double lx = kL;
  for (size_t g = 0; g < groups.size(); g++) s += legend_item(&lx, k_colors[g % 7], groups[g].name, false);
  return s + "</svg>";
}

const char* k_css = R"(
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:960px;padding:12px;color:#222;overflow-wrap:anywhere}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%;margin:.6em 0;font-size:.92em}td,th{border:1px solid #ddd;padding:3px 6px;text-align:left}
th{background:#f4f4f4}.pass{color:#1a7f37;font-weight:600}.fail{color:#c62828;font-weight:600}.nm{color:#777}
.missing{background:#fff4e5;border:1px solid #f0c36d;padding:6px 10px}
svg.plot{width:100%;height:auto;max-width:760px;display:block;margin:.4em 0}
svg .title{font-weight:600;font-size:14px}svg .tick{font-size:11px;fill:#555}svg .axis{font-size:12px;fill:#333}
svg .legend{font-size:12px}svg .grid{stroke:#eee}svg .marker{stroke:#888;stroke-dasharray:4 3}
svg .marker-label{font-size:11px;fill:#555}svg .err{stroke:#333;stroke-width:1.2}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:8px}
@media print{body{max-width:none}h2{break-after:avoid}svg.plot{break-inside:avoid}}
)";

// Runs in the browser: counts the plots that laid out with real geometry and
// says whether the page fits the window's width (no sideways scrolling on a
// phone), so a headless browser test can check it (body data attributes).
const char* k_script = R"(
addEventListener('load',function(){var p=document.querySelectorAll('svg.plot'),ok=0;
for(var i=0;i<p.length;i++){var b=p[i].getBBox(),n=p[i].querySelectorAll('path,rect').length;
if(b.width>0&&b.height>0&&n>0){ok++;p[i].setAttribute('data-rendered','1');}}
document.body.setAttribute('data-plots-total',p.length);document.body.setAttribute('data-plots-rendered',ok);
document.body.setAttribute('data-fits-width',document.documentElement.scrollWidth<=innerWidth?1:0);});
)";

std::string missing_box(const std::string& what) {
  return "<p class=\"missing\">Missing: " + esc(what) + "</p>\n";
}

}  // namespace

Status report_write(const ReportPaths& p, ReportResult* out) {
  *out = ReportResult();
  out->path = p.out.empty() ? path_join(p.reports_dir, "report.html") : p.out;
  std::string h = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
                  "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
                  "<title>bitkd run report</title><style>" +
                  std::string(k_css) + "</style></head><body>\n<h1>bitkd run report</h1>\n";
  auto need = [&](const std::string& path) {
    if (!file_exists(path)) out->missing.push_back(path);
    return file_exists(path);
  };
  const std::string sum_path = path_join(p.reports_dir, "pipeline_summary.json");
  const std::string eval_path = path_join(p.reports_dir, "mini_evaluation_report.json");
  const std::string dry_path = path_join(p.reports_dir, "dryrun_7b.json");
  const std::string abl_path = path_join(p.reports_dir, "ablation.json");
  json sum, ev, dry, abl;
  const bool have_sum = need(sum_path) && load_json(sum_path, &sum);
  const bool have_eval = need(eval_path) && load_json(eval_path, &ev);
  const bool have_dry = need(dry_path) && load_json(dry_path, &dry);
  const bool have_abl = file_exists(abl_path) && load_json(abl_path, &abl);
  h += "<p>Written " + utc_timestamp_iso() + " by bitkd " + BITKD_VERSION + " from " + esc(p.reports_dir) + " and " +
       esc(p.logs_dir) + ".</p>\n";

  // ---- the run
  h += "<h2>The run</h2>\n";
  if (have_sum) {
    h += "<p>Status <b>" + esc(sum.value("status", std::string("?"))) + "</b>, scale " +
         esc(sum.value("scale", std::string("?"))) + ", " + num(get(sum, {"wall_s"}), "%.0f") + " s; teacher: " +
         esc(sum.contains("teacher") ? sum["teacher"].value("description", std::string()) : std::string()) +
         "; machine: " + esc(sum.value("machine", std::string())) + ".</p>\n<table><tr><th>stage</th><th>status</th>"
         "<th>time (s)</th><th>cpu (s)</th></tr>\n";
    for (const json& s : sum.value("stages", json::array())) {
      const double t = s.value("status", std::string()) == "skipped" ? get(s, {"last_run_duration_s"})
                                                                      : get(s, {"duration_s"});
      h += "<tr><td>" + esc(s.value("name", std::string())) + "</td><td>" + esc(s.value("status", std::string())) +
           "</td><td>" + num(t, "%.1f") + "</td><td>" + num(get(s, {"cpu_s"}), "%.1f") + "</td></tr>\n";
    }
    h += "</table>\n";
  } else {
    h += missing_box(sum_path + " (the pipeline writes it at the end)");
  }

  // ---- training curves
  h += "<h2>Training</h2>\n";
  const std::vector<json> tm = load_jsonl(path_join(p.logs_dir, "train_metrics.jsonl"));
  const std::vector<json> pm = load_jsonl(path_join(p.logs_dir, "pretrain_metrics.jsonl"));
  if (tm.empty()) {
    out->missing.push_back(path_join(p.logs_dir, "train_metrics.jsonl"));
    h += missing_box(path_join(p.logs_dir, "train_metrics.jsonl") + " (the train stage writes it)");
  } else {
    Series loss{"loss", {}, {}}, kl{"KL", {}, {}}, ce{"CE", {}, {}}, fmt{"format CE", {}, {}}, lr{"learning rate", {}, {}};
    double flip = NAN;
    int prev_bits = -1;
    for (const json& r : tm) {
      const double st = get(r, {"step"});
      loss.x.push_back(st), loss.y.push_back(get(r, {"loss"}));
      kl.x.push_back(st), kl.y.push_back(get(r, {"kl"}));
      ce.x.push_back(st), ce.y.push_back(get(r, {"ce"}));
      fmt.x.push_back(st), fmt.y.push_back(get(r, {"format"}));
      lr.x.push_back(st), lr.y.push_back(get(r, {"lr"}));
      const int bits = (int)get(r, {"act_bits"});
      if (prev_bits == 8 && bits == 4 && !std::isfinite(flip)) flip = st;
      prev_bits = bits;
    }
    if (have_sum) {
      for (const json& s : sum.value("stages", json::array()))
        if (s.value("name", std::string()) == "train" && s.contains("numbers") && s["numbers"].contains("flip_step") &&
            s["numbers"]["flip_step"].is_number() && s["numbers"]["flip_step"].get<double>() >= 0)
          flip = s["numbers"]["flip_step"].get<double>();
    }
    std::vector<std::pair<double, std::string>> marks = {{flip, "A8 -> A4"}};
    h += line_chart("student_losses", "Student: loss terms per step", "step", {loss, kl, ce, fmt}, marks, true);
    h += line_chart("student_lr", "Student: learning rate", "step", {lr}, marks);
    out->plots += 2;
  }
  if (!pm.empty()) {
    Series tl{"loss", {}, {}};
    for (const json& r : pm) tl.x.push_back(get(r, {"step"})), tl.y.push_back(get(r, {"loss"}));
    h += line_chart("teacher_loss", "Teacher pretraining: loss per step", "step", {tl}, {}, true);
    out->plots++;
  }

  // ---- quality
  h += "<h2>Quality on the held-out prompts</h2>\n";
  if (have_eval) {
    // Families as eval scored them (quality.<side>.per_task): teacher, student, untrained side by side.
    const char* const side_keys[] = {"teacher", "student", "untrained"};
    const char* const side_names[] = {"teacher", "student", "untrained model"};
    const json& q = ev["quality"];
    std::vector<std::string> cats;
    std::vector<const char*> keys;
    std::vector<Series> sides;
    for (int k = 0; k < 3; k++) {
      const char* side = side_keys[k];
      if (!q.contains(side) || !q[side].is_object() || !q[side].contains("per_task")) continue;
      for (auto it = q[side]["per_task"].begin(); it != q[side]["per_task"].end(); ++it)
        if (std::find(cats.begin(), cats.end(), it.key()) == cats.end()) cats.push_back(it.key());
      keys.push_back(side);
      sides.push_back(Series{side_names[k], {}, {}});
    }
    std::sort(cats.begin(), cats.end());
    for (size_t k = 0; k < sides.size(); k++)
      for (const std::string& c : cats) sides[k].y.push_back(get(q, {keys[k], "per_task", c.c_str(), "score"}));
    const double qs = get(ev, {"quality", "student", "score"}), qt = get(ev, {"quality", "teacher", "score"}),
                 qu = get(ev, {"quality", "untrained", "score"});
    h += "<p>Task score: teacher <b>" + num(qt) + "</b>, student <b>" + num(qs) + "</b>, untrained model " + num(qu) +
         "; JSON validity teacher " + num(get(ev, {"quality", "teacher", "json_validity"})) + ", student " +
         num(get(ev, {"quality", "student", "json_validity"})) + "; top-1 agreement " + num(get(ev, {"agreement", "top1"})) +
         ".</p>\n";
    if (!cats.empty()) {
      h += bar_chart("quality_per_family", "Task score per family (held-out)", cats, sides);
      out->plots++;
    }
    h += bar_chart("quality_overall", "Task score overall", {"all families"},
                   {Series{"teacher", {}, {qt}}, Series{"student", {}, {qs}}, Series{"untrained model", {}, {qu}}});
    out->plots++;
  } else {
    h += missing_box(eval_path + " (the eval stage writes it)");
  }

  // ---- QEI and gates
  h += "<h2>QEI and the gates</h2>\n";
  if (have_eval) {
    const json& q = ev["qei_metrics"];
    h += "<p>QEI = (Qs/Qt)/(Ms/Mt) = <b>" + num(get(q, {"qei"})) + "</b>; QEI_speed = <b>" + num(get(q, {"qei_speed"})) +
         "</b>.</p>\n<table><tr><th>gate</th><th>status</th><th>measured</th></tr>\n";
    if (q.contains("gates") && q["gates"].is_object())
      for (auto it = q["gates"].begin(); it != q["gates"].end(); ++it) {
        const std::string st = it.value().value("status", std::string());
        h += "<tr><td>" + esc(it.value().value("item", it.key())) + "</td><td class=\"" +
             (st == "pass" ? "pass" : st == "fail" ? "fail" : "nm") + "\">" + esc(st) + "</td><td>" +
             esc(it.value().value("detail", std::string())) + "</td></tr>\n";
      }
    h += "</table>\n";
  } else {
    h += missing_box(eval_path);
  }
  if (have_sum) {
    h += "<table><tr><th>checklist item</th><th>status</th><th>detail</th></tr>\n";
    for (const json& c : sum.value("checklist", json::array())) {
      const std::string st = c.value("status", std::string());
      h += "<tr><td>" + esc(c.value("item", std::string())) + "</td><td class=\"" +
           (st == "pass" ? "pass" : st == "fail" ? "fail" : "nm") + "\">" + esc(st) + "</td><td>" +
           esc(c.value("detail", std::string())) + "</td></tr>\n";
    }
    h += "</table>\n";
  }

  // ---- speed and memory
  h += "<h2>Speed and memory</h2>\n";
  if (have_eval) {
    const json& q = ev["qei_metrics"];
    h += "<div class=\"grid2\">" +
         bar_chart("decode_speed", "Decode tokens/s", {"tokens/s"},
                   {Series{"teacher", {}, {get(q, {"teacher_tps"})}}, Series{"student", {}, {get(q, {"student_tps"})}}}) +
         bar_chart("weight_memory", "Weights (MB)", {"MB"},
                   {Series{"teacher", {}, {get(q, {"teacher_memory_gb"}) * 1e3}},
                    Series{"student", {}, {get(q, {"student_memory_gb"}) * 1e3}}}) +
         "</div>\n<p>Teacher speed: " + esc(q.value("teacher_tps_source", std::string("baseline"))) + ".</p>\n";
    out->plots += 2;
  } else {
    h += missing_box(eval_path);
  }

  // ---- 7B dry run
  h += "<h2>The 7B dry run</h2>\n";
  if (have_dry) {
    h += "<p>" + num(get(dry, {"params", "count"}) / 1e9, "%.2f") + "B parameters in packed ternary weights; peak RSS <b>" +
         num(get(dry, {"peak_rss_bytes"}) / (1024.0 * 1024 * 1024), "%.2f") + " GiB</b>.</p>\n<table><tr><th>run</th>"
         "<th>forward time (s)</th><th>forward tokens/s</th><th>decode tokens/s</th></tr>\n";
    for (const json& r : dry.value("runs", json::array()))
      h += "<tr><td>" + esc(r.value("name", std::string())) + "</td><td>" + num(get(r, {"time_s"}), "%.2f") + "</td><td>" +
           num(get(r, {"tokens_per_s"}), "%.2f") + "</td><td>" + num(get(r, {"decode", "tokens_per_s"}), "%.2f") +
           "</td></tr>\n";
    h += "</table>\n";
  } else {
    h += missing_box(dry_path + " (the dryrun stage writes it)");
  }

  // ---- the experiment
  if (have_abl) {
    h += "<h2>Experiment: recipes side by side</h2>\n<p>" + num(get(abl, {"seeds"}), "%.0f") +
         " seeds per arm, mean and sample standard deviation; every arm the same steps of the same batch.</p>\n"
         "<table><tr><th>arm</th><th>recipe</th><th>validation</th><th>held-out</th></tr>\n";
    std::vector<std::string> cats;
    Series v{"validation", {}, {}}, ho{"held-out", {}, {}};
    std::vector<double> ve, he;
    for (const json& a : abl.value("arms", json::array())) {
      cats.push_back(a.value("arm", std::string()));
      v.y.push_back(get(a, {"val_mean"})), ve.push_back(get(a, {"val_sd"}));
      ho.y.push_back(get(a, {"heldout_mean"})), he.push_back(get(a, {"heldout_sd"}));
      h += "<tr><td>" + esc(a.value("arm", std::string())) + "</td><td>" + esc(a.value("recipe", std::string())) +
           "</td><td>" + num(get(a, {"val_mean"})) + " &plusmn; " + num(get(a, {"val_sd"})) + "</td><td>" +
           num(get(a, {"heldout_mean"})) + " &plusmn; " + num(get(a, {"heldout_sd"})) + "</td></tr>\n";
    }
    h += "</table>\n<p>The teacher itself: validation " + num(get(abl, {"teacher", "val"})) + ", held-out " +
         num(get(abl, {"teacher", "heldout"})) + ".</p>\n";
    std::vector<std::string> short_cats;
    for (size_t i = 0; i < cats.size(); i++) short_cats.push_back(std::to_string(i + 1));
    h += bar_chart("ablation", "Task score per arm (1 = first row of the table)", short_cats, {v, ho}, {ve, he});
    out->plots++;
  }
  h += "<script>" + std::string(k_script) + "</script>\n</body></html>\n";
  return write_file_atomic(out->path, h);
}

}  // namespace bk
