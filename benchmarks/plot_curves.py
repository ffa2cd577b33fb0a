#!/usr/bin/python3
"""Plot the masked-L1 loss curves of several pretraining runs (simmim_pretrain or peer_pretrain.py).

    /usr/bin/python3 benchmarks/plot_curves.py --out curves.png --title "vit-t4-32-c1, batch 64" \\
        runs/cpp:simmim runs/peer:PyTorch

Each RUN_DIR holds a metrics.jsonl (one JSON object per logged step with at least "step" and
"loss"); LABEL names it in the legend (default: the directory name). Every run is drawn twice in
one colour: the logged losses as a thin line and their moving average over ~5% of the run's steps
as a thick line (each point of the average is the mean loss and the mean step of a window of
consecutive logged points). Prints each run's final loss (mean of the last 10 logged losses, as
both trainers report it) and the relative difference between the first two runs' final losses.
Needs numpy and matplotlib (Debian: python3-numpy python3-matplotlib).
"""
import argparse
import json
import math
import os
import sys

import numpy as np

FINAL_WINDOW = 10         # logged losses averaged into the final loss
SMOOTH_FRACTION = 0.05    # moving-average window, as a fraction of the run's steps


def parse_run(spec):
    """'RUN_DIR:LABEL' (or 'RUN_DIR') -> (directory, label); the last colon separates the label."""
    directory, sep, label = spec.rpartition(":")
    if not sep or not directory:
        directory, label = spec, ""
    directory = directory.rstrip("/") or "/"
    return directory, label or os.path.basename(os.path.abspath(directory))


def read_metrics(directory):
    """metrics.jsonl of a run -> (steps, losses) as float arrays sorted by step. ValueError naming the
    file and line on anything unreadable; a last line cut short by a crash is ignored."""
    path = os.path.join(directory, "metrics.jsonl")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file (expected the metrics.jsonl of a pretraining run)")
    with open(path) as f:
        lines = f.read().split("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if number >= len(lines) - 1:  # the last line, possibly cut by an interrupted run
                print(f"warning: {path}:{number}: ignoring an incomplete last line", file=sys.stderr)
                break
            raise ValueError(f"{path}:{number}: not valid JSON ({e})") from None
        if not isinstance(row, dict) or "step" not in row or "loss" not in row:
            raise ValueError(f"{path}:{number}: expected an object with 'step' and 'loss', found {line[:80]!r}")
        step, loss = row["step"], row["loss"]
        if not isinstance(step, (int, float)) or not isinstance(loss, (int, float)):
            raise ValueError(f"{path}:{number}: 'step' and 'loss' must be numbers, found {step!r} and {loss!r}")
        rows.append((float(step), float(loss)))
    if not rows:
        raise ValueError(f"{path}: no logged steps")
    rows.sort()
    steps = np.array([s for s, _ in rows])
    losses = np.array([v for _, v in rows])
    return steps, losses


def final_loss(losses):
    """Mean of the last FINAL_WINDOW logged losses (fewer if the run logged fewer)."""
    return float(np.mean(losses[-FINAL_WINDOW:]))


def moving_average(steps, losses):
    """Means of windows of consecutive logged points spanning ~SMOOTH_FRACTION of the run's steps:
    returns (mean step, mean loss) per window position. The window has at least one point."""
    n = len(losses)
    span = steps[-1] - steps[0]
    per_point = span / (n - 1) if n > 1 else 1.0          # steps between logged points
    window = max(1, min(n, int(round(SMOOTH_FRACTION * (span + per_point) / per_point))))
    kernel = np.ones(window) / window
    return np.convolve(steps, kernel, mode="valid"), np.convolve(losses, kernel, mode="valid")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output picture (PNG, or any format matplotlib infers from the suffix)")
    parser.add_argument("--title", default="SimMIM pretraining", help="plot title")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR:LABEL", help="run directory holding metrics.jsonl, and its legend label")
    args = parser.parse_args()

    runs = []
    try:
        for spec in args.runs:
            directory, label = parse_run(spec)
            steps, losses = read_metrics(directory)
            runs.append((label, steps, losses))
    except ValueError as e:
        sys.exit(f"plot_curves: error: {e}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (label, steps, losses) in enumerate(runs):
        colour = colours[index % len(colours)]
        final = final_loss(losses)
        ax.plot(steps, losses, color=colour, linewidth=0.7, alpha=0.35)
        smooth_steps, smooth_losses = moving_average(steps, losses)
        ax.plot(smooth_steps, smooth_losses, color=colour, linewidth=2.2, label=f"{label} (final {final:.4f})")
        print(f"{label}: final loss {final:.4f} (mean of the last {min(FINAL_WINDOW, len(losses))} of "
              f"{len(losses)} logged, steps {int(steps[0])}..{int(steps[-1])})")
    if len(runs) >= 2:
        (label_a, _, losses_a), (label_b, _, losses_b) = runs[0], runs[1]
        a, b = final_loss(losses_a), final_loss(losses_b)
        relative = (b - a) / abs(a) if a != 0 else math.inf
        print(f"relative difference of the final losses, ({label_b} - {label_a}) / {label_a}: {100 * relative:+.2f}%")
    ax.set_xlabel("step")
    ax.set_ylabel("masked L1 loss")
    ax.set_title(args.title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
