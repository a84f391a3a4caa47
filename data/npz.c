/* .npz reader and writer. Zip structures follow PKWARE's APPNOTE (4.3.7 local header, 4.3.12
 * central directory header, 4.3.14-4.3.16 ZIP64 end records, 4.5.3 ZIP64 extra field); .npy
 * headers follow numpy's format.py (NEP 1). All multi-byte fields are little-endian. */
#include "data/npz.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define SIG_LOCAL       0x04034b50u
#define SIG_CENTRAL     0x02014b50u
#define SIG_EOCD        0x06054b50u
#define SIG_ZIP64_EOCD  0x06064b50u
#define SIG_ZIP64_LOC   0x07064b50u
#define ZIP64_EXTRA_ID  0x0001u
#define LOCAL_FIXED     30
#define CENTRAL_FIXED   46
#define EOCD_FIXED      22
#define ZIP64_EOCD_SIZE 56
#define ZIP64_LOC_SIZE  20
/* Python's zipfile switches to ZIP64 above 2^31 - 1 (readers that treat sizes as signed), and so
 * does the writer here. */
#define ZIP64_LIMIT 0x7fffffffu

#define NPY_MAGIC_LEN 6
#define NPY_ALIGN     64 /* numpy's ARRAY_ALIGN */
#define NPY_GROWTH_DIGS                                                                            \
    21 /* numpy's GROWTH_AXIS_MAX_DIGITS (spare header space, numpy >= 1.23)                       \
        */
#define NPY_MAX_HEADER (1u << 20)

static const unsigned char k_npy_magic[NPY_MAGIC_LEN] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

static uint16_t rd16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint64_t rd64(const unsigned char *p)
{
    return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32);
}

static void wr16(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void wr32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void wr64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* zlib's crc32 takes a uInt length: feed large buffers in pieces. */
static uint32_t crc_update(uint32_t crc, const void *data, size_t n)
{
    const unsigned char *p = data;
    while (n) {
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = (uint32_t)crc32(crc, p, k);
        p += k;
        n -= k;
    }
    return crc;
}

/* ------------------------------------------------------------------------------------------ */
/* Reading the zip container                                                                  */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    const char *path;
    int fd;
    uint64_t size;
} zip_file;

typedef struct {
    char *name; /* member name as stored (with ".npy") */
    uint16_t flags, method;
    uint32_t crc;
    uint64_t csize, usize, local_offset;
} zip_entry;

/* Exactly n bytes at off; reading past the end is a truncation error naming `what`. */
static mf_status zread(const zip_file *z, uint64_t off, void *buf, size_t n, const char *what)
{
    if (off > z->size || n > z->size - off)
        return MF_ERROR(MF_ERR_FORMAT,
                        "%s: truncated archive: %s at offset %llu needs %zu bytes, the file has "
                        "%llu",
                        z->path, what, (unsigned long long)off, n, (unsigned long long)z->size);
    unsigned char *p = buf;
    while (n) {
        size_t k = n > (1u << 30) ? (1u << 30) : n;
        ssize_t r = pread(z->fd, p, k, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0)
            return MF_ERROR(MF_ERR_IO, "%s: read error at offset %llu (%s) while reading %s",
                            z->path, (unsigned long long)off, r < 0 ? strerror(errno) : "EOF",
                            what);
        p += r;
        off += (uint64_t)r;
        n -= (size_t)r;
    }
    return MF_OK;
}

/* No end record: say where a truncated archive ends by walking the local headers. */
static mf_status diagnose_no_eocd(const zip_file *z)
{
    unsigned char h[LOCAL_FIXED];
    if (z->size < 4 || zread(z, 0, h, 4, "signature") != MF_OK || rd32(h) != SIG_LOCAL) {
        mf_clear_error();
        return MF_ERROR(MF_ERR_FORMAT,
                        "%s: not a zip archive (no end-of-central-directory record)%s", z->path,
                        z->size == 0 ? ": empty file" : "");
    }
    uint64_t off = 0;
    char last[512] = "";
    for (;;) {
        if (off + LOCAL_FIXED > z->size) {
            mf_clear_error();
            if (off == z->size)
                return MF_ERROR(MF_ERR_FORMAT,
                                "%s: truncated archive: the file ends after member '%s', before "
                                "the central directory",
                                z->path, last);
            return MF_ERROR(MF_ERR_FORMAT,
                            "%s: truncated archive: the file ends inside the local header at "
                            "offset %llu%s%s%s",
                            z->path, (unsigned long long)off, last[0] ? " (after member '" : "",
                            last, last[0] ? "')" : "");
        }
        if (zread(z, off, h, LOCAL_FIXED, "local header") != MF_OK || rd32(h) != SIG_LOCAL) break;
        uint16_t nlen = rd16(h + 26), xlen = rd16(h + 28), flags = rd16(h + 6);
        uint64_t csize = rd32(h + 18);
        char name[512] = "";
        size_t keep = nlen < sizeof name - 1 ? nlen : sizeof name - 1;
        if (off + LOCAL_FIXED + nlen > z->size ||
            zread(z, off + LOCAL_FIXED, name, keep, "member name") != MF_OK) {
            mf_clear_error();
            return MF_ERROR(MF_ERR_FORMAT,
                            "%s: truncated archive: the file ends inside the local header at "
                            "offset %llu (after member '%s')",
                            z->path, (unsigned long long)off, last);
        }
        name[keep] = '\0';
        uint64_t data = off + LOCAL_FIXED + nlen + xlen;
        if (csize == 0xffffffffu && data <= z->size) {
            /* ZIP64 local extra: uncompressed then compressed size. */
            unsigned char x[512];
            size_t xl = xlen < sizeof x ? xlen : sizeof x;
            if (zread(z, off + LOCAL_FIXED + nlen, x, xl, "extra field") == MF_OK) {
                for (size_t i = 0; i + 4 <= xl;) {
                    uint16_t id = rd16(x + i), len = rd16(x + i + 2);
                    if (id == ZIP64_EXTRA_ID && len >= 16 && i + 4 + 16 <= xl)
                        csize = rd64(x + i + 4 + 8);
                    i += 4u + len;
                }
            }
        }
        if ((flags & 8u) && csize == 0) {
            mf_clear_error();
            return MF_ERROR(MF_ERR_FORMAT,
                            "%s: truncated archive (no end-of-central-directory record); the last "
                            "member found is '%s' at offset %llu",
                            z->path, name, (unsigned long long)off);
        }
        if (data > z->size || csize > z->size - data) {
            mf_clear_error();
            return MF_ERROR(MF_ERR_FORMAT,
                            "%s: truncated archive: member '%s' (local header at offset %llu) "
                            "needs %llu bytes of data, the file ends after %llu",
                            z->path, name, (unsigned long long)off, (unsigned long long)csize,
                            (unsigned long long)(z->size > data ? z->size - data : 0));
        }
        snprintf(last, sizeof last, "%s", name);
        off = data + csize;
    }
    mf_clear_error();
    return MF_ERROR(MF_ERR_FORMAT,
                    "%s: truncated archive: the central directory after member '%s' is missing "
                    "or cut short (no end-of-central-directory record)",
                    z->path, last);
}

/* Finds the end records and returns the central directory's offset, size and entry count. */
static mf_status find_central_directory(const zip_file *z, uint64_t *cd_off, uint64_t *cd_size,
                                        uint64_t *count)
{
    uint64_t tail = z->size < EOCD_FIXED + 65535u ? z->size : EOCD_FIXED + 65535u;
    if (tail < EOCD_FIXED) return diagnose_no_eocd(z);
    unsigned char *buf = malloc((size_t)tail);
    if (!buf) return MF_ERROR(MF_ERR_NOMEM, "%s: no memory for the archive tail", z->path);
    mf_status st = zread(z, z->size - tail, buf, (size_t)tail, "end record");
    if (st != MF_OK) {
        free(buf);
        return st;
    }
    int64_t at = -1;
    for (int64_t i = (int64_t)tail - EOCD_FIXED; i >= 0; i--) {
        if (rd32(buf + i) != SIG_EOCD) continue;
        /* The comment length must reach exactly to the end of the file. */
        if ((uint64_t)i + EOCD_FIXED + rd16(buf + i + 20) == tail) {
            at = i;
            break;
        }
    }
    if (at < 0) {
        free(buf);
        return diagnose_no_eocd(z);
    }
    const unsigned char *e = buf + at;
    uint64_t eocd_off = z->size - tail + (uint64_t)at;
    uint16_t disk = rd16(e + 4), cd_disk = rd16(e + 6);
    *count = rd16(e + 10);
    *cd_size = rd32(e + 12);
    *cd_off = rd32(e + 16);
    uint16_t on_disk = rd16(e + 8);
    free(buf);

    uint64_t cd_end = eocd_off;
    unsigned char loc[ZIP64_LOC_SIZE];
    if (eocd_off >= ZIP64_LOC_SIZE &&
        zread(z, eocd_off - ZIP64_LOC_SIZE, loc, ZIP64_LOC_SIZE, "ZIP64 locator") == MF_OK &&
        rd32(loc) == SIG_ZIP64_LOC) {
        uint64_t z64_off = rd64(loc + 8);
        unsigned char r[ZIP64_EOCD_SIZE];
        if (rd32(loc + 16) > 1)
            return MF_ERROR(MF_ERR_UNSUPPORTED, "%s: multi-disk zip archives are not supported",
                            z->path);
        MF_TRY(zread(z, z64_off, r, ZIP64_EOCD_SIZE, "ZIP64 end-of-central-directory record"));
        if (rd32(r) != SIG_ZIP64_EOCD)
            return MF_ERROR(MF_ERR_FORMAT,
                            "%s: the ZIP64 locator points to offset %llu, where there is no ZIP64 "
                            "end-of-central-directory record",
                            z->path, (unsigned long long)z64_off);
        if (rd32(r + 16) != 0 || rd32(r + 20) != 0)
            return MF_ERROR(MF_ERR_UNSUPPORTED, "%s: multi-disk zip archives are not supported",
                            z->path);
        *count = rd64(r + 32);
        *cd_size = rd64(r + 40);
        *cd_off = rd64(r + 48);
        cd_end = z64_off;
        if (rd64(r + 24) != *count)
            return MF_ERROR(MF_ERR_UNSUPPORTED, "%s: multi-disk zip archives are not supported",
                            z->path);
    } else {
        mf_clear_error();
        if (disk != 0 || cd_disk != 0 || on_disk != *count)
            return MF_ERROR(MF_ERR_UNSUPPORTED, "%s: multi-disk zip archives are not supported",
                            z->path);
    }
    if (*cd_off > cd_end || *cd_size > cd_end - *cd_off)
        return MF_ERROR(
            MF_ERR_FORMAT,
            "%s: corrupt or truncated archive: the central directory (offset %llu, %llu "
            "bytes) does not end before the end record at offset %llu",
            z->path, (unsigned long long)*cd_off, (unsigned long long)*cd_size,
            (unsigned long long)cd_end);
    if (*count > *cd_size / CENTRAL_FIXED)
        return MF_ERROR(MF_ERR_FORMAT,
                        "%s: corrupt archive: %llu members cannot fit a %llu-byte central "
                        "directory",
                        z->path, (unsigned long long)*count, (unsigned long long)*cd_size);
    return MF_OK;
}

static void free_entries(zip_entry *e, int64_t n)
{
    for (int64_t i = 0; i < n; i++) free(e[i].name);
    free(e);
}

static mf_status parse_central_directory(const zip_file *z, const unsigned char *cd,
                                         uint64_t cd_size, uint64_t count, zip_entry *out)
{
    uint64_t p = 0;
    for (uint64_t i = 0; i < count; i++) {
        if (p + CENTRAL_FIXED > cd_size || rd32(cd + p) != SIG_CENTRAL)
            return MF_ERROR(MF_ERR_FORMAT,
                            "%s: corrupt central directory: entry %llu of %llu at offset %llu is "
                            "not a central directory header",
                            z->path, (unsigned long long)i, (unsigned long long)count,
                            (unsigned long long)p);
        const unsigned char *h = cd + p;
        zip_entry *e = &out[i];
        e->flags = rd16(h + 8);
        e->method = rd16(h + 10);
        e->crc = rd32(h + 16);
        e->csize = rd32(h + 20);
        e->usize = rd32(h + 24);
        uint16_t nlen = rd16(h + 28), xlen = rd16(h + 30), clen = rd16(h + 32);
        uint32_t disk = rd16(h + 34);
        e->local_offset = rd32(h + 42);
        if (p + CENTRAL_FIXED + nlen + xlen + clen > cd_size)
            return MF_ERROR(MF_ERR_FORMAT,
                            "%s: corrupt central directory: entry %llu runs past its end", z->path,
                            (unsigned long long)i);
        e->name = malloc((size_t)nlen + 1);
        if (!e->name) return MF_ERROR(MF_ERR_NOMEM, "%s: no memory for member names", z->path);
        memcpy(e->name, h + CENTRAL_FIXED, nlen);
        e->name[nlen] = '\0';
        if (strlen(e->name) != nlen)
            return MF_ERROR(MF_ERR_FORMAT, "%s: member name of entry %llu contains a NUL byte",
                            z->path, (unsigned long long)i);
        /* ZIP64 extra: the fields whose 32-bit values are saturated follow in this order. */
        const unsigned char *x = h + CENTRAL_FIXED + nlen;
        for (uint32_t j = 0; j + 4 <= xlen;) {
            uint16_t id = rd16(x + j), len = rd16(x + j + 2);
            if (j + 4u + len > xlen)
                return MF_ERROR(MF_ERR_FORMAT, "%s: member '%s': corrupt extra field", z->path,
                                e->name);
            if (id == ZIP64_EXTRA_ID) {
                const unsigned char *v = x + j + 4, *end = v + len;
                uint64_t *fields[3] = {&e->usize, &e->csize, &e->local_offset};
                for (int k = 0; k < 3; k++) {
                    if (*fields[k] != 0xffffffffu) continue;
                    if (v + 8 > end)
                        return MF_ERROR(MF_ERR_FORMAT,
                                        "%s: member '%s': ZIP64 extra field too short", z->path,
                                        e->name);
                    *fields[k] = rd64(v);
                    v += 8;
                }
                if (disk == 0xffffu && v + 4 <= end) disk = rd32(v);
            }
            j += 4u + len;
        }
        if (disk != 0)
            return MF_ERROR(MF_ERR_UNSUPPORTED, "%s: member '%s' is on disk %u (multi-disk)",
                            z->path, e->name, disk);
        if (e->flags & 1u)
            return MF_ERROR(MF_ERR_UNSUPPORTED, "%s: member '%s' is encrypted", z->path, e->name);
        if (e->method != 0 && e->method != 8)
            return MF_ERROR(MF_ERR_UNSUPPORTED,
                            "%s: member '%s': compression method %u is not supported (stored 0 "
                            "and deflate 8 are)",
                            z->path, e->name, e->method);
        if (e->method == 0 && e->csize != e->usize)
            return MF_ERROR(
                MF_ERR_FORMAT, "%s: member '%s' is stored but its sizes differ (%llu vs %llu)",
                z->path, e->name, (unsigned long long)e->csize, (unsigned long long)e->usize);
        p += CENTRAL_FIXED + nlen + xlen + clen;
    }
    return MF_OK;
}

/* Offset of a member's data, checked against its local header and the file size. */
static mf_status member_data_offset(const zip_file *z, const zip_entry *e, uint64_t *data)
{
    unsigned char h[LOCAL_FIXED];
    char what[600];
    snprintf(what, sizeof what, "the local header of member '%s'", e->name);
    MF_TRY(zread(z, e->local_offset, h, LOCAL_FIXED, what));
    if (rd32(h) != SIG_LOCAL)
        return MF_ERROR(MF_ERR_FORMAT,
                        "%s: member '%s': no local header at offset %llu (corrupt archive)",
                        z->path, e->name, (unsigned long long)e->local_offset);
    uint16_t nlen = rd16(h + 26), xlen = rd16(h + 28);
    size_t want = strlen(e->name);
    char name[600];
    if (nlen != want || nlen >= sizeof name ||
        zread(z, e->local_offset + LOCAL_FIXED, name, nlen, what) != MF_OK ||
        memcmp(name, e->name, nlen) != 0) {
        mf_clear_error();
        return MF_ERROR(MF_ERR_FORMAT,
                        "%s: member '%s': the local header names a different member (corrupt or "
                        "truncated archive)",
                        z->path, e->name);
    }
    *data = e->local_offset + LOCAL_FIXED + nlen + xlen;
    if (*data > z->size || e->csize > z->size - *data)
        return MF_ERROR(MF_ERR_FORMAT,
                        "%s: truncated archive: member '%s' needs %llu bytes at offset %llu, the "
                        "file has %llu",
                        z->path, e->name, (unsigned long long)e->csize, (unsigned long long)*data,
                        (unsigned long long)z->size);
    return MF_OK;
}

/* ---- a member's uncompressed bytes, in order ---- */

typedef struct {
    const zip_file *z;
    const zip_entry *e;
    uint64_t in_pos, in_left; /* compressed bytes still in the file */
    uint64_t produced;        /* uncompressed bytes delivered */
    uint32_t crc;
    z_stream zs;
    bool zinit, zend;
    unsigned char *inbuf;
} member_stream;

#define INBUF_SIZE (256u * 1024u)

static mf_status ms_open(member_stream *m, const zip_file *z, const zip_entry *e)
{
    memset(m, 0, sizeof *m);
    m->z = z;
    m->e = e;
    MF_TRY(member_data_offset(z, e, &m->in_pos));
    m->in_left = e->csize;
    m->crc = (uint32_t)crc32(0, Z_NULL, 0);
    if (e->method == 8) {
        m->inbuf = malloc(INBUF_SIZE);
        if (!m->inbuf) return MF_ERROR(MF_ERR_NOMEM, "%s: no memory for inflate", z->path);
        if (inflateInit2(&m->zs, -15) != Z_OK)
            return MF_ERROR(MF_ERR_BACKEND, "%s: member '%s': inflateInit2 failed", z->path,
                            e->name);
        m->zinit = true;
    }
    return MF_OK;
}

static void ms_close(member_stream *m)
{
    if (m->zinit) inflateEnd(&m->zs);
    free(m->inbuf);
    m->zinit = false;
    m->inbuf = NULL;
}

/* Up to n bytes (fewer only at the end of the member); *got says how many. */
static mf_status ms_read_some(member_stream *m, void *dst, size_t n, size_t *got)
{
    const zip_file *z = m->z;
    *got = 0;
    if (m->e->method == 0) {
        size_t k = (uint64_t)n > m->in_left ? (size_t)m->in_left : n;
        char what[600];
        snprintf(what, sizeof what, "the data of member '%s'", m->e->name);
        MF_TRY(zread(z, m->in_pos, dst, k, what));
        m->in_pos += k;
        m->in_left -= k;
        *got = k;
    } else {
        unsigned char *out = dst;
        while (*got < n && !m->zend) {
            if (m->zs.avail_in == 0 && m->in_left > 0) {
                size_t k = m->in_left > INBUF_SIZE ? INBUF_SIZE : (size_t)m->in_left;
                char what[600];
                snprintf(what, sizeof what, "the compressed data of member '%s'", m->e->name);
                MF_TRY(zread(z, m->in_pos, m->inbuf, k, what));
                m->in_pos += k;
                m->in_left -= k;
                m->zs.next_in = m->inbuf;
                m->zs.avail_in = (uInt)k;
            }
            size_t want = n - *got > (1u << 30) ? (1u << 30) : n - *got;
            m->zs.next_out = out + *got;
            m->zs.avail_out = (uInt)want;
            int rc = inflate(&m->zs, Z_NO_FLUSH);
            size_t made = want - m->zs.avail_out;
            *got += made;
            if (rc == Z_STREAM_END) {
                m->zend = true;
            } else if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT || rc == Z_MEM_ERROR) {
                return MF_ERROR(MF_ERR_FORMAT, "%s: member '%s': corrupt deflate data (zlib: %s)",
                                z->path, m->e->name, m->zs.msg ? m->zs.msg : "error");
            } else if (made == 0 && m->zs.avail_in == 0 && m->in_left == 0) {
                return MF_ERROR(MF_ERR_FORMAT,
                                "%s: member '%s': the deflate stream is cut short (truncated or "
                                "corrupt member)",
                                z->path, m->e->name);
            }
        }
    }
    m->crc = crc_update(m->crc, dst, *got);
    m->produced += *got;
    if (m->produced > m->e->usize)
        return MF_ERROR(MF_ERR_FORMAT,
                        "%s: member '%s' inflates to more than its recorded size of %llu bytes",
                        z->path, m->e->name, (unsigned long long)m->e->usize);
    return MF_OK;
}

/* Exactly n bytes; a member that ends first is an error naming what was being read. */
static mf_status ms_read(member_stream *m, void *dst, size_t n, const char *what)
{
    size_t done = 0;
    while (done < n) {
        size_t got;
        MF_TRY(ms_read_some(m, (char *)dst + done, n - done, &got));
        if (got == 0)
            return MF_ERROR(MF_ERR_FORMAT,
                            "%s: member '%s' ends after %llu bytes, inside the %s (%zu more bytes "
                            "expected)",
                            m->z->path, m->e->name, (unsigned long long)m->produced, what,
                            n - done);
        done += got;
    }
    return MF_OK;
}

/* Reads what is left (counting it) and checks size and CRC-32. Returns the number of bytes
 * that followed the caller's reads in *trailing. */
static mf_status ms_drain_and_verify(member_stream *m, uint64_t *trailing)
{
    unsigned char scratch[4096];
    *trailing = 0;
    for (;;) {
        size_t got;
        MF_TRY(ms_read_some(m, scratch, sizeof scratch, &got));
        if (got == 0) break;
        *trailing += got;
    }
    if (m->produced != m->e->usize)
        return MF_ERROR(MF_ERR_FORMAT,
                        "%s: member '%s' holds %llu bytes, its directory entry says %llu "
                        "(truncated or corrupt member)",
                        m->z->path, m->e->name, (unsigned long long)m->produced,
                        (unsigned long long)m->e->usize);
    if (m->crc != m->e->crc)
        return MF_ERROR(MF_ERR_FORMAT,
                        "%s: member '%s': CRC-32 mismatch (directory says 0x%08x, data gives "
                        "0x%08x): the archive is corrupt",
                        m->z->path, m->e->name, m->e->crc, m->crc);
    return MF_OK;
}

/* After a format error inside a member: a corrupt member is better reported by its CRC. When the
 * member checks out, the original message stays (nothing below sets one on success). */
static mf_status prefer_crc_error(const zip_file *z, const zip_entry *e, mf_status st)
{
    member_stream m;
    uint64_t trailing;
    mf_status v = ms_open(&m, z, e);
    if (v == MF_OK) v = ms_drain_and_verify(&m, &trailing);
    ms_close(&m);
    return v == MF_OK ? st : v;
}

/* ------------------------------------------------------------------------------------------ */
/* .npy header                                                                                */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    mf_dtype dtype;
    size_t raw_size; /* bytes per element in the file */
    bool from_i64;
    bool fortran;
    int ndim;
    int64_t shape[MF_H5_MAX_DIMS];
} npy_info;

typedef struct {
    const char *s;
    size_t n, i;
} lit_parser;

static void lp_ws(lit_parser *p)
{
    while (p->i < p->n &&
           (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static bool lp_char(lit_parser *p, char c)
{
    lp_ws(p);
    if (p->i < p->n && p->s[p->i] == c) {
        p->i++;
        return true;
    }
    return false;
}

/* A Python string literal in single or double quotes, without escapes. */
static bool lp_string(lit_parser *p, char *buf, size_t cap)
{
    lp_ws(p);
    if (p->i >= p->n || (p->s[p->i] != '\'' && p->s[p->i] != '"')) return false;
    char q = p->s[p->i++];
    size_t k = 0;
    while (p->i < p->n && p->s[p->i] != q) {
        if (p->s[p->i] == '\\' || k + 1 >= cap) return false;
        buf[k++] = p->s[p->i++];
    }
    if (p->i >= p->n) return false;
    p->i++;
    buf[k] = '\0';
    return true;
}

static bool lp_word(lit_parser *p, const char *w)
{
    lp_ws(p);
    size_t k = strlen(w);
    if (p->n - p->i >= k && !strncmp(p->s + p->i, w, k)) {
        p->i += k;
        return true;
    }
    return false;
}

static bool lp_int(lit_parser *p, int64_t *v)
{
    lp_ws(p);
    size_t start = p->i;
    int64_t x = 0;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
        int d = p->s[p->i++] - '0';
        if (x > (INT64_MAX - d) / 10) return false;
        x = x * 10 + d;
    }
    if (p->i == start) return false;
    if (p->i < p->n && p->s[p->i] == 'L') p->i++; /* Python 2 longs in old files */
    *v = x;
    return true;
}

static mf_status npy_descr(const char *path, const char *member, const char *d, npy_info *info)
{
    /* '=' is native order, little-endian on every machine memfold runs on. */
    bool little = d[0] == '<' || d[0] == '=' || d[0] == '|';
    const char *t = d + 1;
    if (little && !strcmp(t, "f4")) {
        info->dtype = MF_F32;
        info->raw_size = 4;
    } else if (little && !strcmp(t, "f8")) {
        info->dtype = MF_F64;
        info->raw_size = 8;
    } else if (little && !strcmp(t, "i4")) {
        info->dtype = MF_I32;
        info->raw_size = 4;
    } else if (d[0] == '|' && !strcmp(t, "i1")) {
        info->dtype = MF_I8;
        info->raw_size = 1;
    } else if (little && !strcmp(t, "i8")) {
        info->dtype = MF_I32;
        info->raw_size = 8;
        info->from_i64 = true;
    } else {
        return MF_ERROR(MF_ERR_UNSUPPORTED,
                        "%s: member '%s': element type '%s' is not supported (supported: "
                        "little-endian f4, f8, i4, i1, and i8 when the values fit in 32 bits)",
                        path, member, d);
    }
    return MF_OK;
}

/* Parses "{'descr': '<f4', 'fortran_order': False, 'shape': (22, 32), }" (keys in any order). */
static mf_status npy_parse_dict(const char *path, const char *member, const char *text, size_t n,
                                npy_info *info)
{
    lit_parser p = {text, n, 0};
    bool have_descr = false, have_order = false, have_shape = false;
    char key[64], descr[64];
    if (!lp_char(&p, '{')) goto bad;
    for (;;) {
        if (lp_char(&p, '}')) break;
        if (!lp_string(&p, key, sizeof key) || !lp_char(&p, ':')) goto bad;
        if (!strcmp(key, "descr")) {
            lp_ws(&p);
            if (p.i < p.n && p.s[p.i] == '[')
                return MF_ERROR(MF_ERR_UNSUPPORTED,
                                "%s: member '%s': structured arrays (a list 'descr') are not "
                                "supported",
                                path, member);
            if (!lp_string(&p, descr, sizeof descr)) goto bad;
            MF_TRY(npy_descr(path, member, descr, info));
            have_descr = true;
        } else if (!strcmp(key, "fortran_order")) {
            if (lp_word(&p, "True"))
                info->fortran = true;
            else if (lp_word(&p, "False"))
                info->fortran = false;
            else
                goto bad;
            have_order = true;
        } else if (!strcmp(key, "shape")) {
            if (!lp_char(&p, '(')) goto bad;
            info->ndim = 0;
            for (;;) {
                if (lp_char(&p, ')')) break;
                int64_t v;
                if (!lp_int(&p, &v)) goto bad;
                if (info->ndim == MF_H5_MAX_DIMS)
                    return MF_ERROR(MF_ERR_UNSUPPORTED,
                                    "%s: member '%s' has more than %d dimensions", path, member,
                                    MF_H5_MAX_DIMS);
                info->shape[info->ndim++] = v;
                if (lp_char(&p, ')')) break;
                if (!lp_char(&p, ',')) goto bad;
            }
            have_shape = true;
        } else {
            return MF_ERROR(MF_ERR_FORMAT,
                            "%s: member '%s': unexpected key '%s' in the .npy header", path, member,
                            key);
        }
        if (lp_char(&p, '}')) break;
        if (!lp_char(&p, ',')) goto bad;
    }
    lp_ws(&p);
    if (p.i != p.n) goto bad;
    if (!have_descr || !have_order || !have_shape)
        return MF_ERROR(MF_ERR_FORMAT, "%s: member '%s': the .npy header lacks '%s'", path, member,
                        !have_descr   ? "descr"
                        : !have_order ? "fortran_order"
                                      : "shape");
    return MF_OK;
bad:
    while (n > 0 && (text[n - 1] == ' ' || text[n - 1] == '\n')) n--;
    return MF_ERROR(MF_ERR_FORMAT,
                    "%s: member '%s': malformed .npy header dictionary near character %zu: %.*s",
                    path, member, p.i, (int)(n > 200 ? 200 : n), text);
}

static mf_status npy_read_header(member_stream *m, const char *member, npy_info *info)
{
    const char *path = m->z->path;
    unsigned char pre[NPY_MAGIC_LEN + 2 + 4];
    MF_TRY(ms_read(m, pre, NPY_MAGIC_LEN + 2, ".npy magic"));
    if (memcmp(pre, k_npy_magic, NPY_MAGIC_LEN) != 0)
        return MF_ERROR(MF_ERR_FORMAT, "%s: member '%s' is not a .npy array (wrong magic)", path,
                        member);
    unsigned major = pre[6], minor = pre[7];
    uint32_t hlen;
    if (major == 1 && minor == 0) {
        MF_TRY(ms_read(m, pre + 8, 2, ".npy header length"));
        hlen = rd16(pre + 8);
    } else if ((major == 2 || major == 3) && minor == 0) {
        MF_TRY(ms_read(m, pre + 8, 4, ".npy header length"));
        hlen = rd32(pre + 8);
    } else {
        return MF_ERROR(MF_ERR_UNSUPPORTED,
                        "%s: member '%s': .npy format version %u.%u is not supported (1.0, 2.0, "
                        "3.0 are)",
                        path, member, major, minor);
    }
    if (hlen > NPY_MAX_HEADER)
        return MF_ERROR(MF_ERR_FORMAT, "%s: member '%s': .npy header of %u bytes is implausible",
                        path, member, hlen);
    char *text = malloc((size_t)hlen + 1);
    if (!text) return MF_ERROR(MF_ERR_NOMEM, "%s: no memory for a .npy header", path);
    mf_status st = ms_read(m, text, hlen, ".npy header");
    if (st == MF_OK) {
        text[hlen] = '\0';
        if (strlen(text) != hlen)
            st = MF_ERROR(MF_ERR_FORMAT, "%s: member '%s': NUL byte in the .npy header", path,
                          member);
        else
            st = npy_parse_dict(path, member, text, hlen, info);
    }
    free(text);
    return st;
}

/* Column-major (Fortran) element order to row-major. */
static void fortran_to_c(void *dst, const void *src, int ndim, const int64_t *shape, size_t es,
                         int64_t n)
{
    int64_t fstride[MF_H5_MAX_DIMS], idx[MF_H5_MAX_DIMS] = {0};
    for (int k = 0; k < ndim; k++) fstride[k] = k ? fstride[k - 1] * shape[k - 1] : 1;
    const unsigned char *s = src;
    unsigned char *d = dst;
    int64_t f = 0;
    for (int64_t i = 0; i < n; i++) {
        memcpy(d + (size_t)i * es, s + (size_t)f * es, es);
        for (int k = ndim - 1; k >= 0; k--) {
            f += fstride[k];
            if (++idx[k] < shape[k]) break;
            f -= fstride[k] * shape[k];
            idx[k] = 0;
        }
    }
}

static mf_status read_member(const zip_file *z, const zip_entry *e, const char *key,
                             mf_h5_array *out)
{
    memset(out, 0, sizeof *out);
    member_stream m;
    npy_info info;
    memset(&info, 0, sizeof info);
    void *raw = NULL, *tmp = NULL;
    mf_status st = ms_open(&m, z, e);
    if (st != MF_OK) goto cleanup;
    st = npy_read_header(&m, key, &info);
    if (st != MF_OK) goto cleanup;

    int64_t n = 1;
    for (int k = 0; k < info.ndim; k++) {
        if (info.shape[k] != 0 && n > INT64_MAX / 16 / info.shape[k]) {
            st = MF_ERROR(MF_ERR_FORMAT, "%s: member '%s': shape too large", z->path, key);
            goto cleanup;
        }
        n *= info.shape[k];
    }
    size_t bytes = (size_t)n * info.raw_size;
    if ((uint64_t)bytes > e->usize - m.produced) {
        st = MF_ERROR(MF_ERR_FORMAT,
                      "%s: member '%s': the header's shape needs %zu data bytes, the member has "
                      "%llu (truncated member or wrong header)",
                      z->path, key, bytes, (unsigned long long)(e->usize - m.produced));
        goto cleanup;
    }
    raw = malloc(bytes ? bytes : 1);
    if (!raw) {
        st =
            MF_ERROR(MF_ERR_NOMEM, "%s: member '%s': no memory for %zu bytes", z->path, key, bytes);
        goto cleanup;
    }
    st = ms_read(&m, raw, bytes, "array data");
    if (st != MF_OK) goto cleanup;
    uint64_t trailing;
    st = ms_drain_and_verify(&m, &trailing);
    if (st != MF_OK) goto cleanup;
    if (trailing) {
        st = MF_ERROR(MF_ERR_FORMAT,
                      "%s: member '%s': %llu bytes follow the array data its header describes",
                      z->path, key, (unsigned long long)trailing);
        goto cleanup;
    }
    if (info.fortran && info.ndim > 1) {
        tmp = malloc(bytes ? bytes : 1);
        if (!tmp) {
            st = MF_ERROR(MF_ERR_NOMEM, "%s: member '%s': no memory to reorder", z->path, key);
            goto cleanup;
        }
        fortran_to_c(tmp, raw, info.ndim, info.shape, info.raw_size, n);
        void *t = raw;
        raw = tmp;
        tmp = t;
    }
    if (info.from_i64) {
        /* In place: element i moves from byte 8i to byte 4i, never ahead of what is read. */
        int32_t *dst = raw;
        for (int64_t i = 0; i < n; i++) {
            int64_t v;
            memcpy(&v, (char *)raw + 8 * (size_t)i, 8);
            if (v < INT32_MIN || v > INT32_MAX) {
                st = MF_ERROR(MF_ERR_UNSUPPORTED,
                              "%s: member '%s': int64 value %lld at element %lld does not fit "
                              "in int32 (int64 arrays are read as int32)",
                              z->path, key, (long long)v, (long long)i);
                goto cleanup;
            }
            dst[i] = (int32_t)v;
        }
    }
    out->dtype = info.dtype;
    out->ndim = info.ndim;
    memcpy(out->shape, info.shape, sizeof info.shape);
    out->data = raw;
    raw = NULL;
cleanup:
    ms_close(&m);
    if (st == MF_ERR_FORMAT || st == MF_ERR_UNSUPPORTED) st = prefer_crc_error(z, e, st);
    free(raw);
    free(tmp);
    return st;
}

void mf_npz_free(mf_npz *npz)
{
    if (!npz) return;
    for (int i = 0; i < npz->count; i++) {
        if (npz->names) free(npz->names[i]);
        if (npz->arrays) mf_h5_array_free(&npz->arrays[i]);
    }
    free(npz->names);
    free(npz->arrays);
    memset(npz, 0, sizeof *npz);
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* First duplicate among names (NULL if none). */
static const char *find_duplicate(char *const *names, int n, mf_status *st)
{
    *st = MF_OK;
    if (n < 2) return NULL;
    char **sorted = malloc(sizeof *sorted * (size_t)n);
    if (!sorted) {
        *st = MF_ERR_NOMEM;
        return NULL;
    }
    memcpy(sorted, names, sizeof *sorted * (size_t)n);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_str_ptr);
    const char *dup = NULL;
    for (int i = 1; i < n && !dup; i++)
        if (!strcmp(sorted[i - 1], sorted[i])) dup = sorted[i];
    free(sorted);
    return dup;
}

mf_status mf_npz_read(const char *path, mf_npz *out)
{
    memset(out, 0, sizeof *out);
    zip_file z = {path, -1, 0};
    zip_entry *entries = NULL;
    unsigned char *cd = NULL;
    uint64_t count = 0;
    mf_status st = MF_OK;

    z.fd = open(path, O_RDONLY);
    if (z.fd < 0) return MF_ERROR(MF_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
    struct stat sb;
    if (fstat(z.fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(z.fd);
        return MF_ERROR(MF_ERR_IO, "%s: not a regular file", path);
    }
    z.size = (uint64_t)sb.st_size;

    uint64_t cd_off = 0, cd_size = 0;
    MF_TRY_GOTO(find_central_directory(&z, &cd_off, &cd_size, &count));
    if (count > INT_MAX / 2) {
        st = MF_ERROR(MF_ERR_UNSUPPORTED, "%s: %llu members are too many", path,
                      (unsigned long long)count);
        goto cleanup;
    }
    cd = malloc(cd_size ? (size_t)cd_size : 1);
    entries = calloc(count ? (size_t)count : 1, sizeof *entries);
    if (!cd || !entries) {
        st = MF_ERROR(MF_ERR_NOMEM, "%s: no memory for the central directory", path);
        goto cleanup;
    }
    MF_TRY_GOTO(zread(&z, cd_off, cd, (size_t)cd_size, "central directory"));
    MF_TRY_GOTO(parse_central_directory(&z, cd, cd_size, count, entries));

    out->names = calloc(count ? (size_t)count : 1, sizeof *out->names);
    out->arrays = calloc(count ? (size_t)count : 1, sizeof *out->arrays);
    if (!out->names || !out->arrays) {
        st = MF_ERROR(MF_ERR_NOMEM, "%s: no memory for %llu members", path,
                      (unsigned long long)count);
        goto cleanup;
    }
    for (uint64_t i = 0; i < count; i++) {
        const char *nm = entries[i].name;
        size_t len = strlen(nm);
        if (len > 4 && !strcmp(nm + len - 4, ".npy")) len -= 4;
        out->names[i] = strndup(nm, len);
        if (!out->names[i]) {
            st = MF_ERROR(MF_ERR_NOMEM, "%s: no memory for member names", path);
            goto cleanup;
        }
        out->count = (int)i + 1;
    }
    const char *dup = find_duplicate(out->names, out->count, &st);
    if (st != MF_OK) {
        st = MF_ERROR(MF_ERR_NOMEM, "%s: no memory", path);
        goto cleanup;
    }
    if (dup) {
        st = MF_ERROR(MF_ERR_FORMAT, "%s: member '%s' appears twice", path, dup);
        goto cleanup;
    }
    for (uint64_t i = 0; i < count; i++)
        MF_TRY_GOTO(read_member(&z, &entries[i], out->names[i], &out->arrays[i]));
cleanup:
    if (st != MF_OK) mf_npz_free(out);
    free_entries(entries, (int64_t)count);
    free(cd);
    close(z.fd);
    return st;
}

const mf_h5_array *mf_npz_find(const mf_npz *npz, const char *name)
{
    for (int i = 0; i < npz->count; i++)
        if (!strcmp(npz->names[i], name)) return &npz->arrays[i];
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Writing                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* numpy's format._write_array_header + _wrap_header for a row-major array: the dict with sorted
 * keys and repr() values, spare spaces for growing the first axis, then spaces and a newline up
 * to a multiple of 64 bytes. Returns the total length written to buf (0 if it does not fit). */
static size_t npy_header(unsigned char *buf, size_t cap, const mf_h5_array *a)
{
    const char *descr = a->dtype == MF_F32   ? "<f4"
                        : a->dtype == MF_F64 ? "<f8"
                        : a->dtype == MF_I32 ? "<i4"
                                             : "|i1";
    char shape[MF_H5_MAX_DIMS * 24 + 8], dict[MF_H5_MAX_DIMS * 24 + 128];
    size_t s = 0;
    s += (size_t)snprintf(shape + s, sizeof shape - s, "(");
    for (int i = 0; i < a->ndim; i++)
        s += (size_t)snprintf(shape + s, sizeof shape - s, i ? ", %lld" : "%lld",
                              (long long)a->shape[i]);
    snprintf(shape + s, sizeof shape - s, a->ndim == 1 ? ",)" : ")");
    int d = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                     descr, shape);
    size_t dlen = (size_t)d;
    if (a->ndim > 0) {
        char first[24];
        int fl = snprintf(first, sizeof first, "%lld", (long long)a->shape[0]);
        for (int i = fl; i < NPY_GROWTH_DIGS; i++) dict[dlen++] = ' ';
    }
    size_t hlen = dlen + 1; /* + '\n' */
    size_t prefix = NPY_MAGIC_LEN + 2 + 2;
    bool v2 = false;
    size_t pad = NPY_ALIGN - (prefix + hlen) % NPY_ALIGN;
    if (hlen + pad > 0xffff) {
        v2 = true;
        prefix = NPY_MAGIC_LEN + 2 + 4;
        pad = NPY_ALIGN - (prefix + hlen) % NPY_ALIGN;
    }
    size_t total = prefix + hlen + pad;
    if (total > cap) return 0;
    memcpy(buf, k_npy_magic, NPY_MAGIC_LEN);
    buf[6] = v2 ? 2 : 1;
    buf[7] = 0;
    if (v2)
        wr32(buf + 8, (uint32_t)(hlen + pad));
    else
        wr16(buf + 8, (uint32_t)(hlen + pad));
    memcpy(buf + prefix, dict, dlen);
    memset(buf + prefix + dlen, ' ', pad);
    buf[total - 1] = '\n';
    return total;
}

typedef struct {
    const char *name; /* without ".npy" */
    uint32_t crc;
    uint64_t csize, usize, offset;
    uint16_t method;
    bool utf8;
} written_entry;

typedef struct {
    FILE *f;
    const char *path; /* the temporary file, for messages */
    uint64_t pos;
} out_file;

static mf_status out_write(out_file *o, const void *p, size_t n)
{
    if (n && fwrite(p, 1, n, o->f) != n)
        return MF_ERROR(MF_ERR_IO, "%s: write failed at offset %llu (%s)", o->path,
                        (unsigned long long)o->pos, strerror(errno));
    o->pos += n;
    return MF_OK;
}

static mf_status write_member(out_file *o, const mf_h5_array *a, const char *name, bool compress,
                              bool force64, written_entry *we)
{
    unsigned char hdr[1024];
    size_t hlen = npy_header(hdr, sizeof hdr, a);
    if (!hlen) return MF_ERROR(MF_ERR_INVALID, "array '%s': .npy header too long", name);
    size_t dbytes = (size_t)mf_h5_array_numel(a) * mf_dtype_size(a->dtype);
    we->name = name;
    we->usize = hlen + dbytes;
    we->crc = crc_update(crc_update((uint32_t)crc32(0, Z_NULL, 0), hdr, hlen), a->data, dbytes);
    we->method = compress ? 8 : 0;
    we->offset = o->pos;
    we->utf8 = false;
    for (const char *c = name; *c; c++)
        if ((unsigned char)*c >= 0x80) we->utf8 = true;

    unsigned char *comp = NULL;
    if (compress) {
        z_stream zs;
        memset(&zs, 0, sizeof zs);
        if (deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            return MF_ERROR(MF_ERR_BACKEND, "array '%s': deflateInit2 failed", name);
        uLong bound = deflateBound(&zs, (uLong)we->usize);
        if (bound > UINT_MAX) {
            deflateEnd(&zs);
            return MF_ERROR(MF_ERR_UNSUPPORTED, "array '%s': too large to deflate in one piece",
                            name);
        }
        comp = malloc(bound ? bound : 1);
        if (!comp) {
            deflateEnd(&zs);
            return MF_ERROR(MF_ERR_NOMEM, "array '%s': no memory to compress", name);
        }
        zs.next_out = comp;
        zs.avail_out = (uInt)bound;
        zs.next_in = hdr;
        zs.avail_in = (uInt)hlen;
        int rc = deflate(&zs, Z_NO_FLUSH);
        const unsigned char *src = a->data;
        size_t left = dbytes;
        while (rc == Z_OK && left) {
            size_t k = left > (1u << 30) ? (1u << 30) : left;
            zs.next_in = (unsigned char *)(uintptr_t)src;
            zs.avail_in = (uInt)k;
            rc = deflate(&zs, Z_NO_FLUSH);
            src += k - zs.avail_in;
            left -= k - zs.avail_in;
        }
        if (rc == Z_OK) rc = deflate(&zs, Z_FINISH);
        we->csize = zs.total_out;
        deflateEnd(&zs);
        if (rc != Z_STREAM_END) {
            free(comp);
            return MF_ERROR(MF_ERR_BACKEND, "array '%s': deflate failed (%d)", name, rc);
        }
    } else {
        we->csize = we->usize;
    }

    size_t nlen = strlen(name) + 4;
    bool z64 = force64 || we->usize > ZIP64_LIMIT || we->csize > ZIP64_LIMIT;
    unsigned char lh[LOCAL_FIXED + 20];
    wr32(lh, SIG_LOCAL);
    wr16(lh + 4, z64 ? 45 : 20);
    wr16(lh + 6, we->utf8 ? 0x800u : 0u);
    wr16(lh + 8, we->method);
    wr16(lh + 10, 0);      /* 00:00:00 */
    wr16(lh + 12, 0x0021); /* 1980-01-01: fixed, so equal arrays give equal files */
    wr32(lh + 14, we->crc);
    wr32(lh + 18, z64 ? 0xffffffffu : (uint32_t)we->csize);
    wr32(lh + 22, z64 ? 0xffffffffu : (uint32_t)we->usize);
    wr16(lh + 26, (uint32_t)nlen);
    wr16(lh + 28, z64 ? 20 : 0);
    wr16(lh + LOCAL_FIXED, ZIP64_EXTRA_ID);
    wr16(lh + LOCAL_FIXED + 2, 16);
    wr64(lh + LOCAL_FIXED + 4, we->usize);
    wr64(lh + LOCAL_FIXED + 12, we->csize);
    mf_status st = out_write(o, lh, LOCAL_FIXED);
    if (st == MF_OK) st = out_write(o, name, nlen - 4);
    if (st == MF_OK) st = out_write(o, ".npy", 4);
    if (st == MF_OK && z64) st = out_write(o, lh + LOCAL_FIXED, 20);
    if (st == MF_OK && compress) st = out_write(o, comp, (size_t)we->csize);
    if (st == MF_OK && !compress) st = out_write(o, hdr, hlen);
    if (st == MF_OK && !compress) st = out_write(o, a->data, dbytes);
    free(comp);
    return st;
}

static mf_status write_central(out_file *o, const written_entry *we, int n, bool force64)
{
    uint64_t cd_off = o->pos;
    for (int i = 0; i < n; i++) {
        const written_entry *e = &we[i];
        bool zu = force64 || e->usize > ZIP64_LIMIT, zc = force64 || e->csize > ZIP64_LIMIT,
             zo = force64 || e->offset > ZIP64_LIMIT;
        unsigned char h[CENTRAL_FIXED], x[4 + 24];
        size_t xl = 0;
        if (zu || zc || zo) {
            xl = 4;
            const uint64_t vals[3] = {e->usize, e->csize, e->offset};
            const bool use[3] = {zu, zc, zo};
            for (int k = 0; k < 3; k++) {
                if (!use[k]) continue;
                wr64(x + xl, vals[k]);
                xl += 8;
            }
            wr16(x, ZIP64_EXTRA_ID);
            wr16(x + 2, (uint32_t)(xl - 4));
        }
        uint32_t version = xl ? 45 : 20;
        size_t nlen = strlen(e->name) + 4;
        wr32(h, SIG_CENTRAL);
        wr16(h + 4, 0x0300u | version); /* made by: Unix */
        wr16(h + 6, version);
        wr16(h + 8, e->utf8 ? 0x800u : 0u);
        wr16(h + 10, e->method);
        wr16(h + 12, 0);
        wr16(h + 14, 0x0021);
        wr32(h + 16, e->crc);
        wr32(h + 20, zc ? 0xffffffffu : (uint32_t)e->csize);
        wr32(h + 24, zu ? 0xffffffffu : (uint32_t)e->usize);
        wr16(h + 28, (uint32_t)nlen);
        wr16(h + 30, (uint32_t)xl);
        wr16(h + 32, 0);
        wr16(h + 34, 0);
        wr16(h + 36, 0);
        wr32(h + 38, 0100644u << 16); /* regular file, rw-r--r-- */
        wr32(h + 42, zo ? 0xffffffffu : (uint32_t)e->offset);
        MF_TRY(out_write(o, h, CENTRAL_FIXED));
        MF_TRY(out_write(o, e->name, nlen - 4));
        MF_TRY(out_write(o, ".npy", 4));
        MF_TRY(out_write(o, x, xl));
    }
    uint64_t cd_size = o->pos - cd_off, count = (uint64_t)n;
    bool z64 = force64 || count >= 0xffffu || cd_off > ZIP64_LIMIT || cd_size > ZIP64_LIMIT;
    if (z64) {
        unsigned char r[ZIP64_EOCD_SIZE], l[ZIP64_LOC_SIZE];
        uint64_t r_off = o->pos;
        wr32(r, SIG_ZIP64_EOCD);
        wr64(r + 4, ZIP64_EOCD_SIZE - 12);
        wr16(r + 12, 0x0300u | 45);
        wr16(r + 14, 45);
        wr32(r + 16, 0);
        wr32(r + 20, 0);
        wr64(r + 24, count);
        wr64(r + 32, count);
        wr64(r + 40, cd_size);
        wr64(r + 48, cd_off);
        wr32(l, SIG_ZIP64_LOC);
        wr32(l + 4, 0);
        wr64(l + 8, r_off);
        wr32(l + 16, 1);
        MF_TRY(out_write(o, r, sizeof r));
        MF_TRY(out_write(o, l, sizeof l));
    }
    unsigned char e[EOCD_FIXED];
    wr32(e, SIG_EOCD);
    wr16(e + 4, 0);
    wr16(e + 6, 0);
    wr16(e + 8, z64 ? 0xffffu : (uint32_t)count);
    wr16(e + 10, z64 ? 0xffffu : (uint32_t)count);
    wr32(e + 12, z64 ? 0xffffffffu : (uint32_t)cd_size);
    wr32(e + 16, z64 ? 0xffffffffu : (uint32_t)cd_off);
    wr16(e + 20, 0);
    return out_write(o, e, sizeof e);
}

static mf_status check_writable(const mf_npz *npz)
{
    for (int i = 0; i < npz->count; i++) {
        const mf_h5_array *a = &npz->arrays[i];
        const char *nm = npz->names[i];
        MF_REQUIRE(nm && nm[0], "npz array %d has no name", i);
        MF_REQUIRE(strlen(nm) + 4 < 0xffff, "npz array name too long: %.80s...", nm);
        if (a->dtype != MF_F32 && a->dtype != MF_F64 && a->dtype != MF_I32 && a->dtype != MF_I8)
            return MF_ERROR(MF_ERR_UNSUPPORTED,
                            "npz array '%s': element type %s cannot be written (f32, f64, i32, i8 "
                            "can)",
                            nm, mf_dtype_name(a->dtype));
        MF_REQUIRE(a->ndim >= 0 && a->ndim <= MF_H5_MAX_DIMS, "npz array '%s': %d dims", nm,
                   a->ndim);
        for (int k = 0; k < a->ndim; k++)
            MF_REQUIRE(a->shape[k] >= 0, "npz array '%s': negative dim %lld", nm,
                       (long long)a->shape[k]);
        MF_REQUIRE(a->data || mf_h5_array_numel(a) == 0, "npz array '%s' has no data", nm);
    }
    mf_status st;
    const char *dup = find_duplicate(npz->names, npz->count, &st);
    if (st != MF_OK) return MF_ERROR(MF_ERR_NOMEM, "no memory");
    if (dup) return MF_ERROR(MF_ERR_INVALID, "npz array name '%s' appears twice", dup);
    return MF_OK;
}

mf_status mf_npz_write_ex(const char *path, const mf_npz *npz, const mf_npz_write_options *opt)
{
    mf_npz_write_options def = {false, false};
    if (!opt) opt = &def;
    MF_TRY(check_writable(npz));
    size_t plen = strlen(path) + 32;
    char *tmp = malloc(plen);
    written_entry *we = calloc(npz->count ? (size_t)npz->count : 1, sizeof *we);
    if (!tmp || !we) {
        free(tmp);
        free(we);
        return MF_ERROR(MF_ERR_NOMEM, "%s: no memory", path);
    }
    snprintf(tmp, plen, "%s.tmp-%ld", path, (long)getpid());
    mf_status st = MF_OK;
    out_file o = {fopen(tmp, "wb"), tmp, 0};
    if (!o.f) {
        st = MF_ERROR(MF_ERR_IO, "%s: cannot create (%s)", tmp, strerror(errno));
        goto cleanup;
    }
    setvbuf(o.f, NULL, _IOFBF, 1u << 20);
    for (int i = 0; i < npz->count; i++)
        MF_TRY_GOTO(write_member(&o, &npz->arrays[i], npz->names[i], opt->deflate, opt->force_zip64,
                                 &we[i]));
    MF_TRY_GOTO(write_central(&o, we, npz->count, opt->force_zip64));
    if (fflush(o.f) != 0 || fsync(fileno(o.f)) != 0) {
        st = MF_ERROR(MF_ERR_IO, "%s: flush/fsync failed (%s)", tmp, strerror(errno));
        goto cleanup;
    }
    int rc = fclose(o.f);
    o.f = NULL;
    if (rc != 0) {
        st = MF_ERROR(MF_ERR_IO, "%s: close failed (%s)", tmp, strerror(errno));
        goto cleanup;
    }
    if (rename(tmp, path) != 0) {
        st = MF_ERROR(MF_ERR_IO, "cannot rename %s to %s (%s)", tmp, path, strerror(errno));
        goto cleanup;
    }
    char *dir = strdup(path);
    if (dir) {
        int fd = open(dirname(dir), O_RDONLY | O_DIRECTORY);
        if (fd >= 0) {
            fsync(fd); /* best effort: some file systems refuse directory fsync */
            close(fd);
        }
        free(dir);
    }
cleanup:
    if (o.f) fclose(o.f);
    if (st != MF_OK) unlink(tmp);
    free(tmp);
    free(we);
    return st;
}

mf_status mf_npz_write(const char *path, const mf_npz *npz)
{
    return mf_npz_write_ex(path, npz, NULL);
}
