#include "protein/protein.h"

#include <stdlib.h>
#include <string.h>

mf_status mf_protein_alloc(mf_protein *p, int64_t num_res)
{
    MF_REQUIRE(p != NULL, "mf_protein_alloc: NULL record");
    MF_REQUIRE(num_res >= 0 && num_res <= (int64_t)1 << 24,
               "mf_protein_alloc: num_res %lld outside [0, 2^24]", (long long)num_res);
    memset(p, 0, sizeof *p);
    size_t n = (size_t)num_res, n1 = n ? n : 1; /* calloc(0) may return NULL */
    p->aatype = calloc(n1, sizeof *p->aatype);
    p->atom_positions = calloc(n1 * MF_ATOM37 * 3, sizeof *p->atom_positions);
    p->atom_mask = calloc(n1 * MF_ATOM37, sizeof *p->atom_mask);
    p->residue_index = calloc(n1, sizeof *p->residue_index);
    p->insertion_code = calloc(n1, 1);
    p->b_factors = calloc(n1 * MF_ATOM37, sizeof *p->b_factors);
    p->sequence = calloc(n + 1, 1);
    if (!p->aatype || !p->atom_positions || !p->atom_mask || !p->residue_index ||
        !p->insertion_code || !p->b_factors || !p->sequence) {
        mf_protein_free(p);
        return MF_ERROR(MF_ERR_NOMEM, "mf_protein_alloc: %lld residues", (long long)num_res);
    }
    p->num_res = num_res;
    for (size_t i = 0; i < n; i++) {
        p->aatype[i] = MF_RESTYPE_UNK;
        p->insertion_code[i] = ' ';
        p->sequence[i] = 'X';
    }
    return MF_OK;
}

void mf_protein_free(mf_protein *p)
{
    if (!p) return;
    free(p->aatype);
    free(p->atom_positions);
    free(p->atom_mask);
    free(p->residue_index);
    free(p->insertion_code);
    free(p->b_factors);
    free(p->sequence);
    memset(p, 0, sizeof *p);
}

void mf_protein_list_free(mf_protein *chains, int n)
{
    if (!chains) return;
    for (int i = 0; i < n; i++) mf_protein_free(&chains[i]);
    free(chains);
}

void mf_protein_set_residue(mf_protein *p, int64_t i, const char *three_letter)
{
    if (!p || i < 0 || i >= p->num_res) return;
    int rt = mf_restype_from_three_letter(three_letter);
    if (rt < 0 || rt > MF_RESTYPE_UNK) rt = MF_RESTYPE_UNK;
    p->aatype[i] = rt;
    char c = mf_restype_one_letter(rt);
    p->sequence[i] = c ? c : 'X';
}

static int residue_observed(const mf_protein *p, int64_t i)
{
    for (int a = 0; a < MF_ATOM37; a++)
        if (p->atom_mask[i * MF_ATOM37 + a] > 0.f) return 1;
    return 0;
}

int64_t mf_protein_num_observed(const mf_protein *p)
{
    int64_t n = 0;
    for (int64_t i = 0; i < p->num_res; i++) n += residue_observed(p, i);
    return n;
}

int64_t mf_protein_num_observed_ca(const mf_protein *p)
{
    int ca = mf_atom37_index("CA");
    int64_t n = 0;
    for (int64_t i = 0; i < p->num_res; i++) n += p->atom_mask[i * MF_ATOM37 + ca] > 0.f;
    return n;
}

mf_status mf_protein_observed_sequence(const mf_protein *p, char *out, int64_t cap)
{
    MF_REQUIRE(p && out && cap > 0, "mf_protein_observed_sequence: bad arguments");
    int64_t k = 0;
    for (int64_t i = 0; i < p->num_res; i++) {
        if (!residue_observed(p, i)) continue;
        if (k + 1 >= cap) {
            out[0] = '\0';
            return MF_ERROR(MF_ERR_INVALID, "observed sequence of chain %s exceeds %lld bytes",
                            p->chain_id, (long long)cap);
        }
        out[k++] = p->sequence[i];
    }
    out[k] = '\0';
    return MF_OK;
}
