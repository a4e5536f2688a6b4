/*
 * test_sdpa.c: scaled_dot_product_attention against a plain composition written here in
 * double precision (scores = scale * q k^T with the causal mask, softmax, optional dropout
 * of the weights, times v; and its analytic backward), finite-difference gradient checks
 * (causal and not, T not a multiple of the 64-row tile, T != S, dropout), PyTorch fixtures
 * (tests/fixtures/sdpa, make_sdpa_fixtures.py), causality, large logits, strided views read
 * in place, identical bits for any thread count (the backward's one-pass and two-pass
 * schedules), peak memory, autograd bookkeeping and every error path.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "internal.h"
#include "testlib.h"

/* ---- the plain composition, in double ----------------------------------------------- */

typedef struct shape4 {
    int64_t B, H, T, S, d, dv;
} shape4;

static xt_tensor *q_of(const shape4 *s, double scale)
{
    int64_t sh[4] = {s->B, s->H, s->T, s->d};
    return test_randn(4, sh, scale, 0);
}
static xt_tensor *k_of(const shape4 *s, double scale)
{
    int64_t sh[4] = {s->B, s->H, s->S, s->d};
    return test_randn(4, sh, scale, 0);
}
static xt_tensor *v_of(const shape4 *s)
{
    int64_t sh[4] = {s->B, s->H, s->S, s->dv};
    return test_randn(4, sh, 1, 0);
}

/* Dropout on the attention weights as sdpa.c documents it: weight (n, i, j) is kept when
 * lane j % 4 of philox(seed, offset + (n*T + i) * ceil(S/4) + j / 4) is >= p * 2^32. */
typedef struct drop_spec {
    double p;   /* 0: no dropout */
    uint64_t seed, offset;
} drop_spec;

static double keep_factor(const drop_spec *dr, const shape4 *s, int64_t n, int64_t i, int64_t j)
{
    if (!dr || dr->p == 0) return 1;
    uint32_t r[4];
    xt_philox(dr->seed, dr->offset + (uint64_t)((n * s->T + i) * ((s->S + 3) / 4) + j / 4), r);
    return (uint64_t)r[j % 4] >= (uint64_t)(dr->p * 4294967296.0) ? 1 / (1 - dr->p) : 0;
}

/* Reference attention of contiguous q, k, v: out [units,T,dv]; with dout, also dq, dk, dv
 * (any of which may be NULL). P is formed row by row, P~ = P * Z / (1-p) with dropout; the
 * backward is the textbook one: dV = P~^T dO, dP = (dO V^T) * Z / (1-p),
 * dS = P * (dP - rowsum(P * dP)), dQ = scale dS K, dK = scale dS^T Q. */
static void reference_dropout(const shape4 *s, bool causal, double scale, const drop_spec *dr,
                              const float *q, const float *k, const float *v,
                              const float *dout, double *out, double *dq, double *dk,
                              double *dv)
{
    int64_t units = s->B * s->H, T = s->T, S = s->S, d = s->d, e = s->dv;
    double *p = malloc(sizeof(double) * (size_t)S), *dp = malloc(sizeof(double) * (size_t)S);
    double *z = malloc(sizeof(double) * (size_t)S);
    if (dq) memset(dq, 0, sizeof(double) * (size_t)(units * T * d));
    if (dk) memset(dk, 0, sizeof(double) * (size_t)(units * S * d));
    if (dv) memset(dv, 0, sizeof(double) * (size_t)(units * S * e));
    for (int64_t n = 0; n < units; n++) {
        const float *qn = q + n * T * d, *kn = k + n * S * d, *vn = v + n * S * e;
        for (int64_t i = 0; i < T; i++) {
            int64_t visible = causal ? i + (S - T) + 1 : S;
            double mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j < visible; j++) {
                double dot = 0;
                for (int64_t c = 0; c < d; c++) dot += (double)qn[i * d + c] * kn[j * d + c];
                p[j] = scale * dot;
                if (p[j] > mx) mx = p[j];
            }
            for (int64_t j = 0; j < visible; j++) sum += (p[j] = exp(p[j] - mx));
            for (int64_t j = 0; j < visible; j++) {
                p[j] /= sum;
                z[j] = keep_factor(dr, s, n, i, j);
            }
            for (int64_t c = 0; c < e; c++) {
                double o = 0;
                for (int64_t j = 0; j < visible; j++) o += p[j] * z[j] * vn[j * e + c];
                if (out) out[(n * T + i) * e + c] = o;
            }
            if (!dout) continue;
            const float *go = dout + (n * T + i) * e;
            double pdp = 0;
            for (int64_t j = 0; j < visible; j++) {
                double acc = 0;
                for (int64_t c = 0; c < e; c++) {
                    acc += (double)go[c] * vn[j * e + c];
                    if (dv) dv[(n * S + j) * e + c] += p[j] * z[j] * go[c];
                }
                dp[j] = acc * z[j];
                pdp += p[j] * dp[j];
            }
            for (int64_t j = 0; j < visible; j++) {
                double ds = scale * p[j] * (dp[j] - pdp);
                for (int64_t c = 0; c < d; c++) {
                    if (dq) dq[(n * T + i) * d + c] += ds * kn[j * d + c];
                    if (dk) dk[(n * S + j) * d + c] += ds * qn[i * d + c];
                }
            }
        }
    }
    free(p);
    free(dp);
    free(z);
}

static void reference(const shape4 *s, bool causal, double scale, const float *q,
                      const float *k, const float *v, const float *dout, double *out,
                      double *dq, double *dk, double *dv)
{
    reference_dropout(s, causal, scale, NULL, q, k, v, dout, out, dq, dk, dv);
}

/* max |a - b| <= tol * max(1, max |b|) over n elements (NaN fails). */
static bool close_to(const char *what, const xt_tensor *a, const double *b, int64_t n, double tol)
{
    if (!a || xt_numel(a) != n) {
        fprintf(stderr, "%s: missing or wrong size\n", what);
        return false;
    }
    xt_tensor *c = xt_contiguous((xt_tensor *)a);
    double worst = 0, big = 1;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)test_f32(c)[i] - b[i]);
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
        if (fabs(b[i]) > big) big = fabs(b[i]);
    }
    xt_tensor_release(c);
    if (worst <= tol * big) return true;
    fprintf(stderr, "%s: differs from the plain composition by %g (max |ref| %g, tol %g)\n",
            what, worst, big, tol);
    return false;
}

/* ---- against the plain composition: values and all three gradients -------------------- */

static void check_reference_dropout(const char *what, shape4 s, bool causal, double scale_arg,
                                    double magnitude, double p)
{
    xt_tensor *q = q_of(&s, magnitude), *k = k_of(&s, magnitude), *v = v_of(&s);
    int64_t osh[4] = {s.B, s.H, s.T, s.dv};
    xt_tensor *dout = test_randn(4, osh, 1, 0);
    xt_set_requires_grad(q, 1);
    xt_set_requires_grad(k, 1);
    xt_set_requires_grad(v, 1);
    xt_rng rng = {77, 1234};
    drop_spec dr = {p, rng.seed, rng.offset};
    xt_tensor *out = xt_scaled_dot_product_attention_dropout(q, k, v, causal, scale_arg, p, &rng);
    CHECK(out != NULL);
    CHECK(rng.offset == dr.offset + (p > 0 ? (uint64_t)(s.B * s.H * s.T * ((s.S + 3) / 4)) : 0));
    CHECK(out && out->ndim == 4 && out->shape[3] == s.dv && out->shape[2] == s.T);
    CHECK(out && xt_backward(out, dout, 0) == XT_OK);

    int64_t units = s.B * s.H, no = units * s.T * s.dv;
    double scale = scale_arg > 0 ? scale_arg : 1 / sqrt((double)s.d);
    double *ro = malloc(sizeof(double) * (size_t)no);
    double *rq = malloc(sizeof(double) * (size_t)xt_numel(q));
    double *rk = malloc(sizeof(double) * (size_t)xt_numel(k));
    double *rv = malloc(sizeof(double) * (size_t)xt_numel(v));
    reference_dropout(&s, causal, scale, &dr, q->data, k->data, v->data, dout->data, ro, rq,
                      rk, rv);
    char name[160];
    double tol = 2e-5 * (1 + magnitude * magnitude);
    snprintf(name, sizeof name, "%s: out", what);
    CHECK(close_to(name, out, ro, no, tol));
    snprintf(name, sizeof name, "%s: dq", what);
    CHECK(close_to(name, q->grad, rq, xt_numel(q), tol));
    snprintf(name, sizeof name, "%s: dk", what);
    CHECK(close_to(name, k->grad, rk, xt_numel(k), tol));
    snprintf(name, sizeof name, "%s: dv", what);
    CHECK(close_to(name, v->grad, rv, xt_numel(v), tol));
    free(ro);
    free(rq);
    free(rk);
    free(rv);
    xt_tensor *ts[5] = {q, k, v, dout, out};
    for (int i = 0; i < 5; i++) xt_tensor_release(ts[i]);
}

static void check_against_reference(const char *what, shape4 s, bool causal, double scale_arg,
                                    double magnitude)
{
    check_reference_dropout(what, s, causal, scale_arg, magnitude, 0);
}

static void test_reference(void)
{
    /* T and S below, at and above the 64-row tile, not multiples of it */
    check_against_reference("causal 37", (shape4){2, 3, 37, 37, 8, 8}, true, 0, 1);
    check_against_reference("full 37", (shape4){2, 3, 37, 37, 8, 8}, false, 0, 1);
    check_against_reference("causal 130", (shape4){1, 2, 130, 130, 16, 16}, true, 0, 1);
    check_against_reference("full 130x200 dv 12", (shape4){2, 1, 130, 200, 16, 12}, false, 0.2, 1);
    check_against_reference("causal offset 50x130", (shape4){1, 2, 50, 130, 8, 8}, true, 0, 1);
    check_against_reference("causal 64 exact tile", (shape4){1, 1, 64, 64, 32, 32}, true, 0, 1);
    check_against_reference("single query and key", (shape4){3, 1, 1, 1, 5, 3}, true, 0, 1);
    check_against_reference("one query, 100 keys", (shape4){1, 2, 1, 100, 8, 8}, true, 0, 1);
    check_against_reference("causal 200 one unit", (shape4){1, 1, 200, 200, 16, 16}, true, 0, 1);
    check_reference_dropout("dropout causal 130", (shape4){2, 2, 130, 130, 8, 8}, true, 0, 1, 0.3);
    check_reference_dropout("dropout full 70x83", (shape4){1, 3, 70, 83, 8, 5}, false, 0, 1, 0.5);
    check_reference_dropout("dropout causal offset 1x7", (shape4){2, 1, 1, 7, 4, 4}, true, 0, 1, 0.2);
}

/* ---- finite differences ---------------------------------------------------------------- */

typedef struct fd_ctx {
    int32_t causal;
    double scale, p;
} fd_ctx;

/* With dropout, every call starts the generator at the same place: the same mask. */
static xt_tensor *sdpa_fn(xt_tensor *const *in, const void *ctx)
{
    const fd_ctx *c = ctx;
    xt_rng rng = {5, 0};
    return xt_scaled_dot_product_attention_dropout(in[0], in[1], in[2], c->causal, c->scale,
                                                   c->p, &rng);
}

static void gradcheck_case(const char *what, shape4 s, int32_t causal, double scale, double p)
{
    xt_tensor *in[3] = {q_of(&s, 1), k_of(&s, 1), v_of(&s)};
    fd_ctx ctx = {causal, scale, p};
    CHECK(test_gradcheck(what, sdpa_fn, &ctx, 3, in));
    for (int i = 0; i < 3; i++) xt_tensor_release(in[i]);
}

static void test_gradcheck_all(void)
{
    gradcheck_case("gradcheck causal 70 (two tiles)", (shape4){1, 2, 70, 70, 4, 4}, 1, 0, 0);
    gradcheck_case("gradcheck full 67x75 (T != S)", (shape4){1, 2, 67, 75, 4, 3}, 0, 0, 0);
    gradcheck_case("gradcheck causal offset 9x13", (shape4){2, 1, 9, 13, 6, 5}, 1, 0.7, 0);
    gradcheck_case("gradcheck full 5x3", (shape4){2, 2, 5, 3, 3, 2}, 0, 0, 0);
    gradcheck_case("gradcheck dropout causal 70", (shape4){1, 1, 70, 70, 4, 4}, 1, 0, 0.4);
    gradcheck_case("gradcheck dropout full 11x13", (shape4){2, 1, 11, 13, 3, 3}, 0, 0, 0.25);
}

/* ---- PyTorch fixtures ------------------------------------------------------------------- */

static void fixture_case(const char *name)
{
    xt_tensor *q = test_fixture("sdpa", name, "q"), *k = test_fixture("sdpa", name, "k");
    xt_tensor *v = test_fixture("sdpa", name, "v"), *args = test_fixture("sdpa", name, "args");
    xt_tensor *dout = test_fixture("sdpa", name, "dout"), *want = test_fixture("sdpa", name, "out");
    xt_tensor *dq = test_fixture("sdpa", name, "dq"), *dk = test_fixture("sdpa", name, "dk");
    xt_tensor *dv = test_fixture("sdpa", name, "dv");
    xt_tensor *all[9] = {q, k, v, args, dout, want, dq, dk, dv};
    bool loaded = true;
    for (int i = 0; i < 9; i++) loaded = loaded && all[i];
    CHECK(loaded);
    if (loaded) {
        const float *a = args->data;
        xt_set_requires_grad(q, 1);
        xt_set_requires_grad(k, 1);
        xt_set_requires_grad(v, 1);
        xt_tensor *out = xt_scaled_dot_product_attention(q, k, v, a[0] != 0, a[1]);
        CHECK(out && xt_backward(out, dout, 0) == XT_OK);
        char what[128];
        snprintf(what, sizeof what, "fixture %s: out", name);
        CHECK(test_close(what, out, want, 2e-5));
        snprintf(what, sizeof what, "fixture %s: dq", name);
        CHECK(test_close(what, q->grad, dq, 1e-4));
        snprintf(what, sizeof what, "fixture %s: dk", name);
        CHECK(test_close(what, k->grad, dk, 1e-4));
        snprintf(what, sizeof what, "fixture %s: dv", name);
        CHECK(test_close(what, v->grad, dv, 1e-4));
        xt_tensor_release(out);
    }
    for (int i = 0; i < 9; i++) xt_tensor_release(all[i]);
}

static void test_fixtures(void)
{
    const char *cases[] = {"causal_square", "full_square", "full_t_ne_s", "causal_offset",
                           "causal_large_logits", "causal_tiles"};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) fixture_case(cases[i]);
}

/* ---- causality: what a query row may not see cannot change it ------------------------------ */

static void test_causality(void)
{
    shape4 s = {2, 2, 150, 170, 8, 8};   /* offset 20: row i sees keys j <= i + 20 */
    xt_tensor *q = q_of(&s, 1), *k = k_of(&s, 1), *v = v_of(&s);
    xt_tensor *before = xt_scaled_dot_product_attention(q, k, v, 1, 0);
    int64_t t = 77;   /* rows <= t keep their value; keys > t + 20 and queries > t change */
    float *pq = q->data, *pk = k->data, *pv = v->data;
    for (int64_t n = 0; n < s.B * s.H; n++) {
        for (int64_t i = t + 1; i < s.T; i++)
            for (int64_t c = 0; c < s.d; c++) pq[(n * s.T + i) * s.d + c] += 3.0f;
        for (int64_t j = t + 21; j < s.S; j++) {
            for (int64_t c = 0; c < s.d; c++) pk[(n * s.S + j) * s.d + c] *= -5.0f;
            for (int64_t c = 0; c < s.dv; c++) pv[(n * s.S + j) * s.dv + c] += 100.0f;
        }
    }
    xt_tensor *after = xt_scaled_dot_product_attention(q, k, v, 1, 0);
    CHECK(before && after);
    if (before && after) {
        const float *a = before->data, *b = after->data;
        int64_t same = 0, later_changed = 0, total = 0;
        for (int64_t n = 0; n < s.B * s.H; n++)
            for (int64_t i = 0; i < s.T; i++)
                for (int64_t c = 0; c < s.dv; c++) {
                    int64_t at = (n * s.T + i) * s.dv + c;
                    if (i <= t) {
                        same += a[at] == b[at];
                        total++;
                    } else {
                        later_changed += a[at] != b[at];
                    }
                }
        CHECK(same == total);                 /* bit for bit */
        CHECK(later_changed > 0);             /* the perturbation did reach later rows */
    }
    /* and the key at the edge is seen: changing key t + 20 changes row t */
    xt_tensor *edge = NULL;
    for (int64_t c = 0; c < s.dv; c++) pv[(t + 20) * s.dv + c] += 1.0f;
    edge = xt_scaled_dot_product_attention(q, k, v, 1, 0);
    CHECK(edge && after && ((float *)edge->data)[t * s.dv] != ((float *)after->data)[t * s.dv]);
    xt_tensor *ts[6] = {q, k, v, before, after, edge};
    for (int i = 0; i < 6; i++) xt_tensor_release(ts[i]);
}

/* ---- large logits: |q.k| * scale ~ 1e4 stays finite and right ------------------------------ */

static bool all_finite(const xt_tensor *t)
{
    if (!t) return false;
    const float *p = t->data;
    for (int64_t i = 0; i < xt_numel(t); i++)
        if (!isfinite(p[i])) return false;
    return true;
}

static void test_large_logits(void)
{
    shape4 s = {1, 2, 100, 100, 16, 16};
    for (int causal = 0; causal <= 1; causal++) {
        xt_tensor *q = q_of(&s, 100), *k = k_of(&s, 100), *v = v_of(&s);
        int64_t osh[4] = {s.B, s.H, s.T, s.dv};
        xt_tensor *dout = test_randn(4, osh, 1, 0);
        xt_set_requires_grad(q, 1);
        xt_set_requires_grad(k, 1);
        xt_set_requires_grad(v, 1);
        xt_tensor *out = xt_scaled_dot_product_attention(q, k, v, causal, 0);
        CHECK(out && xt_backward(out, dout, 0) == XT_OK);
        /* the logits really are that large */
        double dot = 0;
        for (int64_t c = 0; c < s.d; c++)
            dot += (double)((float *)q->data)[c] * ((float *)k->data)[c];
        CHECK(fabs(dot) / 4 > 1e3);
        CHECK(all_finite(out));
        CHECK(all_finite(q->grad) && all_finite(k->grad) && all_finite(v->grad));
        /* the softmax is (nearly) one-hot: the values still match the plain composition */
        double *ro = malloc(sizeof(double) * (size_t)xt_numel(out));
        double *rv = malloc(sizeof(double) * (size_t)xt_numel(v));
        reference(&s, causal, 0.25, q->data, k->data, v->data, dout->data, ro, NULL, NULL, rv);
        CHECK(close_to("large logits: out", out, ro, xt_numel(out), 1e-3));
        CHECK(close_to("large logits: dv", v->grad, rv, xt_numel(v), 1e-3));
        free(ro);
        free(rv);
        xt_tensor *ts[5] = {q, k, v, dout, out};
        for (int i = 0; i < 5; i++) xt_tensor_release(ts[i]);
    }
}

/* ---- NaN is not hidden: a NaN query poisons its own row, and only that row ----------------- */

static void test_nan_propagates(void)
{
    shape4 s = {1, 1, 70, 70, 8, 8};
    xt_tensor *q = q_of(&s, 1), *k = k_of(&s, 1), *v = v_of(&s);
    int64_t row = 66;
    ((float *)q->data)[row * s.d + 3] = NAN;
    for (int causal = 0; causal <= 1; causal++) {
        xt_tensor *out = xt_scaled_dot_product_attention(q, k, v, causal, 0);
        CHECK(out != NULL);
        if (!out) continue;
        int64_t nan_rows = 0, nan_in_row = 0;
        for (int64_t i = 0; i < s.T; i++) {
            bool any = false;
            for (int64_t c = 0; c < s.dv; c++) any = any || isnan(((float *)out->data)[i * s.dv + c]);
            nan_rows += any;
            nan_in_row += any && i == row;
        }
        CHECK(nan_rows == 1 && nan_in_row == 1);
        xt_tensor_release(out);
    }
    xt_tensor *ts[3] = {q, k, v};
    for (int i = 0; i < 3; i++) xt_tensor_release(ts[i]);
}

/* ---- strided inputs ------------------------------------------------------------------------
 * Views that sdpa reads in place (heads permuted out of [B,T,H,d], a narrowed cache, keys
 * expanded over heads) and one it must copy (last dim not contiguous) give the values and
 * the gradients of their contiguous copies. The gradients reach the viewed leaves through
 * the view ops. */

typedef xt_tensor *(*view_fn)(xt_tensor *leaf);

static xt_tensor *heads_of_btHd(xt_tensor *t)   /* [B,T,H,d] -> [B,H,T,d] */
{
    int32_t perm[4] = {0, 2, 1, 3};
    return xt_permute(t, 4, perm);
}
static xt_tensor *cache_prefix(xt_tensor *t)    /* [B,H,cap,d] -> [B,H,cap-7,d] */
{
    return xt_narrow(t, 2, 0, t->shape[2] - 7);
}
static xt_tensor *over_heads(xt_tensor *t)      /* [B,1,S,d] -> [B,3,S,d] */
{
    int64_t sh[4] = {-1, 3, -1, -1};
    return xt_expand(t, 4, sh);
}
static xt_tensor *swap_last(xt_tensor *t)       /* [B,H,d,T] -> [B,H,T,d], d not contiguous */
{
    return xt_transpose(t, 2, 3);
}

/* dst += src, where dst is a view and src is contiguous with the view's shape (4-D); an
 * expanded view adds every copy into the one element it reads. */
static void add_through_view(xt_tensor *dst, const xt_tensor *src)
{
    int64_t idx[4] = {0, 0, 0, 0};
    const float *ps = src->data;
    float *pd = dst->data;
    for (int64_t e = 0; e < xt_numel(src); e++) {
        int64_t off = 0;
        for (int k = 0; k < 4; k++) off += idx[k] * dst->strides[k];
        pd[off] += ps[e];
        for (int k = 3; k >= 0; k--) {
            if (++idx[k] < dst->shape[k]) break;
            idx[k] = 0;
        }
    }
}

/* sdpa of view(leaf_i) vs of contiguous copies of the views: the outputs, and each leaf's
 * gradient vs the copy's gradient taken back through the view. */
static void strided_case(const char *what, view_fn view, const int64_t *leaf_shape,
                         bool in_place, int32_t causal)
{
    xt_tensor *leaf[3], *viewed[3], *copy[3];
    for (int i = 0; i < 3; i++) {
        leaf[i] = test_randn(4, leaf_shape, 1, 0);
        xt_set_requires_grad(leaf[i], 1);
        viewed[i] = view(leaf[i]);
        int32_t mode = xt_set_grad_enabled(0);
        copy[i] = xt_clone(viewed[i]);
        xt_set_grad_enabled(mode);
        xt_set_requires_grad(copy[i], 1);
    }
    CHECK(viewed[0] && !xt_is_contiguous(viewed[0]));
    int64_t live = xt_live_bytes();
    xt_tensor *a = xt_scaled_dot_product_attention(viewed[0], viewed[1], viewed[2], causal, 0);
    /* what the graph keeps: out and lse, plus copies of q, k, v when they cannot be read in
     * place (the copies are a little larger than out) */
    int64_t kept = xt_live_bytes() - live, own = a ? 4 * (xt_numel(a) + xt_numel(a) / a->shape[3]) : 0;
    CHECK(in_place ? kept <= own + 1024 : kept > own + 3 * 4 * xt_numel(a) - 1024);
    xt_tensor *b = xt_scaled_dot_product_attention(copy[0], copy[1], copy[2], causal, 0);
    xt_tensor *dout = a ? test_randn(a->ndim, a->shape, 1, 0) : NULL;
    CHECK(a && b && xt_backward(a, dout, 0) == XT_OK && xt_backward(b, dout, 0) == XT_OK);
    char name[160];
    snprintf(name, sizeof name, "%s: out", what);
    CHECK(test_close(name, a, b, 1e-6));
    for (int i = 0; i < 3; i++) {
        xt_tensor *want = xt_zeros(4, leaf_shape, XT_FLOAT32), *want_view = view(want);
        bool ok = leaf[i]->grad && copy[i]->grad;
        CHECK(ok);
        if (ok) {
            add_through_view(want_view, copy[i]->grad);
            snprintf(name, sizeof name, "%s: gradient of input %d", what, i);
            CHECK(test_close(name, leaf[i]->grad, want, 1e-5));
        }
        xt_tensor_release(want_view);
        xt_tensor_release(want);
    }
    for (int i = 0; i < 3; i++) {
        xt_tensor_release(leaf[i]);
        xt_tensor_release(viewed[i]);
        xt_tensor_release(copy[i]);
    }
    xt_tensor_release(a);
    xt_tensor_release(b);
    xt_tensor_release(dout);
}

static void test_strided(void)
{
    int64_t bthd[4] = {2, 70, 3, 8}, cache[4] = {2, 3, 77, 8}, shared[4] = {2, 1, 50, 8};
    int64_t dt[4] = {1, 2, 8, 66};
    strided_case("heads permuted from [B,T,H,d]", heads_of_btHd, bthd, true, 1);
    strided_case("narrowed cache", cache_prefix, cache, true, 1);
    strided_case("keys expanded over heads", over_heads, shared, true, 0);
    strided_case("last dim not contiguous", swap_last, dt, false, 1);
}

/* ---- the same bits for any thread count (and so for either backward schedule) ------------ */

static void run_with_threads(int32_t threads, double p, xt_tensor *q, xt_tensor *k,
                             xt_tensor *v, xt_tensor *dout, xt_tensor **res)
{
    xt_set_num_threads(threads);
    xt_set_requires_grad(q, 1);
    xt_set_requires_grad(k, 1);
    xt_set_requires_grad(v, 1);
    xt_rng rng = {9, 0};
    res[0] = xt_scaled_dot_product_attention_dropout(q, k, v, 1, 0, p, &rng);
    CHECK(res[0] && xt_backward(res[0], dout, 0) == XT_OK);
    res[1] = xt_get_grad(q);
    res[2] = xt_get_grad(k);
    res[3] = xt_get_grad(v);
    xt_set_grad(q, NULL);
    xt_set_grad(k, NULL);
    xt_set_grad(v, NULL);
}

static void test_thread_independence(void)
{
    int32_t saved = xt_get_num_threads();
    shape4 shapes[3] = {{1, 1, 300, 300, 16, 16}, {1, 3, 200, 260, 16, 8}, {1, 1, 150, 150, 8, 8}};
    double drop[3] = {0, 0, 0.3};
    for (int c = 0; c < 3; c++) {
        shape4 s = shapes[c];
        xt_tensor *q = q_of(&s, 1), *k = k_of(&s, 1), *v = v_of(&s);
        int64_t osh[4] = {s.B, s.H, s.T, s.dv};
        xt_tensor *dout = test_randn(4, osh, 1, 0);
        xt_tensor *one[4] = {0}, *two[4] = {0}, *three[4] = {0};
        run_with_threads(1, drop[c], q, k, v, dout, one);
        run_with_threads(2, drop[c], q, k, v, dout, two);
        run_with_threads(3, drop[c], q, k, v, dout, three);
        for (int i = 0; i < 4; i++) {
            CHECK(test_max_diff(one[i], two[i]) == 0);
            CHECK(test_max_diff(one[i], three[i]) == 0);
            xt_tensor_release(one[i]);
            xt_tensor_release(two[i]);
            xt_tensor_release(three[i]);
        }
        xt_tensor *ts[4] = {q, k, v, dout};
        for (int i = 0; i < 4; i++) xt_tensor_release(ts[i]);
    }
    xt_set_num_threads(saved);
}

/* ---- autograd bookkeeping ------------------------------------------------------------------ */

static void test_autograd(void)
{
    shape4 s = {1, 1, 10, 10, 4, 4};
    xt_tensor *q = q_of(&s, 1), *k = k_of(&s, 1), *v = v_of(&s);
    xt_tensor *out = xt_scaled_dot_product_attention(q, k, v, 1, 0);
    CHECK(out && xt_is_leaf(out) && !out->requires_grad);   /* nothing needs grad: no node */
    xt_tensor_release(out);

    /* only v needs grad: q and k get none */
    xt_set_requires_grad(v, 1);
    out = xt_scaled_dot_product_attention(q, k, v, 1, 0);
    CHECK(out && xt_grad_fn_name(out) && strcmp(xt_grad_fn_name(out), "scaled_dot_product_attention") == 0);
    xt_tensor *dout = xt_full(out->ndim, out->shape, XT_FLOAT32, 1.0);
    CHECK(xt_backward(out, dout, 0) == XT_OK);
    CHECK(v->grad && !q->grad && !k->grad);
    /* with dout = 1 every row of P sums to 1, so dv sums to T per column */
    double total = 0;
    for (int64_t i = 0; i < xt_numel(v->grad); i++) total += ((float *)v->grad->data)[i];
    CHECK_NEAR(total, (double)s.T * s.dv, 1e-3);
    xt_tensor_release(out);

    /* modifying a saved input in place before the backward is caught */
    xt_set_requires_grad(v, 0);
    xt_set_requires_grad(q, 1);
    out = xt_scaled_dot_product_attention(q, k, v, 0, 0);
    CHECK(xt_binary_scalar_(XT_MUL, k, 2.0) == XT_OK);
    CHECK(xt_backward(out, dout, 0) != XT_OK);
    xt_tensor *ts[5] = {q, k, v, out, dout};
    for (int i = 0; i < 5; i++) xt_tensor_release(ts[i]);
}

/* ---- memory: fwd+bwd at T = 8192 never holds a T x T buffer ------------------------------- */

static long peak_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &kib) == 1) break;
    fclose(f);
    return kib;
}

static void test_memory(void)
{
    /* Resetting the peak needs Linux >= 4.0; without it (or /proc) the check is skipped. */
    FILE *f = fopen("/proc/self/clear_refs", "w");
    bool can_reset = f && fputs("5", f) >= 0;
    if (f) can_reset = (fclose(f) == 0) && can_reset;
    shape4 s = {1, 1, 8192, 8192, 16, 16};
    xt_tensor *q = q_of(&s, 1), *k = k_of(&s, 1), *v = v_of(&s);
    int64_t osh[4] = {s.B, s.H, s.T, s.dv};
    xt_tensor *dout = test_randn(4, osh, 1, 0);
    xt_set_requires_grad(q, 1);
    xt_set_requires_grad(k, 1);
    xt_set_requires_grad(v, 1);
    long base = can_reset ? peak_rss_kib() : -1;
    xt_tensor *out = xt_scaled_dot_product_attention(q, k, v, 1, 0);
    CHECK(out && xt_backward(out, dout, 0) == XT_OK);
    long peak = peak_rss_kib();
    /* T x T floats would be 256 MiB; the inputs are 512 KiB each */
    if (base > 0 && peak > 0) {
        printf("memory: T = 8192, d = 16: peak RSS grew by %ld KiB in fwd+bwd\n", peak - base);
        CHECK(peak - base < 32 * 1024);
    } else {
        printf("memory: peak RSS cannot be reset here; check skipped\n");
    }
    CHECK(all_finite(q->grad));
    xt_tensor *ts[5] = {q, k, v, dout, out};
    for (int i = 0; i < 5; i++) xt_tensor_release(ts[i]);
}

/* ---- errors -------------------------------------------------------------------------------- */

static void test_errors(void)
{
    int64_t s4[4] = {2, 3, 5, 8}, k4[4] = {2, 3, 7, 8}, v4[4] = {2, 3, 7, 6};
    xt_tensor *q = xt_zeros(4, s4, XT_FLOAT32), *k = xt_zeros(4, k4, XT_FLOAT32);
    xt_tensor *v = xt_zeros(4, v4, XT_FLOAT32);
    const char *op = "scaled_dot_product_attention";

    xt_tensor *ok = xt_scaled_dot_product_attention(q, k, v, 1, 0);
    CHECK(ok && ok->shape[3] == 6);
    xt_tensor_release(ok);

    CHECK(!xt_scaled_dot_product_attention(NULL, k, v, 0, 0) && test_error_has("q is NULL"));
    xt_tensor *qi = xt_zeros(4, s4, XT_INT64);
    CHECK(!xt_scaled_dot_product_attention(qi, k, v, 0, 0) && test_error_has("float32 q") &&
          test_error_has(op));
    int64_t s3[3] = {3, 5, 8};
    xt_tensor *q3 = xt_zeros(3, s3, XT_FLOAT32);
    CHECK(!xt_scaled_dot_product_attention(q3, k, v, 0, 0) && test_error_has("same number of dims"));
    int64_t b4[4] = {2, 4, 7, 8};
    xt_tensor *kb = xt_zeros(4, b4, XT_FLOAT32);
    CHECK(!xt_scaled_dot_product_attention(q, kb, v, 0, 0) && test_error_has("leading dims"));
    int64_t d4[4] = {2, 3, 7, 9};
    xt_tensor *kd = xt_zeros(4, d4, XT_FLOAT32);
    CHECK(!xt_scaled_dot_product_attention(q, kd, v, 0, 0) && test_error_has("same last dim d"));
    int64_t l4[4] = {2, 3, 6, 6};
    xt_tensor *vl = xt_zeros(4, l4, XT_FLOAT32);
    CHECK(!xt_scaled_dot_product_attention(q, k, vl, 0, 0) && test_error_has("same length S"));
    int64_t e4[4] = {2, 3, 0, 8}, ev4[4] = {2, 3, 0, 6};
    xt_tensor *ke = xt_zeros(4, e4, XT_FLOAT32), *ve = xt_zeros(4, ev4, XT_FLOAT32);
    CHECK(!xt_scaled_dot_product_attention(q, ke, ve, 0, 0) && test_error_has("no keys"));
    int64_t short4[4] = {2, 3, 4, 8}, shortv[4] = {2, 3, 4, 6};
    xt_tensor *ks = xt_zeros(4, short4, XT_FLOAT32), *vs = xt_zeros(4, shortv, XT_FLOAT32);
    CHECK(!xt_scaled_dot_product_attention(q, ks, vs, 1, 0) && test_error_has("S >= T"));
    xt_tensor *fine = xt_scaled_dot_product_attention(q, ks, vs, 0, 0);   /* not causal: fine */
    CHECK(fine != NULL);
    xt_tensor_release(fine);
    CHECK(!xt_scaled_dot_product_attention(q, k, v, 0, NAN) && test_error_has("scale must be finite"));
    CHECK(!xt_scaled_dot_product_attention(q, k, v, 0, INFINITY) && test_error_has("scale"));
    xt_rng rng = {1, 0};
    CHECK(!xt_scaled_dot_product_attention_dropout(q, k, v, 0, 0, 1.0, &rng) &&
          test_error_has("dropout probability must be in [0, 1)"));
    CHECK(!xt_scaled_dot_product_attention_dropout(q, k, v, 0, 0, -0.1, &rng) &&
          test_error_has("dropout probability"));
    CHECK(!xt_scaled_dot_product_attention_dropout(q, k, v, 0, 0, 0.1, NULL) &&
          test_error_has("needs a generator"));
    CHECK(rng.offset == 0);   /* failed calls draw nothing */
    xt_tensor *nodrop = xt_scaled_dot_product_attention_dropout(q, k, v, 0, 0, 0, NULL);
    CHECK(nodrop != NULL);
    xt_tensor_release(nodrop);
    int64_t z4[4] = {2, 3, 5, 0}, zk[4] = {2, 3, 7, 0};
    xt_tensor *qz = xt_zeros(4, z4, XT_FLOAT32), *kz = xt_zeros(4, zk, XT_FLOAT32);
    CHECK(!xt_scaled_dot_product_attention(qz, kz, v, 0, 0) && test_error_has("feature dims"));
    /* no queries is an empty result, not an error */
    int64_t t0[4] = {2, 3, 0, 8};
    xt_tensor *q0 = xt_zeros(4, t0, XT_FLOAT32);
    xt_tensor *empty = xt_scaled_dot_product_attention(q0, k, v, 0, 0);
    CHECK(empty && xt_numel(empty) == 0 && empty->shape[3] == 6);
    xt_tensor_release(empty);

    xt_tensor *ts[15] = {q, k, v, qi, q3, kb, kd, vl, ke, ve, ks, vs, qz, kz, q0};
    for (int i = 0; i < 15; i++) xt_tensor_release(ts[i]);
}

int main(void)
{
    test_seed("test_sdpa", 20240917);
    test_memory();   /* first, while the peak RSS is still low */
    test_reference();
    test_gradcheck_all();
    test_fixtures();
    test_causality();
    test_large_logits();
    test_nan_propagates();
    test_strided();
    test_thread_independence();
    test_autograd();
    test_errors();
    return check_report("test_sdpa");
}
