// libFuzzer target: Parquet files (data/parquet) and the KD tables on top of
// them (data/kd_schema: step shards and prompt tables). The reader takes a
// path, so each input is written to one scratch file per process first.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "data/kd_schema.h"
#include "data/parquet/parquet.h"

static std::string scratch_path() {
  const char* dir = getenv("TMPDIR");
  return std::string(dir && *dir ? dir : "/tmp") + "/bitkd_fuzz_parquet_" + std::to_string(getpid()) + ".parquet";
}

static void read_generic(const std::string& path) {
  bk::pq::Reader r;
  if (!r.open(path).ok()) return;
  (void)r.key_values();
  bk::pq::ColumnData col;
  for (int rg = 0; rg < r.num_row_groups(); rg++) {
    for (int c = 0; c < (int)r.columns().size(); c++) {
      if (!r.columns()[c].unsupported.empty()) continue;
      bk::pq::ColumnChunkInfo info;
      (void)r.chunk_info(rg, c, &info);
      (void)r.read_column(rg, c, &col);
    }
  }
}

template <class Reader, class Row>
static void read_kd(const std::string& path, bool lenient) {
  bk::KdReadOptions o;
  o.skip_bad_rows = lenient;
  o.allow_missing_bitkd_columns = lenient;
  Reader r;
  if (!r.open(path, o).ok()) return;
  std::vector<Row> rows;
  for (int rg = 0; rg < r.num_row_groups(); rg++)
    if (!r.read_row_group(rg, &rows).ok()) return;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = scratch_path();
  FILE* f = fopen(path.c_str(), "wb");
  if (!f) abort();
  if (size && fwrite(data, 1, size, f) != size) abort();
  fclose(f);
  read_generic(path);
  read_kd<bk::KdStepReader, bk::KdStep>(path, false);
  read_kd<bk::KdStepReader, bk::KdStep>(path, true);
  read_kd<bk::KdPromptReader, bk::KdPrompt>(path, true);
  return 0;
}
