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

/* Per (batch item, head) the planes live in two layouts with row stride Wp = W + kw - 1:
 *  - padded: (y, x) at (y + ch) Wp + (x + cw), zeros around (ch = kh/2, cw = kw/2; one
 *    spare zero row at the bottom), Pp = (H + kh) Wp floats;
 *  - rows: (y, x) at y Wp + x, the columns x >= W unused, Q = H Wp floats.
 * Every window sum is then kh*kw multiply-adds of whole shifted planes (one contiguous
 * loop each, whatever the image width):
 *   conv(X)[q]   = sum_ij F[ij] Xpad[q + i Wp + j]                  (key p + d for query p)
 *   convT(Y)[q]  = sum_ij F[ij] Ypad[q + (2ch - i) Wp + (2cw - j)]  (queries that see key p)
 *   corr_ij(Y,X) = sum_q Ypad[ch Wp + cw + q] Xpad[q + i Wp + j]     (a padded plane read from
 *                  ch Wp + cw is the rows layout with zeros in the unused columns) */
typedef struct conv_geom {
    int64_t B, C, heads, cg, H, W, P; /* cg = C / heads channels per head; P = H W */
    int64_t kh, kw, kk, ch, cw;
    int64_t Wp, Pp, Q, base;          /* base = ch Wp + cw */
} conv_geom;

static void conv_geom_init(conv_geom *g)
{
    g->cg = g->C / g->heads, g->P = g->H * g->W, g->kk = g->kh * g->kw;
    g->ch = g->kh / 2, g->cw = g->kw / 2;
    g->Wp = g->W + g->kw - 1, g->Pp = (g->H + g->kh) * g->Wp, g->Q = g->H * g->Wp;
    g->base = g->ch * g->Wp + g->cw;
}

static inline int64_t shift_of(const conv_geom *g, int64_t ij) { return ij / g->kw * g->Wp + ij % g->kw; }
static inline int64_t tshift_of(const conv_geom *g, int64_t ij)
{
    return (2 * g->ch - ij / g->kw) * g->Wp + (2 * g->cw - ij % g->kw);
}

/* out[q] += f * in[q + shift] for q < n */
static inline void axpy(float *out, const float *in, float f, int64_t n)
{
#pragma omp simd
    for (int64_t q = 0; q < n; q++) out[q] += f * in[q];
}

static inline double dot(const float *a, const float *b, int64_t n)
{
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t q = 0; q < n; q++) s += a[q] * b[q];
    return s;
}

static double plane_sum(const float *x, int64_t n)
{
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t p = 0; p < n; p++) s += x[p];
    return s;
}

/* The head's offsets: Epad = exp(k - m) padded (returns m; *S gets its sum); r = max(0,
 * max w); ew = exp(w - r) and F = ew - exp(-r) (kk each). */
static float head_setup(const conv_geom *g, const float *kp, const float *wh, float *Epad,
                        float *F, float *ew, float *r_out, double *S)
{
    float m = -INFINITY, r = 0.0f;
    for (int64_t p = 0; p < g->P; p++) m = kp[p] > m ? kp[p] : m;
    memset(Epad, 0, sizeof(float) * (size_t)g->Pp);
    double sum = 0;
    for (int64_t y = 0; y < g->H; y++) {
        float *e = Epad + g->base + y * g->Wp;
        const float *ky = kp + y * g->W;
#pragma omp simd reduction(+ : sum)
        for (int64_t x = 0; x < g->W; x++) {
            e[x] = aft_exp(ky[x] - m);
            sum += e[x];
        }
    }
    for (int64_t d = 0; d < g->kk; d++) r = wh[d] > r ? wh[d] : r;
    float osc = expf(-r);
    for (int64_t d = 0; d < g->kk; d++) {
        ew[d] = expf(wh[d] - r);
        F[d] = ew[d] - osc;
    }
    *r_out = r;
    *S = sum;
    return m;
}

/* The bias between query p and key pk: w inside the window, 0 outside. */
static inline float conv_bias(const conv_geom *g, const float *wh, int64_t p, int64_t pk)
{
    int64_t i = pk / g->W - p / g->W + g->ch, j = pk % g->W - p % g->W + g->cw;
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

/* Scratch per task, in floats (the doubles take two). */
static int64_t conv_scratch_floats(const conv_geom *g) { return 4 * g->Pp + 10 * g->Q + 2 * g->kk; }

/* ---- forward -------------------------------------------------------------------------- */

/* One (b, head): y and A [cg,H,W] for its channels, lam [H,W] = log(den) relative to m + r. */
static void conv_forward_head(const conv_geom *g, const float *q, const float *kp,
                              const float *v, const float *wh, float *y, float *A, float *lam,
                              float *scratch)
{
    int64_t H = g->H, W = g->W, Wp = g->Wp, Q = g->Q, P = g->P;
    float *Epad = scratch, *Xpad = Epad + g->Pp, *num = Xpad + g->Pp, *den = num + Q;
    float *F = den + Q, *ew = F + g->kk;
    double *cnt = (double *)(ew + g->kk), *inw = cnt + Q;
    double S;
    float r, m = head_setup(g, kp, wh, Epad, F, ew, &r, &S);
    double osc = exp(-(double)r);

    /* den = exp(-r) (S - window keys) + window keys weighted by exp(w - r); the outside
     * part is >= 0 exactly, so clamping it keeps den > 0 through rounding */
    for (int64_t i = 0; i < Q; i++) cnt[i] = inw[i] = 0;
    for (int64_t d = 0; d < g->kk; d++) {
        const float *e = Epad + shift_of(g, d);
        double f = ew[d];
#pragma omp simd
        for (int64_t i = 0; i < Q; i++) {
            cnt[i] += e[i];
            inw[i] += f * e[i];
        }
    }
    int64_t flagged = 0;
    for (int64_t yy = 0; yy < H; yy++)
        for (int64_t x = 0; x < W; x++) {
            int64_t i = yy * Wp + x, p = yy * W + x;
            double out = S - cnt[i], d = osc * (out > 0 ? out : 0) + inw[i];
            bool ok = d >= AFT_TINY;
            lam[p] = ok ? aft_log((float)d) : (float)(direct_lse(g, kp, wh, p) - m - r);
            den[i] = ok ? (float)d : 0.0f; /* 0: a direct output */
            flagged += !ok;
        }
    memset(Xpad, 0, sizeof(float) * (size_t)g->Pp);
    for (int64_t c = 0; c < g->cg; c++) {
        const float *vc = v + c * P, *qc = q + c * P;
        float *yc = y + c * P, *ac = A + c * P;
        for (int64_t yy = 0; yy < H; yy++) {
            float *xr = Xpad + g->base + yy * Wp;
            const float *er = Epad + g->base + yy * Wp, *vr = vc + yy * W;
#pragma omp simd
            for (int64_t x = 0; x < W; x++) xr[x] = er[x] * vr[x];
        }
        float sv = (float)(osc * plane_sum(Xpad, g->Pp));
        for (int64_t i = 0; i < Q; i++) num[i] = sv;
        for (int64_t d = 0; d < g->kk; d++) axpy(num, Xpad + shift_of(g, d), F[d], Q);
        for (int64_t yy = 0; yy < H; yy++) {
            const float *nr = num + yy * Wp, *dr = den + yy * Wp, *qr = qc + yy * W;
            float *ar = ac + yy * W, *yr = yc + yy * W;
#pragma omp simd
            for (int64_t x = 0; x < W; x++) {
                float a = dr[x] > 0 ? nr[x] / dr[x] : 0.0f;
                ar[x] = a;
                yr[x] = aft_sigmoid(qr[x]) * a;
            }
        }
    }
    if (flagged == 0) return;
    for (int64_t p = 0; p < P; p++) {
        if (den[p / W * Wp + p % W] > 0) continue;
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

static xt_status conv_forward(const conv_geom *g, const float *q, const float *k, const float *v,
                              const float *w, float *y, float *A, float *lam)
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
        int64_t off = (b * g->C + i * g->cg) * g->P;
        conv_forward_head(g, q + off, k + task * g->P, v + off, w + i * g->kk, y + off, A + off,
                          lam + task * g->P, scratch + omp_get_thread_num() * nf);
    }
    xt_tensor_release(hold);
    return XT_OK;
}

/* ---- backward ------------------------------------------------------------------------- */

typedef struct conv_grads {
    float *dq, *dk, *dv; /* NULL when not needed */
    double *dw;          /* [B, heads, kk] partial sums, or NULL */
} conv_grads;

/* One (b, head); the caller offsets the tensors to it. */
static void conv_backward_head(const conv_geom *g, const float *q, const float *kp,
                               const float *v, const float *wh, const float *A,
                               const float *lam, const float *G, float *dq, float *dkp,
                               float *dv, double *dw, float *scratch)
{
    int64_t H = g->H, W = g->W, Wp = g->Wp, Q = g->Q, P = g->P, kk = g->kk;
    float *Epad = scratch, *Xpad = Epad + g->Pp, *hpad = Xpad + g->Pp, *apad = hpad + g->Pp;
    float *inv = apad + g->Pp, *U = inv + Q, *vu = U + Q, *ua = vu + Q, *F = ua + Q, *ew = F + kk;
    double S;
    float r, m = head_setup(g, kp, wh, Epad, F, ew, &r, &S);
    float osc = expf(-r);
    bool need_kv = dkp || dv;
    int64_t flagged = 0;
    for (int64_t p = 0; p < P; p++) {
        bool ok = lam[p] >= AFT_LOG_TINY;
        inv[p / W * Wp + p % W] = ok ? aft_exp(-lam[p]) : 0.0f; /* direct ones: below */
        flagged += !ok;
    }
    memset(Xpad, 0, sizeof(float) * (size_t)g->Pp);
    memset(hpad, 0, sizeof(float) * (size_t)g->Pp);
    memset(apad, 0, sizeof(float) * (size_t)g->Pp);
    memset(vu, 0, sizeof(float) * (size_t)Q);
    for (int64_t c = 0; c < g->cg; c++) {
        const float *qc = q + c * P, *gc = G + c * P, *ac = A + c * P, *vc = v + c * P;
        /* hn = G sigmoid(q) / den and a += hn A, padded; dq */
        for (int64_t yy = 0; yy < H; yy++) {
            float *hr = hpad + g->base + yy * Wp, *sr = apad + g->base + yy * Wp;
            const float *ir = inv + yy * Wp;
            int64_t o = yy * W;
#pragma omp simd
            for (int64_t x = 0; x < W; x++) {
                float s = aft_sigmoid(qc[o + x]);
                if (dq) dq[c * P + o + x] = gc[o + x] * ac[o + x] * s * (1.0f - s);
                hr[x] = gc[o + x] * s * ir[x];
                sr[x] += hr[x] * ac[o + x];
            }
        }
        if (need_kv) {
            float hs = (float)(osc * plane_sum(hpad, g->Pp));
            for (int64_t i = 0; i < Q; i++) U[i] = hs;
            for (int64_t d = 0; d < kk; d++) axpy(U, hpad + tshift_of(g, d), F[d], Q);
            for (int64_t yy = 0; yy < H; yy++) {
                const float *ur = U + yy * Wp, *er = Epad + g->base + yy * Wp, *vr = vc + yy * W;
                float *vur = vu + yy * Wp;
#pragma omp simd
                for (int64_t x = 0; x < W; x++) {
                    if (dv) dv[c * P + yy * W + x] = er[x] * ur[x];
                    vur[x] += vr[x] * ur[x];
                }
            }
        }
        if (dw) {
            for (int64_t yy = 0; yy < H; yy++) {
                float *xr = Xpad + g->base + yy * Wp;
                const float *er = Epad + g->base + yy * Wp, *vr = vc + yy * W;
#pragma omp simd
                for (int64_t x = 0; x < W; x++) xr[x] = er[x] * vr[x];
            }
            for (int64_t d = 0; d < kk; d++)
                dw[d] += ew[d] * dot(hpad + g->base, Xpad + shift_of(g, d), Q);
        }
    }
    if (dkp) {
        float as = (float)(osc * plane_sum(apad, g->Pp));
        for (int64_t i = 0; i < Q; i++) ua[i] = as;
        for (int64_t d = 0; d < kk; d++) axpy(ua, apad + tshift_of(g, d), F[d], Q);
        for (int64_t yy = 0; yy < H; yy++) {
            const float *er = Epad + g->base + yy * Wp, *vur = vu + yy * Wp, *uar = ua + yy * Wp;
#pragma omp simd
            for (int64_t x = 0; x < W; x++) dkp[yy * W + x] = er[x] * (vur[x] - uar[x]);
        }
    }
    if (dw)
        for (int64_t d = 0; d < kk; d++)
            dw[d] -= ew[d] * dot(apad + g->base, Epad + shift_of(g, d), Q);
    if (flagged == 0) return;
    /* direct sums for the outputs whose den underflowed: alpha = exp(k + w' - L) */
    for (int64_t p = 0; p < P; p++) {
        if (lam[p] >= AFT_LOG_TINY) continue;
        double L = (double)lam[p] + m + r;
        for (int64_t pk = 0; pk < P; pk++) {
            float alpha = (float)exp((double)kp[pk] + conv_bias(g, wh, p, pk) - L);
            int64_t i = pk / W - p / W + g->ch, j = pk % W - p % W + g->cw;
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
    conv_geom_init(&g);

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
    conv_geom_init(&g);

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
