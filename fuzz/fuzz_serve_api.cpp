// libFuzzer target: request bodies of the serve API (serve/api), both the
// chat and the completions shape.
#include <cstddef>
#include <cstdint>
#include <string>

#include "serve/api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body((const char*)data, size);
  for (bool chat : {true, false}) {
    bk::serve_detail::GenRequest req;
    bk::serve_detail::ApiError err;
    if (!bk::serve_detail::parse_request(body, chat, &req, &err)) (void)bk::serve_detail::error_json(err);
  }
  (void)bk::serve_detail::utf8_valid(body);
  (void)bk::serve_detail::utf8_codepoints(body, body.size());
  (void)bk::serve_detail::utf8_complete_prefix(body, body.size());
  (void)bk::serve_detail::token_display(body);
  return 0;
}
