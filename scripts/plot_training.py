#!/usr/bin/python3
"""Training curves of a memfold run: the loss terms per step and the validation lDDT-Ca, read
from RUN/log.csv (train/train_log.h columns), written as a PNG.

usage: scripts/plot_training.py RUN/ [-o OUT.png] [--smooth N]

Top panel: the total loss and each loss term (AF2 names, unweighted), log scale, as a running
mean over N steps (default: about 1/50 of the run) over the raw values in light colour. Skipped
steps (non-finite loss or gradient) are marked. Bottom panel: the validation lDDT-Ca (EMA weights)
at the steps it was measured, and the mean pLDDT / 100 beside it. Needs matplotlib (Debian
python3-matplotlib; scripts/setup installs it)."""
import argparse
import csv
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Columns of log.csv that are not loss terms (train/train_log.h, train/trainer.h).
NOT_TERMS = {
    "step", "loss", "lr", "grad_norm", "clip_scale", "skipped", "optimizer_step",
    "skipped_steps", "arena_peak_bytes", "step_time_s", "samples_per_s", "recycles",
    "val_lddt_ca", "val_plddt",
}


def number(text):
    try:
        return float(text)
    except ValueError:
        return math.nan


def running_mean(values, n):
    out, window = [], []
    for v in values:
        if math.isfinite(v):
            window.append(v)
        if len(window) > n:
            window.pop(0)
        out.append(sum(window) / len(window) if window else math.nan)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", help="run directory (with log.csv)")
    ap.add_argument("-o", "--output", help="PNG file (default RUN/training.png)")
    ap.add_argument("--smooth", type=int, default=0, help="running-mean window in steps")
    args = ap.parse_args()
    path = os.path.join(args.run, "log.csv")
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        sys.exit(f"plot_training.py: cannot read {path}: {e.strerror}")
    if not rows:
        sys.exit(f"plot_training.py: {path} has no steps")
    columns = list(rows[0].keys())
    for need in ("step", "loss"):
        if need not in columns:
            sys.exit(f"plot_training.py: {path}: no '{need}' column (not a memfold training log)")
    terms = [c for c in columns if c not in NOT_TERMS]
    steps = [int(r["step"]) for r in rows]
    smooth = args.smooth if args.smooth > 0 else max(1, len(rows) // 50)

    fig, (ax, av) = plt.subplots(2, 1, figsize=(9, 8), sharex=True,
                                 gridspec_kw={"height_ratios": [2, 1]})
    cmap = plt.get_cmap("tab10")
    for i, name in enumerate(["loss"] + terms):
        values = [number(r[name]) for r in rows]
        if not any(math.isfinite(v) and v > 0 for v in values):
            continue
        colour = cmap(i % 10)
        ax.plot(steps, values, color=colour, alpha=0.2, linewidth=0.8)
        ax.plot(steps, running_mean(values, smooth), color=colour,
                linewidth=2.0 if name == "loss" else 1.2,
                label="total (scaled)" if name == "loss" else name)
    skipped = [s for s, r in zip(steps, rows) if r.get("skipped") == "1"]
    for s in skipped:
        ax.axvline(s, color="red", alpha=0.3, linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("loss (running mean of %d)" % smooth)
    title = "memfold training: %s, %d steps" % (os.path.basename(os.path.normpath(args.run)),
                                                 steps[-1])
    if skipped:
        title += ", %d skipped (red)" % len(skipped)
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=2)
    ax.grid(True, which="both", alpha=0.3)

    val = [(s, number(r.get("val_lddt_ca", "nan")), number(r.get("val_plddt", "nan")))
           for s, r in zip(steps, rows)]
    val = [v for v in val if math.isfinite(v[1])]
    if val:
        av.plot([v[0] for v in val], [v[1] for v in val], "o-", label="lDDT-Ca (EMA weights)")
        av.plot([v[0] for v in val], [v[2] / 100 for v in val], "s--", alpha=0.7,
                label="mean pLDDT / 100")
        av.legend(fontsize=8)
    else:
        av.text(0.5, 0.5, "no validation in this run (memfold train --val)", ha="center",
                va="center", transform=av.transAxes)
    av.set_ylim(0, 1)
    av.set_xlabel("step")
    av.set_ylabel("validation")
    av.grid(True, alpha=0.3)
    fig.tight_layout()
    out = args.output or os.path.join(args.run, "training.png")
    fig.savefig(out, dpi=100)
    print(f"wrote {out}: {len(rows)} steps, {len(terms)} loss terms, {len(val)} validation points")


if __name__ == "__main__":
    main()
