/*
 * test_attn_linear.c: linear attention (xt_linear_attention) and the FAVOR+ feature map
 * (xt_favor_features) against dense compositions written here in double precision
 * (phi(Q) phi(K)^T masked and normalised, with its textbook backward; the feature map
 * row by row), finite-difference gradient checks (causal and not, chunk sizes that do not
 * divide T, identity features, every shift mode), PyTorch fixtures (tests/fixtures/
 * attn_linear, make_attn_linear_fixtures.py), causality, shifts that cancel, strided views
 * read in place, identical bits for any thread count (both schedules), a long sequence whose
 * normaliser grows with T, peak memory at T = 16384, autograd bookkeeping and every error.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "internal.h"
#include "testlib.h"

/* ---- the dense composition, in double ------------------------------------------------ */

typedef struct lin_case {
    int64_t B, H, T, S, m, dv;
    int32_t causal;
    int64_t chunk;
    int32_t fmap;
    double eps;
} lin_case;

static double phi_of(double x, int32_t fmap)
{
    return fmap == XT_FEATURE_ELU1 ? (x > 0 ? x + 1 : exp(x)) : x;
}
static double dphi_of(double x, int32_t fmap)
{
    return fmap == XT_FEATURE_ELU1 ? (x > 0 ? 1 : exp(x)) : 1;
}

/* Contiguous q [units,T,m], k [units,S,m], v [units,S,dv] -> out [units,T,dv]; with dout
 * also dq, dk, dv (any may be NULL). A_ij = phi(q_i).phi(k_j) (0 for j > i when causal),
 * den_i = sum_j A_ij + eps, out_i = sum_j A_ij v_j / den_i. Backward through the dense A:
 * dA_ij = dout_i.v_j / den_i - dout_i.out_i / den_i. */
static void reference(const lin_case *c, const float *q, const float *k, const float *v,
                      const float *dout, double *out, double *dq, double *dk, double *dv)
{
    int64_t units = c->B * c->H, T = c->T, S = c->S, m = c->m, e = c->dv;
    double *A = malloc(sizeof(double) * (size_t)(T * S)), *den = malloc(sizeof(double) * (size_t)T);
    double *o = malloc(sizeof(double) * (size_t)(T * e));
    if (dq) memset(dq, 0, sizeof(double) * (size_t)(units * T * m));
    if (dk) memset(dk, 0, sizeof(double) * (size_t)(units * S * m));
    if (dv) memset(dv, 0, sizeof(double) * (size_t)(units * S * e));
    for (int64_t n = 0; n < units; n++) {
        const float *qn = q + n * T * m, *kn = k + n * S * m, *vn = v + n * S * e;
        for (int64_t i = 0; i < T; i++) {
            den[i] = c->eps;
            for (int64_t j = 0; j < S; j++) {
                double a = 0;
                if (!c->causal || j <= i)
                    for (int64_t r = 0; r < m; r++)
                        a += phi_of(qn[i * m + r], c->fmap) * phi_of(kn[j * m + r], c->fmap);
                A[i * S + j] = a;
                den[i] += a;
            }
            for (int64_t x = 0; x < e; x++) {
                double s = 0;
                for (int64_t j = 0; j < S; j++) s += A[i * S + j] * vn[j * e + x];
                o[i * e + x] = s / den[i];
                if (out) out[(n * T + i) * e + x] = o[i * e + x];
            }
        }
        if (!dout) continue;
        const float *gn = dout + n * T * e;
        for (int64_t i = 0; i < T; i++) {
            double go = 0;
            for (int64_t x = 0; x < e; x++) go += gn[i * e + x] * o[i * e + x];
            for (int64_t j = 0; j < S; j++) {
                if (c->causal && j > i) continue;
                double gv = 0;
                for (int64_t x = 0; x < e; x++) gv += gn[i * e + x] * vn[j * e + x];
                double dA = (gv - go) / den[i];
                for (int64_t r = 0; r < m; r++) {
                    double fq = phi_of(qn[i * m + r], c->fmap), fk = phi_of(kn[j * m + r], c->fmap);
                    if (dq) dq[(n * T + i) * m + r] += dA * fk * dphi_of(qn[i * m + r], c->fmap);
                    if (dk) dk[(n * S + j) * m + r] += dA * fq * dphi_of(kn[j * m + r], c->fmap);
                }
                if (dv)
                    for (int64_t x = 0; x < e; x++)
                        dv[(n * S + j) * e + x] += A[i * S + j] * gn[i * e + x] / den[i];
            }
        }
    }
    free(A);
    free(den);
    free(o);
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
    fprintf(stderr, "%s: differs from the dense composition by %g (max |ref| %g, tol %g)\n",
            what, worst, big, tol);
    return false;
}

/* Inputs of a case: N(0,1), or positive features e^(N(0, 0.25)) for the identity map. */
static xt_tensor *input_of(const lin_case *c, int64_t len, int64_t width, bool feature)
{
    int64_t sh[4] = {c->B, c->H, len, width};
    xt_tensor *t = test_randn(4, sh, feature && c->fmap == XT_FEATURE_IDENTITY ? 0.5 : 1, 0);
    if (feature && c->fmap == XT_FEATURE_IDENTITY) {
        float *p = t->data;
        for (int64_t i = 0; i < xt_numel(t); i++) p[i] = expf(p[i]);
    }
    return t;
}

static void check_case(const char *what, lin_case c)
{
    xt_tensor *q = input_of(&c, c.T, c.m, true), *k = input_of(&c, c.S, c.m, true);
    xt_tensor *v = input_of(&c, c.S, c.dv, false);
    int64_t osh[4] = {c.B, c.H, c.T, c.dv};
    xt_tensor *dout = test_randn(4, osh, 1, 0);
    xt_set_requires_grad(q, 1);
    xt_set_requires_grad(k, 1);
    xt_set_requires_grad(v, 1);
    xt_tensor *out = xt_linear_attention(q, k, v, c.causal, c.chunk, c.fmap, c.eps);
    CHECK(out && out->ndim == 4 && out->shape[2] == c.T && out->shape[3] == c.dv);
    CHECK(out && xt_backward(out, dout, 0) == XT_OK);
    int64_t no = c.B * c.H * c.T * c.dv;
    double *ro = malloc(sizeof(double) * (size_t)no);
    double *rq = malloc(sizeof(double) * (size_t)xt_numel(q));
    double *rk = malloc(sizeof(double) * (size_t)xt_numel(k));
    double *rv = malloc(sizeof(double) * (size_t)xt_numel(v));
    reference(&c, q->data, k->data, v->data, dout->data, ro, rq, rk, rv);
    char name[200];
    snprintf(name, sizeof name, "%s: out", what);
    CHECK(close_to(name, out, ro, no, 2e-5));
    snprintf(name, sizeof name, "%s: dq", what);
    CHECK(close_to(name, q->grad, rq, xt_numel(q), 5e-5));
    snprintf(name, sizeof name, "%s: dk", what);
    CHECK(close_to(name, k->grad, rk, xt_numel(k), 5e-5));
    snprintf(name, sizeof name, "%s: dv", what);
    CHECK(close_to(name, v->grad, rv, xt_numel(v), 5e-5));
    free(ro);
    free(rq);
    free(rk);
    free(rv);
    xt_tensor *ts[5] = {q, k, v, dout, out};
    for (int i = 0; i < 5; i++) xt_tensor_release(ts[i]);
}

static void test_reference(void)
{
    const int32_t E = XT_FEATURE_ELU1, I = XT_FEATURE_IDENTITY;
    check_case("causal 37, chunk 8 (ragged)", (lin_case){2, 3, 37, 37, 8, 8, 1, 8, E, 1e-6});
    check_case("causal 130, default chunk", (lin_case){1, 2, 130, 130, 16, 16, 1, 0, E, 1e-6});
    check_case("causal 64, chunk 64 (one)", (lin_case){1, 1, 64, 64, 8, 12, 1, 64, E, 1e-6});
    check_case("causal 20, chunk 1", (lin_case){2, 1, 20, 20, 4, 3, 1, 1, E, 1e-6});
    check_case("causal 20, chunk 100 > T", (lin_case){1, 2, 20, 20, 4, 3, 1, 100, E, 1e-6});
    check_case("causal single position", (lin_case){3, 1, 1, 1, 5, 2, 1, 0, E, 1e-6});
    check_case("full 33", (lin_case){2, 2, 33, 33, 8, 8, 0, 0, E, 1e-6});
    check_case("full 50x90 chunk 16, dv 5", (lin_case){1, 3, 50, 90, 6, 5, 0, 16, E, 1e-6});
    check_case("full 1 query, 70 keys", (lin_case){2, 1, 1, 70, 8, 8, 0, 0, E, 0});
    check_case("causal identity 45, chunk 7", (lin_case){1, 2, 45, 45, 16, 8, 1, 7, I, 0});
    check_case("full identity 30x41", (lin_case){2, 1, 30, 41, 12, 6, 0, 0, I, 1e-3});
    /* one unit, long enough that the chunks are spread over threads */
    check_case("causal 300, one unit, chunk 32", (lin_case){1, 1, 300, 300, 16, 16, 1, 32, E, 1e-6});
    check_case("full 280x300, one unit", (lin_case){1, 1, 280, 300, 16, 16, 0, 32, E, 1e-6});
    check_case("causal eps 0.5", (lin_case){1, 1, 25, 25, 4, 4, 1, 6, E, 0.5});
}

/* ---- finite differences ------------------------------------------------------------------ */

typedef struct fd_ctx {
    int32_t causal, fmap;
    int64_t chunk;
    double eps;
} fd_ctx;

static xt_tensor *lin_fn(xt_tensor *const *in, const void *ctx)
{
    const fd_ctx *c = ctx;
    return xt_linear_attention(in[0], in[1], in[2], c->causal, c->chunk, c->fmap, c->eps);
}

static void gradcheck_case(const char *what, lin_case c)
{
    xt_tensor *in[3] = {input_of(&c, c.T, c.m, true), input_of(&c, c.S, c.m, true),
                        input_of(&c, c.S, c.dv, false)};
    fd_ctx ctx = {c.causal, c.fmap, c.chunk, c.eps};
    CHECK(test_gradcheck(what, lin_fn, &ctx, 3, in));
    for (int i = 0; i < 3; i++) xt_tensor_release(in[i]);
}

static void test_gradcheck_all(void)
{
    const int32_t E = XT_FEATURE_ELU1, I = XT_FEATURE_IDENTITY;
    gradcheck_case("gradcheck causal 13, chunk 5", (lin_case){1, 2, 13, 13, 4, 3, 1, 5, E, 1e-6});
    gradcheck_case("gradcheck causal 9, chunk 4", (lin_case){2, 1, 9, 9, 3, 4, 1, 4, E, 1e-6});
    gradcheck_case("gradcheck full 9x11", (lin_case){1, 2, 9, 11, 4, 3, 0, 4, E, 1e-6});
    gradcheck_case("gradcheck causal identity 10, chunk 3",
                   (lin_case){1, 2, 10, 10, 5, 3, 1, 3, I, 0});
    gradcheck_case("gradcheck full identity 7x8", (lin_case){2, 1, 7, 8, 5, 2, 0, 0, I, 1e-3});
}

/* ---- FAVOR+ features --------------------------------------------------------------------- */

/* phi [units*T, m] in double, with the shift of the mode. */
static void favor_reference(const float *x, const float *w, int64_t units, int64_t T, int64_t d,
                            int64_t m, int32_t shift, double eps, double *phi)
{
    double xs = pow((double)d, -0.25);
    for (int64_t i = 0; i < units * T; i++) {
        double sq = 0;
        for (int64_t c = 0; c < d; c++) sq += (xs * x[i * d + c]) * (xs * x[i * d + c]);
        for (int64_t r = 0; r < m; r++) {
            double dot = 0;
            for (int64_t c = 0; c < d; c++) dot += xs * x[i * d + c] * w[r * d + c];
            phi[i * m + r] = dot - sq / 2;
        }
    }
    for (int64_t n = 0; n < units; n++) {
        double unit_max = -INFINITY;
        for (int64_t e = 0; e < T * m; e++) unit_max = fmax(unit_max, phi[n * T * m + e]);
        for (int64_t t = 0; t < T; t++) {
            double *p = phi + (n * T + t) * m, row_max = -INFINITY;
            for (int64_t r = 0; r < m; r++) row_max = fmax(row_max, p[r]);
            double s = shift == XT_FAVOR_SHIFT_ROW ? row_max
                     : shift == XT_FAVOR_SHIFT_UNIT ? unit_max : 0;
            for (int64_t r = 0; r < m; r++) p[r] = (exp(p[r] - s) + eps) / sqrt((double)m);
        }
    }
}

typedef struct favor_ctx {
    int32_t shift;
    double eps;
} favor_ctx;

static xt_tensor *favor_fn(xt_tensor *const *in, const void *ctx)
{
    const favor_ctx *c = ctx;
    return xt_favor_features(in[0], in[1], c->shift, c->eps);
}

static void test_favor(void)
{
    const int32_t shifts[3] = {XT_FAVOR_SHIFT_ROW, XT_FAVOR_SHIFT_UNIT, XT_FAVOR_SHIFT_NONE};
    for (int s = 0; s < 3; s++) {
        /* values against the reference */
        int64_t xsh[4] = {2, 3, 11, 8}, wsh[2] = {20, 8};
        xt_tensor *x = test_randn(4, xsh, 0.8, 0), *w = test_randn(2, wsh, 1, 0);
        xt_tensor *phi = xt_favor_features(x, w, shifts[s], 1e-6);
        double *ref = malloc(sizeof(double) * 2 * 3 * 11 * 20);
        favor_reference(x->data, w->data, 6, 11, 8, 20, shifts[s], 1e-6, ref);
        char name[100];
        snprintf(name, sizeof name, "favor features, shift %d", shifts[s]);
        CHECK(phi && phi->ndim == 4 && phi->shape[3] == 20);
        CHECK(close_to(name, phi, ref, 2 * 3 * 11 * 20, 1e-5));
        free(ref);
        /* gradients to x and w, the shift included */
        int64_t gsh[3] = {2, 5, 4}, gw[2] = {7, 4};
        xt_tensor *in[2] = {test_randn(3, gsh, 0.8, 0), test_randn(2, gw, 1, 0)};
        favor_ctx ctx = {shifts[s], 1e-6};
        snprintf(name, sizeof name, "gradcheck favor features, shift %d", shifts[s]);
        CHECK(test_gradcheck(name, favor_fn, &ctx, 2, in));
        xt_tensor *ts[5] = {x, w, phi, in[0], in[1]};
        for (int i = 0; i < 5; i++) xt_tensor_release(ts[i]);
    }
    /* the shifts cancel in the attention: with eps = 0, queries shifted per row or not and
     * keys shifted per unit or not give the same output; the largest feature of a query row
     * shifted per row is m^(-1/2) exactly */
    int64_t qsh[4] = {1, 2, 40, 8}, wsh[2] = {32, 8}, vsh[4] = {1, 2, 40, 6};
    xt_tensor *q = test_randn(4, qsh, 1.5, 0), *k = test_randn(4, qsh, 1.5, 0);
    xt_tensor *v = test_randn(4, vsh, 1, 0), *w = test_randn(2, wsh, 1, 0);
    const int32_t q_shift[3] = {XT_FAVOR_SHIFT_NONE, XT_FAVOR_SHIFT_ROW, XT_FAVOR_SHIFT_ROW};
    const int32_t k_shift[3] = {XT_FAVOR_SHIFT_NONE, XT_FAVOR_SHIFT_UNIT, XT_FAVOR_SHIFT_NONE};
    for (int causal = 0; causal <= 1; causal++) {
        xt_tensor *outs[3] = {0};
        for (int s = 0; s < 3; s++) {
            xt_tensor *fq = xt_favor_features(q, w, q_shift[s], 0);
            xt_tensor *fk = xt_favor_features(k, w, k_shift[s], 0);
            outs[s] = xt_linear_attention(fq, fk, v, causal, 16, XT_FEATURE_IDENTITY, 0);
            if (q_shift[s] == XT_FAVOR_SHIFT_ROW && fq) {
                const float *p = fq->data;
                bool exact = true;
                for (int64_t i = 0; i < 80; i++) {
                    float mx = 0;
                    for (int64_t r = 0; r < 32; r++) mx = fmaxf(mx, p[i * 32 + r]);
                    exact = exact && mx == (float)(1 / sqrt(32.0));
                }
                CHECK(exact);
            }
            xt_tensor_release(fq);
            xt_tensor_release(fk);
        }
        CHECK(test_close("favor: row and unit shifts vs none", outs[1], outs[0], 1e-5));
        CHECK(test_close("favor: row shift vs none", outs[2], outs[0], 1e-5));
        for (int s = 0; s < 3; s++) xt_tensor_release(outs[s]);
    }
    xt_tensor *ts[4] = {q, k, v, w};
    for (int i = 0; i < 4; i++) xt_tensor_release(ts[i]);
}

/* ---- PyTorch fixtures ----------------------------------------------------------------------- */

static void fixture_case(const char *name)
{
    const char *D = "attn_linear";
    xt_tensor *q = test_fixture(D, name, "q"), *k = test_fixture(D, name, "k");
    xt_tensor *v = test_fixture(D, name, "v"), *args = test_fixture(D, name, "args");
    xt_tensor *dout = test_fixture(D, name, "dout"), *want = test_fixture(D, name, "out");
    xt_tensor *dq = test_fixture(D, name, "dq"), *dk = test_fixture(D, name, "dk");
    xt_tensor *dv = test_fixture(D, name, "dv");
    xt_tensor *all[9] = {q, k, v, args, dout, want, dq, dk, dv};
    bool loaded = true;
    for (int i = 0; i < 9; i++) loaded = loaded && all[i];
    CHECK(loaded);
    if (loaded) {
        const float *a = args->data;
        xt_set_requires_grad(q, 1);
        xt_set_requires_grad(k, 1);
        xt_set_requires_grad(v, 1);
        xt_tensor *out = xt_linear_attention(q, k, v, a[0] != 0, (int64_t)a[1], (int32_t)a[2],
                                             a[3]);
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

static void favor_fixture_case(const char *name)
{
    const char *D = "attn_linear";
    char full[64];
    snprintf(full, sizeof full, "favor_%s", name);
    xt_tensor *x = test_fixture(D, full, "x"), *w = test_fixture(D, full, "w");
    xt_tensor *args = test_fixture(D, full, "args"), *want = test_fixture(D, full, "out");
    xt_tensor *dout = test_fixture(D, full, "dout"), *dx = test_fixture(D, full, "dx");
    xt_tensor *dw = test_fixture(D, full, "dw");
    xt_tensor *all[7] = {x, w, args, want, dout, dx, dw};
    bool loaded = true;
    for (int i = 0; i < 7; i++) loaded = loaded && all[i];
    CHECK(loaded);
    if (loaded) {
        const float *a = args->data;
        xt_set_requires_grad(x, 1);
        xt_set_requires_grad(w, 1);
        xt_tensor *out = xt_favor_features(x, w, (int32_t)a[0], a[1]);
        CHECK(out && xt_backward(out, dout, 0) == XT_OK);
        char what[128];
        snprintf(what, sizeof what, "fixture %s: out", full);
        CHECK(test_close(what, out, want, 1e-5));
        snprintf(what, sizeof what, "fixture %s: dx", full);
        CHECK(test_close(what, x->grad, dx, 1e-4));
        snprintf(what, sizeof what, "fixture %s: dw", full);
        CHECK(test_close(what, w->grad, dw, 1e-4));
        xt_tensor_release(out);
    }
    for (int i = 0; i < 7; i++) xt_tensor_release(all[i]);
}

static void test_fixtures(void)
{
    const char *cases[] = {"causal_elu", "causal_elu_ragged", "causal_default_chunk", "full_elu",
                           "full_elu_t_ne_s", "causal_identity", "full_identity"};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) fixture_case(cases[i]);
    const char *favor[] = {"row", "unit", "none"};
    for (size_t i = 0; i < 3; i++) favor_fixture_case(favor[i]);
}

/* ---- causality: later positions cannot change earlier rows, bit for bit --------------------- */

static void test_causality(void)
{
    lin_case c = {2, 2, 150, 150, 8, 8, 1, 16, XT_FEATURE_ELU1, 1e-6};
    xt_tensor *q = input_of(&c, c.T, c.m, true), *k = input_of(&c, c.S, c.m, true);
    xt_tensor *v = input_of(&c, c.S, c.dv, false);
    xt_tensor *before = xt_linear_attention(q, k, v, 1, 16, XT_FEATURE_ELU1, 1e-6);
    int64_t t = 77;   /* rows <= t must keep their bits; everything after t changes */
    float *pq = q->data, *pk = k->data, *pv = v->data;
    for (int64_t n = 0; n < c.B * c.H; n++)
        for (int64_t i = t + 1; i < c.T; i++) {
            for (int64_t r = 0; r < c.m; r++) {
                pq[(n * c.T + i) * c.m + r] += 3.0f;
                pk[(n * c.T + i) * c.m + r] *= -5.0f;
            }
            for (int64_t r = 0; r < c.dv; r++) pv[(n * c.T + i) * c.dv + r] += 100.0f;
        }
    xt_tensor *after = xt_linear_attention(q, k, v, 1, 16, XT_FEATURE_ELU1, 1e-6);
    CHECK(before && after);
    if (before && after) {
        const float *a = before->data, *b = after->data;
        int64_t same = 0, total = 0, later_changed = 0;
        for (int64_t n = 0; n < c.B * c.H; n++)
            for (int64_t i = 0; i < c.T; i++)
                for (int64_t r = 0; r < c.dv; r++) {
                    int64_t at = (n * c.T + i) * c.dv + r;
                    if (i <= t) {
                        same += a[at] == b[at];
                        total++;
                    } else {
                        later_changed += a[at] != b[at];
                    }
                }
        CHECK(same == total);
        CHECK(later_changed > 0);
    }
    xt_tensor *ts[5] = {q, k, v, before, after};
    for (int i = 0; i < 5; i++) xt_tensor_release(ts[i]);
}

/* ---- strided inputs: heads permuted out of [B,T,H,d] are read in place ------------------------ */

static void test_strided(void)
{
    for (int causal = 0; causal <= 1; causal++) {
        int64_t sh[4] = {2, 45, 3, 8};
        int32_t perm[4] = {0, 2, 1, 3};
        xt_tensor *leaf[3], *viewed[3], *copy[3];
        for (int i = 0; i < 3; i++) {
            leaf[i] = test_randn(4, sh, 1, 0);
            xt_set_requires_grad(leaf[i], 1);
            viewed[i] = xt_permute(leaf[i], 4, perm);
            int32_t mode = xt_set_grad_enabled(0);
            copy[i] = xt_clone(viewed[i]);
            xt_set_grad_enabled(mode);
            xt_set_requires_grad(copy[i], 1);
        }
        CHECK(!xt_is_contiguous(viewed[0]));
        int64_t live = xt_live_bytes();
        xt_tensor *a = xt_linear_attention(viewed[0], viewed[1], viewed[2], causal, 8,
                                           XT_FEATURE_ELU1, 1e-6);
        /* kept: out [2,3,45,8] and den [2,3,45], no copies of the inputs */
        int64_t kept = xt_live_bytes() - live;
        CHECK(a && kept <= 4 * (2 * 3 * 45 * 9) + 1024);
        xt_tensor *b = xt_linear_attention(copy[0], copy[1], copy[2], causal, 8, XT_FEATURE_ELU1,
                                           1e-6);
        xt_tensor *dout = a ? test_randn(a->ndim, a->shape, 1, 0) : NULL;
        CHECK(a && b && xt_backward(a, dout, 0) == XT_OK && xt_backward(b, dout, 0) == XT_OK);
        CHECK(test_close("strided: out", a, b, 1e-6));
        for (int i = 0; i < 3; i++) {
            /* the leaf's gradient, seen through the permutation, is the copy's gradient */
            xt_tensor *g = leaf[i]->grad ? xt_permute(leaf[i]->grad, 4, perm) : NULL;
            CHECK(test_close("strided: gradient", g, copy[i]->grad, 1e-6));
            xt_tensor_release(g);
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
}

/* ---- the same bits for any thread count (units over threads, or chunks over threads) --------- */

static void run_threads(int32_t threads, const lin_case *c, xt_tensor **in, xt_tensor *dout,
                        xt_tensor **res)
{
    xt_set_num_threads(threads);
    for (int i = 0; i < 3; i++) xt_set_requires_grad(in[i], 1);
    res[0] = xt_linear_attention(in[0], in[1], in[2], c->causal, c->chunk, c->fmap, c->eps);
    CHECK(res[0] && xt_backward(res[0], dout, 0) == XT_OK);
    for (int i = 0; i < 3; i++) {
        res[1 + i] = xt_get_grad(in[i]);
        xt_set_grad(in[i], NULL);
    }
}

static void test_thread_independence(void)
{
    int32_t saved = xt_get_num_threads();
    const lin_case cases[3] = {{1, 1, 300, 300, 16, 16, 1, 32, XT_FEATURE_ELU1, 1e-6},
                               {1, 2, 200, 260, 16, 8, 0, 32, XT_FEATURE_ELU1, 1e-6},
                               {1, 4, 150, 150, 8, 8, 1, 16, XT_FEATURE_ELU1, 1e-6}};
    for (int k = 0; k < 3; k++) {
        const lin_case *c = &cases[k];
        xt_tensor *in[3] = {input_of(c, c->T, c->m, true), input_of(c, c->S, c->m, true),
                            input_of(c, c->S, c->dv, false)};
        int64_t osh[4] = {c->B, c->H, c->T, c->dv};
        xt_tensor *dout = test_randn(4, osh, 1, 0);
        xt_tensor *one[4] = {0}, *two[4] = {0}, *three[4] = {0};
        run_threads(1, c, in, dout, one);
        run_threads(2, c, in, dout, two);
        run_threads(3, c, in, dout, three);
        for (int i = 0; i < 4; i++) {
            CHECK(test_max_diff(one[i], two[i]) == 0);
            CHECK(test_max_diff(one[i], three[i]) == 0);
            xt_tensor_release(one[i]);
            xt_tensor_release(two[i]);
            xt_tensor_release(three[i]);
        }
        for (int i = 0; i < 3; i++) xt_tensor_release(in[i]);
        xt_tensor_release(dout);
    }
    xt_set_num_threads(saved);
}

/* ---- a long sequence: the normaliser grows like T and stays accurate in float32 ---------------- */

static void test_long_sequence(void)
{
    /* 20000 positions, one unit: compare a few rows at the end with the dense formula for them */
    lin_case c = {1, 1, 20000, 20000, 4, 2, 1, 0, XT_FEATURE_ELU1, 1e-6};
    xt_tensor *q = input_of(&c, c.T, c.m, true), *k = input_of(&c, c.S, c.m, true);
    xt_tensor *v = input_of(&c, c.S, c.dv, false);
    xt_tensor *out = xt_linear_attention(q, k, v, 1, 0, XT_FEATURE_ELU1, 1e-6);
    CHECK(out != NULL);
    const float *pq = q->data, *pk = k->data, *pv = v->data;
    double worst = 0;
    for (int64_t i = c.T - 5; out && i < c.T; i++) {
        double den = c.eps, num[2] = {0, 0};
        for (int64_t j = 0; j <= i; j++) {
            double a = 0;
            for (int64_t r = 0; r < c.m; r++)
                a += phi_of(pq[i * c.m + r], c.fmap) * phi_of(pk[j * c.m + r], c.fmap);
            den += a;
            for (int x = 0; x < 2; x++) num[x] += a * pv[j * 2 + x];
        }
        for (int x = 0; x < 2; x++)
            worst = fmax(worst, fabs(((float *)out->data)[i * 2 + x] - num[x] / den));
    }
    printf("long sequence: T = 20000, last rows within %.3g of the dense formula\n", worst);
    CHECK(worst < 1e-4);
    xt_tensor *ts[4] = {q, k, v, out};
    for (int i = 0; i < 4; i++) xt_tensor_release(ts[i]);
}

/* ---- autograd bookkeeping ---------------------------------------------------------------------- */

static void test_autograd(void)
{
    lin_case c = {1, 1, 10, 10, 4, 4, 1, 4, XT_FEATURE_ELU1, 1e-6};
    xt_tensor *q = input_of(&c, 10, 4, true), *k = input_of(&c, 10, 4, true);
    xt_tensor *v = input_of(&c, 10, 4, false);
    xt_tensor *out = xt_linear_attention(q, k, v, 1, 4, XT_FEATURE_ELU1, 1e-6);
    CHECK(out && xt_is_leaf(out) && !out->requires_grad);
    xt_tensor_release(out);

    /* only v needs grad: q and k get none; with dout = 1 and eps = 0 the weights of each
     * row sum to 1, so dv sums to T per column */
    xt_set_requires_grad(v, 1);
    out = xt_linear_attention(q, k, v, 1, 4, XT_FEATURE_ELU1, 0);
    CHECK(out && xt_grad_fn_name(out) && strcmp(xt_grad_fn_name(out), "linear_attention") == 0);
    xt_tensor *dout = xt_full(out->ndim, out->shape, XT_FLOAT32, 1.0);
    CHECK(xt_backward(out, dout, 0) == XT_OK);
    CHECK(v->grad && !q->grad && !k->grad);
    double total = 0;
    for (int64_t i = 0; v->grad && i < xt_numel(v->grad); i++) total += ((float *)v->grad->data)[i];
    CHECK_NEAR(total, 10.0 * 4, 1e-3);
    xt_tensor_release(out);

    /* only q needs grad */
    xt_set_requires_grad(v, 0);
    xt_set_requires_grad(q, 1);
    out = xt_linear_attention(q, k, v, 0, 4, XT_FEATURE_ELU1, 1e-6);
    CHECK(out && xt_backward(out, dout, 0) == XT_OK && q->grad && !k->grad);
    xt_tensor_release(out);

    /* modifying a saved input in place before the backward is caught */
    out = xt_linear_attention(q, k, v, 0, 4, XT_FEATURE_ELU1, 1e-6);
    CHECK(xt_binary_scalar_(XT_MUL, k, 2.0) == XT_OK);
    CHECK(xt_backward(out, dout, 0) != XT_OK);
    xt_tensor *ts[5] = {q, k, v, out, dout};
    for (int i = 0; i < 5; i++) xt_tensor_release(ts[i]);
}

/* ---- memory: fwd+bwd at T = 16384 never holds a T x T buffer ------------------------------------ */

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
    FILE *f = fopen("/proc/self/clear_refs", "w");
    bool can_reset = f && fputs("5", f) >= 0;
    if (f) can_reset = (fclose(f) == 0) && can_reset;
    for (int causal = 0; causal <= 1; causal++) {
        lin_case c = {1, 1, 16384, 16384, 32, 32, causal, 0, XT_FEATURE_ELU1, 1e-6};
        xt_tensor *q = input_of(&c, c.T, c.m, true), *k = input_of(&c, c.S, c.m, true);
        xt_tensor *v = input_of(&c, c.S, c.dv, false);
        int64_t osh[4] = {1, 1, c.T, c.dv};
        xt_tensor *dout = test_randn(4, osh, 1, 0);
        xt_set_requires_grad(q, 1);
        xt_set_requires_grad(k, 1);
        xt_set_requires_grad(v, 1);
        xt_empty_cache();   /* so that what fwd+bwd allocates shows in the peak */
        if (can_reset) {
            f = fopen("/proc/self/clear_refs", "w");
            if (f) {
                fputs("5", f);
                fclose(f);
            }
        }
        long base = can_reset ? peak_rss_kib() : -1;
        xt_tensor *out = xt_linear_attention(q, k, v, causal, 0, XT_FEATURE_ELU1, 1e-6);
        CHECK(out && xt_backward(out, dout, 0) == XT_OK);
        long peak = peak_rss_kib();
        /* a T x T float matrix would be 1 GiB; inputs are 2 MiB each, out and the three
         * gradients 8 MiB together, plus chunk buffers */
        if (base > 0 && peak > 0) {
            printf("memory: causal %d, T = 16384, m = dv = 32: peak RSS grew by %ld KiB in "
                   "fwd+bwd\n", causal, peak - base);
            CHECK(peak - base < 24 * 1024);
        } else {
            printf("memory: peak RSS cannot be reset here; check skipped\n");
        }
        xt_tensor *ts[5] = {q, k, v, dout, out};
        for (int i = 0; i < 5; i++) xt_tensor_release(ts[i]);
    }
}

/* ---- errors ----------------------------------------------------------------------------------- */

static void test_errors(void)
{
    int64_t s4[4] = {1, 2, 5, 4}, s4k[4] = {1, 2, 6, 4}, s4b[4] = {1, 3, 5, 4}, s4w[4] = {1, 2, 5, 3};
    int64_t s3[3] = {2, 5, 4}, s1[1] = {4}, s4e[4] = {1, 2, 0, 4}, s4z[4] = {1, 2, 5, 0};
    xt_tensor *q = xt_zeros(4, s4, XT_FLOAT32), *k6 = xt_zeros(4, s4k, XT_FLOAT32);
    xt_tensor *b3 = xt_zeros(4, s4b, XT_FLOAT32), *w3 = xt_zeros(4, s4w, XT_FLOAT32);
    xt_tensor *q3 = xt_zeros(3, s3, XT_FLOAT32), *one = xt_zeros(1, s1, XT_FLOAT32);
    xt_tensor *qi = xt_zeros(4, s4, XT_INT64), *empty = xt_zeros(4, s4e, XT_FLOAT32);
    xt_tensor *zero_width = xt_zeros(4, s4z, XT_FLOAT32);
    const int32_t E = XT_FEATURE_ELU1;

    CHECK(!xt_linear_attention(NULL, q, q, 0, 0, E, 1e-6) && test_error_has("linear_attention: q is NULL"));
    CHECK(!xt_linear_attention(qi, q, q, 0, 0, E, 1e-6) && test_error_has("expected float32 q, got int64"));
    CHECK(!xt_linear_attention(q3, q, q, 0, 0, E, 1e-6) && test_error_has("same number of dims"));
    CHECK(!xt_linear_attention(one, one, one, 0, 0, E, 1e-6) && test_error_has("q [...,T,m]"));
    CHECK(!xt_linear_attention(q, b3, b3, 0, 0, E, 1e-6) && test_error_has("same leading dims"));
    CHECK(!xt_linear_attention(q, w3, q, 0, 0, E, 1e-6) && test_error_has("same last dim"));
    CHECK(!xt_linear_attention(q, q, k6, 0, 0, E, 1e-6) && test_error_has("same length S"));
    CHECK(!xt_linear_attention(q, k6, k6, 1, 0, E, 1e-6) && test_error_has("S == T"));
    CHECK(!xt_linear_attention(q, empty, empty, 0, 0, E, 1e-6) && test_error_has("no keys"));
    CHECK(!xt_linear_attention(q, q, zero_width, 0, 0, E, 1e-6) && test_error_has("feature dims must be > 0"));
    CHECK(!xt_linear_attention(q, q, q, 0, -3, E, 1e-6) && test_error_has("chunk must be >= 1"));
    CHECK(!xt_linear_attention(q, q, q, 0, 0, 7, 1e-6) && test_error_has("feature_map must be"));
    CHECK(!xt_linear_attention(q, q, q, 0, 0, E, -1) && test_error_has("eps must be finite and >= 0"));
    CHECK(!xt_linear_attention(q, q, q, 0, 0, E, NAN) && test_error_has("eps must be"));
    /* no queries is fine: an empty output */
    xt_tensor *e = xt_linear_attention(empty, q, q, 0, 0, E, 1e-6);
    CHECK(e && xt_numel(e) == 0);
    xt_tensor_release(e);

    int64_t ws[2] = {6, 4}, wbad[2] = {6, 3}, w0[2] = {0, 4};
    xt_tensor *w = xt_zeros(2, ws, XT_FLOAT32), *wb = xt_zeros(2, wbad, XT_FLOAT32);
    xt_tensor *wz = xt_zeros(2, w0, XT_FLOAT32);
    CHECK(!xt_favor_features(NULL, w, 0, 1e-6) && test_error_has("favor_features: x is NULL"));
    CHECK(!xt_favor_features(q, NULL, 0, 1e-6) && test_error_has("favor_features: w is NULL"));
    CHECK(!xt_favor_features(qi, w, 0, 1e-6) && test_error_has("expected float32 x and w"));
    CHECK(!xt_favor_features(one, w, 0, 1e-6) && test_error_has("expected x [...,T,d] and w [m,d]"));
    CHECK(!xt_favor_features(q, one, 0, 1e-6) && test_error_has("expected x [...,T,d] and w [m,d]"));
    CHECK(!xt_favor_features(q, wb, 0, 1e-6) && test_error_has("d = the last dim of x"));
    CHECK(!xt_favor_features(q, wz, 0, 1e-6) && test_error_has("m >= 1"));
    CHECK(!xt_favor_features(q, w, 3, 1e-6) && test_error_has("shift must be"));
    CHECK(!xt_favor_features(q, w, 0, INFINITY) && test_error_has("eps must be finite"));
    xt_tensor *ts[13] = {q, k6, b3, w3, q3, one, qi, empty, zero_width, w, wb, wz, NULL};
    for (int i = 0; i < 13; i++) xt_tensor_release(ts[i]);
}

int main(void)
{
    test_seed("test_attn_linear", 20240611);
    test_reference();
    test_gradcheck_all();
    test_favor();
    test_fixtures();
    test_causality();
    test_strided();
    test_thread_independence();
    test_long_sequence();
    test_autograd();
    test_memory();
    test_errors();
    return check_report("test_attn_linear");
}
