/* Alignment parsers (a3m, Stockholm, aligned FASTA, plain) into AF2's raw MSA features, and the
 * deduplicating merge of make_msa_features. */
#include "data/msa.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "data/fasta.h"
#include "protein/residue_constants.h"

#define GAP ((uint8_t)MF_MSA_GAP)

/* ---- growing row store ---- */

typedef struct {
    int64_t n, cap;
    int64_t length; /* -1 until the first row fixes it */
    uint8_t *msa;
    int32_t *del;
    char **desc;
    int64_t *lines;
} msa_builder;

static void builder_free(msa_builder *b)
{
    for (int64_t i = 0; i < b->n; ++i) free(b->desc[i]);
    free(b->msa);
    free(b->del);
    free(b->desc);
    free(b->lines);
    memset(b, 0, sizeof *b);
}

/* Appends a row of b->length ids and deletions; takes ownership of desc (freed on failure). */
static mf_status builder_add(msa_builder *b, const uint8_t *ids, const int32_t *dels, char *desc,
                             int64_t line, const char *name)
{
    if (b->n == b->cap) {
        int64_t cap = b->cap ? b->cap * 2 : 64;
        size_t L = (size_t)b->length;
        if (L > 0 && (size_t)cap > SIZE_MAX / sizeof(int32_t) / L) {
            free(desc);
            return MF_ERROR(MF_ERR_NOMEM, "%s:%lld: alignment too large (%lld rows x %lld)", name,
                            (long long)line, (long long)cap, (long long)b->length);
        }
        uint8_t *m = realloc(b->msa, (size_t)cap * L + 1);
        if (m) b->msa = m;
        int32_t *d = m ? realloc(b->del, (size_t)cap * L * sizeof(int32_t) + 1) : NULL;
        if (d) b->del = d;
        char **ds = d ? realloc(b->desc, (size_t)cap * sizeof(char *)) : NULL;
        if (ds) b->desc = ds;
        int64_t *ls = ds ? realloc(b->lines, (size_t)cap * sizeof(int64_t)) : NULL;
        if (!ls) {
            free(desc);
            return MF_ERROR(MF_ERR_NOMEM, "%s:%lld: out of memory for %lld rows of %lld columns",
                            name, (long long)line, (long long)cap, (long long)b->length);
        }
        b->lines = ls;
        b->cap = cap;
    }
    size_t L = (size_t)b->length, off = (size_t)b->n * L;
    memcpy(b->msa + off, ids, L);
    memcpy(b->del + off, dels, L * sizeof(int32_t));
    b->desc[b->n] = desc;
    b->lines[b->n] = line;
    ++b->n;
    return MF_OK;
}

static mf_status builder_finish(msa_builder *b, const char *name, mf_msa *out)
{
    char *src = strdup(name);
    if (!src) return MF_ERROR(MF_ERR_NOMEM, "%s: out of memory", name);
    out->num_rows = b->n;
    out->length = b->length;
    out->msa = b->msa;
    out->deletion_matrix = b->del;
    out->descriptions = b->desc;
    out->lines = b->lines;
    out->source = src;
    memset(b, 0, sizeof *b);
    return MF_OK;
}

/* ---- one row being collected (a3m, aligned FASTA, plain) ---- */

typedef struct {
    uint8_t *ids;
    int32_t *dels;
    int64_t n, cap;
    int32_t pending; /* insertions waiting for the next aligned position */
    char *desc;
    int64_t line;
    int active;
} row_buf;

static mf_status row_push(row_buf *r, uint8_t id, const char *name, int64_t line)
{
    if (r->n == r->cap) {
        int64_t cap = r->cap ? r->cap * 2 : 256;
        uint8_t *ni = realloc(r->ids, (size_t)cap);
        if (ni) r->ids = ni;
        int32_t *nd = ni ? realloc(r->dels, (size_t)cap * sizeof(int32_t)) : NULL;
        if (!nd)
            return MF_ERROR(MF_ERR_NOMEM, "%s:%lld: out of memory (row of %lld columns)", name,
                            (long long)line, (long long)r->n);
        r->dels = nd;
        r->cap = cap;
    }
    r->ids[r->n] = id;
    r->dels[r->n] = r->pending;
    r->pending = 0;
    ++r->n;
    return MF_OK;
}

static void row_reset(row_buf *r)
{
    free(r->desc);
    r->desc = NULL;
    r->n = 0;
    r->pending = 0;
    r->active = 0;
}

static void row_free(row_buf *r)
{
    row_reset(r);
    free(r->ids);
    free(r->dels);
    memset(r, 0, sizeof *r);
}

/* Adds the collected row to the store; the first row fixes the alignment length. */
static mf_status row_commit(row_buf *r, msa_builder *b, const char *name, const char *what)
{
    if (b->length < 0) {
        if (r->n == 0) {
            row_reset(r);
            return MF_ERROR(MF_ERR_FORMAT, "%s:%lld: query row: no aligned residues", name,
                            (long long)r->line);
        }
        b->length = r->n;
    } else if (r->n != b->length) {
        mf_status st = MF_ERROR(MF_ERR_FORMAT,
                                "%s:%lld: %s '%s': %lld aligned columns, the query row has %lld",
                                name, (long long)r->line, what, r->desc ? r->desc : "",
                                (long long)r->n, (long long)b->length);
        row_reset(r);
        return st;
    }
    char *desc = r->desc ? r->desc : strdup("");
    r->desc = NULL;
    if (!desc) return MF_ERROR(MF_ERR_NOMEM, "%s: out of memory", name);
    mf_status st = builder_add(b, r->ids, r->dels, desc, r->line, name);
    row_reset(r);
    return st;
}

static int blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; ++i)
        if (s[i] != ' ' && s[i] != '\t') return 0;
    return 1;
}

static mf_status bad_char(const char *name, int64_t line, size_t col, unsigned char c,
                          const char *field)
{
    if (c < 0x20 || c >= 0x7f)
        return MF_ERROR(MF_ERR_FORMAT, "%s:%lld: %s: control or binary byte 0x%02x at column %zu",
                        name, (long long)line, field, c, col);
    return MF_ERROR(MF_ERR_FORMAT, "%s:%lld: %s: illegal character '%c' at column %zu", name,
                    (long long)line, field, c, col);
}

/* Sequence characters of a3m (insertions = lower case) or of a column-per-character format. */
static mf_status row_line(row_buf *r, const char *s, size_t n, int a3m, const char *name,
                          int64_t line)
{
    for (size_t i = 0; i < n; ++i) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ' || c == '\t') continue;
        if (c >= 'A' && c <= 'Z') {
            MF_TRY(row_push(r, (uint8_t)mf_hhblits_aa_to_id((char)c), name, line));
        } else if (c == '-') {
            MF_TRY(row_push(r, GAP, name, line));
        } else if (c >= 'a' && c <= 'z') {
            if (a3m)
                ++r->pending;
            else
                MF_TRY(
                    row_push(r, (uint8_t)mf_hhblits_aa_to_id((char)(c - 'a' + 'A')), name, line));
        } else if (c == '.') {
            if (!a3m) MF_TRY(row_push(r, GAP, name, line));
        } else {
            return bad_char(name, line, i + 1, c, "sequence");
        }
    }
    return MF_OK;
}

static mf_status header_text(const char *s, size_t n, const char *name, int64_t line, char **desc)
{
    for (size_t i = 1; i < n; ++i) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return MF_ERROR(MF_ERR_FORMAT,
                            "%s:%lld: header: control or binary byte 0x%02x at column %zu", name,
                            (long long)line, c, i + 1);
    }
    size_t a = 1, e = n;
    while (a < e && (s[a] == ' ' || s[a] == '\t')) ++a;
    while (e > a && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
    *desc = strndup(s + a, e - a);
    if (!*desc)
        return MF_ERROR(MF_ERR_NOMEM, "%s:%lld: header: out of memory", name, (long long)line);
    return MF_OK;
}

/* a3m and aligned FASTA: '>' records. */
static mf_status parse_records(mf_line_reader *rd, int a3m, int64_t max_rows, msa_builder *b)
{
    const char *name = mf_line_reader_name(rd);
    row_buf r = {0};
    mf_status st = MF_OK;
    for (;;) {
        const char *s;
        size_t n;
        MF_TRY_GOTO(mf_line_reader_next(rd, &s, &n));
        if (!s) break;
        int64_t line = mf_line_reader_lineno(rd);
        if (n > 0 && s[0] == '>') {
            if (r.active) MF_TRY_GOTO(row_commit(&r, b, name, "sequence"));
            if (max_rows > 0 && b->n >= max_rows) break;
            MF_TRY_GOTO(header_text(s, n, name, line, &r.desc));
            r.line = line;
            r.active = 1;
        } else if (blank(s, n)) {
            continue;
        } else if (!r.active) {
            if (a3m && s[0] == '#' && b->n == 0) continue; /* hhblits/ColabFold comment lines */
            unsigned char c = (unsigned char)s[0];
            if (c < 0x20 || c >= 0x7f)
                st = MF_ERROR(MF_ERR_FORMAT,
                              "%s:%lld: header: binary data (byte 0x%02x) where a '>' header "
                              "was expected",
                              name, (long long)line, c);
            else
                st = MF_ERROR(MF_ERR_FORMAT,
                              "%s:%lld: header: sequence text before the first '>' header", name,
                              (long long)line);
            goto cleanup;
        } else {
            MF_TRY_GOTO(row_line(&r, s, n, a3m, name, line));
        }
    }
    if (r.active) MF_TRY_GOTO(row_commit(&r, b, name, "sequence"));
cleanup:
    row_free(&r);
    return st;
}

static mf_status parse_plain(mf_line_reader *rd, int64_t max_rows, msa_builder *b)
{
    const char *name = mf_line_reader_name(rd);
    row_buf r = {0};
    mf_status st = MF_OK;
    for (;;) {
        const char *s;
        size_t n;
        MF_TRY_GOTO(mf_line_reader_next(rd, &s, &n));
        if (!s) break;
        if (blank(s, n)) continue;
        if (max_rows > 0 && b->n >= max_rows) break;
        r.line = mf_line_reader_lineno(rd);
        if (s[0] == '>' || s[0] == '#') {
            st = MF_ERROR(MF_ERR_FORMAT,
                          "%s:%lld: sequence: '%c' line in a plain alignment (one aligned row "
                          "per line, no headers)",
                          name, (long long)r.line, s[0]);
            goto cleanup;
        }
        r.active = 1;
        MF_TRY_GOTO(row_line(&r, s, n, 0, name, r.line));
        MF_TRY_GOTO(row_commit(&r, b, name, "row"));
    }
cleanup:
    row_free(&r);
    return st;
}

/* ---- Stockholm ---- */

typedef struct {
    char *name;
    char *seq; /* raw aligned characters, all blocks joined */
    size_t len, cap;
    int64_t line;       /* first line of the name */
    int64_t last_block; /* block of the latest piece, to catch a name twice in one block */
    int64_t last_line;
} sto_row;

typedef struct {
    sto_row *rows;
    int64_t n, cap;
    int32_t *slots; /* open-addressing hash of row indices, -1 empty */
    size_t nslots;
} sto_table;

static uint64_t hash_bytes(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; ++i) h = (h ^ s[i]) * 1099511628211ull;
    return h;
}

static void sto_free(sto_table *t)
{
    for (int64_t i = 0; i < t->n; ++i) {
        free(t->rows[i].name);
        free(t->rows[i].seq);
    }
    free(t->rows);
    free(t->slots);
    memset(t, 0, sizeof *t);
}

static mf_status sto_rehash(sto_table *t, const char *src)
{
    size_t ns = t->nslots ? t->nslots * 2 : 256;
    int32_t *sl = malloc(ns * sizeof *sl);
    if (!sl) return MF_ERROR(MF_ERR_NOMEM, "%s: out of memory (name table)", src);
    for (size_t i = 0; i < ns; ++i) sl[i] = -1;
    for (int64_t i = 0; i < t->n; ++i) {
        const char *nm = t->rows[i].name;
        size_t h = (size_t)hash_bytes(nm, strlen(nm)) & (ns - 1);
        while (sl[h] >= 0) h = (h + 1) & (ns - 1);
        sl[h] = (int32_t)i;
    }
    free(t->slots);
    t->slots = sl;
    t->nslots = ns;
    return MF_OK;
}

/* Index of `nm` (length n), or -1 with *slot set to where it would go. */
static int64_t sto_find(const sto_table *t, const char *nm, size_t n, size_t *slot)
{
    size_t h = (size_t)hash_bytes(nm, n) & (t->nslots - 1);
    while (t->slots[h] >= 0) {
        const char *o = t->rows[t->slots[h]].name;
        if (strlen(o) == n && memcmp(o, nm, n) == 0) return t->slots[h];
        h = (h + 1) & (t->nslots - 1);
    }
    *slot = h;
    return -1;
}

static mf_status sto_add(sto_table *t, const char *nm, size_t n, int64_t line, const char *src,
                         int64_t *index)
{
    if ((size_t)(t->n + 1) * 2 > t->nslots) MF_TRY(sto_rehash(t, src));
    size_t slot = 0;
    int64_t i = sto_find(t, nm, n, &slot);
    if (i >= 0) {
        *index = i;
        return MF_OK;
    }
    if (t->n == t->cap) {
        int64_t cap = t->cap ? t->cap * 2 : 64;
        sto_row *nr = realloc(t->rows, (size_t)cap * sizeof *nr);
        if (!nr)
            return MF_ERROR(MF_ERR_NOMEM, "%s:%lld: out of memory (%lld sequences)", src,
                            (long long)line, (long long)t->n);
        t->rows = nr;
        t->cap = cap;
    }
    sto_row *r = &t->rows[t->n];
    memset(r, 0, sizeof *r);
    r->name = strndup(nm, n);
    if (!r->name) return MF_ERROR(MF_ERR_NOMEM, "%s:%lld: out of memory", src, (long long)line);
    r->line = line;
    t->slots[slot] = (int32_t)t->n;
    *index = t->n++;
    return MF_OK;
}

/* Splits s into whitespace-separated fields; returns the count (at most max are recorded). */
static int split_fields(const char *s, size_t n, const char **f, size_t *fl, int max)
{
    int k = 0;
    size_t i = 0;
    while (i < n) {
        while (i < n && (s[i] == ' ' || s[i] == '\t')) ++i;
        if (i >= n) break;
        size_t a = i;
        while (i < n && s[i] != ' ' && s[i] != '\t') ++i;
        if (k < max) f[k] = s + a, fl[k] = i - a;
        ++k;
    }
    return k;
}

static mf_status sto_markup(const char *s, size_t n, const char *src, int64_t line)
{
    const char *f[4];
    size_t fl[4];
    int k = split_fields(s, n, f, fl, 4);
    int need = 0;
    const char *form = "";
    if (n >= 4 && memcmp(s, "#=GF", 4) == 0) need = 2, form = "#=GF feature text";
    if (n >= 4 && memcmp(s, "#=GS", 4) == 0) need = 3, form = "#=GS name feature text";
    if (n >= 4 && memcmp(s, "#=GC", 4) == 0) need = 3, form = "#=GC feature annotation";
    if (n >= 4 && memcmp(s, "#=GR", 4) == 0) need = 4, form = "#=GR name feature annotation";
    if (need && (k < need || fl[0] != 4))
        return MF_ERROR(MF_ERR_FORMAT, "%s:%lld: markup: expected '%s', found %d field%s", src,
                        (long long)line, form, k, k == 1 ? "" : "s");
    return MF_OK;
}

static mf_status sto_read(mf_line_reader *rd, int64_t max_rows, sto_table *t)
{
    const char *src = mf_line_reader_name(rd);
    int seen_header = 0, ended = 0;
    int64_t block = 1; /* blocks are separated by blank lines */
    for (;;) {
        const char *s;
        size_t n;
        MF_TRY(mf_line_reader_next(rd, &s, &n));
        if (!s) break;
        int64_t line = mf_line_reader_lineno(rd);
        if (blank(s, n)) {
            ++block;
            continue;
        }
        if (ended)
            return MF_ERROR(MF_ERR_FORMAT,
                            "%s:%lld: alignment: content after the end-of-alignment '//' "
                            "(several alignments in one file are not supported)",
                            src, (long long)line);
        if (!seen_header) {
            if (n < 11 || memcmp(s, "# STOCKHOLM", 11) != 0) {
                unsigned char c = (unsigned char)s[0];
                if (c < 0x20 || c >= 0x7f)
                    return MF_ERROR(MF_ERR_FORMAT,
                                    "%s:%lld: header: binary data (byte 0x%02x) where "
                                    "'# STOCKHOLM 1.0' was expected",
                                    src, (long long)line, c);
                return MF_ERROR(MF_ERR_FORMAT,
                                "%s:%lld: header: expected '# STOCKHOLM 1.0' as the first line",
                                src, (long long)line);
            }
            seen_header = 1;
            continue;
        }
        if (n >= 2 && s[0] == '/' && s[1] == '/' && blank(s + 2, n - 2)) {
            ended = 1;
            continue;
        }
        if (s[0] == '#') {
            MF_TRY(sto_markup(s, n, src, line));
            continue;
        }
        const char *f[3];
        size_t fl[3];
        int k = split_fields(s, n, f, fl, 3);
        if (k != 2)
            return MF_ERROR(MF_ERR_FORMAT,
                            "%s:%lld: sequence: expected 'name aligned-sequence', found %d "
                            "field%s",
                            src, (long long)line, k, k == 1 ? "" : "s");
        for (size_t i = 0; i < fl[1]; ++i) {
            unsigned char c = (unsigned char)f[1][i];
            if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '-' || c == '.'))
                return bad_char(src, line, (size_t)(f[1] - s) + i + 1, c, "sequence");
        }
        size_t slot = 0;
        if (t->nslots && max_rows > 0 && t->n >= max_rows && sto_find(t, f[0], fl[0], &slot) < 0)
            continue; /* truncated as AF2's truncate_stockholm_msa */
        int64_t idx = 0;
        MF_TRY(sto_add(t, f[0], fl[0], line, src, &idx));
        sto_row *r = &t->rows[idx];
        if (r->last_block == block)
            return MF_ERROR(MF_ERR_FORMAT,
                            "%s:%lld: sequence: name '%s' appears twice in one block (also line "
                            "%lld)",
                            src, (long long)line, r->name, (long long)r->last_line);
        r->last_block = block;
        r->last_line = line;
        if (r->len + fl[1] + 1 > r->cap) {
            size_t cap = r->cap ? r->cap : 256;
            while (cap < r->len + fl[1] + 1) cap *= 2;
            char *ns = realloc(r->seq, cap);
            if (!ns)
                return MF_ERROR(MF_ERR_NOMEM, "%s:%lld: out of memory (sequence '%s')", src,
                                (long long)line, r->name);
            r->seq = ns;
            r->cap = cap;
        }
        memcpy(r->seq + r->len, f[1], fl[1]);
        r->len += fl[1];
    }
    if (!seen_header)
        return MF_ERROR(MF_ERR_FORMAT, "%s:1: header: empty file, expected '# STOCKHOLM 1.0'", src);
    if (!ended)
        return MF_ERROR(MF_ERR_FORMAT,
                        "%s:%lld: alignment: no end-of-alignment '//' line (truncated file?)", src,
                        (long long)mf_line_reader_lineno(rd));
    if (t->n == 0)
        return MF_ERROR(MF_ERR_FORMAT, "%s:%lld: alignment: empty MSA (no sequence lines)", src,
                        (long long)mf_line_reader_lineno(rd));
    return MF_OK;
}

static int sto_gap(char c)
{
    return c == '-' || c == '.';
}

/* parse_stockholm: keep the query's non-gap columns; residues elsewhere count as deletions. */
static mf_status sto_convert(const sto_table *t, const char *src, msa_builder *b)
{
    const sto_row *q = &t->rows[0];
    for (int64_t i = 1; i < t->n; ++i)
        if (t->rows[i].len != q->len)
            return MF_ERROR(
                MF_ERR_FORMAT, "%s:%lld: sequence '%s': aligned length %zu, the query '%s' has %zu",
                src, (long long)t->rows[i].line, t->rows[i].name, t->rows[i].len, q->name, q->len);
    int64_t L = 0;
    for (size_t c = 0; c < q->len; ++c) L += !sto_gap(q->seq[c]);
    if (L == 0)
        return MF_ERROR(MF_ERR_FORMAT, "%s:%lld: query row '%s': no residues", src,
                        (long long)q->line, q->name);
    b->length = L;
    uint8_t *ids = malloc((size_t)L);
    int32_t *dels = malloc((size_t)L * sizeof(int32_t));
    mf_status st = MF_OK;
    if (!ids || !dels) {
        st = MF_ERROR(MF_ERR_NOMEM, "%s: out of memory (row of %lld)", src, (long long)L);
        goto cleanup;
    }
    for (int64_t i = 0; i < t->n; ++i) {
        const sto_row *r = &t->rows[i];
        int64_t j = 0;
        int32_t pending = 0;
        for (size_t c = 0; c < q->len; ++c) {
            char x = r->seq[c];
            if (!sto_gap(q->seq[c])) {
                if (sto_gap(x))
                    ids[j] = GAP;
                else
                    ids[j] = (uint8_t)mf_hhblits_aa_to_id(x >= 'a' ? (char)(x - 'a' + 'A') : x);
                dels[j++] = pending;
                pending = 0;
            } else if (!sto_gap(x)) {
                ++pending;
            }
        }
        char *desc = strdup(r->name);
        if (!desc) {
            st = MF_ERROR(MF_ERR_NOMEM, "%s: out of memory", src);
            goto cleanup;
        }
        MF_TRY_GOTO(builder_add(b, ids, dels, desc, r->line, src));
    }
cleanup:
    free(ids);
    free(dels);
    return st;
}

/* ---- format selection and entry points ---- */

static int ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && strncasecmp(s + n - k, suffix, k) == 0;
}

mf_msa_format mf_msa_format_from_path(const char *path)
{
    if (!path) return MF_MSA_AUTO;
    size_t n = strlen(path);
    if (ends_with(path, n, ".gz")) n -= 3;
    if (ends_with(path, n, ".a3m")) return MF_MSA_A3M;
    static const char *sto[] = {".sto", ".sth", ".stk", ".stockholm"};
    for (int i = 0; i < 4; ++i)
        if (ends_with(path, n, sto[i])) return MF_MSA_STOCKHOLM;
    if (ends_with(path, n, ".aln") || ends_with(path, n, ".psicov")) return MF_MSA_PLAIN;
    static const char *afa[] = {".fasta", ".fa", ".afa", ".fas", ".mfa"};
    for (int i = 0; i < 5; ++i)
        if (ends_with(path, n, afa[i])) return MF_MSA_ALIGNED_FASTA;
    return MF_MSA_AUTO;
}

const char *mf_msa_format_name(mf_msa_format format)
{
    switch (format) {
    case MF_MSA_AUTO:
        return "auto";
    case MF_MSA_A3M:
        return "a3m";
    case MF_MSA_STOCKHOLM:
        return "Stockholm";
    case MF_MSA_ALIGNED_FASTA:
        return "aligned FASTA";
    case MF_MSA_PLAIN:
        return "plain alignment";
    }
    return "unknown";
}

static mf_msa_format format_from_text(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n')) ++i;
    if (n - i >= 11 && memcmp(s + i, "# STOCKHOLM", 11) == 0) return MF_MSA_STOCKHOLM;
    if (i < n && (s[i] == '>' || s[i] == '#')) return MF_MSA_A3M;
    return MF_MSA_PLAIN;
}

static mf_status parse_reader(mf_line_reader *rd, mf_msa_format format, int64_t max_rows,
                              mf_msa *out)
{
    const char *src = mf_line_reader_name(rd);
    msa_builder b = {0};
    b.length = -1;
    mf_status st = MF_OK;
    if (format == MF_MSA_STOCKHOLM) {
        sto_table t = {0};
        st = sto_read(rd, max_rows, &t);
        if (st == MF_OK) st = sto_convert(&t, src, &b);
        sto_free(&t);
    } else if (format == MF_MSA_PLAIN) {
        st = parse_plain(rd, max_rows, &b);
    } else {
        st = parse_records(rd, format == MF_MSA_A3M, max_rows, &b);
    }
    if (st == MF_OK && b.n == 0)
        st = MF_ERROR(MF_ERR_FORMAT, "%s:%lld: alignment: empty MSA (no rows)", src,
                      (long long)mf_line_reader_lineno(rd) + (mf_line_reader_lineno(rd) == 0));
    if (st == MF_OK) st = builder_finish(&b, src, out);
    builder_free(&b);
    return st;
}

/* Reads the start of a file to tell the format from its content. */
static mf_status sniff_file(const char *path, mf_msa_format *format)
{
    gzFile gz = gzopen(path, "rb");
    if (!gz) return MF_ERROR(MF_ERR_IO, "%s: cannot open", path);
    char buf[4096];
    int n = gzread(gz, buf, sizeof buf);
    gzclose(gz);
    if (n < 0) return MF_ERROR(MF_ERR_IO, "%s:1: read error", path);
    *format = format_from_text(buf, (size_t)n);
    return MF_OK;
}

mf_status mf_msa_read(const char *path, mf_msa_format format, int64_t max_rows, mf_msa *out)
{
    MF_REQUIRE(out && path, "mf_msa_read: path and out must be non-NULL");
    memset(out, 0, sizeof *out);
    if (format == MF_MSA_AUTO) format = mf_msa_format_from_path(path);
    if (format == MF_MSA_AUTO) MF_TRY(sniff_file(path, &format));
    mf_line_reader *rd = NULL;
    MF_TRY(mf_line_reader_open(&rd, path));
    mf_status st = parse_reader(rd, format, max_rows, out);
    mf_line_reader_close(rd);
    return st;
}

mf_status mf_msa_parse(const char *text, size_t len, const char *name, mf_msa_format format,
                       int64_t max_rows, mf_msa *out)
{
    MF_REQUIRE(out, "mf_msa_parse: out must be non-NULL");
    memset(out, 0, sizeof *out);
    if (format == MF_MSA_AUTO) format = format_from_text(text ? text : "", len);
    mf_line_reader *rd = NULL;
    MF_TRY(mf_line_reader_open_buffer(&rd, text, len, name));
    mf_status st = parse_reader(rd, format, max_rows, out);
    mf_line_reader_close(rd);
    return st;
}

void mf_msa_free(mf_msa *msa)
{
    if (!msa) return;
    for (int64_t i = 0; i < msa->num_rows; ++i)
        if (msa->descriptions) free(msa->descriptions[i]);
    free(msa->descriptions);
    free(msa->msa);
    free(msa->deletion_matrix);
    free(msa->lines);
    free(msa->source);
    memset(msa, 0, sizeof *msa);
}

mf_status mf_msa_check_query(const mf_msa *msa, const char *query)
{
    MF_REQUIRE(msa && query, "mf_msa_check_query: msa and query must be non-NULL");
    const char *src = msa->source ? msa->source : "<msa>";
    if (msa->num_rows < 1) return MF_ERROR(MF_ERR_FORMAT, "%s: query row: empty MSA", src);
    long long line = msa->lines ? (long long)msa->lines[0] : 0;
    int64_t n = (int64_t)strlen(query);
    if (n != msa->length)
        return MF_ERROR(MF_ERR_FORMAT,
                        "%s:%lld: query row: %lld aligned columns, the query sequence has %lld "
                        "residues",
                        src, line, (long long)msa->length, (long long)n);
    for (int64_t i = 0; i < n; ++i) {
        char c = query[i];
        char up = (char)(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
        int id = mf_hhblits_aa_to_id(up);
        if (id < 0 || id == MF_MSA_GAP)
            return MF_ERROR(MF_ERR_INVALID,
                            "query sequence: illegal character '%c' at position %lld", c,
                            (long long)i + 1);
        if (msa->msa[i] != id)
            return MF_ERROR(MF_ERR_FORMAT,
                            "%s:%lld: query row: position %lld is '%c', the query sequence has "
                            "'%c'",
                            src, line, (long long)i + 1, mf_hhblits_id_to_aa(msa->msa[i]), c);
    }
    return MF_OK;
}

mf_status mf_msa_merge_dedup(const mf_msa *const *msas, int num_msas, mf_msa *out)
{
    MF_REQUIRE(msas && out && num_msas > 0, "mf_msa_merge_dedup: need at least one MSA");
    memset(out, 0, sizeof *out);
    int64_t L = msas[0]->length, total = 0;
    for (int k = 0; k < num_msas; ++k) {
        const mf_msa *m = msas[k];
        const char *src = m->source ? m->source : "<msa>";
        if (m->num_rows < 1)
            return MF_ERROR(MF_ERR_FORMAT, "%s: MSA %d must contain at least one sequence", src, k);
        if (m->length != L)
            return MF_ERROR(MF_ERR_FORMAT, "%s: MSA %d has %lld columns, MSA 0 (%s) has %lld", src,
                            k, (long long)m->length, msas[0]->source ? msas[0]->source : "<msa>",
                            (long long)L);
        total += m->num_rows;
    }
    size_t nslots = 256;
    while (nslots < (size_t)total * 2) nslots *= 2;
    int64_t *slots = malloc(nslots * sizeof *slots);
    if (!slots)
        return MF_ERROR(MF_ERR_NOMEM, "merging %lld MSA rows: out of memory", (long long)total);
    for (size_t i = 0; i < nslots; ++i) slots[i] = -1;
    msa_builder b = {0};
    b.length = L;
    mf_status st = MF_OK;
    for (int k = 0; k < num_msas; ++k) {
        const mf_msa *m = msas[k];
        for (int64_t i = 0; i < m->num_rows; ++i) {
            const uint8_t *row = m->msa + (size_t)i * (size_t)L;
            size_t h = (size_t)hash_bytes(row, (size_t)L) & (nslots - 1);
            int dup = 0;
            while (slots[h] >= 0) {
                if (memcmp(b.msa + (size_t)slots[h] * (size_t)L, row, (size_t)L) == 0) {
                    dup = 1;
                    break;
                }
                h = (h + 1) & (nslots - 1);
            }
            if (dup) continue;
            char *desc = strdup(m->descriptions && m->descriptions[i] ? m->descriptions[i] : "");
            if (!desc) {
                st = MF_ERROR(MF_ERR_NOMEM, "merging MSAs: out of memory");
                goto cleanup;
            }
            MF_TRY_GOTO(builder_add(&b, row, m->deletion_matrix + (size_t)i * (size_t)L, desc,
                                    m->lines ? m->lines[i] : 0, m->source ? m->source : "<msa>"));
            slots[h] = b.n - 1;
        }
    }
    st = builder_finish(&b, msas[0]->source ? msas[0]->source : "<merged msa>", out);
cleanup:
    builder_free(&b);
    free(slots);
    return st;
}
