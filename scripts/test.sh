#!/usr/bin/env bash
# scripts/test.sh: install dependencies, configure, build and run every test (the README's test command).
# The build directory is build/ in the repository root, or $SIMMIM_BUILD_DIR when set.
# Exits non-zero when any step or any test fails; tests that skip themselves (exit 77) are listed at the end
# (scripts/skipped-tests.sh).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${SIMMIM_BUILD_DIR:-$root/build}

bash "$root/scripts/setup.sh"
cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build_dir" -j"$(nproc)"
# the console output is kept in $build_dir/ctest.log, and the tests that skipped themselves are listed last
status=0
ctest --test-dir "$build_dir" --output-on-failure -j2 2>&1 | tee "$build_dir/ctest.log" || status=$?
bash "$root/scripts/skipped-tests.sh" "$build_dir" "scripts/test.sh"
exit "$status"
