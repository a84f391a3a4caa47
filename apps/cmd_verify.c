/* memfold verify DIR [--device cpu|cuda] [--module NAME] [--verbose]: checks every module vector
 * file in DIR against this build; one line per module, non-zero exit on any failure. */
#include <dirent.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "apps/commands.h"
#include "model/module_verify.h"

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void verify_usage(FILE *f)
{
    fprintf(f, "usage: memfold verify DIR [--device cpu|cuda] [--module NAME] [--verbose]\n"
               "  Runs every reference-vector module file (*.h5) in DIR through this build and\n"
               "  compares outputs and gradients with the files' metric (max|a-ref|/max|ref|).\n"
               "  A module this build does not implement counts as a failure.\n");
}

int mf_cmd_verify(int argc, char **argv)
{
    const char *dir = NULL, *only = NULL;
    mf_device device = MF_DEV_CPU;
    int verbose = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            verify_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--device") && i + 1 < argc) {
            const char *d = argv[++i];
            if (!strcmp(d, "cpu")) {
                device = MF_DEV_CPU;
            } else if (!strcmp(d, "cuda")) {
                device = MF_DEV_CUDA;
            } else {
                fprintf(stderr, "memfold verify: --device %s: expected cpu or cuda\n", d);
                return 2;
            }
        } else if (!strcmp(argv[i], "--module") && i + 1 < argc) {
            only = argv[++i];
        } else if (!strcmp(argv[i], "--verbose")) {
            verbose = 1;
        } else if (argv[i][0] != '-' && !dir) {
            dir = argv[i];
        } else {
            fprintf(stderr, "memfold verify: unexpected argument '%s'\n", argv[i]);
            verify_usage(stderr);
            return 2;
        }
    }
    if (!dir) {
        verify_usage(stderr);
        return 2;
    }
    if (device == MF_DEV_CUDA && !mf_cuda_available()) {
        fprintf(stderr, "memfold verify: --device cuda: no CUDA device available in this build\n");
        return 1;
    }
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "memfold verify: cannot open directory %s\n", dir);
        return 1;
    }
    char *files[256];
    int nf = 0;
    for (struct dirent *e; (e = readdir(d)) && nf < 256;) {
        size_t n = strlen(e->d_name);
        if (n > 3 && !strcmp(e->d_name + n - 3, ".h5")) files[nf++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(files, (size_t)nf, sizeof files[0], cmp_str);
    if (nf == 0) {
        fprintf(stderr, "memfold verify: no .h5 files in %s\n", dir);
        return 1;
    }

    mf_arena arena;
    mf_ctx ctx;
    if (mf_arena_init(&arena, device, (size_t)1 << 30, "verify") != MF_OK ||
        mf_ctx_init(&ctx, device, &arena) != MF_OK)
        return mf_report_error("verify");

    int failures = 0, checked = 0;
    printf("%-36s %-6s %-10s %-10s %-8s %s\n", "module", "items", "max err", "rel err", "tol",
           "result");
    for (int i = 0; i < nf; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        mf_module_vectors v;
        if (mf_module_vectors_load(path, &v) != MF_OK) {
            printf("%-36s %-6s %-10s %-10s %-8s FAIL (%s)\n", files[i], "-", "-", "-", "-",
                   mf_last_error());
            failures++;
            continue;
        }
        if (only && strcmp(only, v.module)) {
            mf_module_vectors_free(&v);
            continue;
        }
        checked++;
        mf_module_verifier run = mf_find_module_verifier(v.module);
        if (!run) {
            printf("%-36s %-6s %-10s %-10s %-8.0e FAIL (not implemented in this build)\n", v.module,
                   "-", "-", "-", v.rtol);
            failures++;
            mf_module_vectors_free(&v);
            continue;
        }
        static mf_verify_report rep;
        rep.count = 0;
        mf_arena_reset(&arena);
        mf_status st = run(&ctx, &v, &rep);
        double worst_rel = 0, worst_err = 0;
        for (int k = 0; k < rep.count; k++)
            if (rep.items[k].result.rel > worst_rel || rep.items[k].result.nan) {
                worst_rel = rep.items[k].result.nan ? INFINITY : rep.items[k].result.rel;
                worst_err = rep.items[k].result.max_err;
            }
        bool pass = st == MF_OK && mf_verify_report_pass(&rep);
        if (st != MF_OK)
            printf("%-36s %-6d %-10s %-10s %-8.0e FAIL (%s)\n", v.module, rep.count, "-", "-",
                   v.rtol, mf_last_error());
        else
            printf("%-36s %-6d %-10.3e %-10.3e %-8.0e %s\n", v.module, rep.count, worst_err,
                   worst_rel, v.rtol, pass ? "pass" : "FAIL");
        for (int k = 0; k < rep.count; k++) {
            const mf_compare_result *r = &rep.items[k].result;
            if (verbose || !r->pass)
                printf("    %-56s %s err %.3e / %s %.3e = %.3e  %s\n", rep.items[k].name,
                       r->absolute ? "abs" : "rel", r->max_err, r->absolute ? "scale" : "max|ref|",
                       r->max_ref, r->rel, r->pass ? "ok" : (r->nan ? "FAIL (NaN)" : "FAIL"));
        }
        failures += !pass;
        mf_module_vectors_free(&v);
    }
    for (int i = 0; i < nf; i++) free(files[i]);
    mf_ctx_destroy(&ctx);
    mf_arena_destroy(&arena);
    if (only && checked == 0) {
        fprintf(stderr, "memfold verify: no file in %s holds module '%s'\n", dir, only);
        return 1;
    }
    printf("%d modules checked, %d passed, %d failed\n", checked, checked - failures, failures);
    return failures ? 1 : 0;
}
