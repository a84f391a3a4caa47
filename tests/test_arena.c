/* Arena: alignment, stack discipline, exact high-water mark, labels, and a clean error (not a
 * crash) when a request exceeds capacity. */
#include <string.h>

#include "memopt/arena.h"
#include "tests/support/mf_test.h"

int main(void)
{
    mf_arena a;
    MF_TEST_OK(mf_arena_init(&a, MF_DEV_CPU, 1 << 20, "test"));
    printf("arena: capacity %zu, alignment %d\n", a.capacity, MF_ARENA_ALIGN);

    void *p1, *p2, *p3;
    MF_TEST_OK(mf_arena_alloc(&a, 100, "activations", &p1));
    MF_TEST_TRUE(((uintptr_t)p1 % MF_ARENA_ALIGN) == 0, "first block not aligned");
    mf_arena_mark_t m = mf_arena_mark(&a);
    MF_TEST_OK(mf_arena_alloc(&a, 1000, "workspace", &p2));
    MF_TEST_OK(mf_arena_alloc(&a, 1, "workspace", &p3));
    MF_TEST_TRUE(((uintptr_t)p2 % MF_ARENA_ALIGN) == 0 && ((uintptr_t)p3 % MF_ARENA_ALIGN) == 0,
                 "blocks not aligned");
    MF_TEST_TRUE((char *)p2 >= (char *)p1 + 100 && (char *)p3 >= (char *)p2 + 1000,
                 "blocks overlap");
    memset(p2, 0xab, 1000); /* the memory is usable */
    size_t expect_peak = 256 + 1024 + 256;
    MF_TEST_TRUE(mf_arena_high_water(&a) == expect_peak, "high-water %zu, expected %zu",
                 mf_arena_high_water(&a), expect_peak);
    mf_arena_release(&a, m);
    MF_TEST_TRUE(mf_arena_used(&a) == 256, "release left %zu bytes in use, expected 256",
                 mf_arena_used(&a));
    MF_TEST_TRUE(mf_arena_high_water(&a) == expect_peak, "release changed the high-water mark");

    /* The same region is handed out again after release (stack discipline). */
    void *p4;
    MF_TEST_OK(mf_arena_alloc(&a, 10, "workspace", &p4));
    MF_TEST_TRUE(p4 == p2, "released space not reused");

    /* Label accounting: workspace peaked at 1024 + 256 bytes and is 256 now. */
    int found = 0;
    for (int i = 0; i < a.nlabels; i++) {
        if (strcmp(a.labels[i].label, "workspace")) continue;
        found = 1;
        MF_TEST_TRUE(a.labels[i].peak == 1280 && a.labels[i].current == 256,
                     "workspace label: peak %zu current %zu, expected 1280 and 256",
                     a.labels[i].peak, a.labels[i].current);
        MF_TEST_TRUE(a.labels[i].at_high_water == 1280, "workspace at high-water %zu",
                     a.labels[i].at_high_water);
    }
    MF_TEST_TRUE(found, "label 'workspace' missing from the table");

    /* Over capacity: an error naming the arena and the label, and the arena unchanged. */
    size_t used = mf_arena_used(&a);
    void *big = (void *)1;
    mf_status st = mf_arena_alloc(&a, (size_t)2 << 20, "pair representation", &big);
    MF_TEST_TRUE(st == MF_ERR_NOMEM, "over-capacity request returned %s", mf_status_name(st));
    MF_TEST_TRUE(big == NULL, "failed allocation returned a pointer");
    MF_TEST_TRUE(strstr(mf_last_error(), "pair representation") != NULL,
                 "error does not name the label: %s", mf_last_error());
    MF_TEST_TRUE(mf_arena_used(&a) == used, "failed allocation changed the arena");
    printf("over-capacity error: %s\n", mf_last_error());
    /* A size that would overflow the rounding must not wrap around. */
    st = mf_arena_alloc(&a, (size_t)-1, "huge", &big);
    MF_TEST_TRUE(st == MF_ERR_NOMEM, "SIZE_MAX request returned %s", mf_status_name(st));

    /* Tensors: shape, zero fill, and a peak reset for measuring one phase. */
    mf_tensor t;
    int64_t shape[3] = {3, 5, 7};
    MF_TEST_OK(mf_arena_zeros(&a, &t, MF_F32, 3, shape, "tensor"));
    MF_TEST_TRUE(mf_tensor_numel(&t) == 105 && mf_tensor_bytes(&t) == 420, "tensor size wrong");
    float *f = t.data;
    int nonzero = 0;
    for (int i = 0; i < 105; i++) nonzero |= f[i] != 0.0f;
    MF_TEST_TRUE(!nonzero, "mf_arena_zeros left nonzero data");
    mf_arena_reset(&a);
    mf_arena_reset_peak(&a);
    MF_TEST_TRUE(mf_arena_high_water(&a) == 0 && mf_arena_used(&a) == 0, "reset failed");

    mf_arena_print_table(&a, stdout);
    mf_arena_destroy(&a);

    /* A CUDA arena without CUDA is a clean error. */
    if (!mf_cuda_available()) {
        mf_arena g;
        st = mf_arena_init(&g, MF_DEV_CUDA, 1 << 20, "gpu");
        MF_TEST_TRUE(st != MF_OK, "CUDA arena created without a GPU");
        printf("CUDA arena without a GPU: %s\n", mf_last_error());
    }
    return mf_test_finish("test_arena");
}
