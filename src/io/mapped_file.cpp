#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

namespace bk {

Status map_file_readonly(const std::string& path, const char* what, std::shared_ptr<void>* mapping, size_t* size) {
  const int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return errorf("%s: cannot open %s: %s", path.c_str(), what, strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    const int e = errno;
    close(fd);
    return errorf("%s: cannot map %s: %s", path.c_str(), what, strerror(e));
  }
  if (sb.st_size <= 0) {
    close(fd);
    return errorf("%s: not a %s (it is empty)", path.c_str(), what);
  }
  void* addr = mmap(nullptr, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (addr == MAP_FAILED) return errorf("%s: cannot map %s: %s", path.c_str(), what, strerror(errno));
  const size_t len = (size_t)sb.st_size;
  *mapping = std::shared_ptr<void>(addr, [len](void* p) { munmap(p, len); });
  *size = len;
  return ok_status();
}

void release_mapped_range(const void* p, size_t n) {
  const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  const uintptr_t begin = (uintptr_t)p, end = begin + n;
  const uintptr_t b = (begin + page - 1) / page * page, e = end / page * page;
  if (e > b) madvise((void*)b, e - b, MADV_DONTNEED);
}

}  // namespace bk
