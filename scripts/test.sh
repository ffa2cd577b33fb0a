#!/usr/bin/env bash
# scripts/test.sh: install dependencies, configure, build and run every test (the README's test command).
# The build directory is build-test/ in the repository root, or $SIMMIM_BUILD_DIR when set: not build/, which
# scripts/pretrain-demo.sh and the docs use for the full programs (every preset) and the benchmarks.
# Exits non-zero when any step or any test fails; tests that skip themselves (exit 77) are listed at the end
# (scripts/skipped-tests.sh).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${SIMMIM_BUILD_DIR:-$root/build-test}

bash "$root/scripts/setup.sh"
# The example programs are compiled for the presets the tests run (SIMMIM_EXAMPLE_PRESETS) and with the
# ablation variants of vit-tiny-test only (SIMMIM_EXAMPLES_FEW_VARIANTS), and the benchmark programs are not
# built: every preset is another instantiation of the model and the training loop, and the full set takes
# most of the build time. The README's main job (scripts/pretrain-demo.sh) builds every preset.
cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DSIMMIM_BUILD_BENCHMARKS=OFF \
      -DSIMMIM_EXAMPLE_PRESETS="${SIMMIM_TEST_PRESETS:-vit-tiny-test;vit-t4-32;vit-t4-32-c1;vit-t16-224;swin-tiny-test;swin-d32}" \
      -DCMAKE_CXX_FLAGS="-DSIMMIM_EXAMPLES_FEW_VARIANTS"
cmake --build "$build_dir" -j"$(nproc)"
# the console output is kept in $build_dir/ctest.log, and the tests that skipped themselves are listed last
status=0
ctest --test-dir "$build_dir" --output-on-failure -j2 2>&1 | tee "$build_dir/ctest.log" || status=$?
bash "$root/scripts/skipped-tests.sh" "$build_dir" "scripts/test.sh"
exit "$status"
