#!/usr/bin/env python3
"""Tabulates scripts/run-ablations.sh: one markdown row per ablation (mean over seeds).

Usage: python3 benchmarks/ablation_table.py runs/ablations
Reads <dir>/flags.txt (name + simmim_pretrain flags; the rows "random-init*" are linear probes of
untrained encoders, <dir>/random-init/s<seed>/linprobe, without pretraining), <dir>/<name>/s<seed>/pretrain/metrics.jsonl (final
pretraining loss = mean of the last 5 logged losses), <dir>/<name>/s<seed>/linprobe/summary.json (test
top-1) and <dir>/avgdist_32.csv (exact AvgDist of the official mask generator at 32 px, model patch 4).
Writes the table to stdout and to <dir>/table.md. Standard library only.
"""
import csv
import json
import pathlib
import statistics
import sys


def flag_value(flags, name, default):
    parts = flags.split()
    return type(default)(parts[parts.index(name) + 1]) if name in parts else default


def main():
    root = pathlib.Path(sys.argv[1])
    avgdist = {}
    with open(root / "avgdist_32.csv") as f:
        for row in csv.DictReader(f):
            if row["policy"] == "random_mask_patch":
                avgdist[(int(row["mask_patch"]), round(float(row["ratio"]), 1))] = float(row["avg_dist"])
    lines = ["| ablation | pretrain flags | AvgDist (px, 32 px image) | final pretraining loss | linear-probe top-1 (%) | seeds |",
             "|---|---|---:|---:|---:|---:|"]
    for entry in (root / "flags.txt").read_text().splitlines():
        name, _, flags = entry.partition(" ")
        losses, tops = [], []
        for seed_dir in sorted((root / name).glob("s*")):
            metrics = seed_dir / "pretrain" / "metrics.jsonl"
            summary = seed_dir / "linprobe" / "summary.json"
            if not summary.exists() or (not name.startswith("random-init") and not metrics.exists()):
                continue
            if metrics.exists():
                rows = [json.loads(l) for l in metrics.read_text().splitlines() if l.strip()]
                losses.append(statistics.fmean(r["loss"] for r in rows[-5:]))
            tops.append(100 * json.loads(summary.read_text())["test_top1"])
        if not tops:
            lines.append(f"| {name} | `{flags or '(baseline)'}` | | not run | not run | 0 |")
            continue
        mp, ratio = flag_value(flags, "--mask-patch", 8), flag_value(flags, "--mask-ratio", 0.6)
        ad = avgdist.get((mp, round(ratio, 1))) if not name.startswith("random-init") else None
        ad_s = f"{ad:.2f}" if ad is not None else "-"
        fmt = lambda xs, d: ", ".join(f"{x:.{d}f}" for x in xs) if len(xs) > 1 else f"{xs[0]:.{d}f}"
        mean = lambda xs: statistics.fmean(xs)
        loss_s = "-" if not losses else f"{mean(losses):.4f}" + (f" ({fmt(losses, 4)})" if len(losses) > 1 else "")
        top_s = f"**{mean(tops):.2f}**" + (f" ({fmt(tops, 2)})" if len(tops) > 1 else "")
        lines.append(f"| {name} | `{flags or '(baseline)'}` | {ad_s} | {loss_s} | {top_s} | {len(tops)} |")
    text = "\n".join(lines) + "\n"
    (root / "table.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
