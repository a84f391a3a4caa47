/* The model's parameters by their full AlphaFold 2 name
 * ("alphafold/alphafold_iteration/evoformer/evoformer_iteration/msa_transition/transition1//weights"):
 * named host f32 tensors, read from an official .npz parameter file or a memfold HDF5 parameter
 * file and written to either. Per-block weights keep their leading block axis (Evoformer,
 * extra-MSA and template pair stacks are stacked in the official files); mf_param_store_block gives
 * one block's view.
 *
 * HDF5 layout (schema 1): the name "scope//name" is dataset `name` in group `/scope` (the part
 * before "//"), e.g. group /alphafold/alphafold_iteration/evoformer/preprocess_1d, dataset
 * weights; chunked, shuffle + deflate + fletcher32 (data/h5io.h). Each dataset carries the
 * attribute `param_index` (its position in the store, so files read back in the same order); the
 * root carries `format` = "memfold-params" and `schema_version`. Round trips .npz -> HDF5 -> .npz
 * keep names, order, shapes and bytes.
 *
 * Only monomer parameters are understood: a multimer file is MF_ERR_UNSUPPORTED. */
#ifndef MF_MODEL_PARAM_STORE_H
#define MF_MODEL_PARAM_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/tensor.h"
#include "data/h5io.h"
#include "memopt/arena.h"
#include "model/config.h"
#include "model/params.h"

#define MF_PARAMS_FORMAT         "memfold-params"
#define MF_PARAMS_SCHEMA_VERSION 1
/* The official files' common prefix. */
#define MF_AF2_ROOT "alphafold/alphafold_iteration/"

typedef struct {
    char *name;       /* full AF2 name */
    mf_tensor tensor; /* host f32, row-major */
    bool owned;       /* data malloc'd by the store (else arena memory or a caller's view) */
} mf_param_entry;

typedef struct mf_param_store {
    int count, cap;
    mf_param_entry *entries; /* file order */
    int *index;              /* open-addressing hash of names -> entry, -1 empty */
    int index_cap;
} mf_param_store;

void mf_param_store_init(mf_param_store *s);
void mf_param_store_free(mf_param_store *s);

/* Adds a tensor (host f32, at most MF_MAX_DIMS dims). copy: the store keeps a malloc'd copy;
 * otherwise it keeps the view and the caller keeps the memory alive. Duplicate names fail. */
mf_status mf_param_store_add(mf_param_store *s, const char *name, const mf_tensor *t, bool copy);

/* Loading. The store must be empty (fresh from mf_param_store_init). arena == NULL: the tensors'
 * memory is malloc'd once at load (one block per array) and freed by mf_param_store_free;
 * otherwise each array is copied into the host arena under the label "params" (and the file's
 * buffer released at once). Arrays must be float32 (the official files' type): another type is an
 * error naming the array, never a silent conversion. Multimer parameters: MF_ERR_UNSUPPORTED. */
mf_status mf_param_store_load_npz(mf_param_store *s, const char *path, mf_arena *arena);
mf_status mf_param_store_load_h5(mf_param_store *s, const char *path, mf_arena *arena);
/* By content: a zip archive is read as .npz, an HDF5 file as memfold parameters. */
mf_status mf_param_store_load(mf_param_store *s, const char *path, mf_arena *arena);

/* The datasets below `group` ("/" for the root) of an open file, e.g. the "/params" group of a
 * checkpoint; file_label names the file in errors. Same rules as the loads above. */
mf_status mf_param_store_read_h5_group(mf_param_store *s, hid_t file, const char *file_label,
                                       const char *group, mf_arena *arena);
/* Writes every tensor below `group` of an open writer (without the root attributes). */
mf_status mf_param_store_write_h5_group(const mf_param_store *s, mf_h5_writer *w,
                                        const char *group);

/* Whole files, atomically (temporary file, fsync, rename). */
mf_status mf_param_store_save_h5(const mf_param_store *s, const char *path);
mf_status mf_param_store_save_npz(const mf_param_store *s, const char *path);

/* Lookups. find: NULL when absent. get: fails naming the parameter when it is absent or (for
 * ndim >= 0) when its shape differs. */
const mf_tensor *mf_param_store_find(const mf_param_store *s, const char *name);
mf_status mf_param_store_get(const mf_param_store *s, const char *name, int ndim,
                             const int64_t *shape, mf_tensor *out);
/* Block `block` of a stacked parameter [num_blocks, ...]: a view of shape [...] (the leading axis
 * dropped; mf_tensor_slice0 of one row). */
mf_status mf_param_store_block(const mf_param_store *s, const char *name, int64_t block,
                               mf_tensor *out);
/* Binds a module's parameter struct (viewed as n tensors in spec order) to the store: parameter
 * i is "<scope>/<specs[i].name>" (so "transition1//weights" under ".../msa_transition"), of
 * block `block` when block >= 0 (stacked) or whole when block < 0, and must have the spec's
 * shape. Views, no copies. */
mf_status mf_param_store_bind(const mf_param_store *s, const char *scope,
                              const mf_param_spec *specs, int n, int64_t block, mf_tensor *params);

int64_t mf_param_store_numel(const mf_param_store *s);

/* dst (empty, fresh from mf_param_store_init) becomes a copy of src, every tensor in `arena` (on
 * its device: a GPU's arena gives the parameters a device network binds to with
 * mf_alphafold_bind), same names and order. The arena owns the memory; dst holds views. */
mf_status mf_param_store_mirror(const mf_param_store *src, mf_arena *arena, mf_param_store *dst);
/* dst's tensors = src's values (a mirror of src: the same names, order and shapes; any devices),
 * e.g. a GPU mirror refreshed after an optimizer step. */
mf_status mf_param_store_copy_values(mf_param_store *dst, const mf_param_store *src);

/* ---- expected names and shapes, and the check against them ---- */

typedef struct {
    char *name;
    int ndim;
    int64_t shape[MF_MAX_DIMS];
} mf_param_expect;

typedef struct {
    int count, cap;
    mf_param_expect *items;
} mf_param_expect_list;

void mf_param_expect_list_init(mf_param_expect_list *l);
void mf_param_expect_list_free(mf_param_expect_list *l);
mf_status mf_param_expect_add(mf_param_expect_list *l, const char *name, int ndim,
                              const int64_t *shape);
/* Every spec of a module under `scope` ("<scope>/<spec name>"); num_blocks > 0 prepends the
 * block axis (stacked modules), 0 leaves the spec's shape. */
mf_status mf_param_expect_add_specs(mf_param_expect_list *l, const char *scope,
                                    const mf_param_spec *specs, int n, int64_t num_blocks);

/* MF_OK when the store holds exactly the expected names with the expected shapes. Otherwise
 * MF_ERR_FORMAT; the message gives the counts of missing, unexpected and wrongly shaped
 * parameters and as many of the first 20 of each as fit (names shortened by MF_AF2_ROOT); the
 * full listing (first 20 of each kind, full names, expected and found shapes) goes to *report
 * when report != NULL (malloc'd; NULL when everything matches). */
mf_status mf_param_store_check(const mf_param_store *s, const mf_param_expect_list *expected,
                               char **report);

/* ---- configuration from shapes ---- */

/* Overrides in cfg every size the official parameter names and shapes record: channels (c_m,
 * c_z, c_t, c_e, c_s), input feature widths and relative-position clip, recycling bins, template
 * on/off, torsion-angle embedding, template feature widths and distogram bins, block counts and
 * per-stack heads, per-head channels, hidden widths and transition factors (Evoformer, extra-MSA,
 * template pair stack), template pointwise attention (heads, per-head channels, gating), IPA
 * (heads, scalar channels, query/key and value points), structure-module transition layers, angle
 * resnet width and blocks, head sizes and whether the pTM (predicted aligned error) head exists.
 * Not recorded and left as they are: structure-module layers (weights are shared), bin ranges,
 * dropout rates, losses, data and optimizer settings. Inconsistent shapes (e.g. starting and
 * ending triangle attention with different heads) are MF_ERR_FORMAT naming both parameters. */
mf_status mf_param_store_apply_shapes(const mf_param_store *s, mf_config *cfg);
/* The af2-initial preset with mf_param_store_apply_shapes applied, then validated. */
mf_status mf_param_store_infer_config(const mf_param_store *s, mf_config *cfg);

/* Multimer parameter names ("multimer", or modules only AlphaFold-Multimer has: relative chain
 * encoding, multimer template embedding, fused triangle projections). */
bool mf_param_name_is_multimer(const char *name);
/* MF_ERR_UNSUPPORTED "multimer parameters are not supported yet" naming the first such name. */
mf_status mf_param_store_require_monomer(const mf_param_store *s, const char *label);

#endif
