/* Gradient averaging: micro-batch accumulation on one rank (sum then 1/n) against the mean in
 * double; one process without a launcher is rank 0 of 1 and the collectives are no-ops; then the
 * test re-executes itself under `mpirun -np 2` where each rank averages known arrays (the flat
 * gradient buffer, floats, doubles, a flag, a broadcast) and checks the mean, bitwise equal on both
 * ranks. Skips (77) only when mpirun is missing. */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "tests/support/mf_test.h"
#include "train/allreduce.h"

static const char *const k_names[3] = {
    "alphafold/alphafold_iteration/evoformer/preprocess_1d//weights",
    "alphafold/alphafold_iteration/evoformer/preprocess_1d//bias",
    "alphafold/alphafold_iteration/structure_module//single_layer_norm_scale",
};
static const int64_t k_numel[3] = {5 * 13, 13, 40001};

static void make_store(mf_param_store *s)
{
    mf_param_store_init(s);
    for (int i = 0; i < 3; i++) {
        float *tmp = calloc((size_t)k_numel[i], sizeof(float));
        mf_tensor t = mf_tensor_f32(tmp, 1, k_numel[i]);
        MF_TEST_OK(mf_param_store_add(s, k_names[i], &t, true));
        free(tmp);
    }
}

/* The known gradient of rank r (or micro-batch r): exact small binary fractions plus a spread. */
static float known(int r, int64_t i)
{
    return (float)((double)((i * 7 + r * 3) % 97) * 0.125 - 6.0 + (double)r * 0.015625) *
           (r % 2 ? -1.0f : 1.0f) * (1.0f + (float)(i % 5) * 1e-3f);
}

static void test_accumulation(void)
{
    mf_param_store s;
    make_store(&s);
    mf_grad_buffer acc, g;
    MF_TEST_OK(mf_grad_buffer_init(&acc, &s, NULL));
    MF_TEST_OK(mf_grad_buffer_init(&g, &s, NULL));
    const int64_t n = acc.layout.total;
    const int micro = 3;
    double *mean = calloc((size_t)n, sizeof(double));
    for (int r = 0; r < micro; r++) {
        for (int64_t i = 0; i < n; i++) {
            g.data[i] = known(r, i);
            mean[i] += (double)g.data[i] / micro;
        }
        MF_TEST_OK(mf_grad_accumulate(&acc, &g));
    }
    MF_TEST_OK(mf_grad_accumulate_finish(&acc, micro));
    /* two f32 additions of terms |x| <= 6.1 (half an ulp of 12 each, 4.8e-7) and the rounding of
     * x/3: the sum can cancel (the terms alternate in sign), so the bound is absolute, 2e-6 */
    mf_check_close_f32_f64("accumulate 3 micro-batches then average vs double mean", acc.data, mean,
                           n, 2e-6, 0);
    /* one micro-batch: finish(1) leaves the sum bitwise */
    mf_grad_buffer_zero(&acc);
    MF_TEST_OK(mf_grad_accumulate(&acc, &g));
    MF_TEST_OK(mf_grad_accumulate_finish(&acc, 1));
    mf_check_bitwise_f32("one micro-batch: the gradient itself", acc.data, g.data, n);
    mf_status st = mf_grad_accumulate_finish(&acc, 0);
    MF_TEST_TRUE(st == MF_ERR_INVALID, "finish with 0 micro-batches refused");
    mf_clear_error();
    free(mean);
    mf_grad_buffer_free(&acc);
    mf_grad_buffer_free(&g);
    mf_param_store_free(&s);
}

static void test_single_process(void)
{
    mf_dist d;
    MF_TEST_OK(mf_dist_init(&d, NULL, NULL, false));
    MF_TEST_TRUE(d.rank == 0 && d.size == 1 && !d.use_mpi,
                 "without a launcher: rank %d of %d, MPI %s", d.rank, d.size,
                 d.use_mpi ? "used" : "not used");
    mf_param_store s;
    make_store(&s);
    mf_grad_buffer g;
    MF_TEST_OK(mf_grad_buffer_init(&g, &s, NULL));
    for (int64_t i = 0; i < g.layout.total; i++) g.data[i] = known(1, i);
    float *copy = malloc((size_t)g.layout.total * sizeof(float));
    memcpy(copy, g.data, (size_t)g.layout.total * sizeof(float));
    MF_TEST_OK(mf_allreduce_mean_grads(&d, &g));
    mf_check_bitwise_f32("one rank: all-reduce leaves the gradients", g.data, copy, g.layout.total);
    bool flag = true;
    MF_TEST_OK(mf_allreduce_any(&d, &flag));
    MF_TEST_TRUE(flag, "one rank: any(true) = true");
    MF_TEST_OK(mf_dist_finalize(&d));
    free(copy);
    mf_grad_buffer_free(&g);
    mf_param_store_free(&s);
}

/* ---- under mpirun ---- */

static int run_rank(int argc, char **argv)
{
    mf_dist d;
    MF_TEST_OK(mf_dist_init(&d, &argc, &argv, false));
    char tag[32];
    snprintf(tag, sizeof tag, "rank %d/%d", d.rank, d.size);
    MF_TEST_TRUE(d.use_mpi && d.size == 2, "%s: MPI with 2 ranks", tag);
    if (!d.use_mpi || d.size != 2) {
        mf_dist_finalize(&d);
        return mf_test_finish("test_allreduce (rank)");
    }
    mf_param_store s;
    make_store(&s);
    mf_grad_buffer g;
    MF_TEST_OK(mf_grad_buffer_init(&g, &s, NULL));
    const int64_t n = g.layout.total;
    float *want = malloc((size_t)n * sizeof(float));
    double *mean = malloc((size_t)n * sizeof(double));
    for (int64_t i = 0; i < n; i++) {
        g.data[i] = known(d.rank, i);
        const float a = known(0, i), b = known(1, i);
        want[i] = (a + b) * 0.5f; /* one f32 rounding of the sum, an exact halving */
        mean[i] = ((double)a + (double)b) / 2.0;
    }
    MF_TEST_OK(mf_allreduce_mean_grads(&d, &g));
    char what[96];
    snprintf(what, sizeof what, "%s: gradient mean == (a + b) * 0.5 in f32", tag);
    mf_check_bitwise_f32(what, g.data, want, n);
    snprintf(what, sizeof what, "%s: gradient mean vs the mean in double", tag);
    mf_check_close_f32_f64(what, g.data, mean, n, 0, 6e-8);
    /* the same bits on both ranks */
    unsigned long crc = crc32(0L, (const unsigned char *)g.data, (uInt)(n * 4));
    double c[2] = {(double)crc, -(double)crc};
    MF_TEST_OK(mf_allreduce_sum_f64(&d, c, 2));
    MF_TEST_TRUE(c[0] == 2.0 * (double)crc && c[1] == -2.0 * (double)crc,
                 "%s: both ranks hold the same averaged bits (crc %08lx)", tag, crc);

    float f[3] = {1.0f + (float)d.rank, -2.0f * (float)d.rank, 0.1f};
    MF_TEST_OK(mf_allreduce_mean_f32(&d, f, 3));
    MF_TEST_TRUE(f[0] == 1.5f && f[1] == -1.0f && f[2] == 0.1f, "%s: mean of floats (%g %g %g)",
                 tag, f[0], f[1], f[2]);
    double loss[2] = {0.25 * (d.rank + 1), 1e300};
    MF_TEST_OK(mf_allreduce_sum_f64(&d, loss, 2));
    MF_TEST_TRUE(loss[0] == 0.75 && loss[1] == 2e300, "%s: sum of doubles (%g %g)", tag, loss[0],
                 loss[1]);
    bool any = d.rank == 1, none = false;
    MF_TEST_OK(mf_allreduce_any(&d, &any));
    MF_TEST_OK(mf_allreduce_any(&d, &none));
    MF_TEST_TRUE(any && !none, "%s: any(rank 1 only) = %d, any(none) = %d", tag, any, none);
    char msg[32] = "";
    if (d.rank == 0) snprintf(msg, sizeof msg, "ckpt-00000042.h5");
    MF_TEST_OK(mf_broadcast_bytes(&d, msg, sizeof msg, 0));
    MF_TEST_TRUE(!strcmp(msg, "ckpt-00000042.h5"), "%s: broadcast from rank 0 ('%s')", tag, msg);
    MF_TEST_OK(mf_barrier(&d));
    free(want);
    free(mean);
    mf_grad_buffer_free(&g);
    mf_param_store_free(&s);
    MF_TEST_OK(mf_dist_finalize(&d));
    return mf_test_finish(d.rank == 0 ? "test_allreduce (rank 0)" : "test_allreduce (rank 1)");
}

static bool have_program(const char *name)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", name);
    return system(cmd) == 0;
}

int main(int argc, char **argv)
{
    if (mf_dist_launched_by_mpi()) return run_rank(argc, argv);

    test_accumulation();
    test_single_process();

    const char *mpirun = getenv("MPIEXEC") ? getenv("MPIEXEC") : "mpirun";
    if (!have_program(mpirun)) {
        if (mf_test_failures()) return mf_test_finish("test_allreduce");
        return mf_test_skip(
            "mpirun is missing (Open MPI's openmpi-bin): 2-rank all-reduce not run");
    }
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    MF_TEST_TRUE(len > 0, "cannot find this program's path");
    if (len <= 0) return mf_test_finish("test_allreduce");
    self[len] = '\0';
    char cmd[8192];
    /* vader's single-copy (CMA) needs ptrace rights that containers often lack. Open MPI leaks
     * in its own components at exit (ompi_op_base_op_select, dlopen'ed modules): LeakSanitizer is
     * off in the ranks of a sanitized build (the single-process checks above keep it). */
    snprintf(cmd, sizeof cmd,
             "ASAN_OPTIONS=detect_leaks=0 %s -np 2 --oversubscribe --allow-run-as-root --mca btl "
             "self,vader "
             "--mca btl_vader_single_copy_mechanism none '%s'",
             mpirun, self);
    printf("running: %s\n", cmd);
    fflush(stdout);
    int rc = system(cmd);
    bool ok = rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0;
    MF_TEST_TRUE(ok, "2 ranks under mpirun: exit status %d",
                 rc != -1 && WIFEXITED(rc) ? WEXITSTATUS(rc) : -1);
    return mf_test_finish("test_allreduce");
}
