/* A strict reader of the legacy PDB format, for wwPDB entries and for the header-less files that
 * other tools write (Pfam/SCOP domain extracts, CASP targets with blank chain ids).
 *
 * Chains: one mf_protein per chain id with protein residues (a blank chain id reads as "A").
 * Sequence: the chain's SEQRES when present, with the observed residues placed on it in residue
 * number order (an order-preserving match of residue names that keeps, where it can, the gaps of
 * the author numbering; unplaced SEQRES residues have a zero mask); without SEQRES the observed
 * residues in file order. Atoms: ATOM records, and HETATM records of polymer residues before the
 * chain's TER (MSE read as MET with SE -> SD; other modified residues when SEQRES lists them or
 * they have backbone N, CA and C); first MODEL only; alternate locations resolved per residue by
 * the highest occupancy (ties: first). Entry facts: HEADER id, EXPDTA method, resolution from
 * REMARK 2 (else REMARK 3 RESOLUTION RANGE HIGH), release date from REVDAT 1.
 * Malformed records are MF_ERR_FORMAT with "file:line: field: what"; on failure nothing is
 * allocated for the caller. */
#ifndef MF_DATA_PDB_H
#define MF_DATA_PDB_H

#include <stddef.h>

#include "core/status.h"
#include "protein/protein.h"

mf_status mf_pdb_parse(const char *text, size_t len, const char *name, mf_protein **chains,
                       int *n_chains);
mf_status mf_pdb_read(const char *path, mf_protein **chains, int *n_chains);

#endif
