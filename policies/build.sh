#!/usr/bin/env bash
# Build the example and hostile policies into policies/build/ (Debian's clang + lld for
# wasm32, no libc; WAT files are copied and compiled by wasmtime at load time).
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v clang-14 >/dev/null || ! command -v wasm-ld-14 >/dev/null; then
  echo "policies: installing clang-14 and lld-14 from Debian" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq clang-14 lld-14 >/dev/null
fi
mkdir -p build
# clang looks for `wasm-ld`; Debian names it wasm-ld-14.
tools=$(mktemp -d); trap 'rm -rf "$tools"' EXIT
ln -s "$(command -v wasm-ld-14)" "$tools/wasm-ld"
export PATH="$tools:$PATH"
for src in *.c; do
  out="build/${src%.c}.wasm"
  if [ ! -f "$out" ] || [ "$src" -nt "$out" ] || [ kubepd_abi.h -nt "$out" ]; then
    clang-14 --target=wasm32 -O2 -nostdlib -Wl,--no-entry -Wl,--allow-undefined -o "$out" "$src"
  fi
done
cp hostile/*.wat build/
echo "policies: built $(ls build | wc -l) modules into policies/build/"
