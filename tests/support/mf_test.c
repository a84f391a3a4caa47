#include "tests/support/mf_test.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static int g_failures, g_checks, g_check_failures;

void mf_test_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stdout, "FAIL: ");
    vfprintf(stdout, fmt, ap);
    fprintf(stdout, "\n");
    va_end(ap);
    fflush(stdout);
    g_failures++;
}

void mf_test_count(bool ok)
{
    g_checks++;
    if (!ok) g_check_failures++;
}

int mf_test_failures(void)
{
    return g_failures;
}

int mf_test_finish(const char *test_name)
{
    printf("%s: %d passed, %d failed\n", test_name, g_checks - g_check_failures, g_failures);
    return g_failures ? 1 : 0;
}

int mf_test_skip(const char *why)
{
    printf("SKIP: %s\n", why);
    return MF_TEST_SKIP;
}

/* One report line per comparison. ref_at(i) is the reference as double. */
typedef double (*mf_getter)(const void *p, int64_t i);
static double get_f32(const void *p, int64_t i)
{
    return ((const float *)p)[i];
}
static double get_f64(const void *p, int64_t i)
{
    return ((const double *)p)[i];
}

static bool check_close(const char *name, const void *a, mf_getter ga, const void *ref,
                        mf_getter gr, int64_t n, double atol, double rtol)
{
    double max_abs = 0, max_rel = 0;
    int64_t bad = 0, first_bad = -1;
    for (int64_t i = 0; i < n; i++) {
        double x = ga(a, i), y = gr(ref, i), d = fabs(x - y);
        if (!(d <= atol + rtol * fabs(y))) {
            if (first_bad < 0) first_bad = i;
            bad++;
        }
        if (!(d <= max_abs)) max_abs = d; /* NaN propagates into the report */
        double rel = d / (fabs(y) > 1e-30 ? fabs(y) : 1e-30);
        if (fabs(y) > atol && !(rel <= max_rel)) max_rel = rel;
    }
    g_checks++;
    printf("  %-48s n=%-8lld max_abs=%.3e max_rel=%.3e  tol: atol=%.0e rtol=%.0e  %s\n", name,
           (long long)n, max_abs, max_rel, atol, rtol, bad ? "FAIL" : "ok");
    if (bad) {
        g_check_failures++;
        mf_test_fail("%s: %lld of %lld elements out of tolerance; first at %lld: %.9g vs ref %.9g",
                     name, (long long)bad, (long long)n, (long long)first_bad, ga(a, first_bad),
                     gr(ref, first_bad));
    }
    return bad == 0;
}

bool mf_check_close_f32(const char *name, const float *a, const float *ref, int64_t n, double atol,
                        double rtol)
{
    return check_close(name, a, get_f32, ref, get_f32, n, atol, rtol);
}

bool mf_check_close_f64(const char *name, const double *a, const double *ref, int64_t n,
                        double atol, double rtol)
{
    return check_close(name, a, get_f64, ref, get_f64, n, atol, rtol);
}

bool mf_check_close_f32_f64(const char *name, const float *a, const double *ref, int64_t n,
                            double atol, double rtol)
{
    return check_close(name, a, get_f32, ref, get_f64, n, atol, rtol);
}

bool mf_check_maxrel_f32(const char *name, const float *a, const float *ref, int64_t n, double rtol)
{
    double max_diff = 0, max_ref = 0;
    bool nan = false;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)ref[i]);
        if (isnan(d)) nan = true;
        if (d > max_diff) max_diff = d;
        if (fabs((double)ref[i]) > max_ref) max_ref = fabs((double)ref[i]);
    }
    double rel = max_ref > 0 ? max_diff / max_ref : max_diff;
    bool ok = !nan && rel <= rtol;
    g_checks++;
    printf("  %-48s n=%-8lld max|a-ref|/max|ref|=%.3e  tol=%.0e  %s\n", name, (long long)n, rel,
           rtol, ok ? "ok" : (nan ? "FAIL (NaN)" : "FAIL"));
    if (!ok) g_check_failures++;
    if (!ok) mf_test_fail("%s: relative error %.3e > %.0e%s", name, rel, rtol, nan ? " (NaN)" : "");
    return ok;
}

bool mf_check_bitwise_f32(const char *name, const float *a, const float *ref, int64_t n)
{
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&a[i], &ref[i], sizeof(float)) != 0) {
            if (first < 0) first = i;
            bad++;
        }
    g_checks++;
    printf("  %-48s n=%-8lld bitwise  %s\n", name, (long long)n, bad ? "FAIL" : "ok");
    if (bad) g_check_failures++;
    if (bad)
        mf_test_fail("%s: %lld elements differ bitwise; first at %lld: %.9g vs %.9g", name,
                     (long long)bad, (long long)first, a[first], ref[first]);
    return bad == 0;
}

void mf_test_fill_normal_f32(float *x, int64_t n, uint64_t seed, float stddev)
{
    for (int64_t i = 0; i < n; i++) x[i] = stddev * mf_rng_normal(seed, 0x7e57, (uint64_t)i);
}

void mf_test_fill_normal_f64(double *x, int64_t n, uint64_t seed, double stddev)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = stddev * (double)mf_rng_normal(seed, 0x7e57, (uint64_t)i);
}

void mf_test_fill_mask_f64(double *x, int64_t rows, int64_t row, uint64_t seed, double p_one)
{
    for (int64_t r = 0; r < rows; r++) {
        int any = 0;
        for (int64_t c = 0; c < row; c++) {
            double u = mf_rng_uniform(seed, 0x3a5c, (uint64_t)(r * row + c));
            x[r * row + c] = u < p_one ? 1.0 : 0.0;
            any |= u < p_one;
        }
        if (!any && row > 0) x[r * row + (r % row)] = 1.0;
    }
}

void mf_f64_to_f32(float *dst, const double *src, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dst[i] = (float)src[i];
}

void mf_f32_to_f64(double *dst, const float *src, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dst[i] = src[i];
}

static double gc_loss(void (*fwd)(void *), void *ud, const mf_gc_array *outputs,
                      const double *const *gout, int n_outputs)
{
    fwd(ud);
    double L = 0;
    for (int o = 0; o < n_outputs; o++)
        for (int64_t i = 0; i < outputs[o].n; i++) L += gout[o][i] * outputs[o].data[i];
    return L;
}

bool mf_gradcheck(const char *what, void (*fwd)(void *ud), void *ud, const mf_gc_array *inputs,
                  const double *const *grads, int n_inputs, const mf_gc_array *outputs,
                  const double *const *gout, int n_outputs, double h, double atol, double rtol,
                  int64_t max_per_input)
{
    bool all_ok = true;
    for (int a = 0; a < n_inputs; a++) {
        const mf_gc_array *in = &inputs[a];
        int64_t count = in->n;
        if (max_per_input > 0 && count > max_per_input) count = max_per_input;
        double *fd = malloc(sizeof(double) * (size_t)count);
        double *an = malloc(sizeof(double) * (size_t)count);
        for (int64_t s = 0; s < count; s++) {
            int64_t i =
                count == in->n
                    ? s
                    : (int64_t)(mf_rng_u32(0x6c, (uint64_t)a, (uint64_t)s) % (uint64_t)in->n);
            double saved = in->data[i];
            in->data[i] = saved + h;
            double lp = gc_loss(fwd, ud, outputs, gout, n_outputs);
            in->data[i] = saved - h;
            double lm = gc_loss(fwd, ud, outputs, gout, n_outputs);
            in->data[i] = saved;
            fd[s] = (lp - lm) / (2 * h);
            an[s] = grads[a][i];
        }
        char label[160];
        snprintf(label, sizeof label, "%s d%s (finite diff, %lld of %lld)", what, in->name,
                 (long long)count, (long long)in->n);
        all_ok &= mf_check_close_f64(label, an, fd, count, atol, rtol);
        free(fd);
        free(an);
    }
    fwd(ud); /* leave outputs as at the unperturbed point */
    return all_ok;
}

mf_status mf_test_ctx_cpu(mf_ctx *ctx, mf_arena *arena, size_t bytes)
{
    MF_TRY(mf_arena_init(arena, MF_DEV_CPU, bytes, "test"));
    return mf_ctx_init(ctx, MF_DEV_CPU, arena);
}

char *mf_test_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    const long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s) s[fread(s, 1, (size_t)n, f)] = '\0';
    fclose(f);
    return s;
}

mf_status mf_test_ctx_cuda(mf_ctx *ctx, mf_arena *arena, size_t bytes)
{
    return mf_ctx_init_cuda(ctx, arena, bytes);
}

void mf_test_ctx_free(mf_ctx *ctx, mf_arena *arena)
{
    mf_ctx_destroy(ctx);
    mf_arena_destroy(arena);
}

const char *mf_test_shared_dir(void)
{
    const char *s = getenv("MEMFOLD_SHARED");
    return s && *s ? s : "../shared";
}

double mf_test_scale(void)
{
    const char *s = getenv("MEMFOLD_TEST_SCALE");
    double v = s ? atof(s) : 1.0;
    return v > 0 ? v : 1.0;
}
