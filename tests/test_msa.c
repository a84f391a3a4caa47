/* MSA parsers: every file under shared data/msas parses (or is rejected for a listed reason) with
 * the query lengths / row counts of manifest.tsv; whole-file statistics and single deletion counts
 * computed by hand (an independent Python transcription of AF2's parse_a3m / parse_stockholm run
 * over the files); query rows against the FASTA queries; AF2 merge deduplication; semantics of
 * each format on small buffers; malformed inputs in tests/data. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/fasta.h"
#include "data/msa.h"
#include "protein/residue_constants.h"
#include "tests/support/mf_test.h"

static int n_checks;

#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        ++n_checks;                                                                                \
        MF_TEST_TRUE(cond, __VA_ARGS__);                                                           \
    } while (0)

typedef struct {
    char **paths;
    int n, cap;
} path_list;

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
        if (S_ISDIR(st.st_mode)) {
            walk(p, l);
        } else if (S_ISREG(st.st_mode)) {
            if (l->n == l->cap) {
                l->cap = l->cap ? l->cap * 2 : 64;
                char **np = realloc(l->paths, (size_t)l->cap * sizeof *np);
                if (!np) break;
                l->paths = np;
            }
            l->paths[l->n++] = strdup(p);
        }
    }
    closedir(d);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static long manifest_length(const char *shared, const char *rel)
{
    char p[4096], line[8192];
    snprintf(p, sizeof p, "%s/data/manifest.tsv", shared);
    FILE *f = fopen(p, "r");
    if (!f) return -2;
    long len = -2;
    size_t n = strlen(rel);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, rel, n) != 0 || line[n] != '\t') continue;
        char *c = line;
        for (int k = 0; k < 5 && c; ++k) c = strchr(c, '\t') ? strchr(c, '\t') + 1 : NULL;
        len = c && *c != '\t' ? atol(c) : -1;
        break;
    }
    fclose(f);
    return len;
}

static int64_t sum_deletions(const mf_msa *m, int64_t *nonzero)
{
    int64_t s = 0, nz = 0;
    for (int64_t i = 0; i < m->num_rows * m->length; ++i) {
        s += m->deletion_matrix[i];
        nz += m->deletion_matrix[i] != 0;
    }
    if (nonzero) *nonzero = nz;
    return s;
}

/* Files that must be rejected, with the reason. */
static const struct {
    const char *rel, *reason;
} rejections[] = {
    /* ProDy's test file repeats the line of GTHB2_ONCKE/26-130 (lines 52 and 53) in one block:
     * AF2's parse_stockholm would join both copies and fail on the length */
    {"msas/stockholm_examples/msa_Cys_knot.sth",
     "msa_Cys_knot.sth:53: sequence: name 'GTHB2_ONCKE/26-130' appears twice in one block (also "
     "line 52)"},
};

static mf_msa_format expected_format(const char *rel)
{
    if (strstr(rel, "pfam_kortemme/")) return MF_MSA_ALIGNED_FASTA;
    mf_msa_format f = mf_msa_format_from_path(rel);
    return f;
}

static void test_shared_files(void)
{
    const char *shared = mf_test_shared_dir();
    path_list l = {0};
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/data/msas", shared);
    walk(dir, &l);
    qsort(l.paths, (size_t)l.n, sizeof *l.paths, cmp_str);
    size_t prefix = strlen(shared) + strlen("/data/");
    int parsed = 0, rejected = 0, manifest_checked = 0;
    int64_t rows = 0;
    for (int i = 0; i < l.n; ++i) {
        const char *rel = l.paths[i] + prefix;
        const char *reason = NULL;
        for (size_t k = 0; k < sizeof rejections / sizeof rejections[0]; ++k)
            if (!strcmp(rejections[k].rel, rel)) reason = rejections[k].reason;
        mf_msa_format fmt = expected_format(rel);
        EXPECT(fmt != MF_MSA_AUTO, "%s: no format known for this file", rel);
        mf_msa m;
        mf_status st = mf_msa_read(l.paths[i], fmt, 0, &m);
        if (reason) {
            EXPECT(st == MF_ERR_FORMAT && strstr(mf_last_error(), reason),
                   "%s: expected rejection '%s', got %s", rel, reason,
                   st ? mf_last_error() : "parsed");
            printf("  rejected (expected): %s: %s\n", rel, mf_last_error());
            ++rejected;
            if (st == MF_OK) mf_msa_free(&m);
            continue;
        }
        EXPECT(st == MF_OK, "%s (%s): not parsed: %s", rel, mf_msa_format_name(fmt),
               mf_last_error());
        if (st != MF_OK) continue;
        ++parsed;
        rows += m.num_rows;
        int ids_ok = 1;
        for (int64_t k = 0; k < m.num_rows * m.length; ++k) ids_ok &= m.msa[k] < MF_MSA_ALPHABET;
        EXPECT(ids_ok && m.num_rows > 0 && m.length > 0, "%s: ids out of range or empty", rel);
        long want = manifest_length(shared, rel);
        if (want >= 0) {
            /* length column: query length for a3m/Stockholm, number of sequences for the Pfam
             * aligned FASTA files */
            long got = fmt == MF_MSA_ALIGNED_FASTA ? (long)m.num_rows : (long)m.length;
            EXPECT(got == want, "%s: manifest length %ld, parsed %ld", rel, want, got);
            ++manifest_checked;
        }
        /* the content-sniffing path agrees with the explicit format */
        mf_msa a;
        if (mf_msa_read(l.paths[i], MF_MSA_AUTO, 0, &a) == MF_OK) {
            EXPECT(a.num_rows == m.num_rows && a.length == m.length &&
                       !memcmp(a.msa, m.msa, (size_t)(m.num_rows * m.length)),
                   "%s: MF_MSA_AUTO gives a different alignment", rel);
            mf_msa_free(&a);
        } else {
            mf_test_fail("%s: MF_MSA_AUTO failed: %s", rel, mf_last_error());
        }
        mf_msa_free(&m);
    }
    printf("shared MSAs: %d files, %d parsed, %d rejected as listed, %lld rows; %d query "
           "lengths/row counts checked against manifest.tsv; AUTO format agrees: exact\n",
           l.n, parsed, rejected, (long long)rows, manifest_checked);
    EXPECT(rejected == (int)(sizeof rejections / sizeof rejections[0]),
           "%d listed rejections seen, table has %zu", rejected,
           sizeof rejections / sizeof rejections[0]);
    EXPECT(l.n >= 63 && manifest_checked >= 57,
           "expected >= 63 files (%d) and 57 manifest rows (%d)", l.n, manifest_checked);
    for (int i = 0; i < l.n; ++i) free(l.paths[i]);
    free(l.paths);
}

/* Whole-file statistics from the Python transcription of AF2's parsers: rows, query length, sum
 * and count of nonzero deletions, rows left after deduplication. */
static const struct {
    const char *rel;
    int64_t rows, length, del_total, del_nonzero, unique;
} stats[] = {
    {"msas/openfold_2q2k/2q2k_A/bfd_uniclust_hits.a3m", 4, 70, 1, 1, 4},
    {"msas/openfold_2q2k/2q2k_A/mgnify_hits.sto", 7, 70, 0, 0, 6},
    {"msas/openfold_2q2k/2q2k_A/uniprot_hits.sto", 21, 70, 0, 0, 4},
    {"msas/openfold_2q2k/2q2k_A/uniref90_hits.sto", 16, 70, 4, 4, 16},
    {"msas/openfold_testquery73/bfd_uniclust_hits.a3m", 1024, 73, 239, 97, 1024},
    {"msas/openfold_testquery73/mgnify_hits.sto", 59, 73, 3, 3, 59},
    {"msas/openfold_testquery73/uniref90_hits.sto", 57, 73, 3, 3, 56},
    {"msas/openfold_6KWC_1/bfd_uniref_hits.a3m", 1428, 191, 16948, 5909, 1428},
    {"msas/openfold_6KWC_1/mgnify_hits.sto", 1698, 191, 12664, 4901, 1630},
    {"msas/psicov150_msa/1a3a.a3m", 1024, 145, 0, 0, 1024},
    {"msas/rosettafold_T1078/T1078.msa0.a3m", 426, 138, 2624, 1039, 426},
    {"msas/csb_d1nz0a_/d1nz0a_.a3m", 9, 109, 27, 12, 9},
    {"msas/colabfold/6A5J.a3m", 2, 13, 0, 0, 1},
};

/* Single deletion counts read off the files. */
static const struct {
    const char *rel;
    int64_t row, col;
    int32_t deletions;
    const char *description;
} deletions[] = {
    /* last row "...GDTpP": one insertion before the final P */
    {"msas/openfold_2q2k/2q2k_A/bfd_uniclust_hits.a3m", 3, 69, 1,
     "tr|A0A1E5U0W4|A0A1E5U0W4_STAXY Uncharacterized protein OS=Staphylococcus xylosus "
     "GN=AST15_04830 PE=4 SV=1"},
    {"msas/openfold_6KWC_1/mgnify_hits.sto", 1, 41, 3, "MGYP000510094044/36-224"},
    {"msas/openfold_6KWC_1/mgnify_hits.sto", 702, 60, 16, "MGYP003624100849/57-241"},
    {"msas/openfold_testquery73/uniref90_hits.sto", 33, 65, 1, "UniRef90_A0A411HJN1/1-70"},
    {"msas/rosettafold_T1078/T1078.msa0.a3m", 1, 5, 2, NULL},
    {"msas/csb_d1nz0a_/d1nz0a_.a3m", 4, 31, 6, NULL},
};

static mf_status read_rel(const char *rel, int64_t max_rows, mf_msa *m)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/data/%s", mf_test_shared_dir(), rel);
    return mf_msa_read(p, MF_MSA_AUTO, max_rows, m);
}

static void test_known_values(void)
{
    for (size_t i = 0; i < sizeof stats / sizeof stats[0]; ++i) {
        mf_msa m, u;
        if (read_rel(stats[i].rel, 0, &m) != MF_OK) {
            mf_test_fail("%s: %s", stats[i].rel, mf_last_error());
            continue;
        }
        int64_t nz = 0, total = sum_deletions(&m, &nz);
        const mf_msa *one[1] = {&m};
        MF_TEST_OK(mf_msa_merge_dedup(one, 1, &u));
        EXPECT(m.num_rows == stats[i].rows && m.length == stats[i].length &&
                   total == stats[i].del_total && nz == stats[i].del_nonzero &&
                   u.num_rows == stats[i].unique,
               "%s: rows %lld length %lld deletions %lld nonzero %lld unique %lld; want %lld %lld "
               "%lld %lld %lld",
               stats[i].rel, (long long)m.num_rows, (long long)m.length, (long long)total,
               (long long)nz, (long long)u.num_rows, (long long)stats[i].rows,
               (long long)stats[i].length, (long long)stats[i].del_total,
               (long long)stats[i].del_nonzero, (long long)stats[i].unique);
        mf_msa_free(&u);
        mf_msa_free(&m);
    }
    for (size_t i = 0; i < sizeof deletions / sizeof deletions[0]; ++i) {
        mf_msa m;
        if (read_rel(deletions[i].rel, 0, &m) != MF_OK) {
            mf_test_fail("%s: %s", deletions[i].rel, mf_last_error());
            continue;
        }
        int64_t r = deletions[i].row, c = deletions[i].col;
        int ok = r < m.num_rows && c < m.length &&
                 m.deletion_matrix[r * m.length + c] == deletions[i].deletions;
        if (ok && deletions[i].description)
            ok = !strcmp(m.descriptions[r], deletions[i].description);
        EXPECT(ok, "%s: deletion_matrix[%lld][%lld] = %d expected (%s)", deletions[i].rel,
               (long long)r, (long long)c, deletions[i].deletions,
               r < m.num_rows ? m.descriptions[r] : "row out of range");
        mf_msa_free(&m);
    }
    /* the query rows as letters */
    mf_msa m;
    if (read_rel("msas/openfold_2q2k/2q2k_B/mgnify_hits.sto", 0, &m) == MF_OK) {
        MF_TEST_OK(mf_msa_check_query(
            &m, "MGSSHHHHHHSSGLVPGSHMDKKETKHLLKIKKEDYPQIFDFLENVPRGTKTAHIREALRRYIEEIGENP"));
        EXPECT(!strcmp(m.descriptions[0], "query") && m.lines[0] == 10,
               "2q2k_B mgnify: query description/line %s", m.descriptions[0]);
        /* row 4 "------------------------------VKKSDLGQVTSFLKEVPEGKKQDVLDEVLK----------" */
        const uint8_t *r4 = m.msa + 4 * m.length;
        EXPECT(r4[0] == MF_MSA_GAP && r4[30] == mf_hhblits_aa_to_id('V') &&
                   r4[59] == mf_hhblits_aa_to_id('K') && r4[60] == MF_MSA_GAP,
               "2q2k_B mgnify row 4 %s", "wrong residues");
        mf_msa_free(&m);
    }
    printf("known values: %zu files' row/length/deletion/unique counts and %zu single deletion "
           "counts: exact\n",
           sizeof stats / sizeof stats[0], sizeof deletions / sizeof deletions[0]);
}

static void test_query_and_merge(void)
{
    const struct {
        const char *fasta, *msa;
    } pairs[] = {
        {"fasta/examples/6kwc.fasta", "msas/openfold_6KWC_1/bfd_uniref_hits.a3m"},
        {"fasta/examples/6kwc.fasta", "msas/openfold_6KWC_1/mgnify_hits.sto"},
        {"fasta/examples/openfold_short.fasta", "msas/openfold_testquery73/uniref90_hits.sto"},
        {"fasta/examples/openfold_short.fasta", "msas/openfold_testquery73/mgnify_hits.sto"},
        {"fasta/examples/openfold_short.fasta", "msas/openfold_testquery73/bfd_uniclust_hits.a3m"},
        {"fasta/examples/T1078.fasta", "msas/rosettafold_T1078/T1078.msa0.a3m"},
        {"fasta/psicov150/1a3a.fasta", "msas/psicov150_msa/1a3a.a3m"},
        {"fasta/psicov150/1a3a.fasta", "msas/psicov150_msa/1a3a.hhblits_uniclust30_2017_10.a3m"},
        {"fasta/examples/5AWL_1.fasta", "msas/colabfold/5AWL1.a3m"},
        {"fasta/examples/6A5J.fasta", "msas/colabfold/6A5J.a3m"},
    };
    char p[4096];
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; ++i) {
        mf_fasta f;
        mf_msa m;
        snprintf(p, sizeof p, "%s/data/%s", mf_test_shared_dir(), pairs[i].fasta);
        if (mf_fasta_read(p, 0, &f) != MF_OK || read_rel(pairs[i].msa, 0, &m) != MF_OK) {
            mf_test_fail("%s / %s: %s", pairs[i].fasta, pairs[i].msa, mf_last_error());
            continue;
        }
        mf_status st = mf_msa_check_query(&m, f.records[0].sequence);
        EXPECT(st == MF_OK, "%s query row vs %s: %s", pairs[i].msa, pairs[i].fasta,
               mf_last_error());
        mf_msa_free(&m);
        mf_fasta_free(&f);
    }
    /* mismatches: wrong length, one changed residue */
    mf_msa m;
    if (read_rel("msas/rosettafold_T1078/T1078.msa0.a3m", 0, &m) == MF_OK) {
        mf_status st = mf_msa_check_query(&m, "MAAPTPADKS");
        EXPECT(st == MF_ERR_FORMAT && strstr(mf_last_error(), "T1078.msa0.a3m:1: query row: 138 "
                                                              "aligned columns, the query "
                                                              "sequence has 10 residues"),
               "length mismatch message: %s", mf_last_error());
        char q[139];
        for (int64_t k = 0; k < 138; ++k) q[k] = mf_hhblits_id_to_aa(m.msa[k]);
        q[138] = '\0';
        MF_TEST_OK(mf_msa_check_query(&m, q));
        q[41] = q[41] == 'W' ? 'A' : 'W';
        st = mf_msa_check_query(&m, q);
        EXPECT(st == MF_ERR_FORMAT && strstr(mf_last_error(), "query row: position 42 is"),
               "residue mismatch message: %s", mf_last_error());
        mf_msa_free(&m);
    }
    printf("query rows: %zu MSAs match their FASTA queries; length and residue mismatches "
           "rejected\n",
           sizeof pairs / sizeof pairs[0]);

    /* AF2 pipeline order uniref90, bfd, mgnify; counts from the Python transcription */
    const struct {
        const char *a, *b, *c;
        int64_t rows, deletions;
    } merges[] = {
        {"msas/openfold_2q2k/2q2k_A/uniref90_hits.sto",
         "msas/openfold_2q2k/2q2k_A/bfd_uniclust_hits.a3m",
         "msas/openfold_2q2k/2q2k_A/mgnify_hits.sto", 20, 5},
        {"msas/openfold_testquery73/uniref90_hits.sto",
         "msas/openfold_testquery73/bfd_uniclust_hits.a3m",
         "msas/openfold_testquery73/mgnify_hits.sto", 1136, 245},
        {"msas/openfold_6KWC_1/bfd_uniref_hits.a3m", "msas/openfold_6KWC_1/mgnify_hits.sto", NULL,
         3057, 28842},
    };
    for (size_t i = 0; i < sizeof merges / sizeof merges[0]; ++i) {
        mf_msa parts[3], merged;
        const mf_msa *ptr[3];
        int n = merges[i].c ? 3 : 2, ok = 1;
        const char *names[3] = {merges[i].a, merges[i].b, merges[i].c};
        for (int k = 0; k < n; ++k) {
            ok &= read_rel(names[k], 0, &parts[k]) == MF_OK;
            ptr[k] = &parts[k];
        }
        if (ok && mf_msa_merge_dedup(ptr, n, &merged) == MF_OK) {
            EXPECT(merged.num_rows == merges[i].rows &&
                       sum_deletions(&merged, NULL) == merges[i].deletions &&
                       !memcmp(merged.msa, parts[0].msa, (size_t)merged.length) &&
                       !strcmp(merged.descriptions[0], parts[0].descriptions[0]),
                   "merge of %s...: %lld rows, %lld deletions; want %lld, %lld", merges[i].a,
                   (long long)merged.num_rows, (long long)sum_deletions(&merged, NULL),
                   (long long)merges[i].rows, (long long)merges[i].deletions);
            mf_msa_free(&merged);
        } else {
            mf_test_fail("merge %s: %s", merges[i].a, mf_last_error());
        }
        for (int k = 0; k < n; ++k) mf_msa_free(&parts[k]);
    }
    /* different lengths cannot merge */
    mf_msa a, b, out;
    if (read_rel("msas/colabfold/5AWL1.a3m", 0, &a) == MF_OK &&
        read_rel("msas/colabfold/6A5J.a3m", 0, &b) == MF_OK) {
        const mf_msa *ab[2] = {&a, &b};
        mf_status st = mf_msa_merge_dedup(ab, 2, &out);
        EXPECT(st == MF_ERR_FORMAT && strstr(mf_last_error(), "MSA 1 has 13 columns"),
               "merge of unequal lengths: %s", mf_last_error());
        mf_msa_free(&a);
        mf_msa_free(&b);
    }
    printf("merge: AF2 dedup counts for 2q2k_A (20), testquery73 (1136), 6KWC (3057); unequal "
           "lengths rejected\n");
}

/* Format semantics on buffers, each value worked out by hand. */
static void test_semantics(void)
{
    mf_msa m;
    const uint8_t A = 0, C = 1, D = 2, E = 3, G = (uint8_t)MF_MSA_GAP;
    (void)E;
    /* a3m: 'a' before A, "cg" before C, '.' dropped, trailing "ee" dropped */
    const char *a3m = "#A3M#\n>q\nACDE\n>s  hit s \naAcgC.-Dee\n";
    MF_TEST_OK(mf_msa_parse(a3m, strlen(a3m), "t.a3m", MF_MSA_A3M, 0, &m));
    if (m.num_rows == 2) {
        const uint8_t want[4] = {A, C, G, D};
        const int32_t dels[4] = {1, 2, 0, 0};
        EXPECT(m.length == 4 && !memcmp(m.msa + 4, want, 4) &&
                   !memcmp(m.deletion_matrix + 4, dels, sizeof dels) &&
                   !strcmp(m.descriptions[1], "s  hit s") && m.lines[1] == 4,
               "a3m insertions/deletions %s", "wrong");
    }
    mf_msa_free(&m);
    /* Stockholm over two blocks: query gaps '-' and '.', lower-case residue in a kept column */
    const char *sto = "# STOCKHOLM 1.0\n#=GF ID test\n#=GS s DE a hit\n\n"
                      "q  A-C\ns  AxC\n#=GR s PP 9.9\n\n"
                      "q  .DE\ns  yd-\n#=GC RF x.xxx\n//\n";
    MF_TEST_OK(mf_msa_parse(sto, strlen(sto), "t.sto", MF_MSA_STOCKHOLM, 0, &m));
    if (m.num_rows == 2) {
        const uint8_t q[4] = {A, C, D, E};
        const uint8_t s[4] = {A, C, D, G};
        const int32_t dels[4] = {0, 1, 1, 0};
        EXPECT(m.length == 4 && !memcmp(m.msa, q, 4) && !memcmp(m.msa + 4, s, 4) &&
                   !memcmp(m.deletion_matrix + 4, dels, sizeof dels) &&
                   !strcmp(m.descriptions[1], "s") && m.lines[1] == 6,
               "Stockholm columns/deletions %s", "wrong");
    }
    mf_msa_free(&m);
    /* max_rows: Stockholm keeps the first names only */
    const char *sto3 = "# STOCKHOLM 1.0\nq AC\na AC\nb A-\n\nq DE\na D-\nb DE\n//\n";
    MF_TEST_OK(mf_msa_parse(sto3, strlen(sto3), "t3.sto", MF_MSA_STOCKHOLM, 2, &m));
    EXPECT(m.num_rows == 2 && m.length == 4 && m.msa[4 + 3] == G, "Stockholm max_rows %s", "wrong");
    mf_msa_free(&m);
    /* HHblits mapping of ambiguous letters in an a3m row */
    const char *amb = ">q\nBZUJOX\n";
    MF_TEST_OK(mf_msa_parse(amb, strlen(amb), "amb.a3m", MF_MSA_A3M, 0, &m));
    const uint8_t amb_want[6] = {D, E, C, 20, 20, 20};
    EXPECT(m.length == 6 && !memcmp(m.msa, amb_want, 6), "B Z U J O X -> %s", "D E C X X X");
    mf_msa_free(&m);

    char p[4096];
    const char *src = getenv("MEMFOLD_SOURCE") ? getenv("MEMFOLD_SOURCE") : ".";
    snprintf(p, sizeof p, "%s/tests/data/msa_plain.aln", src);
    MF_TEST_OK(mf_msa_read(p, MF_MSA_AUTO, 0, &m));
    if (m.num_rows == 3) {
        const uint8_t r2[10] = {A, C, G, E, 4, 5, 6, 7, 8, 18}; /* AC.EFGHIKw */
        EXPECT(m.length == 10 && !memcmp(m.msa + 20, r2, 10) && m.lines[2] == 4 &&
                   !strcmp(m.descriptions[2], ""),
               "plain alignment row 3 %s", "wrong");
    }
    mf_msa_free(&m);
    snprintf(p, sizeof p, "%s/tests/data/msa_small.a3m.gz", src);
    MF_TEST_OK(mf_msa_read(p, MF_MSA_AUTO, 0, &m));
    EXPECT(m.num_rows == 3 && m.length == 7 && m.deletion_matrix[7 + 2] == 1 && m.msa[7 + 4] == G &&
               sum_deletions(&m, NULL) == 1,
           "gzipped a3m: %lld rows", (long long)m.num_rows);
    mf_msa_free(&m);
    printf("format semantics: a3m insertions, Stockholm blocks/markup/query gaps/max_rows, "
           "HHblits letters, plain and gzipped files: exact\n");
}

static void expect_error(const char *file, mf_status code, const char *frag)
{
    char p[4096];
    const char *src = getenv("MEMFOLD_SOURCE") ? getenv("MEMFOLD_SOURCE") : ".";
    snprintf(p, sizeof p, "%s/tests/data/%s", src, file);
    mf_msa m;
    mf_status st = mf_msa_read(p, MF_MSA_AUTO, 0, &m);
    const char *msg = mf_last_error();
    EXPECT(st == code && strstr(msg, frag) && m.num_rows == 0 && m.msa == NULL &&
               m.descriptions == NULL,
           "%s: expected %s with '%s', got %s: %s", file, mf_status_name(code), frag,
           mf_status_name(st), st ? msg : "parsed");
    if (st == MF_OK) mf_msa_free(&m);
    printf("  %-26s -> %s\n", file, st ? msg : "parsed");
}

static void test_malformed(void)
{
    expect_error("msa_inconsistent.a3m", MF_ERR_FORMAT,
                 "msa_inconsistent.a3m:3: sequence 'hit1 inconsistent': 11 aligned columns, the "
                 "query row has 10");
    expect_error("msa_illegal_char.a3m", MF_ERR_FORMAT,
                 "msa_illegal_char.a3m:4: sequence: illegal character '*' at column 6");
    expect_error("msa_empty.a3m", MF_ERR_FORMAT, "msa_empty.a3m:1: alignment: empty MSA");
    expect_error("msa_missing_header.a3m", MF_ERR_FORMAT,
                 "msa_missing_header.a3m:1: header: sequence text before the first '>' header");
    expect_error("msa_empty_query.a3m", MF_ERR_FORMAT,
                 "msa_empty_query.a3m:1: query row: no aligned residues");
    expect_error("msa_binary.a3m", MF_ERR_FORMAT,
                 "msa_binary.a3m:1: header: binary data (byte 0x7f)");
    expect_error("msa_truncated.a3m.gz", MF_ERR_IO, "read error");
    expect_error("msa_inconsistent.sto", MF_ERR_FORMAT,
                 "msa_inconsistent.sto:4: sequence 'hit1': aligned length 9, the query 'query' "
                 "has 11");
    expect_error("msa_truncated.sto", MF_ERR_FORMAT,
                 "msa_truncated.sto:6: alignment: no end-of-alignment '//' line");
    expect_error("msa_bad_fields.sto", MF_ERR_FORMAT,
                 "msa_bad_fields.sto:3: sequence: expected 'name aligned-sequence', found 3 "
                 "fields");
    expect_error("msa_bad_markup.sto", MF_ERR_FORMAT,
                 "msa_bad_markup.sto:4: markup: expected '#=GR name feature annotation', found 2 "
                 "fields");
    expect_error("msa_no_header.sto", MF_ERR_FORMAT,
                 "msa_no_header.sto:1: header: expected '# STOCKHOLM 1.0'");
    expect_error("msa_two_alignments.sto", MF_ERR_FORMAT,
                 "msa_two_alignments.sto:5: alignment: content after the end-of-alignment '//'");
    expect_error("msa_ragged.aln", MF_ERR_FORMAT,
                 "msa_ragged.aln:3: row '': 9 aligned columns, the query row has 10");
    expect_error("no_such_file.a3m", MF_ERR_IO, "no_such_file.a3m: cannot open");
    /* the error must name the file even for buffers */
    mf_msa m;
    const char *bad = "# STOCKHOLM 1.0\nq AC\nr A1\n//\n";
    mf_status st = mf_msa_parse(bad, strlen(bad), "buf.sto", MF_MSA_STOCKHOLM, 0, &m);
    EXPECT(st == MF_ERR_FORMAT &&
               strstr(mf_last_error(), "buf.sto:3: sequence: illegal character '1' at column 4"),
           "buffer error: %s", mf_last_error());
    printf("malformed MSAs: errors name file:line: field (checked substrings above)\n");
}

int main(void)
{
    test_shared_files();
    test_known_values();
    test_query_and_merge();
    test_semantics();
    test_malformed();
    printf("%d checks of counts, arrays and error messages\n", n_checks);
    return mf_test_finish("test_msa");
}
