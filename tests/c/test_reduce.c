/*
 * test_reduce.c: the reductions (sum, mean, amax, amin, prod, logsumexp, var), max/min/
 * argmax/argmin along a dim, cumsum, softmax/log_softmax and sum_to.
 *
 * Values against naive double loops over many shapes, every set of dims, keepdim, negative
 * dims, non-contiguous and expanded inputs and empty dims; int64 and uint8 inputs; ties and
 * NaN; the chunked paths of long reductions; a finite-difference gradient check of every
 * differentiable op and dims combination; backward with a non-contiguous gradient; every
 * error path; bitwise thread-count independence; PyTorch fixtures (tests/fixtures/reduce,
 * made by make_reduce_fixtures.py).
 */
#include "check.h"
#include "internal.h"
#include "testlib.h"

enum { SEED = 20240612 };

/* ---- helpers ------------------------------------------------------------------------- */

static xt_tensor *f32_tensor(int32_t ndim, const int64_t *shape, const float *data)
{
    return xt_from_data(ndim, shape, XT_FLOAT32, data);
}

/* Element i of t in C order, whatever its strides. */
static double elem(const xt_tensor *t, int64_t i)
{
    int64_t idx[XT_MAX_DIMS];
    for (int32_t d = t->ndim - 1; d >= 0; d--) {
        idx[d] = i % t->shape[d];
        i /= t->shape[d];
    }
    return xt_get_as_double(t, idx);
}

static bool same_value(double got, double want, double tol)
{
    if (isnan(want)) return isnan(got);
    if (isinf(want)) return got == want;
    return fabs(got - want) <= tol * (1 + fabs(want));
}

/* got (any dtype, any strides) matches want[0..n) within relative tol; reports the first miss. */
static bool matches(const char *what, const xt_tensor *got, const double *want, int64_t n,
                    double tol)
{
    if (!got) {
        fprintf(stderr, "%s: failed: %s\n", what, xt_last_error());
        return false;
    }
    if (xt_numel(got) != n) {
        fprintf(stderr, "%s: %lld elements, expected %lld\n", what, (long long)xt_numel(got),
                (long long)n);
        return false;
    }
    for (int64_t i = 0; i < n; i++)
        if (!same_value(elem(got, i), want[i], tol)) {
            fprintf(stderr, "%s: element %lld is %.9g, expected %.9g\n", what, (long long)i,
                    elem(got, i), want[i]);
            return false;
        }
    return true;
}

static bool has_shape(const xt_tensor *t, int32_t ndim, const int64_t *shape)
{
    if (!t || t->ndim != ndim) return false;
    for (int32_t d = 0; d < ndim; d++)
        if (t->shape[d] != shape[d]) return false;
    return true;
}

/* ---- naive references ------------------------------------------------------------------ */

enum { NAIVE_VAR = 100 };

/* The reduction of x over the dims in mask, in double, out[o] for the kept dims in C order.
 * op: an xt_reduce_op or NAIVE_VAR (with correction). NaN-free inputs only. */
static void naive_reduce(int32_t op, const xt_tensor *x, uint32_t mask, double correction,
                         double *out)
{
    int64_t n_out = 1, n_red = 1;
    for (int32_t d = 0; d < x->ndim; d++) {
        if ((mask >> d) & 1u) n_red *= x->shape[d];
        else n_out *= x->shape[d];
    }
    double *aux = calloc((size_t)(n_out + 1), sizeof *aux);
    for (int64_t o = 0; o < n_out; o++)
        out[o] = op == XT_PROD ? 1 : op == XT_MAX || op == XT_LOGSUMEXP ? -INFINITY
                 : op == XT_MIN ? INFINITY : 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int64_t i = 0; i < xt_numel(x); i++) {
            int64_t rest = i, o = 0, mul = 1;
            for (int32_t d = x->ndim - 1; d >= 0; d--) {
                int64_t k = rest % x->shape[d];
                rest /= x->shape[d];
                if (!((mask >> d) & 1u)) {
                    o += k * mul;
                    mul *= x->shape[d];
                }
            }
            double v = elem(x, i);
            if (pass == 0) {
                switch (op) {
                case XT_PROD: out[o] *= v; break;
                case XT_MAX:
                case XT_LOGSUMEXP: out[o] = v > out[o] ? v : out[o]; break;
                case XT_MIN: out[o] = v < out[o] ? v : out[o]; break;
                default: out[o] += v;
                }
            } else if (op == XT_LOGSUMEXP) {
                double m = isfinite(out[o]) ? out[o] : 0;
                aux[o] += exp(v - m);
            } else if (op == NAIVE_VAR) {
                double mean = out[o] / (double)n_red;
                aux[o] += (v - mean) * (v - mean);
            }
        }
    }
    for (int64_t o = 0; o < n_out; o++) {
        if (op == XT_MEAN) out[o] /= (double)n_red;
        if (op == XT_LOGSUMEXP) out[o] = log(aux[o]) + (isfinite(out[o]) ? out[o] : 0);
        if (op == NAIVE_VAR) {
            double denom = n_red - correction > 0 ? n_red - correction : 0;
            out[o] = aux[o] / denom;
        }
    }
    free(aux);
}

/* The dims of mask as a list, every other one negative. */
static int32_t mask_dims(uint32_t mask, int32_t ndim, int32_t *dims)
{
    int32_t n = 0;
    for (int32_t d = 0; d < ndim; d++)
        if ((mask >> d) & 1u) {
            dims[n] = n % 2 ? d - ndim : d;
            n++;
        }
    return n;
}

static void reduced_shape(const xt_tensor *x, uint32_t mask, int32_t keepdim, int32_t *ndim,
                          int64_t *shape)
{
    *ndim = 0;
    for (int32_t d = 0; d < x->ndim; d++) {
        if (!((mask >> d) & 1u)) shape[(*ndim)++] = x->shape[d];
        else if (keepdim) shape[(*ndim)++] = 1;
    }
}

static const char *const op_names[] = {"sum", "mean", "amax", "amin", "prod", "logsumexp"};

/* Every op and var over every set of x's dims, with and without keepdim, against naive. */
static void check_all_reductions(const char *label, const xt_tensor *x)
{
    uint32_t all = x->ndim > 0 ? (1u << x->ndim) - 1 : 0;
    int64_t most = 1;   /* the largest output: every dim, counting an empty one as 1 */
    for (int32_t d = 0; d < x->ndim; d++) most *= x->shape[d] > 0 ? x->shape[d] : 1;
    double *want = malloc(sizeof(double) * (size_t)most);
    for (uint32_t mask = 0; mask <= all; mask++) {
        int32_t dims[XT_MAX_DIMS];
        int32_t ndims = mask_dims(mask, x->ndim, dims);
        if (x->ndim > 0 && ndims == 0) continue;   /* ndims == 0 means all dims */
        bool empty_dim = false;
        for (int32_t d = 0; d < x->ndim; d++)
            if (((mask >> d) & 1u) && x->shape[d] == 0) empty_dim = true;
        for (int32_t keepdim = 0; keepdim < 2; keepdim++) {
            int32_t ondim;
            int64_t oshape[XT_MAX_DIMS];
            reduced_shape(x, mask, keepdim, &ondim, oshape);
            int64_t n_out = xt_shape_numel(ondim, oshape);
            for (int32_t op = 0; op <= XT_LOGSUMEXP + 2; op++) {
                bool is_var = op > XT_LOGSUMEXP;
                double correction = op == XT_LOGSUMEXP + 2 ? 0 : 1;
                xt_tensor *y = is_var ? xt_var((xt_tensor *)x, ndims, dims, correction, keepdim)
                                      : xt_reduce(op, (xt_tensor *)x, ndims, dims, keepdim);
                char what[160];
                snprintf(what, sizeof what, "%s %s mask %u keepdim %d", label,
                         is_var ? (correction ? "var" : "var(c=0)") : op_names[op], mask, keepdim);
                if (empty_dim && (op == XT_MAX || op == XT_MIN)) {
                    CHECK(!y && test_error_has("of size 0"));
                    continue;
                }
                naive_reduce(is_var ? NAIVE_VAR : op, x, mask, correction, want);
                bool ok = has_shape(y, ondim, oshape) && y->dtype == XT_FLOAT32 &&
                          matches(what, y, want, n_out, 2e-5);
                if (!ok) fprintf(stderr, "%s: wrong\n", what);
                CHECK(ok);
                xt_tensor_release(y);
            }
        }
    }
    free(want);
}

/* ---- values ------------------------------------------------------------------------- */

static void test_reduce_values(void)
{
    static const struct {
        int32_t ndim;
        int64_t shape[4];
    } shapes[] = {
        {0, {0}},         {1, {5}},          {1, {100}},       {2, {3, 4}},
        {2, {17, 33}},    {2, {3, 70}},      {2, {40, 3}},     {2, {4, 1}},
        {2, {1, 1}},      {3, {2, 3, 4}},    {3, {5, 1, 19}},  {4, {2, 1, 3, 5}},
        {3, {2, 0, 3}},   {1, {0}},          {3, {3, 300, 2}}, {2, {600, 20}},
    };
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        xt_tensor *x = test_randn(shapes[k].ndim, shapes[k].shape, 0.3, 1.0);
        char label[64];
        snprintf(label, sizeof label, "shape #%zu", k);
        check_all_reductions(label, x);
        if (x->ndim >= 2) {
            /* the same data seen through a transposed and a narrowed view */
            xt_tensor *t = xt_transpose(x, 0, x->ndim - 1);
            snprintf(label, sizeof label, "shape #%zu transposed", k);
            check_all_reductions(label, t);
            xt_tensor_release(t);
            if (x->shape[x->ndim - 1] > 2) {
                xt_tensor *n = xt_narrow(x, x->ndim - 1, 1, x->shape[x->ndim - 1] - 2);
                snprintf(label, sizeof label, "shape #%zu narrowed", k);
                check_all_reductions(label, n);
                xt_tensor_release(n);
            }
        }
        xt_tensor_release(x);
    }
    /* expanded inputs (stride 0) and a permuted 3-d view */
    int64_t s15[2] = {1, 5}, s41[2] = {4, 1}, s45[2] = {4, 5}, s234[3] = {2, 3, 4};
    xt_tensor *a = test_randn(2, s15, 1, 0), *b = test_randn(2, s41, 1, 0);
    xt_tensor *ea = xt_expand(a, 2, s45), *eb = xt_expand(b, 2, s45);
    check_all_reductions("expanded rows", ea);
    check_all_reductions("expanded columns", eb);
    xt_tensor *c = test_randn(3, s234, 1, 0);
    xt_tensor *p = xt_permute(c, 3, (int32_t[]){2, 0, 1});
    check_all_reductions("permuted", p);
    xt_tensor *tensors[] = {a, b, ea, eb, c, p};
    for (int i = 0; i < 6; i++) xt_tensor_release(tensors[i]);
}

/* Empty reductions take the identity; an empty output is fine. */
static void test_reduce_empty(void)
{
    int64_t s[3] = {2, 0, 3};
    xt_tensor *x = xt_zeros(3, s, XT_FLOAT32);
    int32_t d1 = 1, d0 = 0;
    const double expect[] = {0, NAN, 0, 0, 1, -INFINITY};
    for (int32_t op = 0; op <= XT_LOGSUMEXP; op++) {
        xt_tensor *y = xt_reduce(op, x, 1, &d1, 0);
        if (op == XT_MAX || op == XT_MIN) {
            CHECK(!y && test_error_has("dim 1 of size 0"));
            continue;
        }
        double want[6];
        for (int i = 0; i < 6; i++) want[i] = expect[op];
        CHECK(y && y->ndim == 2 && y->shape[0] == 2 && y->shape[1] == 3 && matches(op_names[op], y, want, 6, 0));
        xt_tensor_release(y);
        /* over dim 0 the output itself is empty: [0,3] */
        y = xt_reduce(op, x, 1, &d0, 0);
        CHECK(y && y->ndim == 2 && y->shape[0] == 0 && y->shape[1] == 3);
        xt_tensor_release(y);
    }
    xt_tensor *v = xt_var(x, 1, &d1, 1, 0);
    double nans[6] = {NAN, NAN, NAN, NAN, NAN, NAN};
    CHECK(matches("var of nothing", v, nans, 6, 0));
    xt_tensor_release(v);
    xt_tensor *all = xt_reduce(XT_SUM, x, 0, NULL, 0);
    CHECK(all && all->ndim == 0 && ((float *)all->data)[0] == 0);
    xt_tensor_release(all);
    xt_tensor *idx = NULL;
    CHECK(!xt_max_dim(x, 1, 0, 0, &idx) && !idx && test_error_has("max: cannot reduce over dim 1"));
    CHECK(!xt_argmin(x, -2, 0, 0) && test_error_has("argmin: cannot reduce over dim 1"));
    xt_tensor *am = xt_argmax(x, 2, 0, 0);
    CHECK(am && am->ndim == 2 && am->shape[0] == 2 && am->shape[1] == 0);
    xt_tensor_release(am);
    xt_tensor *cs = xt_cumsum(x, 1), *sm = xt_softmax(x, 1), *ls = xt_log_softmax(x, 0);
    CHECK(cs && sm && ls && xt_numel(cs) == 0 && xt_numel(sm) == 0 && xt_numel(ls) == 0);
    xt_tensor_release(cs);
    xt_tensor_release(sm);
    xt_tensor_release(ls);
    xt_tensor_release(x);

    /* a 0-d tensor: its one element, dims 0 and -1 allowed */
    float three = 3;
    xt_tensor *z = f32_tensor(0, NULL, &three);
    int32_t dm1 = -1;
    xt_tensor *zs = xt_reduce(XT_SUM, z, 1, &dm1, 1), *zi = NULL;
    xt_tensor *zm = xt_max_dim(z, 0, 0, 0, &zi);
    xt_tensor *zsm = xt_softmax(z, 0), *zls = xt_log_softmax(z, -1), *zc = xt_cumsum(z, 0);
    CHECK(zs && zs->ndim == 0 && ((float *)zs->data)[0] == 3);
    CHECK(zm && zi && zm->ndim == 0 && ((float *)zm->data)[0] == 3 && ((int64_t *)zi->data)[0] == 0);
    CHECK(zsm && ((float *)zsm->data)[0] == 1 && zls && ((float *)zls->data)[0] == 0);
    CHECK(zc && ((float *)zc->data)[0] == 3);
    CHECK(!xt_reduce(XT_SUM, z, 1, (int32_t[]){1}, 0) && test_error_has("out of range"));
    xt_tensor *zt[] = {z, zs, zi, zm, zsm, zls, zc};
    for (int i = 0; i < 7; i++) xt_tensor_release(zt[i]);
}

/* int64 stays exact (and wraps like two's complement); uint8 sums into int64. */
static void test_reduce_integers(void)
{
    int64_t data[12] = {5, -3, 7, 2, 9, 9, -11, 4, 0, 6, 1, 1};
    int64_t s[2] = {3, 4};
    xt_tensor *x = xt_from_data(2, s, XT_INT64, data);
    int32_t d1 = 1, d0 = 0;
    xt_tensor *sum = xt_reduce(XT_SUM, x, 1, &d1, 0), *prod = xt_reduce(XT_PROD, x, 1, &d1, 0);
    xt_tensor *mx = xt_reduce(XT_MAX, x, 1, &d0, 0), *mn = xt_reduce(XT_MIN, x, 0, NULL, 0);
    CHECK(sum && sum->dtype == XT_INT64 && prod && prod->dtype == XT_INT64);
    double want_sum[3] = {11, 11, 8}, want_prod[3] = {-210, -3564, 0}, want_max[4] = {9, 9, 7, 4};
    double want_min[1] = {-11};
    CHECK(matches("int64 sum", sum, want_sum, 3, 0) && matches("int64 prod", prod, want_prod, 3, 0));
    CHECK(mx && mx->dtype == XT_INT64 && matches("int64 amax", mx, want_max, 4, 0));
    CHECK(mn && mn->dtype == XT_INT64 && mn->ndim == 0 && matches("int64 amin", mn, want_min, 1, 0));
    xt_tensor *lse = xt_reduce(XT_LOGSUMEXP, x, 1, &d1, 0);
    double want_lse[3];
    naive_reduce(XT_LOGSUMEXP, x, 2, 0, want_lse);
    CHECK(lse && lse->dtype == XT_FLOAT32 && matches("int64 logsumexp", lse, want_lse, 3, 1e-6));
    CHECK(!xt_reduce(XT_MEAN, x, 0, NULL, 0) && xt_last_status() == XT_ERR_DTYPE &&
          test_error_has("mean: expected float32, got int64"));
    CHECK(!xt_var(x, 0, NULL, 1, 0) && test_error_has("var: expected float32, got int64"));
    xt_tensor *ts[] = {sum, prod, mx, mn, lse};
    for (int i = 0; i < 5; i++) xt_tensor_release(ts[i]);

    /* every reduction of a large int64 tensor over every dim set, against exact sums */
    int64_t big[3] = {7, 40, 33};
    xt_tensor *r = xt_randint(&test_rng, -1000, 1000, 3, big);
    for (uint32_t mask = 1; mask < 8; mask++) {
        int32_t dims[3];
        int32_t nd = mask_dims(mask, 3, dims);
        static double want[7 * 40 * 33];
        for (int32_t op = XT_SUM; op <= XT_MIN; op++) {
            if (op == XT_MEAN) continue;
            xt_tensor *y = xt_reduce(op, r, nd, dims, 0);
            naive_reduce(op, r, mask, 0, want);
            CHECK(y && y->dtype == XT_INT64 && matches("int64 dims", y, want, xt_numel(y), 0));
            xt_tensor_release(y);
        }
    }
    xt_tensor_release(r);

    int64_t wrap[2] = {INT64_MAX, 1};
    int64_t two = 2;
    xt_tensor *w = xt_from_data(1, &two, XT_INT64, wrap);
    xt_tensor *ws = xt_reduce(XT_SUM, w, 0, NULL, 0);
    CHECK(ws && ((int64_t *)ws->data)[0] == INT64_MIN);
    xt_tensor_release(ws);
    xt_tensor_release(w);

    /* uint8: a count of a mask must not wrap at 256 */
    int64_t n = 300;
    xt_tensor *u = xt_full(1, &n, XT_UINT8, 200);
    xt_tensor *us = xt_reduce(XT_SUM, u, 0, NULL, 0), *um = xt_reduce(XT_MAX, u, 0, NULL, 0);
    xt_tensor *up = xt_reduce(XT_PROD, u, 1, &d0, 1);
    CHECK(us && us->dtype == XT_INT64 && ((int64_t *)us->data)[0] == 60000);
    CHECK(um && um->dtype == XT_UINT8 && ((uint8_t *)um->data)[0] == 200);
    CHECK(up && up->dtype == XT_INT64 && up->ndim == 1 && up->shape[0] == 1);
    CHECK(!xt_reduce(XT_MEAN, u, 0, NULL, 0) && test_error_has("mean: expected float32, got uint8"));
    ((uint8_t *)u->data)[17] = 250;
    xt_tensor *ua = xt_argmax(u, 0, 0, 1), *ui = NULL, *uv = xt_max_dim(u, 0, 0, 0, &ui);
    CHECK(ua && ((int64_t *)ua->data)[0] == 18);
    CHECK(uv && uv->dtype == XT_UINT8 && ((uint8_t *)uv->data)[0] == 250 && ((int64_t *)ui->data)[0] == 17);
    xt_tensor *uc = xt_cumsum(u, 0);
    CHECK(uc && uc->dtype == XT_INT64 && ((int64_t *)uc->data)[299] == 60050);
    CHECK(!xt_softmax(u, 0) && test_error_has("softmax: expected float32, got uint8"));
    xt_tensor *us2[] = {u, us, um, up, ua, ui, uv, uc};
    for (int i = 0; i < 8; i++) xt_tensor_release(us2[i]);
    xt_tensor_release(x);
}

/* NaN propagates through amax/amin on every path (rows, columns, chunks). */
static void test_reduce_nan(void)
{
    int64_t shapes[][2] = {{3, 50}, {50, 3}, {1, 300000}};
    for (int k = 0; k < 3; k++) {
        xt_tensor *x = test_randn(2, shapes[k], 1, 0);
        ((float *)x->data)[xt_numel(x) / 2 + 1] = NAN;
        int32_t d = k == 1 ? 0 : 1;
        for (int32_t op = XT_MAX; op <= XT_MIN; op++) {
            xt_tensor *all = xt_reduce(op, x, 0, NULL, 0), *part = xt_reduce(op, x, 1, &d, 0);
            CHECK(all && isnan(((float *)all->data)[0]));
            int nans = 0;
            for (int64_t i = 0; part && i < xt_numel(part); i++) nans += isnan(((float *)part->data)[i]);
            CHECK(nans == 1);
            xt_tensor_release(all);
            xt_tensor_release(part);
        }
        xt_tensor_release(x);
    }
}

/* ---- max/min along a dim, argmax ------------------------------------------------------ */

/* Naive first-position extreme along dim; NaN wins. */
static void naive_extreme(const xt_tensor *x, int32_t dim, bool is_max, double *vals, int64_t *idx)
{
    int64_t outer = 1, D = x->shape[dim], inner = 1;
    for (int32_t d = 0; d < dim; d++) outer *= x->shape[d];
    for (int32_t d = dim + 1; d < x->ndim; d++) inner *= x->shape[d];
    for (int64_t o = 0; o < outer * inner; o++) {
        int64_t ou = o / inner, in = o % inner, best = 0;
        double bv = elem(x, ou * D * inner + in);
        for (int64_t k = 1; k < D; k++) {
            double v = elem(x, (ou * D + k) * inner + in);
            if (isnan(bv)) break;
            if (isnan(v) || (is_max ? v > bv : v < bv)) {
                bv = v;
                best = k;
            }
        }
        vals[o] = bv;
        idx[o] = best;
    }
}

static void check_extremes(const char *label, xt_tensor *x, int64_t base)
{
    int64_t n = xt_numel(x);
    double *vals = malloc(sizeof(double) * (size_t)n), *got_idx = malloc(sizeof(double) * (size_t)n);
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)n);
    for (int32_t dim = 0; dim < x->ndim; dim++)
        for (int is_max = 0; is_max < 2; is_max++)
            for (int32_t keepdim = 0; keepdim < 2; keepdim++) {
                naive_extreme(x, dim, is_max, vals, idx);
                int64_t n_out = n / x->shape[dim];
                xt_tensor *ix = NULL;
                int32_t sdim = keepdim ? dim : dim - x->ndim;   /* negative dims too */
                xt_tensor *v = is_max ? xt_max_dim(x, sdim, keepdim, base, &ix)
                                      : xt_min_dim(x, sdim, keepdim, base, &ix);
                xt_tensor *a = is_max ? xt_argmax(x, sdim, keepdim, base)
                                      : xt_argmin(x, sdim, keepdim, base);
                for (int64_t o = 0; o < n_out; o++) got_idx[o] = (double)(idx[o] + base);
                char what[120];
                snprintf(what, sizeof what, "%s %s dim %d keepdim %d", label,
                         is_max ? "max" : "min", dim, keepdim);
                int32_t ondim;
                int64_t oshape[XT_MAX_DIMS];
                reduced_shape(x, 1u << dim, keepdim, &ondim, oshape);
                CHECK(has_shape(v, ondim, oshape) && has_shape(ix, ondim, oshape) &&
                      has_shape(a, ondim, oshape));
                CHECK(v && v->dtype == x->dtype && matches(what, v, vals, n_out, 0));
                CHECK(ix && ix->dtype == XT_INT64 && matches(what, ix, got_idx, n_out, 0));
                CHECK(a && a->dtype == XT_INT64 && matches(what, a, got_idx, n_out, 0));
                xt_tensor_release(v);
                xt_tensor_release(ix);
                xt_tensor_release(a);
            }
    free(vals);
    free(got_idx);
    free(idx);
}

static void test_extremes(void)
{
    int64_t shapes[][3] = {{3, 4, 5}, {2, 70, 3}, {5, 3, 300}, {1, 1, 40}};
    for (int k = 0; k < 4; k++) {
        xt_tensor *x = test_randn(3, shapes[k], 1, 0);
        /* ties: round to a few levels so every reduction has repeated extremes */
        float *p = x->data;
        for (int64_t i = 0; i < xt_numel(x); i++) p[i] = roundf(p[i] * 1.5f);
        check_extremes("ties", x, k % 2);
        xt_tensor *t = xt_transpose(x, 0, 2);
        check_extremes("ties transposed", t, 1);
        xt_tensor_release(t);
        xt_tensor *xi = xt_to_dtype(x, XT_INT64);
        check_extremes("int64", xi, 1);
        xt_tensor_release(xi);
        p[xt_numel(x) / 3] = NAN;
        p[xt_numel(x) / 2] = NAN;
        check_extremes("nan", x, 0);
        xt_tensor_release(x);
    }
    /* one long row (the chunked scan): the first of two equal maxima, across chunks */
    int64_t n = 300000;
    xt_tensor *x = xt_zeros(1, &n, XT_FLOAT32);
    float *p = x->data;
    p[250000] = p[70001] = 5;
    p[260000] = p[90000] = -5;
    xt_tensor *a = xt_argmax(x, 0, 0, 0), *b = xt_argmin(x, 0, 1, 1), *iv = NULL;
    CHECK(a && a->ndim == 0 && ((int64_t *)a->data)[0] == 70001);
    CHECK(b && b->ndim == 1 && ((int64_t *)b->data)[0] == 90001);
    p[200000] = p[280000] = NAN;
    xt_tensor *v = xt_max_dim(x, 0, 0, 0, &iv);
    CHECK(v && isnan(((float *)v->data)[0]) && ((int64_t *)iv->data)[0] == 200000);
    xt_tensor *ts[] = {x, a, b, v, iv};
    for (int i = 0; i < 5; i++) xt_tensor_release(ts[i]);
}

/* ---- cumsum ----------------------------------------------------------------------------- */

static void check_cumsum(const char *label, xt_tensor *x)
{
    int64_t n = xt_numel(x);
    double *want = malloc(sizeof(double) * (size_t)(n + 1));
    for (int32_t dim = 0; dim < x->ndim; dim++) {
        int64_t outer = 1, D = x->shape[dim], inner = 1;
        for (int32_t d = 0; d < dim; d++) outer *= x->shape[d];
        for (int32_t d = dim + 1; d < x->ndim; d++) inner *= x->shape[d];
        for (int64_t o = 0; o < outer * inner; o++) {
            double acc = 0;
            for (int64_t k = 0; k < D; k++) {
                int64_t i = (o / inner * D + k) * inner + o % inner;
                acc += elem(x, i);
                want[i] = acc;
            }
        }
        xt_tensor *y = xt_cumsum(x, dim % 2 ? dim - x->ndim : dim);
        char what[100];
        snprintf(what, sizeof what, "%s cumsum dim %d", label, dim);
        CHECK(y && xt_same_shape(y, x) && matches(what, y, want, n, 2e-5));
        xt_tensor_release(y);
    }
    free(want);
}

static void test_cumsum(void)
{
    int64_t shapes[][3] = {{3, 4, 5}, {2, 300, 3}, {4, 3, 600}, {1, 2, 200000}};
    for (int k = 0; k < 4; k++) {
        xt_tensor *x = test_randn(3, shapes[k], 1, 0.1);
        check_cumsum("f32", x);
        if (k < 3) {
            xt_tensor *t = xt_transpose(x, 0, 2);
            check_cumsum("f32 transposed", t);
            xt_tensor_release(t);
        }
        xt_tensor *xi = xt_to_dtype(x, XT_INT64);
        check_cumsum("int64", xi);
        xt_tensor_release(xi);
        xt_tensor_release(x);
    }
    /* the backward of a long row runs the chunked scan from the end */
    int64_t s[2] = {2, 150000};
    xt_tensor *x = test_randn(2, s, 1, 0), *dy = test_randn(2, s, 1, 0.1);
    xt_set_requires_grad(x, 1);
    xt_tensor *y = xt_cumsum(x, -1);
    CHECK(y && xt_backward(y, dy, 0) == XT_OK);
    double *want = malloc(sizeof(double) * 300000);
    for (int64_t r = 0; r < 2; r++) {
        double acc = 0;
        for (int64_t i = 149999; i >= 0; i--) want[r * 150000 + i] = acc += test_f32(dy)[r * 150000 + i];
    }
    CHECK(matches("cumsum backward, long rows", x->grad, want, 300000, 2e-5));
    free(want);
    xt_tensor_release(x);
    xt_tensor_release(dy);
    xt_tensor_release(y);
}

/* ---- softmax ---------------------------------------------------------------------------- */

static void check_softmax(const char *label, xt_tensor *x)
{
    int64_t n = xt_numel(x);
    double *want = malloc(sizeof(double) * (size_t)(n + 1)), *wlog = malloc(sizeof(double) * (size_t)(n + 1));
    for (int32_t dim = 0; dim < x->ndim; dim++) {
        int64_t outer = 1, D = x->shape[dim], inner = 1;
        for (int32_t d = 0; d < dim; d++) outer *= x->shape[d];
        for (int32_t d = dim + 1; d < x->ndim; d++) inner *= x->shape[d];
        for (int64_t o = 0; o < outer * inner; o++) {
            double m = -INFINITY, s = 0;
            for (int64_t k = 0; k < D; k++) {
                double v = elem(x, (o / inner * D + k) * inner + o % inner);
                m = v > m ? v : m;
            }
            for (int64_t k = 0; k < D; k++) s += exp(elem(x, (o / inner * D + k) * inner + o % inner) - m);
            for (int64_t k = 0; k < D; k++) {
                int64_t i = (o / inner * D + k) * inner + o % inner;
                want[i] = exp(elem(x, i) - m) / s;
                wlog[i] = elem(x, i) - m - log(s);
            }
        }
        int32_t sdim = dim % 2 ? dim - x->ndim : dim;
        xt_tensor *y = xt_softmax(x, sdim), *ly = xt_log_softmax(x, sdim);
        char what[100];
        snprintf(what, sizeof what, "%s softmax dim %d", label, dim);
        CHECK(y && xt_same_shape(y, x) && matches(what, y, want, n, 1e-5));
        snprintf(what, sizeof what, "%s log_softmax dim %d", label, dim);
        CHECK(ly && xt_same_shape(ly, x) && matches(what, ly, wlog, n, 1e-5));
        xt_tensor_release(y);
        xt_tensor_release(ly);
    }
    free(want);
    free(wlog);
}

static void test_softmax(void)
{
    int64_t shapes[][3] = {{3, 4, 5}, {2, 33, 1}, {3, 7, 300}, {2, 300, 17}, {1, 1, 1}, {1, 5000, 40}};
    for (int k = 0; k < 6; k++) {
        xt_tensor *x = test_randn(3, shapes[k], k == 3 ? 40 : 2, 0);   /* #3: large logits */
        check_softmax("softmax", x);
        xt_tensor *t = xt_transpose(x, 0, 2);
        check_softmax("softmax transposed", t);
        xt_tensor_release(t);
        xt_tensor_release(x);
    }
    /* -inf entries are fine; a row of -inf and a row with NaN give NaN, as PyTorch */
    float d[9] = {-INFINITY, 1, 2, -INFINITY, -INFINITY, -INFINITY, 0, NAN, 1};
    int64_t s[2] = {3, 3};
    xt_tensor *x = f32_tensor(2, s, d);
    xt_tensor *y = xt_softmax(x, 1), *ly = xt_log_softmax(x, -1);
    float *p = y->data, *lp = ly->data;
    CHECK(p[0] == 0 && fabsf(p[1] + p[2] - 1) < 1e-6f && isinf(lp[0]) && lp[0] < 0);
    for (int i = 3; i < 9; i++) CHECK(isnan(p[i]) && isnan(lp[i]));
    xt_tensor_release(y);
    xt_tensor_release(ly);
    xt_tensor_release(x);

    /* the same along a long leading dim (the online column pass): leading -inf entries,
     * a column of -inf and a column with NaN */
    int64_t s300[2] = {300, 3};
    xt_tensor *c = test_randn(2, s300, 2, 0);
    float *pc = c->data;
    for (int i = 0; i < 300; i++) {
        if (i < 10) pc[i * 3] = -INFINITY;
        pc[i * 3 + 1] = -INFINITY;
    }
    pc[150 * 3 + 2] = NAN;
    y = xt_softmax(c, 0);
    ly = xt_log_softmax(c, 0);
    double m = -INFINITY, sum = 0;
    for (int i = 10; i < 300; i++) m = fmax(m, pc[i * 3]);
    for (int i = 10; i < 300; i++) sum += exp(pc[i * 3] - m);
    bool ok = y && ly;
    for (int i = 0; ok && i < 300; i++) {
        double want = i < 10 ? 0 : exp(pc[i * 3] - m) / sum;
        double wlog = i < 10 ? -INFINITY : pc[i * 3] - m - log(sum);
        float *py = y->data, *pl = ly->data;
        ok = same_value(py[i * 3], want, 1e-5) && same_value(pl[i * 3], wlog, 1e-5) &&
             isnan(py[i * 3 + 1]) && isnan(pl[i * 3 + 1]) && isnan(py[i * 3 + 2]) &&
             isnan(pl[i * 3 + 2]);
        if (!ok) fprintf(stderr, "softmax online: row %d wrong\n", i);
    }
    CHECK(ok);
    xt_tensor_release(y);
    xt_tensor_release(ly);
    xt_tensor_release(c);

    /* the backward over a middle dim (columns, several blocks) agrees with the same
     * softmax over the last dim (rows) of the transposed data */
    int64_t s3[3] = {2, 3000, 40};
    for (int log_mode = 0; log_mode < 2; log_mode++) {
        xt_tensor *a = test_randn(3, s3, 2, 0), *dy = test_randn(3, s3, 1, 0);
        xt_tensor *at = xt_transpose(a, 1, 2), *b = xt_contiguous(at);
        xt_tensor *dyt = xt_transpose(dy, 1, 2);
        xt_set_requires_grad(a, 1);
        xt_set_requires_grad(b, 1);
        xt_tensor *ya = log_mode ? xt_log_softmax(a, 1) : xt_softmax(a, 1);
        xt_tensor *yb = log_mode ? xt_log_softmax(b, 2) : xt_softmax(b, 2);
        CHECK(ya && yb && xt_backward(ya, dy, 0) == XT_OK && xt_backward(yb, dyt, 0) == XT_OK);
        xt_tensor *ga = xt_transpose(a->grad, 1, 2);
        double scale = 1;   /* log_softmax's gradient holds sum(dy), which grows with D */
        for (int64_t i = 0; i < xt_numel(b->grad); i++) scale = fmax(scale, fabs(test_f32(b->grad)[i]));
        CHECK(test_close("softmax backward, columns vs rows", ga, b->grad, 4e-6 * scale));
        xt_tensor *ts[] = {a, dy, at, b, dyt, ya, yb, ga};
        for (int i = 0; i < 8; i++) xt_tensor_release(ts[i]);
    }
}

/* ---- sum_to ------------------------------------------------------------------------------ */

static void test_sum_to(void)
{
    int64_t s234[3] = {2, 3, 4};
    xt_tensor *x = test_randn(3, s234, 1, 0);
    static const struct {
        int32_t ndim;
        int64_t shape[3];
        uint32_t mask;   /* the dims of x summed */
    } cases[] = {
        {2, {3, 4}, 1}, {2, {3, 1}, 5}, {3, {1, 1, 4}, 3}, {0, {0}, 7}, {3, {2, 3, 4}, 0},
        {1, {4}, 3},    {3, {2, 1, 1}, 6}, {1, {1}, 7},
    };
    double want[24];
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        for (int t = 0; t < 3; t++) {
            /* x itself, x as int64, and x through a transposed-then-transposed-back copy */
            xt_tensor *in = t == 1 ? xt_to_dtype(x, XT_INT64) : (xt_tensor_retain(x), x);
            if (t == 2) {
                xt_tensor *tr = xt_transpose(x, 0, 2), *back = xt_contiguous(tr);
                xt_tensor_release(in);
                in = xt_transpose(back, 0, 2);   /* x's values with non-contiguous strides */
                xt_tensor_release(tr);
                xt_tensor_release(back);
            }
            xt_tensor *y = xt_sum_to(in, cases[k].ndim, cases[k].shape);
            naive_reduce(XT_SUM, in, cases[k].mask, 0, want);
            CHECK(has_shape(y, cases[k].ndim, cases[k].shape) && y->dtype == in->dtype);
            CHECK(matches("sum_to", y, want, xt_shape_numel(cases[k].ndim, cases[k].shape), 1e-6));
            xt_tensor_release(y);
            xt_tensor_release(in);
        }
    }
    int64_t s5[1] = {5}, s1111[4] = {1, 1, 1, 1};
    CHECK(!xt_sum_to(x, 1, s5) && xt_last_status() == XT_ERR_SHAPE &&
          test_error_has("sum_to: shape [5] does not broadcast to [2,3,4]"));
    CHECK(!xt_sum_to(x, 4, s1111) && test_error_has("sum_to: cannot sum a 3-dim tensor to 4 dims"));
    CHECK(!xt_sum_to(NULL, 0, NULL) && test_error_has("sum_to: input is NULL"));
    xt_tensor *u = xt_to_dtype(x, XT_UINT8);
    CHECK(!xt_sum_to(u, 0, NULL) && test_error_has("sum_to: expected float32 or int64, got uint8"));
    xt_tensor_release(u);
    /* the engine's use: a broadcast add sums the gradient back to each input */
    int64_t s4[1] = {4};
    xt_tensor *b = test_randn(1, s4, 1, 0);
    xt_set_requires_grad(b, 1);
    xt_tensor *y = xt_binary(XT_ADD, x, b);
    xt_tensor *g = xt_full(3, s234, XT_FLOAT32, 0.5);
    CHECK(y && xt_backward(y, g, 0) == XT_OK);
    double three[4] = {3, 3, 3, 3};
    CHECK(b->grad && matches("bias grad", b->grad, three, 4, 0));
    xt_tensor *ts[] = {x, b, y, g};
    for (int i = 0; i < 4; i++) xt_tensor_release(ts[i]);
}

/* ---- errors ------------------------------------------------------------------------------ */

static void test_errors(void)
{
    int64_t s[3] = {2, 3, 4};
    xt_tensor *x = test_randn(3, s, 1, 0);
    CHECK(!xt_reduce(XT_SUM, x, 1, (int32_t[]){3}, 0) && xt_last_status() == XT_ERR_ARG &&
          test_error_has("sum: dim 3 out of range for a 3-d tensor"));
    CHECK(!xt_reduce(XT_MEAN, x, 2, (int32_t[]){0, -4}, 0) && test_error_has("mean: dim -4 out of range"));
    CHECK(!xt_reduce(XT_PROD, x, 2, (int32_t[]){1, 1}, 0) &&
          test_error_has("prod: dim 1 appears more than once"));
    CHECK(!xt_reduce(XT_MAX, x, 3, (int32_t[]){0, 2, -1}, 0) &&
          test_error_has("amax: dim 2 appears more than once"));
    CHECK(!xt_var(x, 2, (int32_t[]){-2, 1}, 1, 0) && test_error_has("var: dim 1 appears more than once"));
    CHECK(!xt_reduce(XT_SUM, x, -1, NULL, 0) && test_error_has("sum: invalid list of -1 dims"));
    CHECK(!xt_reduce(XT_SUM, x, 2, NULL, 0) && test_error_has("sum: invalid list of 2 dims"));
    CHECK(!xt_reduce(99, x, 0, NULL, 0) && test_error_has("reduce: unknown reduction op 99"));
    CHECK(!xt_reduce(-1, x, 0, NULL, 0) && test_error_has("unknown reduction op -1"));
    CHECK(!xt_reduce(XT_SUM, NULL, 0, NULL, 0) && test_error_has("sum: input is NULL"));
    CHECK(!xt_var(x, 0, NULL, NAN, 0) && test_error_has("var: correction must be finite"));
    CHECK(!xt_max_dim(x, 3, 0, 0, NULL) && test_error_has("max: dim 3 out of range"));
    CHECK(!xt_min_dim(x, -4, 0, 0, NULL) && test_error_has("min: dim -4 out of range"));
    CHECK(!xt_argmax(x, 5, 0, 0) && test_error_has("argmax: dim 5 out of range"));
    CHECK(!xt_argmin(NULL, 0, 0, 0) && test_error_has("argmin: input is NULL"));
    CHECK(!xt_cumsum(x, 3) && test_error_has("cumsum: dim 3 out of range"));
    CHECK(!xt_softmax(x, -4) && test_error_has("softmax: dim -4 out of range"));
    CHECK(!xt_log_softmax(x, 3) && test_error_has("log_softmax: dim 3 out of range"));
    CHECK(!xt_log_softmax(NULL, 0) && test_error_has("log_softmax: input is NULL"));
    xt_tensor *xi = xt_to_dtype(x, XT_INT64);
    CHECK(!xt_log_softmax(xi, 0) && xt_last_status() == XT_ERR_DTYPE &&
          test_error_has("log_softmax: expected float32, got int64"));
    xt_tensor_release(xi);
    /* dims in messages follow the message base (Lua counts from 1) */
    xt_set_message_base(1);
    CHECK(!xt_reduce(XT_SUM, x, 2, (int32_t[]){2, -1}, 0) && test_error_has("sum: dim 3 appears more than once"));
    xt_set_message_base(0);
    /* a gradient needs the saved tensors unmodified */
    xt_set_requires_grad(x, 1);
    int32_t d1 = 1;
    xt_tensor *y = xt_reduce(XT_MAX, x, 1, &d1, 0);
    xt_tensor *xx = xt_binary_scalar(XT_MUL, x, 1.0, 0);
    xt_tensor *ys = xt_softmax(xx, 2);
    CHECK(y && ys && xt_binary_scalar_(XT_ADD, ys, 1.0) == XT_OK);
    xt_tensor *sum = xt_reduce(XT_SUM, ys, 0, NULL, 0);
    CHECK(sum && xt_backward(sum, NULL, 0) != XT_OK && test_error_has("modified in place"));
    xt_tensor *ts[] = {x, y, xx, ys, sum};
    for (int i = 0; i < 5; i++) xt_tensor_release(ts[i]);
}

/* ---- gradients ------------------------------------------------------------------------------ */

enum { K_REDUCE, K_VAR, K_MAX_DIM, K_MIN_DIM, K_CUMSUM, K_SOFTMAX, K_LOG_SOFTMAX };

typedef struct grad_case {
    int kind;
    int32_t op;        /* K_REDUCE: the xt_reduce_op */
    int32_t ndims;     /* dims list (K_MAX_DIM .. K_LOG_SOFTMAX: dims[0]) */
    int32_t dims[3];
    int32_t keepdim;
    double correction;
    bool transpose;    /* run on x transposed (dims 0 and last): a non-contiguous input */
} grad_case;

static xt_tensor *run_case(xt_tensor *const *in, const void *ctx)
{
    const grad_case *c = ctx;
    xt_tensor *x = in[0], *view = NULL, *idx = NULL, *out = NULL;
    if (c->transpose) x = view = xt_transpose(x, 0, x->ndim - 1);
    switch (c->kind) {
    case K_REDUCE: out = xt_reduce(c->op, x, c->ndims, c->dims, c->keepdim); break;
    case K_VAR: out = xt_var(x, c->ndims, c->dims, c->correction, c->keepdim); break;
    case K_MAX_DIM: out = xt_max_dim(x, c->dims[0], c->keepdim, 1, &idx); break;
    case K_MIN_DIM: out = xt_min_dim(x, c->dims[0], c->keepdim, 0, &idx); break;
    case K_CUMSUM: out = xt_cumsum(x, c->dims[0]); break;
    case K_SOFTMAX: out = xt_softmax(x, c->dims[0]); break;
    default: out = xt_log_softmax(x, c->dims[0]);
    }
    xt_tensor_release(idx);
    xt_tensor_release(view);
    return out;
}

/* x [3,4,5]: values 0.05 apart in random order, so no ties and eps does not reorder them */
static xt_tensor *distinct_input(void)
{
    int64_t s[3] = {3, 4, 5};
    xt_tensor *perm = xt_randperm(&test_rng, 60, 0);
    xt_tensor *x = xt_empty(3, s, XT_FLOAT32);
    for (int i = 0; i < 60; i++) ((float *)x->data)[i] = (float)(((int64_t *)perm->data)[i] * 0.05 - 1.5);
    xt_tensor_release(perm);
    return x;
}

static void test_grads(void)
{
    int64_t s[3] = {3, 4, 5};
    static const struct {
        int32_t ndims, dims[3];
    } dim_sets[] = {{0, {0}}, {1, {0}}, {1, {1}}, {1, {-1}}, {2, {0, 2}}, {2, {2, 1}}, {3, {0, 1, 2}}};
    int n_sets = sizeof dim_sets / sizeof dim_sets[0];
    xt_tensor *plain = test_randn(3, s, 1, 0), *near_one = test_randn(3, s, 0.3, 1);
    xt_tensor *distinct = distinct_input();
    xt_tensor *zeros = test_randn(3, s, 0.3, 1);
    float *z = zeros->data;
    z[0] = 0;                       /* one zero in some reductions, two in others */
    z[7] = z[9] = 0;
    z[27] = 0;
    for (int32_t op = 0; op <= XT_LOGSUMEXP + 1; op++)
        for (int k = 0; k < n_sets; k++)
            for (int32_t keepdim = 0; keepdim < 2; keepdim++)
                for (int tr = 0; tr < 2; tr++) {
                    if (tr && (k % 2 || keepdim)) continue;   /* a sample of transposed runs */
                    grad_case c = {op > XT_LOGSUMEXP ? K_VAR : K_REDUCE, op, dim_sets[k].ndims,
                                   {dim_sets[k].dims[0], dim_sets[k].dims[1], dim_sets[k].dims[2]},
                                   keepdim, keepdim ? 0.0 : 1.0, tr};
                    xt_tensor *x = op == XT_MAX || op == XT_MIN ? distinct
                                   : op == XT_PROD            ? near_one
                                                              : plain;
                    char what[120];
                    snprintf(what, sizeof what, "%s dims #%d keepdim %d%s",
                             op > XT_LOGSUMEXP ? "var" : op_names[op], k, keepdim,
                             tr ? " transposed" : "");
                    CHECK(test_gradcheck(what, run_case, &c, 1, &x));
                    if (op == XT_PROD) {
                        strncat(what, " with zeros", sizeof what - strlen(what) - 1);
                        CHECK(test_gradcheck(what, run_case, &c, 1, &zeros));
                    }
                }
    for (int kind = K_MAX_DIM; kind <= K_LOG_SOFTMAX; kind++)
        for (int32_t dim = -1; dim < 3; dim++)
            for (int32_t keepdim = 0; keepdim < 2; keepdim++)
                for (int tr = 0; tr < 2; tr++) {
                    if (keepdim && kind > K_MIN_DIM) continue;
                    grad_case c = {kind, 0, 1, {dim, 0, 0}, keepdim, 0, tr};
                    xt_tensor *x = kind <= K_MIN_DIM ? distinct : plain;
                    char what[120];
                    snprintf(what, sizeof what, "kind %d dim %d keepdim %d%s", kind, dim, keepdim,
                             tr ? " transposed" : "");
                    CHECK(test_gradcheck(what, run_case, &c, 1, &x));
                }
    xt_tensor_release(plain);
    xt_tensor_release(near_one);
    xt_tensor_release(distinct);
    xt_tensor_release(zeros);
}

/* Ties: amax shares the gradient among the tied elements; max along a dim gives it all to
 * the first. And a backward whose incoming gradient is a non-contiguous view. */
static void test_grad_details(void)
{
    float d[3] = {1, 3, 3};
    int64_t n = 3;
    xt_tensor *x = f32_tensor(1, &n, d);
    xt_set_requires_grad(x, 1);
    xt_tensor *a = xt_reduce(XT_MAX, x, 0, NULL, 0);
    CHECK(a && xt_backward(a, NULL, 0) == XT_OK);
    double half[3] = {0, 0.5, 0.5}, first[3] = {0, 1, 0};
    CHECK(matches("amax ties", x->grad, half, 3, 0));
    xt_set_grad(x, NULL);
    xt_tensor *idx = NULL;
    xt_tensor *m = xt_max_dim(x, 0, 0, 0, &idx);
    CHECK(m && xt_backward(m, NULL, 0) == XT_OK && matches("max ties", x->grad, first, 3, 0));
    xt_tensor *ts[] = {x, a, idx, m};
    for (int i = 0; i < 4; i++) xt_tensor_release(ts[i]);

    int64_t s43[2] = {4, 3}, s534[3] = {5, 3, 4};
    xt_tensor *in = distinct_input();
    xt_set_requires_grad(in, 1);
    for (int kind = K_REDUCE; kind <= K_LOG_SOFTMAX; kind++) {
        for (int32_t op = 0; op <= (kind == K_REDUCE ? XT_LOGSUMEXP : 0); op++) {
            /* reduce over dim 2 -> [3,4]; the others keep [3,4,5] */
            grad_case c = {kind, op, 1, {2, 0, 0}, 0, 1, false};
            bool same = kind >= K_CUMSUM;
            xt_tensor *base = same ? test_randn(3, s534, 1, 0) : test_randn(2, s43, 1, 0);
            xt_tensor *g = same ? xt_permute(base, 3, (int32_t[]){1, 2, 0}) : xt_transpose(base, 0, 1);
            xt_tensor *gc = xt_contiguous(g);
            xt_tensor *grads[2] = {0};
            for (int t = 0; t < 2; t++) {
                xt_tensor *y = run_case(&in, &c);
                CHECK(y && xt_backward(y, t ? gc : g, 0) == XT_OK);
                grads[t] = xt_get_grad(in);
                xt_set_grad(in, NULL);
                xt_tensor_release(y);
            }
            CHECK(test_max_diff(grads[0], grads[1]) == 0);
            xt_tensor *tr[] = {base, g, gc, grads[0], grads[1]};
            for (int i = 0; i < 5; i++) xt_tensor_release(tr[i]);
        }
    }
    xt_tensor_release(in);
}

/* ---- threads ----------------------------------------------------------------------------- */

typedef xt_tensor *(*job_fn)(xt_tensor *x);
static xt_tensor *job_sum_all(xt_tensor *x) { return xt_reduce(XT_SUM, x, 0, NULL, 0); }
static xt_tensor *job_sum_d0(xt_tensor *x) { return xt_reduce(XT_SUM, x, 1, (int32_t[]){0}, 0); }
static xt_tensor *job_sum_d1(xt_tensor *x) { return xt_reduce(XT_SUM, x, 1, (int32_t[]){1}, 0); }
static xt_tensor *job_lse_d0(xt_tensor *x) { return xt_reduce(XT_LOGSUMEXP, x, 1, (int32_t[]){0}, 0); }
static xt_tensor *job_prod_d1(xt_tensor *x) { return xt_reduce(XT_PROD, x, 1, (int32_t[]){1}, 0); }
static xt_tensor *job_var_all(xt_tensor *x) { return xt_var(x, 0, NULL, 1, 0); }
static xt_tensor *job_cumsum_d1(xt_tensor *x) { return xt_cumsum(x, 1); }
static xt_tensor *job_cumsum_d0(xt_tensor *x) { return xt_cumsum(x, 0); }
static xt_tensor *job_softmax_d1(xt_tensor *x) { return xt_softmax(x, 1); }
static xt_tensor *job_log_softmax_d0(xt_tensor *x) { return xt_log_softmax(x, 0); }
static xt_tensor *job_argmax_d1(xt_tensor *x) { return xt_argmax(x, 1, 0, 0); }
static xt_tensor *job_sum_to(xt_tensor *x)
{
    return xt_sum_to(x, 1, &x->shape[x->ndim - 1]);
}

static void test_threads(void)
{
    int64_t shapes[][2] = {{1, 1 << 20}, {200000, 3}, {3, 200000}, {1000, 1000}};
    job_fn jobs[] = {job_sum_all, job_sum_d0, job_sum_d1, job_lse_d0, job_prod_d1,
                     job_var_all, job_cumsum_d1, job_cumsum_d0, job_softmax_d1,
                     job_log_softmax_d0, job_argmax_d1, job_sum_to};
    int n_jobs = sizeof jobs / sizeof jobs[0];
    int32_t threads = xt_get_num_threads();
    for (int k = 0; k < 4; k++) {
        xt_tensor *x = test_randn(2, shapes[k], 0.01, 1);
        for (int j = 0; j < n_jobs; j++) {
            xt_tensor *r[3];
            for (int t = 0; t < 3; t++) {
                xt_set_num_threads(t + 1);
                r[t] = jobs[j](x);
            }
            for (int t = 1; t < 3; t++) {
                bool same = r[0] && r[t] && xt_numel(r[0]) == xt_numel(r[t]) &&
                            memcmp(r[0]->data, r[t]->data,
                                   (size_t)(xt_numel(r[0]) * xt_dtype_size(r[0]->dtype))) == 0;
                if (!same) fprintf(stderr, "threads: job %d shape #%d differs at %d threads\n", j, k, t + 1);
                CHECK(same);
            }
            for (int t = 0; t < 3; t++) xt_tensor_release(r[t]);
        }
        /* the chunked sums still agree with a double loop */
        double *want = malloc(sizeof(double) * (size_t)xt_numel(x));
        for (uint32_t mask = 1; mask <= 3; mask++) {
            int32_t dims[2];
            int32_t nd = mask_dims(mask, 2, dims);
            xt_tensor *y = xt_reduce(XT_SUM, x, nd, dims, 0);
            naive_reduce(XT_SUM, x, mask, 0, want);
            CHECK(matches("chunked sum", y, want, xt_numel(y), 1e-6));
            xt_tensor_release(y);
        }
        free(want);
        xt_tensor_release(x);
    }
    xt_set_num_threads(threads);
}

/* ---- PyTorch fixtures --------------------------------------------------------------------- */

static void test_fixtures(void)
{
    static const struct {
        const char *name;
        grad_case c;
    } cases[] = {
        {"softmax_last", {K_SOFTMAX, 0, 1, {-1}}},
        {"softmax_mid", {K_SOFTMAX, 0, 1, {1}}},
        {"softmax_first", {K_SOFTMAX, 0, 1, {0}}},
        {"softmax_large", {K_SOFTMAX, 0, 1, {1}}},
        {"log_softmax_last", {K_LOG_SOFTMAX, 0, 1, {-1}}},
        {"log_softmax_mid", {K_LOG_SOFTMAX, 0, 1, {1}}},
        {"log_softmax_first", {K_LOG_SOFTMAX, 0, 1, {0}}},
        {"log_softmax_large", {K_LOG_SOFTMAX, 0, 1, {1}}},
        {"logsumexp_d1", {K_REDUCE, XT_LOGSUMEXP, 1, {1}}},
        {"logsumexp_d02_keep", {K_REDUCE, XT_LOGSUMEXP, 2, {0, 2}, 1}},
        {"logsumexp_all", {K_REDUCE, XT_LOGSUMEXP, 0, {0}}},
        {"logsumexp_neginf", {K_REDUCE, XT_LOGSUMEXP, 1, {1}}},
        {"var_d1", {K_VAR, 0, 1, {1}, 0, 1}},
        {"var_d02_keep_c0", {K_VAR, 0, 2, {0, 2}, 1, 0}},
        {"var_all", {K_VAR, 0, 0, {0}, 0, 1}},
        {"var_long", {K_VAR, 0, 1, {1}, 0, 1}},
        {"max_d1", {K_MAX_DIM, 0, 1, {1}}},
        {"max_d0_keep", {K_MAX_DIM, 0, 1, {0}, 1}},
        {"min_d2", {K_MIN_DIM, 0, 1, {2}}},
        {"max_long", {K_MAX_DIM, 0, 1, {1}}},
        {"max_ties", {K_MAX_DIM, 0, 1, {1}}},
        {"min_ties_d0", {K_MIN_DIM, 0, 1, {0}}},
        {"amax_ties", {K_REDUCE, XT_MAX, 1, {1}}},
        {"amin_ties_d0", {K_REDUCE, XT_MIN, 2, {0, 2}}},
        {"prod_zeros", {K_REDUCE, XT_PROD, 1, {1}}},
        {"cumsum_d0", {K_CUMSUM, 0, 1, {0}}},
        {"cumsum_d1", {K_CUMSUM, 0, 1, {1}}},
        {"cumsum_dm1", {K_CUMSUM, 0, 1, {-1}}},
        {"cumsum_long", {K_CUMSUM, 0, 1, {1}}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const char *name = cases[k].name;
        const grad_case *c = &cases[k].c;
        xt_tensor *x = test_fixture("reduce", name, "in1");
        xt_tensor *want = test_fixture("reduce", name, "out");
        xt_tensor *dout = test_fixture("reduce", name, "dout");
        xt_tensor *want_grad = test_fixture("reduce", name, "grad1");
        CHECK(x && want && dout && want_grad);
        if (!x || !want || !dout || !want_grad) continue;
        xt_set_requires_grad(x, 1);
        xt_tensor *idx = NULL, *out = NULL;
        if (c->kind == K_MAX_DIM) out = xt_max_dim(x, c->dims[0], c->keepdim, 1, &idx);
        else if (c->kind == K_MIN_DIM) out = xt_min_dim(x, c->dims[0], c->keepdim, 1, &idx);
        else out = run_case(&x, c);
        double scale = 1;
        for (int64_t i = 0; i < xt_numel(want); i++) scale = fmax(scale, fabs(test_f32(want)[i]));
        char what[100];
        snprintf(what, sizeof what, "fixture %s value", name);
        CHECK(out && has_shape(out, want->ndim, want->shape) && test_close(what, out, want, 2e-6 * scale));
        if (idx) {
            xt_tensor *want_idx = test_fixture("reduce", name, "idx");
            bool same = want_idx && xt_numel(want_idx) == xt_numel(idx) &&
                        memcmp(want_idx->data, idx->data, (size_t)xt_numel(idx) * 8) == 0;
            if (!same) fprintf(stderr, "fixture %s: indices differ\n", name);
            CHECK(same);
            xt_tensor_release(want_idx);
        }
        CHECK(out && xt_backward(out, dout, 0) == XT_OK);
        double gscale = 1;
        for (int64_t i = 0; i < xt_numel(want_grad); i++) gscale = fmax(gscale, fabs(test_f32(want_grad)[i]));
        snprintf(what, sizeof what, "fixture %s gradient", name);
        CHECK(test_close(what, x->grad, want_grad, 2e-6 * gscale));
        xt_tensor *ts[] = {x, want, dout, want_grad, idx, out};
        for (int i = 0; i < 6; i++) xt_tensor_release(ts[i]);
    }
}

int main(void)
{
    test_seed("test_reduce", SEED);
    int64_t live = xt_live_bytes();
    test_reduce_values();
    test_reduce_empty();
    test_reduce_integers();
    test_reduce_nan();
    test_extremes();
    test_cumsum();
    test_softmax();
    test_sum_to();
    test_errors();
    test_grads();
    test_grad_details();
    test_threads();
    test_fixtures();
    CHECK(xt_live_bytes() == live);   /* everything released */
    return check_report("test_reduce");
}
