#pragma once
// Small file-system helpers. Every artifact is written atomically: to a temp
// file in the same directory, fsync'd, then renamed over the target, so a
// crash never leaves a half-written report, checkpoint or shard.
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace bk {

Status read_file(const std::string& path, std::string* out);
Status write_file_atomic(const std::string& path, const std::string& data);
Status make_dirs(const std::string& path);  // mkdir -p
bool file_exists(const std::string& path);
bool dir_exists(const std::string& path);
int64_t file_size(const std::string& path);  // -1 if missing
std::string path_join(const std::string& a, const std::string& b);
std::string path_dirname(const std::string& path);
std::string path_basename(const std::string& path);
// Files in dir whose names start with prefix and end with suffix, sorted by name.
std::vector<std::string> list_files(const std::string& dir, const std::string& prefix, const std::string& suffix);
// A unique temp path beside `path` (same directory, so rename is atomic).
std::string temp_path_for(const std::string& path);
// fsync + rename tmp over path; removes tmp on failure.
Status commit_temp_file(const std::string& tmp, const std::string& path);

}  // namespace bk
