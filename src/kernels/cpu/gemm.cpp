// Dense matmuls on OpenBLAS (OpenMP build) and the shared thread setting.
#include <cblas.h>
#include <omp.h>

#include "kernels/cpu/kernels.h"

namespace bk {

void kernels_set_threads(int n) {
  if (n <= 0) n = omp_get_num_procs();
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int kernels_get_threads() { return omp_get_max_threads(); }

void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
          int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k,
              alpha, a, lda, b, ldb, beta, c, ldc);
}

// y[n,out] = x[n,in] @ W[out,in]^T
void matmul_forward(float* y, const float* x, const float* w, int n, int in, int out) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
}

// dx[n,in] (+)= dy[n,out] @ W[out,in]
void matmul_backward_dx(float* dx, const float* dy, const float* w, int n, int in, int out, bool accumulate) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy, out, w, in, accumulate ? 1.0f : 0.0f,
              dx, in);
}

// dW[out,in] += dy[n,out]^T @ x[n,in]
void matmul_backward_dw(float* dw, const float* dy, const float* x, int n, int in, int out) {
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out, x, in, 1.0f, dw, in);
}

}  // namespace bk
