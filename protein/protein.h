/* The protein record: one polymer chain in atom37 representation, as AlphaFold 2's
 * common/protein.Protein, plus the facts about its entry (resolution, release date, method) that
 * the training-set filters of the supplement (section 1.2.5) need. Residues are the full sequence
 * of the chain (SEQRES where the file has one): residues that were not observed have a zero atom
 * mask. protein/ knows nothing of files or tensors; the parsers in data/ fill these records. */
#ifndef MF_PROTEIN_PROTEIN_H
#define MF_PROTEIN_PROTEIN_H

#include <stdint.h>

#include "core/status.h"
#include "protein/residue_constants.h"

#define MF_CHAIN_ID_MAX 8  /* mmCIF author chain ids are up to 4 characters; NUL included */
#define MF_ENTRY_ID_MAX 32 /* "1AKI", or an extended id such as "pdb_00001aki" */
#define MF_METHOD_MAX   96 /* "X-RAY DIFFRACTION", joined with ", " when there are several */
#define MF_DATE_MAX     11 /* "YYYY-MM-DD" */

typedef struct {
    double resolution;              /* Angstrom; 0 when unknown or not applicable (NMR) */
    char release_date[MF_DATE_MAX]; /* first release "YYYY-MM-DD", "" when unknown */
    char method[MF_METHOD_MAX];     /* experimental method, "" when unknown */
    char entry_id[MF_ENTRY_ID_MAX]; /* PDB id, "" when unknown */
} mf_entry_info;

typedef struct {
    int64_t num_res;
    int32_t *aatype;        /* [N] AF2 restype order, MF_RESTYPE_UNK (20) for anything else */
    float *atom_positions;  /* [N, 37, 3] Angstrom; 0 where atom_mask is 0 */
    float *atom_mask;       /* [N, 37] 1 where the atom was observed */
    int32_t *residue_index; /* [N] author residue number */
    char *insertion_code;   /* [N] author insertion code, ' ' when none */
    float *b_factors;       /* [N, 37] */
    char *sequence;         /* [N + 1] one-letter codes, NUL-terminated */
    char chain_id[MF_CHAIN_ID_MAX]; /* author chain id ("A" for a blank PDB chain id) */
    mf_entry_info entry;
} mf_protein;

/* Allocates every array for num_res residues (num_res may be 0), zeroed: masks 0, positions 0,
 * insertion codes ' ', sequence "XXX..." until filled. On failure nothing stays allocated. */
mf_status mf_protein_alloc(mf_protein *p, int64_t num_res);
/* Frees the arrays and zeroes the record; safe on a zeroed or already freed record. */
void mf_protein_free(mf_protein *p);
/* Frees n records and the array that holds them (as returned by the structure readers). */
void mf_protein_list_free(mf_protein *chains, int n);

/* Sets aatype[i] and sequence[i] together from a residue name ("MSE" reads as MET). */
void mf_protein_set_residue(mf_protein *p, int64_t i, const char *three_letter);

/* Residues with at least one observed atom / with an observed CA. */
int64_t mf_protein_num_observed(const mf_protein *p);
int64_t mf_protein_num_observed_ca(const mf_protein *p);

/* Writes the one-letter codes of the observed residues (any atom) into out (cap bytes including
 * the NUL); fails when it does not fit. */
mf_status mf_protein_observed_sequence(const mf_protein *p, char *out, int64_t cap);

#endif
