// dist.h: MPI when built with it (BITKD_MPI), one rank otherwise.
#include "core/dist.h"

#include <cstdlib>
#include <cstring>

#ifdef BITKD_MPI
#include <mpi.h>
#endif

namespace bk {

namespace {

int g_rank = 0, g_size = 1, g_local = 1;
bool g_mpi = false;  // MPI_Init was called

// The launcher's own variables (Open MPI, MPICH/Hydra, PMIx): set when
// mpirun started this process.
int launcher_size() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"}) {
    const char* s = getenv(v);
    if (s && *s) return atoi(s);
  }
  return 0;
}

}  // namespace

bool dist_built_with_mpi() {
#ifdef BITKD_MPI
  return true;
#else
  return false;
#endif
}

Status dist_init(int* argc, char*** argv) {
  const int launched = launcher_size();
#ifdef BITKD_MPI
  if (launched < 1) return ok_status();  // not under mpirun: one process, no MPI runtime
  int provided = 0;
  // Only the main thread calls MPI; OpenMP threads compute in between.
  if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
    return errorf("MPI_Init_thread failed (is this process started by mpirun?)");
  g_mpi = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &local);
  MPI_Comm_size(local, &g_local);
  MPI_Comm_free(&local);
  return ok_status();
#else
  (void)argc, (void)argv;
  if (launched > 1)
    return errorf("this bitkd was built without MPI but runs under mpirun with %d processes: install Open MPI "
                  "(apt-get install libopenmpi-dev openmpi-bin, or bash scripts/setup.sh --test) and rebuild (make "
                  "build); a build without MPI runs as one process",
                  launched);
  return ok_status();
#endif
}

void dist_finalize(int rc) {
#ifdef BITKD_MPI
  if (g_mpi && rc != 0 && g_size > 1) MPI_Abort(MPI_COMM_WORLD, rc);
  if (g_mpi) MPI_Finalize();
  g_mpi = false;
#else
  (void)rc;
#endif
}

int dist_rank() { return g_rank; }
int dist_size() { return g_size; }
int dist_local_size() { return g_local; }

std::string dist_describe() {
  if (g_size <= 1) return "one process";
  std::string s = "MPI";
#ifdef BITKD_MPI
  char lib[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  if (MPI_Get_library_version(lib, &len) == MPI_SUCCESS) {
    std::string v(lib, (size_t)len);
    const size_t comma = v.find(',');
    s += " (" + v.substr(0, comma) + ")";
  }
#endif
  return s + ", rank " + std::to_string(g_rank) + " of " + std::to_string(g_size) + ", " + std::to_string(g_local) +
         " on this machine";
}

#ifdef BITKD_MPI
namespace {
template <typename T>
Status allreduce(T* x, size_t n, MPI_Datatype type) {
  if (g_size <= 1 || n == 0) return ok_status();
  const size_t chunk = (size_t)1 << 30;  // MPI counts are int
  for (size_t at = 0; at < n; at += chunk) {
    const int cnt = (int)(n - at < chunk ? n - at : chunk);
    if (MPI_Allreduce(MPI_IN_PLACE, x + at, cnt, type, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS)
      return errorf("MPI_Allreduce of %zu values failed (rank %d of %d)", n, g_rank, g_size);
  }
  return ok_status();
}
}  // namespace
Status dist_allreduce_sum(float* x, size_t n) { return allreduce(x, n, MPI_FLOAT); }
Status dist_allreduce_sum(double* x, size_t n) { return allreduce(x, n, MPI_DOUBLE); }
Status dist_allreduce_sum(long long* x, size_t n) { return allreduce(x, n, MPI_LONG_LONG); }
#else
Status dist_allreduce_sum(float*, size_t) { return ok_status(); }
Status dist_allreduce_sum(double*, size_t) { return ok_status(); }
Status dist_allreduce_sum(long long*, size_t) { return ok_status(); }
#endif

}  // namespace bk
