/* Gradient averaging: over micro-batches on one rank (sum, then scale by 1/n) and over the ranks of
 * a data-parallel run (all-reduce sum of the flat gradient buffer, then scale by 1/K), with MPI on
 * host buffers and NCCL on device buffers. The engines are the libraries'; memfold adds no
 * transport.
 *
 * A run started without mpirun is one rank and never calls MPI (mf_dist_init sees no launcher);
 * under mpirun, mf_dist_init initialises MPI (unless the caller already did) and every rank must
 * call the collectives below in the same order with the same layouts. */
#ifndef MF_TRAIN_ALLREDUCE_H
#define MF_TRAIN_ALLREDUCE_H

#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "train/optimizer.h"

#ifdef MF_HAVE_NCCL
#include "core/cuda/cuda_check.h"
#endif

struct mf_ctx;

typedef struct {
    int rank, size;
    bool use_mpi;         /* false: one process without MPI */
    bool initialized_mpi; /* MPI_Init was ours: mf_dist_finalize calls MPI_Finalize */
    MPI_Comm comm;        /* MPI_COMM_WORLD when use_mpi */
#ifdef MF_HAVE_NCCL
    bool use_nccl;
    ncclComm_t nccl;
#endif
} mf_dist;

/* True when the process was started by an MPI launcher (Open MPI, MPICH/Hydra or PMIx variables
 * in the environment). */
bool mf_dist_launched_by_mpi(void);

/* Under an MPI launcher, or with force_mpi: MPI_Init (when not initialised yet), rank and size of
 * MPI_COMM_WORLD. Otherwise rank 0 of 1, no MPI. argc/argv may be NULL. */
mf_status mf_dist_init(mf_dist *d, int *argc, char ***argv, bool force_mpi);
/* Destroys the NCCL communicator and calls MPI_Finalize when mf_dist_init called MPI_Init. */
mf_status mf_dist_finalize(mf_dist *d);

/* ---- micro-batches on one rank ---- */

/* acc += g, element by element (deterministic for any thread count). Same layouts. */
mf_status mf_grad_accumulate(mf_grad_buffer *acc, const mf_grad_buffer *g);
/* g *= s (in double, rounded once per element). */
void mf_grad_scale(mf_grad_buffer *g, double s);
/* After n accumulated micro-batches: the mean, acc *= 1/n. n >= 1. */
mf_status mf_grad_accumulate_finish(mf_grad_buffer *acc, int64_t n);

/* ---- across ranks ---- */

/* In place: the sum over ranks of the flat buffer (MPI_Allreduce, MPI_FLOAT, MPI_SUM, in slices
 * of at most 2^30 elements because MPI counts are int), then scaled by 1/size. One rank: no-op.
 * Every rank receives the same bits. */
mf_status mf_allreduce_mean_grads(const mf_dist *d, mf_grad_buffer *g);
/* The same for n host floats or doubles (losses, metrics, counts). */
mf_status mf_allreduce_mean_f32(const mf_dist *d, float *x, int64_t n);
mf_status mf_allreduce_sum_f64(const mf_dist *d, double *x, int64_t n);
/* Logical OR of a flag over the ranks (a rank that saw a non-finite loss makes all skip). */
mf_status mf_allreduce_any(const mf_dist *d, bool *flag);
/* Rank `root`'s bytes to every rank (e.g. the checkpoint path chosen by rank 0). */
mf_status mf_broadcast_bytes(const mf_dist *d, void *buf, int64_t bytes, int root);
mf_status mf_barrier(const mf_dist *d);

#ifdef MF_HAVE_NCCL
/* NCCL communicator over the MPI ranks (ncclUniqueId from rank 0 by MPI_Bcast), one GPU per rank:
 * the caller has selected its device (cudaSetDevice) before. */
mf_status mf_dist_init_nccl(mf_dist *d);
/* In place on device memory: ncclAllReduce (ncclFloat, ncclSum) on the legacy default stream,
 * which orders it after and before the blocking stream of ctx's ops, then x *= 1/size with
 * mf_scale on ctx. n floats at dev. */
mf_status mf_allreduce_mean_nccl(const mf_dist *d, struct mf_ctx *ctx, float *dev, int64_t n);
#endif

#endif
