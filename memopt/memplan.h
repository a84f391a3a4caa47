/* The memory model: peak arena bytes of a computation, predicted without running it.
 *
 * Every activation, workspace, parameter, gradient and optimizer moment of memfold lives in an
 * arena (arena.h), a stack with an exact high-water mark. The model replays a computation's
 * allocation sequence as sizes on a simulated arena (mf_memsim): each module has a plan function
 * next to its code (the module's header declares it, e.g. mf_transition_plan_forward) that makes
 * the same allocations and releases its forward or backward makes, with sizes computed from the
 * dims, sequence lengths and the memory policy, and calls the plans of the ops it runs (the ops
 * that take arena workspace: matrix products, attention; declared below). Nothing is computed and
 * nothing is allocated, so the model answers for 5,000 residues in microseconds, and the predicted
 * peak of a composed computation is the peak of the composed replay.
 *
 * Matrix-product workspaces (bf16 input copies, oneDNN's scratchpad) come from the same code
 * path as the product itself (mf_cpu_gemm_workspace) when the simulator is given a CPU context;
 * without one they are counted as zero. On CUDA the products' workspace is the bf16 operand
 * copies, and cuBLAS's fixed workspace is outside the arena (mf_memplan_fixed_device_bytes).
 *
 * Categories (mf_mem_kind) attribute every simulated byte, so a plan prints a breakdown at its
 * peak: parameters, gradients, optimizer state, inputs, live activations, saved activations (and
 * checkpoints), transient workspaces. */
#ifndef MF_MEMOPT_MEMPLAN_H
#define MF_MEMOPT_MEMPLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/context.h"

typedef enum {
    MF_MEM_PARAMS = 0, /* model parameters */
    MF_MEM_GRADS,      /* parameter gradients */
    MF_MEM_OPTIMIZER,  /* Adam moments, EMA copy */
    MF_MEM_INPUTS,     /* features of the batch */
    MF_MEM_ACTS,       /* activations live across modules: streams, outputs, gradients of them */
    MF_MEM_SAVED,      /* saved activations and checkpoints kept for the backward */
    MF_MEM_WORK,       /* transients inside one module or op */
    MF_MEM_NKINDS
} mf_mem_kind;

const char *mf_mem_kind_name(mf_mem_kind k);

typedef struct mf_memsim {
    mf_policy policy; /* the policy the replayed code runs under (plans may change it locally) */
    mf_device device;
    mf_ctx query; /* a copy of the caller's CPU context for workspace queries (dnnl NULL: none) */
    size_t cur, peak;                   /* simulated offset and high-water mark, bytes */
    size_t kind[MF_MEM_NKINDS];         /* live bytes by category */
    size_t kind_at_peak[MF_MEM_NKINDS]; /* live bytes by category at the high-water mark */
    long long nallocs;
    mf_status status; /* the first failed workspace query (the plan goes on counting it as 0) */
    /* The planned context's host arena for offloaded checkpoints (mf_ctx.host_arena), simulated
     * by another simulator (the host context's own in a split run), or NULL: with policy.offload
     * the checkpoints are allocated there, not here, and this simulator's marks do not free
     * them (as the real context's marks do not free host-arena memory). */
    struct mf_memsim *offload_to;
} mf_memsim;

typedef struct {
    size_t cur;
    size_t kind[MF_MEM_NKINDS];
} mf_memsim_mark_t;

/* ctx: a CPU context whose oneDNN state answers matrix-product workspace queries, or NULL. The
 * policy and device are those the plan is for (not ctx's). */
void mf_memsim_init(mf_memsim *s, const mf_ctx *ctx, mf_device device, const mf_policy *policy);
/* Bytes an arena takes for `bytes` (rounded up to MF_ARENA_ALIGN). */
size_t mf_mem_round(size_t bytes);
size_t mf_mem_tensor_bytes(mf_dtype dt, int64_t numel);
void mf_memsim_alloc(mf_memsim *s, mf_mem_kind kind, size_t bytes);
void mf_memsim_tensor(mf_memsim *s, mf_mem_kind kind, mf_dtype dt, int64_t numel);
mf_memsim_mark_t mf_memsim_mark(const mf_memsim *s);
void mf_memsim_release(mf_memsim *s, mf_memsim_mark_t m);
/* A workspace taken and given back at once: raises the peak only. */
void mf_memsim_transient(mf_memsim *s, size_t bytes);
/* The two simulated arenas of a run whose trunk is on another context (the host's and the
 * trunk's: model/alphafold_memplan.h, train_step.h); the same simulator twice without one. */
typedef struct {
    mf_memsim *host, *trunk;
} mf_memsim_pair;

typedef struct {
    mf_memsim_mark_t host, trunk;
} mf_memsim_pair_mark;

bool mf_memsim_pair_split(const mf_memsim_pair *p);
/* The trunk's copy of a host tensor (none on one context). */
void mf_memsim_pair_up(const mf_memsim_pair *p, mf_dtype dt, int64_t numel);
mf_memsim_pair_mark mf_memsim_pair_mark_both(const mf_memsim_pair *p);
void mf_memsim_pair_release(const mf_memsim_pair *p, mf_memsim_pair_mark m);

/* mf_save_checkpoint of numel values of a computation in f32 (memopt/saved.h): the arena or, with
 * offload and a host arena (s->offload_to), that one (and on a GPU a transient here for the bf16
 * copy). */
void mf_memsim_checkpoint(mf_memsim *s, int64_t numel);
/* mf_restore_checkpoint's transient (a GPU's bf16 copy of an offloaded checkpoint). */
void mf_memsim_restore(mf_memsim *s, int64_t numel);

/* The distinct slice sizes of a loop `for (i0 = 0; i0 < n; i0 += rows)` with slices of
 * min(rows, n - i0): the first slice's and, when shorter, the last one's (at most 2, written to
 * sizes; returns how many). Slices of equal size allocate alike and each releases its transients,
 * so a plan replays one slice of each size: the peak is the same and the replay stays O(1) in n. */
int mf_plan_slice_sizes(int64_t n, int64_t rows, int64_t sizes[2]);
/* Rows per slice of a loop over n rows under chunk size `chunk` (mf_evo_slice_rows,
 * ga_batch_slice): chunk when it splits n, else n (at least 1). */
int64_t mf_plan_slice_rows(int64_t chunk, int64_t n);

/* The next start a plan replays of a loop `for (i0 = 0; i0 < n; i0 += c)`: after the first slice,
 * the last one when it is shorter, then the end. Slices of equal size allocate alike and release
 * their transients, so the replay keeps the peak and stays O(1) in n (replace `i0 += c` by
 * `i0 = mf_plan_next_slice(i0, n, c)` in a plan's loop whose body only takes transients). */
static inline int64_t mf_plan_next_slice(int64_t i0, int64_t n, int64_t c)
{
    if (i0 == 0 && c > 0 && n > c && n % c) return n - n % c;
    return n;
}

/* ---- op plans (core/ops_memplan.c): the arena workspace each op takes while it runs ---------- */

/* mf_cpu_gemm of a contiguous product (mf_cpu_gemm_contiguous's arguments); beta != 0 adds. */
void mf_plan_gemm(mf_memsim *s, int64_t batch, int64_t batch_a, int64_t batch_b, int64_t M,
                  int64_t N, int64_t K, bool trans_a, bool trans_b, bool beta, bool bias);
/* mf_linear_forward: x [rows, in] @ w [in, out] (+ b). */
void mf_plan_linear_forward(mf_memsim *s, int64_t rows, int64_t in, int64_t out, bool bias,
                            bool accumulate);
/* mf_linear_backward with the gradients asked for. */
void mf_plan_linear_backward(mf_memsim *s, int64_t rows, int64_t in, int64_t out, bool dx, bool dw,
                             bool db);
/* mf_matmul / mf_matmul_backward (c [batch, M, N] = op(a) @ op(b), a batch_a and b batch_b of
 * batch, op = transpose when trans). */
void mf_plan_matmul(mf_memsim *s, int64_t batch, int64_t batch_a, int64_t batch_b, int64_t M,
                    int64_t N, int64_t K, bool trans_a, bool trans_b, bool accumulate);
void mf_plan_matmul_backward(mf_memsim *s, int64_t batch, int64_t batch_a, int64_t batch_b,
                             int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b, bool da,
                             bool db);

/* Device bytes outside any arena that a context holds (cuBLAS's workspace on CUDA; 0 on CPU). */
size_t mf_memplan_fixed_device_bytes(mf_device device);

#endif
