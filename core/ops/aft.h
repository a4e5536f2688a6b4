/*
 * aft.h: what the four AFT kernels (aft_full.c, aft_local.c, aft_simple.c, aft_conv.c)
 * share: the sigmoid gate, input checks, scratch buffers and the position-bias engine
 * that AFT-full and AFT-local both run on. Maths: shared/research/aft.md.
 *
 * Stability, common to all four: keys enter as E = exp(K - m) with m a max over the
 * keys, biases as exp(w - r) with r a max over the biases a query sees, so no exp
 * argument is positive. The offsets cancel between numerator and denominator. When
 * they are far from the maximum of K + w for one output (keys or biases spanning more
 * than exp's range), the scaled denominator underflows; such an output (rare) is
 * recomputed directly with its own exact maximum, forward and backward. The forward
 * saves log(denominator) relative to the offsets, which the backward reads back to
 * tell those outputs apart.
 */
#ifndef XT_OPS_AFT_H
#define XT_OPS_AFT_H

#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A scaled denominator below this is recomputed with the output's own maximum. Above
 * it, terms lost to float underflow (< 1e-38 each) are negligible against it. */
#define AFT_TINY 1e-20f
#define AFT_LOG_TINY (-46.0517f) /* log(AFT_TINY) */

/* sigmoid without overflow for any x; vectorises (one exp, a select). */
static inline float aft_sigmoid(float x)
{
    float e = expf(-fabsf(x));
    float s = 1.0f / (1.0f + e);
    return x >= 0 ? s : e * s;
}

/* t as a contiguous tensor (+1), copied outside the graph (the node stays on t). */
static inline xt_tensor *aft_dense(xt_tensor *t)
{
    int32_t prev = xt_set_grad_enabled(0);
    xt_tensor *c = xt_contiguous(t);
    xt_set_grad_enabled(prev);
    return c;
}

/* t (named name) must be float32 of exactly the given shape. */
static inline xt_status aft_check_shape(const char *op, const char *name, const xt_tensor *t,
                                        int32_t ndim, const int64_t *shape, const char *what)
{
    char a[XT_SHAPE_STR], b[XT_SHAPE_STR];
    if (!t) return xt_fail(XT_ERR_ARG, "%s: %s is NULL", op, name);
    if (t->dtype != XT_FLOAT32)
        return xt_fail(XT_ERR_DTYPE, "%s: expected float32 %s, got %s", op, name,
                       xt_dtype_name(t->dtype));
    if (t->ndim != ndim || memcmp(t->shape, shape, sizeof(int64_t) * (size_t)ndim) != 0)
        return xt_fail(XT_ERR_SHAPE, "%s: expected %s of shape %s (%s), got %s", op, name,
                       xt_shape_str(a, ndim, shape), what, xt_shape_str(b, t->ndim, t->shape));
    return XT_OK;
}

/* q, k, v: float32 [B,T,D], non-empty, all of q's shape. */
static inline xt_status aft_check_qkv(const char *op, const xt_tensor *q, const xt_tensor *k,
                                      const xt_tensor *v)
{
    char a[XT_SHAPE_STR];
    if (!q) return xt_fail(XT_ERR_ARG, "%s: q is NULL", op);
    if (q->dtype != XT_FLOAT32)
        return xt_fail(XT_ERR_DTYPE, "%s: expected float32 q, got %s", op,
                       xt_dtype_name(q->dtype));
    if (q->ndim != 3 || xt_numel(q) == 0)
        return xt_fail(XT_ERR_SHAPE, "%s: expected q of shape [B,T,D] (3 dims, non-empty), got %s",
                       op, xt_shape_str(a, q->ndim, q->shape));
    if (aft_check_shape(op, "k", k, 3, q->shape, "the shape of q") ||
        aft_check_shape(op, "v", v, 3, q->shape, "the shape of q"))
        return xt_last_status();
    return XT_OK;
}

/* n floats of scratch (64-byte aligned), or NULL with an out-of-memory error naming op. */
static inline float *aft_alloc(int64_t n, const char *op)
{
    size_t bytes = ((size_t)(n > 0 ? n : 1) * sizeof(float) + 63) & ~(size_t)63;
    float *p = aligned_alloc(64, bytes);
    if (!p) xt_fail(XT_ERR_OOM, "%s: out of memory (%lld floats of scratch)", op, (long long)n);
    return p;
}

static inline void aft_release(int32_t n, xt_tensor **ts)
{
    for (int32_t i = 0; i < n; i++) xt_tensor_release(ts[i]);
}

/* AFT with a position bias w [T,T] restricted to a window (aft_local.c):
 *   y[b,t,c] = sigmoid(q[b,t,c]) * sum_t' exp(k[b,t',c] + w'[t,t']) v[b,t',c]
 *                                  / sum_t' exp(k[b,t',c] + w'[t,t'])
 * over t' <= t when causal, else all t', with w' = w inside the window (|t - t'| < window,
 * and t - t' < window when causal) and 0 outside it. window >= T is AFT-full. Records the
 * node (named op) when an input needs grad. */
xt_tensor *aft_bias_attention(const char *op, xt_tensor *q, xt_tensor *k, xt_tensor *v,
                              xt_tensor *w, int64_t window, int32_t causal);

#endif
