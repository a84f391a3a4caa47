#!/usr/bin/env bash
# memfold train-step end to end. The acceptance run: features.h5 + params_af2.npz with 2 structure
# layers, --dump and --check train_expected.h5 (exit 0, no failed dataset). Then an independent
# reader (/usr/bin/python3 + h5py + numpy) compares the dump with train_expected.h5 by the
# README's metric: every loss/ and loss_unclamped/ term within 1e-4, each of the 336 gradients
# within 1e-3 of max|ref| (the compare = absolute ones against grads.attrs["grad_scale"]), same
# names, shapes and af2_name attributes, NaN failing. Then: --check fails (exit 1) against a copy
# of the reference with one gradient perturbed by 1%; --recompute block writes bitwise the same
# loss and gradients; --set loss.weights.violation=0 removes exactly that term from the total;
# --recycles 0 trains iteration 0 (a different loss); clear errors for a missing label, a missing
# option and an unknown option.
set -u
BIN=${MEMFOLD_BIN:?MEMFOLD_BIN is set by ctest}
S=${MEMFOLD_SHARED:?MEMFOLD_SHARED is set by ctest}
TV=$S/testvectors
PY=/usr/bin/python3
if ! "$PY" -c 'import h5py, numpy' 2>/dev/null; then
  echo "skip: /usr/bin/python3 with h5py and numpy is missing (scripts/setup installs them)"
  exit 77
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/memfold-cli-train-step-XXXXXX")
trap 'rm -rf "$T"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }

if ! "$BIN" train-step --help >/dev/null 2>&1; then
  echo "FAIL: 'memfold train-step' is not available in $BIN (mf_cmd_train_step not registered)"
  exit 1
fi
BASE=(--features "$TV/features.h5" --params "$TV/params_af2.npz" --structure-layers 2)

# ---- acceptance ----
if "$BIN" train-step "${BASE[@]}" --dump "$T/step.h5" --check "$TV/train_expected.h5" \
    > "$T/acc.log" 2>&1; then
  ok "acceptance run: $(grep '^check:' "$T/acc.log")"
else
  fail "acceptance run (exit $?): $(grep -E 'FAIL|error|memfold' "$T/acc.log" | head -5)"
fi
grep -q "^check: 357 datasets .* 0 failed" "$T/acc.log" \
  || fail "the check did not compare 357 datasets without failure"

if "$PY" - "$TV/train_expected.h5" "$T/step.h5" <<'EOF'; then ok "dump == train_expected.h5 (independent reader)"; else fail "dump differs from train_expected.h5"; fi
import sys, h5py, numpy as np
ref, out = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
bad = 0
def rel(c, r, scale=None):
    c, r = np.asarray(c, np.float64), np.asarray(r, np.float64)
    if not np.all(np.isfinite(c)): return np.inf
    d = np.max(np.abs(c - r)) if c.size else 0.0
    s = scale if scale is not None else np.max(np.abs(r))
    return d / s if s > 0 else d
for g in ("loss", "loss_unclamped"):
    for k in ref[g]:
        if k not in out[g]:
            print("missing", g, k); bad += 1; continue
        e = rel(out[g][k][()], ref[g][k][()])
        if not e <= 1e-4: print(g, k, e); bad += 1
scale = float(ref["grads"].attrs["grad_scale"])
absolute = {n.decode() if isinstance(n, bytes) else n for n in ref["compare_absolute"][()]}
worst = 0.0
if set(ref["grads"]) != set(out["grads"]):
    print("gradient names differ:", sorted(set(ref["grads"]) ^ set(out["grads"]))[:5]); bad += 1
for k in ref["grads"]:
    if k not in out["grads"]: continue
    r, c = ref["grads"][k], out["grads"][k]
    name = r.attrs["af2_name"]
    if c.attrs.get("af2_name") != name or name.replace("/", "|") != k:
        print("af2_name", k, c.attrs.get("af2_name")); bad += 1
    if c.shape != r.shape:
        print("shape", k, c.shape, r.shape); bad += 1; continue
    e = rel(c[()], r[()], scale if name in absolute else None)
    worst = max(worst, e)
    if not e <= 1e-3: print(k, e); bad += 1
print("gradients: %d compared, worst %.3e" % (len(ref["grads"]), worst))
sys.exit(1 if bad else 0)
EOF

# ---- --check must fail against a perturbed reference ----
"$PY" - "$TV/train_expected.h5" "$T/perturbed.h5" <<'EOF'
import sys, shutil, h5py
shutil.copy(sys.argv[1], sys.argv[2])
f = h5py.File(sys.argv[2], "r+")
k = "alphafold|alphafold_iteration|evoformer|evoformer_iteration|outer_product_mean||output_w"
f["grads"][k][...] = f["grads"][k][()] * 1.01
EOF
"$BIN" train-step "${BASE[@]}" --check "$T/perturbed.h5" > "$T/perturbed.log" 2>&1
rc=$?
if [ $rc -eq 1 ] && grep -q "outer_product_mean//output_w.*FAIL" "$T/perturbed.log"; then
  ok "--check against a perturbed gradient fails (exit 1, the array named)"
else
  fail "--check against a perturbed reference: exit $rc; $(grep -c FAIL "$T/perturbed.log") FAIL lines"
fi

# ---- recompute block: bitwise the same step ----
if "$BIN" train-step "${BASE[@]}" --recompute block --dump "$T/recompute.h5" > "$T/rc.log" 2>&1 &&
  "$PY" - "$T/step.h5" "$T/recompute.h5" <<'EOF'; then ok "--recompute block: loss and gradients bitwise equal"; else fail "--recompute block differs: $(tail -2 "$T/rc.log")"; fi
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
same = all(np.array_equal(a["loss"][k][()], b["loss"][k][()]) for k in a["loss"])
same = same and all(np.array_equal(a["grads"][k][()], b["grads"][k][()]) for k in a["grads"])
sys.exit(0 if same else 1)
EOF

# ---- --set loss.weights.violation=0 removes the violation term ----
if "$BIN" train-step "${BASE[@]}" --set loss.weights.violation=0 --dump "$T/noviol.h5" \
    > "$T/noviol.log" 2>&1 &&
  "$PY" - "$T/step.h5" "$T/noviol.h5" <<'EOF'; then ok "--set loss.weights.violation=0"; else fail "--set loss.weights.violation=0: $(tail -2 "$T/noviol.log")"; fi
import sys, h5py
a, b = h5py.File(sys.argv[1], "r")["loss"], h5py.File(sys.argv[2], "r")["loss"]
want = float(a["unscaled_loss"][()]) - float(a["violation"][()])
got = float(b["unscaled_loss"][()])
sys.exit(0 if abs(got - want) <= 1e-5 * abs(want) else 1)
EOF

# ---- --recycles 0: iteration 0 trained ----
if "$BIN" train-step "${BASE[@]}" --recycles 0 --dump "$T/r0.h5" > "$T/r0.log" 2>&1 &&
  grep -q "^iterations 1 " "$T/r0.log" &&
  "$PY" - "$T/step.h5" "$T/r0.h5" <<'EOF'; then ok "--recycles 0: one iteration, another loss"; else fail "--recycles 0: $(tail -2 "$T/r0.log")"; fi
import sys, h5py
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
sys.exit(0 if b.attrs["num_iterations"] == 1 and
         float(a["loss/total"][()]) != float(b["loss/total"][()]) else 1)
EOF

# ---- errors ----
"$PY" - "$TV/features.h5" "$T/nobert.h5" <<'EOF'
import sys, shutil, h5py
shutil.copy(sys.argv[1], sys.argv[2])
del h5py.File(sys.argv[2], "r+")["bert_mask"]
EOF
"$BIN" train-step --features "$T/nobert.h5" --params "$TV/params_af2.npz" --structure-layers 2 \
  > "$T/e1.log" 2>&1
rc=$?
if [ $rc -eq 1 ] && grep -q "bert_mask" "$T/e1.log"; then ok "a missing label is named"
else fail "missing bert_mask: exit $rc: $(cat "$T/e1.log" | tail -2)"; fi
"$BIN" train-step --params "$TV/params_af2.npz" > "$T/e2.log" 2>&1
rc=$?
if [ $rc -eq 2 ] && grep -q -- "--features" "$T/e2.log"; then ok "missing --features: usage error"
else fail "missing --features: exit $rc"; fi
"$BIN" train-step "${BASE[@]}" --frobnicate 1 > "$T/e3.log" 2>&1
rc=$?
if [ $rc -eq 2 ] && grep -q "frobnicate" "$T/e3.log"; then ok "unknown option: usage error"
else fail "unknown option: exit $rc"; fi
# ---- --random-init (no parameter file) and --device cuda ----
"$BIN" train-step --features "$TV/features.h5" --random-init 3 --config tiny --dump "$T/rand.h5" \
  > "$T/rand.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "random parameters" "$T/rand.log" &&
    grep -q "gradient global norm" "$T/rand.log"; then ok "--random-init 3 --config tiny"
else fail "--random-init: exit $rc: $(tail -2 "$T/rand.log")"; fi
"$BIN" train-step --features "$TV/features.h5" --random-init 3 > "$T/e4.log" 2>&1
rc=$?
if [ $rc -eq 2 ] && grep -q "needs --config" "$T/e4.log"; then ok "--random-init without --config: usage error"
else fail "--random-init without --config: exit $rc"; fi
"$BIN" train-step "${BASE[@]}" --device cuda > "$T/cuda.log" 2>&1
rc=$?
if grep -q "trunk on the GPU" "$T/cuda.log"; then
  # a GPU (tests/cuda/test_cuda_model checks the numbers)
  if [ $rc -eq 0 ]; then ok "--device cuda ran on a GPU"; else fail "--device cuda on a GPU: exit $rc"; fi
elif [ $rc -eq 1 ] && grep -Eq "built without CUDA|no usable GPU" "$T/cuda.log"; then
  ok "--device cuda without a GPU: clear error"
else fail "--device cuda without a GPU: exit $rc: $(tail -2 "$T/cuda.log")"; fi
# memfold train --device cuda: without a GPU the same clear error, before any data is read
"$BIN" train --data "$T/no-such-data.h5" -o "$T/gpu-run" --device cuda > "$T/train-cuda.log" 2>&1
rc=$?
if [ $rc -eq 1 ] && grep -Eq "built without CUDA|no usable GPU|no-such-data" "$T/train-cuda.log"; then
  ok "train --device cuda: clear error (rc 1)"
else fail "train --device cuda: exit $rc: $(tail -2 "$T/train-cuda.log")"; fi

if [ $failures -gt 0 ]; then
  echo "$failures failure(s)"
  exit 1
fi
echo "all train-step checks passed"
