/* Matrix products on the CPU through oneDNN's matmul primitive (see cpu_backend.h for the
 * contract). Creating a oneDNN primitive costs far more than running a small product, so each
 * distinct problem gets one primitive, kept in a bounded cache with least-recently-used eviction.
 * oneDNN's scratchpad is user-managed and taken from the arena so that peak memory stays a number
 * the arena knows. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include "core/cpu/cpu_backend.h"

#define MF_GEMM_MAXD (MF_CPU_GEMM_MAX_BATCH + 2)

#define MF_DNNL_CHECK(expr)                                                                        \
    do {                                                                                           \
        dnnl_status_t mf_dnnl_s_ = (expr);                                                         \
        if (mf_dnnl_s_ != dnnl_success)                                                            \
            return mf_error(MF_ERR_BACKEND, __FILE__, __LINE__, "oneDNN call failed (%s): %s",     \
                            dnnl_status2str(mf_dnnl_s_), #expr);                                   \
    } while (0)

/* The full problem a primitive is specialised for. Zero-filled before use so that memcmp and the
 * hash see no stale padding. */
typedef struct {
    int32_t ndims;
    int32_t dtype; /* dnnl_data_type_t of a and b */
    int32_t bias;
    int32_t has_sum;
    float alpha, beta;
    int64_t a_dims[MF_GEMM_MAXD], a_str[MF_GEMM_MAXD];
    int64_t b_dims[MF_GEMM_MAXD], b_str[MF_GEMM_MAXD];
    int64_t c_dims[MF_GEMM_MAXD], c_str[MF_GEMM_MAXD];
} mf_dnnl_key;

typedef struct {
    mf_dnnl_key key;
    uint64_t hash;
    uint64_t last_use;
    dnnl_primitive_t prim;
    dnnl_memory_t mem_a, mem_b, mem_c, mem_bias, mem_scratch;
    size_t scratch_bytes;
    char impl[32]; /* oneDNN's implementation name, e.g. "brg:avx512_core_bf16" */
} mf_dnnl_entry;

struct mf_dnnl_state {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    mf_dnnl_entry *entries; /* [MF_DNNL_CACHE_CAPACITY] */
    int n;
    uint64_t tick;
    long hits, misses;
    char last_impl[32];
    struct mf_dnnl_memo *memo; /* workspace sizes the memory model asked for, [MEMO_CAP] */
};

/* Scratchpad sizes of problems asked by the memory model (mf_cpu_gemm_workspace): an open-
 * addressing table, so that replaying a plan many times (--chunk auto) neither creates primitives
 * nor evicts the ones the computation uses. */
#define MEMO_CAP 8192
struct mf_dnnl_memo {
    bool used;
    uint64_t hash;
    mf_dnnl_key key;
    size_t bytes;
};

/* ---- state ------------------------------------------------------------------------------- */

static void entry_destroy(mf_dnnl_entry *e)
{
    if (e->mem_a) dnnl_memory_destroy(e->mem_a);
    if (e->mem_b) dnnl_memory_destroy(e->mem_b);
    if (e->mem_c) dnnl_memory_destroy(e->mem_c);
    if (e->mem_bias) dnnl_memory_destroy(e->mem_bias);
    if (e->mem_scratch) dnnl_memory_destroy(e->mem_scratch);
    if (e->prim) dnnl_primitive_destroy(e->prim);
    memset(e, 0, sizeof *e);
}

mf_status mf_dnnl_create(struct mf_dnnl_state **out)
{
    *out = NULL;
    struct mf_dnnl_state *s = calloc(1, sizeof *s);
    if (!s) return MF_ERROR(MF_ERR_NOMEM, "oneDNN state: out of host memory");
    s->entries = calloc(MF_DNNL_CACHE_CAPACITY, sizeof *s->entries);
    if (!s->entries) {
        free(s);
        return MF_ERROR(MF_ERR_NOMEM, "oneDNN primitive cache: out of host memory");
    }
    dnnl_status_t st = dnnl_engine_create(&s->engine, dnnl_cpu, 0);
    if (st == dnnl_success)
        st = dnnl_stream_create(&s->stream, s->engine, dnnl_stream_default_flags);
    if (st != dnnl_success) {
        mf_dnnl_destroy(s);
        return MF_ERROR(MF_ERR_BACKEND, "oneDNN: cannot create the CPU engine and stream (%s)",
                        dnnl_status2str(st));
    }
    *out = s;
    return MF_OK;
}

void mf_dnnl_destroy(struct mf_dnnl_state *s)
{
    if (!s) return;
    if (s->entries)
        for (int i = 0; i < s->n; i++) entry_destroy(&s->entries[i]);
    free(s->entries);
    free(s->memo);
    if (s->stream) dnnl_stream_destroy(s->stream);
    if (s->engine) dnnl_engine_destroy(s->engine);
    free(s);
}

void mf_dnnl_cache_stats(const struct mf_dnnl_state *s, long *hits, long *misses)
{
    if (hits) *hits = s ? s->hits : 0;
    if (misses) *misses = s ? s->misses : 0;
}

int mf_dnnl_cache_size(const struct mf_dnnl_state *s)
{
    return s ? s->n : 0;
}

const char *mf_dnnl_last_impl(const struct mf_dnnl_state *s)
{
    return s ? s->last_impl : "";
}

/* ---- operand layouts ----------------------------------------------------------------------- */

/* One operand as oneDNN sees it: nd dims (batch dims, then the two matrix dims), extents (1 where
 * broadcast) and element strides. */
typedef struct {
    int nd;
    int64_t dims[MF_GEMM_MAXD];
    int64_t str[MF_GEMM_MAXD];
} mf_layout;

static uint64_t key_hash(const mf_dnnl_key *k)
{
    const unsigned char *p = (const unsigned char *)k;
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < sizeof *k; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* A dim of extent 1 is only ever indexed at 0, so its stride is free; oneDNN however matches
 * strides against its plain tags to pick a kernel (a stray stride on a unit dim sends the
 * problem to its slow reference code) and rejects strides that look overlapping. A unit matrix
 * dim gets the row-major value, a unit (broadcast) batch dim the operand's whole span. */
static void layout_fix_unit_strides(mf_layout *l)
{
    int nd = l->nd;
    if (l->dims[nd - 1] == 1) l->str[nd - 1] = 1;
    if (l->dims[nd - 2] == 1) l->str[nd - 2] = l->str[nd - 1] * l->dims[nd - 1];
    int64_t span = 1;
    for (int d = 0; d < nd; d++)
        if (l->dims[d] > 1 && l->str[d] * l->dims[d] > span) span = l->str[d] * l->dims[d];
    for (int d = nd - 3; d >= 0; d--)
        if (l->dims[d] == 1) l->str[d] = span;
}

/* Drops batch dims of extent 1 and merges neighbouring batch dims that are contiguous in every
 * operand, so that e.g. [B, H] batches of a contiguous tensor become one batch dim. */
static void normalise_batch(mf_layout *op[3], int *nbatch, int64_t *batch)
{
    int nb = *nbatch, w = 0;
    for (int d = 0; d < nb; d++) {
        if (batch[d] == 1) continue;
        bool merge = w > 0;
        for (int o = 0; o < 3 && merge; o++) {
            bool bc_p = op[o]->dims[w - 1] == 1, bc_d = op[o]->dims[d] == 1;
            merge = bc_p == bc_d && (bc_p || op[o]->str[w - 1] == op[o]->str[d] * op[o]->dims[d]);
        }
        if (merge) {
            batch[w - 1] *= batch[d];
            for (int o = 0; o < 3; o++) {
                if (op[o]->dims[w - 1] != 1) op[o]->dims[w - 1] *= op[o]->dims[d];
                op[o]->str[w - 1] = op[o]->str[d];
            }
            continue;
        }
        batch[w] = batch[d];
        for (int o = 0; o < 3; o++) {
            op[o]->dims[w] = op[o]->dims[d];
            op[o]->str[w] = op[o]->str[d];
        }
        w++;
    }
    for (int o = 0; o < 3; o++) {
        for (int j = 0; j < 2; j++) {
            op[o]->dims[w + j] = op[o]->dims[nb + j];
            op[o]->str[w + j] = op[o]->str[nb + j];
        }
        op[o]->nd = w + 2;
    }
    *nbatch = w;
}

/* ---- bf16 packing -------------------------------------------------------------------------- */

/* One contiguous row through mf_f32_to_bf16; `omp simd` lets -O2 vectorise it. */
static void convert_row_bf16(mf_bf16 *restrict dst, const float *restrict src, int64_t n)
{
#pragma omp simd
    for (int64_t j = 0; j < n; j++) dst[j] = mf_f32_to_bf16(src[j]);
}

/* Converts one operand to bf16 into a dense copy that keeps the orientation of its unit-stride
 * dim (a transposed operand stays transposed, so the copy reads memory in order), and rewrites
 * the layout to describe the copy. */
/* The dense copy's geometry: which dims are outer and inner, and its rows x inner elements. */
typedef struct {
    int d_outer, d_inner;
    int64_t outer, inner, rows;
} mf_pack_geometry;

static mf_pack_geometry pack_geometry(const mf_layout *l)
{
    int nd = l->nd, nb = nd - 2;
    bool row_major =
        l->str[nd - 1] == 1 || (l->str[nd - 2] != 1 && l->str[nd - 1] <= l->str[nd - 2]);
    mf_pack_geometry g;
    g.d_outer = row_major ? nd - 2 : nd - 1;
    g.d_inner = row_major ? nd - 1 : nd - 2;
    g.outer = l->dims[g.d_outer];
    g.inner = l->dims[g.d_inner];
    int64_t nmat = 1;
    for (int d = 0; d < nb; d++) nmat *= l->dims[d];
    g.rows = nmat * g.outer;
    return g;
}

/* Rewrites l to describe the dense copy. */
static void pack_layout(mf_layout *l, const mf_pack_geometry *g)
{
    l->str[g->d_inner] = 1;
    l->str[g->d_outer] = g->inner;
    int64_t stride = g->outer * g->inner;
    for (int d = l->nd - 3; d >= 0; d--) {
        l->str[d] = stride;
        stride *= l->dims[d];
    }
}

static mf_status pack_bf16(mf_ctx *ctx, mf_layout *l, const float *src, mf_bf16 **out)
{
    int nd = l->nd, nb = nd - 2;
    const mf_pack_geometry g = pack_geometry(l);
    int d_outer = g.d_outer, d_inner = g.d_inner;
    int64_t outer = g.outer, inner = g.inner, rows = g.rows;
    int64_t s_outer = l->str[d_outer], s_inner = l->str[d_inner];
    void *p;
    MF_TRY(mf_arena_alloc(ctx->arena, (size_t)(rows * inner) * sizeof(mf_bf16),
                          "matmul bf16 inputs", &p));
    mf_bf16 *dst = p;
    int64_t dims[MF_GEMM_MAXD], str[MF_GEMM_MAXD];
    memcpy(dims, l->dims, sizeof dims);
    memcpy(str, l->str, sizeof str);
#pragma omp parallel for schedule(static) if (rows * inner > 32768)
    for (int64_t r = 0; r < rows; r++) {
        int64_t m = r / outer, o = r % outer, off = o * s_outer;
        for (int d = nb - 1; d >= 0; d--) {
            off += (m % dims[d]) * str[d];
            m /= dims[d];
        }
        const float *s = src + off;
        mf_bf16 *t = dst + r * inner;
        if (s_inner == 1)
            convert_row_bf16(t, s, inner);
        else
            for (int64_t j = 0; j < inner; j++) t[j] = mf_f32_to_bf16(s[j * s_inner]);
    }
    pack_layout(l, &g);
    *out = dst;
    return MF_OK;
}

/* ---- primitive creation -------------------------------------------------------------------- */

static mf_status md_init(dnnl_memory_desc_t *md, int nd, const int64_t *dims, const int64_t *str,
                         dnnl_data_type_t dt, const char *what)
{
    dnnl_dims_t d, s;
    for (int i = 0; i < nd; i++) {
        d[i] = dims[i];
        s[i] = str[i];
    }
    dnnl_status_t st = dnnl_memory_desc_init_by_strides(md, nd, d, dt, s);
    if (st != dnnl_success)
        return MF_ERROR(MF_ERR_UNSUPPORTED,
                        "oneDNN rejects the strides of matmul operand %s (%s): within a matrix one "
                        "stride must be 1 and operands may not overlap themselves",
                        what, dnnl_status2str(st));
    return MF_OK;
}

/* scratch_only != NULL: only the primitive descriptor, for its scratchpad size (e unused). */
static mf_status entry_create(struct mf_dnnl_state *s, const mf_dnnl_key *k, mf_dnnl_entry *e,
                              size_t *scratch_only)
{
    int nd = k->ndims;
    dnnl_data_type_t dt = (dnnl_data_type_t)k->dtype;
    dnnl_memory_desc_t md_a, md_b, md_c, md_bias;
    MF_TRY(md_init(&md_a, nd, k->a_dims, k->a_str, dt, "a"));
    MF_TRY(md_init(&md_b, nd, k->b_dims, k->b_str, dt, "b"));
    MF_TRY(md_init(&md_c, nd, k->c_dims, k->c_str, dnnl_f32, "c"));
    if (k->bias) {
        int64_t bd[MF_GEMM_MAXD], bs[MF_GEMM_MAXD];
        for (int i = 0; i < nd; i++) {
            bd[i] = i == nd - 1 ? k->c_dims[nd - 1] : 1;
            bs[i] = i == nd - 1 ? 1 : k->c_dims[nd - 1];
        }
        MF_TRY(md_init(&md_bias, nd, bd, bs, dnnl_f32, "bias"));
    }
    dnnl_matmul_desc_t desc;
    MF_DNNL_CHECK(dnnl_matmul_desc_init(&desc, &md_a, &md_b, k->bias ? &md_bias : NULL, &md_c));

    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t st = dnnl_primitive_attr_create(&attr);
    if (st == dnnl_success)
        st = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (st == dnnl_success && k->alpha != 1.0f)
        st = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &k->alpha);
    if (st == dnnl_success && k->has_sum) {
        st = dnnl_post_ops_create(&po);
        if (st == dnnl_success) st = dnnl_post_ops_append_sum(po, k->beta);
        if (st == dnnl_success) st = dnnl_primitive_attr_set_post_ops(attr, po);
    }
    if (st != dnnl_success) {
        if (po) dnnl_post_ops_destroy(po);
        if (attr) dnnl_primitive_attr_destroy(attr);
        return MF_ERROR(MF_ERR_BACKEND, "oneDNN: cannot set matmul attributes (%s)",
                        dnnl_status2str(st));
    }
    st = dnnl_primitive_desc_create(&pd, &desc, attr, s->engine, NULL);
    if (po) dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    if (st != dnnl_success) {
        return MF_ERROR(
            st == dnnl_unimplemented ? MF_ERR_UNSUPPORTED : MF_ERR_BACKEND,
            "oneDNN has no matmul for this problem (%s): %s inputs, %d-D, M=%lld "
            "N=%lld K=%lld, a strides [..., %lld, %lld], b strides [..., %lld, %lld], "
            "c strides [..., %lld, %lld]",
            dnnl_status2str(st), dt == dnnl_bf16 ? "bf16" : "f32", nd, (long long)k->c_dims[nd - 2],
            (long long)k->c_dims[nd - 1], (long long)k->a_dims[nd - 1], (long long)k->a_str[nd - 2],
            (long long)k->a_str[nd - 1], (long long)k->b_str[nd - 2], (long long)k->b_str[nd - 1],
            (long long)k->c_str[nd - 2], (long long)k->c_str[nd - 1]);
    }
    const dnnl_memory_desc_t *md_s = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    if (scratch_only) {
        *scratch_only = md_s ? dnnl_memory_desc_get_size(md_s) : 0;
        dnnl_primitive_desc_destroy(pd);
        return MF_OK;
    }
    memset(e, 0, sizeof *e);
    e->key = *k;
    e->scratch_bytes = md_s ? dnnl_memory_desc_get_size(md_s) : 0;
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, (void *)&impl) == dnnl_success &&
        impl)
        snprintf(e->impl, sizeof e->impl, "%s", impl);
    st = dnnl_primitive_create(&e->prim, pd);
    if (st == dnnl_success) st = dnnl_memory_create(&e->mem_a, &md_a, s->engine, DNNL_MEMORY_NONE);
    if (st == dnnl_success) st = dnnl_memory_create(&e->mem_b, &md_b, s->engine, DNNL_MEMORY_NONE);
    if (st == dnnl_success) st = dnnl_memory_create(&e->mem_c, &md_c, s->engine, DNNL_MEMORY_NONE);
    if (st == dnnl_success && k->bias)
        st = dnnl_memory_create(&e->mem_bias, &md_bias, s->engine, DNNL_MEMORY_NONE);
    if (st == dnnl_success && e->scratch_bytes)
        st = dnnl_memory_create(&e->mem_scratch, md_s, s->engine, DNNL_MEMORY_NONE);
    dnnl_primitive_desc_destroy(pd);
    if (st != dnnl_success) {
        entry_destroy(e);
        return MF_ERROR(MF_ERR_BACKEND, "oneDNN: cannot create the matmul primitive (%s)",
                        dnnl_status2str(st));
    }
    return MF_OK;
}

static mf_status cache_get(struct mf_dnnl_state *s, const mf_dnnl_key *k, mf_dnnl_entry **out)
{
    uint64_t h = key_hash(k);
    s->tick++;
    for (int i = 0; i < s->n; i++) {
        mf_dnnl_entry *e = &s->entries[i];
        if (e->hash == h && memcmp(&e->key, k, sizeof *k) == 0) {
            e->last_use = s->tick;
            s->hits++;
            *out = e;
            return MF_OK;
        }
    }
    mf_dnnl_entry fresh;
    MF_TRY(entry_create(s, k, &fresh, NULL));
    s->misses++;
    int slot = s->n;
    if (slot == MF_DNNL_CACHE_CAPACITY) {
        slot = 0;
        for (int i = 1; i < s->n; i++)
            if (s->entries[i].last_use < s->entries[slot].last_use) slot = i;
        entry_destroy(&s->entries[slot]);
    } else {
        s->n++;
    }
    fresh.hash = h;
    fresh.last_use = s->tick;
    s->entries[slot] = fresh;
    *out = &s->entries[slot];
    return MF_OK;
}

/* ---- the product --------------------------------------------------------------------------- */

mf_cpu_gemm_desc mf_cpu_gemm_contiguous(int64_t batch, int64_t batch_a, int64_t batch_b, int64_t M,
                                        int64_t N, int64_t K, bool trans_a, bool trans_b,
                                        float alpha, float beta)
{
    mf_cpu_gemm_desc d;
    memset(&d, 0, sizeof d);
    d.nbatch = 1;
    d.batch[0] = batch;
    d.M = M;
    d.N = N;
    d.K = K;
    d.a_sb[0] = batch_a == 1 ? 0 : M * K;
    d.a_sm = trans_a ? 1 : K;
    d.a_sk = trans_a ? M : 1;
    d.b_sb[0] = batch_b == 1 ? 0 : K * N;
    d.b_sk = trans_b ? 1 : N;
    d.b_sn = trans_b ? K : 1;
    d.c_sb[0] = M * N;
    d.c_sm = N;
    d.c_sn = 1;
    d.alpha = alpha;
    d.beta = beta;
    return d;
}

/* K == 0: the product is empty, c = alpha * bias + beta * c. */
static void gemm_k0(const mf_cpu_gemm_desc *d, int64_t nmat, float *c, const float *bias)
{
    for (int64_t i = 0; i < nmat; i++) {
        int64_t off = 0, m = i;
        for (int b = d->nbatch - 1; b >= 0; b--) {
            off += (m % d->batch[b]) * d->c_sb[b];
            m /= d->batch[b];
        }
        for (int64_t r = 0; r < d->M; r++)
            for (int64_t n = 0; n < d->N; n++) {
                float *p = c + off + r * d->c_sm + n * d->c_sn;
                float v = bias ? d->alpha * bias[n] : 0.0f;
                *p = d->beta != 0.0f ? v + d->beta * *p : v;
            }
    }
}

static mf_status gemm_check(const mf_ctx *ctx, const mf_cpu_gemm_desc *d, int64_t *nmat)
{
    MF_REQUIRE(ctx->dnnl, "mf_cpu_gemm: the context has no oneDNN state (not a CPU context?)");
    MF_REQUIRE(d->nbatch >= 0 && d->nbatch <= MF_CPU_GEMM_MAX_BATCH,
               "mf_cpu_gemm: %d batch dims (at most %d)", d->nbatch, MF_CPU_GEMM_MAX_BATCH);
    MF_REQUIRE(d->M >= 0 && d->N >= 0 && d->K >= 0,
               "mf_cpu_gemm: negative size M=%lld N=%lld K=%lld", (long long)d->M, (long long)d->N,
               (long long)d->K);
    MF_REQUIRE(ctx->policy.compute == MF_F32 || ctx->policy.compute == MF_BF16,
               "mf_cpu_gemm: compute precision %s (f32 or bf16 expected)",
               mf_dtype_name(ctx->policy.compute));
    *nmat = 1;
    for (int i = 0; i < d->nbatch; i++) {
        MF_REQUIRE(d->batch[i] >= 0, "mf_cpu_gemm: negative batch extent %lld",
                   (long long)d->batch[i]);
        *nmat *= d->batch[i];
    }
    return MF_OK;
}

/* A batch dim over which both a and b are shared (oneDNN broadcasts one operand only), or -1. */
static int shared_batch_dim(const mf_cpu_gemm_desc *d)
{
    for (int i = 0; i < d->nbatch; i++)
        if (d->batch[i] != 1 && d->a_sb[i] == 0 && d->b_sb[i] == 0) return i;
    return -1;
}

/* The operands' layouts with batch dims normalised. */
static void gemm_layouts(const mf_cpu_gemm_desc *d, mf_layout *la, mf_layout *lb, mf_layout *lc)
{
    la->nd = lb->nd = lc->nd = d->nbatch + 2;
    int nb = d->nbatch;
    int64_t batch[MF_CPU_GEMM_MAX_BATCH + 1];
    for (int i = 0; i < nb; i++) {
        batch[i] = d->batch[i];
        la->dims[i] = d->a_sb[i] == 0 ? 1 : d->batch[i];
        la->str[i] = d->a_sb[i];
        lb->dims[i] = d->b_sb[i] == 0 ? 1 : d->batch[i];
        lb->str[i] = d->b_sb[i];
        lc->dims[i] = d->batch[i];
        lc->str[i] = d->c_sb[i];
    }
    la->dims[nb] = d->M, la->dims[nb + 1] = d->K, la->str[nb] = d->a_sm, la->str[nb + 1] = d->a_sk;
    lb->dims[nb] = d->K, lb->dims[nb + 1] = d->N, lb->str[nb] = d->b_sk, lb->str[nb + 1] = d->b_sn;
    lc->dims[nb] = d->M, lc->dims[nb + 1] = d->N, lc->str[nb] = d->c_sm, lc->str[nb + 1] = d->c_sn;
    mf_layout *ops[3] = {la, lb, lc};
    normalise_batch(ops, &nb, batch);
}

static void gemm_key(mf_dnnl_key *k, const mf_cpu_gemm_desc *d, bool bf16, bool bias, mf_layout *la,
                     mf_layout *lb, mf_layout *lc)
{
    mf_layout *ops[3] = {la, lb, lc};
    for (int o = 0; o < 3; o++) layout_fix_unit_strides(ops[o]);
    memset(k, 0, sizeof *k);
    k->ndims = la->nd;
    k->dtype = bf16 ? dnnl_bf16 : dnnl_f32;
    k->bias = bias;
    k->has_sum = d->beta != 0.0f;
    k->alpha = d->alpha;
    k->beta = k->has_sum ? d->beta : 0.0f;
    for (int i = 0; i < la->nd; i++) {
        k->a_dims[i] = la->dims[i], k->a_str[i] = la->str[i];
        k->b_dims[i] = lb->dims[i], k->b_str[i] = lb->str[i];
        k->c_dims[i] = lc->dims[i], k->c_str[i] = lc->str[i];
    }
}

static size_t arena_round(size_t bytes)
{
    return (bytes + MF_ARENA_ALIGN - 1) / MF_ARENA_ALIGN * MF_ARENA_ALIGN;
}

/* The scratchpad size of problem k: the primitive cache's entry when there is one, else the
 * memo, else a primitive descriptor made and dropped (memoised). */
static mf_status memo_scratch(struct mf_dnnl_state *s, const mf_dnnl_key *k, size_t *out)
{
    const uint64_t h = key_hash(k);
    for (int i = 0; i < s->n; i++)
        if (s->entries[i].hash == h && memcmp(&s->entries[i].key, k, sizeof *k) == 0) {
            *out = s->entries[i].scratch_bytes;
            return MF_OK;
        }
    if (!s->memo) {
        s->memo = calloc(MEMO_CAP, sizeof *s->memo);
        if (!s->memo) return MF_ERROR(MF_ERR_NOMEM, "oneDNN workspace memo: out of host memory");
    }
    size_t slot = (size_t)(h % MEMO_CAP);
    for (int probe = 0; probe < 64; probe++, slot = (slot + 1) % MEMO_CAP) {
        struct mf_dnnl_memo *m = &s->memo[slot];
        if (m->used && m->hash == h && memcmp(&m->key, k, sizeof *k) == 0) {
            *out = m->bytes;
            return MF_OK;
        }
        if (!m->used) break;
    }
    MF_TRY(entry_create(s, k, NULL, out));
    /* an empty slot, or after 64 probes any: a memo may forget */
    s->memo[slot] = (struct mf_dnnl_memo){true, h, *k, *out};
    return MF_OK;
}

mf_status mf_cpu_gemm_workspace(mf_ctx *ctx, const mf_cpu_gemm_desc *d, bool bias, size_t *bytes)
{
    *bytes = 0;
    int64_t nmat = 1;
    MF_TRY(gemm_check(ctx, d, &nmat));
    if (nmat == 0 || d->M == 0 || d->N == 0 || d->K == 0) return MF_OK;
    int sd = shared_batch_dim(d);
    if (sd >= 0) {
        mf_cpu_gemm_desc one = *d;
        one.batch[sd] = 1;
        return mf_cpu_gemm_workspace(ctx, &one, bias, bytes);
    }
    mf_layout la, lb, lc;
    gemm_layouts(d, &la, &lb, &lc);
    const bool bf16 = ctx->policy.compute == MF_BF16;
    size_t total = 0;
    if (bf16) {
        mf_pack_geometry ga = pack_geometry(&la), gb = pack_geometry(&lb);
        total += arena_round((size_t)(ga.rows * ga.inner) * sizeof(mf_bf16));
        total += arena_round((size_t)(gb.rows * gb.inner) * sizeof(mf_bf16));
        pack_layout(&la, &ga);
        pack_layout(&lb, &gb);
    }
    mf_dnnl_key k;
    gemm_key(&k, d, bf16, bias, &la, &lb, &lc);
    size_t scratch = 0;
    MF_TRY(memo_scratch(ctx->dnnl, &k, &scratch));
    *bytes = total + arena_round(scratch);
    return MF_OK;
}

mf_status mf_cpu_gemm(mf_ctx *ctx, const mf_cpu_gemm_desc *d, float *c, const float *a,
                      const float *b, const float *bias)
{
    struct mf_dnnl_state *s = ctx->dnnl;
    int64_t nmat = 1;
    MF_TRY(gemm_check(ctx, d, &nmat));
    if (nmat == 0 || d->M == 0 || d->N == 0) return MF_OK;
    MF_REQUIRE(c, "mf_cpu_gemm: c is NULL");
    if (d->K == 0) {
        gemm_k0(d, nmat, c, bias);
        return MF_OK;
    }
    MF_REQUIRE(a && b, "mf_cpu_gemm: a or b is NULL");
    /* oneDNN broadcasts a batch dim of one operand only: when both a and b are shared over a
     * batch dim, run the product once per index of that dim. */
    int sd = shared_batch_dim(d);
    if (sd >= 0) {
        mf_cpu_gemm_desc one = *d;
        one.batch[sd] = 1;
        for (int64_t j = 0; j < d->batch[sd]; j++)
            MF_TRY(mf_cpu_gemm(ctx, &one, c + j * d->c_sb[sd], a, b, bias));
        return MF_OK;
    }
    mf_layout la, lb, lc;
    gemm_layouts(d, &la, &lb, &lc);

    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    const void *pa = a, *pb = b;
    bool bf16 = ctx->policy.compute == MF_BF16;
    if (bf16) {
        mf_bf16 *qa, *qb;
        MF_TRY_GOTO(pack_bf16(ctx, &la, a, &qa));
        MF_TRY_GOTO(pack_bf16(ctx, &lb, b, &qb));
        pa = qa;
        pb = qb;
    }
    mf_dnnl_key k;
    gemm_key(&k, d, bf16, bias != NULL, &la, &lb, &lc);
    mf_dnnl_entry *e;
    MF_TRY_GOTO(cache_get(s, &k, &e));
    memcpy(s->last_impl, e->impl, sizeof s->last_impl);

    void *scratch = NULL;
    if (e->scratch_bytes) {
        MF_TRY_GOTO(mf_arena_alloc(ctx->arena, e->scratch_bytes, "dnnl scratchpad", &scratch));
    }
    dnnl_status_t ds = dnnl_memory_set_data_handle(e->mem_a, (void *)pa);
    if (ds == dnnl_success) ds = dnnl_memory_set_data_handle(e->mem_b, (void *)pb);
    if (ds == dnnl_success) ds = dnnl_memory_set_data_handle(e->mem_c, c);
    if (ds == dnnl_success && e->mem_bias)
        ds = dnnl_memory_set_data_handle(e->mem_bias, (void *)bias);
    if (ds == dnnl_success && e->mem_scratch)
        ds = dnnl_memory_set_data_handle(e->mem_scratch, scratch);
    if (ds == dnnl_success) {
        dnnl_exec_arg_t args[5];
        int nargs = 0;
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, e->mem_a};
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, e->mem_b};
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DST, e->mem_c};
        if (e->mem_bias) args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, e->mem_bias};
        if (e->mem_scratch) args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, e->mem_scratch};
        ds = dnnl_primitive_execute(e->prim, s->stream, nargs, args);
        if (ds == dnnl_success) ds = dnnl_stream_wait(s->stream);
    }
    if (ds != dnnl_success)
        st = MF_ERROR(MF_ERR_BACKEND, "oneDNN matmul execution failed (%s)", dnnl_status2str(ds));
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}
