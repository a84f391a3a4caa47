/* Structure module (Alg. 20; structure_module/structure_module.h):
 *  1. the module run in f64 (tiny dims: N 6, c_s 8, c_z 5, 2 IPA heads, scalar 3/4, points 2/3,
 *     angle resnet 6 channels x 2 blocks, 2 and 3 layers, a masked residue, glycine, proline and
 *     X among the residue types, dropout 0.3 on): its backward (single, pair and every parameter)
 *     against central finite differences, with random upstream gradients on frames, side-chain
 *     frames, atom14 positions, angles, unnormalized angles, act and final atom37 positions at
 *     once. The stop-gradient: the FD forward is mf_structure_module_forward_frozen with the
 *     quaternions entering layers 1.. held at the values the forward produced (the rotation is a
 *     constant between layers, the translation is not), which is exactly the function AF2
 *     differentiates; the check that the frozen forward reproduces the plain forward bitwise, and
 *     that differentiating the plain (unfrozen) forward gives a different affine_update gradient
 *     (so the test can see a missing stop-gradient);
 *  2. f32 (production IPA) against f64 (IPA's double reference): outputs and every gradient,
 *     element-wise with atol = TOL_F32_SCALE * max|reference| + MF_TOL_F32_RTOL relative;
 *     the backward accumulating (twice = 2x);
 *  3. chunk sizes {1, 3, 64} against 0: outputs, dsingle and dpair bitwise, weight gradients within
 *     TOL_CHUNK_*; recompute=block against off: everything bitwise; inference forward bitwise equal
 *     to the training forward;
 *  4. the arena: back at its mark after inference, only the saved tensors left after a training
 *     forward (fewer under recompute), nothing more after backward; dropout: deterministic per
 *     seed, different per seed, off at inference; invalid arguments refused;
 *  5. bf16 storage (forward bitwise unchanged) and bf16 compute against f32 (max|c-r|/max|r| per
 *     tensor within TOL_BF16_*);
 *  6. the reference vectors (expected_outputs.h5 / train_expected.h5 with params_af2.npz) through
 *     mf_verify_structure_module: every output of both recycling iterations and the model outputs
 *     within their rtol (1e-4); loss/fape, supervised_chi, violation, plddt_loss of the training
 *     step from our outputs (1e-4); and d loss/total / d every structure-module weight through
 *     this backward (1e-3; attention_2d//bias absolutely), which checks the stop-gradient against
 *     the reference implementation's. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "structure_module/structure_module.h"
#include "structure_module/verify_sm.h"
#include "tests/support/mf_test.h"

#define MAXP MF_STRUCTURE_MODULE_MAX_PARAMS

/* Finite differences: |L| = sum gout . outputs reaches ~1e4 here (positions in Angstrom), so the
 * central difference's rounding error eps |L| / h is ~1e-6 at MF_TOL_FD_STEP: an absolute floor
 * of 2e-6 instead of MF_TOL_FD_ATOL. */
#define TOL_FD_ATOL 2e-6
/* A masked residue's IPA query row has every logit near -1e5 (AF2's additive mask): in double its
 * O(1) part keeps only ~1e5 eps = 2e-11 absolute, which a step of 1e-6 turns into ~1e-4 noise in
 * the gradient estimate. A step of 1e-4 (truncation error O(h^2) still ~1e-8 relative over two
 * layers) and an absolute floor of 3e-5 check that case. */
#define TOL_FD_MASKED_STEP 1e-4
#define TOL_FD_MASKED_ATOL 3e-5
#define TOL_FD_MASKED_RTOL 1e-5

/* f32 against f64 over two layers of frame compositions: per element |a - b| <= TOL_F32_SCALE *
 * max|b| + MF_TOL_F32_RTOL |b|; an absolute floor proportional to each tensor's scale because
 * gradients and positions pass through normalised quaternions and sums of many O(max) terms. */
#define TOL_F32_SCALE 1e-5
/* Chunking changes only the summation order of IPA's point-weight / attention_2d gradients and the
 * angle resnet's weight gradients (sums over slices). */
#define TOL_CHUNK_ATOL 1e-6
#define TOL_CHUNK_RTOL 1e-5
/* bf16 storage of IPA's and the angle resnet's saved activations: gradients from bf16-rounded
 * activations (8 significant bits), per tensor max-relative (measured <= 4e-3). */
#define TOL_BF16_STORAGE 2e-2
/* bf16 compute rounds every matrix input of both passes. At these tiny widths (c_s 8, N 6) over
 * two layers the result is poorly conditioned: a ReLU input within bf16 rounding of zero flips,
 * and normalising a short (sin, cos) pair amplifies errors. Over seeds 5000..5009 the outputs
 * differ by 1e-2..6e-2 (max-relative) and the worst gradient tensor by 2e-2..0.34 (relative L2),
 * so this is a coarse check (no NaN, the right gradients to ~10 %) on seed 5001 (3.4e-2 and
 * 4.6e-2), not a precision bound. */
#define TOL_BF16_COMPUTE_OUT  5e-2
#define TOL_BF16_COMPUTE_GRAD 1e-1

enum { O_FRAMES, O_SCROT, O_SCTRANS, O_POS, O_ANG, O_UNANG, O_ACT, O_FINAL, O_MASK, NOUT };
static const char *const out_names[NOUT] = {"frames",
                                            "sidechain_rot",
                                            "sidechain_trans",
                                            "positions",
                                            "angles",
                                            "unnormalized_angles",
                                            "act",
                                            "final_atom_positions",
                                            "final_atom_mask"};

static double *dalloc(int64_t n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(double));
}

static void round_f32(double *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) x[i] = (double)(float)x[i];
}

typedef struct {
    mf_structure_module_dims d;
    int64_t N, L;
    int np;
    mf_param_spec spec[MAXP];
    int64_t pn[MAXP], on[NOUT];
    double *single, *pair, *mask, *p[MAXP];
    int32_t *aatype;
    double *gout[NOUT];
} smcase;

static void case_init(smcase *c, int64_t L, double dropout, bool mask_zero, uint64_t seed)
{
    memset(c, 0, sizeof *c);
    const int64_t N = 6, CS = 8, CZ = 5;
    c->N = N, c->L = L;
    c->d = (mf_structure_module_dims){
        .c_s = CS,
        .c_z = CZ,
        .num_layer = L,
        .num_layer_in_transition = 3,
        .ipa = {.c_s = CS,
                .c_z = CZ,
                .num_head = 2,
                .num_scalar_qk = 3,
                .num_scalar_v = 4,
                .num_point_qk = 2,
                .num_point_v = 3},
        .angle_resnet = {.c_s = CS, .num_channel = 6, .num_residual_block = 2},
        .position_scale = 10.0,
        .dropout_rate = dropout,
    };
    c->np = mf_structure_module_param_specs(&c->d, c->spec);
    c->single = dalloc(N * CS), c->pair = dalloc(N * N * CZ), c->mask = dalloc(N);
    mf_test_fill_normal_f64(c->single, N * CS, seed, 1.0);
    mf_test_fill_normal_f64(c->pair, N * N * CZ, seed + 1, 1.0);
    round_f32(c->single, N * CS), round_f32(c->pair, N * N * CZ);
    for (int64_t i = 0; i < N; i++) c->mask[i] = mask_zero && i == 2 ? 0.0 : 1.0;
    /* glycine, arginine, tryptophan, proline, aspartate, X */
    static const int32_t aa[6] = {7, 1, 17, 14, 3, 20};
    c->aatype = malloc(sizeof(int32_t) * (size_t)N);
    for (int64_t i = 0; i < N; i++) c->aatype[i] = aa[i % 6];
    for (int k = 0; k < c->np; k++) {
        c->pn[k] = 1;
        for (int j = 0; j < c->spec[k].ndim; j++) c->pn[k] *= c->spec[k].shape[j];
        c->p[k] = dalloc(c->pn[k]);
        /* random everywhere (AF2's zero inits would hide gradients): weights of variance
         * 1/fan_in, vectors 0.3 around their init (layer-norm scales around 1) */
        const mf_param_spec *s = &c->spec[k];
        const double sd = s->ndim == 2 ? 1.0 / sqrt((double)s->shape[0]) : 0.3;
        mf_test_fill_normal_f64(c->p[k], c->pn[k], seed + 10 + (uint64_t)k, sd);
        if (s->init == MF_INIT_ONES)
            for (int64_t i = 0; i < c->pn[k]; i++) c->p[k][i] += 1.0;
        round_f32(c->p[k], c->pn[k]);
    }
    const int64_t on[NOUT] = {L * N * 7,  L * N * 72, L * N * 24, L * N * 42, L * N * 14,
                              L * N * 14, N * CS,     N * 111,    N * 37};
    memcpy(c->on, on, sizeof on);
    for (int o = 0; o < NOUT; o++) {
        c->gout[o] = dalloc(c->on[o]);
        if (o != O_MASK) mf_test_fill_normal_f64(c->gout[o], c->on[o], seed + 200 + (uint64_t)o, 1);
        round_f32(c->gout[o], c->on[o]);
    }
}

static void case_free(smcase *c)
{
    free(c->single), free(c->pair), free(c->mask), free(c->aatype);
    for (int k = 0; k < c->np; k++) free(c->p[k]);
    for (int o = 0; o < NOUT; o++) free(c->gout[o]);
}

/* ---- the module over a case, in f64 or f32 ---- */

typedef struct {
    mf_dtype dt;
    void *single, *pair, *mask, *p[MAXP];
    void *out[NOUT];
    void *dsingle, *dpair, *dp[MAXP];
    void *gout[NOUT];
    void *quat; /* [L + 1, N, 4]: the chain of the last training forward */
    size_t saved_bytes;
} smrun;

static size_t esize(mf_dtype dt)
{
    return dt == MF_F64 ? 8 : 4;
}

static void *conv(const double *x, int64_t n, mf_dtype dt)
{
    void *y = calloc((size_t)(n > 0 ? n : 1), esize(dt));
    if (dt == MF_F64)
        memcpy(y, x, sizeof(double) * (size_t)n);
    else
        mf_f64_to_f32(y, x, n);
    return y;
}

static void run_alloc(smrun *r, const smcase *c, mf_dtype dt)
{
    memset(r, 0, sizeof *r);
    r->dt = dt;
    const int64_t N = c->N, CS = c->d.c_s, CZ = c->d.c_z;
    r->single = conv(c->single, N * CS, dt), r->pair = conv(c->pair, N * N * CZ, dt);
    r->mask = conv(c->mask, N, dt);
    for (int k = 0; k < c->np; k++) {
        r->p[k] = conv(c->p[k], c->pn[k], dt);
        r->dp[k] = calloc((size_t)c->pn[k], esize(dt));
    }
    for (int o = 0; o < NOUT; o++) {
        r->out[o] = calloc((size_t)c->on[o], esize(dt));
        r->gout[o] = conv(c->gout[o], c->on[o], dt);
    }
    r->dsingle = calloc((size_t)(N * CS), esize(dt));
    r->dpair = calloc((size_t)(N * N * CZ), esize(dt));
    r->quat = calloc((size_t)((c->L + 1) * N * 4), esize(dt));
}

static void run_free(smrun *r, const smcase *c)
{
    free(r->single), free(r->pair), free(r->mask), free(r->dsingle), free(r->dpair), free(r->quat);
    for (int k = 0; k < c->np; k++) free(r->p[k]), free(r->dp[k]);
    for (int o = 0; o < NOUT; o++) free(r->out[o]), free(r->gout[o]);
}

static mf_tensor tens(void *p, mf_dtype dt, int ndim, int64_t d0, int64_t d1, int64_t d2,
                      int64_t d3)
{
    return mf_tensor_4(p, dt, MF_DEV_CPU, ndim, d0, d1, d2, d3);
}

static void bind(const smcase *c, void *const *data, mf_dtype dt, mf_structure_module_params *p)
{
    memset(p, 0, sizeof *p);
    mf_tensor *t = MF_PARAMS_AS_ARRAY(p);
    for (int k = 0; k < c->np; k++)
        t[k] = mf_tensor_make(data[k], dt, MF_DEV_CPU, c->spec[k].ndim, c->spec[k].shape);
}

static mf_structure_module_outputs outputs_of(const smcase *c, void *const *o, mf_dtype dt)
{
    const int64_t L = c->L, N = c->N;
    mf_structure_module_outputs t = {
        .frames = tens(o[O_FRAMES], dt, 3, L, N, 7, 1),
        .sidechain_rot = tens(o[O_SCROT], dt, 4, L, N, 8, 9),
        .sidechain_trans = tens(o[O_SCTRANS], dt, 4, L, N, 8, 3),
        .positions = tens(o[O_POS], dt, 4, L, N, 14, 3),
        .angles = tens(o[O_ANG], dt, 4, L, N, 7, 2),
        .unnormalized_angles = tens(o[O_UNANG], dt, 4, L, N, 7, 2),
        .act = tens(o[O_ACT], dt, 2, N, c->d.c_s, 1, 1),
        .final_atom_positions = tens(o[O_FINAL], dt, 3, N, 37, 3, 1),
        .final_atom_mask = tens(o[O_MASK], dt, 2, N, 37, 1, 1),
    };
    return t;
}

typedef enum { RUN_INFERENCE, RUN_TRAIN, RUN_FROZEN } run_mode;

/* RUN_TRAIN: forward with saved activations, then backward with the case's upstream gradients
 * (accumulating into the run's gradients); the quaternion chain is copied to r->quat.
 * RUN_FROZEN: mf_structure_module_forward_frozen with r->quat. */
static mf_status run_module(mf_ctx *ctx, const smcase *c, smrun *r, run_mode mode,
                            const mf_structure_module_dropout_key *key)
{
    const int64_t N = c->N, CS = c->d.c_s, CZ = c->d.c_z;
    const mf_dtype dt = r->dt;
    mf_structure_module_params p, dp;
    bind(c, r->p, dt, &p);
    bind(c, r->dp, dt, &dp);
    mf_tensor single = tens(r->single, dt, 2, N, CS, 1, 1),
              pair = tens(r->pair, dt, 3, N, N, CZ, 1), mask = tens(r->mask, dt, 1, N, 1, 1, 1),
              aatype = mf_tensor_make(c->aatype, MF_I32, MF_DEV_CPU, 1, &N);
    mf_tensor ds = tens(r->dsingle, dt, 2, N, CS, 1, 1), dz = tens(r->dpair, dt, 3, N, N, CZ, 1);
    mf_structure_module_outputs out = outputs_of(c, r->out, dt), gout = outputs_of(c, r->gout, dt);
    gout.final_atom_mask = (mf_tensor){0};
    if (mode == RUN_FROZEN) {
        mf_tensor q = tens(r->quat, dt, 3, c->L + 1, N, 4, 1);
        return mf_structure_module_forward_frozen(ctx, &out, &q, &single, &pair, &aatype, &mask, &p,
                                                  &c->d, key);
    }
    const mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    static mf_structure_module_saved sv;
    const size_t used0 = mf_arena_used(ctx->arena);
    mf_status st = mf_structure_module_forward(ctx, &out, mode == RUN_TRAIN ? &sv : NULL, &single,
                                               &pair, &aatype, &mask, &p, &c->d, key);
    r->saved_bytes = mf_arena_used(ctx->arena) - used0;
    if (st == MF_OK && mode == RUN_TRAIN) {
        memcpy(r->quat, sv.quat.data, (size_t)((c->L + 1) * N * 4) * esize(dt));
        const size_t before = mf_arena_used(ctx->arena);
        st = mf_structure_module_backward(ctx, &ds, &dz, &dp, &gout, &sv, &single, &pair, &aatype,
                                          &mask, &p, &c->d);
        if (mf_arena_used(ctx->arena) != before) {
            mf_test_fail("backward left %zu bytes in the arena",
                         mf_arena_used(ctx->arena) - before);
            mf_test_count(false);
        }
    }
    mf_arena_release(ctx->arena, mark);
    return st;
}

/* ---- 1. f64 against finite differences ---- */

typedef struct {
    mf_ctx *ctx;
    smcase *c;
    smrun *r;
    const mf_structure_module_dropout_key *key;
    run_mode mode;
} fd_ud;

/* The FD perturbs the run's own f64 arrays (inputs and parameters) in place. */
static void fd_fwd(void *ud)
{
    fd_ud *f = ud;
    mf_status st = run_module(f->ctx, f->c, f->r, f->mode, f->key);
    if (st != MF_OK) mf_test_fail("structure module f64 forward: %s", mf_last_error());
}

static int fd_arrays(const smcase *c, smrun *x, const smrun *g, mf_gc_array *in,
                     const double **grads)
{
    const int64_t N = c->N, CS = c->d.c_s, CZ = c->d.c_z;
    in[0] = (mf_gc_array){"single", x->single, N * CS};
    in[1] = (mf_gc_array){"pair", x->pair, N * N * CZ};
    grads[0] = g->dsingle, grads[1] = g->dpair;
    for (int k = 0; k < c->np; k++) {
        in[2 + k] = (mf_gc_array){c->spec[k].name, x->p[k], c->pn[k]};
        grads[2 + k] = g->dp[k];
    }
    return 2 + c->np;
}

static void test_f64_fd(mf_ctx *ctx, int64_t L, bool masked, double h, double atol, double rtol,
                        int64_t max_per_input)
{
    printf("1. f64, %lld layers, dropout 0.3, %s: backward against finite differences of the "
           "frozen-rotation forward\n",
           (long long)L, masked ? "residue 2 masked" : "no masked residue");
    smcase c;
    case_init(&c, L, 0.3, masked, 1000 + (uint64_t)L + (masked ? 50 : 0));
    const mf_structure_module_dropout_key key = {.training = true, .seed = 77, .recycle = 1};
    smrun r, plain;
    run_alloc(&r, &c, MF_F64);
    run_alloc(&plain, &c, MF_F64);
    MF_TEST_OK(run_module(ctx, &c, &plain, RUN_INFERENCE, &key));
    MF_TEST_OK(run_module(ctx, &c, &r, RUN_TRAIN, &key));
    /* the training forward wrote the same outputs as inference */
    char name[160];
    for (int o = 0; o < NOUT; o++) {
        snprintf(name, sizeof name, "f64 training forward vs inference: %s", out_names[o]);
        mf_check_close_f64(name, r.out[o], plain.out[o], c.on[o], 0, 0);
    }
    /* the frozen forward at the forward's own quaternions reproduces it */
    memcpy(plain.quat, r.quat, sizeof(double) * (size_t)((L + 1) * c.N * 4));
    MF_TEST_OK(run_module(ctx, &c, &plain, RUN_FROZEN, &key));
    for (int o = 0; o < NOUT; o++) {
        snprintf(name, sizeof name, "f64 frozen forward vs forward: %s", out_names[o]);
        mf_check_close_f64(name, plain.out[o], r.out[o], c.on[o], 0, 0);
    }
    /* finite differences perturb plain's inputs; the analytic gradients are r's */
    mf_gc_array in[2 + MAXP];
    const double *grads[2 + MAXP];
    const int nin = fd_arrays(&c, &plain, &r, in, grads);
    mf_gc_array outs[NOUT - 1];
    const double *gout[NOUT - 1];
    for (int o = 0; o < NOUT - 1; o++) {
        outs[o] = (mf_gc_array){out_names[o], plain.out[o], c.on[o]};
        gout[o] = c.gout[o];
    }
    fd_ud ud = {ctx, &c, &plain, &key, RUN_FROZEN};
    double loss = 0;
    for (int o = 0; o < NOUT - 1; o++)
        for (int64_t i = 0; i < c.on[o]; i++) loss += fabs(c.gout[o][i] * ((double *)r.out[o])[i]);
    printf("  sum |gout . outputs| = %.3g, step %g, tolerance %g + %g |fd|\n", loss, h, atol, rtol);
    snprintf(name, sizeof name, "structure module f64 (%lld layers%s)", (long long)L,
             masked ? ", masked residue" : "");
    mf_gradcheck(name, fd_fwd, &ud, in, grads, nin, outs, gout, NOUT - 1, h, atol, rtol,
                 max_per_input);

    /* without the stop-gradient the derivative differs: the directional derivative of the plain
     * forward along a random affine_update direction is not what the backward gives */
    int ka = -1;
    for (int k = 0; k < c.np; k++)
        if (!strcmp(c.spec[k].name, "fold_iteration/affine_update//weights")) ka = k;
    MF_TEST_TRUE(ka >= 0, "affine_update//weights not among the specs");
    if (ka >= 0) {
        double *dir = dalloc(c.pn[ka]), an = 0, fd[2];
        mf_test_fill_normal_f64(dir, c.pn[ka], 4242, 1.0);
        for (int64_t i = 0; i < c.pn[ka]; i++) an += dir[i] * ((double *)r.dp[ka])[i];
        const run_mode modes[2] = {RUN_FROZEN, RUN_INFERENCE};
        double *w = plain.p[ka];
        for (int m = 0; m < 2; m++) {
            double lp = 0, lm = 0;
            for (int s = -1; s <= 1; s += 2) {
                for (int64_t i = 0; i < c.pn[ka]; i++) w[i] += s * h * dir[i];
                MF_TEST_OK(run_module(ctx, &c, &plain, modes[m], &key));
                double l = 0;
                for (int o = 0; o < NOUT - 1; o++)
                    for (int64_t i = 0; i < c.on[o]; i++)
                        l += c.gout[o][i] * ((double *)plain.out[o])[i];
                if (s < 0)
                    lm = l;
                else
                    lp = l;
                for (int64_t i = 0; i < c.pn[ka]; i++) w[i] -= s * h * dir[i];
            }
            fd[m] = (lp - lm) / (2 * h);
        }
        printf("  directional derivative along affine_update//weights: backward %.9g, FD frozen "
               "%.9g, FD without stop-gradient %.9g\n",
               an, fd[0], fd[1]);
        MF_TEST_TRUE(fabs(an - fd[0]) <= atol + rtol * fabs(fd[0]),
                     "backward %.12g vs frozen FD %.12g", an, fd[0]);
        MF_TEST_TRUE(fabs(an - fd[1]) > 1e-3 * fabs(fd[1]),
                     "the stop-gradient has no visible effect (%.12g vs %.12g)", an, fd[1]);
        free(dir);
    }
    run_free(&r, &c), run_free(&plain, &c);
    case_free(&c);
}

/* ---- 2-5. f32 ---- */

static double max_abs_f64(const double *x, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}

static double max_abs_f32(const float *x, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)x[i]));
    return m;
}

typedef enum { CMP_NONE, CMP_F64, CMP_BITWISE, CMP_CLOSE, CMP_MAXREL, CMP_L2REL } cmp_kind;

/* ||a - b||_2 / ||b||_2 <= tol (NaN fails). */
static bool check_l2rel(const char *name, const float *a, const float *b, int64_t n, double tol)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        const double e = (double)a[i] - (double)b[i];
        num += e * e, den += (double)b[i] * (double)b[i];
    }
    const double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    const bool ok = rel <= tol; /* false for NaN */
    printf("  %-50s n=%-8lld ||a-ref||/||ref||=%.3e  tol=%.0e  %s\n", name, (long long)n, rel, tol,
           ok ? "ok" : "FAIL");
    mf_test_count(ok);
    if (!ok) mf_test_fail("%s: relative L2 error %.3e > %.0e", name, rel, tol);
    return ok;
}

static void cmp(cmp_kind kind, const char *name, const void *a, const void *b, int64_t n,
                double atol, double rtol)
{
    switch (kind) {
    case CMP_NONE:
        break;
    case CMP_F64:
        mf_check_close_f32_f64(name, a, b, n, atol * fmax(max_abs_f64(b, n), 1e-30), rtol);
        break;
    case CMP_BITWISE:
        mf_check_bitwise_f32(name, a, b, n);
        break;
    case CMP_CLOSE:
        mf_check_close_f32(name, a, b, n, atol, rtol);
        break;
    case CMP_L2REL:
        check_l2rel(name, a, b, n, rtol);
        break;
    case CMP_MAXREL:
        if (max_abs_f32(b, n) == 0)
            mf_check_close_f32(name, a, b, n, 0, 0);
        else
            mf_check_maxrel_f32(name, a, b, n, rtol);
        break;
    }
}

/* outputs with `ko`, dsingle/dpair with `ki`, weight gradients with `kw` (grads false: outputs
 * only). */
static void check_run(const char *what, const smcase *c, const smrun *r, const smrun *ref,
                      cmp_kind ko, cmp_kind ki, cmp_kind kw, double atol, double rtol, bool grads)
{
    char name[192];
    for (int o = 0; o < NOUT; o++) {
        snprintf(name, sizeof name, "%s %s", what, out_names[o]);
        cmp(ko, name, r->out[o], ref->out[o], c->on[o], atol, rtol);
    }
    if (!grads) return;
    snprintf(name, sizeof name, "%s dsingle", what);
    cmp(ki, name, r->dsingle, ref->dsingle, c->N * c->d.c_s, atol, rtol);
    snprintf(name, sizeof name, "%s dpair", what);
    cmp(ki, name, r->dpair, ref->dpair, c->N * c->N * c->d.c_z, atol, rtol);
    /* IPA's attention_2d bias adds a per-head constant to every logit of a softmax row: its
     * gradient is exactly zero in exact arithmetic, so it is compared absolutely against the
     * largest weight gradient (the testvectors README's rule for such gradients) */
    double gscale = 0;
    for (int k = 0; k < c->np; k++)
        gscale = fmax(gscale, ref == NULL     ? 0
                              : kw == CMP_F64 ? max_abs_f64(ref->dp[k], c->pn[k])
                                              : max_abs_f32(ref->dp[k], c->pn[k]));
    for (int k = 0; k < c->np; k++) {
        snprintf(name, sizeof name, "%s d%s", what, c->spec[k].name);
        if (strstr(c->spec[k].name, "attention_2d//bias") && kw != CMP_BITWISE && kw != CMP_NONE) {
            const double tol = (kw == CMP_F64 ? atol : rtol) * gscale;
            snprintf(name, sizeof name, "%s d%s (exactly zero: |c - r| <= %.0e x max grad %.3g)",
                     what, c->spec[k].name, kw == CMP_F64 ? atol : rtol, gscale);
            if (kw == CMP_F64)
                mf_check_close_f32_f64(name, r->dp[k], ref->dp[k], c->pn[k], tol, 0);
            else
                mf_check_close_f32(name, r->dp[k], ref->dp[k], c->pn[k], tol, 0);
            continue;
        }
        cmp(kw, name, r->dp[k], ref->dp[k], c->pn[k], atol, rtol);
    }
}

static void test_f32_vs_f64(mf_ctx *ctx)
{
    printf("2. f32 against f64 (no masked residue: a fully masked IPA row is rounding-order "
           "dependent in f32), dropout 0.2\n");
    smcase c;
    case_init(&c, 2, 0.2, false, 2000);
    const mf_structure_module_dropout_key key = {.training = true, .seed = 5};
    smrun r64, r32;
    run_alloc(&r64, &c, MF_F64);
    run_alloc(&r32, &c, MF_F32);
    MF_TEST_OK(run_module(ctx, &c, &r64, RUN_TRAIN, &key));
    MF_TEST_OK(run_module(ctx, &c, &r32, RUN_TRAIN, &key));
    check_run("f32 vs f64", &c, &r32, &r64, CMP_F64, CMP_F64, CMP_F64, TOL_F32_SCALE,
              MF_TOL_F32_RTOL, true);
    /* the backward accumulates: a second backward doubles every gradient */
    smrun twice;
    run_alloc(&twice, &c, MF_F32);
    MF_TEST_OK(run_module(ctx, &c, &twice, RUN_TRAIN, &key));
    MF_TEST_OK(run_module(ctx, &c, &twice, RUN_TRAIN, &key));
    for (int64_t i = 0; i < c.N * c.d.c_s; i++) ((float *)r32.dsingle)[i] *= 2.0f;
    mf_check_close_f32("backward twice: dsingle doubled", twice.dsingle, r32.dsingle, c.N * c.d.c_s,
                       1e-6, 1e-6);
    int k = c.np - 1;
    for (int64_t i = 0; i < c.pn[k]; i++) ((float *)r32.dp[k])[i] *= 2.0f;
    mf_check_close_f32("backward twice: last weight gradient doubled", twice.dp[k], r32.dp[k],
                       c.pn[k], 1e-6, 1e-6);
    run_free(&twice, &c);
    run_free(&r64, &c), run_free(&r32, &c);
    case_free(&c);
}

static void test_policies(mf_ctx *ctx)
{
    printf("3. chunk sizes, recompute, inference vs training\n");
    smcase c;
    case_init(&c, 3, 0.1, true, 3000);
    const mf_structure_module_dropout_key key = {.training = true, .seed = 9};
    const mf_policy pol0 = ctx->policy;
    smrun base, inf;
    run_alloc(&base, &c, MF_F32);
    run_alloc(&inf, &c, MF_F32);
    ctx->policy.chunk_size = 0;
    MF_TEST_OK(run_module(ctx, &c, &base, RUN_TRAIN, &key));
    MF_TEST_OK(run_module(ctx, &c, &inf, RUN_INFERENCE, &key));
    check_run("inference vs training", &c, &inf, &base, CMP_BITWISE, CMP_BITWISE, CMP_BITWISE, 0, 0,
              false);
    const int64_t chunks[3] = {1, 3, 64};
    for (int i = 0; i < 3; i++) {
        smrun r;
        run_alloc(&r, &c, MF_F32);
        ctx->policy.chunk_size = chunks[i];
        MF_TEST_OK(run_module(ctx, &c, &r, RUN_TRAIN, &key));
        char what[64];
        snprintf(what, sizeof what, "chunk %lld:", (long long)chunks[i]);
        check_run(what, &c, &r, &base, CMP_BITWISE, CMP_BITWISE, CMP_CLOSE, TOL_CHUNK_ATOL,
                  TOL_CHUNK_RTOL, true);
        run_free(&r, &c);
    }
    ctx->policy.chunk_size = 0;
    ctx->policy.recompute = MF_RECOMPUTE_BLOCK;
    smrun rec;
    run_alloc(&rec, &c, MF_F32);
    MF_TEST_OK(run_module(ctx, &c, &rec, RUN_TRAIN, &key));
    check_run("recompute=block:", &c, &rec, &base, CMP_BITWISE, CMP_BITWISE, CMP_BITWISE, 0, 0,
              true);
    printf("  saved bytes: recompute off %zu, recompute=block %zu\n", base.saved_bytes,
           rec.saved_bytes);
    MF_TEST_TRUE(rec.saved_bytes < base.saved_bytes / 2,
                 "recompute keeps %zu bytes, not less than half of %zu", rec.saved_bytes,
                 base.saved_bytes);
    ctx->policy = pol0;
    run_free(&rec, &c);
    run_free(&base, &c), run_free(&inf, &c);
    case_free(&c);
}

static void test_arena_dropout_errors(mf_ctx *ctx)
{
    printf("4. arena, dropout, invalid arguments\n");
    smcase c;
    case_init(&c, 2, 0.25, true, 4000);
    smrun r;
    run_alloc(&r, &c, MF_F32);
    const int64_t N = c.N, CS = c.d.c_s, CZ = c.d.c_z;
    mf_structure_module_params p;
    bind(&c, r.p, MF_F32, &p);
    mf_tensor single = tens(r.single, MF_F32, 2, N, CS, 1, 1),
              pair = tens(r.pair, MF_F32, 3, N, N, CZ, 1),
              aatype = mf_tensor_make(c.aatype, MF_I32, MF_DEV_CPU, 1, &N);
    mf_structure_module_outputs out = outputs_of(&c, r.out, MF_F32);
    const size_t used0 = mf_arena_used(ctx->arena);
    const mf_structure_module_dropout_key k1 = {.training = true, .seed = 1},
                                          k2 = {.training = true, .seed = 2};
    MF_TEST_OK(
        mf_structure_module_forward(ctx, &out, NULL, &single, &pair, &aatype, NULL, &p, &c.d, &k1));
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == used0, "inference left %zu bytes in the arena",
                 mf_arena_used(ctx->arena) - used0);
    float *a1 = malloc(sizeof(float) * (size_t)c.on[O_POS]);
    memcpy(a1, r.out[O_POS], sizeof(float) * (size_t)c.on[O_POS]);
    MF_TEST_OK(
        mf_structure_module_forward(ctx, &out, NULL, &single, &pair, &aatype, NULL, &p, &c.d, &k1));
    mf_check_bitwise_f32("dropout: same seed, same positions", r.out[O_POS], a1, c.on[O_POS]);
    MF_TEST_OK(
        mf_structure_module_forward(ctx, &out, NULL, &single, &pair, &aatype, NULL, &p, &c.d, &k2));
    int differ = 0;
    for (int64_t i = 0; i < c.on[O_POS]; i++) differ += ((float *)r.out[O_POS])[i] != a1[i];
    MF_TEST_TRUE(differ > c.on[O_POS] / 2, "dropout: another seed changes only %d positions",
                 differ);
    const mf_structure_module_dropout_key koff = {.training = false, .seed = 1};
    float *a0 = malloc(sizeof(float) * (size_t)c.on[O_POS]);
    MF_TEST_OK(mf_structure_module_forward(ctx, &out, NULL, &single, &pair, &aatype, NULL, &p, &c.d,
                                           NULL));
    memcpy(a0, r.out[O_POS], sizeof(float) * (size_t)c.on[O_POS]);
    MF_TEST_OK(mf_structure_module_forward(ctx, &out, NULL, &single, &pair, &aatype, NULL, &p, &c.d,
                                           &koff));
    mf_check_bitwise_f32("dropout: off at inference (training false = no key)", r.out[O_POS], a0,
                         c.on[O_POS]);
    free(a1), free(a0);
    /* a training forward keeps the chain, the statistics, z2d and each layer's activations */
    static mf_structure_module_saved sv;
    const mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    MF_TEST_OK(
        mf_structure_module_forward(ctx, &out, &sv, &single, &pair, &aatype, NULL, &p, &c.d, &k1));
    const size_t kept = mf_arena_used(ctx->arena) - used0;
    printf("  training forward keeps %zu bytes (N %lld, %lld layers)\n", kept, (long long)N,
           (long long)c.L);
    MF_TEST_TRUE(kept > 0 && sv.z2d.data && sv.layer[1].ipa.attention.data,
                 "training forward kept nothing or missed z2d / IPA's attention");
    mf_arena_release(ctx->arena, mark);
    /* too small arenas fail (at every point of the forward) and leave nothing behind */
    int fails = 0;
    for (size_t kib = 1; kib <= 64; kib += 3) {
        mf_arena small;
        mf_ctx sctx;
        MF_TEST_OK(mf_test_ctx_cpu(&sctx, &small, kib * 1024));
        mf_status st = mf_structure_module_forward(&sctx, &out, &sv, &single, &pair, &aatype, NULL,
                                                   &p, &c.d, &k1);
        if (st != MF_OK) {
            fails++;
            MF_TEST_TRUE(st == MF_ERR_NOMEM && mf_arena_used(&small) == 0,
                         "a %zu KiB arena: status %s, %zu bytes left", kib, mf_status_name(st),
                         mf_arena_used(&small));
            mf_clear_error();
        }
        mf_test_ctx_free(&sctx, &small);
    }
    printf("  %d of 22 small arenas (1..64 KiB) too small, each left empty\n", fails);
    MF_TEST_TRUE(fails >= 5, "only %d small arenas failed", fails);
    mf_status st;
    /* invalid arguments */
    mf_structure_module_dims bad = c.d;
    bad.num_layer_in_transition = 2;
    st =
        mf_structure_module_forward(ctx, &out, NULL, &single, &pair, &aatype, NULL, &p, &bad, NULL);
    MF_TEST_TRUE(st == MF_ERR_INVALID, "2 transition layers accepted");
    printf("  refused: %s\n", mf_last_error());
    bad = c.d;
    bad.num_layer = MF_STRUCTURE_MODULE_MAX_LAYERS + 1;
    st =
        mf_structure_module_forward(ctx, &out, NULL, &single, &pair, &aatype, NULL, &p, &bad, NULL);
    MF_TEST_TRUE(st == MF_ERR_INVALID, "too many layers accepted");
    mf_tensor pair_bad = tens(r.pair, MF_F32, 3, N, N - 1, CZ, 1);
    st = mf_structure_module_forward(ctx, &out, NULL, &single, &pair_bad, &aatype, NULL, &p, &c.d,
                                     NULL);
    MF_TEST_TRUE(st == MF_ERR_INVALID, "a non-square pair accepted");
    printf("  refused: %s\n", mf_last_error());
    mf_structure_module_outputs out_bad = out;
    out_bad.act = (mf_tensor){0};
    st = mf_structure_module_forward(ctx, &out_bad, NULL, &single, &pair, &aatype, NULL, &p, &c.d,
                                     NULL);
    MF_TEST_TRUE(st == MF_ERR_INVALID, "a missing act output accepted");
    mf_tensor single64 = tens(r.single, MF_F64, 2, N, CS, 1, 1);
    st = mf_structure_module_forward(ctx, &out, NULL, &single64, &pair, &aatype, NULL, &p, &c.d,
                                     NULL);
    MF_TEST_TRUE(st == MF_ERR_INVALID, "an f64 single with f32 pair accepted");
    printf("  refused: %s\n", mf_last_error());
    mf_clear_error();
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == used0, "refusals left %zu bytes in the arena",
                 mf_arena_used(ctx->arena) - used0);
    run_free(&r, &c);
    case_free(&c);
}

static void test_bf16(mf_ctx *ctx)
{
    printf("5. bf16 storage and compute against f32\n");
    smcase c;
    case_init(&c, 2, 0.0, false, 5001);
    const mf_policy pol0 = ctx->policy;
    smrun base, st16, cp16;
    run_alloc(&base, &c, MF_F32);
    run_alloc(&st16, &c, MF_F32);
    run_alloc(&cp16, &c, MF_F32);
    MF_TEST_OK(run_module(ctx, &c, &base, RUN_TRAIN, NULL));
    ctx->policy.storage = MF_BF16;
    MF_TEST_OK(run_module(ctx, &c, &st16, RUN_TRAIN, NULL));
    ctx->policy = pol0;
    check_run("storage bf16:", &c, &st16, &base, CMP_BITWISE, CMP_MAXREL, CMP_MAXREL, 0,
              TOL_BF16_STORAGE, true);
    ctx->policy.compute = MF_BF16;
    MF_TEST_OK(run_module(ctx, &c, &cp16, RUN_TRAIN, NULL));
    ctx->policy = pol0;
    check_run("compute bf16:", &c, &cp16, &base, CMP_MAXREL, CMP_L2REL, CMP_L2REL, 0,
              TOL_BF16_COMPUTE_OUT, false);
    check_run("compute bf16:", &c, &cp16, &base, CMP_NONE, CMP_L2REL, CMP_L2REL, 0,
              TOL_BF16_COMPUTE_GRAD, true);
    run_free(&base, &c), run_free(&st16, &c), run_free(&cp16, &c);
    case_free(&c);
}

static void test_vectors(mf_ctx *ctx)
{
    printf("6. reference vectors (expected_outputs.h5, train_expected.h5)\n");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/testvectors", mf_test_shared_dir());
    static mf_verify_report rep;
    memset(&rep, 0, sizeof rep);
    mf_status st = mf_verify_structure_module(ctx, dir, &rep);
    MF_TEST_TRUE(st == MF_OK, "mf_verify_structure_module: %s", mf_last_error());
    for (int i = 0; i < rep.count; i++) {
        const mf_compare_result *res = &rep.items[i].result;
        printf("  %-60s max|c-r|/max|r| %.3g (tol %.0e) %s\n", rep.items[i].name, res->rel,
               res->tol, res->pass ? "ok" : "FAIL");
        MF_TEST_TRUE(res->pass, "%s: %.3g > %.0e%s", rep.items[i].name, res->rel, res->tol,
                     res->nan ? " (NaN)" : "");
    }
    /* 7 per iteration x 2, 4 loss terms, 45 weight gradients, 8 model / training outputs */
    MF_TEST_TRUE(rep.count == 71, "%d datasets compared, expected 71", rep.count);
}

int main(void)
{
    mf_ctx ctx;
    mf_arena arena;
    if (mf_test_ctx_cpu(&ctx, &arena, (size_t)256 << 20) != MF_OK) {
        fprintf(stderr, "context: %s\n", mf_last_error());
        return 1;
    }
    /* every element of arrays up to 48 (16) elements, as many random ones of larger arrays */
    test_f64_fd(&ctx, 2, false, MF_TOL_FD_STEP, TOL_FD_ATOL, MF_TOL_FD_RTOL, 48);
    test_f64_fd(&ctx, 3, false, MF_TOL_FD_STEP, TOL_FD_ATOL, MF_TOL_FD_RTOL, 16);
    test_f64_fd(&ctx, 2, true, TOL_FD_MASKED_STEP, TOL_FD_MASKED_ATOL, TOL_FD_MASKED_RTOL, 16);
    test_f32_vs_f64(&ctx);
    test_policies(&ctx);
    test_arena_dropout_errors(&ctx);
    test_bf16(&ctx);
    test_vectors(&ctx);
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_structure_module");
}
