/*
 * sum_to.c: xt_sum_to, the inverse of broadcasting. The autograd engine calls it to bring a
 * gradient shaped like an op's (broadcast) output back to the shape of each input.
 *
 * x [..., s1, ..., sk] -> shape, where shape broadcasts to x's shape: leading dims missing
 * from shape and dims where shape has 1 are summed. float32 sums accumulate in double.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

xt_tensor *xt_sum_to(xt_tensor *x, int32_t ndim, const int64_t *shape)
{
    if (!x) return xt_fail_null(XT_ERR_ARG, "sum_to: input is NULL");
    if (ndim < 0 || ndim > x->ndim || (ndim > 0 && !shape))
        return xt_fail_null(XT_ERR_ARG, "sum_to: cannot sum a %d-dim tensor to %d dims",
                            x->ndim, ndim);
    if (x->dtype == XT_UINT8)
        return xt_fail_null(XT_ERR_DTYPE, "sum_to: expected float32 or int64, got uint8");
    int32_t lead = x->ndim - ndim;
    int64_t kept[XT_MAX_DIMS];   /* target shape aligned to x's dims (1 where summed) */
    for (int32_t d = 0; d < x->ndim; d++) {
        kept[d] = d < lead ? 1 : shape[d - lead];
        if (kept[d] != x->shape[d] && kept[d] != 1) {
            char a[XT_SHAPE_STR], b[XT_SHAPE_STR];
            return xt_fail_null(XT_ERR_SHAPE, "sum_to: shape %s does not broadcast to %s",
                                xt_shape_str(a, ndim, shape), xt_shape_str(b, x->ndim, x->shape));
        }
    }
    int64_t out_numel = xt_shape_numel(ndim, shape);
    double *acc = calloc((size_t)(out_numel > 0 ? out_numel : 1), sizeof *acc);
    if (!acc) return xt_fail_null(XT_ERR_OOM, "sum_to: out of memory");

    /* Walk x in its own order; the accumulator is seen through x's shape with stride 0 on
     * the summed dims. */
    int64_t strides[2][XT_MAX_DIMS];
    int64_t acc_strides[XT_MAX_DIMS];
    xt_set_contiguous_strides(x->ndim, kept, acc_strides);
    for (int32_t d = 0; d < x->ndim; d++) {
        strides[0][d] = kept[d] == 1 ? 0 : acc_strides[d];
        strides[1][d] = x->strides[d];
    }
    if (xt_numel(x) > 0) {
        xt_iter it;
        xt_iter_init(&it, 2, x->ndim, x->shape, strides);
        int64_t sa = it.strides[0][it.ndim - 1], sx = it.strides[1][it.ndim - 1];
        for (int64_t o = 0; o < it.outer; o++) {
            int64_t off[2];
            xt_iter_offsets(&it, o, off);
            double *a = acc + off[0];
            if (x->dtype == XT_FLOAT32) {
                const float *px = (const float *)x->data + off[1];
                if (sa == 0) {
                    double s = 0;
                    for (int64_t i = 0; i < it.inner; i++) s += px[i * sx];
                    a[0] += s;
                } else {
                    for (int64_t i = 0; i < it.inner; i++) a[i * sa] += px[i * sx];
                }
            } else {
                const int64_t *px = (const int64_t *)x->data + off[1];
                for (int64_t i = 0; i < it.inner; i++) a[i * sa] += (double)px[i * sx];
            }
        }
    }
    xt_tensor *out = xt_empty(ndim, shape, x->dtype);
    if (out) {
        if (x->dtype == XT_FLOAT32) {
            float *po = out->data;
            for (int64_t i = 0; i < out_numel; i++) po[i] = (float)acc[i];
        } else {
            int64_t *po = out->data;
            for (int64_t i = 0; i < out_numel; i++) po[i] = (int64_t)acc[i];
        }
    }
    free(acc);
    return out;
}
