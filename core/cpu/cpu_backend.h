/* Internal CPU backend API (core/cpu): oneDNN matmul with a primitive cache and user-managed
 * scratchpad from the arena. Not for model code: use core/ops.h. */
#ifndef MF_CORE_CPU_CPU_BACKEND_H
#define MF_CORE_CPU_CPU_BACKEND_H

#include "core/context.h"

#endif
