#!/usr/bin/env bash
# benchmarks/soak.sh [steps] [out dir]: a long simmim_pretrain run (vit-tiny-test on Fashion-MNIST, a checkpoint
# every 100 steps) whose resident memory (VmRSS) and open file descriptors are sampled every 2 s, with the step
# the run had reached (the last line of metrics.jsonl). Writes <out>/soak.tsv (seconds, step, rss_kB, fds) and
# prints the first and last samples and the largest RSS after warm-up (the first 10% of the steps).
#   env: BUILD (a build directory with examples/simmim_pretrain; default build), THREADS (default 1)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
steps=${1:-20000}
out=${2:-$root/runs/soak}
build=${BUILD:-$root/build}
rm -rf "$out"
mkdir -p "$out"
"$build/examples/simmim_pretrain" --model vit-tiny-test --data fashion-mnist --steps "$steps" --batch 32 \
    --threads "${THREADS:-1}" --save-every 100 --vis-every 0 --log-every 100 --out "$out/run" >"$out/run.log" 2>&1 &
pid=$!
start=$SECONDS
printf 'seconds\tstep\trss_kB\tfds\n' >"$out/soak.tsv"
while kill -0 "$pid" 2>/dev/null; do
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    fds=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l || true)
    step=$(tail -n 1 "$out/run/metrics.jsonl" 2>/dev/null | sed -n 's/.*"step":\([0-9]*\).*/\1/p' || true)
    [[ -n "$rss" ]] && printf '%s\t%s\t%s\t%s\n' "$((SECONDS - start))" "${step:-0}" "$rss" "$fds" >>"$out/soak.tsv"
    sleep 2
done
wait "$pid"
echo "soak: $steps steps in $((SECONDS - start)) s; samples in $out/soak.tsv"
awk -v warm="$((steps / 10))" 'NR == 2 {first = $0} NR > 1 {last = $0; if ($2 >= warm) {if ($3 > max) max = $3; if (min == "" || $3 < min) min = $3; if ($4 > fmax) fmax = $4; if (fmin == "" || $4 < fmin) fmin = $4}}
     END {print "first sample: " first; print "last sample:  " last;
          print "after warm-up (step >= " warm "): RSS " min "-" max " kB, open fds " fmin "-" fmax}' "$out/soak.tsv"
