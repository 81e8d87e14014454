#pragma once
// Alignment of teacher KD steps to the student's token sequence (docs/data_schema.md, "Projection and validity").
//
// The student sequence is the student tokenization of
// rendered_prompt + response (one encoding, so the boundary tokenizes as at
// inference), with BOS first and EOS last when the teacher stopped on its own.
// Position i predicts token i+1 (targets[i] = tokens[i+1]):
// - prompt tokens get no loss;
// - a response token whose first byte is at the byte offset of a valid
//   teacher step gets that step's KD buckets (top-K ids/logprobs + other);
// - every other response token (and EOS) gets CE only.
// With the same tokenizer on both sides every teacher token starts a student
// token, so every response position carries its KD bucket.
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "tokenizer/tokenizer.h"

namespace bk {

// One teacher step, already projected onto the student vocabulary.
struct AlignStep {
  int32_t step_idx = 0;
  int32_t byte_offset = 0;  // of the step's token in the response text
  int32_t sampled_id = -1;  // teacher_sample_id (student id); informational
  bool is_struct = false;
  bool valid = true;
  std::vector<int32_t> topk_ids;
  std::vector<float> topk_logprobs;
  float other_logprob = 0;
};

struct AlignInput {
  std::string rendered_prompt;  // template already applied
  std::string response;
  bool finished = true;  // the teacher stopped (finish_reason "stop"): append EOS
};

struct AlignOptions {
  int max_seq_len = 256;    // tokens per example (inputs); longer sequences are cut
  int max_topk = 20;        // K: slots per KD position (longer lists are cut, their mass moved to other)
  bool add_bos = true;
  // Per-position CE weights written into AlignedExample::ce_weight:
  // KD positions: kd_ce_weight (+ format_weight when the step is structural);
  // CE-only response positions: plain_ce_weight.
  float kd_ce_weight = 0.25f;
  float format_weight = 0.2f;
  float plain_ce_weight = 1.0f;
};

// Why a teacher step did not become a KD slot.
struct AlignStats {
  int64_t steps = 0;             // steps given
  int64_t steps_aligned = 0;     // became KD slots
  int64_t steps_invalid = 0;     // valid == false
  int64_t steps_unaligned = 0;   // offset is not where a student token starts
  int64_t steps_duplicate = 0;   // a second step at an offset already used
  int64_t steps_truncated = 0;   // position beyond max_seq_len
  int64_t steps_bad_ids = 0;     // a top-K id outside the student vocabulary
  int64_t positions_kd = 0;      // positions with a KD slot
  int64_t positions_ce = 0;      // positions with CE only
  int64_t sampled_mismatch = 0;  // aligned steps whose sampled id differs from the student token
  int64_t tokens_truncated = 0;  // tokens cut by max_seq_len
  void add(const AlignStats& o);
};

struct AlignedExample {
  std::vector<int32_t> tokens;   // [T] input ids, BOS first
  std::vector<int32_t> targets;  // [T] next-token id, -1: no loss at this position
  std::vector<float> ce_weight;  // [T] CE weight (0 where targets is -1)
  std::vector<int32_t> kd_slot;  // [T] index of the KD slot, -1: none
  // KD slots, S = number of slots, K = topk:
  int32_t topk = 0;
  std::vector<int32_t> slot_ids;       // [S*K] student ids, -1 = padded slot (ignore; its logprob is 0)
  std::vector<float> slot_logprobs;    // [S*K]
  std::vector<float> slot_other;       // [S] other_logprob
  std::vector<uint8_t> slot_struct;    // [S]
  std::vector<int32_t> slot_position;  // [S] the position holding the slot
  std::vector<int32_t> slot_step;      // [S] teacher step_idx
  int32_t prompt_tokens = 0;           // tokens (with BOS) before the response
  int32_t response_tokens = 0;         // response tokens (with EOS) inside the window
  int num_slots() const { return (int)slot_other.size(); }
};

// Start offset of each student token in the encoded text ([n] begins; -1 for
// tokens that start no byte, e.g. the dummy prefix).
void token_starts(const std::vector<TokenSpan>& spans, std::vector<int32_t>* starts);

// Fails only on bad input (a step whose top-K lists disagree in length, an
// empty response with no EOS); misaligned steps are counted, not errors.
Status align_example(const Tokenizer& student, const AlignInput& in, const std::vector<AlignStep>& steps,
                     const AlignOptions& opt, AlignedExample* out, AlignStats* stats);

// Teacher steps of traces written without byte offsets (the PoC's shards):
// offsets from the cumulative byte length of each step's sampled text, in
// step order. Returns false when the texts do not concatenate to the response.
bool derive_byte_offsets(const std::vector<std::string>& sampled_texts, const std::string& response,
                         std::vector<int32_t>* offsets);

}  // namespace bk
