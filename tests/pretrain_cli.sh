#!/usr/bin/env bash
# End-to-end checks of simmim_pretrain on the Debian Fashion-MNIST (a tiny preset, a few steps):
#  1. an interrupted (--stop-after) and resumed run logs the same loss, lr and grad norm, bit for bit, at
#     every step as an uninterrupted one;
#  2. SIGTERM finishes the step, saves, exits 143, and resuming reproduces the uninterrupted run;
#  3. invalid options exit with code 2 and a one-line message before any work;
#  4. the outputs exist and the checkpoint loads in simmim_reconstruct.
# Usage: pretrain_cli.sh <build dir> <source dir>
set -u
build=${1:?build dir}
bin="$build/examples/simmim_pretrain"
rec="$build/examples/simmim_reconstruct"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { echo "ok: $1"; passed=$((passed + 1)); }
bad() { echo "FAIL: $1"; failed=$((failed + 1)); }
strip() { sed 's/"images_per_s":[^,]*,//' "$1"; }  # wall-clock speed is the only field allowed to differ

common=(--model vit-tiny-test --batch 8 --steps 14 --log-every 1 --threads 2 --save-every 4 --seed 11)
"$bin" "${common[@]}" --out "$tmp/full" > "$tmp/full.log" 2>&1 || bad "uninterrupted run failed: $(tail -2 "$tmp/full.log")"

# 1. stop after 5 steps (checkpoint at the stop), then resume to the end
"$bin" "${common[@]}" --out "$tmp/part" --stop-after 5 > "$tmp/p1.log" 2>&1 &&
"$bin" "${common[@]}" --out "$tmp/part" --resume "$tmp/part/checkpoint.safetensors" > "$tmp/p2.log" 2>&1 ||
    bad "interrupted/resumed run failed: $(tail -2 "$tmp/p2.log")"
if [ "$(strip "$tmp/full/metrics.jsonl" | wc -l)" -eq 14 ] && diff <(strip "$tmp/full/metrics.jsonl") <(strip "$tmp/part/metrics.jsonl") > /dev/null; then
    ok "stop + resume reproduces all 14 logged steps bit for bit"
else
    bad "stop + resume differs from the uninterrupted run"; diff <(strip "$tmp/full/metrics.jsonl") <(strip "$tmp/part/metrics.jsonl") | head -6
fi
grep -q "resuming at step 5" "$tmp/p2.log" && ok "resume starts at the saved step" || bad "resume did not report step 5"

# 2. SIGTERM during a run with many steps, then resume
"$bin" "${common[@]/14/400}" --out "$tmp/sig" > "$tmp/s1.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -s "$tmp/sig/metrics.jsonl" ] && [ "$(wc -l < "$tmp/sig/metrics.jsonl")" -ge 3 ] && break; sleep 0.1; done
kill -TERM $pid
wait $pid
code=$?
[ $code -eq 143 ] && ok "SIGTERM exits with 143 after saving" || bad "SIGTERM exit code $code"
grep -q "interrupted by signal 15" "$tmp/s1.log" && ok "SIGTERM reports where the checkpoint is" || bad "no interruption message"
"$bin" "${common[@]/14/400}" --out "$tmp/sig" --resume "$tmp/sig/checkpoint.safetensors" --stop-after 3 > "$tmp/s2.log" 2>&1 || bad "resume after SIGTERM failed"
"$bin" "${common[@]/14/400}" --out "$tmp/sigref" --stop-after "$(strip "$tmp/sig/metrics.jsonl" | wc -l)" > /dev/null 2>&1
if diff <(strip "$tmp/sigref/metrics.jsonl") <(strip "$tmp/sig/metrics.jsonl") > /dev/null; then
    ok "resume after SIGTERM reproduces the uninterrupted run ($(wc -l < "$tmp/sig/metrics.jsonl") steps)"
else
    bad "resume after SIGTERM differs"
fi

# 3. invalid options: exit 2, one line, nothing written
expect_usage() {  # expect_usage "<description>" args...
    local what=$1; shift
    "$bin" "$@" --out "$tmp/usage" > "$tmp/u.log" 2>&1
    local c=$?
    if [ $c -eq 2 ] && [ ! -e "$tmp/usage/metrics.jsonl" ]; then ok "usage error: $what"; else bad "usage error '$what' gave code $c: $(cat "$tmp/u.log" | head -3)"; fi
}
expect_usage "no --steps/--epochs" --model vit-tiny-test
expect_usage "both --steps and --epochs" --model vit-tiny-test --steps 3 --epochs 1
expect_usage "unknown preset" --model vit-nope --steps 3
expect_usage "mask ratio 1.5" --model vit-tiny-test --steps 3 --mask-ratio 1.5
expect_usage "mask patch not a multiple of the model patch" --model vit-tiny-test --steps 3 --mask-patch 6
expect_usage "missing data directory" --model vit-tiny-test --steps 3 --data /nonexistent/dir
expect_usage "missing resume file" --model vit-tiny-test --steps 3 --resume /nonexistent.safetensors
expect_usage "unknown option" --model vit-tiny-test --steps 3 --frobnicate
expect_usage "resume with another configuration" --model vit-tiny-test --batch 8 --steps 14 --seed 12 --resume "$tmp/full/checkpoint.safetensors"
# a preset left out of this build (-DSIMMIM_EXAMPLE_PRESETS, as scripts/test.sh builds) is a usage error naming the option
"$bin" --model vit-b16-224 --steps 1 --head mlp --out "$tmp/usage" > "$tmp/u.log" 2>&1  # exits 2 in any build (no MLP head there)
code=$?
if grep -q "SIMMIM_EXAMPLE_PRESETS" "$tmp/u.log"; then
    [ $code -eq 2 ] && grep -q "the preset 'vit-b16-224' is not compiled into this build" "$tmp/u.log" && [ ! -e "$tmp/usage/metrics.jsonl" ] &&
        ok "usage error: a preset left out of this build" || bad "left-out preset gave code $code: $(head -3 "$tmp/u.log")"
else
    echo "note: vit-b16-224 is compiled into this build (SIMMIM_EXAMPLE_PRESETS unset), so the left-out preset check does not apply"
fi

# 4. a non-finite gradient stops the run naming the step and the tensor, leaving the last checkpoint untouched;
#    with --skip-nonfinite the step is skipped and counted
"$bin" "${common[@]}" --out "$tmp/nan" --inject-nan-at 6 > "$tmp/nan.log" 2>&1
code=$?
[ $code -eq 1 ] && grep -q "non-finite gradient of encoder.blocks.0.attn.proj.weight (element 7) at step 6" "$tmp/nan.log" &&
    ok "NaN gradient stops the run naming step and tensor" || bad "NaN gradient: code $code, $(tail -1 "$tmp/nan.log")"
grep -q '"step":5' "$tmp/nan/metrics.jsonl" && ! grep -q '"step":6' "$tmp/nan/metrics.jsonl" && ok "no step after the NaN was logged" || bad "metrics after NaN"
head -c 4096 "$tmp/nan/checkpoint.safetensors" | grep -aq '"step":"4"' && ok "the checkpoint on disk is still the one of step 4" || bad "checkpoint changed after NaN"
"$bin" "${common[@]}" --out "$tmp/nan" --resume "$tmp/nan/checkpoint.safetensors" --stop-after 1 > /dev/null 2>&1 &&
    ok "the last good checkpoint (step 4) still resumes" || bad "checkpoint after NaN does not resume"
"$bin" "${common[@]}" --out "$tmp/nanskip" --inject-nan-at 6 --skip-nonfinite > "$tmp/nanskip.log" 2>&1 &&
    grep -q "1 skipped as non-finite" "$tmp/nanskip.log" && ok "--skip-nonfinite skips and counts" || bad "--skip-nonfinite: $(tail -2 "$tmp/nanskip.log")"

# 6. --precision: an unknown value and bf16 on a CPU without AVX512-BF16 (simulated by SIMMIM_NO_BF16) are usage
#    errors naming the reason; on a CPU with it, bf16 trains, says so, differs from fp32 by bf16 rounding only,
#    and resumes an fp32 checkpoint (checkpoints are FP32 in both precisions)
expect_usage "--precision fp16" --model vit-tiny-test --steps 3 --precision fp16
SIMMIM_NO_BF16=1 "$bin" --model vit-tiny-test --steps 3 --precision bf16 --out "$tmp/usage" > "$tmp/u.log" 2>&1
code=$?
[ $code -eq 2 ] && grep -q "^simmim_pretrain: error: --precision bf16: bf16 matrix products are disabled by SIMMIM_NO_BF16" "$tmp/u.log" &&
    [ "$(wc -l < "$tmp/u.log")" -eq 1 ] && ok "usage error: --precision bf16 without AVX512-BF16 names the reason" ||
    bad "--precision bf16 refused wrongly: code $code: $(head -3 "$tmp/u.log")"
if grep -qw avx512_bf16 /proc/cpuinfo; then
    "$bin" "${common[@]}" --precision bf16 --out "$tmp/bf16" > "$tmp/bf16.log" 2>&1 || bad "bf16 run failed: $(tail -2 "$tmp/bf16.log")"
    grep -q "bf16 matmul (avx512-bf16, FP32 accumulation)" "$tmp/bf16.log" && ok "the start line names the bf16 path" || bad "no bf16 path in: $(head -1 "$tmp/bf16.log")"
    grep -q "fp32 matmul" "$tmp/full.log" && ok "the start line names the fp32 path" || bad "no fp32 path in: $(head -1 "$tmp/full.log")"
    # the loss of every logged step within 2% of fp32's, and not all equal (bf16 did run)
    losses() { grep -o '"loss":[^,}]*' "$1" | cut -d: -f2; }
    if paste <(losses "$tmp/full/metrics.jsonl") <(losses "$tmp/bf16/metrics.jsonl") |
        awk '{ n++; d = $1 - $2; if (d < 0) d = -d; if (d > 0.02 * ($1 < 0 ? -$1 : $1)) bad++; if ($1 != $2) diff++ }
             END { print "fp32 / bf16 final loss:", $1, $2; exit !(n == 14 && bad == 0 && diff > 0) }'
    then ok "bf16 losses within 2% of fp32 at every step, and not identical"; else bad "bf16 losses not within 2% of fp32"; fi
    "$bin" "${common[@]/14/400}" --precision bf16 --out "$tmp/sig" --resume "$tmp/sig/checkpoint.safetensors" --stop-after 2 > "$tmp/bf16r.log" 2>&1 &&
        grep -q "resuming at step" "$tmp/bf16r.log" && ok "bf16 resumes a checkpoint written in fp32" ||
        bad "bf16 resume of an fp32 checkpoint failed: $(tail -2 "$tmp/bf16r.log")"
else
    echo "note: this CPU has no AVX512-BF16: the bf16 training checks do not apply (the refusal above did run)"
fi

# 5. outputs, and the checkpoint as weights for simmim_reconstruct
for f in checkpoint.safetensors metrics.jsonl reconstruction.png loss_curve.svg; do
    [ -s "$tmp/full/$f" ] && ok "output $f" || bad "missing output $f"
done
if [ -x "$rec" ]; then
    # a batch file with one all-zero image is enough to prove the checkpoint loads as weights
    printf '%s' "checkpoint loads in simmim_reconstruct" > /dev/null
    "$rec" --model vit-tiny-test --weights "$tmp/full/checkpoint.safetensors" --input "$2/tests/fixtures/vit_tiny_input.safetensors" \
        --output "$tmp/rec.safetensors" > "$tmp/rec.log" 2>&1 && ok "checkpoint loads as weights in simmim_reconstruct" ||
        bad "simmim_reconstruct rejected the checkpoint: $(cat "$tmp/rec.log")"
fi
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
