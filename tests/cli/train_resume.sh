#!/usr/bin/env bash
# memfold train: exact resume. Two real chains from shared/data (1GUU A, 52 residues; 1EJG A,
# crambin, 46) featurized into a temporary raw feature file; the tiny config with crop 32, seed 5,
# the memory policy recompute=block, chunk=8 from the configuration, a checkpoint every 2 steps
# (keep 2), validation every 5 steps, and a non-finite gradient
# injected at step 3 (the skipped-step path). N = max(8, 16 x MEMFOLD_TEST_SCALE) steps.
#   A: N steps uninterrupted;
#   B: the same run killed with SIGKILL once step 5 is logged (after the step-4 checkpoint: the
#      resume cuts the log records after its checkpoint), then --resume to N;
#   C: the same run stopped with SIGTERM (a checkpoint at the step it stops at, exit 143), its
#      newest checkpoint then truncated, then --resume (the damaged file is skipped with its
#      reason) to N.
# The logs of B and C equal A's byte for byte once the wall-clock fields are dropped (CSV: the
# last two columns; JSONL: the "wall" object), and the final EMA weights (params.h5) and the last
# checkpoint's parameters, Adam moments and EMA equal A's bit for bit (h5py). Also: step 3 is
# logged as skipped and counted, a fresh run into a directory with checkpoints is refused, and a
# resume with a different configuration is refused.
set -u
BIN=${MEMFOLD_BIN:?MEMFOLD_BIN is set by ctest}
D=${MEMFOLD_SHARED:?MEMFOLD_SHARED is set by ctest}/data
PY=/usr/bin/python3
SCALE=${MEMFOLD_TEST_SCALE:-1}
if ! "$PY" -c 'import h5py, numpy' 2>/dev/null; then
  echo "skip: /usr/bin/python3 with h5py and numpy is missing (scripts/setup installs them)"
  exit 77
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/memfold-cli-train-resume-XXXXXX")
pids=()
trap 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$T"' EXIT
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
ln -s "$D/structures/train/psicov150/1guu.pdb" "$T/s/"
ln -s "$D/structures/train/pdb/1ejg.pdb" "$T/s/"
"$BIN" featurize --structures "$T/s" -o "$T/data.h5" --quiet > "$T/feat.log" 2>&1 \
  || { cat "$T/feat.log"; echo "FAIL: featurize"; exit 1; }

N=$("$PY" -c "print(max(8, round(16 * float('$SCALE'))))")
ARGS=(--data "$T/data.h5" --val "$T/data.h5" --config tiny --set data.crop_size=32 --seed 5
      --set memory.recompute=block --set memory.chunk=8
      --steps "$N" --checkpoint-every 2 --keep 2 --val-every 5 --inject-nan-step 3
      --progress-every 0)
echo "runs of $N steps: ${ARGS[*]}"

# A: uninterrupted
"$BIN" train "${ARGS[@]}" -o "$T/A" > "$T/A.out" 2> "$T/A.err"
rc=$?
[ $rc -eq 0 ] && ok "A: $N steps, exit 0" || { cat "$T/A.out" "$T/A.err"; fail "A exit $rc"; }
grep -q "step 3 skipped: non-finite gradient norm" "$T/A.out" \
  && ok "A: step 3 skipped (non-finite gradient norm) and reported" || fail "A: no skip report"
"$PY" - "$T/A/log.csv" <<'EOF' && ok "A: log.csv marks step 3 skipped, counts 1 skipped step from then on" || fail "A: skip not logged"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
r3 = rows[2]
assert r3["step"] == "3" and r3["skipped"] == "1" and r3["skipped_steps"] == "1", r3
assert rows[1]["skipped_steps"] == "0" and rows[-1]["skipped_steps"] == "1"
assert int(rows[-1]["optimizer_step"]) == len(rows) - 1
assert all(r["val_lddt_ca"] != "nan" for r in rows if int(r["step"]) % 5 == 0)
assert all(r["val_lddt_ca"] == "nan" for r in rows if int(r["step"]) % 5 and r is not rows[-1])
EOF

# B: SIGKILL after the step-4 checkpoint, then --resume
"$BIN" train "${ARGS[@]}" -o "$T/B" > "$T/B1.out" 2> "$T/B1.err" &
pid=$!
pids+=("$pid")
for _ in $(seq 1 3000); do
  [ -f "$T/B/log.csv" ] && [ "$(wc -l < "$T/B/log.csv")" -ge 6 ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.01
done
if kill -9 "$pid" 2>/dev/null; then
  wait "$pid" 2>/dev/null
  steps_done=$(($(wc -l < "$T/B/log.csv") - 1))
  ok "B: killed with SIGKILL after $steps_done logged steps (checkpoints: $(ls "$T/B" | grep -c '^ckpt-'))"
  [ "$steps_done" -lt "$N" ] || fail "B: the run was not stopped mid-way"
else
  fail "B: the run ended before it could be killed"
fi
"$BIN" train "${ARGS[@]}" -o "$T/B" --resume > "$T/B2.out" 2> "$T/B2.err"
rc=$?
[ $rc -eq 0 ] && ok "B: --resume exit 0: $(grep resuming "$T/B2.out")" \
  || { cat "$T/B2.out" "$T/B2.err"; fail "B --resume exit $rc"; }

# C: SIGTERM, then damage the newest checkpoint, then --resume
"$BIN" train "${ARGS[@]}" -o "$T/C" > "$T/C1.out" 2> "$T/C1.err" &
pid=$!
pids+=("$pid")
for _ in $(seq 1 3000); do
  [ -f "$T/C/ckpt-00000002.h5" ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.02
done
kill -TERM "$pid" 2>/dev/null
wait "$pid"
rc=$?
stopped=$(sed -n 's/^stopped by signal 15 after step \([0-9]*\)$/\1/p' "$T/C1.out")
if [ $rc -eq 143 ] && [ -n "$stopped" ] && [ -f "$T/C/$(printf 'ckpt-%08d.h5' "$stopped")" ]; then
  ok "C: SIGTERM: exit 143, stopped after step $stopped with its checkpoint"
else
  cat "$T/C1.out" "$T/C1.err"
  fail "C: SIGTERM: exit $rc, stopped after '${stopped}'"
fi
newest=$(ls "$T/C" | grep '^ckpt-' | sort | tail -1)
size=$(stat -c %s "$T/C/$newest")
truncate -s $((size / 2)) "$T/C/$newest"
"$BIN" train "${ARGS[@]}" -o "$T/C" --resume > "$T/C2.out" 2> "$T/C2.err"
rc=$?
if [ $rc -eq 0 ] && grep -q "skipping .*$newest" "$T/C2.err"; then
  ok "C: --resume skipped the truncated $newest ($(grep -o 'skipping.*' "$T/C2.err" | head -1 | cut -c1-120)) and $(grep resuming "$T/C2.out")"
else
  cat "$T/C2.out" "$T/C2.err"
  fail "C: --resume after damaging $newest: exit $rc"
fi

# the logs and the final state
"$PY" - "$T" <<'EOF'
import json, sys
import h5py, numpy as np
T = sys.argv[1]
bad = 0

def csv_rows(run):
    return [",".join(l.rstrip("\n").split(",")[:-2]) for l in open(f"{T}/{run}/log.csv")]

def json_rows(run):
    out = []
    for l in open(f"{T}/{run}/log.jsonl"):
        r = json.loads(l)
        r.pop("wall")
        out.append(json.dumps(r))
    return out

def h5_items(path, group="/"):
    items = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                items[name] = obj[()]
        f[group].visititems(visit)
    return items

a_csv, a_json = csv_rows("A"), json_rows("A")
for run in ("B", "C"):
    c, j = csv_rows(run), json_rows(run)
    if c == a_csv and j == a_json:
        print(f"ok: {run}: log.csv and log.jsonl ({len(a_csv) - 1} steps, every field but the "
              "wall clock) equal A's byte for byte")
    else:
        bad += 1
        diff = [i for i, (x, y) in enumerate(zip(c, a_csv)) if x != y]
        print(f"FAIL: {run}: logs differ from A's ({len(c)} vs {len(a_csv)} lines; first "
              f"differing line {diff[:1]})")
        for i in diff[:2]:
            print("  A:", a_csv[i][:200]); print(f"  {run}:", c[i][:200])
    for name in ("params.h5", None):
        if name is None:
            import glob
            last = sorted(glob.glob(f"{T}/A/ckpt-*.h5"))[-1].split("/")[-1]
            pa, pb = f"{T}/A/{last}", f"{T}/{run}/{last}"
        else:
            pa, pb = f"{T}/A/{name}", f"{T}/{run}/{name}"
        try:
            x, y = h5_items(pa), h5_items(pb)
        except OSError as e:
            bad += 1
            print(f"FAIL: {run}: cannot read {pb}: {e}")
            continue
        same = x.keys() == y.keys() and all(
            np.array_equal(np.asarray(x[k]).view(np.uint8), np.asarray(y[k]).view(np.uint8))
            for k in x)
        what = pa.split("/")[-1]
        if same:
            print(f"ok: {run}: {what}: all {len(x)} datasets bitwise equal to A's")
        else:
            bad += 1
            print(f"FAIL: {run}: {what} differs from A's")
sys.exit(1 if bad else 0)
EOF
[ $? -eq 0 ] || failures=$((failures + 1))

# refusals
"$BIN" train "${ARGS[@]}" -o "$T/A" > "$T/R1.out" 2> "$T/R1.err"
rc=$?
[ $rc -eq 1 ] && grep -q "give --resume" "$T/R1.err" \
  && ok "a fresh run into a directory with checkpoints is refused: $(cut -c1-140 "$T/R1.err")" \
  || fail "fresh run over checkpoints: exit $rc $(cat "$T/R1.err")"
"$BIN" train "${ARGS[@]}" --steps $((N + 2)) --set optimizer.learning_rate=0.5 -o "$T/A" --resume \
  > "$T/R2.out" 2> "$T/R2.err"
rc=$?
[ $rc -eq 1 ] && grep -q "differs from the checkpoint" "$T/R2.err" \
  && ok "--resume with another learning rate is refused: $(cut -c1-160 "$T/R2.err")" \
  || fail "resume with another config: exit $rc $(cat "$T/R2.err")"

if [ $failures -ne 0 ]; then
  echo "train_resume: $failures failure(s)"
  exit 1
fi
echo "train_resume: all checks passed"
