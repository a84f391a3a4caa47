#!/usr/bin/env bash
# The structure writers against independent readers: test_writers (built beside the memfold
# binary) writes a two-chain PDB and mmCIF of 1NCB L+H (Kabat insertion codes) and an mmCIF of
# 1F2N chain A (residues without atoms) with a synthetic pLDDT into a temporary folder
# (MEMFOLD_WRITERS_OUT), plus expected.json listing every written atom. gemmi
# (read_structure, and cif.read for the ModelCIF pLDDT records) and Biopython (PDBParser in
# strict mode, MMCIFParser) must then read both files without warnings, find the same chains,
# residue numbers and insertion codes, residue names, every atom within 6e-4 A of the written
# coordinate and a B-factor equal to the residue's pLDDT within 5.02e-3 (the %.3f / %.2f
# rounding); gemmi must also see the coordinates of the original entry (atoms without
# alternate locations) and the full sequence of 1F2N A in _entity_poly_seq.
# Debian packages python3-gemmi and python3-biopython (scripts/setup); exit 77 without them.
set -euo pipefail

: "${MEMFOLD_BIN:?MEMFOLD_BIN must name the memfold binary (ctest sets it)}"
TEST_BIN=$(dirname "$MEMFOLD_BIN")/test_writers
[ -x "$TEST_BIN" ] || { echo "FAIL: $TEST_BIN not built"; exit 1; }

# The first interpreter that has both packages (Debian's python3 may not be first on PATH).
PY=""
for cand in ${MEMFOLD_PYTHON:-} python3 /usr/bin/python3; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import gemmi, Bio.PDB' 2>/dev/null; then
    PY=$cand
    break
  fi
done
if [ -z "$PY" ]; then
  echo "SKIP: no python3 with gemmi and Biopython (Debian packages python3-gemmi and"
  echo "      python3-biopython; scripts/setup installs them)"
  exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/memfold_writers_cli.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

MEMFOLD_WRITERS_OUT=$tmp "$TEST_BIN" >"$tmp/test_writers.log" 2>&1 || {
  cat "$tmp/test_writers.log"
  echo "FAIL: test_writers failed"
  exit 1
}
[ -f "$tmp/expected.json" ] || { echo "FAIL: test_writers wrote no expected.json"; exit 1; }

"$PY" - "$tmp" <<'PY'
import json, math, os, sys, warnings

import gemmi
from Bio.PDB import MMCIFParser, PDBParser
from Bio.PDB.MMCIF2Dict import MMCIF2Dict

out = sys.argv[1]
exp = json.load(open(os.path.join(out, 'expected.json')))
TOL_XYZ, TOL_B = 6e-4, 5.02e-3
failures = []

def check(ok, msg):
    if not ok:
        failures.append(msg)
    return ok

def expected_atoms():
    """{(chain, num, ins, atom): (xyz, plddt, resname)} of every written atom."""
    atoms = {}
    for ch in exp['chains']:
        for r in ch['residues']:
            for name, xyz in r['atoms'].items():
                atoms[(ch['id'], r['num'], r['ins'], name)] = (xyz, r['plddt'], r['name'])
    return atoms

EXP = expected_atoms()

def compare(label, got):
    """got: {(chain, num, ins, atom): (xyz, b, resname)} as a reader saw the file."""
    check(len(got) == len(EXP), f'{label}: {len(got)} atoms, want {len(EXP)}')
    missing = [k for k in EXP if k not in got]
    check(not missing, f'{label}: atoms missing, e.g. {missing[:3]}')
    worst_xyz = worst_b = 0.0
    bad_name = 0
    for key, (xyz, plddt, resname) in EXP.items():
        if key not in got:
            continue
        gxyz, gb, gname = got[key]
        d = max(abs(a - b) for a, b in zip(gxyz, xyz))
        worst_xyz = max(worst_xyz, d if not math.isnan(d) else math.inf)
        db = abs(gb - plddt)
        worst_b = max(worst_b, db if not math.isnan(db) else math.inf)
        bad_name += gname != resname
    check(worst_xyz <= TOL_XYZ, f'{label}: coordinates differ by {worst_xyz:.2e} > {TOL_XYZ}')
    check(worst_b <= TOL_B, f'{label}: B-factor differs from pLDDT by {worst_b:.2e} > {TOL_B}')
    check(bad_name == 0, f'{label}: {bad_name} atoms with a different residue name')
    chains = sorted({k[0] for k in got})
    check(chains == sorted(c['id'] for c in exp['chains']), f'{label}: chains {chains}')
    print(f'{label}: {len(got)} atoms, chains {",".join(chains)}, max |dxyz| {worst_xyz:.1e} A, '
          f'max |B - pLDDT| {worst_b:.1e}')

def from_gemmi(path):
    st = gemmi.read_structure(path)
    check(len(st) == 1, f'gemmi {path}: {len(st)} models, want 1')
    got = {}
    for ch in st[0]:
        for res in ch:
            ins = res.seqid.icode.strip()
            for at in res:
                got[(ch.name, res.seqid.num, ins, at.name)] = (
                    (at.pos.x, at.pos.y, at.pos.z), at.b_iso, res.name)
    return st, got

def from_biopython(parser, path):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        s = parser.get_structure('m', path)
    check(not w, f'Biopython {os.path.basename(path)}: warnings {[str(x.message) for x in w][:3]}')
    models = list(s)
    check(len(models) == 1, f'Biopython {path}: {len(models)} models')
    got = {}
    for ch in models[0]:
        for res in ch:
            hetflag, num, ins = res.id
            check(hetflag == ' ', f'Biopython {path}: residue {res.id} read as HETATM')
            for at in res:
                got[(ch.id, num, ins.strip(), at.get_id())] = (
                    tuple(float(v) for v in at.coord), float(at.bfactor), res.resname)
    return got

pdb = os.path.join(out, exp['pdb'])
cif = os.path.join(out, exp['cif'])

st_pdb, g = from_gemmi(pdb)
compare('gemmi PDB', g)
st_cif, g = from_gemmi(cif)
compare('gemmi mmCIF', g)
compare('Biopython PDBParser(PERMISSIVE=False)',
        from_biopython(PDBParser(PERMISSIVE=False), pdb))
compare('Biopython MMCIFParser', from_biopython(MMCIFParser(), cif))

# gemmi reads the same coordinates in the original entry (atoms without alternate locations)
orig = gemmi.read_structure(exp['original'])
checked = worst = 0
for ch in orig[0]:
    for res in ch:
        for at in res:
            key = (ch.name, res.seqid.num, res.seqid.icode.strip(), at.name)
            if at.altloc != '\0' or key not in EXP:
                continue
            xyz = EXP[key][0]
            got = st_cif[0][ch.name][str(res.seqid.num) + res.seqid.icode.strip()][0][at.name][0]
            worst = max(worst, max(abs(a - b) for a, b in zip((got.pos.x, got.pos.y, got.pos.z),
                                                              (at.pos.x, at.pos.y, at.pos.z))))
            checked += 1
check(checked > 0.9 * len(EXP), f'original entry: only {checked} of {len(EXP)} atoms compared')
check(worst <= 5.01e-4, f'original entry: written mmCIF differs by {worst:.2e} A')
print(f'original 1NCB via gemmi: {checked} atoms, max |dxyz| {worst:.1e} A')

# the ModelCIF pLDDT records: one local value per residue with atoms, the global mean
doc = gemmi.cif.read(cif)
block = doc.sole_block()
local = block.find('_ma_qa_metric_local.', ['label_asym_id', 'label_seq_id', 'metric_value'])
n_res = sum(len(c['residues']) for c in exp['chains'])
check(len(local) == n_res, f'_ma_qa_metric_local: {len(local)} rows, want {n_res}')
plddts = [r['plddt'] for c in exp['chains'] for r in c['residues']]
vals = [float(row[2]) for row in local]
check(len(vals) == len(plddts) and all(abs(a - b) <= TOL_B for a, b in zip(vals, plddts)),
      '_ma_qa_metric_local values differ from the pLDDT')
glob = float(block.find_value('_ma_qa_metric_global.metric_value'))
check(abs(glob - sum(plddts) / len(plddts)) <= TOL_B,
      f'_ma_qa_metric_global {glob} is not the mean pLDDT')
mmcif_dict = MMCIF2Dict(cif)
check(mmcif_dict.get('_ma_qa_metric.mode') == ['global', 'local'], '_ma_qa_metric modes')
print(f'ModelCIF pLDDT: {len(local)} local rows, global {glob}')

# residues without atoms keep their place in the sequence
u = exp['unobserved']
st_u = gemmi.read_structure(os.path.join(out, u['cif']))
st_u.setup_entities()
ent = [e for e in st_u.entities if e.entity_type == gemmi.EntityType.Polymer]
check(len(ent) == 1 and list(ent[0].full_sequence) == u['sequence'],
      f'1F2N A: gemmi full sequence differs from the {len(u["sequence"])} residues written')
n_obs = len(st_u[0][u['id']])
check(n_obs == u['num_observed'], f'1F2N A: gemmi sees {n_obs} residues, want {u["num_observed"]}')
seq_u = MMCIF2Dict(os.path.join(out, u['cif']))['_entity_poly_seq.mon_id']
check(seq_u == u['sequence'], '1F2N A: Biopython _entity_poly_seq differs')
print(f'1F2N A: full sequence {len(u["sequence"])} residues, {n_obs} with atoms')

if failures:
    for f in failures:
        print('FAIL:', f)
    sys.exit(1)
print('writers_roundtrip: gemmi and Biopython read the PDB and mmCIF as written')
PY
