/* Element types. bf16 is the upper half of an IEEE f32; conversion rounds to nearest even and keeps
 * NaN a NaN (a plain truncation or rounding could turn a NaN payload into Inf). */
#ifndef MF_CORE_DTYPE_H
#define MF_CORE_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define MF_HOSTDEV __host__ __device__
#else
#define MF_HOSTDEV
#endif

/* MF_F64 exists for the CPU only: model code run in double is the finite-difference oracle of
 * module- and block-level gradient checks. */
typedef enum { MF_F32 = 0, MF_BF16 = 1, MF_I32 = 2, MF_I8 = 3, MF_F64 = 4 } mf_dtype;

typedef struct {
    uint16_t bits;
} mf_bf16;

static inline size_t mf_dtype_size(mf_dtype t)
{
    switch (t) {
    case MF_F32:
        return 4;
    case MF_BF16:
        return 2;
    case MF_I32:
        return 4;
    case MF_I8:
        return 1;
    case MF_F64:
        return 8;
    }
    return 0;
}

static inline const char *mf_dtype_name(mf_dtype t)
{
    switch (t) {
    case MF_F32:
        return "f32";
    case MF_BF16:
        return "bf16";
    case MF_I32:
        return "i32";
    case MF_I8:
        return "i8";
    case MF_F64:
        return "f64";
    }
    return "?";
}

static inline MF_HOSTDEV uint32_t mf_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline MF_HOSTDEV float mf_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline MF_HOSTDEV mf_bf16 mf_f32_to_bf16(float f)
{
    uint32_t u = mf_f32_bits(f);
    mf_bf16 h;
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) {
        /* NaN: keep sign and the top payload bits, force the quiet bit so it stays a NaN. */
        h.bits = (uint16_t)((u >> 16) | 0x0040u);
        return h;
    }
    /* Round to nearest, ties to even: add 0x7fff plus the lowest kept bit. Overflow to Inf is
     * the correct IEEE result for values above the largest finite bf16. */
    u += 0x7fffu + ((u >> 16) & 1u);
    h.bits = (uint16_t)(u >> 16);
    return h;
}

static inline MF_HOSTDEV float mf_bf16_to_f32(mf_bf16 h)
{
    return mf_bits_f32((uint32_t)h.bits << 16);
}

/* Round an f32 to the nearest bf16 value and back: the precision loss of bf16 storage. */
static inline MF_HOSTDEV float mf_round_bf16(float f)
{
    return mf_bf16_to_f32(mf_f32_to_bf16(f));
}

#endif
