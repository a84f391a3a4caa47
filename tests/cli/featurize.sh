#!/usr/bin/env bash
# memfold featurize and memfold inspect end to end, on a directory of links to shared/data
# structures (mmCIF, gzipped mmCIF, PDB, gzipped CA-only PDB, multi-model NMR, CASP with a blank
# chain id, a header-less Pfam domain) plus a malformed file, with OpenFold's MSAs for 2Q2K and a
# template hit for 2CRB. The output is read with /usr/bin/python3 + h5py (another HDF5 reader):
# schema, dtypes, shapes, filters, values against the structure files' text and an independent
# MSA merge. Then: killing the run midway (SIGKILL, SIGTERM) leaves no output file, every
# structure of shared/data featurizes, the filters report their reasons, and inspect summarizes
# a feature file and refuses non-memfold, truncated and damaged files.
set -u
BIN=${MEMFOLD_BIN:?MEMFOLD_BIN is set by ctest}
D=${MEMFOLD_SHARED:?MEMFOLD_SHARED is set by ctest}/data
PY=/usr/bin/python3
if ! "$PY" -c 'import h5py' 2>/dev/null; then
  echo "skip: python3-h5py is missing (scripts/setup installs it): the output cannot be read back"
  exit 77
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/memfold-cli-featurize-XXXXXX")
trap 'rm -rf "$T"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }

if ! "$BIN" featurize --help >/dev/null 2>&1; then
  echo "FAIL: 'memfold featurize' is not available in $BIN (mf_cmd_featurize not registered)"
  exit 1
fi

# ---- the small set ----
mkdir -p "$T/s/sub" "$T/msa" "$T/hits"
ln -s "$D/structures/train/mmcif/2q2k.cif" "$T/s/"
ln -s "$D/structures/train/mmcif/1a7g.cif.gz" "$T/s/"
ln -s "$D/structures/train/mmcif/2crb.cif" "$T/s/"
ln -s "$D/structures/train/pdb/1ubq.pdb" "$T/s/"
ln -s "$D/structures/train/pdb/1d3z.pdb" "$T/s/sub/"
ln -s "$D/structures/train/pdb/1lzh.pdb.gz" "$T/s/sub/"
ln -s "$D/structures/eval/casp14/T1024.pdb" "$T/s/sub/"
ln -s "$D/structures/train/pfam_domains/1AQT_A.pdb" "$T/s/sub/"
printf 'data_BROKEN\nloop_\n_atom_site.group_PDB\n_atom_site.Cartn_x\nATOM 1.0 extra\n' > "$T/s/broken.cif"
echo "not a structure" > "$T/s/README.txt"
ln -s "$D/msas/openfold_2q2k/2q2k_A" "$T/msa/2q2k_A"
ln -s "$D/msas/openfold_2q2k/2q2k_B" "$T/msa/2q2k_B"
# 2CRB A residues 32-51 aligned to 4ZEY A residues 26-45 (as HHsearch aligned both to the
# OpenFold test query); 4ZEY (2015) is newer than 2CRB (2005), hence --max-template-date.
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

"$BIN" featurize --structures "$T/s" --msa-dir "$T/msa" --template-hits "$T/hits" \
  --template-mmcif-dir "$D/structures/train/mmcif" --max-template-date 2020-01-01 --jobs 2 \
  -o "$T/out.h5" > "$T/log" 2> "$T/err"
rc=$?
cat "$T/log"
[ $rc -eq 0 ] && ok "featurize exit 0" || fail "featurize exit $rc: $(cat "$T/err")"
grep -q "broken.cif: .*broken.cif:[0-9]*:" "$T/log" && ok "malformed file reported with file:line" \
  || fail "broken.cif not reported with its line"
grep -q "chains: 10 written (2 with an MSA, 8 single-sequence), 0 rejected, 0 failed" "$T/log" \
  && ok "10 chains written" || fail "chain counts"
grep -q "templates: 1 written for 1 chains" "$T/log" && ok "1 template" || fail "template count"
n=$(grep -c "featurize: .* files (" "$T/err")
grep -q "featurize: 9/9 files (100%)" "$T/err" && [ "$n" -le 11 ] \
  && ok "progress on stderr: $n lines (one per 10% when not a terminal)" \
  || fail "progress lines ($n): $(cat "$T/err")"
ls "$T" | grep -q "tmp-" && fail "temporary file left" || ok "no temporary file left"

cat > "$T/check.py" <<'EOF'
import sys, gzip, collections
import h5py, numpy as np
path, data = sys.argv[1], sys.argv[2]
want_groups = sys.argv[3].split(",") if len(sys.argv) > 3 and sys.argv[3] else None
HH = "ACDEFGHIKLMNPQRSTVWYX-"
RT = "ARNDCQEGHILKMFPSTWYVX"
def hh(c):  # AF2 HHBLITS_AA_TO_ID
    c = {"B": "D", "Z": "E", "U": "C", "J": "X", "O": "X"}.get(c, c)
    return HH.index(c) if c in HH else 20
errors = []
def check(cond, msg):
    if not cond: errors.append(msg)
f = h5py.File(path, "r")
check(f.attrs["format"] == "memfold-features", "format attribute")
check(int(f.attrs["schema_version"]) == 1, "schema_version")
check(int(f.attrs["num_chains"]) == len(f), "num_chains %d vs %d groups" % (f.attrs["num_chains"], len(f)))
if want_groups is not None:
    check(sorted(f) == sorted(want_groups), "groups %s, expected %s" % (sorted(f), sorted(want_groups)))
for name, g in f.items():
    seq = g.attrs["sequence"]
    N = len(seq)
    def ds(k, dtype, shape):
        check(k in g, "%s: no %s" % (name, k))
        if k not in g: return None
        d = g[k]
        check(d.dtype == np.dtype(dtype), "%s/%s dtype %s" % (name, k, d.dtype))
        check(d.shape == shape, "%s/%s shape %s, expected %s" % (name, k, d.shape, shape))
        if d.ndim and d.size:
            check(d.chunks is not None and d.compression == "gzip" and d.shuffle and d.fletcher32,
                  "%s/%s filters: chunks %s %s shuffle %s fletcher32 %s" % (name, k, d.chunks, d.compression, d.shuffle, d.fletcher32))
        return d[()]
    S = g["msa"].shape[0]
    aatype = ds("aatype", "int32", (N,))
    ri = ds("residue_index", "int32", (N,))
    ds("author_residue_index", "int32", (N,))
    msa = ds("msa", "int8", (S, N))
    dm = ds("deletion_matrix", "float32", (S, N))
    pos = ds("all_atom_positions", "float32", (N, 37, 3))
    mask = ds("all_atom_mask", "float32", (N, 37))
    res = ds("resolution", "float32", ())
    check(int(g.attrs["num_res"]) == N and int(g.attrs["num_alignments"]) == S, "%s: num_res/num_alignments attrs" % name)
    check(list(aatype) == [RT.index(c) if c in RT else 20 for c in seq], "%s: aatype vs sequence" % name)
    check((ri == np.arange(N)).all(), "%s: residue_index" % name)
    check(list(msa[0]) == [hh(c) for c in seq], "%s: msa row 0 vs sequence" % name)
    check((dm[0] == 0).all() and (dm >= 0).all() and (dm == np.round(dm)).all(), "%s: deletion_matrix" % name)
    check(msa.min() >= 0 and msa.max() <= 21, "%s: msa ids" % name)
    check(len({r.tobytes() for r in msa}) == S, "%s: duplicate MSA rows" % name)
    check(np.isin(mask, (0, 1)).all() and mask.sum() > 0, "%s: mask values" % name)
    check((pos[mask == 0] == 0).all() and np.isfinite(pos).all(), "%s: positions where masked" % name)
    check(res >= 0, "%s: resolution" % name)
    for a in ("release_date", "method", "entry_id", "chain_id", "source_file", "msa_sources"):
        check(a in g.attrs, "%s: attribute %s" % (name, a))
    T = int(g.attrs["num_templates"])
    if T >= 0:
        ta = ds("template_aatype", "int32", (T, N))
        tp = ds("template_all_atom_positions", "float32", (T, N, 37, 3))
        tm = ds("template_all_atom_masks", "float32", (T, N, 37))
        ds("template_sum_probs", "float32", (T, 1))
        check(g["template_domain_names"].shape == (T,), "%s: template_domain_names" % name)
        check((tm.sum(-1)[ta == 21] == 0).all() and (tp[tm == 0] == 0).all(),
              "%s: template atoms where no residue is aligned" % name)
    else:
        check("template_aatype" not in g, "%s: template arrays without hits" % name)
print("%s: %d groups checked, %d errors" % (path, len(f), len(errors)))
for e in errors[:20]: print("  " + e)
sys.exit(1 if errors else 0)
EOF

"$PY" "$T/check.py" "$T/out.h5" "$D" "1AQT_A_A,1a7g_E,1d3z_A,1lzh_A,1lzh_B,1ubq_A,2crb_A,2q2k_A,2q2k_B,T1024_A" \
  && ok "h5py reads out.h5: schema, dtypes, shapes, chunked gzip+shuffle+fletcher32, values" \
  || fail "h5py check of out.h5"

# Values against the files' text and an MSA merge computed here.
"$PY" - "$T/out.h5" "$D" <<'EOF' && ok "coordinates, chains, MSA merge and template match the inputs" || fail "value checks"
import sys, gzip, collections
import h5py, numpy as np
f = h5py.File(sys.argv[1], "r"); D = sys.argv[2]
bad = []
# 1ubq: CA of MET 1 and of GLY 76 as written in the PDB file.
ca = {}
for l in open(D + "/structures/train/pdb/1ubq.pdb"):
    if l.startswith("ATOM") and l[12:16].strip() == "CA":
        ca[int(l[22:26])] = [float(l[30:38]), float(l[38:46]), float(l[46:54])]
p = f["1ubq_A/all_atom_positions"][()]
for r in (1, 76):
    if not np.allclose(p[r - 1, 1], ca[r], atol=1e-5, rtol=0): bad.append("1ubq CA %d" % r)
if abs(f["1ubq_A/resolution"][()] - 1.8) > 1e-6: bad.append("1ubq resolution")
if f["1ubq_A"].attrs["release_date"] != "1987-04-16": bad.append("1ubq date")
# 1lzh (gzipped, CA only): only CA observed.
m = f["1lzh_A/all_atom_mask"][()]
if m[:, 1].sum() == 0 or m.sum() != m[:, 1].sum(): bad.append("1lzh CA-only mask")
# T1024: blank chain id read as A, author numbering kept.
if f["T1024_A"].attrs["chain_id"] != "A": bad.append("T1024 chain id")
# 2q2k_A: bfd a3m + mgnify and uniref90 Stockholm (query columns), deduplicated in that order.
def a3m(path):
    seqs = []
    for l in open(path):
        l = l.strip()
        if l.startswith(">"): seqs.append("")
        elif l and not l.startswith("#"): seqs[-1] += l
    return ["".join(c for c in s if not c.islower() and c != ".") for s in seqs]
def sto(path):
    d = collections.OrderedDict()
    for l in open(path):
        if l.startswith("#") or l.startswith("//") or not l.strip(): continue
        n, s = l.split(); d[n] = d.get(n, "") + s
    seqs = list(d.values()); keep = [i for i, c in enumerate(seqs[0]) if c not in "-."]
    return ["".join(s[i] for i in keep).upper().replace(".", "-") for s in seqs]
M = D + "/msas/openfold_2q2k/2q2k_A/"
rows = a3m(M + "bfd_uniclust_hits.a3m") + sto(M + "mgnify_hits.sto") + sto(M + "uniref90_hits.sto")
uniq = list(dict.fromkeys(rows))
HH = "ACDEFGHIKLMNPQRSTVWYX-"
got = ["".join(HH[i] for i in r) for r in f["2q2k_A/msa"][()]]
if got != uniq: bad.append("2q2k_A msa: %d rows, expected %d" % (len(got), len(uniq)))
# 2crb_A template: 4ZEY A residues 26-45 at query 32-51; CA of 4ZEY GLU 26 from the mmCIF text.
t = f["2crb_A/template_all_atom_positions"][()]
names = [n.decode() for n in f["2crb_A/template_domain_names"][()]]
want = None
for l in open(D + "/structures/train/mmcif/4zey.cif"):
    w = l.split()
    if w and w[0] == "ATOM" and w[3] == "CA" and w[6] == "A" and w[8] == "26" and w[-1] == "1":
        want = [float(w[10]), float(w[11]), float(w[12])]; break
if names != ["4zey_A"] or want is None or not np.allclose(t[0, 31, 1], want, atol=1e-5, rtol=0):
    bad.append("2crb template: %s %s %s" % (names, t[0, 31, 1], want))
ta = f["2crb_A/template_aatype"][()][0]
if "".join(HH[i] for i in ta[31:51]) != "EEAISCHKKAAAYLSEAMKL" or (ta[:31] != 21).any(): bad.append("template aatype")
print("\n".join(bad))
sys.exit(1 if bad else 0)
EOF

# ---- inspect ----
"$BIN" inspect "$T/out.h5" > "$T/inspect.txt"
rc=$?
head -40 "$T/inspect.txt"
[ $rc -eq 0 ] && grep -q "^format  *memfold-features" "$T/inspect.txt" \
  && grep -q "^schema_version  *1" "$T/inspect.txt" \
  && grep -Eq "^2q2k_A +70 +20 +3.00 +0 +2008-02-05 +msa" "$T/inspect.txt" \
  && grep -Eq "^2crb_A +97 +1 +- +1 " "$T/inspect.txt" \
  && grep -q "msa  *i8 \[" "$T/inspect.txt" && grep -q "^10 chains" "$T/inspect.txt" \
  && ok "inspect summarizes the feature file" || fail "inspect output (rc $rc)"
"$BIN" inspect --check "$T/out.h5" > /dev/null && ok "inspect --check reads every dataset" \
  || fail "inspect --check on a good file"
"$PY" -c "import h5py; h5py.File('$T/other.h5','w')['x'] = [1, 2]"
"$BIN" inspect "$T/other.h5" > /dev/null 2> "$T/e1"; rc=$?
[ $rc -eq 1 ] && grep -q "not a memfold file" "$T/e1" && ok "non-memfold HDF5 refused" \
  || fail "non-memfold file: rc $rc $(cat "$T/e1")"
echo "plain text" > "$T/text.h5"
"$BIN" inspect "$T/text.h5" > /dev/null 2> "$T/e2"; rc=$?
[ $rc -eq 1 ] && grep -q "not an HDF5 file" "$T/e2" && ok "text file refused" || fail "text file: rc $rc"
head -c 40000 "$T/out.h5" > "$T/trunc.h5"
"$BIN" inspect "$T/trunc.h5" > /dev/null 2> "$T/e3"; rc=$?
[ $rc -eq 1 ] && grep -q "memfold inspect:" "$T/e3" && ok "truncated file refused: $(cat "$T/e3")" \
  || fail "truncated file: rc $rc"
cp "$T/out.h5" "$T/flip.h5"
off=$("$PY" -c "
import h5py
d = h5py.File('$T/flip.h5', 'r')['T1024_A/all_atom_positions']
print(d.id.get_chunk_info(0).byte_offset + 100)")
printf '\xff\xff\xff\xff' | dd of="$T/flip.h5" bs=1 seek="$off" conv=notrunc status=none
"$BIN" inspect --check "$T/flip.h5" > /dev/null 2> "$T/e4"; rc=$?
[ $rc -eq 1 ] && grep -q "T1024_A/all_atom_positions.*checksum" "$T/e4" \
  && ok "damaged chunk found by --check: $(cat "$T/e4")" || fail "damaged chunk: rc $rc $(cat "$T/e4")"

# ---- filters and exit codes ----
# 1ubq, 1d3z (76), 2q2k A/B (70) are short; 1lzh A/B (6.0 A) and T1024 (2.9 A) above 2.5 A.
"$BIN" featurize --structures "$T/s" --min-length 80 --max-resolution 2.5 -o "$T/f.h5" --quiet > "$T/flog"
rc=$?
[ $rc -eq 0 ] && grep -q "shorter than --min-length  *4" "$T/flog" \
  && grep -q "resolution above --max-resolution  *3" "$T/flog" \
  && grep -q "  2q2k_A: shorter than --min-length" "$T/flog" \
  && grep -q "  T1024_A: resolution above" "$T/flog" \
  && ok "rejected chains counted by reason and listed" || { cat "$T/flog"; fail "filter report"; }
"$BIN" featurize --structures "$T/s" --min-length 100000 -o "$T/none.h5" --quiet > /dev/null 2>&1
rc=$?
[ $rc -eq 1 ] && [ ! -e "$T/none.h5" ] && ok "no chain written: exit 1, no file" || fail "no chain: rc $rc"
"$BIN" featurize --structures "$T/s" > /dev/null 2>&1; rc=$?
[ $rc -eq 2 ] && ok "missing -o: exit 2" || fail "usage: rc $rc"
"$BIN" featurize --structures "$T/s" -o "$T/x.h5" --release-before 2020-1-1 > /dev/null 2>&1; rc=$?
[ $rc -eq 1 ] && ok "bad date: exit 1" || fail "bad date: rc $rc"

# ---- interrupted runs leave no file ----
# Three links to the structures: about 1000 files, several seconds of work at any speed.
mkdir -p "$T/big"
for k in 1 2 3; do ln -s "$D/structures" "$T/big/copy$k"; done
timeout -s KILL 1 "$BIN" featurize --structures "$T/big" -o "$T/killed.h5" --quiet > /dev/null 2>&1
rc=$?
[ $rc -eq 137 ] && [ ! -e "$T/killed.h5" ] && ok "SIGKILL after 1 s: no killed.h5" \
  || fail "SIGKILL: rc $rc (137 expected: the run must still be going after 1 s), killed.h5 $( [ -e "$T/killed.h5" ] && echo exists || echo absent)"
rm -f "$T"/killed.h5.tmp-*
timeout --preserve-status -s TERM 1 "$BIN" featurize --structures "$T/big" -o "$T/term.h5" --quiet > /dev/null 2> "$T/eterm"
rc=$?
[ $rc -eq 130 ] && [ ! -e "$T/term.h5" ] && ! ls "$T" | grep -q "term.h5" \
  && ok "SIGTERM: exit 130, no file and no temporary file" || fail "SIGTERM: rc $rc $(ls "$T")"

# ---- every structure of shared/data ----
"$BIN" featurize --structures "$D/structures" -o "$T/all.h5" --jobs 2 --quiet > "$T/alllog"
rc=$?
tail -n 3 "$T/alllog"
files=$(find -L "$D/structures" -type f \( -name '*.cif' -o -name '*.cif.gz' -o -name '*.pdb' -o -name '*.pdb.gz' \) | wc -l)
[ $rc -eq 0 ] && grep -q "^files: $files, unreadable 0" "$T/alllog" \
  && grep -Eq "^chains: [0-9]+ written .*, 0 failed" "$T/alllog" \
  && ok "all $files structure files featurize" || fail "full run (rc $rc)"
"$PY" "$T/check.py" "$T/all.h5" "$D" "" && ok "h5py reads all.h5" || fail "h5py check of all.h5"

# ---- jackhmmer ----
if command -v jackhmmer > /dev/null; then
  mkdir -p "$T/js" "$T/jtmp"
  ln -s "$D/structures/train/psicov150/1a6m.pdb" "$T/js/"
  TMPDIR="$T/jtmp" "$BIN" featurize --structures "$T/js" --jackhmmer-db "$D/seqdb/hmmer_globins45.fa" \
    -o "$T/jk.h5" --quiet > "$T/jlog"
  rc=$?
  rows=$("$PY" -c "import h5py; print(h5py.File('$T/jk.h5','r')['1a6m_A/msa'].shape[0])" 2>/dev/null)
  [ $rc -eq 0 ] && [ "${rows:-0}" -gt 30 ] && [ -z "$(ls -A "$T/jtmp")" ] \
    && ok "jackhmmer MSA: $rows rows; work directory removed" || fail "jackhmmer: rc $rc rows $rows"
else
  echo "note: jackhmmer not installed (Debian package hmmer): --jackhmmer-db not exercised"
fi
"$BIN" featurize --structures "$T/s" --jackhmmer-db "$D/seqdb/hmmer_globins45.fa" \
  --jackhmmer-bin /nonexistent/jackhmmer -o "$T/j2.h5" > /dev/null 2> "$T/ej"
grep -q "'hmmer'" "$T/ej" && ok "missing jackhmmer names the package" || fail "jackhmmer missing: $(cat "$T/ej")"

echo "cli featurize: $failures failures"
[ $failures -eq 0 ]
