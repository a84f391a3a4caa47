/* Featurization: structure files (mmCIF/PDB) + MSAs (a3m/Stockholm, or jackhmmer) + template hits
 * (.hhr with template mmCIFs) -> AlphaFold 2 raw features, one HDF5 group per protein chain.
 *
 * Feature file, schema 1 (format "memfold-features"):
 *   root attributes: format = "memfold-features", schema_version = 1 (int), num_chains (int),
 *     created_by, aatype_encoding, msa_encoding (the two alphabets in words).
 *   group /<entry>_<chain> per chain (entry = file name without ".gz" and the format extension;
 *   chain = author chain id, "A" for a blank PDB chain id). Attributes: sequence (one-letter
 *   codes, X for unknown), release_date ("YYYY-MM-DD" or ""), method, entry_id, chain_id,
 *   source_file, msa_sources ("; "-joined paths, "jackhmmer:<db>", or "single-sequence"),
 *   num_res, num_alignments, num_templates (int; -1 when no template hits were given).
 *   Datasets (N residues, S MSA rows, T templates):
 *     aatype              int32 [N]        AF2 restype order ARNDCQEGHILKMFPSTWYV = 0..19, X = 20
 *     residue_index       int32 [N]        0..N-1 (AF2 make_sequence_features)
 *     author_residue_index int32 [N]       the file's residue numbers (insertion codes dropped)
 *     msa                 int8  [S, N]     HHblits ids A C D E F G H I K L M N P Q R S T V W Y =
 *                                          0..19, X 20, gap 21 (AF2's raw msa feature); row 0 is
 *                                          the chain's sequence
 *     deletion_matrix     f32   [S, N]     residues deleted before each column (AF2 feeds the
 *                                          model float deletion counts; exact for counts < 2^24)
 *     all_atom_positions  f32   [N, 37, 3] Angstrom, 0 where masked
 *     all_atom_mask       f32   [N, 37]
 *     resolution          f32   scalar     Angstrom, 0 when the file gives none (NMR, CASP)
 *   and, when template hits were given (T may be 0):
 *     template_aatype             int32 [T, N]  HHblits ids of the aligned template residues,
 *                                               21 (gap) where the query residue has none (the
 *                                               argmax of AF2's one-hot raw feature)
 *     template_all_atom_positions f32 [T, N, 37, 3]
 *     template_all_atom_masks     f32 [T, N, 37]
 *     template_domain_names       fixed-length strings [T]  "1abc_A" (PDB id lower case)
 *     template_sum_probs          f32 [T, 1]    HHsearch Sum_probs
 *   Every dataset is chunked, shuffle + deflate + fletcher32 (data/h5io.h); the file is written
 *   under a temporary name and renamed when complete.
 *
 * Arginine NH1/NH2 are swapped where NH1 is further from CD than NH2, in the chain and in the
 * templates, as AF2's template and OpenFold's training atom readers do. */
#ifndef MF_DATA_FEATURIZE_H
#define MF_DATA_FEATURIZE_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "data/h5io.h"
#include "data/hhr.h"
#include "data/msa.h"
#include "protein/protein.h"

#define MF_FEATURES_FORMAT         "memfold-features"
#define MF_FEATURES_SCHEMA_VERSION 1
/* AF2 TemplateHitFeaturizer max_hits. */
#define MF_FEATURIZE_MAX_TEMPLATES 20
#define MF_FEATURE_NAME_MAX        256
#define MF_TEMPLATE_NAME_MAX       32

/* ---- templates (AF2 data/templates.py semantics) ---- */

typedef enum {
    MF_TSKIP_NAME = 0,    /* hit name does not start with PDBID_chain */
    MF_TSKIP_DATE,        /* template released after the max template date */
    MF_TSKIP_ALIGN_RATIO, /* aligned columns <= 10% of the query */
    MF_TSKIP_DUPLICATE,   /* template is a subsequence of the query covering > 95% of it */
    MF_TSKIP_LENGTH,      /* fewer than 10 template residues */
    MF_TSKIP_NO_MAPPING,  /* the hit's query residues are not in the chain's sequence */
    MF_TSKIP_NO_FILE,     /* no mmCIF file for the PDB id in the template directory */
    MF_TSKIP_PARSE,       /* the template mmCIF cannot be read or has no protein chain */
    MF_TSKIP_SEQUENCE,    /* template sequence not in the mmCIF, and realignment < 90% identity */
    MF_TSKIP_ATOMS,       /* consecutive CA atoms > 150 A apart, or fewer than 5 atoms aligned */
    MF_TSKIP_COUNT
} mf_template_skip;

const char *mf_template_skip_name(mf_template_skip reason);

typedef struct {
    const char *mmcif_dir;
    /* Hits from entries released after this date are dropped ("" or NULL: no date filter). */
    const char *max_template_date;
    int max_templates; /* <= 0: MF_FEATURIZE_MAX_TEMPLATES */
} mf_template_options;

/* A max template date as the options take it: "YYYY-MM-DD" (month 1..12, day 1..31). Dates are
 * compared as text, so any other spelling would filter silently wrong. */
bool mf_template_date_valid(const char *date);

typedef struct {
    int num_templates;
    int64_t num_res;
    int32_t *aatype;                            /* [T, N] HHblits ids */
    float *all_atom_positions;                  /* [T, N, 37, 3] */
    float *all_atom_masks;                      /* [T, N, 37] */
    char (*domain_names)[MF_TEMPLATE_NAME_MAX]; /* [T] */
    float *sum_probs;                           /* [T] */
    int64_t skipped[MF_TSKIP_COUNT];
    int64_t realigned; /* hits whose template sequence was realigned to the mmCIF chain */
} mf_template_features;

/* Hits in order of decreasing Sum_probs (stable), each prefiltered (date, align ratio,
 * duplicate, length), mapped to the query, found in its mmCIF (the named chain, then any chain,
 * then with X as a wildcard, else a global realignment of the hit's template residues to the
 * named chain that must be >= 90% identical, in place of AF2's kalign) and read, until
 * max_templates are kept. Skipped hits are counted by reason. */
mf_status mf_template_features_make(const char *query_sequence, const mf_hhr *hhr,
                                    const mf_template_options *opts, mf_template_features *out);
void mf_template_features_free(mf_template_features *t);

/* AF2 fix for arginine atom naming (NH1 must be the NH closer to CD), residue by residue. */
void mf_fix_arginine_nh(const int32_t *aatype, float *positions /* [N, 37, 3] */,
                        const float *mask /* [N, 37] */, int64_t num_res);

/* ---- one chain ---- */

typedef struct {
    char name[MF_FEATURE_NAME_MAX]; /* group name <entry>_<chain> */
    char *source_file;
    mf_protein protein; /* owned */
    mf_msa msa;         /* row 0 = the chain's sequence */
    char *msa_sources;
    bool has_templates;
    mf_template_features templates;
} mf_chain_features;

void mf_chain_features_free(mf_chain_features *f);

/* Writes group /f->name (datasets and attributes as in the schema above). */
mf_status mf_chain_features_write(mf_h5_writer *w, const mf_chain_features *f);

/* Root attributes of a feature file (format, schema_version, encodings, num_chains). */
mf_status mf_features_write_root(mf_h5_writer *w, int64_t num_chains);

/* The group name's entry part of a structure path: the file name without ".gz" and without the
 * format extension (".cif", ".mmcif", ".pdb", ".ent"). */
void mf_featurize_entry_name(const char *path, char *out, size_t cap);

/* MSA files for a chain in msa_dir, in the order they are merged: every alignment file (.a3m,
 * .sto, .sth, .stk, each possibly .gz) in the directory <entry>_<chain>/ in name order except
 * uniprot_hits.sto and hmm_output.sto (multimer pairing and template search in the AF2/OpenFold
 * layout), then the files <entry>_<chain>.<ext>; only when there are none, <entry>.<ext>. The
 * entry part is tried as written, in lower case and in upper case. Returns the count (0..max). */
int mf_featurize_find_msas(const char *msa_dir, const char *entry, const char *chain, char **paths,
                           int max);

/* ---- the whole run ---- */

typedef enum {
    MF_REJECT_RESOLUTION = 0, /* resolution worse than --max-resolution */
    MF_REJECT_TOO_SHORT,      /* fewer residues than --min-length */
    MF_REJECT_TOO_LONG,       /* more residues than --max-length */
    MF_REJECT_RELEASED,       /* released on or after --release-before */
    MF_REJECT_NO_DATE,        /* --release-before given and the file has no release date */
    MF_REJECT_NO_ATOMS,       /* no observed atom in the chain */
    MF_REJECT_DUPLICATE,      /* a group of that name was already written */
    MF_REJECT_COUNT
} mf_reject_reason;

const char *mf_reject_reason_name(mf_reject_reason r);

typedef struct {
    const char *structures_dir; /* searched recursively for mmCIF and PDB files (.gz or not) */
    const char *output;
    const char *msa_dir;            /* NULL: MSAs only from jackhmmer, else single sequence */
    const char *template_hits_dir;  /* <entry>_<chain>.hhr[.gz] or <entry>.hhr[.gz] */
    const char *template_mmcif_dir; /* required with template_hits_dir */
    const char *max_template_date;  /* NULL: each chain's own release date, when known */
    int max_templates;              /* <= 0: MF_FEATURIZE_MAX_TEMPLATES */
    double max_resolution;          /* <= 0: no limit; resolution 0 (unknown) always passes */
    int64_t min_length, max_length; /* <= 0: no limit */
    const char *release_before;     /* "YYYY-MM-DD" or NULL */
    const char *jackhmmer_db;       /* FASTA database: jackhmmer MSA merged after msa_dir's */
    const char *jackhmmer_bin;      /* NULL: jackhmmer from PATH */
    int jobs;                       /* worker threads (<= 0: 1) */
    volatile sig_atomic_t *cancel;  /* when set non-zero the run stops and writes nothing */
} mf_featurize_options;

typedef struct {
    char *what; /* chain group name or file path */
    char *why;
} mf_featurize_note;

typedef struct {
    int64_t files_total, files_done, files_failed;
    int64_t chains_written, chains_rejected, chains_failed;
    int64_t rejected_by[MF_REJECT_COUNT];
    int64_t chains_with_msa, chains_with_templates, templates_written;
    int64_t template_skips[MF_TSKIP_COUNT];
    int64_t templates_realigned;
    int64_t num_rejected, num_failed;
    mf_featurize_note *rejected; /* [num_rejected] chain name and reason */
    mf_featurize_note *failed;   /* [num_failed] file or chain and error message */
    double seconds;
} mf_featurize_report;

void mf_featurize_report_free(mf_featurize_report *r);

/* Called on the calling thread after each structure file (and once before the first). */
typedef void (*mf_featurize_progress_fn)(const mf_featurize_report *r, void *ud);

/* Featurizes every structure file and writes the output atomically. Files that fail to parse
 * and chains whose MSA or template hits fail are recorded in r->failed and skipped; filtered
 * chains are counted in r->rejected_by and listed in r->rejected. Returns MF_OK when the file was
 * written with at least one chain; when no chain was written nothing is written and the result is
 * MF_ERR_INVALID ("no chain written"); a cancelled run returns MF_ERR_IO and writes nothing. */
mf_status mf_featurize_run(const mf_featurize_options *opts, mf_featurize_progress_fn progress,
                           void *ud, mf_featurize_report *r);

#endif
