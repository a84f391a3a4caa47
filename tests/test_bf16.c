/* bf16 conversion (core/dtype.h): round to nearest, ties to even, on exact ties and just beside
 * them; signed zeros; subnormals; the largest finite bf16 and the values that round up to Inf;
 * +-Inf; NaN stays a quiet NaN with its sign; every one of the 65536 bf16 bit patterns survives
 * bf16 -> f32 -> bf16; random values stay within half an ulp; and mf_convert through the tensor
 * API (f32 -> bf16, bf16 -> f32, f32 -> f32, unsupported pairs rejected). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/mf_test.h"

static int g_bits_checked, g_bits_bad;

/* One f32 bit pattern in, the exact bf16 bit pattern expected out. */
static void expect_bits(const char *what, uint32_t f32_bits, uint16_t want)
{
    mf_bf16 h = mf_f32_to_bf16(mf_bits_f32(f32_bits));
    g_bits_checked++;
    bool ok = h.bits == want;
    printf("  %-52s f32 0x%08x -> bf16 0x%04x (want 0x%04x)  %s\n", what, f32_bits, h.bits, want,
           ok ? "ok" : "FAIL");
    if (!ok) {
        g_bits_bad++;
        mf_test_fail("%s: f32 0x%08x gave bf16 0x%04x, expected 0x%04x", what, f32_bits, h.bits,
                     want);
    }
}

static void test_rounding(void)
{
    /* bf16 keeps 7 fraction bits: at 1.0 its ulp is 2^-7 and the f32 bits below the kept ones
     * are the low 16. A tie is exactly 0x8000 in those bits. */
    expect_bits("1 exact", 0x3F800000u, 0x3F80);
    expect_bits("1 + 2^-8 (tie, kept lsb even: down to 1)", 0x3F808000u, 0x3F80);
    /* 1 + 3*2^-8 = 1 + 1.5 ulp lies halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even). */
    expect_bits("1 + 3*2^-8 (tie, kept lsb odd: up to 1 + 2^-6)", 0x3F818000u, 0x3F82);
    expect_bits("1 + 2^-8 + 2^-23 (just above the tie: up)", 0x3F808001u, 0x3F81);
    expect_bits("1 + 2^-8 - 2^-23 (just below the tie: down)", 0x3F807FFFu, 0x3F80);
    expect_bits("1 + 3*2^-8 - 2^-23 (just below the tie: down)", 0x3F817FFFu, 0x3F81);
    expect_bits("-(1 + 2^-8) (tie, sign kept: down to -1)", 0xBF808000u, 0xBF80);
    expect_bits("-(1 + 3*2^-8) (tie: -(1 + 2^-6))", 0xBF818000u, 0xBF82);
    expect_bits("1.99999988 (carry into the exponent: 2)", 0x3FFFFFFFu, 0x4000);

    expect_bits("+0", 0x00000000u, 0x0000);
    expect_bits("-0", 0x80000000u, 0x8000);

    /* Subnormals: bf16 has the same exponent range as f32, so f32 subnormals round like any
     * other value in their low 16 bits. */
    expect_bits("smallest f32 subnormal 2^-149 (rounds to +0)", 0x00000001u, 0x0000);
    expect_bits("-2^-149 (rounds to -0)", 0x80000001u, 0x8000);
    expect_bits("smallest bf16 subnormal 2^-133 exact", 0x00010000u, 0x0001);
    expect_bits("2^-134 (tie between 0 and 2^-133: 0, even)", 0x00008000u, 0x0000);
    expect_bits("3*2^-134 (tie between 1 and 2 ulps: 2, even)", 0x00018000u, 0x0002);
    expect_bits("2^-133 - 2^-149 (above the tie: up)", 0x0000FFFFu, 0x0001);
    expect_bits("largest bf16 subnormal exact", 0x007F0000u, 0x007F);
    expect_bits("largest f32 subnormal (rounds up to 2^-126)", 0x007FFFFFu, 0x0080);

    /* Top of the range: 0x7F7F is the largest finite bf16, 3.38953139e38. */
    expect_bits("largest finite bf16 exact", 0x7F7F0000u, 0x7F7F);
    expect_bits("just below the tie above it (stays finite)", 0x7F7F7FFFu, 0x7F7F);
    expect_bits("tie with Inf (odd 0x7F7F rounds up: +Inf)", 0x7F7F8000u, 0x7F80);
    expect_bits("FLT_MAX (rounds up to +Inf)", 0x7F7FFFFFu, 0x7F80);
    expect_bits("-FLT_MAX (rounds to -Inf)", 0xFF7FFFFFu, 0xFF80);
    expect_bits("-largest finite bf16 exact", 0xFF7F0000u, 0xFF7F);
    expect_bits("+Inf", 0x7F800000u, 0x7F80);
    expect_bits("-Inf", 0xFF800000u, 0xFF80);

    /* NaN: quiet bit forced, sign and top payload kept. A signalling NaN with its payload only in
     * the low 16 bits must not become Inf (truncation would give 0x7F80). */
    expect_bits("quiet NaN", 0x7FC00000u, 0x7FC0);
    expect_bits("-quiet NaN", 0xFFC00000u, 0xFFC0);
    expect_bits("signalling NaN, payload in low bits only", 0x7F800001u, 0x7FC0);
    expect_bits("-signalling NaN, payload in low bits only", 0xFF800001u, 0xFFC0);
    expect_bits("NaN with all payload bits (no carry into sign)", 0x7FFFFFFFu, 0x7FFF);
    expect_bits("signalling NaN, payload in high bits", 0x7FA00000u, 0x7FE0);
    float nan_in[4] = {NAN, -NAN, mf_bits_f32(0x7F800001u), mf_bits_f32(0xFFBFFFFFu)};
    for (int i = 0; i < 4; i++) {
        mf_bf16 h = mf_f32_to_bf16(nan_in[i]);
        float back = mf_bf16_to_f32(h);
        bool ok =
            isnan(back) && (signbit(back) != 0) == (signbit(nan_in[i]) != 0) && (h.bits & 0x0040u);
        printf("  NaN %d (f32 0x%08x): bf16 0x%04x is a quiet NaN with the same sign  %s\n", i,
               mf_f32_bits(nan_in[i]), h.bits, ok ? "ok" : "FAIL");
        if (!ok) mf_test_fail("NaN %d did not stay a quiet NaN with its sign", i);
    }
}

/* Every bf16 bit pattern: bf16 -> f32 is exact (a shift), and back gives the same bits; NaN
 * patterns come back as NaN with the same sign and payload, the quiet bit set (a signalling
 * bf16 NaN is quietened, as IEEE conversions do). */
static void test_all_patterns(void)
{
    int64_t bad = 0, nans = 0, first = -1;
    for (uint32_t b = 0; b < 65536u; b++) {
        mf_bf16 h = {(uint16_t)b};
        float f = mf_bf16_to_f32(h);
        uint16_t back = mf_f32_to_bf16(f).bits;
        bool is_nan = (b & 0x7F80u) == 0x7F80u && (b & 0x007Fu);
        uint16_t want = is_nan ? (uint16_t)(b | 0x0040u) : (uint16_t)b;
        bool ok = back == want && mf_f32_bits(f) == b << 16 && (is_nan ? isnan(f) : !isnan(f));
        nans += is_nan;
        if (!ok) {
            if (first < 0) first = b;
            bad++;
        }
    }
    printf("  %-52s n=65536 (%lld NaN patterns) bad=%lld  %s\n",
           "every bf16 bit pattern: bf16 -> f32 -> bf16", (long long)nans, (long long)bad,
           bad ? "FAIL" : "ok");
    if (bad)
        mf_test_fail("%lld bf16 bit patterns did not survive the round trip; first 0x%04llx",
                     (long long)bad, (long long)first);
}

/* Random normals over 2^[-100, 100] (all normal f32): bf16 keeps an 8-bit significand, so the
 * rounding error is at most half an ulp, 2^-8 relative at the bottom of a binade: rtol 2^-8,
 * no atol. */
static void test_random_error(void)
{
    const int64_t n = 100000;
    float *x = malloc(sizeof(float) * n), *r = malloc(sizeof(float) * n);
    for (int64_t i = 0; i < n; i++) {
        x[i] = mf_rng_normal(7, 1, (uint64_t)i) *
               ldexpf(1.0f, (int)(mf_rng_u32(7, 2, (uint64_t)i) % 200u) - 100);
        r[i] = mf_round_bf16(x[i]);
    }
    mf_check_close_f32("bf16 rounding error of 1e5 values in 2^[-100, 100]", r, x, n, 0,
                       1.0 / 256.0);
    free(x), free(r);
}

static void test_convert_op(mf_ctx *ctx)
{
    enum { N = 12 };
    const uint32_t bits[N] = {0x3F808000u, 0x3F818000u, 0x00000001u, 0x00018000u,
                              0x80000000u, 0x7F7F8000u, 0x7F7F7FFFu, 0xFF800000u,
                              0x7F800001u, 0xFFC00000u, 0x40490FDBu, 0xC2F6E979u};
    float x[N], back[N], copy[N], want_back[N];
    mf_bf16 h[N];
    uint16_t want[N];
    for (int i = 0; i < N; i++) {
        x[i] = mf_bits_f32(bits[i]);
        want[i] = mf_f32_to_bf16(x[i]).bits;
        want_back[i] = mf_bf16_to_f32(mf_f32_to_bf16(x[i]));
    }
    mf_tensor tx = mf_tensor_4(x, MF_F32, MF_DEV_CPU, 2, 3, 4, 1, 1);
    mf_tensor th = mf_tensor_4(h, MF_BF16, MF_DEV_CPU, 2, 3, 4, 1, 1);
    mf_tensor tback = mf_tensor_4(back, MF_F32, MF_DEV_CPU, 2, 3, 4, 1, 1);
    mf_tensor tcopy = mf_tensor_4(copy, MF_F32, MF_DEV_CPU, 2, 3, 4, 1, 1);
    MF_TEST_OK(mf_convert(ctx, &th, &tx));
    MF_TEST_OK(mf_convert(ctx, &tback, &th));
    MF_TEST_OK(mf_convert(ctx, &tcopy, &tx));
    int bad = 0;
    for (int i = 0; i < N; i++) bad += h[i].bits != want[i];
    printf("  %-52s n=%d bitwise  %s\n", "mf_convert f32 -> bf16 [3, 4] (ties, Inf, NaN)", N,
           bad ? "FAIL" : "ok");
    if (bad) mf_test_fail("mf_convert f32 -> bf16: %d elements differ from mf_f32_to_bf16", bad);
    mf_check_bitwise_f32("mf_convert bf16 -> f32 [3, 4]", back, want_back, N);
    mf_check_bitwise_f32("mf_convert f32 -> f32 [3, 4] (copy)", copy, x, N);

    int32_t ibuf[N] = {0};
    mf_tensor ti = mf_tensor_4(ibuf, MF_I32, MF_DEV_CPU, 2, 3, 4, 1, 1);
    mf_tensor th_bad = mf_tensor_4(h, MF_BF16, MF_DEV_CPU, 2, 4, 3, 1, 1);
    struct {
        const char *what;
        mf_status st;
    } cases[3] = {{"mf_convert i32 -> f32 rejected", mf_convert(ctx, &tback, &ti)},
                  {"mf_convert bf16 -> bf16 rejected", mf_convert(ctx, &th, &th)},
                  {"mf_convert f32 [3, 4] -> bf16 [4, 3] rejected", mf_convert(ctx, &th_bad, &tx)}};
    for (int i = 0; i < 3; i++) {
        printf("  %-52s -> %s  %s\n", cases[i].what, mf_status_name(cases[i].st),
               cases[i].st == MF_ERR_INVALID ? "ok" : "FAIL");
        if (cases[i].st != MF_ERR_INVALID)
            mf_test_fail("%s: got %s", cases[i].what, mf_status_name(cases[i].st));
    }
    mf_clear_error();
}

int main(void)
{
    mf_ctx ctx;
    mf_arena arena;
    MF_TEST_OK(mf_test_ctx_cpu(&ctx, &arena, (size_t)1 << 20));
    if (mf_test_failures()) return mf_test_finish("test_bf16");

    test_rounding();
    printf("  exact bit patterns: %d checked, %d wrong\n", g_bits_checked, g_bits_bad);
    test_all_patterns();
    test_random_error();
    test_convert_op(&ctx);

    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_bf16");
}
