/*
 * group_linear.c: the group linear transformation (GLT) of DeLighT / DExTra (Mehta et al.
 * 2021; research/delight.md § 1 and § 6), forward and backward side by side.
 *
 *   x [..., dx], prefix [..., dp] or none (x's leading dims), w [g, ci, co] with
 *   ci = (dp + dx) / g, b [g, co] or none  ->  y [..., O], O = g * co; n rows (tokens).
 *
 *   u_k       = [prefix[:, k*dp/g ..+dp/g] | x[:, k*dx/g ..+dx/g]]    group k's input
 *   A[t,k,j]  = sum_a u_k[t,a] w[k,a,j]
 *   S[t,p]    = A[t,k,j] + b[k,j] at p = j*g + k (shuffle) or p = k*co + j (no shuffle)
 *   Z         = normalize ? LN of each chunk S[t, c*co ..+co) on its own, affine gamma,
 *               beta [co] shared by the g chunks : S
 *   y         = swish ? Z * sigmoid(Z) : Z
 *
 * The prefix is DExTra's input mixer: the next layer's group c sees (xp_c, z_c), so its
 * GEMM runs as two accumulating GEMMs on slices of xp and z, and the concatenation is
 * never built. Everything reads its operands in place: a group's input slice is a strided
 * view (leading dim = the row stride of x), w's inner [ci, co] matrices are read as stored
 * or transposed (a transposed Linear weight costs nothing).
 *
 * Forward: the GEMMs write A group-major into a [n, O] buffer; one pass per row gathers it
 * in shuffle order adding the bias, normalises, activates and writes y. When a norm or
 * swish follows, A (with the chunks' mean and 1/std and a snapshot of gamma, beta, b) is
 * what the backward keeps; S and Z are recomputed from it. With nothing after the GEMMs
 * and no shuffle they write y directly (onto the bias, beta = 1).
 *
 * Backward (dy [n, O] in output order): one pass per row recomputes Z, takes swish's and
 * the chunk LN's derivatives (the shared affine's gradients summed over rows and chunks),
 * and writes dA = dS unshuffled, group-major; then db = column sums of dA, and per group
 * dW_k = u_k^T dA_k (two GEMMs with a prefix), dx_k = dA_k Wx_k^T, dprefix_k = dA_k Wp_k^T,
 * each written in place into its slice.
 */
#include "internal.h"

#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* libmvec's SIMD expf lets the row passes vectorise (see elementwise.h). */
#if defined(__GLIBC__) && defined(__x86_64__) && defined(__OPTIMIZE__) && !defined(__FAST_MATH__)
float expf(float) __attribute__((simd("notinbranch")));
#endif

static const char *const OP = "group_linear";

/* ---- strided matrices for BLAS ---------------------------------------------------------- */

typedef struct fmat {
    float *p;
    int64_t rows, cols, rs, cs;        /* element (r, c) at p[r * rs + c * cs] */
} fmat;

static int64_t max1(int64_t v) { return v > 1 ? v : 1; }

static fmat tr(fmat m)
{
    fmat t = {m.p, m.cols, m.rows, m.cs, m.rs};
    return t;
}

/* rows r0.. and columns c0.. of m (nr x nc) */
static fmat sub(fmat m, int64_t r0, int64_t nr, int64_t c0, int64_t nc)
{
    fmat s = {m.p + r0 * m.rs + c0 * m.cs, nr, nc, m.rs, m.cs};
    return s;
}

/* How BLAS reads m: row-major with leading dim ld, or transposed. False when neither
 * stride is 1 (or a leading dim does not fit a BLAS int). */
static bool blas_form(fmat m, bool *trans, int64_t *ld)
{
    if (m.rows > INT_MAX || m.cols > INT_MAX) return false;
    if (m.rows == 0 || m.cols == 0) {
        *trans = false;
        *ld = max1(m.cols);
        return true;
    }
    if ((m.cs == 1 || m.cols == 1) && (m.rows == 1 || m.rs >= max1(m.cols))) {
        *trans = false;
        *ld = m.rows == 1 ? max1(m.cols) : m.rs;
    } else if ((m.rs == 1 || m.rows == 1) && (m.cols == 1 || m.cs >= max1(m.rows))) {
        *trans = true;
        *ld = m.cols == 1 ? max1(m.rows) : m.cs;
    } else {
        return false;
    }
    return *ld <= INT_MAX;
}

/* c [a.rows, b.cols] (row-major, ldc) = a b + beta c; a and b are BLAS-readable. */
static void mm(fmat a, fmat b, float beta, float *c, int64_t ldc)
{
    if (a.rows == 0 || b.cols == 0) return;
    if (a.cols == 0) {   /* an empty sum: BLAS is not asked to scale by beta */
        for (int64_t r = 0; r < a.rows; r++)
            for (int64_t j = 0; j < b.cols; j++) c[r * ldc + j] = beta == 0 ? 0.0f : c[r * ldc + j] * beta;
        return;
    }
    bool ta, tb;
    int64_t lda, ldb;
    blas_form(a, &ta, &lda);
    blas_form(b, &tb, &ldb);
    xt_sgemm(ta, tb, a.rows, b.cols, a.cols, 1.0f, a.p, lda, b.p, ldb, beta, c, ldc);
}

/* t [..., d] as n rows of d floats with a unit column stride and one row stride, without a
 * copy; false when the strides do not allow it. */
static bool rows_of(const xt_tensor *t, fmat *m)
{
    int32_t last = t->ndim - 1;
    m->p = t->data;
    m->cols = t->shape[last];
    m->cs = 1;
    if (m->cols > 1 && t->strides[last] != 1) return false;
    m->rows = 1;
    m->rs = max1(m->cols);
    for (int32_t d = last - 1; d >= 0; d--) {
        if (t->shape[d] == 1) continue;
        if (m->rows == 1) m->rs = t->strides[d];
        else if (t->strides[d] != m->rs * m->rows) return false;
        m->rows *= t->shape[d];
    }
    if (m->rows == 0) m->rs = max1(m->cols);
    bool trans;
    int64_t ld;
    return blas_form(*m, &trans, &ld) && !trans;
}

/* Inner matrix k of w [g, ci, co] */
static fmat weight_of(const xt_tensor *w, int64_t k)
{
    fmat m = {(float *)w->data + k * w->strides[0], w->shape[1], w->shape[2], w->strides[1],
              w->strides[2]};
    return m;
}

static bool weight_readable(const xt_tensor *w)
{
    bool trans;
    int64_t ld;
    return blas_form(weight_of(w, 0), &trans, &ld);
}

/* ---- the row passes ---------------------------------------------------------------------- */

typedef struct glt_dims {
    int64_t n, g, co, O;
    bool shuffle, normalize, swish;
    float eps;
} glt_dims;

/* The shuffle's permutation for a group count G known at compile time, so that the compiler
 * vectorises it (vector loads along j, lane interleaving): s[j*G + k] = a[k*co + j] + b[..]
 * (b may be NULL), and its inverse a[k*co + j] = s[j*G + k]. */
static inline __attribute__((always_inline)) void interleave(float *restrict s,
                                                             const float *restrict a,
                                                             const float *restrict b,
                                                             int64_t co, const int G)
{
    if (b) {
        for (int64_t j = 0; j < co; j++)
            for (int k = 0; k < G; k++) s[j * G + k] = a[k * co + j] + b[k * co + j];
    } else {
        for (int64_t j = 0; j < co; j++)
            for (int k = 0; k < G; k++) s[j * G + k] = a[k * co + j];
    }
}

static inline __attribute__((always_inline)) void deinterleave(float *restrict a,
                                                               const float *restrict s,
                                                               int64_t co, const int G)
{
    for (int64_t j = 0; j < co; j++)
        for (int k = 0; k < G; k++) a[k * co + j] = s[j * G + k];
}

/* s [O] in output order from the group-major GEMM row a plus the bias b [O] (group-major,
 * or NULL): s[j*g + k] = a[k*co + j] + b[k*co + j], or s = a + b without the shuffle */
static void gather_row(float *restrict s, const float *restrict a, const float *restrict b,
                       const glt_dims *d)
{
    const int64_t co = d->co, g = d->g;
    if (!d->shuffle) {
        if (b) {
#pragma omp simd
            for (int64_t i = 0; i < d->O; i++) s[i] = a[i] + b[i];
        } else {
            memcpy(s, a, sizeof(float) * (size_t)d->O);
        }
        return;
    }
    switch (g) {
    case 2: interleave(s, a, b, co, 2); return;
    case 4: interleave(s, a, b, co, 4); return;
    case 8: interleave(s, a, b, co, 8); return;
    case 16: interleave(s, a, b, co, 16); return;
    default:
        for (int64_t k = 0; k < g; k++)
            for (int64_t j = 0; j < co; j++)
                s[j * g + k] = a[k * co + j] + (b ? b[k * co + j] : 0.0f);
    }
}

/* a[k*co + j] = s[j*g + k]: the inverse of gather_row's permutation */
static void scatter_row(float *restrict a, const float *restrict s, const glt_dims *d)
{
    const int64_t co = d->co, g = d->g;
    if (!d->shuffle) {
        memcpy(a, s, sizeof(float) * (size_t)d->O);
        return;
    }
    switch (g) {
    case 2: deinterleave(a, s, co, 2); return;
    case 4: deinterleave(a, s, co, 4); return;
    case 8: deinterleave(a, s, co, 8); return;
    case 16: deinterleave(a, s, co, 16); return;
    default:
        for (int64_t k = 0; k < g; k++)
            for (int64_t j = 0; j < co; j++) a[k * co + j] = s[j * g + k];
    }
}

/* mean and 1/std of v [m] (biased variance): two passes (the mean, then squared deviations
 * from it), in float with vector partial sums */
static void chunk_stats(const float *v, int64_t m, float eps, float *mean, float *rstd)
{
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < m; i++) s += v[i];
    float mu = s / (float)m, q = 0;
#pragma omp simd reduction(+ : q)
    for (int64_t i = 0; i < m; i++) q += (v[i] - mu) * (v[i] - mu);
    *mean = mu;
    *rstd = 1.0f / sqrtf(q / (float)m + eps);
}

/* One row of the forward: y [O] from the group-major GEMM row a and the bias; writes the
 * chunks' (mean, 1/std) into st [g, 2] when normalising. */
static void row_forward(const float *a, const float *bias, float *y, float *st,
                        const float *affine, const glt_dims *d)
{
    const int64_t co = d->co;
    gather_row(y, a, bias, d);
    if (d->normalize) {
        const float *gamma = affine, *beta = affine + co;   /* [co] each */
        for (int64_t c = 0; c < d->g; c++) {
            float *z = y + c * co, mean, rstd;
            chunk_stats(z, co, d->eps, &mean, &rstd);
            st[2 * c] = mean;
            st[2 * c + 1] = rstd;
#pragma omp simd
            for (int64_t i = 0; i < co; i++) z[i] = (z[i] - mean) * rstd * gamma[i] + beta[i];
        }
    }
    if (d->swish) {
#pragma omp simd
        for (int64_t i = 0; i < d->O; i++) y[i] = y[i] / (1.0f + expf(-y[i]));
    }
}

/* One row of the backward: da [O] group-major from dy [O] (output order), the saved GEMM
 * row a (without the bias) and its chunk statistics st [g, 2]; consts holds gamma, beta
 * [co] and the bias [O]. s and ds are [O] scratch; the shared affine's gradients are added
 * into pg, pb [co] (NULL: not wanted). */
static void row_backward(const float *a, const float *dy, const float *st, const float *consts,
                         float *da, float *s, float *ds, double *pg, double *pb,
                         const glt_dims *d)
{
    const int64_t O = d->O, co = d->co;
    const float *gamma = consts, *beta = consts + co;
    gather_row(s, a, consts + 2 * co, d);
    int64_t chunks = d->normalize ? d->g : 1, m = d->normalize ? co : O;
    for (int64_t c = 0; c < chunks; c++) {
        float *sc = s + c * m, *dsc = ds + c * m;
        const float *dyc = dy + c * m;
        float rstd = d->normalize ? st[2 * c + 1] : 1.0f;
        if (d->normalize) {   /* sc becomes x-hat, the chunk normalised before the affine */
            float mean = st[2 * c];
#pragma omp simd
            for (int64_t i = 0; i < m; i++) sc[i] = (sc[i] - mean) * rstd;
        }
        if (d->swish) {       /* dsc = dZ */
#pragma omp simd
            for (int64_t i = 0; i < m; i++) {
                float z = d->normalize ? sc[i] * gamma[i] + beta[i] : sc[i];
                float sig = 1.0f / (1.0f + expf(-z));
                dsc[i] = dyc[i] * sig * (1.0f + z * (1.0f - sig));
            }
        } else {
            memcpy(dsc, dyc, sizeof(float) * (size_t)m);
        }
        if (!d->normalize) continue;
        if (pg) {
#pragma omp simd
            for (int64_t i = 0; i < m; i++) {
                pg[i] += (double)dsc[i] * sc[i];
                pb[i] += dsc[i];
            }
        }
        /* dS = rstd (h - mean(h) - xhat mean(h xhat)), h = dZ gamma */
        float sh = 0, shx = 0;
#pragma omp simd reduction(+ : sh, shx)
        for (int64_t i = 0; i < m; i++) {
            float hi = dsc[i] * gamma[i];
            sh += hi;
            shx += hi * sc[i];
        }
        float mh = sh / (float)m, mhx = shx / (float)m;
#pragma omp simd
        for (int64_t i = 0; i < m; i++) dsc[i] = rstd * (dsc[i] * gamma[i] - mh - sc[i] * mhx);
    }
    scatter_row(da, ds, d);
}

/* ---- the drivers ---------------------------------------------------------------------------
 * Work is split into tiles of rows inside one parallel region, with BLAS called
 * single-threaded from each thread (OpenBLAS's OpenMP build does so inside a parallel
 * region): one fork and join per op instead of a threaded BLAS call per group, and a tile's
 * GEMM output is still in a near cache when the row pass reads it. Tiles are at most
 * TILE_ROWS rows: every GEMM call packs its weight block again, which costs about 1/rows of
 * the call's work. */
enum { TILE_ROWS = 512, COL_MIN = 16 };

typedef struct glt_plan {
    glt_dims d;
    fmat x, p;                  /* x rows [n, dx], prefix rows [n, dp] (p.p NULL: none) */
    const xt_tensor *w;         /* [g, cp + cx, co], BLAS-readable */
    int64_t cx, cp;
} glt_plan;

static bool run_parallel(const glt_plan *pl)
{
    int64_t ci = pl->cx + pl->cp;
    return pl->d.n >= 32 && pl->d.n * ci * pl->d.O > 16 * XT_PARALLEL_GRAIN;
}

/* Rows per tile: at most TILE_ROWS, and at least one tile per thread when parallel. */
static int64_t tile_rows(const glt_plan *pl, bool parallel)
{
    int64_t nt = parallel ? omp_get_max_threads() : 1;
    int64_t rows = (pl->d.n + nt - 1) / nt;
    rows = (rows + 15) / 16 * 16;
    return rows < TILE_ROWS ? (rows > 0 ? rows : 1) : TILE_ROWS;
}

/* direct: y [n, O] = bias + the group GEMMs. Else A [n, O] = the group GEMMs, then
 * y = the row pass of A + bias, with stats; consts is gamma, beta [co] (when normalising). */
static void forward_compute(const glt_plan *pl, const float *bias, float *A, float *y,
                            float *stats, const float *consts, bool direct)
{
    const glt_dims *d = &pl->d;
    bool par = run_parallel(pl);
    int64_t rows = tile_rows(pl, par), tiles = (d->n + rows - 1) / rows;
    float *target = direct ? y : A;
#pragma omp parallel for schedule(static) if (par)
    for (int64_t tile = 0; tile < tiles; tile++) {
        int64_t r0 = tile * rows, nr = d->n - r0 < rows ? d->n - r0 : rows;
        float *tt = target + r0 * d->O;
        bool fill = direct && bias;
        if (fill)
            for (int64_t r = 0; r < nr; r++) memcpy(tt + r * d->O, bias, sizeof(float) * (size_t)d->O);
        for (int64_t k = 0; k < d->g; k++) {
            fmat wk = weight_of(pl->w, k);
            float beta = fill ? 1.0f : 0.0f;
            if (pl->p.p) {
                mm(sub(pl->p, r0, nr, k * pl->cp, pl->cp), sub(wk, 0, pl->cp, 0, d->co), beta,
                   tt + k * d->co, d->O);
                beta = 1.0f;
            }
            mm(sub(pl->x, r0, nr, k * pl->cx, pl->cx), sub(wk, pl->cp, pl->cx, 0, d->co), beta,
               tt + k * d->co, d->O);
        }
        if (!direct)
            for (int64_t r = r0; r < r0 + nr; r++)
                row_forward(A + r * d->O, bias, y + r * d->O, stats ? stats + r * d->g * 2 : NULL,
                            consts, d);
    }
}

typedef struct glt_grads {
    float *dx, *dp, *dw, *db;   /* [n, dx], [n, dp], [g, ci, co], [g, co]; NULL: not wanted */
    double *dgamma, *dbeta;     /* [co] */
} glt_grads;

/* Phase 1 per row tile: dA (from A when it was kept, the shuffle undone from dy otherwise;
 * dy itself when dA_buf is NULL), then dx and dprefix rows. Phase 2 per (group, column
 * block): dW and db columns, summed over every row. */
static xt_status backward_compute(const glt_plan *pl, const float *A, const float *dy,
                                  const float *stats, const float *consts, float *dA_buf,
                                  const glt_grads *gr)
{
    const glt_dims *d = &pl->d;
    const int64_t O = d->O, co = d->co, ci = pl->cp + pl->cx;
    bool par = run_parallel(pl);
    int nt = par ? omp_get_max_threads() : 1;
    bool affine_grads = d->normalize && (gr->dgamma || gr->dbeta);
    float *scratch = A ? malloc(sizeof(float) * (size_t)(nt * 2 * O)) : NULL;
    double *part = affine_grads ? calloc((size_t)(nt * 2 * co), sizeof(double)) : NULL;
    if ((A && !scratch) || (affine_grads && !part)) {
        free(scratch);
        free(part);
        return xt_fail(XT_ERR_OOM, "%s: out of memory in the backward", OP);
    }
    const float *dA = dA_buf ? dA_buf : dy;
    fmat mdA = {(float *)dA, d->n, O, O, 1};
    int64_t rows = tile_rows(pl, par), tiles = (d->n + rows - 1) / rows;
    /* phase 2 items: whole groups when they share out evenly among the threads, else
     * column blocks of every group */
    int64_t cb = d->g % nt == 0 ? co : (co + nt - 1) / nt;
    if (cb < COL_MIN) cb = COL_MIN;
    int64_t col_blocks = (co + cb - 1) / cb;
#pragma omp parallel num_threads(nt) if (par)
    {
        int tid = omp_get_thread_num();
        float *s = scratch ? scratch + (int64_t)tid * 2 * O : NULL, *ds = s ? s + O : NULL;
        double *pg = part ? part + (int64_t)tid * 2 * co : NULL, *pb = pg ? pg + co : NULL;
#pragma omp for schedule(static)
        for (int64_t tile = 0; tile < tiles; tile++) {
            int64_t r0 = tile * rows, nr = d->n - r0 < rows ? d->n - r0 : rows;
            if (A)
                for (int64_t r = r0; r < r0 + nr; r++)
                    row_backward(A + r * O, dy + r * O, stats ? stats + r * d->g * 2 : NULL,
                                 consts, dA_buf + r * O, s, ds, pg, pb, d);
            else if (dA_buf)
                for (int64_t r = r0; r < r0 + nr; r++) scatter_row(dA_buf + r * O, dy + r * O, d);
            for (int64_t k = 0; k < d->g; k++) {
                fmat dak = sub(mdA, r0, nr, k * co, co), wk = weight_of(pl->w, k);
                if (gr->dx)    /* dx_k = dA_k Wx_k^T */
                    mm(dak, tr(sub(wk, pl->cp, pl->cx, 0, co)), 0.0f,
                       gr->dx + r0 * pl->x.cols + k * pl->cx, pl->x.cols);
                if (gr->dp)    /* dprefix_k = dA_k Wp_k^T */
                    mm(dak, tr(sub(wk, 0, pl->cp, 0, co)), 0.0f,
                       gr->dp + r0 * pl->p.cols + k * pl->cp, pl->p.cols);
            }
        }
        if (gr->dw || gr->db) {
#pragma omp for schedule(static)
            for (int64_t item = 0; item < d->g * col_blocks; item++) {
                int64_t k = item / col_blocks, c0 = (item % col_blocks) * cb;
                int64_t nc = co - c0 < cb ? co - c0 : cb;
                fmat dak = sub(mdA, 0, d->n, k * co + c0, nc);
                if (gr->dw) {   /* dW_k[:, c0..] = u_k^T dA_k[:, c0..] */
                    float *dwk = gr->dw + k * ci * co + c0;
                    if (pl->p.p) mm(tr(sub(pl->p, 0, d->n, k * pl->cp, pl->cp)), dak, 0.0f, dwk, co);
                    mm(tr(sub(pl->x, 0, d->n, k * pl->cx, pl->cx)), dak, 0.0f, dwk + pl->cp * co, co);
                }
                if (gr->db) {   /* db_k[c0..] = column sums of dA_k */
                    double acc[COL_MIN * 4];
                    for (int64_t j0 = 0; j0 < nc; j0 += COL_MIN * 4) {
                        int64_t nj = nc - j0 < COL_MIN * 4 ? nc - j0 : COL_MIN * 4;
                        memset(acc, 0, sizeof acc);
                        for (int64_t r = 0; r < d->n; r++) {
                            const float *row = dA + r * O + k * co + c0 + j0;
#pragma omp simd
                            for (int64_t j = 0; j < nj; j++) acc[j] += row[j];
                        }
                        for (int64_t j = 0; j < nj; j++) gr->db[k * co + c0 + j0 + j] = (float)acc[j];
                    }
                }
            }
        }
    }
    if (part)
        for (int64_t i = 0; i < co; i++) {
            double sg = 0, sb = 0;
            for (int tid = 0; tid < nt; tid++) {
                sg += part[(int64_t)tid * 2 * co + i];
                sb += part[(int64_t)tid * 2 * co + co + i];
            }
            if (gr->dgamma) gr->dgamma[i] = sg;
            if (gr->dbeta) gr->dbeta[i] = sb;
        }
    free(scratch);
    free(part);
    return XT_OK;
}

/* ---- backward ---------------------------------------------------------------------------
 * inputs: 0 x, 1 prefix, 2 w, 3 b, 4 ln_weight, 5 ln_bias.
 * saved (slots in iargs[0..5], -1 when absent): x rows, prefix rows, w (BLAS-readable),
 * then, when a norm or swish follows the GEMMs (their derivatives need the values): A
 * [n, O] (the GEMMs without the bias), consts [2*co + O] (a snapshot of gamma, beta and the
 * bias) and, when normalising, stats [n, g, 2]. iargs[6..8]: shuffle, normalize, swish;
 * fargs[0]: eps. */
enum { SAVE_X, SAVE_PREFIX, SAVE_W, SAVE_A, SAVE_STATS, SAVE_CONSTS, SAVE_COUNT };

static xt_tensor *saved_or_null(xt_node *node, int slot, bool *failed)
{
    int64_t i = node->iargs[slot];
    if (i < 0) return NULL;
    xt_tensor *t = xt_node_saved(node, (int32_t)i);
    if (!t) *failed = true;
    return t;
}

static float *data_or_null(xt_tensor *t) { return t ? (float *)t->data : NULL; }

/* The plan from x and prefix as BLAS reads them and the readable w. */
static void make_plan(glt_plan *pl, xt_tensor *x, xt_tensor *prefix, const xt_tensor *w)
{
    memset(pl, 0, sizeof *pl);
    pl->d.g = w->shape[0];
    pl->d.co = w->shape[2];
    pl->d.O = pl->d.g * pl->d.co;
    rows_of(x, &pl->x);
    if (prefix) rows_of(prefix, &pl->p);
    pl->d.n = pl->x.rows;
    pl->w = w;
    pl->cx = pl->x.cols / pl->d.g;
    pl->cp = prefix ? pl->p.cols / pl->d.g : 0;
}

static xt_status group_linear_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    bool failed = false;
    xt_tensor *x = saved_or_null(node, SAVE_X, &failed);
    xt_tensor *prefix = saved_or_null(node, SAVE_PREFIX, &failed);
    xt_tensor *w = saved_or_null(node, SAVE_W, &failed);
    xt_tensor *A = saved_or_null(node, SAVE_A, &failed);
    xt_tensor *stats = saved_or_null(node, SAVE_STATS, &failed);
    xt_tensor *consts = saved_or_null(node, SAVE_CONSTS, &failed);
    if (failed) return xt_last_status();
    glt_plan pl;
    make_plan(&pl, x, prefix, w);
    pl.d.shuffle = node->iargs[SAVE_COUNT] != 0;
    pl.d.normalize = node->iargs[SAVE_COUNT + 1] != 0;
    pl.d.swish = node->iargs[SAVE_COUNT + 2] != 0;
    pl.d.eps = (float)node->fargs[0];
    const glt_dims *d = &pl.d;

    xt_tensor *dy = xt_contiguous(dout);
    if (!dy) return xt_last_status();
    /* the outputs, allocated up front; the engine takes them on success */
    xt_tensor *outs[6] = {0};
    int64_t ashape[2] = {d->n, d->O}, bshape[2] = {d->g, d->co};
    bool direct = !d->shuffle && !d->normalize && !d->swish;   /* dA is dy */
    xt_tensor *dA = direct ? NULL : xt_empty(2, ashape, XT_FLOAT32);
    double *dgb = d->normalize ? calloc((size_t)(2 * d->co), sizeof(double)) : NULL;
    bool ok = (direct || dA) && (!d->normalize || dgb);
    for (int i = 0; ok && i < 4; i++) {
        if (!xt_node_needs(node, i) || (i == 1 && !prefix)) continue;
        const xt_edge *e = &node->inputs[i];
        outs[i] = i == 3 ? xt_empty(2, bshape, XT_FLOAT32) : xt_empty(e->ndim, e->shape, XT_FLOAT32);
        ok = outs[i] != NULL;
    }
    for (int i = 4; ok && i < 6; i++) {
        if (!xt_node_needs(node, i)) continue;
        outs[i] = xt_empty(1, &d->co, XT_FLOAT32);
        ok = outs[i] != NULL;
    }
    xt_status st = ok ? XT_OK
                      : (d->normalize && !dgb ? xt_fail(XT_ERR_OOM, "%s: out of memory", OP)
                                              : xt_last_status());
    if (st == XT_OK) {
        glt_grads gr = {data_or_null(outs[0]), data_or_null(outs[1]), data_or_null(outs[2]),
                        data_or_null(outs[3]), outs[4] ? dgb : NULL, outs[5] ? dgb + d->co : NULL};
        st = backward_compute(&pl, data_or_null(A), dy->data, data_or_null(stats),
                              data_or_null(consts), data_or_null(dA), &gr);
    }
    for (int i = 4; st == XT_OK && i < 6; i++)
        if (outs[i])
            for (int64_t j = 0; j < d->co; j++)
                ((float *)outs[i]->data)[j] = (float)dgb[(i - 4) * d->co + j];
    if (st == XT_OK)
        for (int i = 0; i < 6; i++) dinputs[i] = outs[i];
    else
        for (int i = 0; i < 6; i++) xt_tensor_release(outs[i]);
    free(dgb);
    xt_tensor_release(dA);
    xt_tensor_release(dy);
    return st;
}

/* ---- forward ------------------------------------------------------------------------------ */

static xt_status check_float(const xt_tensor *t, const char *name)
{
    if (t->dtype != XT_FLOAT32)
        return xt_fail(XT_ERR_DTYPE, "%s: expected float32 %s, got %s", OP, name,
                       xt_dtype_name(t->dtype));
    return XT_OK;
}

static xt_status check_shape(const xt_tensor *t, int32_t ndim, const int64_t *shape,
                             const char *name, const char *what)
{
    if (t->ndim == ndim && memcmp(t->shape, shape, sizeof(int64_t) * (size_t)ndim) == 0)
        return XT_OK;
    char a[XT_SHAPE_STR], b[XT_SHAPE_STR];
    return xt_fail(XT_ERR_SHAPE, "%s: %s has shape %s, expected %s (%s)", OP, name,
                   xt_shape_str(a, t->ndim, t->shape), xt_shape_str(b, ndim, shape), what);
}

static xt_status check_args(xt_tensor *x, xt_tensor *prefix, xt_tensor *w, xt_tensor *b,
                            xt_tensor *ln_weight, xt_tensor *ln_bias, double eps)
{
    char a[XT_SHAPE_STR], c[XT_SHAPE_STR];
    if (!x || !w) return xt_fail(XT_ERR_ARG, "%s: %s is NULL", OP, x ? "w" : "x");
    xt_tensor *all[6] = {x, prefix, w, b, ln_weight, ln_bias};
    const char *names[6] = {"x", "prefix", "w", "b", "ln_weight", "ln_bias"};
    for (int i = 0; i < 6; i++)
        if (all[i] && check_float(all[i], names[i])) return xt_last_status();
    if (w->ndim != 3 || w->shape[0] < 1 || w->shape[1] < 1 || w->shape[2] < 1)
        return xt_fail(XT_ERR_SHAPE, "%s: w must be [groups, in/groups, out/groups] with "
                       "positive sizes, got shape %s", OP, xt_shape_str(a, w->ndim, w->shape));
    int64_t g = w->shape[0], ci = w->shape[1], co = w->shape[2];
    if (x->ndim < 1)
        return xt_fail(XT_ERR_SHAPE, "%s: x must have at least 1 dim [..., in], got a scalar",
                       OP);
    int64_t dx = x->shape[x->ndim - 1], dp = 0;
    if (prefix) {
        if (prefix->ndim != x->ndim ||
            memcmp(prefix->shape, x->shape, sizeof(int64_t) * (size_t)(x->ndim - 1)) != 0)
            return xt_fail(XT_ERR_SHAPE, "%s: prefix of shape %s must have the leading dims "
                           "of x, shape %s", OP, xt_shape_str(a, prefix->ndim, prefix->shape),
                           xt_shape_str(c, x->ndim, x->shape));
        dp = prefix->shape[prefix->ndim - 1];
        if (dp % g != 0)
            return xt_fail(XT_ERR_SHAPE, "%s: %lld groups do not divide the prefix's %lld "
                           "features", OP, (long long)g, (long long)dp);
    }
    if (dx % g != 0)
        return xt_fail(XT_ERR_SHAPE, "%s: %lld groups (w has shape %s) do not divide x's %lld "
                       "input features (x has shape %s)", OP, (long long)g,
                       xt_shape_str(a, 3, w->shape), (long long)dx,
                       xt_shape_str(c, x->ndim, x->shape));
    if ((dx + dp) / g != ci) {
        if (prefix)
            return xt_fail(XT_ERR_SHAPE, "%s: w has shape %s, so a group reads %lld features, "
                           "but the prefix (%lld) and x (%lld) give %lld per group", OP,
                           xt_shape_str(a, 3, w->shape), (long long)ci, (long long)dp,
                           (long long)dx, (long long)((dx + dp) / g));
        return xt_fail(XT_ERR_SHAPE, "%s: x has %lld input features (shape %s), but w of shape "
                       "%s expects %lld groups x %lld = %lld", OP, (long long)dx,
                       xt_shape_str(c, x->ndim, x->shape), xt_shape_str(a, 3, w->shape),
                       (long long)g, (long long)ci, (long long)(g * ci));
    }
    int64_t bshape[2] = {g, co};
    if (b && check_shape(b, 2, bshape, "b", "[groups, out/groups]")) return xt_last_status();
    if (ln_weight && check_shape(ln_weight, 1, &co, "ln_weight", "[out/groups], shared by the "
                                 "groups")) return xt_last_status();
    if (ln_bias && check_shape(ln_bias, 1, &co, "ln_bias", "[out/groups], shared by the groups"))
        return xt_last_status();
    if (!(eps >= 0)) return xt_fail(XT_ERR_ARG, "%s: eps must be >= 0, got %g", OP, eps);
    return XT_OK;
}

static xt_status check_norm_args(int32_t normalize, xt_tensor *ln_weight, xt_tensor *ln_bias)
{
    if (!normalize && (ln_weight || ln_bias))
        return xt_fail(XT_ERR_ARG, "%s: ln_weight/ln_bias given without normalize", OP);
    return XT_OK;
}

/* t itself (+1) when BLAS can read it as rows, else a contiguous copy outside the graph */
static xt_tensor *readable_rows(xt_tensor *t)
{
    fmat m;
    if (rows_of(t, &m)) {
        xt_tensor_retain(t);
        return t;
    }
    int32_t prev = xt_set_grad_enabled(0);
    xt_tensor *c = xt_clone(t);
    xt_set_grad_enabled(prev);
    return c;
}

static xt_tensor *dense(xt_tensor *t)
{
    int32_t prev = xt_set_grad_enabled(0);
    xt_tensor *c = xt_contiguous(t);
    xt_set_grad_enabled(prev);
    return c;
}

/* Record the node: saves what group_linear_backward reads. */
static xt_status record(xt_tensor *out, xt_tensor *const *inputs, xt_tensor *const *saved,
                        const glt_dims *d)
{
    xt_node *node = xt_node_new(OP, group_linear_backward, 6, inputs);
    if (!node) return xt_last_status();
    for (int s = 0; s < SAVE_COUNT; s++) {
        node->iargs[s] = -1;
        if (!saved[s]) continue;
        node->iargs[s] = node->n_saved;
        if (xt_node_save(node, saved[s])) {
            xt_node_release(node);
            return xt_last_status();
        }
    }
    node->iargs[SAVE_COUNT] = d->shuffle;
    node->iargs[SAVE_COUNT + 1] = d->normalize;
    node->iargs[SAVE_COUNT + 2] = d->swish;
    node->fargs[0] = d->eps;
    xt_node_attach(node, out);
    return XT_OK;
}

xt_tensor *xt_group_linear_ex(xt_tensor *x, xt_tensor *prefix, xt_tensor *w, xt_tensor *b,
                              int32_t shuffle, int32_t normalize, xt_tensor *ln_weight,
                              xt_tensor *ln_bias, double eps, int32_t swish)
{
    if (check_args(x, prefix, w, b, ln_weight, ln_bias, eps) ||
        check_norm_args(normalize, ln_weight, ln_bias))
        return NULL;
    xt_tensor *xr = readable_rows(x), *pr = prefix ? readable_rows(prefix) : NULL;
    xt_tensor *wr = NULL, *br = NULL, *A = NULL, *stats = NULL, *consts = NULL, *out = NULL;
    if (weight_readable(w)) xt_tensor_retain(wr = w);
    else wr = dense(w);
    if (b) br = dense(b);
    bool ok = xr && (pr || !prefix) && wr && (br || !b);
    glt_plan pl = {0};
    if (ok) make_plan(&pl, xr, pr, wr);
    glt_dims *d = &pl.d;
    d->shuffle = shuffle != 0 && d->g > 1;
    d->normalize = normalize != 0;
    d->swish = swish != 0;
    d->eps = (float)eps;
    bool direct = !d->shuffle && !d->normalize && !d->swish;   /* the GEMMs write y */
    bool keep = d->normalize || d->swish;   /* the backward needs A and the constants */
    int64_t yshape[XT_MAX_DIMS], ashape[2] = {d->n, d->O}, sshape[3] = {d->n, d->g, 2};
    int64_t ncs = 2 * d->co + d->O;
    memcpy(yshape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    yshape[x->ndim - 1] = d->O;
    if (ok) out = xt_empty(x->ndim, yshape, XT_FLOAT32);
    if (ok && out && !direct) A = xt_empty(2, ashape, XT_FLOAT32);
    if (ok && d->normalize) stats = xt_empty(3, sshape, XT_FLOAT32);
    if (ok && keep) consts = xt_empty(1, &ncs, XT_FLOAT32);
    if (consts) {   /* a snapshot of gamma, beta [co] (1 and 0 when absent) and the bias [O] */
        float *f = consts->data;
        for (int64_t j = 0; j < ncs; j++) f[j] = j < d->co ? 1.0f : 0.0f;
        if (br) memcpy(f + 2 * d->co, br->data, sizeof(float) * (size_t)d->O);
        xt_tensor *parts[2] = {ln_weight, ln_bias};
        for (int i = 0; i < 2; i++) {
            if (!parts[i]) continue;
            xt_tensor *c = dense(parts[i]);
            if (!c) {
                ok = false;
                break;
            }
            memcpy(f + i * d->co, c->data, sizeof(float) * (size_t)d->co);
            xt_tensor_release(c);
        }
    }
    ok = ok && out && (direct || A) && (!d->normalize || stats) && (!keep || consts);
    xt_status st = ok ? XT_OK : xt_last_status();
    if (st == XT_OK)
        forward_compute(&pl, data_or_null(br), data_or_null(A), out->data, data_or_null(stats),
                        data_or_null(consts), direct);
    xt_tensor *inputs[6] = {x, prefix, w, b, ln_weight, ln_bias};
    if (st == XT_OK && xt_needs_grad(6, inputs)) {
        xt_tensor *saved[SAVE_COUNT] = {xr, pr, wr, keep ? A : NULL, stats, consts};
        st = record(out, inputs, saved, d);
    }
    xt_tensor *temps[7] = {xr, pr, wr, br, A, stats, consts};
    for (int i = 0; i < 7; i++) xt_tensor_release(temps[i]);
    if (st != XT_OK) {
        xt_tensor_release(out);
        return NULL;
    }
    return out;
}

xt_tensor *xt_group_linear(xt_tensor *x, xt_tensor *w, xt_tensor *b, int32_t shuffle)
{
    return xt_group_linear_ex(x, NULL, w, b, shuffle, 0, NULL, NULL, 0.0, 0);
}
