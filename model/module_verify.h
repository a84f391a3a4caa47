/* Checking modules against reference vectors (shared/testvectors/modules format): a registry from
 * the file's `module` attribute to a function that builds the module from the file's weights, runs
 * forward and backward with the file's upstream gradient, and compares every output and gradient
 * with the metric of the vectors' README. `memfold verify` and the per-module ctests use it. */
#ifndef MF_MODEL_MODULE_VERIFY_H
#define MF_MODEL_MODULE_VERIFY_H

#include "core/context.h"
#include "data/testvector.h"
#include "eval/compare.h"

#define MF_VERIFY_MAX_ITEMS 160

typedef struct {
    char name[160]; /* "outputs/update", "grads_weights/attention||query_w" */
    mf_compare_result result;
} mf_verify_item;

typedef struct {
    int count;
    mf_verify_item items[MF_VERIFY_MAX_ITEMS];
} mf_verify_report;

typedef mf_status (*mf_module_verifier)(mf_ctx *ctx, const mf_module_vectors *v,
                                        mf_verify_report *report);

/* NULL when the module is not implemented. */
mf_module_verifier mf_find_module_verifier(const char *module);
/* Names of the modules that have a verifier (NULL-terminated). */
const char *const *mf_verified_modules(void);

/* Compares `cand` (host f32) with the reference dataset `group/name` of v, honouring the file's
 * skip_rows and (for grads_weights) compare_absolute rules, and appends the result. */
mf_status mf_verify_compare(mf_verify_report *report, const mf_module_vectors *v, const char *group,
                            const char *name, const float *cand, int64_t n);
bool mf_verify_report_pass(const mf_verify_report *r);
/* mf_verify_compare for a host f32 tensor. */
mf_status mf_verify_compare_tensor(mf_verify_report *report, const mf_module_vectors *v,
                                   const char *group, const char *name, const mf_tensor *t);
/* A CPU f32 tensor header over dataset group/name of the file (1..4 dims; no copy). */
mf_status mf_verify_vector_tensor(const mf_module_vectors *v, const mf_array_set *set,
                                  const char *group, const char *name, mf_tensor *out);
/* Verifiers that run host code need a CPU context and arena: a clear error otherwise. */
mf_status mf_verify_require_cpu(const mf_ctx *ctx, const char *what);

#endif
