/*
 * attn_linear.c: kernel ("linear") attention, forward and backward side by side
 * (research/efficient_attention.md § 2.7; Katharopoulos et al. 2020).
 *
 * Per unit n (batch x head), with feature rows fq_i = phi(q_i), fk_j = phi(k_j) of width m:
 *   out_i = num_i / den_i,  num_i = sum_j (fq_i . fk_j) v_j,  den_i = sum_j fq_i . fk_j + eps
 * over all keys j (bidirectional), or j <= i (causal, T == S). phi is elu(x) + 1, or the
 * identity when the caller passes features (FAVOR+). Nothing T x T is formed: the keys are
 * summarised by the state S = sum_j fk_j v_j^T [m, dv] and z = sum_j fk_j [m].
 *
 * Chunked causal form: rows are cut in chunks of C. For chunk c (rows i0 .. i0+n-1) with the
 * state of the chunks before it,
 *   A = tril(FQ_c FK_c^T)                  [n, n] (diagonal included)
 *   num = A V_c + FQ_c S_prev              den = rowsum(A) + FQ_c z_prev + eps
 * and the chunk adds FK_c^T V_c and colsum(FK_c) to the state. Bidirectional: every query
 * chunk uses the total state.
 *
 * Backward (g_i = dL/dout_i; saved: out and den):
 *   dnum_i = g_i / den_i    dden_i = -(g_i . out_i) / den_i
 *   B = tril(dnum_c V_c^T + dden_c 1^T)    [n, n]
 *   dFQ_c = B FK_c + dnum_c S_prev^T + dden_c z_prev^T                 (forward order)
 *   dFK_c = B^T FQ_c + V_c R_next^T + 1 r_next^T                        (reverse order)
 *   dV_c  = A^T dnum_c + FK_c R_next
 * with the reverse state R = sum_i fq_i dnum_i^T [m, dv], r = sum_i dden_i fq_i over the chunks
 * after c (all query chunks when bidirectional). Each state is rebuilt by its own sweep, so
 * nothing beyond out, den and the inputs is kept from the forward, and no state is ever
 * recovered by subtraction (which drifts in float32). Then dq = dFQ * phi'(q) with
 * phi'(x) = 1 for x > 0 and e^x otherwise, which is min(1, phi(x)).
 *
 * Every pass is a "sweep": a summary of each chunk (its contribution to the state), summed
 * in sweep order, and a body per chunk that reads the state. Two schedules give the same
 * bits (each state is the same left-to-right sum of the same summaries):
 *  - units spread over threads, each with a running state of m x (dv + 1) floats;
 *  - with fewer units than threads, every chunk's summary in parallel into a buffer of
 *    (chunks + 1) states per unit, prefix sums, then every chunk's body in parallel.
 */
#include "internal.h"
#include "fast_exp.h"
#include "unit_rows.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

enum { LIN_CHUNK_DEFAULT = 64 };

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

typedef struct lin_geom {
    int64_t units;
    int64_t T, S;       /* query and key lengths (equal when causal) */
    int64_t m, dv;      /* feature and value widths */
    int64_t chunk;
    int causal, elu;
    float eps;
} lin_geom;

/* Everything a chunk function reads or writes; outputs are contiguous [units, rows, width],
 * NULL when not computed. */
typedef struct lin_args {
    const lin_geom *g;
    xt_unit_rows q, k, v;
    float *out, *den;      /* the forward writes them, the backward reads them */
    const float *dout;
    float *dq, *dk, *dv;
} lin_args;

/* Per-thread scratch of the chunk functions, all C rows: fq, fk [C,m], a, b [C,C],
 * dnum [C,dv], dden [C], dfx [C,m]. */
typedef struct lin_scratch {
    float *fq, *fk, *a, *b, *dnum, *dden, *dfx;
} lin_scratch;

static size_t scratch_floats(const lin_geom *g)
{
    size_t C = (size_t)g->chunk, m = (size_t)g->m;
    return 3 * C * m + 2 * C * C + C * (size_t)g->dv + C;
}

static lin_scratch scratch_at(const lin_geom *g, float *p)
{
    int64_t C = g->chunk, m = g->m;
    lin_scratch s;
    s.fq = p;
    s.fk = s.fq + C * m;
    s.a = s.fk + C * m;
    s.b = s.a + C * C;
    s.dnum = s.b + C * C;
    s.dden = s.dnum + C * g->dv;
    s.dfx = s.dden + C;
    return s;
}

/* ---- pieces ------------------------------------------------------------------------------ */

/* Feature rows i0 .. i0+n-1 of unit u: phi applied into buf [n, m] (returned, *ld = m), or,
 * for identity features, the input rows themselves (*ld = their stride). */
static const float *features(const lin_geom *g, const xt_unit_rows *x, int64_t u, int64_t i0,
                             int64_t n, float *buf, int64_t *ld)
{
    const int64_t m = g->m;
    if (!g->elu) {
        *ld = x->ld;
        return xt_unit_row(x, u, i0);
    }
    for (int64_t i = 0; i < n; i++) {
        const float *src = xt_unit_row(x, u, i0 + i);
        float *dst = buf + i * m;
#pragma omp simd
        for (int64_t r = 0; r < m; r++) {
            float e = xt_fast_expf(src[r]);
            dst[r] = src[r] > 0 ? src[r] + 1.0f : e;
        }
    }
    *ld = m;
    return buf;
}

/* Zero the entries above the diagonal of x [n, n] (row stride C). */
static void zero_upper(float *x, int64_t n, int64_t C)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i + 1; j < n; j++) x[i * C + j] = 0.0f;
}

/* dnum [n, dv] = g / den and dden [n] = -(g . out) / den for query rows i0 .. i0+n-1. */
static void grad_terms(const lin_args *a, int64_t u, int64_t i0, int64_t n, float *dnum,
                       float *dden)
{
    const lin_geom *g = a->g;
    const int64_t dv = g->dv;
    for (int64_t i = 0; i < n; i++) {
        int64_t row = u * g->T + i0 + i;
        const float *go = a->dout + row * dv, *o = a->out + row * dv;
        float inv = 1.0f / a->den[row], dot = 0.0f;
        float *dn = dnum + i * dv;
#pragma omp simd reduction(+ : dot)
        for (int64_t c = 0; c < dv; c++) {
            dn[c] = go[c] * inv;
            dot += go[c] * o[c];
        }
        dden[i] = -dot * inv;
    }
}

/* dst [n, m] (row stride ldd) = dfx * phi'(x), phi' = min(1, phi) for elu + 1. */
static void chain(const lin_geom *g, const float *dfx, const float *f, int64_t ldf, int64_t n,
                  float *dst)
{
    const int64_t m = g->m;
    for (int64_t i = 0; i < n; i++) {
        const float *d = dfx + i * m, *fi = f + i * ldf;
        float *o = dst + i * m;
        if (g->elu) {
#pragma omp simd
            for (int64_t r = 0; r < m; r++) o[r] = d[r] * (fi[r] < 1.0f ? fi[r] : 1.0f);
        } else {
            memcpy(o, d, sizeof(float) * (size_t)m);
        }
    }
}

/* ==== forward ============================================================================== */

/* The key chunk c's summary: dst = [FK_c^T V_c (m x dv) | colsum(FK_c) (m)]. */
static void kv_summary(const lin_args *a, int64_t u, int64_t c, float *dst, lin_scratch *s)
{
    const lin_geom *g = a->g;
    const int64_t m = g->m, dv = g->dv, j0 = c * g->chunk, n = min64(g->chunk, g->S - j0);
    int64_t ldk;
    const float *fk = features(g, &a->k, u, j0, n, s->fk, &ldk);
    xt_sgemm(true, false, m, dv, n, 1.0f, fk, ldk, xt_unit_row(&a->v, u, j0), a->v.ld, 0.0f, dst,
             dv);
    float *z = dst + m * dv;
    memset(z, 0, sizeof(float) * (size_t)m);
    for (int64_t j = 0; j < n; j++) {
        const float *f = fk + j * ldk;
#pragma omp simd
        for (int64_t r = 0; r < m; r++) z[r] += f[r];
    }
}

/* Output rows of query chunk c from the state [S (m x dv) | z (m)]. */
static void fwd_body(const lin_args *a, int64_t u, int64_t c, const float *state, lin_scratch *s)
{
    const lin_geom *g = a->g;
    const int64_t m = g->m, dv = g->dv, C = g->chunk, i0 = c * C, n = min64(C, g->T - i0);
    const float *S = state, *z = state + m * dv;
    float *out = a->out + (u * g->T + i0) * dv, *den = a->den + u * g->T + i0;
    int64_t ldq, ldk;
    const float *fq = features(g, &a->q, u, i0, n, s->fq, &ldq);
    if (g->causal) {
        const float *fk = features(g, &a->k, u, i0, n, s->fk, &ldk);
        xt_sgemm(false, true, n, n, m, 1.0f, fq, ldq, fk, ldk, 0.0f, s->a, C);
        zero_upper(s->a, n, C);
        xt_sgemm(false, false, n, dv, n, 1.0f, s->a, C, xt_unit_row(&a->v, u, i0), a->v.ld,
                 0.0f, out, dv);
    }
    xt_sgemm(false, false, n, dv, m, 1.0f, fq, ldq, S, dv, g->causal ? 1.0f : 0.0f, out, dv);
    for (int64_t i = 0; i < n; i++) {
        const float *fi = fq + i * ldq, *ai = s->a + i * C;
        float d = 0.0f, intra = 0.0f;
#pragma omp simd reduction(+ : d)
        for (int64_t r = 0; r < m; r++) d += fi[r] * z[r];
        if (g->causal) {
#pragma omp simd reduction(+ : intra)
            for (int64_t j = 0; j <= i; j++) intra += ai[j];
        }
        den[i] = d + intra + g->eps;
        float inv = 1.0f / den[i], *o = out + i * dv;
#pragma omp simd
        for (int64_t e = 0; e < dv; e++) o[e] *= inv;
    }
}

/* ==== backward ============================================================================= */

/* b [n, n] (stride C) = tril(dnum V_c^T + dden 1^T) for the chunk at row i0. */
static void intra_grad(const lin_args *a, int64_t u, int64_t i0, int64_t n, lin_scratch *s)
{
    const int64_t C = a->g->chunk, dv = a->g->dv;
    xt_sgemm(false, true, n, n, dv, 1.0f, s->dnum, dv, xt_unit_row(&a->v, u, i0), a->v.ld, 0.0f,
             s->b, C);
    for (int64_t i = 0; i < n; i++) {
        float *bi = s->b + i * C, dd = s->dden[i];
        for (int64_t j = 0; j <= i; j++) bi[j] += dd;
    }
    zero_upper(s->b, n, C);
}

/* dq of query chunk c, from the key state [S | z] of the chunks before it (all when
 * bidirectional). */
static void bwd_q_body(const lin_args *a, int64_t u, int64_t c, const float *state,
                       lin_scratch *s)
{
    const lin_geom *g = a->g;
    const int64_t m = g->m, dv = g->dv, C = g->chunk, i0 = c * C, n = min64(C, g->T - i0);
    const float *S = state, *z = state + m * dv;
    int64_t ldq, ldk;
    grad_terms(a, u, i0, n, s->dnum, s->dden);
    const float *fq = features(g, &a->q, u, i0, n, s->fq, &ldq);
    if (g->causal) {
        const float *fk = features(g, &a->k, u, i0, n, s->fk, &ldk);
        intra_grad(a, u, i0, n, s);
        xt_sgemm(false, false, n, m, n, 1.0f, s->b, C, fk, ldk, 0.0f, s->dfx, m);
    }
    xt_sgemm(false, true, n, m, dv, 1.0f, s->dnum, dv, S, dv, g->causal ? 1.0f : 0.0f, s->dfx, m);
    for (int64_t i = 0; i < n; i++) {
        float *d = s->dfx + i * m, dd = s->dden[i];
#pragma omp simd
        for (int64_t r = 0; r < m; r++) d[r] += dd * z[r];
    }
    chain(g, s->dfx, fq, ldq, n, a->dq + (u * g->T + i0) * m);
}

/* The query chunk c's summary for the reverse state: [FQ_c^T dnum_c | FQ_c^T dden_c]. */
static void qd_summary(const lin_args *a, int64_t u, int64_t c, float *dst, lin_scratch *s)
{
    const lin_geom *g = a->g;
    const int64_t m = g->m, dv = g->dv, i0 = c * g->chunk, n = min64(g->chunk, g->T - i0);
    int64_t ldq;
    grad_terms(a, u, i0, n, s->dnum, s->dden);
    const float *fq = features(g, &a->q, u, i0, n, s->fq, &ldq);
    xt_sgemm(true, false, m, dv, n, 1.0f, fq, ldq, s->dnum, dv, 0.0f, dst, dv);
    float *r = dst + m * dv;
    memset(r, 0, sizeof(float) * (size_t)m);
    for (int64_t i = 0; i < n; i++) {
        const float *f = fq + i * ldq;
        float dd = s->dden[i];
#pragma omp simd
        for (int64_t e = 0; e < m; e++) r[e] += dd * f[e];
    }
}

/* dk and dv of key chunk c, from the reverse state [R | r] of the chunks after it (all query
 * chunks when bidirectional). */
static void bwd_k_body(const lin_args *a, int64_t u, int64_t c, const float *state,
                       lin_scratch *s)
{
    const lin_geom *g = a->g;
    const int64_t m = g->m, dv = g->dv, C = g->chunk, j0 = c * C, n = min64(C, g->S - j0);
    const float *R = state, *r = state + m * dv, *V = xt_unit_row(&a->v, u, j0);
    const int64_t ldv = a->v.ld;
    int64_t ldq = 0, ldk;
    const float *fk = features(g, &a->k, u, j0, n, s->fk, &ldk), *fq = NULL;
    if (g->causal) {  /* the query chunk holding the same rows */
        grad_terms(a, u, j0, n, s->dnum, s->dden);
        fq = features(g, &a->q, u, j0, n, s->fq, &ldq);
    }
    if (a->dk) {
        if (g->causal) {
            intra_grad(a, u, j0, n, s);
            xt_sgemm(true, false, n, m, n, 1.0f, s->b, C, fq, ldq, 0.0f, s->dfx, m);
        }
        xt_sgemm(false, true, n, m, dv, 1.0f, V, ldv, R, dv, g->causal ? 1.0f : 0.0f, s->dfx, m);
        for (int64_t j = 0; j < n; j++) {
            float *d = s->dfx + j * m;
#pragma omp simd
            for (int64_t e = 0; e < m; e++) d[e] += r[e];
        }
        chain(g, s->dfx, fk, ldk, n, a->dk + (u * g->S + j0) * m);
    }
    if (a->dv) {
        float *dV = a->dv + (u * g->S + j0) * dv;
        if (g->causal) {
            xt_sgemm(false, true, n, n, m, 1.0f, fq, ldq, fk, ldk, 0.0f, s->a, C);
            zero_upper(s->a, n, C);
            xt_sgemm(true, false, n, dv, n, 1.0f, s->a, C, s->dnum, dv, 0.0f, dV, dv);
        }
        xt_sgemm(false, false, n, dv, m, 1.0f, fk, ldk, R, dv, g->causal ? 1.0f : 0.0f, dV, dv);
    }
}

/* ==== sweeps =============================================================================== */

typedef void (*summary_fn)(const lin_args *a, int64_t u, int64_t c, float *dst, lin_scratch *s);
typedef void (*body_fn)(const lin_args *a, int64_t u, int64_t c, const float *state,
                        lin_scratch *s);

typedef struct lin_sweep {
    summary_fn summary;
    int64_t summary_chunks;
    body_fn body;
    int64_t body_chunks;
    bool reverse;   /* the state sums chunks from the last one down */
} lin_sweep;

static inline float *state_at(float *buf, int64_t i, int64_t width) { return buf + i * width; }

/* Units over threads: one running state per thread (causal: body then summary, chunk by chunk
 * in sweep order; bidirectional: all summaries, then the bodies). */
static void sweep_units(const lin_args *a, const lin_sweep *w, float *scratch, size_t per_thread,
                        bool parallel)
{
    const lin_geom *g = a->g;
    const int64_t width = g->m * g->dv + g->m;
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
    for (int64_t u = 0; u < g->units; u++) {
        float *mine = scratch + per_thread * (size_t)omp_get_thread_num();
        float *state = mine, *tmp = mine + width;
        lin_scratch s = scratch_at(g, mine + 2 * width);
        memset(state, 0, sizeof(float) * (size_t)width);
        for (int64_t p = 0; p < w->summary_chunks; p++) {
            int64_t c = w->reverse ? w->summary_chunks - 1 - p : p;
            if (g->causal) w->body(a, u, c, state, &s);
            w->summary(a, u, c, tmp, &s);
#pragma omp simd
            for (int64_t e = 0; e < width; e++) state[e] = state[e] + tmp[e];
        }
        if (!g->causal)
            for (int64_t c = 0; c < w->body_chunks; c++) w->body(a, u, c, state, &s);
    }
}

/* Chunks over threads: states[u][p] = the sum of the first p summaries in sweep order. */
static void sweep_chunks(const lin_args *a, const lin_sweep *w, float *scratch,
                         size_t per_thread, float *states)
{
    const lin_geom *g = a->g;
    const int64_t width = g->m * g->dv + g->m, ns = w->summary_chunks, slots = ns + 1;
    const int64_t tasks = g->units * ns;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t u = t / ns, p = t % ns, c = w->reverse ? ns - 1 - p : p;
        lin_scratch s = scratch_at(g, scratch + per_thread * (size_t)omp_get_thread_num());
        w->summary(a, u, c, state_at(states, u * slots + p + 1, width), &s);
    }
    for (int64_t u = 0; u < g->units; u++) {
        float *prev = state_at(states, u * slots, width);
        memset(prev, 0, sizeof(float) * (size_t)width);
        for (int64_t p = 1; p < slots; p++) {
            float *cur = state_at(states, u * slots + p, width);
#pragma omp simd
            for (int64_t e = 0; e < width; e++) cur[e] = prev[e] + cur[e];
            prev = cur;
        }
    }
    const int64_t nb = w->body_chunks, body_tasks = g->units * nb;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t t = 0; t < body_tasks; t++) {
        int64_t u = t / nb, c = t % nb;
        int64_t p = !g->causal ? ns : (w->reverse ? ns - 1 - c : c);
        lin_scratch s = scratch_at(g, scratch + per_thread * (size_t)omp_get_thread_num());
        w->body(a, u, c, state_at(states, u * slots + p, width), &s);
    }
}

static xt_status run_sweep(const lin_args *a, const lin_sweep *w, const char *op)
{
    const lin_geom *g = a->g;
    if (g->units == 0 || (w->body_chunks == 0 && w->summary_chunks == 0)) return XT_OK;
    const int nt = omp_get_max_threads();
    const int64_t width = g->m * g->dv + g->m;
    const bool big = (g->T + g->S) * g->m * g->dv > XT_PARALLEL_GRAIN;
    const bool by_chunks = big && nt > 1 && g->units < nt &&
                           w->summary_chunks + w->body_chunks > 2;
    size_t per_thread = scratch_floats(g) + (by_chunks ? 0 : 2 * (size_t)width);
    float *scratch = malloc(sizeof(float) * per_thread * (size_t)nt);
    float *states = by_chunks ? malloc(sizeof(float) * (size_t)(g->units *
                                       (w->summary_chunks + 1) * width)) : NULL;
    if (!scratch || (by_chunks && !states)) {
        free(scratch);
        free(states);
        return xt_fail(XT_ERR_OOM, "%s: out of memory", op);
    }
    if (by_chunks)
        sweep_chunks(a, w, scratch, per_thread, states);
    else
        sweep_units(a, w, scratch, per_thread, big && g->units > 1);
    free(scratch);
    free(states);
    return XT_OK;
}

static int64_t chunks_of(int64_t len, int64_t C) { return (len + C - 1) / C; }

/* ==== the op ================================================================================ */

static lin_geom geometry(const xt_tensor *q, const xt_tensor *k, const xt_tensor *v,
                         int32_t causal, int64_t chunk, int32_t feature_map, double eps)
{
    int32_t nd = q->ndim;
    lin_geom g = {.units = xt_shape_numel(nd - 2, q->shape), .T = q->shape[nd - 2],
                  .S = k->shape[nd - 2], .m = q->shape[nd - 1], .dv = v->shape[nd - 1],
                  .chunk = chunk > 0 ? chunk : LIN_CHUNK_DEFAULT, .causal = causal != 0,
                  .elu = feature_map == XT_FEATURE_ELU1, .eps = (float)eps};
    /* a chunk longer than the sequence only wastes scratch */
    int64_t longest = g.T > g.S ? g.T : g.S;
    if (g.chunk > longest) g.chunk = longest > 0 ? longest : 1;
    return g;
}

/* Operand views of q, k, v (readable in place); false (error set) on OOM. */
static bool operands(lin_args *a, const xt_tensor *q, const xt_tensor *k, const xt_tensor *v,
                     const char *op)
{
    int64_t units = a->g->units;
    a->q.off = a->k.off = a->v.off = NULL;
    if (xt_unit_rows_of(q, units, &a->q, op) == XT_OK &&
        xt_unit_rows_of(k, units, &a->k, op) == XT_OK &&
        xt_unit_rows_of(v, units, &a->v, op) == XT_OK)
        return true;
    xt_unit_rows_free(&a->q);
    xt_unit_rows_free(&a->k);
    xt_unit_rows_free(&a->v);
    return false;
}

static void free_operands(lin_args *a)
{
    xt_unit_rows_free(&a->q);
    xt_unit_rows_free(&a->k);
    xt_unit_rows_free(&a->v);
}

static const char *OP = "linear_attention";

/* saved: 0 q, 1 k, 2 v (readable in place), 3 out, 4 den [units, T].
 * iargs: 0 causal, 1 chunk, 2 feature map. fargs: 0 eps. */
static xt_status linear_attention_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *q = xt_node_saved(node, 0), *k = xt_node_saved(node, 1);
    xt_tensor *v = xt_node_saved(node, 2), *out = xt_node_saved(node, 3);
    xt_tensor *den = xt_node_saved(node, 4);
    if (!q || !k || !v || !out || !den) return xt_last_status();
    lin_geom g = geometry(q, k, v, (int32_t)node->iargs[0], node->iargs[1],
                          (int32_t)node->iargs[2], node->fargs[0]);
    bool need_q = xt_node_needs(node, 0), need_k = xt_node_needs(node, 1),
         need_v = xt_node_needs(node, 2);
    xt_tensor *dy = xt_contiguous(dout);
    xt_tensor *dq = need_q ? xt_empty(q->ndim, q->shape, XT_FLOAT32) : NULL;
    xt_tensor *dk = need_k ? xt_empty(k->ndim, k->shape, XT_FLOAT32) : NULL;
    xt_tensor *dv = need_v ? xt_empty(v->ndim, v->shape, XT_FLOAT32) : NULL;
    xt_status st = XT_OK;
    lin_args a = {.g = &g, .out = out->data, .den = den->data};
    if (!dy || (need_q && !dq) || (need_k && !dk) || (need_v && !dv)) {
        st = xt_last_status();
    } else if (!operands(&a, q, k, v, OP)) {
        st = xt_last_status();
    } else {
        a.dout = dy->data;
        a.dq = dq ? dq->data : NULL;
        a.dk = dk ? dk->data : NULL;
        a.dv = dv ? dv->data : NULL;
        int64_t qc = chunks_of(g.T, g.chunk), kc = chunks_of(g.S, g.chunk);
        if (need_q) {
            lin_sweep w = {kv_summary, kc, bwd_q_body, qc, false};
            st = run_sweep(&a, &w, OP);
        }
        if (st == XT_OK && (need_k || need_v)) {
            lin_sweep w = {qd_summary, qc, bwd_k_body, kc, true};
            st = run_sweep(&a, &w, OP);
        }
        free_operands(&a);
    }
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

static xt_status check_args(const xt_tensor *q, const xt_tensor *k, const xt_tensor *v,
                            int32_t causal, int64_t chunk, int32_t feature_map, double eps)
{
    xt_status status = xt_check_qkv(OP, q, k, v, 'm');
    if (status != XT_OK) return status;
    int32_t nd = q->ndim;
    int64_t T = q->shape[nd - 2], S = k->shape[nd - 2];
    if (causal && S != T)
        return xt_fail(XT_ERR_SHAPE,
                       "%s: causal attention needs as many keys as queries (S == T), got T = "
                       "%lld, S = %lld", OP, (long long)T, (long long)S);
    if (chunk < 0)
        return xt_fail(XT_ERR_ARG, "%s: chunk must be >= 1 (or 0 for the default %d), got %lld",
                       OP, LIN_CHUNK_DEFAULT, (long long)chunk);
    if (feature_map != XT_FEATURE_ELU1 && feature_map != XT_FEATURE_IDENTITY)
        return xt_fail(XT_ERR_ARG,
                       "%s: feature_map must be XT_FEATURE_ELU1 (0) or XT_FEATURE_IDENTITY (1), "
                       "got %d", OP, (int)feature_map);
    if (!(eps >= 0) || isinf(eps))
        return xt_fail(XT_ERR_ARG, "%s: eps must be finite and >= 0, got %g", OP, eps);
    return XT_OK;
}

xt_tensor *xt_linear_attention(xt_tensor *q, xt_tensor *k, xt_tensor *v, int32_t causal,
                               int64_t chunk, int32_t feature_map, double eps)
{
    if (check_args(q, k, v, causal, chunk, feature_map, eps) != XT_OK) return NULL;
    lin_geom g = geometry(q, k, v, causal, chunk, feature_map, eps);
    int32_t nd = q->ndim;
    int64_t out_shape[XT_MAX_DIMS];
    memcpy(out_shape, q->shape, sizeof(int64_t) * (size_t)nd);
    out_shape[nd - 1] = g.dv;
    xt_tensor *qr = xt_unit_rows_readable(q), *kr = xt_unit_rows_readable(k);
    xt_tensor *vr = xt_unit_rows_readable(v);
    xt_tensor *out = xt_empty(nd, out_shape, XT_FLOAT32);
    xt_tensor *den = xt_empty(nd - 1, q->shape, XT_FLOAT32);   /* [...,T] */
    xt_tensor *tmp[5] = {qr, kr, vr, out, den};
    bool ok = qr && kr && vr && out && den;
    lin_args a = {.g = &g, .out = out ? out->data : NULL, .den = den ? den->data : NULL};
    if (ok && operands(&a, qr, kr, vr, OP)) {
        lin_sweep w = {kv_summary, chunks_of(g.S, g.chunk), fwd_body, chunks_of(g.T, g.chunk),
                       false};
        ok = run_sweep(&a, &w, OP) == XT_OK;
        free_operands(&a);
    } else {
        ok = false;
    }
    xt_tensor *inputs[3] = {q, k, v};
    if (ok && xt_needs_grad(3, inputs)) {
        xt_node *node = xt_node_new(OP, linear_attention_backward, 3, inputs);
        ok = node && !xt_node_save(node, qr) && !xt_node_save(node, kr) &&
             !xt_node_save(node, vr) && !xt_node_save(node, out) && !xt_node_save(node, den);
        if (ok) {
            node->iargs[0] = g.causal;
            node->iargs[1] = g.chunk;
            node->iargs[2] = feature_map;
            node->fargs[0] = eps;
            xt_node_attach(node, out);
        } else {
            xt_node_release(node);
        }
    }
    if (ok) tmp[3] = NULL;   /* out is returned */
    for (int i = 0; i < 5; i++) xt_tensor_release(tmp[i]);
    return ok ? out : NULL;
}
