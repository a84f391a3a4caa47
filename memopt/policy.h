/* The memory policy: one struct, set at run time, passed once through the context. Every policy
 * must reproduce the baseline's numbers (bitwise where the arithmetic order is unchanged). */
#ifndef MF_MEMOPT_POLICY_H
#define MF_MEMOPT_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/status.h"

typedef enum {
    MF_RECOMPUTE_OFF = 0,     /* keep every saved activation */
    MF_RECOMPUTE_BLOCK = 1,   /* each block keeps its inputs, reruns its forward in backward */
    MF_RECOMPUTE_EVERY_K = 2, /* one checkpoint per recompute_every blocks */
} mf_recompute;

typedef struct mf_policy {
    int64_t chunk_size;     /* rows per slice for attention/transitions/OPM; 0 = no chunking */
    mf_recompute recompute; /* activation recomputation granularity */
    int recompute_every;    /* k for MF_RECOMPUTE_EVERY_K */
    mf_dtype storage;       /* saved activations, checkpointed inputs (f32 or bf16) */
    mf_dtype compute;       /* matrix-product inputs (f32 or bf16); accumulation is always f32 */
    bool offload;           /* checkpointed block inputs in host memory */
    bool inplace;           /* residual updates in place at inference */
} mf_policy;

mf_policy mf_policy_default(void);
/* Sets one field from its command-line/config spelling: chunk=off|N, recompute=off|block|every:K,
 * storage=fp32|f32|bf16, compute=fp32|f32|bf16, offload=on|off, inplace=on|off. */
mf_status mf_policy_set(mf_policy *p, const char *key, const char *value);
/* "chunk=64 recompute=block storage=bf16 compute=f32 offload=off inplace=off" */
const char *mf_policy_describe(const mf_policy *p, char *buf, int cap);

#endif
