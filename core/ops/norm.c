/*
 * norm.c: batch_norm, layer_norm and group_norm, forward and backward side by side.
 *
 * Every kernel reads contiguous float32 data (inputs are made contiguous first, outside
 * the graph, and the node is recorded on the caller's tensors), accumulates statistics in
 * double with two passes (mean, then squared deviations from it) and writes the output in
 * one more pass. The forward saves the statistics it used (mean and 1/std as float32
 * tensors), so the backward never recomputes them.
 *
 * Gradients (xhat = (x - mean) * rstd, g = dy * weight, sums over a statistics set of M):
 *   dx = rstd * (g - sum(g) / M - xhat * sum(g * xhat) / M)
 *   dweight = sum(dy * xhat)   dbias = sum(dy)   (over everything but the affine dims)
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* t as a contiguous tensor (+1), copied outside the graph: the node goes on t itself. */
static xt_tensor *dense(xt_tensor *t)
{
    int32_t prev = xt_set_grad_enabled(0);
    xt_tensor *c = xt_contiguous(t);
    xt_set_grad_enabled(prev);
    return c;
}

static xt_status check_float(const xt_tensor *t, const char *op, const char *name)
{
    if (t->dtype != XT_FLOAT32)
        return xt_fail(XT_ERR_DTYPE, "%s: expected float32 %s, got %s", op, name,
                       xt_dtype_name(t->dtype));
    return XT_OK;
}

/* t (may be NULL) must be float32 with exactly the given shape. */
static xt_status check_param(const xt_tensor *t, int32_t ndim, const int64_t *shape,
                             const char *op, const char *name)
{
    if (!t) return XT_OK;
    if (check_float(t, op, name)) return xt_last_status();
    if (t->ndim != ndim || memcmp(t->shape, shape, sizeof(int64_t) * (size_t)ndim) != 0) {
        char a[XT_SHAPE_STR], b[XT_SHAPE_STR];
        return xt_fail(XT_ERR_SHAPE, "%s: %s has shape %s, expected %s", op, name,
                       xt_shape_str(a, t->ndim, t->shape), xt_shape_str(b, ndim, shape));
    }
    return XT_OK;
}

static xt_tensor *float_vec(int64_t n)
{
    return xt_empty(1, &n, XT_FLOAT32);
}

static void release_all(int32_t n, xt_tensor **ts)
{
    for (int32_t i = 0; i < n; i++) xt_tensor_release(ts[i]);
}

/* ==== batch_norm ==========================================================================
 * x viewed as [N,C,S] (S: the product of the dims after the channel dim). A channel's
 * statistics run over N*S elements: N runs of S contiguous floats. For S == 1 ([N,C]
 * input) a channel is a strided column, so those loops go row by row over a block of
 * channels instead, which keeps the inner loop contiguous. */

enum { BN_CHANNEL_BLOCK = 64 };

/* s1[c] = sum of a, s2[c] = sum of (a - ca[c]) * (b - cb[c]) over channel c of [N,C,S].
 * s1 or s2 may be NULL (not computed); ca NULL means 0. */
enum { BN_FLOAT_RUN = 1024 };

static void bn_channel_sums(const float *a, const float *b, const float *ca, const float *cb,
                            int64_t N, int64_t C, int64_t S, double *s1, double *s2)
{
    int64_t total = N * C * S;
    if (S == 1) {
        int64_t nblocks = (C + BN_CHANNEL_BLOCK - 1) / BN_CHANNEL_BLOCK;
#pragma omp parallel for if (total > XT_PARALLEL_GRAIN && nblocks > 1)
        for (int64_t blk = 0; blk < nblocks; blk++) {
            int64_t c0 = blk * BN_CHANNEL_BLOCK;
            int64_t nc = C - c0 < BN_CHANNEL_BLOCK ? C - c0 : BN_CHANNEL_BLOCK;
            double acc1[BN_CHANNEL_BLOCK] = {0}, acc2[BN_CHANNEL_BLOCK] = {0};
            float zero[BN_CHANNEL_BLOCK] = {0};
            const float *pa = ca ? ca + c0 : zero, *pb = cb ? cb + c0 : zero;
            for (int64_t n = 0; n < N; n++) {
                const float *ra = a + n * C + c0;
                if (s1) {
#pragma omp simd
                    for (int64_t c = 0; c < nc; c++) acc1[c] += ra[c];
                }
                if (s2) {
                    const float *rb = b + n * C + c0;
#pragma omp simd
                    for (int64_t c = 0; c < nc; c++)
                        acc2[c] += (double)(ra[c] - pa[c]) * (double)(rb[c] - pb[c]);
                }
            }
            for (int64_t c = 0; c < nc; c++) {
                if (s1) s1[c0 + c] = acc1[c];
                if (s2) s2[c0 + c] = acc2[c];
            }
        }
        return;
    }
#pragma omp parallel for if (total > XT_PARALLEL_GRAIN && C > 1)
    for (int64_t c = 0; c < C; c++) {
        /* runs of up to BN_FLOAT_RUN terms summed in float lanes (full-width vectors), the runs
         * added in double */
        double acc1 = 0, acc2 = 0;
        float ma = ca ? ca[c] : 0.0f, mb = cb ? cb[c] : 0.0f;
        for (int64_t n = 0; n < N; n++) {
            const float *ra = a + (n * C + c) * S;
            for (int64_t s0 = 0; s1 && s0 < S; s0 += BN_FLOAT_RUN) {
                int64_t s1e = s0 + BN_FLOAT_RUN < S ? s0 + BN_FLOAT_RUN : S;
                float p1 = 0;
#pragma omp simd reduction(+ : p1)
                for (int64_t s = s0; s < s1e; s++) p1 += ra[s];
                acc1 += p1;
            }
            const float *rb = s2 ? b + (n * C + c) * S : NULL;
            for (int64_t s0 = 0; s2 && s0 < S; s0 += BN_FLOAT_RUN) {
                int64_t s1e = s0 + BN_FLOAT_RUN < S ? s0 + BN_FLOAT_RUN : S;
                float p2 = 0;
#pragma omp simd reduction(+ : p2)
                for (int64_t s = s0; s < s1e; s++) p2 += (ra[s] - ma) * (rb[s] - mb);
                acc2 += p2;
            }
        }
        if (s1) s1[c] = acc1;
        if (s2) s2[c] = acc2;
    }
}

/* out = p[c] * u + q[c] * (v - m[c]) + k[c] over [N,C,S]; u or v may be NULL (term dropped). */
static void bn_channel_affine(float *out, const float *u, const float *p, const float *v,
                              const float *q, const float *m, const float *k, int64_t N,
                              int64_t C, int64_t S)
{
    int64_t total = N * C * S;
    if (S == 1) {
#pragma omp parallel for if (total > XT_PARALLEL_GRAIN)
        for (int64_t n = 0; n < N; n++) {
            float *o = out + n * C;
            const float *ru = u ? u + n * C : NULL, *rv = v ? v + n * C : NULL;
            if (ru && rv) {
#pragma omp simd
                for (int64_t c = 0; c < C; c++) o[c] = p[c] * ru[c] + q[c] * (rv[c] - m[c]) + k[c];
            } else if (rv) {
#pragma omp simd
                for (int64_t c = 0; c < C; c++) o[c] = q[c] * (rv[c] - m[c]) + k[c];
            } else {
#pragma omp simd
                for (int64_t c = 0; c < C; c++) o[c] = p[c] * ru[c] + k[c];
            }
        }
        return;
    }
#pragma omp parallel for if (total > XT_PARALLEL_GRAIN)
    for (int64_t nc = 0; nc < N * C; nc++) {
        int64_t c = nc % C;
        float *o = out + nc * S;
        const float *ru = u ? u + nc * S : NULL, *rv = v ? v + nc * S : NULL;
        float pc = p ? p[c] : 0.0f, qc = q ? q[c] : 0.0f, mc = m ? m[c] : 0.0f, kc = k[c];
        if (ru && rv) {
#pragma omp simd
            for (int64_t s = 0; s < S; s++) o[s] = pc * ru[s] + qc * (rv[s] - mc) + kc;
        } else if (rv) {
#pragma omp simd
            for (int64_t s = 0; s < S; s++) o[s] = qc * (rv[s] - mc) + kc;
        } else {
#pragma omp simd
            for (int64_t s = 0; s < S; s++) o[s] = pc * ru[s] + kc;
        }
    }
}

/* saved: 0 x (contiguous), 1 mean [C], 2 rstd [C], 3 weight [C] when iargs[0].
 * iargs: 0 has weight, 1 training. In eval, mean/rstd are the running statistics as they
 * were at the forward, so a later update of the running stats does not change them. */
static xt_status batch_norm_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    bool has_weight = node->iargs[0] != 0, training = node->iargs[1] != 0;
    xt_tensor *x = xt_node_saved(node, 0), *mean_t = xt_node_saved(node, 1);
    xt_tensor *rstd_t = xt_node_saved(node, 2);
    xt_tensor *w = has_weight ? xt_node_saved(node, 3) : NULL;
    if (!x || !mean_t || !rstd_t || (has_weight && !w)) return xt_last_status();
    int64_t N = x->shape[0], C = x->shape[1], S = xt_numel(x) / (N * C > 0 ? N * C : 1);
    double M = (double)(N * S);
    bool need_x = xt_node_needs(node, 0), need_w = xt_node_needs(node, 1),
         need_b = xt_node_needs(node, 2);

    xt_tensor *dy_t = xt_contiguous(dout);
    float *coef = malloc(sizeof(float) * (size_t)(3 * C + 1));
    double *sums = malloc(sizeof(double) * (size_t)(2 * C + 1));
    xt_tensor *dx = need_x ? xt_empty(x->ndim, x->shape, XT_FLOAT32) : NULL;
    xt_tensor *dw = need_w ? float_vec(C) : NULL, *db = need_b ? float_vec(C) : NULL;
    if (!dy_t || !coef || !sums || (need_x && !dx) || (need_w && !dw) || (need_b && !db)) {
        xt_status st = coef && sums ? xt_last_status()
                                    : xt_fail(XT_ERR_OOM, "batch_norm: out of memory");
        xt_tensor *ts[4] = {dy_t, dx, dw, db};
        release_all(4, ts);
        free(coef);
        free(sums);
        return st;
    }
    const float *dy = dy_t->data, *xs = x->data, *mean = mean_t->data, *rstd = rstd_t->data;
    const float *wd = w ? w->data : NULL;
    double *sdy = sums, *sdyx = sums + C;
    if (training || need_w || need_b)
        bn_channel_sums(dy, xs, NULL, mean, N, C, S, sdy, sdyx);
    if (need_w)
        for (int64_t c = 0; c < C; c++) ((float *)dw->data)[c] = (float)(sdyx[c] * rstd[c]);
    if (need_b)
        for (int64_t c = 0; c < C; c++) ((float *)db->data)[c] = (float)sdy[c];
    if (need_x) {
        /* dx = a[c] * dy + b[c] * (x - mean[c]) + k[c] */
        float *a = coef, *b = coef + C, *k = coef + 2 * C;
        for (int64_t c = 0; c < C; c++) {
            double r = rstd[c], wr = (wd ? wd[c] : 1.0) * r;
            a[c] = (float)wr;
            b[c] = training ? (float)(-wr * r * r * sdyx[c] / M) : 0.0f;
            k[c] = training ? (float)(-wr * sdy[c] / M) : 0.0f;
        }
        bn_channel_affine(dx->data, dy, a, training ? xs : NULL, b, mean, k, N, C, S);
    }
    dinputs[0] = dx;
    dinputs[1] = dw;
    dinputs[2] = db;
    xt_tensor_release(dy_t);
    free(coef);
    free(sums);
    return XT_OK;
}

static xt_status check_running(const xt_tensor *t, int64_t C, const char *name)
{
    if (!t) return XT_OK;
    if (check_float(t, "batch_norm", name)) return xt_last_status();
    if (t->ndim != 1 || t->shape[0] != C) {
        char a[XT_SHAPE_STR];
        return xt_fail(XT_ERR_SHAPE,
                       "batch_norm: %s has shape %s, expected [%lld] (x has %lld channels in "
                       "dim %lld)",
                       name, xt_shape_str(a, t->ndim, t->shape), (long long)C, (long long)C,
                       (long long)xt_shown(1));
    }
    return XT_OK;
}

xt_tensor *xt_batch_norm(xt_tensor *x, xt_tensor *weight, xt_tensor *bias,
                         xt_tensor *running_mean, xt_tensor *running_var, int32_t training,
                         double momentum, double eps)
{
    if (!x) return xt_fail_null(XT_ERR_ARG, "batch_norm: x is NULL");
    if (check_float(x, "batch_norm", "x")) return NULL;
    if (x->ndim < 2) {
        char a[XT_SHAPE_STR];
        return xt_fail_null(XT_ERR_SHAPE,
                            "batch_norm: expected x of shape [N,C,...] (at least 2 dims), got %s",
                            xt_shape_str(a, x->ndim, x->shape));
    }
    int64_t N = x->shape[0], C = x->shape[1], S = 1;
    for (int32_t d = 2; d < x->ndim; d++) S *= x->shape[d];
    if (check_param(weight, 1, &C, "batch_norm", "weight") ||
        check_param(bias, 1, &C, "batch_norm", "bias") ||
        check_running(running_mean, C, "running_mean") ||
        check_running(running_var, C, "running_var"))
        return NULL;
    if (!running_mean != !running_var)
        return xt_fail_null(XT_ERR_ARG,
                            "batch_norm: running_mean and running_var must both be given or both "
                            "be NULL");
    if (!training && !running_mean)
        return xt_fail_null(XT_ERR_ARG,
                            "batch_norm: running_mean and running_var are needed when not "
                            "training");
    if (!(eps >= 0)) return xt_fail_null(XT_ERR_ARG, "batch_norm: eps must be >= 0, got %g", eps);
    double M = (double)(N * S);
    if (training && N * S <= 1) {
        char a[XT_SHAPE_STR];
        return xt_fail_null(XT_ERR_SHAPE,
                            "batch_norm: expected more than 1 value per channel when training, "
                            "got x of shape %s",
                            xt_shape_str(a, x->ndim, x->shape));
    }
    if (training && running_mean &&
        (xt_check_inplace(running_mean, "batch_norm") || xt_check_inplace(running_var, "batch_norm")))
        return NULL;

    xt_tensor *xc = dense(x), *wc = weight ? dense(weight) : NULL, *bc = bias ? dense(bias) : NULL;
    xt_tensor *out = xt_empty(x->ndim, x->shape, XT_FLOAT32);
    xt_tensor *mean_t = float_vec(C), *rstd_t = float_vec(C);
    double *stats = malloc(sizeof(double) * (size_t)(2 * C + 1));
    float *k = malloc(sizeof(float) * (size_t)(2 * C + 1));
    xt_tensor *tmp[6] = {xc, wc, bc, out, mean_t, rstd_t};
    if (!xc || (weight && !wc) || (bias && !bc) || !out || !mean_t || !rstd_t || !stats || !k) {
        if (!stats || !k) xt_fail(XT_ERR_OOM, "batch_norm: out of memory");
        release_all(6, tmp);
        free(stats);
        free(k);
        return NULL;
    }
    const float *xs = xc->data;
    float *mean = mean_t->data, *rstd = rstd_t->data;
    if (training) {
        double *sum = stats, *m2 = stats + C;
        bn_channel_sums(xs, NULL, NULL, NULL, N, C, S, sum, NULL);
        for (int64_t c = 0; c < C; c++) mean[c] = (float)(sum[c] / M);
        bn_channel_sums(xs, xs, mean, mean, N, C, S, NULL, m2);
        for (int64_t c = 0; c < C; c++) rstd[c] = (float)(1.0 / sqrt(m2[c] / M + eps));
        if (running_mean) {
            /* running = (1 - momentum) * running + momentum * batch stat (unbiased var) */
            float *rm = running_mean->data, *rv = running_var->data;
            int64_t sm = running_mean->strides[0], sv = running_var->strides[0];
            for (int64_t c = 0; c < C; c++) {
                rm[c * sm] = (float)((1 - momentum) * rm[c * sm] + momentum * sum[c] / M);
                rv[c * sv] = (float)((1 - momentum) * rv[c * sv] + momentum * m2[c] / (M - 1));
            }
            xt_bump_version(running_mean);
            xt_bump_version(running_var);
        }
    } else {
        const float *rm = running_mean->data, *rv = running_var->data;
        int64_t sm = running_mean->strides[0], sv = running_var->strides[0];
        for (int64_t c = 0; c < C; c++) {
            mean[c] = rm[c * sm];
            rstd[c] = (float)(1.0 / sqrt((double)rv[c * sv] + eps));
        }
    }
    /* y = scale[c] * (x - mean[c]) + bias[c] */
    float *scale = k, *shift = k + C;
    for (int64_t c = 0; c < C; c++) {
        scale[c] = wc ? ((float *)wc->data)[c] * rstd[c] : rstd[c];
        shift[c] = bc ? ((float *)bc->data)[c] : 0.0f;
    }
    bn_channel_affine(out->data, NULL, NULL, xs, scale, mean, shift, N, C, S);
    free(stats);
    free(k);

    xt_tensor *inputs[3] = {x, weight, bias};
    if (xt_needs_grad(3, inputs)) {
        xt_node *node = xt_node_new("batch_norm", batch_norm_backward, 3, inputs);
        bool ok = node && !xt_node_save(node, xc) && !xt_node_save(node, mean_t) &&
                  !xt_node_save(node, rstd_t) && (!wc || !xt_node_save(node, wc));
        if (!ok) {
            xt_node_release(node);
            release_all(6, tmp);
            return NULL;
        }
        node->iargs[0] = wc != NULL;
        node->iargs[1] = training != 0;
        xt_node_attach(node, out);
    }
    tmp[3] = NULL;  /* out is returned */
    release_all(6, tmp);
    return out;
}

/* ==== layer_norm ==========================================================================
 * x viewed as [R,D]: R rows of D contiguous floats, each normalised on its own. The rows
 * go across threads; the weight and bias gradients sum over rows in fixed blocks of rows
 * (partial sums per block, then a sum over blocks in order), so they do not depend on the
 * number of threads. */

enum { LN_MAX_BLOCKS = 64 };

/* Row statistics: mean and 1/sqrt(var + eps), two passes in double. */
static inline void row_stats(const float *x, int64_t D, double eps, float *mean, float *rstd)
{
    double sum = 0, sq = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < D; j++) sum += x[j];
    float mu = (float)(sum / (double)D);
#pragma omp simd reduction(+ : sq)
    for (int64_t j = 0; j < D; j++) {
        float d = x[j] - mu;
        sq += (double)(d * d);
    }
    *mean = mu;
    *rstd = (float)(1.0 / sqrt(sq / (double)D + eps));
}

/* saved: 0 x [R,D] contiguous, 1 mean [R], 2 rstd [R], 3 weight when iargs[0]. iargs[1] D. */
static xt_status layer_norm_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    bool has_weight = node->iargs[0] != 0;
    int64_t D = node->iargs[1];
    xt_tensor *x = xt_node_saved(node, 0), *mean_t = xt_node_saved(node, 1);
    xt_tensor *rstd_t = xt_node_saved(node, 2);
    xt_tensor *w = has_weight ? xt_node_saved(node, 3) : NULL;
    if (!x || !mean_t || !rstd_t || (has_weight && !w)) return xt_last_status();
    int64_t R = mean_t->shape[0];
    bool need_x = xt_node_needs(node, 0), need_w = xt_node_needs(node, 1),
         need_b = xt_node_needs(node, 2);
    bool need_affine = need_w || need_b;

    int64_t rows_per_block = (R + LN_MAX_BLOCKS - 1) / LN_MAX_BLOCKS;
    if (rows_per_block < 1) rows_per_block = 1;
    int64_t nblocks = R > 0 ? (R + rows_per_block - 1) / rows_per_block : 0;
    xt_tensor *dy_t = xt_contiguous(dout);
    xt_tensor *dx = need_x ? xt_empty(x->ndim, x->shape, XT_FLOAT32) : NULL;
    /* partial[blk] holds [dw (D), db (D)] summed over the block's rows */
    float *partial = need_affine ? calloc((size_t)(nblocks * 2 * D + 1), sizeof(float)) : NULL;
    if (!dy_t || (need_x && !dx) || (need_affine && !partial)) {
        xt_status st = need_affine && !partial ? xt_fail(XT_ERR_OOM, "layer_norm: out of memory")
                                               : xt_last_status();
        xt_tensor_release(dy_t);
        xt_tensor_release(dx);
        free(partial);
        return st;
    }
    const float *xs = x->data, *dys = dy_t->data, *mean = mean_t->data, *rstd = rstd_t->data;
    const float *wd = w ? w->data : NULL;
    float *dxs = dx ? dx->data : NULL;

#pragma omp parallel for schedule(static) if (R * D > XT_PARALLEL_GRAIN && nblocks > 1)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        int64_t r0 = blk * rows_per_block, r1 = r0 + rows_per_block < R ? r0 + rows_per_block : R;
        float *pw = partial ? partial + blk * 2 * D : NULL, *pb = pw ? pw + D : NULL;
        for (int64_t r = r0; r < r1; r++) {
            const float *xr = xs + r * D, *dyr = dys + r * D;
            float mu = mean[r], rs = rstd[r];
            if (dxs) {
                /* sums of g and g * xhat, g = dy * w */
                double s1 = 0, s2 = 0;
                if (wd) {
#pragma omp simd reduction(+ : s1, s2)
                    for (int64_t j = 0; j < D; j++) {
                        float g = dyr[j] * wd[j];
                        s1 += g;
                        s2 += (double)(g * ((xr[j] - mu) * rs));
                    }
                } else {
#pragma omp simd reduction(+ : s1, s2)
                    for (int64_t j = 0; j < D; j++) {
                        s1 += dyr[j];
                        s2 += (double)(dyr[j] * ((xr[j] - mu) * rs));
                    }
                }
                float m1 = (float)(s1 / (double)D), m2 = (float)(s2 / (double)D);
                float *dxr = dxs + r * D;
                if (wd) {
#pragma omp simd
                    for (int64_t j = 0; j < D; j++)
                        dxr[j] = rs * (dyr[j] * wd[j] - m1 - (xr[j] - mu) * rs * m2);
                } else {
#pragma omp simd
                    for (int64_t j = 0; j < D; j++)
                        dxr[j] = rs * (dyr[j] - m1 - (xr[j] - mu) * rs * m2);
                }
            }
            if (pw) {
#pragma omp simd
                for (int64_t j = 0; j < D; j++) {
                    pw[j] += dyr[j] * ((xr[j] - mu) * rs);
                    pb[j] += dyr[j];
                }
            }
        }
    }

    xt_tensor *dw = NULL, *db = NULL;
    xt_status st = XT_OK;
    if (need_w && !(dw = xt_empty(w->ndim, w->shape, XT_FLOAT32))) st = xt_last_status();
    if (need_b && st == XT_OK) {
        int32_t nd = (int32_t)node->iargs[2];
        const int64_t *shape = x->shape + (x->ndim - nd);
        if (!(db = xt_empty(nd, shape, XT_FLOAT32))) st = xt_last_status();
    }
    if (st == XT_OK && need_affine) {
        float *dws = dw ? dw->data : NULL, *dbs = db ? db->data : NULL;
#pragma omp parallel for if (nblocks * D > XT_PARALLEL_GRAIN)
        for (int64_t j = 0; j < D; j++) {
            double sw = 0, sb = 0;
            for (int64_t blk = 0; blk < nblocks; blk++) {
                sw += partial[blk * 2 * D + j];
                sb += partial[blk * 2 * D + D + j];
            }
            if (dws) dws[j] = (float)sw;
            if (dbs) dbs[j] = (float)sb;
        }
    }
    free(partial);
    xt_tensor_release(dy_t);
    if (st != XT_OK) {
        xt_tensor_release(dx);
        xt_tensor_release(dw);
        xt_tensor_release(db);
        return st;
    }
    dinputs[0] = dx;
    dinputs[1] = dw;
    dinputs[2] = db;
    return XT_OK;
}

xt_tensor *xt_layer_norm(xt_tensor *x, int32_t normalized_ndim, xt_tensor *weight,
                         xt_tensor *bias, double eps)
{
    if (!x) return xt_fail_null(XT_ERR_ARG, "layer_norm: x is NULL");
    if (check_float(x, "layer_norm", "x")) return NULL;
    if (normalized_ndim < 1 || normalized_ndim > x->ndim)
        return xt_fail_null(XT_ERR_ARG,
                            "layer_norm: normalized_ndim must be in [1, %d] for x with %d dims, "
                            "got %d",
                            x->ndim, x->ndim, normalized_ndim);
    const int64_t *nshape = x->shape + (x->ndim - normalized_ndim);
    if (check_param(weight, normalized_ndim, nshape, "layer_norm", "weight") ||
        check_param(bias, normalized_ndim, nshape, "layer_norm", "bias"))
        return NULL;
    if (!(eps >= 0)) return xt_fail_null(XT_ERR_ARG, "layer_norm: eps must be >= 0, got %g", eps);
    int64_t D = xt_shape_numel(normalized_ndim, nshape);
    int64_t R = D > 0 ? xt_numel(x) / D : 0;

    xt_tensor *xc = dense(x), *wc = weight ? dense(weight) : NULL, *bc = bias ? dense(bias) : NULL;
    xt_tensor *out = xt_empty(x->ndim, x->shape, XT_FLOAT32);
    xt_tensor *mean_t = float_vec(R), *rstd_t = float_vec(R);
    xt_tensor *tmp[6] = {xc, wc, bc, out, mean_t, rstd_t};
    if (!xc || (weight && !wc) || (bias && !bc) || !out || !mean_t || !rstd_t) {
        release_all(6, tmp);
        return NULL;
    }
    const float *xs = xc->data, *wd = wc ? wc->data : NULL, *bd = bc ? bc->data : NULL;
    float *ys = out->data, *mean = mean_t->data, *rstd = rstd_t->data;

#pragma omp parallel for schedule(static) if (R * D > XT_PARALLEL_GRAIN && R > 1)
    for (int64_t r = 0; r < R; r++) {
        const float *xr = xs + r * D;
        float *yr = ys + r * D;
        row_stats(xr, D, eps, &mean[r], &rstd[r]);
        float mu = mean[r], rs = rstd[r];
        if (wd && bd) {
#pragma omp simd
            for (int64_t j = 0; j < D; j++) yr[j] = (xr[j] - mu) * rs * wd[j] + bd[j];
        } else if (wd) {
#pragma omp simd
            for (int64_t j = 0; j < D; j++) yr[j] = (xr[j] - mu) * rs * wd[j];
        } else if (bd) {
#pragma omp simd
            for (int64_t j = 0; j < D; j++) yr[j] = (xr[j] - mu) * rs + bd[j];
        } else {
#pragma omp simd
            for (int64_t j = 0; j < D; j++) yr[j] = (xr[j] - mu) * rs;
        }
    }

    xt_tensor *inputs[3] = {x, weight, bias};
    if (xt_needs_grad(3, inputs)) {
        xt_node *node = xt_node_new("layer_norm", layer_norm_backward, 3, inputs);
        bool ok = node && !xt_node_save(node, xc) && !xt_node_save(node, mean_t) &&
                  !xt_node_save(node, rstd_t) && (!wc || !xt_node_save(node, wc));
        if (!ok) {
            xt_node_release(node);
            release_all(6, tmp);
            return NULL;
        }
        node->iargs[0] = wc != NULL;
        node->iargs[1] = D;
        node->iargs[2] = normalized_ndim;
        xt_node_attach(node, out);
    }
    tmp[3] = NULL;
    release_all(6, tmp);
    return out;
}

/* ==== group_norm ==========================================================================
 * x viewed as [N,C,S]; channels split into G groups of Cg = C/G. The statistics of
 * (sample n, group g) run over the Cg*S contiguous floats of that group; weight and bias
 * are per channel. One parallel loop over (n, g) computes the statistics and writes the
 * group's output while it is still in cache. */

/* saved: 0 x contiguous, 1 mean [N*G], 2 rstd [N*G], 3 weight when iargs[0]. iargs[1] G. */
static xt_status group_norm_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    bool has_weight = node->iargs[0] != 0;
    int64_t G = node->iargs[1];
    xt_tensor *x = xt_node_saved(node, 0), *mean_t = xt_node_saved(node, 1);
    xt_tensor *rstd_t = xt_node_saved(node, 2);
    xt_tensor *w = has_weight ? xt_node_saved(node, 3) : NULL;
    if (!x || !mean_t || !rstd_t || (has_weight && !w)) return xt_last_status();
    int64_t N = x->shape[0], C = x->shape[1], Cg = C / G;
    int64_t S = N * C > 0 ? xt_numel(x) / (N * C) : 0;
    double M = (double)(Cg * S);
    bool need_x = xt_node_needs(node, 0), need_w = xt_node_needs(node, 1),
         need_b = xt_node_needs(node, 2);

    xt_tensor *dy_t = xt_contiguous(dout);
    xt_tensor *dx = need_x ? xt_empty(x->ndim, x->shape, XT_FLOAT32) : NULL;
    xt_tensor *dw = need_w ? float_vec(C) : NULL, *db = need_b ? float_vec(C) : NULL;
    /* per (n, c): sum of dy and sum of dy * (x - mean), over the S positions */
    double *sums = malloc(sizeof(double) * (size_t)(2 * N * C + 1));
    if (!dy_t || !sums || (need_x && !dx) || (need_w && !dw) || (need_b && !db)) {
        xt_status st = sums ? xt_last_status() : xt_fail(XT_ERR_OOM, "group_norm: out of memory");
        xt_tensor *ts[4] = {dy_t, dx, dw, db};
        release_all(4, ts);
        free(sums);
        return st;
    }
    const float *xs = x->data, *dys = dy_t->data, *mean = mean_t->data, *rstd = rstd_t->data;
    const float *wd = w ? w->data : NULL;
    double *sdy = sums, *sdyx = sums + N * C;
    float *dxs = dx ? dx->data : NULL;

#pragma omp parallel for if (N * C * S > XT_PARALLEL_GRAIN && N * G > 1)
    for (int64_t ng = 0; ng < N * G; ng++) {
        int64_t n = ng / G, g = ng % G;
        float mu = mean[ng], rs = rstd[ng];
        double s1 = 0, s2 = 0;  /* sums of g and g * (x - mean), g = dy * w */
        for (int64_t cc = 0; cc < Cg; cc++) {
            int64_t c = g * Cg + cc, nc = n * C + c;
            const float *xr = xs + nc * S, *dyr = dys + nc * S;
            double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
            for (int64_t s = 0; s < S; s++) {
                a += dyr[s];
                b += (double)(dyr[s] * (xr[s] - mu));
            }
            sdy[nc] = a;
            sdyx[nc] = b;
            double wc = wd ? wd[c] : 1.0;
            s1 += wc * a;
            s2 += wc * b;
        }
        if (!dxs) continue;
        /* dx = rstd * w[c] * dy + bq * (x - mean) + k */
        float bq = (float)(-(double)rs * rs * rs * s2 / M), k = (float)(-(double)rs * s1 / M);
        for (int64_t cc = 0; cc < Cg; cc++) {
            int64_t c = g * Cg + cc, nc = n * C + c;
            const float *xr = xs + nc * S, *dyr = dys + nc * S;
            float *dxr = dxs + nc * S;
            float a = rs * (wd ? wd[c] : 1.0f);
#pragma omp simd
            for (int64_t s = 0; s < S; s++) dxr[s] = a * dyr[s] + bq * (xr[s] - mu) + k;
        }
    }
    if (dw || db) {
        float *dws = dw ? dw->data : NULL, *dbs = db ? db->data : NULL;
        for (int64_t c = 0; c < C; c++) {
            double sw = 0, sb = 0;
            for (int64_t n = 0; n < N; n++) {
                sw += sdyx[n * C + c] * rstd[n * G + c / Cg];
                sb += sdy[n * C + c];
            }
            if (dws) dws[c] = (float)sw;
            if (dbs) dbs[c] = (float)sb;
        }
    }
    dinputs[0] = dx;
    dinputs[1] = dw;
    dinputs[2] = db;
    xt_tensor_release(dy_t);
    free(sums);
    return XT_OK;
}

xt_tensor *xt_group_norm(xt_tensor *x, int32_t groups, xt_tensor *weight, xt_tensor *bias,
                         double eps)
{
    if (!x) return xt_fail_null(XT_ERR_ARG, "group_norm: x is NULL");
    if (check_float(x, "group_norm", "x")) return NULL;
    if (x->ndim < 2) {
        char a[XT_SHAPE_STR];
        return xt_fail_null(XT_ERR_SHAPE,
                            "group_norm: expected x of shape [N,C,...] (at least 2 dims), got %s",
                            xt_shape_str(a, x->ndim, x->shape));
    }
    int64_t N = x->shape[0], C = x->shape[1], S = 1;
    for (int32_t d = 2; d < x->ndim; d++) S *= x->shape[d];
    if (groups <= 0)
        return xt_fail_null(XT_ERR_ARG, "group_norm: groups must be positive, got %d", groups);
    if (C % groups != 0)
        return xt_fail_null(XT_ERR_SHAPE,
                            "group_norm: %d groups do not divide %lld channels (dim %lld of x)",
                            groups, (long long)C, (long long)xt_shown(1));
    if (check_param(weight, 1, &C, "group_norm", "weight") ||
        check_param(bias, 1, &C, "group_norm", "bias"))
        return NULL;
    if (!(eps >= 0)) return xt_fail_null(XT_ERR_ARG, "group_norm: eps must be >= 0, got %g", eps);
    int64_t G = groups, Cg = C / G, NG = N * G;
    double M = (double)(Cg * S);

    xt_tensor *xc = dense(x), *wc = weight ? dense(weight) : NULL, *bc = bias ? dense(bias) : NULL;
    xt_tensor *out = xt_empty(x->ndim, x->shape, XT_FLOAT32);
    xt_tensor *mean_t = float_vec(NG), *rstd_t = float_vec(NG);
    xt_tensor *tmp[6] = {xc, wc, bc, out, mean_t, rstd_t};
    if (!xc || (weight && !wc) || (bias && !bc) || !out || !mean_t || !rstd_t) {
        release_all(6, tmp);
        return NULL;
    }
    const float *xs = xc->data, *wd = wc ? wc->data : NULL, *bd = bc ? bc->data : NULL;
    float *ys = out->data, *mean = mean_t->data, *rstd = rstd_t->data;

#pragma omp parallel for if (N * C * S > XT_PARALLEL_GRAIN && NG > 1)
    for (int64_t ng = 0; ng < NG; ng++) {
        int64_t n = ng / G, g = ng % G, len = Cg * S;
        const float *xg = xs + (n * C + g * Cg) * S;
        double sum = 0, sq = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t i = 0; i < len; i++) sum += xg[i];
        float mu = M > 0 ? (float)(sum / M) : 0.0f;
#pragma omp simd reduction(+ : sq)
        for (int64_t i = 0; i < len; i++) {
            float d = xg[i] - mu;
            sq += (double)(d * d);
        }
        float rs = M > 0 ? (float)(1.0 / sqrt(sq / M + eps)) : 0.0f;
        mean[ng] = mu;
        rstd[ng] = rs;
        for (int64_t cc = 0; cc < Cg; cc++) {
            int64_t c = g * Cg + cc;
            const float *xr = xg + cc * S;
            float *yr = ys + (n * C + c) * S;
            float a = rs * (wd ? wd[c] : 1.0f), k = bd ? bd[c] : 0.0f;
#pragma omp simd
            for (int64_t s = 0; s < S; s++) yr[s] = a * (xr[s] - mu) + k;
        }
    }

    xt_tensor *inputs[3] = {x, weight, bias};
    if (xt_needs_grad(3, inputs)) {
        xt_node *node = xt_node_new("group_norm", group_norm_backward, 3, inputs);
        bool ok = node && !xt_node_save(node, xc) && !xt_node_save(node, mean_t) &&
                  !xt_node_save(node, rstd_t) && (!wc || !xt_node_save(node, wc));
        if (!ok) {
            xt_node_release(node);
            release_all(6, tmp);
            return NULL;
        }
        node->iargs[0] = wc != NULL;
        node->iargs[1] = G;
        xt_node_attach(node, out);
    }
    tmp[3] = NULL;
    release_all(6, tmp);
    return out;
}
