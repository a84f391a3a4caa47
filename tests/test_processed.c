/* Processed-feature files (data/processed.h):
 *  1. shared/testvectors/features.h5 read by name: 50 features, the 6 per-iteration features of
 *     config.json with their leading axis R = 2, everything else without, dtypes f32/i32; every
 *     dataset equal bitwise to an independent plain read (data/h5io.h);
 *  2. round trip: written back and read again, every dataset bitwise equal, flags and shapes
 *     equal; h5py (/usr/bin/python3) reads the written file and finds every dataset, dtype,
 *     shape, value and per_iteration attribute equal to features.h5's;
 *  3. per-iteration views: iteration r of msa_feat is its r-th slice, aatype is the same array in
 *     every iteration, iteration R is refused;
 *  4. malformed files are refused with a message: a dataset without per_iteration,
 *     per_iteration = 1 on a feature that is never resampled, a leading axis other than
 *     n_recycle_iterations. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/h5io.h"
#include "data/processed.h"
#include "tests/support/mf_test.h"

static char tmpdir[256];

static void test_read_features(const char *path, mf_processed_features *f)
{
    printf("1. features.h5 read by name\n");
    MF_TEST_OK(mf_processed_read(path, f));
    if (f->num_features == 0) return;
    MF_TEST_TRUE(f->num_features == 50, "features.h5: %d features, expected 50", f->num_features);
    MF_TEST_TRUE(f->num_iterations == 2, "R = %lld, expected 2", (long long)f->num_iterations);
    MF_TEST_TRUE(f->num_res == 24, "n_res = %lld, expected 24", (long long)f->num_res);
    MF_TEST_TRUE(f->sequence && strcmp(f->sequence, "MEGPLNLAHQQSRRADRLLAAGKY") == 0,
                 "sequence attribute: %s", f->sequence ? f->sequence : "(none)");
    int per = 0;
    for (int i = 0; i < f->num_features; i++) {
        const mf_feature *ft = &f->features[i];
        per += ft->per_iteration;
        MF_TEST_TRUE(ft->per_iteration == mf_feature_may_be_per_iteration(ft->name),
                     "%s: per_iteration %d, but the name says %d", ft->name, ft->per_iteration,
                     mf_feature_may_be_per_iteration(ft->name));
        if (ft->per_iteration)
            MF_TEST_TRUE(ft->array.shape[0] == 2, "%s: leading axis %lld", ft->name,
                         (long long)ft->array.shape[0]);
        MF_TEST_TRUE(ft->array.dtype == MF_F32 || ft->array.dtype == MF_I32, "%s: dtype %s",
                     ft->name, mf_dtype_name(ft->array.dtype));
    }
    printf("  %d features, %d per-iteration (R = %lld), N = %lld\n", f->num_features, per,
           (long long)f->num_iterations, (long long)f->num_res);
    MF_TEST_TRUE(per == 6, "%d per-iteration features, expected 6", per);
    const mf_feature *mf = mf_processed_find(f, "msa_feat");
    MF_TEST_TRUE(mf && mf->array.ndim == 4 && mf->array.shape[1] == 8 && mf->array.shape[2] == 24 &&
                     mf->array.shape[3] == 49,
                 "msa_feat shape");
    const mf_feature *bb = mf_processed_find(f, "backbone_rigid_tensor");
    MF_TEST_TRUE(bb && bb->array.ndim == 3 && bb->array.shape[1] == 4, "backbone_rigid_tensor");
    const mf_feature *sl = mf_processed_find(f, "seq_length");
    MF_TEST_TRUE(sl && sl->array.ndim == 0 && sl->array.dtype == MF_I32 &&
                     *(int32_t *)sl->array.data == 24,
                 "seq_length scalar i32 24");

    /* independent plain reads */
    hid_t h = -1;
    MF_TEST_OK(mf_h5_open_read(path, &h));
    if (h < 0) return;
    int64_t bad = 0;
    for (int i = 0; i < f->num_features; i++) {
        const mf_feature *ft = &f->features[i];
        mf_h5_array a = {0};
        if (mf_h5_read_array(h, path, ft->name, ft->array.dtype, &a) != MF_OK) {
            bad++;
            continue;
        }
        const size_t bytes = (size_t)mf_h5_array_numel(&a) * mf_dtype_size(a.dtype);
        bool same = a.ndim == ft->array.ndim && memcmp(a.data, ft->array.data, bytes) == 0;
        for (int k = 0; same && k < a.ndim; k++) same = a.shape[k] == ft->array.shape[k];
        bad += !same;
        mf_h5_array_free(&a);
    }
    H5Fclose(h);
    printf("  every dataset against a plain h5io read: %lld differ (bitwise)\n", (long long)bad);
    MF_TEST_TRUE(bad == 0, "%lld datasets differ from a plain read", (long long)bad);
}

static void test_round_trip(const char *ref_path, const mf_processed_features *f)
{
    printf("2. round trip: write, read back, h5py\n");
    char out[512];
    snprintf(out, sizeof out, "%s/roundtrip.h5", tmpdir);
    MF_TEST_OK(mf_processed_write(out, f));
    mf_processed_features g;
    MF_TEST_OK(mf_processed_read(out, &g));
    char diff[256];
    const bool eq = mf_processed_equal(f, &g, diff, sizeof diff);
    printf("  read back: %s\n", eq ? "every dataset bitwise equal" : diff);
    MF_TEST_TRUE(eq, "round trip: %s", diff);
    MF_TEST_TRUE(g.sequence && f->sequence && strcmp(g.sequence, f->sequence) == 0,
                 "sequence attribute lost");
    mf_processed_free(&g);

    if (access("/usr/bin/python3", X_OK) != 0 ||
        system("/usr/bin/python3 -c 'import h5py, numpy' >/dev/null 2>&1") != 0) {
        printf("  h5py check not run: /usr/bin/python3 with h5py and numpy is not available\n");
        return;
    }
    char script[512];
    snprintf(script, sizeof script, "%s/check.py", tmpdir);
    FILE *s = fopen(script, "w");
    MF_TEST_TRUE(s != NULL, "cannot write %s", script);
    if (!s) return;
    fputs("import sys, h5py, numpy as np\n"
          "a = h5py.File(sys.argv[1], 'r'); b = h5py.File(sys.argv[2], 'r')\n"
          "bad = []\n"
          "if sorted(a.keys()) != sorted(b.keys()): bad.append('names')\n"
          "for k in a.keys():\n"
          "    x, y = a[k], b[k]\n"
          "    if x.dtype != y.dtype or x.shape != y.shape: bad.append(k + ' dtype/shape'); "
          "continue\n"
          "    if not np.array_equal(x[()], y[()]): bad.append(k + ' values')\n"
          "    if int(x.attrs['per_iteration']) != int(y.attrs['per_iteration']): "
          "bad.append(k + ' per_iteration')\n"
          "if int(b.attrs['n_recycle_iterations']) != int(a.attrs['n_recycle_iterations']): "
          "bad.append('n_recycle_iterations')\n"
          "print('  h5py: %d datasets compared, %d differences %s' % (len(a.keys()), len(bad), "
          "bad))\n"
          "sys.exit(1 if bad else 0)\n",
          s);
    fclose(s);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s %s", script, ref_path, out);
    fflush(stdout);
    const int rc = system(cmd);
    MF_TEST_TRUE(rc == 0, "h5py found differences between %s and %s", out, ref_path);
}

static void test_views(const mf_processed_features *f)
{
    printf("3. per-iteration views\n");
    mf_h5_array v0, v1, a1;
    MF_TEST_OK(mf_processed_iteration(f, "msa_feat", 0, &v0));
    MF_TEST_OK(mf_processed_iteration(f, "msa_feat", 1, &v1));
    MF_TEST_OK(mf_processed_iteration(f, "aatype", 1, &a1));
    const mf_feature *mf = mf_processed_find(f, "msa_feat"), *aa = mf_processed_find(f, "aatype");
    if (!mf || !aa || !v1.data) return;
    const int64_t per = mf_h5_array_numel(&v0);
    MF_TEST_TRUE(v1.ndim == 3 && v1.shape[0] == 8 && per == 8 * 24 * 49 &&
                     v1.data == (float *)mf->array.data + per,
                 "msa_feat iteration 1 is not the second slice");
    MF_TEST_TRUE(a1.data == aa->array.data && a1.ndim == 1, "aatype differs per iteration");
    mf_tensor t;
    MF_TEST_OK(mf_processed_tensor(f, "template_all_atom_positions", 1, &t));
    MF_TEST_TRUE(t.ndim == 4 && t.shape[3] == 3, "template_all_atom_positions tensor view");
    mf_h5_array bad;
    MF_TEST_TRUE(mf_processed_iteration(f, "msa_feat", 2, &bad) != MF_OK, "iteration R accepted");
    MF_TEST_TRUE(mf_processed_iteration(f, "no_such_feature", 0, &bad) != MF_OK,
                 "a missing feature accepted");
    printf("  msa_feat r=1 at offset %lld elements; aatype shared; out-of-range refused: %s\n",
           (long long)per, mf_last_error());
}

/* A small file with one deliberate defect; returns whether mf_processed_read refused it. */
static bool refused(const char *what, int defect)
{
    char path[512];
    snprintf(path, sizeof path, "%s/bad%d.h5", tmpdir, defect);
    mf_h5_writer w = {0};
    if (mf_h5_writer_open(&w, path) != MF_OK) return false;
    const int32_t aat[3] = {1, 2, 3};
    const float feat[2 * 3] = {0};
    const int64_t s3[1] = {3}, s23[2] = {2, 3}, s33[2] = {3, 3};
    bool ok = mf_h5_write_array(&w, "aatype", MF_I32, 1, s3, aat) == MF_OK;
    ok = ok && mf_h5_write_attr_int(&w, "/", "n_recycle_iterations", 2) == MF_OK;
    if (defect != 0)
        ok =
            ok && mf_h5_write_attr_int(&w, "aatype", "per_iteration", defect == 1 ? 1 : 0) == MF_OK;
    if (defect == 2) {
        const float f9[9] = {0};
        ok = ok && mf_h5_write_array(&w, "bert_mask", MF_F32, 2, s33, f9) == MF_OK;
        ok = ok && mf_h5_write_attr_int(&w, "bert_mask", "per_iteration", 1) == MF_OK;
    } else {
        ok = ok && mf_h5_write_array(&w, "bert_mask", MF_F32, 2, s23, feat) == MF_OK;
        ok = ok && mf_h5_write_attr_int(&w, "bert_mask", "per_iteration", 1) == MF_OK;
    }
    ok = ok && mf_h5_writer_commit(&w) == MF_OK;
    if (!ok) {
        mf_h5_writer_abort(&w);
        mf_test_fail("cannot write the %s fixture", what);
        return false;
    }
    mf_processed_features f;
    const mf_status st = mf_processed_read(path, &f);
    printf("  %-52s %s: %s\n", what, st != MF_OK ? "refused" : "ACCEPTED",
           st != MF_OK ? mf_last_error() : "");
    if (st == MF_OK) mf_processed_free(&f);
    return st != MF_OK;
}

static void test_malformed(void)
{
    printf("4. malformed processed-feature files\n");
    MF_TEST_TRUE(refused("dataset without per_iteration", 0), "missing attribute accepted");
    MF_TEST_TRUE(refused("per_iteration = 1 on aatype", 1), "per-iteration aatype accepted");
    MF_TEST_TRUE(refused("leading axis 3 with n_recycle_iterations 2", 2),
                 "wrong recycling axis accepted");
    mf_processed_features f;
    mf_processed_init(&f);
    f.num_iterations = 2;
    void *p;
    MF_TEST_TRUE(mf_processed_add(&f, "aatype", MF_I32, true, 1, (const int64_t[]){3}, &p) != MF_OK,
                 "mf_processed_add accepted a per-iteration aatype");
    MF_TEST_OK(mf_processed_add(&f, "msa_feat", MF_F32, true, 3, (const int64_t[]){1, 3, 49}, &p));
    MF_TEST_TRUE(mf_processed_add(&f, "msa_feat", MF_F32, true, 1, (const int64_t[]){3}, &p) !=
                     MF_OK,
                 "mf_processed_add accepted a duplicate");
    const mf_feature *m = mf_processed_find(&f, "msa_feat");
    MF_TEST_TRUE(m && m->array.ndim == 4 && m->array.shape[0] == 2, "R not prepended");
    mf_processed_free(&f);
}

int main(void)
{
    mf_h5_quiet();
    snprintf(tmpdir, sizeof tmpdir, "/tmp/mf_test_processed_XXXXXX");
    if (!mkdtemp(tmpdir)) return mf_test_skip("cannot create a temporary directory");
    char path[1024];
    snprintf(path, sizeof path, "%s/testvectors/features.h5", mf_test_shared_dir());
    mf_processed_features f;
    test_read_features(path, &f);
    if (f.num_features > 0) {
        test_round_trip(path, &f);
        test_views(&f);
    }
    test_malformed();
    mf_processed_free(&f);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) printf("  could not remove %s\n", tmpdir);
    return mf_test_finish("test_processed");
}
