# Thin wrappers over scripts/setup.sh, CMake and the bitkd binary.
# `make run` = whole pipeline on the embedded default; `make test` = all tests.
BUILD_DIR ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
BITKD := $(BUILD_DIR)/bitkd
CTEST_ARGS ?=

.PHONY: install env build test run bench check_env ensure_dirs clean pipeline \
        teacher collect train eval dryrun prompts sanity serve tasks

install:
	bash scripts/setup.sh

env: install

$(BUILD_DIR)/CMakeCache.txt:
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release

build: install $(BUILD_DIR)/CMakeCache.txt
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS) $(CTEST_ARGS)

check_env: build
	$(BITKD) check-env

ensure_dirs: build
	$(BITKD) check-env > /dev/null

bench: build
	$(BITKD) bench train

clean:
	rm -rf $(BUILD_DIR)
