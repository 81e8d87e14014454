#!/usr/bin/env bash
# Idempotent dependency install for bitkd on Debian 12 (bookworm); installs
# only what is missing, with sudo when not root.
#
#   scripts/setup.sh          what building and running bitkd needs (`make run`)
#   scripts/setup.sh --test   that, plus what the tests need (`make test`):
#                             GoogleTest/Benchmark, PyTorch for the reference
#                             checks, Node.js and the npm interop clients,
#                             rclone (the storage tests' WebDAV server; a run
#                             with STORAGE_BACKEND=rclone needs it too: it says so)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
with_tests=0
for arg in "$@"; do
  case "$arg" in
    --test) with_tests=1 ;;
    *) echo "setup: unknown option '$arg' (use --test for the test dependencies)" >&2; exit 2 ;;
  esac
done

apt_packages=(
  build-essential cmake pkg-config ccache git
  libopenblas-openmp-dev
  libsentencepiece-dev sentencepiece
  libpcre2-dev libicu-dev
  libcurl4-openssl-dev
  libcpp-httplib-dev
  nlohmann-json3-dev
  libcli11-dev
  libzstd-dev libsnappy-dev
)
if [ "$with_tests" -eq 1 ]; then
  apt_packages+=(
    libgtest-dev libgmock-dev googletest
    libbenchmark-dev
    python3 python3-torch python3-numpy
    nodejs npm
    chromium
    libopenmpi-dev openmpi-bin
    rclone
    clang-14 libclang-rt-14-dev libomp-14-dev
  )
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
fi

missing=()
for p in "${apt_packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# node/npm may come from another source (nvm, a tarball); accept that.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  filtered=()
  for p in "${missing[@]+"${missing[@]}"}"; do
    case "$p" in nodejs|npm) ;; *) filtered+=("$p") ;; esac
  done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: system packages present"
fi

# npm packages used only by interop tests (independent clients of our files and server).
if [ "$with_tests" -eq 1 ] && [ -f "$here/tests/interop/package.json" ]; then
  if [ ! -d "$here/tests/interop/node_modules" ] || [ "$here/tests/interop/package.json" -nt "$here/tests/interop/node_modules" ]; then
    echo "setup: installing npm packages for interop tests"
    (cd "$here/tests/interop" && npm install --no-audit --no-fund --loglevel=error && touch node_modules)
  else
    echo "setup: npm packages present"
  fi
fi
