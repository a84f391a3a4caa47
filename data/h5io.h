/* HDF5 input and output shared by every file memfold reads or writes (features, parameters,
 * checkpoints, dumps, reference vectors). Reads convert to the requested element type and name
 * the file and dataset in every error. Writes are declarative: chunked, shuffle + deflate (zlib)
 * + fletcher32 datasets, intermediate groups created on demand, and the whole file written under a
 * temporary name, fsynced and renamed on commit, so an interrupted run leaves no half file. */
#ifndef MF_DATA_H5IO_H
#define MF_DATA_H5IO_H

#include <hdf5.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/status.h"

#define MF_H5_MAX_DIMS 8

/* A host array read from or written to HDF5 (data from malloc; free with mf_h5_array_free). */
typedef struct {
    mf_dtype dtype;
    int ndim;
    int64_t shape[MF_H5_MAX_DIMS];
    void *data;
} mf_h5_array;

int64_t mf_h5_array_numel(const mf_h5_array *a);
void mf_h5_array_free(mf_h5_array *a);

/* Silences HDF5's own error printing (memfold reports errors itself). Idempotent. */
void mf_h5_quiet(void);

/* Read side. A read file handle is a plain hid_t; close it with H5Fclose. */
mf_status mf_h5_open_read(const char *path, hid_t *out);
bool mf_h5_exists(hid_t loc, const char *name);
/* Reads dataset `name` (a path inside the file) converted to `want` (MF_F32, MF_I32, MF_I8).
 * `file_label` names the file in error messages. */
mf_status mf_h5_read_array(hid_t loc, const char *file_label, const char *name, mf_dtype want,
                           mf_h5_array *out);
/* As above, and fails unless the dataset has exactly this shape. */
mf_status mf_h5_read_array_shape(hid_t loc, const char *file_label, const char *name, mf_dtype want,
                                 int ndim, const int64_t *shape, mf_h5_array *out);
/* Attribute of an object (name "." for the file root). String results are malloc'd. */
mf_status mf_h5_read_attr_string(hid_t loc, const char *obj, const char *attr, char **out);
mf_status mf_h5_read_attr_double(hid_t loc, const char *obj, const char *attr, double *out);
/* Names of the direct children of group `group` ("/" for the root), malloc'd array of malloc'd
 * strings in the file's name order; free with mf_h5_free_names. */
mf_status mf_h5_list(hid_t loc, const char *group, char ***names, int *count);
void mf_h5_free_names(char **names, int count);

/* Write side: everything goes to "<path>.tmp-<pid>" until mf_h5_writer_commit renames it. */
typedef struct {
    hid_t file;
    char *path, *tmp_path;
} mf_h5_writer;

mf_status mf_h5_writer_open(mf_h5_writer *w, const char *path);
/* Creates missing parent groups of `name`. dtype MF_F32, MF_I32 or MF_I8. Scalars: ndim 0. */
mf_status mf_h5_write_array(mf_h5_writer *w, const char *name, mf_dtype dtype, int ndim,
                            const int64_t *shape, const void *data);
mf_status mf_h5_write_attr_string(mf_h5_writer *w, const char *obj, const char *attr,
                                  const char *value);
mf_status mf_h5_write_attr_double(mf_h5_writer *w, const char *obj, const char *attr, double value);
mf_status mf_h5_write_attr_int(mf_h5_writer *w, const char *obj, const char *attr, long long value);
/* Flush, close, fsync, rename to the final path, fsync the directory. */
mf_status mf_h5_writer_commit(mf_h5_writer *w);
/* Close and delete the temporary file (after an error). Safe to call twice. */
void mf_h5_writer_abort(mf_h5_writer *w);

/* AlphaFold 2 names contain '/', which HDF5 dataset names cannot: '/' <-> '|' (exact both ways,
 * as in the reference vectors). Writes into buf, returns buf. */
char *mf_h5_escape_name(const char *af2_name, char *buf, size_t cap);
char *mf_h5_unescape_name(const char *h5_name, char *buf, size_t cap);

#endif
