/* Memory-model plans of the backbone update (backbone_update.h). */
#include "memopt/memplan.h"
#include "structure_module/backbone_update.h"

void mf_backbone_update_plan_forward(mf_memsim *s, int64_t n_res, int64_t c_s)
{
    mf_plan_linear_forward(s, n_res, c_s, 6, true, false);
}

void mf_backbone_update_plan_backward(mf_memsim *s, int64_t n_res, int64_t c_s, bool ds,
                                      bool dparams)
{
    if (!ds && !dparams) return; /* only the frame algebra: no update gradient needed */
    const mf_memsim_mark_t mark = mf_memsim_mark(s);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, n_res * 6);
    mf_plan_linear_backward(s, n_res, c_s, 6, ds, dparams, dparams);
    mf_memsim_release(s, mark);
}
