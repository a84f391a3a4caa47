/* FASTA sequences (plain or gzip-compressed) and the line reader the sequence and alignment
 * parsers share. Strict: malformed input is an error naming file, line and field, and nothing is
 * half returned (on failure the output is left empty). */
#ifndef MF_DATA_FASTA_H
#define MF_DATA_FASTA_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

/* ---- line reader ----
 * Reads a file through zlib (gzopen reads plain files unchanged) in chunks, so memory stays at the
 * longest line, or walks a memory buffer. Lines come without their '\n' and a trailing '\r'. */
typedef struct mf_line_reader mf_line_reader;

mf_status mf_line_reader_open(mf_line_reader **reader, const char *path);
/* `name` is what error messages call the buffer; the text is not copied and must outlive the
 * reader. */
mf_status mf_line_reader_open_buffer(mf_line_reader **reader, const char *text, size_t len,
                                     const char *name);
/* Next line: *line points into the reader's buffer (valid until the next call), *len excludes the
 * terminator and may count NUL bytes. At end of input *line is NULL. */
mf_status mf_line_reader_next(mf_line_reader *reader, const char **line, size_t *len);
/* 1-based number of the line last returned (0 before the first). */
int64_t mf_line_reader_lineno(const mf_line_reader *reader);
/* The path or buffer name. */
const char *mf_line_reader_name(const mf_line_reader *reader);
void mf_line_reader_close(mf_line_reader *reader);

/* ---- FASTA ---- */

typedef struct {
    char *description; /* header text after '>', surrounding whitespace removed (may be "") */
    char *sequence;    /* upper-case one-letter codes, NUL-terminated, no stop '*' */
    int64_t length;    /* residues in sequence */
    int64_t line;      /* line of the header in the file (1-based) */
} mf_fasta_record;

typedef struct {
    mf_fasta_record *records; /* [num_records] */
    int64_t num_records;
} mf_fasta;

/* Flags for mf_fasta_read / mf_fasta_parse. */
enum {
    /* Letters other than the 20 amino acids and X (B, Z, J, U, O) become X, as AF2's
     * sequence_to_onehot(map_unknown_to_x=True) does. Without it they are an error. */
    MF_FASTA_UNKNOWN_TO_X = 1u << 0,
};

/* Rules: records start at '>' lines; sequence lines are joined; blank lines and whitespace inside
 * sequence lines are ignored; lower-case letters are read as upper case; one '*' (stop) may end a
 * record's sequence. Errors (MF_ERR_FORMAT, "file:line: field: ..."): sequence text before the
 * first header, a record without residues, a character outside the alphabet (with its column),
 * control or binary bytes, no records at all. MF_ERR_IO when the file cannot be read (including a
 * truncated or corrupt gzip stream). */
mf_status mf_fasta_read(const char *path, unsigned flags, mf_fasta *out);
mf_status mf_fasta_parse(const char *text, size_t len, const char *name, unsigned flags,
                         mf_fasta *out);
void mf_fasta_free(mf_fasta *fasta);

#endif
