/* Memory-model plans of invariant point attention (ipa.h): the arena allocations of
 * mf_ipa_forward / mf_ipa_backward (f32 runs) replayed on a simulated arena (memopt/memplan.h). */
#include "memopt/memplan.h"
#include "structure_module/ipa.h"

/* The distinct slice lengths of a loop over rows under chunk size chunk (memplan.h). */
static int slice_lengths(int64_t rows, int64_t chunk, int64_t len[2])
{
    return mf_plan_slice_sizes(rows, mf_plan_slice_rows(chunk, rows), len);
}

static int64_t slice_rows(const mf_memsim *s, int64_t N)
{
    const int64_t c = s->policy.chunk_size;
    return c > 0 && c < N ? c : N;
}

void mf_ipa_plan_forward(mf_memsim *s, int64_t n_res, const mf_ipa_dims *d, bool saving,
                         bool accumulate)
{
    const int64_t N = n_res, H = d->num_head, C = d->num_scalar_qk, CKV = C + d->num_scalar_v,
                  PQ = d->num_point_qk, PV = d->num_point_v, PA = PQ + PV, CZ = d->c_z, CS = d->c_s,
                  F = mf_ipa_feature_dim(d);
    const mf_dtype dt = MF_F32, sdt = s->policy.storage == MF_BF16 ? MF_BF16 : dt;
    const bool direct = saving && sdt == dt;
    const mf_memsim_mark_t mark0 = mf_memsim_mark(s);
    if (saving) {
        mf_memsim_tensor(s, MF_MEM_SAVED, sdt, N * H * C);
        mf_memsim_tensor(s, MF_MEM_SAVED, sdt, N * H * CKV);
        mf_memsim_tensor(s, MF_MEM_SAVED, sdt, N * 3 * H * PQ);
        mf_memsim_tensor(s, MF_MEM_SAVED, sdt, N * 3 * H * PA);
        mf_memsim_tensor(s, MF_MEM_SAVED, sdt, N * H * N);
        mf_memsim_tensor(s, MF_MEM_SAVED, sdt, N * F);
    }
    const mf_memsim_mark_t mark = mf_memsim_mark(s);
    if (!direct) {
        mf_memsim_tensor(s, MF_MEM_WORK, dt, N * H * C);
        mf_memsim_tensor(s, MF_MEM_WORK, dt, N * H * CKV);
        mf_memsim_tensor(s, MF_MEM_WORK, dt, N * 3 * H * PQ);
        mf_memsim_tensor(s, MF_MEM_WORK, dt, N * 3 * H * PA);
    }
    mf_plan_linear_forward(s, N, CS, H * C, true, false);
    mf_plan_linear_forward(s, N, CS, H * CKV, true, false);
    mf_plan_linear_forward(s, N, CS, 3 * H * PQ, true, false);
    mf_plan_linear_forward(s, N, CS, 3 * H * PA, true, false);
    /* global points and point weights */
    mf_memsim_tensor(s, MF_MEM_WORK, dt, N * H * PQ * 3);
    mf_memsim_tensor(s, MF_MEM_WORK, dt, N * H * PQ * 3);
    mf_memsim_tensor(s, MF_MEM_WORK, dt, N * H * PV * 3);
    mf_memsim_tensor(s, MF_MEM_WORK, dt, H);
    int64_t len[2];
    const int ns = slice_lengths(N, s->policy.chunk_size, len);
    for (int k = 0; k < ns; k++) {
        const int64_t nq = len[k];
        const mf_memsim_mark_t mark_s = mf_memsim_mark(s);
        mf_memsim_tensor(s, MF_MEM_WORK, dt, nq * N * H); /* pair bias */
        mf_plan_linear_forward(s, nq * N, CZ, H, true, false);
        if (!direct) {
            mf_memsim_tensor(s, MF_MEM_WORK, dt, nq * H * N); /* attention */
            mf_memsim_tensor(s, MF_MEM_WORK, dt, nq * F);     /* features */
        }
        mf_memsim_tensor(s, MF_MEM_WORK, dt, nq * H * CZ); /* pair block */
        mf_plan_matmul(s, nq, nq, nq, H, CZ, N, false, false, false);
        mf_plan_linear_forward(s, nq, F, CS, true, accumulate);
        mf_memsim_release(s, mark_s);
    }
    mf_memsim_release(s, saving ? mark : mark0);
}

void mf_ipa_plan_backward(mf_memsim *s, int64_t n_res, const mf_ipa_dims *d, bool ds, bool dz,
                          bool dparams)
{
    const int64_t N = n_res, H = d->num_head, C = d->num_scalar_qk, CKV = C + d->num_scalar_v,
                  PQ = d->num_point_qk, PV = d->num_point_v, PA = PQ + PV, CZ = d->c_z, CS = d->c_s,
                  F = mf_ipa_feature_dim(d);
    const mf_dtype dt = MF_F32;
    /* mf_saved_as_f32: bf16-stored activations are converted into f32 scratch */
    const bool conv = s->policy.storage == MF_BF16;
    const mf_memsim_mark_t mark = mf_memsim_mark(s);
    if (conv) {
        mf_memsim_tensor(s, MF_MEM_WORK, dt, N * H * C);
        mf_memsim_tensor(s, MF_MEM_WORK, dt, N * H * CKV);
        mf_memsim_tensor(s, MF_MEM_WORK, dt, N * 3 * H * PQ);
        mf_memsim_tensor(s, MF_MEM_WORK, dt, N * 3 * H * PA);
        mf_memsim_tensor(s, MF_MEM_WORK, dt, N * F);
    }
    mf_memsim_tensor(s, MF_MEM_WORK, dt, N * H * PQ * 3);
    mf_memsim_tensor(s, MF_MEM_WORK, dt, N * H * PQ * 3);
    mf_memsim_tensor(s, MF_MEM_WORK, dt, N * H * PV * 3);
    mf_memsim_tensor(s, MF_MEM_WORK, dt, H);
    mf_memsim_tensor(s, MF_MEM_WORK, dt, N * F); /* dfeat */
    mf_plan_linear_backward(s, N, F, CS, true, dparams, dparams);
    mf_memsim_tensor(s, MF_MEM_WORK, dt, N * H * C);
    mf_memsim_tensor(s, MF_MEM_WORK, dt, N * H * CKV);
    mf_memsim_tensor(s, MF_MEM_WORK, dt, N * H * PQ * 3);
    mf_memsim_tensor(s, MF_MEM_WORK, dt, N * H * PQ * 3);
    mf_memsim_tensor(s, MF_MEM_WORK, dt, N * H * PV * 3);
    mf_memsim_tensor(s, MF_MEM_WORK, dt, H);
    mf_memsim_tensor(s, MF_MEM_WORK, dt, slice_rows(s, N) * H * PV * 3); /* dog */
    int64_t len[2];
    const int ns = slice_lengths(N, s->policy.chunk_size, len);
    for (int k = 0; k < ns; k++) {
        const int64_t nq = len[k];
        const mf_memsim_mark_t mark_s = mf_memsim_mark(s);
        if (conv) mf_memsim_tensor(s, MF_MEM_WORK, dt, nq * H * N); /* attention in f32 */
        mf_memsim_tensor(s, MF_MEM_WORK, dt, nq * H * N);           /* da */
        mf_memsim_tensor(s, MF_MEM_WORK, dt, nq * H * CZ);          /* dpair */
        mf_plan_matmul_backward(s, nq, nq, nq, H, CZ, N, false, false, true, dz);
        mf_memsim_tensor(s, MF_MEM_WORK, dt, nq * H * N); /* dl */
        mf_memsim_tensor(s, MF_MEM_WORK, dt, nq * N * H); /* db2d */
        if (dz || dparams) mf_plan_linear_backward(s, nq * N, CZ, H, dz, dparams, dparams);
        mf_memsim_release(s, mark_s);
    }
    mf_memsim_tensor(s, MF_MEM_WORK, dt, N * 3 * H * PQ);
    mf_memsim_tensor(s, MF_MEM_WORK, dt, N * 3 * H * PA);
    mf_plan_linear_backward(s, N, CS, H * C, ds, dparams, dparams);
    mf_plan_linear_backward(s, N, CS, H * CKV, ds, dparams, dparams);
    mf_plan_linear_backward(s, N, CS, 3 * H * PQ, ds, dparams, dparams);
    mf_plan_linear_backward(s, N, CS, 3 * H * PA, ds, dparams, dparams);
    mf_memsim_release(s, mark);
}
