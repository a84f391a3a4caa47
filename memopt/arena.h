/* Arena: one big allocation per device, stack-discipline allocation with labels, mark/release and
 * an exact high-water mark. All activations, workspaces and (for the memory model) parameters,
 * gradients and optimizer state come from arenas, so peak memory is a number the program knows.
 *
 * Memory on the CPU is reserved with mmap and committed by the kernel on first touch, so an arena
 * may be sized generously: the process's resident set follows the high-water mark, not capacity. */
#ifndef MF_MEMOPT_ARENA_H
#define MF_MEMOPT_ARENA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "core/tensor.h"

#define MF_ARENA_MAX_LABELS 256
#define MF_ARENA_ALIGN      256 /* multiple of AVX-512 vectors and of CUDA's 256-byte alignment */

typedef struct {
    const char *label;    /* interned copy owned by the arena */
    size_t current;       /* bytes live now */
    size_t peak;          /* largest value of current */
    size_t at_high_water; /* bytes live when the arena reached its high-water mark */
    long long count;      /* number of allocations made under this label */
} mf_arena_label_stat;

typedef struct {
    size_t offset, bytes;
    int label;
} mf_arena_block;

typedef struct mf_arena {
    char name[32];
    mf_device device;
    char *base;
    size_t capacity;
    size_t offset;     /* first free byte */
    size_t high_water; /* largest offset ever reached, in bytes */
    mf_arena_block *blocks;
    int nblocks, cap_blocks;
    mf_arena_label_stat labels[MF_ARENA_MAX_LABELS];
    int nlabels;
} mf_arena;

/* A position in the stack; releasing to it frees everything allocated after it. */
typedef struct {
    int nblocks;
    size_t offset;
} mf_arena_mark_t;

mf_status mf_arena_init(mf_arena *a, mf_device device, size_t capacity, const char *name);
void mf_arena_destroy(mf_arena *a);

/* bytes rounded up to MF_ARENA_ALIGN; fails with MF_ERR_NOMEM naming the label when full. */
mf_status mf_arena_alloc(mf_arena *a, size_t bytes, const char *label, void **out);
mf_status mf_arena_tensor(mf_arena *a, mf_tensor *out, mf_dtype dtype, int ndim,
                          const int64_t *shape, const char *label);
/* Same as mf_arena_tensor and zero-filled. */
mf_status mf_arena_zeros(mf_arena *a, mf_tensor *out, mf_dtype dtype, int ndim,
                         const int64_t *shape, const char *label);

mf_arena_mark_t mf_arena_mark(const mf_arena *a);
void mf_arena_release(mf_arena *a, mf_arena_mark_t m);
/* Marks on two arenas taken together (the host's and a trunk context's; the same arena twice is
 * fine) and released together, the second arena first. */
typedef struct {
    mf_arena *a, *b;
    mf_arena_mark_t ma, mb;
} mf_arena_mark2_t;
mf_arena_mark2_t mf_arena_mark2(mf_arena *a, mf_arena *b);
void mf_arena_release2(mf_arena_mark2_t m);
void mf_arena_reset(mf_arena *a);
/* Restart peak accounting from the current usage (for measuring one phase). */
void mf_arena_reset_peak(mf_arena *a);

size_t mf_arena_used(const mf_arena *a);
size_t mf_arena_high_water(const mf_arena *a);

/* Memory table by label: live bytes, peak bytes, bytes at the high-water mark, count. */
void mf_arena_print_table(const mf_arena *a, FILE *f);
/* Human-readable size: "1.50 GiB". */
const char *mf_format_bytes(size_t bytes, char *buf, size_t cap);

/* Device hooks, provided by core/cuda when compiled with CUDA. */
mf_status mf_device_malloc(mf_device device, size_t bytes, void **out);
void mf_device_free(mf_device device, void *p, size_t bytes);
mf_status mf_device_memset0(mf_device device, void *p, size_t bytes);
/* bytes from src (on src_device) to dst (on dst_device), any pair of devices. It sees every op
 * queued before it; a copy to or from the host returns when dst holds the bytes, one within a GPU
 * is ordered before every op queued after it. */
mf_status mf_device_copy(mf_device dst_device, void *dst, mf_device src_device, const void *src,
                         size_t bytes);
/* dst = src across devices (the host and a GPU, either way): same dtype and shape; the names
 * appear in the error when they differ. */
mf_status mf_tensor_transfer(mf_tensor *dst, const mf_tensor *src, const char *what);
/* *out = a copy of src (on any device) in arena a, on a's device: same dtype and shape, under
 * `label`. out may be src. */
mf_status mf_arena_copy(mf_arena *a, mf_tensor *out, const mf_tensor *src, const char *label);

#endif
