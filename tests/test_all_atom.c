/* All-atom construction (Alg. 24; structure_module/all_atom.h):
 *  1. torsions -> frames -> atom14 in f64 through the tensor entry points: the backward against
 *     central finite differences of the forward w.r.t. the backbone rotation, translation and the
 *     (sin, cos) inputs, with random upstream gradients on the 8 frames (rotation and
 *     translation) and the atom14 positions, N 23 residues covering all 21 restypes (X included),
 *     random rotations, unnormalised (sin, cos) pairs; also each upstream gradient alone (frames
 *     only, atom14 only);
 *  2. f32 against f64 (forward and backward, MF_TOL_F32_*), the backward accumulating onto
 *     nonzero gradients, the arena back at its mark, invalid inputs refused;
 *  3. geometry: with unit (sin, cos) and a rotation backbone every group frame is a rotation
 *     (R^T R = I within 1e-6, the f32 tables' rounding) and atoms keep their literature distance
 *     to their group's origin;
 *  4. AF2 reference outputs (expected_outputs.h5, 4ZEY A, both recycling iterations, both
 *     structure-module layers): from the reference's backbone frames (quaternion + translation in
 *     Angstrom) and normalised angles, the 8 group frames (out_sidechain_frames) and the atom14
 *     positions (out_positions), max|c - r| / max|r| <= MF_TOL_VEC_MODULE (measured: 0, the same
 *     f32 arithmetic); final_atom_positions and final_atom_mask through atom14 -> atom37;
 *  5. atom14 <-> atom37 on real data (features.h5): all_atom_positions -> atom14 -> atom37 gives
 *     back every atom the residue has (bitwise) and zeros elsewhere; the backward of atom14 ->
 *     atom37 against finite differences (exact: it is linear). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/h5io.h"
#include "structure_module/all_atom.h"
#include "structure_module/rigid.h"
#include "tests/support/mf_test.h"

#define NG MF_NUM_RIGID_GROUPS

/* The default frames are stored in f32 as in AF2 (built in double, rounded once): a product of
 * such rotations is orthonormal to a few f32 ulps (~1e-7), and so are the distances it keeps. */
#define TOL_F32_TABLES 1e-6

static double *dalloc(int64_t n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(double));
}

static float *falloc(int64_t n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(float));
}

static void random_rotations(double *rot, int64_t n, uint64_t seed)
{
    double *q = dalloc(4 * n);
    mf_test_fill_normal_f64(q, 4 * n, seed, 1.0);
    mf_quat_normalize_f64(q, q, n);
    mf_quat_to_rot_f64(rot, q, n);
    free(q);
}

/* ---- 1, 2: finite differences and f32 against f64 ---- */

typedef struct {
    mf_ctx *ctx;
    int64_t N;
    int32_t *aatype;
    double *bb_rot, *bb_trans, *angles; /* inputs */
    double *frot, *ftrans, *pos;        /* outputs */
    double *g_rot, *g_trans, *g_pos;    /* upstream gradients */
    double *d_rot, *d_trans, *d_angles; /* analytic gradients */
} aa_case;

static mf_tensor t64(double *p, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    return mf_tensor_4(p, MF_F64, MF_DEV_CPU, ndim, d0, d1, d2, d3);
}

static mf_tensor t32(float *p, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    return mf_tensor_4(p, MF_F32, MF_DEV_CPU, ndim, d0, d1, d2, d3);
}

static void case_fwd(void *ud)
{
    aa_case *c = ud;
    const int64_t N = c->N;
    mf_tensor aa = mf_tensor_4(c->aatype, MF_I32, MF_DEV_CPU, 1, N, 1, 1, 1);
    mf_tensor br = t64(c->bb_rot, 3, N, 3, 3, 1), bt = t64(c->bb_trans, 2, N, 3, 1, 1);
    mf_tensor an = t64(c->angles, 3, N, 7, 2, 1);
    mf_tensor fr = t64(c->frot, 4, N, NG, 3, 3), ft = t64(c->ftrans, 3, N, NG, 3, 1);
    mf_tensor ps = t64(c->pos, 3, N, 14, 3, 1);
    mf_status st = mf_all_atom_forward(c->ctx, &fr, &ft, &ps, &aa, &br, &bt, &an);
    if (st != MF_OK) mf_test_fail("all_atom forward f64: %s", mf_last_error());
}

static void case_bwd(aa_case *c, bool use_frames, bool use_pos)
{
    const int64_t N = c->N;
    memset(c->d_rot, 0, sizeof(double) * (size_t)(N * 9));
    memset(c->d_trans, 0, sizeof(double) * (size_t)(N * 3));
    memset(c->d_angles, 0, sizeof(double) * (size_t)(N * 14));
    mf_tensor aa = mf_tensor_4(c->aatype, MF_I32, MF_DEV_CPU, 1, N, 1, 1, 1);
    mf_tensor br = t64(c->bb_rot, 3, N, 3, 3, 1), an = t64(c->angles, 3, N, 7, 2, 1);
    mf_tensor dr = t64(c->d_rot, 3, N, 3, 3, 1), dtr = t64(c->d_trans, 2, N, 3, 1, 1);
    mf_tensor da = t64(c->d_angles, 3, N, 7, 2, 1);
    mf_tensor gr = t64(c->g_rot, 4, N, NG, 3, 3), gt = t64(c->g_trans, 3, N, NG, 3, 1);
    mf_tensor gp = t64(c->g_pos, 3, N, 14, 3, 1);
    MF_TEST_OK(mf_all_atom_backward(c->ctx, &dr, &dtr, &da, use_frames ? &gr : NULL,
                                    use_frames ? &gt : NULL, use_pos ? &gp : NULL, &aa, &br, &an));
}

static void case_init(aa_case *c, mf_ctx *ctx, int64_t N, uint64_t seed)
{
    memset(c, 0, sizeof *c);
    c->ctx = ctx;
    c->N = N;
    c->aatype = calloc((size_t)N, sizeof(int32_t));
    for (int64_t i = 0; i < N; i++) c->aatype[i] = (int32_t)((i * 5 + 3) % 21); /* all 21 */
    c->bb_rot = dalloc(N * 9), c->bb_trans = dalloc(N * 3), c->angles = dalloc(N * 14);
    c->frot = dalloc(N * NG * 9), c->ftrans = dalloc(N * NG * 3), c->pos = dalloc(N * 42);
    c->g_rot = dalloc(N * NG * 9), c->g_trans = dalloc(N * NG * 3), c->g_pos = dalloc(N * 42);
    c->d_rot = dalloc(N * 9), c->d_trans = dalloc(N * 3), c->d_angles = dalloc(N * 14);
    random_rotations(c->bb_rot, N, seed);
    mf_test_fill_normal_f64(c->bb_trans, N * 3, seed + 1, 5.0);
    mf_test_fill_normal_f64(c->angles, N * 14, seed + 2, 1.0);
    mf_test_fill_normal_f64(c->g_rot, N * NG * 9, seed + 3, 1.0);
    mf_test_fill_normal_f64(c->g_trans, N * NG * 3, seed + 4, 1.0);
    mf_test_fill_normal_f64(c->g_pos, N * 42, seed + 5, 1.0);
}

static void case_free(aa_case *c)
{
    free(c->aatype), free(c->bb_rot), free(c->bb_trans), free(c->angles);
    free(c->frot), free(c->ftrans), free(c->pos);
    free(c->g_rot), free(c->g_trans), free(c->g_pos);
    free(c->d_rot), free(c->d_trans), free(c->d_angles);
}

static void test_finite_differences(mf_ctx *ctx)
{
    printf("1. torsions -> frames -> atom14 (f64) against central finite differences\n");
    aa_case c;
    case_init(&c, ctx, 23, 101);
    const int64_t N = c.N;
    const mf_gc_array in[3] = {{"bb_rot", c.bb_rot, N * 9},
                               {"bb_trans", c.bb_trans, N * 3},
                               {"angles (sin, cos)", c.angles, N * 14}};
    const double *grads[3] = {c.d_rot, c.d_trans, c.d_angles};
    const mf_gc_array out[3] = {{"frames_rot", c.frot, N * NG * 9},
                                {"frames_trans", c.ftrans, N * NG * 3},
                                {"atom14", c.pos, N * 42}};
    const double *gout[3] = {c.g_rot, c.g_trans, c.g_pos};
    case_fwd(&c);
    case_bwd(&c, true, true);
    mf_gradcheck("all_atom: frames + atom14", case_fwd, &c, in, grads, 3, out, gout, 3,
                 MF_TOL_FD_STEP, MF_TOL_FD_ATOL, MF_TOL_FD_RTOL, 0);
    case_bwd(&c, true, false);
    mf_gradcheck("all_atom: frames only", case_fwd, &c, in, grads, 3, out, gout, 2, MF_TOL_FD_STEP,
                 MF_TOL_FD_ATOL, MF_TOL_FD_RTOL, 0);
    case_bwd(&c, false, true);
    mf_gradcheck("all_atom: atom14 only", case_fwd, &c, in, grads, 3, &out[2], &gout[2], 1,
                 MF_TOL_FD_STEP, MF_TOL_FD_ATOL, MF_TOL_FD_RTOL, 0);
    case_free(&c);
}

static void test_f32_against_f64(mf_ctx *ctx)
{
    printf("2. f32 against f64, accumulation, arena, invalid inputs\n");
    aa_case c;
    case_init(&c, ctx, 23, 202);
    const int64_t N = c.N;
    /* inputs representable in f32 so both runs see the same numbers */
    double *arrs[6] = {c.bb_rot, c.bb_trans, c.angles, c.g_rot, c.g_trans, c.g_pos};
    const int64_t lens[6] = {N * 9, N * 3, N * 14, N * NG * 9, N * NG * 3, N * 42};
    float *f[6];
    for (int k = 0; k < 6; k++) {
        f[k] = falloc(lens[k]);
        mf_f64_to_f32(f[k], arrs[k], lens[k]);
        mf_f32_to_f64(arrs[k], f[k], lens[k]);
    }
    case_fwd(&c);
    case_bwd(&c, true, true);
    float *frot = falloc(N * NG * 9), *ftrans = falloc(N * NG * 3), *pos = falloc(N * 42);
    float *dr = falloc(N * 9), *dtr = falloc(N * 3), *da = falloc(N * 14);
    mf_tensor aa = mf_tensor_4(c.aatype, MF_I32, MF_DEV_CPU, 1, N, 1, 1, 1);
    mf_tensor br = t32(f[0], 3, N, 3, 3, 1), bt = t32(f[1], 2, N, 3, 1, 1);
    mf_tensor an = t32(f[2], 3, N, 7, 2, 1);
    mf_tensor fr = t32(frot, 4, N, NG, 3, 3), ft = t32(ftrans, 3, N, NG, 3, 1);
    mf_tensor ps = t32(pos, 3, N, 14, 3, 1);
    mf_tensor gr = t32(f[3], 4, N, NG, 3, 3), gt = t32(f[4], 3, N, NG, 3, 1);
    mf_tensor gp = t32(f[5], 3, N, 14, 3, 1);
    mf_tensor tdr = t32(dr, 3, N, 3, 3, 1), tdt = t32(dtr, 2, N, 3, 1, 1);
    mf_tensor tda = t32(da, 3, N, 7, 2, 1);
    MF_TEST_OK(mf_all_atom_forward(ctx, &fr, &ft, &ps, &aa, &br, &bt, &an));
    mf_check_close_f32_f64("f32 frames_rot", frot, c.frot, N * NG * 9, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
    mf_check_close_f32_f64("f32 frames_trans", ftrans, c.ftrans, N * NG * 3, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
    mf_check_close_f32_f64("f32 atom14", pos, c.pos, N * 42, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    /* backward accumulates: start from 1 everywhere */
    for (int64_t i = 0; i < N * 9; i++) dr[i] = 1.0f;
    for (int64_t i = 0; i < N * 3; i++) dtr[i] = 1.0f;
    for (int64_t i = 0; i < N * 14; i++) da[i] = 1.0f;
    const size_t used = mf_arena_used(ctx->arena);
    MF_TEST_OK(mf_all_atom_backward(ctx, &tdr, &tdt, &tda, &gr, &gt, &gp, &aa, &br, &an));
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == used, "all_atom backward left arena memory behind");
    for (int64_t i = 0; i < N * 9; i++) c.d_rot[i] += 1.0;
    for (int64_t i = 0; i < N * 3; i++) c.d_trans[i] += 1.0;
    for (int64_t i = 0; i < N * 14; i++) c.d_angles[i] += 1.0;
    mf_check_close_f32_f64("f32 dbb_rot (accumulated onto 1)", dr, c.d_rot, N * 9, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
    mf_check_close_f32_f64("f32 dbb_trans (accumulated onto 1)", dtr, c.d_trans, N * 3,
                           MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    mf_check_close_f32_f64("f32 dangles (accumulated onto 1)", da, c.d_angles, N * 14,
                           MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    /* invalid inputs */
    c.aatype[3] = 21;
    MF_TEST_TRUE(mf_all_atom_forward(ctx, &fr, &ft, &ps, &aa, &br, &bt, &an) == MF_ERR_INVALID,
                 "aatype 21 accepted");
    c.aatype[3] = 3;
    mf_tensor bad = t32(f[2], 3, N, 6, 2, 1);
    MF_TEST_TRUE(mf_all_atom_forward(ctx, &fr, &ft, &ps, &aa, &br, &bt, &bad) == MF_ERR_INVALID,
                 "angles [N, 6, 2] accepted");
    mf_tensor mixed = t64(c.bb_trans, 2, N, 3, 1, 1);
    MF_TEST_TRUE(mf_all_atom_forward(ctx, &fr, &ft, &ps, &aa, &br, &mixed, &an) == MF_ERR_INVALID,
                 "f64 bb_trans with f32 bb_rot accepted");
    for (int k = 0; k < 6; k++) free(f[k]);
    free(frot), free(ftrans), free(pos), free(dr), free(dtr), free(da);
    case_free(&c);
}

/* ---- 3: geometry ---- */

static void test_geometry(mf_ctx *ctx)
{
    printf("3. rigid groups stay rigid: rotations orthonormal, literature distances kept\n");
    aa_case c;
    case_init(&c, ctx, 21, 303);
    for (int64_t k = 0; k < c.N * 7; k++) {
        double *p = c.angles + 2 * k, n = sqrt(p[0] * p[0] + p[1] * p[1]);
        p[0] /= n, p[1] /= n;
    }
    case_fwd(&c);
    const mf_all_atom_tables *tb = mf_all_atom_tables_get();
    double worst_orth = 0, worst_dist = 0;
    for (int64_t i = 0; i < c.N; i++) {
        const int r = c.aatype[i];
        for (int g = 0; g < NG; g++) {
            if (r == MF_RESTYPE_UNK) continue; /* X: zero frames by AF2's table */
            bool exists = g == 0 || g == 3 || g == 1 || g == 2 ||
                          (g >= 4 && mf_chi_angles_mask[r][g - 4] != 0.0f);
            if (!exists) continue;
            const double *R = c.frot + (i * NG + g) * 9;
            for (int a = 0; a < 3; a++)
                for (int b = 0; b < 3; b++) {
                    double s = 0;
                    for (int k = 0; k < 3; k++) s += R[3 * k + a] * R[3 * k + b];
                    s -= a == b;
                    if (fabs(s) > worst_orth) worst_orth = fabs(s);
                }
        }
        for (int a = 0; a < MF_ATOM14; a++) {
            if (tb->atom14_mask[r][a] == 0.0f) continue;
            const int g = tb->atom14_to_rigid_group[r][a];
            const double *t = c.ftrans + (i * NG + g) * 3, *p = c.pos + (i * 14 + a) * 3;
            const float *l = tb->atom14_rigid_group_positions[r][a];
            double d2 = 0, l2 = 0;
            for (int k = 0; k < 3; k++)
                d2 += (p[k] - t[k]) * (p[k] - t[k]), l2 += (double)l[k] * l[k];
            const double e = fabs(sqrt(d2) - sqrt(l2));
            if (e > worst_dist) worst_dist = e;
        }
    }
    /* the default frames are AF2's f32 table: orthonormal to f32 rounding (~1e-7) */
    printf("  max |R^T R - I| = %.3e, max | |x - t| - |lit| | = %.3e (tol %.0e: f32 tables)\n",
           worst_orth, worst_dist, TOL_F32_TABLES);
    MF_TEST_TRUE(worst_orth <= TOL_F32_TABLES && worst_dist <= TOL_F32_TABLES,
                 "rigid groups not rigid");
    case_free(&c);
}

/* ---- 4, 5: AF2 reference outputs and real data ---- */

static mf_status read_f32(hid_t f, const char *path, const char *name, mf_h5_array *a)
{
    return mf_h5_read_array(f, path, name, MF_F32, a);
}

static void test_reference_outputs(mf_ctx *ctx)
{
    printf("4. AF2 reference (expected_outputs.h5): frames + angles -> 8 group frames, atom14, "
           "atom37 (max-rel <= %.0e)\n",
           MF_TOL_VEC_MODULE);
    char fpath[1024], epath[1024];
    snprintf(fpath, sizeof fpath, "%s/testvectors/features.h5", mf_test_shared_dir());
    snprintf(epath, sizeof epath, "%s/testvectors/expected_outputs.h5", mf_test_shared_dir());
    mf_h5_quiet();
    hid_t ff = -1, fe = -1;
    MF_TEST_OK(mf_h5_open_read(fpath, &ff));
    MF_TEST_OK(mf_h5_open_read(epath, &fe));
    if (ff < 0 || fe < 0) return;
    mf_h5_array aat = {0}, frames = {0}, angles = {0}, scf = {0}, pos = {0}, fpos = {0},
                fmask = {0};
    MF_TEST_OK(mf_h5_read_array(ff, fpath, "aatype", MF_I32, &aat));
    MF_TEST_OK(read_f32(fe, epath, "intermediates/structure_module/out_frames", &frames));
    MF_TEST_OK(read_f32(fe, epath, "intermediates/structure_module/out_angles", &angles));
    MF_TEST_OK(read_f32(fe, epath, "intermediates/structure_module/out_sidechain_frames", &scf));
    MF_TEST_OK(read_f32(fe, epath, "intermediates/structure_module/out_positions", &pos));
    MF_TEST_OK(read_f32(fe, epath, "final_atom_positions", &fpos));
    MF_TEST_OK(read_f32(fe, epath, "final_atom_mask", &fmask));
    if (!aat.data || !frames.data || !angles.data || !scf.data || !pos.data || !fpos.data ||
        !fmask.data)
        goto done;
    const int64_t R = frames.shape[0], L = frames.shape[1], N = frames.shape[2];
    MF_TEST_TRUE(aat.shape[0] == N, "aatype has %lld residues, frames %lld",
                 (long long)aat.shape[0], (long long)N);
    float *rot = falloc(N * 9), *trans = falloc(N * 3), *fr = falloc(N * NG * 9);
    float *ft = falloc(N * NG * 3), *p14 = falloc(N * 42), *m4 = falloc(N * NG * 16);
    float *p37 = falloc(N * 37 * 3), *ones = falloc(N * 14), *m37 = falloc(N * 37);
    mf_tensor aa = mf_tensor_4(aat.data, MF_I32, MF_DEV_CPU, 1, N, 1, 1, 1);
    for (int64_t r = 0; r < R; r++)
        for (int64_t l = 0; l < L; l++) {
            const int64_t il = r * L + l;
            const float *fq = (const float *)frames.data + il * N * 7;
            float *q = falloc(N * 4);
            for (int64_t i = 0; i < N; i++) {
                for (int k = 0; k < 4; k++) q[4 * i + k] = fq[7 * i + k];
                for (int k = 0; k < 3; k++) trans[3 * i + k] = fq[7 * i + 4 + k];
            }
            mf_quat_to_rot_f32(rot, q, N);
            free(q);
            mf_tensor br = t32(rot, 3, N, 3, 3, 1), bt = t32(trans, 2, N, 3, 1, 1);
            mf_tensor an = t32((float *)angles.data + il * N * 14, 3, N, 7, 2, 1);
            mf_tensor tfr = t32(fr, 4, N, NG, 3, 3), tft = t32(ft, 3, N, NG, 3, 1);
            mf_tensor tp = t32(p14, 3, N, 14, 3, 1);
            MF_TEST_OK(mf_all_atom_forward(ctx, &tfr, &tft, &tp, &aa, &br, &bt, &an));
            for (int64_t k = 0; k < N * NG; k++) {
                float *m = m4 + 16 * k;
                for (int a = 0; a < 3; a++) {
                    for (int b = 0; b < 3; b++) m[4 * a + b] = fr[9 * k + 3 * a + b];
                    m[4 * a + 3] = ft[3 * k + a];
                }
                m[12] = m[13] = m[14] = 0.0f, m[15] = 1.0f;
            }
            char name[96];
            snprintf(name, sizeof name, "iteration %lld layer %lld sidechain frames", (long long)r,
                     (long long)l);
            mf_check_maxrel_f32(name, m4, (const float *)scf.data + il * N * NG * 16, N * NG * 16,
                                MF_TOL_VEC_MODULE);
            snprintf(name, sizeof name, "iteration %lld layer %lld atom14 positions", (long long)r,
                     (long long)l);
            mf_check_maxrel_f32(name, p14, (const float *)pos.data + il * N * 42, N * 42,
                                MF_TOL_VEC_MODULE);
        }
    /* the last layer of the last iteration to atom37: the final outputs */
    mf_atom14_to_atom37_f32(p37, p14, aat.data, N, 3);
    for (int64_t k = 0; k < N * 14; k++) ones[k] = 1.0f;
    mf_atom14_to_atom37_f32(m37, ones, aat.data, N, 1);
    mf_check_maxrel_f32("final_atom_positions (atom14 -> atom37)", p37, fpos.data, N * 37 * 3,
                        MF_TOL_VEC_MODULE);
    mf_check_bitwise_f32("final_atom_mask (atom37_atom_exists)", m37, fmask.data, N * 37);
    free(rot), free(trans), free(fr), free(ft), free(p14), free(m4), free(p37), free(ones),
        free(m37);
done:
    mf_h5_array_free(&aat), mf_h5_array_free(&frames), mf_h5_array_free(&angles);
    mf_h5_array_free(&scf), mf_h5_array_free(&pos), mf_h5_array_free(&fpos);
    mf_h5_array_free(&fmask);
    H5Fclose(ff);
    H5Fclose(fe);
}

static void test_atom14_atom37(void)
{
    printf("5. atom14 <-> atom37 on features.h5 (4ZEY A) and the backward of atom14 -> atom37\n");
    char fpath[1024];
    snprintf(fpath, sizeof fpath, "%s/testvectors/features.h5", mf_test_shared_dir());
    hid_t ff = -1;
    MF_TEST_OK(mf_h5_open_read(fpath, &ff));
    if (ff < 0) return;
    mf_h5_array aat = {0}, pos = {0}, mask = {0};
    MF_TEST_OK(mf_h5_read_array(ff, fpath, "aatype", MF_I32, &aat));
    MF_TEST_OK(read_f32(ff, fpath, "all_atom_positions", &pos));
    MF_TEST_OK(read_f32(ff, fpath, "all_atom_mask", &mask));
    H5Fclose(ff);
    if (!aat.data || !pos.data || !mask.data) goto done;
    const int64_t N = aat.shape[0];
    const int32_t *aa = aat.data;
    const mf_all_atom_tables *tb = mf_all_atom_tables_get();
    float *p14 = falloc(N * 42), *p37 = falloc(N * 111), *want = falloc(N * 111);
    mf_atom37_to_atom14_f32(p14, pos.data, aa, N, 3);
    mf_atom14_to_atom37_f32(p37, p14, aa, N, 3);
    int64_t present = 0, dropped = 0;
    for (int64_t i = 0; i < N; i++)
        for (int a = 0; a < 37; a++) {
            const bool has = tb->atom37_mask[aa[i]][a] != 0.0f;
            for (int k = 0; k < 3; k++)
                want[(i * 37 + a) * 3 + k] =
                    has ? ((const float *)pos.data)[(i * 37 + a) * 3 + k] : 0;
            const float m = ((const float *)mask.data)[i * 37 + a];
            present += has && m != 0.0f;
            dropped += !has && m != 0.0f; /* OXT and the like: not in atom14 */
        }
    printf("  %lld observed atoms in atom14, %lld observed atoms outside it (OXT)\n",
           (long long)present, (long long)dropped);
    mf_check_bitwise_f32("atom37 -> atom14 -> atom37 round trip", p37, want, N * 111);
    /* atom14 -> atom37 -> atom14 is the identity on the residue's slots */
    float *back = falloc(N * 42);
    mf_atom37_to_atom14_f32(back, p37, aa, N, 3);
    mf_check_bitwise_f32("atom14 -> atom37 -> atom14 round trip", back, p14, N * 42);
    /* backward of atom14 -> atom37: <dout, J din> = <J^T dout, din> for random vectors (the map
     * is linear, so this is its finite difference without truncation error) */
    double *x = dalloc(N * 42), *y = dalloc(N * 111), *g = dalloc(N * 111), *gx = dalloc(N * 42);
    mf_test_fill_normal_f64(x, N * 42, 7, 1.0);
    mf_test_fill_normal_f64(g, N * 111, 8, 1.0);
    mf_atom14_to_atom37_f64(y, x, aa, N, 3);
    mf_atom14_to_atom37_backward_f64(gx, g, aa, N, 3);
    double lhs = 0, rhs = 0;
    for (int64_t k = 0; k < N * 111; k++) lhs += g[k] * y[k];
    for (int64_t k = 0; k < N * 42; k++) rhs += gx[k] * x[k];
    mf_check_close_f64("atom14 -> atom37 backward: <g, J x> vs <J^T g, x>", &rhs, &lhs, 1, 1e-12,
                       1e-12);
    free(p14), free(p37), free(want), free(back), free(x), free(y), free(g), free(gx);
done:
    mf_h5_array_free(&aat), mf_h5_array_free(&pos), mf_h5_array_free(&mask);
}

int main(void)
{
    mf_ctx ctx;
    mf_arena arena;
    if (mf_test_ctx_cpu(&ctx, &arena, (size_t)1 << 20) != MF_OK) {
        mf_test_fail("context: %s", mf_last_error());
        return mf_test_finish("test_all_atom");
    }
    test_finite_differences(&ctx);
    test_f32_against_f64(&ctx);
    test_geometry(&ctx);
    test_reference_outputs(&ctx);
    test_atom14_atom37();
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_all_atom");
}
