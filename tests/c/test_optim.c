/*
 * test_optim.c: the fused optimizer updates (xt_sgd_step, xt_adam_step) and
 * xt_sum_of_squares. Trajectories of SGD variants, Adam and AdamW against PyTorch over 20
 * steps (tests/fixtures/optim, made by make_optim_fixtures.py), every option against a
 * double-precision reference, strided operands, thread-count independence, version bumps
 * and every error path.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"

enum { SEED = 20240613 };

/* ---- references (double, PyTorch's formulas) ------------------------------------------ */

typedef struct sgd_opts {
    double lr, momentum, dampening, weight_decay;
    int nesterov;
} sgd_opts;

static void ref_sgd(const sgd_opts *o, int64_t n, double *p, const float *g, double *buf,
                    int64_t step)
{
    for (int64_t i = 0; i < n; i++) {
        double d = g[i] + o->weight_decay * p[i];
        if (o->momentum != 0) {
            buf[i] = step == 1 ? d : o->momentum * buf[i] + (1 - o->dampening) * d;
            d = o->nesterov ? d + o->momentum * buf[i] : buf[i];
        }
        p[i] -= o->lr * d;
    }
}

typedef struct adam_opts {
    double lr, beta1, beta2, eps, weight_decay;
    int decoupled;
} adam_opts;

static void ref_adam(const adam_opts *o, int64_t n, double *p, const float *g, double *m,
                     double *v, int64_t step)
{
    double bc1 = 1 - pow(o->beta1, (double)step), bc2 = 1 - pow(o->beta2, (double)step);
    for (int64_t i = 0; i < n; i++) {
        double gi = g[i];
        if (o->decoupled)
            p[i] *= 1 - o->lr * o->weight_decay;
        else
            gi += o->weight_decay * p[i];
        m[i] = o->beta1 * m[i] + (1 - o->beta1) * gi;
        v[i] = o->beta2 * v[i] + (1 - o->beta2) * gi * gi;
        p[i] -= o->lr / bc1 * m[i] / (sqrt(v[i]) / sqrt(bc2) + o->eps);
    }
}

/* max |got - want| / max |want|: the error relative to the tensor's scale (elementwise
 * ratios blow up where a value crosses zero, which float32 rounding alone can make 1e-4). */
static double rel_err(const xt_tensor *got, const double *want, int64_t n)
{
    xt_tensor *c = xt_contiguous((xt_tensor *)got);
    double worst = 0, scale = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs(test_f32(c)[i] - want[i]);
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
        scale = fmax(scale, fabs(want[i]));
    }
    xt_tensor_release(c);
    return scale > 0 ? worst / scale : worst;
}

static double *to_double(const xt_tensor *t)
{
    xt_tensor *c = xt_contiguous((xt_tensor *)t);
    int64_t n = xt_numel(c);
    double *d = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) d[i] = test_f32(c)[i];
    xt_tensor_release(c);
    return d;
}

/* ---- every option against the reference ------------------------------------------------- */

static void test_sgd_options(void)
{
    const int64_t shape[2] = {37, 29};
    const int64_t n = 37 * 29;
    const double momenta[3] = {0, 0.9, 0.5}, dampenings[2] = {0, 0.3}, decays[2] = {0, 0.05};
    for (int mi = 0; mi < 3; mi++)
        for (int di = 0; di < 2; di++)
            for (int wi = 0; wi < 2; wi++)
                for (int nesterov = 0; nesterov < 2; nesterov++) {
                    if (nesterov && (momenta[mi] == 0 || dampenings[di] != 0)) continue;
                    sgd_opts o = {0.07, momenta[mi], dampenings[di], decays[wi], nesterov};
                    xt_tensor *p = test_randn(2, shape, 1, 0);
                    xt_tensor *buf = o.momentum != 0 ? xt_zeros(2, shape, XT_FLOAT32) : NULL;
                    double *rp = to_double(p), *rb = calloc((size_t)n, sizeof(double));
                    double worst = 0;
                    for (int64_t step = 1; step <= 6; step++) {
                        xt_tensor *g = test_randn(2, shape, 1, 0);
                        CHECK(xt_sgd_step(p, g, buf, o.lr, o.momentum, o.dampening,
                                          o.weight_decay, nesterov, step) == XT_OK);
                        ref_sgd(&o, n, rp, g->data, rb, step);
                        worst = fmax(worst, rel_err(p, rp, n));
                        xt_tensor_release(g);
                    }
                    if (!(worst < 1e-5))
                        fprintf(stderr, "sgd momentum %g dampening %g wd %g nesterov %d: %g\n",
                                o.momentum, o.dampening, o.weight_decay, nesterov, worst);
                    CHECK(worst < 1e-5);
                    if (buf) CHECK(rel_err(buf, rb, n) < 1e-5);
                    free(rp);
                    free(rb);
                    xt_tensor_release(p);
                    xt_tensor_release(buf);
                }
}

static void test_adam_options(void)
{
    const int64_t shape[1] = {1001};
    const int64_t n = 1001;
    for (int decoupled = 0; decoupled < 2; decoupled++)
        for (int wi = 0; wi < 2; wi++)
            for (int bi = 0; bi < 2; bi++) {
                adam_opts o = {0.01, bi ? 0.8 : 0.9, bi ? 0.95 : 0.999, bi ? 1e-6 : 1e-8,
                               wi ? 0.1 : 0.0, decoupled};
                xt_tensor *p = test_randn(1, shape, 1, 0);
                xt_tensor *m = xt_zeros(1, shape, XT_FLOAT32), *v = xt_zeros(1, shape, XT_FLOAT32);
                double *rp = to_double(p), *rm = calloc((size_t)n, sizeof(double)),
                       *rv = calloc((size_t)n, sizeof(double));
                double worst = 0;
                for (int64_t step = 1; step <= 8; step++) {
                    xt_tensor *g = test_randn(1, shape, 0.5 * (double)step, 0);
                    CHECK(xt_adam_step(p, g, m, v, o.lr, o.beta1, o.beta2, o.eps, o.weight_decay,
                                       decoupled, step) == XT_OK);
                    ref_adam(&o, n, rp, g->data, rm, rv, step);
                    worst = fmax(worst, rel_err(p, rp, n));
                    xt_tensor_release(g);
                }
                if (!(worst < 1e-5))
                    fprintf(stderr, "adam decoupled %d wd %g betas %d: %g\n", decoupled,
                            o.weight_decay, bi, worst);
                CHECK(worst < 1e-5);
                CHECK(rel_err(m, rm, n) < 1e-5);
                CHECK(rel_err(v, rv, n) < 1e-5);
                free(rp);
                free(rm);
                free(rv);
                xt_tensor *ts[3] = {p, m, v};
                for (int i = 0; i < 3; i++) xt_tensor_release(ts[i]);
            }
}

/* ---- strided operands, threads, versions ---------------------------------------------------- */

/* A transposed param, a strided grad and strided state: the same bits as contiguous copies,
 * and nothing outside the views is touched. */
static void test_strided(void)
{
    const int64_t big[2] = {9, 14}, shape[2] = {7, 9};
    xt_tensor *pbase = test_randn(2, big, 1, 0);           /* [9,14] */
    xt_tensor *pn = xt_narrow(pbase, 1, 2, 7);             /* [9,7] */
    xt_tensor *p = xt_transpose(pn, 0, 1);                 /* [7,9], strides (1,14) */
    xt_tensor *mbase = xt_zeros(2, big, XT_FLOAT32), *vbase = xt_zeros(2, big, XT_FLOAT32);
    xt_tensor *mn = xt_narrow(mbase, 1, 5, 7), *vn = xt_narrow(vbase, 1, 0, 7);
    xt_tensor *m = xt_transpose(mn, 0, 1), *v = xt_transpose(vn, 0, 1);
    xt_tensor *pc = xt_contiguous(p);
    xt_tensor *pc_copy = xt_clone(pc);
    xt_tensor *mc = xt_zeros(2, shape, XT_FLOAT32), *vc = xt_zeros(2, shape, XT_FLOAT32);
    xt_tensor *before = xt_clone(pbase);
    bool same = true;
    for (int64_t step = 1; step <= 3; step++) {
        xt_tensor *graw = test_randn(2, big, 1, 0);
        xt_tensor *gn = xt_narrow(graw, 1, 3, 7), *g = xt_transpose(gn, 0, 1);
        xt_tensor *gc = xt_contiguous(g);
        CHECK(xt_adam_step(p, g, m, v, 0.01, 0.9, 0.999, 1e-8, 0.1, 1, step) == XT_OK);
        CHECK(xt_adam_step(pc, gc, mc, vc, 0.01, 0.9, 0.999, 1e-8, 0.1, 1, step) == XT_OK);
        same = same && test_max_diff(p, pc) == 0 && test_max_diff(m, mc) == 0 &&
               test_max_diff(v, vc) == 0;
        xt_tensor *ts[4] = {graw, gn, g, gc};
        for (int i = 0; i < 4; i++) xt_tensor_release(ts[i]);
    }
    CHECK(same);
    CHECK(test_max_diff(pc, pc_copy) > 0);  /* it did move */
    /* columns outside the view [2, 9) are untouched */
    bool outside = true;
    for (int64_t r = 0; r < 9; r++)
        for (int64_t c = 0; c < 14; c++)
            if ((c < 2 || c >= 9) && test_f32(pbase)[r * 14 + c] != test_f32(before)[r * 14 + c])
                outside = false;
    CHECK(outside);

    /* SGD with momentum through the same kind of views */
    xt_tensor *b = xt_transpose(mn, 0, 1), *bc = xt_zeros(2, shape, XT_FLOAT32);
    xt_tensor *g = test_randn(2, shape, 1, 0);
    xt_tensor *gt_base = xt_transpose(g, 0, 1), *gt = xt_contiguous(gt_base);
    xt_tensor *gview = xt_transpose(gt, 0, 1);             /* same values as g, strided */
    for (int64_t step = 1; step <= 3; step++) {
        CHECK(xt_sgd_step(p, gview, b, 0.1, 0.9, 0, 0.01, 1, step) == XT_OK);
        CHECK(xt_sgd_step(pc, g, bc, 0.1, 0.9, 0, 0.01, 1, step) == XT_OK);
    }
    CHECK(test_max_diff(p, pc) == 0 && test_max_diff(b, bc) == 0);
    xt_tensor *ts[19] = {pbase, pn, p, mbase, vbase, mn, vn, m, v, pc, pc_copy, mc, vc, before,
                         b, bc, g, gt_base, gt};
    for (int i = 0; i < 19; i++) xt_tensor_release(ts[i]);
    xt_tensor_release(gview);
}

static void test_threads(void)
{
    int64_t n = 300001;
    xt_tensor *p0 = test_randn(1, &n, 1, 0), *g = test_randn(1, &n, 1, 0);
    xt_tensor *p[2], *m[2], *v[2], *b[2];
    double sq[2];
    int32_t saved = xt_get_num_threads();
    for (int run = 0; run < 2; run++) {
        xt_set_num_threads(run + 1);
        p[run] = xt_clone(p0);
        m[run] = xt_zeros(1, &n, XT_FLOAT32);
        v[run] = xt_zeros(1, &n, XT_FLOAT32);
        b[run] = xt_zeros(1, &n, XT_FLOAT32);
        for (int64_t step = 1; step <= 2; step++) {
            CHECK(xt_adam_step(p[run], g, m[run], v[run], 1e-3, 0.9, 0.999, 1e-8, 0.01, 1, step) == XT_OK);
            CHECK(xt_sgd_step(p[run], g, b[run], 0.1, 0.9, 0.1, 1e-4, 0, step) == XT_OK);
        }
        xt_tensor *list[3] = {p[run], g, m[run]};
        sq[run] = xt_sum_of_squares(3, list);
    }
    xt_set_num_threads(saved);
    CHECK(test_max_diff(p[0], p[1]) == 0 && test_max_diff(m[0], m[1]) == 0 &&
          test_max_diff(v[0], v[1]) == 0 && test_max_diff(b[0], b[1]) == 0);
    CHECK(sq[0] == sq[1]);
    for (int run = 0; run < 2; run++) {
        xt_tensor *ts[4] = {p[run], m[run], v[run], b[run]};
        for (int i = 0; i < 4; i++) xt_tensor_release(ts[i]);
    }
    xt_tensor_release(p0);
    xt_tensor_release(g);
}

/* Updates bump the versions (a graph that saved the parameter then refuses to backward),
 * and work on leaves that require grad, with grad mode on, as an optimizer step must. */
static void test_versions(void)
{
    int64_t n = 5;
    xt_tensor *p = test_randn(1, &n, 1, 0), *g = test_randn(1, &n, 1, 0);
    xt_tensor *m = xt_zeros(1, &n, XT_FLOAT32), *v = xt_zeros(1, &n, XT_FLOAT32);
    xt_set_requires_grad(p, 1);
    xt_tensor *y = xt_binary(XT_MUL, p, p);                 /* saves p */
    uint32_t vp = xt_tensor_version(p), vm = xt_tensor_version(m), vv = xt_tensor_version(v);
    CHECK(xt_adam_step(p, g, m, v, 0.1, 0.9, 0.999, 1e-8, 0, 0, 1) == XT_OK);
    CHECK(xt_tensor_version(p) != vp && xt_tensor_version(m) != vm && xt_tensor_version(v) != vv);
    xt_tensor *ones = xt_full(1, &n, XT_FLOAT32, 1);
    CHECK(y && xt_backward(y, ones, 0) != XT_OK && test_error_has("modified in place"));
    vp = xt_tensor_version(p);
    CHECK(xt_sgd_step(p, g, NULL, 0.1, 0, 0, 0, 0, 1) == XT_OK && xt_tensor_version(p) != vp);
    xt_tensor *ts[6] = {p, g, m, v, y, ones};
    for (int i = 0; i < 6; i++) xt_tensor_release(ts[i]);
}

/* ---- sum_of_squares --------------------------------------------------------------------------- */

static void test_sum_of_squares(void)
{
    int64_t a_shape[2] = {300, 257}, b_shape[3] = {2, 3, 4}, zero = 0;
    xt_tensor *a = test_randn(2, a_shape, 2, 0.5), *b = test_randn(3, b_shape, 1, 0);
    xt_tensor *bt = xt_transpose(b, 0, 2);                  /* strided */
    xt_tensor *e = xt_zeros(1, &zero, XT_FLOAT32), *s = xt_full(0, NULL, XT_FLOAT32, -3);
    xt_tensor *list[4] = {a, bt, e, s};
    double want = 9;
    for (int64_t i = 0; i < xt_numel(a); i++) want += (double)test_f32(a)[i] * test_f32(a)[i];
    for (int64_t i = 0; i < xt_numel(b); i++) want += (double)test_f32(b)[i] * test_f32(b)[i];
    double got = xt_sum_of_squares(4, list);
    CHECK(fabs(got - want) <= 1e-12 * want);
    CHECK(xt_sum_of_squares(0, NULL) == 0);

    xt_tensor *l = xt_zeros(1, b_shape, XT_INT64);
    xt_tensor *bad[2] = {a, l};
    CHECK(isnan(xt_sum_of_squares(2, bad)) &&
          test_error_has("sum_of_squares: tensor 1 must be float32, got int64"));
    xt_tensor *with_null[2] = {a, NULL};
    xt_set_message_base(1);
    CHECK(isnan(xt_sum_of_squares(2, with_null)) && test_error_has("sum_of_squares: tensor 2 is NULL"));
    xt_set_message_base(0);
    CHECK(isnan(xt_sum_of_squares(-1, list)) && test_error_has("negative tensor count -1"));
    CHECK(isnan(xt_sum_of_squares(2, NULL)) && test_error_has("the tensor list is NULL"));
    /* a NaN gradient is not an error: the status says which NaN this is */
    test_f32(b)[3] = NAN;
    xt_tensor *nan_list[1] = {b};
    CHECK(isnan(xt_sum_of_squares(1, nan_list)) && xt_last_status() == XT_OK);
    xt_tensor *ts[6] = {a, b, bt, e, s, l};
    for (int i = 0; i < 6; i++) xt_tensor_release(ts[i]);
}

/* ---- errors ------------------------------------------------------------------------------------ */

static void test_errors(void)
{
    int64_t s3 = 3, s4 = 4, s23[2] = {2, 3}, one = 1;
    xt_tensor *p = test_randn(1, &s3, 1, 0), *g = test_randn(1, &s3, 1, 0);
    xt_tensor *m = xt_zeros(1, &s3, XT_FLOAT32), *v = xt_zeros(1, &s3, XT_FLOAT32);
    xt_tensor *g4 = xt_zeros(1, &s4, XT_FLOAT32), *gl = xt_zeros(1, &s3, XT_INT64);
    xt_tensor *p23 = xt_zeros(2, s23, XT_FLOAT32), *m23 = xt_zeros(2, s23, XT_FLOAT32);
    xt_tensor *p1 = xt_zeros(1, &one, XT_FLOAT32);
    xt_tensor *pe = xt_expand(p1, 1, &s3);                  /* one element seen three times */
    xt_tensor *v_alias = xt_narrow(m, 0, 0, 3);

    CHECK(xt_sgd_step(p, g4, NULL, 0.1, 0, 0, 0, 0, 1) == XT_ERR_SHAPE &&
          test_error_has("sgd_step: grad has shape [4], the parameter has shape [3]"));
    CHECK(xt_sgd_step(p, gl, NULL, 0.1, 0, 0, 0, 0, 1) == XT_ERR_DTYPE &&
          test_error_has("sgd_step: grad must be float32, got int64"));
    CHECK(xt_sgd_step(p, NULL, NULL, 0.1, 0, 0, 0, 0, 1) == XT_ERR_ARG &&
          test_error_has("sgd_step: grad is NULL"));
    CHECK(xt_sgd_step(NULL, g, NULL, 0.1, 0, 0, 0, 0, 1) == XT_ERR_ARG &&
          test_error_has("sgd_step: param is NULL"));
    CHECK(xt_sgd_step(p, g, NULL, 0.1, 0.9, 0, 0, 0, 1) == XT_ERR_ARG &&
          test_error_has("sgd_step: momentum 0.9 needs a momentum_buffer shaped like the param"));
    CHECK(xt_sgd_step(p23, g, m, 0.1, 0.9, 0, 0, 0, 1) == XT_ERR_SHAPE &&
          test_error_has("grad has shape [3], the parameter has shape [2,3]"));
    CHECK(xt_sgd_step(p, g, m23, 0.1, 0.9, 0, 0, 0, 1) == XT_ERR_SHAPE &&
          test_error_has("momentum_buffer has shape [2,3], the parameter has shape [3]"));
    CHECK(xt_sgd_step(p, g, m, 0.1, 0.9, 0.1, 0, 1, 1) == XT_ERR_ARG &&
          test_error_has("nesterov needs momentum > 0 and dampening 0, got momentum 0.9, dampening 0.1"));
    CHECK(xt_sgd_step(p, g, NULL, 0.1, 0, 0, 0, 1, 1) == XT_ERR_ARG && test_error_has("nesterov"));
    CHECK(xt_sgd_step(p, g, NULL, -0.1, 0, 0, 0, 0, 1) == XT_ERR_ARG &&
          test_error_has("sgd_step: lr must be >= 0, got -0.1"));
    CHECK(xt_sgd_step(p, g, NULL, NAN, 0, 0, 0, 0, 1) == XT_ERR_ARG && test_error_has("lr"));
    CHECK(xt_sgd_step(p, g, m, 0.1, -0.5, 0, 0, 0, 1) == XT_ERR_ARG &&
          test_error_has("momentum must be >= 0, got -0.5"));
    CHECK(xt_sgd_step(p, g, NULL, 0.1, 0, 0, -1, 0, 1) == XT_ERR_ARG &&
          test_error_has("weight_decay must be >= 0, got -1"));
    CHECK(xt_sgd_step(p, g, NULL, 0.1, 0, 0, 0, 0, 0) == XT_ERR_ARG &&
          test_error_has("sgd_step: step counts from 1, got 0"));
    CHECK(xt_sgd_step(pe, g, NULL, 0.1, 0, 0, 0, 0, 1) == XT_ERR_ARG &&
          test_error_has("sgd_step: param is an expanded view (dim 0 repeats one element) and "
                         "cannot be updated in place"));
    CHECK(xt_sgd_step(p, p, m, 0.1, 0.9, 0, 0, 0, 1) == XT_ERR_ARG &&
          test_error_has("sgd_step: param and grad share memory; each needs its own"));

    CHECK(xt_adam_step(p, g, m, NULL, 0.1, 0.9, 0.999, 1e-8, 0, 0, 1) == XT_ERR_ARG &&
          test_error_has("adam_step: exp_avg_sq is NULL"));
    CHECK(xt_adam_step(p, g, m23, v, 0.1, 0.9, 0.999, 1e-8, 0, 1, 1) == XT_ERR_SHAPE &&
          test_error_has("adamw_step: exp_avg has shape [2,3], the parameter has shape [3]"));
    CHECK(xt_adam_step(p, g, m, v, 0.1, 1.0, 0.999, 1e-8, 0, 0, 1) == XT_ERR_ARG &&
          test_error_has("adam_step: betas must be in [0, 1), got (1, 0.999)"));
    CHECK(xt_adam_step(p, g, m, v, 0.1, 0.9, -0.1, 1e-8, 0, 0, 1) == XT_ERR_ARG &&
          test_error_has("betas must be in [0, 1)"));
    CHECK(xt_adam_step(p, g, m, v, 0.1, 0.9, 0.999, -1, 0, 0, 1) == XT_ERR_ARG &&
          test_error_has("eps must be >= 0, got -1"));
    CHECK(xt_adam_step(p, g, m, v, 0.1, 0.9, 0.999, 1e-8, -0.1, 1, 1) == XT_ERR_ARG &&
          test_error_has("adamw_step: weight_decay must be >= 0"));
    CHECK(xt_adam_step(p, g, m, v, -1, 0.9, 0.999, 1e-8, 0, 1, 1) == XT_ERR_ARG &&
          test_error_has("lr must be >= 0"));
    CHECK(xt_adam_step(p, g, m, v, 0.1, 0.9, 0.999, 1e-8, 0, 1, -3) == XT_ERR_ARG &&
          test_error_has("adamw_step: step counts from 1, got -3"));
    CHECK(xt_adam_step(p, g, m, v_alias, 0.1, 0.9, 0.999, 1e-8, 0, 0, 1) == XT_ERR_ARG &&
          test_error_has("adam_step: exp_avg and exp_avg_sq share memory"));
    CHECK(xt_adam_step(p, g, m, gl, 0.1, 0.9, 0.999, 1e-8, 0, 0, 1) == XT_ERR_DTYPE &&
          test_error_has("exp_avg_sq must be float32, got int64"));
    /* nothing was changed by the failed calls */
    CHECK(test_f32(m)[0] == 0 && test_f32(v)[0] == 0);

    xt_tensor *ts[12] = {p, g, m, v, g4, gl, p23, m23, p1, pe, v_alias, NULL};
    for (int i = 0; i < 12; i++) xt_tensor_release(ts[i]);
}

/* ---- PyTorch trajectories ---------------------------------------------------------------------- */

/* The fixtures keep their decimal arguments in float32; 7 significant digits give them back
 * exactly (0.1f -> 0.1). */
static double arg_value(const xt_tensor *args, int64_t i)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%.7g", (double)test_f32(args)[i]);
    return strtod(buf, NULL);
}

static double worst_trajectory_error;

/* rel_err of got against want; prints it under what when over rtol. */
static bool close_rel(const char *what, const xt_tensor *got, const xt_tensor *want, double rtol)
{
    double *w = to_double(want);
    double e = xt_numel(got) == xt_numel(want) ? rel_err(got, w, xt_numel(want)) : INFINITY;
    free(w);
    if (e > worst_trajectory_error) worst_trajectory_error = e;
    if (e <= rtol) return true;
    fprintf(stderr, "%s: relative error %g (tolerance %g)\n", what, e, rtol);
    return false;
}

static void check_trajectory(const char *name, bool adam)
{
    const char *dir = "optim";
    xt_tensor *args = test_fixture(dir, name, "args"), *p0 = test_fixture(dir, name, "param0");
    xt_tensor *grads = test_fixture(dir, name, "grads"), *want = test_fixture(dir, name, "params");
    bool loaded = args && p0 && grads && want;
    CHECK(loaded);
    if (!loaded) goto done;
    xt_tensor *p = xt_clone(p0);
    xt_tensor *b1 = xt_zeros(p->ndim, p->shape, XT_FLOAT32), *b2 = xt_zeros(p->ndim, p->shape, XT_FLOAT32);
    bool momentum = !adam && arg_value(args, 1) != 0;
    for (int64_t k = 0; k < grads->shape[0]; k++) {
        xt_tensor *g = xt_select(grads, 0, k), *pk = xt_select(want, 0, k);
        xt_status st = adam ? xt_adam_step(p, g, b1, b2, arg_value(args, 0), arg_value(args, 1),
                                           arg_value(args, 2), arg_value(args, 3),
                                           arg_value(args, 4), (int32_t)arg_value(args, 5), k + 1)
                            : xt_sgd_step(p, g, momentum ? b1 : NULL, arg_value(args, 0),
                                          arg_value(args, 1), arg_value(args, 2),
                                          arg_value(args, 3), (int32_t)arg_value(args, 4), k + 1);
        CHECK(st == XT_OK);
        char what[128];
        snprintf(what, sizeof what, "%s step %lld", name, (long long)(k + 1));
        CHECK(close_rel(what, p, pk, 1e-5));
        xt_tensor_release(g);
        xt_tensor_release(pk);
    }
    const char *buffers[2] = {adam ? "exp_avg" : "momentum_buffer", "exp_avg_sq"};
    xt_tensor *mine[2] = {b1, b2};
    for (int i = 0; i < (adam ? 2 : momentum ? 1 : 0); i++) {
        xt_tensor *ref = test_fixture(dir, name, buffers[i]);
        char what[128];
        snprintf(what, sizeof what, "%s %s", name, buffers[i]);
        CHECK(ref && close_rel(what, mine[i], ref, 1e-5));
        xt_tensor_release(ref);
    }
    xt_tensor_release(p);
    xt_tensor_release(b1);
    xt_tensor_release(b2);
done:;
    xt_tensor *ts[4] = {args, p0, grads, want};
    for (int i = 0; i < 4; i++) xt_tensor_release(ts[i]);
}

static void test_trajectories(void)
{
    static const char *sgd[] = {"sgd_plain", "sgd_weight_decay", "sgd_momentum",
                                "sgd_momentum_dampening_wd", "sgd_nesterov_wd"};
    static const char *adam[] = {"adam", "adam_l2", "adamw", "adamw_betas_eps"};
    for (size_t i = 0; i < sizeof sgd / sizeof *sgd; i++) check_trajectory(sgd[i], false);
    for (size_t i = 0; i < sizeof adam / sizeof *adam; i++) check_trajectory(adam[i], true);
    printf("test_optim: worst relative error against PyTorch over 20 steps: %.3g\n",
           worst_trajectory_error);
}

int main(void)
{
    test_seed("test_optim", SEED);
    int64_t live = xt_live_bytes();
    test_sgd_options();
    test_adam_options();
    test_strided();
    test_threads();
    test_versions();
    test_sum_of_squares();
    test_errors();
    test_trajectories();
    CHECK(xt_live_bytes() == live);  /* everything released */
    return check_report("test_optim");
}
