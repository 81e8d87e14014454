#include "model/generate.h"

#include "core/timing.h"

namespace bk {

Status generate(InferSession* s, const std::vector<int32_t>& prompt, const GenerateOptions& opt, GenerateResult* out) {
  *out = GenerateResult();
  out->prompt_tokens = (int)prompt.size();
  if (prompt.empty()) return errorf("generate: the prompt has no tokens (a BOS token at least is needed)");
  if (opt.max_new_tokens < 0) return errorf("generate: max_new_tokens is %d, expected >= 0", opt.max_new_tokens);
  infer_session_reset(s);
  const int max_ctx = infer_session_max_ctx(s);
  if ((int)prompt.size() > max_ctx)
    return errorf("the prompt has %zu tokens but the context holds %d", prompt.size(), max_ctx);

  double t0 = now_seconds();
  BK_TRY(infer_session_eval(s, prompt.data(), (int)prompt.size()));
  double t1 = now_seconds();
  out->prefill_s = t1 - t0;

  Rng rng;
  rng_seed(&rng, opt.seed);
  const int vocab = infer_session_vocab(s);
  std::vector<TokenLogprob> top;
  out->finish_reason = "length";
  while ((int)out->ids.size() < opt.max_new_tokens) {
    const float* logits = infer_session_logits(s);
    int32_t tok = sample_token(logits, vocab, opt.sampling, &rng);
    if (tok == opt.eos_id) {
      out->finish_reason = "stop";
      break;
    }
    out->ids.push_back(tok);
    out->logprobs.push_back(token_logprob(logits, vocab, tok));
    if (opt.top_logprobs > 0) {
      top_logprobs(logits, vocab, opt.top_logprobs, &top);
      out->top.push_back(top);
    }
    if (opt.on_token && opt.on_token(tok)) {
      out->finish_reason = "stop";
      break;
    }
    if ((int)out->ids.size() >= opt.max_new_tokens) break;
    if (infer_session_pos(s) >= max_ctx) break;  // context full: "length"
    BK_TRY(infer_session_eval(s, &tok, 1));
  }
  out->decode_s = now_seconds() - t1;
  return ok_status();
}

}  // namespace bk
