#include "memopt/arena.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#ifdef MF_HAVE_CUDA
#include "core/cuda/cuda_backend.h"
#endif

mf_status mf_device_malloc(mf_device device, size_t bytes, void **out)
{
    *out = NULL;
    if (device == MF_DEV_CPU) {
        void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
            return MF_ERROR(MF_ERR_NOMEM, "cannot reserve %zu bytes of host memory", bytes);
        *out = p;
        return MF_OK;
    }
#ifdef MF_HAVE_CUDA
    return mf_cuda_malloc(bytes, out);
#else
    return MF_ERROR(MF_ERR_UNSUPPORTED, "memfold was built without CUDA (MEMFOLD_CUDA=OFF)");
#endif
}

void mf_device_free(mf_device device, void *p, size_t bytes)
{
    if (!p) return;
    if (device == MF_DEV_CPU) {
        munmap(p, bytes);
        return;
    }
#ifdef MF_HAVE_CUDA
    mf_cuda_free(p);
#endif
}

mf_status mf_device_memset0(mf_device device, void *p, size_t bytes)
{
    if (device == MF_DEV_CPU) {
        memset(p, 0, bytes);
        return MF_OK;
    }
#ifdef MF_HAVE_CUDA
    return mf_cuda_memset0(p, bytes);
#else
    return MF_ERROR(MF_ERR_UNSUPPORTED, "memfold was built without CUDA (MEMFOLD_CUDA=OFF)");
#endif
}

mf_status mf_device_copy(mf_device dst_device, void *dst, mf_device src_device, const void *src,
                         size_t bytes)
{
    if (bytes == 0) return MF_OK;
    if (dst_device == MF_DEV_CPU && src_device == MF_DEV_CPU) {
        memcpy(dst, src, bytes);
        return MF_OK;
    }
#ifdef MF_HAVE_CUDA
    if (src_device == MF_DEV_CPU) return mf_cuda_copy_to_device(dst, src, bytes);
    if (dst_device == MF_DEV_CPU) return mf_cuda_copy_to_host(dst, src, bytes);
    return mf_cuda_copy_on_device(dst, src, bytes);
#else
    return MF_ERROR(MF_ERR_UNSUPPORTED, "memfold was built without CUDA (MEMFOLD_CUDA=OFF)");
#endif
}

mf_status mf_tensor_transfer(mf_tensor *dst, const mf_tensor *src, const char *what)
{
    MF_REQUIRE(dst && src, "transfer %s: arguments", what);
    bool same = dst->dtype == src->dtype && dst->ndim == src->ndim;
    for (int k = 0; same && k < dst->ndim; k++) same = dst->shape[k] == src->shape[k];
    if (!same) {
        char a[96], b[96];
        return MF_ERROR(MF_ERR_INVALID, "transfer %s: destination %s, source %s", what,
                        mf_tensor_describe(dst, a, sizeof a), mf_tensor_describe(src, b, sizeof b));
    }
    const size_t bytes = mf_tensor_bytes(src);
    MF_REQUIRE(bytes == 0 || (dst->data && src->data), "transfer %s: a tensor has no data", what);
    mf_status st = mf_device_copy(dst->device, dst->data, src->device, src->data, bytes);
    if (st != MF_OK) return mf_error_context(st, "transfer %s", what);
    return MF_OK;
}

mf_status mf_arena_copy(mf_arena *a, mf_tensor *out, const mf_tensor *src, const char *label)
{
    const mf_tensor s = *src;
    MF_TRY(mf_arena_tensor(a, out, s.dtype, s.ndim, s.shape, label));
    return mf_tensor_transfer(out, &s, label);
}

mf_status mf_arena_init(mf_arena *a, mf_device device, size_t capacity, const char *name)
{
    memset(a, 0, sizeof *a);
    snprintf(a->name, sizeof a->name, "%s", name ? name : "arena");
    a->device = device;
    capacity = (capacity + MF_ARENA_ALIGN - 1) / MF_ARENA_ALIGN * MF_ARENA_ALIGN;
    MF_REQUIRE(capacity > 0, "arena '%s' needs a positive capacity", a->name);
    a->cap_blocks = 1024;
    a->blocks = malloc(sizeof *a->blocks * (size_t)a->cap_blocks);
    if (!a->blocks) return MF_ERROR(MF_ERR_NOMEM, "arena '%s': no memory for bookkeeping", a->name);
    mf_status st = mf_device_malloc(device, capacity, (void **)&a->base);
    if (st != MF_OK) {
        free(a->blocks);
        a->blocks = NULL;
        return mf_error_context(st, "creating arena '%s'", a->name);
    }
    a->capacity = capacity;
    return MF_OK;
}

void mf_arena_destroy(mf_arena *a)
{
    if (!a) return;
    mf_device_free(a->device, a->base, a->capacity);
    for (int i = 0; i < a->nlabels; i++) free((void *)a->labels[i].label);
    free(a->blocks);
    memset(a, 0, sizeof *a);
}

static int arena_label_id(mf_arena *a, const char *label)
{
    if (!label) label = "(unlabelled)";
    for (int i = 0; i < a->nlabels; i++)
        if (a->labels[i].label == label || strcmp(a->labels[i].label, label) == 0) return i;
    if (a->nlabels == MF_ARENA_MAX_LABELS) return MF_ARENA_MAX_LABELS - 1; /* lumped together */
    int id = a->nlabels++;
    size_t n = strlen(label) + 1;
    char *copy = malloc(n);
    if (copy) memcpy(copy, label, n);
    a->labels[id].label = copy ? copy : "(label)";
    return id;
}

mf_status mf_arena_alloc(mf_arena *a, size_t bytes, const char *label, void **out)
{
    *out = NULL;
    size_t rounded = (bytes + MF_ARENA_ALIGN - 1) / MF_ARENA_ALIGN * MF_ARENA_ALIGN;
    if (rounded < bytes || rounded > a->capacity - a->offset) {
        char need[32], used[32], cap[32];
        return MF_ERROR(
            MF_ERR_NOMEM, "arena '%s': request of %s for '%s' exceeds capacity (%s used of %s)",
            a->name, mf_format_bytes(bytes, need, sizeof need), label ? label : "(unlabelled)",
            mf_format_bytes(a->offset, used, sizeof used),
            mf_format_bytes(a->capacity, cap, sizeof cap));
    }
    if (a->nblocks == a->cap_blocks) {
        int ncap = a->cap_blocks * 2;
        mf_arena_block *nb = realloc(a->blocks, sizeof *nb * (size_t)ncap);
        if (!nb) return MF_ERROR(MF_ERR_NOMEM, "arena '%s': bookkeeping full", a->name);
        a->blocks = nb;
        a->cap_blocks = ncap;
    }
    int id = arena_label_id(a, label);
    a->blocks[a->nblocks++] = (mf_arena_block){.offset = a->offset, .bytes = rounded, .label = id};
    *out = a->base + a->offset;
    a->offset += rounded;
    mf_arena_label_stat *ls = &a->labels[id];
    ls->current += rounded;
    ls->count++;
    if (ls->current > ls->peak) ls->peak = ls->current;
    if (a->offset > a->high_water) {
        a->high_water = a->offset;
        for (int i = 0; i < a->nlabels; i++) a->labels[i].at_high_water = a->labels[i].current;
    }
    return MF_OK;
}

mf_status mf_arena_tensor(mf_arena *a, mf_tensor *out, mf_dtype dtype, int ndim,
                          const int64_t *shape, const char *label)
{
    MF_REQUIRE(ndim >= 0 && ndim <= MF_MAX_DIMS, "tensor '%s' with %d dims", label, ndim);
    *out = mf_tensor_make(NULL, dtype, a->device, ndim, shape);
    for (int i = 0; i < ndim; i++)
        MF_REQUIRE(shape[i] >= 0, "tensor '%s': negative dim %lld", label, (long long)shape[i]);
    return mf_arena_alloc(a, mf_tensor_bytes(out), label, &out->data);
}

mf_status mf_arena_zeros(mf_arena *a, mf_tensor *out, mf_dtype dtype, int ndim,
                         const int64_t *shape, const char *label)
{
    MF_TRY(mf_arena_tensor(a, out, dtype, ndim, shape, label));
    return mf_device_memset0(a->device, out->data, mf_tensor_bytes(out));
}

mf_arena_mark_t mf_arena_mark(const mf_arena *a)
{
    return (mf_arena_mark_t){.nblocks = a->nblocks, .offset = a->offset};
}

void mf_arena_release(mf_arena *a, mf_arena_mark_t m)
{
    while (a->nblocks > m.nblocks) {
        mf_arena_block *b = &a->blocks[--a->nblocks];
        a->labels[b->label].current -= b->bytes;
    }
    a->offset = m.offset;
}

mf_arena_mark2_t mf_arena_mark2(mf_arena *a, mf_arena *b)
{
    return (mf_arena_mark2_t){a, b, mf_arena_mark(a), mf_arena_mark(b)};
}

void mf_arena_release2(mf_arena_mark2_t m)
{
    mf_arena_release(m.b, m.mb);
    mf_arena_release(m.a, m.ma);
}

void mf_arena_reset(mf_arena *a)
{
    mf_arena_release(a, (mf_arena_mark_t){0, 0});
}

void mf_arena_reset_peak(mf_arena *a)
{
    a->high_water = a->offset;
    for (int i = 0; i < a->nlabels; i++) {
        a->labels[i].peak = a->labels[i].current;
        a->labels[i].at_high_water = a->labels[i].current;
    }
}

size_t mf_arena_used(const mf_arena *a)
{
    return a->offset;
}

size_t mf_arena_high_water(const mf_arena *a)
{
    return a->high_water;
}

const char *mf_format_bytes(size_t bytes, char *buf, size_t cap)
{
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024.0 && u < 4) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, cap, "%zu B", bytes);
    else
        snprintf(buf, cap, "%.2f %s", v, unit[u]);
    return buf;
}

void mf_arena_print_table(const mf_arena *a, FILE *f)
{
    char b1[32], b2[32], b3[32];
    fprintf(f, "memory table: arena '%s' (%s), capacity %s\n", a->name,
            a->device == MF_DEV_CUDA ? "cuda" : "cpu", mf_format_bytes(a->capacity, b1, sizeof b1));
    fprintf(f, "  %-40s %12s %12s %14s %8s\n", "label", "live", "peak", "at high-water", "allocs");
    for (int i = 0; i < a->nlabels; i++) {
        const mf_arena_label_stat *l = &a->labels[i];
        fprintf(f, "  %-40s %12s %12s %14s %8lld\n", l->label,
                mf_format_bytes(l->current, b1, sizeof b1), mf_format_bytes(l->peak, b2, sizeof b2),
                mf_format_bytes(l->at_high_water, b3, sizeof b3), l->count);
    }
    fprintf(f, "  %-40s %12s %12s (%zu bytes exactly)\n", "total",
            mf_format_bytes(a->offset, b1, sizeof b1),
            mf_format_bytes(a->high_water, b2, sizeof b2), a->high_water);
}
