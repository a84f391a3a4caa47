/* The Evoformer, extra-MSA and template pair blocks (and a two-block stack) trained on the GPU,
 * forward and backward, against the same case on the CPU: outputs, input gradients and every
 * parameter gradient, with AF2's dropout on (masks drawn on the device from the same Philox
 * stream as the host's, so both runs drop the same elements), under the default policy and under
 * chunk 4 + block recomputation + bf16 storage, and with the checkpoints offloaded to a host
 * arena (policy.offload, ctx->host_arena: bf16 copies made on the device, sent down, restored
 * before the recomputation). Device outputs start as NaN. Blocks compose
 * dozens of ops whose sums run in another order on each device, so the check is the whole-model
 * metric max|gpu - cpu| / max|cpu| <= MF_TOL_VEC_MODEL per array (parameter gradients against
 * the largest of them all; 1e-3 for the backward under bf16 checkpoints). Skips (77) without a
 * GPU. */
#include "tests/support/mf_test.h"

#ifndef MF_HAVE_CUDA
int main(void)
{
    return mf_test_skip("no CUDA device (memfold was built without CUDA, MEMFOLD_CUDA=OFF)");
}
#else

#include "core/cuda/cuda_backend.h"
/* the block/stack case builder of test_evoformer_block.c (not all of it is used here) */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "tests/evoformer_block_harness.inc"
#pragma GCC diagnostic pop

static mf_ctx g_gpu;
static mf_arena g_gpu_arena;

static const h_sizes k_sizes = H_SMALL_SIZES;

/* A device copy of n f32 values (NaN when src is NULL), from the GPU arena. */
static void *dev_copy(const float *src, int64_t n)
{
    void *d = NULL;
    size_t bytes = (size_t)(n > 0 ? n : 1) * sizeof(float);
    MF_TEST_OK(mf_arena_alloc(&g_gpu_arena, bytes, "test", &d));
    if (!d) return NULL;
    if (src) {
        MF_TEST_OK(mf_cuda_copy_to_device(d, src, (size_t)n * sizeof(float)));
    } else {
        float *nan = malloc(bytes);
        for (int64_t i = 0; i < n; i++) nan[i] = NAN;
        MF_TEST_OK(mf_cuda_copy_to_device(d, nan, (size_t)n * sizeof(float)));
        free(nan);
    }
    return d;
}

static float *host_copy(const void *d, int64_t n)
{
    float *h = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) h[i] = NAN;
    if (d) MF_TEST_OK(mf_cuda_copy_to_host(h, d, (size_t)n * sizeof(float)));
    return h;
}

/* h_train on the GPU context: the case's f32 data copied to the device, results copied back. */
static mf_status train_gpu(const h_case *c, h_result *r)
{
    memset(r, 0, sizeof *r);
    r->dt = MF_F32;
    mf_arena_mark_t mark = mf_arena_mark(&g_gpu_arena);
    float *hP = h_copy_as(c->P, c->nparam, MF_F32), *hm = h_copy_as(c->m, c->nm, MF_F32),
          *hz = h_copy_as(c->z, c->nz, MF_F32), *hmm = h_copy_as(c->msa_mask, c->nmask_m, MF_F32),
          *hpm = h_copy_as(c->pair_mask, c->nmask_z, MF_F32),
          *hgm = h_copy_as(c->gm, c->nm, MF_F32), *hgz = h_copy_as(c->gz, c->nz, MF_F32);
    float *zeros = h_zeros(c->nparam, MF_F32);
    void *P = dev_copy(hP, c->nparam), *dP = dev_copy(zeros, c->nparam);
    void *mm = dev_copy(hmm, c->nmask_m), *pm = dev_copy(hpm, c->nmask_z);
    mf_tensor T[H_MAXP], dT[H_MAXP];
    h_param_tensors_on(c, P, MF_F32, MF_DEV_CUDA, T);
    h_param_tensors_on(c, dP, MF_F32, MF_DEV_CUDA, dT);
    mf_status st = MF_OK;
    void *out_m, *out_z, *dm, *dz;
    if (!c->nblocks) {
        void *m = dev_copy(hm, c->nm), *z = dev_copy(hz, c->nz);
        void *gm = dev_copy(hgm, c->nm), *gz = dev_copy(hgz, c->nz);
        out_m = dev_copy(NULL, c->nm);
        out_z = dev_copy(NULL, c->nz);
        float *zm = h_zeros(c->nm, MF_F32), *zz = h_zeros(c->nz, MF_F32);
        dm = dev_copy(zm, c->nm);
        dz = dev_copy(zz, c->nz);
        free(zm);
        free(zz);
        h_inputs in = h_input_tensors_on(c, m, z, mm, pm, MF_F32, MF_DEV_CUDA);
        h_inputs out = h_input_tensors_on(c, out_m, out_z, mm, pm, MF_F32, MF_DEV_CUDA);
        h_inputs grad_out = h_input_tensors_on(c, gm, gz, mm, pm, MF_F32, MF_DEV_CUDA);
        h_inputs grad_in = h_input_tensors_on(c, dm, dz, mm, pm, MF_F32, MF_DEV_CUDA);
        mf_evo_block_saved saved;
        st = h_block_forward(&g_gpu, c, T, &out.m, &out.z, &saved, &in);
        if (st == MF_OK)
            st = h_block_backward(&g_gpu, c, T, dT, &grad_in.m, &grad_in.z, &grad_out.m,
                                  &grad_out.z, &saved, &in);
    } else {
        /* in place: out starts as the input, the gradients as the upstream gradient */
        out_m = dev_copy(hm, c->nm);
        out_z = dev_copy(hz, c->nz);
        dm = dev_copy(hgm, c->nm);
        dz = dev_copy(hgz, c->nz);
        h_inputs in = h_input_tensors_on(c, NULL, NULL, mm, pm, MF_F32, MF_DEV_CUDA);
        h_inputs out = h_input_tensors_on(c, out_m, out_z, mm, pm, MF_F32, MF_DEV_CUDA);
        h_inputs grad = h_input_tensors_on(c, dm, dz, mm, pm, MF_F32, MF_DEV_CUDA);
        mf_evo_block_saved blocks[8];
        mf_evo_stack_saved saved = {.blocks = blocks, .capacity = 8};
        st = h_stack_forward(&g_gpu, c, T, &out.m, &out.z, &saved, &in);
        if (st == MF_OK) st = h_stack_backward(&g_gpu, c, T, dT, &grad.m, &grad.z, &saved, &in);
    }
    if (st == MF_OK) st = mf_cuda_synchronize(g_gpu.cuda);
    if (st == MF_OK) {
        if (h_has_msa(c)) {
            r->out_m = host_copy(out_m, c->nm);
            r->dm = host_copy(dm, c->nm);
        }
        r->out_z = host_copy(out_z, c->nz);
        r->dz = host_copy(dz, c->nz);
        r->dP = host_copy(dP, c->nparam);
    }
    mf_arena_release(&g_gpu_arena, mark);
    free(hP);
    free(hm);
    free(hz);
    free(hmm);
    free(hpm);
    free(hgm);
    free(hgz);
    free(zeros);
    return st;
}

static void compare(const char *what, const char *name, const void *gpu, const void *cpu, int64_t n,
                    double tol)
{
    char label[200];
    snprintf(label, sizeof label, "%s: %s", what, name);
    if (!gpu || !cpu) {
        mf_test_count(false);
        mf_test_fail("%s: missing", label);
        return;
    }
    mf_check_maxrel_f32(label, gpu, cpu, n, tol);
}

static void run(h_kind kind, int64_t nblocks, const mf_policy *pol, const char *pol_name,
                mf_ctx *cpu)
{
    h_case c;
    h_case_init(&c, kind, nblocks, &k_sizes, 900 + (uint64_t)kind * 5 + (uint64_t)nblocks);
    char what[160];
    snprintf(what, sizeof what, "%s%s, %s", h_kind_name[kind], nblocks ? " x2 stack" : "",
             pol_name);
    printf("%s\n", what);
    cpu->policy = *pol;
    g_gpu.policy = *pol;
    h_result rc, rg;
    mf_status sc = h_train(cpu, &c, MF_F32, &rc);
    MF_TEST_TRUE(sc == MF_OK, "%s: CPU run: %s", what, mf_last_error());
    mf_status sg = train_gpu(&c, &rg);
    MF_TEST_TRUE(sg == MF_OK, "%s: GPU run: %s", what, mf_last_error());
    /* bf16 checkpoints are formed in f32 in another order on each side before the rounding:
     * the backward's arrays within 1e-3 then (the forward is f32 on both) */
    const double tol = pol->storage == MF_BF16 ? 1e-3 : MF_TOL_VEC_MODEL;
    if (sc == MF_OK && sg == MF_OK) {
        if (h_has_msa(&c)) {
            compare(what, "m out", rg.out_m, rc.out_m, c.nm, MF_TOL_VEC_MODEL);
            compare(what, "dm", rg.dm, rc.dm, c.nm, tol);
        }
        compare(what, "z out", rg.out_z, rc.out_z, c.nz, MF_TOL_VEC_MODEL);
        compare(what, "dz", rg.dz, rc.dz, c.nz, tol);
        /* parameter by parameter against the largest gradient of them all (shared/testvectors
         * README: some gradients are zero in exact arithmetic, e.g. feat_2d_norm's offset, which
         * adds a constant to every logit of a softmax row; in f32 they are rounding noise, and
         * noise against noise is of order 1 on any two devices) */
        const float *gp = rg.dP, *cp = rc.dP;
        double scale = 0;
        for (int64_t e = 0; cp && e < c.nparam; e++) scale = fmax(scale, fabs((double)cp[e]));
        for (int i = 0; gp && cp && i < c.np; i++) {
            const int64_t per = c.off[i + 1] - c.off[i];
            char label[200];
            snprintf(label, sizeof label, "%s: %s (to the largest gradient)", what,
                     c.specs[i].name);
            mf_check_close_f32(label, gp + c.off[i], cp + c.off[i], per, tol * scale, 0.0);
        }
        if (!gp || !cp) mf_test_fail("%s: parameter gradients missing", what);
    }
    h_result_free(&rc);
    h_result_free(&rg);
    h_case_free(&c);
    cpu->policy = mf_policy_default();
    g_gpu.policy = mf_policy_default();
}

int main(void)
{
    if (!mf_cuda_available())
        return mf_test_skip("no CUDA device (mf_cuda_device_count() is 0: no driver or no GPU)");
    mf_ctx cpu;
    mf_arena cpu_arena;
    if (mf_test_ctx_cpu(&cpu, &cpu_arena, (size_t)256 << 20) != MF_OK ||
        mf_test_ctx_cuda(&g_gpu, &g_gpu_arena, (size_t)256 << 20) != MF_OK) {
        mf_test_fail("contexts: %s", mf_last_error());
        return mf_test_finish("test_cuda_evoformer");
    }
    mf_policy base = mf_policy_default();
    mf_policy lean = mf_policy_default();
    lean.chunk_size = 4;
    lean.recompute = MF_RECOMPUTE_BLOCK;
    lean.storage = MF_BF16;
    for (int k = 0; k < 3; k++) run((h_kind)k, 0, &base, "default policy", &cpu);
    run(K_EVOFORMER, 0, &lean, "chunk 4 + recompute block + bf16 storage", &cpu);
    run(K_EVOFORMER, 2, &base, "default policy", &cpu);
    run(K_EXTRA_MSA, 2, &lean, "chunk 4 + recompute block + bf16 storage", &cpu);
    /* the checkpoints in host memory: the GPU arena holds none of them */
    mf_arena host;
    MF_TEST_OK(mf_arena_init(&host, MF_DEV_CPU, (size_t)64 << 20, "offloaded checkpoints"));
    g_gpu.host_arena = &host;
    mf_policy offl = lean;
    offl.offload = true;
    run(K_EVOFORMER, 2, &offl, "chunk 4 + recompute block + bf16 storage + offload", &cpu);
    MF_TEST_TRUE(mf_arena_high_water(&host) > 0, "no checkpoint reached the host arena");
    mf_policy offl32 = offl;
    offl32.storage = MF_F32;
    run(K_TEMPLATE_PAIR, 2, &offl32, "chunk 4 + recompute block + offload (f32)", &cpu);
    g_gpu.host_arena = NULL;
    mf_arena_destroy(&host);
    mf_test_ctx_free(&g_gpu, &g_gpu_arena);
    mf_test_ctx_free(&cpu, &cpu_arena);
    return mf_test_finish("test_cuda_evoformer");
}

#endif
