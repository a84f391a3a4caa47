/* HHsearch .hhr reader: header, hit table, alignment blocks (see hhr.h for the rules). */
#include "data/hhr.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/fasta.h"

#define MAX_TOKENS 64

typedef struct {
    mf_line_reader *rd;
    const char *name;
    int64_t lineno;
    char *line; /* NUL-terminated copy of the current line */
    size_t cap;
    int have; /* a line is pushed back */
    int eof;
} hhr_reader;

/* Next line into r->line (NULL at the end). A NUL byte inside a line is an error. */
static mf_status next_line(hhr_reader *r, const char **out)
{
    if (r->have) {
        r->have = 0;
        *out = r->eof ? NULL : r->line;
        return MF_OK;
    }
    const char *l;
    size_t n;
    MF_TRY(mf_line_reader_next(r->rd, &l, &n));
    r->lineno = mf_line_reader_lineno(r->rd);
    if (!l) {
        r->eof = 1;
        *out = NULL;
        return MF_OK;
    }
    if (memchr(l, '\0', n))
        return MF_ERROR(MF_ERR_FORMAT, "%s:%lld: line: NUL byte (binary data)", r->name,
                        (long long)r->lineno);
    if (n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 256;
        while (cap < n + 1) cap *= 2;
        char *b = realloc(r->line, cap);
        if (!b) return MF_ERROR(MF_ERR_NOMEM, "%s: line of %zu bytes", r->name, n);
        r->line = b;
        r->cap = cap;
    }
    memcpy(r->line, l, n);
    r->line[n] = '\0';
    *out = r->line;
    return MF_OK;
}

static void push_back(hhr_reader *r)
{
    r->have = 1;
}

static int is_blank(const char *s)
{
    for (; *s; s++)
        if (!isspace((unsigned char)*s)) return 0;
    return 1;
}

/* Splits a copy of s at white space. Returns the token count (-1: more than MAX_TOKENS). */
static int tokenize(char *s, char **tok)
{
    int n = 0;
    for (char *p = s;;) {
        while (*p && isspace((unsigned char)*p)) p++;
        if (!*p) break;
        if (n == MAX_TOKENS) return -1;
        tok[n++] = p;
        while (*p && !isspace((unsigned char)*p)) p++;
        if (*p) *p++ = '\0';
    }
    return n;
}

static int parse_double(const char *s, double *out)
{
    if (!*s) return -1;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (*end || errno == ERANGE || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

static int parse_i64(const char *s, size_t n, int64_t *out)
{
    if (n == 0 || n > 18) return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* "a-b" */
static int parse_range(const char *s, size_t n, int64_t *a, int64_t *b)
{
    const char *dash = memchr(s, '-', n);
    if (!dash) return -1;
    size_t k = (size_t)(dash - s);
    return parse_i64(s, k, a) || parse_i64(dash + 1, n - k - 1, b) ? -1 : 0;
}

/* "(L)" */
static int parse_paren(const char *s, size_t n, int64_t *v)
{
    if (n < 3 || s[0] != '(' || s[n - 1] != ')') return -1;
    return parse_i64(s + 1, n - 2, v);
}

void mf_hhr_free(mf_hhr *h)
{
    if (!h) return;
    for (int64_t i = 0; i < h->num_hits; i++) {
        mf_hhr_hit *x = &h->hits[i];
        free(x->name);
        free(x->description);
        free(x->query);
        free(x->hit_sequence);
        free(x->indices_query);
        free(x->indices_hit);
    }
    for (int64_t i = 0; i < h->num_rows; i++) free(h->rows[i].name);
    free(h->hits);
    free(h->rows);
    free(h->query_name);
    free(h->source);
    memset(h, 0, sizeof *h);
}

#define FAIL(field, ...)                                                                           \
    do {                                                                                           \
        char mf_m_[512];                                                                           \
        snprintf(mf_m_, sizeof mf_m_, __VA_ARGS__);                                                \
        return MF_ERROR(MF_ERR_FORMAT, "%s:%lld: %s: %s", r->name, (long long)r->lineno, field,    \
                        mf_m_);                                                                    \
    } while (0)

/* ---- header ---- */

static mf_status parse_header(hhr_reader *r, mf_hhr *out)
{
    const char *l;
    int first = 1, have_mc = 0;
    for (;;) {
        MF_TRY(next_line(r, &l));
        if (!l) {
            if (first) FAIL("header", "empty file");
            FAIL("hit table", "the file ends after the header (truncated output: no hit table)");
        }
        if (is_blank(l)) {
            if (first) FAIL("header", "the file must start with a 'Query' line");
            break;
        }
        const char *k = l;
        size_t kn = 0;
        while (isalnum((unsigned char)k[kn]) || k[kn] == '_' || k[kn] == '-') kn++;
        if (first && !(kn == 5 && !strncmp(k, "Query", 5)))
            FAIL("header", "the file must start with a 'Query' line, got '%.60s'", l);
        if (kn == 0 || (k[kn] && !isspace((unsigned char)k[kn])))
            FAIL("header", "expected 'Key value', got '%.60s'", l);
        const char *v = k + kn;
        while (isspace((unsigned char)*v)) v++;
        size_t vn = strlen(v);
        while (vn && isspace((unsigned char)v[vn - 1])) vn--;
        first = 0;
        if (kn == 5 && !strncmp(k, "Query", 5)) {
            if (out->query_name) FAIL("Query", "second Query line");
            out->query_name = strndup(v, vn);
            if (!out->query_name) return MF_ERROR(MF_ERR_NOMEM, "%s: query name", r->name);
        } else if (kn == 13 && !strncmp(k, "Match_columns", 13)) {
            if (parse_i64(v, vn, &out->match_columns) || out->match_columns <= 0)
                FAIL("Match_columns", "expected a positive integer, got '%.*s'", (int)vn, v);
            have_mc = 1;
        }
    }
    if (!have_mc) FAIL("Match_columns", "missing from the header");
    return MF_OK;
}

/* ---- hit table ---- */

static mf_status parse_table_tokens(hhr_reader *r, const char *l, char *buf, char **t,
                                    mf_hhr_table_row *row)
{
    int n = tokenize(buf, t);
    if (n < 0) FAIL("hit table", "too many fields");
    /* index, name, Prob, E-value, P-value, Score, SS, Cols, query range, template range, (L) */
    if (n < 10) FAIL("hit table", "expected at least 10 fields, got %d: '%.60s'", n, l);
    int64_t idx;
    if (parse_i64(t[0], strlen(t[0]), &idx) || idx < 1 || idx > INT32_MAX)
        FAIL("hit table: No", "expected a hit number, got '%s'", t[0]);
    row->index = (int32_t)idx;
    int k = n - 1;
    size_t ln = strlen(t[k]);
    if (t[k][0] == '(') {
        if (parse_paren(t[k], ln, &row->hit_length))
            FAIL("hit table: template length", "expected '(L)', got '%s'", t[k]);
        k--;
        if (parse_range(t[k], strlen(t[k]), &row->hit_start, &row->hit_end))
            FAIL("hit table: Template HMM", "expected 'a-b', got '%s'", t[k]);
    } else {
        char *p = strchr(t[k], '(');
        if (!p || parse_range(t[k], (size_t)(p - t[k]), &row->hit_start, &row->hit_end) ||
            parse_paren(p, strlen(p), &row->hit_length))
            FAIL("hit table: Template HMM", "expected 'a-b (L)', got '%s'", t[k]);
    }
    k--;
    if (parse_range(t[k], strlen(t[k]), &row->query_start, &row->query_end))
        FAIL("hit table: Query HMM", "expected 'a-b', got '%s'", t[k]);
    k--;
    int64_t cols;
    if (k < 7 || parse_i64(t[k], strlen(t[k]), &cols) || cols > INT32_MAX)
        FAIL("hit table: Cols", "expected an integer, got '%s'", k >= 0 ? t[k] : "");
    row->cols = (int32_t)cols;
    double *num[5] = {&row->ss, &row->score, &row->p_value, &row->e_value, &row->probability};
    static const char *names[5] = {"SS", "Score", "P-value", "E-value", "Prob"};
    for (int i = 0; i < 5; i++)
        if (parse_double(t[k - 1 - i], num[i]))
            FAIL("hit table", "%s: expected a number, got '%s'", names[i], t[k - 1 - i]);
    if (k - 6 < 1) FAIL("hit table", "no hit name");
    row->name = strdup(t[1]);
    if (!row->name) return MF_ERROR(MF_ERR_NOMEM, "%s: hit name", r->name);
    row->line = r->lineno;
    return MF_OK;
}

static mf_status parse_table_row(hhr_reader *r, const char *l, mf_hhr_table_row *row)
{
    char *buf = strdup(l), *t[MAX_TOKENS];
    if (!buf) return MF_ERROR(MF_ERR_NOMEM, "%s: hit table", r->name);
    mf_status st = parse_table_tokens(r, l, buf, t, row);
    free(buf);
    return st;
}

static mf_status parse_table(hhr_reader *r, mf_hhr *out)
{
    const char *l;
    for (;;) {
        MF_TRY(next_line(r, &l));
        if (!l)
            FAIL("hit table", "the file ends after the header (truncated output: no hit table)");
        if (!is_blank(l)) break;
    }
    const char *p = l;
    while (*p == ' ') p++;
    if (strncmp(p, "No Hit", 6))
        FAIL("hit table", "expected the ' No Hit ...' line, got '%.60s'", l);
    int64_t cap = 0;
    for (;;) {
        MF_TRY(next_line(r, &l));
        if (!l || is_blank(l)) break;
        if (!strncmp(l, "No ", 3)) { /* a block right after the table: no blank line */
            push_back(r);
            break;
        }
        if (out->num_rows == cap) {
            cap = cap ? cap * 2 : 64;
            mf_hhr_table_row *nr = realloc(out->rows, (size_t)cap * sizeof *nr);
            if (!nr) return MF_ERROR(MF_ERR_NOMEM, "%s: hit table", r->name);
            out->rows = nr;
        }
        mf_hhr_table_row *row = &out->rows[out->num_rows];
        memset(row, 0, sizeof *row);
        MF_TRY(parse_table_row(r, l, row));
        out->num_rows++;
    }
    return MF_OK;
}

/* ---- alignment blocks ---- */

static int is_annotation_name(const char *s)
{
    static const char *names[] = {"ss_pred", "ss_dssp", "ss_conf", "sa_dssp", "Consensus"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(s, names[i])) return 1;
    return 0;
}

typedef struct {
    char *seq;
    int32_t *idx;
    int64_t n, cap;
    int64_t start, end, length; /* first start, last end, "(L)" */
    int pieces;
} track;

static void track_free(track *t)
{
    free(t->seq);
    free(t->idx);
}

/* Appends one "start seq end (L)" piece. */
static mf_status track_add(hhr_reader *r, track *t, const char *which, int64_t start,
                           const char *seq, int64_t end, int64_t length)
{
    size_t n = strlen(seq);
    int64_t res = 0;
    for (size_t i = 0; i < n; i++) {
        if (seq[i] == '-') continue;
        if (seq[i] < 'A' || seq[i] > 'Z')
            FAIL(which, "column %zu: '%c' is not a residue letter (A-Z) or '-'", i + 1, seq[i]);
        res++;
    }
    if (res != end - start + 1)
        FAIL(which, "%lld residues between %lld and %lld (expected %lld)", (long long)res,
             (long long)start, (long long)end, (long long)(end - start + 1));
    if (t->pieces == 0) {
        t->start = start;
        t->length = length;
    } else {
        if (start != t->end + 1)
            FAIL(which, "piece starts at %lld, the previous one ended at %lld", (long long)start,
                 (long long)t->end);
        if (length != t->length)
            FAIL(which, "length (%lld) differs from the block's first piece (%lld)",
                 (long long)length, (long long)t->length);
    }
    if (res > 0 && (start < 1 || end > length))
        FAIL(which, "residues %lld-%lld outside 1-%lld", (long long)start, (long long)end,
             (long long)length);
    if (t->n + (int64_t)n + 1 > t->cap) {
        int64_t cap = t->cap ? t->cap : 256;
        while (cap < t->n + (int64_t)n + 1) cap *= 2;
        char *s = realloc(t->seq, (size_t)cap);
        if (s) t->seq = s;
        int32_t *x = s ? realloc(t->idx, (size_t)cap * sizeof *x) : NULL;
        if (!x)
            return MF_ERROR(MF_ERR_NOMEM, "%s: alignment of %lld columns", r->name, (long long)cap);
        t->idx = x;
        t->cap = cap;
    }
    int64_t pos = start - 1;
    for (size_t i = 0; i < n; i++) {
        t->seq[t->n] = seq[i];
        t->idx[t->n++] = seq[i] == '-' ? -1 : (int32_t)pos++;
    }
    t->seq[t->n] = '\0';
    t->end = end;
    t->pieces++;
    return MF_OK;
}

static mf_status parse_summary_tokens(hhr_reader *r, char *buf, char **t, mf_hhr_hit *h)
{
    int n = tokenize(buf, t);
    if (n < 0) FAIL("Probab line", "too many fields");
    enum { PROB, EVAL, SCORE, COLS, IDENT, SIM, SUMP, NEFF, NKEYS };
    static const char *keys[NKEYS] = {"Probab",     "E-value",    "Score",     "Aligned_cols",
                                      "Identities", "Similarity", "Sum_probs", "Template_Neff"};
    double v[NKEYS] = {0};
    int seen[NKEYS] = {0};
    for (int i = 0; i < n; i++) {
        char *eq = strchr(t[i], '=');
        if (!eq || eq == t[i]) FAIL("Probab line", "expected key=value, got '%s'", t[i]);
        *eq = '\0';
        char *val = eq + 1;
        int k = 0;
        while (k < NKEYS && strcmp(t[i], keys[k])) k++;
        if (k == NKEYS) continue; /* a field of another HH-suite version */
        size_t vl = strlen(val);
        if (k == IDENT) {
            if (vl == 0 || val[vl - 1] != '%')
                FAIL("Identities", "expected a percentage, got '%s'", val);
            val[vl - 1] = '\0';
        }
        if (seen[k]) FAIL(keys[k], "given twice");
        if (parse_double(val, &v[k])) FAIL(keys[k], "expected a number, got '%s'", val);
        seen[k] = 1;
    }
    for (int k = 0; k < NEFF; k++)
        if (!seen[k]) FAIL(keys[k], "missing from the Probab line");
    if (v[COLS] < 0 || v[COLS] != floor(v[COLS]) || v[COLS] > INT32_MAX)
        FAIL("Aligned_cols", "expected a non-negative integer, got %g", v[COLS]);
    h->probability = v[PROB];
    h->e_value = v[EVAL];
    h->score = v[SCORE];
    h->aligned_cols = (int32_t)v[COLS];
    h->identities = v[IDENT];
    h->similarity = v[SIM];
    h->sum_probs = v[SUMP];
    h->template_neff = v[NEFF];
    return MF_OK;
}

static mf_status parse_summary(hhr_reader *r, const char *l, mf_hhr_hit *h)
{
    char *buf = strdup(l), *t[MAX_TOKENS];
    if (!buf) return MF_ERROR(MF_ERR_NOMEM, "%s: Probab line", r->name);
    mf_status st = parse_summary_tokens(r, buf, t, h);
    free(buf);
    return st;
}

/* A Q or T alignment line: returns 1 when it carries residues (fills the fields), 0 for an
 * annotation track. */
static mf_status parse_seq_line(hhr_reader *r, char *buf, int *is_seq, int64_t *start, char **seq,
                                int64_t *end, int64_t *length)
{
    char *t[MAX_TOKENS];
    const char *which = buf[0] == 'Q' ? "query line" : "template line";
    int n = tokenize(buf + 2, t);
    if (n < 0) FAIL(which, "too many fields");
    if (n >= 1 && is_annotation_name(t[0])) {
        *is_seq = 0;
        return MF_OK;
    }
    if (n < 5) FAIL(which, "expected 'name start sequence end (length)'");
    if (parse_i64(t[n - 4], strlen(t[n - 4]), start))
        FAIL(which, "start: expected an integer, got '%s'", t[n - 4]);
    if (parse_i64(t[n - 2], strlen(t[n - 2]), end))
        FAIL(which, "end: expected an integer, got '%s'", t[n - 2]);
    if (parse_paren(t[n - 1], strlen(t[n - 1]), length))
        FAIL(which, "length: expected '(L)', got '%s'", t[n - 1]);
    *seq = t[n - 3];
    *is_seq = 1;
    return MF_OK;
}

static mf_status parse_block(hhr_reader *r, const char *first, mf_hhr *out, mf_hhr_hit *h)
{
    mf_status st = MF_OK;
    track q = {0}, t = {0};
    char *buf = NULL;
    h->line = r->lineno;
    {
        int64_t idx;
        const char *p = first + 3;
        while (*p == ' ') p++;
        size_t n = strcspn(p, " \t");
        const char *rest = p + n;
        if (parse_i64(p, n, &idx) || idx < 1 || idx > INT32_MAX || !is_blank(rest)) {
            char m[80];
            snprintf(m, sizeof m, "%.60s", first);
            return MF_ERROR(MF_ERR_FORMAT, "%s:%lld: No: expected 'No <hit number>', got '%s'",
                            r->name, (long long)r->lineno, m);
        }
        h->index = (int32_t)idx;
    }
    const char *l;
    MF_TRY(next_line(r, &l));
    if (!l || l[0] != '>' || is_blank(l + 1))
        FAIL("hit name", "expected '>name description' after 'No %d'", h->index);
    h->description = strdup(l + 1);
    size_t nn = strcspn(l + 1, " \t");
    h->name = strndup(l + 1, nn);
    if (!h->description || !h->name) return MF_ERROR(MF_ERR_NOMEM, "%s: hit name", r->name);
    MF_TRY(next_line(r, &l));
    if (!l || strncmp(l, "Probab=", 7))
        FAIL("Probab line", "expected 'Probab=...' after the hit name");
    MF_TRY(parse_summary(r, l, h));
    for (;;) {
        MF_TRY_GOTO(next_line(r, &l));
        if (!l) break;
        if (!strncmp(l, "No ", 3) || !strncmp(l, "Done!", 5)) {
            push_back(r);
            break;
        }
        if (is_blank(l) || l[0] == ' ' || !strncmp(l, "Confidence", 10)) continue;
        if ((l[0] == 'Q' || l[0] == 'T') && l[1] == ' ') {
            free(buf);
            buf = strdup(l);
            if (!buf) {
                st = MF_ERROR(MF_ERR_NOMEM, "%s: line", r->name);
                goto cleanup;
            }
            int is_seq = 0;
            int64_t start = 0, end = 0, length = 0;
            char *seq = NULL;
            MF_TRY_GOTO(parse_seq_line(r, buf, &is_seq, &start, &seq, &end, &length));
            if (!is_seq) continue;
            if (l[0] == 'Q') {
                if (q.pieces != t.pieces) {
                    st = MF_ERROR(
                        MF_ERR_FORMAT,
                        "%s:%lld: query line: the previous query piece has no template line",
                        r->name, (long long)r->lineno);
                    goto cleanup;
                }
                if (length != out->match_columns) {
                    st = MF_ERROR(MF_ERR_FORMAT,
                                  "%s:%lld: query line: query length (%lld) is not Match_columns "
                                  "(%lld)",
                                  r->name, (long long)r->lineno, (long long)length,
                                  (long long)out->match_columns);
                    goto cleanup;
                }
                MF_TRY_GOTO(track_add(r, &q, "query line", start, seq, end, length));
            } else {
                if (t.pieces + 1 != q.pieces) {
                    st = MF_ERROR(MF_ERR_FORMAT, "%s:%lld: template line: no query line before it",
                                  r->name, (long long)r->lineno);
                    goto cleanup;
                }
                if (t.n + (int64_t)strlen(seq) != q.n) {
                    st = MF_ERROR(MF_ERR_FORMAT,
                                  "%s:%lld: template line: %zu columns, the query line has %lld",
                                  r->name, (long long)r->lineno, strlen(seq),
                                  (long long)(q.n - t.n));
                    goto cleanup;
                }
                MF_TRY_GOTO(track_add(r, &t, "template line", start, seq, end, length));
            }
            continue;
        }
        st = MF_ERROR(MF_ERR_FORMAT, "%s:%lld: alignment of hit %d: unexpected line '%.60s'",
                      r->name, (long long)r->lineno, h->index, l);
        goto cleanup;
    }
    if (q.pieces == 0 || q.pieces != t.pieces) {
        st = MF_ERROR(MF_ERR_FORMAT, "%s:%lld: alignment of hit %d (line %lld): %s", r->name,
                      (long long)r->lineno, h->index, (long long)h->line,
                      q.pieces == 0 ? "no query and template lines"
                                    : "the last query line has no template line");
        goto cleanup;
    }
    int64_t pairs = 0;
    for (int64_t i = 0; i < q.n; i++) pairs += q.idx[i] >= 0 && t.idx[i] >= 0;
    if (pairs != h->aligned_cols) {
        st = MF_ERROR(MF_ERR_FORMAT,
                      "%s:%lld: alignment of hit %d (line %lld): Aligned_cols=%d, the alignment "
                      "pairs %lld residues",
                      r->name, (long long)r->lineno, h->index, (long long)h->line, h->aligned_cols,
                      (long long)pairs);
        goto cleanup;
    }
    h->length = q.n;
    h->query = q.seq;
    h->indices_query = q.idx;
    h->hit_sequence = t.seq;
    h->indices_hit = t.idx;
    q.seq = t.seq = NULL;
    q.idx = t.idx = NULL;
    h->query_start = q.start;
    h->query_end = q.end;
    h->hit_start = t.start;
    h->hit_end = t.end;
    h->hit_length = t.length;
cleanup:
    free(buf);
    track_free(&q);
    track_free(&t);
    return st;
}

static mf_status check_against_table(const mf_hhr *o)
{
    for (int64_t i = 0; i < o->num_hits; i++) {
        const mf_hhr_hit *h = &o->hits[i];
        const mf_hhr_table_row *row = NULL;
        if (h->index >= 1 && h->index <= o->num_rows && o->rows[h->index - 1].index == h->index)
            row = &o->rows[h->index - 1];
        for (int64_t k = 0; !row && k < o->num_rows; k++)
            if (o->rows[k].index == h->index) row = &o->rows[k];
        if (!row)
            return MF_ERROR(MF_ERR_FORMAT, "%s:%lld: No %d: the hit table has no row %d", o->source,
                            (long long)h->line, h->index, h->index);
        const char *what = NULL;
        if (strncmp(row->name, h->name, strlen(row->name)))
            what = "name";
        else if (row->query_start != h->query_start || row->query_end != h->query_end)
            what = "query range";
        else if (row->cols != h->aligned_cols)
            what = "aligned columns";
        if (what)
            return MF_ERROR(
                MF_ERR_FORMAT,
                "%s:%lld: No %d: %s differs from the hit table (line %lld): table %s "
                "%lld-%lld / %lld-%lld (%lld) cols %d, alignment %s %lld-%lld / "
                "%lld-%lld (%lld) cols %d",
                o->source, (long long)h->line, h->index, what, (long long)row->line, row->name,
                (long long)row->query_start, (long long)row->query_end, (long long)row->hit_start,
                (long long)row->hit_end, (long long)row->hit_length, row->cols, h->name,
                (long long)h->query_start, (long long)h->query_end, (long long)h->hit_start,
                (long long)h->hit_end, (long long)h->hit_length, h->aligned_cols);
    }
    return MF_OK;
}

static mf_status parse_all(hhr_reader *r, mf_hhr *out)
{
    MF_TRY(parse_header(r, out));
    MF_TRY(parse_table(r, out));
    int64_t cap = 0;
    const char *l;
    for (;;) {
        MF_TRY(next_line(r, &l));
        if (!l) break;
        if (is_blank(l)) continue;
        if (!strncmp(l, "Done!", 5)) {
            for (;;) {
                MF_TRY(next_line(r, &l));
                if (!l) break;
                if (!is_blank(l)) FAIL("Done!", "text after the end mark: '%.60s'", l);
            }
            break;
        }
        if (strncmp(l, "No ", 3)) FAIL("alignments", "expected 'No <hit number>', got '%.60s'", l);
        if (out->num_hits == cap) {
            cap = cap ? cap * 2 : 32;
            mf_hhr_hit *nh = realloc(out->hits, (size_t)cap * sizeof *nh);
            if (!nh) return MF_ERROR(MF_ERR_NOMEM, "%s: hits", r->name);
            out->hits = nh;
        }
        mf_hhr_hit *h = &out->hits[out->num_hits++];
        memset(h, 0, sizeof *h);
        MF_TRY(parse_block(r, l, out, h));
    }
    return check_against_table(out);
}

static mf_status parse_reader(mf_line_reader *rd, const char *name, mf_hhr *out)
{
    memset(out, 0, sizeof *out);
    hhr_reader r = {.rd = rd, .name = name};
    out->source = strdup(name);
    mf_status st = out->source ? parse_all(&r, out) : MF_ERROR(MF_ERR_NOMEM, "%s", name);
    free(r.line);
    if (st != MF_OK) mf_hhr_free(out);
    return st;
}

mf_status mf_hhr_read(const char *path, mf_hhr *out)
{
    MF_REQUIRE(path && out, "mf_hhr_read: NULL argument");
    memset(out, 0, sizeof *out);
    mf_line_reader *rd = NULL;
    MF_TRY(mf_line_reader_open(&rd, path));
    mf_status st = parse_reader(rd, path, out);
    mf_line_reader_close(rd);
    return st;
}

mf_status mf_hhr_parse(const char *text, size_t len, const char *name, mf_hhr *out)
{
    MF_REQUIRE(out && (text || !len), "mf_hhr_parse: NULL argument");
    memset(out, 0, sizeof *out);
    if (!name) name = "<hhr>";
    mf_line_reader *rd = NULL;
    MF_TRY(mf_line_reader_open_buffer(&rd, text, len, name));
    mf_status st = parse_reader(rd, name, out);
    mf_line_reader_close(rd);
    return st;
}

char *mf_hhr_hit_template_sequence(const mf_hhr_hit *hit)
{
    char *s = malloc((size_t)hit->length + 1);
    if (!s) return NULL;
    int64_t k = 0;
    for (int64_t i = 0; i < hit->length; i++)
        if (hit->hit_sequence[i] != '-') s[k++] = hit->hit_sequence[i];
    s[k] = '\0';
    return s;
}

mf_status mf_hhr_query_to_hit_mapping(const mf_hhr_hit *hit, const char *query_sequence,
                                      int32_t *mapping, bool *found)
{
    MF_REQUIRE(hit && query_sequence && mapping && found,
               "mf_hhr_query_to_hit_mapping: NULL argument");
    int64_t nq = (int64_t)strlen(query_sequence);
    for (int64_t i = 0; i < nq; i++) mapping[i] = -1;
    *found = false;
    char *hq = malloc((size_t)hit->length + 1);
    if (!hq) return MF_ERROR(MF_ERR_NOMEM, "hit %d: query residues", hit->index);
    int64_t nh = 0, nt = 0;
    int32_t qmin = -1, tmin = -1;
    for (int64_t i = 0; i < hit->length; i++) {
        if (hit->query[i] != '-') hq[nh++] = hit->query[i];
        if (hit->indices_query[i] >= 0 && (qmin < 0 || hit->indices_query[i] < qmin))
            qmin = hit->indices_query[i];
        if (hit->indices_hit[i] >= 0) {
            nt++;
            if (tmin < 0 || hit->indices_hit[i] < tmin) tmin = hit->indices_hit[i];
        }
    }
    hq[nh] = '\0';
    int64_t offset = -1;
    if (nh > 0) {
        /* Where hhsearch numbered it, when the residues are there (repeats stay in place);
         * else the first occurrence, as AF2's str.find. */
        if (qmin >= 0 && qmin + nh <= nq && !memcmp(query_sequence + qmin, hq, (size_t)nh))
            offset = qmin;
        else {
            const char *p = strstr(query_sequence, hq);
            if (p) offset = p - query_sequence;
        }
    }
    free(hq);
    if (offset < 0 || nt == 0) return MF_OK;
    for (int64_t i = 0; i < hit->length; i++) {
        int32_t qi = hit->indices_query[i], ti = hit->indices_hit[i];
        if (qi < 0 || ti < 0) continue;
        int64_t key = qi - qmin + offset, val = ti - tmin;
        if (key >= nq || val >= nt) continue;
        mapping[key] = (int32_t)val;
        *found = true;
    }
    return MF_OK;
}
