#include "core/log.h"

#include <cstdarg>
#include <cstdio>
#include <mutex>

#include "core/timing.h"

namespace bk {

static LogLevel g_level = LOG_INFO;
static std::mutex g_mu;
static FILE* g_file = nullptr;

void log_set_level(LogLevel level) { g_level = level; }
LogLevel log_get_level() { return g_level; }

bool log_set_level_name(const std::string& name) {
  if (name == "DEBUG" || name == "debug") g_level = LOG_DEBUG;
  else if (name == "INFO" || name == "info") g_level = LOG_INFO;
  else if (name == "WARNING" || name == "WARN" || name == "warning") g_level = LOG_WARNING;
  else if (name == "ERROR" || name == "error") g_level = LOG_ERROR;
  else return false;
  return true;
}

void log_set_file(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_file) fclose(g_file);
  g_file = path.empty() ? nullptr : fopen(path.c_str(), "a");
}

void log_msg(LogLevel level, const char* fmt, ...) {
  if (level < g_level && !g_file) return;
  static const char* names[] = {"debug", "info", "warning", "error"};
  char msg[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  std::lock_guard<std::mutex> lock(g_mu);
  if (level >= g_level) fprintf(stderr, "[bitkd] %s: %s\n", names[level], msg);
  if (g_file) {
    fprintf(g_file, "%s %s: %s\n", utc_timestamp_iso().c_str(), names[level], msg);
    fflush(g_file);
  }
}

}  // namespace bk
