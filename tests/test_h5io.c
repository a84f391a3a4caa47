/* HDF5 I/O: round trip of arrays and attributes, atomic commit (nothing at the final path until
 * commit; abort leaves nothing), clear errors for a missing dataset, a wrong shape, a truncated
 * file, and reading a reference-vector file from shared/. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/h5io.h"
#include "tests/support/mf_test.h"

int main(void)
{
    char dir[] = "/tmp/mf_h5io_XXXXXX";
    MF_TEST_TRUE(mkdtemp(dir) != NULL, "mkdtemp failed");
    char path[256], bad[256];
    snprintf(path, sizeof path, "%s/out.h5", dir);
    snprintf(bad, sizeof bad, "%s/truncated.h5", dir);

    float a[2 * 3 * 4];
    for (int i = 0; i < 24; i++) a[i] = 0.5f * (float)i - 3.0f;
    int32_t idx[5] = {4, -1, 7, 0, 123456};
    int64_t sa[3] = {2, 3, 4}, si[1] = {5};

    mf_h5_writer w;
    MF_TEST_OK(mf_h5_writer_open(&w, path));
    MF_TEST_TRUE(access(path, F_OK) != 0, "final path exists before commit");
    MF_TEST_OK(mf_h5_write_array(&w, "grads/alphafold|x||w", MF_F32, 3, sa, a));
    MF_TEST_OK(mf_h5_write_array(&w, "aatype", MF_I32, 1, si, idx));
    double dd[3] = {1.0 / 3.0, -2.5e-300, 7.0};
    int64_t sd[1] = {3};
    MF_TEST_OK(mf_h5_write_array(&w, "f64", MF_F64, 1, sd, dd));
    MF_TEST_OK(mf_h5_write_attr_string(&w, "/", "schema", "memfold-test"));
    MF_TEST_OK(mf_h5_write_attr_double(&w, "grads/alphafold|x||w", "scale", 2.5));
    MF_TEST_OK(mf_h5_writer_commit(&w));
    MF_TEST_TRUE(access(path, F_OK) == 0, "file missing after commit");

    hid_t f;
    MF_TEST_OK(mf_h5_open_read(path, &f));
    mf_h5_array r;
    MF_TEST_OK(mf_h5_read_array_shape(f, path, "grads/alphafold|x||w", MF_F32, 3, sa, &r));
    MF_TEST_TRUE(r.data && !memcmp(r.data, a, sizeof a), "f32 round trip differs");
    mf_h5_array_free(&r);
    MF_TEST_OK(mf_h5_read_array(f, path, "aatype", MF_I32, &r));
    MF_TEST_TRUE(r.ndim == 1 && r.shape[0] == 5 && !memcmp(r.data, idx, sizeof idx),
                 "i32 round trip differs");
    mf_h5_array_free(&r);
    MF_TEST_OK(mf_h5_read_array(f, path, "f64", MF_F64, &r));
    MF_TEST_TRUE(r.data && r.ndim == 1 && !memcmp(r.data, dd, sizeof dd), "f64 round trip differs");
    mf_h5_array_free(&r);
    char *s = NULL;
    MF_TEST_OK(mf_h5_read_attr_string(f, "/", "schema", &s));
    MF_TEST_TRUE(s && !strcmp(s, "memfold-test"), "string attribute '%s'", s ? s : "(null)");
    free(s);
    double v = 0;
    MF_TEST_OK(mf_h5_read_attr_double(f, "grads/alphafold|x||w", "scale", &v));
    MF_TEST_TRUE(v == 2.5, "double attribute %g", v);
    char **names;
    int n;
    MF_TEST_OK(mf_h5_list(f, "/", &names, &n));
    MF_TEST_TRUE(n == 3 && !strcmp(names[0], "aatype") && !strcmp(names[1], "f64") &&
                     !strcmp(names[2], "grads"),
                 "root listing wrong (%d entries)", n);
    mf_h5_free_names(names, n);

    /* Errors name the file and the dataset. */
    mf_status st = mf_h5_read_array(f, path, "msa_feat", MF_F32, &r);
    MF_TEST_TRUE(st == MF_ERR_FORMAT && strstr(mf_last_error(), "msa_feat") &&
                     strstr(mf_last_error(), "out.h5"),
                 "missing dataset: %s", mf_last_error());
    int64_t wrong[3] = {2, 4, 3};
    st = mf_h5_read_array_shape(f, path, "grads/alphafold|x||w", MF_F32, 3, wrong, &r);
    MF_TEST_TRUE(st == MF_ERR_FORMAT && strstr(mf_last_error(), "[2, 3, 4]") &&
                     strstr(mf_last_error(), "[2, 4, 3]") && r.data == NULL,
                 "wrong shape: %s", mf_last_error());
    printf("wrong-shape error: %s\n", mf_last_error());
    st = mf_h5_read_array(f, path, "aatype", MF_F32, &r);
    MF_TEST_OK(st); /* integers convert to f32 on request */
    mf_h5_array_free(&r);
    st = mf_h5_read_array(f, path, "grads/alphafold|x||w", MF_I32, &r);
    MF_TEST_TRUE(st == MF_ERR_FORMAT, "float dataset read as int32 without an error");
    H5Fclose(f);

    /* A truncated copy is rejected cleanly. */
    FILE *in = fopen(path, "rb"), *out = fopen(bad, "wb");
    MF_TEST_TRUE(in && out, "cannot copy file");
    if (in && out) {
        char buf[4096];
        size_t got = fread(buf, 1, sizeof buf, in);
        fwrite(buf, 1, got / 2, out);
    }
    if (in) fclose(in);
    if (out) fclose(out);
    st = mf_h5_open_read(bad, &f);
    if (st == MF_OK) {
        st = mf_h5_read_array(f, bad, "aatype", MF_I32, &r);
        H5Fclose(f);
    }
    MF_TEST_TRUE(st != MF_OK, "truncated file read without error");
    printf("truncated-file error: %s\n", mf_last_error());

    /* Abort leaves nothing behind. */
    char path2[256];
    snprintf(path2, sizeof path2, "%s/aborted.h5", dir);
    MF_TEST_OK(mf_h5_writer_open(&w, path2));
    MF_TEST_OK(mf_h5_write_array(&w, "x", MF_F32, 3, sa, a));
    mf_h5_writer_abort(&w);
    MF_TEST_TRUE(access(path2, F_OK) != 0, "aborted file exists");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls %s | grep -c tmp- >/dev/null", dir);
    MF_TEST_TRUE(system(cmd) != 0, "temporary file left behind");

    /* A reference-vector file from shared/. */
    char vec[1024];
    snprintf(vec, sizeof vec, "%s/testvectors/modules/msa_transition.h5", mf_test_shared_dir());
    MF_TEST_OK(mf_h5_open_read(vec, &f));
    if (f >= 0) {
        MF_TEST_OK(mf_h5_read_attr_string(f, "/", "module", &s));
        MF_TEST_TRUE(s && !strcmp(s, "msa_transition"), "module attribute '%s'", s ? s : "");
        free(s);
        MF_TEST_OK(mf_h5_read_attr_double(f, "/", "rtol", &v));
        MF_TEST_TRUE(v == 1e-5, "rtol %g", v);
        H5Fclose(f);
    }
    char esc[64], un[64];
    mf_h5_escape_name("a/b//c", esc, sizeof esc);
    mf_h5_unescape_name(esc, un, sizeof un);
    MF_TEST_TRUE(!strcmp(esc, "a|b||c") && !strcmp(un, "a/b//c"), "name escaping");

    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", dir);
    return mf_test_finish("test_h5io");
}
