/*
 * test_loss.c: cross_entropy, nll_loss and bce_with_logits. Values against naive
 * double-precision loops for every option (weight, ignore_index, label_smoothing, the three
 * reductions, [N,C], [N,C,d1,...] and [C] layouts, base 0 and 1), a finite-difference
 * gradient check of every option combination, PyTorch fixtures (tests/fixtures/loss, made by
 * make_loss_fixtures.py), numerical stability, strided inputs, thread-count independence
 * and every error path.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"

enum { SEED = 20240612 };

static xt_tensor *targets(int32_t ndim, const int64_t *shape, int64_t C, int64_t base,
                          int64_t ignore, int every)
{
    xt_tensor *c = xt_rand(&test_rng, ndim, shape);
    xt_tensor *t = xt_empty(ndim, shape, XT_INT64);
    int64_t *tv = t->data;
    for (int64_t i = 0; i < xt_numel(t); i++) {
        int64_t k = (int64_t)(test_f32(c)[i] * (float)C);
        tv[i] = every > 0 && i % every == 1 ? ignore : base + (k < C ? k : C - 1);
    }
    xt_tensor_release(c);
    return t;
}

static xt_tensor *positive(int64_t n)
{
    xt_tensor *t = xt_rand(&test_rng, 1, &n);
    for (int64_t i = 0; i < n; i++) test_f32(t)[i] += 0.25f;
    return t;
}

/* ---- naive references (double) ------------------------------------------------------- */

typedef struct class_case {
    bool ce;                  /* cross_entropy, else nll_loss */
    xt_tensor *target, *weight;
    int64_t ignore, base;
    double smoothing;
    int32_t reduction;
} class_case;

/* x [N,C,S] contiguous; per[p] gets each position's loss; returns the reduced value. */
static double ref_class(const class_case *k, const float *x, int64_t N, int64_t C, int64_t S,
                        double *per)
{
    const int64_t *t = k->target->data;
    const float *w = k->weight ? k->weight->data : NULL;
    double total = 0, sum = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t s = 0; s < S; s++) {
            int64_t p = n * S + s;
            per[p] = 0;
            if (t[p] == k->ignore) continue;
            int64_t cls = t[p] - k->base;
            double wt = w ? w[cls] : 1;
            total += wt;
            if (!k->ce) {
                per[p] = -wt * x[(n * C + cls) * S + s];
            } else {
                double m = -INFINITY, se = 0, smooth = 0;
                for (int64_t c = 0; c < C; c++) m = fmax(m, x[(n * C + c) * S + s]);
                for (int64_t c = 0; c < C; c++) se += exp(x[(n * C + c) * S + s] - m);
                double lse = m + log(se);
                for (int64_t c = 0; c < C; c++)
                    smooth += (w ? w[c] : 1) * (lse - x[(n * C + c) * S + s]);
                per[p] = (1 - k->smoothing) * wt * (lse - x[(n * C + cls) * S + s]) +
                         k->smoothing / (double)C * smooth;
            }
            sum += per[p];
        }
    return k->reduction == XT_REDUCTION_MEAN ? sum / total : sum;
}

static double softplus(double v) { return v > 0 ? v + log1p(exp(-v)) : log1p(exp(v)); }

/* x, y [R,K]; pw [K], [1] or NULL */
static double ref_bce(const float *x, const float *y, const float *pw, int64_t npw, int64_t n,
                      int64_t K, int32_t reduction, double *per)
{
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        double p = pw ? pw[npw == 1 ? 0 : i % K] : 1;
        per[i] = (1 - y[i]) * x[i] + (1 + (p - 1) * y[i]) * softplus(-x[i]);
        sum += per[i];
    }
    return reduction == XT_REDUCTION_MEAN ? sum / (double)n : sum;
}

static xt_tensor *run_class(const class_case *k, xt_tensor *x)
{
    return k->ce ? xt_cross_entropy(x, k->target, k->weight, k->ignore, k->smoothing,
                                    k->reduction, k->base)
                 : xt_nll_loss(x, k->target, k->weight, k->ignore, k->reduction, k->base);
}

/* out matches the reference within rtol of its scale. */
static bool matches(const char *what, const xt_tensor *out, const double *per, double reduced,
                    int32_t reduction, int64_t n, double rtol)
{
    if (!out) {
        fprintf(stderr, "%s: failed: %s\n", what, xt_last_error());
        return false;
    }
    if (reduction != XT_REDUCTION_NONE) {
        if (out->ndim != 0) {
            fprintf(stderr, "%s: a reduced loss should be 0-dim, got %d dims\n", what, out->ndim);
            return false;
        }
        double got = test_f32(out)[0];
        if (fabs(got - reduced) <= rtol * (1 + fabs(reduced))) return true;
        fprintf(stderr, "%s: got %.8g, expected %.8g\n", what, got, reduced);
        return false;
    }
    if (xt_numel(out) != n) {
        fprintf(stderr, "%s: %lld losses, expected %lld\n", what, (long long)xt_numel(out),
                (long long)n);
        return false;
    }
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(test_f32(out)[i] - per[i]) <= rtol * (1 + fabs(per[i])))) {
            fprintf(stderr, "%s: loss %lld is %.8g, expected %.8g\n", what, (long long)i,
                    test_f32(out)[i], per[i]);
            return false;
        }
    return true;
}

/* ---- class losses: every option against the reference, and a gradient check ------------ */

static xt_tensor *f_class(xt_tensor *const *in, const void *ctx)
{
    return run_class(ctx, in[0]);
}

static const char *reduction_name[3] = {"none", "mean", "sum"};

/* shape: [N,C,...] or [C]; every combination of the options for one layout. */
static void check_class_layout(bool ce, int32_t ndim, const int64_t *shape, bool gradcheck)
{
    int64_t C = ndim == 1 ? shape[0] : shape[1], N = ndim == 1 ? 1 : shape[0], S = 1;
    int64_t tshape[XT_MAX_DIMS];
    int32_t tndim = ndim == 1 ? 0 : ndim - 1;
    for (int32_t d = 0, j = 0; d < ndim; d++)
        if (d != (ndim == 1 ? 0 : 1)) tshape[j++] = shape[d];
    for (int32_t d = 2; d < ndim; d++) S *= shape[d];
    double *per = malloc(sizeof(double) * (size_t)(N * S));
    for (int weighted = 0; weighted < 2; weighted++)
        for (int ignoring = 0; ignoring < 2; ignoring++)
            for (int smoothing = 0; smoothing < (ce ? 3 : 1); smoothing++)
                for (int32_t red = 0; red < 3; red++)
                    for (int64_t base = 0; base < 2; base++) {
                        xt_tensor *x = test_randn(ndim, shape, 1.5, 0.0);
                        if (!ce) {  /* nll reads log-probabilities; any values do */
                            for (int64_t i = 0; i < xt_numel(x); i++)
                                test_f32(x)[i] = -fabsf(test_f32(x)[i]);
                        }
                        /* ignore_index -100 (PyTorch's default), or a real class (not for a
                         * single position, which could then be all ignored: see
                         * test_all_ignored) */
                        int64_t ignore = ignoring && N * S > 1 ? base + 1 : -100;
                        class_case k = {ce, targets(tndim, tshape, C, base, ignore, ignoring ? 3 : 0),
                                        weighted ? positive(C) : NULL, ignore, base,
                                        smoothing == 0 ? 0.0 : smoothing == 1 ? 0.3 : 1.0, red};
                        char what[200];
                        snprintf(what, sizeof what,
                                 "%s ndim %d weight %d ignore %d smoothing %g %s base %lld",
                                 ce ? "cross_entropy" : "nll_loss", ndim, weighted, ignoring,
                                 k.smoothing, reduction_name[red], (long long)base);
                        xt_tensor *out = run_class(&k, x);
                        double want = ref_class(&k, x->data, N, C, S, per);
                        CHECK(matches(what, out, per, want, red, N * S, 2e-5));
                        if (gradcheck && base == 1 && smoothing < 2)
                            CHECK(test_gradcheck(what, f_class, &k, 1, &x));
                        xt_tensor_release(out);
                        xt_tensor_release(x);
                        xt_tensor_release(k.target);
                        xt_tensor_release(k.weight);
                    }
    free(per);
}

static void test_class_losses(void)
{
    const int64_t rows[2] = {5, 4}, spatial[4] = {2, 3, 2, 3}, seq[3] = {2, 4, 3};
    const int64_t unbatched[1] = {6};
    for (int ce = 0; ce < 2; ce++) {
        check_class_layout(ce, 2, rows, true);
        check_class_layout(ce, 4, spatial, true);
        check_class_layout(ce, 3, seq, false);
        check_class_layout(ce, 1, unbatched, true);
    }
    /* large enough for the threaded paths: [N,C] rows and [N,C,S] tiles across threads */
    const int64_t big_rows[2] = {700, 97}, big_spatial[3] = {3, 11, 1500};
    for (int ce = 0; ce < 2; ce++) {
        const int64_t *shapes[2] = {big_rows, big_spatial};
        int32_t ndims[2] = {2, 3};
        for (int s = 0; s < 2; s++) {
            const int64_t *shape = shapes[s];
            int64_t C = shape[1], N = shape[0], S = ndims[s] == 3 ? shape[2] : 1;
            int64_t tshape[2] = {N, S};
            xt_tensor *x = test_randn(ndims[s], shape, 3.0, 0.0);
            double *per = malloc(sizeof(double) * (size_t)(N * S));
            class_case k = {ce, targets(ndims[s] - 1, tshape, C, 1, 0, 7), positive(C), 0, 1,
                            ce ? 0.1 : 0.0, XT_REDUCTION_MEAN};
            for (int32_t red = 0; red < 3; red++) {
                k.reduction = red;
                xt_tensor *out = run_class(&k, x);
                double want = ref_class(&k, x->data, N, C, S, per);
                CHECK(matches(ce ? "cross_entropy big" : "nll_loss big", out, per, want, red,
                              N * S, 2e-5));
                xt_tensor_release(out);
            }
            free(per);
            xt_tensor_release(x);
            xt_tensor_release(k.target);
            xt_tensor_release(k.weight);
        }
    }
}

/* The gradient of a large case against softmax - smoothed one-hot written out in double. */
static void test_cross_entropy_grad_big(void)
{
    const int64_t shape[3] = {4, 9, 1200};
    int64_t N = 4, C = 9, S = 1200, tshape[2] = {N, S};
    xt_tensor *x = test_randn(3, shape, 2.0, 0.0);
    xt_tensor *w = positive(C);
    xt_tensor *t = targets(2, tshape, C, 0, -100, 5);
    const double e = 0.2;
    xt_set_requires_grad(x, 1);
    xt_tensor *out = xt_cross_entropy(x, t, w, -100, e, XT_REDUCTION_MEAN, 0);
    CHECK(out && xt_backward(out, NULL, 0) == XT_OK);
    const int64_t *tv = t->data;
    const float *wv = w->data, *xv = x->data;
    double total = 0;
    for (int64_t p = 0; p < N * S; p++)
        if (tv[p] != -100) total += wv[tv[p]];
    double worst = 0;
    for (int64_t n = 0; n < N && x->grad; n++)
        for (int64_t s = 0; s < S; s++) {
            int64_t p = n * S + s;
            double m = -INFINITY, se = 0, W = 0;
            for (int64_t c = 0; c < C; c++) m = fmax(m, xv[(n * C + c) * S + s]);
            for (int64_t c = 0; c < C; c++) se += exp(xv[(n * C + c) * S + s] - m);
            for (int64_t c = 0; c < C; c++) W += wv[c];
            for (int64_t c = 0; c < C; c++) {
                double want = 0;
                if (tv[p] != -100) {
                    double q = (c == tv[p] ? (1 - e) * wv[c] : 0) + e / (double)C * wv[c];
                    double Q = (1 - e) * wv[tv[p]] + e / (double)C * W;
                    want = (exp(xv[(n * C + c) * S + s] - m) / se * Q - q) / total;
                }
                double d = fabs(test_f32(x->grad)[(n * C + c) * S + s] - want);
                if (d > worst) worst = d;
            }
        }
    CHECK(x->grad && worst < 1e-7);
    xt_tensor_release(out);
    xt_tensor *ts[3] = {x, w, t};
    for (int i = 0; i < 3; i++) xt_tensor_release(ts[i]);
}

/* ---- bce_with_logits ---------------------------------------------------------------------- */

typedef struct bce_case {
    xt_tensor *target;        /* when the target is not checked as an input */
    xt_tensor *pos_weight;
    int32_t reduction;
} bce_case;

static xt_tensor *f_bce(xt_tensor *const *in, const void *ctx)
{
    const bce_case *k = ctx;
    return xt_bce_with_logits(in[0], in[1] ? in[1] : k->target, k->pos_weight, k->reduction);
}

static void test_bce(void)
{
    const int64_t shape[3] = {2, 3, 4};
    int64_t n = 24, K = 4, one = 1;
    for (int pw_kind = 0; pw_kind < 3; pw_kind++)
        for (int32_t red = 0; red < 3; red++)
            for (int soft = 0; soft < 2; soft++) {
                xt_tensor *x = test_randn(3, shape, 3.0, 0.0);
                xt_tensor *y = xt_rand(&test_rng, 3, shape);
                if (!soft)
                    for (int64_t i = 0; i < n; i++) test_f32(y)[i] = test_f32(y)[i] > 0.5f;
                bce_case k = {y, pw_kind == 0 ? NULL : pw_kind == 1 ? positive(K) : positive(one),
                              red};
                if (k.pos_weight)
                    for (int64_t i = 0; i < xt_numel(k.pos_weight); i++) test_f32(k.pos_weight)[i] *= 3;
                double per[24];
                double want = ref_bce(x->data, y->data, test_f32(k.pos_weight),
                                      k.pos_weight ? xt_numel(k.pos_weight) : 0, n, K, red, per);
                char what[128];
                snprintf(what, sizeof what, "bce_with_logits pos_weight %d %s soft %d", pw_kind,
                         reduction_name[red], soft);
                xt_tensor *out = xt_bce_with_logits(x, y, k.pos_weight, red);
                CHECK(matches(what, out, per, want, red, n, 2e-5));
                xt_tensor *in[2] = {x, soft ? y : NULL};
                CHECK(test_gradcheck(what, f_bce, &k, 2, in));
                xt_tensor_release(out);
                xt_tensor_release(x);
                xt_tensor_release(y);
                xt_tensor_release(k.pos_weight);
            }
    /* threaded path, the pos_weight runs crossing block boundaries (K does not divide 4096) */
    const int64_t big[2] = {3001, 13};
    int64_t nb = 3001 * 13;
    xt_tensor *x = test_randn(2, big, 4.0, 0.0), *y = xt_rand(&test_rng, 2, big);
    xt_tensor *pw = positive(13);
    double *per = malloc(sizeof(double) * (size_t)nb);
    for (int32_t red = 0; red < 3; red++) {
        double want = ref_bce(x->data, y->data, pw->data, 13, nb, 13, red, per);
        xt_tensor *out = xt_bce_with_logits(x, y, pw, red);
        CHECK(matches("bce_with_logits big", out, per, want, red, nb, 2e-5));
        xt_tensor_release(out);
    }
    free(per);
    xt_tensor_release(x);
    xt_tensor_release(y);
    xt_tensor_release(pw);
}

/* ---- numerics, layouts, threads ---------------------------------------------------------- */

static void test_stability(void)
{
    /* logits far beyond exp's range: the loss is exact, the gradient finite */
    float zv[6] = {1e4f, -1e4f, 0.0f, -3e4f, 2e4f, 2e4f};
    int64_t shape[2] = {2, 3}, tn = 2;
    int64_t tv[2] = {1, 2};
    xt_tensor *z = xt_from_data(2, shape, XT_FLOAT32, zv), *t = xt_from_data(1, &tn, XT_INT64, tv);
    xt_set_requires_grad(z, 1);
    xt_tensor *out = xt_cross_entropy(z, t, NULL, -100, 0.0, XT_REDUCTION_NONE, 0);
    CHECK(out && fabsf(test_f32(out)[0] - 2e4f) <= 1.0f);
    CHECK(out && fabsf(test_f32(out)[1] - logf(2.0f)) < 1e-6f);
    CHECK(out && xt_backward(out, NULL, 0) != XT_OK);  /* not a one-element root */
    xt_tensor *ones = xt_full(1, &tn, XT_FLOAT32, 1.0);
    CHECK(out && xt_backward(out, ones, 0) == XT_OK);
    bool finite = z->grad != NULL;
    for (int64_t i = 0; finite && i < 6; i++) finite = isfinite(test_f32(z->grad)[i]);
    CHECK(finite);
    CHECK(z->grad && fabsf(test_f32(z->grad)[4] - 0.5f) < 1e-6f &&
          fabsf(test_f32(z->grad)[5] + 0.5f) < 1e-6f);
    xt_tensor_release(out);

    /* bce far out: softplus does not overflow, and the gradient saturates cleanly */
    float xv[4] = {100.0f, -100.0f, 100.0f, -100.0f}, yv[4] = {1, 0, 0, 1};
    int64_t four = 4;
    xt_tensor *x = xt_from_data(1, &four, XT_FLOAT32, xv), *y = xt_from_data(1, &four, XT_FLOAT32, yv);
    xt_set_requires_grad(x, 1);
    out = xt_bce_with_logits(x, y, NULL, XT_REDUCTION_NONE);
    CHECK(out && test_f32(out)[0] < 1e-30f && test_f32(out)[1] < 1e-30f);
    CHECK(out && fabsf(test_f32(out)[2] - 100) < 1e-4f && fabsf(test_f32(out)[3] - 100) < 1e-4f);
    xt_tensor *g4 = xt_full(1, &four, XT_FLOAT32, 1.0);
    CHECK(out && xt_backward(out, g4, 0) == XT_OK);
    CHECK(x->grad && fabsf(test_f32(x->grad)[2] - 1) < 1e-6f && fabsf(test_f32(x->grad)[3] + 1) < 1e-6f);
    xt_tensor *ts[8] = {z, t, ones, out, x, y, g4, NULL};
    for (int i = 0; i < 8; i++) xt_tensor_release(ts[i]);
}

/* Every target ignored: mean is 0/0 = NaN as in PyTorch, and the gradient is zero. */
static void test_all_ignored(void)
{
    int64_t shape[2] = {3, 4}, n = 3;
    xt_tensor *x = test_randn(2, shape, 1, 0);
    xt_tensor *t = xt_full(1, &n, XT_INT64, -100);
    xt_set_requires_grad(x, 1);
    for (int ce = 0; ce < 2; ce++) {
        class_case k = {ce, t, NULL, -100, 0, ce ? 0.2 : 0.0, XT_REDUCTION_MEAN};
        xt_tensor *out = run_class(&k, x);
        CHECK(out && isnan(test_f32(out)[0]));
        CHECK(out && xt_backward(out, NULL, 0) == XT_OK);
        bool zero = x->grad != NULL;
        for (int64_t i = 0; zero && i < 12; i++) zero = test_f32(x->grad)[i] == 0.0f;
        CHECK(zero);
        xt_set_grad(x, NULL);
        k.reduction = XT_REDUCTION_SUM;
        xt_tensor *sum = run_class(&k, x);
        CHECK(sum && test_f32(sum)[0] == 0.0f);
        xt_tensor_release(out);
        xt_tensor_release(sum);
    }
    xt_tensor_release(x);
    xt_tensor_release(t);
}

/* Strided logits and targets give what their contiguous copies give. */
static void test_strided(void)
{
    int64_t cn[2] = {5, 6}, tn = 12;
    xt_tensor *base = test_randn(2, cn, 2, 0);            /* [C=5, N=6] */
    xt_tensor *x = xt_transpose(base, 0, 1);               /* [N=6, C=5] view */
    xt_tensor *tall = targets(1, &tn, 5, 1, -100, 0);
    xt_tensor *tv = xt_narrow(tall, 0, 0, 12);
    int64_t two[2] = {6, 2};
    xt_tensor *t2 = xt_view(tv, 2, two);
    xt_tensor *t = xt_select(t2, 1, 1);                    /* stride-2 targets */
    xt_tensor *xc = xt_contiguous(x), *tc = xt_contiguous(t);
    for (int ce = 0; ce < 2; ce++) {
        class_case a = {ce, t, NULL, -100, 1, 0.1 * ce, XT_REDUCTION_NONE};
        class_case b = {ce, tc, NULL, -100, 1, 0.1 * ce, XT_REDUCTION_NONE};
        xt_tensor *oa = run_class(&a, x), *ob = run_class(&b, xc);
        CHECK(test_max_diff(oa, ob) == 0);
        xt_tensor_release(oa);
        xt_tensor_release(ob);
    }
    xt_tensor *y = xt_rand(&test_rng, 2, cn);
    xt_tensor *yt = xt_transpose(y, 0, 1), *ytc = xt_contiguous(yt);
    xt_tensor *oa = xt_bce_with_logits(x, yt, NULL, XT_REDUCTION_NONE);
    xt_tensor *ob = xt_bce_with_logits(xc, ytc, NULL, XT_REDUCTION_NONE);
    CHECK(test_max_diff(oa, ob) == 0);
    xt_tensor *ts[12] = {base, x, tall, tv, t2, t, xc, tc, y, yt, ytc, oa};
    for (int i = 0; i < 12; i++) xt_tensor_release(ts[i]);
    xt_tensor_release(ob);
}

/* The same bits with 1 and 2 threads: losses, sums and gradients. */
static void test_threads(void)
{
    const int64_t shape[3] = {8, 10, 900};
    int64_t tshape[2] = {8, 900};
    xt_tensor *x = test_randn(3, shape, 2, 0), *w = positive(10);
    xt_tensor *t = targets(2, tshape, 10, 0, -100, 9);
    xt_tensor *y = xt_rand(&test_rng, 3, shape);
    xt_tensor *out[2][3] = {{NULL}}, *grad[2][3] = {{NULL}};
    int32_t saved = xt_get_num_threads();
    xt_set_requires_grad(x, 1);
    for (int run = 0; run < 2; run++) {
        xt_set_num_threads(run + 1);
        for (int op = 0; op < 3; op++) {
            xt_set_grad(x, NULL);
            out[run][op] = op == 0   ? xt_cross_entropy(x, t, w, -100, 0.1, XT_REDUCTION_MEAN, 0)
                           : op == 1 ? xt_nll_loss(x, t, w, -100, XT_REDUCTION_SUM, 0)
                                     : xt_bce_with_logits(x, y, NULL, XT_REDUCTION_MEAN);
            CHECK(out[run][op] && xt_backward(out[run][op], NULL, 0) == XT_OK);
            grad[run][op] = xt_get_grad(x);
        }
    }
    xt_set_num_threads(saved);
    for (int op = 0; op < 3; op++) {
        CHECK(out[0][op] && out[1][op] && test_f32(out[0][op])[0] == test_f32(out[1][op])[0]);
        CHECK(test_max_diff(grad[0][op], grad[1][op]) == 0);
        for (int run = 0; run < 2; run++) {
            xt_tensor_release(out[run][op]);
            xt_tensor_release(grad[run][op]);
        }
    }
    xt_tensor *ts[4] = {x, w, t, y};
    for (int i = 0; i < 4; i++) xt_tensor_release(ts[i]);
}

/* The logits saved for the backward may not change in between. */
static void test_saved_modified(void)
{
    int64_t shape[2] = {3, 4}, n = 3;
    xt_tensor *x = test_randn(2, shape, 1, 0), *t = xt_zeros(1, &n, XT_INT64);
    xt_set_requires_grad(x, 1);
    xt_tensor *out = xt_cross_entropy(x, t, NULL, -100, 0, XT_REDUCTION_MEAN, 0);
    int32_t mode = xt_set_grad_enabled(0);
    CHECK(xt_fill_(x, 0) == XT_OK);
    xt_set_grad_enabled(mode);
    CHECK(out && xt_backward(out, NULL, 0) != XT_OK && test_error_has("modified in place"));
    xt_tensor_release(out);
    xt_tensor_release(x);
    xt_tensor_release(t);
}

/* ---- errors --------------------------------------------------------------------------------- */

static void test_errors(void)
{
    int64_t s23[2] = {2, 3}, s2 = 2, s3 = 3, s4 = 4, s234[3] = {2, 3, 4}, s24[2] = {2, 4};
    xt_tensor *x = test_randn(2, s23, 1, 0);
    int64_t good[2] = {1, 3}, high[2] = {1, 4}, low[2] = {0, 2}, neg[2] = {2, -1};
    xt_tensor *t = xt_from_data(1, &s2, XT_INT64, good);
    xt_tensor *t_high = xt_from_data(1, &s2, XT_INT64, high);
    xt_tensor *t_low = xt_from_data(1, &s2, XT_INT64, low);
    xt_tensor *t_neg = xt_from_data(1, &s2, XT_INT64, neg);
    xt_tensor *t_float = xt_zeros(1, &s2, XT_FLOAT32), *t3 = xt_zeros(1, &s3, XT_INT64);
    xt_tensor *x_long = xt_zeros(2, s23, XT_INT64), *x0 = xt_zeros(0, NULL, XT_FLOAT32);
    xt_tensor *w4 = xt_full(1, &s4, XT_FLOAT32, 1.0), *w_long = xt_zeros(1, &s3, XT_INT64);
    xt_tensor *x3d = test_randn(3, s234, 1, 0), *t24 = xt_zeros(2, s24, XT_INT64);
    int64_t s20[2] = {2, 0};
    xt_tensor *x_empty = xt_zeros(2, s20, XT_FLOAT32);

    /* the bad class as the user counts it, where it is, and the valid range */
    CHECK(!xt_cross_entropy(x, t_high, NULL, -100, 0, XT_REDUCTION_MEAN, 1) &&
          test_error_has("cross_entropy: target class 4 at [1] is out of range: classes are "
                         "1..3 (3 classes; ignore_index is -100)"));
    CHECK(!xt_cross_entropy(x, t_low, NULL, -100, 0, XT_REDUCTION_MEAN, 1) &&
          test_error_has("target class 0 at [0] is out of range: classes are 1..3"));
    xt_set_message_base(1);
    CHECK(!xt_nll_loss(x, t_neg, NULL, -100, XT_REDUCTION_SUM, 0) &&
          test_error_has("nll_loss: target class -1 at [2] is out of range: classes are 0..2"));
    xt_set_message_base(0);
    CHECK(xt_last_status() == XT_ERR_ARG);
    /* the same -1 is fine as the ignore_index */
    xt_tensor *ok = xt_cross_entropy(x, t_neg, NULL, -1, 0, XT_REDUCTION_SUM, 1);
    CHECK(ok != NULL);
    xt_tensor_release(ok);
    /* a spatial position is named by all its coordinates */
    xt_tensor *t24_bad = xt_zeros(2, s24, XT_INT64);
    ((int64_t *)t24_bad->data)[6] = 7;
    CHECK(!xt_cross_entropy(x3d, t24_bad, NULL, -100, 0, XT_REDUCTION_MEAN, 0) &&
          test_error_has("target class 7 at [1,2] is out of range: classes are 0..2"));

    CHECK(!xt_cross_entropy(x, t_float, NULL, -100, 0, 1, 0) &&
          test_error_has("cross_entropy: target must hold int64 class indices, got float32"));
    CHECK(!xt_cross_entropy(x_long, t, NULL, -100, 0, 1, 0) &&
          test_error_has("cross_entropy: logits must be float32, got int64"));
    CHECK(!xt_nll_loss(x, t3, NULL, -100, 1, 0) &&
          test_error_has("nll_loss: target has shape [3], expected [2] for log_probs of shape "
                         "[2,3]"));
    CHECK(!xt_cross_entropy(x3d, t, NULL, -100, 0, 1, 0) &&
          test_error_has("target has shape [2], expected [2,4] for logits of shape [2,3,4]"));
    CHECK(!xt_cross_entropy(x, t24, NULL, -100, 0, 1, 0) && test_error_has("expected [2]"));
    CHECK(!xt_cross_entropy(x0, t, NULL, -100, 0, 1, 0) &&
          test_error_has("logits must be [N,C], [N,C,d1,...] or [C]"));
    CHECK(!xt_cross_entropy(x_empty, t, NULL, -100, 0, 1, 0) &&
          test_error_has("has no classes"));
    CHECK(!xt_cross_entropy(x, t, w4, -100, 0, 1, 1) &&
          test_error_has("cross_entropy: weight has shape [4], expected [3] (one per class)"));
    CHECK(!xt_nll_loss(x, t, w_long, -100, 1, 1) &&
          test_error_has("nll_loss: weight must be float32, got int64"));
    CHECK(!xt_cross_entropy(x, t, NULL, -100, 0, 3, 1) &&
          test_error_has("cross_entropy: reduction must be none (0), mean (1) or sum (2), got 3"));
    CHECK(!xt_cross_entropy(x, t, NULL, -100, 1.5, 1, 1) &&
          test_error_has("label_smoothing must be in [0, 1], got 1.5"));
    CHECK(!xt_cross_entropy(x, t, NULL, -100, NAN, 1, 1) && test_error_has("label_smoothing"));
    CHECK(!xt_cross_entropy(x, t, NULL, -100, -0.1, 1, 1) && test_error_has("label_smoothing"));
    CHECK(!xt_cross_entropy(NULL, t, NULL, -100, 0, 1, 1) && test_error_has("logits is NULL"));
    CHECK(!xt_nll_loss(x, NULL, NULL, -100, 1, 1) && test_error_has("nll_loss: target is NULL"));

    xt_tensor *y = xt_zeros(2, s23, XT_FLOAT32), *y_long = xt_zeros(2, s23, XT_INT64);
    xt_tensor *y_t = xt_zeros(2, s24, XT_FLOAT32), *pw2 = xt_full(1, &s2, XT_FLOAT32, 1.0);
    CHECK(!xt_bce_with_logits(x, y_t, NULL, 1) &&
          test_error_has("bce_with_logits: target has shape [2,4], expected the shape of x [2,3]"));
    CHECK(!xt_bce_with_logits(x, y_long, NULL, 1) &&
          test_error_has("bce_with_logits: target must be float32, got int64"));
    CHECK(!xt_bce_with_logits(x_long, y, NULL, 1) &&
          test_error_has("bce_with_logits: x must be float32, got int64"));
    CHECK(!xt_bce_with_logits(x, y, pw2, 1) &&
          test_error_has("bce_with_logits: pos_weight has shape [2], expected [3] (the last dim "
                         "of x [2,3]) or [1]"));
    CHECK(!xt_bce_with_logits(x, y, w_long, 1) &&
          test_error_has("pos_weight must be float32, got int64"));
    CHECK(!xt_bce_with_logits(x, y, NULL, -1) && test_error_has("reduction must be"));
    CHECK(!xt_bce_with_logits(x, NULL, NULL, 1) && test_error_has("target is NULL"));

    xt_tensor *ts[20] = {x, t, t_high, t_low, t_neg, t_float, t3, x_long, x0, w4,
                         w_long, x3d, t24, x_empty, t24_bad, y, y_long, y_t, pw2, NULL};
    for (int i = 0; i < 20; i++) xt_tensor_release(ts[i]);
}

/* ---- PyTorch fixtures ---------------------------------------------------------------------- */

/* The fixtures keep their decimal arguments in float32; 7 significant digits give them back
 * exactly (0.1f -> 0.1). */
static double arg_value(const xt_tensor *args, int64_t i)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%.7g", (double)test_f32(args)[i]);
    return strtod(buf, NULL);
}

/* got matches want within rtol of want's largest magnitude (at least 1). */
static bool close_scaled(const char *what, const xt_tensor *got, const xt_tensor *want,
                         double rtol)
{
    if (!got || !want) {
        fprintf(stderr, "%s: missing\n", what);
        return false;
    }
    if (got->ndim != want->ndim || memcmp(got->shape, want->shape, sizeof(int64_t) * (size_t)got->ndim)) {
        char a[XT_SHAPE_STR], b[XT_SHAPE_STR];
        fprintf(stderr, "%s: shape %s, expected %s\n", what, xt_shape_str(a, got->ndim, got->shape),
                xt_shape_str(b, want->ndim, want->shape));
        return false;
    }
    double scale = 1;
    for (int64_t i = 0; i < xt_numel(want); i++) scale = fmax(scale, fabs(test_f32(want)[i]));
    return test_close(what, got, want, rtol * scale);
}

/* kind: 0 cross_entropy, 1 nll_loss, 2 bce_with_logits */
static void check_fixture(const char *name, int kind)
{
    const char *dir = "loss";
    xt_tensor *args = test_fixture(dir, name, "args"), *x = test_fixture(dir, name, "x");
    xt_tensor *t = test_fixture(dir, name, "target"), *want = test_fixture(dir, name, "out");
    xt_tensor *dout = test_fixture(dir, name, "dout"), *dx = test_fixture(dir, name, "dx");
    char path[1024];
    const char *wpart = kind == 2 ? "pos_weight" : "weight";
    snprintf(path, sizeof path, "%s/%s/%s.%s.npy", XT_FIXTURES_DIR, dir, name, wpart);
    FILE *f = fopen(path, "rb");
    xt_tensor *w = f ? test_fixture(dir, name, wpart) : NULL;
    if (f) fclose(f);
    bool soft = kind == 2 && strstr(name, "soft") != NULL;
    xt_tensor *dt = soft ? test_fixture(dir, name, "dtarget") : NULL;
    bool loaded = args && x && t && want && dout && dx && (!soft || dt);
    CHECK(loaded);
    if (loaded) {
        xt_set_requires_grad(x, 1);
        if (soft) xt_set_requires_grad(t, 1);
        xt_tensor *out;
        if (kind == 2) {
            out = xt_bce_with_logits(x, t, w, (int32_t)arg_value(args, 0));
        } else {
            class_case k = {kind == 0, t, w, (int64_t)arg_value(args, 0), 1, arg_value(args, 1),
                            (int32_t)arg_value(args, 2)};
            out = run_class(&k, x);
        }
        char what[160];
        snprintf(what, sizeof what, "fixture %s out", name);
        CHECK(close_scaled(what, out, want, 2e-6));
        CHECK(out && xt_backward(out, dout, 0) == XT_OK);
        snprintf(what, sizeof what, "fixture %s dx", name);
        CHECK(close_scaled(what, x->grad, dx, 2e-6));
        if (soft) {
            snprintf(what, sizeof what, "fixture %s dtarget", name);
            CHECK(close_scaled(what, t->grad, dt, 2e-6));
        }
        xt_tensor_release(out);
    }
    xt_tensor *ts[9] = {args, x, t, want, dout, dx, w, dt, NULL};
    for (int i = 0; i < 9; i++) xt_tensor_release(ts[i]);
}

static void test_fixtures(void)
{
    static const char *ce[] = {"ce_mean", "ce_sum", "ce_none", "ce_weight_mean",
                               "ce_weight_ignore_mean", "ce_ignore_class_mean", "ce_smooth_mean",
                               "ce_smooth_ignore_mean", "ce_smooth_weight_ignore_mean",
                               "ce_smooth_weight_ignore_sum", "ce_smooth_weight_ignore_none",
                               "ce_spatial_mean", "ce_spatial_smooth_weight_ignore_mean",
                               "ce_spatial_weight_ignore_none", "ce_unbatched",
                               "ce_large_logits"};
    static const char *nll[] = {"nll_mean", "nll_weight_ignore_sum", "nll_weight_ignore_mean",
                                "nll_none", "nll_spatial_weight_mean"};
    static const char *bce[] = {"bce_mean", "bce_sum", "bce_none", "bce_pos_weight_mean",
                                "bce_pos_weight_one_none", "bce_soft_target_pos_weight_sum",
                                "bce_large_logits"};
    for (size_t i = 0; i < sizeof ce / sizeof *ce; i++) check_fixture(ce[i], 0);
    for (size_t i = 0; i < sizeof nll / sizeof *nll; i++) check_fixture(nll[i], 1);
    for (size_t i = 0; i < sizeof bce / sizeof *bce; i++) check_fixture(bce[i], 2);
}

int main(void)
{
    test_seed("test_loss", SEED);
    int64_t live = xt_live_bytes();
    test_class_losses();
    test_cross_entropy_grad_big();
    test_bce();
    test_stability();
    test_all_ignored();
    test_strided();
    test_threads();
    test_saved_modified();
    test_errors();
    test_fixtures();
    CHECK(xt_live_bytes() == live);  /* everything released */
    return check_report("test_loss");
}
