/* memfold eval: compare a predicted structure with a reference (lDDT-Ca, all-atom lDDT, TM-score,
 * GDT-TS/HA, RMSD), text or JSON. */
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps/commands.h"
#include "data/structure_io.h"
#include "eval/align.h"
#include "eval/lddt.h"
#include "eval/tmscore.h"
#include "protein/residue_constants.h"

#define CA 1 /* atom37 slot of C-alpha */

static void eval_usage(FILE *f)
{
    fprintf(
        f, "usage: memfold eval --pred FILE --ref FILE [--pred-chain ID] [--ref-chain ID] "
           "[--json] [--per-residue]\n"
           "\n"
           "Compares a predicted chain with a reference chain (PDB or mmCIF, optionally .gz).\n"
           "  --pred-chain, --ref-chain  author chain ids (default: the file's first protein "
           "chain)\n"
           "  --json                     one JSON object on stdout (keys lddt_ca, lddt, tm_score,\n"
           "                             gdt_ts, gdt_ha, rmsd, pairing, n_aligned, ...)\n"
           "  --per-residue              add the per-residue lDDT-Ca and lDDT\n"
           "\n"
           "Residues pair by author number when the chains share a numbering, otherwise by a\n"
           "sequence alignment; the output says which. lDDT (15 A radius, thresholds 0.5/1/2/4 A)\n"
           "runs over the reference's residues, with unpaired or missing predicted atoms scoring\n"
           "0. TM-score and GDT follow the TMscore program's superposition search and are\n"
           "normalised by the reference's residues with a C-alpha; RMSD is over all paired\n"
           "C-alpha atoms after one least-squares superposition.\n");
}

/* Reads chain_id (or the first protein chain when NULL) into p; *chosen gets its id and
 * *n_chains the number of protein chains in the file. */
static mf_status read_chain(const char *path, const char *chain_id, mf_protein *p, char *chosen,
                            int *n_chains)
{
    mf_chain_summary *chains = NULL;
    MF_TRY(mf_structure_list_chains(path, &chains, n_chains));
    if (*n_chains < 1) {
        free(chains);
        return MF_ERROR(MF_ERR_FORMAT, "%s: no protein chain", path);
    }
    snprintf(chosen, MF_CHAIN_ID_MAX, "%s", chain_id ? chain_id : chains[0].chain_id);
    free(chains);
    return mf_structure_read_chain(path, chosen, p);
}

static bool has_atom(const mf_protein *p, int64_t i, int atom)
{
    return p->atom_mask[i * MF_ATOM37 + atom] != 0.0f;
}

typedef struct {
    mf_residue_pairing pairing;
    mf_tmscore_result tm;
    mf_lddt_result lddt_ca, lddt;
    int64_t ref_ca, pred_ca;
    double *per_res_ca, *per_res_aa; /* [n_ref] */
} eval_result;

static mf_status evaluate(const mf_protein *pred, const mf_protein *ref, eval_result *r)
{
    mf_status st = MF_OK;
    int64_t n = ref->num_res;
    double *pca = NULL, *rca = NULL, *lp = NULL, *lr = NULL;
    float *lpm = NULL, *lrm = NULL, *ppos = NULL, *pmask = NULL;
    int32_t *paa = NULL;
    MF_TRY(mf_pair_residues(pred, ref, &r->pairing));
    const int64_t *map = r->pairing.ref_to_pred;

    pca = malloc((size_t)n * 3 * sizeof(double) + 1);
    rca = malloc((size_t)n * 3 * sizeof(double) + 1);
    lp = calloc((size_t)n * 3 + 1, sizeof(double));
    lr = calloc((size_t)n * 3 + 1, sizeof(double));
    lpm = calloc((size_t)n + 1, sizeof(float));
    lrm = calloc((size_t)n + 1, sizeof(float));
    ppos = calloc((size_t)n * MF_ATOM37 * 3 + 1, sizeof(float));
    pmask = calloc((size_t)n * MF_ATOM37 + 1, sizeof(float));
    paa = malloc((size_t)n * sizeof(int32_t) + 1);
    r->per_res_ca = malloc((size_t)n * sizeof(double) + 1);
    r->per_res_aa = malloc((size_t)n * sizeof(double) + 1);
    if (!pca || !rca || !lp || !lr || !lpm || !lrm || !ppos || !pmask || !paa || !r->per_res_ca ||
        !r->per_res_aa) {
        st = MF_ERROR(MF_ERR_NOMEM, "eval: arrays for %lld residues", (long long)n);
        goto cleanup;
    }
    int64_t n_al = 0;
    for (int64_t i = 0; i < pred->num_res; i++) r->pred_ca += has_atom(pred, i, CA);
    for (int64_t i = 0; i < n; i++) {
        int64_t j = map[i];
        bool ref_has = has_atom(ref, i, CA), pred_has = j >= 0 && has_atom(pred, j, CA);
        r->ref_ca += ref_has;
        for (int k = 0; k < 3; k++) {
            lr[3 * i + k] = ref->atom_positions[(i * MF_ATOM37 + CA) * 3 + k];
            if (pred_has) lp[3 * i + k] = pred->atom_positions[(j * MF_ATOM37 + CA) * 3 + k];
        }
        lrm[i] = ref_has;
        lpm[i] = pred_has;
        if (ref_has && pred_has) {
            for (int k = 0; k < 3; k++) {
                pca[3 * n_al + k] = lp[3 * i + k];
                rca[3 * n_al + k] = lr[3 * i + k];
            }
            n_al++;
        }
        paa[i] = j >= 0 ? pred->aatype[j] : -1;
        if (j >= 0) {
            memcpy(ppos + i * MF_ATOM37 * 3, pred->atom_positions + j * MF_ATOM37 * 3,
                   MF_ATOM37 * 3 * sizeof(float));
            memcpy(pmask + i * MF_ATOM37, pred->atom_mask + j * MF_ATOM37,
                   MF_ATOM37 * sizeof(float));
        }
    }
    if (n_al < 3) {
        st = MF_ERROR(MF_ERR_INVALID,
                      "eval: only %lld paired residues have a C-alpha in both structures (pairing "
                      "%s); at least 3 are needed",
                      (long long)n_al, mf_pairing_method_name(r->pairing.method));
        goto cleanup;
    }
    MF_TRY_GOTO(mf_tmscore(pca, rca, n_al, r->ref_ca, &r->tm));
    MF_TRY_GOTO(mf_lddt_ca(lp, lpm, lr, lrm, n, MF_LDDT_CUTOFF, r->per_res_ca, &r->lddt_ca));
    MF_TRY_GOTO(mf_lddt_all_atom(ppos, pmask, paa, ref->atom_positions, ref->atom_mask, ref->aatype,
                                 n, MF_LDDT_CUTOFF, true, r->per_res_aa, &r->lddt));
cleanup:
    free(pca), free(rca), free(lp), free(lr), free(lpm), free(lrm), free(ppos), free(pmask);
    free(paa);
    return st;
}

static void residue_label(const mf_protein *p, int64_t i, char *buf, size_t cap)
{
    char ins = p->insertion_code[i];
    if (ins != ' ')
        snprintf(buf, cap, "%c%d%c", p->sequence[i], (int)p->residue_index[i], ins);
    else
        snprintf(buf, cap, "%c%d", p->sequence[i], (int)p->residue_index[i]);
}

static cJSON *per_residue_json(const double *v, int64_t n)
{
    cJSON *arr = cJSON_CreateArray();
    for (int64_t i = 0; arr && i < n; i++)
        cJSON_AddItemToArray(arr, v[i] < 0.0 ? cJSON_CreateNull() : cJSON_CreateNumber(v[i]));
    return arr;
}

static int print_json(const char *pred_path, const char *pred_chain, const char *ref_path,
                      const char *ref_chain, const mf_protein *ref, const eval_result *r,
                      bool per_residue)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) goto oom;
    cJSON_AddStringToObject(o, "pred", pred_path);
    cJSON_AddStringToObject(o, "pred_chain", pred_chain);
    cJSON_AddStringToObject(o, "ref", ref_path);
    cJSON_AddStringToObject(o, "ref_chain", ref_chain);
    cJSON_AddStringToObject(o, "pairing", mf_pairing_method_name(r->pairing.method));
    cJSON_AddStringToObject(o, "pairing_description",
                            mf_pairing_method_description(r->pairing.method));
    cJSON_AddNumberToObject(o, "n_aligned", (double)r->tm.n_aligned);
    cJSON_AddNumberToObject(o, "n_paired_identical", (double)r->pairing.n_identical);
    cJSON_AddNumberToObject(o, "n_ref", (double)r->ref_ca);
    cJSON_AddNumberToObject(o, "n_pred", (double)r->pred_ca);
    cJSON_AddNumberToObject(o, "lddt_ca", r->lddt_ca.lddt);
    cJSON_AddNumberToObject(o, "lddt", r->lddt.lddt);
    cJSON_AddNumberToObject(o, "tm_score", r->tm.tm_score);
    cJSON_AddNumberToObject(o, "d0", r->tm.d0);
    cJSON_AddNumberToObject(o, "gdt_ts", r->tm.gdt_ts);
    cJSON_AddNumberToObject(o, "gdt_ha", r->tm.gdt_ha);
    cJSON_AddNumberToObject(o, "rmsd", r->tm.rmsd);
    if (per_residue) {
        cJSON *ids = cJSON_CreateArray();
        for (int64_t i = 0; ids && i < ref->num_res; i++) {
            char lab[32];
            residue_label(ref, i, lab, sizeof lab);
            cJSON_AddItemToArray(ids, cJSON_CreateString(lab));
        }
        cJSON_AddItemToObject(o, "ref_residues", ids);
        cJSON_AddItemToObject(o, "per_residue_lddt_ca",
                              per_residue_json(r->per_res_ca, ref->num_res));
        cJSON_AddItemToObject(o, "per_residue_lddt", per_residue_json(r->per_res_aa, ref->num_res));
    }
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) goto oom;
    printf("%s\n", text);
    cJSON_free(text);
    return 0;
oom:
    fprintf(stderr, "memfold eval: out of memory writing JSON\n");
    return 1;
}

static void print_text(const char *pred_path, const char *pred_chain, int pred_n_chains,
                       const char *ref_path, const char *ref_chain, int ref_n_chains,
                       const mf_protein *pred, const mf_protein *ref, const eval_result *r,
                       bool per_residue)
{
    printf("prediction  %s chain %s%s (%lld residues, %lld with C-alpha)\n", pred_path, pred_chain,
           pred_n_chains > 1 ? " of several" : "", (long long)pred->num_res, (long long)r->pred_ca);
    printf("reference   %s chain %s%s (%lld residues, %lld with C-alpha)\n", ref_path, ref_chain,
           ref_n_chains > 1 ? " of several" : "", (long long)ref->num_res, (long long)r->ref_ca);
    printf("pairing     %s: %s\n", mf_pairing_method_name(r->pairing.method),
           mf_pairing_method_description(r->pairing.method));
    printf("            %lld C-alpha pairs, %lld of %lld paired residues identical\n",
           (long long)r->tm.n_aligned, (long long)r->pairing.n_identical,
           (long long)r->pairing.n_pairs);
    printf("lDDT-Ca     %.4f  (15 A radius, %lld reference pairs)\n", r->lddt_ca.lddt,
           (long long)r->lddt_ca.n_pairs);
    printf("lDDT        %.4f  (all atoms, %lld reference pairs)\n", r->lddt.lddt,
           (long long)r->lddt.n_pairs);
    printf("TM-score    %.4f  (d0 = %.2f A, normalised by %lld reference residues)\n",
           r->tm.tm_score, r->tm.d0, (long long)r->tm.l_norm);
    printf("GDT-TS      %.4f  (GDT-HA %.4f)\n", r->tm.gdt_ts, r->tm.gdt_ha);
    printf("RMSD        %.3f A over %lld C-alpha pairs\n", r->tm.rmsd, (long long)r->tm.n_aligned);
    if (per_residue) {
        printf("\nreference residue  lDDT-Ca  lDDT\n");
        for (int64_t i = 0; i < ref->num_res; i++) {
            char lab[32];
            residue_label(ref, i, lab, sizeof lab);
            printf("%-18s", lab);
            if (r->per_res_ca[i] < 0.0)
                printf(" %7s", "-");
            else
                printf(" %7.4f", r->per_res_ca[i]);
            if (r->per_res_aa[i] < 0.0)
                printf(" %7s\n", "-");
            else
                printf(" %7.4f\n", r->per_res_aa[i]);
        }
    }
}

int mf_cmd_eval(int argc, char **argv)
{
    const char *pred_path = NULL, *ref_path = NULL, *pred_chain_arg = NULL, *ref_chain_arg = NULL;
    bool json = false, per_residue = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            eval_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--pred") && has_value) {
            pred_path = argv[++i];
        } else if (!strcmp(a, "--ref") && has_value) {
            ref_path = argv[++i];
        } else if (!strcmp(a, "--pred-chain") && has_value) {
            pred_chain_arg = argv[++i];
        } else if (!strcmp(a, "--ref-chain") && has_value) {
            ref_chain_arg = argv[++i];
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--per-residue")) {
            per_residue = true;
        } else {
            fprintf(stderr, "memfold eval: unexpected argument '%s'%s\n\n", a,
                    has_value ? "" : " (or a missing value)");
            eval_usage(stderr);
            return 2;
        }
    }
    if (!pred_path || !ref_path) {
        fprintf(stderr, "memfold eval: --pred and --ref are required\n\n");
        eval_usage(stderr);
        return 2;
    }
    mf_protein pred = {0}, ref = {0};
    eval_result r = {0};
    char pred_chain[MF_CHAIN_ID_MAX], ref_chain[MF_CHAIN_ID_MAX];
    int pred_n_chains = 0, ref_n_chains = 0, rc = 0;
    if (read_chain(pred_path, pred_chain_arg, &pred, pred_chain, &pred_n_chains) != MF_OK ||
        read_chain(ref_path, ref_chain_arg, &ref, ref_chain, &ref_n_chains) != MF_OK ||
        evaluate(&pred, &ref, &r) != MF_OK) {
        rc = mf_report_error("eval");
        goto done;
    }
    if (json)
        rc = print_json(pred_path, pred_chain, ref_path, ref_chain, &ref, &r, per_residue);
    else
        print_text(pred_path, pred_chain, pred_n_chains, ref_path, ref_chain, ref_n_chains, &pred,
                   &ref, &r, per_residue);
done:
    mf_residue_pairing_free(&r.pairing);
    free(r.per_res_ca), free(r.per_res_aa);
    mf_protein_free(&pred);
    mf_protein_free(&ref);
    return rc;
}
