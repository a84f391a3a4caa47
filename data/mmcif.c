#include "data/mmcif.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "data/structure_io.h"

/* Token kinds beyond the value kinds of mf_cif_kind. */
enum { TOK_TAG = 10, TOK_LOOP, TOK_DATA, TOK_RESERVED };

struct mf_cif_table {
    const char *category; /* "_atom_site" */
    int32_t line;
    int is_loop;
    int n_items, cap_items;
    const char **items;               /* [n_items] */
    int64_t n_rows;                   /* 1 for name-value pairs */
    const mf_cif_value *values;       /* loop: [n_rows, n_items] in the token array */
    const mf_cif_value **pair_values; /* pairs: [n_items] */
};

struct mf_cif {
    char *buf; /* the text, tokens terminated in place */
    char *name;
    const char *block;
    mf_cif_value *tok;
    int64_t n_tok, cap_tok;
    mf_cif_table *tables;
    int n_tables, cap_tables;
};

static const mf_cif_value unknown_value = {"?", 0, MF_CIF_UNKNOWN};

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int is_value(const mf_cif_value *t)
{
    return t->kind == MF_CIF_VALUE || t->kind == MF_CIF_NULL || t->kind == MF_CIF_UNKNOWN;
}

static mf_status push_token(mf_cif *c, const char *s, int32_t line, int32_t kind)
{
    if (c->n_tok == c->cap_tok) {
        int64_t cap = c->cap_tok ? 2 * c->cap_tok : 4096;
        mf_cif_value *t = realloc(c->tok, (size_t)cap * sizeof *t);
        if (!t) return MF_ERROR(MF_ERR_NOMEM, "%s: %lld CIF tokens", c->name, (long long)cap);
        c->tok = t;
        c->cap_tok = cap;
    }
    c->tok[c->n_tok++] = (mf_cif_value){s, line, kind};
    return MF_OK;
}

static int32_t classify_bare(const char *s)
{
    if (s[0] == '_') return TOK_TAG;
    if (strcasecmp(s, "loop_") == 0) return TOK_LOOP;
    if (strncasecmp(s, "data_", 5) == 0) return TOK_DATA;
    if (strncasecmp(s, "save_", 5) == 0 || strcasecmp(s, "global_") == 0 ||
        strcasecmp(s, "stop_") == 0)
        return TOK_RESERVED;
    if (s[0] == '.' && s[1] == '\0') return MF_CIF_NULL;
    if (s[0] == '?' && s[1] == '\0') return MF_CIF_UNKNOWN;
    return MF_CIF_VALUE;
}

/* Splits the text into tokens, terminating each in place. Quotes close only before white space
 * (CIF 1.1), which is what lets "O5'" and 'N,N'-X' through. */
static mf_status tokenize(mf_cif *c, size_t len)
{
    char *b = c->buf;
    size_t p = 0;
    int32_t line = 1;
    int bol = 1;
    while (p < len) {
        char ch = b[p];
        if (ch == '\n') {
            line++, bol = 1, p++;
            continue;
        }
        if (ch == ' ' || ch == '\t' || ch == '\r') {
            bol = 0, p++;
            continue;
        }
        if (ch == '#') {
            while (p < len && b[p] != '\n') p++;
            continue;
        }
        if (ch == ';' && bol) {
            /* A text field runs to the next line that starts with ';'. */
            int32_t start = line;
            size_t content = p + 1, q = p + 1;
            for (;;) {
                char *nl = memchr(b + q, '\n', len - q);
                if (!nl)
                    return MF_ERROR(MF_ERR_FORMAT, "%s:%d: text field: ';' field not terminated",
                                    c->name, start);
                q = (size_t)(nl - b);
                line++;
                if (q + 1 < len && b[q + 1] == ';') break;
                q++;
            }
            size_t end = q;
            if (end > content && b[end - 1] == '\r') end--;
            b[end] = '\0';
            p = q + 2;
            if (p < len && !is_ws(b[p]))
                return MF_ERROR(MF_ERR_FORMAT,
                                "%s:%d: text field: closing ';' followed by '%c', not white space",
                                c->name, line, b[p]);
            MF_TRY(push_token(c, b + content, start, MF_CIF_VALUE));
            bol = 0;
            continue;
        }
        bol = 0;
        if (ch == '\'' || ch == '"') {
            size_t k = p + 1;
            while (k < len && b[k] != '\n' && !(b[k] == ch && (k + 1 == len || is_ws(b[k + 1]))))
                k++;
            if (k >= len || b[k] != ch)
                return MF_ERROR(MF_ERR_FORMAT, "%s:%d: quoted string: no closing %c on this line",
                                c->name, line, ch);
            b[k] = '\0';
            MF_TRY(push_token(c, b + p + 1, line, MF_CIF_VALUE));
            p = k + 1;
            continue;
        }
        size_t k = p;
        while (k < len && !is_ws(b[k])) k++;
        int32_t tline = line;
        if (k < len) {
            if (b[k] == '\n') line++, bol = 1;
            b[k] = '\0';
            k++;
        }
        MF_TRY(push_token(c, b + p, tline, classify_bare(b + p)));
        p = k;
    }
    return MF_OK;
}

static mf_cif_table *find_table(mf_cif *c, const char *category)
{
    for (int i = 0; i < c->n_tables; i++)
        if (strcasecmp(c->tables[i].category, category) == 0) return &c->tables[i];
    return NULL;
}

static mf_status new_table(mf_cif *c, const char *category, int32_t line, mf_cif_table **out)
{
    if (c->n_tables == c->cap_tables) {
        int cap = c->cap_tables ? 2 * c->cap_tables : 64;
        mf_cif_table *t = realloc(c->tables, (size_t)cap * sizeof *t);
        if (!t) return MF_ERROR(MF_ERR_NOMEM, "%s: %d CIF categories", c->name, cap);
        c->tables = t;
        c->cap_tables = cap;
    }
    mf_cif_table *t = &c->tables[c->n_tables++];
    memset(t, 0, sizeof *t);
    t->category = category;
    t->line = line;
    *out = t;
    return MF_OK;
}

/* "_cat.item" -> category "_cat" and item "item", split in place at the first '.'. */
static mf_status split_tag(mf_cif *c, mf_cif_value *tag, const char **item)
{
    char *dot = strchr((char *)tag->s, '.');
    if (!dot || dot == tag->s + 1 || dot[1] == '\0')
        return MF_ERROR(MF_ERR_FORMAT, "%s:%d: %s: tag is not of the form _category.item", c->name,
                        tag->line, tag->s);
    *dot = '\0';
    *item = dot + 1;
    return MF_OK;
}

static mf_status add_item(mf_cif *c, mf_cif_table *t, const char *item, int32_t line)
{
    for (int i = 0; i < t->n_items; i++)
        if (strcasecmp(t->items[i], item) == 0)
            return MF_ERROR(MF_ERR_FORMAT, "%s:%d: %s.%s: item given twice", c->name, line,
                            t->category, item);
    if (t->n_items == t->cap_items) {
        int cap = t->cap_items ? 2 * t->cap_items : 16;
        const char **it = realloc(t->items, (size_t)cap * sizeof *it);
        if (!it) return MF_ERROR(MF_ERR_NOMEM, "%s: %d items", c->name, cap);
        t->items = it;
        if (!t->is_loop) {
            const mf_cif_value **pv = realloc(t->pair_values, (size_t)cap * sizeof *pv);
            if (!pv) return MF_ERROR(MF_ERR_NOMEM, "%s: %d items", c->name, cap);
            t->pair_values = pv;
        }
        t->cap_items = cap;
    }
    t->items[t->n_items++] = item;
    return MF_OK;
}

static mf_status parse_loop(mf_cif *c, int64_t *pos)
{
    int64_t i = *pos + 1;
    int32_t loop_line = c->tok[*pos].line;
    if (i >= c->n_tok || c->tok[i].kind != TOK_TAG)
        return MF_ERROR(MF_ERR_FORMAT, "%s:%d: loop_: no tags follow", c->name, loop_line);
    mf_cif_table *t = NULL;
    for (; i < c->n_tok && c->tok[i].kind == TOK_TAG; i++) {
        const char *item;
        MF_TRY(split_tag(c, &c->tok[i], &item));
        if (!t) {
            if (find_table(c, c->tok[i].s))
                return MF_ERROR(MF_ERR_FORMAT, "%s:%d: %s: category given twice", c->name,
                                c->tok[i].line, c->tok[i].s);
            MF_TRY(new_table(c, c->tok[i].s, loop_line, &t));
            t->is_loop = 1;
        } else if (strcasecmp(t->category, c->tok[i].s) != 0) {
            return MF_ERROR(MF_ERR_FORMAT, "%s:%d: %s.%s: loop mixes categories %s and %s", c->name,
                            c->tok[i].line, c->tok[i].s, item, t->category, c->tok[i].s);
        }
        MF_TRY(add_item(c, t, item, c->tok[i].line));
    }
    int64_t first = i;
    while (i < c->n_tok && is_value(&c->tok[i])) i++;
    int64_t n = i - first;
    if (n == 0)
        return MF_ERROR(MF_ERR_FORMAT, "%s:%d: %s: loop has no values", c->name, loop_line,
                        t->category);
    if (n % t->n_items != 0)
        return MF_ERROR(MF_ERR_FORMAT,
                        "%s:%d: %s: loop has %lld values, not a multiple of its %d columns "
                        "(loop ends at line %d)",
                        c->name, loop_line, t->category, (long long)n, t->n_items,
                        c->tok[i - 1].line);
    t->values = &c->tok[first];
    t->n_rows = n / t->n_items;
    *pos = i;
    return MF_OK;
}

static mf_status parse_tokens(mf_cif *c)
{
    if (c->n_tok == 0) return MF_ERROR(MF_ERR_FORMAT, "%s:1: data block: empty file", c->name);
    if (c->tok[0].kind != TOK_DATA)
        return MF_ERROR(MF_ERR_FORMAT, "%s:%d: data block: expected data_, found '%.40s'", c->name,
                        c->tok[0].line, c->tok[0].s);
    c->block = c->tok[0].s + 5;
    int64_t i = 1;
    while (i < c->n_tok) {
        mf_cif_value *t = &c->tok[i];
        if (t->kind == TOK_DATA) break; /* only the first data block */
        if (t->kind == TOK_RESERVED)
            return MF_ERROR(MF_ERR_FORMAT,
                            "%s:%d: %.40s: save frames and global_/stop_ are "
                            "not used in PDB entries",
                            c->name, t->line, t->s);
        if (t->kind == TOK_LOOP) {
            MF_TRY(parse_loop(c, &i));
            continue;
        }
        if (t->kind != TOK_TAG)
            return MF_ERROR(MF_ERR_FORMAT, "%s:%d: value '%.40s' without a tag", c->name, t->line,
                            t->s);
        if (i + 1 >= c->n_tok || !is_value(&c->tok[i + 1]))
            return MF_ERROR(MF_ERR_FORMAT, "%s:%d: %s: tag without a value", c->name, t->line,
                            t->s);
        const char *item;
        MF_TRY(split_tag(c, t, &item));
        mf_cif_table *tab = find_table(c, t->s);
        if (tab && tab->is_loop)
            return MF_ERROR(MF_ERR_FORMAT, "%s:%d: %s: category given as a loop and as pairs",
                            c->name, t->line, t->s);
        if (!tab) {
            MF_TRY(new_table(c, t->s, t->line, &tab));
            tab->n_rows = 1;
        }
        MF_TRY(add_item(c, tab, item, t->line));
        tab->pair_values[tab->n_items - 1] = &c->tok[i + 1];
        i += 2;
    }
    return MF_OK;
}

void mf_cif_free(mf_cif *c)
{
    if (!c) return;
    for (int i = 0; i < c->n_tables; i++) {
        free(c->tables[i].items);
        free(c->tables[i].pair_values);
    }
    free(c->tables);
    free(c->tok);
    free(c->buf);
    free(c->name);
    free(c);
}

mf_status mf_cif_parse(mf_cif **out, const char *text, size_t len, const char *name)
{
    MF_REQUIRE(out && (text || len == 0), "mf_cif_parse: NULL argument");
    *out = NULL;
    if (!name) name = "<cif>";
    mf_cif *c = calloc(1, sizeof *c);
    if (!c) return MF_ERROR(MF_ERR_NOMEM, "%s: CIF document", name);
    c->name = strdup(name);
    c->buf = malloc(len + 1);
    if (!c->name || !c->buf) {
        mf_cif_free(c);
        return MF_ERROR(MF_ERR_NOMEM, "%s: copy of %zu bytes", name, len);
    }
    if (len) memcpy(c->buf, text, len);
    c->buf[len] = '\0';
    const char *nul = memchr(c->buf, '\0', len);
    mf_status st = MF_OK;
    if (nul) {
        int line = 1;
        for (const char *q = c->buf; q < nul; q++) line += *q == '\n';
        st = MF_ERROR(MF_ERR_FORMAT, "%s:%d: NUL byte in a text file", name, line);
    }
    if (st == MF_OK) st = tokenize(c, len);
    if (st == MF_OK) st = parse_tokens(c);
    if (st != MF_OK) {
        mf_cif_free(c);
        return st;
    }
    *out = c;
    return MF_OK;
}

const char *mf_cif_block_name(const mf_cif *c)
{
    return c ? c->block : "";
}

const char *mf_cif_file_name(const mf_cif *c)
{
    return c ? c->name : "";
}

const mf_cif_table *mf_cif_find(const mf_cif *c, const char *category)
{
    return c ? find_table((mf_cif *)c, category) : NULL;
}

int64_t mf_cif_rows(const mf_cif_table *t)
{
    return t ? t->n_rows : 0;
}

int32_t mf_cif_table_line(const mf_cif_table *t)
{
    return t ? t->line : 0;
}

int mf_cif_column(const mf_cif_table *t, const char *item)
{
    if (!t) return -1;
    for (int i = 0; i < t->n_items; i++)
        if (strcasecmp(t->items[i], item) == 0) return i;
    return -1;
}

const mf_cif_value *mf_cif_get(const mf_cif_table *t, int64_t row, int col)
{
    if (!t || row < 0 || row >= t->n_rows || col < 0 || col >= t->n_items) return &unknown_value;
    if (!t->is_loop) return t->pair_values[col];
    return &t->values[row * t->n_items + col];
}

/* ---- protein chains ---- */

#define NUM_UNKNOWN INT32_MIN

typedef struct {
    const char *asym, *entity, *auth; /* label_asym_id, entity id, author chain id */
    int64_t len, cap;                 /* residues (seq_id 1..len) */
    const char **mon;                 /* [len] residue name (first of a microheterogeneity) */
    int32_t *num;                     /* [len] author number, NUM_UNKNOWN when not given */
    char *ins;                        /* [len] */
    int protein;
    int64_t *start; /* [len + 1] first atom record of each residue */
} poly;

typedef struct {
    const mf_cif *cif;
    const char *name;
    poly *p;
    int n, cap;
    int64_t last; /* lookup cache */
} polys;

static void polys_free(polys *ps)
{
    for (int i = 0; i < ps->n; i++) {
        free(ps->p[i].mon);
        free(ps->p[i].num);
        free(ps->p[i].ins);
        free(ps->p[i].start);
    }
    free(ps->p);
    ps->p = NULL;
    ps->n = ps->cap = 0;
}

static poly *poly_find(polys *ps, const char *asym)
{
    if (ps->last >= 0 && ps->last < ps->n && strcmp(ps->p[ps->last].asym, asym) == 0)
        return &ps->p[ps->last];
    for (int i = 0; i < ps->n; i++)
        if (strcmp(ps->p[i].asym, asym) == 0) {
            ps->last = i;
            return &ps->p[i];
        }
    return NULL;
}

static mf_status poly_add(polys *ps, const char *asym, poly **out)
{
    if (ps->n == ps->cap) {
        int cap = ps->cap ? 2 * ps->cap : 16;
        poly *p = realloc(ps->p, (size_t)cap * sizeof *p);
        if (!p) return MF_ERROR(MF_ERR_NOMEM, "%s: %d chains", ps->name, cap);
        ps->p = p;
        ps->cap = cap;
    }
    poly *p = &ps->p[ps->n++];
    memset(p, 0, sizeof *p);
    p->asym = asym;
    *out = p;
    return MF_OK;
}

/* Grows the residue arrays to hold at least n residues (new ones: unnamed, number unknown). */
static mf_status poly_reserve(polys *ps, poly *p, int64_t n)
{
    if (n <= p->cap) return MF_OK;
    int64_t cap = p->cap ? p->cap : 64;
    while (cap < n) cap *= 2;
    const char **mon = realloc(p->mon, (size_t)cap * sizeof *mon);
    if (mon) p->mon = mon;
    int32_t *num = realloc(p->num, (size_t)cap * sizeof *num);
    if (num) p->num = num;
    char *ins = realloc(p->ins, (size_t)cap);
    if (ins) p->ins = ins;
    if (!mon || !num || !ins)
        return MF_ERROR(MF_ERR_NOMEM, "%s: chain %s: %lld residues", ps->name, p->asym,
                        (long long)cap);
    for (int64_t i = p->cap; i < cap; i++)
        p->mon[i] = NULL, p->num[i] = NUM_UNKNOWN, p->ins[i] = ' ';
    p->cap = cap;
    return MF_OK;
}

static const char *val(const mf_cif_table *t, int64_t row, int col)
{
    const mf_cif_value *v = mf_cif_get(t, row, col);
    return v->kind == MF_CIF_VALUE ? v->s : NULL;
}

static mf_status need_col(const polys *ps, const mf_cif_table *t, const char *cat, const char *item,
                          int *col)
{
    *col = mf_cif_column(t, item);
    if (*col < 0)
        return MF_ERROR(MF_ERR_FORMAT, "%s:%d: %s.%s: missing required column", ps->name,
                        mf_cif_table_line(t), cat, item);
    return MF_OK;
}

static mf_status need_str(const polys *ps, const mf_cif_table *t, int64_t row, int col,
                          const char *cat, const char *item, const char **out)
{
    const mf_cif_value *v = mf_cif_get(t, row, col);
    if (v->kind != MF_CIF_VALUE)
        return MF_ERROR(MF_ERR_FORMAT, "%s:%d: %s.%s: value required, found '%s'", ps->name,
                        v->line, cat, item, v->s);
    *out = v->s;
    return MF_OK;
}

static mf_status need_int(const polys *ps, const mf_cif_table *t, int64_t row, int col,
                          const char *cat, const char *item, int32_t *out)
{
    const char *s = NULL;
    MF_TRY(need_str(ps, t, row, col, cat, item, &s));
    if (mf_parse_int32(s, strlen(s), out) != 0)
        return MF_ERROR(MF_ERR_FORMAT, "%s:%d: %s.%s: '%.40s' is not an integer", ps->name,
                        mf_cif_get(t, row, col)->line, cat, item, s);
    return MF_OK;
}

/* A number that may be absent ('.', '?' or no column): dflt then. */
static mf_status opt_float(const polys *ps, const mf_cif_table *t, int64_t row, int col,
                           const char *cat, const char *item, double dflt, float *out)
{
    const mf_cif_value *v = mf_cif_get(t, row, col);
    double d = dflt;
    if (col >= 0 && v->kind == MF_CIF_VALUE && mf_parse_finite(v->s, strlen(v->s), &d) != 0)
        return MF_ERROR(MF_ERR_FORMAT, "%s:%d: %s.%s: '%.40s' is not a finite number", ps->name,
                        v->line, cat, item, v->s);
    *out = (float)d;
    return MF_OK;
}

static int majority_standard(const poly *p)
{
    int64_t std = 0;
    for (int64_t i = 0; i < p->len; i++)
        std += p->mon[i] && mf_restype_from_three_letter(p->mon[i]) < MF_NUM_RESTYPES;
    return p->len > 0 && 2 * std >= p->len;
}

/* Proteins are the polymers whose _entity_poly.type is a polypeptide (AF2 keeps only those). */
static void mark_proteins(polys *ps)
{
    const mf_cif_table *ep = mf_cif_find(ps->cif, "_entity_poly");
    int ce = mf_cif_column(ep, "entity_id"), ct = mf_cif_column(ep, "type");
    for (int i = 0; i < ps->n; i++) {
        poly *p = &ps->p[i];
        int found = 0;
        for (int64_t r = 0; ce >= 0 && ct >= 0 && p->entity && r < mf_cif_rows(ep); r++) {
            const char *e = val(ep, r, ce), *ty = val(ep, r, ct);
            if (!e || strcmp(e, p->entity) != 0) continue;
            found = 1;
            p->protein = ty && strncasecmp(ty, "polypeptide", 11) == 0;
            break;
        }
        if (!found) p->protein = majority_standard(p);
    }
}

static mf_status check_complete(polys *ps, const mf_cif_table *t, const char *cat)
{
    for (int i = 0; i < ps->n; i++)
        for (int64_t s = 0; s < ps->p[i].len; s++)
            if (!ps->p[i].mon[s])
                return MF_ERROR(MF_ERR_FORMAT, "%s:%d: %s: chain %s has no residue %lld", ps->name,
                                mf_cif_table_line(t), cat, ps->p[i].asym, (long long)s + 1);
    return MF_OK;
}

static mf_status set_residue_slot(polys *ps, poly *p, int32_t seq, int32_t line, const char *cat,
                                  int64_t *slot)
{
    if (seq < 1 || seq > (1 << 20))
        return MF_ERROR(MF_ERR_FORMAT, "%s:%d: %s: sequence number %d outside [1, 2^20]", ps->name,
                        line, cat, seq);
    MF_TRY(poly_reserve(ps, p, seq));
    if (seq > p->len) p->len = seq;
    *slot = seq - 1;
    return MF_OK;
}

/* Sequences from _pdbx_poly_seq_scheme: one row per residue of each polymer instance. */
static mf_status polys_from_scheme(polys *ps, const mf_cif_table *t)
{
    const char *cat = "_pdbx_poly_seq_scheme";
    int ca, ce, cs, cm, cc;
    MF_TRY(need_col(ps, t, cat, "asym_id", &ca));
    MF_TRY(need_col(ps, t, cat, "entity_id", &ce));
    MF_TRY(need_col(ps, t, cat, "seq_id", &cs));
    MF_TRY(need_col(ps, t, cat, "mon_id", &cm));
    MF_TRY(need_col(ps, t, cat, "pdb_strand_id", &cc));
    int cn = mf_cif_column(t, "pdb_seq_num"), ci = mf_cif_column(t, "pdb_ins_code");
    for (int64_t r = 0; r < mf_cif_rows(t); r++) {
        const char *asym, *mon, *ent, *auth;
        int32_t seq;
        int64_t s;
        MF_TRY(need_str(ps, t, r, ca, cat, "asym_id", &asym));
        MF_TRY(need_str(ps, t, r, ce, cat, "entity_id", &ent));
        MF_TRY(need_str(ps, t, r, cm, cat, "mon_id", &mon));
        MF_TRY(need_str(ps, t, r, cc, cat, "pdb_strand_id", &auth));
        MF_TRY(need_int(ps, t, r, cs, cat, "seq_id", &seq));
        poly *p = poly_find(ps, asym);
        if (!p) {
            MF_TRY(poly_add(ps, asym, &p));
            p->entity = ent;
            p->auth = auth;
        }
        MF_TRY(set_residue_slot(ps, p, seq, mf_cif_get(t, r, cs)->line, cat, &s));
        if (p->mon[s]) continue; /* microheterogeneity: the first residue name wins, as in AF2 */
        p->mon[s] = mon;
        const char *num = val(t, r, cn), *ins = val(t, r, ci);
        int32_t n;
        if (num && mf_parse_int32(num, strlen(num), &n) == 0) p->num[s] = n;
        if (ins) p->ins[s] = ins[0];
    }
    return check_complete(ps, t, cat);
}

/* Sequences from _entity_poly_seq, instances from _struct_asym. */
static mf_status polys_from_entity_seq(polys *ps, const mf_cif_table *eps, const mf_cif_table *sa)
{
    const char *cat = "_entity_poly_seq";
    int ce, cn, cm, ai, ae;
    MF_TRY(need_col(ps, eps, cat, "entity_id", &ce));
    MF_TRY(need_col(ps, eps, cat, "num", &cn));
    MF_TRY(need_col(ps, eps, cat, "mon_id", &cm));
    MF_TRY(need_col(ps, sa, "_struct_asym", "id", &ai));
    MF_TRY(need_col(ps, sa, "_struct_asym", "entity_id", &ae));
    for (int64_t a = 0; a < mf_cif_rows(sa); a++) {
        const char *asym, *ent;
        MF_TRY(need_str(ps, sa, a, ai, "_struct_asym", "id", &asym));
        MF_TRY(need_str(ps, sa, a, ae, "_struct_asym", "entity_id", &ent));
        poly *p = NULL;
        for (int64_t r = 0; r < mf_cif_rows(eps); r++) {
            const char *e, *mon;
            int32_t seq;
            int64_t s;
            MF_TRY(need_str(ps, eps, r, ce, cat, "entity_id", &e));
            if (strcmp(e, ent) != 0) continue;
            MF_TRY(need_str(ps, eps, r, cm, cat, "mon_id", &mon));
            MF_TRY(need_int(ps, eps, r, cn, cat, "num", &seq));
            if (!p) {
                if (poly_find(ps, asym))
                    return MF_ERROR(MF_ERR_FORMAT, "%s:%d: _struct_asym.id: '%s' given twice",
                                    ps->name, mf_cif_get(sa, a, ai)->line, asym);
                MF_TRY(poly_add(ps, asym, &p));
                p->entity = ent;
            }
            MF_TRY(set_residue_slot(ps, p, seq, mf_cif_get(eps, r, cn)->line, cat, &s));
            if (!p->mon[s]) p->mon[s] = mon;
        }
    }
    return check_complete(ps, eps, cat);
}

typedef struct {
    int asym, seq, comp, atom, x, y, z, model, alt, ins, occ, b, auth_seq, auth_asym, group;
} atom_cols;

static const char *AS = "_atom_site";

static mf_status atom_columns(const polys *ps, const mf_cif_table *t, atom_cols *c)
{
    MF_TRY(need_col(ps, t, AS, "label_asym_id", &c->asym));
    MF_TRY(need_col(ps, t, AS, "label_comp_id", &c->comp));
    MF_TRY(need_col(ps, t, AS, "Cartn_x", &c->x));
    MF_TRY(need_col(ps, t, AS, "Cartn_y", &c->y));
    MF_TRY(need_col(ps, t, AS, "Cartn_z", &c->z));
    c->atom = mf_cif_column(t, "label_atom_id");
    if (c->atom < 0) MF_TRY(need_col(ps, t, AS, "auth_atom_id", &c->atom));
    c->seq = mf_cif_column(t, "label_seq_id");
    c->model = mf_cif_column(t, "pdbx_PDB_model_num");
    c->alt = mf_cif_column(t, "label_alt_id");
    c->ins = mf_cif_column(t, "pdbx_PDB_ins_code");
    c->occ = mf_cif_column(t, "occupancy");
    c->b = mf_cif_column(t, "B_iso_or_equiv");
    c->auth_seq = mf_cif_column(t, "auth_seq_id");
    c->auth_asym = mf_cif_column(t, "auth_asym_id");
    c->group = mf_cif_column(t, "group_PDB");
    return MF_OK;
}

/* Observed-residue mode (no sequence categories): a chain per author chain id, a residue per
 * author number and insertion code, in file order. */
static mf_status observed_slot(polys *ps, const mf_cif_table *t, const atom_cols *c, int64_t r,
                               int *pi, int64_t *slot)
{
    const char *chain = val(t, r, c->auth_asym >= 0 ? c->auth_asym : c->asym);
    const char *comp = val(t, r, c->comp), *ins_s = val(t, r, c->ins), *group = val(t, r, c->group);
    int polymer = (c->seq >= 0 && val(t, r, c->seq)) || (group && strcmp(group, "ATOM") == 0) ||
                  (comp && mf_restype_from_three_letter(comp) < MF_NUM_RESTYPES);
    *pi = -1;
    if (!polymer) return MF_OK;
    if (!chain)
        MF_TRY(need_str(ps, t, r, c->auth_asym >= 0 ? c->auth_asym : c->asym, AS, "auth_asym_id",
                        &chain));
    if (!comp) MF_TRY(need_str(ps, t, r, c->comp, AS, "label_comp_id", &comp));
    int col;
    MF_TRY(need_col(ps, t, AS, "auth_seq_id", &col));
    int32_t num;
    MF_TRY(need_int(ps, t, r, col, AS, "auth_seq_id", &num));
    char ins = ins_s ? ins_s[0] : ' ';
    poly *p = poly_find(ps, chain);
    if (!p) {
        MF_TRY(poly_add(ps, chain, &p));
        p->auth = chain;
    }
    *pi = (int)(p - ps->p);
    for (int64_t s = p->len - 1; s >= 0; s--)
        if (p->num[s] == num && p->ins[s] == ins) {
            *slot = s;
            return MF_OK;
        }
    MF_TRY(poly_reserve(ps, p, p->len + 1));
    p->mon[p->len] = comp;
    p->num[p->len] = num;
    p->ins[p->len] = ins;
    *slot = p->len++;
    return MF_OK;
}

/* Pass over _atom_site: every coordinate is checked; rows of the first model that belong to a
 * protein chain get (chain, residue); the others -1. */
static mf_status assign_rows(polys *ps, const mf_cif_table *t, const atom_cols *c, int observed,
                             int32_t *row_poly, int64_t *row_slot)
{
    int32_t first_model = 0, seq_col;
    if (!observed) MF_TRY(need_col(ps, t, AS, "label_seq_id", &seq_col));
    int has_model = c->model >= 0 && val(t, 0, c->model);
    if (has_model) MF_TRY(need_int(ps, t, 0, c->model, AS, "pdbx_PDB_model_num", &first_model));
    for (int64_t r = 0; r < mf_cif_rows(t); r++) {
        row_poly[r] = -1;
        const int xyz[3] = {c->x, c->y, c->z};
        static const char *names[3] = {"Cartn_x", "Cartn_y", "Cartn_z"};
        for (int k = 0; k < 3; k++) {
            const mf_cif_value *v = mf_cif_get(t, r, xyz[k]);
            double d;
            if (v->kind != MF_CIF_VALUE || mf_parse_finite(v->s, strlen(v->s), &d) != 0)
                return MF_ERROR(MF_ERR_FORMAT, "%s:%d: %s.%s: '%.40s' is not a finite number",
                                ps->name, v->line, AS, names[k], v->s);
        }
        if (has_model && val(t, r, c->model)) {
            int32_t m;
            MF_TRY(need_int(ps, t, r, c->model, AS, "pdbx_PDB_model_num", &m));
            if (m != first_model) continue;
        }
        if (observed) {
            int pi;
            MF_TRY(observed_slot(ps, t, c, r, &pi, &row_slot[r]));
            row_poly[r] = pi;
            continue;
        }
        const char *asym = val(t, r, c->asym);
        poly *p = asym ? poly_find(ps, asym) : NULL;
        if (!p || !p->protein) continue;
        int32_t seq;
        MF_TRY(need_int(ps, t, r, seq_col, AS, "label_seq_id", &seq));
        if (seq < 1 || seq > p->len)
            return MF_ERROR(MF_ERR_FORMAT, "%s:%d: %s.label_seq_id: %d outside 1..%lld of chain %s",
                            ps->name, mf_cif_get(t, r, seq_col)->line, AS, seq, (long long)p->len,
                            p->asym);
        const char *comp;
        MF_TRY(need_str(ps, t, r, c->comp, AS, "label_comp_id", &comp));
        if (strcmp(comp, p->mon[seq - 1]) != 0) continue; /* the other residue of a hetero */
        if (!p->auth && c->auth_asym >= 0) p->auth = val(t, r, c->auth_asym);
        row_poly[r] = (int32_t)(p - ps->p);
        row_slot[r] = seq - 1;
    }
    return MF_OK;
}

static mf_status fill_record(const polys *ps, const mf_cif_table *t, const atom_cols *c, int64_t r,
                             mf_atom_record *a)
{
    const char *comp = val(t, r, c->comp), *atom, *alt = val(t, r, c->alt);
    const char *ins = val(t, r, c->ins);
    MF_TRY(need_str(ps, t, r, c->atom, AS, "label_atom_id", &atom));
    memset(a, 0, sizeof *a);
    a->line = mf_cif_get(t, r, c->x)->line;
    a->atom37 = (int16_t)mf_atom_record_slot(comp ? comp : "", atom);
    a->alt = alt ? alt[0] : ' ';
    a->ins = ins ? ins[0] : ' ';
    snprintf(a->res_name, sizeof a->res_name, "%s", comp ? comp : "");
    a->auth_seq = NUM_UNKNOWN;
    if (c->auth_seq >= 0 && val(t, r, c->auth_seq))
        MF_TRY(need_int(ps, t, r, c->auth_seq, AS, "auth_seq_id", &a->auth_seq));
    const int xyz[3] = {c->x, c->y, c->z};
    for (int k = 0; k < 3; k++) MF_TRY(opt_float(ps, t, r, xyz[k], AS, "Cartn", 0., &a->xyz[k]));
    MF_TRY(opt_float(ps, t, r, c->occ, AS, "occupancy", 1., &a->occupancy));
    MF_TRY(opt_float(ps, t, r, c->b, AS, "B_iso_or_equiv", 0., &a->b_factor));
    return MF_OK;
}

/* Author numbers of unobserved residues that the file does not give: counted on from the
 * nearest observed neighbour. */
static void fill_unknown_numbers(mf_protein *p, const char *known)
{
    int64_t prev = -1;
    for (int64_t i = 0; i < p->num_res; i++) {
        if (known[i]) {
            prev = i;
            continue;
        }
        int64_t next = i + 1;
        while (next < p->num_res && !known[next]) next++;
        if (prev >= 0)
            p->residue_index[i] = p->residue_index[prev] + (int32_t)(i - prev);
        else if (next < p->num_res)
            p->residue_index[i] = p->residue_index[next] - (int32_t)(next - i);
        else
            p->residue_index[i] = (int32_t)(i + 1);
    }
}

/* The standard residue a modified one derives from, as the entry states it
 * (_pdbx_struct_mod_residue, else _chem_comp.mon_nstd_parent_comp_id); NULL when not stated.
 * AF2 reads these residues as their parent (through Biopython's SCOP table). */
static const char *parent_residue(const mf_cif *cif, const char *mon)
{
    const mf_cif_table *t = mf_cif_find(cif, "_pdbx_struct_mod_residue");
    int cn = mf_cif_column(t, "label_comp_id"), cp = mf_cif_column(t, "parent_comp_id");
    for (int64_t r = 0; cn >= 0 && cp >= 0 && r < mf_cif_rows(t); r++) {
        const char *n = val(t, r, cn), *par = val(t, r, cp);
        if (n && par && !strcmp(n, mon)) return par;
    }
    t = mf_cif_find(cif, "_chem_comp");
    cn = mf_cif_column(t, "id"), cp = mf_cif_column(t, "mon_nstd_parent_comp_id");
    for (int64_t r = 0; cn >= 0 && cp >= 0 && r < mf_cif_rows(t); r++) {
        const char *n = val(t, r, cn), *par = val(t, r, cp);
        if (n && par && !strcmp(n, mon)) return par;
    }
    return NULL;
}

static mf_status build_chain(polys *ps, poly *p, const mf_atom_record *recs, mf_protein *out)
{
    MF_TRY(mf_protein_alloc(out, p->len));
    char *known = calloc((size_t)p->len + 1, 1);
    if (!known) {
        mf_protein_free(out);
        return MF_ERROR(MF_ERR_NOMEM, "%s: chain %s", ps->name, p->asym);
    }
    for (int64_t s = 0; s < p->len; s++) {
        mf_protein_set_residue(out, s, p->mon[s]);
        const char *parent =
            out->aatype[s] == MF_RESTYPE_UNK ? parent_residue(ps->cif, p->mon[s]) : NULL;
        if (parent && mf_restype_from_three_letter(parent) < MF_NUM_RESTYPES)
            mf_protein_set_residue(out, s, parent);
        int64_t b = p->start[s], n = p->start[s + 1] - b;
        int k = mf_resolve_residue(out, s, recs + b, n, NULL);
        int32_t num = k >= 0 ? recs[b + k].auth_seq : NUM_UNKNOWN;
        out->insertion_code[s] = k >= 0 ? recs[b + k].ins : p->ins[s];
        if (num == NUM_UNKNOWN) num = p->num[s];
        known[s] = num != NUM_UNKNOWN;
        out->residue_index[s] = known[s] ? num : 0;
    }
    fill_unknown_numbers(out, known);
    free(known);
    const char *id = p->auth ? p->auth : p->asym;
    if (strlen(id) >= MF_CHAIN_ID_MAX) {
        mf_protein_free(out);
        return MF_ERROR(MF_ERR_FORMAT, "%s: chain id '%.40s' longer than %d characters", ps->name,
                        id, MF_CHAIN_ID_MAX - 1);
    }
    snprintf(out->chain_id, sizeof out->chain_id, "%s", id);
    return MF_OK;
}

static mf_status build_chains(polys *ps, const mf_cif_table *t, const atom_cols *c,
                              const int32_t *row_poly, const int64_t *row_slot, mf_protein **chains,
                              int *n_chains)
{
    int64_t nrows = mf_cif_rows(t), total = 0, sum_len = 0;
    for (int i = 0; i < ps->n; i++) {
        ps->p[i].start = calloc((size_t)ps->p[i].len + 1, sizeof(int64_t));
        if (!ps->p[i].start) return MF_ERROR(MF_ERR_NOMEM, "%s: residue table", ps->name);
        sum_len += ps->p[i].len;
    }
    for (int64_t r = 0; r < nrows; r++)
        if (row_poly[r] >= 0) ps->p[row_poly[r]].start[row_slot[r] + 1]++;
    /* base: first record of each chain; res_off: first residue of each chain over all chains */
    int64_t *base = calloc(2 * ((size_t)ps->n + 1), sizeof *base), *res_off = NULL;
    int64_t *fill = calloc((size_t)sum_len + 1, sizeof *fill); /* next record of each residue */
    mf_atom_record *recs = NULL;
    mf_protein *out = NULL;
    int n_out = 0;
    mf_status st = MF_OK;
    if (!base || !fill) {
        st = MF_ERROR(MF_ERR_NOMEM, "%s: residue table", ps->name);
        goto cleanup;
    }
    res_off = base + ps->n + 1;
    sum_len = 0;
    for (int i = 0; i < ps->n; i++) {
        poly *p = &ps->p[i];
        for (int64_t s = 0; s < p->len; s++) p->start[s + 1] += p->start[s];
        base[i] = total;
        res_off[i] = sum_len;
        total += p->start[p->len];
        for (int64_t s = 0; s < p->len; s++) fill[sum_len + s] = base[i] + p->start[s];
        sum_len += p->len;
    }
    recs = malloc((size_t)(total ? total : 1) * sizeof *recs);
    out = calloc((size_t)ps->n + 1, sizeof *out);
    if (!recs || !out) {
        st = MF_ERROR(MF_ERR_NOMEM, "%s: %lld atom records", ps->name, (long long)total);
        goto cleanup;
    }
    for (int64_t r = 0; r < nrows; r++) {
        if (row_poly[r] < 0) continue;
        int64_t at = fill[res_off[row_poly[r]] + row_slot[r]]++;
        MF_TRY_GOTO(fill_record(ps, t, c, r, &recs[at]));
    }
    for (int i = 0; i < ps->n; i++) {
        poly *p = &ps->p[i];
        if (!p->protein || p->start[p->len] == 0) continue;
        for (int j = 0; j < n_out; j++)
            if (strcmp(out[j].chain_id, p->auth ? p->auth : p->asym) == 0) {
                st = MF_ERROR(MF_ERR_FORMAT, "%s: author chain %s names two protein chains",
                              ps->name, out[j].chain_id);
                goto cleanup;
            }
        MF_TRY_GOTO(build_chain(ps, p, recs + base[i], &out[n_out]));
        n_out++;
    }
cleanup:
    free(base);
    free(fill);
    free(recs);
    if (st != MF_OK) {
        mf_protein_list_free(out, n_out);
        return st;
    }
    *chains = out;
    *n_chains = n_out;
    return MF_OK;
}

static mf_status first_float(const polys *ps, const char *cat, const char *item, double *out)
{
    const mf_cif_table *t = mf_cif_find(ps->cif, cat);
    int col = mf_cif_column(t, item);
    const char *s = col >= 0 ? val(t, 0, col) : NULL;
    if (!s) return MF_OK;
    if (mf_parse_finite(s, strlen(s), out) != 0 || *out < 0)
        return MF_ERROR(MF_ERR_FORMAT, "%s:%d: %s.%s: '%.40s' is not a resolution", ps->name,
                        mf_cif_get(t, 0, col)->line, cat, item, s);
    return MF_OK;
}

static int is_date(const char *s)
{
    static const char pat[] = "dddd-dd-dd";
    for (int i = 0; i < 10; i++)
        if (pat[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != '-') return 0;
    return s[10] == '\0';
}

mf_status mf_mmcif_entry_info(const mf_cif *cif, mf_entry_info *info)
{
    MF_REQUIRE(cif && info, "mf_mmcif_entry_info: NULL argument");
    memset(info, 0, sizeof *info);
    polys ps = {.cif = cif, .name = mf_cif_file_name(cif)};
    const mf_cif_table *t = mf_cif_find(cif, "_entry");
    const char *id = val(t, 0, mf_cif_column(t, "id"));
    snprintf(info->entry_id, sizeof info->entry_id, "%s", id ? id : "");
    /* AF2's order of preference (mmcif_parsing.get_resolution). */
    static const char *res[3][2] = {{"_refine", "ls_d_res_high"},
                                    {"_em_3d_reconstruction", "resolution"},
                                    {"_reflns", "d_resolution_high"}};
    for (int k = 0; k < 3 && info->resolution == 0.; k++)
        MF_TRY(first_float(&ps, res[k][0], res[k][1], &info->resolution));
    /* Files written before the 2014 remediation of the dictionary list _database_PDB_rev. */
    static const char *rev[2][2] = {{"_pdbx_audit_revision_history", "revision_date"},
                                    {"_database_PDB_rev", "date"}};
    int col;
    for (int k = 0; k < 2 && !info->release_date[0]; k++) {
        t = mf_cif_find(cif, rev[k][0]);
        col = mf_cif_column(t, rev[k][1]);
        for (int64_t r = 0; col >= 0 && r < mf_cif_rows(t); r++) {
            const char *d = val(t, r, col);
            if (!d) continue;
            if (!is_date(d))
                return MF_ERROR(MF_ERR_FORMAT, "%s:%d: %s.%s: '%.40s' is not YYYY-MM-DD", ps.name,
                                mf_cif_get(t, r, col)->line, rev[k][0], rev[k][1], d);
            if (!info->release_date[0] || strcmp(d, info->release_date) < 0)
                memcpy(info->release_date, d, MF_DATE_MAX);
        }
    }
    t = mf_cif_find(cif, "_exptl");
    col = mf_cif_column(t, "method");
    size_t k = 0;
    for (int64_t r = 0; col >= 0 && r < mf_cif_rows(t); r++) {
        const char *m = val(t, r, col);
        if (!m || k + 3 >= sizeof info->method) continue;
        int w = snprintf(info->method + k, sizeof info->method - k, "%s%s", k ? ", " : "", m);
        k = w > 0 ? k + (size_t)w : k;
        if (k >= sizeof info->method) k = sizeof info->method - 1;
    }
    return MF_OK;
}

mf_status mf_mmcif_parse(const char *text, size_t len, const char *name, mf_protein **chains,
                         int *n_chains)
{
    MF_REQUIRE(chains && n_chains, "mf_mmcif_parse: NULL output");
    *chains = NULL;
    *n_chains = 0;
    mf_cif *cif = NULL;
    MF_TRY(mf_cif_parse(&cif, text, len, name));
    polys ps = {.cif = cif, .name = mf_cif_file_name(cif), .last = -1};
    int32_t *row_poly = NULL;
    int64_t *row_slot = NULL;
    mf_entry_info info;
    atom_cols cols;
    mf_status st = MF_OK;
    MF_TRY_GOTO(mf_mmcif_entry_info(cif, &info));
    const mf_cif_table *atoms = mf_cif_find(cif, AS);
    if (!atoms) {
        st = MF_ERROR(MF_ERR_FORMAT, "%s: _atom_site: no atom coordinates in the file", ps.name);
        goto cleanup;
    }
    const mf_cif_table *scheme = mf_cif_find(cif, "_pdbx_poly_seq_scheme");
    const mf_cif_table *eps = mf_cif_find(cif, "_entity_poly_seq");
    const mf_cif_table *sa = mf_cif_find(cif, "_struct_asym");
    int observed = 0;
    if (scheme)
        MF_TRY_GOTO(polys_from_scheme(&ps, scheme));
    else if (eps && sa)
        MF_TRY_GOTO(polys_from_entity_seq(&ps, eps, sa));
    else
        observed = 1;
    if (!observed) mark_proteins(&ps);
    MF_TRY_GOTO(atom_columns(&ps, atoms, &cols));
    int64_t nrows = mf_cif_rows(atoms);
    row_poly = malloc((size_t)nrows * sizeof *row_poly);
    row_slot = calloc((size_t)nrows, sizeof *row_slot);
    if (!row_poly || !row_slot) {
        st = MF_ERROR(MF_ERR_NOMEM, "%s: %lld atom rows", ps.name, (long long)nrows);
        goto cleanup;
    }
    MF_TRY_GOTO(assign_rows(&ps, atoms, &cols, observed, row_poly, row_slot));
    if (observed)
        for (int i = 0; i < ps.n; i++) ps.p[i].protein = majority_standard(&ps.p[i]);
    MF_TRY_GOTO(build_chains(&ps, atoms, &cols, row_poly, row_slot, chains, n_chains));
    mf_set_entry_info(*chains, *n_chains, &info);
cleanup:
    free(row_poly);
    free(row_slot);
    polys_free(&ps);
    mf_cif_free(cif);
    return st;
}

mf_status mf_mmcif_read(const char *path, mf_protein **chains, int *n_chains)
{
    MF_REQUIRE(chains && n_chains, "mf_mmcif_read: NULL output");
    *chains = NULL;
    *n_chains = 0;
    char *text = NULL;
    size_t len = 0;
    MF_TRY(mf_read_text_file(path, &text, &len));
    mf_status st = mf_mmcif_parse(text, len, path, chains, n_chains);
    free(text);
    return st;
}
