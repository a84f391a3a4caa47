/* FASTA parsing and the chunked line reader shared with the alignment parsers. */
#include "data/fasta.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "protein/residue_constants.h"

#define MF_READER_CHUNK ((size_t)1 << 16)

struct mf_line_reader {
    gzFile gz;  /* NULL for a memory buffer */
    char *name; /* path or buffer name */
    char *buf;  /* owned for files; the caller's text for buffers */
    size_t cap; /* allocated bytes of buf (files) */
    size_t len; /* valid bytes in buf */
    size_t pos; /* start of the next line */
    int eof;    /* no more input beyond buf[len] */
    int64_t lineno;
};

static mf_status reader_new(mf_line_reader **reader, const char *name)
{
    *reader = NULL;
    mf_line_reader *r = calloc(1, sizeof *r);
    if (!r) return MF_ERROR(MF_ERR_NOMEM, "%s: line reader: out of memory", name);
    r->name = strdup(name);
    if (!r->name) {
        free(r);
        return MF_ERROR(MF_ERR_NOMEM, "%s: line reader: out of memory", name);
    }
    *reader = r;
    return MF_OK;
}

mf_status mf_line_reader_open(mf_line_reader **reader, const char *path)
{
    MF_REQUIRE(reader && path, "mf_line_reader_open: reader and path must be non-NULL");
    MF_TRY(reader_new(reader, path));
    mf_line_reader *r = *reader;
    errno = 0;
    r->gz = gzopen(path, "rb");
    if (!r->gz) {
        int e = errno;
        mf_line_reader_close(r);
        *reader = NULL;
        return MF_ERROR(MF_ERR_IO, "%s: cannot open: %s", path, e ? strerror(e) : "zlib error");
    }
    gzbuffer(r->gz, 1u << 17);
    r->cap = MF_READER_CHUNK;
    r->buf = malloc(r->cap);
    if (!r->buf) {
        mf_line_reader_close(r);
        *reader = NULL;
        return MF_ERROR(MF_ERR_NOMEM, "%s: line reader: out of memory (%zu bytes)", path,
                        (size_t)MF_READER_CHUNK);
    }
    return MF_OK;
}

mf_status mf_line_reader_open_buffer(mf_line_reader **reader, const char *text, size_t len,
                                     const char *name)
{
    MF_REQUIRE(reader && (text || len == 0), "mf_line_reader_open_buffer: NULL argument");
    MF_TRY(reader_new(reader, name ? name : "<buffer>"));
    (*reader)->buf = (char *)text; /* never written: buffer mode only reads */
    (*reader)->len = len;
    (*reader)->eof = 1;
    return MF_OK;
}

/* Moves the unread tail to the front, grows the buffer when one line fills it, reads more. */
static mf_status reader_fill(mf_line_reader *r)
{
    if (r->pos > 0) {
        memmove(r->buf, r->buf + r->pos, r->len - r->pos);
        r->len -= r->pos;
        r->pos = 0;
    }
    if (r->len == r->cap) {
        size_t cap = r->cap * 2;
        char *nb = realloc(r->buf, cap);
        if (!nb)
            return MF_ERROR(MF_ERR_NOMEM, "%s:%lld: line longer than %zu bytes: out of memory",
                            r->name, (long long)r->lineno + 1, r->cap);
        r->buf = nb;
        r->cap = cap;
    }
    size_t want = r->cap - r->len;
    if (want > (size_t)1 << 30) want = (size_t)1 << 30;
    int n = gzread(r->gz, r->buf + r->len, (unsigned)want);
    if (n < 0) {
        int errnum = 0;
        const char *msg = gzerror(r->gz, &errnum);
        return MF_ERROR(MF_ERR_IO, "%s:%lld: read error: %s", r->name, (long long)r->lineno + 1,
                        errnum == Z_ERRNO ? strerror(errno) : msg);
    }
    if (n == 0) {
        /* zlib reports a truncated gzip member only through gzerror at end of input */
        int errnum = 0;
        const char *msg = gzerror(r->gz, &errnum);
        if (errnum != Z_OK)
            return MF_ERROR(MF_ERR_IO, "%s:%lld: read error: %s", r->name, (long long)r->lineno + 1,
                            msg);
        r->eof = 1;
    }
    r->len += (size_t)n;
    return MF_OK;
}

mf_status mf_line_reader_next(mf_line_reader *r, const char **line, size_t *len)
{
    *line = NULL;
    *len = 0;
    for (;;) {
        char *start = r->buf + r->pos;
        size_t avail = r->len - r->pos;
        char *nl = avail ? memchr(start, '\n', avail) : NULL;
        if (nl || (r->eof && avail > 0)) {
            size_t l = nl ? (size_t)(nl - start) : avail;
            r->pos += nl ? l + 1 : l;
            if (l > 0 && start[l - 1] == '\r') --l;
            ++r->lineno;
            *line = start;
            *len = l;
            return MF_OK;
        }
        if (r->eof) return MF_OK;
        MF_TRY(reader_fill(r));
    }
}

int64_t mf_line_reader_lineno(const mf_line_reader *reader)
{
    return reader->lineno;
}

const char *mf_line_reader_name(const mf_line_reader *reader)
{
    return reader->name;
}

void mf_line_reader_close(mf_line_reader *reader)
{
    if (!reader) return;
    if (reader->gz) {
        gzclose(reader->gz);
        free(reader->buf);
    }
    free(reader->name);
    free(reader);
}

/* ---- FASTA ---- */

typedef struct {
    mf_fasta_record *records;
    int64_t n, cap;
    char *seq; /* sequence being collected */
    size_t seq_len, seq_cap;
    int stopped; /* a '*' ended the current record */
} fasta_builder;

static int is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; ++i)
        if (s[i] != ' ' && s[i] != '\t') return 0;
    return 1;
}

static mf_status seq_push(fasta_builder *b, char c, const char *name, int64_t lineno)
{
    if (b->seq_len + 1 >= b->seq_cap) {
        size_t cap = b->seq_cap ? b->seq_cap * 2 : 256;
        char *ns = realloc(b->seq, cap);
        if (!ns)
            return MF_ERROR(MF_ERR_NOMEM, "%s:%lld: sequence: out of memory (%zu residues)", name,
                            (long long)lineno, b->seq_len);
        b->seq = ns;
        b->seq_cap = cap;
    }
    b->seq[b->seq_len++] = c;
    return MF_OK;
}

/* Closes the current record: a record must have residues. */
static mf_status finish_record(fasta_builder *b, const char *name)
{
    if (b->n == 0) return MF_OK;
    mf_fasta_record *rec = &b->records[b->n - 1];
    if (b->seq_len == 0)
        return MF_ERROR(MF_ERR_FORMAT, "%s:%lld: sequence: record '%s' has no residues", name,
                        (long long)rec->line, rec->description);
    char *s = realloc(b->seq, b->seq_len + 1);
    if (!s) s = b->seq;
    s[b->seq_len] = '\0';
    rec->sequence = s;
    rec->length = (int64_t)b->seq_len;
    b->seq = NULL;
    b->seq_len = b->seq_cap = 0;
    b->stopped = 0;
    return MF_OK;
}

static mf_status start_record(fasta_builder *b, const char *line, size_t len, const char *name,
                              int64_t lineno)
{
    /* header text: everything after '>', control bytes rejected (UTF-8 allowed) */
    for (size_t i = 1; i < len; ++i) {
        unsigned char c = (unsigned char)line[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return MF_ERROR(MF_ERR_FORMAT,
                            "%s:%lld: header: control or binary byte 0x%02x at column %zu", name,
                            (long long)lineno, c, i + 1);
    }
    size_t s = 1, e = len;
    while (s < e && (line[s] == ' ' || line[s] == '\t')) ++s;
    while (e > s && (line[e - 1] == ' ' || line[e - 1] == '\t')) --e;
    if (b->n == b->cap) {
        int64_t cap = b->cap ? b->cap * 2 : 16;
        mf_fasta_record *nr = realloc(b->records, (size_t)cap * sizeof *nr);
        if (!nr)
            return MF_ERROR(MF_ERR_NOMEM, "%s:%lld: header: out of memory (%lld records)", name,
                            (long long)lineno, (long long)b->n);
        b->records = nr;
        b->cap = cap;
    }
    mf_fasta_record *rec = &b->records[b->n];
    memset(rec, 0, sizeof *rec);
    rec->description = strndup(line + s, e - s);
    if (!rec->description)
        return MF_ERROR(MF_ERR_NOMEM, "%s:%lld: header: out of memory", name, (long long)lineno);
    rec->line = lineno;
    ++b->n;
    return MF_OK;
}

static mf_status sequence_line(fasta_builder *b, const char *line, size_t len, unsigned flags,
                               const char *name, int64_t lineno)
{
    for (size_t i = 0; i < len; ++i) {
        unsigned char c = (unsigned char)line[i];
        if (c == ' ' || c == '\t') continue;
        if (b->stopped)
            return MF_ERROR(MF_ERR_FORMAT,
                            "%s:%lld: sequence: '%c' at column %zu after the stop '*' of record "
                            "'%s'",
                            name, (long long)lineno, c, i + 1, b->records[b->n - 1].description);
        if (c == '*') {
            b->stopped = 1;
            continue;
        }
        if (c < 0x20 || c >= 0x7f)
            return MF_ERROR(MF_ERR_FORMAT,
                            "%s:%lld: sequence: control or binary byte 0x%02x at column %zu", name,
                            (long long)lineno, c, i + 1);
        int r = mf_restype_from_one_letter((char)c);
        char up = (char)(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
        if (r < 0)
            return MF_ERROR(MF_ERR_FORMAT,
                            "%s:%lld: sequence: illegal character '%c' at column %zu (record '%s')",
                            name, (long long)lineno, c, i + 1, b->records[b->n - 1].description);
        if (r == MF_RESTYPE_UNK && up != 'X') {
            if (!(flags & MF_FASTA_UNKNOWN_TO_X))
                return MF_ERROR(MF_ERR_FORMAT,
                                "%s:%lld: sequence: unknown residue letter '%c' at column %zu "
                                "(record '%s'; MF_FASTA_UNKNOWN_TO_X reads it as X)",
                                name, (long long)lineno, c, i + 1,
                                b->records[b->n - 1].description);
            up = 'X';
        }
        MF_TRY(seq_push(b, up, name, lineno));
    }
    return MF_OK;
}

static void builder_free(fasta_builder *b)
{
    for (int64_t i = 0; i < b->n; ++i) {
        free(b->records[i].description);
        free(b->records[i].sequence);
    }
    free(b->records);
    free(b->seq);
    memset(b, 0, sizeof *b);
}

static mf_status parse_lines(mf_line_reader *rd, unsigned flags, mf_fasta *out)
{
    fasta_builder b = {0};
    const char *name = mf_line_reader_name(rd);
    mf_status st = MF_OK;
    for (;;) {
        const char *line;
        size_t len;
        MF_TRY_GOTO(mf_line_reader_next(rd, &line, &len));
        if (!line) break;
        int64_t lineno = mf_line_reader_lineno(rd);
        if (len > 0 && line[0] == '>') {
            MF_TRY_GOTO(finish_record(&b, name));
            MF_TRY_GOTO(start_record(&b, line, len, name, lineno));
        } else if (is_blank(line, len)) {
            continue;
        } else if (b.n == 0) {
            unsigned char c = (unsigned char)line[0];
            if (c < 0x20 || c >= 0x7f)
                st = MF_ERROR(MF_ERR_FORMAT,
                              "%s:%lld: header: binary data (byte 0x%02x) where a '>' header "
                              "was expected; not a FASTA file",
                              name, (long long)lineno, c);
            else
                st = MF_ERROR(MF_ERR_FORMAT,
                              "%s:%lld: header: sequence text before the first '>' header", name,
                              (long long)lineno);
            goto cleanup;
        } else {
            MF_TRY_GOTO(sequence_line(&b, line, len, flags, name, lineno));
        }
    }
    MF_TRY_GOTO(finish_record(&b, name));
    if (b.n == 0) {
        st = MF_ERROR(MF_ERR_FORMAT, "%s:%lld: header: no FASTA records (empty input)", name,
                      (long long)mf_line_reader_lineno(rd) + (mf_line_reader_lineno(rd) == 0));
        goto cleanup;
    }
    out->records = b.records;
    out->num_records = b.n;
    free(b.seq);
    return MF_OK;
cleanup:
    builder_free(&b);
    return st;
}

mf_status mf_fasta_read(const char *path, unsigned flags, mf_fasta *out)
{
    MF_REQUIRE(out, "mf_fasta_read: out must be non-NULL");
    memset(out, 0, sizeof *out);
    mf_line_reader *rd = NULL;
    MF_TRY(mf_line_reader_open(&rd, path));
    mf_status st = parse_lines(rd, flags, out);
    mf_line_reader_close(rd);
    return st;
}

mf_status mf_fasta_parse(const char *text, size_t len, const char *name, unsigned flags,
                         mf_fasta *out)
{
    MF_REQUIRE(out, "mf_fasta_parse: out must be non-NULL");
    memset(out, 0, sizeof *out);
    mf_line_reader *rd = NULL;
    MF_TRY(mf_line_reader_open_buffer(&rd, text, len, name));
    mf_status st = parse_lines(rd, flags, out);
    mf_line_reader_close(rd);
    return st;
}

void mf_fasta_free(mf_fasta *fasta)
{
    if (!fasta) return;
    for (int64_t i = 0; i < fasta->num_records; ++i) {
        free(fasta->records[i].description);
        free(fasta->records[i].sequence);
    }
    free(fasta->records);
    fasta->records = NULL;
    fasta->num_records = 0;
}
