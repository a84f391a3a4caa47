#!/usr/bin/env bash
# memfold train overfits one real protein: crambin (1EJG A, 46 residues, 0.54 A) from shared/data
# featurized single-sequence into a temporary raw feature file; the tiny config (random AF2
# init, seed 0) with crop 48 (the whole chain; the MSA sampling and BERT masking still change
# every step), no recycling (num_recycle 0), learning rate 3e-3, no gradient clipping,
# unclamped FAPE and the violation weight 0 (AF2's initial-training value); every other loss
# term on with tiny's weights. 400 steps at every MEMFOLD_TEST_SCALE (fewer steps do not get
# there; about 30 s on one thread): the mean FAPE of the last 20 steps must be below half the
# first step's FAPE. Measured here: 1.068 at step 1, first below half at step 256, 0.27 over the
# last 20 steps; validation lDDT-Ca 0.14 -> 0.58. With AF2's per-example clipping at 0.1 the same
# run is still near 0.9 after 300 steps (the clipped gradient's elements are small against Adam's
# eps); with clamped FAPE it falls too, more slowly. Also: no step is skipped, validation lDDT-Ca (EMA weights,
# decay 0.99) is logged every 100 steps, scripts/plot_training.py writes a PNG of the log, and
# memfold predict reads the run's params.h5 + config.json for crambin's sequence (memfold eval
# scores it against 1EJG: printed, not checked).
set -u
BIN=${MEMFOLD_BIN:?MEMFOLD_BIN is set by ctest}
D=${MEMFOLD_SHARED:?MEMFOLD_SHARED is set by ctest}/data
SRC=${MEMFOLD_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
PY=/usr/bin/python3
T=$(mktemp -d "${TMPDIR:-/tmp}/memfold-cli-train-overfit-XXXXXX")
trap 'rm -rf "$T"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }
# One OpenMP thread: the tiny model's ops are too small to share (20 tiny steps took 4.3 s on
# one thread and 25 s on two with OMP_WAIT_POLICY=passive, which ctest sets).
export OMP_NUM_THREADS=1

if ! "$BIN" train --help >/dev/null 2>&1; then
  echo "FAIL: 'memfold train' is not available in $BIN (mf_cmd_train not registered)"
  exit 1
fi

mkdir -p "$T/s"
ln -s "$D/structures/train/pdb/1ejg.pdb" "$T/s/"
"$BIN" featurize --structures "$T/s" -o "$T/data.h5" --quiet > "$T/feat.log" 2>&1 \
  || { cat "$T/feat.log"; echo "FAIL: featurize"; exit 1; }

STEPS=400
start=$(date +%s)
"$BIN" train --data "$T/data.h5" --val "$T/data.h5" --val-every 100 -o "$T/run" --config tiny \
  --seed 0 --steps $STEPS --progress-every 50 \
  --set data.crop_size=48 --set recycling.num_recycle=0 --set optimizer.learning_rate=3e-3 \
  --set optimizer.clip_global_norm=0 --set loss.fape.clamp_fraction=0 \
  --set loss.weights.violation=0 --set optimizer.ema_decay=0.99 > "$T/train.out" 2> "$T/train.err"
rc=$?
secs=$(($(date +%s) - start))
cat "$T/train.out"
[ $rc -eq 0 ] && ok "$STEPS steps in ${secs} s" || { cat "$T/train.err"; fail "train exit $rc"; }

"$PY" - "$T/run/log.csv" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
fape = [float(r["fape"]) for r in rows]
first, last = fape[0], sum(fape[-20:]) / 20
cross = next((int(r["step"]) for r, f in zip(rows, fape) if f < 0.5 * first), None)
print("FAPE every 50 steps: " + " ".join(f"{fape[i]:.3f}" for i in range(0, len(fape), 50)))
print("validation lDDT-Ca: " + " ".join(f"step {r['step']} {float(r['val_lddt_ca']):.3f}"
                                         for r in rows if r["val_lddt_ca"] != "nan"))
bad = 0
if last < 0.5 * first:
    print(f"ok: FAPE {first:.4f} at step 1 -> {last:.4f} (mean of the last 20 steps) < half; "
          f"first below half at step {cross}")
else:
    print(f"FAIL: FAPE {first:.4f} at step 1 -> {last:.4f} (mean of the last 20 steps), not "
          f"below half ({0.5 * first:.4f})")
    bad += 1
skipped = sum(r["skipped"] == "1" for r in rows)
if skipped == 0 and len(rows) == 400:
    print("ok: 400 records, no step skipped")
else:
    print(f"FAIL: {len(rows)} records, {skipped} skipped"); bad += 1
if sum(r["val_lddt_ca"] != "nan" for r in rows) == 4:
    print("ok: validation at steps 100, 200, 300, 400")
else:
    print("FAIL: validation records"); bad += 1
sys.exit(1 if bad else 0)
EOF
[ $? -eq 0 ] || failures=$((failures + 1))

if "$PY" -c 'import matplotlib' 2>/dev/null; then
  if "$PY" "$SRC/scripts/plot_training.py" "$T/run" -o "$T/curves.png" > "$T/plot.out" 2>&1 \
    && [ "$(head -c 8 "$T/curves.png" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ]; then
    ok "plot_training.py: $(cat "$T/plot.out")"
  else
    cat "$T/plot.out"
    fail "plot_training.py did not write a PNG"
  fi
else
  echo "note: python3-matplotlib missing, plot_training.py not run"
fi

seq=$("$PY" - "$T/data.h5" <<'EOF' 2>/dev/null
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    g = f[list(f.keys())[0]]
    print("".join("ARNDCQEGHILKMFPSTWYVX"[a] for a in g["aatype"][()]))
EOF
)
if [ -n "$seq" ]; then
  printf '>1EJG_A crambin\n%s\n' "$seq" > "$T/crambin.fasta"
  if "$BIN" predict --fasta "$T/crambin.fasta" --params "$T/run/params.h5" \
      --config "$T/run/config.json" -o "$T/pred" > "$T/pred.out" 2>&1; then
    ok "memfold predict with the run's params.h5 + config.json: $(grep 'rank 1' "$T/pred.out")"
    "$BIN" eval --pred "$T/pred/params.pdb" --ref "$D/structures/train/pdb/1ejg.pdb" \
      > "$T/eval.out" 2>&1 && sed 's/^/  eval: /' "$T/eval.out" | head -8 \
      || { cat "$T/eval.out"; fail "memfold eval of the prediction"; }
  else
    cat "$T/pred.out"
    fail "memfold predict with the run's parameters"
  fi
else
  echo "note: h5py missing, the prediction check is not run"
fi

if [ $failures -ne 0 ]; then
  echo "train_overfit: $failures failure(s)"
  exit 1
fi
echo "train_overfit: all checks passed"
