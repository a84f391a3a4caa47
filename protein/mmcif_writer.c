/* mmCIF writer: the categories AF2's to_mmcif and add_metadata_to_mmcif write (see the header
 * for where memfold differs), one value per token with CIF 1.1 quoting. */
#include "protein/mmcif_writer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifndef MF_VERSION
#define MF_VERSION "unknown"
#endif

/* ---- text ---- */

typedef struct {
    char *p;
    size_t len, cap;
    int failed;
} text_buf;

static void tb_append(text_buf *b, const char *s, size_t n)
{
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1 << 16;
        while (b->len + n + 1 > cap) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->failed = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void tb_str(text_buf *b, const char *s)
{
    tb_append(b, s, strlen(s));
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\0';
}

/* A quote character closes a quoted CIF value only when white space (or the end) follows it. */
static int quote_closes_inside(const char *s, char q)
{
    for (const char *p = s; *p; p++)
        if (*p == q && is_blank(p[1])) return 1;
    return 0;
}

static int needs_quotes(const char *s)
{
    if (!s[0] || strchr("_#$'\"[];", s[0])) return 1;
    if (!strcmp(s, ".") || !strcmp(s, "?")) return 1;
    static const char *reserved[] = {"data_", "save_", "loop_", "global_", "stop_"};
    for (int k = 0; k < 5; k++)
        if (!strncasecmp(s, reserved[k], strlen(reserved[k]))) return 1;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= ' ') return 1;
    return 0;
}

/* One value and a separating blank. Text is cleaned first: control characters become blanks, so
 * no value spans lines unless both quote styles are impossible (then a ';' text field). */
static void cif_val(text_buf *b, const char *raw)
{
    char *s = strdup(raw ? raw : "");
    if (!s) {
        b->failed = 1;
        return;
    }
    for (char *p = s; *p; p++)
        if ((unsigned char)*p < ' ' || *p == 127) *p = ' ';
    if (!needs_quotes(s)) {
        tb_str(b, s);
    } else if (!quote_closes_inside(s, '\'')) {
        tb_str(b, "'");
        tb_str(b, s);
        tb_str(b, "'");
    } else if (!quote_closes_inside(s, '"')) {
        tb_str(b, "\"");
        tb_str(b, s);
        tb_str(b, "\"");
    } else {
        tb_str(b, "\n;");
        tb_str(b, s);
        tb_str(b, "\n;\n");
    }
    tb_str(b, " ");
    free(s);
}

/* A value known to need no quotes (numbers, ids checked by mf_structure_check_writable). */
static void cif_raw(text_buf *b, const char *s)
{
    tb_str(b, s);
    tb_str(b, " ");
}

static void cif_num(text_buf *b, const char *fmt, double v)
{
    char s[64];
    snprintf(s, sizeof s, fmt, v);
    cif_raw(b, s);
}

static void cif_int(text_buf *b, long long v)
{
    char s[32];
    snprintf(s, sizeof s, "%lld", v);
    cif_raw(b, s);
}

static void cif_end_row(text_buf *b)
{
    if (!b->failed && b->len > 0 && b->p[b->len - 1] == ' ') b->p[b->len - 1] = '\n';
}

/* "_cat.item value" lines of a one-row category. */
static void cif_pair(text_buf *b, const char *cat, const char *item, const char *value)
{
    tb_str(b, cat);
    tb_str(b, ".");
    tb_str(b, item);
    tb_str(b, " ");
    cif_val(b, value);
    cif_end_row(b);
}

static void cif_loop(text_buf *b, const char *cat, const char *const *items, int n)
{
    tb_str(b, "#\nloop_\n");
    for (int k = 0; k < n; k++) {
        tb_str(b, cat);
        tb_str(b, ".");
        tb_str(b, items[k]);
        tb_str(b, "\n");
    }
}

/* ---- tables ---- */

/* Chemical component names of the PDB's Chemical Component Dictionary (AF2's _CHEM_COMP). */
static const char *const comp_names[MF_NUM_RESTYPES_WITH_X] = {
    "ALANINE",       "ARGININE",      "ASPARAGINE", "ASPARTIC ACID", "CYSTEINE",  "GLUTAMINE",
    "GLUTAMIC ACID", "GLYCINE",       "HISTIDINE",  "ISOLEUCINE",    "LEUCINE",   "LYSINE",
    "METHIONINE",    "PHENYLALANINE", "PROLINE",    "SERINE",        "THREONINE", "TRYPTOPHAN",
    "TYROSINE",      "VALINE",        "UNKNOWN",
};

void mf_mmcif_label_asym_id(int n, char out[8])
{
    int k = 0;
    if (n < 1) n = 1;
    n -= 1;
    while (n >= 0 && k < 7) {
        out[k++] = (char)('A' + n % 26);
        n = n / 26 - 1;
    }
    out[k] = '\0';
}

static int residue_has_atoms(const mf_protein *p, int64_t i)
{
    for (int a = 0; a < MF_ATOM37; a++)
        if (p->atom_mask[i * MF_ATOM37 + a] > 0.f) return 1;
    return 0;
}

/* Chains with identical residue types share an entity (1-based ids in first-seen order). */
static int assign_entities(const mf_protein *chains, int n, int *entity)
{
    int n_ent = 0;
    for (int c = 0; c < n; c++) {
        entity[c] = 0;
        for (int d = 0; d < c && !entity[c]; d++)
            if (chains[d].num_res == chains[c].num_res &&
                (chains[c].num_res == 0 ||
                 !memcmp(chains[d].aatype, chains[c].aatype,
                         (size_t)chains[c].num_res * sizeof *chains[c].aatype)))
                entity[c] = entity[d];
        if (!entity[c]) entity[c] = ++n_ent;
    }
    return n_ent;
}

static void block_name(const mf_structure_meta *meta, char *out, size_t cap)
{
    const char *id = meta->entry_id && meta->entry_id[0]       ? meta->entry_id
                     : meta->model_name && meta->model_name[0] ? meta->model_name
                                                               : "memfold";
    snprintf(out, cap, "%s", id);
    for (char *p = out; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 127) *p = '_';
}

static void write_header(text_buf *b, const mf_structure_meta *meta, const char *id)
{
    tb_str(b, "data_");
    tb_str(b, id);
    tb_str(b, "\n#\n");
    cif_pair(b, "_entry", "id", id);
    tb_str(b, "#\n");
    char *title = NULL, rank[160] = "";
    if (meta->rank > 0)
        snprintf(rank, sizeof rank, "; rank %d, ranking confidence %.2f (%s)", meta->rank,
                 meta->ranking_confidence,
                 meta->ranking_metric && meta->ranking_metric[0] ? meta->ranking_metric : "plddt");
    if (asprintf(&title, "memfold prediction%s%s%s; parents %s",
                 meta->model_name && meta->model_name[0] ? " " : "",
                 meta->model_name ? meta->model_name : "", rank,
                 meta->parents && meta->parents[0] ? meta->parents : "N/A") < 0) {
        b->failed = 1;
        return;
    }
    cif_pair(b, "_struct", "entry_id", id);
    cif_pair(b, "_struct", "title", title);
    free(title);
    tb_str(b, "#\n");
    cif_pair(b, "_audit_conform", "dict_name", "mmcif_ma.dic");
    cif_pair(b, "_audit_conform", "dict_version", "1.3.9");
    cif_pair(b, "_audit_conform", "dict_location",
             "https://raw.githubusercontent.com/ihmwg/ModelCIF/master/dist/mmcif_ma.dic");
    tb_str(b, "#\n");
    int own_tool = meta->tool && meta->tool[0];
    cif_pair(b, "_software", "pdbx_ordinal", "1");
    cif_pair(b, "_software", "name", own_tool ? meta->tool : "memfold");
    cif_pair(b, "_software", "version", own_tool ? "?" : MF_VERSION);
    cif_pair(b, "_software", "type", "package");
    cif_pair(b, "_software", "description", "Structure prediction");
    cif_pair(b, "_software", "classification", "other");
    tb_str(b, "#\n");
    cif_pair(b, "_ma_software_group", "ordinal_id", "1");
    cif_pair(b, "_ma_software_group", "group_id", "1");
    cif_pair(b, "_ma_software_group", "software_id", "1");
}

static void write_entities(text_buf *b, const mf_protein *chains, int n, const int *entity,
                           int n_ent)
{
    static const char *const ent_items[] = {"id", "type"};
    cif_loop(b, "_entity", ent_items, 2);
    for (int e = 1; e <= n_ent; e++) {
        cif_int(b, e);
        cif_raw(b, "polymer");
        cif_end_row(b);
    }
    static const char *const poly_items[] = {"entity_id", "type", "nstd_linkage", "nstd_monomer",
                                             "pdbx_strand_id"};
    cif_loop(b, "_entity_poly", poly_items, 5);
    for (int e = 1; e <= n_ent; e++) {
        cif_int(b, e);
        cif_raw(b, "polypeptide(L)");
        cif_raw(b, "no");
        cif_raw(b, "no");
        text_buf strands = {0};
        for (int c = 0; c < n; c++)
            if (entity[c] == e) {
                if (strands.len) tb_str(&strands, ",");
                tb_str(&strands, chains[c].chain_id);
            }
        if (strands.failed) b->failed = 1;
        cif_val(b, strands.p ? strands.p : "?");
        free(strands.p);
        cif_end_row(b);
    }
    static const char *const seq_items[] = {"entity_id", "num", "mon_id", "hetero"};
    cif_loop(b, "_entity_poly_seq", seq_items, 4);
    for (int e = 1; e <= n_ent; e++) {
        int c = 0;
        while (entity[c] != e) c++;
        for (int64_t i = 0; i < chains[c].num_res; i++) {
            cif_int(b, e);
            cif_int(b, (long long)i + 1);
            cif_raw(b, mf_restype_three_letter(chains[c].aatype[i]));
            cif_raw(b, "n");
            cif_end_row(b);
        }
    }
    static const char *const asym_items[] = {"id", "entity_id"};
    cif_loop(b, "_struct_asym", asym_items, 2);
    for (int c = 0; c < n; c++) {
        char asym[8];
        mf_mmcif_label_asym_id(c + 1, asym);
        cif_raw(b, asym);
        cif_int(b, entity[c]);
        cif_end_row(b);
    }
}

static void write_scheme(text_buf *b, const mf_protein *chains, int n, const int *entity)
{
    static const char *const items[] = {
        "asym_id",      "entity_id",  "seq_id",      "mon_id",        "ndb_seq_num",  "pdb_seq_num",
        "auth_seq_num", "pdb_mon_id", "auth_mon_id", "pdb_strand_id", "pdb_ins_code", "hetero"};
    cif_loop(b, "_pdbx_poly_seq_scheme", items, 12);
    for (int c = 0; c < n; c++) {
        const mf_protein *p = &chains[c];
        char asym[8];
        mf_mmcif_label_asym_id(c + 1, asym);
        for (int64_t i = 0; i < p->num_res; i++) {
            const char *mon = mf_restype_three_letter(p->aatype[i]);
            int obs = residue_has_atoms(p, i);
            char ins[2] = {p->insertion_code[i], '\0'};
            cif_raw(b, asym);
            cif_int(b, entity[c]);
            cif_int(b, (long long)i + 1);
            cif_raw(b, mon);
            cif_int(b, (long long)i + 1);
            cif_int(b, p->residue_index[i]);
            if (obs)
                cif_int(b, p->residue_index[i]);
            else
                cif_raw(b, "?");
            cif_raw(b, obs ? mon : "?");
            cif_raw(b, obs ? mon : "?");
            cif_val(b, p->chain_id);
            if (ins[0] == ' ')
                cif_raw(b, ".");
            else
                cif_val(b, ins);
            cif_raw(b, "n");
            cif_end_row(b);
        }
    }
}

static void write_chem_comp(text_buf *b, const mf_protein *chains, int n)
{
    int used[MF_NUM_RESTYPES_WITH_X] = {0};
    for (int c = 0; c < n; c++)
        for (int64_t i = 0; i < chains[c].num_res; i++) used[chains[c].aatype[i]] = 1;
    static const char *const items[] = {"id", "type", "mon_nstd_flag", "name"};
    cif_loop(b, "_chem_comp", items, 4);
    for (int r = 0; r < MF_NUM_RESTYPES_WITH_X; r++) {
        if (!used[r]) continue;
        cif_raw(b, mf_restype_three_letter(r));
        cif_val(b, r == 7 ? "peptide linking" : "L-peptide linking"); /* glycine is achiral */
        cif_raw(b, r == MF_RESTYPE_UNK ? "." : "y");
        cif_val(b, comp_names[r]);
        cif_end_row(b);
    }
}

static void write_atoms(text_buf *b, const mf_protein *chains, int n, const int *entity,
                        const float *const *plddt)
{
    int elem_used[128] = {0};
    for (int c = 0; c < n; c++)
        for (int64_t i = 0; i < chains[c].num_res; i++)
            for (int a = 0; a < MF_ATOM37; a++)
                if (chains[c].atom_mask[i * MF_ATOM37 + a] > 0.f)
                    elem_used[(unsigned char)mf_atom37_name(a)[0] & 127] = 1;
    static const char *const type_items[] = {"symbol"};
    cif_loop(b, "_atom_type", type_items, 1);
    for (int e = 0; e < 128; e++)
        if (elem_used[e]) {
            char sym[2] = {(char)e, '\0'};
            cif_raw(b, sym);
            cif_end_row(b);
        }
    static const char *const items[] = {"group_PDB",      "id",
                                        "type_symbol",    "label_atom_id",
                                        "label_alt_id",   "label_comp_id",
                                        "label_asym_id",  "label_entity_id",
                                        "label_seq_id",   "pdbx_PDB_ins_code",
                                        "Cartn_x",        "Cartn_y",
                                        "Cartn_z",        "occupancy",
                                        "B_iso_or_equiv", "auth_seq_id",
                                        "auth_comp_id",   "auth_asym_id",
                                        "auth_atom_id",   "pdbx_PDB_model_num"};
    cif_loop(b, "_atom_site", items, 20);
    long long serial = 1;
    for (int c = 0; c < n; c++) {
        const mf_protein *p = &chains[c];
        char asym[8];
        mf_mmcif_label_asym_id(c + 1, asym);
        for (int64_t i = 0; i < p->num_res && !b->failed; i++) {
            const char *mon = mf_restype_three_letter(p->aatype[i]);
            char ins[2] = {p->insertion_code[i], '\0'};
            for (int a = 0; a < MF_ATOM37; a++) {
                if (!(p->atom_mask[i * MF_ATOM37 + a] > 0.f)) continue;
                const char *name = mf_atom37_name(a);
                char sym[2] = {name[0], '\0'};
                const float *x = &p->atom_positions[(i * MF_ATOM37 + a) * 3];
                cif_raw(b, "ATOM");
                cif_int(b, serial++);
                cif_raw(b, sym);
                cif_raw(b, name);
                cif_raw(b, ".");
                cif_raw(b, mon);
                cif_raw(b, asym);
                cif_int(b, entity[c]);
                cif_int(b, (long long)i + 1);
                if (ins[0] == ' ')
                    cif_raw(b, "?");
                else
                    cif_val(b, ins);
                for (int k = 0; k < 3; k++) cif_num(b, "%.3f", (double)x[k]);
                cif_raw(b, "1.00");
                cif_num(b, "%.2f",
                        plddt ? (double)plddt[c][i] : (double)p->b_factors[i * MF_ATOM37 + a]);
                cif_int(b, p->residue_index[i]);
                cif_raw(b, mon);
                cif_val(b, p->chain_id);
                cif_raw(b, name);
                cif_raw(b, "1");
                cif_end_row(b);
            }
        }
    }
}

static void write_model_description(text_buf *b, const mf_protein *chains, int n, const int *entity,
                                    int n_ent, const float *const *plddt,
                                    const mf_structure_meta *meta)
{
    tb_str(b, "#\n");
    cif_pair(b, "_ma_data", "id", "1");
    cif_pair(b, "_ma_data", "name", "Model");
    cif_pair(b, "_ma_data", "content_type", "model coordinates");
    static const char *const te_items[] = {"entity_id", "data_id", "origin"};
    cif_loop(b, "_ma_target_entity", te_items, 3);
    for (int e = 1; e <= n_ent; e++) {
        cif_int(b, e);
        cif_raw(b, "1");
        cif_raw(b, ".");
        cif_end_row(b);
    }
    static const char *const ti_items[] = {"asym_id", "entity_id", "details"};
    cif_loop(b, "_ma_target_entity_instance", ti_items, 3);
    for (int c = 0; c < n; c++) {
        char asym[8];
        mf_mmcif_label_asym_id(c + 1, asym);
        cif_raw(b, asym);
        cif_int(b, entity[c]);
        cif_raw(b, ".");
        cif_end_row(b);
    }
    tb_str(b, "#\n");
    cif_pair(b, "_ma_model_list", "ordinal_id", "1");
    cif_pair(b, "_ma_model_list", "model_id", "1");
    cif_pair(b, "_ma_model_list", "model_group_id", "1");
    cif_pair(b, "_ma_model_list", "model_name",
             meta->model_name && meta->model_name[0] ? meta->model_name : "Model");
    cif_pair(b, "_ma_model_list", "model_group_name", "memfold " MF_VERSION " model");
    cif_pair(b, "_ma_model_list", "data_id", "1");
    cif_pair(b, "_ma_model_list", "model_type", "Ab initio model");
    if (!plddt) return;
    static const char *const qa_items[] = {"id", "name", "type", "mode", "software_group_id"};
    cif_loop(b, "_ma_qa_metric", qa_items, 5);
    tb_str(b, "1 pLDDT pLDDT global 1\n2 pLDDT pLDDT local 1\n");
    double sum = 0;
    int64_t count = 0;
    for (int c = 0; c < n; c++)
        for (int64_t i = 0; i < chains[c].num_res; i++)
            if (residue_has_atoms(&chains[c], i)) sum += plddt[c][i], count++;
    tb_str(b, "#\n");
    cif_pair(b, "_ma_qa_metric_global", "ordinal_id", "1");
    cif_pair(b, "_ma_qa_metric_global", "model_id", "1");
    cif_pair(b, "_ma_qa_metric_global", "metric_id", "1");
    char mean[32];
    snprintf(mean, sizeof mean, "%.2f", count ? sum / (double)count : 0.0);
    cif_pair(b, "_ma_qa_metric_global", "metric_value", mean);
    static const char *const loc_items[] = {"ordinal_id",   "model_id",      "label_asym_id",
                                            "label_seq_id", "label_comp_id", "metric_id",
                                            "metric_value"};
    cif_loop(b, "_ma_qa_metric_local", loc_items, 7);
    long long ordinal = 1;
    for (int c = 0; c < n; c++) {
        char asym[8];
        mf_mmcif_label_asym_id(c + 1, asym);
        for (int64_t i = 0; i < chains[c].num_res; i++) {
            if (!residue_has_atoms(&chains[c], i)) continue;
            cif_int(b, ordinal++);
            cif_raw(b, "1");
            cif_raw(b, asym);
            cif_int(b, (long long)i + 1);
            cif_raw(b, mf_restype_three_letter(chains[c].aatype[i]));
            cif_raw(b, "2");
            cif_num(b, "%.2f", (double)plddt[c][i]);
            cif_end_row(b);
        }
    }
}

mf_status mf_mmcif_format(const mf_protein *chains, int n_chains, const float *const *plddt,
                          const mf_structure_meta *meta, char **text, size_t *len)
{
    MF_REQUIRE(text, "mf_mmcif_format: NULL output");
    *text = NULL;
    if (len) *len = 0;
    MF_TRY(mf_structure_check_writable(chains, n_chains, plddt, 0));
    const mf_structure_meta none = {0};
    if (!meta) meta = &none;
    int *entity = malloc((size_t)n_chains * sizeof *entity);
    if (!entity) return MF_ERROR(MF_ERR_NOMEM, "mf_mmcif_format: %d chains", n_chains);
    int n_ent = assign_entities(chains, n_chains, entity);
    char id[256];
    block_name(meta, id, sizeof id);
    text_buf b = {0};
    write_header(&b, meta, id);
    write_entities(&b, chains, n_chains, entity, n_ent);
    write_scheme(&b, chains, n_chains, entity);
    write_chem_comp(&b, chains, n_chains);
    write_atoms(&b, chains, n_chains, entity, plddt);
    write_model_description(&b, chains, n_chains, entity, n_ent, plddt, meta);
    tb_str(&b, "#\n");
    free(entity);
    if (b.failed) {
        free(b.p);
        return MF_ERROR(MF_ERR_NOMEM, "mf_mmcif_format: text buffer");
    }
    *text = b.p;
    if (len) *len = b.len;
    return MF_OK;
}

mf_status mf_mmcif_write(const char *path, const mf_protein *chains, int n_chains,
                         const float *const *plddt, const mf_structure_meta *meta)
{
    MF_REQUIRE(path, "mf_mmcif_write: NULL path");
    char *text = NULL;
    size_t len = 0;
    mf_status st = mf_mmcif_format(chains, n_chains, plddt, meta, &text, &len);
    if (st != MF_OK) return mf_error_context(st, "writing %s", path);
    st = mf_write_file_atomic(path, text, len);
    free(text);
    return st;
}
