/* Writing predicted structures as legacy PDB files, like AlphaFold 2's common/protein.to_pdb:
 * one model (no MODEL/ENDMDL records), ATOM records of every atom whose mask is > 0 in atom37
 * order per residue, TER after each chain, END. The B-factor column holds the per-residue pLDDT
 * (0-100) when one is given, else the record's own B-factors. REMARK 6 lines name the tool, the
 * model, its rank and ranking confidence, and the template parents.
 *
 * Files are written atomically: a temporary file in the target's folder, fsync, rename, fsync of
 * the folder; on any failure the temporary file is removed and the target is left as it was.
 *
 * The structure description (mf_structure_meta), the atomic file writer and the checks on the
 * records are shared with the mmCIF writer (protein/mmcif_writer.h). */
#ifndef MF_PROTEIN_PDB_WRITER_H
#define MF_PROTEIN_PDB_WRITER_H

#include <stddef.h>

#include "core/status.h"
#include "protein/protein.h"

/* What a written structure says about itself; a zeroed struct is valid (no ranking note, tool
 * "memfold <version>", parents "N/A"). Text is written as given with control characters replaced
 * by blanks. */
typedef struct {
    const char *tool;           /* NULL: "memfold " MF_VERSION */
    const char *entry_id;       /* mmCIF data block and _entry.id; NULL: model_name or "memfold" */
    const char *model_name;     /* "model_1_ptm"; NULL: not stated */
    const char *parents;        /* template parents, e.g. "1abc_A 2def_B"; NULL or "": "N/A" */
    int rank;                   /* 1 = best of the run; 0: no ranking note */
    const char *ranking_metric; /* with rank > 0: "plddt", "ptm" ...; NULL: "plddt" */
    double ranking_confidence;  /* with rank > 0 */
} mf_structure_meta;

/* Writes the whole of [data, data + len) to path atomically (see above). */
mf_status mf_write_file_atomic(const char *path, const void *data, size_t len);

/* Checks n_chains records for writing: aatype in 0..20, finite coordinates of masked atoms,
 * per-residue pLDDT (when plddt is not NULL: plddt[c] has chains[c].num_res values) finite in
 * [0, 100], distinct non-empty chain ids without blanks or control characters, and residue
 * numbers with insertion codes unique within each chain among residues that have atoms. PDB
 * format (pdb != 0) further needs one-character chain ids, residue numbers in -999..9999,
 * coordinates within -999.999..9999.999 and B-factors within -99.99..999.99. */
mf_status mf_structure_check_writable(const mf_protein *chains, int n_chains,
                                      const float *const *plddt, int pdb);

/* PDB columns 13-16 of an atom name: 4-character names, and names whose element symbol has two
 * letters (FE, SE, "CA" as calcium), start in column 13; 1-3 character names of one-letter
 * elements start in column 14 (" CA " for the alpha carbon, " N  ", " OXT"). element NULL means
 * the first letter of the name (atom37 names: C, N, O, S). field gets 4 characters and a NUL.
 * MF_ERR_INVALID for an empty name or one longer than 4 characters. */
mf_status mf_pdb_atom_name_field(const char *atom_name, const char *element, char field[5]);

/* The PDB text of the chains (one model): *text is malloc'ed and NUL-terminated, *len its length
 * without the NUL (len may be NULL). plddt: NULL, or one per-residue array [num_res] per chain,
 * written as every atom's B-factor; NULL writes chains[c].b_factors [N, 37]. Lines are padded to
 * 80 columns. */
mf_status mf_pdb_format(const mf_protein *chains, int n_chains, const float *const *plddt,
                        const mf_structure_meta *meta, char **text, size_t *len);
mf_status mf_pdb_write(const char *path, const mf_protein *chains, int n_chains,
                       const float *const *plddt, const mf_structure_meta *meta);

#endif
