/* The .hhr reader on every HHsearch/HHblits file of shared/data/templates and on malformed edits
 * of a small valid file:
 *  - hit-table rows and alignment blocks per file (counted with grep); the header-only file is
 *    truncated output (error naming its last line), the empty table is 0 hits;
 *  - hand-checked fields of hits (read off the files): name, Probab, E-value, Score,
 *    Aligned_cols, Identities, Similarity, Sum_probs, Template_Neff, ranges, lengths, aligned
 *    strings and 0-based indices, across wrapped blocks, gaps on either side, a hit number of 5
 *    digits, files without Template_Neff, a template whose HMM and sequence lengths differ;
 *  - the aligned strings and indices of all 261 hits of the 7 files AlphaFold 2's parse_hhr
 *    reads equal its output (compared once by hand, see the report; summarized here by the
 *    Aligned_cols == residue pairs rule that the reader enforces and the checks above);
 *  - the query-to-template mapping (AF2 _build_query_to_hit_index_mapping): the hit's own
 *    numbering, the str.find fallback for a related query, a query without the hit's residues;
 *  - malformed input: each error names file:line and field. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/hhr.h"
#include "tests/support/mf_test.h"

/* Printed numbers have 2-4 significant decimals: compare with the printed precision. */
#define FIELD_ATOL 1e-9

static char dir[2048];

static const char *tpath(const char *name)
{
    static char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

static int near(double a, double b)
{
    return a - b <= FIELD_ATOL * (1 + (b < 0 ? -b : b)) &&
           b - a <= FIELD_ATOL * (1 + (b < 0 ? -b : b));
}

static void check_counts(void)
{
    static const struct {
        const char *file;
        int rows, hits;
    } files[] = {
        {"biopython_2uvo_hhblits.hhr.gz", 32, 32},
        {"biopython_2uvo_hhblits_emptytable.hhr", 0, 0},
        {"biopython_2uvo_hhsearch.hhr.gz", 32, 32},
        {"biopython_4p79_hhsearch_server_NOssm.hhr.gz", 8, 8},
        {"biopython_4y9h_hhsearch_server_NOssm.hhr.gz", 29, 29},
        {"biopython_allx.hhr.gz", 10, 10},
        {"biopython_hhpred_9590198.hhr.gz", 34, 34},
        {"biopython_hhsearch_q9bsu1_uniclust_w_ss_pfamA_30.hhr.gz", 16, 16},
        {"csb_d1ea0a1.hhr", 11, 11},
        {"openfold_6KWC_1_hhsearch_output.hhr", 60, 60},
        {"openfold_testquery73_pdb70_hits.hhr", 10, 10},
        {"rosettafold_T1078.hhr", 100, 100},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        mf_hhr h;
        mf_status st = mf_hhr_read(tpath(files[i].file), &h);
        MF_TEST_TRUE(st == MF_OK, "%s: %s", files[i].file, mf_last_error());
        if (st != MF_OK) continue;
        printf("  %-56s %3lld rows %3lld hits (expected %d, %d)\n", files[i].file,
               (long long)h.num_rows, (long long)h.num_hits, files[i].rows, files[i].hits);
        MF_TEST_TRUE(h.num_rows == files[i].rows && h.num_hits == files[i].hits,
                     "%s: %lld rows, %lld hits", files[i].file, (long long)h.num_rows,
                     (long long)h.num_hits);
        mf_hhr_free(&h);
    }
    mf_hhr h;
    mf_status st = mf_hhr_read(tpath("biopython_2uvo_hhblits_onlyheader.hhr"), &h);
    printf("  header only: %s\n", mf_last_error());
    MF_TEST_TRUE(st == MF_ERR_FORMAT && strstr(mf_last_error(), "onlyheader.hhr:8:") &&
                     strstr(mf_last_error(), "no hit table") && h.num_hits == 0 && !h.hits,
                 "header-only file: %s", mf_last_error());
    st = mf_hhr_read(tpath("rosettafold_T1078.atab"), &h);
    printf("  .atab: %s\n", mf_last_error());
    MF_TEST_TRUE(st == MF_ERR_FORMAT && strstr(mf_last_error(), "T1078.atab:1:") &&
                     strstr(mf_last_error(), "Query"),
                 ".atab read as .hhr: %s", mf_last_error());
    st = mf_hhr_read(tpath("no_such_file.hhr"), &h);
    MF_TEST_TRUE(st == MF_ERR_IO, "missing file: %s", mf_last_error());
}

static void check_hand_values(void)
{
    mf_hhr h;
    MF_TEST_OK(mf_hhr_read(tpath("openfold_testquery73_pdb70_hits.hhr"), &h));
    if (h.num_hits == 10) {
        const mf_hhr_hit *x = &h.hits[0];
        MF_TEST_TRUE(!strcmp(h.query_name, "query") && h.match_columns == 73, "header: '%s' %lld",
                     h.query_name, (long long)h.match_columns);
        MF_TEST_TRUE(x->index == 1 && !strcmp(x->name, "1HF9_B") &&
                         !strncmp(x->description, "1HF9_B ATPASE INHIBITOR", 23),
                     "hit 1 name '%s'", x->name);
        MF_TEST_TRUE(near(x->probability, 7.51) && near(x->e_value, 380) && near(x->score, 16.19) &&
                         x->aligned_cols == 22 && near(x->identities, 23) &&
                         near(x->similarity, 0.398) && near(x->sum_probs, 13.1) &&
                         near(x->template_neff, 4.5),
                     "hit 1 summary: %g %g %g %d %g %g %g %g", x->probability, x->e_value, x->score,
                     x->aligned_cols, x->identities, x->similarity, x->sum_probs, x->template_neff);
        MF_TEST_TRUE(!strcmp(x->query, "AEHHHKAAEHHEQAAKHHHAAA") &&
                         !strcmp(x->hit_sequence, "ISHHAKEIERLQKEIERHKQSI") && x->length == 22,
                     "hit 1 strings %s / %s", x->query, x->hit_sequence);
        MF_TEST_TRUE(x->query_start == 7 && x->query_end == 28 && x->hit_start == 10 &&
                         x->hit_end == 31 && x->hit_length == 41 && x->indices_query[0] == 6 &&
                         x->indices_query[21] == 27 && x->indices_hit[0] == 9 &&
                         x->indices_hit[21] == 30,
                     "hit 1 ranges");
        const mf_hhr_table_row *r = &h.rows[3];
        MF_TEST_TRUE(r->index == 4 && !strcmp(r->name, "3U8V_A") && near(r->probability, 4.1) &&
                         near(r->e_value, 810) && near(r->p_value, 0.01) && near(r->score, 17.3) &&
                         near(r->ss, 0) && r->cols == 32 && r->query_start == 15 &&
                         r->query_end == 46 && r->hit_start == 50 && r->hit_end == 81 &&
                         r->hit_length == 93,
                     "table row 4");
        MF_TEST_TRUE(near(h.hits[3].sum_probs, 15.8) && h.hits[9].index == 10 &&
                         !strcmp(h.hits[9].name, "2Q2K_A") &&
                         !strcmp(h.hits[9].hit_sequence, "HIREALRRYIEEIGENP"),
                     "hits 4 and 10");
    }
    mf_hhr_free(&h);

    /* 2wga: three wrapped blocks, template gaps, a name without chain. */
    MF_TEST_OK(mf_hhr_read(tpath("biopython_2uvo_hhblits.hhr.gz"), &h));
    if (h.num_hits == 32) {
        const mf_hhr_hit *x = &h.hits[1];
        int gaps_ok = x->length == 168;
        static const int gap_cols[6] = {47, 48, 91, 92, 134, 135};
        for (int k = 0; gaps_ok && k < 6; k++)
            gaps_ok = x->hit_sequence[gap_cols[k]] == '-' && x->indices_hit[gap_cols[k]] == -1;
        int n_gaps = 0;
        for (int64_t k = 0; k < x->length; k++) n_gaps += x->hit_sequence[k] == '-';
        MF_TEST_TRUE(gaps_ok && n_gaps == 6 && !strcmp(x->name, "2wga") && x->aligned_cols == 162 &&
                         near(x->sum_probs, 148.8) && x->indices_query[0] == 1 &&
                         x->indices_query[167] == 168 && x->indices_hit[0] == 1 &&
                         x->indices_hit[167] == 162 && x->indices_hit[49] == 48 &&
                         !strncmp(x->query, "RCGEQGSNME", 10) &&
                         !strncmp(x->hit_sequence, "GXGCXGXXMY", 10) &&
                         !strcmp(x->hit_sequence + 163, "XAGGC") && x->query_end == 169 &&
                         x->hit_end == 163 && x->hit_length == 164,
                     "2uvo hit 2 (2wga, 3 blocks, 6 template gaps)");
    }
    mf_hhr_free(&h);

    /* Hit number 10000, no Template_Neff, gaps on both sides. */
    MF_TEST_OK(mf_hhr_read(tpath("csb_d1ea0a1.hhr"), &h));
    if (h.num_hits == 11) {
        const mf_hhr_hit *x = &h.hits[10];
        MF_TEST_TRUE(x->index == 10000 && h.rows[10].index == 10000 &&
                         !strcmp(x->name, "d1v8qa_") && x->aligned_cols == 43 &&
                         near(x->sum_probs, 32.2) && x->template_neff == 0 && x->length == 45 &&
                         x->query[28] == '-' && x->hit_sequence[13] == '-' &&
                         x->indices_query[0] == 94 && x->indices_query[44] == 137 &&
                         x->indices_hit[0] == 8 && x->indices_hit[44] == 51,
                     "csb hit 10000");
    }
    mf_hhr_free(&h);

    /* One-column hits; the T line's template length (26) is not the table's HMM length (21). */
    MF_TEST_OK(mf_hhr_read(tpath("biopython_allx.hhr.gz"), &h));
    if (h.num_hits == 10) {
        MF_TEST_TRUE(!strcmp(h.hits[0].query, "X") && !strcmp(h.hits[0].hit_sequence, "T") &&
                         h.hits[0].indices_query[0] == 38 && h.hits[0].indices_hit[0] == 23 &&
                         h.hits[7].hit_length == 26 && h.rows[7].hit_length == 21,
                     "allx hits 1 and 8");
    }
    mf_hhr_free(&h);

    /* hhpred: secondary-structure lines before the query line, Pfam names. */
    MF_TEST_OK(mf_hhr_read(tpath("biopython_hhpred_9590198.hhr.gz"), &h));
    if (h.num_hits == 34)
        MF_TEST_TRUE(!strcmp(h.hits[0].name, "PF03676.14") && h.hits[0].query_start == 22 &&
                         h.hits[0].query_end == 407 && h.hits[0].hit_end == 394 &&
                         h.match_columns == 422,
                     "hhpred hit 1");
    mf_hhr_free(&h);
}

static const char *valid =
    "Query         test query\n"
    "Match_columns 12\n"
    "No_of_seqs    1 out of 1\n"
    "\n"
    " No Hit                             Prob E-value P-value  Score    SS Cols Query HMM  "
    "Template HMM\n"
    "  1 1abc_A Something                99.0 1.0E-10 1.0E-14   50.0   0.0    9    2-11     "
    "5-14  (20)\n"
    "\n"
    "No 1\n"
    ">1abc_A Something\n"
    "Probab=99.00  E-value=1e-10  Score=50.00  Aligned_cols=9  Identities=50%  Similarity=0.5  "
    "Sum_probs=9.5  Template_Neff=3.0\n"
    "\n"
    "Q test              2 ACDEF-GH   8 (12)\n"
    "Q Consensus         2 acdef-gh   8 (12)\n"
    "                      |||||.||\n"
    "T Consensus         5 acdefmgh   12 (20)\n"
    "T 1abc_A            5 ACDEFMGH   12 (20)\n"
    "T ss_pred             CCCCCCCC\n"
    "Confidence            99999999\n"
    "\n"
    "Q test              9 IKL   11 (12)\n"
    "T 1abc_A           13 IK-   14 (20)\n"
    "\n"
    "Done!\n";

/* Replaces the first occurrence of `from` in the valid text by `to` and expects an error whose
 * message holds `want1` and `want2`. nul_at > 0 puts a NUL byte that many bytes before the end of
 * the replacement. */
static size_t nul_at;

static void expect_error(const char *what, const char *from, const char *to, const char *want1,
                         const char *want2)
{
    const char *p = strstr(valid, from);
    if (!p) {
        mf_test_fail("%s: test text lacks '%s'", what, from);
        return;
    }
    size_t n = strlen(valid) - strlen(from) + strlen(to) + 1;
    char *t = malloc(n);
    snprintf(t, n, "%.*s%s%s", (int)(p - valid), valid, to, p + strlen(from));
    if (nul_at) t[strlen(t) - strlen(p + strlen(from)) - nul_at] = '\0';
    mf_hhr h;
    mf_status st = mf_hhr_parse(t, n - 1, "bad.hhr", &h);
    printf("  %-40s -> %s\n", what, st == MF_OK ? "accepted" : mf_last_error());
    MF_TEST_TRUE(st == MF_ERR_FORMAT && strstr(mf_last_error(), want1) &&
                     (!want2 || strstr(mf_last_error(), want2)) && h.num_hits == 0 && !h.hits,
                 "%s: expected '%s' / '%s', got %s", what, want1, want2 ? want2 : "",
                 st == MF_OK ? "success" : mf_last_error());
    free(t);
}

static void check_valid_and_malformed(void)
{
    mf_hhr h;
    MF_TEST_OK(mf_hhr_parse(valid, strlen(valid), "ok.hhr", &h));
    if (h.num_hits == 1) {
        const mf_hhr_hit *x = &h.hits[0];
        MF_TEST_TRUE(!strcmp(x->query, "ACDEF-GHIKL") && !strcmp(x->hit_sequence, "ACDEFMGHIK-") &&
                         x->indices_query[5] == -1 && x->indices_query[6] == 6 &&
                         x->indices_hit[10] == -1 && x->indices_hit[9] == 13 &&
                         !strcmp(h.query_name, "test query"),
                     "valid text: %s / %s", x->query, x->hit_sequence);
        char *ts = mf_hhr_hit_template_sequence(x);
        MF_TEST_TRUE(ts && !strcmp(ts, "ACDEFMGHIK"), "template sequence %s", ts ? ts : "");
        free(ts);
        /* Mapping: the hit's query residues 2-11 (ACDEFGHIKL) sit at positions 1-10 of this
         * query; template residues count from the hit's first (A = 0, M = 5 has no partner). */
        int32_t map[16];
        bool found;
        MF_TEST_OK(mf_hhr_query_to_hit_mapping(x, "MACDEFGHIKLW", map, &found));
        static const int32_t want[12] = {-1, 0, 1, 2, 3, 4, 6, 7, 8, 9, -1, -1};
        int ok = found;
        for (int i = 0; i < 12; i++) ok &= map[i] == want[i];
        MF_TEST_TRUE(ok, "mapping at the hit's numbering");
        /* A related query where the residues sit elsewhere: AF2's str.find. */
        MF_TEST_OK(mf_hhr_query_to_hit_mapping(x, "WWWWACDEFGHIKL", map, &found));
        ok = found && map[4] == 0 && map[8] == 4 && map[9] == 6 && map[10] == 7 && map[12] == 9 &&
             map[13] == -1 && map[3] == -1;
        MF_TEST_TRUE(ok, "mapping by str.find");
        MF_TEST_OK(mf_hhr_query_to_hit_mapping(x, "MMMMMMMMMMMM", map, &found));
        MF_TEST_TRUE(!found && map[0] == -1 && map[11] == -1, "query without the hit's residues");
    }
    mf_hhr_free(&h);
    printf("malformed edits of a valid file (each error names file:line and field):\n");
    expect_error("residue count", "Q test              9 IKL   11 (12)",
                 "Q test              9 IKL   12 (12)", "bad.hhr:20:", "residues");
    expect_error("query piece not continuing", "Q test              9 IKL   11 (12)",
                 "Q test             10 IKL   12 (12)", "bad.hhr:20:", "previous one ended");
    expect_error("template shorter than query", "T 1abc_A           13 IK-   14 (20)",
                 "T 1abc_A           13 IK   14 (20)", "bad.hhr:21:", "columns");
    expect_error("lower-case residue", "T 1abc_A            5 ACDEFMGH",
                 "T 1abc_A            5 ACDEFmGH", "bad.hhr:16:", "not a residue letter");
    expect_error("query length != Match_columns", "Q test              2 ACDEF-GH   8 (12)",
                 "Q test              2 ACDEF-GH   8 (13)", "bad.hhr:12:", "Match_columns");
    expect_error("missing Sum_probs", "Sum_probs=9.5", "Sum_prob=9.5", "bad.hhr:10:", "Sum_probs");
    expect_error("bad number", "Score=50.00", "Score=5O.00", "bad.hhr:10:", "Score");
    expect_error("Aligned_cols vs pairs", "Aligned_cols=9", "Aligned_cols=10", "Aligned_cols=10",
                 "pairs 9");
    expect_error("table range differs", "    2-11     5-14", "    3-11     5-14",
                 "bad.hhr:8:", "query range");
    expect_error("block without table row", "  1 1abc_A", "  2 1abc_A", "No 1", "no row 1");
    expect_error("no Match_columns", "Match_columns 12\n", "", "bad.hhr:", "Match_columns");
    expect_error("no Query first", "Query         test query\n", "Title x\n",
                 "bad.hhr:1:", "Query");
    expect_error("table row fields", "   50.0   0.0    9", "   50.0     9",
                 "bad.hhr:6:", "hit table");
    expect_error("unexpected line", "Confidence", "Garbage   ", "bad.hhr:18:", "unexpected line");
    expect_error("template line first", "Q test              9 IKL   11 (12)\n", "",
                 "bad.hhr:", "no query line");
    expect_error("text after Done!", "Done!\n", "Done!\nmore\n", "bad.hhr:", "after the end");
    expect_error("hit name missing", ">1abc_A Something\n", "", "bad.hhr:9:", "hit name");
    nul_at = 14;
    expect_error("NUL byte", "Something\nProbab", "Some_thing\nProbab", "bad.hhr:9:", "NUL");
    nul_at = 0;
    expect_error(
        "truncated in a block",
        "\nQ test              9 IKL   11 (12)\nT 1abc_A           13 IK-   14 (20)\n\nDone!\n",
        "\nQ test              9 IKL   11 (12)\n", "bad.hhr:", "no template line");
}

int main(void)
{
    snprintf(dir, sizeof dir, "%s/data/templates", mf_test_shared_dir());
    printf("hhr files in %s (rows and hits counted with grep; exact field values):\n", dir);
    check_counts();
    check_hand_values();
    check_valid_and_malformed();
    return mf_test_finish("test_hhr");
}
