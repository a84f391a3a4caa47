/* PDB writer (AF2 common/protein.to_pdb layout, without MODEL/ENDMDL), the atomic file writer and
 * the record checks shared with the mmCIF writer. */
#include "protein/pdb_writer.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef MF_VERSION
#define MF_VERSION "unknown"
#endif

/* ---- atomic file writing ---- */

static atomic_uint tmp_counter;

/* Best effort: after the rename the file is complete; the folder's fsync makes the new name
 * durable, and some file systems refuse fsync on folders, which must not fail the write. */
static void fsync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - path) < sizeof dir)
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    else
        return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return;
    (void)fsync(fd);
    close(fd);
}

mf_status mf_write_file_atomic(const char *path, const void *data, size_t len)
{
    MF_REQUIRE(path && path[0] && (data || len == 0), "mf_write_file_atomic: NULL argument");
    size_t cap = strlen(path) + 48;
    char *tmp = malloc(cap);
    if (!tmp) return MF_ERROR(MF_ERR_NOMEM, "%s: temporary file name", path);
    /* O_EXCL with a per-process counter: concurrent writers (threads or processes) of the same
     * target never share a temporary file; mode 0666 lets the umask decide as fopen would. */
    int fd = -1, err = 0;
    for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
        snprintf(tmp, cap, "%s.tmp.%ld.%u", path, (long)getpid(),
                 atomic_fetch_add(&tmp_counter, 1u));
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        err = errno;
        if (fd < 0 && err != EEXIST) break;
    }
    if (fd < 0) {
        mf_status st = MF_ERROR(MF_ERR_IO, "%s: cannot create the temporary file %s (%s)", path,
                                tmp, strerror(err));
        free(tmp);
        return st;
    }
    const char *p = data;
    size_t left = len;
    const char *what = NULL;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            what = "write";
            break;
        }
        p += w;
        left -= (size_t)w;
    }
    if (!what && fsync(fd) != 0) what = "fsync";
    err = errno;
    if (close(fd) != 0 && !what) {
        what = "close";
        err = errno;
    }
    if (!what && rename(tmp, path) != 0) {
        what = "rename";
        err = errno;
    }
    mf_status st = MF_OK;
    if (what) {
        unlink(tmp);
        st = MF_ERROR(MF_ERR_IO, "%s: %s of the temporary file %s failed (%s)", path, what, tmp,
                      strerror(err));
    } else {
        fsync_parent(path);
    }
    free(tmp);
    return st;
}

/* ---- checks ---- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int has_atoms(const mf_protein *p, int64_t i)
{
    for (int a = 0; a < MF_ATOM37; a++)
        if (p->atom_mask[i * MF_ATOM37 + a] > 0.f) return 1;
    return 0;
}

/* Residues that have atoms must differ in (number, insertion code): readers group atom records
 * into residues by exactly that key. */
static mf_status check_unique_numbers(const mf_protein *p)
{
    int64_t *key = malloc((size_t)(p->num_res ? p->num_res : 1) * sizeof *key);
    if (!key)
        return MF_ERROR(MF_ERR_NOMEM, "chain %s: %lld residues", p->chain_id,
                        (long long)p->num_res);
    int64_t m = 0;
    for (int64_t i = 0; i < p->num_res; i++)
        if (has_atoms(p, i))
            key[m++] = (int64_t)p->residue_index[i] * 256 + (unsigned char)p->insertion_code[i];
    qsort(key, (size_t)m, sizeof *key, cmp_i64);
    mf_status st = MF_OK;
    for (int64_t k = 1; k < m; k++)
        if (key[k] == key[k - 1]) {
            int64_t num = key[k] >= 0 ? key[k] / 256 : -((-key[k] + 255) / 256);
            char ins[2] = {(char)(key[k] - num * 256), '\0'};
            if (ins[0] == ' ') ins[0] = '\0';
            st = MF_ERROR(MF_ERR_INVALID,
                          "chain %s: two residues with atoms are numbered %lld%s; written "
                          "files would merge them",
                          p->chain_id, (long long)num, ins);
            break;
        }
    free(key);
    return st;
}

mf_status mf_structure_check_writable(const mf_protein *chains, int n_chains,
                                      const float *const *plddt, int pdb)
{
    MF_REQUIRE(chains && n_chains >= 1, "structure writer: no chains (n_chains %d)", n_chains);
    for (int c = 0; c < n_chains; c++) {
        const mf_protein *p = &chains[c];
        const char *id = p->chain_id;
        size_t idlen = strnlen(id, MF_CHAIN_ID_MAX);
        MF_REQUIRE(idlen > 0 && idlen < MF_CHAIN_ID_MAX, "chain %d: empty chain id", c);
        for (size_t k = 0; k < idlen; k++)
            MF_REQUIRE(id[k] > ' ' && id[k] < 127 && id[k] != '\'' && id[k] != '"',
                       "chain %d: chain id '%s' has a blank, quote or control character", c, id);
        MF_REQUIRE(!pdb || idlen == 1,
                   "chain '%s': the PDB format holds one-character chain ids (use mmCIF)", id);
        for (int d = 0; d < c; d++)
            MF_REQUIRE(strcmp(chains[d].chain_id, id) != 0, "chains %d and %d share the id '%s'", d,
                       c, id);
        MF_REQUIRE(p->num_res >= 0 &&
                       (p->num_res == 0 || (p->aatype && p->atom_positions && p->atom_mask &&
                                            p->residue_index && p->insertion_code)),
                   "chain '%s': arrays missing for %lld residues", id, (long long)p->num_res);
        MF_REQUIRE(plddt || !p->num_res || p->b_factors,
                   "chain '%s': neither pLDDT nor B-factors given", id);
        MF_REQUIRE(!plddt || !p->num_res || plddt[c], "chain '%s': pLDDT array missing", id);
        for (int64_t i = 0; i < p->num_res; i++) {
            MF_REQUIRE(p->aatype[i] >= 0 && p->aatype[i] <= MF_RESTYPE_UNK,
                       "chain '%s' residue %lld: aatype %d outside 0..20", id, (long long)i,
                       (int)p->aatype[i]);
            char ins = p->insertion_code[i];
            MF_REQUIRE(ins == ' ' || (ins > ' ' && ins < 127 && ins != '\'' && ins != '"'),
                       "chain '%s' residue %lld: insertion code 0x%02x", id, (long long)i,
                       (unsigned char)ins);
            if (!has_atoms(p, i)) continue;
            int32_t num = p->residue_index[i];
            MF_REQUIRE(!pdb || (num >= -999 && num <= 9999),
                       "chain '%s' residue %lld: number %d does not fit PDB columns 23-26", id,
                       (long long)i, (int)num);
            if (plddt) {
                float v = plddt[c][i];
                MF_REQUIRE(isfinite(v) && v >= 0.f && v <= 100.f,
                           "chain '%s' residue %lld: pLDDT %g outside [0, 100]", id, (long long)i,
                           (double)v);
            }
            for (int a = 0; a < MF_ATOM37; a++) {
                if (!(p->atom_mask[i * MF_ATOM37 + a] > 0.f)) continue;
                for (int k = 0; k < 3; k++) {
                    float x = p->atom_positions[(i * MF_ATOM37 + a) * 3 + k];
                    MF_REQUIRE(isfinite(x), "chain '%s' residue %lld atom %s: coordinate %g", id,
                               (long long)i, mf_atom37_name(a), (double)x);
                    /* %8.3f: one more digit (or the sign) would shift every later column */
                    MF_REQUIRE(!pdb || (x > -999.9995f && x < 9999.9995f),
                               "chain '%s' residue %lld atom %s: coordinate %.3f does not fit "
                               "the PDB's 8 columns (use mmCIF)",
                               id, (long long)i, mf_atom37_name(a), (double)x);
                }
                if (!plddt) {
                    float b = p->b_factors[i * MF_ATOM37 + a];
                    MF_REQUIRE(isfinite(b) && (!pdb || (b > -99.995f && b < 999.995f)),
                               "chain '%s' residue %lld atom %s: B-factor %g not writable", id,
                               (long long)i, mf_atom37_name(a), (double)b);
                }
            }
        }
        MF_TRY(check_unique_numbers(p));
    }
    return MF_OK;
}

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

/* One record, padded to 80 columns as AF2 pads its lines. */
static void tb_line(text_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tb_line(text_buf *b, const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= (int)sizeof line - 2) {
        b->failed = 1;
        return;
    }
    while (n < 80) line[n++] = ' ';
    line[n++] = '\n';
    tb_append(b, line, (size_t)n);
}

/* REMARK 6 text, word-wrapped to 80 columns; control characters become blanks. */
static void remark(text_buf *b, const char *prefix, const char *text)
{
    char clean[1024];
    snprintf(clean, sizeof clean, "%s%s", prefix, text ? text : "");
    for (char *q = clean; *q; q++)
        if ((unsigned char)*q < ' ' || *q == 127) *q = ' ';
    const int width = 80 - 11;
    const char *s = clean;
    do {
        int n = (int)strlen(s);
        if (n > width) {
            n = width;
            while (n > 0 && s[n] != ' ') n--;
            if (n == 0) n = width;
        }
        tb_line(b, "REMARK   6 %.*s", n, s);
        s += n;
        while (*s == ' ') s++;
    } while (*s);
}

mf_status mf_pdb_atom_name_field(const char *atom_name, const char *element, char field[5])
{
    MF_REQUIRE(atom_name && field, "mf_pdb_atom_name_field: NULL argument");
    size_t n = strlen(atom_name);
    MF_REQUIRE(n >= 1 && n <= 4, "atom name '%s': PDB atom names have 1 to 4 characters",
               atom_name);
    size_t el = element ? strlen(element) : 1;
    if (n == 4 || el == 2)
        snprintf(field, 5, "%-4s", atom_name);
    else
        snprintf(field, 5, " %-3s", atom_name);
    return MF_OK;
}

static void meta_remarks(text_buf *b, const mf_structure_meta *meta, int has_plddt)
{
    const mf_structure_meta none = {0};
    if (!meta) meta = &none;
    remark(b, "GENERATED BY ", meta->tool && meta->tool[0] ? meta->tool : "memfold " MF_VERSION);
    if (meta->model_name && meta->model_name[0]) remark(b, "MODEL NAME ", meta->model_name);
    if (meta->rank > 0) {
        char note[160];
        snprintf(note, sizeof note, "RANK %d, RANKING CONFIDENCE %.2f (%s)", meta->rank,
                 meta->ranking_confidence,
                 meta->ranking_metric && meta->ranking_metric[0] ? meta->ranking_metric : "plddt");
        remark(b, "", note);
    }
    remark(b, "PARENT ", meta->parents && meta->parents[0] ? meta->parents : "N/A");
    if (has_plddt) remark(b, "", "B-FACTOR COLUMN: PER-RESIDUE PLDDT (0-100)");
}

mf_status mf_pdb_format(const mf_protein *chains, int n_chains, const float *const *plddt,
                        const mf_structure_meta *meta, char **text, size_t *len)
{
    MF_REQUIRE(text, "mf_pdb_format: NULL output");
    *text = NULL;
    if (len) *len = 0;
    MF_TRY(mf_structure_check_writable(chains, n_chains, plddt, 1));
    text_buf b = {0};
    meta_remarks(&b, meta, plddt != NULL);
    int64_t serial = 1;
    for (int c = 0; c < n_chains && !b.failed; c++) {
        const mf_protein *p = &chains[c];
        char chain = p->chain_id[0];
        int64_t last = -1;
        for (int64_t i = 0; i < p->num_res; i++) {
            const char *res = mf_restype_three_letter(p->aatype[i]);
            for (int a = 0; a < MF_ATOM37; a++) {
                if (!(p->atom_mask[i * MF_ATOM37 + a] > 0.f)) continue;
                if (serial > 99999) {
                    free(b.p);
                    return MF_ERROR(MF_ERR_INVALID,
                                    "more than 99999 atoms do not fit PDB columns 7-11 (use "
                                    "mmCIF)");
                }
                const char *name = mf_atom37_name(a);
                char field[5], element[2] = {name[0], '\0'};
                (void)mf_pdb_atom_name_field(name, element, field); /* atom37 names: 1-3 */
                const float *x = &p->atom_positions[(i * MF_ATOM37 + a) * 3];
                double bf = plddt ? plddt[c][i] : p->b_factors[i * MF_ATOM37 + a];
                tb_line(&b,
                        "ATOM  %5lld %4s %3s %c%4d%c   %8.3f%8.3f%8.3f%6.2f%6.2f          %2s  ",
                        (long long)serial++, field, res, chain, (int)p->residue_index[i],
                        p->insertion_code[i], (double)x[0], (double)x[1], (double)x[2], 1.0, bf,
                        element);
                last = i;
            }
        }
        if (last < 0) continue; /* a chain without atoms leaves no record */
        if (serial > 99999) {
            free(b.p);
            return MF_ERROR(MF_ERR_INVALID, "more than 99999 atoms and TER records do not fit "
                                            "PDB columns 7-11 (use mmCIF)");
        }
        /* TER takes a serial number of its own (PDB format 3.3, AF2 does the same) */
        tb_line(&b, "TER   %5lld      %3s %c%4d%c", (long long)serial++,
                mf_restype_three_letter(p->aatype[last]), chain, (int)p->residue_index[last],
                p->insertion_code[last]);
    }
    tb_line(&b, "END");
    if (b.failed) {
        free(b.p);
        return MF_ERROR(MF_ERR_NOMEM, "mf_pdb_format: text buffer");
    }
    *text = b.p;
    if (len) *len = b.len;
    return MF_OK;
}

mf_status mf_pdb_write(const char *path, const mf_protein *chains, int n_chains,
                       const float *const *plddt, const mf_structure_meta *meta)
{
    MF_REQUIRE(path, "mf_pdb_write: NULL path");
    char *text = NULL;
    size_t len = 0;
    mf_status st = mf_pdb_format(chains, n_chains, plddt, meta, &text, &len);
    if (st != MF_OK) return mf_error_context(st, "writing %s", path);
    st = mf_write_file_atomic(path, text, len);
    free(text);
    return st;
}
