#pragma once
// Inference session: one KV cache over a Model's weights, for the server, the
// teacher baseline, the evaluator and the collector's local teacher.
// Float models run float math; ternary models run the exact fake-quant math
// of the training forward (same quantizers, same act_bits), so the session's
// logits equal model_forward's on the same tokens. A packed-ternary backend
// (2-bit weights, integer kernels) sits behind the same API.
//
// Sessions never share mutable state: each owns its cache and scratch, and only
// reads the Model, so one Model can serve many concurrent sessions.
#include <cstdint>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/status.h"
#include "kernels/cpu/rows.h"
#include "model/model.h"

namespace bk {

enum InferBackend {
  INFER_FLOAT = 0,   // fp32 weights (fake-quant for ternary models)
  INFER_PACKED = 1,  // packed ternary weights + int8/int4 activations (ternary models only)
};

struct InferSession;  // defined in model/infer.cpp

// Prepared read-only weights for inference (quantized/packed once), shared by sessions.
struct InferWeights;
// embed_type: how the packed backend keeps the token embedding and an untied
// head (f32, f16, bf16 or q8_0, kernels/cpu/rows.h; a GGUF's own type keeps
// its values exactly); the float backend ignores it.
Status infer_weights_create(const Model* m, InferBackend backend, InferWeights** out, RowType embed_type = ROWS_F32);
void infer_weights_destroy(InferWeights* w);
// Bytes actually held for weights: float backend, every parameter in fp32;
// packed backend, 2-bit BitLinear codes + gammas, the embedding and head in
// their kept type, and fp32 norms. The Model may be destroyed once the weights are created.
size_t infer_weights_bytes(const InferWeights* w);
InferBackend infer_weights_backend(const InferWeights* w);
const ModelConfig& infer_weights_config(const InferWeights* w);

// max_ctx: KV cache capacity in tokens (0: cfg.max_seq_len). Positions past
// max_seq_len work (RoPE is computed for any position) but the model never saw them.
Status infer_session_create(const InferWeights* w, int max_ctx, InferSession** out);
void infer_session_destroy(InferSession* s);
void infer_session_reset(InferSession* s);  // empty the cache
int infer_session_pos(const InferSession* s);   // tokens in the cache
int infer_session_max_ctx(const InferSession* s);

// Appends n tokens (batched prefill) and computes the logits of the last one.
// Errors: id out of range, cache full (names the capacity).
Status infer_session_eval(InferSession* s, const int32_t* tokens, int n);
// Same, and writes the logits of every new token to logits [n, vocab] (scoring
// a given continuation, perplexity, teacher logprobs of a known text).
Status infer_session_eval_all(InferSession* s, const int32_t* tokens, int n, float* logits);
// [vocab] logits after the last infer_session_eval.
const float* infer_session_logits(const InferSession* s);
int infer_session_vocab(const InferSession* s);

struct SamplingParams {
  float temperature = 0.0f;  // 0 = greedy
  float top_p = 1.0f;
  int top_k = 0;             // 0 = off
};
// Picks a token from logits; greedy ties go to the lowest id.
int sample_token(const float* logits, int vocab, const SamplingParams& p, Rng* rng);

struct TokenLogprob {
  int id;
  float logprob;
};
// The k most likely tokens under softmax(logits) (temperature 1, the model's
// own distribution, as OpenAI's logprobs report), sorted by logprob descending.
void top_logprobs(const float* logits, int vocab, int k, std::vector<TokenLogprob>* out);
float token_logprob(const float* logits, int vocab, int id);

}  // namespace bk
