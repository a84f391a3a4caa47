/* HHsearch / HHblits result files (.hhr, plain or gzip-compressed): the header, the hit table and
 * the pairwise alignment blocks, read into the template hits AlphaFold 2 featurizes
 * (parsers.parse_hhr semantics: hit name, aligned columns, Sum_probs, the query and template
 * residues of the alignment and their 0-based positions).
 *
 * Layout and rules (strict: malformed input is MF_ERR_FORMAT with "file:line: field: what", and
 * on failure the output is left empty):
 *  - header: "Key value" lines up to the first blank line; Query and Match_columns are required
 *    (Match_columns a positive integer), other keys (No_of_seqs, Neff, Searched_HMMs, Date,
 *    Command, ...) are kept as text only where named below.
 *  - hit table: the " No Hit  Prob E-value ..." line, then one row per hit up to a blank line or
 *    the end of the file. A row is read from the right (the name and description field is
 *    truncated text that may hold anything): Prob, E-value, P-value, Score, SS, Cols, query range
 *    "a-b", template range "a-b" and "(length)" (which may touch the range: "820-1030(1031)").
 *    A file that ends before the table line is truncated output and an error; a table without
 *    rows and without alignments is a search with no hits (0 hits, not an error).
 *  - alignment blocks: "No N", ">name description", the "Probab=... E-value=... Score=...
 *    Aligned_cols=... Identities=..% Similarity=... Sum_probs=..." line (Template_Neff and other
 *    well-formed key=value fields optional), then wrapped alignment lines. "Q name start seq end
 *    (length)" and "T ..." lines carry the query and the template; lines of the annotation
 *    tracks (ss_pred, ss_dssp, ss_conf, sa_dssp, Consensus), the match line and Confidence are
 *    skipped. Sequences are A-Z and '-'. Each wrapped piece must count end - start + 1 residues,
 *    continue where the previous piece ended and have the same length for Q and T; the query
 *    length "(L)" must be Match_columns and residues must lie within 1..L; Aligned_cols must
 *    count the columns that pair a query and a template residue.
 *  - table and blocks agree: every block has the table row of its number, with the same query
 *    range and aligned columns and a name that starts the same way (the table truncates it).
 *    The template columns are not compared: the table gives the template HMM's numbering and
 *    length, the T line the template sequence's, and they can differ (allx.hhr: 1dsq_A has 21
 *    match states and 26 residues). Rows without a block are allowed (hhsearch -b/-B). "Done!"
 *    may end the file. */
#ifndef MF_DATA_HHR_H
#define MF_DATA_HHR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct {
    int32_t index;          /* "No N" */
    char *name;             /* first word of the '>' line, e.g. "1HF9_B" */
    char *description;      /* the whole '>' line after '>' */
    double probability;     /* Probab (percent) */
    double e_value;         /* E-value */
    double score;           /* Score */
    int32_t aligned_cols;   /* Aligned_cols */
    double identities;      /* Identities (percent) */
    double similarity;      /* Similarity */
    double sum_probs;       /* Sum_probs */
    double template_neff;   /* Template_Neff, 0 when absent */
    int64_t length;         /* alignment columns */
    char *query;            /* [length + 1] aligned query residues and '-' */
    char *hit_sequence;     /* [length + 1] aligned template residues and '-' */
    int32_t *indices_query; /* [length] 0-based query position of each column, -1 at a gap */
    int32_t *indices_hit;   /* [length] 0-based template position of each column, -1 at a gap */
    int64_t query_start, query_end; /* 1-based, inclusive, as printed */
    int64_t hit_start, hit_end;
    int64_t hit_length; /* template length "(L)" */
    int64_t line;       /* line of "No N" */
} mf_hhr_hit;

typedef struct {
    int32_t index;
    char *name; /* first word of the (truncated) name field */
    double probability, e_value, p_value, score, ss;
    int32_t cols;
    int64_t query_start, query_end, hit_start, hit_end, hit_length;
    int64_t line;
} mf_hhr_table_row;

typedef struct {
    char *query_name;      /* header "Query" value */
    int64_t match_columns; /* header "Match_columns": the query length */
    int64_t num_rows;
    mf_hhr_table_row *rows; /* [num_rows] */
    int64_t num_hits;
    mf_hhr_hit *hits; /* [num_hits] in file order */
    char *source;     /* path or buffer name */
} mf_hhr;

mf_status mf_hhr_read(const char *path, mf_hhr *out);
mf_status mf_hhr_parse(const char *text, size_t len, const char *name, mf_hhr *out);
void mf_hhr_free(mf_hhr *hhr);

/* AlphaFold 2's query-to-template mapping of one hit (templates.py
 * _build_query_to_hit_index_mapping): mapping[i] for each residue i of `query_sequence` is the
 * 0-based index, among the hit's aligned template residues (gaps removed), of the template
 * residue aligned to it, or -1. The hit's query residues are located in query_sequence at the
 * hit's own numbering when they match there (so repeats map where hhsearch put them), else at
 * their first occurrence (AF2's str.find, for hits computed on a related query).
 * *found is false (mapping all -1) when the hit's query residues are not in query_sequence or the
 * hit aligns no residue pair. mapping has strlen(query_sequence) entries. */
mf_status mf_hhr_query_to_hit_mapping(const mf_hhr_hit *hit, const char *query_sequence,
                                      int32_t *mapping, bool *found);

/* The hit's template residues with gaps removed (malloc'd, NUL-terminated). */
char *mf_hhr_hit_template_sequence(const mf_hhr_hit *hit);

#endif
