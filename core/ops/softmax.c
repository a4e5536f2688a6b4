/*
 * softmax.c: softmax and log_softmax along any dim, forward and backward side by side.
 *
 * x is made contiguous and seen as [outer, D, inner] around the dim.
 *   inner == 1 (the last dim, the common case): one fused kernel per row, which stays in
 *     cache between its three sweeps: the max, the exp-sum (softmax writes the exps as
 *     it goes), the normalisation. Rows are shared among threads.
 *   inner > 1: a block of neighbouring columns goes through the same steps together,
 *     one contiguous run per step along D, with the column statistics in small arrays;
 *     vectorised across the columns (see the columns section for a long D).
 * exp sums accumulate in double. A row containing NaN gives NaN; a row of -inf gives NaN
 * (as PyTorch: there is no distribution to normalise).
 *
 * y = softmax(x):      y = exp(x - m) / s,        s = sum exp(x - m), m = max x
 * y = log_softmax(x):  y = x - m - log(s)
 * backward (saved: y):
 *   softmax:      dx = y * (dy - sum(dy * y))
 *   log_softmax:  dx = dy - exp(y) * sum(dy)
 */
#include "reduce.h"

enum { CB = XT_RED_COL_BLOCK };

/* ---- rows (inner == 1) ---------------------------------------------------------------- */

static float row_max(const float *x, int64_t n)
{
    float m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

/* sum of exp(x - m); also stores the exps in e unless e is NULL */
static double row_expsum(const float *x, float *e, int64_t n, float m)
{
    double s = 0;
    if (e) {
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < n; i++) {
            float v = expf(x[i] - m);
            e[i] = v;
            s += v;
        }
    } else {
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < n; i++) s += expf(x[i] - m);
    }
    return s;
}

/* sum of a * b (b NULL: sum of a) */
static double row_dot(const float *a, const float *b, int64_t n)
{
    double s = 0;
    if (b) {
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    } else {
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < n; i++) s += a[i];
    }
    return s;
}

static void rows_forward(const float *x, float *y, int64_t outer, int64_t D, bool log_mode)
{
#pragma omp parallel for schedule(static) if (outer * D > XT_PARALLEL_GRAIN)
    for (int64_t o = 0; o < outer; o++) {
        const float *xr = x + o * D;
        float *yr = y + o * D;
        float m = row_max(xr, D);
        if (log_mode) {
            float lse = (float)(m + log(row_expsum(xr, NULL, D, m)));
            for (int64_t i = 0; i < D; i++) yr[i] = xr[i] - lse;
        } else {
            float inv = (float)(1.0 / row_expsum(xr, yr, D, m));
            for (int64_t i = 0; i < D; i++) yr[i] *= inv;
        }
    }
}

static void rows_backward(const float *y, const float *dy, float *dx, int64_t outer, int64_t D,
                          bool log_mode)
{
#pragma omp parallel for schedule(static) if (outer * D > XT_PARALLEL_GRAIN)
    for (int64_t o = 0; o < outer; o++) {
        const float *yr = y + o * D, *gr = dy + o * D;
        float *dr = dx + o * D;
        if (log_mode) {
            float s = (float)row_dot(gr, NULL, D);
            for (int64_t i = 0; i < D; i++) dr[i] = gr[i] - expf(yr[i]) * s;
        } else {
            float s = (float)row_dot(gr, yr, D);
            for (int64_t i = 0; i < D; i++) dr[i] = yr[i] * (gr[i] - s);
        }
    }
}

/* ---- columns (inner > 1) --------------------------------------------------------------
 * A task takes a block of neighbouring columns through their D runs: first the column
 * statistics (max m, exp-sum s), then one sweep that writes the output. When D is small
 * the block stays in cache and the statistics take two sweeps (max, then exp-sum), like
 * the rows. For a long D the block cannot stay in cache, so the two merge into one online
 * sweep (a running max, the sum rescaled by exp(m_old - m_new) when it grows): two exps
 * per element instead of another read from memory. */

enum { SHORT_D = 256 };

/* Columns per task: for D <= SHORT_D a D x width block of about 256 KB (in cache), else
 * wide blocks (long contiguous runs). */
static int64_t block_width(int64_t outer, int64_t D, int64_t inner)
{
    if (D > SHORT_D) return xt_reduce_col_width(outer, inner);
    int64_t w = 65536 / (D > 0 ? D : 1) / 16 * 16;
    return w > CB ? CB : w;
}

/* Task t of a [outer, D, inner] tensor cut into ncb blocks of w columns: its n columns'
 * run d starts at element first + d * inner. */
static void column_task(int64_t t, int64_t ncb, int64_t w, int64_t D, int64_t inner,
                        int64_t *first, int64_t *n)
{
    int64_t c0 = t % ncb * w;
    *first = t / ncb * D * inner + c0;
    *n = inner - c0 < w ? inner - c0 : w;
}

/* m[j], s[j]: max and sum of exp(x - max) of the n columns at x + first (runs inner apart) */
static void column_stats(const float *x, int64_t first, int64_t n, int64_t D, int64_t inner,
                         float *m, double *s)
{
    for (int64_t j = 0; j < n; j++) {
        m[j] = -INFINITY;
        s[j] = 0;
    }
    if (D <= SHORT_D) {
        for (int64_t d = 0; d < D; d++) {
            const float *p = x + first + d * inner;
            for (int64_t j = 0; j < n; j++) m[j] = p[j] > m[j] ? p[j] : m[j];
        }
        for (int64_t d = 0; d < D; d++) {
            const float *p = x + first + d * inner;
            for (int64_t j = 0; j < n; j++) s[j] += expf(p[j] - m[j]);
        }
        return;
    }
    for (int64_t d = 0; d < D; d++) {
        const float *p = x + first + d * inner;
        for (int64_t j = 0; j < n; j++) {
            float mn = p[j] > m[j] ? p[j] : m[j];
            /* while the max is -inf nothing has weight yet (and -inf - -inf is NaN) */
            s[j] = mn > -INFINITY ? s[j] * expf(m[j] - mn) + expf(p[j] - mn) : 0.0;
            m[j] = mn;
        }
    }
}

static void cols_forward(const float *x, float *y, int64_t outer, int64_t D, int64_t inner,
                         bool log_mode)
{
    int64_t w = block_width(outer, D, inner), ncb = (inner + w - 1) / w;
#pragma omp parallel for schedule(static) if (outer * D * inner > XT_PARALLEL_GRAIN)
    for (int64_t t = 0; t < outer * ncb; t++) {
        int64_t first, n;
        column_task(t, ncb, w, D, inner, &first, &n);
        float m[CB], f[CB];   /* f: softmax 1/s; log_softmax m + log(s) */
        double s[CB];
        column_stats(x, first, n, D, inner, m, s);
        for (int64_t j = 0; j < n; j++)
            f[j] = log_mode ? (float)(m[j] + log(s[j])) : (float)(1.0 / s[j]);
        for (int64_t d = 0; d < D; d++) {
            const float *p = x + first + d * inner;
            float *q = y + first + d * inner;
            if (log_mode)
                for (int64_t j = 0; j < n; j++) q[j] = p[j] - f[j];
            else
                for (int64_t j = 0; j < n; j++) q[j] = expf(p[j] - m[j]) * f[j];
        }
    }
}

static void cols_backward(const float *y, const float *dy, float *dx, int64_t outer, int64_t D,
                          int64_t inner, bool log_mode)
{
    int64_t w = block_width(outer, D, inner), ncb = (inner + w - 1) / w;
#pragma omp parallel for schedule(static) if (outer * D * inner > XT_PARALLEL_GRAIN)
    for (int64_t t = 0; t < outer * ncb; t++) {
        int64_t first, n;
        column_task(t, ncb, w, D, inner, &first, &n);
        double s[CB];
        for (int64_t j = 0; j < n; j++) s[j] = 0;
        for (int64_t d = 0; d < D; d++) {
            const float *g = dy + first + d * inner, *p = y + first + d * inner;
            if (log_mode)
                for (int64_t j = 0; j < n; j++) s[j] += g[j];
            else
                for (int64_t j = 0; j < n; j++) s[j] += g[j] * p[j];
        }
        float f[CB];
        for (int64_t j = 0; j < n; j++) f[j] = (float)s[j];
        for (int64_t d = 0; d < D; d++) {
            const float *g = dy + first + d * inner, *p = y + first + d * inner;
            float *q = dx + first + d * inner;
            if (log_mode)
                for (int64_t j = 0; j < n; j++) q[j] = g[j] - expf(p[j]) * f[j];
            else
                for (int64_t j = 0; j < n; j++) q[j] = p[j] * (g[j] - f[j]);
        }
    }
}

/* ---- ops --------------------------------------------------------------------------------- */

static void split_at(const int64_t *shape, int32_t ndim, int32_t dim, int64_t *outer, int64_t *D,
                     int64_t *inner)
{
    *outer = *inner = 1;
    *D = ndim > 0 ? shape[dim] : 1;
    for (int32_t d = 0; d < dim; d++) *outer *= shape[d];
    for (int32_t d = dim + 1; d < ndim; d++) *inner *= shape[d];
}

/* saved: 0 y; iargs: 0 dim, 1 log_mode */
static xt_status softmax_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *y = xt_node_saved(node, 0);
    if (!y) return xt_last_status();
    int64_t outer, D, inner;
    split_at(y->shape, y->ndim, (int32_t)node->iargs[0], &outer, &D, &inner);
    bool log_mode = node->iargs[1] != 0;
    xt_tensor *yc = xt_dense(y), *dy = yc ? xt_dense(dout) : NULL;
    xt_tensor *dx = dy ? xt_empty(y->ndim, y->shape, XT_FLOAT32) : NULL;
    if (dx && xt_numel(dx) > 0) {
        if (inner == 1) rows_backward(yc->data, dy->data, dx->data, outer, D, log_mode);
        else cols_backward(yc->data, dy->data, dx->data, outer, D, inner, log_mode);
    }
    xt_tensor_release(yc);
    xt_tensor_release(dy);
    if (!dx) return xt_last_status();
    dinputs[0] = dx;
    return XT_OK;
}

static xt_tensor *softmax_forward(const char *name, xt_tensor *x, int32_t dim, bool log_mode)
{
    if (!x) return xt_fail_null(XT_ERR_ARG, "%s: input is NULL", name);
    if (x->dtype != XT_FLOAT32)
        return xt_fail_null(XT_ERR_DTYPE, "%s: expected float32, got %s (convert with :float())",
                            name, xt_dtype_name(x->dtype));
    if (xt_norm_dim(&dim, x->ndim, name) != XT_OK) return NULL;
    int64_t outer, D, inner;
    split_at(x->shape, x->ndim, dim, &outer, &D, &inner);
    xt_tensor *xc = xt_dense(x);
    xt_tensor *out = xc ? xt_empty(x->ndim, x->shape, XT_FLOAT32) : NULL;
    if (out && xt_numel(out) > 0) {
        if (inner == 1) rows_forward(xc->data, out->data, outer, D, log_mode);
        else cols_forward(xc->data, out->data, outer, D, inner, log_mode);
    }
    xt_tensor_release(xc);
    if (!out) return NULL;
    if (!xt_record(out, name, softmax_backward, 1, &x, XT_SAVE_OUT)) {
        xt_tensor_release(out);
        return NULL;
    }
    if (out->grad_fn) {
        out->grad_fn->iargs[0] = dim;
        out->grad_fn->iargs[1] = log_mode;
    }
    return out;
}

xt_tensor *xt_softmax(xt_tensor *x, int32_t dim)
{
    return softmax_forward("softmax", x, dim, false);
}

xt_tensor *xt_log_softmax(xt_tensor *x, int32_t dim)
{
    return softmax_forward("log_softmax", x, dim, true);
}
