#!/usr/bin/env bash
# scripts/test.sh: install dependencies, configure, build and run every test (the README's test command).
# The build directory is build/ in the repository root, or $SIMMIM_BUILD_DIR when set.
# Exits non-zero when any step or any test fails.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${SIMMIM_BUILD_DIR:-$root/build}

bash "$root/scripts/setup.sh"
cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build_dir" -j"$(nproc)"
ctest --test-dir "$build_dir" --output-on-failure -j2
