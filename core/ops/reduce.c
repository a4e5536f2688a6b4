/*
 * reduce.c: sum, mean, amax, amin, prod and logsumexp over any set of dims (xt_reduce), and
 * var (xt_var), forward and backward side by side. The kernels run on the reduction
 * engine of reduce.h; the backward passes are compositions of element-wise ops, since
 * the output gradient only has to be broadcast back over the reduced dims.
 *
 * Dtypes: float32 in, float32 out (sums in double). int64: sum, prod, amax, amin stay
 * int64 (wrapping on overflow); logsumexp computes in float32; mean and var refuse it, as
 * PyTorch does. uint8: sum and prod give int64 (a count of a 0/1 mask must not wrap at
 * 256), amax/amin give uint8, logsumexp float32.
 *
 * Shapes (x [..] with the reduced dims R; y the output; yk = y with 1 on R):
 *   sum        dx = dy broadcast over R
 *   mean       dx = dy / n broadcast over R              (n: elements per output)
 *   amax/amin  dx = dy * (x == yk) / count(x == yk)      (ties share the gradient)
 *   prod       dx = dy * prod(others); done without dividing by zero (see prod_backward)
 *   logsumexp  dx = dy * exp(x - yk)
 *   var        dx = dy * 2 (x - mean) / max(0, n - correction)
 */
#include "reduce.h"

#include <stdlib.h>
#include <string.h>

static const char *const reduce_names[XT_REDUCE_OP_COUNT] = {"sum",  "mean", "amax",
                                                              "amin", "prod", "logsumexp"};

/* iargs of every node here: 0 op, 1 reduce mask, 2 keepdim */
enum { ARG_OP = 0, ARG_MASK = 1, ARG_KEEPDIM = 2 };

/* ---- backward ------------------------------------------------------------------------ */

/* The node's input shape and dout seen with 1 on the reduced dims, or broadcast (full). */
static xt_tensor *dout_view(const xt_node *node, xt_tensor *dout, bool full)
{
    const xt_edge *e = &node->inputs[0];
    return xt_reduce_keep_view(dout, e->ndim, e->shape, (uint32_t)node->iargs[ARG_MASK],
                               (int32_t)node->iargs[ARG_KEEPDIM], full);
}

/* Runs a chain of element-wise steps, releasing the temporaries; fails cleanly. */
static xt_status finish(xt_tensor **dinputs, xt_tensor *result, int32_t n, xt_tensor **temps)
{
    for (int32_t i = 0; i < n; i++) xt_tensor_release(temps[i]);
    if (!result) return xt_last_status();
    dinputs[0] = result;
    return XT_OK;
}

static xt_tensor *reduce_masked(int32_t op, xt_tensor *x, uint32_t mask, int32_t keepdim);

static xt_status sum_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    dinputs[0] = dout_view(node, dout, true);
    return dinputs[0] ? XT_OK : xt_last_status();
}

static xt_status mean_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *scaled = xt_binary_scalar(XT_MUL, dout, node->fargs[0], 0);
    xt_tensor *dx = scaled ? dout_view(node, scaled, true) : NULL;
    return finish(dinputs, dx, 1, &scaled);
}

/* saved: 0 x, 1 y */
static xt_status extreme_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *x = xt_node_saved(node, 0), *y = xt_node_saved(node, 1);
    if (!x || !y) return xt_last_status();
    xt_tensor *t[5] = {0};
    t[0] = dout_view(node, y, false);                                  /* yk */
    t[1] = t[0] ? xt_binary(XT_EQ, x, t[0]) : NULL;                    /* hit, uint8 [x] */
    t[2] = t[1] ? reduce_masked(XT_SUM, t[1], (uint32_t)node->iargs[ARG_MASK], 1) : NULL;
    t[3] = t[2] ? dout_view(node, dout, false) : NULL;                 /* dyk */
    t[4] = t[3] ? xt_binary(XT_DIV, t[3], t[2]) : NULL;                /* dyk / count */
    xt_tensor *dx = t[4] ? xt_binary(XT_MUL, t[1], t[4]) : NULL;
    return finish(dinputs, dx, 5, t);
}

/*
 * prod: with z zeros in a reduction, p the product of its non-zero elements and g = dy*p,
 *   z == 0: dx = g / x;   z == 1: dx = g at the zero, 0 elsewhere;   z >= 2: dx = 0.
 * As element-wise steps: dx = (g * [z == 0]) / x1 + (g * [z == 1]) * [x == 0], where
 * x1 is x with its zeros replaced by 1 (so nothing divides by zero).
 * saved: 0 x
 */
static xt_status prod_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *x = xt_node_saved(node, 0);
    if (!x) return xt_last_status();
    uint32_t mask = (uint32_t)node->iargs[ARG_MASK];
    xt_tensor *t[12] = {0};
    int32_t n = 0;
    xt_tensor *dx = NULL;
    do {
        xt_tensor *is_zero = t[n++] = xt_binary_scalar(XT_EQ, x, 0.0, 0);
        if (!is_zero) break;
        xt_tensor *x1 = t[n++] = xt_masked_fill(x, is_zero, 1.0);
        if (!x1) break;
        xt_tensor *p = t[n++] = reduce_masked(XT_PROD, x1, mask, 1);
        xt_tensor *z = t[n++] = p ? reduce_masked(XT_SUM, is_zero, mask, 1) : NULL;
        xt_tensor *dyk = t[n++] = z ? dout_view(node, dout, false) : NULL;
        xt_tensor *g = t[n++] = dyk ? xt_binary(XT_MUL, dyk, p) : NULL;
        xt_tensor *z0 = t[n++] = g ? xt_binary_scalar(XT_EQ, z, 0.0, 0) : NULL;
        xt_tensor *z1 = t[n++] = z0 ? xt_binary_scalar(XT_EQ, z, 1.0, 0) : NULL;
        xt_tensor *g0 = t[n++] = z1 ? xt_binary(XT_MUL, g, z0) : NULL;
        xt_tensor *g1 = t[n++] = g0 ? xt_binary(XT_MUL, g, z1) : NULL;
        xt_tensor *a = t[n++] = g1 ? xt_binary(XT_DIV, g0, x1) : NULL;
        xt_tensor *b = t[n++] = a ? xt_binary(XT_MUL, g1, is_zero) : NULL;
        dx = b ? xt_binary(XT_ADD, a, b) : NULL;
    } while (0);
    return finish(dinputs, dx, n, t);
}

/* saved: 0 x, 1 y */
static xt_status logsumexp_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *x = xt_node_saved(node, 0), *y = xt_node_saved(node, 1);
    if (!x || !y) return xt_last_status();
    xt_tensor *t[4] = {0};
    t[0] = dout_view(node, y, false);
    t[1] = t[0] ? xt_binary(XT_SUB, x, t[0]) : NULL;
    t[2] = t[1] ? xt_unary(XT_EXP, t[1]) : NULL;
    t[3] = t[2] ? dout_view(node, dout, false) : NULL;
    xt_tensor *dx = t[3] ? xt_binary(XT_MUL, t[2], t[3]) : NULL;
    return finish(dinputs, dx, 4, t);
}

/* ---- forward ------------------------------------------------------------------------- */

/* The dtype op computes in and gives for an input dtype; -1 when refused. */
static int32_t result_dtype(int32_t op, int32_t dtype)
{
    if (dtype == XT_FLOAT32 || op == XT_LOGSUMEXP) return XT_FLOAT32;
    if (op == XT_MEAN) return -1;
    if (dtype == XT_UINT8 && (op == XT_MAX || op == XT_MIN)) return XT_UINT8;
    return XT_INT64;
}

/* logsumexp = m + log(sum exp(x - m)), m the max; an infinite or NaN m shifts by 0 so the
 * result is +-inf (or NaN) as it should be, instead of inf - inf. */
static double lse_shift(xt_racc max, int64_t n_red) { return isfinite(max.f) ? max.f : 0.0; }

static xt_status run_logsumexp(const xt_rplan *plan, double *acc)
{
    xt_storage *hold1, *hold2 = NULL;
    double *shift = xt_scratch(plan->n_out, &hold1, "logsumexp");
    double *max = shift ? xt_scratch(plan->n_out, &hold2, "logsumexp") : NULL;
    xt_status st = max ? xt_rplan_run2(plan, &xt_rk_f32_max, max, lse_shift, shift,
                                       &xt_rk_f32_sumexp, acc)
                       : xt_last_status();
    for (int64_t o = 0; st == XT_OK && o < plan->n_out; o++) acc[o] = log(acc[o]) + shift[o];
    xt_storage_release(hold1);
    xt_storage_release(hold2);
    return st;
}

/* Reduces x (float32 or int64) into acc (n_out doubles or int64s). */
static xt_status reduce_into(int32_t op, const xt_rplan *plan, int32_t dtype, void *acc)
{
    if (dtype == XT_INT64) {
        const xt_rkernel *k = op == XT_PROD  ? &xt_rk_i64_prod
                              : op == XT_MAX ? &xt_rk_i64_max
                              : op == XT_MIN ? &xt_rk_i64_min
                                             : &xt_rk_i64_sum;
        return xt_rplan_run(plan, k, acc, NULL);
    }
    switch (op) {
    case XT_PROD: return xt_rplan_run(plan, &xt_rk_f32_prod, acc, NULL);
    case XT_MAX: return xt_rplan_run(plan, &xt_rk_f32_max, acc, NULL);
    case XT_MIN: return xt_rplan_run(plan, &xt_rk_f32_min, acc, NULL);
    case XT_LOGSUMEXP: return run_logsumexp(plan, acc);
    default: return xt_rplan_run(plan, &xt_rk_f32_sum, acc, NULL);
    }
}

/* The forward without autograd: x any dtype, mask already checked. */
static xt_tensor *reduce_masked(int32_t op, xt_tensor *x, uint32_t mask, int32_t keepdim)
{
    const char *name = reduce_names[op];
    int32_t out_dtype = result_dtype(op, x->dtype);
    if (out_dtype < 0)
        return xt_fail_null(XT_ERR_DTYPE, "%s: expected float32, got %s (convert with :float())",
                            name, xt_dtype_name(x->dtype));
    if (op == XT_MAX || op == XT_MIN)
        for (int32_t d = 0; d < x->ndim; d++)
            if (((mask >> d) & 1u) && x->shape[d] == 0)
                return xt_fail_null(XT_ERR_SHAPE,
                                    "%s: cannot reduce over dim %lld of size 0 (%s of no "
                                    "elements is undefined)",
                                    name, (long long)xt_shown(d), name);
    int32_t ndim;
    int64_t shape[XT_MAX_DIMS];
    xt_reduce_shape(x, mask, keepdim, &ndim, shape);
    xt_tensor *out = xt_empty(ndim, shape, out_dtype);
    if (!out) return NULL;

    /* the dtype the kernels read: float32 or int64 */
    int32_t compute = out_dtype == XT_UINT8 ? XT_INT64 : out_dtype;
    xt_tensor *xin = x->dtype == compute ? (xt_tensor_retain(x), x) : xt_to_dtype(x, compute);
    xt_rplan plan;
    xt_tensor *src = xin ? xt_rplan_make(&plan, xin, mask) : NULL;
    xt_tensor_release(xin);
    int64_t n_out = xt_numel(out);
    xt_storage *hold = NULL;
    int64_t *acc = src ? xt_scratch(n_out, &hold, name) : NULL;
    xt_status st = acc ? reduce_into(op, &plan, compute, acc) : xt_last_status();
    if (st == XT_OK) {
        if (out_dtype == XT_FLOAT32) {
            const double *a = (const double *)acc;
            double scale = op == XT_MEAN ? 1.0 / (double)plan.n_red : 1.0;
            float *po = out->data;
            if (op == XT_MEAN && plan.n_red == 0) scale = NAN;
#pragma omp parallel for simd if (n_out > XT_PARALLEL_GRAIN)
            for (int64_t o = 0; o < n_out; o++) po[o] = (float)(a[o] * scale);
        } else if (out_dtype == XT_INT64) {
            memcpy(out->data, acc, sizeof(int64_t) * (size_t)n_out);
        } else {
            uint8_t *po = out->data;
            for (int64_t o = 0; o < n_out; o++) po[o] = (uint8_t)acc[o];
        }
    }
    xt_storage_release(hold);
    xt_tensor_release(src);
    if (st != XT_OK) {
        xt_tensor_release(out);
        return NULL;
    }
    return out;
}

static const xt_backward_fn reduce_backwards[XT_REDUCE_OP_COUNT] = {
    sum_backward, mean_backward, extreme_backward, extreme_backward, prod_backward,
    logsumexp_backward};

/* What each backward keeps: x (bit 0) and the output. */
static uint32_t reduce_saves(int32_t op)
{
    switch (op) {
    case XT_MAX:
    case XT_MIN:
    case XT_LOGSUMEXP: return 1u | XT_SAVE_OUT;
    case XT_PROD: return 1u;
    default: return 0;
    }
}

static void set_args(xt_tensor *out, int32_t op, uint32_t mask, int32_t keepdim, double f0)
{
    if (!out->grad_fn) return;
    out->grad_fn->iargs[ARG_OP] = op;
    out->grad_fn->iargs[ARG_MASK] = mask;
    out->grad_fn->iargs[ARG_KEEPDIM] = keepdim != 0;
    out->grad_fn->fargs[0] = f0;
}

xt_tensor *xt_reduce(int32_t op, xt_tensor *x, int32_t ndims, const int32_t *dims,
                     int32_t keepdim)
{
    if (op < 0 || op >= XT_REDUCE_OP_COUNT)
        return xt_fail_null(XT_ERR_ARG, "reduce: unknown reduction op %d", op);
    const char *name = reduce_names[op];
    if (!x) return xt_fail_null(XT_ERR_ARG, "%s: input is NULL", name);
    uint32_t mask;
    if (xt_reduce_mask(x, ndims, dims, name, &mask) != XT_OK) return NULL;
    xt_tensor *out = reduce_masked(op, x, mask, keepdim);
    if (!out || out->dtype != XT_FLOAT32 || x->dtype != XT_FLOAT32) return out;
    if (!xt_record(out, name, reduce_backwards[op], 1, &x, reduce_saves(op))) {
        xt_tensor_release(out);
        return NULL;
    }
    int64_t n = xt_numel(x) / (xt_numel(out) > 0 ? xt_numel(out) : 1);
    set_args(out, op, mask, keepdim, n > 0 ? 1.0 / (double)n : 0.0);
    return out;
}

/* ---- var ----------------------------------------------------------------------------- */

/* saved: 0 x, 1 mean (shaped like the output); fargs[0] = 2 / max(0, n - correction) */
static xt_status var_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *x = xt_node_saved(node, 0), *mean = xt_node_saved(node, 1);
    if (!x || !mean) return xt_last_status();
    xt_tensor *t[4] = {0};
    t[0] = dout_view(node, mean, false);
    t[1] = t[0] ? xt_binary(XT_SUB, x, t[0]) : NULL;                         /* x - mean */
    t[2] = t[1] ? xt_binary_scalar(XT_MUL, dout, node->fargs[0], 0) : NULL;  /* dy * 2/(n-c) */
    t[3] = t[2] ? dout_view(node, t[2], false) : NULL;
    xt_tensor *dx = t[3] ? xt_binary(XT_MUL, t[1], t[3]) : NULL;
    return finish(dinputs, dx, 4, t);
}

/* two passes (mean, then squared deviations from it): exact where one pass cancels */
static double mean_of(xt_racc sum, int64_t n_red) { return sum.f / (double)n_red; }

xt_tensor *xt_var(xt_tensor *x, int32_t ndims, const int32_t *dims, double correction,
                  int32_t keepdim)
{
    if (!x) return xt_fail_null(XT_ERR_ARG, "var: input is NULL");
    if (x->dtype != XT_FLOAT32)
        return xt_fail_null(XT_ERR_DTYPE, "var: expected float32, got %s (convert with :float())",
                            xt_dtype_name(x->dtype));
    if (!isfinite(correction))
        return xt_fail_null(XT_ERR_ARG, "var: correction must be finite, got %g", correction);
    uint32_t mask;
    if (xt_reduce_mask(x, ndims, dims, "var", &mask) != XT_OK) return NULL;
    int32_t ndim;
    int64_t shape[XT_MAX_DIMS];
    xt_reduce_shape(x, mask, keepdim, &ndim, shape);
    xt_tensor *out = xt_empty(ndim, shape, XT_FLOAT32);
    xt_tensor *mean_t = out ? xt_empty(ndim, shape, XT_FLOAT32) : NULL;
    int64_t n_out = xt_shape_numel(ndim, shape);
    xt_storage *hold = NULL;
    double *sum = mean_t ? xt_scratch(3 * n_out, &hold, "var") : NULL;
    double *mean = sum ? sum + n_out : NULL, *ss = sum ? sum + 2 * n_out : NULL;
    xt_rplan plan;
    xt_tensor *src = sum ? xt_rplan_make(&plan, x, mask) : NULL;
    xt_status st = src ? xt_rplan_run2(&plan, &xt_rk_f32_sum, sum, mean_of, mean,
                                       &xt_rk_f32_sqdev, ss)
                       : xt_last_status();
    double n = src ? (double)plan.n_red : 0;
    double denom = n - correction > 0 ? n - correction : 0.0;
    if (st == XT_OK) {
        float *po = out->data, *pm = mean_t->data;
        for (int64_t o = 0; o < n_out; o++) {
            po[o] = (float)(ss[o] / denom);
            pm[o] = (float)mean[o];
        }
    }
    xt_storage_release(hold);
    xt_tensor_release(src);
    if (st == XT_OK && xt_needs_grad(1, &x)) {
        xt_node *node = xt_node_new("var", var_backward, 1, &x);
        if (!node || xt_node_save(node, x) != XT_OK || xt_node_save(node, mean_t) != XT_OK) {
            st = xt_last_status();
            xt_node_release(node);
        } else {
            xt_node_attach(node, out);
            set_args(out, 0, mask, keepdim, 2.0 / denom);
        }
    }
    xt_tensor_release(mean_t);
    if (st != XT_OK) {
        xt_tensor_release(out);
        return NULL;
    }
    return out;
}
