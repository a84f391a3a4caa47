#!/usr/bin/env python3
"""The report of `memfold ablate`: plots (PNG) and report.html from DIR/ablate.json.

usage: scripts/ablate_report.py DIR [--viewer-js FILE]

Plots (matplotlib, Agg):
  memory_vs_length.png  inference arena peak and process peak RSS against sequence length,
                        one line per policy
  time_vs_memory.png    median training step time against the training arena peak and RSS
  accuracy.png          per policy: loss-trajectory deviation from the baseline, lDDT-Ca and
                        TM-score of the prediction against the baseline's, and the change of
                        lDDT-Ca against the true structure
  loss.png              the loss per step of every policy and its relative deviation
  memplan.png           the memory model's predicted peak against the measured arena peak
                        (only when `memfold memplan` answered)
report.html: the table, the plots and a 3-D view of the baseline's prediction of the accuracy
target, coloured by pLDDT (the B-factor column) with a legend. The viewer is 3Dmol.js, copied
from report/node_modules (scripts/setup runs npm ci there) next to the page, and the PDB text is
embedded in the page, so it opens offline from file://. The page sets
document.body.dataset.viewer to "ready" once the model is drawn (a non-blank canvas), or to
"error: ..."; document.body.dataset.images to "N/M" images loaded. report.html is written under
a temporary name and renamed.
"""
import argparse
import html
import json
import math
import os
import shutil
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MIB = 1024.0 * 1024.0
# pLDDT bands and colours of the AlphaFold Protein Structure Database.
PLDDT_BANDS = [
    (90, "#0053d6", "very high (pLDDT > 90)"),
    (70, "#65cbf3", "confident (70 < pLDDT <= 90)"),
    (50, "#ffdb13", "low (50 < pLDDT <= 70)"),
    (-1, "#ff7d45", "very low (pLDDT <= 50)"),
]


def num(v):
    """A JSON number or None -> float (nan for None)."""
    return float("nan") if v is None else float(v)


def mib(v):
    return num(v) / MIB


def fmt(v, spec):
    v = num(v)
    return "n/a" if math.isnan(v) else format(v, spec)


def legend_inches(n):
    return 0.22 * ((n + 1) // 2) + 0.15


def two_plots(n, height=4.4):
    """Two plots side by side with room under them for a legend of n entries."""
    return plt.subplots(1, 2, figsize=(12, height + legend_inches(n)))


def legend_below(fig, ax, n):
    """One legend for the figure, under its plots (inside, it would hide lines)."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, legend_inches(n) / fig.get_figheight(), 1, 1))


def save(fig, out_dir, name, layout=True):
    path = os.path.join(out_dir, name)
    if layout:
        fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=110)
    plt.close(fig)
    os.replace(path + ".tmp.png", path)
    return name


def plot_memory_vs_length(rep, out_dir):
    fig, (ax1, ax2) = two_plots(len(rep["points"]))
    for p in rep["points"]:
        inf = sorted(p["infer"], key=lambda x: x["nres"])
        n = [x["nres"] for x in inf]
        ax1.plot(n, [mib(x["arena_peak_bytes"]) for x in inf], marker="o", label=p["label"])
        ax2.plot(n, [mib(x["rss_peak_bytes"]) for x in inf], marker="o", label=p["label"])
    ax1.set(xlabel="sequence length (residues)", ylabel="arena peak (MiB)",
            title="inference: activation arena peak")
    ax2.set(xlabel="sequence length (residues)", ylabel="process peak RSS (MiB)",
            title="inference: process peak (ru_maxrss)")
    for ax in (ax1, ax2):
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    legend_below(fig, ax1, len(rep["points"]))
    return save(fig, out_dir, "memory_vs_length.png", layout=False)


def plot_time_vs_memory(rep, out_dir):
    fig, (ax1, ax2) = two_plots(len(rep["points"]))
    for i, p in enumerate(rep["points"]):
        t = p["train"]
        y = num(t["step_time_median_s"])
        for ax, key in ((ax1, "arena_peak_bytes"), (ax2, "rss_peak_bytes")):
            x = mib(t[key])
            ax.scatter([x], [y], s=40, color=f"C{i % 10}", label=p["label"])
            ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax1.set(xlabel="training arena peak (MiB)", ylabel="median step time (s)",
            title="training: time vs arena peak")
    ax2.set(xlabel="training process peak RSS (MiB)", ylabel="median step time (s)",
            title="training: time vs process peak")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
    legend_below(fig, ax1, len(rep["points"]))
    return save(fig, out_dir, "time_vs_memory.png", layout=False)


def plot_accuracy(rep, out_dir):
    pts = rep["points"]
    labels = [f'{p["point"]}: {p["label"]}' for p in pts]
    y = list(range(len(pts)))
    base_true = num(pts[0]["infer"][0]["lddt_ca_vs_true"])
    fig, axes = plt.subplots(1, 3, figsize=(14, 0.45 * len(pts) + 2.2), sharey=True)
    dev = [num(p["train"]["loss_dev_max_rel"]) for p in pts]
    axes[0].barh(y, [d if d > 0 else 0 for d in dev], color="C0")
    if any(d > 0 for d in dev):
        axes[0].set_xscale("log")
    for yi, d in zip(y, dev):
        if d == 0:
            axes[0].annotate("0 (identical)", (0, yi), xytext=(3, -3), textcoords="offset points",
                             fontsize=7, xycoords=("axes fraction", "data"))
    axes[0].set(xlabel="max |loss - loss_base| / |loss_base|", title="loss trajectory")
    w = 0.38
    lb = [1.0 - num(p["infer"][0]["lddt_ca_vs_base"]) for p in pts]
    tb = [1.0 - num(p["infer"][0]["tm_vs_base"]) for p in pts]
    axes[1].barh([v - w / 2 for v in y], lb, height=w, label="1 - lDDT-Ca", color="C1")
    axes[1].barh([v + w / 2 for v in y], tb, height=w, label="1 - TM-score", color="C2")
    axes[1].set(xlabel="distance from the baseline's prediction",
                title=f'prediction vs baseline ({rep["targets"][0]["name"]})')
    axes[1].legend(fontsize=7)
    dt = [num(p["infer"][0]["lddt_ca_vs_true"]) - base_true for p in pts]
    axes[2].barh(y, [0 if math.isnan(v) else v for v in dt], color="C3")
    axes[2].axvline(0, color="k", lw=0.8)
    axes[2].set(xlabel="lDDT-Ca vs true structure, minus the baseline's",
                title="accuracy change" + (" (no true structure)" if math.isnan(base_true) else ""))
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(labels, fontsize=8)
    axes[0].invert_yaxis()
    for ax in axes:
        ax.grid(True, axis="x", alpha=0.3)
    return save(fig, out_dir, "accuracy.png")


def plot_loss(rep, out_dir):
    fig, (ax1, ax2) = two_plots(len(rep["points"]))
    base = [num(v) for v in rep["points"][0]["train"]["loss"]]
    for p in rep["points"]:
        loss = [num(v) for v in p["train"]["loss"]]
        steps = range(1, len(loss) + 1)
        ax1.plot(steps, loss, lw=1, label=p["label"])
        dev = [abs(a - b) / abs(b) if b else float("nan") for a, b in zip(loss, base)]
        ax2.plot(steps, [d if d > 0 else float("nan") for d in dev], lw=1, label=p["label"])
    ax1.set(xlabel="step", ylabel="loss", title="training loss")
    ax2.set(xlabel="step", ylabel="|loss - loss_base| / |loss_base|",
            title="deviation from the baseline (0 not drawn)")
    if ax2.has_data():
        ax2.set_yscale("log")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
    legend_below(fig, ax1, len(rep["points"]))
    return save(fig, out_dir, "loss.png", layout=False)


def plot_memplan(rep, out_dir):
    pairs = []  # (measured, predicted, mode)
    for p in rep["points"]:
        t = p["train"]
        if t.get("memplan_peak_bytes") is not None:
            pairs.append((mib(t["arena_peak_bytes"]), mib(t["memplan_peak_bytes"]), "train"))
        for x in p["infer"]:
            if x.get("memplan_peak_bytes") is not None:
                pairs.append((mib(x["arena_peak_bytes"]), mib(x["memplan_peak_bytes"]), "infer"))
    if not pairs:
        return None
    fig, ax = plt.subplots(figsize=(6, 5.5))
    for mode, colour in (("train", "C0"), ("infer", "C1")):
        xs = [a for a, _, m in pairs if m == mode]
        ys = [b for _, b, m in pairs if m == mode]
        if xs:
            ax.scatter(xs, ys, s=25, color=colour, label=mode)
    lo = min(min(a, b) for a, b, _ in pairs if a > 0 and b > 0) * 0.8
    hi = max(max(a, b) for a, b, _ in pairs) * 1.2
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="predicted = measured")
    ax.set(xscale="log", yscale="log", xlabel="measured arena peak (MiB)",
           ylabel="memplan peak_bytes (MiB)", title="memory model vs measurement")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, out_dir, "memplan.png")


def viewer_js_source(explicit):
    if explicit:
        return explicit
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "report", "node_modules", "3dmol", "build", "3Dmol-min.js")


def table_html(rep):
    cols = [
        ("#", lambda p, i: str(p["point"])),
        ("policy", lambda p, i: p["label"]),
        ("train arena peak (MiB)", lambda p, i: fmt(mib(p["train"]["arena_peak_bytes"]), ".2f")),
        ("train RSS peak (MiB)", lambda p, i: fmt(mib(p["train"]["rss_peak_bytes"]), ".1f")),
        ("memplan train (MiB)", lambda p, i: fmt(mib(p["train"]["memplan_peak_bytes"]), ".2f")),
        ("step time (s, median)", lambda p, i: fmt(p["train"]["step_time_median_s"], ".4f")),
        ("final loss", lambda p, i: fmt(p["train"]["final_loss"], ".4f")),
        ("loss dev (max rel)", lambda p, i: fmt(p["train"]["loss_dev_max_rel"], ".2e")),
        ("final loss diff", lambda p, i: fmt(p["train"]["loss_final_diff"], "+.2e")),
        ("infer arena peak (MiB)", lambda p, i: fmt(mib(i["arena_peak_bytes"]), ".2f")),
        ("infer RSS peak (MiB)", lambda p, i: fmt(mib(i["rss_peak_bytes"]), ".1f")),
        ("memplan infer (MiB)", lambda p, i: fmt(mib(i["memplan_peak_bytes"]), ".2f")),
        ("lDDT-Ca vs base", lambda p, i: fmt(i["lddt_ca_vs_base"], ".4f")),
        ("TM vs base", lambda p, i: fmt(i["tm_vs_base"], ".4f")),
        ("lDDT-Ca vs true", lambda p, i: fmt(i["lddt_ca_vs_true"], ".4f")),
        ("TM vs true", lambda p, i: fmt(i["tm_vs_true"], ".4f")),
    ]
    rows = ["<table id=\"ablate-table\">", "<thead><tr>"]
    rows += [f"<th>{html.escape(c)}</th>" for c, _ in cols]
    rows.append("</tr></thead><tbody>")
    for p in rep["points"]:
        i = p["infer"][0]
        cls = ' class="baseline"' if p["point"] == rep["baseline"] else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(f(p, i))}</td>" for _, f in cols)
                    + "</tr>")
    rows.append("</tbody></table>")
    return "\n".join(rows)


PAGE_SCRIPT = r"""
(function () {
  var body = document.body;
  function fail(msg) { body.dataset.viewer = "error: " + msg; }
  // images: "loaded/total" once every one has settled
  var imgs = Array.prototype.slice.call(document.querySelectorAll("img"));
  function countImages() {
    var done = imgs.filter(function (i) { return i.complete; }).length;
    var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
    if (done === imgs.length) body.dataset.images = ok + "/" + imgs.length;
  }
  imgs.forEach(function (i) { i.addEventListener("load", countImages);
                              i.addEventListener("error", countImages); });
  countImages();
  var bands = BANDS;
  function colour(b) {
    for (var k = 0; k < bands.length; k++) if (b > bands[k][0]) return bands[k][1];
    return bands[bands.length - 1][1];
  }
  try {
    if (typeof $3Dmol === "undefined") { fail("3Dmol.js did not load"); return; }
    var pdb = JSON.parse(document.getElementById("pdb-data").textContent);
    var el = document.getElementById("viewer");
    var v = $3Dmol.createViewer(el, { backgroundColor: "white", preserveDrawingBuffer: true });
    if (!v) { fail("3Dmol could not create a WebGL viewer"); return; }
    var model = v.addModel(pdb, "pdb");
    var atoms = model.selectedAtoms({});
    if (!atoms.length) { fail("the PDB text gave no atoms"); return; }
    v.setStyle({}, { cartoon: { colorfunc: function (a) { return colour(a.b); } } });
    v.zoomTo();
    v.render();
    // "drawn" means pixels that are not the white background
    var img = new Image();
    img.onload = function () {
      var c = document.createElement("canvas");
      c.width = img.width; c.height = img.height;
      var g = c.getContext("2d");
      g.drawImage(img, 0, 0);
      var d = g.getImageData(0, 0, c.width, c.height).data, n = 0;
      for (var k = 0; k < d.length; k += 4)
        if (d[k + 3] > 0 && (d[k] < 240 || d[k + 1] < 240 || d[k + 2] < 240)) n++;
      body.dataset.viewerPixels = String(n);
      if (n > 0) body.dataset.viewer = "ready";
      else fail("the viewer's canvas is blank");
    };
    img.onerror = function () { fail("could not read the viewer's canvas"); };
    img.src = v.pngURI();
    body.dataset.atoms = String(atoms.length);
  } catch (e) {
    fail(e && e.message ? e.message : String(e));
  }
})();
"""

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border: 1px solid #bbb; padding: 3px 6px; text-align: right; }
th { background: #eee; }
td:nth-child(2) { text-align: left; white-space: nowrap; }
tr.baseline td { background: #f3f8ff; }
figure { margin: 1em 0; }
figcaption { font-size: 13px; color: #444; max-width: 70em; }
img { max-width: 100%; border: 1px solid #ddd; }
#viewer { width: 720px; height: 520px; position: relative; border: 1px solid #ccc; }
.legend span.swatch { display: inline-block; width: 14px; height: 14px; margin: 0 4px 0 12px;
                      vertical-align: middle; border: 1px solid #888; }
.note { font-size: 13px; color: #555; }
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", help="the -o DIR of memfold ablate (holds ablate.json)")
    ap.add_argument("--viewer-js", help="3Dmol-min.js to copy (default: report/node_modules)")
    args = ap.parse_args()
    out = args.dir
    with open(os.path.join(out, "ablate.json")) as f:
        rep = json.load(f)
    if not rep.get("points"):
        sys.exit(f"{out}/ablate.json: no points")

    js = viewer_js_source(args.viewer_js)
    if not os.path.isfile(js):
        sys.exit(f"ablate_report: {js} is missing: run scripts/setup (npm ci in report/) "
                 "to install 3Dmol.js")
    shutil.copyfile(js, os.path.join(out, "3Dmol-min.js"))
    lic = js + ".LICENSE.txt"
    if os.path.isfile(lic):
        shutil.copyfile(lic, os.path.join(out, "3Dmol-min.js.LICENSE.txt"))

    plots = [
        (plot_memory_vs_length(rep, out),
         "Memory vs sequence length: inference of the held-out targets with each policy's "
         "chunk and compute settings (arena: the activation arena's high-water mark; RSS: the "
         "predict process's peak resident set)."),
        (plot_time_vs_memory(rep, out),
         "Median training step time against the training peaks (numbers: the table's #)."),
        (plot_accuracy(rep, out),
         "Accuracy deltas: the loss trajectory's largest relative deviation from the baseline, "
         "the prediction's distance from the baseline's prediction, and the change of lDDT-Ca "
         "against the true structure."),
        (plot_loss(rep, out), "Loss per step and its relative deviation from the baseline."),
    ]
    mp = plot_memplan(rep, out)
    if mp:
        plots.append((mp, "The memory model (memfold memplan) against the measured arena "
                          "peaks, training and inference."))

    base = rep["points"][rep["baseline"]]
    target = rep["targets"][0]
    pdb_rel = base["infer"][0]["pdb"]
    with open(os.path.join(out, pdb_rel) if not os.path.isabs(pdb_rel) else pdb_rel) as f:
        pdb_text = f.read()

    mp_note = ("" if rep["memplan"]["available"] else
               f'<p class="note">Memory model: n/a ({html.escape(rep["memplan"]["note"])}).</p>')
    targets = ", ".join(f'{t["name"]} ({t["nres"]})' for t in rep["targets"])
    legend = "".join(f'<span class="swatch" style="background:{c}"></span>{html.escape(n)}'
                     for _, c, n in PLDDT_BANDS)
    bands_js = json.dumps([[b, c] for b, c, _ in PLDDT_BANDS])
    page_script = PAGE_SCRIPT.replace("BANDS", bands_js)
    # the PDB text as a JSON string; "</" escaped so that it cannot end the script element
    pdb_json = json.dumps(pdb_text).replace("</", "<\\/")
    figures = "\n".join(
        f'<figure><img src="{html.escape(n)}" alt="{html.escape(n)}">'
        f"<figcaption>{html.escape(c)}</figcaption></figure>" for n, c in plots)
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>memfold ablate: {len(rep["points"])} memory policies</title>
<style>{STYLE}</style>
<script src="3Dmol-min.js"></script>
</head>
<body data-viewer="loading" data-images="0/0">
<h1>memfold ablate</h1>
<p>{len(rep["points"])} memory policies, each trained for {rep["steps"]} steps (config
{html.escape(str(rep["config"]))}, seed {rep["seed"]}, {html.escape(rep["train_data"])}) and
predicted on {html.escape(targets)}; the accuracy target is {html.escape(target["name"])}.
Baseline: #{rep["baseline"]} ({html.escape(base["spec"])}). Run time {rep["wall_s"]:.0f} s,
{html.escape(rep["tool"])}. Data: <a href="ablate.csv">ablate.csv</a>,
<a href="ablate_lengths.csv">ablate_lengths.csv</a>, <a href="ablate.json">ablate.json</a>.</p>
{mp_note}
<h2>Policies</h2>
{table_html(rep)}
<p class="note">Peaks: arena = the activation arena's high-water mark (training: the largest
over the steps); RSS = the child process's ru_maxrss. Inference columns are for
{html.escape(target["name"])} ({target["nres"]} residues).</p>
<h2>Plots</h2>
{figures}
<h2>Baseline prediction of {html.escape(target["name"])}</h2>
<div id="viewer"></div>
<p class="legend">Coloured by pLDDT (B-factor column):{legend}</p>
<script id="pdb-data" type="application/json">{pdb_json}</script>
<script>{page_script}</script>
</body>
</html>
"""
    path = os.path.join(out, "report.html")
    with open(path + ".tmp", "w") as f:
        f.write(page)
    os.replace(path + ".tmp", path)
    print(f"report: {path} ({len(plots)} plots)")


if __name__ == "__main__":
    main()
