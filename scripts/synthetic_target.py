#!/usr/bin/env python3
"""A synthetic monomer target for benchmarks: OUT/nN.fasta (a random sequence of N residues) and
OUT/nN.a3m (the query and 2,000 rows with 30% substitutions or gaps), deterministic per N.
Used by bench/scaling_study and scripts/gpu-pack.  usage: synthetic_target.py N OUTDIR"""
import random
import sys

n, out = int(sys.argv[1]), sys.argv[2]
r = random.Random(1000 + n)
aa = "ACDEFGHIKLMNPQRSTVWY"
q = "".join(r.choice(aa) for _ in range(n))
with open(f"{out}/n{n}.fasta", "w") as f:
    f.write(f">synthetic_{n}\n{q}\n")
with open(f"{out}/n{n}.a3m", "w") as f:
    f.write(f">synthetic_{n}\n{q}\n")
    for i in range(2000):
        s = "".join(c if r.random() > 0.3 else (r.choice(aa) if r.random() > 0.2 else "-") for c in q)
        f.write(f">s{i}\n{s}\n")
