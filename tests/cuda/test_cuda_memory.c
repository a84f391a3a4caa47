/* CUDA groundwork: device count and memory info, host <-> device copies, the device arena (one
 * cudaMalloc, exact high-water mark, clean MF_ERR_NOMEM on overflow and on a device-sized
 * request), the context's CUDA state, device checks in the op twins (attention's included), and
 * dispatch of the public ops on a CUDA context. */
#include <stdlib.h>
#include <string.h>

#include "tests/support/mf_test.h"

#ifndef MF_HAVE_CUDA
int main(void)
{
    return mf_test_skip("no CUDA device (memfold was built without CUDA, MEMFOLD_CUDA=OFF)");
}
#else

#include "core/cuda/cuda_backend.h"
#include "core/cuda/cuda_ops.h"

#define MiB ((size_t)1 << 20)

static void test_mem_info_and_copies(void)
{
    int n = mf_cuda_device_count();
    MF_TEST_TRUE(n > 0, "device count %d with mf_cuda_available() true", n);
    size_t free0 = 0, total = 0;
    MF_TEST_OK(mf_cuda_mem_info(&free0, &total));
    char b1[32], b2[32];
    printf("devices: %d; memory: %s free of %s\n", n, mf_format_bytes(free0, b1, sizeof b1),
           mf_format_bytes(total, b2, sizeof b2));
    MF_TEST_TRUE(total > 0 && free0 > 0 && free0 <= total, "mem_info: free %zu, total %zu", free0,
                 total);

    /* A 256 MiB arena is one cudaMalloc: free memory drops by at least that much and comes back
     * when the arena is destroyed. (Assumes no other process allocates meanwhile.) */
    mf_arena a;
    MF_TEST_OK(mf_arena_init(&a, MF_DEV_CUDA, 256 * MiB, "mem info probe"));
    size_t free1 = 0;
    MF_TEST_OK(mf_cuda_mem_info(&free1, &total));
    MF_TEST_TRUE(free0 >= free1 + 256 * MiB, "free memory fell by %zu bytes for a 256 MiB arena",
                 free0 > free1 ? free0 - free1 : 0);
    printf("  256 MiB arena: free memory fell by %zu bytes\n", free0 > free1 ? free0 - free1 : 0);

    /* Copies round-trip exactly, and memset0 zeroes. */
    const size_t nb = 1000003;
    unsigned char *src = malloc(nb), *dst = malloc(nb);
    for (size_t i = 0; i < nb; i++) src[i] = (unsigned char)(i * 131 + 7);
    void *d = NULL;
    MF_TEST_OK(mf_arena_alloc(&a, nb, "copy probe", &d));
    if (d) {
        MF_TEST_OK(mf_cuda_copy_to_device(d, src, nb));
        memset(dst, 0, nb);
        MF_TEST_OK(mf_cuda_copy_to_host(dst, d, nb));
        MF_TEST_TRUE(memcmp(src, dst, nb) == 0, "host -> device -> host copy of %zu bytes differs",
                     nb);
        MF_TEST_OK(mf_cuda_memset0(d, nb));
        MF_TEST_OK(mf_cuda_copy_to_host(dst, d, nb));
        size_t nz = 0;
        for (size_t i = 0; i < nb; i++) nz += dst[i] != 0;
        MF_TEST_TRUE(nz == 0, "mf_cuda_memset0 left %zu nonzero bytes", nz);
        printf("  copies and memset0 on %zu bytes checked byte for byte\n", nb);
    }
    free(src);
    free(dst);
    mf_arena_destroy(&a);
    size_t free2 = 0;
    MF_TEST_OK(mf_cuda_mem_info(&free2, &total));
    /* 256 MiB given back, less what the runtime may have taken meanwhile for itself (a module
     * loaded lazily by the first memset, in 2 MiB pages) */
    MF_TEST_TRUE(free2 >= free1 + 248 * MiB, "destroying the arena gave back only %zu bytes",
                 free2 > free1 ? free2 - free1 : 0);
}

static void test_device_arena(void)
{
    printf("device arena: capacity 1 MiB + 100 bytes, alignment %d\n", MF_ARENA_ALIGN);
    mf_arena a;
    MF_TEST_OK(mf_arena_init(&a, MF_DEV_CUDA, MiB + 100, "device test"));
    MF_TEST_TRUE(a.capacity == MiB + 256, "capacity %zu, expected %zu (rounded to the alignment)",
                 a.capacity, MiB + 256);
    void *p1 = NULL, *p2 = NULL, *p3 = NULL, *p4 = NULL;
    MF_TEST_OK(mf_arena_alloc(&a, 100, "activations", &p1));
    mf_arena_mark_t m = mf_arena_mark(&a);
    MF_TEST_OK(mf_arena_alloc(&a, 300000, "workspace", &p2));
    MF_TEST_OK(mf_arena_alloc(&a, 1, "workspace", &p3));
    MF_TEST_TRUE((uintptr_t)p1 % MF_ARENA_ALIGN == 0 && (uintptr_t)p2 % MF_ARENA_ALIGN == 0 &&
                     (uintptr_t)p3 % MF_ARENA_ALIGN == 0,
                 "device blocks not aligned to %d", MF_ARENA_ALIGN);
    const size_t peak = 256 + 300032 + 256;
    MF_TEST_TRUE(mf_arena_high_water(&a) == peak, "high-water %zu, expected exactly %zu",
                 mf_arena_high_water(&a), peak);
    mf_arena_release(&a, m);
    MF_TEST_OK(mf_arena_alloc(&a, 5000, "workspace", &p4));
    MF_TEST_TRUE(p4 == p2, "released device space not reused");
    MF_TEST_TRUE(mf_arena_used(&a) == 256 + 5120 && mf_arena_high_water(&a) == peak,
                 "used %zu (expected %d), high-water %zu (expected %zu)", mf_arena_used(&a),
                 256 + 5120, mf_arena_high_water(&a), peak);

    /* The memory is usable: zeros written through the arena read back as zeros. */
    mf_tensor z;
    const int64_t shape[2] = {37, 41};
    MF_TEST_OK(mf_arena_zeros(&a, &z, MF_F32, 2, shape, "zeros"));
    float *h = malloc(37 * 41 * sizeof(float));
    for (int i = 0; i < 37 * 41; i++) h[i] = 1.0f;
    if (z.data) MF_TEST_OK(mf_cuda_copy_to_host(h, z.data, 37 * 41 * sizeof(float)));
    int nz = 0;
    for (int i = 0; i < 37 * 41; i++) nz += h[i] != 0.0f;
    MF_TEST_TRUE(nz == 0 && z.device == MF_DEV_CUDA, "mf_arena_zeros on the device: %d nonzero",
                 nz);
    free(h);

    /* Over capacity: MF_ERR_NOMEM naming the label, arena and CUDA state unharmed. */
    size_t used = mf_arena_used(&a);
    void *big = (void *)1;
    mf_status st = mf_arena_alloc(&a, 2 * MiB, "pair activations", &big);
    MF_TEST_TRUE(st == MF_ERR_NOMEM && big == NULL, "over-capacity request returned %s",
                 mf_status_name(st));
    MF_TEST_TRUE(strstr(mf_last_error(), "pair activations") != NULL,
                 "error does not name the label: %s", mf_last_error());
    MF_TEST_TRUE(mf_arena_used(&a) == used, "failed allocation changed the arena");
    printf("  over capacity: %s\n", mf_last_error());
    mf_arena_destroy(&a);

    /* An arena larger than the device: a clean MF_ERR_NOMEM from cudaMalloc, not a sticky CUDA
     * error (the next call still works). */
    size_t free_b = 0, total = 0;
    MF_TEST_OK(mf_cuda_mem_info(&free_b, &total));
    mf_arena huge;
    st = mf_arena_init(&huge, MF_DEV_CUDA, total + 64 * MiB * 1024, "too big");
    MF_TEST_TRUE(st == MF_ERR_NOMEM, "device-sized arena returned %s: %s", mf_status_name(st),
                 mf_last_error());
    printf("  larger than the device: %s\n", mf_last_error());
    if (st == MF_OK) mf_arena_destroy(&huge);
    MF_TEST_OK(mf_cuda_mem_info(&free_b, &total));
}

static void test_context_and_checks(void)
{
    printf("CUDA context, device checks, dispatch\n");
    mf_arena a;
    mf_ctx ctx;
    if (mf_arena_init(&a, MF_DEV_CUDA, 16 * MiB, "ctx test") != MF_OK) {
        mf_test_fail("arena: %s", mf_last_error());
        return;
    }
    mf_status st = mf_ctx_init(&ctx, MF_DEV_CUDA, &a);
    MF_TEST_TRUE(st == MF_OK && ctx.cuda != NULL, "mf_ctx_init on CUDA: %s", mf_last_error());
    if (st != MF_OK) {
        mf_arena_destroy(&a);
        return;
    }
    printf("  cuBLAS workspace outside the arena: %zu bytes\n",
           mf_cuda_state_workspace_bytes(ctx.cuda));
    MF_TEST_TRUE(mf_cuda_state_workspace_bytes(ctx.cuda) > 0, "no cuBLAS workspace recorded");

    /* A host tensor handed to a CUDA twin is an error naming it, not a crash. */
    float host[12] = {0};
    mf_tensor ht = mf_tensor_4(host, MF_F32, MF_DEV_CPU, 2, 3, 4, 1, 1);
    st = mf_cuda_fill(&ctx, &ht, 1.0f);
    MF_TEST_TRUE(st == MF_ERR_INVALID && strstr(mf_last_error(), "not a device tensor"),
                 "host tensor to mf_cuda_fill: %s (%s)", mf_status_name(st), mf_last_error());
    printf("  host tensor: %s\n", mf_last_error());

    /* The attention twins check their tensors' device too: a host q is an error naming it. */
    mf_tensor dt;
    const int64_t s4[4] = {1, 3, 2, 4};
    MF_TEST_OK(mf_arena_tensor(&a, &dt, MF_F32, 4, s4, "q"));
    mf_tensor hq = mf_tensor_4(host, MF_F32, MF_DEV_CPU, 4, 1, 3, 2, 2);
    st = mf_cuda_attention_forward(&ctx, &dt, NULL, &hq, &dt, &dt, NULL, NULL, 0.5f);
    MF_TEST_TRUE(st == MF_ERR_INVALID && strstr(mf_last_error(), "tensor q"),
                 "host q to attention_forward on CUDA: %s (%s)", mf_status_name(st),
                 mf_last_error());
    printf("  host q to attention: %s\n", mf_last_error());

    /* The public entry points dispatch to the twins on a CUDA context. */
    mf_tensor x, y;
    const int64_t s2[2] = {5, 7};
    MF_TEST_OK(mf_arena_tensor(&a, &x, MF_F32, 2, s2, "x"));
    MF_TEST_OK(mf_arena_tensor(&a, &y, MF_F32, 2, s2, "y"));
    if (x.data && y.data) {
        MF_TEST_OK(mf_fill(&ctx, &x, 1.5f));
        MF_TEST_OK(mf_fill(&ctx, &y, -0.25f));
        MF_TEST_OK(mf_add(&ctx, &y, &y, &x));
        float h[35];
        MF_TEST_OK(mf_cuda_copy_to_host(h, y.data, sizeof h));
        int bad = 0;
        for (int i = 0; i < 35; i++) bad += h[i] != 1.25f;
        MF_TEST_TRUE(bad == 0, "mf_fill/mf_add on a CUDA context: %d of 35 wrong", bad);
        printf("  mf_fill + mf_add dispatched on CUDA: %s\n", bad ? "FAIL" : "ok");
    }
    mf_ctx_destroy(&ctx);
    mf_arena_destroy(&a);
}

int main(void)
{
    if (!mf_cuda_available())
        return mf_test_skip("no CUDA device (mf_cuda_device_count() is 0: no driver or no GPU)");
    test_mem_info_and_copies();
    test_device_arena();
    test_context_and_checks();
    return mf_test_finish("test_cuda_memory");
}

#endif
