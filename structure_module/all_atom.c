/* All-atom construction (Alg. 24) and atom14 <-> atom37 maps, see all_atom.h. */
#include "structure_module/all_atom.h"

#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "structure_module/rigid.h"

#define NR MF_NUM_RESTYPES_WITH_X

static mf_all_atom_tables g_tables;
static pthread_once_t g_tables_once = PTHREAD_ONCE_INIT;

static void build_tables(void)
{
    mf_all_atom_tables *t = &g_tables;
    memset(t, 0, sizeof *t);
    mf_make_restype_rigid_group_default_frame(&t->default_frames[0][0][0][0]);
    mf_make_restype_atom14_to_rigid_group(&t->atom14_to_rigid_group[0][0]);
    mf_make_restype_atom14_rigid_group_positions(&t->atom14_rigid_group_positions[0][0][0]);
    mf_make_restype_atom14_mask(&t->atom14_mask[0][0]);
    mf_make_restype_atom37_mask(&t->atom37_mask[0][0]);
    mf_make_restype_atom14_to_atom37(&t->atom14_to_atom37[0][0]);
    mf_make_restype_atom37_to_atom14(&t->atom37_to_atom14[0][0]);
    mf_make_restype_atom14_ambiguity(&t->atom14_is_ambiguous[0][0], &t->atom14_swap[0][0]);
    mf_make_chi_angles_atom_indices(&t->chi_atom_indices[0][0][0]);
    /* AF2 atom37_to_frames: backbone from (C, CA, N), psi from (CA, C, O), chi k from the chi's
     * atoms 1..3; groups 1 and 2 (pre-omega, phi) carry no atoms and are never supervised */
    const int n = mf_atom37_index("N"), ca = mf_atom37_index("CA"), c = mf_atom37_index("C"),
              o = mf_atom37_index("O");
    for (int r = 0; r < NR; r++) {
        const int bb[3] = {c, ca, n}, psi[3] = {ca, c, o};
        for (int k = 0; k < 3; k++) {
            t->rigid_group_base_atom37[r][0][k] = bb[k];
            t->rigid_group_base_atom37[r][3][k] = psi[k];
        }
        t->rigid_group_exists[r][0] = t->rigid_group_exists[r][3] = 1.0f;
        for (int chi = 0; chi < MF_NUM_CHI; chi++) {
            if (mf_chi_angles_mask[r][chi] == 0.0f) continue;
            t->rigid_group_exists[r][4 + chi] = 1.0f;
            for (int k = 0; k < 3; k++)
                t->rigid_group_base_atom37[r][4 + chi][k] = t->chi_atom_indices[r][chi][k + 1];
        }
    }
    /* the last chi group of a residue with renaming swaps is pi-symmetric */
    int np = 0;
    const mf_ambiguous_atom_pair *pairs = mf_ambiguous_atom_pairs(&np);
    for (int p = 0; p < np; p++) {
        const int r = pairs[p].restype;
        int last = -1;
        for (int chi = 0; chi < MF_NUM_CHI; chi++)
            if (mf_chi_angles_mask[r][chi] != 0.0f) last = chi;
        if (last >= 0) t->rigid_group_is_ambiguous[r][4 + last] = 1.0f;
    }
}

const mf_all_atom_tables *mf_all_atom_tables_get(void)
{
    pthread_once(&g_tables_once, build_tables);
    return &g_tables;
}

#define real        float
#define MF_AA(name) mf_##name##_f32
#define MF_RG(name) mf_##name##_f32
#include "structure_module/all_atom.inc"
#undef real
#undef MF_AA
#undef MF_RG

#define real        double
#define MF_AA(name) mf_##name##_f64
#define MF_RG(name) mf_##name##_f64
#include "structure_module/all_atom.inc"
#undef real
#undef MF_AA
#undef MF_RG

/* ---- tensor entry points ---- */

/* t is a host tensor of dtype dt and exactly this shape (ndim dims). */
static mf_status check_host(const mf_tensor *t, const char *name, mf_dtype dt, int ndim,
                            const int64_t *shape)
{
    MF_TRY(mf_check_tensor(t, name, dt, ndim));
    char b[96];
    MF_REQUIRE(t->device == MF_DEV_CPU, "all-atom: tensor %s is not on the host (%s)", name,
               mf_tensor_describe(t, b, sizeof b));
    for (int k = 0; k < ndim; k++)
        MF_REQUIRE(t->shape[k] == shape[k], "all-atom: tensor %s is %s, dim %d expected %lld", name,
                   mf_tensor_describe(t, b, sizeof b), k, (long long)shape[k]);
    return MF_OK;
}
#define CHECK_HOST(t, name, dt, ndim, ...)                                                         \
    check_host((t), (name), (dt), (ndim), (const int64_t[MF_MAX_DIMS]){__VA_ARGS__})

static mf_status check_common(const mf_ctx *ctx, const mf_tensor *aatype, const mf_tensor *bb_rot,
                              const mf_tensor *angles, int64_t *N, mf_dtype *dt)
{
    MF_REQUIRE(ctx, "all-atom: ctx required");
    MF_REQUIRE(ctx->device == MF_DEV_CPU,
               "all-atom construction runs on the host: CPU context required");
    MF_REQUIRE(bb_rot && bb_rot->data, "all-atom: bb_rot missing");
    MF_REQUIRE(bb_rot->dtype == MF_F32 || bb_rot->dtype == MF_F64,
               "all-atom: bb_rot must be f32 or f64");
    MF_REQUIRE(bb_rot->ndim == 3, "all-atom: bb_rot must be [N, 3, 3]");
    *N = bb_rot->shape[0];
    *dt = bb_rot->dtype;
    MF_TRY(CHECK_HOST(bb_rot, "bb_rot", *dt, 3, *N, 3, 3));
    MF_TRY(CHECK_HOST(aatype, "aatype", MF_I32, 1, *N));
    MF_TRY(CHECK_HOST(angles, "angles", *dt, 3, *N, MF_NUM_TORSIONS, 2));
    const int32_t *aa = aatype->data;
    for (int64_t i = 0; i < *N; i++)
        MF_REQUIRE(aa[i] >= 0 && aa[i] <= MF_RESTYPE_UNK,
                   "all-atom: aatype[%lld] = %d is outside 0..20", (long long)i, (int)aa[i]);
    return MF_OK;
}

mf_status mf_all_atom_forward(mf_ctx *ctx, mf_tensor *frames_rot, mf_tensor *frames_trans,
                              mf_tensor *atom14, const mf_tensor *aatype, const mf_tensor *bb_rot,
                              const mf_tensor *bb_trans, const mf_tensor *angles)
{
    int64_t N;
    mf_dtype dt;
    MF_TRY(check_common(ctx, aatype, bb_rot, angles, &N, &dt));
    MF_TRY(CHECK_HOST(bb_trans, "bb_trans", dt, 2, N, 3));
    MF_TRY(CHECK_HOST(frames_rot, "frames_rot", dt, 4, N, MF_NUM_RIGID_GROUPS, 3, 3));
    MF_TRY(CHECK_HOST(frames_trans, "frames_trans", dt, 3, N, MF_NUM_RIGID_GROUPS, 3));
    if (atom14) MF_TRY(CHECK_HOST(atom14, "atom14", dt, 3, N, MF_ATOM14, 3));
    if (dt == MF_F64) {
        mf_torsion_angles_to_frames_f64(frames_rot->data, frames_trans->data, aatype->data,
                                        bb_rot->data, bb_trans->data, angles->data, N);
        if (atom14)
            mf_frames_to_atom14_pos_f64(atom14->data, aatype->data, frames_rot->data,
                                        frames_trans->data, N);
    } else {
        mf_torsion_angles_to_frames_f32(frames_rot->data, frames_trans->data, aatype->data,
                                        bb_rot->data, bb_trans->data, angles->data, N);
        if (atom14)
            mf_frames_to_atom14_pos_f32(atom14->data, aatype->data, frames_rot->data,
                                        frames_trans->data, N);
    }
    return MF_OK;
}

static void *data_or_null(mf_tensor *t)
{
    return t && t->data ? t->data : NULL;
}

mf_status mf_all_atom_backward(mf_ctx *ctx, mf_tensor *dbb_rot, mf_tensor *dbb_trans,
                               mf_tensor *dangles, const mf_tensor *dframes_rot,
                               const mf_tensor *dframes_trans, const mf_tensor *datom14,
                               const mf_tensor *aatype, const mf_tensor *bb_rot,
                               const mf_tensor *angles)
{
    int64_t N;
    mf_dtype dt;
    MF_TRY(check_common(ctx, aatype, bb_rot, angles, &N, &dt));
    MF_REQUIRE(ctx->arena, "all-atom backward: arena required");
    if (data_or_null(dbb_rot)) MF_TRY(CHECK_HOST(dbb_rot, "dbb_rot", dt, 3, N, 3, 3));
    if (data_or_null(dbb_trans)) MF_TRY(CHECK_HOST(dbb_trans, "dbb_trans", dt, 2, N, 3));
    if (data_or_null(dangles)) MF_TRY(CHECK_HOST(dangles, "dangles", dt, 3, N, MF_NUM_TORSIONS, 2));
    if (dframes_rot)
        MF_TRY(CHECK_HOST(dframes_rot, "dframes_rot", dt, 4, N, MF_NUM_RIGID_GROUPS, 3, 3));
    if (dframes_trans)
        MF_TRY(CHECK_HOST(dframes_trans, "dframes_trans", dt, 3, N, MF_NUM_RIGID_GROUPS, 3));
    if (datom14) MF_TRY(CHECK_HOST(datom14, "datom14", dt, 3, N, MF_ATOM14, 3));
    mf_arena *a = ctx->arena;
    const mf_arena_mark_t mark = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor gr, gt;
    /* the frames' total upstream gradient: their own plus the atom14 positions' */
    MF_TRY_GOTO(mf_arena_zeros(a, &gr, dt, 3, (const int64_t[]){N, MF_NUM_RIGID_GROUPS, 9},
                               "all_atom.dframes_rot"));
    MF_TRY_GOTO(mf_arena_zeros(a, &gt, dt, 3, (const int64_t[]){N, MF_NUM_RIGID_GROUPS, 3},
                               "all_atom.dframes_trans"));
    const size_t es = mf_dtype_size(dt);
    if (dframes_rot) memcpy(gr.data, dframes_rot->data, (size_t)(N * 8 * 9) * es);
    if (dframes_trans) memcpy(gt.data, dframes_trans->data, (size_t)(N * 8 * 3) * es);
    if (dt == MF_F64) {
        if (datom14)
            mf_frames_to_atom14_pos_backward_f64(gr.data, gt.data, datom14->data, aatype->data, N);
        mf_torsion_angles_to_frames_backward_f64(data_or_null(dbb_rot), data_or_null(dbb_trans),
                                                 data_or_null(dangles), gr.data, gt.data,
                                                 aatype->data, bb_rot->data, angles->data, N);
    } else {
        if (datom14)
            mf_frames_to_atom14_pos_backward_f32(gr.data, gt.data, datom14->data, aatype->data, N);
        mf_torsion_angles_to_frames_backward_f32(data_or_null(dbb_rot), data_or_null(dbb_trans),
                                                 data_or_null(dangles), gr.data, gt.data,
                                                 aatype->data, bb_rot->data, angles->data, N);
    }
cleanup:
    mf_arena_release(a, mark);
    return st;
}
