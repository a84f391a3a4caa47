#!/usr/bin/env bash
# memfold ablate end to end on a 2-point grid: --baseline "recompute=block" and --grid
# "storage=f32,bf16" (its f32 point is the baseline again and runs once), 4 training steps on the
# 4 shortest PSICOV-150 chains, 2 held-out targets (T1119-D1, 48 residues, the accuracy target;
# T1082, 75); about 10-20 s. Checks: ablate.csv's header (the columns of --help) and 2 rows, every
# number finite (memplan columns: numbers when `memfold memplan` exists, else n/a), the
# baseline's loss deviation and final difference exactly 0 and its prediction equal to itself
# (lDDT-Ca and TM-score 1), the bf16 point's deviation above 0 (bf16 saved activations change
# the gradients from step 1 on) and below 1e-2 and its training arena peak below the
# baseline's (the checkpoints are half the bytes), training RSS above the arena peak, the
# inference arena peak growing with the length (ablate_lengths.csv), lDDT-Ca against the truth
# in [0, 1], ablate.json's per-step losses, the PNGs and report.html, and scripts/check_report
# in headless Chromium (viewer drawn, images, table). Errors: an unknown grid key, a bad value
# and a bad --policy are usage errors (exit 2) naming them; a failing child (memfold train,
# made to fail by an address-space limit its arena cannot be reserved under) stops the run with
# its command and exit status and leaves no report.html. Exit 77 (skip) when /usr/bin/chromium
# is missing, after everything else passed.
set -u
BIN=${MEMFOLD_BIN:?MEMFOLD_BIN is set by ctest}
export MEMFOLD_SHARED=${MEMFOLD_SHARED:?MEMFOLD_SHARED is set by ctest}
SRC=${MEMFOLD_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
export MEMFOLD_SOURCE=$SRC
PY=/usr/bin/python3
if ! "$PY" -c 'import matplotlib' 2>/dev/null; then
  echo "skip: /usr/bin/python3 with matplotlib is missing (scripts/setup installs it)"
  exit 77
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/memfold-cli-ablate-XXXXXX")
trap 'rm -rf "$T"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }

if ! "$BIN" ablate --help >/dev/null 2>&1; then
  echo "FAIL: 'memfold ablate' is not available in $BIN (mf_cmd_ablate not registered)"
  exit 1
fi

# ---- usage errors name what is wrong ----
usage_case() { # usage_case WHAT EXPECTED_TEXT ARGS...
  local what=$1 text=$2
  shift 2
  "$BIN" ablate -o "$T/usage" "$@" > "$T/usage.out" 2>&1
  local rc=$?
  if [ $rc -eq 2 ] && grep -qF -- "$text" "$T/usage.out"; then
    ok "$what: exit 2, names '$text'"
  else
    fail "$what: exit $rc, output: $(head -3 "$T/usage.out")"
  fi
}
usage_case "unknown grid key" "unknown key 'colour'" --grid "chunk=off,16 colour=red,blue"
usage_case "bad grid value" "bad value 'fp8' of key 'storage'" --grid "storage=f32,fp8"
usage_case "bad policy value" "bad value 'sometimes' of key 'recompute'" \
  --policy "recompute=sometimes"
usage_case "list in --policy" "lists go in --grid" --policy "chunk=8,16"
[ ! -e "$T/usage/points" ] && ok "usage errors ran nothing" || fail "a usage error started a run"

# ---- the run ----
A=$T/a
if "$BIN" ablate -o "$A" --baseline "recompute=block" --grid "storage=f32,bf16" --steps 4 \
    --train-chains 4 --targets T1119-D1,T1082 > "$T/run.out" 2> "$T/run.err"; then
  ok "ablate run"
else
  cat "$T/run.out" "$T/run.err"
  fail "ablate run"
fi
sed 's/^/  /' "$T/run.out"
progress=$(grep -c '^ablate \[[12]/2\]' "$T/run.err")
[ "$progress" -eq 2 ] && ok "a progress line per point on stderr" \
  || fail "$progress progress lines on stderr, 2 expected"

if "$BIN" memplan --help > /dev/null 2>&1; then MEMPLAN=1; else MEMPLAN=0; fi
"$PY" - "$A" "$MEMPLAN" <<'EOF' || failures=$((failures + 1))
import csv, json, math, os, sys
out, memplan = sys.argv[1], sys.argv[2] == "1"
bad = []
header = ("point,label,chunk,recompute,storage,compute,offload,steps,train_arena_peak_bytes,"
          "train_rss_peak_bytes,train_memplan_peak_bytes,step_time_median_s,train_wall_s,"
          "final_loss,loss_dev_max_rel,loss_final_diff,skipped_steps,target,nres,"
          "infer_arena_peak_bytes,infer_rss_peak_bytes,infer_memplan_peak_bytes,infer_time_s,"
          "mean_plddt,lddt_ca_vs_base,tm_vs_base,lddt_ca_vs_true,tm_vs_true").split(",")
with open(os.path.join(out, "ablate.csv")) as f:
    rows = list(csv.reader(f))
if rows[0] != header:
    bad.append(f"ablate.csv header {rows[0]}")
rows = [dict(zip(rows[0], r)) for r in rows[1:]]
if len(rows) != 2:
    bad.append(f"{len(rows)} rows, 2 expected")
text = {"label", "chunk", "recompute", "storage", "compute", "offload", "target"}
memcols = {"train_memplan_peak_bytes", "infer_memplan_peak_bytes"}
for r in rows:
    for k, v in r.items():
        if k in text:
            continue
        if k in memcols and not memplan:
            if v != "n/a":
                bad.append(f"point {r['point']} {k} = {v}: no memplan command, n/a expected")
            continue
        try:
            x = float(v)
        except ValueError:
            bad.append(f"point {r['point']} {k} = '{v}' is not a number")
            continue
        if not math.isfinite(x):
            bad.append(f"point {r['point']} {k} = {v} is not finite")
        if k in memcols and not x > 0:
            bad.append(f"point {r['point']} {k} = {v}: memplan gave no positive peak")
b, p = rows[0], rows[1]
f = lambda r, k: float(r[k])
if (b["recompute"], b["storage"], p["recompute"], p["storage"]) != ("block", "f32", "block", "bf16"):
    bad.append(f"points: {b['label']} / {p['label']}, expected recompute=block f32 then bf16")
if f(b, "loss_dev_max_rel") != 0 or f(b, "loss_final_diff") != 0:
    bad.append(f"baseline deviation {b['loss_dev_max_rel']} / {b['loss_final_diff']}, 0 expected")
if f(b, "lddt_ca_vs_base") != 1 or f(b, "tm_vs_base") != 1:
    bad.append(f"baseline vs itself: lDDT-Ca {b['lddt_ca_vs_base']} TM {b['tm_vs_base']}")
if not 0 < f(p, "loss_dev_max_rel") < 1e-2:
    bad.append(f"bf16 storage loss deviation {p['loss_dev_max_rel']}, expected in (0, 1e-2)")
if not f(p, "train_arena_peak_bytes") < f(b, "train_arena_peak_bytes"):
    bad.append(f"bf16 storage arena peak {p['train_arena_peak_bytes']} not below the "
               f"baseline's {b['train_arena_peak_bytes']}")
for r in rows:
    if not f(r, "train_rss_peak_bytes") > f(r, "train_arena_peak_bytes") > 0:
        bad.append(f"point {r['point']}: train RSS {r['train_rss_peak_bytes']} not above the "
                   f"arena peak {r['train_arena_peak_bytes']} > 0")
    if not (0 <= f(r, "lddt_ca_vs_true") <= 1 and 0 < f(r, "tm_vs_true") <= 1):
        bad.append(f"point {r['point']}: vs true lDDT-Ca {r['lddt_ca_vs_true']} TM {r['tm_vs_true']}")
    if not (f(r, "step_time_median_s") > 0 and f(r, "steps") == 4 and r["target"] == "T1119-D1"
            and f(r, "nres") == 48):
        bad.append(f"point {r['point']}: steps {r['steps']} step time {r['step_time_median_s']} "
                   f"target {r['target']} {r['nres']}")
with open(os.path.join(out, "ablate_lengths.csv")) as fh:
    lr = list(csv.DictReader(fh))
if len(lr) != 4:
    bad.append(f"ablate_lengths.csv: {len(lr)} rows, 4 expected")
for pt in ("0", "1"):
    by = {r["target"]: r for r in lr if r["point"] == pt}
    if set(by) != {"T1119-D1", "T1082"}:
        bad.append(f"ablate_lengths.csv point {pt}: targets {sorted(by)}")
    elif not float(by["T1082"]["infer_arena_peak_bytes"]) > float(by["T1119-D1"]["infer_arena_peak_bytes"]):
        bad.append(f"point {pt}: inference arena peak does not grow from 48 to 75 residues")
j = json.load(open(os.path.join(out, "ablate.json")))
if len(j["points"]) != 2 or any(len(pt["train"]["loss"]) != 4 for pt in j["points"]):
    bad.append("ablate.json: 2 points with 4 losses each expected")
elif j["points"][0]["train"]["loss"] == j["points"][1]["train"]["loss"]:
    bad.append("ablate.json: the bf16 point's losses equal the baseline's")
if j["memplan"]["available"] != memplan:
    bad.append(f"ablate.json memplan.available {j['memplan']['available']}")
for name in ("report.html", "memory_vs_length.png", "time_vs_memory.png", "accuracy.png",
             "loss.png", "3Dmol-min.js"):
    if not os.path.getsize(os.path.join(out, name)) > 0:
        bad.append(f"{name} missing or empty")
for m in bad:
    print("FAIL:", m)
print("ok: ablate.csv, ablate_lengths.csv, ablate.json, plots" if not bad else
      f"{len(bad)} check(s) of the outputs failed")
sys.exit(1 if bad else 0)
EOF

# ---- a failing child: its command and status, nothing half-written ----
# The address-space limit leaves memfold ablate itself and featurize room, but memfold train's
# activation arena (a reservation of the physical memory) cannot be mapped under it.
F=$T/f
(ulimit -v 3000000 && "$BIN" ablate -o "$F" --policy "chunk=off" --steps 2 --train-chains 2 \
  --targets T1119-D1 > "$T/fail.out" 2>&1)
rc=$?
if [ $rc -eq 1 ] && grep -q "training (memfold train) failed: exit status 1" "$T/fail.out" \
    && grep -q "command: .*memfold train --data $F/data/train.h5" "$T/fail.out" \
    && [ ! -e "$F/report.html" ] && [ ! -e "$F/ablate.csv" ]; then
  ok "failing child: exit 1 with its command and status, no report.html or ablate.csv"
else
  fail "failing child: exit $rc: $(cat "$T/fail.out")"
fi

# ---- the page in headless Chromium ----
skip=0
if [ -x /usr/bin/chromium ]; then
  if "$SRC/scripts/check_report" "$A/report.html" --screenshot "$T/report.png"; then
    ok "check_report"
  else
    fail "check_report"
  fi
else
  echo "note: /usr/bin/chromium is missing: report.html not checked in a browser"
  skip=1
fi

if [ $failures -ne 0 ]; then
  echo "ablate: $failures failure(s)"
  exit 1
fi
if [ $skip -eq 1 ]; then
  echo "ablate: all other checks passed; skipped the browser check"
  exit 77
fi
echo "ablate: all checks passed"
