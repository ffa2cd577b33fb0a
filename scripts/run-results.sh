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
# Lanes: with LANES=2 (the default), two workers of THREADS/2 threads each take the runs from one queue (see
# protocol() below): while one pretrains, the other runs the random-init baselines, which do not need the
# checkpoint; then both take the pretrained runs. On 2 cores two 1-thread runs get more done than one 2-thread
# run of these small models, and a 1-thread run does not stall when something else runs (a 2-thread run's OpenMP
# threads wait for each other). Stage f (SWIN=1, or MODEL=swin-d32-c1) runs the same protocol for swin-d32-c1 at a
# smaller budget (budgets() below). Wall times measured on an idle 2-core machine are in docs/results.md, "Compute".
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
# PRE_EPOCHS                    # default 30 (ViT; 1.8M images) or 10 (Swin); see budgets() below
PRE_STEPS=${PRE_STEPS:-0}       # >0: --steps instead of --epochs (smoke tests)
PRE_SAVE=${PRE_SAVE:-468}       # pretraining checkpoint every N steps (one epoch of batch 128, ~1.6 min)
PRE_LR=${PRE_LR:-2e-3}          # per batch 512
F1_EPOCHS=${F1_EPOCHS:-50};   F1_BATCH=${F1_BATCH:-32}     # 1%: 600 images, 18 steps/epoch, 900 steps
F1_EVAL=${F1_EVAL:-10}          # evaluate (the full 10k test split) every N epochs and after the last: at 1% an
F10_EVAL=${F10_EVAL:-5}         # evaluation costs more than an epoch of training
F100_EVAL=${F100_EVAL:-5}
F10_EPOCHS=${F10_EPOCHS:-30}; F10_BATCH=${F10_BATCH:-64}   # 10%: 6,000 images, 93 steps/epoch, 2,790 steps
F100_BATCH=${F100_BATCH:-128}   # all: 60,000 images, 468 steps/epoch; F100_EPOCHS: 15 (ViT) or 5 (Swin)
LP_EPOCHS=${LP_EPOCHS:-100}; LP_BATCH=${LP_BATCH:-256}     # linear probe on frozen block features, all labels
# PRE_FT                        # pretrained init: the paper's lr (5e-3 per 2048) and layer decay (ViT-B 0.65, Swin-B 0.9)
# PRECISION                     # matmul precision: fp32 (ViT) or bf16 (Swin, as the official code trains in AMP)
RAND_FT=${RAND_FT:-"--base-lr 4e-3 --layer-decay 1.0"}     # random init: a from-scratch lr, no layer decay
FT_EXTRA=${FT_EXTRA:-""}        # extra fine-tuning options for both inits (recipe defaults otherwise)
MAX_TRAIN=${MAX_TRAIN:-0}       # >0: only the first N training images (smoke tests)
MAX_TEST=${MAX_TEST:-0}         # >0: only the first N test images (smoke tests)
SWIN=${SWIN:-0}                 # 1: afterwards the same protocol for swin-d32-c1 (stage f); MODEL=swin-d32-c1: Swin only
STAGES=${STAGES:-"pre lp f1 f10 f100"}   # which runs (the order is protocol()'s)
# -------------------------------------------------------------------------------------------------------------

pre_bin=$build/examples/simmim_pretrain
ft_bin=$build/examples/simmim_finetune
[ -x "$pre_bin" ] && [ -x "$ft_bin" ] || { echo "build $pre_bin and $ft_bin first" >&2; exit 2; }
limits=()
[ "$MAX_TRAIN" -gt 0 ] && limits+=(--max-train "$MAX_TRAIN")
[ "$MAX_TEST" -gt 0 ] && limits+=(--max-test "$MAX_TEST")

log() { echo "[$(date '+%F %T')] $*"; }

# finish DIR SRC THREADS: publish SRC (a finished run's summary) as DIR/result.json with the run's thread count and
# matmul precision, atomically (a temporary file, then a rename)
finish() {
    /usr/bin/python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))  # a complete JSON document, or fail
r["threads"] = int(sys.argv[2])
r["precision"] = sys.argv[4]
json.dump(r, open(sys.argv[3], "w"), indent=2)' "$2" "$3" "$1/result.json.tmp" "$precision"
    sync "$1/result.json.tmp" && mv -f "$1/result.json.tmp" "$1/result.json"
}

# pretrain DIR MODEL THREADS
pretrain() {
    local dir=$1 model=$2 threads=$3
    if [ -f "$dir/result.json" ]; then log "skip $dir (finished)"; return; fi
    mkdir -p "$dir"
    local budget=(--epochs "$pre_epochs") resume=()
    [ "$PRE_STEPS" -gt 0 ] && budget=(--steps "$PRE_STEPS")
    [ -f "$dir/checkpoint.safetensors" ] && resume=(--resume "$dir/checkpoint.safetensors")
    log "pretrain $dir, $threads threads${resume[*]:+ (resuming)}"
    "$pre_bin" --model "$model" --data fashion-mnist --threads "$threads" "${budget[@]}" --batch 128 --base-lr "$PRE_LR" \
        --seed 1 --save-every "$PRE_SAVE" --log-every 50 --vis-every 0 --precision "$precision" --out "$dir" "${resume[@]}" >> "$dir/log.txt" 2>&1
    # summary: the last metrics row and the number of rows
    /usr/bin/python3 -c '
import json, sys
d = sys.argv[1]
rows = [json.loads(l) for l in open(f"{d}/metrics.jsonl") if l.strip()]
json.dump({"mode": "pretrain", "last": rows[-1], "rows": len(rows)}, open(f"{d}/summary.json.tmp", "w"))' "$dir"
    mv -f "$dir/summary.json.tmp" "$dir/pretrain_summary.json"
    finish "$dir" "$dir/pretrain_summary.json" "$threads"
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

# budgets MODEL: this preset's budget (the ViT protocol's, or the smaller one of stage f for a Swin preset; the
# environment overrides both)
budgets() {
    case $1 in
    swin-*) d_pre=10; d_f100=5; d_preft="--base-lr 1.25e-3 --layer-decay 0.9"; d_prec=bf16 ;;
    *) d_pre=30; d_f100=15; d_preft="--base-lr 1.25e-3 --layer-decay 0.65"; d_prec=fp32 ;;
    esac
    pre_epochs=${PRE_EPOCHS:-$d_pre}; f100_epochs=${F100_EPOCHS:-$d_f100}; pre_ft=${PRE_FT:-$d_preft}
    precision=${PRECISION:-$d_prec}
}

# job MODEL JOB THREADS: one run of the protocol; JOB is STAGE:INIT:SEED (pre::, f1|f10|f100|lp:pretrained|random:s)
job() {
    local model=$1 threads=$3 m="$out/$1" st init s
    IFS=: read -r st init s <<< "$2"
    local ckpt="$m/pretrain/checkpoint.safetensors" prec=(--precision "$precision")
    case $st in
    pre) pretrain "$m/pretrain" "$model" "$threads" ;;
    f1|f10|f100)
        local frac epochs batch every
        case $st in
        f1) frac=0.01; epochs=$F1_EPOCHS; batch=$F1_BATCH; every=$F1_EVAL ;;
        f10) frac=0.1; epochs=$F10_EPOCHS; batch=$F10_BATCH; every=$F10_EVAL ;;
        f100) frac=1; epochs=$f100_epochs; batch=$F100_BATCH; every=$F100_EVAL ;;
        esac
        local sub=(--model "$model" --label-fraction "$frac" --label-seed "$s" --seed "$s" --epochs "$epochs"
                   --batch "$batch" --eval-every "$every")
        # shellcheck disable=SC2086
        if [ "$init" = pretrained ]; then
            downstream finetune "$threads" "$m/ft_f${frac}_pretrained_s$s" "${sub[@]}" --init "$ckpt" $pre_ft "${prec[@]}" $FT_EXTRA
        else
            downstream finetune "$threads" "$m/ft_f${frac}_random_s$s" "${sub[@]}" $RAND_FT "${prec[@]}" $FT_EXTRA
        fi ;;
    lp)
        local sub=(--model "$model" --epochs "$LP_EPOCHS" --batch "$LP_BATCH" --seed "$s" "${prec[@]}")
        if [ "$init" = pretrained ]; then downstream linprobe "$threads" "$m/lp_f1_pretrained_s$s" "${sub[@]}" --init "$ckpt"
        else downstream linprobe "$threads" "$m/lp_f1_random_s$s" "${sub[@]}"; fi ;;
    esac
}

# worker MODEL THREADS QUEUE JOBS...: take the jobs in turn, each one not yet claimed by the other worker (a claim
# is a directory made under QUEUE: mkdir is atomic); a pretrained run first waits for the pretraining to finish.
# A failing job leaves QUEUE/failed, which stops the other worker before its next job (or its wait).
worker() {
    local model=$1 threads=$2 q=$3 j
    shift 3
    for j in "$@"; do
        [ -e "$q/failed" ] && return 1
        mkdir "$q/${j//:/_}" 2> /dev/null || continue
        case $j in *:pretrained:*)
            if [ ! -f "$out/$model/pretrain/result.json" ]; then
                [ -d "$q/pre__" ] || { log "$j needs the pretraining (stage pre) of $model"; touch "$q/failed"; return 1; }
                log "$j: waiting for the pretraining"
                while [ ! -f "$out/$model/pretrain/result.json" ]; do
                    [ -e "$q/failed" ] && return 1
                    sleep 5
                done
            fi ;;
        esac
        job "$model" "$j" "$threads"
    done
}

# protocol MODEL: the runs of STAGES for one preset. With LANES=2, two workers of THREADS/2 threads share one
# queue: the pretraining, then the random-init runs (which do not need it: they run beside the pretraining), then
# the pretrained runs, the longest first in each group. With LANES=1, one worker of THREADS threads.
protocol() {
    local model=$1 st init s jobs=()
    budgets "$model"
    for st in $STAGES; do [ "$st" = pre ] && jobs+=("pre::"); done
    for init in random pretrained; do
        for st in f100 f10 f1 lp; do
            case " $STAGES " in *" $st "*) ;; *) continue ;; esac
            local seeds=$SEEDS
            [ "$st" = f100 ] && seeds=$FULL_SEEDS
            for s in $seeds; do jobs+=("$st:$init:$s"); done
        done
    done
    local q="$out/.queue/$model" rc=0
    rm -rf "$q" && mkdir -p "$q"
    local pre_budget="$pre_epochs epochs"
    [ "$PRE_STEPS" -gt 0 ] && pre_budget="$PRE_STEPS steps"
    log "$model: ${#jobs[@]} runs, $LANES lane(s); $precision matmuls, pretraining $pre_budget, full-label fine-tuning $f100_epochs epochs, pretrained init $pre_ft"
    if [ "$LANES" = 1 ]; then
        # (in the background and then waited for: inside a subshell that is part of a || list, set -e is off)
        (trap '[ $? = 0 ] || touch "$q/failed"' EXIT; worker "$model" "$THREADS" "$q" "${jobs[@]}") &
        wait $! || rc=$?
    else
        local half=$((THREADS / 2 > 0 ? THREADS / 2 : 1)) pid1 pid2
        log "two lanes of $half threads"
        (trap '[ $? = 0 ] || touch "$q/failed"' EXIT; worker "$model" "$half" "$q" "${jobs[@]}") &
        pid1=$!
        (trap '[ $? = 0 ] || touch "$q/failed"' EXIT; worker "$model" "$half" "$q" "${jobs[@]}") &
        pid2=$!
        wait "$pid1" || rc=$?
        wait "$pid2" || rc=$?
    fi
    if [ "$rc" != 0 ] || [ -e "$q/failed" ]; then log "$model: a run failed (exit $rc)"; exit $((rc ? rc : 1)); fi
    rm -rf "$q"
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
