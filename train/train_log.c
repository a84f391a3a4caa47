/* JSONL + CSV training log with resume truncation and a progress line (see train_log.h). */
#include "train/train_log.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

double mf_train_log_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Column names are written unquoted in both files: letters, digits, '_', '.', '-'. */
static bool plain_name(const char *s)
{
    if (!s || !*s) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '.' || *s == '-'))
            return false;
    return true;
}

/* The step of a record line: JSON lines start with {"step":N, CSV rows with N. */
static bool line_step(const char *line, bool csv, int64_t *step)
{
    const char *p = line;
    if (!csv) {
        static const char k_prefix[] = "{\"step\":";
        if (strncmp(p, k_prefix, sizeof k_prefix - 1) != 0) return false;
        p += sizeof k_prefix - 1;
    }
    if (*p < '0' || *p > '9') return false;
    char *end;
    errno = 0;
    long long v = strtoll(p, &end, 10);
    if (errno || end == p || *end != ',') return false;
    *step = v;
    return true;
}

mf_status mf_train_log_truncate_file(const char *path, int64_t resume_step, bool csv)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT) return MF_OK;
        return MF_ERROR(MF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long keep = 0, off = 0;
    int index = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] != '\n') break; /* torn last line of a killed run */
        int64_t step;
        bool is_record = line_step(line, csv, &step);
        if (is_record ? step > resume_step : !(csv && index == 0)) break;
        off += (long)n;
        keep = off;
        index++;
    }
    free(line);
    bool read_error = ferror(f);
    fclose(f);
    if (read_error) return MF_ERROR(MF_ERR_IO, "%s: read error", path);
    if (truncate(path, keep) != 0)
        return MF_ERROR(MF_ERR_IO, "%s: cannot truncate to %ld bytes: %s", path, keep,
                        strerror(errno));
    return MF_OK;
}

static mf_status open_one(const char *dir, const char *name, int64_t resume_step, bool csv,
                          FILE **out, bool *empty)
{
    char path[4096];
    int k = snprintf(path, sizeof path, "%s/%s", dir, name);
    if (k < 0 || (size_t)k >= sizeof path) return MF_ERROR(MF_ERR_INVALID, "log path too long");
    if (resume_step >= 0) MF_TRY(mf_train_log_truncate_file(path, resume_step, csv));
    *out = fopen(path, resume_step >= 0 ? "a" : "w");
    if (!*out) return MF_ERROR(MF_ERR_IO, "%s: cannot open for writing: %s", path, strerror(errno));
    struct stat sb;
    *empty = fstat(fileno(*out), &sb) != 0 || sb.st_size == 0;
    return MF_OK;
}

mf_status mf_train_log_open(mf_train_log *log, const char *run_dir, const char *const *term_names,
                            int num_terms, int64_t resume_step, int64_t total_steps)
{
    memset(log, 0, sizeof *log);
    MF_REQUIRE(run_dir, "mf_train_log_open: NULL directory");
    MF_REQUIRE(num_terms >= 0 && num_terms <= MF_TRAIN_LOG_MAX_TERMS,
               "train log: %d loss terms (at most %d)", num_terms, MF_TRAIN_LOG_MAX_TERMS);
    for (int i = 0; i < num_terms; i++) {
        MF_REQUIRE(plain_name(term_names[i]),
                   "train log: loss term name '%s' (letters, digits, '_', '.', '-')",
                   term_names[i] ? term_names[i] : "(null)");
        log->term_names[i] = strdup(term_names[i]);
        if (!log->term_names[i]) {
            mf_train_log_close(log);
            return MF_ERROR(MF_ERR_NOMEM, "train log: no memory");
        }
        log->num_terms = i + 1;
    }
    bool empty_json, empty_csv;
    mf_status st = open_one(run_dir, "log.jsonl", resume_step, false, &log->jsonl, &empty_json);
    if (st == MF_OK) st = open_one(run_dir, "log.csv", resume_step, true, &log->csv, &empty_csv);
    if (st != MF_OK) {
        mf_train_log_close(log);
        return st;
    }
    if (empty_csv) {
        fprintf(log->csv, "step,loss");
        for (int i = 0; i < log->num_terms; i++) fprintf(log->csv, ",%s", log->term_names[i]);
        fprintf(log->csv, ",lr,grad_norm,clip_scale,skipped,optimizer_step,skipped_steps,"
                          "arena_peak_bytes,step_time_s,samples_per_s\n");
        if (fflush(log->csv) != 0) {
            mf_train_log_close(log);
            return MF_ERROR(MF_ERR_IO, "%s/log.csv: cannot write", run_dir);
        }
    }
    log->total_steps = total_steps;
    log->first_step = -1;
    log->start_time = mf_train_log_now();
    log->tty = isatty(fileno(stderr));
    return MF_OK;
}

static void json_num(FILE *f, const char *key, double v)
{
    if (isfinite(v))
        fprintf(f, ",\"%s\":%.17g", key, v);
    else
        fprintf(f, ",\"%s\":null", key);
}

static void csv_num(FILE *f, double v)
{
    if (isnan(v))
        fputs(",nan", f);
    else if (isinf(v))
        fputs(v > 0 ? ",inf" : ",-inf", f);
    else
        fprintf(f, ",%.17g", v);
}

mf_status mf_train_log_write(mf_train_log *log, const mf_train_log_record *r)
{
    MF_REQUIRE(log && log->jsonl && log->csv && r, "mf_train_log_write: log not open");
    if (log->first_step < 0) log->first_step = r->step;
    FILE *j = log->jsonl, *c = log->csv;
    fprintf(j, "{\"step\":%" PRId64, r->step);
    json_num(j, "loss", r->loss);
    for (int i = 0; i < log->num_terms; i++) json_num(j, log->term_names[i], r->terms[i]);
    json_num(j, "lr", r->lr);
    json_num(j, "grad_norm", r->grad_norm);
    json_num(j, "clip_scale", r->clip_scale);
    fprintf(j,
            ",\"skipped\":%s,\"optimizer_step\":%" PRId64 ",\"skipped_steps\":%" PRId64
            ",\"arena_peak_bytes\":%zu,\"wall\":{",
            r->skipped ? "true" : "false", r->optimizer_step, r->skipped_steps,
            r->arena_peak_bytes);
    /* the first key of "wall" has no leading comma */
    if (isfinite(r->step_time_s))
        fprintf(j, "\"step_time_s\":%.17g", r->step_time_s);
    else
        fputs("\"step_time_s\":null", j);
    json_num(j, "samples_per_s", r->samples_per_s);
    fputs("}}\n", j);

    fprintf(c, "%" PRId64, r->step);
    csv_num(c, r->loss);
    for (int i = 0; i < log->num_terms; i++) csv_num(c, r->terms[i]);
    csv_num(c, r->lr);
    csv_num(c, r->grad_norm);
    csv_num(c, r->clip_scale);
    fprintf(c, ",%d,%" PRId64 ",%" PRId64 ",%zu", r->skipped ? 1 : 0, r->optimizer_step,
            r->skipped_steps, r->arena_peak_bytes);
    csv_num(c, r->step_time_s);
    csv_num(c, r->samples_per_s);
    fputc('\n', c);

    if (fflush(j) != 0 || ferror(j)) return MF_ERROR(MF_ERR_IO, "log.jsonl: write failed");
    if (fflush(c) != 0 || ferror(c)) return MF_ERROR(MF_ERR_IO, "log.csv: write failed");
    return MF_OK;
}

static void format_duration(double s, char *buf, size_t cap)
{
    if (!isfinite(s) || s < 0) {
        snprintf(buf, cap, "?");
        return;
    }
    long long t = (long long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, cap, "%lldh%02lldm", t / 3600, (t / 60) % 60);
    else if (t >= 60)
        snprintf(buf, cap, "%lldm%02llds", t / 60, t % 60);
    else
        snprintf(buf, cap, "%llds", t);
}

void mf_train_log_progress(mf_train_log *log, const mf_train_log_record *r)
{
    if (log->first_step < 0) log->first_step = r->step;
    const double elapsed = mf_train_log_now() - log->start_time;
    const int64_t done = r->step - log->first_step + 1;
    const double per_step = done > 0 ? elapsed / (double)done : NAN;
    char total[32] = "", eta[32] = "?";
    if (log->total_steps > 0) {
        snprintf(total, sizeof total, "/%" PRId64, log->total_steps);
        format_duration(per_step * (double)(log->total_steps - r->step), eta, sizeof eta);
    }
    fprintf(stderr,
            "%sstep %" PRId64 "%s loss %.4f lr %.2e |g| %.3g%s | %.2f s/step %.2f samples/s | "
            "ETA %s%s",
            log->tty ? "\r" : "", r->step, total, r->loss, r->lr, r->grad_norm,
            r->skipped ? " SKIPPED" : "", r->step_time_s, r->samples_per_s, eta,
            log->tty ? "\033[K" : "\n");
    fflush(stderr);
}

mf_status mf_train_log_close(mf_train_log *log)
{
    mf_status st = MF_OK;
    if (log->jsonl && fclose(log->jsonl) != 0) st = MF_ERROR(MF_ERR_IO, "log.jsonl: close failed");
    if (log->csv && fclose(log->csv) != 0) st = MF_ERROR(MF_ERR_IO, "log.csv: close failed");
    if (log->tty && log->first_step >= 0) fputc('\n', stderr);
    for (int i = 0; i < log->num_terms; i++) free(log->term_names[i]);
    memset(log, 0, sizeof *log);
    return st;
}
