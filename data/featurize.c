/* Featurization of structure files into a memfold feature file (see featurize.h): per-chain MSA
 * lookup and merging, filters, the HDF5 layout, and the run over a directory with worker
 * threads that parse while the calling thread writes. */
#include "data/featurize.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "data/jackhmmer.h"
#include "data/structure_io.h"
#include "protein/residue_constants.h"

#define MAX_MSAS_PER_CHAIN 64
#define MAX_DIR_DEPTH      32

const char *mf_reject_reason_name(mf_reject_reason r)
{
    switch (r) {
    case MF_REJECT_RESOLUTION:
        return "resolution above --max-resolution";
    case MF_REJECT_TOO_SHORT:
        return "shorter than --min-length";
    case MF_REJECT_TOO_LONG:
        return "longer than --max-length";
    case MF_REJECT_RELEASED:
        return "released on or after --release-before";
    case MF_REJECT_NO_DATE:
        return "no release date (needed by --release-before)";
    case MF_REJECT_NO_ATOMS:
        return "no observed atoms";
    case MF_REJECT_DUPLICATE:
        return "group name already written";
    case MF_REJECT_COUNT:
        break;
    }
    return "?";
}

void mf_chain_features_free(mf_chain_features *f)
{
    if (!f) return;
    free(f->source_file);
    mf_protein_free(&f->protein);
    mf_msa_free(&f->msa);
    free(f->msa_sources);
    mf_template_features_free(&f->templates);
    memset(f, 0, sizeof *f);
}

/* ---- names and lookups ---- */

static int ends_with_ci(const char *s, size_t n, const char *suffix)
{
    size_t m = strlen(suffix);
    return n >= m && !strncasecmp(s + n - m, suffix, m);
}

void mf_featurize_entry_name(const char *path, char *out, size_t cap)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (ends_with_ci(base, n, ".gz")) n -= 3;
    static const char *ext[] = {".cif", ".mmcif", ".pdb", ".ent"};
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++)
        if (ends_with_ci(base, n, ext[i]) && n > strlen(ext[i])) {
            n -= strlen(ext[i]);
            break;
        }
    snprintf(out, cap, "%.*s", (int)n, base);
}

static int is_file(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int is_dir(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static const char *msa_exts[] = {".a3m", ".sto", ".sth", ".stk"};

/* The alignment format of a name, .gz ignored; MF_MSA_AUTO when it is not an alignment file. */
static mf_msa_format msa_format_of(const char *name, size_t *stem_len)
{
    size_t n = strlen(name);
    if (ends_with_ci(name, n, ".gz")) n -= 3;
    for (size_t i = 0; i < sizeof msa_exts / sizeof msa_exts[0]; i++)
        if (ends_with_ci(name, n, msa_exts[i])) {
            if (stem_len) *stem_len = n - strlen(msa_exts[i]);
            return i == 0 ? MF_MSA_A3M : MF_MSA_STOCKHOLM;
        }
    return MF_MSA_AUTO;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int add_path(char **paths, int *n, int max, const char *p)
{
    for (int i = 0; i < *n; i++)
        if (!strcmp(paths[i], p)) return 0;
    if (*n >= max) return 0;
    paths[*n] = strdup(p);
    if (paths[*n]) (*n)++;
    return 1;
}

static void entry_variants(const char *entry, char v[3][MF_FEATURE_NAME_MAX])
{
    snprintf(v[0], MF_FEATURE_NAME_MAX, "%s", entry);
    snprintf(v[1], MF_FEATURE_NAME_MAX, "%s", entry);
    snprintf(v[2], MF_FEATURE_NAME_MAX, "%s", entry);
    for (char *p = v[1]; *p; p++) *p = (char)tolower((unsigned char)*p);
    for (char *p = v[2]; *p; p++) *p = (char)toupper((unsigned char)*p);
}

int mf_featurize_find_msas(const char *msa_dir, const char *entry, const char *chain, char **paths,
                           int max)
{
    int n = 0;
    char v[3][MF_FEATURE_NAME_MAX], p[4096];
    entry_variants(entry, v);
    for (int k = 0; k < 3; k++) {
        if (k && !strcmp(v[k], v[0])) continue;
        snprintf(p, sizeof p, "%s/%s_%s", msa_dir, v[k], chain);
        if (!is_dir(p)) continue;
        DIR *d = opendir(p);
        if (!d) continue;
        char *found[MAX_MSAS_PER_CHAIN];
        int nf = 0;
        for (struct dirent *e; (e = readdir(d)) && nf < MAX_MSAS_PER_CHAIN;) {
            size_t stem;
            if (msa_format_of(e->d_name, &stem) == MF_MSA_AUTO) continue;
            /* Multimer pairing hits and template-search output in the AF2/OpenFold layout. */
            if ((stem == 12 && !strncmp(e->d_name, "uniprot_hits", 12)) ||
                (stem == 10 && !strncmp(e->d_name, "hmm_output", 10)))
                continue;
            char q[8192];
            snprintf(q, sizeof q, "%s/%s", p, e->d_name);
            if (is_file(q) && (found[nf] = strdup(q))) nf++;
        }
        closedir(d);
        qsort(found, (size_t)nf, sizeof found[0], cmp_str);
        for (int i = 0; i < nf; i++) {
            add_path(paths, &n, max, found[i]);
            free(found[i]);
        }
    }
    for (int pass = 0; pass < 2 && n == 0; pass++)
        for (int k = 0; k < 3; k++)
            for (size_t e = 0; e < sizeof msa_exts / sizeof msa_exts[0]; e++)
                for (int gz = 0; gz < 2; gz++) {
                    if (pass == 0)
                        snprintf(p, sizeof p, "%s/%s_%s%s%s", msa_dir, v[k], chain, msa_exts[e],
                                 gz ? ".gz" : "");
                    else
                        snprintf(p, sizeof p, "%s/%s%s%s", msa_dir, v[k], msa_exts[e],
                                 gz ? ".gz" : "");
                    if (is_file(p)) add_path(paths, &n, max, p);
                }
    /* <entry>_<chain>.<ext> files join the directory's MSAs (pass 0 above ran only if none). */
    if (n > 0)
        for (int k = 0; k < 3; k++)
            for (size_t e = 0; e < sizeof msa_exts / sizeof msa_exts[0]; e++)
                for (int gz = 0; gz < 2; gz++) {
                    snprintf(p, sizeof p, "%s/%s_%s%s%s", msa_dir, v[k], chain, msa_exts[e],
                             gz ? ".gz" : "");
                    if (is_file(p)) add_path(paths, &n, max, p);
                }
    return n;
}

static int find_hhr(const char *dir, const char *entry, const char *chain, char *out, size_t cap)
{
    char v[3][MF_FEATURE_NAME_MAX];
    entry_variants(entry, v);
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < 3; k++)
            for (int gz = 0; gz < 2; gz++) {
                if (pass == 0)
                    snprintf(out, cap, "%s/%s_%s.hhr%s", dir, v[k], chain, gz ? ".gz" : "");
                else
                    snprintf(out, cap, "%s/%s.hhr%s", dir, v[k], gz ? ".gz" : "");
                if (is_file(out)) return 1;
            }
    return 0;
}

/* ---- one chain ---- */

static mf_status single_sequence_msa(const mf_protein *p, mf_msa *out)
{
    size_t n = (size_t)p->num_res;
    char *text = malloc(n + 16);
    if (!text) return MF_ERROR(MF_ERR_NOMEM, "single-sequence MSA of %zu residues", n);
    int k = snprintf(text, n + 16, ">query\n%s\n", p->sequence);
    mf_status st = mf_msa_parse(text, (size_t)k, "single-sequence", MF_MSA_A3M, 0, out);
    free(text);
    return st;
}

static char *join_sources(char **paths, int n, const char *extra)
{
    size_t len = 1;
    for (int i = 0; i < n; i++) len += strlen(paths[i]) + 2;
    if (extra) len += strlen(extra) + 2;
    char *s = malloc(len);
    if (!s) return NULL;
    s[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (i) strcat(s, "; ");
        strcat(s, paths[i]);
    }
    if (extra) {
        if (n) strcat(s, "; ");
        strcat(s, extra);
    }
    return s;
}

/* MSAs of the chain: files in msa_dir, then jackhmmer; each must start with the chain's
 * sequence; several are merged (AF2 make_msa_features). */
static mf_status chain_msa(const mf_featurize_options *o, const char *entry, const char *file,
                           mf_chain_features *f)
{
    char *paths[MAX_MSAS_PER_CHAIN];
    int np = o->msa_dir ? mf_featurize_find_msas(o->msa_dir, entry, f->protein.chain_id, paths,
                                                 MAX_MSAS_PER_CHAIN)
                        : 0;
    mf_msa msas[MAX_MSAS_PER_CHAIN + 1];
    int nm = 0;
    mf_status st = MF_OK;
    char *jk_source = NULL;
    for (int i = 0; i < np; i++) {
        st = mf_msa_read(paths[i], msa_format_of(paths[i], NULL), 0, &msas[nm]);
        if (st == MF_OK) {
            nm++;
            st = mf_msa_check_query(&msas[nm - 1], f->protein.sequence);
        }
        if (st != MF_OK) {
            mf_error_context(st, "%s chain %s: MSA %s", file, f->protein.chain_id, paths[i]);
            goto cleanup;
        }
    }
    if (o->jackhmmer_db) {
        mf_jackhmmer_options jo = {
            .binary = o->jackhmmer_bin, .database = o->jackhmmer_db, .cpu = 1};
        st = mf_jackhmmer_search(&jo, f->protein.sequence, f->name, &msas[nm]);
        if (st != MF_OK) {
            mf_error_context(st, "%s chain %s", file, f->protein.chain_id);
            goto cleanup;
        }
        nm++;
        size_t n = strlen(o->jackhmmer_db) + 16;
        jk_source = malloc(n);
        if (jk_source) snprintf(jk_source, n, "jackhmmer:%s", o->jackhmmer_db);
    }
    if (nm == 0) {
        st = single_sequence_msa(&f->protein, &f->msa);
        f->msa_sources = strdup("single-sequence");
    } else if (nm == 1) {
        f->msa = msas[0];
        memset(&msas[0], 0, sizeof msas[0]);
        f->msa_sources = join_sources(paths, np, jk_source);
    } else {
        const mf_msa *list[MAX_MSAS_PER_CHAIN + 1];
        for (int i = 0; i < nm; i++) list[i] = &msas[i];
        st = mf_msa_merge_dedup(list, nm, &f->msa);
        if (st != MF_OK)
            mf_error_context(st, "%s chain %s: merging MSAs", file, f->protein.chain_id);
        f->msa_sources = join_sources(paths, np, jk_source);
    }
    if (st == MF_OK && !f->msa_sources) st = MF_ERROR(MF_ERR_NOMEM, "MSA source names");
cleanup:
    for (int i = 0; i < nm; i++) mf_msa_free(&msas[i]);
    for (int i = 0; i < np; i++) free(paths[i]);
    free(jk_source);
    return st;
}

static mf_status chain_templates(const mf_featurize_options *o, const char *entry, const char *file,
                                 mf_chain_features *f)
{
    f->has_templates = true;
    char path[4096];
    if (!find_hhr(o->template_hits_dir, entry, f->protein.chain_id, path, sizeof path)) {
        f->templates.num_res = f->protein.num_res;
        return MF_OK; /* no hits for this chain: T = 0 */
    }
    mf_hhr hhr;
    mf_status st = mf_hhr_read(path, &hhr);
    if (st != MF_OK)
        return mf_error_context(st, "%s chain %s: template hits", file, f->protein.chain_id);
    const char *date = o->max_template_date ? o->max_template_date : f->protein.entry.release_date;
    mf_template_options to = {.mmcif_dir = o->template_mmcif_dir,
                              .max_template_date = date,
                              .max_templates = o->max_templates};
    st = mf_template_features_make(f->protein.sequence, &hhr, &to, &f->templates);
    if (st != MF_OK)
        mf_error_context(st, "%s chain %s: templates from %s", file, f->protein.chain_id, path);
    mf_hhr_free(&hhr);
    return st;
}

/* The filters, in the order they are reported. MF_REJECT_COUNT when the chain passes. */
static mf_reject_reason filter_chain(const mf_featurize_options *o, const mf_protein *p)
{
    if (mf_protein_num_observed(p) == 0) return MF_REJECT_NO_ATOMS;
    if (o->min_length > 0 && p->num_res < o->min_length) return MF_REJECT_TOO_SHORT;
    if (o->max_length > 0 && p->num_res > o->max_length) return MF_REJECT_TOO_LONG;
    if (o->max_resolution > 0 && p->entry.resolution > o->max_resolution)
        return MF_REJECT_RESOLUTION;
    if (o->release_before && o->release_before[0]) {
        if (!p->entry.release_date[0]) return MF_REJECT_NO_DATE;
        if (strcmp(p->entry.release_date, o->release_before) >= 0) return MF_REJECT_RELEASED;
    }
    return MF_REJECT_COUNT;
}

/* ---- writing ---- */

static mf_status write_strings(mf_h5_writer *w, const char *name,
                               const char (*s)[MF_TEMPLATE_NAME_MAX], int n)
{
    size_t len = 1;
    for (int i = 0; i < n; i++)
        if (strlen(s[i]) > len) len = strlen(s[i]);
    char *buf = calloc(n > 0 ? (size_t)n : 1, len);
    if (!buf) return MF_ERROR(MF_ERR_NOMEM, "dataset %s", name);
    for (int i = 0; i < n; i++) memcpy(buf + (size_t)i * len, s[i], strlen(s[i]));
    hsize_t dims[1] = {(hsize_t)n}, chunk[1] = {(hsize_t)(n ? n : 1)};
    hid_t t = H5Tcopy(H5T_C_S1), space = H5Screate_simple(1, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Tset_size(t, len);
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    if (n > 0) {
        H5Pset_chunk(dcpl, 1, chunk);
        H5Pset_fletcher32(dcpl);
        H5Pset_shuffle(dcpl);
        H5Pset_deflate(dcpl, 4);
    }
    hid_t d = H5Dcreate2(w->file, name, t, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    mf_status st = MF_OK;
    if (d < 0 || (n > 0 && H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0))
        st = MF_ERROR(MF_ERR_BACKEND, "%s: cannot write dataset '%s'", w->path, name);
    if (d >= 0) H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(space);
    H5Tclose(t);
    free(buf);
    return st;
}

mf_status mf_chain_features_write(mf_h5_writer *w, const mf_chain_features *f)
{
    const mf_protein *p = &f->protein;
    int64_t N = p->num_res, S = f->msa.num_rows;
    MF_REQUIRE(f->msa.length == N, "%s: MSA has %lld columns, the chain %lld residues", f->name,
               (long long)f->msa.length, (long long)N);
    char g[MF_FEATURE_NAME_MAX + 2], d[MF_FEATURE_NAME_MAX + 64];
    snprintf(g, sizeof g, "/%s", f->name);
#define DS(leaf) (snprintf(d, sizeof d, "%s/%s", g, leaf), d)
    int32_t *idx = malloc((size_t)(N ? N : 1) * sizeof *idx);
    float *del = malloc((size_t)(S * N > 0 ? S * N : 1) * sizeof *del);
    mf_status st = MF_OK;
    if (!idx || !del) {
        st = MF_ERROR(MF_ERR_NOMEM, "%s: feature arrays", f->name);
        goto cleanup;
    }
    int64_t shape[4];
    shape[0] = N;
    MF_TRY_GOTO(mf_h5_write_array(w, DS("aatype"), MF_I32, 1, shape, p->aatype));
    for (int64_t i = 0; i < N; i++) idx[i] = (int32_t)i;
    MF_TRY_GOTO(mf_h5_write_array(w, DS("residue_index"), MF_I32, 1, shape, idx));
    MF_TRY_GOTO(
        mf_h5_write_array(w, DS("author_residue_index"), MF_I32, 1, shape, p->residue_index));
    shape[0] = S;
    shape[1] = N;
    MF_TRY_GOTO(mf_h5_write_array(w, DS("msa"), MF_I8, 2, shape, f->msa.msa));
    for (int64_t i = 0; i < S * N; i++) del[i] = (float)f->msa.deletion_matrix[i];
    MF_TRY_GOTO(mf_h5_write_array(w, DS("deletion_matrix"), MF_F32, 2, shape, del));
    shape[0] = N;
    shape[1] = MF_ATOM37;
    shape[2] = 3;
    MF_TRY_GOTO(
        mf_h5_write_array(w, DS("all_atom_positions"), MF_F32, 3, shape, p->atom_positions));
    MF_TRY_GOTO(mf_h5_write_array(w, DS("all_atom_mask"), MF_F32, 2, shape, p->atom_mask));
    float res = (float)p->entry.resolution;
    MF_TRY_GOTO(mf_h5_write_array(w, DS("resolution"), MF_F32, 0, shape, &res));
    if (f->has_templates) {
        const mf_template_features *t = &f->templates;
        int64_t T = t->num_templates;
        shape[0] = T;
        shape[1] = N;
        shape[2] = MF_ATOM37;
        shape[3] = 3;
        MF_TRY_GOTO(mf_h5_write_array(w, DS("template_aatype"), MF_I32, 2, shape, t->aatype));
        MF_TRY_GOTO(mf_h5_write_array(w, DS("template_all_atom_positions"), MF_F32, 4, shape,
                                      t->all_atom_positions));
        MF_TRY_GOTO(mf_h5_write_array(w, DS("template_all_atom_masks"), MF_F32, 3, shape,
                                      t->all_atom_masks));
        shape[1] = 1;
        MF_TRY_GOTO(mf_h5_write_array(w, DS("template_sum_probs"), MF_F32, 2, shape, t->sum_probs));
        MF_TRY_GOTO(write_strings(w, DS("template_domain_names"),
                                  (const char(*)[MF_TEMPLATE_NAME_MAX])t->domain_names, (int)T));
    }
#undef DS
    MF_TRY_GOTO(mf_h5_write_attr_string(w, g, "sequence", p->sequence));
    MF_TRY_GOTO(mf_h5_write_attr_string(w, g, "release_date", p->entry.release_date));
    MF_TRY_GOTO(mf_h5_write_attr_string(w, g, "method", p->entry.method));
    MF_TRY_GOTO(mf_h5_write_attr_string(w, g, "entry_id", p->entry.entry_id));
    MF_TRY_GOTO(mf_h5_write_attr_string(w, g, "chain_id", p->chain_id));
    MF_TRY_GOTO(mf_h5_write_attr_string(w, g, "source_file", f->source_file ? f->source_file : ""));
    MF_TRY_GOTO(mf_h5_write_attr_string(w, g, "msa_sources", f->msa_sources ? f->msa_sources : ""));
    MF_TRY_GOTO(mf_h5_write_attr_int(w, g, "num_res", N));
    MF_TRY_GOTO(mf_h5_write_attr_int(w, g, "num_alignments", S));
    MF_TRY_GOTO(mf_h5_write_attr_int(w, g, "num_templates",
                                     f->has_templates ? f->templates.num_templates : -1));
cleanup:
    free(idx);
    free(del);
    return st;
}

mf_status mf_features_write_root(mf_h5_writer *w, int64_t num_chains)
{
    MF_TRY(mf_h5_write_attr_string(w, "/", "format", MF_FEATURES_FORMAT));
    MF_TRY(mf_h5_write_attr_int(w, "/", "schema_version", MF_FEATURES_SCHEMA_VERSION));
    MF_TRY(mf_h5_write_attr_int(w, "/", "num_chains", num_chains));
    MF_TRY(mf_h5_write_attr_string(w, "/", "created_by", "memfold featurize " MF_VERSION));
    MF_TRY(mf_h5_write_attr_string(w, "/", "aatype_encoding",
                                   "AF2 restype order ARNDCQEGHILKMFPSTWYV = 0..19, X = 20"));
    return mf_h5_write_attr_string(w, "/", "msa_encoding",
                                   "HHblits ids ACDEFGHIKLMNPQRSTVWY = 0..19, X = 20, gap = 21 "
                                   "(msa, template_aatype)");
}

/* ---- the run ---- */

typedef struct {
    char **paths;
    int64_t n, cap;
} path_list;

static void path_list_free(path_list *l)
{
    for (int64_t i = 0; i < l->n; i++) free(l->paths[i]);
    free(l->paths);
    memset(l, 0, sizeof *l);
}

static mf_status walk(const char *dir, int depth, path_list *l)
{
    if (depth > MAX_DIR_DEPTH)
        return MF_ERROR(MF_ERR_INVALID, "%s: directories nested more than %d deep (a link loop?)",
                        dir, MAX_DIR_DEPTH);
    DIR *d = opendir(dir);
    if (!d) return MF_ERROR(MF_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    mf_status st = MF_OK;
    for (struct dirent *e; st == MF_OK && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        size_t n = strlen(dir) + strlen(e->d_name) + 2;
        char *p = malloc(n);
        if (!p) {
            st = MF_ERROR(MF_ERR_NOMEM, "listing %s", dir);
            break;
        }
        snprintf(p, n, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (stat(p, &sb) != 0) { /* a dangling link: nothing to read */
            free(p);
            continue;
        }
        if (S_ISDIR(sb.st_mode)) {
            st = walk(p, depth + 1, l);
            free(p);
            continue;
        }
        if (!S_ISREG(sb.st_mode) || mf_structure_format_from_path(p) == MF_STRUCTURE_UNKNOWN) {
            free(p);
            continue;
        }
        if (l->n == l->cap) {
            int64_t cap = l->cap ? l->cap * 2 : 256;
            char **np = realloc(l->paths, (size_t)cap * sizeof *np);
            if (!np) {
                free(p);
                st = MF_ERROR(MF_ERR_NOMEM, "listing %s", dir);
                break;
            }
            l->paths = np;
            l->cap = cap;
        }
        l->paths[l->n++] = p;
    }
    closedir(d);
    return st;
}

typedef enum { CHAIN_OK, CHAIN_REJECTED, CHAIN_FAILED } chain_state;

typedef struct {
    mf_chain_features f;
    chain_state state;
    mf_reject_reason reason;
    char *message;
} chain_result;

typedef struct {
    char *error; /* the file could not be read */
    int n;
    chain_result *chains;
} file_result;

static void file_result_free(file_result *r)
{
    for (int i = 0; i < r->n; i++) {
        mf_chain_features_free(&r->chains[i].f);
        free(r->chains[i].message);
    }
    free(r->chains);
    free(r->error);
    memset(r, 0, sizeof *r);
}

static void process_file(const mf_featurize_options *o, const char *path, file_result *out)
{
    memset(out, 0, sizeof *out);
    mf_protein *chains = NULL;
    int n = 0;
    if (mf_structure_read(path, &chains, &n) != MF_OK) {
        out->error = strdup(mf_last_error());
        return;
    }
    if (n == 0) {
        out->error = strdup("no protein chain in the file");
        return;
    }
    out->chains = calloc((size_t)n, sizeof *out->chains);
    if (!out->chains) {
        out->error = strdup("out of memory");
        mf_protein_list_free(chains, n);
        return;
    }
    out->n = n;
    char entry[MF_FEATURE_NAME_MAX];
    mf_featurize_entry_name(path, entry, sizeof entry);
    for (int i = 0; i < n; i++) {
        chain_result *c = &out->chains[i];
        c->f.protein = chains[i];
        memset(&chains[i], 0, sizeof chains[i]);
        if (snprintf(c->f.name, sizeof c->f.name, "%s_%s", entry, c->f.protein.chain_id) >=
            (int)sizeof c->f.name) {
            c->state = CHAIN_FAILED;
            c->message = strdup("group name longer than 255 characters (rename the file)");
            continue;
        }
        c->f.source_file = strdup(path);
        c->reason = filter_chain(o, &c->f.protein);
        if (c->reason != MF_REJECT_COUNT) {
            char name[MF_FEATURE_NAME_MAX];
            memcpy(name, c->f.name, sizeof name);
            c->state = CHAIN_REJECTED;
            mf_chain_features_free(&c->f);
            memcpy(c->f.name, name, sizeof name);
            continue;
        }
        if (o->cancel && *o->cancel) break;
        mf_protein *p = &c->f.protein;
        mf_fix_arginine_nh(p->aatype, p->atom_positions, p->atom_mask, p->num_res);
        mf_status st = c->f.source_file ? MF_OK : MF_ERROR(MF_ERR_NOMEM, "%s", path);
        if (st == MF_OK) st = chain_msa(o, entry, path, &c->f);
        if (st == MF_OK && o->template_hits_dir) st = chain_templates(o, entry, path, &c->f);
        if (st != MF_OK) {
            c->state = CHAIN_FAILED;
            c->message = strdup(mf_last_error());
        }
    }
    mf_protein_list_free(chains, n);
}

static mf_status add_note(mf_featurize_note **list, int64_t *n, const char *what, const char *why)
{
    mf_featurize_note *l = realloc(*list, (size_t)(*n + 1) * sizeof *l);
    if (!l) return MF_ERROR(MF_ERR_NOMEM, "featurize report");
    *list = l;
    l[*n].what = strdup(what ? what : "?");
    l[*n].why = strdup(why ? why : "?");
    (*n)++;
    return MF_OK;
}

void mf_featurize_report_free(mf_featurize_report *r)
{
    if (!r) return;
    for (int64_t i = 0; i < r->num_rejected; i++) {
        free(r->rejected[i].what);
        free(r->rejected[i].why);
    }
    for (int64_t i = 0; i < r->num_failed; i++) {
        free(r->failed[i].what);
        free(r->failed[i].why);
    }
    free(r->rejected);
    free(r->failed);
    memset(r, 0, sizeof *r);
}

/* Written group names, to refuse a second group of the same name (the file's own check would
 * fail the whole run). */
typedef struct {
    char **names;
    int64_t n, cap;
} name_set;

static int name_seen(name_set *s, const char *name)
{
    for (int64_t i = 0; i < s->n; i++)
        if (!strcmp(s->names[i], name)) return 1;
    return 0;
}

static int name_add(name_set *s, const char *name)
{
    if (s->n == s->cap) {
        int64_t cap = s->cap ? s->cap * 2 : 256;
        char **nn = realloc(s->names, (size_t)cap * sizeof *nn);
        if (!nn) return -1;
        s->names = nn;
        s->cap = cap;
    }
    s->names[s->n] = strdup(name);
    return s->names[s->n] ? (int)(s->n++, 0) : -1;
}

static mf_status record_file(mf_h5_writer *w, const char *path, file_result *fr, name_set *names,
                             mf_featurize_report *r)
{
    r->files_done++;
    if (fr->error) {
        r->files_failed++;
        return add_note(&r->failed, &r->num_failed, path, fr->error);
    }
    for (int i = 0; i < fr->n; i++) {
        chain_result *c = &fr->chains[i];
        if (c->state == CHAIN_OK && name_seen(names, c->f.name)) {
            c->state = CHAIN_REJECTED;
            c->reason = MF_REJECT_DUPLICATE;
        }
        if (c->state == CHAIN_REJECTED) {
            r->chains_rejected++;
            r->rejected_by[c->reason]++;
            MF_TRY(add_note(&r->rejected, &r->num_rejected, c->f.name,
                            mf_reject_reason_name(c->reason)));
        } else if (c->state == CHAIN_FAILED) {
            r->chains_failed++;
            MF_TRY(add_note(&r->failed, &r->num_failed, c->f.name, c->message));
        } else {
            MF_TRY(mf_chain_features_write(w, &c->f));
            if (name_add(names, c->f.name)) return MF_ERROR(MF_ERR_NOMEM, "group names");
            r->chains_written++;
            r->chains_with_msa += strcmp(c->f.msa_sources, "single-sequence") != 0;
            if (c->f.has_templates) {
                r->chains_with_templates += c->f.templates.num_templates > 0;
                r->templates_written += c->f.templates.num_templates;
                r->templates_realigned += c->f.templates.realigned;
                for (int k = 0; k < MF_TSKIP_COUNT; k++)
                    r->template_skips[k] += c->f.templates.skipped[k];
            }
        }
    }
    return MF_OK;
}

static int valid_date(const char *s)
{
    if (strlen(s) != 10 || s[4] != '-' || s[7] != '-') return 0;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && !isdigit((unsigned char)s[i])) return 0;
    int m = (s[5] - '0') * 10 + (s[6] - '0'), d = (s[8] - '0') * 10 + (s[9] - '0');
    return m >= 1 && m <= 12 && d >= 1 && d <= 31;
}

static mf_status check_options(const mf_featurize_options *o)
{
    MF_REQUIRE(o->structures_dir && o->output, "featurize: --structures and -o are required");
    if (!is_dir(o->structures_dir))
        return MF_ERROR(MF_ERR_IO, "--structures %s: not a directory", o->structures_dir);
    if (o->msa_dir && !is_dir(o->msa_dir))
        return MF_ERROR(MF_ERR_IO, "--msa-dir %s: not a directory", o->msa_dir);
    MF_REQUIRE(!o->template_hits_dir == !o->template_mmcif_dir,
               "--template-hits and --template-mmcif-dir go together");
    if (o->template_hits_dir && !is_dir(o->template_hits_dir))
        return MF_ERROR(MF_ERR_IO, "--template-hits %s: not a directory", o->template_hits_dir);
    if (o->template_mmcif_dir && !is_dir(o->template_mmcif_dir))
        return MF_ERROR(MF_ERR_IO, "--template-mmcif-dir %s: not a directory",
                        o->template_mmcif_dir);
    MF_REQUIRE(!o->release_before || valid_date(o->release_before),
               "--release-before %s: expected YYYY-MM-DD", o->release_before);
    MF_REQUIRE(!o->max_template_date || valid_date(o->max_template_date),
               "--max-template-date %s: expected YYYY-MM-DD", o->max_template_date);
    MF_REQUIRE(o->min_length <= 0 || o->max_length <= 0 || o->min_length <= o->max_length,
               "--min-length %lld is above --max-length %lld", (long long)o->min_length,
               (long long)o->max_length);
    if (o->jackhmmer_db) {
        char bin[4096];
        mf_jackhmmer_options jo = {.binary = o->jackhmmer_bin, .database = o->jackhmmer_db};
        MF_TRY(mf_jackhmmer_find(&jo, bin, sizeof bin));
        if (!is_file(o->jackhmmer_db))
            return MF_ERROR(MF_ERR_IO, "--jackhmmer-db %s: not a readable file", o->jackhmmer_db);
    }
    return MF_OK;
}

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

mf_status mf_featurize_run(const mf_featurize_options *o, mf_featurize_progress_fn progress,
                           void *ud, mf_featurize_report *r)
{
    MF_REQUIRE(o && r, "mf_featurize_run: NULL argument");
    memset(r, 0, sizeof *r);
    MF_TRY(check_options(o));
    double t0 = now_seconds();
    path_list files = {0};
    mf_status st = walk(o->structures_dir, 0, &files);
    if (st != MF_OK) {
        path_list_free(&files);
        return st;
    }
    if (files.n == 0) {
        path_list_free(&files);
        return MF_ERROR(MF_ERR_INVALID,
                        "--structures %s: no structure files (.cif, .mmcif, .pdb, .ent, "
                        "optionally .gz)",
                        o->structures_dir);
    }
    qsort(files.paths, (size_t)files.n, sizeof files.paths[0], cmp_str);
    r->files_total = files.n;

    mf_h5_writer w;
    st = mf_h5_writer_open(&w, o->output);
    if (st != MF_OK) {
        path_list_free(&files);
        return st;
    }
    int jobs = o->jobs > 0 ? o->jobs : 1;
    int64_t batch = jobs == 1 ? 1 : 2 * (int64_t)jobs;
    file_result *results = calloc((size_t)batch, sizeof *results);
    name_set names = {0};
    if (!results) st = MF_ERROR(MF_ERR_NOMEM, "featurize: results of %lld files", (long long)batch);
    if (progress && st == MF_OK) progress(r, ud);
    for (int64_t b = 0; st == MF_OK && b < files.n; b += batch) {
        int64_t nb = files.n - b < batch ? files.n - b : batch;
        if (o->cancel && *o->cancel) break;
#pragma omp parallel for schedule(dynamic, 1) num_threads(jobs) if (jobs > 1)
        for (int64_t i = 0; i < nb; i++) process_file(o, files.paths[b + i], &results[i]);
        for (int64_t i = 0; i < nb; i++) {
            if (st == MF_OK && !(o->cancel && *o->cancel))
                st = record_file(&w, files.paths[b + i], &results[i], &names, r);
            file_result_free(&results[i]);
            r->seconds = now_seconds() - t0;
            if (progress && st == MF_OK) progress(r, ud);
        }
    }
    if (st == MF_OK && o->cancel && *o->cancel)
        st = MF_ERROR(MF_ERR_IO, "featurize: interrupted; %s not written", o->output);
    if (st == MF_OK && r->chains_written == 0)
        st = MF_ERROR(MF_ERR_INVALID,
                      "featurize: no chain written (%lld files, %lld failed, %lld "
                      "chains rejected, %lld failed); %s not written",
                      (long long)r->files_total, (long long)r->files_failed,
                      (long long)r->chains_rejected, (long long)r->chains_failed, o->output);
    if (st == MF_OK) st = mf_features_write_root(&w, r->chains_written);
    if (st == MF_OK)
        st = mf_h5_writer_commit(&w);
    else
        mf_h5_writer_abort(&w);
    for (int64_t i = 0; i < names.n; i++) free(names.names[i]);
    free(names.names);
    free(results);
    path_list_free(&files);
    r->seconds = now_seconds() - t0;
    return st;
}
