#!/usr/bin/env bash
# memfold train, data parallel: 2 MPI ranks with 1 example each per step against 1 process with
# --batch 2 (and 1 process with --batch 1 --micro-batches 2): the same examples (global samples
# k = 2 step + j), so the same loss curve. Two real chains from shared/data (1GUU A, 1EJG A),
# the tiny config with crop 32, seed 3, N = max(4, 8 x MEMFOLD_TEST_SCALE) steps, one OpenMP
# thread per process (the same arithmetic in every process). Compared per step: loss, every loss
# term, unscaled_loss, recycles, lr, grad_norm, clip_scale, skipped, optimizer_step, within
# |a - b| <= 1e-5 |b| + 1e-30 (fp32: the gradient mean is (g0 + g1) * 0.5 in both, the losses are
# summed in double; a bitwise match is expected and reported, the tolerance allows a different
# order of the MPI sum). Only rank 0 writes the run directory (one record per step).
# Open MPI settings of tests/test_allreduce.c: --oversubscribe --allow-run-as-root, btl self,vader
# without the CMA single-copy mechanism (containers lack the ptrace rights).
set -u
BIN=${MEMFOLD_BIN:?MEMFOLD_BIN is set by ctest}
D=${MEMFOLD_SHARED:?MEMFOLD_SHARED is set by ctest}/data
PY=/usr/bin/python3
SCALE=${MEMFOLD_TEST_SCALE:-1}
MPIRUN=${MPIEXEC:-mpirun}
if ! command -v "$MPIRUN" >/dev/null 2>&1; then
  echo "skip: mpirun is missing (Open MPI's openmpi-bin; scripts/setup installs it)"
  exit 77
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/memfold-cli-train-mpi-XXXXXX")
trap 'rm -rf "$T"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }

if ! "$BIN" train --help >/dev/null 2>&1; then
  echo "FAIL: 'memfold train' is not available in $BIN (mf_cmd_train not registered)"
  exit 1
fi

mkdir -p "$T/s"
ln -s "$D/structures/train/psicov150/1guu.pdb" "$T/s/"
ln -s "$D/structures/train/pdb/1ejg.pdb" "$T/s/"
"$BIN" featurize --structures "$T/s" -o "$T/data.h5" --quiet > "$T/feat.log" 2>&1 \
  || { cat "$T/feat.log"; echo "FAIL: featurize"; exit 1; }

N=$("$PY" -c "print(max(4, round(8 * float('$SCALE'))))")
ARGS=(--data "$T/data.h5" --config tiny --set data.crop_size=32 --seed 3 --steps "$N"
      --progress-every 0)
export OMP_NUM_THREADS=1

"$BIN" train "${ARGS[@]}" --batch 2 -o "$T/one" > "$T/one.out" 2> "$T/one.err"
rc=$?
[ $rc -eq 0 ] && ok "1 process, --batch 2: $N steps" || { cat "$T/one.out" "$T/one.err"; fail "1 process exit $rc"; }

"$BIN" train "${ARGS[@]}" --batch 1 --micro-batches 2 -o "$T/micro" > "$T/micro.out" 2> "$T/micro.err"
rc=$?
[ $rc -eq 0 ] && ok "1 process, --batch 1 --micro-batches 2: $N steps" \
  || { cat "$T/micro.out" "$T/micro.err"; fail "micro-batches exit $rc"; }

ASAN_OPTIONS=detect_leaks=0 "$MPIRUN" -np 2 --oversubscribe --allow-run-as-root \
  --mca btl self,vader --mca btl_vader_single_copy_mechanism none -x OMP_NUM_THREADS \
  -x OMP_WAIT_POLICY "$BIN" train "${ARGS[@]}" --batch 1 -o "$T/mpi" > "$T/mpi.out" 2> "$T/mpi.err"
rc=$?
if [ $rc -eq 0 ]; then
  ok "mpirun -np 2, --batch 1: $N steps"
else
  cat "$T/mpi.out" "$T/mpi.err"
  fail "mpirun exit $rc"
fi
grep -q "2 example(s) per step (batch 1 x 1 micro-batch(es) x 2 rank(s))" "$T/mpi.out" \
  && ok "the MPI run reports 2 ranks x batch 1" || fail "MPI run header: $(head -1 "$T/mpi.out")"
[ "$(grep -c '^memfold train:' "$T/mpi.out")" -eq 1 ] \
  && ok "only rank 0 prints and writes" || fail "more than one rank printed the header"

"$PY" - "$T" "$N" <<'EOF'
import csv, math, sys
T, N = sys.argv[1], int(sys.argv[2])
COLS = ["loss", "distogram", "experimentally_resolved", "fape", "plddt_loss", "masked_msa",
        "supervised_chi", "violation", "unscaled_loss", "recycles", "lr", "grad_norm",
        "clip_scale", "skipped", "optimizer_step"]
RTOL, ATOL = 1e-5, 1e-30
def rows(run):
    return list(csv.DictReader(open(f"{T}/{run}/log.csv")))
ref = rows("one")
bad = 0
for run in ("mpi", "micro"):
    try:
        got = rows(run)
    except OSError as e:
        print(f"FAIL: {run}: {e}"); bad += 1; continue
    if len(got) != N or len(ref) != N:
        print(f"FAIL: {run}: {len(got)} records, the reference {len(ref)}, expected {N}")
        bad += 1
        continue
    worst, bitwise = 0.0, True
    for a, b in zip(got, ref):
        for c in COLS:
            x, y = float(a[c]), float(b[c])
            bitwise = bitwise and a[c] == b[c]
            if not (abs(x - y) <= ATOL + RTOL * abs(y)):
                if bad < 10:
                    print(f"FAIL: {run}: step {a['step']} {c}: {x!r} vs {y!r}")
                bad += 1
            if y != 0:
                worst = max(worst, abs(x - y) / abs(y))
    print(f"{'ok' if not bad else 'FAIL'}: {run} vs 1 process --batch 2: {N} steps x {len(COLS)} "
          f"columns within rtol {RTOL:g}; largest relative difference {worst:.3e}"
          f"{' (bitwise equal)' if bitwise else ''}")
print("losses (1 process --batch 2 | mpirun -np 2 --batch 1):")
got = rows("mpi")
for a, b in zip(ref, got):
    print(f"  step {a['step']}: {a['loss']} | {b['loss']}")
sys.exit(1 if bad else 0)
EOF
[ $? -eq 0 ] || failures=$((failures + 1))

if [ $failures -ne 0 ]; then
  echo "train_mpi: $failures failure(s)"
  exit 1
fi
echo "train_mpi: all checks passed"
