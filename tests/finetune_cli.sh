#!/usr/bin/env bash
# End-to-end checks of simmim_finetune --mode finetune on the Debian Fashion-MNIST (vit-tiny-test, a few hundred
# training images, seconds each):
#  1. a run stopped after epoch 1 (--stop-after) and resumed ends with byte-identical final weights
#     (model.safetensors) and the same metrics.jsonl (less the wall-clock fields) as an uninterrupted run; so does
#     a run stopped in the middle of an epoch, with Mixup + CutMix on;
#  2. SIGTERM finishes the step, saves, exits 143; resuming gives the uninterrupted run's final weights;
#  3. metrics.jsonl has one row per epoch with epoch, step, train_loss, test_top1, lr, images_per_s, elapsed_s;
#     --eval-every N leaves test_top1 out of the rows of epochs it does not evaluate, and training unchanged;
#     the test split is the full 10k by default (the printed count);
#  4. the recipe is on by default (crop padding image/8, flip 0.5, erase 0.25, drop path 0.1: the printed
#     recipe), and each of augmentation, drop path and label smoothing changes training (their losses differ
#     from it off);
#  5. --label-fraction draws max(1, round(f n_c)) images of every class (counted from the label file; the
#     subset's balance and seed are tested in tests/test_subset.cpp);
#  6. usage errors exit 2 with one line: a --resume of another configuration names the differing key, a
#     fine-tuning option with --mode linprobe, bad values.
# Usage: finetune_cli.sh <build dir> <source dir>
set -u
build=${1:?build dir}
ft="$build/examples/simmim_finetune"
[ -x "$ft" ] || { echo "skip: $ft not built"; exit 77; }
[ -e /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz ] || { echo "skip: Fashion-MNIST not installed"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { echo "ok: $1"; passed=$((passed + 1)); }
bad() { echo "FAIL: $1"; failed=$((failed + 1)); }
strip() { sed -E 's/"(elapsed_s|images_per_s)":[^,}]*,?//g' "$1"; }  # wall-clock fields are the only ones allowed to differ
same_run() {  # same_run <dir a> <dir b>: final weights byte for byte, metrics less the clock
    cmp -s "$1/model.safetensors" "$2/model.safetensors" && diff <(strip "$1/metrics.jsonl") <(strip "$2/metrics.jsonl") > /dev/null
}

# 320 images, batch 16: 20 steps per epoch, 2 epochs; 200 test images. The first resume check runs on 2 threads
# (bit-identical with the same thread count), the rest on one (OpenMP threads spin, slowly, on a busy machine)
common=(--model vit-tiny-test --max-train 320 --max-test 200 --batch 16 --log-every 100 --seed 3)
"$ft" --epochs 2 --threads 2 "${common[@]}" --out "$tmp/full" > "$tmp/full.log" 2>&1 || bad "uninterrupted run failed: $(tail -2 "$tmp/full.log")"

# 1. stop after epoch 1, resume
"$ft" --epochs 2 --threads 2 "${common[@]}" --out "$tmp/part" --stop-after 20 > "$tmp/p1.log" 2>&1 || bad "stopped run failed: $(tail -2 "$tmp/p1.log")"
grep -q "stopped (--stop-after) after step 20" "$tmp/p1.log" && [ -e "$tmp/part/checkpoint.safetensors" ] && [ ! -e "$tmp/part/summary.json" ] ||
    bad "the stopped run did not report its stop, left no checkpoint or wrote a summary"
"$ft" --epochs 2 --threads 2 "${common[@]}" --out "$tmp/part" --resume "$tmp/part/checkpoint.safetensors" > "$tmp/p2.log" 2>&1 ||
    bad "resumed run failed: $(tail -2 "$tmp/p2.log")"
grep -q "resuming at step 20" "$tmp/p2.log" || bad "the resumed run did not start at step 20"
same_run "$tmp/full" "$tmp/part" && ok "stop after epoch 1 + resume: final weights byte-identical, same metrics" ||
    { bad "stop after epoch 1 + resume differs from the uninterrupted run"; diff <(strip "$tmp/full/metrics.jsonl") <(strip "$tmp/part/metrics.jsonl"); }

# 1b. the same stopped in the middle of epoch 2 (the epoch's running loss is in the checkpoint), with Mixup and CutMix
"$ft" --epochs 2 --threads 1 "${common[@]}" --mixup 0.8 --cutmix 1.0 --out "$tmp/mixfull" > /dev/null 2>&1
"$ft" --epochs 2 --threads 1 "${common[@]}" --mixup 0.8 --cutmix 1.0 --out "$tmp/mixpart" --stop-after 27 > /dev/null 2>&1 &&
    "$ft" --epochs 2 --threads 1 "${common[@]}" --mixup 0.8 --cutmix 1.0 --out "$tmp/mixpart" --resume "$tmp/mixpart/checkpoint.safetensors" > "$tmp/m2.log" 2>&1 ||
    bad "mid-epoch stop/resume failed: $(tail -2 "$tmp/m2.log")"
same_run "$tmp/mixfull" "$tmp/mixpart" && ok "mid-epoch stop + resume with mixup/cutmix: byte-identical weights, same metrics" ||
    bad "mid-epoch stop + resume with mixup/cutmix differs"
cmp -s "$tmp/full/model.safetensors" "$tmp/mixfull/model.safetensors" && bad "--mixup/--cutmix changed nothing"

# 2. SIGTERM in a longer run (1200 images: 75 steps per epoch, 3 epochs), after its first epoch
long=(--model vit-tiny-test --epochs 3 --max-train 1200 --max-test 200 --batch 16 --threads 1 --log-every 1000 --seed 4)
"$ft" "${long[@]}" --out "$tmp/sigref" > /dev/null 2>&1
"$ft" "${long[@]}" --out "$tmp/sig" > "$tmp/s1.log" 2>&1 &
pid=$!
for _ in $(seq 300); do [ -s "$tmp/sig/metrics.jsonl" ] && break; sleep 0.05; done
kill -TERM $pid
wait $pid
code=$?
[ $code -eq 143 ] && grep -q "interrupted by signal 15 after step" "$tmp/s1.log" && ok "SIGTERM saves a checkpoint and exits 143" ||
    bad "SIGTERM: exit code $code, $(tail -1 "$tmp/s1.log")"
"$ft" "${long[@]}" --out "$tmp/sig" --resume "$tmp/sig/checkpoint.safetensors" > "$tmp/s2.log" 2>&1 || bad "resume after SIGTERM failed: $(tail -2 "$tmp/s2.log")"
same_run "$tmp/sigref" "$tmp/sig" && ok "resume after SIGTERM ($(grep -o 'after step [0-9]*' "$tmp/s1.log")): byte-identical weights, same metrics" ||
    bad "resume after SIGTERM differs from the uninterrupted run"

# 3. the metrics rows
python3 - "$tmp/full/metrics.jsonl" <<'EOF' && ok "metrics.jsonl: one row per epoch with the documented fields" || bad "metrics.jsonl rows"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["epoch"] for r in rows] == [1, 2] and [r["step"] for r in rows] == [20, 40], rows
for r in rows:
    assert set(r) == {"epoch", "step", "train_loss", "test_top1", "lr", "images_per_s", "elapsed_s"}, r
    assert 0 <= r["test_top1"] <= 1 and r["train_loss"] > 0 and r["lr"] > 0 and r["images_per_s"] > 0
EOF
# --eval-every 2 over 3 epochs: test_top1 after epochs 2 and 3 (the last) only, the summary's is epoch 3's, and
# skipping evaluations leaves training alone (the same final weights as evaluating every epoch)
ev=(--model vit-tiny-test --epochs 3 --max-train 64 --max-test 100 --batch 32 --threads 1 --seed 5)
"$ft" "${ev[@]}" --out "$tmp/ev1" > /dev/null 2>&1 && "$ft" "${ev[@]}" --eval-every 2 --out "$tmp/ev2" > /dev/null 2>&1 &&
python3 - "$tmp/ev1" "$tmp/ev2" <<'EOF' && cmp -s "$tmp/ev1/model.safetensors" "$tmp/ev2/model.safetensors" &&
import json, sys
every = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
rows = [json.loads(l) for l in open(sys.argv[2] + "/metrics.jsonl")]
assert ["test_top1" in r for r in rows] == [False, True, True], rows
assert rows[2]["test_top1"] == every[2]["test_top1"] and rows[1]["test_top1"] == every[1]["test_top1"], (rows, every)
assert json.load(open(sys.argv[2] + "/summary.json"))["test_top1"] == rows[2]["test_top1"]
EOF
    ok "--eval-every 2: evaluations after epochs 2 and 3 only, the same weights" || bad "--eval-every"
"$ft" --model vit-tiny-test --epochs 1 --max-train 64 --batch 32 --threads 1 --out "$tmp/fulltest" > "$tmp/ft.log" 2>&1
grep -q "64 train / 10000 test images" "$tmp/ft.log" && ok "evaluation on the full 10k test split by default" || bad "test split: $(head -1 "$tmp/ft.log")"

# 4. the recipe's defaults, and each part changes training
grep -q "recipe: crop padding 2, flip 0.5, random erase 0.25, mixup 0, cutmix 0, drop path 0.1, label smoothing 0.1" "$tmp/full.log" &&
    ok "the recipe is on by default (crop padding 16/8 = 2 px)" || bad "default recipe: $(grep recipe "$tmp/full.log")"
"$ft" --epochs 1 --threads 1 "${common[@]}" --out "$tmp/base1" > /dev/null 2>&1
"$ft" --epochs 1 --threads 1 "${common[@]}" --crop-padding 0 --hflip 0 --random-erase 0 --out "$tmp/noaug" > /dev/null 2>&1
"$ft" --epochs 1 --threads 1 "${common[@]}" --drop-path 0 --out "$tmp/nodp" > /dev/null 2>&1
"$ft" --epochs 1 --threads 1 "${common[@]}" --label-smoothing 0 --out "$tmp/nols" > /dev/null 2>&1
first() { head -1 "$1/metrics.jsonl" | grep -o '"train_loss":[^,}]*'; }
[ -n "$(first "$tmp/noaug")" ] && [ "$(first "$tmp/noaug")" != "$(first "$tmp/base1")" ] && ok "augmentation off changes the epoch-1 loss" || bad "augmentation off: same loss"
[ -n "$(first "$tmp/nodp")" ] && [ "$(first "$tmp/nodp")" != "$(first "$tmp/base1")" ] && ok "--drop-path 0 changes the epoch-1 loss" || bad "drop path off: same loss"
[ -n "$(first "$tmp/nols")" ] && [ "$(first "$tmp/nols")" != "$(first "$tmp/base1")" ] && ok "--label-smoothing 0 changes the epoch-1 loss" || bad "label smoothing off: same loss"

# 5. --label-fraction in fine-tuning: the closed-form count of the class-balanced subset (one training seed; the subset's
#    balance and its determinism in the label seed are tested in tests/test_subset.cpp)
expected=$(python3 - <<'EOF'
import collections, gzip
labels = gzip.open("/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz").read()[8:8 + 2000]
print(sum(max(1, int(0.1 * n + 0.5)) for n in collections.Counter(labels).values()))
EOF
)
s=1
"$ft" --model vit-tiny-test --epochs 1 --max-train 2000 --max-test 50 --batch 8 --label-fraction 0.1 --label-seed 3 --seed $s --threads 1 \
    --out "$tmp/lf$s" > "$tmp/lf$s.log" 2>&1
got=$(grep -o '"train_images": *[0-9]*' "$tmp/lf1/summary.json" 2>/dev/null | head -1 | grep -o '[0-9]*$')
[ -n "$expected" ] && [ "$got" = "$expected" ] && grep -q "class-balanced 0.1 of the labels (label seed 3, $expected images)" "$tmp/lf1.log" &&
    ok "finetune --label-fraction 0.1 trains on $got class-balanced images of 2000" || bad "--label-fraction 0.1: $got images, expected $expected"

# 5b. --val-fraction: a class-balanced 10% of the first 2000 training images is held out and evaluated on (the test split
#     is not); the training images are the other 90%, and --label-fraction then draws from those (closed-form counts)
read -r n_val n_rest n_lf <<< "$(python3 - <<'EOF'
import collections, gzip
labels = gzip.open("/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz").read()[8:8 + 2000]
counts = collections.Counter(labels)
val = {c: max(1, int(0.1 * n + 0.5)) for c, n in counts.items()}
print(sum(val.values()), 2000 - sum(val.values()), sum(max(1, int(0.5 * (n - val[c]) + 0.5)) for c, n in counts.items()))
EOF
)"
for mode in finetune linprobe; do
    "$ft" --mode $mode --model vit-tiny-test --epochs 1 --max-train 2000 --batch 8 --val-fraction 0.1 --val-seed 2 --seed 1 --threads 1 \
        --out "$tmp/val_$mode" > "$tmp/val_$mode.log" 2>&1
    if /usr/bin/python3 - "$tmp/val_$mode/summary.json" "$n_rest" <<'EOF' && grep -q "validation: a class-balanced 0.1 held out (val seed 2, $n_val images)" "$tmp/val_$mode.log" &&
import json, sys
s = json.load(open(sys.argv[1]))
assert s["eval_split"] == "validation" and s["val_fraction"] == 0.1 and s["val_seed"] == 2, s
assert "test_top1" not in s and 0 <= s["val_top1"] <= 1, s
assert s["train_images"] == int(sys.argv[2]), (s["train_images"], sys.argv[2])
assert all("test_top1" not in r for r in s["curve"]) and "val_top1" in s["curve"][-1]
EOF
        grep -q "$n_rest train / $n_val validation images" "$tmp/val_$mode.log"; then
        ok "$mode --val-fraction 0.1: evaluates on $n_val held-out training images, trains on the other $n_rest"
    else bad "$mode --val-fraction 0.1 ($n_val / $n_rest expected): $(grep -E 'validation|rror' "$tmp/val_$mode.log" | head -3)"; fi
done
"$ft" --model vit-tiny-test --epochs 1 --max-train 2000 --batch 8 --val-fraction 0.1 --val-seed 2 --label-fraction 0.5 --label-seed 1 --seed 1 \
    --threads 1 --out "$tmp/val_lf" > "$tmp/val_lf.log" 2>&1
got=$(grep -o '"train_images": *[0-9]*' "$tmp/val_lf/summary.json" 2>/dev/null | head -1 | grep -o '[0-9]*$')
[ -n "$n_lf" ] && [ "$got" = "$n_lf" ] && ok "--label-fraction 0.5 after --val-fraction 0.1 draws $got images from the $n_rest left" ||
    bad "--val-fraction with --label-fraction: $got training images, expected $n_lf"

# 6. usage errors: exit 2, one line
expect_usage() {  # expect_usage "<description>" "<text in the message>" args...
    local what=$1 text=$2; shift 2
    "$ft" "$@" > "$tmp/u.out" 2> "$tmp/u.err"
    local c=$?
    if [ $c -eq 2 ] && [ "$(wc -l < "$tmp/u.err")" -eq 1 ] && grep -qF -- "$text" "$tmp/u.err"; then ok "usage error: $what"
    else bad "usage error '$what' gave code $c: $(head -3 "$tmp/u.err")"; fi
}
expect_usage "--resume with another --batch" "'batch' checkpoint 16, this run 8" --epochs 2 --threads 2 "${common[@]/16/8}" --out "$tmp/part" --resume "$tmp/part/checkpoint.safetensors"
expect_usage "--mixup with --mode linprobe" "--mixup is an option of --mode finetune" --mode linprobe --model vit-tiny-test --epochs 1 --mixup 0.8 --out "$tmp/u"
expect_usage "--hflip out of range" "--hflip: must be a finite number in [0, 1]" --model vit-tiny-test --epochs 1 --hflip 2 --out "$tmp/u"
expect_usage "--val-fraction 1" "--val-fraction: must be a finite number in [0, 1)" --model vit-tiny-test --epochs 1 --val-fraction 1 --out "$tmp/u"
expect_usage "--drop-path 1" "--drop-path: must be a finite number in [0, 1)" --model vit-tiny-test --epochs 1 --drop-path 1 --out "$tmp/u"

echo "finetune_cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
