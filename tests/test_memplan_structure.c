/* Memory-model plans of the structure module, the output heads and the losses against the real
 * code on a real arena (memopt/memplan.h): for every module, each mode (forward with and without
 * saved activations, accumulate, backward with all, some and no gradients) runs on ctx's arena
 * and its plan on a simulated arena started at 0; the arena's high-water mark above the call's
 * starting offset and the bytes it leaves allocated must equal the plan's peak and cur EXACTLY.
 * Grid: N_res 1, 2, 5, 8, 11 (odd, and not multiples of the chunks), chunk off / 1 / 2 / 3 / 7 /
 * 64, storage and compute f32 / bf16, recompute off / block (the structure module), dropout on /
 * off, side-chain outputs given or not. Covered: IPA, the angle resnet, all-atom, backbone update,
 * the structure-module transition, the whole structure module (inference, training forward,
 * backward), the five heads, the head losses, the structure-loss wrappers, mf_loss_forward /
 * backward (PAE term on and off, gradients all or some, the pLDDT term filtered out), the train
 * step's output part composed as model/train_step.c runs it, and the calls that must take no
 * arena space at all. Parameters, inputs and outputs live in a second arena, so the measured
 * arena holds exactly what the code under test allocates. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "model/heads_memplan.h"
#include "model/losses_simple.h"
#include "structure_module/backbone_update.h"
#include "structure_module/sm_transition.h"
#include "tests/support/mf_test.h"

static mf_ctx ctx;
static mf_arena arena; /* the measured arena (ctx's) */
static mf_arena host;  /* parameters, inputs, outputs, gradients */
static uint64_t seed_counter = 1;
static long long ncases;
static size_t max_dev;

/* ---- host tensors -----------------------------------------------------------------------------
 */

static mf_tensor tnew(mf_dtype dt, int ndim, const int64_t *shape)
{
    mf_tensor t = {0};
    if (mf_arena_zeros(&host, &t, dt, ndim, shape, "test host") != MF_OK) {
        fprintf(stderr, "test host arena full: %s\n", mf_last_error());
        exit(1);
    }
    return t;
}
#define SH(...)                                                                                    \
    (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[])                   \
    {                                                                                              \
        __VA_ARGS__                                                                                \
    }
static mf_tensor zeros(int ndim, const int64_t *shape)
{
    return tnew(MF_F32, ndim, shape);
}
static mf_tensor normal(int ndim, const int64_t *shape, float sd)
{
    mf_tensor t = tnew(MF_F32, ndim, shape);
    mf_test_fill_normal_f32(t.data, mf_tensor_numel(&t), seed_counter++, sd);
    return t;
}
/* 0/1 with probability p of 1 */
static mf_tensor mask(int ndim, const int64_t *shape, float p)
{
    mf_tensor t = tnew(MF_F32, ndim, shape);
    float *x = t.data;
    const uint64_t sd = seed_counter++;
    for (int64_t i = 0; i < mf_tensor_numel(&t); i++)
        x[i] = mf_rng_uniform(sd, 3, (uint64_t)i) < p ? 1.0f : 0.0f;
    return t;
}
static mf_tensor ints(int ndim, const int64_t *shape, int32_t bound)
{
    mf_tensor t = tnew(MF_I32, ndim, shape);
    int32_t *x = t.data;
    const uint64_t sd = seed_counter++;
    for (int64_t i = 0; i < mf_tensor_numel(&t); i++)
        x[i] = (int32_t)(mf_rng_u32(sd, 5, (uint64_t)i) % (uint32_t)bound);
    return t;
}
/* parameters (random, AF2 initialisers; the zero-initialised ones get noise so nothing is
 * degenerate) or their gradients (zeros) */
static void params(const mf_param_spec *specs, int n, mf_tensor *p, bool gradients)
{
    for (int i = 0; i < n; i++) p[i] = zeros(specs[i].ndim, specs[i].shape);
    if (gradients) return;
    if (mf_params_init(specs, n, p, seed_counter++, 0) != MF_OK) exit(1);
    for (int i = 0; i < n; i++) {
        float *x = p[i].data;
        for (int64_t k = 0; k < mf_tensor_numel(&p[i]); k++)
            if (x[k] == 0.0f) x[k] = 0.1f * mf_rng_normal(seed_counter, 9, (uint64_t)k);
        seed_counter++;
    }
}
static mf_tensor *opt(mf_tensor *t, bool on)
{
    return on ? t : NULL;
}

/* ---- measurement ------------------------------------------------------------------------------
 */

typedef struct {
    mf_arena_mark_t mark;
    size_t base;
} probe;

static probe probe_start(void)
{
    probe p = {mf_arena_mark(&arena), mf_arena_used(&arena)};
    mf_arena_reset_peak(&arena);
    return p;
}

static mf_memsim sim(void)
{
    mf_memsim s;
    mf_memsim_init(&s, &ctx, MF_DEV_CPU, &ctx.policy);
    return s;
}

/* The real call's peak and leftover since p against the plan's. */
static void compare(const char *what, int64_t N, mf_status st, const probe *p, const mf_memsim *s)
{
    const size_t peak = mf_arena_high_water(&arena) - p->base;
    const size_t left = mf_arena_used(&arena) - p->base;
    char pol[160];
    mf_policy_describe(&ctx.policy, pol, sizeof pol);
    ncases++;
    mf_test_count(st == MF_OK);
    if (st != MF_OK) {
        mf_test_fail("%s (N %lld, %s): the real call failed: %s", what, (long long)N, pol,
                     mf_last_error());
        return;
    }
    MF_TEST_TRUE(s->status == MF_OK, "%s: a workspace query of the plan failed", what);
    const size_t d1 = peak > s->peak ? peak - s->peak : s->peak - peak;
    const size_t d2 = left > s->cur ? left - s->cur : s->cur - left;
    const size_t dev = d1 > d2 ? d1 : d2;
    if (dev > max_dev) max_dev = dev;
    MF_TEST_TRUE(dev == 0, "%s (N %lld, %s): real peak %zu left %zu, plan peak %zu left %zu", what,
                 (long long)N, pol, peak, left, s->peak, s->cur);
}

/* A call that must take no arena space at all (its module has no plan). */
static void no_space(const char *what, int64_t N, mf_status st, const probe *p)
{
    mf_memsim s = sim();
    compare(what, N, st, p, &s);
}

/* ---- policies ------------------------------------------------------------------------------- */

static const int64_t chunks[] = {0, 1, 2, 3, 7, 64};
#define NCHUNK ((int)(sizeof chunks / sizeof chunks[0]))

static mf_policy policy(int64_t chunk, mf_dtype storage, mf_dtype compute, mf_recompute rc)
{
    mf_policy p = mf_policy_default();
    p.chunk_size = chunk;
    p.storage = storage;
    p.compute = compute;
    p.recompute = rc;
    return p;
}

/* ---- small dims -------------------------------------------------------------------------------
 */

static mf_config config(bool pae)
{
    mf_config c;
    if (mf_config_preset("tiny", &c) != MF_OK) exit(1);
    c.channels.c_m = 6, c.channels.c_z = 5, c.channels.c_s = 8;
    c.structure_module.num_layers = 2;
    c.structure_module.ipa =
        (mf_ipa_config){.num_heads = 2, .c_hidden = 3, .num_qk_points = 2, .num_v_points = 3};
    c.structure_module.angle_resnet_c_hidden = 6;
    c.structure_module.angle_resnet_num_blocks = 2;
    c.structure_module.dropout_rate = 0.3;
    c.heads.predicted_lddt_c_hidden = 9;
    c.heads.predicted_aligned_error_enabled = pae;
    return c;
}

/* ---- IPA ------------------------------------------------------------------------------------ */

static void test_ipa(int64_t N, const mf_ipa_dims *d)
{
    mf_param_spec specs[MF_IPA_NUM_PARAMS];
    const int np = mf_ipa_param_specs(d, specs);
    mf_ipa_params p, g;
    params(specs, np, MF_PARAMS_AS_ARRAY(&p), false);
    params(specs, np, MF_PARAMS_AS_ARRAY(&g), true);
    mf_tensor s = normal(SH(N, d->c_s), 1), z = normal(SH(N, N, d->c_z), 1);
    mf_tensor rot = normal(SH(N, 3, 3), 1), tr = normal(SH(N, 3), 1), sm = mask(SH(N), 0.8f);
    mf_tensor out = zeros(SH(N, d->c_s)), dout = normal(SH(N, d->c_s), 1);
    mf_tensor ds = zeros(SH(N, d->c_s)), dz = zeros(SH(N, N, d->c_z));
    mf_tensor drot = zeros(SH(N, 3, 3)), dtr = zeros(SH(N, 3));
    for (int acc = 0; acc < 2; acc++) {
        probe pr = probe_start();
        mf_status st = mf_ipa_forward(&ctx, &out, acc, NULL, &s, &z, &rot, &tr, &sm, &p, d);
        mf_memsim m = sim();
        mf_ipa_plan_forward(&m, N, d, false, acc);
        compare("ipa forward", N, st, &pr, &m);
    }
    mf_ipa_saved sv;
    probe pf = probe_start();
    mf_status st = mf_ipa_forward(&ctx, &out, false, &sv, &s, &z, &rot, &tr, &sm, &p, d);
    mf_memsim m = sim();
    mf_ipa_plan_forward(&m, N, d, true, false);
    compare("ipa forward saving", N, st, &pf, &m);
    if (st != MF_OK) return;
    static const bool combos[][3] = {{1, 1, 1}, {1, 0, 0}, {0, 1, 0}, {0, 0, 1}, {0, 0, 0}};
    for (size_t k = 0; k < sizeof combos / sizeof combos[0]; k++) {
        const bool *c = combos[k];
        probe pb = probe_start();
        st = mf_ipa_backward(&ctx, opt(&ds, c[0]), opt(&dz, c[1]), &drot, &dtr, c[2] ? &g : NULL,
                             &dout, &sv, &s, &z, &rot, &tr, &p, d);
        mf_memsim b = sim();
        mf_ipa_plan_backward(&b, N, d, c[0], c[1], c[2]);
        compare("ipa backward", N, st, &pb, &b);
    }
    mf_arena_release(&arena, pf.mark);
}

/* ---- angle resnet -----------------------------------------------------------------------------
 */

static void test_angle_resnet(int64_t N, const mf_angle_resnet_dims *d)
{
    mf_param_spec specs[MF_ANGLE_RESNET_MAX_PARAMS];
    const int np = mf_angle_resnet_param_specs(d, specs);
    mf_angle_resnet_params p, g;
    memset(&p, 0, sizeof p), memset(&g, 0, sizeof g);
    params(specs, np, MF_PARAMS_AS_ARRAY(&p), false);
    params(specs, np, MF_PARAMS_AS_ARRAY(&g), true);
    mf_tensor s = normal(SH(N, d->c_s), 1), si = normal(SH(N, d->c_s), 1);
    mf_tensor ang = zeros(SH(N, 7, 2)), un = zeros(SH(N, 7, 2));
    mf_tensor dang = normal(SH(N, 7, 2), 1), dun = normal(SH(N, 7, 2), 1);
    mf_tensor ds = zeros(SH(N, d->c_s)), dsi = zeros(SH(N, d->c_s));
    for (int u = 0; u < 2; u++) {
        probe pr = probe_start();
        mf_status st = mf_angle_resnet_forward(&ctx, opt(&un, u), &ang, NULL, &s, &si, &p, d);
        mf_memsim m = sim();
        mf_angle_resnet_plan_forward(&m, N, d, false);
        compare("angle resnet forward", N, st, &pr, &m);
    }
    mf_angle_resnet_saved sv;
    probe pf = probe_start();
    mf_status st = mf_angle_resnet_forward(&ctx, &un, &ang, &sv, &s, &si, &p, d);
    mf_memsim m = sim();
    mf_angle_resnet_plan_forward(&m, N, d, true);
    compare("angle resnet forward saving", N, st, &pf, &m);
    if (st != MF_OK) return;
    static const bool combos[][3] = {{1, 1, 1}, {1, 0, 0}, {0, 1, 0}, {0, 0, 1}, {0, 0, 0}};
    for (size_t k = 0; k < sizeof combos / sizeof combos[0]; k++) {
        const bool *c = combos[k];
        probe pb = probe_start();
        st = mf_angle_resnet_backward(&ctx, opt(&ds, c[0]), opt(&dsi, c[1]), c[2] ? &g : NULL,
                                      k % 2 ? &dun : NULL, &dang, &sv, &s, &si, &p, d);
        mf_memsim b = sim();
        mf_angle_resnet_plan_backward(&b, N, d, c[0], c[1], c[2]);
        compare("angle resnet backward", N, st, &pb, &b);
    }
    mf_arena_release(&arena, pf.mark);
}

/* ---- all-atom, backbone update, structure-module transition --------------------------------- */

static void test_small_modules(int64_t N, int64_t CS)
{
    /* all-atom: the forward takes nothing, the backward its two buffers */
    mf_tensor aa = ints(SH(N), 21), rot = normal(SH(N, 3, 3), 1), tr = normal(SH(N, 3), 1);
    mf_tensor ang = normal(SH(N, 7, 2), 1), fr = zeros(SH(N, 8, 3, 3)), ft = zeros(SH(N, 8, 3));
    mf_tensor pos = zeros(SH(N, 14, 3)), g14 = normal(SH(N, 14, 3), 1);
    mf_tensor gfr = normal(SH(N, 8, 3, 3), 1), gft = normal(SH(N, 8, 3), 1);
    mf_tensor drot = zeros(SH(N, 3, 3)), dtr = zeros(SH(N, 3)), dang = zeros(SH(N, 7, 2));
    probe p = probe_start();
    no_space("all-atom forward", N, mf_all_atom_forward(&ctx, &fr, &ft, &pos, &aa, &rot, &tr, &ang),
             &p);
    for (int k = 0; k < 2; k++) {
        p = probe_start();
        mf_status st = mf_all_atom_backward(&ctx, &drot, &dtr, &dang, k ? NULL : &gfr,
                                            k ? NULL : &gft, &g14, &aa, &rot, &ang);
        mf_memsim m = sim();
        mf_all_atom_plan_backward(&m, N);
        compare("all-atom backward", N, st, &p, &m);
    }
    /* backbone update */
    mf_backbone_update_params bp = {normal(SH(CS, 6), 0.3f), normal(SH(6), 0.1f)};
    mf_backbone_update_params bg = {zeros(SH(CS, 6)), zeros(SH(6))};
    mf_tensor s = normal(SH(N, CS), 1), q = normal(SH(N, 4), 1), upd = zeros(SH(N, 6));
    mf_tensor qo = zeros(SH(N, 4)), to = zeros(SH(N, 3)), ro = zeros(SH(N, 3, 3));
    mf_tensor ds = zeros(SH(N, CS)), dq = zeros(SH(N, 4)), gq = normal(SH(N, 4), 1);
    mf_tensor gt = normal(SH(N, 3), 1), gr = normal(SH(N, 3, 3), 1);
    p = probe_start();
    mf_status st = mf_backbone_update_forward(&ctx, &qo, &to, &ro, &upd, &s, &q, &tr, &bp);
    mf_memsim m = sim();
    mf_backbone_update_plan_forward(&m, N, CS);
    compare("backbone update forward", N, st, &p, &m);
    static const bool combos[][2] = {{1, 1}, {1, 0}, {0, 1}, {0, 0}};
    for (int k = 0; k < 4; k++) {
        p = probe_start();
        st = mf_backbone_update_backward(&ctx, opt(&ds, combos[k][0]), &dq, &dtr,
                                         combos[k][1] ? &bg : NULL, &gq, &gt, &gr, &upd, &s, &q,
                                         &bp);
        m = sim();
        mf_backbone_update_plan_backward(&m, N, CS, combos[k][0], combos[k][1]);
        compare("backbone update backward", N, st, &p, &m);
    }
    /* structure-module transition */
    mf_sm_transition_params tp, tg;
    mf_tensor *pa = (mf_tensor *)&tp, *ga = (mf_tensor *)&tg;
    for (int k = 0; k < 3; k++) {
        pa[2 * k] = normal(SH(CS, CS), 0.3f), pa[2 * k + 1] = normal(SH(CS), 0.1f);
        ga[2 * k] = zeros(SH(CS, CS)), ga[2 * k + 1] = zeros(SH(CS));
    }
    tp.layer_norm_scale = normal(SH(CS), 1), tp.layer_norm_offset = normal(SH(CS), 1);
    tg.layer_norm_scale = zeros(SH(CS)), tg.layer_norm_offset = zeros(SH(CS));
    mf_tensor so = zeros(SH(N, CS)), gso = normal(SH(N, CS), 1);
    p = probe_start();
    st = mf_sm_transition_forward(&ctx, &so, NULL, &s, &tp);
    m = sim();
    mf_sm_transition_plan_forward(&m, N, CS, false);
    compare("sm transition forward", N, st, &p, &m);
    mf_sm_transition_saved sv;
    probe pf = probe_start();
    st = mf_sm_transition_forward(&ctx, &so, &sv, &s, &tp);
    m = sim();
    mf_sm_transition_plan_forward(&m, N, CS, true);
    compare("sm transition forward saving", N, st, &pf, &m);
    if (st != MF_OK) return;
    for (int k = 0; k < 4; k++) {
        p = probe_start();
        st = mf_sm_transition_backward(&ctx, opt(&ds, combos[k][0]), combos[k][1] ? &tg : NULL,
                                       &gso, &sv, &s, &tp);
        m = sim();
        mf_sm_transition_plan_backward(&m, N, CS, combos[k][0], combos[k][1]);
        compare("sm transition backward", N, st, &p, &m);
    }
    mf_arena_release(&arena, pf.mark);
}

/* ---- the structure module ---------------------------------------------------------------------
 */

typedef struct {
    mf_structure_module_params p, g;
    mf_tensor single, pair, aatype, seq_mask;
    mf_structure_module_outputs out, dout;
    mf_tensor dsingle, dpair;
} sm_case;

static void sm_setup(sm_case *c, int64_t N, const mf_structure_module_dims *d)
{
    memset(c, 0, sizeof *c);
    mf_param_spec specs[MF_STRUCTURE_MODULE_MAX_PARAMS];
    const int np = mf_structure_module_param_specs(d, specs);
    params(specs, np, MF_PARAMS_AS_ARRAY(&c->p), false);
    params(specs, np, MF_PARAMS_AS_ARRAY(&c->g), true);
    const int64_t L = d->num_layer, CS = d->c_s;
    c->single = normal(SH(N, CS), 1), c->pair = normal(SH(N, N, d->c_z), 1);
    c->aatype = ints(SH(N), 21), c->seq_mask = mask(SH(N), 0.8f);
    mf_structure_module_outputs *o = &c->out, *g = &c->dout;
    o->frames = zeros(SH(L, N, 7)), o->sidechain_rot = zeros(SH(L, N, 8, 9));
    o->sidechain_trans = zeros(SH(L, N, 8, 3)), o->positions = zeros(SH(L, N, 14, 3));
    o->angles = zeros(SH(L, N, 7, 2)), o->unnormalized_angles = zeros(SH(L, N, 7, 2));
    o->act = zeros(SH(N, CS)), o->final_atom_positions = zeros(SH(N, 37, 3));
    o->final_atom_mask = zeros(SH(N, 37));
    g->frames = normal(SH(L, N, 7), 1), g->sidechain_rot = normal(SH(L, N, 8, 9), 1);
    g->sidechain_trans = normal(SH(L, N, 8, 3), 1), g->positions = normal(SH(L, N, 14, 3), 1);
    g->angles = normal(SH(L, N, 7, 2), 1), g->unnormalized_angles = normal(SH(L, N, 7, 2), 1);
    g->act = normal(SH(N, CS), 1), g->final_atom_positions = normal(SH(N, 37, 3), 1);
    c->dsingle = zeros(SH(N, CS)), c->dpair = zeros(SH(N, N, d->c_z));
}

/* The outputs as alphafold.c's inference gives them (frames, positions, angles, act, final atom
 * positions and mask), or all of them. */
static mf_structure_module_outputs sm_outputs(const sm_case *c, bool sidechains)
{
    mf_structure_module_outputs o = c->out;
    if (!sidechains) {
        o.sidechain_rot = o.sidechain_trans = o.unnormalized_angles = (mf_tensor){0};
    }
    return o;
}

static void test_structure_module(int64_t N, const mf_structure_module_dims *d, sm_case *c)
{
    const mf_structure_module_dropout_key train = {.training = true, .seed = 7, .recycle = 1};
    /* inference, with and without the side-chain outputs */
    for (int sc = 0; sc < 2; sc++) {
        mf_structure_module_outputs o = sm_outputs(c, sc);
        probe p = probe_start();
        mf_status st = mf_structure_module_forward(&ctx, &o, NULL, &c->single, &c->pair, &c->aatype,
                                                   &c->seq_mask, &c->p, d, NULL);
        mf_structure_module_plan_opts po = mf_structure_module_plan_inference();
        po.sidechain_outputs = sc;
        mf_memsim m = sim();
        mf_structure_module_plan_forward_ex(&m, N, d, &po, false);
        compare("structure module inference", N, st, &p, &m);
    }
    /* training forward (dropout on and off), then backward with various gradients */
    static mf_structure_module_saved sv;
    for (int drop = 0; drop < 2; drop++) {
        mf_structure_module_outputs o = sm_outputs(c, drop); /* sidechains with dropout only */
        mf_structure_module_plan_opts po = mf_structure_module_plan_training(drop);
        po.sidechain_outputs = drop;
        probe pf = probe_start();
        mf_status st = mf_structure_module_forward(&ctx, &o, &sv, &c->single, &c->pair, &c->aatype,
                                                   &c->seq_mask, &c->p, d, drop ? &train : NULL);
        mf_memsim m = sim();
        mf_structure_module_plan_forward_ex(&m, N, d, &po, true);
        compare("structure module training forward", N, st, &pf, &m);
        if (st != MF_OK) continue;
        /* dparams, datoms, dfinal_positions */
        static const bool combos[][3] = {{1, 1, 0}, {0, 0, 0}, {1, 0, 1}, {0, 1, 1}};
        for (int k = 0; k < 4; k++) {
            const bool *f = combos[k];
            mf_structure_module_outputs g = c->dout;
            if (!f[1]) g.positions = g.sidechain_rot = g.sidechain_trans = (mf_tensor){0};
            if (!f[2]) g.final_atom_positions = (mf_tensor){0};
            po.dparams = f[0], po.datoms = f[1], po.dfinal_positions = f[2];
            probe pb = probe_start();
            st = mf_structure_module_backward(&ctx, &c->dsingle, k == 3 ? NULL : &c->dpair,
                                              f[0] ? &c->g : NULL, &g, &sv, &c->single, &c->pair,
                                              &c->aatype, &c->seq_mask, &c->p, d);
            mf_memsim b = sim();
            mf_structure_module_plan_backward(&b, N, d, &po);
            compare("structure module backward", N, st, &pb, &b);
        }
        mf_arena_release(&arena, pf.mark);
    }
}

/* ---- heads ------------------------------------------------------------------------------------
 */

typedef struct {
    mf_distogram_head_params dist, ddist;
    mf_masked_msa_head_params msa, dmsa_p;
    mf_predicted_lddt_head_params lddt, dlddt;
    mf_experimentally_resolved_head_params er, der;
    mf_predicted_aligned_error_head_params pae, dpae;
} heads_params;

static void heads_setup(heads_params *hp, const mf_heads_dims *hd)
{
    mf_param_spec sp[8];
    int n = mf_distogram_head_param_specs(hd, sp);
    params(sp, n, MF_PARAMS_AS_ARRAY(&hp->dist), false);
    params(sp, n, MF_PARAMS_AS_ARRAY(&hp->ddist), true);
    n = mf_masked_msa_head_param_specs(hd, sp);
    params(sp, n, MF_PARAMS_AS_ARRAY(&hp->msa), false);
    params(sp, n, MF_PARAMS_AS_ARRAY(&hp->dmsa_p), true);
    n = mf_predicted_lddt_head_param_specs(hd, sp);
    params(sp, n, MF_PARAMS_AS_ARRAY(&hp->lddt), false);
    params(sp, n, MF_PARAMS_AS_ARRAY(&hp->dlddt), true);
    n = mf_experimentally_resolved_head_param_specs(hd, sp);
    params(sp, n, MF_PARAMS_AS_ARRAY(&hp->er), false);
    params(sp, n, MF_PARAMS_AS_ARRAY(&hp->der), true);
    n = mf_predicted_aligned_error_head_param_specs(hd, sp);
    params(sp, n, MF_PARAMS_AS_ARRAY(&hp->pae), false);
    params(sp, n, MF_PARAMS_AS_ARRAY(&hp->dpae), true);
}

static void test_heads(int64_t S, int64_t N, const mf_heads_dims *hd, heads_params *hp)
{
    const int64_t DB = hd->distogram_num_bins, MB = hd->masked_msa_num_output,
                  LB = hd->plddt_num_bins, EB = hd->experimentally_resolved_num_output,
                  PB = hd->pae_num_bins;
    mf_tensor pair = normal(SH(N, N, hd->c_z), 1), msa = normal(SH(S, N, hd->c_m), 1);
    mf_tensor single = normal(SH(N, hd->c_s), 1), act = normal(SH(N, hd->c_s), 1);
    mf_tensor dl = zeros(SH(N, N, DB)), ml = zeros(SH(S, N, MB)), ll = zeros(SH(N, LB));
    mf_tensor el = zeros(SH(N, EB)), pl = zeros(SH(N, N, PB));
    mf_tensor gdl = normal(SH(N, N, DB), 1), gml = normal(SH(S, N, MB), 1);
    mf_tensor gll = normal(SH(N, LB), 1), gel = normal(SH(N, EB), 1), gpl = normal(SH(N, N, PB), 1);
    mf_tensor dpair = zeros(SH(N, N, hd->c_z)), dmsa = zeros(SH(S, N, hd->c_m));
    mf_tensor dsingle = zeros(SH(N, hd->c_s));
    mf_linear_head_saved ls;
    static const bool combos[][2] = {{1, 1}, {1, 0}, {0, 1}, {0, 0}};
    for (int acc = 0; acc < 2; acc++) {
        probe p = probe_start();
        mf_status st =
            mf_distogram_head_forward(&ctx, &dl, acc, acc ? &ls : NULL, &pair, &hp->dist, hd);
        mf_memsim m = sim();
        mf_distogram_head_plan_forward(&m, N, hd, acc);
        compare("distogram head forward", N, st, &p, &m);
        p = probe_start();
        st = mf_masked_msa_head_forward(&ctx, &ml, acc, NULL, &msa, &hp->msa, hd);
        m = sim();
        mf_masked_msa_head_plan_forward(&m, S, N, hd, acc);
        compare("masked MSA head forward", N, st, &p, &m);
        p = probe_start();
        st = mf_experimentally_resolved_head_forward(&ctx, &el, acc, NULL, &single, &hp->er, hd);
        m = sim();
        mf_experimentally_resolved_head_plan_forward(&m, N, hd, acc);
        compare("experimentally resolved head forward", N, st, &p, &m);
        p = probe_start();
        st = mf_predicted_aligned_error_head_forward(&ctx, &pl, acc, NULL, &pair, &hp->pae, hd);
        m = sim();
        mf_predicted_aligned_error_head_plan_forward(&m, N, hd, acc);
        compare("aligned error head forward", N, st, &p, &m);
        p = probe_start();
        st = mf_predicted_lddt_head_forward(&ctx, &ll, acc, NULL, &act, &hp->lddt, hd);
        m = sim();
        mf_predicted_lddt_head_plan_forward(&m, N, hd, false, acc);
        compare("pLDDT head forward", N, st, &p, &m);
    }
    /* model/alphafold.c heads() */
    for (int k = 0; k < 4; k++) {
        const bool all = k & 1, pae = k & 2;
        probe p = probe_start();
        mf_status st = mf_predicted_lddt_head_forward(&ctx, &ll, false, NULL, &act, &hp->lddt, hd);
        if (st == MF_OK && all)
            st = mf_distogram_head_forward(&ctx, &dl, false, NULL, &pair, &hp->dist, hd);
        if (st == MF_OK && all)
            st = mf_masked_msa_head_forward(&ctx, &ml, false, NULL, &msa, &hp->msa, hd);
        if (st == MF_OK && all)
            st = mf_experimentally_resolved_head_forward(&ctx, &el, false, NULL, &single, &hp->er,
                                                         hd);
        if (st == MF_OK && pae)
            st = mf_predicted_aligned_error_head_forward(&ctx, &pl, false, NULL, &pair, &hp->pae,
                                                         hd);
        mf_memsim m = sim();
        mf_heads_plan_inference(&m, S, N, hd, all, pae, 0);
        compare("heads inference", N, st, &p, &m);
    }
    for (int k = 0; k < 4; k++) {
        const bool dx = combos[k][0], dp = combos[k][1];
        probe p = probe_start();
        mf_status st = mf_distogram_head_backward(&ctx, opt(&dpair, dx), dp ? &hp->ddist : NULL,
                                                  &gdl, &ls, &pair, &hp->dist, hd);
        mf_memsim m = sim();
        mf_distogram_head_plan_backward(&m, N, hd, dx, dp);
        compare("distogram head backward", N, st, &p, &m);
        p = probe_start();
        st = mf_masked_msa_head_backward(&ctx, opt(&dmsa, dx), dp ? &hp->dmsa_p : NULL, &gml, &ls,
                                         &msa, &hp->msa, hd);
        m = sim();
        mf_masked_msa_head_plan_backward(&m, S, N, hd, dx, dp);
        compare("masked MSA head backward", N, st, &p, &m);
        p = probe_start();
        st = mf_experimentally_resolved_head_backward(&ctx, opt(&dsingle, dx), dp ? &hp->der : NULL,
                                                      &gel, &ls, &single, &hp->er, hd);
        m = sim();
        mf_experimentally_resolved_head_plan_backward(&m, N, hd, dx, dp);
        compare("experimentally resolved head backward", N, st, &p, &m);
        p = probe_start();
        st = mf_predicted_aligned_error_head_backward(&ctx, opt(&dpair, dx), dp ? &hp->dpae : NULL,
                                                      &gpl, &ls, &pair, &hp->pae, hd);
        m = sim();
        mf_predicted_aligned_error_head_plan_backward(&m, N, hd, dx, dp);
        compare("aligned error head backward", N, st, &p, &m);
    }
    mf_predicted_lddt_head_saved lsv;
    probe pf = probe_start();
    mf_status st = mf_predicted_lddt_head_forward(&ctx, &ll, false, &lsv, &act, &hp->lddt, hd);
    mf_memsim m = sim();
    mf_predicted_lddt_head_plan_forward(&m, N, hd, true, false);
    compare("pLDDT head forward saving", N, st, &pf, &m);
    if (st != MF_OK) return;
    for (int k = 0; k < 4; k++) {
        const bool dx = combos[k][0], dp = combos[k][1];
        probe p = probe_start();
        st = mf_predicted_lddt_head_backward(&ctx, opt(&dsingle, dx), dp ? &hp->dlddt : NULL, &gll,
                                             &lsv, &act, &hp->lddt, hd);
        m = sim();
        mf_predicted_lddt_head_plan_backward(&m, N, hd, dx, dp);
        compare("pLDDT head backward", N, st, &p, &m);
    }
    mf_arena_release(&arena, pf.mark);
}

/* ---- losses -----------------------------------------------------------------------------------
 */

static void make_batch(mf_loss_batch *b, int64_t S, int64_t N)
{
    memset(b, 0, sizeof *b);
    mf_structure_loss_batch *s = &b->structure;
    s->aatype = ints(SH(N), 21);
    s->residue_index = ints(SH(N), 3);
    int32_t *ri = s->residue_index.data;
    for (int64_t i = 1; i < N; i++) ri[i] += ri[i - 1] + 1; /* increasing, with gaps */
    s->seq_mask = mask(SH(N), 0.9f);
    s->atom14_atom_exists = mask(SH(N, 14), 0.8f);
    s->atom14_gt_positions = normal(SH(N, 14, 3), 6);
    s->atom14_alt_gt_positions = normal(SH(N, 14, 3), 6);
    s->atom14_gt_exists = mask(SH(N, 14), 0.8f);
    s->atom14_alt_gt_exists = mask(SH(N, 14), 0.8f);
    s->atom14_atom_is_ambiguous = mask(SH(N, 14), 0.2f);
    s->rigidgroups_gt_frames = normal(SH(N, 8, 4, 4), 1);
    s->rigidgroups_alt_gt_frames = normal(SH(N, 8, 4, 4), 1);
    s->rigidgroups_gt_exists = mask(SH(N, 8), 0.8f);
    s->backbone_rigid_tensor = normal(SH(N, 4, 4), 1);
    s->backbone_rigid_mask = mask(SH(N), 0.9f);
    s->chi_mask = mask(SH(N, 4), 0.7f);
    s->chi_angles_sin_cos = normal(SH(N, 4, 2), 1);
    b->pseudo_beta = normal(SH(N, 3), 8);
    b->pseudo_beta_mask = mask(SH(N), 0.9f);
    b->true_msa = ints(SH(S, N), 23);
    b->bert_mask = mask(SH(S, N), 0.5f);
    b->all_atom_positions = normal(SH(N, 37, 3), 8);
    b->all_atom_mask = mask(SH(N, 37), 0.8f);
    b->atom37_atom_exists = mask(SH(N, 37), 0.8f);
    b->resolution = 2.0f;
    b->use_clamped_fape = 1.0f;
    b->seq_length = (double)N + 3;
}

static void make_outputs(mf_loss_outputs *o, int64_t S, int64_t N, int64_t L,
                         const mf_heads_dims *hd)
{
    memset(o, 0, sizeof *o);
    o->distogram_logits = normal(SH(N, N, hd->distogram_num_bins), 1);
    o->masked_msa_logits = normal(SH(S, N, hd->masked_msa_num_output), 1);
    o->experimentally_resolved_logits = normal(SH(N, hd->experimentally_resolved_num_output), 1);
    o->lddt_logits = normal(SH(N, hd->plddt_num_bins), 1);
    o->pae_logits = normal(SH(N, N, hd->pae_num_bins), 1);
    o->frames = normal(SH(L, N, 7), 3);
    o->sidechain_rot = normal(SH(L, N, 8, 9), 1);
    o->sidechain_trans = normal(SH(L, N, 8, 3), 6);
    o->positions = normal(SH(L, N, 14, 3), 6);
    o->angles = normal(SH(L, N, 7, 2), 1);
    o->unnormalized_angles = normal(SH(L, N, 7, 2), 1);
    o->final_atom_positions = normal(SH(N, 37, 3), 8);
}

static void grads_like(mf_loss_outputs *g, const mf_loss_outputs *o)
{
    mf_tensor *gt = (mf_tensor *)g;
    const mf_tensor *ot = (const mf_tensor *)o;
    for (size_t k = 0; k < sizeof *g / sizeof(mf_tensor); k++)
        gt[k] = ot[k].data ? zeros(ot[k].ndim, ot[k].shape) : (mf_tensor){0};
    g->final_atom_positions = (mf_tensor){0};
}

static void test_losses(int64_t S, int64_t N)
{
    const int64_t L = 2;
    mf_config cfg = config(true);
    const mf_heads_dims hd = mf_heads_dims_from_config(&cfg);
    mf_loss_batch b;
    make_batch(&b, S, N);
    mf_loss_outputs o, g;
    make_outputs(&o, S, N, L, &hd);
    grads_like(&g, &o);
    double v;
    /* the head losses */
    probe p = probe_start();
    mf_status st = mf_distogram_loss(&ctx, &v, &o.distogram_logits, &b.pseudo_beta,
                                     &b.pseudo_beta_mask, 2.3125, 21.6875);
    mf_memsim m = sim();
    mf_distogram_loss_plan_forward(&m, N);
    compare("distogram loss", N, st, &p, &m);
    p = probe_start();
    no_space("distogram loss backward", N,
             mf_distogram_loss_backward(&ctx, &g.distogram_logits, 1.0, &o.distogram_logits,
                                        &b.pseudo_beta, &b.pseudo_beta_mask, 2.3125, 21.6875),
             &p);
    p = probe_start();
    st = mf_masked_msa_loss(&ctx, &v, &o.masked_msa_logits, &b.true_msa, &b.bert_mask);
    m = sim();
    mf_masked_msa_loss_plan_forward(&m, S);
    compare("masked MSA loss", N, st, &p, &m);
    p = probe_start();
    no_space("masked MSA loss backward", N,
             mf_masked_msa_loss_backward(&ctx, &g.masked_msa_logits, 1.0, &o.masked_msa_logits,
                                         &b.true_msa, &b.bert_mask),
             &p);
    const mf_plddt_loss_options po = mf_plddt_loss_options_default();
    p = probe_start();
    st = mf_plddt_loss(&ctx, &v, &o.lddt_logits, &o.final_atom_positions, &b.all_atom_positions,
                       &b.all_atom_mask, b.resolution, &po);
    m = sim();
    mf_plddt_loss_plan_forward(&m, N);
    compare("pLDDT loss", N, st, &p, &m);
    static const struct {
        double dloss;
        float resolution;
    } pv[] = {{1.0, 2.0f}, {1.0, 5.0f}, {0.0, 2.0f}}; /* counts; filtered out; zero upstream */
    for (int k = 0; k < 3; k++) {
        p = probe_start();
        st = mf_plddt_loss_backward(&ctx, &g.lddt_logits, pv[k].dloss, &o.lddt_logits,
                                    &o.final_atom_positions, &b.all_atom_positions,
                                    &b.all_atom_mask, pv[k].resolution, &po);
        m = sim();
        mf_plddt_loss_plan_backward(&m, N, pv[k].dloss, pv[k].resolution, &po);
        compare("pLDDT loss backward", N, st, &p, &m);
    }
    const mf_resolution_filter rf = mf_resolution_filter_default();
    p = probe_start();
    no_space("experimentally resolved loss", N,
             mf_experimentally_resolved_loss(&ctx, &v, &o.experimentally_resolved_logits,
                                             &b.all_atom_mask, &b.atom37_atom_exists, 2.0f, &rf),
             &p);
    p = probe_start();
    no_space("experimentally resolved loss backward", N,
             mf_experimentally_resolved_loss_backward(
                 &ctx, &g.experimentally_resolved_logits, 1.0, &o.experimentally_resolved_logits,
                 &b.all_atom_mask, &b.atom37_atom_exists, 2.0f, &rf),
             &p);
    mf_tensor prot = normal(SH(N, 3, 3), 1), ptr = normal(SH(N, 3), 5);
    mf_tensor trot = normal(SH(N, 3, 3), 1), ttr = normal(SH(N, 3), 5);
    p = probe_start();
    st = mf_tm_loss(&ctx, &v, &o.pae_logits, &prot, &ptr, &trot, &ttr, &b.pseudo_beta_mask, 31.0,
                    2.0f, &rf);
    m = sim();
    mf_tm_loss_plan_forward(&m, N);
    compare("TM loss", N, st, &p, &m);
    p = probe_start();
    no_space("TM loss backward", N,
             mf_tm_loss_backward(&ctx, &g.pae_logits, 1.0, &o.pae_logits, &prot, &ptr, &trot, &ttr,
                                 &b.pseudo_beta_mask, 31.0, 2.0f, &rf),
             &p);

    /* the structure-loss wrappers */
    const mf_fape_options fo = mf_fape_default_options();
    const mf_structure_loss_batch *sb = &b.structure;
    mf_tensor rot8 = mf_tensor_slice0(&o.sidechain_rot, L - 1, 1);
    rot8 = mf_tensor_make(rot8.data, MF_F32, MF_DEV_CPU, 4, (const int64_t[]){N, 8, 3, 3});
    mf_tensor tr8 = mf_tensor_slice0(&o.sidechain_trans, L - 1, 1);
    tr8 = mf_tensor_make(tr8.data, MF_F32, MF_DEV_CPU, 3, (const int64_t[]){N, 8, 3});
    mf_tensor pos = mf_tensor_slice0(&o.positions, L - 1, 1);
    pos = mf_tensor_make(pos.data, MF_F32, MF_DEV_CPU, 3, (const int64_t[]){N, 14, 3});
    mf_tensor pos_flat =
        mf_tensor_make(pos.data, MF_F32, MF_DEV_CPU, 2, (const int64_t[]){N * 14, 3});
    mf_tensor tpos = normal(SH(N * 14, 3), 6), pm = mask(SH(N * 14), 0.8f);
    mf_tensor dprot = zeros(SH(N, 3, 3)), dptr = zeros(SH(N, 3)), dpos = zeros(SH(N * 14, 3));
    float fl, fu;
    p = probe_start();
    st = mf_fape_forward(&ctx, &fl, &fu, &prot, &ptr, &trot, &ttr, &pos_flat, &tpos,
                         &b.pseudo_beta_mask, &pm, &fo);
    m = sim();
    mf_fape_plan_forward(&m, N);
    compare("FAPE", N, st, &p, &m);
    p = probe_start();
    no_space("FAPE backward", N,
             mf_fape_backward(&ctx, &dprot, &dptr, &dpos, 1.0f, &prot, &ptr, &trot, &ttr, &pos_flat,
                              &tpos, &b.pseudo_beta_mask, &pm, &fo),
             &p);
    mf_renamed_ground_truth rg = {
        .alt_naming_is_better = zeros(SH(N)),
        .renamed_atom14_gt_positions = zeros(SH(N, 14, 3)),
        .renamed_atom14_gt_exists = zeros(SH(N, 14)),
        .renamed_gt_rot = zeros(SH(N, 8, 3, 3)),
        .renamed_gt_trans = zeros(SH(N, 8, 3)),
    };
    p = probe_start();
    no_space("renamed ground truth", N, mf_compute_renamed_ground_truth(&ctx, &rg, &pos, sb), &p);
    p = probe_start();
    st = mf_sidechain_fape_forward(&ctx, &fl, &rot8, &tr8, &pos, &rg, sb, &fo);
    m = sim();
    mf_sidechain_fape_plan_forward(&m, N);
    compare("side-chain FAPE", N, st, &p, &m);
    mf_tensor drot8 = zeros(SH(N, 8, 3, 3)), dtr8 = zeros(SH(N, 8, 3)),
              dpos14 = zeros(SH(N, 14, 3));
    p = probe_start();
    no_space("side-chain FAPE backward", N,
             mf_sidechain_fape_backward(&ctx, &drot8, &dtr8, &dpos14, 1.0f, &rot8, &tr8, &pos, &rg,
                                        sb, &fo),
             &p);
    mf_tensor lrot = normal(SH(L, N, 3, 3), 1), ltr = normal(SH(L, N, 3), 5);
    mf_tensor dlrot = zeros(SH(L, N, 3, 3)), dltr = zeros(SH(L, N, 3));
    float ff;
    p = probe_start();
    st = mf_backbone_fape_forward(&ctx, &fl, &ff, &lrot, &ltr, sb, 1.0f, &fo);
    m = sim();
    mf_backbone_fape_plan(&m, N);
    compare("backbone FAPE", N, st, &p, &m);
    p = probe_start();
    st = mf_backbone_fape_backward(&ctx, &dlrot, &dltr, 1.0f, &lrot, &ltr, sb, 1.0f, &fo);
    m = sim();
    mf_backbone_fape_plan(&m, N);
    compare("backbone FAPE backward", N, st, &p, &m);
    float cl, c1, c2;
    p = probe_start();
    no_space("supervised chi loss", N,
             mf_supervised_chi_loss_forward(&ctx, &cl, &c1, &c2, &o.angles, &o.unnormalized_angles,
                                            sb, 0.5f, 0.01f),
             &p);
    p = probe_start();
    no_space("supervised chi loss backward", N,
             mf_supervised_chi_loss_backward(&ctx, &g.angles, &g.unnormalized_angles, 1.0f,
                                             &o.angles, &o.unnormalized_angles, sb, 0.5f, 0.01f),
             &p);
    static mf_violation_tables tab;
    mf_violation_tables_init(&tab, 12.0f, 1.5f);
    mf_violation_terms terms;
    mf_violation_metrics metrics;
    for (int k = 0; k < 2; k++) {
        p = probe_start();
        st = mf_structural_violations_forward(&ctx, &terms, k ? &metrics : NULL, &pos, sb, &tab);
        m = sim();
        mf_structural_violations_plan_forward(&m, N, k);
        compare("structural violations", N, st, &p, &m);
    }
    p = probe_start();
    st = mf_structural_violation_loss_backward(&ctx, &dpos14, 1.0f, &pos, sb, &tab);
    m = sim();
    mf_structural_violation_loss_plan_backward(&m, N);
    compare("structural violation loss backward", N, st, &p, &m);

    /* the whole training loss */
    for (int pae = 0; pae < 2; pae++) {
        cfg = config(pae);
        mf_loss_values lv;
        p = probe_start();
        st = mf_loss_forward(&ctx, &lv, &o, &b, &cfg);
        m = sim();
        mf_loss_plan_forward(&m, S, N, L, &cfg);
        compare("loss forward", N, st, &p, &m);
        /* frames, angles, lddt_logits given; resolution */
        static const struct {
            bool frames, angles, lddt;
            float resolution;
        } gv[] = {{1, 1, 1, 2.0f}, {0, 1, 1, 2.0f}, {1, 0, 0, 2.0f}, {1, 1, 1, 5.0f}};
        for (int k = 0; k < 4; k++) {
            mf_loss_outputs gk = g;
            if (!gv[k].frames) gk.frames = (mf_tensor){0};
            if (!gv[k].angles) gk.angles = gk.unnormalized_angles = (mf_tensor){0};
            if (!gv[k].lddt) gk.lddt_logits = (mf_tensor){0};
            mf_loss_batch bk = b;
            bk.resolution = gv[k].resolution;
            p = probe_start();
            st = mf_loss_backward(&ctx, &gk, 1.0, &o, &bk, &cfg);
            mf_loss_plan_grads pg = {.frames = gv[k].frames,
                                     .angles = gv[k].angles,
                                     .lddt_logits = gv[k].lddt,
                                     .dtotal = 1.0,
                                     .resolution = gv[k].resolution};
            m = sim();
            mf_loss_plan_backward(&m, S, N, L, &cfg, &pg);
            compare("loss backward", N, st, &p, &m);
        }
    }
}

/* ---- the train step's output part, composed as model/train_step.c runs it ------------------ */

static mf_status train_output_part(int64_t S, int64_t N, const mf_config *cfg,
                                   const mf_structure_module_dims *sd, const mf_heads_dims *hd,
                                   const sm_case *c, heads_params *hp, bool pae, bool dropout,
                                   mf_memsim *plan)
{
    /* the Evoformer's outputs (the MSA and pair streams) and the single projection's parameters
     * are the caller's: the host arena */
    const int64_t L = sd->num_layer, CS = sd->c_s, CM = hd->c_m;
    mf_tensor msa = normal(SH(S + 1, N, CM), 1), z2 = c->pair, single = c->single;
    mf_tensor w = normal(SH(CM, CS), 0.3f), bias = normal(SH(CS), 0.1f);
    mf_tensor gw = zeros(SH(CM, CS)), gb = zeros(SH(CS));
    mf_loss_batch batch;
    make_batch(&batch, S, N);
    mf_arena *A = &arena;
    const char *lab = "test.train";
#define TRY(x)                                                                                     \
    do {                                                                                           \
        mf_status st_ = (x);                                                                       \
        if (st_ != MF_OK) return st_;                                                              \
    } while (0)
#define ALLOC(t, ...)  TRY(mf_arena_tensor(A, &(t), MF_F32, SH(__VA_ARGS__), lab))
#define ZEROS(t, like) TRY(mf_arena_zeros(A, &(t), MF_F32, (like).ndim, (like).shape, lab))
    /* forward_structure_module */
    mf_structure_module_outputs so = {0};
    ALLOC(so.frames, L, N, 7);
    ALLOC(so.sidechain_rot, L, N, 8, 9);
    ALLOC(so.sidechain_trans, L, N, 8, 3);
    ALLOC(so.positions, L, N, 14, 3);
    ALLOC(so.angles, L, N, 7, 2);
    ALLOC(so.unnormalized_angles, L, N, 7, 2);
    ALLOC(so.act, N, CS);
    ALLOC(so.final_atom_positions, N, 37, 3);
    ALLOC(so.final_atom_mask, N, 37);
    mf_structure_module_saved *sv;
    TRY(mf_arena_alloc(A, sizeof *sv, lab, (void **)&sv));
    const mf_structure_module_dropout_key key = {.training = dropout, .seed = 3, .recycle = 0};
    TRY(mf_structure_module_forward(&ctx, &so, sv, &single, &z2, &c->aatype, &c->seq_mask, &c->p,
                                    sd, &key));
    /* forward_heads */
    mf_tensor dist, ml, er, ll, pl = {0};
    ALLOC(dist, N, N, hd->distogram_num_bins);
    ALLOC(ml, S, N, hd->masked_msa_num_output);
    ALLOC(er, N, hd->experimentally_resolved_num_output);
    ALLOC(ll, N, hd->plddt_num_bins);
    mf_tensor msa_s = mf_tensor_slice0(&msa, 0, S);
    mf_linear_head_saved dsv, msv, esv, psv;
    mf_predicted_lddt_head_saved lsv;
    TRY(mf_distogram_head_forward(&ctx, &dist, false, &dsv, &z2, &hp->dist, hd));
    TRY(mf_masked_msa_head_forward(&ctx, &ml, false, &msv, &msa_s, &hp->msa, hd));
    TRY(mf_experimentally_resolved_head_forward(&ctx, &er, false, &esv, &single, &hp->er, hd));
    TRY(mf_predicted_lddt_head_forward(&ctx, &ll, false, &lsv, &so.act, &hp->lddt, hd));
    if (pae) {
        ALLOC(pl, N, N, hd->pae_num_bins);
        TRY(mf_predicted_aligned_error_head_forward(&ctx, &pl, false, &psv, &z2, &hp->pae, hd));
    }
    const mf_loss_outputs lo = {.distogram_logits = dist,
                                .masked_msa_logits = ml,
                                .experimentally_resolved_logits = er,
                                .lddt_logits = ll,
                                .pae_logits = pl,
                                .frames = so.frames,
                                .sidechain_rot = so.sidechain_rot,
                                .sidechain_trans = so.sidechain_trans,
                                .positions = so.positions,
                                .angles = so.angles,
                                .unnormalized_angles = so.unnormalized_angles,
                                .final_atom_positions = so.final_atom_positions};
    mf_train_plan_output_forward(plan, S, N, sd, hd, pae, dropout);
    /* the loss, clamped and unclamped */
    mf_loss_values lv;
    TRY(mf_loss_forward(&ctx, &lv, &lo, &batch, cfg));
    mf_loss_batch unclamped = batch;
    unclamped.use_clamped_fape = 0.0f;
    TRY(mf_loss_forward(&ctx, &lv, &lo, &unclamped, cfg));
    mf_train_plan_loss(plan, S, N, L, cfg);
    /* backward_loss */
    mf_loss_outputs gl = {0};
    ZEROS(gl.distogram_logits, dist);
    ZEROS(gl.masked_msa_logits, ml);
    ZEROS(gl.experimentally_resolved_logits, er);
    ZEROS(gl.lddt_logits, ll);
    if (pae) ZEROS(gl.pae_logits, pl);
    ZEROS(gl.frames, so.frames);
    ZEROS(gl.sidechain_rot, so.sidechain_rot);
    ZEROS(gl.sidechain_trans, so.sidechain_trans);
    ZEROS(gl.positions, so.positions);
    ZEROS(gl.angles, so.angles);
    ZEROS(gl.unnormalized_angles, so.unnormalized_angles);
    TRY(mf_loss_backward(&ctx, &gl, 1.0, &lo, &batch, cfg));
    mf_train_plan_loss_backward(plan, S, N, sd, hd, pae, cfg, batch.resolution);
    /* backward(): the stream gradients, then backward_output_modules */
    mf_tensor dmsa, dz, dsingle, dact;
    ZEROS(dmsa, msa);
    ZEROS(dz, z2);
    mf_memsim_tensor(plan, MF_MEM_ACTS, MF_F32, mf_tensor_numel(&msa));
    mf_memsim_tensor(plan, MF_MEM_ACTS, MF_F32, mf_tensor_numel(&z2));
    ZEROS(dsingle, single);
    ZEROS(dact, so.act);
    mf_tensor dmsa_s = mf_tensor_slice0(&dmsa, 0, S);
    TRY(mf_predicted_lddt_head_backward(&ctx, &dact, &hp->dlddt, &gl.lddt_logits, &lsv, &so.act,
                                        &hp->lddt, hd));
    TRY(mf_experimentally_resolved_head_backward(
        &ctx, &dsingle, &hp->der, &gl.experimentally_resolved_logits, &esv, &single, &hp->er, hd));
    TRY(mf_masked_msa_head_backward(&ctx, &dmsa_s, &hp->dmsa_p, &gl.masked_msa_logits, &msv, &msa_s,
                                    &hp->msa, hd));
    TRY(mf_distogram_head_backward(&ctx, &dz, &hp->ddist, &gl.distogram_logits, &dsv, &z2,
                                   &hp->dist, hd));
    if (pae)
        TRY(mf_predicted_aligned_error_head_backward(&ctx, &dz, &hp->dpae, &gl.pae_logits, &psv,
                                                     &z2, &hp->pae, hd));
    const mf_structure_module_outputs dout = {.frames = gl.frames,
                                              .sidechain_rot = gl.sidechain_rot,
                                              .sidechain_trans = gl.sidechain_trans,
                                              .positions = gl.positions,
                                              .angles = gl.angles,
                                              .unnormalized_angles = gl.unnormalized_angles,
                                              .act = dact};
    TRY(mf_structure_module_backward(&ctx, &dsingle, &dz, (mf_structure_module_params *)&c->g,
                                     &dout, sv, &single, &z2, &c->aatype, &c->seq_mask, &c->p, sd));
    mf_tensor row0 = mf_tensor_slice0(&msa, 0, 1), drow0 = mf_tensor_slice0(&dmsa, 0, 1);
    row0 = mf_tensor_make(row0.data, MF_F32, MF_DEV_CPU, 2, (const int64_t[]){N, CM});
    drow0 = mf_tensor_make(drow0.data, MF_F32, MF_DEV_CPU, 2, (const int64_t[]){N, CM});
    TRY(mf_linear_backward(&ctx, &drow0, &gw, &gb, &dsingle, &row0, &w));
    (void)bias;
    mf_train_plan_output_backward(plan, S, N, CM, sd, hd, pae, dropout);
#undef ALLOC
#undef ZEROS
#undef TRY
    return MF_OK;
}

static void test_train_output_part(int64_t S, int64_t N, sm_case *c, heads_params *hp)
{
    for (int pae = 0; pae < 2; pae++) {
        const mf_config cfg = config(pae);
        const mf_structure_module_dims sd = mf_structure_module_dims_from_config(&cfg);
        const mf_heads_dims hd = mf_heads_dims_from_config(&cfg);
        const mf_arena_mark_t hm = mf_arena_mark(&host);
        mf_memsim m = sim();
        probe p = probe_start();
        mf_status st = train_output_part(S, N, &cfg, &sd, &hd, c, hp, pae, pae /* dropout */, &m);
        compare("train step output part", N, st, &p, &m);
        mf_arena_release(&arena, p.mark);
        mf_arena_release(&host, hm);
    }
}

/* ---- driver -----------------------------------------------------------------------------------
 */

int main(void)
{
    /* thousands of tiny calls: threads only add synchronisation on a loaded machine; the train
     * step's output part runs with the default thread count too (oneDNN's scratchpad may depend on
     * it: the plan asks the same oneDNN in the same process) */
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    if (mf_test_ctx_cpu(&ctx, &arena, (size_t)256 << 20) != MF_OK ||
        mf_arena_init(&host, MF_DEV_CPU, (size_t)256 << 20, "test host") != MF_OK) {
        fprintf(stderr, "setup: %s\n", mf_last_error());
        return 1;
    }
    const mf_config cfg = config(true);
    const mf_structure_module_dims sd = mf_structure_module_dims_from_config(&cfg);
    const mf_heads_dims hd = mf_heads_dims_from_config(&cfg);
    /* IPA alone with every size distinct (a swapped dimension shows) */
    const mf_ipa_dims ipa = {.c_s = 8,
                             .c_z = 5,
                             .num_head = 2,
                             .num_scalar_qk = 3,
                             .num_scalar_v = 4,
                             .num_point_qk = 2,
                             .num_point_v = 5};
    /* small sizes under every policy; two larger ones (where a wrong size formula is not hidden by
     * the arena's 256-byte rounding) under a few */
    const int64_t sizes[] = {1, 2, 5, 8, 11, 37, 50}, S = 3;
    const mf_dtype dts[2] = {MF_F32, MF_BF16};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        const int64_t N = sizes[i];
        const bool large = N > 16;
        const mf_arena_mark_t hm = mf_arena_mark(&host);
        static sm_case c;
        static heads_params hp;
        sm_setup(&c, N, &sd);
        heads_setup(&hp, &hd);
        for (int ci = 0; ci < NCHUNK; ci++)
            for (int si = 0; si < 2; si++)
                for (int pi = 0; pi < 2; pi++) {
                    if (large && (pi > 0 || (chunks[ci] != 0 && chunks[ci] != 7))) continue;
                    ctx.policy = policy(chunks[ci], dts[si], dts[pi], MF_RECOMPUTE_OFF);
                    test_ipa(N, &ipa);
                    test_ipa(N, &sd.ipa);
                    test_angle_resnet(N, &sd.angle_resnet);
                    test_heads(S, N, &hd, &hp);
                    for (int rc = 0; rc < 2; rc++) {
                        ctx.policy.recompute = rc ? MF_RECOMPUTE_BLOCK : MF_RECOMPUTE_OFF;
                        test_structure_module(N, &sd, &c);
                    }
                }
        for (int pi = 0; pi < 2; pi++) {
            ctx.policy = policy(0, MF_F32, dts[pi], MF_RECOMPUTE_OFF);
            test_small_modules(N, sd.c_s);
        }
        ctx.policy = policy(0, MF_F32, MF_F32, MF_RECOMPUTE_OFF);
        test_losses(S, N);
        const mf_policy train_pols[] = {policy(0, MF_F32, MF_F32, MF_RECOMPUTE_OFF),
                                        policy(3, MF_BF16, MF_F32, MF_RECOMPUTE_BLOCK),
                                        policy(2, MF_F32, MF_BF16, MF_RECOMPUTE_OFF)};
        for (int k = 0; k < 3; k++) {
            ctx.policy = train_pols[k];
            test_train_output_part(S, N, &c, &hp);
        }
        omp_set_num_threads(threads > 1 ? threads : 2);
        ctx.policy = train_pols[1];
        test_train_output_part(S, N, &c, &hp);
        omp_set_num_threads(1);
        mf_arena_release(&host, hm);
    }
    /* A wide single representation and a minimal IPA, pair and angle resnet: the [N, c_s]
     * buffers and the products' packing scratch decide the structure module's peak here, not IPA
     * as above. (The dropout masks, [N, c_s] and transient, decided it at no shape we tried:
     * oneDNN's packing scratch of the transitions' products grows like c_s^2 and IPA's transients
     * like N^2 H; the dropout runs check everything else, and that the masks leave nothing.) */
    {
        mf_config w = cfg;
        w.channels.c_s = 512, w.channels.c_z = 1;
        w.structure_module.ipa =
            (mf_ipa_config){.num_heads = 1, .c_hidden = 1, .num_qk_points = 1, .num_v_points = 1};
        w.structure_module.angle_resnet_c_hidden = 1;
        w.structure_module.angle_resnet_num_blocks = 1;
        const mf_structure_module_dims wd = mf_structure_module_dims_from_config(&w);
        for (int64_t N = 3; N <= 6; N += 3) {
            const mf_arena_mark_t hm = mf_arena_mark(&host);
            static sm_case c;
            sm_setup(&c, N, &wd);
            for (int rc = 0; rc < 2; rc++)
                for (int ci = 0; ci < 2; ci++) {
                    ctx.policy = policy(ci ? 2 : 0, MF_F32, MF_F32,
                                        rc ? MF_RECOMPUTE_BLOCK : MF_RECOMPUTE_OFF);
                    test_structure_module(N, &wd, &c);
                }
            mf_arena_release(&host, hm);
        }
    }
    printf("memplan structure/heads/losses: %lld cases, max deviation %zu bytes (exact match "
           "required)\n",
           ncases, max_dev);
    mf_arena_destroy(&host);
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_memplan_structure");
}
