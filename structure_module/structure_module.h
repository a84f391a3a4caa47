/* The structure module (AF2 supplement Alg. 20; AlphaFold 2's folding.generate_affines,
 * FoldIteration and StructureModule), forward and backward:
 *   s_initial = single_layer_norm(single)                                  line 1
 *   a_0       = initial_projection(s_initial)                              line 2
 *   z2d       = pair_layer_norm(pair)                                      line 3
 *   T_0       = (quaternion (1, 0, 0, 0), translation 0)                   line 4
 *   for l = 0 .. L-1, with ONE set of fold_iteration weights for every layer:
 *     x  = dropout(a_l + IPA(a_l, z2d, T_l, seq_mask))                     lines 6-7
 *     b  = attention_layer_norm(x)
 *     x  = dropout(b + transition_2(relu(transition_1(relu(transition(b))))))   line 8
 *     a_{l+1} = transition_layer_norm(x)                                   line 9
 *     T_{l+1} = T_l o affine_update(a_{l+1})  (QuatAffine.pre_compose, Alg. 23)  line 10
 *     angles  = rigid_sidechain(a_{l+1}, s_initial)  (angle resnet)        lines 11-14
 *     frames, atom14 = all-atom(aatype, (R_{l+1}, 10 t_{l+1}), angles)     Alg. 24
 *     T_{l+1} <- stop_gradient on its rotation                             line 20
 *   act = a_L; final atom37 positions/mask from the last layer's atom14.
 * Dropout is AF2's plain (unshared) dropout of the whole activation, applied after the IPA
 * residual and after the transition residual (rate structure_module.dropout_rate, AF2 0.1;
 * training only). Layer norms use eps 1e-5 (haiku's default).
 *
 * Stop-gradient between layers (AF2: affine.apply_rotation_tensor_fn(jax.lax.stop_gradient)
 * after each fold iteration): the QUATERNION handed to the next layer (and the rotation computed
 * from it) is a constant, the translation is not. So the next layer's IPA sees R_l as constant
 * (its rotation gradient is discarded) while its translation gradient flows back through t_l; the
 * next pre_compose's quaternion input gets no gradient, its translation input does (t_{l+1} =
 * t_l + R_l t_update). Inside a layer the gradient does reach the new quaternion, from the frames
 * output and from the side-chain frames / atom positions built with R_{l+1} (AF2 builds them
 * before the stop-gradient). mf_structure_module_forward_frozen is the function whose exact
 * derivative this backward computes (the finite-difference oracle of the tests).
 *
 * Units: translations are predicted in the module's internal units; frames, side-chain frames and
 * positions are reported in Angstrom (x position_scale, AF2 10), as AF2's `traj` and `sidechains`.
 *
 * Precision and devices: every floating tensor f32, or every one f64 (the finite-difference
 * oracle); aatype i32. The frame algebra, IPA's point algebra, the all-atom construction and the
 * dropout masks run on the host, so ctx must be a CPU context. IPA in an f64 run uses IPA's own
 * double reference (mf_ipa_reference_*_f64, which mallocs its scratch) until mf_ipa_forward accepts
 * f64; f32 runs use mf_ipa_forward/backward and allocate nothing outside ctx->arena.
 *
 * Memory policy: ctx->policy.chunk_size reaches IPA (query slices) and the angle resnet (row
 * slices); every chunk size gives bitwise the same outputs and the same gradients of single and
 * pair (weight gradients differ by summation order). storage = bf16 stores IPA's and the angle
 * resnet's saved activations in bf16; the module's own per-layer activations are N x c_s and stay
 * in the compute precision. recompute != off keeps, of each layer, only its inputs (a_l, T_l: the
 * chain below) and reruns the layer's forward (dropout masks regenerated) inside the backward; it
 * also drops z2d (recomputed from pair). Gradients are identical (bitwise) either way. */
#ifndef MF_STRUCTURE_MODULE_STRUCTURE_MODULE_H
#define MF_STRUCTURE_MODULE_STRUCTURE_MODULE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/context.h"
#include "memopt/memplan.h"
#include "model/config.h"
#include "model/params.h"
#include "structure_module/angle_resnet.h"
#include "structure_module/ipa.h"

#define MF_STRUCTURE_MODULE_SCOPE             "alphafold/alphafold_iteration/structure_module"
#define MF_STRUCTURE_MODULE_MAX_LAYERS        32
#define MF_STRUCTURE_MODULE_TRANSITION_LAYERS 3 /* AF2's num_layer_in_transition; the only one */
#define MF_STRUCTURE_MODULE_LN_EPS            1e-5f

typedef struct {
    int64_t c_s, c_z;
    int64_t num_layer;               /* config structure_module.num_layers (not in the params) */
    int64_t num_layer_in_transition; /* must be MF_STRUCTURE_MODULE_TRANSITION_LAYERS */
    mf_ipa_dims ipa;                 /* its c_s, c_z equal the ones above */
    mf_angle_resnet_dims angle_resnet;
    double position_scale; /* AF2 10 (internal units -> Angstrom) */
    double dropout_rate;   /* AF2 0.1, training only */
} mf_structure_module_dims;

/* Every field from the config (channels.c_s/c_z and structure_module.*). */
mf_structure_module_dims mf_structure_module_dims_from_config(const mf_config *cfg);

/* The module's own rows (structure_module.def), then IPA's (names prefixed
 * "fold_iteration/invariant_point_attention/") and the angle resnet's ("fold_iteration/
 * rigid_sidechain/"). The first mf_structure_module_param_specs() tensors of the struct are the
 * specs in order (the angle resnet's unused blocks come last), so MF_PARAMS_AS_ARRAY and
 * mf_param_store_bind(store, MF_STRUCTURE_MODULE_SCOPE, ...) work on it directly. */
typedef struct {
#define MF_PARAM MF_PARAM_FIELD
#include "structure_module/structure_module.def"
#undef MF_PARAM
    mf_ipa_params ipa;
    mf_angle_resnet_params rigid_sidechain;
} mf_structure_module_params;

#define MF_STRUCTURE_MODULE_MAX_PARAMS                                                             \
    ((int)(sizeof(mf_structure_module_params) / sizeof(mf_tensor)))

/* Specs with names relative to MF_STRUCTURE_MODULE_SCOPE; returns the count (0 when the dims are
 * invalid). out may be NULL. */
int mf_structure_module_param_specs(const mf_structure_module_dims *d, mf_param_spec *out);

/* Where dropout masks come from: element (i, c) of the mask of layer l's `which` dropout (1 after
 * IPA, 2 after the transition) is 1 / (1 - rate) when mf_rng_uniform(seed, stream, i * c_s + c)
 * < 1 - rate, else 0; the stream packs (5 = structure module, which, recycle, layer) as
 * evoformer/dropout.h packs (stack, module, recycle, block). training false: no dropout. */
typedef struct {
    bool training;
    uint64_t seed;    /* should change every training step */
    uint32_t recycle; /* recycling iteration */
} mf_structure_module_dropout_key;

mf_structure_module_dropout_key mf_structure_module_dropout_inference(void);
uint64_t mf_structure_module_dropout_stream(const mf_structure_module_dropout_key *key,
                                            uint32_t which, uint32_t layer);

/* The module's outputs; also the layout of their upstream gradients in backward. Shapes with
 * L = num_layer: frames [L, N, 7] (quaternion w, x, y, z, then translation in Angstrom: AF2 traj);
 * sidechain_rot [L, N, 8, 9] (row-major 3x3 of each rigid group's global frame) and
 * sidechain_trans [L, N, 8, 3] (Angstrom); positions [L, N, 14, 3] (atom14, Angstrom); angles and
 * unnormalized_angles [L, N, 7, 2] (sin, cos of pre-omega, phi, psi, chi1-4); act [N, c_s] (the
 * final single activation, input of the pLDDT head); final_atom_positions [N, 37, 3] (the last
 * layer's atom14 in atom37 order, zero where the residue has no such atom); final_atom_mask
 * [N, 37] (atom37_atom_exists of aatype; no gradient). Forward: frames, positions, angles and
 * act are required; a tensor with data == NULL is not written. Backward: a NULL pointer or data
 * == NULL is a zero upstream gradient. */
typedef struct {
    mf_tensor frames, sidechain_rot, sidechain_trans, positions, angles, unnormalized_angles;
    mf_tensor act, final_atom_positions, final_atom_mask;
} mf_structure_module_outputs;

/* Per-layer activations kept for backward (empty under recompute): attention_layer_norm's input x1
 * (after dropout) and statistics, its output b, the transition's ReLU outputs hidden [2, N, c_s],
 * transition_layer_norm's input x2 (after dropout) and statistics, the affine update [N, 6], and
 * IPA's and the angle resnet's own saved tensors. */
typedef struct {
    mf_tensor x1, ln1_mean, ln1_rstd, b, hidden, x2, ln2_mean, ln2_rstd, update;
    mf_ipa_saved ipa;
    mf_angle_resnet_saved angle_resnet;
} mf_structure_module_layer_saved;

/* Kept for backward, allocated from ctx->arena by the forward (release to a mark taken before the
 * forward, after the backward). The chain (always kept): act [L + 1, N, c_s] (a_0 .. a_L), quat
 * [L + 1, N, 4], trans [L + 1, N, 3] (internal units), rot [L + 1, N, 3, 3] (R of quat), angles
 * [L, N, 7, 2]; s_initial [N, c_s] and single_layer_norm's statistics [N]; pair_layer_norm's
 * statistics [N * N] and (unless recompute) z2d [N, N, c_z]; the dropout key. */
typedef struct {
    mf_tensor act, quat, trans, rot, angles;
    mf_tensor s_initial, single_mean, single_rstd, pair_mean, pair_rstd, z2d;
    bool recompute;
    mf_structure_module_dropout_key key;
    mf_structure_module_layer_saved layer[MF_STRUCTURE_MODULE_MAX_LAYERS];
} mf_structure_module_saved;

/* single [N, c_s] and pair [N, N, c_z]: the Evoformer's outputs; aatype i32 [N] (0..20);
 * seq_mask [N] (0/1; NULL = all ones; AF2 applies it in IPA only). key NULL: no dropout. saved
 * NULL: inference (everything released before returning; z2d [N, N, c_z] and IPA's O(chunk * N)
 * slices are the largest transients). */
mf_status mf_structure_module_forward(mf_ctx *ctx, mf_structure_module_outputs *out,
                                      mf_structure_module_saved *saved, const mf_tensor *single,
                                      const mf_tensor *pair, const mf_tensor *aatype,
                                      const mf_tensor *seq_mask,
                                      const mf_structure_module_params *p,
                                      const mf_structure_module_dims *d,
                                      const mf_structure_module_dropout_key *key);

/* Accumulates into dsingle [N, c_s], dpair [N, N, c_z] (each may be NULL) and every gradient of
 * dp (NULL, or fields with data == NULL, skipped) from the upstream gradients dout (NULL or
 * fields with data == NULL: zero), with the stop-gradient described above. single, pair, aatype,
 * seq_mask, p and d as given to the forward. Scratch from ctx->arena. */
mf_status mf_structure_module_backward(mf_ctx *ctx, mf_tensor *dsingle, mf_tensor *dpair,
                                       mf_structure_module_params *dp,
                                       const mf_structure_module_outputs *dout,
                                       const mf_structure_module_saved *saved,
                                       const mf_tensor *single, const mf_tensor *pair,
                                       const mf_tensor *aatype, const mf_tensor *seq_mask,
                                       const mf_structure_module_params *p,
                                       const mf_structure_module_dims *d);

/* The inference forward with the stop-gradient made explicit: layer l >= 1 takes its quaternion
 * (and rotation) from frozen_quat [L + 1, N, 4] row l instead of from layer l-1, its translation
 * from layer l-1 as usual. With frozen_quat = the chain a forward produced (saved->quat), the
 * outputs are the same numbers; its derivative with frozen_quat held fixed is exactly what
 * mf_structure_module_backward computes. For finite-difference checks. */
mf_status mf_structure_module_forward_frozen(mf_ctx *ctx, mf_structure_module_outputs *out,
                                             const mf_tensor *frozen_quat, const mf_tensor *single,
                                             const mf_tensor *pair, const mf_tensor *aatype,
                                             const mf_tensor *seq_mask,
                                             const mf_structure_module_params *p,
                                             const mf_structure_module_dims *d,
                                             const mf_structure_module_dropout_key *key);

/* ---- memory-model plans (memopt/memplan.h; structure_module_memplan.c) ---------------------- */

/* What besides the sizes decides the arena allocations of an f32 run. */
typedef struct {
    bool dropout;           /* key->training with dropout_rate > 0: a mask per dropout */
    bool sidechain_outputs; /* forward: out->sidechain_rot/trans given (else per-layer scratch) */
    /* backward: */
    bool dparams;          /* every parameter gradient (dp given), or none */
    bool datoms;           /* an upstream gradient of positions or sidechain_rot/trans given */
    bool dfinal_positions; /* an upstream gradient of final_atom_positions given */
} mf_structure_module_plan_opts;

/* As model/train_step.c runs the trained iteration (all outputs, their gradients but
 * final_atom_positions', every parameter gradient) and as model/alphafold.c runs inference
 * (no side-chain outputs, no dropout). */
mf_structure_module_plan_opts mf_structure_module_plan_training(bool dropout);
mf_structure_module_plan_opts mf_structure_module_plan_inference(void);

/* mf_structure_module_forward (or _forward_frozen, the same allocations) with saved == NULL
 * (saving false: cur unchanged) or not (saving: cur rises by what the forward leaves for the
 * backward; with s->policy.recompute != off, the chain only). The outputs are the caller's.
 * The plain form runs as alphafold.c (saving false: inference options) and train_step.c without
 * dropout (saving true: training options) call it; _ex takes the options. */
void mf_structure_module_plan_forward(mf_memsim *s, int64_t n_res,
                                      const mf_structure_module_dims *d, bool saving);
void mf_structure_module_plan_forward_ex(mf_memsim *s, int64_t n_res,
                                         const mf_structure_module_dims *d,
                                         const mf_structure_module_plan_opts *o, bool saving);
/* mf_structure_module_backward after a saving forward under the same policy; cur unchanged.
 * o NULL: mf_structure_module_plan_training(false). */
void mf_structure_module_plan_backward(mf_memsim *s, int64_t n_res,
                                       const mf_structure_module_dims *d,
                                       const mf_structure_module_plan_opts *o);

#endif
