/* The legacy PDB reader on a small hand-written entry: SEQRES with an unobserved residue, the
 * observed residues placed on it by numbering (insertion code, a numbering gap that an in-order
 * greedy match would place wrongly), MSE -> MET with SE -> SD, a MODRES residue read as its
 * parent, alternate locations, ligands after TER and waters left out, a DNA chain left out, first
 * MODEL only, REMARK 2 resolution over REMARK 3, REVDAT 1 release date. A header-less CASP-style
 * file (blank chain id -> "A", target numbering). Malformed records rejected with file:line and
 * field; every truncation and random corruptions neither crash nor leave output. */
#include <stdlib.h>
#include <string.h>

#include "data/pdb.h"
#include "tests/support/mf_test.h"

/* A decimal read into float is the float nearest to it, as is the literal: exact equality. */
#define EXACT 0.0

static char text[16384];
static size_t text_len;

static void add(const char *line)
{
    size_t n = strlen(line);
    if (text_len + n + 2 >= sizeof text) return;
    memcpy(text + text_len, line, n);
    text_len += n;
    text[text_len++] = '\n';
    text[text_len] = '\0';
}

/* An ATOM/HETATM record in the fixed columns of the PDB format (v3.3). */
static void atom(const char *rec, const char *name, char alt, const char *res, char chain, int num,
                 char ins, double x, double y, double z, double occ, double b)
{
    char line[96];
    snprintf(line, sizeof line, "%-6s%5d %-4s%c%3s %c%4d%c   %8.3f%8.3f%8.3f%6.2f%6.2f", rec, 1,
             name, alt, res, chain, num, ins, x, y, z, occ, b);
    add(line);
}

static void build_entry(void)
{
    text_len = 0;
    text[0] = '\0';
    add("HEADER    TEST PROTEIN                            01-JAN-00   9XYZ              ");
    add("EXPDTA    X-RAY DIFFRACTION");
    add("REVDAT   2   05-MAY-05 9XYZ    1       REMARK");
    add("REVDAT   1   28-SEP-81 9XYZ    0");
    add("REMARK   2 RESOLUTION.    1.80 ANGSTROMS.");
    add("REMARK   3   RESOLUTION RANGE HIGH (ANGSTROMS) : 1.85");
    add("SEQRES   1 A    7  MET GLY MSE SEP ALA GLY LYS");
    add("SEQRES   1 B    5  GLY ALA ALA GLY ALA");
    add("SEQRES   1 C    2   DA  DT");
    add("MODRES 9XYZ SEP A    4  SER  PHOSPHOSERINE");
    add("MODEL        1");
    atom("ATOM", " N", ' ', "GLY", 'A', 2, ' ', 1, 2, 3, 1, 10);
    atom("ATOM", " CA", ' ', "GLY", 'A', 2, ' ', 2, 2, 3, 1, 11);
    atom("HETATM", " N", ' ', "MSE", 'A', 3, ' ', 3, 0, 0, 1, 12);
    atom("HETATM", "SE", ' ', "MSE", 'A', 3, ' ', 4, 5, 6, 1, 13);
    atom("HETATM", " N", ' ', "SEP", 'A', 4, ' ', 5, 0, 0, 1, 14);
    atom("HETATM", " P", ' ', "SEP", 'A', 4, ' ', 5, 1, 0, 1, 14);
    atom("ATOM", " N", 'A', "ALA", 'A', 5, ' ', 6, 0, 0, 0.3, 15);
    atom("ATOM", " N", 'B', "ALA", 'A', 5, ' ', 6.5, 0, 0, 0.7, 15);
    atom("ATOM", " CA", ' ', "ALA", 'A', 5, ' ', 7, 0, 0, 1, 15);
    atom("ATOM", " N", ' ', "GLY", 'A', 5, 'A', 8, 0, 0, 1, 16);
    atom("ATOM", " H", ' ', "GLY", 'A', 5, 'A', 8, 1, 0, 1, 16);
    atom("ATOM", " N", ' ', "LYS", 'A', 6, ' ', 9, 0, 0, 1, 17);
    atom("ATOM", " NZ", ' ', "LYS", 'A', 6, ' ', 9, 9, 9, 1, 17);
    add("TER       1      LYS A   6");
    atom("ATOM", " N", ' ', "GLY", 'B', 10, ' ', 10, 0, 0, 1, 20);
    atom("ATOM", " N", ' ', "ALA", 'B', 12, ' ', 12, 0, 0, 1, 21);
    add("TER       1      ALA B  12");
    atom("ATOM", " P", ' ', " DA", 'C', 1, ' ', 0, 0, 9, 1, 30);
    atom("ATOM", " P", ' ', " DT", 'C', 2, ' ', 0, 1, 9, 1, 30);
    add("TER       1       DT C   2");
    atom("HETATM", " C1", ' ', "GOL", 'A', 101, ' ', 20, 20, 20, 1, 40);
    atom("HETATM", " N", ' ', "ALA", 'A', 102, ' ', 21, 20, 20, 1, 40);
    atom("HETATM", " O", ' ', "HOH", 'A', 201, ' ', 30, 30, 30, 1, 50);
    add("ENDMDL");
    add("MODEL        2");
    atom("ATOM", " N", ' ', "GLY", 'A', 2, ' ', 99, 99, 99, 1, 10);
    add("ENDMDL");
    add("END");
}

static void check_atom(const mf_protein *p, int64_t res, const char *name, float x, float y,
                       float z)
{
    char what[64];
    snprintf(what, sizeof what, "chain %s residue %lld %s", p->chain_id, (long long)res, name);
    int a = mf_atom37_index(name);
    MF_TEST_TRUE(p->atom_mask[res * MF_ATOM37 + a] == 1.f, "%s: not observed", what);
    const float ref[3] = {x, y, z};
    mf_check_close_f32(what, p->atom_positions + (res * MF_ATOM37 + a) * 3, ref, 3, EXACT, EXACT);
}

static int64_t mask_count(const mf_protein *p, int64_t res)
{
    int64_t n = 0;
    for (int a = 0; a < MF_ATOM37; a++) n += p->atom_mask[res * MF_ATOM37 + a] > 0.f;
    return n;
}

static void check_entry(void)
{
    build_entry();
    mf_protein *c = NULL;
    int n = 0;
    MF_TEST_OK(mf_pdb_parse(text, text_len, "entry.pdb", &c, &n));
    MF_TEST_TRUE(n == 2, "%d chains, expected A and B (C is DNA)", n);
    if (n != 2) {
        mf_protein_list_free(c, n);
        return;
    }
    const mf_protein *a = &c[0], *b = &c[1];
    printf("chain %s: %s; chain %s: %s\n", a->chain_id, a->sequence, b->chain_id, b->sequence);
    MF_TEST_TRUE(!strcmp(a->chain_id, "A") && !strcmp(b->chain_id, "B"), "chain ids %s %s",
                 a->chain_id, b->chain_id);
    MF_TEST_TRUE(!strcmp(a->sequence, "MGMSAGK"),
                 "chain A sequence '%s', expected MGMSAGK (MSE -> M, SEP -> S by MODRES)",
                 a->sequence);
    const int32_t idx[7] = {1, 2, 3, 4, 5, 5, 6};
    const char ins[8] = "     A ";
    for (int i = 0; i < 7 && a->num_res == 7; i++)
        MF_TEST_TRUE(a->residue_index[i] == idx[i] && a->insertion_code[i] == ins[i],
                     "chain A residue %d numbered %d%c, expected %d%c", i, a->residue_index[i],
                     a->insertion_code[i], idx[i], ins[i]);
    const int64_t counts[7] = {0, 2, 2, 1, 2, 1, 2}; /* H, P of SEP: not atom37 */
    for (int i = 0; i < 7 && a->num_res == 7; i++)
        MF_TEST_TRUE(mask_count(a, i) == counts[i], "chain A residue %d has %lld atoms, not %lld",
                     i, (long long)mask_count(a, i), (long long)counts[i]);
    if (a->num_res == 7) {
        check_atom(a, 1, "N", 1.f, 2.f, 3.f); /* model 1, not model 2 */
        check_atom(a, 2, "SD", 4.f, 5.f, 6.f);
        check_atom(a, 4, "N", 6.5f, 0.f, 0.f); /* alt B: occupancy 0.7 */
        check_atom(a, 5, "N", 8.f, 0.f, 0.f);
        MF_TEST_TRUE(a->b_factors[2 * MF_ATOM37 + mf_atom37_index("SD")] == 13.f, "SD B-factor");
        MF_TEST_TRUE(a->aatype[2] == 12 && a->aatype[3] == 15, "aatype MSE %d SEP %d", a->aatype[2],
                     a->aatype[3]);
    }
    /* GLY 10 and ALA 12 go to positions 0 and 2 (numbering gap 2), not 0 and 1. */
    MF_TEST_TRUE(b->num_res == 5 && !strcmp(b->sequence, "GAAGA") && mask_count(b, 0) == 1 &&
                     mask_count(b, 1) == 0 && mask_count(b, 2) == 1,
                 "chain B placement wrong: %s, masks %lld %lld %lld", b->sequence,
                 (long long)mask_count(b, 0), (long long)mask_count(b, 1),
                 (long long)mask_count(b, 2));
    const int32_t idxb[5] = {10, 11, 12, 13, 14};
    for (int i = 0; i < 5 && b->num_res == 5; i++)
        MF_TEST_TRUE(b->residue_index[i] == idxb[i], "chain B residue %d numbered %d, not %d", i,
                     b->residue_index[i], idxb[i]);
    MF_TEST_TRUE(a->entry.resolution == 1.8 && !strcmp(a->entry.release_date, "1981-09-28") &&
                     !strcmp(a->entry.method, "X-RAY DIFFRACTION") &&
                     !strcmp(a->entry.entry_id, "9XYZ"),
                 "entry %g '%s' '%s' '%s'", a->entry.resolution, a->entry.release_date,
                 a->entry.method, a->entry.entry_id);
    mf_protein_list_free(c, n);
}

static void check_headerless(void)
{
    text_len = 0;
    text[0] = '\0';
    add("REMARK  T0000");
    add("REMARK   3   RESOLUTION RANGE HIGH (ANGSTROMS) : 2.04");
    atom("ATOM", " N", ' ', "SER", ' ', 12, ' ', 1, 1, 1, 1, 80);
    atom("ATOM", " CA", ' ', "SER", ' ', 12, ' ', 2, 1, 1, 1, 80);
    atom("ATOM", " CA", ' ', "TRP", ' ', 13, ' ', 3, 1, 1, 1, 80);
    atom("ATOM", " CA", ' ', "ASP", ' ', 20, ' ', 4, 1, 1, 1, 80);
    add("TER");
    add("END");
    mf_protein *c = NULL;
    int n = 0;
    MF_TEST_OK(mf_pdb_parse(text, text_len, "casp.pdb", &c, &n));
    MF_TEST_TRUE(n == 1 && !strcmp(c[0].chain_id, "A") && !strcmp(c[0].sequence, "SWD") &&
                     c[0].residue_index[2] == 20 && c[0].entry.resolution == 2.04 &&
                     c[0].entry.entry_id[0] == '\0',
                 "header-less file: %d chains, '%s'", n, n ? c[0].sequence : "");
    printf("header-less CASP-style file: chain %s, %s, resolution %g\n", n ? c[0].chain_id : "-",
           n ? c[0].sequence : "-", n ? c[0].entry.resolution : 0.);
    mf_protein_list_free(c, n);
}

static char *replace(const char *from, const char *to)
{
    build_entry();
    const char *at = strstr(text, from);
    if (!at) return NULL;
    size_t a = (size_t)(at - text), n = strlen(text) - strlen(from) + strlen(to);
    char *out = malloc(n + 1);
    if (!out) return NULL;
    memcpy(out, text, a);
    strcpy(out + a, to);
    strcat(out, at + strlen(from));
    return out;
}

static void check_robustness(void)
{
    build_entry();
    size_t len = text_len;
    int64_t ok = 0, rejected = 0, wrong = 0;
    char *buf = malloc(len + 1);
    if (!buf) return;
    for (size_t cut = 0; cut < len; cut++) {
        mf_protein *c = (mf_protein *)1;
        int n = -1;
        mf_status st = mf_pdb_parse(text, cut, "cut.pdb", &c, &n);
        if (st == MF_OK)
            ok++, mf_protein_list_free(c, n);
        else if (st == MF_ERR_FORMAT && c == NULL && n == 0)
            rejected++;
        else
            wrong++;
    }
    const char junk[] = " \n.-9eAXZ'";
    for (int trial = 0; trial < 2000; trial++) {
        memcpy(buf, text, len + 1);
        for (int k = 0; k < 3; k++) {
            uint32_t r = mf_rng_u32(4321, 0, (uint64_t)(trial * 3 + k));
            buf[r % len] = junk[(r >> 16) % (sizeof junk - 1)];
        }
        mf_protein *c = (mf_protein *)1;
        int n = -1;
        mf_status st = mf_pdb_parse(buf, len, "fuzz.pdb", &c, &n);
        if (st == MF_OK)
            ok++, mf_protein_list_free(c, n);
        else if (st == MF_ERR_FORMAT && c == NULL && n == 0)
            rejected++;
        else
            wrong++;
    }
    free(buf);
    printf("robustness: %zu truncations + 2000 corruptions: %lld parsed, %lld rejected, %lld "
           "other\n",
           len, (long long)ok, (long long)rejected, (long long)wrong);
    MF_TEST_TRUE(wrong == 0, "%lld inputs gave a status other than OK/FORMAT or left output",
                 (long long)wrong);
}

int main(void)
{
    check_entry();
    check_headerless();
    struct {
        char *text;
        const char *what, *needle;
    } bad[] = {
        {replace("   4.000   5.000   6.000  1.00 13.00", "   4.000   5.0"), "truncated record",
         "bad.pdb:15: HETATM: record of 44 characters"},
        {replace("   4.000   5.000   6.000", "     nan   5.000   6.000"), "NaN coordinate",
         "bad.pdb:15: HETATM x: '     nan' is not a finite number"},
        {replace("   4.000   5.000   6.000", "   4.000   5.0a0   6.000"), "non-numeric coordinate",
         "HETATM y: '   5.0a0' is not a finite number"},
        {replace("MSE A   3", "MSE A  3x"), "resSeq", "HETATM resSeq: '3x' is not an integer"},
        {replace("  1.00 13.00", "  1.0x 13.00"), "occupancy", "occupancy: '1.0x'"},
        {replace("SEQRES   1 A    7", "SEQRES   1 A    8"), "SEQRES count",
         "SEQRES: chain A declares 8 residues, lists 7"},
        {replace("   9.000   0.000   0.000  1.00 17.00", "   9.000   0.000   0.000  1.00 17.00\n"
                                                         "ATOM      1  CA  TRP A   7       1.000"
                                                         "   1.000   1.000  1.00 17.00"),
         "residue not in SEQRES", "TRP 7 has no place in the SEQRES"},
        {replace("28-SEP-81", "28-SPT-81"), "REVDAT date", "REVDAT modDate: '28-SPT-81'"},
        {replace("ATOM      1  N   GLY B  10", "ATOM      1  N   GLY    10"), "blank and A",
         "both a blank chain id (read as A) and chain A"},
        {replace("MODEL        1", "HETATM"), "HETATM without fields", "HETATM: record of 6"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mf_protein *c = (mf_protein *)1;
        int n = -1;
        const char *t = bad[i].text;
        mf_status st = t ? mf_pdb_parse(t, strlen(t), "bad.pdb", &c, &n) : MF_ERR_INVALID;
        MF_TEST_TRUE(t && st == MF_ERR_FORMAT, "%s: not rejected (status %s)", bad[i].what,
                     mf_status_name(st));
        MF_TEST_TRUE(c == NULL && n == 0, "%s: output left after failure", bad[i].what);
        MF_TEST_TRUE(strstr(mf_last_error(), "bad.pdb:") && strstr(mf_last_error(), bad[i].needle),
                     "%s: message lacks 'bad.pdb:' or '%s': %s", bad[i].what, bad[i].needle,
                     mf_last_error());
        printf("%s -> %s\n", bad[i].what, mf_last_error());
        if (st == MF_OK) mf_protein_list_free(c, n);
        free(bad[i].text);
    }
    check_robustness();
    return mf_test_finish("test_pdb");
}
