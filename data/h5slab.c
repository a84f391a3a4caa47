#include "data/h5slab.h"

#include <string.h>

static hid_t slab_mem_type(mf_dtype t)
{
    switch (t) {
    case MF_F32:
        return H5T_NATIVE_FLOAT;
    case MF_I32:
        return H5T_NATIVE_INT32;
    case MF_I8:
        return H5T_NATIVE_INT8;
    default:
        return H5I_INVALID_HID;
    }
}

mf_status mf_h5_dataset_info(hid_t loc, const char *file_label, const char *name, int *ndim,
                             int64_t shape[MF_H5_MAX_DIMS], bool *is_float, size_t *elem_size)
{
    if (!mf_h5_exists(loc, name))
        return MF_ERROR(MF_ERR_FORMAT, "%s: dataset '%s' not found", file_label, name);
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) return MF_ERROR(MF_ERR_FORMAT, "%s: '%s' is not a dataset", file_label, name);
    hid_t space = H5Dget_space(d), ftype = H5Dget_type(d);
    mf_status st = MF_OK;
    int nd = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    H5T_class_t cls = ftype >= 0 ? H5Tget_class(ftype) : H5T_NO_CLASS;
    if (nd < 0 || nd > MF_H5_MAX_DIMS) {
        st = MF_ERROR(MF_ERR_FORMAT, "%s: dataset '%s' has %d dims (at most %d supported)",
                      file_label, name, nd, MF_H5_MAX_DIMS);
    } else if (cls != H5T_FLOAT && cls != H5T_INTEGER) {
        st = MF_ERROR(MF_ERR_FORMAT, "%s: dataset '%s' is not numeric", file_label, name);
    } else {
        hsize_t dims[MF_H5_MAX_DIMS];
        H5Sget_simple_extent_dims(space, dims, NULL);
        if (ndim) *ndim = nd;
        for (int i = 0; shape && i < nd; i++) shape[i] = (int64_t)dims[i];
        if (is_float) *is_float = cls == H5T_FLOAT;
        if (elem_size) *elem_size = H5Tget_size(ftype);
    }
    if (ftype >= 0) H5Tclose(ftype);
    if (space >= 0) H5Sclose(space);
    H5Dclose(d);
    return st;
}

int64_t mf_h5_select_numel(int ndim, const int64_t *shape, const mf_h5_dim_select *sel)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        int64_t c = 0;
        if (!sel || sel[i].num_ranges == 0)
            c = shape[i];
        else
            for (int k = 0; k < sel[i].num_ranges; k++) c += sel[i].ranges[k].count;
        n *= c;
    }
    return n;
}

mf_status mf_h5_read_select(hid_t loc, const char *file_label, const char *name, mf_dtype want,
                            int ndim, const mf_h5_dim_select *sel, void *out,
                            mf_h5_read_stats *stats)
{
    hid_t mtype = slab_mem_type(want);
    MF_REQUIRE(mtype != H5I_INVALID_HID, "%s: dataset '%s': read as %s is not supported",
               file_label, name, mf_dtype_name(want));
    int nd = 0;
    int64_t shape[MF_H5_MAX_DIMS];
    bool is_float = false;
    size_t esize = 0;
    MF_TRY(mf_h5_dataset_info(loc, file_label, name, &nd, shape, &is_float, &esize));
    if (nd != ndim)
        return MF_ERROR(MF_ERR_FORMAT, "%s: dataset '%s' has %d dims, expected %d", file_label,
                        name, nd, ndim);
    if (is_float && want != MF_F32)
        return MF_ERROR(MF_ERR_FORMAT, "%s: dataset '%s' holds floats, expected integers",
                        file_label, name);
    /* Every dimension as a list of ranges; a dimension without ranges is one whole range. */
    mf_h5_range whole[MF_H5_MAX_DIMS];
    const mf_h5_range *rr[MF_H5_MAX_DIMS];
    int nr[MF_H5_MAX_DIMS];
    hsize_t mdims[MF_H5_MAX_DIMS];
    int64_t total = 1;
    for (int i = 0; i < nd; i++) {
        if (!sel || sel[i].num_ranges == 0) {
            whole[i] = (mf_h5_range){0, shape[i]};
            rr[i] = &whole[i];
            nr[i] = 1;
        } else {
            rr[i] = sel[i].ranges;
            nr[i] = sel[i].num_ranges;
        }
        int64_t c = 0, prev_end = 0;
        for (int k = 0; k < nr[i]; k++) {
            const mf_h5_range r = rr[i][k];
            if (r.start < prev_end || r.count < 0 || r.start + r.count > shape[i])
                return MF_ERROR(MF_ERR_INVALID,
                                "%s: dataset '%s' dim %d (size %lld): range %d [%lld, %lld) is "
                                "out of bounds or not ascending and disjoint",
                                file_label, name, i, (long long)shape[i], k, (long long)r.start,
                                (long long)(r.start + r.count));
            prev_end = r.start + r.count;
            c += r.count;
        }
        mdims[i] = (hsize_t)c;
        total *= c;
    }
    if (total == 0) return MF_OK;

    mf_status st = MF_OK;
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    hid_t fspace = d >= 0 ? H5Dget_space(d) : H5I_INVALID_HID;
    hid_t mspace = nd ? H5Screate_simple(nd, mdims, NULL) : H5Screate(H5S_SCALAR);
    if (d < 0 || fspace < 0 || mspace < 0) {
        st = MF_ERROR(MF_ERR_BACKEND, "%s: dataset '%s' cannot be opened", file_label, name);
        goto cleanup;
    }
    if (nd > 0) {
        /* Odometer over the range lists: one hyperslab block per combination, OR-ed together. */
        int idx[MF_H5_MAX_DIMS] = {0};
        bool first = true;
        for (;;) {
            hsize_t start[MF_H5_MAX_DIMS], count[MF_H5_MAX_DIMS];
            bool empty = false;
            for (int i = 0; i < nd; i++) {
                start[i] = (hsize_t)rr[i][idx[i]].start;
                count[i] = (hsize_t)rr[i][idx[i]].count;
                empty |= count[i] == 0;
            }
            if (!empty) {
                if (H5Sselect_hyperslab(fspace, first ? H5S_SELECT_SET : H5S_SELECT_OR, start, NULL,
                                        count, NULL) < 0) {
                    st = MF_ERROR(MF_ERR_BACKEND, "%s: dataset '%s': hyperslab selection failed",
                                  file_label, name);
                    goto cleanup;
                }
                first = false;
            }
            int k = nd - 1;
            while (k >= 0 && ++idx[k] == nr[k]) idx[k--] = 0;
            if (k < 0) break;
        }
    }
    if (H5Dread(d, mtype, mspace, fspace, H5P_DEFAULT, out) < 0) {
        st = MF_ERROR(MF_ERR_FORMAT, "%s: dataset '%s' cannot be read (corrupt or checksum error)",
                      file_label, name);
        goto cleanup;
    }
    if (stats) {
        stats->bytes += (uint64_t)total * (uint64_t)esize;
        stats->reads++;
    }
cleanup:
    if (mspace >= 0) H5Sclose(mspace);
    if (fspace >= 0) H5Sclose(fspace);
    if (d >= 0) H5Dclose(d);
    return st;
}
