/* Checkpoints and the training log: save -> load restores every byte (parameters, Adam moments,
 * EMA, counts, RNG seed and counters, loader position, config) and training continues bitwise as
 * without the interruption; keep-last-N; corrupt checkpoints (truncated, a bit flipped inside a
 * data chunk, a value or attribute rewritten through HDF5, a bit flipped at 61 places across the
 * file) are refused or, where the flip hit unused bytes, load identical content; the resume search
 * skips damaged and misnamed files, naming them; a writer killed at random moments leaves only
 * complete checkpoints; stale temporary files are removed; SIGTERM sets the pending flag; the
 * JSONL/CSV log cut back to the resume step equals the uninterrupted run's log. */
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "data/h5io.h"
#include "tests/support/mf_test.h"
#include "train/checkpoint.h"
#include "train/train_log.h"

static const char *const k_names[3] = {
    "alphafold/alphafold_iteration/evoformer/preprocess_1d//weights",
    "alphafold/alphafold_iteration/evoformer/preprocess_1d//bias",
    "alphafold/alphafold_iteration/evoformer/evoformer_iteration/msa_transition/transition1//"
    "weights",
};
static const int64_t k_rows[3] = {7, 33, 4099}, k_cols[3] = {0, 5, 5};
#define BIG_DATASET                                                                                \
    "adam_v/alphafold/alphafold_iteration/evoformer/evoformer_iteration/msa_transition/"           \
    "transition1/weights"

typedef struct {
    mf_param_store params;
    mf_optimizer opt;
    mf_grad_buffer g;
    mf_train_state state;
    mf_config cfg;
} model;

static void model_init(model *m, uint64_t seed)
{
    memset(m, 0, sizeof *m);
    mf_param_store_init(&m->params);
    for (int i = 0; i < 3; i++) {
        int64_t numel = k_rows[i] * (k_cols[i] > 0 ? k_cols[i] : 1);
        float *tmp = malloc((size_t)numel * sizeof(float));
        mf_test_fill_normal_f32(tmp, numel, seed + (uint64_t)i, 1.0f);
        mf_tensor t = k_cols[i] > 0 ? mf_tensor_f32(tmp, 2, k_rows[i], k_cols[i])
                                    : mf_tensor_f32(tmp, 1, k_rows[i]);
        MF_TEST_OK(mf_param_store_add(&m->params, k_names[i], &t, true));
        free(tmp);
    }
    MF_TEST_OK(mf_config_preset("tiny", &m->cfg));
    m->cfg.optimizer.warmup_steps = 2;
    m->cfg.optimizer.clip_global_norm = 5.0;
    MF_TEST_OK(mf_optimizer_init(&m->opt, &m->params, &m->cfg.optimizer, MF_CLIP_IN_STEP, NULL));
    MF_TEST_OK(mf_grad_buffer_init(&m->g, &m->params, NULL));
}

static void model_free(model *m)
{
    mf_grad_buffer_free(&m->g);
    mf_optimizer_free(&m->opt);
    mf_param_store_free(&m->params);
}

/* One training step with gradients drawn from the step number (NaN loss at step 5: skipped). */
static void model_step(model *m)
{
    mf_test_fill_normal_f32(m->g.data, m->g.layout.total, 1000 + (uint64_t)m->state.step, 0.5f);
    mf_optimizer_step_info info;
    MF_TEST_OK(mf_optimizer_step(&m->opt, &m->g, m->state.step == 5 ? NAN : 1.0, &info));
    m->state.step++;
    m->state.rng_counters[0] += 3;
    m->state.rng_counters[7] = m->state.rng_counters[7] * 6364136223846793005ull + 1;
    m->state.loader_position++;
    if (m->state.loader_position == 4) {
        m->state.loader_epoch++;
        m->state.loader_position = 0;
    }
}

static bool same_model(const char *what, const model *a, const model *b)
{
    bool ok = true;
    char buf[160];
    for (int i = 0; i < 3; i++) {
        snprintf(buf, sizeof buf, "%s: params[%d]", what, i);
        ok &= mf_check_bitwise_f32(buf, a->params.entries[i].tensor.data,
                                   b->params.entries[i].tensor.data, a->opt.layout.numel[i]);
    }
    const int64_t n = a->opt.layout.total;
    snprintf(buf, sizeof buf, "%s: adam_m", what);
    ok &= mf_check_bitwise_f32(buf, a->opt.adam_m, b->opt.adam_m, n);
    snprintf(buf, sizeof buf, "%s: adam_v", what);
    ok &= mf_check_bitwise_f32(buf, a->opt.adam_v, b->opt.adam_v, n);
    snprintf(buf, sizeof buf, "%s: ema", what);
    ok &= mf_check_bitwise_f32(buf, a->opt.ema, b->opt.ema, n);
    bool counts = a->opt.step == b->opt.step && a->opt.skipped == b->opt.skipped &&
                  !memcmp(&a->state, &b->state, sizeof a->state);
    MF_TEST_TRUE(counts,
                 "%s: counts and train state (step %lld/%lld, opt %lld/%lld, skipped %lld/%lld, "
                 "seed %llx/%llx, loader %lld.%lld/%lld.%lld)",
                 what, (long long)a->state.step, (long long)b->state.step, (long long)a->opt.step,
                 (long long)b->opt.step, (long long)a->opt.skipped, (long long)b->opt.skipped,
                 (unsigned long long)a->state.rng_seed, (unsigned long long)b->state.rng_seed,
                 (long long)a->state.loader_epoch, (long long)a->state.loader_position,
                 (long long)b->state.loader_epoch, (long long)b->state.loader_position);
    return ok && counts;
}

static char g_dir[64];

static void copy_file(const char *from, const char *to, long length)
{
    FILE *f = fopen(from, "rb"), *t = fopen(to, "wb");
    MF_TEST_TRUE(f && t, "cannot copy %s to %s", from, to);
    if (!f || !t) return;
    char buf[65536];
    long done = 0;
    size_t n;
    while ((length < 0 || done < length) &&
           (n = fread(buf, 1,
                      length < 0 || length - done > (long)sizeof buf ? sizeof buf
                                                                     : (size_t)(length - done),
                      f)) > 0) {
        fwrite(buf, 1, n, t);
        done += (long)n;
    }
    fclose(f);
    fclose(t);
}

static long file_size(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 ? (long)sb.st_size : -1;
}

static void flip_bit(const char *path, long offset, int bit)
{
    FILE *f = fopen(path, "r+b");
    if (!f) return;
    fseek(f, offset, SEEK_SET);
    int c = fgetc(f);
    fseek(f, offset, SEEK_SET);
    fputc(c ^ (1 << bit), f);
    fclose(f);
}

static void test_round_trip(void)
{
    model a, b;
    model_init(&a, 1);
    a.state.rng_seed = 0xFEDCBA9876543210ull;   /* above 2^63: stored unsigned, exactly */
    a.state.rng_counters[1] = (1ull << 53) + 1; /* not representable as a double */
    a.state.rng_counters[2] = UINT64_MAX;
    for (int s = 0; s < 6; s++) model_step(&a); /* includes the skipped step 5 */
    MF_TEST_TRUE(a.opt.step == 5 && a.opt.skipped == 1, "setup: 5 applied, 1 skipped (%lld, %lld)",
                 (long long)a.opt.step, (long long)a.opt.skipped);
    char path[256];
    MF_TEST_OK(
        mf_checkpoint_save_run(g_dir, 3, &a.params, &a.opt, &a.state, &a.cfg, path, sizeof path));
    char want[256];
    snprintf(want, sizeof want, "%s/ckpt-00000006.h5", g_dir);
    MF_TEST_TRUE(!strcmp(path, want), "checkpoint path %s, want %s", path, want);
    int64_t step = -1;
    MF_TEST_OK(mf_checkpoint_verify(path, &step));
    MF_TEST_TRUE(step == 6, "verify: step %lld", (long long)step);

    /* a model built from the stored config, with other values */
    mf_config cfg;
    MF_TEST_OK(mf_checkpoint_read_config(path, &cfg));
    char diff[256] = "";
    MF_TEST_TRUE(mf_config_equal(&cfg, &a.cfg, diff, sizeof diff), "stored config differs: %s",
                 diff);
    model_init(&b, 99);
    mf_config loaded_cfg;
    MF_TEST_OK(mf_checkpoint_load(path, &b.params, &b.opt, &b.state, &loaded_cfg));
    MF_TEST_TRUE(mf_config_equal(&loaded_cfg, &a.cfg, diff, sizeof diff),
                 "loaded config differs: %s", diff);
    same_model("round trip", &b, &a);

    /* exact resume: the same further steps give the same bits */
    for (int s = 0; s < 3; s++) {
        model_step(&a);
        model_step(&b);
    }
    same_model("3 steps after resume vs uninterrupted", &b, &a);

    /* counters the reader would refuse are not written */
    mf_train_state bad_state = a.state;
    bad_state.step = 2; /* fewer iterations than the optimizer's 8 updates + 1 skip */
    char bad_path[256];
    snprintf(bad_path, sizeof bad_path, "%s/inconsistent.h5", g_dir);
    mf_status st0 = mf_checkpoint_save(bad_path, &a.params, &a.opt, &bad_state, &a.cfg);
    MF_TEST_TRUE(st0 == MF_ERR_INVALID && access(bad_path, F_OK) != 0,
                 "inconsistent counters refused at save, no file written");
    mf_clear_error();

    /* a model with other names or shapes is refused */
    model c;
    model_init(&c, 5);
    mf_param_store other;
    mf_param_store_init(&other);
    float z[7] = {0};
    mf_tensor t = mf_tensor_f32(z, 1, 7);
    MF_TEST_OK(mf_param_store_add(&other, "alphafold/alphafold_iteration/other//w", &t, true));
    mf_optimizer oo;
    MF_TEST_OK(mf_optimizer_init(&oo, &other, &c.cfg.optimizer, MF_CLIP_NONE, NULL));
    mf_status st = mf_checkpoint_load(path, &other, &oo, &c.state, NULL);
    MF_TEST_TRUE(st != MF_OK, "loading into another model is refused");
    printf("  other model: %s\n", mf_last_error());
    mf_clear_error();
    mf_optimizer_free(&oo);
    mf_param_store_free(&other);
    model_free(&c);
    model_free(&a);
    model_free(&b);
}

/* In a child: 0 = refused, 1 = accepted with content equal to the original, 2 = accepted with
 * other content; a crash shows as a signal. */
static int check_damaged(const char *path, const model *orig)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (mf_checkpoint_verify(path, NULL) != MF_OK) _exit(0);
        model x;
        model_init(&x, 7);
        if (mf_checkpoint_load(path, &x.params, &x.opt, &x.state, NULL) != MF_OK) _exit(0);
        _exit(same_model("accepted after a flip", &x, orig) ? 1 : 2);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status)) return 100 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

static void test_corruption(void)
{
    char dir[128], path[256], bad[256];
    snprintf(dir, sizeof dir, "%s/corrupt", g_dir);
    model a;
    model_init(&a, 2);
    a.state.rng_seed = 42;
    for (int s = 0; s < 3; s++) model_step(&a);
    MF_TEST_OK(
        mf_checkpoint_save_run(dir, 0, &a.params, &a.opt, &a.state, &a.cfg, path, sizeof path));
    const long size = file_size(path);
    printf("  checkpoint of %lld parameters x 4 groups: %ld bytes\n", (long long)a.opt.layout.total,
           size);

    /* truncated */
    const long cuts[4] = {size - 1, size / 2, 4096, 100};
    for (int i = 0; i < 4; i++) {
        snprintf(bad, sizeof bad, "%s/truncated.h5", dir);
        copy_file(path, bad, cuts[i]);
        mf_status st = mf_checkpoint_verify(bad, NULL);
        MF_TEST_TRUE(st != MF_OK, "truncated to %ld of %ld bytes: detected", cuts[i], size);
        printf("  truncated to %ld bytes: %s\n", cuts[i],
               st != MF_OK ? mf_last_error() : "ACCEPTED");
        mf_clear_error();
    }

    /* a bit flipped inside a data chunk of /adam_v: fletcher32 */
    {
        hid_t f;
        MF_TEST_OK(mf_h5_open_read(path, &f));
        hid_t d = H5Dopen2(f, BIG_DATASET, H5P_DEFAULT);
        haddr_t addr = 0;
        hsize_t csize = 0, offs[2];
        unsigned mask;
        hid_t space = d >= 0 ? H5Dget_space(d) : -1;
        herr_t e = space >= 0 ? H5Dget_chunk_info(d, space, 0, offs, &mask, &addr, &csize) : -1;
        if (space >= 0) H5Sclose(space);
        MF_TEST_TRUE(e >= 0 && csize > 100, "chunk 0 of %s located (%llu bytes at %llu)",
                     BIG_DATASET, (unsigned long long)csize, (unsigned long long)addr);
        if (d >= 0) H5Dclose(d);
        H5Fclose(f);
        snprintf(bad, sizeof bad, "%s/flipped.h5", dir);
        copy_file(path, bad, -1);
        flip_bit(bad, (long)(addr + csize / 2), 3);
        mf_status st = mf_checkpoint_verify(bad, NULL);
        MF_TEST_TRUE(st != MF_OK, "bit flip in a chunk of %s: detected", BIG_DATASET);
        printf("  bit flip in a data chunk: %s\n", st != MF_OK ? mf_last_error() : "ACCEPTED");
        mf_clear_error();
    }

    /* values rewritten through HDF5 (fletcher32 recomputed): the group CRC catches them */
    {
        snprintf(bad, sizeof bad, "%s/rewritten.h5", dir);
        copy_file(path, bad, -1);
        hid_t f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
        hid_t d = H5Dopen2(f, "ema/alphafold/alphafold_iteration/evoformer/preprocess_1d/bias",
                           H5P_DEFAULT);
        float v[33 * 5];
        bool ok = d >= 0 && H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0;
        v[17] = nextafterf(v[17], 1e9f);
        ok = ok && H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0;
        if (d >= 0) H5Dclose(d);
        H5Fclose(f);
        MF_TEST_TRUE(ok, "rewrote one EMA value by one ulp");
        mf_status st = mf_checkpoint_verify(bad, NULL);
        MF_TEST_TRUE(st != MF_OK && strstr(mf_last_error(), "crc32"),
                     "one ulp changed in /ema through HDF5: detected by the group crc32 (%s)",
                     mf_last_error());
        mf_clear_error();

        copy_file(path, bad, -1);
        f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
        hid_t at = H5Aopen_by_name(f, "/", "loader_position", H5P_DEFAULT, H5P_DEFAULT);
        long long pos = 12345;
        ok = at >= 0 && H5Awrite(at, H5T_NATIVE_LLONG, &pos) >= 0;
        if (at >= 0) H5Aclose(at);
        H5Fclose(f);
        MF_TEST_TRUE(ok, "rewrote loader_position");
        st = mf_checkpoint_verify(bad, NULL);
        MF_TEST_TRUE(st != MF_OK && strstr(mf_last_error(), "meta_crc32"),
                     "loader_position rewritten: detected by meta_crc32 (%s)", mf_last_error());
        mf_clear_error();
    }

    /* one bit at 61 places spread over the file: refused, or (unused bytes) identical content */
    int refused = 0, harmless = 0, wrong = 0, crashed = 0;
    snprintf(bad, sizeof bad, "%s/sweep.h5", dir);
    for (int k = 0; k < 61; k++) {
        long off = (long)((double)size * (k + 0.5) / 61.0);
        copy_file(path, bad, -1);
        flip_bit(bad, off, k % 8);
        int r = check_damaged(bad, &a);
        if (r == 0)
            refused++;
        else if (r == 1)
            harmless++;
        else if (r == 2) {
            wrong++;
            mf_test_fail("bit %d of byte %ld flipped: accepted with different content", k % 8, off);
        } else {
            crashed++;
            mf_test_fail("bit %d of byte %ld flipped: the reader crashed (signal %d)", k % 8, off,
                         r - 100);
        }
    }
    printf("  61 single-bit flips: %d refused, %d in unused bytes (identical content), %d wrong, "
           "%d crashes\n",
           refused, harmless, wrong, crashed);
    MF_TEST_TRUE(wrong == 0 && crashed == 0 && refused >= 40,
                 "bit flips: %d refused (expected most: the file is mostly data), %d harmless",
                 refused, harmless);
    model_free(&a);
}

static void test_run_dir(void)
{
    char dir[128], path[256], p2[256];
    snprintf(dir, sizeof dir, "%s/run", g_dir);
    model a;
    model_init(&a, 3);
    for (int s = 0; s < 4; s++) {
        model_step(&a);
        MF_TEST_OK(
            mf_checkpoint_save_run(dir, 3, &a.params, &a.opt, &a.state, &a.cfg, path, sizeof path));
    }
    mf_checkpoint_list l;
    MF_TEST_OK(mf_checkpoint_list_run(dir, &l));
    MF_TEST_TRUE(l.count == 3 && l.steps[0] == 4 && l.steps[1] == 3 && l.steps[2] == 2,
                 "keep 3 after steps 1-4: %d files, newest %lld", l.count,
                 (long long)(l.count ? l.steps[0] : -1));
    mf_checkpoint_list_free(&l);

    /* a newer file left by an earlier attempt: misnamed (a copy of step 4 named 100), a damaged
     * step 7 and a truncated step 6; a temporary file of a killed writer */
    mf_checkpoint_path(dir, 4, path, sizeof path);
    mf_checkpoint_path(dir, 100, p2, sizeof p2);
    copy_file(path, p2, -1);
    mf_checkpoint_path(dir, 7, p2, sizeof p2);
    copy_file(path, p2, -1);
    {
        hid_t f;
        MF_TEST_OK(mf_h5_open_read(p2, &f));
        hid_t d = H5Dopen2(f, BIG_DATASET, H5P_DEFAULT);
        haddr_t addr = 0;
        hsize_t csize = 0, offs[2];
        unsigned mask;
        hid_t space = H5Dget_space(d);
        MF_TEST_TRUE(H5Dget_chunk_info(d, space, 0, offs, &mask, &addr, &csize) >= 0 && csize > 0,
                     "chunk of step 7 located");
        H5Sclose(space);
        H5Dclose(d);
        H5Fclose(f);
        flip_bit(p2, (long)(addr + csize / 3), 0);
    }
    mf_checkpoint_path(dir, 6, p2, sizeof p2);
    copy_file(path, p2, file_size(path) / 2);
    snprintf(p2, sizeof p2, "%s/ckpt-00000005.h5.tmp-4242", dir);
    copy_file(path, p2, 1000);

    char *report = NULL;
    size_t report_len = 0;
    FILE *log = open_memstream(&report, &report_len);
    char found_path[256];
    int64_t step = -1;
    bool found = false;
    MF_TEST_OK(mf_checkpoint_find_latest(dir, log, found_path, sizeof found_path, &step, &found));
    fclose(log);
    MF_TEST_TRUE(found && step == 4 && !strcmp(found_path, path),
                 "resume search: found %d step %lld (%s), want step 4", found, (long long)step,
                 found ? found_path : "-");
    printf("  resume search report:\n%s", report ? report : "");
    MF_TEST_TRUE(report && strstr(report, "ckpt-00000100.h5") && strstr(report, "named for") &&
                     strstr(report, "ckpt-00000007.h5") && strstr(report, "ckpt-00000006.h5") &&
                     !strstr(report, "tmp-4242"),
                 "the report names the misnamed, damaged and truncated files and their reasons");
    free(report);

    /* the next save (step 5) keeps 5, 4, 3, deletes 2, and leaves the newer files alone */
    model_step(&a);
    MF_TEST_OK(mf_checkpoint_save_run(dir, 3, &a.params, &a.opt, &a.state, &a.cfg, NULL, 0));
    MF_TEST_OK(mf_checkpoint_list_run(dir, &l));
    bool ok = l.count == 6;
    const int64_t want[6] = {100, 7, 6, 5, 4, 3};
    for (int i = 0; ok && i < 6; i++) ok = l.steps[i] == want[i];
    MF_TEST_TRUE(ok, "after saving step 5 with keep 3: %d files (want 100 7 6 5 4 3)", l.count);
    mf_checkpoint_list_free(&l);
    int removed = 0;
    MF_TEST_OK(mf_checkpoint_remove_stale_temps(dir, &removed));
    MF_TEST_TRUE(removed == 1 && access(p2, F_OK) != 0, "stale temporary files removed: %d",
                 removed);

    /* an empty or missing run directory: nothing found, no error */
    snprintf(p2, sizeof p2, "%s/missing", g_dir);
    MF_TEST_OK(mf_checkpoint_find_latest(p2, NULL, found_path, sizeof found_path, &step, &found));
    MF_TEST_TRUE(!found, "missing run directory: nothing found");
    model_free(&a);
}

/* A writer killed (SIGKILL) at random moments after its first checkpoint: every ckpt-*.h5 left is
 * complete and valid. */
static void test_killed_writer(void)
{
    int bad = 0, files = 0, temps = 0;
    for (int trial = 0; trial < 4; trial++) {
        char dir[128];
        snprintf(dir, sizeof dir, "%s/killed%d", g_dir, trial);
        int ready[2];
        MF_TEST_TRUE(pipe(ready) == 0, "pipe");
        pid_t pid = fork();
        if (pid == 0) {
            close(ready[0]);
            model a;
            model_init(&a, 4);
            for (int s = 0; s < 100000; s++) {
                model_step(&a);
                if (mf_checkpoint_save_run(dir, 2, &a.params, &a.opt, &a.state, &a.cfg, NULL, 0) !=
                    MF_OK)
                    _exit(3);
                if (s == 0 && (write(ready[1], "r", 1) != 1 || close(ready[1]) != 0)) _exit(4);
            }
            _exit(0);
        }
        close(ready[1]);
        char c = 0;
        bool started = read(ready[0], &c, 1) == 1;
        close(ready[0]);
        MF_TEST_TRUE(started, "writer %d wrote its first checkpoint", trial);
        /* 3 ms to 40 ms more: inside some later write */
        struct timespec ts = {0, 3000000L + 12345678L * trial};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        MF_TEST_TRUE(WIFSIGNALED(status), "writer %d was killed (not finished or failed)", trial);
        mf_checkpoint_list l;
        MF_TEST_OK(mf_checkpoint_list_run(dir, &l));
        for (int i = 0; i < l.count; i++) {
            files++;
            if (mf_checkpoint_verify(l.paths[i], NULL) != MF_OK) {
                bad++;
                mf_test_fail("after SIGKILL: %s is not valid: %s", l.paths[i], mf_last_error());
            }
        }
        /* keep 2, plus one when the kill fell between a rename and the deletion of the oldest */
        MF_TEST_TRUE(l.count >= 1 && l.count <= 3, "after SIGKILL %d: %d checkpoints (keep 2)",
                     trial, l.count);
        mf_checkpoint_list_free(&l);
        int removed = 0;
        MF_TEST_OK(mf_checkpoint_remove_stale_temps(dir, &removed));
        temps += removed;
    }
    printf("  4 writers killed: %d checkpoint files left, all checked (%d invalid), %d temporary "
           "files removed\n",
           files, bad, temps);
}

static void test_signals(void)
{
    MF_TEST_OK(mf_checkpoint_signals_install());
    MF_TEST_TRUE(mf_checkpoint_signal_pending() == 0, "no signal pending after install");
    raise(SIGTERM);
    MF_TEST_TRUE(mf_checkpoint_signal_pending() == SIGTERM, "SIGTERM pending: %d",
                 mf_checkpoint_signal_pending());
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
}

/* ---- training log ---- */

static const char *const k_terms[2] = {"fape", "distogram"};

static mf_train_log_record record(int64_t step, double wall)
{
    mf_train_log_record r;
    memset(&r, 0, sizeof r);
    r.step = step;
    r.loss = step == 4 ? NAN : 1.0 / (double)step;
    r.terms[0] = 0.1 * (double)step;
    r.terms[1] = 3.0 / 7.0 + (double)step;
    r.lr = 1e-3 * (double)step / 10.0;
    r.grad_norm = 0.05 * (double)step;
    r.clip_scale = 1.0;
    r.skipped = step == 4;
    r.optimizer_step = step - (step >= 4);
    r.skipped_steps = step >= 4;
    r.arena_peak_bytes = 1000u * (size_t)step;
    r.step_time_s = wall;
    r.samples_per_s = 1.0 / wall;
    return r;
}

/* Drops the wall-clock fields: ,"wall":{...} in JSON lines, the last two CSV columns. */
static void strip_wall(char *s, bool csv)
{
    char *out = s;
    for (char *line = s; *line;) {
        char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        size_t keep = len;
        if (csv) {
            for (int k = 0; k < 2 && keep > 0; k++) {
                while (keep > 0 && line[keep - 1] != ',') keep--;
                if (keep > 0) keep--;
            }
        } else {
            char *w = strstr(line, ",\"wall\":");
            if (w && w < line + len) keep = (size_t)(w - line);
        }
        memmove(out, line, keep);
        out += keep;
        *out++ = '\n';
        line += len + (nl ? 1 : 0);
    }
    *out = '\0';
}

static void write_log(const char *dir, int64_t resume, int from, int to, double wall)
{
    mf_train_log log;
    MF_TEST_OK(mf_train_log_open(&log, dir, k_terms, 2, resume, 10));
    for (int s = from; s <= to; s++) {
        mf_train_log_record r = record(s, wall + 0.01 * s);
        MF_TEST_OK(mf_train_log_write(&log, &r));
        if (s == to) mf_train_log_progress(&log, &r);
    }
    MF_TEST_OK(mf_train_log_close(&log));
}

static void append(const char *path, const char *text)
{
    FILE *f = fopen(path, "ab");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; s && *s; s++) n += *s == '\n';
    return n;
}

static void test_log(void)
{
    char full[128], resumed[128], p[256];
    snprintf(full, sizeof full, "%s/log_full", g_dir);
    snprintf(resumed, sizeof resumed, "%s/log_resumed", g_dir);
    mkdir(full, 0777);
    mkdir(resumed, 0777);
    /* uninterrupted: steps 1-10 */
    write_log(full, -1, 1, 10, 0.5);
    /* interrupted after step 8 (with a torn line) and resumed from the checkpoint of step 6 */
    write_log(resumed, -1, 1, 8, 0.7);
    snprintf(p, sizeof p, "%s/log.jsonl", resumed);
    append(p, "{\"step\":9,\"loss\":0.1");
    snprintf(p, sizeof p, "%s/log.csv", resumed);
    append(p, "9,0.11");
    write_log(resumed, 6, 7, 10, 0.9);

    for (int k = 0; k < 2; k++) {
        const bool csv = k == 1;
        char pa[256], pb[256];
        snprintf(pa, sizeof pa, "%s/log.%s", full, csv ? "csv" : "jsonl");
        snprintf(pb, sizeof pb, "%s/log.%s", resumed, csv ? "csv" : "jsonl");
        char *a = mf_test_read_file(pa), *b = mf_test_read_file(pb);
        MF_TEST_TRUE(a && b && strcmp(a, b) != 0, "%s: the raw logs differ (wall-clock fields)",
                     csv ? "csv" : "jsonl");
        MF_TEST_TRUE(a && count_lines(a) == (csv ? 11 : 10), "%s: %d lines", pa, count_lines(a));
        if (a && b) {
            strip_wall(a, csv);
            strip_wall(b, csv);
            bool same = strcmp(a, b) == 0;
            printf("  log.%s resumed at 6 vs uninterrupted, wall-clock fields dropped: %s\n",
                   csv ? "csv" : "jsonl", same ? "identical" : "DIFFERENT");
            MF_TEST_TRUE(same, "log.%s after resume differs:\n%s\nvs\n%s", csv ? "csv" : "jsonl", b,
                         a);
        }
        free(a);
        free(b);
    }

    /* every JSON line parses and holds the columns, the values exactly */
    snprintf(p, sizeof p, "%s/log.jsonl", full);
    char *text = mf_test_read_file(p);
    int good = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(line);
        cJSON *step = cJSON_GetObjectItemCaseSensitive(j, "step");
        cJSON *wall = cJSON_GetObjectItemCaseSensitive(j, "wall");
        if (!j || !cJSON_IsNumber(step)) {
            mf_test_fail("not a JSON record: %s", line);
            cJSON_Delete(j);
            continue;
        }
        const int s = step->valueint;
        mf_train_log_record want = record(s, 0.5 + 0.01 * s);
        cJSON *loss = cJSON_GetObjectItemCaseSensitive(j, "loss");
        cJSON *dg = cJSON_GetObjectItemCaseSensitive(j, "distogram");
        cJSON *sk = cJSON_GetObjectItemCaseSensitive(j, "skipped");
        cJSON *peak = cJSON_GetObjectItemCaseSensitive(j, "arena_peak_bytes");
        cJSON *st = cJSON_GetObjectItemCaseSensitive(wall, "step_time_s");
        bool ok = (s == 4 ? cJSON_IsNull(loss)
                          : cJSON_IsNumber(loss) && loss->valuedouble == want.loss) &&
                  cJSON_IsNumber(dg) && dg->valuedouble == want.terms[1] &&
                  (s == 4 ? cJSON_IsTrue(sk) : cJSON_IsFalse(sk)) && cJSON_IsNumber(peak) &&
                  peak->valuedouble == (double)want.arena_peak_bytes && cJSON_IsNumber(st) &&
                  st->valuedouble == want.step_time_s &&
                  cJSON_GetObjectItemCaseSensitive(j, "lr") &&
                  cJSON_GetObjectItemCaseSensitive(j, "grad_norm") &&
                  cJSON_GetObjectItemCaseSensitive(j, "fape") &&
                  cJSON_GetObjectItemCaseSensitive(wall, "samples_per_s");
        if (ok)
            good++;
        else
            mf_test_fail("JSON record of step %d lacks a column or a value differs: %s", s, line);
        cJSON_Delete(j);
    }
    free(text);
    MF_TEST_TRUE(good == 10, "10 JSON records with every column, values exact (%d)", good);

    snprintf(p, sizeof p, "%s/log.csv", full);
    text = mf_test_read_file(p);
    const char *header = "step,loss,fape,distogram,lr,grad_norm,clip_scale,skipped,"
                         "optimizer_step,skipped_steps,arena_peak_bytes,step_time_s,"
                         "samples_per_s\n";
    MF_TEST_TRUE(text && !strncmp(text, header, strlen(header)), "CSV header: %.200s",
                 text ? text : "");
    MF_TEST_TRUE(text && strstr(text, "\n4,nan,"), "CSV: NaN loss of step 4 written as nan");
    free(text);

    /* resume beyond the log keeps it all; resume at 0 keeps the CSV header only */
    snprintf(p, sizeof p, "%s/log.csv", full);
    MF_TEST_OK(mf_train_log_truncate_file(p, 20, true));
    text = mf_test_read_file(p);
    MF_TEST_TRUE(count_lines(text) == 11, "truncate at 20 keeps 10 records");
    free(text);
    MF_TEST_OK(mf_train_log_truncate_file(p, 0, true));
    text = mf_test_read_file(p);
    MF_TEST_TRUE(text && !strcmp(text, header), "truncate at 0 keeps the header only");
    free(text);
    snprintf(p, sizeof p, "%s/log.jsonl", full);
    MF_TEST_OK(mf_train_log_truncate_file(p, 0, false));
    MF_TEST_TRUE(file_size(p) == 0, "truncate at 0 empties the JSONL log");

    const char *bad_terms[1] = {"fape,x"};
    mf_train_log log;
    mf_status st = mf_train_log_open(&log, full, bad_terms, 1, -1, 0);
    MF_TEST_TRUE(st == MF_ERR_INVALID, "a term name with a comma is refused");
    mf_clear_error();
}

int main(void)
{
    mf_h5_quiet();
    snprintf(g_dir, sizeof g_dir, "/tmp/mf_checkpoint_XXXXXX");
    if (!mkdtemp(g_dir)) return mf_test_skip("mkdtemp failed");
    test_round_trip();
    test_corruption();
    test_run_dir();
    test_killed_writer();
    test_signals();
    test_log();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (mf_test_failures() == 0 && system(cmd) != 0) printf("could not remove %s\n", g_dir);
    return mf_test_finish("test_checkpoint");
}
