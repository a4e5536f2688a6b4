/*
 * unary.c: unary ops (xt_unary), clamp and leaky_relu, forward beside
 * backward, on the strided loop of elementwise.h.
 *
 * Dtypes. The math runs in float32: an int64 or uint8 input is converted to
 * float32 first (as PyTorch does for exp, sqrt, ...). The exceptions keep
 * integers: NEG ABS SIGN SQUARE RELU give int64 for int64 and uint8 input (uint8
 * promoted, as in elementwise.c), FLOOR CEIL ROUND return an integer input
 * unchanged (a copy), and clamp of an integer tensor gives int64.
 *
 * GELU is the exact form x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) (PyTorch's default),
 * computed as 0.5 x erfc(-x / sqrt 2), which is the same value without the
 * cancellation of 1 + erf for x << 0; erfc is fast_erfc.h's vectorisable one.
 *
 * Each op's backward formula is in f32_unary_grad, written in terms of the
 * input x or the output y, whichever the node saved (unary_saves).
 */
#include "elementwise.h"
#include "fast_erfc.h"

#include <math.h>

#define ALWAYS_INLINE static inline __attribute__((always_inline))

static const char *const unary_names[XT_UNARY_OP_COUNT] = {
    "neg",  "abs",  "exp",  "log",   "sqrt",  "rsqrt", "tanh",   "sigmoid",
    "relu", "gelu", "silu", "sin",   "cos",   "elu",   "log1p",  "expm1",
    "sign", "floor", "ceil", "round", "square", "reciprocal"};

static const float inv_sqrt2 = 0.70710678118654752f;
static const float inv_sqrt_2pi = 0.39894228040143268f;

/* ---- forward -------------------------------------------------------------------- */

ALWAYS_INLINE float f32_unary(int32_t op, float x)
{
    switch (op) {
    case XT_NEG: return -x;
    case XT_ABS: return fabsf(x);
    case XT_EXP: return expf(x);
    case XT_LOG: return logf(x);
    case XT_SQRT: return sqrtf(x);
    case XT_RSQRT: return 1.0f / sqrtf(x);
    case XT_TANH: return tanhf(x);
    case XT_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case XT_RELU: return x < 0 ? 0.0f : x;                 /* NaN passes through */
    case XT_GELU: return 0.5f * x * xt_fast_erfcf(-x * inv_sqrt2);  /* exact x Phi(x), see above */
    case XT_SILU: return x / (1.0f + expf(-x));
    case XT_SIN: return sinf(x);
    case XT_COS: return cosf(x);
    case XT_ELU: return x > 0 ? x : expm1f(x);             /* alpha = 1 */
    case XT_LOG1P: return log1pf(x);
    case XT_EXPM1: return expm1f(x);
    case XT_SIGN: return x > 0 ? 1.0f : x < 0 ? -1.0f : x; /* 0 and NaN pass through */
    case XT_FLOOR: return floorf(x);
    case XT_CEIL: return ceilf(x);
    case XT_ROUND: return rintf(x);                        /* half to even, as torch.round */
    case XT_SQUARE: return x * x;
    default: return 1.0f / x;                              /* XT_RECIPROCAL */
    }
}

ALWAYS_INLINE void f32_unary_loop(int32_t op, float *o, int64_t so, const float *x, int64_t sx,
                                  int64_t n)
{
    if (so == 1 && sx == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = f32_unary(op, x[i]);
    } else {
        for (int64_t i = 0; i < n; i++) o[i * so] = f32_unary(op, x[i * sx]);
    }
}

static void f32_unary_run(const void *ctx, char *const *p, const int64_t *s, int64_t n)
{
    float *o = (float *)p[0];
    const float *x = (const float *)p[1];
    switch (*(const int32_t *)ctx) {
    case XT_NEG: f32_unary_loop(XT_NEG, o, s[0], x, s[1], n); break;
    case XT_ABS: f32_unary_loop(XT_ABS, o, s[0], x, s[1], n); break;
    case XT_EXP: f32_unary_loop(XT_EXP, o, s[0], x, s[1], n); break;
    case XT_LOG: f32_unary_loop(XT_LOG, o, s[0], x, s[1], n); break;
    case XT_SQRT: f32_unary_loop(XT_SQRT, o, s[0], x, s[1], n); break;
    case XT_RSQRT: f32_unary_loop(XT_RSQRT, o, s[0], x, s[1], n); break;
    case XT_TANH: f32_unary_loop(XT_TANH, o, s[0], x, s[1], n); break;
    case XT_SIGMOID: f32_unary_loop(XT_SIGMOID, o, s[0], x, s[1], n); break;
    case XT_RELU: f32_unary_loop(XT_RELU, o, s[0], x, s[1], n); break;
    case XT_GELU: f32_unary_loop(XT_GELU, o, s[0], x, s[1], n); break;
    case XT_SILU: f32_unary_loop(XT_SILU, o, s[0], x, s[1], n); break;
    case XT_SIN: f32_unary_loop(XT_SIN, o, s[0], x, s[1], n); break;
    case XT_COS: f32_unary_loop(XT_COS, o, s[0], x, s[1], n); break;
    case XT_ELU: f32_unary_loop(XT_ELU, o, s[0], x, s[1], n); break;
    case XT_LOG1P: f32_unary_loop(XT_LOG1P, o, s[0], x, s[1], n); break;
    case XT_EXPM1: f32_unary_loop(XT_EXPM1, o, s[0], x, s[1], n); break;
    case XT_SIGN: f32_unary_loop(XT_SIGN, o, s[0], x, s[1], n); break;
    case XT_FLOOR: f32_unary_loop(XT_FLOOR, o, s[0], x, s[1], n); break;
    case XT_CEIL: f32_unary_loop(XT_CEIL, o, s[0], x, s[1], n); break;
    case XT_ROUND: f32_unary_loop(XT_ROUND, o, s[0], x, s[1], n); break;
    case XT_SQUARE: f32_unary_loop(XT_SQUARE, o, s[0], x, s[1], n); break;
    case XT_RECIPROCAL: f32_unary_loop(XT_RECIPROCAL, o, s[0], x, s[1], n); break;
    }
}

/* The integer-keeping ops; wrap on overflow (computed unsigned). */
static void i64_unary_run(const void *ctx, char *const *p, const int64_t *s, int64_t n)
{
    int64_t *o = (int64_t *)p[0];
    const int64_t *x = (const int64_t *)p[1];
    int64_t so = s[0], sx = s[1];
    switch (*(const int32_t *)ctx) {
    case XT_NEG:
        for (int64_t i = 0; i < n; i++) o[i * so] = (int64_t)(0 - (uint64_t)x[i * sx]);
        break;
    case XT_ABS:
        for (int64_t i = 0; i < n; i++)
            o[i * so] = x[i * sx] < 0 ? (int64_t)(0 - (uint64_t)x[i * sx]) : x[i * sx];
        break;
    case XT_SIGN:
        for (int64_t i = 0; i < n; i++) o[i * so] = (x[i * sx] > 0) - (x[i * sx] < 0);
        break;
    case XT_SQUARE:
        for (int64_t i = 0; i < n; i++)
            o[i * so] = (int64_t)((uint64_t)x[i * sx] * (uint64_t)x[i * sx]);
        break;
    case XT_RELU:
        for (int64_t i = 0; i < n; i++) o[i * so] = x[i * sx] < 0 ? 0 : x[i * sx];
        break;
    }
}

static bool keeps_integers(int32_t op)
{
    return op == XT_NEG || op == XT_ABS || op == XT_SIGN || op == XT_SQUARE || op == XT_RELU;
}

/* out = op(x) elementwise, out freshly allocated with x's shape. */
static xt_tensor *unary_kernel(int32_t op, xt_tensor *x, int32_t dtype, xt_run_fn fn)
{
    xt_tensor *out = xt_empty(x->ndim, x->shape, dtype);
    if (!out) return NULL;
    xt_loop l;
    xt_loop_init(&l, 2, (xt_tensor *[]){out, x});
    xt_loop_run(&l, fn, &op);
    return out;
}

/* ---- backward ------------------------------------------------------------------------
 * d = dL/dx from g = dL/dy and the saved value v: the input x, or the output y. */

static uint32_t unary_saves(int32_t op)
{
    switch (op) {
    case XT_EXP: case XT_SQRT: case XT_RSQRT: case XT_TANH: case XT_SIGMOID: case XT_RELU:
    case XT_ELU: case XT_EXPM1: case XT_RECIPROCAL:
        return XT_SAVE_OUT;
    case XT_ABS: case XT_LOG: case XT_GELU: case XT_SILU: case XT_SIN: case XT_COS:
    case XT_LOG1P: case XT_SQUARE:
        return 1;  /* the input */
    default:
        return 0;  /* NEG, and the piecewise constant SIGN FLOOR CEIL ROUND */
    }
}

ALWAYS_INLINE float f32_unary_grad(int32_t op, float g, float v)
{
    switch (op) {
    case XT_ABS: return v > 0 ? g : v < 0 ? -g : 0.0f;          /* v = x; 0 at 0 */
    case XT_EXP: return g * v;                                   /* v = y */
    case XT_LOG: return g / v;                                   /* v = x */
    case XT_SQRT: return g / (2.0f * v);                         /* v = y */
    case XT_RSQRT: return -0.5f * g * v * v * v;                 /* v = y */
    case XT_TANH: return g * (1.0f - v * v);                     /* v = y */
    case XT_SIGMOID: return g * v * (1.0f - v);                  /* v = y */
    case XT_RELU: return v > 0 ? g : 0.0f;                       /* v = y; 0 at 0 */
    case XT_GELU: {                                              /* v = x */
        float cdf = 0.5f * xt_fast_erfcf(-v * inv_sqrt2);
        float pdf = inv_sqrt_2pi * xt_fast_expf(-0.5f * v * v);
        return g * (cdf + v * pdf);
    }
    case XT_SILU: {                                              /* v = x */
        float sig = 1.0f / (1.0f + expf(-v));
        return g * sig * (1.0f + v * (1.0f - sig));
    }
    case XT_SIN: return g * cosf(v);                             /* v = x */
    case XT_COS: return -g * sinf(v);                            /* v = x */
    case XT_ELU: return v > 0 ? g : g * (v + 1.0f);              /* v = y */
    case XT_LOG1P: return g / (1.0f + v);                        /* v = x */
    case XT_EXPM1: return g * (v + 1.0f);                        /* v = y */
    case XT_SQUARE: return 2.0f * g * v;                         /* v = x */
    default: return -g * v * v;                                  /* RECIPROCAL, v = y */
    }
}

ALWAYS_INLINE void f32_unary_grad_loop(int32_t op, char *const *p, const int64_t *s, int64_t n)
{
    float *d = (float *)p[0];
    const float *g = (const float *)p[1], *v = (const float *)p[2];
    if (s[0] == 1 && s[1] == 1 && s[2] == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) d[i] = f32_unary_grad(op, g[i], v[i]);
    } else {
        for (int64_t i = 0; i < n; i++) d[i * s[0]] = f32_unary_grad(op, g[i * s[1]], v[i * s[2]]);
    }
}

static void f32_unary_grad_run(const void *ctx, char *const *p, const int64_t *s, int64_t n)
{
    switch (*(const int32_t *)ctx) {
    case XT_ABS: f32_unary_grad_loop(XT_ABS, p, s, n); break;
    case XT_EXP: f32_unary_grad_loop(XT_EXP, p, s, n); break;
    case XT_LOG: f32_unary_grad_loop(XT_LOG, p, s, n); break;
    case XT_SQRT: f32_unary_grad_loop(XT_SQRT, p, s, n); break;
    case XT_RSQRT: f32_unary_grad_loop(XT_RSQRT, p, s, n); break;
    case XT_TANH: f32_unary_grad_loop(XT_TANH, p, s, n); break;
    case XT_SIGMOID: f32_unary_grad_loop(XT_SIGMOID, p, s, n); break;
    case XT_RELU: f32_unary_grad_loop(XT_RELU, p, s, n); break;
    case XT_GELU: f32_unary_grad_loop(XT_GELU, p, s, n); break;
    case XT_SILU: f32_unary_grad_loop(XT_SILU, p, s, n); break;
    case XT_SIN: f32_unary_grad_loop(XT_SIN, p, s, n); break;
    case XT_COS: f32_unary_grad_loop(XT_COS, p, s, n); break;
    case XT_ELU: f32_unary_grad_loop(XT_ELU, p, s, n); break;
    case XT_LOG1P: f32_unary_grad_loop(XT_LOG1P, p, s, n); break;
    case XT_EXPM1: f32_unary_grad_loop(XT_EXPM1, p, s, n); break;
    case XT_SQUARE: f32_unary_grad_loop(XT_SQUARE, p, s, n); break;
    case XT_RECIPROCAL: f32_unary_grad_loop(XT_RECIPROCAL, p, s, n); break;
    }
}

/* The op is the node's iargs[0]. */
static xt_status unary_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    int32_t op = (int32_t)node->iargs[0];
    if (op == XT_NEG) {
        dinputs[0] = xt_unary(XT_NEG, dout);
        return dinputs[0] ? XT_OK : xt_last_status();
    }
    if (unary_saves(op) == 0) {  /* piecewise constant: zero gradient */
        dinputs[0] = xt_zeros(dout->ndim, dout->shape, XT_FLOAT32);
        return dinputs[0] ? XT_OK : xt_last_status();
    }
    xt_tensor *v = xt_node_saved(node, 0);
    if (!v) return xt_last_status();
    xt_tensor *d = xt_empty(dout->ndim, dout->shape, XT_FLOAT32);
    if (!d) return xt_last_status();
    xt_loop l;
    xt_loop_init(&l, 3, (xt_tensor *[]){d, dout, v});
    xt_loop_run(&l, f32_unary_grad_run, &op);
    dinputs[0] = d;
    return XT_OK;
}

/* Record a node whose backward needs the op (iargs[0]) and fargs. */
static bool record_with_args(xt_tensor *out, const char *name, xt_backward_fn backward,
                             xt_tensor *x, uint32_t save, int64_t iarg, double f0, double f1)
{
    if (!xt_record(out, name, backward, 1, &x, save)) return false;
    if (out->grad_fn) {
        out->grad_fn->iargs[0] = iarg;
        out->grad_fn->fargs[0] = f0;
        out->grad_fn->fargs[1] = f1;
    }
    return true;
}

xt_tensor *xt_unary(int32_t op, xt_tensor *x)
{
    if (op < 0 || op >= XT_UNARY_OP_COUNT)
        return xt_fail_null(XT_ERR_ARG, "unary: unknown unary op %d", op);
    const char *name = unary_names[op];
    if (!x) return xt_fail_null(XT_ERR_ARG, "%s: input is NULL", name);
    if (x->dtype != XT_FLOAT32) {
        if (op == XT_FLOOR || op == XT_CEIL || op == XT_ROUND) return xt_clone(x);
        int32_t dtype = keeps_integers(op) ? XT_INT64 : XT_FLOAT32;
        xt_tensor *xc = xt_to_dtype(x, dtype);
        if (!xc) return NULL;
        xt_tensor *out = dtype == XT_INT64 ? unary_kernel(op, xc, XT_INT64, i64_unary_run)
                                           : unary_kernel(op, xc, XT_FLOAT32, f32_unary_run);
        xt_tensor_release(xc);
        return out;  /* no grad: the input was not float32 */
    }
    xt_tensor *out = unary_kernel(op, x, XT_FLOAT32, f32_unary_run);
    if (out && !record_with_args(out, name, unary_backward, x, unary_saves(op), op, 0, 0)) {
        xt_tensor_release(out);
        return NULL;
    }
    return out;
}

/* ---- clamp ---------------------------------------------------------------------------
 * min(max(x, low), high) as PyTorch: high wins when low > high; NaN passes through. */

typedef struct clamp_args {
    float low, high;
} clamp_args;

static void f32_clamp_run(const void *ctx, char *const *p, const int64_t *s, int64_t n)
{
    const clamp_args *c = ctx;
    const float low = c->low, high = c->high;
    float *o = (float *)p[0];
    const float *x = (const float *)p[1];
    if (s[0] == 1 && s[1] == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            float t = x[i] < low ? low : x[i];
            o[i] = t > high ? high : t;
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            float t = x[i * s[1]] < low ? low : x[i * s[1]];
            o[i * s[0]] = t > high ? high : t;
        }
    }
}

typedef struct clamp_i64_args {
    int64_t low, high;
} clamp_i64_args;

static void i64_clamp_run(const void *ctx, char *const *p, const int64_t *s, int64_t n)
{
    const clamp_i64_args *c = ctx;
    int64_t *o = (int64_t *)p[0];
    const int64_t *x = (const int64_t *)p[1];
    for (int64_t i = 0; i < n; i++) {
        int64_t t = x[i * s[1]] < c->low ? c->low : x[i * s[1]];
        o[i * s[0]] = t > c->high ? c->high : t;
    }
}

/* d = g where low <= x <= high, else 0. Saved: x; fargs: low, high. */
static void f32_clamp_grad_run(const void *ctx, char *const *p, const int64_t *s, int64_t n)
{
    const clamp_args *c = ctx;
    const float low = c->low, high = c->high;
    float *d = (float *)p[0];
    const float *g = (const float *)p[1], *x = (const float *)p[2];
    if (s[0] == 1 && s[1] == 1 && s[2] == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) d[i] = x[i] >= low && x[i] <= high ? g[i] : 0.0f;
    } else {
        for (int64_t i = 0; i < n; i++)
            d[i * s[0]] = x[i * s[2]] >= low && x[i * s[2]] <= high ? g[i * s[1]] : 0.0f;
    }
}

static xt_status clamp_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *x = xt_node_saved(node, 0);
    if (!x) return xt_last_status();
    xt_tensor *d = xt_empty(dout->ndim, dout->shape, XT_FLOAT32);
    if (!d) return xt_last_status();
    clamp_args c = {(float)node->fargs[0], (float)node->fargs[1]};
    xt_loop l;
    xt_loop_init(&l, 3, (xt_tensor *[]){d, dout, x});
    xt_loop_run(&l, f32_clamp_grad_run, &c);
    dinputs[0] = d;
    return XT_OK;
}

/* A double bound as an int64 bound: saturating, rounded inward. */
static int64_t int_bound(double v, bool is_low)
{
    v = is_low ? ceil(v) : floor(v);
    if (v <= -9.2e18) return INT64_MIN;
    if (v >= 9.2e18) return INT64_MAX;
    return (int64_t)v;
}

xt_tensor *xt_clamp(xt_tensor *x, double low, double high)
{
    if (!x) return xt_fail_null(XT_ERR_ARG, "clamp: input is NULL");
    if (isnan(low) || isnan(high))
        return xt_fail_null(XT_ERR_ARG, "clamp: bounds must not be NaN (use +-inf for none)");
    if (x->dtype != XT_FLOAT32) {
        xt_tensor *xc = xt_to_dtype(x, XT_INT64);
        if (!xc) return NULL;
        clamp_i64_args c = {int_bound(low, true), int_bound(high, false)};
        xt_tensor *out = xt_empty(x->ndim, x->shape, XT_INT64);
        if (out) {
            xt_loop l;
            xt_loop_init(&l, 2, (xt_tensor *[]){out, xc});
            xt_loop_run(&l, i64_clamp_run, &c);
        }
        xt_tensor_release(xc);
        return out;
    }
    xt_tensor *out = xt_empty(x->ndim, x->shape, XT_FLOAT32);
    if (!out) return NULL;
    clamp_args c = {(float)low, (float)high};
    xt_loop l;
    xt_loop_init(&l, 2, (xt_tensor *[]){out, x});
    xt_loop_run(&l, f32_clamp_run, &c);
    if (!record_with_args(out, "clamp", clamp_backward, x, 1, 0, low, high)) {
        xt_tensor_release(out);
        return NULL;
    }
    return out;
}

/* ---- leaky_relu ------------------------------------------------------------------------
 * y = x for x > 0, slope * x otherwise; dy/dx = 1 for x > 0, slope otherwise (as PyTorch). */

static void f32_leaky_relu_run(const void *ctx, char *const *p, const int64_t *s, int64_t n)
{
    const float slope = *(const float *)ctx;
    float *o = (float *)p[0];
    const float *x = (const float *)p[1];
    if (s[0] == 1 && s[1] == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = x[i] > 0 ? x[i] : slope * x[i];
    } else {
        for (int64_t i = 0; i < n; i++)
            o[i * s[0]] = x[i * s[1]] > 0 ? x[i * s[1]] : slope * x[i * s[1]];
    }
}

static void f32_leaky_relu_grad_run(const void *ctx, char *const *p, const int64_t *s, int64_t n)
{
    const float slope = *(const float *)ctx;
    float *d = (float *)p[0];
    const float *g = (const float *)p[1], *x = (const float *)p[2];
    if (s[0] == 1 && s[1] == 1 && s[2] == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) d[i] = x[i] > 0 ? g[i] : slope * g[i];
    } else {
        for (int64_t i = 0; i < n; i++)
            d[i * s[0]] = x[i * s[2]] > 0 ? g[i * s[1]] : slope * g[i * s[1]];
    }
}

/* Saved: x; fargs[0]: slope. */
static xt_status leaky_relu_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *x = xt_node_saved(node, 0);
    if (!x) return xt_last_status();
    xt_tensor *d = xt_empty(dout->ndim, dout->shape, XT_FLOAT32);
    if (!d) return xt_last_status();
    float slope = (float)node->fargs[0];
    xt_loop l;
    xt_loop_init(&l, 3, (xt_tensor *[]){d, dout, x});
    xt_loop_run(&l, f32_leaky_relu_grad_run, &slope);
    dinputs[0] = d;
    return XT_OK;
}

xt_tensor *xt_leaky_relu(xt_tensor *x, double slope)
{
    if (!x) return xt_fail_null(XT_ERR_ARG, "leaky_relu: input is NULL");
    xt_tensor *xc = xt_to_dtype(x, XT_FLOAT32);
    if (!xc) return NULL;
    xt_tensor *out = xt_empty(x->ndim, x->shape, XT_FLOAT32);
    if (out) {
        float s = (float)slope;
        xt_loop l;
        xt_loop_init(&l, 2, (xt_tensor *[]){out, xc});
        xt_loop_run(&l, f32_leaky_relu_run, &s);
        if (!record_with_args(out, "leaky_relu", leaky_relu_backward, xc, 1, 0, slope, 0)) {
            xt_tensor_release(out);
            out = NULL;
        }
    }
    xt_tensor_release(xc);
    return out;
}
