/*
 * sdpa.c: scaled dot-product attention, softmax(scale * q k^T) v, computed FlashAttention-2
 * style (research/efficient_attention.md § 2.1 and § 3), forward and backward side by side.
 *
 * Shapes, per (batch, head) "unit" n (the leading dims of q, k, v flattened):
 *   q [T,d], k [S,d], v [S,dv] -> out [T,dv], and lse [T] (row logsumexp) kept for the backward.
 * Causal: query i sees keys j <= i + S - T (aligned at the bottom right, so that with S > T
 * the queries are the last T positions of the key sequence, as in decoding with a cache).
 *
 * Nothing of size T x S is ever stored. The forward walks tiles of BR queries x BC keys:
 *   s = scale * Q_I K_J^T          (BR x BC, one sgemm)
 *   online softmax on the rows of s: running max m, running sum l, acc rescaled by e^(m_old-m)
 *   acc += P V_J                   (BR x dv, one sgemm)
 * and writes out = acc / l and lse = m + log l once per query tile. The backward recomputes
 * each tile's P = exp(s - lse) and forms, with D_i = rowsum(dout_i * out_i):
 *   dV_J += P^T dO_I     dP = dO_I V_J^T     dS = P * (dP - D)
 *   dK_J += scale * dS^T Q_I     dQ_I += scale * dS K_J
 * Extra memory: a few tiles per thread, plus D ([units, T] or [T] per thread).
 *
 * The backward runs in one of two schedules that give identical bits (each dQ tile sums its
 * key tiles in ascending order, each dK/dV tile its query tiles in ascending order):
 *  - one pass per unit (5 GEMMs per tile pair), units spread over threads, when there are
 *    enough units to keep the threads busy;
 *  - otherwise two passes: key tiles in parallel for dK and dV, then query tiles in parallel
 *    for dQ (7 GEMMs per tile pair, but every thread has work even for a single unit).
 */
#include "internal.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Tile sizes: a 64 x 64 score tile with d = 64 keeps Q_I, K_J, V_J, s and acc (80 KiB) in L2. */
enum { SDPA_BR = 64, SDPA_BC = 64 };

/* ---- a vectorisable exp -------------------------------------------------------------
 * libm's expf is not vectorised without -ffast-math, and the softmax calls exp once per
 * score, so a scalar call would cost as much as the GEMMs. x = n ln2 + r with |r| <= ln2/2;
 * e^r from its Taylor series to degree 7 (truncation < 1e-8 relative); 2^n from the exponent
 * bits. Valid for x <= 88.3; x < -87.3 (and -inf) gives 0, which is what masked or
 * underflowing scores need; NaN stays NaN. */
static inline float exp_approx(float x)
{
    const float log2e = 1.44269504f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    float xc = x > -87.3f ? x : -87.3f;  /* NaN goes to -87.3 here, and back to NaN below */
    xc = xc < 88.3f ? xc : 88.3f;
    float n = floorf(xc * log2e + 0.5f);
    float r = fmaf(n, -ln2_lo, fmaf(n, -ln2_hi, xc));
    float p = 1.0f / 5040;
    p = fmaf(p, r, 1.0f / 720);
    p = fmaf(p, r, 1.0f / 120);
    p = fmaf(p, r, 1.0f / 24);
    p = fmaf(p, r, 1.0f / 6);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    int32_t bits = ((int32_t)n + 127) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    float y = p * two_n;
    y = x < -87.3f ? 0.0f : y;
    return x != x ? x : y;
}

/* ---- geometry ------------------------------------------------------------------------ */

typedef struct sdpa_geom {
    int64_t units;     /* product of the leading dims (batch x heads) */
    int64_t T, S;      /* query and key lengths */
    int64_t d, dv;     /* query/key and value widths */
    int64_t offset;    /* S - T: query i sits at key position i + offset */
    int causal;
    float scale;
} sdpa_geom;

/* One past the last key that query row i may see. */
static inline int64_t keys_visible(const sdpa_geom *g, int64_t i)
{
    if (!g->causal) return g->S;
    int64_t e = i + g->offset + 1;
    return e < g->S ? e : g->S;
}

/* The first query row that sees key j (causal), i.e. the smallest i with j <= i + offset. */
static inline int64_t first_query_seeing(const sdpa_geom *g, int64_t j)
{
    if (!g->causal) return 0;
    int64_t i = j - g->offset;
    return i > 0 ? i : 0;
}

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Scores of the tile (rows i0.., br of them; keys j0.., bc of them) into s [br, SDPA_BC]:
 * s = scale * Q_I K_J^T, with -inf where causality hides the key. */
static void score_tile(const sdpa_geom *g, const float *q, const float *k, int64_t i0,
                       int64_t br, int64_t j0, int64_t bc, float *s)
{
    xt_sgemm(false, true, br, bc, g->d, g->scale, q + i0 * g->d, g->d, k + j0 * g->d, g->d, 0.0f,
             s, SDPA_BC);
    if (!g->causal || j0 + bc - 1 <= i0 + g->offset) return;  /* the whole tile is visible */
    for (int64_t r = 0; r < br; r++) {
        int64_t first_hidden = i0 + r + g->offset + 1 - j0;  /* column of the first key hidden */
        for (int64_t c = first_hidden < 0 ? 0 : first_hidden; c < bc; c++)
            s[r * SDPA_BC + c] = -INFINITY;
    }
}

/* ==== forward ============================================================================ */

/* Per-thread scratch of the forward: s [BR,BC], acc [BR,dv], m [BR], l [BR]. */
static size_t fwd_scratch_floats(const sdpa_geom *g)
{
    return (size_t)(SDPA_BR * SDPA_BC + SDPA_BR * g->dv + 2 * SDPA_BR);
}

/* One query tile of one unit: rows i0 .. i0+br-1 of out [T,dv] and lse [T]. */
static void forward_tile(const sdpa_geom *g, const float *q, const float *k, const float *v,
                         float *out, float *lse, int64_t i0, int64_t br, float *scratch)
{
    float *s = scratch, *acc = s + SDPA_BR * SDPA_BC, *m = acc + SDPA_BR * g->dv;
    float *l = m + SDPA_BR;
    const int64_t dv = g->dv;
    for (int64_t r = 0; r < br; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }
    int64_t key_end = keys_visible(g, i0 + br - 1);
    for (int64_t j0 = 0; j0 < key_end; j0 += SDPA_BC) {
        int64_t bc = min64(SDPA_BC, key_end - j0);
        score_tile(g, q, k, i0, br, j0, bc, s);
        for (int64_t r = 0; r < br; r++) {
            float *sr = s + r * SDPA_BC, *ar = acc + r * dv;
            float row_max = -INFINITY;
#pragma omp simd reduction(max : row_max)
            for (int64_t c = 0; c < bc; c++) row_max = fmaxf(row_max, sr[c]);
            float m_new = fmaxf(m[r], row_max);
            /* m_new is -inf only while no key of the row has been seen: P is 0 then */
            float shift = m_new == -INFINITY ? 0.0f : m_new;
            float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
            for (int64_t c = 0; c < bc; c++) {
                float p = exp_approx(sr[c] - shift);
                sr[c] = p;
                sum += p;
            }
            if (j0 == 0) {
                l[r] = sum;
            } else {
                float alpha = exp_approx(m[r] - shift);  /* rescales what came before */
                l[r] = alpha * l[r] + sum;
                if (alpha != 1.0f) {
#pragma omp simd
                    for (int64_t c = 0; c < dv; c++) ar[c] *= alpha;
                }
            }
            m[r] = m_new;
        }
        xt_sgemm(false, false, br, dv, bc, 1.0f, s, SDPA_BC, v + j0 * dv, dv,
                 j0 == 0 ? 0.0f : 1.0f, acc, dv);
    }
    for (int64_t r = 0; r < br; r++) {
        float *o = out + (i0 + r) * dv;
        const float *ar = acc + r * dv;
        float inv = l[r] > 0 ? 1.0f / l[r] : 0.0f;
#pragma omp simd
        for (int64_t c = 0; c < dv; c++) o[c] = ar[c] * inv;
        lse[i0 + r] = l[r] > 0 ? m[r] + logf(l[r]) : -INFINITY;
    }
}

/* out [units,T,dv], lse [units,T] from contiguous q [units,T,d], k [units,S,d], v [units,S,dv]. */
static xt_status forward(const sdpa_geom *g, const float *q, const float *k, const float *v,
                         float *out, float *lse)
{
    int64_t tiles = (g->T + SDPA_BR - 1) / SDPA_BR, tasks = g->units * tiles;
    int nt = omp_get_max_threads();
    size_t per_thread = fwd_scratch_floats(g);
    float *scratch = malloc(sizeof(float) * per_thread * (size_t)nt);
    if (!scratch) return xt_fail(XT_ERR_OOM, "scaled_dot_product_attention: out of memory");
    /* Causal tiles further down have more keys: hand tasks out one at a time. */
#pragma omp parallel for schedule(dynamic, 1) if (tasks > 1 && g->T * g->S * g->d > XT_PARALLEL_GRAIN)
    for (int64_t task = 0; task < tasks; task++) {
        int64_t n = task / tiles, i0 = (task % tiles) * SDPA_BR;
        float *mine = scratch + per_thread * (size_t)omp_get_thread_num();
        forward_tile(g, q + n * g->T * g->d, k + n * g->S * g->d, v + n * g->S * g->dv,
                     out + n * g->T * g->dv, lse + n * g->T, i0, min64(SDPA_BR, g->T - i0), mine);
    }
    free(scratch);
    return XT_OK;
}

/* ==== backward =========================================================================== */

/* One unit's tensors; gradients NULL when not wanted. */
typedef struct sdpa_unit {
    const float *q, *k, *v, *dout, *lse, *D;
    float *dq, *dk, *dv;
} sdpa_unit;

static sdpa_unit unit_at(const sdpa_geom *g, int64_t n, const float *q, const float *k,
                         const float *v, const float *dout, const float *lse, const float *D,
                         float *dq, float *dk, float *dv)
{
    int64_t qd = n * g->T * g->d, kd = n * g->S * g->d, vd = n * g->S * g->dv;
    sdpa_unit u = {q + qd, k + kd, v + vd, dout + n * g->T * g->dv, lse + n * g->T,
                   D + n * g->T, dq ? dq + qd : NULL, dk ? dk + kd : NULL, dv ? dv + vd : NULL};
    return u;
}

/* Per-thread scratch of the backward: p [BR,BC] and ds [BR,BC]. */
enum { BWD_SCRATCH_FLOATS = 2 * SDPA_BR * SDPA_BC };

/* The tile pair (query tile at row i0, key tile at j0): adds its share to whichever of
 * u->dq, u->dk, u->dv are non-NULL. The tile's extent is a function of (i0, j0) alone, and
 * the same as the forward's (keys past the tile's last visible one are cut off), so that
 * either schedule forms exactly the same GEMMs. */
static void backward_tile(const sdpa_geom *g, const sdpa_unit *u, int64_t i0, int64_t j0,
                          float *scratch)
{
    float *p = scratch, *ds = scratch + SDPA_BR * SDPA_BC;
    const int64_t d = g->d, dv = g->dv;
    int64_t br = min64(SDPA_BR, g->T - i0);
    int64_t bc = min64(SDPA_BC, keys_visible(g, i0 + br - 1) - j0);
    score_tile(g, u->q, u->k, i0, br, j0, bc, p);
    for (int64_t r = 0; r < br; r++) {
        float *pr = p + r * SDPA_BC;
        float L = u->lse[i0 + r];
        float shift = L == -INFINITY ? INFINITY : L;  /* a row that saw no key has P = 0 */
#pragma omp simd
        for (int64_t c = 0; c < bc; c++) pr[c] = exp_approx(pr[c] - shift);
    }
    const float *dO = u->dout + i0 * dv;
    if (u->dv)  /* dV_J += P^T dO_I */
        xt_sgemm(true, false, bc, dv, br, 1.0f, p, SDPA_BC, dO, dv, 1.0f, u->dv + j0 * dv, dv);
    if (!u->dq && !u->dk) return;
    /* dP = dO_I V_J^T, then dS = scale * P * (dP - D) in place */
    xt_sgemm(false, true, br, bc, dv, 1.0f, dO, dv, u->v + j0 * dv, dv, 0.0f, ds, SDPA_BC);
    for (int64_t r = 0; r < br; r++) {
        float *dr = ds + r * SDPA_BC;
        const float *pr = p + r * SDPA_BC;
        float Di = u->D[i0 + r], scale = g->scale;
#pragma omp simd
        for (int64_t c = 0; c < bc; c++) dr[c] = scale * pr[c] * (dr[c] - Di);
    }
    if (u->dk)  /* dK_J += dS^T Q_I */
        xt_sgemm(true, false, bc, d, br, 1.0f, ds, SDPA_BC, u->q + i0 * d, d, 1.0f,
                 u->dk + j0 * d, d);
    if (u->dq)  /* dQ_I += dS K_J */
        xt_sgemm(false, false, br, d, bc, 1.0f, ds, SDPA_BC, u->k + j0 * d, d, 1.0f,
                 u->dq + i0 * d, d);
}

/* All query tiles against key tile j0 (pass A, or one column of the one-pass schedule). */
static void backward_key_tile(const sdpa_geom *g, const sdpa_unit *u, int64_t j0, float *scratch)
{
    int64_t first = first_query_seeing(g, j0) / SDPA_BR * SDPA_BR;
    for (int64_t i0 = first; i0 < g->T; i0 += SDPA_BR) backward_tile(g, u, i0, j0, scratch);
}

/* All key tiles against query tile i0 (pass B). */
static void backward_query_tile(const sdpa_geom *g, const sdpa_unit *u, int64_t i0,
                                float *scratch)
{
    int64_t key_end = keys_visible(g, min64(i0 + SDPA_BR, g->T) - 1);
    for (int64_t j0 = 0; j0 < key_end; j0 += SDPA_BC) backward_tile(g, u, i0, j0, scratch);
}

/* D [units,T] = rowsum(dout * out). */
static void row_dots(const sdpa_geom *g, const float *dout, const float *out, float *D)
{
    int64_t rows = g->units * g->T, dv = g->dv;
#pragma omp parallel for schedule(static) if (rows * dv > XT_PARALLEL_GRAIN)
    for (int64_t i = 0; i < rows; i++) {
        const float *a = dout + i * dv, *b = out + i * dv;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < dv; c++) s += a[c] * b[c];
        D[i] = s;
    }
}

/* Gradients (dq, dk, dv zero-filled, NULL when not wanted) of the contiguous tensors. */
static xt_status backward(const sdpa_geom *g, const float *q, const float *k, const float *v,
                          const float *out, const float *dout, const float *lse, float *dq,
                          float *dk, float *dv)
{
    int nt = omp_get_max_threads();
    float *D = malloc(sizeof(float) * (size_t)(g->units * g->T + 1));
    float *scratch = malloc(sizeof(float) * BWD_SCRATCH_FLOATS * (size_t)nt);
    if (!D || !scratch) {
        free(D);
        free(scratch);
        return xt_fail(XT_ERR_OOM, "scaled_dot_product_attention: out of memory in backward");
    }
    row_dots(g, dout, out, D);
    bool parallel = g->T * g->S * g->d > XT_PARALLEL_GRAIN;
    int64_t key_tiles = (g->S + SDPA_BC - 1) / SDPA_BC, query_tiles = (g->T + SDPA_BR - 1) / SDPA_BR;
    bool one_pass = dq && (dk || dv) && (nt == 1 || g->units % nt == 0 || g->units >= 4 * nt);
    if (one_pass) {
#pragma omp parallel for schedule(dynamic, 1) if (parallel && g->units > 1)
        for (int64_t n = 0; n < g->units; n++) {
            sdpa_unit u = unit_at(g, n, q, k, v, dout, lse, D, dq, dk, dv);
            float *mine = scratch + (size_t)BWD_SCRATCH_FLOATS * (size_t)omp_get_thread_num();
            for (int64_t j0 = 0; j0 < g->S; j0 += SDPA_BC) backward_key_tile(g, &u, j0, mine);
        }
    } else {
        if (dk || dv) {
            int64_t tasks = g->units * key_tiles;
#pragma omp parallel for schedule(dynamic, 1) if (parallel && tasks > 1)
            for (int64_t task = 0; task < tasks; task++) {
                sdpa_unit u = unit_at(g, task / key_tiles, q, k, v, dout, lse, D, NULL, dk, dv);
                float *mine = scratch + (size_t)BWD_SCRATCH_FLOATS * (size_t)omp_get_thread_num();
                backward_key_tile(g, &u, (task % key_tiles) * SDPA_BC, mine);
            }
        }
        if (dq) {
            int64_t tasks = g->units * query_tiles;
#pragma omp parallel for schedule(dynamic, 1) if (parallel && tasks > 1)
            for (int64_t task = 0; task < tasks; task++) {
                sdpa_unit u = unit_at(g, task / query_tiles, q, k, v, dout, lse, D, dq, NULL, NULL);
                float *mine = scratch + (size_t)BWD_SCRATCH_FLOATS * (size_t)omp_get_thread_num();
                backward_query_tile(g, &u, (task % query_tiles) * SDPA_BR, mine);
            }
        }
    }
    free(D);
    free(scratch);
    return XT_OK;
}

/* ==== the op ============================================================================= */

/* saved: 0 q, 1 k, 2 v (contiguous), 3 out, 4 lse. iargs: 0 causal. fargs: 0 scale. */
static xt_status sdpa_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *q = xt_node_saved(node, 0), *k = xt_node_saved(node, 1);
    xt_tensor *v = xt_node_saved(node, 2), *out = xt_node_saved(node, 3);
    xt_tensor *lse = xt_node_saved(node, 4);
    if (!q || !k || !v || !out || !lse) return xt_last_status();
    int32_t nd = q->ndim;
    sdpa_geom g = {.T = q->shape[nd - 2], .S = k->shape[nd - 2], .d = q->shape[nd - 1],
                   .dv = v->shape[nd - 1], .causal = (int)node->iargs[0],
                   .scale = (float)node->fargs[0]};
    g.units = xt_numel(lse) / (g.T > 0 ? g.T : 1);
    g.offset = g.S - g.T;
    if (g.T == 0) g.units = 0;
    bool need_q = xt_node_needs(node, 0), need_k = xt_node_needs(node, 1),
         need_v = xt_node_needs(node, 2);
    xt_tensor *dy = xt_contiguous(dout);
    xt_tensor *dq = need_q ? xt_zeros(q->ndim, q->shape, XT_FLOAT32) : NULL;
    xt_tensor *dk = need_k ? xt_zeros(k->ndim, k->shape, XT_FLOAT32) : NULL;
    xt_tensor *dv = need_v ? xt_zeros(v->ndim, v->shape, XT_FLOAT32) : NULL;
    xt_status st = XT_OK;
    if (!dy || (need_q && !dq) || (need_k && !dk) || (need_v && !dv))
        st = xt_last_status();
    else if (g.units > 0)
        st = backward(&g, q->data, k->data, v->data, out->data, dy->data, lse->data,
                      dq ? dq->data : NULL, dk ? dk->data : NULL, dv ? dv->data : NULL);
    xt_tensor_release(dy);
    if (st != XT_OK) {
        xt_tensor_release(dq);
        xt_tensor_release(dk);
        xt_tensor_release(dv);
        return st;
    }
    dinputs[0] = dq;
    dinputs[1] = dk;
    dinputs[2] = dv;
    return XT_OK;
}

/* t as a contiguous tensor (+1), copied outside the graph: the node goes on t itself. */
static xt_tensor *dense(xt_tensor *t)
{
    int32_t prev = xt_set_grad_enabled(0);
    xt_tensor *c = xt_contiguous(t);
    xt_set_grad_enabled(prev);
    return c;
}

static xt_status check_args(const xt_tensor *q, const xt_tensor *k, const xt_tensor *v,
                            int32_t causal, double scale)
{
    const char *op = "scaled_dot_product_attention";
    const xt_tensor *ts[3] = {q, k, v};
    const char *names[3] = {"q", "k", "v"};
    for (int i = 0; i < 3; i++) {
        if (!ts[i]) return xt_fail(XT_ERR_ARG, "%s: %s is NULL", op, names[i]);
        if (ts[i]->dtype != XT_FLOAT32)
            return xt_fail(XT_ERR_DTYPE, "%s: expected float32 %s, got %s", op, names[i],
                           xt_dtype_name(ts[i]->dtype));
    }
    char a[XT_SHAPE_STR], b[XT_SHAPE_STR], c[XT_SHAPE_STR];
    xt_shape_str(a, q->ndim, q->shape);
    xt_shape_str(b, k->ndim, k->shape);
    xt_shape_str(c, v->ndim, v->shape);
    if (q->ndim < 2 || k->ndim != q->ndim || v->ndim != q->ndim)
        return xt_fail(XT_ERR_SHAPE,
                       "%s: expected q [...,T,d], k [...,S,d], v [...,S,dv] with the same number "
                       "of dims (e.g. [B,H,T,d]), got q %s, k %s, v %s", op, a, b, c);
    int32_t nd = q->ndim;
    for (int32_t i = 0; i < nd - 2; i++)
        if (k->shape[i] != q->shape[i] || v->shape[i] != q->shape[i])
            return xt_fail(XT_ERR_SHAPE,
                           "%s: q, k and v must have the same leading dims (batch, heads), got "
                           "q %s, k %s, v %s (dim %lld differs)", op, a, b, c,
                           (long long)xt_shown(i));
    int64_t T = q->shape[nd - 2], S = k->shape[nd - 2], d = q->shape[nd - 1];
    if (k->shape[nd - 1] != d)
        return xt_fail(XT_ERR_SHAPE,
                       "%s: q and k must have the same last dim d, got q %s and k %s", op, a, b);
    if (v->shape[nd - 2] != S)
        return xt_fail(XT_ERR_SHAPE,
                       "%s: k and v must have the same length S (dim %lld), got k %s and v %s",
                       op, (long long)xt_shown(nd - 2), b, c);
    if (d == 0 || v->shape[nd - 1] == 0)
        return xt_fail(XT_ERR_SHAPE, "%s: the feature dims must be > 0, got q %s and v %s", op,
                       a, c);
    if (S == 0)
        return xt_fail(XT_ERR_SHAPE, "%s: k and v have no keys (S = 0): k %s", op, b);
    if (causal && S < T)
        return xt_fail(XT_ERR_SHAPE,
                       "%s: causal attention needs at least as many keys as queries (S >= T; "
                       "query i sees keys up to i + S - T), got T = %lld, S = %lld", op,
                       (long long)T, (long long)S);
    if (isnan(scale) || isinf(scale))
        return xt_fail(XT_ERR_ARG, "%s: scale must be finite (<= 0 for 1/sqrt(d)), got %g", op,
                       scale);
    return XT_OK;
}

xt_tensor *xt_scaled_dot_product_attention(xt_tensor *q, xt_tensor *k, xt_tensor *v,
                                           int32_t causal, double scale)
{
    if (check_args(q, k, v, causal, scale) != XT_OK) return NULL;
    int32_t nd = q->ndim;
    sdpa_geom g = {.T = q->shape[nd - 2], .S = k->shape[nd - 2], .d = q->shape[nd - 1],
                   .dv = v->shape[nd - 1], .causal = causal != 0};
    g.offset = g.S - g.T;
    g.units = xt_shape_numel(nd - 2, q->shape);
    if (scale <= 0) scale = 1.0 / sqrt((double)g.d);
    g.scale = (float)scale;

    int64_t out_shape[XT_MAX_DIMS];
    memcpy(out_shape, q->shape, sizeof(int64_t) * (size_t)nd);
    out_shape[nd - 1] = g.dv;
    xt_tensor *qc = dense(q), *kc = dense(k), *vc = dense(v);
    xt_tensor *out = xt_empty(nd, out_shape, XT_FLOAT32);
    xt_tensor *lse = xt_empty(nd - 1, q->shape, XT_FLOAT32);   /* [...,T] */
    xt_tensor *tmp[5] = {qc, kc, vc, out, lse};
    bool ok = qc && kc && vc && out && lse;
    if (ok && g.units > 0 && g.T > 0)
        ok = forward(&g, qc->data, kc->data, vc->data, out->data, lse->data) == XT_OK;
    xt_tensor *inputs[3] = {q, k, v};
    if (ok && xt_needs_grad(3, inputs)) {
        xt_node *node = xt_node_new("scaled_dot_product_attention", sdpa_backward, 3, inputs);
        ok = node && !xt_node_save(node, qc) && !xt_node_save(node, kc) &&
             !xt_node_save(node, vc) && !xt_node_save(node, out) && !xt_node_save(node, lse);
        if (ok) {
            node->iargs[0] = g.causal;
            node->fargs[0] = g.scale;
            xt_node_attach(node, out);
        } else {
            xt_node_release(node);
        }
    }
    if (ok) tmp[3] = NULL;  /* out is returned */
    for (int i = 0; i < 5; i++) xt_tensor_release(tmp[i]);
    return ok ? out : NULL;
}
