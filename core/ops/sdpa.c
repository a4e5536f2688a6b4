/*
 * sdpa.c: scaled dot-product attention, softmax(scale * q k^T) v, computed FlashAttention-2
 * style (research/efficient_attention.md § 2.1 and § 3), forward and backward side by side.
 *
 * Shapes, per (batch, head) "unit" n (the leading dims of q, k, v, flattened):
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
 * Extra memory: a few tiles per thread, plus D [units, T].
 *
 * Inputs are read in place when each unit's [rows, width] matrix has unit-stride rows (the
 * rows themselves may be any distance apart, the units anywhere), so q, k, v permuted out of
 * a [B,T,H,d] projection or narrowed out of a decoding cache are not copied.
 *
 * Dropout on the attention weights (p > 0): P~ = P * Z / (1 - p), with Z_ij = 1 when lane
 * j % 4 of philox(seed, offset + (n*T + i) * ceil(S/4) + j / 4) is at least p * 2^32. The
 * mask is regenerated in the backward from (seed, offset), never stored:
 *   out = P~ V     dV = P~^T dO     dS = P * (dP~ * Z / (1 - p) - D),  D = rowsum(dO * out).
 *
 * The backward runs in one of two schedules that give identical bits (each dQ tile sums its
 * key tiles in ascending order, each dK/dV tile its query tiles in ascending order, and a
 * tile pair's GEMMs have the same extent in both):
 *  - one pass per unit (5 GEMMs per tile pair), units spread over threads, when there are
 *    enough units to keep the threads busy;
 *  - otherwise two passes: key tiles in parallel for dK and dV, then query tiles in parallel
 *    for dQ (7 GEMMs per tile pair, but every thread has work even for a single unit).
 *
 * Block-sparse patterns (attn_patterns.h, § 2.2–2.4) run the same kernel driven by a block
 * list: each query tile visits only its listed key tiles (the backward's key-tile pass the
 * transposed list), and PARTIAL tiles mask their scores with the pattern's element rule.
 * Dense attention is the case without a list: every key tile up to the causal edge.
 */
#include "attn_patterns.h"
#include "fast_exp.h"
#include "internal.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Tile sizes: a 64 x 64 score tile with d = 64 keeps Q_I, K_J, V_J, s and acc (80 KiB) in L2;
 * SDPA_BC is a multiple of 4, so a tile row starts a new group of the dropout stream. */
enum { SDPA_BR = 64, SDPA_BC = 64 };

/* The softmax takes one exp per score: a scalar libm call would cost as much as the GEMMs,
 * so it uses the vectorisable xt_fast_expf (fast_exp.h). */

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ---- geometry ------------------------------------------------------------------------ */

typedef struct sdpa_geom {
    int64_t units;        /* product of the leading dims (batch x heads) */
    int64_t T, S;         /* query and key lengths */
    int64_t d, dv;        /* query/key and value widths */
    int64_t offset;       /* S - T: query i sits at key position i + offset */
    int causal;
    float scale;
    /* dropout on the attention weights (dropout == 0: none) */
    int dropout;
    float keep_scale;     /* 1 / (1 - p) */
    uint64_t threshold;   /* p * 2^32: a random lane below it drops its weight */
    uint64_t seed, rng_offset;
    /* a block-sparse pattern (S == T, causal 0: the pattern masks), or NULL for dense */
    const attn_pattern *pat;
    const attn_blocks *blocks;
    const char *op;       /* the op's name, for messages */
} sdpa_geom;

/* One input read in place: unit n's [rows, width] matrix starts at data + off[n], rows ld
 * floats apart, elements of a row adjacent. */
typedef struct sdpa_input {
    const float *data;
    int64_t ld;
    int64_t *off;   /* [units], owned */
} sdpa_input;

/* One unit's operands: inputs with their row strides; the rest contiguous, NULL when not
 * used (out and lse in the forward; dout, lse, D and the wanted gradients in the backward). */
typedef struct sdpa_unit {
    int64_t n;
    const float *q, *k, *v;
    int64_t ldq, ldk, ldv;
    float *out, *lse;
    const float *dout, *D;
    float *dq, *dk, *dv;
} sdpa_unit;

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

/* Scores of the tile (rows i0.., br of them; keys j0.., bc of them) into s [br, SDPA_BC]:
 * s = scale * Q_I K_J^T, with -inf where causality hides the key. */
static void score_tile(const sdpa_geom *g, const sdpa_unit *u, int64_t i0, int64_t br,
                       int64_t j0, int64_t bc, int kind, float *s)
{
    xt_sgemm(false, true, br, bc, g->d, g->scale, u->q + i0 * u->ldq, u->ldq,
             u->k + j0 * u->ldk, u->ldk, 0.0f, s, SDPA_BC);
    if (kind == ATTN_TILE_PARTIAL) {  /* a pattern's edge tile: its element rule decides */
        attn_mask_tile(g->pat, i0, br, j0, bc, s, SDPA_BC);
        return;
    }
    if (!g->causal || j0 + bc - 1 <= i0 + g->offset) return;  /* the whole tile is visible */
    for (int64_t r = 0; r < br; r++) {
        int64_t first_hidden = i0 + r + g->offset + 1 - j0;  /* column of the first key hidden */
        for (int64_t c = first_hidden < 0 ? 0 : first_hidden; c < bc; c++)
            s[r * SDPA_BC + c] = -INFINITY;
    }
}

/* z[c] = 1 (kept) or 0 (dropped) for the weights of query row i on keys j0 .. j0+bc-1. */
static void dropout_row(const sdpa_geom *g, int64_t n, int64_t i, int64_t j0, int64_t bc,
                        float *z)
{
    uint64_t groups = (uint64_t)(g->S + 3) / 4;
    uint64_t base = g->rng_offset + (uint64_t)(n * g->T + i) * groups + (uint64_t)j0 / 4;
    for (int64_t c = 0; c < bc; c += 4) {
        uint32_t r[4];
        xt_philox(g->seed, base + (uint64_t)c / 4, r);
        for (int64_t lane = 0; lane < 4 && c + lane < bc; lane++)
            z[c + lane] = (uint64_t)r[lane] >= g->threshold ? 1.0f : 0.0f;
    }
}

/* ==== forward ============================================================================ */

/* Per-thread scratch of the forward: s [BR,BC], acc [BR,dv], m [BR], l [BR], z [BC]. */
static size_t fwd_scratch_floats(const sdpa_geom *g)
{
    return (size_t)(SDPA_BR * SDPA_BC + SDPA_BR * g->dv + 2 * SDPA_BR + SDPA_BC);
}

/* One query tile of one unit: rows i0 .. i0+br-1 of u->out [T,dv] and u->lse [T]. */
static void forward_tile(const sdpa_geom *g, const sdpa_unit *u, int64_t i0, float *scratch)
{
    const int64_t dv = g->dv, br = min64(SDPA_BR, g->T - i0);
    float *s = scratch, *acc = s + SDPA_BR * SDPA_BC, *m = acc + SDPA_BR * dv;
    float *l = m + SDPA_BR, *z = l + SDPA_BR;
    for (int64_t r = 0; r < br; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }
    int64_t key_end = keys_visible(g, i0 + br - 1), listed = 0, first_entry = 0;
    if (g->blocks) {  /* the query tile's listed key tiles, else all up to the causal edge */
        first_entry = g->blocks->row_ptr[i0 / SDPA_BR];
        listed = g->blocks->row_ptr[i0 / SDPA_BR + 1] - first_entry;
    }
    int64_t steps = g->blocks ? listed : (key_end + SDPA_BC - 1) / SDPA_BC;
    for (int64_t step = 0; step < steps; step++) {
        int64_t j0 = step * SDPA_BC, kind = ATTN_TILE_FULL;
        if (g->blocks) {
            j0 = g->blocks->col[first_entry + step] * SDPA_BC;
            kind = g->blocks->row_kind[first_entry + step];
        }
        int64_t bc = min64(SDPA_BC, key_end - j0);
        bool first = step == 0;
        score_tile(g, u, i0, br, j0, bc, (int)kind, s);
        for (int64_t r = 0; r < br; r++) {
            float *sr = s + r * SDPA_BC, *ar = acc + r * dv;
            float row_max = -INFINITY;
#pragma omp simd reduction(max : row_max)
            for (int64_t c = 0; c < bc; c++) row_max = sr[c] > row_max ? sr[c] : row_max;
            float m_new = row_max > m[r] ? row_max : m[r];  /* a NaN score shows up in P */
            /* m_new is -inf only while no key of the row has been seen: P is 0 then */
            float shift = m_new == -INFINITY ? 0.0f : m_new;
            float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
            for (int64_t c = 0; c < bc; c++) {
                float p = xt_fast_expf(sr[c] - shift);
                sr[c] = p;
                sum += p;
            }
            if (g->dropout) {  /* l sums the weights before dropout; acc gets the kept ones */
                dropout_row(g, u->n, i0 + r, j0, bc, z);
#pragma omp simd
                for (int64_t c = 0; c < bc; c++) sr[c] *= z[c];
            }
            if (first) {
                l[r] = sum;
            } else {
                float alpha = xt_fast_expf(m[r] - shift);  /* rescales what came before */
                l[r] = alpha * l[r] + sum;
                if (alpha != 1.0f) {
#pragma omp simd
                    for (int64_t c = 0; c < dv; c++) ar[c] *= alpha;
                }
            }
            m[r] = m_new;
        }
        xt_sgemm(false, false, br, dv, bc, 1.0f, s, SDPA_BC, u->v + j0 * u->ldv, u->ldv,
                 first ? 0.0f : 1.0f, acc, dv);
    }
    for (int64_t r = 0; r < br; r++) {
        float *o = u->out + (i0 + r) * dv;
        const float *ar = acc + r * dv;
        if (steps == 0) {  /* a pattern listed no key tile: acc was never written */
            memset(o, 0, sizeof(float) * (size_t)dv);
            u->lse[i0 + r] = -INFINITY;
            continue;
        }
        float inv = l[r] > 0 ? g->keep_scale / l[r] : 0.0f;
#pragma omp simd
        for (int64_t c = 0; c < dv; c++) o[c] = ar[c] * inv;
        u->lse[i0 + r] = l[r] > 0 ? m[r] + logf(l[r]) : -INFINITY;
    }
}

static sdpa_unit unit_inputs(const sdpa_geom *g, int64_t n, const sdpa_input *q,
                             const sdpa_input *k, const sdpa_input *v)
{
    sdpa_unit u = {.n = n, .q = q->data + q->off[n], .k = k->data + k->off[n],
                   .v = v->data + v->off[n], .ldq = q->ld, .ldk = k->ld, .ldv = v->ld};
    return u;
}

/* out [units,T,dv] and lse [units,T], contiguous. */
static xt_status forward(const sdpa_geom *g, const sdpa_input *q, const sdpa_input *k,
                         const sdpa_input *v, float *out, float *lse)
{
    int64_t tiles = (g->T + SDPA_BR - 1) / SDPA_BR, tasks = g->units * tiles;
    int nt = omp_get_max_threads();
    size_t per_thread = fwd_scratch_floats(g);
    float *scratch = malloc(sizeof(float) * per_thread * (size_t)nt);
    if (!scratch) return xt_fail(XT_ERR_OOM, "%s: out of memory", g->op);
    /* Causal tiles further down have more keys: hand tasks out one at a time. */
#pragma omp parallel for schedule(dynamic, 1) if (tasks > 1 && g->T * g->S * g->d > XT_PARALLEL_GRAIN)
    for (int64_t task = 0; task < tasks; task++) {
        int64_t n = task / tiles;
        sdpa_unit u = unit_inputs(g, n, q, k, v);
        u.out = out + n * g->T * g->dv;
        u.lse = lse + n * g->T;
        forward_tile(g, &u, (task % tiles) * SDPA_BR,
                     scratch + per_thread * (size_t)omp_get_thread_num());
    }
    free(scratch);
    return XT_OK;
}

/* ==== backward =========================================================================== */

/* Per-thread scratch of the backward: p [BR,BC], ds [BR,BC], z [BC]. */
enum { BWD_SCRATCH_FLOATS = 2 * SDPA_BR * SDPA_BC + SDPA_BC };

/* The tile pair (query tile at row i0, key tile at j0): adds its share to whichever of
 * u->dq, u->dk, u->dv are non-NULL. The tile's extent is a function of (i0, j0) alone, and
 * the same as the forward's (keys past the tile's last visible one are cut off), so that
 * either schedule forms exactly the same GEMMs. */
static void backward_tile(const sdpa_geom *g, const sdpa_unit *u, int64_t i0, int64_t j0,
                          int kind, float *scratch)
{
    float *p = scratch, *ds = scratch + SDPA_BR * SDPA_BC, *z = ds + SDPA_BR * SDPA_BC;
    const int64_t d = g->d, dv = g->dv;
    int64_t br = min64(SDPA_BR, g->T - i0);
    int64_t bc = min64(SDPA_BC, keys_visible(g, i0 + br - 1) - j0);
    score_tile(g, u, i0, br, j0, bc, kind, p);
    for (int64_t r = 0; r < br; r++) {
        float *pr = p + r * SDPA_BC;
        float L = u->lse[i0 + r];
        float shift = L == -INFINITY ? INFINITY : L;  /* a row that saw no key has P = 0 */
#pragma omp simd
        for (int64_t c = 0; c < bc; c++) pr[c] = xt_fast_expf(pr[c] - shift);
    }
    const float *dO = u->dout + i0 * dv;
    bool need_ds = u->dq || u->dk;
    if (need_ds)  /* dP~ = dO_I V_J^T */
        xt_sgemm(false, true, br, bc, dv, 1.0f, dO, dv, u->v + j0 * u->ldv, u->ldv, 0.0f, ds,
                 SDPA_BC);
    for (int64_t r = 0; r < br && (need_ds || g->dropout); r++) {
        float *dr = ds + r * SDPA_BC, *pr = p + r * SDPA_BC;
        float Di = u->D[i0 + r], scale = g->scale;
        if (g->dropout) {
            /* dS = scale * P * (dP~ * Z/(1-p) - D), then P becomes P~ = P * Z/(1-p) */
            dropout_row(g, u->n, i0 + r, j0, bc, z);
            float ks = g->keep_scale;
#pragma omp simd
            for (int64_t c = 0; c < bc; c++) {
                float zc = z[c] * ks;
                if (need_ds) dr[c] = scale * pr[c] * (dr[c] * zc - Di);
                pr[c] *= zc;
            }
        } else {
#pragma omp simd
            for (int64_t c = 0; c < bc; c++) dr[c] = scale * pr[c] * (dr[c] - Di);
        }
    }
    if (u->dv)  /* dV_J += P~^T dO_I */
        xt_sgemm(true, false, bc, dv, br, 1.0f, p, SDPA_BC, dO, dv, 1.0f, u->dv + j0 * dv, dv);
    if (u->dk)  /* dK_J += dS^T Q_I */
        xt_sgemm(true, false, bc, d, br, 1.0f, ds, SDPA_BC, u->q + i0 * u->ldq, u->ldq, 1.0f,
                 u->dk + j0 * d, d);
    if (u->dq)  /* dQ_I += dS K_J */
        xt_sgemm(false, false, br, d, bc, 1.0f, ds, SDPA_BC, u->k + j0 * u->ldk, u->ldk, 1.0f,
                 u->dq + i0 * d, d);
}

/* All query tiles against key tile j0 (pass A, or one column of the one-pass schedule). */
static void backward_key_tile(const sdpa_geom *g, const sdpa_unit *u, int64_t j0, float *scratch)
{
    if (g->blocks) {
        const attn_blocks *b = g->blocks;
        for (int64_t e = b->col_ptr[j0 / SDPA_BC]; e < b->col_ptr[j0 / SDPA_BC + 1]; e++)
            backward_tile(g, u, b->row[e] * SDPA_BR, j0, b->col_kind[e], scratch);
        return;
    }
    int64_t first = first_query_seeing(g, j0) / SDPA_BR * SDPA_BR;
    for (int64_t i0 = first; i0 < g->T; i0 += SDPA_BR)
        backward_tile(g, u, i0, j0, ATTN_TILE_FULL, scratch);
}

/* All key tiles against query tile i0 (pass B). */
static void backward_query_tile(const sdpa_geom *g, const sdpa_unit *u, int64_t i0,
                                float *scratch)
{
    if (g->blocks) {
        const attn_blocks *b = g->blocks;
        for (int64_t e = b->row_ptr[i0 / SDPA_BR]; e < b->row_ptr[i0 / SDPA_BR + 1]; e++)
            backward_tile(g, u, i0, b->col[e] * SDPA_BC, b->row_kind[e], scratch);
        return;
    }
    int64_t key_end = keys_visible(g, min64(i0 + SDPA_BR, g->T) - 1);
    for (int64_t j0 = 0; j0 < key_end; j0 += SDPA_BC)
        backward_tile(g, u, i0, j0, ATTN_TILE_FULL, scratch);
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

/* The contiguous tensors of the backward; gradients zero-filled, NULL when not wanted. */
typedef struct sdpa_grads {
    const float *out, *dout, *lse;
    float *dq, *dk, *dv;
} sdpa_grads;

static sdpa_unit unit_backward(const sdpa_geom *g, int64_t n, const sdpa_input *q,
                               const sdpa_input *k, const sdpa_input *v, const sdpa_grads *gr,
                               const float *D, bool want_q, bool want_kv)
{
    sdpa_unit u = unit_inputs(g, n, q, k, v);
    u.dout = gr->dout + n * g->T * g->dv;
    u.lse = (float *)gr->lse + n * g->T;   /* only read in the backward */
    u.D = D + n * g->T;
    u.dq = want_q && gr->dq ? gr->dq + n * g->T * g->d : NULL;
    u.dk = want_kv && gr->dk ? gr->dk + n * g->S * g->d : NULL;
    u.dv = want_kv && gr->dv ? gr->dv + n * g->S * g->dv : NULL;
    return u;
}

static xt_status backward(const sdpa_geom *g, const sdpa_input *q, const sdpa_input *k,
                          const sdpa_input *v, const sdpa_grads *gr)
{
    int nt = omp_get_max_threads();
    float *D = malloc(sizeof(float) * (size_t)(g->units * g->T + 1));
    float *scratch = malloc(sizeof(float) * BWD_SCRATCH_FLOATS * (size_t)nt);
    if (!D || !scratch) {
        free(D);
        free(scratch);
        return xt_fail(XT_ERR_OOM, "%s: out of memory in backward", g->op);
    }
    row_dots(g, gr->dout, gr->out, D);
    bool parallel = g->T * g->S * g->d > XT_PARALLEL_GRAIN;
    bool need_kv = gr->dk || gr->dv;
    int64_t key_tiles = (g->S + SDPA_BC - 1) / SDPA_BC, query_tiles = (g->T + SDPA_BR - 1) / SDPA_BR;
    bool one_pass = gr->dq && need_kv && (nt == 1 || g->units % nt == 0 || g->units >= 4 * nt);
    if (one_pass) {
#pragma omp parallel for schedule(dynamic, 1) if (parallel && g->units > 1)
        for (int64_t n = 0; n < g->units; n++) {
            sdpa_unit u = unit_backward(g, n, q, k, v, gr, D, true, true);
            float *mine = scratch + (size_t)BWD_SCRATCH_FLOATS * (size_t)omp_get_thread_num();
            for (int64_t j0 = 0; j0 < g->S; j0 += SDPA_BC) backward_key_tile(g, &u, j0, mine);
        }
    } else {
        if (need_kv) {
            int64_t tasks = g->units * key_tiles;
#pragma omp parallel for schedule(dynamic, 1) if (parallel && tasks > 1)
            for (int64_t task = 0; task < tasks; task++) {
                sdpa_unit u = unit_backward(g, task / key_tiles, q, k, v, gr, D, false, true);
                float *mine = scratch + (size_t)BWD_SCRATCH_FLOATS * (size_t)omp_get_thread_num();
                backward_key_tile(g, &u, (task % key_tiles) * SDPA_BC, mine);
            }
        }
        if (gr->dq) {
            int64_t tasks = g->units * query_tiles;
#pragma omp parallel for schedule(dynamic, 1) if (parallel && tasks > 1)
            for (int64_t task = 0; task < tasks; task++) {
                sdpa_unit u = unit_backward(g, task / query_tiles, q, k, v, gr, D, true, false);
                float *mine = scratch + (size_t)BWD_SCRATCH_FLOATS * (size_t)omp_get_thread_num();
                backward_query_tile(g, &u, (task % query_tiles) * SDPA_BR, mine);
            }
        }
    }
    free(D);
    free(scratch);
    return XT_OK;
}

/* ==== inputs as GEMM operands ============================================================== */

/* Can t ([..., rows, width]) be read in place: unit-stride rows that do not overlap? */
static bool readable_in_place(const xt_tensor *t)
{
    int32_t nd = t->ndim;
    int64_t rows = t->shape[nd - 2], width = t->shape[nd - 1];
    if (width > 1 && t->strides[nd - 1] != 1) return false;
    if (rows > 1 && t->strides[nd - 2] < width) return false;
    for (int32_t i = 0; i < nd - 2; i++)
        if (t->strides[i] < 0) return false;
    return true;
}

/* t itself (+1) when readable in place, else a contiguous copy made outside the graph. */
static xt_tensor *readable(xt_tensor *t)
{
    if (readable_in_place(t)) {
        xt_tensor_retain(t);
        return t;
    }
    int32_t prev = xt_set_grad_enabled(0);
    xt_tensor *c = xt_contiguous(t);
    xt_set_grad_enabled(prev);
    return c;
}

/* Fill in's operand view of t (readable in place) for `units` units; false on OOM. */
static bool input_of(const xt_tensor *t, int64_t units, sdpa_input *in)
{
    int32_t nd = t->ndim;
    int64_t rows = t->shape[nd - 2], width = t->shape[nd - 1];
    in->data = t->data;
    in->ld = rows > 1 ? t->strides[nd - 2] : width;
    in->off = malloc(sizeof(int64_t) * (size_t)(units > 0 ? units : 1));
    if (!in->off) return false;
    for (int64_t n = 0; n < units; n++) {
        int64_t rest = n, off = 0;
        for (int32_t i = nd - 3; i >= 0; i--) {
            off += (rest % t->shape[i]) * t->strides[i];
            rest /= t->shape[i];
        }
        in->off[n] = off;
    }
    return true;
}

/* The three inputs as operands; false (error set) on OOM, with nothing left allocated. */
static bool inputs_of(const char *op, const xt_tensor *q, const xt_tensor *k,
                      const xt_tensor *v, int64_t units, sdpa_input in[3])
{
    memset(in, 0, 3 * sizeof *in);
    if (input_of(q, units, &in[0]) && input_of(k, units, &in[1]) && input_of(v, units, &in[2]))
        return true;
    for (int i = 0; i < 3; i++) free(in[i].off);
    xt_fail(XT_ERR_OOM, "%s: out of memory", op);
    return false;
}

static void free_inputs(sdpa_input in[3])
{
    for (int i = 0; i < 3; i++) free(in[i].off);
}

/* ==== the op ============================================================================= */

static sdpa_geom geometry(const char *op, const xt_tensor *q, const xt_tensor *k,
                          const xt_tensor *v)
{
    int32_t nd = q->ndim;
    sdpa_geom g = {.units = xt_shape_numel(nd - 2, q->shape), .T = q->shape[nd - 2],
                   .S = k->shape[nd - 2], .d = q->shape[nd - 1], .dv = v->shape[nd - 1],
                   .keep_scale = 1.0f, .op = op};
    g.offset = g.S - g.T;
    return g;
}

/* saved: 0 q, 1 k, 2 v (readable in place), 3 out, 4 lse.
 * iargs: 0 causal, 1 dropout, 2 seed, 3 rng offset. fargs: 0 scale, 1 p.
 * extra: the attn_pattern of a block-sparse op (its block list is rebuilt here). */
static xt_status sdpa_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *q = xt_node_saved(node, 0), *k = xt_node_saved(node, 1);
    xt_tensor *v = xt_node_saved(node, 2), *out = xt_node_saved(node, 3);
    xt_tensor *lse = xt_node_saved(node, 4);
    if (!q || !k || !v || !out || !lse) return xt_last_status();
    sdpa_geom g = geometry(node->name, q, k, v);
    g.causal = (int)node->iargs[0];
    g.scale = (float)node->fargs[0];
    if (node->iargs[1]) {
        double p = node->fargs[1];
        g.dropout = 1;
        g.keep_scale = (float)(1.0 / (1.0 - p));
        g.threshold = (uint64_t)(p * 4294967296.0);
        g.seed = (uint64_t)node->iargs[2];
        g.rng_offset = (uint64_t)node->iargs[3];
    }
    attn_blocks *blocks = NULL;
    if (node->extra) {
        g.pat = node->extra;
        blocks = attn_blocks_build(g.pat, SDPA_BR, SDPA_BC);
        if (!blocks) return xt_last_status();
        g.blocks = blocks;
    }
    bool need_q = xt_node_needs(node, 0), need_k = xt_node_needs(node, 1),
         need_v = xt_node_needs(node, 2);
    xt_tensor *dy = xt_contiguous(dout);
    xt_tensor *dq = need_q ? xt_zeros(q->ndim, q->shape, XT_FLOAT32) : NULL;
    xt_tensor *dk = need_k ? xt_zeros(k->ndim, k->shape, XT_FLOAT32) : NULL;
    xt_tensor *dv = need_v ? xt_zeros(v->ndim, v->shape, XT_FLOAT32) : NULL;
    xt_status st = XT_OK;
    sdpa_input in[3];
    if (!dy || (need_q && !dq) || (need_k && !dk) || (need_v && !dv)) {
        st = xt_last_status();
    } else if (g.units > 0 && g.T > 0) {
        if (!inputs_of(g.op, q, k, v, g.units, in)) {
            st = xt_last_status();
        } else {
            sdpa_grads gr = {out->data, dy->data, lse->data, dq ? dq->data : NULL,
                             dk ? dk->data : NULL, dv ? dv->data : NULL};
            st = backward(&g, &in[0], &in[1], &in[2], &gr);
            free_inputs(in);
        }
    }
    xt_tensor_release(dy);
    attn_blocks_free(blocks);
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

static xt_status check_args(const char *op, const xt_tensor *q, const xt_tensor *k,
                            const xt_tensor *v, int32_t causal, double scale, double p,
                            const xt_rng *rng)
{
    xt_status status = xt_check_qkv(op, q, k, v, 'd');
    if (status != XT_OK) return status;
    int32_t nd = q->ndim;
    int64_t T = q->shape[nd - 2], S = k->shape[nd - 2];
    if (causal && S < T)
        return xt_fail(XT_ERR_SHAPE,
                       "%s: causal attention needs at least as many keys as queries (S >= T; "
                       "query i sees keys up to i + S - T), got T = %lld, S = %lld", op,
                       (long long)T, (long long)S);
    if (isnan(scale) || isinf(scale))
        return xt_fail(XT_ERR_ARG, "%s: scale must be finite (<= 0 for 1/sqrt(d)), got %g", op,
                       scale);
    if (!(p >= 0 && p < 1))
        return xt_fail(XT_ERR_ARG, "%s: dropout probability must be in [0, 1), got %g", op, p);
    if (p > 0 && !rng)
        return xt_fail(XT_ERR_ARG, "%s: dropout needs a generator (rng is NULL)", op);
    return XT_OK;
}

/* The op: dense (pattern NULL; causal, dropout as given) or block-sparse (pattern owned,
 * moved into the node or freed; causal and p are 0 then, the pattern masks). */
static xt_tensor *attention(const char *op, xt_tensor *q, xt_tensor *k, xt_tensor *v,
                            int32_t causal, double scale, double p, xt_rng *rng,
                            attn_pattern *pattern)
{
    if (check_args(op, q, k, v, causal, scale, p, rng) != XT_OK) {
        attn_pattern_free(pattern);
        return NULL;
    }
    sdpa_geom g = geometry(op, q, k, v);
    if (pattern && (g.S != g.T || pattern->T != g.T)) {
        char a[XT_SHAPE_STR], b[XT_SHAPE_STR];
        xt_shape_str(a, q->ndim, q->shape);
        xt_shape_str(b, k->ndim, k->shape);
        xt_fail(XT_ERR_SHAPE, "%s: self-attention needs as many keys as queries (S == T), got "
                "q %s and k %s", op, a, b);
        attn_pattern_free(pattern);
        return NULL;
    }
    attn_blocks *blocks = NULL;
    if (pattern) {
        blocks = attn_blocks_build(pattern, SDPA_BR, SDPA_BC);
        if (!blocks) {
            attn_pattern_free(pattern);
            return NULL;
        }
        g.pat = pattern;
        g.blocks = blocks;
    }
    g.causal = causal != 0;
    if (scale <= 0) scale = 1.0 / sqrt((double)g.d);
    g.scale = (float)scale;
    if (p > 0) {
        g.dropout = 1;
        g.keep_scale = (float)(1.0 / (1.0 - p));
        g.threshold = (uint64_t)(p * 4294967296.0);
        g.seed = rng->seed;
        g.rng_offset = rng->offset;
        rng->offset += (uint64_t)(g.units * g.T) * (uint64_t)((g.S + 3) / 4);
    }

    int32_t nd = q->ndim;
    int64_t out_shape[XT_MAX_DIMS];
    memcpy(out_shape, q->shape, sizeof(int64_t) * (size_t)nd);
    out_shape[nd - 1] = g.dv;
    xt_tensor *qr = readable(q), *kr = readable(k), *vr = readable(v);
    xt_tensor *out = xt_empty(nd, out_shape, XT_FLOAT32);
    xt_tensor *lse = xt_empty(nd - 1, q->shape, XT_FLOAT32);   /* [...,T] */
    xt_tensor *tmp[5] = {qr, kr, vr, out, lse};
    bool ok = qr && kr && vr && out && lse;
    if (ok && g.units > 0 && g.T > 0) {
        sdpa_input in[3];
        ok = inputs_of(op, qr, kr, vr, g.units, in);
        if (ok) {
            ok = forward(&g, &in[0], &in[1], &in[2], out->data, lse->data) == XT_OK;
            free_inputs(in);
        }
    }
    attn_blocks_free(blocks);
    xt_tensor *inputs[3] = {q, k, v};
    if (ok && xt_needs_grad(3, inputs)) {
        xt_node *node = xt_node_new(op, sdpa_backward, 3, inputs);
        ok = node && !xt_node_save(node, qr) && !xt_node_save(node, kr) &&
             !xt_node_save(node, vr) && !xt_node_save(node, out) && !xt_node_save(node, lse);
        if (ok) {
            node->iargs[0] = g.causal;
            node->iargs[1] = g.dropout;
            node->iargs[2] = (int64_t)g.seed;
            node->iargs[3] = (int64_t)g.rng_offset;
            node->fargs[0] = g.scale;
            node->fargs[1] = p;
            node->extra = pattern;  /* the node owns the pattern from here */
            node->free_extra = pattern ? attn_pattern_free : NULL;
            pattern = NULL;
            xt_node_attach(node, out);
        } else {
            xt_node_release(node);
        }
    }
    attn_pattern_free(pattern);
    if (ok) tmp[3] = NULL;  /* out is returned */
    for (int i = 0; i < 5; i++) xt_tensor_release(tmp[i]);
    return ok ? out : NULL;
}

xt_tensor *xt_scaled_dot_product_attention_dropout(xt_tensor *q, xt_tensor *k, xt_tensor *v,
                                                   int32_t causal, double scale, double p,
                                                   xt_rng *rng)
{
    return attention("scaled_dot_product_attention", q, k, v, causal, scale, p, rng, NULL);
}

xt_tensor *xt_attention_pattern(const char *op, xt_tensor *q, xt_tensor *k, xt_tensor *v,
                                double scale, attn_pattern *pattern)
{
    return attention(op, q, k, v, 0, scale, 0.0, NULL, pattern);
}

xt_tensor *xt_scaled_dot_product_attention(xt_tensor *q, xt_tensor *k, xt_tensor *v,
                                           int32_t causal, double scale)
{
    return xt_scaled_dot_product_attention_dropout(q, k, v, causal, scale, 0.0, NULL);
}
