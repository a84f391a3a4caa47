/* The head losses (see losses_simple.h). */
#include "model/losses_simple.h"

#include <math.h>
#include <stdio.h>

#include "memopt/arena.h"

#define MAX_BINS 1024
#define CA_INDEX 1 /* atom37 order: N, CA, C, ... */
#define ATOM37   37

/* ---- tensor access ------------------------------------------------------------------------ */

static inline double ld(const mf_tensor *t, int64_t i)
{
    return t->dtype == MF_F64 ? ((const double *)t->data)[i] : (double)((const float *)t->data)[i];
}

/* A value as AF2's float32 arithmetic sees it. */
static inline float ldf(const mf_tensor *t, int64_t i)
{
    return t->dtype == MF_F64 ? (float)((const double *)t->data)[i] : ((const float *)t->data)[i];
}

static inline void add_at(mf_tensor *t, int64_t i, double v)
{
    if (t->dtype == MF_F64)
        ((double *)t->data)[i] += v;
    else
        ((float *)t->data)[i] += (float)v;
}

/* A host f32/f64 tensor with exactly these dims (dims < 0 are free and returned in got). */
static mf_status check_host(const mf_tensor *t, const char *loss, const char *name, int ndim,
                            const int64_t *dims)
{
    MF_REQUIRE(t && t->data, "%s: %s is missing", loss, name);
    MF_REQUIRE(t->device == MF_DEV_CPU, "%s: %s must be a host (CPU) tensor", loss, name);
    MF_REQUIRE(t->dtype == MF_F32 || t->dtype == MF_F64, "%s: %s must be f32 or f64 (is %s)", loss,
               name, mf_dtype_name(t->dtype));
    bool ok = t->ndim == ndim;
    for (int k = 0; ok && k < ndim; k++) ok = dims[k] < 0 || t->shape[k] == dims[k];
    if (!ok) {
        char b[96], want[96];
        int len = snprintf(want, sizeof want, "[");
        for (int k = 0; k < ndim && len < (int)sizeof want; k++)
            len += snprintf(want + len, sizeof want - (size_t)len, dims[k] < 0 ? "%s*" : "%s%lld",
                            k ? ", " : "", (long long)dims[k]);
        if (len < (int)sizeof want) snprintf(want + len, sizeof want - (size_t)len, "]");
        return MF_ERROR(MF_ERR_INVALID, "%s: %s is %s, expected %s", loss, name,
                        mf_tensor_describe(t, b, sizeof b), want);
    }
    return MF_OK;
}
#define CHECK_HOST(t, loss, name, ndim, ...)                                                       \
    check_host((t), (loss), (name), (ndim), (const int64_t[MF_MAX_DIMS]){__VA_ARGS__})

static mf_status check_grad(const mf_tensor *dlogits, const mf_tensor *logits, const char *loss)
{
    MF_REQUIRE(dlogits && dlogits->data, "%s backward: dlogits is missing", loss);
    MF_REQUIRE(dlogits->device == MF_DEV_CPU && dlogits->dtype == logits->dtype &&
                   mf_tensor_same_shape(dlogits, logits),
               "%s backward: dlogits must be a host tensor of the logits' dtype and shape", loss);
    return MF_OK;
}

static mf_status check_bins_count(const char *loss, int64_t B, int64_t min_bins)
{
    MF_REQUIRE(B >= min_bins && B <= MAX_BINS, "%s: %lld bins (%lld..%d supported)", loss,
               (long long)B, (long long)min_bins, MAX_BINS);
    return MF_OK;
}

/* Per-row partial sums in arena scratch, added in row order (thread-count independent). */
static mf_status scratch_doubles(mf_ctx *ctx, const char *loss, int64_t n, double **out)
{
    MF_REQUIRE(ctx && ctx->arena, "%s: ctx and arena required", loss);
    MF_REQUIRE(ctx->arena->device == MF_DEV_CPU, "%s: needs a host arena for its scratch", loss);
    return mf_arena_alloc(ctx->arena, sizeof(double) * (size_t)(n > 0 ? n : 1), "losses.partial",
                          (void **)out);
}

static double ordered_sum(const double *v, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += v[i];
    return s;
}

/* ---- cross entropies ------------------------------------------------------------------------ */

double mf_softmax_cross_entropy_row(const double *x, int64_t n, int64_t label)
{
    double m = -INFINITY;
    for (int64_t b = 0; b < n; b++) m = fmax(m, x[b]);
    double z = 0;
    for (int64_t b = 0; b < n; b++) z += exp(x[b] - m);
    return m + log(z) - x[label];
}

double mf_sigmoid_cross_entropy(double x, double y)
{
    /* log sigmoid(x) = -(max(-x, 0) + log1p(exp(-|x|))), and log sigmoid(-x) likewise: AF2 uses
     * log_sigmoid(-x) for log(1 - sigmoid(x)) for stability. */
    const double l1pe = log1p(exp(-fabs(x)));
    const double log_p = -(fmax(-x, 0.0) + l1pe);
    const double log_not_p = -(fmax(x, 0.0) + l1pe);
    return -y * log_p - (1.0 - y) * log_not_p;
}

/* Softmax cross entropy of logits row [off, off + B) of t against label. */
static double ce_row(const mf_tensor *t, int64_t off, int64_t B, int64_t label)
{
    double m = -INFINITY;
    for (int64_t b = 0; b < B; b++) m = fmax(m, ld(t, off + b));
    double z = 0;
    for (int64_t b = 0; b < B; b++) z += exp(ld(t, off + b) - m);
    return m + log(z) - ld(t, off + label);
}

/* dt[off + b] += scale * (softmax_b - [b == label]). */
static void ce_row_backward(mf_tensor *dt, const mf_tensor *t, int64_t off, int64_t B,
                            int64_t label, double scale)
{
    if (scale == 0) return;
    double m = -INFINITY;
    for (int64_t b = 0; b < B; b++) m = fmax(m, ld(t, off + b));
    double z = 0;
    for (int64_t b = 0; b < B; b++) z += exp(ld(t, off + b) - m);
    for (int64_t b = 0; b < B; b++) {
        const double p = exp(ld(t, off + b) - m) / z;
        add_at(dt, off + b, scale * (p - (b == label ? 1.0 : 0.0)));
    }
}

/* ---- resolution filter ---------------------------------------------------------------------- */

mf_resolution_filter mf_resolution_filter_default(void)
{
    return (mf_resolution_filter){
        .filter_by_resolution = true, .min_resolution = 0.1, .max_resolution = 3.0};
}

double mf_resolution_weight(const mf_resolution_filter *f, float resolution)
{
    if (!f || !f->filter_by_resolution) return 1.0;
    return resolution >= (float)f->min_resolution && resolution <= (float)f->max_resolution ? 1.0
                                                                                            : 0.0;
}

/* ---- bins ----------------------------------------------------------------------------------- */

/* Squared edges of linspace(first, last, B - 1) in float32, as AF2 squares its float32 breaks. */
static void squared_edges(float *sq, int64_t B, double first, double last)
{
    const int64_t n = B - 1;
    for (int64_t k = 0; k < n; k++) {
        const float e =
            (float)(n > 1 ? first + (double)k * (last - first) / (double)(n - 1) : first);
        sq[k] = e * e;
    }
}

/* AF2: sum(dist2 > sq_breaks). */
static int32_t count_above(float d2, const float *sq, int64_t n)
{
    int32_t c = 0;
    for (int64_t k = 0; k < n; k++) c += d2 > sq[k];
    return c;
}

/* |x_i - x_j|^2 in float32 in AF2's order ((dx^2 + dy^2) + dz^2). */
static float dist2_f32(const mf_tensor *x, int64_t i, int64_t j)
{
    float s = 0;
    for (int c = 0; c < 3; c++) {
        const float d = ldf(x, 3 * i + c) - ldf(x, 3 * j + c);
        const float d2 = d * d;
        s = s + d2;
    }
    return s;
}

/* ---- distogram ---------------------------------------------------------------------------------
 */

typedef struct {
    int64_t N, B;
    float sq[MAX_BINS];
} dgram_setup;

static mf_status distogram_check(const char *loss, const mf_tensor *logits,
                                 const mf_tensor *pseudo_beta, const mf_tensor *mask,
                                 double first_break, double last_break, dgram_setup *s)
{
    MF_TRY(CHECK_HOST(logits, loss, "logits [N, N, bins]", 3, -1, -1, -1));
    s->N = logits->shape[0], s->B = logits->shape[2];
    MF_REQUIRE(logits->shape[1] == s->N, "%s: logits must be [N, N, bins]", loss);
    MF_TRY(check_bins_count(loss, s->B, 2));
    MF_TRY(CHECK_HOST(pseudo_beta, loss, "pseudo_beta [N, 3]", 2, s->N, 3));
    MF_TRY(CHECK_HOST(mask, loss, "pseudo_beta_mask [N]", 1, s->N));
    MF_REQUIRE(first_break < last_break || s->B == 2, "%s: first_break %g >= last_break %g", loss,
               first_break, last_break);
    squared_edges(s->sq, s->B, first_break, last_break);
    return MF_OK;
}

/* sum_ij m_i m_j over the pair mask (AF2's denominator before its epsilon). */
static double pair_mask_sum(const mf_tensor *mask, int64_t N)
{
    double s = 0;
    for (int64_t i = 0; i < N; i++) s += ld(mask, i);
    return s * s;
}

mf_status mf_distogram_true_bins(mf_tensor *bins, const mf_tensor *pseudo_beta, int64_t num_bins,
                                 double first_break, double last_break)
{
    const char *loss = "distogram true bins";
    MF_TRY(check_bins_count(loss, num_bins, 2));
    MF_TRY(CHECK_HOST(pseudo_beta, loss, "pseudo_beta [N, 3]", 2, -1, 3));
    const int64_t N = pseudo_beta->shape[0];
    MF_REQUIRE(bins && bins->data && bins->dtype == MF_I32 && bins->device == MF_DEV_CPU &&
                   mf_tensor_numel(bins) == N * N,
               "%s: bins must be a host i32 tensor of %lld elements", loss, (long long)(N * N));
    float sq[MAX_BINS];
    squared_edges(sq, num_bins, first_break, last_break);
    int32_t *b = bins->data;
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < N; j++)
            b[i * N + j] = count_above(dist2_f32(pseudo_beta, i, j), sq, num_bins - 1);
    return MF_OK;
}

mf_status mf_distogram_loss(mf_ctx *ctx, double *loss, const mf_tensor *logits,
                            const mf_tensor *pseudo_beta, const mf_tensor *pseudo_beta_mask,
                            double first_break, double last_break)
{
    const char *name = "distogram loss";
    MF_REQUIRE(loss, "%s: output pointer missing", name);
    dgram_setup s;
    MF_TRY(
        distogram_check(name, logits, pseudo_beta, pseudo_beta_mask, first_break, last_break, &s));
    const int64_t N = s.N, B = s.B;
    double *partial = NULL;
    MF_REQUIRE(ctx && ctx->arena, "%s: ctx and arena required", name);
    const mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    MF_TRY(scratch_doubles(ctx, name, N, &partial));
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++) {
        double acc = 0;
        const double mi = ld(pseudo_beta_mask, i);
        for (int64_t j = 0; j < N && mi != 0; j++) {
            const double w = mi * ld(pseudo_beta_mask, j);
            if (w == 0) continue;
            const int32_t bin = count_above(dist2_f32(pseudo_beta, i, j), s.sq, B - 1);
            acc += w * ce_row(logits, (i * N + j) * B, B, bin);
        }
        partial[i] = acc;
    }
    /* AF2: sum(errors * square_mask) / (1e-6 + sum(square_mask)). */
    *loss = ordered_sum(partial, N) / (1e-6 + pair_mask_sum(pseudo_beta_mask, N));
    mf_arena_release(ctx->arena, mark);
    return MF_OK;
}

mf_status mf_distogram_loss_backward(mf_ctx *ctx, mf_tensor *dlogits, double dloss,
                                     const mf_tensor *logits, const mf_tensor *pseudo_beta,
                                     const mf_tensor *pseudo_beta_mask, double first_break,
                                     double last_break)
{
    const char *name = "distogram loss";
    (void)ctx;
    dgram_setup s;
    MF_TRY(
        distogram_check(name, logits, pseudo_beta, pseudo_beta_mask, first_break, last_break, &s));
    MF_TRY(check_grad(dlogits, logits, name));
    const int64_t N = s.N, B = s.B;
    const double scale = dloss / (1e-6 + pair_mask_sum(pseudo_beta_mask, N));
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++) {
        const double mi = ld(pseudo_beta_mask, i);
        for (int64_t j = 0; j < N && mi != 0; j++) {
            const double w = mi * ld(pseudo_beta_mask, j);
            if (w == 0) continue;
            const int32_t bin = count_above(dist2_f32(pseudo_beta, i, j), s.sq, B - 1);
            ce_row_backward(dlogits, logits, (i * N + j) * B, B, bin, scale * w);
        }
    }
    return MF_OK;
}

/* ---- masked MSA ----------------------------------------------------------------------------- */

static mf_status masked_msa_check(const char *loss, const mf_tensor *logits,
                                  const mf_tensor *true_msa, const mf_tensor *bert_mask)
{
    MF_TRY(CHECK_HOST(logits, loss, "logits [S, N, classes]", 3, -1, -1, -1));
    const int64_t S = logits->shape[0], N = logits->shape[1], C = logits->shape[2];
    MF_TRY(check_bins_count(loss, C, 1));
    MF_TRY(CHECK_HOST(bert_mask, loss, "bert_mask [S, N]", 2, S, N));
    MF_REQUIRE(
        true_msa && true_msa->data && true_msa->dtype == MF_I32 && true_msa->device == MF_DEV_CPU &&
            true_msa->ndim == 2 && true_msa->shape[0] == S && true_msa->shape[1] == N,
        "%s: true_msa must be a host i32 tensor [%lld, %lld]", loss, (long long)S, (long long)N);
    const int32_t *t = true_msa->data;
    for (int64_t k = 0; k < S * N; k++)
        MF_REQUIRE(t[k] >= 0 && t[k] < C, "%s: true_msa[%lld, %lld] = %d is not a class 0..%lld",
                   loss, (long long)(k / N), (long long)(k % N), t[k], (long long)(C - 1));
    return MF_OK;
}

static double mask_sum(const mf_tensor *m, int64_t n)
{
    double s = 0;
    for (int64_t k = 0; k < n; k++) s += ld(m, k);
    return s;
}

mf_status mf_masked_msa_loss(mf_ctx *ctx, double *loss, const mf_tensor *logits,
                             const mf_tensor *true_msa, const mf_tensor *bert_mask)
{
    const char *name = "masked MSA loss";
    MF_REQUIRE(loss, "%s: output pointer missing", name);
    MF_TRY(masked_msa_check(name, logits, true_msa, bert_mask));
    const int64_t S = logits->shape[0], N = logits->shape[1], C = logits->shape[2];
    const int32_t *t = true_msa->data;
    double *partial = NULL;
    MF_REQUIRE(ctx && ctx->arena, "%s: ctx and arena required", name);
    const mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    MF_TRY(scratch_doubles(ctx, name, S, &partial));
#pragma omp parallel for schedule(static)
    for (int64_t s = 0; s < S; s++) {
        double acc = 0;
        for (int64_t i = 0; i < N; i++) {
            const double w = ld(bert_mask, s * N + i);
            if (w != 0) acc += w * ce_row(logits, (s * N + i) * C, C, t[s * N + i]);
        }
        partial[s] = acc;
    }
    /* AF2: sum(errors * bert_mask) / (1e-8 + sum(bert_mask)). */
    *loss = ordered_sum(partial, S) / (1e-8 + mask_sum(bert_mask, S * N));
    mf_arena_release(ctx->arena, mark);
    return MF_OK;
}

mf_status mf_masked_msa_loss_backward(mf_ctx *ctx, mf_tensor *dlogits, double dloss,
                                      const mf_tensor *logits, const mf_tensor *true_msa,
                                      const mf_tensor *bert_mask)
{
    const char *name = "masked MSA loss";
    (void)ctx;
    MF_TRY(masked_msa_check(name, logits, true_msa, bert_mask));
    MF_TRY(check_grad(dlogits, logits, name));
    const int64_t S = logits->shape[0], N = logits->shape[1], C = logits->shape[2];
    const int32_t *t = true_msa->data;
    const double scale = dloss / (1e-8 + mask_sum(bert_mask, S * N));
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < S * N; r++) {
        const double w = ld(bert_mask, r);
        if (w != 0) ce_row_backward(dlogits, logits, r * C, C, t[r], scale * w);
    }
    return MF_OK;
}

/* ---- pLDDT
 * --------------------------------------------------------------------------------------- */

mf_plddt_loss_options mf_plddt_loss_options_default(void)
{
    return (mf_plddt_loss_options){.cutoff = 15.0, .resolution = mf_resolution_filter_default()};
}

/* Points of an f32/f64 array: point k at data[k * stride + off + c]. */
typedef struct {
    const void *data;
    mf_dtype dtype;
    int64_t stride, off;
} points;

static inline float pget(const points *p, int64_t k, int c)
{
    const int64_t i = k * p->stride + p->off + c;
    return p->dtype == MF_F64 ? (float)((const double *)p->data)[i] : ((const float *)p->data)[i];
}

/* AF2 lddt.lddt(per_residue=True) for residue i, in its float32 arithmetic (one rounding per
 * operation, each in its own statement so nothing is contracted into a fused multiply-add):
 * *count = sum of scored pairs, *sum = sum of their scores. */
static void lddt_sums(int64_t i, int64_t N, float cutoff, const points *pred, const points *truth,
                      const points *mask, float *count_out, float *sum_out)
{
    float count = 0, sum = 0;
    const float mi = pget(mask, i, 0);
    for (int64_t j = 0; j < N; j++) {
        if (j == i) continue; /* (1 - eye): no self-interaction */
        float dt2 = 0, dp2 = 0;
        for (int c = 0; c < 3; c++) {
            const float a = pget(truth, i, c) - pget(truth, j, c);
            const float a2 = a * a;
            dt2 = dt2 + a2;
            const float b = pget(pred, i, c) - pget(pred, j, c);
            const float b2 = b * b;
            dp2 = dp2 + b2;
        }
        const float dt = sqrtf(1e-10f + dt2);
        const float dp = sqrtf(1e-10f + dp2);
        const float mij = mi * pget(mask, j, 0);
        const float to_score = (dt < cutoff ? 1.0f : 0.0f) * mij;
        const float l1 = fabsf(dt - dp);
        const float hits =
            (float)(l1 < 0.5f) + (float)(l1 < 1.0f) + (float)(l1 < 2.0f) + (float)(l1 < 4.0f);
        const float score = 0.25f * hits;
        const float scored = to_score * score;
        count = count + to_score;
        sum = sum + scored;
    }
    *count_out = count;
    *sum_out = sum;
}

/* AF2: norm = 1 / (1e-10 + count), lddt = norm * (1e-10 + sum), float32. */
static float lddt_of(float count, float sum)
{
    const float norm = 1.0f / (1e-10f + count);
    const float total = 1e-10f + sum;
    return norm * total;
}

void mf_plddt_target_lddt_ca(float *lddt, const float *pred_ca, const float *true_ca,
                             const float *mask, int64_t N, float cutoff)
{
    const points pred = {pred_ca, MF_F32, 3, 0}, truth = {true_ca, MF_F32, 3, 0};
    const points m = {mask, MF_F32, 1, 0};
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++) {
        float count, sum;
        lddt_sums(i, N, cutoff, &pred, &truth, &m, &count, &sum);
        lddt[i] = lddt_of(count, sum);
    }
}

/* The bin of floor(bins * lddt), clipped to bins - 1 (lDDT = 1). With 0/1 masks the count is an
 * integer and the sum a multiple of 1/4, both exact in float32, and the bin is taken from them
 * exactly: floor(bins * 4 sum / (4 count)) in integers. That is the value of AF2's formula
 * (1e-10 + sum) / (1e-10 + count) with its epsilons, which lies just above an exact tie k / bins,
 * so ties go to the upper bin; AF2's float32 rounding can land just below instead (count 25,
 * sum 2.5: 50 * lDDT = 4.9999995). Elsewhere the two agree: off a tie, bins * sum / count is at
 * least 1 / (4 count) from an integer, far beyond float32 rounding (~1e-5 here) for counts below
 * ~25 000. No pair scored: lDDT = 1,
 * the last bin. Fractional masks fall back to floor(bins * lDDT) in AF2's float32 arithmetic. */
static int32_t plddt_bin(float count, float sum, int64_t num_bins)
{
    const float q = 4.0f * sum;
    const bool exact = count >= 0 && count < 16777216.0f && count == floorf(count) &&
                       q == floorf(q) && q <= 4.0f * count;
    int64_t b;
    if (exact && count == 0) {
        b = num_bins - 1;
    } else if (exact) {
        b = ((int64_t)num_bins * (int64_t)q) / (4 * (int64_t)count);
    } else {
        const float x = lddt_of(count, sum) * (float)num_bins;
        b = (int64_t)floorf(x);
    }
    if (b > num_bins - 1) b = num_bins - 1;
    if (b < 0) b = 0;
    return (int32_t)b;
}

static mf_status plddt_positions_check(const char *loss, int64_t N, const mf_tensor *pred,
                                       const mf_tensor *truth, const mf_tensor *mask)
{
    MF_TRY(CHECK_HOST(pred, loss, "pred_positions [N, 37, 3]", 3, N, ATOM37, 3));
    MF_TRY(CHECK_HOST(truth, loss, "true_positions [N, 37, 3]", 3, N, ATOM37, 3));
    MF_TRY(CHECK_HOST(mask, loss, "all_atom_mask [N, 37]", 2, N, ATOM37));
    return MF_OK;
}

static void plddt_bins_raw(int32_t *bins, const mf_tensor *pred_positions,
                           const mf_tensor *true_positions, const mf_tensor *all_atom_mask,
                           int64_t N, int64_t num_bins, float cutoff)
{
    const points pred = {pred_positions->data, pred_positions->dtype, ATOM37 * 3, CA_INDEX * 3};
    const points truth = {true_positions->data, true_positions->dtype, ATOM37 * 3, CA_INDEX * 3};
    const points m = {all_atom_mask->data, all_atom_mask->dtype, ATOM37, CA_INDEX};
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++) {
        float count, sum;
        lddt_sums(i, N, cutoff, &pred, &truth, &m, &count, &sum);
        bins[i] = plddt_bin(count, sum, num_bins);
    }
}

mf_status mf_plddt_target_bins(mf_tensor *bins, const mf_tensor *pred_positions,
                               const mf_tensor *true_positions, const mf_tensor *all_atom_mask,
                               int64_t num_bins, double cutoff)
{
    const char *loss = "pLDDT targets";
    MF_TRY(check_bins_count(loss, num_bins, 1));
    MF_REQUIRE(bins && bins->data && bins->dtype == MF_I32 && bins->device == MF_DEV_CPU &&
                   bins->ndim == 1,
               "%s: bins must be a host i32 tensor [N]", loss);
    const int64_t N = bins->shape[0];
    MF_TRY(plddt_positions_check(loss, N, pred_positions, true_positions, all_atom_mask));
    plddt_bins_raw(bins->data, pred_positions, true_positions, all_atom_mask, N, num_bins,
                   (float)cutoff);
    return MF_OK;
}

static mf_status plddt_check(const char *loss, const mf_tensor *logits, const mf_tensor *pred,
                             const mf_tensor *truth, const mf_tensor *mask,
                             const mf_plddt_loss_options *opt)
{
    MF_REQUIRE(opt, "%s: options missing", loss);
    MF_TRY(CHECK_HOST(logits, loss, "logits [N, bins]", 2, -1, -1));
    MF_TRY(check_bins_count(loss, logits->shape[1], 1));
    return plddt_positions_check(loss, logits->shape[0], pred, truth, mask);
}

static double ca_mask_sum(const mf_tensor *all_atom_mask, int64_t N)
{
    double s = 0;
    for (int64_t i = 0; i < N; i++) s += ld(all_atom_mask, i * ATOM37 + CA_INDEX);
    return s;
}

mf_status mf_plddt_loss(mf_ctx *ctx, double *loss, const mf_tensor *logits,
                        const mf_tensor *pred_positions, const mf_tensor *true_positions,
                        const mf_tensor *all_atom_mask, float resolution,
                        const mf_plddt_loss_options *opt)
{
    const char *name = "pLDDT loss";
    MF_REQUIRE(loss, "%s: output pointer missing", name);
    MF_TRY(plddt_check(name, logits, pred_positions, true_positions, all_atom_mask, opt));
    const int64_t N = logits->shape[0], B = logits->shape[1];
    MF_REQUIRE(ctx && ctx->arena && ctx->arena->device == MF_DEV_CPU,
               "%s: ctx with a host arena required", name);
    const mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    int32_t *bins = NULL;
    mf_status st = MF_OK;
    MF_TRY_GOTO(mf_arena_alloc(ctx->arena, sizeof(int32_t) * (size_t)(N > 0 ? N : 1),
                               "plddt_loss.bins", (void **)&bins));
    /* The target is a stop-gradient function of the predicted positions (AF2). */
    plddt_bins_raw(bins, pred_positions, true_positions, all_atom_mask, N, B, (float)opt->cutoff);
    double acc = 0;
    for (int64_t i = 0; i < N; i++) {
        const double w = ld(all_atom_mask, i * ATOM37 + CA_INDEX);
        if (w != 0) acc += w * ce_row(logits, i * B, B, bins[i]);
    }
    /* AF2: sum(errors * mask_ca) / (sum(mask_ca) + 1e-8), times the resolution filter. */
    *loss = acc / (ca_mask_sum(all_atom_mask, N) + 1e-8) *
            mf_resolution_weight(&opt->resolution, resolution);
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

mf_status mf_plddt_loss_backward(mf_ctx *ctx, mf_tensor *dlogits, double dloss,
                                 const mf_tensor *logits, const mf_tensor *pred_positions,
                                 const mf_tensor *true_positions, const mf_tensor *all_atom_mask,
                                 float resolution, const mf_plddt_loss_options *opt)
{
    const char *name = "pLDDT loss";
    MF_TRY(plddt_check(name, logits, pred_positions, true_positions, all_atom_mask, opt));
    MF_TRY(check_grad(dlogits, logits, name));
    const int64_t N = logits->shape[0], B = logits->shape[1];
    const double scale = dloss * mf_resolution_weight(&opt->resolution, resolution) /
                         (ca_mask_sum(all_atom_mask, N) + 1e-8);
    if (scale == 0) return MF_OK;
    MF_REQUIRE(ctx && ctx->arena && ctx->arena->device == MF_DEV_CPU,
               "%s: ctx with a host arena required", name);
    const mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    int32_t *bins = NULL;
    mf_status st = MF_OK;
    MF_TRY_GOTO(mf_arena_alloc(ctx->arena, sizeof(int32_t) * (size_t)(N > 0 ? N : 1),
                               "plddt_loss.bins", (void **)&bins));
    plddt_bins_raw(bins, pred_positions, true_positions, all_atom_mask, N, B, (float)opt->cutoff);
    for (int64_t i = 0; i < N; i++) {
        const double w = ld(all_atom_mask, i * ATOM37 + CA_INDEX);
        if (w != 0) ce_row_backward(dlogits, logits, i * B, B, bins[i], scale * w);
    }
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

/* ---- experimentally resolved ---------------------------------------------------------------- */

static mf_status exp_resolved_check(const char *loss, const mf_tensor *logits,
                                    const mf_tensor *all_atom_mask, const mf_tensor *exists)
{
    MF_TRY(CHECK_HOST(logits, loss, "logits [N, 37]", 2, -1, -1));
    const int64_t N = logits->shape[0], A = logits->shape[1];
    MF_TRY(CHECK_HOST(all_atom_mask, loss, "all_atom_mask [N, 37]", 2, N, A));
    MF_TRY(CHECK_HOST(exists, loss, "atom37_atom_exists [N, 37]", 2, N, A));
    return MF_OK;
}

mf_status mf_experimentally_resolved_loss(mf_ctx *ctx, double *loss, const mf_tensor *logits,
                                          const mf_tensor *all_atom_mask,
                                          const mf_tensor *atom37_atom_exists, float resolution,
                                          const mf_resolution_filter *filter)
{
    const char *name = "experimentally resolved loss";
    (void)ctx;
    MF_REQUIRE(loss, "%s: output pointer missing", name);
    MF_TRY(exp_resolved_check(name, logits, all_atom_mask, atom37_atom_exists));
    const int64_t n = mf_tensor_numel(logits);
    double acc = 0;
    for (int64_t k = 0; k < n; k++) {
        const double w = ld(atom37_atom_exists, k);
        if (w != 0) acc += w * mf_sigmoid_cross_entropy(ld(logits, k), ld(all_atom_mask, k));
    }
    /* AF2: sum(xent * atom_exists) / (1e-8 + sum(atom_exists)), times the resolution filter. */
    *loss =
        acc / (1e-8 + mask_sum(atom37_atom_exists, n)) * mf_resolution_weight(filter, resolution);
    return MF_OK;
}

mf_status mf_experimentally_resolved_loss_backward(mf_ctx *ctx, mf_tensor *dlogits, double dloss,
                                                   const mf_tensor *logits,
                                                   const mf_tensor *all_atom_mask,
                                                   const mf_tensor *atom37_atom_exists,
                                                   float resolution,
                                                   const mf_resolution_filter *filter)
{
    const char *name = "experimentally resolved loss";
    (void)ctx;
    MF_TRY(exp_resolved_check(name, logits, all_atom_mask, atom37_atom_exists));
    MF_TRY(check_grad(dlogits, logits, name));
    const int64_t n = mf_tensor_numel(logits);
    const double scale =
        dloss * mf_resolution_weight(filter, resolution) / (1e-8 + mask_sum(atom37_atom_exists, n));
    if (scale == 0) return MF_OK;
    for (int64_t k = 0; k < n; k++) {
        const double w = ld(atom37_atom_exists, k);
        if (w == 0) continue;
        const double x = ld(logits, k);
        /* d/dx of the sigmoid cross entropy: sigmoid(x) - y (stable for either sign of x). */
        const double sig = x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
        add_at(dlogits, k, scale * w * (sig - ld(all_atom_mask, k)));
    }
    return MF_OK;
}

/* ---- TM / aligned error ---------------------------------------------------------------------- */

typedef struct {
    int64_t N, B;
    float sq[MAX_BINS];
} tm_setup;

static mf_status frames_check(const char *loss, int64_t N, const mf_tensor *pred_rot,
                              const mf_tensor *pred_trans, const mf_tensor *true_rot,
                              const mf_tensor *true_trans)
{
    MF_TRY(CHECK_HOST(pred_rot, loss, "pred_rot [N, 3, 3]", 3, N, 3, 3));
    MF_TRY(CHECK_HOST(pred_trans, loss, "pred_trans [N, 3]", 2, N, 3));
    MF_TRY(CHECK_HOST(true_rot, loss, "true_rot [N, 3, 3]", 3, N, 3, 3));
    MF_TRY(CHECK_HOST(true_trans, loss, "true_trans [N, 3]", 2, N, 3));
    return MF_OK;
}

static mf_status tm_check(const char *loss, const mf_tensor *logits, const mf_tensor *pred_rot,
                          const mf_tensor *pred_trans, const mf_tensor *true_rot,
                          const mf_tensor *true_trans, const mf_tensor *mask, double max_error_bin,
                          tm_setup *s)
{
    MF_TRY(CHECK_HOST(logits, loss, "logits [N, N, bins]", 3, -1, -1, -1));
    s->N = logits->shape[0], s->B = logits->shape[2];
    MF_REQUIRE(logits->shape[1] == s->N, "%s: logits must be [N, N, bins]", loss);
    MF_TRY(check_bins_count(loss, s->B, 3));
    MF_TRY(frames_check(loss, s->N, pred_rot, pred_trans, true_rot, true_trans));
    MF_TRY(CHECK_HOST(mask, loss, "backbone_mask [N]", 1, s->N));
    MF_REQUIRE(max_error_bin > 0, "%s: max_error_bin %g must be > 0", loss, max_error_bin);
    squared_edges(s->sq, s->B, 0.0, max_error_bin);
    return MF_OK;
}

/* R_i^T (t_j - t_i), AF2 QuatAffine.invert_point in float32 (rows of R^T = columns of R). */
static void local_point(float *out, const mf_tensor *rot, const mf_tensor *trans, int64_t i,
                        int64_t j)
{
    float v[3];
    for (int c = 0; c < 3; c++) v[c] = ldf(trans, 3 * j + c) - ldf(trans, 3 * i + c);
    for (int b = 0; b < 3; b++) {
        const float p0 = ldf(rot, 9 * i + 0 + b) * v[0];
        const float p1 = ldf(rot, 9 * i + 3 + b) * v[1];
        const float p2 = ldf(rot, 9 * i + 6 + b) * v[2];
        const float s01 = p0 + p1;
        out[b] = s01 + p2;
    }
}

static int32_t tm_bin(const mf_tensor *pred_rot, const mf_tensor *pred_trans,
                      const mf_tensor *true_rot, const mf_tensor *true_trans, int64_t i, int64_t j,
                      const float *sq, int64_t n_edges)
{
    float a[3], b[3];
    local_point(a, pred_rot, pred_trans, i, j);
    local_point(b, true_rot, true_trans, i, j);
    float e2 = 0;
    for (int c = 0; c < 3; c++) {
        const float d = a[c] - b[c];
        const float d2 = d * d;
        e2 = e2 + d2;
    }
    return count_above(e2, sq, n_edges);
}

mf_status mf_tm_true_bins(mf_tensor *bins, const mf_tensor *pred_rot, const mf_tensor *pred_trans,
                          const mf_tensor *true_rot, const mf_tensor *true_trans, int64_t num_bins,
                          double max_error_bin)
{
    const char *loss = "aligned-error true bins";
    MF_TRY(check_bins_count(loss, num_bins, 3));
    MF_REQUIRE(max_error_bin > 0, "%s: max_error_bin %g must be > 0", loss, max_error_bin);
    MF_REQUIRE(pred_rot && pred_rot->ndim == 3, "%s: pred_rot must be [N, 3, 3]", loss);
    const int64_t N = pred_rot->shape[0];
    MF_TRY(frames_check(loss, N, pred_rot, pred_trans, true_rot, true_trans));
    MF_REQUIRE(bins && bins->data && bins->dtype == MF_I32 && bins->device == MF_DEV_CPU &&
                   mf_tensor_numel(bins) == N * N,
               "%s: bins must be a host i32 tensor of %lld elements", loss, (long long)(N * N));
    float sq[MAX_BINS];
    squared_edges(sq, num_bins, 0.0, max_error_bin);
    int32_t *b = bins->data;
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < N; j++)
            b[i * N + j] =
                tm_bin(pred_rot, pred_trans, true_rot, true_trans, i, j, sq, num_bins - 1);
    return MF_OK;
}

mf_status mf_tm_loss(mf_ctx *ctx, double *loss, const mf_tensor *logits, const mf_tensor *pred_rot,
                     const mf_tensor *pred_trans, const mf_tensor *true_rot,
                     const mf_tensor *true_trans, const mf_tensor *backbone_mask,
                     double max_error_bin, float resolution, const mf_resolution_filter *filter)
{
    const char *name = "TM loss";
    MF_REQUIRE(loss, "%s: output pointer missing", name);
    tm_setup s;
    MF_TRY(tm_check(name, logits, pred_rot, pred_trans, true_rot, true_trans, backbone_mask,
                    max_error_bin, &s));
    const int64_t N = s.N, B = s.B;
    double *partial = NULL;
    MF_REQUIRE(ctx && ctx->arena, "%s: ctx and arena required", name);
    const mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    MF_TRY(scratch_doubles(ctx, name, N, &partial));
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++) {
        double acc = 0;
        const double mi = ld(backbone_mask, i);
        for (int64_t j = 0; j < N && mi != 0; j++) {
            const double w = mi * ld(backbone_mask, j);
            if (w == 0) continue;
            const int32_t bin =
                tm_bin(pred_rot, pred_trans, true_rot, true_trans, i, j, s.sq, B - 1);
            acc += w * ce_row(logits, (i * N + j) * B, B, bin);
        }
        partial[i] = acc;
    }
    /* AF2: sum(errors * square_mask) / (1e-8 + sum(square_mask)), times the resolution filter. */
    *loss = ordered_sum(partial, N) / (1e-8 + pair_mask_sum(backbone_mask, N)) *
            mf_resolution_weight(filter, resolution);
    mf_arena_release(ctx->arena, mark);
    return MF_OK;
}

mf_status mf_tm_loss_backward(mf_ctx *ctx, mf_tensor *dlogits, double dloss,
                              const mf_tensor *logits, const mf_tensor *pred_rot,
                              const mf_tensor *pred_trans, const mf_tensor *true_rot,
                              const mf_tensor *true_trans, const mf_tensor *backbone_mask,
                              double max_error_bin, float resolution,
                              const mf_resolution_filter *filter)
{
    const char *name = "TM loss";
    (void)ctx;
    tm_setup s;
    MF_TRY(tm_check(name, logits, pred_rot, pred_trans, true_rot, true_trans, backbone_mask,
                    max_error_bin, &s));
    MF_TRY(check_grad(dlogits, logits, name));
    const int64_t N = s.N, B = s.B;
    const double scale =
        dloss * mf_resolution_weight(filter, resolution) / (1e-8 + pair_mask_sum(backbone_mask, N));
    if (scale == 0) return MF_OK;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++) {
        const double mi = ld(backbone_mask, i);
        for (int64_t j = 0; j < N && mi != 0; j++) {
            const double w = mi * ld(backbone_mask, j);
            if (w == 0) continue;
            const int32_t bin =
                tm_bin(pred_rot, pred_trans, true_rot, true_trans, i, j, s.sq, B - 1);
            ce_row_backward(dlogits, logits, (i * N + j) * B, B, bin, scale * w);
        }
    }
    return MF_OK;
}
