/* Residue pairing of a prediction with a reference chain, for the metrics of eval/:
 *   - by residue number, when the two share a numbering: more than half of the observed residues
 *     of the smaller one have a residue with the same author number and insertion code, and the
 *     same residue type, observed in the other, and neither repeats a number; residues pair by
 *     equal number + insertion code (as the TMscore program pairs them), whatever their type;
 *   - otherwise by a sequence alignment of the two full sequences: Needleman-Wunsch with affine
 *     gaps (Gotoh), BLOSUM62 scores, gap opening 11 plus 1 per gapped residue (BLAST's defaults),
 *     end gaps free (so a domain aligns inside a longer chain); ties prefer a match, then a gap in
 *     the second sequence. Aligned residue pairs with either residue unobserved are kept in the
 *     map; the metrics use those whose atoms they need exist in both. */
#ifndef MF_EVAL_ALIGN_H
#define MF_EVAL_ALIGN_H

#include <stdint.h>

#include "core/status.h"
#include "protein/protein.h"

#define MF_ALIGN_GAP_OPEN   11
#define MF_ALIGN_GAP_EXTEND 1

/* BLOSUM62 score of two restypes in AF2 order (0..19, 20 = X). */
int mf_blosum62(int restype_a, int restype_b);

/* Global alignment with free end gaps of a (na restypes) and b (nb restypes): a_to_b[i] is the
 * position in b aligned with a[i], -1 for a gap; *score (may be NULL) the alignment score. The
 * dynamic programme keeps one byte per cell: (na + 1) (nb + 1) bytes. Restypes outside 0..20
 * fail with MF_ERR_INVALID. */
mf_status mf_align_global(const int32_t *a, int64_t na, const int32_t *b, int64_t nb,
                          int64_t *a_to_b /* [na] */, int64_t *score);

typedef enum {
    MF_PAIRING_RESIDUE_NUMBER = 0,
    MF_PAIRING_SEQUENCE_ALIGNMENT = 1,
} mf_pairing_method;

/* "residue_number" or "sequence_alignment" (the names the eval JSON uses). */
const char *mf_pairing_method_name(mf_pairing_method m);
/* One line saying how the pairing was made (scores and gaps for the alignment). */
const char *mf_pairing_method_description(mf_pairing_method m);

typedef struct {
    mf_pairing_method method;
    int64_t n_ref;
    int64_t *ref_to_pred;  /* [n_ref] paired prediction residue, -1 for none */
    int64_t n_pairs;       /* pairs of residues both observed (any atom) */
    int64_t n_identical;   /* of those, with the same residue type */
    int64_t n_number_hits; /* observed residues matched by number with the same type (the test) */
} mf_residue_pairing;

/* Pairs the residues of pred with those of ref; free with mf_residue_pairing_free. */
mf_status mf_pair_residues(const mf_protein *pred, const mf_protein *ref, mf_residue_pairing *out);
void mf_residue_pairing_free(mf_residue_pairing *p);

#endif
