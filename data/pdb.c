#include "data/pdb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/structure_io.h"

#define NUM_UNKNOWN INT32_MIN
/* The dynamic-programming placement on SEQRES keeps one back pointer per (residue, position). */
#define MAX_MAP_CELLS ((int64_t)1 << 25)

typedef struct {
    int32_t num;
    char ins;
    char name[6];
    int het;      /* all its records are HETATM */
    int n, ca, c; /* backbone atoms seen (modified residues are polymer when they have them) */
    int keep;
    int64_t first, len; /* its records, after grouping */
} obs_res;

typedef struct {
    char id;
    int terminated; /* TER seen: later HETATM records of the chain are ligands */
    char (*seqres)[6];
    int64_t n_seqres, cap_seqres;
    int32_t declared, seqres_line;
    obs_res *res;
    int64_t n_res, cap_res, last;
} chain;

typedef struct {
    mf_atom_record a;
    int32_t chain;
    int64_t res;
} prec;

typedef struct {
    const char *name;
    chain *ch;
    int n_ch, cap_ch;
    prec *recs;
    int64_t n_recs, cap_recs;
    mf_entry_info info;
    int have_remark2;
    int models, after_first_model;
    int last_chain;
    char (*modres)[2][6]; /* MODRES: modified residue name, standard parent name */
    int64_t n_modres, cap_modres;
} pdb_state;

static void state_free(pdb_state *s)
{
    for (int i = 0; i < s->n_ch; i++) {
        free(s->ch[i].seqres);
        free(s->ch[i].res);
    }
    free(s->ch);
    free(s->recs);
    free(s->modres);
}

/* Grows *p (elements of size sz) to hold n + 1. */
static int grow(void **p, int64_t *cap, int64_t n, size_t sz)
{
    if (n < *cap) return 0;
    int64_t c = *cap ? 2 * *cap : 64;
    void *q = realloc(*p, (size_t)c * sz);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

/* Columns a..b (1-based, inclusive) of the line, blanks trimmed; "" past the end. */
static void field(const char *line, int64_t len, int a, int b, char *out, size_t cap)
{
    int64_t s = a - 1, e = b < len ? b : len;
    size_t n = 0;
    while (s < e && line[s] == ' ') s++;
    while (e > s && line[e - 1] == ' ') e--;
    for (int64_t k = s; k < e && n + 1 < cap; k++) out[n++] = line[k];
    out[n] = '\0';
}

static mf_status get_chain(pdb_state *s, char id, int *out)
{
    for (int i = 0; i < s->n_ch; i++)
        if (s->ch[i].id == id) {
            *out = i;
            return MF_OK;
        }
    int64_t cap = s->cap_ch;
    if (grow((void **)&s->ch, &cap, s->n_ch, sizeof *s->ch))
        return MF_ERROR(MF_ERR_NOMEM, "%s: %d chains", s->name, s->n_ch + 1);
    s->cap_ch = (int)cap;
    chain *c = &s->ch[s->n_ch];
    memset(c, 0, sizeof *c);
    c->id = id;
    c->last = -1;
    *out = s->n_ch++;
    return MF_OK;
}

static mf_status parse_seqres(pdb_state *s, const char *line, int64_t len, int32_t ln)
{
    char buf[16];
    if (len < 19)
        return MF_ERROR(MF_ERR_FORMAT, "%s:%d: SEQRES: record of %lld characters is too short",
                        s->name, ln, (long long)len);
    int ci;
    MF_TRY(get_chain(s, line[11], &ci));
    chain *c = &s->ch[ci];
    int32_t declared;
    field(line, len, 14, 17, buf, sizeof buf);
    if (mf_parse_int32(buf, strlen(buf), &declared) != 0 || declared < 0)
        return MF_ERROR(MF_ERR_FORMAT, "%s:%d: SEQRES numRes: '%s' is not a residue count", s->name,
                        ln, buf);
    if (c->seqres_line && declared != c->declared)
        return MF_ERROR(MF_ERR_FORMAT, "%s:%d: SEQRES numRes: %d, earlier lines said %d", s->name,
                        ln, declared, c->declared);
    c->declared = declared;
    if (!c->seqres_line) c->seqres_line = ln;
    for (int64_t k = 19; k < len;) {
        while (k < len && line[k] == ' ') k++;
        int64_t e = k;
        while (e < len && line[e] != ' ') e++;
        if (e == k) break;
        if (e - k > 5)
            return MF_ERROR(MF_ERR_FORMAT, "%s:%d: SEQRES resName: '%.*s' is longer than 5",
                            s->name, ln, (int)(e - k), line + k);
        if (grow((void **)&c->seqres, &c->cap_seqres, c->n_seqres, sizeof *c->seqres))
            return MF_ERROR(MF_ERR_NOMEM, "%s: SEQRES of chain %c", s->name, c->id);
        memcpy(c->seqres[c->n_seqres], line + k, (size_t)(e - k));
        c->seqres[c->n_seqres++][e - k] = '\0';
        k = e;
    }
    return MF_OK;
}

static int is_water(const char *name)
{
    return !strcmp(name, "HOH") || !strcmp(name, "WAT") || !strcmp(name, "DOD");
}

static mf_status parse_atom(pdb_state *s, const char *line, int64_t len, int32_t ln, int het)
{
    const char *rec = het ? "HETATM" : "ATOM";
    char atom[8], res[6], buf[16];
    if (len < 54)
        return MF_ERROR(MF_ERR_FORMAT,
                        "%s:%d: %s: record of %lld characters, coordinates need columns 31-54",
                        s->name, ln, rec, (long long)len);
    mf_atom_record a;
    memset(&a, 0, sizeof a);
    a.line = ln;
    field(line, len, 13, 16, atom, sizeof atom);
    field(line, len, 18, 21, res, sizeof res);
    if (!atom[0] || !res[0])
        return MF_ERROR(MF_ERR_FORMAT, "%s:%d: %s: empty %s name", s->name, ln, rec,
                        atom[0] ? "residue" : "atom");
    field(line, len, 23, 26, buf, sizeof buf);
    if (mf_parse_int32(buf, strlen(buf), &a.auth_seq) != 0)
        return MF_ERROR(MF_ERR_FORMAT, "%s:%d: %s resSeq: '%s' is not an integer", s->name, ln, rec,
                        buf);
    static const char *axis[3] = {"x", "y", "z"};
    for (int k = 0; k < 3; k++) {
        double d;
        if (mf_parse_finite(line + 30 + 8 * k, 8, &d) != 0)
            return MF_ERROR(MF_ERR_FORMAT, "%s:%d: %s %s: '%.8s' is not a finite number", s->name,
                            ln, rec, axis[k], line + 30 + 8 * k);
        a.xyz[k] = (float)d;
    }
    double occ = 1., b = 0.;
    field(line, len, 55, 60, buf, sizeof buf);
    if (buf[0] && mf_parse_finite(buf, strlen(buf), &occ) != 0)
        return MF_ERROR(MF_ERR_FORMAT, "%s:%d: %s occupancy: '%s' is not a finite number", s->name,
                        ln, rec, buf);
    field(line, len, 61, 66, buf, sizeof buf);
    if (buf[0] && mf_parse_finite(buf, strlen(buf), &b) != 0)
        return MF_ERROR(MF_ERR_FORMAT, "%s:%d: %s tempFactor: '%s' is not a finite number", s->name,
                        ln, rec, buf);
    a.occupancy = (float)occ;
    a.b_factor = (float)b;
    a.alt = line[16];
    a.ins = line[26];
    memcpy(a.res_name, res, sizeof a.res_name);
    a.atom37 = (int16_t)mf_atom_record_slot(res, atom);

    if (s->after_first_model || s->models > 1 || is_water(res)) return MF_OK;
    int ci;
    MF_TRY(get_chain(s, line[21], &ci));
    chain *c = &s->ch[ci];
    s->last_chain = ci;
    if (het && c->terminated) return MF_OK;
    int64_t r = c->last;
    if (r < 0 || c->res[r].num != a.auth_seq || c->res[r].ins != a.ins) {
        /* A residue seen before (alternate locations listed apart) or a new one. */
        for (r = c->n_res - 1; r >= 0; r--)
            if (c->res[r].num == a.auth_seq && c->res[r].ins == a.ins) break;
        if (r < 0) {
            if (grow((void **)&c->res, &c->cap_res, c->n_res, sizeof *c->res))
                return MF_ERROR(MF_ERR_NOMEM, "%s: residues of chain %c", s->name, c->id);
            r = c->n_res++;
            obs_res *o = &c->res[r];
            memset(o, 0, sizeof *o);
            o->num = a.auth_seq;
            o->ins = a.ins;
            o->het = 1;
            memcpy(o->name, a.res_name, sizeof o->name);
        }
        c->last = r;
    }
    obs_res *o = &c->res[r];
    o->het &= het;
    o->n |= !strcmp(atom, "N");
    o->ca |= !strcmp(atom, "CA");
    o->c |= !strcmp(atom, "C");
    if (grow((void **)&s->recs, &s->cap_recs, s->n_recs, sizeof *s->recs))
        return MF_ERROR(MF_ERR_NOMEM, "%s: %lld atom records", s->name, (long long)s->n_recs);
    s->recs[s->n_recs++] = (prec){a, ci, r};
    return MF_OK;
}

static const char *months[12] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                 "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};

/* "28-SEP-81" -> "1981-09-28" (two-digit years: 1950-2049, the PDB's range). */
static int pdb_date(const char *d, char *out)
{
    int mon = -1;
    if (strlen(d) != 9 || d[2] != '-' || d[6] != '-') return -1;
    for (int m = 0; m < 12; m++)
        if (!strncmp(d + 3, months[m], 3)) mon = m + 1;
    for (int k = 0; k < 9; k++)
        if (k != 2 && (k < 3 || k > 6) && !(d[k] >= '0' && d[k] <= '9')) return -1;
    int yy = (d[7] - '0') * 10 + (d[8] - '0'), day = (d[0] - '0') * 10 + (d[1] - '0');
    if (mon < 0 || day < 1 || day > 31) return -1;
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%04d-%02d-%02d", yy >= 50 ? 1900 + yy : 2000 + yy, mon, day);
    memcpy(out, tmp, MF_DATE_MAX - 1);
    out[MF_DATE_MAX - 1] = '\0';
    return 0;
}

/* The number after `key` on the line, or 0 when absent or not a number ("NOT APPLICABLE"). */
static double number_after(const char *line, int64_t len, const char *key)
{
    char tmp[128];
    size_t n = len < (int64_t)sizeof tmp ? (size_t)len : sizeof tmp - 1;
    memcpy(tmp, line, n);
    tmp[n] = '\0';
    const char *p = strstr(tmp, key);
    if (!p) return 0.;
    p += strlen(key);
    while (*p == ' ') p++;
    size_t k = 0;
    while (p[k] && p[k] != ' ') k++;
    double d;
    return mf_parse_finite(p, k, &d) == 0 && d > 0 ? d : 0.;
}

static mf_status parse_header_record(pdb_state *s, const char *rec, const char *line, int64_t len,
                                     int32_t ln)
{
    char buf[96];
    if (!strcmp(rec, "HEADER")) {
        field(line, len, 63, 66, buf, sizeof buf);
        /* a PDB id is a digit and three letters or digits; other tools put dates there */
        int ok = strlen(buf) == 4 && buf[0] >= '1' && buf[0] <= '9';
        for (int k = 1; k < 4 && ok; k++)
            ok = (buf[k] >= '0' && buf[k] <= '9') || (buf[k] >= 'A' && buf[k] <= 'Z') ||
                 (buf[k] >= 'a' && buf[k] <= 'z');
        if (ok) memcpy(s->info.entry_id, buf, 5);
    } else if (!strcmp(rec, "EXPDTA")) {
        int32_t cont;
        field(line, len, 9, 10, buf, sizeof buf);
        int is_cont = mf_parse_int32(buf, strlen(buf), &cont) == 0 && cont >= 2;
        field(line, len, is_cont ? 11 : 7, (int)len, buf, sizeof buf);
        size_t k = strlen(s->info.method);
        if (k + strlen(buf) + 2 < sizeof s->info.method)
            snprintf(s->info.method + k, sizeof s->info.method - k, "%s%s", k ? " " : "", buf);
    } else if (!strcmp(rec, "REMARK") && len >= 10 && !strncmp(line + 6, "   2", 4)) {
        double d = number_after(line, len, "RESOLUTION.");
        if (d > 0) s->info.resolution = d, s->have_remark2 = 1;
    } else if (!strcmp(rec, "REMARK") && len >= 10 && !strncmp(line + 6, "   3", 4)) {
        double d = number_after(line, len, "RESOLUTION RANGE HIGH (ANGSTROMS) :");
        if (d > 0 && !s->have_remark2 && s->info.resolution == 0.) s->info.resolution = d;
    } else if (!strcmp(rec, "MODRES")) {
        char mod[6], std[6];
        field(line, len, 13, 16, mod, sizeof mod);
        field(line, len, 25, 28, std, sizeof std);
        if (!mod[0] || !std[0])
            return MF_ERROR(MF_ERR_FORMAT,
                            "%s:%d: MODRES: residue names in columns 13-15 and "
                            "25-27 are empty",
                            s->name, ln);
        if (grow((void **)&s->modres, &s->cap_modres, s->n_modres, sizeof *s->modres))
            return MF_ERROR(MF_ERR_NOMEM, "%s: MODRES records", s->name);
        memcpy(s->modres[s->n_modres][0], mod, sizeof mod);
        memcpy(s->modres[s->n_modres++][1], std, sizeof std);
    } else if (!strcmp(rec, "REVDAT")) {
        int32_t mod;
        field(line, len, 8, 10, buf, sizeof buf);
        if (mf_parse_int32(buf, strlen(buf), &mod) != 0)
            return MF_ERROR(MF_ERR_FORMAT, "%s:%d: REVDAT modNum: '%s' is not an integer", s->name,
                            ln, buf);
        field(line, len, 14, 22, buf, sizeof buf);
        if (mod == 1 && pdb_date(buf, s->info.release_date) != 0)
            return MF_ERROR(MF_ERR_FORMAT, "%s:%d: REVDAT modDate: '%s' is not DD-MMM-YY", s->name,
                            ln, buf);
    }
    return MF_OK;
}

static mf_status parse_lines(pdb_state *s, const char *text, size_t len)
{
    int32_t ln = 0;
    for (size_t p = 0; p < len;) {
        const char *line = text + p;
        const char *nl = memchr(line, '\n', len - p);
        int64_t n = nl ? nl - line : (int64_t)(len - p);
        p += (size_t)n + 1;
        ln++;
        if (n > 0 && line[n - 1] == '\r') n--;
        char rec[8];
        field(line, n < 6 ? n : 6, 1, 6, rec, sizeof rec);
        if (!strcmp(rec, "ATOM") || !strcmp(rec, "HETATM")) {
            MF_TRY(parse_atom(s, line, n, ln, rec[0] == 'H'));
        } else if (!strcmp(rec, "SEQRES")) {
            MF_TRY(parse_seqres(s, line, n, ln));
        } else if (!strcmp(rec, "MODEL")) {
            s->models++;
        } else if (!strcmp(rec, "ENDMDL")) {
            s->after_first_model = 1;
        } else if (!strcmp(rec, "TER")) {
            if (n >= 22 && line[21] != ' ') {
                int ci;
                MF_TRY(get_chain(s, line[21], &ci));
                s->ch[ci].terminated = 1;
            } else if (s->last_chain >= 0 && s->last_chain < s->n_ch) {
                s->ch[s->last_chain].terminated = 1;
            }
        } else if (!strcmp(rec, "END")) {
            break;
        } else {
            MF_TRY(parse_header_record(s, rec, line, n, ln));
        }
    }
    return MF_OK;
}

static int names_match(const char *a, const char *b)
{
    if (!strcmp(a, b)) return 1;
    int ra = mf_restype_from_three_letter(a);
    return ra < MF_NUM_RESTYPES && ra == mf_restype_from_three_letter(b);
}

/* Places the kept residues obs[0..m) on SEQRES in order: every residue on a SEQRES entry of the
 * same name, positions increasing, and among such placements the one whose steps best follow
 * the author numbering (each step that differs from the numbering's costs 2; a start that is not
 * at SEQRES position = number - 1 costs 1). */
static mf_status map_to_seqres(const pdb_state *s, const chain *c, const int64_t *obs, int64_t m,
                               int64_t *place)
{
    const int64_t L = c->n_seqres;
    const obs_res *res = c->res;
    int fast = 1; /* SEQRES numbered from 1 and no insertion codes: nothing to search */
    for (int64_t i = 0; i < m && fast; i++) {
        const obs_res *o = &res[obs[i]];
        int64_t j = (int64_t)o->num - 1;
        fast = o->ins == ' ' && j >= 0 && j < L && (i == 0 || j > place[i - 1]) &&
               names_match(o->name, c->seqres[j]);
        place[i] = j;
    }
    if (fast) return MF_OK;
    if (m * L > MAX_MAP_CELLS)
        return MF_ERROR(MF_ERR_UNSUPPORTED,
                        "%s: chain %c: %lld residues on a SEQRES of %lld is "
                        "too large to place",
                        s->name, c->id, (long long)m, (long long)L);
    const int32_t INF = INT32_MAX / 2;
    int32_t *bp = malloc((size_t)(m * L) * sizeof *bp);
    int32_t *prev = malloc((size_t)L * sizeof *prev), *cur = malloc((size_t)L * sizeof *cur);
    if (!bp || !prev || !cur) {
        free(bp), free(prev), free(cur);
        return MF_ERROR(MF_ERR_NOMEM, "%s: chain %c: SEQRES placement", s->name, c->id);
    }
    for (int64_t i = 0; i < m; i++) {
        const obs_res *o = &res[obs[i]];
        int64_t gap = 1;
        if (i > 0 && (int64_t)o->num - res[obs[i - 1]].num >= 1)
            gap = (int64_t)o->num - res[obs[i - 1]].num;
        int32_t pm = INF, pa = -1; /* min and argmin of prev[0..j) */
        for (int64_t j = 0; j < L; j++) {
            int32_t best = INF, arg = -1;
            if (names_match(o->name, c->seqres[j])) {
                if (i == 0) {
                    best = (int64_t)o->num - 1 == j ? 0 : 1;
                } else {
                    if (j - gap >= 0 && prev[j - gap] < INF)
                        best = prev[j - gap], arg = (int32_t)(j - gap);
                    if (pm < INF && pm + 2 < best) best = pm + 2, arg = pa;
                }
            }
            if (i > 0 && prev[j] < pm) pm = prev[j], pa = (int32_t)j;
            cur[j] = best;
            bp[i * L + j] = arg;
        }
        int32_t *t = prev;
        prev = cur;
        cur = t;
    }
    int64_t end = -1;
    for (int64_t j = 0; j < L; j++)
        if (prev[j] < INF && (end < 0 || prev[j] < prev[end])) end = j;
    mf_status st = MF_OK;
    if (end < 0) {
        /* Say which residue has no place: the first one a greedy in-order match cannot seat. */
        int64_t j = 0, i = 0;
        for (; i < m; i++, j++) {
            while (j < L && !names_match(res[obs[i]].name, c->seqres[j])) j++;
            if (j >= L) break;
        }
        const obs_res *o = &res[obs[i < m ? i : m - 1]];
        char ins[2] = {o->ins == ' ' ? '\0' : o->ins, '\0'};
        st = MF_ERROR(MF_ERR_FORMAT,
                      "%s:%d: SEQRES: chain %c: observed residue %s %d%s has no "
                      "place in the SEQRES sequence of %lld residues",
                      s->name, c->seqres_line, c->id, o->name, o->num, ins, (long long)L);
    } else {
        for (int64_t i = m - 1; i >= 0; i--) {
            place[i] = end;
            end = bp[i * L + end];
        }
    }
    free(bp), free(prev), free(cur);
    return st;
}

/* Sets residue j from its name; a modified residue that MODRES derives from a standard one
 * reads as that one (as AF2 does through Biopython's SCOP table). */
static void set_residue(const pdb_state *s, mf_protein *out, int64_t j, const char *name)
{
    mf_protein_set_residue(out, j, name);
    for (int64_t k = 0; out->aatype[j] == MF_RESTYPE_UNK && k < s->n_modres; k++)
        if (!strcmp(s->modres[k][0], name) &&
            mf_restype_from_three_letter(s->modres[k][1]) < MF_NUM_RESTYPES)
            mf_protein_set_residue(out, j, s->modres[k][1]);
}

static int seqres_has(const chain *c, const char *name)
{
    for (int64_t j = 0; j < c->n_seqres; j++)
        if (!strcmp(c->seqres[j], name)) return 1;
    return 0;
}

static int is_protein(const chain *c, const int64_t *obs, int64_t m)
{
    int64_t std = 0, n = c->n_seqres ? c->n_seqres : m;
    for (int64_t j = 0; j < n; j++)
        std += mf_restype_from_three_letter(c->n_seqres ? c->seqres[j] : c->res[obs[j]].name) <
               MF_NUM_RESTYPES;
    return n > 0 && 2 * std >= n;
}

static mf_status build_chain(pdb_state *s, chain *c, const mf_atom_record *grouped, mf_protein *out,
                             int *made)
{
    *made = 0;
    int64_t m = 0;
    for (int64_t r = 0; r < c->n_res; r++) {
        obs_res *o = &c->res[r];
        o->keep = !o->het || mf_restype_from_three_letter(o->name) < MF_NUM_RESTYPES ||
                  (c->n_seqres ? seqres_has(c, o->name) : (o->n && o->ca && o->c));
        m += o->keep;
    }
    if (m == 0) return MF_OK;
    if (c->n_seqres && c->n_seqres != c->declared)
        return MF_ERROR(MF_ERR_FORMAT, "%s:%d: SEQRES: chain %c declares %d residues, lists %lld",
                        s->name, c->seqres_line, c->id, c->declared, (long long)c->n_seqres);
    int64_t *obs = malloc((size_t)m * sizeof *obs), *place = malloc((size_t)m * sizeof *place);
    char *known = calloc((size_t)(c->n_seqres ? c->n_seqres : m) + 1, 1);
    mf_status st = MF_OK;
    if (!obs || !place || !known) {
        st = MF_ERROR(MF_ERR_NOMEM, "%s: chain %c", s->name, c->id);
        goto cleanup;
    }
    m = 0;
    for (int64_t r = 0; r < c->n_res; r++)
        if (c->res[r].keep) obs[m++] = r;
    if (!is_protein(c, obs, m)) goto cleanup;
    if (c->n_seqres) {
        MF_TRY_GOTO(map_to_seqres(s, c, obs, m, place));
    } else {
        for (int64_t i = 0; i < m; i++) place[i] = i;
    }
    int64_t n = c->n_seqres ? c->n_seqres : m;
    MF_TRY_GOTO(mf_protein_alloc(out, n));
    for (int64_t j = 0; j < c->n_seqres; j++) set_residue(s, out, j, c->seqres[j]);
    for (int64_t i = 0; i < m; i++) {
        const obs_res *o = &c->res[obs[i]];
        int64_t j = place[i];
        if (!c->n_seqres) set_residue(s, out, j, o->name);
        const mf_atom_record *a = grouped + o->first;
        /* the SEQRES name decides which residue of a microheterogeneity counts */
        const char *want = c->n_seqres ? c->seqres[j] : NULL;
        int any = 0;
        for (int64_t k = 0; k < o->len && want; k++) any |= !strcmp(a[k].res_name, want);
        mf_resolve_residue(out, j, a, o->len, any ? want : NULL);
        out->residue_index[j] = o->num;
        out->insertion_code[j] = o->ins;
        known[j] = 1;
    }
    /* Unplaced SEQRES residues are numbered on from their nearest placed neighbour. */
    for (int64_t j = 0, prev = -1; j < n; j++) {
        if (known[j]) {
            prev = j;
            continue;
        }
        int64_t next = j + 1;
        while (next < n && !known[next]) next++;
        if (prev >= 0)
            out->residue_index[j] = out->residue_index[prev] + (int32_t)(j - prev);
        else if (next < n)
            out->residue_index[j] = out->residue_index[next] - (int32_t)(next - j);
        else
            out->residue_index[j] = (int32_t)(j + 1);
    }
    out->chain_id[0] = c->id == ' ' ? 'A' : c->id;
    out->chain_id[1] = '\0';
    *made = 1;
cleanup:
    free(obs);
    free(place);
    free(known);
    return st;
}

mf_status mf_pdb_parse(const char *text, size_t len, const char *name, mf_protein **chains,
                       int *n_chains)
{
    MF_REQUIRE(chains && n_chains && (text || len == 0), "mf_pdb_parse: NULL argument");
    *chains = NULL;
    *n_chains = 0;
    pdb_state s;
    memset(&s, 0, sizeof s);
    s.name = name ? name : "<pdb>";
    s.last_chain = -1;
    mf_atom_record *grouped = NULL;
    int64_t *cursor = NULL;
    mf_protein *out = NULL;
    int n_out = 0;
    mf_status st = MF_OK;
    if (memchr(text, '\0', len)) {
        st = MF_ERROR(MF_ERR_FORMAT, "%s: NUL byte in a text file", s.name);
        goto cleanup;
    }
    MF_TRY_GOTO(parse_lines(&s, text, len));
    if (s.n_recs == 0) {
        st = MF_ERROR(MF_ERR_FORMAT, "%s: ATOM: no atom records of a polymer", s.name);
        goto cleanup;
    }
    int blank = -1, has_a = 0;
    for (int i = 0; i < s.n_ch; i++) {
        if (s.ch[i].id == ' ' && s.ch[i].n_res) blank = i;
        if (s.ch[i].id == 'A' && s.ch[i].n_res) has_a = 1;
    }
    if (blank >= 0 && has_a) {
        st = MF_ERROR(MF_ERR_FORMAT,
                      "%s: chain id: both a blank chain id (read as A) and chain "
                      "A have atoms",
                      s.name);
        goto cleanup;
    }
    /* Records grouped by chain and residue, file order within a residue. */
    int64_t total_res = 0;
    for (int i = 0; i < s.n_ch; i++) total_res += s.ch[i].n_res;
    cursor = calloc((size_t)total_res + 1, sizeof *cursor);
    grouped = malloc((size_t)s.n_recs * sizeof *grouped);
    out = calloc((size_t)s.n_ch + 1, sizeof *out);
    if (!cursor || !grouped || !out) {
        st = MF_ERROR(MF_ERR_NOMEM, "%s: %lld atom records", s.name, (long long)s.n_recs);
        goto cleanup;
    }
    for (int64_t k = 0; k < s.n_recs; k++) s.ch[s.recs[k].chain].res[s.recs[k].res].len++;
    int64_t at = 0, ri = 0;
    for (int i = 0; i < s.n_ch; i++)
        for (int64_t r = 0; r < s.ch[i].n_res; r++, ri++) {
            s.ch[i].res[r].first = at;
            cursor[ri] = at;
            at += s.ch[i].res[r].len;
        }
    int64_t *res_base = calloc((size_t)s.n_ch + 1, sizeof *res_base);
    if (!res_base) {
        st = MF_ERROR(MF_ERR_NOMEM, "%s: chains", s.name);
        goto cleanup;
    }
    for (int i = 1; i <= s.n_ch; i++) res_base[i] = res_base[i - 1] + s.ch[i - 1].n_res;
    for (int64_t k = 0; k < s.n_recs; k++)
        grouped[cursor[res_base[s.recs[k].chain] + s.recs[k].res]++] = s.recs[k].a;
    free(res_base);
    for (int i = 0; i < s.n_ch; i++) {
        int made = 0;
        MF_TRY_GOTO(build_chain(&s, &s.ch[i], grouped, &out[n_out], &made));
        n_out += made;
    }
    mf_set_entry_info(out, n_out, &s.info);
cleanup:
    free(cursor);
    free(grouped);
    state_free(&s);
    if (st != MF_OK) {
        mf_protein_list_free(out, n_out);
        return st;
    }
    *chains = out;
    *n_chains = n_out;
    return MF_OK;
}

mf_status mf_pdb_read(const char *path, mf_protein **chains, int *n_chains)
{
    MF_REQUIRE(chains && n_chains, "mf_pdb_read: NULL output");
    *chains = NULL;
    *n_chains = 0;
    char *text = NULL;
    size_t len = 0;
    MF_TRY(mf_read_text_file(path, &text, &len));
    mf_status st = mf_pdb_parse(text, len, path, chains, n_chains);
    free(text);
    return st;
}
