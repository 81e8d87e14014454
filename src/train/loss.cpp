// Fused in-place cross-entropy (see loss.h).
#include "train/loss.h"

#include <cmath>
#include <cstring>

#include <omp.h>

#include "kernels/cpu/kernels.h"

namespace bk {

float ce_loss_forward_backward(float* logits, const int32_t* targets, const float* weights, int n, int vocab,
                               float* out_sum_weight) {
  auto counted = [&](int i) {
    const float w = weights ? weights[i] : 1.0f;
    return w != 0.0f && targets[i] >= 0 && targets[i] < vocab;
  };
  double wsum = 0.0;
  for (int i = 0; i < n; i++)
    if (counted(i)) wsum += weights ? weights[i] : 1.0f;
  if (out_sum_weight) *out_sum_weight = (float)wsum;
  const double inv_w = wsum != 0.0 ? 1.0 / wsum : 0.0;

  // Per-thread partial losses, combined in thread order: reproducible for a
  // given thread count.
  const int kMaxThreads = 256;
  double part[kMaxThreads] = {0.0};
  int used = 1;
#pragma omp parallel if ((size_t)n * vocab > 32768)
  {
    const int tid = omp_get_thread_num();
#pragma omp single
    used = omp_get_num_threads();
    double acc = 0.0;
#pragma omp for schedule(static)
    for (int i = 0; i < n; i++) {
      float* z = logits + (size_t)i * vocab;  // [vocab]
      if (!counted(i)) {
        memset(z, 0, sizeof(float) * vocab);
        continue;
      }
      const float w = weights ? weights[i] : 1.0f;
      const int t = targets[i];
      const float zt = z[t];
      const float mx = vec_max(z, vocab);
      const double sum = vec_exp_shift_sum(z, vocab, mx);  // z <- exp(z - max)
      // CE = log(sum exp(z)) - z_t = log(sum) + max - z_t
      acc += (double)w * (std::log(sum) + (double)mx - (double)zt);
      // dz = w/W * (p - onehot)
      const float coef = (float)((double)w * inv_w / sum);
      vec_scale(z, vocab, coef);
      z[t] -= (float)((double)w * inv_w);
    }
    if (tid < kMaxThreads) part[tid] = acc;
  }
  double loss = 0.0;
  for (int t = 0; t < used && t < kMaxThreads; t++) loss += part[t];
  return (float)(loss * inv_w);
}

}  // namespace bk
