/*
 * embedding.c: rows of a table picked by index, and the gradient back into the table.
 *
 * weight [V,D], index int64 of any shape with values base..base+V-1 -> out [..., D].
 * The backward adds each dout row into row index of a zero [V,D]; threads split the D
 * columns, so rows picked several times never race and every element sums in index
 * order (the result does not depend on the thread count).
 */
#include "internal.h"

#include <omp.h>
#include <string.h>

/* saved: 0 index (contiguous int64). iargs: 0 base. */
static xt_status embedding_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *index = xt_node_saved(node, 0);
    if (!index) return xt_last_status();
    const xt_edge *e = &node->inputs[0];
    int64_t D = e->shape[1], n = xt_numel(index), base = node->iargs[0];
    xt_tensor *dy_t = xt_contiguous(dout);
    xt_tensor *dw = dy_t ? xt_zeros(2, e->shape, XT_FLOAT32) : NULL;
    if (!dw) {
        xt_tensor_release(dy_t);
        return xt_last_status();
    }
    const int64_t *idx = index->data;
    const float *dy = dy_t->data;
    float *dws = dw->data;
#pragma omp parallel if (n * D > XT_PARALLEL_GRAIN && D > 16)
    {
        /* this thread's columns, in whole 64-byte lines so threads never share one */
        int64_t T = omp_get_num_threads(), t = omp_get_thread_num();
        int64_t per = ((D + T - 1) / T + 15) / 16 * 16;
        int64_t j0 = t * per, j1 = j0 + per < D ? j0 + per : D;
        for (int64_t i = 0; i < n && j0 < j1; i++) {
            float *dst = dws + (idx[i] - base) * D;
            const float *src = dy + i * D;
#pragma omp simd
            for (int64_t j = j0; j < j1; j++) dst[j] += src[j];
        }
    }
    xt_tensor_release(dy_t);
    dinputs[0] = dw;
    return XT_OK;
}

xt_tensor *xt_embedding(xt_tensor *weight, xt_tensor *index, int64_t base)
{
    if (!weight) return xt_fail_null(XT_ERR_ARG, "embedding: weight is NULL");
    if (!index) return xt_fail_null(XT_ERR_ARG, "embedding: index is NULL");
    if (weight->dtype != XT_FLOAT32)
        return xt_fail_null(XT_ERR_DTYPE, "embedding: expected float32 weight, got %s",
                            xt_dtype_name(weight->dtype));
    if (index->dtype != XT_INT64)
        return xt_fail_null(XT_ERR_DTYPE, "embedding: expected int64 index, got %s",
                            xt_dtype_name(index->dtype));
    if (weight->ndim != 2) {
        char a[XT_SHAPE_STR];
        return xt_fail_null(XT_ERR_SHAPE, "embedding: expected weight of shape [V,D], got %s",
                            xt_shape_str(a, weight->ndim, weight->shape));
    }
    if (index->ndim + 1 > XT_MAX_DIMS)
        return xt_fail_null(XT_ERR_SHAPE,
                            "embedding: index has %d dims; the result would have more than %d",
                            index->ndim, XT_MAX_DIMS);
    int64_t V = weight->shape[0], D = weight->shape[1];

    xt_tensor *idx_t = xt_contiguous(index);
    if (!idx_t) return NULL;
    const int64_t *idx = idx_t->data;
    int64_t n = xt_numel(idx_t);
    for (int64_t i = 0; i < n; i++) {
        if ((uint64_t)idx[i] - (uint64_t)base < (uint64_t)V) continue;
        long long v = (long long)idx[i];
        xt_tensor_release(idx_t);
        if (V == 0)
            return xt_fail_null(XT_ERR_ARG, "embedding: index %lld out of range (weight has no rows)", v);
        return xt_fail_null(XT_ERR_ARG, "embedding: index %lld out of range [%lld, %lld]", v,
                            (long long)base, (long long)(base + V - 1));
    }

    int32_t prev = xt_set_grad_enabled(0);
    xt_tensor *wc = xt_contiguous(weight);
    xt_set_grad_enabled(prev);
    int64_t shape[XT_MAX_DIMS];
    memcpy(shape, index->shape, sizeof(int64_t) * (size_t)index->ndim);
    shape[index->ndim] = D;
    xt_tensor *out = wc ? xt_empty(index->ndim + 1, shape, XT_FLOAT32) : NULL;
    if (!out) {
        xt_tensor_release(wc);
        xt_tensor_release(idx_t);
        return NULL;
    }
    const float *w = wc->data;
    float *o = out->data;
#pragma omp parallel for if (n * D > XT_PARALLEL_GRAIN)
    for (int64_t i = 0; i < n; i++)
        memcpy(o + i * D, w + (idx[i] - base) * D, sizeof(float) * (size_t)D);
    xt_tensor_release(wc);

    if (xt_needs_grad(1, &weight)) {
        xt_node *node = xt_node_new("embedding", embedding_backward, 1, &weight);
        if (!node || xt_node_save(node, idx_t)) {
            xt_node_release(node);
            xt_tensor_release(idx_t);
            xt_tensor_release(out);
            return NULL;
        }
        node->iargs[0] = base;
        xt_node_attach(node, out);
    }
    xt_tensor_release(idx_t);
    return out;
}
