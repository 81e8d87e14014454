#include "core/timing.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <thread>

namespace bk {

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

std::string utc_timestamp_iso() {
  time_t t = time(nullptr);
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

static int64_t read_status_kb(const char* key) {
  FILE* f = fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  int64_t kb = 0;
  size_t klen = strlen(key);
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, key, klen) == 0) {
      long long v = 0;
      if (sscanf(line + klen, " %lld", &v) == 1) kb = v;
      break;
    }
  }
  fclose(f);
  return kb;
}

int64_t peak_rss_bytes() { return read_status_kb("VmHWM:") * 1024; }
int64_t current_rss_bytes() { return read_status_kb("VmRSS:") * 1024; }

std::string cpu_model_name() {
  FILE* f = fopen("/proc/cpuinfo", "r");
  if (!f) return "";
  char line[512];
  std::string name;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "model name", 10) == 0) {
      const char* p = strchr(line, ':');
      if (p) {
        name = p + 1;
        while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
        while (!name.empty() && name.front() == ' ') name.erase(name.begin());
      }
      break;
    }
  }
  fclose(f);
  return name;
}

int hardware_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n ? (int)n : 1;
}

}  // namespace bk
