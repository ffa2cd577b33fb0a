#!/usr/bin/env bash
# fuzz/merge.sh [target...]: fold what a fuzzing run grew ($SIMMIM_FUZZ_BUILD_DIR/corpus/<target>/, default
# build-fuzz/) into the committed corpus fuzz/corpus/<target>/ with libFuzzer's -merge=1: only the inputs that
# reach coverage the committed ones do not are added, so the committed corpus stays minimal. Prints, per
# target, the inputs and bytes before and after. Needs the binaries of fuzz/build.sh.
# The committed corpus is the seed of the next run (fuzz/run.sh) and is replayed by
# tests/test_fuzz_regressions.cpp (the command-line corpora through the real programs), so keep it small:
# SIMMIM_FUZZ_MERGE_MAX_BYTES (default 1000000) refuses a target whose merged corpus would be larger.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${SIMMIM_FUZZ_BUILD_DIR:-$root/build-fuzz}
max_bytes=${SIMMIM_FUZZ_MERGE_MAX_BYTES:-1000000}
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(safetensors checkpoint idx cifar image cli_pretrain cli_finetune cli_reconstruct cli_avgdist)
bytes_of() { find "$1" -type f -printf '%s\n' | awk '{n += $1} END {print n + 0}'; }
max_len_of() {  # as fuzz/run.sh
  case $1 in
    safetensors) echo 8192 ;; checkpoint) echo 32768 ;; idx) echo 4096 ;; cifar) echo 12400 ;; image) echo 8192 ;; cli_*) echo 512 ;;
  esac
}
status=0
for target in "${targets[@]}"; do
  committed="$root/fuzz/corpus/$target" grown="$out/corpus/$target" bin="$out/fuzz_$target"
  [[ -x $bin && -d $grown ]] || { echo "merge.sh: $target: no binary or grown corpus under $out (fuzz/build.sh, fuzz/run.sh)"; status=1; continue; }
  before=$(find "$committed" -type f | wc -l) before_bytes=$(bytes_of "$committed")
  staging=$(mktemp -d)
  cp "$committed"/* "$staging"/
  ASAN_OPTIONS=detect_leaks=0 "$bin" -merge=1 -max_len="$(max_len_of "$target")" -timeout=60 -rss_limit_mb=2560 "$staging" "$grown" \
      > "$out/logs/merge_$target.log" 2>&1 || { echo "merge.sh: $target: merge failed (log $out/logs/merge_$target.log)"; status=1; rm -rf "$staging"; continue; }
  after=$(find "$staging" -type f | wc -l) after_bytes=$(bytes_of "$staging")
  if (( after_bytes > max_bytes )); then
    echo "merge.sh: $target: merged corpus would be $after_bytes bytes (> $max_bytes); not copied"
    status=1
  else
    cp -n "$staging"/* "$committed"/
    printf 'merge.sh: %-16s %4d -> %4d inputs, %7d -> %7d bytes\n' "$target" "$before" "$after" "$before_bytes" "$after_bytes"
  fi
  rm -rf "$staging"
done
exit $status
