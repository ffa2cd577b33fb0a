#!/usr/bin/env python3
"""Tabulate and plot the runs of scripts/run-results.sh: top-1 (mean and spread over seeds) of fine-tuning
and linear probing from a SimMIM-pretrained vs a random encoder, and the accuracy curves.
Usage: plot_results.py RUNS_DIR OUT.png"""
import glob, json, os, statistics, sys

runs, out_png = sys.argv[1], sys.argv[2]
groups = {}
for path in sorted(glob.glob(os.path.join(runs, "*_s*/summary.json"))):
    name = os.path.basename(os.path.dirname(path))
    kind, seed = name.rsplit("_s", 1)
    with open(path) as f:
        groups.setdefault(kind, []).append((int(seed), json.load(f)))
pre = {}
for path in sorted(glob.glob(os.path.join(runs, "pretrain_s*/metrics.jsonl"))):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    pre[path] = rows

print("| protocol | init | seeds | top-1 per seed (%) | mean (%) | spread (max-min) | wall time per run (s) |")
print("|---|---|---|---|---|---|---|")
for kind in ["finetune_pretrained", "finetune_random", "linprobe_pretrained", "linprobe_random"]:
    if kind not in groups:
        continue
    accs = [100 * s["test_top1"] for _, s in groups[kind]]
    walls = [s["wall_s"] for _, s in groups[kind]]
    proto, init = kind.split("_")
    print(f"| {proto} | {init} | {len(accs)} | {', '.join(f'{a:.2f}' for a in accs)} | {statistics.mean(accs):.2f} | "
          f"{max(accs) - min(accs):.2f} | {statistics.mean(walls):.0f} |")

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit("matplotlib missing: apt-get install python3-matplotlib")
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for path, rows in pre.items():
    seed = path.split("_s")[-1].split("/")[0]
    axes[0].plot([r["step"] for r in rows], [r["loss"] for r in rows], label=f"seed {seed}")
axes[0].set(title="SimMIM pretraining", xlabel="step", ylabel="masked L1 loss")
axes[0].legend()
for ax, proto in zip(axes[1:], ["finetune", "linprobe"]):
    for init, style in [("pretrained", "-"), ("random", "--")]:
        for seed, s in groups.get(f"{proto}_{init}", []):
            ax.plot([r["epoch"] for r in s["curve"]], [100 * r["test_top1"] for r in s["curve"]], style, marker="o",
                    label=f"{init}, seed {seed}")
    ax.set(title=f"{proto}: test top-1", xlabel="epoch", ylabel="top-1 (%)")
    ax.legend()
fig.tight_layout()
fig.savefig(out_png, dpi=110)
print(f"wrote {out_png}")
