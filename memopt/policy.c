#include "memopt/policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

mf_policy mf_policy_default(void)
{
    return (mf_policy){.chunk_size = 0,
                       .recompute = MF_RECOMPUTE_OFF,
                       .recompute_every = 1,
                       .storage = MF_F32,
                       .compute = MF_F32,
                       .offload = false,
                       .inplace = false};
}

static mf_status parse_dtype(const char *key, const char *v, mf_dtype *out)
{
    if (!strcmp(v, "f32") || !strcmp(v, "fp32") || !strcmp(v, "float32")) {
        *out = MF_F32;
        return MF_OK;
    }
    if (!strcmp(v, "bf16") || !strcmp(v, "bfloat16")) {
        *out = MF_BF16;
        return MF_OK;
    }
    return MF_ERROR(MF_ERR_INVALID, "policy %s=%s: expected f32 or bf16", key, v);
}

static mf_status parse_bool(const char *key, const char *v, bool *out)
{
    if (!strcmp(v, "on") || !strcmp(v, "1") || !strcmp(v, "true")) {
        *out = true;
        return MF_OK;
    }
    if (!strcmp(v, "off") || !strcmp(v, "0") || !strcmp(v, "false")) {
        *out = false;
        return MF_OK;
    }
    return MF_ERROR(MF_ERR_INVALID, "policy %s=%s: expected on or off", key, v);
}

static mf_status parse_positive(const char *key, const char *v, long long *out)
{
    char *end = NULL;
    long long n = strtoll(v, &end, 10);
    if (!*v || *end || n <= 0)
        return MF_ERROR(MF_ERR_INVALID, "policy %s=%s: expected a positive integer", key, v);
    *out = n;
    return MF_OK;
}

static const char *const chunk_op_names[MF_CHUNK_NUM_OPS] = {
    "msa_row_attention",
    "msa_column_attention",
    "msa_column_global_attention",
    "msa_transition",
    "outer_product_mean",
    "triangle_multiplication",
    "triangle_attention_starting_node",
    "triangle_attention_ending_node",
    "pair_transition",
};

const char *mf_chunk_op_name(mf_chunk_op op)
{
    return (int)op >= 0 && op < MF_CHUNK_NUM_OPS ? chunk_op_names[op] : "?";
}

int64_t mf_policy_op_chunk(const mf_policy *p, mf_chunk_op op)
{
    const int64_t c = (int)op >= 0 && op < MF_CHUNK_NUM_OPS ? p->op_chunk[op] : 0;
    return c > 0 ? c : c < 0 ? 0 : p->chunk_size;
}

mf_status mf_policy_set(mf_policy *p, const char *key, const char *v)
{
    long long n = 0;
    if (!strncmp(key, "chunk.", 6)) {
        for (int op = 0; op < MF_CHUNK_NUM_OPS; op++) {
            if (strcmp(key + 6, chunk_op_names[op])) continue;
            if (!strcmp(v, "off")) {
                p->op_chunk[op] = -1;
                return MF_OK;
            }
            MF_TRY(parse_positive(key, v, &n));
            p->op_chunk[op] = n;
            return MF_OK;
        }
        return MF_ERROR(MF_ERR_INVALID, "unknown policy key '%s' (chunk.<module>: %s, %s, ...)",
                        key, chunk_op_names[0], chunk_op_names[1]);
    }
    if (!strcmp(key, "chunk")) {
        if (!strcmp(v, "off") || !strcmp(v, "0")) {
            p->chunk_size = 0;
            return MF_OK;
        }
        MF_TRY(parse_positive(key, v, &n));
        p->chunk_size = n;
        return MF_OK;
    }
    if (!strcmp(key, "recompute")) {
        if (!strcmp(v, "off")) {
            p->recompute = MF_RECOMPUTE_OFF;
        } else if (!strcmp(v, "block")) {
            p->recompute = MF_RECOMPUTE_BLOCK;
            p->recompute_every = 1;
        } else if (!strncmp(v, "every:", 6)) {
            MF_TRY(parse_positive(key, v + 6, &n));
            p->recompute = MF_RECOMPUTE_EVERY_K;
            p->recompute_every = (int)n;
        } else {
            return MF_ERROR(MF_ERR_INVALID, "policy recompute=%s: expected off, block or every:K",
                            v);
        }
        return MF_OK;
    }
    if (!strcmp(key, "storage")) return parse_dtype(key, v, &p->storage);
    if (!strcmp(key, "compute")) return parse_dtype(key, v, &p->compute);
    if (!strcmp(key, "offload")) return parse_bool(key, v, &p->offload);
    if (!strcmp(key, "inplace")) return parse_bool(key, v, &p->inplace);
    return MF_ERROR(
        MF_ERR_INVALID,
        "unknown policy key '%s' (chunk, recompute, storage, compute, offload, inplace)", key);
}

const char *mf_policy_describe(const mf_policy *p, char *buf, int cap)
{
    char chunk[24], rec[24];
    if (p->chunk_size)
        snprintf(chunk, sizeof chunk, "%lld", (long long)p->chunk_size);
    else
        snprintf(chunk, sizeof chunk, "off");
    if (p->recompute == MF_RECOMPUTE_OFF)
        snprintf(rec, sizeof rec, "off");
    else if (p->recompute == MF_RECOMPUTE_BLOCK)
        snprintf(rec, sizeof rec, "block");
    else
        snprintf(rec, sizeof rec, "every:%d", p->recompute_every);
    int len = snprintf(buf, (size_t)cap,
                       "chunk=%s recompute=%s storage=%s compute=%s offload=%s inplace=%s", chunk,
                       rec, mf_dtype_name(p->storage), mf_dtype_name(p->compute),
                       p->offload ? "on" : "off", p->inplace ? "on" : "off");
    for (int op = 0; op < MF_CHUNK_NUM_OPS && len >= 0 && len < cap; op++) {
        if (!p->op_chunk[op]) continue;
        if (p->op_chunk[op] < 0)
            len += snprintf(buf + len, (size_t)(cap - len), " chunk.%s=off", chunk_op_names[op]);
        else
            len += snprintf(buf + len, (size_t)(cap - len), " chunk.%s=%lld", chunk_op_names[op],
                            (long long)p->op_chunk[op]);
    }
    return buf;
}
