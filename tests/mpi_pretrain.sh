#!/usr/bin/env bash
# Data-parallel simmim_pretrain under mpirun (CTest script test; usage: mpi_pretrain.sh <build dir> <source dir>).
# docs/distributed.md describes what is checked here; the oracle is the single-process run, whose model
# the other tests check against PyTorch and finite differences.
#
#   reducer     the bucketed gradient sum against its closed form on 2 and 3 ranks (tests/mpi/reducer_check.cpp)
#   equal       2 ranks x 1 thread against 1 process x 1 thread, same global batch and seed, 20 steps of
#               vit-tiny-test: losses to 1e-5 relative, final parameters to 1e-4 (tests/tools/compare_runs.cpp);
#               the same for 3 ranks (slices of 5, 5 and 6), for the official ViT with drop path and for Swin
#   repeat      two 2-rank runs: byte-identical checkpoints and metrics
#   resume      2 ranks stopped after step 10, resumed by 1 process: the losses and parameters of an
#               uninterrupted 2-rank run, to 1e-5 and 1e-4
#   sigterm     SIGTERM to one rank, and to mpirun: every rank stops after the same step, one checkpoint of that step
#   killed      SIGKILL to one rank: mpirun ends non-zero within 60 s naming the rank, no hang
#   usage       a bad option under 2 ranks, and an option only rank 1 cannot parse: one error line, exit 2
#   check-sync  a parameter changed on one rank: --check-sync stops every rank naming the tensor, exit 1
# Skipped (exit 77) when the build has no MPI, mpirun is missing, or Fashion-MNIST is not installed.
set -u
build=${1:?build dir}
src=${2:?source dir}
bin="$build/examples/simmim_pretrain"
compare="$build/tests/simmim_compare_runs"
reducer="$build/tests/simmim_mpi_reducer_check"
[ -x "$reducer" ] || { echo "skipped: this build has no MPI (scripts/setup.sh installs libopenmpi-dev and openmpi-bin)"; exit 77; }
command -v mpirun >/dev/null || { echo "skipped: mpirun not found (Debian package openmpi-bin)"; exit 77; }
[ -x "$bin" ] || { echo "skipped: simmim_pretrain not built"; exit 77; }
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || { echo "skipped: Fashion-MNIST not installed (dataset-fashion-mnist)"; exit 77; }

mpi=(mpirun --oversubscribe)
# Under scripts/sanitize.sh the ranks run without LeakSanitizer: Open MPI keeps allocations of MPI_Init past
# MPI_Finalize in components it has unloaded by then, so the reports cannot even be attributed (and suppressed)
# by library. AddressSanitizer's other checks and UBSan stay on; the single-process runs here, and every other
# test, keep leak detection for simmim's own code.
if [ -n "${ASAN_OPTIONS:-}" ]; then mpi=(env "ASAN_OPTIONS=$ASAN_OPTIONS:detect_leaks=0" "${mpi[@]}"); fi
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
tmp=$(mktemp -d)
job=
trap '[ -n "$job" ] && kill -KILL $job 2>/dev/null; pkill -KILL -f "$tmp/" 2>/dev/null; rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { echo "ok: $1"; passed=$((passed + 1)); }
bad() { echo "FAIL: $1"; failed=$((failed + 1)); }
strip() { sed 's/"images_per_s":[^,}]*,\{0,1\}//' "$1"; }  # wall-clock speed is the only field allowed to differ
ckpt_step() { head -c 65536 "$1" | grep -ao '"step":"[0-9]*"' | head -n 1 | tr -dc '0-9'; }

# pretrain <name> <ranks> [options...]: a run into $tmp/<name>, its output in $tmp/<name>.log (0 ranks: no mpirun)
pretrain() {
  local name=$1 ranks=$2
  shift 2
  if [ "$ranks" -eq 0 ]; then
    "$bin" "$@" --out "$tmp/$name" > "$tmp/$name.log" 2>&1
  else
    "${mpi[@]}" -np "$ranks" "$bin" "$@" --out "$tmp/$name" > "$tmp/$name.log" 2>&1
  fi
}
# same <what> <a> <b> [compare_runs options]: metrics and final checkpoints of runs a and b agree
same() {
  local what=$1 a=$2 b=$3
  shift 3
  local out
  if out=$("$compare" --metrics "$tmp/$a/metrics.jsonl" "$tmp/$b/metrics.jsonl" --checkpoint "$tmp/$a/checkpoint.safetensors" \
                      "$tmp/$b/checkpoint.safetensors" "$@" 2>&1); then
    ok "$what: $(tr '\n' ';' <<<"$out")"
  else
    bad "$what: $(tr '\n' ';' <<<"$out")"
  fi
}

# ---- the reducer against its closed form
for n in 2 3; do
  if out=$("${mpi[@]}" -np $n "$reducer" 2>&1); then ok "reducer on $n ranks: $(grep reducer_check <<<"$out")"
  else bad "reducer on $n ranks: $(grep -E 'FAIL|reducer_check' <<<"$out" | head -5 | tr '\n' ';')"; fi
done

# ---- N ranks compute what one process computes
common=(--model vit-tiny-test --batch 16 --steps 20 --log-every 1 --threads 1 --seed 3 --vis-count 2)
pretrain one 0 "${common[@]}" || bad "1-process run failed: $(tail -2 "$tmp/one.log")"
pretrain two 2 "${common[@]}" || bad "2-rank run failed: $(tail -3 "$tmp/two.log")"
grep -q "2 ranks x 1 threads" "$tmp/two.log" && ok "the 2-rank run says so: $(grep -m1 -o 'img/s (2 ranks x 1 threads)' "$tmp/two.log")" \
  || bad "the 2-rank run's progress line does not name the ranks"
same "2 ranks x 1 thread = 1 process x 1 thread (losses 1e-5, parameters 1e-4)" one two --loss-rtol 1e-5 --param-tol 1e-4
pretrain three 3 "${common[@]}" || bad "3-rank run failed: $(tail -3 "$tmp/three.log")"
same "3 ranks (slices 5, 5, 6) = 1 process" one three --loss-rtol 1e-5 --param-tol 1e-4
pretrain one_official 0 "${common[@]}" --vit official || bad "1-process official ViT run failed: $(tail -2 "$tmp/one_official.log")"
pretrain two_official 2 "${common[@]}" --vit official || bad "2-rank official ViT run failed: $(tail -3 "$tmp/two_official.log")"
same "official ViT with drop path 0.1: 2 ranks = 1 process" one_official two_official --loss-rtol 1e-5 --param-tol 1e-4
swin=(--model swin-tiny-test --batch 8 --steps 10 --log-every 1 --threads 1 --seed 3 --vis-count 2)
pretrain one_swin 0 "${swin[@]}" || bad "1-process Swin run failed: $(tail -2 "$tmp/one_swin.log")"
pretrain two_swin 2 "${swin[@]}" || bad "2-rank Swin run failed: $(tail -3 "$tmp/two_swin.log")"
same "swin-tiny-test: 2 ranks = 1 process" one_swin two_swin --loss-rtol 1e-5 --param-tol 1e-4

# ---- a rerun with the same number of ranks is bit-identical
pretrain two_again 2 "${common[@]}" || bad "second 2-rank run failed: $(tail -3 "$tmp/two_again.log")"
if cmp -s "$tmp/two/checkpoint.safetensors" "$tmp/two_again/checkpoint.safetensors" &&
   diff <(strip "$tmp/two/metrics.jsonl") <(strip "$tmp/two_again/metrics.jsonl") >/dev/null; then
  ok "two 2-rank runs: byte-identical checkpoints and metrics"
else
  bad "two 2-rank runs differ"
fi

# ---- stop with 2 ranks, resume with 1
pretrain moved 2 "${common[@]}" --stop-after 10 || bad "2-rank run to step 10 failed: $(tail -3 "$tmp/moved.log")"
step=$(ckpt_step "$tmp/moved/checkpoint.safetensors")
[ "$step" = 10 ] && ok "2 ranks stopped after step 10: checkpoint of step $step" || bad "checkpoint after --stop-after 10 holds step '$step'"
pretrain moved 0 "${common[@]}" --resume "$tmp/moved/checkpoint.safetensors" || bad "1-process resume failed: $(tail -2 "$tmp/moved.log")"
same "stopped at 10 with 2 ranks, resumed with 1 = uninterrupted 2 ranks" two moved --from 10 --loss-rtol 1e-5 --param-tol 1e-4

# ---- SIGTERM to one rank: every rank stops after the same step, with one checkpoint
rank_pid() {  # the pid of rank $1 of the job writing into $2, from the ranks' environments
  local p
  for p in $(pgrep -f "$bin.*$2" 2>/dev/null); do
    tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$1" && { echo "$p"; return 0; }
  done
  return 1
}
# start_long <name>: a 2-rank run of 100000 steps in the background; returns once step 3 is logged
start_long() {
  "${mpi[@]}" -np 2 "$bin" --model vit-tiny-test --batch 16 --steps 100000 --log-every 1 --save-every 0 --threads 1 --seed 3 \
     --vis-count 2 --out "$tmp/$1" > "$tmp/$1.log" 2>&1 &
  job=$!
  for _ in $(seq 600); do
    [ -s "$tmp/$1/metrics.jsonl" ] && [ "$(wc -l < "$tmp/$1/metrics.jsonl")" -ge 3 ] && return 0
    sleep 0.1
  done
  return 1
}
# wait_job <seconds>: waits for the background job; sets rc to its exit status, or to "timeout" after killing it
wait_job() {
  local waited=0
  while kill -0 "$job" 2>/dev/null && [ $waited -lt $(( $1 * 10 )) ]; do sleep 0.1; waited=$((waited + 1)); done
  if kill -0 "$job" 2>/dev/null; then kill -KILL "$job"; wait "$job" 2>/dev/null; job=; rc=timeout; return; fi
  wait "$job"; rc=$?; job=
}
# stopped_by_sigterm <name> <target>: start a 2-rank run, send SIGTERM to <target> ("rank1" or "mpirun"); every
# rank must stop after the same step, with a checkpoint of that step (rank 1: the line rank 0 prints names the step;
# mpirun: it stops forwarding output when it forwards the signal, so the checkpoint's step must follow the last
# step rank 0 logged, one line a step)
stopped_by_sigterm() {
  local name=$1 target=$2 pid=
  if ! start_long "$name" || { [ "$target" = rank1 ] && ! pid=$(rank_pid 1 "$tmp/$name"); }; then
    bad "SIGTERM to $target: the 2-rank run did not start: $(tail -3 "$tmp/$name.log" | tr '\n' ';')"
    [ -n "$job" ] && kill -KILL "$job" 2>/dev/null; job=
    return
  fi
  kill -TERM "${pid:-$job}"
  wait_job 60
  local stopped saved logged
  stopped=$(grep -o 'interrupted by signal 15 after step [0-9]* (on every rank)' "$tmp/$name.log" | grep -o 'after step [0-9]*' | tr -dc '0-9')
  saved=$(ckpt_step "$tmp/$name/checkpoint.safetensors" 2>/dev/null)
  logged=$(tail -n 1 "$tmp/$name/metrics.jsonl" | grep -o '"step":[0-9]*' | tr -dc '0-9')
  if [ "$rc" != timeout ] && [ "$rc" != 0 ] && [ -n "$saved" ] && [ "$saved" = $((logged + 1)) ] &&
     { [ "$target" = mpirun ] || [ "$stopped" = "$saved" ]; }; then
    ok "SIGTERM to $target: every rank stopped after step $saved (checkpoint of step $saved, last step logged $logged${stopped:+, rank 0 says $stopped}), exit $rc"
  else
    bad "SIGTERM to $target: exit '$rc', rank 0 says '$stopped', checkpoint step '$saved', last logged '$logged': $(tail -3 "$tmp/$name.log" | tr '\n' ';')"
  fi
}
stopped_by_sigterm term rank1
stopped_by_sigterm term_mpirun mpirun  # Ctrl-C, scancel: mpirun forwards it to every rank

# ---- a rank that dies ends the job with a message naming it, never a hang
if start_long killed && pid=$(rank_pid 1 "$tmp/killed"); then
  t0=$(date +%s%N)
  kill -KILL "$pid"
  wait_job 60
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  if [ "$rc" != timeout ] && [ "$rc" != 0 ] && grep -Eq 'rank 1 .*(signal 9|Killed)' "$tmp/killed.log"; then
    ok "SIGKILL to rank 1: mpirun ended with exit $rc after $ms ms: $(grep -Eo 'process rank 1 .*' "$tmp/killed.log" | head -1)"
  else
    bad "SIGKILL to rank 1: exit '$rc' after $ms ms: $(tail -5 "$tmp/killed.log" | tr '\n' ';')"
  fi
else
  bad "SIGKILL test: the 2-rank run did not start: $(tail -3 "$tmp/killed.log" | tr '\n' ';')"
  [ -n "$job" ] && kill -KILL "$job" 2>/dev/null; job=
fi
pkill -KILL -f "$tmp/killed" 2>/dev/null

# ---- a usage error is reported once
"${mpi[@]}" -np 2 "$bin" --model vit-tiny-test --steps 5 --batch 0 --out "$tmp/usage" > "$tmp/usage.out" 2> "$tmp/usage.err"
rc=$?
lines=$(grep -c 'simmim_pretrain: error' "$tmp/usage.err")
[ "$rc" = 2 ] && [ "$lines" = 1 ] && ok "usage error under 2 ranks: exit 2, one line: $(grep 'simmim_pretrain: error' "$tmp/usage.err")" \
  || bad "usage error under 2 ranks: exit $rc, $lines error lines: $(head -3 "$tmp/usage.err" | tr '\n' ';')"

# ---- a command line that fails on one rank only (a path missing on its machine): that rank's line, once, exit 2
mkdir -p "$tmp/data_of_rank0"
"${mpi[@]}" -np 2 bash -c 'exec "$0" --model vit-tiny-test --steps 2 --data "$1$OMPI_COMM_WORLD_RANK" --out "$2"' \
    "$bin" "$tmp/data_of_rank" "$tmp/partial" > "$tmp/partial.out" 2> "$tmp/partial.err"
rc=$?
lines=$(grep -c 'simmim_pretrain: error' "$tmp/partial.err")
[ "$rc" = 2 ] && [ "$lines" = 1 ] && grep -q 'error: rank 1 of 2: --data.*data_of_rank1' "$tmp/partial.err" \
  && ok "a command line only rank 1 cannot parse: exit 2, one line: $(grep 'simmim_pretrain: error' "$tmp/partial.err" | cut -c1-160)" \
  || bad "a command line only rank 1 cannot parse: exit $rc, $lines error lines: $(head -3 "$tmp/partial.err" | tr '\n' ';')"

# ---- --check-sync names the tensor that differs
pretrain desync 2 "${common[@]}" --check-sync 5 --inject-desync-at 6
rc=$?
msg=$(grep -o -- '--check-sync: after step [0-9]* the ranks hold different values of [^ ]*' "$tmp/desync.log")
lines=$(grep -c 'simmim_pretrain: error' "$tmp/desync.log")
[ "$rc" = 1 ] && [ -n "$msg" ] && grep -q 'after step 10 ' <<<"$msg" && [ "$lines" = 1 ] && ok "--check-sync: exit 1, one line: $msg" \
  || bad "--check-sync: exit $rc, $lines error lines, '$msg': $(tail -3 "$tmp/desync.log" | tr '\n' ';')"

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
