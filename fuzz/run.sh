#!/usr/bin/env bash
# fuzz/run.sh [seconds] [target...]: build (fuzz/build.sh) and run each libFuzzer target for
# `seconds` (default 60) from its seed corpus fuzz/corpus/<target>/ and the minimised corpus of earlier runs
# fuzz/corpus-min/<target>/ (fuzz/merge.sh adds to it), then print one summary line
# per target: executions, corpus size, and whether it found something.
# Targets: safetensors checkpoint idx cifar image cli_pretrain cli_finetune cli_reconstruct cli_avgdist (default: all).
#
# Work files go to $SIMMIM_FUZZ_BUILD_DIR (default build-fuzz/): the growing corpus in
# corpus/<target>/, findings (crash-*, oom-*, timeout-*, leak-*) in artifacts/<target>/ and the
# log in logs/<target>.log. Reproduce a finding with `build-fuzz/fuzz_<target> <file>`; a fixed
# one goes to tests/regressions/<target>/ (replayed by tests/test_fuzz_regressions.cpp).
# SIMMIM_FUZZ_SKIP_BUILD=1 runs the binaries as they are (no rebuild after unrelated header edits).
# SIMMIM_FUZZ_TIMEOUT (seconds, default 20) is the per-input time limit; raise it when the machine is shared
# or the fuzzers may be paused (a paused process exceeds any wall-clock limit and reports a false timeout).
# Exits 1 if any target found something.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=60
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then seconds=$1; shift; fi
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(safetensors checkpoint idx cifar image cli_pretrain cli_finetune cli_reconstruct cli_avgdist)
out=${SIMMIM_FUZZ_BUILD_DIR:-$root/build-fuzz}
export SIMMIM_FUZZ_BUILD_DIR=$out

if [[ ${SIMMIM_FUZZ_SKIP_BUILD:-0} != 1 ]]; then
  bash "$root/fuzz/build.sh" "${targets[@]}" || exit 2
fi

# libFuzzer reports leaks itself; ASan/UBSan stop at the first report.
export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

options_for() {  # per-target libFuzzer options
  case $1 in
    safetensors)     echo "-max_len=8192 -dict=$root/fuzz/safetensors.dict" ;;
    checkpoint)      echo "-max_len=32768 -dict=$root/fuzz/safetensors.dict" ;;
    idx)             echo "-max_len=4096" ;;
    cifar)           echo "-max_len=12400" ;;
    image)           echo "-max_len=8192" ;;
    cli_*)           echo "-max_len=512 -dict=$root/fuzz/$1.dict" ;;
  esac
}

summary=()
found=0
for target in "${targets[@]}"; do
  corpus="$out/corpus/$target" artifacts="$out/artifacts/$target/" log="$out/logs/$target.log"
  mkdir -p "$corpus" "$artifacts" "$out/logs"
  echo "run.sh: fuzzing $target for ${seconds}s (log: $log)"
  started=$SECONDS
  # shellcheck disable=SC2046  # the options are words
  "$out/fuzz_$target" -max_total_time="$seconds" -timeout="${SIMMIM_FUZZ_TIMEOUT:-20}" -rss_limit_mb=2560 -print_final_stats=1 \
      -artifact_prefix="$artifacts" $(options_for "$target") "$corpus" "$root/fuzz/corpus/$target" \
      $( [[ -d $root/fuzz/corpus-min/$target ]] && echo "$root/fuzz/corpus-min/$target" ) > "$log" 2>&1
  code=$?
  elapsed=$((SECONDS - started))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  units=$(find "$corpus" -type f | wc -l)
  if [[ $code -eq 0 ]]; then
    result="no finding"
  else
    found=1
    result="FINDING (exit $code): $(grep -m1 -E '^==[0-9]+==ERROR|runtime error|oracle failure|terminate called|^==[0-9]+== ERROR' "$log" | cut -c1-160); artifact: $(grep -o "Test unit written to .*" "$log" | tail -n 1 | cut -d' ' -f5)"
  fi
  summary+=("$(printf '%-16s %10s execs in %4ss, corpus %5s inputs: %s' "$target" "${execs:-?}" "$elapsed" "$units" "$result")")
done
echo
echo "run.sh summary:"
printf '  %s\n' "${summary[@]}"
exit $found
