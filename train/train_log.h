/* The training log: one record per step, as a JSON object per line in RUN/log.jsonl and as a row of
 * RUN/log.csv (same columns), each line flushed when written, plus a progress line with an ETA on
 * stderr.
 *
 * Columns, in order: step, loss, one column per loss term (names given at open, e.g. "fape",
 * "distogram"), lr, grad_norm, clip_scale, skipped, optimizer_step, skipped_steps,
 * arena_peak_bytes, then the wall-clock fields step_time_s and samples_per_s. The wall-clock
 * fields are the only ones that differ between two runs of the same computation: in JSON they sit
 * in a nested object "wall": {"step_time_s": ..., "samples_per_s": ...}, in CSV they are the last
 * two columns, so a test drops them and compares the rest byte for byte. Doubles are printed with
 * 17 significant digits (exact round trip); non-finite values as null in JSON and nan/inf in CSV.
 *
 * Resume: mf_train_log_open with resume_step = S (the step of the checkpoint the run continues
 * from) keeps the header and every record with step <= S and cuts the rest, including a torn last
 * line, so the resumed run's log equals the uninterrupted run's. resume_step < 0 starts new files
 * (truncating old ones). */
#ifndef MF_TRAIN_TRAIN_LOG_H
#define MF_TRAIN_TRAIN_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/status.h"

#define MF_TRAIN_LOG_MAX_TERMS 32

typedef struct {
    int64_t step; /* 1-based: the record of the step that brings the completed count to `step` */
    double loss;
    double terms[MF_TRAIN_LOG_MAX_TERMS]; /* in the order of the names given at open */
    double lr, grad_norm, clip_scale;
    bool skipped;
    int64_t optimizer_step, skipped_steps;
    size_t arena_peak_bytes;
    /* wall clock */
    double step_time_s;
    double samples_per_s;
} mf_train_log_record;

typedef struct {
    FILE *jsonl, *csv;
    int num_terms;
    char *term_names[MF_TRAIN_LOG_MAX_TERMS];
    /* progress */
    int64_t total_steps; /* for the ETA; <= 0: none */
    int64_t first_step;  /* the first step logged by this process */
    double start_time;   /* monotonic seconds at open */
    bool tty;            /* stderr is a terminal: the progress line rewrites itself */
} mf_train_log;

/* Opens (creating run_dir/log.jsonl and run_dir/log.csv) for records with the given loss-term
 * names; resume_step as above. total_steps feeds the ETA. */
mf_status mf_train_log_open(mf_train_log *log, const char *run_dir, const char *const *term_names,
                            int num_terms, int64_t resume_step, int64_t total_steps);
/* Appends one record to both files and flushes them. */
mf_status mf_train_log_write(mf_train_log *log, const mf_train_log_record *r);
/* "step 120/1000 loss 1.2345 lr 1.0e-03 |g| 0.35 | 2.10 s/step 0.48 samples/s | ETA 30m48s"
 * on stderr (rewritten in place on a terminal, one line per call otherwise). */
void mf_train_log_progress(mf_train_log *log, const mf_train_log_record *r);
mf_status mf_train_log_close(mf_train_log *log);

/* Cuts one log file after the last complete record with step <= resume_step (a header line, one
 * whose first field is not a number, is kept). Exposed for tests; mf_train_log_open calls it. */
mf_status mf_train_log_truncate_file(const char *path, int64_t resume_step, bool csv);

/* Monotonic clock in seconds. */
double mf_train_log_now(void);

#endif
