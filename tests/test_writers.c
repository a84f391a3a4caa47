/* Structure and confidence writers: PDB and mmCIF of real chains read back with memfold's own
 * readers, the PDB column layout against lines formatted by AF2's to_pdb f-strings, the atom-name
 * alignment rule, the prediction and ranking JSON parsed back with cJSON, and atomic writing
 * (a failed write leaves no file and keeps an existing one).
 *
 * With MEMFOLD_WRITERS_OUT set to a folder, the written files stay there together with
 * expected.json (the atoms, residue numbers and pLDDT written) for tests/cli/writers_roundtrip.sh,
 * which reads them with gemmi and Biopython. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/mmcif.h"
#include "data/structure_io.h"
#include "model/config.h"
#include "model/prediction_json.h"
#include "protein/mmcif_writer.h"
#include "protein/pdb_writer.h"
#include "tests/support/mf_test.h"

/* Coordinates are written with %.3f (rounding error <= 5e-4) from floats and read back into
 * floats: each float conversion of |x| < 1000 adds < 3.1e-5, so 6e-4 bounds the round trip. */
#define TOL_WRITTEN_COORD 6e-4
/* B-factors are written with %.2f: 5e-3 rounding plus float conversions of values <= 100. */
#define TOL_WRITTEN_B 5.02e-3

static char g_dir[4096];
static int g_keep; /* MEMFOLD_WRITERS_OUT given: leave the files for the cli test */

static void path_in(char *out, size_t cap, const char *dir, const char *name)
{
    snprintf(out, cap, "%s/%s", dir, name);
}

static int file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

static int dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static char *read_all(const char *path)
{
    char *text = NULL;
    size_t len = 0;
    if (mf_read_text_file(path, &text, &len) != MF_OK) return NULL;
    return text;
}

static int has_atoms(const mf_protein *p, int64_t i)
{
    for (int a = 0; a < MF_ATOM37; a++)
        if (p->atom_mask[i * MF_ATOM37 + a] > 0.f) return 1;
    return 0;
}

/* A smooth synthetic pLDDT in [30, 99.9] that differs between chains. */
static float *synthetic_plddt(const mf_protein *p, int chain_no)
{
    float *v = malloc((size_t)(p->num_res ? p->num_res : 1) * sizeof *v);
    for (int64_t i = 0; v && i < p->num_res; i++)
        v[i] = (float)(30.0 + 69.9 * (0.5 + 0.5 * sin(0.37 * (double)i + 1.3 * chain_no)));
    return v;
}

/* back must hold orig's residues (all of them, or those with atoms when !full_sequence) with the
 * same numbers, insertion codes, types, atoms, coordinates and B-factor = pLDDT. */
static void compare_readback(const char *what, const mf_protein *orig, const float *plddt,
                             const mf_protein *back, int full_sequence)
{
    int64_t want = 0;
    for (int64_t i = 0; i < orig->num_res; i++) want += full_sequence || has_atoms(orig, i);
    MF_TEST_TRUE(!strcmp(back->chain_id, orig->chain_id), "%s: chain id '%s', want '%s'", what,
                 back->chain_id, orig->chain_id);
    MF_TEST_TRUE(back->num_res == want, "%s: %lld residues read back, want %lld", what,
                 (long long)back->num_res, (long long)want);
    if (back->num_res != want) return;
    int64_t n_atoms = 0;
    for (int64_t i = 0; i < orig->num_res; i++)
        for (int a = 0; a < MF_ATOM37; a++) n_atoms += orig->atom_mask[i * MF_ATOM37 + a] > 0.f;
    float *xa = malloc((size_t)(n_atoms * 3 + 1) * sizeof *xa);
    float *xb = malloc((size_t)(n_atoms * 3 + 1) * sizeof *xb);
    float *ba = malloc((size_t)(n_atoms + 1) * sizeof *ba);
    float *bb = malloc((size_t)(n_atoms + 1) * sizeof *bb);
    int64_t m = 0, bad_num = 0, bad_type = 0, bad_mask = 0;
    char *seq = malloc((size_t)want + 1);
    for (int64_t i = 0, k = 0; i < orig->num_res; i++) {
        if (!full_sequence && !has_atoms(orig, i)) continue;
        bad_num += back->residue_index[k] != orig->residue_index[i] ||
                   back->insertion_code[k] != orig->insertion_code[i];
        bad_type += back->aatype[k] != orig->aatype[i];
        seq[k] = orig->sequence[i];
        for (int a = 0; a < MF_ATOM37; a++) {
            int oa = orig->atom_mask[i * MF_ATOM37 + a] > 0.f;
            int ob = back->atom_mask[k * MF_ATOM37 + a] > 0.f;
            bad_mask += oa != ob;
            if (!oa || !ob) continue;
            for (int d = 0; d < 3; d++) {
                xa[m * 3 + d] = orig->atom_positions[(i * MF_ATOM37 + a) * 3 + d];
                xb[m * 3 + d] = back->atom_positions[(k * MF_ATOM37 + a) * 3 + d];
            }
            ba[m] = plddt[i];
            bb[m] = back->b_factors[k * MF_ATOM37 + a];
            m++;
        }
        k++;
    }
    seq[want] = '\0';
    printf("%s: %lld residues, %lld atoms\n", what, (long long)want, (long long)m);
    MF_TEST_TRUE(bad_num == 0, "%s: %lld residue numbers/insertion codes differ", what,
                 (long long)bad_num);
    MF_TEST_TRUE(bad_type == 0, "%s: %lld residue types differ", what, (long long)bad_type);
    MF_TEST_TRUE(!strcmp(back->sequence, seq), "%s: sequence %s, want %s", what, back->sequence,
                 seq);
    MF_TEST_TRUE(bad_mask == 0 && m == n_atoms, "%s: %lld atom masks differ", what,
                 (long long)bad_mask);
    char name[256];
    snprintf(name, sizeof name, "%s coordinates", what);
    mf_check_close_f32(name, xb, xa, m * 3, TOL_WRITTEN_COORD, 0.0);
    snprintf(name, sizeof name, "%s B-factor = pLDDT", what);
    mf_check_close_f32(name, bb, ba, m, TOL_WRITTEN_B, 0.0);
    free(xa), free(xb), free(ba), free(bb), free(seq);
}

/* Every record 80 columns; ATOM element columns 77-78 match the name; one TER per chain; END
 * last; no MODEL/ENDMDL. */
static void check_pdb_layout(const char *what, const char *text, int n_chains)
{
    int bad_len = 0, bad_elem = 0, ter = 0, model = 0, atoms = 0;
    const char *last = NULL;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        bad_len += n != 80;
        if (!strncmp(p, "ATOM  ", 6) && n >= 78) {
            atoms++;
            char name[5], elem[3];
            memcpy(name, p + 12, 4), name[4] = '\0';
            memcpy(elem, p + 76, 2), elem[2] = '\0';
            const char *nm = name;
            while (*nm == ' ') nm++;
            bad_elem += elem[0] != ' ' || elem[1] != nm[0];
        }
        ter += !strncmp(p, "TER   ", 6);
        model += !strncmp(p, "MODEL ", 6) || !strncmp(p, "ENDMDL", 6);
        last = p;
        p += n + (nl ? 1 : 0);
    }
    printf("%s: %d ATOM records\n", what, atoms);
    MF_TEST_TRUE(bad_len == 0, "%s: %d records are not 80 columns", what, bad_len);
    MF_TEST_TRUE(bad_elem == 0, "%s: %d element symbols disagree with the name", what, bad_elem);
    MF_TEST_TRUE(ter == n_chains, "%s: %d TER records for %d chains", what, ter, n_chains);
    MF_TEST_TRUE(model == 0, "%s: MODEL/ENDMDL present", what);
    MF_TEST_TRUE(last && !strncmp(last, "END ", 4), "%s: last record is not END", what);
    MF_TEST_TRUE(strstr(text, "REMARK   6 GENERATED BY memfold") != NULL, "%s: no tool REMARK",
                 what);
    MF_TEST_TRUE(strstr(text, "REMARK   6 PARENT ") != NULL, "%s: no PARENT REMARK", what);
}

static void test_atom_name_alignment(void)
{
    static const struct {
        const char *name, *element, *field;
    } table[] = {
        {"N", NULL, " N  "},  {"CA", NULL, " CA "},  {"OXT", NULL, " OXT"}, {"CZ2", "C", " CZ2"},
        {"NH1", "N", " NH1"}, {"SD", "S", " SD "},   {"HD11", "H", "HD11"}, {"1HD1", "H", "1HD1"},
        {"OP1", "O", " OP1"}, {"CA", "CA", "CA  "},  {"FE", "FE", "FE  "},  {"SE", "SE", "SE  "},
        {"ZN", "ZN", "ZN  "}, {"CL1", "CL", "CL1 "}, {"C", "C", " C  "},
    };
    int bad = 0;
    for (size_t k = 0; k < sizeof table / sizeof table[0]; k++) {
        char field[5] = "????";
        mf_status st = mf_pdb_atom_name_field(table[k].name, table[k].element, field);
        if (st != MF_OK || strcmp(field, table[k].field)) {
            mf_test_fail("atom name '%s' element %s: field '%s', want '%s'", table[k].name,
                         table[k].element ? table[k].element : "(first letter)", field,
                         table[k].field);
            bad++;
        }
    }
    mf_test_count(bad == 0);
    printf("atom name alignment: %zu names of 1-4 characters, exact columns 13-16\n",
           sizeof table / sizeof table[0]);
    char field[5];
    MF_TEST_TRUE(mf_pdb_atom_name_field("", NULL, field) == MF_ERR_INVALID, "empty name accepted");
    MF_TEST_TRUE(mf_pdb_atom_name_field("CDEFG", NULL, field) == MF_ERR_INVALID,
                 "5-character name accepted");
}

/* Two residues with every column case: insertion code, negative number, 4-digit coordinates,
 * -0.000, a 3-character name, OXT. The expected lines are AF2's to_pdb f-strings evaluated on
 * the same float32 values. */
static void test_pdb_golden(void)
{
    mf_protein p;
    MF_TEST_OK(mf_protein_alloc(&p, 2));
    snprintf(p.chain_id, sizeof p.chain_id, "B");
    mf_protein_set_residue(&p, 0, "GLY");
    mf_protein_set_residue(&p, 1, "TRP");
    p.residue_index[0] = 5, p.insertion_code[0] = 'A';
    p.residue_index[1] = -12;
    const struct {
        int res;
        const char *atom;
        float x[3];
    } atoms[] = {{0, "N", {1.2344f, -22.5f, 1000.0f}},
                 {0, "CA", {-0.0004f, 3.14159f, -999.4f}},
                 {1, "CZ2", {-999.25f, 0.0006f, 12.0f}},
                 {1, "OXT", {-1.f, -2.f, 9999.499f}}};
    for (int k = 0; k < 4; k++) {
        int a = mf_atom37_index(atoms[k].atom);
        p.atom_mask[atoms[k].res * MF_ATOM37 + a] = 1.f;
        memcpy(&p.atom_positions[(atoms[k].res * MF_ATOM37 + a) * 3], atoms[k].x,
               sizeof atoms[k].x);
    }
    const float plddt[2] = {87.126f, 5.5f};
    const float *pl[1] = {plddt};
    mf_structure_meta meta = {.model_name = "model_1_ptm",
                              .parents = "1abc_A 2def_B",
                              .rank = 2,
                              .ranking_metric = "plddt",
                              .ranking_confidence = 46.313};
    char *text = NULL;
    MF_TEST_OK(mf_pdb_format(&p, 1, pl, &meta, &text, NULL));
    static const char *want[] = {
        "ATOM      1  N   GLY B   5A      1.234 -22.5001000.000  1.00 87.13           N  \n",
        "ATOM      2  CA  GLY B   5A     -0.000   3.142-999.400  1.00 87.13           C  \n",
        "ATOM      3  CZ2 TRP B -12    -999.250   0.001  12.000  1.00  5.50           C  \n",
        "ATOM      4  OXT TRP B -12      -1.000  -2.0009999.499  1.00  5.50           O  \n",
        "TER       5      TRP B -12                                                      \n",
        "END                                                                             \n",
    };
    const char *at = text ? strstr(text, "ATOM  ") : NULL;
    int bad = at == NULL;
    for (int k = 0; k < 6 && at; k++) {
        if (strncmp(at, want[k], 81)) {
            mf_test_fail("golden PDB line %d:\n got  '%.80s'\n want '%.80s'", k + 1, at, want[k]);
            bad++;
        }
        at += 81;
    }
    MF_TEST_TRUE(bad == 0 && at && *at == '\0', "golden PDB: %d lines differ or text follows END",
                 bad);
    printf("PDB golden lines: 4 ATOM + TER + END exactly as AF2's to_pdb formats them\n");
    MF_TEST_TRUE(text && strstr(text, "REMARK   6 MODEL NAME model_1_ptm") &&
                     strstr(text, "REMARK   6 RANK 2, RANKING CONFIDENCE 46.31 (plddt)") &&
                     strstr(text, "REMARK   6 PARENT 1abc_A 2def_B") &&
                     strstr(text, "REMARK   6 B-FACTOR COLUMN: PER-RESIDUE PLDDT"),
                 "PDB REMARK lines missing:\n%s", text ? text : "(none)");
    if (text) check_pdb_layout("golden PDB", text, 1);
    free(text);

    /* the same residues as mmCIF, read back by memfold's mmCIF reader */
    MF_TEST_OK(mf_mmcif_format(&p, 1, pl, &meta, &text, NULL));
    mf_protein *back = NULL;
    int n_back = 0;
    if (text) MF_TEST_OK(mf_mmcif_parse(text, strlen(text), "golden.cif", &back, &n_back));
    MF_TEST_TRUE(n_back == 1, "golden mmCIF: %d chains read back", n_back);
    if (n_back == 1) compare_readback("golden mmCIF", &p, plddt, &back[0], 1);
    MF_TEST_TRUE(text && strstr(text, "\n_ma_qa_metric_global.metric_value 46.31\n"),
                 "golden mmCIF: global pLDDT is not the mean 46.31");
    mf_protein_list_free(back, n_back);
    free(text);

    /* what PDB cannot hold, mmCIF can */
    p.atom_positions[(1 * MF_ATOM37 + mf_atom37_index("OXT")) * 3 + 2] = 10000.0f;
    MF_TEST_TRUE(mf_pdb_format(&p, 1, pl, NULL, &text, NULL) == MF_ERR_INVALID && !text,
                 "PDB accepted a coordinate of 10000");
    MF_TEST_OK(mf_mmcif_format(&p, 1, pl, NULL, &text, NULL));
    free(text), text = NULL;
    p.atom_positions[(1 * MF_ATOM37 + mf_atom37_index("OXT")) * 3 + 2] = 1.0f;
    snprintf(p.chain_id, sizeof p.chain_id, "AB");
    MF_TEST_TRUE(mf_pdb_format(&p, 1, pl, NULL, &text, NULL) == MF_ERR_INVALID,
                 "PDB accepted a 2-character chain id");
    MF_TEST_OK(mf_mmcif_format(&p, 1, pl, NULL, &text, NULL));
    free(text), text = NULL;
    snprintf(p.chain_id, sizeof p.chain_id, "B");
    /* readers group atoms by (number, insertion code): equal keys must be refused */
    p.residue_index[1] = 5, p.insertion_code[1] = 'A';
    MF_TEST_TRUE(mf_mmcif_format(&p, 1, pl, NULL, &text, NULL) == MF_ERR_INVALID,
                 "two residues numbered 5A accepted");
    p.residue_index[1] = -12, p.insertion_code[1] = ' ';
    const float bad_plddt[2] = {101.f, NAN};
    const float *bpl[1] = {bad_plddt};
    MF_TEST_TRUE(mf_pdb_format(&p, 1, bpl, NULL, &text, NULL) == MF_ERR_INVALID,
                 "pLDDT 101 accepted");
    p.atom_positions[0] = NAN;
    MF_TEST_TRUE(mf_mmcif_format(&p, 1, pl, NULL, &text, NULL) == MF_ERR_INVALID,
                 "NaN coordinate accepted");
    p.atom_positions[0] = 1.2344f;
    mf_protein two[2];
    two[0] = p, two[1] = p;
    MF_TEST_TRUE(mf_mmcif_format(two, 2, NULL, NULL, &text, NULL) == MF_ERR_INVALID,
                 "two chains with one id accepted");
    mf_protein_free(&p);
}

/* expected.json for tests/cli/writers_roundtrip.sh: every written atom of each chain. */
static void write_expected(const char *dir, const mf_protein *chains, const float *const *plddt,
                           int n, const mf_protein *unobs, const char *original)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "pdb", "multichain.pdb");
    cJSON_AddStringToObject(root, "cif", "multichain.cif");
    cJSON_AddStringToObject(root, "original", original);
    cJSON *arr = cJSON_AddArrayToObject(root, "chains");
    for (int c = 0; c < n; c++) {
        cJSON *ch = cJSON_CreateObject();
        cJSON_AddStringToObject(ch, "id", chains[c].chain_id);
        cJSON *res = cJSON_AddArrayToObject(ch, "residues");
        for (int64_t i = 0; i < chains[c].num_res; i++) {
            if (!has_atoms(&chains[c], i)) continue;
            cJSON *r = cJSON_CreateObject();
            char ins[2] = {chains[c].insertion_code[i], '\0'};
            cJSON_AddNumberToObject(r, "num", chains[c].residue_index[i]);
            cJSON_AddStringToObject(r, "ins", ins[0] == ' ' ? "" : ins);
            cJSON_AddStringToObject(r, "name", mf_restype_three_letter(chains[c].aatype[i]));
            cJSON_AddNumberToObject(r, "plddt", plddt[c][i]);
            cJSON *atoms = cJSON_AddObjectToObject(r, "atoms");
            for (int a = 0; a < MF_ATOM37; a++) {
                if (!(chains[c].atom_mask[i * MF_ATOM37 + a] > 0.f)) continue;
                const float *x = &chains[c].atom_positions[(i * MF_ATOM37 + a) * 3];
                double xd[3] = {x[0], x[1], x[2]};
                cJSON_AddItemToObject(atoms, mf_atom37_name(a), cJSON_CreateDoubleArray(xd, 3));
            }
            cJSON_AddItemToArray(res, r);
        }
        cJSON_AddItemToArray(arr, ch);
    }
    cJSON *u = cJSON_AddObjectToObject(root, "unobserved");
    cJSON_AddStringToObject(u, "cif", "unobserved.cif");
    cJSON_AddStringToObject(u, "id", unobs->chain_id);
    cJSON *seq = cJSON_AddArrayToObject(u, "sequence");
    int64_t observed = 0;
    for (int64_t i = 0; i < unobs->num_res; i++) {
        cJSON_AddItemToArray(seq, cJSON_CreateString(mf_restype_three_letter(unobs->aatype[i])));
        observed += has_atoms(unobs, i);
    }
    cJSON_AddNumberToObject(u, "num_observed", (double)observed);
    char *text = cJSON_Print(root);
    char path[4200];
    path_in(path, sizeof path, dir, "expected.json");
    MF_TEST_TRUE(text != NULL, "expected.json: cJSON failed");
    if (text) MF_TEST_OK(mf_write_file_atomic(path, text, strlen(text)));
    cJSON_free(text);
    cJSON_Delete(root);
}

static void test_real_chains(void)
{
    const char *shared = mf_test_shared_dir();
    char src[4200], src2[4200];
    snprintf(src, sizeof src, "%s/data/structures/train/mmcif/1ncb.cif", shared);
    snprintf(src2, sizeof src2, "%s/data/structures/train/mmcif/1f2n.cif", shared);
    mf_protein chains[2] = {{0}}, unobs = {0};
    MF_TEST_OK(mf_structure_read_chain(src, "L", &chains[0]));
    MF_TEST_OK(mf_structure_read_chain(src, "H", &chains[1]));
    MF_TEST_OK(mf_structure_read_chain(src2, "A", &unobs));
    if (!chains[0].num_res || !chains[1].num_res || !unobs.num_res) return;
    int n_ins = 0;
    for (int64_t i = 0; i < chains[1].num_res; i++) n_ins += chains[1].insertion_code[i] != ' ';
    int64_t n_unobs = unobs.num_res - mf_protein_num_observed(&unobs);
    printf("1NCB chains L (%lld residues) and H (%lld, %d insertion codes); 1F2N chain A "
           "(%lld residues, %lld without atoms)\n",
           (long long)chains[0].num_res, (long long)chains[1].num_res, n_ins,
           (long long)unobs.num_res, (long long)n_unobs);
    MF_TEST_TRUE(n_ins > 0 && n_unobs > 0, "test data lost its insertion codes or gaps");
    float *pl[2] = {synthetic_plddt(&chains[0], 0), synthetic_plddt(&chains[1], 1)};
    float *pl_u = synthetic_plddt(&unobs, 2);
    const float *cpl[2] = {pl[0], pl[1]}, *cpl_u[1] = {pl_u};
    mf_structure_meta meta = {
        .entry_id = "memfold_test", .model_name = "model_1", .rank = 1, .ranking_confidence = 77.5};
    char pdb[4200], cif[4200], cif_u[4200], pdb_u[4200];
    path_in(pdb, sizeof pdb, g_dir, "multichain.pdb");
    path_in(cif, sizeof cif, g_dir, "multichain.cif");
    path_in(cif_u, sizeof cif_u, g_dir, "unobserved.cif");
    path_in(pdb_u, sizeof pdb_u, g_dir, "unobserved.pdb");
    MF_TEST_OK(mf_pdb_write(pdb, chains, 2, cpl, &meta));
    MF_TEST_OK(mf_mmcif_write(cif, chains, 2, cpl, &meta));
    MF_TEST_OK(mf_mmcif_write(cif_u, &unobs, 1, cpl_u, NULL));
    MF_TEST_OK(mf_pdb_write(pdb_u, &unobs, 1, cpl_u, NULL));

    char *text = read_all(pdb);
    MF_TEST_TRUE(text != NULL, "cannot read %s back", pdb);
    if (text) check_pdb_layout("1NCB L+H PDB", text, 2);
    free(text);

    const char *files[3] = {pdb, cif, NULL};
    const char *labels[2] = {"PDB", "mmCIF"};
    for (int f = 0; files[f]; f++) {
        mf_protein *back = NULL;
        int n_back = 0;
        MF_TEST_OK(mf_structure_read(files[f], &back, &n_back));
        MF_TEST_TRUE(n_back == 2, "%s: %d chains read back, want 2", files[f], n_back);
        for (int c = 0; c < n_back && c < 2; c++) {
            char what[96];
            snprintf(what, sizeof what, "1NCB chain %s via %s", chains[c].chain_id, labels[f]);
            /* the PDB has no SEQRES: its reader sees the residues with atoms */
            compare_readback(what, &chains[c], pl[c], &back[c], f == 1);
        }
        mf_protein_list_free(back, n_back);
    }
    mf_protein back_u = {0};
    MF_TEST_OK(mf_structure_read_chain(cif_u, "A", &back_u));
    compare_readback("1F2N chain A via mmCIF (full sequence)", &unobs, pl_u, &back_u, 1);
    mf_protein_free(&back_u);
    MF_TEST_OK(mf_structure_read_chain(pdb_u, "A", &back_u));
    compare_readback("1F2N chain A via PDB (residues with atoms)", &unobs, pl_u, &back_u, 0);
    mf_protein_free(&back_u);

    /* the mmCIF's local pLDDT rows: one per residue with atoms */
    text = read_all(cif);
    int64_t rows = 0;
    const char *loc = text ? strstr(text, "_ma_qa_metric_local.metric_value\n") : NULL;
    for (const char *p = loc ? strchr(loc, '\n') + 1 : NULL; p && *p && *p != '#';) {
        rows++;
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    int64_t want_rows = mf_protein_num_observed(&chains[0]) + mf_protein_num_observed(&chains[1]);
    MF_TEST_TRUE(rows == want_rows, "_ma_qa_metric_local: %lld rows, want %lld", (long long)rows,
                 (long long)want_rows);
    printf("mmCIF _ma_qa_metric_local: %lld rows\n", (long long)rows);
    free(text);

    if (g_keep) write_expected(g_dir, chains, cpl, 2, &unobs, src);
    free(pl[0]), free(pl[1]), free(pl_u);
    mf_protein_free(&chains[0]), mf_protein_free(&chains[1]), mf_protein_free(&unobs);
}

static mf_protein small_chain(void)
{
    mf_protein p;
    if (mf_protein_alloc(&p, 3) != MF_OK) return (mf_protein){0};
    snprintf(p.chain_id, sizeof p.chain_id, "A");
    for (int i = 0; i < 3; i++) {
        mf_protein_set_residue(&p, i, "ALA");
        p.residue_index[i] = i + 1;
        for (int a = 0; a < 3; a++) {
            p.atom_mask[i * MF_ATOM37 + a] = 1.f;
            p.atom_positions[(i * MF_ATOM37 + a) * 3] = (float)(3.8 * i + a);
        }
    }
    return p;
}

/* A failed write leaves no file (and no temporary file) and keeps an existing target. */
static void test_atomic_failures(void)
{
    mf_protein p = small_chain();
    const float plddt[3] = {50.f, 60.f, 70.f};
    const float *pl[1] = {plddt};
    char sub[4200], path[4400];
    path_in(sub, sizeof sub, g_dir, "atomic");
    MF_TEST_TRUE(mkdir(sub, 0755) == 0, "mkdir %s: %s", sub, strerror(errno));

    /* a folder no one may create files in, root included */
    const char *proc_path = "/proc/memfold_test_writers.pdb";
    MF_TEST_TRUE(mf_pdb_write(proc_path, &p, 1, pl, NULL) == MF_ERR_IO && !file_exists(proc_path),
                 "write into /proc did not fail cleanly");
    /* a folder that does not exist */
    snprintf(path, sizeof path, "%s/missing/x.cif", sub);
    MF_TEST_TRUE(mf_mmcif_write(path, &p, 1, pl, NULL) == MF_ERR_IO && !file_exists(path),
                 "write into a missing folder did not fail cleanly");
    /* a read-only folder (root ignores permissions: covered by /proc above) */
    char ro[4300];
    snprintf(ro, sizeof ro, "%s/readonly", sub);
    MF_TEST_TRUE(mkdir(ro, 0555) == 0, "mkdir %s", ro);
    if (geteuid() != 0) {
        snprintf(path, sizeof path, "%s/x.pdb", ro);
        MF_TEST_TRUE(mf_pdb_write(path, &p, 1, pl, NULL) == MF_ERR_IO && dir_entries(ro) == 0,
                     "write into a read-only folder left a file");
    } else {
        printf("read-only folder: skipped (running as root, which ignores permissions; the "
               "/proc write checks the same path)\n");
    }
    /* rename fails after the temporary file was written: the target is a folder */
    snprintf(path, sizeof path, "%s/target.json", sub);
    MF_TEST_TRUE(mkdir(path, 0755) == 0, "mkdir %s", path);
    mf_prediction_record rec = {.model_name = "m", .num_res = 3, .plddt = plddt};
    MF_TEST_TRUE(mf_prediction_json_write(path, &rec, MF_RANK_BY_PLDDT) == MF_ERR_IO,
                 "writing over a folder succeeded");
    MF_TEST_TRUE(dir_entries(sub) == 2, "failed rename left %d entries in %s (want 2 folders)",
                 dir_entries(sub), sub);
    /* invalid input leaves an existing file as it was */
    snprintf(path, sizeof path, "%s/keep.pdb", sub);
    MF_TEST_OK(mf_pdb_write(path, &p, 1, pl, NULL));
    char *before = read_all(path);
    const float bad[3] = {50.f, NAN, 70.f};
    const float *bpl[1] = {bad};
    MF_TEST_TRUE(mf_pdb_write(path, &p, 1, bpl, NULL) == MF_ERR_INVALID, "NaN pLDDT written");
    char *after = read_all(path);
    MF_TEST_TRUE(before && after && !strcmp(before, after), "failed write changed %s", path);
    MF_TEST_TRUE(dir_entries(sub) == 3, "failed write left %d entries in %s (want 3)",
                 dir_entries(sub), sub);
    printf("atomic writes: /proc, missing folder, rename over a folder, invalid input: no file "
           "or temporary left, existing file kept\n");
    free(before), free(after);
    mf_protein_free(&p);
    if (!g_keep) {
        rmdir(ro);
        snprintf(path, sizeof path, "%s/target.json", sub);
        rmdir(path);
        snprintf(path, sizeof path, "%s/keep.pdb", sub);
        unlink(path);
        rmdir(sub);
    }
}

static const cJSON *need(const cJSON *o, const char *key, int (*is)(const cJSON *))
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    MF_TEST_TRUE(v && is(v), "JSON key \"%s\" missing or of the wrong type", key);
    return v && is(v) ? v : NULL;
}
static int is_num(const cJSON *v)
{
    return cJSON_IsNumber(v);
}
static int is_str(const cJSON *v)
{
    return cJSON_IsString(v);
}
static int is_arr(const cJSON *v)
{
    return cJSON_IsArray(v);
}
static int is_obj(const cJSON *v)
{
    return cJSON_IsObject(v);
}
static int is_null(const cJSON *v)
{
    return cJSON_IsNull(v);
}
static int is_bool(const cJSON *v)
{
    return cJSON_IsBool(v);
}

static double num_of(const cJSON *v)
{
    return v ? v->valuedouble : NAN;
}

static void test_prediction_json(void)
{
    enum { N = 7 };
    float plddt[N], pae[N * N];
    int32_t resnum[N];
    for (int i = 0; i < N; i++) {
        plddt[i] = 40.f + 7.777f * (float)i;
        resnum[i] = 10 + i;
        for (int j = 0; j < N; j++) pae[i * N + j] = 0.25f + 1.3333f * (float)abs(i - j);
    }
    double ptm = 0.8125;
    mf_stage_timing t[3] = {{"features", 1.5}, {"predict", 12.25}, {"write", 0.125}};
    mf_config cfg;
    MF_TEST_OK(mf_config_preset("tiny", &cfg));
    mf_prediction_record r = {.model_name = "model_1_ptm",
                              .num_res = N,
                              .sequence = "MKTAYIA",
                              .residue_number = resnum,
                              .plddt = plddt,
                              .pae = pae,
                              .max_pae = 31.75,
                              .ptm = &ptm,
                              .num_recycles = 3,
                              .timings = t,
                              .n_timings = 3,
                              .arena_high_water_bytes = 123456789,
                              .peak_rss_bytes = 0,
                              .config = &cfg};
    char path[4200];
    path_in(path, sizeof path, g_dir, "prediction.json");
    MF_TEST_OK(mf_prediction_json_write(path, &r, MF_RANK_BY_PLDDT));
    char *text = read_all(path);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    MF_TEST_TRUE(j != NULL, "prediction.json does not parse");
    free(text);
    if (j) {
        double mean = 0;
        for (int i = 0; i < N; i++) mean += plddt[i];
        mean /= N;
        const cJSON *v;
        v = need(j, "schema", is_str);
        MF_TEST_TRUE(v && !strcmp(v->valuestring, "memfold.prediction"), "schema name");
        MF_TEST_TRUE(num_of(need(j, "schema_version", is_num)) == 1, "schema_version");
        need(j, "tool", is_str);
        v = need(j, "model_name", is_str);
        MF_TEST_TRUE(v && !strcmp(v->valuestring, "model_1_ptm"), "model_name");
        MF_TEST_TRUE(num_of(need(j, "num_res", is_num)) == N, "num_res");
        v = need(j, "sequence", is_str);
        MF_TEST_TRUE(v && !strcmp(v->valuestring, "MKTAYIA"), "sequence");
        const cJSON *rn = need(j, "residue_number", is_arr), *pl = need(j, "plddt", is_arr);
        MF_TEST_TRUE(rn && pl && cJSON_GetArraySize(rn) == N && cJSON_GetArraySize(pl) == N,
                     "residue_number/plddt lengths");
        double got_pl[N], want_pl[N];
        int bad_rn = 0;
        for (int i = 0; i < N && rn && pl; i++) {
            bad_rn += num_of(cJSON_GetArrayItem(rn, i)) != resnum[i];
            got_pl[i] = num_of(cJSON_GetArrayItem(pl, i));
            want_pl[i] = plddt[i];
        }
        MF_TEST_TRUE(bad_rn == 0, "residue_number values");
        /* written rounded to 0.01 */
        mf_check_close_f64("JSON plddt (rounded to 0.01)", got_pl, want_pl, N, 5.0001e-3, 0.0);
        double got_mean = num_of(need(j, "mean_plddt", is_num));
        mf_check_close_f64("JSON mean_plddt", &got_mean, &mean, 1, 1e-5, 0.0);
        const cJSON *pm = need(j, "predicted_aligned_error", is_arr);
        MF_TEST_TRUE(pm && cJSON_GetArraySize(pm) == N, "PAE rows");
        double got_pae[N * N], want_pae[N * N];
        int bad_shape = 0;
        for (int i = 0; i < N && pm; i++) {
            const cJSON *row = cJSON_GetArrayItem(pm, i);
            bad_shape += !cJSON_IsArray(row) || cJSON_GetArraySize(row) != N;
            for (int k = 0; k < N; k++) {
                got_pae[i * N + k] = num_of(cJSON_GetArrayItem(row, k));
                want_pae[i * N + k] = pae[i * N + k];
            }
        }
        MF_TEST_TRUE(bad_shape == 0, "PAE is not [N][N]");
        mf_check_close_f64("JSON predicted_aligned_error [7,7] (rounded to 0.01)", got_pae,
                           want_pae, N * N, 5.0001e-3, 0.0);
        MF_TEST_TRUE(num_of(need(j, "max_predicted_aligned_error", is_num)) == 31.75, "max PAE");
        MF_TEST_TRUE(num_of(need(j, "ptm", is_num)) == ptm, "ptm");
        v = need(j, "ranking_metric", is_str);
        MF_TEST_TRUE(v && !strcmp(v->valuestring, "plddt"), "ranking_metric");
        double conf = num_of(need(j, "ranking_confidence", is_num));
        mf_check_close_f64("JSON ranking_confidence = mean pLDDT", &conf, &mean, 1, 1e-5, 0.0);
        MF_TEST_TRUE(num_of(need(j, "num_recycles", is_num)) == 3, "num_recycles");
        const cJSON *tm = need(j, "timings", is_obj);
        MF_TEST_TRUE(tm && cJSON_GetArraySize(tm) == 3 && !strcmp(tm->child->string, "features") &&
                         num_of(cJSON_GetObjectItem(tm, "predict")) == 12.25 &&
                         num_of(cJSON_GetObjectItem(tm, "write")) == 0.125,
                     "timings object");
        const cJSON *mem = need(j, "memory", is_obj);
        if (mem) {
            MF_TEST_TRUE(num_of(need(mem, "arena_high_water_bytes", is_num)) == 123456789,
                         "arena_high_water_bytes");
            double rss = num_of(need(mem, "peak_rss_bytes", is_num));
            MF_TEST_TRUE(rss > 1e6, "peak_rss_bytes %g not measured", rss);
        }
        const cJSON *c = need(j, "config", is_obj);
        if (c) {
            v = need(c, "preset", is_str);
            MF_TEST_TRUE(v && !strcmp(v->valuestring, cfg.preset), "config preset");
            MF_TEST_TRUE(num_of(need(c, "c_m", is_num)) == (double)cfg.channels.c_m &&
                             num_of(need(c, "c_z", is_num)) == (double)cfg.channels.c_z &&
                             num_of(need(c, "c_s", is_num)) == (double)cfg.channels.c_s,
                         "config channels");
            MF_TEST_TRUE(num_of(need(c, "evoformer_num_blocks", is_num)) ==
                                 (double)cfg.evoformer.num_blocks &&
                             num_of(need(c, "num_recycle", is_num)) ==
                                 (double)cfg.recycling.num_recycle,
                         "config blocks/recycles");
            need(c, "extra_msa_num_blocks", is_num);
            need(c, "structure_module_num_layers", is_num);
            need(c, "templates_enabled", is_bool);
            need(c, "predicted_aligned_error_enabled", is_bool);
            need(c, "memory_policy", is_str);
        }
        cJSON_Delete(j);
    }
    printf("prediction JSON: every documented key, N = %d, PAE [%d, %d]\n", N, N, N);

    /* NULLs: no PAE, pTM, sequence, config; unknown memory */
    mf_prediction_record r0 = {.model_name = "model_2",
                               .num_res = N,
                               .plddt = plddt,
                               .arena_high_water_bytes = -1,
                               .peak_rss_bytes = -1};
    MF_TEST_OK(mf_prediction_json_format(&r0, MF_RANK_BY_PLDDT, &text));
    j = text ? cJSON_Parse(text) : NULL;
    mf_prediction_json_free(text);
    MF_TEST_TRUE(j != NULL, "null-valued JSON does not parse");
    if (j) {
        need(j, "sequence", is_null);
        need(j, "predicted_aligned_error", is_null);
        need(j, "max_predicted_aligned_error", is_null);
        need(j, "ptm", is_null);
        need(j, "config", is_null);
        const cJSON *mem = need(j, "memory", is_obj);
        if (mem) {
            need(mem, "arena_high_water_bytes", is_null);
            need(mem, "peak_rss_bytes", is_null);
        }
        const cJSON *rn = need(j, "residue_number", is_arr);
        MF_TEST_TRUE(rn && num_of(cJSON_GetArrayItem(rn, 0)) == 1 &&
                         num_of(cJSON_GetArrayItem(rn, N - 1)) == N,
                     "default residue numbers are not 1..N");
        cJSON_Delete(j);
    }
    MF_TEST_TRUE(mf_prediction_json_format(&r0, MF_RANK_BY_PTM, &text) == MF_ERR_INVALID,
                 "ranking by pTM without a pTM accepted");
    plddt[3] = NAN;
    MF_TEST_TRUE(mf_prediction_json_format(&r0, MF_RANK_BY_PLDDT, &text) == MF_ERR_NUMERIC,
                 "NaN pLDDT accepted");
    plddt[3] = 40.f + 7.777f * 3.f;
    pae[5] = -1.f;
    MF_TEST_TRUE(mf_prediction_json_format(&r, MF_RANK_BY_PLDDT, &text) == MF_ERR_INVALID,
                 "negative PAE accepted");
    pae[5] = 1.f;
    mf_stage_timing dup[2] = {{"predict", 1.0}, {"predict", 2.0}};
    r.timings = dup, r.n_timings = 2;
    MF_TEST_TRUE(mf_prediction_json_format(&r, MF_RANK_BY_PLDDT, &text) == MF_ERR_INVALID,
                 "a stage timed twice accepted");
    r.timings = t, r.n_timings = 3;
}

static void test_ranking(void)
{
    enum { N = 4 };
    float pa[N] = {70, 70, 70, 70}, pb[N] = {90, 80, 85, 95}, pc[N] = {60, 65, 70, 75};
    double ta = 0.9, tb = 0.5, tc = 0.7;
    mf_prediction_record rec[4] = {
        {.model_name = "model_a", .num_res = N, .plddt = pa, .ptm = &ta},
        {.model_name = "model_b", .num_res = N, .plddt = pb, .ptm = &tb},
        {.model_name = "model_c", .num_res = N, .plddt = pc, .ptm = &tc},
        {.model_name = "model_d", .num_res = N, .plddt = pa, .ptm = &tc}, /* ties model_a */
    };
    int order[4];
    MF_TEST_OK(mf_ranking_order(rec, 4, MF_RANK_BY_PLDDT, order));
    MF_TEST_TRUE(order[0] == 1 && order[1] == 0 && order[2] == 3 && order[3] == 2,
                 "pLDDT order %d %d %d %d, want 1 0 3 2 (ties in given order)", order[0], order[1],
                 order[2], order[3]);
    MF_TEST_OK(mf_ranking_order(rec, 4, MF_RANK_BY_PTM, order));
    MF_TEST_TRUE(order[0] == 0 && order[1] == 2 && order[2] == 3 && order[3] == 1,
                 "pTM order %d %d %d %d, want 0 2 3 1", order[0], order[1], order[2], order[3]);
    char path[4200];
    path_in(path, sizeof path, g_dir, "ranking.json");
    MF_TEST_OK(mf_ranking_json_write(path, rec, 4, MF_RANK_BY_PTM));
    char *text = read_all(path);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    free(text);
    MF_TEST_TRUE(j != NULL, "ranking.json does not parse");
    if (j) {
        const cJSON *v = need(j, "schema", is_str);
        MF_TEST_TRUE(v && !strcmp(v->valuestring, "memfold.ranking"), "ranking schema");
        need(j, "schema_version", is_num);
        v = need(j, "ranking_metric", is_str);
        MF_TEST_TRUE(v && !strcmp(v->valuestring, "ptm"), "ranking metric");
        const cJSON *pl = need(j, "plddts", is_obj), *pt = need(j, "ptms", is_obj);
        const cJSON *rc = need(j, "ranking_confidences", is_obj), *ord = need(j, "order", is_arr);
        MF_TEST_TRUE(pl && num_of(cJSON_GetObjectItem(pl, "model_b")) == 87.5, "plddts.model_b");
        MF_TEST_TRUE(pt && num_of(cJSON_GetObjectItem(pt, "model_c")) == 0.7, "ptms.model_c");
        MF_TEST_TRUE(rc && num_of(cJSON_GetObjectItem(rc, "model_a")) == 0.9,
                     "ranking_confidences.model_a");
        static const char *want[4] = {"model_a", "model_c", "model_d", "model_b"};
        int bad = !ord || cJSON_GetArraySize(ord) != 4;
        for (int i = 0; i < 4 && !bad; i++)
            bad += strcmp(cJSON_GetArrayItem(ord, i)->valuestring, want[i]) != 0;
        MF_TEST_TRUE(bad == 0, "ranking order in the JSON");
        cJSON_Delete(j);
    }
    printf("ranking: 4 models by pLDDT and by pTM, ties in the given order\n");
    rec[3].model_name = "model_a";
    MF_TEST_TRUE(mf_ranking_order(rec, 4, MF_RANK_BY_PLDDT, order) == MF_ERR_INVALID,
                 "duplicate model names accepted");
    rec[3].model_name = "model_d";
    rec[2].ptm = NULL;
    MF_TEST_TRUE(mf_ranking_order(rec, 4, MF_RANK_BY_PTM, order) == MF_ERR_INVALID,
                 "pTM ranking with a model without pTM accepted");
    mf_ranking_metric m;
    MF_TEST_TRUE(mf_ranking_metric_parse("pTM", &m) == MF_OK && m == MF_RANK_BY_PTM &&
                     mf_ranking_metric_parse("iptm", &m) == MF_ERR_INVALID,
                 "ranking metric names");
}

static void test_label_asym_ids(void)
{
    static const struct {
        int n;
        const char *id;
    } t[] = {{1, "A"}, {2, "B"}, {26, "Z"}, {27, "AA"}, {28, "BA"}, {52, "ZA"}, {53, "AB"}};
    int bad = 0;
    for (size_t k = 0; k < sizeof t / sizeof t[0]; k++) {
        char id[8];
        mf_mmcif_label_asym_id(t[k].n, id);
        if (strcmp(id, t[k].id)) {
            mf_test_fail("label_asym_id(%d) = %s, want %s", t[k].n, id, t[k].id);
            bad++;
        }
    }
    mf_test_count(bad == 0);
    printf("label_asym_id: AF2's reverse spreadsheet ids for 7 ordinals\n");
}

static void remove_outputs(void)
{
    static const char *names[] = {"multichain.pdb", "multichain.cif",  "unobserved.cif",
                                  "unobserved.pdb", "prediction.json", "ranking.json"};
    char path[4300];
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        path_in(path, sizeof path, g_dir, names[k]);
        unlink(path);
    }
    MF_TEST_TRUE(dir_entries(g_dir) == 0, "%s holds %d unexpected files", g_dir,
                 dir_entries(g_dir));
    rmdir(g_dir);
}

int main(void)
{
    const char *out = getenv("MEMFOLD_WRITERS_OUT");
    if (out && out[0]) {
        snprintf(g_dir, sizeof g_dir, "%s", out);
        g_keep = 1;
    } else {
        snprintf(g_dir, sizeof g_dir, "%s/memfold_writers.XXXXXX",
                 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        if (!mkdtemp(g_dir)) {
            mf_test_fail("mkdtemp %s: %s", g_dir, strerror(errno));
            return mf_test_finish("test_writers");
        }
    }
    printf("output folder: %s\n", g_dir);
    test_atom_name_alignment();
    test_label_asym_ids();
    test_pdb_golden();
    test_real_chains();
    test_atomic_failures();
    test_prediction_json();
    test_ranking();
    if (!g_keep) remove_outputs();
    return mf_test_finish("test_writers");
}
