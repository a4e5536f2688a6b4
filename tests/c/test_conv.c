/*
 * test_conv.c: conv2d, max_pool2d, avg_pool2d and adaptive_avg_pool2d. Values and all
 * gradients against naive double-precision loops (stride, padding, dilation, groups,
 * depthwise, pointwise, bias or not, sizes that take the threaded and chunked paths),
 * finite-difference gradient checks, PyTorch fixtures (tests/fixtures/conv, made by
 * make_conv_fixtures.py), strided inputs, thread counts and every error path.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"

enum { SEED = 20240614 };

/* max |got - want| / max(1, max |want|) over n elements (got float32, any strides). */
static double scaled_err(const xt_tensor *got, const double *want, int64_t n)
{
    if (!got || xt_numel(got) != n) return INFINITY;
    xt_tensor *c = xt_contiguous((xt_tensor *)got);
    double worst = 0, scale = 1;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs(test_f32(c)[i] - want[i]);
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
        scale = fmax(scale, fabs(want[i]));
    }
    xt_tensor_release(c);
    return worst / scale;
}

static bool near_ref(const char *what, const xt_tensor *got, const double *want, int64_t n,
                     double tol)
{
    double e = scaled_err(got, want, n);
    if (e <= tol) return true;
    fprintf(stderr, "%s: scaled error %g (tolerance %g)%s\n", what, e, tol,
                got ? "" : " (missing)");
    return false;
}

/* Values i * 0.01 in a random order: no two within a gradient check's step of each other,
 * so the max of a window never changes under the perturbation. */
static xt_tensor *distinct(int32_t ndim, const int64_t *shape)
{
    int64_t n = xt_shape_numel(ndim, shape);
    xt_tensor *perm = xt_randperm(&test_rng, n, 0);
    xt_tensor *t = xt_empty(ndim, shape, XT_FLOAT32);
    for (int64_t i = 0; i < n; i++)
        test_f32(t)[i] = (float)(((int64_t *)perm->data)[i] - n / 2) * 0.01f;
    xt_tensor_release(perm);
    return t;
}

/* ==== conv2d =============================================================================== */

typedef struct conv_case {
    int64_t n, cin, h, w, cout, kh, kw;
    int32_t sh, sw, ph, pw, dh, dw, groups;
    bool bias;
} conv_case;

static int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d)
{
    return (in + 2 * p - d * (k - 1) - 1) / s + 1;
}

/* out, and dx, dw, db for dout, by the definition: every (output, tap) pair in double. */
static void ref_conv(const conv_case *c, const float *x, const float *w, const float *b,
                     const float *dout, double *out, double *dx, double *dw, double *db)
{
    int64_t ho = out_size(c->h, c->kh, c->sh, c->ph, c->dh);
    int64_t wo = out_size(c->w, c->kw, c->sw, c->pw, c->dw);
    int64_t cig = c->cin / c->groups, cog = c->cout / c->groups;
    memset(dx, 0, sizeof(double) * (size_t)(c->n * c->cin * c->h * c->w));
    memset(dw, 0, sizeof(double) * (size_t)(c->cout * cig * c->kh * c->kw));
    memset(db, 0, sizeof(double) * (size_t)c->cout);
    for (int64_t n = 0; n < c->n; n++)
        for (int64_t o = 0; o < c->cout; o++)
            for (int64_t oy = 0; oy < ho; oy++)
                for (int64_t ox = 0; ox < wo; ox++) {
                    int64_t oi = ((n * c->cout + o) * ho + oy) * wo + ox;
                    double s = b ? b[o] : 0, d = dout[oi];
                    for (int64_t ci = 0; ci < cig; ci++) {
                        int64_t cin = o / cog * cig + ci;
                        for (int64_t i = 0; i < c->kh; i++)
                            for (int64_t j = 0; j < c->kw; j++) {
                                int64_t iy = oy * c->sh - c->ph + i * c->dh;
                                int64_t ix = ox * c->sw - c->pw + j * c->dw;
                                if (iy < 0 || iy >= c->h || ix < 0 || ix >= c->w) continue;
                                int64_t xi = ((n * c->cin + cin) * c->h + iy) * c->w + ix;
                                int64_t wi = ((o * cig + ci) * c->kh + i) * c->kw + j;
                                s += (double)x[xi] * w[wi];
                                dx[xi] += d * w[wi];
                                dw[wi] += d * x[xi];
                            }
                    }
                    out[oi] = s;
                    db[o] += d;
                }
}

static xt_tensor *run_conv(const conv_case *c, xt_tensor *x, xt_tensor *w, xt_tensor *b)
{
    return xt_conv2d(x, w, b, c->sh, c->sw, c->ph, c->pw, c->dh, c->dw, c->groups);
}

static xt_tensor *f_conv(xt_tensor *const *in, const void *ctx)
{
    return run_conv(ctx, in[0], in[1], in[2]);
}

static void conv_name(char *buf, size_t size, const conv_case *c)
{
    snprintf(buf, size,
             "conv2d x [%lld,%lld,%lld,%lld] w [%lld,%lld,%lld,%lld] stride %dx%d pad %dx%d "
             "dilation %dx%d groups %d bias %d",
             (long long)c->n, (long long)c->cin, (long long)c->h, (long long)c->w,
             (long long)c->cout, (long long)(c->cin / c->groups), (long long)c->kh,
             (long long)c->kw, c->sh, c->sw, c->ph, c->pw, c->dh, c->dw, c->groups, c->bias);
}

static void check_conv_case(const conv_case *c, bool gradcheck)
{
    int64_t xs[4] = {c->n, c->cin, c->h, c->w}, ws[4] = {c->cout, c->cin / c->groups, c->kh, c->kw};
    int64_t os[4] = {c->n, c->cout, out_size(c->h, c->kh, c->sh, c->ph, c->dh),
                     out_size(c->w, c->kw, c->sw, c->pw, c->dw)};
    xt_tensor *x = test_randn(4, xs, 1, 0), *w = test_randn(4, ws, 0.5, 0);
    xt_tensor *b = c->bias ? test_randn(1, &c->cout, 1, 0) : NULL;
    xt_tensor *dout = test_randn(4, os, 1, 0);
    int64_t nx = xt_numel(x), nw = xt_numel(w), no = xt_numel(dout);
    double *out = malloc(sizeof(double) * (size_t)(no + 1)), *dx = malloc(sizeof(double) * (size_t)(nx + 1));
    double *dw = malloc(sizeof(double) * (size_t)nw), *db = malloc(sizeof(double) * (size_t)c->cout);
    ref_conv(c, x->data, w->data, test_f32(b), dout->data, out, dx, dw, db);
    char what[256], part[300];
    conv_name(what, sizeof what, c);

    xt_set_requires_grad(x, 1);
    xt_set_requires_grad(w, 1);
    if (b) xt_set_requires_grad(b, 1);
    xt_tensor *y = run_conv(c, x, w, b);
    CHECK(y && y->ndim == 4 && memcmp(y->shape, os, sizeof os) == 0);
    /* float32 sums over cig*kh*kw taps: a few ulps of the largest terms */
    double tol = 2e-6 * sqrt((double)(c->cin / c->groups * c->kh * c->kw)) + 1e-6;
    snprintf(part, sizeof part, "%s out", what);
    CHECK(near_ref(part, y, out, no, tol));
    CHECK(y && xt_backward(y, dout, 0) == XT_OK);
    snprintf(part, sizeof part, "%s dx", what);
    CHECK(near_ref(part, x->grad, dx, nx, tol * 2));
    snprintf(part, sizeof part, "%s dw", what);
    CHECK(near_ref(part, w->grad, dw, nw, 2e-6 * sqrt((double)(no / c->cout)) + 1e-6));
    if (b) {
        snprintf(part, sizeof part, "%s db", what);
        CHECK(near_ref(part, b->grad, db, c->cout, 1e-5));
    }
    xt_tensor_release(y);
    xt_set_grad(x, NULL);
    xt_set_grad(w, NULL);
    if (b) xt_set_grad(b, NULL);
    xt_set_requires_grad(x, 0);
    xt_set_requires_grad(w, 0);
    if (b) xt_set_requires_grad(b, 0);

    /* only some inputs need grad: the others get none, the rest are unchanged */
    xt_set_requires_grad(w, 1);
    y = run_conv(c, x, w, b);
    CHECK(y && xt_backward(y, dout, 0) == XT_OK && x->grad == NULL);
    snprintf(part, sizeof part, "%s dw alone", what);
    CHECK(near_ref(part, w->grad, dw, nw, 2e-6 * sqrt((double)(no / c->cout)) + 1e-6));
    xt_tensor_release(y);
    xt_set_grad(w, NULL);
    xt_set_requires_grad(w, 0);
    xt_set_requires_grad(x, 1);
    y = run_conv(c, x, w, b);
    CHECK(y && xt_backward(y, dout, 0) == XT_OK && w->grad == NULL);
    snprintf(part, sizeof part, "%s dx alone", what);
    CHECK(near_ref(part, x->grad, dx, nx, tol * 2));
    xt_tensor_release(y);
    xt_set_grad(x, NULL);
    xt_set_requires_grad(x, 0);

    if (gradcheck) {
        xt_tensor *in[3] = {x, w, b};
        CHECK(test_gradcheck(what, f_conv, c, 3, in));
    }
    free(out);
    free(dx);
    free(dw);
    free(db);
    xt_tensor *ts[4] = {x, w, b, dout};
    for (int i = 0; i < 4; i++) xt_tensor_release(ts[i]);
}

static void test_conv_cases(void)
{
    static const conv_case small[] = {
        /*  n cin  h  w cout kh kw sh sw ph pw dh dw  g  bias */
        {2, 3, 8, 7, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, true},    /* basic 3x3, padded */
        {2, 4, 9, 9, 6, 3, 3, 2, 2, 0, 0, 1, 1, 1, false},   /* stride 2, unpadded */
        {1, 3, 10, 9, 5, 3, 3, 1, 1, 2, 2, 2, 2, 1, true},   /* dilation 2 */
        {2, 4, 9, 8, 6, 3, 2, 2, 1, 2, 1, 2, 1, 2, false},   /* asymmetric, groups 2 */
        {2, 4, 7, 7, 4, 3, 3, 1, 1, 1, 1, 1, 1, 4, true},    /* depthwise */
        {2, 3, 8, 8, 6, 3, 3, 2, 2, 1, 1, 1, 1, 3, false},   /* depthwise, multiplier 2 (GEMM) */
        {2, 4, 8, 7, 4, 3, 3, 1, 2, 1, 0, 2, 1, 4, true},    /* depthwise dilated, strided */
        {3, 1, 9, 9, 5, 5, 5, 1, 1, 2, 2, 1, 1, 1, true},    /* one input channel */
        {2, 6, 5, 5, 8, 1, 1, 1, 1, 0, 0, 1, 1, 1, true},    /* pointwise */
        {2, 6, 5, 4, 9, 1, 1, 1, 1, 0, 0, 1, 1, 3, false},   /* pointwise, groups 3 */
        {2, 4, 7, 7, 3, 1, 1, 2, 2, 0, 0, 1, 1, 1, true},    /* 1x1, stride 2 */
        {1, 2, 3, 3, 2, 5, 5, 1, 1, 2, 2, 1, 1, 1, true},    /* kernel as large as padded input */
        {2, 3, 6, 11, 4, 1, 7, 1, 1, 0, 3, 1, 1, 1, true},   /* 1x7 */
        {2, 2, 5, 6, 2, 2, 2, 3, 3, 1, 1, 1, 1, 1, true},    /* stride past the kernel */
    };
    for (size_t i = 0; i < sizeof small / sizeof *small; i++) check_conv_case(&small[i], true);
    static const conv_case big[] = {
        {4, 16, 32, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, true},   /* threads split images */
        {1, 16, 40, 40, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, true},   /* one image in row chunks */
        {2, 64, 40, 40, 16, 5, 5, 1, 1, 2, 2, 1, 1, 1, false},  /* several chunks per image */
        {3, 16, 24, 24, 16, 3, 3, 2, 2, 1, 1, 1, 1, 2, true},   /* groups, odd image count */
        {1, 64, 32, 32, 64, 1, 1, 1, 1, 0, 0, 1, 1, 1, true},   /* pointwise, one image */
        {4, 32, 32, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, 32, true},  /* depthwise */
        {2, 16, 33, 31, 32, 5, 5, 2, 2, 2, 2, 1, 1, 16, true},  /* depthwise x2, strided */
        {8, 1, 28, 28, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, true},    /* a 1-channel image's stem */
    };
    for (size_t i = 0; i < sizeof big / sizeof *big; i++) check_conv_case(&big[i], false);
}

/* An empty batch gives an empty output and zero weight gradients. */
static void test_conv_empty_batch(void)
{
    int64_t xs[4] = {0, 3, 5, 5}, ws[4] = {4, 3, 3, 3}, four = 4;
    xt_tensor *x = xt_zeros(4, xs, XT_FLOAT32), *w = test_randn(4, ws, 1, 0);
    xt_tensor *b = test_randn(1, &four, 1, 0);
    xt_set_requires_grad(w, 1);
    xt_set_requires_grad(b, 1);
    xt_tensor *y = xt_conv2d(x, w, b, 1, 1, 1, 1, 1, 1, 1);
    CHECK(y && y->shape[0] == 0 && y->shape[1] == 4 && y->shape[2] == 5 && y->shape[3] == 5);
    xt_tensor *dy = y ? xt_zeros(4, y->shape, XT_FLOAT32) : NULL;
    CHECK(y && xt_backward(y, dy, 0) == XT_OK);
    bool zero = w->grad && b->grad;
    for (int64_t i = 0; zero && i < xt_numel(w); i++) zero = test_f32(w->grad)[i] == 0;
    for (int64_t i = 0; zero && i < 4; i++) zero = test_f32(b->grad)[i] == 0;
    CHECK(zero);
    xt_tensor *ts[5] = {x, w, b, y, dy};
    for (int i = 0; i < 5; i++) xt_tensor_release(ts[i]);
}

/* A permuted (channels-last) input and a transposed weight give the contiguous results. */
static void test_conv_strided(void)
{
    int64_t nhwc[4] = {2, 6, 7, 4}, ws_t[4] = {3, 2, 6, 3};
    xt_tensor *xl = test_randn(4, nhwc, 1, 0);
    int32_t to_nchw[4] = {0, 3, 1, 2};
    xt_tensor *x = xt_permute(xl, 4, to_nchw);             /* [2,4,6,7] */
    xt_tensor *wt = test_randn(4, ws_t, 1, 0);
    xt_tensor *w = xt_transpose(wt, 0, 2);                 /* [6,2,3,3] */
    xt_tensor *xc = xt_contiguous(x), *wc = xt_contiguous(w);
    xt_tensor *a = xt_conv2d(x, w, NULL, 1, 1, 1, 1, 1, 1, 2);
    xt_tensor *b = xt_conv2d(xc, wc, NULL, 1, 1, 1, 1, 1, 1, 2);
    CHECK(a && b && test_max_diff(a, b) == 0);
    xt_tensor *p1 = xt_max_pool2d(x, 3, 3, 2, 2, 1, 1), *p2 = xt_max_pool2d(xc, 3, 3, 2, 2, 1, 1);
    xt_tensor *q1 = xt_avg_pool2d(x, 2, 3, 1, 2, 1, 1, 0), *q2 = xt_avg_pool2d(xc, 2, 3, 1, 2, 1, 1, 0);
    xt_tensor *r1 = xt_adaptive_avg_pool2d(x, 4, 3), *r2 = xt_adaptive_avg_pool2d(xc, 4, 3);
    CHECK(test_max_diff(p1, p2) == 0 && test_max_diff(q1, q2) == 0 && test_max_diff(r1, r2) == 0);
    xt_tensor *ts[14] = {xl, x, wt, w, xc, wc, a, b, p1, p2, q1, q2, r1, r2};

    /* gradients through the strided views reach the leaves they were taken from */
    xt_set_requires_grad(xl, 1);
    xt_set_requires_grad(wt, 1);
    xt_set_requires_grad(xc, 1);
    xt_set_requires_grad(wc, 1);
    xt_tensor *xv = xt_permute(xl, 4, to_nchw), *wv = xt_transpose(wt, 0, 2);
    xt_tensor *ya = xt_conv2d(xv, wv, NULL, 1, 1, 1, 1, 1, 1, 2);
    xt_tensor *yb = xt_conv2d(xc, wc, NULL, 1, 1, 1, 1, 1, 1, 2);
    xt_tensor *pa = ya ? xt_max_pool2d(ya, 2, 2, 2, 2, 0, 0) : NULL;
    xt_tensor *pb = yb ? xt_max_pool2d(yb, 2, 2, 2, 2, 0, 0) : NULL;
    xt_tensor *ones = pa ? xt_full(4, pa->shape, XT_FLOAT32, 1) : NULL;
    CHECK(pa && pb && xt_backward(pa, ones, 0) == XT_OK && xt_backward(pb, ones, 0) == XT_OK);
    xt_tensor *gx = xl->grad ? xt_permute(xl->grad, 4, to_nchw) : NULL;
    xt_tensor *gw = wt->grad ? xt_transpose(wt->grad, 0, 2) : NULL;
    CHECK(test_max_diff(gx, xc->grad) == 0 && test_max_diff(gw, wc->grad) == 0);
    xt_tensor *more[9] = {xv, wv, ya, yb, pa, pb, ones, gx, gw};
    for (int i = 0; i < 9; i++) xt_tensor_release(more[i]);
    for (int i = 0; i < 14; i++) xt_tensor_release(ts[i]);
}

/* 1 and 2 threads agree (to rounding: the weight gradient's per-thread partial sums and the
 * row chunks depend on the thread count). */
static void test_conv_threads(void)
{
    int64_t xs[4] = {3, 16, 30, 30}, ws[4] = {32, 16, 3, 3}, dws[4] = {16, 1, 3, 3}, c32 = 32;
    xt_tensor *x = test_randn(4, xs, 1, 0), *w = test_randn(4, ws, 0.3, 0);
    xt_tensor *wd = test_randn(4, dws, 0.3, 0), *b = test_randn(1, &c32, 1, 0);
    int32_t saved = xt_get_num_threads();
    xt_tensor *out[2][2], *gx[2][2], *gw[2][2];
    xt_set_requires_grad(x, 1);
    xt_set_requires_grad(w, 1);
    xt_set_requires_grad(wd, 1);
    for (int run = 0; run < 2; run++) {
        xt_set_num_threads(run + 1);
        for (int k = 0; k < 2; k++) {
            out[run][k] = k == 0 ? xt_conv2d(x, w, b, 1, 1, 1, 1, 1, 1, 1)
                                 : xt_conv2d(x, wd, NULL, 2, 2, 1, 1, 1, 1, 16);
            xt_tensor *ones = xt_full(4, out[run][k]->shape, XT_FLOAT32, 1);
            CHECK(xt_backward(out[run][k], ones, 0) == XT_OK);
            xt_tensor_release(ones);
            gx[run][k] = xt_get_grad(x);
            gw[run][k] = xt_get_grad(k == 0 ? w : wd);
            xt_set_grad(x, NULL);
            xt_set_grad(w, NULL);
            xt_set_grad(wd, NULL);
        }
    }
    xt_set_num_threads(saved);
    for (int k = 0; k < 2; k++) {
        CHECK(test_max_diff(out[0][k], out[1][k]) < 1e-5);
        CHECK(test_max_diff(gx[0][k], gx[1][k]) < 1e-5);
        CHECK(test_max_diff(gw[0][k], gw[1][k]) < 1e-3);  /* sums of 2700 terms of ~1 */
        for (int run = 0; run < 2; run++) {
            xt_tensor_release(out[run][k]);
            xt_tensor_release(gx[run][k]);
            xt_tensor_release(gw[run][k]);
        }
    }
    xt_tensor *ts[4] = {x, w, wd, b};
    for (int i = 0; i < 4; i++) xt_tensor_release(ts[i]);
}

/* ==== pooling ============================================================================== */

typedef struct pool_case {
    int kind;                 /* 0 max, 1 avg, 2 adaptive */
    int64_t n, c, h, w;
    int32_t kh, kw, sh, sw, ph, pw, include_pad;   /* adaptive: kh, kw are the output size */
} pool_case;

static void ref_pool(const pool_case *p, const float *x, const float *dout, double *out,
                     double *dx, int64_t ho, int64_t wo)
{
    memset(dx, 0, sizeof(double) * (size_t)(p->n * p->c * p->h * p->w));
    for (int64_t pl = 0; pl < p->n * p->c; pl++)
        for (int64_t oy = 0; oy < ho; oy++)
            for (int64_t ox = 0; ox < wo; ox++) {
                int64_t y0, y1, x0, x1, count;
                if (p->kind == 2) {
                    y0 = oy * p->h / ho;
                    y1 = ((oy + 1) * p->h + ho - 1) / ho;
                    x0 = ox * p->w / wo;
                    x1 = ((ox + 1) * p->w + wo - 1) / wo;
                    count = (y1 - y0) * (x1 - x0);
                } else {
                    y0 = oy * p->sh - p->ph;
                    x0 = ox * p->sw - p->pw;
                    y1 = y0 + p->kh;
                    x1 = x0 + p->kw;
                    /* PyTorch: the window clipped to the padded input, then to the input */
                    int64_t py1 = y1 < p->h + p->ph ? y1 : p->h + p->ph;
                    int64_t px1 = x1 < p->w + p->pw ? x1 : p->w + p->pw;
                    count = (py1 - y0) * (px1 - x0);
                    y0 = y0 > 0 ? y0 : 0;
                    x0 = x0 > 0 ? x0 : 0;
                    y1 = y1 < p->h ? y1 : p->h;
                    x1 = x1 < p->w ? x1 : p->w;
                    if (!p->include_pad) count = (y1 - y0) * (x1 - x0);
                }
                const float *xp = x + pl * p->h * p->w;
                int64_t oi = (pl * ho + oy) * wo + ox, best = -1;
                double s = 0, m = -INFINITY;
                for (int64_t iy = y0; iy < y1; iy++)
                    for (int64_t ix = x0; ix < x1; ix++) {
                        double v = xp[iy * p->w + ix];
                        s += v;
                        if (best < 0 || v > m) {
                            m = v;
                            best = iy * p->w + ix;
                        }
                    }
                if (p->kind == 0) {
                    out[oi] = m;
                    dx[pl * p->h * p->w + best] += dout[oi];
                } else {
                    out[oi] = s / (double)count;
                    for (int64_t iy = y0; iy < y1; iy++)
                        for (int64_t ix = x0; ix < x1; ix++)
                            dx[pl * p->h * p->w + iy * p->w + ix] += dout[oi] / (double)count;
                }
            }
}

static xt_tensor *run_pool(const pool_case *p, xt_tensor *x)
{
    switch (p->kind) {
    case 0: return xt_max_pool2d(x, p->kh, p->kw, p->sh, p->sw, p->ph, p->pw);
    case 1: return xt_avg_pool2d(x, p->kh, p->kw, p->sh, p->sw, p->ph, p->pw, p->include_pad);
    default: return xt_adaptive_avg_pool2d(x, p->kh, p->kw);
    }
}

static xt_tensor *f_pool(xt_tensor *const *in, const void *ctx) { return run_pool(ctx, in[0]); }

static void check_pool_case(const pool_case *p, bool gradcheck)
{
    static const char *kinds[3] = {"max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"};
    int64_t xs[4] = {p->n, p->c, p->h, p->w};
    int64_t ho = p->kind == 2 ? p->kh : (p->h + 2 * p->ph - p->kh) / p->sh + 1;
    int64_t wo = p->kind == 2 ? p->kw : (p->w + 2 * p->pw - p->kw) / p->sw + 1;
    int64_t os[4] = {p->n, p->c, ho, wo};
    xt_tensor *x = p->kind == 0 ? distinct(4, xs) : test_randn(4, xs, 1, 0);
    xt_tensor *dout = test_randn(4, os, 1, 0);
    int64_t nx = xt_numel(x), no = xt_numel(dout);
    double *out = malloc(sizeof(double) * (size_t)no), *dx = malloc(sizeof(double) * (size_t)nx);
    ref_pool(p, x->data, dout->data, out, dx, ho, wo);
    char what[200], part[240];
    snprintf(what, sizeof what, "%s x [%lld,%lld,%lld,%lld] %dx%d stride %dx%d pad %dx%d incl %d",
             kinds[p->kind], (long long)p->n, (long long)p->c, (long long)p->h, (long long)p->w,
             p->kh, p->kw, p->sh, p->sw, p->ph, p->pw, p->include_pad);
    xt_set_requires_grad(x, 1);
    xt_tensor *y = run_pool(p, x);
    CHECK(y && memcmp(y->shape, os, sizeof os) == 0);
    snprintf(part, sizeof part, "%s out", what);
    CHECK(near_ref(part, y, out, no, 1e-6));
    CHECK(y && xt_backward(y, dout, 0) == XT_OK);
    snprintf(part, sizeof part, "%s dx", what);
    CHECK(near_ref(part, x->grad, dx, nx, 1e-6));
    xt_tensor_release(y);
    xt_set_grad(x, NULL);
    xt_set_requires_grad(x, 0);
    if (gradcheck) CHECK(test_gradcheck(what, f_pool, p, 1, &x));
    free(out);
    free(dx);
    xt_tensor_release(x);
    xt_tensor_release(dout);
}

static void test_pool_cases(void)
{
    static const pool_case small[] = {
        /* kind n c  h  w  kh kw sh sw ph pw incl */
        {0, 2, 3, 6, 6, 2, 2, 2, 2, 0, 0, 0},
        {0, 2, 2, 7, 7, 3, 3, 2, 2, 1, 1, 0},
        {0, 1, 2, 6, 5, 2, 3, 2, 1, 1, 1, 0},
        {0, 1, 3, 5, 6, 3, 3, 1, 1, 1, 1, 0},   /* overlapping windows share maxima */
        {0, 1, 2, 5, 7, 5, 4, 3, 2, 2, 2, 0},
        {1, 2, 3, 7, 6, 3, 3, 2, 2, 1, 1, 1},
        {1, 2, 3, 7, 6, 3, 3, 2, 2, 1, 1, 0},
        {1, 1, 2, 6, 7, 3, 2, 2, 1, 1, 1, 0},
        {1, 1, 2, 6, 7, 2, 4, 1, 3, 1, 2, 1},
        {1, 2, 2, 4, 4, 2, 2, 2, 2, 0, 0, 1},
        {2, 2, 3, 5, 7, 3, 4, 0, 0, 0, 0, 0},   /* bins overlap */
        {2, 1, 2, 6, 6, 4, 2, 0, 0, 0, 0, 0},
        {2, 1, 2, 3, 4, 5, 7, 0, 0, 0, 0, 0},   /* more outputs than inputs */
        {2, 2, 2, 5, 6, 1, 1, 0, 0, 0, 0, 0},   /* global */
    };
    for (size_t i = 0; i < sizeof small / sizeof *small; i++) check_pool_case(&small[i], true);
    static const pool_case big[] = {
        {0, 8, 32, 32, 32, 3, 3, 2, 2, 1, 1, 0},
        {1, 8, 32, 32, 32, 3, 3, 2, 2, 1, 1, 1},
        {1, 8, 32, 31, 33, 2, 2, 2, 2, 0, 0, 0},
        {2, 8, 32, 33, 31, 7, 5, 0, 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof big / sizeof *big; i++) check_pool_case(&big[i], false);
}

/* max_pool2d as PyTorch on ties (the first maximum in window order) and NaN (propagates). */
static void test_max_pool_ties_nan(void)
{
    int64_t s[4] = {1, 1, 2, 2};
    float v[4] = {1, 1, 1, 1};
    xt_tensor *x = xt_from_data(4, s, XT_FLOAT32, v);
    xt_set_requires_grad(x, 1);
    xt_tensor *y = xt_max_pool2d(x, 2, 2, 2, 2, 0, 0);
    CHECK(y && xt_backward(y, NULL, 0) == XT_OK);
    CHECK(x->grad && test_f32(x->grad)[0] == 1 && test_f32(x->grad)[1] == 0 &&
          test_f32(x->grad)[3] == 0);
    xt_tensor_release(y);
    float w[4] = {1, NAN, 5, 2};
    xt_tensor *xn = xt_from_data(4, s, XT_FLOAT32, w);
    xt_tensor *yn = xt_max_pool2d(xn, 2, 2, 2, 2, 0, 0);
    CHECK(yn && isnan(test_f32(yn)[0]));
    xt_tensor *ts[3] = {x, xn, yn};
    for (int i = 0; i < 3; i++) xt_tensor_release(ts[i]);
}

/* ==== errors ================================================================================ */

static void test_errors(void)
{
    int64_t xs[4] = {2, 4, 6, 6}, ws[4] = {6, 2, 3, 3}, x3s[3] = {4, 6, 6}, six = 6, five = 5;
    xt_tensor *x = test_randn(4, xs, 1, 0), *w = test_randn(4, ws, 1, 0);
    xt_tensor *x3 = test_randn(3, x3s, 1, 0), *xl = xt_zeros(4, xs, XT_INT64);
    xt_tensor *b = test_randn(1, &six, 1, 0), *b5 = test_randn(1, &five, 1, 0);
    int64_t w0s[4] = {6, 2, 0, 3}, w3s[4] = {6, 3, 3, 3}, w7s[4] = {7, 4, 3, 3}, wbig[4] = {6, 4, 7, 3};
    xt_tensor *w0 = xt_zeros(4, w0s, XT_FLOAT32), *w3 = test_randn(4, w3s, 1, 0);
    xt_tensor *w7 = test_randn(4, w7s, 1, 0), *wb = test_randn(4, wbig, 1, 0);

    CHECK(!xt_conv2d(x3, w, NULL, 1, 1, 0, 0, 1, 1, 2) &&
          test_error_has("conv2d: input must be 4-D [N,Cin,H,W], got shape [4,6,6]"));
    CHECK(!xt_conv2d(x, x3, NULL, 1, 1, 0, 0, 1, 1, 2) &&
          test_error_has("conv2d: weight must be 4-D [Cout,Cin/groups,kh,kw], got shape [4,6,6]"));
    CHECK(!xt_conv2d(xl, w, NULL, 1, 1, 0, 0, 1, 1, 2) &&
          test_error_has("conv2d: input must be float32, got int64"));
    CHECK(!xt_conv2d(x, w, NULL, 0, 1, 0, 0, 1, 1, 2) && test_error_has("stride must be >= 1, got 0x1"));
    CHECK(!xt_conv2d(x, w, NULL, 1, 1, 0, 0, 1, 0, 2) && test_error_has("dilation must be >= 1, got 1x0"));
    CHECK(!xt_conv2d(x, w, NULL, 1, 1, -1, 0, 1, 1, 2) && test_error_has("padding must be >= 0, got -1x0"));
    CHECK(!xt_conv2d(x, w, NULL, 1, 1, 0, 0, 1, 1, 0) && test_error_has("groups must be >= 1, got 0"));
    CHECK(!xt_conv2d(x, w0, NULL, 1, 1, 0, 0, 1, 1, 2) && test_error_has("dim 2 is empty"));
    CHECK(!xt_conv2d(x, w, NULL, 1, 1, 0, 0, 1, 1, 3) &&
          test_error_has("conv2d: groups 3 does not divide the input's 4 channels"));
    CHECK(!xt_conv2d(x, w3, NULL, 1, 1, 0, 0, 1, 1, 2) &&
          test_error_has("conv2d: input has 4 channels, weight expects 6 (groups 2)"));
    CHECK(!xt_conv2d(x, w7, NULL, 1, 1, 0, 0, 1, 1, 2) &&
          test_error_has("conv2d: groups 2 does not divide the weight's 7 output channels"));
    CHECK(!xt_conv2d(x, w, b5, 1, 1, 0, 0, 1, 1, 2) &&
          test_error_has("conv2d: bias must have shape [6], got [5]"));
    CHECK(!xt_conv2d(x, w, xl, 1, 1, 0, 0, 1, 1, 2) &&
          test_error_has("conv2d: bias must be float32, got int64"));
    CHECK(!xt_conv2d(x, wb, NULL, 1, 1, 0, 0, 1, 1, 1) &&
          test_error_has("conv2d: input [2,4,6,6] padded by 0x0 is smaller than the dilated "
                         "kernel 7x3"));
    CHECK(!xt_conv2d(x, w, NULL, 1, 1, 0, 0, 3, 1, 2) && test_error_has("smaller than the dilated kernel 7x3"));
    CHECK(!xt_conv2d(NULL, w, NULL, 1, 1, 0, 0, 1, 1, 2) && test_error_has("conv2d: input is NULL"));
    CHECK(!xt_conv2d(x, NULL, b, 1, 1, 0, 0, 1, 1, 2) && test_error_has("conv2d: weight is NULL"));

    CHECK(!xt_max_pool2d(x3, 2, 2, 2, 2, 0, 0) &&
          test_error_has("max_pool2d: input must be 4-D [N,C,H,W], got shape [4,6,6]"));
    CHECK(!xt_avg_pool2d(xl, 2, 2, 2, 2, 0, 0, 1) &&
          test_error_has("avg_pool2d: input must be float32, got int64"));
    CHECK(!xt_max_pool2d(x, 0, 2, 2, 2, 0, 0) && test_error_has("kernel size must be >= 1, got 0x2"));
    CHECK(!xt_max_pool2d(x, 2, 2, 2, 0, 0, 0) && test_error_has("stride must be >= 1, got 2x0"));
    CHECK(!xt_avg_pool2d(x, 3, 3, 1, 1, 2, 1, 1) &&
          test_error_has("avg_pool2d: padding must be between 0 and half the kernel size, got "
                         "2x1 for kernel 3x3"));
    CHECK(!xt_max_pool2d(x, 2, 2, 1, 1, -1, 0) && test_error_has("padding must be between"));
    CHECK(!xt_max_pool2d(x, 7, 2, 1, 1, 0, 0) &&
          test_error_has("max_pool2d: input [2,4,6,6] padded by 0x0 is smaller than the kernel "
                         "7x2"));
    CHECK(!xt_adaptive_avg_pool2d(x, 0, 2) &&
          test_error_has("adaptive_avg_pool2d: output size must be >= 1, got 0x2"));
    int64_t es[4] = {1, 2, 0, 3};
    xt_tensor *xe = xt_zeros(4, es, XT_FLOAT32);
    CHECK(!xt_adaptive_avg_pool2d(xe, 2, 2) &&
          test_error_has("adaptive_avg_pool2d: input [1,2,0,3] has an empty plane"));
    CHECK(!xt_adaptive_avg_pool2d(x3, 2, 2) && test_error_has("must be 4-D"));
    CHECK(!xt_max_pool2d(NULL, 2, 2, 2, 2, 0, 0) && test_error_has("max_pool2d: input is NULL"));
    CHECK(!xt_avg_pool2d(NULL, 2, 2, 2, 2, 0, 0, 1) && test_error_has("avg_pool2d: input is NULL"));
    CHECK(!xt_adaptive_avg_pool2d(NULL, 2, 2) && test_error_has("adaptive_avg_pool2d: input is NULL"));

    xt_tensor *ts[12] = {x, w, x3, xl, b, b5, w0, w3, w7, wb, xe, NULL};
    for (int i = 0; i < 12; i++) xt_tensor_release(ts[i]);
}

/* ==== PyTorch fixtures ====================================================================== */

static bool close_scaled(const char *what, const xt_tensor *got, const xt_tensor *want)
{
    if (!got || !want || got->ndim != want->ndim ||
        memcmp(got->shape, want->shape, sizeof(int64_t) * (size_t)got->ndim) != 0) {
        fprintf(stderr, "%s: missing or shaped differently\n", what);
        return false;
    }
    double scale = 1;
    for (int64_t i = 0; i < xt_numel(want); i++) scale = fmax(scale, fabs(test_f32(want)[i]));
    return test_close(what, got, want, 1e-5 * scale);
}

/* kind: 0 conv2d (with bias when in3 exists), 1 max_pool2d, 2 avg_pool2d, 3 adaptive */
static void check_fixture(const char *name, int kind, bool bias)
{
    const char *dir = "conv";
    xt_tensor *args = test_fixture(dir, name, "args"), *x = test_fixture(dir, name, "in1");
    xt_tensor *w = kind == 0 ? test_fixture(dir, name, "in2") : NULL;
    xt_tensor *b = bias ? test_fixture(dir, name, "in3") : NULL;
    xt_tensor *want = test_fixture(dir, name, "out"), *dout = test_fixture(dir, name, "dout");
    bool loaded = args && x && want && dout && (kind != 0 || w) && (!bias || b);
    CHECK(loaded);
    if (loaded) {
        const int64_t *a = args->data;
        xt_tensor *in[3] = {x, w, b};
        for (int i = 0; i < 3; i++)
            if (in[i]) xt_set_requires_grad(in[i], 1);
        xt_tensor *y;
        switch (kind) {
        case 0:
            y = xt_conv2d(x, w, b, (int32_t)a[0], (int32_t)a[1], (int32_t)a[2], (int32_t)a[3],
                          (int32_t)a[4], (int32_t)a[5], (int32_t)a[6]);
            break;
        case 1:
            y = xt_max_pool2d(x, (int32_t)a[0], (int32_t)a[1], (int32_t)a[2], (int32_t)a[3],
                              (int32_t)a[4], (int32_t)a[5]);
            break;
        case 2:
            y = xt_avg_pool2d(x, (int32_t)a[0], (int32_t)a[1], (int32_t)a[2], (int32_t)a[3],
                              (int32_t)a[4], (int32_t)a[5], (int32_t)a[6]);
            break;
        default: y = xt_adaptive_avg_pool2d(x, a[0], a[1]); break;
        }
        char what[160];
        snprintf(what, sizeof what, "fixture %s out", name);
        CHECK(close_scaled(what, y, want));
        CHECK(y && xt_backward(y, dout, 0) == XT_OK);
        for (int i = 0; i < 3; i++) {
            if (!in[i]) continue;
            char part[8];
            snprintf(part, sizeof part, "grad%d", i + 1);
            xt_tensor *g = test_fixture(dir, name, part);
            snprintf(what, sizeof what, "fixture %s %s", name, part);
            CHECK(close_scaled(what, in[i]->grad, g));
            xt_tensor_release(g);
        }
        xt_tensor_release(y);
    }
    xt_tensor *ts[6] = {args, x, w, b, want, dout};
    for (int i = 0; i < 6; i++) xt_tensor_release(ts[i]);
}

static void test_fixtures(void)
{
    check_fixture("conv_basic", 0, true);
    check_fixture("conv_strided_dilated_groups", 0, false);
    check_fixture("conv_depthwise", 0, true);
    check_fixture("conv_pointwise_groups", 0, true);
    check_fixture("conv_5x5_stride2", 0, true);
    check_fixture("max_pool_3x3_s2_p1", 1, false);
    check_fixture("max_pool_2x3_s21_p11", 1, false);
    check_fixture("avg_pool_include_pad", 2, false);
    check_fixture("avg_pool_exclude_pad", 2, false);
    check_fixture("adaptive_5x7_to_3x4", 3, false);
    check_fixture("adaptive_6x6_to_4x2", 3, false);
}

int main(void)
{
    test_seed("test_conv", SEED);
    int64_t live = xt_live_bytes();
    test_conv_cases();
    test_conv_empty_batch();
    test_conv_strided();
    test_conv_threads();
    test_pool_cases();
    test_max_pool_ties_nan();
    test_errors();
    test_fixtures();
    CHECK(xt_live_bytes() == live);  /* everything released */
    return check_report("test_conv");
}
