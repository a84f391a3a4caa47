/* Memory-model plans of the structure module (structure_module.h): the arena allocations of an f32
 * mf_structure_module_forward / _backward, in the order structure_module.c makes them, with IPA's
 * and the angle resnet's own plans at their calls. The frame algebra, the all-atom construction,
 * layer norms and elementwise ops take no arena space. */
#include "structure_module/all_atom.h"
#include "structure_module/structure_module.h"

#define NA (2 * MF_NUM_TORSIONS)

mf_structure_module_plan_opts mf_structure_module_plan_training(bool dropout)
{
    return (mf_structure_module_plan_opts){.dropout = dropout,
                                           .sidechain_outputs = true,
                                           .dparams = true,
                                           .datoms = true,
                                           .dfinal_positions = false};
}

mf_structure_module_plan_opts mf_structure_module_plan_inference(void)
{
    return (mf_structure_module_plan_opts){0};
}

/* dropout() of structure_module.c: an [N, c_s] mask, released at once. */
static void plan_dropout(mf_memsim *s, int64_t N, const mf_structure_module_dims *d,
                         const mf_structure_module_plan_opts *o)
{
    if (!o->dropout || d->dropout_rate <= 0.0) return;
    mf_memsim_transient(s, mf_mem_tensor_bytes(MF_F32, N * d->c_s));
}

/* layer_forward: keep = the layer's saved tensors stay (ls != NULL); out = the outputs are written
 * (false in the backward's recomputation). */
static void plan_layer_forward(mf_memsim *s, int64_t N, const mf_structure_module_dims *d,
                               const mf_structure_module_plan_opts *o, bool keep, bool out)
{
    const int64_t CS = d->c_s;
    const mf_mem_kind kind = keep ? MF_MEM_SAVED : MF_MEM_WORK;
    const mf_memsim_mark_t mark0 = mf_memsim_mark(s);
    mf_memsim_tensor(s, kind, MF_F32, N * CS); /* x1 */
    mf_memsim_tensor(s, kind, MF_F32, N);
    mf_memsim_tensor(s, kind, MF_F32, N);
    mf_memsim_tensor(s, kind, MF_F32, N * CS); /* b */
    mf_memsim_tensor(s, kind, MF_F32, (MF_STRUCTURE_MODULE_TRANSITION_LAYERS - 1) * N * CS);
    mf_memsim_tensor(s, kind, MF_F32, N * CS); /* x2 */
    mf_memsim_tensor(s, kind, MF_F32, N);
    mf_memsim_tensor(s, kind, MF_F32, N);
    mf_memsim_tensor(s, kind, MF_F32, N * 6); /* affine update */
    mf_ipa_plan_forward(s, N, &d->ipa, keep, true);
    plan_dropout(s, N, d, o);
    for (int k = 0; k < MF_STRUCTURE_MODULE_TRANSITION_LAYERS; k++)
        mf_plan_linear_forward(s, N, CS, CS, true, false);
    plan_dropout(s, N, d, o);
    mf_plan_linear_forward(s, N, CS, 6, true, false);
    mf_angle_resnet_plan_forward(s, N, &d->angle_resnet, keep);
    if (out) {
        const mf_memsim_mark_t mark_o = mf_memsim_mark(s);
        mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * 3); /* backbone translation in Angstrom */
        if (!o->sidechain_outputs) {
            mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * MF_NUM_RIGID_GROUPS * 9);
            mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * MF_NUM_RIGID_GROUPS * 3);
        }
        mf_memsim_release(s, mark_o);
    }
    if (!keep) mf_memsim_release(s, mark0);
}

static void plan_layer_backward(mf_memsim *s, int64_t N, const mf_structure_module_dims *d,
                                const mf_structure_module_plan_opts *o, bool atoms)
{
    const int64_t CS = d->c_s;
    const bool dp = o->dparams;
    const mf_memsim_mark_t mark = mf_memsim_mark(s);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * 9);  /* dR */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * 3);  /* dbbt */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * NA); /* dang */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * 4);  /* dq */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * 6);  /* du */
    if (atoms) mf_all_atom_plan_backward(s, N);
    mf_angle_resnet_plan_backward(s, N, &d->angle_resnet, true, true, dp);
    mf_plan_linear_backward(s, N, CS, 6, true, dp, dp);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * CS); /* dx2 */
    plan_dropout(s, N, d, o);
    for (int k = 0; k < 3; k++) mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * CS); /* db dh dl */
    for (int k = 0; k < MF_STRUCTURE_MODULE_TRANSITION_LAYERS; k++)
        mf_plan_linear_backward(s, N, CS, CS, true, dp, dp);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * CS); /* dx1 */
    plan_dropout(s, N, d, o);
    mf_ipa_plan_backward(s, N, &d->ipa, true, true, dp);
    mf_memsim_release(s, mark);
}

void mf_structure_module_plan_forward_ex(mf_memsim *s, int64_t n_res,
                                         const mf_structure_module_dims *d,
                                         const mf_structure_module_plan_opts *o, bool saving)
{
    const int64_t N = n_res, L = d->num_layer, CS = d->c_s, CZ = d->c_z;
    const bool recompute = saving && s->policy.recompute != MF_RECOMPUTE_OFF;
    const mf_mem_kind kind = saving ? MF_MEM_SAVED : MF_MEM_WORK;
    const mf_memsim_mark_t mark0 = mf_memsim_mark(s);
    /* the chain a_0..a_L, quat, trans, rot, angles and s_initial */
    mf_memsim_tensor(s, kind, MF_F32, (L + 1) * N * CS);
    mf_memsim_tensor(s, kind, MF_F32, (L + 1) * N * 4);
    mf_memsim_tensor(s, kind, MF_F32, (L + 1) * N * 3);
    mf_memsim_tensor(s, kind, MF_F32, (L + 1) * N * 9);
    mf_memsim_tensor(s, kind, MF_F32, L * N * NA);
    mf_memsim_tensor(s, kind, MF_F32, N * CS);
    if (saving) { /* the two input layer norms' statistics */
        mf_memsim_tensor(s, kind, MF_F32, N);
        mf_memsim_tensor(s, kind, MF_F32, N);
        mf_memsim_tensor(s, kind, MF_F32, N * N);
        mf_memsim_tensor(s, kind, MF_F32, N * N);
    }
    const mf_memsim_mark_t mark_z = mf_memsim_mark(s);
    mf_memsim_tensor(s, saving && !recompute ? MF_MEM_SAVED : MF_MEM_WORK, MF_F32, N * N * CZ);
    mf_plan_linear_forward(s, N, CS, CS, true, false); /* initial_projection */
    for (int64_t l = 0; l < L; l++) plan_layer_forward(s, N, d, o, saving && !recompute, true);
    if (saving) {
        if (recompute) mf_memsim_release(s, mark_z); /* z2d is recomputed in backward */
        return;
    }
    mf_memsim_release(s, mark0);
}

void mf_structure_module_plan_forward(mf_memsim *s, int64_t n_res,
                                      const mf_structure_module_dims *d, bool saving)
{
    const mf_structure_module_plan_opts o =
        saving ? mf_structure_module_plan_training(false) : mf_structure_module_plan_inference();
    mf_structure_module_plan_forward_ex(s, n_res, d, &o, saving);
}

void mf_structure_module_plan_backward(mf_memsim *s, int64_t n_res,
                                       const mf_structure_module_dims *d,
                                       const mf_structure_module_plan_opts *o)
{
    const mf_structure_module_plan_opts train = mf_structure_module_plan_training(false);
    if (!o) o = &train;
    const int64_t N = n_res, L = d->num_layer, CS = d->c_s, CZ = d->c_z;
    const bool recompute = s->policy.recompute != MF_RECOMPUTE_OFF;
    const mf_memsim_mark_t mark = mf_memsim_mark(s);
    if (recompute) mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * N * CZ); /* z2d again */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * N * CZ);                /* dz2d */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * CS);                    /* ds_init */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * CS);                    /* ga_n, ga_l */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * CS);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * 3); /* gt_n, gt_l */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * 3);
    if (o->dfinal_positions) mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * MF_ATOM14 * 3);
    for (int64_t l = L - 1; l >= 0; l--) {
        const mf_memsim_mark_t mark_l = mf_memsim_mark(s);
        if (recompute) {
            /* the layer's outputs in scratch, then its forward keeping its saved tensors */
            mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * CS);
            mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * 4);
            mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * 3);
            mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * 9);
            mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * NA);
            plan_layer_forward(s, N, d, o, true, false);
        }
        plan_layer_backward(s, N, d, o, o->datoms || (l == L - 1 && o->dfinal_positions));
        mf_memsim_release(s, mark_l);
    }
    mf_plan_linear_backward(s, N, CS, CS, true, o->dparams, o->dparams); /* initial_projection */
    mf_memsim_release(s, mark);
}
