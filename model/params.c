#include "model/params.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/rng.h"

mf_status mf_params_alloc(mf_arena *arena, const mf_param_spec *specs, int n, mf_tensor *params,
                          const char *label)
{
    for (int i = 0; i < n; i++)
        MF_TRY(mf_arena_zeros(arena, &params[i], MF_F32, specs[i].ndim, specs[i].shape, label));
    return MF_OK;
}

/* Truncated standard normal on [-2, 2] by rejection, rescaled to unit variance (haiku's
 * TruncatedNormal divides the stddev by 0.87962566103423978). */
static float truncated_normal(uint64_t seed, uint64_t stream, uint64_t *counter)
{
    for (;;) {
        float z = mf_rng_normal(seed, stream, (*counter)++);
        if (fabsf(z) <= 2.0f) return z / 0.87962566103423978f;
    }
}

mf_status mf_params_init(const mf_param_spec *specs, int n, mf_tensor *params, uint64_t seed,
                         uint64_t stream_base)
{
    for (int i = 0; i < n; i++) {
        const mf_param_spec *s = &specs[i];
        MF_REQUIRE(params[i].device == MF_DEV_CPU && params[i].dtype == MF_F32,
                   "parameter %s: initialisation needs a host f32 tensor", s->name);
        float *x = params[i].data;
        int64_t count = mf_tensor_numel(&params[i]);
        uint64_t stream = stream_base + (uint64_t)i, counter = 0;
        int64_t fan_out = s->ndim ? s->shape[s->ndim - 1] : 1;
        double fan_in = s->fan_in > 0 ? (double)s->fan_in : 1.0;
        switch (s->init) {
        case MF_INIT_ZEROS:
            memset(x, 0, sizeof(float) * (size_t)count);
            break;
        case MF_INIT_ONES:
            for (int64_t k = 0; k < count; k++) x[k] = 1.0f;
            break;
        case MF_INIT_SOFTPLUS_INV_ONE:
            for (int64_t k = 0; k < count; k++) x[k] = (float)log(expm1(1.0));
            break;
        case MF_INIT_LINEAR:
        case MF_INIT_RELU: {
            float sd = (float)sqrt((s->init == MF_INIT_RELU ? 2.0 : 1.0) / fan_in);
            for (int64_t k = 0; k < count; k++)
                x[k] = sd * truncated_normal(seed, stream, &counter);
            break;
        }
        case MF_INIT_GLOROT: {
            float lim = (float)sqrt(6.0 / (fan_in + (double)fan_out));
            for (int64_t k = 0; k < count; k++)
                x[k] = lim * (2.0f * mf_rng_uniform(seed, stream, counter++) - 1.0f);
            break;
        }
        }
    }
    return MF_OK;
}

static void escaped_name(char *buf, size_t cap, const char *prefix, const char *name)
{
    char esc[512];
    mf_h5_escape_name(name, esc, sizeof esc);
    snprintf(buf, cap, "%s%s", prefix ? prefix : "", esc);
}

mf_status mf_params_bind_vectors(const mf_param_spec *specs, int n, mf_tensor *params,
                                 const mf_module_vectors *v, const char *prefix)
{
    for (int i = 0; i < n; i++) {
        char name[600];
        escaped_name(name, sizeof name, prefix, specs[i].name);
        const mf_h5_array *a;
        MF_TRY(
            mf_array_set_get(v, &v->weights, "weights", name, specs[i].ndim, specs[i].shape, &a));
        params[i] = mf_tensor_make(a->data, MF_F32, MF_DEV_CPU, specs[i].ndim, specs[i].shape);
    }
    return MF_OK;
}

mf_status mf_params_verify_grads(mf_verify_report *report, const mf_module_vectors *v,
                                 const mf_param_spec *specs, int n, const mf_tensor *grads,
                                 const char *prefix)
{
    for (int i = 0; i < n; i++) {
        char name[600];
        escaped_name(name, sizeof name, prefix, specs[i].name);
        MF_REQUIRE(grads[i].device == MF_DEV_CPU, "gradient %s must be on the host to compare",
                   name);
        MF_TRY(mf_verify_compare(report, v, "grads_weights", name, grads[i].data,
                                 mf_tensor_numel(&grads[i])));
    }
    return MF_OK;
}

int64_t mf_params_numel(const mf_param_spec *specs, int n)
{
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        int64_t c = 1;
        for (int k = 0; k < specs[i].ndim; k++) c *= specs[i].shape[k];
        total += c;
    }
    return total;
}
