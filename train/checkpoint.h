/* Training checkpoints: one HDF5 file per checkpoint holding everything a run needs to continue bit
 * for bit, written atomically (data/h5io.h: temporary file, fsync, rename) and verified on read.
 *
 * Layout (format "memfold-checkpoint", schema 1):
 *   /params, /adam_m, /adam_v, /ema   the parameters, Adam's moments and the EMA, each written by
 *                                     mf_param_store_write_h5_group (group /<g>/<scope>, dataset
 *                                     <name>, attribute param_index; chunked, shuffle + deflate +
 *                                     fletcher32); each group carries `num_params` and `crc32`
 *   root attributes: format, schema_version, step, optimizer_step, skipped_steps, rng_seed,
 *                    rng_counters[MF_CHECKPOINT_RNG_COUNTERS], loader_epoch, loader_position
 *                    (integers stored exactly as 64-bit), config (the mf_config_to_json text),
 *                    meta_crc32.
 * Checksums: HDF5's fletcher32 per chunk catches damaged data when it is read; on top, each group's
 * `crc32` (zlib CRC-32 over every entry's name, dims and raw f32 bytes, in order) and `meta_crc32`
 * (over the root attributes' canonical text and the config) catch damage anywhere else, and a
 * truncated file fails to open. A checkpoint that fails any check is refused with the file and the
 * reason.
 *
 * Files are RUN/ckpt-<step, 8 digits>.h5. mf_checkpoint_save_run writes one and then deletes older
 * ones beyond the newest `keep`. mf_checkpoint_find_latest (for --resume) returns the newest file
 * that passes mf_checkpoint_verify, naming each skipped file and why. */
#ifndef MF_TRAIN_CHECKPOINT_H
#define MF_TRAIN_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/status.h"
#include "model/config.h"
#include "model/param_store.h"
#include "train/optimizer.h"

#define MF_CHECKPOINT_FORMAT         "memfold-checkpoint"
#define MF_CHECKPOINT_SCHEMA_VERSION 1
#define MF_CHECKPOINT_RNG_COUNTERS   8
#define MF_CHECKPOINT_PREFIX         "ckpt-"
#define MF_CHECKPOINT_SUFFIX         ".h5"

/* The trainer's own state (the optimizer's counts come from mf_optimizer). */
typedef struct {
    int64_t step; /* training iterations completed (applied + skipped updates) */
    uint64_t rng_seed;
    /* Counter-based RNG (core/rng.h): whatever counters the trainer advances (stream indices,
     * draws of N_cycle, ...); stored and restored as they are. */
    uint64_t rng_counters[MF_CHECKPOINT_RNG_COUNTERS];
    int64_t loader_epoch, loader_position; /* the next sample the loader gives (data/loader.h) */
} mf_train_state;

/* Writes the checkpoint to `path` atomically. params and opt must share the layout (opt was
 * initialised on params). The counts must be consistent (step >= optimizer_step + skipped_steps,
 * loader position >= 0): otherwise MF_ERR_INVALID, as the reader would refuse the file. */
mf_status mf_checkpoint_save(const char *path, const mf_param_store *params,
                             const mf_optimizer *opt, const mf_train_state *state,
                             const mf_config *cfg);

/* Restores into a model and optimizer built from the same configuration: params must hold exactly
 * the checkpoint's names and shapes in the same order (e.g. freshly initialised from the config of
 * mf_checkpoint_read_config) and opt must have been initialised on params. Every byte of the
 * parameters, moments and EMA, the optimizer's counts and *state are restored; cfg_out (may be
 * NULL) receives the stored configuration. Every checksum is checked. On failure the contents of
 * params and opt are unspecified (verify first: mf_checkpoint_find_latest does). */
mf_status mf_checkpoint_load(const char *path, const mf_param_store *params, mf_optimizer *opt,
                             mf_train_state *state, mf_config *cfg_out);

/* The stored configuration (to build the model before mf_checkpoint_load). Checks format, schema
 * and meta_crc32. */
mf_status mf_checkpoint_read_config(const char *path, mf_config *cfg);

/* Everything mf_checkpoint_load checks, without a model: format, schema, the four groups (same
 * names and shapes in each), every dataset read (fletcher32), every crc32 and meta_crc32. On
 * failure the message (mf_last_error) gives the file and the reason. step (may be NULL) gets the
 * stored step. */
mf_status mf_checkpoint_verify(const char *path, int64_t *step);

/* RUN/ckpt-00001234.h5 into buf. */
mf_status mf_checkpoint_path(const char *run_dir, int64_t step, char *buf, size_t cap);

/* Checkpoints in run_dir by the step in their names, newest first (malloc'd arrays; free with
 * mf_checkpoint_list_free). Temporary files and other names are ignored. A missing directory is an
 * empty list. */
typedef struct {
    int count;
    int64_t *steps;
    char **paths;
} mf_checkpoint_list;
mf_status mf_checkpoint_list_run(const char *run_dir, mf_checkpoint_list *out);
void mf_checkpoint_list_free(mf_checkpoint_list *l);

/* Saves RUN/ckpt-<state->step>.h5 (creating run_dir if needed), then deletes the checkpoints of
 * lower step beyond the newest keep - 1 of them (keep <= 0 keeps all). Files of higher step (left
 * by an earlier, longer attempt) are not touched. path_out (may be NULL) receives the file name. */
mf_status mf_checkpoint_save_run(const char *run_dir, int keep, const mf_param_store *params,
                                 const mf_optimizer *opt, const mf_train_state *state,
                                 const mf_config *cfg, char *path_out, size_t path_cap);

/* The newest checkpoint of run_dir that verifies, into path (and its step into *step). Each newer
 * file that fails is reported on `log` (may be NULL) as "skipping <file>: <reason>". No valid
 * checkpoint: *found = false and MF_OK. */
mf_status mf_checkpoint_find_latest(const char *run_dir, FILE *log, char *path, size_t cap,
                                    int64_t *step, bool *found);

/* Deletes "ckpt-*.h5.tmp-*" files left in run_dir by writers that were killed (call before
 * resuming, when no other process writes to run_dir). Returns the number removed in *removed. */
mf_status mf_checkpoint_remove_stale_temps(const char *run_dir, int *removed);

/* SIGINT/SIGTERM: the handler only sets a flag; the trainer polls it after each step, writes a
 * checkpoint and stops. A second signal of the same kind restores the default action (so a
 * second Ctrl-C kills at once). */
mf_status mf_checkpoint_signals_install(void);
/* 0 when none arrived, else the signal number. */
int mf_checkpoint_signal_pending(void);

#endif
