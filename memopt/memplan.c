/* The simulated arena of the memory model (memplan.h). */
#include "memopt/memplan.h"

#include <string.h>

const char *mf_mem_kind_name(mf_mem_kind k)
{
    static const char *names[MF_MEM_NKINDS] = {"parameters", "gradients",   "optimizer state",
                                               "inputs",     "activations", "saved activations",
                                               "workspace"};
    return (int)k >= 0 && k < MF_MEM_NKINDS ? names[k] : "?";
}

void mf_memsim_init(mf_memsim *s, const mf_ctx *ctx, mf_device device, const mf_policy *policy)
{
    memset(s, 0, sizeof *s);
    s->policy = *policy;
    s->device = device;
    if (ctx && ctx->device == MF_DEV_CPU && ctx->dnnl) s->query = *ctx;
    s->status = MF_OK;
}

size_t mf_mem_round(size_t bytes)
{
    return (bytes + MF_ARENA_ALIGN - 1) / MF_ARENA_ALIGN * MF_ARENA_ALIGN;
}

size_t mf_mem_tensor_bytes(mf_dtype dt, int64_t numel)
{
    return mf_mem_round((size_t)(numel > 0 ? numel : 0) * mf_dtype_size(dt));
}

static void update_peak(mf_memsim *s)
{
    if (s->cur > s->peak) {
        s->peak = s->cur;
        memcpy(s->kind_at_peak, s->kind, sizeof s->kind);
    }
}

void mf_memsim_alloc(mf_memsim *s, mf_mem_kind kind, size_t bytes)
{
    /* the arena takes nothing for an empty request (mf_arena_alloc of 0 bytes) */
    bytes = mf_mem_round(bytes);
    s->cur += bytes;
    s->kind[kind] += bytes;
    s->nallocs++;
    update_peak(s);
}

void mf_memsim_tensor(mf_memsim *s, mf_mem_kind kind, mf_dtype dt, int64_t numel)
{
    mf_memsim_alloc(s, kind, mf_mem_tensor_bytes(dt, numel));
}

mf_memsim_mark_t mf_memsim_mark(const mf_memsim *s)
{
    mf_memsim_mark_t m;
    m.cur = s->cur;
    memcpy(m.kind, s->kind, sizeof m.kind);
    return m;
}

void mf_memsim_release(mf_memsim *s, mf_memsim_mark_t m)
{
    s->cur = m.cur;
    memcpy(s->kind, m.kind, sizeof s->kind);
}

bool mf_memsim_pair_split(const mf_memsim_pair *p)
{
    return p->host != p->trunk;
}

void mf_memsim_pair_up(const mf_memsim_pair *p, mf_dtype dt, int64_t numel)
{
    if (mf_memsim_pair_split(p)) mf_memsim_tensor(p->trunk, MF_MEM_INPUTS, dt, numel);
}

mf_memsim_pair_mark mf_memsim_pair_mark_both(const mf_memsim_pair *p)
{
    return (mf_memsim_pair_mark){mf_memsim_mark(p->host), mf_memsim_mark(p->trunk)};
}

void mf_memsim_pair_release(const mf_memsim_pair *p, mf_memsim_pair_mark m)
{
    mf_memsim_release(p->trunk, m.trunk);
    mf_memsim_release(p->host, m.host);
}

static bool offloaded(const mf_memsim *s)
{
    return s->policy.offload && s->offload_to;
}

static mf_dtype storage_dtype(const mf_memsim *s)
{
    return s->policy.storage == MF_BF16 ? MF_BF16 : MF_F32;
}

void mf_memsim_checkpoint(mf_memsim *s, int64_t numel)
{
    const mf_dtype dt = storage_dtype(s);
    if (!offloaded(s)) {
        mf_memsim_tensor(s, MF_MEM_SAVED, dt, numel);
        return;
    }
    mf_memsim_tensor(s->offload_to, MF_MEM_SAVED, dt, numel);
    if (s->device != MF_DEV_CPU && dt != MF_F32)
        mf_memsim_transient(s, mf_mem_round(mf_mem_tensor_bytes(dt, numel)));
}

void mf_memsim_restore(mf_memsim *s, int64_t numel)
{
    const mf_dtype dt = storage_dtype(s);
    if (offloaded(s) && s->device != MF_DEV_CPU && dt != MF_F32)
        mf_memsim_transient(s, mf_mem_round(mf_mem_tensor_bytes(dt, numel)));
}

void mf_memsim_transient(mf_memsim *s, size_t bytes)
{
    mf_memsim_mark_t m = mf_memsim_mark(s);
    mf_memsim_alloc(s, MF_MEM_WORK, bytes);
    mf_memsim_release(s, m);
}

size_t mf_memplan_fixed_device_bytes(mf_device device)
{
    /* core/cuda/cuda_backend.cu: MF_CUBLAS_WORKSPACE_BYTES, allocated once per context */
    return device == MF_DEV_CUDA ? (size_t)32 << 20 : 0;
}
