/*
 * view.c: ops that look at a tensor's storage through another shape, strides or offset:
 * view, reshape, permute, transpose, narrow, select, squeeze, unsqueeze, expand, flatten.
 *
 * Every result is a new tensor header on the input's storage (retained), so writes through
 * it are seen by the input and the other way round. reshape and flatten are the exception
 * when the strides do not allow a view: they copy first. Each op records a node on its
 * result when the input needs grad; the backward undoes the op on dout:
 *   view, reshape, squeeze, unsqueeze, flatten -> reshape dout back to the input's shape
 *   permute, transpose                         -> the inverse permutation
 *   narrow, select                             -> zeros of the input's shape, dout copied
 *                                                 into the slice
 *   expand                                     -> sum dout back down (xt_sum_to)
 */
#include "internal.h"

#include <string.h>

/* ---- shared ---------------------------------------------------------------------- */

static xt_tensor *view_of(xt_tensor *t, int32_t ndim, const int64_t *shape,
                          const int64_t *strides, int64_t offset)
{
    return xt_tensor_new_view(t->storage, t->dtype, ndim, shape, strides, offset);
}

/* Record a one-input node on out with up to XT_NODE_MAX_ARGS iargs; on failure out is
 * released and NULL returned, so callers can `return recorded(...)`. */
static xt_tensor *recorded(xt_tensor *out, xt_tensor *t, const char *name, xt_backward_fn backward,
                           int32_t nargs, const int64_t *iargs)
{
    if (!out) return NULL;
    if (!xt_record(out, name, backward, 1, &t, 0)) {
        xt_tensor_release(out);
        return NULL;
    }
    if (out->grad_fn)
        for (int32_t i = 0; i < nargs; i++) out->grad_fn->iargs[i] = iargs[i];
    return out;
}

/* dinputs[0] = dout reshaped to the input's shape (dout may have any strides). */
static xt_status reshape_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    const xt_edge *e = &node->inputs[0];
    dinputs[0] = xt_reshape(dout, e->ndim, e->shape);
    return dinputs[0] ? XT_OK : xt_last_status();
}

/* ---- view and reshape -------------------------------------------------------------- */

/* shape with its -1 resolved against t's numel, into out. */
static xt_status infer_shape(const xt_tensor *t, int32_t ndim, const int64_t *shape, int64_t *out,
                             const char *op)
{
    if (ndim < 0 || ndim > XT_MAX_DIMS)
        return xt_fail(XT_ERR_ARG, "%s: %d sizes given, at most %d dims are supported", op, ndim,
                       XT_MAX_DIMS);
    if (ndim > 0 && !shape) return xt_fail(XT_ERR_ARG, "%s: shape is NULL", op);
    int32_t infer = -1;
    int64_t known = 1;
    bool overflow = false;
    for (int32_t i = 0; i < ndim; i++) {
        out[i] = shape[i];
        if (shape[i] == -1) {
            if (infer >= 0)
                return xt_fail(XT_ERR_ARG, "%s: only one dim can be -1, got dims %lld and %lld",
                               op, (long long)xt_shown(infer), (long long)xt_shown(i));
            infer = i;
        } else if (shape[i] < 0) {
            return xt_fail(XT_ERR_ARG, "%s: invalid size %lld in dim %lld", op,
                           (long long)shape[i], (long long)xt_shown(i));
        } else {
            overflow |= __builtin_mul_overflow(known, shape[i], &known);
        }
    }
    int64_t numel = xt_numel(t);
    char s[XT_SHAPE_STR];
    if (infer >= 0 && known == 0 && !overflow)
        return xt_fail(XT_ERR_SHAPE, "%s: shape %s is ambiguous for %lld elements: the -1 could "
                       "be any size", op, xt_shape_str(s, ndim, shape), (long long)numel);
    if (overflow || (infer >= 0 ? numel % known != 0 : known != numel))
        return xt_fail(XT_ERR_SHAPE, "%s: shape %s is invalid for %lld elements", op,
                       xt_shape_str(s, ndim, shape), (long long)numel);
    if (infer >= 0) out[infer] = numel / known;
    return XT_OK;
}

/*
 * Strides that show t with shape (same numel) without moving data, PyTorch's rule: split
 * t's dims into chunks that are contiguous among themselves; every run of new dims must
 * exactly cover one chunk. False when no such strides exist.
 */
static bool view_strides(const xt_tensor *t, int32_t ndim, const int64_t *shape, int64_t *strides)
{
    if (t->ndim == 0 || xt_numel(t) == 0) {  /* any shape of that numel works contiguously */
        xt_set_contiguous_strides(ndim, shape, strides);
        return true;
    }
    int32_t vd = ndim - 1;
    int64_t chunk_stride = t->strides[t->ndim - 1], tensor_numel = 1, view_numel = 1;
    for (int32_t td = t->ndim - 1; td >= 0; td--) {
        tensor_numel *= t->shape[td];
        bool chunk_ends = td == 0 || (t->shape[td - 1] != 1 &&
                                      t->strides[td - 1] != tensor_numel * chunk_stride);
        if (!chunk_ends) continue;
        while (vd >= 0 && (view_numel < tensor_numel || shape[vd] == 1)) {
            strides[vd] = view_numel * chunk_stride;
            view_numel *= shape[vd];
            vd--;
        }
        if (view_numel != tensor_numel) return false;
        if (td > 0) {
            chunk_stride = t->strides[td - 1];
            tensor_numel = 1;
            view_numel = 1;
        }
    }
    return vd == -1;
}

xt_tensor *xt_view(xt_tensor *t, int32_t ndim, const int64_t *shape)
{
    if (!t) return xt_fail_null(XT_ERR_ARG, "view: tensor is NULL");
    int64_t sh[XT_MAX_DIMS], st[XT_MAX_DIMS];
    if (infer_shape(t, ndim, shape, sh, "view")) return NULL;
    if (!view_strides(t, ndim, sh, st)) {
        char a[XT_SHAPE_STR], b[XT_SHAPE_STR];
        return xt_fail_null(XT_ERR_SHAPE,
                            "view: the tensor's strides do not allow this view; use reshape "
                            "(shape %s to %s)", xt_shape_str(a, t->ndim, t->shape),
                            xt_shape_str(b, ndim, sh));
    }
    return recorded(view_of(t, ndim, sh, st, t->offset), t, "view", reshape_backward, 0, NULL);
}

/* reshape under the name op (reshape, flatten): a view when possible, else a copy. */
static xt_tensor *reshape_as(xt_tensor *t, int32_t ndim, const int64_t *shape, const char *op)
{
    int64_t sh[XT_MAX_DIMS], st[XT_MAX_DIMS];
    if (infer_shape(t, ndim, shape, sh, op)) return NULL;
    xt_tensor *out;
    if (view_strides(t, ndim, sh, st)) {
        out = view_of(t, ndim, sh, st, t->offset);
    } else {
        /* a contiguous copy made outside the graph; the node goes on t itself */
        xt_tensor *copy = xt_empty(t->ndim, t->shape, t->dtype);
        if (!copy) return NULL;
        xt_copy_kernel(copy, t);
        xt_set_contiguous_strides(ndim, sh, st);
        out = view_of(copy, ndim, sh, st, 0);
        xt_tensor_release(copy);
    }
    return recorded(out, t, op, reshape_backward, 0, NULL);
}

xt_tensor *xt_reshape(xt_tensor *t, int32_t ndim, const int64_t *shape)
{
    if (!t) return xt_fail_null(XT_ERR_ARG, "reshape: tensor is NULL");
    return reshape_as(t, ndim, shape, "reshape");
}

xt_tensor *xt_flatten(xt_tensor *t, int32_t start_dim, int32_t end_dim)
{
    if (!t) return xt_fail_null(XT_ERR_ARG, "flatten: tensor is NULL");
    if (xt_norm_dim(&start_dim, t->ndim, "flatten") || xt_norm_dim(&end_dim, t->ndim, "flatten"))
        return NULL;
    if (start_dim > end_dim)
        return xt_fail_null(XT_ERR_ARG, "flatten: start_dim %lld comes after end_dim %lld",
                            (long long)xt_shown(start_dim), (long long)xt_shown(end_dim));
    if (t->ndim == 0) {  /* as PyTorch: a 0-d tensor flattens to [1] */
        int64_t one = 1;
        return reshape_as(t, 1, &one, "flatten");
    }
    int64_t shape[XT_MAX_DIMS];
    int32_t n = 0;
    for (int32_t i = 0; i < start_dim; i++) shape[n++] = t->shape[i];
    shape[n] = 1;
    for (int32_t i = start_dim; i <= end_dim; i++) shape[n] *= t->shape[i];
    n++;
    for (int32_t i = end_dim + 1; i < t->ndim; i++) shape[n++] = t->shape[i];
    return reshape_as(t, n, shape, "flatten");
}

/* ---- permute and transpose ------------------------------------------------------------- */

/* iargs: the inverse permutation (ndim entries). */
static xt_status permute_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    int32_t ndim = node->inputs[0].ndim, inverse[XT_MAX_DIMS];
    for (int32_t i = 0; i < ndim; i++) inverse[i] = (int32_t)node->iargs[i];
    dinputs[0] = xt_permute(dout, ndim, inverse);
    return dinputs[0] ? XT_OK : xt_last_status();
}

xt_tensor *xt_permute(xt_tensor *t, int32_t ndim, const int32_t *dims)
{
    if (!t) return xt_fail_null(XT_ERR_ARG, "permute: tensor is NULL");
    if (ndim != t->ndim)
        return xt_fail_null(XT_ERR_ARG, "permute: %d dims given for a %d-d tensor", ndim, t->ndim);
    if (ndim > 0 && !dims) return xt_fail_null(XT_ERR_ARG, "permute: dims is NULL");
    int64_t shape[XT_MAX_DIMS], strides[XT_MAX_DIMS], inverse[XT_MAX_DIMS];
    int32_t seen[XT_MAX_DIMS] = {0};
    for (int32_t i = 0; i < ndim; i++) {
        int32_t d = dims[i];
        if (xt_norm_dim(&d, ndim, "permute")) return NULL;
        if (seen[d]++)
            return xt_fail_null(XT_ERR_ARG, "permute: dim %lld appears more than once",
                                (long long)xt_shown(d));
        shape[i] = t->shape[d];
        strides[i] = t->strides[d];
        inverse[d] = i;
    }
    /* ndim distinct dims in [0, ndim): none is missing */
    return recorded(view_of(t, ndim, shape, strides, t->offset), t, "permute", permute_backward,
                    ndim, inverse);
}

/* iargs: 0 dim0, 1 dim1 (normalised). */
static xt_status transpose_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    dinputs[0] = xt_transpose(dout, (int32_t)node->iargs[0], (int32_t)node->iargs[1]);
    return dinputs[0] ? XT_OK : xt_last_status();
}

xt_tensor *xt_transpose(xt_tensor *t, int32_t dim0, int32_t dim1)
{
    if (!t) return xt_fail_null(XT_ERR_ARG, "transpose: tensor is NULL");
    if (xt_norm_dim(&dim0, t->ndim, "transpose") || xt_norm_dim(&dim1, t->ndim, "transpose"))
        return NULL;
    int64_t shape[XT_MAX_DIMS], strides[XT_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    memcpy(strides, t->strides, sizeof strides);
    if (t->ndim > 0) {
        shape[dim0] = t->shape[dim1];
        shape[dim1] = t->shape[dim0];
        strides[dim0] = t->strides[dim1];
        strides[dim1] = t->strides[dim0];
    }
    int64_t args[2] = {dim0, dim1};
    return recorded(view_of(t, t->ndim, shape, strides, t->offset), t, "transpose",
                    transpose_backward, 2, args);
}

/* ---- narrow and select ------------------------------------------------------------------ */

/* iargs: 0 dim, 1 start, 2 length, 3 select (1: dout lacks dim). The gradient is zero
 * outside the slice. */
static xt_status slice_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    const xt_edge *e = &node->inputs[0];
    int32_t dim = (int32_t)node->iargs[0];
    xt_tensor *dx = xt_zeros(e->ndim, e->shape, XT_FLOAT32);
    if (!dx) return xt_last_status();
    xt_tensor *slice = node->iargs[3] ? xt_select(dx, dim, node->iargs[1])
                                      : xt_narrow(dx, dim, node->iargs[1], node->iargs[2]);
    if (!slice) {
        xt_tensor_release(dx);
        return xt_last_status();
    }
    xt_copy_kernel(slice, dout);
    xt_tensor_release(slice);
    dinputs[0] = dx;
    return XT_OK;
}

xt_tensor *xt_narrow(xt_tensor *t, int32_t dim, int64_t start, int64_t length)
{
    if (!t) return xt_fail_null(XT_ERR_ARG, "narrow: tensor is NULL");
    if (t->ndim == 0) return xt_fail_null(XT_ERR_ARG, "narrow: cannot narrow a 0-d tensor");
    if (xt_norm_dim(&dim, t->ndim, "narrow")) return NULL;
    int64_t size = t->shape[dim];
    if (start < 0 || start > size)
        return xt_fail_null(XT_ERR_ARG, "narrow: start %lld out of range for dim %lld of size %lld",
                            (long long)(start < 0 ? start : xt_shown(start)),
                            (long long)xt_shown(dim), (long long)size);
    if (length < 0 || length > size - start)
        return xt_fail_null(XT_ERR_ARG,
                            "narrow: length %lld from start %lld exceeds dim %lld of size %lld",
                            (long long)length, (long long)xt_shown(start), (long long)xt_shown(dim),
                            (long long)size);
    int64_t shape[XT_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    shape[dim] = length;
    int64_t args[4] = {dim, start, length, 0};
    return recorded(view_of(t, t->ndim, shape, t->strides, t->offset + start * t->strides[dim]),
                    t, "narrow", slice_backward, 4, args);
}

xt_tensor *xt_select(xt_tensor *t, int32_t dim, int64_t index)
{
    if (!t) return xt_fail_null(XT_ERR_ARG, "select: tensor is NULL");
    if (t->ndim == 0) return xt_fail_null(XT_ERR_ARG, "select: cannot select from a 0-d tensor");
    if (xt_norm_dim(&dim, t->ndim, "select")) return NULL;
    int64_t size = t->shape[dim], i = index < 0 ? index + size : index;
    if (i < 0 || i >= size)
        return xt_fail_null(XT_ERR_ARG, "select: index %lld out of range for dim %lld of size %lld",
                            (long long)(index < 0 ? index : xt_shown(index)),
                            (long long)xt_shown(dim), (long long)size);
    int64_t shape[XT_MAX_DIMS], strides[XT_MAX_DIMS];
    int32_t n = 0;
    for (int32_t d = 0; d < t->ndim; d++) {
        if (d == dim) continue;
        shape[n] = t->shape[d];
        strides[n++] = t->strides[d];
    }
    int64_t args[4] = {dim, i, 1, 1};
    return recorded(view_of(t, n, shape, strides, t->offset + i * t->strides[dim]), t, "select",
                    slice_backward, 4, args);
}

/* ---- squeeze and unsqueeze ----------------------------------------------------------- */

/* t without the size-1 dims marked in drop. */
static xt_tensor *squeeze_dims(xt_tensor *t, const bool *drop)
{
    int64_t shape[XT_MAX_DIMS], strides[XT_MAX_DIMS];
    int32_t n = 0;
    for (int32_t d = 0; d < t->ndim; d++) {
        if (drop[d] && t->shape[d] == 1) continue;
        shape[n] = t->shape[d];
        strides[n++] = t->strides[d];
    }
    return recorded(view_of(t, n, shape, strides, t->offset), t, "squeeze", reshape_backward, 0,
                    NULL);
}

xt_tensor *xt_squeeze(xt_tensor *t, int32_t dim)
{
    if (!t) return xt_fail_null(XT_ERR_ARG, "squeeze: tensor is NULL");
    if (xt_norm_dim(&dim, t->ndim, "squeeze")) return NULL;
    bool drop[XT_MAX_DIMS] = {false};
    if (t->ndim > 0) drop[dim] = true;  /* a dim whose size is not 1 stays, as PyTorch */
    return squeeze_dims(t, drop);
}

xt_tensor *xt_squeeze_all(xt_tensor *t)
{
    if (!t) return xt_fail_null(XT_ERR_ARG, "squeeze: tensor is NULL");
    bool drop[XT_MAX_DIMS];
    for (int32_t d = 0; d < XT_MAX_DIMS; d++) drop[d] = true;
    return squeeze_dims(t, drop);
}

xt_tensor *xt_unsqueeze(xt_tensor *t, int32_t dim)
{
    if (!t) return xt_fail_null(XT_ERR_ARG, "unsqueeze: tensor is NULL");
    int32_t nd = t->ndim;
    if (nd + 1 > XT_MAX_DIMS)
        return xt_fail_null(XT_ERR_ARG, "unsqueeze: a %d-d tensor cannot get another dim (at most %d)",
                            nd, XT_MAX_DIMS);
    if (dim < -(nd + 1) || dim > nd)
        return xt_fail_null(XT_ERR_ARG, "unsqueeze: dim %lld out of range [%d, %lld] for a %d-d tensor",
                            (long long)(dim < 0 ? dim : xt_shown(dim)), -(nd + 1),
                            (long long)xt_shown(nd), nd);
    if (dim < 0) dim += nd + 1;
    int64_t shape[XT_MAX_DIMS], strides[XT_MAX_DIMS];
    for (int32_t d = 0, s = 0; d <= nd; d++) {
        if (d == dim) {
            shape[d] = 1;
            strides[d] = dim < nd ? t->shape[dim] * t->strides[dim] : 1;
        } else {
            shape[d] = t->shape[s];
            strides[d] = t->strides[s++];
        }
    }
    return recorded(view_of(t, nd + 1, shape, strides, t->offset), t, "unsqueeze",
                    reshape_backward, 0, NULL);
}

/* ---- expand --------------------------------------------------------------------------- */

static xt_status expand_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    const xt_edge *e = &node->inputs[0];
    dinputs[0] = xt_sum_to(dout, e->ndim, e->shape);
    return dinputs[0] ? XT_OK : xt_last_status();
}

xt_tensor *xt_expand(xt_tensor *t, int32_t ndim, const int64_t *shape)
{
    if (!t) return xt_fail_null(XT_ERR_ARG, "expand: tensor is NULL");
    char a[XT_SHAPE_STR], b[XT_SHAPE_STR];
    if (ndim < t->ndim || ndim > XT_MAX_DIMS)
        return xt_fail_null(XT_ERR_ARG, "expand: %d sizes given for a %d-d tensor (need %d to %d)",
                            ndim, t->ndim, t->ndim, XT_MAX_DIMS);
    if (ndim > 0 && !shape) return xt_fail_null(XT_ERR_ARG, "expand: shape is NULL");
    int64_t sh[XT_MAX_DIMS], st[XT_MAX_DIMS];
    int32_t lead = ndim - t->ndim;
    for (int32_t d = 0; d < ndim; d++) {
        int32_t td = d - lead;
        if (shape[d] < -1)
            return xt_fail_null(XT_ERR_ARG, "expand: invalid size %lld in dim %lld of target %s",
                                (long long)shape[d], (long long)xt_shown(d),
                                xt_shape_str(b, ndim, shape));
        if (td < 0) {  /* a new leading dim */
            if (shape[d] < 0)
                return xt_fail_null(XT_ERR_ARG, "expand: size %lld for new leading dim %lld of "
                                    "target %s; new dims need a size >= 0", (long long)shape[d],
                                    (long long)xt_shown(d), xt_shape_str(b, ndim, shape));
            sh[d] = shape[d];
            st[d] = 0;
        } else if (shape[d] == -1 || shape[d] == t->shape[td]) {
            sh[d] = t->shape[td];
            st[d] = t->strides[td];
        } else if (t->shape[td] == 1) {
            sh[d] = shape[d];
            st[d] = 0;
        } else {
            return xt_fail_null(XT_ERR_SHAPE, "expand: cannot expand shape %s to %s: size %lld in "
                                "dim %lld is not 1", xt_shape_str(a, t->ndim, t->shape),
                                xt_shape_str(b, ndim, shape), (long long)t->shape[td],
                                (long long)xt_shown(td));
        }
    }
    return recorded(view_of(t, ndim, sh, st, t->offset), t, "expand", expand_backward, 0, NULL);
}
