/* Error handling: every fallible function returns mf_status and leaves a message that names what
 * failed (file:line of the check, the failing expression or the offending input). No exit() below
 * apps/. The message is thread-local so OpenMP workers and the loader thread do not clobber it. */
#ifndef MF_CORE_STATUS_H
#define MF_CORE_STATUS_H

#include <stdarg.h>

typedef enum {
    MF_OK = 0,
    MF_ERR_INVALID,     /* bad argument, shape or dtype mismatch */
    MF_ERR_NOMEM,       /* arena or system allocation could not be satisfied */
    MF_ERR_IO,          /* a file could not be read or written */
    MF_ERR_FORMAT,      /* malformed input file */
    MF_ERR_BACKEND,     /* oneDNN, CUDA, cuBLAS, HDF5, MPI or NCCL reported an error */
    MF_ERR_UNSUPPORTED, /* not implemented or not compiled in */
    MF_ERR_NUMERIC,     /* NaN / Inf where a finite number is required */
} mf_status;

/* Sets the thread's message ("file:line: text") and returns code, so callers write
 * `return MF_ERROR(MF_ERR_INVALID, "shape %d", n);`. */
mf_status mf_error(mf_status code, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Prefixes context to the current message ("reading x.h5: <old message>") and returns code. */
mf_status mf_error_context(mf_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
const char *mf_last_error(void);
const char *mf_status_name(mf_status code);
void mf_clear_error(void);

#define MF_ERROR(code, ...) mf_error((code), __FILE__, __LINE__, __VA_ARGS__)

/* Propagate a failure from a callee. */
#define MF_TRY(expr)                                                                               \
    do {                                                                                           \
        mf_status mf_try_s_ = (expr);                                                              \
        if (mf_try_s_ != MF_OK) return mf_try_s_;                                                  \
    } while (0)

/* Propagate through a cleanup label: needs `mf_status st` and a `cleanup:` label in scope. */
#define MF_TRY_GOTO(expr)                                                                          \
    do {                                                                                           \
        st = (expr);                                                                               \
        if (st != MF_OK) goto cleanup;                                                             \
    } while (0)

/* Argument checks with the failing condition in the message. */
#define MF_REQUIRE(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) return mf_error(MF_ERR_INVALID, __FILE__, __LINE__, __VA_ARGS__);             \
    } while (0)

/* HDF5: negative return values are failures. */
#define MF_H5_CHECK(expr)                                                                          \
    do {                                                                                           \
        if ((long long)(expr) < 0)                                                                 \
            return mf_error(MF_ERR_BACKEND, __FILE__, __LINE__, "HDF5 call failed: %s", #expr);    \
    } while (0)

/* MPI: anything but MPI_SUCCESS (0) is a failure. */
#define MF_MPI_CHECK(expr)                                                                         \
    do {                                                                                           \
        int mf_mpi_rc_ = (expr);                                                                   \
        if (mf_mpi_rc_ != 0)                                                                       \
            return mf_error(MF_ERR_BACKEND, __FILE__, __LINE__, "MPI call failed (%d): %s",        \
                            mf_mpi_rc_, #expr);                                                    \
    } while (0)

#endif
