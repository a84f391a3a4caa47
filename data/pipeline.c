/* The AlphaFold 2 input pipeline (see pipeline.h): options, the per-sample plan, the processed
 * features of one sample, and the inference input from a query and its MSAs. */
#include "data/pipeline.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "protein/residue_constants.h"
#include "structure_module/torsion_features.h"

/* Random streams of one sample's seed. Per-sample choices have their own stream; recycling
 * iteration r uses ITER_BASE + r * ITER_STRIDE + the step's offset, so changing one step or the
 * number of iterations never shifts another step's numbers. */
enum {
    STREAM_CROP = 1,
    STREAM_TEMPLATES = 2,
    STREAM_BLOCK_DELETE = 3,
    STREAM_CLAMP_FAPE = 4,
    STREAM_NUM_ITERATIONS = 5,
    STREAM_ITER_BASE = 16,
    STREAM_ITER_STRIDE = 8,
    ITER_SAMPLE_MSA = 0,
    ITER_BERT_MASK = 1,
    ITER_BERT_CATEGORY = 2,
    ITER_CROP_EXTRA = 3,
};

#define MSA_FEAT_DIM    49 /* one-hot 23, has_deletion, deletion_value, profile 23, mean */
#define TARGET_FEAT_DIM 22 /* between-segment flag + one-hot aatype 21 */
#define MSA_CLASSES     23

/* ---- options ---- */

mf_pipeline_options mf_pipeline_options_training(const mf_config *cfg)
{
    const mf_data_config *d = &cfg->data;
    return (mf_pipeline_options){
        .crop_size = d->crop_size,
        .max_msa_clusters = d->max_msa_clusters,
        .max_extra_msa = d->max_extra_msa,
        .max_templates = d->max_templates,
        .subsample_templates = d->subsample_templates,
        .resample_msa_in_recycling = d->resample_msa_in_recycling,
        .num_iterations = cfg->recycling.num_recycle + 1,
        .random_num_iterations = cfg->recycling.uniform_in_training,
        .masked_msa_replace_fraction = d->masked_msa_replace_fraction,
        .masked_msa_uniform_prob = d->masked_msa_uniform_prob,
        .masked_msa_profile_prob = d->masked_msa_profile_prob,
        .masked_msa_same_prob = d->masked_msa_same_prob,
        .block_delete_msa = d->block_delete_msa,
        .block_delete_msa_fraction_per_block = d->block_delete_msa_fraction_per_block,
        .block_delete_msa_num_blocks = d->block_delete_msa_num_blocks,
        .pad_msa_rows = true,
        .supervised = true,
        .clamp_fape_fraction = cfg->loss.fape_clamp_fraction,
    };
}

mf_pipeline_options mf_pipeline_options_inference(const mf_config *cfg)
{
    mf_pipeline_options o = mf_pipeline_options_training(cfg);
    o.crop_size = 0;
    o.subsample_templates = false;
    o.random_num_iterations = false;
    o.block_delete_msa = false;
    o.pad_msa_rows = false;
    o.supervised = false;
    o.clamp_fape_fraction = 0;
    return o;
}

static mf_status check_options(const mf_pipeline_options *o)
{
    MF_REQUIRE(o->max_msa_clusters >= 1, "pipeline: max_msa_clusters = %lld (>= 1)",
               (long long)o->max_msa_clusters);
    MF_REQUIRE(o->max_extra_msa >= 0, "pipeline: max_extra_msa = %lld",
               (long long)o->max_extra_msa);
    MF_REQUIRE(o->max_templates >= 0 && o->max_templates <= MF_PIPELINE_MAX_TEMPLATES,
               "pipeline: max_templates = %lld (0..%d)", (long long)o->max_templates,
               MF_PIPELINE_MAX_TEMPLATES);
    MF_REQUIRE(o->num_iterations >= 1, "pipeline: num_iterations = %lld (>= 1)",
               (long long)o->num_iterations);
    const double p =
        o->masked_msa_uniform_prob + o->masked_msa_profile_prob + o->masked_msa_same_prob;
    MF_REQUIRE(o->masked_msa_uniform_prob >= 0 && o->masked_msa_profile_prob >= 0 &&
                   o->masked_msa_same_prob >= 0 && p <= 1 + 1e-12,
               "pipeline: masked_msa probabilities (uniform %g, profile %g, same %g) must be >= 0 "
               "and sum to <= 1",
               o->masked_msa_uniform_prob, o->masked_msa_profile_prob, o->masked_msa_same_prob);
    MF_REQUIRE(o->masked_msa_replace_fraction >= 0 && o->masked_msa_replace_fraction <= 1,
               "pipeline: masked_msa replace_fraction = %g", o->masked_msa_replace_fraction);
    MF_REQUIRE(!o->block_delete_msa || (o->block_delete_msa_fraction_per_block >= 0 &&
                                        o->block_delete_msa_fraction_per_block <= 1 &&
                                        o->block_delete_msa_num_blocks >= 0),
               "pipeline: block_delete_msa fraction %g, %lld blocks",
               o->block_delete_msa_fraction_per_block, (long long)o->block_delete_msa_num_blocks);
    return MF_OK;
}

/* ---- raw chain and plan ---- */

void mf_raw_chain_free(mf_raw_chain *raw)
{
    if (!raw) return;
    free(raw->aatype);
    free(raw->residue_index);
    free(raw->msa);
    free(raw->deletion_matrix);
    free(raw->all_atom_positions);
    free(raw->all_atom_mask);
    free(raw->template_ids);
    free(raw->template_aatype);
    free(raw->template_all_atom_positions);
    free(raw->template_all_atom_masks);
    free(raw->template_sum_probs);
    free(raw->sequence);
    memset(raw, 0, sizeof *raw);
}

void mf_sample_plan_free(mf_sample_plan *plan)
{
    if (!plan) return;
    free(plan->kept_rows);
    memset(plan, 0, sizeof *plan);
}

/* Fisher-Yates: a uniformly random permutation (AF2 uses random_shuffle / argsort of uniforms,
 * which give the same distribution). */
static void shuffle(int64_t *a, int64_t n, mf_rng *r)
{
    for (int64_t i = n - 1; i > 0; i--) {
        const int64_t j = (int64_t)mf_rng_next_below(r, (uint64_t)i + 1);
        const int64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

mf_status mf_sample_plan_make(const mf_pipeline_options *opts, int64_t chain_length,
                              int64_t num_seq, int64_t num_templates, uint64_t seed,
                              mf_sample_plan *plan)
{
    memset(plan, 0, sizeof *plan);
    MF_TRY(check_options(opts));
    MF_REQUIRE(chain_length >= 1 && num_seq >= 1 && num_templates >= 0,
               "sample plan: chain of %lld residues, %lld MSA rows, %lld templates",
               (long long)chain_length, (long long)num_seq, (long long)num_templates);
    plan->seed = seed;
    plan->num_seq = num_seq;

    /* random_crop_to_size: contiguous crop, start uniform in [0, N - crop]. */
    const int64_t n =
        opts->crop_size > 0 && opts->crop_size < chain_length ? opts->crop_size : chain_length;
    mf_rng rc = mf_rng_init(seed, STREAM_CROP);
    plan->crop_size = n;
    plan->crop_start = (int64_t)mf_rng_next_below(&rc, (uint64_t)(chain_length - n + 1));

    /* Templates: AF2 random_crop_to_size(subsample_templates) or crop_templates. */
    const int64_t T = num_templates;
    if (opts->subsample_templates && T > 0) {
        mf_rng rt = mf_rng_init(seed, STREAM_TEMPLATES);
        const int64_t start = (int64_t)mf_rng_next_below(&rt, (uint64_t)T + 1);
        int64_t *perm = malloc((size_t)T * sizeof *perm);
        if (!perm) return MF_ERROR(MF_ERR_NOMEM, "sample plan: %lld templates", (long long)T);
        for (int64_t t = 0; t < T; t++) perm[t] = t;
        shuffle(perm, T, &rt);
        int64_t k = T - start < opts->max_templates ? T - start : opts->max_templates;
        for (int64_t t = 0; t < k; t++) plan->template_ids[t] = perm[start + t];
        plan->num_templates = k;
        free(perm);
    } else {
        plan->num_templates = T < opts->max_templates ? T : opts->max_templates;
        for (int64_t t = 0; t < plan->num_templates; t++) plan->template_ids[t] = t;
    }

    /* Block deletion (OpenFold block_delete_msa): blocks of floor(S * fraction) rows. */
    uint8_t *deleted = calloc((size_t)num_seq, 1);
    plan->kept_rows = malloc((size_t)num_seq * sizeof *plan->kept_rows);
    if (!deleted || !plan->kept_rows) {
        free(deleted);
        mf_sample_plan_free(plan);
        return MF_ERROR(MF_ERR_NOMEM, "sample plan: %lld MSA rows", (long long)num_seq);
    }
    const int64_t block =
        (int64_t)floor((double)num_seq * opts->block_delete_msa_fraction_per_block);
    if (opts->block_delete_msa && block > 0 && num_seq > 1) {
        mf_rng rb = mf_rng_init(seed, STREAM_BLOCK_DELETE);
        for (int64_t b = 0; b < opts->block_delete_msa_num_blocks; b++) {
            const int64_t s0 = 1 + (int64_t)mf_rng_next_below(&rb, (uint64_t)(num_seq - 1));
            for (int64_t i = s0; i < s0 + block && i < num_seq; i++) deleted[i] = 1;
        }
    }
    for (int64_t i = 0; i < num_seq; i++)
        if (!deleted[i]) plan->kept_rows[plan->num_kept++] = i;
    free(deleted);

    plan->use_clamped_fape =
        mf_rng_uniform(seed, STREAM_CLAMP_FAPE, 0) < (float)opts->clamp_fape_fraction ? 1.0f : 0.0f;
    if (opts->random_num_iterations) {
        mf_rng ri = mf_rng_init(seed, STREAM_NUM_ITERATIONS);
        plan->num_iterations = 1 + (int64_t)mf_rng_next_below(&ri, (uint64_t)opts->num_iterations);
    } else {
        plan->num_iterations = opts->num_iterations;
    }
    return MF_OK;
}

void mf_sample_plan_residue_window(const mf_sample_plan *plan, int64_t *first, int64_t *count)
{
    const int64_t lead = plan->crop_start > 0 ? 1 : 0;
    *first = plan->crop_start - lead;
    *count = plan->crop_size + lead;
}

/* ---- processing ---- */

#define ADD(name, dtype, per, ndim, ...)                                                           \
    mf_processed_add(out, (name), (dtype), (per), (ndim), (const int64_t[]){__VA_ARGS__},          \
                     (void **)&p_)

/* Per-iteration MSA features: the arrays of all R iterations (or one without the axis). */
typedef struct {
    float *msa_feat;      /* [R, Cout, n, 49] */
    int32_t *true_msa;    /* [R, Cout, n] */
    float *bert_mask;     /* [R, Cout, n] */
    int32_t *extra_msa;   /* [R, Eout, n] */
    float *extra_has_del; /* [R, Eout, n] */
    float *extra_del_val; /* [R, Eout, n] */
} msa_outputs;

/* One recycling iteration's MSA transforms (iteration r's random streams) into slot `slot`. */
static mf_status msa_iteration(const uint8_t *msa, const float *del, int64_t S, int64_t n,
                               const float *profile, const mf_pipeline_options *opts, uint64_t seed,
                               int64_t r, int64_t C, int64_t E, int64_t Cout, int64_t Eout,
                               const msa_outputs *o, int64_t slot)
{
    const uint64_t base = STREAM_ITER_BASE + (uint64_t)r * STREAM_ITER_STRIDE;
    const int64_t Eall = S - C;
    mf_status st = MF_OK;
    int64_t *order = malloc((size_t)S * sizeof *order);
    int64_t *pick = malloc((size_t)(Eall > 0 ? Eall : 1) * sizeof *pick);
    uint8_t *cm = malloc((size_t)(C * n > 0 ? C * n : 1));
    float *cdel = malloc((size_t)(C * n > 0 ? C * n : 1) * sizeof *cdel);
    uint8_t *xm = malloc((size_t)(Eall * n > 0 ? Eall * n : 1));
    float *xdel = malloc((size_t)(Eall * n > 0 ? Eall * n : 1) * sizeof *xdel);
    int32_t *assign = malloc((size_t)(Eall > 0 ? Eall : 1) * sizeof *assign);
    float *cprof =
        malloc((size_t)(C * n * MSA_CLASSES > 0 ? C * n * MSA_CLASSES : 1) * sizeof *cprof);
    float *cmean = malloc((size_t)(C * n > 0 ? C * n : 1) * sizeof *cmean);
    if (!order || !pick || !cm || !cdel || !xm || !xdel || !assign || !cprof || !cmean) {
        st = MF_ERROR(MF_ERR_NOMEM, "MSA transforms: %lld rows x %lld columns: out of memory",
                      (long long)S, (long long)n);
        goto cleanup;
    }
    /* sample_msa: the query first, the other rows in random order. */
    for (int64_t i = 0; i < S; i++) order[i] = i;
    mf_rng rs = mf_rng_init(seed, base + ITER_SAMPLE_MSA);
    shuffle(order + 1, S - 1, &rs);
    for (int64_t c = 0; c < C; c++) {
        memcpy(cm + c * n, msa + order[c] * n, (size_t)n);
        memcpy(cdel + c * n, del + order[c] * n, (size_t)n * sizeof *cdel);
    }
    for (int64_t e = 0; e < Eall; e++) {
        memcpy(xm + e * n, msa + order[C + e] * n, (size_t)n);
        memcpy(xdel + e * n, del + order[C + e] * n, (size_t)n * sizeof *xdel);
    }
    /* make_masked_msa on the centres, before clustering (AF2: so the profiles do not leak the
     * masked positions). */
    int32_t *true_msa = o->true_msa + slot * Cout * n;
    float *bert = o->bert_mask + slot * Cout * n;
    mf_make_masked_msa(cm, bert, true_msa, profile, C, n, opts, seed, base + ITER_BERT_MASK,
                       base + ITER_BERT_CATEGORY);
    MF_TRY_GOTO(mf_nearest_neighbor_clusters(assign, cm, C, xm, Eall, n));
    MF_TRY_GOTO(mf_summarize_clusters(cprof, cmean, cm, cdel, C, xm, xdel, assign, Eall, n));
    /* make_msa_feat */
    float *mf = o->msa_feat + slot * Cout * n * MSA_FEAT_DIM;
    for (int64_t c = 0; c < C; c++)
        for (int64_t j = 0; j < n; j++) {
            float *f = mf + (c * n + j) * MSA_FEAT_DIM;
            const float d = cdel[c * n + j];
            f[cm[c * n + j]] = 1.0f;
            f[23] = d < 0 ? 0.0f : d > 1 ? 1.0f : d;
            f[24] = mf_deletion_value(d);
            memcpy(f + 25, cprof + (c * n + j) * MSA_CLASSES, MSA_CLASSES * sizeof(float));
            f[48] = mf_deletion_value(cmean[c * n + j]);
        }
    /* crop_extra_msa: a random N_extra of the extra rows, after the cluster statistics. */
    for (int64_t e = 0; e < Eall; e++) pick[e] = e;
    mf_rng rx = mf_rng_init(seed, base + ITER_CROP_EXTRA);
    shuffle(pick, Eall, &rx);
    int32_t *xo = o->extra_msa + slot * Eout * n;
    float *xh = o->extra_has_del + slot * Eout * n, *xv = o->extra_del_val + slot * Eout * n;
    for (int64_t e = 0; e < E; e++)
        for (int64_t j = 0; j < n; j++) {
            const int64_t src = pick[e] * n + j;
            const float d = xdel[src];
            xo[e * n + j] = xm[src];
            xh[e * n + j] = d < 0 ? 0.0f : d > 1 ? 1.0f : d;
            xv[e * n + j] = mf_deletion_value(d);
        }
cleanup:
    free(order);
    free(pick);
    free(cm);
    free(cdel);
    free(xm);
    free(xdel);
    free(assign);
    free(cprof);
    free(cmean);
    return st;
}

static mf_status msa_features(const mf_raw_chain *raw, const mf_sample_plan *plan,
                              const mf_pipeline_options *opts, int64_t local, int64_t n,
                              mf_processed_features *out)
{
    const int64_t S = raw->num_seq, N = raw->num_res;
    void *p_ = NULL;
    mf_status st = MF_OK;
    uint8_t *all = malloc((size_t)(S * n > 0 ? S * n : 1));
    float *profile = malloc((size_t)(n > 0 ? n : 1) * MF_MSA_ALPHABET * sizeof *profile);
    uint8_t *msa = malloc((size_t)(plan->num_kept * n > 0 ? plan->num_kept * n : 1));
    float *del = malloc((size_t)(plan->num_kept * n > 0 ? plan->num_kept * n : 1) * sizeof *del);
    if (!all || !profile || !msa || !del) {
        st = MF_ERROR(MF_ERR_NOMEM, "MSA of %lld rows x %lld columns: out of memory", (long long)S,
                      (long long)n);
        goto cleanup;
    }
    /* correct_msa_restypes, then the HHblits profile over every row (before block deletion). */
    for (int64_t s = 0; s < S; s++)
        for (int64_t j = 0; j < n; j++) {
            const int v = raw->msa[s * N + local + j];
            const int r = mf_hhblits_to_restype(v);
            if (r < 0) {
                st = MF_ERROR(MF_ERR_FORMAT, "msa[%lld, %lld] = %d is not an HHblits id (0..21)",
                              (long long)s, (long long)(raw->first_residue + local + j), v);
                goto cleanup;
            }
            all[s * n + j] = (uint8_t)r;
        }
    MF_TRY_GOTO(mf_hhblits_profile(profile, all, S, n));
    for (int64_t k = 0; k < plan->num_kept; k++) {
        const int64_t s = plan->kept_rows[k];
        memcpy(msa + k * n, all + s * n, (size_t)n);
        memcpy(del + k * n, raw->deletion_matrix + s * N + local, (size_t)n * sizeof *del);
    }
    const int64_t Sk = plan->num_kept;
    const int64_t C = Sk < opts->max_msa_clusters ? Sk : opts->max_msa_clusters;
    const int64_t E = Sk - C < opts->max_extra_msa ? Sk - C : opts->max_extra_msa;
    const int64_t Cout = opts->pad_msa_rows ? opts->max_msa_clusters : C;
    const int64_t Eout = opts->pad_msa_rows ? opts->max_extra_msa : E;
    const bool per = opts->resample_msa_in_recycling;
    const int64_t R = per ? plan->num_iterations : 1;
    msa_outputs o;
    MF_TRY_GOTO(ADD("msa_feat", MF_F32, per, 3, Cout, n, MSA_FEAT_DIM));
    o.msa_feat = p_;
    MF_TRY_GOTO(ADD("true_msa", MF_I32, per, 2, Cout, n));
    o.true_msa = p_;
    MF_TRY_GOTO(ADD("bert_mask", MF_F32, per, 2, Cout, n));
    o.bert_mask = p_;
    MF_TRY_GOTO(ADD("extra_msa", MF_I32, per, 2, Eout, n));
    o.extra_msa = p_;
    MF_TRY_GOTO(ADD("extra_has_deletion", MF_F32, per, 2, Eout, n));
    o.extra_has_del = p_;
    MF_TRY_GOTO(ADD("extra_deletion_value", MF_F32, per, 2, Eout, n));
    o.extra_del_val = p_;
    for (int64_t r = 0; r < R; r++)
        MF_TRY_GOTO(
            msa_iteration(msa, del, Sk, n, profile, opts, plan->seed, r, C, E, Cout, Eout, &o, r));
    /* make_msa_mask: ones on the real rows, zeros on the padding. */
    float *f;
    MF_TRY_GOTO(ADD("msa_mask", MF_F32, false, 2, Cout, n));
    f = p_;
    for (int64_t i = 0; i < C * n; i++) f[i] = 1.0f;
    MF_TRY_GOTO(ADD("msa_row_mask", MF_F32, false, 1, Cout));
    f = p_;
    for (int64_t i = 0; i < C; i++) f[i] = 1.0f;
    MF_TRY_GOTO(ADD("extra_msa_mask", MF_F32, false, 2, Eout, n));
    f = p_;
    for (int64_t i = 0; i < E * n; i++) f[i] = 1.0f;
    MF_TRY_GOTO(ADD("extra_msa_row_mask", MF_F32, false, 1, Eout));
    f = p_;
    for (int64_t i = 0; i < E; i++) f[i] = 1.0f;
cleanup:
    free(all);
    free(profile);
    free(msa);
    free(del);
    return st;
}

static mf_status template_features(const mf_raw_chain *raw, const mf_sample_plan *plan,
                                   int64_t local, int64_t n, mf_processed_features *out)
{
    const int64_t T = plan->num_templates, N = raw->num_res;
    const int64_t lead = local >= 1 ? 1 : 0, m = n + lead;
    void *p_ = NULL;
    int32_t *aat, *ext_aat = NULL;
    float *pos, *mask, *tmask, *pb, *pbm, *sc, *alt, *tm, *sp = NULL;
    float *ext_pos = NULL, *ext_mask = NULL, *ext_sc = NULL, *ext_alt = NULL, *ext_tm = NULL;
    MF_TRY(ADD("template_aatype", MF_I32, false, 2, T, n));
    aat = p_;
    MF_TRY(ADD("template_all_atom_positions", MF_F32, false, 4, T, n, MF_ATOM37, 3));
    pos = p_;
    MF_TRY(ADD("template_all_atom_mask", MF_F32, false, 3, T, n, MF_ATOM37));
    mask = p_;
    MF_TRY(ADD("template_mask", MF_F32, false, 1, T));
    tmask = p_;
    if (raw->template_sum_probs || T == 0) {
        MF_TRY(ADD("template_sum_probs", MF_F32, false, 2, T, 1));
        sp = p_;
    }
    MF_TRY(ADD("template_pseudo_beta", MF_F32, false, 3, T, n, 3));
    pb = p_;
    MF_TRY(ADD("template_pseudo_beta_mask", MF_F32, false, 2, T, n));
    pbm = p_;
    MF_TRY(ADD("template_torsion_angles_sin_cos", MF_F32, false, 4, T, n, 7, 2));
    sc = p_;
    MF_TRY(ADD("template_alt_torsion_angles_sin_cos", MF_F32, false, 4, T, n, 7, 2));
    alt = p_;
    MF_TRY(ADD("template_torsion_angles_mask", MF_F32, false, 3, T, n, 7));
    tm = p_;
    if (T == 0) return MF_OK;
    mf_status st = MF_OK;
    ext_aat = malloc((size_t)m * sizeof *ext_aat);
    ext_pos = malloc((size_t)m * MF_ATOM37 * 3 * sizeof *ext_pos);
    ext_mask = malloc((size_t)m * MF_ATOM37 * sizeof *ext_mask);
    ext_sc = malloc((size_t)m * 14 * sizeof *ext_sc);
    ext_alt = malloc((size_t)m * 14 * sizeof *ext_alt);
    ext_tm = malloc((size_t)m * 7 * sizeof *ext_tm);
    if (!ext_aat || !ext_pos || !ext_mask || !ext_sc || !ext_alt || !ext_tm) {
        st = MF_ERROR(MF_ERR_NOMEM, "template features: out of memory");
        goto cleanup;
    }
    for (int64_t t = 0; t < T; t++) {
        int64_t k = -1;
        for (int64_t i = 0; i < raw->num_templates && k < 0; i++)
            if ((raw->template_ids ? raw->template_ids[i] : i) == plan->template_ids[t]) k = i;
        if (k < 0) {
            st = MF_ERROR(MF_ERR_INVALID, "template %lld of the plan is not in the raw features",
                          (long long)plan->template_ids[t]);
            goto cleanup;
        }
        /* fix_templates_aatype: HHblits ids to the restype order (gap stays 21). */
        for (int64_t j = 0; j < m; j++) {
            const int v = raw->template_aatype[k * N + local - lead + j];
            const int r = mf_hhblits_to_restype(v);
            if (r < 0) {
                st = MF_ERROR(MF_ERR_FORMAT,
                              "template_aatype[%lld, %lld] = %d is not an HHblits id (0..21)",
                              (long long)plan->template_ids[t],
                              (long long)(raw->first_residue + local - lead + j), v);
                goto cleanup;
            }
            ext_aat[j] = r;
        }
        memcpy(ext_pos, raw->template_all_atom_positions + (k * N + local - lead) * MF_ATOM37 * 3,
               (size_t)m * MF_ATOM37 * 3 * sizeof(float));
        memcpy(ext_mask, raw->template_all_atom_masks + (k * N + local - lead) * MF_ATOM37,
               (size_t)m * MF_ATOM37 * sizeof(float));
        memcpy(aat + t * n, ext_aat + lead, (size_t)n * sizeof *aat);
        memcpy(pos + t * n * MF_ATOM37 * 3, ext_pos + lead * MF_ATOM37 * 3,
               (size_t)n * MF_ATOM37 * 3 * sizeof(float));
        memcpy(mask + t * n * MF_ATOM37, ext_mask + lead * MF_ATOM37,
               (size_t)n * MF_ATOM37 * sizeof(float));
        tmask[t] = 1.0f;
        if (sp) sp[t] = raw->template_sum_probs[k];
        mf_pseudo_beta_from_atom37(pb + t * n * 3, pbm + t * n, aat + t * n,
                                   pos + t * n * MF_ATOM37 * 3, mask + t * n * MF_ATOM37, n);
        /* Torsions over the crop and the residue before it: pre-omega and phi of the first
         * cropped residue use that residue, as AF2 computes them before cropping. */
        MF_TRY_GOTO(
            mf_atom37_to_torsion_angles(ext_sc, ext_alt, ext_tm, ext_aat, ext_pos, ext_mask, m));
        memcpy(sc + t * n * 14, ext_sc + lead * 14, (size_t)n * 14 * sizeof(float));
        memcpy(alt + t * n * 14, ext_alt + lead * 14, (size_t)n * 14 * sizeof(float));
        memcpy(tm + t * n * 7, ext_tm + lead * 7, (size_t)n * 7 * sizeof(float));
    }
cleanup:
    free(ext_aat);
    free(ext_pos);
    free(ext_mask);
    free(ext_sc);
    free(ext_alt);
    free(ext_tm);
    return st;
}

static mf_status ground_truth(const mf_raw_chain *raw, const mf_sample_plan *plan,
                              const int32_t *aatype, int64_t local, int64_t n,
                              mf_processed_features *out)
{
    void *p_ = NULL;
    float *pos, *mask;
    MF_TRY(ADD("all_atom_positions", MF_F32, false, 3, n, MF_ATOM37, 3));
    pos = p_;
    memcpy(pos, raw->all_atom_positions + local * MF_ATOM37 * 3,
           (size_t)n * MF_ATOM37 * 3 * sizeof(float));
    MF_TRY(ADD("all_atom_mask", MF_F32, false, 2, n, MF_ATOM37));
    mask = p_;
    memcpy(mask, raw->all_atom_mask + local * MF_ATOM37, (size_t)n * MF_ATOM37 * sizeof(float));

    float *gt, *gte, *alt, *alte, *amb;
    MF_TRY(ADD("atom14_gt_positions", MF_F32, false, 3, n, MF_ATOM14, 3));
    gt = p_;
    MF_TRY(ADD("atom14_gt_exists", MF_F32, false, 2, n, MF_ATOM14));
    gte = p_;
    MF_TRY(ADD("atom14_alt_gt_positions", MF_F32, false, 3, n, MF_ATOM14, 3));
    alt = p_;
    MF_TRY(ADD("atom14_alt_gt_exists", MF_F32, false, 2, n, MF_ATOM14));
    alte = p_;
    MF_TRY(ADD("atom14_atom_is_ambiguous", MF_F32, false, 2, n, MF_ATOM14));
    amb = p_;
    MF_TRY(mf_make_atom14_positions(gt, gte, alt, alte, amb, aatype, pos, mask, n));

    float *fr, *fre, *gre, *gra, *afr;
    MF_TRY(ADD("rigidgroups_gt_frames", MF_F32, false, 4, n, MF_NUM_RIGID_GROUPS, 4, 4));
    fr = p_;
    MF_TRY(ADD("rigidgroups_gt_exists", MF_F32, false, 2, n, MF_NUM_RIGID_GROUPS));
    fre = p_;
    MF_TRY(ADD("rigidgroups_group_exists", MF_F32, false, 2, n, MF_NUM_RIGID_GROUPS));
    gre = p_;
    MF_TRY(ADD("rigidgroups_group_is_ambiguous", MF_F32, false, 2, n, MF_NUM_RIGID_GROUPS));
    gra = p_;
    MF_TRY(ADD("rigidgroups_alt_gt_frames", MF_F32, false, 4, n, MF_NUM_RIGID_GROUPS, 4, 4));
    afr = p_;
    MF_TRY(mf_atom37_to_frames(fr, fre, gre, gra, afr, aatype, pos, mask, n));

    float *bb, *bbm, *pb, *pbm, *chi, *chim, *s;
    MF_TRY(ADD("backbone_rigid_tensor", MF_F32, false, 3, n, 4, 4));
    bb = p_;
    MF_TRY(ADD("backbone_rigid_mask", MF_F32, false, 1, n));
    bbm = p_;
    MF_TRY(mf_backbone_frames(bb, bbm, pos, mask, n));
    MF_TRY(ADD("pseudo_beta", MF_F32, false, 2, n, 3));
    pb = p_;
    MF_TRY(ADD("pseudo_beta_mask", MF_F32, false, 1, n));
    pbm = p_;
    mf_pseudo_beta_from_atom37(pb, pbm, aatype, pos, mask, n);
    MF_TRY(ADD("chi_angles_sin_cos", MF_F32, false, 3, n, MF_NUM_CHI, 2));
    chi = p_;
    MF_TRY(ADD("chi_mask", MF_F32, false, 2, n, MF_NUM_CHI));
    chim = p_;
    MF_TRY(mf_chi_angles(chi, chim, aatype, pos, mask, n));
    MF_TRY(mf_processed_add(out, "resolution", MF_F32, false, 0, NULL, (void **)&s));
    *s = raw->resolution;
    MF_TRY(mf_processed_add(out, "is_distillation", MF_F32, false, 0, NULL, (void **)&s));
    *s = 0.0f; /* PDB chains only: no self-distillation set */
    MF_TRY(mf_processed_add(out, "use_clamped_fape", MF_F32, false, 0, NULL, (void **)&s));
    *s = plan->use_clamped_fape;
    return MF_OK;
}

static mf_status process(const mf_raw_chain *raw, const mf_sample_plan *plan,
                         const mf_pipeline_options *opts, mf_processed_features *out)
{
    MF_TRY(check_options(opts));
    const int64_t n = plan->crop_size, local = plan->crop_start - raw->first_residue;
    int64_t wfirst, wcount;
    mf_sample_plan_residue_window(plan, &wfirst, &wcount);
    MF_REQUIRE(raw->aatype && raw->residue_index && raw->msa && raw->deletion_matrix,
               "raw features: aatype, residue_index, msa and deletion_matrix are required");
    MF_REQUIRE(raw->first_residue <= wfirst && raw->first_residue + raw->num_res >= wfirst + wcount,
               "raw features hold chain residues [%lld, %lld), the sample needs [%lld, %lld)",
               (long long)raw->first_residue, (long long)(raw->first_residue + raw->num_res),
               (long long)wfirst, (long long)(wfirst + wcount));
    MF_REQUIRE(raw->num_seq == plan->num_seq, "raw features: %lld MSA rows, the plan has %lld",
               (long long)raw->num_seq, (long long)plan->num_seq);
    MF_REQUIRE(plan->num_templates == 0 ||
                   (raw->template_aatype && raw->template_all_atom_positions &&
                    raw->template_all_atom_masks),
               "raw features: the plan takes %lld templates, the raw features have none",
               (long long)plan->num_templates);
    MF_REQUIRE(!opts->supervised || (raw->all_atom_positions && raw->all_atom_mask),
               "raw features: ground truth requested, but there is no structure");

    out->num_iterations = plan->num_iterations;
    out->num_res = n;
    void *p_ = NULL;
    int32_t *aatype, *ri;
    MF_TRY(ADD("aatype", MF_I32, false, 1, n));
    aatype = p_;
    out->sequence = malloc((size_t)n + 1);
    if (!out->sequence) return MF_ERROR(MF_ERR_NOMEM, "sequence of %lld residues", (long long)n);
    for (int64_t i = 0; i < n; i++) {
        const int32_t a = raw->aatype[local + i];
        if (a < 0 || a > MF_RESTYPE_UNK)
            return MF_ERROR(MF_ERR_FORMAT, "aatype[%lld] = %d (restype order 0..20)",
                            (long long)(raw->first_residue + local + i), a);
        aatype[i] = a;
        out->sequence[i] = mf_restype_one_letter(a);
    }
    out->sequence[n] = '\0';
    MF_TRY(ADD("residue_index", MF_I32, false, 1, n));
    ri = p_;
    memcpy(ri, raw->residue_index + local, (size_t)n * sizeof *ri);
    float *f;
    MF_TRY(ADD("seq_mask", MF_F32, false, 1, n));
    f = p_;
    for (int64_t i = 0; i < n; i++) f[i] = 1.0f;
    int32_t *sl;
    MF_TRY(mf_processed_add(out, "seq_length", MF_I32, false, 0, NULL, (void **)&sl));
    *sl = (int32_t)n;
    /* target_feat: between_segment_residues (always 0 for chains) + one_hot(aatype, 21) */
    MF_TRY(ADD("target_feat", MF_F32, false, 2, n, TARGET_FEAT_DIM));
    f = p_;
    for (int64_t i = 0; i < n; i++) f[i * TARGET_FEAT_DIM + 1 + aatype[i]] = 1.0f;

    MF_TRY(msa_features(raw, plan, opts, local, n, out));
    MF_TRY(template_features(raw, plan, local, n, out));

    int32_t *a14, *a37;
    float *e14, *e37;
    MF_TRY(ADD("residx_atom14_to_atom37", MF_I32, false, 2, n, MF_ATOM14));
    a14 = p_;
    MF_TRY(ADD("residx_atom37_to_atom14", MF_I32, false, 2, n, MF_ATOM37));
    a37 = p_;
    MF_TRY(ADD("atom14_atom_exists", MF_F32, false, 2, n, MF_ATOM14));
    e14 = p_;
    MF_TRY(ADD("atom37_atom_exists", MF_F32, false, 2, n, MF_ATOM37));
    e37 = p_;
    MF_TRY(mf_make_atom14_masks(a14, a37, e14, e37, aatype, n));
    if (opts->supervised) MF_TRY(ground_truth(raw, plan, aatype, local, n, out));
    return MF_OK;
}

mf_status mf_pipeline_process(const mf_raw_chain *raw, const mf_sample_plan *plan,
                              const mf_pipeline_options *opts, mf_processed_features *out)
{
    mf_processed_init(out);
    mf_status st = process(raw, plan, opts, out);
    if (st != MF_OK) mf_processed_free(out);
    return st;
}

mf_status mf_pipeline_run(const mf_raw_chain *raw, const mf_pipeline_options *opts, uint64_t seed,
                          mf_processed_features *out)
{
    mf_processed_init(out);
    MF_REQUIRE(raw->first_residue == 0 && raw->num_res == raw->chain_length,
               "mf_pipeline_run needs the whole chain (held: [%lld, %lld) of %lld)",
               (long long)raw->first_residue, (long long)(raw->first_residue + raw->num_res),
               (long long)raw->chain_length);
    mf_sample_plan plan;
    MF_TRY(mf_sample_plan_make(opts, raw->chain_length, raw->num_seq, raw->num_templates, seed,
                               &plan));
    mf_status st = mf_pipeline_process(raw, &plan, opts, out);
    mf_sample_plan_free(&plan);
    return st;
}

/* ---- inference input ---- */

mf_status mf_raw_chain_from_query(const char *sequence, const mf_msa *const *msas, int num_msas,
                                  mf_raw_chain *out)
{
    memset(out, 0, sizeof *out);
    MF_REQUIRE(sequence && num_msas >= 0 && (num_msas == 0 || msas),
               "mf_raw_chain_from_query: a sequence is required");
    const int64_t N = (int64_t)strlen(sequence);
    MF_REQUIRE(N >= 1, "query sequence is empty");
    mf_status st = MF_OK;
    mf_msa query = {0}, merged = {0};
    const mf_msa **list = NULL;
    out->chain_length = out->num_res = N;
    out->aatype = malloc((size_t)N * sizeof *out->aatype);
    out->residue_index = malloc((size_t)N * sizeof *out->residue_index);
    out->sequence = malloc((size_t)N + 1);
    query.msa = malloc((size_t)N);
    query.deletion_matrix = calloc((size_t)N, sizeof *query.deletion_matrix);
    list = malloc((size_t)(num_msas + 1) * sizeof *list);
    if (!out->aatype || !out->residue_index || !out->sequence || !query.msa ||
        !query.deletion_matrix || !list) {
        st = MF_ERROR(MF_ERR_NOMEM, "query of %lld residues: out of memory", (long long)N);
        goto cleanup;
    }
    for (int64_t i = 0; i < N; i++) {
        const char c = sequence[i];
        const char up = (char)(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
        const int r = mf_restype_from_one_letter(up), h = mf_hhblits_aa_to_id(up);
        if (r < 0 || h < 0 || h == MF_MSA_GAP) {
            st = MF_ERROR(MF_ERR_INVALID, "query sequence: '%c' at position %lld is no residue", c,
                          (long long)i + 1);
            goto cleanup;
        }
        out->aatype[i] = r;
        out->residue_index[i] = (int32_t)i;
        out->sequence[i] = mf_restype_one_letter(r);
        query.msa[i] = (uint8_t)h;
    }
    out->sequence[N] = '\0';
    query.num_rows = 1;
    query.length = N;
    /* The query row first, so row 0 is the query whatever the MSAs hold; the MSAs' own copies
     * of it are then duplicates and dropped (AF2 make_msa_features' deduplication). */
    list[0] = &query;
    for (int k = 0; k < num_msas; k++) {
        MF_TRY_GOTO(mf_msa_check_query(msas[k], sequence));
        list[k + 1] = msas[k];
    }
    MF_TRY_GOTO(mf_msa_merge_dedup(list, num_msas + 1, &merged));
    out->num_seq = merged.num_rows;
    out->msa = merged.msa;
    merged.msa = NULL;
    out->deletion_matrix = malloc((size_t)(merged.num_rows * N) * sizeof *out->deletion_matrix);
    if (!out->deletion_matrix) {
        st = MF_ERROR(MF_ERR_NOMEM, "MSA of %lld rows: out of memory", (long long)merged.num_rows);
        goto cleanup;
    }
    for (int64_t i = 0; i < merged.num_rows * N; i++)
        out->deletion_matrix[i] = (float)merged.deletion_matrix[i];
cleanup:
    free(query.msa);
    free(query.deletion_matrix);
    free(list);
    mf_msa_free(&merged);
    if (st != MF_OK) mf_raw_chain_free(out);
    return st;
}

mf_status mf_raw_chain_set_templates(mf_raw_chain *raw, const mf_template_features *t)
{
    MF_REQUIRE(raw && t, "mf_raw_chain_set_templates: NULL argument");
    MF_REQUIRE(raw->first_residue == 0 && raw->num_res == raw->chain_length &&
                   t->num_res == raw->num_res,
               "templates of %lld residues for a raw chain holding [%lld, %lld) of %lld",
               (long long)t->num_res, (long long)raw->first_residue,
               (long long)(raw->first_residue + raw->num_res), (long long)raw->chain_length);
    const int64_t T = t->num_templates, N = raw->num_res;
    MF_REQUIRE(T >= 0 && (T == 0 || (t->aatype && t->all_atom_positions && t->all_atom_masks &&
                                     t->sum_probs)),
               "template features: %lld templates without arrays", (long long)T);
    free(raw->template_ids);
    free(raw->template_aatype);
    free(raw->template_all_atom_positions);
    free(raw->template_all_atom_masks);
    free(raw->template_sum_probs);
    raw->template_ids = NULL;
    raw->template_aatype = NULL;
    raw->template_all_atom_positions = raw->template_all_atom_masks = NULL;
    raw->template_sum_probs = NULL;
    raw->num_templates = 0;
    if (T == 0) return MF_OK;
    const size_t nres = (size_t)T * (size_t)N;
    raw->template_aatype = malloc(nres * sizeof *raw->template_aatype);
    raw->template_all_atom_positions = malloc(nres * MF_ATOM37 * 3 * sizeof(float));
    raw->template_all_atom_masks = malloc(nres * MF_ATOM37 * sizeof(float));
    raw->template_sum_probs = malloc((size_t)T * sizeof *raw->template_sum_probs);
    if (!raw->template_aatype || !raw->template_all_atom_positions ||
        !raw->template_all_atom_masks || !raw->template_sum_probs) {
        free(raw->template_aatype);
        free(raw->template_all_atom_positions);
        free(raw->template_all_atom_masks);
        free(raw->template_sum_probs);
        raw->template_aatype = NULL;
        raw->template_all_atom_positions = raw->template_all_atom_masks = NULL;
        raw->template_sum_probs = NULL;
        return MF_ERROR(MF_ERR_NOMEM, "%lld templates of %lld residues: out of memory",
                        (long long)T, (long long)N);
    }
    memcpy(raw->template_aatype, t->aatype, nres * sizeof *raw->template_aatype);
    memcpy(raw->template_all_atom_positions, t->all_atom_positions,
           nres * MF_ATOM37 * 3 * sizeof(float));
    memcpy(raw->template_all_atom_masks, t->all_atom_masks, nres * MF_ATOM37 * sizeof(float));
    memcpy(raw->template_sum_probs, t->sum_probs, (size_t)T * sizeof *raw->template_sum_probs);
    raw->num_templates = T;
    return MF_OK;
}

/* The query's templates from its hits, as `memfold featurize` makes them for a chain. */
static mf_status query_templates(const mf_inference_inputs *in, const char *sequence,
                                 mf_template_features *t)
{
    memset(t, 0, sizeof *t);
    MF_REQUIRE(in->template_mmcif_dir && in->template_mmcif_dir[0],
               "template hits %s: no template mmCIF directory given", in->template_hits);
    struct stat sb;
    if (stat(in->template_mmcif_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return MF_ERROR(MF_ERR_IO, "template mmCIF directory %s: not a directory",
                        in->template_mmcif_dir);
    const char *date = in->max_template_date;
    MF_REQUIRE(!date || !date[0] || mf_template_date_valid(date),
               "max template date '%s': expected YYYY-MM-DD", date);
    mf_hhr hhr;
    mf_status st = mf_hhr_read(in->template_hits, &hhr);
    if (st != MF_OK) return mf_error_context(st, "template hits");
    const mf_template_options to = {.mmcif_dir = in->template_mmcif_dir,
                                    .max_template_date = date,
                                    .max_templates = in->max_template_hits};
    st = mf_template_features_make(sequence, &hhr, &to, t);
    if (st != MF_OK) mf_error_context(st, "templates from %s", in->template_hits);
    mf_hhr_free(&hhr);
    return st;
}

mf_status mf_pipeline_inference_features_ex(const mf_fasta_record *record,
                                            const mf_inference_inputs *in,
                                            const mf_pipeline_options *opts, uint64_t seed,
                                            mf_processed_features *out,
                                            mf_template_features *templates)
{
    mf_processed_init(out);
    if (templates) memset(templates, 0, sizeof *templates);
    MF_REQUIRE(record && record->sequence && in && opts,
               "inference features: no FASTA record, inputs or options");
    const int num_msa_paths = in->num_msa_paths;
    MF_REQUIRE(num_msa_paths >= 0 && (num_msa_paths == 0 || in->msa_paths),
               "inference features: %d MSA paths", num_msa_paths);
    mf_status st = MF_OK;
    mf_msa *msas = calloc((size_t)(num_msa_paths > 0 ? num_msa_paths : 1), sizeof *msas);
    const mf_msa **list = calloc((size_t)(num_msa_paths > 0 ? num_msa_paths : 1), sizeof *list);
    mf_raw_chain raw = {0};
    mf_template_features tf = {0};
    if (!msas || !list) {
        st = MF_ERROR(MF_ERR_NOMEM, "inference features: out of memory");
        goto cleanup;
    }
    for (int k = 0; k < num_msa_paths; k++) {
        MF_TRY_GOTO(mf_msa_read(in->msa_paths[k], MF_MSA_AUTO, 0, &msas[k]));
        list[k] = &msas[k];
    }
    st = mf_raw_chain_from_query(record->sequence, list, num_msa_paths, &raw);
    if (st != MF_OK) {
        mf_error_context(st, "FASTA record '%s' (line %lld)", record->description,
                         (long long)record->line);
        goto cleanup;
    }
    if (in->template_hits) {
        /* raw.sequence: the FASTA letters as restypes (unknown -> X), the query the hits'
         * residues are mapped to. */
        MF_TRY_GOTO(query_templates(in, raw.sequence, &tf));
        MF_TRY_GOTO(mf_raw_chain_set_templates(&raw, &tf));
    }
    MF_TRY_GOTO(mf_pipeline_run(&raw, opts, seed, out));
    if (templates) {
        *templates = tf;
        memset(&tf, 0, sizeof tf);
    }
cleanup:
    for (int k = 0; msas && k < num_msa_paths; k++) mf_msa_free(&msas[k]);
    free(msas);
    free(list);
    mf_raw_chain_free(&raw);
    mf_template_features_free(&tf);
    if (st != MF_OK) mf_processed_free(out);
    return st;
}

mf_status mf_pipeline_inference_features(const mf_fasta_record *record,
                                         const char *const *msa_paths, int num_msa_paths,
                                         const mf_pipeline_options *opts, uint64_t seed,
                                         mf_processed_features *out)
{
    const mf_inference_inputs in = {.msa_paths = msa_paths, .num_msa_paths = num_msa_paths};
    return mf_pipeline_inference_features_ex(record, &in, opts, seed, out, NULL);
}
