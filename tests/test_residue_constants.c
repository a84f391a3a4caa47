/* Residue constants against AlphaFold 2's alphafold/common/residue_constants.py (and its
 * stereo_chemical_props.txt): every expected value below was typed from the reference file, not
 * from our tables; the derived frames and bounds were computed from the reference's definitions
 * in double and rounded to f32. */
#include <string.h>

#include "protein/residue_constants.h"
#include "tests/support/mf_test.h"

/* Derived tables are built in double on both sides and rounded to f32; libm's cos/sqrt may differ
 * in the last bit, so allow a few f32 ulps of an O(1) quantity. Transcribed facts compare exactly
 * (both sides are the f32 rounding of the same decimal). */
#define TOL_DERIVED_ATOL 1e-6

static int checks;

static void expect_int(const char *what, long long got, long long want)
{
    ++checks;
    MF_TEST_TRUE(got == want, "%s: got %lld, want %lld", what, got, want);
}

static void expect_str(const char *what, const char *got, const char *want)
{
    ++checks;
    if (!want) {
        MF_TEST_TRUE(got == NULL, "%s: got \"%s\", want NULL", what, got ? got : "");
        return;
    }
    MF_TEST_TRUE(got && strcmp(got, want) == 0, "%s: got \"%s\", want \"%s\"", what,
                 got ? got : "(null)", want);
}

static void test_restypes(void)
{
    const char *order = "ARNDCQEGHILKMFPSTWYV";
    const char *names[] = {"ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE",
                           "LEU", "LYS", "MET", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL"};
    for (int r = 0; r < 20; ++r) {
        expect_int("restype_from_one_letter", mf_restype_from_one_letter(order[r]), r);
        expect_int("restype_from_one_letter(lower)", mf_restype_from_one_letter(order[r] + 32), r);
        expect_int("restype_one_letter", mf_restype_one_letter(r), order[r]);
        expect_int("restype_from_three_letter", mf_restype_from_three_letter(names[r]), r);
        expect_str("restype_three_letter", mf_restype_three_letter(r), names[r]);
    }
    expect_int("X", mf_restype_from_one_letter('X'), 20);
    const char *ambiguous = "BZJUObzjuo";
    for (const char *p = ambiguous; *p; ++p)
        expect_int("ambiguous letter -> X", mf_restype_from_one_letter(*p), 20);
    expect_int("'-' is no residue", mf_restype_from_one_letter('-'), -1);
    expect_int("'1' is no residue", mf_restype_from_one_letter('1'), -1);
    expect_int("'*' is no residue", mf_restype_from_one_letter('*'), -1);
    expect_int("MSE -> MET", mf_restype_from_three_letter("MSE"), 12);
    expect_int("HOH -> UNK", mf_restype_from_three_letter("HOH"), 20);
    expect_int("UNK -> UNK", mf_restype_from_three_letter("UNK"), 20);
    expect_str("three_letter(20)", mf_restype_three_letter(20), "UNK");
    expect_int("one_letter(20)", mf_restype_one_letter(20), 'X');
    expect_str("three_letter(21)", mf_restype_three_letter(21), NULL);
    printf("restypes: order ARNDCQEGHILKMFPSTWYV+X, MSE->MET, B/Z/J/U/O->X: exact\n");
}

static void test_atom37(void)
{
    const char *atom_types[37] = {
        "N",   "CA",  "C",   "CB",  "O",   "CG", "CG1", "CG2", "OG",  "OG1", "SG", "CD",  "CD1",
        "CD2", "ND1", "ND2", "OD1", "OD2", "SD", "CE",  "CE1", "CE2", "CE3", "NE", "NE1", "NE2",
        "OE1", "OE2", "CH2", "NH1", "NH2", "OH", "CZ",  "CZ2", "CZ3", "NZ",  "OXT"};
    for (int i = 0; i < 37; ++i) {
        expect_str("atom37_name", mf_atom37_name(i), atom_types[i]);
        expect_int("atom37_index", mf_atom37_index(atom_types[i]), i);
    }
    expect_int("atom37_index(HA)", mf_atom37_index("HA"), -1);
    expect_str("atom37_name(37)", mf_atom37_name(37), NULL);
    printf("atom37: all 37 names and indices: exact\n");
}

static void test_atom14(void)
{
    const char *trp[14] = {"N",   "CA",  "C",   "O",   "CB",  "CG",  "CD1",
                           "CD2", "NE1", "CE2", "CE3", "CZ2", "CZ3", "CH2"};
    const char *arg[14] = {"N",  "CA", "C",   "O",   "CB", "CG", "CD",
                           "NE", "CZ", "NH1", "NH2", "",   "",   ""};
    const char *thr[14] = {"N", "CA", "C", "O", "CB", "OG1", "CG2", "", "", "", "", "", "", ""};
    const char *his[14] = {"N",   "CA",  "C",   "O", "CB", "CG", "ND1",
                           "CD2", "CE1", "NE2", "",  "",   "",   ""};
    for (int a = 0; a < 14; ++a) {
        expect_str("atom14 TRP", mf_atom14_name(17, a), trp[a]);
        expect_str("atom14 ARG", mf_atom14_name(1, a), arg[a]);
        expect_str("atom14 THR", mf_atom14_name(16, a), thr[a]);
        expect_str("atom14 HIS", mf_atom14_name(8, a), his[a]);
        expect_str("atom14 UNK", mf_atom14_name(20, a), "");
    }
    expect_int("atom14_index(TRP, CH2)", mf_atom14_index(17, "CH2"), 13);
    expect_int("atom14_index(GLY, CB)", mf_atom14_index(7, "CB"), -1);
    expect_int("atom14_index(ALA, \"\")", mf_atom14_index(0, ""), -1);
    expect_int("atom14_to_atom37(TRP, CH2)", mf_atom14_to_atom37(17, 13), 28);
    expect_int("atom14_to_atom37(ARG, NH2)", mf_atom14_to_atom37(1, 10), 30);
    expect_int("atom14_to_atom37(ALA, 5)", mf_atom14_to_atom37(0, 5), -1);
    expect_int("atom37_to_atom14(TYR, OH)", mf_atom37_to_atom14(18, 31), 11);
    expect_int("atom37_to_atom14(GLY, CB)", mf_atom37_to_atom14(7, 3), -1);

    /* Derived tables against the element maps and the atom counts of residue_atoms. */
    int32_t a14to37[21 * 14], a37to14[21 * 37];
    float m14[21 * 14], m37[21 * 37];
    mf_make_restype_atom14_to_atom37(a14to37);
    mf_make_restype_atom37_to_atom14(a37to14);
    mf_make_restype_atom14_mask(m14);
    mf_make_restype_atom37_mask(m37);
    const int natoms[20] = {5, 11, 8, 8, 6, 9, 9, 4, 10, 8, 8, 9, 8, 11, 7, 6, 7, 14, 12, 7};
    for (int r = 0; r < 21; ++r) {
        float s14 = 0, s37 = 0;
        for (int a = 0; a < 14; ++a) s14 += m14[r * 14 + a];
        for (int a = 0; a < 37; ++a) s37 += m37[r * 37 + a];
        expect_int("atom14 mask count", (long long)s14, r < 20 ? natoms[r] : 0);
        expect_int("atom37 mask count", (long long)s37, r < 20 ? natoms[r] : 0);
        for (int a = 0; a < 14; ++a)
            if (m14[r * 14 + a] != 0.0f) {
                int j = a14to37[r * 14 + a];
                expect_int("atom14->atom37->atom14 round trip", a37to14[r * 37 + j], a);
                expect_int("atom37 mask at mapped atom", (long long)m37[r * 37 + j], 1);
            }
    }
    expect_int("OXT never in mask (ALA)", (long long)m37[0 * 37 + 36], 0);
    expect_int("atom37_to_atom14 absent -> 0 (GLY CB)", a37to14[7 * 37 + 3], 0);
    expect_int("atom14_to_atom37 absent -> 0 (ALA slot 5)", a14to37[0 * 14 + 5], 0);
    printf("atom14: names of TRP, ARG, THR, HIS, UNK; index maps and masks vs residue_atoms "
           "counts: exact\n");
}

static void test_hhblits(void)
{
    const char *letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ-";
    const int ids[27] = {0,  2,  1,  2,  3,  4,  5, 6,  7,  20, 8,  9, 10, 11,
                         20, 12, 13, 14, 15, 16, 1, 17, 18, 20, 19, 3, 21};
    for (int i = 0; i < 27; ++i) {
        char what[64];
        snprintf(what, sizeof what, "HHBLITS_AA_TO_ID['%c']", letters[i]);
        expect_int(what, mf_hhblits_aa_to_id(letters[i]), ids[i]);
    }
    expect_int("hhblits('a')", mf_hhblits_aa_to_id('a'), -1);
    expect_int("hhblits('.')", mf_hhblits_aa_to_id('.'), -1);
    const char *id_to_aa = "ACDEFGHIKLMNPQRSTVWYX-";
    /* MAP_HHBLITS_AATYPE_TO_OUR_AATYPE */
    const int to_ours[22] = {0, 4,  3, 6, 13, 7,  8,  9,  11, 10, 12,
                             2, 14, 5, 1, 15, 16, 19, 17, 18, 20, 21};
    for (int i = 0; i < 22; ++i) {
        expect_int("ID_TO_HHBLITS_AA", mf_hhblits_id_to_aa(i), id_to_aa[i]);
        expect_int("MAP_HHBLITS_AATYPE_TO_OUR_AATYPE", mf_hhblits_to_restype(i), to_ours[i]);
        expect_int("restypes_with_x_and_gap", mf_restype_with_x_and_gap_letter(i),
                   "ARNDCQEGHILKMFPSTWYVX-"[i]);
    }
    printf("HHblits: all 27 letters, the inverse and the map to our order: exact\n");
}

static void test_chi(void)
{
    const char *arg4[4] = {"CG", "CD", "NE", "CZ"};
    const char *ile2[4] = {"CA", "CB", "CG1", "CD1"};
    const char *met3[4] = {"CB", "CG", "SD", "CE"};
    const char *thr1[4] = {"N", "CA", "CB", "OG1"};
    for (int k = 0; k < 4; ++k) {
        expect_str("chi ARG chi4", mf_chi_angle_atom_name(1, 3, k), arg4[k]);
        expect_str("chi ILE chi2", mf_chi_angle_atom_name(9, 1, k), ile2[k]);
        expect_str("chi MET chi3", mf_chi_angle_atom_name(12, 2, k), met3[k]);
        expect_str("chi THR chi1", mf_chi_angle_atom_name(16, 0, k), thr1[k]);
        expect_str("chi SER chi2 absent", mf_chi_angle_atom_name(15, 1, k), NULL);
        expect_str("chi GLY chi1 absent", mf_chi_angle_atom_name(7, 0, k), NULL);
    }
    int32_t idx[21 * 4 * 4];
    mf_make_chi_angles_atom_indices(idx);
    const int his2[4] = {1, 3, 5, 14};   /* CA CB CG ND1 */
    const int lys4[4] = {5, 11, 19, 35}; /* CG CD CE NZ */
    for (int k = 0; k < 4; ++k) {
        expect_int("chi indices HIS chi2", idx[(8 * 4 + 1) * 4 + k], his2[k]);
        expect_int("chi indices LYS chi4", idx[(11 * 4 + 3) * 4 + k], lys4[k]);
        expect_int("chi indices CYS chi2 padded 0", idx[(4 * 4 + 1) * 4 + k], 0);
    }
    const float mask[21][4] = {{0, 0, 0, 0}, {1, 1, 1, 1}, {1, 1, 0, 0}, {1, 1, 0, 0}, {1, 0, 0, 0},
                               {1, 1, 1, 0}, {1, 1, 1, 0}, {0, 0, 0, 0}, {1, 1, 0, 0}, {1, 1, 0, 0},
                               {1, 1, 0, 0}, {1, 1, 1, 1}, {1, 1, 1, 0}, {1, 1, 0, 0}, {1, 1, 0, 0},
                               {1, 0, 0, 0}, {1, 0, 0, 0}, {1, 1, 0, 0}, {1, 1, 0, 0}, {1, 0, 0, 0},
                               {0, 0, 0, 0}};
    mf_check_close_f32("chi_angles_mask [21,4]", &mf_chi_angles_mask[0][0], &mask[0][0], 84, 0, 0);
    float pi[21][4] = {{0}};
    pi[3][1] = pi[6][2] = pi[13][1] = pi[18][1] = 1.0f; /* ASP chi2, GLU chi3, PHE chi2, TYR chi2 */
    mf_check_close_f32("chi_pi_periodic [21,4]", &mf_chi_pi_periodic[0][0], &pi[0][0], 84, 0, 0);
    /* consistency: a chi exists exactly where its atoms are listed */
    for (int r = 0; r < 21; ++r)
        for (int c = 0; c < 4; ++c)
            expect_int("chi mask vs atoms", mf_chi_angle_atom_name(r, c, 0) != NULL,
                       mf_chi_angles_mask[r][c] != 0.0f);
}

typedef struct {
    int restype;
    const char *atom;
    int group;
    float pos[3];
} rg_expect;

static void test_rigid_groups(void)
{
    /* typed from rigid_group_atom_positions */
    const rg_expect ex[] = {
        {1, "NH1", 7, {0.206f, 2.301f, 0.000f}},   {17, "CH2", 5, {3.028f, -2.890f, -0.013f}},
        {14, "CD", 5, {0.477f, 1.424f, 0.0f}},     {9, "CG2", 4, {0.540f, -0.785f, -1.199f}},
        {18, "OH", 5, {4.168f, -0.002f, -0.005f}}, {7, "N", 0, {-0.572f, 1.337f, 0.000f}},
        {19, "CG2", 4, {0.533f, -0.776f, 1.203f}}, {8, "NE2", 5, {2.145f, -0.466f, 0.004f}},
        {0, "CB", 0, {-0.529f, -0.774f, -1.205f}}, {5, "NE2", 6, {0.593f, -1.189f, -0.001f}},
        {12, "CE", 6, {0.320f, 1.786f, -0.000f}},  {2, "ND2", 5, {0.593f, -1.188f, 0.001f}},
        {16, "OG1", 4, {0.472f, 1.353f, 0.000f}},  {14, "O", 3, {0.621f, 1.066f, 0.000f}},
    };
    const int n = (int)(sizeof ex / sizeof ex[0]);
    float p14[21 * 14 * 3], p37[21 * 37 * 3], got14[3 * 14], got37[3 * 14], want[3 * 14];
    int32_t g14[21 * 14], g37[21 * 37];
    mf_make_restype_atom14_rigid_group_positions(p14);
    mf_make_restype_atom37_rigid_group_positions(p37);
    mf_make_restype_atom14_to_rigid_group(g14);
    mf_make_restype_atom37_to_rigid_group(g37);
    for (int i = 0; i < n; ++i) {
        int a14 = mf_atom14_index(ex[i].restype, ex[i].atom);
        int a37 = mf_atom37_index(ex[i].atom);
        expect_int("atom in atom14 list", a14 >= 0, 1);
        if (a14 < 0) return;
        for (int k = 0; k < 3; ++k) {
            got14[i * 3 + k] = p14[(ex[i].restype * 14 + a14) * 3 + k];
            got37[i * 3 + k] = p37[(ex[i].restype * 37 + a37) * 3 + k];
            want[i * 3 + k] = ex[i].pos[k];
        }
        expect_int("atom14_to_rigid_group", g14[ex[i].restype * 14 + a14], ex[i].group);
        expect_int("atom37_to_rigid_group", g37[ex[i].restype * 37 + a37], ex[i].group);
    }
    mf_check_close_f32("atom14 rigid group positions (14 atoms)", got14, want, 3 * n, 0, 0);
    mf_check_close_f32("atom37 rigid group positions (14 atoms)", got37, want, 3 * n, 0, 0);

    /* every atom of every residue: in atom14 and atom37 masks, group within 0..7 */
    int total = 0;
    for (int r = 0; r < 20; ++r) {
        int na = 0;
        const mf_rigid_group_atom *t = mf_rigid_group_atom_positions(r, &na);
        for (int i = 0; i < na; ++i) {
            expect_int("rigid atom has atom14 slot", mf_atom14_index(r, t[i].atom_name) >= 0, 1);
            expect_int("group in 0..7", t[i].group >= 0 && t[i].group < 8, 1);
        }
        total += na;
    }
    expect_int("rigid group atoms in all 20 residues", total, 167);
    int na = -1;
    expect_int("X has no rigid atoms", mf_rigid_group_atom_positions(20, &na) == NULL && na == 0,
               1);

    /* default frames, from the reference's construction in double, rounded to f32 */
    float frames[21 * 8 * 16];
    mf_make_restype_rigid_group_default_frame(frames);
    struct {
        int restype, group;
        float m[12];
    } fe[] = {
        {1,
         5,
         {0.405161798f, -0.914245009f, 0, 0.615999997f, 0.914245009f, 0.405161798f, 0, 1.38999999f,
          0, 0, 1, 0}},
        {8,
         4,
         {-0.343190551f, -0.514067888f, 0.786100805f, -0.524999976f, -0.508575737f, 0.805332839f,
          0.304614067f, -0.777999997f, -0.789665103f, -0.295251101f, -0.537825048f, -1.20799994f}},
        {17, 3, {1, 0, 0, 1.52499998f, 0, -1, 0, 0, 0, 0, -1, 0}},
        {7,
         2,
         {-0.393338263f, 0.919393837f, 0, -0.572000027f, 0.919393837f, 0.393338263f, 0, 1.33700001f,
          0, 0, -1, 0}},
        {11,
         7,
         {0.367764562f, -0.929918945f, 0, 0.560000002f, 0.929918945f, 0.367764562f, 0, 1.41600001f,
          0, 0, 1, 0}},
        {14,
         5,
         {0.255579919f, -0.966787934f, 0, 0.381999999f, 0.966787934f, 0.255579919f, 0, 1.44500005f,
          0, 0, 1, 0}},
    };
    for (size_t i = 0; i < sizeof fe / sizeof fe[0]; ++i) {
        char what[96];
        snprintf(what, sizeof what, "default frame %s group %d (rows 0..2)",
                 mf_restype_three_letter(fe[i].restype), fe[i].group);
        mf_check_close_f32(what, &frames[(fe[i].restype * 8 + fe[i].group) * 16], fe[i].m, 12,
                           TOL_DERIVED_ATOL, 0);
        const float *m = &frames[(fe[i].restype * 8 + fe[i].group) * 16];
        expect_int("frame last row 0 0 0 1",
                   m[12] == 0.0f && m[13] == 0.0f && m[14] == 0.0f && m[15] == 1.0f, 1);
    }
    const float eye[16] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
    mf_check_close_f32("default frame ALA group 0 = identity", &frames[(0 * 8 + 0) * 16], eye, 16,
                       0, 0);
    mf_check_close_f32("default frame ALA group 1 = identity", &frames[(0 * 8 + 1) * 16], eye, 16,
                       0, 0);
    float zeros[16] = {0};
    mf_check_close_f32("default frame ALA chi1 absent = 0", &frames[(0 * 8 + 4) * 16], zeros, 16, 0,
                       0);
    mf_check_close_f32("default frame X group 0 = 0", &frames[(20 * 8 + 0) * 16], zeros, 16, 0, 0);
}

static void test_ambiguous(void)
{
    float amb[21 * 14];
    int32_t swap[21 * 14];
    mf_make_restype_atom14_ambiguity(amb, swap);
    float total = 0;
    for (int i = 0; i < 21 * 14; ++i) total += amb[i];
    expect_int("ambiguous atoms in all residues", (long long)total, 12);
    expect_int("ASP OD1 <-> OD2", swap[3 * 14 + 6], 7);
    expect_int("ASP OD2 <-> OD1", swap[3 * 14 + 7], 6);
    expect_int("GLU OE1 <-> OE2", swap[6 * 14 + 7], 8);
    expect_int("PHE CD1 <-> CD2", swap[13 * 14 + 6], 7);
    expect_int("PHE CE2 <-> CE1", swap[13 * 14 + 9], 8);
    expect_int("TYR CE1 <-> CE2", swap[18 * 14 + 8], 9);
    expect_int("TYR OH not ambiguous", swap[18 * 14 + 11], 11);
    expect_int("LEU CD1 not ambiguous (resolved by geometry)", swap[10 * 14 + 6], 6);
    int n = 0;
    mf_ambiguous_atom_pairs(&n);
    expect_int("ambiguous pairs", n, 6);
    printf("ambiguous atoms: ASP, GLU, PHE, TYR swaps: exact\n");
}

static void test_geometry(void)
{
    float got[8] = {
        mf_between_res_bond_length_c_n[0],        mf_between_res_bond_length_c_n[1],
        mf_between_res_bond_length_stddev_c_n[0], mf_between_res_bond_length_stddev_c_n[1],
        mf_between_res_cos_angles_c_n_ca[0],      mf_between_res_cos_angles_c_n_ca[1],
        mf_between_res_cos_angles_ca_c_n[0],      mf_between_res_cos_angles_ca_c_n[1]};
    const float want[8] = {1.329f, 1.341f, 0.014f, 0.016f, -0.5203f, 0.0353f, -0.4473f, 0.0311f};
    mf_check_close_f32("between-residue C-N length, stddev, cos angles", got, want, 8, 0, 0);
    float vdw[5] = {mf_van_der_waals_radius('C'), mf_van_der_waals_radius('N'),
                    mf_van_der_waals_radius('O'), mf_van_der_waals_radius('S'),
                    mf_van_der_waals_radius('H')};
    const float vdw_want[5] = {1.7f, 1.55f, 1.52f, 1.8f, -1.0f};
    mf_check_close_f32("van der Waals radii C N O S (H absent: -1)", vdw, vdw_want, 5, 0, 0);
    double caca = MF_CA_CA;
    double caca_want = 3.80209737096;
    mf_check_close_f64("ca_ca", &caca, &caca_want, 1, 0, 0);

    /* stereo-chemical table: counts and self-consistency */
    int nb = 0, na = 0;
    const mf_residue_bond *bonds = mf_residue_bonds(&nb);
    const mf_residue_bond_angle *angles = mf_residue_bond_angles(&na);
    expect_int("bond lengths in table", nb, 153);
    expect_int("bond angles in table", na, 174);
    for (int i = 0; i < nb; ++i)
        expect_int("bond atoms exist in residue",
                   mf_atom14_index(bonds[i].restype, bonds[i].atom1) >= 0 &&
                       mf_atom14_index(bonds[i].restype, bonds[i].atom2) >= 0,
                   1);
    for (int i = 0; i < na; ++i)
        expect_int("angle atoms exist in residue",
                   mf_atom14_index(angles[i].restype, angles[i].atom1) >= 0 &&
                       mf_atom14_index(angles[i].restype, angles[i].atom2) >= 0 &&
                       mf_atom14_index(angles[i].restype, angles[i].atom3) >= 0,
                   1);
    /* spot checks typed from the file: CB-SG CYS 1.812 0.016; CG-SD-CE MET 100.2 1.6 */
    int found = 0;
    for (int i = 0; i < nb; ++i)
        if (bonds[i].restype == 4 && !strcmp(bonds[i].atom1, "CB") && !strcmp(bonds[i].atom2, "SG"))
            found = bonds[i].length == 1.812 && bonds[i].stddev == 0.016;
    expect_int("CYS CB-SG 1.812 +- 0.016", found, 1);
    found = 0;
    for (int i = 0; i < na; ++i)
        if (angles[i].restype == 12 && !strcmp(angles[i].atom1, "CG") &&
            !strcmp(angles[i].atom3, "CE"))
            found = angles[i].angle_deg == 100.2 && angles[i].stddev_deg == 1.6;
    expect_int("MET CG-SD-CE 100.2 +- 1.6", found, 1);

    static float lo[21 * 14 * 14], hi[21 * 14 * 14], sd[21 * 14 * 14];
    mf_make_atom14_dists_bounds(1.5f, 15.0f, lo, hi, sd);
#define AT(r, a, b) (((r)*14 + mf_atom14_index((r), (a))) * 14 + mf_atom14_index((r), (b)))
    /* virtual bonds: ALA N..C (N-CA-C), PRO CA..CD (CA-N-CD), TRP CZ2..CZ3 (CZ2-CH2-CZ3);
     * bonds ALA CA-CB, CYS CB-SG; clash-only pairs ALA CB..O (C, O) and MET SD..N (S, N).
     * Reference: AF2 make_atom14_dists_bounds (defaults 1.5, 15) in double. */
    const int at[] = {AT(0, "N", "C"), AT(14, "CD", "CA"), AT(17, "CZ2", "CZ3"), AT(0, "CA", "CB"),
                      AT(4, "SG", "CB")};
    const float want_lo[] = {1.73719716f, 2.02690363f, 2.02564597f, 1.20500004f, 1.57200003f};
    const float want_hi[] = {3.18175626f, 2.84252763f, 2.80168486f, 1.83500004f, 2.05200005f};
    const float want_sd[] = {0.0481519699f, 0.0271874685f, 0.0258679595f, 0.0209999997f,
                             0.0160000008f};
    float g_lo[5], g_hi[5], g_sd[5];
    for (int i = 0; i < 5; ++i) g_lo[i] = lo[at[i]], g_hi[i] = hi[at[i]], g_sd[i] = sd[at[i]];
    mf_check_close_f32("atom14 bounds lower (bonds, virtual bonds)", g_lo, want_lo, 5,
                       TOL_DERIVED_ATOL, 0);
    mf_check_close_f32("atom14 bounds upper (bonds, virtual bonds)", g_hi, want_hi, 5,
                       TOL_DERIVED_ATOL, 0);
    mf_check_close_f32("atom14 bounds stddev (bonds, virtual bonds)", g_sd, want_sd, 5,
                       TOL_DERIVED_ATOL, 0);
    float clash[4] = {lo[AT(0, "CB", "O")], hi[AT(0, "CB", "O")], lo[AT(12, "SD", "N")],
                      sd[AT(12, "SD", "N")]};
    const float clash_want[4] = {1.72000003f, 1e10f, 1.85000002f, 0.0f};
    mf_check_close_f32("atom14 clash bounds (ALA CB..O, MET SD..N)", clash, clash_want, 4,
                       TOL_DERIVED_ATOL, 0);
    float sym[2] = {lo[AT(0, "C", "N")], lo[AT(0, "N", "C")]};
    mf_check_close_f32("atom14 bounds symmetric", &sym[0], &sym[1], 1, 0, 0);
#undef AT
}

int main(void)
{
    test_restypes();
    test_atom37();
    test_atom14();
    test_hhblits();
    test_chi();
    test_rigid_groups();
    test_ambiguous();
    test_geometry();
    printf("%d exact integer/string checks\n", checks);
    return mf_test_finish("test_residue_constants");
}
