/*
 * test_aft.c: the AFT family (aft_full, aft_simple, aft_local, aft_conv).
 *
 *  - values and every gradient against a plain composition written here in double: the
 *    defining sum with each output's exact max subtracted, and its gradients by central
 *    differences in double (tight tolerances), for every op and option;
 *  - finite-difference gradient checks of the fused ops themselves (testlib);
 *  - causality: outputs at t unchanged by inputs at t' > t, and exactly zero gradient
 *    flowing to them;
 *  - stability: keys (and biases) up to |100|, which makes the scaled denominators
 *    underflow and exercises the direct path, with no NaN or Inf and the same values;
 *  - identities (window >= T is aft_full, window 0 is aft_simple), strided inputs, every
 *    error message, and the accuracy of the kernels' vectorisable exp and log;
 *  - PyTorch fixtures (tests/fixtures/aft, make_aft_fixtures.py): values and all gradients.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ops/aft.h"
#include "ops/stream_store.h"
#include "testlib.h"

enum { SEED = 4242 };
enum { FULL, SIMPLE, LOCAL };

/* ---- the composition in double ------------------------------------------------------- */

static double sigmoid_d(double x) { return 1.0 / (1.0 + exp(-x)); }

typedef struct bias_case {
    int kind;
    int64_t B, T, D, window;
    int causal;
} bias_case;

/* The bias between query t and key tk (tk allowed), as the op defines it. */
static double ref_bias_at(const bias_case *c, const double *w, int64_t t, int64_t tk)
{
    if (c->kind == SIMPLE) return 0;
    int64_t s = c->kind == FULL ? c->T : c->window;
    bool in = c->causal ? t - tk < s : llabs(t - tk) < s;
    return in ? w[t * c->T + tk] : 0;
}

/* y [B,T,D] = sigmoid(q) * sum exp(k + w') v / sum exp(k + w'), each output with its max. */
static void ref_bias(const bias_case *c, const double *q, const double *k, const double *v,
                     const double *w, double *y)
{
    int64_t T = c->T, D = c->D;
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t ch = 0; ch < D; ch++) {
                int64_t end = c->causal ? t + 1 : T;
                double M = -INFINITY, s = 0, n = 0;
                for (int64_t tk = 0; tk < end; tk++)
                    M = fmax(M, k[(b * T + tk) * D + ch] + ref_bias_at(c, w, t, tk));
                for (int64_t tk = 0; tk < end; tk++) {
                    double e = exp(k[(b * T + tk) * D + ch] + ref_bias_at(c, w, t, tk) - M);
                    s += e;
                    n += e * v[(b * T + tk) * D + ch];
                }
                int64_t o = (b * T + t) * D + ch;
                y[o] = sigmoid_d(q[o]) * n / s;
            }
}

typedef struct conv_case {
    int64_t B, C, heads, H, W, kh, kw;
} conv_case;

static void ref_conv(const conv_case *c, const double *q, const double *k, const double *v,
                     const double *w, double *y)
{
    int64_t P = c->H * c->W, cg = c->C / c->heads;
    double *x = malloc(sizeof(double) * (size_t)P);
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t i = 0; i < c->heads; i++) {
            const double *kp = k + (b * c->heads + i) * P;
            for (int64_t p = 0; p < P; p++) {
                double M = -INFINITY, s = 0;
                for (int64_t pk = 0; pk < P; pk++) {
                    int64_t a = pk / c->W - p / c->W + c->kh / 2;
                    int64_t bb = pk % c->W - p % c->W + c->kw / 2;
                    bool in = a >= 0 && a < c->kh && bb >= 0 && bb < c->kw;
                    x[pk] = kp[pk] + (in ? w[(i * c->kh + a) * c->kw + bb] : 0);
                    M = fmax(M, x[pk]);
                }
                for (int64_t pk = 0; pk < P; pk++) s += exp(x[pk] - M);
                for (int64_t ch = i * cg; ch < (i + 1) * cg; ch++) {
                    double n = 0;
                    for (int64_t pk = 0; pk < P; pk++)
                        n += exp(x[pk] - M) * v[(b * c->C + ch) * P + pk];
                    int64_t o = (b * c->C + ch) * P + p;
                    y[o] = sigmoid_d(q[o]) * n / s;
                }
            }
        }
    free(x);
}

/* A reference: inputs in[0..3] (in[3] may be NULL) -> out, all double. */
typedef void (*ref_fn)(const void *ctx, double *const *in, double *out);

static void ref_bias_fn(const void *ctx, double *const *in, double *out)
{
    ref_bias(ctx, in[0], in[1], in[2], in[3], out);
}

static void ref_conv_fn(const void *ctx, double *const *in, double *out)
{
    ref_conv(ctx, in[0], in[1], in[2], in[3], out);
}

static double *to_double(const xt_tensor *t)
{
    if (!t) return NULL;
    double *d = malloc(sizeof(double) * (size_t)xt_numel(t));
    for (int64_t i = 0; i < xt_numel(t); i++) d[i] = test_f32(t)[i];
    return d;
}

static double loss_of(ref_fn f, const void *ctx, double *const *in, const double *G, double *out,
                      int64_t n_out)
{
    f(ctx, in, out);
    double s = 0;
    for (int64_t i = 0; i < n_out; i++) s += out[i] * G[i];
    return s;
}

/* Compares the fused op's output and gradients (of sum(out * G)) with the reference and
 * its central differences in double. in[3] may be NULL (aft_simple). */
static bool compare_with_ref(const char *what, test_fn op, const void *op_ctx, ref_fn ref,
                             const void *ref_ctx, xt_tensor **in, double vtol, double gtol)
{
    bool ok = true;
    for (int i = 0; i < 4; i++)
        if (in[i]) {
            xt_set_grad(in[i], NULL);
            xt_set_requires_grad(in[i], 1);
        }
    xt_tensor *y = op(in, op_ctx);
    if (!y) {
        fprintf(stderr, "%s: forward failed: %s\n", what, xt_last_error());
        return false;
    }
    int64_t n = xt_numel(y);
    xt_tensor *G = test_randn(y->ndim, y->shape, 1, 0);
    if (xt_backward(y, G, 0) != XT_OK) {
        fprintf(stderr, "%s: backward failed: %s\n", what, xt_last_error());
        ok = false;
    }
    double *d[4], *out = malloc(sizeof(double) * (size_t)n), *Gd = to_double(G);
    for (int i = 0; i < 4; i++) d[i] = to_double(in[i]);
    ref(ref_ctx, d, out);
    double worst = 0;
    for (int64_t j = 0; j < n; j++) {
        double e = fabs(test_f32(y)[j] - out[j]) / (1 + fabs(out[j]));
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
    }
    if (!(worst <= vtol)) {
        fprintf(stderr, "%s: output differs from the composition by %g (tolerance %g)\n", what,
                worst, vtol);
        ok = false;
    }
    static const char *names[4] = {"q", "k", "v", "w"};
    for (int i = 0; i < 4 && ok; i++) {
        if (!in[i]) continue;
        const float *g = in[i]->grad ? test_f32(in[i]->grad) : NULL;
        if (!g) {
            fprintf(stderr, "%s: no gradient for %s\n", what, names[i]);
            ok = false;
            break;
        }
        double gworst = 0;
        int64_t at = 0;
        for (int64_t j = 0; j < xt_numel(in[i]); j++) {
            double x0 = d[i][j], h = 1e-5 * fmax(1, fabs(x0));
            d[i][j] = x0 + h;
            double lp = loss_of(ref, ref_ctx, d, Gd, out, n);
            d[i][j] = x0 - h;
            double lm = loss_of(ref, ref_ctx, d, Gd, out, n);
            d[i][j] = x0;
            double num = (lp - lm) / (2 * h);
            double e = fabs(g[j] - num) / (1 + fabs(num));
            if (!(e <= gworst)) gworst = isnan(e) ? INFINITY : e, at = j;
        }
        if (!(gworst <= gtol)) {
            fprintf(stderr, "%s: d%s differs from the composition's by %g at %lld (tolerance %g)\n",
                    what, names[i], gworst, (long long)at, gtol);
            ok = false;
        }
    }
    for (int i = 0; i < 4; i++) {
        free(d[i]);
        if (in[i]) {
            xt_set_grad(in[i], NULL);
            xt_set_requires_grad(in[i], 0);
        }
    }
    free(out);
    free(Gd);
    xt_tensor_release(G);
    xt_tensor_release(y);
    return ok;
}

/* ---- the fused ops as test functions ---------------------------------------------------- */

static xt_tensor *op_bias(xt_tensor *const *in, const void *ctx)
{
    const bias_case *c = ctx;
    switch (c->kind) {
    case FULL: return xt_aft_full(in[0], in[1], in[2], in[3], c->causal);
    case SIMPLE: return xt_aft_simple(in[0], in[1], in[2], c->causal);
    default: return xt_aft_local(in[0], in[1], in[2], in[3], c->window, c->causal);
    }
}

static xt_tensor *op_conv(xt_tensor *const *in, const void *ctx)
{
    (void)ctx;
    return xt_aft_conv(in[0], in[1], in[2], in[3]);
}

static const char *kind_name(int kind)
{
    return kind == FULL ? "aft_full" : kind == SIMPLE ? "aft_simple" : "aft_local";
}

/* q, k, v [B,T,D] ~ N(0,1) (k scaled by kscale), w [T,T] ~ N(0, wscale^2) or NULL. */
static void make_bias_inputs(const bias_case *c, double kscale, double wscale, xt_tensor **in)
{
    int64_t s[3] = {c->B, c->T, c->D}, ws[2] = {c->T, c->T};
    in[0] = test_randn(3, s, 1, 0);
    in[1] = test_randn(3, s, kscale, 0);
    in[2] = test_randn(3, s, 1, 0);
    in[3] = c->kind == SIMPLE ? NULL : test_randn(2, ws, wscale, 0);
}

static void make_conv_inputs(const conv_case *c, double kscale, double wscale, xt_tensor **in)
{
    int64_t s[4] = {c->B, c->C, c->H, c->W}, ks[4] = {c->B, c->heads, c->H, c->W};
    int64_t ws[3] = {c->heads, c->kh, c->kw};
    in[0] = test_randn(4, s, 1, 0);
    in[1] = test_randn(4, ks, kscale, 0);
    in[2] = test_randn(4, s, 1, 0);
    in[3] = test_randn(3, ws, wscale, 0);
}

static void release4(xt_tensor **in)
{
    for (int i = 0; i < 4; i++) xt_tensor_release(in[i]);
}

/* ---- tests ----------------------------------------------------------------------------- */

static const bias_case bias_cases[] = {
    {FULL, 2, 7, 3, 0, 0},    {FULL, 2, 7, 3, 0, 1},    {FULL, 1, 1, 2, 0, 1},
    {SIMPLE, 2, 7, 3, 0, 0},  {SIMPLE, 2, 7, 3, 0, 1},  {SIMPLE, 1, 1, 2, 0, 0},
    {LOCAL, 2, 9, 3, 3, 0},   {LOCAL, 2, 9, 3, 3, 1},   {LOCAL, 1, 6, 2, 1, 0},
    {LOCAL, 1, 6, 2, 1, 1},   {LOCAL, 2, 5, 2, 0, 0},   {LOCAL, 2, 5, 2, 0, 1},
    {LOCAL, 1, 5, 2, 9, 0},   {LOCAL, 1, 5, 2, 9, 1},   {LOCAL, 1, 70, 3, 20, 1},
    {LOCAL, 1, 70, 3, 20, 0}, {FULL, 1, 300, 2, 0, 1}, {LOCAL, 2, 300, 2, 100, 0},
};

static void describe(char *buf, size_t n, const bias_case *c, const char *extra)
{
    snprintf(buf, n, "%s B%lld T%lld D%lld window %lld %s%s", kind_name(c->kind),
             (long long)c->B, (long long)c->T, (long long)c->D, (long long)c->window,
             c->causal ? "causal" : "non-causal", extra);
}

static void test_bias_against_composition(void)
{
    for (size_t i = 0; i < sizeof bias_cases / sizeof *bias_cases; i++) {
        const bias_case *c = &bias_cases[i];
        if (c->T > 100) continue; /* test_bias_long */
        xt_tensor *in[4];
        make_bias_inputs(c, 1.0, 1.0, in);
        char what[160];
        describe(what, sizeof what, c, "");
        CHECK(compare_with_ref(what, op_bias, c, ref_bias_fn, c, in, 1e-5, 2e-4));
        release4(in);
    }
}

/* Long sequences (several GEMM blocks, a partial last block): values against the
 * composition (its central differences would be slow at this size; test_identities
 * covers the gradients of multi-block shapes). */
static void test_bias_long(void)
{
    for (size_t i = 0; i < sizeof bias_cases / sizeof *bias_cases; i++) {
        const bias_case *c = &bias_cases[i];
        if (c->T < 100) continue;
        xt_tensor *in[4];
        make_bias_inputs(c, 2.0, 1.0, in);
        xt_tensor *y = op_bias(in, c);
        int64_t n = c->B * c->T * c->D;
        double *d[4], *ref = malloc(sizeof(double) * (size_t)n);
        for (int j = 0; j < 4; j++) d[j] = to_double(in[j]);
        ref_bias(c, d[0], d[1], d[2], d[3], ref);
        double worst = 0;
        for (int64_t j = 0; y && j < n; j++) {
            double e = fabs(test_f32(y)[j] - ref[j]) / (1 + fabs(ref[j]));
            if (!(e <= worst)) worst = e;
        }
        char what[160];
        describe(what, sizeof what, c, "");
        if (!(y && worst < 1e-5)) fprintf(stderr, "%s: differs by %g\n", what, worst);
        CHECK(y && worst < 1e-5);
        for (int j = 0; j < 4; j++) free(d[j]);
        free(ref);
        xt_tensor_release(y);
        release4(in);
    }
}

/* Gradients of sum(y * G) by the element-wise formulas (research notes section 5), in
 * double: alpha = exp(k[t'] + w'[t,t'] - L_t), H = G sigmoid(q),
 * dv[t'] += H alpha, dk[t'] += H alpha (v[t'] - A_t), dw[t,t'] += the same on the window. */
static void ref_bias_grads(const bias_case *c, double *const *in, const double *G, double *dq,
                           double *dk, double *dv, double *dw)
{
    const double *q = in[0], *k = in[1], *v = in[2], *w = in[3];
    int64_t T = c->T, D = c->D, n = c->B * T * D, s = c->kind == FULL ? T : c->window;
    memset(dk, 0, sizeof(double) * (size_t)n);
    memset(dv, 0, sizeof(double) * (size_t)n);
    memset(dw, 0, sizeof(double) * (size_t)(T * T));
    double *alpha = malloc(sizeof(double) * (size_t)T);
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t ch = 0; ch < D; ch++) {
                int64_t end = c->causal ? t + 1 : T, o = (b * T + t) * D + ch;
                double M = -INFINITY, sum = 0, num = 0;
                for (int64_t tk = 0; tk < end; tk++)
                    M = fmax(M, k[(b * T + tk) * D + ch] + ref_bias_at(c, w, t, tk));
                for (int64_t tk = 0; tk < end; tk++) {
                    alpha[tk] = exp(k[(b * T + tk) * D + ch] + ref_bias_at(c, w, t, tk) - M);
                    sum += alpha[tk];
                    num += alpha[tk] * v[(b * T + tk) * D + ch];
                }
                double A = num / sum, sg = sigmoid_d(q[o]), H = G[o] * sg;
                dq[o] = G[o] * A * sg * (1 - sg);
                for (int64_t tk = 0; tk < end; tk++) {
                    int64_t ok = (b * T + tk) * D + ch;
                    double g = H * alpha[tk] / sum;
                    dv[ok] += g;
                    dk[ok] += g * (v[ok] - A);
                    bool in_window = c->causal ? t - tk < s : llabs(t - tk) < s;
                    if (in_window) dw[t * T + tk] += g * (v[ok] - A);
                }
            }
    free(alpha);
}

/* op on 1 thread (run 0) and 2 threads (run 1): got[run] = {dq, dk, dv, dw, y} (retained;
 * NULL for a gradient that was not made), for the upstream gradient *G (standard normal,
 * made on the first run). */
static void run_on_threads(test_fn op, const void *ctx, xt_tensor **in, xt_tensor **G,
                           xt_tensor *got[2][5])
{
    int32_t threads = xt_get_num_threads();
    for (int run = 0; run < 2; run++) {
        xt_set_num_threads(run == 0 ? 1 : 2);
        for (int j = 0; j < 4; j++) xt_set_requires_grad(in[j], 1);
        got[run][4] = op(in, ctx);
        if (!*G) *G = test_randn(got[run][4]->ndim, got[run][4]->shape, 1, 0);
        CHECK(xt_backward(got[run][4], *G, 0) == XT_OK);
        for (int j = 0; j < 4; j++) {
            got[run][j] = in[j]->grad;
            if (got[run][j]) xt_tensor_retain(got[run][j]);
            xt_set_grad(in[j], NULL);
            xt_set_requires_grad(in[j], 0);
        }
    }
    xt_set_num_threads(threads);
}

/* Several GEMM blocks of either kind, partial last blocks, channel counts that do not
 * fill the passes' channel groups, windows 0 and 1, keys outside the blocks both sides:
 * values and all four gradients against ref_bias_grads; and the same results on 1 and 2
 * threads up to rounding (each block's sums are made by one thread in a fixed order, but
 * an op too small to split into blocks lets OpenBLAS thread its GEMMs). */
static void test_bias_long_grads(void)
{
    const bias_case cases[] = {
        {LOCAL, 2, 333, 37, 50, 1}, {LOCAL, 2, 333, 37, 50, 0}, {LOCAL, 1, 301, 5, 0, 1},
        {LOCAL, 1, 301, 5, 0, 0},   {LOCAL, 1, 257, 33, 1, 1},  {LOCAL, 1, 257, 33, 1, 0},
        {LOCAL, 2, 200, 3, 130, 1}, {LOCAL, 2, 200, 3, 130, 0}, {FULL, 1, 300, 6, 0, 1},
        {FULL, 1, 300, 6, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const bias_case *c = &cases[i];
        char what[160];
        describe(what, sizeof what, c, "");
        xt_tensor *in[4];
        make_bias_inputs(c, 2.0, 1.0, in);
        xt_tensor *G = NULL, *got[2][5] = {{NULL}};
        run_on_threads(op_bias, c, in, &G, got);
        for (int j = 0; j < 5; j++) CHECK(got[0][j] && test_close(what, got[0][j], got[1][j], 1e-6));

        int64_t n = c->B * c->T * c->D, sizes[5] = {n, n, n, c->T * c->T, n};
        double *d[4], *Gd = to_double(G), *want[5];
        for (int j = 0; j < 4; j++) d[j] = to_double(in[j]);
        for (int j = 0; j < 5; j++) want[j] = malloc(sizeof(double) * (size_t)sizes[j]);
        ref_bias_grads(c, d, Gd, want[0], want[1], want[2], want[3]);
        ref_bias(c, d[0], d[1], d[2], d[3], want[4]);
        static const char *names[5] = {"dq", "dk", "dv", "dw", "y"};
        for (int j = 0; j < 5; j++) {
            double worst = 0;
            for (int64_t e = 0; got[1][j] && e < sizes[j]; e++) {
                double x = fabs(test_f32(got[1][j])[e] - want[j][e]) / (1 + fabs(want[j][e]));
                if (!(x <= worst)) worst = isnan(x) ? INFINITY : x;
            }
            if (!(worst < 2e-5)) fprintf(stderr, "%s: %s differs by %g\n", what, names[j], worst);
            CHECK(worst < 2e-5);
        }
        for (int j = 0; j < 5; j++) {
            free(want[j]);
            xt_tensor_release(got[0][j]);
            xt_tensor_release(got[1][j]);
        }
        for (int j = 0; j < 4; j++) free(d[j]);
        free(Gd);
        xt_tensor_release(G);
        release4(in);
    }
}

static void test_bias_gradcheck(void)
{
    for (size_t i = 0; i < sizeof bias_cases / sizeof *bias_cases; i++) {
        const bias_case *c = &bias_cases[i];
        if (c->T > 20) continue;
        xt_tensor *in[4];
        make_bias_inputs(c, 1.0, 1.0, in);
        char what[160];
        describe(what, sizeof what, c, "");
        CHECK(test_gradcheck(what, op_bias, c, 4, in));
        release4(in);
    }
}

static const conv_case conv_cases[] = {
    {2, 4, 2, 3, 4, 3, 3}, {1, 3, 3, 4, 3, 1, 3}, {2, 2, 1, 3, 3, 5, 5},
    {1, 4, 4, 2, 5, 3, 1}, {1, 2, 2, 5, 5, 9, 3}, {2, 6, 3, 4, 4, 1, 1},
    {2, 8, 2, 5, 7, 3, 5}, /* rows of W C/heads = 28 floats: a register block and a tail */
    /* dw's dot products: kernels 7 wide (rows in pairs, one left over), 9 wide (tap by tap);
     * the main job's 7x7 and 14x14 grids with a 5x5 kernel, one channel per head */
    {1, 4, 2, 6, 9, 3, 7}, {1, 2, 1, 5, 11, 3, 9}, {2, 4, 2, 7, 7, 5, 5}, {1, 2, 2, 14, 14, 5, 5},
};

/* Big enough to be split among threads: the same outputs and gradients on 1 and 2 threads
 * (each (batch item, head) is one task, dw summed over batch items in order). */
static void test_conv_threads(void)
{
    const conv_case c = {6, 16, 4, 14, 14, 5, 5};
    xt_tensor *in[4];
    make_conv_inputs(&c, 1.0, 1.0, in);
    xt_tensor *G = NULL, *got[2][5] = {{NULL}};
    run_on_threads(op_conv, NULL, in, &G, got);
    for (int j = 0; j < 5; j++) {
        CHECK(got[0][j] && test_close("aft_conv 1 vs 2 threads", got[0][j], got[1][j], 0));
        xt_tensor_release(got[0][j]);
        xt_tensor_release(got[1][j]);
    }
    xt_tensor_release(G);
    release4(in);
}

static void test_conv_against_composition(void)
{
    for (size_t i = 0; i < sizeof conv_cases / sizeof *conv_cases; i++) {
        const conv_case *c = &conv_cases[i];
        xt_tensor *in[4];
        make_conv_inputs(c, 1.0, 1.0, in);
        char what[160];
        snprintf(what, sizeof what, "aft_conv B%lld C%lld heads %lld %lldx%lld kernel %lldx%lld",
                 (long long)c->B, (long long)c->C, (long long)c->heads, (long long)c->H,
                 (long long)c->W, (long long)c->kh, (long long)c->kw);
        CHECK(compare_with_ref(what, op_conv, NULL, ref_conv_fn, c, in, 1e-5, 2e-4));
        CHECK(test_gradcheck(what, op_conv, NULL, 4, in));
        release4(in);
    }
}

/* Keys uniform in [-100, 100] (and biases up to 60 for the bias ops): far beyond exp's
 * range, so several scaled denominators underflow. Values and gradients must still match
 * the composition, with nothing non-finite. */
static void test_stability(void)
{
    const bias_case cases[] = {
        {FULL, 2, 12, 3, 0, 1}, {FULL, 2, 12, 3, 0, 0}, {SIMPLE, 2, 12, 3, 0, 1},
        {SIMPLE, 2, 12, 3, 0, 0}, {LOCAL, 2, 12, 3, 3, 1}, {LOCAL, 2, 12, 3, 4, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const bias_case *c = &cases[i];
        for (int wide_w = 0; wide_w < 2; wide_w++) {
            xt_tensor *in[4];
            make_bias_inputs(c, 1.0, wide_w ? 30.0 : 1.0, in);
            float *k = test_f32(in[1]);
            for (int64_t j = 0; j < xt_numel(in[1]); j++) k[j] = (float)(100 * tanh(2 * k[j]));
            /* the first keys very negative and a late one very positive: with a global
             * max, the early causal rows' denominators underflow */
            for (int64_t ch = 0; ch < c->D; ch++) {
                k[ch] = -100;
                k[(c->T - 1) * c->D + ch] = 100;
            }
            char what[160];
            describe(what, sizeof what, c, wide_w ? ", |k| <= 100, w ~ 30" : ", |k| <= 100");
            CHECK(compare_with_ref(what, op_bias, c, ref_bias_fn, c, in, 1e-5, 1e-3));
            release4(in);
        }
    }
    const conv_case cc = {2, 4, 2, 4, 5, 3, 3};
    for (int wide_w = 0; wide_w < 2; wide_w++) {
        xt_tensor *in[4];
        make_conv_inputs(&cc, 1.0, wide_w ? 40.0 : 1.0, in);
        float *k = test_f32(in[1]);
        for (int64_t j = 0; j < xt_numel(in[1]); j++) k[j] = (float)(100 * tanh(2 * k[j]));
        CHECK(compare_with_ref(wide_w ? "aft_conv |k| <= 100, w ~ 40" : "aft_conv |k| <= 100",
                               op_conv, NULL, ref_conv_fn, &cc, in, 1e-5, 1e-3));
        release4(in);
    }
}

/* Inputs at t' > t0 perturbed: outputs at t <= t0 stay (up to rounding: the offsets may
 * move), later ones change; a gradient seeded only at t <= t0 reaches no input at t' > t0. */
static void test_causality(void)
{
    const bias_case cases[] = {
        {FULL, 2, 300, 4, 0, 1}, {SIMPLE, 2, 300, 4, 0, 1}, {LOCAL, 2, 300, 4, 40, 1},
        {LOCAL, 2, 300, 4, 0, 1},
    };
    const int64_t t0 = 150;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const bias_case *c = &cases[i];
        int64_t T = c->T, D = c->D;
        xt_tensor *in[4];
        make_bias_inputs(c, 1.0, 1.0, in);
        xt_tensor *y1 = op_bias(in, c);
        for (int j = 0; j < 3; j++) {
            float *p = test_f32(in[j]);
            for (int64_t b = 0; b < c->B; b++)
                for (int64_t t = t0 + 1; t < T; t++)
                    for (int64_t ch = 0; ch < D; ch++) p[(b * T + t) * D + ch] += 5.0f;
        }
        if (in[3])
            for (int64_t t = 0; t < T; t++)
                for (int64_t tk = t0 + 1; tk < T; tk++) test_f32(in[3])[t * T + tk] += 5.0f;
        xt_tensor *y2 = op_bias(in, c);
        double before = 0, after = 0;
        for (int64_t b = 0; b < c->B; b++)
            for (int64_t t = 0; t < T; t++)
                for (int64_t ch = 0; ch < D; ch++) {
                    int64_t o = (b * T + t) * D + ch;
                    double e = fabs(test_f32(y1)[o] - test_f32(y2)[o]);
                    if (t <= t0) before = fmax(before, e);
                    else after = fmax(after, e);
                }
        char what[160];
        describe(what, sizeof what, c, "");
        if (!(before < 1e-5 && after > 1e-2))
            fprintf(stderr, "causality %s: change at t <= t0 %g, after %g\n", what, before, after);
        CHECK(before < 1e-5 && after > 1e-2);

        for (int j = 0; j < 4; j++)
            if (in[j]) xt_set_requires_grad(in[j], 1);
        xt_tensor *y = op_bias(in, c), *G = xt_zeros(3, y->shape, XT_FLOAT32);
        for (int64_t b = 0; b < c->B; b++)
            for (int64_t t = 0; t <= t0; t++)
                for (int64_t ch = 0; ch < D; ch++) test_f32(G)[(b * T + t) * D + ch] = 1.0f;
        CHECK(xt_backward(y, G, 0) == XT_OK);
        bool zero = true, some = false;
        for (int j = 0; j < 3; j++) {
            const float *g = test_f32(in[j]->grad);
            for (int64_t b = 0; b < c->B; b++)
                for (int64_t t = 0; t < T; t++)
                    for (int64_t ch = 0; ch < D; ch++) {
                        float x = g[(b * T + t) * D + ch];
                        if (t > t0) zero = zero && x == 0.0f;
                        else some = some || x != 0.0f;
                    }
        }
        if (in[3])
            for (int64_t t = 0; t < T; t++)
                for (int64_t tk = 0; tk < T; tk++)
                    if (tk > t0 || tk > t) zero = zero && test_f32(in[3]->grad)[t * T + tk] == 0.0f;
        CHECK(zero && some);
        xt_tensor_release(y);
        xt_tensor_release(G);
        xt_tensor_release(y1);
        xt_tensor_release(y2);
        release4(in);
    }
}

/* window >= T is aft_full; window 0 is aft_simple (same w, both modes), values and grads. */
static void test_identities(void)
{
    for (int causal = 0; causal < 2; causal++) {
        bias_case full = {FULL, 2, 130, 5, 0, causal}, big = {LOCAL, 2, 130, 5, 130, causal};
        bias_case simple = {SIMPLE, 2, 130, 5, 0, causal}, zero = {LOCAL, 2, 130, 5, 0, causal};
        xt_tensor *in[4];
        make_bias_inputs(&full, 1.0, 1.0, in);
        const bias_case *pairs[2][2] = {{&full, &big}, {&simple, &zero}};
        for (int p = 0; p < 2; p++) {
            xt_tensor *g[2][4] = {{NULL}}, *y[2];
            xt_tensor *G = NULL;
            for (int s = 0; s < 2; s++) {
                for (int j = 0; j < 4; j++) xt_set_requires_grad(in[j], 1);
                y[s] = op_bias(in, pairs[p][s]);
                if (!G) G = test_randn(3, y[s]->shape, 1, 0);
                CHECK(xt_backward(y[s], G, 0) == XT_OK);
                for (int j = 0; j < 4; j++) {
                    g[s][j] = in[j]->grad ? in[j]->grad : NULL;
                    if (g[s][j]) xt_tensor_retain(g[s][j]);
                    xt_set_grad(in[j], NULL);
                    xt_set_requires_grad(in[j], 0);
                }
            }
            CHECK(test_close("identity y", y[0], y[1], 2e-6));
            for (int j = 0; j < 3; j++) CHECK(test_close("identity grad", g[0][j], g[1][j], 2e-5));
            if (p == 0) CHECK(test_close("identity dw", g[0][3], g[1][3], 2e-5));
            /* aft_simple has no w; aft_local with window 0 gives it a zero gradient */
            if (p == 1) {
                xt_tensor *z = xt_zeros(2, in[3]->shape, XT_FLOAT32);
                CHECK(test_close("window 0 dw", g[1][3], z, 0));
                xt_tensor_release(z);
            }
            for (int s = 0; s < 2; s++) {
                xt_tensor_release(y[s]);
                for (int j = 0; j < 4; j++) xt_tensor_release(g[s][j]);
            }
            xt_tensor_release(G);
        }
        release4(in);
    }
}

/* Strided (non-contiguous) inputs give the same result as their contiguous copies. */
static void test_strided(void)
{
    int64_t s[3] = {3, 6, 4}, ws[2] = {6, 6};
    xt_tensor *raw[4], *view[4], *dense[4];
    for (int j = 0; j < 3; j++) {
        raw[j] = test_randn(3, s, 1, 0);
        view[j] = xt_transpose(raw[j], 0, 2); /* [4,6,3], not contiguous */
    }
    raw[3] = test_randn(2, ws, 1, 0);
    view[3] = xt_transpose(raw[3], 0, 1);
    for (int j = 0; j < 4; j++) {
        CHECK(!xt_is_contiguous(view[j]));
        dense[j] = xt_clone(view[j]);
    }
    for (int causal = 0; causal < 2; causal++) {
        xt_tensor *a = xt_aft_local(view[0], view[1], view[2], view[3], 2, causal);
        xt_tensor *b = xt_aft_local(dense[0], dense[1], dense[2], dense[3], 2, causal);
        CHECK(test_close("strided aft_local", a, b, 0));
        xt_tensor_release(a);
        xt_tensor_release(b);
        a = xt_aft_simple(view[0], view[1], view[2], causal);
        b = xt_aft_simple(dense[0], dense[1], dense[2], causal);
        CHECK(test_close("strided aft_simple", a, b, 0));
        xt_tensor_release(a);
        xt_tensor_release(b);
    }
    for (int j = 0; j < 4; j++) {
        xt_tensor_release(raw[j]);
        xt_tensor_release(view[j]);
        xt_tensor_release(dense[j]);
    }
}

static void test_errors(void)
{
    int64_t s[3] = {2, 5, 3}, s2[3] = {2, 4, 3}, ws[2] = {5, 5}, wbad[2] = {4, 5};
    xt_tensor *q = test_randn(3, s, 1, 0), *k2 = test_randn(3, s2, 1, 0);
    xt_tensor *w = test_randn(2, ws, 1, 0), *wb = test_randn(2, wbad, 1, 0);
    xt_tensor *qi = xt_zeros(3, s, XT_INT64), *q2d = test_randn(2, ws, 1, 0);
    int64_t es[3] = {2, 0, 3};
    xt_tensor *empty = xt_zeros(3, es, XT_FLOAT32);

    CHECK(!xt_aft_full(q, k2, q, w, 0) && test_error_has("aft_full: expected k of shape [2,5,3]"));
    CHECK(!xt_aft_full(q, q, q, wb, 1) && test_error_has("aft_full: expected w of shape [5,5]"));
    CHECK(!xt_aft_full(qi, q, q, w, 1) && test_error_has("aft_full: expected float32 q, got int64"));
    CHECK(!xt_aft_full(q2d, q2d, q2d, w, 1) && test_error_has("aft_full: expected q of shape [B,T,D]"));
    CHECK(!xt_aft_full(q, q, q, NULL, 1) && test_error_has("aft_full: w is NULL"));
    CHECK(!xt_aft_simple(q, q, k2, 0) && test_error_has("aft_simple: expected v of shape [2,5,3]"));
    CHECK(!xt_aft_simple(empty, empty, empty, 0) && test_error_has("aft_simple: expected q"));
    CHECK(!xt_aft_simple(NULL, q, q, 0) && test_error_has("aft_simple: q is NULL"));
    CHECK(!xt_aft_local(q, q, q, w, -1, 0) && test_error_has("aft_local: expected a window >= 0"));
    CHECK(!xt_aft_local(q, q, q, wb, 2, 0) && test_error_has("aft_local: expected w of shape"));

    int64_t cs[4] = {2, 4, 3, 3}, ks[4] = {2, 2, 3, 3}, kbad[4] = {2, 3, 3, 3};
    int64_t cw[3] = {2, 3, 3}, cweven[3] = {2, 2, 3}, cwheads[3] = {3, 3, 3};
    xt_tensor *cq = test_randn(4, cs, 1, 0), *ck = test_randn(4, ks, 1, 0);
    xt_tensor *ckb = test_randn(4, kbad, 1, 0), *cwt = test_randn(3, cw, 1, 0);
    xt_tensor *cwe = test_randn(3, cweven, 1, 0), *cwh = test_randn(3, cwheads, 1, 0);
    CHECK(!xt_aft_conv(cq, ckb, cq, cwh) && test_error_has("aft_conv: the 4 channels of q must split evenly into the 3 heads"));
    CHECK(!xt_aft_conv(cq, ck, cq, cwe) && test_error_has("aft_conv: expected an odd kernel size"));
    CHECK(!xt_aft_conv(cq, ck, cq, cwh) && test_error_has("aft_conv: expected w of shape [heads,kh,kw] with heads = 2"));
    CHECK(!xt_aft_conv(cq, q, cq, cwt) && test_error_has("aft_conv: expected k of shape [B,heads,H,W] = [2,heads,3,3]"));
    CHECK(!xt_aft_conv(q, ck, q, cwt) && test_error_has("aft_conv: expected q of shape [B,C,H,W]"));
    CHECK(!xt_aft_conv(cq, ck, ck, cwt) && test_error_has("aft_conv: expected v of shape [2,4,3,3]"));

    xt_tensor *all[] = {q, k2, w, wb, qi, q2d, empty, cq, ck, ckb, cwt, cwe, cwh};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) xt_tensor_release(all[i]);
}

/* aft_exp and aft_log against libm in double: relative error below 3e-7 over the ranges
 * the kernels use (exp of arguments <= 0 down to the flush at -87.3; log of sums >= 1e-20),
 * and the edge values (measured: below 1e-7 for both). aft_exp_neg equals aft_exp bit for
 * bit on x <= 0. */
static void test_exp_log(void)
{
    double worst_exp = 0, worst_log = 0;
    int neg_same = 0, neg_points = 200001;
    for (int i = 0; i <= 200000; i++) {
        float x = (float)(-87.3 + 176.0 * i / 200000.0); /* -87.3 .. 88.7 */
        double e = fabs(aft_exp(x) - exp((double)x)) / exp((double)x);
        if (!(e <= worst_exp)) worst_exp = e;
        if (x <= 0) neg_same += aft_exp_neg(x) == aft_exp(x);
        else neg_points--;
        float y = (float)pow(10.0, -20 + 60.0 * i / 200000.0); /* 1e-20 .. 1e40 */
        if (isinf(y)) continue;
        double l = fabs(aft_log(y) - log((double)y)) / fmax(1.0, fabs(log((double)y)));
        if (!(l <= worst_log)) worst_log = l;
    }
    if (!(worst_exp < 3e-7 && worst_log < 3e-7))
        fprintf(stderr, "aft_exp error %g, aft_log error %g\n", worst_exp, worst_log);
    CHECK(worst_exp < 3e-7 && worst_log < 3e-7);
    CHECK(aft_exp(-88.0f) == 0.0f && aft_exp(-INFINITY) == 0.0f && aft_exp(0.0f) == 1.0f);
    CHECK(neg_same == neg_points);
    CHECK(aft_exp_neg(-88.0f) == 0.0f && aft_exp_neg(-INFINITY) == 0.0f);
    CHECK(aft_exp_neg(0.0f) == 1.0f && aft_exp_neg(-0.0f) == 1.0f && isnan(aft_exp_neg(NAN)));
    CHECK(isinf(aft_exp(89.0f)) && isinf(aft_exp(INFINITY)) && isnan(aft_exp(NAN)));
    CHECK(aft_log(1.0f) == 0.0f);
    CHECK(aft_sigmoid(-200.0f) == 0.0f && aft_sigmoid(200.0f) == 1.0f && aft_sigmoid(0.0f) == 0.5f);
}

/* xt_store_row and xt_store_zeros write exactly dst[0..n), whatever dst's alignment and n
 * (the head before an aligned line, whole vectors, the tail), and nothing around it. */
static void test_stream_store(void)
{
    enum { CAP = 256 };
    float src[CAP], dst[CAP + 64] __attribute__((aligned(64)));
    for (int i = 0; i < CAP; i++) src[i] = (float)(i + 1);
    int bad = 0;
    for (int off = 0; off < 17; off++)
        for (int n = 0; n <= 100; n += n < 40 ? 1 : 13) {
            for (int zeros = 0; zeros < 2; zeros++) {
                for (int i = 0; i < CAP + 64; i++) dst[i] = -1.0f;
                if (zeros) xt_store_zeros(dst + off, n);
                else xt_store_row(dst + off, src, n);
                xt_store_fence();
                for (int i = 0; i < CAP + 64; i++) {
                    bool inside = i >= off && i < off + n;
                    float want = !inside ? -1.0f : zeros ? 0.0f : src[i - off];
                    bad += dst[i] != want;
                }
            }
        }
    CHECK(bad == 0);
    CHECK(xt_streams(XT_STREAM_BYTES + 1) && !xt_streams(XT_STREAM_BYTES));
}

/* ---- PyTorch fixtures ------------------------------------------------------------------ */

static void check_fixture(const char *name, int kind, int64_t window, int causal)
{
    static const char *parts[4] = {"q", "k", "v", "w"};
    xt_tensor *in[4] = {NULL, NULL, NULL, NULL};
    bool ok = true;
    for (int j = 0; j < 4; j++) {
        if (j == 3 && kind == SIMPLE) break;
        in[j] = test_fixture("aft", name, parts[j]);
        ok = ok && in[j];
    }
    xt_tensor *want = test_fixture("aft", name, "out"), *G = test_fixture("aft", name, "dout");
    CHECK(ok && want && G);
    if (!ok || !want || !G) {
        release4(in);
        xt_tensor_release(want);
        xt_tensor_release(G);
        return;
    }
    for (int j = 0; j < 4; j++)
        if (in[j]) xt_set_requires_grad(in[j], 1);
    xt_tensor *y = kind == FULL ? xt_aft_full(in[0], in[1], in[2], in[3], causal)
                 : kind == SIMPLE ? xt_aft_simple(in[0], in[1], in[2], causal)
                 : kind == LOCAL ? xt_aft_local(in[0], in[1], in[2], in[3], window, causal)
                                 : xt_aft_conv(in[0], in[1], in[2], in[3]);
    char what[200];
    snprintf(what, sizeof what, "fixture %s out", name);
    CHECK(y && test_close(what, y, want, 2e-5));
    CHECK(y && xt_backward(y, G, 0) == XT_OK);
    for (int j = 0; j < 4 && y; j++) {
        if (!in[j]) continue;
        char part[8];
        snprintf(part, sizeof part, "d%s", parts[j]);
        xt_tensor *dwant = test_fixture("aft", name, part);
        snprintf(what, sizeof what, "fixture %s %s", name, part);
        CHECK(dwant && test_close(what, in[j]->grad, dwant, 1e-4));
        xt_tensor_release(dwant);
    }
    xt_tensor_release(y);
    xt_tensor_release(want);
    xt_tensor_release(G);
    release4(in);
}

static void test_fixtures(void)
{
    check_fixture("full", FULL, 0, 0);
    check_fixture("full_causal", FULL, 0, 1);
    check_fixture("simple", SIMPLE, 0, 0);
    check_fixture("simple_causal", SIMPLE, 0, 1);
    check_fixture("local", LOCAL, 3, 0);
    check_fixture("local_causal", LOCAL, 3, 1);
    check_fixture("full_large_k", FULL, 0, 1);
    check_fixture("simple_large_k", SIMPLE, 0, 1);
    check_fixture("conv", 3, 0, 0);
    check_fixture("conv_5x3", 3, 0, 0);
}

int main(void)
{
    test_seed("test_aft", SEED);
    test_bias_against_composition();
    test_bias_long();
    test_bias_long_grads();
    test_bias_gradcheck();
    test_conv_against_composition();
    test_conv_threads();
    test_stability();
    test_causality();
    test_identities();
    test_strided();
    test_errors();
    test_exp_log();
    test_stream_store();
    test_fixtures();
    return check_report("test_aft");
}
