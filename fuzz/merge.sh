#!/usr/bin/env bash
# fuzz/merge.sh [target...]: fold what a fuzzing run grew ($SIMMIM_FUZZ_BUILD_DIR/corpus/<target>/, default
# build-fuzz/) into the committed minimised corpus fuzz/corpus-min/<target>/ with libFuzzer's -merge=1: only the
# inputs that reach coverage (features) that the seeds of fuzz/corpus/<target>/ and the inputs already in
# fuzz/corpus-min/<target>/ do not are added. Prints, per target, the inputs and bytes added. Needs the binaries
# of fuzz/build.sh.
# fuzz/run.sh seeds the next run with both folders; tests/test_fuzz_regressions.cpp replays the minimised corpora of
# the file formats in process and tests/test_cli_parse.cpp those of the command lines through the parse step (the
# seeds alone also go through the real programs). SIMMIM_FUZZ_MERGE_MAX_BYTES (default 1000000) caps each target's
# minimised corpus: past it, the larger added inputs are left out.
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
  seeds="$root/fuzz/corpus/$target" committed="$root/fuzz/corpus-min/$target" grown="$out/corpus/$target" bin="$out/fuzz_$target"
  [[ -x $bin && -d $grown ]] || { echo "merge.sh: $target: no binary or grown corpus under $out (fuzz/build.sh, fuzz/run.sh)"; status=1; continue; }
  mkdir -p "$committed"
  staging=$(mktemp -d)
  cp "$seeds"/* "$staging"/
  cp "$committed"/* "$staging"/ 2>/dev/null
  known=$(find "$staging" -type f | wc -l)
  ASAN_OPTIONS=detect_leaks=0 "$bin" -merge=1 -max_len="$(max_len_of "$target")" -timeout=60 -rss_limit_mb=2560 "$staging" "$grown" \
      > "$out/logs/merge_$target.log" 2>&1 || { echo "merge.sh: $target: merge failed (log $out/logs/merge_$target.log)"; status=1; rm -rf "$staging"; continue; }
  # the inputs the merge added: in staging, neither a seed nor already committed
  added=$(mktemp -d)
  for f in "$staging"/*; do
    name=$(basename "$f")
    [[ -e "$seeds/$name" || -e "$committed/$name" ]] || cp "$f" "$added/"
  done
  # at most max_bytes in fuzz/corpus-min/<target>: the added inputs smallest first (as -merge=1 itself prefers)
  room=$(( max_bytes - $(bytes_of "$committed") )) count=0 bytes=0 left=0
  while read -r size f; do
    if (( bytes + size <= room )); then cp "$f" "$committed/"; count=$((count + 1)); bytes=$((bytes + size)); else left=$((left + 1)); fi
  done < <(find "$added" -type f -printf '%s %p\n' | sort -n)
  printf 'merge.sh: %-16s %4d inputs known, %4d added (%7d bytes)%s; fuzz/corpus-min/%s holds %d bytes\n' "$target" "$known" "$count" "$bytes" \
         "$( (( left > 0 )) && echo ", $left larger ones left out (SIMMIM_FUZZ_MERGE_MAX_BYTES=$max_bytes)")" "$target" "$(bytes_of "$committed")"
  rm -rf "$staging" "$added"
done
exit $status
