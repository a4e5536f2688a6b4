/*
 * cat.c: joining tensors. cat puts n tensors one after another along an existing dim,
 * stack along a new one. Both allocate the result and copy each input into its slice.
 *
 * Inputs share the dtype. For cat they share every size but the dim's (1-d empty tensors
 * are skipped, as PyTorch does, so `acc = cat{acc, x}` can start from an empty tensor);
 * for stack they share the whole shape. The backward hands each input the slice of dout
 * it was copied to: narrow(dout, dim, start, size) for cat, select(dout, dim, i) for stack
 * (views of dout; the engine copies when it keeps them).
 */
#include "internal.h"

#include <string.h>

/* iargs: 0 dim, 1 stacked. Skipped (empty 1-d) inputs of cat get an empty gradient. */
static xt_status join_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    int32_t dim = (int32_t)node->iargs[0];
    bool stacked = node->iargs[1] != 0;
    int64_t start = 0;
    for (int32_t i = 0; i < node->n_inputs; i++) {
        const xt_edge *e = &node->inputs[i];
        bool skipped = !stacked && e->ndim == 1 && e->shape[0] == 0 && dout->ndim != 1;
        int64_t len = stacked ? 1 : skipped ? 0 : e->shape[dim];
        if (xt_node_needs(node, i)) {
            if (skipped) dinputs[i] = xt_zeros(1, e->shape, XT_FLOAT32);
            else if (stacked) dinputs[i] = xt_select(dout, dim, start);
            else dinputs[i] = xt_narrow(dout, dim, start, len);
            if (!dinputs[i]) return xt_last_status();
        }
        start += len;
    }
    return XT_OK;
}

/* Checks shared by cat and stack: a non-empty list of tensors of one dtype. */
static xt_status check_list(int32_t n, xt_tensor *const *tensors, const char *op)
{
    if (n <= 0) return xt_fail(XT_ERR_ARG, "%s: expected a non-empty list of tensors", op);
    if (!tensors) return xt_fail(XT_ERR_ARG, "%s: tensor list is NULL", op);
    for (int32_t i = 0; i < n; i++) {
        if (!tensors[i])
            return xt_fail(XT_ERR_ARG, "%s: tensor %lld is NULL", op, (long long)xt_shown(i));
        if (tensors[i]->dtype != tensors[0]->dtype)
            return xt_fail(XT_ERR_DTYPE, "%s: tensor %lld is %s but tensor %lld is %s", op,
                           (long long)xt_shown(i), xt_dtype_name(tensors[i]->dtype),
                           (long long)xt_shown(0), xt_dtype_name(tensors[0]->dtype));
    }
    return XT_OK;
}

/* The node over all n inputs; out is released on failure. */
static xt_tensor *record_join(xt_tensor *out, int32_t n, xt_tensor *const *tensors, int32_t dim,
                              bool stacked)
{
    if (!xt_record(out, stacked ? "stack" : "cat", join_backward, n, tensors, 0)) {
        xt_tensor_release(out);
        return NULL;
    }
    if (out->grad_fn) {
        out->grad_fn->iargs[0] = dim;
        out->grad_fn->iargs[1] = stacked;
    }
    return out;
}

xt_tensor *xt_cat(int32_t n, xt_tensor *const *tensors, int32_t dim)
{
    if (check_list(n, tensors, "cat")) return NULL;
    /* the first input that is not an empty 1-d tensor sets the shape */
    int32_t first = -1;
    for (int32_t i = 0; i < n && first < 0; i++)
        if (!(tensors[i]->ndim == 1 && tensors[i]->shape[0] == 0)) first = i;
    if (first < 0) first = 0;  /* all empty: the result is empty too */
    const xt_tensor *ref = tensors[first];
    if (ref->ndim == 0)
        return xt_fail_null(XT_ERR_ARG, "cat: tensor %lld is 0-d; 0-d tensors cannot be "
                            "concatenated (use stack)", (long long)xt_shown(first));
    if (xt_norm_dim(&dim, ref->ndim, "cat")) return NULL;

    int64_t shape[XT_MAX_DIMS];
    memcpy(shape, ref->shape, sizeof shape);
    shape[dim] = 0;
    for (int32_t i = 0; i < n; i++) {
        const xt_tensor *t = tensors[i];
        if (t->ndim == 1 && t->shape[0] == 0 && ref->ndim != 1) continue;
        bool fits = t->ndim == ref->ndim;
        for (int32_t d = 0; fits && d < t->ndim; d++) fits = d == dim || t->shape[d] == ref->shape[d];
        if (!fits) {
            char a[XT_SHAPE_STR], b[XT_SHAPE_STR];
            return xt_fail_null(XT_ERR_SHAPE, "cat: tensor %lld has shape %s and tensor %lld has "
                                "shape %s; they must match except in dim %lld",
                                (long long)xt_shown(i), xt_shape_str(a, t->ndim, t->shape),
                                (long long)xt_shown(first),
                                xt_shape_str(b, ref->ndim, ref->shape), (long long)xt_shown(dim));
        }
        shape[dim] += t->shape[dim];
    }

    xt_tensor *out = xt_empty(ref->ndim, shape, ref->dtype);
    if (!out) return NULL;
    int64_t start = 0;
    for (int32_t i = 0; i < n; i++) {
        xt_tensor *t = tensors[i];
        if (t->ndim == 1 && t->shape[0] == 0 && ref->ndim != 1) continue;
        int64_t part[XT_MAX_DIMS];
        memcpy(part, shape, sizeof part);
        part[dim] = t->shape[dim];
        xt_tensor *slice = xt_tensor_new_view(out->storage, out->dtype, out->ndim, part,
                                              out->strides, start * out->strides[dim]);
        if (!slice) {
            xt_tensor_release(out);
            return NULL;
        }
        xt_copy_kernel(slice, t);
        xt_tensor_release(slice);
        start += part[dim];
    }
    return record_join(out, n, tensors, dim, false);
}

xt_tensor *xt_stack(int32_t n, xt_tensor *const *tensors, int32_t dim)
{
    if (check_list(n, tensors, "stack")) return NULL;
    const xt_tensor *ref = tensors[0];
    int32_t nd = ref->ndim;
    if (nd + 1 > XT_MAX_DIMS)
        return xt_fail_null(XT_ERR_ARG, "stack: %d-d tensors cannot get another dim (at most %d)",
                            nd, XT_MAX_DIMS);
    if (dim < -(nd + 1) || dim > nd)
        return xt_fail_null(XT_ERR_ARG, "stack: dim %lld out of range for stacking %d-d tensors",
                            (long long)(dim < 0 ? dim : xt_shown(dim)), nd);
    if (dim < 0) dim += nd + 1;
    for (int32_t i = 1; i < n; i++)
        if (!xt_same_shape(tensors[i], ref)) {
            char a[XT_SHAPE_STR], b[XT_SHAPE_STR];
            return xt_fail_null(XT_ERR_SHAPE, "stack: tensor %lld has shape %s but tensor %lld "
                                "has shape %s; all must be equal", (long long)xt_shown(i),
                                xt_shape_str(a, tensors[i]->ndim, tensors[i]->shape),
                                (long long)xt_shown(0), xt_shape_str(b, nd, ref->shape));
        }

    int64_t shape[XT_MAX_DIMS];
    for (int32_t d = 0, s = 0; d <= nd; d++) shape[d] = d == dim ? n : ref->shape[s++];
    xt_tensor *out = xt_empty(nd + 1, shape, ref->dtype);
    if (!out) return NULL;
    /* input i is out with dim fixed at i: out's shape and strides without dim */
    int64_t part_shape[XT_MAX_DIMS], part_strides[XT_MAX_DIMS];
    for (int32_t d = 0, s = 0; d <= nd; d++) {
        if (d == dim) continue;
        part_shape[s] = out->shape[d];
        part_strides[s++] = out->strides[d];
    }
    for (int32_t i = 0; i < n; i++) {
        xt_tensor *slice = xt_tensor_new_view(out->storage, out->dtype, nd, part_shape,
                                              part_strides, i * out->strides[dim]);
        if (!slice) {
            xt_tensor_release(out);
            return NULL;
        }
        xt_copy_kernel(slice, tensors[i]);
        xt_tensor_release(slice);
    }
    return record_join(out, n, tensors, dim, true);
}
