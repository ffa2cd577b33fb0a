#!/usr/bin/env bash
# End-to-end check of scripts/run-results.sh (the experiment of docs/results.md) at a toy budget: vit-tiny-test,
# 2,000 training and 200 test images of the Debian Fashion-MNIST, two seeds, two lanes (seconds per run):
#  1. every run of the protocol finishes and publishes a result.json: the pretraining, 2 seeds x 2 inits of the
#     linear probe and of the 1% and 10% fine-tuning, 1 seed x 2 inits of the full-label fine-tuning (15);
#     each parses, with a top-1 in [0, 1] and its thread count (1: each lane has one of the two threads);
#  2. the pretrained runs start from the pretraining's checkpoint and the random ones from nothing; the 1% and
#     10% subsets hold max(1, round(f n_c)) images per class, and the two seeds of a fraction the same number;
#  3. the two lanes share the queue: the random-init runs start while the pretraining runs, and every pretrained
#     run starts after it has finished;
#  4. a rerun does nothing: every run is skipped;
#  5. a finished run whose result.json is removed is resumed from its last checkpoint (nothing retrained) and
#     publishes the same top-1;
#  6. a failing run stops the script with a non-zero exit, and bad LANES / STAGES values are usage errors (2);
#  7. a Swin preset gets stage f's budget: bf16 matmuls, layer decay 0.9 for the pretrained init.
# Usage: results_pipeline.sh <build dir> <source dir>
set -u
build=${1:?build dir}
src=${2:?source dir}
[ -x "$build/examples/simmim_pretrain" ] && [ -x "$build/examples/simmim_finetune" ] ||
    { echo "skip: simmim_pretrain / simmim_finetune not built"; exit 77; }
[ -e /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz ] || { echo "skip: Fashion-MNIST not installed"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { echo "ok: $1"; passed=$((passed + 1)); }
bad() { echo "FAIL: $1"; failed=$((failed + 1)); }

toy=(env BUILD="$build" MODEL=vit-tiny-test THREADS=2 LANES=2 SEEDS="1 2" FULL_SEEDS=1 PRE_STEPS=20 PRE_SAVE=10
     MAX_TRAIN=2000 MAX_TEST=200 F1_EPOCHS=2 F1_BATCH=8 F1_EVAL=1 F10_EPOCHS=2 F10_BATCH=16 F10_EVAL=1
     F100_EPOCHS=1 F100_BATCH=64 F100_EVAL=1 LP_EPOCHS=2)
run="$src/scripts/run-results.sh"
m="$tmp/out/vit-tiny-test"

# 1-3. the whole protocol
if "${toy[@]}" bash "$run" "$tmp/out" > "$tmp/run1.log" 2>&1; then ok "the toy protocol exits 0"; else
    bad "the toy protocol failed: $(tail -3 "$tmp/run1.log")"; fi
/usr/bin/python3 - "$m" > "$tmp/check.txt" 2>&1 <<'EOF'
import json, os, sys
m = sys.argv[1]
runs = ["pretrain"] + [f"{p}_{init}_s{s}" for p in ["lp_f1", "ft_f0.01", "ft_f0.1"] for init in ["pretrained", "random"]
                       for s in [1, 2]] + ["ft_f1_pretrained_s1", "ft_f1_random_s1"]
errors = []
res = {}
for r in runs:
    try:
        res[r] = json.load(open(os.path.join(m, r, "result.json")))
    except (OSError, ValueError) as e:
        errors.append(f"{r}: no readable result.json ({e})")
extra = sorted(set(os.listdir(m)) - set(runs))
if extra:
    errors.append(f"unexpected run directories {extra}")
for r, j in res.items():
    want = 1
    if j.get("threads") != want:
        errors.append(f"{r}: threads {j.get('threads')}, expected {want}")
    if r != "pretrain" and not 0.0 <= j.get("test_top1", -1) <= 1.0:
        errors.append(f"{r}: test_top1 {j.get('test_top1')}")
    if r != "pretrain":
        want_init = os.path.join(m, "pretrain", "checkpoint.safetensors") if "pretrained" in r else "random"
        if os.path.realpath(j.get("init", "")) != os.path.realpath(want_init) and j.get("init") != want_init:
            errors.append(f"{r}: init {j.get('init')}, expected {want_init}")
# 2,000 training images hold about 200 per class: 1% is 2 per class, 10% is 20 (max(1, round(f n_c)))
labels = open("/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz", "rb").read()
import gzip
y = gzip.decompress(labels)[8:8 + 2000]
counts = [y.count(bytes([c])) for c in range(10)]
for frac, key in [(0.01, "ft_f0.01"), (0.1, "ft_f0.1")]:
    want = sum(max(1, round(frac * n)) for n in counts)
    for init in ["pretrained", "random"]:
        for s in [1, 2]:
            r = f"{key}_{init}_s{s}"
            if r in res and res[r].get("train_images") != want:
                errors.append(f"{r}: {res[r].get('train_images')} training images, expected {want} (per class {counts})")
print("\n".join(errors) if errors else "all 15 results as expected")
sys.exit(1 if errors else 0)
EOF
if [ $? = 0 ]; then ok "$(cat "$tmp/check.txt")"; else bad "results: $(cat "$tmp/check.txt")"; fi
grep -q "two lanes of 1 threads" "$tmp/run1.log" || bad "no two-lane line in the log"
# the other lane's first run (f100, random init) starts before the pretraining is done; no pretrained run does
pre_done=$(grep -n "pretrain $m/pretrain done" "$tmp/run1.log" | cut -d: -f1)
first_random=$(grep -n "finetune $m/ft_f1_random_s1, 1 threads" "$tmp/run1.log" | cut -d: -f1)
first_pretrained=$(grep -nE "(finetune|linprobe) $m/[a-z_0-9.]*_pretrained_s[0-9], " "$tmp/run1.log" | head -1 | cut -d: -f1)
if [ -n "$pre_done" ] && [ -n "$first_random" ] && [ -n "$first_pretrained" ] && [ "$first_random" -lt "$pre_done" ] &&
    [ "$first_pretrained" -gt "$pre_done" ]; then
    ok "a random-init run ran beside the pretraining, the pretrained runs after it (log lines $first_random < $pre_done < $first_pretrained)"
else bad "lanes: random f100 at line $first_random, pretraining done at $pre_done, first pretrained run at $first_pretrained"; fi

# 4. a rerun skips everything
"${toy[@]}" bash "$run" "$tmp/out" > "$tmp/run2.log" 2>&1 || bad "the rerun failed"
skips=$(grep -c "skip .* (finished)" "$tmp/run2.log")
grep -qE "(finetune|linprobe|pretrain) $m/[^ ]*(,| $)" "$tmp/run2.log" && bad "the rerun ran something: $(grep -E "(finetune|linprobe) $m" "$tmp/run2.log" | head -2)"
[ "$skips" = 15 ] && ok "a rerun skips all 15 finished runs" || bad "a rerun skipped $skips runs, expected 15"

# 5. a lost result.json: the run resumes from its final checkpoint and publishes the same top-1
r="$m/ft_f0.1_random_s2"
before=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["test_top1"])' "$r/result.json")
rm "$r/result.json"
"${toy[@]}" bash "$run" "$tmp/out" > "$tmp/run3.log" 2>&1 || bad "the run after removing a result failed: $(tail -2 "$tmp/run3.log")"
after=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["test_top1"])' "$r/result.json" 2>/dev/null)
if grep -q "finetune $r, 1 threads (resuming)" "$tmp/run3.log" && [ "$(grep -c "skip .* (finished)" "$tmp/run3.log")" = 14 ] &&
    [ "$before" = "$after" ]; then ok "a removed result.json: only that run resumes, same top-1 ($after)"; else
    bad "a removed result.json: top-1 $before -> $after; $(grep -E "$r" "$tmp/run3.log" | head -2)"; fi

# 6. failures and usage errors
env BUILD="$build" MODEL=vit-tiny-test THREADS=2 SEEDS=1 PRE_STEPS=20 MAX_TRAIN=2000 MAX_TEST=200 STAGES="pre f1" \
    F1_BATCH=64 F1_EPOCHS=1 bash "$run" "$tmp/fail" > "$tmp/fail.log" 2>&1
rc=$?
[ "$rc" != 0 ] && [ ! -e "$tmp/fail/vit-tiny-test/ft_f0.01_pretrained_s1/result.json" ] &&
    ok "a failing run (batch 64 > 20 images) stops the script (exit $rc) and publishes nothing" ||
    bad "a failing run: exit $rc, $(tail -2 "$tmp/fail.log")"
for bad_env in "LANES=3" "STAGES=pre,lp"; do
    env BUILD="$build" "$bad_env" bash "$run" "$tmp/usage" > "$tmp/usage.log" 2>&1
    rc=$?
    [ "$rc" = 2 ] && [ ! -e "$tmp/usage/vit-m4-32-c1/pretrain" ] && ok "$bad_env: usage error (exit 2: $(head -1 "$tmp/usage.log"))" ||
        bad "$bad_env: exit $rc, $(head -2 "$tmp/usage.log")"
done

# 7. stage f's budget for a Swin preset: bf16 matmuls in every run, the Swin-B fine-tuning layer decay (0.9)
if grep -qw avx512_bf16 /proc/cpuinfo; then
    env BUILD="$build" MODEL=swin-tiny-test THREADS=2 SEEDS=1 FULL_SEEDS=1 PRE_STEPS=10 PRE_SAVE=10 MAX_TRAIN=1000 MAX_TEST=100 \
        F1_EPOCHS=1 F1_BATCH=8 F1_EVAL=1 F10_EPOCHS=1 F10_BATCH=16 F10_EVAL=1 F100_EPOCHS=1 F100_BATCH=64 F100_EVAL=1 \
        LP_EPOCHS=1 bash "$run" "$tmp/swin" > "$tmp/swin.log" 2>&1 || bad "the Swin toy protocol failed: $(tail -3 "$tmp/swin.log")"
    /usr/bin/python3 - "$tmp/swin/swin-tiny-test" > "$tmp/swin.txt" 2>&1 <<'EOF2'
import json, os, sys
m = sys.argv[1]
errors = []
runs = sorted(d for d in os.listdir(m) if os.path.isfile(os.path.join(m, d, "result.json")))
if len(runs) != 9:
    errors.append(f"{len(runs)} finished runs, expected 9: {runs}")
for r in runs:
    j = json.load(open(os.path.join(m, r, "result.json")))
    if j.get("precision") != "bf16":
        errors.append(f"{r}: precision {j.get('precision')}")
    if r.startswith("ft_"):
        want = 0.9 if "pretrained" in r else 1.0
        if j["config"]["layer_decay"] != want:
            errors.append(f"{r}: layer decay {j['config']['layer_decay']}, expected {want}")
    if r == "ft_f1_random_s1" and j["epochs"] != 1:
        errors.append(f"{r}: {j['epochs']} epochs")
print("\n".join(errors) if errors else f"{len(runs)} Swin runs, all bf16, layer decay 0.9 (pretrained) / 1.0 (random)")
sys.exit(1 if errors else 0)
EOF2
    if [ $? = 0 ]; then ok "$(cat "$tmp/swin.txt")"; else bad "Swin budget: $(cat "$tmp/swin.txt")"; fi
    grep -qF "swin-tiny-test: 9 runs, 2 lane(s); bf16 matmuls, pretraining 10 steps, full-label fine-tuning 1 epochs, pretrained init --base-lr 1.25e-3 --layer-decay 0.9" "$tmp/swin.log" ||
        bad "the Swin budget line: $(grep 'swin-tiny-test: ' "$tmp/swin.log" | head -1)"
else
    echo "skip: the Swin budget (bf16) needs AVX512-BF16, which this CPU lacks"
fi

echo "results_pipeline: $passed passed, $failed failed"
[ "$failed" = 0 ]
