// libFuzzer target: the teacher providers' response parsers (kd/providers):
// OpenAI chat and completions, Anthropic, Gemini, llama.cpp native, and the
// echo/prompt_logprobs scoring shape. The first input byte picks the scored
// text's length, the rest is the body.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kd/providers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string body((const char*)data + 1, size - 1);
  for (bk::ProviderApi api : {bk::API_CHAT, bk::API_COMPLETIONS, bk::API_ANTHROPIC, bk::API_GEMINI, bk::API_LLAMACPP}) {
    bk::CompletionResult r;
    (void)bk::provider_parse_response(api, body, &r);
  }
  const std::string full = std::string("The scored text: prompt and continuation.").substr(0, data[0] % 42);
  std::vector<bk::TokenStep> toks;
  (void)bk::provider_parse_scored(body, full, &toks);
  return 0;
}
