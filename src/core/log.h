#pragma once
// Leveled logging to stderr (LOG_LEVEL=DEBUG|INFO|WARNING|ERROR), optionally
// mirrored to a log file. Never pass secrets to these functions.
#include <string>

namespace bk {

enum LogLevel { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARNING = 2, LOG_ERROR = 3 };

void log_set_level(LogLevel level);
bool log_set_level_name(const std::string& name);  // false if unknown
LogLevel log_get_level();
// Also append every line to this file (empty path stops it).
void log_set_file(const std::string& path);
void log_msg(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace bk

#define BK_LOG_DEBUG(...) ::bk::log_msg(::bk::LOG_DEBUG, __VA_ARGS__)
#define BK_LOG_INFO(...) ::bk::log_msg(::bk::LOG_INFO, __VA_ARGS__)
#define BK_LOG_WARN(...) ::bk::log_msg(::bk::LOG_WARNING, __VA_ARGS__)
#define BK_LOG_ERROR(...) ::bk::log_msg(::bk::LOG_ERROR, __VA_ARGS__)
