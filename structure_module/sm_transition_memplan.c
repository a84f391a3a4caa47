/* Memory-model plans of the structure-module transition (sm_transition.h). */
#include "memopt/memplan.h"
#include "structure_module/sm_transition.h"

void mf_sm_transition_plan_forward(mf_memsim *s, int64_t n_res, int64_t c_s, bool saving)
{
    const mf_mem_kind kind = saving ? MF_MEM_SAVED : MF_MEM_WORK;
    const mf_memsim_mark_t mark = mf_memsim_mark(s);
    for (int k = 0; k < 3; k++) mf_memsim_tensor(s, kind, MF_F32, n_res * c_s);
    if (saving) {
        mf_memsim_tensor(s, kind, MF_F32, n_res);
        mf_memsim_tensor(s, kind, MF_F32, n_res);
    }
    for (int k = 0; k < 3; k++) mf_plan_linear_forward(s, n_res, c_s, c_s, true, false);
    if (!saving) mf_memsim_release(s, mark);
}

void mf_sm_transition_plan_backward(mf_memsim *s, int64_t n_res, int64_t c_s, bool ds, bool dparams)
{
    const mf_memsim_mark_t mark = mf_memsim_mark(s);
    for (int k = 0; k < 3; k++) mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, n_res * c_s);
    mf_plan_linear_backward(s, n_res, c_s, c_s, true, dparams, dparams);
    mf_plan_linear_backward(s, n_res, c_s, c_s, true, dparams, dparams);
    mf_plan_linear_backward(s, n_res, c_s, c_s, ds, dparams, dparams);
    mf_memsim_release(s, mark);
}
