#include "core/status.h"

#include <stdio.h>
#include <string.h>

#define MF_MSG_CAP 8192 /* room for a listing of missing/unexpected parameter names */
static _Thread_local char mf_msg[MF_MSG_CAP];

mf_status mf_error(mf_status code, const char *file, int line, const char *fmt, ...)
{
    const char *base = strrchr(file, '/');
    int n = snprintf(mf_msg, MF_MSG_CAP, "%s:%d: ", base ? base + 1 : file, line);
    if (n < 0) n = 0;
    if (n < MF_MSG_CAP) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(mf_msg + n, MF_MSG_CAP - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return code;
}

mf_status mf_error_context(mf_status code, const char *fmt, ...)
{
    char prefix[MF_MSG_CAP], old[MF_MSG_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, mf_msg, sizeof old);
    size_t n = strlen(prefix);
    if (n > MF_MSG_CAP - 3) n = MF_MSG_CAP - 3;
    memcpy(mf_msg, prefix, n);
    memcpy(mf_msg + n, ": ", 2);
    size_t rest = MF_MSG_CAP - n - 3;
    size_t m = strnlen(old, rest);
    memcpy(mf_msg + n + 2, old, m);
    mf_msg[n + 2 + m] = '\0';
    return code;
}

const char *mf_last_error(void)
{
    return mf_msg[0] ? mf_msg : "no error message recorded";
}

void mf_clear_error(void)
{
    mf_msg[0] = '\0';
}

const char *mf_status_name(mf_status code)
{
    switch (code) {
    case MF_OK:
        return "ok";
    case MF_ERR_INVALID:
        return "invalid argument";
    case MF_ERR_NOMEM:
        return "out of memory";
    case MF_ERR_IO:
        return "I/O error";
    case MF_ERR_FORMAT:
        return "malformed input";
    case MF_ERR_BACKEND:
        return "backend error";
    case MF_ERR_UNSUPPORTED:
        return "not supported";
    case MF_ERR_NUMERIC:
        return "non-finite value";
    }
    return "unknown status";
}
