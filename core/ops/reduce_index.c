/*
 * reduce_index.c: max and min along one dim with the position of the extreme
 * (xt_max_dim, xt_min_dim; the values carry a gradient), and argmax, argmin.
 *
 * x is made contiguous and seen as [outer, D, inner] around the dim. inner == 1 (the
 * last dim): each output scans a contiguous row of D, in LANES independent lanes that
 * each keep their best value and its first position. inner > 1: a block of neighbouring
 * outputs scans D contiguous runs together, element by element. Both vectorise; outputs
 * are shared among threads, and a few long rows (argmax of a flattened tensor) are cut
 * into chunks whose winners are compared in order. Every split depends on the shape only.
 *
 * Ties go to the first position, as in PyTorch; NaN beats every number (the first NaN
 * wins). int64 and uint8 inputs compare as integers; values keep the input's dtype.
 *
 * Backward of the values (saved: the indices): dx = 0 except dx[.., index, ..] = dy.
 */
#include "reduce.h"

#include <stdlib.h>
#include <string.h>

#define ALWAYS_INLINE static inline __attribute__((always_inline))

enum { LANES = 16 };

/* Does v beat the best so far b? Strictly: a tie keeps the earlier position. */
ALWAYS_INLINE bool f32_beats(float v, float b, bool is_max)
{
    return (is_max ? v > b : v < b) || (v != v && b == b);
}

ALWAYS_INLINE bool f32_same(float v, float b) { return v == b || (v != v && b != b); }

/* Folds row[0..n) (positions start..) into (*bv, *bi), which hold the winner of the
 * positions before start (*bi < 0: none yet). */
ALWAYS_INLINE void f32_row(const float *x, int64_t n, int64_t start, bool is_max, float *bv,
                           int64_t *bi)
{
    float best = *bv;
    int64_t at = *bi;
    int64_t i = 0;
    if (n >= 2 * LANES) {
        float lv[LANES];
        int64_t li[LANES];
        for (int j = 0; j < LANES; j++) {
            lv[j] = x[j];
            li[j] = j;
        }
        for (i = LANES; i + LANES <= n; i += LANES) {
#pragma omp simd
            for (int j = 0; j < LANES; j++) {
                float v = x[i + j];
                bool take = f32_beats(v, lv[j], is_max);
                lv[j] = take ? v : lv[j];
                li[j] = take ? i + j : li[j];
            }
        }
        /* the lanes' winner: best value, then first position */
        float lb = lv[0];
        int64_t lbi = li[0];
        for (int j = 1; j < LANES; j++)
            if (f32_beats(lv[j], lb, is_max) || (f32_same(lv[j], lb) && li[j] < lbi)) {
                lb = lv[j];
                lbi = li[j];
            }
        if (at < 0 || f32_beats(lb, best, is_max)) {
            best = lb;
            at = start + lbi;
        }
    }
    for (; i < n; i++)
        if (at < 0 || f32_beats(x[i], best, is_max)) {
            best = x[i];
            at = start + i;
        }
    *bv = best;
    *bi = at;
}

/* Folds D runs of n (the columns of a block, run d at x + d * inner) into bv[n], bi[n]. */
ALWAYS_INLINE void f32_cols(const float *x, int64_t D, int64_t inner, int64_t n, bool is_max,
                            float *bv, int64_t *bi)
{
    for (int64_t j = 0; j < n; j++) {
        bv[j] = x[j];
        bi[j] = 0;
    }
    for (int64_t d = 1; d < D; d++) {
        const float *p = x + d * inner;
        for (int64_t j = 0; j < n; j++) {
            bool take = f32_beats(p[j], bv[j], is_max);
            bv[j] = take ? p[j] : bv[j];
            bi[j] = take ? d : bi[j];
        }
    }
}

ALWAYS_INLINE void i64_row(const int64_t *x, int64_t n, int64_t start, bool is_max,
                           int64_t *bv, int64_t *bi)
{
    int64_t best = *bv, at = *bi;
    for (int64_t i = 0; i < n; i++)
        if (at < 0 || (is_max ? x[i] > best : x[i] < best)) {
            best = x[i];
            at = start + i;
        }
    *bv = best;
    *bi = at;
}

ALWAYS_INLINE void i64_cols(const int64_t *x, int64_t D, int64_t inner, int64_t n, bool is_max,
                            int64_t *bv, int64_t *bi)
{
    for (int64_t j = 0; j < n; j++) {
        bv[j] = x[j];
        bi[j] = 0;
    }
    for (int64_t d = 1; d < D; d++) {
        const int64_t *p = x + d * inner;
        for (int64_t j = 0; j < n; j++) {
            bool take = is_max ? p[j] > bv[j] : p[j] < bv[j];
            bv[j] = take ? p[j] : bv[j];
            bi[j] = take ? d : bi[j];
        }
    }
}

/* One output's slice of a row: positions [lo, hi) of row o. */
static void row_part(const void *x, bool f32, bool is_max, int64_t D, int64_t o, int64_t lo,
                     int64_t hi, void *bv, int64_t *bi)
{
    *bi = -1;
    if (f32) *(float *)bv = 0.0f;
    else *(int64_t *)bv = 0;
    if (f32) {
        const float *r = (const float *)x + o * D + lo;
        if (is_max) f32_row(r, hi - lo, lo, true, bv, bi);
        else f32_row(r, hi - lo, lo, false, bv, bi);
    } else {
        const int64_t *r = (const int64_t *)x + o * D + lo;
        if (is_max) i64_row(r, hi - lo, lo, true, bv, bi);
        else i64_row(r, hi - lo, lo, false, bv, bi);
    }
}

/* values[o] (x's dtype: float or int64) and positions idx[o] over [outer, D, inner]. */
static xt_status scan(const void *x, bool f32, bool is_max, int64_t outer, int64_t D,
                      int64_t inner, void *values, int64_t *idx)
{
    int64_t total = outer * D * inner;
    if (inner == 1) {
        int64_t nch = xt_reduce_chunks(outer, D, D);
        if (nch == 1) {
#pragma omp parallel for schedule(static) if (total > XT_PARALLEL_GRAIN)
            for (int64_t o = 0; o < outer; o++)
                row_part(x, f32, is_max, D, o, 0, D, (char *)values + o * (f32 ? 4 : 8), idx + o);
            return XT_OK;
        }
        /* winners of each chunk, then compared in chunk order (ties keep the earlier) */
        int64_t *pv = malloc(sizeof(int64_t) * (size_t)(outer * nch));
        int64_t *pi = malloc(sizeof(int64_t) * (size_t)(outer * nch));
        if (!pv || !pi) {
            free(pv);
            free(pi);
            return xt_fail(XT_ERR_OOM, "argmax: out of memory");
        }
#pragma omp parallel for schedule(static)
        for (int64_t t = 0; t < outer * nch; t++) {
            int64_t o = t / nch, c = t % nch;
            row_part(x, f32, is_max, D, o, D * c / nch, D * (c + 1) / nch, pv + t, pi + t);
        }
        for (int64_t o = 0; o < outer; o++) {
            int64_t w = o * nch;
            for (int64_t t = o * nch + 1; t < (o + 1) * nch; t++) {
                bool beats;
                if (f32) {
                    float v, b;
                    memcpy(&v, pv + t, sizeof v);
                    memcpy(&b, pv + w, sizeof b);
                    beats = f32_beats(v, b, is_max);
                } else {
                    beats = is_max ? pv[t] > pv[w] : pv[t] < pv[w];
                }
                if (beats) w = t;
            }
            memcpy((char *)values + o * (f32 ? 4 : 8), pv + w, f32 ? 4 : 8);
            idx[o] = pi[w];
        }
        free(pv);
        free(pi);
        return XT_OK;
    }
    int64_t w = xt_reduce_col_width(outer, inner), ncb = (inner + w - 1) / w;
#pragma omp parallel for schedule(static) if (total > XT_PARALLEL_GRAIN)
    for (int64_t t = 0; t < outer * ncb; t++) {
        int64_t ou = t / ncb, c0 = t % ncb * w;
        int64_t n = inner - c0 < w ? inner - c0 : w;
        int64_t o0 = ou * inner + c0;
        if (f32) {
            const float *p = (const float *)x + ou * D * inner + c0;
            float *v = (float *)values + o0;
            if (is_max) f32_cols(p, D, inner, n, true, v, idx + o0);
            else f32_cols(p, D, inner, n, false, v, idx + o0);
        } else {
            const int64_t *p = (const int64_t *)x + ou * D * inner + c0;
            int64_t *v = (int64_t *)values + o0;
            if (is_max) i64_cols(p, D, inner, n, true, v, idx + o0);
            else i64_cols(p, D, inner, n, false, v, idx + o0);
        }
    }
    return XT_OK;
}

/* ---- backward ------------------------------------------------------------------------ */

/* saved: 0 indices; iargs: 0 dim, 1 base */
static xt_status extreme_dim_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *idx_t = xt_node_saved(node, 0);
    if (!idx_t) return xt_last_status();
    const xt_edge *e = &node->inputs[0];
    int32_t dim = (int32_t)node->iargs[0];
    int64_t base = node->iargs[1];
    int64_t D = e->ndim > 0 ? e->shape[dim] : 1, inner = 1;
    for (int32_t d = dim + 1; d < e->ndim; d++) inner *= e->shape[d];
    xt_tensor *dy = xt_dense(dout), *ic = xt_dense(idx_t);
    xt_tensor *dx = dy && ic ? xt_zeros(e->ndim, e->shape, XT_FLOAT32) : NULL;
    xt_status st = dx ? XT_OK : xt_last_status();
    if (dx) {
        const float *g = dy->data;
        const int64_t *ix = ic->data;
        float *out = dx->data;
        int64_t n = xt_numel(dy), bad = 0;
#pragma omp parallel for reduction(+ : bad) if (n > XT_PARALLEL_GRAIN)
        for (int64_t o = 0; o < n; o++) {
            int64_t k = ix[o] - base;
            if (k < 0 || k >= D) {
                bad++;
                continue;
            }
            out[(o / inner * D + k) * inner + o % inner] = g[o];
        }
        if (bad) st = xt_fail(XT_ERR_STATE, "%s: saved indices are out of range", node->name);
    }
    xt_tensor_release(dy);
    xt_tensor_release(ic);
    if (st != XT_OK) {
        xt_tensor_release(dx);
        return st;
    }
    dinputs[0] = dx;
    return XT_OK;
}

/* ---- forward ------------------------------------------------------------------------- */

/* The shared body: indices always; values when want_values (a node goes on them). */
static xt_tensor *extreme_dim(const char *name, bool is_max, xt_tensor *x, int32_t dim,
                              int32_t keepdim, int64_t base, bool want_values,
                              xt_tensor **values_out)
{
    if (!x) return xt_fail_null(XT_ERR_ARG, "%s: input is NULL", name);
    if (xt_norm_dim(&dim, x->ndim, name) != XT_OK) return NULL;
    if (x->ndim > 0 && x->shape[dim] == 0)
        return xt_fail_null(XT_ERR_SHAPE,
                            "%s: cannot reduce over dim %lld of size 0 (%s of no elements is "
                            "undefined)",
                            name, (long long)xt_shown(dim), name);
    int64_t outer = 1, D = x->ndim > 0 ? x->shape[dim] : 1, inner = 1;
    for (int32_t d = 0; d < dim; d++) outer *= x->shape[d];
    for (int32_t d = dim + 1; d < x->ndim; d++) inner *= x->shape[d];
    int32_t ndim;
    int64_t shape[XT_MAX_DIMS];
    xt_reduce_shape(x, x->ndim > 0 ? 1u << dim : 0, keepdim, &ndim, shape);

    bool f32 = x->dtype == XT_FLOAT32;
    int32_t compute = f32 ? XT_FLOAT32 : XT_INT64;   /* uint8 compares as int64 */
    xt_tensor *xin = x->dtype == compute ? (xt_tensor_retain(x), x) : xt_to_dtype(x, compute);
    xt_tensor *xc = xin ? xt_dense(xin) : NULL;
    xt_tensor_release(xin);
    xt_tensor *idx = xc ? xt_empty(ndim, shape, XT_INT64) : NULL;
    xt_tensor *vals = idx ? xt_empty(ndim, shape, compute) : NULL;
    xt_status st = vals ? XT_OK : xt_last_status();
    if (vals && outer * inner > 0)
        st = scan(xc->data, f32, is_max, outer, D, inner, vals->data, idx->data);
    xt_tensor_release(xc);
    if (st == XT_OK && base != 0) {
        int64_t *p = idx->data;
        for (int64_t o = 0; o < xt_numel(idx); o++) p[o] += base;
    }
    if (st == XT_OK && want_values && x->dtype == XT_UINT8) {
        xt_tensor *v8 = xt_to_dtype(vals, XT_UINT8);
        xt_tensor_release(vals);
        vals = v8;
        if (!v8) st = xt_last_status();
    }
    if (st == XT_OK && want_values && xt_needs_grad(1, &x)) {
        xt_node *node = xt_node_new(name, extreme_dim_backward, 1, &x);
        if (!node || xt_node_save(node, idx) != XT_OK) {
            st = xt_last_status();
            xt_node_release(node);
        } else {
            node->iargs[0] = dim;
            node->iargs[1] = base;
            xt_node_attach(node, vals);
        }
    }
    if (st != XT_OK) {
        xt_tensor_release(idx);
        xt_tensor_release(vals);
        return NULL;
    }
    if (want_values) {
        *values_out = vals;
        return idx;
    }
    xt_tensor_release(vals);
    return idx;
}

/* Values returned, indices through *indices (released when indices is NULL). */
static xt_tensor *values_and_indices(const char *name, bool is_max, xt_tensor *x, int32_t dim,
                                     int32_t keepdim, int64_t base, xt_tensor **indices)
{
    xt_tensor *values = NULL;
    xt_tensor *idx = extreme_dim(name, is_max, x, dim, keepdim, base, true, &values);
    if (indices) *indices = idx;
    else xt_tensor_release(idx);
    return idx ? values : NULL;
}

xt_tensor *xt_max_dim(xt_tensor *x, int32_t dim, int32_t keepdim, int64_t base,
                      xt_tensor **indices)
{
    return values_and_indices("max", true, x, dim, keepdim, base, indices);
}

xt_tensor *xt_min_dim(xt_tensor *x, int32_t dim, int32_t keepdim, int64_t base,
                      xt_tensor **indices)
{
    return values_and_indices("min", false, x, dim, keepdim, base, indices);
}

xt_tensor *xt_argmax(xt_tensor *x, int32_t dim, int32_t keepdim, int64_t base)
{
    return extreme_dim("argmax", true, x, dim, keepdim, base, false, NULL);
}

xt_tensor *xt_argmin(xt_tensor *x, int32_t dim, int32_t keepdim, int64_t base)
{
    return extreme_dim("argmin", false, x, dim, keepdim, base, false, NULL);
}
