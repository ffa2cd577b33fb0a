#!/usr/bin/env bash
# scripts/run-ablations.sh: the small-budget ablations of docs/ablations.md. For each named ablation,
# SimMIM-pretrain a small ViT on the Fashion-MNIST training split with that one change from the baseline
# (vit-m4-32-c1: mask patch 8, ratio 0.6, linear head, masked L1 on raw pixels, common ViT; the official ViT
# pretrains with its default drop path 0.1), then linearly
# probe the frozen encoder (block 4 of 6, average-pooled patch tokens) and measure top-1 on the 10k test
# split; "random-init" probes the untrained encoder (the reference). Finally tabulate everything with AvgDist
# (benchmarks/ablation_table.py).
#
# Usage: scripts/run-ablations.sh [out dir] [ablation ...]      (default: runs/ablations, every ablation)
#   env: MODEL (vit-m4-32-c1), PRE_EPOCHS (2), LP_EPOCHS (30), LP_MAX_TRAIN (20000), SEEDS ("1"),
#        THREADS (1), JOBS (runs in parallel, 1), BUILD (build directory with the examples, ./build)
# A finished run (its linear-probe summary.json exists) is not run again; an unfinished one restarts.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root/runs/ablations}
shift || true
build=${BUILD:-$root/build}
model=${MODEL:-vit-m4-32-c1}
pre_epochs=${PRE_EPOCHS:-2}
lp_epochs=${LP_EPOCHS:-30}
lp_max=${LP_MAX_TRAIN:-20000}
seeds=${SEEDS:-1}
threads=${THREADS:-1}
jobs=${JOBS:-1}

# name -> simmim_pretrain flags (one change from the baseline each)
declare -A FLAGS=(
    [random-init]="(no pretraining)"
    [random-init-official]="(no pretraining) --vit official"
    [baseline]=""
    [mask-patch-4]="--mask-patch 4"
    [mask-patch-16]="--mask-patch 16"
    [ratio-0.1]="--mask-ratio 0.1"
    [ratio-0.3]="--mask-ratio 0.3"
    [ratio-0.8]="--mask-ratio 0.8"
    [ratio-0.9]="--mask-ratio 0.9"
    [head-mlp]="--head mlp"
    [recon-all]="--loss-region all"
    [loss-l2]="--loss l2"
    [target-norm]="--target norm"
    [pred-res-16]="--pred-resolution 16"
    [pred-res-8]="--pred-resolution 8"
    [vit-official]="--vit official"
)
ALL=(random-init random-init-official baseline mask-patch-4 mask-patch-16 ratio-0.1 ratio-0.3 ratio-0.8 ratio-0.9 head-mlp recon-all loss-l2 target-norm
     pred-res-16 pred-res-8 vit-official)
ORDER=("${ALL[@]}")
if [[ $# -gt 0 ]]; then ORDER=("$@"); fi
for name in "${ORDER[@]}"; do
    [[ -v "FLAGS[$name]" ]] || { echo "run-ablations.sh: unknown ablation '$name' (known: ${!FLAGS[*]})" >&2; exit 2; }
done
for exe in simmim_pretrain simmim_finetune simmim_avgdist; do
    [[ -x "$build/examples/$exe" ]] || { echo "run-ablations.sh: $build/examples/$exe is missing (build the examples first)" >&2; exit 2; }
done
mkdir -p "$out"

run_one() {  # name seed
    local name=$1 s=$2 dir="$out/$1/s$2"
    if [[ -f "$dir/linprobe/summary.json" ]]; then echo "[$name s$s] done already"; return; fi
    rm -rf "$dir"
    mkdir -p "$dir"
    if [[ $name == random-init* ]]; then  # the references: linear probes of untrained encoders
        # shellcheck disable=SC2086
        "$build/examples/simmim_finetune" --mode linprobe --model "$model" --epochs "$lp_epochs" --batch 256 --max-train "$lp_max" \
            --threads "$threads" --seed "$s" ${FLAGS[$name]#"(no pretraining)"} --out "$dir/linprobe" >"$dir/linprobe.log" 2>&1
        echo "[$name s$s] $(tail -1 "$dir/linprobe.log")"
        return
    fi
    # shellcheck disable=SC2086
    "$build/examples/simmim_pretrain" --model "$model" --epochs "$pre_epochs" --batch 128 --base-lr 2e-3 --seed "$s" \
        --threads "$threads" --save-every 0 --log-every 50 --vis-every 0 ${FLAGS[$name]} --out "$dir/pretrain" \
        >"$dir/pretrain.log" 2>&1
    "$build/examples/simmim_finetune" --mode linprobe --model "$model" --init "$dir/pretrain/checkpoint.safetensors" \
        --epochs "$lp_epochs" --batch 256 --max-train "$lp_max" --threads "$threads" --seed "$s" --out "$dir/linprobe" \
        >"$dir/linprobe.log" 2>&1
    echo "[$name s$s] $(tail -1 "$dir/linprobe.log")"
}
export -f run_one
pids=()
for name in "${ORDER[@]}"; do
    for s in $seeds; do
        run_one "$name" "$s" &
        pids+=($!)
        while [[ $(jobs -rp | wc -l) -ge $jobs ]]; do wait -n || true; done
    done
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
for name in "${ALL[@]}"; do echo "$name ${FLAGS[$name]}"; done >"$out/flags.txt"
"$build/examples/simmim_avgdist" --image-size 32 --model-patch 4 --mask-patches 4,8,16 --samples 500 \
    --csv "$out/avgdist_32.csv" >/dev/null
python3 "$root/benchmarks/ablation_table.py" "$out"
exit $status
