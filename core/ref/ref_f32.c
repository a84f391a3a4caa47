/* The reference ops compiled for float (see ref.h). */
#include "core/ref/ref.h"

#include "core/attention_mask.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define real              float
#define MF_REF(name)      mf_ref_##name##_f32
#define MF_REF_SUFFIX_f32 1
#define r_exp             expf
#define r_log             logf
#define r_log1p           log1pf
#define r_sqrt            sqrtf
#define r_fabs            fabsf
#define r_fmax            fmaxf

#include "core/ref/attention.inc"
#include "core/ref/elementwise.inc"
#include "core/ref/gated_attention.inc"
#include "core/ref/layer_norm.inc"
#include "core/ref/layout.inc"
#include "core/ref/matmul.inc"
#include "core/ref/softmax.inc"
