/*
 * group_linear.c: the group linear transformation (GLT) of DeLighT / DExTra (Mehta et al.
 * 2021; research/delight.md § 1 and § 6), forward and backward side by side.
 *
 *   x [..., dx], prefix [..., dp] or none (x's leading dims), w [g, ci, co] with
 *   ci = (dp + dx) / g, b [g, co] or none  ->  y [..., O], O = g * co; n rows (tokens).
 *
 *   u_k       = [prefix[:, k*dp/g ..+dp/g] | x[:, k*dx/g ..+dx/g]]    group k's input
 *   A[t,k,j]  = b[k,j] + sum_a u_k[t,a] w[k,a,j]
 *   S[t,p]    = A[t,k,j] at p = j*g + k (shuffle) or p = k*co + j (no shuffle)
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
 * Forward: the GEMMs write A group-major into a [n, O] buffer (bias pre-filled, beta = 1);
 * one pass per row gathers it in shuffle order, normalises, activates and writes y. A
 * (with the chunks' mean and 1/std) is what the backward keeps; the normalised values are
 * recomputed from it. With nothing after the GEMMs and no shuffle they write y directly.
 *
 * Backward (dy [n, O] in output order): one pass per row recomputes Z, takes swish's and
 * the chunk LN's derivatives (the shared affine's gradients summed over rows and chunks),
 * and writes dA unshuffled, group-major; then db = column sums of dA, and per group
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

/* s [O] in output order from the group-major row a: s[j*g + k] = a[k*co + j] */
static void gather_row(float *s, const float *a, const glt_dims *d)
{
    if (!d->shuffle) {
        memcpy(s, a, sizeof(float) * (size_t)d->O);
        return;
    }
    for (int64_t k = 0; k < d->g; k++) {
        const float *ak = a + k * d->co;
        for (int64_t j = 0; j < d->co; j++) s[j * d->g + k] = ak[j];
    }
}

/* a[k*co + j] = s[j*g + k]: the inverse of gather_row */
static void scatter_row(float *a, const float *s, const glt_dims *d)
{
    if (!d->shuffle) {
        memcpy(a, s, sizeof(float) * (size_t)d->O);
        return;
    }
    for (int64_t k = 0; k < d->g; k++) {
        float *ak = a + k * d->co;
        for (int64_t j = 0; j < d->co; j++) ak[j] = s[j * d->g + k];
    }
}

/* mean and 1/std of v [m] (biased variance), two passes in double */
static void chunk_stats(const float *v, int64_t m, float eps, float *mean, float *rstd)
{
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < m; i++) s += v[i];
    double mu = s / (double)m, q = 0;
#pragma omp simd reduction(+ : q)
    for (int64_t i = 0; i < m; i++) q += ((double)v[i] - mu) * ((double)v[i] - mu);
    *mean = (float)mu;
    *rstd = (float)(1.0 / sqrt(q / (double)m + (double)eps));
}

/* y [n, O] from A [n, O] group-major; stats [n, g, 2] (mean, 1/std) when normalising;
 * affine [2, co] (gamma, beta). */
static void rows_forward(const float *A, float *y, float *stats, const float *affine,
                         const glt_dims *d)
{
    const int64_t O = d->O, co = d->co;
    const float *gamma = affine, *beta = affine ? affine + co : NULL;
#pragma omp parallel for schedule(static) if (d->n * O > XT_PARALLEL_GRAIN)
    for (int64_t t = 0; t < d->n; t++) {
        float *yt = y + t * O;
        gather_row(yt, A + t * O, d);
        if (d->normalize) {
            for (int64_t c = 0; c < d->g; c++) {
                float *z = yt + c * co, mean, rstd;
                chunk_stats(z, co, d->eps, &mean, &rstd);
                stats[(t * d->g + c) * 2] = mean;
                stats[(t * d->g + c) * 2 + 1] = rstd;
#pragma omp simd
                for (int64_t i = 0; i < co; i++) z[i] = (z[i] - mean) * rstd * gamma[i] + beta[i];
            }
        }
        if (d->swish) {
#pragma omp simd
            for (int64_t i = 0; i < O; i++) yt[i] = yt[i] / (1.0f + expf(-yt[i]));
        }
    }
}

/* dA [n, O] group-major from dy [n, O] (output order) and the saved A and stats; the
 * shared affine's gradients summed into dgamma, dbeta [co] (double) when they are wanted. */
static xt_status rows_backward(const float *A, const float *dy, const float *stats,
                               const float *affine, float *dA, double *dgamma, double *dbeta,
                               const glt_dims *d)
{
    const int64_t O = d->O, co = d->co;
    const float *gamma = affine, *beta = affine ? affine + co : NULL;
    int nt = d->n * O > XT_PARALLEL_GRAIN ? omp_get_max_threads() : 1;
    bool affine_grads = d->normalize && (dgamma || dbeta);
    /* per thread: the row in output order (s, then ds) and the affine gradient partials */
    float *rows = malloc(sizeof(float) * (size_t)(nt * 2 * O));
    double *part = affine_grads ? calloc((size_t)(nt * 2 * co), sizeof(double)) : NULL;
    if (!rows || (affine_grads && !part)) {
        free(rows);
        free(part);
        return xt_fail(XT_ERR_OOM, "%s: out of memory in the backward", OP);
    }
#pragma omp parallel num_threads(nt)
    {
        int tid = omp_get_thread_num();
        float *s = rows + (int64_t)tid * 2 * O, *ds = s + O;
        double *pg = part ? part + (int64_t)tid * 2 * co : NULL, *pb = pg ? pg + co : NULL;
#pragma omp for schedule(static)
        for (int64_t t = 0; t < d->n; t++) {
            const float *dyt = dy + t * O;
            gather_row(s, A + t * O, d);
            for (int64_t c = 0; c < (d->normalize ? d->g : 1); c++) {
                int64_t m = d->normalize ? co : O;
                float *sc = s + c * m, *dsc = ds + c * m;
                const float *dyc = dyt + c * m;
                float mean = 0, rstd = 1;
                if (d->normalize) {
                    mean = stats[(t * d->g + c) * 2];
                    rstd = stats[(t * d->g + c) * 2 + 1];
                }
                /* sc becomes x-hat (normalised, before the affine), dsc dZ */
                if (d->normalize) {
#pragma omp simd
                    for (int64_t i = 0; i < m; i++) sc[i] = (sc[i] - mean) * rstd;
                }
                if (d->swish) {
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
                /* dS = rstd (g - mean(g) - xhat mean(g xhat)), g = dZ gamma */
                double sg = 0, sgx = 0;
#pragma omp simd reduction(+ : sg, sgx)
                for (int64_t i = 0; i < m; i++) {
                    float gi = dsc[i] * gamma[i];
                    sg += gi;
                    sgx += (double)gi * sc[i];
                }
                float mg = (float)(sg / (double)m), mgx = (float)(sgx / (double)m);
#pragma omp simd
                for (int64_t i = 0; i < m; i++)
                    dsc[i] = rstd * (dsc[i] * gamma[i] - mg - sc[i] * mgx);
            }
            scatter_row(dA + t * O, ds, d);
        }
    }
    if (part) {
        for (int64_t i = 0; i < co; i++) {
            double sgm = 0, sbt = 0;
            for (int tid = 0; tid < nt; tid++) {
                sgm += part[(int64_t)tid * 2 * co + i];
                sbt += part[(int64_t)tid * 2 * co + co + i];
            }
            if (dgamma) dgamma[i] = sgm;
            if (dbeta) dbeta[i] = sbt;
        }
    }
    free(rows);
    free(part);
    return XT_OK;
}

/* out[j] = sum over the n rows of a [n, m] (row-major), in double */
enum { COL_BLOCK = 64 };
static void column_sums(const float *a, int64_t n, int64_t m, float *out)
{
    int64_t blocks = (m + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for if (n * m > XT_PARALLEL_GRAIN && blocks > 1)
    for (int64_t blk = 0; blk < blocks; blk++) {
        int64_t c0 = blk * COL_BLOCK, nc = m - c0 < COL_BLOCK ? m - c0 : COL_BLOCK;
        double acc[COL_BLOCK] = {0};
        for (int64_t r = 0; r < n; r++) {
            const float *row = a + r * m + c0;
#pragma omp simd
            for (int64_t j = 0; j < nc; j++) acc[j] += row[j];
        }
        for (int64_t j = 0; j < nc; j++) out[c0 + j] = (float)acc[j];
    }
}

/* ---- backward ---------------------------------------------------------------------------
 * inputs: 0 x, 1 prefix, 2 w, 3 b, 4 ln_weight, 5 ln_bias.
 * saved (slots in iargs[0..4], -1 when absent): x rows, prefix rows, w (BLAS-readable),
 * A [n, O] (when anything follows the GEMMs), stats [n, g, 2] and affine [2, co] (when
 * normalising). iargs[5..7]: shuffle, normalize, swish; fargs[0]: eps. */
enum { SAVE_X, SAVE_PREFIX, SAVE_W, SAVE_A, SAVE_STATS, SAVE_AFFINE, SAVE_COUNT };

static xt_tensor *saved_or_null(xt_node *node, int slot, bool *failed)
{
    int64_t i = node->iargs[slot];
    if (i < 0) return NULL;
    xt_tensor *t = xt_node_saved(node, (int32_t)i);
    if (!t) *failed = true;
    return t;
}

static xt_status group_linear_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    bool failed = false;
    xt_tensor *x = saved_or_null(node, SAVE_X, &failed);
    xt_tensor *prefix = saved_or_null(node, SAVE_PREFIX, &failed);
    xt_tensor *w = saved_or_null(node, SAVE_W, &failed);
    xt_tensor *A = saved_or_null(node, SAVE_A, &failed);
    xt_tensor *stats = saved_or_null(node, SAVE_STATS, &failed);
    xt_tensor *affine = saved_or_null(node, SAVE_AFFINE, &failed);
    if (failed) return xt_last_status();
    glt_dims d = {0};
    d.g = w->shape[0];
    d.co = w->shape[2];
    d.O = d.g * d.co;
    d.shuffle = node->iargs[SAVE_COUNT] != 0;
    d.normalize = node->iargs[SAVE_COUNT + 1] != 0;
    d.swish = node->iargs[SAVE_COUNT + 2] != 0;
    d.eps = (float)node->fargs[0];
    fmat mx, mp = {0};
    rows_of(x, &mx);
    if (prefix) rows_of(prefix, &mp);
    d.n = mx.rows;
    int64_t cx = mx.cols / d.g, cp = prefix ? mp.cols / d.g : 0;

    xt_tensor *dy = xt_contiguous(dout);
    if (!dy) return xt_last_status();
    bool need_gamma = xt_node_needs(node, 4), need_beta = xt_node_needs(node, 5);
    xt_status st = XT_OK;
    /* dA [n, O] group-major: dy itself when nothing follows the GEMMs */
    xt_tensor *dA_t = NULL;
    const float *dA = dy->data;
    double *dgb = NULL;
    if (A) {
        int64_t shape[2] = {d.n, d.O};
        dA_t = xt_empty(2, shape, XT_FLOAT32);
        dgb = d.normalize ? calloc((size_t)(2 * d.co), sizeof(double)) : NULL;
        if (!dA_t || (d.normalize && !dgb)) {
            st = dA_t ? xt_fail(XT_ERR_OOM, "%s: out of memory in the backward", OP)
                      : xt_last_status();
        } else {
            st = rows_backward(A->data, dy->data, stats ? stats->data : NULL,
                               affine ? affine->data : NULL, dA_t->data,
                               need_gamma ? dgb : NULL, need_beta ? dgb + d.co : NULL, &d);
            dA = dA_t->data;
        }
    }
    fmat mdA = {(float *)dA, d.n, d.O, d.O, 1};
    if (st == XT_OK && xt_node_needs(node, 0)) {   /* dx_k [n, cx] = dA_k Wx_k^T */
        const xt_edge *e = &node->inputs[0];
        xt_tensor *dx = xt_empty(e->ndim, e->shape, XT_FLOAT32);
        if (!dx) st = xt_last_status();
        else {
            for (int64_t k = 0; k < d.g; k++)
                mm(sub(mdA, 0, d.n, k * d.co, d.co), tr(sub(weight_of(w, k), cp, cx, 0, d.co)),
                   0.0f, (float *)dx->data + k * cx, mx.cols);
            dinputs[0] = dx;
        }
    }
    if (st == XT_OK && prefix && xt_node_needs(node, 1)) {   /* dprefix_k = dA_k Wp_k^T */
        const xt_edge *e = &node->inputs[1];
        xt_tensor *dp = xt_empty(e->ndim, e->shape, XT_FLOAT32);
        if (!dp) st = xt_last_status();
        else {
            for (int64_t k = 0; k < d.g; k++)
                mm(sub(mdA, 0, d.n, k * d.co, d.co), tr(sub(weight_of(w, k), 0, cp, 0, d.co)),
                   0.0f, (float *)dp->data + k * cp, mp.cols);
            dinputs[1] = dp;
        }
    }
    if (st == XT_OK && xt_node_needs(node, 2)) {   /* dW_k [ci, co] = u_k^T dA_k */
        xt_tensor *dw = xt_empty(3, w->shape, XT_FLOAT32);
        if (!dw) st = xt_last_status();
        else {
            int64_t ci = cp + cx;
            for (int64_t k = 0; k < d.g; k++) {
                float *dwk = (float *)dw->data + k * ci * d.co;
                fmat dak = sub(mdA, 0, d.n, k * d.co, d.co);
                if (prefix) mm(tr(sub(mp, 0, d.n, k * cp, cp)), dak, 0.0f, dwk, d.co);
                mm(tr(sub(mx, 0, d.n, k * cx, cx)), dak, 0.0f, dwk + cp * d.co, d.co);
            }
            dinputs[2] = dw;
        }
    }
    if (st == XT_OK && xt_node_needs(node, 3)) {   /* db [g, co] = column sums of dA */
        int64_t shape[2] = {d.g, d.co};
        xt_tensor *db = xt_empty(2, shape, XT_FLOAT32);
        if (!db) st = xt_last_status();
        else {
            column_sums(dA, d.n, d.O, db->data);
            dinputs[3] = db;
        }
    }
    for (int i = 0; i < 2 && st == XT_OK; i++) {   /* dgamma, dbeta [co] */
        if (!xt_node_needs(node, 4 + i)) continue;
        xt_tensor *t = xt_empty(1, &d.co, XT_FLOAT32);
        if (!t) {
            st = xt_last_status();
            break;
        }
        for (int64_t j = 0; j < d.co; j++) ((float *)t->data)[j] = (float)dgb[i * d.co + j];
        dinputs[4 + i] = t;
    }
    free(dgb);
    xt_tensor_release(dA_t);
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
    glt_dims d = {0};
    d.g = w->shape[0];
    d.co = w->shape[2];
    d.O = d.g * d.co;
    d.shuffle = shuffle != 0 && d.g > 1;
    d.normalize = normalize != 0;
    d.swish = swish != 0;
    d.eps = (float)eps;
    bool direct = !d.shuffle && !d.normalize && !d.swish;   /* GEMMs write y */

    xt_tensor *xr = readable_rows(x), *pr = prefix ? readable_rows(prefix) : NULL;
    xt_tensor *wr = NULL, *br = NULL, *A = NULL, *stats = NULL, *affine = NULL, *out = NULL;
    if (weight_readable(w)) xt_tensor_retain(wr = w);
    else wr = dense(w);
    if (b) br = dense(b);
    fmat mx = {0}, mp = {0};
    if (xr) rows_of(xr, &mx);
    if (pr) rows_of(pr, &mp);
    d.n = mx.rows;
    int64_t cx = mx.cols / d.g, cp = prefix ? mp.cols / d.g : 0;
    int64_t yshape[XT_MAX_DIMS], ashape[2] = {d.n, d.O}, sshape[3] = {d.n, d.g, 2};
    int64_t fshape[2] = {2, d.co};
    memcpy(yshape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    yshape[x->ndim - 1] = d.O;
    bool ok = xr && (pr || !prefix) && wr && (br || !b);
    if (ok) out = xt_empty(x->ndim, yshape, XT_FLOAT32);
    if (ok && out && !direct) A = xt_empty(2, ashape, XT_FLOAT32);
    if (ok && d.normalize) {
        stats = xt_empty(3, sshape, XT_FLOAT32);
        affine = xt_empty(2, fshape, XT_FLOAT32);
        if (affine) {   /* a snapshot of gamma, beta (1 and 0 when absent) */
            float *f = affine->data;
            for (int64_t j = 0; j < 2 * d.co; j++) f[j] = j < d.co ? 1.0f : 0.0f;
            xt_tensor *parts[2] = {ln_weight, ln_bias};
            for (int i = 0; i < 2; i++) {
                if (!parts[i]) continue;
                xt_tensor *c = dense(parts[i]);
                if (!c) {
                    ok = false;
                    break;
                }
                memcpy(f + i * d.co, c->data, sizeof(float) * (size_t)d.co);
                xt_tensor_release(c);
            }
        }
    }
    ok = ok && out && (direct || A) && (!d.normalize || (stats && affine));
    xt_status st = ok ? XT_OK : xt_last_status();
    if (st == XT_OK) {
        float *target = direct ? out->data : A->data;
        if (br) {
#pragma omp parallel for if (d.n * d.O > XT_PARALLEL_GRAIN)
            for (int64_t t = 0; t < d.n; t++)
                memcpy(target + t * d.O, br->data, sizeof(float) * (size_t)d.O);
        }
        for (int64_t k = 0; k < d.g; k++) {
            fmat wk = weight_of(wr, k);
            float *ak = target + k * d.co;
            float beta = br ? 1.0f : 0.0f;
            if (prefix) {
                mm(sub(mp, 0, d.n, k * cp, cp), sub(wk, 0, cp, 0, d.co), beta, ak, d.O);
                beta = 1.0f;
            }
            mm(sub(mx, 0, d.n, k * cx, cx), sub(wk, cp, cx, 0, d.co), beta, ak, d.O);
        }
        if (!direct)
            rows_forward(A->data, out->data, stats ? stats->data : NULL,
                         affine ? affine->data : NULL, &d);
    }
    xt_tensor *inputs[6] = {x, prefix, w, b, ln_weight, ln_bias};
    if (st == XT_OK && xt_needs_grad(6, inputs)) {
        xt_tensor *saved[SAVE_COUNT] = {xr, pr, wr, A, stats, affine};
        st = record(out, inputs, saved, &d);
    }
    xt_tensor *temps[7] = {xr, pr, wr, br, A, stats, affine};
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
