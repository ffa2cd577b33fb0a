#!/usr/bin/env bash
# fuzz/build.sh [target...]: build the libFuzzer targets (clang-14, -fsanitize=fuzzer,address,undefined).
# Targets: safetensors checkpoint idx cifar image cli_pretrain cli_finetune cli_reconstruct cli_avgdist (default: all).
# Binaries go to $SIMMIM_FUZZ_BUILD_DIR (default: build-fuzz/ in the repository root) as fuzz_<target>;
# a target is rebuilt only when a file it was compiled from (per the compiler's -MMD list) is newer.
# $SIMMIM_FUZZ_CXXFLAGS goes first on every command line: e.g. -I<dir> with a patched copy of a header,
# to keep fuzzing past a known finding before the fix lands. Needs the packages of fuzz/setup.sh.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${SIMMIM_FUZZ_BUILD_DIR:-$root/build-fuzz}
cxx=${SIMMIM_FUZZ_CXX:-clang++-14}
all_targets=(safetensors checkpoint idx cifar image cli_pretrain cli_finetune cli_reconstruct cli_avgdist)
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${all_targets[@]}")
mkdir -p "$out"

# UBSan as in scripts/sanitize.sh (clang's -fsanitize=undefined also checks float-to-integer casts).
# shellcheck disable=SC2206  # the extra flags are words
common=(${SIMMIM_FUZZ_CXXFLAGS:-} -std=c++20 -g -O1 -march=native -fno-omit-frame-pointer -fno-sanitize-recover=all
        -I"$root/include" -I"$root/fuzz" -I/usr/include/eigen3 -I/usr/include/stb -fopenmp)

stale() {  # stale <file>: true if <file> or its dependency list <file>.d is missing or a dependency is newer
  [[ -e $1 && -f $1.d ]] || return 0
  local dep
  for dep in $(sed -e 's/^[^:]*://' -e 's/\\$//' "$1.d"); do
    [[ $dep -nt $1 ]] && return 0
  done
  return 1
}

for target in "${targets[@]}"; do
  case " ${all_targets[*]} " in *" $target "*) ;; *) echo "build.sh: unknown target '$target' (known: ${all_targets[*]})" >&2; exit 2 ;; esac
  bin="$out/fuzz_$target"
  if ! stale "$bin"; then
    echo "build.sh: $bin is up to date"
    continue
  fi
  echo "build.sh: building $bin"
  "$cxx" "${common[@]}" -fsanitize=fuzzer,address,undefined -MMD -MF "$bin.d" "$root/fuzz/fuzz_$target.cpp" -lz -ljpeg -lpng -o "$bin"
done
