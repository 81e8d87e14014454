# Thin wrappers over scripts/setup.sh, CMake and the bitkd binary.
# `make run` = whole pipeline on the embedded default; `make test` = all tests.
BUILD_DIR ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
BITKD := $(BUILD_DIR)/bitkd
CTEST_ARGS ?=

.PHONY: install install_test env configure build build_all test fuzz run bench check_env ensure_dirs clean pipeline \
        prompts sanity teacher collect train eval dryrun

# What building and running bitkd needs; `make test` adds the test dependencies.
install:
	bash scripts/setup.sh

install_test:
	bash scripts/setup.sh --test

env: install

# Configure every time (cheap): a build tree first configured by `make run`,
# before the test dependencies were installed, then picks up the tests.
configure:
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release

# The bitkd binary only: what `make run` and the stage targets need.
build: install configure
	cmake --build $(BUILD_DIR) --target bitkd -j $(JOBS)

# Everything: bitkd, the tests and the kernel benchmarks.
build_all: install_test configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build_all
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS) $(CTEST_ARGS)

# Every libFuzzer target for FUZZ_SECONDS each (clang + ASan + UBSan, in
# build-fuzz; scripts/fuzz.sh). A finding fails the target.
FUZZ_SECONDS ?= 20
fuzz: install_test
	bash scripts/fuzz.sh $(FUZZ_SECONDS)

check_env: build
	$(BITKD) check-env

ensure_dirs: build
	$(BITKD) check-env > /dev/null

bench: build
	$(BITKD) bench train

# The whole pipeline on the embedded default (or the teacher your .env names):
# tasks -> tokenizers -> teacher pretrain -> serve -> baseline -> collect -> train -> eval -> dryrun.
# PIPELINE_SCALE=2 (or 4, ...) makes it bigger; PIPELINE_ARGS=--force reruns every stage.
PIPELINE_ARGS ?=
run: build
	$(BITKD) pipeline $(PIPELINE_ARGS)

pipeline: build
	$(BITKD) pipeline $(PIPELINE_ARGS)

# One stage each, with everything it needs first (stages already done are skipped):
# `bitkd pipeline --until <stage>` runs `bitkd <command>` with the artifact layout and
# prints each command line into logs/<stage>.log.
prompts: build     # task suite -> <artifacts>/tasks/{train,eval}.jsonl
	$(BITKD) pipeline --until tasks $(PIPELINE_ARGS)

teacher: build     # -> reports/teacher_baseline.json (local teacher: tokenizers, pretrain, serve first)
	$(BITKD) pipeline --until teacher $(PIPELINE_ARGS)

collect: build     # -> data/kd_shard_*.parquet, data/kd_prompts_*.parquet, logs/collect_stats.json
	$(BITKD) pipeline --until collect $(PIPELINE_ARGS)

train: build       # -> checkpoints/mini_bitnet_step_N.safetensors (+ _health.json), logs/train_metrics.jsonl
	$(BITKD) pipeline --until train $(PIPELINE_ARGS)

eval: build        # -> reports/mini_evaluation_report.json (QEI)
	$(BITKD) pipeline --until eval $(PIPELINE_ARGS)

dryrun: build      # -> reports/dryrun_7b.json (needs nothing before it)
	$(BITKD) pipeline --only dryrun $(PIPELINE_ARGS)

# A one-minute smoke run of every stage at tiny size, in its own artifact root.
sanity: build
	$(BITKD) pipeline --tiny --artifacts artifacts_sanity $(PIPELINE_ARGS)

# Decode/prefill tokens/s, packed ternary vs fp32 (BENCH_INFER_ARGS: --model or a shape).
BENCH_INFER_ARGS ?=
.PHONY: bench_infer
bench_infer: build
	$(BITKD) bench infer $(BENCH_INFER_ARGS)

# The same training step in PyTorch (python3-torch), run right after ours; the JSON has speedup_vs_torch.
.PHONY: bench_torch
bench_torch: install_test build
	$(BITKD) bench train --compare-torch

clean:
	rm -rf $(BUILD_DIR)
