/* Philox4x32-10 (core/rng.h): the Random123 known-answer vectors, determinism, independence of
 * call order, uniform and normal moments, and that the sequential generator walks the same
 * stream as the counter-based functions. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/mf_test.h"

/* Known answers for philox4x32 with 10 rounds, from the Random123 distribution's file
 * tests/kat_vectors (github.com/DEShawResearch/random123, the three "philox4x32 10" lines).
 * Columns there: counter (4 words), key (2 words), expected output (4 words), all hex. */
static const struct {
    uint32_t ctr[4], key[2], out[4];
} kat[3] = {
    {{0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u},
     {0x00000000u, 0x00000000u},
     {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
    {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
     {0xffffffffu, 0xffffffffu},
     {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
    {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
     {0xa4093822u, 0x299f31d0u},
     {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
};

static void test_known_answers(void)
{
    for (int t = 0; t < 3; t++) {
        uint32_t out[4];
        mf_philox4x32_10(kat[t].key, kat[t].ctr, out);
        bool ok = memcmp(out, kat[t].out, sizeof out) == 0;
        printf("  Random123 KAT %d: ctr %08x.. key %08x %08x -> %08x %08x %08x %08x  %s\n", t,
               kat[t].ctr[0], kat[t].key[0], kat[t].key[1], out[0], out[1], out[2], out[3],
               ok ? "ok" : "FAIL");
        if (!ok)
            mf_test_fail(
                "philox4x32-10 KAT %d: got %08x %08x %08x %08x, expected %08x %08x %08x %08x", t,
                out[0], out[1], out[2], out[3], kat[t].out[0], kat[t].out[1], kat[t].out[2],
                kat[t].out[3]);
    }
    /* mf_rng_u32 packs (seed, stream, index) as key = seed, counter = (index / 4, stream) and
     * returns word index % 4: KAT 0 is seed 0, stream 0, indices 0..3, and a draw with every
     * field nonzero matches the block function called directly. */
    int bad = 0;
    for (uint64_t w = 0; w < 4; w++) bad += mf_rng_u32(0, 0, w) != kat[0].out[w];
    const uint64_t seed = 0x0123456789abcdefull, stream = 0xfedcba9876543210ull;
    const uint64_t index = 0x000000ab12345679ull, block = index >> 2;
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)}, out[4];
    uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)stream,
                       (uint32_t)(stream >> 32)};
    mf_philox4x32_10(key, ctr, out);
    bad += mf_rng_u32(seed, stream, index) != out[index & 3];
    printf("  mf_rng_u32: KAT 0 at (0, 0, 0..3); key/counter packing of 64-bit fields  %s\n",
           bad ? "FAIL" : "ok");
    if (bad)
        mf_test_fail("mf_rng_u32 does not map (seed, stream, index) onto Philox as documented");
}

/* The same (seed, stream, index) gives the same value whatever was drawn before, in any order;
 * different seeds or streams give different sequences. */
static void test_determinism_and_order(void)
{
    enum { N = 4096 };
    float *fwd = malloc(sizeof(float) * N), *rev = malloc(sizeof(float) * N);
    float *strided = malloc(sizeof(float) * N), *again = malloc(sizeof(float) * N);
    for (int64_t i = 0; i < N; i++) fwd[i] = mf_rng_uniform(42, 3, (uint64_t)i);
    for (int64_t i = N - 1; i >= 0; i--) rev[i] = mf_rng_uniform(42, 3, (uint64_t)i);
    /* Interleaved with draws from other streams and seeds, in a scrambled order. */
    for (int64_t s = 0; s < N; s++) {
        int64_t i = (s * 1237) % N; /* 1237 is odd, so this visits every index once */
        (void)mf_rng_uniform(43, 3, (uint64_t)i);
        (void)mf_rng_uniform(42, 4, (uint64_t)i);
        strided[i] = mf_rng_uniform(42, 3, (uint64_t)i);
    }
    for (int64_t i = 0; i < N; i++) again[i] = mf_rng_uniform(42, 3, (uint64_t)i);
    mf_check_bitwise_f32("uniform(42, 3, i): reverse order", rev, fwd, N);
    mf_check_bitwise_f32("uniform(42, 3, i): scrambled, interleaved order", strided, fwd, N);
    mf_check_bitwise_f32("uniform(42, 3, i): second run", again, fwd, N);

    mf_rng r = mf_rng_init(42, 3);
    for (int64_t i = 0; i < N; i++) again[i] = mf_rng_next_uniform(&r);
    mf_check_bitwise_f32("mf_rng_next_uniform walks the same stream", again, fwd, N);

    int same_seed = 0, same_stream = 0;
    for (int64_t i = 0; i < N; i++) {
        same_seed += mf_rng_u32(42, 3, (uint64_t)i) == mf_rng_u32(43, 3, (uint64_t)i);
        same_stream += mf_rng_u32(42, 3, (uint64_t)i) == mf_rng_u32(42, 4, (uint64_t)i);
    }
    /* Independent 32-bit words agree with probability 2^-32: 4096 draws should give none. */
    printf("  other seed / other stream: %d / %d of %d words equal (expect 0)  %s\n", same_seed,
           same_stream, N, same_seed + same_stream <= 1 ? "ok" : "FAIL");
    if (same_seed + same_stream > 1) mf_test_fail("seeds or streams are not independent");
    free(fwd), free(rev), free(strided), free(again);
}

/* Moments of 1e6 draws. Uniform [0, 1): mean 1/2, variance 1/12; standard errors are
 * 0.289/sqrt(n) = 2.9e-4 for the mean and ~3e-4 * 1/12 relative for the variance; a tolerance of
 * 2e-3 is > 6 standard errors. Normal: mean 0 (s.e. 1e-3), variance 1 (s.e. 1.4e-3): 1e-2. */
static void test_moments(void)
{
    const int64_t n = 1000000;
    double s = 0, s2 = 0, ns = 0, ns2 = 0, lo = 1, hi = 0;
    for (int64_t i = 0; i < n; i++) {
        double u = mf_rng_uniform(2024, 9, (uint64_t)i);
        s += u, s2 += u * u;
        lo = u < lo ? u : lo, hi = u > hi ? u : hi;
        double z = mf_rng_normal(2024, 10, (uint64_t)i);
        ns += z, ns2 += z * z;
    }
    double mean = s / n, var = s2 / n - mean * mean, nmean = ns / n, nvar = ns2 / n - nmean * nmean;
    double got[4] = {mean, var, nmean, nvar}, want[4] = {0.5, 1.0 / 12.0, 0.0, 1.0};
    mf_check_close_f64("uniform mean, variance over 1e6 draws", got, want, 2, 2e-3, 0);
    mf_check_close_f64("normal mean, variance over 1e6 draws", got + 2, want + 2, 2, 1e-2, 0);
    bool range = lo >= 0.0 && hi < 1.0 && hi > 0.999 && lo < 0.001;
    printf("  uniform range [%.3g, %.9g] inside [0, 1) and covering it  %s\n", lo, hi,
           range ? "ok" : "FAIL");
    if (!range) mf_test_fail("uniform draws outside [0, 1) or not covering it: [%g, %g]", lo, hi);
}

int main(void)
{
    test_known_answers();
    test_determinism_and_order();
    test_moments();
    return mf_test_finish("test_rng");
}
