#!/usr/bin/env bash
# memfold eval against Zhang & Skolnick's TMscore program (Debian package tm-align) on pairs of
# real structures from shared/data: CASP targets against deterministic perturbations of themselves
# (rigid motion, per-residue noise, hinge motions, deletions, point mutations), two crystal copies
# of one chain (PSICOV entries, one with selenomethionine), and a CASP domain against its full
# chain. Some pairs share a numbering; others are renumbered so that memfold must pair them by
# sequence alignment, while TMscore gets the same model with the true numbering. The issue's bar:
# TM-score and GDT-TS within 0.01, RMSD (TMscore's "RMSD of the common residues", the C-alpha
# RMSD after one superposition of all common residues) within 0.05 A; the number of paired
# residues and the normalising length must be equal. Generated files go to a temporary folder.
set -euo pipefail

TMSCORE=${MEMFOLD_TMSCORE:-$(command -v TMscore || true)}
if [ -z "$TMSCORE" ]; then
  echo "SKIP: the TMscore program is not installed (Debian package tm-align; scripts/setup)"
  exit 77
fi
: "${MEMFOLD_BIN:?MEMFOLD_BIN must name the memfold binary}"
SHARED=${MEMFOLD_SHARED:-$(dirname "$0")/../../../shared}
DATA=$SHARED/data/structures
command -v python3 >/dev/null || { echo "FAIL: python3 is needed to generate the models"; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/memfold_eval.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

cat >"$tmp/gen.py" <<'PY'
"""Test-pair generator and comparer for eval_vs_tmscore.sh (standard library only)."""
import json, math, random, sys

def read_chain(path, chain=None):
    """Residues of one chain (first model): ATOM records plus HETATM MSE (as MET, SE -> SD);
    per atom the highest-occupancy alternate location (first on ties)."""
    res, index = [], {}
    for line in open(path):
        rec = line[:6]
        if rec.startswith('ENDMDL'):
            break
        if not (rec == 'ATOM  ' or (rec == 'HETATM' and line[17:20] == 'MSE')):
            continue
        ch = line[21]
        if chain is None:
            chain = ch
        if ch != chain:
            continue
        name, resname = line[12:16].strip(), line[17:20]
        if resname == 'MSE':
            resname = 'MET'
            if name == 'SE':
                name = 'SD'
        if name.startswith('H') or line[76:78].strip() == 'H':
            continue
        key = (int(line[22:26]), line[26])
        occ = float(line[54:60] or 1.0)
        if key not in index:
            index[key] = len(res)
            res.append({'num': key[0], 'ins': key[1], 'name': resname, 'atoms': {}})
        r = res[index[key]]
        xyz = [float(line[30:38]), float(line[38:46]), float(line[46:54])]
        if name not in r['atoms'] or occ > r['atoms'][name][1]:
            r['atoms'][name] = (xyz, occ)
    return [{'num': r['num'], 'ins': r['ins'], 'name': r['name'],
             'atoms': {k: v[0] for k, v in r['atoms'].items()}} for r in res]

def write_pdb(path, res):
    with open(path, 'w') as f:
        serial = 1
        for r in res:
            for name, (x, y, z) in r['atoms'].items():
                aname = name if len(name) == 4 else ' ' + name.ljust(3)
                f.write('ATOM  %5d %4s %3s A%4d%1s   %8.3f%8.3f%8.3f  1.00  0.00          %2s\n'
                        % (serial, aname, r['name'], r['num'], r['ins'], x, y, z, name[0]))
                serial += 1
        f.write('TER\nEND\n')

def rotation(axis, deg):
    n = math.sqrt(sum(a * a for a in axis))
    x, y, z = (a / n for a in axis)
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    C = 1 - c
    return [[c + x * x * C, x * y * C - z * s, x * z * C + y * s],
            [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
            [z * x * C - y * s, z * y * C + x * s, c + z * z * C]]

def apply(rot, p, center=(0, 0, 0), shift=(0, 0, 0)):
    d = [p[k] - center[k] for k in range(3)]
    return [sum(rot[a][b] * d[b] for b in range(3)) + center[a] + shift[a] for a in range(3)]

def perturb(res, seed, noise, hinges=(), delete=(), mutate=(), renumber=None):
    """hinges: (residue position, degrees); delete: (first, last) positions; mutate: positions
    given a new residue name (backbone and CB kept); renumber: ('seq', start) or ('shift', k).
    Returns (model with the true numbering, model as memfold gets it)."""
    rng = random.Random(seed)
    out = [{'num': r['num'], 'ins': r['ins'], 'name': r['name'],
            'atoms': {k: list(v) for k, v in r['atoms'].items()}} for r in res]
    for pos, deg in hinges:
        rot = rotation([rng.gauss(0, 1) for _ in range(3)], deg)
        center = out[pos]['atoms'].get('CA', next(iter(out[pos]['atoms'].values())))
        center = list(center)
        for r in out[pos:]:
            for k in r['atoms']:
                r['atoms'][k] = apply(rot, r['atoms'][k], center)
    for r in out:
        shift = [rng.gauss(0, noise) for _ in range(3)]
        for k in r['atoms']:
            r['atoms'][k] = [r['atoms'][k][a] + shift[a] + rng.gauss(0, 0.2 * noise)
                             for a in range(3)]
    names = ['ALA', 'GLY', 'SER', 'LEU', 'LYS', 'GLU', 'VAL', 'TRP']
    for pos in mutate:
        r = out[pos]
        r['name'] = next(n for n in names if n != r['name'] and (n != 'GLY' or 'CB' not in r['atoms']))
        r['atoms'] = {k: v for k, v in r['atoms'].items() if k in ('N', 'CA', 'C', 'O', 'CB')}
    keep = [r for i, r in enumerate(out) if not any(a <= i <= b for a, b in delete)]
    rot = rotation([rng.gauss(0, 1) for _ in range(3)], rng.uniform(0, 360))
    shift = [rng.uniform(-30, 30) for _ in range(3)]
    for r in keep:
        for k in r['atoms']:
            r['atoms'][k] = apply(rot, r['atoms'][k], shift=shift)
    given = [dict(r) for r in keep]
    if renumber and renumber[0] == 'seq':
        given = [dict(r, num=renumber[1] + i, ins=' ') for i, r in enumerate(keep)]
    elif renumber:
        given = [dict(r, num=r['num'] + renumber[1]) for r in keep]
    return keep, given

def seq(res):
    three = {'ALA': 'A', 'ARG': 'R', 'ASN': 'N', 'ASP': 'D', 'CYS': 'C', 'GLN': 'Q', 'GLU': 'E',
             'GLY': 'G', 'HIS': 'H', 'ILE': 'I', 'LEU': 'L', 'LYS': 'K', 'MET': 'M', 'PHE': 'F',
             'PRO': 'P', 'SER': 'S', 'THR': 'T', 'TRP': 'W', 'TYR': 'Y', 'VAL': 'V'}
    return ''.join(three.get(r['name'], 'X') for r in res)

def make(data, tmp):
    casp = data + '/eval/casp14/'
    psicov = data + '/train/psicov150/'
    rows = []  # name pairing pred_given pred_chain ref_given ref_chain pred_tm ref_tm

    def synthetic(name, target, expect, **kw):
        ref = read_chain(casp + target + '.pdb')
        true, given = perturb(ref, **kw)
        write_pdb(f'{tmp}/{name}_ref.pdb', ref)
        write_pdb(f'{tmp}/{name}_model_tm.pdb', true)
        write_pdb(f'{tmp}/{name}_model.pdb', given)
        rows.append([name, expect, f'{tmp}/{name}_model.pdb', '-', f'{tmp}/{name}_ref.pdb', '-',
                     f'{tmp}/{name}_model_tm.pdb', f'{tmp}/{name}_ref.pdb'])

    synthetic('T1024_hinge', 'T1024', 'residue_number', seed=1, noise=0.8, hinges=[(200, 20)])
    synthetic('T1033_noisy', 'T1033', 'residue_number', seed=2, noise=2.0, hinges=[(45, 35)])
    synthetic('T1039_mut_del', 'T1039', 'residue_number', seed=3, noise=1.2, hinges=[(90, 12)],
              delete=[(40, 45)], mutate=[10, 77, 120])
    synthetic('T1024_far', 'T1024', 'residue_number', seed=4, noise=3.5,
              hinges=[(120, 40), (260, -35)])
    synthetic('T1043_renum', 'T1043', 'sequence_alignment', seed=5, noise=1.0,
              hinges=[(74, 15)], delete=[(0, 2), (70, 74)], renumber=('seq', 1))
    synthetic('T1040_offset', 'T1040', 'sequence_alignment', seed=6, noise=1.5,
              hinges=[(60, 25)], renumber=('shift', 100))

    # two crystal copies of one chain, read by memfold from the original multi-chain file
    for entry, pc, rc in (('1atz', 'A', 'B'), ('1ne2', 'B', 'A')):
        pred, ref = read_chain(psicov + entry + '.pdb', pc), read_chain(psicov + entry + '.pdb', rc)
        write_pdb(f'{tmp}/{entry}_{pc}.pdb', pred)
        write_pdb(f'{tmp}/{entry}_{rc}.pdb', ref)
        rows.append([f'{entry}_{pc}{rc}', 'residue_number', psicov + entry + '.pdb', pc,
                     psicov + entry + '.pdb', rc, f'{tmp}/{entry}_{pc}.pdb',
                     f'{tmp}/{entry}_{rc}.pdb'])

    # a CASP domain target inside its (perturbed) full chain: the domain's numbering is its own
    dom, full = read_chain(casp + 'T1031.pdb'), read_chain(casp + 'T1044.pdb')
    offset = seq(full).find(seq(dom))
    assert offset >= 0 and seq(full).count(seq(dom)) == 1, 'T1031 is not a unique part of T1044'
    shift = dom[0]['num'] - full[offset]['num']
    true, given = perturb(full, seed=7, noise=1.0, hinges=[(offset + 50, 20)])
    true = [dict(r, num=r['num'] + shift) for r in true]  # TMscore pairs by number
    write_pdb(f'{tmp}/T1031_ref.pdb', dom)
    write_pdb(f'{tmp}/T1044_model.pdb', given)
    write_pdb(f'{tmp}/T1044_model_tm.pdb', true)
    rows.append(['T1044_in_T1031', 'sequence_alignment', f'{tmp}/T1044_model.pdb', '-',
                 f'{tmp}/T1031_ref.pdb', '-', f'{tmp}/T1044_model_tm.pdb', f'{tmp}/T1031_ref.pdb'])
    with open(f'{tmp}/pairs.tsv', 'w') as f:
        for r in rows:
            f.write('\t'.join(r) + '\n')

def tmscore_values(path):
    v = {}
    for line in open(path):
        if line.startswith('Structure2:'):
            v['length'] = int(line.split('Length=')[1].split()[0])
        elif line.startswith('Number of residues in common='):
            v['common'] = int(line.split('=')[1])
        elif line.startswith('RMSD of  the common residues='):
            v['rmsd'] = float(line.split('=')[1])
        elif line.startswith('TM-score    ='):
            v['tm'] = float(line.split('=')[1].split()[0])
        elif line.startswith('GDT-TS-score='):
            v['gdt'] = float(line.split('=')[1].split()[0])
    missing = {'length', 'common', 'rmsd', 'tm', 'gdt'} - set(v)
    if missing:
        raise SystemExit(f'cannot read {sorted(missing)} from TMscore output {path}')
    return v

def compare(name, expect, json_path, tm_path):
    m, t = json.load(open(json_path)), tmscore_values(tm_path)
    checks = [
        ('pairing', m['pairing'] == expect, f"{m['pairing']} (expected {expect})"),
        ('n_aligned', m['n_aligned'] == t['common'], f"{m['n_aligned']} vs {t['common']}"),
        ('n_ref', m['n_ref'] == t['length'], f"{m['n_ref']} vs {t['length']}"),
        # TMscore prints 4 decimals (3 for RMSD): its own rounding is inside the bar
        ('tm_score', abs(m['tm_score'] - t['tm']) <= 0.01, f"{m['tm_score']:.4f} vs {t['tm']:.4f}"),
        ('gdt_ts', abs(m['gdt_ts'] - t['gdt']) <= 0.01, f"{m['gdt_ts']:.4f} vs {t['gdt']:.4f}"),
        ('rmsd', abs(m['rmsd'] - t['rmsd']) <= 0.05, f"{m['rmsd']:.3f} vs {t['rmsd']:.3f}"),
    ]
    ok = all(c[1] for c in checks)
    print(f"{'ok  ' if ok else 'FAIL'} {name:16s} " +
          '  '.join(f"{c[0]} {c[2]}{'' if c[1] else ' <-- MISMATCH'}" for c in checks) +
          f"  lddt_ca {m['lddt_ca']:.4f} lddt {m['lddt']:.4f}")
    return ok

if __name__ == '__main__':
    if sys.argv[1] == 'make':
        make(sys.argv[2], sys.argv[3])
    else:
        sys.exit(0 if compare(*sys.argv[2:6]) else 1)
PY

python3 "$tmp/gen.py" make "$DATA" "$tmp"
echo "memfold eval vs TMscore ($TMSCORE): TM-score and GDT-TS within 0.01, RMSD within 0.05 A,"
echo "equal numbers of paired residues and normalising lengths"
fail=0
n=0
while IFS=$'\t' read -r name expect pred pchain ref rchain pred_tm ref_tm; do
  args=(eval --pred "$pred" --ref "$ref" --json)
  [ "$pchain" != "-" ] && args+=(--pred-chain "$pchain")
  [ "$rchain" != "-" ] && args+=(--ref-chain "$rchain")
  if ! "$MEMFOLD_BIN" "${args[@]}" >"$tmp/$name.json" 2>"$tmp/$name.err"; then
    echo "FAIL $name: memfold eval failed: $(cat "$tmp/$name.err")"
    fail=1
    continue
  fi
  "$TMSCORE" "$pred_tm" "$ref_tm" >"$tmp/$name.tm"
  python3 "$tmp/gen.py" compare "$name" "$expect" "$tmp/$name.json" "$tmp/$name.tm" || fail=1
  n=$((n + 1))
done <"$tmp/pairs.tsv"
[ "$n" -ge 8 ] || { echo "FAIL: only $n pairs compared"; fail=1; }
if [ "$fail" -ne 0 ]; then
  echo "eval_vs_tmscore: FAILED"
  exit 1
fi
echo "eval_vs_tmscore: $n pairs passed"
