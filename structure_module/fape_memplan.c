/* Memory-model plan of FAPE (fape.h). */
#include "memopt/memplan.h"
#include "structure_module/fape.h"

void mf_fape_plan_forward(mf_memsim *s, int64_t n_frames)
{
    mf_memsim_transient(s, sizeof(double) * (size_t)(2 * (n_frames > 0 ? n_frames : 1)));
}
