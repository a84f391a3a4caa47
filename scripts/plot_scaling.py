#!/usr/bin/env python3
"""Plots bench/scaling_study's CSV: measured arena peak and process peak RSS against N_res, the
memory model's predictions (1 block per stack, and the full 48+4 blocks), and the 24 GiB line.

usage: plot_scaling.py scaling.csv out.png [max_nres.json]"""
import csv
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GIB = float(1 << 30)


def main():
    rows = list(csv.DictReader(open(sys.argv[1])))
    if not rows:
        sys.exit("plot_scaling.py: no rows in " + sys.argv[1])
    n = [int(r["n_res"]) for r in rows]
    # an empty cell (the 48-block model where it does not fit the budget) plots as a gap
    col = lambda k: [float(r[k]) / GIB if r[k] else float("nan") for r in rows]  # noqa: E731
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.8))
    a = ax[0]
    a.plot(n, col("arena_peak_bytes"), "o-", label="arena peak, measured")
    a.plot(n, col("peak_rss_bytes"), "s-", label="process peak RSS, measured")
    a.plot(n, col("predicted_arena_bytes"), "x--", label="arena peak, memory model (1 block)")
    a.plot(n, col("predicted_arena_48_bytes"), "+:", label="arena peak, memory model (48+4 blocks)")
    a.plot(n, col("predicted_total_bytes"), "d--", alpha=0.6,
           label="total, memory model (+ parameters, features)")
    a.axhline(24, color="red", lw=1, label="24 GiB (this machine)")
    if len(sys.argv) > 3:
        mx = json.load(open(sys.argv[3]))
        if mx.get("max_nres"):
            a.axvline(mx["max_nres"], color="gray", ls="--", lw=1)
            a.annotate("model: largest N_res in %g GiB = %d" % (mx.get("budget_gib", 24),
                                                                 mx["max_nres"]),
                       (mx["max_nres"], 1), rotation=90, va="bottom", ha="right", fontsize=8)
    a.set_xscale("log", base=2)
    a.set_yscale("log", base=2)
    a.set_xlabel("N_res")
    a.set_ylabel("GiB")
    a.set_title("Inference memory, full AF2 channels, chunk %s" % rows[0]["chunk"])
    a.legend(fontsize=7)
    a.grid(True, which="both", alpha=0.3)
    b = ax[1]
    b.plot(n, [float(r["t_predict_s"]) for r in rows], "o-", label="1 block per stack, measured")
    b.plot(n, [float(r["t_full_depth_extrapolated_s"]) for r in rows], "s--",
           label="48 + 4 blocks, EXTRAPOLATED from the 1-block times")
    b.set_xscale("log", base=2)
    b.set_yscale("log")
    b.set_xlabel("N_res")
    b.set_ylabel("seconds")
    threads = sorted({r["threads"] for r in rows})
    b.set_title("Inference time (OpenMP threads: %s)" % ", ".join(
        "%s at N_res %s" % (t, ",".join(r["n_res"] for r in rows if r["threads"] == t))
        for t in threads) if len(threads) > 1 else "Inference time (OpenMP threads: %s)" % threads[0])
    b.legend(fontsize=7)
    b.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
