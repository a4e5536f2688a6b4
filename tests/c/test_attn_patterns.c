/*
 * test_attn_patterns.c: the block-sparse attention ops (local_attention, sparse_attention,
 * global_local_attention; core/ops/attn_patterns.c on sdpa.c's tiled kernel) against a dense
 * masked reference written here in double (scores = scale * q k^T, -inf where the pattern
 * hides the key, softmax, times v; and its analytic backward), for values and all three
 * gradients; finite-difference gradient checks; T not a multiple of the 64-row tile;
 * causality (changing later positions leaves earlier rows bit-identical); agreement with
 * the dense op where a pattern covers everything; and the error paths.
 *
 * The masks below are written from research/efficient_attention.md § 2.2-2.4, not from the
 * library's rule, so that a wrong tile classification or element rule shows up.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "internal.h"
#include "ops/attn_patterns.h"
#include "testlib.h"

typedef enum { LOCAL, STRIDED, FIXED, GLOBAL } kind;

typedef struct pattern {
    kind kind;
    int causal;
    int64_t before, after;        /* LOCAL, GLOBAL */
    int64_t stride, summary;      /* STRIDED, FIXED */
    const int64_t *globals;       /* GLOBAL: 0-based indices */
    int64_t n_globals;
    int64_t rand_blocks, block;   /* GLOBAL: BigBird random blocks */
    uint64_t seed;
} pattern;

/* BigBird's draw as xt.h documents it: query block a sees `count` distinct key blocks, a
 * partial Fisher-Yates shuffle of 0..n-1 with swap t <-> t + r % (n - t), r the first 64
 * bits of philox(seed, a * n + t). */
static bool random_pair(const pattern *p, int64_t T, int64_t a, int64_t b)
{
    int64_t n = (T + p->block - 1) / p->block;
    int64_t *perm = malloc(sizeof(int64_t) * (size_t)n);
    for (int64_t x = 0; x < n; x++) perm[x] = x;
    bool hit = false;
    for (int64_t t = 0; t < p->rand_blocks && t < n; t++) {
        uint32_t r[4];
        xt_philox(p->seed, (uint64_t)(a * n + t), r);
        int64_t pick = t + (int64_t)((((uint64_t)r[0] << 32) | r[1]) % (uint64_t)(n - t));
        int64_t tmp = perm[t];
        perm[t] = perm[pick];
        perm[pick] = tmp;
        hit = hit || perm[t] == b;
    }
    free(perm);
    return hit;
}

/* Does query i see key j? */
static bool sees(const pattern *p, int64_t T, int64_t i, int64_t j)
{
    if (p->causal && j > i) return false;
    switch (p->kind) {
    case LOCAL: return j >= i - p->before && j <= i + p->after;
    case STRIDED: {
        int64_t dist = i > j ? i - j : j - i;   /* the band, or the same phase mod stride */
        return dist <= p->stride || dist % p->stride == 0;
    }
    case FIXED:
        return i / p->stride == j / p->stride || j % p->stride >= p->stride - p->summary;
    case GLOBAL:
        if (j >= i - p->before && j <= i + p->after) return true;
        for (int64_t g = 0; g < p->n_globals; g++)
            if (p->globals[g] == i || p->globals[g] == j) return true;
        return p->rand_blocks > 0 && random_pair(p, T, i / p->block, j / p->block);
    }
    return false;
}

static xt_tensor *run(const pattern *p, xt_tensor *q, xt_tensor *k, xt_tensor *v, double scale)
{
    switch (p->kind) {
    case LOCAL: return xt_local_attention(q, k, v, p->before, p->after, p->causal, scale);
    case STRIDED:
        return xt_sparse_attention(q, k, v, XT_SPARSE_STRIDED, p->stride, 0, p->causal, scale);
    case FIXED:
        return xt_sparse_attention(q, k, v, XT_SPARSE_FIXED, p->stride, p->summary, p->causal,
                                   scale);
    case GLOBAL: {
        xt_tensor *g = NULL;
        if (p->n_globals > 0) {   /* passed 1-based, to exercise base */
            int64_t *one = malloc(sizeof(int64_t) * (size_t)p->n_globals);
            for (int64_t x = 0; x < p->n_globals; x++) one[x] = p->globals[x] + 1;
            g = xt_from_data(1, &p->n_globals, XT_INT64, one);
            free(one);
        }
        xt_tensor *out = xt_global_local_attention(q, k, v, p->before, p->after, g, 1,
                                                   p->rand_blocks, p->block, p->seed,
                                                   p->causal, scale);
        xt_tensor_release(g);
        return out;
    }
    }
    return NULL;
}

/* ---- the dense masked reference, in double ------------------------------------------------ */

/* q [units,T,d], k [units,T,d], v [units,T,dv], dout [units,T,dv] -> out, dq, dk, dv.
 * A row that sees no key gives 0 and no gradient. */
static void reference(const pattern *p, int64_t units, int64_t T, int64_t d, int64_t dv,
                      double scale, const float *q, const float *k, const float *v,
                      const float *dout, double *out, double *dq, double *dk, double *dvv)
{
    double *P = malloc(sizeof(double) * (size_t)(T * T)), *dP = malloc(sizeof(double) * (size_t)T);
    bool *mask = malloc(sizeof(bool) * (size_t)(T * T));
    for (int64_t i = 0; i < T; i++)
        for (int64_t j = 0; j < T; j++) mask[i * T + j] = sees(p, T, i, j);
    memset(dq, 0, sizeof(double) * (size_t)(units * T * d));
    memset(dk, 0, sizeof(double) * (size_t)(units * T * d));
    memset(dvv, 0, sizeof(double) * (size_t)(units * T * dv));
    for (int64_t n = 0; n < units; n++) {
        const float *Q = q + n * T * d, *K = k + n * T * d, *V = v + n * T * dv;
        const float *dO = dout + n * T * dv;
        double *O = out + n * T * dv, *dQ = dq + n * T * d, *dK = dk + n * T * d;
        double *dV = dvv + n * T * dv;
        for (int64_t i = 0; i < T; i++) {
            double *Pi = P + i * T, mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j < T; j++) {
                double s = 0;
                for (int64_t c = 0; c < d; c++) s += (double)Q[i * d + c] * K[j * d + c];
                Pi[j] = mask[i * T + j] ? scale * s : -INFINITY;
                if (Pi[j] > mx) mx = Pi[j];
            }
            for (int64_t j = 0; j < T; j++) {
                Pi[j] = mx == -INFINITY ? 0 : exp(Pi[j] - mx);
                sum += Pi[j];
            }
            for (int64_t j = 0; j < T; j++) Pi[j] = sum > 0 ? Pi[j] / sum : 0;
            for (int64_t c = 0; c < dv; c++) {
                double o = 0;
                for (int64_t j = 0; j < T; j++) o += Pi[j] * V[j * dv + c];
                O[i * dv + c] = o;
            }
        }
        for (int64_t i = 0; i < T; i++) {
            double *Pi = P + i * T, rowdot = 0;
            for (int64_t j = 0; j < T; j++) {
                double s = 0;
                for (int64_t c = 0; c < dv; c++) s += (double)dO[i * dv + c] * V[j * dv + c];
                dP[j] = s;
                rowdot += Pi[j] * s;
            }
            for (int64_t j = 0; j < T; j++) {
                double ds = scale * Pi[j] * (dP[j] - rowdot);
                for (int64_t c = 0; c < d; c++) {
                    dQ[i * d + c] += ds * K[j * d + c];
                    dK[j * d + c] += ds * Q[i * d + c];
                }
                for (int64_t c = 0; c < dv; c++) dV[j * dv + c] += Pi[j] * dO[i * dv + c];
            }
        }
    }
    free(P);
    free(dP);
    free(mask);
}

/* max |a - b| <= tol * max(1, max |b|) (NaN fails). */
static bool close_to(const char *what, const xt_tensor *a, const double *b, int64_t n, double tol)
{
    if (!a || xt_numel(a) != n) {
        fprintf(stderr, "%s: missing or wrong size\n", what);
        return false;
    }
    double worst = 0, big = 1;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)test_f32(a)[i] - b[i]);
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
        if (fabs(b[i]) > big) big = fabs(b[i]);
    }
    if (worst <= tol * big) return true;
    fprintf(stderr, "%s: differs from the dense masked reference by %g (max |ref| %g)\n", what,
            worst, big);
    return false;
}

static void check_case(const char *what, const pattern *p, int64_t B, int64_t H, int64_t T,
                       int64_t d, int64_t dv, double scale_arg)
{
    int64_t qs[4] = {B, H, T, d}, vs[4] = {B, H, T, dv};
    xt_tensor *q = test_randn(4, qs, 1, 0), *k = test_randn(4, qs, 1, 0);
    xt_tensor *v = test_randn(4, vs, 1, 0), *dout = test_randn(4, vs, 1, 0);
    xt_set_requires_grad(q, 1);
    xt_set_requires_grad(k, 1);
    xt_set_requires_grad(v, 1);
    xt_tensor *out = run(p, q, k, v, scale_arg);
    CHECK(out != NULL);
    if (!out) fprintf(stderr, "%s: %s\n", what, xt_last_error());
    CHECK(out && xt_backward(out, dout, 0) == XT_OK);
    int64_t units = B * H;
    double scale = scale_arg > 0 ? scale_arg : 1 / sqrt((double)d);
    double *ro = malloc(sizeof(double) * (size_t)(units * T * dv));
    double *rq = malloc(sizeof(double) * (size_t)(units * T * d));
    double *rk = malloc(sizeof(double) * (size_t)(units * T * d));
    double *rv = malloc(sizeof(double) * (size_t)(units * T * dv));
    reference(p, units, T, d, dv, scale, q->data, k->data, v->data, dout->data, ro, rq, rk, rv);
    char name[160];
    const double tol = 3e-5;
    snprintf(name, sizeof name, "%s: out", what);
    CHECK(close_to(name, out, ro, units * T * dv, tol));
    snprintf(name, sizeof name, "%s: dq", what);
    CHECK(close_to(name, q->grad, rq, units * T * d, tol));
    snprintf(name, sizeof name, "%s: dk", what);
    CHECK(close_to(name, k->grad, rk, units * T * d, tol));
    snprintf(name, sizeof name, "%s: dv", what);
    CHECK(close_to(name, v->grad, rv, units * T * dv, tol));
    free(ro);
    free(rq);
    free(rk);
    free(rv);
    xt_tensor *ts[5] = {q, k, v, dout, out};
    for (int i = 0; i < 5; i++) xt_tensor_release(ts[i]);
}

static const int64_t globals_a[] = {0, 77, 150};
static const int64_t globals_b[] = {5};

static void test_reference(void)
{
    /* sliding windows: inside one tile, across tile edges, wider than a tile; T = 200 and
     * 130 are not multiples of the 64-row tile */
    check_case("local 3/3", &(pattern){LOCAL, 0, 3, 3}, 2, 2, 130, 8, 8, 0);
    check_case("local causal 16", &(pattern){LOCAL, 1, 16, 0}, 1, 3, 200, 8, 6, 0);
    check_case("local 70/5", &(pattern){LOCAL, 0, 70, 5}, 1, 2, 200, 16, 16, 0.3);
    check_case("local causal 100 (after ignored)", &(pattern){LOCAL, 1, 100, 9}, 1, 1, 257, 8, 8, 0);
    check_case("local 0/0 (itself only)", &(pattern){LOCAL, 0, 0, 0}, 1, 2, 70, 4, 4, 0);
    check_case("local short sequence", &(pattern){LOCAL, 0, 2, 1}, 2, 1, 5, 4, 3, 0);
    /* Sparse Transformer, strided and fixed, causal and not */
    check_case("strided 16", &(pattern){STRIDED, 0, .stride = 16}, 1, 2, 200, 8, 8, 0);
    check_case("strided causal 11", &(pattern){STRIDED, 1, .stride = 11}, 2, 1, 150, 8, 8, 0);
    check_case("strided causal 128", &(pattern){STRIDED, 1, .stride = 128}, 1, 1, 300, 8, 8, 0);
    check_case("fixed 32/8", &(pattern){FIXED, 0, .stride = 32, .summary = 8}, 1, 2, 200, 8, 8, 0);
    check_case("fixed causal 20/3", &(pattern){FIXED, 1, .stride = 20, .summary = 3}, 2, 1, 150,
               8, 8, 0);
    check_case("fixed causal 100/0", &(pattern){FIXED, 1, .stride = 100, .summary = 0}, 1, 1, 230,
               8, 8, 0);
    check_case("fixed 128/32", &(pattern){FIXED, 0, .stride = 128, .summary = 32}, 1, 1, 300, 8,
               8, 0);
    /* Longformer: window + global tokens; BigBird: + random blocks */
    check_case("global 4/4 + 3 globals",
               &(pattern){GLOBAL, 0, 4, 4, .globals = globals_a, .n_globals = 3}, 1, 2, 200, 8,
               8, 0);
    check_case("global causal 10 + 1 global",
               &(pattern){GLOBAL, 1, 10, 0, .globals = globals_b, .n_globals = 1}, 2, 1, 130, 8,
               8, 0);
    check_case("global no globals = local", &(pattern){GLOBAL, 0, 7, 2}, 1, 1, 100, 8, 8, 0);
    check_case("bigbird 16/16 + globals + 2 random blocks of 16",
               &(pattern){GLOBAL, 0, 16, 16, .globals = globals_a, .n_globals = 3,
                          .rand_blocks = 2, .block = 16, .seed = 99},
               1, 2, 200, 8, 8, 0);
    check_case("bigbird 3 random blocks of 64, T 300",
               &(pattern){GLOBAL, 0, 32, 32, .rand_blocks = 3, .block = 64, .seed = 7}, 1, 1,
               300, 8, 8, 0);
}

/* ---- finite differences ---------------------------------------------------------------- */

typedef struct fd_ctx {
    const pattern *p;
    double scale;
} fd_ctx;

static xt_tensor *pattern_fn(xt_tensor *const *in, const void *ctx)
{
    const fd_ctx *c = ctx;
    return run(c->p, in[0], in[1], in[2], c->scale);
}

static void gradcheck_case(const char *what, const pattern *p, int64_t T, int64_t d)
{
    int64_t sh[4] = {1, 2, T, d};
    xt_tensor *in[3] = {test_randn(4, sh, 1, 0), test_randn(4, sh, 1, 0), test_randn(4, sh, 1, 0)};
    fd_ctx ctx = {p, 0};
    CHECK(test_gradcheck(what, pattern_fn, &ctx, 3, in));
    for (int i = 0; i < 3; i++) xt_tensor_release(in[i]);
}

static void test_gradcheck_all(void)
{
    gradcheck_case("gradcheck local 5/2, T 70", &(pattern){LOCAL, 0, 5, 2}, 70, 4);
    gradcheck_case("gradcheck local causal 9, T 70", &(pattern){LOCAL, 1, 9, 0}, 70, 4);
    gradcheck_case("gradcheck strided 6", &(pattern){STRIDED, 0, .stride = 6}, 67, 3);
    gradcheck_case("gradcheck strided causal 5", &(pattern){STRIDED, 1, .stride = 5}, 70, 3);
    gradcheck_case("gradcheck fixed 8/2", &(pattern){FIXED, 0, .stride = 8, .summary = 2}, 67, 3);
    gradcheck_case("gradcheck fixed causal 10/3",
                   &(pattern){FIXED, 1, .stride = 10, .summary = 3}, 70, 3);
    gradcheck_case("gradcheck global 3/3 + globals",
                   &(pattern){GLOBAL, 0, 3, 3, .globals = globals_b, .n_globals = 1}, 66, 3);
    gradcheck_case("gradcheck bigbird random blocks",
                   &(pattern){GLOBAL, 0, 2, 2, .rand_blocks = 1, .block = 8, .seed = 3}, 70, 3);
}

/* ---- causality: later positions never reach earlier rows ---------------------------------- */

static void causality_case(const char *what, const pattern *p)
{
    int64_t T = 150, t = 77, sh[4] = {1, 2, T, 8};
    xt_tensor *q = test_randn(4, sh, 1, 0), *k = test_randn(4, sh, 1, 0);
    xt_tensor *v = test_randn(4, sh, 1, 0);
    xt_tensor *before = run(p, q, k, v, 0);
    float *pq = q->data, *pk = k->data, *pv = v->data;
    for (int64_t n = 0; n < 2; n++)
        for (int64_t i = t + 1; i < T; i++)
            for (int64_t c = 0; c < 8; c++) {
                pq[(n * T + i) * 8 + c] += 3.0f;
                pk[(n * T + i) * 8 + c] *= -5.0f;
                pv[(n * T + i) * 8 + c] += 100.0f;
            }
    xt_tensor *after = run(p, q, k, v, 0);
    CHECK(before && after);
    if (before && after) {
        const float *a = before->data, *b = after->data;
        int64_t same = 0, total = 0, later_changed = 0;
        for (int64_t n = 0; n < 2; n++)
            for (int64_t i = 0; i < T; i++)
                for (int64_t c = 0; c < 8; c++) {
                    int64_t at = (n * T + i) * 8 + c;
                    if (i <= t) {
                        same += a[at] == b[at];
                        total++;
                    } else {
                        later_changed += a[at] != b[at];
                    }
                }
        if (same != total) fprintf(stderr, "%s: an earlier row changed\n", what);
        CHECK(same == total);
        CHECK(later_changed > 0);
    }
    xt_tensor *ts[5] = {q, k, v, before, after};
    for (int i = 0; i < 5; i++) xt_tensor_release(ts[i]);
}

static void test_causality(void)
{
    causality_case("causal local", &(pattern){LOCAL, 1, 20, 0});
    causality_case("causal strided", &(pattern){STRIDED, 1, .stride = 12});
    causality_case("causal fixed", &(pattern){FIXED, 1, .stride = 16, .summary = 4});
    causality_case("causal global", &(pattern){GLOBAL, 1, 5, 0, .globals = globals_b,
                                               .n_globals = 1});
}

/* ---- a pattern covering everything is the dense op, bit for bit in the forward ---------- */

static void test_dense_agreement(void)
{
    int64_t T = 140, sh[4] = {2, 2, T, 16};
    xt_tensor *q = test_randn(4, sh, 1, 0), *k = test_randn(4, sh, 1, 0);
    xt_tensor *v = test_randn(4, sh, 1, 0);
    xt_tensor *dense = xt_scaled_dot_product_attention(q, k, v, 0, 0);
    xt_tensor *causal = xt_scaled_dot_product_attention(q, k, v, 1, 0);
    xt_tensor *wide = xt_local_attention(q, k, v, T, T, 0, 0);
    xt_tensor *wide_causal = xt_local_attention(q, k, v, T, 0, 1, 0);
    CHECK(dense && causal && wide && wide_causal);
    CHECK(test_max_diff(dense, wide) == 0);
    CHECK(test_max_diff(causal, wide_causal) < 1e-6);
    xt_tensor *ts[7] = {q, k, v, dense, causal, wide, wide_causal};
    for (int i = 0; i < 7; i++) xt_tensor_release(ts[i]);
}

/* ---- errors ------------------------------------------------------------------------------- */

static void test_errors(void)
{
    int64_t s4[4] = {2, 3, 5, 8}, k4[4] = {2, 3, 7, 8}, i1 = 2;
    xt_tensor *q = xt_zeros(4, s4, XT_FLOAT32), *k = xt_zeros(4, k4, XT_FLOAT32);
    xt_tensor *qq = xt_zeros(4, s4, XT_FLOAT32);
    CHECK(!xt_local_attention(q, k, k, 2, 2, 0, 0) && test_error_has("local_attention") &&
          test_error_has("S == T"));
    CHECK(!xt_local_attention(NULL, q, q, 2, 2, 0, 0) && test_error_has("q is NULL"));
    CHECK(!xt_local_attention(q, q, q, -1, 2, 0, 0) && test_error_has("before >= 0"));
    CHECK(!xt_sparse_attention(q, q, q, 7, 4, 0, 0, 0) && test_error_has("unknown pattern"));
    CHECK(!xt_sparse_attention(q, q, q, XT_SPARSE_STRIDED, 0, 0, 0, 0) &&
          test_error_has("sparse_attention: stride must be >= 1"));
    CHECK(!xt_sparse_attention(q, q, q, XT_SPARSE_FIXED, 4, 5, 0, 0) &&
          test_error_has("0 <= summary <= stride"));
    CHECK(!xt_sparse_attention(q, qq, q, XT_SPARSE_FIXED, 4, 1, 0, NAN) &&
          test_error_has("scale must be finite"));
    int64_t bad[2] = {1, 6};
    xt_tensor *g = xt_from_data(1, &i1, XT_INT64, bad);
    CHECK(!xt_global_local_attention(q, q, q, 1, 1, g, 1, 0, 0, 0, 0, 0) &&
          test_error_has("global_local_attention: global token index 6 out of range") &&
          test_error_has("1 .. 5"));
    xt_tensor *gf = xt_zeros(1, &i1, XT_FLOAT32);
    CHECK(!xt_global_local_attention(q, q, q, 1, 1, gf, 0, 0, 0, 0, 0, 0) &&
          test_error_has("int64 global token indices"));
    CHECK(!xt_global_local_attention(q, q, q, 1, 1, NULL, 0, 2, 0, 0, 0, 0) &&
          test_error_has("block >= 1"));
    xt_tensor *ok = xt_global_local_attention(q, q, q, 1, 1, NULL, 0, 0, 0, 0, 0, 0);
    CHECK(ok && ok->shape[2] == 5);
    xt_tensor *ts[6] = {q, k, qq, g, gf, ok};
    for (int i = 0; i < 6; i++) xt_tensor_release(ts[i]);
}

/* The kernel's tile mask (attn_mask_tile, divisions hoisted out of the tile) against the
 * library's own element rule attn_allowed, on tiles at odd offsets and wider than one column
 * chunk, for every kind, causal and not. */
static void test_tile_mask(void)
{
    enum { T = 300 };
    uint8_t is_global[T], rand_pair[25 * 25];
    int64_t global_before[T + 1] = {0};
    for (int64_t t = 0; t < T; t++) {
        is_global[t] = t % 37 == 5;
        global_before[t + 1] = global_before[t] + is_global[t];
    }
    for (int64_t x = 0; x < 25 * 25; x++) rand_pair[x] = (x * 7919) % 5 == 0;
    attn_pattern pats[] = {
        {.kind = ATTN_LOCAL, .T = T, .left = 17, .right = 5},
        {.kind = ATTN_STRIDED, .T = T, .stride = 13},
        {.kind = ATTN_FIXED, .T = T, .stride = 24, .summary = 3},
        {.kind = ATTN_FIXED, .T = T, .stride = 7, .summary = 0},
        {.kind = ATTN_GLOBAL_LOCAL, .T = T, .left = 9, .right = 9, .is_global = is_global,
         .global_before = global_before},
        {.kind = ATTN_GLOBAL_LOCAL, .T = T, .left = 12, .right = 0, .is_global = is_global,
         .global_before = global_before, .block = 12, .blocks = 25, .rand_pair = rand_pair},
    };
    const int64_t tiles[][4] = {{0, 64, 0, 64}, {37, 50, 3, 130}, {200, 64, 150, 100},
                                {250, 50, 0, 300}, {1, 1, 290, 10}};
    static float s[64 * 300];
    for (size_t k = 0; k < sizeof pats / sizeof *pats; k++)
        for (int causal = 0; causal < 2; causal++) {
            attn_pattern p = pats[k];
            p.causal = causal;
            for (size_t t = 0; t < sizeof tiles / sizeof *tiles; t++) {
                int64_t i0 = tiles[t][0], br = tiles[t][1], j0 = tiles[t][2], bc = tiles[t][3];
                for (int64_t x = 0; x < br * bc; x++) s[x] = 1.0f;
                attn_mask_tile(&p, i0, br, j0, bc, s, bc);
                int64_t wrong = 0;
                for (int64_t r = 0; r < br; r++)
                    for (int64_t c = 0; c < bc; c++)
                        wrong += attn_allowed(&p, i0 + r, j0 + c) != (s[r * bc + c] == 1.0f);
                if (wrong)
                    fprintf(stderr, "tile mask, pattern %zu causal %d tile %zu: %lld wrong\n", k,
                            causal, t, (long long)wrong);
                CHECK(wrong == 0);
            }
        }
}

int main(void)
{
    test_seed("test_attn_patterns", 20261123);
    test_reference();
    test_gradcheck_all();
    test_causality();
    test_dense_agreement();
    test_errors();
    test_tile_mask();
    return check_report("test_attn_patterns");
}
