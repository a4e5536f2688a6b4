/*
 * test_norm.c: batch_norm, layer_norm, group_norm, dropout and embedding: values against
 * naive double-precision loops, running statistics over several steps, eval mode, a
 * finite-difference gradient check of every op and option, every error path, thread-count
 * independence, and PyTorch fixtures (tests/fixtures/norm, made by make_norm_fixtures.py).
 */
#include <stdlib.h>
#include <string.h>

#include "testlib.h"

enum { SEED = 20240611 };

/* ---- helpers ------------------------------------------------------------------- */

static xt_tensor *randn1(int64_t n, double scale, double shift)
{
    return test_randn(1, &n, scale, shift);
}

/* max |a - b| / (1 + |b|) over n elements of a float tensor and a double array */
static double rel_err(const xt_tensor *a, const double *b, int64_t n)
{
    double worst = 0;
    const float *p = a->data;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)p[i] - b[i]) / (1 + fabs(b[i]));
        if (!(e <= worst)) worst = e;  /* NaN propagates as a failure */
    }
    return worst;
}

/* ---- naive references (double) ----------------------------------------------------- */

/* x [N,C,S]; running stats are updated when training and rm != NULL. */
static void ref_batch_norm(const float *x, int64_t N, int64_t C, int64_t S, const float *w,
                           const float *b, double *rm, double *rv, bool training,
                           double momentum, double eps, double *out)
{
    for (int64_t c = 0; c < C; c++) {
        double mean, var;
        if (training) {
            double s = 0, q = 0, M = (double)(N * S);
            for (int64_t n = 0; n < N; n++)
                for (int64_t i = 0; i < S; i++) s += x[(n * C + c) * S + i];
            mean = s / M;
            for (int64_t n = 0; n < N; n++)
                for (int64_t i = 0; i < S; i++) q += pow(x[(n * C + c) * S + i] - mean, 2);
            var = q / M;
            if (rm) {
                rm[c] = (1 - momentum) * rm[c] + momentum * mean;
                rv[c] = (1 - momentum) * rv[c] + momentum * q / (M - 1);
            }
        } else {
            mean = rm[c];
            var = rv[c];
        }
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < S; i++) {
                int64_t j = (n * C + c) * S + i;
                out[j] = (x[j] - mean) / sqrt(var + eps) * (w ? w[c] : 1) + (b ? b[c] : 0);
            }
    }
}

/* rows of D elements with a per-position affine */
static void ref_layer_norm(const float *x, int64_t R, int64_t D, const float *w, const float *b,
                           double eps, double *out)
{
    for (int64_t r = 0; r < R; r++) {
        double s = 0, q = 0;
        for (int64_t j = 0; j < D; j++) s += x[r * D + j];
        double mean = s / (double)D;
        for (int64_t j = 0; j < D; j++) q += pow(x[r * D + j] - mean, 2);
        double rstd = 1 / sqrt(q / (double)D + eps);
        for (int64_t j = 0; j < D; j++)
            out[r * D + j] = (x[r * D + j] - mean) * rstd * (w ? w[j] : 1) + (b ? b[j] : 0);
    }
}

static void ref_group_norm(const float *x, int64_t N, int64_t C, int64_t S, int64_t G,
                           const float *w, const float *b, double eps, double *out)
{
    int64_t Cg = C / G, M = Cg * S;
    for (int64_t n = 0; n < N; n++)
        for (int64_t g = 0; g < G; g++) {
            const float *xg = x + (n * C + g * Cg) * S;
            double s = 0, q = 0;
            for (int64_t i = 0; i < M; i++) s += xg[i];
            double mean = s / (double)M;
            for (int64_t i = 0; i < M; i++) q += pow(xg[i] - mean, 2);
            double rstd = 1 / sqrt(q / (double)M + eps);
            for (int64_t i = 0; i < M; i++) {
                int64_t c = g * Cg + i / S;
                out[(n * C + g * Cg) * S + i] = (xg[i] - mean) * rstd * (w ? w[c] : 1) + (b ? b[c] : 0);
            }
        }
}

/* ---- batch_norm --------------------------------------------------------------------- */

static void check_batch_norm_case(int32_t ndim, const int64_t *shape, bool affine, int steps)
{
    int64_t N = shape[0], C = shape[1], S = xt_shape_numel(ndim - 2, shape + 2);
    int64_t n = N * C * S;
    xt_tensor *w = affine ? randn1(C, 0.5, 1) : NULL, *b = affine ? randn1(C, 1, 0) : NULL;
    xt_tensor *rm = randn1(C, 1, 0), *rv = randn1(C, 0.1, 1);
    double *rm_ref = malloc(sizeof(double) * (size_t)C), *rv_ref = malloc(sizeof(double) * (size_t)C);
    double *ref = malloc(sizeof(double) * (size_t)n);
    for (int64_t c = 0; c < C; c++) {
        rm_ref[c] = test_f32(rm)[c];
        rv_ref[c] = test_f32(rv)[c];
    }
    for (int step = 0; step < steps; step++) {
        xt_tensor *x = test_randn(ndim, shape, 2, 0.5 * step - 1);
        xt_tensor *y = xt_batch_norm(x, w, b, rm, rv, 1, 0.1, 1e-5);
        CHECK(y && xt_same_shape(y, x));
        if (!y) break;
        ref_batch_norm(test_f32(x), N, C, S, test_f32(w), test_f32(b), rm_ref, rv_ref, true, 0.1, 1e-5, ref);
        CHECK(rel_err(y, ref, n) < 1e-5);
        CHECK(rel_err(rm, rm_ref, C) < 1e-6);
        CHECK(rel_err(rv, rv_ref, C) < 1e-6);
        xt_tensor_release(x);
        xt_tensor_release(y);
    }
    /* eval uses (and keeps) the running statistics */
    xt_tensor *x = test_randn(ndim, shape, 1, 0);
    xt_tensor *y = xt_batch_norm(x, w, b, rm, rv, 0, 0.1, 1e-5);
    CHECK(y != NULL);
    if (y) {
        ref_batch_norm(test_f32(x), N, C, S, test_f32(w), test_f32(b), rm_ref, rv_ref, false, 0.1, 1e-5, ref);
        CHECK(rel_err(y, ref, n) < 1e-5);
        CHECK(rel_err(rm, rm_ref, C) < 1e-6 && rel_err(rv, rv_ref, C) < 1e-6);
    }
    /* training without running statistics */
    xt_tensor *y2 = xt_batch_norm(x, w, b, NULL, NULL, 1, 0.1, 1e-5);
    CHECK(y2 != NULL);
    if (y2) {
        ref_batch_norm(test_f32(x), N, C, S, test_f32(w), test_f32(b), NULL, NULL, true, 0.1, 1e-5, ref);
        CHECK(rel_err(y2, ref, n) < 1e-5);
    }
    xt_tensor *ts[7] = {w, b, rm, rv, x, y, y2};
    for (int i = 0; i < 7; i++) xt_tensor_release(ts[i]);
    free(rm_ref);
    free(rv_ref);
    free(ref);
}

static void test_batch_norm_values(void)
{
    int64_t s4[4] = {4, 3, 5, 6}, s2[2] = {7, 5}, s3[3] = {2, 4, 9};
    check_batch_norm_case(4, s4, true, 3);
    check_batch_norm_case(4, s4, false, 2);
    check_batch_norm_case(2, s2, true, 3);
    check_batch_norm_case(2, s2, false, 2);
    check_batch_norm_case(3, s3, true, 2);
    /* the parallel paths: many channels as columns (several channel blocks), and big images */
    int64_t wide[2] = {600, 130}, big[4] = {8, 16, 24, 24};
    check_batch_norm_case(2, wide, true, 2);
    check_batch_norm_case(4, big, true, 2);

    /* a shifted input keeps its precision: the mean is taken out before squaring */
    int64_t shape[2] = {64, 3};
    xt_tensor *x = test_randn(2, shape, 1, 1000);
    xt_tensor *y = xt_batch_norm(x, NULL, NULL, NULL, NULL, 1, 0.1, 0);
    double *ref = malloc(sizeof(double) * 192);
    ref_batch_norm(test_f32(x), 64, 3, 1, NULL, NULL, NULL, NULL, true, 0.1, 0, ref);
    CHECK(y && rel_err(y, ref, 192) < 2e-4);
    free(ref);
    xt_tensor_release(x);
    xt_tensor_release(y);

    /* an empty batch in eval mode is fine */
    int64_t empty[4] = {0, 3, 2, 2};
    int64_t three = 3;
    xt_tensor *e = xt_zeros(4, empty, XT_FLOAT32), *rm = xt_zeros(1, &three, XT_FLOAT32);
    xt_tensor *rv = xt_full(1, &three, XT_FLOAT32, 1);
    xt_tensor *ye = xt_batch_norm(e, NULL, NULL, rm, rv, 0, 0.1, 1e-5);
    CHECK(ye && ye->shape[0] == 0 && ye->shape[1] == 3);
    xt_tensor_release(e);
    xt_tensor_release(ye);
    xt_tensor_release(rm);
    xt_tensor_release(rv);
}

typedef struct bn_ctx {
    xt_tensor *rm, *rv;
    int32_t training;
} bn_ctx;

static xt_tensor *f_batch_norm(xt_tensor *const *in, const void *ctx)
{
    const bn_ctx *c = ctx;
    return xt_batch_norm(in[0], in[1], in[2], c->rm, c->rv, c->training, 0.1, 1e-5);
}

static void test_batch_norm_grads(void)
{
    int64_t s4[4] = {3, 2, 2, 3}, s2[2] = {5, 3}, wide[2] = {3, 70};
    const int64_t *shapes[3] = {s4, s2, wide};
    int32_t ndims[3] = {4, 2, 2};
    for (int si = 0; si < 3; si++) {
        int64_t C = shapes[si][1];
        for (int training = 0; training <= 1; training++)
            for (int affine = 0; affine <= 1; affine++) {
                if (si == 2 && !affine) continue;
                xt_tensor *in[3] = {test_randn(ndims[si], shapes[si], 1.5, 0.3),
                                    affine ? randn1(C, 0.5, 1) : NULL,
                                    affine ? randn1(C, 1, 0) : NULL};
                bn_ctx c = {randn1(C, 0.5, 0), randn1(C, 0.2, 1.2), training};
                char name[96];
                snprintf(name, sizeof name, "batch_norm %dd %s %s", ndims[si],
                         training ? "train" : "eval", affine ? "affine" : "plain");
                CHECK(test_gradcheck(name, f_batch_norm, &c, 3, in));
                if (training) {  /* and without running statistics */
                    xt_tensor_release(c.rm);
                    xt_tensor_release(c.rv);
                    c.rm = c.rv = NULL;
                    snprintf(name, sizeof name, "batch_norm %dd train no stats %s", ndims[si],
                             affine ? "affine" : "plain");
                    CHECK(test_gradcheck(name, f_batch_norm, &c, 3, in));
                }
                for (int k = 0; k < 3; k++) xt_tensor_release(in[k]);
                xt_tensor_release(c.rm);
                xt_tensor_release(c.rv);
            }
    }

    /* only the weight needs a gradient: x and bias get none */
    int64_t shape[4] = {2, 3, 2, 2}, C = 3;
    xt_tensor *x = test_randn(4, shape, 1, 0), *w = randn1(C, 0.5, 1), *b = randn1(C, 1, 0);
    xt_set_requires_grad(w, 1);
    xt_tensor *y = xt_batch_norm(x, w, b, NULL, NULL, 1, 0.1, 1e-5);
    xt_tensor *dy = xt_randn(&test_rng, 4, shape);
    CHECK(y && xt_backward(y, dy, 0) == XT_OK);
    CHECK(w->grad && !x->grad && !b->grad);
    xt_set_requires_grad(w, 0);
    xt_set_grad(w, NULL);
    xt_tensor_release(y);
    xt_tensor_release(dy);
    xt_tensor_release(x);
    xt_tensor_release(w);
    xt_tensor_release(b);
}

/* The backward of an eval-mode node uses the statistics of its forward, even after a
 * training step has moved the running statistics. */
static void test_batch_norm_saved_stats(void)
{
    int64_t shape[2] = {4, 3}, C = 3;
    xt_tensor *x = test_randn(2, shape, 1, 0), *w = randn1(C, 0.5, 1);
    xt_tensor *rm = randn1(C, 1, 0), *rv = randn1(C, 0.1, 1);
    xt_tensor *rv_before = xt_clone(rv);
    xt_set_requires_grad(x, 1);
    xt_tensor *y = xt_batch_norm(x, w, NULL, rm, rv, 0, 0.1, 1e-5);
    xt_tensor *x2 = test_randn(2, shape, 3, 2);
    xt_tensor *y2 = xt_batch_norm(x2, w, NULL, rm, rv, 1, 0.5, 1e-5);  /* moves rm, rv */
    xt_tensor *dy = xt_full(2, shape, XT_FLOAT32, 1);
    CHECK(y && y2 && xt_backward(y, dy, 0) == XT_OK);
    if (x->grad)
        for (int64_t i = 0; i < 12; i++)
            CHECK_NEAR(test_f32(x->grad)[i], test_f32(w)[i % 3] / sqrt(test_f32(rv_before)[i % 3] + 1e-5), 1e-5);
    xt_tensor *ts[9] = {x, w, rm, rv, rv_before, y, x2, y2, dy};
    for (int i = 0; i < 9; i++) xt_tensor_release(ts[i]);
}

/* ---- layer_norm ---------------------------------------------------------------------- */

static void check_layer_norm_case(int32_t ndim, const int64_t *shape, int32_t nd, bool has_w,
                                  bool has_b)
{
    const int64_t *nshape = shape + (ndim - nd);
    int64_t D = xt_shape_numel(nd, nshape), n = xt_shape_numel(ndim, shape), R = n / D;
    xt_tensor *x = test_randn(ndim, shape, 2, 1);
    xt_tensor *w = has_w ? test_randn(nd, nshape, 0.5, 1) : NULL;
    xt_tensor *b = has_b ? test_randn(nd, nshape, 1, 0) : NULL;
    xt_tensor *y = xt_layer_norm(x, nd, w, b, 1e-5);
    double *ref = malloc(sizeof(double) * (size_t)n);
    ref_layer_norm(test_f32(x), R, D, test_f32(w), test_f32(b), 1e-5, ref);
    CHECK(y && xt_same_shape(y, x) && rel_err(y, ref, n) < 1e-5);
    free(ref);
    xt_tensor_release(x);
    xt_tensor_release(w);
    xt_tensor_release(b);
    xt_tensor_release(y);
}

static void test_layer_norm_values(void)
{
    int64_t s3[3] = {2, 3, 8}, s2[2] = {5, 33}, big[2] = {300, 257};
    check_layer_norm_case(3, s3, 1, true, true);
    check_layer_norm_case(3, s3, 2, true, true);
    check_layer_norm_case(3, s3, 3, false, false);
    check_layer_norm_case(3, s3, 1, true, false);
    check_layer_norm_case(3, s3, 1, false, true);
    check_layer_norm_case(2, s2, 1, false, false);
    check_layer_norm_case(2, big, 1, true, true);

    /* a strided (transposed) view: the same as its contiguous copy */
    int64_t shape[2] = {6, 4};
    xt_tensor *base = test_randn(2, shape, 1, 0);
    int64_t tshape[2] = {4, 6}, tstrides[2] = {1, 4};
    xt_tensor *t = xt_tensor_new_view(base->storage, XT_FLOAT32, 2, tshape, tstrides, 0);
    xt_tensor *tc = xt_clone(t);
    xt_tensor *y = xt_layer_norm(t, 1, NULL, NULL, 1e-5), *yc = xt_layer_norm(tc, 1, NULL, NULL, 1e-5);
    CHECK(y && yc && test_max_diff(y, yc) == 0);
    /* and its gradient arrives in the view's shape */
    xt_set_requires_grad(base, 1);
    xt_tensor *t2 = xt_tensor_new_view(base->storage, XT_FLOAT32, 2, tshape, tstrides, 0);
    xt_set_requires_grad(t2, 1);
    xt_tensor *y2 = xt_layer_norm(t2, 1, NULL, NULL, 1e-5);
    xt_tensor *dy = xt_randn(&test_rng, 2, tshape);
    CHECK(y2 && xt_backward(y2, dy, 0) == XT_OK && t2->grad && t2->grad->shape[0] == 4);
    xt_tensor *ts[8] = {base, t, tc, y, yc, t2, y2, dy};
    for (int i = 0; i < 8; i++) xt_tensor_release(ts[i]);
}

typedef struct ln_ctx {
    int32_t nd;
} ln_ctx;

static xt_tensor *f_layer_norm(xt_tensor *const *in, const void *ctx)
{
    return xt_layer_norm(in[0], ((const ln_ctx *)ctx)->nd, in[1], in[2], 1e-5);
}

static void test_layer_norm_grads(void)
{
    int64_t shape[3] = {3, 4, 5};
    for (int32_t nd = 1; nd <= 2; nd++)
        for (int affine = 0; affine < 4; affine++) {  /* bit 0 weight, bit 1 bias */
            const int64_t *nshape = shape + (3 - nd);
            xt_tensor *in[3] = {test_randn(3, shape, 1.5, 0.5),
                                (affine & 1) ? test_randn(nd, nshape, 0.5, 1) : NULL,
                                (affine & 2) ? test_randn(nd, nshape, 1, 0) : NULL};
            ln_ctx c = {nd};
            char name[64];
            snprintf(name, sizeof name, "layer_norm over %d dims, affine %d", nd, affine);
            CHECK(test_gradcheck(name, f_layer_norm, &c, 3, in));
            for (int k = 0; k < 3; k++) xt_tensor_release(in[k]);
        }
}

/* ---- group_norm ----------------------------------------------------------------------- */

static void test_group_norm_values(void)
{
    struct { int32_t ndim; int64_t shape[4]; int32_t groups; bool affine; } cases[] = {
        {4, {2, 6, 3, 4}, 3, true}, {4, {2, 6, 3, 4}, 1, true}, {4, {2, 6, 3, 4}, 6, false},
        {3, {3, 4, 7}, 2, true},    {2, {5, 8}, 4, true},       {4, {4, 32, 16, 16}, 8, true},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int64_t *shape = cases[k].shape, N = shape[0], C = shape[1];
        int64_t S = xt_shape_numel(cases[k].ndim - 2, shape + 2), n = N * C * S;
        xt_tensor *x = test_randn(cases[k].ndim, shape, 2, 1);
        xt_tensor *w = cases[k].affine ? randn1(C, 0.5, 1) : NULL;
        xt_tensor *b = cases[k].affine ? randn1(C, 1, 0) : NULL;
        xt_tensor *y = xt_group_norm(x, cases[k].groups, w, b, 1e-5);
        double *ref = malloc(sizeof(double) * (size_t)n);
        ref_group_norm(test_f32(x), N, C, S, cases[k].groups, test_f32(w), test_f32(b), 1e-5, ref);
        CHECK(y && xt_same_shape(y, x) && rel_err(y, ref, n) < 1e-5);
        free(ref);
        xt_tensor_release(x);
        xt_tensor_release(w);
        xt_tensor_release(b);
        xt_tensor_release(y);
    }
}

typedef struct gn_ctx {
    int32_t groups;
} gn_ctx;

static xt_tensor *f_group_norm(xt_tensor *const *in, const void *ctx)
{
    return xt_group_norm(in[0], ((const gn_ctx *)ctx)->groups, in[1], in[2], 1e-5);
}

static void test_group_norm_grads(void)
{
    struct { int32_t ndim; int64_t shape[4]; int32_t groups; bool affine; } cases[] = {
        {4, {2, 6, 2, 2}, 3, true}, {4, {2, 6, 2, 2}, 3, false}, {3, {2, 4, 3}, 1, true},
        {3, {2, 4, 3}, 4, true},    {2, {3, 6}, 2, true},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int64_t C = cases[k].shape[1];
        xt_tensor *in[3] = {test_randn(cases[k].ndim, cases[k].shape, 1.5, 0.5),
                            cases[k].affine ? randn1(C, 0.5, 1) : NULL,
                            cases[k].affine ? randn1(C, 1, 0) : NULL};
        gn_ctx c = {cases[k].groups};
        char name[64];
        snprintf(name, sizeof name, "group_norm case %d", (int)k);
        CHECK(test_gradcheck(name, f_group_norm, &c, 3, in));
        for (int i = 0; i < 3; i++) xt_tensor_release(in[i]);
    }
}

/* ---- thread-count independence of the norms' values and gradients ---------------------- */

typedef xt_tensor *(*norm_fn)(xt_tensor *x, xt_tensor *w, xt_tensor *b);
static xt_tensor *bn4(xt_tensor *x, xt_tensor *w, xt_tensor *b)
{
    return xt_batch_norm(x, w, b, NULL, NULL, 1, 0.1, 1e-5);
}
static xt_tensor *ln1(xt_tensor *x, xt_tensor *w, xt_tensor *b)
{
    return xt_layer_norm(x, 1, w, b, 1e-5);
}
static xt_tensor *gn4(xt_tensor *x, xt_tensor *w, xt_tensor *b)
{
    return xt_group_norm(x, 4, w, b, 1e-5);
}

/* runs fn forward and backward; returns {y, dx, dw, db} */
static void run_norm(norm_fn fn, xt_tensor *x, xt_tensor *w, xt_tensor *b, xt_tensor *dy,
                     xt_tensor **res)
{
    xt_tensor *in[3] = {x, w, b};
    for (int k = 0; k < 3; k++) {
        xt_set_grad(in[k], NULL);
        xt_set_requires_grad(in[k], 1);
    }
    res[0] = fn(x, w, b);
    CHECK(res[0] && xt_backward(res[0], dy, 0) == XT_OK);
    for (int k = 0; k < 3; k++) {
        res[k + 1] = xt_get_grad(in[k]);
        xt_set_grad(in[k], NULL);
        xt_set_requires_grad(in[k], 0);
    }
}

static void test_threads(void)
{
    struct { norm_fn fn; int32_t ndim; int64_t shape[4]; int64_t wn; const char *name; } cases[] = {
        {bn4, 4, {16, 24, 12, 12}, 24, "batch_norm 4d"},
        {bn4, 2, {2000, 100}, 100, "batch_norm 2d"},
        {ln1, 2, {1024, 96}, 96, "layer_norm"},
        {gn4, 4, {8, 32, 12, 12}, 32, "group_norm"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        xt_tensor *x = test_randn(cases[k].ndim, cases[k].shape, 1, 0.3);
        xt_tensor *w = randn1(cases[k].wn, 0.5, 1), *b = randn1(cases[k].wn, 1, 0);
        xt_tensor *dy = xt_randn(&test_rng, cases[k].ndim, cases[k].shape);
        xt_tensor *r1[4], *r2[4];
        xt_set_num_threads(1);
        run_norm(cases[k].fn, x, w, b, dy, r1);
        xt_set_num_threads(2);
        run_norm(cases[k].fn, x, w, b, dy, r2);
        for (int i = 0; i < 4; i++) {
            double d = test_max_diff(r1[i], r2[i]);
            if (!(d < 1e-4)) fprintf(stderr, "threads %s result %d differs by %g\n", cases[k].name, i, d);
            CHECK(d < 1e-4);
            xt_tensor_release(r1[i]);
            xt_tensor_release(r2[i]);
        }
        xt_tensor_release(x);
        xt_tensor_release(w);
        xt_tensor_release(b);
        xt_tensor_release(dy);
    }
}

/* ---- dropout ------------------------------------------------------------------------------ */

static void test_dropout(void)
{
    int64_t n = 100003;
    xt_tensor *x = test_randn(1, &n, 1, 3);  /* away from zero, so a zero means dropped */
    xt_rng a = {77, 5}, b = {77, 5};
    xt_set_num_threads(1);
    xt_tensor *y1 = xt_dropout(x, &a, 0.3);
    xt_set_num_threads(2);
    xt_tensor *y2 = xt_dropout(x, &b, 0.3);
    CHECK(y1 && y2 && memcmp(y1->data, y2->data, (size_t)n * 4) == 0);
    CHECK(a.offset == 5 + (uint64_t)(n + 3) / 4 && a.offset == b.offset);
    int64_t kept = 0;
    bool scaled = true;
    for (int64_t i = 0; i < n; i++) {
        float v = test_f32(y1)[i];
        if (v != 0) {
            kept++;
            scaled = scaled && fabsf(v - test_f32(x)[i] / 0.7f) <= 1e-6f * fabsf(v);
        }
    }
    CHECK(scaled);
    CHECK(fabs((double)kept / (double)n - 0.7) < 0.01);
    /* the next draw uses a different mask */
    xt_tensor *y3 = xt_dropout(x, &a, 0.3);
    CHECK(y3 && memcmp(y1->data, y3->data, (size_t)n * 4) != 0);

    /* the backward applies the forward's mask */
    xt_set_requires_grad(x, 1);
    xt_rng c = {77, 5};
    xt_tensor *y4 = xt_dropout(x, &c, 0.3);
    xt_tensor *dy = xt_full(1, &n, XT_FLOAT32, 2);
    CHECK(y4 && memcmp(y4->data, y1->data, (size_t)n * 4) == 0);
    CHECK(y4 && xt_backward(y4, dy, 0) == XT_OK && x->grad);
    bool same_mask = x->grad != NULL;
    for (int64_t i = 0; same_mask && i < n; i++) {
        float g = test_f32(x->grad)[i];
        same_mask = test_f32(y1)[i] == 0 ? g == 0 : fabsf(g - 2 / 0.7f) < 1e-6f;
    }
    CHECK(same_mask);
    xt_set_grad(x, NULL);

    /* p == 0: a copy, the generator untouched; p == 1: zeros, zero gradient */
    xt_rng d = {9, 0};
    xt_tensor *y0 = xt_dropout(x, &d, 0);
    CHECK(y0 && y0 != x && test_max_diff(y0, x) == 0 && d.offset == 0);
    xt_tensor *yall = xt_dropout(x, &d, 1);
    CHECK(yall && test_f32(yall)[0] == 0 && test_f32(yall)[n - 1] == 0 && d.offset == 0);
    CHECK(yall && xt_backward(yall, dy, 0) == XT_OK && x->grad && test_f32(x->grad)[17] == 0);
    xt_set_grad(x, NULL);
    xt_set_requires_grad(x, 0);

    /* a strided input draws in C order, like its contiguous copy */
    int64_t shape[2] = {40, 30}, tshape[2] = {30, 40}, tstrides[2] = {1, 30};
    xt_tensor *base = test_randn(2, shape, 1, 3);
    xt_tensor *t = xt_tensor_new_view(base->storage, XT_FLOAT32, 2, tshape, tstrides, 0);
    xt_tensor *tc = xt_clone(t);
    xt_rng e1 = {3, 0}, e2 = {3, 0};
    xt_tensor *yt = xt_dropout(t, &e1, 0.5), *ytc = xt_dropout(tc, &e2, 0.5);
    CHECK(yt && ytc && test_max_diff(yt, ytc) == 0);

    xt_tensor *ts[12] = {x, y1, y2, y3, y4, dy, y0, yall, base, t, tc, yt};
    for (int i = 0; i < 12; i++) xt_tensor_release(ts[i]);
    xt_tensor_release(ytc);
}

typedef struct dropout_ctx {
    xt_rng start;
    double p;
} dropout_ctx;

static xt_tensor *f_dropout(xt_tensor *const *in, const void *ctx)
{
    const dropout_ctx *c = ctx;
    xt_rng rng = c->start;  /* the same mask for every evaluation */
    return xt_dropout(in[0], &rng, c->p);
}

static void test_dropout_grads(void)
{
    int64_t shape[2] = {5, 7};
    double ps[4] = {0, 0.25, 0.5, 1};
    for (int k = 0; k < 4; k++) {
        xt_tensor *x = test_randn(2, shape, 1, 0);
        dropout_ctx c = {{1234, 10}, ps[k]};
        char name[48];
        snprintf(name, sizeof name, "dropout p=%g", ps[k]);
        CHECK(test_gradcheck(name, f_dropout, &c, 1, &x));
        xt_tensor_release(x);
    }
}

/* ---- embedding ---------------------------------------------------------------------------- */

static xt_tensor *f_embedding(xt_tensor *const *in, const void *ctx)
{
    return xt_embedding(in[0], (xt_tensor *)ctx, 1);
}

static void test_embedding(void)
{
    int64_t wshape[2] = {10, 4}, ishape[2] = {3, 5};
    int64_t idx[15] = {1, 4, 4, 10, 2, 10, 10, 3, 1, 4, 6, 6, 6, 8, 4};
    xt_tensor *w = test_randn(2, wshape, 1, 0);
    xt_tensor *index = xt_from_data(2, ishape, XT_INT64, idx);
    xt_tensor *y = xt_embedding(w, index, 1);
    CHECK(y && y->ndim == 3 && y->shape[0] == 3 && y->shape[1] == 5 && y->shape[2] == 4);
    bool rows_ok = y != NULL;
    for (int i = 0; rows_ok && i < 15; i++)
        rows_ok = memcmp(test_f32(y) + i * 4, test_f32(w) + (idx[i] - 1) * 4, 16) == 0;
    CHECK(rows_ok);

    /* base 0 picks the same rows from indices one lower */
    int64_t idx0[15];
    for (int i = 0; i < 15; i++) idx0[i] = idx[i] - 1;
    xt_tensor *index0 = xt_from_data(2, ishape, XT_INT64, idx0);
    xt_tensor *y0 = xt_embedding(w, index0, 0);
    CHECK(y0 && test_max_diff(y, y0) == 0);

    /* repeated indices add up in the gradient */
    xt_tensor *wg = xt_clone(w);
    xt_set_requires_grad(wg, 1);
    xt_tensor *yg = xt_embedding(wg, index, 1);
    xt_tensor *dy = xt_randn(&test_rng, 3, yg ? yg->shape : wshape);
    CHECK(yg && xt_backward(yg, dy, 0) == XT_OK && wg->grad);
    if (wg->grad) {
        double ref[40] = {0};
        for (int i = 0; i < 15; i++)
            for (int j = 0; j < 4; j++) ref[(idx[i] - 1) * 4 + j] += test_f32(dy)[i * 4 + j];
        CHECK(rel_err(wg->grad, ref, 40) < 1e-6);
        CHECK(test_f32(wg->grad)[4 * 4] == 0);  /* row 5 is never picked */
    }
    xt_tensor *in[1] = {w};
    CHECK(test_gradcheck("embedding with repeated indices", f_embedding, index, 1, in));

    /* a 0-d index gives one row; an empty index gives [0, D] */
    int64_t seven = 7;
    xt_tensor *scalar = xt_from_data(0, NULL, XT_INT64, &seven);
    xt_tensor *ys = xt_embedding(w, scalar, 1);
    CHECK(ys && ys->ndim == 1 && ys->shape[0] == 4 && test_f32(ys)[2] == test_f32(w)[6 * 4 + 2]);
    int64_t zero = 0;
    xt_tensor *none = xt_empty(1, &zero, XT_INT64);
    xt_tensor *yn = xt_embedding(w, none, 1);
    CHECK(yn && yn->ndim == 2 && yn->shape[0] == 0 && yn->shape[1] == 4);

    /* the parallel backward (columns across threads) against a serial sum */
    int64_t V = 50, D = 96, n = 4000, big_w[2] = {V, D};
    xt_tensor *wb = test_randn(2, big_w, 1, 0);
    xt_tensor *ib = xt_randint(&test_rng, 1, V + 1, 1, &n);
    xt_set_requires_grad(wb, 1);
    xt_tensor *r[2] = {NULL, NULL};
    int64_t oshape[2] = {n, D};
    xt_tensor *dyb = xt_randn(&test_rng, 2, oshape);
    for (int threads = 1; threads <= 2; threads++) {
        xt_set_num_threads(threads);
        xt_tensor *yb = xt_embedding(wb, ib, 1);
        CHECK(yb && xt_backward(yb, dyb, 0) == XT_OK);
        r[threads - 1] = xt_get_grad(wb);
        xt_set_grad(wb, NULL);
        xt_tensor_release(yb);
    }
    double *ref = calloc((size_t)(V * D), sizeof(double));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < D; j++)
            ref[(((int64_t *)ib->data)[i] - 1) * D + j] += test_f32(dyb)[i * D + j];
    CHECK(r[0] && r[1] && test_max_diff(r[0], r[1]) == 0 && rel_err(r[0], ref, V * D) < 1e-5);
    free(ref);

    xt_tensor *ts[17] = {w, index, y, index0, y0, wg, yg, dy, scalar, ys, none, yn, wb, ib, dyb,
                         r[0], r[1]};
    for (int i = 0; i < 17; i++) xt_tensor_release(ts[i]);
}

/* ---- errors ---------------------------------------------------------------------------------- */

static void test_errors(void)
{
    int64_t s4[4] = {2, 3, 2, 2}, s2[2] = {4, 5}, three = 3;
    xt_tensor *x = test_randn(4, s4, 1, 0), *x2 = test_randn(2, s2, 1, 0);
    xt_tensor *v3 = randn1(3, 1, 0), *v4 = randn1(4, 1, 0), *v5 = randn1(5, 1, 0);
    xt_tensor *xi = xt_zeros(4, s4, XT_INT64), *v3i = xt_zeros(1, &three, XT_INT64);
    xt_tensor *rv3 = xt_full(1, &three, XT_FLOAT32, 1), *rm3 = xt_zeros(1, &three, XT_FLOAT32);
    xt_tensor *x1 = randn1(5, 1, 0);

    /* batch_norm */
    CHECK(!xt_batch_norm(NULL, NULL, NULL, NULL, NULL, 1, 0.1, 1e-5) && test_error_has("batch_norm: x is NULL"));
    CHECK(!xt_batch_norm(xi, NULL, NULL, NULL, NULL, 1, 0.1, 1e-5) &&
          test_error_has("batch_norm: expected float32 x, got int64"));
    CHECK(!xt_batch_norm(x1, NULL, NULL, NULL, NULL, 1, 0.1, 1e-5) &&
          test_error_has("batch_norm: expected x of shape [N,C,...] (at least 2 dims), got [5]"));
    CHECK(!xt_batch_norm(x, v4, NULL, NULL, NULL, 1, 0.1, 1e-5) &&
          test_error_has("batch_norm: weight has shape [4], expected [3]"));
    CHECK(!xt_batch_norm(x, v3, v4, NULL, NULL, 1, 0.1, 1e-5) &&
          test_error_has("batch_norm: bias has shape [4], expected [3]"));
    CHECK(!xt_batch_norm(x, v3i, NULL, NULL, NULL, 1, 0.1, 1e-5) &&
          test_error_has("batch_norm: expected float32 weight, got int64"));
    CHECK(!xt_batch_norm(x, NULL, NULL, v4, rv3, 1, 0.1, 1e-5) &&
          test_error_has("batch_norm: running_mean has shape [4], expected [3] (x has 3 channels"));
    CHECK(!xt_batch_norm(x, NULL, NULL, rm3, v5, 0, 0.1, 1e-5) &&
          test_error_has("batch_norm: running_var has shape [5], expected [3]"));
    CHECK(!xt_batch_norm(x, NULL, NULL, rm3, NULL, 1, 0.1, 1e-5) &&
          test_error_has("running_mean and running_var must both be given"));
    CHECK(!xt_batch_norm(x, NULL, NULL, NULL, NULL, 0, 0.1, 1e-5) &&
          test_error_has("batch_norm: running_mean and running_var are needed when not training"));
    CHECK(!xt_batch_norm(x, NULL, NULL, NULL, NULL, 1, 0.1, -1) && test_error_has("eps must be >= 0"));
    int64_t one_per[2] = {1, 3};
    xt_tensor *x13 = test_randn(2, one_per, 1, 0);
    CHECK(!xt_batch_norm(x13, NULL, NULL, NULL, NULL, 1, 0.1, 1e-5) &&
          test_error_has("batch_norm: expected more than 1 value per channel when training, got x of shape [1,3]"));
    xt_tensor *y13 = xt_batch_norm(x13, NULL, NULL, rm3, rv3, 0, 0.1, 1e-5);  /* fine in eval */
    CHECK(y13 != NULL);
    xt_tensor_release(y13);
    /* running stats that require grad are refused (an invisible in-place write) */
    xt_set_requires_grad(rm3, 1);
    CHECK(!xt_batch_norm(x, NULL, NULL, rm3, rv3, 1, 0.1, 1e-5));
    xt_set_requires_grad(rm3, 0);

    /* layer_norm */
    CHECK(!xt_layer_norm(NULL, 1, NULL, NULL, 1e-5) && test_error_has("layer_norm: x is NULL"));
    CHECK(!xt_layer_norm(xi, 1, NULL, NULL, 1e-5) && test_error_has("layer_norm: expected float32 x, got int64"));
    CHECK(!xt_layer_norm(x2, 1, v4, NULL, 1e-5) &&
          test_error_has("layer_norm: weight has shape [4], expected [5]"));
    CHECK(!xt_layer_norm(x2, 1, v5, v3, 1e-5) && test_error_has("layer_norm: bias has shape [3], expected [5]"));
    CHECK(!xt_layer_norm(x2, 2, v5, NULL, 1e-5) &&
          test_error_has("layer_norm: weight has shape [5], expected [4,5]"));
    CHECK(!xt_layer_norm(x2, 0, NULL, NULL, 1e-5) &&
          test_error_has("layer_norm: normalized_ndim must be in [1, 2] for x with 2 dims, got 0"));
    CHECK(!xt_layer_norm(x2, 3, NULL, NULL, 1e-5) && test_error_has("got 3"));
    CHECK(!xt_layer_norm(x2, 1, NULL, NULL, NAN) && test_error_has("eps"));

    /* group_norm */
    CHECK(!xt_group_norm(NULL, 1, NULL, NULL, 1e-5) && test_error_has("group_norm: x is NULL"));
    CHECK(!xt_group_norm(xi, 1, NULL, NULL, 1e-5) && test_error_has("group_norm: expected float32 x"));
    CHECK(!xt_group_norm(x1, 1, NULL, NULL, 1e-5) && test_error_has("at least 2 dims"));
    CHECK(!xt_group_norm(x, 2, NULL, NULL, 1e-5) &&
          test_error_has("group_norm: 2 groups do not divide 3 channels (dim 1 of x)"));
    xt_set_message_base(1);
    CHECK(!xt_group_norm(x, 2, NULL, NULL, 1e-5) && test_error_has("(dim 2 of x)"));
    CHECK(!xt_batch_norm(x, NULL, NULL, v4, rv3, 1, 0.1, 1e-5) && test_error_has("channels in dim 2)"));
    xt_set_message_base(0);
    CHECK(!xt_group_norm(x, 0, NULL, NULL, 1e-5) && test_error_has("group_norm: groups must be positive, got 0"));
    CHECK(!xt_group_norm(x, 3, v4, NULL, 1e-5) && test_error_has("group_norm: weight has shape [4], expected [3]"));
    CHECK(!xt_group_norm(x, 3, v3, v5, 1e-5) && test_error_has("group_norm: bias has shape [5], expected [3]"));

    /* dropout */
    xt_rng r = {1, 0};
    CHECK(!xt_dropout(NULL, &r, 0.5) && test_error_has("dropout: x is NULL"));
    CHECK(!xt_dropout(xi, &r, 0.5) && test_error_has("dropout: expected float32 x, got int64"));
    CHECK(!xt_dropout(x, &r, -0.1) && test_error_has("dropout: probability p must be in [0, 1], got -0.1"));
    CHECK(!xt_dropout(x, &r, 1.5) && test_error_has("got 1.5"));
    CHECK(!xt_dropout(x, &r, NAN) && test_error_has("dropout: probability p must be in [0, 1]"));
    CHECK(!xt_dropout(x, NULL, 0.5) && test_error_has("dropout: rng is NULL"));
    CHECK(r.offset == 0);

    /* embedding */
    int64_t wshape[2] = {10, 4}, bad[3] = {3, 11, 1};
    xt_tensor *w = test_randn(2, wshape, 1, 0);
    xt_tensor *ib = xt_from_data(1, &three, XT_INT64, bad);
    CHECK(!xt_embedding(w, ib, 1) && test_error_has("embedding: index 11 out of range [1, 10]"));
    CHECK(!xt_embedding(w, ib, 0) && test_error_has("embedding: index 11 out of range [0, 9]"));
    int64_t low[2] = {0, -5};
    xt_tensor *il = xt_from_data(1, (int64_t[]){2}, XT_INT64, low);
    CHECK(!xt_embedding(w, il, 1) && test_error_has("embedding: index 0 out of range [1, 10]"));
    CHECK(!xt_embedding(w, il, 0) && test_error_has("embedding: index -5 out of range [0, 9]"));
    int64_t huge[1] = {INT64_MIN};
    xt_tensor *ih = xt_from_data(1, (int64_t[]){1}, XT_INT64, huge);
    CHECK(!xt_embedding(w, ih, 1) && test_error_has("out of range [1, 10]"));
    CHECK(!xt_embedding(NULL, ib, 1) && test_error_has("embedding: weight is NULL"));
    CHECK(!xt_embedding(w, NULL, 1) && test_error_has("embedding: index is NULL"));
    CHECK(!xt_embedding(w, x, 1) && test_error_has("embedding: expected int64 index, got float32"));
    CHECK(!xt_embedding(v3i, ib, 1) && test_error_has("embedding: expected float32 weight, got int64"));
    CHECK(!xt_embedding(x, ib, 1) && test_error_has("embedding: expected weight of shape [V,D], got [2,3,2,2]"));
    int64_t s8[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    xt_tensor *i8 = xt_full(8, s8, XT_INT64, 1);
    CHECK(!xt_embedding(w, i8, 1) && test_error_has("more than 8"));
    int64_t empty_w[2] = {0, 4};
    xt_tensor *w0 = xt_zeros(2, empty_w, XT_FLOAT32);
    CHECK(!xt_embedding(w0, ib, 1) && test_error_has("embedding: index 3 out of range (weight has no rows)"));

    xt_tensor *ts[17] = {x, x2, v3, v4, v5, xi, v3i, rv3, rm3, x1, x13, w, ib, il, ih, i8, w0};
    for (int i = 0; i < 17; i++) xt_tensor_release(ts[i]);
}

/* ---- PyTorch fixtures -------------------------------------------------------------------------- */

/* got matches want (same shape) within 1e-4 of want's largest magnitude (at least 1). */
static bool close_to(const char *what, xt_tensor *got, xt_tensor *want)
{
    if (!got || !want || got->ndim != want->ndim ||
        memcmp(got->shape, want->shape, sizeof(int64_t) * (size_t)got->ndim) != 0) {
        fprintf(stderr, "fixture %s: missing or shaped differently\n", what);
        return false;
    }
    double scale = 1;
    for (int64_t i = 0; i < xt_numel(want); i++) scale = fmax(scale, fabs(test_f32(want)[i]));
    return test_close(what, got, want, 1e-4 * scale);
}

/* Runs one fixture case: kind 0 batch_norm train, 1 batch_norm eval, 2 layer_norm (nd in
 * arg), 3 group_norm (groups in arg), 4 embedding. */
static void check_fixture(const char *name, int kind, int32_t arg, bool affine)
{
    xt_tensor *x = NULL, *w = NULL, *b = NULL, *rm = NULL, *rv = NULL, *index = NULL, *y = NULL;
    if (kind == 4) {
        w = test_fixture("norm", name, "weight");
        index = test_fixture("norm", name, "index");
    } else {
        x = test_fixture("norm", name, "x");
        if (affine) {
            w = test_fixture("norm", name, "weight");
            b = test_fixture("norm", name, "bias");
        }
        if (kind <= 1) {
            rm = test_fixture("norm", name, "running_mean");
            rv = test_fixture("norm", name, "running_var");
        }
    }
    xt_tensor *dout = test_fixture("norm", name, "dout"), *want = test_fixture("norm", name, "out");
    xt_tensor *grads[3] = {x, w, b};
    const char *gname[3] = {"dx", "dweight", "dbias"};
    bool loaded = dout && want && (kind == 4 ? w && index : x != NULL) && (!affine || (w && b)) &&
                  (kind > 1 || (rm && rv));
    CHECK(loaded);
    if (loaded) {
        for (int k = 0; k < 3; k++)
            if (grads[k]) xt_set_requires_grad(grads[k], 1);
        switch (kind) {
        case 0: y = xt_batch_norm(x, w, b, rm, rv, 1, 0.1, 1e-5); break;
        case 1: y = xt_batch_norm(x, w, b, rm, rv, 0, 0.1, 1e-5); break;
        case 2: y = xt_layer_norm(x, arg, w, b, 1e-5); break;
        case 3: y = xt_group_norm(x, arg, w, b, 1e-5); break;
        default: y = xt_embedding(w, index, 1); break;
        }
        char what[128];
        snprintf(what, sizeof what, "%s out", name);
        CHECK(close_to(what, y, want));
        CHECK(y && xt_backward(y, dout, 0) == XT_OK);
        for (int k = 0; k < 3; k++) {
            if (!grads[k]) continue;
            xt_tensor *g = test_fixture("norm", name, gname[k]);
            snprintf(what, sizeof what, "%s %s", name, gname[k]);
            CHECK(close_to(what, grads[k]->grad, g));
            xt_tensor_release(g);
        }
        if (kind == 0) {
            xt_tensor *m = test_fixture("norm", name, "running_mean_after"), *v = test_fixture("norm", name, "running_var_after");
            snprintf(what, sizeof what, "%s running_mean", name);
            CHECK(close_to(what, rm, m));
            snprintf(what, sizeof what, "%s running_var", name);
            CHECK(close_to(what, rv, v));
            xt_tensor_release(m);
            xt_tensor_release(v);
        }
    }
    xt_tensor *ts[9] = {x, w, b, rm, rv, index, y, dout, want};
    for (int i = 0; i < 9; i++) xt_tensor_release(ts[i]);
}

static void test_fixtures(void)
{
    check_fixture("bn_train_4d", 0, 0, true);
    check_fixture("bn_train_2d", 0, 0, false);
    check_fixture("bn_eval_4d", 1, 0, true);
    check_fixture("ln_2dims", 2, 2, true);
    check_fixture("ln_plain", 2, 1, false);
    check_fixture("gn", 3, 3, true);
    check_fixture("emb", 4, 0, false);
}

int main(void)
{
    test_seed("test_norm", SEED);
    int64_t live = xt_live_bytes();
    test_batch_norm_values();
    test_batch_norm_grads();
    test_batch_norm_saved_stats();
    test_layer_norm_values();
    test_layer_norm_grads();
    test_group_norm_values();
    test_group_norm_grads();
    test_threads();
    test_dropout();
    test_dropout_grads();
    test_embedding();
    test_errors();
    test_fixtures();
    CHECK(xt_live_bytes() == live);  /* everything released */
    return check_report("test_norm");
}
