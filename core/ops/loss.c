/*
 * loss.c: cross_entropy, nll_loss and binary_cross_entropy_with_logits with PyTorch's
 * semantics, forward and backward side by side.
 *
 * Class losses view the input as [N,C,S] (S: the product of the dims after the class dim,
 * 1 for [N,C]; an unbatched [C] input is N = S = 1) and the target as N*S positions, each
 * holding one class id counted from base, or ignore_index. For a counted position with
 * target t, weight w (all ones when NULL), W = sum(w), smoothing e and z the logits:
 *
 *   lse = log sum_c exp(z_c)
 *   cross_entropy = (1 - e) w_t (lse - z_t) + (e / C) sum_c w_c (lse - z_c)
 *   nll_loss      = -w_t x_t
 *
 * reduction mean divides the sum by the total weight of the counted positions, sum_p w_t
 * (their number without weight), as PyTorch does for both terms; ignored positions give 0.
 * The cross-entropy gradient is softmax minus the smoothed, weighted one-hot:
 *
 *   dz_c = g (softmax_c Q - q_c),  q_c = (1 - e) w_t [c == t] + (e / C) w_c,  Q = sum_c q_c
 *
 * (Q = 1 without weight), with g the position's share of dout. The forward makes one pass
 * over each position's logits (max, then sum of exp and the smoothing sum together) and
 * saves only the max m and log sum_c exp(z_c - m) of each position ([2, N*S]); the backward
 * recomputes softmax as exp((z - m) - log sum), which stays exact where z is large (lse in
 * float32 would lose digits next to a logit of 1e4).
 *
 * Sums over positions are taken in double over fixed blocks, then over the blocks in
 * order, so results do not depend on the number of threads.
 */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { LOSS_BLOCK = 4096,        /* positions (or elements) per partial sum */
       SPATIAL_TILE = 256 };     /* positions per tile of the [C,S] layout */

/* t as a contiguous tensor (+1), copied outside the graph: the node goes on t itself. */
static xt_tensor *dense(xt_tensor *t)
{
    int32_t prev = xt_set_grad_enabled(0);
    xt_tensor *c = xt_contiguous(t);
    xt_set_grad_enabled(prev);
    return c;
}

static void release_all(int32_t n, xt_tensor **ts)
{
    for (int32_t i = 0; i < n; i++) xt_tensor_release(ts[i]);
}

static xt_status check_reduction(int32_t reduction, const char *op)
{
    if (reduction == XT_REDUCTION_NONE || reduction == XT_REDUCTION_MEAN ||
        reduction == XT_REDUCTION_SUM)
        return XT_OK;
    return xt_fail(XT_ERR_ARG, "%s: reduction must be none (0), mean (1) or sum (2), got %d", op,
                   reduction);
}

/* Sum of v[0..n) in double: fixed blocks in parallel, then the blocks in order. */
static double ordered_sum(const double *v, int64_t n)
{
    int64_t nblocks = (n + LOSS_BLOCK - 1) / LOSS_BLOCK;
    double small[64], *partial = nblocks <= 64 ? small : malloc(sizeof(double) * (size_t)nblocks);
    if (!partial) {
        double s = 0;
        for (int64_t i = 0; i < n; i++) s += v[i];
        return s;
    }
#pragma omp parallel for if (n > XT_PARALLEL_GRAIN)
    for (int64_t b = 0; b < nblocks; b++) {
        int64_t i1 = (b + 1) * LOSS_BLOCK < n ? (b + 1) * LOSS_BLOCK : n;
        double s = 0;
        for (int64_t i = b * LOSS_BLOCK; i < i1; i++) s += v[i];
        partial[b] = s;
    }
    double s = 0;
    for (int64_t b = 0; b < nblocks; b++) s += partial[b];
    if (partial != small) free(partial);
    return s;
}

/* The loss tensor from per-position values: shaped like the target for none, else a
 * 0-dim sum (divided by denom for mean). */
static xt_tensor *reduce_losses(const double *loss, int64_t n, int32_t reduction, double denom,
                                int32_t ndim, const int64_t *shape)
{
    if (reduction == XT_REDUCTION_NONE) {
        xt_tensor *out = xt_empty(ndim, shape, XT_FLOAT32);
        if (!out) return NULL;
        float *o = out->data;
#pragma omp parallel for simd if (n > XT_PARALLEL_GRAIN)
        for (int64_t i = 0; i < n; i++) o[i] = (float)loss[i];
        return out;
    }
    double s = ordered_sum(loss, n);
    return xt_full(0, NULL, XT_FLOAT32, reduction == XT_REDUCTION_MEAN ? s / denom : s);
}

/* exp(x) for the softmax's x = z - max <= 0, in a form the compiler vectorises (glibc's expf
 * is not, without -ffast-math): x = k ln2 + r with |r| <= ln2/2, exp(r) by its Taylor
 * series to r^7 (truncation below 1e-8 relative), times 2^k made from its exponent bits.
 * Within 2 ulp of expf; exactly 0 below -87 (where exp underflows to denormals); NaN stays
 * NaN. Only unsigned integer arithmetic touches the bits, so no input is undefined. */
static inline float exp_nonpositive(float x)
{
    const float log2e = 1.44269504f;
    const float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;  /* ln2 = hi + lo, hi exact */
    const float shifter = 12582912.0f;  /* 1.5 * 2^23: adding it rounds to an integer */
    float xc = x < -87.0f ? -87.0f : x;
    float kf = xc * log2e + shifter;
    uint32_t kbits;
    memcpy(&kbits, &kf, sizeof kbits);  /* 0x4B400000 + k */
    kf -= shifter;
    float r = (xc - kf * ln2_hi) - kf * ln2_lo;
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    uint32_t sbits = (kbits - 0x4B400000u + 127u) << 23;
    float scale;
    memcpy(&scale, &sbits, sizeof scale);
    return x < -87.0f ? 0.0f : p * scale;
}

/* ==== class targets ======================================================================= */

typedef struct class_geom {
    int64_t n, c, s;        /* input viewed as [n, c, s] */
    int64_t positions;      /* n * s, one target each */
} class_geom;

/* Checks input [N,C,d1,...] (or [C]) against target [N,d1,...] (or []) and the weight. */
static xt_status class_check(const xt_tensor *input, const xt_tensor *target,
                             const xt_tensor *weight, const char *op, const char *input_name,
                             class_geom *g)
{
    char a[XT_SHAPE_STR], b[XT_SHAPE_STR], c[XT_SHAPE_STR];
    if (!input || !target)
        return xt_fail(XT_ERR_ARG, "%s: %s is NULL", op, input ? "target" : input_name);
    if (input->dtype != XT_FLOAT32)
        return xt_fail(XT_ERR_DTYPE, "%s: %s must be float32, got %s", op, input_name,
                       xt_dtype_name(input->dtype));
    if (target->dtype != XT_INT64)
        return xt_fail(XT_ERR_DTYPE, "%s: target must hold int64 class indices, got %s", op,
                       xt_dtype_name(target->dtype));
    if (input->ndim < 1)
        return xt_fail(XT_ERR_SHAPE,
                       "%s: %s must be [N,C], [N,C,d1,...] or [C] (classes in dim %lld), got a "
                       "0-dim tensor",
                       op, input_name, (long long)xt_shown(1));
    int32_t cdim = input->ndim == 1 ? 0 : 1;
    int32_t tndim = input->ndim == 1 ? 0 : input->ndim - 1;
    int64_t tshape[XT_MAX_DIMS];
    for (int32_t d = 0, k = 0; d < input->ndim; d++)
        if (d != cdim) tshape[k++] = input->shape[d];
    if (target->ndim != tndim ||
        memcmp(target->shape, tshape, sizeof(int64_t) * (size_t)tndim) != 0)
        return xt_fail(XT_ERR_SHAPE,
                       "%s: target has shape %s, expected %s for %s of shape %s (classes in dim "
                       "%lld)",
                       op, xt_shape_str(a, target->ndim, target->shape),
                       xt_shape_str(b, tndim, tshape), input_name,
                       xt_shape_str(c, input->ndim, input->shape), (long long)xt_shown(cdim));
    g->c = input->shape[cdim];
    g->n = cdim == 1 ? input->shape[0] : 1;
    g->s = 1;
    for (int32_t d = 2; d < input->ndim; d++) g->s *= input->shape[d];
    g->positions = g->n * g->s;
    if (g->c == 0)
        return xt_fail(XT_ERR_SHAPE, "%s: %s of shape %s has no classes (dim %lld is empty)", op,
                       input_name, xt_shape_str(a, input->ndim, input->shape),
                       (long long)xt_shown(cdim));
    if (weight) {
        if (weight->dtype != XT_FLOAT32)
            return xt_fail(XT_ERR_DTYPE, "%s: weight must be float32, got %s", op,
                           xt_dtype_name(weight->dtype));
        if (weight->ndim != 1 || weight->shape[0] != g->c)
            return xt_fail(XT_ERR_SHAPE, "%s: weight has shape %s, expected [%lld] (one per class)",
                           op, xt_shape_str(a, weight->ndim, weight->shape), (long long)g->c);
    }
    return XT_OK;
}

/* Every target must be a class base..base+C-1 or ignore_index. The first bad one is
 * reported as the user counts it (its value and position). *total gets the total weight of
 * the counted positions. */
static xt_status scan_targets(const xt_tensor *target, int64_t C, int64_t ignore_index,
                              int64_t base, const float *w, const char *op, double *total)
{
    const int64_t *t = target->data;
    int64_t n = xt_numel(target);
    double sum = 0;
    for (int64_t p = 0; p < n; p++) {
        if (t[p] == ignore_index) continue;
        if ((uint64_t)t[p] - (uint64_t)base < (uint64_t)C) {
            sum += w ? w[t[p] - base] : 1.0;
            continue;
        }
        char where[XT_SHAPE_STR] = "";
        if (target->ndim > 0) {
            int64_t idx[XT_MAX_DIMS], rest = p;
            for (int32_t d = target->ndim - 1; d >= 0; d--) {
                idx[d] = xt_shown(rest % target->shape[d]);
                rest /= target->shape[d];
            }
            char shown[XT_SHAPE_STR];
            snprintf(where, sizeof where, " at %s", xt_shape_str(shown, target->ndim, idx));
        }
        return xt_fail(XT_ERR_ARG,
                       "%s: target class %lld%s is out of range: classes are %lld..%lld (%lld "
                       "classes; ignore_index is %lld)",
                       op, (long long)t[p], where, (long long)base, (long long)(base + C - 1),
                       (long long)C, (long long)ignore_index);
    }
    *total = sum;
    return XT_OK;
}

/* The share of dout that position p's loss gets. */
static inline float position_grad(const float *dout, int64_t p, int32_t reduction, double total)
{
    if (reduction == XT_REDUCTION_NONE) return dout[p];
    return reduction == XT_REDUCTION_MEAN ? (float)(dout[0] / total) : dout[0];
}

/* ==== cross_entropy ======================================================================= */

typedef struct ce_args {
    const float *z;          /* logits [n, c, s] */
    const int64_t *t;        /* targets [n * s] */
    const float *w;          /* weight [c] or NULL */
    int64_t ignore, base;
    float smooth;            /* label_smoothing */
    double wsum;             /* sum of w (C without weight) */
} ce_args;

/* A counted position's loss from its target class k (0-based), lse, max m, target logit
 * and sum_c w_c (m - z_c). */
static inline double ce_position_loss(const ce_args *a, const class_geom *g, int64_t k,
                                      double lse, double m, double zt, double smooth_sum)
{
    double wt = a->w ? a->w[k] : 1.0, e = a->smooth;
    double loss = (1 - e) * wt * (lse - zt);
    if (e > 0) loss += e / (double)g->c * (a->wsum * (lse - m) + smooth_sum);
    return loss;
}

/* [N,C] layout: each position is one contiguous row of C logits. */
/* stats [2, positions]: the max, then log sum exp(z - max), of each position. */
static void ce_forward_rows(const ce_args *a, const class_geom *g, float *stats, double *loss)
{
    const int64_t C = g->c;
    const bool smooth = a->smooth > 0;
#pragma omp parallel for schedule(static) if (g->positions * C > XT_PARALLEL_GRAIN)
    for (int64_t p = 0; p < g->positions; p++) {
        const float *z = a->z + p * C;
        float m = -INFINITY;  /* a NaN logit is skipped here but still poisons the sum below */
#pragma omp simd reduction(max : m)
        for (int64_t c = 0; c < C; c++) m = z[c] > m ? z[c] : m;
        double se = 0, ss = 0;  /* sum of exp(z - m); sum of w_c (m - z_c) */
        if (smooth && a->w) {
#pragma omp simd reduction(+ : se, ss)
            for (int64_t c = 0; c < C; c++) {
                se += exp_nonpositive(z[c] - m);
                ss += a->w[c] * (m - z[c]);
            }
        } else if (smooth) {
#pragma omp simd reduction(+ : se, ss)
            for (int64_t c = 0; c < C; c++) {
                se += exp_nonpositive(z[c] - m);
                ss += m - z[c];
            }
        } else {
#pragma omp simd reduction(+ : se)
            for (int64_t c = 0; c < C; c++) se += exp_nonpositive(z[c] - m);
        }
        const float log_se = logf((float)se);  /* float: the stats are kept in float anyway */
        double lse = (double)m + log_se;
        stats[p] = m;
        stats[g->positions + p] = log_se;
        int64_t t = a->t[p];
        loss[p] = t == a->ignore ? 0.0
                                 : ce_position_loss(a, g, t - a->base, lse, m, z[t - a->base], ss);
    }
}

/* [N,C,S] layout: tiles of up to SPATIAL_TILE positions of one image; the class loop is
 * outside, so the inner loops run over contiguous positions. */
static void ce_forward_spatial(const ce_args *a, const class_geom *g, float *stats,
                               double *loss)
{
    const int64_t C = g->c, S = g->s, tiles = (S + SPATIAL_TILE - 1) / SPATIAL_TILE;
    const bool smooth = a->smooth > 0;
#pragma omp parallel for schedule(static) if (g->positions * C > XT_PARALLEL_GRAIN)
    for (int64_t task = 0; task < g->n * tiles; task++) {
        const int64_t n = task / tiles, s0 = task % tiles * SPATIAL_TILE;
        const int64_t len = S - s0 < SPATIAL_TILE ? S - s0 : SPATIAL_TILE;
        const float *zn = a->z + n * C * S + s0;
        float m[SPATIAL_TILE];
        double se[SPATIAL_TILE], ss[SPATIAL_TILE];
        for (int64_t s = 0; s < len; s++) {
            m[s] = -INFINITY;
            se[s] = 0;
            ss[s] = 0;
        }
        for (int64_t c = 0; c < C; c++) {
            const float *z = zn + c * S;
#pragma omp simd
            for (int64_t s = 0; s < len; s++) m[s] = z[s] > m[s] ? z[s] : m[s];
        }
        for (int64_t c = 0; c < C; c++) {
            const float *z = zn + c * S;
            const float wc = a->w ? a->w[c] : 1.0f;
#pragma omp simd
            for (int64_t s = 0; s < len; s++) se[s] += exp_nonpositive(z[s] - m[s]);
            if (smooth) {
#pragma omp simd
                for (int64_t s = 0; s < len; s++) ss[s] += wc * (m[s] - z[s]);
            }
        }
        for (int64_t s = 0; s < len; s++) {
            const int64_t p = n * S + s0 + s, t = a->t[p];
            const float log_se = logf((float)se[s]);
            double lse = (double)m[s] + log_se;
            stats[p] = m[s];
            stats[g->positions + p] = log_se;
            loss[p] = t == a->ignore ? 0.0
                                     : ce_position_loss(a, g, t - a->base, lse, m[s],
                                                        zn[(t - a->base) * S + s], ss[s]);
        }
    }
}

/* dz for the [N,C] layout. */
static void ce_backward_rows(const ce_args *a, const class_geom *g, const float *stats,
                             const float *dout, int32_t reduction, double total, float *dz)
{
    const int64_t C = g->c;
    const float e = a->smooth, each = e / (float)C;
#pragma omp parallel for schedule(static) if (g->positions * C > XT_PARALLEL_GRAIN)
    for (int64_t p = 0; p < g->positions; p++) {
        const float *z = a->z + p * C;
        float *d = dz + p * C;
        const int64_t t = a->t[p];
        if (t == a->ignore) {
            memset(d, 0, sizeof(float) * (size_t)C);
            continue;
        }
        const int64_t k = t - a->base;
        const float gp = position_grad(dout, p, reduction, total);
        const float m = stats[p], l = stats[g->positions + p];
        const float wt = a->w ? a->w[k] : 1.0f;
        const float Q = (1 - e) * wt + each * (float)a->wsum;
        if (a->w && e > 0) {
#pragma omp simd
            for (int64_t c = 0; c < C; c++) d[c] = gp * (exp_nonpositive((z[c] - m) - l) * Q - each * a->w[c]);
        } else {
            const float q = each;  /* the same smoothing for every class */
#pragma omp simd
            for (int64_t c = 0; c < C; c++) d[c] = gp * (exp_nonpositive((z[c] - m) - l) * Q - q);
        }
        d[k] -= gp * (1 - e) * wt;
    }
}

/* dz for the [N,C,S] layout, tile by tile as the forward. */
static void ce_backward_spatial(const ce_args *a, const class_geom *g, const float *stats,
                                const float *dout, int32_t reduction, double total, float *dz)
{
    const int64_t C = g->c, S = g->s, tiles = (S + SPATIAL_TILE - 1) / SPATIAL_TILE;
    const float e = a->smooth, each = e / (float)C;
#pragma omp parallel for schedule(static) if (g->positions * C > XT_PARALLEL_GRAIN)
    for (int64_t task = 0; task < g->n * tiles; task++) {
        const int64_t n = task / tiles, s0 = task % tiles * SPATIAL_TILE;
        const int64_t len = S - s0 < SPATIAL_TILE ? S - s0 : SPATIAL_TILE;
        const float *zn = a->z + n * C * S + s0;
        float *dn = dz + n * C * S + s0;
        float gp[SPATIAL_TILE], Q[SPATIAL_TILE], m[SPATIAL_TILE], l[SPATIAL_TILE];
        for (int64_t s = 0; s < len; s++) {
            const int64_t p = n * S + s0 + s, t = a->t[p];
            const bool counted = t != a->ignore;
            const float wt = counted && a->w ? a->w[t - a->base] : 1.0f;
            gp[s] = counted ? position_grad(dout, p, reduction, total) : 0.0f;
            Q[s] = (1 - e) * wt + each * (float)a->wsum;
            m[s] = stats[p];
            l[s] = stats[g->positions + p];
        }
        for (int64_t c = 0; c < C; c++) {
            const float *z = zn + c * S;
            float *d = dn + c * S;
            const float qc = each * (a->w ? a->w[c] : 1.0f);
#pragma omp simd
            for (int64_t s = 0; s < len; s++)
                d[s] = gp[s] * (exp_nonpositive((z[s] - m[s]) - l[s]) * Q[s] - qc);
        }
        for (int64_t s = 0; s < len; s++) {
            const int64_t t = a->t[n * S + s0 + s];
            if (t == a->ignore) {
                /* exactly 0, even where the logits are not finite */
                for (int64_t c = 0; c < C; c++) dn[c * S + s] = 0.0f;
                continue;
            }
            const float wt = a->w ? a->w[t - a->base] : 1.0f;
            dn[(t - a->base) * S + s] -= gp[s] * (1 - e) * wt;
        }
    }
}

static double weight_sum(const float *w, int64_t C)
{
    if (!w) return (double)C;
    double s = 0;
    for (int64_t c = 0; c < C; c++) s += w[c];
    return s;
}

/* saved: 0 logits, 1 target, 2 stats [2, positions], 3 weight (when iargs[3]); all contiguous.
 * iargs: 0 reduction, 1 ignore_index, 2 base, 3 has weight. fargs: 0 smoothing, 1 total. */
static xt_status cross_entropy_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    bool has_weight = node->iargs[3] != 0;
    xt_tensor *z = xt_node_saved(node, 0), *t = xt_node_saved(node, 1);
    xt_tensor *stats = xt_node_saved(node, 2), *w = has_weight ? xt_node_saved(node, 3) : NULL;
    if (!z || !t || !stats || (has_weight && !w)) return xt_last_status();
    class_geom g;
    if (class_check(z, t, w, "cross_entropy", "logits", &g) != XT_OK) return xt_last_status();
    xt_tensor *d = xt_contiguous(dout);
    xt_tensor *dz = d ? xt_empty(z->ndim, z->shape, XT_FLOAT32) : NULL;
    if (!dz) {
        xt_tensor_release(d);
        return xt_last_status();
    }
    ce_args a = {z->data, t->data, w ? w->data : NULL, node->iargs[1], node->iargs[2],
                 (float)node->fargs[0], 0};
    a.wsum = weight_sum(a.w, g.c);
    int32_t reduction = (int32_t)node->iargs[0];
    if (g.s == 1)
        ce_backward_rows(&a, &g, stats->data, d->data, reduction, node->fargs[1], dz->data);
    else
        ce_backward_spatial(&a, &g, stats->data, d->data, reduction, node->fargs[1], dz->data);
    xt_tensor_release(d);
    dinputs[0] = dz;
    return XT_OK;
}

xt_tensor *xt_cross_entropy(xt_tensor *logits, xt_tensor *target, xt_tensor *weight,
                            int64_t ignore_index, double label_smoothing, int32_t reduction,
                            int64_t base)
{
    const char *op = "cross_entropy";
    class_geom g;
    if (class_check(logits, target, weight, op, "logits", &g) != XT_OK ||
        check_reduction(reduction, op) != XT_OK)
        return NULL;
    if (!(label_smoothing >= 0 && label_smoothing <= 1))
        return xt_fail_null(XT_ERR_ARG, "%s: label_smoothing must be in [0, 1], got %g", op,
                            label_smoothing);
    xt_tensor *z = dense(logits), *t = dense(target), *w = weight ? dense(weight) : NULL;
    int64_t npos = g.positions;
    int64_t stats_shape[2] = {2, npos};
    xt_tensor *stats = xt_empty(2, stats_shape, XT_FLOAT32);
    double *loss = malloc(sizeof(double) * (size_t)(npos > 0 ? npos : 1));
    xt_tensor *tmp[4] = {z, t, w, stats};
    xt_tensor *out = NULL;
    double total = 0;
    if (!loss) xt_fail(XT_ERR_OOM, "%s: out of memory", op);
    if (!loss || !z || !t || (weight && !w) || !stats ||
        scan_targets(t, g.c, ignore_index, base, w ? w->data : NULL, op, &total) != XT_OK)
        goto done;

    ce_args a = {z->data, t->data, w ? w->data : NULL, ignore_index, base,
                 (float)label_smoothing, 0};
    a.wsum = weight_sum(a.w, g.c);
    if (g.s == 1)
        ce_forward_rows(&a, &g, stats->data, loss);
    else
        ce_forward_spatial(&a, &g, stats->data, loss);
    out = reduce_losses(loss, npos, reduction, total, target->ndim, target->shape);
    if (!out || !xt_needs_grad(1, &logits)) goto done;

    xt_node *node = xt_node_new(op, cross_entropy_backward, 1, &logits);
    bool ok = node && !xt_node_save(node, z) && !xt_node_save(node, t) &&
              !xt_node_save(node, stats) && (!w || !xt_node_save(node, w));
    if (!ok) {
        xt_node_release(node);
        xt_tensor_release(out);
        out = NULL;
        goto done;
    }
    node->iargs[0] = reduction;
    node->iargs[1] = ignore_index;
    node->iargs[2] = base;
    node->iargs[3] = w != NULL;
    node->fargs[0] = label_smoothing;
    node->fargs[1] = total;
    xt_node_attach(node, out);
done:
    free(loss);
    release_all(4, tmp);
    return out;
}

/* ==== nll_loss ============================================================================ */

/* saved: 0 target, 1 weight (when iargs[3]). iargs: 0 reduction, 1 ignore_index, 2 base,
 * 3 has weight. fargs: 1 total. */
static xt_status nll_loss_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    bool has_weight = node->iargs[3] != 0;
    xt_tensor *t = xt_node_saved(node, 0), *w = has_weight ? xt_node_saved(node, 1) : NULL;
    if (!t || (has_weight && !w)) return xt_last_status();
    const xt_edge *e = &node->inputs[0];
    int64_t C = e->ndim == 1 ? e->shape[0] : e->shape[1];
    int64_t S = 1, P = xt_numel(t);
    for (int32_t k = 2; k < e->ndim; k++) S *= e->shape[k];
    xt_tensor *d = xt_contiguous(dout);
    xt_tensor *dx = d ? xt_zeros(e->ndim, e->shape, XT_FLOAT32) : NULL;
    if (!dx) {
        xt_tensor_release(d);
        return xt_last_status();
    }
    const int64_t *tv = t->data, ignore = node->iargs[1], base = node->iargs[2];
    const float *wv = w ? w->data : NULL, *dv = d->data;
    float *dxv = dx->data;
    int32_t reduction = (int32_t)node->iargs[0];
    double total = node->fargs[1];
#pragma omp parallel for if (P > XT_PARALLEL_GRAIN)
    for (int64_t p = 0; p < P; p++) {
        if (tv[p] == ignore) continue;
        int64_t k = tv[p] - base, n = p / S, s = p % S;
        float wt = wv ? wv[k] : 1.0f;
        dxv[(n * C + k) * S + s] = -wt * position_grad(dv, p, reduction, total);
    }
    xt_tensor_release(d);
    dinputs[0] = dx;
    return XT_OK;
}

xt_tensor *xt_nll_loss(xt_tensor *log_probs, xt_tensor *target, xt_tensor *weight,
                       int64_t ignore_index, int32_t reduction, int64_t base)
{
    const char *op = "nll_loss";
    class_geom g;
    if (class_check(log_probs, target, weight, op, "log_probs", &g) != XT_OK ||
        check_reduction(reduction, op) != XT_OK)
        return NULL;
    xt_tensor *x = dense(log_probs), *t = dense(target), *w = weight ? dense(weight) : NULL;
    int64_t P = g.positions;
    double *loss = malloc(sizeof(double) * (size_t)(P > 0 ? P : 1));
    xt_tensor *tmp[3] = {x, t, w};
    xt_tensor *out = NULL;
    double total = 0;
    if (!loss) xt_fail(XT_ERR_OOM, "%s: out of memory", op);
    if (!loss || !x || !t || (weight && !w) ||
        scan_targets(t, g.c, ignore_index, base, w ? w->data : NULL, op, &total) != XT_OK)
        goto done;

    const int64_t *tv = t->data, C = g.c, S = g.s;
    const float *xv = x->data, *wv = w ? w->data : NULL;
#pragma omp parallel for if (P > XT_PARALLEL_GRAIN)
    for (int64_t p = 0; p < P; p++) {
        if (tv[p] == ignore_index) {
            loss[p] = 0;
            continue;
        }
        int64_t k = tv[p] - base, n = p / S, s = p % S;
        loss[p] = -(double)(wv ? wv[k] : 1.0f) * xv[(n * C + k) * S + s];
    }
    out = reduce_losses(loss, P, reduction, total, target->ndim, target->shape);
    if (!out || !xt_needs_grad(1, &log_probs)) goto done;

    xt_node *node = xt_node_new(op, nll_loss_backward, 1, &log_probs);
    if (!node || xt_node_save(node, t) || (w && xt_node_save(node, w))) {
        xt_node_release(node);
        xt_tensor_release(out);
        out = NULL;
        goto done;
    }
    node->iargs[0] = reduction;
    node->iargs[1] = ignore_index;
    node->iargs[2] = base;
    node->iargs[3] = w != NULL;
    node->fargs[1] = total;
    xt_node_attach(node, out);
done:
    free(loss);
    release_all(3, tmp);
    return out;
}

/* ==== binary_cross_entropy_with_logits =====================================================
 * With y the target, pw the positive weight (1 without) and L = 1 + (pw - 1) y:
 *   loss = (1 - y) x + L softplus(-x),  softplus(-x) = max(-x, 0) + log1p(exp(-|x|))
 *   dx = (1 - y) - L sigmoid(-x)        dy = -x + (pw - 1) softplus(-x)
 * pos_weight [K] lines up with the last dim of x; the loops walk runs of elements that end
 * at row ends, so pw is read with stride 1 (or 0 for a single pos_weight, or none). */

static inline float softplus_neg(float x) { return fmaxf(-x, 0.0f) + log1pf(expf(-fabsf(x))); }

typedef struct bce_args {
    const float *x, *y, *pw;    /* x, target [n]; pos_weight [K], [1] or NULL */
    int64_t n, row;             /* elements; run length at which pw starts again */
    int64_t pw_stride;          /* 1 for pos_weight [K], else 0 */
} bce_args;

static bce_args bce_setup(const xt_tensor *x, const xt_tensor *y, const xt_tensor *pw)
{
    bce_args a = {x->data, y->data, pw ? pw->data : NULL, xt_numel(x), LOSS_BLOCK, 0};
    if (pw && xt_numel(pw) > 1) {
        a.row = x->shape[x->ndim - 1];
        a.pw_stride = 1;
    }
    return a;
}

/* Calls body(i, len, pw) over runs [i, i+len) of the element block [i0, i1). */
#define BCE_RUNS(a, i0, i1, body)                                                          \
    for (int64_t i = (i0); i < (i1);) {                                                    \
        int64_t j = (a)->pw_stride ? i % (a)->row : 0;                                     \
        int64_t len = (a)->pw_stride && (a)->row - j < (i1) - i ? (a)->row - j : (i1) - i; \
        const float *pw = (a)->pw ? (a)->pw + j : NULL;                                    \
        body;                                                                              \
        i += len;                                                                          \
    }

/* Losses of elements [i, i+len) into out (when not NULL); returns their sum. */
static double bce_forward_run(const bce_args *a, int64_t i, int64_t len, const float *pw,
                              float *out)
{
    const float *x = a->x + i, *y = a->y + i;
    const int64_t ps = a->pw_stride;
    double s = 0;
    if (out) {
        float *o = out + i;
#pragma omp simd reduction(+ : s)
        for (int64_t k = 0; k < len; k++) {
            float L = pw ? 1.0f + (pw[k * ps] - 1.0f) * y[k] : 1.0f;
            o[k] = (1.0f - y[k]) * x[k] + L * softplus_neg(x[k]);
            s += o[k];
        }
    } else {
#pragma omp simd reduction(+ : s)
        for (int64_t k = 0; k < len; k++) {
            float L = pw ? 1.0f + (pw[k * ps] - 1.0f) * y[k] : 1.0f;
            s += (1.0f - y[k]) * x[k] + L * softplus_neg(x[k]);
        }
    }
    return s;
}

/* dx, dy (either may be NULL) of elements [i, i+len); g[k * gs] * scale is their dout. */
static void bce_backward_run(const bce_args *a, int64_t i, int64_t len, const float *pw,
                             const float *g, int64_t gs, float scale, float *dx, float *dy)
{
    const float *x = a->x + i, *y = a->y + i;
    const int64_t ps = a->pw_stride;
    g += i * gs;
    if (dx) {
        float *d = dx + i;
#pragma omp simd
        for (int64_t k = 0; k < len; k++) {
            float L = pw ? 1.0f + (pw[k * ps] - 1.0f) * y[k] : 1.0f;
            d[k] = g[k * gs] * scale * ((1.0f - y[k]) - L / (1.0f + expf(x[k])));
        }
    }
    if (dy) {
        float *d = dy + i;
#pragma omp simd
        for (int64_t k = 0; k < len; k++) {
            float pm1 = pw ? pw[k * ps] - 1.0f : 0.0f;
            d[k] = g[k * gs] * scale * (-x[k] + pm1 * softplus_neg(x[k]));
        }
    }
}

/* saved: 0 x, 1 target, 2 pos_weight (when iargs[1]); all contiguous. iargs: 0 reduction,
 * 1 has pos_weight. */
static xt_status bce_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    bool has_pw = node->iargs[1] != 0;
    int32_t reduction = (int32_t)node->iargs[0];
    xt_tensor *x = xt_node_saved(node, 0), *y = xt_node_saved(node, 1);
    xt_tensor *pw_t = has_pw ? xt_node_saved(node, 2) : NULL;
    if (!x || !y || (has_pw && !pw_t)) return xt_last_status();
    bool need_x = xt_node_needs(node, 0), need_y = xt_node_needs(node, 1);
    xt_tensor *d = xt_contiguous(dout);
    xt_tensor *dx = d && need_x ? xt_empty(x->ndim, x->shape, XT_FLOAT32) : NULL;
    xt_tensor *dy = d && need_y ? xt_empty(x->ndim, x->shape, XT_FLOAT32) : NULL;
    if (!d || (need_x && !dx) || (need_y && !dy)) {
        xt_tensor *ts[3] = {d, dx, dy};
        release_all(3, ts);
        return xt_last_status();
    }
    bce_args a = bce_setup(x, y, pw_t);
    const bool each = reduction == XT_REDUCTION_NONE;
    const int64_t gs = each ? 1 : 0, nblocks = (a.n + LOSS_BLOCK - 1) / LOSS_BLOCK;
    const float scale = reduction == XT_REDUCTION_MEAN ? (float)(1.0 / (double)a.n) : 1.0f;
    const float *g = d->data;
    float *dxv = dx ? dx->data : NULL, *dyv = dy ? dy->data : NULL;
#pragma omp parallel for schedule(static) if (a.n > XT_PARALLEL_GRAIN)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        int64_t i0 = blk * LOSS_BLOCK, i1 = i0 + LOSS_BLOCK < a.n ? i0 + LOSS_BLOCK : a.n;
        BCE_RUNS(&a, i0, i1, bce_backward_run(&a, i, len, pw, g, gs, scale, dxv, dyv));
    }
    xt_tensor_release(d);
    dinputs[0] = dx;
    dinputs[1] = dy;
    return XT_OK;
}

xt_tensor *xt_bce_with_logits(xt_tensor *x, xt_tensor *target, xt_tensor *pos_weight,
                              int32_t reduction)
{
    const char *op = "bce_with_logits";
    char s1[XT_SHAPE_STR], s2[XT_SHAPE_STR];
    if (!x || !target)
        return xt_fail_null(XT_ERR_ARG, "%s: %s is NULL", op, x ? "target" : "x");
    if (check_reduction(reduction, op) != XT_OK) return NULL;
    const xt_tensor *ins[3] = {x, target, pos_weight};
    const char *names[3] = {"x", "target", "pos_weight"};
    for (int k = 0; k < 3; k++)
        if (ins[k] && ins[k]->dtype != XT_FLOAT32)
            return xt_fail_null(XT_ERR_DTYPE, "%s: %s must be float32, got %s", op, names[k],
                                xt_dtype_name(ins[k]->dtype));
    if (!xt_same_shape(x, target))
        return xt_fail_null(XT_ERR_SHAPE, "%s: target has shape %s, expected the shape of x %s",
                            op, xt_shape_str(s1, target->ndim, target->shape),
                            xt_shape_str(s2, x->ndim, x->shape));
    int64_t K = x->ndim > 0 ? x->shape[x->ndim - 1] : 1;
    if (pos_weight &&
        (pos_weight->ndim != 1 || (pos_weight->shape[0] != K && pos_weight->shape[0] != 1)))
        return xt_fail_null(XT_ERR_SHAPE,
                            "%s: pos_weight has shape %s, expected [%lld] (the last dim of x %s) "
                            "or [1]",
                            op, xt_shape_str(s1, pos_weight->ndim, pos_weight->shape),
                            (long long)K, xt_shape_str(s2, x->ndim, x->shape));
    xt_tensor *xc = dense(x), *yc = dense(target), *pc = pos_weight ? dense(pos_weight) : NULL;
    xt_tensor *tmp[3] = {xc, yc, pc};
    xt_tensor *out = NULL;
    double *partial = NULL;
    if (!xc || !yc || (pos_weight && !pc)) goto done;
    bce_args a = bce_setup(xc, yc, pc);
    int64_t nblocks = (a.n + LOSS_BLOCK - 1) / LOSS_BLOCK;
    if (reduction == XT_REDUCTION_NONE) {
        if (!(out = xt_empty(x->ndim, x->shape, XT_FLOAT32))) goto done;
    } else if (!(partial = malloc(sizeof(double) * (size_t)(nblocks > 0 ? nblocks : 1)))) {
        xt_fail(XT_ERR_OOM, "%s: out of memory", op);
        goto done;
    }

    float *ov = out ? out->data : NULL;
#pragma omp parallel for schedule(static) if (a.n > XT_PARALLEL_GRAIN)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        int64_t i0 = blk * LOSS_BLOCK, i1 = i0 + LOSS_BLOCK < a.n ? i0 + LOSS_BLOCK : a.n;
        double s = 0;
        BCE_RUNS(&a, i0, i1, s += bce_forward_run(&a, i, len, pw, ov));
        if (partial) partial[blk] = s;
    }
    if (partial) {
        double s = 0;
        for (int64_t blk = 0; blk < nblocks; blk++) s += partial[blk];
        out = xt_full(0, NULL, XT_FLOAT32, reduction == XT_REDUCTION_MEAN ? s / (double)a.n : s);
        if (!out) goto done;
    }
    xt_tensor *inputs[2] = {x, target};
    if (!xt_needs_grad(2, inputs)) goto done;
    xt_node *node = xt_node_new(op, bce_backward, 2, inputs);
    if (!node || xt_node_save(node, xc) || xt_node_save(node, yc) ||
        (pc && xt_node_save(node, pc))) {
        xt_node_release(node);
        xt_tensor_release(out);
        out = NULL;
        goto done;
    }
    node->iargs[0] = reduction;
    node->iargs[1] = pc != NULL;
    xt_node_attach(node, out);
done:
    free(partial);
    release_all(3, tmp);
    return out;
}
