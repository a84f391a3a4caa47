/* FASTA parser: every file under shared data/fasta and data/seqdb parses (or is rejected for a
 * listed reason) with the record counts and lengths of manifest.tsv; hand-checked records; the
 * malformed inputs in tests/data give errors naming file, line and field. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/fasta.h"
#include "tests/support/mf_test.h"

static int n_checks;

static void expect(int cond, const char *fmt, const char *what)
{
    ++n_checks;
    MF_TEST_TRUE(cond, fmt, what);
}

/* ---- listing a folder tree, sorted ---- */

typedef struct {
    char **paths;
    int n, cap;
} path_list;

static void list_push(path_list *l, const char *p)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        char **np = realloc(l->paths, (size_t)l->cap * sizeof *np);
        if (!np) {
            mf_test_fail("out of memory listing files");
            return;
        }
        l->paths = np;
    }
    l->paths[l->n++] = strdup(p);
}

static void walk(const char *dir, path_list *l)
{
    DIR *d = opendir(dir);
    if (!d) {
        mf_test_fail("cannot open folder %s", dir);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) != 0) continue;
        if (S_ISDIR(st.st_mode))
            walk(p, l);
        else if (S_ISREG(st.st_mode))
            list_push(l, p);
    }
    closedir(d);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* ---- manifest: path -> length column ---- */

typedef struct {
    char path[512];
    long length;
} manifest_row;

static int read_manifest(const char *shared, manifest_row *rows, int max)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/data/manifest.tsv", shared);
    FILE *f = fopen(p, "r");
    if (!f) {
        mf_test_fail("cannot open %s", p);
        return 0;
    }
    char line[8192];
    int n = 0;
    while (fgets(line, sizeof line, f) && n < max) {
        char *cols[8] = {0};
        int k = 0;
        for (char *s = line; k < 8;) {
            cols[k++] = s;
            char *t = strchr(s, '\t');
            if (!t) break;
            *t = '\0';
            s = t + 1;
        }
        if (k < 6 || !strcmp(cols[0], "path")) continue;
        snprintf(rows[n].path, sizeof rows[n].path, "%s", cols[0]);
        rows[n].length = cols[5][0] ? atol(cols[5]) : -1;
        ++n;
    }
    fclose(f);
    return n;
}

/* Files the strict parser rejects, with the reason it must give; each must then parse with
 * MF_FASTA_UNKNOWN_TO_X. */
static const struct {
    const char *suffix, *reason;
} strict_rejections[] = {
    {"seqdb/mmseqs2_examples_DB.fasta.gz", "unknown residue letter"},
};

static void test_shared_files(void)
{
    const char *shared = mf_test_shared_dir();
    static manifest_row man[1024];
    int n_man = read_manifest(shared, man, 1024);
    path_list l = {0};
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/data/fasta", shared);
    walk(dir, &l);
    snprintf(dir, sizeof dir, "%s/data/seqdb", shared);
    walk(dir, &l);
    qsort(l.paths, (size_t)l.n, sizeof *l.paths, cmp_str);
    int parsed = 0, rejected = 0, matched_manifest = 0;
    int64_t total_records = 0, total_residues = 0;
    size_t prefix = strlen(shared) + strlen("/data/");
    for (int i = 0; i < l.n; ++i) {
        const char *p = l.paths[i];
        const char *rel = p + prefix;
        const char *reason = NULL;
        for (size_t k = 0; k < sizeof strict_rejections / sizeof strict_rejections[0]; ++k)
            if (!strcmp(rel, strict_rejections[k].suffix)) reason = strict_rejections[k].reason;
        mf_fasta f;
        mf_status st = mf_fasta_read(p, 0, &f);
        unsigned flags = 0;
        if (reason) {
            ++n_checks;
            MF_TEST_TRUE(st == MF_ERR_FORMAT && strstr(mf_last_error(), reason) &&
                             strstr(mf_last_error(), "mmseqs2_examples_DB.fasta.gz:"),
                         "%s: expected strict rejection '%s', got %s: %s", rel, reason,
                         mf_status_name(st), st ? mf_last_error() : "parsed");
            if (st == MF_OK) mf_fasta_free(&f);
            printf("  rejected (expected, strict): %s: %s\n", rel, mf_last_error());
            ++rejected;
            flags = MF_FASTA_UNKNOWN_TO_X;
            st = mf_fasta_read(p, flags, &f);
        }
        ++n_checks;
        if (st != MF_OK) {
            mf_test_fail("%s: not parsed: %s", rel, mf_last_error());
            continue;
        }
        ++parsed;
        total_records += f.num_records;
        for (int64_t r = 0; r < f.num_records; ++r) {
            total_residues += f.records[r].length;
            ++n_checks;
            MF_TEST_TRUE((int64_t)strlen(f.records[r].sequence) == f.records[r].length &&
                             strspn(f.records[r].sequence, "ARNDCQEGHILKMFPSTWYVX") ==
                                 (size_t)f.records[r].length,
                         "%s: record %lld sequence not in the residue alphabet", rel, (long long)r);
        }
        for (int m = 0; m < n_man; ++m) {
            if (strcmp(man[m].path, rel) != 0 || man[m].length < 0) continue;
            /* length column: residues of a single-record file, else number of records */
            long got = f.num_records == 1 ? (long)f.records[0].length : (long)f.num_records;
            ++n_checks;
            MF_TEST_TRUE(got == man[m].length, "%s: manifest length %ld, parsed %ld", rel,
                         man[m].length, got);
            ++matched_manifest;
        }
        mf_fasta_free(&f);
    }
    printf("shared FASTA: %d files, %d parsed, %d strictly rejected as listed; %lld records, "
           "%lld residues; %d lengths checked against manifest.tsv: exact\n",
           l.n, parsed, rejected, (long long)total_records, (long long)total_residues,
           matched_manifest);
    ++n_checks;
    MF_TEST_TRUE(l.n >= 158 && matched_manifest >= 158,
                 "expected >= 158 FASTA files with manifest rows, found %d files, %d rows", l.n,
                 matched_manifest);
    for (int i = 0; i < l.n; ++i) free(l.paths[i]);
    free(l.paths);
}

static void test_known_records(void)
{
    const char *shared = mf_test_shared_dir();
    char p[4096];
    mf_fasta f;
    snprintf(p, sizeof p, "%s/data/fasta/examples/T1078.fasta", shared);
    MF_TEST_OK(mf_fasta_read(p, 0, &f));
    if (f.num_records == 1) {
        expect(!strcmp(f.records[0].description, "T1078 Tsp1, Trichoderma virens, 138 residues|"),
               "T1078 description: %s", f.records[0].description);
        expect(f.records[0].length == 138, "T1078 length %s", "!= 138");
        expect(!strncmp(f.records[0].sequence, "MAAPTPADKSMMAAVPEWTI", 20) &&
                   !strcmp(f.records[0].sequence + 132, "HHHHHH"),
               "T1078 sequence ends: %s", f.records[0].sequence);
    } else {
        mf_test_fail("T1078.fasta: %lld records", (long long)f.num_records);
    }
    mf_fasta_free(&f);

    snprintf(p, sizeof p, "%s/data/fasta/casp/heldout_core.fasta", shared);
    MF_TEST_OK(mf_fasta_read(p, 0, &f));
    expect(f.num_records == 37, "heldout_core: %s", "37 records expected");
    if (f.num_records == 37) {
        expect(!strncmp(f.records[0].description, "T1025 CASP14 target", 19), "first: %s",
               f.records[0].description);
        expect(f.records[0].length == 257, "T1025 length %s", "!= 257");
        expect(!strncmp(f.records[1].sequence, "AVPTTRVVVHQSAVLKKDDV", 20), "T1026 start %s",
               f.records[1].sequence);
        expect(f.records[1].line == 3, "T1026 header line %s", "!= 3");
    }
    mf_fasta_free(&f);

    snprintf(p, sizeof p, "%s/data/seqdb/mmseqs2_examples_QUERY.fasta.gz", shared);
    MF_TEST_OK(mf_fasta_read(p, 0, &f));
    expect(f.num_records == 500, "QUERY.fasta.gz: %s", "500 records expected (gzip)");
    mf_fasta_free(&f);
    printf("known records: T1078 (138 aa), CASP heldout_core (37, T1025 257 aa), gzipped "
           "query set (500): exact\n");
}

static const char *source_dir(void)
{
    const char *s = getenv("MEMFOLD_SOURCE");
    return s && *s ? s : ".";
}

/* Reads tests/data/<file> and expects failure `code` with every fragment in the message. */
static void expect_error(const char *file, unsigned flags, mf_status code, const char *frag1,
                         const char *frag2)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/tests/data/%s", source_dir(), file);
    mf_fasta f;
    mf_status st = mf_fasta_read(p, flags, &f);
    ++n_checks;
    const char *msg = mf_last_error();
    int ok = st == code && strstr(msg, frag1) && (!frag2 || strstr(msg, frag2)) &&
             f.num_records == 0 && f.records == NULL;
    MF_TEST_TRUE(ok, "%s: expected %s with '%s'%s%s, got %s: %s", file, mf_status_name(code), frag1,
                 frag2 ? " and " : "", frag2 ? frag2 : "", mf_status_name(st), st ? msg : "parsed");
    if (st == MF_OK) mf_fasta_free(&f);
    printf("  %-28s -> %s\n", file, st ? msg : "parsed");
}

static void test_malformed(void)
{
    expect_error("fasta_missing_header.fasta", 0, MF_ERR_FORMAT,
                 "fasta_missing_header.fasta:1: header: sequence text before the first", NULL);
    expect_error("fasta_empty.fasta", 0, MF_ERR_FORMAT,
                 "fasta_empty.fasta:1: header: no FASTA records", NULL);
    expect_error("fasta_empty_sequence.fasta", 0, MF_ERR_FORMAT,
                 "fasta_empty_sequence.fasta:3: sequence: record 'b empty record' has no "
                 "residues",
                 NULL);
    expect_error("fasta_illegal_char.fasta", 0, MF_ERR_FORMAT,
                 "fasta_illegal_char.fasta:3: sequence: illegal character '1' at column 4", NULL);
    expect_error("fasta_unknown_letter.fasta", 0, MF_ERR_FORMAT,
                 "fasta_unknown_letter.fasta:2: sequence: unknown residue letter 'B' at column 4",
                 NULL);
    expect_error("fasta_star_inside.fasta", 0, MF_ERR_FORMAT,
                 "fasta_star_inside.fasta:2: sequence: 'V' at column 4 after the stop", NULL);
    expect_error("fasta_binary.fasta", 0, MF_ERR_FORMAT,
                 "fasta_binary.fasta:1: header: binary data (byte 0x89)", NULL);
    expect_error("fasta_nul_in_sequence.fasta", 0, MF_ERR_FORMAT,
                 "fasta_nul_in_sequence.fasta:2: sequence: control or binary byte 0x00 at "
                 "column 4",
                 NULL);
    expect_error("fasta_truncated.fasta.gz", 0, MF_ERR_IO,
                 "fasta_truncated.fasta.gz:", "read error");
    expect_error("no_such_file.fasta", 0, MF_ERR_IO, "no_such_file.fasta: cannot open", NULL);

    /* accepted variants */
    char p[4096];
    mf_fasta f;
    snprintf(p, sizeof p, "%s/tests/data/fasta_unknown_letter.fasta", source_dir());
    MF_TEST_OK(mf_fasta_read(p, MF_FASTA_UNKNOWN_TO_X, &f));
    expect(f.num_records == 1 && !strcmp(f.records[0].sequence, "MKVXLXX"),
           "unknown letters to X: %s", f.num_records ? f.records[0].sequence : "");
    mf_fasta_free(&f);
    snprintf(p, sizeof p, "%s/tests/data/fasta_star_end.fasta", source_dir());
    MF_TEST_OK(mf_fasta_read(p, 0, &f));
    expect(f.num_records == 2 && !strcmp(f.records[0].sequence, "MKV") &&
               !strcmp(f.records[1].sequence, "GG"),
           "stop '*' at the end dropped: %s", f.num_records ? f.records[0].sequence : "");
    mf_fasta_free(&f);
    snprintf(p, sizeof p, "%s/tests/data/fasta_crlf_lower.fasta", source_dir());
    MF_TEST_OK(mf_fasta_read(p, 0, &f));
    expect(f.num_records == 1 && !strcmp(f.records[0].sequence, "MKVLAGK") &&
               !strcmp(f.records[0].description, "a"),
           "CRLF, lower case, blanks: %s", f.num_records ? f.records[0].sequence : "");
    mf_fasta_free(&f);
    snprintf(p, sizeof p, "%s/tests/data/fasta_full.fasta.gz", source_dir());
    MF_TEST_OK(mf_fasta_read(p, 0, &f));
    expect(f.num_records == 300 && f.records[299].length == 680 &&
               !strcmp(f.records[299].description, "seq299 some protein") &&
               f.records[299].line == 599,
           "gzip file of 300 records: %s", "wrong content");
    mf_fasta_free(&f);

    /* buffer API: a '-' is no residue in a plain FASTA; header-only input */
    const char *gap = ">x\nMK-V\n";
    mf_status st = mf_fasta_parse(gap, strlen(gap), "gap.fasta", 0, &f);
    expect(st == MF_ERR_FORMAT &&
               strstr(mf_last_error(), "gap.fasta:2: sequence: illegal character '-' at column 3"),
           "gap: %s", mf_last_error());
    const char *hdr = ">only a header";
    st = mf_fasta_parse(hdr, strlen(hdr), "hdr.fasta", 0, &f);
    expect(st == MF_ERR_FORMAT && strstr(mf_last_error(), "hdr.fasta:1: sequence: record"),
           "header only: %s", mf_last_error());
    printf("malformed FASTA: errors name file:line: field (checked substrings above)\n");
}

int main(void)
{
    test_shared_files();
    test_known_records();
    test_malformed();
    printf("%d checks of counts, strings and error messages\n", n_checks);
    return mf_test_finish("test_fasta");
}
