/* .npz reader and writer: the numpy-written fixtures of tests/data/npz (deflated, ZIP64, .npy
 * versions 2.0/3.0, Fortran order, f32/f64/i32/i64, 0-d and empty arrays) read to the values
 * make_fixtures.py wrote; the reference parameter file read -> written (stored, deflated, forced
 * ZIP64) -> read bit for bit; numpy reads what memfold writes (python3 compares every array with
 * the original and a CRC-32 over names, shapes and bytes with the one computed here; C-ordered
 * members must equal numpy's own .npy bytes); malformed archives (truncated, bad CRC,
 * unsupported types and compression, wrong headers, not a zip) give errors naming file and
 * member. Exact comparisons throughout: no tolerance. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data/npz.h"
#include "tests/support/mf_test.h"

#define PYTHON "/usr/bin/python3"

static const char *source_dir(void)
{
    const char *s = getenv("MEMFOLD_SOURCE");
    return s && *s ? s : ".";
}

static void fixture(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/tests/data/npz/%s", source_dir(), name);
}

static bool same_array(const mf_h5_array *a, const mf_h5_array *b)
{
    if (a->dtype != b->dtype || a->ndim != b->ndim) return false;
    for (int k = 0; k < a->ndim; k++)
        if (a->shape[k] != b->shape[k]) return false;
    size_t bytes = (size_t)mf_h5_array_numel(a) * mf_dtype_size(a->dtype);
    return bytes == 0 || !memcmp(a->data, b->data, bytes);
}

/* Names (in order), dtypes, shapes and bytes identical. */
static bool same_npz(const mf_npz *a, const mf_npz *b, const char *what)
{
    bool ok = a->count == b->count;
    for (int i = 0; ok && i < a->count; i++) {
        if (strcmp(a->names[i], b->names[i]) != 0 || !same_array(&a->arrays[i], &b->arrays[i])) {
            printf("  %s: array %d ('%s' vs '%s') differs\n", what, i, a->names[i], b->names[i]);
            ok = false;
        }
    }
    printf("%s: %d arrays, names/order/dtypes/shapes/bytes identical: %s\n", what, a->count,
           ok ? "yes" : "NO");
    return ok;
}

/* CRC-32 over each array's name, shape (int64 little-endian) and row-major bytes, in order; the
 * Python side computes the same from numpy.load. */
static uint32_t npz_crc(const mf_npz *n)
{
    uLong crc = crc32(0, Z_NULL, 0);
    for (int i = 0; i < n->count; i++) {
        const mf_h5_array *a = &n->arrays[i];
        crc = crc32(crc, (const Bytef *)n->names[i], (uInt)strlen(n->names[i]));
        for (int k = 0; k < a->ndim; k++) {
            unsigned char le[8];
            for (int j = 0; j < 8; j++) le[j] = (unsigned char)((uint64_t)a->shape[k] >> (8 * j));
            crc = crc32(crc, le, 8);
        }
        size_t bytes = (size_t)mf_h5_array_numel(a) * mf_dtype_size(a->dtype);
        if (bytes) crc = crc32(crc, a->data, (uInt)bytes);
    }
    return (uint32_t)crc;
}

/* ---- the fixtures' arrays, as make_fixtures.py defines them ---- */

static void check_fixture_arrays(const char *file)
{
    char p[4096];
    fixture(p, sizeof p, file);
    mf_npz n;
    mf_status st = mf_npz_read(p, &n);
    MF_TEST_TRUE(st == MF_OK, "%s: %s", file, mf_last_error());
    if (st != MF_OK) return;
    static const char *const names[] = {"f32_2d",     "f64_1d",         "i32_2d",
                                        "i64_1d",     "scalar",         "empty",
                                        "fortran_3d", "fortran_f64_2d", "alphafold/x/y//weights"};
    bool ok = n.count == 9;
    for (int i = 0; ok && i < 9; i++) ok = !strcmp(n.names[i], names[i]);
    MF_TEST_TRUE(ok, "%s: member names or order differ", file);
    if (!ok) goto done;

    const mf_h5_array *a = mf_npz_find(&n, "f32_2d");
    ok = a->dtype == MF_F32 && a->ndim == 2 && a->shape[0] == 3 && a->shape[1] == 4;
    for (int i = 0; ok && i < 12; i++) ok = ((float *)a->data)[i] == 0.5f * (float)i - 3.0f;
    MF_TEST_TRUE(ok, "%s: f32_2d wrong", file);

    a = mf_npz_find(&n, "f64_1d");
    ok = a->dtype == MF_F64 && a->ndim == 1 && a->shape[0] == 5;
    for (int i = 0; ok && i < 5; i++) ok = ((double *)a->data)[i] == (double)i / 3.0;
    MF_TEST_TRUE(ok, "%s: f64_1d wrong", file);

    a = mf_npz_find(&n, "i32_2d");
    ok = a->dtype == MF_I32 && a->ndim == 2 && a->shape[0] == 2 && a->shape[1] == 3;
    for (int i = 0; ok && i < 6; i++) ok = ((int32_t *)a->data)[i] == (i - 3) * 1000003;
    MF_TEST_TRUE(ok, "%s: i32_2d wrong", file);

    a = mf_npz_find(&n, "i64_1d"); /* int64 within int32 range -> MF_I32 */
    const int32_t want64[4] = {INT32_MIN, 0, 7, INT32_MAX};
    ok = a->dtype == MF_I32 && a->ndim == 1 && a->shape[0] == 4 &&
         !memcmp(a->data, want64, sizeof want64);
    MF_TEST_TRUE(ok, "%s: i64_1d (read as i32) wrong", file);

    a = mf_npz_find(&n, "scalar");
    MF_TEST_TRUE(a->dtype == MF_F32 && a->ndim == 0 && ((float *)a->data)[0] == 2.5f,
                 "%s: 0-d scalar wrong", file);
    a = mf_npz_find(&n, "empty");
    MF_TEST_TRUE(a->dtype == MF_F32 && a->ndim == 2 && a->shape[0] == 0 && a->shape[1] == 3,
                 "%s: empty (0, 3) array wrong", file);

    /* Fortran-ordered on file, row-major in memory: element [i, j, k] = (12 i + 4 j + k) / 4. */
    a = mf_npz_find(&n, "fortran_3d");
    ok = a->dtype == MF_F32 && a->ndim == 3 && a->shape[0] == 2 && a->shape[1] == 3 &&
         a->shape[2] == 4;
    for (int i = 0; ok && i < 24; i++) ok = ((float *)a->data)[i] == 0.25f * (float)i;
    MF_TEST_TRUE(ok, "%s: fortran_3d not reordered to row-major", file);
    a = mf_npz_find(&n, "fortran_f64_2d");
    ok = a->dtype == MF_F64 && a->ndim == 2 && a->shape[0] == 2 && a->shape[1] == 3;
    for (int i = 0; ok && i < 6; i++) ok = ((double *)a->data)[i] == (double)i;
    MF_TEST_TRUE(ok, "%s: fortran_f64_2d not reordered to row-major", file);

    a = mf_npz_find(&n, "alphafold/x/y//weights");
    ok = a && a->ndim == 3 && a->shape[0] == 1;
    for (int i = 0; ok && i < 4; i++) ok = ((float *)a->data)[i] == (float)i;
    MF_TEST_TRUE(ok, "%s: member with '/' in its name wrong", file);
    MF_TEST_TRUE(mf_npz_find(&n, "absent") == NULL, "mf_npz_find of an absent name");
    printf("%s: 9 arrays (f32, f64, i32, i64->i32, 0-d, empty, Fortran order 3-D and f64 2-D, "
           "'/' in names) exact\n",
           file);
done:
    mf_npz_free(&n);
}

/* Expects failure `code` with the file's name and every fragment in the message. */
static void expect_error_path(const char *path, mf_status code, const char *frag1,
                              const char *frag2)
{
    mf_npz n;
    mf_status st = mf_npz_read(path, &n);
    const char *msg = mf_last_error();
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    bool ok = st == code && strstr(msg, base) && (!frag1 || strstr(msg, frag1)) &&
              (!frag2 || strstr(msg, frag2)) && n.count == 0 && n.names == NULL;
    MF_TEST_TRUE(ok, "%s: expected %s with '%s' '%s', got %s: %s", base, mf_status_name(code),
                 frag1 ? frag1 : "", frag2 ? frag2 : "", mf_status_name(st), msg);
    printf("  %-26s -> %s: %s\n", base, mf_status_name(st), msg);
    if (st == MF_OK) mf_npz_free(&n);
}

static void expect_error(const char *file, mf_status code, const char *frag1, const char *frag2)
{
    char p[4096];
    fixture(p, sizeof p, file);
    expect_error_path(p, code, frag1, frag2);
}

static bool write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    bool ok = fwrite(data, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

static unsigned char *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(len > 0 ? (size_t)len : 1);
    *n = b && len > 0 ? fread(b, 1, (size_t)len, f) : 0;
    fclose(f);
    return b;
}

/* Truncations of a real archive at several points: every one is an error, and one that cuts a
 * member's data names that member. */
static void check_truncations(const char *dir, const char *src)
{
    size_t n;
    unsigned char *b = read_bytes(src, &n);
    MF_TEST_TRUE(b && n > 4096, "cannot read %s", src);
    if (!b || n <= 4096) {
        free(b);
        return;
    }
    char p[4096];
    snprintf(p, sizeof p, "%s/truncated.npz", dir);
    /* Member 2 of params_af2.npz (preprocess_1d//bias) starts at 3060; its data ends at 3429. */
    const struct {
        size_t len;
        const char *frag1, *frag2;
    } cuts[] = {
        {0, "not a zip archive", "empty file"},         {10, "truncated", NULL},
        {3200, "truncated", "preprocess_1d//bias.npy"}, {n / 2, "truncated", NULL},
        {n - 300, "truncated", "central directory"},    {n - 1, "truncated", NULL},
    };
    printf("truncated copies of %s (%zu bytes):\n", src, n);
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        MF_TEST_TRUE(write_bytes(p, b, cuts[i].len), "cannot write %s", p);
        expect_error_path(p, MF_ERR_FORMAT, cuts[i].frag1, cuts[i].frag2);
    }
    free(b);
}

/* A byte of array data flipped in a stored archive memfold wrote: CRC error naming the member. */
static void check_flipped_byte(const char *dir)
{
    float v[10];
    for (int i = 0; i < 10; i++) v[i] = (float)i;
    char *names[1] = {"scope//flipped"};
    mf_h5_array arr = {MF_F32, 1, {10}, v};
    mf_npz n = {1, names, &arr};
    char p[4096];
    snprintf(p, sizeof p, "%s/flipped.npz", dir);
    MF_TEST_OK(mf_npz_write(p, &n));
    size_t len;
    unsigned char *b = read_bytes(p, &len);
    /* local header (30) + "scope//flipped.npy" (18) + .npy header (128) + 4 floats */
    size_t at = 30 + 18 + 128 + 16;
    MF_TEST_TRUE(b && len > at && b[at - 16 - 128] == 0x93, "unexpected layout of %s", p);
    if (b && len > at) {
        b[at] ^= 0x01;
        MF_TEST_TRUE(write_bytes(p, b, len), "cannot rewrite %s", p);
        expect_error_path(p, MF_ERR_FORMAT, "CRC-32 mismatch", "scope//flipped");
    }
    free(b);
}

/* Every type the writer writes reads back as itself (i8 is not in the fixtures). */
static void check_i8_round_trip(const char *dir)
{
    int8_t v[6] = {-128, -1, 0, 1, 7, 127};
    char *names[1] = {"scope//int8"};
    mf_h5_array arr = {MF_I8, 2, {2, 3}, v};
    mf_npz n = {1, names, &arr}, back;
    char p[4096];
    snprintf(p, sizeof p, "%s/int8.npz", dir);
    MF_TEST_OK(mf_npz_write(p, &n));
    mf_status st = mf_npz_read(p, &back);
    MF_TEST_TRUE(st == MF_OK && back.count == 1 && same_array(&arr, &back.arrays[0]),
                 "i8 round trip: %s", st == MF_OK ? "differs" : mf_last_error());
    if (st == MF_OK) mf_npz_free(&back);
    printf("i8 [2, 3] written and read back: exact\n");
}

static void check_write_errors(const char *dir)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/refused.npz", dir);
    uint16_t h[4] = {0};
    char *names[2] = {"a", "a"};
    mf_h5_array arr[2] = {{MF_BF16, 1, {4}, h}, {MF_F32, 1, {1}, h}};
    mf_npz n = {1, names, arr};
    mf_status st = mf_npz_write(p, &n);
    MF_TEST_TRUE(st == MF_ERR_UNSUPPORTED && strstr(mf_last_error(), "'a'") &&
                     strstr(mf_last_error(), "bf16") && access(p, F_OK) != 0,
                 "bf16 write: %s: %s", mf_status_name(st), mf_last_error());
    arr[0].dtype = MF_F32;
    n.count = 2;
    st = mf_npz_write(p, &n);
    MF_TEST_TRUE(st == MF_ERR_INVALID && strstr(mf_last_error(), "twice") && access(p, F_OK) != 0,
                 "duplicate names: %s: %s", mf_status_name(st), mf_last_error());
    snprintf(p, sizeof p, "%s/no/such/dir/x.npz", dir);
    n.count = 1;
    st = mf_npz_write(p, &n);
    MF_TEST_TRUE(st == MF_ERR_IO && strstr(mf_last_error(), "x.npz"), "unwritable path: %s: %s",
                 mf_status_name(st), mf_last_error());
    printf("writer refuses bf16 and duplicate names and reports an unwritable path; no file "
           "left behind\n");
}

/* Python side: numpy.load of each written file equals the original array by array (values,
 * dtype, shape, key order; i64 members may become i32), C-ordered members equal numpy's own
 * serialization of the same array, and a CRC like npz_crc. Prints "CRC <hex>" per file, "OK". */
static const char k_python_check[] =
    "import sys, zlib, zipfile, io\n"
    "import numpy as np\n"
    "from numpy.lib import format as npf\n"
    "orig = np.load(sys.argv[1])\n"
    "for path in sys.argv[2:]:\n"
    "    mine = np.load(path)\n"
    "    assert mine.files == orig.files, (path, 'key order')\n"
    "    crc = 0\n"
    "    z = zipfile.ZipFile(path)\n"
    "    for k in orig.files:\n"
    "        a, b = orig[k], mine[k]\n"
    "        want = np.int32 if a.dtype == np.int64 else a.dtype\n"
    "        assert b.dtype == want and b.shape == a.shape, (path, k, b.dtype, b.shape)\n"
    "        assert np.array_equal(a.astype(want), b), (path, k, 'values')\n"
    "        assert np.array(a, dtype=want, order='C').tobytes() == b.tobytes(), (path, k)\n"
    "        buf = io.BytesIO(); npf.write_array(buf, np.array(b, order='C'))\n"
    "        assert z.read(k + '.npy') == buf.getvalue(), (path, k, 'npy bytes differ')\n"
    "        crc = zlib.crc32(k.encode(), crc)\n"
    "        for d in b.shape: crc = zlib.crc32(int(d).to_bytes(8, 'little'), crc)\n"
    "        crc = zlib.crc32(b.tobytes(), crc)\n"
    "    print('CRC %08x' % crc)\n"
    "print('OK')\n";

/* Runs the check; returns the number of CRC lines matched against crcs[]. */
static void python_check(const char *dir, const char *orig, const char *const *files,
                         const uint32_t *crcs, int n)
{
    if (access(PYTHON, X_OK) != 0) {
        mf_test_fail("%s not found: numpy's reading of memfold's .npz cannot be checked (install "
                     "python3 and numpy)",
                     PYTHON);
        return;
    }
    char script[4096], cmd[16384];
    snprintf(script, sizeof script, "%s/check.py", dir);
    MF_TEST_TRUE(write_bytes(script, k_python_check, sizeof k_python_check - 1), "cannot write %s",
                 script);
    int k = snprintf(cmd, sizeof cmd, "%s %s '%s'", PYTHON, script, orig);
    for (int i = 0; i < n; i++) k += snprintf(cmd + k, sizeof cmd - (size_t)k, " '%s'", files[i]);
    snprintf(cmd + k, sizeof cmd - (size_t)k, " 2>&1");
    FILE *p = popen(cmd, "r");
    MF_TEST_TRUE(p != NULL, "cannot run %s", PYTHON);
    if (!p) return;
    char line[4096];
    int matched = 0, seen = 0;
    bool ok_line = false, no_numpy = false;
    while (fgets(line, sizeof line, p)) {
        unsigned crc;
        if (sscanf(line, "CRC %x", &crc) == 1) {
            bool m = seen < n && crc == crcs[seen];
            printf("  numpy reads %s: CRC-32 %08x, memfold's %08x: %s\n",
                   files[seen < n ? seen : 0], crc, seen < n ? crcs[seen] : 0,
                   m ? "equal" : "DIFFERENT");
            matched += m;
            seen++;
        } else if (!strncmp(line, "OK", 2)) {
            ok_line = true;
        } else {
            if (strstr(line, "No module named 'numpy'")) no_numpy = true;
            printf("  python: %s", line);
        }
    }
    int rc = pclose(p);
    if (no_numpy) {
        mf_test_fail("numpy is not installed for %s: numpy's reading of memfold's .npz cannot be "
                     "checked (install python3-numpy)",
                     PYTHON);
        return;
    }
    MF_TEST_TRUE(rc == 0 && ok_line && matched == n,
                 "numpy check failed (exit %d, %d of %d files matched)", rc, matched, n);
}

int main(void)
{
    char dir[] = "/tmp/mf_npz_XXXXXX";
    MF_TEST_TRUE(mkdtemp(dir) != NULL, "mkdtemp failed");
    char ref[4096];
    snprintf(ref, sizeof ref, "%s/testvectors/params_af2.npz", mf_test_shared_dir());

    /* 1. numpy-written fixtures. */
    check_fixture_arrays("good_compressed.npz");
    check_fixture_arrays("good_zip64.npz");
    check_fixture_arrays("good_versions.npz");

    /* 2. The reference parameter file, read -> written three ways -> read. */
    mf_npz orig;
    MF_TEST_OK(mf_npz_read(ref, &orig));
    int64_t numel = 0;
    bool all_f32 = true;
    for (int i = 0; i < orig.count; i++) {
        numel += mf_h5_array_numel(&orig.arrays[i]);
        all_f32 &= orig.arrays[i].dtype == MF_F32;
    }
    MF_TEST_TRUE(orig.count == 336 && numel == 121498 && all_f32,
                 "params_af2.npz: %d arrays, %lld values (expected 336 f32 arrays, 121498)",
                 orig.count, (long long)numel);
    printf("params_af2.npz: %d float32 arrays, %lld parameters\n", orig.count, (long long)numel);

    const char *variants[3] = {"stored.npz", "deflated.npz", "zip64.npz"};
    const mf_npz_write_options opts[3] = {{false, false}, {true, false}, {false, true}};
    char paths[4][4096];
    const char *path_ptrs[4];
    uint32_t crcs[4];
    for (int v = 0; v < 3; v++) {
        snprintf(paths[v], sizeof paths[v], "%s/%s", dir, variants[v]);
        path_ptrs[v] = paths[v];
        MF_TEST_OK(mf_npz_write_ex(paths[v], &orig, &opts[v]));
        mf_npz back;
        mf_status st = mf_npz_read(paths[v], &back);
        MF_TEST_TRUE(st == MF_OK, "%s: %s", variants[v], mf_last_error());
        if (st == MF_OK) {
            char what[128];
            snprintf(what, sizeof what, "params_af2.npz -> %s -> read", variants[v]);
            MF_TEST_TRUE(same_npz(&orig, &back, what), "%s round trip differs", variants[v]);
            crcs[v] = npz_crc(&back);
            mf_npz_free(&back);
        }
    }
    size_t ls, lz;
    free(read_bytes(paths[0], &ls));
    free(read_bytes(paths[1], &lz));
    MF_TEST_TRUE(lz < ls, "deflated archive (%zu bytes) not smaller than stored (%zu)", lz, ls);
    printf("archive sizes: stored %zu bytes, deflated %zu bytes\n", ls, lz);

    /* The fixture arrays written back (f64, i32, 0-d, empty, formerly Fortran-ordered). */
    char fx[4096];
    fixture(fx, sizeof fx, "good_compressed.npz");
    mf_npz small;
    MF_TEST_OK(mf_npz_read(fx, &small));
    snprintf(paths[3], sizeof paths[3], "%s/fixture_arrays.npz", dir);
    path_ptrs[3] = paths[3];
    MF_TEST_OK(mf_npz_write(paths[3], &small));
    crcs[3] = npz_crc(&small);
    mf_npz_free(&small);

    python_check(dir, ref, path_ptrs, crcs, 3);
    python_check(dir, fx, path_ptrs + 3, crcs + 3, 1);

    /* 3. Malformed archives. */
    printf("malformed archives:\n");
    expect_error("not_a_zip.npz", MF_ERR_FORMAT, "not a zip archive", NULL);
    expect_error("bad_crc.npz", MF_ERR_FORMAT, "CRC-32 mismatch", "bad_member");
    expect_error("method_bzip2.npz", MF_ERR_UNSUPPORTED, "compression method 12", "bad_member");
    expect_error("dtype_u1.npz", MF_ERR_UNSUPPORTED, "'|u1'", "bad_member");
    expect_error("dtype_f2.npz", MF_ERR_UNSUPPORTED, "'<f2'", "bad_member");
    expect_error("dtype_bigendian.npz", MF_ERR_UNSUPPORTED, "'>f4'", "bad_member");
    expect_error("dtype_complex.npz", MF_ERR_UNSUPPORTED, "'<c8'", "bad_member");
    expect_error("dtype_bool.npz", MF_ERR_UNSUPPORTED, "'|b1'", "bad_member");
    expect_error("dtype_object.npz", MF_ERR_UNSUPPORTED, "'|O'", "bad_member");
    expect_error("dtype_structured.npz", MF_ERR_UNSUPPORTED, "structured", "bad_member");
    expect_error("dtype_i64_overflow.npz", MF_ERR_UNSUPPORTED, "2147483648", "bad_member");
    expect_error("header_magic.npz", MF_ERR_FORMAT, "not a .npy array", "bad_member");
    expect_error("header_version.npz", MF_ERR_UNSUPPORTED, "version 4.0", "bad_member");
    expect_error("header_no_shape.npz", MF_ERR_FORMAT, "lacks 'shape'", "bad_member");
    expect_error("header_garbage.npz", MF_ERR_FORMAT, "malformed .npy header", "bad_member");
    expect_error("header_short_data.npz", MF_ERR_FORMAT, "needs 400 data bytes", "bad_member");
    expect_error("header_trailing_data.npz", MF_ERR_FORMAT, "4 bytes follow", "bad_member");
    char missing[4096];
    snprintf(missing, sizeof missing, "%s/absent.npz", dir);
    expect_error_path(missing, MF_ERR_IO, "cannot open", NULL);
    check_truncations(dir, ref);
    check_flipped_byte(dir);
    check_i8_round_trip(dir);
    check_write_errors(dir);
    mf_npz_free(&orig);

    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    MF_TEST_TRUE(system(cmd) == 0, "cannot remove %s", dir);
    return mf_test_finish("test_npz");
}
