#!/usr/bin/env bash
# tests/consumer_builds.sh <build dir> <source dir>: CTest script test.
# Builds and runs the outside project tests/consumer three ways, in a temporary directory:
#   find_package  (after `cmake --install` of simmim into a prefix; simmim is installed with the
#                  compiled kernels for the default ISA (SIMMIM_NATIVE=OFF) and the consumer links
#                  simmim::kernels too)
#   subdirectory  (add_subdirectory of the simmim source)
#   fetchcontent  (FetchContent_Declare(SOURCE_DIR ...) + FetchContent_MakeAvailable)
# and, when the simmim build found MPI, a second program on simmim::mpi (tests/consumer/mpi_main.cpp) each way.
# Fails if any mode fails, naming the mode and the step.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 <simmim build dir> <simmim source dir>" >&2
  exit 2
fi
build_dir=$1
source_dir=$(cd "$2" && pwd)
consumer_dir="$source_dir/tests/consumer"

# Use the same cmake, generator and compiler as the simmim build when its cache says which.
cache_value() {  # name -> value from <build dir>/CMakeCache.txt, or nothing
  sed -n "s/^$1:[A-Z]*=//p" "$build_dir/CMakeCache.txt" 2>/dev/null | head -n 1
}
cmake_bin=$(cache_value CMAKE_COMMAND)
[[ -x "$cmake_bin" ]] || cmake_bin=$(command -v cmake)
common_args=(-DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
generator=$(cache_value CMAKE_GENERATOR)
[[ -n "$generator" ]] && common_args+=(-G "$generator")
compiler=$(cache_value CMAKE_CXX_COMPILER)
[[ -n "$compiler" ]] && common_args+=("-DCMAKE_CXX_COMPILER=$compiler")

work=$(mktemp -d "${TMPDIR:-/tmp}/simmim-consumer.XXXXXX")
trap 'rm -rf "$work"' EXIT

failed=()
fail() {  # mode, step
  echo "consumer_builds: mode '$1' FAILED at step: $2" >&2
  failed+=("$1")
}

# build_consumer <mode> [extra cmake args...]: configure, build and run the consumer.
build_consumer() {
  local mode=$1
  shift
  local dir="$work/consumer-$mode"
  echo "=== consumer_builds: mode '$mode' ==="
  "$cmake_bin" -S "$consumer_dir" -B "$dir" "${common_args[@]}" \
    -DSIMMIM_CONSUME="$mode" -DSIMMIM_SOURCE="$source_dir" "$@" || { fail "$mode" configure; return 0; }
  "$cmake_bin" --build "$dir" -j2 || { fail "$mode" build; return 0; }
  "$dir/simmim_consumer" || { fail "$mode" "run (exit status $?)"; return 0; }
  if [[ -x "$dir/simmim_consumer_mpi" ]]; then  # simmim::mpi, when MPI was found
    "$dir/simmim_consumer_mpi" || { fail "$mode" "run of simmim_consumer_mpi (exit status $?)"; return 0; }
  elif [[ -x "$build_dir/tests/simmim_mpi_reducer_check" ]]; then  # the simmim build under test found MPI
    fail "$mode" "simmim::mpi missing although the simmim build found MPI"; return 0
  fi
  echo "consumer_builds: mode '$mode' OK"
}

# Mode 1: install simmim (configured alone: no tests, examples or benchmarks), then find_package.
install_and_find_package() {
  local prefix="$work/prefix"
  echo "=== consumer_builds: installing simmim into $prefix ==="
  "$cmake_bin" -S "$source_dir" -B "$work/simmim-build" "${common_args[@]}" \
    -DSIMMIM_BUILD_TESTS=OFF -DSIMMIM_BUILD_EXAMPLES=OFF -DSIMMIM_BUILD_BENCHMARKS=OFF \
    -DSIMMIM_COMPILED_KERNELS=ON -DSIMMIM_NATIVE=OFF \
    -DCMAKE_INSTALL_PREFIX="$prefix" || { fail find_package "configure simmim"; return 0; }
  "$cmake_bin" --build "$work/simmim-build" -j2 || { fail find_package "build simmim::kernels"; return 0; }
  "$cmake_bin" --install "$work/simmim-build" || { fail find_package "install simmim"; return 0; }
  # The installed package must not point back into the source or build tree.
  if grep -rlF -e "$source_dir" -e "$work/simmim-build" "$prefix"; then
    fail find_package "installed files (listed above) refer to the source or build tree"
    return 0
  fi
  build_consumer find_package -DCMAKE_PREFIX_PATH="$prefix" -DSIMMIM_CONSUMER_KERNELS=ON
}

install_and_find_package
build_consumer subdirectory
build_consumer fetchcontent

if [[ ${#failed[@]} -ne 0 ]]; then
  echo "consumer_builds: FAILED modes: ${failed[*]}" >&2
  exit 1
fi
echo "consumer_builds: all three modes built and ran"
