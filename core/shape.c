/* shape.c: dims, broadcasting and the strided iterator shared by all kernels. */
#include "internal.h"

#include <string.h>

xt_status xt_norm_dim(int32_t *dim, int32_t ndim, const char *op)
{
    int32_t d = *dim;
    int32_t n = ndim > 0 ? ndim : 1;  /* a 0-d tensor accepts dim 0 and -1 */
    if (d < -n || d >= n)
        return xt_fail(XT_ERR_ARG, "%s: dim %lld out of range for a %d-d tensor", op,
                       (long long)(d >= 0 ? xt_shown(d) : d), ndim);
    *dim = d < 0 ? d + n : d;
    return XT_OK;
}

xt_status xt_broadcast_shapes(int32_t an, const int64_t *as, int32_t bn, const int64_t *bs,
                              int32_t *out_ndim, int64_t *out_shape, const char *op)
{
    int32_t n = an > bn ? an : bn;
    for (int32_t i = 0; i < n; i++) {
        int32_t ia = an - n + i, ib = bn - n + i;
        int64_t sa = ia >= 0 ? as[ia] : 1, sb = ib >= 0 ? bs[ib] : 1;
        if (sa != sb && sa != 1 && sb != 1) {
            char ba[XT_SHAPE_STR], bb[XT_SHAPE_STR];
            return xt_fail(XT_ERR_SHAPE, "%s: shapes %s and %s cannot broadcast", op,
                           xt_shape_str(ba, an, as), xt_shape_str(bb, bn, bs));
        }
        out_shape[i] = sa == 1 ? sb : sa;
    }
    *out_ndim = n;
    return XT_OK;
}

void xt_broadcast_strides(const xt_tensor *t, int32_t ndim, const int64_t *shape, int64_t *strides)
{
    for (int32_t i = 0; i < ndim; i++) {
        int32_t it = t->ndim - ndim + i;
        strides[i] = (it >= 0 && t->shape[it] == shape[i] && shape[i] != 1) ? t->strides[it] : 0;
    }
}

bool xt_same_shape(const xt_tensor *a, const xt_tensor *b)
{
    if (a->ndim != b->ndim) return false;
    for (int32_t i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

double xt_get_as_double(const xt_tensor *t, const int64_t *index)
{
    int64_t off = 0;
    for (int32_t i = 0; i < t->ndim; i++) off += index[i] * t->strides[i];
    switch (t->dtype) {
    case XT_FLOAT32: return ((const float *)t->data)[off];
    case XT_INT64: return (double)((const int64_t *)t->data)[off];
    default: return ((const uint8_t *)t->data)[off];
    }
}

void xt_iter_init(xt_iter *it, int32_t nops, int32_t ndim, const int64_t *shape,
                  int64_t strides[][XT_MAX_DIMS])
{
    it->nops = nops;
    /* Drop size-1 dims, then merge neighbours that are contiguous for every operand. */
    int32_t n = 0;
    int64_t sh[XT_MAX_DIMS], st[XT_ITER_MAX_OPS][XT_MAX_DIMS];
    for (int32_t i = 0; i < ndim; i++) {
        if (shape[i] == 1) continue;
        sh[n] = shape[i];
        for (int32_t k = 0; k < nops; k++) st[k][n] = strides[k][i];
        n++;
    }
    if (n == 0) {
        sh[0] = xt_shape_numel(ndim, shape) == 0 ? 0 : 1;
        for (int32_t k = 0; k < nops; k++) st[k][0] = 0;
        n = 1;
    }
    int32_t m = 0;
    it->shape[0] = sh[0];
    for (int32_t k = 0; k < nops; k++) it->strides[k][0] = st[k][0];
    for (int32_t i = 1; i < n; i++) {
        bool merge = true;
        for (int32_t k = 0; k < nops; k++)
            if (it->strides[k][m] != st[k][i] * sh[i]) merge = false;
        if (merge) {
            it->shape[m] *= sh[i];
            for (int32_t k = 0; k < nops; k++) it->strides[k][m] = st[k][i];
        } else {
            m++;
            it->shape[m] = sh[i];
            for (int32_t k = 0; k < nops; k++) it->strides[k][m] = st[k][i];
        }
    }
    it->ndim = m + 1;
    it->inner = it->shape[m];
    it->outer = 1;
    for (int32_t i = 0; i < m; i++) it->outer *= it->shape[i];
}

void xt_iter_offsets(const xt_iter *it, int64_t o, int64_t *offsets)
{
    for (int32_t k = 0; k < it->nops; k++) offsets[k] = 0;
    for (int32_t i = it->ndim - 2; i >= 0; i--) {
        int64_t idx = o % it->shape[i];
        o /= it->shape[i];
        for (int32_t k = 0; k < it->nops; k++) offsets[k] += idx * it->strides[k][i];
    }
}
