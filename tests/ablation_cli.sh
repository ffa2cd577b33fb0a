#!/usr/bin/env bash
# End-to-end checks of the ablation options of simmim_pretrain / simmim_finetune (docs/ablations.md) on the
# Debian Fashion-MNIST, preset vit-tiny-test, a few steps each. The numerics of every variant are checked by
# the unit tests ([official], [heads]); this checks the wiring from flags to model types:
#  1. each variant trains, and its checkpoint holds the tensors (names and shapes) of that variant;
#  2. an L2 loss over all pixels of the per-pixel normalised target starts near its closed form: a target
#     normalised to zero mean and unit variance over its window has a mean square of about 1, and the
#     initial prediction is near 0 (so the first loss must lie in [0.9, 1.1]);
#  3. drop path is on by default for the official ViT (its losses differ from --drop-path 0), and a
#     stopped + resumed official run with drop path logs the same losses bit for bit;
#  4. combinations the binary does not offer, unknown names and bad values are usage errors (exit 2);
#  5. simmim_finetune --mode linprobe recognises an official-ViT checkpoint; --mode finetune refuses it.
#  6. simmim_finetune --label-fraction draws max(1, round(f n_c)) images of every class.
# Usage: ablation_cli.sh <build dir> <source dir>
set -u
build=${1:?build dir}
bin="$build/examples/simmim_pretrain"
ft="$build/examples/simmim_finetune"
PY=python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { echo "ok: $1"; passed=$((passed + 1)); }
bad() { echo "FAIL: $1"; failed=$((failed + 1)); }
strip() { sed 's/"images_per_s":[^,]*,//' "$1"; }

# tensor name -> shape of a safetensors file, one "name [d0, d1, ...]" line each (the JSON header)
shapes() {
    "$PY" - "$1" <<'EOF'
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
for name, v in sorted(header.items()):
    if name != "__metadata__":
        print(name, v["shape"])
EOF
}
first_loss() { head -1 "$1" | sed 's/.*"loss":\([^,}]*\).*/\1/'; }

common=(--model vit-tiny-test --batch 8 --log-every 1 --threads 2 --seed 5)
run() {  # run <name> <steps> flags...
    local name=$1 steps=$2
    shift 2
    "$bin" "${common[@]}" --steps "$steps" --out "$tmp/$name" "$@" > "$tmp/$name.log" 2>&1 ||
        { bad "$name: simmim_pretrain $* failed: $(tail -2 "$tmp/$name.log")"; return 1; }
}

# 1. variants train and hold their tensors (vit-tiny-test: D 32, C 3, p 4, S 16, token grid 4)
run default 3 && shapes "$tmp/default/checkpoint.safetensors" > "$tmp/default.shapes"
expect_tensor() {  # expect_tensor <run> <name> <shape> <what>
    if shapes "$tmp/$1/checkpoint.safetensors" | grep -qxF "$2 $3"; then ok "$4"; else bad "$4: no tensor '$2 $3' in $1"; fi
}
expect_no_tensor() {
    if shapes "$tmp/$1/checkpoint.safetensors" | grep -q "^$2 "; then bad "$3: $1 has '$2'"; else ok "$3"; fi
}
expect_tensor default decoder.0.weight "[48, 32, 1, 1]" "default: linear head predicts p*p*C = 48 values per token"
if run mlp 3 --head mlp; then
    expect_tensor mlp decoder.0.weight "[32, 32, 1, 1]" "--head mlp: first 1x1 conv D -> D"
    expect_tensor mlp decoder.2.weight "[48, 32, 1, 1]" "--head mlp: second 1x1 conv D -> p*p*C"
fi
if run res8 3 --pred-resolution 8; then
    expect_tensor res8 decoder.0.weight "[12, 32, 1, 1]" "--pred-resolution 8: (8/4)^2 * 3 = 12 values per token"
fi
if run res4 3 --pred-resolution 4; then
    expect_tensor res4 decoder.0.weight "[3, 32, 1, 1]" "--pred-resolution 4: one pixel (3 values) per token"
fi
if run official 3 --vit official; then
    expect_tensor official encoder.rel_pos_bias.relative_position_bias_table "[52, 2]" "--vit official: shared relative position table ((2*4-1)^2 + 3, heads)"
    expect_tensor official encoder.blocks.1.gamma_2 "[32]" "--vit official: layer scale"
    expect_tensor official encoder.blocks.0.attn.q_bias "[32]" "--vit official: q bias"
    expect_no_tensor official encoder.pos_embed "--vit official: no absolute position embedding"
    expect_no_tensor official encoder.blocks.0.attn.qkv.bias "--vit official: no qkv bias (k has none)"
fi
for v in "l2 --loss l2" "all --loss-region all" "norm --target norm"; do
    set -- $v
    name=$1
    shift
    if run "$name" 3 "$@"; then
        if diff <(shapes "$tmp/default/checkpoint.safetensors") <(shapes "$tmp/$name/checkpoint.safetensors") > /dev/null &&
            [ "$(first_loss "$tmp/$name/metrics.jsonl")" != "$(first_loss "$tmp/default/metrics.jsonl")" ]; then
            ok "$*: same model tensors as the default, a different loss"
        else
            bad "$*: tensors or first loss unexpected"
        fi
    fi
done

# 2. closed form: L2, all pixels, normalised target, prediction ~0 at init -> loss ~ mean square of the target ~ 1
if run l2norm 1 --loss l2 --loss-region all --target norm; then
    l=$(first_loss "$tmp/l2norm/metrics.jsonl")
    if "$PY" -c "import sys; sys.exit(0 if 0.9 <= float('$l') <= 1.1 else 1)"; then
        ok "L2 on all pixels of the normalised target starts at $l (closed form ~1)"
    else
        bad "L2 on all pixels of the normalised target starts at $l, expected ~1"
    fi
fi

# 3. drop path: on by default for the official ViT; stop + resume is bit-identical with it
if run official_nodp 3 --vit official --drop-path 0; then
    if diff <(strip "$tmp/official/metrics.jsonl") <(strip "$tmp/official_nodp/metrics.jsonl") > /dev/null; then
        bad "--vit official gives the same losses with drop path 0.1 (default) and 0"
    else
        ok "--vit official: drop path (default 0.1) changes the losses"
    fi
fi
run dp_full 8 --vit official --drop-path 0.3 --save-every 0
"$bin" "${common[@]}" --steps 8 --out "$tmp/dp_part" --vit official --drop-path 0.3 --save-every 0 --stop-after 3 > "$tmp/dp1.log" 2>&1 &&
    "$bin" "${common[@]}" --steps 8 --out "$tmp/dp_part" --vit official --drop-path 0.3 --save-every 0 \
        --resume "$tmp/dp_part/checkpoint.safetensors" > "$tmp/dp2.log" 2>&1 || bad "official stop/resume failed: $(tail -2 "$tmp/dp2.log")"
if [ "$(wc -l < "$tmp/dp_full/metrics.jsonl")" -eq 8 ] && diff <(strip "$tmp/dp_full/metrics.jsonl") <(strip "$tmp/dp_part/metrics.jsonl") > /dev/null; then
    ok "official ViT with drop path 0.3: stop + resume reproduces all 8 steps bit for bit"
else
    bad "official ViT with drop path: stop + resume differs"
fi
"$bin" "${common[@]}" --steps 8 --out "$tmp/dp_part" --vit common --resume "$tmp/dp_part/checkpoint.safetensors" > "$tmp/dp3.log" 2>&1
[ $? -eq 2 ] && ok "resuming an official-ViT checkpoint as the common ViT is a usage error" || bad "resume with another --vit: $(tail -1 "$tmp/dp3.log")"

# 4. usage errors: exit 2, nothing written
expect_usage() {
    local what=$1
    shift
    "$bin" "$@" --out "$tmp/usage" > "$tmp/u.log" 2>&1
    local c=$?
    if [ $c -eq 2 ] && [ ! -e "$tmp/usage/metrics.jsonl" ] && [ "$(wc -l < "$tmp/u.log")" -eq 1 ]; then
        ok "usage error: $what"
    else
        bad "usage error '$what' gave code $c: $(head -3 "$tmp/u.log")"
    fi
}
expect_usage "two model changes at once" --model vit-tiny-test --steps 2 --vit official --head mlp
expect_usage "an ablation variant on a preset without them" --model vit-t16-224 --steps 2 --head mlp
expect_usage "unknown head" --model vit-tiny-test --steps 2 --head deep
expect_usage "unknown loss" --model vit-tiny-test --steps 2 --loss l3
expect_usage "resolution not a multiple of the token grid" --model vit-tiny-test --steps 2 --pred-resolution 6
expect_usage "drop path without the official ViT" --model vit-tiny-test --steps 2 --drop-path 0.1
expect_usage "drop path 1" --model vit-tiny-test --steps 2 --vit official --drop-path 1

# 5. linear probing of an official-ViT checkpoint; fine-tuning refuses it
"$ft" --mode linprobe --model vit-tiny-test --init "$tmp/official/checkpoint.safetensors" --epochs 1 --max-train 300 --max-test 100 \
    --threads 2 --out "$tmp/lp" > "$tmp/lp.log" 2>&1 && [ -s "$tmp/lp/summary.json" ] &&
    ok "linprobe reads an official-ViT checkpoint" || bad "linprobe of an official checkpoint: $(tail -2 "$tmp/lp.log")"
"$ft" --mode linprobe --model vit-tiny-test --vit common --init "$tmp/official/checkpoint.safetensors" --epochs 1 --max-train 300 \
    --max-test 100 --threads 2 --out "$tmp/lp2" > "$tmp/lp2.log" 2>&1
[ $? -ne 0 ] && ok "linprobe --vit common of an official checkpoint fails (missing tensors)" || bad "linprobe --vit common accepted an official checkpoint"
"$ft" --mode finetune --model vit-tiny-test --init "$tmp/official/checkpoint.safetensors" --epochs 1 --out "$tmp/ft" > "$tmp/ft.log" 2>&1
[ $? -eq 2 ] && [ ! -e "$tmp/ft" ] && ok "finetune of an official checkpoint is a usage error before any work" || bad "finetune of an official checkpoint: $(tail -1 "$tmp/ft.log")"

# 6. --label-fraction: a class-balanced subset of the first --max-train images, max(1, round(0.1 n_c)) of every class
#    (the expected count from the label file itself)
expected=$("$PY" - <<'EOF'
import collections, gzip
labels = gzip.open("/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz").read()[8:8 + 300]
print(sum(max(1, int(0.1 * n + 0.5)) for n in collections.Counter(labels).values()))
EOF
)
"$ft" --mode linprobe --model vit-tiny-test --init "$tmp/official/checkpoint.safetensors" --epochs 1 --max-train 300 --max-test 100 \
    --batch 8 --label-fraction 0.1 --label-seed 3 --threads 2 --out "$tmp/lp3" > "$tmp/lp3.log" 2>&1
got=$(grep -o '"train_images": *[0-9]*' "$tmp/lp3/summary.json" 2>/dev/null | grep -o '[0-9]*$')
[ -n "$expected" ] && [ "$got" = "$expected" ] && grep -q "class-balanced 0.1 of the labels (label seed 3, $expected images)" "$tmp/lp3.log" &&
    ok "linprobe --label-fraction 0.1 trains on $got class-balanced images of 300" ||
    bad "--label-fraction 0.1: $got training images, expected $expected: $(tail -2 "$tmp/lp3.log")"

echo "ablation_cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
