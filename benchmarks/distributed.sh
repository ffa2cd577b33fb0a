#!/usr/bin/env bash
# benchmarks/distributed.sh [rounds]: simmim_pretrain on this machine as 1 process x 2 threads against
# 2 MPI ranks x 1 thread (docs/distributed.md), in interleaved rounds, on Fashion-MNIST.
#
# Per preset and layout it prints the median over the rounds of the mean step time and images/s that
# simmim_pretrain reports at the end of a run ("speed:", the steps after the first), and for the ranks the
# time rank 0 waited for the gradient sum after backward ("allreduce:"), with the ratio of the two layouts.
# Environment:
#   BUILD     build directory holding examples/simmim_pretrain (default: build), configured with MPI found
#   PRESETS   "preset:batch:steps ..." (default "vit-t4-32:64:30 vit-s16-224:8:20")
#   BUCKET_MB --bucket-mb of the 2-rank runs (default 4)
# Nothing else should run on the machine meanwhile.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD:-$root/build}
bin="$build/examples/simmim_pretrain"
rounds=${1:-3}
presets=${PRESETS:-"vit-t4-32:64:30 vit-s16-224:8:20"}
bucket=${BUCKET_MB:-4}
[ -x "$bin" ] || { echo "distributed.sh: $bin not found (cmake --build $build --target simmim_pretrain)" >&2; exit 2; }
mpi=(mpirun --oversubscribe)
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

median() { sort -g | awk '{v[NR]=$1} END {if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
field() { grep -o "$1" "$2" | head -1 | grep -o '[0-9.]*' | head -1; }  # the first number of the first match

echo "distributed.sh: $rounds rounds, $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC')"
for spec in $presets; do
  IFS=: read -r preset batch steps <<<"$spec"
  args=(--model "$preset" --batch "$batch" --steps "$steps" --save-every 0 --log-every 1000 --vis-count 1 --seed 1)
  : > "$out/one.ms"; : > "$out/two.ms"; : > "$out/two.wait"; : > "$out/one.ips"; : > "$out/two.ips"
  for round in $(seq "$rounds"); do
    rm -rf "$out/run"
    "$bin" "${args[@]}" --threads 2 --out "$out/run" > "$out/one.log" 2>&1 || { tail -3 "$out/one.log"; exit 1; }
    field 'speed: [0-9.]* ms' "$out/one.log" >> "$out/one.ms"
    field ', [0-9.]* img/s' "$out/one.log" >> "$out/one.ips"
    rm -rf "$out/run"
    "${mpi[@]}" -np 2 "$bin" "${args[@]}" --threads 1 --bucket-mb "$bucket" --out "$out/run" > "$out/two.log" 2>&1 || { tail -3 "$out/two.log"; exit 1; }
    field 'speed: [0-9.]* ms' "$out/two.log" >> "$out/two.ms"
    field ', [0-9.]* img/s' "$out/two.log" >> "$out/two.ips"
    field 'waited [0-9.]* ms' "$out/two.log" >> "$out/two.wait"
    echo "  $preset round $round: 1x2 $(tail -1 "$out/one.ms") ms, 2x1 $(tail -1 "$out/two.ms") ms (waited $(tail -1 "$out/two.wait") ms); $(grep -o '[0-9]* of [0-9]* buckets started during backward' "$out/two.log")"
  done
  one=$(median < "$out/one.ms"); two=$(median < "$out/two.ms"); wait=$(median < "$out/two.wait")
  one_ips=$(median < "$out/one.ips"); two_ips=$(median < "$out/two.ips")
  awk -v p="$preset" -v b="$batch" -v a="$one" -v c="$two" -v w="$wait" -v ai="$one_ips" -v ci="$two_ips" 'BEGIN {
    printf "%s batch %d: 1 process x 2 threads %.1f ms (%.1f img/s); 2 ranks x 1 thread %.1f ms (%.1f img/s), waiting %.2f ms (%.1f%%); 2x1 / 1x2 speed %.2fx\n",
           p, b, a, ai, c, ci, w, 100 * w / c, a / c }'
done
