/*
 * matmul.c: matrix products through OpenBLAS: matmul (NumPy semantics), bmm, linear.
 *
 * Every product here, forward and backward, is one call of batched_gemm on strided
 * matrix views (struct mat): a [rows, cols] matrix with row and column strides, plus one
 * stride per batch dim (0 where the operand is broadcast). A transposed operand is the
 * same view with rows/cols and their strides swapped, so A^T costs nothing; BLAS reads
 * a view directly when one of its strides is 1 (a transposed GEMM when it is the row
 * stride), and only other layouts are copied first.
 *
 * batched_gemm folds batch dims into the GEMM where memory allows, so a batch of products
 * becomes one big GEMM:
 *   - into M (the rows of A and C) when B is the same for every batch entry, e.g.
 *     [N,T,D] @ [D,E] runs as one [N*T,D] @ [D,E];
 *   - into K when C is the same for every batch entry (gradients of broadcast operands
 *     sum over the batch), e.g. dW = sum_n X[n]^T dY[n] runs as one [D,N*T] @ [N*T,E].
 * What cannot fold is looped: in parallel over the batch (BLAS then runs one thread per
 * product) when the products are small and write distinct outputs, else in order with
 * BLAS threaded, accumulating with beta = 1 where outputs coincide.
 *
 * Gradients (C = A B over a broadcast batch):  dA = dC B^T  and  dB = A^T dC, each summed
 * over the batch dims its operand was broadcast along. linear y = x w^T + b:
 * dx = dy w, dw = dy^T x (one GEMM over every leading dim), db = column sums of dy.
 */
#include "internal.h"

#include <limits.h>
#include <string.h>

/* ---- strided matrices and the batched GEMM -------------------------------------------- */

typedef struct mat {
    float *data;
    int64_t rows, cols, rs, cs;        /* element (r, c) at data[r * rs + c * cs] */
    int64_t bs[XT_MAX_DIMS];           /* stride of each batch dim; 0: broadcast */
} mat;

static mat transposed(mat m)
{
    mat t = m;
    t.rows = m.cols;
    t.cols = m.rows;
    t.rs = m.cs;
    t.cs = m.rs;
    return t;
}

static int64_t max1(int64_t v) { return v > 1 ? v : 1; }

/* How BLAS reads m: as stored (row-major, leading dim ld) or transposed. False when it
 * cannot (neither stride is 1, a broadcast row or column, a dim too big for BLAS ints). */
static bool blas_layout(const mat *m, bool *trans, int64_t *ld)
{
    if (m->rows > INT_MAX || m->cols > INT_MAX) return false;
    if (m->rows == 0 || m->cols == 0) {  /* never read */
        *trans = false;
        *ld = max1(m->cols);
        return true;
    }
    if ((m->cs == 1 || m->cols == 1) && (m->rows == 1 || m->rs >= max1(m->cols))) {
        *trans = false;
        *ld = m->rows == 1 ? max1(m->cols) : m->rs;
    } else if ((m->rs == 1 || m->rows == 1) && (m->cols == 1 || m->cs >= max1(m->rows))) {
        *trans = true;
        *ld = m->cols == 1 ? max1(m->rows) : m->cs;
    } else {
        return false;
    }
    return *ld <= INT_MAX;
}

/* C is written row-major: that is what the routines below hand in. */
static bool c_layout_ok(const mat *c)
{
    bool trans;
    int64_t ld;
    return blas_layout(c, &trans, &ld) && !trans;
}

/* One product C = A B + beta C for 2-d views BLAS can read. */
static void gemm(const mat *a, const mat *b, const mat *c, float beta)
{
    bool ta, tb, tc;
    int64_t lda, ldb, ldc;
    blas_layout(a, &ta, &lda);
    blas_layout(b, &tb, &ldb);
    blas_layout(c, &tc, &ldc);
    xt_sgemm(ta, tb, c->rows, c->cols, a->cols, 1.0f, a->data, lda, b->data, ldb, beta, c->data,
             ldc);
}

/* Can a matrix dim of `extent` elements `stride` apart take another dim whose stride is
 * bstride, as its outer part? (A batch dim then folds into it: one bigger GEMM.) */
static bool can_extend(int64_t extent, int64_t stride, int64_t bstride)
{
    return bstride != 0 && (extent == 1 || bstride == extent * stride);
}

/* C = beta C for a GEMM with k == 0, which BLAS is not given. */
static void scale_mat(const mat *c, float beta)
{
    for (int64_t r = 0; r < c->rows; r++)
        for (int64_t j = 0; j < c->cols; j++) {
            float *v = c->data + r * c->rs + j * c->cs;
            *v = beta == 0 ? 0.0f : beta * *v;
        }
}

/*
 * C[b] = beta C[b] + sum of A[b'] B[b'] over the batch entries b' that map to C[b], for
 * a batch of shape bshape (nb dims). C's batch strides may be 0: those dims sum into one
 * C. A and B must be BLAS layouts (blas_layout) and C row-major. Fails only when the
 * products are too large for BLAS's int sizes.
 */
static xt_status batched_gemm(int32_t nb, const int64_t *bshape, mat a, mat b, mat c, float beta,
                              const char *op)
{
    if (c.rows == 0 || c.cols == 0) return XT_OK;
    /* drop size-1 batch dims; they never move a pointer */
    int32_t n = 0;
    int64_t shape[XT_MAX_DIMS] = {0};
    for (int32_t d = 0; d < nb; d++) {
        if (bshape[d] == 1) continue;
        shape[n] = bshape[d];
        a.bs[n] = a.bs[d];
        b.bs[n] = b.bs[d];
        c.bs[n] = c.bs[d];
        n++;
    }

    /* fold the innermost batch dims into M or K while the layouts allow */
    while (n > 0 && a.cols > 0) {
        int64_t s = shape[n - 1];
        mat fa = a, fb = b, fc = c;
        if (b.bs[n - 1] == 0 && can_extend(a.rows, a.rs, a.bs[n - 1]) &&
            can_extend(c.rows, c.rs, c.bs[n - 1])) {
            if (a.rows == 1) fa.rs = a.bs[n - 1];
            if (c.rows == 1) fc.rs = c.bs[n - 1];
            fa.rows *= s;
            fc.rows *= s;
        } else if (c.bs[n - 1] == 0 && can_extend(a.cols, a.cs, a.bs[n - 1]) &&
                   can_extend(b.rows, b.rs, b.bs[n - 1])) {
            if (a.cols == 1) fa.cs = a.bs[n - 1];
            if (b.rows == 1) fb.rs = b.bs[n - 1];
            fa.cols *= s;
            fb.rows *= s;
        } else {
            break;
        }
        bool t;
        int64_t ld;
        if (!blas_layout(&fa, &t, &ld) || !blas_layout(&fb, &t, &ld) || !c_layout_ok(&fc)) break;
        a = fa;
        b = fb;
        c = fc;
        n--;
    }

    bool t;
    int64_t ld;
    if (a.cols > 0 && (!blas_layout(&a, &t, &ld) || !blas_layout(&b, &t, &ld) || !c_layout_ok(&c)))
        return xt_fail(XT_ERR_SHAPE, "%s: products of [%lld,%lld] x [%lld,%lld] are too large "
                       "for BLAS", op, (long long)c.rows, (long long)a.cols, (long long)a.cols,
                       (long long)c.cols);

    int64_t count = xt_shape_numel(n, shape);
    bool shared_c = false;
    for (int32_t d = 0; d < n; d++) shared_c |= c.bs[d] == 0;
    /* Small products: one BLAS call per thread beats threading inside each call (OpenBLAS
     * runs single-threaded inside a parallel region). Shared outputs go in order. */
    int64_t each = c.rows * c.cols * (a.cols > 0 ? a.cols : 1);
    /* ...but a fork costs more than a handful of tiny products (decoding steps): only go
     * parallel when the batch holds enough work. */
    bool parallel = !shared_c && count > 1 && each < ((int64_t)1 << 21) &&
                    count * each >= XT_PARALLEL_GRAIN * 4;
#pragma omp parallel for if (parallel) schedule(static)
    for (int64_t i = 0; i < count; i++) {
        mat ai = a, bi = b, ci = c;
        bool first = true;  /* the first product to reach its C applies beta */
        int64_t r = i;
        for (int32_t d = n - 1; d >= 0; d--) {
            int64_t k = r % shape[d];
            r /= shape[d];
            ai.data += k * a.bs[d];
            bi.data += k * b.bs[d];
            ci.data += k * c.bs[d];
            if (c.bs[d] == 0 && k > 0) first = false;
        }
        float bi_beta = first ? beta : 1.0f;
        if (a.cols == 0) scale_mat(&ci, bi_beta);
        else gemm(&ai, &bi, &ci, bi_beta);
    }
    return XT_OK;
}

/* ---- tensors as matrices -------------------------------------------------------------------- */

/* t as a float32 tensor BLAS can read (+1): t itself, or a contiguous copy made outside
 * the graph when its last two strides allow neither layout. */
static xt_tensor *blas_ready(xt_tensor *t, const mat *m)
{
    bool trans;
    int64_t ld;
    if (blas_layout(m, &trans, &ld)) {
        xt_tensor_retain(t);
        return t;
    }
    int32_t mode = xt_set_grad_enabled(0);
    xt_tensor *c = xt_clone(t);
    xt_set_grad_enabled(mode);
    return c;
}

/*
 * The matrix view of t for matmul: its last two dims, with the leading dims as batch dims
 * aligned to the right of bshape (nb dims; stride 0 where t has size 1 or lacks the dim).
 * A 1-d t is a row [1,k] when it is the left operand, a column [k,1] when the right.
 */
static mat mat_of(const xt_tensor *t, bool left, int32_t nb, const int64_t *bshape)
{
    mat m;
    memset(&m, 0, sizeof m);
    m.data = t->data;
    int32_t nd = t->ndim;
    if (nd == 1) {
        int64_t k = t->shape[0], s = t->strides[0];
        m.rows = left ? 1 : k;
        m.cols = left ? k : 1;
        m.rs = left ? k * s : s;
        m.cs = left ? s : 1;
    } else {
        m.rows = t->shape[nd - 2];
        m.cols = t->shape[nd - 1];
        m.rs = t->strides[nd - 2];
        m.cs = t->strides[nd - 1];
    }
    int32_t tb = nd > 2 ? nd - 2 : 0;
    for (int32_t d = 0; d < nb; d++) {
        int32_t td = d - (nb - tb);
        m.bs[d] = td >= 0 && t->shape[td] != 1 && bshape[d] != 1 ? t->strides[td] : 0;
    }
    return m;
}

static xt_status check_float(const xt_tensor *t, const char *op, const char *name)
{
    if (!t) return xt_fail(XT_ERR_ARG, "%s: %s is NULL", op, name);
    if (t->dtype != XT_FLOAT32)
        return xt_fail(XT_ERR_DTYPE, "%s: expected float32 %s, got %s", op, name,
                       xt_dtype_name(t->dtype));
    return XT_OK;
}

/* ---- matmul and bmm ------------------------------------------------------------------------- */

/* The batch shape of a @ b (nb dims into bshape); shapes were checked by the forward. */
static void batch_shape(const xt_tensor *a, const xt_tensor *b, int32_t *nb, int64_t *bshape,
                        const char *op)
{
    int32_t an = a->ndim > 2 ? a->ndim - 2 : 0, bn = b->ndim > 2 ? b->ndim - 2 : 0;
    xt_broadcast_shapes(an, a->shape, bn, b->shape, nb, bshape, op);
}

/* out's rows/cols as a row-major matrix over the batch, from a contiguous tensor. */
static mat out_mat(float *data, int64_t m, int64_t n, int32_t nb, const int64_t *bshape)
{
    mat c;
    memset(&c, 0, sizeof c);
    c.data = data;
    c.rows = m;
    c.cols = n;
    c.rs = n;
    c.cs = 1;
    int64_t s = m * n;
    for (int32_t d = nb - 1; d >= 0; d--) {
        c.bs[d] = bshape[d] == 1 ? 0 : s;
        s *= bshape[d];
    }
    return c;
}

/* saved: 0 a, 1 b, as BLAS reads them (maybe copies). iargs: none.
 * dA = dC B^T, dB = A^T dC; broadcast batch dims sum inside the GEMMs (zero strides). */
static xt_status matmul_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *a = xt_node_saved(node, 0), *b = xt_node_saved(node, 1);
    if (!a || !b) return xt_last_status();
    int32_t nb;
    int64_t bshape[XT_MAX_DIMS];
    batch_shape(a, b, &nb, bshape, node->name);
    mat ma = mat_of(a, true, nb, bshape), mb = mat_of(b, false, nb, bshape);
    xt_tensor *dy = xt_contiguous(dout);
    if (!dy) return xt_last_status();
    mat mc = out_mat(dy->data, ma.rows, mb.cols, nb, bshape);
    xt_status st = XT_OK;
    for (int32_t i = 0; i < 2 && st == XT_OK; i++) {
        if (!xt_node_needs(node, i)) continue;
        const xt_tensor *x = i == 0 ? a : b;
        xt_tensor *dx = xt_zeros(x->ndim, x->shape, XT_FLOAT32);
        if (!dx) {
            st = xt_last_status();
            break;
        }
        mat md = mat_of(dx, i == 0, nb, bshape);
        st = i == 0 ? batched_gemm(nb, bshape, mc, transposed(mb), md, 0.0f, node->name)
                    : batched_gemm(nb, bshape, transposed(ma), mc, md, 0.0f, node->name);
        dinputs[i] = dx;
    }
    xt_tensor_release(dy);
    return st;
}

static xt_tensor *matmul_as(xt_tensor *a, xt_tensor *b, const char *op)
{
    if (check_float(a, op, "left operand") || check_float(b, op, "right operand")) return NULL;
    char sa[XT_SHAPE_STR], sb[XT_SHAPE_STR];
    if (a->ndim == 0 || b->ndim == 0)
        return xt_fail_null(XT_ERR_SHAPE, "%s: both operands need at least 1 dim, got shapes %s "
                            "and %s", op, xt_shape_str(sa, a->ndim, a->shape),
                            xt_shape_str(sb, b->ndim, b->shape));
    int64_t k = a->shape[a->ndim - 1], kb = b->shape[b->ndim > 1 ? b->ndim - 2 : 0];
    if (k != kb)
        return xt_fail_null(XT_ERR_SHAPE, "%s: shapes %s and %s cannot be multiplied (%lld != "
                            "%lld)", op, xt_shape_str(sa, a->ndim, a->shape),
                            xt_shape_str(sb, b->ndim, b->shape), (long long)k, (long long)kb);
    int32_t nb;
    int64_t bshape[XT_MAX_DIMS];
    int32_t an = a->ndim > 2 ? a->ndim - 2 : 0, bn = b->ndim > 2 ? b->ndim - 2 : 0;
    if (xt_broadcast_shapes(an, a->shape, bn, b->shape, &nb, bshape, op))
        return xt_fail_null(XT_ERR_SHAPE, "%s: batch dims of shapes %s and %s cannot broadcast",
                            op, xt_shape_str(sa, a->ndim, a->shape),
                            xt_shape_str(sb, b->ndim, b->shape));

    mat ma = mat_of(a, true, nb, bshape), mb = mat_of(b, false, nb, bshape);
    xt_tensor *ac = blas_ready(a, &ma), *bc = ac ? blas_ready(b, &mb) : NULL;
    if (!bc) {
        xt_tensor_release(ac);
        return NULL;
    }
    ma = mat_of(ac, true, nb, bshape);
    mb = mat_of(bc, false, nb, bshape);

    int64_t shape[XT_MAX_DIMS];
    int32_t nd = nb;
    memcpy(shape, bshape, sizeof(int64_t) * (size_t)nb);
    if (a->ndim > 1) shape[nd++] = ma.rows;
    if (b->ndim > 1) shape[nd++] = mb.cols;
    xt_tensor *out = xt_empty(nd, shape, XT_FLOAT32);
    xt_status st = out ? batched_gemm(nb, bshape, ma, mb,
                                      out_mat(out->data, ma.rows, mb.cols, nb, bshape), 0.0f, op)
                       : xt_last_status();
    xt_tensor *inputs[2] = {a, b};
    if (st == XT_OK && xt_needs_grad(2, inputs)) {
        xt_node *node = xt_node_new(op, matmul_backward, 2, inputs);
        if (!node || xt_node_save(node, ac) || xt_node_save(node, bc)) {
            xt_node_release(node);
            st = xt_last_status();
        } else {
            xt_node_attach(node, out);
        }
    }
    xt_tensor_release(ac);
    xt_tensor_release(bc);
    if (st != XT_OK) {
        xt_tensor_release(out);
        return NULL;
    }
    return out;
}

xt_tensor *xt_matmul(xt_tensor *a, xt_tensor *b) { return matmul_as(a, b, "matmul"); }

xt_tensor *xt_bmm(xt_tensor *a, xt_tensor *b)
{
    if (check_float(a, "bmm", "left operand") || check_float(b, "bmm", "right operand"))
        return NULL;
    char sa[XT_SHAPE_STR], sb[XT_SHAPE_STR];
    if (a->ndim != 3 || b->ndim != 3 || a->shape[0] != b->shape[0] || a->shape[2] != b->shape[1])
        return xt_fail_null(XT_ERR_SHAPE, "bmm: expected [B,n,k] and [B,k,m], got %s and %s",
                            xt_shape_str(sa, a->ndim, a->shape), xt_shape_str(sb, b->ndim, b->shape));
    return matmul_as(a, b, "bmm");
}

/* ---- linear ------------------------------------------------------------------------------------ */

/* x [..., in] as one [N, in] matrix without copying, when its strides allow. */
static bool rows_view(const xt_tensor *x, mat *m)
{
    memset(m, 0, sizeof *m);
    m->data = x->data;
    m->cols = x->shape[x->ndim - 1];
    m->cs = x->strides[x->ndim - 1];
    m->rows = 1;
    m->rs = max1(m->cols) * m->cs;
    for (int32_t d = x->ndim - 2; d >= 0; d--) {
        if (x->shape[d] == 1) continue;
        if (!can_extend(m->rows, m->rs, x->strides[d])) return false;
        if (m->rows == 1) m->rs = x->strides[d];
        m->rows *= x->shape[d];
    }
    bool trans;
    int64_t ld;
    return blas_layout(m, &trans, &ld);
}

/* out[j] = sum over rows of dy [N, C] (row-major), in double, columns split over threads. */
enum { COL_BLOCK = 64 };
static void column_sums(const float *dy, int64_t N, int64_t C, float *out)
{
    int64_t blocks = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for if (N * C > XT_PARALLEL_GRAIN && blocks > 1)
    for (int64_t blk = 0; blk < blocks; blk++) {
        int64_t c0 = blk * COL_BLOCK, nc = C - c0 < COL_BLOCK ? C - c0 : COL_BLOCK;
        double acc[COL_BLOCK] = {0};
        for (int64_t r = 0; r < N; r++) {
            const float *row = dy + r * C + c0;
#pragma omp simd
            for (int64_t j = 0; j < nc; j++) acc[j] += row[j];
        }
        for (int64_t j = 0; j < nc; j++) out[c0 + j] = (float)acc[j];
    }
}

/* saved: 0 x as [N,in] rows (maybe a copy), 1 w (BLAS-ready). inputs: 0 x, 1 w, 2 b. */
static xt_status linear_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *x = xt_node_saved(node, 0), *w = xt_node_saved(node, 1);
    if (!x || !w) return xt_last_status();
    mat mx, mw = mat_of(w, true, 0, NULL);
    rows_view(x, &mx);
    xt_tensor *dy_t = xt_contiguous(dout);
    if (!dy_t) return xt_last_status();
    mat mdy = out_mat(dy_t->data, mx.rows, mw.rows, 0, NULL);
    xt_status st = XT_OK;
    if (xt_node_needs(node, 0)) {  /* dx [N,in] = dy [N,out] w [out,in] */
        const xt_edge *e = &node->inputs[0];
        xt_tensor *dx = xt_empty(e->ndim, e->shape, XT_FLOAT32);
        if (!dx) st = xt_last_status();
        else {
            mat mdx;
            rows_view(dx, &mdx);
            st = batched_gemm(0, NULL, mdy, mw, mdx, 0.0f, "linear");
            dinputs[0] = dx;
        }
    }
    if (st == XT_OK && xt_node_needs(node, 1)) {  /* dw [out,in] = dy^T [out,N] x [N,in] */
        xt_tensor *dw = xt_empty(2, w->shape, XT_FLOAT32);
        if (!dw) st = xt_last_status();
        else {
            st = batched_gemm(0, NULL, transposed(mdy), mx, mat_of(dw, true, 0, NULL), 0.0f,
                              "linear");
            dinputs[1] = dw;
        }
    }
    if (st == XT_OK && xt_node_needs(node, 2)) {  /* db [out] = column sums of dy */
        int64_t nout = mw.rows;
        xt_tensor *db = xt_empty(1, &nout, XT_FLOAT32);
        if (!db) st = xt_last_status();
        else {
            column_sums(dy_t->data, mx.rows, nout, db->data);
            dinputs[2] = db;
        }
    }
    xt_tensor_release(dy_t);
    return st;
}

xt_tensor *xt_linear(xt_tensor *x, xt_tensor *w, xt_tensor *b)
{
    if (check_float(x, "linear", "input") || check_float(w, "linear", "weight")) return NULL;
    if (b && check_float(b, "linear", "bias")) return NULL;
    char sx[XT_SHAPE_STR], sw[XT_SHAPE_STR];
    if (w->ndim != 2)
        return xt_fail_null(XT_ERR_SHAPE, "linear: weight must be [out,in], got shape %s",
                            xt_shape_str(sw, w->ndim, w->shape));
    int64_t nout = w->shape[0], nin = w->shape[1];
    if (x->ndim == 0 || x->shape[x->ndim - 1] != nin)
        return xt_fail_null(XT_ERR_SHAPE, "linear: input of shape %s does not end in the "
                            "weight's in-features %lld (weight %s)",
                            xt_shape_str(sx, x->ndim, x->shape), (long long)nin,
                            xt_shape_str(sw, 2, w->shape));
    if (b && (b->ndim != 1 || b->shape[0] != nout))
        return xt_fail_null(XT_ERR_SHAPE, "linear: bias has shape %s, expected [%lld]",
                            xt_shape_str(sx, b->ndim, b->shape), (long long)nout);

    /* x as one [N,in] matrix (copied when its leading dims do not fold), w as BLAS reads it */
    mat mx, mw = mat_of(w, true, 0, NULL);
    xt_tensor *xc = NULL, *wc = blas_ready(w, &mw), *bc = NULL;
    int32_t mode = xt_set_grad_enabled(0);
    if (wc && !rows_view(x, &mx)) xc = xt_clone(x);
    else if (wc) xt_tensor_retain(xc = x);
    if (xc && b) bc = xt_contiguous(b);
    xt_set_grad_enabled(mode);
    int64_t shape[XT_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = nout;
    xt_tensor *out = xc && (bc || !b) ? xt_empty(x->ndim, shape, XT_FLOAT32) : NULL;
    xt_status st = out ? XT_OK : xt_last_status();
    if (st == XT_OK) {
        rows_view(xc, &mx);
        mw = mat_of(wc, true, 0, NULL);
        mat my = out_mat(out->data, mx.rows, nout, 0, NULL);
        if (bc) {
            float *y = out->data;
            const float *bias = bc->data;
#pragma omp parallel for if (mx.rows * nout > XT_PARALLEL_GRAIN)
            for (int64_t r = 0; r < mx.rows; r++) memcpy(y + r * nout, bias, sizeof(float) * (size_t)nout);
        }
        st = batched_gemm(0, NULL, mx, transposed(mw), my, bc ? 1.0f : 0.0f, "linear");
    }
    xt_tensor *inputs[3] = {x, w, b};
    if (st == XT_OK && xt_needs_grad(3, inputs)) {
        xt_node *node = xt_node_new("linear", linear_backward, 3, inputs);
        if (!node || xt_node_save(node, xc) || xt_node_save(node, wc)) {
            xt_node_release(node);
            st = xt_last_status();
        } else {
            xt_node_attach(node, out);
        }
    }
    xt_tensor_release(xc);
    xt_tensor_release(wc);
    xt_tensor_release(bc);
    if (st != XT_OK) {
        xt_tensor_release(out);
        return NULL;
    }
    return out;
}
