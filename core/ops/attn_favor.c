/*
 * attn_favor.c: the FAVOR+ positive random feature map of Performer attention, forward and
 * backward side by side (research/efficient_attention.md § 2.8; Choromanski et al. 2021).
 *
 * x [..., T, d] viewed as R = units * T rows, w [m, d] (rows omega_r), x' = d^(-1/4) x:
 *   u_ir   = omega_r . x'_i - |x'_i|^2 / 2                       (one GEMM, then a row pass)
 *   phi_ir = m^(-1/2) (exp(u_ir - s) + eps)                       [..., T, m]
 * so that phi(q) . phi(k) estimates exp(q . k / sqrt d) up to the shifts. The shift s keeps exp
 * in float range: each row's max (queries), one max per unit = [T, m] slice (keys of
 * bidirectional attention) or none (keys of causal attention). A shift common to a query row
 * or to all keys of a unit cancels in the attention's num / den; only eps does not.
 *
 * Backward, with e_ir = phi_ir - m^(-1/2) eps = m^(-1/2) exp(u_ir - s):
 *   du_ir = dphi_ir e_ir, and the shift's share: s is the max of its u's, so the entry that
 *           attains it (found again as the argmax of phi) also gets -sum of du over its group
 *   dx_i  = d^(-1/4) sum_r du_ir omega_r - d^(-1/2) x_i sum_r du_ir
 *   dw_r  = d^(-1/4) sum_i du_ir x_i                               (only when w needs grad)
 * Saved: x (contiguous), w (contiguous) and phi itself.
 */
#include "internal.h"
#include "fast_exp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *OP = "favor_features";

typedef struct favor_geom {
    int64_t units, T, d, m;
    int shift;
    float eps;
    float x_scale;   /* d^(-1/4) */
    float ratio;     /* m^(-1/2) */
} favor_geom;

static favor_geom geometry(const xt_tensor *x, const xt_tensor *w, int32_t shift, double eps)
{
    int32_t nd = x->ndim;
    favor_geom g = {.units = xt_shape_numel(nd - 2, x->shape), .T = x->shape[nd - 2],
                    .d = x->shape[nd - 1], .m = w->shape[0], .shift = shift, .eps = (float)eps};
    g.x_scale = (float)pow((double)g.d, -0.25);
    g.ratio = (float)(1.0 / sqrt((double)g.m));
    return g;
}

static xt_tensor *dense(xt_tensor *t)
{
    int32_t prev = xt_set_grad_enabled(0);
    xt_tensor *c = xt_contiguous(t);
    xt_set_grad_enabled(prev);
    return c;
}

/* ---- forward ----------------------------------------------------------------------------- */

/* phi [R, m] from x [R, d] and w [m, d]; row_max [R] is scratch. */
static void forward(const favor_geom *g, const float *x, const float *w, float *phi,
                    float *row_max)
{
    const int64_t R = g->units * g->T, d = g->d, m = g->m;
    xt_sgemm(false, true, R, m, d, g->x_scale, x, d, w, d, 0.0f, phi, m);
    const float half_sq = 0.5f * g->x_scale * g->x_scale;
#pragma omp parallel for schedule(static) if (R * m > XT_PARALLEL_GRAIN)
    for (int64_t i = 0; i < R; i++) {
        const float *xi = x + i * d;
        float *u = phi + i * m, sq = 0.0f, mx = -INFINITY;
#pragma omp simd reduction(+ : sq)
        for (int64_t c = 0; c < d; c++) sq += xi[c] * xi[c];
        float diag = half_sq * sq;
#pragma omp simd reduction(max : mx)
        for (int64_t r = 0; r < m; r++) {
            u[r] -= diag;
            mx = fmaxf(mx, u[r]);
        }
        row_max[i] = mx;
    }
    if (g->shift == XT_FAVOR_SHIFT_UNIT) {   /* one max per unit, held in its first row */
        for (int64_t n = 0; n < g->units; n++) {
            float mx = -INFINITY;
            for (int64_t t = 0; t < g->T; t++) mx = fmaxf(mx, row_max[n * g->T + t]);
            for (int64_t t = 0; t < g->T; t++) row_max[n * g->T + t] = mx;
        }
    }
    const float ratio = g->ratio, floor_ = g->ratio * g->eps;
#pragma omp parallel for schedule(static) if (R * m > XT_PARALLEL_GRAIN)
    for (int64_t i = 0; i < R; i++) {
        float *p = phi + i * m;
        float s = g->shift == XT_FAVOR_SHIFT_NONE ? 0.0f : row_max[i];
#pragma omp simd
        for (int64_t r = 0; r < m; r++) p[r] = fmaf(ratio, xt_fast_expf(p[r] - s), floor_);
    }
}

/* ---- backward ----------------------------------------------------------------------------- */

/* Index of the first largest of x[0 .. n-1]. */
static int64_t argmax_of(const float *x, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* du [R, m] from dphi and phi, with the shift's share. */
static void du_of(const favor_geom *g, const float *phi, const float *dphi, float *du)
{
    const int64_t R = g->units * g->T, m = g->m;
    const float floor_ = g->ratio * g->eps;
    const bool per_row = g->shift == XT_FAVOR_SHIFT_ROW;
#pragma omp parallel for schedule(static) if (R * m > XT_PARALLEL_GRAIN)
    for (int64_t i = 0; i < R; i++) {
        const float *p = phi + i * m, *dp = dphi + i * m;
        float *o = du + i * m, sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t r = 0; r < m; r++) {
            o[r] = dp[r] * (p[r] - floor_);
            sum += o[r];
        }
        if (per_row) o[argmax_of(p, m)] -= sum;
    }
    if (g->shift == XT_FAVOR_SHIFT_UNIT) {
        const int64_t len = g->T * m;
        for (int64_t n = 0; n < g->units; n++) {
            const float *p = phi + n * len;
            float *o = du + n * len;
            double sum = 0;
            for (int64_t e = 0; e < len; e++) sum += o[e];
            o[argmax_of(p, len)] -= (float)sum;
        }
    }
}

/* saved: 0 x, 1 w (both contiguous), 2 phi. iargs: 0 shift. fargs: 0 eps. */
static xt_status favor_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *x = xt_node_saved(node, 0), *w = xt_node_saved(node, 1);
    xt_tensor *phi = xt_node_saved(node, 2);
    if (!x || !w || !phi) return xt_last_status();
    favor_geom g = geometry(x, w, (int32_t)node->iargs[0], node->fargs[0]);
    const int64_t R = g.units * g.T, d = g.d, m = g.m;
    bool need_x = xt_node_needs(node, 0), need_w = xt_node_needs(node, 1);
    xt_tensor *dphi = xt_contiguous(dout);
    int64_t du_shape[2] = {R, m};
    xt_tensor *du = xt_empty(2, du_shape, XT_FLOAT32);
    xt_tensor *dx = need_x ? xt_empty(x->ndim, x->shape, XT_FLOAT32) : NULL;
    xt_tensor *dw = need_w ? xt_empty(2, w->shape, XT_FLOAT32) : NULL;
    if (!dphi || !du || (need_x && !dx) || (need_w && !dw)) {
        xt_tensor *all[4] = {dphi, du, dx, dw};
        for (int i = 0; i < 4; i++) xt_tensor_release(all[i]);
        return xt_last_status();
    }
    float *dup = du->data;
    du_of(&g, phi->data, dphi->data, dup);
    if (dx) {
        const float *xp = x->data;
        float *o = dx->data;
        xt_sgemm(false, false, R, d, m, g.x_scale, dup, m, w->data, d, 0.0f, o, d);
        const float sq_scale = g.x_scale * g.x_scale;
#pragma omp parallel for schedule(static) if (R * m > XT_PARALLEL_GRAIN)
        for (int64_t i = 0; i < R; i++) {
            const float *ui = dup + i * m, *xi = xp + i * d;
            float *oi = o + i * d, sum = 0.0f;
#pragma omp simd reduction(+ : sum)
            for (int64_t r = 0; r < m; r++) sum += ui[r];
            float k = sq_scale * sum;
#pragma omp simd
            for (int64_t c = 0; c < d; c++) oi[c] -= k * xi[c];
        }
    }
    if (dw) xt_sgemm(true, false, m, d, R, g.x_scale, dup, m, x->data, d, 0.0f, dw->data, d);
    xt_tensor_release(dphi);
    xt_tensor_release(du);
    dinputs[0] = dx;
    dinputs[1] = dw;
    return XT_OK;
}

static xt_status check_args(const xt_tensor *x, const xt_tensor *w, int32_t shift, double eps)
{
    if (!x || !w) return xt_fail(XT_ERR_ARG, "%s: %s is NULL", OP, x ? "w" : "x");
    if (x->dtype != XT_FLOAT32 || w->dtype != XT_FLOAT32)
        return xt_fail(XT_ERR_DTYPE, "%s: expected float32 x and w, got %s and %s", OP,
                       xt_dtype_name(x->dtype), xt_dtype_name(w->dtype));
    char a[XT_SHAPE_STR], b[XT_SHAPE_STR];
    xt_shape_str(a, x->ndim, x->shape);
    xt_shape_str(b, w->ndim, w->shape);
    if (x->ndim < 2 || w->ndim != 2)
        return xt_fail(XT_ERR_SHAPE,
                       "%s: expected x [...,T,d] and w [m,d] (one random feature per row), got "
                       "x %s and w %s", OP, a, b);
    if (w->shape[1] != x->shape[x->ndim - 1] || w->shape[0] == 0 || w->shape[1] == 0)
        return xt_fail(XT_ERR_SHAPE,
                       "%s: w must be [m,d] with m >= 1 and d = the last dim of x, got x %s and "
                       "w %s", OP, a, b);
    if (shift != XT_FAVOR_SHIFT_ROW && shift != XT_FAVOR_SHIFT_UNIT &&
        shift != XT_FAVOR_SHIFT_NONE)
        return xt_fail(XT_ERR_ARG,
                       "%s: shift must be XT_FAVOR_SHIFT_ROW (0), _UNIT (1) or _NONE (2), got %d",
                       OP, (int)shift);
    if (!(eps >= 0) || isinf(eps))
        return xt_fail(XT_ERR_ARG, "%s: eps must be finite and >= 0, got %g", OP, eps);
    return XT_OK;
}

xt_tensor *xt_favor_features(xt_tensor *x, xt_tensor *w, int32_t shift, double eps)
{
    if (check_args(x, w, shift, eps) != XT_OK) return NULL;
    favor_geom g = geometry(x, w, shift, eps);
    int32_t nd = x->ndim;
    int64_t out_shape[XT_MAX_DIMS];
    memcpy(out_shape, x->shape, sizeof(int64_t) * (size_t)nd);
    out_shape[nd - 1] = g.m;
    xt_tensor *xc = dense(x), *wc = dense(w);
    xt_tensor *phi = xt_empty(nd, out_shape, XT_FLOAT32);
    int64_t R = g.units * g.T;
    float *row_max = malloc(sizeof(float) * (size_t)(R > 0 ? R : 1));
    bool ok = xc && wc && phi && row_max;
    if (!row_max) xt_fail(XT_ERR_OOM, "%s: out of memory", OP);
    if (ok && R > 0) forward(&g, xc->data, wc->data, phi->data, row_max);
    free(row_max);
    xt_tensor *inputs[2] = {x, w};
    if (ok && xt_needs_grad(2, inputs)) {
        xt_node *node = xt_node_new(OP, favor_backward, 2, inputs);
        ok = node && !xt_node_save(node, xc) && !xt_node_save(node, wc) &&
             !xt_node_save(node, phi);
        if (ok) {
            node->iargs[0] = shift;
            node->fargs[0] = eps;
            xt_node_attach(node, phi);
        } else {
            xt_node_release(node);
        }
    }
    xt_tensor_release(xc);
    xt_tensor_release(wc);
    if (!ok) {
        xt_tensor_release(phi);
        return NULL;
    }
    return phi;
}
