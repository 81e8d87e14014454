#pragma once
// Multi-head self-attention relation distillation (MiniLM v2; BitDistill
// uses it next to logit KD). For one layer and each of X = Q, K, V (after
// RoPE for Q and K, as the attention uses them), per batch row and head:
//
//   R_X = softmax(X X^T / sqrt(d))   over keys j <= i that are not padding
//   loss = mean over (X, row, head, query i) of KL(R_X^teacher || R_X^student)
//
// Student and teacher have the same heads and head size (a student
// initialized from its teacher does). The backward gives dX for the student:
// with G = (R_s - R_t) / count on the allowed entries,
//   dX = (G + G^T) X / sqrt(d).
#include <cstdint>

namespace bk {

struct AttnRelationShape {
  int B = 0, T = 0;   // batch rows, positions
  int H = 0, KV = 0;  // query heads (Q) and key/value heads (K, V)
  int hd = 0;         // head size
};

// qs [B*T, H*hd], ks/vs [B*T, KV*hd] (student), qt/kt/vt the teacher's;
// key_mask [B*T] (1: real token; null: all real). Writes dq, dk, dv (same
// shapes as qs, ks, vs) = d(loss)/dX times weight, and returns the loss.
// A query position with no allowed key (padding) is left out of the mean.
double attn_relation_forward_backward(const float* qs, const float* ks, const float* vs, const float* qt,
                                      const float* kt, const float* vt, const uint8_t* key_mask,
                                      const AttnRelationShape& s, float weight, float* dq, float* dk, float* dv);

}  // namespace bk
