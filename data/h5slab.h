/* Partial reads of HDF5 datasets (hyperslabs), so the data loader reads only what one sample
 * needs: a crop window of residues, chosen MSA rows, chosen templates. An extension of
 * data/h5io.h (same conventions: reads convert to the requested element type, errors name the file
 * and the dataset), with a count of the bytes requested from HDF5. */
#ifndef MF_DATA_H5SLAB_H
#define MF_DATA_H5SLAB_H

#include <stdbool.h>
#include <stdint.h>

#include "data/h5io.h"

/* Indices [start, start + count) of one dimension. */
typedef struct {
    int64_t start, count;
} mf_h5_range;

/* The selection along one dimension: the union of num_ranges ranges, ascending and disjoint
 * (so HDF5's file order is the order they are listed in); num_ranges == 0 selects the whole
 * dimension. */
typedef struct {
    int num_ranges;
    const mf_h5_range *ranges;
} mf_h5_dim_select;

/* Bytes requested from HDF5: selected elements times the dataset's element size in the file
 * (what the reads ask for, before decompression and chunk overhead), and the number of reads. */
typedef struct {
    uint64_t bytes;
    uint64_t reads;
} mf_h5_read_stats;

/* Rank and shape of dataset `name` without reading it; *is_float tells float from integer
 * elements, *elem_size the element size in the file (any may be NULL). */
mf_status mf_h5_dataset_info(hid_t loc, const char *file_label, const char *name, int *ndim,
                             int64_t shape[MF_H5_MAX_DIMS], bool *is_float, size_t *elem_size);

/* Elements counted by a selection over a dataset of this shape (product over dimensions of the
 * selected counts). */
int64_t mf_h5_select_numel(int ndim, const int64_t *shape, const mf_h5_dim_select *sel);

/* Reads the Cartesian product of the per-dimension selections of dataset `name` into `out`
 * (caller-allocated, dense row-major over the selected indices in listed order, converted to
 * `want`: MF_F32, MF_I32 or MF_I8). sel has one entry per dimension of the dataset (NULL reads
 * everything); a range outside the dataset, ranges out of order or overlapping, and a float
 * dataset read as integers are errors naming the dataset. stats (may be NULL) is accumulated. */
mf_status mf_h5_read_select(hid_t loc, const char *file_label, const char *name, mf_dtype want,
                            int ndim, const mf_h5_dim_select *sel, void *out,
                            mf_h5_read_stats *stats);

#endif
