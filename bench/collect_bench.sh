#!/usr/bin/env bash
# KD collection throughput, printed as JSON by `bitkd bench collect`:
#  1. client overhead: requests/s through the provider client against an
#     in-process server returning one canned chat completion (64 tokens x 20
#     candidates), and a full collect (parse, projection, Parquet) against it;
#  2. collection steps/s against a local `bitkd serve` at concurrency 1, 4, 8.
# The teacher is a float model of the given size (untrained: speed does not
# depend on the weights), its tokenizer trained on the task suite.
#
# usage: bench/collect_bench.sh [build-dir]   (env: DIM LAYERS HEADS PROMPTS MAX_TOKENS CONC REQUESTS WORK)
set -euo pipefail

BUILD=${1:-build}
BITKD=${BITKD:-$BUILD/bitkd}
WORK=${WORK:-$BUILD/bench_collect_work}
DIM=${DIM:-256}
LAYERS=${LAYERS:-4}
HEADS=${HEADS:-4}
PROMPTS=${PROMPTS:-32}
MAX_TOKENS=${MAX_TOKENS:-64}
CONC=${CONC:-1,4,8}
REQUESTS=${REQUESTS:-1000}
[ -x "$BITKD" ] || { echo "no bitkd at $BITKD (build first, or set BITKD)" >&2; exit 1; }

rm -rf "$WORK"
mkdir -p "$WORK"
COMMON=(--env-file= --log-level WARNING --artifacts "$WORK/art")
"$BITKD" tokenizer train --tasks 2000 --vocab-size 1024 --out "$WORK/tok" "${COMMON[@]}" > /dev/null
"$BITKD" tasks --n 64 --out "$WORK/train.jsonl" "${COMMON[@]}" > /dev/null
"$BITKD" pretrain --data "$WORK/train.jsonl" --tokenizer "$WORK/tok.model" --out "$WORK/ckpt" \
  --metrics "$WORK/metrics.jsonl" --dim "$DIM" --layers "$LAYERS" --heads "$HEADS" --head-dim $((DIM / HEADS)) \
  --weight-quant none --act-bits 0 --steps 1 --batch 1 --seq 256 "${COMMON[@]}" > /dev/null

"$BITKD" serve --model "$WORK/ckpt" --tokenizer "$WORK/tok.model" --port 0 --workers 8 --env-file= \
  > "$WORK/serve.out" 2> "$WORK/serve.log" &
SERVE_PID=$!
trap 'kill $SERVE_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  grep -q "listening on" "$WORK/serve.out" && break
  kill -0 $SERVE_PID 2>/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
  sleep 0.1
done
PORT=$(grep -o '127.0.0.1:[0-9]*' "$WORK/serve.out" | head -1 | cut -d: -f2)

"$BITKD" bench collect --tokenizer "$WORK/tok.model" --base-url "http://127.0.0.1:$PORT/v1" \
  --prompts "$PROMPTS" --max-tokens "$MAX_TOKENS" --concurrency "$CONC" --requests "$REQUESTS" --scratch "$WORK/scratch" "${COMMON[@]}"
echo "{\"teacher\": {\"dim\": $DIM, \"layers\": $LAYERS, \"heads\": $HEADS, \"serve_workers\": 8}}"
