/* Shape rules of the ops (core/ops.h) that the CPU entry points and their CUDA twins
 * (core/cuda) must apply alike: one definition each, so a shape one device accepts the other
 * accepts too. */
#ifndef MF_CORE_SHAPE_RULES_H
#define MF_CORE_SHAPE_RULES_H

#include <stdint.h>

#include "core/status.h"
#include "core/tensor.h"

/* y[rows, out] = x[rows, in] @ w[in, out] (mf_linear_forward; y may be dy): in = x's last dim,
 * out = y's last dim and w with in*out elements; failing that, w's dims split into
 * [in dims..., out dims...] where in matches trailing dims of x and out trailing dims of y (the
 * AF2 layouts: x [B, Q, C] @ query_w [C, H, D] -> y [B, Q, H, D], o [B, Q, H, D] @ output_w
 * [H, D, C] -> y [B, Q, C]). MF_ERR_INVALID naming op and the tensors otherwise. */
mf_status mf_linear_dims(const char *op, const mf_tensor *x, const char *xn, const mf_tensor *w,
                         const char *wn, const mf_tensor *y, const char *yn, int64_t *rows,
                         int64_t *in, int64_t *out);

/* b broadcasts over a's leading dims (mf_add, mf_mul): b's element count is the product of a's
 * last d dims for some d (d = 0: a scalar), so it repeats every numel(b) elements of a. */
mf_status mf_check_broadcast(const mf_tensor *a, const char *an, const mf_tensor *b,
                             const char *bn);

#endif
