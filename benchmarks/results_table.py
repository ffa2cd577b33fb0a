#!/usr/bin/env python3
"""Tabulate and plot the runs of scripts/run-results.sh (issue 16, docs/results.md).

Reads OUT/<model>/<run>/result.json (a run is finished only when that file exists; the script writes it
atomically after the program exited 0), or the runs of a summaries file written by --summaries (SOURCE ending in
.jsonl: the committed results of an earlier session), and prints one markdown table: per model, protocol, label fraction
and init, the seeds, top-1 per seed, mean, min/max, and the gap pretrained - random; unfinished runs are
shown as pending (with their last finished epoch when they are under way). Then the compute per stage
(core-hours = wall time x the run's threads, from its result.json; --threads for older results) and the plot of test top-1 against label fraction (pretrained and
random init, fine-tuning lines and linear-probe markers, one colour per model).

Usage: results_table.py SOURCE [SOURCE...] [--png docs/img/results_label_fraction.png] [--summaries FILE.jsonl]
                            [--seeds 1,2,3] [--full-seeds 1] [--threads 2] [--models vit-m4-32-c1,swin-d32-c1]
--summaries writes one JSON line per finished run (its summary without the per-epoch curve, plus the
final metrics row): the small text file committed under benchmarks/results/.
"""
import argparse, json, os, statistics

ap = argparse.ArgumentParser()
ap.add_argument("sources", nargs="+", metavar="SOURCE", help="an OUT directory of run-results.sh or a summaries .jsonl")
ap.add_argument("--png", default=None)
ap.add_argument("--summaries", default=None)
ap.add_argument("--seeds", default="1,2,3")
ap.add_argument("--full-seeds", default="1")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--models", default="vit-m4-32-c1,swin-d32-c1")
a = ap.parse_args()
seeds = [int(s) for s in a.seeds.split(",") if s]
full_seeds = [int(s) for s in a.full_seeds.split(",") if s]
models = [m for m in a.models.split(",") if m]
# (protocol, fraction, seeds); directory names as in scripts/run-results.sh
cells = [("finetune", "0.01", seeds), ("finetune", "0.1", seeds), ("finetune", "1", full_seeds), ("linprobe", "1", seeds)]
prefix = {"finetune": "ft", "linprobe": "lp"}
frac_label = {"0.01": "1% (600)", "0.1": "10% (6,000)", "1": "100% (60,000)"}


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def last_row(path):
    rows = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    break
    except OSError:
        pass
    return rows[-1] if rows else None


def run_state(d):
    """(top-1 or None, result or None, note for a pending run)"""
    r = load(os.path.join(d, "result.json"))
    if r is not None:
        return r.get("test_top1"), r, ""
    if not os.path.isdir(d):
        return None, None, "pending"
    row = last_row(os.path.join(d, "metrics.jsonl"))
    if row and "epoch" in row and "test_top1" in row:
        return None, None, f"running: epoch {row['epoch']}, {100 * row['test_top1']:.2f}%"
    if row and "epoch" in row:
        return None, None, f"running: epoch {row['epoch']}"
    return None, None, "running"


# the finished runs of the summaries files: (model, run) -> summary; directories are read where they are used
from_jsonl, dirs = {}, []
for src in a.sources:
    if src.endswith(".jsonl"):
        with open(src) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    from_jsonl[(r["model"], r["run"])] = r
    else:
        dirs.append(src)


def run_dir(model, run):
    """the run's directory in the first OUT that has it (else in the first OUT, or None)"""
    for d in dirs:
        if os.path.isdir(os.path.join(d, model, run)):
            return os.path.join(d, model, run)
    return os.path.join(dirs[0], model, run) if dirs else None


def result(model, run):
    """(top-1 or None, result or None, note for a pending run); a summaries file's run counts as finished"""
    if (model, run) in from_jsonl:
        r = from_jsonl[(model, run)]
        return r.get("test_top1"), r, ""
    d = run_dir(model, run)
    return run_state(d) if d else (None, None, "pending")


fmt = lambda x: f"{100 * x:.2f}"
present = [m for m in models if any(k[0] == m for k in from_jsonl) or any(os.path.isdir(os.path.join(d, m)) for d in dirs)] or models[:1]
summaries, compute, plot = [], {}, {}
print("| model | protocol | labels | init | seeds done | top-1 per seed (%) | mean (%) | min / max (%) | gap pre - rand (mean, points) |")
print("|---|---|---|---|---|---|---|---|---|")
for model in present:
    pre_dir = run_dir(model, "pretrain")
    pre = from_jsonl.get((model, "pretrain")) or (load(os.path.join(pre_dir, "result.json")) if pre_dir else None)
    if pre is None:
        row = last_row(os.path.join(pre_dir, "metrics.jsonl")) if pre_dir else None
        note = f"running: step {row['step'] + 1}, loss {row['loss']:.4f}" if row else "pending"
        print(f"| {model} | SimMIM pretraining | - | - | - | {note} | | | |")
    else:
        last = pre["last"]
        print(f"| {model} | SimMIM pretraining | - | - | 1 | final masked L1 loss {last['loss']:.4f} (step {last['step'] + 1}) | | | |")
        summaries.append({**pre, "model": model, "run": "pretrain"})
    for proto, frac, ss in cells:
        means = {}
        for init in ["pretrained", "random"]:
            accs, notes = [], []
            for s in ss:
                run = f"{prefix[proto]}_f{frac}_{init}_s{s}"
                top1, r, note = result(model, run)
                if r is not None:
                    accs.append(top1)
                    notes.append(fmt(top1))
                    stage = f"{proto} {frac_label[frac]}"
                    wall, core = compute.get((model, stage), (0.0, 0.0))
                    compute[(model, stage)] = (wall + r.get("wall_s", 0.0), core + r.get("wall_s", 0.0) * r.get("threads", a.threads))
                    s_out = {k: v for k, v in r.items() if k != "curve"}
                    if r.get("curve"):
                        s_out["final"] = r["curve"][-1]
                    summaries.append({**s_out, "model": model, "run": run})
                else:
                    notes.append(f"s{s} {note}")
            if accs:
                means[init] = statistics.mean(accs)
                plot.setdefault((model, proto, init), []).append((float(frac), statistics.mean(accs), min(accs), max(accs)))
            mean = f"**{fmt(statistics.mean(accs))}**" if accs and init == "pretrained" else fmt(statistics.mean(accs)) if accs else "pending"
            mm = f"{fmt(min(accs))} / {fmt(max(accs))}" if len(accs) > 1 else ""
            gap = ""
            if init == "random" and "pretrained" in means and "random" in means:
                gap = f"{100 * (means['pretrained'] - means['random']):+.2f}"
            what = "linear probe (block 4, avg pool)" if proto == "linprobe" and model.startswith("vit") else "linear probe" if proto == "linprobe" else "fine-tune"
            print(f"| {model} | {what} | {frac_label[frac]} | {init} | {len(accs)}/{len(ss)} | {', '.join(notes)} | {mean} | {mm} | {gap} |")
    if pre is not None:
        # pretraining's wall time from its speed: steps x batch / median images_per_s of the logged rows (a
        # checkpoint step is slow); kept in the summary as wall_s, for the tables made from a summaries file
        wall = pre.get("wall_s")
        if wall is None and pre_dir and os.path.isfile(os.path.join(pre_dir, "metrics.jsonl")):
            with open(os.path.join(pre_dir, "metrics.jsonl")) as f:
                rows = [json.loads(l) for l in f if l.strip()]
            wall = (pre["last"]["step"] + 1) * 128 / statistics.median(r["images_per_s"] for r in rows if r.get("images_per_s"))
        if wall is not None:
            summaries[-1]["wall_s"] = wall
            compute[(model, "SimMIM pretraining")] = (wall, wall * pre.get("threads", a.threads))

print()
print("| model | stage (finished runs) | wall time (h) | core-hours |")
print("|---|---|---:|---:|")
total = [0.0, 0.0]
for (model, stage), (wall, core) in compute.items():
    total = [total[0] + wall, total[1] + core]
    print(f"| {model} | {stage} | {wall / 3600:.2f} | {core / 3600:.2f} |")
print(f"| | total (runs in turn; the two lanes overlap) | {total[0] / 3600:.2f} | {total[1] / 3600:.2f} |")

if a.summaries:
    os.makedirs(os.path.dirname(a.summaries) or ".", exist_ok=True)
    with open(a.summaries + ".tmp", "w") as f:
        for s in summaries:
            f.write(json.dumps(s, sort_keys=True) + "\n")
    os.replace(a.summaries + ".tmp", a.summaries)
    print(f"\nwrote {a.summaries} ({len(summaries)} runs)")

if a.png:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {m: c for m, c in zip(models, ["tab:blue", "tab:red", "tab:green", "tab:purple"])}
    for (model, proto, init), pts in sorted(plot.items()):
        pts.sort()
        x = [p[0] * 100 for p in pts]
        y = [p[1] * 100 for p in pts]
        err = [[(p[1] - p[2]) * 100 for p in pts], [(p[3] - p[1]) * 100 for p in pts]]
        style = dict(color=colours.get(model, "k"), capsize=3)
        if proto == "finetune":
            ax.errorbar(x, y, yerr=err, linestyle="-" if init == "pretrained" else "--", marker="o" if init == "pretrained" else "s",
                        mfc="white" if init == "random" else None, label=f"{model} fine-tune, {'SimMIM' if init == 'pretrained' else 'scratch'}", **style)
        else:
            ax.errorbar(x, y, yerr=err, linestyle="none", marker="^" if init == "pretrained" else "v", ms=8,
                        mfc="white" if init == "random" else None, label=f"{model} linear probe, {'SimMIM' if init == 'pretrained' else 'random'}", **style)
    ax.set_xscale("log")
    ax.set_xticks([1, 10, 100])
    ax.set_xticklabels(["1%\n(600)", "10%\n(6,000)", "100%\n(60,000)"])
    ax.set(xlabel="labelled training images (class-balanced subset)", ylabel="Fashion-MNIST test top-1 (%)",
           title="SimMIM pretrained vs scratch (mean, min-max over seeds)")
    ax.grid(True, alpha=0.3)
    if plot:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no finished runs yet", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    fig.savefig(a.png, dpi=110)
    print(f"wrote {a.png}")
