/* Helpers the subcommands share for parsing their arguments and sizing their arenas. */
#ifndef MF_APPS_CLI_H
#define MF_APPS_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/context.h"

/* A decimal integer >= lo, the whole string (no overflow); false otherwise. */
bool mf_cli_parse_i64(const char *s, int64_t lo, int64_t *out);
/* The machine's physical memory in bytes (16 GiB when the system does not say). */
size_t mf_cli_physical_memory(void);
/* gib GiB in bytes. */
size_t mf_cli_gib_bytes(double gib);

/* --device cuda: a GPU context for the trunk with its own arena of gib GiB (<= 0: 90% of the
 * free GPU memory) and the given policy. MF_ERR_UNSUPPORTED naming the reason (built without
 * CUDA, no driver or device). */
mf_status mf_cli_gpu_context(double gib, const mf_policy *policy, mf_arena *a, mf_ctx *g);

#endif
