/* The whole model against the reference vectors (see verify_model.h). */
#include "model/verify_model.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "data/h5io.h"
#include "eval/compare.h"

#define DEFAULT_RTOL 1e-4

/* ---- comparing named datasets -------------------------------------------------------------- */

static mf_verify_item *new_item(mf_verify_report *r, const char *name)
{
    if (r->count >= MF_VERIFY_MAX_ITEMS) return NULL;
    mf_verify_item *it = &r->items[r->count++];
    memset(it, 0, sizeof *it);
    snprintf(it->name, sizeof it->name, "%s", name);
    return it;
}

/* A failed item: the candidate is missing or has another size. */
static mf_status fail_item(mf_verify_report *r, const char *name, double tol)
{
    mf_verify_item *it = new_item(r, name);
    MF_REQUIRE(it, "verify report full (%d items)", MF_VERIFY_MAX_ITEMS);
    it->result.rel = INFINITY;
    it->result.max_err = INFINITY;
    it->result.tol = tol;
    it->result.pass = false;
    return MF_OK;
}

static mf_status compare_item(mf_verify_report *r, const char *name, const float *cand,
                              int64_t ncand, const float *ref, int64_t nref, double tol)
{
    if (!cand || ncand != nref) return fail_item(r, name, tol);
    mf_verify_item *it = new_item(r, name);
    MF_REQUIRE(it, "verify report full (%d items)", MF_VERIFY_MAX_ITEMS);
    it->result = mf_compare_maxrel(cand, ref, nref, nref, NULL, 0, tol, 0.0);
    return MF_OK;
}

static double dataset_rtol(hid_t f, const char *name)
{
    double tol = DEFAULT_RTOL;
    if (mf_h5_read_attr_double(f, name, "rtol", &tol) != MF_OK) {
        mf_clear_error();
        tol = DEFAULT_RTOL;
    }
    return tol;
}

/* Where candidates come from: the outputs + recorder, or a dump file. */
typedef struct {
    const mf_alphafold_outputs *o;
    const mf_alphafold_recorder *rec;
    hid_t dump;
    const char *dump_path;
    float num_recycles;
} candidates;

/* *data and *n of candidate `name` (owned: free *owned afterwards); data NULL when absent. */
static void find_candidate(candidates *c, const char *name, const float **data, int64_t *n,
                           mf_h5_array *owned)
{
    *data = NULL;
    *n = 0;
    memset(owned, 0, sizeof *owned);
    if (c->dump >= 0) {
        if (!mf_h5_exists(c->dump, name) ||
            mf_h5_read_array(c->dump, c->dump_path, name, MF_F32, owned) != MF_OK) {
            mf_clear_error();
            return;
        }
        *data = owned->data;
        *n = mf_h5_array_numel(owned);
        return;
    }
    if (!strncmp(name, "intermediates/", 14)) {
        const mf_alphafold_record *r = c->rec ? mf_alphafold_recorder_find(c->rec, name) : NULL;
        if (r) {
            *data = r->array.data;
            *n = mf_h5_array_numel(&r->array);
        }
        return;
    }
    const mf_alphafold_outputs *o = c->o;
    const struct {
        const char *name;
        const mf_tensor *t;
    } outs[] = {
        {"final_atom_positions", &o->final_atom_positions},
        {"final_atom_mask", &o->final_atom_mask},
        {"plddt", &o->plddt},
        {"lddt_logits", &o->lddt_logits},
        {"distogram_logits", &o->distogram_logits},
        {"masked_msa_logits", &o->masked_msa_logits},
        {"experimentally_resolved_logits", &o->experimentally_resolved_logits},
        {"predicted_aligned_error_logits", &o->pae_logits},
        {"single", &o->single},
        {"pair", &o->pair},
        {"msa", &o->msa_first_row},
        {"sm/frames", &o->sm_frames},
        {"sm/positions", &o->sm_positions},
        {"sm/angles", &o->sm_angles},
    };
    if (!strcmp(name, "num_recycles")) {
        c->num_recycles = (float)o->num_iterations;
        *data = &c->num_recycles;
        *n = 1;
        return;
    }
    for (size_t k = 0; k < sizeof outs / sizeof outs[0]; k++)
        if (!strcmp(name, outs[k].name) && outs[k].t->data) {
            *data = outs[k].t->data;
            *n = mf_tensor_numel(outs[k].t);
        }
}

/* Every dataset below `group` of the reference, recursively. */
static mf_status walk(candidates *c, hid_t ref, const char *ref_path, const char *group,
                      mf_verify_report *report)
{
    char **names = NULL;
    int count = 0;
    MF_TRY(mf_h5_list(ref, group, &names, &count));
    mf_status st = MF_OK;
    for (int i = 0; st == MF_OK && i < count; i++) {
        char path[512];
        if (!strcmp(group, "/"))
            snprintf(path, sizeof path, "%s", names[i]);
        else
            snprintf(path, sizeof path, "%s/%s", group, names[i]);
        char **sub = NULL;
        int nsub = 0;
        if (mf_h5_list(ref, path, &sub, &nsub) == MF_OK) {
            mf_h5_free_names(sub, nsub);
            st = walk(c, ref, ref_path, path, report);
            continue;
        }
        mf_clear_error();
        mf_h5_array r = {0}, owned;
        st = mf_h5_read_array(ref, ref_path, path, MF_F32, &r);
        if (st != MF_OK) break;
        const float *cand;
        int64_t n;
        find_candidate(c, path, &cand, &n, &owned);
        st = compare_item(report, path, cand, n, r.data, mf_h5_array_numel(&r),
                          dataset_rtol(ref, path));
        mf_h5_array_free(&owned);
        mf_h5_array_free(&r);
    }
    mf_h5_free_names(names, count);
    return st;
}

static mf_status verify_against(candidates *c, const char *ref_path, mf_verify_report *report)
{
    hid_t ref;
    MF_TRY(mf_h5_open_read(ref_path, &ref));
    mf_status st = walk(c, ref, ref_path, "/", report);
    H5Fclose(ref);
    return st;
}

mf_status mf_verify_model_outputs(const char *ref_path, const mf_alphafold_outputs *o,
                                  const mf_alphafold_recorder *rec, mf_verify_report *report)
{
    candidates c = {.o = o, .rec = rec, .dump = -1};
    return verify_against(&c, ref_path, report);
}

mf_status mf_verify_dump_file(const char *dump_path, const char *ref_path, mf_verify_report *report)
{
    candidates c = {.dump = -1, .dump_path = dump_path};
    MF_TRY(mf_h5_open_read(dump_path, &c.dump));
    mf_status st = verify_against(&c, ref_path, report);
    H5Fclose(c.dump);
    return st;
}

/* ---- stages fed with recorded inputs ----------------------------------------------------- */

#define MAX_ARRAYS 48

typedef struct {
    mf_ctx *ctx;
    const mf_alphafold_model *m;
    const mf_processed_features *f;
    hid_t ref;
    const char *ref_path;
    mf_verify_report *report;
    mf_h5_array arrays[MAX_ARRAYS];
    int n_arrays;
} stages;

static mf_status load(stages *s, const char *name, const mf_h5_array **out)
{
    MF_REQUIRE(s->n_arrays < MAX_ARRAYS, "verify model: too many arrays");
    mf_h5_array *a = &s->arrays[s->n_arrays];
    MF_TRY(mf_h5_read_array(s->ref, s->ref_path, name, MF_F32, a));
    s->n_arrays++;
    *out = a;
    return MF_OK;
}

/* Host tensor of a[idx[0], ..., idx[nidx-1]] (at most 4 trailing dims). */
static mf_status at(const mf_h5_array *a, const char *name, int nidx, const int64_t *idx,
                    mf_tensor *out)
{
    const int nd = a->ndim - nidx;
    MF_REQUIRE(nd >= 1 && nd <= MF_MAX_DIMS, "%s: %d dims cannot be indexed by %d", name, a->ndim,
               nidx);
    int64_t off = 0;
    for (int k = 0; k < nidx; k++) {
        MF_REQUIRE(idx[k] >= 0 && idx[k] < a->shape[k], "%s: index %lld out of range in dim %d",
                   name, (long long)idx[k], k);
        off = off * a->shape[k] + idx[k];
    }
    int64_t inner = 1;
    for (int k = nidx; k < a->ndim; k++) inner *= a->shape[k];
    *out = mf_tensor_make((float *)a->data + off * inner, MF_F32, MF_DEV_CPU, nd, a->shape + nidx);
    return MF_OK;
}

/* A fresh arena copy of t (the stages update in place). */
static mf_status copy(mf_ctx *ctx, const mf_tensor *t, mf_tensor *out)
{
    MF_TRY(mf_arena_tensor(ctx->arena, out, MF_F32, t->ndim, t->shape, "verify_model.copy"));
    return mf_convert(ctx, out, t);
}

static mf_status cmp(stages *s, const char *stage, const char *tensor, const char *idx,
                     const mf_tensor *cand, const mf_tensor *ref)
{
    char name[160], ds[160];
    snprintf(name, sizeof name, "stage %s/%s%s", stage, tensor, idx);
    snprintf(ds, sizeof ds, "intermediates/%s/%s", stage, tensor);
    return compare_item(s->report, name, cand->data, mf_tensor_numel(cand), ref->data,
                        mf_tensor_numel(ref), dataset_rtol(s->ref, ds));
}

static mf_status stage_template_pair_stack(stages *s, const mf_tensor *pair_mask)
{
    const mf_alphafold_model *m = s->m;
    const mf_h5_array *in, *out;
    MF_TRY(load(s, "intermediates/template_pair_stack/in_t", &in));
    MF_TRY(load(s, "intermediates/template_pair_stack/out_t", &out));
    MF_REQUIRE(in->ndim == 5, "template_pair_stack/in_t must be [R, T, N, N, c_t]");
    for (int64_t r = 0; r < in->shape[0]; r++)
        for (int64_t t = 0; t < in->shape[1]; t++) {
            const int64_t rt[2] = {r, t};
            mf_tensor x, ref, y;
            MF_TRY(at(in, "in_t", 2, rt, &x));
            MF_TRY(at(out, "out_t", 2, rt, &ref));
            mf_arena_mark_t mark = mf_arena_mark(s->ctx->arena);
            mf_status st = copy(s->ctx, &x, &y);
            mf_dropout_key key = mf_dropout_key_inference();
            if (st == MF_OK && m->template_stack_blocks > 0)
                st = mf_template_pair_stack_forward(s->ctx, &y, NULL, pair_mask, &m->template_stack,
                                                    &m->template_stack_dims,
                                                    m->template_stack_blocks, &key);
            if (st == MF_OK)
                st =
                    mf_layer_norm_forward(s->ctx, &y, NULL, NULL, &y, &m->template_output_ln_scale,
                                          &m->template_output_ln_offset, MF_TEMPLATE_OUTPUT_LN_EPS);
            char idx[48];
            snprintf(idx, sizeof idx, "[%lld,%lld]", (long long)r, (long long)t);
            if (st == MF_OK) st = cmp(s, "template_pair_stack", "out_t", idx, &y, &ref);
            mf_arena_release(s->ctx->arena, mark);
            MF_TRY(st);
        }
    return MF_OK;
}

static mf_status stage_template_pointwise(stages *s, const mf_tensor *template_mask)
{
    const mf_alphafold_model *m = s->m;
    const mf_h5_array *in_t, *in_z, *out;
    MF_TRY(load(s, "intermediates/template_pointwise_att/in_t", &in_t));
    MF_TRY(load(s, "intermediates/template_pointwise_att/in_z", &in_z));
    MF_TRY(load(s, "intermediates/template_pointwise_att/out", &out));
    for (int64_t r = 0; r < in_z->shape[0]; r++) {
        mf_tensor t, z, ref, y;
        MF_TRY(at(in_t, "in_t", 1, &r, &t));
        MF_TRY(at(in_z, "in_z", 1, &r, &z));
        MF_TRY(at(out, "out", 1, &r, &ref));
        mf_arena_mark_t mark = mf_arena_mark(s->ctx->arena);
        mf_status st = mf_arena_tensor(s->ctx->arena, &y, MF_F32, 3, z.shape, "verify_model.tpa");
        if (st == MF_OK)
            st = mf_template_pointwise_attention_forward(s->ctx, &y, false, NULL, &z, &t,
                                                         template_mask, &m->template_pointwise,
                                                         &m->template_pointwise_dims);
        char idx[32];
        snprintf(idx, sizeof idx, "[%lld]", (long long)r);
        if (st == MF_OK) st = cmp(s, "template_pointwise_att", "out", idx, &y, &ref);
        mf_arena_release(s->ctx->arena, mark);
        MF_TRY(st);
    }
    return MF_OK;
}

static mf_status stage_extra_msa(stages *s, const mf_tensor *pair_mask)
{
    const mf_alphafold_model *m = s->m;
    const mf_h5_array *in_a, *in_z, *out;
    MF_TRY(load(s, "intermediates/extra_msa_stack/in_a", &in_a));
    MF_TRY(load(s, "intermediates/extra_msa_stack/in_z", &in_z));
    MF_TRY(load(s, "intermediates/extra_msa_stack/out_z", &out));
    for (int64_t r = 0; r < in_z->shape[0]; r++) {
        mf_tensor a, z, ref, ya, yz, mask;
        MF_TRY(at(in_a, "in_a", 1, &r, &a));
        MF_TRY(at(in_z, "in_z", 1, &r, &z));
        MF_TRY(at(out, "out_z", 1, &r, &ref));
        MF_TRY(mf_processed_tensor(s->f, "extra_msa_mask", r, &mask));
        mf_arena_mark_t mark = mf_arena_mark(s->ctx->arena);
        mf_status st = copy(s->ctx, &a, &ya);
        if (st == MF_OK) st = copy(s->ctx, &z, &yz);
        mf_dropout_key key = mf_dropout_key_inference();
        if (st == MF_OK && m->extra_stack_blocks > 0)
            st = mf_extra_msa_stack_forward(s->ctx, &ya, &yz, NULL, &mask, pair_mask,
                                            &m->extra_stack, &m->extra_stack_dims,
                                            m->extra_stack_blocks, &key);
        char idx[32];
        snprintf(idx, sizeof idx, "[%lld]", (long long)r);
        if (st == MF_OK) st = cmp(s, "extra_msa_stack", "out_z", idx, &yz, &ref);
        mf_arena_release(s->ctx->arena, mark);
        MF_TRY(st);
    }
    return MF_OK;
}

/* Blocks [k0, k1) of the Evoformer on copies of the recorded inputs of `stage`. */
static mf_status stage_evoformer(stages *s, const char *stage, int64_t k0, int64_t k1,
                                 const mf_tensor *msa_mask, const mf_tensor *pair_mask)
{
    const mf_alphafold_model *m = s->m;
    char nm[160];
    const mf_h5_array *in_m, *in_z, *out_m, *out_z, *out_s = NULL;
    snprintf(nm, sizeof nm, "intermediates/%s/in_m", stage);
    MF_TRY(load(s, nm, &in_m));
    snprintf(nm, sizeof nm, "intermediates/%s/in_z", stage);
    MF_TRY(load(s, nm, &in_z));
    snprintf(nm, sizeof nm, "intermediates/%s/out_m", stage);
    MF_TRY(load(s, nm, &out_m));
    snprintf(nm, sizeof nm, "intermediates/%s/out_z", stage);
    MF_TRY(load(s, nm, &out_z));
    const bool whole = k0 == 0 && k1 == m->evoformer_blocks;
    if (whole) {
        snprintf(nm, sizeof nm, "intermediates/%s/out_s", stage);
        MF_TRY(load(s, nm, &out_s));
    }
    mf_tensor views[MF_EVOFORMER_BLOCK_NPARAMS];
    for (int64_t r = 0; r < in_m->shape[0]; r++) {
        mf_tensor xm, xz, rm, rz, rs, ym, yz, single;
        MF_TRY(at(in_m, "in_m", 1, &r, &xm));
        MF_TRY(at(in_z, "in_z", 1, &r, &xz));
        MF_TRY(at(out_m, "out_m", 1, &r, &rm));
        MF_TRY(at(out_z, "out_z", 1, &r, &rz));
        mf_arena_mark_t mark = mf_arena_mark(s->ctx->arena);
        mf_status st = copy(s->ctx, &xm, &ym);
        if (st == MF_OK) st = copy(s->ctx, &xz, &yz);
        for (int64_t k = k0; st == MF_OK && k < k1; k++) {
            st =
                mf_evo_params_block_view(MF_PARAMS_AS_ARRAY(&m->evoformer),
                                         MF_EVOFORMER_BLOCK_NPARAMS, m->evoformer_blocks, k, views);
            mf_dropout_key key = mf_dropout_key_inference();
            if (st == MF_OK)
                st = mf_evoformer_block_forward(
                    s->ctx, &ym, &yz, NULL, &ym, &yz, msa_mask, pair_mask,
                    (const mf_evoformer_block_params *)(void *)views, &m->evoformer_dims, &key);
        }
        char idx[32];
        snprintf(idx, sizeof idx, "[%lld]", (long long)r);
        if (st == MF_OK) st = cmp(s, stage, "out_m", idx, &ym, &rm);
        if (st == MF_OK) st = cmp(s, stage, "out_z", idx, &yz, &rz);
        if (st == MF_OK && whole) {
            mf_tensor row0 = mf_tensor_make(ym.data, MF_F32, MF_DEV_CPU, 2, ym.shape + 1);
            st = at(out_s, "out_s", 1, &r, &rs);
            if (st == MF_OK)
                st = mf_arena_tensor(s->ctx->arena, &single, MF_F32, 2, rs.shape,
                                     "verify_model.single");
            if (st == MF_OK)
                st = mf_linear_forward(s->ctx, &single, &row0, &m->single_activations_weights,
                                       &m->single_activations_bias, false);
            if (st == MF_OK) st = cmp(s, stage, "out_s", idx, &single, &rs);
        }
        mf_arena_release(s->ctx->arena, mark);
        MF_TRY(st);
    }
    return MF_OK;
}

static mf_status stage_structure_module(stages *s)
{
    const mf_alphafold_model *m = s->m;
    const mf_h5_array *in_s, *in_z, *o_frames, *o_pos, *o_ang, *o_single;
    MF_TRY(load(s, "intermediates/structure_module/in_single", &in_s));
    MF_TRY(load(s, "intermediates/structure_module/in_pair", &in_z));
    MF_TRY(load(s, "intermediates/structure_module/out_frames", &o_frames));
    MF_TRY(load(s, "intermediates/structure_module/out_positions", &o_pos));
    MF_TRY(load(s, "intermediates/structure_module/out_angles", &o_ang));
    MF_TRY(load(s, "intermediates/structure_module/out_single", &o_single));
    mf_tensor aatype, seq_mask;
    MF_TRY(mf_processed_tensor(s->f, "aatype", 0, &aatype));
    MF_TRY(mf_processed_tensor(s->f, "seq_mask", 0, &seq_mask));
    const int64_t L = m->sm_dims.num_layer;
    for (int64_t r = 0; r < in_s->shape[0]; r++) {
        mf_tensor single, pair, rf, rp, ra, rs;
        MF_TRY(at(in_s, "in_single", 1, &r, &single));
        MF_TRY(at(in_z, "in_pair", 1, &r, &pair));
        MF_TRY(at(o_frames, "out_frames", 1, &r, &rf));
        MF_TRY(at(o_pos, "out_positions", 1, &r, &rp));
        MF_TRY(at(o_ang, "out_angles", 1, &r, &ra));
        MF_TRY(at(o_single, "out_single", 1, &r, &rs));
        MF_REQUIRE(rf.shape[0] == L,
                   "structure_module/out_frames has %lld layers, the model runs %lld",
                   (long long)rf.shape[0], (long long)L);
        const int64_t N = single.shape[0];
        mf_arena_mark_t mark = mf_arena_mark(s->ctx->arena);
        mf_arena *a = s->ctx->arena;
        mf_structure_module_outputs so = {0};
        mf_status st = mf_arena_tensor(a, &so.frames, MF_F32, 3, rf.shape, "verify_model.sm");
        if (st == MF_OK)
            st = mf_arena_tensor(a, &so.positions, MF_F32, 4, rp.shape, "verify_model.sm");
        if (st == MF_OK)
            st = mf_arena_tensor(a, &so.angles, MF_F32, 4, ra.shape, "verify_model.sm");
        if (st == MF_OK) st = mf_arena_tensor(a, &so.act, MF_F32, 2, rs.shape, "verify_model.sm");
        if (st == MF_OK)
            st = mf_arena_tensor(a, &so.final_atom_positions, MF_F32, 3,
                                 (const int64_t[]){N, 37, 3}, "verify_model.sm");
        if (st == MF_OK)
            st = mf_structure_module_forward(s->ctx, &so, NULL, &single, &pair, &aatype, &seq_mask,
                                             &m->sm, &m->sm_dims, NULL);
        char idx[32];
        snprintf(idx, sizeof idx, "[%lld]", (long long)r);
        if (st == MF_OK) st = cmp(s, "structure_module", "out_frames", idx, &so.frames, &rf);
        if (st == MF_OK) st = cmp(s, "structure_module", "out_positions", idx, &so.positions, &rp);
        if (st == MF_OK) st = cmp(s, "structure_module", "out_angles", idx, &so.angles, &ra);
        if (st == MF_OK) st = cmp(s, "structure_module", "out_single", idx, &so.act, &rs);
        mf_arena_release(a, mark);
        MF_TRY(st);
    }
    return MF_OK;
}

mf_status mf_verify_model_stages(mf_ctx *ctx, const mf_alphafold_model *m,
                                 const mf_processed_features *f, const char *ref_path,
                                 mf_verify_report *report)
{
    stages s = {.ctx = ctx, .m = m, .f = f, .ref_path = ref_path, .report = report};
    MF_TRY(mf_h5_open_read(ref_path, &s.ref));
    mf_status st = MF_OK;
    const mf_h5_array *pm, *mm;
    mf_tensor pair_mask, msa_mask, template_mask;
    MF_TRY_GOTO(load(&s, "intermediates/masks/pair_mask", &pm));
    MF_TRY_GOTO(load(&s, "intermediates/masks/evoformer_msa_mask", &mm));
    MF_TRY_GOTO(at(pm, "pair_mask", 0, NULL, &pair_mask));
    MF_TRY_GOTO(at(mm, "evoformer_msa_mask", 0, NULL, &msa_mask));
    if (m->templates && mf_processed_find(f, "template_mask")) {
        MF_TRY_GOTO(mf_processed_tensor(f, "template_mask", 0, &template_mask));
        MF_TRY_GOTO(stage_template_pair_stack(&s, &pair_mask));
        MF_TRY_GOTO(stage_template_pointwise(&s, &template_mask));
    }
    MF_TRY_GOTO(stage_extra_msa(&s, &pair_mask));
    for (int64_t k = 0; k < m->evoformer_blocks; k++) {
        char stage[48];
        snprintf(stage, sizeof stage, "evoformer_block%lld", (long long)k);
        char path[96];
        snprintf(path, sizeof path, "intermediates/%s", stage);
        if (!mf_h5_exists(s.ref, path)) continue;
        MF_TRY_GOTO(stage_evoformer(&s, stage, k, k + 1, &msa_mask, &pair_mask));
    }
    MF_TRY_GOTO(stage_evoformer(&s, "evoformer", 0, m->evoformer_blocks, &msa_mask, &pair_mask));
    MF_TRY_GOTO(stage_structure_module(&s));
cleanup:
    for (int i = 0; i < s.n_arrays; i++) mf_h5_array_free(&s.arrays[i]);
    H5Fclose(s.ref);
    return st;
}

/* ---- everything for a test-vector folder -------------------------------------------------- */

/* structure_module.num_layers of config.json (no parameter records it). */
static mf_status config_structure_layers(const char *path, int64_t *layers)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return MF_ERROR(MF_ERR_IO, "%s: cannot open", path);
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *text = len > 0 ? malloc((size_t)len + 1) : NULL;
    size_t got = text ? fread(text, 1, (size_t)len, fp) : 0;
    fclose(fp);
    if (!text || got != (size_t)len) {
        free(text);
        return MF_ERROR(MF_ERR_IO, "%s: cannot read", path);
    }
    text[len] = '\0';
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *sm = cJSON_GetObjectItemCaseSensitive(root, "structure_module");
    const cJSON *nl = cJSON_GetObjectItemCaseSensitive(sm, "num_layers");
    const bool ok = cJSON_IsNumber(nl) && nl->valuedouble >= 1;
    if (ok) *layers = (int64_t)nl->valuedouble;
    cJSON_Delete(root);
    if (!ok) return MF_ERROR(MF_ERR_FORMAT, "%s: structure_module.num_layers missing", path);
    return MF_OK;
}

mf_status mf_verify_model(mf_ctx *ctx, const char *dir, mf_verify_report *report)
{
    char npz[1024], feat[1024], exp[1024], cfgp[1024];
    snprintf(npz, sizeof npz, "%s/params_af2.npz", dir);
    snprintf(feat, sizeof feat, "%s/features.h5", dir);
    snprintf(exp, sizeof exp, "%s/expected_outputs.h5", dir);
    snprintf(cfgp, sizeof cfgp, "%s/config.json", dir);
    int64_t layers = 0;
    MF_TRY(config_structure_layers(cfgp, &layers));
    mf_param_store store;
    mf_param_store_init(&store);
    mf_processed_features f;
    mf_processed_init(&f);
    mf_alphafold_model *m = malloc(sizeof *m);
    mf_config *cfg = malloc(sizeof *cfg);
    mf_alphafold_recorder rec = {0};
    mf_status st = MF_OK;
    if (!m || !cfg) {
        st = MF_ERROR(MF_ERR_NOMEM, "verify model");
        goto cleanup;
    }
    MF_TRY_GOTO(mf_param_store_load(&store, npz, NULL));
    MF_TRY_GOTO(mf_alphafold_config_for_params(&store, NULL, layers, cfg));
    MF_TRY_GOTO(mf_alphafold_bind(m, cfg, &store));
    MF_TRY_GOTO(mf_processed_read(feat, &f));
    MF_TRY_GOTO(mf_verify_model_stages(ctx, m, &f, exp, report));
    {
        const mf_feature *ta = mf_processed_find(&f, "template_aatype");
        mf_alphafold_recorder_init(&rec, f.num_iterations, ta ? ta->array.shape[0] : 0);
        mf_alphafold_options opt = {
            .all_heads = true, .hook = mf_alphafold_recorder_hook, .hook_data = &rec};
        mf_alphafold_outputs out;
        mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
        st = mf_alphafold_inference(ctx, m, &f, &opt, &out);
        if (st == MF_OK) st = mf_verify_model_outputs(exp, &out, &rec, report);
        mf_arena_release(ctx->arena, mark);
    }
cleanup:
    mf_alphafold_recorder_free(&rec);
    mf_processed_free(&f);
    mf_param_store_free(&store);
    free(m);
    free(cfg);
    return st;
}
