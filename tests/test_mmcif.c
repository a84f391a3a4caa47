/* The CIF syntax (pairs, loops, quotes that close only before white space, ';' text fields, '.'
 * and '?') and the mmCIF chain reader on a small hand-written entry whose every value is known:
 * author chain names, SEQRES with an unobserved residue, MSE -> MET with SE -> SD, alternate
 * locations (highest occupancy, ties first, slots only the other alt id has), microheterogeneity,
 * insertion codes, hydrogens and a DNA chain left out, first model only; the fallbacks without
 * _pdbx_poly_seq_scheme; malformed inputs rejected with file:line and field; every truncation and
 * random byte corruptions neither crash nor leave output. */
#include <stdlib.h>
#include <string.h>

#include "data/mmcif.h"
#include "tests/support/mf_test.h"

/* A decimal read into float is the float nearest to it, as is the literal: exact equality. */
#define EXACT 0.0

static const char *entry = "data_TEST\n"
                           "# a comment line\n"
                           "_entry.id   TEST\n"
                           "_exptl.entry_id TEST\n"
                           "_exptl.method 'X-RAY DIFFRACTION'\n"
                           "_refine.entry_id TEST\n"
                           "_refine.ls_d_res_high 1.95\n"
                           "_reflns.d_resolution_high 1.90\n"
                           "loop_\n"
                           "_pdbx_audit_revision_history.ordinal\n"
                           "_pdbx_audit_revision_history.revision_date\n"
                           "1 2001-02-03\n"
                           "2 2005-06-07\n"
                           "_struct.title\n"
                           ";A multi-line title with 'quotes'\n"
                           "and \"double\" ones; # not a comment\n"
                           ";\n"
                           "loop_\n"
                           "_entity_poly.entity_id\n"
                           "_entity_poly.type\n"
                           "1 'polypeptide(L)'\n"
                           "2 polydeoxyribonucleotide\n"
                           "loop_\n"
                           "_struct_asym.id\n"
                           "_struct_asym.entity_id\n"
                           "A 1\n"
                           "B 2\n"
                           "C 3\n"
                           "loop_\n"
                           "_entity_poly_seq.entity_id\n"
                           "_entity_poly_seq.num\n"
                           "_entity_poly_seq.mon_id\n"
                           "_entity_poly_seq.hetero\n"
                           "1 1 MET n\n"
                           "1 2 MSE n\n"
                           "1 3 GLY n\n"
                           "1 4 SER y\n"
                           "1 4 THR y\n"
                           "1 5 LYS n\n"
                           "2 1 DA n\n"
                           "loop_\n"
                           "_pdbx_poly_seq_scheme.asym_id\n"
                           "_pdbx_poly_seq_scheme.entity_id\n"
                           "_pdbx_poly_seq_scheme.seq_id\n"
                           "_pdbx_poly_seq_scheme.mon_id\n"
                           "_pdbx_poly_seq_scheme.pdb_seq_num\n"
                           "_pdbx_poly_seq_scheme.pdb_ins_code\n"
                           "_pdbx_poly_seq_scheme.pdb_strand_id\n"
                           "_pdbx_poly_seq_scheme.hetero\n"
                           "A 1 1 MET 10 . X n\n"
                           "A 1 2 MSE 11 . X n\n"
                           "A 1 3 GLY 12 . X n\n"
                           "A 1 4 SER 12 A X y\n"
                           "A 1 4 THR 12 A X y\n"
                           "A 1 5 LYS 13 . X n\n"
                           "B 2 1 DA 1 . Y n\n"
                           "loop_\n"
                           "_atom_site.group_PDB\n"
                           "_atom_site.id\n"
                           "_atom_site.type_symbol\n"
                           "_atom_site.label_atom_id\n"
                           "_atom_site.label_alt_id\n"
                           "_atom_site.label_comp_id\n"
                           "_atom_site.label_asym_id\n"
                           "_atom_site.label_entity_id\n"
                           "_atom_site.label_seq_id\n"
                           "_atom_site.pdbx_PDB_ins_code\n"
                           "_atom_site.Cartn_x\n"
                           "_atom_site.Cartn_y\n"
                           "_atom_site.Cartn_z\n"
                           "_atom_site.occupancy\n"
                           "_atom_site.B_iso_or_equiv\n"
                           "_atom_site.auth_seq_id\n"
                           "_atom_site.auth_asym_id\n"
                           "_atom_site.pdbx_PDB_model_num\n"
                           "HETATM 1 N N . MSE A 1 2 ? 1.0 2.0 3.0 1.00 10.0 11 X 1\n"
                           "HETATM 2 C CA . MSE A 1 2 ? 2.0 2.0 3.0 1.00 11.0 11 X 1\n"
                           "HETATM 3 SE SE . MSE A 1 2 ? 4.0 5.0 6.0 1.00 12.0 11 X 1\n"
                           "ATOM 4 N N A GLY A 1 3 ? 5.0 0.0 0.0 0.40 13.0 12 X 1\n"
                           "ATOM 5 C CA A GLY A 1 3 ? 6.0 0.0 0.0 0.40 13.0 12 X 1\n"
                           "ATOM 6 N N B GLY A 1 3 ? 5.5 0.0 0.0 0.60 13.5 12 X 1\n"
                           "ATOM 7 C CA B GLY A 1 3 ? 6.5 0.0 0.0 0.60 13.5 12 X 1\n"
                           "ATOM 8 O O A GLY A 1 3 ? 7.0 0.0 0.0 0.40 13.0 12 X 1\n"
                           "ATOM 9 N N A SER A 1 4 A 8.0 1.0 1.0 0.50 14.0 12 X 1\n"
                           "ATOM 10 C CA A SER A 1 4 A 9.0 1.0 1.0 0.50 14.0 12 X 1\n"
                           "ATOM 11 N N B THR A 1 4 A 8.5 1.0 1.0 0.50 14.0 12 X 1\n"
                           "ATOM 12 C CA B THR A 1 4 A 9.5 1.0 1.0 0.50 14.0 12 X 1\n"
                           "ATOM 13 N N C LYS A 1 5 ? 10.0 1.0 1.0 0.50 15.0 13 X 1\n"
                           "ATOM 14 N N D LYS A 1 5 ? 10.5 1.0 1.0 0.50 15.0 13 X 1\n"
                           "ATOM 15 C CA . LYS A 1 5 ? 11.0 1.0 1.0 1.00 15.0 13 X 1\n"
                           "ATOM 16 H H . LYS A 1 5 ? 11.0 2.0 1.0 1.00 15.0 13 X 1\n"
                           "ATOM 17 P P . DA B 2 1 ? 0.0 0.0 9.0 1.00 20.0 1 Y 1\n"
                           "ATOM 18 O \"O5'\" . DA B 2 1 ? 0.0 1.0 9.0 1.00 20.0 1 Y 1\n"
                           "HETATM 19 O O . HOH C 3 . ? 3.0 3.0 3.0 1.00 30.0 101 X 1\n"
                           "ATOM 20 N N . MSE A 1 2 ? 99.0 99.0 99.0 1.00 10.0 11 X 2\n";

static int slot(const char *name)
{
    return mf_atom37_index(name);
}

static void check_atom(const mf_protein *p, int64_t res, const char *atom, float x, float y,
                       float z)
{
    char what[64];
    snprintf(what, sizeof what, "chain %s residue %lld %s", p->chain_id, (long long)res, atom);
    int a = slot(atom);
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

/* The full entry read through the named sequence source. */
static void check_entry_chain(const char *text, const char *what, int scheme_numbers)
{
    mf_protein *c = NULL;
    int n = 0;
    MF_TEST_OK(mf_mmcif_parse(text, strlen(text), what, &c, &n));
    MF_TEST_TRUE(n == 1, "%s: %d chains, expected 1 (the DNA chain Y is not a protein)", what, n);
    if (n != 1) {
        mf_protein_list_free(c, n);
        return;
    }
    const mf_protein *p = &c[0];
    printf("%s: chain %s, %lld residues, sequence %s\n", what, p->chain_id, (long long)p->num_res,
           p->sequence);
    MF_TEST_TRUE(!strcmp(p->chain_id, "X"), "%s: chain named '%s', expected author id X", what,
                 p->chain_id);
    MF_TEST_TRUE(p->num_res == 5 && !strcmp(p->sequence, "MMGSK"),
                 "%s: sequence '%s', expected MMGSK (MSE read as MET, first of hetero SER/THR)",
                 what, p->sequence);
    const int32_t aatype[5] = {12, 12, 7, 15, 11}; /* M M G S K in AF2 order */
    for (int i = 0; i < 5 && p->num_res == 5; i++)
        MF_TEST_TRUE(p->aatype[i] == aatype[i], "%s: aatype[%d] = %d, expected %d", what, i,
                     p->aatype[i], aatype[i]);
    MF_TEST_TRUE(mask_count(p, 0) == 0, "%s: unobserved residue 1 has atoms", what);
    if (scheme_numbers)
        MF_TEST_TRUE(p->residue_index[0] == 10, "%s: unobserved residue numbered %d, not 10", what,
                     p->residue_index[0]);
    const int32_t idx[4] = {11, 12, 12, 13};
    for (int i = 0; i < 4; i++)
        MF_TEST_TRUE(p->residue_index[i + 1] == idx[i], "%s: residue_index[%d] = %d, not %d", what,
                     i + 1, p->residue_index[i + 1], idx[i]);
    MF_TEST_TRUE(p->insertion_code[3] == 'A' && p->insertion_code[2] == ' ',
                 "%s: insertion codes '%c' '%c'", what, p->insertion_code[2], p->insertion_code[3]);
    check_atom(p, 1, "N", 1.f, 2.f, 3.f);
    check_atom(p, 1, "SD", 4.f, 5.f, 6.f); /* SE of MSE */
    MF_TEST_TRUE(p->b_factors[1 * MF_ATOM37 + slot("SD")] == 12.f, "%s: SD B-factor", what);
    check_atom(p, 2, "N", 5.5f, 0.f, 0.f);  /* alt B, occupancy 0.6 */
    check_atom(p, 2, "CA", 6.5f, 0.f, 0.f); /* alt B */
    check_atom(p, 2, "O", 7.f, 0.f, 0.f);   /* only alt A has it */
    check_atom(p, 3, "N", 8.f, 1.f, 1.f);   /* SER, not THR of the hetero */
    check_atom(p, 4, "N", 10.f, 1.f, 1.f);  /* C and D tie at 0.5: the first */
    check_atom(p, 4, "CA", 11.f, 1.f, 1.f);
    MF_TEST_TRUE(mask_count(p, 1) == 3 && mask_count(p, 2) == 3 && mask_count(p, 3) == 2 &&
                     mask_count(p, 4) == 2,
                 "%s: atom counts %lld %lld %lld %lld, expected 3 3 2 2 (H and model 2 left out)",
                 what, (long long)mask_count(p, 1), (long long)mask_count(p, 2),
                 (long long)mask_count(p, 3), (long long)mask_count(p, 4));
    MF_TEST_TRUE(p->entry.resolution == 1.95 && !strcmp(p->entry.release_date, "2001-02-03") &&
                     !strcmp(p->entry.method, "X-RAY DIFFRACTION") &&
                     !strcmp(p->entry.entry_id, "TEST"),
                 "%s: entry %g '%s' '%s' '%s'", what, p->entry.resolution, p->entry.release_date,
                 p->entry.method, p->entry.entry_id);
    mf_protein_list_free(c, n);
}

/* text with the category's lines (from "loop_" before `first_tag` to the next "loop_") removed */
static char *without_loop(const char *text, const char *first_tag)
{
    const char *tag = strstr(text, first_tag);
    const char *start = tag ? tag - strlen("loop_\n") : NULL;
    const char *end = tag ? strstr(tag, "loop_\n") : NULL;
    char *out = malloc(strlen(text) + 1);
    if (!out || !start || !end) {
        free(out);
        return NULL;
    }
    size_t a = (size_t)(start - text);
    memcpy(out, text, a);
    strcpy(out + a, end);
    return out;
}

static char *replace(const char *text, const char *from, const char *to)
{
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

static void check_rejected(const char *text, const char *what, const char *needle)
{
    mf_protein *c = (mf_protein *)1;
    int n = -1;
    mf_status st = text ? mf_mmcif_parse(text, strlen(text), "bad.cif", &c, &n) : MF_ERR_INVALID;
    MF_TEST_TRUE(text && st == MF_ERR_FORMAT, "%s: accepted (status %s)", what, mf_status_name(st));
    MF_TEST_TRUE(c == NULL && n == 0, "%s: output left after failure", what);
    MF_TEST_TRUE(strstr(mf_last_error(), "bad.cif:") && strstr(mf_last_error(), needle),
                 "%s: message lacks 'bad.cif:' or '%s': %s", what, needle, mf_last_error());
    printf("%s -> %s\n", what, mf_last_error());
    if (st == MF_OK) mf_protein_list_free(c, n);
}

static void check_syntax(void)
{
    const char *text = "data_x\n"
                       "_a.one 'O5''\n"
                       "_a.two \"it's\"\n"
                       "_a.three 'N,N'-dimethyl' \n"
                       "_a.four .\n"
                       "_a.five ?\n"
                       "_a.six '.'\n"
                       "_a.seven\n"
                       ";line one\n"
                       "line two\n"
                       ";\n"
                       "loop_\n"
                       "_b.x\n"
                       "_b.y\n"
                       "1 'a b'\n"
                       "2 c#d # comment\n"
                       "data_second\n"
                       "_c.z 1\n";
    mf_cif *cif = NULL;
    MF_TEST_OK(mf_cif_parse(&cif, text, strlen(text), "syntax.cif"));
    if (!cif) return;
    const mf_cif_table *a = mf_cif_find(cif, "_A"), *b = mf_cif_find(cif, "_b");
    const char *want[7] = {"O5'", "it's", "N,N'-dimethyl", ".", "?", ".", "line one\nline two"};
    const int kind[7] = {MF_CIF_VALUE,   MF_CIF_VALUE, MF_CIF_VALUE, MF_CIF_NULL,
                         MF_CIF_UNKNOWN, MF_CIF_VALUE, MF_CIF_VALUE};
    const char *items[7] = {"one", "two", "three", "four", "five", "six", "SEVEN"};
    MF_TEST_TRUE(!strcmp(mf_cif_block_name(cif), "x"), "block name '%s'", mf_cif_block_name(cif));
    for (int i = 0; i < 7; i++) {
        const mf_cif_value *v = mf_cif_get(a, 0, mf_cif_column(a, items[i]));
        MF_TEST_TRUE(!strcmp(v->s, want[i]) && v->kind == kind[i], "_a.%s = '%s' (kind %d)",
                     items[i], v->s, v->kind);
    }
    MF_TEST_TRUE(mf_cif_get(a, 0, mf_cif_column(a, "seven"))->line == 9, "text field line %d",
                 mf_cif_get(a, 0, mf_cif_column(a, "seven"))->line);
    MF_TEST_TRUE(mf_cif_rows(b) == 2 && !strcmp(mf_cif_get(b, 0, 1)->s, "a b") &&
                     !strcmp(mf_cif_get(b, 1, 1)->s, "c#d") && mf_cif_get(b, 1, 0)->line == 16,
                 "loop _b read wrong");
    MF_TEST_TRUE(mf_cif_find(cif, "_c") == NULL, "second data block was read");
    MF_TEST_TRUE(mf_cif_get(b, 5, 0)->kind == MF_CIF_UNKNOWN && mf_cif_column(b, "q") == -1,
                 "out-of-range access not caught");
    printf("CIF syntax: quotes with inner quotes, text field, '.'/'?', loop, comments: checked\n");
    mf_cif_free(cif);
}

/* Every prefix of the entry and random corruptions: success, or MF_ERR_FORMAT and no output. */
static void check_robustness(void)
{
    size_t len = strlen(entry);
    int64_t ok = 0, rejected = 0, wrong = 0;
    char *buf = malloc(len + 1);
    if (!buf) return;
    for (size_t cut = 0; cut < len; cut++) {
        mf_protein *c = (mf_protein *)1;
        int n = -1;
        mf_status st = mf_mmcif_parse(entry, cut, "cut.cif", &c, &n);
        if (st == MF_OK)
            ok++, mf_protein_list_free(c, n);
        else if (st == MF_ERR_FORMAT && c == NULL && n == 0)
            rejected++;
        else
            wrong++;
    }
    const char junk[] = "'\"; \n_.?#loop_data_9-eE";
    for (int trial = 0; trial < 2000; trial++) {
        memcpy(buf, entry, len + 1);
        for (int k = 0; k < 3; k++) {
            uint32_t r = mf_rng_u32(1234, 0, (uint64_t)(trial * 3 + k));
            buf[r % len] = junk[(r >> 16) % (sizeof junk - 1)];
        }
        mf_protein *c = (mf_protein *)1;
        int n = -1;
        mf_status st = mf_mmcif_parse(buf, len, "fuzz.cif", &c, &n);
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
    check_syntax();
    check_entry_chain(entry, "entry (_pdbx_poly_seq_scheme)", 1);
    char *no_scheme = without_loop(entry, "_pdbx_poly_seq_scheme.asym_id");
    MF_TEST_TRUE(no_scheme != NULL, "could not build the variant without the scheme");
    if (no_scheme) check_entry_chain(no_scheme, "entry (_entity_poly_seq + _struct_asym)", 0);
    char *observed = no_scheme ? without_loop(no_scheme, "_entity_poly_seq.entity_id") : NULL;
    if (observed) {
        /* Without sequence categories only the observed residues of protein chains remain. */
        mf_protein *c = NULL;
        int n = 0;
        MF_TEST_OK(mf_mmcif_parse(observed, strlen(observed), "observed", &c, &n));
        MF_TEST_TRUE(n == 1 && c[0].num_res == 4 && !strcmp(c[0].sequence, "MGSK") &&
                         c[0].residue_index[0] == 11 && !strcmp(c[0].chain_id, "X"),
                     "observed-residue mode: %d chains, '%s'", n, n ? c[0].sequence : "");
        printf("observed-residue mode: %s\n", n ? c[0].sequence : "(none)");
        mf_protein_list_free(c, n);
    }
    free(no_scheme);
    free(observed);

    struct {
        char *text;
        const char *what, *needle;
    } bad[] = {
        {replace(entry, "_atom_site.Cartn_y\n", "_atom_site.Cartn_q\n"), "missing column",
         "_atom_site.Cartn_y: missing required column"},
        {replace(entry, "5.0 0.0 0.0 0.40", "nan 0.0 0.0 0.40"), "NaN coordinate",
         "bad.cif:79: _atom_site.Cartn_x: 'nan' is not a finite number"},
        {replace(entry, "6.0 0.0 0.0 0.40", "6.0 ? 0.0 0.40"), "unknown coordinate",
         "_atom_site.Cartn_y: '?'"},
        {replace(entry, "1.0 2.0 3.0 1.00 10.0", "1.0 2.0 3.0 1.00"), "bad loop count",
         "_atom_site: loop has 359 values, not a multiple of its 18 columns"},
        {replace(entry, ";\nloop_", "loop_"), "unterminated text field",
         "bad.cif:15: text field: ';' field not terminated"},
        {replace(entry, "'X-RAY DIFFRACTION'", "'X-RAY DIFFRACTION"), "unterminated quote",
         "bad.cif:5: quoted string: no closing '"},
        {replace(entry, "data_TEST", "_entry.x 1"), "no data block", "expected data_"},
        {replace(entry, "A 1 3 GLY 12", "A 1 x GLY 12"), "non-integer seq_id",
         "_pdbx_poly_seq_scheme.seq_id: 'x' is not an integer"},
        {replace(entry, "A 1 5 LYS 13 . X n\n", ""), "atom beyond the sequence",
         "_atom_site.label_seq_id: 5 outside 1..4"},
        {replace(entry, "1 2001-02-03", "1 2001-2-03"), "malformed date",
         "revision_date: '2001-2-03' is not YYYY-MM-DD"},
        {replace(entry, "_refine.ls_d_res_high 1.95", "_refine.ls_d_res_high high"),
         "non-numeric resolution", "_refine.ls_d_res_high: 'high'"},
        {replace(entry, "_struct_asym.id\n_struct_asym.entity_id\n", "_struct_asym.id\n_x.y\n"),
         "loop mixing categories", "loop mixes categories"},
        {replace(entry, "_entry.id   TEST\n", "_entry.id\n"), "tag without value",
         "bad.cif:3: _entry.id: tag without a value"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        check_rejected(bad[i].text, bad[i].what, bad[i].needle);
        free(bad[i].text);
    }
    check_robustness();
    return mf_test_finish("test_mmcif");
}
