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
 * [2Db, 2Db + D) hold E V of item b and the next D hold E. The window part is one GEMM
 * per block of Tb query rows: P_blk [Tb, width] (exp(w - r) on the band, 0 off it, made
 * on the fly from w) times the stack's rows [c0, c0 + width), the only keys those queries
 * see in their windows; blocks run on different threads. The outside part is running
 * sums over time (in double) of the stack: the keys before the window, plus those after
 * it when not causal. Memory: three or four [T,J] buffers and one P_blk per thread;
 * nothing T x T besides w and its gradient.
 *
 * Backward (research notes section 5), H = G sigmoid(q), Hn = H / den:
 *   Y2 = [Hn | Hn A] stacked like the forward; Z = P'^T Y2 with P' every weight
 *   exp(w' - r) (the window by GEMMs, the outside by running sums); U, W2 its two halves;
 *   dV = E U,   dK = E (V U - W2),   dq = G A sigmoid(q) (1 - sigmoid(q)),
 *   dw[t,t'] = P[t,t'] (Y2[t] . [E V | -E][t'])  on the window (one GEMM per block).
 * Z is made per block of keys and dw per block of queries, so every block owns its rows.
 */
#include "aft.h"

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

/* m[b*D + c] = max over t of k[b,t,c]. */
static void column_max(const float *k, int64_t B, int64_t T, int64_t D, float *m)
{
#pragma omp parallel for schedule(static) if (B * T * D > XT_PARALLEL_GRAIN && B > 1)
    for (int64_t b = 0; b < B; b++) {
        float *mb = m + b * D;
        for (int64_t c = 0; c < D; c++) mb[c] = -INFINITY;
        for (int64_t t = 0; t < T; t++) {
            const float *kr = k + (b * T + t) * D;
#pragma omp simd
            for (int64_t c = 0; c < D; c++) mb[c] = kr[c] > mb[c] ? kr[c] : mb[c];
        }
    }
}

/* r[t]: the max bias query t sees; out_scale[t] = exp(-r[t]) when it has keys outside its
 * window (then r[t] >= 0), else 0 (its outside sums are empty). */
static void row_offsets(const band *g, const float *w, float *r, float *out_scale)
{
    int64_t T = g->T;
#pragma omp parallel for schedule(static) if (T * g->s > XT_PARALLEL_GRAIN)
    for (int64_t t = 0; t < T; t++) {
        bool outside = has_outside(g, t);
        float mx = outside ? 0.0f : -INFINITY;
        const float *wr = w + t * T;
        for (int64_t j = win_lo(g, t); j < win_hi(g, t); j++) mx = wr[j] > mx ? wr[j] : mx;
        r[t] = mx;
        out_scale[t] = outside ? expf(-mx) : 0.0f;
    }
}

/* P [t1 - t0, c1 - c0]: exp(w[t,t'] - r[t]) for the keys t' in [c0, c1) inside query t's
 * window, 0 for the others. Runs on the calling thread (blocks are spread over threads). */
static void band_weights(const band *g, const float *w, const float *r, int64_t t0, int64_t t1,
                         int64_t c0, int64_t c1, float *P)
{
    int64_t width = c1 - c0;
    for (int64_t t = t0; t < t1; t++) {
        float *p = P + (t - t0) * width;
        const float *wr = w + t * g->T + c0;
        int64_t lo = win_lo(g, t) - c0, hi = win_hi(g, t) - c0;
        lo = lo < 0 ? 0 : lo > width ? width : lo;
        hi = hi < lo ? lo : hi > width ? width : hi;
        float rt = r[t];
        for (int64_t j = 0; j < lo; j++) p[j] = 0.0f;
#pragma omp simd
        for (int64_t j = lo; j < hi; j++) p[j] = aft_exp(wr[j] - rt);
        for (int64_t j = hi; j < width; j++) p[j] = 0.0f;
    }
}

/* GEMM blocks. The window part is tiled two ways, each with disjoint output rows so that
 * blocks run on different threads (each GEMM single-threaded inside the parallel loop;
 * one parallel region per pass rather than one per block, which matters on a busy machine):
 *  - query block i: queries [t0, t1) = [i Tb, (i+1) Tb) and the keys [c0, c1) their
 *    windows cover (forward num/den rows, backward dw rows);
 *  - key block i: keys [c0, c1) = [i Tb, (i+1) Tb) and the queries [t0, t1) whose
 *    windows reach them (backward rows of Z = P'^T Y).
 * Blocks are handed out largest first (causal AFT-full's are triangular). */
typedef struct block {
    int64_t t0, t1, c0, c1;
} block;

static int64_t block_count(const band *g) { return (g->T + g->tb - 1) / g->tb; }

/* Block i of the given kind, counted so that i = 0 is the last (largest when causal). */
static block query_block(const band *g, int64_t i)
{
    block b;
    b.t0 = (block_count(g) - 1 - i) * g->tb;
    b.t1 = b.t0 + g->tb < g->T ? b.t0 + g->tb : g->T;
    b.c0 = win_lo(g, b.t0);
    b.c1 = win_hi(g, b.t1 - 1);
    return b;
}

static block key_block(const band *g, int64_t i)
{
    block b;
    int64_t T = g->T, s = g->s;
    b.c0 = i * g->tb;
    b.c1 = b.c0 + g->tb < T ? b.c0 + g->tb : T;
    /* queries t with lo(t) < c1 and hi(t) > c0 (s >= 1): t > c0 - s, and t >= c0 causally;
     * t < c1 + s - 1 */
    b.t0 = g->causal ? b.c0 : b.c0 - s + 1 > 0 ? b.c0 - s + 1 : 0;
    b.t1 = b.c1 + s - 1 < T ? b.c1 + s - 1 : T;
    return b;
}

/* Floats of P scratch per thread: the largest block of either kind. */
static int64_t block_scratch(const band *g)
{
    int64_t most = 1;
    for (int64_t i = 0; i < block_count(g); i++) {
        block q = query_block(g, i), k = key_block(g, i);
        int64_t a = (q.t1 - q.t0) * (q.c1 - q.c0), b = (k.t1 - k.t0) * (k.c1 - k.c0);
        most = a > most ? a : most;
        most = b > most ? b : most;
    }
    return most;
}

enum { COLS = 64 }; /* columns per task of the running sums */

/* Forward outside part, every row of ND [T,J] written:
 * ND[t] = out_scale[t] * (sum_{t' < lo(t)} X[t'] + sum_{t' >= hi(t)} X[t'] when not causal). */
static void outside_forward(const band *g, const float *X, const float *out_scale, float *ND)
{
    int64_t T = g->T, J = g->J, nchunks = (J + COLS - 1) / COLS;
#pragma omp parallel for schedule(static) if (T * J > XT_PARALLEL_GRAIN && nchunks > 1)
    for (int64_t ch = 0; ch < nchunks; ch++) {
        int64_t j0 = ch * COLS, nj = J - j0 < COLS ? J - j0 : COLS;
        double run[COLS] = {0};
        int64_t next = 0; /* keys [0, next) are in run */
        for (int64_t t = 0; t < T; t++) {
            for (int64_t lo = win_lo(g, t); next < lo; next++) {
                const float *x = X + next * J + j0;
#pragma omp simd
                for (int64_t j = 0; j < nj; j++) run[j] += x[j];
            }
            float *o = ND + t * J + j0;
            double sc = out_scale[t];
#pragma omp simd
            for (int64_t j = 0; j < nj; j++) o[j] = (float)(sc * run[j]);
        }
        if (g->causal) continue;
        for (int64_t j = 0; j < nj; j++) run[j] = 0;
        int64_t first = T; /* keys [first, T) are in run */
        for (int64_t t = T - 1; t >= 0; t--) {
            for (int64_t hi = win_hi(g, t); first > hi;) {
                first--;
                const float *x = X + first * J + j0;
#pragma omp simd
                for (int64_t j = 0; j < nj; j++) run[j] += x[j];
            }
            float *o = ND + t * J + j0;
            double sc = out_scale[t];
#pragma omp simd
            for (int64_t j = 0; j < nj; j++) o[j] += (float)(sc * run[j]);
        }
    }
}

/* Backward outside part, every row of Z [T,J] written: the transpose of outside_forward,
 * Z[t'] = sum over queries t that see key t' outside their window of out_scale[t] Y[t]. */
static void outside_backward(const band *g, const float *Y, const float *out_scale, float *Z)
{
    int64_t T = g->T, J = g->J, nchunks = (J + COLS - 1) / COLS;
#pragma omp parallel for schedule(static) if (T * J > XT_PARALLEL_GRAIN && nchunks > 1)
    for (int64_t ch = 0; ch < nchunks; ch++) {
        int64_t j0 = ch * COLS, nj = J - j0 < COLS ? J - j0 : COLS;
        double run[COLS] = {0};
        /* keys before the window: queries t with lo(t) > t', a suffix of t */
        int64_t first = T; /* queries [first, T) are in run */
        for (int64_t tk = T - 1; tk >= 0; tk--) {
            while (first > 0 && win_lo(g, first - 1) > tk) {
                first--;
                const float *y = Y + first * J + j0;
                double sc = out_scale[first];
#pragma omp simd
                for (int64_t j = 0; j < nj; j++) run[j] += sc * y[j];
            }
            float *o = Z + tk * J + j0;
#pragma omp simd
            for (int64_t j = 0; j < nj; j++) o[j] = (float)run[j];
        }
        if (g->causal) continue;
        /* keys after the window: queries t with hi(t) <= t', a prefix of t */
        for (int64_t j = 0; j < nj; j++) run[j] = 0;
        int64_t next = 0; /* queries [0, next) are in run */
        for (int64_t tk = 0; tk < T; tk++) {
            while (next < T && win_hi(g, next) <= tk) {
                const float *y = Y + next * J + j0;
                double sc = out_scale[next];
#pragma omp simd
                for (int64_t j = 0; j < nj; j++) run[j] += sc * y[j];
                next++;
            }
            float *o = Z + tk * J + j0;
#pragma omp simd
            for (int64_t j = 0; j < nj; j++) o[j] += (float)run[j];
        }
    }
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

/* ---- forward --------------------------------------------------------------------------
 * Writes y, A (the normalised context) and lam = log(den) relative to the offsets. */
static xt_status band_forward(const band *g, const float *q, const float *k,
                              const float *v, const float *w, float *y, float *A, float *lam)
{
    int64_t B = g->B, T = g->T, D = g->D, J = g->J;
    xt_tensor *hold[6] = {NULL};
    float *m = aft_buffer(&hold[0], B * D), *r = aft_buffer(&hold[1], T);
    float *osc = aft_buffer(&hold[2], T), *X = aft_buffer(&hold[3], T * J);
    int nt = omp_get_max_threads();
    int64_t per_thread = block_scratch(g);
    float *ND = aft_buffer(&hold[4], T * J), *P = aft_buffer(&hold[5], per_thread * nt);
    if (!m || !r || !osc || !X || !ND || !P) {
        aft_release(6, hold);
        return xt_last_status();
    }
    column_max(k, B, T, D, m);
    row_offsets(g, w, r, osc);

    /* X [T,J]: [E V | E] per batch item */
#pragma omp parallel for collapse(2) schedule(static) if (B * T * D > XT_PARALLEL_GRAIN)
    for (int64_t t = 0; t < T; t++)
        for (int64_t b = 0; b < B; b++) {
            const float *kr = k + (b * T + t) * D, *vr = v + (b * T + t) * D, *mb = m + b * D;
            float *x = X + t * J + b * 2 * D;
#pragma omp simd
            for (int64_t c = 0; c < D; c++) {
                float e = aft_exp(kr[c] - mb[c]);
                x[c] = e * vr[c];
                x[D + c] = e;
            }
        }

    bool outside = false;
    for (int64_t t = 0; t < T && !outside; t++) outside = has_outside(g, t);
    if (outside) outside_forward(g, X, osc, ND);
    /* ND[t0:t1] (+)= P_blk X[c0:c1] per query block */
    float beta = outside ? 1.0f : 0.0f;
    bool parallel_blocks = block_count(g) > 1 && T * J > XT_PARALLEL_GRAIN;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (parallel_blocks)
    for (int64_t i = 0; i < block_count(g); i++) {
        block b = query_block(g, i);
        float *Pt = P + omp_get_thread_num() * per_thread;
        if (b.c1 == b.c0) {
            if (!outside) memset(ND + b.t0 * J, 0, sizeof(float) * (size_t)((b.t1 - b.t0) * J));
            continue;
        }
        band_weights(g, w, r, b.t0, b.t1, b.c0, b.c1, Pt);
        xt_sgemm(false, false, b.t1 - b.t0, J, b.c1 - b.c0, 1.0f, Pt, b.c1 - b.c0, X + b.c0 * J,
                 J, beta, ND + b.t0 * J, J);
    }

    /* A = num / den, y = sigmoid(q) A; count the outputs whose den underflowed */
    int64_t flagged = 0;
#pragma omp parallel for collapse(2) schedule(static) reduction(+ : flagged) \
    if (B * T * D > XT_PARALLEL_GRAIN)
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            const float *nd = ND + t * J + b * 2 * D;
            int64_t o = (b * T + t) * D;
            int64_t bad = 0;
#pragma omp simd reduction(+ : bad)
            for (int64_t c = 0; c < D; c++) {
                float den = nd[D + c];
                bool ok = den >= AFT_TINY;
                float a = ok ? nd[c] / den : 0.0f;
                A[o + c] = a;
                lam[o + c] = ok ? aft_log(den) : -INFINITY;
                y[o + c] = aft_sigmoid(q[o + c]) * a;
                bad += !ok;
            }
            flagged += bad;
        }
    if (flagged > 0) {
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t t = 0; t < T; t++)
            for (int64_t b = 0; b < B; b++)
                for (int64_t c = 0; c < D; c++) {
                    int64_t o = (b * T + t) * D + c;
                    if (lam[o] != -INFINITY) continue;
                    A[o] = direct_output(g, k, v, w, b, t, c, m[b * D + c], r[t], &lam[o]);
                    y[o] = aft_sigmoid(q[o]) * A[o];
                }
    }
    aft_release(6, hold);
    return XT_OK;
}

/* ---- backward ------------------------------------------------------------------------- */

/* Gradients of the outputs whose den underflowed (lam < AFT_LOG_TINY), by direct sums:
 * alpha = exp(k[t'] + w'[t,t'] - L) with L the exact log-normaliser. */
static void direct_backward(const band *g, const float *q, const float *k, const float *v,
                            const float *w, const float *A, const float *lam, const float *G,
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
                    float h = G[o] * aft_sigmoid(q[o]), a = A[o];
                    for (int64_t tk = 0; tk < allowed_end(g, t); tk++) {
                        int64_t ok = base + tk * D;
                        float gg = h * expf(k[ok] + bias_at(g, w, t, tk) - L);
                        if (dv) dv[ok] += gg;
                        if (dk) dk[ok] += gg * (v[ok] - a);
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
                    float h = G[o] * aft_sigmoid(q[o]), a = A[o];
                    for (int64_t tk = win_lo(g, t); tk < win_hi(g, t); tk++) {
                        int64_t ok = (b * T + tk) * D + c;
                        dw[t * T + tk] += h * expf(k[ok] + w[t * T + tk] - L) * (v[ok] - a);
                    }
                }
    }
}

typedef struct band_grads {
    float *dq, *dk, *dv, *dw; /* NULL when not needed; dw zero-filled by the caller */
} band_grads;

static xt_status band_backward_kernel(const band *g, const float *q,
                                      const float *k, const float *v, const float *w,
                                      const float *A, const float *lam, const float *G,
                                      band_grads d)
{
    int64_t B = g->B, T = g->T, D = g->D, J = g->J;
    bool need_kv = d.dk || d.dv, need_w = d.dw != NULL;
    bool need_Y = need_kv || need_w;
    xt_tensor *hold[7] = {NULL};
    float *m = aft_buffer(&hold[0], B * D), *r = aft_buffer(&hold[1], T);
    float *osc = aft_buffer(&hold[2], T);
    float *Y = need_Y ? aft_buffer(&hold[3], T * J) : NULL;      /* [T,J] */
    float *Z = need_kv ? aft_buffer(&hold[4], T * J) : NULL;     /* [T,J] */
    float *X = need_w ? aft_buffer(&hold[5], T * J) : NULL;      /* [T,J] */
    int nt = omp_get_max_threads();
    int64_t per_thread = block_scratch(g);
    float *P = need_Y ? aft_buffer(&hold[6], per_thread * nt) : NULL;
    if (!m || !r || !osc || (need_Y && (!Y || !P)) || (need_kv && !Z) || (need_w && !X)) {
        aft_release(7, hold);
        return xt_last_status();
    }
    column_max(k, B, T, D, m);
    row_offsets(g, w, r, osc);

    /* dq; Y [T,J] = [Hn | Hn A], zero for outputs handled by direct_backward; X [T,J] =
     * [E V | -E] for dw */
    int64_t flagged = 0;
#pragma omp parallel for collapse(2) schedule(static) reduction(+ : flagged) \
    if (B * T * D > XT_PARALLEL_GRAIN)
    for (int64_t t = 0; t < T; t++)
        for (int64_t b = 0; b < B; b++) {
            int64_t o = (b * T + t) * D;
            const float *qr = q + o, *ar = A + o, *gr = G + o, *lr = lam + o;
            if (d.dq) {
#pragma omp simd
                for (int64_t c = 0; c < D; c++) {
                    float s = aft_sigmoid(qr[c]);
                    d.dq[o + c] = gr[c] * ar[c] * s * (1.0f - s);
                }
            }
            if (need_Y) {
                float *y = Y + t * J + b * 2 * D;
                int64_t bad = 0;
#pragma omp simd reduction(+ : bad)
                for (int64_t c = 0; c < D; c++) {
                    bool ok = lr[c] >= AFT_LOG_TINY;
                    float hn = ok ? gr[c] * aft_sigmoid(qr[c]) * aft_exp(-lr[c]) : 0.0f;
                    y[c] = hn;
                    y[D + c] = hn * ar[c];
                    bad += !ok;
                }
                flagged += bad;
            }
            if (need_w) {
                const float *kr = k + o, *vr = v + o, *mb = m + b * D;
                float *x = X + t * J + b * 2 * D;
#pragma omp simd
                for (int64_t c = 0; c < D; c++) {
                    float e = aft_exp(kr[c] - mb[c]);
                    x[c] = e * vr[c];
                    x[D + c] = -e;
                }
            }
        }

    if (need_Y) {
        bool outside = false;
        for (int64_t t = 0; t < T && !outside; t++) outside = has_outside(g, t);
        if (need_kv) {
            if (outside) outside_backward(g, Y, osc, Z);
            else memset(Z, 0, sizeof(float) * (size_t)(T * J));
        }
        bool parallel_blocks = block_count(g) > 1 && T * J > XT_PARALLEL_GRAIN;
        if (g->s > 0 && need_kv) {
            /* Z[c0:c1] += P[t0:t1, c0:c1]^T Y[t0:t1] per key block */
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (parallel_blocks)
            for (int64_t i = 0; i < block_count(g); i++) {
                block b = key_block(g, i);
                float *Pt = P + omp_get_thread_num() * per_thread;
                int64_t kn = b.c1 - b.c0;
                band_weights(g, w, r, b.t0, b.t1, b.c0, b.c1, Pt);
                xt_sgemm(true, false, kn, J, b.t1 - b.t0, 1.0f, Pt, kn, Y + b.t0 * J, J, 1.0f,
                         Z + b.c0 * J, J);
            }
        }
        if (g->s > 0 && need_w) {
            /* dw[t0:t1, c0:c1] = P_blk * (Y[t0:t1] [E V | -E][c0:c1]^T) per query block */
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (parallel_blocks)
            for (int64_t i = 0; i < block_count(g); i++) {
                block b = query_block(g, i);
                float *Pt = P + omp_get_thread_num() * per_thread;
                int64_t tn = b.t1 - b.t0, width = b.c1 - b.c0;
                float *dw0 = d.dw + b.t0 * T + b.c0;
                band_weights(g, w, r, b.t0, b.t1, b.c0, b.c1, Pt);
                xt_sgemm(false, true, tn, width, J, 1.0f, Y + b.t0 * J, J, X + b.c0 * J, J,
                         0.0f, dw0, T);
                for (int64_t row = 0; row < tn; row++) {
                    float *o = dw0 + row * T;
                    const float *p = Pt + row * width;
#pragma omp simd
                    for (int64_t j = 0; j < width; j++) o[j] *= p[j];
                }
            }
        }
    }

    if (need_kv) {
#pragma omp parallel for collapse(2) schedule(static) if (B * T * D > XT_PARALLEL_GRAIN)
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < T; t++) {
                int64_t o = (b * T + t) * D;
                const float *kr = k + o, *vr = v + o, *mb = m + b * D;
                const float *u = Z + t * J + b * 2 * D, *u2 = u + D;
                const float *negE = X ? X + t * J + b * 2 * D + D : NULL; /* -E, when made */
#pragma omp simd
                for (int64_t c = 0; c < D; c++) {
                    float e = negE ? -negE[c] : aft_exp(kr[c] - mb[c]);
                    if (d.dv) d.dv[o + c] = e * u[c];
                    if (d.dk) d.dk[o + c] = e * (vr[c] * u[c] - u2[c]);
                }
            }
    }
    if (flagged > 0) direct_backward(g, q, k, v, w, A, lam, G, m, r, d.dk, d.dv, d.dw);
    aft_release(7, hold);
    return XT_OK;
}

/* saved: 0 q, 1 k, 2 v, 3 w (contiguous), 4 A, 5 lam. iargs: 0 window, 1 causal. */
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
        dt[i] = i == 3 ? xt_zeros(2, w->shape, XT_FLOAT32) : xt_empty(3, q->shape, XT_FLOAT32);
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
    xt_tensor *y = xt_empty(3, q->shape, XT_FLOAT32), *A = xt_empty(3, q->shape, XT_FLOAT32);
    xt_tensor *lam = xt_empty(3, q->shape, XT_FLOAT32);
    xt_tensor *all[7] = {qc, kc, vc, wc, A, lam, y};
    bool ok = qc && kc && vc && wc && y && A && lam &&
              band_forward(&g, qc->data, kc->data, vc->data, wc->data, y->data, A->data,
                           lam->data) == XT_OK;
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
        aft_release(7, all);
        return NULL;
    }
    aft_release(6, all);
    return y;
}

xt_tensor *xt_aft_local(xt_tensor *q, xt_tensor *k, xt_tensor *v, xt_tensor *w, int64_t window,
                        int32_t causal)
{
    return aft_bias_attention("aft_local", q, k, v, w, window, causal);
}
