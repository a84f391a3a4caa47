/* Gradient averaging over micro-batches and ranks (see allreduce.h). */
#include "train/allreduce.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "core/context.h"
#include "core/ops.h"

#define MF_OPT_PARALLEL_MIN 32768
/* MPI counts are int: larger buffers go in slices of this many elements. */
#define MF_MPI_SLICE ((int64_t)1 << 30)

bool mf_dist_launched_by_mpi(void)
{
    static const char *const k_vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK",
                                         "PMI_RANK", "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof k_vars / sizeof *k_vars; i++)
        if (getenv(k_vars[i])) return true;
    return false;
}

mf_status mf_dist_init(mf_dist *d, int *argc, char ***argv, bool force_mpi)
{
    memset(d, 0, sizeof *d);
    d->rank = 0;
    d->size = 1;
    d->comm = MPI_COMM_NULL;
    if (!force_mpi && !mf_dist_launched_by_mpi()) return MF_OK;
    int inited = 0;
    MF_MPI_CHECK(MPI_Initialized(&inited));
    if (!inited) {
        MF_MPI_CHECK(MPI_Init(argc, argv));
        d->initialized_mpi = true;
    }
    d->use_mpi = true;
    d->comm = MPI_COMM_WORLD;
    /* Errors come back as codes (checked by MF_MPI_CHECK) instead of aborting the job. */
    MF_MPI_CHECK(MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN));
    MF_MPI_CHECK(MPI_Comm_rank(d->comm, &d->rank));
    MF_MPI_CHECK(MPI_Comm_size(d->comm, &d->size));
    return MF_OK;
}

mf_status mf_dist_finalize(mf_dist *d)
{
#ifdef MF_HAVE_NCCL
    if (d->use_nccl) {
        d->use_nccl = false;
        MF_NCCL_CHECK(ncclCommDestroy(d->nccl));
    }
#endif
    if (d->initialized_mpi) {
        d->initialized_mpi = false;
        d->use_mpi = false;
        MF_MPI_CHECK(MPI_Finalize());
    }
    return MF_OK;
}

static bool distributed(const mf_dist *d)
{
    return d && d->use_mpi && d->size > 1;
}

/* ---- micro-batches ---- */

mf_status mf_grad_accumulate(mf_grad_buffer *acc, const mf_grad_buffer *g)
{
    MF_REQUIRE(acc && g, "mf_grad_accumulate: NULL argument");
    MF_TRY(mf_param_layout_check(&acc->layout, &g->layout, "gradient accumulation"));
    float *a = acc->data;
    const float *x = g->data;
    const int64_t n = acc->layout.total;
#pragma omp parallel for simd schedule(static) if (n > MF_OPT_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) a[i] += x[i];
    return MF_OK;
}

void mf_grad_scale(mf_grad_buffer *g, double s)
{
    float *a = g->data;
    const int64_t n = g->layout.total;
#pragma omp parallel for simd schedule(static) if (n > MF_OPT_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) a[i] = (float)((double)a[i] * s);
}

mf_status mf_grad_accumulate_finish(mf_grad_buffer *acc, int64_t n)
{
    MF_REQUIRE(acc && n >= 1, "mf_grad_accumulate_finish: %lld micro-batches", (long long)n);
    if (n > 1) mf_grad_scale(acc, 1.0 / (double)n);
    return MF_OK;
}

/* ---- MPI ---- */

static mf_status allreduce_sum(const mf_dist *d, void *x, int64_t n, MPI_Datatype type, size_t elem)
{
    char *p = x;
    for (int64_t off = 0; off < n; off += MF_MPI_SLICE) {
        const int64_t m = n - off < MF_MPI_SLICE ? n - off : MF_MPI_SLICE;
        MF_MPI_CHECK(
            MPI_Allreduce(MPI_IN_PLACE, p + (size_t)off * elem, (int)m, type, MPI_SUM, d->comm));
    }
    return MF_OK;
}

mf_status mf_allreduce_mean_grads(const mf_dist *d, mf_grad_buffer *g)
{
    MF_REQUIRE(g, "mf_allreduce_mean_grads: NULL gradients");
    if (!distributed(d)) return MF_OK;
    mf_status st = allreduce_sum(d, g->data, g->layout.total, MPI_FLOAT, sizeof(float));
    if (st != MF_OK)
        return mf_error_context(st, "all-reduce of %lld gradient elements over %d ranks",
                                (long long)g->layout.total, d->size);
    mf_grad_scale(g, 1.0 / (double)d->size);
    return MF_OK;
}

mf_status mf_allreduce_mean_f32(const mf_dist *d, float *x, int64_t n)
{
    MF_REQUIRE(x || n == 0, "mf_allreduce_mean_f32: NULL buffer");
    if (!distributed(d)) return MF_OK;
    MF_TRY(allreduce_sum(d, x, n, MPI_FLOAT, sizeof(float)));
    const double s = 1.0 / (double)d->size;
    for (int64_t i = 0; i < n; i++) x[i] = (float)((double)x[i] * s);
    return MF_OK;
}

mf_status mf_allreduce_sum_f64(const mf_dist *d, double *x, int64_t n)
{
    MF_REQUIRE(x || n == 0, "mf_allreduce_sum_f64: NULL buffer");
    if (!distributed(d)) return MF_OK;
    return allreduce_sum(d, x, n, MPI_DOUBLE, sizeof(double));
}

mf_status mf_allreduce_any(const mf_dist *d, bool *flag)
{
    MF_REQUIRE(flag, "mf_allreduce_any: NULL flag");
    if (!distributed(d)) return MF_OK;
    int v = *flag ? 1 : 0;
    MF_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_MAX, d->comm));
    *flag = v != 0;
    return MF_OK;
}

mf_status mf_broadcast_bytes(const mf_dist *d, void *buf, int64_t bytes, int root)
{
    MF_REQUIRE(buf || bytes == 0, "mf_broadcast_bytes: NULL buffer");
    if (!distributed(d)) return MF_OK;
    MF_REQUIRE(root >= 0 && root < d->size, "mf_broadcast_bytes: root %d of %d ranks", root,
               d->size);
    char *p = buf;
    for (int64_t off = 0; off < bytes; off += MF_MPI_SLICE) {
        const int64_t m = bytes - off < MF_MPI_SLICE ? bytes - off : MF_MPI_SLICE;
        MF_MPI_CHECK(MPI_Bcast(p + off, (int)m, MPI_BYTE, root, d->comm));
    }
    return MF_OK;
}

mf_status mf_barrier(const mf_dist *d)
{
    if (!distributed(d)) return MF_OK;
    MF_MPI_CHECK(MPI_Barrier(d->comm));
    return MF_OK;
}

/* ---- NCCL ---- */

#ifdef MF_HAVE_NCCL
mf_status mf_dist_init_nccl(mf_dist *d)
{
    MF_REQUIRE(d, "mf_dist_init_nccl: NULL");
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (d->rank == 0) MF_NCCL_CHECK(ncclGetUniqueId(&id));
    if (d->use_mpi) MF_MPI_CHECK(MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, d->comm));
    MF_NCCL_CHECK(ncclCommInitRank(&d->nccl, d->size, id, d->rank));
    d->use_nccl = true;
    return MF_OK;
}

mf_status mf_allreduce_mean_nccl(const mf_dist *d, struct mf_ctx *ctx, float *dev, int64_t n)
{
    MF_REQUIRE(d && ctx && (dev || n == 0), "mf_allreduce_mean_nccl: NULL argument");
    MF_REQUIRE(d->use_nccl, "mf_allreduce_mean_nccl: no NCCL communicator (mf_dist_init_nccl)");
    MF_REQUIRE(ctx->device == MF_DEV_CUDA, "mf_allreduce_mean_nccl: the context is not on CUDA");
    if (n == 0 || d->size == 1) return MF_OK;
    MF_NCCL_CHECK(
        ncclAllReduce(dev, dev, (size_t)n, ncclFloat, ncclSum, d->nccl, cudaStreamLegacy));
    mf_tensor t = mf_tensor_make(dev, MF_F32, MF_DEV_CUDA, 1, (const int64_t[MF_MAX_DIMS]){n});
    MF_TRY(mf_scale(ctx, &t, &t, (float)(1.0 / (double)d->size)));
    return MF_OK;
}
#endif
