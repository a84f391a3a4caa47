/* jackhmmer as an MSA source (see jackhmmer.h). */
#include "data/jackhmmer.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

extern char **environ;

mf_status mf_jackhmmer_find(const mf_jackhmmer_options *opts, char *path, size_t cap)
{
    const char *bin = opts && opts->binary ? opts->binary : "jackhmmer";
    if (strchr(bin, '/')) {
        if (access(bin, X_OK) == 0) {
            snprintf(path, cap, "%s", bin);
            return MF_OK;
        }
        return MF_ERROR(MF_ERR_UNSUPPORTED,
                        "jackhmmer: %s is not an executable file (jackhmmer comes with the Debian "
                        "package 'hmmer': apt-get install hmmer)",
                        bin);
    }
    const char *env = getenv("PATH");
    const char *p = env && *env ? env : "/usr/bin:/bin";
    while (*p) {
        size_t n = strcspn(p, ":");
        char cand[4096];
        snprintf(cand, sizeof cand, "%.*s/%s", (int)(n ? n : 1), n ? p : ".", bin);
        struct stat sb;
        if (stat(cand, &sb) == 0 && S_ISREG(sb.st_mode) && access(cand, X_OK) == 0) {
            snprintf(path, cap, "%s", cand);
            return MF_OK;
        }
        p += n + (p[n] == ':');
    }
    return MF_ERROR(MF_ERR_UNSUPPORTED,
                    "jackhmmer: '%s' not found in PATH (it comes with the Debian package 'hmmer': "
                    "apt-get install hmmer)",
                    bin);
}

/* jackhmmer must rewind its target database, which it cannot do through gzip: a .gz database is
 * decompressed into the work directory. */
static mf_status gunzip_to(const char *src, const char *dst)
{
    gzFile in = gzopen(src, "rb");
    if (!in) return MF_ERROR(MF_ERR_IO, "%s: cannot open: %s", src, strerror(errno));
    FILE *out = fopen(dst, "wb");
    if (!out) {
        gzclose(in);
        return MF_ERROR(MF_ERR_IO, "%s: cannot create: %s", dst, strerror(errno));
    }
    static const size_t chunk = 1 << 16;
    char *buf = malloc(chunk);
    mf_status st = buf ? MF_OK : MF_ERROR(MF_ERR_NOMEM, "decompressing %s", src);
    while (st == MF_OK) {
        int got = gzread(in, buf, (unsigned)chunk);
        if (got < 0) {
            int e;
            const char *m = gzerror(in, &e);
            st = MF_ERROR(MF_ERR_FORMAT, "%s: corrupt gzip data: %s", src, m ? m : "?");
        } else if (got == 0) {
            break;
        } else if (fwrite(buf, 1, (size_t)got, out) != (size_t)got) {
            st = MF_ERROR(MF_ERR_IO, "%s: write failed: %s", dst, strerror(errno));
        }
    }
    free(buf);
    gzclose(in);
    if (fclose(out) != 0 && st == MF_OK)
        st = MF_ERROR(MF_ERR_IO, "%s: write failed: %s", dst, strerror(errno));
    return st;
}

/* The last `keep` bytes of a small text file (jackhmmer's stderr), for messages. */
static void tail_of(const char *path, char *out, size_t cap)
{
    out[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    long from = n > (long)cap - 1 ? n - (long)cap + 1 : 0;
    fseek(f, from, SEEK_SET);
    size_t got = fread(out, 1, cap - 1, f);
    out[got] = '\0';
    fclose(f);
    for (size_t i = 0; i < got; i++)
        if (out[i] == '\n') out[i] = ' ';
}

static mf_status run_jackhmmer(const char *bin, const mf_jackhmmer_options *opts, const char *dir,
                               const char *db, const char *query_path, const char *sto_path)
{
    char err_path[4200], cpu[32];
    snprintf(err_path, sizeof err_path, "%s/stderr.txt", dir);
    snprintf(cpu, sizeof cpu, "%d", opts->cpu);
    /* AF2 data/tools/jackhmmer.py: n_iter 1, e_value 1e-4, F1/F2/F3 5e-4/5e-5/5e-7. */
    char *argv[32];
    int a = 0;
    argv[a++] = (char *)bin;
    argv[a++] = "-o";
    argv[a++] = "/dev/null";
    argv[a++] = "-A";
    argv[a++] = (char *)sto_path;
    argv[a++] = "--noali";
    argv[a++] = "--F1";
    argv[a++] = "0.0005";
    argv[a++] = "--F2";
    argv[a++] = "0.00005";
    argv[a++] = "--F3";
    argv[a++] = "0.0000005";
    argv[a++] = "--incE";
    argv[a++] = "0.0001";
    argv[a++] = "-E";
    argv[a++] = "0.0001";
    if (opts->cpu > 0) {
        argv[a++] = "--cpu";
        argv[a++] = cpu;
    }
    argv[a++] = "-N";
    argv[a++] = "1";
    argv[a++] = (char *)query_path;
    argv[a++] = (char *)db;
    argv[a] = NULL;

    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0)
        return MF_ERROR(MF_ERR_NOMEM, "jackhmmer: posix_spawn_file_actions_init failed");
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t pid;
    int rc = posix_spawn(&pid, bin, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return MF_ERROR(MF_ERR_BACKEND, "jackhmmer: cannot start %s: %s", bin, strerror(rc));
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return MF_ERROR(MF_ERR_BACKEND, "jackhmmer: waitpid: %s", strerror(errno));
    mf_status st = MF_OK;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char tail[512];
        tail_of(err_path, tail, sizeof tail);
        if (WIFSIGNALED(status))
            st = MF_ERROR(MF_ERR_BACKEND, "jackhmmer (%s) killed by signal %d: %s", db,
                          WTERMSIG(status), tail);
        else
            st = MF_ERROR(MF_ERR_BACKEND, "jackhmmer (%s) exited with status %d: %s", db,
                          WEXITSTATUS(status), tail);
    }
    unlink(err_path);
    return st;
}

mf_status mf_jackhmmer_search(const mf_jackhmmer_options *opts, const char *query,
                              const char *query_name, mf_msa *out)
{
    MF_REQUIRE(opts && opts->database && query && out, "mf_jackhmmer_search: NULL argument");
    memset(out, 0, sizeof *out);
    MF_REQUIRE(query[0], "mf_jackhmmer_search: empty query");
    char bin[4096];
    MF_TRY(mf_jackhmmer_find(opts, bin, sizeof bin));
    if (access(opts->database, R_OK) != 0)
        return MF_ERROR(MF_ERR_IO, "jackhmmer database %s: cannot read: %s", opts->database,
                        strerror(errno));

    const char *tmp = getenv("TMPDIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/memfold-jackhmmer-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir))
        return MF_ERROR(MF_ERR_IO, "jackhmmer: cannot create %s: %s", dir, strerror(errno));
    char qpath[4200], sto[4200], dbcopy[4200];
    snprintf(qpath, sizeof qpath, "%s/query.fasta", dir);
    snprintf(sto, sizeof sto, "%s/hits.sto", dir);
    snprintf(dbcopy, sizeof dbcopy, "%s/database.fasta", dir);
    const char *db = opts->database;
    mf_status st = MF_OK;

    FILE *f = fopen(qpath, "w");
    if (!f) {
        st = MF_ERROR(MF_ERR_IO, "%s: cannot create: %s", qpath, strerror(errno));
        goto cleanup;
    }
    /* jackhmmer names the query by the first word of the header. */
    char name[64];
    snprintf(name, sizeof name, "%s", query_name && *query_name ? query_name : "query");
    for (char *p = name; *p; p++)
        if (*p == ' ' || *p == '\t') *p = '_';
    int ok = fprintf(f, ">%s\n%s\n", name, query) > 0;
    if (fclose(f) != 0 || !ok) {
        st = MF_ERROR(MF_ERR_IO, "%s: write failed", qpath);
        goto cleanup;
    }
    size_t dl = strlen(db);
    if (dl > 3 && !strcasecmp(db + dl - 3, ".gz")) {
        MF_TRY_GOTO(gunzip_to(db, dbcopy));
        db = dbcopy;
    }
    MF_TRY_GOTO(run_jackhmmer(bin, opts, dir, db, qpath, sto));
    int64_t max = opts->max_sequences > 0 ? opts->max_sequences : MF_JACKHMMER_MAX_SEQUENCES;
    st = mf_msa_read(sto, MF_MSA_STOCKHOLM, max, out);
    if (st != MF_OK) {
        mf_error_context(st, "jackhmmer output for %s against %s", name, opts->database);
        goto cleanup;
    }
    st = mf_msa_check_query(out, query);
    if (st != MF_OK) {
        mf_error_context(st, "jackhmmer output for %s against %s", name, opts->database);
        mf_msa_free(out);
        goto cleanup;
    }
    /* The rows point at a file that is about to go: name the database instead. */
    char *src = malloc(strlen(opts->database) + 32);
    if (src) {
        sprintf(src, "jackhmmer:%s", opts->database);
        free(out->source);
        out->source = src;
    }
cleanup:
    unlink(qpath);
    unlink(sto);
    unlink(dbcopy);
    if (rmdir(dir) != 0 && st == MF_OK)
        st = MF_ERROR(MF_ERR_IO, "jackhmmer: cannot remove work directory %s: %s", dir,
                      strerror(errno));
    if (st != MF_OK) mf_msa_free(out);
    return st;
}
