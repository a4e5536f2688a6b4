/*
 * test_elementwise.c: unary and binary ops, scalars, in-place ops, clamp, leaky_relu,
 * where and masked_fill: values against hand-computed results and PyTorch fixtures,
 * broadcasting, strided inputs, dtypes, every error path, the parallel paths, and a
 * finite-difference gradient check of every differentiable op.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "internal.h"

enum { SEED = 1234 };
static xt_rng rng = {SEED, 0};

/* ---- helpers ------------------------------------------------------------------- */

static xt_tensor *make(int32_t ndim, const int64_t *shape, const float *data)
{
    return xt_from_data(ndim, shape, XT_FLOAT32, data);
}

static xt_tensor *vec(int64_t n, const float *data) { return make(1, &n, data); }

static xt_tensor *mat(int64_t r, int64_t c, const float *data)
{
    int64_t shape[2] = {r, c};
    return make(2, shape, data);
}

static xt_tensor *ivec(int64_t n, const int64_t *data)
{
    return xt_from_data(1, &n, XT_INT64, data);
}

static xt_tensor *uvec(int64_t n, const uint8_t *data)
{
    return xt_from_data(1, &n, XT_UINT8, data);
}

/* Element i in C order over t's shape, any strides and dtype. */
static double at(const xt_tensor *t, int64_t i)
{
    int64_t index[XT_MAX_DIMS];
    for (int32_t d = t->ndim - 1; d >= 0; d--) {
        index[d] = i % t->shape[d];
        i /= t->shape[d];
    }
    return xt_get_as_double(t, index);
}

/* Offset in elements of element i (C order) of t. */
static int64_t offset_of(const xt_tensor *t, int64_t i)
{
    int64_t off = 0;
    for (int32_t d = t->ndim - 1; d >= 0; d--) {
        off += (i % t->shape[d]) * t->strides[d];
        i /= t->shape[d];
    }
    return off;
}

static bool values_are(const xt_tensor *t, int64_t n, const double *expect, double tol)
{
    if (!t || xt_numel(t) != n) return false;
    for (int64_t i = 0; i < n; i++) {
        double v = at(t, i), e = expect[i];
        if (isnan(e) ? !isnan(v) : fabs(v - e) > tol * (1 + fabs(e))) {
            fprintf(stderr, "  element %lld: got %.9g, expected %.9g\n", (long long)i, v, e);
            return false;
        }
    }
    return true;
}

static bool shape_is(const xt_tensor *t, int32_t ndim, const int64_t *shape)
{
    return t && t->ndim == ndim && memcmp(t->shape, shape, sizeof(int64_t) * (size_t)ndim) == 0;
}

static bool error_has(const char *text) { return strstr(xt_last_error(), text) != NULL; }

/* The transpose of a 2-D tensor as a strided view of the same storage. */
static xt_tensor *transposed(xt_tensor *t)
{
    int64_t shape[2] = {t->shape[1], t->shape[0]}, strides[2] = {t->strides[1], t->strides[0]};
    return xt_tensor_new_view(t->storage, t->dtype, 2, shape, strides, t->offset);
}

/* ---- finite-difference gradient check --------------------------------------------
 * f maps inputs to an output; the analytic gradients of L = sum(f(in) * w), w random,
 * must match central differences for every element of every input (any strides). */

typedef xt_tensor *(*test_fn)(xt_tensor *const *in, const void *ctx);

static double weighted_sum(const xt_tensor *out, const xt_tensor *w)
{
    double s = 0;
    for (int64_t i = 0; i < xt_numel(out); i++) s += at(out, i) * at(w, i);
    return s;
}

static bool gradcheck(const char *what, test_fn f, const void *ctx, int32_t n, xt_tensor **in)
{
    const double eps = 1e-3, atol = 2e-3, rtol = 1e-2;
    for (int32_t k = 0; k < n; k++) {
        xt_set_grad(in[k], NULL);
        xt_set_requires_grad(in[k], 1);
    }
    xt_tensor *out = f(in, ctx);
    if (!out) {
        fprintf(stderr, "gradcheck %s: forward failed: %s\n", what, xt_last_error());
        return false;
    }
    xt_tensor *w = xt_randn(&rng, out->ndim, out->shape);
    bool ok = xt_backward(out, w, 0) == XT_OK;
    if (!ok) fprintf(stderr, "gradcheck %s: backward failed: %s\n", what, xt_last_error());
    int32_t mode = xt_set_grad_enabled(0);
    for (int32_t k = 0; ok && k < n; k++) {
        xt_tensor *g = in[k]->grad;
        if (!g || !xt_same_shape(g, in[k])) {
            fprintf(stderr, "gradcheck %s: input %d has no gradient of its shape\n", what, k);
            ok = false;
            break;
        }
        float *data = in[k]->data;
        for (int64_t i = 0; i < xt_numel(in[k]); i++) {
            float *p = data + offset_of(in[k], i), v = *p;
            *p = (float)(v + eps);
            xt_tensor *plus = f(in, ctx);
            *p = (float)(v - eps);
            xt_tensor *minus = f(in, ctx);
            *p = v;
            double num = (weighted_sum(plus, w) - weighted_sum(minus, w)) / (2 * eps);
            double ana = at(g, i);
            xt_tensor_release(plus);
            xt_tensor_release(minus);
            if (fabs(num - ana) > atol + rtol * fabs(num)) {
                fprintf(stderr, "gradcheck %s: input %d element %lld: analytic %.6g, "
                        "numeric %.6g\n", what, k, (long long)i, ana, num);
                ok = false;
            }
        }
    }
    xt_set_grad_enabled(mode);
    for (int32_t k = 0; k < n; k++) {
        xt_set_grad(in[k], NULL);
        xt_set_requires_grad(in[k], 0);
    }
    xt_tensor_release(w);
    xt_tensor_release(out);
    return ok;
}

typedef struct op_ctx {
    int32_t op;
    double s;
    int32_t reversed;
    xt_tensor *mask;
} op_ctx;

static xt_tensor *f_unary(xt_tensor *const *in, const void *c)
{
    return xt_unary(((const op_ctx *)c)->op, in[0]);
}
static xt_tensor *f_binary(xt_tensor *const *in, const void *c)
{
    return xt_binary(((const op_ctx *)c)->op, in[0], in[1]);
}
static xt_tensor *f_scalar(xt_tensor *const *in, const void *c)
{
    const op_ctx *o = c;
    return xt_binary_scalar(o->op, in[0], o->s, o->reversed);
}
static xt_tensor *f_clamp(xt_tensor *const *in, const void *c)
{
    return xt_clamp(in[0], -0.5, 0.7);
}
static xt_tensor *f_leaky(xt_tensor *const *in, const void *c) { return xt_leaky_relu(in[0], 0.2); }
static xt_tensor *f_where(xt_tensor *const *in, const void *c)
{
    return xt_where(((const op_ctx *)c)->mask, in[0], in[1]);
}
static xt_tensor *f_masked_fill(xt_tensor *const *in, const void *c)
{
    return xt_masked_fill(in[0], ((const op_ctx *)c)->mask, -3.0);
}

/* ---- PyTorch fixtures (tests/fixtures/ops, float32 .npy) -------------------------- */

static xt_tensor *read_npy_f32(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char head[10];
    xt_tensor *t = NULL;
    if (fread(head, 1, 10, f) == 10 && memcmp(head, "\x93NUMPY", 6) == 0 && head[6] == 1) {
        size_t hlen = head[8] | (size_t)head[9] << 8;
        char header[1024] = {0};
        if (hlen < sizeof header && fread(header, 1, hlen, f) == hlen &&
            strstr(header, "'<f4'") && strstr(header, "False")) {
            int64_t shape[XT_MAX_DIMS];
            int32_t nd = 0;
            for (char *p = strchr(header, '(') + 1; *p && *p != ')' && nd < XT_MAX_DIMS;) {
                char *e;
                long long v = strtoll(p, &e, 10);
                if (e == p) break;
                shape[nd++] = v;
                p = e + (*e == ',');
                while (*p == ' ') p++;
            }
            t = xt_empty(nd, shape, XT_FLOAT32);
            if (t && fread(t->data, 4, (size_t)xt_numel(t), f) != (size_t)xt_numel(t)) {
                xt_tensor_release(t);
                t = NULL;
            }
        }
    }
    fclose(f);
    return t;
}

static xt_tensor *fixture(const char *name, const char *part)
{
    char dir[1024], path[1200];
    snprintf(dir, sizeof dir, "%s", __FILE__);
    char *slash = strstr(dir, "/c/test_elementwise.c");
    if (!slash) return NULL;
    *slash = 0;
    snprintf(path, sizeof path, "%s/fixtures/ops/%s.%s.npy", dir, name, part);
    return read_npy_f32(path);
}

static bool close_to(const xt_tensor *got, const xt_tensor *want, double tol)
{
    if (!got || !want || !xt_same_shape(got, want)) return false;
    for (int64_t i = 0; i < xt_numel(want); i++) {
        double g = at(got, i), w = at(want, i);
        if (fabs(g - w) > tol * (1 + fabs(w))) {
            fprintf(stderr, "  element %lld: got %.9g, PyTorch %.9g\n", (long long)i, g, w);
            return false;
        }
    }
    return true;
}

/* Forward and gradients of f on the fixture case `name` with n inputs match PyTorch. */
static void check_fixture(const char *name, test_fn f, const void *ctx, int32_t n)
{
    xt_tensor *in[4] = {0};
    char part[16];
    for (int32_t k = 0; k < n; k++) {
        snprintf(part, sizeof part, "in%d", k + 1);
        in[k] = fixture(name, part);
        CHECK(in[k] != NULL);
        if (!in[k]) return;
        xt_set_requires_grad(in[k], 1);
    }
    xt_tensor *want = fixture(name, "out"), *dout = fixture(name, "dout");
    xt_tensor *out = f(in, ctx);
    bool ok = close_to(out, want, 1e-5);
    if (!ok) fprintf(stderr, "fixture %s: forward differs\n", name);
    CHECK(ok);
    CHECK(out && xt_backward(out, dout, 0) == XT_OK);
    for (int32_t k = 0; k < n; k++) {
        snprintf(part, sizeof part, "grad%d", k + 1);
        xt_tensor *g = fixture(name, part);
        ok = close_to(in[k]->grad, g, 1e-5);
        if (!ok) fprintf(stderr, "fixture %s: gradient %d differs\n", name, k + 1);
        CHECK(ok);
        xt_tensor_release(g);
        xt_tensor_release(in[k]);
    }
    xt_tensor_release(out);
    xt_tensor_release(want);
    xt_tensor_release(dout);
}

/* ---- unary ------------------------------------------------------------------------ */

static double ref_unary(int32_t op, double x)
{
    switch (op) {
    case XT_NEG: return -x;
    case XT_ABS: return fabs(x);
    case XT_EXP: return exp(x);
    case XT_LOG: return log(x);
    case XT_SQRT: return sqrt(x);
    case XT_RSQRT: return 1 / sqrt(x);
    case XT_TANH: return tanh(x);
    case XT_SIGMOID: return 1 / (1 + exp(-x));
    case XT_RELU: return x > 0 ? x : 0;
    case XT_GELU: return 0.5 * x * (1 + erf(x / sqrt(2)));
    case XT_SILU: return x / (1 + exp(-x));
    case XT_SIN: return sin(x);
    case XT_COS: return cos(x);
    case XT_ELU: return x > 0 ? x : expm1(x);
    case XT_LOG1P: return log1p(x);
    case XT_EXPM1: return expm1(x);
    case XT_SIGN: return x > 0 ? 1 : x < 0 ? -1 : 0;
    case XT_FLOOR: return floor(x);
    case XT_CEIL: return ceil(x);
    case XT_ROUND: return nearbyint(x);
    case XT_SQUARE: return x * x;
    default: return 1 / x;
    }
}

static bool needs_positive(int32_t op)
{
    return op == XT_LOG || op == XT_SQRT || op == XT_RSQRT || op == XT_LOG1P;
}

static void test_unary_values(void)
{
    const float xs[8] = {-2.5f, -1.25f, -0.5f, 0.0f, 0.3f, 0.5f, 1.5f, 2.5f};
    const float pos[8] = {0.1f, 0.25f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 7.0f};
    for (int32_t op = 0; op < XT_UNARY_OP_COUNT; op++) {
        const float *src = needs_positive(op) ? pos : xs;
        xt_tensor *x = vec(8, src);
        xt_tensor *y = xt_unary(op, x);
        double expect[8];
        for (int i = 0; i < 8; i++) expect[i] = ref_unary(op, src[i]);
        bool ok = y && y->dtype == XT_FLOAT32 && values_are(y, 8, expect, 2e-6);
        if (!ok) fprintf(stderr, "unary op %d values differ\n", op);
        CHECK(ok);
        xt_tensor_release(y);
        xt_tensor_release(x);
    }
    /* hand-computed specials */
    const float r[6] = {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.7f};
    xt_tensor *x = vec(6, r), *y = xt_unary(XT_ROUND, x);
    CHECK(values_are(y, 6, (double[]){0, 2, 2, -0.0, -2, -3}, 0));  /* half to even */
    xt_tensor_release(y);
    y = xt_unary(XT_FLOOR, x);
    CHECK(values_are(y, 6, (double[]){0, 1, 2, -1, -2, -3}, 0));
    xt_tensor_release(y);
    y = xt_unary(XT_CEIL, x);
    CHECK(values_are(y, 6, (double[]){1, 2, 3, -0.0, -1, -2}, 0));
    xt_tensor_release(y);
    y = xt_unary(XT_RELU, x);
    CHECK(values_are(y, 6, (double[]){0.5, 1.5, 2.5, 0, 0, 0}, 0));
    xt_tensor_release(y);
    y = xt_unary(XT_SIGN, x);
    CHECK(values_are(y, 6, (double[]){1, 1, 1, -1, -1, -1}, 0));
    xt_tensor_release(y);
    xt_tensor_release(x);
    const float g[3] = {1.0f, -1.0f, 0.0f};
    x = vec(3, g);
    y = xt_unary(XT_GELU, x);  /* exact erf form: 0.841344746, -0.158655254 */
    CHECK(values_are(y, 3, (double[]){0.841344746, -0.158655254, 0}, 1e-6));
    xt_tensor_release(y);
    y = xt_unary(XT_ELU, x);
    CHECK(values_are(y, 3, (double[]){1, -0.632120559, 0}, 1e-6));
    xt_tensor_release(y);
    xt_tensor_release(x);
    const float nan_in[1] = {NAN};
    x = vec(1, nan_in);
    y = xt_unary(XT_RELU, x);
    CHECK(y && isnan(at(y, 0)));
    xt_tensor_release(y);
    xt_tensor_release(x);
}

/* Every float op over 200k points (the vectorised, parallel path) against double libm. */
static void test_unary_accuracy(void)
{
    int64_t n = 200000;
    xt_tensor *x = xt_linspace(-10, 10, n, XT_FLOAT32), *p = xt_linspace(0.001, 50, n, XT_FLOAT32);
    for (int32_t op = 0; op < XT_UNARY_OP_COUNT; op++) {
        xt_tensor *in = needs_positive(op) ? p : x, *y = xt_unary(op, in);
        double worst = 0;
        int64_t where = 0;
        for (int64_t i = 0; y && i < n; i++) {
            double xi = ((float *)in->data)[i], r = ref_unary(op, xi), v = ((float *)y->data)[i];
            if (op == XT_RECIPROCAL && xi == 0) continue;
            double err = fabs(v - r) / (3e-7 * fabs(r) + 1e-7);
            if (isnan(err) || err > worst) {
                worst = isnan(err) ? INFINITY : err;
                where = i;
            }
        }
        if (!y || worst > 1) fprintf(stderr, "unary op %d: error %.3g of tolerance at x=%.9g\n",
                                     op, worst, ((float *)in->data)[where]);
        CHECK(y && worst <= 1);
        xt_tensor_release(y);
    }
    /* GELU's derivative Phi(x) + x phi(x), on the same vectorised erfc and exp */
    xt_set_requires_grad(x, 1);
    xt_tensor *y = xt_unary(XT_GELU, x), *ones = xt_full(1, &n, XT_FLOAT32, 1);
    CHECK(y && xt_backward(y, ones, 0) == XT_OK && x->grad);
    double worst = 0;
    for (int64_t i = 0; x->grad && i < n; i++) {
        double xi = ((float *)x->data)[i];
        double r = 0.5 * erfc(-xi / sqrt(2)) + xi * exp(-0.5 * xi * xi) / sqrt(2 * M_PI);
        double err = fabs(((float *)x->grad->data)[i] - r) / (1e-6 * fabs(r) + 1e-7);
        if (!(err <= worst)) worst = isnan(err) ? INFINITY : err;
    }
    if (worst > 1) fprintf(stderr, "gelu backward: error %.3g of tolerance\n", worst);
    CHECK(worst <= 1);
    xt_tensor_release(y);
    xt_tensor_release(ones);
    xt_tensor_release(x);
    xt_tensor_release(p);
}

static void test_unary_dtypes(void)
{
    const int64_t iv[4] = {-3, 0, 2, 5};
    xt_tensor *x = ivec(4, iv);
    xt_tensor *y = xt_unary(XT_NEG, x);
    CHECK(y && y->dtype == XT_INT64 && values_are(y, 4, (double[]){3, 0, -2, -5}, 0));
    xt_tensor_release(y);
    y = xt_unary(XT_ABS, x);
    CHECK(y && y->dtype == XT_INT64 && values_are(y, 4, (double[]){3, 0, 2, 5}, 0));
    xt_tensor_release(y);
    y = xt_unary(XT_SIGN, x);
    CHECK(y && y->dtype == XT_INT64 && values_are(y, 4, (double[]){-1, 0, 1, 1}, 0));
    xt_tensor_release(y);
    y = xt_unary(XT_SQUARE, x);
    CHECK(y && y->dtype == XT_INT64 && values_are(y, 4, (double[]){9, 0, 4, 25}, 0));
    xt_tensor_release(y);
    y = xt_unary(XT_RELU, x);
    CHECK(y && y->dtype == XT_INT64 && values_are(y, 4, (double[]){0, 0, 2, 5}, 0));
    xt_tensor_release(y);
    y = xt_unary(XT_FLOOR, x);
    CHECK(y && y->dtype == XT_INT64 && values_are(y, 4, (double[]){-3, 0, 2, 5}, 0));
    xt_tensor_release(y);
    y = xt_unary(XT_EXP, x);  /* math ops compute in float32 */
    CHECK(y && y->dtype == XT_FLOAT32 &&
          values_are(y, 4, (double[]){exp(-3), 1, exp(2), exp(5)}, 1e-6));
    xt_tensor_release(y);
    xt_tensor_release(x);
    const uint8_t uv[3] = {0, 4, 255};
    x = uvec(3, uv);
    y = xt_unary(XT_SQRT, x);
    CHECK(y && y->dtype == XT_FLOAT32 && values_are(y, 3, (double[]){0, 2, sqrt(255)}, 1e-6));
    xt_tensor_release(y);
    y = xt_unary(XT_NEG, x);  /* uint8 is promoted to int64, no wrap-around */
    CHECK(y && y->dtype == XT_INT64 && values_are(y, 3, (double[]){0, -4, -255}, 0));
    xt_tensor_release(y);
    xt_tensor_release(x);
}

static void test_unary_strided(void)
{
    const float d[6] = {1, 2, 3, 4, 5, 6};
    xt_tensor *m = mat(2, 3, d), *t = transposed(m);
    xt_tensor *y = xt_unary(XT_SQUARE, t);
    int64_t shape[2] = {3, 2};
    CHECK(shape_is(y, 2, shape) && xt_is_contiguous(y));
    CHECK(values_are(y, 6, (double[]){1, 16, 4, 25, 9, 36}, 0));
    xt_tensor_release(y);
    xt_tensor_release(t);
    xt_tensor_release(m);
}

/* ---- binary -------------------------------------------------------------------------- */

static void test_binary_broadcast(void)
{
    const float ad[6] = {1, 2, 3, 4, 5, 6}, bd[3] = {10, 20, 30};
    xt_tensor *a = mat(2, 3, ad), *b = vec(3, bd);
    int64_t s23[2] = {2, 3};
    xt_tensor *y = xt_binary(XT_ADD, a, b);
    CHECK(shape_is(y, 2, s23) && values_are(y, 6, (double[]){11, 22, 33, 14, 25, 36}, 0));
    xt_tensor_release(y);
    y = xt_binary(XT_SUB, b, a);
    CHECK(shape_is(y, 2, s23) && values_are(y, 6, (double[]){9, 18, 27, 6, 15, 24}, 0));
    xt_tensor_release(y);
    y = xt_binary(XT_DIV, a, b);
    CHECK(values_are(y, 6, (double[]){0.1, 0.1, 0.1, 0.4, 0.25, 0.2}, 1e-7));
    xt_tensor_release(y);
    xt_tensor_release(a);
    xt_tensor_release(b);

    const float cd[2] = {1, 2}, rd[3] = {3, 4, 5};
    xt_tensor *c = mat(2, 1, cd), *r = mat(1, 3, rd);
    y = xt_binary(XT_MUL, c, r);
    CHECK(shape_is(y, 2, s23) && values_are(y, 6, (double[]){3, 4, 5, 6, 8, 10}, 0));
    xt_tensor_release(y);
    y = xt_binary(XT_POW, r, c);
    CHECK(shape_is(y, 2, s23) && values_are(y, 6, (double[]){3, 4, 5, 9, 16, 25}, 1e-7));
    xt_tensor_release(y);
    y = xt_binary(XT_MAXIMUM, c, r);
    CHECK(values_are(y, 6, (double[]){3, 4, 5, 3, 4, 5}, 0));
    xt_tensor_release(y);
    y = xt_binary(XT_MINIMUM, c, r);
    CHECK(values_are(y, 6, (double[]){1, 1, 1, 2, 2, 2}, 0));
    xt_tensor_release(y);
    y = xt_binary(XT_LT, c, r);
    CHECK(y && y->dtype == XT_UINT8 && values_are(y, 6, (double[]){1, 1, 1, 1, 1, 1}, 0));
    xt_tensor_release(y);
    y = xt_binary(XT_GE, r, c);
    CHECK(y && y->dtype == XT_UINT8 && values_are(y, 6, (double[]){1, 1, 1, 1, 1, 1}, 0));
    xt_tensor_release(y);
    xt_tensor_release(c);
    xt_tensor_release(r);

    /* 0-d with anything, and comparisons one by one */
    const float pd[4] = {1, 2, 3, NAN}, qd[4] = {2, 2, 2, 2};
    xt_tensor *p = vec(4, pd), *q = vec(4, qd);
    double expect[6][4] = {{0, 1, 0, 0}, {1, 0, 1, 1}, {1, 0, 0, 0},
                           {1, 1, 0, 0}, {0, 0, 1, 0}, {0, 1, 1, 0}};
    for (int32_t op = XT_EQ; op <= XT_GE; op++) {
        y = xt_binary(op, p, q);
        CHECK(y && y->dtype == XT_UINT8 && values_are(y, 4, expect[op - XT_EQ], 0));
        xt_tensor_release(y);
    }
    y = xt_binary(XT_MAXIMUM, p, q);  /* NaN propagates */
    CHECK(y && at(y, 2) == 3 && isnan(at(y, 3)));
    xt_tensor_release(y);
    y = xt_binary(XT_MINIMUM, q, p);
    CHECK(y && at(y, 0) == 1 && isnan(at(y, 3)));
    xt_tensor_release(y);
    xt_tensor_release(p);
    xt_tensor_release(q);
}

static void test_binary_strided(void)
{
    /* aT [3,2] (strides 1,3) + b [3,2] contiguous, and aT + row [2] */
    const float ad[6] = {1, 2, 3, 4, 5, 6}, bd[6] = {10, 20, 30, 40, 50, 60}, rd[2] = {100, 200};
    xt_tensor *a = mat(2, 3, ad), *at_ = transposed(a), *b = mat(3, 2, bd), *r = vec(2, rd);
    xt_tensor *y = xt_binary(XT_ADD, at_, b);
    CHECK(values_are(y, 6, (double[]){11, 24, 32, 45, 53, 66}, 0));
    xt_tensor_release(y);
    y = xt_binary(XT_MUL, at_, r);
    CHECK(values_are(y, 6, (double[]){100, 800, 200, 1000, 300, 1200}, 0));
    xt_tensor_release(y);
    y = xt_binary(XT_SUB, at_, at_);
    CHECK(values_are(y, 6, (double[]){0, 0, 0, 0, 0, 0}, 0));
    xt_tensor_release(y);
    xt_tensor *bt = transposed(b);  /* [2,3] */
    y = xt_binary(XT_GT, a, bt);
    CHECK(y && y->dtype == XT_UINT8 && values_are(y, 6, (double[]){0, 0, 0, 0, 0, 0}, 0));
    xt_tensor_release(y);
    xt_tensor_release(bt);
    xt_tensor_release(at_);
    xt_tensor_release(a);
    xt_tensor_release(b);
    xt_tensor_release(r);
}

static void test_binary_dtypes(void)
{
    const int64_t ia[3] = {7, -7, 2}, ib[3] = {2, 2, 10};
    xt_tensor *a = ivec(3, ia), *b = ivec(3, ib);
    xt_tensor *y = xt_binary(XT_ADD, a, b);
    CHECK(y && y->dtype == XT_INT64 && values_are(y, 3, (double[]){9, -5, 12}, 0));
    xt_tensor_release(y);
    y = xt_binary(XT_MUL, a, b);
    CHECK(y && y->dtype == XT_INT64 && values_are(y, 3, (double[]){14, -14, 20}, 0));
    xt_tensor_release(y);
    y = xt_binary(XT_DIV, a, b);  /* true division */
    CHECK(y && y->dtype == XT_FLOAT32 && values_are(y, 3, (double[]){3.5, -3.5, 0.2}, 1e-7));
    xt_tensor_release(y);
    y = xt_binary(XT_POW, a, b);
    CHECK(y && y->dtype == XT_INT64 && values_are(y, 3, (double[]){49, 49, 1024}, 0));
    xt_tensor_release(y);
    y = xt_binary(XT_MAXIMUM, a, b);
    CHECK(y && y->dtype == XT_INT64 && values_are(y, 3, (double[]){7, 2, 10}, 0));
    xt_tensor_release(y);
    y = xt_binary(XT_EQ, a, b);
    CHECK(y && y->dtype == XT_UINT8 && values_are(y, 3, (double[]){0, 0, 0}, 0));
    xt_tensor_release(y);

    const float fd[3] = {0.5f, 0.5f, 0.5f};
    xt_tensor *f = vec(3, fd);
    y = xt_binary(XT_ADD, a, f);  /* float32 with anything -> float32 */
    CHECK(y && y->dtype == XT_FLOAT32 && values_are(y, 3, (double[]){7.5, -6.5, 2.5}, 0));
    xt_tensor_release(y);
    const uint8_t ua[3] = {200, 100, 3}, ub[3] = {100, 200, 4};
    xt_tensor *u = uvec(3, ua), *v = uvec(3, ub);
    y = xt_binary(XT_ADD, u, v);  /* uint8 promoted to int64: no wrap-around */
    CHECK(y && y->dtype == XT_INT64 && values_are(y, 3, (double[]){300, 300, 7}, 0));
    xt_tensor_release(y);
    y = xt_binary(XT_SUB, u, a);
    CHECK(y && y->dtype == XT_INT64 && values_are(y, 3, (double[]){193, 107, 1}, 0));
    xt_tensor_release(y);
    y = xt_binary(XT_MUL, u, f);
    CHECK(y && y->dtype == XT_FLOAT32 && values_are(y, 3, (double[]){100, 50, 1.5}, 0));
    xt_tensor_release(y);
    y = xt_binary(XT_GT, u, v);
    CHECK(y && y->dtype == XT_UINT8 && values_are(y, 3, (double[]){1, 0, 0}, 0));
    xt_tensor_release(y);
    xt_tensor_release(u);
    xt_tensor_release(v);
    xt_tensor_release(f);
    xt_tensor_release(a);
    xt_tensor_release(b);
}

static void test_scalar(void)
{
    const float xd[3] = {1, 2, 4};
    xt_tensor *x = vec(3, xd);
    xt_tensor *y = xt_binary_scalar(XT_SUB, x, 2, 0);
    CHECK(values_are(y, 3, (double[]){-1, 0, 2}, 0));
    xt_tensor_release(y);
    y = xt_binary_scalar(XT_SUB, x, 2, 1);
    CHECK(values_are(y, 3, (double[]){1, 0, -2}, 0));
    xt_tensor_release(y);
    y = xt_binary_scalar(XT_DIV, x, 2, 1);
    CHECK(values_are(y, 3, (double[]){2, 1, 0.5}, 0));
    xt_tensor_release(y);
    y = xt_binary_scalar(XT_POW, x, 2, 1);
    CHECK(values_are(y, 3, (double[]){2, 4, 16}, 1e-7));
    xt_tensor_release(y);
    y = xt_binary_scalar(XT_POW, x, 2, 0);
    CHECK(values_are(y, 3, (double[]){1, 4, 16}, 0));
    xt_tensor_release(y);
    y = xt_binary_scalar(XT_POW, x, 0.5, 0);
    CHECK(values_are(y, 3, (double[]){1, sqrt(2), 2}, 1e-7));
    xt_tensor_release(y);
    y = xt_binary_scalar(XT_MAXIMUM, x, 1.5, 0);
    CHECK(values_are(y, 3, (double[]){1.5, 2, 4}, 0));
    xt_tensor_release(y);
    y = xt_binary_scalar(XT_LE, x, 2, 0);
    CHECK(y && y->dtype == XT_UINT8 && values_are(y, 3, (double[]){1, 1, 0}, 0));
    xt_tensor_release(y);
    y = xt_binary_scalar(XT_LE, x, 2, 1);  /* 2 <= x */
    CHECK(y && y->dtype == XT_UINT8 && values_are(y, 3, (double[]){0, 1, 1}, 0));
    xt_tensor_release(y);
    xt_tensor_release(x);

    const int64_t id[3] = {1, 2, 4};
    xt_tensor *i = ivec(3, id);
    y = xt_binary_scalar(XT_ADD, i, 3, 0);
    CHECK(y && y->dtype == XT_INT64 && values_are(y, 3, (double[]){4, 5, 7}, 0));
    xt_tensor_release(y);
    y = xt_binary_scalar(XT_MUL, i, -2, 1);
    CHECK(y && y->dtype == XT_INT64 && values_are(y, 3, (double[]){-2, -4, -8}, 0));
    xt_tensor_release(y);
    y = xt_binary_scalar(XT_SUB, i, 10, 1);
    CHECK(y && y->dtype == XT_INT64 && values_are(y, 3, (double[]){9, 8, 6}, 0));
    xt_tensor_release(y);
    y = xt_binary_scalar(XT_ADD, i, 0.5, 0);
    CHECK(y && y->dtype == XT_FLOAT32 && values_are(y, 3, (double[]){1.5, 2.5, 4.5}, 0));
    xt_tensor_release(y);
    y = xt_binary_scalar(XT_DIV, i, 2, 0);
    CHECK(y && y->dtype == XT_FLOAT32 && values_are(y, 3, (double[]){0.5, 1, 2}, 0));
    xt_tensor_release(y);
    y = xt_binary_scalar(XT_LT, i, 2.5, 0);
    CHECK(y && y->dtype == XT_UINT8 && values_are(y, 3, (double[]){1, 1, 0}, 0));
    xt_tensor_release(y);
    y = xt_binary_scalar(XT_EQ, i, 2, 0);
    CHECK(y && y->dtype == XT_UINT8 && values_are(y, 3, (double[]){0, 1, 0}, 0));
    xt_tensor_release(y);
    xt_tensor_release(i);
}

/* ---- in place -------------------------------------------------------------------------- */

static void test_inplace(void)
{
    const float ad[6] = {1, 2, 3, 4, 5, 6}, rd[3] = {10, 20, 30};
    xt_tensor *a = mat(2, 3, ad), *r = vec(3, rd);
    void *data = a->data;
    uint32_t v0 = xt_tensor_version(a);
    CHECK(xt_binary_(XT_ADD, a, r) == XT_OK);
    CHECK(a->data == data && xt_tensor_version(a) == v0 + 1);
    CHECK(values_are(a, 6, (double[]){11, 22, 33, 14, 25, 36}, 0));
    CHECK(xt_binary_scalar_(XT_MUL, a, 0.5) == XT_OK && xt_tensor_version(a) == v0 + 2);
    CHECK(values_are(a, 6, (double[]){5.5, 11, 16.5, 7, 12.5, 18}, 0));
    CHECK(xt_binary_(XT_SUB, a, a) == XT_OK);  /* identical view: fine */
    CHECK(values_are(a, 6, (double[]){0, 0, 0, 0, 0, 0}, 0));
    /* b would make a grow */
    CHECK(xt_binary_(XT_ADD, r, a) != XT_OK);
    CHECK(error_has("add_:") && error_has("[2,3]"));

    /* into a transposed view; int64 operand converted */
    xt_tensor *base = mat(2, 3, ad), *t = transposed(base);  /* t [3,2] */
    const int64_t idd[2] = {100, 200};
    xt_tensor *iv = ivec(2, idd);
    CHECK(xt_binary_(XT_ADD, t, iv) == XT_OK);
    CHECK(values_are(base, 6, (double[]){101, 102, 103, 204, 205, 206}, 0));
    /* overlapping operand: base[0,:] -= base[1,:] via a shifted view of the same storage */
    int64_t row_shape[1] = {3}, row_stride[1] = {1};
    xt_tensor *row0 = xt_tensor_new_view(base->storage, XT_FLOAT32, 1, row_shape, row_stride, 0);
    xt_tensor *row1 = xt_tensor_new_view(base->storage, XT_FLOAT32, 1, row_shape, row_stride, 3);
    CHECK(xt_binary_(XT_SUB, row0, row1) == XT_OK);
    CHECK(values_are(base, 6, (double[]){-103, -103, -103, 204, 205, 206}, 0));
    /* overlapping and shifted by one: x[0:5] += x[1:6], must read the old values */
    const float sd[6] = {1, 2, 3, 4, 5, 6};
    xt_tensor *s = vec(6, sd);
    int64_t five[1] = {5};
    xt_tensor *lo = xt_tensor_new_view(s->storage, XT_FLOAT32, 1, five, row_stride, 0);
    xt_tensor *hi = xt_tensor_new_view(s->storage, XT_FLOAT32, 1, five, row_stride, 1);
    CHECK(xt_binary_(XT_ADD, lo, hi) == XT_OK);
    CHECK(values_are(s, 6, (double[]){3, 5, 7, 9, 11, 6}, 0));
    xt_tensor_release(lo);
    xt_tensor_release(hi);
    xt_tensor_release(s);
    xt_tensor_release(row0);
    xt_tensor_release(row1);

    /* int64 in place; float results refused */
    const int64_t id[3] = {1, 2, 3};
    xt_tensor *i = ivec(3, id);
    CHECK(xt_binary_scalar_(XT_ADD, i, 5) == XT_OK && values_are(i, 3, (double[]){6, 7, 8}, 0));
    CHECK(xt_binary_(XT_MUL, i, i) == XT_OK && values_are(i, 3, (double[]){36, 49, 64}, 0));
    CHECK(xt_binary_scalar_(XT_ADD, i, 0.5) == XT_ERR_DTYPE && error_has("add_:"));
    CHECK(xt_binary_scalar_(XT_DIV, i, 2) == XT_ERR_DTYPE && error_has("div_:"));
    CHECK(xt_binary_(XT_ADD, i, r) == XT_ERR_DTYPE);
    /* uint8 in place wraps modulo 256; comparisons write 0/1 */
    const uint8_t ud[3] = {250, 10, 0};
    xt_tensor *u = uvec(3, ud);
    CHECK(xt_binary_scalar_(XT_ADD, u, 10) == XT_OK && values_are(u, 3, (double[]){4, 20, 10}, 0));
    const float cd[3] = {1, 5, 3};
    xt_tensor *c = vec(3, cd);
    CHECK(xt_binary_scalar_(XT_GT, c, 2) == XT_OK && values_are(c, 3, (double[]){0, 1, 1}, 0));

    /* a leaf that requires grad is refused while grad mode is on */
    xt_tensor *w = vec(3, cd);
    xt_set_requires_grad(w, 1);
    CHECK(xt_binary_scalar_(XT_ADD, w, 1) == XT_ERR_STATE && error_has("add_:"));
    CHECK(xt_binary_(XT_MUL, w, c) == XT_ERR_STATE && error_has("mul_:"));
    int32_t mode = xt_set_grad_enabled(0);
    CHECK(xt_binary_scalar_(XT_ADD, w, 1) == XT_OK && values_are(w, 3, (double[]){2, 6, 4}, 0));
    xt_set_grad_enabled(mode);
    /* an in-place write to a saved tensor makes its backward fail */
    xt_tensor *sq = xt_binary(XT_MUL, w, w);
    xt_tensor *x2 = xt_detach(w);
    mode = xt_set_grad_enabled(0);
    CHECK(xt_binary_scalar_(XT_ADD, x2, 1) == XT_OK);
    xt_set_grad_enabled(mode);
    xt_tensor *ones = xt_full(1, row_shape, XT_FLOAT32, 1);
    CHECK(xt_backward(sq, ones, 0) != XT_OK && error_has("modified in place"));
    xt_tensor_release(ones);
    /* writing into an expanded view is refused */
    int64_t ex_shape[2] = {2, 3}, ex_strides[2] = {0, 1};
    xt_tensor *ex = xt_tensor_new_view(r->storage, XT_FLOAT32, 2, ex_shape, ex_strides, 0);
    CHECK(xt_binary_scalar_(XT_ADD, ex, 1) == XT_ERR_ARG && error_has("add_:") &&
          error_has("expanded"));
    xt_tensor_release(ex);
    xt_tensor_release(x2);
    xt_tensor_release(sq);
    xt_tensor_release(w);
    xt_tensor_release(c);
    xt_tensor_release(u);
    xt_tensor_release(i);
    xt_tensor_release(iv);
    xt_tensor_release(t);
    xt_tensor_release(base);
    xt_tensor_release(a);
    xt_tensor_release(r);
}

/* ---- clamp, leaky_relu, where, masked_fill ------------------------------------------ */

static void test_clamp_leaky(void)
{
    const float xd[5] = {-2, -0.5f, 0, 0.7f, 3};
    xt_tensor *x = vec(5, xd);
    xt_tensor *y = xt_clamp(x, -1, 1);
    CHECK(values_are(y, 5, (double[]){-1, -0.5, 0, 0.7f, 1}, 0));
    xt_tensor_release(y);
    y = xt_clamp(x, -INFINITY, 0.5);
    CHECK(values_are(y, 5, (double[]){-2, -0.5, 0, 0.5, 0.5}, 0));
    xt_tensor_release(y);
    y = xt_clamp(x, 0, INFINITY);
    CHECK(values_are(y, 5, (double[]){0, 0, 0, 0.7f, 3}, 0));
    xt_tensor_release(y);
    y = xt_clamp(x, 1, -1);  /* low > high: high wins, as PyTorch */
    CHECK(values_are(y, 5, (double[]){-1, -1, -1, -1, -1}, 0));
    xt_tensor_release(y);
    CHECK(xt_clamp(x, NAN, 1) == NULL && error_has("clamp:"));
    CHECK(xt_clamp(NULL, 0, 1) == NULL && error_has("clamp: input is NULL"));
    y = xt_leaky_relu(x, 0.1);
    CHECK(values_are(y, 5, (double[]){-0.2, -0.05, 0, 0.7f, 3}, 1e-7));
    xt_tensor_release(y);
    CHECK(xt_leaky_relu(NULL, 0.1) == NULL && error_has("leaky_relu:"));
    const int64_t id[4] = {-5, 0, 3, 9};
    xt_tensor *i = ivec(4, id);
    y = xt_clamp(i, -1.5, 4.5);
    CHECK(y && y->dtype == XT_INT64 && values_are(y, 4, (double[]){-1, 0, 3, 4}, 0));
    xt_tensor_release(y);
    xt_tensor_release(i);
    xt_tensor_release(x);
}

static void test_where_masked_fill(void)
{
    const float ad[6] = {1, 2, 3, 4, 5, 6}, bd[3] = {-1, -2, -3};
    const uint8_t cd[2] = {1, 0};
    xt_tensor *a = mat(2, 3, ad), *b = vec(3, bd);
    int64_t cshape[2] = {2, 1};
    xt_tensor *cond = xt_from_data(2, cshape, XT_UINT8, cd);
    xt_tensor *y = xt_where(cond, a, b);
    int64_t s23[2] = {2, 3};
    CHECK(shape_is(y, 2, s23) && values_are(y, 6, (double[]){1, 2, 3, -1, -2, -3}, 0));
    xt_tensor_release(y);
    /* non-contiguous a */
    xt_tensor *at_ = transposed(a);  /* [3,2] */
    const uint8_t c2[2] = {0, 1};
    xt_tensor *cond2 = uvec(2, c2);
    y = xt_where(cond2, at_, b);  /* b [3] vs [3,2]: cannot broadcast */
    CHECK(y == NULL && error_has("where: shapes"));
    int64_t bshape[2] = {3, 1};
    xt_tensor *bcol = make(2, bshape, bd);
    y = xt_where(cond2, at_, bcol);
    CHECK(values_are(y, 6, (double[]){-1, 4, -2, 5, -3, 6}, 0));
    xt_tensor_release(y);
    /* dtypes: int64 with int64 stays int64, int64 with float32 -> float32 */
    const int64_t id[3] = {7, 8, 9};
    xt_tensor *iv = ivec(3, id);
    y = xt_where(cond, iv, iv);
    CHECK(y && y->dtype == XT_INT64 && values_are(y, 6, (double[]){7, 8, 9, 7, 8, 9}, 0));
    xt_tensor_release(y);
    y = xt_where(cond, iv, b);
    CHECK(y && y->dtype == XT_FLOAT32 && values_are(y, 6, (double[]){7, 8, 9, -1, -2, -3}, 0));
    xt_tensor_release(y);
    const uint8_t u1[3] = {1, 2, 3}, u2[3] = {9, 9, 9};
    xt_tensor *ua = uvec(3, u1), *ub = uvec(3, u2);
    y = xt_where(cond, ua, ub);
    CHECK(y && y->dtype == XT_UINT8 && values_are(y, 6, (double[]){1, 2, 3, 9, 9, 9}, 0));
    xt_tensor_release(y);
    /* errors */
    CHECK(xt_where(a, a, b) == NULL && error_has("where: condition must be uint8, got float32"));
    CHECK(xt_where(NULL, a, b) == NULL && error_has("where: condition is NULL"));
    CHECK(xt_where(cond, a, NULL) == NULL && error_has("where:"));

    /* masked_fill: mask [3] broadcasts over rows */
    const uint8_t md[3] = {0, 1, 0};
    xt_tensor *mask = uvec(3, md);
    y = xt_masked_fill(a, mask, -9);
    CHECK(shape_is(y, 2, s23) && values_are(y, 6, (double[]){1, -9, 3, 4, -9, 6}, 0));
    xt_tensor_release(y);
    y = xt_masked_fill(iv, mask, 42);
    CHECK(y && y->dtype == XT_INT64 && values_are(y, 3, (double[]){7, 42, 9}, 0));
    xt_tensor_release(y);
    y = xt_masked_fill(at_, cond2, 0);
    CHECK(values_are(y, 6, (double[]){1, 0, 2, 0, 3, 0}, 0));
    xt_tensor_release(y);
    CHECK(xt_masked_fill(b, cond, 0) == NULL && error_has("masked_fill: mask of shape [2,1]"));
    CHECK(xt_masked_fill(a, a, 0) == NULL && error_has("masked_fill: mask must be uint8"));
    CHECK(xt_masked_fill(ua, mask, 300) == NULL && error_has("masked_fill: value"));
    CHECK(xt_masked_fill(NULL, mask, 0) == NULL && error_has("masked_fill:"));
    xt_tensor_release(ua);
    xt_tensor_release(ub);
    xt_tensor_release(mask);
    xt_tensor_release(iv);
    xt_tensor_release(bcol);
    xt_tensor_release(cond2);
    xt_tensor_release(at_);
    xt_tensor_release(cond);
    xt_tensor_release(a);
    xt_tensor_release(b);
}

/* ---- errors --------------------------------------------------------------------------- */

static void test_empty(void)
{
    int64_t s03[2] = {0, 3}, s3[1] = {3};
    xt_tensor *e = xt_zeros(2, s03, XT_FLOAT32), *r = xt_full(1, s3, XT_FLOAT32, 1);
    xt_tensor *y = xt_binary(XT_ADD, e, r);
    CHECK(shape_is(y, 2, s03));
    xt_tensor_release(y);
    y = xt_unary(XT_EXP, e);
    CHECK(shape_is(y, 2, s03));
    xt_tensor_release(y);
    CHECK(xt_binary_(XT_MUL, e, r) == XT_OK);
    xt_tensor_release(e);
    xt_tensor_release(r);
}

static void test_errors(void)
{
    int64_t s23[2] = {2, 3}, s4[1] = {4};
    xt_tensor *a = xt_zeros(2, s23, XT_FLOAT32), *b = xt_zeros(1, s4, XT_FLOAT32);
    CHECK(xt_binary(XT_ADD, a, b) == NULL && xt_last_status() == XT_ERR_SHAPE);
    CHECK(error_has("add: shapes [2,3] and [4] cannot broadcast"));
    CHECK(xt_binary(XT_GE, a, b) == NULL && error_has("ge: shapes [2,3] and [4]"));
    CHECK(xt_binary(XT_MAXIMUM, b, a) == NULL && error_has("maximum: shapes [4] and [2,3]"));
    CHECK(xt_binary_(XT_POW, a, b) != XT_OK && error_has("pow_: shapes [2,3] and [4]"));
    CHECK(xt_binary(XT_MUL, NULL, b) == NULL && error_has("mul: first input is NULL"));
    CHECK(xt_binary(XT_MUL, a, NULL) == NULL && error_has("mul: second input is NULL"));
    CHECK(xt_binary(99, a, b) == NULL && error_has("unknown binary op 99"));
    CHECK(xt_binary(-1, a, b) == NULL && error_has("unknown binary op -1"));
    CHECK(xt_binary_scalar(XT_BINARY_OP_COUNT, a, 1, 0) == NULL && error_has("unknown"));
    CHECK(xt_binary_scalar(XT_DIV, NULL, 1, 0) == NULL && error_has("div: input is NULL"));
    CHECK(xt_binary_(XT_ADD, NULL, a) != XT_OK && error_has("add_: first input is NULL"));
    CHECK(xt_binary_scalar_(XT_SUB, NULL, 1) != XT_OK && error_has("sub_: input is NULL"));
    CHECK(xt_binary_scalar_(77, a, 1) != XT_OK && error_has("unknown binary op 77"));
    CHECK(xt_unary(XT_EXP, NULL) == NULL && error_has("exp: input is NULL"));
    CHECK(xt_unary(XT_UNARY_OP_COUNT, a) == NULL && error_has("unknown unary op"));
    xt_tensor_release(a);
    xt_tensor_release(b);
}

/* ---- big tensors: the parallel and strided paths against a plain loop ---------------- */

static void test_large(void)
{
    int64_t shape[2] = {300, 1001};  /* 300k elements, several parts per thread */
    xt_tensor *a = xt_randn(&rng, 2, shape), *b = xt_randn(&rng, 2, shape);
    int64_t rshape[1] = {1001}, cshape[2] = {300, 1};
    xt_tensor *row = xt_randn(&rng, 1, rshape), *col = xt_randn(&rng, 2, cshape);
    xt_tensor *outs[4] = {xt_binary(XT_ADD, a, b), xt_binary(XT_MUL, a, row),
                          xt_binary(XT_SUB, col, a), xt_binary_scalar(XT_DIV, a, 3, 1)};
    const float *pa = a->data, *pb = b->data, *pr = row->data, *pc = col->data;
    bool ok = true;
    for (int64_t i = 0; i < 300 && ok; i++)
        for (int64_t j = 0; j < 1001; j++) {
            int64_t k = i * 1001 + j;
            float e[4] = {pa[k] + pb[k], pa[k] * pr[j], pc[i] - pa[k], 3.0f / pa[k]};
            for (int o = 0; o < 4; o++)
                if (!outs[o] || ((float *)outs[o]->data)[k] != e[o]) ok = false;
        }
    CHECK(ok);
    /* strided: aT [1001,300] + bT, and aT * a column of aT's shape */
    xt_tensor *at_ = transposed(a), *bt = transposed(b);
    xt_tensor *s = xt_binary(XT_ADD, at_, bt);
    ok = s != NULL;
    for (int64_t i = 0; ok && i < 1001; i++)
        for (int64_t j = 0; j < 300; j++)
            if (((float *)s->data)[i * 300 + j] != pa[j * 1001 + i] + pb[j * 1001 + i]) ok = false;
    CHECK(ok);
    /* in place into a strided view, b broadcast */
    xt_tensor *c = xt_clone(a), *ct = transposed(c);
    int64_t r2[2] = {1001, 1};
    xt_tensor *rcol = xt_tensor_new_view(row->storage, XT_FLOAT32, 2, r2, (int64_t[]){1, 1}, 0);
    CHECK(xt_binary_(XT_SUB, ct, rcol) == XT_OK);
    ok = true;
    for (int64_t k = 0; k < 300 * 1001; k++)
        if (((float *)c->data)[k] != pa[k] - pr[k % 1001]) ok = false;
    CHECK(ok);
    /* one long contiguous run, unary */
    xt_tensor *e = xt_unary(XT_SIGMOID, a);
    ok = e != NULL;
    for (int64_t k = 0; ok && k < 300 * 1001; k++)
        if (fabsf(((float *)e->data)[k] - 1.0f / (1.0f + expf(-pa[k]))) > 1e-6f) ok = false;
    CHECK(ok);
    xt_tensor_release(e);
    xt_tensor_release(rcol);
    xt_tensor_release(ct);
    xt_tensor_release(c);
    xt_tensor_release(s);
    xt_tensor_release(at_);
    xt_tensor_release(bt);
    for (int o = 0; o < 4; o++) xt_tensor_release(outs[o]);
    xt_tensor_release(a);
    xt_tensor_release(b);
    xt_tensor_release(row);
    xt_tensor_release(col);
}

/* ---- gradients -------------------------------------------------------------------------- */

/* Inputs away from kinks: |x| >= 0.2, and positive where the op needs it. */
static xt_tensor *grad_input(int32_t ndim, const int64_t *shape, bool positive)
{
    xt_tensor *t = xt_rand(&rng, ndim, shape);
    float *p = t->data;
    for (int64_t i = 0; i < xt_numel(t); i++) {
        float u = p[i];
        p[i] = positive ? 0.3f + 1.5f * u : (i % 2 ? -1.0f : 1.0f) * (0.2f + 1.3f * u);
    }
    return t;
}

/* For maximum/minimum: a on multiples of 0.1, b halfway between, so no two are within eps. */
static void separate(xt_tensor *a, xt_tensor *b)
{
    float *p = a->data, *q = b->data;
    for (int64_t i = 0; i < xt_numel(a); i++) p[i] = roundf(p[i] * 10) / 10;
    for (int64_t i = 0; i < xt_numel(b); i++) q[i] = roundf(q[i] * 10) / 10 + 0.05f;
}

static void test_unary_grads(void)
{
    int64_t shape[2] = {3, 4};
    for (int32_t op = 0; op < XT_UNARY_OP_COUNT; op++) {
        if (op == XT_SIGN || op == XT_FLOOR || op == XT_CEIL || op == XT_ROUND) continue;
        xt_tensor *x = grad_input(2, shape, needs_positive(op) || op == XT_RECIPROCAL);
        op_ctx c = {.op = op};
        char name[32];
        snprintf(name, sizeof name, "unary op %d", op);
        CHECK(gradcheck(name, f_unary, &c, 1, &x));
        xt_tensor_release(x);
    }
    /* piecewise constant ops: zero gradient; relu and abs: zero at 0 */
    const float xd[4] = {-1.5f, 0, 0.5f, 2.5f};
    int64_t four = 4;
    xt_tensor *dout = xt_full(1, &four, XT_FLOAT32, 1);
    for (int32_t op = 0; op < XT_UNARY_OP_COUNT; op++) {
        if (op != XT_SIGN && op != XT_FLOOR && op != XT_CEIL && op != XT_ROUND &&
            op != XT_RELU && op != XT_ABS)
            continue;
        xt_tensor *x = vec(4, xd);
        xt_set_requires_grad(x, 1);
        xt_tensor *y = xt_unary(op, x);
        CHECK(y && xt_backward(y, dout, 0) == XT_OK && x->grad);
        double zero[4] = {0, 0, 0, 0}, relu[4] = {0, 0, 1, 1}, abs_[4] = {-1, 0, 1, 1};
        const double *e = op == XT_RELU ? relu : op == XT_ABS ? abs_ : zero;
        CHECK(values_are(x->grad, 4, e, 0));
        xt_tensor_release(y);
        xt_tensor_release(x);
    }
    xt_tensor_release(dout);
    /* a strided input: the gradient comes back in the input's shape */
    const float md[6] = {0.5f, 1, 1.5f, 2, 2.5f, 3};
    xt_tensor *m = mat(2, 3, md), *t = transposed(m);
    op_ctx c = {.op = XT_LOG};
    CHECK(gradcheck("log of a transposed view", f_unary, &c, 1, &t));
    xt_tensor_release(t);
    xt_tensor_release(m);
}

static void test_binary_grads(void)
{
    int64_t s34[2] = {3, 4}, s4[1] = {4}, s31[2] = {3, 1}, s14[2] = {1, 4}, s234[3] = {2, 3, 4};
    for (int32_t op = XT_ADD; op <= XT_MINIMUM; op++) {
        char name[64];
        op_ctx c = {.op = op};
        bool pos = op == XT_POW;
        /* same shape */
        xt_tensor *in[2] = {grad_input(2, s34, pos), grad_input(2, s34, false)};
        if (op == XT_MAXIMUM || op == XT_MINIMUM) separate(in[0], in[1]);
        snprintf(name, sizeof name, "%d same shape", op);
        CHECK(gradcheck(name, f_binary, &c, 2, in));
        xt_tensor_release(in[0]);
        xt_tensor_release(in[1]);
        /* broadcast: [3,4] op [4], [3,1] op [1,4], [2,3,4] op [3,1] (needs xt_sum_to) */
        const int64_t *sa[3] = {s34, s31, s234}, *sb[3] = {s4, s14, s31};
        int32_t na[3] = {2, 2, 3}, nb[3] = {1, 2, 2};
        for (int k = 0; k < 3; k++) {
            in[0] = grad_input(na[k], sa[k], pos);
            in[1] = grad_input(nb[k], sb[k], false);
            if (op == XT_MAXIMUM || op == XT_MINIMUM) separate(in[0], in[1]);
            snprintf(name, sizeof name, "%d broadcast case %d", op, k);
            CHECK(gradcheck(name, f_binary, &c, 2, in));
            xt_tensor_release(in[0]);
            xt_tensor_release(in[1]);
        }
    }
    /* scalars, both orientations */
    for (int32_t op = XT_ADD; op <= XT_MINIMUM; op++)
        for (int32_t rev = 0; rev < 2; rev++) {
            xt_tensor *x = grad_input(2, s34, op == XT_POW && !rev);
            op_ctx c = {.op = op, .s = op == XT_POW ? 1.7 : 0.6, .reversed = rev};
            char name[64];
            snprintf(name, sizeof name, "scalar op %d reversed %d", op, rev);
            CHECK(gradcheck(name, f_scalar, &c, 1, &x));
            xt_tensor_release(x);
        }
    /* maximum/minimum ties split the gradient; pow's exponent gradient is 0 at base 0 */
    const float ad[3] = {1, 2, 3}, bd[3] = {1, 5, 0};
    xt_tensor *a = vec(3, ad), *b = vec(3, bd);
    int64_t three = 3;
    xt_tensor *ones = xt_full(1, &three, XT_FLOAT32, 1);
    xt_set_requires_grad(a, 1);
    xt_set_requires_grad(b, 1);
    xt_tensor *y = xt_binary(XT_MAXIMUM, a, b);
    CHECK(y && xt_backward(y, ones, 0) == XT_OK);
    CHECK(values_are(a->grad, 3, (double[]){0.5, 0, 1}, 0));
    CHECK(values_are(b->grad, 3, (double[]){0.5, 1, 0}, 0));
    xt_tensor_release(y);
    xt_set_grad(a, NULL);
    xt_set_grad(b, NULL);
    y = xt_binary(XT_MINIMUM, a, b);
    CHECK(y && xt_backward(y, ones, 0) == XT_OK);
    CHECK(values_are(a->grad, 3, (double[]){0.5, 1, 0}, 0));
    CHECK(values_are(b->grad, 3, (double[]){0.5, 0, 1}, 0));
    xt_tensor_release(y);
    xt_set_grad(a, NULL);
    xt_set_grad(b, NULL);
    y = xt_binary(XT_POW, b, a);  /* [1^1, 5^2, 0^3] */
    CHECK(y && xt_backward(y, ones, 0) == XT_OK);
    CHECK(values_are(b->grad, 3, (double[]){1, 10, 0}, 1e-6));
    CHECK(values_are(a->grad, 3, (double[]){0, 25 * log(5), 0}, 1e-6));
    xt_tensor_release(y);
    xt_tensor_release(ones);
    xt_tensor_release(a);
    xt_tensor_release(b);
    /* only one input requires grad: mul and div save just what that gradient needs */
    const float pd[3] = {1, 2, 4}, qd[3] = {2, -1, 0.5f};
    xt_tensor *p = vec(3, pd), *q = vec(3, qd);
    ones = xt_full(1, &three, XT_FLOAT32, 1);
    for (int32_t side = 0; side < 2; side++) {
        xt_tensor *learn = side ? q : p;
        xt_set_requires_grad(learn, 1);
        xt_tensor *m = xt_binary(XT_MUL, p, q), *d = xt_binary(XT_DIV, p, q);
        CHECK(m && d && m->grad_fn->n_saved == 1 && d->grad_fn->n_saved == 1 + side);
        CHECK(xt_backward(m, ones, 0) == XT_OK);
        CHECK(values_are(learn->grad, 3, side ? (double[]){1, 2, 4} : (double[]){2, -1, 0.5}, 0));
        xt_set_grad(learn, NULL);
        CHECK(xt_backward(d, ones, 0) == XT_OK);
        CHECK(values_are(learn->grad, 3, side ? (double[]){-0.25, -2, -16} : (double[]){0.5, -1, 2},
                         1e-7));
        xt_set_grad(learn, NULL);
        xt_set_requires_grad(learn, 0);
        xt_tensor_release(m);
        xt_tensor_release(d);
    }
    xt_tensor_release(ones);
    xt_tensor_release(p);
    xt_tensor_release(q);
    /* comparisons do not carry gradients */
    xt_tensor *x = grad_input(2, s34, false);
    xt_set_requires_grad(x, 1);
    y = xt_binary(XT_LT, x, x);
    CHECK(y && !y->requires_grad && y->grad_fn == NULL);
    xt_tensor_release(y);
    xt_tensor_release(x);
}

static void test_other_grads(void)
{
    int64_t s34[2] = {3, 4}, s4[1] = {4}, s31[2] = {3, 1};
    xt_tensor *x = grad_input(2, s34, false);
    CHECK(gradcheck("clamp", f_clamp, NULL, 1, &x));
    CHECK(gradcheck("leaky_relu", f_leaky, NULL, 1, &x));
    xt_tensor_release(x);
    /* clamp: gradient 1 on the bounds themselves, 0 outside */
    const float cd[4] = {-0.5f, 0.7f, -0.6f, 0.8f};
    xt_tensor *c = vec(4, cd);
    xt_set_requires_grad(c, 1);
    xt_tensor *y = xt_clamp(c, -0.5, 0.7), *ones = xt_full(1, s4, XT_FLOAT32, 1);
    CHECK(y && xt_backward(y, ones, 0) == XT_OK &&
          values_are(c->grad, 4, (double[]){1, 1, 0, 0}, 0));
    xt_tensor_release(y);
    xt_set_grad(c, NULL);
    y = xt_leaky_relu(c, 0.25);
    CHECK(y && xt_backward(y, ones, 0) == XT_OK &&
          values_are(c->grad, 4, (double[]){0.25, 1, 0.25, 1}, 0));
    xt_tensor_release(y);
    xt_tensor_release(ones);
    xt_tensor_release(c);

    const uint8_t md[12] = {1, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1, 0};
    xt_tensor *mask = xt_from_data(2, s34, XT_UINT8, md);
    op_ctx w = {.mask = mask};
    xt_tensor *in[2] = {grad_input(2, s34, false), grad_input(2, s34, false)};
    CHECK(gradcheck("where", f_where, &w, 2, in));
    CHECK(gradcheck("masked_fill", f_masked_fill, &w, 1, in));
    xt_tensor_release(in[1]);
    in[1] = grad_input(1, s4, false);  /* broadcast b: needs xt_sum_to */
    CHECK(gradcheck("where broadcast", f_where, &w, 2, in));
    xt_tensor_release(in[0]);
    xt_tensor_release(in[1]);
    xt_tensor_release(mask);
    const uint8_t rd[3] = {1, 0, 1};
    mask = xt_from_data(2, s31, XT_UINT8, rd);
    w.mask = mask;
    x = grad_input(2, s34, false);
    CHECK(gradcheck("masked_fill broadcast mask", f_masked_fill, &w, 1, &x));
    xt_tensor_release(x);
    xt_tensor_release(mask);
}

/* ---- PyTorch fixtures ------------------------------------------------------------------- */

static xt_tensor *f_fix_scalar_ops(xt_tensor *const *in, const void *c)
{
    /* (2 - x) * 3 / 4 + 1 */
    xt_tensor *t1 = xt_binary_scalar(XT_SUB, in[0], 2, 1);
    xt_tensor *t2 = xt_binary_scalar(XT_MUL, t1, 3, 0);
    xt_tensor *t3 = xt_binary_scalar(XT_DIV, t2, 4, 0);
    xt_tensor *t4 = xt_binary_scalar(XT_ADD, t3, 1, 0);
    xt_tensor_release(t1);
    xt_tensor_release(t2);
    xt_tensor_release(t3);
    return t4;
}
static xt_tensor *f_fix_rdiv(xt_tensor *const *in, const void *c)
{
    return xt_binary_scalar(XT_DIV, in[0], 2, 1);
}
static xt_tensor *f_fix_pow_scalar(xt_tensor *const *in, const void *c)
{
    return xt_binary_scalar(XT_POW, in[0], 2.5, 0);
}
static xt_tensor *f_fix_clamp(xt_tensor *const *in, const void *c)
{
    return xt_clamp(in[0], -1, 1);
}
static xt_tensor *f_fix_leaky(xt_tensor *const *in, const void *c)
{
    return xt_leaky_relu(in[0], 0.1);
}
static xt_tensor *f_fix_where(xt_tensor *const *in, const void *c)
{
    xt_tensor *cond = xt_binary_scalar(XT_GT, in[0], 0, 0);
    xt_tensor *y = xt_where(cond, in[0], in[1]);
    xt_tensor_release(cond);
    return y;
}
static xt_tensor *f_fix_masked_fill(xt_tensor *const *in, const void *c)
{
    xt_tensor *mask = xt_binary_scalar(XT_GT, in[0], 0.5, 0);
    xt_tensor *y = xt_masked_fill(in[0], mask, -1);
    xt_tensor_release(mask);
    return y;
}

static void test_fixtures(void)
{
    static const char *const unary[XT_UNARY_OP_COUNT] = {
        "neg", "abs", "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "relu", "gelu", "silu",
        "sin", "cos", "elu", "log1p", "expm1", NULL, NULL, NULL, NULL, "square", "reciprocal"};
    for (int32_t op = 0; op < XT_UNARY_OP_COUNT; op++) {
        if (!unary[op]) continue;
        char name[64];
        snprintf(name, sizeof name, "unary_%s", unary[op]);
        op_ctx c = {.op = op};
        check_fixture(name, f_unary, &c, 1);
    }
    const char *binary[] = {"add_bcast", "sub_bcast", "mul_bcast", "div_bcast", "pow",
                            "maximum", "minimum"};
    for (int32_t op = XT_ADD; op <= XT_MINIMUM; op++) {
        op_ctx c = {.op = op};
        check_fixture(binary[op], f_binary, &c, 2);
    }
    check_fixture("scalar_ops", f_fix_scalar_ops, NULL, 1);
    check_fixture("rdiv_scalar", f_fix_rdiv, NULL, 1);
    check_fixture("pow_scalar", f_fix_pow_scalar, NULL, 1);
    check_fixture("clamp", f_fix_clamp, NULL, 1);
    check_fixture("leaky_relu", f_fix_leaky, NULL, 1);
    check_fixture("where", f_fix_where, NULL, 2);
    check_fixture("masked_fill", f_fix_masked_fill, NULL, 1);
}

/* ---- speed (printed, not checked: bench/ holds the real benchmark) ---------------------- */

static void report_add_speed(void)
{
    int64_t n = 16 << 20;
    xt_tensor *a = xt_full(1, &n, XT_FLOAT32, 1), *b = xt_full(1, &n, XT_FLOAT32, 2);
    double best = 1e9;
    for (int rep = 0; rep < 5; rep++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        xt_tensor *c = xt_binary(XT_ADD, a, b);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        if (s < best) best = s;
        CHECK(c && ((float *)c->data)[n - 1] == 3.0f);
        xt_tensor_release(c);
    }
    double in_place = 1e9;
    for (int rep = 0; rep < 5; rep++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        xt_binary_(XT_ADD, a, b);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        if (s < in_place) in_place = s;
    }
    printf("add of 16M floats: %.2f ms (%.1f GB/s over 3 arrays); add_ in place: %.2f ms "
           "(%.1f GB/s)\n", best * 1e3, 3.0 * 4 * (double)n / best / 1e9, in_place * 1e3,
           3.0 * 4 * (double)n / in_place / 1e9);
    xt_tensor_release(a);
    xt_tensor_release(b);
}

int main(void)
{
    printf("test_elementwise: seed %d\n", SEED);
    test_unary_values();
    test_unary_accuracy();
    test_unary_dtypes();
    test_unary_strided();
    test_binary_broadcast();
    test_binary_strided();
    test_binary_dtypes();
    test_scalar();
    test_inplace();
    test_clamp_leaky();
    test_where_masked_fill();
    test_empty();
    test_errors();
    test_large();
    test_unary_grads();
    test_binary_grads();
    test_other_grads();
    test_fixtures();
    if (!getenv("XT_TEST_NO_SPEED")) report_add_speed();
    return check_report("test_elementwise");
}
