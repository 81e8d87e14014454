#pragma once
// Training losses over the model's logits buffer, computed in place: each
// function reads logits [n, vocab] and overwrites them with dL/dlogits, so no
// extra [n, vocab] copy ever exists.
#include <cstdint>

namespace bk {

// Weighted cross-entropy, forward and backward fused (one row at a time: max,
// sum of exp, gradient), OpenMP over rows.
//   loss = sum_i w_i * CE_i / sum_i w_i,  CE_i = logsumexp(z_i) - z_i[t_i]
//   dlogits_i = w_i * (softmax(z_i) - onehot(t_i)) / sum_i w_i
// weights: [n] (nullptr = all 1); a weight of 0 ignores the position (prompt,
// padding) and its target may be anything (e.g. -1). A weighted position whose
// target lies outside [0, vocab) is ignored too. Ignored rows get zero
// gradient. When no position counts the loss is 0 and every gradient 0 (never
// NaN). *out_sum_weight (optional) receives sum_i w_i over counted positions,
// so callers can rescale to a sum or a different mean.
float ce_loss_forward_backward(float* logits, const int32_t* targets, const float* weights, int n, int vocab,
                               float* out_sum_weight);

}  // namespace bk
