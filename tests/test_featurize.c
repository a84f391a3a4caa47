/* Featurization (data/featurize.h) on real files of shared/data and small files written here:
 *  - entry names from paths; the arginine NH1/NH2 fix;
 *  - templates from the real HHsearch hits of the OpenFold 73-residue test query against the
 *    training mmCIFs: which hits are kept, in which order, why the others are skipped, the aligned
 *    residues, and the coordinates (a CA read off 2crb.cif by hand; the whole aligned stretch
 *    against the 2CRB chain read on its own); max_templates and max_template_date;
 *  - templates from a synthetic .hhr and synthetic mmCIFs, one hit per AF2 rule: Sum_probs order,
 *    align ratio, duplicate, length, bad name, missing file, unreadable file, query residues
 *    absent, a CA gap of more than 150 A, a template sequence that needs realignment (>= 90%
 *    identical) and one that cannot be realigned;
 *  - whole runs (mf_featurize_run) on directories of links: mmCIF + merged MSAs (2Q2K A/B with
 *    OpenFold's alignments: the msa dataset equals the dedup merge of the three monomer files,
 *    uniprot_hits.sto left out), PDB, CASP (blank chain id), a malformed file (reported, run goes
 *    on), a wrong MSA (chain failed, message names both files), a duplicate entry, every filter
 *    with its count, nothing written -> error and no file, a cancelled run -> no file, templates
 *    through the run, jackhmmer (when installed) and a missing jackhmmer naming the package.
 * Exact comparisons throughout (bitwise copies of parsed coordinates; integer arrays). */
#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/featurize.h"
#include "data/jackhmmer.h"
#include "data/structure_io.h"
#include "protein/residue_constants.h"
#include "tests/support/mf_test.h"

/* Coordinates in the files have 3 decimals; the float nearest to one is within 1e-5 of it. */
#define COORD_ATOL 1e-5

static char shared_data[2048], tmp[2048];
static const char *query73 =
    "MAAHKGAEHHHKAAEHHEQAAKHHHAAAEHHEKGEHEQAAHHADTAYAHHKHAEEHAAQAAKHDAEHHAPKPH";

static const char *sd(const char *rel)
{
    static char p[8][4096];
    static int k;
    k = (k + 1) % 8;
    snprintf(p[k], sizeof p[k], "%s/%s", shared_data, rel);
    return p[k];
}

static const char *tp(const char *rel)
{
    static char p[8][4096];
    static int k;
    k = (k + 1) % 8;
    snprintf(p[k], sizeof p[k], "%s/%s", tmp, rel);
    return p[k];
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) mf_test_fail("cannot write %s", path);
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

/* ---- small pieces ---- */

static void check_entry_names(void)
{
    static const char *cases[][2] = {
        {"/a/b/1a7g.cif.gz", "1a7g"}, {"T1024.pdb", "T1024"}, {"d1nz0a_.pdb", "d1nz0a_"},
        {"x/1ABC.ENT.GZ", "1ABC"},    {"a.b.mmcif", "a.b"},   {"dir/noext", "noext"},
    };
    int ok = 1;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[64];
        mf_featurize_entry_name(cases[i][0], out, sizeof out);
        if (strcmp(out, cases[i][1])) {
            ok = 0;
            printf("  entry of %s: %s (expected %s)\n", cases[i][0], out, cases[i][1]);
        }
    }
    MF_TEST_TRUE(ok, "entry names");
}

static void check_arginine_fix(void)
{
    int arg = mf_restype_from_one_letter('R'), lys = mf_restype_from_one_letter('K');
    int cd = mf_atom37_index("CD"), nh1 = mf_atom37_index("NH1"), nh2 = mf_atom37_index("NH2");
    int32_t aatype[4] = {arg, arg, arg, lys};
    float pos[4][MF_ATOM37][3] = {{{0}}}, mask[4][MF_ATOM37] = {{0}};
    for (int i = 0; i < 4; i++) {
        mask[i][cd] = mask[i][nh1] = mask[i][nh2] = 1;
        pos[i][nh1][0] = 3; /* NH1 further from CD than NH2: swapped */
        pos[i][nh2][0] = 2;
    }
    pos[1][nh1][0] = 1; /* NH1 closer: kept */
    mask[2][nh2] = 0;   /* NH2 unobserved: kept */
    mf_fix_arginine_nh(aatype, &pos[0][0][0], &mask[0][0], 4);
    MF_TEST_TRUE(pos[0][nh1][0] == 2 && pos[0][nh2][0] == 3, "ARG with NH1 further: swapped");
    MF_TEST_TRUE(pos[1][nh1][0] == 1 && pos[1][nh2][0] == 2, "ARG with NH1 closer: kept");
    MF_TEST_TRUE(pos[2][nh1][0] == 3, "ARG without NH2: kept");
    MF_TEST_TRUE(pos[3][nh1][0] == 3, "LYS: untouched");
}

static const char *seq_of(const mf_template_features *t, int k, char *buf)
{
    for (int64_t q = 0; q < t->num_res; q++) {
        int id = t->aatype[k * t->num_res + q];
        buf[q] = id == MF_MSA_GAP ? '-' : mf_hhblits_id_to_aa(id);
    }
    buf[t->num_res] = '\0';
    return buf;
}

static void check_real_templates(void)
{
    mf_hhr hhr;
    MF_TEST_OK(mf_hhr_read(sd("templates/openfold_testquery73_pdb70_hits.hhr"), &hhr));
    if (hhr.num_hits != 10) return;
    mf_template_options o = {.mmcif_dir = sd("structures/train/mmcif")};
    mf_template_features t;
    MF_TEST_OK(mf_template_features_make(query73, &hhr, &o, &t));
    /* Sum_probs 15.8 (3U8V), 11.0, 10.8, 8.0, 7.4, then 0.0 in file order (5KC1 F/J, 4I6P, 2Q2K).
     * 1HF9 (13.1) has no mmCIF here; 5KC1 residues 25-41 are not observed (< 5 atoms). */
    static const char *names[7] = {"3u8v_A", "2crb_A", "4zey_A", "1psm_A",
                                   "3zee_A", "4i6p_A", "2q2k_A"};
    static const float probs[7] = {15.8f, 11.0f, 10.8f, 8.0f, 7.4f, 0.0f, 0.0f};
    int ok = t.num_templates == 7;
    for (int k = 0; ok && k < 7; k++)
        ok = !strcmp(t.domain_names[k], names[k]) && t.sum_probs[k] == probs[k];
    printf("  testquery73: %d templates:", t.num_templates);
    for (int k = 0; k < t.num_templates; k++) printf(" %s", t.domain_names[k]);
    printf("; skipped: no file %lld, atoms %lld\n", (long long)t.skipped[MF_TSKIP_NO_FILE],
           (long long)t.skipped[MF_TSKIP_ATOMS]);
    MF_TEST_TRUE(ok && t.skipped[MF_TSKIP_NO_FILE] == 1 && t.skipped[MF_TSKIP_ATOMS] == 2 &&
                     t.realigned == 0,
                 "testquery73 templates, order and skips");
    char buf[128];
    if (t.num_templates == 7) {
        MF_TEST_TRUE(!strcmp(seq_of(&t, 1, buf), "----------EEAISCHRKATTYLSEAMKL----------------"
                                                 "---------------------------"),
                     "2crb_A aligned residues: %s", buf);
        MF_TEST_TRUE(!strcmp(seq_of(&t, 6, buf), "-------------------------------------------------"
                                                 "------HIREALRRYIEEIGENP-"),
                     "2q2k_A aligned residues: %s", buf);
        /* 2crb.cif model 1, GLU 32 CA: 0.236 -7.819 -4.784 (query position 11 -> index 10). */
        const float *ca = t.all_atom_positions + ((1 * 73 + 10) * MF_ATOM37 + 1) * 3;
        double want[3] = {0.236, -7.819, -4.784};
        int cok = t.all_atom_masks[(1 * 73 + 10) * MF_ATOM37 + 1] == 1.f;
        for (int k = 0; k < 3; k++) cok &= fabs(ca[k] - want[k]) <= COORD_ATOL;
        MF_TEST_TRUE(cok, "2crb_A CA at query 11: %g %g %g", ca[0], ca[1], ca[2]);
        /* The aligned stretch is the chain's residues 32-51, atom for atom; nothing elsewhere. */
        mf_protein c;
        MF_TEST_OK(mf_structure_read_chain(sd("structures/train/mmcif/2crb.cif"), "A", &c));
        if (c.num_res == 97) {
            mf_fix_arginine_nh(c.aatype, c.atom_positions, c.atom_mask, c.num_res);
            int same = 1, empty = 1;
            for (int q = 0; q < 73; q++) {
                const float *tpos = t.all_atom_positions + (1 * 73 + q) * MF_ATOM37 * 3;
                const float *tm = t.all_atom_masks + (1 * 73 + q) * MF_ATOM37;
                if (q >= 10 && q < 30) {
                    same &=
                        !memcmp(tpos, c.atom_positions + (q + 21) * MF_ATOM37 * 3,
                                MF_ATOM37 * 3 * sizeof(float)) &&
                        !memcmp(tm, c.atom_mask + (q + 21) * MF_ATOM37, MF_ATOM37 * sizeof(float));
                } else {
                    for (int a = 0; a < MF_ATOM37 * 3; a++) empty &= tpos[a] == 0.f;
                    for (int a = 0; a < MF_ATOM37; a++) empty &= tm[a] == 0.f;
                }
            }
            MF_TEST_TRUE(same && empty,
                         "2crb_A template rows = chain residues 32-51, zero elsewhere");
        }
        mf_protein_free(&c);
    }
    mf_template_features_free(&t);

    o.max_templates = 2;
    MF_TEST_OK(mf_template_features_make(query73, &hhr, &o, &t));
    MF_TEST_TRUE(t.num_templates == 2 && !strcmp(t.domain_names[0], "3u8v_A") &&
                     !strcmp(t.domain_names[1], "2crb_A"),
                 "max_templates 2");
    mf_template_features_free(&t);

    /* Released after 2006-01-01: 3U8V 2011, 4ZEY 2015, 3ZEE 2013, 4I6P 2013, 2Q2K 2008, 5KC1
     * 2016 (twice); kept: 2CRB 2005, 1PSM 1995. */
    o.max_templates = 0;
    o.max_template_date = "2006-01-01";
    MF_TEST_OK(mf_template_features_make(query73, &hhr, &o, &t));
    MF_TEST_TRUE(t.num_templates == 2 && !strcmp(t.domain_names[0], "2crb_A") &&
                     !strcmp(t.domain_names[1], "1psm_A") && t.skipped[MF_TSKIP_DATE] == 7,
                 "max_template_date 2006-01-01: %d templates, %lld by date", t.num_templates,
                 (long long)t.skipped[MF_TSKIP_DATE]);
    mf_template_features_free(&t);
    mf_hhr_free(&hhr);
}

/* ---- synthetic hits ---- */

typedef struct {
    char table[8192], blocks[32768];
    int n;
} hhr_text;

static void add_hit(hhr_text *h, const char *name, double sum_probs, int qstart, const char *q,
                    int tstart, const char *t, int tlen)
{
    int qres = 0, tres = 0, pairs = 0;
    for (size_t i = 0; q[i]; i++) {
        qres += q[i] != '-';
        tres += t[i] != '-';
        pairs += q[i] != '-' && t[i] != '-';
    }
    h->n++;
    size_t k = strlen(h->table);
    snprintf(h->table + k, sizeof h->table - k,
             "%3d %-30.30s %5.1f %7.2G %7.2G %6.1f %5.1f %4d %4d-%-4d %4d-%-4d(%d)\n", h->n, name,
             50.0, 1e-5, 1e-9, 30.0, 0.0, pairs, qstart, qstart + qres - 1, tstart,
             tstart + tres - 1, tlen);
    k = strlen(h->blocks);
    snprintf(h->blocks + k, sizeof h->blocks - k,
             "No %d\n>%s synthetic\nProbab=50.00  E-value=1e-05  Score=30.00  Aligned_cols=%d  "
             "Identities=50%%  Similarity=0.5  Sum_probs=%.1f  Template_Neff=1.0\n\n"
             "Q query %5d %s %4d (16)\nT %-14s %4d %s %4d (%d)\n\n",
             h->n, name, pairs, sum_probs, qstart, q, qstart + qres - 1, name, tstart, t,
             tstart + tres - 1, tlen);
}

static void write_ca_cif(const char *path, const char *id, const char *seq3[], int n, int gap_at)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        mf_test_fail("cannot write %s", path);
        return;
    }
    fprintf(f,
            "data_%s\nloop_\n_atom_site.group_PDB\n_atom_site.label_atom_id\n"
            "_atom_site.label_comp_id\n_atom_site.label_asym_id\n_atom_site.auth_asym_id\n"
            "_atom_site.auth_seq_id\n_atom_site.Cartn_x\n_atom_site.Cartn_y\n"
            "_atom_site.Cartn_z\n",
            id);
    for (int i = 0; i < n; i++)
        fprintf(f, "ATOM CA %s A A %d %.3f 1.000 2.000\n", seq3[i], i + 1,
                3.8 * i + (gap_at >= 0 && i >= gap_at ? 200.0 : 0.0));
    fclose(f);
}

static void check_synthetic_templates(void)
{
    static const char *ok12[12] = {"ALA", "CYS", "ASP", "GLU", "PHE", "GLY",
                                   "HIS", "ILE", "LYS", "LEU", "MET", "ASN"};
    static const char *mut12[12] = {"ALA", "CYS", "ASP", "GLU", "PHE", "GLY",
                                    "HIS", "ILE", "LYS", "ALA", "MET", "ASN"};
    static const char *trp12[12] = {"TRP", "TRP", "TRP", "TRP", "TRP", "TRP",
                                    "TRP", "TRP", "TRP", "TRP", "TRP", "TRP"};
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tmpl", tmp);
    mkdir(dir, 0755);
    char p[4200];
    snprintf(p, sizeof p, "%s/9oka.cif", dir);
    write_ca_cif(p, "9OKA", ok12, 12, -1);
    snprintf(p, sizeof p, "%s/9gap.cif", dir);
    write_ca_cif(p, "9GAP", ok12, 12, 6); /* CA 6 -> 7: 203.8 A */
    snprintf(p, sizeof p, "%s/9mut.cif", dir);
    write_ca_cif(p, "9MUT", mut12, 12, -1); /* L10A: 11 of 12 identical after realignment */
    snprintf(p, sizeof p, "%s/9bad.cif", dir);
    write_ca_cif(p, "9BAD", trp12, 12, -1);
    snprintf(p, sizeof p, "%s/9bro.cif", dir);
    write_file(p, "data_9BRO\nloop_\n_atom_site.Cartn_x\n'unterminated\n");
    const char *query = "WWACDEFGHIKLMNWW";
    hhr_text h = {{0}, {0}, 0};
    add_hit(&h, "9OKA_A", 40, 3, "ACDEFGHIKLMN", 1, "ACDEFGHIKLMN", 12);
    add_hit(&h, "9GAP_A", 35, 3, "ACDEFGHIKLMN", 1, "ACDEFGHIKLMN", 12);
    add_hit(&h, "9MUT_A", 50, 3, "ACDEFGHIKLMN", 1, "ACDEFGHIKLMN", 12);
    add_hit(&h, "9BAD_A", 30, 3, "ACDEFGHIKLMN", 1, "ACDEFGHIKLMN", 12);
    add_hit(&h, "PF00001.1", 29, 3, "ACDEFGHIKLMN", 1, "ACDEFGHIKLMN", 12);
    add_hit(&h, "9OKA_A", 28, 3, "ACDEFG", 1, "ACDEFG", 12);
    add_hit(&h, "9OKA_A", 27, 3, "A-----------", 1, "ACDEFGHIKLMN", 12);
    add_hit(&h, "9DUP_A", 26, 1, "WWACDEFGHIKLMNWW", 1, "WWACDEFGHIKLMNWW", 16);
    add_hit(&h, "9NOF_A", 25, 3, "ACDEFGHIKLMN", 1, "ACDEFGHIKLMN", 12);
    add_hit(&h, "9OKA_B", 24, 3, "YYYYYYYYYYYY", 1, "ACDEFGHIKLMN", 12);
    add_hit(&h, "9BRO_A", 23, 3, "ACDEFGHIKLMN", 1, "ACDEFGHIKLMN", 12);
    size_t cap = strlen(h.table) + strlen(h.blocks) + 512;
    char *text = malloc(cap);
    snprintf(text, cap,
             "Query         synthetic\nMatch_columns 16\n\n No Hit                             "
             "Prob E-value P-value  Score    SS Cols Query HMM  Template HMM\n%s\n%s",
             h.table, h.blocks);
    mf_hhr hhr;
    MF_TEST_OK(mf_hhr_parse(text, strlen(text), "synthetic.hhr", &hhr));
    free(text);
    if (hhr.num_hits != 11) return;
    mf_template_options o = {.mmcif_dir = dir};
    mf_template_features t;
    MF_TEST_OK(mf_template_features_make(query, &hhr, &o, &t));
    char buf[32];
    printf("  synthetic: %d templates:", t.num_templates);
    for (int k = 0; k < t.num_templates; k++)
        printf(" %s (%s)", t.domain_names[k], seq_of(&t, k, buf));
    printf("\n");
    for (int k = 0; k < MF_TSKIP_COUNT; k++)
        printf("    skipped %-70s %lld\n", mf_template_skip_name((mf_template_skip)k),
               (long long)t.skipped[k]);
    MF_TEST_TRUE(t.num_templates == 2 && !strcmp(t.domain_names[0], "9mut_A") &&
                     !strcmp(t.domain_names[1], "9oka_A") && t.realigned == 1,
                 "synthetic: 9mut_A (realigned, highest Sum_probs) then 9oka_A");
    int each = 1;
    for (int k = 0; k < MF_TSKIP_COUNT; k++) each &= t.skipped[k] == (k == MF_TSKIP_DATE ? 0 : 1);
    MF_TEST_TRUE(each, "synthetic: one hit skipped for each rule (no dates in these files)");
    if (t.num_templates == 2) {
        MF_TEST_TRUE(!strcmp(seq_of(&t, 0, buf), "--ACDEFGHIKAMN--"),
                     "realigned template takes the mmCIF's residues: %s", buf);
        MF_TEST_TRUE(!strcmp(seq_of(&t, 1, buf), "--ACDEFGHIKLMN--"), "9oka_A residues: %s", buf);
        /* 9oka residue 5 (query 7) CA at (15.2, 1, 2); only CA observed. */
        const float *ca = t.all_atom_positions + ((16 + 6) * MF_ATOM37 + 1) * 3;
        float n_atoms = 0;
        for (int a = 0; a < 16 * MF_ATOM37; a++) n_atoms += t.all_atom_masks[16 * MF_ATOM37 + a];
        MF_TEST_TRUE(fabs(ca[0] - 15.2) <= COORD_ATOL && ca[1] == 1.f && ca[2] == 2.f &&
                         n_atoms == 12,
                     "9oka_A CA at query 7: %g %g %g, %g atoms", ca[0], ca[1], ca[2], n_atoms);
    }
    mf_template_features_free(&t);
    mf_hhr_free(&hhr);
}

/* ---- whole runs ---- */

static void link_into(const char *dir, const char *target, const char *name)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if (symlink(target, p)) mf_test_fail("symlink %s -> %s failed", p, target);
}

static void setup_run_dirs(void)
{
    mkdir(tp("s"), 0755);
    mkdir(tp("s/sub"), 0755);
    link_into(tp("s"), sd("structures/train/mmcif/2q2k.cif"), "2q2k.cif");
    link_into(tp("s"), sd("structures/train/pdb/1ubq.pdb"), "1ubq.pdb");
    link_into(tp("s/sub"), sd("structures/eval/casp14/T1024.pdb"), "T1024.pdb");
    link_into(tp("s/sub"), sd("structures/train/mmcif/2crb.cif"), "2crb.cif");
    write_file(tp("s/broken.cif"), "data_BROKEN\nloop_\n_atom_site.group_PDB\n"
                                   "_atom_site.label_atom_id\n_atom_site.Cartn_x\n"
                                   "ATOM CA 1.0 extra\n");
    write_file(tp("s/notes.txt"), "not a structure\n");
    mkdir(tp("msa"), 0755);
    link_into(tp("msa"), sd("msas/openfold_2q2k/2q2k_A"), "2q2k_A");
    link_into(tp("msa"), sd("msas/openfold_2q2k/2q2k_B"), "2q2k_B");
    mkdir(tp("hits"), 0755);
    /* 2CRB A residues 32-51 against 4ZEY A residues 26-45 (the alignment HHsearch made of both
     * to the test query); a self hit that the duplicate rule drops. */
    hhr_text h = {{0}, {0}, 0};
    add_hit(&h, "4ZEY_A", 10.8, 32, "EEAISCHRKATTYLSEAMKL", 26, "EEAISCHKKAAAYLSEAMKL", 84);
    add_hit(&h, "2CRB_A", 90.0, 1,
            "GSSGSSGMEGPLNLAHQQSRRADRLLAAGKYEEAISCHRKATTYLSEAMKLTESEQAHLSLELQRDSHMKQLLLIQERWKRA"
            "KREERLKAHSGPSSG",
            1,
            "GSSGSSGMEGPLNLAHQQSRRADRLLAAGKYEEAISCHRKATTYLSEAMKLTESEQAHLSLELQRDSHMKQLLLIQERWKRA"
            "KREERLKAHSGPSSG",
            97);
    size_t cap = strlen(h.table) + strlen(h.blocks) + 512;
    char *text = malloc(cap);
    snprintf(text, cap,
             "Query         2crb_A\nMatch_columns 97\n\n No Hit                             Prob "
             "E-value P-value  Score    SS Cols Query HMM  Template HMM\n%s\n%s",
             h.table, h.blocks);
    /* add_hit writes the query length of the synthetic test (16): this query has 97. */
    for (char *p = text; (p = strstr(p, " (16)\n"));) memcpy(p, " (97)\n", 6);
    write_file(tp("hits/2crb_A.hhr"), text);
    free(text);
}

static mf_featurize_options base_options(void)
{
    mf_featurize_options o = {0};
    o.structures_dir = tp("s");
    o.output = tp("out.h5");
    o.jobs = 2;
    return o;
}

static int group_count(const char *path)
{
    hid_t f;
    if (mf_h5_open_read(path, &f) != MF_OK) return -1;
    char **names;
    int n = -1;
    if (mf_h5_list(f, "/", &names, &n) == MF_OK) mf_h5_free_names(names, n);
    H5Fclose(f);
    return n;
}

static int note_has(const mf_featurize_note *l, int64_t n, const char *what, const char *why1,
                    const char *why2)
{
    for (int64_t i = 0; i < n; i++)
        if (strstr(l[i].what, what) && strstr(l[i].why, why1) && (!why2 || strstr(l[i].why, why2)))
            return 1;
    return 0;
}

static void check_msa_group(hid_t f)
{
    mf_msa m[3], merged;
    static const char *files[3] = {"bfd_uniclust_hits.a3m", "mgnify_hits.sto", "uniref90_hits.sto"};
    const mf_msa *list[3];
    int ok = 1;
    for (int i = 0; i < 3; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "msas/openfold_2q2k/2q2k_A/%s", files[i]);
        ok &= mf_msa_read(sd(rel), MF_MSA_AUTO, 0, &m[i]) == MF_OK;
        list[i] = &m[i];
    }
    MF_TEST_TRUE(ok, "reading the 2q2k_A MSAs: %s", mf_last_error());
    if (!ok) return;
    MF_TEST_OK(mf_msa_merge_dedup(list, 3, &merged));
    mf_h5_array msa, del;
    MF_TEST_OK(mf_h5_read_array(f, "out.h5", "/2q2k_A/msa", MF_I8, &msa));
    MF_TEST_OK(mf_h5_read_array(f, "out.h5", "/2q2k_A/deletion_matrix", MF_F32, &del));
    int same = msa.ndim == 2 && msa.shape[0] == merged.num_rows && msa.shape[1] == merged.length &&
               del.ndim == 2 && del.shape[0] == merged.num_rows;
    for (int64_t i = 0; same && i < merged.num_rows * merged.length; i++)
        same = ((int8_t *)msa.data)[i] == (int8_t)merged.msa[i] &&
               ((float *)del.data)[i] == (float)merged.deletion_matrix[i];
    printf("  2q2k_A msa: %lld x %lld (rows of the three files: %lld, %lld, %lld)\n",
           (long long)msa.shape[0], (long long)msa.shape[1], (long long)m[0].num_rows,
           (long long)m[1].num_rows, (long long)m[2].num_rows);
    MF_TEST_TRUE(same, "2q2k_A msa and deletion_matrix = dedup merge of bfd, mgnify, uniref90");
    char *src = NULL;
    MF_TEST_OK(mf_h5_read_attr_string(f, "/2q2k_A", "msa_sources", &src));
    MF_TEST_TRUE(src && strstr(src, "bfd_uniclust_hits.a3m") && strstr(src, "uniref90_hits.sto") &&
                     !strstr(src, "uniprot"),
                 "msa_sources: %s", src ? src : "");
    free(src);
    mf_h5_array_free(&msa);
    mf_h5_array_free(&del);
    mf_msa_free(&merged);
    for (int i = 0; i < 3; i++) mf_msa_free(&m[i]);
}

static void check_structure_group(hid_t f, const char *group, const char *file, const char *chain,
                                  double resolution, const char *date)
{
    mf_protein c;
    MF_TEST_OK(mf_structure_read_chain(file, chain, &c));
    if (!c.num_res) return;
    mf_fix_arginine_nh(c.aatype, c.atom_positions, c.atom_mask, c.num_res);
    char p[512];
    int64_t N = c.num_res;
    mf_h5_array a, ri, ari, pos, mask, res, msa;
    snprintf(p, sizeof p, "/%s/aatype", group);
    MF_TEST_OK(mf_h5_read_array(f, "out.h5", p, MF_I32, &a));
    snprintf(p, sizeof p, "/%s/residue_index", group);
    MF_TEST_OK(mf_h5_read_array(f, "out.h5", p, MF_I32, &ri));
    snprintf(p, sizeof p, "/%s/author_residue_index", group);
    MF_TEST_OK(mf_h5_read_array(f, "out.h5", p, MF_I32, &ari));
    snprintf(p, sizeof p, "/%s/all_atom_positions", group);
    MF_TEST_OK(mf_h5_read_array(f, "out.h5", p, MF_F32, &pos));
    snprintf(p, sizeof p, "/%s/all_atom_mask", group);
    MF_TEST_OK(mf_h5_read_array(f, "out.h5", p, MF_F32, &mask));
    snprintf(p, sizeof p, "/%s/resolution", group);
    MF_TEST_OK(mf_h5_read_array(f, "out.h5", p, MF_F32, &res));
    snprintf(p, sizeof p, "/%s/msa", group);
    MF_TEST_OK(mf_h5_read_array(f, "out.h5", p, MF_I8, &msa));
    int ok = a.data && ri.data && ari.data && pos.data && mask.data && res.data && msa.data &&
             a.shape[0] == N && pos.shape[0] == N && pos.shape[1] == 37 && pos.shape[2] == 3 &&
             msa.shape[1] == N && res.ndim == 0;
    if (ok) {
        ok = !memcmp(a.data, c.aatype, (size_t)N * 4) &&
             !memcmp(ari.data, c.residue_index, (size_t)N * 4) &&
             !memcmp(pos.data, c.atom_positions, (size_t)N * 37 * 3 * 4) &&
             !memcmp(mask.data, c.atom_mask, (size_t)N * 37 * 4) &&
             ((float *)res.data)[0] == (float)resolution;
        for (int64_t i = 0; ok && i < N; i++)
            ok = ((int32_t *)ri.data)[i] == i &&
                 ((int8_t *)msa.data)[i] == mf_hhblits_aa_to_id(c.sequence[i]);
    }
    char *s = NULL, *d = NULL;
    snprintf(p, sizeof p, "/%s", group);
    MF_TEST_OK(mf_h5_read_attr_string(f, p, "sequence", &s));
    MF_TEST_OK(mf_h5_read_attr_string(f, p, "release_date", &d));
    ok &= s && d && !strcmp(s, c.sequence) && !strcmp(d, date);
    MF_TEST_TRUE(ok,
                 "%s: datasets equal the chain read on its own (N %lld, resolution %g, date %s)",
                 group, (long long)N, resolution, date);
    free(s);
    free(d);
    mf_h5_array *all[7] = {&a, &ri, &ari, &pos, &mask, &res, &msa};
    for (int i = 0; i < 7; i++) mf_h5_array_free(all[i]);
    mf_protein_free(&c);
}

static void check_template_group(hid_t f)
{
    mf_h5_array ta, tp_, tm, sp;
    MF_TEST_OK(mf_h5_read_array(f, "out.h5", "/2crb_A/template_aatype", MF_I32, &ta));
    MF_TEST_OK(mf_h5_read_array(f, "out.h5", "/2crb_A/template_all_atom_positions", MF_F32, &tp_));
    MF_TEST_OK(mf_h5_read_array(f, "out.h5", "/2crb_A/template_all_atom_masks", MF_F32, &tm));
    MF_TEST_OK(mf_h5_read_array(f, "out.h5", "/2crb_A/template_sum_probs", MF_F32, &sp));
    int ok = ta.data && ta.ndim == 2 && ta.shape[0] == 1 && ta.shape[1] == 97 && tp_.data &&
             tp_.ndim == 4 && tp_.shape[0] == 1 && sp.data && sp.ndim == 2 && sp.shape[1] == 1 &&
             fabs(((float *)sp.data)[0] - 10.8) < 1e-6;
    mf_protein z;
    MF_TEST_OK(mf_structure_read_chain(sd("structures/train/mmcif/4zey.cif"), "A", &z));
    for (int q = 0; ok && q < 97; q++) {
        int in = q >= 31 && q < 51;
        int id = ((int32_t *)ta.data)[q];
        ok = in ? id == mf_hhblits_aa_to_id(z.sequence[q - 6]) : id == MF_MSA_GAP;
        if (in && ok)
            ok = !memcmp((float *)tp_.data + q * 37 * 3, z.atom_positions + (q - 6) * 37 * 3,
                         37 * 3 * sizeof(float)) &&
                 !memcmp((float *)tm.data + q * 37, z.atom_mask + (q - 6) * 37, 37 * sizeof(float));
    }
    MF_TEST_TRUE(ok, "2crb_A template: 4ZEY A residues 26-45 at query 32-51, Sum_probs 10.8");
    mf_protein_free(&z);
    hid_t d = H5Dopen2(f, "/2crb_A/template_domain_names", H5P_DEFAULT);
    char name[32] = "";
    if (d >= 0) {
        hid_t t = H5Dget_type(d);
        if (H5Tget_size(t) < sizeof name) H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, name);
        H5Tclose(t);
        H5Dclose(d);
    }
    MF_TEST_TRUE(!strncmp(name, "4zey_A", 6), "template_domain_names[0] = '%s'", name);
    mf_h5_array *all[4] = {&ta, &tp_, &tm, &sp};
    for (int i = 0; i < 4; i++) mf_h5_array_free(all[i]);
}

static void check_runs(void)
{
    setup_run_dirs();
    mf_featurize_options o = base_options();
    o.msa_dir = tp("msa");
    o.template_hits_dir = tp("hits");
    o.template_mmcif_dir = sd("structures/train/mmcif");
    o.max_template_date = "2020-01-01";
    mf_featurize_report r;
    MF_TEST_OK(mf_featurize_run(&o, NULL, NULL, &r));
    printf("  run: %lld files, %lld failed, %lld chains written, %lld rejected, %lld failed, %lld "
           "templates\n",
           (long long)r.files_total, (long long)r.files_failed, (long long)r.chains_written,
           (long long)r.chains_rejected, (long long)r.chains_failed,
           (long long)r.templates_written);
    /* 2q2k A, B; 1ubq A; T1024 A (blank chain id); 2crb A. broken.cif fails; notes.txt ignored. */
    MF_TEST_TRUE(r.files_total == 5 && r.files_failed == 1 && r.chains_written == 5 &&
                     r.chains_rejected == 0 && r.chains_failed == 0 && r.chains_with_msa == 2 &&
                     r.templates_written == 1 && r.template_skips[MF_TSKIP_DUPLICATE] == 1,
                 "run counts");
    MF_TEST_TRUE(note_has(r.failed, r.num_failed, "broken.cif", "broken.cif:", NULL),
                 "broken.cif reported with file and line: %s",
                 r.num_failed ? r.failed[0].why : "(none)");
    mf_featurize_report_free(&r);
    hid_t f;
    if (mf_h5_open_read(tp("out.h5"), &f) == MF_OK) {
        char *fmt = NULL;
        double ver = 0, nc = 0;
        MF_TEST_OK(mf_h5_read_attr_string(f, "/", "format", &fmt));
        MF_TEST_OK(mf_h5_read_attr_double(f, "/", "schema_version", &ver));
        MF_TEST_OK(mf_h5_read_attr_double(f, "/", "num_chains", &nc));
        MF_TEST_TRUE(fmt && !strcmp(fmt, "memfold-features") && ver == 1 && nc == 5,
                     "root attributes: %s %g %g", fmt ? fmt : "", ver, nc);
        free(fmt);
        check_msa_group(f);
        check_structure_group(f, "2q2k_B", sd("structures/train/mmcif/2q2k.cif"), "B", 3.0,
                              "2008-02-05");
        check_structure_group(f, "1ubq_A", sd("structures/train/pdb/1ubq.pdb"), "A", 1.8,
                              "1987-04-16");
        check_structure_group(f, "T1024_A", sd("structures/eval/casp14/T1024.pdb"), "A", 2.9, "");
        check_template_group(f);
        H5Fclose(f);
    } else {
        mf_test_fail("out.h5 not readable: %s", mf_last_error());
    }
    /* No temporary file is left next to the output. */
    DIR *d = opendir(tmp);
    int leftovers = 0;
    for (struct dirent *e; d && (e = readdir(d));) leftovers += strstr(e->d_name, ".tmp-") != NULL;
    if (d) closedir(d);
    MF_TEST_TRUE(leftovers == 0, "no temporary file left");

    /* Filters. Lengths: 1ubq 76, T1024 391, 2q2k 70 (A and B), 2crb 97. */
    o = base_options();
    o.output = tp("filtered.h5");
    o.min_length = 71;
    o.max_length = 100;
    MF_TEST_OK(mf_featurize_run(&o, NULL, NULL, &r));
    MF_TEST_TRUE(r.rejected_by[MF_REJECT_TOO_SHORT] == 2 &&
                     r.rejected_by[MF_REJECT_TOO_LONG] == 1 && r.chains_written == 2 &&
                     group_count(tp("filtered.h5")) == 2,
                 "length filters: short %lld, long %lld, written %lld",
                 (long long)r.rejected_by[MF_REJECT_TOO_SHORT],
                 (long long)r.rejected_by[MF_REJECT_TOO_LONG], (long long)r.chains_written);
    MF_TEST_TRUE(note_has(r.rejected, r.num_rejected, "2q2k_A", "shorter", NULL) &&
                     note_has(r.rejected, r.num_rejected, "T1024_A", "longer", NULL),
                 "rejected chains listed with their reason");
    mf_featurize_report_free(&r);
    o.min_length = o.max_length = 0;
    o.max_resolution = 2.95; /* 2q2k 3.0 A out; 1ubq 1.8, T1024 2.9 in; 2crb (NMR) has none */
    o.release_before = "2000-01-01"; /* 1ubq 1987 in; 2crb 2005 out; T1024 has no date */
    MF_TEST_OK(mf_featurize_run(&o, NULL, NULL, &r));
    MF_TEST_TRUE(r.rejected_by[MF_REJECT_RESOLUTION] == 2 &&
                     r.rejected_by[MF_REJECT_RELEASED] == 1 &&
                     r.rejected_by[MF_REJECT_NO_DATE] == 1 && r.chains_written == 1,
                 "resolution and date filters: %lld %lld %lld, written %lld",
                 (long long)r.rejected_by[MF_REJECT_RESOLUTION],
                 (long long)r.rejected_by[MF_REJECT_RELEASED],
                 (long long)r.rejected_by[MF_REJECT_NO_DATE], (long long)r.chains_written);
    mf_featurize_report_free(&r);

    /* Nothing passes: error, and no file. */
    o = base_options();
    o.output = tp("none.h5");
    o.min_length = 100000;
    mf_status st = mf_featurize_run(&o, NULL, NULL, &r);
    MF_TEST_TRUE(st == MF_ERR_INVALID && strstr(mf_last_error(), "no chain written") &&
                     access(tp("none.h5"), F_OK) != 0,
                 "no chain written: %s", mf_last_error());
    mf_featurize_report_free(&r);

    /* Cancelled: no file. */
    volatile sig_atomic_t cancel = 1;
    o = base_options();
    o.output = tp("cancel.h5");
    o.cancel = &cancel;
    st = mf_featurize_run(&o, NULL, NULL, &r);
    MF_TEST_TRUE(st == MF_ERR_IO && access(tp("cancel.h5"), F_OK) != 0, "cancelled run: %s",
                 mf_last_error());
    mf_featurize_report_free(&r);

    /* A wrong MSA fails its chain with both files named; a second 1ubq is a duplicate name. */
    mkdir(tp("badmsa"), 0755);
    write_file(
        tp("badmsa/1ubq_A.a3m"),
        ">q\nMQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGA\n");
    link_into(tp("s/sub"), sd("structures/train/pdb/1ubq.pdb"), "1ubq.pdb");
    o = base_options();
    o.output = tp("bad.h5");
    o.msa_dir = tp("badmsa");
    MF_TEST_OK(mf_featurize_run(&o, NULL, NULL, &r));
    MF_TEST_TRUE(r.chains_failed == 2 && r.rejected_by[MF_REJECT_DUPLICATE] == 0 &&
                     note_has(r.failed, r.num_failed, "1ubq_A", "1ubq.pdb", "badmsa/1ubq_A.a3m"),
                 "wrong MSA: %s", r.num_failed > 1 ? r.failed[1].why : "(none)");
    mf_featurize_report_free(&r);
    o.msa_dir = NULL;
    MF_TEST_OK(mf_featurize_run(&o, NULL, NULL, &r));
    MF_TEST_TRUE(r.rejected_by[MF_REJECT_DUPLICATE] == 1 &&
                     note_has(r.rejected, r.num_rejected, "1ubq_A", "already", NULL),
                 "duplicate group name rejected");
    mf_featurize_report_free(&r);
    unlink(tp("s/sub/1ubq.pdb"));

    /* Option errors. */
    o = base_options();
    o.release_before = "2020-13-01";
    st = mf_featurize_run(&o, NULL, NULL, &r);
    MF_TEST_TRUE(st == MF_ERR_INVALID && strstr(mf_last_error(), "--release-before"),
                 "bad date: %s", mf_last_error());
    o = base_options();
    o.template_hits_dir = tp("hits");
    st = mf_featurize_run(&o, NULL, NULL, &r);
    MF_TEST_TRUE(st == MF_ERR_INVALID && strstr(mf_last_error(), "--template-mmcif-dir"),
                 "hits without mmCIF dir: %s", mf_last_error());
    o = base_options();
    o.jackhmmer_db = sd("seqdb/hmmer_globins45.fa");
    o.jackhmmer_bin = "/nonexistent/jackhmmer";
    st = mf_featurize_run(&o, NULL, NULL, &r);
    MF_TEST_TRUE(st == MF_ERR_UNSUPPORTED && strstr(mf_last_error(), "'hmmer'"),
                 "missing jackhmmer names the package: %s", mf_last_error());
}

static void check_jackhmmer(void)
{
    char bin[4096];
    mf_jackhmmer_options jo = {.database = sd("seqdb/hmmer_globins45.fa")};
    if (mf_jackhmmer_find(&jo, bin, sizeof bin) != MF_OK) {
        printf("  jackhmmer not installed (Debian package hmmer): jackhmmer run not checked\n");
        return;
    }
    /* Work files go to TMPDIR: it must be empty again afterwards. */
    mkdir(tp("jtmp"), 0755);
    const char *old = getenv("TMPDIR");
    char *saved = old ? strdup(old) : NULL;
    setenv("TMPDIR", tp("jtmp"), 1);
    mkdir(tp("js"), 0755);
    link_into(tp("js"), sd("structures/train/psicov150/1a6m.pdb"), "1a6m.pdb");
    mf_featurize_options o = {0};
    o.structures_dir = tp("js");
    o.output = tp("jk.h5");
    o.jackhmmer_db = sd("seqdb/hmmer_globins45.fa");
    mf_featurize_report r;
    MF_TEST_OK(mf_featurize_run(&o, NULL, NULL, &r));
    mf_featurize_report_free(&r);
    if (saved) {
        setenv("TMPDIR", saved, 1);
        free(saved);
    } else {
        unsetenv("TMPDIR");
    }
    DIR *d = opendir(tp("jtmp"));
    int left = 0;
    for (struct dirent *e; d && (e = readdir(d));) left += e->d_name[0] != '.';
    if (d) closedir(d);
    MF_TEST_TRUE(left == 0, "jackhmmer work directory removed");
    hid_t f;
    if (mf_h5_open_read(tp("jk.h5"), &f) != MF_OK) {
        mf_test_fail("jk.h5: %s", mf_last_error());
        return;
    }
    mf_h5_array msa;
    char *src = NULL, *seq = NULL;
    MF_TEST_OK(mf_h5_read_array(f, "jk.h5", "/1a6m_A/msa", MF_I8, &msa));
    MF_TEST_OK(mf_h5_read_attr_string(f, "/1a6m_A", "msa_sources", &src));
    MF_TEST_OK(mf_h5_read_attr_string(f, "/1a6m_A", "sequence", &seq));
    int row0 = msa.data && seq && msa.shape[1] == (int64_t)strlen(seq);
    for (int64_t i = 0; row0 && i < msa.shape[1]; i++)
        row0 = ((int8_t *)msa.data)[i] == mf_hhblits_aa_to_id(seq[i]);
    printf("  1a6m (myoglobin) vs 45 globins: %lld rows\n", (long long)msa.shape[0]);
    /* Every globin of the set is found at E < 1e-4 by one iteration from a myoglobin. */
    MF_TEST_TRUE(row0 && msa.shape[0] > 30 && src && strstr(src, "jackhmmer:"),
                 "jackhmmer MSA: %lld rows, row 0 the sequence, source %s", (long long)msa.shape[0],
                 src ? src : "");
    free(src);
    free(seq);
    mf_h5_array_free(&msa);
    H5Fclose(f);
}

int main(void)
{
    snprintf(shared_data, sizeof shared_data, "%s/data", mf_test_shared_dir());
    const char *t = getenv("TMPDIR");
    snprintf(tmp, sizeof tmp, "%s/memfold-test-featurize-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmp)) return mf_test_skip("cannot create a temporary directory");
    printf("featurize tests (exact comparisons; coordinates parsed from 3 decimals within %g)\n",
           COORD_ATOL);
    check_entry_names();
    check_arginine_fix();
    check_real_templates();
    check_synthetic_templates();
    check_runs();
    check_jackhmmer();
    nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return mf_test_finish("test_featurize");
}
