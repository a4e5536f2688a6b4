/*
 * pool.c: 2-D pooling over [N,C,H,W] with PyTorch's semantics, forward and backward side
 * by side: max_pool2d (padding counts as -inf; the gradient goes to the argmax),
 * avg_pool2d (count_include_pad as PyTorch) and adaptive_avg_pool2d (bins
 * [floor(i*H/oh), ceil((i+1)*H/oh))). Every plane (one image, one channel) is independent,
 * so the kernels run OpenMP over the N*C planes.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

typedef struct pool_geom {
    int64_t planes, h, w;        /* input [planes = N*C, h, w] */
    int64_t ho, wo;
    int64_t kh, kw, sh, sw, ph, pw;
} pool_geom;

/* t as a contiguous tensor (+1), copied outside the graph: the node goes on t itself, so a
 * strided input that requires grad does not also record a copy node that nobody uses. */
static xt_tensor *dense(xt_tensor *t)
{
    int32_t prev = xt_set_grad_enabled(0);
    xt_tensor *c = xt_contiguous(t);
    xt_set_grad_enabled(prev);
    return c;
}

static xt_status check_input(const xt_tensor *x, const char *op)
{
    if (!x) return xt_fail(XT_ERR_ARG, "%s: input is NULL", op);
    if (x->ndim != 4) {
        char s[XT_SHAPE_STR];
        return xt_fail(XT_ERR_SHAPE, "%s: input must be 4-D [N,C,H,W], got shape %s", op,
                       xt_shape_str(s, x->ndim, x->shape));
    }
    if (x->dtype != XT_FLOAT32)
        return xt_fail(XT_ERR_DTYPE, "%s: input must be float32, got %s", op,
                       xt_dtype_name(x->dtype));
    return XT_OK;
}

/* The checks and output size shared by max and avg pooling (ceil_mode off). */
static xt_status window_geom(pool_geom *g, const xt_tensor *x, int32_t kh, int32_t kw,
                             int32_t sh, int32_t sw, int32_t ph, int32_t pw, const char *op)
{
    if (check_input(x, op) != XT_OK) return xt_last_status();
    if (kh < 1 || kw < 1)
        return xt_fail(XT_ERR_ARG, "%s: kernel size must be >= 1, got %dx%d", op, kh, kw);
    if (sh < 1 || sw < 1)
        return xt_fail(XT_ERR_ARG, "%s: stride must be >= 1, got %dx%d", op, sh, sw);
    if (ph < 0 || pw < 0 || ph > kh / 2 || pw > kw / 2)
        return xt_fail(XT_ERR_ARG,
                       "%s: padding must be between 0 and half the kernel size, got %dx%d for "
                       "kernel %dx%d", op, ph, pw, kh, kw);
    g->planes = x->shape[0] * x->shape[1];
    g->h = x->shape[2];
    g->w = x->shape[3];
    g->kh = kh, g->kw = kw, g->sh = sh, g->sw = sw, g->ph = ph, g->pw = pw;
    g->ho = (g->h + 2 * ph - kh) / sh + 1;
    g->wo = (g->w + 2 * pw - kw) / sw + 1;
    if (g->h + 2 * ph - kh < 0 || g->w + 2 * pw - kw < 0) {
        char s[XT_SHAPE_STR];
        return xt_fail(XT_ERR_SHAPE,
                       "%s: input %s padded by %dx%d is smaller than the kernel %dx%d; the "
                       "output would be empty", op, xt_shape_str(s, 4, x->shape), ph, pw, kh, kw);
    }
    return XT_OK;
}

/* Output positions o in [0, n_out) with 0 <= o * stride + off < size: [*lo, *hi). */
static void valid_range(int64_t off, int64_t stride, int64_t size, int64_t n_out, int64_t *lo,
                        int64_t *hi)
{
    int64_t a = off >= 0 ? 0 : (-off + stride - 1) / stride;
    int64_t b = size - off <= 0 ? 0 : (size - off - 1) / stride + 1;
    if (b > n_out) b = n_out;
    if (a > b) a = b;
    *lo = a;
    *hi = b;
}

static xt_tensor *pool_output(const xt_tensor *x, const pool_geom *g)
{
    int64_t shape[4] = {x->shape[0], x->shape[1], g->ho, g->wo};
    return xt_empty(4, shape, XT_FLOAT32);
}

static bool pool_parallel(const pool_geom *g, int64_t per_out)
{
    return g->planes * g->ho * g->wo * per_out > XT_PARALLEL_GRAIN;
}

/* ---- max_pool2d ---------------------------------------------------------------------------
 * Row at a time: for each kernel tap (i, j), in PyTorch's order, every output of the row
 * takes the tap when it is larger or NaN (NaN propagates), so the first maximum wins as
 * in PyTorch; a window of -inf points at its first element.
 * idx (when not NULL) holds the argmax as iy * w + ix within the plane. */

static void max_pool_forward(const pool_geom *g, const float *x, float *out, int32_t *idx)
{
    const int64_t kw = g->kw;
    int64_t lo[kw], hi[kw];
    for (int64_t j = 0; j < kw; j++) valid_range(j - g->pw, g->sw, g->w, g->wo, &lo[j], &hi[j]);
#pragma omp parallel for schedule(static) if (pool_parallel(g, g->kh * kw))
    for (int64_t pl = 0; pl < g->planes; pl++) {
        const float *xp = x + pl * g->h * g->w;
        for (int64_t oy = 0; oy < g->ho; oy++) {
            float *m = out + (pl * g->ho + oy) * g->wo;
            int32_t *a = idx ? idx + (pl * g->ho + oy) * g->wo : NULL;
            for (int64_t ox = 0; ox < g->wo; ox++) m[ox] = -INFINITY;
            if (a)
                for (int64_t ox = 0; ox < g->wo; ox++) a[ox] = -1;
            for (int64_t i = 0; i < g->kh; i++) {
                const int64_t iy = oy * g->sh - g->ph + i;
                if (iy < 0 || iy >= g->h) continue;
                for (int64_t j = 0; j < kw; j++) {
                    const int64_t off = j - g->pw;
                    const float *row = xp + iy * g->w + off;
                    if (a) {
                        for (int64_t ox = lo[j]; ox < hi[j]; ox++) {
                            float v = row[ox * g->sw];
                            if (v > m[ox] || isnan(v) || a[ox] < 0) {
                                m[ox] = v;
                                a[ox] = (int32_t)(iy * g->w + ox * g->sw + off);
                            }
                        }
                    } else {
                        for (int64_t ox = lo[j]; ox < hi[j]; ox++) {
                            float v = row[ox * g->sw];
                            if (v > m[ox] || isnan(v)) m[ox] = v;
                        }
                    }
                }
            }
        }
    }
}

/* dx [planes, h, w] = dout routed to each output's argmax. */
static void max_pool_backward_kernel(const pool_geom *g, const float *dout, const int32_t *idx,
                                     float *dx)
{
#pragma omp parallel for schedule(static) if (pool_parallel(g, 1))
    for (int64_t pl = 0; pl < g->planes; pl++) {
        float *d = dx + pl * g->h * g->w;
        memset(d, 0, (size_t)(g->h * g->w) * sizeof *d);
        const float *dp = dout + pl * g->ho * g->wo;
        const int32_t *a = idx + pl * g->ho * g->wo;
        for (int64_t o = 0; o < g->ho * g->wo; o++) d[a[o]] += dp[o];
    }
}

static void free_storage(void *s) { xt_storage_release(s); }

/* iargs: kh, kw, sh, sw, ph, pw; extra: the argmax storage (int32, shaped like the output). */
static xt_status max_pool2d_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    if (!node->extra)
        return xt_fail(XT_ERR_STATE, "%s: saved tensors were already freed", node->name);
    const xt_edge *e = &node->inputs[0];
    pool_geom g = {e->shape[0] * e->shape[1], e->shape[2], e->shape[3], dout->shape[2],
                   dout->shape[3], node->iargs[0], node->iargs[1], node->iargs[2],
                   node->iargs[3], node->iargs[4], node->iargs[5]};
    xt_tensor *d = xt_contiguous(dout);
    xt_tensor *dx = d ? xt_empty(4, e->shape, XT_FLOAT32) : NULL;
    if (!dx) {
        xt_tensor_release(d);
        return xt_last_status();
    }
    max_pool_backward_kernel(&g, d->data, ((xt_storage *)node->extra)->data, dx->data);
    xt_tensor_release(d);
    dinputs[0] = dx;
    return XT_OK;
}

xt_tensor *xt_max_pool2d(xt_tensor *x, int32_t kernel_h, int32_t kernel_w, int32_t stride_h,
                         int32_t stride_w, int32_t pad_h, int32_t pad_w)
{
    pool_geom g;
    if (window_geom(&g, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                    "max_pool2d") != XT_OK)
        return NULL;
    if (g.h * g.w > INT32_MAX)
        return xt_fail_null(XT_ERR_SHAPE, "max_pool2d: planes of more than 2^31 elements are not supported");
    bool grad = xt_needs_grad(1, &x);
    xt_tensor *xc = dense(x);
    xt_tensor *out = xc ? pool_output(x, &g) : NULL;
    xt_storage *idx = out && grad ? xt_storage_new(xt_numel(out) * (int64_t)sizeof(int32_t)) : NULL;
    xt_node *node = idx ? xt_node_new("max_pool2d", max_pool2d_backward, 1, &x) : NULL;
    if (!out || (grad && !node)) {
        xt_storage_release(idx);
        xt_tensor_release(xc);
        xt_tensor_release(out);
        return NULL;
    }
    max_pool_forward(&g, xc->data, out->data, idx ? idx->data : NULL);
    xt_tensor_release(xc);
    if (node) {
        int64_t args[6] = {kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w};
        memcpy(node->iargs, args, sizeof args);
        node->extra = idx;
        node->free_extra = free_storage;
        xt_node_attach(node, out);
    }
    return out;
}

/* ---- avg_pool2d ---------------------------------------------------------------------------
 * PyTorch's divisor: the window clipped to the padded input when count_include_pad, else
 * to the input itself. */

static float avg_divisor(const pool_geom *g, int64_t oy, int64_t ox, bool include_pad,
                         int64_t *y0, int64_t *y1, int64_t *x0, int64_t *x1)
{
    int64_t hs = oy * g->sh - g->ph, ws = ox * g->sw - g->pw;
    int64_t he = hs + g->kh < g->h + g->ph ? hs + g->kh : g->h + g->ph;
    int64_t we = ws + g->kw < g->w + g->pw ? ws + g->kw : g->w + g->pw;
    int64_t padded = (he - hs) * (we - ws);
    *y0 = hs > 0 ? hs : 0;
    *x0 = ws > 0 ? ws : 0;
    *y1 = he < g->h ? he : g->h;
    *x1 = we < g->w ? we : g->w;
    return (float)(include_pad ? padded : (*y1 - *y0) * (*x1 - *x0));
}

static void avg_pool_forward(const pool_geom *g, const float *x, float *out, bool include_pad)
{
#pragma omp parallel for schedule(static) if (pool_parallel(g, g->kh * g->kw))
    for (int64_t pl = 0; pl < g->planes; pl++) {
        const float *xp = x + pl * g->h * g->w;
        float *op = out + pl * g->ho * g->wo;
        for (int64_t oy = 0; oy < g->ho; oy++) {
            for (int64_t ox = 0; ox < g->wo; ox++) {
                int64_t y0, y1, x0, x1;
                float div = avg_divisor(g, oy, ox, include_pad, &y0, &y1, &x0, &x1);
                float s = 0;
                for (int64_t iy = y0; iy < y1; iy++)
                    for (int64_t ix = x0; ix < x1; ix++) s += xp[iy * g->w + ix];
                op[oy * g->wo + ox] = s / div;
            }
        }
    }
}

static void avg_pool_backward_kernel(const pool_geom *g, const float *dout, float *dx,
                                     bool include_pad)
{
#pragma omp parallel for schedule(static) if (pool_parallel(g, g->kh * g->kw))
    for (int64_t pl = 0; pl < g->planes; pl++) {
        float *d = dx + pl * g->h * g->w;
        const float *dp = dout + pl * g->ho * g->wo;
        memset(d, 0, (size_t)(g->h * g->w) * sizeof *d);
        for (int64_t oy = 0; oy < g->ho; oy++) {
            for (int64_t ox = 0; ox < g->wo; ox++) {
                int64_t y0, y1, x0, x1;
                float v = dp[oy * g->wo + ox] /
                          avg_divisor(g, oy, ox, include_pad, &y0, &y1, &x0, &x1);
                for (int64_t iy = y0; iy < y1; iy++)
                    for (int64_t ix = x0; ix < x1; ix++) d[iy * g->w + ix] += v;
            }
        }
    }
}

/* iargs: kh, kw, sh, sw, ph, pw, count_include_pad. */
static xt_status avg_pool2d_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    const xt_edge *e = &node->inputs[0];
    pool_geom g = {e->shape[0] * e->shape[1], e->shape[2], e->shape[3], dout->shape[2],
                   dout->shape[3], node->iargs[0], node->iargs[1], node->iargs[2],
                   node->iargs[3], node->iargs[4], node->iargs[5]};
    xt_tensor *d = xt_contiguous(dout);
    xt_tensor *dx = d ? xt_empty(4, e->shape, XT_FLOAT32) : NULL;
    if (!dx) {
        xt_tensor_release(d);
        return xt_last_status();
    }
    avg_pool_backward_kernel(&g, d->data, dx->data, node->iargs[6] != 0);
    xt_tensor_release(d);
    dinputs[0] = dx;
    return XT_OK;
}

xt_tensor *xt_avg_pool2d(xt_tensor *x, int32_t kernel_h, int32_t kernel_w, int32_t stride_h,
                         int32_t stride_w, int32_t pad_h, int32_t pad_w,
                         int32_t count_include_pad)
{
    pool_geom g;
    if (window_geom(&g, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                    "avg_pool2d") != XT_OK)
        return NULL;
    xt_tensor *xc = dense(x);
    xt_tensor *out = xc ? pool_output(x, &g) : NULL;
    if (!out) {
        xt_tensor_release(xc);
        return NULL;
    }
    avg_pool_forward(&g, xc->data, out->data, count_include_pad != 0);
    xt_tensor_release(xc);
    if (!xt_record(out, "avg_pool2d", avg_pool2d_backward, 1, &x, 0)) {
        xt_tensor_release(out);
        return NULL;
    }
    if (out->grad_fn) {
        int64_t args[7] = {kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                           count_include_pad != 0};
        memcpy(out->grad_fn->iargs, args, sizeof args);
    }
    return out;
}

/* ---- adaptive_avg_pool2d -------------------------------------------------------------------
 * Output cell (i, j) averages rows [floor(i*h/ho), ceil((i+1)*h/ho)) and the same for
 * columns; bins may overlap when the sizes do not divide. */

static inline int64_t bin_start(int64_t i, int64_t in, int64_t out) { return i * in / out; }
static inline int64_t bin_end(int64_t i, int64_t in, int64_t out)
{
    return ((i + 1) * in + out - 1) / out;
}

static void adaptive_forward(const pool_geom *g, const float *x, float *out)
{
#pragma omp parallel for schedule(static) if (g->planes * g->h * g->w > XT_PARALLEL_GRAIN)
    for (int64_t pl = 0; pl < g->planes; pl++) {
        const float *xp = x + pl * g->h * g->w;
        float *op = out + pl * g->ho * g->wo;
        for (int64_t oy = 0; oy < g->ho; oy++) {
            int64_t y0 = bin_start(oy, g->h, g->ho), y1 = bin_end(oy, g->h, g->ho);
            for (int64_t ox = 0; ox < g->wo; ox++) {
                int64_t x0 = bin_start(ox, g->w, g->wo), x1 = bin_end(ox, g->w, g->wo);
                float s = 0;
                for (int64_t iy = y0; iy < y1; iy++)
                    for (int64_t ix = x0; ix < x1; ix++) s += xp[iy * g->w + ix];
                op[oy * g->wo + ox] = s / (float)((y1 - y0) * (x1 - x0));
            }
        }
    }
}

static void adaptive_backward_kernel(const pool_geom *g, const float *dout, float *dx)
{
#pragma omp parallel for schedule(static) if (g->planes * g->h * g->w > XT_PARALLEL_GRAIN)
    for (int64_t pl = 0; pl < g->planes; pl++) {
        float *d = dx + pl * g->h * g->w;
        const float *dp = dout + pl * g->ho * g->wo;
        memset(d, 0, (size_t)(g->h * g->w) * sizeof *d);
        for (int64_t oy = 0; oy < g->ho; oy++) {
            int64_t y0 = bin_start(oy, g->h, g->ho), y1 = bin_end(oy, g->h, g->ho);
            for (int64_t ox = 0; ox < g->wo; ox++) {
                int64_t x0 = bin_start(ox, g->w, g->wo), x1 = bin_end(ox, g->w, g->wo);
                float v = dp[oy * g->wo + ox] / (float)((y1 - y0) * (x1 - x0));
                for (int64_t iy = y0; iy < y1; iy++)
                    for (int64_t ix = x0; ix < x1; ix++) d[iy * g->w + ix] += v;
            }
        }
    }
}

static xt_status adaptive_avg_pool2d_backward(xt_node *node, xt_tensor *dout,
                                              xt_tensor **dinputs)
{
    const xt_edge *e = &node->inputs[0];
    pool_geom g = {.planes = e->shape[0] * e->shape[1], .h = e->shape[2], .w = e->shape[3],
                   .ho = dout->shape[2], .wo = dout->shape[3]};
    xt_tensor *d = xt_contiguous(dout);
    xt_tensor *dx = d ? xt_empty(4, e->shape, XT_FLOAT32) : NULL;
    if (!dx) {
        xt_tensor_release(d);
        return xt_last_status();
    }
    adaptive_backward_kernel(&g, d->data, dx->data);
    xt_tensor_release(d);
    dinputs[0] = dx;
    return XT_OK;
}

xt_tensor *xt_adaptive_avg_pool2d(xt_tensor *x, int64_t out_h, int64_t out_w)
{
    if (check_input(x, "adaptive_avg_pool2d") != XT_OK) return NULL;
    if (out_h < 1 || out_w < 1)
        return xt_fail_null(XT_ERR_ARG, "adaptive_avg_pool2d: output size must be >= 1, got %lldx%lld",
                            (long long)out_h, (long long)out_w);
    if (x->shape[2] < 1 || x->shape[3] < 1) {
        char s[XT_SHAPE_STR];
        return xt_fail_null(XT_ERR_SHAPE, "adaptive_avg_pool2d: input %s has an empty plane",
                            xt_shape_str(s, 4, x->shape));
    }
    pool_geom g = {.planes = x->shape[0] * x->shape[1], .h = x->shape[2], .w = x->shape[3],
                   .ho = out_h, .wo = out_w};
    xt_tensor *xc = dense(x);
    xt_tensor *out = xc ? pool_output(x, &g) : NULL;
    if (!out) {
        xt_tensor_release(xc);
        return NULL;
    }
    adaptive_forward(&g, xc->data, out->data);
    xt_tensor_release(xc);
    if (!xt_record(out, "adaptive_avg_pool2d", adaptive_avg_pool2d_backward, 1, &x, 0)) {
        xt_tensor_release(out);
        return NULL;
    }
    return out;
}
