/* memfold train with the trunk on another context (mf_trainer_options.trunk_ctx, what
 * `--device cuda` gives the GPU): a second CPU context here, so the run must be bitwise the
 * single-context run: crambin (1EJG A from shared/data, single sequence) with the tiny config,
 * 3 optimizer steps of 2 examples (so the trunk's gradients are merged per example and its
 * parameter mirror refreshed after every step), dropout on; then again with block recomputation
 * and the trunk's checkpoints offloaded to the host arena. Compared: every parameter of the
 * final params.h5, bitwise, each step's logged loss and first two loss terms, and the validation
 * lDDT-Ca (EMA weights put into the trunk's parameter mirror for it, then taken out). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/featurize.h"
#include "model/param_store.h"
#include "tests/support/mf_test.h"
#include "train/trainer.h"

static char g_tmp[200];

static mf_status train(const char *data, const char *run, mf_ctx *trunk, bool offload,
                       double *val_lddt)
{
    mf_trainer_options o = mf_trainer_default_options();
    o.data_path = data;
    o.val_path = data; /* validation (EMA weights) after step 2 and at the end */
    o.val_every = 2;
    o.run_dir = run;
    o.config = "tiny";
    o.sets[o.n_sets++] = "data.crop_size=32";
    o.sets[o.n_sets++] = "optimizer.batch_size=2";
    if (offload) {
        o.sets[o.n_sets++] = "memory.recompute=block";
        o.sets[o.n_sets++] = "memory.offload=true";
    }
    o.total_steps = 3;
    o.seed = 5;
    o.seed_set = true;
    o.prefetch = false;
    o.arena_bytes = (size_t)512 << 20;
    o.trunk_ctx = trunk;
    FILE *quiet = fopen("/dev/null", "w");
    o.out = quiet;
    mf_dist dist;
    MF_TRY(mf_dist_init(&dist, NULL, NULL, false));
    mf_trainer_result res;
    mf_status st = mf_trainer_run(&o, &dist, &res);
    *val_lddt = res.last_val_lddt_ca;
    mf_dist_finalize(&dist);
    if (quiet) fclose(quiet);
    return st;
}

static void compare_runs(const char *a, const char *b, const char *what)
{
    char pa[512], pb[512];
    snprintf(pa, sizeof pa, "%s/params.h5", a);
    snprintf(pb, sizeof pb, "%s/params.h5", b);
    mf_param_store sa, sb;
    mf_param_store_init(&sa);
    mf_param_store_init(&sb);
    MF_TEST_OK(mf_param_store_load(&sa, pa, NULL));
    MF_TEST_OK(mf_param_store_load(&sb, pb, NULL));
    int differ = 0;
    MF_TEST_TRUE(sa.count == sb.count && sa.count > 0, "%s: %d and %d parameters", what, sa.count,
                 sb.count);
    for (int i = 0; i < sa.count && i < sb.count; i++) {
        const mf_tensor *x = &sa.entries[i].tensor, *y = &sb.entries[i].tensor;
        if (mf_tensor_numel(x) != mf_tensor_numel(y) ||
            memcmp(x->data, y->data, mf_tensor_bytes(x)))
            differ++;
    }
    MF_TEST_TRUE(differ == 0, "%s: %d of %d parameters differ after 3 steps", what, differ,
                 sa.count);
    printf("  %s: %d parameter arrays after 3 steps, %d differ (bitwise)\n", what, sa.count,
           differ);
    mf_param_store_free(&sa);
    mf_param_store_free(&sb);
    /* the log's step, loss and first two loss terms, row for row (its time columns differ) */
    snprintf(pa, sizeof pa, "%s/log.csv", a);
    snprintf(pb, sizeof pb, "%s/log.csv", b);
    char *la = mf_test_read_file(pa), *lb = mf_test_read_file(pb);
    MF_TEST_TRUE(la && lb, "%s: log.csv missing", what);
    if (la && lb) {
        int rows = 0, same = 0;
        char *sa_ = NULL, *sb_ = NULL;
        for (char *x = strtok_r(la, "\n", &sa_), *y = strtok_r(lb, "\n", &sb_); x && y;
             x = strtok_r(NULL, "\n", &sa_), y = strtok_r(NULL, "\n", &sb_)) {
            char fx[4][64] = {{0}}, fy[4][64] = {{0}};
            sscanf(x, "%63[^,],%63[^,],%63[^,],%63[^,]", fx[0], fx[1], fx[2], fx[3]);
            sscanf(y, "%63[^,],%63[^,],%63[^,],%63[^,]", fy[0], fy[1], fy[2], fy[3]);
            rows++;
            same += !strcmp(fx[0], fy[0]) && !strcmp(fx[1], fy[1]) && !strcmp(fx[2], fy[2]) &&
                    !strcmp(fx[3], fy[3]);
        }
        MF_TEST_TRUE(rows == 4 && same == rows, "%s: %d of %d log lines agree", what, same, rows);
    }
    free(la);
    free(lb);
}

int main(void)
{
    snprintf(g_tmp, sizeof g_tmp, "%s/memfold-trainer-trunk-%d", P_tmpdir, (int)getpid());
    char dir[300], data[320], link[320], src[1200];
    snprintf(dir, sizeof dir, "%s/s", g_tmp);
    snprintf(data, sizeof data, "%s/data.h5", g_tmp);
    snprintf(link, sizeof link, "%s/1ejg.pdb", dir);
    snprintf(src, sizeof src, "%s/data/structures/train/pdb/1ejg.pdb", mf_test_shared_dir());
    char cmd[700];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    MF_TEST_TRUE(system(cmd) == 0 && symlink(src, link) == 0, "temporary folder %s", dir);
    mf_featurize_options fo = {.structures_dir = dir, .output = data};
    mf_featurize_report rep = {0};
    MF_TEST_OK(mf_featurize_run(&fo, NULL, NULL, &rep));
    mf_featurize_report_free(&rep);

    mf_ctx trunk;
    mf_arena tarena;
    MF_TEST_OK(mf_test_ctx_cpu(&trunk, &tarena, (size_t)256 << 20));
    const char *names[4] = {"one", "split", "one_offload", "split_offload"};
    char runs[4][320];
    double val[4] = {0};
    for (int k = 0; k < 4; k++) {
        snprintf(runs[k], sizeof runs[k], "%s/%s", g_tmp, names[k]);
        mf_status st = train(data, runs[k], k % 2 ? &trunk : NULL, k >= 2, &val[k]);
        MF_TEST_TRUE(st == MF_OK, "run %s: %s", names[k], st ? mf_last_error() : "");
        MF_TEST_TRUE(mf_arena_used(&tarena) == 0, "run %s left %zu bytes in the trunk arena",
                     names[k], mf_arena_used(&tarena));
    }
    printf("memfold train, tiny config, crambin: the trunk on a second CPU context\n");
    compare_runs(runs[0], runs[1], "trunk context vs one context");
    /* validation ran with the EMA weights in the trunk's mirror, then the parameters went back */
    MF_TEST_TRUE(val[0] == val[1] && val[2] == val[3] && isfinite(val[0]),
                 "validation lDDT-Ca: %.9f vs %.9f, %.9f vs %.9f", val[0], val[1], val[2], val[3]);
    printf("  validation lDDT-Ca (EMA weights, trunk on the second context): %.6f = %.6f\n", val[1],
           val[0]);
    compare_runs(runs[2], runs[3],
                 "trunk context vs one context, recompute block + checkpoints offloaded");
    mf_test_ctx_free(&trunk, &tarena);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) printf("could not remove %s\n", g_tmp);
    return mf_test_finish("test_trainer_trunk");
}
