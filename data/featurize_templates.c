/* Template features from HHsearch hits, as AlphaFold 2's data/templates.py computes them
 * (HhsearchHitFeaturizer): prefilter, query-to-template mapping, the template chain found in its
 * mmCIF, atoms placed at the query positions. See featurize.h. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/featurize.h"
#include "data/structure_io.h"
#include "protein/residue_constants.h"

/* AF2 _assess_hhsearch_hit defaults and _extract_template_features limits. */
#define MAX_SUBSEQUENCE_RATIO 0.95
#define MIN_ALIGN_RATIO       0.1
#define MIN_TEMPLATE_LENGTH   10
#define MAX_CA_CA_DISTANCE    150.0
#define MIN_TEMPLATE_ATOMS    5
#define MIN_REALIGN_IDENTITY  0.9
/* Realignment is a dynamic program over len(hit) x len(chain) cells. */
#define MAX_REALIGN_CELLS ((int64_t)64 << 20)

const char *mf_template_skip_name(mf_template_skip r)
{
    switch (r) {
    case MF_TSKIP_NAME:
        return "hit name is not PDBID_chain";
    case MF_TSKIP_DATE:
        return "released after the max template date";
    case MF_TSKIP_ALIGN_RATIO:
        return "aligned columns <= 10% of the query";
    case MF_TSKIP_DUPLICATE:
        return "duplicate of the query (subsequence covering > 95%)";
    case MF_TSKIP_LENGTH:
        return "fewer than 10 template residues";
    case MF_TSKIP_NO_MAPPING:
        return "hit's query residues not in the chain sequence";
    case MF_TSKIP_NO_FILE:
        return "no mmCIF file in the template directory";
    case MF_TSKIP_PARSE:
        return "template mmCIF unreadable or without protein chains";
    case MF_TSKIP_SEQUENCE:
        return "template sequence not found in the mmCIF (realignment < 90% identical)";
    case MF_TSKIP_ATOMS:
        return "template atoms: CA-CA gap > 150 A or fewer than 5 atoms aligned";
    case MF_TSKIP_COUNT:
        break;
    }
    return "?";
}

bool mf_template_date_valid(const char *s)
{
    if (!s || strlen(s) != 10 || s[4] != '-' || s[7] != '-') return false;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && !isdigit((unsigned char)s[i])) return false;
    const int m = (s[5] - '0') * 10 + (s[6] - '0'), d = (s[8] - '0') * 10 + (s[9] - '0');
    return m >= 1 && m <= 12 && d >= 1 && d <= 31;
}

void mf_template_features_free(mf_template_features *t)
{
    if (!t) return;
    free(t->aatype);
    free(t->all_atom_positions);
    free(t->all_atom_masks);
    free(t->domain_names);
    free(t->sum_probs);
    memset(t, 0, sizeof *t);
}

void mf_fix_arginine_nh(const int32_t *aatype, float *positions, const float *mask, int64_t num_res)
{
    int arg = mf_restype_from_one_letter('R');
    int cd = mf_atom37_index("CD"), nh1 = mf_atom37_index("NH1"), nh2 = mf_atom37_index("NH2");
    for (int64_t i = 0; i < num_res; i++) {
        if (aatype[i] != arg) continue;
        const float *m = mask + i * MF_ATOM37;
        if (!(m[cd] > 0.f && m[nh1] > 0.f && m[nh2] > 0.f)) continue;
        float *p = positions + i * MF_ATOM37 * 3;
        double d1 = 0, d2 = 0;
        for (int k = 0; k < 3; k++) {
            double a = p[nh1 * 3 + k] - p[cd * 3 + k], b = p[nh2 * 3 + k] - p[cd * 3 + k];
            d1 += a * a;
            d2 += b * b;
        }
        if (d1 > d2)
            for (int k = 0; k < 3; k++) {
                float t = p[nh1 * 3 + k];
                p[nh1 * 3 + k] = p[nh2 * 3 + k];
                p[nh2 * 3 + k] = t;
            }
    }
}

/* "1abc_A..." -> pdb id "1abc" (lower case), chain "A" (AF2 _get_pdb_id_and_chain). */
static int hit_pdb_and_chain(const char *name, char *pdb, char *chain, size_t chain_cap)
{
    for (int i = 0; i < 4; i++)
        if (!isalnum((unsigned char)name[i])) return -1;
    if (name[4] != '_') return -1;
    size_t n = 0;
    while (isalnum((unsigned char)name[5 + n]) || name[5 + n] == '.') n++;
    if (n == 0 || n >= chain_cap) return -1;
    for (int i = 0; i < 4; i++) pdb[i] = (char)tolower((unsigned char)name[i]);
    pdb[4] = '\0';
    memcpy(chain, name + 5, n);
    chain[n] = '\0';
    return 0;
}

static int file_exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* <dir>/<id>.cif[.gz], the id also in upper case, and the PDB's divided layout <dir>/bc/<id>... */
static int find_template_file(const char *dir, const char *pdb, char *path, size_t cap)
{
    char upper[8];
    for (int i = 0; i < 5; i++) upper[i] = (char)toupper((unsigned char)pdb[i]);
    const char *ids[2] = {pdb, upper};
    static const char *ext[2] = {".cif", ".cif.gz"};
    for (int layout = 0; layout < 2; layout++)
        for (int k = 0; k < 2; k++)
            for (int e = 0; e < 2; e++) {
                if (layout == 0)
                    snprintf(path, cap, "%s/%s%s", dir, ids[k], ext[e]);
                else
                    snprintf(path, cap, "%s/%.2s/%s%s", dir, ids[k] + 1, ids[k], ext[e]);
                if (file_exists(path)) return 0;
            }
    return -1;
}

/* First offset where `t` matches `s` with 'X' in t matching anything and 'X' in s matching any
 * letter of t (AF2's fuzzy regex); -1 when none. */
static int64_t fuzzy_find(const char *s, const char *t)
{
    size_t n = strlen(s), m = strlen(t);
    for (size_t i = 0; i + m <= n; i++) {
        size_t j = 0;
        while (j < m && (t[j] == 'X' || s[i + j] == 'X' || s[i + j] == t[j])) j++;
        if (j == m) return (int64_t)i;
    }
    return -1;
}

/* Realignment of the hit's template residues to the mmCIF chain sequence, in place of AF2's
 * kalign call: a global alignment where end gaps are free (the hit covers part of the chain),
 * identities score 2, mismatches -1, inner gaps -2. old_to_new[i] gets the chain position of hit
 * residue i or -1. Returns the identity count, or -1 when the problem is too large or out of
 * memory. */
static int64_t realign(const char *old, const char *new_seq, int32_t *old_to_new)
{
    int64_t n = (int64_t)strlen(old), m = (int64_t)strlen(new_seq);
    if (n == 0 || m == 0 || (n + 1) * (m + 1) > MAX_REALIGN_CELLS) return -1;
    int32_t *score = malloc((size_t)(n + 1) * (size_t)(m + 1) * sizeof *score);
    if (!score) return -1;
#define S(i, j) score[(int64_t)(i) * (m + 1) + (j)]
    for (int64_t i = 0; i <= n; i++) S(i, 0) = 0;
    for (int64_t j = 0; j <= m; j++) S(0, j) = 0;
    for (int64_t i = 1; i <= n; i++)
        for (int64_t j = 1; j <= m; j++) {
            int32_t d = S(i - 1, j - 1) + (old[i - 1] == new_seq[j - 1] ? 2 : -1);
            int32_t up = S(i - 1, j) - (j == m ? 0 : 2), left = S(i, j - 1) - (i == n ? 0 : 2);
            S(i, j) = d > up ? (d > left ? d : left) : (up > left ? up : left);
        }
    for (int64_t i = 0; i < n; i++) old_to_new[i] = -1;
    int64_t i = n, j = m, same = 0;
    while (i > 0 && j > 0) {
        int32_t d = S(i - 1, j - 1) + (old[i - 1] == new_seq[j - 1] ? 2 : -1);
        if (S(i, j) == d) {
            old_to_new[i - 1] = (int32_t)(j - 1);
            same += old[i - 1] == new_seq[j - 1];
            i--;
            j--;
        } else if (S(i, j) == S(i - 1, j) - (j == m ? 0 : 2)) {
            i--;
        } else {
            j--;
        }
    }
#undef S
    free(score);
    return same;
}

typedef struct {
    const mf_protein *chain; /* where the atoms come from */
    const char *sequence;    /* template residue letters, indexed by mapping values */
    int64_t offset;          /* mapping value + offset = residue of chain */
} template_match;

/* AF2 _find_template_in_pdb, then _realign_pdb_template_to_query. mapping may be rewritten. */
static mf_template_skip find_in_entry(const mf_protein *chains, int n, const char *chain_id,
                                      const char *tseq, int32_t *mapping, int64_t nq,
                                      template_match *m, bool *realigned)
{
    *realigned = false;
    const mf_protein *named = NULL;
    for (int i = 0; i < n; i++)
        if (!strcmp(chains[i].chain_id, chain_id)) named = &chains[i];
    if (named) {
        const char *p = strstr(named->sequence, tseq);
        if (p) {
            *m = (template_match){named, tseq, p - named->sequence};
            return MF_TSKIP_COUNT;
        }
    }
    for (int i = 0; i < n; i++) {
        const char *p = strstr(chains[i].sequence, tseq);
        if (p) {
            *m = (template_match){&chains[i], tseq, p - chains[i].sequence};
            return MF_TSKIP_COUNT;
        }
    }
    for (int i = 0; i < n; i++) {
        int64_t off = fuzzy_find(chains[i].sequence, tseq);
        if (off >= 0) {
            *m = (template_match){&chains[i], tseq, off};
            return MF_TSKIP_COUNT;
        }
    }
    if (!named && n == 1) named = &chains[0];
    if (!named) return MF_TSKIP_SEQUENCE;
    int64_t nt = (int64_t)strlen(tseq), nn = named->num_res;
    int32_t *old_to_new = malloc((size_t)(nt ? nt : 1) * sizeof *old_to_new);
    if (!old_to_new) return MF_TSKIP_SEQUENCE;
    int64_t same = realign(tseq, named->sequence, old_to_new);
    int64_t shorter = nt < nn ? nt : nn;
    if (same < 0 || (double)same / (double)shorter < MIN_REALIGN_IDENTITY) {
        free(old_to_new);
        return MF_TSKIP_SEQUENCE;
    }
    for (int64_t q = 0; q < nq; q++)
        if (mapping[q] >= 0) mapping[q] = old_to_new[mapping[q]];
    free(old_to_new);
    *m = (template_match){named, named->sequence, 0};
    *realigned = true;
    return MF_TSKIP_COUNT;
}

/* AF2 _check_residue_distances over the whole template chain. */
static int ca_gaps_ok(const mf_protein *c)
{
    int ca = mf_atom37_index("CA");
    const float *prev = NULL;
    for (int64_t i = 0; i < c->num_res; i++) {
        bool on = c->atom_mask[i * MF_ATOM37 + ca] > 0.f;
        const float *x = c->atom_positions + (i * MF_ATOM37 + ca) * 3;
        if (on && prev) {
            double d2 = 0;
            for (int k = 0; k < 3; k++) d2 += (double)(x[k] - prev[k]) * (x[k] - prev[k]);
            if (sqrt(d2) > MAX_CA_CA_DISTANCE) return 0;
        }
        prev = on ? x : NULL;
    }
    return 1;
}

/* Sum_probs descending, ties in file order (AF2 sorts with Python's stable sort). */
static void sort_hits(const mf_hhr *hhr, int64_t *order)
{
    for (int64_t i = 0; i < hhr->num_hits; i++) {
        int64_t v = i, j = i;
        while (j > 0 && hhr->hits[order[j - 1]].sum_probs < hhr->hits[v].sum_probs) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = v;
    }
}

/* One hit: MF_TSKIP_COUNT when it became template `slot` of out. */
static mf_status process_hit(const char *query, int64_t nq, const mf_hhr_hit *hit,
                             const mf_template_options *o, mf_template_features *out, int slot,
                             mf_template_skip *result)
{
    char pdb[8], chain_id[MF_CHAIN_ID_MAX];
    *result = MF_TSKIP_COUNT;
    if (hit_pdb_and_chain(hit->name, pdb, chain_id, sizeof chain_id)) {
        *result = MF_TSKIP_NAME;
        return MF_OK;
    }
    char *tseq = mf_hhr_hit_template_sequence(hit);
    int32_t *mapping = malloc((size_t)nq * sizeof *mapping);
    mf_protein *chains = NULL;
    int n = 0;
    mf_status st = MF_OK;
    if (!tseq || !mapping) {
        st = MF_ERROR(MF_ERR_NOMEM, "template hit %s", hit->name);
        goto cleanup;
    }
    /* _assess_hhsearch_hit */
    int64_t nt = (int64_t)strlen(tseq);
    double align_ratio = (double)hit->aligned_cols / (double)nq;
    double length_ratio = (double)nt / (double)nq;
    if (align_ratio <= MIN_ALIGN_RATIO) {
        *result = MF_TSKIP_ALIGN_RATIO;
    } else if (strstr(query, tseq) && length_ratio > MAX_SUBSEQUENCE_RATIO) {
        *result = MF_TSKIP_DUPLICATE;
    } else if (nt < MIN_TEMPLATE_LENGTH) {
        *result = MF_TSKIP_LENGTH;
    }
    if (*result != MF_TSKIP_COUNT) goto cleanup;
    bool found;
    MF_TRY_GOTO(mf_hhr_query_to_hit_mapping(hit, query, mapping, &found));
    if (!found) {
        *result = MF_TSKIP_NO_MAPPING;
        goto cleanup;
    }
    char path[4096];
    if (find_template_file(o->mmcif_dir, pdb, path, sizeof path)) {
        *result = MF_TSKIP_NO_FILE;
        goto cleanup;
    }
    if (mf_structure_read(path, &chains, &n) != MF_OK || n == 0) {
        *result = MF_TSKIP_PARSE;
        goto cleanup;
    }
    const char *date = chains[0].entry.release_date;
    if (o->max_template_date && o->max_template_date[0] && date[0] &&
        strcmp(date, o->max_template_date) > 0) {
        *result = MF_TSKIP_DATE;
        goto cleanup;
    }
    template_match m;
    bool realigned;
    *result = find_in_entry(chains, n, chain_id, tseq, mapping, nq, &m, &realigned);
    if (*result != MF_TSKIP_COUNT) goto cleanup;
    if (!ca_gaps_ok(m.chain)) {
        *result = MF_TSKIP_ATOMS;
        goto cleanup;
    }
    int64_t slen = (int64_t)strlen(m.sequence);
    float *pos = out->all_atom_positions + (int64_t)slot * nq * MF_ATOM37 * 3;
    float *mask = out->all_atom_masks + (int64_t)slot * nq * MF_ATOM37;
    int32_t *aa = out->aatype + (int64_t)slot * nq;
    memset(pos, 0, (size_t)nq * MF_ATOM37 * 3 * sizeof *pos);
    memset(mask, 0, (size_t)nq * MF_ATOM37 * sizeof *mask);
    double atoms = 0;
    for (int64_t q = 0; q < nq; q++) {
        aa[q] = MF_MSA_GAP;
        int32_t v = mapping[q];
        if (v < 0) continue;
        int64_t r = v + m.offset;
        if (v >= slen || r >= m.chain->num_res) continue;
        memcpy(pos + q * MF_ATOM37 * 3, m.chain->atom_positions + r * MF_ATOM37 * 3,
               MF_ATOM37 * 3 * sizeof *pos);
        memcpy(mask + q * MF_ATOM37, m.chain->atom_mask + r * MF_ATOM37, MF_ATOM37 * sizeof *mask);
        int id = mf_hhblits_aa_to_id(m.sequence[v]);
        aa[q] = id >= 0 ? id : MF_RESTYPE_UNK;
        for (int a = 0; a < MF_ATOM37; a++) atoms += mask[q * MF_ATOM37 + a];
    }
    if (atoms < MIN_TEMPLATE_ATOMS) {
        *result = MF_TSKIP_ATOMS;
        goto cleanup;
    }
    /* The letters index restypes for the arginine fix: map HHblits ids back through letters. */
    int32_t *rt = malloc((size_t)nq * sizeof *rt);
    if (!rt) {
        st = MF_ERROR(MF_ERR_NOMEM, "template hit %s", hit->name);
        goto cleanup;
    }
    for (int64_t q = 0; q < nq; q++) {
        int r = mf_restype_from_one_letter(mf_hhblits_id_to_aa(aa[q]));
        rt[q] = r >= 0 ? r : MF_RESTYPE_UNK;
    }
    mf_fix_arginine_nh(rt, pos, mask, nq);
    free(rt);
    snprintf(out->domain_names[slot], MF_TEMPLATE_NAME_MAX, "%s_%s", pdb, m.chain->chain_id);
    out->sum_probs[slot] = (float)hit->sum_probs;
    out->realigned += realigned;
cleanup:
    free(tseq);
    free(mapping);
    mf_protein_list_free(chains, n);
    return st;
}

mf_status mf_template_features_make(const char *query, const mf_hhr *hhr,
                                    const mf_template_options *o, mf_template_features *out)
{
    MF_REQUIRE(query && hhr && o && o->mmcif_dir && out,
               "mf_template_features_make: NULL argument");
    memset(out, 0, sizeof *out);
    int64_t nq = (int64_t)strlen(query);
    MF_REQUIRE(nq > 0, "mf_template_features_make: empty query sequence");
    int max = o->max_templates > 0 ? o->max_templates : MF_FEATURIZE_MAX_TEMPLATES;
    int cap = (int)(hhr->num_hits < max ? hhr->num_hits : max);
    int slots = cap ? cap : 1;
    out->num_res = nq;
    out->aatype = malloc((size_t)slots * (size_t)nq * sizeof *out->aatype);
    out->all_atom_positions = malloc((size_t)slots * (size_t)nq * MF_ATOM37 * 3 * sizeof(float));
    out->all_atom_masks = malloc((size_t)slots * (size_t)nq * MF_ATOM37 * sizeof(float));
    out->domain_names = calloc((size_t)slots, sizeof *out->domain_names);
    out->sum_probs = calloc((size_t)slots, sizeof *out->sum_probs);
    int64_t *order = malloc((size_t)(hhr->num_hits ? hhr->num_hits : 1) * sizeof *order);
    mf_status st = MF_OK;
    if (!out->aatype || !out->all_atom_positions || !out->all_atom_masks || !out->domain_names ||
        !out->sum_probs || !order) {
        st = MF_ERROR(MF_ERR_NOMEM, "template features: %d templates of %lld residues", slots,
                      (long long)nq);
        goto cleanup;
    }
    sort_hits(hhr, order);
    for (int64_t k = 0; k < hhr->num_hits && out->num_templates < max; k++) {
        mf_template_skip why;
        MF_TRY_GOTO(process_hit(query, nq, &hhr->hits[order[k]], o, out, out->num_templates, &why));
        if (why == MF_TSKIP_COUNT)
            out->num_templates++;
        else
            out->skipped[why]++;
    }
cleanup:
    free(order);
    if (st != MF_OK) mf_template_features_free(out);
    return st;
}
