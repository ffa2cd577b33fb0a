#!/usr/bin/env bash
# End-to-end checks of simmim_embed on checkpoints of simmim_pretrain (vit-tiny-test, 2 steps, both ViT forms)
# and the Debian Fashion-MNIST test split:
#  1. the features file holds `features` F32 [50, 32] and `labels` I64 [50] (read from its header with od),
#     the labels are the first 50 of t10k-labels-idx1-ubyte, the encoder is recognised in either form;
#  2. --pool none gives [50, 16, 32] whose mean over the 16 tokens (awk) is the pooled features;
#  3. usage errors exit 2 with one line; a missing weights file and a file holding no encoder are one line
#     naming the file.
# Skips (exit 77) when Fashion-MNIST is not installed.
# Usage: embed_cli.sh <build dir> <source dir>
set -u
build=${1:?build dir}
fmnist=/usr/share/datasets/fashion-mnist
[ -d "$fmnist" ] || { echo "skip: $fmnist not installed (Debian package fashion-mnist)"; exit 77; }
pre="$build/examples/simmim_pretrain"
emb="$build/examples/simmim_embed"
for b in "$pre" "$emb"; do [ -x "$b" ] || { echo "FAIL: $b is not built"; exit 1; }; done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { echo "ok: $1"; passed=$((passed + 1)); }
bad() { echo "FAIL: $1"; failed=$((failed + 1)); }

# header <file>: the JSON header of a safetensors file (8-byte little-endian length, then the JSON)
header_len() { od -An -t u8 -N8 "$1" | tr -d ' '; }
header() { tail -c +9 "$1" | head -c "$(header_len "$1")"; }
# floats <file> <tensor>: the tensor's F32 values, one per line (begin offset from the header)
floats() {
    local begin end
    begin=$(header "$1" | grep -o "\"$2\":{[^}]*}" | sed 's/.*"data_offsets":\[\([0-9]*\),\([0-9]*\)\].*/\1/')
    end=$(header "$1" | grep -o "\"$2\":{[^}]*}" | sed 's/.*"data_offsets":\[\([0-9]*\),\([0-9]*\)\].*/\2/')
    tail -c +$((9 + $(header_len "$1") + begin)) "$1" | head -c $((end - begin)) | od -An -v -t f4 -w4 | tr -d ' '
}
int64s() {
    local begin end
    begin=$(header "$1" | grep -o "\"$2\":{[^}]*}" | sed 's/.*"data_offsets":\[\([0-9]*\),\([0-9]*\)\].*/\1/')
    end=$(header "$1" | grep -o "\"$2\":{[^}]*}" | sed 's/.*"data_offsets":\[\([0-9]*\),\([0-9]*\)\].*/\2/')
    tail -c +$((9 + $(header_len "$1") + begin)) "$1" | head -c $((end - begin)) | od -An -v -t d8 -w8 | tr -d ' '
}

# checkpoints: 2 steps of vit-tiny-test in each form
for form in common official; do
    "$pre" --data fashion-mnist --model vit-tiny-test --vit "$form" --batch 8 --steps 2 --threads 2 --seed 3 --out "$tmp/pre-$form" \
        > "$tmp/pre-$form.log" 2>&1 || { bad "simmim_pretrain --vit $form failed: $(tail -2 "$tmp/pre-$form.log")"; }
done

# 1. pooled features of the first 50 test images
want_labels=$(zcat "$fmnist/t10k-labels-idx1-ubyte.gz" | tail -c +9 | head -c 50 | od -An -v -t u1 -w1 | tr -d ' ')
for form in common official; do
    name=$([ "$form" = common ] && echo "vit" || echo "vit-official")
    out="$tmp/feat-$form.safetensors"
    "$emb" --weights "$tmp/pre-$form/checkpoint.safetensors" --data fashion-mnist --limit 50 --batch 16 --threads 2 --out "$out" \
        > "$tmp/emb-$form.log" 2>&1
    code=$?
    [ $code -eq 0 ] && ok "$form: simmim_embed exits 0" || bad "$form: simmim_embed exit $code: $(tail -2 "$tmp/emb-$form.log")"
    grep -Eq "^simmim_embed: $name vit-tiny-test \((from metadata|inferred from tensor names)\)" "$tmp/emb-$form.log" &&
        ok "$form: the encoder is recognised as $name vit-tiny-test" || bad "$form: encoder line: $(head -1 "$tmp/emb-$form.log")"
    grep -q "^wrote $out: features \[50, 32\] F32, labels \[50\] I64" "$tmp/emb-$form.log" && ok "$form: says where it wrote and the shape" ||
        bad "$form: no 'wrote' line: $(tail -1 "$tmp/emb-$form.log")"
    h=$(header "$out")
    echo "$h" | grep -q '"features":{"dtype":"F32","shape":\[50,32\]' && ok "$form: features F32 [50, 32] in the header" ||
        bad "$form: features header: $h"
    echo "$h" | grep -q '"labels":{"dtype":"I64","shape":\[50\]' && ok "$form: labels I64 [50] in the header" || bad "$form: labels header: $h"
    echo "$h" | grep -q '"count":"50"' && echo "$h" | grep -q '"split":"test"' && ok "$form: metadata count and split" || bad "$form: metadata: $h"
    size=$(stat -c %s "$out")
    [ "$size" -eq $((8 + $(header_len "$out") + 50 * 32 * 4 + 50 * 8)) ] && ok "$form: file size is header + 50*32 floats + 50 labels" ||
        bad "$form: file size $size"
    [ "$(int64s "$out" labels)" = "$want_labels" ] && ok "$form: labels are the first 50 of t10k-labels" || bad "$form: labels differ from the IDX file"
    floats "$out" features | awk '{ if ($1 != $1 + 0 || $1 ~ /nan|inf/) bad = 1; if ($1 != 0) nz++ } END { exit !(bad == 0 && nz > 1000) }' &&
        ok "$form: features finite and not zero" || bad "$form: features contain non-finite values or zeros"
done

# 2. --pool none: the mean over the 16 tokens is the pooled feature
none="$tmp/none.safetensors"
"$emb" --weights "$tmp/pre-common/checkpoint.safetensors" --data fashion-mnist --limit 50 --pool none --threads 2 --out "$none" > "$tmp/none.log" 2>&1 ||
    bad "--pool none failed: $(tail -2 "$tmp/none.log")"
header "$none" | grep -q '"features":{"dtype":"F32","shape":\[50,16,32\]' && ok "--pool none: features [50, 16, 32]" || bad "--pool none header: $(header "$none")"
maxdiff=$(paste <(floats "$tmp/feat-common.safetensors" features) \
                <(floats "$none" features | awk '{ i = NR - 1; n = int(i / 512); d = i % 32; s[n * 32 + d] += $1 }
                                                END { for (k = 0; k < 50 * 32; k++) printf "%.9g\n", s[k] / 16 }') |
          awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d } END { printf "%g", m + 0 }')
awk -v m="$maxdiff" 'BEGIN { exit !(m < 1e-5) }' && ok "--pool none averaged over tokens equals --pool mean (max diff $maxdiff)" ||
    bad "--pool none mean differs from --pool mean by $maxdiff"

# 3. usage and runtime errors
expect() {  # expect <code> <description> <stderr fragment> args...
    local want=$1 what=$2 fragment=$3; shift 3
    "$emb" "$@" > "$tmp/e.out" 2> "$tmp/e.err"
    local c=$?
    if [ $c -eq "$want" ] && [ "$(wc -l < "$tmp/e.err")" -eq 1 ] && grep -qF -- "$fragment" "$tmp/e.err"; then
        ok "exit $want, one line: $what"
    else
        bad "$what: exit $c (want $want): $(cat "$tmp/e.err")"
    fi
}
ck="$tmp/pre-common/checkpoint.safetensors"
expect 2 "no --out" "--out is required" --weights "$ck" --data fashion-mnist
expect 2 "no --weights" "--weights is required" --data fashion-mnist --out "$tmp/x.safetensors"
expect 2 "unknown --pool" "--pool" --weights "$ck" --data fashion-mnist --pool max --out "$tmp/x.safetensors"
expect 2 "--batch 0" "--batch" --weights "$ck" --data fashion-mnist --batch 0 --out "$tmp/x.safetensors"
expect 2 "--split val" "--split" --weights "$ck" --data fashion-mnist --split val --out "$tmp/x.safetensors"
expect 2 "unknown option" "--frobnicate" --weights "$ck" --data fashion-mnist --frobnicate --out "$tmp/x.safetensors"
expect 2 "missing data directory" "/nonexistent/dir" --weights "$ck" --data /nonexistent/dir --out "$tmp/x.safetensors"
expect 2 "missing weights file" "$tmp/missing.safetensors" --weights "$tmp/missing.safetensors" --data fashion-mnist --out "$tmp/x.safetensors"
expect 2 "--out in a missing directory" "$tmp/nodir" --weights "$ck" --data fashion-mnist --out "$tmp/nodir/x.safetensors"
expect 1 "weights holding no encoder" "$tmp/feat-common.safetensors: no encoder tensors" \
    --weights "$tmp/feat-common.safetensors" --data fashion-mnist --out "$tmp/x.safetensors"
[ ! -e "$tmp/x.safetensors" ] && ok "nothing written on errors" || bad "an output was written despite the errors"

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
