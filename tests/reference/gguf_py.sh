#!/bin/sh
# Makes llama.cpp's gguf-py (the independent GGUF reader/writer/dequantizer
# used as a reference by tests/unit/test_gguf_quants.cpp) available without a
# network: node-llama-cpp (tests/interop/package.json) ships llama.cpp's source
# as a git bundle, which is cloned once into DEST. Prints the directory to put
# on PYTHONPATH. Nothing from the bundle is committed to bitkd.
#
#   gguf_py.sh SOURCE_DIR DEST
set -eu
src=$1
dest=$2
bundle="$src/tests/interop/node_modules/node-llama-cpp/llama/gitRelease.bundle"
if [ ! -f "$dest/llama.cpp/gguf-py/gguf/quants.py" ]; then
  if [ ! -f "$bundle" ]; then
    echo "missing $bundle (llama.cpp's source from node-llama-cpp): run 'cd $src/tests/interop && npm install --no-audit --no-fund'" >&2
    exit 1
  fi
  mkdir -p "$dest"
  rm -rf "$dest/llama.cpp.tmp"
  git -c advice.detachedHead=false clone -q "$bundle" "$dest/llama.cpp.tmp"
  rm -rf "$dest/llama.cpp"
  mv "$dest/llama.cpp.tmp" "$dest/llama.cpp"
fi
echo "$dest/llama.cpp/gguf-py"
