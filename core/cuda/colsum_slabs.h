/* The slab split of the CUDA column sums (core/cuda/cuda_reduce.cuh), in plain C so the memory
 * model (core/ops_attention_memplan.c) predicts their partial-sum scratch from the same rule. */
#ifndef MF_CORE_CUDA_COLSUM_SLABS_H
#define MF_CORE_CUDA_COLSUM_SLABS_H

#include <stdint.h>

/* Threads per block of the column-sum kernel (MF_CUDA_THREADS in cuda_internal.h). */
#define MF_COLSUM_THREADS 256
/* Number of blocks pass 1 aims for: enough to fill a large GPU several times. A constant, not the
 * SM count, so that the summation order and hence the bits are the same on every GPU. */
#define MF_COLSUM_TARGET_BLOCKS 1024

typedef struct {
    int ti_log2;    /* columns per block tile: 1 << ti_log2 (at most 32) */
    int64_t ntiles; /* column tiles per outer index */
    int64_t nslab;  /* slabs of the summed axis; > 1 means a second pass over partial sums */
    int64_t slab;   /* rows of the summed axis per slab */
} mf_colsum_split;

/* The split of a sum over the middle axis of [outer, n, inner]. */
static inline mf_colsum_split mf_colsum_split_of(int64_t outer, int64_t n, int64_t inner)
{
    mf_colsum_split s = {0, 0, 1, n};
    while ((1 << s.ti_log2) < inner && s.ti_log2 < 5) s.ti_log2++;
    const int64_t TI = (int64_t)1 << s.ti_log2, KL = MF_COLSUM_THREADS / TI;
    s.ntiles = (inner + TI - 1) / TI;
    const int64_t blocks = outer * s.ntiles;
    if (blocks <= 0) return s;
    int64_t nslab = (MF_COLSUM_TARGET_BLOCKS + blocks - 1) / blocks;
    const int64_t max_useful = (n + 4 * KL - 1) / (4 * KL); /* at least 4 terms per thread */
    if (nslab > max_useful) nslab = max_useful;
    if (nslab > 65535) nslab = 65535;
    if (nslab < 1) nslab = 1;
    s.slab = (n + nslab - 1) / nslab;
    if (s.slab > 0) nslab = (n + s.slab - 1) / s.slab;
    s.nslab = nslab < 1 ? 1 : nslab;
    return s;
}

/* Floats of partial sums the column sum takes from the arena (0 when one pass suffices). */
static inline int64_t mf_colsum_partial_floats(int64_t outer, int64_t n, int64_t inner)
{
    if (outer * inner == 0) return 0;
    mf_colsum_split s = mf_colsum_split_of(outer, n, inner);
    return s.nslab > 1 ? s.nslab * outer * inner : 0;
}

#endif
