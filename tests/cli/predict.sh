#!/usr/bin/env bash
# memfold predict end to end. The acceptance run: features.h5 + params_af2.npz with 2 structure
# layers and --dump --dump-intermediates; every dataset of expected_outputs.h5 (outputs, sm/ and
# intermediates/<stage>/<tensor> of both iterations) is compared with the dump by an independent
# reader (/usr/bin/python3 + h5py + numpy): max|a-ref|/max|ref| <= the dataset's rtol (1e-4), NaN,
# missing datasets and shape differences fail. Then: --check passes against the reference and
# fails against a perturbed copy; the PDB and mmCIF files read back with gemmi (residues, pLDDT
# B-factors, coordinates = the dump); the JSON records and ranking; two parameter files ranked;
# a pTM model (random init, PAE head) ranked by pTM with its PAE; --recycles 0 reproduces the
# reference's iteration 0; a CASP target FASTA + MSA through the inference pipeline with the tiny
# preset's random AF2 init; the OpenFold test query with template hits (--fasta, tiny preset
# with templates), --recycle-early-stop, the --storage bf16 note; clear errors for a missing feature, missing/unexpected parameters,
# multimer parameters and bad usage.
set -u
BIN=${MEMFOLD_BIN:?MEMFOLD_BIN is set by ctest}
S=${MEMFOLD_SHARED:?MEMFOLD_SHARED is set by ctest}
TV=$S/testvectors
PY=/usr/bin/python3
if ! "$PY" -c 'import h5py, numpy, gemmi' 2>/dev/null; then
  echo "skip: /usr/bin/python3 with h5py, numpy and gemmi is missing (scripts/setup installs them)"
  exit 77
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/memfold-cli-predict-XXXXXX")
trap 'rm -rf "$T"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }

if ! "$BIN" predict --help >/dev/null 2>&1; then
  echo "FAIL: 'memfold predict' is not available in $BIN (mf_cmd_predict not registered)"
  exit 1
fi

# ---- acceptance: the reference model, every output and intermediate ----
if "$BIN" predict --features "$TV/features.h5" --params "$TV/params_af2.npz" --structure-layers 2 \
    --dump "$T/out/dump.h5" --dump-intermediates -o "$T/out" > "$T/acc.log" 2>&1; then
  ok "acceptance run"
else
  fail "acceptance run: $(tail -3 "$T/acc.log")"
fi
if "$PY" - "$TV/expected_outputs.h5" "$T/out/dump.h5" <<'EOF'; then ok "dump == expected_outputs.h5 (every dataset, rtol 1e-4)"; else fail "dump differs from expected_outputs.h5"; fi
import sys, h5py, numpy as np
ref, cand = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
names = []
ref.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
bad, worst = 0, 0.0
for n in sorted(names):
    r = np.asarray(ref[n][()], dtype=np.float64)
    tol = float(ref[n].attrs.get("rtol", 1e-4))
    if n not in cand:
        print(f"  {n}: missing in the dump"); bad += 1; continue
    c = np.asarray(cand[n][()], dtype=np.float64)
    if c.shape != r.shape:
        print(f"  {n}: shape {c.shape} vs {r.shape}"); bad += 1; continue
    scale = np.max(np.abs(r)) if r.size else 0.0
    err = np.max(np.abs(c - r)) if r.size else 0.0
    rel = err / scale if scale > 0 else err
    nan = not np.all(np.isfinite(c))
    ok = not nan and rel <= tol
    worst = max(worst, rel)
    print(f"  {n:64s} {rel:.3e} (tol {tol:.0e}) {'ok' if ok else 'FAIL'}{' NaN' if nan else ''}")
    bad += not ok
print(f"  {len(names)} datasets, {bad} failed, worst {worst:.3e}")
for key in ("final_atom_positions", "plddt", "distogram_logits"):
    r, c = ref[key][()], cand[key][()]
    print(f"  acceptance {key}: {np.max(np.abs(c - r)) / np.max(np.abs(r)):.3e}")
sys.exit(1 if bad or len(names) != 62 else 0)
EOF

# ---- --check: passes against the reference, fails against a perturbed copy ----
if "$BIN" predict --features "$TV/features.h5" --params "$TV/params_af2.npz" --structure-layers 2 \
    --dump-intermediates --check "$TV/expected_outputs.h5" -o "$T/chk" > "$T/chk.log" 2>&1 &&
    grep -q "62 datasets .* 0 failed" "$T/chk.log"; then
  ok "--check against expected_outputs.h5: $(grep '^check:' "$T/chk.log")"
else
  fail "--check against expected_outputs.h5: $(tail -3 "$T/chk.log")"
fi
cp "$TV/expected_outputs.h5" "$T/perturbed.h5" && chmod u+w "$T/perturbed.h5"
"$PY" -c 'import sys, h5py; f = h5py.File(sys.argv[1], "r+"); f["plddt"][3] += 0.5' "$T/perturbed.h5"
if "$BIN" predict --features "$TV/features.h5" --params "$TV/params_af2.npz" --structure-layers 2 \
    --dump-intermediates --check "$T/perturbed.h5" -o "$T/chk2" > "$T/chk2.log" 2>&1; then
  fail "--check passed against a perturbed reference"
elif grep -q "check plddt .*FAIL" "$T/chk2.log" && grep -q "1 of 62 datasets differ" "$T/chk2.log"; then
  ok "--check fails against a perturbed pLDDT (only plddt)"
else
  fail "--check against a perturbed reference: $(tail -3 "$T/chk2.log")"
fi

# ---- structure files and JSON of the acceptance run ----
if "$PY" - "$T/out" "$TV/features.h5" <<'EOF'; then ok "PDB, mmCIF (gemmi), JSON and ranking of the acceptance run"; else fail "acceptance outputs"; fi
import sys, json, h5py, numpy as np, gemmi
out = sys.argv[1]
dump = h5py.File(out + "/dump.h5", "r")
feat = h5py.File(sys.argv[2], "r")
pl, pos, mask = dump["plddt"][()], dump["final_atom_positions"][()], dump["final_atom_mask"][()]
N = pl.shape[0]
seq = feat.attrs["sequence"]
seq = seq.decode() if isinstance(seq, bytes) else seq
res_index = feat["residue_index"][()]
bad = 0
for ext in ("pdb", "cif"):
    st = gemmi.read_structure(f"{out}/params_af2.{ext}")
    ch = st[0][0]
    got = gemmi.one_letter_code([r.name for r in ch])
    n_atoms = sum(len(r) for r in ch)
    ca = np.array([r["CA"][0].pos.tolist() for r in ch])
    bf = np.array([r["CA"][0].b_iso for r in ch])
    nums = np.array([r.seqid.num for r in ch])
    e_ca = np.max(np.abs(ca - pos[:, 1])); e_b = np.max(np.abs(bf - pl))
    good = (len(ch) == N and got == seq and n_atoms == int(mask.sum()) and e_ca <= 1e-3
            and e_b <= 0.006 and np.array_equal(nums, res_index + 1))
    print(f"  {ext}: {len(ch)} residues, {n_atoms} atoms, CA err {e_ca:.1e}, B-factor err {e_b:.1e}, "
          f"numbering {'ok' if np.array_equal(nums, res_index + 1) else 'WRONG'} {'ok' if good else 'FAIL'}")
    bad += not good
j = json.load(open(f"{out}/params_af2.json"))
for k in ("plddt", "mean_plddt", "timings", "memory", "num_recycles", "ptm", "predicted_aligned_error"):
    if k not in j: print(f"  json: key {k} missing"); bad += 1
good = (len(j["plddt"]) == N and np.max(np.abs(np.array(j["plddt"]) - pl)) <= 0.006
        and abs(j["mean_plddt"] - float(np.mean(pl.astype(np.float64)))) <= 1e-4
        and j["num_recycles"] == 1 and j["ptm"] is None and j["predicted_aligned_error"] is None
        and j["memory"]["arena_high_water_bytes"] > 0 and j["memory"]["peak_rss_bytes"] > 0
        and all(s in j["timings"] for s in ("features", "load_params", "embedders", "templates",
                "extra_msa", "evoformer", "structure_module", "heads", "predict")))
print(f"  json: mean pLDDT {j['mean_plddt']:.3f}, num_recycles {j['num_recycles']}, arena "
      f"{j['memory']['arena_high_water_bytes']} B {'ok' if good else 'FAIL'}")
bad += not good
r = json.load(open(f"{out}/ranking.json"))
good = r["order"] == ["params_af2"] and r["ranking_metric"] == "plddt"
print(f"  ranking: {r['order']} by {r['ranking_metric']} {'ok' if good else 'FAIL'}")
bad += not good
sys.exit(1 if bad else 0)
EOF

# ---- two parameter files, ranked ----
ln -s "$TV/params_af2.npz" "$T/model_a.npz"
ln -s "$TV/params_af2.npz" "$T/model_b.npz"
if "$BIN" predict --features "$TV/features.h5" --params "$T/model_a.npz" --params "$T/model_b.npz" \
    --structure-layers 2 -o "$T/two" > "$T/two.log" 2>&1 &&
    "$PY" -c '
import sys, json
r = json.load(open(sys.argv[1] + "/ranking.json"))
a = json.load(open(sys.argv[1] + "/model_a.json")); b = json.load(open(sys.argv[1] + "/model_b.json"))
sys.exit(0 if r["order"] == ["model_a", "model_b"] and a["plddt"] == b["plddt"]
         and set(r["plddts"]) == {"model_a", "model_b"} else 1)' "$T/two" &&
    [ -s "$T/two/model_a.pdb" ] && [ -s "$T/two/model_b.cif" ]; then
  ok "two --params: both written, ranked (ties keep the given order)"
else
  fail "two --params: $(tail -3 "$T/two.log")"
fi

# ---- a pTM model: PAE and pTM in the JSON, ranked by pTM ----
cat > "$T/ptm.json" <<'EOF'
{"base": "tiny", "heads": {"predicted_aligned_error": {"enabled": true}}}
EOF
if "$BIN" predict --features "$TV/features.h5" --random-init 5 --config "$T/ptm.json" --name ptm_model \
    -o "$T/ptm" > "$T/ptm.log" 2>&1 &&
    "$PY" -c '
import sys, json
j = json.load(open(sys.argv[1] + "/ptm_model.json")); r = json.load(open(sys.argv[1] + "/ranking.json"))
pae = j["predicted_aligned_error"]
ok = (j["ptm"] is not None and 0 < j["ptm"] < 1 and len(pae) == 24 and all(len(x) == 24 for x in pae)
      and j["ranking_metric"] == "ptm" and r["ranking_metric"] == "ptm"
      and j["max_predicted_aligned_error"] > 30)
ptm, mx = j["ptm"], j["max_predicted_aligned_error"]
print(f"  pTM {ptm:.4f}, PAE [24][24], max bin {mx}")
sys.exit(0 if ok else 1)' "$T/ptm"; then
  ok "pTM model: PAE and pTM recorded, ranked by pTM"
else
  fail "pTM model: $(tail -3 "$T/ptm.log")"
fi

# ---- --recycles 0: one iteration = the reference's iteration 0 ----
if "$BIN" predict --features "$TV/features.h5" --params "$TV/params_af2.npz" --structure-layers 2 \
    --recycles 0 --dump "$T/r0.h5" -o "$T/r0" > "$T/r0.log" 2>&1 &&
    "$PY" -c '
import sys, json, h5py, numpy as np
d = h5py.File(sys.argv[1], "r"); e = h5py.File(sys.argv[2], "r")
j = json.load(open(sys.argv[3]))
ref = e["intermediates/structure_module/out_frames"][0]
rel = np.max(np.abs(d["sm/frames"][()] - ref)) / np.max(np.abs(ref))
nrec = int(d["num_recycles"][()])
print(f"  sm/frames vs iteration 0: {rel:.2e}, num_recycles {nrec}")
sys.exit(0 if rel <= 1e-4 and int(d["num_recycles"][()]) == 1 and j["num_recycles"] == 0 else 1)' \
      "$T/r0.h5" "$TV/expected_outputs.h5" "$T/r0/params_af2.json"; then
  ok "--recycles 0 reproduces the reference's first iteration"
else
  fail "--recycles 0: $(tail -3 "$T/r0.log")"
fi

# ---- a CASP target through the inference pipeline, tiny preset with random AF2 init ----
FA=$S/data/fasta/examples/T1078.fasta
MSA=$S/data/msas/rosettafold_T1078/T1078.msa0.a3m
if "$BIN" predict --fasta "$FA" --msa "$MSA" --random-init 3 --config tiny --chunk 16 -o "$T/casp" \
    > "$T/casp.log" 2>&1 &&
    "$PY" -c '
import sys, gemmi
for ext in ("pdb", "cif"):
    st = gemmi.read_structure(sys.argv[1] + "/random." + ext)
    ch = st[0][0]
    seq = gemmi.one_letter_code([r.name for r in ch])
    if len(ch) != 138 or not seq.startswith("MAAPTPADKS"): sys.exit(1)
print("  T1078: 138 residues in PDB and mmCIF")' "$T/casp"; then
  ok "--fasta T1078 --msa (tiny, random init): PDB and mmCIF written"
else
  fail "--fasta T1078: $(tail -3 "$T/casp.log")"
fi

# ---- --fasta with template hits (OpenFold test query, tiny preset with templates, random init),
# --recycle-early-stop with a huge tolerance (2 of 4 iterations), --storage bf16's note ----
OF=$S/data/fasta/examples/openfold_short.fasta
if "$BIN" predict --fasta "$OF" --msa "$S/data/msas/openfold_testquery73/bfd_uniclust_hits.a3m" \
    --template-hits "$S/data/templates/openfold_testquery73_pdb70_hits.hhr" \
    --template-mmcif-dir "$S/data/structures/train/mmcif" --max-templates 2 \
    --random-init 3 --config tiny --chunk 16 --recycles 3 --recycle-early-stop 1e9 \
    --storage bf16 -o "$T/tmpl" > "$T/tmpl.log" 2> "$T/tmpl.err" &&
    grep -q "^templates: 7 featurized from .*the first 2 of them in the features (N_templ 2): 3u8v_A 2crb_A" "$T/tmpl.log" &&
    grep -q "iterations 2 (last Calpha distance change .*templates 2 " "$T/tmpl.log" &&
    grep -q "storage bf16 has no effect at inference" "$T/tmpl.err" &&
    "$PY" -c 'import sys, json; sys.exit(0 if json.load(open(sys.argv[1]))["num_recycles"] == 1 else 1)' \
      "$T/tmpl/random.json"; then
  ok "--fasta + --template-hits: $(grep '^templates:' "$T/tmpl.log"); early stop after 2 of 4 iterations; bf16 note"
else
  fail "--fasta + --template-hits: $(cat "$T/tmpl.log" "$T/tmpl.err" | tail -5)"
fi
if "$BIN" predict --fasta "$OF" --template-hits "$S/data/templates/openfold_testquery73_pdb70_hits.hhr" \
    --template-mmcif-dir "$S/data/structures/train/mmcif" --max-template-date 2006-01-01 \
    --random-init 3 --config tiny --chunk 16 --recycles 2 -o "$T/tmpl2" > "$T/tmpl2.log" 2>&1 &&
    grep -q "^templates: 2 featurized .*: 2crb_A 1psm_A" "$T/tmpl2.log" &&
    grep -q "iterations 3  templates 2 " "$T/tmpl2.log" &&
    "$PY" -c 'import sys, json; sys.exit(0 if json.load(open(sys.argv[1]))["num_recycles"] == 2 else 1)' \
      "$T/tmpl2/random.json"; then
  ok "--max-template-date 2006-01-01: 2crb_A 1psm_A; early stop off: all 3 iterations"
else
  fail "--max-template-date: $(tail -3 "$T/tmpl2.log")"
fi
"$BIN" predict --features "$TV/features.h5" --template-hits x.hhr --template-mmcif-dir . \
  --random-init 3 --config tiny -o "$T/e5" > "$T/e5.log" 2>&1
rc=$?
if [ $rc -eq 2 ] && grep -q "need --fasta" "$T/e5.log"; then
  ok "--template-hits without --fasta: usage error"
else
  fail "--template-hits with --features (rc $rc): $(head -2 "$T/e5.log")"
fi

# ---- errors ----
cp "$TV/features.h5" "$T/nomsa.h5" && chmod u+w "$T/nomsa.h5"
"$PY" -c 'import sys, h5py; f = h5py.File(sys.argv[1], "r+"); del f["msa_feat"]' "$T/nomsa.h5"
"$BIN" predict --features "$T/nomsa.h5" --params "$TV/params_af2.npz" --structure-layers 2 -o "$T/e1" \
  > "$T/e1.log" 2>&1
rc=$?
if [ $rc -eq 1 ] && grep -q "'msa_feat' missing" "$T/e1.log"; then
  ok "missing feature named: $(grep -o "features: 'msa_feat'[^;]*" "$T/e1.log" | head -1)"
else
  fail "missing feature (rc $rc): $(cat "$T/e1.log")"
fi
"$PY" - "$TV/params_af2.npz" "$T" <<'EOF'
import sys, numpy as np
p = dict(np.load(sys.argv[1]))
q = dict(p)
del q["alphafold/alphafold_iteration/distogram_head/half_logits//bias"]
q["alphafold/alphafold_iteration/evoformer/unknown_module//weights"] = np.zeros(3, np.float32)
np.savez(sys.argv[2] + "/mismatch.npz", **q)
m = dict(p)
m["alphafold/alphafold_iteration/evoformer/~_relative_encoding/position_activations//weights"] = np.zeros((2, 2), np.float32)
np.savez(sys.argv[2] + "/multimer.npz", **m)
EOF
"$BIN" predict --features "$TV/features.h5" --params "$T/mismatch.npz" --structure-layers 2 -o "$T/e2" \
  > "$T/e2.log" 2>&1
rc=$?
if [ $rc -eq 1 ] && grep -q "1 missing, 1 unexpected" "$T/e2.log" &&
    grep -q "distogram_head/half_logits//bias" "$T/e2.log" && grep -q "unknown_module//weights" "$T/e2.log"; then
  ok "missing and unexpected parameters listed"
else
  fail "parameter mismatch (rc $rc): $(cat "$T/e2.log")"
fi
"$BIN" predict --features "$TV/features.h5" --params "$T/multimer.npz" -o "$T/e3" > "$T/e3.log" 2>&1
rc=$?
if [ $rc -eq 1 ] && grep -q "multimer parameters are not supported" "$T/e3.log"; then
  ok "multimer parameters refused"
else
  fail "multimer parameters (rc $rc): $(cat "$T/e3.log")"
fi
"$BIN" predict --features "$TV/features.h5" --params "$TV/params_af2.npz" > "$T/e4.log" 2>&1
rc=$?
if [ $rc -eq 2 ] && grep -q "\-o OUTDIR is required" "$T/e4.log"; then
  ok "usage error without -o (exit 2)"
else
  fail "usage without -o (rc $rc): $(cat "$T/e4.log")"
fi
# --device cuda where no GPU can be used: a clear error, no structure (tests/cuda/test_cuda_model
# runs the GPU trunk where there is one)
"$BIN" predict --features "$TV/features.h5" --params "$TV/params_af2.npz" --structure-layers 2 \
  --device cuda -o "$T/e5" > "$T/e5.log" 2>&1
rc=$?
if grep -q "trunk on the GPU" "$T/e5.log"; then
  ok "--device cuda ran on a GPU (rc $rc)"
  [ $rc -eq 0 ] || fail "--device cuda on a GPU (rc $rc): $(cat "$T/e5.log")"
elif [ $rc -eq 1 ] && grep -Eq "built without CUDA|no usable GPU" "$T/e5.log" &&
    [ ! -e "$T/e5/params_af2.pdb" ]; then
  ok "--device cuda without a GPU: clear error"
else
  fail "--device cuda without a GPU (rc $rc): $(cat "$T/e5.log")"
fi
"$BIN" predict --features "$TV/features.h5" --params "$TV/params_af2.npz" --gpu-arena-gib 2 \
  -o "$T/e6" > "$T/e6.log" 2>&1
rc=$?
if [ $rc -eq 2 ] && grep -q "\-\-gpu-arena-gib needs --device cuda" "$T/e6.log"; then
  ok "--gpu-arena-gib without --device cuda: usage error"
else
  fail "--gpu-arena-gib without --device cuda (rc $rc): $(cat "$T/e6.log")"
fi
if [ -e "$T/e1/params_af2.pdb" ] || [ -e "$T/e2/mismatch.pdb" ]; then
  fail "a failed run left a structure file"
fi

echo "predict: $failures failure(s)"
[ $failures -eq 0 ]
