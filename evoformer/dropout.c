/* Shared dropout with counter-based masks (see dropout.h). */
#include "evoformer/dropout.h"

#include "core/ops.h"
#include "core/rng.h"
#ifdef MF_HAVE_CUDA
#include "core/cuda/cuda_ops.h"
#endif

mf_dropout_key mf_dropout_key_inference(void)
{
    return (mf_dropout_key){.training = false};
}

mf_dropout_key mf_dropout_key_training(uint64_t seed, uint32_t stack, uint32_t recycle)
{
    return (mf_dropout_key){.training = true, .seed = seed, .stack = stack, .recycle = recycle};
}

bool mf_dropout_active(const mf_dropout_key *key, double rate)
{
    return key && key->training && rate > 0.0;
}

uint64_t mf_dropout_stream(const mf_dropout_key *key, uint32_t module)
{
    return ((uint64_t)(key->stack & 0xffu) << 56) | ((uint64_t)(module & 0xffu) << 48) |
           ((uint64_t)(key->recycle & 0xffffu) << 32) |
           ((uint64_t)(key->instance & 0xffffu) << 16) | (uint64_t)(key->block & 0xffffu);
}

mf_status mf_dropout_mask(mf_ctx *ctx, mf_tensor *mask, double rate, uint64_t seed, uint64_t stream)
{
    MF_REQUIRE(ctx && mask && mask->data && mask->ndim == 2, "dropout mask must be [A, C]");
    MF_REQUIRE(rate >= 0.0 && rate < 1.0, "dropout rate %g outside [0, 1)", rate);
    MF_REQUIRE(mask->dtype == MF_F32 || mask->dtype == MF_F64, "dropout mask must be f32 or f64");
    MF_REQUIRE(mask->device == ctx->device, "dropout mask is not on the context's device");
    const int64_t n = mf_tensor_numel(mask);
    const float keep = (float)(1.0 - rate);
    /* AF2 divides by keep_rate; the mask carries 1/keep_rate (in the mask's precision). */
    const float scale32 = (float)(1.0 / (1.0 - rate));
    if (ctx->device == MF_DEV_CUDA) {
#ifdef MF_HAVE_CUDA
        MF_REQUIRE(mask->dtype == MF_F32, "dropout mask on CUDA must be f32");
        return mf_cuda_dropout_mask(ctx, mask, keep, scale32, seed, stream);
#else
        return MF_ERROR(MF_ERR_UNSUPPORTED, "dropout mask: memfold was built without CUDA");
#endif
    }
    if (mask->dtype == MF_F64) {
        double *p = mask->data;
        const double scale = 1.0 / (1.0 - rate);
#pragma omp parallel for schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; i++)
            p[i] = mf_rng_uniform(seed, stream, (uint64_t)i) < keep ? scale : 0.0;
    } else {
        float *p = mask->data;
#pragma omp parallel for schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; i++)
            p[i] = mf_rng_uniform(seed, stream, (uint64_t)i) < keep ? scale32 : 0.0f;
    }
    return MF_OK;
}

mf_status mf_dropout_apply(mf_ctx *ctx, mf_tensor *x, const mf_tensor *mask,
                           mf_dropout_orientation orientation)
{
    MF_REQUIRE(x && x->data && x->ndim == 3, "dropout: x must be [A0, A1, C]");
    MF_REQUIRE(mask && mask->data && mask->ndim == 2 && mask->dtype == x->dtype,
               "dropout: mask must be [A, C] of x's dtype");
    const int64_t A0 = x->shape[0], A1 = x->shape[1], C = x->shape[2];
    const int64_t A = orientation == MF_DROPOUT_ROWWISE ? A1 : A0;
    MF_REQUIRE(mask->shape[0] == A && mask->shape[1] == C,
               "dropout: mask is [%lld, %lld], expected [%lld, %lld] for x [%lld, %lld, %lld]",
               (long long)mask->shape[0], (long long)mask->shape[1], (long long)A, (long long)C,
               (long long)A0, (long long)A1, (long long)C);
    if (orientation == MF_DROPOUT_ROWWISE) {
        /* one [A1 * C] mask broadcast over the leading axis */
        mf_tensor x2 = mf_tensor_4(x->data, x->dtype, x->device, 2, A0, A1 * C, 0, 0);
        mf_tensor m1 = mf_tensor_4(mask->data, mask->dtype, mask->device, 1, A1 * C, 0, 0, 0);
        return mf_mul(ctx, &x2, &x2, &m1);
    }
    /* column-wise: row a0 of x ([A1, C]) takes mask row a0 ([C]) for every a1 */
    const size_t es = mf_dtype_size(x->dtype);
    for (int64_t a = 0; a < A0; a++) {
        mf_tensor xa = mf_tensor_4((char *)x->data + (size_t)(a * A1 * C) * es, x->dtype, x->device,
                                   2, A1, C, 0, 0);
        mf_tensor ma = mf_tensor_4((char *)mask->data + (size_t)(a * C) * es, mask->dtype,
                                   mask->device, 1, C, 0, 0, 0);
        MF_TRY(mf_mul(ctx, &xa, &xa, &ma));
    }
    return MF_OK;
}

mf_status mf_dropout_forward(mf_ctx *ctx, mf_tensor *x, double rate,
                             mf_dropout_orientation orientation, const mf_dropout_key *key,
                             uint32_t module)
{
    if (!mf_dropout_active(key, rate)) return MF_OK;
    MF_REQUIRE(ctx && ctx->arena, "dropout: ctx and arena required");
    MF_REQUIRE(x && x->data && x->ndim == 3, "dropout: x must be [A0, A1, C]");
    const int64_t A = orientation == MF_DROPOUT_ROWWISE ? x->shape[1] : x->shape[0];
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    mf_tensor mask;
    MF_TRY_GOTO(mf_arena_tensor(ctx->arena, &mask, x->dtype, 2, (const int64_t[]){A, x->shape[2]},
                                "dropout mask"));
    MF_TRY_GOTO(mf_dropout_mask(ctx, &mask, rate, key->seed, mf_dropout_stream(key, module)));
    MF_TRY_GOTO(mf_dropout_apply(ctx, x, &mask, orientation));
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

void mf_dropout_plan_forward(mf_memsim *s, int64_t a0, int64_t a1, int64_t c, double rate,
                             mf_dropout_orientation orientation, const mf_dropout_key *key)
{
    if (!mf_dropout_active(key, rate)) return;
    const int64_t A = orientation == MF_DROPOUT_ROWWISE ? a1 : a0;
    mf_memsim_transient(s, mf_mem_tensor_bytes(MF_F32, A * c));
}
