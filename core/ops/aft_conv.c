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

/* ---- window sums on padded planes -----------------------------------------------------
 *
 * A plane [H,W] is kept inside a zero border of kh/2 rows and kw/2 columns: Hp = H + kh - 1
 * rows of Wp = W + kw - 1 floats, plus zeros of slack. Window sums are made in the
 * same row stride, [H, Wp]: output o = y Wp + x reads the padded input at o + i Wp + j for
 * tap (i, j), so each tap is one contiguous multiply-add over the whole plane. The columns
 * x >= W of an output are spare (dropped); read from a padded plane's interior they are
 * its border, zeros, which is what plane_dot relies on. */
/* Window sums go in blocks of PLANE_BLOCK outputs that stay in registers over all the
 * taps; planes are allocated with room for whole blocks (plane_rows), the padded ones
 * with PLANE_BLOCK more zeros of slack. */
#define PLANE_BLOCK 32

typedef struct pad_geom {
    int64_t Wp, n, origin; /* n: floats of a padded plane; origin: offset of position (0,0) */
} pad_geom;

static pad_geom pad_layout(const conv_geom *g)
{
    pad_geom pg;
    pg.Wp = g->W + g->kw - 1;
    pg.n = (g->H + g->kh - 1) * pg.Wp + g->kw - 1 + PLANE_BLOCK;
    pg.origin = (g->kh / 2) * pg.Wp + g->kw / 2;
    return pg;
}


/* Floats of an output plane [H, Wp] rounded up to whole blocks. */
static int64_t plane_rows(const conv_geom *g, int64_t Wp)
{
    return (g->H * Wp + PLANE_BLOCK - 1) / PLANE_BLOCK * PLANE_BLOCK;
}

/* out[o] += sum_{i,j} F[i kw + j] in[o + i Wp + j], o < H Wp, the taps in order. */
static void plane_corr(const conv_geom *g, int64_t Wp, float *out, const float *in,
                       const float *F)
{
    int64_t n = plane_rows(g, Wp);
    for (int64_t o0 = 0; o0 < n; o0 += PLANE_BLOCK) {
        float acc[PLANE_BLOCK];
        memcpy(acc, out + o0, sizeof acc);
        for (int64_t i = 0; i < g->kh; i++)
            for (int64_t j = 0; j < g->kw; j++) {
                const float *s = in + i * Wp + j + o0, f = F[i * g->kw + j];
#pragma omp simd
                for (int64_t t = 0; t < PLANE_BLOCK; t++) acc[t] += f * s[t];
            }
        memcpy(out + o0, acc, sizeof acc);
    }
}

/* dw[i kw + j] += sign scale[i kw + j] sum_{o < H Wp} a[o] in[o + i Wp + j] (a's spare
 * columns and slack are 0): each lane of a block sums in float, the lanes in double. */
static void plane_dot(const conv_geom *g, int64_t Wp, double *dw, double sign,
                      const float *scale, const float *a, const float *in)
{
    int64_t n = plane_rows(g, Wp);
    for (int64_t i = 0; i < g->kh; i++)
        for (int64_t j = 0; j < g->kw; j++) {
            const float *s = in + i * Wp + j;
            float lane[PLANE_BLOCK] = {0};
            for (int64_t o0 = 0; o0 < n; o0 += PLANE_BLOCK) {
#pragma omp simd
                for (int64_t t = 0; t < PLANE_BLOCK; t++) lane[t] += a[o0 + t] * s[o0 + t];
            }
            dw[i * g->kw + j] += sign * (double)scale[i * g->kw + j] * plane_sum(lane, PLANE_BLOCK);
        }
}

/* The kernel reversed, for the transposed correlation (conv^T). */
static void flip_kernel(const conv_geom *g, const float *F, float *Ff)
{
    for (int64_t d = 0; d < g->kk; d++) Ff[d] = F[g->kk - 1 - d];
}

/* ---- forward -------------------------------------------------------------------------- */

/* One (b, head): y and A for its channels, lam [P] = log(den) relative to m + r. */
static void conv_forward_head(const conv_geom *g, const float *q, const float *kp,
                              const float *v, const float *wh, float *y, float *A, float *lam,
                              float *scratch, double *dscratch)
{
    int64_t P = g->P, H = g->H, W = g->W, cg = g->cg;
    pad_geom pg = pad_layout(g);
    int64_t Wp = pg.Wp;
    float *E = scratch, *F = E + P, *ew = F + g->kk, *X = ew + g->kk; /* X: E V padded */
    float *num = X + pg.n, *invd = num + plane_rows(g, Wp); /* num [H, Wp]; 1/den (0: direct output) */
    double *Ed = dscratch, *cnt = Ed + pg.n, *inw = cnt + P;
    float r, m = head_setup(g, kp, wh, E, F, ew, &r);
    double osc = exp(-(double)r), S = plane_sum(E, P);

    /* den = exp(-r) (S - window keys) + window keys weighted by exp(w - r), in double */
    memset(Ed, 0, sizeof(double) * (size_t)pg.n);
    for (int64_t yy = 0; yy < H; yy++)
        for (int64_t x = 0; x < W; x++) Ed[pg.origin + yy * Wp + x] = E[yy * W + x];
    for (int64_t p = 0; p < P; p++) cnt[p] = inw[p] = 0;
    for (int64_t yy = 0; yy < H; yy++)
        for (int64_t i = 0; i < g->kh; i++)
            for (int64_t j = 0; j < g->kw; j++) {
                const double *s = Ed + (yy + i) * Wp + j;
                double f = ew[i * g->kw + j], *c = cnt + yy * W, *n = inw + yy * W;
#pragma omp simd
                for (int64_t x = 0; x < W; x++) {
                    c[x] += s[x];
                    n[x] += f * s[x];
                }
            }
    int64_t flagged = 0;
#pragma omp simd reduction(+ : flagged)
    for (int64_t p = 0; p < P; p++) {
        double out = S - cnt[p], den = osc * (out > 0 ? out : 0) + inw[p];
        bool ok = den >= AFT_TINY;
        lam[p] = aft_log(ok ? (float)den : 1.0f);
        invd[p] = ok ? (float)(1.0 / den) : 0.0f;
        flagged += !ok;
    }
    for (int64_t p = 0; p < P && flagged; p++)
        if (invd[p] == 0) lam[p] = (float)(direct_lse(g, kp, wh, p) - m - r);

    /* per channel: X = E V (padded), num = exp(-r) sum_p X + the window sums */
    memset(X, 0, sizeof(float) * (size_t)pg.n);
    for (int64_t c = 0; c < cg; c++) {
        const float *vc = v + c * P, *qc = q + c * P;
        float *yc = y + c * P, *ac = A + c * P, *xi = X + pg.origin;
        for (int64_t yy = 0; yy < H; yy++) {
            const float *er = E + yy * W, *vr = vc + yy * W;
            float *xr = xi + yy * Wp;
#pragma omp simd
            for (int64_t x = 0; x < W; x++) xr[x] = er[x] * vr[x];
        }
        float total = (float)(osc * plane_sum(X, pg.n));
        for (int64_t o = 0; o < plane_rows(g, Wp); o++) num[o] = total;
        plane_corr(g, Wp, num, X, F);
        for (int64_t yy = 0; yy < H; yy++) {
            const float *nr = num + yy * Wp;
#pragma omp simd
            for (int64_t x = 0; x < W; x++) {
                int64_t p = yy * W + x;
                float a = invd[p] > 0 ? nr[x] * invd[p] : 0.0f;
                ac[p] = a;
                yc[p] = aft_sigmoid(qc[p]) * a;
            }
        }
    }
    if (flagged == 0) return;
    for (int64_t p = 0; p < P; p++) {
        if (invd[p] > 0) continue;
        double L = (double)lam[p] + m + r;
        for (int64_t c = 0; c < cg; c++) {
            const float *vc = v + c * P;
            double n = 0;
            for (int64_t pk = 0; pk < P; pk++)
                n += exp((double)kp[pk] + conv_bias(g, wh, p, pk) - L) * vc[pk];
            A[c * P + p] = (float)n;
            y[c * P + p] = aft_sigmoid(q[c * P + p]) * (float)n;
        }
    }
}

/* Scratch per thread, floats (forward or backward, whichever needs more) and doubles. */
static int64_t conv_scratch_floats(const conv_geom *g)
{
    pad_geom pg = pad_layout(g);
    return 6 * g->P + 4 * g->kk + 4 * pg.n + 2 * plane_rows(g, pg.Wp);
}

static int64_t conv_scratch_doubles(const conv_geom *g)
{
    return pad_layout(g).n + 2 * g->P;
}

static xt_status conv_forward(const conv_geom *g, const float *q, const float *k, const float *v,
                              const float *w, float *y, float *A, float *lam)
{
    int nt = omp_get_max_threads();
    int64_t nf = conv_scratch_floats(g), nd = conv_scratch_doubles(g);
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
    int64_t P = g->P, H = g->H, W = g->W, kk = g->kk, cg = g->cg;
    pad_geom pg = pad_layout(g);
    int64_t Wp = pg.Wp, org = pg.origin;
    float *E = scratch, *F = E + P, *ew = F + kk, *Ff = ew + kk, *inv = Ff + kk;
    float *vu = inv + P, *ap = vu + P;   /* sum_c V U;  a = sum_c Hn A */
    float *Hn = ap + P, *X = Hn + pg.n;  /* one channel's Hn and E V, padded */
    float *ad = X + pg.n, *Ep = ad + pg.n; /* a and E, padded */
    float *U = Ep + pg.n;                /* [H, Wp]: one channel's U, then Ua */
    float r, m = head_setup(g, kp, wh, E, F, ew, &r);
    double osc = exp(-(double)r);
    bool need_kv = dkp || dv;
    flip_kernel(g, F, Ff);
    int64_t flagged = 0;
    for (int64_t p = 0; p < P; p++) {
        bool ok = lam[p] >= AFT_LOG_TINY;
        inv[p] = ok ? aft_exp(-lam[p]) : 0.0f; /* direct outputs are handled below */
        flagged += !ok;
        vu[p] = ap[p] = 0;
    }
    memset(Hn, 0, sizeof(float) * (size_t)pg.n);
    if (dw) memset(X, 0, sizeof(float) * (size_t)pg.n);
    for (int64_t c = 0; c < cg; c++) {
        const float *qc = q + c * P, *gc = G + c * P, *ac = A + c * P, *vc = v + c * P;
        for (int64_t yy = 0; yy < H; yy++) {
            float *hr = Hn + org + yy * Wp;
#pragma omp simd
            for (int64_t x = 0; x < W; x++) {
                int64_t p = yy * W + x;
                float s = aft_sigmoid(qc[p]);
                if (dq) dq[c * P + p] = gc[p] * ac[p] * s * (1.0f - s);
                float h = gc[p] * s * inv[p];
                hr[x] = h;
                ap[p] += h * ac[p];
            }
        }
        double hsum = plane_sum(Hn, pg.n);
        if (need_kv) {
            /* U = exp(-r) sum_p Hn + conv^T(Hn, F'); dV = E U, vu += V U */
            float total = (float)(osc * hsum);
            for (int64_t o = 0; o < plane_rows(g, Wp); o++) U[o] = total;
            plane_corr(g, Wp, U, Hn, Ff);
            for (int64_t yy = 0; yy < H; yy++) {
                const float *ur = U + yy * Wp;
#pragma omp simd
                for (int64_t x = 0; x < W; x++) {
                    int64_t p = yy * W + x;
                    if (dv) dv[c * P + p] = E[p] * ur[x];
                    vu[p] += vc[p] * ur[x];
                }
            }
        }
        if (dw) {
            /* + exp(w - r) sum_p Hn_p V_{p+d} E_{p+d} */
            for (int64_t yy = 0; yy < H; yy++) {
                float *xr = X + org + yy * Wp;
#pragma omp simd
                for (int64_t x = 0; x < W; x++) xr[x] = E[yy * W + x] * vc[yy * W + x];
            }
            plane_dot(g, Wp, dw, 1.0, ew, Hn + org, X);
        }
    }
    /* a, padded */
    memset(ad, 0, sizeof(float) * (size_t)pg.n);
    for (int64_t yy = 0; yy < H; yy++) memcpy(ad + org + yy * Wp, ap + yy * W, sizeof(float) * (size_t)W);
    if (dkp) {
        float total = (float)(osc * plane_sum(ap, P));
        for (int64_t o = 0; o < plane_rows(g, Wp); o++) U[o] = total;
        plane_corr(g, Wp, U, ad, Ff);
        for (int64_t yy = 0; yy < H; yy++)
#pragma omp simd
            for (int64_t x = 0; x < W; x++) {
                int64_t p = yy * W + x;
                dkp[p] = E[p] * (vu[p] - U[yy * Wp + x]);
            }
    }
    if (dw) {
        /* - exp(w - r) sum_p a_p E_{p+d} */
        memset(Ep, 0, sizeof(float) * (size_t)pg.n);
        for (int64_t yy = 0; yy < H; yy++) memcpy(Ep + org + yy * Wp, E + yy * W, sizeof(float) * (size_t)W);
        plane_dot(g, Wp, dw, -1.0, ew, ad + org, Ep);
    }
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
