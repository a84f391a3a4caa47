/* MSA generation with HMMER's jackhmmer (Debian package `hmmer`), run as AlphaFold 2's
 * data/tools/jackhmmer.py runs it: one iteration (-N 1), E-value 1e-4 for reporting and
 * inclusion, the F1/F2/F3 filter thresholds 5e-4/5e-5/5e-7, the alignment of hits saved as
 * Stockholm (-A) and read with data/msa.h, truncated to AF2's 10,000 sequences (uniref90's
 * max_sto_sequences). The query goes first: jackhmmer writes it as the first sequence of the
 * alignment (and alone when nothing is found). Work files live in a fresh temporary directory
 * (TMPDIR or /tmp) that is removed on every return path. */
#ifndef MF_DATA_JACKHMMER_H
#define MF_DATA_JACKHMMER_H

#include <stdint.h>

#include "core/status.h"
#include "data/msa.h"

#define MF_JACKHMMER_MAX_SEQUENCES 10000

typedef struct {
    const char *binary;    /* NULL: "jackhmmer" from PATH */
    const char *database;  /* FASTA sequence database (plain or .gz, as jackhmmer reads it) */
    int cpu;               /* --cpu; <= 0: jackhmmer's default */
    int64_t max_sequences; /* <= 0: MF_JACKHMMER_MAX_SEQUENCES */
} mf_jackhmmer_options;

/* The executable that would run: opts->binary, else "jackhmmer" found in PATH. MF_ERR_UNSUPPORTED
 * naming the Debian package when it cannot be found. path gets the resolved file (cap bytes). */
mf_status mf_jackhmmer_find(const mf_jackhmmer_options *opts, char *path, size_t cap);

/* Searches `query` (one-letter codes) against opts->database and returns the alignment with the
 * query as row 0 (its length is the query's). The database must exist (checked first, so a
 * missing file is named, not reported as a jackhmmer failure). A jackhmmer failure is
 * MF_ERR_BACKEND with its exit status and the last lines of its stderr. */
mf_status mf_jackhmmer_search(const mf_jackhmmer_options *opts, const char *query,
                              const char *query_name, mf_msa *out);

#endif
