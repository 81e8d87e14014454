// libFuzzer target: the `.env` reader (io/config).
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "io/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::map<std::string, std::string> out;
  (void)bk::dotenv_parse(std::string((const char*)data, size), "fuzz.env", &out);
  return 0;
}
