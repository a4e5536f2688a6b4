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
 * sums are scaled by exp(-r). The denominator (one per head and position) is
 * exp(-r) * (outside keys) + (window keys weighted by exp(w - r)): the outside keys are
 * the head's sum minus the window's, both in double, clamped at 0, so it stays positive;
 * the weighted window keys are all positive terms (float). An underflowed one is
 * recomputed with its own exact maximum (aft.h). The forward saves log(den) per head and
 * position; the backward reads y = sigmoid(q) A where it needs A (below).
 *
 * Work: one task per (batch item, head). Per-position arithmetic (exp, sigmoid, products)
 * runs over whole compact planes [H*W]; only the window sums run on padded planes (below),
 * to which planes are copied row by row. Backward (Hn = G sigmoid(q) / den,
 * a = sum over the head's channels of Hn A = G y / den; dq = G A sigmoid'(q) =
 * G y (1 - sigmoid(q)), so A itself is never stored):
 *   U = exp(-r) sum_p Hn + conv^T(Hn, F'),  Ua likewise from a,
 *   dV = E U,  dK = E (sum_c V U - Ua),  dw[d] = exp(w[d] - r) sum_p E_{p+d} (sum_c Hn_p V_{p+d} - a_p)
 * with dw summed over batch items in a fixed order.
 */
#include "aft.h"
#include "stream_store.h"

#include <omp.h>

typedef struct conv_geom {
    int64_t B, C, heads, cg, H, W, P; /* cg = C / heads channels per head; P = H W */
    int64_t kh, kw, kk;
} conv_geom;

/* Window sums go in blocks of whole vectors of PLANE_VEC floats that stay in registers
 * over all the taps, up to PLANE_MAXV vectors per block (independent chains of
 * multiply-adds); planes are allocated with room for whole vectors (plane_rows), the
 * padded ones with PLANE_VEC more zeros of slack. */
#define PLANE_VEC 16
#if defined(__AVX512F__)
#define PLANE_MAXV 8
#else
#define PLANE_MAXV 4
#endif

static double plane_sum(const float *x, int64_t P)
{
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t p = 0; p < P; p++) s += x[p];
    return s;
}

/* E = exp(k - m) over one head's plane (P); returns m, the max key. */
static float keys_exp(int64_t P, const float *kp, float *E)
{
    float m = aft_max(kp, P, -INFINITY);
#pragma omp simd
    for (int64_t p = 0; p < P; p++) E[p] = aft_exp_neg(kp[p] - m);
    return m;
}

/* Per head, once per call, kern [heads, KERN(kk)]: F' = exp(w - r) - exp(-r) (kk), the same
 * reversed for the transposed correlation (kk), ew = exp(w - r) (kk), and r = max(0, max w). */
#define KERN(kk) (3 * (kk) + 1)

static void kernel_setup(const conv_geom *g, const float *w, float *kern)
{
    int64_t kk = g->kk;
    for (int64_t i = 0; i < g->heads; i++) {
        const float *wh = w + i * kk;
        float *F = kern + i * KERN(kk), *Ff = F + kk, *ew = Ff + kk, r = 0.0f;
        for (int64_t d = 0; d < kk; d++) r = wh[d] > r ? wh[d] : r;
        float osc = expf(-r);
        for (int64_t d = 0; d < kk; d++) {
            ew[d] = expf(wh[d] - r);
            F[d] = ew[d] - osc;
        }
        for (int64_t d = 0; d < kk; d++) Ff[d] = F[kk - 1 - d];
        ew[kk] = r;
    }
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
 * its border, zeros, which is what plane_dot relies on. Only interiors are ever written
 * (pad_plane), so a padded plane's border, zeroed once with its scratch, stays zero. */
typedef struct pad_geom {
    int64_t Wp, n, origin; /* n: floats of a padded plane; origin: offset of position (0,0) */
} pad_geom;

static pad_geom pad_layout(const conv_geom *g)
{
    pad_geom pg;
    pg.Wp = g->W + g->kw - 1;
    pg.n = (g->H + g->kh - 1) * pg.Wp + g->kw - 1 + PLANE_VEC;
    pg.origin = (g->kh / 2) * pg.Wp + g->kw / 2;
    return pg;
}

/* Floats of an output plane [H, Wp] rounded up to whole vectors. */
static int64_t plane_rows(const conv_geom *g, int64_t Wp)
{
    return (g->H * Wp + PLANE_VEC - 1) / PLANE_VEC * PLANE_VEC;
}

/* The vectors of an output plane in blocks of near-equal sizes, at most PLANE_MAXV each:
 * block b starts at vector start(b) and has size(b) vectors. */
typedef struct plane_blocks {
    int64_t n, base, extra; /* n blocks, the first `extra` of base + 1 vectors, the rest base */
} plane_blocks;

static plane_blocks plane_split(int64_t vectors)
{
    plane_blocks pb;
    pb.n = (vectors + PLANE_MAXV - 1) / PLANE_MAXV;
    pb.base = vectors / pb.n, pb.extra = vectors % pb.n;
    return pb;
}

static inline int64_t block_start(const plane_blocks *pb, int64_t b)
{
    return b * pb->base + (b < pb->extra ? b : pb->extra);
}

/* n floats from src to dst (not overlapping), in chunks of 8 (or 4) with the last one
 * ending at n, overlapping the one before: no scalar tail for rows of 7 or 14. */
static inline void copy_row(float *dst, const float *src, int64_t n)
{
    if (n >= 8) {
        int64_t x = 0;
        for (; x + 8 <= n; x += 8) memcpy(dst + x, src + x, 8 * sizeof(float));
        if (x < n) memcpy(dst + n - 8, src + n - 8, 8 * sizeof(float));
    } else if (n >= 4) {
        memcpy(dst, src, 4 * sizeof(float));
        memcpy(dst + n - 4, src + n - 4, 4 * sizeof(float));
    } else {
        for (int64_t x = 0; x < n; x++) dst[x] = src[x];
    }
}

/* A compact plane [H, W] into rows of stride Wp (a padded plane's interior) and back. */
static void pad_plane(const conv_geom *g, int64_t Wp, float *dst, const float *src)
{
    for (int64_t y = 0; y < g->H; y++) copy_row(dst + y * Wp, src + y * g->W, g->W);
}

static void unpad_plane(const conv_geom *g, int64_t Wp, float *dst, const float *src)
{
    for (int64_t y = 0; y < g->H; y++) copy_row(dst + y * g->W, src + y * Wp, g->W);
}

/* One block of nv vectors from o: out[o..] += sum_{i,j} F[i kw + j] in[o + i Wp + j ..]. */
static inline __attribute__((always_inline)) void corr_block(const conv_geom *g, int64_t Wp,
                                                             float *out, const float *in,
                                                             const float *F, const int nv)
{
    float acc[PLANE_MAXV * PLANE_VEC];
    memcpy(acc, out, sizeof(float) * (size_t)(nv * PLANE_VEC));
    for (int64_t i = 0; i < g->kh; i++)
        for (int64_t j = 0; j < g->kw; j++) {
            const float *s = in + i * Wp + j, f = F[i * g->kw + j];
#pragma omp simd
            for (int t = 0; t < nv * PLANE_VEC; t++) acc[t] += f * s[t];
        }
    memcpy(out, acc, sizeof(float) * (size_t)(nv * PLANE_VEC));
}

/* out[o] += sum_{i,j} F[i kw + j] in[o + i Wp + j], o < H Wp, the taps in order. */
static void plane_corr(const conv_geom *g, int64_t Wp, float *out, const float *in,
                       const float *F)
{
    plane_blocks pb = plane_split(plane_rows(g, Wp) / PLANE_VEC);
    for (int64_t b = 0; b < pb.n; b++) {
        int64_t o = block_start(&pb, b) * PLANE_VEC;
        switch (pb.base + (b < pb.extra)) {
#define CORR_CASE(n) \
    case n: corr_block(g, Wp, out + o, in + o, F, n); break;
            CORR_CASE(1) CORR_CASE(2) CORR_CASE(3) CORR_CASE(4)
#if PLANE_MAXV > 4
            CORR_CASE(5) CORR_CASE(6) CORR_CASE(7) CORR_CASE(8)
#endif
#undef CORR_CASE
        }
    }
}

/* Taps of rows i0 .. i0 + R - 1, KW each: lanes[(r KW + j) PLANE_VEC + t] = sum over the
 * nvec vectors v of a[v PLANE_VEC + t] in[(i0 + r) Wp + j + v PLANE_VEC + t]. Each vector
 * of a is loaded once for the R KW taps, whose sums are independent chains in registers. */
#define DOT_TAPS 16

static inline __attribute__((always_inline)) void dot_rows(int64_t nvec, int64_t Wp,
                                                           const float *a, const float *in,
                                                           float *lanes, const int R,
                                                           const int KW)
{
    float acc[DOT_TAPS * PLANE_VEC] = {0};
    for (int64_t v = 0; v < nvec; v++) {
        const float *av = a + v * PLANE_VEC;
        for (int r = 0; r < R; r++)
            for (int j = 0; j < KW; j++) {
                const float *s = in + r * Wp + j + v * PLANE_VEC;
                float *d = acc + (r * KW + j) * PLANE_VEC;
#pragma omp simd
                for (int t = 0; t < PLANE_VEC; t++) d[t] += av[t] * s[t];
            }
    }
    memcpy(lanes, acc, sizeof(float) * (size_t)(R * KW * PLANE_VEC));
}

/* dwl[tap][lane] += f[tap] lanes[tap - tap0][lane] for taps tap0 .. tap0 + n - 1 (in double). */
static void dot_fold(double *dwl, double sign, const float *scale, int64_t tap0, int64_t n,
                     const float *lanes)
{
    for (int64_t d = 0; d < n; d++) {
        double f = sign * (double)scale[tap0 + d], *dl = dwl + (tap0 + d) * PLANE_VEC;
        const float *l = lanes + d * PLANE_VEC;
#pragma omp simd
        for (int t = 0; t < PLANE_VEC; t++) dl[t] += f * (double)l[t];
    }
}

/* dwl[i kw + j][lane] += sign scale[i kw + j] sum_{o < H Wp, o = lane mod PLANE_VEC}
 * a[o] in[o + i Wp + j] (a's spare columns and slack are 0): each tap's products summed in
 * float lanes, added into its double lanes (which are summed once a head is done). Kernels
 * 3, 5 and 7 wide go through dot_rows, a few rows at a time; others tap by tap. */
static void plane_dot(const conv_geom *g, int64_t Wp, double *dwl, double sign,
                      const float *scale, const float *a, const float *in)
{
    int64_t nvec = plane_rows(g, Wp) / PLANE_VEC, kh = g->kh, kw = g->kw;
    float lanes[DOT_TAPS * PLANE_VEC];
    for (int64_t i = 0; i < kh;) {
        const float *s = in + i * Wp;
        int64_t rows = kw == 3 ? 3 : kw == 5 || kw == 7 ? 2 : 1;
        rows = i + rows <= kh ? rows : 1;
        switch (kw * 4 + rows) {
        case 3 * 4 + 3: dot_rows(nvec, Wp, a, s, lanes, 3, 3); break;
        case 3 * 4 + 1: dot_rows(nvec, Wp, a, s, lanes, 1, 3); break;
        case 5 * 4 + 2: dot_rows(nvec, Wp, a, s, lanes, 2, 5); break;
        case 5 * 4 + 1: dot_rows(nvec, Wp, a, s, lanes, 1, 5); break;
        case 7 * 4 + 2: dot_rows(nvec, Wp, a, s, lanes, 2, 7); break;
        case 7 * 4 + 1: dot_rows(nvec, Wp, a, s, lanes, 1, 7); break;
        default:
            for (int64_t j = 0; j < kw; j++) {
                dot_rows(nvec, Wp, a, s + j, lanes, 1, 1);
                dot_fold(dwl, sign, scale, i * kw + j, 1, lanes);
            }
            i++;
            continue;
        }
        dot_fold(dwl, sign, scale, i * kw, rows * kw, lanes);
        i += rows;
    }
}

/* ---- forward -------------------------------------------------------------------------- */

/* Scratch per thread, floats and doubles (forward or backward, whichever needs more); the
 * padded planes in it start zeroed. */
static int64_t conv_scratch_floats(const conv_geom *g)
{
    pad_geom pg = pad_layout(g);
    return 7 * g->P + 4 * pg.n + 2 * plane_rows(g, pg.Wp);
}

static int64_t conv_scratch_doubles(const conv_geom *g)
{
    pad_geom pg = pad_layout(g);
    int64_t fwd = pg.n + (g->H + g->kh - 1) * pg.Wp + g->H * pg.Wp, bwd = g->kk * PLANE_VEC;
    return fwd > bwd ? fwd : bwd;
}

/* The denominators of one head: lam [P] = log(den) relative to m + r, invd [P] = 1/den (0
 * where it underflowed: those outputs are made directly). Returns how many underflowed.
 * E [P] = exp(k - m); Ep: E padded. */
static int64_t conv_denominators(const conv_geom *g, const float *kern, const float *E,
                                 float *Ep, float *lam, float *invd, float *buf, double *dscratch)
{
    int64_t P = g->P, kk = g->kk;
    pad_geom pg = pad_layout(g);
    int64_t Wp = pg.Wp, no = plane_rows(g, Wp), nr = (g->H + g->kh - 1) * Wp, n = g->H * Wp;
    const float *ew = kern + 2 * kk;
    double *Ed = dscratch, *rb = Ed + pg.n, *cnt = rb + nr;
    double osc = exp(-(double)ew[kk]), S = plane_sum(E, P);

    /* window keys: cnt unweighted (in double, box sums: the kw columns, then the kh rows),
     * inw weighted by exp(w - r) */
    pad_plane(g, Wp, Ep + pg.origin, E);
    for (int64_t y = 0; y < g->H; y++)
        for (int64_t x = 0; x < g->W; x++) Ed[pg.origin + y * Wp + x] = E[y * g->W + x];
    memset(rb, 0, sizeof(double) * (size_t)nr);
    for (int64_t j = 0; j < g->kw; j++)
#pragma omp simd
        for (int64_t o = 0; o < nr; o++) rb[o] += Ed[o + j];
    memset(cnt, 0, sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < g->kh; i++)
#pragma omp simd
        for (int64_t o = 0; o < n; o++) cnt[o] += rb[o + i * Wp];
    float *inw = buf, *lp = buf + no;
    memset(inw, 0, sizeof(float) * (size_t)no);
    plane_corr(g, Wp, inw, Ep, ew);
#pragma omp simd
    for (int64_t o = 0; o < n; o++) {
        double out = S - cnt[o], den = osc * (out > 0 ? out : 0) + inw[o];
        bool ok = den >= AFT_TINY;
        lp[o] = aft_log(ok ? (float)den : 1.0f);
        inw[o] = ok ? (float)(1.0 / den) : 0.0f;
    }
    unpad_plane(g, Wp, lam, lp);
    unpad_plane(g, Wp, invd, inw);
    int64_t flagged = 0;
    for (int64_t p = 0; p < P; p++) flagged += invd[p] == 0;
    return flagged;
}

/* One (b, head): y for its channels, lam [P] = log(den) relative to m + r. stream: y is
 * written around the caches (stream_store.h). */
static void conv_forward_head(const conv_geom *g, const float *kern, const float *q,
                              const float *kp, const float *v, const float *wh, float *y,
                              float *lam, bool stream, float *scratch, double *dscratch)
{
    int64_t P = g->P, cg = g->cg;
    pad_geom pg = pad_layout(g);
    int64_t Wp = pg.Wp, no = plane_rows(g, Wp);
    float *E = scratch, *invd = E + P, *t = invd + P, *sq = t + P; /* compact planes */
    float *Ep = sq + P, *X = Ep + pg.n;                    /* padded: E and one channel's E V */
    float *num = X + pg.n;                                 /* [H, Wp], two of them */
    float m = keys_exp(P, kp, E), r = kern[3 * g->kk];
    double osc = exp(-(double)r);
    int64_t flagged = conv_denominators(g, kern, E, Ep, lam, invd, num, dscratch);
    for (int64_t p = 0; p < P && flagged; p++)
        if (invd[p] == 0) lam[p] = (float)(direct_lse(g, kp, wh, p) - m - r);

    /* per channel: X = E V (padded), num = exp(-r) sum_p X + the window sums */
    for (int64_t c = 0; c < cg; c++) {
        const float *vc = v + c * P, *qc = q + c * P;
        float *yc = y + c * P;
        if (c + 1 < cg) {
            aft_prefetch(vc + P, P);
            aft_prefetch(qc + P, P);
            if (!stream) aft_prefetch_out(yc + P, P);
        }
        double total = 0;
#pragma omp simd reduction(+ : total)
        for (int64_t p = 0; p < P; p++) {
            t[p] = E[p] * vc[p];
            total += t[p];
            sq[p] = aft_sigmoid(qc[p]);
        }
        pad_plane(g, Wp, X + pg.origin, t);
        float start = (float)(osc * total);
        for (int64_t o = 0; o < no; o++) num[o] = start;
        plane_corr(g, Wp, num, X, kern);
        unpad_plane(g, Wp, t, num);
        float *yr = stream ? t : yc; /* in place: t is not read again */
#pragma omp simd
        for (int64_t p = 0; p < P; p++) yr[p] = invd[p] > 0 ? sq[p] * (t[p] * invd[p]) : 0.0f;
        if (stream) xt_store_row(yc, t, P);
    }
    if (stream) xt_store_fence(); /* before the fix-ups below write over the streamed rows */
    if (flagged == 0) return;
    for (int64_t p = 0; p < P; p++) {
        if (invd[p] > 0) continue;
        double L = (double)lam[p] + m + r;
        for (int64_t c = 0; c < cg; c++) {
            const float *vc = v + c * P;
            double n = 0;
            for (int64_t pk = 0; pk < P; pk++)
                n += exp((double)kp[pk] + conv_bias(g, wh, p, pk) - L) * vc[pk];
            y[c * P + p] = aft_sigmoid(q[c * P + p]) * (float)n;
        }
    }
}

/* Per-thread scratch (zeroed: the padded planes' borders) and the heads' kernels, or NULL
 * with the error set. */
typedef struct conv_work {
    xt_tensor *hold[3];
    float *scratch, *kern;
    double *dscratch;
} conv_work;

static bool conv_work_init(const conv_geom *g, const float *w, int nt, conv_work *cw)
{
    int64_t nf = conv_scratch_floats(g), nd = conv_scratch_doubles(g);
    memset(cw, 0, sizeof *cw);
    cw->scratch = aft_buffer(&cw->hold[0], nf * nt);
    cw->dscratch = (double *)aft_buffer(&cw->hold[1], 2 * nd * nt);
    cw->kern = aft_buffer(&cw->hold[2], g->heads * KERN(g->kk));
    if (!cw->scratch || !cw->dscratch || !cw->kern) {
        aft_release(3, cw->hold);
        return false;
    }
    memset(cw->scratch, 0, sizeof(float) * (size_t)(nf * nt));
    memset(cw->dscratch, 0, sizeof(double) * (size_t)(nd * nt));
    kernel_setup(g, w, cw->kern);
    return true;
}

static xt_status conv_forward(const conv_geom *g, const float *q, const float *k, const float *v,
                              const float *w, float *y, float *lam)
{
    int nt = omp_get_max_threads();
    int64_t nf = conv_scratch_floats(g), nd = conv_scratch_doubles(g), kn = KERN(g->kk);
    conv_work cw;
    if (!conv_work_init(g, w, nt, &cw)) return xt_last_status();
    int64_t tasks = g->B * g->heads;
    bool stream = xt_streams(3 * g->B * g->C * g->P * (int64_t)sizeof(float));
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) \
    if (g->B * g->C * g->P * g->kk > XT_PARALLEL_GRAIN)
    for (int64_t task = 0; task < tasks; task++) {
        int64_t b = task / g->heads, i = task % g->heads;
        int64_t off = (b * g->C + i * g->cg) * g->P;
        int tid = omp_get_thread_num();
        conv_forward_head(g, cw.kern + i * kn, q + off, k + task * g->P, v + off, w + i * g->kk,
                          y + off, lam + task * g->P, stream, cw.scratch + tid * nf,
                          cw.dscratch + tid * nd);
    }
    aft_release(3, cw.hold);
    return XT_OK;
}

/* ---- backward ------------------------------------------------------------------------- */

typedef struct conv_grads {
    float *dq, *dk, *dv; /* NULL when not needed */
    double *dw;          /* [B, heads, kk] partial sums, or NULL */
} conv_grads;

/* One (b, head). Offsets into the tensors are applied by the caller. stream: dq and dv
 * are written around the caches (stream_store.h). */
static void conv_backward_head(const conv_geom *g, const float *kern, const float *q,
                               const float *kp, const float *v, const float *wh, const float *y,
                               const float *lam, const float *G, float *dq, float *dkp,
                               float *dv, double *dw, bool stream, float *scratch, double *dwl)
{
    int64_t P = g->P, W = g->W, kk = g->kk, cg = g->cg;
    pad_geom pg = pad_layout(g);
    int64_t Wp = pg.Wp, org = pg.origin, no = plane_rows(g, Wp);
    const float *Ff = kern + kk, *ew = kern + 2 * kk;
    float *E = scratch, *inv = E + P, *vu = inv + P, *ap = vu + P; /* sum_c V U; a = sum_c Hn A */
    float *h = ap + P, *u = h + P;       /* compact: one channel's Hn and U */
    float *Hn = u + P, *X = Hn + pg.n;   /* one channel's Hn and E V, padded */
    float *ad = X + pg.n, *Ep = ad + pg.n; /* a and E, padded */
    float *U = Ep + pg.n;                /* [H, Wp]: one channel's U, then Ua */
    float *dq_plane = U + plane_rows(g, Wp); /* one channel's dq when streaming */
    float m = keys_exp(P, kp, E), r = kern[3 * kk];
    double osc = exp(-(double)r);
    bool need_kv = dkp || dv;
    if (dw) memset(dwl, 0, sizeof(double) * (size_t)(kk * PLANE_VEC));
    int64_t flagged = 0;
    for (int64_t p = 0; p < P; p++) {
        bool ok = lam[p] >= AFT_LOG_TINY;
        inv[p] = ok ? aft_exp(-lam[p]) : 0.0f; /* direct outputs are handled below */
        flagged += !ok;
        vu[p] = ap[p] = 0;
    }
    for (int64_t c = 0; c < cg; c++) {
        const float *qc = q + c * P, *gc = G + c * P, *yc = y + c * P, *vc = v + c * P;
        float *dqc = dq ? dq + c * P : NULL;
        if (c + 1 < cg) {
            aft_prefetch(qc + P, P);
            aft_prefetch(gc + P, P);
            aft_prefetch(yc + P, P);
            aft_prefetch(vc + P, P);
            if (dqc && !stream) aft_prefetch_out(dqc + P, P);
            if (dv && !stream) aft_prefetch_out(dv + (c + 1) * P, P);
        }
        float *dqr = stream || !dqc ? dq_plane : dqc;
#pragma omp simd
        for (int64_t p = 0; p < P; p++) {
            float s = aft_sigmoid(qc[p]), gy = gc[p] * yc[p];
            dqr[p] = gy * (1.0f - s);
            h[p] = gc[p] * s * inv[p];
            ap[p] += gy * inv[p];
        }
        if (stream && dqc) xt_store_row(dqc, dq_plane, P);
        /* a pass of its own: in the loop above, beside the sigmoid's constants, the double
         * accumulators went through the stack every iteration */
        double hsum = plane_sum(h, P);
        pad_plane(g, Wp, Hn + org, h);
        if (need_kv) {
            /* U = exp(-r) sum_p Hn + conv^T(Hn, F'); dV = E U, vu += V U */
            float total = (float)(osc * hsum);
            for (int64_t o = 0; o < no; o++) U[o] = total;
            plane_corr(g, Wp, U, Hn, Ff);
            unpad_plane(g, Wp, u, U);
            float *dvc = dv ? dv + c * P : NULL;
            float *dvr = stream || !dvc ? u : dvc; /* in place: u is not read again */
#pragma omp simd
            for (int64_t p = 0; p < P; p++) {
                vu[p] += vc[p] * u[p];
                dvr[p] = E[p] * u[p];
            }
            if (stream && dvc) xt_store_row(dvc, u, P);
        }
        if (dw) {
            /* + exp(w - r) sum_p Hn_p V_{p+d} E_{p+d} */
#pragma omp simd
            for (int64_t p = 0; p < P; p++) u[p] = E[p] * vc[p];
            pad_plane(g, Wp, X + org, u);
            plane_dot(g, Wp, dwl, 1.0, ew, Hn + org, X);
        }
    }
    /* a, padded */
    pad_plane(g, Wp, ad + org, ap);
    if (dkp) {
        float total = (float)(osc * plane_sum(ap, P));
        for (int64_t o = 0; o < no; o++) U[o] = total;
        plane_corr(g, Wp, U, ad, Ff);
        unpad_plane(g, Wp, u, U);
#pragma omp simd
        for (int64_t p = 0; p < P; p++) dkp[p] = E[p] * (vu[p] - u[p]);
    }
    if (dw) {
        /* - exp(w - r) sum_p a_p E_{p+d} */
        pad_plane(g, Wp, Ep + org, E);
        plane_dot(g, Wp, dwl, -1.0, ew, ad + org, Ep);
        for (int64_t d = 0; d < kk; d++) {
            double acc = 0;
            for (int t = 0; t < PLANE_VEC; t++) acc += dwl[d * PLANE_VEC + t];
            dw[d] += acc;
        }
    }
    if (stream) xt_store_fence(); /* before the fix-ups below write over the streamed rows */
    if (flagged == 0) return;
    /* direct sums for the outputs whose den underflowed, added to dv and dk as made above
     * (every position of them written there): alpha = exp(k + w' - L) */
    for (int64_t p = 0; p < P; p++) {
        if (lam[p] >= AFT_LOG_TINY) continue;
        double L = (double)lam[p] + m + r;
        for (int64_t pk = 0; pk < P; pk++) {
            float bias = conv_bias(g, wh, p, pk);
            float alpha = (float)exp((double)kp[pk] + bias - L);
            int64_t i = pk / W - p / W + g->kh / 2, j = pk % W - p % W + g->kw / 2;
            bool in_window = i >= 0 && i < g->kh && j >= 0 && j < g->kw;
            double gk = 0;
            for (int64_t c = 0; c < g->cg; c++) { /* gg (V - A) = gg V - alpha G y */
                float gg = G[c * P + p] * aft_sigmoid(q[c * P + p]) * alpha;
                if (dv) dv[c * P + pk] += gg;
                gk += gg * v[c * P + pk] - alpha * G[c * P + p] * y[c * P + p];
            }
            if (dkp) dkp[pk] += (float)gk;
            if (dw && in_window) dw[i * g->kw + j] += gk;
        }
    }
}

static xt_status conv_backward(const conv_geom *g, const float *q, const float *k,
                               const float *v, const float *w, const float *y, const float *lam,
                               const float *G, conv_grads d)
{
    int nt = omp_get_max_threads();
    int64_t nf = conv_scratch_floats(g), nd = conv_scratch_doubles(g), kn = KERN(g->kk);
    conv_work cw;
    if (!conv_work_init(g, w, nt, &cw)) return xt_last_status();
    int64_t tasks = g->B * g->heads;
    bool stream = xt_streams(6 * g->B * g->C * g->P * (int64_t)sizeof(float));
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) \
    if (g->B * g->C * g->P * g->kk > XT_PARALLEL_GRAIN)
    for (int64_t task = 0; task < tasks; task++) {
        int64_t b = task / g->heads, i = task % g->heads;
        int64_t off = (b * g->C + i * g->cg) * g->P, koff = task * g->P;
        conv_backward_head(g, cw.kern + i * kn, q + off, k + koff, v + off, w + i * g->kk,
                           y + off, lam + koff, G + off, d.dq ? d.dq + off : NULL,
                           d.dk ? d.dk + koff : NULL, d.dv ? d.dv + off : NULL,
                           d.dw ? d.dw + task * g->kk : NULL, stream,
                           cw.scratch + omp_get_thread_num() * nf,
                           cw.dscratch + omp_get_thread_num() * nd);
    }
    aft_release(3, cw.hold);
    return XT_OK;
}

/* saved: 0 q, 1 k, 2 v, 3 w (contiguous), 4 y [B,C,H,W], 5 lam [B,heads,H,W]. */
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
    xt_tensor *y = xt_empty(4, q->shape, XT_FLOAT32), *lam = xt_empty(4, k->shape, XT_FLOAT32);
    xt_tensor *all[6] = {qc, kc, vc, wc, y, lam};
    bool ok = qc && kc && vc && wc && y && lam &&
              conv_forward(&g, qc->data, kc->data, vc->data, wc->data, y->data, lam->data) ==
                  XT_OK;
    xt_tensor *inputs[4] = {q, k, v, w};
    if (ok && xt_needs_grad(4, inputs)) {
        xt_node *node = xt_node_new("aft_conv", aft_conv_backward, 4, inputs);
        ok = node != NULL;
        for (int32_t i = 0; i < 6 && ok; i++) ok = xt_node_save(node, all[i]) == XT_OK;
        if (ok) xt_node_attach(node, y);
        else xt_node_release(node);
    }
    if (!ok) {
        aft_release(6, all);
        return NULL;
    }
    aft_release(4, all); /* qc kc vc wc; lam below; y to the caller */
    xt_tensor_release(lam);
    return y;
}
