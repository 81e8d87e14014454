#include "kd/projection.h"

#include <algorithm>
#include <cmath>

namespace bk {

const char* projection_status_name(int status) {
  switch (status) {
    case PROJ_VALID: return "valid";
    case PROJ_NO_CANDIDATES: return "no_candidates";
    case PROJ_NONFINITE: return "nonfinite";
    case PROJ_MASS_NONPOSITIVE: return "mass_nonpositive";
    case PROJ_MASS_ABOVE_ONE: return "mass_above_one";
    case PROJ_NOTHING_MAPPED: return "nothing_mapped";
  }
  return "unknown";
}

namespace {

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Length of the complete, valid UTF-8 character at s[i], 0 if it is partial
// or malformed.
size_t utf8_char_len(const std::string& s, size_t i) {
  unsigned char b = (unsigned char)s[i];
  size_t n;
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) n = 2;
  else if (b >= 0xE0 && b <= 0xEF) n = 3;
  else if (b >= 0xF0 && b <= 0xF4) n = 4;
  else return 0;
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; k++)
    if (((unsigned char)s[i + k] & 0xC0) != 0x80) return 0;
  unsigned char b1 = (unsigned char)s[i + 1];
  // Overlong and surrogate forms are malformed too.
  if (b == 0xE0 && b1 < 0xA0) return 0;
  if (b == 0xED && b1 > 0x9F) return 0;
  if (b == 0xF0 && b1 < 0x90) return 0;
  if (b == 0xF4 && b1 > 0x8F) return 0;
  return n;
}

}  // namespace

std::string candidate_bytes(const TeacherCandidate& c) {
  if (c.has_bytes) return c.bytes;
  const std::string& t = c.text;
  // "bytes:\xe2\x96" — the textual form some APIs use for non-UTF-8 tokens.
  if (t.size() > 6 && t.compare(0, 6, "bytes:") == 0 && (t.size() - 6) % 4 == 0) {
    std::string out;
    for (size_t i = 6; i < t.size(); i += 4) {
      int hi = hexval(t[i + 2]), lo = hexval(t[i + 3]);
      if (t[i] != '\\' || t[i + 1] != 'x' || hi < 0 || lo < 0) return t;
      out.push_back((char)(hi * 16 + lo));
    }
    return out;
  }
  return t;
}

int32_t project_text(const Tokenizer& student, const std::string& bytes, ProjectionCache* cache) {
  if (bytes.empty()) return -1;
  if (cache) {
    auto it = cache->first_id.find(bytes);
    if (it != cache->first_id.end()) return it->second;
  }
  int32_t id = -1;
  if (utf8_char_len(bytes, 0) == 0) {
    id = tokenizer_byte_id(student, (uint8_t)bytes[0]);
  } else {
    size_t end = 0;
    while (end < bytes.size()) {
      size_t n = utf8_char_len(bytes, end);
      if (!n) break;
      end += n;
    }
    std::vector<int32_t> ids;
    if (tokenizer_encode_continuation(student, bytes.substr(0, end), &ids).ok() && !ids.empty()) id = ids[0];
  }
  if (cache) cache->first_id.emplace(bytes, id);
  return id;
}

int32_t project_candidate(const Tokenizer& student, const TeacherCandidate& c, ProjectionCache* cache) {
  return project_text(student, candidate_bytes(c), cache);
}

void project_step(const Tokenizer& student, const std::vector<TeacherCandidate>& cands, int max_topk,
                  ProjectedStep* out, ProjectionCache* cache) {
  *out = ProjectedStep();
  bool nonfinite = false;
  double mass = 0;
  // Candidates per student id, merged below by log-sum-exp.
  std::vector<std::pair<int32_t, float>> mapped;
  for (const TeacherCandidate& c : cands) {
    if (!std::isfinite(c.logprob)) {
      nonfinite = true;
      continue;
    }
    mass += std::exp((double)c.logprob);
    int32_t id = project_candidate(student, c, cache);
    if (id < 0) {
      out->unmapped++;
      continue;
    }
    mapped.emplace_back(id, c.logprob);
  }
  out->mass = mass;
  std::sort(mapped.begin(), mapped.end(),
            [](const std::pair<int32_t, float>& a, const std::pair<int32_t, float>& b) { return a.first < b.first; });
  std::vector<std::pair<float, int32_t>> merged;  // (logprob, id)
  for (size_t i = 0; i < mapped.size();) {
    size_t j = i;
    float m = mapped[i].second;
    while (j < mapped.size() && mapped[j].first == mapped[i].first) m = std::max(m, mapped[j++].second);
    double s = 0;
    for (size_t k = i; k < j; k++) s += std::exp((double)mapped[k].second - m);
    merged.emplace_back((float)(m + std::log(s)), mapped[i].first);
    i = j;
  }
  std::sort(merged.begin(), merged.end(), [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  if (max_topk > 0 && (int)merged.size() > max_topk) merged.resize((size_t)max_topk);
  double kept = 0;
  for (auto& p : merged) {
    out->ids.push_back(p.second);
    out->logprobs.push_back(p.first);
    kept += std::exp((double)p.first);
  }

  if (cands.empty()) out->status = PROJ_NO_CANDIDATES;
  else if (nonfinite) out->status = PROJ_NONFINITE;
  else if (mass > 1.0 + kProjectionMassTolerance) out->status = PROJ_MASS_ABOVE_ONE;
  else if (!(mass > 0)) out->status = PROJ_MASS_NONPOSITIVE;
  else if (merged.empty()) out->status = PROJ_NOTHING_MAPPED;
  else out->status = PROJ_VALID;
  out->valid = out->status == PROJ_VALID;
  if (!out->valid) {
    out->other_logprob = 0;
    return;
  }
  const double floor = 1e-6;
  double other = 1.0 - kept;
  out->other_floored = other < floor;
  out->other_logprob = out->other_floored ? kOtherLogprobFloor : (float)std::log(other);
}

bool is_struct_token(const std::string& text) {
  for (char c : text)
    if (c == '{' || c == '}' || c == '[' || c == ']' || c == ':' || c == ',' || c == '"') return true;
  return text.find("```") != std::string::npos;
}

}  // namespace bk
