/* Memory-model plans of the structure losses' arena wrappers (losses_structure.h). */
#include "memopt/memplan.h"
#include "structure_module/losses_structure.h"

/* alloc_work of losses_structure.c: count doubles, at least one */
static size_t work_bytes(int64_t count)
{
    return sizeof(double) * (size_t)(count > 0 ? count : 1);
}

void mf_sidechain_fape_plan_forward(mf_memsim *s, int64_t n_res)
{
    mf_memsim_transient(s, work_bytes(2 * MF_NUM_RIGID_GROUPS * n_res));
}

void mf_backbone_fape_plan(mf_memsim *s, int64_t n_res)
{
    const mf_memsim_mark_t mark = mf_memsim_mark(s);
    mf_memsim_alloc(s, MF_MEM_WORK, work_bytes(2 * n_res));
    mf_memsim_alloc(s, MF_MEM_WORK, sizeof(float) * (size_t)(12 * n_res + 1)); /* true frames */
    mf_memsim_release(s, mark);
}

void mf_structural_violations_plan_forward(mf_memsim *s, int64_t n_res, bool metrics)
{
    const mf_memsim_mark_t mark = mf_memsim_mark(s);
    mf_memsim_alloc(s, MF_MEM_WORK, work_bytes(8 * n_res));
    if (metrics)
        mf_memsim_alloc(s, MF_MEM_WORK,
                        sizeof(float) * (size_t)(4 * n_res + 4 * MF_ATOM14 * n_res + 1));
    mf_memsim_release(s, mark);
}

void mf_structural_violation_loss_plan_backward(mf_memsim *s, int64_t n_res)
{
    mf_memsim_transient(s, work_bytes(8 * n_res));
}
