#pragma once
// Data-parallel processes: `mpirun -np N bitkd train|pretrain|collect`.
// Built with MPI (Open MPI, found by CMake) the N processes (ranks) share
// gradients and counters through these calls; built without it, or started
// without mpirun, there is one rank and every call is a no-op. A bitkd
// without MPI started by mpirun with N > 1 refuses to run (dist_init says
// which package to install) instead of training N unrelated copies.
//
// All calls are collective except the queries: every rank calls them in the
// same order, from the main thread.
#include <cstddef>
#include <string>

#include "core/status.h"

namespace bk {

Status dist_init(int* argc, char*** argv);  // once, before anything else
// Ends MPI; with rc != 0 and other ranks, aborts the whole job (they might
// otherwise wait forever in a collective call).
void dist_finalize(int rc);
bool dist_built_with_mpi();
int dist_rank();        // 0 .. dist_size()-1
int dist_size();        // ranks in the job (1 without mpirun)
int dist_local_size();  // ranks on this machine
std::string dist_describe();  // "one process" or "MPI (Open MPI ...), rank r of n, l on this machine"

// In place, the element-wise sum over ranks; every rank gets the same result.
Status dist_allreduce_sum(float* x, size_t n);
Status dist_allreduce_sum(double* x, size_t n);
Status dist_allreduce_sum(long long* x, size_t n);

}  // namespace bk
