/* unit_rows.c: batched operands read in place (see unit_rows.h). */
#include "unit_rows.h"

#include <stdlib.h>

static bool readable_in_place(const xt_tensor *t)
{
    int32_t nd = t->ndim;
    int64_t rows = t->shape[nd - 2], width = t->shape[nd - 1];
    if (width > 1 && t->strides[nd - 1] != 1) return false;
    if (rows > 1 && t->strides[nd - 2] < width) return false;
    for (int32_t i = 0; i < nd - 2; i++)
        if (t->strides[i] < 0) return false;
    return true;
}

xt_tensor *xt_unit_rows_readable(xt_tensor *t)
{
    if (readable_in_place(t)) {
        xt_tensor_retain(t);
        return t;
    }
    int32_t prev = xt_set_grad_enabled(0);
    xt_tensor *c = xt_contiguous(t);
    xt_set_grad_enabled(prev);
    return c;
}

xt_status xt_unit_rows_of(const xt_tensor *t, int64_t units, xt_unit_rows *r, const char *op)
{
    int32_t nd = t->ndim;
    int64_t rows = t->shape[nd - 2], width = t->shape[nd - 1];
    r->data = t->data;
    r->ld = rows > 1 ? t->strides[nd - 2] : width;
    r->off = malloc(sizeof(int64_t) * (size_t)(units > 0 ? units : 1));
    if (!r->off) return xt_fail(XT_ERR_OOM, "%s: out of memory", op);
    for (int64_t n = 0; n < units; n++) {
        int64_t rest = n, off = 0;
        for (int32_t i = nd - 3; i >= 0; i--) {
            off += (rest % t->shape[i]) * t->strides[i];
            rest /= t->shape[i];
        }
        r->off[n] = off;
    }
    return XT_OK;
}

void xt_unit_rows_free(xt_unit_rows *r)
{
    free(r->off);
    r->off = NULL;
}
