/*
 * optim.c: the optimizers' parameter updates (SGD, Adam, AdamW), each one fused pass over
 * a parameter, its gradient and its state, in place and outside autograd; and the sum of
 * squares of gradients that clip_grad_norm needs.
 *
 * The formulas are PyTorch's (torch.optim, single-tensor path), element by element in
 * float32 as PyTorch computes them, with the scalar factors (bias corrections, step size)
 * computed in double first:
 *
 *   SGD   d = g + wd p;  with momentum: b = d on the first step, else mu b + (1 - damp) d,
 *         then d = d + mu b (nesterov) or d = b;  p -= lr d
 *   Adam  g += wd p (Adam) or p *= 1 - lr wd (AdamW, decoupled);
 *         m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
 *         p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 *
 * Operands may have any strides (same shapes); the walk coalesces them, so contiguous
 * tensors are one run, cut into chunks that the threads share.
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { OPTIM_CHUNK = 16384 };   /* elements per task */

/* ---- the walk: runs of the coalesced operands, cut into chunks ------------------------ */

typedef struct walk {
    xt_iter it;
    int64_t chunks;    /* chunks per run */
    int64_t tasks;     /* runs * chunks */
} walk;

static void walk_init(walk *w, int32_t nops, xt_tensor *const *ts)
{
    int64_t strides[XT_ITER_MAX_OPS][XT_MAX_DIMS];
    for (int32_t k = 0; k < nops; k++)
        memcpy(strides[k], ts[k]->strides, sizeof(int64_t) * XT_MAX_DIMS);
    xt_iter_init(&w->it, nops, ts[0]->ndim, ts[0]->shape, strides);
    w->chunks = (w->it.inner + OPTIM_CHUNK - 1) / OPTIM_CHUNK;
    w->tasks = w->it.outer * w->chunks;
}

/* Element offsets of each operand at the start of task t, and its length. */
static int64_t walk_task(const walk *w, int64_t t, int64_t *off)
{
    int64_t run = t / w->chunks, start = t % w->chunks * OPTIM_CHUNK;
    xt_iter_offsets(&w->it, run, off);
    for (int32_t k = 0; k < w->it.nops; k++) off[k] += start * w->it.strides[k][w->it.ndim - 1];
    return w->it.inner - start < OPTIM_CHUNK ? w->it.inner - start : OPTIM_CHUNK;
}

static int64_t inner_stride(const walk *w, int32_t k) { return w->it.strides[k][w->it.ndim - 1]; }

/* ---- checks ------------------------------------------------------------------------------ */

static xt_status check_operand(const xt_tensor *t, const xt_tensor *param, const char *op,
                               const char *name, bool written)
{
    char a[XT_SHAPE_STR], b[XT_SHAPE_STR];
    if (!t) return xt_fail(XT_ERR_ARG, "%s: %s is NULL", op, name);
    if (t->dtype != XT_FLOAT32)
        return xt_fail(XT_ERR_DTYPE, "%s: %s must be float32, got %s", op, name,
                       xt_dtype_name(t->dtype));
    if (t != param && !xt_same_shape(t, param))
        return xt_fail(XT_ERR_SHAPE, "%s: %s has shape %s, the parameter has shape %s", op, name,
                       xt_shape_str(a, t->ndim, t->shape), xt_shape_str(b, param->ndim, param->shape));
    if (written)
        for (int32_t d = 0; d < t->ndim; d++)
            if (t->strides[d] == 0 && t->shape[d] > 1)
                return xt_fail(XT_ERR_ARG,
                               "%s: %s is an expanded view (dim %lld repeats one element) and "
                               "cannot be updated in place",
                               op, name, (long long)xt_shown(d));
    return XT_OK;
}

/* Tensors that are written must not share memory with any other operand. */
static xt_status check_distinct(int32_t n, xt_tensor *const *ts, const char *const *names,
                                int32_t n_written, const char *op)
{
    for (int32_t i = 0; i < n_written; i++)
        for (int32_t j = 0; j < n; j++)
            if (j != i && ts[i] && ts[j] && ts[i]->storage == ts[j]->storage)
                return xt_fail(XT_ERR_ARG, "%s: %s and %s share memory; each needs its own", op,
                               names[i < j ? i : j], names[i < j ? j : i]);
    return XT_OK;
}

static xt_status check_step(int64_t step, const char *op)
{
    if (step >= 1) return XT_OK;
    return xt_fail(XT_ERR_ARG, "%s: step counts from 1, got %lld", op, (long long)step);
}

/* ---- SGD ------------------------------------------------------------------------------------ */

typedef struct sgd_coef {
    float lr, momentum, dampened, weight_decay;   /* dampened = 1 - dampening */
    bool use_momentum, first, nesterov;
} sgd_coef;

/* One run; strides are parameters so the unit-stride call inlines into vector code. */
static inline __attribute__((always_inline)) void
sgd_run(const sgd_coef *k, int64_t len, float *p, int64_t sp, const float *g, int64_t sg,
        float *b, int64_t sb)
{
    const float lr = k->lr, mu = k->momentum, damp = k->dampened, wd = k->weight_decay;
    const bool use_momentum = k->use_momentum, first = k->first, nesterov = k->nesterov;
#pragma omp simd
    for (int64_t i = 0; i < len; i++) {
        float pi = p[i * sp], d = g[i * sg];
        if (wd != 0) d = d + wd * pi;
        if (use_momentum) {
            float bi = first ? d : b[i * sb] * mu + damp * d;
            b[i * sb] = bi;
            d = nesterov ? d + mu * bi : bi;
        }
        p[i * sp] = pi - lr * d;
    }
}

xt_status xt_sgd_step(xt_tensor *param, xt_tensor *grad, xt_tensor *momentum_buffer,
                      double lr, double momentum, double dampening, double weight_decay,
                      int32_t nesterov, int64_t step)
{
    const char *op = "sgd_step";
    if (!param) return xt_fail(XT_ERR_ARG, "%s: param is NULL", op);
    if (check_operand(param, param, op, "param", true) ||
        check_operand(grad, param, op, "grad", false))
        return xt_last_status();
    bool use_momentum = momentum != 0;
    if (use_momentum && !momentum_buffer)
        return xt_fail(XT_ERR_ARG, "%s: momentum %g needs a momentum_buffer shaped like the param",
                       op, momentum);
    if (use_momentum && check_operand(momentum_buffer, param, op, "momentum_buffer", true))
        return xt_last_status();
    if (!(lr >= 0)) return xt_fail(XT_ERR_ARG, "%s: lr must be >= 0, got %g", op, lr);
    if (!(momentum >= 0))
        return xt_fail(XT_ERR_ARG, "%s: momentum must be >= 0, got %g", op, momentum);
    if (!(weight_decay >= 0))
        return xt_fail(XT_ERR_ARG, "%s: weight_decay must be >= 0, got %g", op, weight_decay);
    if (!isfinite(dampening))
        return xt_fail(XT_ERR_ARG, "%s: dampening must be finite, got %g", op, dampening);
    if (nesterov && (momentum <= 0 || dampening != 0))
        return xt_fail(XT_ERR_ARG,
                       "%s: nesterov needs momentum > 0 and dampening 0, got momentum %g, "
                       "dampening %g",
                       op, momentum, dampening);
    if (check_step(step, op)) return xt_last_status();
    xt_tensor *ops[3] = {param, use_momentum ? momentum_buffer : NULL, grad};
    const char *names[3] = {"param", "momentum_buffer", "grad"};
    if (check_distinct(3, ops, names, 2, op)) return xt_last_status();

    sgd_coef k = {(float)lr, (float)momentum, (float)(1 - dampening), (float)weight_decay,
                  use_momentum, step == 1, nesterov != 0};
    xt_tensor *order[3] = {param, grad, use_momentum ? momentum_buffer : param};
    walk w;
    walk_init(&w, 3, order);
    const int64_t sp = inner_stride(&w, 0), sg = inner_stride(&w, 1), sb = inner_stride(&w, 2);
    const bool unit = sp == 1 && sg == 1 && sb == 1;
    float *pd = param->data, *bd = use_momentum ? momentum_buffer->data : NULL;
    const float *gd = grad->data;
#pragma omp parallel for schedule(static) if (xt_numel(param) > XT_PARALLEL_GRAIN)
    for (int64_t t = 0; t < w.tasks; t++) {
        int64_t off[3];
        int64_t len = walk_task(&w, t, off);
        float *b = bd ? bd + off[2] : NULL;
        if (unit)
            sgd_run(&k, len, pd + off[0], 1, gd + off[1], 1, b, 1);
        else
            sgd_run(&k, len, pd + off[0], sp, gd + off[1], sg, b, sb);
    }
    xt_bump_version(param);
    if (use_momentum) xt_bump_version(momentum_buffer);
    return XT_OK;
}

/* ---- Adam / AdamW ----------------------------------------------------------------------------- */

typedef struct adam_coef {
    float beta1, one_minus_beta1, beta2, one_minus_beta2, eps;
    float l2;              /* Adam: weight decay added to the gradient */
    float decay;           /* AdamW: 1 - lr * weight_decay, multiplied into the param */
    float step_size;       /* lr / (1 - beta1^step) */
    float bias2_sqrt;      /* sqrt(1 - beta2^step) */
} adam_coef;

static inline __attribute__((always_inline)) void
adam_run(const adam_coef *k, int64_t len, float *p, int64_t sp, const float *g, int64_t sg,
         float *m, int64_t sm, float *v, int64_t sv)
{
    const float b1 = k->beta1, c1 = k->one_minus_beta1, b2 = k->beta2, c2 = k->one_minus_beta2;
    const float eps = k->eps, l2 = k->l2, decay = k->decay, step_size = k->step_size,
                bias2_sqrt = k->bias2_sqrt;
#pragma omp simd
    for (int64_t i = 0; i < len; i++) {
        float pi = p[i * sp], gi = g[i * sg];
        if (l2 != 0) gi = gi + l2 * pi;
        pi = pi * decay;
        float mi = m[i * sm] * b1 + c1 * gi;
        float vi = v[i * sv] * b2 + c2 * gi * gi;
        float denom = sqrtf(vi) / bias2_sqrt + eps;
        m[i * sm] = mi;
        v[i * sv] = vi;
        p[i * sp] = pi - step_size * (mi / denom);
    }
}

xt_status xt_adam_step(xt_tensor *param, xt_tensor *grad, xt_tensor *exp_avg,
                       xt_tensor *exp_avg_sq, double lr, double beta1, double beta2,
                       double eps, double weight_decay, int32_t decoupled, int64_t step)
{
    const char *op = decoupled ? "adamw_step" : "adam_step";
    if (!param) return xt_fail(XT_ERR_ARG, "%s: param is NULL", op);
    if (check_operand(param, param, op, "param", true) ||
        check_operand(grad, param, op, "grad", false) ||
        check_operand(exp_avg, param, op, "exp_avg", true) ||
        check_operand(exp_avg_sq, param, op, "exp_avg_sq", true))
        return xt_last_status();
    if (!(lr >= 0)) return xt_fail(XT_ERR_ARG, "%s: lr must be >= 0, got %g", op, lr);
    if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1))
        return xt_fail(XT_ERR_ARG, "%s: betas must be in [0, 1), got (%g, %g)", op, beta1, beta2);
    if (!(eps >= 0)) return xt_fail(XT_ERR_ARG, "%s: eps must be >= 0, got %g", op, eps);
    if (!(weight_decay >= 0))
        return xt_fail(XT_ERR_ARG, "%s: weight_decay must be >= 0, got %g", op, weight_decay);
    if (check_step(step, op)) return xt_last_status();
    xt_tensor *ops[4] = {param, exp_avg, exp_avg_sq, grad};
    const char *names[4] = {"param", "exp_avg", "exp_avg_sq", "grad"};
    if (check_distinct(4, ops, names, 3, op)) return xt_last_status();

    double bias1 = 1 - pow(beta1, (double)step), bias2 = 1 - pow(beta2, (double)step);
    adam_coef k = {(float)beta1, (float)(1 - beta1), (float)beta2, (float)(1 - beta2),
                   (float)eps, decoupled ? 0.0f : (float)weight_decay,
                   decoupled ? (float)(1 - lr * weight_decay) : 1.0f, (float)(lr / bias1),
                   (float)sqrt(bias2)};
    xt_tensor *order[4] = {param, grad, exp_avg, exp_avg_sq};
    walk w;
    walk_init(&w, 4, order);
    int64_t s[4];
    for (int32_t i = 0; i < 4; i++) s[i] = inner_stride(&w, i);
    const bool unit = s[0] == 1 && s[1] == 1 && s[2] == 1 && s[3] == 1;
    float *pd = param->data, *md = exp_avg->data, *vd = exp_avg_sq->data;
    const float *gd = grad->data;
#pragma omp parallel for schedule(static) if (xt_numel(param) > XT_PARALLEL_GRAIN)
    for (int64_t t = 0; t < w.tasks; t++) {
        int64_t off[4];
        int64_t len = walk_task(&w, t, off);
        if (unit)
            adam_run(&k, len, pd + off[0], 1, gd + off[1], 1, md + off[2], 1, vd + off[3], 1);
        else
            adam_run(&k, len, pd + off[0], s[0], gd + off[1], s[1], md + off[2], s[2],
                     vd + off[3], s[3]);
    }
    xt_bump_version(param);
    xt_bump_version(exp_avg);
    xt_bump_version(exp_avg_sq);
    return XT_OK;
}

/* ---- sum of squares ---------------------------------------------------------------------------
 * Per chunk in double, then the chunks in order: the result does not depend on the number
 * of threads. Bad input gives NaN with the error set; NaN gradients also give NaN, so the
 * error is cleared on entry and xt_last_status() tells the two apart. */

static double tensor_sum_of_squares(xt_tensor *t)
{
    walk w;
    walk_init(&w, 1, &t);
    const int64_t st = inner_stride(&w, 0);
    double small[16], *partial = w.tasks <= 16 ? small : malloc(sizeof(double) * (size_t)w.tasks);
    if (!partial) {
        xt_fail(XT_ERR_OOM, "sum_of_squares: out of memory");
        return NAN;
    }
    const float *data = t->data;
#pragma omp parallel for schedule(static) if (xt_numel(t) > XT_PARALLEL_GRAIN)
    for (int64_t k = 0; k < w.tasks; k++) {
        int64_t off;
        int64_t len = walk_task(&w, k, &off);
        const float *x = data + off;
        double s = 0;
        if (st == 1) {
#pragma omp simd reduction(+ : s)
            for (int64_t i = 0; i < len; i++) s += (double)x[i] * x[i];
        } else {
            for (int64_t i = 0; i < len; i++) s += (double)x[i * st] * x[i * st];
        }
        partial[k] = s;
    }
    double s = 0;
    for (int64_t k = 0; k < w.tasks; k++) s += partial[k];
    if (partial != small) free(partial);
    return s;
}

double xt_sum_of_squares(int32_t n, xt_tensor *const *tensors)
{
    xt_clear_error();
    if (n < 0) {
        xt_fail(XT_ERR_ARG, "sum_of_squares: negative tensor count %d", n);
        return NAN;
    }
    if (n > 0 && !tensors) {
        xt_fail(XT_ERR_ARG, "sum_of_squares: the tensor list is NULL");
        return NAN;
    }
    for (int32_t i = 0; i < n; i++) {
        if (!tensors[i]) {
            xt_fail(XT_ERR_ARG, "sum_of_squares: tensor %lld is NULL", (long long)xt_shown(i));
            return NAN;
        }
        if (tensors[i]->dtype != XT_FLOAT32) {
            xt_fail(XT_ERR_DTYPE, "sum_of_squares: tensor %lld must be float32, got %s",
                    (long long)xt_shown(i), xt_dtype_name(tensors[i]->dtype));
            return NAN;
        }
    }
    double total = 0;
    for (int32_t i = 0; i < n; i++) total += tensor_sum_of_squares(tensors[i]);
    return total;
}
