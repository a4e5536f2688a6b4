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
#include <omp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A scaled denominator below this is recomputed with the output's own maximum. Above
 * it, terms lost to float underflow (< 1e-38 each) are negligible against it. */
#define AFT_TINY 1e-20f
#define AFT_LOG_TINY (-46.0517f) /* log(AFT_TINY) */

/* exp and log that vectorise under `omp simd` (glibc's expf/logf only do with
 * -ffast-math, which the kernels cannot use: they rely on infinities). Cephes' float
 * polynomials: relative error below 2e-7 (tests/c/test_aft.c measures them).
 * aft_exp: exact 0 below -87.3 (results under FLT_MIN are flushed, which the kernels'
 * AFT_TINY threshold accounts for), +inf above 88.7, NaN passes through.
 * aft_log: for positive normal x (the kernels only take logs of sums >= AFT_TINY). */
static inline float aft_bits_to_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t aft_float_to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* e^r for x = n ln 2 + r, |r| <= ln 2 / 2, with n = rint(x / ln 2) (x - n ln 2 in two parts) */
static inline float aft_exp_reduced(float x, float n)
{
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    return p * r * r + r + 1.0f;
}

static inline float aft_exp(float x)
{
    float xc = x < -87.3365f ? -87.3365f : x > 88.7228f ? 88.7228f : x;
    float n = __builtin_rintf(xc * 1.44269504088896341f); /* -126 .. 128 */
    float p = aft_exp_reduced(xc, n);
    float top = n > 127.0f ? 2.0f : 1.0f; /* 2^128 is out of range: 2^127 * 2 */
    float n1 = n > 127.0f ? 127.0f : n;
    float y = p * top * aft_bits_to_float((uint32_t)((int32_t)n1 + 127) << 23);
    y = x < -87.3365f ? 0.0f : y;
    y = x > 88.7228f ? INFINITY : y;
    return x != x ? x : y;
}

/* aft_exp for x <= 0 (and -inf, NaN), the arguments -|d| of the scans and the gate: with no
 * overflow to handle, a few operations fewer per element in the kernels' hottest loops.
 * The same polynomial, so the same values as aft_exp there. */
static inline float aft_exp_neg(float x)
{
    float xc = x < -87.3365f ? -87.3365f : x;
    float n = __builtin_rintf(xc * 1.44269504088896341f); /* -126 .. 0 */
    float y = aft_exp_reduced(xc, n) * aft_bits_to_float((uint32_t)((int32_t)n + 127) << 23);
    y = x < -87.3365f ? 0.0f : y;
    return x != x ? x : y;
}

static inline float aft_log(float x)
{
    uint32_t u = aft_float_to_bits(x);
    float e = (float)((int32_t)(u >> 23) - 126);
    float m = aft_bits_to_float((u & 0x007fffffu) | 0x3f000000u); /* x = m 2^e, m in [0.5,1) */
    bool small = m < 0.707106781186547524f;
    e = small ? e - 1.0f : e;
    m = small ? m + m - 1.0f : m - 1.0f;
    float z = m * m;
    float y = 7.0376836292e-2f;
    y = y * m - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    y = y * m * z;
    y += e * -2.12194440e-4f;
    y += -0.5f * z;
    return m + y + e * 0.693359375f;
}

/* sigmoid without overflow for any x; vectorises. */
static inline float aft_sigmoid(float x)
{
    float e = aft_exp_neg(-fabsf(x));
    float s = 1.0f / (1.0f + e);
    return x >= 0 ? s : e * s;
}

/* max(init, x[0..n)): 16 independent maxima, so that the loop vectorises (one running max
 * is a chain the compiler keeps scalar). */
static inline float aft_max(const float *x, int64_t n, float init)
{
    float lane[16], m = init;
    int64_t j = 0;
    for (int l = 0; l < 16; l++) lane[l] = init;
    for (; j + 16 <= n; j += 16)
#pragma omp simd
        for (int l = 0; l < 16; l++) lane[l] = x[j + l] > lane[l] ? x[j + l] : lane[l];
    for (; j < n; j++) m = x[j] > m ? x[j] : m;
    for (int l = 0; l < 16; l++) m = lane[l] > m ? lane[l] : m;
    return m;
}

/* n floats of scratch from the tensor allocator (whose block cache spares the page faults
 * of fresh large buffers); *holder owns them. NULL with the error set on failure. */
static inline float *aft_buffer(xt_tensor **holder, int64_t n)
{
    if (n < 1) n = 1;
    *holder = xt_empty(1, &n, XT_FLOAT32);
    return *holder ? (float *)(*holder)->data : NULL;
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

/* Passes over time go one task per batch item and group of channels, each task scanning
 * whole rows of its channels in time order. Wide groups stream from memory far better than
 * narrow ones, whose rows of [T,D] lie on a new page every few steps (where hardware
 * prefetching stops). The width of a group (at most AFT_GROUP, a multiple of 16 when it is
 * not all of D) gives at least as many tasks as threads and a multiple of them when it can. */
enum { AFT_GROUP = 256 };

static inline int64_t aft_group_width(int64_t B, int64_t D)
{
    int64_t nt = omp_get_max_threads(), g = (nt + B - 1) / B;
    if (g < (D + AFT_GROUP - 1) / AFT_GROUP) g = (D + AFT_GROUP - 1) / AFT_GROUP;
    while ((B * g) % nt != 0 && g < 4 * nt && g < D) g++;
    int64_t width = (D + g - 1) / g;
    if (width < D) width = (width + 15) / 16 * 16;
    return width < D ? width : D;
}

/* Asks for n floats at x to be brought into cache ahead of use: the next channel's planes
 * while aft_conv works on this one (short bursts of streaming reads that the hardware
 * prefetcher picks up late), the rows aft_simple's backward scan reads next. */
static inline void aft_prefetch(const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i += 16) __builtin_prefetch(x + i, 0, 3);
}

/* The same for n floats about to be written (their lines fetched for ownership early). */
static inline void aft_prefetch_out(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i += 16) __builtin_prefetch(x + i, 1, 3);
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
