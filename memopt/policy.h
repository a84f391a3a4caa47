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

/* The Evoformer-family modules whose chunk size can be set one by one (the order of
 * evoformer/block_engine.h's step kinds). */
typedef enum {
    MF_CHUNK_MSA_ROW_ATTENTION = 0,
    MF_CHUNK_MSA_COLUMN_ATTENTION,
    MF_CHUNK_MSA_COLUMN_GLOBAL_ATTENTION,
    MF_CHUNK_MSA_TRANSITION,
    MF_CHUNK_OUTER_PRODUCT_MEAN,
    MF_CHUNK_TRIANGLE_MULTIPLICATION,
    MF_CHUNK_TRIANGLE_ATTENTION_STARTING_NODE,
    MF_CHUNK_TRIANGLE_ATTENTION_ENDING_NODE,
    MF_CHUNK_PAIR_TRANSITION,
    MF_CHUNK_NUM_OPS
} mf_chunk_op;

/* "msa_row_attention", ... (the spelling of the policy key chunk.<op>). */
const char *mf_chunk_op_name(mf_chunk_op op);

typedef struct mf_policy {
    int64_t chunk_size; /* rows per slice for attention/transitions/OPM; 0 = no chunking */
    /* per module (mf_chunk_op): > 0 overrides chunk_size for that module, -1 = no chunking
     * for it, 0 = chunk_size */
    int64_t op_chunk[MF_CHUNK_NUM_OPS];
    mf_recompute recompute; /* activation recomputation granularity */
    int recompute_every;    /* k for MF_RECOMPUTE_EVERY_K */
    mf_dtype storage;       /* saved activations, checkpointed inputs (f32 or bf16) */
    mf_dtype compute;       /* matrix-product inputs (f32 or bf16); accumulation is always f32 */
    bool offload;           /* checkpointed block inputs in host memory */
    bool inplace;           /* residual updates in place at inference */
} mf_policy;

mf_policy mf_policy_default(void);
/* The chunk size module `op` runs with (0 = no chunking). */
int64_t mf_policy_op_chunk(const mf_policy *p, mf_chunk_op op);
/* Sets one field from its command-line/config spelling: chunk=off|N, recompute=off|block|every:K,
 * storage=fp32|f32|bf16, compute=fp32|f32|bf16, offload=on|off, inplace=on|off, and
 * chunk.<op>=off|N for one module (mf_chunk_op_name spellings). */
mf_status mf_policy_set(mf_policy *p, const char *key, const char *value);
/* "chunk=64 recompute=block storage=bf16 compute=f32 offload=off inplace=off" */
const char *mf_policy_describe(const mf_policy *p, char *buf, int cap);

#endif
