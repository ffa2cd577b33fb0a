#!/usr/bin/env bash
# benchmarks/compare.sh [threads]: our benchmarks against their PyTorch peers at the same thread count,
# printed as one markdown table (docs/performance.md).
#
#   threads   OpenMP threads for ours, torch.set_num_threads and OPENBLAS_NUM_THREADS for the peers
#             (default: nproc)
#   BUILD     a CMake build directory with bench_train_step, bench_masking and bench_attention built
#             (default: configure and build Release in /tmp/simmim-compare-build)
#   REPS      Google Benchmark repetitions (default 3; medians are reported)
#   OUT       where the raw JSON results go (default: a fresh directory under /tmp)
#
# Ours: bench_train_step once per preset, each in its own process (so its peak RSS is the preset's),
# bench_masking and the fused cases of bench_attention. Peers (/usr/bin/python3, torch 1.13):
# peer_train_step.py, peer_masking.py, peer_attention.py, each run twice, with the environment's
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE and with them unset; the table keeps the faster of the two.
# Ratio = PyTorch time / our time (> 1: ours faster). OMP_WAIT_POLICY is passed through unchanged.
set -euo pipefail

THREADS="${1:-$(nproc)}"
REPS="${REPS:-3}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON=/usr/bin/python3
OUT="${OUT:-$(mktemp -d /tmp/simmim-compare.XXXXXX)}"
mkdir -p "$OUT"

if [[ -z "${BUILD:-}" ]]; then
    BUILD=/tmp/simmim-compare-build
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSIMMIM_BUILD_TESTS=OFF -DSIMMIM_BUILD_EXAMPLES=OFF >&2
    cmake --build "$BUILD" --target bench_train_step bench_masking bench_attention -j2 >&2
fi
for bench in bench_train_step bench_masking bench_attention; do
    [[ -x "$BUILD/benchmarks/$bench" ]] || { echo "compare.sh: $BUILD/benchmarks/$bench is missing" >&2; exit 1; }
done

echo "compare.sh: $THREADS threads, $REPS repetitions, results in $OUT" >&2
run_ours() {  # name, binary, extra arguments...
    local name="$1" binary="$2"
    shift 2
    echo "compare.sh: ours: $name" >&2
    OMP_NUM_THREADS="$THREADS" "$BUILD/benchmarks/$binary" --benchmark_repetitions="$REPS" \
        --benchmark_report_aggregates_only=true --benchmark_out="$OUT/ours_$name.json" \
        --benchmark_out_format=json "$@" >"$OUT/ours_$name.log"
}
for preset in vit-t4-32 vit-t16-224 vit-s16-224; do
    run_ours "train_$preset" bench_train_step --benchmark_filter="/$preset/"
done
run_ours masking bench_masking
run_ours attention bench_attention --benchmark_filter=fused

for variant in set unset; do
    if [[ "$variant" == set ]]; then envcmd=(env); else envcmd=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE); fi
    for peer in train_step masking attention; do
        echo "compare.sh: PyTorch, OPENBLAS_* $variant: $peer" >&2
        OPENBLAS_NUM_THREADS="$THREADS" "${envcmd[@]}" "$PYTHON" "$ROOT/benchmarks/peer_$peer.py" \
            --threads "$THREADS" >"$OUT/peer_${peer}_$variant.jsonl"
    done
done

"$PYTHON" - "$OUT" "$THREADS" <<'EOF'
import json
import os
import sys

out, threads = sys.argv[1], sys.argv[2]


def ours(name):
    """{run name without /real_time: the median aggregate, or the only run} of one ours_*.json file."""
    with open(os.path.join(out, f"ours_{name}.json")) as f:
        data = json.load(f)
    result = {}
    for b in data["benchmarks"]:
        key = b["run_name"].replace("/real_time", "")
        if b.get("run_type") == "aggregate":
            if b["aggregate_name"] == "median":
                result[key] = b
        else:  # a single repetition: no aggregates
            result.setdefault(key, b)
    return result


def peers(name):
    """Lines of peer_<name>_{set,unset}.jsonl, as lists of dicts, per variant."""
    lines = {}
    for variant in ("set", "unset"):
        with open(os.path.join(out, f"peer_{name}_{variant}.jsonl")) as f:
            lines[variant] = [json.loads(line) for line in f if line.strip().startswith("{")]
    return lines


def faster(lines, match):
    """The faster peer record (ms_median) over both variants among the records that match."""
    found = [r for variant in lines.values() for r in variant if match(r)]
    return min(found, key=lambda r: r["ms_median"]) if found else None


def ms(b):
    unit = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b["time_unit"]]
    return b["real_time"] * unit


rows = []
peak = None
train_peers = peers("train_step")
for preset, batch in (("vit-t4-32", 64), ("vit-t16-224", 16), ("vit-s16-224", 8)):
    b = ours(f"train_{preset}")[f"train_step/{preset}/batch{batch}/iterations:3"]
    peak = b["peak_GFLOP/s"]
    p = faster(train_peers, lambda r: r["preset"] == preset)
    our_ms = ms(b)
    rows.append((f"train step {preset}, batch {batch}",
                 f"{our_ms:.0f} ms ({batch / our_ms * 1e3:.1f} img/s)",
                 f"{p['ms_median']:.0f} ms ({p['images_per_s']:.1f} img/s)",
                 p["ms_median"] / our_ms, f"{b['peak_frac']:.0%} ({b['GFLOP/s']:.0f} GFLOP/s)",
                 f"{b['peak_rss_MB']:.0f} / {p['peak_rss_MB']:.0f} MB"))

mask = ours("masking")
mask_peers = peers("masking")
for (name, shape), label in (
        (("mask/generate/192_32_4/batch128", [128, 192, 32, 4]), "mask generation 128 x (192/32/4)"),
        (("mask/generate/224_32_16/batch128", [128, 224, 32, 16]), "mask generation 128 x (224/32/16)")):
    p = faster(mask_peers, lambda r: r["case"] == "generate" and r["shape"] == shape)
    rows.append((label + " (numpy peer)", f"{ms(mask[name]):.3f} ms", f"{p['ms_median']:.3f} ms",
                 p["ms_median"] / ms(mask[name]), "-", "-"))
for case, label in (("blend", "mask-token blend (128, 2304, 128), peer blend only"),
                    ("blend_cat_pos", "mask-token blend + cls + pos (128, 2304, 128)")):
    b = mask["mask/blend/128_2304_128"]
    p = faster(mask_peers, lambda r: r["case"] == case)
    rows.append((label, f"{ms(b):.2f} ms", f"{p['ms_median']:.2f} ms", p["ms_median"] / ms(b), "-", "-"))
b = mask["mask/l1_loss_fwdbwd/128_3_192_192_p4"]
p = faster(mask_peers, lambda r: r["case"] == "l1_loss_fwdbwd")
rows.append(("masked L1 loss fwd+bwd (128, 3, 192, 192), p 4", f"{ms(b):.2f} ms", f"{p['ms_median']:.2f} ms",
             p["ms_median"] / ms(b), "-", "-"))

attention = ours("attention")
attention_peers = peers("attention")
for (B, H, N, Dh) in ((8, 12, 197, 64), (64, 3, 65, 64), (1, 12, 1024, 64), (256, 4, 36, 32)):
    for mode in ("fwd", "fwdbwd"):
        b = attention[f"attention/{mode}/fused/B{B}_H{H}_N{N}_Dh{Dh}"]
        p = faster(attention_peers, lambda r: r["shape"] == [B, H, N, Dh] and r["mode"] == mode)
        rows.append((f"attention {'fwd' if mode == 'fwd' else 'fwd+bwd'} (B, H, N, Dh) = ({B}, {H}, {N}, {Dh})",
                     f"{ms(b):.2f} ms", f"{p['ms_median']:.2f} ms", p["ms_median"] / ms(b),
                     f"{b['GFLOP/s'] / peak:.0%}", "-"))

print(f"{threads} threads; FP32 FMA peak measured by bench_train_step: {peak:.0f} GFLOP/s. "
      "Median wall times; PyTorch = faster of OPENBLAS_* set / unset; ratio = PyTorch time / ours.\n")
print("| benchmark | ours | PyTorch | ratio | fraction of peak | peak memory ours / PyTorch |")
print("|---|---:|---:|---:|---:|---:|")
for name, o, p, ratio, frac, mem in rows:
    print(f"| {name} | {o} | {p} | {ratio:.2f}x | {frac} | {mem} |")
EOF
