/* NumPy .npz archives (the format of the official AlphaFold 2 parameter files): a zip archive of
 * .npy members, one array per member, keyed by the member name without ".npy". The zip container
 * is parsed here (ZIP64 included: numpy writes ZIP64 local headers for every member, and archives
 * beyond 4 GiB or 65535 members need ZIP64 end records); members may be stored or deflated and
 * every member's CRC-32 is verified.
 *
 * Element types read: '<f4' -> MF_F32, '<f8' -> MF_F64, '<i4' -> MF_I32, '|i1' -> MF_I8, '<i8' ->
 * MF_I32 when every value fits in 32 bits (else an error naming the value). Anything else (f2, u1,
 * bool, complex, big-endian, structured or object arrays) is MF_ERR_UNSUPPORTED naming the type.
 * Fortran-ordered members are transposed to row-major on reading (AlphaFold 2 writes row-major
 * arrays, but numpy keeps the Fortran flag of transposed arrays, and the reference parameter file
 * in shared/testvectors has such members). At most MF_H5_MAX_DIMS dims.
 *
 * Errors name the archive and, where one is concerned, the member: truncated archive, CRC
 * mismatch, unsupported type or compression, malformed .npy header. Nothing is half returned. */
#ifndef MF_DATA_NPZ_H
#define MF_DATA_NPZ_H

#include <stdbool.h>

#include "core/status.h"
#include "data/h5io.h"

typedef struct {
    int count;
    char **names;        /* member names without ".npy", archive order */
    mf_h5_array *arrays; /* row-major host arrays, data malloc'd */
} mf_npz;

/* Reads every member. On failure *out is empty. */
mf_status mf_npz_read(const char *path, mf_npz *out);
/* NULL if absent. */
const mf_h5_array *mf_npz_find(const mf_npz *npz, const char *name);
void mf_npz_free(mf_npz *npz);

/* Writes stored members with .npy version 1.0 headers byte for byte as numpy's format.write_array
 * writes them for the same row-major arrays (MF_F32 '<f4', MF_F64 '<f8', MF_I32 '<i4', MF_I8
 * '|i1'), so numpy.load reads the file; ZIP64 records only where sizes or offsets need them.
 * Atomic: written to "<path>.tmp-<pid>", fsynced and renamed. */
mf_status mf_npz_write(const char *path, const mf_npz *npz);

typedef struct {
    bool deflate;     /* raw-deflate members (numpy.savez_compressed) instead of storing them */
    bool force_zip64; /* ZIP64 extra fields and end records even where sizes do not need them */
} mf_npz_write_options;

/* mf_npz_write with options (NULL: stored, ZIP64 only where needed). */
mf_status mf_npz_write_ex(const char *path, const mf_npz *npz, const mf_npz_write_options *opt);

#endif
