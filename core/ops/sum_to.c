/*
 * sum_to.c: xt_sum_to, the inverse of broadcasting. The autograd engine calls it to bring a
 * gradient shaped like an op's (broadcast) output back to the shape of each input.
 *
 * x [..., s1, ..., sk] -> shape, where shape broadcasts to x's shape: leading dims missing
 * from shape and dims where shape has 1 are summed. float32 sums accumulate in double; int64
 * sums stay exact in int64. It runs on the reduction engine (reduce.h): vectorised and
 * parallel whether the summed dims lead (a bias gradient) or trail.
 */
#include "reduce.h"


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
    uint32_t mask = 0;
    for (int32_t d = 0; d < x->ndim; d++)
        if (d < lead || (kept[d] == 1 && x->shape[d] != 1)) mask |= 1u << d;

    xt_tensor *out = xt_empty(ndim, shape, x->dtype);
    if (!out) return NULL;
    int64_t n_out = xt_numel(out);
    xt_rplan plan;
    xt_tensor *src = xt_rplan_make(&plan, x, mask);
    xt_status st;
    if (!src) {
        st = xt_last_status();
    } else if (x->dtype == XT_INT64) {
        st = xt_rplan_run(&plan, &xt_rk_i64_sum, out->data, NULL);   /* int64 accumulators */
    } else {
        xt_storage *hold;
        double *acc = xt_scratch(n_out, &hold, "sum_to");
        st = acc ? xt_rplan_run(&plan, &xt_rk_f32_sum, acc, NULL) : xt_last_status();
        if (st == XT_OK) {
            float *po = out->data;
#pragma omp parallel for simd if (n_out > XT_PARALLEL_GRAIN)
            for (int64_t i = 0; i < n_out; i++) po[i] = (float)acc[i];
        }
        xt_storage_release(hold);
    }
    xt_tensor_release(src);
    if (st != XT_OK) {
        xt_tensor_release(out);
        return NULL;
    }
    return out;
}
