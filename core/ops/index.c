/*
 * index.c: reading and adding at positions given by an int64 index tensor:
 * index_select, gather, scatter_add. Index values count from `base` (Lua passes 1) and
 * are all checked before anything is read or written; a bad one is an error naming the
 * op, the value as the caller gave it and the valid range.
 *
 *   index_select(t, dim, index)  index [n]: out = t with dim replaced by n,
 *                                out[.., j, ..] = t[.., index[j], ..]
 *   gather(t, dim, index)        out shaped like index, out[p] = t[p with p[dim] = index[p]]
 *   scatter_add(t, dim, index, src)   out = copy of t, then for every position p of index:
 *                                out[p with p[dim] = index[p]] += src[p]
 *
 * Gradients: index_select -> dout added into zeros at the index rows (index_add);
 * gather -> scatter_add of dout into zeros; scatter_add -> dout itself for t, and
 * gather(dout) for src (zero where src lies outside index's shape).
 *
 * gather and scatter_add walk "lines": for each position of index outside dim, the run
 * along dim. Different lines write different elements (they differ outside dim), so lines
 * run in parallel without races, and each line adds in index order, so results do not
 * depend on the thread count.
 */
#include "internal.h"

#include <string.h>

/* ---- index checks --------------------------------------------------------------------- */

static xt_status check_index(const xt_tensor *index, const char *op)
{
    if (!index) return xt_fail(XT_ERR_ARG, "%s: index is NULL", op);
    if (index->dtype != XT_INT64)
        return xt_fail(XT_ERR_DTYPE, "%s: expected an int64 index, got %s", op,
                       xt_dtype_name(index->dtype));
    return XT_OK;
}

/* Every value of index must lie in [base, base + size). */
static xt_status check_range(const xt_tensor *index, int64_t size, int64_t base, int32_t dim,
                             const char *op)
{
    int64_t strides[1][XT_MAX_DIMS];
    memcpy(strides[0], index->strides, sizeof strides[0]);
    xt_iter it;
    xt_iter_init(&it, 1, index->ndim, index->shape, strides);
    const int64_t *idx = index->data;
    int64_t step = it.strides[0][it.ndim - 1];
    for (int64_t o = 0; o < it.outer; o++) {
        int64_t off;
        xt_iter_offsets(&it, o, &off);
        for (int64_t i = 0; i < it.inner; i++) {
            int64_t v = idx[off + i * step];
            if ((uint64_t)v - (uint64_t)base < (uint64_t)size) continue;
            if (size == 0)
                return xt_fail(XT_ERR_ARG, "%s: index %lld out of range: dim %lld has size 0", op,
                               (long long)v, (long long)xt_shown(dim));
            return xt_fail(XT_ERR_ARG, "%s: index %lld out of range [%lld, %lld] for dim %lld",
                           op, (long long)v, (long long)base, (long long)(base + size - 1),
                           (long long)xt_shown(dim));
        }
    }
    return XT_OK;
}

static xt_tensor *dense(xt_tensor *t)
{
    int32_t mode = xt_set_grad_enabled(0);
    xt_tensor *c = xt_contiguous(t);
    xt_set_grad_enabled(mode);
    return c;
}

/* ---- index_select ------------------------------------------------------------------------ */

/* t viewed as [outer, size, inner] around dim. */
static void split_at(const xt_tensor *t, int32_t dim, int64_t *outer, int64_t *inner)
{
    *outer = 1;
    *inner = 1;
    for (int32_t d = 0; d < dim; d++) *outer *= t->shape[d];
    for (int32_t d = dim + 1; d < t->ndim; d++) *inner *= t->shape[d];
}

enum { INDEX_ADD_BLOCK = 256 };  /* floats of a row one task adds: whole cache lines */

/* saved: 0 index (contiguous, 1-d). iargs: 0 dim, 1 base.
 * dt [outer, size, inner] += dout [outer, n, inner] at rows index[j]; a task owns one
 * (outer, column block) pair and runs j in order. */
static xt_status index_select_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *index = xt_node_saved(node, 0);
    if (!index) return xt_last_status();
    const xt_edge *e = &node->inputs[0];
    int32_t dim = (int32_t)node->iargs[0];
    int64_t base = node->iargs[1], n = xt_numel(index), outer = 1, inner = 1;
    for (int32_t d = 0; d < dim; d++) outer *= e->shape[d];
    for (int32_t d = dim + 1; d < e->ndim; d++) inner *= e->shape[d];
    int64_t size = e->shape[dim];
    xt_tensor *dy_t = xt_contiguous(dout);
    xt_tensor *dt = dy_t ? xt_zeros(e->ndim, e->shape, XT_FLOAT32) : NULL;
    if (!dt) {
        xt_tensor_release(dy_t);
        return xt_last_status();
    }
    const int64_t *idx = index->data;
    const float *dy = dy_t->data;
    float *dx = dt->data;
    int64_t blocks = (inner + INDEX_ADD_BLOCK - 1) / INDEX_ADD_BLOCK;
#pragma omp parallel for if (outer * n * inner > XT_PARALLEL_GRAIN && outer * blocks > 1)
    for (int64_t task = 0; task < outer * blocks; task++) {
        int64_t o = task / blocks, c0 = task % blocks * INDEX_ADD_BLOCK;
        int64_t c1 = c0 + INDEX_ADD_BLOCK < inner ? c0 + INDEX_ADD_BLOCK : inner;
        for (int64_t j = 0; j < n; j++) {
            float *dst = dx + (o * size + idx[j] - base) * inner;
            const float *src = dy + (o * n + j) * inner;
#pragma omp simd
            for (int64_t c = c0; c < c1; c++) dst[c] += src[c];
        }
    }
    xt_tensor_release(dy_t);
    dinputs[0] = dt;
    return XT_OK;
}

xt_tensor *xt_index_select(xt_tensor *t, int32_t dim, xt_tensor *index, int64_t base)
{
    if (!t) return xt_fail_null(XT_ERR_ARG, "index_select: tensor is NULL");
    if (check_index(index, "index_select")) return NULL;
    if (t->ndim == 0)
        return xt_fail_null(XT_ERR_ARG, "index_select: cannot index a 0-d tensor");
    if (index->ndim > 1) {
        char a[XT_SHAPE_STR];
        return xt_fail_null(XT_ERR_SHAPE, "index_select: index must be 1-d, got shape %s",
                            xt_shape_str(a, index->ndim, index->shape));
    }
    if (xt_norm_dim(&dim, t->ndim, "index_select")) return NULL;
    if (check_range(index, t->shape[dim], base, dim, "index_select")) return NULL;

    int64_t n = xt_numel(index), outer, inner, size = t->shape[dim];
    split_at(t, dim, &outer, &inner);
    int64_t shape[XT_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    shape[dim] = n;
    xt_tensor *idx_t = dense(index), *src_t = idx_t ? dense(t) : NULL;
    xt_tensor *out = src_t ? xt_empty(t->ndim, shape, t->dtype) : NULL;
    if (!out) {
        xt_tensor_release(src_t);
        xt_tensor_release(idx_t);
        return NULL;
    }
    const int64_t *idx = idx_t->data;
    size_t row = (size_t)(inner * xt_dtype_size(t->dtype));
    const char *src = src_t->data;
    char *dst = out->data;
#pragma omp parallel for if (outer * n * inner > XT_PARALLEL_GRAIN)
    for (int64_t oj = 0; oj < outer * n; oj++) {
        int64_t o = oj / n, j = oj % n;
        memcpy(dst + (size_t)oj * row, src + (size_t)(o * size + idx[j] - base) * row, row);
    }
    xt_tensor_release(src_t);

    xt_tensor *inputs[1] = {t};
    if (xt_needs_grad(1, inputs)) {
        xt_node *node = xt_node_new("index_select", index_select_backward, 1, inputs);
        if (!node || xt_node_save(node, idx_t)) {
            xt_node_release(node);
            xt_tensor_release(idx_t);
            xt_tensor_release(out);
            return NULL;
        }
        node->iargs[0] = dim;
        node->iargs[1] = base;
        xt_node_attach(node, out);
    }
    xt_tensor_release(idx_t);
    return out;
}

/* ---- gather and scatter_add: lines along dim ------------------------------------------------ */

/* Positions of index (shape, strides) address two tensors: `picked` through the index
 * value in dim, `direct` at the position itself. 0-d tensors are seen as [1]. */
typedef struct lines {
    int32_t ndim, dim;
    int64_t shape[XT_MAX_DIMS];
    int64_t idx_st[XT_MAX_DIMS], pick_st[XT_MAX_DIMS], direct_st[XT_MAX_DIMS];
    int64_t base;
} lines;

static void lines_init(lines *l, const xt_tensor *index, int32_t dim, const xt_tensor *picked,
                       const xt_tensor *direct, int64_t base)
{
    memset(l, 0, sizeof *l);
    l->dim = dim;
    l->base = base;
    l->ndim = index->ndim > 0 ? index->ndim : 1;
    l->shape[0] = 1;
    for (int32_t d = 0; d < index->ndim; d++) {
        l->shape[d] = index->shape[d];
        l->idx_st[d] = index->strides[d];
        l->pick_st[d] = picked->strides[d];
        l->direct_st[d] = direct->strides[d];
    }
}

/* Element offsets where line L starts in index, picked and direct. */
static void line_start(const lines *l, int64_t L, int64_t *io, int64_t *po, int64_t *dofs)
{
    *io = *po = *dofs = 0;
    for (int32_t d = l->ndim - 1; d >= 0; d--) {
        if (d == l->dim) continue;
        int64_t c = L % l->shape[d];
        L /= l->shape[d];
        *io += c * l->idx_st[d];
        *po += c * l->pick_st[d];
        *dofs += c * l->direct_st[d];
    }
}

/* direct[p] = picked[p with p[dim] = index[p]], any dtype (elements of esize bytes). */
static void gather_lines(const lines *l, const int64_t *idx, const char *picked, char *direct,
                         int64_t esize)
{
    int64_t len = l->shape[l->dim], total = xt_shape_numel(l->ndim, l->shape);
    if (total == 0) return;
    int64_t is = l->idx_st[l->dim], ps = l->pick_st[l->dim], ds = l->direct_st[l->dim];
#pragma omp parallel for if (total > XT_PARALLEL_GRAIN)
    for (int64_t L = 0; L < total / len; L++) {
        int64_t io, po, dofs;
        line_start(l, L, &io, &po, &dofs);
        for (int64_t j = 0; j < len; j++) {
            int64_t v = idx[io + j * is] - l->base;
            memcpy(direct + (dofs + j * ds) * esize, picked + (po + v * ps) * esize,
                   (size_t)esize);
        }
    }
}

/* picked[p with p[dim] = index[p]] += direct[p], float32 or int64. */
static void scatter_add_lines(const lines *l, const int64_t *idx, void *picked,
                              const void *direct, int32_t dtype)
{
    int64_t len = l->shape[l->dim], total = xt_shape_numel(l->ndim, l->shape);
    if (total == 0) return;
    int64_t is = l->idx_st[l->dim], ps = l->pick_st[l->dim], ds = l->direct_st[l->dim];
#pragma omp parallel for if (total > XT_PARALLEL_GRAIN)
    for (int64_t L = 0; L < total / len; L++) {
        int64_t io, po, dofs;
        line_start(l, L, &io, &po, &dofs);
        if (dtype == XT_FLOAT32) {
            float *p = (float *)picked + po;
            const float *s = (const float *)direct + dofs;
            for (int64_t j = 0; j < len; j++) p[(idx[io + j * is] - l->base) * ps] += s[j * ds];
        } else {
            int64_t *p = (int64_t *)picked + po;
            const int64_t *s = (const int64_t *)direct + dofs;
            for (int64_t j = 0; j < len; j++) p[(idx[io + j * is] - l->base) * ps] += s[j * ds];
        }
    }
}

/* index has t's number of dims and, outside dim, sizes no larger than other's (a name for
 * the message); `all` extends that to dim as well. */
static xt_status check_fits(const xt_tensor *index, const xt_tensor *other, const char *name,
                            int32_t dim, bool all, const char *op)
{
    bool fits = index->ndim == other->ndim;
    for (int32_t d = 0; fits && d < index->ndim; d++)
        fits = (d == dim && !all) || index->shape[d] <= other->shape[d];
    if (fits) return XT_OK;
    char a[XT_SHAPE_STR], b[XT_SHAPE_STR];
    return xt_fail(XT_ERR_SHAPE, "%s: index of shape %s does not fit %s of shape %s (same number "
                   "of dims, sizes no larger%s)", op, xt_shape_str(a, index->ndim, index->shape),
                   name, xt_shape_str(b, other->ndim, other->shape), all ? "" : " outside dim");
}

/* saved: 0 index. iargs: 0 dim, 1 base. dt = zeros, scatter-added dout. */
static xt_status gather_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *index = xt_node_saved(node, 0);
    if (!index) return xt_last_status();
    const xt_edge *e = &node->inputs[0];
    xt_tensor *dt = xt_zeros(e->ndim, e->shape, XT_FLOAT32);
    if (!dt) return xt_last_status();
    lines l;
    lines_init(&l, index, (int32_t)node->iargs[0], dt, dout, node->iargs[1]);
    scatter_add_lines(&l, index->data, dt->data, dout->data, XT_FLOAT32);
    dinputs[0] = dt;
    return XT_OK;
}

xt_tensor *xt_gather(xt_tensor *t, int32_t dim, xt_tensor *index, int64_t base)
{
    if (!t) return xt_fail_null(XT_ERR_ARG, "gather: tensor is NULL");
    if (check_index(index, "gather") || xt_norm_dim(&dim, t->ndim, "gather") ||
        check_fits(index, t, "tensor", dim, false, "gather"))
        return NULL;
    int64_t size = t->ndim > 0 ? t->shape[dim] : 1;
    if (check_range(index, size, base, dim, "gather")) return NULL;

    xt_tensor *out = xt_empty(index->ndim, index->shape, t->dtype);
    if (!out) return NULL;
    lines l;
    lines_init(&l, index, dim, t, out, base);
    gather_lines(&l, index->data, t->data, out->data, xt_dtype_size(t->dtype));

    xt_tensor *inputs[1] = {t};
    if (xt_needs_grad(1, inputs)) {
        xt_node *node = xt_node_new("gather", gather_backward, 1, inputs);
        if (!node || xt_node_save(node, index)) {
            xt_node_release(node);
            xt_tensor_release(out);
            return NULL;
        }
        node->iargs[0] = dim;
        node->iargs[1] = base;
        xt_node_attach(node, out);
    }
    return out;
}

/* saved: 0 index. iargs: 0 dim, 1 base. inputs: 0 t, 1 src. */
static xt_status scatter_add_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *index = xt_node_saved(node, 0);
    if (!index) return xt_last_status();
    if (xt_node_needs(node, 0)) {
        xt_tensor_retain(dout);
        dinputs[0] = dout;
    }
    if (xt_node_needs(node, 1)) {
        const xt_edge *e = &node->inputs[1];
        xt_tensor *dsrc = xt_zeros(e->ndim, e->shape, XT_FLOAT32);
        if (!dsrc) return xt_last_status();
        lines l;
        lines_init(&l, index, (int32_t)node->iargs[0], dout, dsrc, node->iargs[1]);
        gather_lines(&l, index->data, dout->data, dsrc->data, sizeof(float));
        dinputs[1] = dsrc;
    }
    return XT_OK;
}

xt_tensor *xt_scatter_add(xt_tensor *t, int32_t dim, xt_tensor *index, xt_tensor *src,
                          int64_t base)
{
    const char *op = "scatter_add";
    if (!t) return xt_fail_null(XT_ERR_ARG, "scatter_add: tensor is NULL");
    if (!src) return xt_fail_null(XT_ERR_ARG, "scatter_add: src is NULL");
    if (t->dtype != XT_FLOAT32 && t->dtype != XT_INT64)
        return xt_fail_null(XT_ERR_DTYPE, "scatter_add: expected a float32 or int64 tensor, "
                            "got %s", xt_dtype_name(t->dtype));
    if (src->dtype != t->dtype)
        return xt_fail_null(XT_ERR_DTYPE, "scatter_add: src is %s but the tensor is %s",
                            xt_dtype_name(src->dtype), xt_dtype_name(t->dtype));
    if (check_index(index, op) || xt_norm_dim(&dim, t->ndim, op) ||
        check_fits(index, t, "tensor", dim, false, op) ||
        check_fits(index, src, "src", dim, true, op))
        return NULL;
    int64_t size = t->ndim > 0 ? t->shape[dim] : 1;
    if (check_range(index, size, base, dim, op)) return NULL;

    xt_tensor *out = xt_empty(t->ndim, t->shape, t->dtype);
    if (!out) return NULL;
    xt_copy_kernel(out, t);
    lines l;
    lines_init(&l, index, dim, out, src, base);
    scatter_add_lines(&l, index->data, out->data, src->data, t->dtype);

    xt_tensor *inputs[2] = {t, src};
    if (xt_needs_grad(2, inputs)) {
        xt_node *node = xt_node_new("scatter_add", scatter_add_backward, 2, inputs);
        if (!node || xt_node_save(node, index)) {
            xt_node_release(node);
            xt_tensor_release(out);
            return NULL;
        }
        node->iargs[0] = dim;
        node->iargs[1] = base;
        xt_node_attach(node, out);
    }
    return out;
}
