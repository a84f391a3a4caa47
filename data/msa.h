/* Multiple sequence alignments: a3m, Stockholm, aligned FASTA and plain (PSICOV-style, one row per
 * line) alignments, read into AF2's raw MSA features: residues as HHblits ids (0..19 amino acids in
 * the order ACDEFGHIKLMNPQRSTVWY, 20 X, 21 gap; see residue_constants.h) and per-position deletion
 * counts. Row 0 is the query. Strict: errors name file, line and field; on failure the output is
 * left empty. */
#ifndef MF_DATA_MSA_H
#define MF_DATA_MSA_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef enum {
    MF_MSA_AUTO = 0,      /* by extension (.a3m, .sto/.sth/.stk, .aln/.psicov, .fasta/.fa/.afa),
                           * else by content: "# STOCKHOLM" -> Stockholm, '>' -> a3m, else plain */
    MF_MSA_A3M,           /* upper case and '-' are aligned columns, lower case are insertions */
    MF_MSA_STOCKHOLM,     /* query-anchored: only the query's non-gap columns are kept */
    MF_MSA_ALIGNED_FASTA, /* '>' records, every character a column */
    MF_MSA_PLAIN,         /* no headers, one aligned row per line */
} mf_msa_format;

typedef struct {
    int64_t num_rows;         /* Nseq */
    int64_t length;           /* Nres: aligned columns */
    uint8_t *msa;             /* [num_rows, length] HHblits ids 0..21 */
    int32_t *deletion_matrix; /* [num_rows, length] residues deleted before each position */
    char **descriptions;      /* [num_rows] header text ("" for plain alignments) */
    int64_t *lines;           /* [num_rows] line where each row starts in the source */
    char *source;             /* file path or buffer name, for messages */
} mf_msa;

/* Formats in detail (AF2 parsers.parse_a3m / parse_stockholm semantics):
 * a3m: FASTA records, sequence lines joined, whitespace ignored, '#' lines before the first record
 *   skipped. A lower-case letter is an insertion: removed from the row and counted into the
 *   deletion count of the next aligned position (insertions after the last aligned position are
 *   dropped). '.' is removed. Every row must have the query's aligned length.
 * Stockholm: "# STOCKHOLM" header; "name sequence" lines, a name's pieces in later blocks joined;
 *   #=GF/#=GS/#=GC/#=GR markup checked for its fields and skipped; input ends at "//". '-' and
 *   '.' are gaps. Columns where the query (first name) has a gap are removed; a residue of another
 *   row in such a column counts as a deletion before the next kept column. Residues are read
 *   case-insensitively. Names are the descriptions.
 * aligned FASTA / plain: every character is a column ('-' and '.' gaps, letters either case), all
 *   rows the same length, deletions all 0.
 * Residue letters map with AF2's HHBLITS_AA_TO_ID (B->D, Z->E, U->C, J/O->X). Anything else is an
 * error naming the line and column. `max_rows` > 0 keeps only the first max_rows rows (for
 * Stockholm, the first max_rows names, as AF2's truncate_stockholm_msa); <= 0 keeps all. */
mf_status mf_msa_read(const char *path, mf_msa_format format, int64_t max_rows, mf_msa *out);
mf_status mf_msa_parse(const char *text, size_t len, const char *name, mf_msa_format format,
                       int64_t max_rows, mf_msa *out);
void mf_msa_free(mf_msa *msa);

/* The format MF_MSA_AUTO picks from a path's extension; MF_MSA_AUTO when the extension says
 * nothing (then the content decides). */
mf_msa_format mf_msa_format_from_path(const char *path);
const char *mf_msa_format_name(mf_msa_format format);

/* Checks that row 0 is `query` (one-letter codes, compared through the HHblits mapping, so 'B'
 * matches 'D' as AF2's features would). MF_ERR_FORMAT naming the source, the query row's line and
 * the first differing position otherwise. */
mf_status mf_msa_check_query(const mf_msa *msa, const char *query);

/* AF2 make_msa_features merging: rows of msas[0], msas[1], ... in order, each kept only if its
 * aligned residues were not seen before in any earlier row (deletions are not compared), with its
 * deletions and description. All MSAs must have the same length and at least one row. Rows are
 * compared as HHblits ids, so letters sharing an id (B/D, Z/E, U/C, J/O/X) count as equal, where
 * AF2 compares the letters. */
mf_status mf_msa_merge_dedup(const mf_msa *const *msas, int num_msas, mf_msa *out);

#endif
