// Dense matmuls on OpenBLAS (OpenMP build), the shared thread setting, and the
// choice of OpenBLAS's kernel family from the CPU's features.
#include <cblas.h>
#include <omp.h>

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "core/timing.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/ternary.h"

// OpenBLAS's own API (cblas.h declares them in newer releases only) and, in
// its DYNAMIC_ARCH builds (Debian's), the two functions that (re)select the
// kernel table. Weak, so a single-architecture OpenBLAS still links; then its
// compiled-in family is what runs.
extern "C" {
char* openblas_get_corename(void);
char* openblas_get_config(void);
void gotoblas_dynamic_init(void) __attribute__((weak));
void gotoblas_dynamic_quit(void) __attribute__((weak));
}

namespace bk {

namespace {

bool equal_nocase(const char* a, const char* b) {
  for (; *a && *b; a++, b++)
    if (std::tolower((unsigned char)*a) != std::tolower((unsigned char)*b)) return false;
  return *a == *b;
}

// The widest vector unit the CPU has and the OS enables (libgcc's
// __builtin_cpu_supports checks XCR0 for AVX and AVX-512 state).
void detect_isa(KernelInfo* k) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  k->avx512_vnni = avx512 && __builtin_cpu_supports("avx512vnni");
  k->avx512_bf16 = avx512 && __builtin_cpu_supports("avx512bf16");
  if (avx512) {
    k->vector_isa = "avx512", k->vector_bits = 512;
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    k->vector_isa = "avx2", k->vector_bits = 256;
  } else if (__builtin_cpu_supports("avx")) {
    k->vector_isa = "avx", k->vector_bits = 256;
  } else {
    k->vector_isa = "sse", k->vector_bits = 128;
  }
#else
  k->vector_isa = "generic", k->vector_bits = 128;
#endif
}

// OpenBLAS 0.3.21's x86-64 families that match each vector unit. Its own
// detection goes by CPU model numbers, so CPUs newer than the library (e.g.
// Sapphire Rapids, Zen 4/5) get AVX2 or even SSE3 ("Prescott") kernels.
const char* family_for(const KernelInfo& k) {
  if (k.vector_isa == "avx512") return k.avx512_bf16 ? "Cooperlake" : "SkylakeX";
  if (k.vector_isa == "avx2") return "Haswell";
  if (k.vector_isa == "avx") return "Sandybridge";
  return nullptr;  // leave OpenBLAS's choice
}

KernelInfo g_info;
std::once_flag g_once;

// Re-runs OpenBLAS's kernel selection with OPENBLAS_CORETYPE = family, then
// leaves the environment as it was (child processes choose for themselves).
void reload_openblas(const char* family) {
  const char* prev = std::getenv("OPENBLAS_CORETYPE");
  const std::string saved = prev ? prev : "";
  setenv("OPENBLAS_CORETYPE", family, 1);
  gotoblas_dynamic_quit();
  gotoblas_dynamic_init();
  if (prev)
    setenv("OPENBLAS_CORETYPE", saved.c_str(), 1);
  else
    unsetenv("OPENBLAS_CORETYPE");
}

// Switches to the family named; only while no matmul runs. An unknown name
// would leave OpenBLAS on its fallback family, so the previous one comes back.
bool switch_family(const char* family) {
  if (!gotoblas_dynamic_init || !gotoblas_dynamic_quit) return false;
  const std::string before = openblas_get_corename();
  reload_openblas(family);
  if (equal_nocase(openblas_get_corename(), family)) return true;
  if (!equal_nocase(openblas_get_corename(), before.c_str())) reload_openblas(before.c_str());
  return false;
}

void init_once() {
  KernelInfo& k = g_info;
  k.cpu = cpu_model_name();
  detect_isa(&k);
  k.blas = openblas_get_config();
  k.blas_family_openblas = openblas_get_corename();
  const char* forced = std::getenv("OPENBLAS_CORETYPE");
  const char* want = family_for(k);
  if (forced && *forced)
    k.blas_family_source = "OPENBLAS_CORETYPE";
  else if (!want || equal_nocase(want, k.blas_family_openblas.c_str()))
    k.blas_family_source = "OpenBLAS, matching the CPU's features";
  else if (switch_family(want))
    k.blas_family_source = "bitkd from the CPU's features; OpenBLAS alone picks " + k.blas_family_openblas;
  else
    k.blas_family_source = "OpenBLAS; a single-architecture build cannot switch to " + std::string(want);
  k.blas_family = openblas_get_corename();
}

}  // namespace

void kernels_init() { std::call_once(g_once, init_once); }

bool kernels_use_blas_family(const char* family) {
  kernels_init();
  if (!switch_family(family)) return false;
  g_info.blas_family = openblas_get_corename();
  g_info.blas_family_source = std::string("kernels_use_blas_family(") + family + ")";
  return true;
}

const KernelInfo& kernels_info() {
  kernels_init();
  g_info.ternary = ternary_backend();  // may be forced to scalar after init
  return g_info;
}

void kernels_set_threads(int n) {
  kernels_init();
  if (n <= 0) n = omp_get_num_procs();
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int kernels_get_threads() { return omp_get_max_threads(); }

void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
          int ldb, float beta, float* c, int ldc) {
  kernels_init();
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k,
              alpha, a, lda, b, ldb, beta, c, ldc);
}

// y[n,out] = x[n,in] @ W[out,in]^T
void matmul_forward(float* y, const float* x, const float* w, int n, int in, int out) {
  gemm(false, true, n, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
}

// dx[n,in] (+)= dy[n,out] @ W[out,in]
void matmul_backward_dx(float* dx, const float* dy, const float* w, int n, int in, int out, bool accumulate) {
  gemm(false, false, n, in, out, 1.0f, dy, out, w, in, accumulate ? 1.0f : 0.0f, dx, in);
}

// dW[out,in] += dy[n,out]^T @ x[n,in]
void matmul_backward_dw(float* dw, const float* dy, const float* x, int n, int in, int out) {
  gemm(true, false, out, in, n, 1.0f, dy, out, x, in, 1.0f, dw, in);
}

}  // namespace bk
