#include "core/fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>

namespace bk {

Status read_file(const std::string& path, std::string* out) {
  FILE* f = fopen(path.c_str(), "rb");
  if (!f) return errorf("cannot open %s: %s", path.c_str(), strerror(errno));
  out->clear();
  char buf[1 << 16];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out->append(buf, n);
  bool err = ferror(f);
  fclose(f);
  if (err) return errorf("error reading %s", path.c_str());
  return ok_status();
}

std::string temp_path_for(const std::string& path) {
  static std::atomic<unsigned> counter{0};
  return path + ".tmp." + std::to_string(getpid()) + "." + std::to_string(counter++);
}

Status commit_temp_file(const std::string& tmp, const std::string& path) {
  int fd = open(tmp.c_str(), O_RDONLY);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    unlink(tmp.c_str());
    return errorf("cannot rename %s to %s: %s", tmp.c_str(), path.c_str(), strerror(e));
  }
  return ok_status();
}

Status write_file_atomic(const std::string& path, const std::string& data) {
  std::string dir = path_dirname(path);
  if (!dir.empty() && dir != ".") BK_TRY(make_dirs(dir));
  std::string tmp = temp_path_for(path);
  FILE* f = fopen(tmp.c_str(), "wb");
  if (!f) return errorf("cannot create %s: %s", tmp.c_str(), strerror(errno));
  size_t w = fwrite(data.data(), 1, data.size(), f);
  bool bad = (w != data.size()) || fflush(f) != 0;
  fclose(f);
  if (bad) {
    unlink(tmp.c_str());
    return errorf("cannot write %s (disk full?)", path.c_str());
  }
  return commit_temp_file(tmp, path);
}

Status make_dirs(const std::string& path) {
  if (path.empty()) return ok_status();
  std::string cur;
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    cur = path.substr(0, j);
    if (!cur.empty() && !dir_exists(cur)) {
      if (mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST)
        return errorf("cannot create directory %s: %s", cur.c_str(), strerror(errno));
    }
    i = j + 1;
  }
  return ok_status();
}

bool file_exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool dir_exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

int64_t file_size(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return -1;
  return (int64_t)st.st_size;
}

std::string path_join(const std::string& a, const std::string& b) {
  if (a.empty() || (!b.empty() && b[0] == '/')) return b;
  if (a.back() == '/') return a + b;
  return a + "/" + b;
}

std::string path_dirname(const std::string& path) {
  size_t p = path.rfind('/');
  if (p == std::string::npos) return ".";
  if (p == 0) return "/";
  return path.substr(0, p);
}

std::string path_basename(const std::string& path) {
  size_t p = path.rfind('/');
  return p == std::string::npos ? path : path.substr(p + 1);
}

std::vector<std::string> list_files(const std::string& dir, const std::string& prefix, const std::string& suffix) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (!d) return out;
  while (struct dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n.size() < prefix.size() + suffix.size()) continue;
    if (n.compare(0, prefix.size(), prefix) != 0) continue;
    if (n.compare(n.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    out.push_back(n);
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace bk
