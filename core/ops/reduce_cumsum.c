/*
 * reduce_cumsum.c: cumsum along a dim, forward and backward (the backward is the same
 * scan run from the end: dx[i] = sum of dy[j] for j >= i).
 *
 * x is made contiguous and seen as [outer, D, inner]. inner > 1: a block of neighbouring
 * columns is scanned together, one contiguous run per step along D, which vectorises.
 * inner == 1: each row is a sequential scan, rows shared among threads; a few long rows
 * are cut into chunks (sum each chunk, add up the chunk offsets, scan each chunk from its
 * offset), with the cut decided by the shape so the result is the same on any number of
 * threads. float32 accumulates in double; int64 in int64 (wrapping); uint8 gives int64.
 */
#include "reduce.h"

#include <stdlib.h>

/* y[i] = start + x[0] + ... + x[i] (reverse: + x[i] + ... + x[n-1]) */
static void f32_scan_run(const float *x, float *y, int64_t n, double start, bool reverse)
{
    double acc = start;
    if (reverse)
        for (int64_t i = n - 1; i >= 0; i--) y[i] = (float)(acc += x[i]);
    else
        for (int64_t i = 0; i < n; i++) y[i] = (float)(acc += x[i]);
}

static void i64_scan_run(const int64_t *x, int64_t *y, int64_t n, uint64_t start, bool reverse)
{
    uint64_t acc = start;
    if (reverse)
        for (int64_t i = n - 1; i >= 0; i--) y[i] = (int64_t)(acc += (uint64_t)x[i]);
    else
        for (int64_t i = 0; i < n; i++) y[i] = (int64_t)(acc += (uint64_t)x[i]);
}

static xt_status scan_rows(const void *x, void *y, bool f32, int64_t outer, int64_t D,
                           bool reverse)
{
    int64_t nch = xt_reduce_chunks(outer, D, D), esize = f32 ? 4 : 8;
    /* offsets[t]: what the scan of chunk t (= row * nch + c) starts from */
    int64_t *offsets = nch > 1 ? malloc(sizeof(int64_t) * (size_t)(outer * nch)) : NULL;
    if (nch > 1 && !offsets) return xt_fail(XT_ERR_OOM, "cumsum: out of memory");
    if (nch > 1) {
#pragma omp parallel for schedule(static)
        for (int64_t t = 0; t < outer * nch; t++) {
            int64_t o = t / nch, c = t % nch, lo = D * c / nch, hi = D * (c + 1) / nch;
            const char *p = (const char *)x + (o * D + lo) * esize;
            if (f32) {
                double s = 0;
                xt_rk_f32_sum.row(&s, p, hi - lo, NULL);
                ((double *)offsets)[t] = s;
            } else {
                offsets[t] = 0;
                xt_rk_i64_sum.row(offsets + t, p, hi - lo, NULL);
            }
        }
        for (int64_t o = 0; o < outer; o++) {
            double fs = 0;
            uint64_t is = 0;
            for (int64_t k = 0; k < nch; k++) {
                int64_t t = o * nch + (reverse ? nch - 1 - k : k);
                if (f32) {
                    double s = ((double *)offsets)[t];
                    ((double *)offsets)[t] = fs;
                    fs += s;
                } else {
                    uint64_t s = (uint64_t)offsets[t];
                    offsets[t] = (int64_t)is;
                    is += s;
                }
            }
        }
    }
    int64_t tasks = outer * nch;
#pragma omp parallel for schedule(static) if (outer * D > XT_PARALLEL_GRAIN && tasks > 1)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t o = t / nch, c = t % nch, lo = D * c / nch, hi = D * (c + 1) / nch;
        int64_t at = (o * D + lo) * esize;
        if (f32)
            f32_scan_run((const float *)((const char *)x + at), (float *)((char *)y + at),
                         hi - lo, offsets ? ((double *)offsets)[t] : 0.0, reverse);
        else
            i64_scan_run((const int64_t *)((const char *)x + at), (int64_t *)((char *)y + at),
                         hi - lo, offsets ? (uint64_t)offsets[t] : 0, reverse);
    }
    free(offsets);
    return XT_OK;
}

static void scan_columns(const void *x, void *y, bool f32, int64_t outer, int64_t D,
                         int64_t inner, bool reverse)
{
    int64_t w = xt_reduce_col_width(outer, inner), ncb = (inner + w - 1) / w;
#pragma omp parallel for schedule(static) if (outer * D * inner > XT_PARALLEL_GRAIN)
    for (int64_t t = 0; t < outer * ncb; t++) {
        int64_t ou = t / ncb, c0 = t % ncb * w;
        int64_t n = inner - c0 < w ? inner - c0 : w;
        int64_t first = ou * D * inner + c0;
        if (f32) {
            double acc[XT_RED_COL_BLOCK] = {0};
            for (int64_t k = 0; k < D; k++) {
                int64_t at = first + (reverse ? D - 1 - k : k) * inner;
                const float *p = (const float *)x + at;
                float *q = (float *)y + at;
                for (int64_t j = 0; j < n; j++) q[j] = (float)(acc[j] += p[j]);
            }
        } else {
            uint64_t acc[XT_RED_COL_BLOCK] = {0};
            for (int64_t k = 0; k < D; k++) {
                int64_t at = first + (reverse ? D - 1 - k : k) * inner;
                const uint64_t *p = (const uint64_t *)x + at;
                int64_t *q = (int64_t *)y + at;
                for (int64_t j = 0; j < n; j++) q[j] = (int64_t)(acc[j] += p[j]);
            }
        }
    }
}

/* y = scan of the contiguous x (same shape and dtype, float32 or int64) along dim. */
static xt_status scan(const xt_tensor *x, xt_tensor *y, int32_t dim, bool reverse)
{
    int64_t outer = 1, D = x->ndim > 0 ? x->shape[dim] : 1, inner = 1;
    for (int32_t d = 0; d < dim; d++) outer *= x->shape[d];
    for (int32_t d = dim + 1; d < x->ndim; d++) inner *= x->shape[d];
    if (outer * D * inner == 0) return XT_OK;
    bool f32 = x->dtype == XT_FLOAT32;
    if (inner == 1) return scan_rows(x->data, y->data, f32, outer, D, reverse);
    scan_columns(x->data, y->data, f32, outer, D, inner, reverse);
    return XT_OK;
}

/* iargs: 0 dim */
static xt_status cumsum_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *dy = xt_dense(dout);
    xt_tensor *dx = dy ? xt_empty(dy->ndim, dy->shape, XT_FLOAT32) : NULL;
    xt_status st = dx ? scan(dy, dx, (int32_t)node->iargs[0], true) : xt_last_status();
    xt_tensor_release(dy);
    if (st != XT_OK) {
        xt_tensor_release(dx);
        return st;
    }
    dinputs[0] = dx;
    return XT_OK;
}

xt_tensor *xt_cumsum(xt_tensor *x, int32_t dim)
{
    if (!x) return xt_fail_null(XT_ERR_ARG, "cumsum: input is NULL");
    if (xt_norm_dim(&dim, x->ndim, "cumsum") != XT_OK) return NULL;
    int32_t dtype = x->dtype == XT_FLOAT32 ? XT_FLOAT32 : XT_INT64;
    xt_tensor *xin = x->dtype == dtype ? (xt_tensor_retain(x), x) : xt_to_dtype(x, dtype);
    xt_tensor *xc = xin ? xt_dense(xin) : NULL;
    xt_tensor_release(xin);
    xt_tensor *out = xc ? xt_empty(x->ndim, x->shape, dtype) : NULL;
    xt_status st = out ? scan(xc, out, dim, false) : xt_last_status();
    xt_tensor_release(xc);
    if (st == XT_OK && dtype == XT_FLOAT32) {
        if (!xt_record(out, "cumsum", cumsum_backward, 1, &x, 0)) st = xt_last_status();
        else if (out->grad_fn) out->grad_fn->iargs[0] = dim;
    }
    if (st != XT_OK) {
        xt_tensor_release(out);
        return NULL;
    }
    return out;
}
