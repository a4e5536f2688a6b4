/*
 * testlib.h: what the C op tests share beyond check.h: random inputs, comparisons, a
 * finite-difference gradient check and PyTorch fixture loading (tests/fixtures/<dir>).
 * Include after check.h and internal.h; every function is static (one test per binary).
 */
#ifndef XT_TEST_TESTLIB_H
#define XT_TEST_TESTLIB_H
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "internal.h"

#ifndef XT_FIXTURES_DIR
#define XT_FIXTURES_DIR "tests/fixtures"
#endif

/* Each test defines its seed and prints it, so a failure can be replayed. */
static xt_rng test_rng;

static void test_seed(const char *name, uint64_t seed)
{
    test_rng.seed = seed;
    test_rng.offset = 0;
    printf("%s: seed %llu\n", name, (unsigned long long)seed);
}

/* N(shift, scale^2) float32 of the given shape. */
static xt_tensor *test_randn(int32_t ndim, const int64_t *shape, double scale, double shift)
{
    xt_tensor *t = xt_randn(&test_rng, ndim, shape);
    float *p = t->data;
    for (int64_t i = 0; i < xt_numel(t); i++) p[i] = (float)(p[i] * scale + shift);
    return t;
}

static float *test_f32(const xt_tensor *t) { return t ? (float *)t->data : NULL; }

/* max |a - b| over two tensors of the same numel, read in C order (any strides, float32);
 * INFINITY when either is missing or the sizes differ. NaN counts as infinitely wrong. */
static double test_max_diff(const xt_tensor *a, const xt_tensor *b)
{
    if (!a || !b || xt_numel(a) != xt_numel(b)) return INFINITY;
    xt_tensor *ca = xt_contiguous((xt_tensor *)a), *cb = xt_contiguous((xt_tensor *)b);
    double worst = 0;
    for (int64_t i = 0; i < xt_numel(ca); i++) {
        double e = fabs((double)test_f32(ca)[i] - test_f32(cb)[i]);
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
    }
    xt_tensor_release(ca);
    xt_tensor_release(cb);
    return worst;
}

static bool test_error_has(const char *needle)
{
    if (strstr(xt_last_error(), needle)) return true;
    fprintf(stderr, "  expected an error containing \"%s\", got \"%s\"\n", needle, xt_last_error());
    return false;
}

/* ---- gradient check ---------------------------------------------------------------
 * The loss is sum(out * w) for a fixed random w; central differences in float32 with
 * eps 1e-3. f must compute the same function on every call. NULL inputs are skipped;
 * inputs must be contiguous float32 leaves. */

typedef xt_tensor *(*test_fn)(xt_tensor *const *in, const void *ctx);

static double test_weighted_sum(const xt_tensor *out, const xt_tensor *w)
{
    xt_tensor *c = xt_contiguous((xt_tensor *)out);
    double s = 0;
    const float *o = c->data, *pw = w->data;
    for (int64_t i = 0; i < xt_numel(c); i++) s += (double)o[i] * pw[i];
    xt_tensor_release(c);
    return s;
}

static bool test_gradcheck(const char *what, test_fn f, const void *ctx, int32_t n,
                           xt_tensor **in)
{
    const double eps = 1e-3, atol = 3e-3, rtol = 2e-2;
    for (int32_t k = 0; k < n; k++)
        if (in[k]) {
            xt_set_grad(in[k], NULL);
            xt_set_requires_grad(in[k], 1);
        }
    xt_tensor *out = f(in, ctx);
    if (!out) {
        fprintf(stderr, "gradcheck %s: forward failed: %s\n", what, xt_last_error());
        return false;
    }
    xt_tensor *w = xt_randn(&test_rng, out->ndim, out->shape);
    bool ok = xt_backward(out, w, 0) == XT_OK;
    if (!ok) fprintf(stderr, "gradcheck %s: backward failed: %s\n", what, xt_last_error());
    int32_t mode = xt_set_grad_enabled(0);
    for (int32_t k = 0; ok && k < n; k++) {
        if (!in[k]) continue;
        xt_tensor *g = in[k]->grad;
        if (!g || !xt_same_shape(g, in[k])) {
            fprintf(stderr, "gradcheck %s: input %d has no gradient of its shape\n", what, k);
            ok = false;
            break;
        }
        xt_tensor *gc = xt_contiguous(g);
        float *data = in[k]->data;
        int bad = 0;
        for (int64_t i = 0; i < xt_numel(in[k]); i++) {
            float v = data[i];
            data[i] = (float)(v + eps);
            xt_tensor *plus = f(in, ctx);
            data[i] = (float)(v - eps);
            xt_tensor *minus = f(in, ctx);
            data[i] = v;
            if (!plus || !minus) {
                fprintf(stderr, "gradcheck %s: forward failed: %s\n", what, xt_last_error());
                xt_tensor_release(plus);
                xt_tensor_release(minus);
                ok = false;
                break;
            }
            double num = (test_weighted_sum(plus, w) - test_weighted_sum(minus, w)) / (2 * eps);
            double ana = test_f32(gc)[i];
            xt_tensor_release(plus);
            xt_tensor_release(minus);
            if (!(fabs(num - ana) <= atol + rtol * fabs(num))) {
                if (bad++ < 5)
                    fprintf(stderr, "gradcheck %s: input %d element %lld: analytic %.6g, "
                                    "numeric %.6g\n", what, k, (long long)i, ana, num);
                ok = false;
            }
        }
        xt_tensor_release(gc);
    }
    xt_set_grad_enabled(mode);
    for (int32_t k = 0; k < n; k++)
        if (in[k]) {
            xt_set_grad(in[k], NULL);
            xt_set_requires_grad(in[k], 0);
        }
    xt_tensor_release(w);
    xt_tensor_release(out);
    return ok;
}

/* ---- PyTorch fixtures: tests/fixtures/<dir>/<name>.<part>.npy --------------------- */

static xt_tensor *test_fixture(const char *dir, const char *name, const char *part)
{
    char path[2048];
    snprintf(path, sizeof path, "%s/%s/%s.%s.npy", XT_FIXTURES_DIR, dir, name, part);
    xt_tensor *t = xt_load_npy(path);
    if (!t) fprintf(stderr, "fixture %s: %s\n", path, xt_last_error());
    return t;
}

/* got matches want (same numel) within tol; reports what differs. */
static bool test_close(const char *what, const xt_tensor *got, const xt_tensor *want, double tol)
{
    double d = test_max_diff(got, want);
    if (d <= tol) return true;
    fprintf(stderr, "%s: differs from the reference by %g (tolerance %g)\n", what, d, tol);
    return false;
}

#endif
