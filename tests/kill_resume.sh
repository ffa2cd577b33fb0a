#!/usr/bin/env bash
# Crash safety of simmim_pretrain under SIGKILL (CTest script test; usage: kill_resume.sh <build dir> <source dir>).
#
# A reference run (vit-tiny-test on the Debian Fashion-MNIST, 40 steps of batch 8, --save-every 2)
# goes uninterrupted. The same run is then killed with SIGKILL over and over (20 kills) and continued
# each time with --resume from whatever checkpoint is on disk (from scratch if none; a run that
# completes before its kill is started again from scratch).
# The moment of each kill comes from a seeded RNG and one of three strategies:
#   delay  after a random delay since the start of the process;
#   write  as soon as a checkpoint temporary (checkpoint.safetensors.tmp.*) exists: during the write/fsync;
#   rename as soon as the checkpoint's mtime changes: right after the atomic rename.
# After every kill the newest checkpoint must load as weights in simmim_reconstruct, hold an even step
# (checkpoints come every 2 steps) no smaller than the previous one; at the end the killed-and-resumed
# run must have the reference's metrics.jsonl (without the wall-clock images_per_s) and a checkpoint
# byte-identical to the reference's.
# Environment: SIMMIM_KILL_SEED (default 20261127), SIMMIM_KILL_ROUNDS (kills to survive, default 20).
set -u
build=${1:?build dir}
src=${2:?source dir}
bin="$build/examples/simmim_pretrain"
rec="$build/examples/simmim_reconstruct"
input="$src/tests/fixtures/vit_tiny_input.safetensors"
tmp=$(mktemp -d)
trap '[ -n "$pid" ] && kill -KILL $pid 2>/dev/null; rm -rf "$tmp"' EXIT
pid=
passed=0 failed=0
ok() { echo "ok: $1"; passed=$((passed + 1)); }
bad() { echo "FAIL: $1"; failed=$((failed + 1)); }
strip() { sed 's/"images_per_s":[^,]*,//' "$1"; }  # wall-clock speed is the only field allowed to differ
now_ms() { date +%s%3N; }

RANDOM=${SIMMIM_KILL_SEED:-20261127}  # seeds bash's RNG: the same strategies and delays every run
rounds=${SIMMIM_KILL_ROUNDS:-20}
steps=40
common=(--model vit-tiny-test --batch 8 --steps "$steps" --log-every 1 --threads 2 --save-every 2 --seed 5)
ckpt="$tmp/run/checkpoint.safetensors"

t0=$(now_ms)
"$bin" "${common[@]}" --out "$tmp/ref" > "$tmp/ref.log" 2>&1 || { bad "reference run failed: $(tail -2 "$tmp/ref.log")"; exit 1; }
ref_ms=$(( $(now_ms) - t0 ))
echo "reference run: $steps steps in ${ref_ms} ms"

ckpt_step() {  # the "step" metadata of checkpoint $1 (the header is at the start of the file)
  head -c 65536 "$1" | grep -ao '"step":"[0-9]*"' | head -n 1 | tr -dc '0-9'
}
mtime() { stat -c %y "$1" 2>/dev/null; }

# A fork-free 1 ms sleep for the polling loops: read with a timeout on a pipe nobody writes to.
exec {never}<> <(:)
nap() { read -r -t 0.001 -u "$never" _ || true; }

kills=0 during_write=0 after_rename=0 after_delay=0 left_temporary=0 no_progress=0 finished_early=0 last_step=0 round=0
while [ $kills -lt "$rounds" ] && [ $round -lt $((3 * rounds)) ]; do
  round=$((round + 1))
  args=("${common[@]}" --out "$tmp/run")
  [ -e "$ckpt" ] && args+=(--resume "$ckpt")
  strategy=$(( RANDOM % 3 ))
  before=$(mtime "$ckpt")
  "$bin" "${args[@]}" > "$tmp/round$round.log" 2>&1 &
  pid=$!
  case $strategy in
    0)  # random delay: up to 60% of the reference run's time
      delay_ms=$(( RANDOM % (ref_ms * 6 / 10 + 1) ))
      sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
      after_delay=$((after_delay + 1)) ;;
    1)  # while a checkpoint is being written (its temporary exists)
      until [ -e "$ckpt.tmp.$pid" ] || ! kill -0 $pid 2>/dev/null; do nap; done
      during_write=$((during_write + 1)) ;;
    2)  # right after a new checkpoint was renamed into place
      until [ "$(mtime "$ckpt")" != "$before" ] || ! kill -0 $pid 2>/dev/null; do nap; done
      after_rename=$((after_rename + 1)) ;;
  esac
  if kill -KILL $pid 2>/dev/null; then
    wait $pid 2>/dev/null
    kills=$((kills + 1))
  else
    wait $pid
    code=$?
    if [ $code -ne 0 ]; then bad "round $round: simmim_pretrain exited with $code before the kill: $(tail -2 "$tmp/round$round.log")"; break; fi
    finished_early=$((finished_early + 1))
    rm -rf "$tmp/run"  # the run is complete: start another one
    last_step=0
    continue
  fi
  [ -e "$ckpt.tmp.$pid" ] && left_temporary=$((left_temporary + 1))  # the kill landed inside the write
  pid=
  if [ ! -e "$ckpt" ]; then
    no_progress=$((no_progress + 1))
    continue
  fi
  step=$(ckpt_step "$ckpt")
  if [ -z "$step" ] || [ $((step % 2)) -ne 0 ] || [ "$step" -lt $last_step ]; then
    bad "round $round: checkpoint step '$step' after step $last_step (expected even and not smaller)"
  fi
  [ "$step" = "$last_step" ] && no_progress=$((no_progress + 1))
  last_step=${step:-0}
  if ! "$rec" --model vit-tiny-test --weights "$ckpt" --input "$input" --output "$tmp/rec.safetensors" > "$tmp/rec.log" 2>&1; then
    bad "round $round (strategy $strategy): the checkpoint on disk does not load: $(cat "$tmp/rec.log")"
  fi
done
echo "$kills SIGKILLs in $round rounds: ${after_delay} after a random delay, ${during_write} as soon as a checkpoint temporary existed" \
     "(${left_temporary} of them left it behind: killed inside the write), ${after_rename} right after a rename;" \
     "$no_progress left no newer checkpoint; $finished_early runs completed before their kill"
[ $kills -ge "$rounds" ] && ok "$kills SIGKILLs survived: each left a checkpoint that loads, at a non-decreasing even step" || bad "only $kills kills in $round rounds (need $rounds)"
[ $failed -eq 0 ] || { echo "$passed passed, $failed failed"; exit 1; }

# Finish the killed run and compare with the reference.
args=("${common[@]}" --out "$tmp/run")
[ -e "$ckpt" ] && args+=(--resume "$ckpt")
"$bin" "${args[@]}" > "$tmp/final.log" 2>&1 || bad "final resume failed: $(tail -2 "$tmp/final.log")"
if [ "$(strip "$tmp/run/metrics.jsonl" | wc -l)" -eq $steps ] && diff <(strip "$tmp/ref/metrics.jsonl") <(strip "$tmp/run/metrics.jsonl") > /dev/null; then
  ok "after $kills kills and resumes, all $steps logged steps equal the uninterrupted run bit for bit"
else
  bad "killed-and-resumed metrics differ from the uninterrupted run"
  diff <(strip "$tmp/ref/metrics.jsonl") <(strip "$tmp/run/metrics.jsonl") | head -6
fi
cmp -s "$tmp/ref/checkpoint.safetensors" "$ckpt" && ok "final checkpoint byte-identical to the uninterrupted run's" ||
  bad "final checkpoint differs from the uninterrupted run's"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
