#include "core/status.h"

#include <cstdarg>
#include <cstdio>
#include <vector>

namespace bk {

Status errorf(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(nullptr, 0, fmt, ap);
  va_end(ap);
  std::vector<char> buf(n > 0 ? n + 1 : 1);
  vsnprintf(buf.data(), buf.size(), fmt, ap2);
  va_end(ap2);
  Status s;
  s.msg.assign(buf.data());
  if (s.msg.empty()) s.msg = "error";
  return s;
}

Status with_context(Status s, const std::string& context) {
  if (s.ok()) return s;
  s.msg = context + ": " + s.msg;
  return s;
}

}  // namespace bk
