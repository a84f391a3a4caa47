#!/usr/bin/env bash
# memfold featurize --processed end to end: raw features of 4ZEY A and 2CRB A (shared/data
# mmCIFs; each with an HHsearch hit to the other, written here) -> one processed sample, read
# back with /usr/bin/python3 + h5py and with memfold inspect:
#  - a training sample of 4zey_A (--chain) has every dataset of shared/testvectors/features.h5,
#    with the same dtypes, ranks and per_iteration attributes, the recycling axis of length
#    n_recycle_iterations, and its aatype, ground truth and templates equal to the raw
#    features in the crop window;
#  - the loader's sample K (--sample) equals --chain with the sample's own seed, bit for bit;
#  - predict mode: the whole chain, no ground truth, the first N_templ templates;
#  - the FASTA path (inference pipeline) for 2crb_A with the same hit gives the sample of the raw
#    feature file's predict mode bit for bit (templates featurized the same way);
#  - the OpenFold test query with its pdb70 hits and the training mmCIFs as template store: the
#    first N_templ templates, 2CRB's aligned residues and atoms where featurize puts them;
#  - usage errors exit 2, failures exit 1 and leave no file.
set -u
BIN=${MEMFOLD_BIN:?MEMFOLD_BIN is set by ctest}
SH=${MEMFOLD_SHARED:?MEMFOLD_SHARED is set by ctest}
D=$SH/data
REF=$SH/testvectors/features.h5
PY=/usr/bin/python3
if ! "$PY" -c 'import h5py' 2>/dev/null; then
  echo "skip: python3-h5py is missing (scripts/setup installs it): the output cannot be read back"
  exit 77
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/memfold-cli-processed-XXXXXX")
trap 'rm -rf "$T"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }

if ! "$BIN" featurize --processed --help > /dev/null 2>&1; then
  echo "FAIL: 'memfold featurize --processed' is not available in $BIN"
  exit 1
fi

# ---- raw features with one template each ----
mkdir -p "$T/s" "$T/hits"
ln -s "$D/structures/train/mmcif/4zey.cif" "$T/s/"
ln -s "$D/structures/train/mmcif/2crb.cif" "$T/s/"
# 4ZEY A 1-84 against 2CRB A 7-90 (94% identical; 2CRB 2005 is older than 4ZEY 2015).
cat > "$T/hits/4zey_A.hhr" <<'EOF'
Query         4zey_A
Match_columns 84
No_of_seqs    1 out of 1

 No Hit                             Prob E-value P-value  Score    SS Cols Query HMM  Template HMM
  1 2CRB_A nuclear receptor bindin  99.9 1.0E-30 1.0E-34  150.0   0.0   84    1-84      7-90  (97)

No 1
>2CRB_A nuclear receptor binding factor 2
Probab=99.90  E-value=1e-30  Score=150.00  Aligned_cols=84  Identities=94%  Similarity=1.5  Sum_probs=80.5  Template_Neff=6.2

Q 4zey_A            1 GMEGPLNLAHQQSRRADRLLAAGKYEEAISCHKKAAAYLSEAMKLTQSEQAHLSLELQR   59 (84)
T 2CRB_A            7 GMEGPLNLAHQQSRRADRLLAAGKYEEAISCHRKATTYLSEAMKLTESEQAHLSLELQR   65 (97)

Q 4zey_A           60 DSHMKQLLLIQERWKRAQREERLKA   84 (84)
T 2CRB_A           66 DSHMKQLLLIQERWKRAKREERLKA   90 (97)

Done!
EOF
# 2CRB A 32-51 against 4ZEY A 26-45 (as in tests/cli/featurize.sh).
cat > "$T/hits/2crb_A.hhr" <<'EOF'
Query         2crb_A
Match_columns 97
No_of_seqs    1 out of 1

 No Hit                             Prob E-value P-value  Score    SS Cols Query HMM  Template HMM
  1 4ZEY_A nuclear receptor bindin  50.0 1.0E-05 1.0E-09   30.0   0.0   20   32-51     26-45  (84)

No 1
>4ZEY_A nuclear receptor binding factor 2
Probab=50.00  E-value=1e-05  Score=30.00  Aligned_cols=20  Identities=80%  Similarity=1.2  Sum_probs=10.8  Template_Neff=6.2

Q 2crb_A           32 EEAISCHRKATTYLSEAMKL   51 (97)
T 4ZEY_A           26 EEAISCHKKAAAYLSEAMKL   45 (84)

Done!
EOF
"$BIN" featurize --structures "$T/s" --template-hits "$T/hits" \
  --template-mmcif-dir "$D/structures/train/mmcif" --max-template-date 2020-01-01 \
  -o "$T/raw.h5" --quiet > "$T/rawlog" 2>&1
rc=$?
grep -q "templates: 2 written for 2 chains" "$T/rawlog" && [ $rc -eq 0 ] \
  && ok "raw features: 4zey_A and 2crb_A with one template each" \
  || { cat "$T/rawlog"; fail "raw featurize (rc $rc)"; }

# ---- a training sample of 4zey_A ----
# Seed 2: crop [10, 74) of 84, the template kept by subsampling, R = 2 (as features.h5).
"$BIN" featurize --processed "$T/train.h5" --features "$T/raw.h5" --chain 4zey_A --config tiny \
  --seed 2 > "$T/log1" 2>&1
rc=$?
cat "$T/log1"
[ $rc -eq 0 ] && [ -f "$T/train.h5" ] && ok "--chain 4zey_A (tiny, train): exit 0" \
  || fail "--chain 4zey_A: rc $rc"

cat > "$T/check.py" <<'EOF'
import sys
import h5py, numpy as np
path, ref_path, raw_path, chain, mode, want_t = sys.argv[1:7]
f = h5py.File(path, "r"); ref = h5py.File(ref_path, "r"); raw = h5py.File(raw_path, "r")[chain]
errors = []
def check(cond, msg):
    if not cond: errors.append(msg)
R = int(f.attrs["n_recycle_iterations"]); N = int(f.attrs["n_res"])
check(f.attrs["format"] == "memfold-processed-features", "format %s" % f.attrs.get("format"))
check(int(f.attrs["schema_version"]) == 1, "schema_version")
check("recycling_axis_rule" in f.attrs, "recycling_axis_rule attribute")
seq = f.attrs["sequence"]; full = raw.attrs["sequence"]
check(len(seq) == N, "sequence attribute length %d, n_res %d" % (len(seq), N))
start = full.find(seq)
check(start >= 0, "sample sequence is not a window of the chain")
GT = {"all_atom_positions", "all_atom_mask", "resolution", "is_distillation", "use_clamped_fape",
      "pseudo_beta", "pseudo_beta_mask", "chi_angles_sin_cos", "chi_mask",
      "backbone_rigid_tensor", "backbone_rigid_mask"}
GT |= {k for k in ref if k.startswith("atom14_gt") or k.startswith("atom14_alt") or
       k.startswith("rigidgroups_") or k == "atom14_atom_is_ambiguous"}
want = set(ref) if mode == "train" else set(ref) - GT
check(set(f) == want, "names: missing %s, extra %s" % (sorted(want - set(f)), sorted(set(f) - want)))
for k in sorted(want & set(f)):
    d, r = f[k], ref[k]
    check(d.dtype == r.dtype, "%s dtype %s, features.h5 %s" % (k, d.dtype, r.dtype))
    check(d.ndim == r.ndim, "%s rank %d, features.h5 %d" % (k, d.ndim, r.ndim))
    check(int(d.attrs["per_iteration"]) == int(r.attrs["per_iteration"]),
          "%s per_iteration %s" % (k, d.attrs["per_iteration"]))
    if int(d.attrs["per_iteration"]): check(d.shape[0] == R, "%s leading axis %d, R %d" % (k, d.shape[0], R))
    check(np.isfinite(d[()]).all(), "%s: not finite" % k)
# values against the raw features in the window
w = slice(start, start + N)
RT = "ARNDCQEGHILKMFPSTWYVX"
check((f["aatype"][()] == raw["aatype"][w]).all(), "aatype vs raw window")
check("".join(RT[a] for a in f["aatype"][()]) == seq, "aatype vs sequence attribute")
check((f["target_feat"][()][np.arange(N), 1 + f["aatype"][()]] == 1).all(), "target_feat one-hot")
if mode == "train":
    check(np.array_equal(f["all_atom_positions"][()], raw["all_atom_positions"][w]), "ground truth positions vs raw window")
    check(np.array_equal(f["all_atom_mask"][()], raw["all_atom_mask"][w]), "ground truth mask vs raw window")
else:
    check(N == len(full), "predict mode cropped the chain: %d of %d" % (N, len(full)))
HH2RT = [RT.index(c) for c in "ACDEFGHIKLMNPQRSTVWYX"] + [21]
Tn = f["template_mask"].shape[0]
check(Tn == int(want_t), "%d templates, expected %s" % (Tn, want_t))
for t in range(Tn):
    check((f["template_aatype"][t] == np.array(HH2RT)[raw["template_aatype"][t][w]]).all(), "template %d aatype" % t)
    check(np.array_equal(f["template_all_atom_positions"][t], raw["template_all_atom_positions"][t][w]), "template %d positions" % t)
mf = f["msa_feat"][()]
check(mf.shape[-1] == 49 and np.allclose(mf[..., :23].sum(-1)[:, f["msa_mask"][()] > 0], 1), "msa_feat one-hot rows")
print("%s: %d datasets (N %d, R %d, T %d, window [%d, %d) of %d), %d errors" % (path, len(f), N, R, Tn, start, start + N, len(full), len(errors)))
for e in errors[:20]: print("  " + e)
sys.exit(1 if errors else 0)
EOF
"$PY" "$T/check.py" "$T/train.h5" "$REF" "$T/raw.h5" 4zey_A train 1 \
  && ok "h5py: every features.h5 name with its dtype, rank and per_iteration; values from the raw window" \
  || fail "train sample check"

"$BIN" inspect "$T/train.h5" > "$T/inspect.txt" 2>&1
grep -q "^format  *memfold-processed-features" "$T/inspect.txt" \
  && grep -q "msa_feat  *f32 \[" "$T/inspect.txt" \
  && "$BIN" inspect --check "$T/train.h5" > /dev/null 2>&1 \
  && ok "memfold inspect reads the sample (--check: every dataset)" \
  || { cat "$T/inspect.txt"; fail "inspect of the processed file"; }

# ---- the loader's sample K = --chain with the sample's seed ----
"$BIN" featurize --processed "$T/s3.h5" --features "$T/raw.h5" --sample 3 --seed 11 --config tiny \
  > "$T/log2" 2>&1
rc=$?
cat "$T/log2"
chain=$(sed -n 's/.*: chain \([^,]*\), .*/\1/p' "$T/log2" | head -1)
seed=$(sed -n 's/.*sample seed \([0-9]*\);.*/\1/p' "$T/log2" | head -1)
[ $rc -eq 0 ] && [ -n "$chain" ] && [ -n "$seed" ] && ok "--sample 3: chain $chain, sample seed $seed" \
  || fail "--sample 3: rc $rc"
"$BIN" featurize --processed "$T/c3.h5" --features "$T/raw.h5" --chain "${chain:-none}" \
  --seed "${seed:-0}" --config tiny --quiet > /dev/null 2>&1
cat > "$T/same.py" <<'EOF'
import sys
import h5py, numpy as np
a = h5py.File(sys.argv[1], "r"); b = h5py.File(sys.argv[2], "r")
only = sys.argv[3] if len(sys.argv) > 3 else ""
names = [k for k in a if k.startswith(only)]
bad = [k for k in names if k not in b or a[k].dtype != b[k].dtype or a[k].shape != b[k].shape
       or a[k][()].tobytes() != b[k][()].tobytes()]
if not only: bad += sorted(set(b) ^ set(a))
print("%d datasets compared, %d differ %s" % (len(names), len(bad), bad[:10]))
sys.exit(1 if bad or not names else 0)
EOF
"$PY" "$T/same.py" "$T/s3.h5" "$T/c3.h5" && ok "loader sample 3 == --chain $chain --seed $seed, bit for bit" \
  || fail "loader sample differs from the chain's sample with its seed"
"$BIN" featurize --processed "$T/e1.h5" --features "$T/raw.h5" --sample 1 --epoch 1 --seed 11 \
  --config tiny --quiet > /dev/null 2>&1
"$PY" "$T/same.py" "$T/s3.h5" "$T/e1.h5" > /dev/null \
  && ok "--sample 1 --epoch 1 is sample 3 of a 2-chain file" || fail "--epoch"
"$BIN" featurize --processed "$T/s4.h5" --features "$T/raw.h5" --sample 4 --seed 11 --config tiny \
  --quiet > /dev/null 2>&1
rc=$?
[ $rc -eq 0 ] && ! "$PY" "$T/same.py" "$T/s3.h5" "$T/s4.h5" > /dev/null 2>&1 \
  && ok "sample 4 differs from sample 3" || fail "sample 4: rc $rc, or identical to sample 3"

# ---- predict mode from the raw features ----
"$BIN" featurize --processed "$T/pred.h5" --features "$T/raw.h5" --chain 4zey_A --mode predict \
  --config tiny --quiet > /dev/null 2>&1
rc=$?
[ $rc -eq 0 ] && "$PY" "$T/check.py" "$T/pred.h5" "$REF" "$T/raw.h5" 4zey_A predict 1 \
  && ok "predict mode: whole chain, no ground truth, first N_templ templates" || fail "predict mode"

# ---- the FASTA path equals the raw path for the same chain and hit ----
"$PY" -c "
import h5py
print('>2crb_A\n' + h5py.File('$T/raw.h5', 'r')['2crb_A'].attrs['sequence'])" > "$T/2crb.fasta"
"$BIN" featurize --processed "$T/fa.h5" --fasta "$T/2crb.fasta" --template-hits "$T/hits/2crb_A.hhr" \
  --template-mmcif-dir "$D/structures/train/mmcif" --max-template-date 2020-01-01 --config tiny \
  --seed 5 > "$T/log3" 2>&1
rc=$?
cat "$T/log3"
"$BIN" featurize --processed "$T/rp.h5" --features "$T/raw.h5" --chain 2crb_A --mode predict \
  --config tiny --seed 5 --quiet > /dev/null 2>&1
[ $rc -eq 0 ] && grep -q "1 featurized (0 realigned), the first 1 used: 4zey_A" "$T/log3" \
  && "$PY" "$T/same.py" "$T/fa.h5" "$T/rp.h5" \
  && ok "FASTA + hits == raw features (predict mode) of 2crb_A, every dataset bit for bit" \
  || fail "FASTA path vs raw path"

# ---- the OpenFold test query with its pdb70 hits ----
"$BIN" featurize --processed "$T/q73.h5" --fasta "$D/fasta/examples/openfold_short.fasta" \
  --msa "$D/msas/openfold_testquery73/bfd_uniclust_hits.a3m" \
  --template-hits "$D/templates/openfold_testquery73_pdb70_hits.hhr" \
  --template-mmcif-dir "$D/structures/train/mmcif" > "$T/log4" 2>&1
rc=$?
cat "$T/log4"
[ $rc -eq 0 ] && grep -q "7 featurized (0 realigned), the first 4 used: 3u8v_A 2crb_A 4zey_A 1psm_A | unused: 3zee_A 4i6p_A 2q2k_A" "$T/log4" \
  && ok "testquery73: 7 templates featurized, the first 4 used" || fail "testquery73 templates (rc $rc)"
"$PY" - "$T/q73.h5" "$D" <<'EOF' && ok "testquery73: 2CRB residues 32-51 and their atoms at query 11-30" || fail "testquery73 template values"
import sys
import h5py, numpy as np
f = h5py.File(sys.argv[1], "r"); D = sys.argv[2]
RT = "ARNDCQEGHILKMFPSTWYVX-"
bad = []
if f["template_aatype"].shape != (4, 73) or list(f["template_mask"][()]) != [1, 1, 1, 1]:
    bad.append("template shapes %s %s" % (f["template_aatype"].shape, f["template_mask"][()]))
else:
    s = "".join(RT[a] for a in f["template_aatype"][1])
    if s != "-" * 10 + "EEAISCHRKATTYLSEAMKL" + "-" * 43: bad.append("2crb aligned residues " + s)
    m = f["template_all_atom_mask"][1]
    if m[:10].any() or m[30:].any() or not m[10:30, 1].all(): bad.append("2crb atom mask")
    want = None  # 2crb.cif model 1, chain A, GLU 32 CA
    for l in open(D + "/structures/train/mmcif/2crb.cif"):
        w = l.split()
        if w and w[0] == "ATOM" and w[3] == "CA" and w[6] == "A" and w[8] == "32" and w[-1] == "1":
            want = [float(w[10]), float(w[11]), float(w[12])]; break
    got = f["template_all_atom_positions"][1, 10, 1]
    if want is None or not np.allclose(got, want, atol=1e-5, rtol=0): bad.append("CA %s vs %s" % (got, want))
    pbm = f["template_pseudo_beta_mask"][1]
    if pbm[:10].any() or pbm[30:].any() or not pbm[10:30].all(): bad.append("pseudo-beta mask")
print("\n".join(bad))
sys.exit(1 if bad else 0)
EOF

# ---- errors ----
"$BIN" featurize --processed "$T/x.h5" --features "$T/raw.h5" > /dev/null 2>&1; rc=$?
[ $rc -eq 2 ] && ok "--features without --chain/--sample: exit 2" || fail "usage: rc $rc"
"$BIN" featurize --processed "$T/x.h5" --fasta "$T/2crb.fasta" --mode train > /dev/null 2>&1; rc=$?
[ $rc -eq 2 ] && ok "--fasta --mode train: exit 2" || fail "fasta train: rc $rc"
"$BIN" featurize --processed "$T/x.h5" --fasta "$T/2crb.fasta" --template-hits "$T/hits/2crb_A.hhr" \
  --template-mmcif-dir "$D/structures/train/mmcif" --max-template-date 2020-1-1 > /dev/null 2>&1; rc=$?
[ $rc -eq 2 ] && ok "bad --max-template-date: exit 2" || fail "bad date: rc $rc"
"$BIN" featurize --processed "$T/x.h5" --features "$T/raw.h5" --chain 9xyz_A > /dev/null 2> "$T/e1"; rc=$?
[ $rc -eq 1 ] && grep -q "9xyz_A" "$T/e1" && ok "unknown chain: exit 1, $(cat "$T/e1")" || fail "unknown chain: rc $rc"
"$BIN" featurize --processed "$T/x.h5" --features "$REF" --chain x > /dev/null 2> "$T/e2"; rc=$?
[ $rc -eq 1 ] && grep -q "not a memfold raw feature file" "$T/e2" && ok "processed file as raw input refused" \
  || fail "wrong input file: rc $rc $(cat "$T/e2")"
[ ! -e "$T/x.h5" ] && ! ls "$T" | grep -q "x.h5" && ok "no output after failures" || fail "output left behind"

echo "cli featurize --processed: $failures failures"
[ $failures -eq 0 ]
