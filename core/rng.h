/* Counter-based random numbers (Philox4x32-10, Salmon et al., SC'11). A number is a pure function
 * of (seed, stream, index), so the CPU and the GPU produce the same values and a recomputed block
 * regenerates exactly the dropout mask it drew in the forward pass. */
#ifndef MF_CORE_RNG_H
#define MF_CORE_RNG_H

#include <math.h>
#include <stdint.h>

#include "core/dtype.h"

#define MF_PHILOX_M0 0xD2511F53u
#define MF_PHILOX_M1 0xCD9E8D57u
#define MF_PHILOX_W0 0x9E3779B9u
#define MF_PHILOX_W1 0xBB67AE85u

static inline MF_HOSTDEV void mf_philox4x32_10(const uint32_t key_in[2], const uint32_t ctr_in[4],
                                               uint32_t out[4])
{
    uint32_t k0 = key_in[0], k1 = key_in[1];
    uint32_t c0 = ctr_in[0], c1 = ctr_in[1], c2 = ctr_in[2], c3 = ctr_in[3];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)MF_PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)MF_PHILOX_M1 * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += MF_PHILOX_W0;
        k1 += MF_PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* The index-th 32-bit word of stream `stream` under `seed`. */
static inline MF_HOSTDEV uint32_t mf_rng_u32(uint64_t seed, uint64_t stream, uint64_t index)
{
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint64_t block = index >> 2;
    uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)stream,
                       (uint32_t)(stream >> 32)};
    uint32_t out[4];
    mf_philox4x32_10(key, ctr, out);
    return out[index & 3u];
}

/* Uniform in [0, 1) with 24 random bits (exactly representable in f32). */
static inline MF_HOSTDEV float mf_rng_uniform(uint64_t seed, uint64_t stream, uint64_t index)
{
    return (float)(mf_rng_u32(seed, stream, index) >> 8) * (1.0f / 16777216.0f);
}

/* Standard normal by Box-Muller from words 2*index and 2*index+1. */
static inline MF_HOSTDEV float mf_rng_normal(uint64_t seed, uint64_t stream, uint64_t index)
{
    float u1 = ((float)(mf_rng_u32(seed, stream, 2 * index) >> 8) + 1.0f) * (1.0f / 16777216.0f);
    float u2 = mf_rng_uniform(seed, stream, 2 * index + 1);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530717958647692f * u2);
}

/* Host-side sequential generator for test data and samplers: a (seed, stream) and a counter. */
typedef struct {
    uint64_t seed, stream, index;
} mf_rng;

static inline mf_rng mf_rng_init(uint64_t seed, uint64_t stream)
{
    mf_rng r = {seed, stream, 0};
    return r;
}
static inline uint32_t mf_rng_next_u32(mf_rng *r)
{
    return mf_rng_u32(r->seed, r->stream, r->index++);
}
static inline float mf_rng_next_uniform(mf_rng *r)
{
    return mf_rng_uniform(r->seed, r->stream, r->index++);
}
static inline float mf_rng_next_normal(mf_rng *r)
{
    float v = mf_rng_normal(r->seed, r->stream, r->index);
    r->index++;
    return v;
}

#endif
