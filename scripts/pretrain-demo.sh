#!/usr/bin/env bash
# scripts/pretrain-demo.sh: the README's main job. Installs what is needed, builds the examples in
# Release, and pretrains vit-t4-32-c1 on Fashion-MNIST (Debian package dataset-fashion-mnist) for a few
# minutes on all cores, then prints where the pictures, metrics and checkpoint are.
# Extra arguments are passed to simmim_pretrain (e.g. --steps 2000 --out runs/longer).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${SIMMIM_BUILD_DIR:-$root/build}

bash "$root/scripts/setup.sh"
cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$build_dir" -j"$(nproc)" --target simmim_pretrain
# runs/demo unless the extra arguments name their own --out (simmim_pretrain takes one --out only).
out_args=(--out "$root/runs/demo")
for arg in "$@"; do
    if [[ "$arg" == --out || "$arg" == --out=* ]]; then out_args=(); fi
done
"$build_dir/examples/simmim_pretrain" --data fashion-mnist --model vit-t4-32-c1 --steps 400 --batch 64 \
    --log-every 20 --vis-every 200 --save-every 200 "${out_args[@]}" "$@"
