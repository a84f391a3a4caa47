/* Confidence and run record of predicted models as JSON (cJSON), the counterpart of AlphaFold 2's
 * confidence_<model>.json, pae_<model>.json, timings.json and ranking_debug.json in one file per
 * model plus one ranking file. Files are written atomically (mf_write_file_atomic).
 *
 * Per-model record (mf_prediction_json_*), schema "memfold.prediction" version 1. Keys, in order:
 *   "schema"                       "memfold.prediction"
 *   "schema_version"               1
 *   "tool"                         "memfold <version>"
 *   "model_name"                   string
 *   "num_res"                      N
 *   "sequence"                     one-letter codes (N of them) or null
 *   "residue_number"               [N] integers (author numbering; 1..N when not given)
 *   "plddt"                        [N] per-residue pLDDT in 0..100, rounded to 0.01 (AF2's
 *                                  confidenceScore rounding)
 *   "mean_plddt"                   mean of the unrounded pLDDT over all N residues
 *   "predicted_aligned_error"      [N][N] Angstrom rounded to 0.01 (AF2 rounds to 0.1), or null
 *   "max_predicted_aligned_error"  the last PAE bin centre (AF2's key), or null without a PAE
 *   "ptm"                          predicted TM-score, or null
 *   "ranking_metric"               "plddt" or "ptm"
 *   "ranking_confidence"           mean_plddt or ptm, as ranking_metric says
 *   "num_recycles"                 recycling iterations run after the first
 *   "timings"                      {"<stage>": seconds, ...} in the caller's order
 *   "memory"                       {"arena_high_water_bytes": integer or null,
 *                                   "peak_rss_bytes": integer or null, and with the trunk on a
 *                                   GPU "gpu_arena_high_water_bytes": integer}
 *   "config"                       summary of the model configuration, or null:
 *                                  {"preset", "c_m", "c_z", "c_s", "evoformer_num_blocks",
 *                                   "extra_msa_num_blocks", "templates_enabled",
 *                                   "structure_module_num_layers", "num_recycle" (configured),
 *                                   "predicted_aligned_error_enabled", "memory_policy" (the
 *                                   mf_policy_describe string)}
 *
 * Ranking (mf_ranking_json_*), schema "memfold.ranking" version 1:
 *   "schema", "schema_version", "ranking_metric",
 *   "plddts"               {"<model>": mean pLDDT}   (AF2 ranking_debug.json's key)
 *   "ptms"                 {"<model>": pTM or null}
 *   "ranking_confidences"  {"<model>": ranking confidence}
 *   "order"                ["<model>", ...] best first; ties keep the given order
 */
#ifndef MF_MODEL_PREDICTION_JSON_H
#define MF_MODEL_PREDICTION_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "model/config.h"

#define MF_PREDICTION_SCHEMA_VERSION 1

typedef enum {
    MF_RANK_BY_PLDDT = 0, /* mean pLDDT (AF2 monomer models, pTM models included) */
    MF_RANK_BY_PTM = 1,   /* pTM; every ranked record needs one */
} mf_ranking_metric;

typedef struct {
    const char *stage; /* "features", "predict", "write" ... */
    double seconds;
} mf_stage_timing;

/* One predicted model. Pointers marked "or NULL" are written as null (or their default). */
typedef struct {
    const char *model_name;        /* required, non-empty */
    int64_t num_res;               /* N >= 1 */
    const char *sequence;          /* N one-letter codes, or NULL */
    const int32_t *residue_number; /* [N] or NULL (1..N) */
    const float *plddt;            /* [N] in 0..100, required */
    const float *pae;              /* [N, N] Angstrom, or NULL */
    double max_pae;                /* with pae: the largest representable error (bin centre) */
    const double *ptm;             /* in 0..1, or NULL */
    int64_t num_recycles;          /* >= 0 */
    const mf_stage_timing *timings;
    int n_timings;
    int64_t arena_high_water_bytes;     /* < 0: unknown (null) */
    int64_t peak_rss_bytes;             /* 0: measured when the JSON is made; < 0: unknown (null) */
    int64_t gpu_arena_high_water_bytes; /* the trunk's GPU arena (--device cuda); 0: no GPU */
    const mf_config *config;            /* or NULL */
} mf_prediction_record;

const char *mf_ranking_metric_name(mf_ranking_metric m); /* "plddt", "ptm" */
/* "plddt" or "ptm" (also "pLDDT", "pTM"); MF_ERR_INVALID otherwise. */
mf_status mf_ranking_metric_parse(const char *name, mf_ranking_metric *m);

/* The process's peak resident set in bytes (getrusage ru_maxrss), -1 when unavailable. */
int64_t mf_process_peak_rss_bytes(void);

/* Checks the record (sizes, finite values in range) and gives its mean pLDDT and ranking
 * confidence (either pointer may be NULL). */
mf_status mf_prediction_confidence(const mf_prediction_record *r, mf_ranking_metric m,
                                   double *mean_plddt, double *ranking_confidence);

/* The record's JSON text (formatted). *text is freed with mf_prediction_json_free. */
mf_status mf_prediction_json_format(const mf_prediction_record *r, mf_ranking_metric m,
                                    char **text);
mf_status mf_prediction_json_write(const char *path, const mf_prediction_record *r,
                                   mf_ranking_metric m);

/* order[0..n) gets the record indices best first (descending ranking confidence, ties in the
 * given order). Model names must be distinct. */
mf_status mf_ranking_order(const mf_prediction_record *records, int n, mf_ranking_metric m,
                           int *order);
mf_status mf_ranking_json_format(const mf_prediction_record *records, int n, mf_ranking_metric m,
                                 char **text);
mf_status mf_ranking_json_write(const char *path, const mf_prediction_record *records, int n,
                                mf_ranking_metric m);

void mf_prediction_json_free(char *text);

#endif
