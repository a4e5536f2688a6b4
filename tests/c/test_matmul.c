/*
 * test_matmul.c: matmul, bmm and linear. Values and gradients against naive double loops
 * for every NumPy shape rule (1-d operands, broadcast batch dims, empty dims), operands
 * with transposed, sliced, permuted and expanded strides, sizes that take each path of
 * the batched GEMM (one folded GEMM, parallel small products, accumulation into a shared
 * gradient), finite-difference gradient checks, PyTorch fixtures (tests/fixtures/index,
 * made by make_index_fixtures.py) and every error path.
 */
#include "testlib.h"

/* ---- the naive reference ------------------------------------------------------------- */

/* The NumPy view of a @ b: batch shape, m, k, n. */
typedef struct geom {
    int32_t nb;
    int64_t bshape[XT_MAX_DIMS];
    int64_t m, k, n, count;
} geom;

static void geom_of(const xt_tensor *a, const xt_tensor *b, geom *g)
{
    int32_t an = a->ndim > 2 ? a->ndim - 2 : 0, bn = b->ndim > 2 ? b->ndim - 2 : 0;
    g->nb = an > bn ? an : bn;
    g->count = 1;
    for (int32_t d = 0; d < g->nb; d++) {
        int32_t ia = d - (g->nb - an), ib = d - (g->nb - bn);
        int64_t sa = ia >= 0 ? a->shape[ia] : 1, sb = ib >= 0 ? b->shape[ib] : 1;
        g->bshape[d] = sa == 1 ? sb : sa;
        g->count *= g->bshape[d];
    }
    g->m = a->ndim == 1 ? 1 : a->shape[a->ndim - 2];
    g->k = a->shape[a->ndim - 1];
    g->n = b->ndim == 1 ? 1 : b->shape[b->ndim - 1];
}

/* Element (r, c) of operand t for flat batch index bi: its strided offset and its index
 * in C order (for gradients). left: t is the left operand (a 1-d one is a row). */
static void locate(const xt_tensor *t, const geom *g, int64_t bi, int64_t r, int64_t c, bool left,
                   int64_t *offset, int64_t *flat)
{
    int64_t idx[XT_MAX_DIMS];
    int32_t nd = t->ndim, tb = nd > 2 ? nd - 2 : 0;
    for (int32_t d = g->nb - 1; d >= 0; d--) {
        int64_t coord = bi % g->bshape[d];
        bi /= g->bshape[d];
        int32_t td = d - (g->nb - tb);
        if (td >= 0) idx[td] = t->shape[td] == 1 ? 0 : coord;
    }
    if (nd == 1) idx[0] = left ? c : r;
    else {
        idx[nd - 2] = r;
        idx[nd - 1] = c;
    }
    *offset = *flat = 0;
    for (int32_t d = 0; d < nd; d++) {
        *offset += idx[d] * t->strides[d];
        *flat = *flat * t->shape[d] + idx[d];
    }
}

/* out = a @ b in double; when dout is given, also da/db (C order of a's/b's shapes) of
 * sum(out * dout). */
static double *naive(const xt_tensor *a, const xt_tensor *b, const xt_tensor *dout, double *da,
                     double *db)
{
    geom g;
    geom_of(a, b, &g);
    double *out = calloc((size_t)(g.count * g.m * g.n + 1), sizeof(double));
    const float *pa = a->data, *pb = b->data;
    xt_tensor *dc = dout ? xt_contiguous((xt_tensor *)dout) : NULL;
    for (int64_t bi = 0; bi < g.count; bi++)
        for (int64_t i = 0; i < g.m; i++)
            for (int64_t j = 0; j < g.n; j++) {
                double s = 0, w = dc ? test_f32(dc)[(bi * g.m + i) * g.n + j] : 0;
                for (int64_t p = 0; p < g.k; p++) {
                    int64_t oa, fa, ob, fb;
                    locate(a, &g, bi, i, p, true, &oa, &fa);
                    locate(b, &g, bi, p, j, false, &ob, &fb);
                    s += (double)pa[oa] * pb[ob];
                    if (dc) {
                        da[fa] += w * pb[ob];
                        db[fb] += w * pa[oa];
                    }
                }
                out[(bi * g.m + i) * g.n + j] = s;
            }
    xt_tensor_release(dc);
    return out;
}

/* max |t - ref| / (1 + |ref|) over t's elements in C order */
static double rel_err(const xt_tensor *t, const double *ref)
{
    if (!t) return INFINITY;
    xt_tensor *c = xt_contiguous((xt_tensor *)t);
    double worst = 0;
    for (int64_t i = 0; i < xt_numel(c); i++) {
        double e = fabs(test_f32(c)[i] - ref[i]) / (1 + fabs(ref[i]));
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
    }
    xt_tensor_release(c);
    return worst;
}

/* Forward and backward of a @ b (any strides, made leaves) against the naive loops. */
static bool check_matmul(const char *what, xt_tensor *a, xt_tensor *b)
{
    xt_set_grad(a, NULL);
    xt_set_grad(b, NULL);
    xt_set_requires_grad(a, 1);
    xt_set_requires_grad(b, 1);
    xt_tensor *out = xt_matmul(a, b);
    if (!out) {
        fprintf(stderr, "%s: matmul failed: %s\n", what, xt_last_error());
        return false;
    }
    xt_tensor *dout = test_randn(out->ndim, out->shape, 1, 0);
    double *da = calloc((size_t)xt_numel(a) + 1, sizeof(double));
    double *db = calloc((size_t)xt_numel(b) + 1, sizeof(double));
    double *ref = naive(a, b, dout, da, db);
    bool ok = xt_backward(out, dout, 0) == XT_OK;
    double e_out = rel_err(out, ref), e_da = rel_err(a->grad, da), e_db = rel_err(b->grad, db);
    if (!ok || !(e_out < 1e-5 && e_da < 1e-5 && e_db < 1e-5)) {
        fprintf(stderr, "%s: errors out %g, da %g, db %g (%s)\n", what, e_out, e_da, e_db,
                xt_last_error());
        ok = false;
    }
    free(ref);
    free(da);
    free(db);
    xt_tensor_release(dout);
    xt_tensor_release(out);
    return ok;
}

static xt_tensor *randn_of(int32_t ndim, const int64_t *shape) { return test_randn(ndim, shape, 1, 0); }

/* ---- matmul values and gradients ------------------------------------------------------- */

static void test_shapes(void)
{
    struct { int32_t an, bn; int64_t as[5], bs[5]; int32_t on; int64_t os[5]; } cases[] = {
        {2, 2, {3, 4}, {4, 5}, 2, {3, 5}},
        {1, 1, {4}, {4}, 0, {0}},
        {1, 3, {4}, {2, 4, 5}, 2, {2, 5}},
        {3, 1, {2, 3, 4}, {4}, 2, {2, 3}},
        {4, 3, {2, 1, 3, 4}, {5, 4, 2}, 4, {2, 5, 3, 2}},
        {4, 2, {2, 3, 4, 5}, {5, 6}, 4, {2, 3, 4, 6}},
        {2, 3, {3, 4}, {2, 4, 5}, 3, {2, 3, 5}},
        {3, 3, {1, 3, 4}, {2, 4, 5}, 3, {2, 3, 5}},
        {1, 2, {4}, {4, 3}, 1, {3}},
        {2, 1, {3, 4}, {4}, 1, {3}},
        {5, 2, {2, 2, 2, 3, 4}, {4, 2}, 5, {2, 2, 2, 3, 2}},
        {2, 2, {0, 4}, {4, 5}, 2, {0, 5}},
        {2, 2, {3, 0}, {0, 5}, 2, {3, 5}},          /* k = 0: zeros */
        {4, 2, {2, 0, 3, 4}, {4, 5}, 4, {2, 0, 3, 5}},
        {2, 3, {3, 4}, {0, 4, 5}, 3, {0, 3, 5}},    /* empty batch: the gradient of a is 0 */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        xt_tensor *a = randn_of(cases[c].an, cases[c].as), *b = randn_of(cases[c].bn, cases[c].bs);
        char what[64];
        snprintf(what, sizeof what, "matmul case %zu", c);
        xt_tensor *out = xt_matmul(a, b);
        bool shape_ok = out && out->ndim == cases[c].on;
        for (int32_t d = 0; shape_ok && d < out->ndim; d++) shape_ok = out->shape[d] == cases[c].os[d];
        CHECK(shape_ok);
        xt_tensor_release(out);
        CHECK(check_matmul(what, a, b));
        xt_tensor_release(a);
        xt_tensor_release(b);
    }
}

/* Operands whose strides are not row-major: transposed (read by a transposed GEMM, no
 * copy), sliced, permuted batch dims, a strided vector, expanded rows and batches (those
 * are copied). The views are made leaves themselves, so their gradients are compared
 * position by position with the naive loops. */
static void test_strides(void)
{
    int64_t s43[2] = {4, 3}, s54[2] = {5, 4}, s38[2] = {3, 8}, s243[3] = {2, 4, 3};
    int64_t s345[3] = {3, 4, 5}, s14[2] = {1, 4}, s134[3] = {1, 3, 4}, s45[2] = {4, 5};
    int64_t s8 = 8;
    xt_tensor *base[] = {randn_of(2, s43), randn_of(2, s54), randn_of(2, s38), randn_of(3, s243),
                         randn_of(3, s345), randn_of(2, s14), randn_of(3, s134), randn_of(1, &s8)};
    xt_tensor *g = randn_of(2, s45);
    enum { AT, BT, WN, CT, DP, EE, FE, SV, NV };
    xt_tensor *v[NV] = {
        xt_transpose(base[0], 0, 1),                      /* [3,4], row stride 1 */
        xt_transpose(base[1], 0, 1),                      /* [4,5], row stride 1 */
        xt_narrow(base[2], 1, 2, 4),                      /* [3,4], row stride 8 */
        xt_transpose(base[3], 1, 2),                      /* [2,3,4], matrices transposed */
        xt_permute(base[4], 3, (int32_t[]){1, 0, 2}),     /* [4,3,5], batch stride 5 */
        xt_expand(base[5], 2, (int64_t[]){3, 4}),         /* [3,4], row stride 0 */
        xt_expand(base[6], 3, (int64_t[]){2, 3, 4}),      /* [2,3,4], batch stride 0 */
        xt_tensor_new_view(base[7]->storage, XT_FLOAT32, 1, (int64_t[]){4}, (int64_t[]){2}, 0),
    };
    for (int i = 0; i < NV; i++) {  /* same strides, no history: leaves */
        xt_tensor *leaf = xt_detach(v[i]);
        xt_tensor_release(v[i]);
        v[i] = leaf;
    }
    CHECK(check_matmul("transposed left", v[AT], g));
    CHECK(check_matmul("sliced left, transposed right", v[WN], v[BT]));
    CHECK(check_matmul("both transposed", v[AT], v[BT]));
    CHECK(check_matmul("transposed batch", v[CT], g));
    CHECK(check_matmul("permuted batch", v[DP], base[1]));
    CHECK(check_matmul("expanded rows", v[EE], g));
    CHECK(check_matmul("expanded batch", v[FE], g));
    CHECK(check_matmul("strided vector left", v[SV], v[BT]));
    CHECK(check_matmul("strided vector right", v[AT], v[SV]));
    CHECK(check_matmul("transposed batch, strided vector", v[CT], v[SV]));

    /* no copy of a transposed operand: the node saves the caller's storage */
    xt_tensor *out = xt_matmul(v[AT], v[BT]);
    CHECK(out && out->grad_fn && out->grad_fn->saved[0]->storage == v[AT]->storage &&
          out->grad_fn->saved[1]->storage == v[BT]->storage);
    xt_tensor_release(out);
    /* an expanded row dim cannot be read by BLAS: that operand is copied */
    out = xt_matmul(v[EE], g);
    CHECK(out && out->grad_fn && out->grad_fn->saved[0]->storage != v[EE]->storage);
    xt_tensor_release(out);

    for (int i = 0; i < NV; i++) xt_tensor_release(v[i]);
    for (int i = 0; i < 8; i++) xt_tensor_release(base[i]);
    xt_tensor_release(g);
}

/* Sizes big enough for each path of the batched GEMM. */
static void test_paths(void)
{
    struct { int32_t an, bn; int64_t as[4], bs[4]; const char *what; } cases[] = {
        {3, 2, {8, 16, 32}, {32, 24}, "batch folded into M (one GEMM), dB folded into K"},
        {3, 3, {64, 8, 8}, {64, 8, 8}, "many small products in parallel"},
        {3, 3, {6, 70, 90}, {6, 90, 80}, "larger products in order"},
        {4, 3, {3, 4, 5, 6}, {4, 6, 7}, "broadcast batch: dB accumulates over the batch"},
        {3, 3, {1, 9, 5}, {7, 5, 3}, "broadcast left batch: dA accumulates"},
        {2, 3, {30, 40}, {16, 40, 20}, "2-d left, batched right"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        xt_tensor *a = randn_of(cases[c].an, cases[c].as), *b = randn_of(cases[c].bn, cases[c].bs);
        CHECK(check_matmul(cases[c].what, a, b));
        xt_set_requires_grad(a, 0);
        xt_set_requires_grad(b, 0);
        xt_tensor_release(a);
        xt_tensor_release(b);
    }
    /* a permuted (unfoldable) left operand with a broadcast right: looped, dB shared */
    int64_t s[3] = {5, 4, 3}, sb[2] = {3, 6};
    xt_tensor *a0 = randn_of(3, s), *b = randn_of(2, sb);
    xt_set_grad_enabled(0);
    xt_tensor *ap = xt_permute(a0, 3, (int32_t[]){1, 0, 2});  /* [4,5,3], batch stride 3 */
    xt_set_grad_enabled(1);
    CHECK(check_matmul("unfoldable batch, shared dB", ap, b));
    xt_set_requires_grad(ap, 0);
    xt_set_requires_grad(b, 0);
    xt_tensor_release(ap);
    xt_tensor_release(a0);
    xt_tensor_release(b);
}

/* ---- finite differences ------------------------------------------------------------------ */

typedef struct mm_ctx {
    int kind;            /* 0 matmul, 1 bmm, 2 linear, 3 matmul with a transposed inside */
} mm_ctx;

static xt_tensor *mm_fn(xt_tensor *const *in, const void *vctx)
{
    const mm_ctx *ctx = vctx;
    switch (ctx->kind) {
    case 0: return xt_matmul(in[0], in[1]);
    case 1: return xt_bmm(in[0], in[1]);
    case 2: return xt_linear(in[0], in[1], in[2]);
    default: {
        xt_tensor *t = xt_transpose(in[0], -1, -2), *out = xt_matmul(t, in[1]);
        xt_tensor_release(t);
        return out;
    }
    }
}

static void test_gradchecks(void)
{
    struct { int kind, n; int32_t nd[3]; int64_t s[3][4]; const char *what; } cases[] = {
        {0, 2, {2, 2}, {{3, 4}, {4, 2}}, "matmul 2-d"},
        {0, 2, {1, 1}, {{5}, {5}}, "matmul dot"},
        {0, 2, {1, 3}, {{4}, {2, 4, 3}}, "matmul vec @ batch"},
        {0, 2, {3, 1}, {{2, 3, 4}, {4}}, "matmul batch @ vec"},
        {0, 2, {4, 3}, {{2, 1, 3, 4}, {3, 4, 2}}, "matmul broadcast"},
        {0, 2, {3, 2}, {{2, 3, 4}, {4, 5}}, "matmul batch @ 2-d"},
        {3, 2, {3, 3}, {{2, 4, 3}, {2, 4, 2}}, "matmul transposed left"},
        {1, 2, {3, 3}, {{2, 3, 4}, {2, 4, 2}}, "bmm"},
        {2, 3, {3, 2, 1}, {{2, 3, 4}, {5, 4}, {5}}, "linear 3-d with bias"},
        {2, 2, {1, 2}, {{4}, {3, 4}}, "linear 1-d without bias"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        xt_tensor *in[3] = {NULL, NULL, NULL};
        for (int i = 0; i < cases[c].n; i++) in[i] = randn_of(cases[c].nd[i], cases[c].s[i]);
        mm_ctx ctx = {cases[c].kind};
        CHECK(test_gradcheck(cases[c].what, mm_fn, &ctx, 3, in));
        for (int i = 0; i < 3; i++) xt_tensor_release(in[i]);
    }
}

/* ---- bmm and linear ------------------------------------------------------------------------ */

static void test_linear(void)
{
    int64_t sx[3] = {3, 5, 6}, sw[2] = {4, 6}, sb = 4;
    xt_tensor *x = randn_of(3, sx), *w = randn_of(2, sw), *b = randn_of(1, &sb);
    /* values: y[r, o] = sum_i x[r, i] w[o, i] + b[o] */
    for (int variant = 0; variant < 4; variant++) {
        xt_set_grad_enabled(0);
        /* 0 plain, 1 x with permuted leading dims (not foldable: copied), 2 w transposed
         * in memory (a transposed GEMM), 3 no bias */
        xt_tensor *xv = variant == 1 ? xt_permute(x, 3, (int32_t[]){1, 0, 2}) : xt_detach(x);
        xt_tensor *wt = xt_transpose(w, 0, 1), *wtc = xt_contiguous(wt);
        xt_tensor *wv = variant == 2 ? xt_transpose(wtc, 0, 1) : xt_detach(w);
        xt_tensor *bv = variant == 3 ? NULL : b;
        xt_set_grad_enabled(1);
        xt_set_requires_grad(xv, 1);
        xt_set_requires_grad(wv, 1);
        if (bv) xt_set_requires_grad(bv, 1);
        xt_tensor *y = xt_linear(xv, wv, bv);
        CHECK(y && y->ndim == 3 && y->shape[2] == 4);
        if (!y) continue;
        xt_tensor *dy = test_randn(3, y->shape, 1, 0);
        CHECK(xt_backward(y, dy, 0) == XT_OK);
        int64_t R = xt_numel(xv) / 6;
        xt_set_grad_enabled(0);
        xt_tensor *xc = xt_contiguous(xv), *dyc = xt_contiguous(dy), *wc = xt_contiguous(wv);
        xt_tensor *yc = xt_contiguous(y), *gx = xt_contiguous(xv->grad), *gw = xt_contiguous(wv->grad);
        xt_set_grad_enabled(1);
        const float *px = xc->data, *pw = wc->data, *pb = b->data, *pdy = dyc->data;
        double worst = 0;
        for (int64_t r = 0; r < R; r++)
            for (int64_t o = 0; o < 4; o++) {
                double s = bv ? pb[o] : 0;
                for (int64_t i = 0; i < 6; i++) s += (double)px[r * 6 + i] * pw[o * 6 + i];
                worst = fmax(worst, fabs(test_f32(yc)[r * 4 + o] - s));
            }
        for (int64_t r = 0; r < R; r++)
            for (int64_t i = 0; i < 6; i++) {
                double s = 0;
                for (int64_t o = 0; o < 4; o++) s += (double)pdy[r * 4 + o] * pw[o * 6 + i];
                worst = fmax(worst, fabs(test_f32(gx)[r * 6 + i] - s));
            }
        for (int64_t o = 0; o < 4; o++) {
            double sb_ = 0;
            for (int64_t i = 0; i < 6; i++) {
                double s = 0;
                for (int64_t r = 0; r < R; r++) s += (double)pdy[r * 4 + o] * px[r * 6 + i];
                worst = fmax(worst, fabs(test_f32(gw)[o * 6 + i] - s));
            }
            for (int64_t r = 0; r < R; r++) sb_ += pdy[r * 4 + o];
            if (bv) worst = fmax(worst, fabs(test_f32(b->grad)[o] - sb_));
        }
        if (worst > 1e-4) fprintf(stderr, "linear variant %d: max error %g\n", variant, worst);
        CHECK(worst <= 1e-4);
        xt_tensor *tmp[] = {xc, dyc, wc, yc, gx, gw, dy, y, xv, wv, wt, wtc};
        for (int i = 0; i < 12; i++) xt_tensor_release(tmp[i]);
        xt_set_grad(b, NULL);
        xt_set_requires_grad(b, 0);
    }
    /* a wide batch: dw is one GEMM over 4096 rows, db sums in double */
    int64_t sbig[3] = {16, 256, 64}, swb[2] = {32, 64}, sbb = 32;
    xt_tensor *xb = randn_of(3, sbig), *wb = randn_of(2, swb), *bb = randn_of(1, &sbb);
    xt_set_requires_grad(wb, 1);
    xt_set_requires_grad(bb, 1);
    xt_tensor *yb = xt_linear(xb, wb, bb);
    int64_t ones_shape[3] = {16, 256, 32};
    xt_tensor *ones = xt_full(3, ones_shape, XT_FLOAT32, 1.0);
    CHECK(yb && xt_backward(yb, ones, 0) == XT_OK);
    double worst = 0;
    for (int64_t o = 0; o < 32 && bb->grad; o++) worst = fmax(worst, fabs(test_f32(bb->grad)[o] - 4096));
    for (int64_t i = 0; i < 64 && wb->grad; i++) {  /* dw[o, i] = sum_r x[r, i], any o */
        double s = 0;
        for (int64_t r = 0; r < 4096; r++) s += test_f32(xb)[r * 64 + i];
        worst = fmax(worst, fabs(test_f32(wb->grad)[5 * 64 + i] - s) / (1 + fabs(s)));
    }
    CHECK(wb->grad && bb->grad && worst < 1e-4);
    xt_tensor *tmp[] = {xb, wb, bb, yb, ones, x, w, b};
    for (int i = 0; i < 8; i++) xt_tensor_release(tmp[i]);
}

/* ---- PyTorch fixtures ------------------------------------------------------------------------ */

static void test_fixtures(void)
{
    const char *cases[] = {"matmul_mm", "matmul_dot", "matmul_vec_mat", "matmul_mat_vec",
                           "matmul_bcast", "matmul_batch_2d", "matmul_2d_batch", "bmm",
                           "linear_bias", "linear_nobias", "linear_2d"};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *name = cases[c];
        bool linear = strncmp(name, "linear", 6) == 0, bias = strcmp(name, "linear_nobias") != 0;
        int n = linear && bias ? 3 : 2;
        xt_tensor *in[3] = {NULL, NULL, NULL};
        char part[16];
        for (int i = 0; i < n; i++) {
            snprintf(part, sizeof part, "in%d", i + 1);
            in[i] = test_fixture("index", name, part);
            if (in[i]) xt_set_requires_grad(in[i], 1);
        }
        xt_tensor *want = test_fixture("index", name, "out"), *dout = test_fixture("index", name, "dout");
        xt_tensor *out = linear ? xt_linear(in[0], in[1], in[2])
                                : name[0] == 'b' ? xt_bmm(in[0], in[1]) : xt_matmul(in[0], in[1]);
        CHECK(out && want && xt_same_shape(out, want) && test_close(name, out, want, 1e-5));
        CHECK(out && xt_backward(out, dout, 0) == XT_OK);
        for (int i = 0; i < n; i++) {
            snprintf(part, sizeof part, "grad%d", i + 1);
            xt_tensor *g = test_fixture("index", name, part);
            CHECK(in[i] && in[i]->grad && g && xt_same_shape(in[i]->grad, g) &&
                  test_close(name, in[i]->grad, g, 1e-5));
            xt_tensor_release(g);
        }
        for (int i = 0; i < 3; i++) xt_tensor_release(in[i]);
        xt_tensor_release(want);
        xt_tensor_release(dout);
        xt_tensor_release(out);
    }
}

/* ---- errors ------------------------------------------------------------------------------------ */

static void test_errors(void)
{
    int64_t s23[2] = {2, 3}, s45[2] = {4, 5}, s3 = 3, s234[3] = {2, 3, 4}, s345[3] = {3, 4, 5};
    int64_t s35[2] = {3, 5};
    xt_tensor *a = randn_of(2, s23), *b = randn_of(2, s45), *v = randn_of(1, &s3);
    xt_tensor *c = randn_of(3, s234), *d = randn_of(3, s345), *e = randn_of(2, s35);
    xt_tensor *i64 = xt_zeros(2, s23, XT_INT64), *scalar = xt_full(0, NULL, XT_FLOAT32, 1);

    CHECK(!xt_matmul(a, b) && xt_last_status() == XT_ERR_SHAPE &&
          test_error_has("matmul: shapes [2,3] and [4,5] cannot be multiplied (3 != 4)"));
    CHECK(!xt_matmul(i64, e) && xt_last_status() == XT_ERR_DTYPE &&
          test_error_has("matmul: expected float32 left operand, got int64"));
    CHECK(!xt_matmul(e, i64) && test_error_has("matmul: expected float32 right operand, got int64"));
    CHECK(!xt_matmul(scalar, v) && test_error_has("matmul: both operands need at least 1 dim"));
    CHECK(!xt_matmul(NULL, v) && test_error_has("matmul: left operand is NULL"));
    int64_t s2_34[3] = {2, 3, 4}, s3_45[3] = {3, 4, 5};
    xt_tensor *p = randn_of(3, s2_34), *q = randn_of(3, s3_45);
    CHECK(!xt_matmul(p, q) &&
          test_error_has("matmul: batch dims of shapes [2,3,4] and [3,4,5] cannot broadcast"));
    CHECK(!xt_bmm(a, e) && test_error_has("bmm: expected [B,n,k] and [B,k,m], got [2,3] and [3,5]"));
    CHECK(!xt_bmm(c, d) && test_error_has("bmm: expected [B,n,k] and [B,k,m], got [2,3,4] and [3,4,5]"));
    CHECK(!xt_bmm(i64, d) && test_error_has("bmm: expected float32 left operand, got int64"));

    CHECK(!xt_linear(c, b, NULL) && xt_last_status() == XT_ERR_SHAPE &&
          test_error_has("linear: input of shape [2,3,4] does not end in the weight's "
                         "in-features 5 (weight [4,5])"));
    CHECK(!xt_linear(c, v, NULL) && test_error_has("linear: weight must be [out,in], got shape [3]"));
    CHECK(!xt_linear(scalar, a, NULL) && test_error_has("linear: input of shape []"));
    int64_t s4 = 4;
    xt_tensor *b4 = randn_of(1, &s4);
    CHECK(!xt_linear(e, a, b4) && test_error_has("linear: input of shape [3,5] does not end"));
    CHECK(!xt_linear(e, b, v) && test_error_has("linear: bias has shape [3], expected [4]"));
    CHECK(!xt_linear(i64, e, NULL) && test_error_has("linear: expected float32 input, got int64"));
    CHECK(!xt_linear(a, e, i64) && test_error_has("linear: expected float32 bias, got int64"));
    CHECK(!xt_linear(a, NULL, NULL) && test_error_has("linear: weight is NULL"));

    xt_tensor *all[] = {a, b, v, c, d, e, i64, scalar, p, q, b4};
    for (int i = 0; i < 11; i++) xt_tensor_release(all[i]);
}

int main(void)
{
    test_seed("test_matmul", 20240703);
    test_shapes();
    test_strides();
    test_paths();
    test_gradchecks();
    test_linear();
    test_fixtures();
    test_errors();
    return check_report("test_matmul");
}
