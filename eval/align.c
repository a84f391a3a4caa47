/* Residue pairing: shared numbering or a Needleman-Wunsch/Gotoh alignment; see align.h. */
#include "eval/align.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "protein/residue_constants.h"

/* BLOSUM62 (Henikoff & Henikoff, PNAS 89:10915, 1992; NCBI's table, half-bit units) in AF2's
 * restype order ARNDCQEGHILKMFPSTWYV, then X with NCBI's X column. */
static const int8_t blosum62[21][21] = {
    /*  A   R   N   D   C   Q   E   G   H   I   L   K   M   F   P   S   T   W   Y   V   X */
    {4, -1, -2, -2, 0, -1, -1, 0, -2, -1, -1, -1, -1, -2, -1, 1, 0, -3, -2, 0, 0},       /* A */
    {-1, 5, 0, -2, -3, 1, 0, -2, 0, -3, -2, 2, -1, -3, -2, -1, -1, -3, -2, -3, -1},      /* R */
    {-2, 0, 6, 1, -3, 0, 0, 0, 1, -3, -3, 0, -2, -3, -2, 1, 0, -4, -2, -3, -1},          /* N */
    {-2, -2, 1, 6, -3, 0, 2, -1, -1, -3, -4, -1, -3, -3, -1, 0, -1, -4, -3, -3, -1},     /* D */
    {0, -3, -3, -3, 9, -3, -4, -3, -3, -1, -1, -3, -1, -2, -3, -1, -1, -2, -2, -1, -2},  /* C */
    {-1, 1, 0, 0, -3, 5, 2, -2, 0, -3, -2, 1, 0, -3, -1, 0, -1, -2, -1, -2, -1},         /* Q */
    {-1, 0, 0, 2, -4, 2, 5, -2, 0, -3, -3, 1, -2, -3, -1, 0, -1, -3, -2, -2, -1},        /* E */
    {0, -2, 0, -1, -3, -2, -2, 6, -2, -4, -4, -2, -3, -3, -2, 0, -2, -2, -3, -3, -1},    /* G */
    {-2, 0, 1, -1, -3, 0, 0, -2, 8, -3, -3, -1, -2, -1, -2, -1, -2, -2, 2, -3, -1},      /* H */
    {-1, -3, -3, -3, -1, -3, -3, -4, -3, 4, 2, -3, 1, 0, -3, -2, -1, -3, -1, 3, -1},     /* I */
    {-1, -2, -3, -4, -1, -2, -3, -4, -3, 2, 4, -2, 2, 0, -3, -2, -1, -2, -1, 1, -1},     /* L */
    {-1, 2, 0, -1, -3, 1, 1, -2, -1, -3, -2, 5, -1, -3, -1, 0, -1, -3, -2, -2, -1},      /* K */
    {-1, -1, -2, -3, -1, 0, -2, -3, -2, 1, 2, -1, 5, 0, -2, -1, -1, -1, -1, 1, -1},      /* M */
    {-2, -3, -3, -3, -2, -3, -3, -3, -1, 0, 0, -3, 0, 6, -4, -2, -2, 1, 3, -1, -1},      /* F */
    {-1, -2, -2, -1, -3, -1, -1, -2, -2, -3, -3, -1, -2, -4, 7, -1, -1, -4, -3, -2, -2}, /* P */
    {1, -1, 1, 0, -1, 0, 0, 0, -1, -2, -2, 0, -1, -2, -1, 4, 1, -3, -2, -2, 0},          /* S */
    {0, -1, 0, -1, -1, -1, -1, -2, -2, -1, -1, -1, -1, -2, -1, 1, 5, -2, -2, 0, 0},      /* T */
    {-3, -3, -4, -4, -2, -2, -3, -2, -2, -3, -2, -3, -1, 1, -4, -3, -2, 11, 2, -3, -2},  /* W */
    {-2, -2, -2, -3, -2, -1, -2, -3, 2, -1, -1, -2, -1, 3, -3, -2, -2, 2, 7, -1, -1},    /* Y */
    {0, -3, -3, -3, -1, -2, -2, -3, -3, 3, 1, -2, 1, -1, -2, -2, 0, -3, -1, 4, -1},      /* V */
    {0, -1, -1, -1, -2, -1, -1, -1, -1, -1, -1, -1, -1, -1, -2, 0, 0, -2, -1, -1, -1},   /* X */
};

int mf_blosum62(int a, int b)
{
    if (a < 0 || a > MF_RESTYPE_UNK || b < 0 || b > MF_RESTYPE_UNK) return -4; /* NCBI's '*' */
    return blosum62[a][b];
}

/* traceback byte: bits 0-1 the best state of the cell, bit 2 "the a-gap state extends", bit 3
 * "the b-gap state extends" */
enum { ST_MATCH = 0, ST_GAP_B = 1, ST_GAP_A = 2, EXT_GAP_B = 4, EXT_GAP_A = 8 };

#define NEG_INF (INT64_MIN / 4)

mf_status mf_align_global(const int32_t *a, int64_t na, const int32_t *b, int64_t nb,
                          int64_t *a_to_b, int64_t *score)
{
    MF_REQUIRE(a && b && a_to_b, "align: NULL argument");
    MF_REQUIRE(na >= 1 && nb >= 1, "align: empty sequence (lengths %lld and %lld)", (long long)na,
               (long long)nb);
    for (int64_t i = 0; i < na; i++)
        MF_REQUIRE(a[i] >= 0 && a[i] <= MF_RESTYPE_UNK, "align: first sequence: restype %d at %lld",
                   (int)a[i], (long long)i);
    for (int64_t j = 0; j < nb; j++)
        MF_REQUIRE(b[j] >= 0 && b[j] <= MF_RESTYPE_UNK,
                   "align: second sequence: restype %d at %lld", (int)b[j], (long long)j);
    const int64_t open = MF_ALIGN_GAP_OPEN + MF_ALIGN_GAP_EXTEND, extend = MF_ALIGN_GAP_EXTEND;
    const int64_t w = nb + 1;
    if ((double)(na + 1) * (double)w > 4e9)
        return MF_ERROR(MF_ERR_INVALID, "align: %lld x %lld residues is too large to align",
                        (long long)na, (long long)nb);
    uint8_t *tb = malloc((size_t)(na + 1) * (size_t)w);
    int64_t *h_prev = malloc((size_t)w * sizeof(int64_t)),
            *h_cur = malloc((size_t)w * sizeof(int64_t));
    int64_t *gb_prev = malloc((size_t)w * sizeof(int64_t)),
            *gb_cur = malloc((size_t)w * sizeof(int64_t));
    int64_t *last_col = malloc((size_t)(na + 1) * sizeof(int64_t));
    if (!tb || !h_prev || !h_cur || !gb_prev || !gb_cur || !last_col) {
        free(tb), free(h_prev), free(h_cur), free(gb_prev), free(gb_cur), free(last_col);
        return MF_ERROR(MF_ERR_NOMEM, "align: %lld x %lld dynamic programme", (long long)na,
                        (long long)nb);
    }
    /* Free end gaps: any prefix of either sequence may stay unaligned at no cost. */
    for (int64_t j = 0; j < w; j++) {
        h_prev[j] = 0;
        gb_prev[j] = NEG_INF;
    }
    last_col[0] = 0;
    for (int64_t i = 1; i <= na; i++) {
        int64_t ga = NEG_INF; /* b residue against a gap, along the row */
        h_cur[0] = 0;
        gb_cur[0] = NEG_INF;
        for (int64_t j = 1; j < w; j++) {
            uint8_t t = 0;
            int64_t m = h_prev[j - 1] + blosum62[a[i - 1]][b[j - 1]];
            int64_t gb_open = h_prev[j] - open, gb_ext = gb_prev[j] - extend;
            int64_t gb = gb_ext > gb_open ? gb_ext : gb_open;
            if (gb_ext > gb_open) t |= EXT_GAP_B;
            int64_t ga_open = h_cur[j - 1] - open, ga_ext = ga - extend;
            ga = ga_ext > ga_open ? ga_ext : ga_open;
            if (ga_ext > ga_open) t |= EXT_GAP_A;
            int64_t h = m;
            if (gb > h) {
                h = gb;
                t = (uint8_t)((t & ~3) | ST_GAP_B);
            }
            if (ga > h) {
                h = ga;
                t = (uint8_t)((t & ~3) | ST_GAP_A);
            }
            h_cur[j] = h;
            gb_cur[j] = gb;
            tb[i * w + j] = t;
        }
        last_col[i] = h_cur[nb];
        int64_t *tmp = h_prev;
        h_prev = h_cur;
        h_cur = tmp;
        tmp = gb_prev;
        gb_prev = gb_cur;
        gb_cur = tmp;
    }
    /* h_prev is the last row; the end may be anywhere on the last row or column */
    int64_t bi = na, bj = nb, best = h_prev[nb];
    for (int64_t j = nb - 1; j >= 0; j--)
        if (h_prev[j] > best) best = h_prev[j], bi = na, bj = j;
    for (int64_t i = na - 1; i >= 0; i--)
        if (last_col[i] > best) best = last_col[i], bi = i, bj = nb;

    for (int64_t i = 0; i < na; i++) a_to_b[i] = -1;
    int state = ST_MATCH; /* in the best state of the cell */
    bool in_best = true;
    int64_t i = bi, j = bj;
    while (i > 0 && j > 0) {
        uint8_t t = tb[i * w + j];
        if (in_best) {
            state = t & 3;
            in_best = false;
        }
        if (state == ST_MATCH) {
            a_to_b[i - 1] = j - 1;
            i--, j--;
            in_best = true;
        } else if (state == ST_GAP_B) {
            bool ext = t & EXT_GAP_B;
            i--;
            in_best = !ext;
        } else {
            bool ext = t & EXT_GAP_A;
            j--;
            in_best = !ext;
        }
    }
    if (score) *score = best;
    free(tb), free(h_prev), free(h_cur), free(gb_prev), free(gb_cur), free(last_col);
    return MF_OK;
}

const char *mf_pairing_method_name(mf_pairing_method m)
{
    return m == MF_PAIRING_RESIDUE_NUMBER ? "residue_number" : "sequence_alignment";
}

const char *mf_pairing_method_description(mf_pairing_method m)
{
    return m == MF_PAIRING_RESIDUE_NUMBER
               ? "by author residue number and insertion code (shared numbering)"
               : "by sequence alignment (Needleman-Wunsch, affine gaps: BLOSUM62, gap open 11 + 1 "
                 "per residue, end gaps free)";
}

static bool observed(const mf_protein *p, int64_t i)
{
    for (int a = 0; a < MF_ATOM37; a++)
        if (p->atom_mask[i * MF_ATOM37 + a] != 0.0f) return true;
    return false;
}

typedef struct {
    int64_t key;
    int64_t index;
} num_key;

static int cmp_key(const void *pa, const void *pb)
{
    const num_key *x = pa, *y = pb;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static int64_t residue_key(const mf_protein *p, int64_t i)
{
    return (int64_t)p->residue_index[i] * 256 + (unsigned char)p->insertion_code[i];
}

/* Sorted keys of the observed residues; returns the count, -1 on allocation failure; *dup set
 * when a key repeats. */
static int64_t observed_keys(const mf_protein *p, num_key **out, bool *dup)
{
    num_key *k = malloc((size_t)(p->num_res + 1) * sizeof *k);
    if (!k) return -1;
    int64_t m = 0;
    for (int64_t i = 0; i < p->num_res; i++)
        if (observed(p, i)) k[m++] = (num_key){residue_key(p, i), i};
    qsort(k, (size_t)m, sizeof *k, cmp_key);
    *dup = false;
    for (int64_t i = 1; i < m; i++)
        if (k[i].key == k[i - 1].key) *dup = true;
    *out = k;
    return m;
}

static int64_t find_key(const num_key *k, int64_t m, int64_t key)
{
    int64_t lo = 0, hi = m;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (k[mid].key < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < m && k[lo].key == key ? k[lo].index : -1;
}

void mf_residue_pairing_free(mf_residue_pairing *p)
{
    if (!p) return;
    free(p->ref_to_pred);
    memset(p, 0, sizeof *p);
}

mf_status mf_pair_residues(const mf_protein *pred, const mf_protein *ref, mf_residue_pairing *out)
{
    MF_REQUIRE(pred && ref && out, "pairing: NULL argument");
    memset(out, 0, sizeof *out);
    MF_REQUIRE(pred->num_res >= 1 && ref->num_res >= 1,
               "pairing: empty chain (prediction %lld residues, reference %lld)",
               (long long)pred->num_res, (long long)ref->num_res);
    num_key *kp = NULL, *kr = NULL;
    bool dup_p = false, dup_r = false;
    int64_t mp = observed_keys(pred, &kp, &dup_p), mr = observed_keys(ref, &kr, &dup_r);
    out->ref_to_pred = malloc((size_t)ref->num_res * sizeof(int64_t));
    if (mp < 0 || mr < 0 || !out->ref_to_pred) {
        free(kp), free(kr);
        mf_residue_pairing_free(out);
        return MF_ERROR(MF_ERR_NOMEM, "pairing: %lld and %lld residues", (long long)pred->num_res,
                        (long long)ref->num_res);
    }
    out->n_ref = ref->num_res;
    for (int64_t k = 0; k < mp; k++) {
        int64_t r = find_key(kr, mr, kp[k].key);
        if (r >= 0 && ref->aatype[r] == pred->aatype[kp[k].index]) out->n_number_hits++;
    }
    int64_t smaller = mp < mr ? mp : mr;
    if (!dup_p && !dup_r && smaller > 0 && 2 * out->n_number_hits > smaller) {
        out->method = MF_PAIRING_RESIDUE_NUMBER;
        for (int64_t i = 0; i < ref->num_res; i++) out->ref_to_pred[i] = -1;
        for (int64_t k = 0; k < mr; k++)
            out->ref_to_pred[kr[k].index] = find_key(kp, mp, kr[k].key);
    } else {
        out->method = MF_PAIRING_SEQUENCE_ALIGNMENT;
        mf_status st = mf_align_global(ref->aatype, ref->num_res, pred->aatype, pred->num_res,
                                       out->ref_to_pred, NULL);
        if (st != MF_OK) {
            free(kp), free(kr);
            mf_residue_pairing_free(out);
            return mf_error_context(st, "pairing by sequence");
        }
    }
    free(kp), free(kr);
    for (int64_t i = 0; i < ref->num_res; i++) {
        int64_t j = out->ref_to_pred[i];
        if (j < 0 || !observed(ref, i) || !observed(pred, j)) continue;
        out->n_pairs++;
        out->n_identical += ref->aatype[i] == pred->aatype[j];
    }
    return MF_OK;
}
