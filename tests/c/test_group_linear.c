/*
 * test_group_linear.c: DeLighT's group linear transformation (xt_group_linear and the fused
 * DExTra layer xt_group_linear_ex).
 *
 *  - values and every gradient against a per-group loop composed of plain xt ops (narrow,
 *    cat, matmul, add, stack for the shuffle, layer_norm over [g, co] chunks, silu), for
 *    shuffle on and off, with and without bias, prefix (the input mixer), chunk LayerNorm
 *    (with and without affine) and swish, and on enough rows for several row tiles on
 *    several threads;
 *  - the shuffle's permutation on a hand-computed example (research/delight.md § 1);
 *  - finite-difference gradient checks of the fused op itself (testlib);
 *  - strided inputs read in place (a narrowed x, a transposed w) and layouts that need a
 *    copy (a transposed x), leading dims, zero rows, no graph without grad;
 *  - every error message.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "testlib.h"

enum { SEED = 5150 };

typedef struct glt_case {
    const char *name;
    int32_t lead_ndim;
    int64_t lead[2];
    int64_t dx, dp, g, co;
    int shuffle, bias, normalize, affine, swish;
    int big;   /* several row tiles and threads: compared with the composition only */
} glt_case;

static const glt_case CASES[] = {
    {"plain", 1, {5}, 6, 0, 3, 2, 0, 0, 0, 0, 0},
    {"plain bias", 1, {5}, 6, 0, 3, 2, 0, 1, 0, 0, 0},
    {"shuffle", 1, {5}, 8, 0, 2, 3, 1, 0, 0, 0, 0},
    {"shuffle bias", 2, {2, 3}, 8, 0, 4, 3, 1, 1, 0, 0, 0},
    {"one group", 1, {4}, 5, 0, 1, 3, 1, 1, 0, 0, 0},
    {"norm", 1, {4}, 6, 0, 2, 4, 0, 1, 1, 1, 0},
    {"norm no affine", 1, {4}, 6, 0, 2, 4, 1, 1, 1, 0, 0},
    {"swish", 1, {4}, 6, 0, 3, 2, 1, 1, 0, 0, 1},
    {"dextra layer", 2, {2, 2}, 8, 4, 4, 3, 1, 1, 1, 1, 1},
    {"dextra no shuffle", 1, {3}, 4, 6, 2, 5, 0, 1, 1, 1, 1},
    {"dextra output layer", 1, {3}, 5, 4, 1, 6, 1, 1, 1, 1, 1},
    {"many rows", 2, {3, 100}, 32, 16, 4, 48, 1, 1, 1, 1, 1, 1},
    {"many rows plain", 1, {301}, 64, 0, 2, 64, 0, 1, 0, 0, 0, 1},
};
enum { NCASES = sizeof CASES / sizeof CASES[0] };

static int64_t ci_of(const glt_case *c) { return (c->dx + c->dp) / c->g; }

/* The case's inputs, contiguous random leaves (NULL where the case has none):
 * 0 x, 1 prefix, 2 w, 3 b, 4 gamma, 5 beta. */
static void make_inputs(const glt_case *c, xt_tensor **in)
{
    int64_t shape[3];
    memcpy(shape, c->lead, sizeof(int64_t) * (size_t)c->lead_ndim);
    shape[c->lead_ndim] = c->dx;
    in[0] = test_randn(c->lead_ndim + 1, shape, 1.0, 0.0);
    shape[c->lead_ndim] = c->dp;
    in[1] = c->dp ? test_randn(c->lead_ndim + 1, shape, 1.0, 0.0) : NULL;
    int64_t ws[3] = {c->g, ci_of(c), c->co}, bs[2] = {c->g, c->co};
    in[2] = test_randn(3, ws, 0.5, 0.0);
    in[3] = c->bias ? test_randn(2, bs, 0.5, 0.0) : NULL;
    in[4] = c->normalize && c->affine ? test_randn(1, &c->co, 0.3, 1.0) : NULL;
    in[5] = c->normalize && c->affine ? test_randn(1, &c->co, 0.3, 0.0) : NULL;
}

static void release_n(int n, xt_tensor **ts)
{
    for (int i = 0; i < n; i++) xt_tensor_release(ts[i]);
}

static xt_tensor *fused(xt_tensor *const *in, const void *ctx)
{
    const glt_case *c = ctx;
    return xt_group_linear_ex(in[0], in[1], in[2], in[3], c->shuffle, c->normalize, in[4],
                              in[5], 1e-5, c->swish);
}

/* x (or y) [..., d] viewed with its last dim replaced by (a, b) */
static xt_tensor *split_last(xt_tensor *t, int64_t a, int64_t b)
{
    int64_t shape[XT_MAX_DIMS];
    memcpy(shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
    shape[t->ndim - 1] = a;
    shape[t->ndim] = b;
    return xt_reshape(t, t->ndim + 1, shape);
}

static xt_tensor *merge_last(xt_tensor *t)
{
    return xt_flatten(t, t->ndim - 2, t->ndim - 1);
}

/* The same function from plain xt ops, one group at a time. */
static xt_tensor *composed(xt_tensor *const *in, const void *ctx)
{
    const glt_case *c = ctx;
    int64_t cx = c->dx / c->g, cp = c->dp / c->g;
    int32_t last = in[0]->ndim - 1;
    xt_tensor *parts[16];
    for (int64_t k = 0; k < c->g; k++) {
        xt_tensor *u = xt_narrow(in[0], last, k * cx, cx);
        if (in[1]) {
            xt_tensor *pk = xt_narrow(in[1], last, k * cp, cp);
            xt_tensor *pair[2] = {pk, u};
            xt_tensor *cat = xt_cat(2, pair, last);
            release_n(2, pair);
            u = cat;
        }
        xt_tensor *wk = xt_select(in[2], 0, k);
        xt_tensor *a = xt_matmul(u, wk);
        release_n(2, (xt_tensor *[]){u, wk});
        if (in[3]) {
            xt_tensor *bk = xt_select(in[3], 0, k);
            xt_tensor *ab = xt_binary(XT_ADD, a, bk);
            release_n(2, (xt_tensor *[]){a, bk});
            a = ab;
        }
        parts[k] = a;
    }
    xt_tensor *y;
    if (c->shuffle) {   /* [..., co, g] flattened: y[j*g + k] = A[k, j] */
        xt_tensor *s = xt_stack((int32_t)c->g, parts, last + 1);
        y = merge_last(s);
        xt_tensor_release(s);
    } else {
        y = xt_cat((int32_t)c->g, parts, last);
    }
    release_n((int)c->g, parts);
    if (c->normalize) {
        xt_tensor *chunks = split_last(y, c->g, c->co);
        xt_tensor *z = xt_layer_norm(chunks, 1, in[4], in[5], 1e-5);
        xt_tensor *zy = merge_last(z);
        release_n(3, (xt_tensor *[]){y, chunks, z});
        y = zy;
    }
    if (c->swish) {
        xt_tensor *s = xt_unary(XT_SILU, y);
        xt_tensor_release(y);
        y = s;
    }
    return y;
}

/* ---- values and gradients against the composition ---------------------------------- */

static void test_against_composition(void)
{
    for (int i = 0; i < NCASES; i++) {
        const glt_case *c = &CASES[i];
        xt_tensor *in[6];
        make_inputs(c, in);
        for (int k = 0; k < 6; k++)
            if (in[k]) xt_set_requires_grad(in[k], 1);
        xt_tensor *y = fused(in, c), *r = composed(in, c);
        CHECK(y && r);
        if (!y || !r) {
            fprintf(stderr, "case %s failed: %s\n", c->name, xt_last_error());
            release_n(6, in);
            continue;
        }
        CHECK(xt_same_shape(y, r));
        if (!test_close(c->name, y, r, 2e-5)) fprintf(stderr, "  (value, case %s)\n", c->name);
        xt_tensor *dy = xt_randn(&test_rng, y->ndim, y->shape);
        xt_tensor *grads[6] = {0};
        CHECK(xt_backward(y, dy, 0) == XT_OK);
        for (int k = 0; k < 6; k++)
            if (in[k]) {
                grads[k] = xt_get_grad(in[k]);
                xt_set_grad(in[k], NULL);
            }
        CHECK(xt_backward(r, dy, 0) == XT_OK);
        for (int k = 0; k < 6; k++) {
            if (!in[k]) continue;
            xt_tensor *want = xt_get_grad(in[k]);
            CHECK(grads[k] && want);
            char what[128];
            snprintf(what, sizeof what, "%s: gradient %d", c->name, k);
            CHECK(test_close(what, grads[k], want, 1e-4));
            xt_tensor_release(want);
        }
        release_n(6, grads);
        release_n(3, (xt_tensor *[]){y, r, dy});
        release_n(6, in);
    }
}

/* research/delight.md § 1: g = 2, co = 3, no shuffle a0_0 a0_1 a0_2 a1_0 a1_1 a1_2, shuffle
 * a0_0 a1_0 a0_1 a1_1 a0_2 a1_2. With x = [1, 1] and w[k][0][j] = 10k + j, A[k,j] = 10k + j. */
static void test_shuffle_permutation(void)
{
    int64_t xs[2] = {1, 2}, ws[3] = {2, 1, 3};
    float xv[2] = {1, 1}, wv[6] = {0, 1, 2, 10, 11, 12};
    xt_tensor *x = xt_from_data(2, xs, XT_FLOAT32, xv), *w = xt_from_data(3, ws, XT_FLOAT32, wv);
    xt_tensor *plain = xt_group_linear(x, w, NULL, 0), *shuf = xt_group_linear(x, w, NULL, 1);
    const float want_plain[6] = {0, 1, 2, 10, 11, 12}, want_shuf[6] = {0, 10, 1, 11, 2, 12};
    CHECK(plain && shuf);
    for (int i = 0; plain && shuf && i < 6; i++) {
        CHECK(test_f32(plain)[i] == want_plain[i]);
        CHECK(test_f32(shuf)[i] == want_shuf[i]);
    }
    release_n(4, (xt_tensor *[]){x, w, plain, shuf});
}

/* ---- finite differences ----------------------------------------------------------------- */

static void test_gradchecks(void)
{
    for (int i = 0; i < NCASES; i++) {
        const glt_case *c = &CASES[i];
        if (c->big) continue;
        xt_tensor *in[6];
        make_inputs(c, in);
        CHECK(test_gradcheck(c->name, fused, c, 6, in));
        release_n(6, in);
    }
}

/* ---- layouts ------------------------------------------------------------------------------ */

/* x read in place from a narrowed view, w from a transposed one; x transposed needs a copy.
 * All give the contiguous result, forward and backward. */
static void test_strided(void)
{
    const glt_case *c = &CASES[8];   /* the fused DExTra layer: every part */
    xt_tensor *in[6];
    make_inputs(c, in);
    xt_tensor *y = fused(in, c);

    /* x and prefix as column slices of wider tensors */
    int64_t wide[3] = {c->lead[0], c->lead[1], c->dx + 5};
    xt_tensor *xw = test_randn(3, wide, 1, 0), *pw = test_randn(3, wide, 1, 0);
    xt_tensor *xn = xt_narrow(xw, 2, 2, c->dx), *pn = xt_narrow(pw, 2, 1, c->dp);
    CHECK(xt_copy_(xn, in[0]) == XT_OK && xt_copy_(pn, in[1]) == XT_OK);
    CHECK(!xt_is_contiguous(xn));
    /* w stored as [g, co, ci] and transposed */
    int32_t perm[3] = {0, 2, 1};
    xt_tensor *wc = xt_permute(in[2], 3, perm), *wt_store = xt_contiguous(wc);
    xt_tensor *wt = xt_permute(wt_store, 3, perm);
    CHECK(!xt_is_contiguous(wt));
    xt_tensor *in2[6] = {xn, pn, wt, in[3], in[4], in[5]};
    xt_tensor *y2 = fused(in2, c);
    CHECK(test_close("strided views", y2, y, 1e-5));

    /* x as a transpose (unit row stride): copied, same values and gradients */
    int64_t n = c->lead[0] * c->lead[1];
    int64_t ts[2] = {c->dx, n}, ps[2] = {c->dp, n};
    xt_tensor *xT = test_randn(2, ts, 1, 0), *pT = test_randn(2, ps, 1, 0);
    xt_tensor *x2 = xt_transpose(xT, 0, 1), *p2 = xt_transpose(pT, 0, 1);
    xt_tensor *x2c = xt_contiguous(x2), *p2c = xt_contiguous(p2);
    xt_set_requires_grad(xT, 1);
    xt_set_requires_grad(x2c, 1);
    xt_set_requires_grad(in[2], 1);
    xt_tensor *x3 = xt_transpose(xT, 0, 1);
    xt_tensor *in3[6] = {x3, p2, in[2], in[3], in[4], in[5]};
    xt_tensor *in4[6] = {x2c, p2c, in[2], in[3], in[4], in[5]};
    xt_tensor *y3 = fused(in3, c), *y4 = fused(in4, c);
    CHECK(test_close("transposed x", y3, y4, 1e-6));
    xt_tensor *dy = xt_randn(&test_rng, y3->ndim, y3->shape);
    CHECK(xt_backward(y3, dy, 0) == XT_OK);
    xt_tensor *gw3 = xt_get_grad(in[2]), *gx3 = xt_get_grad(xT);
    xt_set_grad(in[2], NULL);
    CHECK(xt_backward(y4, dy, 0) == XT_OK);
    xt_tensor *gw4 = xt_get_grad(in[2]), *gx4 = xt_get_grad(x2c);
    xt_tensor *gx4t = gx4 ? xt_transpose(gx4, 0, 1) : NULL;
    CHECK(test_close("transposed x: dw", gw3, gw4, 1e-5));
    CHECK(test_close("transposed x: dx", gx3, gx4t, 1e-5));
    xt_set_grad(in[2], NULL);
    xt_set_requires_grad(in[2], 0);

    release_n(6, in);
    release_n(8, (xt_tensor *[]){y, xw, pw, xn, pn, wc, wt_store, wt});
    release_n(8, (xt_tensor *[]){y2, xT, pT, x2, p2, x2c, p2c, x3});
    release_n(8, (xt_tensor *[]){y3, y4, dy, gw3, gx3, gw4, gx4, gx4t});
}

/* zero rows give an empty output and zero weight gradients; without grad no node */
static void test_edges(void)
{
    int64_t xs[2] = {0, 4}, ws[3] = {2, 2, 3}, bs[2] = {2, 3};
    xt_tensor *x = xt_zeros(2, xs, XT_FLOAT32), *w = test_randn(3, ws, 1, 0);
    xt_tensor *b = test_randn(2, bs, 1, 0);
    xt_set_requires_grad(w, 1);
    xt_set_requires_grad(b, 1);
    xt_tensor *y = xt_group_linear_ex(x, NULL, w, b, 1, 1, NULL, NULL, 1e-5, 1);
    CHECK(y && y->ndim == 2 && y->shape[0] == 0 && y->shape[1] == 6);
    xt_tensor *dy = y ? xt_zeros(2, y->shape, XT_FLOAT32) : NULL;
    CHECK(y && xt_backward(y, dy, 0) == XT_OK);
    xt_tensor *gw = xt_get_grad(w), *gb = xt_get_grad(b);
    CHECK(gw && gb);
    for (int64_t i = 0; gw && i < xt_numel(gw); i++) CHECK(test_f32(gw)[i] == 0);
    for (int64_t i = 0; gb && i < xt_numel(gb); i++) CHECK(test_f32(gb)[i] == 0);
    release_n(3, (xt_tensor *[]){y, dy, gw});
    xt_tensor_release(gb);

    int64_t xs1[1] = {4};
    xt_tensor *x1 = test_randn(1, xs1, 1, 0);   /* a single row [din] */
    int32_t mode = xt_set_grad_enabled(0);
    xt_tensor *y1 = xt_group_linear(x1, w, b, 1);
    xt_set_grad_enabled(mode);
    CHECK(y1 && y1->ndim == 1 && y1->shape[0] == 6 && xt_grad_fn_name(y1) == NULL);
    release_n(5, (xt_tensor *[]){x, w, b, x1, y1});
}

/* ---- errors ----------------------------------------------------------------------------- */

static void test_errors(void)
{
    int64_t xs[2] = {3, 6}, ws[3] = {2, 3, 4}, bs[2] = {2, 4}, co = 4, bad_bs[2] = {4, 2};
    int64_t ws_bad[3] = {4, 3, 4}, w2[2] = {6, 8}, ps[2] = {3, 4}, pbad[2] = {2, 4};
    xt_tensor *x = test_randn(2, xs, 1, 0), *w = test_randn(3, ws, 1, 0);
    xt_tensor *b = test_randn(2, bs, 1, 0), *g = test_randn(1, &co, 1, 0);
    xt_tensor *bbad = test_randn(2, bad_bs, 1, 0), *wbad = test_randn(3, ws_bad, 1, 0);
    xt_tensor *wflat = test_randn(2, w2, 1, 0), *xi = xt_zeros(2, xs, XT_INT64);
    xt_tensor *p = test_randn(2, ps, 1, 0), *pb = test_randn(2, pbad, 1, 0);
    int64_t five = 5;
    xt_tensor *g5 = test_randn(1, &five, 1, 0);

    CHECK(!xt_group_linear(NULL, w, b, 0) && test_error_has("group_linear: x is NULL"));
    CHECK(!xt_group_linear(xi, w, b, 0) && test_error_has("group_linear: expected float32 x"));
    CHECK(!xt_group_linear(x, wflat, b, 0) &&
          test_error_has("w must be [groups, in/groups, out/groups]"));
    CHECK(!xt_group_linear(x, wbad, NULL, 0) && test_error_has("4 groups"));
    CHECK(!xt_group_linear(x, w, bbad, 0) && test_error_has("b has shape [4,2], expected [2,4]"));
    int64_t ws9[3] = {2, 4, 4};
    xt_tensor *w9 = test_randn(3, ws9, 1, 0);
    CHECK(!xt_group_linear(x, w9, NULL, 0) && test_error_has("expects 2 groups x 4 = 8"));
    CHECK(!xt_group_linear_ex(x, pb, w, NULL, 0, 0, NULL, NULL, 0, 0) &&
          test_error_has("must have the leading dims of x"));
    CHECK(!xt_group_linear_ex(x, p, w, NULL, 0, 0, NULL, NULL, 0, 0) &&
          test_error_has("a group reads 3 features, but the prefix (4) and x (6) give 5"));
    CHECK(!xt_group_linear_ex(x, NULL, w, b, 1, 0, g, NULL, 1e-5, 0) &&
          test_error_has("ln_weight/ln_bias given without normalize"));
    CHECK(!xt_group_linear_ex(x, NULL, w, b, 1, 1, g5, NULL, 1e-5, 0) &&
          test_error_has("ln_weight has shape [5], expected [4]"));
    CHECK(!xt_group_linear_ex(x, NULL, w, b, 1, 1, g, NULL, -1, 0) &&
          test_error_has("eps must be >= 0"));
    int64_t one = 1;
    xt_tensor *xs0 = xt_zeros(0, &one, XT_FLOAT32);
    CHECK(!xt_group_linear(xs0, w, b, 0) && test_error_has("at least 1 dim"));
    release_n(8, (xt_tensor *[]){x, w, b, g, bbad, wbad, wflat, xi});
    release_n(5, (xt_tensor *[]){p, pb, g5, w9, xs0});
}

int main(void)
{
    test_seed("test_group_linear", SEED);
    test_against_composition();
    test_shuffle_permutation();
    test_gradchecks();
    test_strided();
    test_edges();
    test_errors();
    return check_report("test_group_linear");
}
