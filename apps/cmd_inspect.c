/* memfold inspect FILE.h5: what a memfold HDF5 file holds: its format and schema version, a
 * compact tree of groups and datasets (shapes, element types), a per-chain summary for feature
 * files and the parameter count for parameter files. */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "apps/commands.h"
#include "data/h5io.h"

#define TREE_LINES_DEFAULT 200

static void inspect_usage(FILE *f)
{
    fprintf(f,
            "usage: memfold inspect FILE.h5 [--full] [--check] [--any]\n"
            "  Summarizes a file memfold wrote (features, parameters, checkpoints, dumps):\n"
            "  format and schema version, the groups and datasets with shapes and element\n"
            "  types (sibling groups with the same datasets are shown once), a per-chain table\n"
            "  for feature files (length, MSA depth, resolution, templates) and the parameter\n"
            "  count for parameter files.\n"
            "  --full   print the whole tree, every group (default: the first %d lines)\n"
            "  --check  read every dataset, so checksum (fletcher32) errors are found\n"
            "  --any    also summarize HDF5 files that memfold did not write\n"
            "  Exit status 1 for a file that is not HDF5, is damaged, or (without --any) has no\n"
            "  memfold format attribute.\n",
            TREE_LINES_DEFAULT);
}

typedef struct {
    hid_t file;
    const char *path;
    int full, check;
    int64_t lines, hidden;
    int64_t datasets, elements, float_elements, bytes;
    int failed;
    char error[4200];
} inspect_ctx;

static void type_name(hid_t t, char *out, size_t cap)
{
    H5T_class_t c = H5Tget_class(t);
    size_t sz = H5Tget_size(t);
    if (c == H5T_FLOAT)
        snprintf(out, cap, "f%zu", 8 * sz);
    else if (c == H5T_INTEGER)
        snprintf(out, cap, "%s%zu", H5Tget_sign(t) == H5T_SGN_NONE ? "u" : "i", 8 * sz);
    else if (c == H5T_STRING)
        snprintf(out, cap, H5Tis_variable_str(t) > 0 ? "string" : "string[%zu]", sz);
    else
        snprintf(out, cap, "class%d", (int)c);
}

/* Shape and type of a dataset as "i32 [24, 37]"; numel/bytes out. Returns -1 if unreadable. */
static int describe_dataset(hid_t loc, const char *name, char *out, size_t cap, int64_t *numel,
                            int *is_float)
{
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) return -1;
    hid_t s = H5Dget_space(d), t = H5Dget_type(d);
    int nd = s >= 0 ? H5Sget_simple_extent_ndims(s) : -1;
    hsize_t dims[32];
    char tn[32];
    int rc = -1;
    if (nd >= 0 && nd <= 32 && t >= 0) {
        H5Sget_simple_extent_dims(s, dims, NULL);
        type_name(t, tn, sizeof tn);
        size_t k = (size_t)snprintf(out, cap, "%s [", tn);
        int64_t n = 1;
        for (int i = 0; i < nd && k < cap; i++) {
            k += (size_t)snprintf(out + k, cap - k, i ? ", %llu" : "%llu",
                                  (unsigned long long)dims[i]);
            n *= (int64_t)dims[i];
        }
        if (k < cap) snprintf(out + k, cap - k, "]");
        if (nd == 0) snprintf(out, cap, "%s scalar", tn);
        *numel = n;
        *is_float = H5Tget_class(t) == H5T_FLOAT;
        rc = 0;
    }
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    H5Dclose(d);
    return rc;
}

/* Reads a whole dataset (checksums are verified on read). */
static int read_whole(hid_t loc, const char *name)
{
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) return -1;
    hid_t t = H5Dget_type(d), s = H5Dget_space(d);
    hssize_t n = H5Sget_simple_extent_npoints(s);
    size_t sz = H5Tget_size(t);
    int rc = 0;
    if (H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) > 0) sz = sizeof(char *);
    void *buf = malloc((size_t)(n > 0 ? n : 1) * (sz ? sz : 1));
    if (!buf || (n > 0 && H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)) rc = -1;
    if (rc == 0 && n > 0 && H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) > 0)
        H5Dvlen_reclaim(t, s, H5P_DEFAULT, buf);
    free(buf);
    H5Sclose(s);
    H5Tclose(t);
    H5Dclose(d);
    return rc;
}

typedef struct {
    char **names;
    int n, cap;
} child_list;

static herr_t collect(hid_t g, const char *name, const H5L_info_t *info, void *ud)
{
    (void)g;
    (void)info;
    child_list *l = ud;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        char **nn = realloc(l->names, (size_t)cap * sizeof *nn);
        if (!nn) return -1;
        l->names = nn;
        l->cap = cap;
    }
    l->names[l->n] = strdup(name);
    return l->names[l->n] ? (l->n++, 0) : -1;
}

static void free_children(child_list *l)
{
    for (int i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
}

static int list_children(hid_t loc, const char *path, child_list *l)
{
    memset(l, 0, sizeof *l);
    hid_t g = H5Gopen2(loc, path, H5P_DEFAULT);
    if (g < 0) return -1;
    herr_t rc = H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, collect, l);
    H5Gclose(g);
    return rc < 0 ? -1 : 0;
}

static int is_group(hid_t loc, const char *path)
{
    hid_t o = H5Oopen(loc, path, H5P_DEFAULT);
    if (o < 0) return -1;
    H5I_type_t t = H5Iget_type(o);
    H5Oclose(o);
    return t == H5I_GROUP ? 1 : t == H5I_DATASET ? 0 : -1;
}

/* A group's datasets by name, element type and rank: siblings with the same signature are
 * printed once. */
static char *signature(hid_t loc, const char *path)
{
    child_list l;
    if (list_children(loc, path, &l)) return NULL;
    size_t cap = 64 + (size_t)l.n * 96, k = 0;
    char *s = malloc(cap);
    for (int i = 0; s && i < l.n; i++) {
        char p[2048], desc[256];
        if (snprintf(p, sizeof p, "%s/%s", path, l.names[i]) >= (int)sizeof p) continue;
        int64_t n;
        int fl;
        int g = is_group(loc, p);
        if (g != 0 || describe_dataset(loc, p, desc, sizeof desc, &n, &fl))
            snprintf(desc, sizeof desc, "group");
        char *br = strchr(desc, '[');
        int rank = 0;
        for (char *q = br; q && *q; q++) rank += *q == ',';
        if (br) rank++, *br = '\0';
        k += (size_t)snprintf(s + k, cap - k, "%s:%s:%d;", l.names[i], desc, rank);
    }
    free_children(&l);
    return s;
}

static void out_line(inspect_ctx *c, int depth, const char *fmt, const char *a, const char *b)
{
    if (!c->full && c->lines >= TREE_LINES_DEFAULT) {
        c->hidden++;
        return;
    }
    printf("%*s", 2 * depth, "");
    printf(fmt, a, b);
    printf("\n");
    c->lines++;
}

static void walk_tree(inspect_ctx *c, const char *path, int depth)
{
    child_list l;
    if (list_children(c->file, path, &l)) {
        c->failed = 1;
        snprintf(c->error, sizeof c->error, "group '%s' cannot be listed", path);
        return;
    }
    char *prev_sig = NULL, *first_like = NULL;
    int64_t like = 0;
    for (int i = 0; i < l.n && !c->failed; i++) {
        char p[2048];
        if (snprintf(p, sizeof p, "%s/%s", strcmp(path, "/") ? path : "", l.names[i]) >=
            (int)sizeof p) {
            c->failed = 1;
            snprintf(c->error, sizeof c->error, "object path longer than %zu bytes", sizeof p);
            break;
        }
        int g = is_group(c->file, p);
        if (g < 0) {
            c->failed = 1;
            snprintf(c->error, sizeof c->error, "'%s' cannot be opened", p);
            break;
        }
        if (g) {
            char *sig = signature(c->file, p);
            if (sig && prev_sig && !strcmp(sig, prev_sig) && !c->full) {
                like++;
                free(sig);
                /* Their datasets are still counted and, with --check, read. */
                int64_t saved_lines = c->lines, saved_hidden = c->hidden;
                int saved_full = c->full;
                c->full = 0;
                c->lines = TREE_LINES_DEFAULT;
                walk_tree(c, p, depth + 1);
                c->full = saved_full;
                c->lines = saved_lines;
                c->hidden = saved_hidden;
                continue;
            }
            if (like) {
                char n[32];
                snprintf(n, sizeof n, "%lld", (long long)like);
                out_line(c, depth, "... %s more groups with the same datasets as %s", n,
                         first_like);
                like = 0;
            }
            free(prev_sig);
            free(first_like);
            prev_sig = sig;
            first_like = strdup(l.names[i]);
            out_line(c, depth, "%s/%s", l.names[i], "");
            walk_tree(c, p, depth + 1);
        } else {
            char desc[256];
            int64_t n;
            int fl;
            if (describe_dataset(c->file, p, desc, sizeof desc, &n, &fl)) {
                c->failed = 1;
                snprintf(c->error, sizeof c->error, "dataset '%s' cannot be opened", p);
                break;
            }
            if (c->check && read_whole(c->file, p)) {
                c->failed = 1;
                snprintf(c->error, sizeof c->error,
                         "dataset '%s' cannot be read (corrupt data or checksum error)", p);
                break;
            }
            c->datasets++;
            c->elements += n;
            if (fl) c->float_elements += n;
            out_line(c, depth, "%-28s %s", l.names[i], desc);
        }
    }
    if (like && !c->failed) {
        char n[32];
        snprintf(n, sizeof n, "%lld", (long long)like);
        out_line(c, depth, "... %s more groups with the same datasets as %s", n, first_like);
    }
    free(prev_sig);
    free(first_like);
    free_children(&l);
}

/* Dims of dataset path (rank returned, -1 when absent). */
static int dims_of(hid_t f, const char *path, hsize_t *dims)
{
    if (!mf_h5_exists(f, path)) return -1;
    hid_t d = H5Dopen2(f, path, H5P_DEFAULT);
    if (d < 0) return -1;
    hid_t s = H5Dget_space(d);
    int nd = H5Sget_simple_extent_ndims(s);
    if (nd > 0 && nd <= 8) H5Sget_simple_extent_dims(s, dims, NULL);
    H5Sclose(s);
    H5Dclose(d);
    return nd;
}

static int feature_summary(hid_t f, const char *label)
{
    char **names;
    int n;
    if (mf_h5_list(f, "/", &names, &n) != MF_OK) return mf_report_error("inspect");
    printf("\n%-24s %7s %9s %10s %9s  %-10s %s\n", "chain", "length", "msa rows", "resolution",
           "templates", "released", "msa");
    int64_t total = 0, max_len = 0, with_msa = 0, with_templates = 0;
    int bad = 0;
    for (int i = 0; i < n && !bad; i++) {
        char p[1024];
        hsize_t dims[8];
        snprintf(p, sizeof p, "/%s/msa", names[i]);
        int r = dims_of(f, p, dims);
        int64_t S = r == 2 ? (int64_t)dims[0] : -1, N = r == 2 ? (int64_t)dims[1] : -1;
        snprintf(p, sizeof p, "/%s/aatype", names[i]);
        if (r != 2 || dims_of(f, p, dims) != 1 || (int64_t)dims[0] != N) {
            fprintf(stderr, "memfold inspect: %s: group %s lacks msa [S, N] / aatype [N]\n", label,
                    names[i]);
            bad = 1;
            break;
        }
        snprintf(p, sizeof p, "/%s/template_aatype", names[i]);
        int tr = dims_of(f, p, dims);
        char tcount[32];
        if (tr == 2)
            snprintf(tcount, sizeof tcount, "%llu", (unsigned long long)dims[0]);
        else
            snprintf(tcount, sizeof tcount, "-");
        if (tr == 2 && dims[0] > 0) with_templates++;
        mf_h5_array res;
        snprintf(p, sizeof p, "/%s/resolution", names[i]);
        double resolution = -1;
        if (mf_h5_read_array(f, label, p, MF_F32, &res) == MF_OK) {
            resolution = ((float *)res.data)[0];
            mf_h5_array_free(&res);
        }
        char *date = NULL, *src = NULL, gp[1024];
        snprintf(gp, sizeof gp, "/%s", names[i]);
        mf_h5_read_attr_string(f, gp, "release_date", &date);
        mf_h5_read_attr_string(f, gp, "msa_sources", &src);
        char res_s[32];
        if (resolution > 0)
            snprintf(res_s, sizeof res_s, "%.2f", resolution);
        else
            snprintf(res_s, sizeof res_s, "-");
        const char *kind = !src ? "?" : !strcmp(src, "single-sequence") ? "single" : "msa";
        printf("%-24s %7lld %9lld %10s %9s  %-10s %s\n", names[i], (long long)N, (long long)S,
               res_s, tcount, date && date[0] ? date : "-", kind);
        free(date);
        free(src);
        total += N;
        if (N > max_len) max_len = N;
        with_msa += S > 1;
    }
    if (!bad)
        printf("%d chains, %lld residues (mean %.1f, max %lld), %lld with more than one MSA "
               "row, %lld with templates\n",
               n, (long long)total, n ? (double)total / n : 0.0, (long long)max_len,
               (long long)with_msa, (long long)with_templates);
    mf_h5_free_names(names, n);
    return bad;
}

int mf_cmd_inspect(int argc, char **argv)
{
    const char *path = NULL;
    int full = 0, check = 0, any = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            inspect_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--full")) {
            full = 1;
        } else if (!strcmp(argv[i], "--check")) {
            check = 1;
        } else if (!strcmp(argv[i], "--any")) {
            any = 1;
        } else if (argv[i][0] != '-' && !path) {
            path = argv[i];
        } else {
            fprintf(stderr, "memfold inspect: unexpected argument '%s'\n", argv[i]);
            inspect_usage(stderr);
            return 2;
        }
    }
    if (!path) {
        inspect_usage(stderr);
        return 2;
    }
    hid_t f;
    if (mf_h5_open_read(path, &f) != MF_OK) return mf_report_error("inspect");
    char *format = NULL;
    double version = -1;
    int have_format = mf_h5_read_attr_string(f, "/", "format", &format) == MF_OK;
    int have_version = mf_h5_read_attr_double(f, "/", "schema_version", &version) == MF_OK;
    if (!any && (!have_format || strncmp(format, "memfold-", 8))) {
        if (have_format)
            fprintf(stderr,
                    "memfold inspect: %s: not a memfold file (format '%s'; use --any to "
                    "summarize it anyway)\n",
                    path, format);
        else
            fprintf(stderr,
                    "memfold inspect: %s: not a memfold file (HDF5 without a 'format' attribute "
                    "at the root; use --any to summarize it anyway)\n",
                    path);
        free(format);
        H5Fclose(f);
        return 1;
    }
    struct stat sb;
    printf("file            %s (%lld bytes)\n", path,
           stat(path, &sb) == 0 ? (long long)sb.st_size : -1LL);
    printf("format          %s\n", have_format ? format : "(none)");
    if (have_version)
        printf("schema_version  %g\n", version);
    else
        printf("schema_version  (none)\n");
    printf("\n/\n");
    inspect_ctx c = {.file = f, .path = path, .full = full, .check = check};
    walk_tree(&c, "/", 1);
    if (c.hidden) printf("  ... %lld more lines (--full shows them)\n", (long long)c.hidden);
    int rc = 0;
    if (c.failed) {
        fprintf(stderr, "memfold inspect: %s: %s\n", path, c.error);
        rc = 1;
    } else {
        printf("\n%lld datasets, %lld elements (%lld floating point)%s\n", (long long)c.datasets,
               (long long)c.elements, (long long)c.float_elements,
               check ? ", every dataset read and its checksum verified" : "");
        if (have_format && !strcmp(format, "memfold-params"))
            printf("parameters: %lld in %lld arrays\n", (long long)c.float_elements,
                   (long long)c.datasets);
        if (have_format && !strcmp(format, "memfold-features")) rc = feature_summary(f, path);
    }
    free(format);
    H5Fclose(f);
    return rc;
}
