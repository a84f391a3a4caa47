/* Every structure file of the shared data set (shared/data/structures, 334 files: mmCIF, PDB,
 * gzipped, NMR, CASP, Pfam domains) goes through mf_structure_read, and:
 *  - it parses, or is listed in expected_rejections with the reason (none are today);
 *  - its protein chains and their observed-residue counts (residues with at least one atom) are
 *    the manifest's all_chains, and its resolution the manifest's, except where chain_exceptions
 *    gives the reason (the manifest counts residues with gemmi, which also counts ligands and
 *    both residues of a microheterogeneity);
 *  - for the 150 PSICOV entries, the manifest chain's residues with an observed CA spell the
 *    sequence of fasta/psicov150/<id>.fasta, except where psicov_exceptions says which residues
 *    the FASTA leaves out or adds and why;
 *  - hand-checked values (read from the files with grep) for entries that carry the data set's
 *    edge cases: insertion codes, alternate locations, multi-model NMR, quotes inside quoted CIF
 *    values, the CA-only 1LZH, gzipped files, old-dictionary mmCIF, CASP blank chain ids,
 *    header-less Pfam domains, MSE;
 * and the malformed files in tests/data/structures are rejected with file, line and field. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/mmcif.h"
#include "data/structure_io.h"
#include "tests/support/mf_test.h"

/* Coordinates are compared with what the file says (3 decimals): the float nearest to a
 * 3-decimal number is within 1e-5 of it for |x| < 1000. */
#define COORD_ATOL 1e-5

/* ---- the manifest ---- */

typedef struct {
    char *path; /* relative to shared/data, "structures/..." */
    char *chain, *all_chains, *method;
    double resolution;
    int seen;
} manifest_row;

static manifest_row rows[1024];
static int n_rows;

static char *column(char *line, int k)
{
    char *p = line;
    for (int i = 0; i < k && p; i++) {
        p = strchr(p, '\t');
        if (p) p++;
    }
    if (!p) return NULL;
    size_t n = strcspn(p, "\t\n");
    char *s = malloc(n + 1);
    if (s) memcpy(s, p, n), s[n] = '\0';
    return s;
}

static int load_manifest(const char *data)
{
    char path[2048], line[4096];
    snprintf(path, sizeof path, "%s/manifest.tsv", data);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f) && n_rows < (int)(sizeof rows / sizeof rows[0])) {
        if (strncmp(line, "structures/", 11) != 0) continue;
        manifest_row *r = &rows[n_rows++];
        r->path = column(line, 0);
        r->chain = column(line, 4);
        r->all_chains = column(line, 6);
        r->method = column(line, 8);
        char *res = column(line, 9);
        r->resolution = res && res[0] ? atof(res) : 0.;
        free(res);
    }
    fclose(f);
    return 0;
}

static manifest_row *find_row(const char *rel)
{
    for (int i = 0; i < n_rows; i++)
        if (rows[i].path && !strcmp(rows[i].path, rel)) return &rows[i];
    return NULL;
}

/* ---- tables of expected differences, each with its reason ---- */

static const struct {
    const char *path, *needle, *reason;
} expected_rejections[] = {
    {NULL, NULL, NULL}, /* every file of the data set parses */
};

static const struct {
    const char *path, *chains, *reason;
} chain_exceptions[] = {
    {"structures/train/pdb/1ejg.pdb", "A:46",
     "microheterogeneity PRO/SER 22 and LEU/ILE 25: one residue each (SEQRES has 46); the "
     "manifest counts both residues of each pair (48)"},
    {"structures/train/pdb/1g6c.pdb", "B:227,A:226,C:226,D:227",
     "assembly file: the manifest counts the Mg ion of chains A and D as a residue and does not "
     "list chain C, the symmetry copy of A"},
    {"structures/train/psicov150/1jbe.pdb", "A:127",
     "SNN 75 (MODRES of ASN, no atom37 atom names) has no atom37 atoms; the manifest counts it"},
};

static const struct {
    const char *id;
    int n_drop;
    int drop[8]; /* author numbers the FASTA leaves out */
    const char *extra, *reason;
} psicov_exceptions[] = {
    {"1c52", 3, {1, 2, 131}, "", "residues whose atoms all have occupancy 0"},
    {"1dmg", 6, {186, 187, 188, 189, 190, 191}, "", "residues with occupancy 0"},
    {"1fx2", 2, {1036, 1037}, "", "residues with occupancy 0"},
    {"1gz2", 5, {64, 65, 66, 67, 68}, "", "residues with occupancy 0"},
    {"1tif", 2, {3, 4}, "", "residues with occupancy 0"},
    {"1hdo", 1, {120}, "", "LYS 120: C, O and side chain at occupancy 0"},
    {"1hxn", 1, {225}, "", "GLU 225 has no N atom"},
    {"1i1n", 0, {0}, "C", "the FASTA ends with the ligand SAH 1300 (read as C)"},
    {"1xff", 0, {0}, "E", "the FASTA ends with the free glutamate ligand GLU 5300"},
};

/* ---- per-file checks ---- */

static int ca_slot(void)
{
    return mf_atom37_index("CA");
}

static const mf_protein *chain_of(const mf_protein *c, int n, const char *id)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(c[i].chain_id, id)) return &c[i];
    return NULL;
}

static void check_chains_vs_manifest(const manifest_row *r, const mf_protein *c, int n)
{
    char got[2048] = "";
    size_t k = 0;
    for (int i = 0; i < n && k + 32 < sizeof got; i++)
        k += (size_t)snprintf(got + k, sizeof got - k, "%s%s:%lld", i ? "," : "", c[i].chain_id,
                              (long long)mf_protein_num_observed(&c[i]));
    /* The manifest writes a blank chain id as "_"; the reader names it A. */
    char want[2048];
    snprintf(want, sizeof want, "%s", r->all_chains ? r->all_chains : "");
    for (char *p = want; *p; p++)
        if (*p == '_' && (p == want || p[-1] == ',') && p[1] == ':') *p = 'A';
    for (size_t e = 0; e < sizeof chain_exceptions / sizeof chain_exceptions[0]; e++)
        if (!strcmp(chain_exceptions[e].path, r->path)) {
            printf("  %s: chains %s (manifest %s): %s\n", r->path, got, want,
                   chain_exceptions[e].reason);
            snprintf(want, sizeof want, "%s", chain_exceptions[e].chains);
        }
    /* Chain order may differ from the manifest's: compare as sets of "id:count". */
    int ok = 1, n_want = 0;
    for (char *tok = want; *tok; n_want++) {
        size_t len = strcspn(tok, ",");
        char item[64];
        snprintf(item, sizeof item, "%.*s", (int)len, tok);
        char *colon = strchr(item, ':');
        if (!colon) {
            ok = 0;
            break;
        }
        *colon = '\0';
        const mf_protein *p = chain_of(c, n, item);
        if (!p || mf_protein_num_observed(p) != atoll(colon + 1)) ok = 0;
        tok += len + (tok[len] == ',');
    }
    MF_TEST_TRUE(ok && n_want == n, "%s: chains %s, manifest %s", r->path, got, want);
    double res = n ? c[0].entry.resolution : 0.;
    MF_TEST_TRUE(n == 0 || (res >= r->resolution - 1e-9 && res <= r->resolution + 1e-9),
                 "%s: resolution %g, manifest %g", r->path, res, r->resolution);
}

static void check_psicov(const char *data, const manifest_row *r, const mf_protein *c, int n)
{
    const char *base = strrchr(r->path, '/') + 1;
    char id[16], path[2048];
    snprintf(id, sizeof id, "%.*s", (int)strcspn(base, "."), base);
    snprintf(path, sizeof path, "%s/fasta/psicov150/%s.fasta", data, id);
    FILE *f = fopen(path, "r");
    char line[4096], fasta[4096] = "";
    size_t k = 0;
    while (f && fgets(line, sizeof line, f))
        for (char *p = line; *p && line[0] != '>' && k + 1 < sizeof fasta; p++)
            if (*p >= 'A' && *p <= 'Z') fasta[k++] = *p;
    fasta[k] = '\0';
    if (f) fclose(f);
    MF_TEST_TRUE(k > 0, "%s: no sequence read", path);
    const mf_protein *p = chain_of(c, n, r->chain);
    MF_TEST_TRUE(p != NULL, "%s: no chain %s", r->path, r->chain);
    if (!p || !k) return;
    int e = -1;
    for (size_t i = 0; i < sizeof psicov_exceptions / sizeof psicov_exceptions[0]; i++)
        if (!strcmp(psicov_exceptions[i].id, id)) e = (int)i;
    char obs[4096];
    size_t m = 0;
    for (int64_t i = 0; i < p->num_res && m + 2 < sizeof obs; i++) {
        if (p->atom_mask[i * MF_ATOM37 + ca_slot()] == 0.f) continue;
        int drop = 0;
        for (int d = 0; e >= 0 && d < psicov_exceptions[e].n_drop; d++)
            drop |= psicov_exceptions[e].drop[d] == p->residue_index[i];
        if (!drop) obs[m++] = p->sequence[i];
    }
    obs[m] = '\0';
    if (e >= 0) {
        strncat(obs, psicov_exceptions[e].extra, sizeof obs - m - 1);
        printf("  psicov %s: %s\n", id, psicov_exceptions[e].reason);
    }
    MF_TEST_TRUE(!strcmp(obs, fasta), "psicov %s chain %s: observed\n  %s\n  fasta\n  %s", id,
                 r->chain, obs, fasta);
}

static int64_t find_residue(const mf_protein *p, int32_t num, char ins)
{
    for (int64_t i = 0; p && i < p->num_res; i++)
        if (p->residue_index[i] == num && p->insertion_code[i] == ins) return i;
    return -1;
}

static void check_atom(const char *file, const mf_protein *p, int32_t num, char ins,
                       const char *atom, double x, double y, double z)
{
    char what[128], insb[2] = {ins == ' ' ? '\0' : ins, '\0'};
    snprintf(what, sizeof what, "%s %s %d%s %s", file, p ? p->chain_id : "?", num, insb, atom);
    int64_t i = find_residue(p, num, ins);
    int a = mf_atom37_index(atom);
    MF_TEST_TRUE(i >= 0 && a >= 0 && p->atom_mask[i * MF_ATOM37 + a] == 1.f,
                 "%s: residue or atom missing", what);
    if (i < 0 || a < 0) return;
    const double ref[3] = {x, y, z};
    mf_check_close_f32_f64(what, p->atom_positions + (i * MF_ATOM37 + a) * 3, ref, 3, COORD_ATOL,
                           0.);
}

static void check_entry(const char *file, const mf_protein *p, int64_t num_res, double resolution,
                        const char *date, const char *method, const char *id)
{
    MF_TEST_TRUE(p != NULL, "%s: chain missing", file);
    if (!p) return;
    MF_TEST_TRUE(p->num_res == num_res, "%s %s: %lld residues, expected %lld", file, p->chain_id,
                 (long long)p->num_res, (long long)num_res);
    MF_TEST_TRUE(p->entry.resolution == resolution && !strcmp(p->entry.release_date, date) &&
                     !strcmp(p->entry.method, method) && !strcmp(p->entry.entry_id, id),
                 "%s: entry %g '%s' '%s' '%s', expected %g '%s' '%s' '%s'", file,
                 p->entry.resolution, p->entry.release_date, p->entry.method, p->entry.entry_id,
                 resolution, date, method, id);
}

/* Values read from the files with grep (the lines are quoted in the comments). */
static void hand_checks(const char *rel, const mf_protein *c, int n)
{
    const char *f = strrchr(rel, '/') + 1;
    if (!strcmp(f, "1aki.cif")) {
        /* ATOM 1 N N . LYS A 1 1 ? 35.365 22.342 -11.980 1.00 22.28 ? 1 LYS A N 1 */
        const mf_protein *a = chain_of(c, n, "A");
        check_entry(f, a, 129, 1.5, "1997-11-19", "X-RAY DIFFRACTION", "1AKI");
        check_atom(f, a, 1, ' ', "N", 35.365, 22.342, -11.980);
        MF_TEST_TRUE(a && !strncmp(a->sequence, "KVFGRCELAAAMKRHGLDNY", 20) &&
                         a->b_factors[0] == 22.28f,
                     "1aki: sequence or B-factor");
    } else if (!strcmp(f, "1gya.cif")) {
        /* model 1: ATOM 1 N N . LYS A 1 1 ? 17.237 9.222 -17.200; model 2 has 18.950 5.726 */
        const mf_protein *a = chain_of(c, n, "A");
        check_entry(f, a, 105, 0., a ? a->entry.release_date : "", "SOLUTION NMR", "1GYA");
        check_atom(f, a, 1, ' ', "N", 17.237, 9.222, -17.200);
    } else if (!strcmp(f, "3o5r.cif")) {
        /* MET 48: CA A 0.25 (61.685 22.102 2.887), CA B 0.75 (61.644 21.720 2.897);
         * GLU 23: CA A 0.50 (52.454 3.092 -0.167), CA B 0.50 (52.459 2.870 -0.215) */
        const mf_protein *a = chain_of(c, n, "A");
        check_atom(f, a, 48, ' ', "CA", 61.644, 21.720, 2.897);
        check_atom(f, a, 48, ' ', "SD", 64.260, 24.849, 1.956);
        check_atom(f, a, 23, ' ', "CA", 52.454, 3.092, -0.167);
    } else if (!strcmp(f, "1igy.cif")) {
        /* ATOM 2540 C CA . PRO B 2 52 A 0.530 -39.717 -24.436 ... 52 PRO B CA 1 */
        const mf_protein *b = chain_of(c, n, "B");
        check_atom(f, b, 52, 'A', "CA", 0.530, -39.717, -24.436);
        check_atom(f, b, 82, 'A', "CA", -11.791, -20.565, -17.197);
        check_atom(f, b, 82, 'B', "CA", -15.223, -19.894, -15.676);
    } else if (!strcmp(f, "4zey.cif")) {
        /* HETATM 11 SE SE . MSE A 1 2 ? 9.630 24.320 9.473 0.75 35.01 ? 4 MSE A SE 1 */
        const mf_protein *a = chain_of(c, n, "A");
        check_entry(f, a, 84, 1.5, "2015-05-06", "X-RAY DIFFRACTION", "4ZEY");
        check_atom(f, a, 4, ' ', "SD", 9.630, 24.320, 9.473);
        MF_TEST_TRUE(a && a->aatype[1] == 12 && a->sequence[1] == 'M', "4zey: MSE not read as MET");
    } else if (!strcmp(f, "2q2k.cif")) {
        MF_TEST_TRUE(n == 2 && chain_of(c, n, "A") && chain_of(c, n, "B"),
                     "2q2k: expected protein chains A and B only (F is DNA)");
    } else if (!strcmp(f, "5eil.cif")) {
        /* BP5 (3-(2,2'-bipyridin-5-yl)-L-alanine) has no parent: X */
        const mf_protein *a = chain_of(c, n, "A");
        MF_TEST_TRUE(a && !strncmp(a->sequence, "MSKLGEMLIXAV", 12), "5eil: BP5 not X: %.12s",
                     a ? a->sequence : "");
    } else if (!strcmp(f, "1a8o.cif.gz")) {
        /* dictionary 4.007: _database_PDB_rev 1 1998-10-14 */
        check_entry(f, chain_of(c, n, "A"), 70, 1.7, "1998-10-14", "X-RAY DIFFRACTION", "1A8O");
    } else if (!strcmp(f, "1lzh.pdb.gz")) {
        /* ATOM 1 CA LYS A 1 0.242 23.458 -14.616; MDLTYP CA ATOMS ONLY */
        const mf_protein *a = chain_of(c, n, "A");
        check_entry(f, a, 129, 6.0, "1981-09-28", "X-RAY DIFFRACTION", "1LZH");
        check_atom(f, a, 1, ' ', "CA", 0.242, 23.458, -14.616);
        int64_t atoms = 0;
        for (int64_t i = 0; a && i < a->num_res * MF_ATOM37; i++) atoms += a->atom_mask[i] > 0.f;
        MF_TEST_TRUE(a && atoms == 129 && mf_protein_num_observed_ca(a) == 129,
                     "1lzh: %lld atoms, expected 129 CA only", (long long)atoms);
    } else if (!strcmp(f, "1a0q.pdb")) {
        /* ATOM 2048 CA PRO H 52A 17.911 35.670 63.534 */
        const mf_protein *h = chain_of(c, n, "H");
        check_entry(f, h, 217, 2.3, "1999-03-02", "X-RAY DIFFRACTION", "1A0Q");
        check_atom(f, h, 52, 'A', "CA", 17.911, 35.670, 63.534);
        check_atom(f, h, 82, 'B', "CA", 38.017, 31.252, 47.378);
    } else if (!strcmp(f, "1d3z.pdb")) {
        /* MODEL 1: ATOM 1 N MET A 1 52.923 -90.016 8.509 */
        const mf_protein *a = chain_of(c, n, "A");
        check_entry(f, a, 76, 0., "1999-10-14", "SOLUTION NMR", "1D3Z");
        check_atom(f, a, 1, ' ', "N", 52.923, -90.016, 8.509);
    } else if (!strcmp(f, "1a3a.pdb")) {
        const mf_protein *a = chain_of(c, n, "A");
        /* SEQRES MET ALA ASN LEU ...; ATOM 1 N LEU A 4 -3.883 41.780 40.071 */
        check_entry(f, a, 148, 1.8, "1998-08-12", "X-RAY DIFFRACTION", "1A3A");
        check_atom(f, a, 4, ' ', "N", -3.883, 41.780, 40.071);
        MF_TEST_TRUE(a && mf_protein_num_observed(a) == 145 && a->residue_index[3] == 4 &&
                         a->residue_index[0] == 1 && a->atom_mask[ca_slot()] == 0.f,
                     "1a3a: SEQRES residues 1-3 should be unobserved (numbered 1-3), 145 observed");
    } else if (!strcmp(f, "T1025.pdb")) {
        /* REMARK 3 RESOLUTION RANGE HIGH (ANGSTROMS) : 2.04; ATOM 1 N SER 12 25.933 50.352 */
        const mf_protein *a = chain_of(c, n, "A");
        check_entry(f, a, 257, 2.04, "", "", "");
        check_atom(f, a, 12, ' ', "N", 25.933, 50.352, 14.538);
    } else if (!strcmp(f, "1AQT_A.pdb")) {
        /* no header: ATOM 1 N SER A 2 22.021 25.131 22.694 */
        const mf_protein *a = chain_of(c, n, "A");
        check_entry(f, a, 135, 0., "", "", "");
        check_atom(f, a, 2, ' ', "N", 22.021, 25.131, 22.694);
    } else {
        return;
    }
    printf("  hand-checked %s\n", rel);
}

/* The CIF layer on the data set's quote cases. */
static void check_cif_quotes(const char *data)
{
    struct {
        const char *file, *category, *key_item, *key, *item, *want;
    } q[] = {
        /* ATOM 1 O "O5'" . DA A 1 1 ? 10.101 -2.584 7.575 ... */
        {"2q2k.cif", "_atom_site", "id", "1", "label_atom_id", "O5'"},
        /* DA 'DNA linking' y "2'-DEOXYADENOSINE-5'-MONOPHOSPHATE" */
        {"5ugo.cif", "_chem_comp", "id", "DA", "name", "2'-DEOXYADENOSINE-5'-MONOPHOSPHATE"},
        /* DA "H5''" H N N 128 */
        {"5ugo.cif", "_chem_comp_atom", "pdbx_ordinal", "128", "atom_id", "H5''"},
        /* BP5 'L-peptide linking' n "3-(2,2'-BIPYRIDIN-5-YL)-L-ALANINE" */
        {"5eil.cif", "_chem_comp", "id", "BP5", "name", "3-(2,2'-BIPYRIDIN-5-YL)-L-ALANINE"},
    };
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        char path[2048], *text = NULL;
        size_t len = 0;
        snprintf(path, sizeof path, "%s/structures/train/mmcif/%s", data, q[i].file);
        mf_cif *cif = NULL;
        MF_TEST_OK(mf_read_text_file(path, &text, &len));
        if (text) MF_TEST_OK(mf_cif_parse(&cif, text, len, path));
        free(text);
        const mf_cif_table *t = mf_cif_find(cif, q[i].category);
        int ck = mf_cif_column(t, q[i].key_item), cv = mf_cif_column(t, q[i].item);
        const char *got = NULL;
        for (int64_t r = 0; r < mf_cif_rows(t) && !got && ck >= 0 && cv >= 0; r++)
            if (!strcmp(mf_cif_get(t, r, ck)->s, q[i].key) &&
                (i != 2 || !strcmp(mf_cif_get(t, r, 0)->s, "DA")))
                got = mf_cif_get(t, r, cv)->s;
        MF_TEST_TRUE(got && !strcmp(got, q[i].want), "%s %s.%s: '%s', expected '%s'", q[i].file,
                     q[i].category, q[i].item, got ? got : "(none)", q[i].want);
        printf("  %s %s.%s = %s\n", q[i].file, q[i].category, q[i].item, got ? got : "(none)");
        mf_cif_free(cif);
    }
}

static void check_malformed(void)
{
    const char *src = getenv("MEMFOLD_SOURCE");
    if (!src) src = ".";
    struct {
        const char *file, *needle;
    } bad[] = {
        {"truncated.cif", "truncated.cif:20: _atom_site: loop has 83 values, not a multiple of "
                          "its 15 columns (loop ends at line 41)"},
        {"missing_column.cif",
         "missing_column.cif:20: _atom_site.Cartn_z: missing required column"},
        {"nan_coordinate.cif", "nan_coordinate.cif:39: _atom_site.Cartn_x: 'NaN' is not a finite"},
        {"bad_loop_count.cif", "bad_loop_count.cif:9: _pdbx_poly_seq_scheme: loop has 20 values, "
                               "not a multiple of its 7 columns"},
        {"unterminated_text.cif", "unterminated_text.cif:4: text field: ';' field not terminated"},
        {"unterminated_quote.cif", "unterminated_quote.cif:3: quoted string: no closing '"},
        {"truncated_stream.cif.gz", "truncated_stream.cif.gz: corrupt or truncated gzip data"},
        {"truncated.pdb", "truncated.pdb:6: ATOM: record of 40 characters"},
        {"nan_coordinate.pdb", "nan_coordinate.pdb:6: ATOM x: '     nan' is not a finite"},
        {"bad_resseq.pdb", "bad_resseq.pdb:5: ATOM resSeq: '2x' is not an integer"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char path[2048];
        snprintf(path, sizeof path, "%s/tests/data/structures/%s", src, bad[i].file);
        mf_protein *c = (mf_protein *)1;
        int n = -1;
        mf_status st = mf_structure_read(path, &c, &n);
        MF_TEST_TRUE(st == MF_ERR_FORMAT && c == NULL && n == 0, "%s: status %s, output %s",
                     bad[i].file, mf_status_name(st), c ? "left" : "none");
        MF_TEST_TRUE(strstr(mf_last_error(), bad[i].needle) != NULL, "%s: message lacks '%s': %s",
                     bad[i].file, bad[i].needle, mf_last_error());
        printf("  %s -> %s\n", bad[i].file, mf_last_error());
        if (st == MF_OK) mf_protein_list_free(c, n);
    }
    const char *good[2] = {"valid_mini.cif", "valid_mini.pdb"};
    for (int i = 0; i < 2; i++) {
        char path[2048];
        snprintf(path, sizeof path, "%s/tests/data/structures/%s", src, good[i]);
        mf_chain_summary *s = NULL;
        int n = 0;
        MF_TEST_OK(mf_structure_list_chains(path, &s, &n));
        MF_TEST_TRUE(n == 1 && !strcmp(s[0].chain_id, "A") && s[0].num_observed >= 2,
                     "%s: the unbroken file should give chain A", good[i]);
        free(s);
    }
}

/* ---- the walk ---- */

static char *files[1024];
static int n_files;

static void walk(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (stat(path, &sb) != 0) continue;
        if (S_ISDIR(sb.st_mode))
            walk(path);
        else if (n_files < (int)(sizeof files / sizeof files[0]))
            files[n_files++] = strdup(path);
    }
    closedir(d);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(void)
{
    const char *shared = mf_test_shared_dir();
    char data[1024], dir[1100];
    snprintf(data, sizeof data, "%s/data", shared ? shared : ".");
    snprintf(dir, sizeof dir, "%s/structures", data);
    if (load_manifest(data) != 0) return mf_test_skip("shared/data/manifest.tsv not readable");
    walk(dir);
    qsort(files, (size_t)n_files, sizeof files[0], cmp_str);
    printf("%d structure files under %s, %d in the manifest\n", n_files, dir, n_rows);
    MF_TEST_TRUE(n_files > 300 && n_files == n_rows, "walked %d files, manifest lists %d", n_files,
                 n_rows);
    int parsed = 0, rejected = 0, psicov = 0;
    for (int i = 0; i < n_files; i++) {
        const char *rel = files[i] + strlen(data) + 1;
        manifest_row *r = find_row(rel);
        MF_TEST_TRUE(r != NULL, "%s is not in the manifest", rel);
        if (r) r->seen = 1;
        mf_protein *c = NULL;
        int n = 0;
        mf_status st = mf_structure_read(files[i], &c, &n);
        int listed = 0;
        for (size_t k = 0; expected_rejections[k].path; k++)
            if (!strcmp(expected_rejections[k].path, rel)) {
                listed = 1;
                MF_TEST_TRUE(st != MF_OK && strstr(mf_last_error(), expected_rejections[k].needle),
                             "%s: expected rejection (%s), got %s: %s", rel,
                             expected_rejections[k].reason, mf_status_name(st), mf_last_error());
            }
        if (st != MF_OK) {
            rejected++;
            MF_TEST_TRUE(listed, "%s: rejected: %s", rel, mf_last_error());
            continue;
        }
        parsed++;
        if (r) check_chains_vs_manifest(r, c, n);
        if (r && strstr(rel, "/psicov150/")) psicov++, check_psicov(data, r, c, n);
        hand_checks(rel, c, n);
        mf_protein_list_free(c, n);
    }
    for (int i = 0; i < n_rows; i++)
        MF_TEST_TRUE(rows[i].seen, "manifest file %s not found", rows[i].path);
    printf("%d parsed, %d rejected; %d PSICOV chains checked against their FASTA\n", parsed,
           rejected, psicov);
    MF_TEST_TRUE(psicov == 150, "%d PSICOV entries, expected 150", psicov);
    check_cif_quotes(data);
    check_malformed();
    for (int i = 0; i < n_files; i++) free(files[i]);
    for (int i = 0; i < n_rows; i++) {
        free(rows[i].path);
        free(rows[i].chain);
        free(rows[i].all_chains);
        free(rows[i].method);
    }
    return mf_test_finish("test_structures_all");
}
