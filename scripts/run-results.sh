#!/usr/bin/env bash
# scripts/run-results.sh: the experiment of docs/results.md. For each seed: SimMIM-pretrain a small ViT on the
# Fashion-MNIST training split, then fine-tune it and a randomly initialised copy with the same budget, and
# linearly probe both encoders; top-1 on the 10k test split. Then tabulate and plot.
# Usage: scripts/run-results.sh [out dir]
#   env: SEEDS, MODEL, PRE_EPOCHS, FT_EPOCHS, LP_EPOCHS, FT_MAX_TRAIN, LP_MAX_TRAIN, THREADS, BUILD, NO_PLOT
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root/runs/results}
build=${BUILD:-$root/build}
model=${MODEL:-vit-m4-32-c1}
seeds=${SEEDS:-"1 2"}
pre_epochs=${PRE_EPOCHS:-3}
ft_epochs=${FT_EPOCHS:-1}
lp_epochs=${LP_EPOCHS:-30}
ft_max=${FT_MAX_TRAIN:-0}   # 0: the whole training split
lp_max=${LP_MAX_TRAIN:-0}
threads=${THREADS:-0}       # 0: all cores
mkdir -p "$out"
for s in $seeds; do
    "$build/examples/simmim_pretrain" --model "$model" --epochs "$pre_epochs" --batch 128 --base-lr 2e-3 --seed "$s" --threads "$threads" \
        --save-every 0 --log-every 50 --out "$out/pretrain_s$s"
    ckpt="$out/pretrain_s$s/checkpoint.safetensors"
    "$build/examples/simmim_finetune" --mode finetune --model "$model" --init "$ckpt" --epochs "$ft_epochs" --batch 128 \
        --max-train "$ft_max" --threads "$threads" --seed "$s" --log-every 100 --out "$out/finetune_pretrained_s$s"
    "$build/examples/simmim_finetune" --mode finetune --model "$model" --epochs "$ft_epochs" --batch 128 \
        --max-train "$ft_max" --threads "$threads" --seed "$s" --log-every 100 --out "$out/finetune_random_s$s"
    "$build/examples/simmim_finetune" --mode linprobe --model "$model" --init "$ckpt" --epochs "$lp_epochs" --batch 256 \
        --max-train "$lp_max" --threads "$threads" --seed "$s" --out "$out/linprobe_pretrained_s$s"
    "$build/examples/simmim_finetune" --mode linprobe --model "$model" --epochs "$lp_epochs" --batch 256 \
        --max-train "$lp_max" --threads "$threads" --seed "$s" --out "$out/linprobe_random_s$s"
done
[ -n "${NO_PLOT:-}" ] || /usr/bin/python3 "$root/benchmarks/plot_results.py" "$out" "$root/docs/results_curves.png"
