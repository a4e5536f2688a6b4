/*
 * test_index.c: cat, stack, index_select, gather and scatter_add. Values against naive
 * loops over coordinates (every dim, non-contiguous tensors and indices, every dtype,
 * sizes past the parallel threshold), index base 0 and 1, results independent of the
 * thread count, finite-difference gradient checks, PyTorch fixtures (tests/fixtures/index,
 * made by make_index_fixtures.py) and every error path.
 */
#include "testlib.h"

/* ---- helpers --------------------------------------------------------------------- */

static xt_tensor *randn_of(int32_t ndim, const int64_t *shape) { return test_randn(ndim, shape, 1, 0); }

/* Advance a C-order coordinate; false after the last. */
static bool next_coord(int64_t *c, int32_t ndim, const int64_t *shape)
{
    for (int32_t d = ndim - 1; d >= 0; d--) {
        if (++c[d] < shape[d]) return true;
        c[d] = 0;
    }
    return false;
}

static bool empty_shape(int32_t ndim, const int64_t *shape)
{
    for (int32_t d = 0; d < ndim; d++)
        if (shape[d] == 0) return true;
    return false;
}

/* index values uniform in [base, base + high), int64 of the given shape */
static xt_tensor *rand_index(int64_t high, int64_t base, int32_t ndim, const int64_t *shape)
{
    return xt_randint(&test_rng, base, base + high, ndim, shape);
}

static int64_t get_i64(const xt_tensor *t, const int64_t *c)
{
    int64_t off = 0;
    for (int32_t d = 0; d < t->ndim; d++) off += c[d] * t->strides[d];
    return ((const int64_t *)t->data)[off];
}

/* ---- cat and stack ------------------------------------------------------------------------ */

/* out (cat of ts along dim) read element by element against the inputs */
static bool cat_matches(const xt_tensor *out, int32_t n, xt_tensor *const *ts, int32_t dim)
{
    int64_t start = 0;
    for (int32_t i = 0; i < n; i++) {
        const xt_tensor *t = ts[i];
        if (t->ndim == 1 && t->shape[0] == 0 && out->ndim != 1) continue;
        int64_t c[XT_MAX_DIMS] = {0}, oc[XT_MAX_DIMS];
        if (!empty_shape(t->ndim, t->shape)) do {
            memcpy(oc, c, sizeof oc);
            oc[dim] += start;
            if (xt_get_as_double(out, oc) != xt_get_as_double(t, c)) return false;
        } while (next_coord(c, t->ndim, t->shape));
        start += t->shape[dim];
    }
    return start == out->shape[dim];
}

static xt_tensor *cat_fn(xt_tensor *const *in, const void *ctx)
{
    return xt_cat(3, in, *(const int32_t *)ctx);
}

static xt_tensor *stack_fn(xt_tensor *const *in, const void *ctx)
{
    return xt_stack(3, in, *(const int32_t *)ctx);
}

static void test_cat(void)
{
    int64_t s1[3] = {2, 3, 4}, s2[3] = {2, 1, 4}, s3[3] = {2, 5, 4};
    xt_tensor *ts[3] = {randn_of(3, s1), randn_of(3, s2), randn_of(3, s3)};
    xt_tensor *out = xt_cat(3, ts, 1);
    CHECK(out && out->shape[1] == 9 && cat_matches(out, 3, ts, 1));
    xt_tensor_release(out);
    out = xt_cat(3, ts, -2);
    CHECK(out && out->shape[1] == 9 && cat_matches(out, 3, ts, 1));
    xt_tensor_release(out);
    /* a transposed input, cat along the first and the last dim */
    int64_t s4[3] = {4, 3, 2};
    xt_tensor *p = randn_of(3, s4), *pt = xt_permute(p, 3, (int32_t[]){2, 1, 0});  /* [2,3,4] */
    xt_tensor *same[3] = {ts[0], pt, ts[0]};
    for (int32_t dim = 0; dim < 3; dim += 2) {
        out = xt_cat(3, same, dim);
        CHECK(out && out->shape[dim] == 3 * s1[dim] && cat_matches(out, 3, same, dim));
        xt_tensor_release(out);
    }
    /* int64 and uint8 */
    int64_t n5 = 5, n2 = 2;
    xt_tensor *li[2] = {xt_arange(0, 5, 1, XT_INT64), xt_arange(10, 12, 1, XT_INT64)};
    out = xt_cat(2, li, 0);
    CHECK(out && out->dtype == XT_INT64 && out->shape[0] == 7 && cat_matches(out, 2, li, 0));
    xt_tensor_release(out);
    xt_tensor *u8[2] = {xt_full(1, &n5, XT_UINT8, 7), xt_full(1, &n2, XT_UINT8, 200)};
    out = xt_cat(2, u8, 0);
    CHECK(out && out->dtype == XT_UINT8 && cat_matches(out, 2, u8, 0));
    xt_tensor_release(out);
    /* an empty 1-d tensor is skipped, as PyTorch does */
    int64_t zero = 0;
    xt_tensor *e = xt_empty(1, &zero, XT_FLOAT32);
    xt_tensor *with_empty[3] = {e, ts[0], ts[2]};
    out = xt_cat(3, with_empty, 1);
    CHECK(out && out->ndim == 3 && out->shape[1] == 8 && cat_matches(out, 3, with_empty, 1));
    xt_tensor_release(out);
    xt_tensor *empties[2] = {e, e};
    out = xt_cat(2, empties, 0);
    CHECK(out && out->ndim == 1 && out->shape[0] == 0);
    xt_tensor_release(out);

    /* gradients: each input gets its slice (also through the empty skipped one) */
    int32_t dim = 1;
    CHECK(test_gradcheck("cat dim 1", cat_fn, &dim, 3, ts));
    dim = 0;
    xt_tensor *eq[3] = {randn_of(3, s1), randn_of(3, s1), randn_of(3, s1)};
    CHECK(test_gradcheck("cat dim 0", cat_fn, &dim, 3, eq));
    dim = 2;
    CHECK(test_gradcheck("cat dim 2", cat_fn, &dim, 3, eq));
    xt_set_requires_grad(ts[0], 1);
    xt_set_requires_grad(e, 1);
    out = xt_cat(3, with_empty, 1);
    xt_tensor *dout = out ? xt_full(out->ndim, out->shape, XT_FLOAT32, 1) : NULL;
    CHECK(out && xt_backward(out, dout, 0) == XT_OK && e->grad && e->grad->shape[0] == 0 &&
          ts[0]->grad && xt_same_shape(ts[0]->grad, ts[0]));
    xt_set_grad(e, NULL);
    xt_set_grad(ts[0], NULL);
    xt_set_requires_grad(e, 0);
    xt_set_requires_grad(ts[0], 0);
    xt_tensor_release(dout);
    xt_tensor_release(out);

    /* stack */
    out = xt_stack(3, eq, 1);
    CHECK(out && out->ndim == 4 && out->shape[1] == 3);
    bool ok = out != NULL;
    for (int32_t i = 0; ok && i < 3; i++) {
        xt_tensor *sel = xt_select(out, 1, i);
        ok = test_max_diff(sel, eq[i]) == 0;
        xt_tensor_release(sel);
    }
    CHECK(ok);
    xt_tensor_release(out);
    out = xt_stack(3, eq, -1);  /* a new last dim */
    CHECK(out && out->ndim == 4 && out->shape[3] == 3);
    xt_tensor *last = out ? xt_select(out, 3, 2) : NULL;
    CHECK(test_max_diff(last, eq[2]) == 0);
    xt_tensor_release(last);
    xt_tensor_release(out);
    xt_tensor *scalars[3] = {xt_full(0, NULL, XT_FLOAT32, 1), xt_full(0, NULL, XT_FLOAT32, 2),
                             xt_full(0, NULL, XT_FLOAT32, 3)};
    out = xt_stack(3, scalars, 0);
    CHECK(out && out->ndim == 1 && out->shape[0] == 3 && test_f32(out)[2] == 3);
    xt_tensor_release(out);
    for (dim = 0; dim <= 3; dim += 3) {
        CHECK(test_gradcheck(dim ? "stack dim 3" : "stack dim 0", stack_fn, &dim, 3, eq));
    }

    /* errors */
    xt_set_message_base(1);
    CHECK(!xt_cat(0, ts, 0) && test_error_has("cat: expected a non-empty list of tensors"));
    CHECK(!xt_cat(2, NULL, 0) && test_error_has("cat: tensor list is NULL"));
    xt_tensor *with_null[2] = {ts[0], NULL};
    CHECK(!xt_cat(2, with_null, 0) && test_error_has("cat: tensor 2 is NULL"));
    xt_tensor *mixed[2] = {ts[0], li[0]};
    CHECK(!xt_cat(2, mixed, 0) && xt_last_status() == XT_ERR_DTYPE &&
          test_error_has("cat: tensor 2 is int64 but tensor 1 is float32"));
    CHECK(!xt_cat(3, ts, 0) && xt_last_status() == XT_ERR_SHAPE &&
          test_error_has("cat: tensor 2 has shape [2,1,4] and tensor 1 has shape [2,3,4]; "
                         "they must match except in dim 1"));
    xt_tensor *ranks[2] = {ts[0], li[0]};
    CHECK(!xt_cat(2, ranks, 0));
    xt_tensor *r2[2] = {eq[0], p};
    CHECK(!xt_cat(2, r2, 0) && test_error_has("they must match except in dim 1"));
    CHECK(!xt_cat(3, scalars, 0) && test_error_has("cat: tensor 1 is 0-d"));
    CHECK(!xt_cat(3, eq, 3) && test_error_has("cat: dim 4 out of range for a 3-d tensor"));
    CHECK(!xt_stack(3, ts, 0) && test_error_has("stack: tensor 2 has shape [2,1,4] but tensor 1 "
                                                "has shape [2,3,4]; all must be equal"));
    CHECK(!xt_stack(3, eq, 4) && test_error_has("stack: dim 5 out of range for stacking 3-d tensors"));
    CHECK(!xt_stack(3, eq, -5) && test_error_has("stack: dim -5 out of range"));
    CHECK(!xt_stack(0, eq, 0) && test_error_has("stack: expected a non-empty list"));
    xt_set_message_base(0);

    xt_tensor *all[] = {ts[0], ts[1], ts[2], p, pt, li[0], li[1], u8[0], u8[1], e, eq[0], eq[1],
                        eq[2], scalars[0], scalars[1], scalars[2]};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) xt_tensor_release(all[i]);
}

/* ---- index_select ---------------------------------------------------------------------------- */

static bool index_select_matches(const xt_tensor *out, const xt_tensor *t, int32_t dim,
                                 const xt_tensor *index, int64_t base)
{
    if (!out || out->ndim != t->ndim) return false;
    int64_t c[XT_MAX_DIMS] = {0}, tc[XT_MAX_DIMS];
    if (empty_shape(out->ndim, out->shape)) return true;
    do {
        memcpy(tc, c, sizeof tc);
        int64_t j = c[dim];
        tc[dim] = get_i64(index, &j) - base;
        if (xt_get_as_double(out, c) != xt_get_as_double(t, tc)) return false;
    } while (next_coord(c, out->ndim, out->shape));
    return true;
}

typedef struct idx_ctx {
    int32_t dim;
    xt_tensor *index;
    int64_t base;
} idx_ctx;

static xt_tensor *index_select_fn(xt_tensor *const *in, const void *vctx)
{
    const idx_ctx *ctx = vctx;
    return xt_index_select(in[0], ctx->dim, ctx->index, ctx->base);
}

static void test_index_select(void)
{
    int64_t s[3] = {3, 4, 5}, n = 7;
    xt_tensor *t = randn_of(3, s);
    for (int32_t dim = 0; dim < 3; dim++)
        for (int64_t base = 0; base <= 1; base++) {
            xt_tensor *index = rand_index(s[dim], base, 1, &n);  /* repeats are likely */
            xt_tensor *out = xt_index_select(t, dim, index, base);
            CHECK(out && out->shape[dim] == 7 && index_select_matches(out, t, dim, index, base));
            xt_tensor_release(out);
            idx_ctx ctx = {dim, index, base};
            CHECK(test_gradcheck("index_select", index_select_fn, &ctx, 1, &t));
            xt_tensor_release(index);
        }
    /* non-contiguous tensor and index, negative dim, other dtypes, 0-d and empty index */
    xt_tensor *tt = xt_transpose(t, 0, 2);  /* [5,4,3] */
    int64_t n8 = 8;
    xt_tensor *wide = rand_index(5, 1, 1, &n8);
    xt_tensor *strided = xt_tensor_new_view(wide->storage, XT_INT64, 1, (int64_t[]){4},
                                            (int64_t[]){2}, 1);
    xt_tensor *out = xt_index_select(tt, -3, strided, 1);
    CHECK(out && out->shape[0] == 4 && index_select_matches(out, tt, 0, strided, 1));
    xt_tensor_release(out);
    xt_tensor *ti = xt_to_dtype(t, XT_INT64), *tu = xt_to_dtype(t, XT_UINT8);
    xt_tensor *index = rand_index(4, 0, 1, &n);
    out = xt_index_select(ti, 1, index, 0);
    CHECK(out && out->dtype == XT_INT64 && index_select_matches(out, ti, 1, index, 0));
    xt_tensor_release(out);
    out = xt_index_select(tu, 1, index, 0);
    CHECK(out && out->dtype == XT_UINT8 && index_select_matches(out, tu, 1, index, 0));
    xt_tensor_release(out);
    int64_t three = 3, zero = 0;
    xt_tensor *i0 = xt_full(0, NULL, XT_INT64, 3), *ie = xt_empty(1, &zero, XT_INT64);
    out = xt_index_select(t, 2, i0, 1);
    CHECK(out && out->ndim == 3 && out->shape[2] == 1 && index_select_matches(out, t, 2, i0, 1));
    xt_tensor_release(out);
    out = xt_index_select(t, 1, ie, 1);
    CHECK(out && out->shape[1] == 0);
    xt_tensor_release(out);
    /* past the parallel threshold, forward and backward (row accumulation in order) */
    int64_t sb[2] = {4000, 48}, nb = 3000;
    xt_tensor *big = randn_of(2, sb), *bidx = rand_index(100, 1, 1, &nb);
    xt_set_requires_grad(big, 1);
    out = xt_index_select(big, 0, bidx, 1);
    CHECK(out && index_select_matches(out, big, 0, bidx, 1));
    xt_tensor *dout = out ? randn_of(2, out->shape) : NULL;
    CHECK(out && xt_backward(out, dout, 0) == XT_OK);
    double *want = calloc(4000 * 48, sizeof(double));
    for (int64_t j = 0; j < nb; j++)
        for (int64_t c = 0; c < 48; c++)
            want[(((int64_t *)bidx->data)[j] - 1) * 48 + c] += test_f32(dout)[j * 48 + c];
    double worst = 0;
    for (int64_t i = 0; big->grad && i < 4000 * 48; i++)
        worst = fmax(worst, fabs(test_f32(big->grad)[i] - want[i]));
    CHECK(big->grad && worst < 1e-4);
    free(want);
    xt_tensor_release(dout);
    xt_tensor_release(out);

    /* errors: the index as given and the range in the caller's base */
    xt_set_message_base(1);
    xt_tensor *bad = xt_full(1, &three, XT_INT64, 6);
    CHECK(!xt_index_select(t, 2, bad, 1) && xt_last_status() == XT_ERR_ARG &&
          test_error_has("index_select: index 6 out of range [1, 5] for dim 3"));
    xt_set_message_base(0);
    ((int64_t *)bad->data)[0] = 0;
    ((int64_t *)bad->data)[1] = -1;
    CHECK(!xt_index_select(t, 0, bad, 0) &&
          test_error_has("index_select: index -1 out of range [0, 2] for dim 0"));
    CHECK(!xt_index_select(t, 0, t, 0) && xt_last_status() == XT_ERR_DTYPE &&
          test_error_has("index_select: expected an int64 index, got float32"));
    int64_t s22[2] = {2, 2};
    xt_tensor *i2 = xt_zeros(2, s22, XT_INT64);
    CHECK(!xt_index_select(t, 0, i2, 0) && test_error_has("index_select: index must be 1-d, got shape [2,2]"));
    CHECK(!xt_index_select(t, 3, index, 0) && test_error_has("index_select: dim 3 out of range"));
    CHECK(!xt_index_select(i0, 0, index, 0) && test_error_has("index_select: cannot index a 0-d tensor"));
    CHECK(!xt_index_select(t, 0, NULL, 0) && test_error_has("index_select: index is NULL"));
    xt_tensor *s0t = xt_empty(2, (int64_t[]){0, 3}, XT_FLOAT32);
    CHECK(!xt_index_select(s0t, 0, i0, 1) &&
          test_error_has("index_select: index 3 out of range: dim 0 has size 0"));

    xt_tensor *all[] = {t, tt, wide, strided, ti, tu, index, i0, ie, big, bidx, bad, i2, s0t};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) xt_tensor_release(all[i]);
}

/* ---- gather and scatter_add ---------------------------------------------------------------- */

/* gather: out[p] = t[p with p[dim] = index[p] - base] */
static bool gather_matches(const xt_tensor *out, const xt_tensor *t, int32_t dim,
                           const xt_tensor *index, int64_t base)
{
    if (!out || !xt_same_shape(out, index)) return false;
    int64_t c[XT_MAX_DIMS] = {0}, tc[XT_MAX_DIMS];
    if (empty_shape(index->ndim, index->shape)) return true;
    do {
        memcpy(tc, c, sizeof tc);
        tc[dim] = get_i64(index, c) - base;
        if (xt_get_as_double(out, c) != xt_get_as_double(t, tc)) return false;
    } while (next_coord(c, index->ndim, index->shape));
    return true;
}

/* scatter_add reference in double (C order of t's shape) */
static double *scatter_ref(const xt_tensor *t, int32_t dim, const xt_tensor *index,
                           const xt_tensor *src, int64_t base)
{
    int64_t n = xt_numel(t);
    double *r = malloc(sizeof(double) * (size_t)(n + 1));
    int64_t c[XT_MAX_DIMS] = {0};
    for (int64_t i = 0; i < n; i++, next_coord(c, t->ndim, t->shape)) r[i] = xt_get_as_double(t, c);
    memset(c, 0, sizeof c);
    if (!empty_shape(index->ndim, index->shape)) do {
        int64_t flat = 0;
        for (int32_t d = 0; d < t->ndim; d++)
            flat = flat * t->shape[d] + (d == dim ? get_i64(index, c) - base : c[d]);
        r[flat] += xt_get_as_double(src, c);
    } while (next_coord(c, index->ndim, index->shape));
    return r;
}

static double ref_err(const xt_tensor *out, const double *ref)
{
    if (!out) return INFINITY;
    double worst = 0;
    int64_t c[XT_MAX_DIMS] = {0};
    for (int64_t i = 0; i < xt_numel(out); i++, next_coord(c, out->ndim, out->shape))
        worst = fmax(worst, fabs(xt_get_as_double(out, c) - ref[i]));
    return worst;
}

static xt_tensor *gather_fn(xt_tensor *const *in, const void *vctx)
{
    const idx_ctx *ctx = vctx;
    return xt_gather(in[0], ctx->dim, ctx->index, ctx->base);
}

static xt_tensor *scatter_add_fn(xt_tensor *const *in, const void *vctx)
{
    const idx_ctx *ctx = vctx;
    return xt_scatter_add(in[0], ctx->dim, ctx->index, in[1], ctx->base);
}

static void test_gather_scatter(void)
{
    int64_t s[3] = {3, 4, 5};
    xt_tensor *t = randn_of(3, s);
    for (int32_t dim = 0; dim < 3; dim++) {
        int64_t base = dim % 2;
        /* index smaller than t outside dim, longer than t along dim */
        int64_t is[3] = {2, 3, 4};
        is[dim] = 6;
        xt_tensor *index = rand_index(s[dim], base, 3, is);
        xt_tensor *out = xt_gather(t, dim, index, base);
        CHECK(gather_matches(out, t, dim, index, base));
        xt_tensor_release(out);
        idx_ctx ctx = {dim, index, base};
        CHECK(test_gradcheck("gather", gather_fn, &ctx, 1, &t));

        /* scatter_add: src as index, and src larger than index */
        int64_t ss[3] = {3, 4, 5};
        ss[dim] = 7;
        xt_tensor *src = randn_of(3, ss);
        out = xt_scatter_add(t, dim, index, src, base);
        double *ref = scatter_ref(t, dim, index, src, base);
        CHECK(out && xt_same_shape(out, t) && ref_err(out, ref) < 1e-5);
        free(ref);
        xt_tensor_release(out);
        xt_tensor *in[2] = {t, src};
        CHECK(test_gradcheck("scatter_add", scatter_add_fn, &ctx, 2, in));
        xt_tensor_release(src);
        xt_tensor_release(index);
    }
    /* non-contiguous tensor, index and src; negative dim; int64 data */
    xt_tensor *tt = xt_transpose(t, 0, 2);              /* [5,4,3] */
    int64_t is[3] = {10, 4, 3}, ws[3] = {5, 4, 6};
    xt_tensor *iw = rand_index(5, 1, 3, is);
    xt_tensor *index = xt_tensor_new_view(iw->storage, XT_INT64, 3, (int64_t[]){5, 4, 3},
                                          (int64_t[]){24, 3, 1}, 0);   /* every other row */
    xt_tensor *w = randn_of(3, ws);
    xt_tensor *src = xt_narrow(w, 2, 1, 3);             /* [5,4,3], row stride 6 */
    xt_tensor *out = xt_gather(tt, -3, index, 1);
    CHECK(gather_matches(out, tt, 0, index, 1));
    xt_tensor_release(out);
    out = xt_scatter_add(tt, -3, index, src, 1);
    double *ref = scatter_ref(tt, 0, index, src, 1);
    CHECK(out && ref_err(out, ref) < 1e-5);
    free(ref);
    xt_tensor_release(out);
    xt_tensor *ti = xt_to_dtype(t, XT_INT64), *si = xt_to_dtype(t, XT_INT64);
    xt_tensor *ix = rand_index(4, 0, 3, s);
    out = xt_gather(ti, 1, ix, 0);
    CHECK(out && out->dtype == XT_INT64 && gather_matches(out, ti, 1, ix, 0));
    xt_tensor_release(out);
    out = xt_scatter_add(ti, 1, ix, si, 0);
    ref = scatter_ref(ti, 1, ix, si, 0);
    CHECK(out && out->dtype == XT_INT64 && ref_err(out, ref) == 0);
    free(ref);
    xt_tensor_release(out);
    xt_tensor *tu = xt_to_dtype(t, XT_UINT8);
    out = xt_gather(tu, 1, ix, 0);
    CHECK(out && out->dtype == XT_UINT8 && gather_matches(out, tu, 1, ix, 0));
    xt_tensor_release(out);

    /* past the parallel threshold; the sums do not depend on the thread count */
    int64_t sb[2] = {64, 600}, ib[2] = {64, 1000};
    xt_tensor *big = randn_of(2, sb), *bidx = rand_index(50, 1, 2, ib), *bsrc = randn_of(2, ib);
    out = xt_gather(big, 1, bidx, 1);
    CHECK(gather_matches(out, big, 1, bidx, 1));
    xt_tensor_release(out);
    int32_t threads = xt_get_num_threads();
    xt_set_num_threads(1);
    xt_tensor *one = xt_scatter_add(big, 1, bidx, bsrc, 1);
    xt_set_num_threads(threads > 1 ? threads : 2);
    xt_tensor *many = xt_scatter_add(big, 1, bidx, bsrc, 1);
    xt_set_num_threads(threads);
    CHECK(one && many && memcmp(one->data, many->data, sizeof(float) * 64 * 600) == 0);
    ref = scatter_ref(big, 1, bidx, bsrc, 1);
    CHECK(ref_err(many, ref) < 1e-4);
    free(ref);
    xt_tensor_release(one);
    xt_tensor_release(many);

    /* 0-d: a scalar gathers and scatters at index base */
    xt_tensor *sc = xt_full(0, NULL, XT_FLOAT32, 2.5), *i0 = xt_full(0, NULL, XT_INT64, 1);
    out = xt_gather(sc, 0, i0, 1);
    CHECK(out && out->ndim == 0 && test_f32(out)[0] == 2.5f);
    xt_tensor_release(out);
    out = xt_scatter_add(sc, 0, i0, sc, 1);
    CHECK(out && out->ndim == 0 && test_f32(out)[0] == 5.0f);
    xt_tensor_release(out);

    /* errors */
    xt_set_message_base(1);
    int64_t i3[3] = {3, 4, 5};
    xt_tensor *bad = xt_full(3, i3, XT_INT64, 1);
    ((int64_t *)bad->data)[17] = 5;
    CHECK(!xt_gather(t, 1, bad, 1) && xt_last_status() == XT_ERR_ARG &&
          test_error_has("gather: index 5 out of range [1, 4] for dim 2"));
    CHECK(!xt_scatter_add(t, 1, bad, t, 1) &&
          test_error_has("scatter_add: index 5 out of range [1, 4] for dim 2"));
    ((int64_t *)bad->data)[17] = 0;
    CHECK(!xt_gather(t, 1, bad, 1) && test_error_has("gather: index 0 out of range [1, 4]"));
    xt_set_message_base(0);
    int64_t i2[2] = {3, 4}, ibig[3] = {4, 4, 5}, srcsmall[3] = {3, 2, 5};
    xt_tensor *idx2 = xt_zeros(2, i2, XT_INT64), *idxbig = xt_zeros(3, ibig, XT_INT64);
    xt_tensor *small = randn_of(3, srcsmall), *zeros_i = xt_zeros(3, i3, XT_INT64);
    CHECK(!xt_gather(t, 1, idx2, 0) && xt_last_status() == XT_ERR_SHAPE &&
          test_error_has("gather: index of shape [3,4] does not fit tensor of shape [3,4,5] "
                         "(same number of dims, sizes no larger outside dim)"));
    CHECK(!xt_gather(t, 1, idxbig, 0) && test_error_has("gather: index of shape [4,4,5] does not fit"));
    xt_tensor *ok_along_dim = xt_gather(t, 0, idxbig, 0);  /* longer along dim is fine */
    CHECK(ok_along_dim && ok_along_dim->shape[0] == 4);
    xt_tensor_release(ok_along_dim);
    CHECK(!xt_scatter_add(t, 1, zeros_i, small, 0) && xt_last_status() == XT_ERR_SHAPE &&
          test_error_has("scatter_add: index of shape [3,4,5] does not fit src of shape [3,2,5] "
                         "(same number of dims, sizes no larger)"));
    CHECK(!xt_scatter_add(t, 1, zeros_i, ti, 0) && xt_last_status() == XT_ERR_DTYPE &&
          test_error_has("scatter_add: src is int64 but the tensor is float32"));
    CHECK(!xt_scatter_add(tu, 1, zeros_i, tu, 0) &&
          test_error_has("scatter_add: expected a float32 or int64 tensor, got uint8"));
    CHECK(!xt_gather(t, 1, t, 0) && test_error_has("gather: expected an int64 index, got float32"));
    CHECK(!xt_gather(t, 5, zeros_i, 0) && test_error_has("gather: dim 5 out of range for a 3-d tensor"));
    CHECK(!xt_gather(NULL, 0, zeros_i, 0) && test_error_has("gather: tensor is NULL"));
    CHECK(!xt_scatter_add(t, 0, zeros_i, NULL, 0) && test_error_has("scatter_add: src is NULL"));
    CHECK(!xt_scatter_add(t, 0, NULL, t, 0) && test_error_has("scatter_add: index is NULL"));

    xt_tensor *all[] = {t, tt, iw, index, w, src, ti, si, ix, tu, big, bidx, bsrc, sc, i0, bad,
                        idx2, idxbig, small, zeros_i};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) xt_tensor_release(all[i]);
}

/* ---- PyTorch fixtures -------------------------------------------------------------------------- */

static void test_fixtures(void)
{
    const char *cases[] = {"cat", "stack", "index_select_d1", "index_select_d0", "gather_d1",
                           "gather_d0", "scatter_add_d1", "scatter_add_d0"};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *name = cases[c];
        int n = strcmp(name, "cat") == 0 || strcmp(name, "stack") == 0 ? 3
                : strncmp(name, "scatter", 7) == 0 ? 3 : 2;
        xt_tensor *in[3] = {NULL, NULL, NULL};
        char part[16];
        for (int i = 0; i < n; i++) {
            snprintf(part, sizeof part, "in%d", i + 1);
            in[i] = test_fixture("index", name, part);
            if (in[i] && in[i]->dtype == XT_FLOAT32) xt_set_requires_grad(in[i], 1);
        }
        xt_tensor *args = test_fixture("index", name, "args");
        xt_tensor *want = test_fixture("index", name, "out"), *dout = test_fixture("index", name, "dout");
        if (!in[n - 1] || !args || !want || !dout) {
            CHECK(false);
            continue;
        }
        int32_t dim = (int32_t)((int64_t *)args->data)[0];
        xt_tensor *out;
        if (name[0] == 'c') out = xt_cat(3, in, dim);
        else if (name[1] == 't') out = xt_stack(3, in, dim);
        else if (name[0] == 'i') out = xt_index_select(in[0], dim, in[1], 1);
        else if (name[0] == 'g') out = xt_gather(in[0], dim, in[1], 1);
        else out = xt_scatter_add(in[0], dim, in[1], in[2], 1);
        CHECK(out && xt_same_shape(out, want) && test_close(name, out, want, 1e-6));
        CHECK(out && xt_backward(out, dout, 0) == XT_OK);
        for (int i = 0; i < n; i++) {
            if (in[i]->dtype != XT_FLOAT32) continue;
            snprintf(part, sizeof part, "grad%d", i + 1);
            xt_tensor *g = test_fixture("index", name, part);
            CHECK(in[i]->grad && g && xt_same_shape(in[i]->grad, g) &&
                  test_close(name, in[i]->grad, g, 1e-5));
            xt_tensor_release(g);
        }
        for (int i = 0; i < 3; i++) xt_tensor_release(in[i]);
        xt_tensor *rest[] = {args, want, dout, out};
        for (int i = 0; i < 4; i++) xt_tensor_release(rest[i]);
    }
}

int main(void)
{
    test_seed("test_index", 20240704);
    test_cat();
    test_index_select();
    test_gather_scatter();
    test_fixtures();
    return check_report("test_index");
}
