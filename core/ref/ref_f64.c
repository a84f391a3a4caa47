/* The reference ops compiled for double (see ref.h). */
#include "core/ref/ref.h"

#include "core/attention_mask.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define real              double
#define MF_REF(name)      mf_ref_##name##_f64
#define MF_REF_SUFFIX_f64 1
#define r_exp             exp
#define r_log             log
#define r_log1p           log1p
#define r_sqrt            sqrt
#define r_fabs            fabs
#define r_fmax            fmax

#include "core/ref/attention.inc"
#include "core/ref/elementwise.inc"
#include "core/ref/gated_attention.inc"
#include "core/ref/layer_norm.inc"
#include "core/ref/layout.inc"
#include "core/ref/matmul.inc"
#include "core/ref/softmax.inc"
