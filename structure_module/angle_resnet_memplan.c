/* Memory-model plans of the angle resnet (angle_resnet.h): the arena allocations of
 * mf_angle_resnet_forward / _backward (f32 runs) replayed on a simulated arena. */
#include "memopt/memplan.h"
#include "structure_module/angle_resnet.h"

#define NA (2 * MF_NUM_TORSIONS)

/* The distinct slice lengths of a loop over rows under chunk size chunk (memplan.h). */
static int slice_lengths(int64_t rows, int64_t chunk, int64_t len[2])
{
    return mf_plan_slice_sizes(rows, mf_plan_slice_rows(chunk, rows), len);
}

void mf_angle_resnet_plan_forward(mf_memsim *s, int64_t n_res, const mf_angle_resnet_dims *d,
                                  bool saving)
{
    const int64_t N = n_res, B = d->num_residual_block, C = d->num_channel, CS = d->c_s;
    const int64_t c = s->policy.chunk_size, QS = c > 0 && c < N ? c : N;
    const mf_dtype dt = MF_F32, sdt = s->policy.storage == MF_BF16 ? MF_BF16 : MF_F32;
    const mf_memsim_mark_t mark0 = mf_memsim_mark(s);
    if (saving) {
        mf_memsim_tensor(s, MF_MEM_SAVED, sdt, (2 * B + 1) * N * C);
        mf_memsim_tensor(s, MF_MEM_SAVED, dt, N * NA); /* unnormalized, compute precision */
    }
    const mf_memsim_mark_t mark = mf_memsim_mark(s);
    mf_memsim_tensor(s, MF_MEM_WORK, dt, QS * CS);
    mf_memsim_tensor(s, MF_MEM_WORK, dt, QS * C);
    mf_memsim_tensor(s, MF_MEM_WORK, dt, QS * C);
    mf_memsim_tensor(s, MF_MEM_WORK, dt, QS * C);
    mf_memsim_tensor(s, MF_MEM_WORK, dt, QS * NA);
    int64_t len[2];
    const int ns = slice_lengths(N, c, len);
    for (int k = 0; k < ns; k++) {
        const int64_t n = len[k];
        mf_plan_linear_forward(s, n, CS, C, true, false);
        mf_plan_linear_forward(s, n, CS, C, true, true);
        for (int64_t b = 0; b < B; b++) {
            mf_plan_linear_forward(s, n, C, C, true, false);
            mf_plan_linear_forward(s, n, C, C, true, true);
        }
        mf_plan_linear_forward(s, n, C, NA, true, false);
    }
    mf_memsim_release(s, saving ? mark : mark0);
}

void mf_angle_resnet_plan_backward(mf_memsim *s, int64_t n_res, const mf_angle_resnet_dims *d,
                                   bool ds, bool ds_initial, bool dparams)
{
    const int64_t N = n_res, B = d->num_residual_block, C = d->num_channel, CS = d->c_s;
    const int64_t c = s->policy.chunk_size, QS = c > 0 && c < N ? c : N;
    const mf_dtype dt = MF_F32;
    const mf_memsim_mark_t mark = mf_memsim_mark(s);
    mf_memsim_tensor(s, MF_MEM_WORK, dt, QS * CS); /* xr */
    mf_memsim_tensor(s, MF_MEM_WORK, dt, QS * CS); /* dxr */
    for (int k = 0; k < 4; k++) mf_memsim_tensor(s, MF_MEM_WORK, dt, QS * C);
    mf_memsim_tensor(s, MF_MEM_WORK, dt, QS * NA);
    /* conversion scratch of bf16-stored activations (allocated whatever the storage) */
    mf_memsim_tensor(s, MF_MEM_WORK, dt, QS * C);
    mf_memsim_tensor(s, MF_MEM_WORK, dt, QS * C);
    int64_t len[2];
    const int ns = slice_lengths(N, c, len);
    for (int k = 0; k < ns; k++) {
        const int64_t n = len[k];
        mf_plan_linear_backward(s, n, C, NA, true, dparams, dparams);
        for (int64_t b = B - 1; b >= 0; b--) {
            mf_plan_linear_backward(s, n, C, C, true, dparams, dparams);
            mf_plan_linear_backward(s, n, C, C, true, dparams, dparams);
        }
        mf_plan_linear_backward(s, n, CS, C, ds, dparams, dparams);
        mf_plan_linear_backward(s, n, CS, C, ds_initial, dparams, dparams);
    }
    mf_memsim_release(s, mark);
}
