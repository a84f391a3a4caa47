/* Processed features: the named host arrays AlphaFold 2's model consumes for one sample (AF2's
 * processed-feature names: aatype, target_feat, msa_feat, ..., and the ground truth the losses
 * use), and the processed-feature HDF5 file that holds one sample.
 *
 * File format (normative: shared/testvectors/features.h5 and its README): one dataset per feature
 * at the root, named as the feature, f32 or i32 (scalars have rank 0). The recycling-axis rule: a
 * feature that differs between recycling iterations (the MSA is resampled in every iteration) has
 * a leading axis of length R = the root attribute n_recycle_iterations, iteration r at index r;
 * a feature identical in every iteration has no such axis. Every dataset carries the int32
 * attribute per_iteration (1/0) saying which. Readers decide by the feature's name and this
 * attribute, never by rank. Only the names of mf_feature_may_be_per_iteration can carry the axis.
 * Root attributes: n_recycle_iterations, n_res (int64), sequence (when known),
 * recycling_axis_rule (text); files memfold writes add format = "memfold-processed-features" and
 * schema_version = 1 (the reader does not require them: features.h5 has neither). */
#ifndef MF_DATA_PROCESSED_H
#define MF_DATA_PROCESSED_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "core/tensor.h"
#include "data/h5io.h"

#define MF_PROCESSED_FORMAT         "memfold-processed-features"
#define MF_PROCESSED_SCHEMA_VERSION 1
#define MF_FEATURE_NAME_CAP         64

typedef struct {
    char name[MF_FEATURE_NAME_CAP];
    bool per_iteration; /* array has the leading recycling axis R */
    mf_h5_array array;  /* MF_F32 or MF_I32, owned */
} mf_feature;

typedef struct {
    int num_features, cap;
    mf_feature *features;   /* [num_features] in insertion (or file) order */
    int64_t num_iterations; /* R: recycling iterations the per-iteration features cover */
    int64_t num_res;        /* N */
    char *sequence;         /* one-letter codes, or NULL */
} mf_processed_features;

/* The AF2 features that are resampled per recycling iteration (shared/testvectors/config.json
 * per_iteration_features): msa_feat, true_msa, bert_mask, extra_msa, extra_has_deletion,
 * extra_deletion_value. */
bool mf_feature_may_be_per_iteration(const char *name);

void mf_processed_init(mf_processed_features *f);
void mf_processed_free(mf_processed_features *f);

/* Adds a zero-filled feature and returns its data in *data. Per-iteration features take the
 * shape WITHOUT the recycling axis; R = f->num_iterations (set it first) is prepended. A
 * duplicate name, a per-iteration flag on a name that cannot carry it, or dtype other than
 * f32/i32 are errors. */
mf_status mf_processed_add(mf_processed_features *f, const char *name, mf_dtype dtype,
                           bool per_iteration, int ndim, const int64_t *shape, void **data);

/* The feature named `name`, or NULL. */
const mf_feature *mf_processed_find(const mf_processed_features *f, const char *name);

/* The view of feature `name` in recycling iteration r (0 <= r < R): its r-th slice when it is
 * per-iteration, the whole feature otherwise; view->data points into f (not owned). Fails when
 * the feature is missing or r is out of range. */
mf_status mf_processed_iteration(const mf_processed_features *f, const char *name, int64_t r,
                                 mf_h5_array *view);
/* The same as a CPU tensor header (at most 4 dims after the recycling axis is removed). */
mf_status mf_processed_tensor(const mf_processed_features *f, const char *name, int64_t r,
                              mf_tensor *out);

/* Names, flags, dtypes, shapes and every byte of the data equal (in any order); on a difference
 * writes it to diff (when not NULL). */
bool mf_processed_equal(const mf_processed_features *a, const mf_processed_features *b, char *diff,
                        size_t cap);

/* Writes one sample atomically (data/h5io: temporary file, fsync, rename). */
mf_status mf_processed_write(const char *path, const mf_processed_features *f);
/* Reads every root dataset of a processed-feature file (f32 as f32, integers as i32) with its
 * per_iteration attribute (required). Errors: a dataset without the attribute, per_iteration = 1
 * on a name that cannot carry it or with a leading axis other than n_recycle_iterations. */
mf_status mf_processed_read(const char *path, mf_processed_features *out);

#endif
