/* Memory-model plans of the head losses (losses_simple.h): their arena scratch. */
#include "memopt/memplan.h"
#include "model/losses_simple.h"

/* scratch_doubles of losses_simple.c: n doubles, at least one */
static size_t doubles(int64_t n)
{
    return sizeof(double) * (size_t)(n > 0 ? n : 1);
}

static size_t bins_bytes(int64_t n_res)
{
    return sizeof(int32_t) * (size_t)(n_res > 0 ? n_res : 1);
}

void mf_distogram_loss_plan_forward(mf_memsim *s, int64_t n_res)
{
    mf_memsim_transient(s, doubles(n_res));
}

void mf_masked_msa_loss_plan_forward(mf_memsim *s, int64_t n_seq)
{
    mf_memsim_transient(s, doubles(n_seq));
}

void mf_plddt_loss_plan_forward(mf_memsim *s, int64_t n_res)
{
    mf_memsim_transient(s, bins_bytes(n_res));
}

void mf_plddt_loss_plan_backward(mf_memsim *s, int64_t n_res, double dloss, float resolution,
                                 const mf_plddt_loss_options *opt)
{
    /* mf_plddt_loss_backward returns before its scratch when the scale is zero (the mask sum in
     * its denominator is finite and positive) */
    if (dloss * mf_resolution_weight(&opt->resolution, resolution) == 0) return;
    mf_memsim_transient(s, bins_bytes(n_res));
}

void mf_tm_loss_plan_forward(mf_memsim *s, int64_t n_res)
{
    mf_memsim_transient(s, doubles(n_res));
}
