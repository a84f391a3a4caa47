/* Reference vectors in the format of shared/testvectors (README there): a module file holds
 * groups inputs/, weights/ (AF2 names relative to the module scope, '/' escaped as '|'),
 * outputs/, grad_outputs/, grads_inputs/, grads_weights/ and attributes module, af2_scope, rtol,
 * grad_scale, compare_absolute (JSON list) and skip_rows (JSON object). */
#ifndef MF_DATA_TESTVECTOR_H
#define MF_DATA_TESTVECTOR_H

#include "data/h5io.h"

typedef struct {
    char *name; /* as stored (escaped) */
    mf_h5_array array;
} mf_named_array;

typedef struct {
    int count;
    mf_named_array *items;
} mf_array_set;

typedef struct {
    char *dataset; /* e.g. "outputs/update" */
    int count;
    int64_t *rows;
} mf_skip_rows;

typedef struct {
    char *path, *module, *scope, *doc;
    double rtol, grad_scale;
    int n_absolute;
    char **compare_absolute; /* escaped weight names compared absolutely against grad_scale */
    int n_skip;
    mf_skip_rows *skip;
    mf_array_set inputs, weights, outputs, grad_outputs, grads_inputs, grads_weights;
} mf_module_vectors;

/* Loads every group present (missing groups are empty sets); all arrays as f32. */
mf_status mf_module_vectors_load(const char *path, mf_module_vectors *v);
void mf_module_vectors_free(mf_module_vectors *v);

/* Lookup by stored name; NULL when absent. */
const mf_h5_array *mf_array_set_find(const mf_array_set *s, const char *name);
/* Lookup that fails with "<file>: <group>/<name> missing" or a shape mismatch message. ndim < 0
 * skips the shape check. */
mf_status mf_array_set_get(const mf_module_vectors *v, const mf_array_set *s, const char *group,
                           const char *name, int ndim, const int64_t *shape,
                           const mf_h5_array **out);

bool mf_module_vectors_is_absolute(const mf_module_vectors *v, const char *weight_name);
const mf_skip_rows *mf_module_vectors_skip(const mf_module_vectors *v, const char *dataset);

#endif
