#pragma once
// The chat template (TEMPLATE): the text around a user prompt, for example
// "<|user|>\n{prompt}\n\n<|assistant|>\n". Every command that turns a prompt
// into model input (collect, baseline, eval, pretrain, serve, tokenizer train)
// renders it here, so they all see the same text for the same prompt.
#include <string>

#include "core/status.h"

namespace bk {

// "\\n", "\\t", "\\r", "\\\\" escapes (as .env files write them) become
// characters; any other backslash stays as it is.
std::string template_unescape(const std::string& tmpl);
// Error when the template has no "{prompt}" placeholder.
Status template_check(const std::string& tmpl);
// Replaces every "{prompt}" with the prompt (the prompt itself is not
// scanned again); other braces are literal text. Errors as template_check.
Status template_render(const std::string& tmpl, const std::string& prompt, std::string* out);

}  // namespace bk
