/* Helpers the subcommands share for parsing their arguments and sizing their arenas. */
#ifndef MF_APPS_CLI_H
#define MF_APPS_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A decimal integer >= lo, the whole string (no overflow); false otherwise. */
bool mf_cli_parse_i64(const char *s, int64_t lo, int64_t *out);
/* The machine's physical memory in bytes (16 GiB when the system does not say). */
size_t mf_cli_physical_memory(void);
/* gib GiB in bytes. */
size_t mf_cli_gib_bytes(double gib);

#endif
