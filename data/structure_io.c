#include "data/structure_io.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "data/mmcif.h"
#include "data/pdb.h"

/* Larger than any PDB entry in text form (the largest mmCIF files are a few hundred MB). */
#define MF_TEXT_FILE_MAX ((size_t)1 << 31)

static int ends_with_ci(const char *s, size_t n, const char *suffix)
{
    size_t m = strlen(suffix);
    return n >= m && strncasecmp(s + n - m, suffix, m) == 0;
}

mf_structure_format mf_structure_format_from_path(const char *path)
{
    if (!path) return MF_STRUCTURE_UNKNOWN;
    size_t n = strlen(path);
    if (ends_with_ci(path, n, ".gz")) n -= 3;
    if (ends_with_ci(path, n, ".cif") || ends_with_ci(path, n, ".mmcif")) return MF_STRUCTURE_MMCIF;
    if (ends_with_ci(path, n, ".pdb") || ends_with_ci(path, n, ".ent")) return MF_STRUCTURE_PDB;
    return MF_STRUCTURE_UNKNOWN;
}

mf_status mf_read_text_file(const char *path, char **text, size_t *len)
{
    MF_REQUIRE(path && text && len, "mf_read_text_file: NULL argument");
    *text = NULL;
    *len = 0;
    gzFile f = gzopen(path, "rb");
    if (!f) return MF_ERROR(MF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        gzclose(f);
        return MF_ERROR(MF_ERR_NOMEM, "%s: read buffer of %zu bytes", path, cap);
    }
    for (;;) {
        if (n == cap) {
            if (cap >= MF_TEXT_FILE_MAX) {
                free(buf);
                gzclose(f);
                return MF_ERROR(MF_ERR_FORMAT, "%s: larger than %zu bytes", path, cap);
            }
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb) {
                free(buf);
                gzclose(f);
                return MF_ERROR(MF_ERR_NOMEM, "%s: read buffer of %zu bytes", path, cap * 2);
            }
            buf = nb;
            cap *= 2;
        }
        size_t want = cap - n;
        if (want > (1u << 30)) want = 1u << 30;
        int got = gzread(f, buf + n, (unsigned)want);
        if (got < 0) break;
        if (got == 0) break;
        n += (size_t)got;
    }
    int errnum = Z_OK;
    const char *zmsg = gzerror(f, &errnum);
    if (errnum != Z_OK) {
        mf_status st = errnum == Z_ERRNO
                           ? MF_ERROR(MF_ERR_IO, "%s: read failed: %s", path, strerror(errno))
                           : MF_ERROR(MF_ERR_FORMAT, "%s: corrupt or truncated gzip data: %s", path,
                                      zmsg ? zmsg : "?");
        free(buf);
        gzclose(f);
        return st;
    }
    gzclose(f);
    buf[n] = '\0';
    const char *nul = memchr(buf, '\0', n);
    if (nul) {
        int line = 1;
        for (const char *q = buf; q < nul; q++) line += *q == '\n';
        free(buf);
        return MF_ERROR(MF_ERR_FORMAT, "%s:%d: NUL byte in a text file (binary data?)", path, line);
    }
    *text = buf;
    *len = n;
    return MF_OK;
}

mf_status mf_structure_read(const char *path, mf_protein **chains, int *n_chains)
{
    MF_REQUIRE(path && chains && n_chains, "mf_structure_read: NULL argument");
    *chains = NULL;
    *n_chains = 0;
    switch (mf_structure_format_from_path(path)) {
    case MF_STRUCTURE_MMCIF:
        return mf_mmcif_read(path, chains, n_chains);
    case MF_STRUCTURE_PDB:
        return mf_pdb_read(path, chains, n_chains);
    default:
        return MF_ERROR(MF_ERR_INVALID,
                        "%s: unknown structure format (expected .cif, .mmcif, .pdb or .ent, "
                        "optionally .gz)",
                        path);
    }
}

mf_status mf_structure_read_chain(const char *path, const char *chain_id, mf_protein *out)
{
    MF_REQUIRE(chain_id && out, "mf_structure_read_chain: NULL argument");
    memset(out, 0, sizeof *out);
    mf_protein *chains = NULL;
    int n = 0;
    MF_TRY(mf_structure_read(path, &chains, &n));
    int hit = -1;
    for (int i = 0; i < n && hit < 0; i++)
        if (strcmp(chains[i].chain_id, chain_id) == 0) hit = i;
    if (hit < 0) {
        char have[256] = "";
        size_t k = 0;
        for (int i = 0; i < n && k + MF_CHAIN_ID_MAX + 2 < sizeof have; i++)
            k += (size_t)snprintf(have + k, sizeof have - k, "%s%s", i ? "," : "",
                                  chains[i].chain_id);
        mf_protein_list_free(chains, n);
        return MF_ERROR(MF_ERR_INVALID, "%s: no protein chain '%s' (chains: %s)", path, chain_id,
                        n ? have : "none");
    }
    *out = chains[hit];
    memset(&chains[hit], 0, sizeof chains[hit]);
    mf_protein_list_free(chains, n);
    return MF_OK;
}

mf_status mf_structure_list_chains(const char *path, mf_chain_summary **out, int *n_out)
{
    MF_REQUIRE(out && n_out, "mf_structure_list_chains: NULL argument");
    *out = NULL;
    *n_out = 0;
    mf_protein *chains = NULL;
    int n = 0;
    MF_TRY(mf_structure_read(path, &chains, &n));
    mf_chain_summary *s = calloc(n ? (size_t)n : 1, sizeof *s);
    if (!s) {
        mf_protein_list_free(chains, n);
        return MF_ERROR(MF_ERR_NOMEM, "%s: chain list of %d", path, n);
    }
    for (int i = 0; i < n; i++) {
        memcpy(s[i].chain_id, chains[i].chain_id, MF_CHAIN_ID_MAX);
        s[i].num_res = chains[i].num_res;
        s[i].num_observed = mf_protein_num_observed(&chains[i]);
    }
    mf_protein_list_free(chains, n);
    *out = s;
    *n_out = n;
    return MF_OK;
}

/* ---- shared by the readers ---- */

int mf_atom_record_slot(const char *res_name, const char *atom_name)
{
    if (strcmp(res_name, "MSE") == 0 && strcmp(atom_name, "SE") == 0) return mf_atom37_index("SD");
    return mf_atom37_index(atom_name);
}

int mf_resolve_residue(mf_protein *p, int64_t i, const mf_atom_record *recs, int64_t n,
                       const char *res_name)
{
    if (!p || i < 0 || i >= p->num_res || n <= 0) return -1;
    /* The alt id with the highest occupancy (its atoms' maximum), first seen on ties. */
    char best_alt = ' ';
    float best_occ = -1.f;
    int first = -1;
    for (int64_t r = 0; r < n; r++) {
        const mf_atom_record *a = &recs[r];
        if (res_name && strcmp(a->res_name, res_name) != 0) continue;
        if (first < 0) first = (int)r;
        if (a->alt == ' ') continue;
        float occ = a->occupancy;
        for (int64_t q = r + 1; q < n; q++)
            if (recs[q].alt == a->alt && recs[q].occupancy > occ &&
                (!res_name || strcmp(recs[q].res_name, res_name) == 0))
                occ = recs[q].occupancy;
        if (occ > best_occ) {
            best_occ = occ;
            best_alt = a->alt;
        }
    }
    if (first < 0) return -1;
    float *pos = p->atom_positions + i * MF_ATOM37 * 3;
    float *mask = p->atom_mask + i * MF_ATOM37;
    float *bf = p->b_factors + i * MF_ATOM37;
    int named = -1;
    for (int pass = 0; pass < 2; pass++) {
        /* pass 0: the chosen conformer and the atoms without alt id; pass 1: slots only the other
         * alt ids fill, from their highest-occupancy record. */
        float slot_occ[MF_ATOM37];
        int slot_rec[MF_ATOM37];
        for (int k = 0; k < MF_ATOM37; k++) slot_rec[k] = -1, slot_occ[k] = -1.f;
        for (int64_t r = 0; r < n; r++) {
            const mf_atom_record *a = &recs[r];
            if (res_name && strcmp(a->res_name, res_name) != 0) continue;
            int in_chosen = a->alt == ' ' || a->alt == best_alt;
            if (pass == 0 && in_chosen && named < 0) named = (int)r;
            if (a->atom37 < 0 || a->atom37 >= MF_ATOM37 || mask[a->atom37] > 0.f) continue;
            if (pass == 0 && in_chosen) {
                if (slot_rec[a->atom37] < 0) slot_rec[a->atom37] = (int)r;
            } else if (pass == 1 && !in_chosen && a->occupancy > slot_occ[a->atom37]) {
                slot_occ[a->atom37] = a->occupancy;
                slot_rec[a->atom37] = (int)r;
            }
        }
        for (int k = 0; k < MF_ATOM37; k++) {
            if (slot_rec[k] < 0) continue;
            const mf_atom_record *a = &recs[slot_rec[k]];
            memcpy(pos + 3 * k, a->xyz, sizeof a->xyz);
            mask[k] = 1.f;
            bf[k] = a->b_factor;
        }
    }
    return named >= 0 ? named : first;
}

int mf_parse_finite(const char *s, size_t len, double *out)
{
    char tmp[64];
    while (len > 0 && (*s == ' ' || *s == '\t')) s++, len--;
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\r')) len--;
    if (len == 0 || len >= sizeof tmp) return -1;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    /* Only plain decimal notation: strtod would also take "nan", "inf" and hex floats. */
    for (size_t k = 0; k < len; k++) {
        char c = tmp[k];
        if (!((c >= '0' && c <= '9') || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E'))
            return -1;
    }
    char *end = NULL;
    errno = 0;
    double v = strtod(tmp, &end);
    if (end != tmp + len || errno == ERANGE || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

int mf_parse_int32(const char *s, size_t len, int32_t *out)
{
    char tmp[32];
    while (len > 0 && (*s == ' ' || *s == '\t')) s++, len--;
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\r')) len--;
    if (len == 0 || len >= sizeof tmp) return -1;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    for (size_t k = 0; k < len; k++)
        if (!((tmp[k] >= '0' && tmp[k] <= '9') || (k == 0 && (tmp[k] == '-' || tmp[k] == '+'))))
            return -1;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(tmp, &end, 10);
    if (end != tmp + len || errno == ERANGE || v < INT32_MIN || v > INT32_MAX) return -1;
    *out = (int32_t)v;
    return 0;
}

void mf_set_entry_info(mf_protein *chains, int n, const mf_entry_info *info)
{
    for (int i = 0; i < n; i++) chains[i].entry = *info;
}
