/*
 * aft_conv.c: AFT-conv (research notes sections 2, 4.4, 5.5) on images.
 *
 * q, v, y [B,C,H,W]; k [B,h,H,W], one key per head and position, shared by the head's
 * C/h channels; w [h,kh,kw] with odd kh, kw. Query position p = (y,x) sees every key
 * position p' with bias w[head, y'-y+kh/2, x'-x+kw/2] inside the kernel's window and 0
 * outside it (global connectivity):
 *   y[b,c,p] = sigmoid(q[b,c,p]) * sum_p' exp(k[b,i,p'] + w'(p,p')) v[b,c,p']
 *                                  / sum_p' exp(k[b,i,p'] + w'(p,p'))      (c in head i)
 * As the paper writes it, with F = exp(w) - 1 applied as a cross-correlation with zero
 * padding: num = conv(E V, F) + sum_p' E V, den = conv(E, F) + sum_p' E.
 *
 * Stability: E = exp(k - m) with m the head's max key; the biases enter as
 * exp(w - r) with r = max(0, max w[head]), so F' = exp(w - r) - exp(-r) and the global
 * sums are scaled by exp(-r). The denominator (one per head and position) is computed in
 * double as exp(-r) * (outside keys) + (window keys weighted by exp(w - r)), with the
 * outside part clamped at 0, so it stays positive; an underflowed one is recomputed with
 * its own exact maximum (aft.h). The forward saves A = num / den and log(den) per head and
 * position.
 *
 * Work: one task per (batch item, head); per channel, the window sum is kh*kw shifted
 * multiply-adds of a plane (contiguous rows). Backward (Hn = G sigmoid(q) / den,
 * a = sum over the head's channels of Hn A):
 *   U = exp(-r) sum_p Hn + conv^T(Hn, F'),  Ua likewise from a,
 *   dV = E U,  dK = E (sum_c V U - Ua),  dw[d] = exp(w[d] - r) sum_p E_{p+d} (sum_c Hn_p V_{p+d} - a_p)
 * with dw summed over batch items in a fixed order.
 */
#include "aft.h"

#include <omp.h>

typedef struct conv_geom {
    int64_t B, C, heads, cg, H, W, P; /* cg = C / heads channels per head; P = H W */
    int64_t kh, kw, kk;
} conv_geom;

/* out[y,x] += f * in[y+dy, x+dx] where both positions exist. */
static inline void shifted_axpy(float *out, const float *in, float f, int64_t H, int64_t W,
                                int64_t dy, int64_t dx)
{
    int64_t y0 = dy < 0 ? -dy : 0, y1 = dy > 0 ? H - dy : H;
    int64_t x0 = dx < 0 ? -dx : 0, x1 = dx > 0 ? W - dx : W;
    for (int64_t y = y0; y < y1; y++) {
        float *o = out + y * W;
        const float *s = in + (y + dy) * W + dx;
#pragma omp simd
        for (int64_t x = x0; x < x1; x++) o[x] += f * s[x];
    }
}

/* The same into a double plane. */
static inline void shifted_axpy_d(double *out, const float *in, double f, int64_t H,
                                  int64_t W, int64_t dy, int64_t dx)
{
    int64_t y0 = dy < 0 ? -dy : 0, y1 = dy > 0 ? H - dy : H;
    int64_t x0 = dx < 0 ? -dx : 0, x1 = dx > 0 ? W - dx : W;
    for (int64_t y = y0; y < y1; y++) {
        double *o = out + y * W;
        const float *s = in + (y + dy) * W + dx;
#pragma omp simd
        for (int64_t x = x0; x < x1; x++) o[x] += f * s[x];
    }
}

/* sum of a[y,x] * b[y+dy, x+dx] where both positions exist. */
static inline double shifted_dot(const float *a, const float *b, int64_t H, int64_t W,
                                 int64_t dy, int64_t dx)
{
    int64_t y0 = dy < 0 ? -dy : 0, y1 = dy > 0 ? H - dy : H;
    int64_t x0 = dx < 0 ? -dx : 0, x1 = dx > 0 ? W - dx : W;
    double s = 0;
    for (int64_t y = y0; y < y1; y++) {
        const float *pa = a + y * W, *pb = b + (y + dy) * W + dx;
        float row = 0;
#pragma omp simd reduction(+ : row)
        for (int64_t x = x0; x < x1; x++) row += pa[x] * pb[x];
        s += row;
    }
    return s;
}

static double plane_sum(const float *x, int64_t P)
{
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t p = 0; p < P; p++) s += x[p];
    return s;
}

/* The head's offsets: E = exp(k - m) into E (returns m); r = max(0, max w); F' = exp(w - r)
 * - exp(-r) and ew = exp(w - r) into F and ew (kk each). */
static float head_setup(const conv_geom *g, const float *kp, const float *wh, float *E,
                        float *F, float *ew, float *r_out)
{
    float m = -INFINITY, r = 0.0f;
    for (int64_t p = 0; p < g->P; p++) m = kp[p] > m ? kp[p] : m;
#pragma omp simd
    for (int64_t p = 0; p < g->P; p++) E[p] = aft_exp(kp[p] - m);
    for (int64_t d = 0; d < g->kk; d++) r = wh[d] > r ? wh[d] : r;
    float osc = expf(-r);
    for (int64_t d = 0; d < g->kk; d++) {
        ew[d] = expf(wh[d] - r);
        F[d] = ew[d] - osc;
    }
    *r_out = r;
    return m;
}

/* The bias between query p and key pk: w inside the window, 0 outside. */
static inline float conv_bias(const conv_geom *g, const float *wh, int64_t p, int64_t pk)
{
    int64_t i = pk / g->W - p / g->W + g->kh / 2, j = pk % g->W - p % g->W + g->kw / 2;
    return i >= 0 && i < g->kh && j >= 0 && j < g->kw ? wh[i * g->kw + j] : 0.0f;
}

/* Exact log-normaliser of query p of one head (offset by its max), in double. */
static double direct_lse(const conv_geom *g, const float *kp, const float *wh, int64_t p)
{
    double M = -INFINITY, s = 0;
    for (int64_t pk = 0; pk < g->P; pk++) {
        double x = (double)kp[pk] + conv_bias(g, wh, p, pk);
        M = x > M ? x : M;
    }
    for (int64_t pk = 0; pk < g->P; pk++) s += exp((double)kp[pk] + conv_bias(g, wh, p, pk) - M);
    return M + log(s);
}

/* ---- forward -------------------------------------------------------------------------- */

/* One (b, head): y and A for its channels, lam [P] = log(den) relative to m + r. */
static void conv_forward_head(const conv_geom *g, const float *q, const float *kp,
                              const float *v, const float *wh, float *y, float *A, float *lam,
                              float *scratch, double *dscratch)
{
    int64_t P = g->P, H = g->H, W = g->W;
    float *E = scratch, *X = E + P, *num = X + P, *F = num + P, *ew = F + g->kk;
    double *cnt = dscratch, *inw = cnt + P;
    float r, m = head_setup(g, kp, wh, E, F, ew, &r);
    double osc = exp(-(double)r), S = plane_sum(E, P);

    /* den = exp(-r) (S - window keys) + window keys weighted by exp(w - r) */
    for (int64_t p = 0; p < P; p++) cnt[p] = inw[p] = 0;
    for (int64_t i = 0; i < g->kh; i++)
        for (int64_t j = 0; j < g->kw; j++) {
            int64_t dy = i - g->kh / 2, dx = j - g->kw / 2;
            shifted_axpy_d(cnt, E, 1.0, H, W, dy, dx);
            shifted_axpy_d(inw, E, ew[i * g->kw + j], H, W, dy, dx);
        }
    int64_t flagged = 0;
    for (int64_t p = 0; p < P; p++) {
        double out = S - cnt[p], den = osc * (out > 0 ? out : 0) + inw[p];
        bool ok = den >= AFT_TINY;
        lam[p] = ok ? (float)log(den) : (float)(direct_lse(g, kp, wh, p) - m - r);
        cnt[p] = ok ? den : 0; /* now den, or 0 for a direct output */
        flagged += !ok;
    }
    for (int64_t c = 0; c < g->cg; c++) {
        const float *vc = v + c * P, *qc = q + c * P;
        float *yc = y + c * P, *ac = A + c * P;
#pragma omp simd
        for (int64_t p = 0; p < P; p++) X[p] = E[p] * vc[p];
        float sv = (float)(osc * plane_sum(X, P));
        for (int64_t p = 0; p < P; p++) num[p] = sv;
        for (int64_t i = 0; i < g->kh; i++)
            for (int64_t j = 0; j < g->kw; j++)
                shifted_axpy(num, X, F[i * g->kw + j], H, W, i - g->kh / 2, j - g->kw / 2);
        for (int64_t p = 0; p < P; p++) {
            float a = cnt[p] > 0 ? (float)(num[p] / cnt[p]) : 0.0f;
            ac[p] = a;
            yc[p] = aft_sigmoid(qc[p]) * a;
        }
    }
    if (flagged == 0) return;
    for (int64_t p = 0; p < P; p++) {
        if (cnt[p] > 0) continue;
        double L = (double)lam[p] + m + r;
        for (int64_t c = 0; c < g->cg; c++) {
            const float *vc = v + c * P;
            double n = 0;
            for (int64_t pk = 0; pk < P; pk++)
                n += exp((double)kp[pk] + conv_bias(g, wh, p, pk) - L) * vc[pk];
            A[c * P + p] = (float)n;
            y[c * P + p] = aft_sigmoid(q[c * P + p]) * (float)n;
        }
    }
}

/* Scratch per thread: floats and doubles. */
static int64_t conv_scratch_floats(const conv_geom *g) { return 8 * g->P + 2 * g->kk; }

static xt_status conv_forward(const conv_geom *g, const float *q, const float *k, const float *v,
                              const float *w, float *y, float *A, float *lam)
{
    int nt = omp_get_max_threads();
    int64_t nf = conv_scratch_floats(g), nd = 2 * g->P;
    xt_tensor *hold[2] = {NULL, NULL};
    float *scratch = aft_buffer(&hold[0], nf * nt);
    double *dscratch = (double *)aft_buffer(&hold[1], 2 * nd * nt);
    if (!scratch || !dscratch) {
        aft_release(2, hold);
        return xt_last_status();
    }
    int64_t tasks = g->B * g->heads;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) \
    if (g->B * g->C * g->P * g->kk > XT_PARALLEL_GRAIN)
    for (int64_t task = 0; task < tasks; task++) {
        int64_t b = task / g->heads, i = task % g->heads;
        int64_t off = (b * g->C + i * g->cg) * g->P;
        int tid = omp_get_thread_num();
        conv_forward_head(g, q + off, k + task * g->P, v + off, w + i * g->kk, y + off, A + off,
                          lam + task * g->P, scratch + tid * nf, dscratch + tid * nd);
    }
    aft_release(2, hold);
    return XT_OK;
}

/* ---- backward ------------------------------------------------------------------------- */

typedef struct conv_grads {
    float *dq, *dk, *dv; /* NULL when not needed */
    double *dw;          /* [B, heads, kk] partial sums, or NULL */
} conv_grads;

/* One (b, head). Offsets into the tensors are applied by the caller. */
static void conv_backward_head(const conv_geom *g, const float *q, const float *kp,
                               const float *v, const float *wh, const float *A,
                               const float *lam, const float *G, float *dq, float *dkp,
                               float *dv, double *dw, float *scratch)
{
    int64_t P = g->P, H = g->H, W = g->W, kk = g->kk;
    float *E = scratch, *X = E + P, *hn = X + P, *U = hn + P, *a = U + P, *vu = a + P;
    float *ua = vu + P, *inv = ua + P, *F = inv + P, *ew = F + kk;
    float r, m = head_setup(g, kp, wh, E, F, ew, &r);
    float osc = expf(-r);
    bool need_kv = dkp || dv;
    int64_t flagged = 0;
    for (int64_t p = 0; p < P; p++) {
        bool ok = lam[p] >= AFT_LOG_TINY;
        inv[p] = ok ? aft_exp(-lam[p]) : 0.0f; /* direct outputs are handled below */
        flagged += !ok;
        a[p] = 0;
        vu[p] = 0;
    }
    for (int64_t c = 0; c < g->cg; c++) {
        const float *qc = q + c * P, *gc = G + c * P, *ac = A + c * P, *vc = v + c * P;
#pragma omp simd
        for (int64_t p = 0; p < P; p++) {
            float s = aft_sigmoid(qc[p]);
            if (dq) dq[c * P + p] = gc[p] * ac[p] * s * (1.0f - s);
            hn[p] = gc[p] * s * inv[p];
            a[p] += hn[p] * ac[p];
        }
        if (!need_kv && !dw) continue;
        if (need_kv) {
            float hs = (float)(osc * plane_sum(hn, P));
            for (int64_t p = 0; p < P; p++) U[p] = hs;
            for (int64_t i = 0; i < g->kh; i++)
                for (int64_t j = 0; j < g->kw; j++)
                    shifted_axpy(U, hn, F[i * g->kw + j], H, W, g->kh / 2 - i, g->kw / 2 - j);
#pragma omp simd
            for (int64_t p = 0; p < P; p++) {
                if (dv) dv[c * P + p] = E[p] * U[p];
                vu[p] += vc[p] * U[p];
            }
        }
        if (dw) {
#pragma omp simd
            for (int64_t p = 0; p < P; p++) X[p] = E[p] * vc[p];
            for (int64_t i = 0; i < g->kh; i++)
                for (int64_t j = 0; j < g->kw; j++)
                    dw[i * g->kw + j] += (double)ew[i * g->kw + j] *
                                         shifted_dot(hn, X, H, W, i - g->kh / 2, j - g->kw / 2);
        }
    }
    if (dkp) {
        float as = (float)(osc * plane_sum(a, P));
        for (int64_t p = 0; p < P; p++) ua[p] = as;
        for (int64_t i = 0; i < g->kh; i++)
            for (int64_t j = 0; j < g->kw; j++)
                shifted_axpy(ua, a, F[i * g->kw + j], H, W, g->kh / 2 - i, g->kw / 2 - j);
#pragma omp simd
        for (int64_t p = 0; p < P; p++) dkp[p] = E[p] * (vu[p] - ua[p]);
    }
    if (dw)
        for (int64_t i = 0; i < g->kh; i++)
            for (int64_t j = 0; j < g->kw; j++)
                dw[i * g->kw + j] -= (double)ew[i * g->kw + j] *
                                     shifted_dot(a, E, H, W, i - g->kh / 2, j - g->kw / 2);
    if (flagged == 0) return;
    /* direct sums for the outputs whose den underflowed: alpha = exp(k + w' - L) */
    for (int64_t p = 0; p < P; p++) {
        if (lam[p] >= AFT_LOG_TINY) continue;
        double L = (double)lam[p] + m + r;
        for (int64_t pk = 0; pk < P; pk++) {
            float bias = conv_bias(g, wh, p, pk);
            float alpha = (float)exp((double)kp[pk] + bias - L);
            int64_t i = pk / W - p / W + g->kh / 2, j = pk % W - p % W + g->kw / 2;
            bool in_window = i >= 0 && i < g->kh && j >= 0 && j < g->kw;
            double gk = 0;
            for (int64_t c = 0; c < g->cg; c++) {
                float h = G[c * P + p] * aft_sigmoid(q[c * P + p]);
                float gg = h * alpha, dvc = v[c * P + pk] - A[c * P + p];
                if (dv) dv[c * P + pk] += gg;
                gk += gg * dvc;
            }
            if (dkp) dkp[pk] += (float)gk;
            if (dw && in_window) dw[i * g->kw + j] += gk;
        }
    }
}

static xt_status conv_backward(const conv_geom *g, const float *q, const float *k,
                               const float *v, const float *w, const float *A, const float *lam,
                               const float *G, conv_grads d)
{
    int nt = omp_get_max_threads();
    int64_t nf = conv_scratch_floats(g);
    xt_tensor *hold = NULL;
    float *scratch = aft_buffer(&hold, nf * nt);
    if (!scratch) return xt_last_status();
    int64_t tasks = g->B * g->heads;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) \
    if (g->B * g->C * g->P * g->kk > XT_PARALLEL_GRAIN)
    for (int64_t task = 0; task < tasks; task++) {
        int64_t b = task / g->heads, i = task % g->heads;
        int64_t off = (b * g->C + i * g->cg) * g->P, koff = task * g->P;
        conv_backward_head(g, q + off, k + koff, v + off, w + i * g->kk, A + off, lam + koff,
                           G + off, d.dq ? d.dq + off : NULL, d.dk ? d.dk + koff : NULL,
                           d.dv ? d.dv + off : NULL, d.dw ? d.dw + task * g->kk : NULL,
                           scratch + omp_get_thread_num() * nf);
    }
    xt_tensor_release(hold);
    return XT_OK;
}

/* saved: 0 q, 1 k, 2 v, 3 w (contiguous), 4 A [B,C,H,W], 5 lam [B,heads,H,W]. */
static xt_status aft_conv_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *s[6];
    for (int32_t i = 0; i < 6; i++)
        if (!(s[i] = xt_node_saved(node, i))) return xt_last_status();
    xt_tensor *q = s[0], *k = s[1], *w = s[3];
    conv_geom g = {.B = q->shape[0], .C = q->shape[1], .heads = k->shape[1], .H = q->shape[2],
                   .W = q->shape[3], .kh = w->shape[1], .kw = w->shape[2]};
    g.cg = g.C / g.heads, g.P = g.H * g.W, g.kk = g.kh * g.kw;

    xt_tensor *gc = xt_contiguous(dout);
    xt_tensor *dt[4] = {NULL, NULL, NULL, NULL};
    bool ok = gc != NULL;
    for (int32_t i = 0; i < 4 && ok; i++)
        if (xt_node_needs(node, i)) ok = (dt[i] = xt_empty(s[i]->ndim, s[i]->shape, XT_FLOAT32)) != NULL;
    double *dwp = NULL;
    if (ok && dt[3]) {
        dwp = calloc((size_t)(g.B * g.heads * g.kk), sizeof(double));
        if (!dwp) ok = xt_fail(XT_ERR_OOM, "aft_conv: out of memory") == XT_OK;
    }
    if (ok) {
        conv_grads d = {dt[0] ? dt[0]->data : NULL, dt[1] ? dt[1]->data : NULL,
                        dt[2] ? dt[2]->data : NULL, dwp};
        if (d.dk) memset(d.dk, 0, sizeof(float) * (size_t)xt_numel(dt[1]));
        if (d.dv) memset(d.dv, 0, sizeof(float) * (size_t)xt_numel(dt[2]));
        ok = conv_backward(&g, q->data, k->data, s[2]->data, w->data, s[4]->data, s[5]->data,
                           gc->data, d) == XT_OK;
    }
    if (ok && dt[3]) {
        /* sum the per-(batch item, head) partials over batch items, in order */
        float *dw = dt[3]->data;
        for (int64_t j = 0; j < g.heads * g.kk; j++) {
            double acc = 0;
            for (int64_t b = 0; b < g.B; b++) acc += dwp[b * g.heads * g.kk + j];
            dw[j] = (float)acc;
        }
    }
    free(dwp);
    xt_tensor_release(gc);
    if (!ok) {
        aft_release(4, dt);
        return xt_last_status();
    }
    for (int32_t i = 0; i < 4; i++) dinputs[i] = dt[i];
    return XT_OK;
}

static xt_status conv_check(xt_tensor *q, xt_tensor *k, xt_tensor *v, xt_tensor *w)
{
    const char *op = "aft_conv";
    char a[XT_SHAPE_STR];
    if (!q || !k || !v || !w) return xt_fail(XT_ERR_ARG, "aft_conv: q, k, v and w must be given");
    if (q->dtype != XT_FLOAT32)
        return xt_fail(XT_ERR_DTYPE, "aft_conv: expected float32 q, got %s",
                       xt_dtype_name(q->dtype));
    if (q->ndim != 4 || xt_numel(q) == 0)
        return xt_fail(XT_ERR_SHAPE,
                       "aft_conv: expected q of shape [B,C,H,W] (4 dims, non-empty), got %s",
                       xt_shape_str(a, q->ndim, q->shape));
    if (aft_check_shape(op, "v", v, 4, q->shape, "the shape of q")) return xt_last_status();
    if (k->dtype != XT_FLOAT32 || w->dtype != XT_FLOAT32)
        return xt_fail(XT_ERR_DTYPE, "aft_conv: expected float32 k and w, got %s and %s",
                       xt_dtype_name(k->dtype), xt_dtype_name(w->dtype));
    if (k->ndim != 4 || k->shape[0] != q->shape[0] || k->shape[2] != q->shape[2] ||
        k->shape[3] != q->shape[3] || k->shape[1] < 1)
        return xt_fail(XT_ERR_SHAPE,
                       "aft_conv: expected k of shape [B,heads,H,W] = [%lld,heads,%lld,%lld] "
                       "(one key per head), got %s",
                       (long long)q->shape[0], (long long)q->shape[2], (long long)q->shape[3],
                       xt_shape_str(a, k->ndim, k->shape));
    int64_t heads = k->shape[1];
    if (q->shape[1] % heads != 0)
        return xt_fail(XT_ERR_SHAPE,
                       "aft_conv: the %lld channels of q must split evenly into the %lld heads "
                       "of k",
                       (long long)q->shape[1], (long long)heads);
    if (w->ndim != 3 || w->shape[0] != heads)
        return xt_fail(XT_ERR_SHAPE, "aft_conv: expected w of shape [heads,kh,kw] with heads = "
                                     "%lld, got %s",
                       (long long)heads, xt_shape_str(a, w->ndim, w->shape));
    if (w->shape[1] % 2 == 0 || w->shape[2] % 2 == 0)
        return xt_fail(XT_ERR_SHAPE, "aft_conv: expected an odd kernel size, got w of shape %s",
                       xt_shape_str(a, w->ndim, w->shape));
    return XT_OK;
}

xt_tensor *xt_aft_conv(xt_tensor *q, xt_tensor *k, xt_tensor *v, xt_tensor *w)
{
    if (conv_check(q, k, v, w)) return NULL;
    conv_geom g = {.B = q->shape[0], .C = q->shape[1], .heads = k->shape[1], .H = q->shape[2],
                   .W = q->shape[3], .kh = w->shape[1], .kw = w->shape[2]};
    g.cg = g.C / g.heads, g.P = g.H * g.W, g.kk = g.kh * g.kw;

    xt_tensor *qc = aft_dense(q), *kc = aft_dense(k), *vc = aft_dense(v), *wc = aft_dense(w);
    xt_tensor *y = xt_empty(4, q->shape, XT_FLOAT32), *A = xt_empty(4, q->shape, XT_FLOAT32);
    xt_tensor *lam = xt_empty(4, k->shape, XT_FLOAT32);
    xt_tensor *all[7] = {qc, kc, vc, wc, A, lam, y};
    bool ok = qc && kc && vc && wc && y && A && lam &&
              conv_forward(&g, qc->data, kc->data, vc->data, wc->data, y->data, A->data,
                           lam->data) == XT_OK;
    xt_tensor *inputs[4] = {q, k, v, w};
    if (ok && xt_needs_grad(4, inputs)) {
        xt_node *node = xt_node_new("aft_conv", aft_conv_backward, 4, inputs);
        ok = node != NULL;
        for (int32_t i = 0; i < 6 && ok; i++) ok = xt_node_save(node, all[i]) == XT_OK;
        if (ok) xt_node_attach(node, y);
        else xt_node_release(node);
    }
    if (!ok) {
        aft_release(7, all);
        return NULL;
    }
    aft_release(6, all);
    return y;
}
