/* Reference-vector verifier for invariant point attention (see verify_ipa.h). */
#include "structure_module/verify_ipa.h"

#include "structure_module/ipa.h"

/* A 2-D weight's shape, or a 1-D one's length in shape[0]. */
static mf_status weight_shape(const mf_module_vectors *v, const char *name, int ndim,
                              int64_t shape[2])
{
    mf_tensor t;
    MF_TRY(mf_verify_vector_tensor(v, &v->weights, "weights", name, &t));
    if (t.ndim != ndim)
        return MF_ERROR(MF_ERR_FORMAT, "%s: weights/%s has %d dims, expected %d", v->path, name,
                        t.ndim, ndim);
    shape[0] = t.shape[0], shape[1] = ndim > 1 ? t.shape[1] : 0;
    return MF_OK;
}

/* The module's sizes from its weights: heads from the point weights, per-head widths from the
 * projections. */
static mf_status dims_from_weights(const mf_module_vectors *v, mf_ipa_dims *d)
{
    int64_t tpw[2], qs[2], kvs[2], qp[2], kvp[2], a2d[2];
    MF_TRY(weight_shape(v, "|trainable_point_weights", 1, tpw));
    MF_TRY(weight_shape(v, "q_scalar||weights", 2, qs));
    MF_TRY(weight_shape(v, "kv_scalar||weights", 2, kvs));
    MF_TRY(weight_shape(v, "q_point_local||weights", 2, qp));
    MF_TRY(weight_shape(v, "kv_point_local||weights", 2, kvp));
    MF_TRY(weight_shape(v, "attention_2d||weights", 2, a2d));
    const int64_t H = tpw[0];
    if (H <= 0 || qs[1] % H || kvs[1] % H || qp[1] % (3 * H) || kvp[1] % (3 * H))
        return MF_ERROR(MF_ERR_FORMAT,
                        "%s: projection widths (%lld, %lld, %lld, %lld) are not multiples of the "
                        "%lld heads (x3 for points)",
                        v->path, (long long)qs[1], (long long)kvs[1], (long long)qp[1],
                        (long long)kvp[1], (long long)H);
    *d = (mf_ipa_dims){.c_s = qs[0],
                       .c_z = a2d[0],
                       .num_head = H,
                       .num_scalar_qk = qs[1] / H,
                       .num_scalar_v = kvs[1] / H - qs[1] / H,
                       .num_point_qk = qp[1] / (3 * H),
                       .num_point_v = kvp[1] / (3 * H) - qp[1] / (3 * H)};
    return MF_OK;
}

mf_status mf_verify_invariant_point_attention(mf_ctx *ctx, const mf_module_vectors *v,
                                              mf_verify_report *report)
{
    MF_REQUIRE(ctx && ctx->arena && v && report,
               "invariant_point_attention verifier: ctx, arena, vectors and report required");
    if (ctx->device != MF_DEV_CPU || ctx->arena->device != MF_DEV_CPU)
        return MF_ERROR(MF_ERR_UNSUPPORTED,
                        "invariant_point_attention verifier runs on a CPU context");
    mf_ipa_dims d;
    MF_TRY(dims_from_weights(v, &d));
    mf_param_spec specs[MF_IPA_NUM_PARAMS];
    const int n = mf_ipa_param_specs(&d, specs);
    mf_ipa_params p, dp;
    MF_TRY(mf_params_bind_vectors(specs, n, MF_PARAMS_AS_ARRAY(&p), v, ""));
    mf_tensor s, z, rot, trans, mask, gout;
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "s", &s));
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "z", &z));
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "rot", &rot));
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "trans", &trans));
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "seq_mask", &mask));
    MF_TRY(mf_verify_vector_tensor(v, &v->grad_outputs, "grad_outputs", "update", &gout));
    const int64_t N = s.shape[0];
    mf_arena *a = ctx->arena;
    mf_arena_mark_t mark = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor out, ds, dz, drot, dtrans;
    mf_ipa_saved saved;
    const char *lab = "verify ipa";
    MF_TRY_GOTO(mf_arena_zeros(a, &out, MF_F32, 2, (const int64_t[]){N, d.c_s}, lab));
    MF_TRY_GOTO(mf_arena_zeros(a, &ds, MF_F32, s.ndim, s.shape, lab));
    MF_TRY_GOTO(mf_arena_zeros(a, &dz, MF_F32, z.ndim, z.shape, lab));
    MF_TRY_GOTO(mf_arena_zeros(a, &drot, MF_F32, rot.ndim, rot.shape, lab));
    MF_TRY_GOTO(mf_arena_zeros(a, &dtrans, MF_F32, trans.ndim, trans.shape, lab));
    MF_TRY_GOTO(mf_params_alloc(a, specs, n, MF_PARAMS_AS_ARRAY(&dp), lab));
    MF_TRY_GOTO(mf_ipa_forward(ctx, &out, false, &saved, &s, &z, &rot, &trans, &mask, &p, &d));
    MF_TRY_GOTO(mf_ipa_backward(ctx, &ds, &dz, &drot, &dtrans, &dp, &gout, &saved, &s, &z, &rot,
                                &trans, &p, &d));
    MF_TRY_GOTO(mf_verify_compare(report, v, "outputs", "update", out.data, mf_tensor_numel(&out)));
    MF_TRY_GOTO(mf_verify_compare(report, v, "grads_inputs", "s", ds.data, mf_tensor_numel(&ds)));
    MF_TRY_GOTO(mf_verify_compare(report, v, "grads_inputs", "z", dz.data, mf_tensor_numel(&dz)));
    MF_TRY_GOTO(
        mf_verify_compare(report, v, "grads_inputs", "rot", drot.data, mf_tensor_numel(&drot)));
    MF_TRY_GOTO(mf_verify_compare(report, v, "grads_inputs", "trans", dtrans.data,
                                  mf_tensor_numel(&dtrans)));
    MF_TRY_GOTO(mf_params_verify_grads(report, v, specs, n, MF_PARAMS_AS_ARRAY(&dp), ""));
cleanup:
    mf_arena_release(a, mark);
    return st;
}
