#!/usr/bin/env bash
# scripts/run-results.sh: the experiment of docs/results.md (issue 16). SimMIM-pretrain a small ViT on the
# 60k Fashion-MNIST training images, then, pretrained vs random init at the same budget: fine-tune on 1% and
# 10% of the labels (3 seeds; seed s draws the class-balanced subset with --label-seed s), linearly probe
# (block 4 of 6, average pooling), fine-tune on all labels; top-1 on the full 10k test split.
#
# Resumable and idempotent: every run has its own directory under OUT/<model>/; a run is finished when its
# result.json exists (written by this script, via a temporary file and a rename, only after the program
# exited 0), and is then skipped; an interrupted pretraining or fine-tuning run continues from its
# checkpoint.safetensors (--resume; checkpoints every pretraining epoch and every fine-tuning epoch); an
# interrupted linear probe (minutes) starts again. Rerun the same command to continue after a kill.
#
# Usage: scripts/run-results.sh [OUT]        (default runs/results16)
#   then: /usr/bin/python3 benchmarks/results_table.py OUT
#
# Lanes: with LANES=2 (the default), once the pretraining has finished, the downstream stages run in two lanes of
# THREADS/2 threads each: the full-label fine-tuning (f100) in one, the probe and the label-scarce runs
# (lp f1 f10) in the other. They write to different run directories; on 2 cores, two 1-thread runs get more done
# than one 2-thread run of this small model. The defaults fit one working session: 2.1 h measured on an idle 2-core
# machine (docs/results.md, "Compute").
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(mkdir -p "${1:-$root/runs/results16}" && cd "${1:-$root/runs/results16}" && pwd)
build=${BUILD:-$root/build}

# ---- budgets (env overrides; the smoke test of docs/results.md makes them tiny) ----------------------------
MODEL=${MODEL:-vit-m4-32-c1}    # measured 2026-12-07, 2 threads, idle: pretrain 450-740 img/s (vit-t4-32-c1: 73 under load)
THREADS=${THREADS:-2}
SEEDS=${SEEDS:-"1 2 3"}         # fine-tuning at 1% and 10%, linear probe
FULL_SEEDS=${FULL_SEEDS:-"1"}   # fine-tuning on all labels
LANES=${LANES:-2}               # 1: the stages in turn, THREADS threads each; 2: see the header
PRE_EPOCHS=${PRE_EPOCHS:-30}    # 30 x 468 steps of 128 = 1.8M images, ~50 min at 450-740 img/s (idle, 2 threads)
PRE_STEPS=${PRE_STEPS:-0}       # >0: --steps instead of --epochs (smoke tests)
PRE_SAVE=${PRE_SAVE:-468}       # pretraining checkpoint every N steps (one epoch of batch 128, ~1.6 min)
PRE_LR=${PRE_LR:-2e-3}          # per batch 512
F1_EPOCHS=${F1_EPOCHS:-50};   F1_BATCH=${F1_BATCH:-32}     # 1%: 600 images, 18 steps/epoch, 900 steps
F1_EVAL=${F1_EVAL:-10}          # evaluate (the full 10k test split) every N epochs and after the last: at 1% an
F10_EVAL=${F10_EVAL:-5}         # evaluation costs more than an epoch of training
F100_EVAL=${F100_EVAL:-5}
F10_EPOCHS=${F10_EPOCHS:-30}; F10_BATCH=${F10_BATCH:-64}   # 10%: 6,000 images, 93 steps/epoch, 2,790 steps
F100_EPOCHS=${F100_EPOCHS:-15}; F100_BATCH=${F100_BATCH:-128} # all: 60,000 images, 468 steps/epoch, 7,020 steps
LP_EPOCHS=${LP_EPOCHS:-100}; LP_BATCH=${LP_BATCH:-256}     # linear probe on frozen block features, all labels
PRE_FT=${PRE_FT:-"--base-lr 1.25e-3 --layer-decay 0.65"}   # pretrained init: the paper's (5e-3 per 2048, 0.65)
RAND_FT=${RAND_FT:-"--base-lr 4e-3 --layer-decay 1.0"}     # random init: a from-scratch lr, no layer decay
FT_EXTRA=${FT_EXTRA:-""}        # extra fine-tuning options for both inits (recipe defaults otherwise)
MAX_TRAIN=${MAX_TRAIN:-0}       # >0: only the first N training images (smoke tests)
MAX_TEST=${MAX_TEST:-0}         # >0: only the first N test images (smoke tests)
SWIN=${SWIN:-0}                 # 1: afterwards the same protocol for swin-d32-c1 (stage f; not run by default)
STAGES=${STAGES:-"pre lp f1 f10 f100"}   # the probe (minutes) first
# -------------------------------------------------------------------------------------------------------------

pre_bin=$build/examples/simmim_pretrain
ft_bin=$build/examples/simmim_finetune
[ -x "$pre_bin" ] && [ -x "$ft_bin" ] || { echo "build $pre_bin and $ft_bin first" >&2; exit 2; }
limits=()
[ "$MAX_TRAIN" -gt 0 ] && limits+=(--max-train "$MAX_TRAIN")
[ "$MAX_TEST" -gt 0 ] && limits+=(--max-test "$MAX_TEST")

log() { echo "[$(date '+%F %T')] $*"; }

# finish DIR SRC THREADS: publish SRC (a finished run's summary) as DIR/result.json with the run's thread count,
# atomically (a temporary file, then a rename)
finish() {
    /usr/bin/python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))  # a complete JSON document, or fail
r["threads"] = int(sys.argv[2])
json.dump(r, open(sys.argv[3], "w"), indent=2)' "$2" "$3" "$1/result.json.tmp"
    sync "$1/result.json.tmp" && mv -f "$1/result.json.tmp" "$1/result.json"
}

# pretrain DIR MODEL
pretrain() {
    local dir=$1 model=$2
    if [ -f "$dir/result.json" ]; then log "skip $dir (finished)"; return; fi
    mkdir -p "$dir"
    local budget=(--epochs "$PRE_EPOCHS") resume=()
    [ "$PRE_STEPS" -gt 0 ] && budget=(--steps "$PRE_STEPS")
    [ -f "$dir/checkpoint.safetensors" ] && resume=(--resume "$dir/checkpoint.safetensors")
    log "pretrain $dir ${resume[*]:+(resuming)}"
    "$pre_bin" --model "$model" --data fashion-mnist --threads "$THREADS" "${budget[@]}" --batch 128 --base-lr "$PRE_LR" \
        --seed 1 --save-every "$PRE_SAVE" --log-every 50 --vis-every 0 --out "$dir" "${resume[@]}" >> "$dir/log.txt" 2>&1
    # summary: the last metrics row and the number of rows
    /usr/bin/python3 -c '
import json, sys
d = sys.argv[1]
rows = [json.loads(l) for l in open(f"{d}/metrics.jsonl") if l.strip()]
json.dump({"mode": "pretrain", "last": rows[-1], "rows": len(rows)}, open(f"{d}/summary.json.tmp", "w"))' "$dir"
    mv -f "$dir/summary.json.tmp" "$dir/pretrain_summary.json"
    finish "$dir" "$dir/pretrain_summary.json" "$THREADS"
    log "pretrain $dir done"
}

# downstream MODE THREADS DIR ARGS...: a fine-tuning run (MODE finetune; resumed from its checkpoint if one is
# there) or a linear probe (MODE linprobe; minutes, an interrupted one starts again)
downstream() {
    local mode=$1 threads=$2 dir=$3
    shift 3
    if [ -f "$dir/result.json" ]; then log "skip $dir (finished)"; return; fi
    mkdir -p "$dir"
    local extra=() note=""
    if [ "$mode" = finetune ]; then
        extra=(--log-every 100)
        if [ -f "$dir/checkpoint.safetensors" ]; then extra+=(--resume "$dir/checkpoint.safetensors"); note=" (resuming)"; fi
    fi
    log "$mode $dir, $threads threads$note"
    rm -f "$dir/summary.json"  # a summary is only trusted when written by the run that exits 0 below
    "$ft_bin" --mode "$mode" --data fashion-mnist --threads "$threads" "${limits[@]}" --out "$dir" "$@" "${extra[@]}" \
        >> "$dir/log.txt" 2>&1
    finish "$dir" "$dir/summary.json" "$threads"
    rm -f "$dir/model.safetensors"  # a fine-tuning checkpoint holds the weights; keep the disk small
    log "$mode $dir done: $(/usr/bin/python3 -c 'import json,sys; print("%.2f%%" % (100*json.load(open(sys.argv[1]))["test_top1"]))' "$dir/result.json")"
}

# stage MODEL STAGE THREADS: one stage of the protocol for one preset
stage() {
    local model=$1 st=$2 threads=$3 m="$out/$1"
    local ckpt="$m/pretrain/checkpoint.safetensors"
    case $st in
    pre) pretrain "$m/pretrain" "$model" ;;
    f1|f10|f100)
        local frac epochs batch every seeds=$SEEDS s
        case $st in
        f1) frac=0.01; epochs=$F1_EPOCHS; batch=$F1_BATCH; every=$F1_EVAL ;;
        f10) frac=0.1; epochs=$F10_EPOCHS; batch=$F10_BATCH; every=$F10_EVAL ;;
        f100) frac=1; epochs=$F100_EPOCHS; batch=$F100_BATCH; every=$F100_EVAL; seeds=$FULL_SEEDS ;;
        esac
        for s in $seeds; do
            local sub=(--model "$model" --label-fraction "$frac" --label-seed "$s" --seed "$s" --epochs "$epochs"
                       --batch "$batch" --eval-every "$every")
            # shellcheck disable=SC2086
            downstream finetune "$threads" "$m/ft_f${frac}_pretrained_s$s" "${sub[@]}" --init "$ckpt" $PRE_FT $FT_EXTRA
            # shellcheck disable=SC2086
            downstream finetune "$threads" "$m/ft_f${frac}_random_s$s" "${sub[@]}" $RAND_FT $FT_EXTRA
        done ;;
    lp)
        local s
        for s in $SEEDS; do
            local sub=(--model "$model" --epochs "$LP_EPOCHS" --batch "$LP_BATCH" --seed "$s")
            downstream linprobe "$threads" "$m/lp_f1_pretrained_s$s" "${sub[@]}" --init "$ckpt"
            downstream linprobe "$threads" "$m/lp_f1_random_s$s" "${sub[@]}"
        done ;;
    esac
}

# protocol MODEL: the stages for one preset; the pretraining first (everything else needs its checkpoint), then the
# downstream stages, in two lanes when LANES=2
protocol() {
    local model=$1 st lane1=() lane2=()
    for st in $STAGES; do
        case $st in
        pre) stage "$model" pre "$THREADS" ;;
        f100) lane2+=("$st") ;;
        *) lane1+=("$st") ;;
        esac
    done
    if [ "$LANES" = 1 ] || [ ${#lane1[@]} = 0 ] || [ ${#lane2[@]} = 0 ]; then
        for st in "${lane1[@]}" "${lane2[@]}"; do stage "$model" "$st" "$THREADS"; done
        return
    fi
    local half=$((THREADS / 2 > 0 ? THREADS / 2 : 1)) pid1 pid2 rc=0
    log "two lanes of $half threads: [${lane1[*]}] and [${lane2[*]}]"
    (for st in "${lane1[@]}"; do stage "$model" "$st" "$half"; done) &
    pid1=$!
    (for st in "${lane2[@]}"; do stage "$model" "$st" "$half"; done) &
    pid2=$!
    wait "$pid1" || rc=$?
    wait "$pid2" || rc=$?
    if [ "$rc" != 0 ]; then log "a lane failed (exit $rc)"; exit "$rc"; fi
}

case $LANES in 1 | 2) ;; *) echo "LANES must be 1 or 2, not '$LANES'" >&2; exit 2 ;; esac
for st in $STAGES; do
    case $st in pre | lp | f1 | f10 | f100) ;; *) echo "unknown stage '$st' (expected pre lp f1 f10 f100)" >&2; exit 2 ;; esac
done
log "run-results: $MODEL into $out (stages: $STAGES; lanes: $LANES; SWIN=$SWIN)"
protocol "$MODEL"
if [ "$SWIN" = 1 ]; then
    # stage f: swin-d32-c1 (drop path is not implemented for Swin: the recipe's default there is 0)
    protocol swin-d32-c1
fi
log "run-results: all stages finished; tabulate with /usr/bin/python3 $root/benchmarks/results_table.py $out"
