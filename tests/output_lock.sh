#!/usr/bin/env bash
# One run per output directory (examples/output_lock.hpp, docs/reliability.md):
#  1. while a simmim_pretrain run holds --out (paused with SIGSTOP after its first logged step, so the
#     overlap is certain), a second simmim_pretrain with the same --out, the same with --resume, and a
#     simmim_finetune with that --out each exit 2 at once, naming the directory and the holder's pid,
#     and write nothing there; the first run then finishes with exit 0 and its checkpoint, metrics,
#     picture and loss curve equal those of the same run made alone (metrics without images_per_s);
#  2. a run killed with SIGKILL leaves the lock file behind but not the lock: the next run on that
#     directory (with --resume) is not refused and completes.
# Synthetic data (16 IDX images), vit-tiny-test, 1 thread: a few seconds.
# Usage: output_lock.sh <build dir> <source dir>
set -u
build=${1:?build dir}
bin="$build/examples/simmim_pretrain"
finetune="$build/examples/simmim_finetune"
[ -x "$bin" ] || { echo "skip: $bin is not built (SIMMIM_BUILD_EXAMPLES=OFF)"; exit 77; }
tmp=$(mktemp -d)
holder=
trap '[ -n "$holder" ] && kill -KILL "$holder" 2>/dev/null; rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { echo "ok: $1"; passed=$((passed + 1)); }
bad() { echo "FAIL: $1"; failed=$((failed + 1)); }
strip() { sed 's/"images_per_s":[^,]*,//' "$1"; }  # wall-clock speed is the only field allowed to differ
lines() { [ -f "$1" ] && wc -l < "$1" || echo 0; }

# A fork-free 1 ms sleep for the polling loops: read with a timeout on a pipe nobody writes to.
exec {never}<> <(:)
nap() { read -r -t 0.001 -u "$never" _ || true; }

# 16 images of 28 x 28 (the byte values 0..255 over and over) and their labels
mkdir -p "$tmp/data"
ramp=$(printf '\\%03o' $(seq 0 255))  # printf escapes of the bytes 0..255
{ printf '\x00\x00\x08\x03\x00\x00\x00\x10\x00\x00\x00\x1c\x00\x00\x00\x1c'; for _ in $(seq 49); do printf "$ramp"; done; } > "$tmp/data/train-images-idx3-ubyte"
{ printf '\x00\x00\x08\x01\x00\x00\x00\x10'; printf '\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x00\x01\x02\x03\x04\x05'; } > "$tmp/data/train-labels-idx1-ubyte"
# long enough (400 steps, about a second) that the run is certainly caught between its first step and its end
base=(--model vit-tiny-test --batch 8 --steps 400 --log-every 1 --threads 1 --data "$tmp/data")
common=("${base[@]}" --seed 3 --save-every 100)

# the same run alone: what the locked run's outputs must equal
"$bin" "${common[@]}" --out "$tmp/alone" > "$tmp/alone.log" 2>&1 || { bad "reference run failed: $(tail -2 "$tmp/alone.log")"; exit 1; }

# 1. a holder paused mid-run, three runs refused
out="$tmp/shared"
"$bin" "${common[@]}" --out "$out" > "$tmp/holder.log" 2>&1 &
holder=$!
for _ in $(seq 20000); do [ "$(lines "$out/metrics.jsonl")" -ge 1 ] && break; kill -0 "$holder" 2>/dev/null || break; nap; done
kill -STOP "$holder" 2>/dev/null
if ! kill -0 "$holder" 2>/dev/null || [ "$(lines "$out/metrics.jsonl")" -ge 400 ]; then
    bad "the first run ended before it could be paused: $(tail -2 "$tmp/holder.log")"
    echo "$passed passed, $failed failed"; exit 1
fi
before=$(cd "$out" && ls -A | sort | tr '\n' ' ')
expect_refused() {  # expect_refused "<what>" command...
    local what=$1; shift
    local start=$SECONDS
    timeout 60 "$@" > "$tmp/refused.log" 2>&1
    local code=$? elapsed=$((SECONDS - start))
    local message="in use by another run: process $holder ("
    if [ $code -eq 2 ] && grep -qF -- "--out $out is $message" "$tmp/refused.log" && [ "$(wc -l < "$tmp/refused.log")" -eq 1 ] && [ $elapsed -le 5 ]; then
        ok "$what: exit 2 at once, naming the directory and pid $holder: $(cat "$tmp/refused.log")"
    else
        bad "$what: exit $code after ${elapsed} s, expected 2 and one line naming $out and pid $holder: $(head -3 "$tmp/refused.log")"
    fi
}
expect_refused "a second simmim_pretrain on the same --out" "$bin" "${base[@]}" --seed 99 --save-every 100 --out "$out"
expect_refused "simmim_pretrain --resume on the same --out" "$bin" "${common[@]}" --out "$out" --resume "$tmp/alone/checkpoint.safetensors"
if [ -x "$finetune" ]; then
    expect_refused "simmim_finetune on the same --out" "$finetune" --model vit-tiny-test --epochs 1 --batch 8 --threads 1 --data "$tmp/data" --out "$out"
fi
after=$(cd "$out" && ls -A | sort | tr '\n' ' ')
[ "$before" = "$after" ] && ok "the refused runs left the directory as it was ($after)" || bad "the refused runs changed the directory: '$before' -> '$after'"

kill -CONT "$holder"
wait "$holder"
code=$?
holder=
[ $code -eq 0 ] && ok "the first run finished (exit 0)" || bad "the first run exited $code: $(tail -2 "$tmp/holder.log")"
if diff <(strip "$tmp/alone/metrics.jsonl") <(strip "$out/metrics.jsonl") > /dev/null; then
    ok "its metrics.jsonl equals the run made alone ($(lines "$out/metrics.jsonl") lines)"
else
    bad "its metrics.jsonl differs from the run made alone"; diff <(strip "$tmp/alone/metrics.jsonl") <(strip "$out/metrics.jsonl") | head -4
fi
for f in checkpoint.safetensors reconstruction.png loss_curve.svg; do
    cmp -s "$tmp/alone/$f" "$out/$f" && ok "its $f is byte-identical to the run made alone" || bad "its $f differs from the run made alone"
done

# 2. SIGKILL: the lock dies with its process
killed="$tmp/killed"
"$bin" "${base[@]}" --seed 3 --save-every 1 --out "$killed" > "$tmp/killed.log" 2>&1 &
holder=$!
for _ in $(seq 20000); do [ "$(lines "$killed/metrics.jsonl")" -ge 3 ] && break; kill -0 "$holder" 2>/dev/null || break; nap; done
kill -KILL "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
code=$?
[ $code -eq 137 ] && ok "run killed with SIGKILL mid-run" || bad "the run to kill ended with $code before it was killed"
killed_pid=$holder
holder=
[ -e "$killed/.simmim.lock" ] && ok "the killed run left its lock file ($(cat "$killed/.simmim.lock"))" || bad "no lock file after the kill"
resume=()
[ -e "$killed/checkpoint.safetensors" ] && resume=(--resume "$killed/checkpoint.safetensors")
"$bin" "${common[@]}" --out "$killed" "${resume[@]}" > "$tmp/after_kill.log" 2>&1
code=$?
if [ $code -eq 0 ] && ! grep -q "in use" "$tmp/after_kill.log"; then
    ok "the next run on that directory (${resume[*]:-from scratch}) is not blocked by the dead pid $killed_pid and completes"
else
    bad "the next run after the kill exited $code: $(tail -2 "$tmp/after_kill.log")"
fi
grep -q "^pid [0-9]* simmim_pretrain$" "$killed/.simmim.lock" && ! grep -q "^pid $killed_pid " "$killed/.simmim.lock" &&
    ok "the lock file names its last holder" || bad "lock file holds '$(cat "$killed/.simmim.lock")'"

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
