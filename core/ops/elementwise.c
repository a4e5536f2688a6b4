/*
 * elementwise.c: binary ops (arithmetic and comparisons; tensor op tensor and
 * tensor op scalar; out of place and in place), where and masked_fill, each
 * forward beside its backward; and the strided parallel loop that every
 * element-wise kernel runs on (elementwise.h). Unary ops live in unary.c.
 *
 * Dtypes. a op b computes in float32 if either is float32, else in int64:
 * uint8 is promoted to int64, so uint8 op uint8 gives int64 and image
 * arithmetic does not silently wrap around at 256 (PyTorch would keep uint8
 * and wrap). XT_DIV always computes in float32 (true division). Comparisons
 * compute in that same dtype and give uint8 0/1. A scalar takes the tensor's
 * dtype, except that a non-integral scalar makes an integer tensor compute in
 * float32. Only float32 results carry gradients.
 *
 * Kernels are plain float32 (and int64) loops. The op is a compile-time
 * constant inside each loop: f32_binary_run switches on the op once per run and
 * calls an always-inlined loop with a literal op, so the switch in
 * f32_binary folds away and the compiler vectorises the loop.
 */
#include "elementwise.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* ---- the strided parallel loop ----------------------------------------------- */

void xt_loop_init(xt_loop *l, int32_t nops, xt_tensor *const *ops)
{
    int64_t strides[XT_ITER_MAX_OPS][XT_MAX_DIMS];
    const xt_tensor *out = ops[0];
    for (int32_t k = 0; k < nops; k++) {
        xt_broadcast_strides(ops[k], out->ndim, out->shape, strides[k]);
        l->base[k] = ops[k]->data;
        l->esize[k] = xt_dtype_size(ops[k]->dtype);
    }
    xt_iter_init(&l->it, nops, out->ndim, out->shape, strides);
}

/* Elements [begin, end) in iteration order: the first run may start and the
 * last may end inside a run; the outer index advances like an odometer. */
static void run_range(const xt_loop *l, xt_run_fn fn, const void *ctx, int64_t begin,
                      int64_t end)
{
    const xt_iter *it = &l->it;
    int32_t nops = it->nops, last = it->ndim - 1;
    int64_t o = begin / it->inner, i = begin % it->inner;
    int64_t off[XT_ITER_MAX_OPS], idx[XT_MAX_DIMS], s[XT_ITER_MAX_OPS];
    xt_iter_offsets(it, o, off);
    for (int32_t d = last - 1; d >= 0; d--) {
        idx[d] = o % it->shape[d];
        o /= it->shape[d];
    }
    for (int32_t k = 0; k < nops; k++) s[k] = it->strides[k][last];
    while (begin < end) {
        int64_t n = it->inner - i < end - begin ? it->inner - i : end - begin;
        char *p[XT_ITER_MAX_OPS];
        for (int32_t k = 0; k < nops; k++) p[k] = l->base[k] + (off[k] + i * s[k]) * l->esize[k];
        fn(ctx, p, s, n);
        begin += n;
        i = 0;
        for (int32_t d = last - 1; d >= 0; d--) {
            for (int32_t k = 0; k < nops; k++) off[k] += it->strides[k][d];
            if (++idx[d] < it->shape[d]) break;
            for (int32_t k = 0; k < nops; k++) off[k] -= it->strides[k][d] * it->shape[d];
            idx[d] = 0;
        }
    }
}

void xt_loop_run(const xt_loop *l, xt_run_fn fn, const void *ctx)
{
    int64_t total = l->it.outer * l->it.inner;
    if (total == 0) return;
    /* one contiguous share of the elements per thread, at least a grain each */
    int64_t parts = (total + XT_PARALLEL_GRAIN - 1) / XT_PARALLEL_GRAIN;
    int64_t threads = omp_get_max_threads();
    if (parts > threads) parts = threads;
    if (parts <= 1) {
        run_range(l, fn, ctx, 0, total);
        return;
    }
#pragma omp parallel for
    for (int64_t p = 0; p < parts; p++)
        run_range(l, fn, ctx, total * p / parts, total * (p + 1) / parts);
}

/* ---- names and dtypes -------------------------------------------------------- */

static const char *const binary_names[XT_BINARY_OP_COUNT] = {
    "add", "sub", "mul", "div", "pow", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge"};
static const char *const binary_inplace_names[XT_BINARY_OP_COUNT] = {
    "add_", "sub_", "mul_", "div_", "pow_", "maximum_", "minimum_",
    "eq_",  "ne_",  "lt_",  "le_",  "gt_",  "ge_"};

static bool is_compare(int32_t op) { return op >= XT_EQ; }

/* The dtype a op b computes in (see the top of the file). */
static int32_t compute_dtype(int32_t op, int32_t a, int32_t b)
{
    if (op == XT_DIV || a == XT_FLOAT32 || b == XT_FLOAT32) return XT_FLOAT32;
    return XT_INT64;
}

/* t in dtype, a new reference: t itself when it already has it, else a copy.
 * Only integer tensors are ever converted, so no autograd is lost. */
static xt_tensor *as_dtype(xt_tensor *t, int32_t dtype)
{
    if (t->dtype == dtype) {
        xt_tensor_retain(t);
        return t;
    }
    xt_tensor *c = xt_empty(t->ndim, t->shape, dtype);
    if (c) xt_copy_kernel(c, t);
    return c;
}

/* A 0-d tensor holding s: float32 for a float32 tensor or a non-integral s, else int64. */
static xt_tensor *scalar_tensor(int32_t like, double s)
{
    int64_t unused = 1;
    bool integral = s == floor(s) && fabs(s) < 9.2e18;
    return xt_full(0, &unused, like != XT_FLOAT32 && integral ? XT_INT64 : XT_FLOAT32, s);
}

static bool check_binary_op(int32_t op, const char *what)
{
    if (op >= 0 && op < XT_BINARY_OP_COUNT) return true;
    xt_fail(XT_ERR_ARG, "%s: unknown binary op %d", what, op);
    return false;
}

/* ---- binary kernels ------------------------------------------------------------ */

ALWAYS_INLINE float f32_binary(int32_t op, float x, float y)
{
    switch (op) {
    case XT_ADD: return x + y;
    case XT_SUB: return x - y;
    case XT_MUL: return x * y;
    case XT_DIV: return x / y;
    case XT_POW: return powf(x, y);
    case XT_MAXIMUM: return x > y || x != x ? x : y;  /* a NaN wins, as in PyTorch */
    case XT_MINIMUM: return x < y || x != x ? x : y;
    default: return 0;
    }
}

/* o[i] = a[i] op b[i] for one run; the three common stride patterns get loops
 * without strides, which the compiler vectorises. o may equal a (in place). */
ALWAYS_INLINE void f32_binary_loop(int32_t op, float *o, int64_t so, const float *a, int64_t sa,
                                   const float *b, int64_t sb, int64_t n)
{
    if (so == 1 && sa == 1 && sb == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = f32_binary(op, a[i], b[i]);
    } else if (so == 1 && sa == 1 && sb == 0) {
        const float y = *b;
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = f32_binary(op, a[i], y);
    } else if (so == 1 && sa == 0 && sb == 1) {
        const float x = *a;
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = f32_binary(op, x, b[i]);
    } else {
        for (int64_t i = 0; i < n; i++) o[i * so] = f32_binary(op, a[i * sa], b[i * sb]);
    }
}

static void f32_binary_run(const void *ctx, char *const *p, const int64_t *s, int64_t n)
{
    float *o = (float *)p[0];
    const float *a = (const float *)p[1], *b = (const float *)p[2];
    switch (*(const int32_t *)ctx) {
    case XT_ADD: f32_binary_loop(XT_ADD, o, s[0], a, s[1], b, s[2], n); break;
    case XT_SUB: f32_binary_loop(XT_SUB, o, s[0], a, s[1], b, s[2], n); break;
    case XT_MUL: f32_binary_loop(XT_MUL, o, s[0], a, s[1], b, s[2], n); break;
    case XT_DIV: f32_binary_loop(XT_DIV, o, s[0], a, s[1], b, s[2], n); break;
    case XT_POW:
        if (s[2] == 0 && *b == 2.0f)  /* x ^ 2, the common case, without powf */
            f32_binary_loop(XT_MUL, o, s[0], a, s[1], a, s[1], n);
        else
            f32_binary_loop(XT_POW, o, s[0], a, s[1], b, s[2], n);
        break;
    case XT_MAXIMUM: f32_binary_loop(XT_MAXIMUM, o, s[0], a, s[1], b, s[2], n); break;
    case XT_MINIMUM: f32_binary_loop(XT_MINIMUM, o, s[0], a, s[1], b, s[2], n); break;
    }
}

/* x ^ y in int64, wrapping on overflow. A negative y gives 1/x^|y| truncated
 * toward zero (so 0 for |x| > 1, and 0 for x == 0; PyTorch refuses it). */
static inline int64_t i64_pow(int64_t x, int64_t y)
{
    if (y < 0) return x == 1 ? 1 : x == -1 ? ((y & 1) ? -1 : 1) : 0;
    uint64_t r = 1, base = (uint64_t)x;
    for (; y; y >>= 1) {
        if (y & 1) r *= base;
        base *= base;
    }
    return (int64_t)r;
}

/* int64 arithmetic wraps on overflow (computed unsigned: no undefined behaviour). */
static void i64_binary_run(const void *ctx, char *const *p, const int64_t *s, int64_t n)
{
    int64_t *o = (int64_t *)p[0];
    const int64_t *a = (const int64_t *)p[1], *b = (const int64_t *)p[2];
    int64_t so = s[0], sa = s[1], sb = s[2];
    switch (*(const int32_t *)ctx) {
    case XT_ADD:
        for (int64_t i = 0; i < n; i++)
            o[i * so] = (int64_t)((uint64_t)a[i * sa] + (uint64_t)b[i * sb]);
        break;
    case XT_SUB:
        for (int64_t i = 0; i < n; i++)
            o[i * so] = (int64_t)((uint64_t)a[i * sa] - (uint64_t)b[i * sb]);
        break;
    case XT_MUL:
        for (int64_t i = 0; i < n; i++)
            o[i * so] = (int64_t)((uint64_t)a[i * sa] * (uint64_t)b[i * sb]);
        break;
    case XT_POW:
        for (int64_t i = 0; i < n; i++) o[i * so] = i64_pow(a[i * sa], b[i * sb]);
        break;
    case XT_MAXIMUM:
        for (int64_t i = 0; i < n; i++) o[i * so] = a[i * sa] > b[i * sb] ? a[i * sa] : b[i * sb];
        break;
    case XT_MINIMUM:
        for (int64_t i = 0; i < n; i++) o[i * so] = a[i * sa] < b[i * sb] ? a[i * sa] : b[i * sb];
        break;
    }
}

ALWAYS_INLINE uint8_t f32_compare(int32_t op, float x, float y)
{
    switch (op) {
    case XT_EQ: return x == y;
    case XT_NE: return x != y;
    case XT_LT: return x < y;
    case XT_LE: return x <= y;
    case XT_GT: return x > y;
    default: return x >= y;
    }
}

ALWAYS_INLINE void f32_compare_loop(int32_t op, uint8_t *o, int64_t so, const float *a,
                                    int64_t sa, const float *b, int64_t sb, int64_t n)
{
    if (so == 1 && sa == 1 && sb == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = f32_compare(op, a[i], b[i]);
    } else if (so == 1 && sa == 1 && sb == 0) {
        const float y = *b;
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = f32_compare(op, a[i], y);
    } else {
        for (int64_t i = 0; i < n; i++) o[i * so] = f32_compare(op, a[i * sa], b[i * sb]);
    }
}

static void f32_compare_run(const void *ctx, char *const *p, const int64_t *s, int64_t n)
{
    uint8_t *o = (uint8_t *)p[0];
    const float *a = (const float *)p[1], *b = (const float *)p[2];
    switch (*(const int32_t *)ctx) {
    case XT_EQ: f32_compare_loop(XT_EQ, o, s[0], a, s[1], b, s[2], n); break;
    case XT_NE: f32_compare_loop(XT_NE, o, s[0], a, s[1], b, s[2], n); break;
    case XT_LT: f32_compare_loop(XT_LT, o, s[0], a, s[1], b, s[2], n); break;
    case XT_LE: f32_compare_loop(XT_LE, o, s[0], a, s[1], b, s[2], n); break;
    case XT_GT: f32_compare_loop(XT_GT, o, s[0], a, s[1], b, s[2], n); break;
    case XT_GE: f32_compare_loop(XT_GE, o, s[0], a, s[1], b, s[2], n); break;
    }
}

static void i64_compare_run(const void *ctx, char *const *p, const int64_t *s, int64_t n)
{
    uint8_t *o = (uint8_t *)p[0];
    const int64_t *a = (const int64_t *)p[1], *b = (const int64_t *)p[2];
    int64_t so = s[0], sa = s[1], sb = s[2];
    switch (*(const int32_t *)ctx) {
    case XT_EQ: for (int64_t i = 0; i < n; i++) o[i * so] = a[i * sa] == b[i * sb]; break;
    case XT_NE: for (int64_t i = 0; i < n; i++) o[i * so] = a[i * sa] != b[i * sb]; break;
    case XT_LT: for (int64_t i = 0; i < n; i++) o[i * so] = a[i * sa] < b[i * sb]; break;
    case XT_LE: for (int64_t i = 0; i < n; i++) o[i * so] = a[i * sa] <= b[i * sb]; break;
    case XT_GT: for (int64_t i = 0; i < n; i++) o[i * so] = a[i * sa] > b[i * sb]; break;
    case XT_GE: for (int64_t i = 0; i < n; i++) o[i * so] = a[i * sa] >= b[i * sb]; break;
    }
}

/* out = a op b, a and b of one dtype (float32 or int64), broadcast to out. */
static void binary_kernel(int32_t op, xt_tensor *out, xt_tensor *a, xt_tensor *b)
{
    xt_loop l;
    xt_loop_init(&l, 3, (xt_tensor *[]){out, a, b});
    bool f = a->dtype == XT_FLOAT32;
    xt_run_fn fn = is_compare(op) ? (f ? f32_compare_run : i64_compare_run)
                                  : (f ? f32_binary_run : i64_binary_run);
    xt_loop_run(&l, fn, &op);
}

/* ---- binary backward ------------------------------------------------------------
 * Gradients come out in the broadcast output shape; the engine sums them down
 * to each input's shape. grad_kernel computes d = f(dout, p, q) for one of the
 * formulas below, p and q broadcasting to dout. */

enum grad_formula {
    GRAD_MUL,       /* d(a*b)/da: g * p, p = b (and symmetrically for b) */
    GRAD_DIV_A,     /* d(a/b)/da: g / q, q = b */
    GRAD_DIV_B,     /* d(a/b)/db: -g * p / q^2, p = a, q = b */
    GRAD_POW_BASE,  /* d(a^b)/da: g * b * a^(b-1), 0 where b == 0 */
    GRAD_POW_EXP,   /* d(a^b)/db: g * a^b * log(a), 0 where a == 0 and b >= 0 */
    GRAD_MAX,       /* p: this input, q: the other; ties split the gradient */
    GRAD_MIN
};

ALWAYS_INLINE float f32_grad(int32_t formula, float g, float p, float q)
{
    switch (formula) {
    case GRAD_MUL: return g * p;
    case GRAD_DIV_A: return g / q;
    case GRAD_DIV_B: return -g * p / (q * q);
    case GRAD_POW_BASE: return q == 0 ? 0.0f : g * q * powf(p, q - 1);
    case GRAD_POW_EXP: return p == 0 && q >= 0 ? 0.0f : g * powf(p, q) * logf(p);
    case GRAD_MAX: return g * (p > q ? 1.0f : p == q ? 0.5f : 0.0f);
    default: return g * (p < q ? 1.0f : p == q ? 0.5f : 0.0f);
    }
}

ALWAYS_INLINE void f32_grad_loop(int32_t formula, char *const *p, const int64_t *s, int64_t n)
{
    float *d = (float *)p[0];
    const float *g = (const float *)p[1], *x = (const float *)p[2], *y = (const float *)p[3];
    if (s[0] == 1 && s[1] == 1 && s[2] == 1 && s[3] == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) d[i] = f32_grad(formula, g[i], x[i], y[i]);
    } else if (s[0] == 1 && s[1] == 1 && s[2] == 1 && s[3] == 0) {
        const float y0 = *y;
#pragma omp simd
        for (int64_t i = 0; i < n; i++) d[i] = f32_grad(formula, g[i], x[i], y0);
    } else if (s[0] == 1 && s[1] == 1 && s[2] == 0) {
        const float x0 = *x;
        for (int64_t i = 0; i < n; i++) d[i] = f32_grad(formula, g[i], x0, y[i * s[3]]);
    } else {
        for (int64_t i = 0; i < n; i++)
            d[i * s[0]] = f32_grad(formula, g[i * s[1]], x[i * s[2]], y[i * s[3]]);
    }
}

static void f32_grad_run(const void *ctx, char *const *p, const int64_t *s, int64_t n)
{
    switch (*(const int32_t *)ctx) {
    case GRAD_MUL: f32_grad_loop(GRAD_MUL, p, s, n); break;
    case GRAD_DIV_A: f32_grad_loop(GRAD_DIV_A, p, s, n); break;
    case GRAD_DIV_B: f32_grad_loop(GRAD_DIV_B, p, s, n); break;
    case GRAD_POW_BASE: f32_grad_loop(GRAD_POW_BASE, p, s, n); break;
    case GRAD_POW_EXP: f32_grad_loop(GRAD_POW_EXP, p, s, n); break;
    case GRAD_MAX: f32_grad_loop(GRAD_MAX, p, s, n); break;
    case GRAD_MIN: f32_grad_loop(GRAD_MIN, p, s, n); break;
    }
}

/* A new float32 tensor shaped like dout: formula(dout, p, q). */
static xt_tensor *grad_kernel(int32_t formula, xt_tensor *dout, xt_tensor *p, xt_tensor *q)
{
    xt_tensor *d = xt_empty(dout->ndim, dout->shape, XT_FLOAT32);
    if (!d) return NULL;
    xt_loop l;
    xt_loop_init(&l, 4, (xt_tensor *[]){d, dout, p, q});
    xt_loop_run(&l, f32_grad_run, &formula);
    return d;
}

static xt_status add_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    for (int32_t i = 0; i < 2; i++) {
        if (!xt_node_needs(node, i)) continue;
        xt_tensor_retain(dout);
        dinputs[i] = dout;
    }
    return XT_OK;
}

static xt_status sub_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    if (xt_node_needs(node, 0)) {
        xt_tensor_retain(dout);
        dinputs[0] = dout;
    }
    if (xt_node_needs(node, 1) && !(dinputs[1] = xt_unary(XT_NEG, dout))) return xt_last_status();
    return XT_OK;
}

/* Saved: a when b needs grad, then b when a needs grad (da = g b, db = g a). */
static xt_status mul_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    int32_t k = 0;
    if (xt_node_needs(node, 1)) {
        xt_tensor *a = xt_node_saved(node, k++);
        if (!a || !(dinputs[1] = grad_kernel(GRAD_MUL, dout, a, a))) return xt_last_status();
    }
    if (xt_node_needs(node, 0)) {
        xt_tensor *b = xt_node_saved(node, k++);
        if (!b || !(dinputs[0] = grad_kernel(GRAD_MUL, dout, b, b))) return xt_last_status();
    }
    return XT_OK;
}

/* Saved: a when b needs grad, then b (da = g / b, db = -g a / b^2). */
static xt_status div_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    int32_t k = 0;
    xt_tensor *a = NULL;
    if (xt_node_needs(node, 1) && !(a = xt_node_saved(node, k++))) return xt_last_status();
    xt_tensor *b = xt_node_saved(node, k);
    if (!b) return xt_last_status();
    if (xt_node_needs(node, 0) && !(dinputs[0] = grad_kernel(GRAD_DIV_A, dout, b, b)))
        return xt_last_status();
    if (xt_node_needs(node, 1) && !(dinputs[1] = grad_kernel(GRAD_DIV_B, dout, a, b)))
        return xt_last_status();
    return XT_OK;
}

/* Saved: a, b (here and in maximum/minimum). */
static xt_status pow_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *a = xt_node_saved(node, 0), *b = a ? xt_node_saved(node, 1) : NULL;
    if (!b) return xt_last_status();
    if (xt_node_needs(node, 0) && !(dinputs[0] = grad_kernel(GRAD_POW_BASE, dout, a, b)))
        return xt_last_status();
    if (xt_node_needs(node, 1) && !(dinputs[1] = grad_kernel(GRAD_POW_EXP, dout, a, b)))
        return xt_last_status();
    return XT_OK;
}

/* maximum/minimum: the gradient goes to the larger (smaller) input, half to each on a tie. */
static xt_status extreme_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs,
                                  int32_t formula)
{
    xt_tensor *a = xt_node_saved(node, 0), *b = a ? xt_node_saved(node, 1) : NULL;
    if (!b) return xt_last_status();
    if (xt_node_needs(node, 0) && !(dinputs[0] = grad_kernel(formula, dout, a, b)))
        return xt_last_status();
    if (xt_node_needs(node, 1) && !(dinputs[1] = grad_kernel(formula, dout, b, a)))
        return xt_last_status();
    return XT_OK;
}

static xt_status maximum_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    return extreme_backward(node, dout, dinputs, GRAD_MAX);
}

static xt_status minimum_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    return extreme_backward(node, dout, dinputs, GRAD_MIN);
}

static const xt_backward_fn binary_backwards[XT_EQ] = {
    add_backward, sub_backward, mul_backward, div_backward,
    pow_backward, maximum_backward, minimum_backward};

/* ---- binary forward --------------------------------------------------------------- */

/* out = a op b without autograd. *ac and *bc (when given) receive a and b in the
 * compute dtype, new references, for the caller to save. */
static xt_tensor *binary_compute(int32_t op, xt_tensor *a, xt_tensor *b, xt_tensor **ac_out,
                                 xt_tensor **bc_out)
{
    const char *name = binary_names[op];
    int32_t nd;
    int64_t shape[XT_MAX_DIMS];
    if (xt_broadcast_shapes(a->ndim, a->shape, b->ndim, b->shape, &nd, shape, name)) return NULL;
    int32_t ct = compute_dtype(op, a->dtype, b->dtype);
    xt_tensor *ac = as_dtype(a, ct);
    xt_tensor *bc = ac ? as_dtype(b, ct) : NULL;
    xt_tensor *out = bc ? xt_empty(nd, shape, is_compare(op) ? XT_UINT8 : ct) : NULL;
    if (out) binary_kernel(op, out, ac, bc);
    if (out && ac_out) {
        *ac_out = ac;
        *bc_out = bc;
    } else {
        xt_tensor_release(ac);
        xt_tensor_release(bc);
    }
    return out;
}

/* Which of a (bit 0) and b (bit 1) the backward needs: only what the inputs
 * that require grad use, so x * w does not keep x alive when only w learns. */
static uint32_t binary_saves(int32_t op, const xt_tensor *a, const xt_tensor *b)
{
    switch (op) {
    case XT_ADD: case XT_SUB: return 0;
    case XT_MUL: return (b->requires_grad ? 1u : 0u) | (a->requires_grad ? 2u : 0u);
    case XT_DIV: return (b->requires_grad ? 1u : 0u) | 2u;
    default: return 3;
    }
}

/* a op b with autograd; the shared body of xt_binary and xt_binary_scalar. */
static xt_tensor *binary_forward(int32_t op, xt_tensor *a, xt_tensor *b)
{
    xt_tensor *ac = NULL, *bc = NULL;
    xt_tensor *out = binary_compute(op, a, b, &ac, &bc);
    if (out && !is_compare(op) && out->dtype == XT_FLOAT32 &&
        !xt_record(out, binary_names[op], binary_backwards[op], 2, (xt_tensor *[]){ac, bc},
                   binary_saves(op, ac, bc))) {
        xt_tensor_release(out);
        out = NULL;
    }
    xt_tensor_release(ac);
    xt_tensor_release(bc);
    return out;
}

xt_tensor *xt_binary(int32_t op, xt_tensor *a, xt_tensor *b)
{
    if (!check_binary_op(op, "binary")) return NULL;
    if (!a || !b)
        return xt_fail_null(XT_ERR_ARG, "%s: %s input is NULL", binary_names[op],
                            a ? "second" : "first");
    return binary_forward(op, a, b);
}

xt_tensor *xt_binary_scalar(int32_t op, xt_tensor *a, double s, int32_t reversed)
{
    if (!check_binary_op(op, "binary_scalar")) return NULL;
    if (!a) return xt_fail_null(XT_ERR_ARG, "%s: input is NULL", binary_names[op]);
    xt_tensor *st = scalar_tensor(a->dtype, s);
    if (!st) return NULL;
    xt_tensor *out = reversed ? binary_forward(op, st, a) : binary_forward(op, a, st);
    xt_tensor_release(st);
    return out;
}

/* ---- in place ---------------------------------------------------------------------- */

/* Does b read memory that writing a would change before b is read? An identical view is fine. */
static bool overlaps(const xt_tensor *a, const xt_tensor *b)
{
    if (a->storage != b->storage) return false;
    if (a->data != b->data || a->ndim != b->ndim) return true;
    for (int32_t i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i] || (a->shape[i] != 1 && a->strides[i] != b->strides[i]))
            return true;
    return false;
}

static xt_status binary_inplace(int32_t op, xt_tensor *a, xt_tensor *b)
{
    const char *name = binary_inplace_names[op];
    int32_t nd;
    int64_t shape[XT_MAX_DIMS];
    if (xt_broadcast_shapes(a->ndim, a->shape, b->ndim, b->shape, &nd, shape, name))
        return xt_last_status();
    if (nd != a->ndim || memcmp(shape, a->shape, sizeof(int64_t) * (size_t)nd) != 0) {
        char sa[XT_SHAPE_STR], sb[XT_SHAPE_STR];
        return xt_fail(XT_ERR_SHAPE,
                       "%s: operand of shape %s does not broadcast to the shape %s written in "
                       "place", name, xt_shape_str(sb, b->ndim, b->shape),
                       xt_shape_str(sa, a->ndim, a->shape));
    }
    for (int32_t d = 0; d < a->ndim; d++)
        if (a->strides[d] == 0 && a->shape[d] > 1)
            return xt_fail(XT_ERR_ARG, "%s: the tensor written in place is expanded (stride 0 "
                           "in dim %d), so several elements share memory; clone it first",
                           name, d);
    if (xt_check_inplace(a, name)) return xt_last_status();
    int32_t ct = compute_dtype(op, a->dtype, b->dtype);
    if (!is_compare(op) && a->dtype != XT_FLOAT32 && ct == XT_FLOAT32)
        return xt_fail(XT_ERR_DTYPE, "%s: the result is float32 and cannot be written into a %s "
                       "tensor", name, xt_dtype_name(a->dtype));
    if (!is_compare(op) && a->dtype == ct) {
        /* the fast path: float32 op= anything, int64 op= int64/uint8 */
        xt_tensor *bc;
        if (b->dtype == ct && !overlaps(a, b)) {
            xt_tensor_retain(b);
            bc = b;
        } else {
            bc = xt_empty(b->ndim, b->shape, ct);
            if (!bc) return xt_last_status();
            xt_copy_kernel(bc, b);
        }
        binary_kernel(op, a, a, bc);
        xt_tensor_release(bc);
    } else {
        /* comparisons write 0/1 in a's dtype; uint8 arithmetic wraps modulo 256 */
        xt_tensor *out = binary_compute(op, a, b, NULL, NULL);
        if (!out) return xt_last_status();
        xt_copy_kernel(a, out);
        xt_tensor_release(out);
    }
    xt_bump_version(a);
    return XT_OK;
}

xt_status xt_binary_(int32_t op, xt_tensor *a, xt_tensor *b)
{
    if (!check_binary_op(op, "binary_")) return xt_last_status();
    if (!a || !b)
        return xt_fail(XT_ERR_ARG, "%s: %s input is NULL", binary_inplace_names[op],
                       a ? "second" : "first");
    return binary_inplace(op, a, b);
}

xt_status xt_binary_scalar_(int32_t op, xt_tensor *a, double s)
{
    if (!check_binary_op(op, "binary_scalar_")) return xt_last_status();
    if (!a) return xt_fail(XT_ERR_ARG, "%s: input is NULL", binary_inplace_names[op]);
    xt_tensor *st = scalar_tensor(a->dtype, s);
    if (!st) return xt_last_status();
    xt_status status = binary_inplace(op, a, st);
    xt_tensor_release(st);
    return status;
}

/* ---- where and masked_fill ------------------------------------------------------------
 * out = cond ? a : b, all three broadcast; a and b of one dtype (any). */

static void where_f32_run(const void *ctx, char *const *p, const int64_t *s, int64_t n)
{
    float *o = (float *)p[0];
    const uint8_t *c = (const uint8_t *)p[1];
    const float *a = (const float *)p[2], *b = (const float *)p[3];
    if (s[0] == 1 && s[1] == 1 && s[2] == 1 && s[3] == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = c[i] ? a[i] : b[i];
    } else if (s[0] == 1 && s[1] == 1 && s[2] == 0 && s[3] == 1) {
        const float a0 = *a;
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = c[i] ? a0 : b[i];
    } else {
        for (int64_t i = 0; i < n; i++) o[i * s[0]] = c[i * s[1]] ? a[i * s[2]] : b[i * s[3]];
    }
}

static void where_i64_run(const void *ctx, char *const *p, const int64_t *s, int64_t n)
{
    int64_t *o = (int64_t *)p[0];
    const uint8_t *c = (const uint8_t *)p[1];
    const int64_t *a = (const int64_t *)p[2], *b = (const int64_t *)p[3];
    for (int64_t i = 0; i < n; i++) o[i * s[0]] = c[i * s[1]] ? a[i * s[2]] : b[i * s[3]];
}

static void where_u8_run(const void *ctx, char *const *p, const int64_t *s, int64_t n)
{
    uint8_t *o = (uint8_t *)p[0];
    const uint8_t *c = (const uint8_t *)p[1];
    const uint8_t *a = (const uint8_t *)p[2], *b = (const uint8_t *)p[3];
    for (int64_t i = 0; i < n; i++) o[i * s[0]] = c[i * s[1]] ? a[i * s[2]] : b[i * s[3]];
}

static void where_kernel(xt_tensor *out, xt_tensor *cond, xt_tensor *a, xt_tensor *b)
{
    xt_loop l;
    xt_loop_init(&l, 4, (xt_tensor *[]){out, cond, a, b});
    xt_run_fn fn = out->dtype == XT_FLOAT32 ? where_f32_run
                   : out->dtype == XT_INT64 ? where_i64_run : where_u8_run;
    xt_loop_run(&l, fn, NULL);
}

/* where(cond, dout, 0) or where(cond, 0, dout), shaped like dout. */
static xt_tensor *masked_grad(xt_tensor *cond, xt_tensor *dout, bool keep_where_true)
{
    xt_tensor *zero = scalar_tensor(XT_FLOAT32, 0.0);
    if (!zero) return NULL;
    xt_tensor *d = xt_empty(dout->ndim, dout->shape, XT_FLOAT32);
    if (d) {
        if (keep_where_true) where_kernel(d, cond, dout, zero);
        else where_kernel(d, cond, zero, dout);
    }
    xt_tensor_release(zero);
    return d;
}

/* Saved: cond. Inputs: cond, a, b. */
static xt_status where_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *cond = xt_node_saved(node, 0);
    if (!cond) return xt_last_status();
    if (xt_node_needs(node, 1) && !(dinputs[1] = masked_grad(cond, dout, true)))
        return xt_last_status();
    if (xt_node_needs(node, 2) && !(dinputs[2] = masked_grad(cond, dout, false)))
        return xt_last_status();
    return XT_OK;
}

xt_tensor *xt_where(xt_tensor *cond, xt_tensor *a, xt_tensor *b)
{
    if (!cond || !a || !b)
        return xt_fail_null(XT_ERR_ARG, "where: %s is NULL",
                            !cond ? "condition" : !a ? "first input" : "second input");
    if (cond->dtype != XT_UINT8)
        return xt_fail_null(XT_ERR_DTYPE, "where: condition must be uint8, got %s",
                            xt_dtype_name(cond->dtype));
    int32_t nd1, nd;
    int64_t shape1[XT_MAX_DIMS], shape[XT_MAX_DIMS];
    if (xt_broadcast_shapes(cond->ndim, cond->shape, a->ndim, a->shape, &nd1, shape1, "where") ||
        xt_broadcast_shapes(nd1, shape1, b->ndim, b->shape, &nd, shape, "where"))
        return NULL;
    int32_t dtype = a->dtype == b->dtype ? a->dtype : compute_dtype(XT_ADD, a->dtype, b->dtype);
    xt_tensor *ac = as_dtype(a, dtype);
    xt_tensor *bc = ac ? as_dtype(b, dtype) : NULL;
    xt_tensor *out = bc ? xt_empty(nd, shape, dtype) : NULL;
    if (out) {
        where_kernel(out, cond, ac, bc);
        if (!xt_record(out, "where", where_backward, 3, (xt_tensor *[]){cond, ac, bc}, 1)) {
            xt_tensor_release(out);
            out = NULL;
        }
    }
    xt_tensor_release(ac);
    xt_tensor_release(bc);
    return out;
}

/* Saved: mask. Inputs: t, mask. */
static xt_status masked_fill_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *mask = xt_node_saved(node, 0);
    if (!mask) return xt_last_status();
    if (xt_node_needs(node, 0) && !(dinputs[0] = masked_grad(mask, dout, false)))
        return xt_last_status();
    return XT_OK;
}

xt_tensor *xt_masked_fill(xt_tensor *t, xt_tensor *mask, double value)
{
    if (!t || !mask)
        return xt_fail_null(XT_ERR_ARG, "masked_fill: %s is NULL", !t ? "input" : "mask");
    if (mask->dtype != XT_UINT8)
        return xt_fail_null(XT_ERR_DTYPE, "masked_fill: mask must be uint8, got %s",
                            xt_dtype_name(mask->dtype));
    int32_t nd;
    int64_t shape[XT_MAX_DIMS];
    if (xt_broadcast_shapes(t->ndim, t->shape, mask->ndim, mask->shape, &nd, shape,
                            "masked_fill"))
        return NULL;
    if (nd != t->ndim || memcmp(shape, t->shape, sizeof(int64_t) * (size_t)nd) != 0) {
        char sm[XT_SHAPE_STR], st[XT_SHAPE_STR];
        return xt_fail_null(XT_ERR_SHAPE, "masked_fill: mask of shape %s does not broadcast "
                            "to the input's shape %s", xt_shape_str(sm, mask->ndim, mask->shape),
                            xt_shape_str(st, t->ndim, t->shape));
    }
    if ((t->dtype == XT_INT64 && !(fabs(value) < 9.2e18)) ||
        (t->dtype == XT_UINT8 && !(value >= 0 && value < 256)))
        return xt_fail_null(XT_ERR_ARG, "masked_fill: value %g does not fit in %s", value,
                            xt_dtype_name(t->dtype));
    int64_t unused = 1;
    xt_tensor *v = xt_full(0, &unused, t->dtype, value);
    xt_tensor *out = v ? xt_empty(t->ndim, t->shape, t->dtype) : NULL;
    if (out) {
        where_kernel(out, mask, v, t);
        if (!xt_record(out, "masked_fill", masked_fill_backward, 2, (xt_tensor *[]){t, mask},
                       2)) {
            xt_tensor_release(out);
            out = NULL;
        }
    }
    xt_tensor_release(v);
    return out;
}
