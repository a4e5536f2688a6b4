/*
 * aft_local.c: AFT-local, and the position-bias engine that AFT-full runs on too
 * (AFT-full is the window that covers the whole sequence; aft_full.c).
 *
 * Shapes: q, k, v, y [B,T,D]; w [T,T]. For batch item b, channel c and query t:
 *   num[t] = sum_{t' in win(t)} exp(w[t,t'] - r_t) E[t'] V[t'] + exp(-r_t) sum_{t' out(t)} E V
 *   den[t] = the same without V;    A = num / den;    y = sigmoid(q) * A
 * E = exp(K - m_c) with m_c the max of channel c of K over time (per batch item); r_t the
 * max of the biases query t sees: w on its window, and 0 when some allowed key lies
 * outside the window (the bias there is 0, not -inf: AFT-local keeps global connectivity).
 * win(t) = [lo(t), hi(t)): t - window < t' < t + window, and t' <= t when causal; out(t)
 * is the rest of the allowed keys (t' <= t when causal, all otherwise).
 *
 * Layout: all batch items and channels are stacked as [T, J], J = 2BD; columns
 * [2Db, 2Db + D) hold E V of item b and the next D hold E. The sums are one GEMM per block
 * of Tb query rows: P_blk [Tb, width] times the stack's rows [c0, c0 + width), the keys
 * the block's windows cover. P_blk holds exp(w - r) on each query's window and exp(-r) on
 * the block's keys outside it (so the GEMM also sums the outside keys near the window);
 * the outside keys beyond the block's key range are one running sum per block, taken (in
 * double) in the pass that makes the stack, which starts the block's rows. Blocks run on
 * different threads, and each turns its rows of sums into y and log(den) while they
 * are in cache. Memory: the stack [T,J] and a [Tb,J] block and P_blk per thread; nothing
 * T x T besides w and its gradient.
 *
 * Backward (research notes section 5), H = G sigmoid(q), Hn = H / den:
 *   Y2 = [Hn | Hn A] stacked like the forward; Z = P'^T Y2 with P' every weight
 *   exp(w' - r); U, W2 its two halves;
 *   dV = E U,   dK = E (V U - W2),   dq = G A sigmoid(q) (1 - sigmoid(q)),
 * where Hn A = G y / den and dq = G y (1 - sigmoid(q)): the forward saves y, not A.
 *   dw[t,t'] = P[t,t'] (Y2[t] . [E V | -E][t'])  on the window (one GEMM per block).
 * Z is made per block of keys (the queries near them by a GEMM, the others by running
 * sums) and dw per block of queries, so every block owns its rows.
 */
#include "aft.h"
#include "stream_store.h"

#include <omp.h>

typedef struct band {
    int64_t B, T, D, J; /* J = 2BD: the width of a stacked row */
    int64_t s;          /* window, at most T */
    bool causal;
    int64_t tb;         /* query rows per GEMM block */
} band;

/* The window of query t is [lo, hi); an empty window has lo == hi == t + 1. */
static inline int64_t win_lo(const band *g, int64_t t) { return t - g->s + 1 > 0 ? t - g->s + 1 : 0; }
static inline int64_t win_hi(const band *g, int64_t t)
{
    int64_t lo = win_lo(g, t), hi = g->causal ? t + 1 : t + g->s;
    if (hi > g->T) hi = g->T;
    return hi > lo ? hi : lo;
}
/* Keys query t may see: [0, end). */
static inline int64_t allowed_end(const band *g, int64_t t) { return g->causal ? t + 1 : g->T; }
static inline bool has_outside(const band *g, int64_t t)
{
    return win_lo(g, t) > 0 || win_hi(g, t) < allowed_end(g, t);
}
/* The bias between query t and key t' (t' allowed): w inside the window, 0 outside. */
static inline float bias_at(const band *g, const float *w, int64_t t, int64_t tk)
{
    return tk >= win_lo(g, t) && tk < win_hi(g, t) ? w[t * g->T + tk] : 0.0f;
}

static int64_t rows_per_block(int64_t T, int64_t s, bool causal)
{
    int64_t tb;
    if (s >= T) tb = causal ? 128 : 256; /* AFT-full: causal blocks skip the upper triangle */
    else tb = s / 4 < 32 ? 32 : s / 4 > 256 ? 256 : s / 4; /* band waste (Tb + s) / s */
    return tb < T ? tb : T;
}

/* r[t]: the max bias query t sees; out_scale[t] = exp(-r[t]) when it has keys outside its
 * window (then r[t] >= 0), else 0 (its outside sums are empty). */
static void row_offsets(const band *g, const float *w, float *r, float *out_scale)
{
    int64_t T = g->T;
#pragma omp parallel for schedule(static) if (T * g->s > XT_PARALLEL_GRAIN)
    for (int64_t t = 0; t < T; t++) {
        bool outside = has_outside(g, t);
        int64_t lo = win_lo(g, t), hi = win_hi(g, t);
        float mx = aft_max(w + t * T + lo, hi - lo, outside ? 0.0f : -INFINITY);
        r[t] = mx;
        out_scale[t] = outside ? expf(-mx) : 0.0f;
    }
}

/* GEMM blocks, tiled two ways, each with disjoint output rows so that blocks run on
 * different threads (each GEMM single-threaded inside the parallel loop; one parallel
 * region per pass rather than one per block, which matters on a busy machine):
 *  - query block j: queries [t0, t1) = [j Tb, (j+1) Tb) and the keys [c0, c1) their
 *    windows cover (forward sums, backward dw rows);
 *  - key block j: keys [c0, c1) = [j Tb, (j+1) Tb) and the queries [t0, t1) near them
 *    (backward rows of Z = P'^T Y): every query outside that range that may see those
 *    keys sees them outside its window.
 * The sums over the keys (forward) or queries (backward) outside a block's range are the
 * block's running sums. */
typedef struct block {
    int64_t t0, t1, c0, c1;
} block;

static int64_t block_count(const band *g) { return (g->T + g->tb - 1) / g->tb; }

static block query_block(const band *g, int64_t j)
{
    block b;
    b.t0 = j * g->tb;
    b.t1 = b.t0 + g->tb < g->T ? b.t0 + g->tb : g->T;
    b.c0 = win_lo(g, b.t0);
    b.c1 = win_hi(g, b.t1 - 1);
    return b;
}

static block key_block(const band *g, int64_t j)
{
    block b;
    int64_t T = g->T, s = g->s;
    b.c0 = j * g->tb;
    b.c1 = b.c0 + g->tb < T ? b.c0 + g->tb : T;
    /* queries t >= c1 + s - 1 have lo(t) >= c1: the block's keys are before their windows.
     * Causal, queries t < c0 see none of them; otherwise queries t < c0 - s + 1 (t < c0 for
     * window 0) have hi(t) <= c0: the keys are after their windows. */
    int64_t before = s > 0 ? s - 1 : 0;
    b.t0 = g->causal ? b.c0 : b.c0 - before > 0 ? b.c0 - before : 0;
    b.t1 = b.c1 + s - 1 < T ? b.c1 + s - 1 : T;
    if (b.t1 < b.t0) b.t1 = b.t0;
    return b;
}

/* Floats of P scratch per thread: the largest block of either kind. */
static int64_t block_scratch(const band *g)
{
    int64_t most = 1;
    for (int64_t j = 0; j < block_count(g); j++) {
        block q = query_block(g, j), k = key_block(g, j);
        int64_t a = (q.t1 - q.t0) * (q.c1 - q.c0), b = (k.t1 - k.t0) * (k.c1 - k.c0);
        most = a > most ? a : most;
        most = b > most ? b : most;
    }
    return most;
}

/* P [t1 - t0, c1 - c0] for the queries [t0, t1) and keys [c0, c1): exp(w[t,t'] - r[t]) on
 * query t's window; with outside, out_scale[t] (= exp(-r[t]), the weight of bias 0) on the
 * allowed keys outside it; 0 elsewhere. Runs on the calling thread. */
static void block_weights(const band *g, const float *w, const float *r, const float *osc,
                          bool outside, block b, float *P)
{
    int64_t width = b.c1 - b.c0;
    for (int64_t t = b.t0; t < b.t1; t++) {
        float *p = P + (t - b.t0) * width;
        const float *wr = w + t * g->T + b.c0;
        int64_t lo = win_lo(g, t) - b.c0, hi = win_hi(g, t) - b.c0;
        lo = lo < 0 ? 0 : lo > width ? width : lo;
        hi = hi < lo ? lo : hi > width ? width : hi;
        float rt = r[t], before = outside ? osc[t] : 0.0f;
        float after = outside && !g->causal ? osc[t] : 0.0f; /* causal: t' > t, not allowed */
        for (int64_t j = 0; j < lo; j++) p[j] = before;
#pragma omp simd
        for (int64_t j = lo; j < hi; j++) p[j] = aft_exp_neg(wr[j] - rt);
        for (int64_t j = hi; j < width; j++) p[j] = after;
    }
}

/* Whether some query has keys outside its window (not so for AFT-full). */
static bool any_outside(const band *g)
{
    for (int64_t t = 0; t < g->T; t++)
        if (has_outside(g, t)) return true;
    return false;
}

/* Exact output for one (b, t, c) whose scaled denominator underflowed: a direct sum over
 * the allowed keys with the max of k + w' as offset, in double. Returns A; *lam gets
 * log(den) relative to the offsets m_c + r_t. */
static float direct_output(const band *g, const float *k, const float *v, const float *w,
                           int64_t b, int64_t t, int64_t c, float mc, float rt, float *lam)
{
    int64_t T = g->T, D = g->D, end = allowed_end(g, t);
    const float *kc = k + b * T * D + c, *vc = v + b * T * D + c;
    double M = -INFINITY;
    for (int64_t tk = 0; tk < end; tk++) {
        double x = (double)kc[tk * D] + bias_at(g, w, t, tk);
        M = x > M ? x : M;
    }
    double s = 0, n = 0;
    for (int64_t tk = 0; tk < end; tk++) {
        double e = exp((double)kc[tk * D] + bias_at(g, w, t, tk) - M);
        s += e;
        n += e * vc[tk * D];
    }
    *lam = (float)(log(s) + M - mc - rt);
    return (float)(n / s);
}

/* ---- forward --------------------------------------------------------------------------- */

/* m [B*D]: the max of each channel of k over time; X [T,J] = [E V | E] per batch item; with
 * out [nb,J] (double), the sum of X over the keys outside query block j's key range that
 * its queries may see: t' < c0(j), and t' >= c1(j) when not causal. One task per batch
 * item and group of channels, scanning time forwards (aft.h): with P(t) the sum over keys
 * before t, out[j] = P(c0), + total - P(c1) when not causal. */
static void forward_prepare(const band *g, const float *k, const float *v, float *m, float *X,
                            double *out)
{
    int64_t B = g->B, T = g->T, D = g->D, J = g->J, nb = block_count(g);
    int64_t cols = aft_group_width(B, D), nch = (D + cols - 1) / cols;
#pragma omp parallel for collapse(2) schedule(static) if (B * T * D > XT_PARALLEL_GRAIN)
    for (int64_t b = 0; b < B; b++)
        for (int64_t ch = 0; ch < nch; ch++) {
            int64_t c0 = ch * cols, nc = D - c0 < cols ? D - c0 : cols, col = b * 2 * D + c0;
            float mx[AFT_GROUP];
            for (int64_t c = 0; c < nc; c++) mx[c] = -INFINITY;
            for (int64_t t = 0; t < T; t++) {
                const float *kr = k + (b * T + t) * D + c0;
#pragma omp simd
                for (int64_t c = 0; c < nc; c++) mx[c] = kr[c] > mx[c] ? kr[c] : mx[c];
            }
            for (int64_t c = 0; c < nc; c++) m[b * D + c0 + c] = mx[c];
            double rn[AFT_GROUP] = {0}, rd[AFT_GROUP] = {0}; /* P(t): keys [0, t) */
            int64_t j0 = 0, j1 = 0; /* the next query blocks whose c0, c1 are still ahead */
            for (int64_t t = 0; t <= T; t++) {
                for (; out && j0 < nb && query_block(g, j0).c0 <= t; j0++)
                    for (int64_t c = 0; c < nc; c++) {
                        out[j0 * J + col + c] = rn[c];
                        out[j0 * J + col + D + c] = rd[c];
                    }
                for (; out && !g->causal && j1 < nb && query_block(g, j1).c1 <= t; j1++)
                    for (int64_t c = 0; c < nc; c++) {
                        out[j1 * J + col + c] -= rn[c];
                        out[j1 * J + col + D + c] -= rd[c];
                    }
                if (t == T) break;
                const float *kr = k + (b * T + t) * D + c0, *vr = v + (b * T + t) * D + c0;
                float *x = X + t * J + col;
#pragma omp simd
                for (int64_t c = 0; c < nc; c++) {
                    float e = aft_exp_neg(kr[c] - mx[c]), ev = e * vr[c];
                    x[c] = ev;
                    x[D + c] = e;
                    rn[c] += ev;
                    rd[c] += e;
                }
            }
            for (int64_t jb = 0; out && !g->causal && jb < nb; jb++) /* + the total */
                for (int64_t c = 0; c < nc; c++) {
                    out[jb * J + col + c] += rn[c];
                    out[jb * J + col + D + c] += rd[c];
                }
        }
}

/* Rows [t0, t1) of the outputs from the block's sums nd [t1 - t0, J]: y = sigmoid(q) A
 * with A = num / den, lam = log(den). Returns the count of outputs whose den underflowed
 * (y = 0, lam = -inf, left to direct_output). */
static int64_t block_outputs(const band *g, const float *q, const float *nd, int64_t t0,
                             int64_t t1, float *y, float *lam)
{
    int64_t T = g->T, D = g->D, J = g->J, flagged = 0;
    for (int64_t b = 0; b < g->B; b++)
        for (int64_t t = t0; t < t1; t++) {
            const float *num = nd + (t - t0) * J + b * 2 * D;
            int64_t o = (b * T + t) * D;
            int64_t bad = 0;
#pragma omp simd reduction(+ : bad)
            for (int64_t c = 0; c < D; c++) {
                float den = num[D + c];
                bool ok = den >= AFT_TINY;
                float a = ok ? num[c] / den : 0.0f;
                lam[o + c] = ok ? aft_log(den) : -INFINITY;
                y[o + c] = aft_sigmoid(q[o + c]) * a;
                bad += !ok;
            }
            flagged += bad;
        }
    return flagged;
}

/* Writes y and lam = log(den) relative to the offsets. */
static xt_status band_forward(const band *g, const float *q, const float *k,
                              const float *v, const float *w, float *y, float *lam)
{
    int64_t B = g->B, T = g->T, D = g->D, J = g->J, nb = block_count(g);
    bool outside = any_outside(g);
    int nt = omp_get_max_threads();
    int64_t per_thread = block_scratch(g);
    xt_tensor *hold[7] = {NULL};
    float *m = aft_buffer(&hold[0], B * D), *r = aft_buffer(&hold[1], T);
    float *osc = aft_buffer(&hold[2], T), *X = aft_buffer(&hold[3], T * J);
    float *ND = aft_buffer(&hold[4], g->tb * J * nt), *P = aft_buffer(&hold[5], per_thread * nt);
    double *out = outside ? (double *)aft_buffer(&hold[6], 2 * nb * J) : NULL; /* [nb,J] */
    if (!m || !r || !osc || !X || !ND || !P || (outside && !out)) {
        aft_release(7, hold);
        return xt_last_status();
    }
    row_offsets(g, w, r, osc);
    forward_prepare(g, k, v, m, X, out);

    /* per query block: nd = out_scale (the sums beyond the block's keys), then += P_blk
     * X[c0:c1], then the outputs; largest blocks (causal AFT-full's last) first */
    int64_t flagged = 0;
    bool parallel_blocks = nb > 1 && T * J > XT_PARALLEL_GRAIN;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) reduction(+ : flagged) \
    if (parallel_blocks)
    for (int64_t i = 0; i < nb; i++) {
        block b = query_block(g, nb - 1 - i);
        int tid = omp_get_thread_num();
        float *Pt = P + tid * per_thread, *nd = ND + tid * g->tb * J;
        int64_t tn = b.t1 - b.t0, width = b.c1 - b.c0;
        if (outside) {
            const double *o = out + (nb - 1 - i) * J;
            for (int64_t t = b.t0; t < b.t1; t++) {
                float *row = nd + (t - b.t0) * J;
                double sc = osc[t];
#pragma omp simd
                for (int64_t j = 0; j < J; j++) row[j] = (float)(sc * o[j]);
            }
        }
        if (width > 0) {
            block_weights(g, w, r, osc, outside, b, Pt);
            xt_sgemm(false, false, tn, J, width, 1.0f, Pt, width, X + b.c0 * J, J,
                     outside ? 1.0f : 0.0f, nd, J);
        } else if (!outside) {
            memset(nd, 0, sizeof(float) * (size_t)(tn * J));
        }
        flagged += block_outputs(g, q, nd, b.t0, b.t1, y, lam);
    }
    if (flagged > 0) {
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t t = 0; t < T; t++)
            for (int64_t b = 0; b < B; b++)
                for (int64_t c = 0; c < D; c++) {
                    int64_t o = (b * T + t) * D + c;
                    if (lam[o] != -INFINITY) continue;
                    float a = direct_output(g, k, v, w, b, t, c, m[b * D + c], r[t], &lam[o]);
                    y[o] = aft_sigmoid(q[o]) * a;
                }
    }
    aft_release(7, hold);
    return XT_OK;
}

/* ---- backward ------------------------------------------------------------------------- */

/* Gradients of the outputs whose den underflowed (lam < AFT_LOG_TINY), by direct sums:
 * alpha = exp(k[t'] + w'[t,t'] - L) with L the exact log-normaliser; H alpha (V - A) =
 * alpha (H V - G y). */
static void direct_backward(const band *g, const float *q, const float *k, const float *v,
                            const float *w, const float *y, const float *lam, const float *G,
                            const float *m, const float *r, float *dk, float *dv, float *dw)
{
    int64_t B = g->B, T = g->T, D = g->D;
    if (dk || dv) {
        /* one (b, c) per task: it owns column c of dk and dv */
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
        for (int64_t b = 0; b < B; b++)
            for (int64_t c = 0; c < D; c++) {
                int64_t base = b * T * D + c;
                for (int64_t t = 0; t < T; t++) {
                    int64_t o = base + t * D;
                    if (!(lam[o] < AFT_LOG_TINY)) continue;
                    float L = lam[o] + m[b * D + c] + r[t];
                    float h = G[o] * aft_sigmoid(q[o]), gy = G[o] * y[o];
                    for (int64_t tk = 0; tk < allowed_end(g, t); tk++) {
                        int64_t ok = base + tk * D;
                        float alpha = expf(k[ok] + bias_at(g, w, t, tk) - L);
                        if (dv) dv[ok] += h * alpha;
                        if (dk) dk[ok] += alpha * (h * v[ok] - gy);
                    }
                }
            }
    }
    if (dw) {
        /* one query row per task: it owns row t of dw (only the window has a gradient) */
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t t = 0; t < T; t++)
            for (int64_t b = 0; b < B; b++)
                for (int64_t c = 0; c < D; c++) {
                    int64_t o = (b * T + t) * D + c;
                    if (!(lam[o] < AFT_LOG_TINY)) continue;
                    float L = lam[o] + m[b * D + c] + r[t];
                    float h = G[o] * aft_sigmoid(q[o]), gy = G[o] * y[o];
                    for (int64_t tk = win_lo(g, t); tk < win_hi(g, t); tk++) {
                        int64_t ok = (b * T + tk) * D + c;
                        dw[t * T + tk] += expf(k[ok] + w[t * T + tk] - L) * (h * v[ok] - gy);
                    }
                }
    }
}

typedef struct band_grads {
    float *dq, *dk, *dv, *dw; /* NULL when not needed */
} band_grads;

/* dq; with Y, X: m [B*D] as in the forward, Y [T,J] = [Hn | Hn A] (0 for the outputs left to
 * direct_backward), X [T,J] = [E V | -E]; with zout [nb,J] (double), the sum of
 * out_scale[t] Y[t] over the queries outside key block j's query range, all of which see
 * its keys outside their windows: t >= t1(j), and t < t0(j) when not causal. One task per
 * batch item and group of channels, scanning time forwards (aft.h; descending streams
 * prefetch far worse): with P(t) the sum over queries before t, zout[j] = total - P(t1)
 * (+ P(t0) when not causal), in double. Returns the count of outputs whose den
 * underflowed. */
static int64_t backward_prepare(const band *g, const float *q, const float *k, const float *v,
                                const float *yo, const float *lam, const float *G,
                                const float *osc, float *dq, float *m, float *Y, float *X,
                                double *zout)
{
    int64_t B = g->B, T = g->T, D = g->D, J = g->J, nb = block_count(g);
    int64_t cols = aft_group_width(B, D), nch = (D + cols - 1) / cols, flagged = 0;
#pragma omp parallel for collapse(2) schedule(static) reduction(+ : flagged) \
    if (B * T * D > XT_PARALLEL_GRAIN)
    for (int64_t b = 0; b < B; b++)
        for (int64_t ch = 0; ch < nch; ch++) {
            int64_t c0 = ch * cols, nc = D - c0 < cols ? D - c0 : cols, col = b * 2 * D + c0;
            float mx[AFT_GROUP];
            if (Y) {
                for (int64_t c = 0; c < nc; c++) mx[c] = -INFINITY;
                for (int64_t t = 0; t < T; t++) {
                    const float *kr = k + (b * T + t) * D + c0;
#pragma omp simd
                    for (int64_t c = 0; c < nc; c++) mx[c] = kr[c] > mx[c] ? kr[c] : mx[c];
                }
                for (int64_t c = 0; c < nc; c++) m[b * D + c0 + c] = mx[c];
            }
            double r1[AFT_GROUP] = {0}, r2[AFT_GROUP] = {0}; /* P(t): queries [0, t) */
            int64_t j0 = 0, j1 = 0; /* the next key blocks whose t0, t1 are still ahead */
            for (int64_t t = 0; t <= T; t++) {
                for (; zout && !g->causal && j0 < nb && key_block(g, j0).t0 <= t; j0++)
                    for (int64_t c = 0; c < nc; c++) {
                        zout[j0 * J + col + c] = r1[c];
                        zout[j0 * J + col + D + c] = r2[c];
                    }
                for (; zout && j1 < nb && key_block(g, j1).t1 <= t; j1++)
                    for (int64_t c = 0; c < nc; c++) {
                        double *z = zout + j1 * J + col;
                        z[c] = (g->causal ? 0.0 : z[c]) - r1[c];
                        z[D + c] = (g->causal ? 0.0 : z[D + c]) - r2[c];
                    }
                if (t == T) break;
                int64_t o = (b * T + t) * D + c0;
                const float *qr = q + o, *yr = yo + o, *gr = G + o, *lr = lam + o;
                if (!Y) {
                    if (!dq) continue;
#pragma omp simd
                    for (int64_t c = 0; c < nc; c++)
                        dq[o + c] = gr[c] * yr[c] * (1.0f - aft_sigmoid(qr[c]));
                    continue;
                }
                const float *kr = k + o, *vr = v + o;
                float *y = Y + t * J + col, *x = X + t * J + col;
                float sc = osc[t];
                int64_t bad = 0;
#pragma omp simd reduction(+ : bad)
                for (int64_t c = 0; c < nc; c++) {
                    float s = aft_sigmoid(qr[c]), gy = gr[c] * yr[c];
                    if (dq) dq[o + c] = gy * (1.0f - s);
                    bool ok = lr[c] >= AFT_LOG_TINY;
                    float inv = ok ? aft_exp(-lr[c]) : 0.0f; /* 1 / den */
                    float hn = gr[c] * s * inv, hna = gy * inv;
                    float e = aft_exp_neg(kr[c] - mx[c]);
                    y[c] = hn;
                    y[D + c] = hna;
                    x[c] = e * vr[c];
                    x[D + c] = -e;
                    r1[c] += sc * hn;
                    r2[c] += sc * hna;
                    bad += !ok;
                }
                flagged += bad;
            }
            for (int64_t jb = 0; zout && jb < nb; jb++) /* + the total */
                for (int64_t c = 0; c < nc; c++) {
                    zout[jb * J + col + c] += r1[c];
                    zout[jb * J + col + D + c] += r2[c];
                }
        }
    return flagged;
}

/* dv and dk for the keys [c0, c1) from their rows z [c1 - c0, J] of Z = [U | W2] and X. */
static void block_key_grads(const band *g, const float *X, const float *z, int64_t c0,
                            int64_t c1, float *dk, float *dv)
{
    int64_t T = g->T, D = g->D, J = g->J;
    for (int64_t b = 0; b < g->B; b++)
        for (int64_t t = c0; t < c1; t++) {
            int64_t o = (b * T + t) * D;
            const float *x = X + t * J + b * 2 * D, *u = z + (t - c0) * J + b * 2 * D;
            if (dv) {
#pragma omp simd
                for (int64_t c = 0; c < D; c++) dv[o + c] = -x[D + c] * u[c]; /* E U */
            }
            if (dk) {
#pragma omp simd
                for (int64_t c = 0; c < D; c++) dk[o + c] = x[c] * u[c] + x[D + c] * u[D + c];
            }
        }
}

static xt_status band_backward_kernel(const band *g, const float *q,
                                      const float *k, const float *v, const float *w,
                                      const float *y, const float *lam, const float *G,
                                      band_grads d)
{
    int64_t B = g->B, T = g->T, D = g->D, J = g->J, nb = block_count(g);
    bool need_kv = d.dk || d.dv, need_w = d.dw != NULL;
    bool need_Y = need_kv || need_w, outside = any_outside(g);
    int nt = omp_get_max_threads();
    int64_t per_thread = block_scratch(g);
    xt_tensor *hold[8] = {NULL};
    float *m = aft_buffer(&hold[0], B * D), *r = aft_buffer(&hold[1], T);
    float *osc = aft_buffer(&hold[2], T);
    float *Y = need_Y ? aft_buffer(&hold[3], T * J) : NULL; /* [T,J] */
    float *X = need_Y ? aft_buffer(&hold[4], T * J) : NULL; /* [T,J] */
    float *P = need_Y ? aft_buffer(&hold[5], per_thread * nt) : NULL;
    float *Z = need_kv ? aft_buffer(&hold[6], g->tb * J * nt) : NULL; /* [Tb,J] per thread */
    double *zout = need_kv && outside ? (double *)aft_buffer(&hold[7], 2 * nb * J) : NULL;
    if (!m || !r || !osc || (need_Y && (!Y || !X || !P)) || (need_kv && !Z) ||
        (need_kv && outside && !zout)) {
        aft_release(8, hold);
        return xt_last_status();
    }
    row_offsets(g, w, r, osc);
    int64_t flagged = backward_prepare(g, q, k, v, y, lam, G, osc, d.dq, m, Y, X, zout);
    bool parallel_blocks = nb > 1 && T * J > XT_PARALLEL_GRAIN;

    if (need_kv) {
        /* per key block: z = the running sums, += P[t0:t1, c0:c1]^T Y[t0:t1], then dk, dv */
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (parallel_blocks)
        for (int64_t j = 0; j < nb; j++) {
            block b = key_block(g, j);
            int tid = omp_get_thread_num();
            float *Pt = P + tid * per_thread, *z = Z + tid * g->tb * J;
            int64_t kn = b.c1 - b.c0, tn = b.t1 - b.t0;
            if (outside) {
                const double *o = zout + j * J;
                for (int64_t t = 0; t < kn; t++) {
                    float *row = z + t * J;
#pragma omp simd
                    for (int64_t x = 0; x < J; x++) row[x] = (float)o[x];
                }
            }
            if (tn > 0) {
                block_weights(g, w, r, osc, outside, b, Pt);
                xt_sgemm(true, false, kn, J, tn, 1.0f, Pt, kn, Y + b.t0 * J, J,
                         outside ? 1.0f : 0.0f, z, J);
            } else if (!outside) {
                memset(z, 0, sizeof(float) * (size_t)(kn * J));
            }
            block_key_grads(g, X, z, b.c0, b.c1, d.dk, d.dv);
        }
    }
    if (need_w) {
        /* dw's zeros (all of it but the band) go around the caches when it is big */
        bool stream_dw = xt_streams(T * T * (int64_t)sizeof(float));
        /* dw[t0:t1, c0:c1] = P_blk * (Y[t0:t1] [E V | -E][c0:c1]^T) per query block (the
         * window only: the bias outside it is the constant 0); the rest of the rows 0 */
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (parallel_blocks)
        for (int64_t i = 0; i < nb; i++) {
            block b = query_block(g, nb - 1 - i);
            float *Pt = P + omp_get_thread_num() * per_thread;
            int64_t tn = b.t1 - b.t0, width = g->s > 0 ? b.c1 - b.c0 : 0;
            for (int64_t t = b.t0; t < b.t1; t++) {
                float *row = d.dw + t * T;
                if (stream_dw) {
                    xt_store_zeros(row, width > 0 ? b.c0 : T);
                    if (width > 0) xt_store_zeros(row + b.c1, T - b.c1);
                } else {
                    memset(row, 0, sizeof(float) * (size_t)(width > 0 ? b.c0 : T));
                    if (width > 0) memset(row + b.c1, 0, sizeof(float) * (size_t)(T - b.c1));
                }
            }
            if (stream_dw) xt_store_fence();
            if (width == 0) continue;
            float *dw0 = d.dw + b.t0 * T + b.c0;
            block_weights(g, w, r, osc, false, b, Pt);
            xt_sgemm(false, true, tn, width, J, 1.0f, Y + b.t0 * J, J, X + b.c0 * J, J, 0.0f,
                     dw0, T);
            for (int64_t row = 0; row < tn; row++) {
                float *o = dw0 + row * T;
                const float *p = Pt + row * width;
#pragma omp simd
                for (int64_t j = 0; j < width; j++) o[j] *= p[j];
            }
        }
    }
    if (flagged > 0) direct_backward(g, q, k, v, w, y, lam, G, m, r, d.dk, d.dv, d.dw);
    aft_release(8, hold);
    return XT_OK;
}

/* saved: 0 q, 1 k, 2 v, 3 w (contiguous), 4 y, 5 lam. iargs: 0 window, 1 causal. */
static xt_status aft_bias_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *s[6];
    for (int32_t i = 0; i < 6; i++)
        if (!(s[i] = xt_node_saved(node, i))) return xt_last_status();
    xt_tensor *q = s[0], *w = s[3];
    band g = {.B = q->shape[0], .T = q->shape[1], .D = q->shape[2]};
    g.J = 2 * g.B * g.D;
    g.s = node->iargs[0] < g.T ? node->iargs[0] : g.T;
    g.causal = node->iargs[1] != 0;
    g.tb = rows_per_block(g.T, g.s, g.causal);

    xt_tensor *gc = xt_contiguous(dout);
    xt_tensor *dt[4] = {NULL, NULL, NULL, NULL};
    bool ok = gc != NULL;
    for (int32_t i = 0; i < 4 && ok; i++) {
        if (!xt_node_needs(node, i)) continue;
        dt[i] = i == 3 ? xt_empty(2, w->shape, XT_FLOAT32) : xt_empty(3, q->shape, XT_FLOAT32);
        ok = dt[i] != NULL;
    }
    if (ok) {
        band_grads d = {dt[0] ? dt[0]->data : NULL, dt[1] ? dt[1]->data : NULL,
                        dt[2] ? dt[2]->data : NULL, dt[3] ? dt[3]->data : NULL};
        ok = band_backward_kernel(&g, q->data, s[1]->data, s[2]->data, w->data,
                                  s[4]->data, s[5]->data, gc->data, d) == XT_OK;
    }
    xt_tensor_release(gc);
    if (!ok) {
        aft_release(4, dt);
        return xt_last_status();
    }
    for (int32_t i = 0; i < 4; i++) dinputs[i] = dt[i];
    return XT_OK;
}

xt_tensor *aft_bias_attention(const char *op, xt_tensor *q, xt_tensor *k, xt_tensor *v,
                              xt_tensor *w, int64_t window, int32_t causal)
{
    if (aft_check_qkv(op, q, k, v)) return NULL;
    int64_t T = q->shape[1];
    int64_t wshape[2] = {T, T};
    if (aft_check_shape(op, "w", w, 2, wshape, "[T,T] with T the length of q"))
        return NULL;
    if (window < 0)
        return xt_fail_null(XT_ERR_ARG, "%s: expected a window >= 0, got %lld", op,
                            (long long)window);
    band g = {.B = q->shape[0], .T = T, .D = q->shape[2], .causal = causal != 0};
    g.J = 2 * g.B * g.D;
    g.s = window < T ? window : T;
    g.tb = rows_per_block(T, g.s, g.causal);

    xt_tensor *qc = aft_dense(q), *kc = aft_dense(k), *vc = aft_dense(v), *wc = aft_dense(w);
    xt_tensor *y = xt_empty(3, q->shape, XT_FLOAT32), *lam = xt_empty(3, q->shape, XT_FLOAT32);
    xt_tensor *all[6] = {qc, kc, vc, wc, y, lam};
    bool ok = qc && kc && vc && wc && y && lam &&
              band_forward(&g, qc->data, kc->data, vc->data, wc->data, y->data, lam->data) ==
                  XT_OK;
    xt_tensor *inputs[4] = {q, k, v, w};
    if (ok && xt_needs_grad(4, inputs)) {
        xt_node *node = xt_node_new(op, aft_bias_backward, 4, inputs);
        ok = node != NULL;
        for (int32_t i = 0; i < 6 && ok; i++) ok = xt_node_save(node, all[i]) == XT_OK;
        if (ok) {
            node->iargs[0] = window;
            node->iargs[1] = causal != 0;
            xt_node_attach(node, y);
        } else {
            xt_node_release(node);
        }
    }
    if (!ok) {
        aft_release(6, all);
        return NULL;
    }
    aft_release(4, all); /* qc kc vc wc; lam below; y to the caller */
    xt_tensor_release(lam);
    return y;
}

xt_tensor *xt_aft_local(xt_tensor *q, xt_tensor *k, xt_tensor *v, xt_tensor *w, int64_t window,
                        int32_t causal)
{
    return aft_bias_attention("aft_local", q, k, v, w, window, causal);
}
