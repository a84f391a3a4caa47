/* The training data loader: a raw feature file (data/featurize.h, format "memfold-features",
 * schema 1; one group per chain) -> processed samples (data/pipeline.h, data/processed.h).
 *
 * Samples come in epochs; each epoch visits every chain once, in an order shuffled from
 * (seed, epoch) (or file order). Sample k = epoch * num_chains + position has its own 64-bit seed
 * drawn from (seed, k), so a sample is a pure function of the file, the options, the seed and k:
 * the same seed gives bit-identical samples whether built on the prefetch thread or not.
 *
 * Memory: nothing of a chain is kept between samples. For one sample the loader reads the chain's
 * dataset shapes, draws the plan (crop, templates, block deletion), and reads only the hyperslabs
 * the plan needs (data/h5slab.h): the crop window (+ the residue before it) of the per-residue
 * datasets, all MSA rows of the window's columns (the HHblits profile and the cluster statistics
 * are over every row) and the deletions of the rows block deletion keeps, and the chosen
 * templates' window. Resident memory is then bounded by one sample, not by the file.
 *
 * With prefetch, a background thread (pthreads) builds the next sample while the caller uses the
 * current one: one sample ahead, never more; mf_loader_close stops and joins it. */
#ifndef MF_DATA_LOADER_H
#define MF_DATA_LOADER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "data/pipeline.h"
#include "data/processed.h"

#define MF_RAW_FEATURES_FORMAT         "memfold-features"
#define MF_RAW_FEATURES_SCHEMA_VERSION 1
#define MF_LOADER_NAME_CAP             256

typedef struct {
    const char *path;             /* raw feature file */
    uint64_t seed;                /* epoch orders and every sample's randomness */
    mf_pipeline_options pipeline; /* usually mf_pipeline_options_training(cfg) */
    bool shuffle;                 /* seeded shuffle per epoch; false: file order */
    bool prefetch;                /* build the next sample on a background thread */
} mf_loader_options;

typedef struct {
    char chain[MF_LOADER_NAME_CAP]; /* group name <entry>_<chain> */
    int64_t epoch, position;        /* sample k = epoch * num_chains + position */
    int64_t chain_index;            /* index in the file's group order */
    uint64_t seed;                  /* the sample's seed */
    int64_t chain_length, crop_start, crop_size, num_seq, num_kept_rows, num_templates;
    uint64_t bytes_read;   /* bytes requested from HDF5 for this sample (data/h5slab.h) */
    uint64_t chain_bytes;  /* bytes of every dataset of the chain read in full */
    uint64_t sample_bytes; /* bytes of the processed sample's arrays */
} mf_loader_sample_info;

typedef struct mf_loader mf_loader;

/* Opens the file (checks format and schema_version), lists the chains, and with prefetch starts
 * building the first sample. */
mf_status mf_loader_open(mf_loader **out, const mf_loader_options *opts);
void mf_loader_close(mf_loader *l);

int64_t mf_loader_num_chains(const mf_loader *l);
const char *mf_loader_chain_name(const mf_loader *l, int64_t chain_index);
/* The chain visited at (epoch, position). */
int64_t mf_loader_chain_at(const mf_loader *l, int64_t epoch, int64_t position);

/* The next sample in order (epoch after epoch, without end). *out is initialised by the call and
 * the caller frees it (mf_processed_free); info may be NULL. An error building a sample is
 * returned for that sample; the following call moves on to the next one. */
mf_status mf_loader_next(mf_loader *l, mf_processed_features *out, mf_loader_sample_info *info);

/* Builds sample (epoch, position) on the calling thread, independent of the prefetch order. */
mf_status mf_loader_sample(mf_loader *l, int64_t epoch, int64_t position,
                           mf_processed_features *out, mf_loader_sample_info *info);

/* The whole chain in memory (every dataset read in full), for tests and tools: the processed
 * features of mf_pipeline_run on it equal the loader's sample for the same seed. */
mf_status mf_loader_read_chain(mf_loader *l, int64_t chain_index, mf_raw_chain *out);

/* The seed of sample (epoch, position). */
uint64_t mf_loader_sample_seed(const mf_loader *l, int64_t epoch, int64_t position);

#endif
