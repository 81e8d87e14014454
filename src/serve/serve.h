#pragma once
// `bitkd serve`: an OpenAI-compatible HTTP server over one model.
//
//   POST /v1/chat/completions   messages -> chat template -> generation
//   POST /v1/completions        prompt (raw text, no template) -> generation
//   GET  /v1/models, /v1/models/{id}, /health
//
// Each request gets its own InferSession over the shared read-only
// InferWeights, so requests run concurrently on the worker pool.
//
// Chat template (TEMPLATE, default "<|user|>\n{prompt}\n\n<|assistant|>\n";
// the PoC's). A conversation is rendered as
//   system/developer messages, joined by "\n", then "\n\n"   (if any)
//   each user turn:       TEMPLATE with {prompt} = its content
//   each assistant turn:  its content, then "\n\n"
// A user turn directly after a user turn is merged into it ("\n" between).
// When the last message is from the assistant, its content is left open
// (no "\n\n") and generation continues it.
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "model/infer.h"

namespace bk {

struct Tokenizer;

struct ServeOptions {
  std::string host = "127.0.0.1";
  int port = 8000;               // 0: any free port (the actual one is printed)
  std::string api_key;           // empty: no authentication
  std::string chat_template = "<|user|>\n{prompt}\n\n<|assistant|>\n";  // already unescaped
  std::string model_name = "bitkd";
  int threads = 0;               // OpenMP threads per request (0: cores / workers, at least 1)
  int workers = 4;               // concurrent requests (HTTP worker pool)
  size_t max_body_bytes = 1 << 20;
  int default_max_tokens = 256;  // when a request gives none (capped by the context)
  bool add_bos = true;           // prepend BOS (when the tokenizer has one) to every prompt
};

struct ServeModel {
  const InferWeights* weights = nullptr;
  const Tokenizer* tokenizer = nullptr;
};

// Binds, prints "listening on http://HOST:PORT" on stdout, and serves until
// SIGINT or SIGTERM (returns ok then) or a bind failure (error naming the
// address). Installs its own signal handling for the duration of the call.
Status serve_run(const ServeModel& model, const ServeOptions& opt);

struct ChatMessage {
  std::string role;     // system, developer, user, assistant
  std::string content;
};
// Renders a conversation with the chat template (see the header comment).
// Errors: no user or assistant message, an unknown role, {prompt} missing from the template.
Status render_chat(const std::string& tmpl, const std::vector<ChatMessage>& messages, std::string* out);

}  // namespace bk
