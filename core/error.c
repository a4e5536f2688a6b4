/* error.c: the thread-local error slot behind xt_last_error. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

enum { XT_ERROR_LEN = 1024 };

static _Thread_local char error_message[XT_ERROR_LEN];
static _Thread_local xt_status error_status;

const char *xt_last_error(void) { return error_message; }
xt_status xt_last_status(void) { return error_status; }

void xt_clear_error(void)
{
    error_message[0] = '\0';
    error_status = XT_OK;
}

static void set_error(xt_status status, const char *fmt, va_list ap)
{
    vsnprintf(error_message, sizeof error_message, fmt, ap);
    error_status = status;
}

xt_status xt_fail(xt_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_error(status, fmt, ap);
    va_end(ap);
    return status;
}

void *xt_fail_null(xt_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_error(status, fmt, ap);
    va_end(ap);
    return NULL;
}

void xt_error_prefix(const char *prefix)
{
    char old[XT_ERROR_LEN];
    memcpy(old, error_message, sizeof old);
    snprintf(error_message, sizeof error_message, "%s%s", prefix, old);
}

const char *xt_shape_str(char *buf, int32_t ndim, const int64_t *shape)
{
    int pos = snprintf(buf, XT_SHAPE_STR, "[");
    for (int32_t i = 0; i < ndim && pos < XT_SHAPE_STR - 24; i++)
        pos += snprintf(buf + pos, (size_t)(XT_SHAPE_STR - pos), i ? ",%lld" : "%lld",
                        (long long)shape[i]);
    snprintf(buf + pos, (size_t)(XT_SHAPE_STR - pos), "]");
    return buf;
}
