#!/usr/bin/env bash
# benchmarks/precision_run.sh [out dir]: the same pretraining in fp32 and in bf16 matmul precision, their loss
# curves in one plot, and a linear probe of both checkpoints over several probe seeds (docs/performance.md,
# "bf16 mixed precision").
#
#   BUILD        a CMake build directory with simmim_pretrain and simmim_finetune built (default: build)
#   EPOCHS       pretraining epochs of the 60k Fashion-MNIST training images (default 2)
#   THREADS      OpenMP threads per run (default 1: the two pretrainings run side by side, one core each)
#   PROBE_SEEDS  seeds of the linear probes of each checkpoint (default "0 1 2")
#   PLOT         the loss-curve picture (default docs/img/precision_loss.png)
#
# Recipe: the README demo's (vit-t4-32-c1, batch 64, the default learning-rate schedule), seed 0, for EPOCHS
# epochs; the probe is simmim_finetune --mode linprobe (frozen encoder, block 8 of 12 average-pooled, 30 epochs on
# the first 20k training images, top-1 on the 10k test images). Prints the final losses (mean of the last 10
# logged), their relative difference, and every probe's top-1.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-runs/precision}
build=${BUILD:-build}
epochs=${EPOCHS:-2}
threads=${THREADS:-1}
probe_seeds=${PROBE_SEEDS:-0 1 2}
plot=${PLOT:-$root/docs/img/precision_loss.png}
mkdir -p "$out"
for precision in fp32 bf16; do
    "$build/examples/simmim_pretrain" --data fashion-mnist --model vit-t4-32-c1 --epochs "$epochs" --batch 64 \
        --threads "$threads" --log-every 20 --save-every 500 --precision "$precision" --out "$out/$precision" \
        > "$out/$precision.log" 2>&1 &
done
wait
/usr/bin/python3 "$root/benchmarks/plot_curves.py" --out "$plot" \
    --title "vit-t4-32-c1 on Fashion-MNIST, batch 64, $epochs epochs: fp32 and bf16 matmul" \
    "$out/fp32:fp32" "$out/bf16:bf16 matmul (FP32 accumulation)"
for precision in fp32 bf16; do
    for seed in $probe_seeds; do
        "$build/examples/simmim_finetune" --mode linprobe --model vit-t4-32-c1 --data fashion-mnist \
            --init "$out/$precision/checkpoint.safetensors" --epochs 30 --batch 256 --max-train 20000 \
            --seed "$seed" --threads "$threads" --out "$out/probe_${precision}_$seed" > "$out/probe_${precision}_$seed.log" 2>&1 &
    done
    wait
done
for precision in fp32 bf16; do
    for seed in $probe_seeds; do
        printf '%s probe seed %s: %s\n' "$precision" "$seed" "$(grep -o 'top-1 [0-9.]*%' "$out/probe_${precision}_$seed.log" | tail -1)"
    done
done
