/* The AlphaFold 2 input pipeline: raw features of one chain (memfold's feature file, or a query
 * sequence with its MSAs) -> the processed features the model consumes (data/processed.h), for
 * training and for inference. Suppl. 1.2 and the order of alphafold/model/tf/input_pipeline.py
 * (OpenFold's data/input_pipeline.py for training):
 *
 *   once per sample ("the plan", drawn before anything is read, so the loader reads only what it
 *   needs): random contiguous crop (AF2 monomer's random_crop_to_size: start uniform in
 *   [0, N - crop]; the spatial interface crop is multimer-only and not implemented), template
 *   subsampling (AF2: start s uniform in [0, T], random permutation, keep min(T - s, N_templ)
 *   from position s; inference keeps the first N_templ), MSA block deletion (suppl. 1.2.6,
 *   OpenFold block_delete_msa: num_blocks blocks of floor(S * fraction) rows from random starts in
 *   [1, S), the query row always kept), use_clamped_fape (1 with probability clamp_fape_fraction,
 *   suppl. 1.11.5) and the number of recycling iterations;
 *   non-ensembled: correct_msa_restypes (HHblits ids -> restype order), the HHblits profile (mean
 *   one-hot over all MSA rows, before block deletion), fix_templates_aatype, template masks,
 *   pseudo-beta and torsion angles, atom14 masks, and (training) the ground truth;
 *   per recycling iteration (resampled from the sample's seed when resample_msa_in_recycling):
 *   sample_msa (query + a random N_seq - 1 of the rest as cluster centres, the remaining rows
 *   extra), make_masked_msa (suppl. 1.2.7: each position of the centres with probability
 *   replace_fraction, replaced from uniform_prob * uniform over the 20 amino acids +
 *   profile_prob * HHblits profile + same_prob * itself + the rest on the mask token 22),
 *   nearest_neighbor_clusters (each extra row to the centre with most identical non-gap residues,
 *   gap_agreement_weight 0, first centre on ties), summarize_clusters (cluster profile and
 *   deletion mean including the centre, divided by 1e-6 + count), crop_extra_msa (a random
 *   N_extra of the extra rows), make_msa_feat (msa_feat 49 = one-hot 23, has_deletion,
 *   2/pi atan(d/3), cluster profile 23, 2/pi atan(mean/3); target_feat 22 = between-segment
 *   flag 0 + one-hot aatype 21; extra_has_deletion, extra_deletion_value), and padding of the
 *   cluster and extra rows to N_seq / N_extra (AF2 make_fixed_size; masks 0 on padding).
 *
 * Differences from AF2, all forced by reading only the crop window or by the file format:
 *  - the crop is applied before the MSA transforms, so cluster assignment counts agreement over
 *    the cropped columns only (AF2 clusters over the whole chain, then crops); every other
 *    transform is per column and unchanged by the order;
 *  - block deletion is drawn once per sample (OpenFold draws it per recycling iteration), so the
 *    MSA masks are identical in every iteration and carry no recycling axis (the file format);
 *  - the first cropped residue's pre-omega and phi torsions of the templates still use the residue
 *    before the crop (one extra residue is read), as AF2 computes them before cropping.
 * Random numbers are counter-based (core/rng.h): a sample is a pure function of the raw data, the
 * options and its 64-bit seed, bit for bit. */
#ifndef MF_DATA_PIPELINE_H
#define MF_DATA_PIPELINE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/rng.h"
#include "core/status.h"
#include "data/fasta.h"
#include "data/featurize.h"
#include "data/msa.h"
#include "data/processed.h"
#include "model/config.h"

#define MF_PIPELINE_MAX_TEMPLATES 64

/* AF2 masked-MSA token (the 23rd class of msa_feat's one-hot). */
#define MF_MSA_MASK_TOKEN 22

typedef struct {
    int64_t crop_size;        /* residues per sample; <= 0: no crop (inference) */
    int64_t max_msa_clusters; /* N_seq */
    int64_t max_extra_msa;    /* N_extra_seq */
    int64_t max_templates;    /* N_templ, <= MF_PIPELINE_MAX_TEMPLATES */
    bool subsample_templates;
    bool resample_msa_in_recycling;
    int64_t num_iterations;     /* R = recycling iterations (num_recycle + 1) */
    bool random_num_iterations; /* draw R uniformly in [1, num_iterations] per sample */
    double masked_msa_replace_fraction;
    double masked_msa_uniform_prob, masked_msa_profile_prob, masked_msa_same_prob;
    bool block_delete_msa;
    double block_delete_msa_fraction_per_block;
    int64_t block_delete_msa_num_blocks;
    bool pad_msa_rows;          /* pad clusters to N_seq and extra rows to N_extra */
    bool supervised;            /* ground-truth features (needs the structure) */
    double clamp_fape_fraction; /* P(use_clamped_fape = 1) */
} mf_pipeline_options;

/* Training (suppl. 1.2, Table 4) from cfg->data, cfg->recycling and cfg->loss: crop, block
 * deletion, template subsampling, ground truth, R = num_recycle + 1 drawn uniformly when
 * recycling.uniform_in_training, padded MSA rows (AF2's fixed sizes). */
mf_pipeline_options mf_pipeline_options_training(const mf_config *cfg);
/* Inference: no crop, no block deletion, the first N_templ templates, no ground truth, R =
 * num_recycle + 1, BERT masking as configured (AF2 masks at inference too), MSA rows not padded
 * (padding changes nothing but memory). */
mf_pipeline_options mf_pipeline_options_inference(const mf_config *cfg);

/* Raw features of one chain, or of a window of it (what the loader read). Arrays are owned
 * (mf_raw_chain_free frees every non-NULL one). */
typedef struct {
    int64_t chain_length;   /* residues in the whole chain */
    int64_t first_residue;  /* chain index of residue 0 of these arrays */
    int64_t num_res;        /* N: residues held */
    int32_t *aatype;        /* [N] restype order 0..20 */
    int32_t *residue_index; /* [N] */
    int64_t num_seq;        /* S >= 1 MSA rows of the whole chain; row 0 is the query */
    uint8_t *msa;           /* [S, N] HHblits ids 0..21 */
    float *deletion_matrix; /* [S, N]; rows the plan's block deletion removes may be unread (0) */
    float *all_atom_positions; /* [N, 37, 3] Angstrom, or NULL (no structure) */
    float *all_atom_mask;      /* [N, 37], or NULL */
    float resolution;
    int64_t num_templates;    /* T held */
    int64_t *template_ids;    /* [T] the chain's index of each held template; NULL: 0..T-1 */
    int32_t *template_aatype; /* [T, N] HHblits ids 0..21 (21: no aligned residue) */
    float *template_all_atom_positions; /* [T, N, 37, 3] */
    float *template_all_atom_masks;     /* [T, N, 37] */
    float *template_sum_probs;          /* [T], or NULL */
    char *sequence;                     /* whole chain, one-letter codes, or NULL */
} mf_raw_chain;

void mf_raw_chain_free(mf_raw_chain *raw);

/* The per-sample random choices, drawn from the sample's seed and the chain's sizes only. */
typedef struct {
    uint64_t seed;
    int64_t crop_start, crop_size; /* chain residues [crop_start, crop_start + crop_size) */
    int64_t num_templates;
    int64_t template_ids[MF_PIPELINE_MAX_TEMPLATES]; /* in the order they enter the sample */
    int64_t num_seq;                                 /* S: MSA rows before block deletion */
    int64_t num_kept;                                /* rows kept by block deletion */
    int64_t *kept_rows; /* [num_kept] ascending, kept_rows[0] = 0 (owned) */
    float use_clamped_fape;
    int64_t num_iterations; /* R */
} mf_sample_plan;

mf_status mf_sample_plan_make(const mf_pipeline_options *opts, int64_t chain_length,
                              int64_t num_seq, int64_t num_templates, uint64_t seed,
                              mf_sample_plan *plan);
void mf_sample_plan_free(mf_sample_plan *plan);

/* The residues of the chain the sample needs: the crop and, when the crop does not start at 0,
 * the residue before it (template torsions): [*first, *first + *count). */
void mf_sample_plan_residue_window(const mf_sample_plan *plan, int64_t *first, int64_t *count);

/* The processed features of one sample (data/processed.h names; see the file comment). raw must
 * hold the plan's residue window, all num_seq MSA rows (deletions of the kept rows) and the plan's
 * templates. Ground truth needs opts->supervised and raw's structure. */
mf_status mf_pipeline_process(const mf_raw_chain *raw, const mf_sample_plan *plan,
                              const mf_pipeline_options *opts, mf_processed_features *out);

/* Plan + process for a whole chain held in memory. */
mf_status mf_pipeline_run(const mf_raw_chain *raw, const mf_pipeline_options *opts, uint64_t seed,
                          mf_processed_features *out);

/* ---- inference input ---- */

/* Raw features of a query: aatype from the sequence (unknown letters -> X), residue_index 0..N-1,
 * the MSA rows of msas[0], msas[1], ... merged and deduplicated after a query row (AF2
 * make_msa_features; each MSA's row 0 must be the query: mf_msa_check_query), or the query alone
 * (single-sequence mode) when num_msas == 0. No structure, no templates. */
mf_status mf_raw_chain_from_query(const char *sequence, const mf_msa *const *msas, int num_msas,
                                  mf_raw_chain *out);
/* FASTA record + alignment files (format from the extension or content) -> processed features
 * with no cropping and the MSA resampled per recycling iteration from `seed`. No templates
 * (mf_pipeline_inference_features_ex with no template_hits). */
mf_status mf_pipeline_inference_features(const mf_fasta_record *record,
                                         const char *const *msa_paths, int num_msa_paths,
                                         const mf_pipeline_options *opts, uint64_t seed,
                                         mf_processed_features *out);

/* What an inference query brings besides its sequence. */
typedef struct {
    const char *const *msa_paths; /* [num_msa_paths] alignment files, merged in this order */
    int num_msa_paths;
    /* HHsearch/HHblits hits of the query (.hhr, .hhr.gz); NULL: no templates. */
    const char *template_hits;
    const char *template_mmcif_dir; /* <dir>/<pdb id>.cif[.gz]; required with template_hits */
    /* "YYYY-MM-DD": hits from entries released after it are dropped (AF2 run_alphafold's
     * --max_template_date); NULL or "": no date filter. */
    const char *max_template_date;
    /* Hits featurized, in Sum_probs order (<= 0: MF_FEATURIZE_MAX_TEMPLATES, AF2's max_hits);
     * the pipeline then keeps the first opts->max_templates of them (AF2 crop_templates). */
    int max_template_hits;
} mf_inference_inputs;

/* The templates of featurize (data/featurize.h: HHblits-id aatype, atom37 positions and masks,
 * Sum_probs) become the raw chain's templates, copied; raw must hold its whole chain. T = 0
 * leaves no template arrays. */
mf_status mf_raw_chain_set_templates(mf_raw_chain *raw, const mf_template_features *t);

/* mf_pipeline_inference_features, with template hits: each hit is featurized as `memfold
 * featurize` does (mf_template_features_make: prefilter, mapping to the FASTA sequence, mmCIF
 * chain search, realignment) and the kept templates go through the pipeline's template features
 * (template_aatype, positions, masks, pseudo-beta, torsions). templates (may be NULL) receives
 * what was featurized (domain names, Sum_probs, skip counts; all T of them, before the pipeline
 * keeps the first N_templ); the caller frees it with mf_template_features_free. It is zeroed when
 * no hits were given. */
mf_status mf_pipeline_inference_features_ex(const mf_fasta_record *record,
                                            const mf_inference_inputs *inputs,
                                            const mf_pipeline_options *opts, uint64_t seed,
                                            mf_processed_features *out,
                                            mf_template_features *templates);

/* ---- the transforms, for tests and for callers that build features themselves ---- */

/* Uniform integer in [0, n) (n >= 1) from the generator, without modulo bias. */
uint64_t mf_rng_next_below(mf_rng *r, uint64_t n);

/* AF2 make_hhblits_profile: profile [N, 22] = mean over the S rows of one_hot(msa) (restype
 * order with X and gap, 0..21), in f32. */
mf_status mf_hhblits_profile(float *profile, const uint8_t *msa, int64_t S, int64_t N);

/* AF2 make_masked_msa on the cluster centres msa [C, N] (restype order 0..21), in place:
 * bert_mask [C, N] (1 where replaced), true_msa [C, N] (the input), msa the replaced values
 * (0..22). Position k = c * N + j draws word k of stream `stream_mask` and, when masked, word k of
 * stream `stream_category` under `seed`. */
void mf_make_masked_msa(uint8_t *msa, float *bert_mask, int32_t *true_msa, const float *profile,
                        int64_t C, int64_t N, const mf_pipeline_options *opts, uint64_t seed,
                        uint64_t stream_mask, uint64_t stream_category);

/* AF2 nearest_neighbor_clusters (gap_agreement_weight 0): assignment [E] of each extra row
 * extra [E, N] (0..21) to the cluster centre of msa [C, N] (0..22) agreeing at most non-gap,
 * non-mask positions (the first such centre on ties). */
mf_status mf_nearest_neighbor_clusters(int32_t *assignment, const uint8_t *msa, int64_t C,
                                       const uint8_t *extra, int64_t E, int64_t N);

/* AF2 summarize_clusters + the cluster part of make_msa_feat: cluster_profile [C, N, 23] =
 * (one_hot(centre) + sum of one_hot(assigned extra rows)) / (1e-6 + 1 + count), deletion_mean
 * [C, N] = (centre deletions + sum of assigned) / (1e-6 + 1 + count), in f32 as AF2. Either
 * output may be NULL. */
mf_status mf_summarize_clusters(float *cluster_profile, float *deletion_mean, const uint8_t *msa,
                                const float *deletion, int64_t C, const uint8_t *extra,
                                const float *extra_deletion, const int32_t *assignment, int64_t E,
                                int64_t N);

/* 2/pi * atan(d / 3) in f32 (make_msa_feat's deletion_value). */
float mf_deletion_value(float d);

#endif
