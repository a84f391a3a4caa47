/* Memory-model plan of the all-atom construction's backward (all_atom.h). */
#include "memopt/memplan.h"
#include "structure_module/all_atom.h"

void mf_all_atom_plan_backward(mf_memsim *s, int64_t n_res)
{
    const mf_memsim_mark_t mark = mf_memsim_mark(s);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, n_res * MF_NUM_RIGID_GROUPS * 9);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, n_res * MF_NUM_RIGID_GROUPS * 3);
    mf_memsim_release(s, mark);
}
