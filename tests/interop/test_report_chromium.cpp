// `bitkd report` opened in a real browser (Debian's chromium, headless): the
// page's own script counts the SVG plots that laid out with real geometry and
// writes the counts on <body>; --dump-dom returns the DOM after it ran. Inputs
// are small files in the shapes the pipeline writes (the pipeline test checks
// the real ones feed every plot).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <regex>

#include "core/fs.h"
#include "testutil/testutil.h"

using namespace bk;
using nlohmann::json;

namespace {

// Missing tools are a failure with the fix, never a silent skip.
bool chromium_ready(std::string* why) {
  std::string out;
  if (bk_test::run_command("chromium --version", &out) != 0) {
    *why = "chromium is not installed: run bash scripts/setup.sh --test";
    return false;
  }
  return true;
}

std::string chromium(const std::string& dir, const std::string& args, std::string* out) {
  const std::string cmd = "timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-background-networking "
                          "--disable-component-update --disable-sync --no-first-run --user-data-dir='" +
                          dir + "/profile' " + args + " 2>/dev/null";
  const int rc = bk_test::run_command(cmd, out);
  return rc == 0 ? "" : "chromium failed (" + std::to_string(rc) + "): " + cmd;
}

// The body's data-plots-total and data-plots-rendered (-1 when absent: the script did not run).
void rendered_counts(const std::string& dom, int* total, int* rendered) {
  std::smatch m;
  *total = *rendered = -1;
  if (std::regex_search(dom, m, std::regex("data-plots-total=\"(\\d+)\""))) *total = std::stoi(m[1]);
  if (std::regex_search(dom, m, std::regex("data-plots-rendered=\"(\\d+)\""))) *rendered = std::stoi(m[1]);
}

void put(const std::string& path, const json& j) { ASSERT_TRUE(write_file_atomic(path, j.dump()).ok()) << path; }

void write_run(const std::string& art) {
  ASSERT_TRUE(make_dirs(art + "/reports").ok());
  ASSERT_TRUE(make_dirs(art + "/logs").ok());
  json stages = json::array();
  for (const char* s : {"tasks", "pretrain", "train", "eval"})
    stages.push_back({{"name", s}, {"status", "ok"}, {"duration_s", 1.5}, {"cpu_s", 1.0}});
  stages[2]["numbers"] = {{"flip_step", 80}};
  put(art + "/reports/pipeline_summary.json",
      {{"status", "ok"}, {"scale", "tiny"}, {"wall_s", 12.0}, {"machine", "test <machine>"},
       {"teacher", {{"description", "teacher <b>bold</b>"}}}, {"stages", stages},
       {"checklist", {{{"item", "loss fell"}, {"status", "pass"}, {"detail", "7.5 -> 0.3"}}}}});
  put(art + "/reports/mini_evaluation_report.json",
      {{"quality",
        {{"student", {{"score", 0.5}, {"json_validity", 1.0}, {"per_task", {{"json_object", {{"n", 3}, {"score", 0.4}}}, {"sql", {{"n", 3}, {"score", 0.6}}}}}}},
         {"teacher", {{"score", 1.0}, {"json_validity", 1.0}, {"per_task", {{"json_object", {{"n", 3}, {"score", 1.0}}}, {"sql", {{"n", 3}, {"score", 1.0}}}}}}},
         {"untrained", {{"score", 0.05}, {"per_task", {{"json_object", {{"n", 3}, {"score", 0.0}}}, {"sql", {{"n", 3}, {"score", 0.1}}}}}}}}},
       {"agreement", {{"top1", 0.8}}},
       {"qei_metrics",
        {{"qei", 2.5}, {"qei_speed", 6.0}, {"student_tps", 3000.0}, {"teacher_tps", 1500.0},
         {"student_memory_gb", 0.0005}, {"teacher_memory_gb", 0.0027},
         {"gates", {{"qei_ge_0.2", {{"item", "QEI >= 0.2"}, {"status", "pass"}, {"detail", "QEI 2.5"}}},
                    {"q", {{"item", "Qs >= 0.8 Qt"}, {"status", "fail"}, {"detail", "Qs 0.5"}}}}}}}});
  put(art + "/reports/dryrun_7b.json",
      {{"params", {{"count", 8.85e9}}}, {"peak_rss_bytes", 2.8e9},
       {"runs", {{{"name", "A8_forward"}, {"time_s", 10.2}, {"tokens_per_s", 6.3}}}}});
  put(art + "/reports/ablation.json",
      {{"seeds", 3}, {"teacher", {{"val", 0.37}, {"heldout", 0.295}}},
       {"arms", {{{"arm", "ce_reference"}, {"recipe", "CE on references"}, {"val_mean", 0.3}, {"val_sd", 0.02},
                  {"heldout_mean", 0.28}, {"heldout_sd", 0.01}},
                 {{"arm", "kd_teacher_init"}, {"recipe", "KD + CE, teacher init"}, {"val_mean", 0.47},
                  {"val_sd", 0.03}, {"heldout_mean", 0.33}, {"heldout_sd", 0.02}}}}});
  std::string tm, pm;
  for (int step = 10; step <= 100; step += 10) {
    tm += json({{"step", step}, {"loss", 5.0 / step}, {"kl", 2.0 / step}, {"ce", 4.0 / step}, {"format", 3.0 / step},
                {"lr", 0.003 * (1.0 - step / 110.0)}, {"act_bits", step > 80 ? 4 : 8}})
              .dump() +
          "\n";
    pm += json({{"step", step}, {"loss", 7.0 / step}}).dump() + "\n";
  }
  ASSERT_TRUE(write_file_atomic(art + "/logs/train_metrics.jsonl", tm).ok());
  ASSERT_TRUE(write_file_atomic(art + "/logs/pretrain_metrics.jsonl", pm).ok());
}

TEST(ReportChromium, EveryPlotRendersInAHeadlessBrowser) {
  std::string why;
  ASSERT_TRUE(chromium_ready(&why)) << why;
  const std::string dir = bk_test::scratch_dir("report_chromium_full"), art = dir + "/artifacts";
  write_run(art);
  std::string out;
  ASSERT_EQ(bk_test::run_command(bk_test::bitkd_exe() + " report --env-file /nonexistent --artifacts '" + art + "'", &out), 0)
      << out;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(out, m, std::regex("\\((\\d+) plots\\)"))) << out;
  const int plots = std::stoi(m[1]);
  EXPECT_EQ(plots, 8) << out;  // 2 student curves, teacher loss, 2 quality, 2 speed/memory, ablation
  EXPECT_EQ(out.find("missing"), std::string::npos) << out;

  const std::string page = art + "/reports/report.html";
  std::string html;
  ASSERT_TRUE(read_file(page, &html).ok());
  EXPECT_NE(html.find("teacher &lt;b&gt;bold&lt;/b&gt;"), std::string::npos) << "text from inputs is escaped";
  EXPECT_EQ(html.find("<b>bold</b>"), std::string::npos);
  EXPECT_NE(html.find("The teacher itself: validation 0.37, held-out 0.295"), std::string::npos);
  EXPECT_EQ(html.find("http://"), std::string::npos) << "the page loads nothing from a network";
  EXPECT_EQ(html.find("https://"), std::string::npos);

  std::string dom;
  ASSERT_EQ(chromium(dir, "--dump-dom 'file://" + page + "'", &dom), "");
  int total = 0, rendered = 0;
  rendered_counts(dom, &total, &rendered);
  EXPECT_EQ(total, plots) << dom.substr(0, 400);
  EXPECT_EQ(rendered, plots) << "every plot laid out with a non-empty box";

  // On a phone-sized window nothing needs sideways scrolling.
  std::string phone;
  ASSERT_EQ(chromium(dir, "--window-size=390,844 --dump-dom 'file://" + page + "'", &phone), "");
  EXPECT_NE(phone.find("data-fits-width=\"1\""), std::string::npos) << phone.substr(0, 400);

  // A picture of it too (what a user sees): chromium writes a PNG.
  std::string shot_out;
  ASSERT_EQ(chromium(dir, "--window-size=1000,3000 --screenshot='" + dir + "/report.png' 'file://" + page + "'", &shot_out),
            "");
  std::string png;
  ASSERT_TRUE(read_file(dir + "/report.png", &png).ok()) << shot_out;
  ASSERT_GT(png.size(), 1000u);
  EXPECT_EQ(png.substr(1, 3), "PNG");
}

TEST(ReportChromium, MissingInputsAreNamedAndThePageStillOpens) {
  std::string why;
  ASSERT_TRUE(chromium_ready(&why)) << why;
  const std::string dir = bk_test::scratch_dir("report_chromium_empty"), art = dir + "/artifacts";
  ASSERT_TRUE(make_dirs(art + "/reports").ok());
  std::string out;
  ASSERT_EQ(bk_test::run_command(bk_test::bitkd_exe() + " report --env-file /nonexistent --artifacts '" + art + "'", &out), 0)
      << out;
  for (const char* f : {"pipeline_summary.json", "mini_evaluation_report.json", "dryrun_7b.json", "train_metrics.jsonl"})
    EXPECT_NE(out.find(f), std::string::npos) << f << " named as missing:\n" << out;
  std::string html;
  ASSERT_TRUE(read_file(art + "/reports/report.html", &html).ok());
  EXPECT_NE(html.find("Missing: " + art + "/reports/pipeline_summary.json"), std::string::npos);

  std::string dom;
  ASSERT_EQ(chromium(dir, "--dump-dom 'file://" + art + "/reports/report.html'", &dom), "");
  int total = -1, rendered = -1;
  rendered_counts(dom, &total, &rendered);
  EXPECT_EQ(total, 0) << "the script ran and found no plots";
  EXPECT_EQ(rendered, 0);
}

}  // namespace
