#!/usr/bin/env bash
# benchmarks/compare.sh [threads]: our benchmarks against their PyTorch peers at the same thread count,
# printed as one markdown table (docs/performance.md); the raw results and a summary.json stay in OUT.
#
#   threads        OpenMP threads for ours, torch.set_num_threads for the peers (default: nproc)
#   BUILD          a CMake build directory with bench_train_step, bench_masking and bench_attention built
#                  (default: configure and build Release in /tmp/simmim-compare-build)
#   REPS           Google Benchmark repetitions of ours (default 3; medians are reported)
#   OUT            where the raw results go (default: a fresh directory under /tmp)
#   PEER_VARIANTS  "all" (default) or "quick": the peer environments to try, below
#   OURS_PASSIVE   1 (default): also run ours with OMP_WAIT_POLICY=PASSIVE and keep the faster; 0: as is only
#   TABLE_ONLY     1: run nothing, only print the table of the results already in OUT
#   COMPARE_OPS    1 (default): also the masking and attention rows; 0: the train-step rows only
#   TRAIN_PRESETS  the train-step presets (default: vit-t4-32 vit-t16-224 vit-s16-224 vit-b16-224 swin-d32 swin-b-192)
#   PRECISIONS     our train-step matmul precisions (default "fp32 bf16"; bf16 needs AVX512-BF16), one process each
#   AMP_VARIANTS   the PyTorch train-step precisions tried (default "fp32 bf16": bf16 = torch.autocast("cpu",
#                  dtype=torch.bfloat16) around the forward, PyTorch's one-line mixed precision on AVX512-BF16)
#
# The fairest peer: PyTorch (/usr/bin/python3, torch 1.13 on OpenBLAS) runs peer_train_step.py,
# peer_masking.py and peer_attention.py once per environment variant and every row of the table keeps
# the fastest variant (named in the table; every variant's time is in summary.json). Variants:
#   OpenBLAS kernels   OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE as in the environment, or unset (OpenBLAS
#                      then picks its kernels for the CPU itself)
#   wait policy        OMP_WAIT_POLICY as in the environment, or PASSIVE (torch's OpenMP threads sleep
#                      instead of spinning against OpenBLAS's own pthreads)
#   BLAS threads       OPENBLAS_NUM_THREADS = threads, or 1 (torch's OpenMP threads only)
# "all" tries the 8 combinations (fewer when some coincide: the environment already PASSIVE, OpenBLAS
# variables unset, threads = 1); "quick" only {as set, unset} x {environment, PASSIVE} with
# OPENBLAS_NUM_THREADS = threads.
# Ours: bench_train_step once per preset, each in its own process (so its peak RSS is the preset's),
# bench_masking and the fused cases of bench_attention, with OMP_NUM_THREADS = threads and the
# environment's OMP_WAIT_POLICY, and (OURS_PASSIVE=1) again with PASSIVE; each row keeps our faster
# run and names it. Ratio = PyTorch time / our time (> 1: ours faster).
set -euo pipefail

THREADS="${1:-$(nproc)}"
REPS="${REPS:-3}"
PEER_VARIANTS="${PEER_VARIANTS:-all}"
OURS_PASSIVE="${OURS_PASSIVE:-1}"
export COMPARE_OPS="${COMPARE_OPS:-1}"
export TRAIN_PRESETS="${TRAIN_PRESETS:-vit-t4-32 vit-t16-224 vit-s16-224 vit-b16-224 swin-d32 swin-b-192}"
export PRECISIONS="${PRECISIONS:-fp32 bf16}"
AMP_VARIANTS="${AMP_VARIANTS:-fp32 bf16}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON=/usr/bin/python3
OUT="${OUT:-$(mktemp -d /tmp/simmim-compare.XXXXXX)}"
mkdir -p "$OUT"

if [[ "${TABLE_ONLY:-0}" != 1 ]]; then
if [[ -z "${BUILD:-}" ]]; then
    BUILD=/tmp/simmim-compare-build
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSIMMIM_BUILD_TESTS=OFF -DSIMMIM_BUILD_EXAMPLES=OFF >&2
    cmake --build "$BUILD" --target bench_train_step bench_masking bench_attention -j2 >&2
fi
for bench in bench_train_step bench_masking bench_attention; do
    [[ -x "$BUILD/benchmarks/$bench" ]] || { echo "compare.sh: $BUILD/benchmarks/$bench is missing" >&2; exit 1; }
done

echo "compare.sh: $THREADS threads, $REPS repetitions, results in $OUT" >&2
{
    echo "start $(date '+%F %T')  uptime: $(uptime)"
    echo "threads=$THREADS REPS=$REPS PEER_VARIANTS=$PEER_VARIANTS OURS_PASSIVE=$OURS_PASSIVE"
    echo "environment: OMP_WAIT_POLICY=${OMP_WAIT_POLICY-<unset>} OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE-<unset>}" \
         "OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE-<unset>} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS-<unset>}"
} >"$OUT/machine.txt"

# --- ours ------------------------------------------------------------------------------------------
ours_variants=(env)
if [[ "$OURS_PASSIVE" == 1 && "${OMP_WAIT_POLICY:-}" != PASSIVE && "${OMP_WAIT_POLICY:-}" != passive ]]; then
    ours_variants+=(passive)
fi
run_ours() {  # variant, name, binary, extra arguments...
    local variant="$1" name="$2" binary="$3"
    shift 3
    local envcmd=(env "OMP_NUM_THREADS=$THREADS")
    [[ "$variant" == passive ]] && envcmd+=(OMP_WAIT_POLICY=PASSIVE)
    echo "compare.sh: ours ($variant): $name" >&2
    "${envcmd[@]}" "$BUILD/benchmarks/$binary" --benchmark_repetitions="$REPS" \
        --benchmark_report_aggregates_only=true --benchmark_out="$OUT/ours_${name}__$variant.json" \
        --benchmark_out_format=json "$@" >"$OUT/ours_${name}__$variant.log"
}
for variant in "${ours_variants[@]}"; do
    for preset in $TRAIN_PRESETS; do
        for precision in $PRECISIONS; do
            run_ours "$variant" "train_${preset}_$precision" bench_train_step --benchmark_filter="/$preset/batch[0-9]+/$precision/"
        done
    done
    if [[ "$COMPARE_OPS" == 1 ]]; then
        run_ours "$variant" masking bench_masking
        run_ours "$variant" attention bench_attention --benchmark_filter=fused
    fi
done

# --- peers -----------------------------------------------------------------------------------------
# Each variant: a label (part of the file names) and the env(1) arguments that make it.
peer_labels=()
peer_envs=()
add_peer_variant() {  # label, env arguments...
    local label="$1"
    shift
    peer_labels+=("$label")
    peer_envs+=("$*")
}
blas_options=(env)
[[ -n "${OPENBLAS_CORETYPE:-}${OPENBLAS_L2_SIZE:-}" ]] && blas_options+=(unset)
wait_options=(env)
# PASSIVE first: on a shared machine the likely fastest variants then run earliest.
[[ "${OMP_WAIT_POLICY:-}" != PASSIVE && "${OMP_WAIT_POLICY:-}" != passive ]] && wait_options=(passive env)
thread_options=("$THREADS")
[[ "$PEER_VARIANTS" == all && "$THREADS" != 1 ]] && thread_options+=(1)
for wait in "${wait_options[@]}"; do
    for blas in "${blas_options[@]}"; do
        for bt in "${thread_options[@]}"; do
            args=()
            [[ "$blas" == unset ]] && args+=(-u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)
            [[ "$wait" == passive ]] && args+=(OMP_WAIT_POLICY=PASSIVE)
            args+=("OPENBLAS_NUM_THREADS=$bt")
            add_peer_variant "coretype-${blas}_wait-${wait}_blas-$bt" "${args[@]}"
        done
    done
done
for i in "${!peer_labels[@]}"; do
    label="${peer_labels[$i]}"
    read -r -a args <<<"${peer_envs[$i]}"
    for amp in $AMP_VARIANTS; do
        echo "compare.sh: PyTorch ($label, $amp): train_step" >&2
        env "${args[@]}" "$PYTHON" "$ROOT/benchmarks/peer_train_step.py" --threads "$THREADS" --amp "$amp" \
            --presets "${TRAIN_PRESETS// /,}" >"$OUT/peer_train_step__${label}_amp-$amp.jsonl"
    done
    for peer in masking attention; do
        [[ "$COMPARE_OPS" == 1 ]] || continue
        echo "compare.sh: PyTorch ($label): $peer" >&2
        env "${args[@]}" "$PYTHON" "$ROOT/benchmarks/peer_$peer.py" --threads "$THREADS" \
            >"$OUT/peer_${peer}__$label.jsonl"
    done
done
echo "end $(date '+%F %T')  uptime: $(uptime)" >>"$OUT/machine.txt"
fi  # TABLE_ONLY

# --- table -----------------------------------------------------------------------------------------
"$PYTHON" - "$OUT" "$THREADS" <<'EOF'
import glob
import json
import os
import sys

out, threads = sys.argv[1], sys.argv[2]


def ours(name):
    """{variant: {run name without /real_time: the median aggregate, or the only run}} of ours_<name>__*.json."""
    variants = {}
    for path in sorted(glob.glob(os.path.join(out, f"ours_{name}__*.json"))):
        variant = os.path.basename(path)[len(f"ours_{name}__"):-len(".json")]
        with open(path) as f:
            data = json.load(f)
        result = {}
        for b in data["benchmarks"]:
            key = b["run_name"].replace("/real_time", "")
            if b.get("run_type") == "aggregate":
                if b["aggregate_name"] == "median":
                    result[key] = b
            else:  # a single repetition: no aggregates
                result.setdefault(key, b)
        variants[variant] = result
    return variants


def peers(name):
    """{variant label: [records]} of peer_<name>__*.jsonl."""
    variants = {}
    for path in sorted(glob.glob(os.path.join(out, f"peer_{name}__*.jsonl"))):
        label = os.path.basename(path)[len(f"peer_{name}__"):-len(".jsonl")]
        with open(path) as f:
            variants[label] = [json.loads(line) for line in f if line.strip().startswith("{")]
    return variants


def ms(b):
    unit = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b["time_unit"]]
    return b["real_time"] * unit


def fastest_ours(variants, key):
    """(variant, record) with the smallest wall time, and {variant: ms} of all."""
    found = {v: r[key] for v, r in variants.items() if key in r}
    if not found:
        sys.exit(f"compare.sh: no result for ours {key}")
    best = min(found, key=lambda v: ms(found[v]))
    return best, found[best], {v: round(ms(b), 4) for v, b in found.items()}


def fastest_peer(variants, match, what):
    """(label, record) with the smallest ms_median among the matching records, and {label: ms} of all."""
    found = {}
    for label, records in variants.items():
        hits = [r for r in records if match(r)]
        if hits:
            found[label] = min(hits, key=lambda r: r["ms_median"])
    if not found:
        sys.exit(f"compare.sh: no PyTorch result for {what}")
    best = min(found, key=lambda label: found[label]["ms_median"])
    return best, found[best], {label: r["ms_median"] for label, r in found.items()}


def short(label):
    """coretype-unset_wait-passive_blas-1 -> 'unset, PASSIVE, BLAS 1'."""
    parts = dict(p.split("-", 1) for p in label.split("_"))
    return ", ".join((["autocast bf16"] if parts.get("amp") == "bf16" else []) +
                     ["OPENBLAS_* as set" if parts["coretype"] == "env" else "OPENBLAS_* unset",
                      "PASSIVE" if parts["wait"] == "passive" else "wait env", "BLAS " + parts["blas"]])


rows, summary = [], []


def add(name, our_variant, our_ms, our_text, peer_label, peer_ms, peer_text, frac, mem, our_all, peer_all):
    rows.append((name, f"{our_text} [{our_variant}]", f"{peer_text} [{short(peer_label)}]", peer_ms / our_ms, frac, mem))
    summary.append({"benchmark": name, "ours_ms": round(our_ms, 4), "ours_variant": our_variant,
                    "ours_all_variants_ms": our_all, "pytorch_ms": peer_ms, "pytorch_variant": peer_label,
                    "pytorch_all_variants_ms": peer_all, "ratio": round(peer_ms / our_ms, 3)})


peak = None
train_peers = peers("train_step")
batches = {"vit-t4-32": 64, "vit-t16-224": 16, "vit-s16-224": 8, "vit-b16-224": 8, "swin-d32": 64, "swin-b-192": 4}
for preset in os.environ.get("TRAIN_PRESETS", " ".join(batches)).split():
    batch = batches[preset]
    pl, p, pall = fastest_peer(train_peers, lambda r: r["preset"] == preset, preset)
    fp32_ms = None
    for precision in os.environ.get("PRECISIONS", "fp32 bf16").split():
        ov, b, oall = fastest_ours(ours(f"train_{preset}_{precision}"),
                                   f"train_step/{preset}/batch{batch}/{precision}/iterations:3")
        peak = b["peak_GFLOP/s"]
        our_ms = ms(b)
        if precision == "fp32":
            fp32_ms = our_ms
            frac = f"{b['peak_frac']:.0%} ({b['GFLOP/s']:.0f} GFLOP/s)"
        else:  # bf16: against the VDPBF16PS peak, and the speed-up over our FP32 step
            frac = f"{b['bf16_peak_frac']:.0%} of bf16 peak ({b['GFLOP/s']:.0f} GFLOP/s)"
            if fp32_ms:
                frac += f"; {fp32_ms / our_ms:.2f}x our fp32"
        add(f"train step {preset}, batch {batch}, {precision}", ov, our_ms,
            f"{our_ms:.0f} ms ({batch / our_ms * 1e3:.1f} img/s)", pl, p["ms_median"],
            f"{p['ms_median']:.0f} ms ({p['images_per_s']:.1f} img/s)", frac,
            f"{b['peak_rss_MB']:.0f} / {p['peak_rss_MB']:.0f} MB", oall, pall)

if os.environ.get("COMPARE_OPS", "1") == "1":  # the masking and attention rows
    mask = ours("masking")
    mask_peers = peers("masking")
    for (name, shape), label in (
            (("mask/generate/192_32_4/batch128", [128, 192, 32, 4]), "mask generation 128 x (192/32/4)"),
            (("mask/generate/224_32_16/batch128", [128, 224, 32, 16]), "mask generation 128 x (224/32/16)")):
        ov, b, oall = fastest_ours(mask, name)
        pl, p, pall = fastest_peer(mask_peers, lambda r: r["case"] == "generate" and r["shape"] == shape, label)
        add(label + " (numpy peer)", ov, ms(b), f"{ms(b):.3f} ms", pl, p["ms_median"], f"{p['ms_median']:.3f} ms", "-", "-",
            oall, pall)
    for case, label in (("blend", "mask-token blend (128, 2304, 128), peer blend only"),
                        ("blend_cat_pos", "mask-token blend + cls + pos (128, 2304, 128)")):
        ov, b, oall = fastest_ours(mask, "mask/blend/128_2304_128")
        pl, p, pall = fastest_peer(mask_peers, lambda r: r["case"] == case, label)
        add(label, ov, ms(b), f"{ms(b):.2f} ms", pl, p["ms_median"], f"{p['ms_median']:.2f} ms", "-", "-", oall, pall)
    ov, b, oall = fastest_ours(mask, "mask/l1_loss_fwdbwd/128_3_192_192_p4")
    pl, p, pall = fastest_peer(mask_peers, lambda r: r["case"] == "l1_loss_fwdbwd", "l1 loss")
    add("masked L1 loss fwd+bwd (128, 3, 192, 192), p 4", ov, ms(b), f"{ms(b):.2f} ms", pl, p["ms_median"],
        f"{p['ms_median']:.2f} ms", "-", "-", oall, pall)

    attention = ours("attention")
    attention_peers = peers("attention")
    for (B, H, N, Dh) in ((8, 12, 197, 64), (64, 3, 65, 64), (1, 12, 1024, 64), (256, 4, 36, 32)):
        for mode in ("fwd", "fwdbwd"):
            ov, b, oall = fastest_ours(attention, f"attention/{mode}/fused/B{B}_H{H}_N{N}_Dh{Dh}")
            pl, p, pall = fastest_peer(attention_peers, lambda r: r["shape"] == [B, H, N, Dh] and r["mode"] == mode,
                                       f"attention {mode} {B, H, N, Dh}")
            add(f"attention {'fwd' if mode == 'fwd' else 'fwd+bwd'} (B, H, N, Dh) = ({B}, {H}, {N}, {Dh})", ov, ms(b),
                f"{ms(b):.2f} ms", pl, p["ms_median"], f"{p['ms_median']:.2f} ms", f"{b['GFLOP/s'] / peak:.0%}", "-",
                oall, pall)

with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump({"threads": int(threads), "peak_GFLOP/s": peak, "rows": summary}, f, indent=1)

print(f"{threads} threads; FP32 FMA peak measured by bench_train_step: {peak:.0f} GFLOP/s. Median wall times; "
      "each side's fastest environment variant in brackets (ours: env = OMP_WAIT_POLICY as in the environment, "
      "passive = PASSIVE; PyTorch: OPENBLAS_CORETYPE/L2_SIZE as set or unset, OMP_WAIT_POLICY, "
      "OPENBLAS_NUM_THREADS); ratio = PyTorch time / ours.\n")
print("| benchmark | ours | PyTorch | ratio | fraction of peak | peak memory ours / PyTorch |")
print("|---|---:|---:|---:|---:|---:|")
for name, o, p, ratio, frac, mem in rows:
    print(f"| {name} | {o} | {p} | {ratio:.2f}x | {frac} | {mem} |")
EOF
