// OpenAI request validation, chat templates and generated-text bookkeeping.
#include "serve/api.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "tokenizer/chat_template.h"

namespace bk {

using json = nlohmann::json;

Status render_chat(const std::string& tmpl, const std::vector<ChatMessage>& messages, std::string* out) {
  out->clear();
  BK_TRY(template_check(tmpl));
  std::string system;
  // Turns after merging consecutive user messages.
  std::vector<ChatMessage> turns;
  for (size_t i = 0; i < messages.size(); i++) {
    const ChatMessage& m = messages[i];
    if (m.role == "system" || m.role == "developer") {
      if (!system.empty()) system += "\n";
      system += m.content;
    } else if (m.role == "user" || m.role == "assistant") {
      if (m.role == "user" && !turns.empty() && turns.back().role == "user")
        turns.back().content += "\n" + m.content;
      else
        turns.push_back(m);
    } else {
      return errorf("messages[%zu].role is '%s'; supported roles are system, developer, user and assistant", i,
                    m.role.c_str());
    }
  }
  if (turns.empty()) return errorf("messages has no user or assistant message");
  if (!system.empty()) *out += system + "\n\n";
  for (size_t i = 0; i < turns.size(); i++) {
    if (turns[i].role == "user") {
      std::string turn;
      BK_TRY(template_render(tmpl, turns[i].content, &turn));
      *out += turn;
    } else {
      *out += turns[i].content;
      if (i + 1 < turns.size()) *out += "\n\n";
    }
  }
  return ok_status();
}

namespace serve_detail {

std::string error_json(const ApiError& e) {
  json j;
  j["error"]["message"] = e.message;
  j["error"]["type"] = e.type;
  j["error"]["param"] = e.param.empty() ? json(nullptr) : json(e.param);
  j["error"]["code"] = e.code.empty() ? json(nullptr) : json(e.code);
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {

bool fail(ApiError* err, const std::string& param, const std::string& msg, const std::string& code = "") {
  err->status = 400;
  err->type = "invalid_request_error";
  err->param = param;
  err->message = msg;
  err->code = code;
  return false;
}

const char* type_name(const json& v) {
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer() || v.is_number_unsigned()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_array()) return "an array";
  if (v.is_object()) return "an object";
  return "null";
}

// Present and not null.
bool has(const json& j, const char* key) { return j.contains(key) && !j[key].is_null(); }

bool get_int(const json& j, const char* key, long long lo, long long hi, long long* out, ApiError* err) {
  const json& v = j[key];
  long long x;
  if (v.is_number_integer() || v.is_number_unsigned()) {
    if (v.is_number_unsigned() && v.get<unsigned long long>() > (unsigned long long)INT64_MAX)
      return fail(err, key, std::string(key) + " is too large");
    x = v.get<long long>();
  } else if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>() &&
             std::fabs(v.get<double>()) < 9e15) {
    x = (long long)v.get<double>();
  } else {
    return fail(err, key, std::string(key) + " must be an integer, got " + type_name(v) + " (" + v.dump() + ")");
  }
  if (x < lo || x > hi)
    return fail(err, key,
                std::string(key) + " is " + std::to_string(x) + "; it must be between " + std::to_string(lo) +
                    " and " + std::to_string(hi));
  *out = x;
  return true;
}

bool get_num(const json& j, const char* key, double lo, double hi, double* out, ApiError* err) {
  const json& v = j[key];
  if (!v.is_number())
    return fail(err, key, std::string(key) + " must be a number, got " + type_name(v) + " (" + v.dump() + ")");
  double x = v.get<double>();
  if (!(x >= lo && x <= hi)) {
    char buf[160];
    snprintf(buf, sizeof buf, "%s is %g; it must be between %g and %g", key, x, lo, hi);
    return fail(err, key, buf);
  }
  *out = x;
  return true;
}

bool get_bool(const json& j, const char* key, bool* out, ApiError* err) {
  const json& v = j[key];
  if (!v.is_boolean())
    return fail(err, key, std::string(key) + " must be a boolean, got " + type_name(v) + " (" + v.dump() + ")");
  *out = v.get<bool>();
  return true;
}

// Message content: a string, or an array of {"type": "text", "text": ...} parts.
bool get_content(const json& v, size_t idx, std::string* out, ApiError* err) {
  std::string param = "messages[" + std::to_string(idx) + "].content";
  if (v.is_null()) {
    out->clear();
    return true;
  }
  if (v.is_string()) {
    *out = v.get<std::string>();
    return true;
  }
  if (!v.is_array()) return fail(err, param, param + " must be a string or an array of text parts, got " + type_name(v));
  out->clear();
  for (size_t k = 0; k < v.size(); k++) {
    const json& part = v[k];
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" || !part.contains("text") ||
        !part["text"].is_string())
      return fail(err, param, param + "[" + std::to_string(k) + "] must be {\"type\": \"text\", \"text\": string}; "
                                  "only text content is supported");
    *out += part["text"].get<std::string>();
  }
  return true;
}

}  // namespace

bool parse_request(const std::string& body, bool chat, GenRequest* r, ApiError* err) {
  *r = GenRequest();
  r->chat = chat;
  json j;
  try {
    j = json::parse(body);
  } catch (const std::exception& e) {
    return fail(err, "", std::string("the request body is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) return fail(err, "", std::string("the request body must be a JSON object, got ") + type_name(j));

  if (has(j, "model")) {
    if (!j["model"].is_string()) return fail(err, "model", std::string("model must be a string, got ") + type_name(j["model"]));
    r->model = j["model"].get<std::string>();
  }

  if (chat) {
    if (!j.contains("messages")) return fail(err, "messages", "messages is required");
    const json& m = j["messages"];
    if (!m.is_array()) return fail(err, "messages", std::string("messages must be an array, got ") + type_name(m));
    if (m.empty()) return fail(err, "messages", "messages must contain at least one message");
    for (size_t i = 0; i < m.size(); i++) {
      std::string p = "messages[" + std::to_string(i) + "]";
      if (!m[i].is_object()) return fail(err, p, p + " must be an object, got " + type_name(m[i]));
      if (!m[i].contains("role") || !m[i]["role"].is_string())
        return fail(err, p + ".role", p + ".role must be a string");
      ChatMessage cm;
      cm.role = m[i]["role"].get<std::string>();
      if (cm.role != "system" && cm.role != "developer" && cm.role != "user" && cm.role != "assistant")
        return fail(err, p + ".role",
                    p + ".role is '" + cm.role + "'; supported roles are system, developer, user and assistant");
      if (!m[i].contains("content") && cm.role != "assistant") return fail(err, p + ".content", p + ".content is required");
      if (m[i].contains("content") && !get_content(m[i]["content"], i, &cm.content, err)) return false;
      r->messages.push_back(cm);
    }
  } else {
    if (!j.contains("prompt")) return fail(err, "prompt", "prompt is required");
    const json& p = j["prompt"];
    if (p.is_string()) {
      r->prompt = p.get<std::string>();
    } else if (p.is_array() && p.size() == 1 && p[0].is_string()) {
      r->prompt = p[0].get<std::string>();
    } else if (p.is_array() && p.size() > 1 && p[0].is_string()) {
      return fail(err, "prompt", "only one prompt per request is supported; send one request per prompt");
    } else {
      return fail(err, "prompt", std::string("prompt must be a string, got ") + type_name(p));
    }
  }

  long long iv;
  double dv;
  const char* max_key = chat && has(j, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  if (!chat && has(j, "echo") && !get_bool(j, "echo", &r->echo, err)) return false;
  if (has(j, max_key)) {
    // 0 only with echo: scoring the prompt without generating.
    if (!get_int(j, max_key, r->echo ? 0 : 1, 1 << 30, &iv, err)) return false;
    r->max_tokens = (int)iv;
  }
  if (has(j, "temperature")) {
    if (!get_num(j, "temperature", 0.0, 2.0, &dv, err)) return false;
    r->temperature = (float)dv;
  }
  if (has(j, "top_p")) {
    if (!get_num(j, "top_p", 0.0, 1.0, &dv, err)) return false;
    r->top_p = (float)dv;
  }
  if (has(j, "top_k")) {  // not OpenAI, but vLLM and llama.cpp accept it (-1 or 0: off)
    if (!get_int(j, "top_k", -1, 1 << 30, &iv, err)) return false;
    r->top_k = iv < 0 ? 0 : (int)iv;
  }
  if (has(j, "seed")) {
    const json& v = j["seed"];
    if (v.is_number_unsigned()) r->seed = v.get<uint64_t>();
    else if (v.is_number_integer()) r->seed = (uint64_t)v.get<int64_t>();
    else return fail(err, "seed", std::string("seed must be an integer, got ") + type_name(v));
    r->has_seed = true;
  }
  if (has(j, "n")) {
    if (!get_int(j, "n", 1, 1 << 30, &iv, err)) return false;
    if (iv != 1) return fail(err, "n", "n must be 1 (one choice per request is supported)");
  }
  if (has(j, "stop")) {
    const json& s = j["stop"];
    if (s.is_string()) {
      r->stop.push_back(s.get<std::string>());
    } else if (s.is_array()) {
      if (s.size() > 16) return fail(err, "stop", "stop has " + std::to_string(s.size()) + " strings; at most 16 are allowed");
      for (size_t i = 0; i < s.size(); i++) {
        if (!s[i].is_string())
          return fail(err, "stop", "stop[" + std::to_string(i) + "] must be a string, got " + type_name(s[i]));
        r->stop.push_back(s[i].get<std::string>());
      }
    } else {
      return fail(err, "stop", std::string("stop must be a string or an array of strings, got ") + type_name(s));
    }
    std::vector<std::string> keep;
    for (auto& x : r->stop)
      if (!x.empty()) keep.push_back(x);
    r->stop.swap(keep);
  }
  if (chat) {
    if (has(j, "logprobs") && !get_bool(j, "logprobs", &r->logprobs, err)) return false;
    if (has(j, "top_logprobs")) {
      if (!get_int(j, "top_logprobs", 0, 20, &iv, err)) return false;
      if (!r->logprobs && iv > 0)
        return fail(err, "top_logprobs", "top_logprobs needs logprobs set to true");
      r->top_logprobs = (int)iv;
    }
  } else if (has(j, "logprobs")) {
    if (!get_int(j, "logprobs", 0, 20, &iv, err)) return false;
    r->logprobs = true;
    r->top_logprobs = (int)iv;
  }
  if (has(j, "stream") && !get_bool(j, "stream", &r->stream, err)) return false;
  if (has(j, "stream_options")) {
    const json& so = j["stream_options"];
    if (!so.is_object()) return fail(err, "stream_options", "stream_options must be an object");
    if (has(so, "include_usage") && !get_bool(so, "include_usage", &r->include_usage, err)) return false;
  }
  if (r->echo && r->stream) return fail(err, "echo", "echo is not supported with stream");
  if (!chat && has(j, "suffix")) return fail(err, "suffix", "suffix is not supported");
  if (chat && has(j, "tools") && j["tools"].is_array() && !j["tools"].empty())
    return fail(err, "tools", "tools are not supported by this server");
  return true;
}

// ---------------------------------------------------------------------------

size_t utf8_complete_prefix(const std::string& s, size_t n) {
  // Look back at most 3 bytes for the lead byte of a trailing sequence.
  size_t i = n;
  int back = 0;
  while (i > 0 && back < 4 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) i--, back++;
  if (i == 0) return n;
  unsigned char lead = (unsigned char)s[i - 1];
  size_t need = lead < 0x80 ? 1 : (lead >> 5) == 6 ? 2 : (lead >> 4) == 14 ? 3 : (lead >> 3) == 30 ? 4 : 1;
  size_t have = n - (i - 1);
  return have < need ? i - 1 : n;
}

bool utf8_valid(const std::string& s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    unsigned char c = (unsigned char)s[i];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!len || i + len > n) return false;
    if (len == 2 && c < 0xC2) return false;
    for (size_t k = 1; k < len; k++)
      if (((unsigned char)s[i + k] & 0xC0) != 0x80) return false;
    if (len == 3) {
      unsigned char c1 = (unsigned char)s[i + 1];
      if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 >= 0xA0)) return false;
    }
    if (len == 4) {
      unsigned char c1 = (unsigned char)s[i + 1];
      if ((c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 >= 0x90) || c > 0xF4) return false;
    }
    i += len;
  }
  return true;
}

size_t utf8_codepoints(const std::string& s, size_t n) {
  size_t cp = 0;
  for (size_t i = 0; i < n && i < s.size(); i++)
    if (((unsigned char)s[i] & 0xC0) != 0x80) cp++;
  return cp;
}

std::string token_display(const std::string& bytes) {
  if (utf8_valid(bytes)) return bytes;
  std::string out = "bytes:";
  char buf[8];
  for (unsigned char c : bytes) {
    snprintf(buf, sizeof buf, "\\x%02x", c);
    out += buf;
  }
  return out;
}

bool TextTracker::add(const std::string& bytes) {
  size_t old = text.size();
  tok_start.push_back(old);
  text += bytes;
  if (stop_at != std::string::npos) return true;
  for (const std::string& s : stops) {
    size_t from = old >= s.size() ? old - s.size() + 1 : 0;
    size_t at = text.find(s, from);
    if (at != std::string::npos && at < stop_at) stop_at = at;
  }
  return stop_at != std::string::npos;
}

size_t TextTracker::safe_len() const {
  if (stop_at != std::string::npos) return stop_at;
  size_t n = text.size();
  size_t hold = 0;
  for (const std::string& s : stops) {
    // Longest proper prefix of s that ends the text.
    for (size_t k = std::min(s.size() - 1, n); k > hold; k--)
      if (text.compare(n - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
  }
  return utf8_complete_prefix(text, n - hold);
}

size_t TextTracker::output_tokens() const {
  if (stop_at == std::string::npos) return tok_start.size();
  size_t n = 0;
  while (n < tok_start.size() && tok_start[n] < stop_at) n++;
  return n;
}

}  // namespace serve_detail
}  // namespace bk
