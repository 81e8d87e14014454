#pragma once
// Projection of a teacher step's top-K candidates onto the student vocabulary
// (docs/data_schema.md, "Projection and validity").
//
// Rule per candidate (the first-subtoken rule): the candidate's text (its raw
// bytes when the provider gives them) is encoded with the student tokenizer as
// a continuation, so no dummy-prefix space is added: " Hello" -> "▁Hello",
// "ing" -> "ing". The first student id is the candidate's id. Candidates that
// land on the same id are merged by log-sum-exp.
//
// Partial UTF-8 (a teacher token holding only some bytes of a character, e.g.
// [0xE2, 0x96] of "▁"): the student can only spell a partial character with
// byte-fallback pieces, so such a candidate maps to the byte-fallback id of
// its first byte; without byte fallback it maps to nothing. A candidate whose
// leading character is complete but which ends in a partial one is encoded
// up to the last complete character. OpenAI's textual form "bytes:\xe2\x96"
// (used when a token is not valid UTF-8) is decoded to its bytes first.
// Candidates that map to nothing (empty text) add their mass to "other".
//
// Mass and validity: mass = sum exp(logprob) over the raw candidates.
// - any NaN or infinite logprob                 -> invalid (PROJ_NONFINITE)
// - mass > 1 + kProjectionMassTolerance          -> invalid (PROJ_MASS_ABOVE_ONE)
// - no candidates, or mass <= 0                  -> invalid (PROJ_NO_CANDIDATES / PROJ_MASS_NONPOSITIVE)
// - no candidate maps to a student id            -> invalid (PROJ_NOTHING_MAPPED)
// - otherwise valid; other_logprob = log(max(1 - kept_mass, 1e-6)), where
//   kept_mass is the mass of the ids kept after merging and top-K truncation.
//   A confident step whose mass rounds to 1 keeps its targets with other at
//   the floor kOtherLogprobFloor = log(1e-6) (the PoC dropped such steps).
// Invalid steps keep their projected ids (for the record) with other_logprob
// 0; the KD loss ignores them and collectors count them by status.
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace bk {

constexpr float kOtherLogprobFloor = -13.815510557964274f;  // log(1e-6)
constexpr double kProjectionMassTolerance = 1e-4;

enum ProjectionStatus {
  PROJ_VALID = 0,
  PROJ_NO_CANDIDATES,
  PROJ_NONFINITE,
  PROJ_MASS_NONPOSITIVE,
  PROJ_MASS_ABOVE_ONE,
  PROJ_NOTHING_MAPPED,
  PROJ_STATUS_COUNT
};
// "valid", "no_candidates", "nonfinite", "mass_nonpositive", "mass_above_one", "nothing_mapped".
const char* projection_status_name(int status);

struct TeacherCandidate {
  std::string text;   // token text as reported
  std::string bytes;  // raw bytes when the provider gives them (OpenAI `bytes`)
  bool has_bytes = false;
  float logprob = 0;
};

struct ProjectedStep {
  std::vector<int32_t> ids;     // [K'] distinct student ids, logprob descending (ties: smaller id first)
  std::vector<float> logprobs;  // [K']
  float other_logprob = 0;
  double mass = 0;              // raw candidate mass
  bool valid = false;
  int status = PROJ_VALID;
  bool other_floored = false;   // confident step: other clamped to kOtherLogprobFloor
  int unmapped = 0;             // candidates that mapped to no student id
};

// Memo of candidate bytes -> first student id; collection sees the same
// candidate strings over and over. Tied to one tokenizer; one per thread.
struct ProjectionCache {
  std::unordered_map<std::string, int32_t> first_id;
};

// The bytes a candidate stands for (raw bytes, else text with "bytes:\xNN"
// decoded).
std::string candidate_bytes(const TeacherCandidate& c);
// First student id of a text given as bytes; -1 when it maps to nothing.
int32_t project_text(const Tokenizer& student, const std::string& bytes, ProjectionCache* cache = nullptr);
int32_t project_candidate(const Tokenizer& student, const TeacherCandidate& c, ProjectionCache* cache = nullptr);
// max_topk <= 0: keep every merged id.
void project_step(const Tokenizer& student, const std::vector<TeacherCandidate>& cands, int max_topk,
                  ProjectedStep* out, ProjectionCache* cache = nullptr);

// The PoC's struct heuristic: the token text contains one of { } [ ] : , "
// or a code fence ```.
bool is_struct_token(const std::string& text);

}  // namespace bk
