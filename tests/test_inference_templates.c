/* Templates at inference (data/pipeline.h mf_pipeline_inference_features_ex): the OpenFold test
 * query (shared/data fasta/examples/openfold_short.fasta, 73 residues, its BFD a3m) with its
 * HHsearch hits (templates/openfold_testquery73_pdb70_hits.hhr) and the training mmCIF directory
 * as the template store.
 *  1. the templates featurized are those `memfold featurize` makes for the same hits
 *     (mf_template_features_make called directly: count, order, domain names, Sum_probs, skip
 *     counts), and the processed features hold the first N_templ of them: template_aatype is
 *     their HHblits ids in restype order, positions and masks are their atoms bit for bit,
 *     template_mask 1, template_sum_probs theirs, pseudo-beta and torsions what
 *     structure_module/torsion_features.h computes from those atoms (bitwise); no atom where no
 *     residue is aligned;
 *  2. adding templates changes no other feature (same seed: the MSA features, masks, atom14 maps
 *     are bitwise those of the run without hits);
 *  3. the max template date (2006-01-01): 2 templates (2CRB, 1PSM), fewer than N_templ, so
 *     T = 2 in every template feature;
 *  4. errors: missing mmCIF directory, a badly spelled date, a missing .hhr, templates for a
 *     window of a chain;
 *  5. processed files (data/processed.h): the inference sample written and read back is
 *     mf_processed_equal (every name, flag, shape and byte); the training loader's first sample
 *     of the 4ZEY raw features (mf_featurize_run on 4zey.cif with a 2CRB hit, tiny config), written
 *     and read back, is equal too and has exactly the names of shared/testvectors/features.h5 with
 *     their dtypes, ranks and per_iteration flags (values differ: the sampling is random). */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/loader.h"
#include "data/pipeline.h"
#include "protein/residue_constants.h"
#include "structure_module/torsion_features.h"
#include "tests/support/mf_test.h"

static char paths[4][1024];
static char tmp[1024];

static const char *tp(const char *rel)
{
    static char p[4][1200];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", tmp, rel);
    return p[k];
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static const char *sd(int k, const char *rel)
{
    snprintf(paths[k], sizeof paths[k], "%s/data/%s", mf_test_shared_dir(), rel);
    return paths[k];
}

static const mf_feature *feat(const mf_processed_features *f, const char *name)
{
    const mf_feature *x = mf_processed_find(f, name);
    MF_TEST_TRUE(x != NULL, "feature '%s' missing", name);
    return x;
}

static bool shape_is(const mf_feature *x, int ndim, const int64_t *shape)
{
    if (!x || x->array.ndim != ndim || x->per_iteration) return false;
    for (int k = 0; k < ndim; k++)
        if (x->array.shape[k] != shape[k]) return false;
    return true;
}

/* The processed template features against featurize's templates ref (the first T of them). */
static void check_templates(const mf_processed_features *f, const mf_template_features *ref,
                            int64_t T, const char *what)
{
    const int64_t N = ref->num_res;
    const mf_feature *aat = feat(f, "template_aatype"),
                     *pos = feat(f, "template_all_atom_positions"),
                     *mask = feat(f, "template_all_atom_mask"), *tm = feat(f, "template_mask"),
                     *sp = feat(f, "template_sum_probs"), *pb = feat(f, "template_pseudo_beta"),
                     *pbm = feat(f, "template_pseudo_beta_mask"),
                     *sc = feat(f, "template_torsion_angles_sin_cos"),
                     *alt = feat(f, "template_alt_torsion_angles_sin_cos"),
                     *tam = feat(f, "template_torsion_angles_mask");
    if (!aat || !pos || !mask || !tm || !sp || !pb || !pbm || !sc || !alt || !tam) return;
    const bool shapes =
        shape_is(aat, 2, (int64_t[]){T, N}) && shape_is(pos, 4, (int64_t[]){T, N, MF_ATOM37, 3}) &&
        shape_is(mask, 3, (int64_t[]){T, N, MF_ATOM37}) && shape_is(tm, 1, (int64_t[]){T}) &&
        shape_is(sp, 2, (int64_t[]){T, 1}) && shape_is(pb, 3, (int64_t[]){T, N, 3}) &&
        shape_is(pbm, 2, (int64_t[]){T, N}) && shape_is(sc, 4, (int64_t[]){T, N, 7, 2}) &&
        shape_is(alt, 4, (int64_t[]){T, N, 7, 2}) && shape_is(tam, 3, (int64_t[]){T, N, 7});
    MF_TEST_TRUE(shapes, "%s: template feature shapes for T = %lld, N = %lld", what, (long long)T,
                 (long long)N);
    if (!shapes) return;
    const int32_t *a = aat->array.data;
    int64_t bad_aa = 0, atoms_on_gaps = 0;
    int32_t *want_aa = malloc((size_t)(T * N) * sizeof *want_aa);
    float *want_pb = malloc((size_t)(T * N * 3) * sizeof *want_pb);
    float *want_pbm = malloc((size_t)(T * N) * sizeof *want_pbm);
    float *want_sc = malloc((size_t)(T * N * 14) * sizeof *want_sc);
    float *want_alt = malloc((size_t)(T * N * 14) * sizeof *want_alt);
    float *want_tam = malloc((size_t)(T * N * 7) * sizeof *want_tam);
    if (!want_aa || !want_pb || !want_pbm || !want_sc || !want_alt || !want_tam) {
        mf_test_fail("%s: out of memory", what);
        goto cleanup;
    }
    for (int64_t i = 0; i < T * N; i++) {
        want_aa[i] = mf_hhblits_to_restype(ref->aatype[i]);
        bad_aa += a[i] != want_aa[i];
        if (ref->aatype[i] == MF_MSA_GAP)
            for (int k = 0; k < MF_ATOM37; k++)
                atoms_on_gaps += ((const float *)mask->array.data)[i * MF_ATOM37 + k] != 0.f;
    }
    MF_TEST_TRUE(bad_aa == 0,
                 "%s: template_aatype differs from featurize's HHblits ids (as restypes) in %lld "
                 "of %lld positions",
                 what, (long long)bad_aa, (long long)(T * N));
    MF_TEST_TRUE(atoms_on_gaps == 0, "%s: %lld template atoms where no residue is aligned", what,
                 (long long)atoms_on_gaps);
    printf("  %s: template_aatype = featurize's ids in restype order (%lld positions, exact)\n",
           what, (long long)(T * N));
    mf_check_bitwise_f32("template_all_atom_positions vs featurize", pos->array.data,
                         ref->all_atom_positions, T * N * MF_ATOM37 * 3);
    mf_check_bitwise_f32("template_all_atom_mask vs featurize", mask->array.data,
                         ref->all_atom_masks, T * N * MF_ATOM37);
    mf_check_bitwise_f32("template_sum_probs vs featurize", sp->array.data, ref->sum_probs, T);
    float ones[MF_FEATURIZE_MAX_TEMPLATES];
    for (int k = 0; k < MF_FEATURIZE_MAX_TEMPLATES; k++) ones[k] = 1.f;
    mf_check_bitwise_f32("template_mask = 1", tm->array.data, ones, T);
    for (int64_t t = 0; t < T; t++) {
        const float *p = ref->all_atom_positions + t * N * MF_ATOM37 * 3;
        const float *m = ref->all_atom_masks + t * N * MF_ATOM37;
        mf_pseudo_beta_from_atom37(want_pb + t * N * 3, want_pbm + t * N, want_aa + t * N, p, m, N);
        MF_TEST_OK(mf_atom37_to_torsion_angles(want_sc + t * N * 14, want_alt + t * N * 14,
                                               want_tam + t * N * 7, want_aa + t * N, p, m, N));
    }
    mf_check_bitwise_f32("template_pseudo_beta", pb->array.data, want_pb, T * N * 3);
    mf_check_bitwise_f32("template_pseudo_beta_mask", pbm->array.data, want_pbm, T * N);
    mf_check_bitwise_f32("template_torsion_angles_sin_cos", sc->array.data, want_sc, T * N * 14);
    mf_check_bitwise_f32("template_alt_torsion_angles_sin_cos", alt->array.data, want_alt,
                         T * N * 14);
    mf_check_bitwise_f32("template_torsion_angles_mask", tam->array.data, want_tam, T * N * 7);
    double on = 0;
    for (int64_t i = 0; i < T * N; i++) on += want_pbm[i];
    MF_TEST_TRUE(T == 0 || on > 0, "%s: no template residue has a pseudo-beta", what);
cleanup:
    free(want_aa);
    free(want_pb);
    free(want_pbm);
    free(want_sc);
    free(want_alt);
    free(want_tam);
}

/* Every feature but the template ones bitwise equal. */
static void check_rest_unchanged(const mf_processed_features *with,
                                 const mf_processed_features *without)
{
    int compared = 0, differ = 0, missing = 0;
    for (int i = 0; i < without->num_features; i++) {
        const mf_feature *b = &without->features[i];
        if (!strncmp(b->name, "template_", 9)) continue;
        const mf_feature *a = mf_processed_find(with, b->name);
        if (!a) {
            missing++;
            continue;
        }
        compared++;
        const size_t bytes = (size_t)mf_h5_array_numel(&b->array) * mf_dtype_size(b->array.dtype);
        bool same = a->array.dtype == b->array.dtype && a->array.ndim == b->array.ndim &&
                    a->per_iteration == b->per_iteration;
        for (int k = 0; same && k < a->array.ndim; k++)
            same = a->array.shape[k] == b->array.shape[k];
        if (!same || memcmp(a->array.data, b->array.data, bytes)) {
            differ++;
            printf("  differs: %s\n", b->name);
        }
    }
    printf("  %d non-template features compared with the run without hits (same seed): %d differ, "
           "%d missing (exact)\n",
           compared, differ, missing);
    MF_TEST_TRUE(compared > 10 && differ == 0 && missing == 0 &&
                     with->num_features == without->num_features,
                 "templates changed other features (%d differ, %d missing, %d vs %d features)",
                 differ, missing, with->num_features, without->num_features);
}

/* Written with mf_processed_write, read with mf_processed_read: equal in every respect. */
static void check_round_trip(const mf_processed_features *f, const char *path, const char *what)
{
    mf_processed_features back;
    mf_processed_init(&back);
    MF_TEST_OK(mf_processed_write(path, f));
    MF_TEST_OK(mf_processed_read(path, &back));
    char diff[512] = "";
    const bool eq = mf_processed_equal(f, &back, diff, sizeof diff);
    printf("  %s: %d features written and read back: %s (exact)\n", what, f->num_features,
           eq ? "equal" : diff);
    MF_TEST_TRUE(eq && back.num_iterations == f->num_iterations && back.num_res == f->num_res,
                 "%s: read back differs: %s", what, diff);
    mf_processed_free(&back);
}

/* 4ZEY A 1-84 against 2CRB A 7-90 (94% identical), as tests/cli/featurize_processed.sh. */
static const char hit_4zey[] =
    "Query         4zey_A\nMatch_columns 84\nNo_of_seqs    1 out of 1\n\n"
    " No Hit                             Prob E-value P-value  Score    SS Cols Query HMM  "
    "Template HMM\n"
    "  1 2CRB_A nuclear receptor bindin  99.9 1.0E-30 1.0E-34  150.0   0.0   84    1-84      "
    "7-90  (97)\n\n"
    "No 1\n>2CRB_A nuclear receptor binding factor 2\n"
    "Probab=99.90  E-value=1e-30  Score=150.00  Aligned_cols=84  Identities=94%  Similarity=1.5  "
    "Sum_probs=80.5  Template_Neff=6.2\n\n"
    "Q 4zey_A            1 GMEGPLNLAHQQSRRADRLLAAGKYEEAISCHKKAAAYLSEAMKLTQSEQAHLSLELQRDSHMKQ"
    "LLLIQERWKRAQREERLKA   84 (84)\n"
    "T 2CRB_A            7 GMEGPLNLAHQQSRRADRLLAAGKYEEAISCHRKATTYLSEAMKLTESEQAHLSLELQRDSHMKQ"
    "LLLIQERWKRAKREERLKA   90 (97)\n\nDone!\n";

static void check_training_sample_file(void)
{
    printf("5. the 4ZEY raw features -> the loader's sample -> processed file\n");
    mkdir(tp("s"), 0700);
    mkdir(tp("hits"), 0700);
    FILE *h = fopen(tp("hits/4zey_A.hhr"), "w");
    const bool wrote = h && fputs(hit_4zey, h) >= 0;
    if (h) fclose(h);
    MF_TEST_TRUE(wrote && symlink(sd(0, "structures/train/mmcif/4zey.cif"), tp("s/4zey.cif")) == 0,
                 "cannot set up %s", tmp);
    char raw_path[1200];
    snprintf(raw_path, sizeof raw_path, "%s", tp("raw.h5"));
    mf_featurize_options fo = {.structures_dir = tp("s"),
                               .output = raw_path,
                               .template_hits_dir = tp("hits"),
                               .template_mmcif_dir = sd(1, "structures/train/mmcif"),
                               .max_template_date = "2020-01-01"};
    mf_featurize_report rep;
    MF_TEST_OK(mf_featurize_run(&fo, NULL, NULL, &rep));
    MF_TEST_TRUE(rep.chains_written == 1 && rep.templates_written == 1,
                 "4zey raw features: %lld chains, %lld templates", (long long)rep.chains_written,
                 (long long)rep.templates_written);
    mf_featurize_report_free(&rep);

    mf_config *cfg = malloc(sizeof *cfg);
    if (!cfg || mf_config_preset("tiny", cfg) != MF_OK) {
        mf_test_fail("tiny preset");
        free(cfg);
        return;
    }
    mf_loader_options lo = {
        .path = raw_path, .seed = 3, .pipeline = mf_pipeline_options_training(cfg)};
    free(cfg);
    mf_loader *l = NULL;
    mf_processed_features f, ref;
    mf_processed_init(&f);
    mf_processed_init(&ref);
    MF_TEST_OK(mf_loader_open(&l, &lo));
    if (l) {
        mf_loader_sample_info info;
        MF_TEST_OK(mf_loader_sample(l, 0, 0, &f, &info));
        printf("  sample 0: %s, crop [%lld, %lld) of %lld, %lld templates, R = %lld\n", info.chain,
               (long long)info.crop_start, (long long)(info.crop_start + info.crop_size),
               (long long)info.chain_length, (long long)info.num_templates,
               (long long)f.num_iterations);
        mf_loader_close(l);
    }
    check_round_trip(&f, tp("sample.h5"), "4zey_A training sample");
    char ref_path[1200];
    snprintf(ref_path, sizeof ref_path, "%s/testvectors/features.h5", mf_test_shared_dir());
    MF_TEST_OK(mf_processed_read(ref_path, &ref));
    mf_processed_features back;
    mf_processed_init(&back);
    MF_TEST_OK(mf_processed_read(tp("sample.h5"), &back));
    int missing = 0, unlike = 0;
    for (int i = 0; i < ref.num_features; i++) {
        const mf_feature *r = &ref.features[i], *b = mf_processed_find(&back, r->name);
        if (!b) {
            printf("  missing: %s\n", r->name);
            missing++;
        } else if (b->array.dtype != r->array.dtype || b->array.ndim != r->array.ndim ||
                   b->per_iteration != r->per_iteration ||
                   (b->per_iteration && b->array.shape[0] != back.num_iterations)) {
            printf("  unlike features.h5: %s (ndim %d vs %d, per_iteration %d vs %d)\n", r->name,
                   b->array.ndim, r->array.ndim, b->per_iteration, r->per_iteration);
            unlike++;
        }
    }
    printf("  against features.h5: %d names, %d in the sample (%d missing, %d extra, %d with "
           "another dtype, rank or recycling axis)\n",
           ref.num_features, back.num_features, missing,
           back.num_features - ref.num_features + missing, unlike);
    MF_TEST_TRUE(ref.num_features > 40 && missing == 0 && unlike == 0 &&
                     back.num_features == ref.num_features,
                 "training sample file vs features.h5: %d missing, %d unlike, %d vs %d names",
                 missing, unlike, back.num_features, ref.num_features);
    mf_processed_free(&back);
    mf_processed_free(&ref);
    mf_processed_free(&f);
}

int main(void)
{
    mf_h5_quiet();
    const char *tdir = getenv("TMPDIR");
    snprintf(tmp, sizeof tmp, "%s/memfold-test-inference-templates-XXXXXX",
             tdir && *tdir ? tdir : "/tmp");
    if (!mkdtemp(tmp)) return mf_test_skip("cannot create a temporary directory");
    mf_config *cfg = malloc(sizeof *cfg);
    if (!cfg || mf_config_preset("af2-initial", cfg) != MF_OK) {
        mf_test_fail("af2-initial preset: %s", cfg ? mf_last_error() : "out of memory");
        free(cfg);
        rmdir(tmp);
        return mf_test_finish("test_inference_templates");
    }
    mf_pipeline_options o = mf_pipeline_options_inference(cfg);
    free(cfg);
    mf_fasta fa = {0};
    MF_TEST_OK(
        mf_fasta_read(sd(0, "fasta/examples/openfold_short.fasta"), MF_FASTA_UNKNOWN_TO_X, &fa));
    if (fa.num_records < 1 || fa.records[0].length != 73) {
        mf_test_fail("openfold_short.fasta: expected the 73-residue test query");
        mf_fasta_free(&fa);
        rmdir(tmp);
        return mf_test_finish("test_inference_templates");
    }
    const mf_fasta_record *rec = &fa.records[0];
    const char *msa[1] = {sd(1, "msas/openfold_testquery73/bfd_uniclust_hits.a3m")};
    mf_inference_inputs in = {.msa_paths = msa,
                              .num_msa_paths = 1,
                              .template_hits =
                                  sd(2, "templates/openfold_testquery73_pdb70_hits.hhr"),
                              .template_mmcif_dir = sd(3, "structures/train/mmcif")};

    /* what `memfold featurize` makes of the same hits for the same sequence */
    mf_hhr hhr;
    mf_template_features ref = {0}, got = {0};
    MF_TEST_OK(mf_hhr_read(in.template_hits, &hhr));
    const mf_template_options to = {.mmcif_dir = in.template_mmcif_dir};
    MF_TEST_OK(mf_template_features_make(rec->sequence, &hhr, &to, &ref));

    printf("1. inference with %s: N_templ = %lld\n", in.template_hits, (long long)o.max_templates);
    mf_processed_features f, g;
    MF_TEST_OK(mf_pipeline_inference_features_ex(rec, &in, &o, 5, &f, &got));
    printf("  featurized %d templates:", got.num_templates);
    for (int k = 0; k < got.num_templates; k++) printf(" %s", got.domain_names[k]);
    printf(" (featurize: %d)\n", ref.num_templates);
    bool same_list = got.num_templates == ref.num_templates && ref.num_templates == 7 &&
                     !memcmp(got.skipped, ref.skipped, sizeof ref.skipped);
    for (int k = 0; same_list && k < ref.num_templates; k++)
        same_list = !strcmp(got.domain_names[k], ref.domain_names[k]) &&
                    got.sum_probs[k] == ref.sum_probs[k];
    MF_TEST_TRUE(same_list, "templates featurized at inference differ from featurize's (%d vs %d)",
                 got.num_templates, ref.num_templates);
    const int64_t T = ref.num_templates < o.max_templates ? ref.num_templates : o.max_templates;
    check_templates(&f, &ref, T, "N_templ of 7");
    check_round_trip(&f, tp("inference.h5"), "inference sample");

    printf("2. the other features without hits\n");
    mf_inference_inputs none = in;
    none.template_hits = NULL;
    mf_template_features empty;
    MF_TEST_OK(mf_pipeline_inference_features_ex(rec, &none, &o, 5, &g, &empty));
    MF_TEST_TRUE(empty.num_templates == 0 && empty.aatype == NULL, "no hits: templates not empty");
    const mf_feature *tmask = mf_processed_find(&g, "template_mask");
    MF_TEST_TRUE(tmask && tmask->array.ndim == 1 && tmask->array.shape[0] == 0,
                 "no hits: template_mask is not [0]");
    check_rest_unchanged(&f, &g);
    mf_processed_free(&f);
    mf_processed_free(&g);
    mf_template_features_free(&got);
    mf_template_features_free(&ref);

    printf("3. max template date 2006-01-01\n");
    in.max_template_date = "2006-01-01";
    mf_template_options to_date = to;
    to_date.max_template_date = in.max_template_date;
    MF_TEST_OK(mf_template_features_make(rec->sequence, &hhr, &to_date, &ref));
    MF_TEST_OK(mf_pipeline_inference_features_ex(rec, &in, &o, 5, &f, &got));
    MF_TEST_TRUE(got.num_templates == 2 && ref.num_templates == 2 &&
                     !strcmp(got.domain_names[0], "2crb_A") &&
                     !strcmp(got.domain_names[1], "1psm_A") && got.skipped[MF_TSKIP_DATE] == 7,
                 "dated templates: %d (%s ...), %lld dropped by date", got.num_templates,
                 got.num_templates ? got.domain_names[0] : "-",
                 (long long)got.skipped[MF_TSKIP_DATE]);
    if (ref.num_templates == 2) check_templates(&f, &ref, 2, "2 dated templates");
    mf_processed_free(&f);
    mf_template_features_free(&got);

    printf("4. errors\n");
    struct {
        const char *what, *hits, *dir, *date;
    } bad[3] = {
        {"missing mmCIF directory", in.template_hits, "/nonexistent/mmcif", NULL},
        {"date 2006-1-1", in.template_hits, in.template_mmcif_dir, "2006-1-1"},
        {"missing .hhr", "/nonexistent/hits.hhr", in.template_mmcif_dir, NULL},
    };
    for (int k = 0; k < 3; k++) {
        mf_inference_inputs b = in;
        b.template_hits = bad[k].hits;
        b.template_mmcif_dir = bad[k].dir;
        b.max_template_date = bad[k].date;
        const mf_status st = mf_pipeline_inference_features_ex(rec, &b, &o, 5, &f, &got);
        printf("  %s: %s\n", bad[k].what, st != MF_OK ? mf_last_error() : "ACCEPTED");
        MF_TEST_TRUE(st != MF_OK && f.num_features == 0 && got.num_templates == 0, "%s accepted",
                     bad[k].what);
        mf_processed_free(&f);
        mf_template_features_free(&got);
    }
    mf_raw_chain window = {.chain_length = 80, .first_residue = 5, .num_res = 73};
    const mf_status st = mf_raw_chain_set_templates(&window, &ref);
    printf("  templates for a window of a chain: %s\n", st != MF_OK ? mf_last_error() : "ACCEPTED");
    MF_TEST_TRUE(st != MF_OK && window.num_templates == 0, "templates set on a window");
    mf_template_features_free(&ref);
    mf_hhr_free(&hhr);
    mf_fasta_free(&fa);
    check_training_sample_file();
    nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return mf_test_finish("test_inference_templates");
}
