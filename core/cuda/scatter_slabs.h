/* The deterministic scatter-add of the CUDA backend (mf_scatter_add_rows,
 * core/cuda/cuda_layout.cu), in the common subset of C11 and CUDA C++ (the memory model,
 * model/embedders_memplan.c, sizes its scratch with the same rule; tests/test_scatter_slabs.c runs
 * the bodies on the host).
 *
 * dx[idx[i], c] += dy[i, c] over m rows i into a table of n rows: the m rows are cut into S slabs
 * of consecutive rows; pass 1 gives every (slab, column) one thread that walks its slab's rows in
 * order into its own partial table row (partials [S, n, C] in arena scratch, zeroed first), pass 2
 * gives every (table row, column) one thread that adds the S partials in slab order into dx. The
 * sums therefore run in a fixed order: the same bits on every run (atomics would add in whatever
 * order the threads arrive). AlphaFold 2's tables are small (65 relative-position and 15
 * distogram rows) and their index lists long (N^2). A table too large for the partials' budget
 * gets S = 0: atomics, order unspecified. */
#ifndef MF_CORE_CUDA_SCATTER_SLABS_H
#define MF_CORE_CUDA_SCATTER_SLABS_H

#include <stdint.h>

#include "core/dtype.h"

/* The partials' budget, floats (16 MiB). */
#define MF_SCATTER_PARTIAL_FLOATS ((int64_t)1 << 22)
/* Rows a slab takes at least (fewer slabs than that are not worth their partial tables). */
#define MF_SCATTER_MIN_SLAB_ROWS 256

/* S for m rows of C columns into n table rows: 0 for atomics. */
static inline MF_HOSTDEV int64_t mf_scatter_slabs(int64_t m, int64_t n, int64_t C)
{
    if (m <= 0 || n <= 0 || C <= 0 || n * C > MF_SCATTER_PARTIAL_FLOATS) return 0;
    int64_t s = m / MF_SCATTER_MIN_SLAB_ROWS;
    const int64_t cap = MF_SCATTER_PARTIAL_FLOATS / (n * C);
    if (s > cap) s = cap;
    return s < 1 ? 1 : s;
}

/* Pass 1, thread t of S * C: slab t / C, column t % C; partial [S, n, C] starts at zero. Rows
 * whose index is outside [0, n) add nothing (as the gather reads a zero row). */
static inline MF_HOSTDEV void mf_scatter_slab_body(float *partial, const float *dy,
                                                   const int32_t *idx, int64_t m, int64_t n,
                                                   int64_t C, int64_t S, int64_t t)
{
    const int64_t s = t / C, c = t % C, per = (m + S - 1) / S;
    const int64_t i0 = s * per, i1 = i0 + per < m ? i0 + per : m;
    float *p = partial + s * n * C + c;
    for (int64_t i = i0; i < i1; i++) {
        const int64_t j = idx[i];
        if (j >= 0 && j < n) p[j * C] += dy[i * C + c];
    }
}

/* Pass 2, thread e of n * C: dx[e] += the S partials of element e in slab order. */
static inline MF_HOSTDEV void mf_scatter_sum_body(float *dx, const float *partial, int64_t n,
                                                  int64_t C, int64_t S, int64_t e)
{
    float sum = 0.0f;
    for (int64_t s = 0; s < S; s++) sum += partial[s * n * C + e];
    dx[e] += sum;
}

#endif
