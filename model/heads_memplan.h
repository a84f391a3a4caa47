/* Memory-model plans (memopt/memplan.h) of the model's output part as its drivers run it: the
 * heads as model/alphafold.c's inference and model/train_step.c's trained iteration call them,
 * and the trained iteration's structure module, heads, loss and their backward, each replaying
 * the arena allocations of the named piece of code exactly (CPU, f32; s->policy is the run's
 * memory policy). The per-module plans they compose are declared in the modules' headers
 * (structure_module.h, heads.h, loss.h). Sizes: n_seq = the MSA cluster rows S (template rows
 * excluded), n_res = N. */
#ifndef MF_MODEL_HEADS_MEMPLAN_H
#define MF_MODEL_HEADS_MEMPLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "memopt/memplan.h"
#include "model/config.h"
#include "model/heads.h"
#include "model/loss.h"
#include "structure_module/structure_module.h"

/* alphafold.c heads(): the pLDDT head, with all_heads the distogram, masked MSA and
 * experimentally resolved heads, with pae_head the aligned-error head (logits preallocated).
 * msa_copy: the f32 elements of the MSA's first rows brought down from a trunk context for the
 * distogram and masked-MSA heads (0 on one context). */
void mf_heads_plan_inference(mf_memsim *s, int64_t n_seq, int64_t n_res, const mf_heads_dims *d,
                             bool all_heads, bool pae_head, int64_t msa_copy);

/* train_step.c forward_heads(): the logits (left allocated, MF_MEM_ACTS) and every head's forward
 * with its saved state. */
void mf_heads_plan_train_forward(mf_memsim *s, int64_t n_seq, int64_t n_res, const mf_heads_dims *d,
                                 bool pae_head);
/* The head backward calls of train_step.c backward_output_modules() (every gradient asked). */
void mf_heads_plan_train_backward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                  const mf_heads_dims *d, bool pae_head);

/* train_step.c forward_structure_module() then forward_heads(): the structure module's outputs,
 * its saved struct and saving forward, the heads' logits and forwards (cur rises by all of
 * them). dropout: opt->dropout. */
void mf_train_plan_output_forward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                  const mf_structure_module_dims *sm, const mf_heads_dims *d,
                                  bool pae_head, bool dropout);
/* mf_train_iteration's two mf_loss_forward calls (clamped, unclamped; cur unchanged). */
void mf_train_plan_loss(mf_memsim *s, int64_t n_seq, int64_t n_res, int64_t num_layers,
                        const mf_config *cfg);
/* train_step.c backward_loss(): the zeroed output gradients (left allocated) and
 * mf_loss_backward with dtotal 1; resolution: the sample's (the pLDDT term's filter). */
void mf_train_plan_loss_backward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                 const mf_structure_module_dims *sm, const mf_heads_dims *d,
                                 bool pae_head, const mf_config *cfg, float resolution);
/* train_step.c backward_output_modules(), after backward() has allocated the MSA and pair
 * gradients: dsingle and dact (left allocated), the heads' backward, the structure module's
 * backward and the single projection's (c_m -> c_s). */
void mf_train_plan_output_backward(mf_memsim *s, int64_t n_seq, int64_t n_res, int64_t c_m,
                                   const mf_structure_module_dims *sm, const mf_heads_dims *d,
                                   bool pae_head, bool dropout);

#endif
