/* The structure module (Alg. 20), see structure_module.h. */
#include "structure_module/structure_module.h"

#include <string.h>

#include "core/ops.h"
#include "core/rng.h"
#include "structure_module/all_atom.h"
#include "structure_module/rigid.h"

#define NA (2 * MF_NUM_TORSIONS)

/* ---- configuration and parameters ------------------------------------------------------------ */

mf_structure_module_dims mf_structure_module_dims_from_config(const mf_config *cfg)
{
    const mf_structure_module_config *c = &cfg->structure_module;
    const int64_t cs = cfg->channels.c_s, cz = cfg->channels.c_z;
    return (mf_structure_module_dims){
        .c_s = cs,
        .c_z = cz,
        .num_layer = c->num_layers,
        .num_layer_in_transition = c->num_transition_layers,
        .ipa = {.c_s = cs,
                .c_z = cz,
                .num_head = c->ipa.num_heads,
                .num_scalar_qk = c->ipa.c_hidden,
                .num_scalar_v = c->ipa.c_hidden,
                .num_point_qk = c->ipa.num_qk_points,
                .num_point_v = c->ipa.num_v_points},
        .angle_resnet = {.c_s = cs,
                         .num_channel = c->angle_resnet_c_hidden,
                         .num_residual_block = c->angle_resnet_num_blocks},
        .position_scale = c->position_scale,
        .dropout_rate = c->dropout_rate,
    };
}

static bool dims_valid(const mf_structure_module_dims *d)
{
    return d && d->c_s > 0 && d->c_z > 0 && d->num_layer >= 1 &&
           d->num_layer <= MF_STRUCTURE_MODULE_MAX_LAYERS &&
           d->num_layer_in_transition == MF_STRUCTURE_MODULE_TRANSITION_LAYERS &&
           d->ipa.c_s == d->c_s && d->ipa.c_z == d->c_z && d->ipa.num_head > 0 &&
           d->ipa.num_scalar_qk > 0 && d->ipa.num_scalar_v > 0 && d->ipa.num_point_qk > 0 &&
           d->ipa.num_point_v > 0 && d->angle_resnet.c_s == d->c_s &&
           d->angle_resnet.num_channel > 0 && d->angle_resnet.num_residual_block >= 1 &&
           d->angle_resnet.num_residual_block <= MF_ANGLE_RESNET_MAX_BLOCKS &&
           d->position_scale > 0.0 && d->dropout_rate >= 0.0 && d->dropout_rate < 1.0;
}

static mf_status check_dims(const mf_structure_module_dims *d)
{
    MF_REQUIRE(d, "structure module: dims missing");
    MF_REQUIRE(dims_valid(d),
               "structure module: invalid dims (c_s %lld, c_z %lld, layers %lld of at most %d, "
               "transition layers %lld (only %d supported), IPA c_s/c_z %lld/%lld heads %lld "
               "scalar %lld/%lld points %lld/%lld, angle resnet c_s %lld channels %lld blocks "
               "%lld, position scale %g, dropout %g)",
               (long long)d->c_s, (long long)d->c_z, (long long)d->num_layer,
               MF_STRUCTURE_MODULE_MAX_LAYERS, (long long)d->num_layer_in_transition,
               MF_STRUCTURE_MODULE_TRANSITION_LAYERS, (long long)d->ipa.c_s, (long long)d->ipa.c_z,
               (long long)d->ipa.num_head, (long long)d->ipa.num_scalar_qk,
               (long long)d->ipa.num_scalar_v, (long long)d->ipa.num_point_qk,
               (long long)d->ipa.num_point_v, (long long)d->angle_resnet.c_s,
               (long long)d->angle_resnet.num_channel,
               (long long)d->angle_resnet.num_residual_block, d->position_scale, d->dropout_rate);
    return MF_OK;
}

int mf_structure_module_param_specs(const mf_structure_module_dims *sd, mf_param_spec *out)
{
    if (!dims_valid(sd)) return 0;
    int n = 0;
    {
        const mf_structure_module_dims *d = sd;
        const mf_param_spec own[] = {
#define MF_PARAM MF_PARAM_SPEC
#include "structure_module/structure_module.def"
#undef MF_PARAM
        };
        const int k = (int)(sizeof own / sizeof own[0]);
        if (out) memcpy(out + n, own, sizeof own);
        n += k;
    }
    {
        const mf_ipa_dims *d = &sd->ipa;
        const mf_param_spec ipa[] = {
#define MF_PARAM(field, name, ...)                                                                 \
    MF_PARAM_SPEC(field, "fold_iteration/invariant_point_attention/" name, __VA_ARGS__)
#include "structure_module/ipa.def"
#undef MF_PARAM
        };
        const int k = (int)(sizeof ipa / sizeof ipa[0]);
        if (out) memcpy(out + n, ipa, sizeof ipa);
        n += k;
    }
    {
        const mf_angle_resnet_dims *d = &sd->angle_resnet;
        const mf_param_spec ar[] = {
#define MF_PARAM(field, name, ...)                                                                 \
    MF_PARAM_SPEC(field, "fold_iteration/rigid_sidechain/" name, __VA_ARGS__)
#include "structure_module/angle_resnet.def"
#undef MF_PARAM
        };
        const int k = mf_angle_resnet_param_specs(d, NULL);
        if (out) memcpy(out + n, ar, sizeof(mf_param_spec) * (size_t)k);
        n += k;
    }
    return n;
}

/* ---- small helpers --------------------------------------------------------------------------- */

mf_structure_module_dropout_key mf_structure_module_dropout_inference(void)
{
    return (mf_structure_module_dropout_key){.training = false};
}

uint64_t mf_structure_module_dropout_stream(const mf_structure_module_dropout_key *key,
                                            uint32_t which, uint32_t layer)
{
    return (5ull << 56) | ((uint64_t)(which & 0xffu) << 48) |
           ((uint64_t)(key->recycle & 0xffffu) << 32) | (uint64_t)(layer & 0xffffu);
}

static mf_tensor t4(void *data, mf_dtype dt, int ndim, int64_t d0, int64_t d1, int64_t d2,
                    int64_t d3)
{
    return mf_tensor_4(data, dt, MF_DEV_CPU, ndim, d0, d1, d2, d3);
}

/* Row l (along dim 0) of t, viewed with the given shape. */
static mf_tensor row(const mf_tensor *t, int64_t l, int ndim, int64_t d0, int64_t d1, int64_t d2,
                     int64_t d3)
{
    const int64_t per = mf_tensor_numel(t) / t->shape[0];
    return t4((char *)t->data + (size_t)(l * per) * mf_dtype_size(t->dtype), t->dtype, ndim, d0, d1,
              d2, d3);
}

static bool present(const mf_tensor *t)
{
    return t && t->data;
}

static mf_tensor *grad_of(mf_tensor *t)
{
    return t && t->data ? t : NULL;
}

static mf_status check_host(const mf_tensor *t, const char *name, mf_dtype dt, int ndim,
                            const int64_t *shape)
{
    MF_TRY(mf_check_tensor(t, name, dt, ndim));
    char b[96];
    bool ok = t->device == MF_DEV_CPU;
    for (int k = 0; k < ndim; k++) ok = ok && t->shape[k] == shape[k];
    if (!ok) {
        char e[96];
        mf_tensor want = mf_tensor_make(NULL, dt, MF_DEV_CPU, ndim, shape);
        return MF_ERROR(MF_ERR_INVALID, "structure module: %s is %s, expected %s on the host", name,
                        mf_tensor_describe(t, b, sizeof b), mf_tensor_describe(&want, e, sizeof e));
    }
    return MF_OK;
}
#define CHECK_HOST(t, name, dt, ndim, ...)                                                         \
    check_host((t), (name), (dt), (ndim), (const int64_t[MF_MAX_DIMS]){__VA_ARGS__})

/* Host loops of the frame bookkeeping, for float and double. */
#define SM_HOST_LOOPS(real, SUF)                                                                   \
    /* Alg. 20 line 4: identity frames */                                                          \
    static void identity_frames_##SUF(real *q, real *t, real *R, int64_t N)                        \
    {                                                                                              \
        for (int64_t i = 0; i < N; i++) {                                                          \
            for (int k = 0; k < 4; k++) q[4 * i + k] = k == 0;                                     \
            for (int k = 0; k < 3; k++) t[3 * i + k] = 0;                                          \
            for (int k = 0; k < 9; k++) R[9 * i + k] = k % 4 == 0;                                 \
        }                                                                                          \
    }                                                                                              \
    /* AF2 traj: the quaternion and the translation x position_scale */                            \
    static void frames_pack_##SUF(real *f, const real *q, const real *t, real ps, int64_t N)       \
    {                                                                                              \
        for (int64_t i = 0; i < N; i++) {                                                          \
            for (int k = 0; k < 4; k++) f[7 * i + k] = q[4 * i + k];                               \
            for (int k = 0; k < 3; k++) f[7 * i + 4 + k] = ps * t[3 * i + k];                      \
        }                                                                                          \
    }                                                                                              \
    static void frames_unpack_grad_##SUF(real *dq, real *dt, const real *df, real ps, int64_t N)   \
    {                                                                                              \
        for (int64_t i = 0; i < N; i++) {                                                          \
            for (int k = 0; k < 4; k++) dq[4 * i + k] += df[7 * i + k];                            \
            for (int k = 0; k < 3; k++) dt[3 * i + k] += ps * df[7 * i + 4 + k];                   \
        }                                                                                          \
    }                                                                                              \
    static void atom37_mask_##SUF(real *m, const int32_t *aatype, int64_t N)                       \
    {                                                                                              \
        const mf_all_atom_tables *tb = mf_all_atom_tables_get();                                   \
        for (int64_t i = 0; i < N; i++) {                                                          \
            const int a =                                                                          \
                aatype[i] >= 0 && aatype[i] <= MF_RESTYPE_UNK ? aatype[i] : MF_RESTYPE_UNK;        \
            for (int k = 0; k < MF_ATOM37; k++) m[MF_ATOM37 * i + k] = tb->atom37_mask[a][k];      \
        }                                                                                          \
    }                                                                                              \
    /* AF2 hk.dropout: keep with probability 1 - rate, scaled by 1 / (1 - rate) */                 \
    static void dropout_mask_##SUF(real *m, int64_t n, double rate, uint64_t seed,                 \
                                   uint64_t stream)                                                \
    {                                                                                              \
        const float keep = (float)(1.0 - rate);                                                    \
        const real scale = (real)(1.0 / (1.0 - rate));                                             \
        for (int64_t i = 0; i < n; i++)                                                            \
            m[i] = mf_rng_uniform(seed, stream, (uint64_t)i) < keep ? scale : (real)0;             \
    }

SM_HOST_LOOPS(float, f32)
SM_HOST_LOOPS(double, f64)

#define HOST(dt, fn, ...)                                                                          \
    do {                                                                                           \
        if ((dt) == MF_F64)                                                                        \
            fn##_f64(__VA_ARGS__);                                                                 \
        else                                                                                       \
            fn##_f32(__VA_ARGS__);                                                                 \
    } while (0)

/* ---- the module's state during one pass ------------------------------------------------------ */

typedef struct {
    mf_ctx *ctx;
    const mf_structure_module_params *p;
    const mf_structure_module_dims *d;
    mf_dtype dt;
    int64_t N;
    const mf_tensor *aatype, *seq_mask;
    mf_structure_module_dropout_key key;
    mf_tensor s_initial, z2d;
    mf_tensor act, quat, trans, rot, angles; /* the chain (see mf_structure_module_saved) */
} sm_state;

/* Layer l's outputs a_{l+1}, T_{l+1} and angles: rows of the chain, or scratch when a layer is
 * recomputed in backward. */
typedef struct {
    mf_tensor a, q, t, R, ang;
} layer_io;

static layer_io chain_io(const sm_state *S, int64_t l)
{
    const int64_t N = S->N, CS = S->d->c_s;
    return (layer_io){row(&S->act, l + 1, 2, N, CS, 1, 1), row(&S->quat, l + 1, 2, N, 4, 1, 1),
                      row(&S->trans, l + 1, 2, N, 3, 1, 1), row(&S->rot, l + 1, 3, N, 3, 3, 1),
                      row(&S->angles, l, 3, N, MF_NUM_TORSIONS, 2, 1)};
}

/* x [N, c_s] *= the mask of layer l's dropout `which` (the same call on a gradient is the
 * backward). */
static mf_status dropout(sm_state *S, mf_tensor *x, uint32_t which, int64_t l)
{
    const double rate = S->d->dropout_rate;
    if (!S->key.training || rate <= 0.0) return MF_OK;
    mf_arena *A = S->ctx->arena;
    const mf_arena_mark_t mark = mf_arena_mark(A);
    mf_status st = MF_OK;
    mf_tensor m;
    const int64_t n = mf_tensor_numel(x);
    MF_TRY_GOTO(mf_arena_tensor(A, &m, S->dt, 2, (const int64_t[]){S->N, S->d->c_s},
                                "structure_module dropout mask"));
    HOST(S->dt, dropout_mask, m.data, n, rate, S->key.seed,
         mf_structure_module_dropout_stream(&S->key, which, (uint32_t)l));
    MF_TRY_GOTO(mf_mul(S->ctx, x, x, &m));
cleanup:
    mf_arena_release(A, mark);
    return st;
}

/* x += IPA(a, z2d, (R, t)). f64: IPA's double reference (mf_ipa_forward is f32 only). */
static mf_status ipa_forward(sm_state *S, mf_tensor *x, mf_ipa_saved *sv, const mf_tensor *a,
                             const mf_tensor *R, const mf_tensor *t)
{
    const mf_structure_module_params *p = S->p;
    if (S->dt != MF_F64)
        return mf_ipa_forward(S->ctx, x, true, sv, a, &S->z2d, R, t, S->seq_mask, &p->ipa,
                              &S->d->ipa);
    if (sv) *sv = (mf_ipa_saved){0};
    mf_arena *A = S->ctx->arena;
    const mf_arena_mark_t mark = mf_arena_mark(A);
    mf_status st = MF_OK;
    mf_tensor u;
    const double *w[MF_IPA_NUM_PARAMS];
    const mf_tensor *wt = MF_PARAMS_AS_ARRAY((mf_ipa_params *)&p->ipa);
    for (int k = 0; k < MF_IPA_NUM_PARAMS; k++) w[k] = wt[k].data;
    MF_TRY_GOTO(mf_arena_tensor(A, &u, MF_F64, 2, (const int64_t[]){S->N, S->d->c_s},
                                "structure_module ipa f64"));
    if (!mf_ipa_reference_forward_f64(u.data, a->data, S->z2d.data, R->data, t->data,
                                      S->seq_mask ? S->seq_mask->data : NULL, w, &S->d->ipa, S->N))
        MF_TRY_GOTO(
            MF_ERROR(MF_ERR_NOMEM, "structure module: IPA double reference: out of memory"));
    MF_TRY_GOTO(mf_add(S->ctx, x, x, &u));
cleanup:
    mf_arena_release(A, mark);
    return st;
}

static mf_status ipa_backward(sm_state *S, mf_tensor *da, mf_tensor *dz2d, mf_tensor *dtrans,
                              mf_structure_module_params *dp, const mf_tensor *dx,
                              const mf_ipa_saved *sv, const mf_tensor *a, const mf_tensor *R,
                              const mf_tensor *t)
{
    const mf_structure_module_params *p = S->p;
    /* drot NULL: the rotation entering a layer is a constant (the stop-gradient) */
    if (S->dt != MF_F64)
        return mf_ipa_backward(S->ctx, da, dz2d, NULL, dtrans, dp ? &dp->ipa : NULL, dx, sv, a,
                               &S->z2d, R, t, &p->ipa, &S->d->ipa);
    const double *w[MF_IPA_NUM_PARAMS];
    double *dw[MF_IPA_NUM_PARAMS];
    const mf_tensor *wt = MF_PARAMS_AS_ARRAY((mf_ipa_params *)&p->ipa);
    for (int k = 0; k < MF_IPA_NUM_PARAMS; k++) {
        w[k] = wt[k].data;
        dw[k] = dp ? MF_PARAMS_AS_ARRAY(&dp->ipa)[k].data : NULL;
    }
    if (!mf_ipa_reference_backward_f64(da ? da->data : NULL, dz2d ? dz2d->data : NULL, NULL,
                                       dtrans ? dtrans->data : NULL, dw, dx->data, a->data,
                                       S->z2d.data, R->data, t->data,
                                       S->seq_mask ? S->seq_mask->data : NULL, w, &S->d->ipa, S->N))
        return MF_ERROR(MF_ERR_NOMEM, "structure module: IPA double reference: out of memory");
    return MF_OK;
}

/* ---- one fold iteration ---------------------------------------------------------------------- */

/* Layer l (Alg. 20 lines 6-14 and Alg. 24) from a_l, T_l (chain rows l) into io. ls NULL:
 * nothing kept (every allocation released); else ls receives the layer's saved tensors, left on
 * the arena. out NULL (a recomputation): the frames, all-atom and output copies are skipped. */
static mf_status layer_forward(sm_state *S, int64_t l, mf_structure_module_layer_saved *ls,
                               const mf_structure_module_outputs *out, const layer_io *io)
{
    mf_ctx *ctx = S->ctx;
    mf_arena *A = ctx->arena;
    const mf_structure_module_params *p = S->p;
    const mf_structure_module_dims *d = S->d;
    const int64_t N = S->N, CS = d->c_s;
    const mf_dtype dt = S->dt;
    const mf_arena_mark_t mark0 = mf_arena_mark(A);
    mf_status st = MF_OK;
    mf_structure_module_layer_saved v = {0};
    const char *lab = ls ? "structure_module saved" : "structure_module transient";
    const int64_t nc[2] = {N, CS};
    MF_TRY_GOTO(mf_arena_tensor(A, &v.x1, dt, 2, nc, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &v.ln1_mean, dt, 1, &N, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &v.ln1_rstd, dt, 1, &N, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &v.b, dt, 2, nc, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &v.hidden, dt, 3,
                                (const int64_t[]){MF_STRUCTURE_MODULE_TRANSITION_LAYERS - 1, N, CS},
                                lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &v.x2, dt, 2, nc, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &v.ln2_mean, dt, 1, &N, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &v.ln2_rstd, dt, 1, &N, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &v.update, dt, 2, (const int64_t[]){N, 6}, lab));

    mf_tensor a_l = row(&S->act, l, 2, N, CS, 1, 1), q_l = row(&S->quat, l, 2, N, 4, 1, 1),
              t_l = row(&S->trans, l, 2, N, 3, 1, 1), R_l = row(&S->rot, l, 3, N, 3, 3, 1);
    /* lines 6-7: the IPA residual, dropout, attention_layer_norm */
    MF_TRY_GOTO(mf_convert(ctx, &v.x1, &a_l));
    MF_TRY_GOTO(ipa_forward(S, &v.x1, ls ? &v.ipa : NULL, &a_l, &R_l, &t_l));
    MF_TRY_GOTO(dropout(S, &v.x1, 1, l));
    MF_TRY_GOTO(mf_layer_norm_forward(ctx, &v.b, &v.ln1_mean, &v.ln1_rstd, &v.x1,
                                      &p->attention_layer_norm_scale,
                                      &p->attention_layer_norm_offset, MF_STRUCTURE_MODULE_LN_EPS));
    /* lines 8-9: the transition (ReLU after all but the last linear), its residual, dropout,
     * transition_layer_norm */
    mf_tensor h0 = row(&v.hidden, 0, 2, N, CS, 1, 1), h1 = row(&v.hidden, 1, 2, N, CS, 1, 1);
    MF_TRY_GOTO(
        mf_linear_forward(ctx, &h0, &v.b, &p->transition_weights, &p->transition_bias, false));
    MF_TRY_GOTO(mf_activation_forward(ctx, MF_ACT_RELU, &h0, &h0));
    MF_TRY_GOTO(
        mf_linear_forward(ctx, &h1, &h0, &p->transition_1_weights, &p->transition_1_bias, false));
    MF_TRY_GOTO(mf_activation_forward(ctx, MF_ACT_RELU, &h1, &h1));
    MF_TRY_GOTO(
        mf_linear_forward(ctx, &v.x2, &h1, &p->transition_2_weights, &p->transition_2_bias, false));
    MF_TRY_GOTO(mf_add(ctx, &v.x2, &v.x2, &v.b));
    MF_TRY_GOTO(dropout(S, &v.x2, 2, l));
    mf_tensor a_n = io->a;
    MF_TRY_GOTO(mf_layer_norm_forward(
        ctx, &a_n, &v.ln2_mean, &v.ln2_rstd, &v.x2, &p->transition_layer_norm_scale,
        &p->transition_layer_norm_offset, MF_STRUCTURE_MODULE_LN_EPS));
    /* line 10 (Alg. 23): T_{l+1} = T_l o update, QuatAffine.pre_compose */
    MF_TRY_GOTO(mf_linear_forward(ctx, &v.update, &a_n, &p->affine_update_weights,
                                  &p->affine_update_bias, false));
    HOST(dt, mf_quat_affine_pre_compose, io->q.data, io->t.data, io->R.data, q_l.data, t_l.data,
         v.update.data, N);
    /* lines 11-14: torsion angles from (a_{l+1}, s_initial) */
    mf_tensor un = out && present(&out->unnormalized_angles)
                       ? row(&out->unnormalized_angles, l, 3, N, MF_NUM_TORSIONS, 2, 1)
                       : (mf_tensor){0};
    mf_tensor ang = io->ang;
    MF_TRY_GOTO(mf_angle_resnet_forward(ctx, un.data ? &un : NULL, &ang,
                                        ls ? &v.angle_resnet : NULL, &a_n, &S->s_initial,
                                        &p->rigid_sidechain, &d->angle_resnet));
    if (out) {
        const mf_arena_mark_t mark_o = mf_arena_mark(A);
        mf_tensor fr = row(&out->frames, l, 2, N, 7, 1, 1);
        HOST(dt, frames_pack, fr.data, io->q.data, io->t.data, d->position_scale, N);
        /* Alg. 24 with the backbone frame in Angstrom (AF2 scale_translation(position_scale)) */
        mf_tensor bbt, scr, sct, pos = row(&out->positions, l, 3, N, MF_ATOM14, 3, 1);
        MF_TRY_GOTO(mf_arena_tensor(A, &bbt, dt, 2, (const int64_t[]){N, 3}, lab));
        MF_TRY_GOTO(mf_scale(ctx, &bbt, &io->t, (float)d->position_scale));
        if (present(&out->sidechain_rot)) {
            scr = row(&out->sidechain_rot, l, 4, N, MF_NUM_RIGID_GROUPS, 3, 3);
            sct = row(&out->sidechain_trans, l, 3, N, MF_NUM_RIGID_GROUPS, 3, 1);
        } else {
            MF_TRY_GOTO(mf_arena_tensor(A, &scr, dt, 4,
                                        (const int64_t[]){N, MF_NUM_RIGID_GROUPS, 3, 3}, lab));
            MF_TRY_GOTO(
                mf_arena_tensor(A, &sct, dt, 3, (const int64_t[]){N, MF_NUM_RIGID_GROUPS, 3}, lab));
        }
        MF_TRY_GOTO(mf_all_atom_forward(ctx, &scr, &sct, &pos, S->aatype, &io->R, &bbt, &ang));
        mf_tensor oang = row(&out->angles, l, 3, N, MF_NUM_TORSIONS, 2, 1);
        MF_TRY_GOTO(mf_convert(ctx, &oang, &ang));
        mf_arena_release(A, mark_o);
    }
cleanup:
    if (st != MF_OK || !ls)
        mf_arena_release(A, mark0);
    else
        *ls = v;
    return st;
}

/* The backward of layer l. ga_n, gt_n: the gradients of a_{l+1}, t_{l+1} gathered so far (ga_n is
 * completed here with the angle resnet's and the affine update's parts); ga_l, gt_l receive
 * (accumulate) those of a_l, t_l; dpos: the upstream gradient of this layer's atom14 positions
 * (or NULL). */
static mf_status layer_backward(sm_state *S, int64_t l, const mf_structure_module_layer_saved *ls,
                                const mf_structure_module_outputs *dout, const mf_tensor *dpos,
                                mf_tensor *ga_n, mf_tensor *gt_n, mf_tensor *ga_l, mf_tensor *gt_l,
                                mf_tensor *ds_init, mf_tensor *dz2d, mf_structure_module_params *dp)
{
    mf_ctx *ctx = S->ctx;
    mf_arena *A = ctx->arena;
    const mf_structure_module_params *p = S->p;
    const mf_structure_module_dims *d = S->d;
    const int64_t N = S->N, CS = d->c_s;
    const mf_dtype dt = S->dt;
    const mf_arena_mark_t mark = mf_arena_mark(A);
    mf_status st = MF_OK;
    const char *lab = "structure_module backward";
    mf_structure_module_params *g = dp; /* NULL: no weight gradients */
#define GRAD(field) (g ? grad_of(&g->field) : NULL)
    const layer_io io = chain_io(S, l);
    mf_tensor a_l = row(&S->act, l, 2, N, CS, 1, 1), q_l = row(&S->quat, l, 2, N, 4, 1, 1),
              t_l = row(&S->trans, l, 2, N, 3, 1, 1), R_l = row(&S->rot, l, 3, N, 3, 3, 1);
    const int64_t nc[2] = {N, CS};
    mf_tensor dR, dbbt, dang, dq, du, dx2, db, dh, dl, dx1;
    MF_TRY_GOTO(mf_arena_zeros(A, &dR, dt, 3, (const int64_t[]){N, 3, 3}, lab));
    MF_TRY_GOTO(mf_arena_zeros(A, &dbbt, dt, 2, (const int64_t[]){N, 3}, lab));
    MF_TRY_GOTO(mf_arena_zeros(A, &dang, dt, 3, (const int64_t[]){N, MF_NUM_TORSIONS, 2}, lab));
    MF_TRY_GOTO(mf_arena_zeros(A, &dq, dt, 2, (const int64_t[]){N, 4}, lab));
    MF_TRY_GOTO(mf_arena_zeros(A, &du, dt, 2, (const int64_t[]){N, 6}, lab));
    /* Alg. 24: side-chain frames and atom positions back to (R_{l+1}, 10 t_{l+1}) and angles */
    mf_tensor dscr = {0}, dsct = {0};
    if (dout && present(&dout->sidechain_rot))
        dscr = row(&dout->sidechain_rot, l, 4, N, MF_NUM_RIGID_GROUPS, 3, 3);
    if (dout && present(&dout->sidechain_trans))
        dsct = row(&dout->sidechain_trans, l, 3, N, MF_NUM_RIGID_GROUPS, 3, 1);
    if (dscr.data || dsct.data || dpos)
        MF_TRY_GOTO(mf_all_atom_backward(ctx, &dR, &dbbt, &dang, dscr.data ? &dscr : NULL,
                                         dsct.data ? &dsct : NULL, dpos, S->aatype, &io.R,
                                         &io.ang));
    if (dout && present(&dout->angles)) {
        mf_tensor ga = row(&dout->angles, l, 3, N, MF_NUM_TORSIONS, 2, 1);
        MF_TRY_GOTO(mf_axpy(ctx, &dang, 1.0f, &ga));
    }
    if (dout && present(&dout->frames)) {
        mf_tensor gf = row(&dout->frames, l, 2, N, 7, 1, 1);
        HOST(dt, frames_unpack_grad, dq.data, gt_n->data, gf.data, d->position_scale, N);
    }
    MF_TRY_GOTO(mf_axpy(ctx, gt_n, (float)d->position_scale, &dbbt));
    /* lines 11-14 */
    mf_tensor dun = {0};
    if (dout && present(&dout->unnormalized_angles))
        dun = row(&dout->unnormalized_angles, l, 3, N, MF_NUM_TORSIONS, 2, 1);
    MF_TRY_GOTO(mf_angle_resnet_backward(ctx, ga_n, ds_init, g ? &g->rigid_sidechain : NULL,
                                         dun.data ? &dun : NULL, &dang, &ls->angle_resnet, &io.a,
                                         &S->s_initial, &p->rigid_sidechain, &d->angle_resnet));
    /* line 10: no gradient to the incoming quaternion (the stop-gradient); t_{l+1} = t_l + R_l u
     * passes gt_n on to gt_l */
    HOST(dt, mf_quat_affine_pre_compose_backward, NULL, gt_l->data, du.data, dq.data, gt_n->data,
         dR.data, q_l.data, ls->update.data, N);
    MF_TRY_GOTO(mf_linear_backward(ctx, ga_n, GRAD(affine_update_weights), GRAD(affine_update_bias),
                                   &du, &io.a, &p->affine_update_weights));
    /* line 9 */
    MF_TRY_GOTO(mf_arena_zeros(A, &dx2, dt, 2, nc, lab));
    MF_TRY_GOTO(mf_layer_norm_backward(
        ctx, &dx2, GRAD(transition_layer_norm_scale), GRAD(transition_layer_norm_offset), ga_n,
        &ls->x2, &ls->ln2_mean, &ls->ln2_rstd, &p->transition_layer_norm_scale));
    MF_TRY_GOTO(dropout(S, &dx2, 2, l));
    /* line 8 */
    mf_tensor h0 = row(&ls->hidden, 0, 2, N, CS, 1, 1), h1 = row(&ls->hidden, 1, 2, N, CS, 1, 1);
    MF_TRY_GOTO(mf_arena_zeros(A, &db, dt, 2, nc, lab));
    MF_TRY_GOTO(mf_arena_zeros(A, &dh, dt, 2, nc, lab));
    MF_TRY_GOTO(mf_arena_zeros(A, &dl, dt, 2, nc, lab));
    MF_TRY_GOTO(mf_axpy(ctx, &db, 1.0f, &dx2)); /* the residual */
    MF_TRY_GOTO(mf_linear_backward(ctx, &dh, GRAD(transition_2_weights), GRAD(transition_2_bias),
                                   &dx2, &h1, &p->transition_2_weights));
    MF_TRY_GOTO(mf_activation_backward(ctx, MF_ACT_RELU, &dl, &dh, &h1));
    MF_TRY_GOTO(mf_fill(ctx, &dh, 0.0f));
    MF_TRY_GOTO(mf_linear_backward(ctx, &dh, GRAD(transition_1_weights), GRAD(transition_1_bias),
                                   &dl, &h0, &p->transition_1_weights));
    MF_TRY_GOTO(mf_fill(ctx, &dl, 0.0f));
    MF_TRY_GOTO(mf_activation_backward(ctx, MF_ACT_RELU, &dl, &dh, &h0));
    MF_TRY_GOTO(mf_linear_backward(ctx, &db, GRAD(transition_weights), GRAD(transition_bias), &dl,
                                   &ls->b, &p->transition_weights));
    /* lines 6-7 */
    MF_TRY_GOTO(mf_arena_zeros(A, &dx1, dt, 2, nc, lab));
    MF_TRY_GOTO(mf_layer_norm_backward(
        ctx, &dx1, GRAD(attention_layer_norm_scale), GRAD(attention_layer_norm_offset), &db,
        &ls->x1, &ls->ln1_mean, &ls->ln1_rstd, &p->attention_layer_norm_scale));
    MF_TRY_GOTO(dropout(S, &dx1, 1, l));
    MF_TRY_GOTO(mf_axpy(ctx, ga_l, 1.0f, &dx1)); /* the residual */
    MF_TRY_GOTO(ipa_backward(S, ga_l, dz2d, gt_l, dp, &dx1, &ls->ipa, &a_l, &R_l, &t_l));
#undef GRAD
cleanup:
    mf_arena_release(A, mark);
    return st;
}

/* ---- argument checks ------------------------------------------------------------------------- */

/* Parameters (every one required) or their gradients (data == NULL: not wanted). */
static mf_status check_params(const mf_structure_module_params *p,
                              const mf_structure_module_dims *d, mf_dtype dt, bool gradients)
{
    MF_REQUIRE(p, "structure module: parameters missing");
    mf_param_spec specs[MF_STRUCTURE_MODULE_MAX_PARAMS];
    const int n = mf_structure_module_param_specs(d, specs);
    const mf_tensor *t = MF_PARAMS_AS_ARRAY((mf_structure_module_params *)p);
    for (int k = 0; k < n; k++)
        if (t[k].data || !gradients)
            MF_TRY(check_host(&t[k], specs[k].name, dt, specs[k].ndim, specs[k].shape));
    return MF_OK;
}

static mf_status check_inputs(const mf_ctx *ctx, const mf_tensor *single, const mf_tensor *pair,
                              const mf_tensor *aatype, const mf_tensor *seq_mask,
                              const mf_structure_module_params *p,
                              const mf_structure_module_dims *d, int64_t *N, mf_dtype *dt)
{
    MF_REQUIRE(ctx && ctx->arena, "structure module: ctx and arena required");
    MF_REQUIRE(ctx->device == MF_DEV_CPU && ctx->arena->device == MF_DEV_CPU,
               "structure module: the frame algebra runs on the host, CPU context required");
    MF_TRY(check_dims(d));
    MF_REQUIRE(single && single->data && (single->dtype == MF_F32 || single->dtype == MF_F64),
               "structure module: single missing or neither f32 nor f64");
    *dt = single->dtype;
    MF_TRY(mf_check_tensor(single, "structure module single", *dt, 2));
    *N = single->shape[0];
    MF_REQUIRE(*N > 0, "structure module: no residues");
    MF_TRY(CHECK_HOST(single, "single", *dt, 2, *N, d->c_s));
    MF_TRY(CHECK_HOST(pair, "pair", *dt, 3, *N, *N, d->c_z));
    MF_TRY(CHECK_HOST(aatype, "aatype", MF_I32, 1, *N));
    if (seq_mask) MF_TRY(CHECK_HOST(seq_mask, "seq_mask", *dt, 1, *N));
    return check_params(p, d, *dt, false);
}

/* The outputs (forward) or their upstream gradients (backward: everything optional). */
static mf_status check_outputs(const mf_structure_module_outputs *o, int64_t N,
                               const mf_structure_module_dims *d, mf_dtype dt, bool forward)
{
    const int64_t L = d->num_layer;
    const char *pre = forward ? "output" : "upstream gradient";
    char nm[96];
#define CHECK_OUT(field, required, ndim, ...)                                                      \
    do {                                                                                           \
        snprintf(nm, sizeof nm, "%s %s", pre, #field);                                             \
        if (present(&o->field))                                                                    \
            MF_TRY(CHECK_HOST(&o->field, nm, dt, ndim, __VA_ARGS__));                              \
        else                                                                                       \
            MF_REQUIRE(!(required), "structure module: %s missing", nm);                           \
    } while (0)
    MF_REQUIRE(o || !forward, "structure module: outputs missing");
    if (!o) return MF_OK;
    CHECK_OUT(frames, forward, 3, L, N, 7);
    CHECK_OUT(sidechain_rot, false, 4, L, N, MF_NUM_RIGID_GROUPS, 9);
    CHECK_OUT(sidechain_trans, false, 4, L, N, MF_NUM_RIGID_GROUPS, 3);
    CHECK_OUT(positions, forward, 4, L, N, MF_ATOM14, 3);
    CHECK_OUT(angles, forward, 4, L, N, MF_NUM_TORSIONS, 2);
    CHECK_OUT(unnormalized_angles, false, 4, L, N, MF_NUM_TORSIONS, 2);
    CHECK_OUT(act, forward, 2, N, d->c_s);
    CHECK_OUT(final_atom_positions, false, 3, N, MF_ATOM37, 3);
    if (forward) CHECK_OUT(final_atom_mask, false, 2, N, MF_ATOM37);
#undef CHECK_OUT
    MF_REQUIRE(!forward || present(&o->sidechain_rot) == present(&o->sidechain_trans),
               "structure module: sidechain_rot and sidechain_trans go together");
    return MF_OK;
}

/* ---- the module ------------------------------------------------------------------------------ */

static mf_status forward_impl(mf_ctx *ctx, mf_structure_module_outputs *out,
                              mf_structure_module_saved *saved, const mf_tensor *frozen,
                              const mf_tensor *single, const mf_tensor *pair,
                              const mf_tensor *aatype, const mf_tensor *seq_mask,
                              const mf_structure_module_params *p,
                              const mf_structure_module_dims *d,
                              const mf_structure_module_dropout_key *key)
{
    int64_t N;
    mf_dtype dt;
    MF_TRY(check_inputs(ctx, single, pair, aatype, seq_mask, p, d, &N, &dt));
    MF_TRY(check_outputs(out, N, d, dt, true));
    const int64_t L = d->num_layer, CS = d->c_s, CZ = d->c_z;
    if (frozen) MF_TRY(CHECK_HOST(frozen, "frozen_quat", dt, 3, L + 1, N, 4));
    mf_arena *A = ctx->arena;
    const mf_arena_mark_t mark0 = mf_arena_mark(A);
    mf_status st = MF_OK;
    const bool recompute = saved && ctx->policy.recompute != MF_RECOMPUTE_OFF;
    const char *lab = saved ? "structure_module saved" : "structure_module transient";
    sm_state S = {
        .ctx = ctx, .p = p, .d = d, .dt = dt, .N = N, .aatype = aatype, .seq_mask = seq_mask};
    S.key = key ? *key : mf_structure_module_dropout_inference();
    mf_tensor smean = {0}, srstd = {0}, pmean = {0}, prstd = {0};
    MF_TRY_GOTO(mf_arena_tensor(A, &S.act, dt, 3, (const int64_t[]){L + 1, N, CS}, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &S.quat, dt, 3, (const int64_t[]){L + 1, N, 4}, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &S.trans, dt, 3, (const int64_t[]){L + 1, N, 3}, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &S.rot, dt, 4, (const int64_t[]){L + 1, N, 3, 3}, lab));
    MF_TRY_GOTO(
        mf_arena_tensor(A, &S.angles, dt, 4, (const int64_t[]){L, N, MF_NUM_TORSIONS, 2}, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &S.s_initial, dt, 2, (const int64_t[]){N, CS}, lab));
    if (saved) {
        MF_TRY_GOTO(mf_arena_tensor(A, &smean, dt, 1, &N, lab));
        MF_TRY_GOTO(mf_arena_tensor(A, &srstd, dt, 1, &N, lab));
        MF_TRY_GOTO(mf_arena_tensor(A, &pmean, dt, 1, (const int64_t[]){N * N}, lab));
        MF_TRY_GOTO(mf_arena_tensor(A, &prstd, dt, 1, (const int64_t[]){N * N}, lab));
    }
    const mf_arena_mark_t mark_z = mf_arena_mark(A);
    MF_TRY_GOTO(mf_arena_tensor(A, &S.z2d, dt, 3, (const int64_t[]){N, N, CZ},
                                recompute || !saved ? "structure_module z2d" : lab));
    /* Alg. 20 lines 1-3 */
    MF_TRY_GOTO(mf_layer_norm_forward(ctx, &S.s_initial, saved ? &smean : NULL,
                                      saved ? &srstd : NULL, single, &p->single_layer_norm_scale,
                                      &p->single_layer_norm_offset, MF_STRUCTURE_MODULE_LN_EPS));
    mf_tensor a0 = row(&S.act, 0, 2, N, CS, 1, 1);
    MF_TRY_GOTO(mf_linear_forward(ctx, &a0, &S.s_initial, &p->initial_projection_weights,
                                  &p->initial_projection_bias, false));
    MF_TRY_GOTO(mf_layer_norm_forward(ctx, &S.z2d, saved ? &pmean : NULL, saved ? &prstd : NULL,
                                      pair, &p->pair_layer_norm_scale, &p->pair_layer_norm_offset,
                                      MF_STRUCTURE_MODULE_LN_EPS));
    /* line 4 */
    HOST(dt, identity_frames, S.quat.data, S.trans.data, S.rot.data, N);
    mf_structure_module_saved *sv = saved;
    for (int64_t l = 0; l < L; l++) {
        if (frozen && l > 0) {
            mf_tensor fq = row(frozen, l, 2, N, 4, 1, 1), q = row(&S.quat, l, 2, N, 4, 1, 1);
            mf_tensor R = row(&S.rot, l, 3, N, 3, 3, 1);
            MF_TRY_GOTO(mf_convert(ctx, &q, &fq));
            HOST(dt, mf_quat_to_rot, R.data, q.data, N);
        }
        const layer_io io = chain_io(&S, l);
        MF_TRY_GOTO(layer_forward(&S, l, saved && !recompute ? &sv->layer[l] : NULL, out, &io));
    }
    /* the final single activation and AF2's final atom37 positions and mask */
    mf_tensor aL = row(&S.act, L, 2, N, CS, 1, 1);
    MF_TRY_GOTO(mf_convert(ctx, &out->act, &aL));
    if (present(&out->final_atom_positions)) {
        mf_tensor pos = row(&out->positions, L - 1, 3, N, MF_ATOM14, 3, 1);
        HOST(dt, mf_atom14_to_atom37, out->final_atom_positions.data, pos.data, aatype->data, N, 3);
    }
    if (present(&out->final_atom_mask))
        HOST(dt, atom37_mask, out->final_atom_mask.data, aatype->data, N);
    if (saved) {
        if (recompute) {
            mf_arena_release(A, mark_z); /* z2d is recomputed from pair in backward */
            S.z2d = (mf_tensor){0};
        }
        sv->act = S.act, sv->quat = S.quat, sv->trans = S.trans, sv->rot = S.rot;
        sv->angles = S.angles, sv->s_initial = S.s_initial, sv->z2d = S.z2d;
        sv->single_mean = smean, sv->single_rstd = srstd, sv->pair_mean = pmean,
        sv->pair_rstd = prstd;
        sv->recompute = recompute;
        sv->key = S.key;
        return MF_OK;
    }
cleanup:
    if (saved) memset(saved, 0, sizeof *saved);
    mf_arena_release(A, mark0);
    return st;
}

mf_status mf_structure_module_forward(mf_ctx *ctx, mf_structure_module_outputs *out,
                                      mf_structure_module_saved *saved, const mf_tensor *single,
                                      const mf_tensor *pair, const mf_tensor *aatype,
                                      const mf_tensor *seq_mask,
                                      const mf_structure_module_params *p,
                                      const mf_structure_module_dims *d,
                                      const mf_structure_module_dropout_key *key)
{
    if (saved) memset(saved, 0, sizeof *saved);
    return forward_impl(ctx, out, saved, NULL, single, pair, aatype, seq_mask, p, d, key);
}

mf_status mf_structure_module_forward_frozen(mf_ctx *ctx, mf_structure_module_outputs *out,
                                             const mf_tensor *frozen_quat, const mf_tensor *single,
                                             const mf_tensor *pair, const mf_tensor *aatype,
                                             const mf_tensor *seq_mask,
                                             const mf_structure_module_params *p,
                                             const mf_structure_module_dims *d,
                                             const mf_structure_module_dropout_key *key)
{
    MF_REQUIRE(frozen_quat, "structure module: frozen_quat missing");
    return forward_impl(ctx, out, NULL, frozen_quat, single, pair, aatype, seq_mask, p, d, key);
}

static mf_status check_saved(const mf_structure_module_saved *sv, int64_t N,
                             const mf_structure_module_dims *d, mf_dtype dt)
{
    MF_REQUIRE(sv, "structure module backward needs the forward's saved activations");
    const int64_t L = d->num_layer, CS = d->c_s;
    MF_TRY(CHECK_HOST(&sv->act, "saved act", dt, 3, L + 1, N, CS));
    MF_TRY(CHECK_HOST(&sv->quat, "saved quat", dt, 3, L + 1, N, 4));
    MF_TRY(CHECK_HOST(&sv->trans, "saved trans", dt, 3, L + 1, N, 3));
    MF_TRY(CHECK_HOST(&sv->rot, "saved rot", dt, 4, L + 1, N, 3, 3));
    MF_TRY(CHECK_HOST(&sv->angles, "saved angles", dt, 4, L, N, MF_NUM_TORSIONS, 2));
    MF_TRY(CHECK_HOST(&sv->s_initial, "saved s_initial", dt, 2, N, CS));
    MF_TRY(CHECK_HOST(&sv->pair_mean, "saved pair_layer_norm mean", dt, 1, N * N));
    if (!sv->recompute) {
        MF_TRY(CHECK_HOST(&sv->z2d, "saved z2d", dt, 3, N, N, d->c_z));
        for (int64_t l = 0; l < L; l++)
            MF_REQUIRE(sv->layer[l].x1.data && sv->layer[l].update.data,
                       "structure module backward: layer %lld's saved activations missing",
                       (long long)l);
    }
    return MF_OK;
}

mf_status mf_structure_module_backward(mf_ctx *ctx, mf_tensor *dsingle, mf_tensor *dpair,
                                       mf_structure_module_params *dp,
                                       const mf_structure_module_outputs *dout,
                                       const mf_structure_module_saved *saved,
                                       const mf_tensor *single, const mf_tensor *pair,
                                       const mf_tensor *aatype, const mf_tensor *seq_mask,
                                       const mf_structure_module_params *p,
                                       const mf_structure_module_dims *d)
{
    int64_t N;
    mf_dtype dt;
    MF_TRY(check_inputs(ctx, single, pair, aatype, seq_mask, p, d, &N, &dt));
    MF_TRY(check_saved(saved, N, d, dt));
    MF_TRY(check_outputs(dout, N, d, dt, false));
    if (dp) MF_TRY(check_params(dp, d, dt, true));
    if (dsingle) MF_TRY(CHECK_HOST(dsingle, "dsingle", dt, 2, N, d->c_s));
    if (dpair) MF_TRY(CHECK_HOST(dpair, "dpair", dt, 3, N, N, d->c_z));
    const int64_t L = d->num_layer, CS = d->c_s, CZ = d->c_z;
    mf_arena *A = ctx->arena;
    const mf_arena_mark_t mark = mf_arena_mark(A);
    mf_status st = MF_OK;
    const char *lab = "structure_module backward";
    mf_structure_module_params *g = dp;
#define GRAD(field) (g ? grad_of(&g->field) : NULL)
    sm_state S = {.ctx = ctx,
                  .p = p,
                  .d = d,
                  .dt = dt,
                  .N = N,
                  .aatype = aatype,
                  .seq_mask = seq_mask,
                  .key = saved->key};
    S.act = saved->act, S.quat = saved->quat, S.trans = saved->trans, S.rot = saved->rot;
    S.angles = saved->angles, S.s_initial = saved->s_initial, S.z2d = saved->z2d;
    if (saved->recompute) {
        MF_TRY_GOTO(
            mf_arena_tensor(A, &S.z2d, dt, 3, (const int64_t[]){N, N, CZ}, "structure_module z2d"));
        MF_TRY_GOTO(mf_layer_norm_forward(ctx, &S.z2d, NULL, NULL, pair, &p->pair_layer_norm_scale,
                                          &p->pair_layer_norm_offset, MF_STRUCTURE_MODULE_LN_EPS));
    }
    mf_tensor dz2d, ds_init, ga_n, ga_l, gt_n, gt_l, dpos_last = {0};
    const int64_t nc[2] = {N, CS}, n3[2] = {N, 3};
    MF_TRY_GOTO(mf_arena_zeros(A, &dz2d, dt, 3, (const int64_t[]){N, N, CZ}, lab));
    MF_TRY_GOTO(mf_arena_zeros(A, &ds_init, dt, 2, nc, lab));
    MF_TRY_GOTO(mf_arena_zeros(A, &ga_n, dt, 2, nc, lab));
    MF_TRY_GOTO(mf_arena_zeros(A, &ga_l, dt, 2, nc, lab));
    MF_TRY_GOTO(mf_arena_zeros(A, &gt_n, dt, 2, n3, lab));
    MF_TRY_GOTO(mf_arena_zeros(A, &gt_l, dt, 2, n3, lab));
    if (dout && present(&dout->act)) MF_TRY_GOTO(mf_axpy(ctx, &ga_n, 1.0f, &dout->act));
    /* final_atom_positions come from the last layer's atom14 positions */
    if (dout && present(&dout->final_atom_positions)) {
        MF_TRY_GOTO(mf_arena_zeros(A, &dpos_last, dt, 3, (const int64_t[]){N, MF_ATOM14, 3}, lab));
        if (present(&dout->positions)) {
            mf_tensor gp = row(&dout->positions, L - 1, 3, N, MF_ATOM14, 3, 1);
            MF_TRY_GOTO(mf_axpy(ctx, &dpos_last, 1.0f, &gp));
        }
        HOST(dt, mf_atom14_to_atom37_backward, dpos_last.data, dout->final_atom_positions.data,
             aatype->data, N, 3);
    }
    for (int64_t l = L - 1; l >= 0; l--) {
        const mf_arena_mark_t mark_l = mf_arena_mark(A);
        mf_structure_module_layer_saved rec;
        const mf_structure_module_layer_saved *ls = &saved->layer[l];
        if (saved->recompute) {
            /* rerun the layer (same inputs, same dropout masks) into scratch outputs */
            layer_io io;
            MF_TRY_GOTO(mf_arena_tensor(A, &io.a, dt, 2, nc, lab));
            MF_TRY_GOTO(mf_arena_tensor(A, &io.q, dt, 2, (const int64_t[]){N, 4}, lab));
            MF_TRY_GOTO(mf_arena_tensor(A, &io.t, dt, 2, n3, lab));
            MF_TRY_GOTO(mf_arena_tensor(A, &io.R, dt, 3, (const int64_t[]){N, 3, 3}, lab));
            MF_TRY_GOTO(
                mf_arena_tensor(A, &io.ang, dt, 3, (const int64_t[]){N, MF_NUM_TORSIONS, 2}, lab));
            MF_TRY_GOTO(layer_forward(&S, l, &rec, NULL, &io));
            ls = &rec;
        }
        mf_tensor gpos = {0};
        if (l == L - 1 && dpos_last.data)
            gpos = dpos_last;
        else if (dout && present(&dout->positions))
            gpos = row(&dout->positions, l, 3, N, MF_ATOM14, 3, 1);
        st = layer_backward(&S, l, ls, dout, gpos.data ? &gpos : NULL, &ga_n, &gt_n, &ga_l, &gt_l,
                            &ds_init, &dz2d, dp);
        mf_arena_release(A, mark_l);
        if (st != MF_OK) goto cleanup;
        mf_tensor tmp = ga_n;
        ga_n = ga_l, ga_l = tmp;
        tmp = gt_n, gt_n = gt_l, gt_l = tmp;
        MF_TRY_GOTO(mf_fill(ctx, &ga_l, 0.0f));
        MF_TRY_GOTO(mf_fill(ctx, &gt_l, 0.0f));
    }
    /* ga_n is now the gradient of a_0 (line 2); T_0 is a constant */
    MF_TRY_GOTO(mf_linear_backward(ctx, &ds_init, GRAD(initial_projection_weights),
                                   GRAD(initial_projection_bias), &ga_n, &S.s_initial,
                                   &p->initial_projection_weights));
    /* lines 1 and 3 */
    MF_TRY_GOTO(mf_layer_norm_backward(
        ctx, dsingle, GRAD(single_layer_norm_scale), GRAD(single_layer_norm_offset), &ds_init,
        single, &saved->single_mean, &saved->single_rstd, &p->single_layer_norm_scale));
    MF_TRY_GOTO(mf_layer_norm_backward(ctx, dpair, GRAD(pair_layer_norm_scale),
                                       GRAD(pair_layer_norm_offset), &dz2d, pair, &saved->pair_mean,
                                       &saved->pair_rstd, &p->pair_layer_norm_scale));
#undef GRAD
cleanup:
    mf_arena_release(A, mark);
    return st;
}
