#!/usr/bin/env bash
# End-to-end resource checks of the example programs (docs/reliability.md):
#  1. a full disk during a checkpoint write (simulated with `ulimit -f` and SIGXFSZ ignored, so writes
#     past the limit fail with EFBIG as they would with ENOSPC): one-line error, exit 1, the previous
#     checkpoint byte-identical and still resumable, no temporary and no truncated checkpoint left;
#  2. stale checkpoint temporaries of dead processes are removed at start, a live process's are kept;
#  3. an output directory that cannot be created or written is a usage error (exit 2) naming it,
#     before any work;
#  4. CLI11 parse errors of every example program are one line
#     "<program>: error: <message> (run with --help)" with exit code 2.
# Usage: resource_limits.sh <build dir> <source dir>
set -u
build=${1:?build dir}
bin="$build/examples/simmim_pretrain"
tmp=$(mktemp -d)
live_pid=
trap 'rm -rf "$tmp"; [ -n "$live_pid" ] && kill "$live_pid" 2>/dev/null' EXIT
passed=0 failed=0
ok() { echo "ok: $1"; passed=$((passed + 1)); }
bad() { echo "FAIL: $1"; failed=$((failed + 1)); }

# A 16-image IDX training set (28 x 28, all pixels 7): runs cost milliseconds plus the checkpoints' fsyncs.
mkdir -p "$tmp/data"
{ printf '\x00\x00\x08\x03\x00\x00\x00\x10\x00\x00\x00\x1c\x00\x00\x00\x1c'; head -c 12544 /dev/zero | tr '\0' '\7'; } > "$tmp/data/train-images-idx3-ubyte"
{ printf '\x00\x00\x08\x01\x00\x00\x00\x10'; printf '\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x00\x01\x02\x03\x04\x05'; } > "$tmp/data/train-labels-idx1-ubyte"
common=(--model vit-tiny-test --batch 8 --steps 8 --save-every 2 --threads 1 --data "$tmp/data")

# 1. full disk while writing a checkpoint
out="$tmp/run"
"$bin" "${common[@]}" --out "$out" --stop-after 4 > "$tmp/r1.log" 2>&1 || bad "first run failed: $(tail -2 "$tmp/r1.log")"
ckpt="$out/checkpoint.safetensors"
cp "$ckpt" "$tmp/good.safetensors"
size=$(stat -c %s "$ckpt")
limit_kb=$((size / 2 / 1024))  # the next checkpoint write stops halfway
(
    trap '' XFSZ                  # ignored signals stay ignored across exec: writes fail with EFBIG
    ulimit -f "$limit_kb"
    exec "$bin" "${common[@]}" --out "$out" --resume "$ckpt"
) > "$tmp/r2.out" 2> "$tmp/r2.err"  # plain files (a few KB, far below the limit), complete when the subshell ends
code=$?
[ $code -eq 1 ] && ok "a failed checkpoint write exits 1" || bad "failed checkpoint write: exit $code"
errors=$(grep -c . "$tmp/r2.err")
if [ "$errors" -eq 1 ] && grep -q "^simmim_pretrain: error: cannot write safetensors file '$ckpt': write to '$ckpt.tmp.[0-9]*' failed after [0-9]* of $size bytes: File too large ('checkpoint.safetensors' is left as it was)$" "$tmp/r2.err"; then
    ok "one-line error naming the checkpoint, the failed write and the reason"
else
    bad "error output: $(cat "$tmp/r2.err")"
fi
cmp -s "$ckpt" "$tmp/good.safetensors" && ok "the previous checkpoint is byte-identical" || bad "the checkpoint changed"
ls "$out" | grep -q '\.tmp\.' && bad "a temporary was left: $(ls "$out")" || ok "no temporary left behind"
"$bin" "${common[@]}" --out "$out" --resume "$ckpt" > "$tmp/r3.log" 2>&1 && grep -q "resuming at step 4" "$tmp/r3.log" &&
    ok "the previous checkpoint resumes and the run completes" || bad "resume after the failed write: $(tail -2 "$tmp/r3.log")"

# 2. stale temporaries: a dead writer's (pid above any pid_max) is removed, a live process's and a
#    name that is not a pid are kept
sleep 60 &
live_pid=$!
for suffix in 99999999 "$live_pid" notapid; do printf 'partial' > "$ckpt.tmp.$suffix"; done
"$bin" "${common[@]}" --out "$out" --resume "$ckpt" > "$tmp/r4.log" 2>&1 || bad "run with stale temporaries failed: $(tail -2 "$tmp/r4.log")"
if [ ! -e "$ckpt.tmp.99999999" ] && grep -q "removed $ckpt.tmp.99999999" "$tmp/r4.log"; then
    ok "the temporary of a dead process is removed at start, and reported"
else
    bad "stale temporary of a dead process: $(ls "$out"; head -3 "$tmp/r4.log")"
fi
[ -e "$ckpt.tmp.$live_pid" ] && [ -e "$ckpt.tmp.notapid" ] && ok "a live process's temporary and a non-pid name are kept" ||
    bad "kept files: $(ls "$out")"
kill "$live_pid" 2>/dev/null
live_pid=

# 3. unusable output directories: exit 2 before any work, one line naming the directory
printf 'x' > "$tmp/a-file"
"$bin" "${common[@]}" --out "$tmp/a-file/sub" > "$tmp/u1.log" 2>&1
code=$?
[ $code -eq 2 ] && [ "$(grep -c . "$tmp/u1.log")" -eq 1 ] && grep -q "error: --out $tmp/a-file/sub: cannot create directory" "$tmp/u1.log" &&
    ok "an --out that cannot be created is a usage error naming it" || bad "--out under a file: exit $code, $(cat "$tmp/u1.log")"
(
    trap '' XFSZ
    ulimit -f 0  # no byte can be written to a file: the probe write fails (the output goes through a pipe)
    exec "$bin" "${common[@]}" --out "$tmp/nowrite"
) 2>&1 | cat > "$tmp/u2.log"
code=${PIPESTATUS[0]}
[ $code -eq 2 ] && grep -q "error: --out $tmp/nowrite: directory is not writable (cannot write .write-probe.[0-9]*: File too large)" "$tmp/u2.log" &&
    [ -z "$(ls -A "$tmp/nowrite")" ] && ok "an --out that cannot be written is a usage error naming it, nothing left in it" ||
    bad "--out not writable: exit $code, $(cat "$tmp/u2.log"; ls -A "$tmp/nowrite")"

# 4. CLI11 parse errors: one line, exit 2, for every example program that is built
for program in simmim_pretrain simmim_reconstruct simmim_finetune simmim_avgdist; do
    [ -x "$build/examples/$program" ] || continue
    "$build/examples/$program" --no-such-option 3 > "$tmp/p.out" 2> "$tmp/p.err"
    code=$?
    if [ $code -eq 2 ] && [ ! -s "$tmp/p.out" ] && [ "$(wc -l < "$tmp/p.err")" -eq 1 ] &&
        grep -q "^$program: error: .*--no-such-option.* (run with --help)$" "$tmp/p.err"; then
        ok "$program: a parse error is one line and exit 2"
    else
        bad "$program parse error: exit $code, stdout '$(cat "$tmp/p.out")', stderr '$(cat "$tmp/p.err")'"
    fi
    "$build/examples/$program" --help > "$tmp/h.out" 2>&1
    code=$?
    [ $code -eq 0 ] && grep -q -- "--help" "$tmp/h.out" && ok "$program --help exits 0" || bad "$program --help: exit $code"
done
"$bin" --steps > "$tmp/m.out" 2> "$tmp/m.err"
code=$?
[ $code -eq 2 ] && [ "$(wc -l < "$tmp/m.err")" -eq 1 ] && grep -q "^simmim_pretrain: error: .*--steps.* (run with --help)$" "$tmp/m.err" &&
    ok "a missing option value is one line and exit 2" || bad "missing value: exit $code, $(cat "$tmp/m.err")"

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
