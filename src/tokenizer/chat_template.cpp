#include "tokenizer/chat_template.h"

namespace bk {

static const char k_placeholder[] = "{prompt}";

std::string template_unescape(const std::string& tmpl) {
  std::string out;
  out.reserve(tmpl.size());
  for (size_t i = 0; i < tmpl.size(); i++) {
    if (tmpl[i] == '\\' && i + 1 < tmpl.size()) {
      char n = tmpl[i + 1];
      if (n == 'n') { out += '\n'; i++; continue; }
      if (n == 't') { out += '\t'; i++; continue; }
      if (n == 'r') { out += '\r'; i++; continue; }
      if (n == '\\') { out += '\\'; i++; continue; }
    }
    out += tmpl[i];
  }
  return out;
}

Status template_check(const std::string& tmpl) {
  if (tmpl.find(k_placeholder) == std::string::npos)
    return errorf("the chat template has no {prompt} placeholder (set TEMPLATE or --template, e.g. "
                  "\"<|user|>\\n{prompt}\\n\\n<|assistant|>\\n\")");
  return ok_status();
}

Status template_render(const std::string& tmpl, const std::string& prompt, std::string* out) {
  BK_TRY(template_check(tmpl));
  const size_t key_len = sizeof k_placeholder - 1;
  out->clear();
  size_t pos = 0;
  for (size_t at; (at = tmpl.find(k_placeholder, pos)) != std::string::npos; pos = at + key_len) {
    out->append(tmpl, pos, at - pos);
    out->append(prompt);
  }
  out->append(tmpl, pos, std::string::npos);
  return ok_status();
}

}  // namespace bk
