/* Parameters: each module lists its parameters once, in an X-macro table (<module>.def beside its
 * code) of MF_PARAM(field, "af2 name relative to the module scope", init, fan_in, ndim, (dims)).
 * The table generates the module's parameter struct (mf_tensor fields in table order), its
 * specs (names, shapes, initialisers) and thereby allocation, initialisation, loading from
 * official AlphaFold 2 parameters or reference vectors, checkpoint names and gradient checks.
 *
 *   #define MF_PARAM(field, ...) mf_tensor field;
 *   typedef struct { #include "evoformer/transition.def" } mf_transition_params;
 *   #undef MF_PARAM
 *
 * The .def table reads its sizes from a variable `d` (the module's dims struct) in scope. */
#ifndef MF_MODEL_PARAMS_H
#define MF_MODEL_PARAMS_H

#include <stdint.h>

#include "core/tensor.h"
#include "data/testvector.h"
#include "memopt/arena.h"
#include "model/module_verify.h"

typedef enum {
    MF_INIT_ZEROS = 0,        /* AF2 'zeros' (final projections) and biases */
    MF_INIT_ONES,             /* layer-norm scales; gating biases (AF2 initialises them to 1) */
    MF_INIT_LINEAR,           /* AF2 'linear': LeCun truncated normal, variance 1/fan_in */
    MF_INIT_RELU,             /* AF2 'relu': He truncated normal, variance 2/fan_in */
    MF_INIT_GLOROT,           /* AF2 'glorot': uniform with fan_in + fan_out */
    MF_INIT_SOFTPLUS_INV_ONE, /* the constant log(e - 1), so softplus of it is 1 (IPA's
                               * trainable_point_weights) */
} mf_init;

typedef struct {
    const char *name; /* AF2 name relative to the module scope, e.g. "transition1//weights" */
    mf_init init;
    int64_t fan_in;
    int ndim;
    int64_t shape[MF_MAX_DIMS];
} mf_param_spec;

#define MF_PARAM_UNPAREN(...) __VA_ARGS__
/* Expands a .def row into an mf_param_spec initialiser. */
#define MF_PARAM_SPEC(field, name, init, fan_in, ndim, dims)                                       \
    {name, init, (int64_t)(fan_in), ndim, {MF_PARAM_UNPAREN dims}},
#define MF_PARAM_FIELD(field, name, init, fan_in, ndim, dims) mf_tensor field;

/* A module's parameter struct is exactly n mf_tensor fields in spec order: view it as an array. */
#define MF_PARAMS_AS_ARRAY(p) ((mf_tensor *)(void *)(p))

/* Allocates every parameter from the arena (zero-filled) under `label`. */
mf_status mf_params_alloc(mf_arena *arena, const mf_param_spec *specs, int n, mf_tensor *params,
                          const char *label);
/* AlphaFold 2's initialisers from a counter-based stream: parameter i of a module draws from
 * stream (stream_base + i), so the result does not depend on allocation order. Host memory. */
mf_status mf_params_init(const mf_param_spec *specs, int n, mf_tensor *params, uint64_t seed,
                         uint64_t stream_base);
/* Binds each parameter to the reference file's weights/<prefix><escaped name> (host f32, no
 * copy), checking the shape. */
mf_status mf_params_bind_vectors(const mf_param_spec *specs, int n, mf_tensor *params,
                                 const mf_module_vectors *v, const char *prefix);
/* Compares each gradient with grads_weights/<prefix><escaped name>. */
mf_status mf_params_verify_grads(mf_verify_report *report, const mf_module_vectors *v,
                                 const mf_param_spec *specs, int n, const mf_tensor *grads,
                                 const char *prefix);
int64_t mf_params_numel(const mf_param_spec *specs, int n);

#endif
