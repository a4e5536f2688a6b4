/*
 * dropout.c: zero each element with probability p, scale the kept ones by 1/(1-p).
 *
 * The mask comes from the counter-based Philox stream as create.c's fills draw it:
 * element i (in C order) is kept when lane i % 4 of philox(seed, offset + i / 4) is at
 * least p * 2^32, and a draw of n elements advances rng->offset by ceil(n / 4). So the
 * mask depends only on (seed, offset), not on the thread count, and the backward
 * regenerates it from the (seed, offset) saved in the node instead of keeping a mask the
 * size of x.
 *
 * p == 0 returns a copy of x (recorded as "clone"; the generator does not advance);
 * p == 1 returns zeros (the generator does not advance either).
 */
#include "internal.h"

/* out[i] = kept(i) ? in[i] * scale : 0 over n contiguous elements. */
static void dropout_kernel(float *out, const float *in, int64_t n, uint64_t seed,
                           uint64_t offset, uint64_t threshold, float scale)
{
    int64_t blocks = (n + 3) / 4;
#pragma omp parallel for schedule(static) if (n > XT_PARALLEL_GRAIN)
    for (int64_t b = 0; b < blocks; b++) {
        uint32_t r[4];
        xt_philox(seed, offset + (uint64_t)b, r);
        int64_t i0 = b * 4, m = n - i0 < 4 ? n - i0 : 4;
        for (int64_t k = 0; k < m; k++)
            out[i0 + k] = (uint64_t)r[k] >= threshold ? in[i0 + k] * scale : 0.0f;
    }
}

static uint64_t drop_threshold(double p)
{
    double t = p * 4294967296.0;  /* p * 2^32: a lane below it drops its element */
    return t >= 4294967296.0 ? (uint64_t)1 << 32 : (uint64_t)t;
}

/* iargs: 0 seed, 1 offset, 2 all dropped (p == 1). fargs: 0 p. */
static xt_status dropout_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    double p = node->fargs[0];
    if (node->iargs[2]) {
        dinputs[0] = xt_zeros(dout->ndim, dout->shape, XT_FLOAT32);
        return dinputs[0] ? XT_OK : xt_last_status();
    }
    xt_tensor *dy = xt_contiguous(dout);
    xt_tensor *dx = dy ? xt_empty(dy->ndim, dy->shape, XT_FLOAT32) : NULL;
    if (!dx) {
        xt_tensor_release(dy);
        return xt_last_status();
    }
    dropout_kernel(dx->data, dy->data, xt_numel(dy), (uint64_t)node->iargs[0],
                   (uint64_t)node->iargs[1], drop_threshold(p), (float)(1.0 / (1.0 - p)));
    xt_tensor_release(dy);
    dinputs[0] = dx;
    return XT_OK;
}

xt_tensor *xt_dropout(xt_tensor *x, xt_rng *rng, double p)
{
    if (!x) return xt_fail_null(XT_ERR_ARG, "dropout: x is NULL");
    if (x->dtype != XT_FLOAT32)
        return xt_fail_null(XT_ERR_DTYPE, "dropout: expected float32 x, got %s",
                            xt_dtype_name(x->dtype));
    if (!(p >= 0 && p <= 1))
        return xt_fail_null(XT_ERR_ARG, "dropout: probability p must be in [0, 1], got %g", p);
    if (!rng) return xt_fail_null(XT_ERR_ARG, "dropout: rng is NULL");
    if (p == 0) return xt_clone(x);

    xt_tensor *out;
    uint64_t seed = rng->seed, offset = rng->offset;
    if (p == 1) {
        out = xt_zeros(x->ndim, x->shape, XT_FLOAT32);
    } else {
        int32_t prev = xt_set_grad_enabled(0);
        xt_tensor *xc = xt_contiguous(x);
        xt_set_grad_enabled(prev);
        out = xc ? xt_empty(x->ndim, x->shape, XT_FLOAT32) : NULL;
        if (out) {
            int64_t n = xt_numel(xc);
            dropout_kernel(out->data, xc->data, n, seed, offset, drop_threshold(p),
                           (float)(1.0 / (1.0 - p)));
            rng->offset += (uint64_t)((n + 3) / 4);
        }
        xt_tensor_release(xc);
    }
    if (!out) return NULL;
    if (!xt_record(out, "dropout", dropout_backward, 1, &x, 0)) {
        xt_tensor_release(out);
        return NULL;
    }
    if (out->grad_fn) {
        out->grad_fn->iargs[0] = (int64_t)seed;
        out->grad_fn->iargs[1] = (int64_t)offset;
        out->grad_fn->iargs[2] = p == 1;
        out->grad_fn->fargs[0] = p;
    }
    return out;
}
