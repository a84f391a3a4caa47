/* The data loader (data/loader.h) on a raw feature file this test writes with data/h5io.h in the
 * featurize contract (format "memfold-features", schema 1, a group per chain), from real
 * structures (data/structure_io.h) and their real MSAs where shared/data has them: 4ZEY A (one
 * one-hot template), 2Q2K A (a3m + 2 Stockholm MSAs, chain B and itself as int32 templates with
 * sum_probs), d1nz0a_ (a3m, int32 deletions), 1A3A A (1024-row a3m; 6 more copies of this group
 * make the file big), 1AAP, 1BRF, 1C9O (single sequence). Checks, with the tiny preset (crop 64,
 * N_seq 8, N_extra 16, 2 templates):
 *  1. every chain's loader sample (hyperslab reads) equals, bit for bit, the pipeline run on the
 *     whole chain read in memory with the same seed;
 *  2. the prefetch thread's samples over 3 epochs equal the synchronous ones bitwise; the same
 *     seed in a new loader gives identical samples, another seed different ones; each epoch
 *     visits every chain once, in a shuffled order that changes between epochs; close while the
 *     thread is building returns;
 *  3. bytes requested from HDF5 per sample equal exactly what the plan needs (window columns of
 *     every MSA row, deletions of the kept rows, window residues, chosen templates), and for
 *     chains longer than the crop are about crop/N of the whole chain; ratios printed;
 *  4. resident memory (/proc/self/statm) sampled after every sample of 4 epochs: after the first
 *     epoch it grows by at most RSS_GROWTH_BOUND, far below the file's data size;
 *  5. malformed files are refused naming what is wrong. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/h5io.h"
#include "data/loader.h"
#include "data/msa.h"
#include "data/structure_io.h"
#include "protein/residue_constants.h"
#include "tests/support/mf_test.h"

/* Resident-memory growth allowed over epochs 2-4 (after every code path and HDF5's free lists
 * have been exercised once): 2 MiB, against ~8 MB of raw data read per epoch; a loader that kept
 * what it read would grow by the data it visits. */
#define RSS_GROWTH_BOUND (2.0 * 1024 * 1024)
#define NUM_BIG_COPIES   6

static char tmpdir[256];
static mf_config cfg;

typedef struct {
    char group[64];
    bool one_hot_templates, has_sum_probs;
} chain_kind;

static chain_kind kinds[32];
static int num_kinds;

/* ---- writing the raw feature file ---- */

typedef struct {
    int64_t N;
    int32_t *aatype;
    float *pos, *mask;
    char *seq;
    float resolution;
} chain_data;

static void chain_data_free(chain_data *c)
{
    free(c->aatype), free(c->pos), free(c->mask), free(c->seq);
    memset(c, 0, sizeof *c);
}

/* The chain's residues (all of them, or only the observed ones). */
static bool load_chain(const char *path, const char *chain, bool observed_only, chain_data *c)
{
    memset(c, 0, sizeof *c);
    mf_protein p = {0};
    if (mf_structure_read_chain(path, chain, &p) != MF_OK) {
        mf_test_fail("%s chain %s: %s", path, chain, mf_last_error());
        return false;
    }
    c->aatype = malloc((size_t)p.num_res * sizeof(int32_t));
    c->pos = malloc((size_t)p.num_res * 111 * sizeof(float));
    c->mask = malloc((size_t)p.num_res * 37 * sizeof(float));
    c->seq = malloc((size_t)p.num_res + 1);
    int64_t n = 0;
    for (int64_t i = 0; i < p.num_res; i++) {
        float any = 0;
        for (int a = 0; a < 37; a++) any += p.atom_mask[i * 37 + a];
        if (observed_only && any == 0) continue;
        c->aatype[n] = p.aatype[i];
        memcpy(c->pos + n * 111, p.atom_positions + i * 111, 111 * sizeof(float));
        memcpy(c->mask + n * 37, p.atom_mask + i * 37, 37 * sizeof(float));
        c->seq[n] = p.sequence[i];
        n++;
    }
    c->seq[n] = '\0';
    c->N = n;
    c->resolution = (float)p.entry.resolution;
    mf_protein_free(&p);
    return true;
}

/* Reads and merges MSAs whose query is the chain's sequence; NULL when none fits. */
static bool load_msa(const char *const *paths, int n, const char *seq, mf_msa *out)
{
    memset(out, 0, sizeof *out);
    mf_msa m[4] = {{0}};
    const mf_msa *list[4];
    int k = 0;
    bool ok = true;
    for (int i = 0; i < n && ok; i++) {
        ok = mf_msa_read(paths[i], MF_MSA_AUTO, 0, &m[k]) == MF_OK &&
             mf_msa_check_query(&m[k], seq) == MF_OK;
        list[k] = &m[k];
        k++;
    }
    if (ok) ok = mf_msa_merge_dedup(list, k, out) == MF_OK;
    for (int i = 0; i < k; i++) mf_msa_free(&m[i]);
    return ok;
}

typedef struct {
    int T;
    const int32_t *aatype_hh; /* [T, N] */
    const float *pos, *mask;  /* [T, N, 37, 3], [T, N, 37] */
    const float *sum_probs;   /* [T] or NULL */
    bool one_hot;
} template_input;

static bool write_chain(mf_h5_writer *w, const char *group, const chain_data *c, const mf_msa *msa,
                        bool deletions_int32, const template_input *t)
{
    const int64_t N = c->N, S = msa ? msa->num_rows : 1;
    char name[256];
    bool ok = true;
    int32_t *ri = malloc((size_t)N * sizeof(int32_t));
    int8_t *m8 = malloc((size_t)(S * N));
    int32_t *di = calloc((size_t)(S * N), sizeof(int32_t));
    float *df = calloc((size_t)(S * N), sizeof(float));
    for (int64_t i = 0; i < N; i++) ri[i] = (int32_t)i;
    for (int64_t i = 0; i < S * N; i++) {
        m8[i] = msa ? (int8_t)msa->msa[i] : (int8_t)mf_hhblits_aa_to_id(c->seq[i]);
        di[i] = msa ? msa->deletion_matrix[i] : 0;
        df[i] = (float)di[i];
    }
#define W(ds, dt, nd, data, ...)                                                                   \
    do {                                                                                           \
        snprintf(name, sizeof name, "%s/%s", group, ds);                                           \
        ok = ok &&                                                                                 \
             mf_h5_write_array(w, name, dt, nd, (const int64_t[]){__VA_ARGS__}, data) == MF_OK;    \
    } while (0)
    W("aatype", MF_I32, 1, c->aatype, N);
    W("residue_index", MF_I32, 1, ri, N);
    W("msa", MF_I8, 2, m8, S, N);
    if (deletions_int32)
        W("deletion_matrix", MF_I32, 2, di, S, N);
    else
        W("deletion_matrix", MF_F32, 2, df, S, N);
    W("all_atom_positions", MF_F32, 3, c->pos, N, 37, 3);
    W("all_atom_mask", MF_F32, 2, c->mask, N, 37);
    snprintf(name, sizeof name, "%s/resolution", group);
    ok = ok && mf_h5_write_array(w, name, MF_F32, 0, NULL, &c->resolution) == MF_OK;
    if (t && t->T > 0) {
        const int64_t T = t->T;
        if (t->one_hot) {
            float *oh = calloc((size_t)(T * N * 22), sizeof(float));
            for (int64_t i = 0; i < T * N; i++) oh[i * 22 + t->aatype_hh[i]] = 1.0f;
            W("template_aatype", MF_F32, 3, oh, T, N, 22);
            free(oh);
        } else {
            W("template_aatype", MF_I32, 2, t->aatype_hh, T, N);
        }
        W("template_all_atom_positions", MF_F32, 4, t->pos, T, N, 37, 3);
        W("template_all_atom_masks", MF_F32, 3, t->mask, T, N, 37);
        if (t->sum_probs) W("template_sum_probs", MF_F32, 2, t->sum_probs, T, 1);
    }
#undef W
    snprintf(name, sizeof name, "%s", group);
    ok = ok && mf_h5_write_attr_string(w, name, "sequence", c->seq) == MF_OK;
    ok = ok && mf_h5_write_attr_string(w, name, "release_date", "") == MF_OK;
    free(ri), free(m8), free(di), free(df);
    MF_TEST_TRUE(ok, "writing chain %s: %s", group, mf_last_error());
    chain_kind *k = &kinds[num_kinds++];
    snprintf(k->group, sizeof k->group, "%s", group);
    k->one_hot_templates = t && t->T > 0 && t->one_hot;
    k->has_sum_probs = t && t->T > 0 && t->sum_probs;
    printf("  %-14s N=%-4lld S=%-5lld T=%d%s%s\n", group, (long long)N, (long long)S, t ? t->T : 0,
           t && t->one_hot ? " (one-hot template_aatype)" : "",
           deletions_int32 ? " (int32 deletions)" : "");
    return ok;
}

static bool build_raw_file(const char *path)
{
    printf("raw feature file %s:\n", path);
    const char *sh = mf_test_shared_dir();
    char p[16][1024];
    mf_h5_writer w = {0};
    if (mf_h5_writer_open(&w, path) != MF_OK) return false;
    bool ok = true;
    chain_data c;
    mf_msa msa;

    /* 4ZEY A: single sequence, one template (itself) as AF2's one-hot */
    snprintf(p[0], sizeof p[0], "%s/data/structures/train/mmcif/4zey.cif", sh);
    if (load_chain(p[0], "A", false, &c)) {
        int32_t *hh = malloc((size_t)c.N * sizeof(int32_t));
        for (int64_t i = 0; i < c.N; i++) hh[i] = mf_hhblits_aa_to_id(c.seq[i]);
        const template_input t = {1, hh, c.pos, c.mask, NULL, true};
        ok &= write_chain(&w, "4zey_A", &c, NULL, false, &t);
        free(hh);
        chain_data_free(&c);
    }
    /* 2Q2K A: three real MSAs; templates chain B and A with sum_probs */
    snprintf(p[1], sizeof p[1], "%s/data/structures/train/mmcif/2q2k.cif", sh);
    snprintf(p[2], sizeof p[2], "%s/data/msas/openfold_2q2k/2q2k_A/bfd_uniclust_hits.a3m", sh);
    snprintf(p[3], sizeof p[3], "%s/data/msas/openfold_2q2k/2q2k_A/uniref90_hits.sto", sh);
    snprintf(p[4], sizeof p[4], "%s/data/msas/openfold_2q2k/2q2k_A/mgnify_hits.sto", sh);
    chain_data b;
    if (load_chain(p[1], "A", false, &c) && load_chain(p[1], "B", false, &b)) {
        const char *mp[3] = {p[2], p[3], p[4]};
        const bool have = load_msa(mp, 3, c.seq, &msa);
        if (!have) printf("  2q2k_A: MSAs do not match the chain's sequence: single sequence\n");
        if (b.N == c.N) {
            int32_t *hh = malloc((size_t)(2 * c.N) * sizeof(int32_t));
            float *tp = malloc((size_t)(2 * c.N * 111) * sizeof(float));
            float *tm = malloc((size_t)(2 * c.N * 37) * sizeof(float));
            for (int64_t i = 0; i < c.N; i++) {
                hh[i] = mf_hhblits_aa_to_id(b.seq[i]);
                hh[c.N + i] = mf_hhblits_aa_to_id(c.seq[i]);
            }
            memcpy(tp, b.pos, (size_t)c.N * 111 * sizeof(float));
            memcpy(tp + c.N * 111, c.pos, (size_t)c.N * 111 * sizeof(float));
            memcpy(tm, b.mask, (size_t)c.N * 37 * sizeof(float));
            memcpy(tm + c.N * 37, c.mask, (size_t)c.N * 37 * sizeof(float));
            const float sp[2] = {0.97f, 0.5f};
            const template_input t = {2, hh, tp, tm, sp, false};
            ok &= write_chain(&w, "2q2k_A", &c, have ? &msa : NULL, false, &t);
            free(hh), free(tp), free(tm);
        } else {
            ok &= write_chain(&w, "2q2k_A", &c, have ? &msa : NULL, false, NULL);
        }
        if (have) mf_msa_free(&msa);
        chain_data_free(&b);
    }
    chain_data_free(&c);
    /* d1nz0a_: a3m with 9 rows, int32 deletions */
    snprintf(p[5], sizeof p[5], "%s/data/structures/train/pdb/d1nz0a_.pdb", sh);
    snprintf(p[6], sizeof p[6], "%s/data/msas/csb_d1nz0a_/d1nz0a_.a3m", sh);
    if (load_chain(p[5], "A", false, &c)) {
        const char *mp[1] = {p[6]};
        const bool have = load_msa(mp, 1, c.seq, &msa);
        if (!have) printf("  d1nz0a_: MSA does not match: single sequence\n");
        ok &= write_chain(&w, "d1nz0a__A", &c, have ? &msa : NULL, true, NULL);
        if (have) mf_msa_free(&msa);
        chain_data_free(&c);
    }
    /* 1A3A A: the observed residues (the MSA's query) and a 1024-row a3m, several copies */
    snprintf(p[7], sizeof p[7], "%s/data/structures/train/psicov150/1a3a.pdb", sh);
    snprintf(p[8], sizeof p[8], "%s/data/msas/psicov150_msa/1a3a.a3m", sh);
    if (load_chain(p[7], "A", true, &c)) {
        const char *mp[1] = {p[8]};
        const bool have = load_msa(mp, 1, c.seq, &msa);
        MF_TEST_TRUE(have, "1a3a: the a3m does not match the observed residues");
        for (int k = 0; k <= NUM_BIG_COPIES; k++) {
            char g[64];
            if (k == 0)
                snprintf(g, sizeof g, "1a3a_A");
            else
                snprintf(g, sizeof g, "1a3a_A_copy%d", k);
            ok &= write_chain(&w, g, &c, have ? &msa : NULL, false, NULL);
        }
        if (have) mf_msa_free(&msa);
        chain_data_free(&c);
    }
    const char *single[3] = {"1aap", "1brf", "1c9o"};
    for (int k = 0; k < 3; k++) {
        snprintf(p[9], sizeof p[9], "%s/data/structures/train/psicov150/%s.pdb", sh, single[k]);
        if (!load_chain(p[9], "A", false, &c)) continue;
        char g[64];
        snprintf(g, sizeof g, "%s_A", single[k]);
        ok &= write_chain(&w, g, &c, NULL, false, NULL);
        chain_data_free(&c);
    }
    ok = ok && mf_h5_write_attr_string(&w, "/", "format", MF_RAW_FEATURES_FORMAT) == MF_OK;
    ok = ok && mf_h5_write_attr_int(&w, "/", "schema_version", 1) == MF_OK;
    ok = ok && mf_h5_write_attr_int(&w, "/", "num_chains", num_kinds) == MF_OK;
    if (!ok) {
        mf_h5_writer_abort(&w);
        return false;
    }
    return mf_h5_writer_commit(&w) == MF_OK;
}

static mf_loader_options loader_options(const char *path, uint64_t seed, bool prefetch)
{
    mf_loader_options o = {0};
    o.path = path;
    o.seed = seed;
    o.pipeline = mf_pipeline_options_training(&cfg);
    o.shuffle = true;
    o.prefetch = prefetch;
    return o;
}

static const chain_kind *kind_of(const char *group)
{
    for (int i = 0; i < num_kinds; i++)
        if (strcmp(kinds[i].group, group) == 0) return &kinds[i];
    return NULL;
}

/* ---- 1. loader sample == pipeline on the whole chain ---- */

static void test_equivalence(const char *path)
{
    printf("1. loader (hyperslabs) vs pipeline on the whole chain in memory, same seed\n");
    mf_loader_options o = loader_options(path, 2024, false);
    mf_loader *l = NULL;
    MF_TEST_OK(mf_loader_open(&l, &o));
    if (!l) return;
    int equal = 0, total = 0, one_hot = 0, lead_templates = 0, block_deleted = 0;
    for (int64_t epoch = 0; epoch < 4; epoch++)
        for (int64_t pos = 0; pos < mf_loader_num_chains(l); pos++) {
            mf_processed_features a, b;
            mf_loader_sample_info info;
            MF_TEST_OK(mf_loader_sample(l, epoch, pos, &a, &info));
            mf_raw_chain raw;
            MF_TEST_OK(mf_loader_read_chain(l, info.chain_index, &raw));
            MF_TEST_OK(mf_pipeline_run(&raw, &o.pipeline, info.seed, &b));
            char diff[256] = "";
            const bool eq = mf_processed_equal(&a, &b, diff, sizeof diff);
            total++;
            equal += eq;
            const chain_kind *k = kind_of(info.chain);
            one_hot += k && k->one_hot_templates && info.num_templates > 0;
            lead_templates += info.num_templates > 0 && info.crop_start > 0;
            block_deleted += info.num_kept_rows < info.num_seq;
            if (!eq || epoch == 0)
                printf("  %-16s N=%-4lld crop [%lld, +%lld) S=%-5lld kept=%-5lld T=%lld: %s\n",
                       info.chain, (long long)info.chain_length, (long long)info.crop_start,
                       (long long)info.crop_size, (long long)info.num_seq,
                       (long long)info.num_kept_rows, (long long)info.num_templates,
                       eq ? "bit-identical" : diff);
            MF_TEST_TRUE(eq, "%s (epoch %lld): %s", info.chain, (long long)epoch, diff);
            mf_processed_free(&a);
            mf_processed_free(&b);
            mf_raw_chain_free(&raw);
        }
    printf("  %d of %d samples bit-identical (%d with one-hot templates, %d with templates and a "
           "crop not at 0, %d with deleted MSA blocks)\n",
           equal, total, one_hot, lead_templates, block_deleted);
    MF_TEST_TRUE(one_hot > 0 && lead_templates > 0 && block_deleted > 0,
                 "the samples did not exercise every read path");
    mf_loader_close(l);
}

/* ---- 2. prefetch, determinism, epochs ---- */

static void test_prefetch_and_order(const char *path)
{
    printf("2. prefetch thread, determinism, epoch order\n");
    mf_loader_options os = loader_options(path, 99, false), op = loader_options(path, 99, true);
    mf_loader *sync = NULL, *pre = NULL, *pre2 = NULL, *other = NULL;
    MF_TEST_OK(mf_loader_open(&sync, &os));
    MF_TEST_OK(mf_loader_open(&pre, &op));
    MF_TEST_OK(mf_loader_open(&pre2, &op));
    mf_loader_options oo = loader_options(path, 100, true);
    MF_TEST_OK(mf_loader_open(&other, &oo));
    if (!sync || !pre || !pre2 || !other) goto done;
    const int64_t C = mf_loader_num_chains(pre);
    int64_t mismatch = 0, mismatch2 = 0, same_other = 0, order_bad = 0;
    int64_t prev_order[64];
    int64_t epochs_same_order = 0;
    for (int64_t epoch = 0; epoch < 3; epoch++) {
        int seen[64] = {0};
        int64_t order[64];
        for (int64_t pos = 0; pos < C; pos++) {
            mf_processed_features a, b, c, d;
            mf_loader_sample_info ia, ib, ic, id;
            MF_TEST_OK(mf_loader_next(pre, &a, &ia));
            MF_TEST_OK(mf_loader_next(pre2, &c, &ic));
            MF_TEST_OK(mf_loader_next(other, &d, &id));
            MF_TEST_OK(mf_loader_sample(sync, epoch, pos, &b, &ib));
            mismatch +=
                !(ia.epoch == epoch && ia.position == pos && mf_processed_equal(&a, &b, NULL, 0));
            mismatch2 += !mf_processed_equal(&a, &c, NULL, 0);
            same_other += ia.chain_index == id.chain_index && mf_processed_equal(&a, &d, NULL, 0);
            order[pos] = ia.chain_index;
            if (ia.chain_index >= 0 && ia.chain_index < 64) seen[ia.chain_index]++;
            order_bad += ia.chain_index != mf_loader_chain_at(sync, epoch, pos);
            mf_processed_free(&a);
            mf_processed_free(&b);
            mf_processed_free(&c);
            mf_processed_free(&d);
        }
        for (int64_t i = 0; i < C; i++) order_bad += seen[i] != 1;
        if (epoch > 0) epochs_same_order += memcmp(order, prev_order, (size_t)C * 8) == 0;
        memcpy(prev_order, order, (size_t)C * 8);
        printf("  epoch %lld order:", (long long)epoch);
        for (int64_t i = 0; i < C; i++) printf(" %lld", (long long)order[i]);
        printf("\n");
    }
    printf("  prefetched vs synchronous: %lld of %lld differ; second loader, same seed: %lld "
           "differ; other seed: %lld identical\n",
           (long long)mismatch, (long long)(3 * C), (long long)mismatch2, (long long)same_other);
    MF_TEST_TRUE(mismatch == 0, "%lld prefetched samples differ from synchronous ones",
                 (long long)mismatch);
    MF_TEST_TRUE(mismatch2 == 0, "same seed, %lld samples differ", (long long)mismatch2);
    MF_TEST_TRUE(same_other == 0, "another seed gave %lld identical samples",
                 (long long)same_other);
    MF_TEST_TRUE(order_bad == 0, "epochs are not permutations of the chains (%lld)",
                 (long long)order_bad);
    MF_TEST_TRUE(epochs_same_order == 0, "consecutive epochs in the same order");
done:
    mf_loader_close(sync);
    mf_loader_close(pre);
    mf_loader_close(pre2);
    mf_loader_close(other);
    /* close right after open: the thread is mid-sample and must stop cleanly */
    mf_loader *quick = NULL;
    MF_TEST_OK(mf_loader_open(&quick, &op));
    mf_loader_close(quick);
    printf("  close while the prefetch thread is building: returned\n");
}

/* ---- 3. bytes read ---- */

static void test_bytes(const char *path)
{
    printf("3. bytes requested from HDF5 per sample\n");
    mf_loader_options o = loader_options(path, 7, false);
    mf_loader *l = NULL;
    MF_TEST_OK(mf_loader_open(&l, &o));
    if (!l) return;
    int64_t bad = 0;
    printf("  %-16s %5s %5s %6s %10s %10s %10s %8s %8s\n", "chain", "N", "crop", "S", "read",
           "expected", "chain", "/chain", "/sample");
    for (int64_t pos = 0; pos < mf_loader_num_chains(l); pos++) {
        mf_processed_features f;
        mf_loader_sample_info in;
        MF_TEST_OK(mf_loader_sample(l, 0, pos, &f, &in));
        const chain_kind *k = kind_of(in.chain);
        const uint64_t wn = (uint64_t)(in.crop_size + (in.crop_start > 0 ? 1 : 0));
        const uint64_t S = (uint64_t)in.num_seq, kept = (uint64_t)in.num_kept_rows;
        const uint64_t T = (uint64_t)in.num_templates;
        /* aatype + residue_index (i32), msa (i8, every row), deletions (4 bytes, kept rows),
         * positions + masks (f32), resolution, chosen templates */
        uint64_t expect = wn * 8 + S * wn + kept * wn * 4 + wn * (111 + 37) * 4 + 4;
        if (k && T > 0)
            expect += T * wn * (111 + 37) * 4 + T * wn * (k->one_hot_templates ? 22 * 4 : 4) +
                      (k->has_sum_probs ? T * 4 : 0);
        const double r_chain = (double)in.bytes_read / (double)in.chain_bytes;
        const double r_sample = (double)in.bytes_read / (double)in.sample_bytes;
        printf("  %-16s %5lld %5lld %6lld %10llu %10llu %10llu %8.3f %8.3f\n", in.chain,
               (long long)in.chain_length, (long long)in.crop_size, (long long)in.num_seq,
               (unsigned long long)in.bytes_read, (unsigned long long)expect,
               (unsigned long long)in.chain_bytes, r_chain, r_sample);
        bad += in.bytes_read != expect;
        /* a crop of a longer chain reads at most (crop + 1) / N of it, plus the resolution
         * scalar (fewer kept rows and templates only lower it) */
        if (in.chain_length > in.crop_size)
            bad += r_chain > (double)(in.crop_size + 1) / (double)in.chain_length +
                                 4.0 / (double)in.chain_bytes;
        mf_processed_free(&f);
    }
    MF_TEST_TRUE(bad == 0, "%lld samples read other than what their plan needs", (long long)bad);
    mf_loader_close(l);
}

/* ---- 4. resident memory over epochs ---- */

static double rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, res = 0;
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &size, &res) != 2) res = -1;
    fclose(f);
    return (double)res * (double)sysconf(_SC_PAGESIZE);
}

static void test_memory(const char *path)
{
    printf("4. resident memory over 4 epochs (prefetch on)\n");
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    printf(
        "  not run: a sanitizer's allocator keeps freed memory (quarantine), so RSS says nothing "
        "about the loader here\n");
    (void)path;
    return;
#endif
    if (rss_bytes() < 0) {
        printf("  /proc/self/statm not readable: check not run\n");
        return;
    }
    mf_loader_options o = loader_options(path, 5, true);
    mf_loader *l = NULL;
    MF_TEST_OK(mf_loader_open(&l, &o));
    if (!l) return;
    const int64_t C = mf_loader_num_chains(l);
    double after_first = 0, lo = 1e30, hi = 0, data = 0, read = 0;
    for (int64_t k = 0; k < 4 * C; k++) {
        mf_processed_features f;
        mf_loader_sample_info in;
        MF_TEST_OK(mf_loader_next(l, &f, &in));
        mf_processed_free(&f);
        if (k < C) data += (double)in.chain_bytes;
        read += (double)in.bytes_read;
        const double r = rss_bytes();
        if (k == C - 1) after_first = r;
        if (k >= C) {
            lo = r < lo ? r : lo;
            hi = r > hi ? r : hi;
        }
    }
    mf_loader_close(l);
    const double growth = hi - after_first;
    printf("  raw data of the file %.1f MB, read over 4 epochs %.1f MB; RSS after epoch 1 %.1f MB, "
           "epochs 2-4 in [%.1f, %.1f] MB: growth %.3f MB (bound %.1f MB)  %s\n",
           data / 1e6, read / 1e6, after_first / 1e6, lo / 1e6, hi / 1e6, growth / 1e6,
           RSS_GROWTH_BOUND / 1e6, growth <= RSS_GROWTH_BOUND ? "ok" : "FAIL");
    MF_TEST_TRUE(growth <= RSS_GROWTH_BOUND, "resident memory grew by %.0f bytes", growth);
}

/* ---- 5. malformed files ---- */

static void test_malformed(void)
{
    printf("5. malformed raw feature files\n");
    char p1[512], p2[512];
    snprintf(p1, sizeof p1, "%s/noformat.h5", tmpdir);
    snprintf(p2, sizeof p2, "%s/badshape.h5", tmpdir);
    const int32_t aa[3] = {0, 1, 2};
    const int8_t m[6] = {0};
    const float d[4] = {0};
    mf_h5_writer w = {0};
    bool ok = mf_h5_writer_open(&w, p1) == MF_OK &&
              mf_h5_write_array(&w, "x_A/aatype", MF_I32, 1, (const int64_t[]){3}, aa) == MF_OK &&
              mf_h5_writer_commit(&w) == MF_OK;
    mf_h5_writer w2 = {0};
    ok =
        ok && mf_h5_writer_open(&w2, p2) == MF_OK &&
        mf_h5_write_attr_string(&w2, "/", "format", MF_RAW_FEATURES_FORMAT) == MF_OK &&
        mf_h5_write_attr_int(&w2, "/", "schema_version", 1) == MF_OK &&
        mf_h5_write_array(&w2, "x_A/aatype", MF_I32, 1, (const int64_t[]){3}, aa) == MF_OK &&
        mf_h5_write_array(&w2, "x_A/residue_index", MF_I32, 1, (const int64_t[]){3}, aa) == MF_OK &&
        mf_h5_write_array(&w2, "x_A/msa", MF_I8, 2, (const int64_t[]){2, 3}, m) == MF_OK &&
        mf_h5_write_array(&w2, "x_A/deletion_matrix", MF_F32, 2, (const int64_t[]){2, 2}, d) ==
            MF_OK &&
        mf_h5_writer_commit(&w2) == MF_OK;
    MF_TEST_TRUE(ok, "cannot write the malformed fixtures: %s", mf_last_error());
    if (!ok) return;
    mf_loader_options o = loader_options(p1, 1, false);
    mf_loader *l = NULL;
    mf_status st = mf_loader_open(&l, &o);
    printf("  no format attribute: %s\n", st != MF_OK ? mf_last_error() : "ACCEPTED");
    MF_TEST_TRUE(st != MF_OK, "file without format accepted");
    if (l) mf_loader_close(l);
    o = loader_options(p2, 1, false);
    o.pipeline.supervised = false;
    MF_TEST_OK(mf_loader_open(&l, &o));
    if (!l) return;
    mf_processed_features f;
    st = mf_loader_sample(l, 0, 0, &f, NULL);
    printf("  deletion_matrix [2, 2] for msa [2, 3]: %s\n",
           st != MF_OK ? mf_last_error() : "ACCEPTED");
    MF_TEST_TRUE(st != MF_OK, "inconsistent shapes accepted");
    if (st == MF_OK) mf_processed_free(&f);
    mf_loader_close(l);
}

int main(void)
{
    mf_h5_quiet();
    if (mf_config_preset("tiny", &cfg) != MF_OK) {
        mf_test_fail("tiny preset: %s", mf_last_error());
        return mf_test_finish("test_loader");
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/mf_test_loader_XXXXXX");
    if (!mkdtemp(tmpdir)) return mf_test_skip("cannot create a temporary directory");
    char path[512];
    snprintf(path, sizeof path, "%s/train.h5", tmpdir);
    const bool built = build_raw_file(path);
    MF_TEST_TRUE(built, "cannot build the raw feature file: %s", mf_last_error());
    if (built) {
        test_equivalence(path);
        test_prefetch_and_order(path);
        test_bytes(path);
        test_memory(path);
    }
    test_malformed();
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) printf("  could not remove %s\n", tmpdir);
    return mf_test_finish("test_loader");
}
