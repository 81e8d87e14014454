#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang + ASan + UBSan, in build-fuzz)
# and runs each for a bounded time on its seed corpus and dictionary.
#   scripts/fuzz.sh [seconds per target, default 20] [target ...]
#   scripts/fuzz.sh --seeds    regenerate the binary seeds with bitkd's writers
# New inputs go to build-fuzz/corpus/<target> (not committed); a finding
# leaves its reproducer in build-fuzz/findings/ and fails the script: fix the
# library, then copy the reproducer into fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${FUZZ_BUILD_DIR:-build-fuzz}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
command -v clang++-14 >/dev/null || { echo "fuzz: clang++-14 missing: bash scripts/setup.sh --test" >&2; exit 1; }
CC=clang-14 CXX=clang++-14 cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBITKD_FUZZ=ON -DBITKD_MPI=OFF >/dev/null
cmake --build "$B" -j "$JOBS" --target fuzz_all fuzz_seeds >/dev/null

if [ "${1:-}" = "--seeds" ]; then
  exec "$B/fuzz/fuzz_seeds" fuzz/corpus
fi
secs=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(parquet gguf safetensors serve_api providers dotenv spm_model)

dict_of() {
  case "$1" in
    parquet) echo fuzz/dict/parquet.dict ;;
    gguf) echo fuzz/dict/gguf.dict ;;
    serve_api | providers) echo fuzz/dict/json.dict ;;
    dotenv) echo fuzz/dict/dotenv.dict ;;
  esac
}

mkdir -p "$B/findings"
failed=0
for t in "${targets[@]}"; do
  exe="$B/fuzz/fuzz_$t"
  work="$B/corpus/fuzz_$t"
  mkdir -p "$work"
  args=(-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1
        -artifact_prefix="$B/findings/${t}_")
  d=$(dict_of "$t")
  [ -n "$d" ] && args+=(-dict="$d")
  log="$B/fuzz_$t.log"
  start=$(date +%s)
  if "$exe" "${args[@]}" "$work" "fuzz/corpus/fuzz_$t" >"$log" 2>&1; then rc=0; else rc=$?; fi
  took=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)
  printf 'fuzz_%-12s %6ss  execs %-10s %s\n' "$t" "$took" "${execs:-?}" "${cov:-?}"
  if [ "$rc" -ne 0 ]; then
    echo "fuzz_$t: FINDING (exit $rc), see $log and $B/findings/" >&2
    grep -E '^==[0-9]+==ERROR|runtime error|SUMMARY' "$log" | head -5 >&2 || true
    failed=1
  fi
done
exit $failed
