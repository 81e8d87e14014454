// Causal multi-head attention with a key padding mask and grouped KV heads.
// The forward runs one fixed-order routine per query row (attention_row),
// shared with the inference sessions; the softmax probabilities are saved for
// the backward pass, which uses sgemm.
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/kernels.h"
#include "kernels/cpu/simd.h"

namespace bk {

// Per-thread scratch, grown on demand and kept (no per-call allocation).
static float* scratch(size_t n) {
  static thread_local std::vector<float> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

// Dot product in a fixed order: element i goes to lane i % 8 (whole groups of
// 8), lanes are combined pairwise, then the tail in order. The AVX2 body and
// the scalar loop do the same operations, so every build gets the same bits.
static inline float dot_fixed(const float* a, const float* b, int n) {
  float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
#ifdef BK_AVX2
  __m256 acc = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
  _mm256_storeu_ps(lane, acc);
#endif
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; l++) lane[l] = lane[l] + a[i + l] * b[i + l];
  float s = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  for (; i < n; i++) s = s + a[i] * b[i];
  return s;
}

#ifdef BK_AVX2
// dot_fixed for 8 keys at once (k rows `stride` floats apart), the same bits:
// the same lane sums, and a transposed reduction that adds the lanes of each
// key in the same pairwise order ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)).
static inline void dot8_fixed(const float* a, const float* k, size_t stride, int n, float* out) {
  __m256 acc[8];
  for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 av = _mm256_loadu_ps(a + i);
    for (int j = 0; j < 8; j++) acc[j] = _mm256_add_ps(acc[j], _mm256_mul_ps(av, _mm256_loadu_ps(k + j * stride + i)));
  }
  const __m256 h0 = _mm256_hadd_ps(_mm256_hadd_ps(acc[0], acc[1]), _mm256_hadd_ps(acc[2], acc[3]));
  const __m256 h1 = _mm256_hadd_ps(_mm256_hadd_ps(acc[4], acc[5]), _mm256_hadd_ps(acc[6], acc[7]));
  const __m256 lo = _mm256_permute2f128_ps(h0, h1, 0x20), hi = _mm256_permute2f128_ps(h0, h1, 0x31);
  _mm256_storeu_ps(out, _mm256_add_ps(lo, hi));
  for (; i < n; i++)
    for (int j = 0; j < 8; j++) out[j] = out[j] + a[i] * k[j * stride + i];
}
#endif

void attention_row(float* out, float* probs, const float* q, const float* k, const float* v, int kv_stride,
                   const uint8_t* mask, int nkeys, int d, float scale) {
  int j = 0;
#ifdef BK_AVX2
  for (; j + 8 <= nkeys; j += 8) {
    dot8_fixed(q, k + (size_t)j * kv_stride, (size_t)kv_stride, d, probs + j);
    for (int t = j; t < j + 8; t++) probs[t] = mask && !mask[t] ? -INFINITY : probs[t] * scale;
  }
#endif
  for (; j < nkeys; j++)
    probs[j] = mask && !mask[j] ? -INFINITY : dot_fixed(q, k + (size_t)j * kv_stride, d) * scale;
  memset(out, 0, sizeof(float) * d);
  const float mx = vec_max(probs, nkeys);
  if (mx == -INFINITY) {  // no visible real key: zero probabilities, zero output
    memset(probs, 0, sizeof(float) * nkeys);
    return;
  }
  const double sum = vec_exp_shift_sum(probs, nkeys, mx);
  vec_scale(probs, nkeys, (float)(1.0 / sum));
  for (int j = 0; j < nkeys; j++) {
    const float p = probs[j];
    const float* vj = v + (size_t)j * kv_stride;
#pragma omp simd
    for (int e = 0; e < d; e++) out[e] = out[e] + p * vj[e];
  }
}

// q [B,T,H,d], k,v [B,T,KV,d], mask [B,T] -> out [B,T,H,d], att [B,H,T,T]:
// attention_row for every query, so training and the inference sessions
// (which call it on their KV cache) compute the same bits.
void attention_forward(float* out, float* att, const float* q, const float* k, const float* v, const uint8_t* mask,
                       int B, int T, int H, int KV, int d) {
  const float scale = 1.0f / std::sqrt((float)d);
  const int group = H / KV;
  const int Q = H * d, K = KV * d;  // token row strides of q/out and k/v
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if ((double)B * H * T * T * d > 262144.0)
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < H; h++) {
      const int kvh = h / group;
      const float* qb = q + (size_t)b * T * Q + (size_t)h * d;   // [T, d] rows stride Q
      const float* kb = k + (size_t)b * T * K + (size_t)kvh * d;  // [T, d] rows stride K
      const float* vb = v + (size_t)b * T * K + (size_t)kvh * d;
      float* ob = out + (size_t)b * T * Q + (size_t)h * d;
      float* P = att + ((size_t)b * H + h) * T * T;  // [T, T]
      const uint8_t* mrow = mask ? mask + (size_t)b * T : nullptr;
      for (int t = 0; t < T; t++) {
        float* row = P + (size_t)t * T;
        attention_row(ob + (size_t)t * Q, row, qb + (size_t)t * Q, kb, vb, K, mrow, t + 1, d, scale);
        memset(row + t + 1, 0, sizeof(float) * (T - t - 1));
      }
    }
  }
}

// The backward works on blocks of query rows with sgemm; a block [r0, r1)
// only needs keys [0, r1) (causal). Inside an OpenMP region OpenBLAS runs
// single-threaded, so each (batch, kv head) is one thread's job.
static const int kRowBlock = 64;

// With P = softmax(S), S = scale * q k^T, O = P v:
//   dP = dO v^T;  dS = P * (dP - rowsum(P * dP));  dq = scale dS k;  dk = scale dS^T q;  dv = P^T dO
// Parallel over (batch, kv head): each task owns its dk/dv rows and the dq rows
// of the query heads in its group, so there are no write races.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* att, int B, int T, int H, int KV, int d) {
  const float scale = 1.0f / std::sqrt((float)d);
  const int group = H / KV;
  const int Q = H * d, K = KV * d;
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if ((double)B * H * T * T * d > 262144.0 && B * KV > 1)
  for (int b = 0; b < B; b++) {
    for (int kvh = 0; kvh < KV; kvh++) {
      float* dS = scratch((size_t)kRowBlock * T);  // [rows, T]
      const float* kb = k + (size_t)b * T * K + (size_t)kvh * d;
      const float* vb = v + (size_t)b * T * K + (size_t)kvh * d;
      float* dkb = dk + (size_t)b * T * K + (size_t)kvh * d;
      float* dvb = dv + (size_t)b * T * K + (size_t)kvh * d;
      for (int t = 0; t < T; t++) {
        memset(dkb + (size_t)t * K, 0, sizeof(float) * d);
        memset(dvb + (size_t)t * K, 0, sizeof(float) * d);
      }
      for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        const float* qb = q + (size_t)b * T * Q + (size_t)h * d;
        const float* dob = dout + (size_t)b * T * Q + (size_t)h * d;
        float* dqb = dq + (size_t)b * T * Q + (size_t)h * d;
        const float* P = att + ((size_t)b * H + h) * T * T;
        for (int r0 = 0; r0 < T; r0 += kRowBlock) {
          const int r1 = r0 + kRowBlock < T ? r0 + kRowBlock : T, nr = r1 - r0;
          const float* Pb = P + (size_t)r0 * T;
          // dP[0:nr, 0:r1] = dO[r0:r1] V[0:r1]^T
          gemm(false, true, nr, r1, d, 1.0f, dob + (size_t)r0 * Q, Q, vb, K, 0.0f, dS, T);
          for (int i = 0; i < nr; i++) {
            const float* p = Pb + (size_t)i * T;
            float* ds = dS + (size_t)i * T;
            float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (int t2 = 0; t2 < r1; t2++) dot += p[t2] * ds[t2];
#pragma omp simd
            for (int t2 = 0; t2 < r1; t2++) ds[t2] = scale * p[t2] * (ds[t2] - dot);
          }
          // dq[r0:r1] = dS K[0:r1];  dk[0:r1] += dS^T q[r0:r1];  dv[0:r1] += P^T dO[r0:r1]
          gemm(false, false, nr, d, r1, 1.0f, dS, T, kb, K, 0.0f, dqb + (size_t)r0 * Q, Q);
          gemm(true, false, r1, d, nr, 1.0f, dS, T, qb + (size_t)r0 * Q, Q, 1.0f, dkb, K);
          gemm(true, false, r1, d, nr, 1.0f, Pb, T, dob + (size_t)r0 * Q, Q, 1.0f, dvb, K);
        }
      }
    }
  }
}

double attention_flops_forward(int B, int T, int H, int d) {
  // per (b, h, t): (t+1) keys, a d-long dot product for QK and an axpy for PV
  return 4.0 * d * ((double)T * (T + 1) / 2.0) * B * H;
}

}  // namespace bk
