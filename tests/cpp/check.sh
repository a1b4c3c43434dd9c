#!/usr/bin/env bash
# Builds tests/cpp/engine_check.cpp with the engine's sources (no Python, no torch) and runs it.
#   tests/cpp/check.sh [CASES]                    native build (CXX, default c++)
#   tests/cpp/check.sh --target aarch64 [CASES]   cross-compiled (aarch64-linux-gnu-g++), run under qemu-aarch64
# The aarch64 run needs the Debian/Ubuntu packages g++-aarch64-linux-gnu and qemu-user.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
target=native
if [[ "${1:-}" == "--target" ]]; then target="$2"; shift 2; fi
cases="${1:-150}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
sources=("$root"/csrc/{conv,depthwise,pack,thread_pool,isa,isa_portable,isa_popcnt,isa_avx2,isa_avx512,isa_reference}.cpp
         "$root"/tests/cpp/engine_check.cpp)
flags=(-std=c++17 -O2 -Wall -Wextra -ffp-contract=off -fno-trapping-math -I"$root/csrc" -pthread)
case "$target" in
  native)
    "${CXX:-c++}" "${flags[@]}" "${sources[@]}" -o "$out/engine_check" -ldl
    "$out/engine_check" "$cases" ;;
  aarch64)
    aarch64-linux-gnu-g++ "${flags[@]}" "${sources[@]}" -o "$out/engine_check" -ldl
    qemu-aarch64 -L /usr/aarch64-linux-gnu "$out/engine_check" "$cases" ;;
  *) echo "check.sh: unknown target $target (native or aarch64)" >&2; exit 2 ;;
esac
