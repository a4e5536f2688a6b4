/*
 * attn_args.c: the argument checks every q, k, v attention op shares (sdpa and its block-sparse
 * patterns, linear attention), so that they reject bad input with the same words.
 */
#include "internal.h"

/* q [...,T,f], k [...,S,f], v [...,S,dv], float32, the same leading dims, S > 0 and feature
 * widths > 0; feature names f in the messages ('d' for softmax attention, 'm' for the feature
 * maps of linear attention). */
xt_status xt_check_qkv(const char *op, const xt_tensor *q, const xt_tensor *k, const xt_tensor *v,
                       char feature)
{
    const xt_tensor *ts[3] = {q, k, v};
    const char *names[3] = {"q", "k", "v"};
    for (int i = 0; i < 3; i++) {
        if (!ts[i]) return xt_fail(XT_ERR_ARG, "%s: %s is NULL", op, names[i]);
        if (ts[i]->dtype != XT_FLOAT32)
            return xt_fail(XT_ERR_DTYPE, "%s: expected float32 %s, got %s", op, names[i],
                           xt_dtype_name(ts[i]->dtype));
    }
    char a[XT_SHAPE_STR], b[XT_SHAPE_STR], c[XT_SHAPE_STR];
    xt_shape_str(a, q->ndim, q->shape);
    xt_shape_str(b, k->ndim, k->shape);
    xt_shape_str(c, v->ndim, v->shape);
    if (q->ndim < 2 || k->ndim != q->ndim || v->ndim != q->ndim)
        return xt_fail(XT_ERR_SHAPE,
                       "%s: expected q [...,T,%c], k [...,S,%c], v [...,S,dv] with the same number "
                       "of dims (e.g. [B,H,T,d]), got q %s, k %s, v %s", op, feature, feature, a,
                       b, c);
    int32_t nd = q->ndim;
    for (int32_t i = 0; i < nd - 2; i++)
        if (k->shape[i] != q->shape[i] || v->shape[i] != q->shape[i])
            return xt_fail(XT_ERR_SHAPE,
                           "%s: q, k and v must have the same leading dims (batch, heads), got "
                           "q %s, k %s, v %s (dim %lld differs)", op, a, b, c,
                           (long long)xt_shown(i));
    int64_t S = k->shape[nd - 2];
    if (k->shape[nd - 1] != q->shape[nd - 1])
        return xt_fail(XT_ERR_SHAPE, "%s: q and k must have the same last dim %c, got q %s and k %s",
                       op, feature, a, b);
    if (v->shape[nd - 2] != S)
        return xt_fail(XT_ERR_SHAPE,
                       "%s: k and v must have the same length S (dim %lld), got k %s and v %s",
                       op, (long long)xt_shown(nd - 2), b, c);
    if (q->shape[nd - 1] == 0 || v->shape[nd - 1] == 0)
        return xt_fail(XT_ERR_SHAPE, "%s: the feature dims must be > 0, got q %s and v %s", op,
                       a, c);
    if (S == 0) return xt_fail(XT_ERR_SHAPE, "%s: k and v have no keys (S = 0): k %s", op, b);
    return XT_OK;
}
