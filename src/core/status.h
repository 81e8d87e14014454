#pragma once
// Status: how modules report failure without exceptions. An empty message
// means success. Messages name the file, row, field or value at fault and,
// where possible, what to do about it.
#include <string>

namespace bk {

// [[nodiscard]]: a dropped Status is a dropped error; code that really means
// to ignore one logs it and says why.
struct [[nodiscard]] Status {
  std::string msg;  // empty = ok
  bool ok() const { return msg.empty(); }
};

inline Status ok_status() { return Status{}; }
// printf-style constructor for an error.
Status errorf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
// Prefixes context ("reading foo.parquet: ") to an error; ok stays ok.
Status with_context(Status s, const std::string& context);

}  // namespace bk

// Return early from a function returning Status when an expression fails.
#define BK_TRY(expr)                         \
  do {                                       \
    ::bk::Status bk_try_status_ = (expr);    \
    if (!bk_try_status_.ok()) return bk_try_status_; \
  } while (0)
