/*
 * create.c: making tensors (empty, full, arange, random, ...), filling them,
 * copying between any strides and dtypes, and dtype conversion.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

static xt_status check_shape(int32_t ndim, const int64_t *shape, const char *op)
{
    if (ndim < 0 || ndim > XT_MAX_DIMS)
        return xt_fail(XT_ERR_ARG, "%s: %d dims given, at most %d are supported", op, ndim,
                       XT_MAX_DIMS);
    for (int32_t i = 0; i < ndim; i++)
        if (shape[i] < 0)
            return xt_fail(XT_ERR_ARG, "%s: negative size %lld in dim %lld", op,
                           (long long)shape[i], (long long)xt_shown(i));
    /* The strides are products of sizes even when another dim is 0, so they must fit too;
     * 8 bytes per element is the widest dtype. */
    int64_t span = 8;
    for (int32_t i = 0; i < ndim; i++)
        if (shape[i] > 0 && __builtin_mul_overflow(span, shape[i], &span)) {
            char buf[XT_SHAPE_STR];
            return xt_fail(XT_ERR_ARG, "%s: shape %s is too large to address", op,
                           xt_shape_str(buf, ndim, shape));
        }
    return XT_OK;
}

static xt_status check_dtype(int32_t dtype, const char *op)
{
    if (dtype != XT_FLOAT32 && dtype != XT_INT64 && dtype != XT_UINT8)
        return xt_fail(XT_ERR_DTYPE, "%s: unknown dtype %d", op, dtype);
    return XT_OK;
}

xt_tensor *xt_empty(int32_t ndim, const int64_t *shape, int32_t dtype)
{
    if (check_shape(ndim, shape, "empty") || check_dtype(dtype, "empty")) return NULL;
    int64_t n = xt_shape_numel(ndim, shape);
    xt_storage *s = xt_storage_new(n * xt_dtype_size(dtype));
    if (!s) return NULL;
    int64_t strides[XT_MAX_DIMS];
    xt_set_contiguous_strides(ndim, shape, strides);
    xt_tensor *t = xt_tensor_new_view(s, dtype, ndim, shape, strides, 0);
    xt_storage_release(s);
    return t;
}

/* Fill a contiguous buffer of n elements. */
static void fill_contiguous(void *data, int32_t dtype, int64_t n, double value)
{
    if (dtype == XT_FLOAT32) {
        float *p = data, v = (float)value;
#pragma omp parallel for simd if (n > XT_PARALLEL_GRAIN)
        for (int64_t i = 0; i < n; i++) p[i] = v;
    } else if (dtype == XT_INT64) {
        int64_t *p = data, v = (int64_t)value;
        for (int64_t i = 0; i < n; i++) p[i] = v;
    } else {
        memset(data, (uint8_t)value, (size_t)n);
    }
}

xt_tensor *xt_zeros(int32_t ndim, const int64_t *shape, int32_t dtype)
{
    xt_tensor *t = xt_empty(ndim, shape, dtype);
    if (t) memset(t->data, 0, (size_t)(xt_numel(t) * xt_dtype_size(dtype)));
    return t;
}

xt_tensor *xt_full(int32_t ndim, const int64_t *shape, int32_t dtype, double value)
{
    xt_tensor *t = xt_empty(ndim, shape, dtype);
    if (t) fill_contiguous(t->data, dtype, xt_numel(t), value);
    return t;
}

xt_tensor *xt_from_data(int32_t ndim, const int64_t *shape, int32_t dtype, const void *data)
{
    xt_tensor *t = xt_empty(ndim, shape, dtype);
    if (t && data) memcpy(t->data, data, (size_t)(xt_numel(t) * xt_dtype_size(dtype)));
    return t;
}

static void store_double(xt_tensor *t, int64_t i, double v)
{
    if (t->dtype == XT_FLOAT32) ((float *)t->data)[i] = (float)v;
    else if (t->dtype == XT_INT64) ((int64_t *)t->data)[i] = (int64_t)v;
    else ((uint8_t *)t->data)[i] = (uint8_t)v;
}

xt_tensor *xt_arange(double start, double end, double step, int32_t dtype)
{
    if (step == 0 || !isfinite(start) || !isfinite(end) || !isfinite(step))
        return xt_fail_null(XT_ERR_ARG, "arange: step must be nonzero and bounds finite");
    if ((end - start) / step > 1e12)
        return xt_fail_null(XT_ERR_ARG, "arange: too many elements");
    int64_t n = (int64_t)ceil((end - start) / step);
    if (n < 0) n = 0;
    xt_tensor *t = xt_empty(1, &n, dtype);
    if (!t) return NULL;
    for (int64_t i = 0; i < n; i++) store_double(t, i, start + (double)i * step);
    return t;
}

xt_tensor *xt_linspace(double start, double end, int64_t steps, int32_t dtype)
{
    if (steps < 0) return xt_fail_null(XT_ERR_ARG, "linspace: steps must be >= 0, got %lld",
                                       (long long)steps);
    xt_tensor *t = xt_empty(1, &steps, dtype);
    if (!t) return NULL;
    double delta = steps > 1 ? (end - start) / (double)(steps - 1) : 0;
    for (int64_t i = 0; i < steps; i++)
        store_double(t, i, i == steps - 1 && steps > 1 ? end : start + (double)i * delta);
    return t;
}

xt_tensor *xt_eye(int64_t n, int64_t m, int32_t dtype)
{
    int64_t shape[2] = {n, m < 0 ? n : m};
    xt_tensor *t = xt_zeros(2, shape, dtype);
    if (!t) return NULL;
    for (int64_t i = 0; i < n && i < shape[1]; i++) store_double(t, i * shape[1] + i, 1);
    return t;
}

/* ---- random ----------------------------------------------------------------------
 * Element i of a draw uses counter offset + i / 4, lane i % 4. */

static inline float uniform01(uint32_t u) { return (float)(u >> 8) * (1.0f / 16777216.0f); }

static void fill_uniform(float *p, int64_t n, xt_rng *rng, float low, float high)
{
    uint64_t base = rng->offset;
    int64_t blocks = (n + 3) / 4;
#pragma omp parallel for if (n > XT_PARALLEL_GRAIN)
    for (int64_t b = 0; b < blocks; b++) {
        uint32_t r[4];
        xt_philox(rng->seed, base + (uint64_t)b, r);
        for (int64_t k = 0; k < 4 && b * 4 + k < n; k++)
            p[b * 4 + k] = low + (high - low) * uniform01(r[k]);
    }
    rng->offset += (uint64_t)blocks;
}

static void fill_normal(float *p, int64_t n, xt_rng *rng, float mean, float std)
{
    uint64_t base = rng->offset;
    int64_t blocks = (n + 3) / 4;
#pragma omp parallel for if (n > XT_PARALLEL_GRAIN)
    for (int64_t b = 0; b < blocks; b++) {
        uint32_t r[4];
        xt_philox(rng->seed, base + (uint64_t)b, r);
        float z[4];
        for (int k = 0; k < 4; k += 2) {
            /* Box-Muller; u1 in (0,1] so the log is finite */
            double u1 = ((double)(r[k] >> 8) + 1.0) / 16777216.0;
            double u2 = (double)(r[k + 1] >> 8) / 16777216.0;
            double radius = sqrt(-2.0 * log(u1));
            z[k] = (float)(radius * cos(2.0 * M_PI * u2));
            z[k + 1] = (float)(radius * sin(2.0 * M_PI * u2));
        }
        for (int64_t k = 0; k < 4 && b * 4 + k < n; k++) p[b * 4 + k] = mean + std * z[k];
    }
    rng->offset += (uint64_t)blocks;
}

xt_tensor *xt_rand(xt_rng *rng, int32_t ndim, const int64_t *shape)
{
    xt_tensor *t = xt_empty(ndim, shape, XT_FLOAT32);
    if (t) fill_uniform(t->data, xt_numel(t), rng, 0.0f, 1.0f);
    return t;
}

xt_tensor *xt_randn(xt_rng *rng, int32_t ndim, const int64_t *shape)
{
    xt_tensor *t = xt_empty(ndim, shape, XT_FLOAT32);
    if (t) fill_normal(t->data, xt_numel(t), rng, 0.0f, 1.0f);
    return t;
}

xt_tensor *xt_randint(xt_rng *rng, int64_t low, int64_t high, int32_t ndim, const int64_t *shape)
{
    if (high <= low)
        return xt_fail_null(XT_ERR_ARG, "randint: high (%lld) must be greater than low (%lld)",
                            (long long)high, (long long)low);
    xt_tensor *t = xt_empty(ndim, shape, XT_INT64);
    if (!t) return NULL;
    int64_t n = xt_numel(t), *p = t->data;
    uint64_t range = (uint64_t)(high - low), base = rng->offset;
    int64_t blocks = (n + 1) / 2;
    for (int64_t b = 0; b < blocks; b++) {
        uint32_t r[4];
        xt_philox(rng->seed, base + (uint64_t)b, r);
        for (int64_t k = 0; k < 2 && b * 2 + k < n; k++) {
            uint64_t u = ((uint64_t)r[2 * k] << 32) | r[2 * k + 1];
            p[b * 2 + k] = low + (int64_t)(u % range);
        }
    }
    rng->offset += (uint64_t)blocks;
    return t;
}

xt_tensor *xt_randperm(xt_rng *rng, int64_t n, int64_t base)
{
    if (n < 0) return xt_fail_null(XT_ERR_ARG, "randperm: n must be >= 0, got %lld", (long long)n);
    xt_tensor *t = xt_empty(1, &n, XT_INT64);
    if (!t) return NULL;
    int64_t *p = t->data;
    for (int64_t i = 0; i < n; i++) p[i] = base + i;
    for (int64_t i = n - 1; i > 0; i--) {  /* Fisher-Yates */
        uint32_t r[4];
        xt_philox(rng->seed, rng->offset++, r);
        uint64_t u = ((uint64_t)r[0] << 32) | r[1];
        int64_t j = (int64_t)(u % (uint64_t)(i + 1));
        int64_t tmp = p[i];
        p[i] = p[j];
        p[j] = tmp;
    }
    return t;
}

/* ---- copy between any strides and dtypes ------------------------------------------ */

static void copy_run(char *dst, int32_t dd, int64_t ds, const char *src, int32_t sd, int64_t ss,
                     int64_t n)
{
    if (dd == XT_FLOAT32 && sd == XT_FLOAT32) {
        float *d = (float *)dst;
        const float *s = (const float *)src;
        if (ds == 1 && ss == 1) memcpy(d, s, (size_t)n * 4);
        else for (int64_t i = 0; i < n; i++) d[i * ds] = s[i * ss];
    } else if (dd == XT_FLOAT32 && sd == XT_UINT8) {
        float *d = (float *)dst;
        const uint8_t *s = (const uint8_t *)src;
        for (int64_t i = 0; i < n; i++) d[i * ds] = s[i * ss];
    } else if (dd == XT_FLOAT32 && sd == XT_INT64) {
        float *d = (float *)dst;
        const int64_t *s = (const int64_t *)src;
        for (int64_t i = 0; i < n; i++) d[i * ds] = (float)s[i * ss];
    } else if (dd == XT_INT64 && sd == XT_INT64) {
        int64_t *d = (int64_t *)dst;
        const int64_t *s = (const int64_t *)src;
        for (int64_t i = 0; i < n; i++) d[i * ds] = s[i * ss];
    } else if (dd == XT_INT64 && sd == XT_FLOAT32) {
        int64_t *d = (int64_t *)dst;
        const float *s = (const float *)src;
        for (int64_t i = 0; i < n; i++) {
            float v = s[i * ss];  /* truncation toward zero, as PyTorch; NaN/inf give 0 */
            d[i * ds] = isfinite(v) && fabsf(v) < 9.2e18f ? (int64_t)v : 0;
        }
    } else if (dd == XT_INT64 && sd == XT_UINT8) {
        int64_t *d = (int64_t *)dst;
        const uint8_t *s = (const uint8_t *)src;
        for (int64_t i = 0; i < n; i++) d[i * ds] = s[i * ss];
    } else if (dd == XT_UINT8 && sd == XT_UINT8) {
        uint8_t *d = (uint8_t *)dst;
        const uint8_t *s = (const uint8_t *)src;
        for (int64_t i = 0; i < n; i++) d[i * ds] = s[i * ss];
    } else if (dd == XT_UINT8 && sd == XT_FLOAT32) {
        uint8_t *d = (uint8_t *)dst;
        const float *s = (const float *)src;
        for (int64_t i = 0; i < n; i++) {
            float v = s[i * ss];  /* wraps modulo 256 like a C cast of the integer part */
            d[i * ds] = isfinite(v) && fabsf(v) < 9.2e18f ? (uint8_t)(int64_t)v : 0;
        }
    } else {  /* uint8 <- int64 */
        uint8_t *d = (uint8_t *)dst;
        const int64_t *s = (const int64_t *)src;
        for (int64_t i = 0; i < n; i++) d[i * ds] = (uint8_t)s[i * ss];
    }
}

/* dst[...] = src broadcast to dst's shape; no autograd, no checks. */
void xt_copy_kernel(xt_tensor *dst, const xt_tensor *src)
{
    int64_t strides[2][XT_MAX_DIMS];
    memcpy(strides[0], dst->strides, sizeof dst->strides);
    xt_broadcast_strides(src, dst->ndim, dst->shape, strides[1]);
    xt_iter it;
    xt_iter_init(&it, 2, dst->ndim, dst->shape, strides);
    int64_t dsz = xt_dtype_size(dst->dtype), ssz = xt_dtype_size(src->dtype);
    int64_t total = it.outer * it.inner;
    if (it.outer == 1 && it.inner > XT_PARALLEL_GRAIN) {
        /* one long run: split it into chunks across threads */
        int64_t chunk = XT_PARALLEL_GRAIN;
        int64_t nchunks = (it.inner + chunk - 1) / chunk;
#pragma omp parallel for
        for (int64_t c = 0; c < nchunks; c++) {
            int64_t start = c * chunk, n = it.inner - start < chunk ? it.inner - start : chunk;
            copy_run((char *)dst->data + start * it.strides[0][0] * dsz, dst->dtype,
                     it.strides[0][0], (const char *)src->data + start * it.strides[1][0] * ssz,
                     src->dtype, it.strides[1][0], n);
        }
        return;
    }
#pragma omp parallel for if (total > XT_PARALLEL_GRAIN)
    for (int64_t o = 0; o < it.outer; o++) {
        int64_t off[XT_ITER_MAX_OPS];
        xt_iter_offsets(&it, o, off);
        copy_run((char *)dst->data + off[0] * dsz, dst->dtype, it.strides[0][it.ndim - 1],
                 (const char *)src->data + off[1] * ssz, src->dtype, it.strides[1][it.ndim - 1],
                 it.inner);
    }
}

xt_status xt_copy_(xt_tensor *dst, xt_tensor *src)
{
    int32_t nd;
    int64_t shape[XT_MAX_DIMS];
    if (xt_broadcast_shapes(dst->ndim, dst->shape, src->ndim, src->shape, &nd, shape, "copy_"))
        return xt_last_status();
    if (nd != dst->ndim || memcmp(shape, dst->shape, sizeof(int64_t) * (size_t)nd) != 0) {
        char a[XT_SHAPE_STR], b[XT_SHAPE_STR];
        return xt_fail(XT_ERR_SHAPE, "copy_: source of shape %s does not broadcast to %s",
                       xt_shape_str(a, src->ndim, src->shape),
                       xt_shape_str(b, dst->ndim, dst->shape));
    }
    if (xt_check_inplace(dst, "copy_")) return xt_last_status();
    xt_tensor *tmp = NULL;
    if (src->storage == dst->storage) {  /* overlapping views: copy through a temporary */
        tmp = xt_clone(src);
        if (!tmp) return xt_last_status();
        src = tmp;
    }
    xt_copy_kernel(dst, src);
    xt_tensor_release(tmp);
    xt_bump_version(dst);
    return XT_OK;
}

xt_status xt_fill_(xt_tensor *t, double value)
{
    if (xt_check_inplace(t, "fill_")) return xt_last_status();
    if (xt_is_contiguous(t)) {
        fill_contiguous(t->data, t->dtype, xt_numel(t), value);
    } else {
        int64_t one = 1;
        xt_tensor *v = xt_full(0, &one, t->dtype, value);
        if (!v) return xt_last_status();
        xt_copy_kernel(t, v);
        xt_tensor_release(v);
    }
    xt_bump_version(t);
    return XT_OK;
}

typedef void (*float_filler)(float *p, int64_t n, xt_rng *rng, float a, float b);

static xt_status random_fill_(xt_tensor *t, const char *op, float_filler fill, xt_rng *rng,
                              float a, float b)
{
    if (t->dtype != XT_FLOAT32)
        return xt_fail(XT_ERR_DTYPE, "%s: expected a float32 tensor, got %s", op,
                       xt_dtype_name(t->dtype));
    if (xt_check_inplace(t, op)) return xt_last_status();
    if (xt_is_contiguous(t)) {
        fill(t->data, xt_numel(t), rng, a, b);
    } else {
        xt_tensor *tmp = xt_empty(t->ndim, t->shape, XT_FLOAT32);
        if (!tmp) return xt_last_status();
        fill(tmp->data, xt_numel(tmp), rng, a, b);
        xt_copy_kernel(t, tmp);
        xt_tensor_release(tmp);
    }
    xt_bump_version(t);
    return XT_OK;
}

xt_status xt_uniform_(xt_tensor *t, xt_rng *rng, double low, double high)
{
    return random_fill_(t, "uniform_", fill_uniform, rng, (float)low, (float)high);
}

xt_status xt_normal_(xt_tensor *t, xt_rng *rng, double mean, double std)
{
    return random_fill_(t, "normal_", fill_normal, rng, (float)mean, (float)std);
}

static void fill_bernoulli(float *p, int64_t n, xt_rng *rng, float prob, float unused)
{
    (void)unused;
    fill_uniform(p, n, rng, 0.0f, 1.0f);
#pragma omp parallel for simd if (n > XT_PARALLEL_GRAIN)
    for (int64_t i = 0; i < n; i++) p[i] = p[i] < prob ? 1.0f : 0.0f;
}

xt_status xt_bernoulli_(xt_tensor *t, xt_rng *rng, double p)
{
    if (!(p >= 0 && p <= 1))
        return xt_fail(XT_ERR_ARG, "bernoulli_: probability must be in [0,1], got %g", p);
    return random_fill_(t, "bernoulli_", fill_bernoulli, rng, (float)p, 0.0f);
}

/* ---- clone, contiguous, dtype conversion (differentiable) ---------------------------- */

static xt_status identity_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    (void)node;
    xt_tensor_retain(dout);
    dinputs[0] = dout;
    return XT_OK;
}

static xt_tensor *copy_as(xt_tensor *t, int32_t dtype, const char *op)
{
    xt_tensor *out = xt_empty(t->ndim, t->shape, dtype);
    if (!out) return NULL;
    xt_copy_kernel(out, t);
    if (dtype == XT_FLOAT32 && t->dtype == XT_FLOAT32 &&
        !xt_record(out, op, identity_backward, 1, &t, 0)) {
        xt_tensor_release(out);
        return NULL;
    }
    return out;
}

xt_tensor *xt_clone(xt_tensor *t) { return copy_as(t, t->dtype, "clone"); }

xt_tensor *xt_contiguous(xt_tensor *t)
{
    if (xt_is_contiguous(t)) {
        xt_tensor_retain(t);
        return t;
    }
    return copy_as(t, t->dtype, "contiguous");
}

xt_tensor *xt_to_dtype(xt_tensor *t, int32_t dtype)
{
    if (check_dtype(dtype, "to")) return NULL;
    if (dtype == t->dtype) {
        xt_tensor_retain(t);
        return t;
    }
    return copy_as(t, dtype, "to");
}
