#pragma once
// Token generation over an InferSession: prefill the prompt, then sample one
// token at a time, recording what an OpenAI-style server reports (the chosen
// token's logprob and the top-k alternatives, both under the model's own
// temperature-1 distribution). Text-level stop strings are the caller's job:
// it decodes each new token in on_token and asks to stop.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/status.h"
#include "model/infer.h"

namespace bk {

struct GenerateOptions {
  int max_new_tokens = 256;
  SamplingParams sampling;
  uint64_t seed = 1234;
  int eos_id = -1;        // stop when sampled (not part of the output); -1: none
  int top_logprobs = 0;   // alternatives recorded per step (0: none)
  // Called after each new (non-EOS) token is appended; return true to stop
  // ("stop"). May be empty.
  std::function<bool(int32_t token)> on_token;
};

struct GenerateResult {
  std::vector<int32_t> ids;                     // generated tokens (EOS excluded)
  std::vector<float> logprobs;                  // [ids.size()] logprob of each chosen token
  std::vector<std::vector<TokenLogprob>> top;   // [ids.size()][top_logprobs] (empty when 0)
  int prompt_tokens = 0;
  double prefill_s = 0.0;                       // prompt evaluation
  double decode_s = 0.0;                        // everything after the first logits
  // "stop" (EOS or on_token asked), "length" (max_new_tokens or the session's context is full).
  std::string finish_reason;
};

// Resets the session, evaluates the prompt (at least one token) and generates.
// The session's context must hold the prompt; generation ends with "length"
// when it fills up.
Status generate(InferSession* s, const std::vector<int32_t>& prompt, const GenerateOptions& opt, GenerateResult* out);

}  // namespace bk
