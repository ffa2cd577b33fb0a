"""Plot AvgDist against the masked fraction from simmim_avgdist CSV files (one panel per file).

    /usr/bin/python3 benchmarks/plot_avgdist.py OUT.png avgdist_224.csv [avgdist_192.csv ...]

Each CSV comes from `simmim_avgdist --csv FILE`. The x axis is the measured mean masked fraction (the
nominal ratio is not what central-square masking or ceil() at coarse grids actually mask); the shaded
band is the AvgDist range [10, 20] px where the SimMIM paper finds the best fine-tuning accuracy.
Cells whose masks had no visible pixel (all_masked > 0) are left out.
"""
import argparse
import csv
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter  # noqa: E402

STYLE = {  # policy -> (line style, marker)
    "random_mask_patch": ("-", "o"),
    "random_tokens": (":", "x"),
    "central_square": ("--", "s"),
    "blockwise": ("-.", "^"),
}


def read_series(path):
    """{series name: (policy, mask_patch, [(fraction, avg_dist)])} in file order."""
    series = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        need = {"policy", "series", "mask_patch", "image_size", "masked_fraction", "avg_dist", "all_masked"}
        missing = need - set(reader.fieldnames or [])
        if missing:
            sys.exit(f"{path}: missing CSV columns {sorted(missing)} (expected the output of simmim_avgdist --csv)")
        image_size = None
        for row in reader:
            image_size = int(row["image_size"])
            entry = series.setdefault(row["series"], (row["policy"], int(row["mask_patch"]), []))
            value = float(row["avg_dist"])
            if int(row["all_masked"]) == 0 and math.isfinite(value):
                entry[2].append((float(row["masked_fraction"]), value))
    if image_size is None:
        sys.exit(f"{path}: no data rows")
    return image_size, series


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="PNG file to write")
    parser.add_argument("csv", nargs="+", help="simmim_avgdist CSV files, one panel each")
    args = parser.parse_args()

    panels = [read_series(p) for p in args.csv]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels) + 2.0, 4.6), squeeze=False, sharey=True)
    patch_sizes = sorted({mp for _, s in panels for pol, mp, _ in s.values() if pol == "random_mask_patch"})
    colors = plt.get_cmap("viridis")
    for ax, (image_size, series) in zip(axes[0], panels):
        ax.axhspan(10, 20, color="0.85", zorder=0, label="paper: best AvgDist 10-20")
        for name, (policy, mask_patch, points) in series.items():
            if not points:
                continue
            xs, ys = zip(*points)
            linestyle, marker = STYLE.get(policy, ("-", "."))
            if policy == "random_mask_patch":
                color = colors(patch_sizes.index(mask_patch) / max(len(patch_sizes) - 1, 1) * 0.9)
            else:
                color = {"random_tokens": "tab:gray", "central_square": "tab:red", "blockwise": "tab:orange"}.get(policy, "k")
            ax.plot(xs, ys, linestyle=linestyle, marker=marker, color=color, label=name, markersize=4)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(FixedLocator([1, 2, 5, 10, 20, 50, 100]))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(0, 1)
        ax.set_xlabel("masked fraction")
        ax.set_title(f"AvgDist at {image_size}x{image_size} px")
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel("AvgDist (pixels)")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(0.86, 0.5))
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.savefig(args.output, dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    main()
