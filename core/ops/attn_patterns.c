/*
 * attn_patterns.c: block-sparse attention (research/efficient_attention.md § 2.2–2.4) as
 * patterns for the tiled kernel of sdpa.c: each op here only builds an attn_pattern (the
 * element rule and its tile classifier, attn_patterns.h); the kernel visits the listed tiles.
 *
 * Tile classification works on the difference d = i - j: over a rectangle of queries
 * [i0, i1) x keys [j0, j1) it takes every integer value in [i0 - j1 + 1, i1 - 1 - j0], so a
 * rule on d alone (a band, a stride) is classified exactly from that interval.
 */
#include "attn_patterns.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void attn_pattern_free(void *pattern)
{
    attn_pattern *p = pattern;
    if (!p) return;
    free(p->is_global);
    free(p->global_before);
    free(p->rand_pair);
    free(p);
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Floor division for a positive divisor. */
static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/* A band lo <= d <= hi against the rectangle's difference range [dlo, dhi]. */
static attn_tile band_tile(int64_t lo, int64_t hi, int64_t dlo, int64_t dhi)
{
    if (dhi < lo || dlo > hi) return ATTN_TILE_EMPTY;
    if (dlo >= lo && dhi <= hi) return ATTN_TILE_FULL;
    return ATTN_TILE_PARTIAL;
}

/* Does [j0, j1) hold a key j with j mod l >= l - c (a "summary" column of the fixed pattern)? */
static bool has_summary(int64_t j0, int64_t j1, int64_t l, int64_t c)
{
    if (c <= 0) return false;
    if (j1 - j0 >= l) return true;
    int64_t a = j0 % l;
    return a >= l - c || j0 + (l - c - a) < j1;
}

attn_tile attn_classify(const attn_pattern *p, int64_t i0, int64_t i1, int64_t j0, int64_t j1)
{
    int64_t dlo = i0 - (j1 - 1), dhi = (i1 - 1) - j0;
    int64_t causal_lo = p->causal ? 0 : INT64_MIN / 2;   /* the causal rule is d >= 0 */
    if (dhi < causal_lo) return ATTN_TILE_EMPTY;
    bool causal_full = dlo >= causal_lo;
    switch (p->kind) {
    case ATTN_LOCAL:
        return band_tile(max64(-p->right, causal_lo), p->left, dlo, dhi);
    case ATTN_STRIDED: {
        int64_t l = p->stride;
        attn_tile band = band_tile(max64(-l, causal_lo), l, dlo, dhi);
        if (band != ATTN_TILE_EMPTY) return band;
        int64_t lo = max64(dlo, causal_lo);   /* a multiple of l in [lo, dhi]? */
        return floor_div(dhi, l) * l >= lo ? ATTN_TILE_PARTIAL : ATTN_TILE_EMPTY;
    }
    case ATTN_FIXED: {
        int64_t l = p->stride;
        bool same_block = i0 / l <= (j1 - 1) / l && j0 / l <= (i1 - 1) / l;
        bool summary = has_summary(j0, j1, l, p->summary);
        if (!same_block && !summary) return ATTN_TILE_EMPTY;
        bool one_block = i0 / l == (i1 - 1) / l && j0 / l == (j1 - 1) / l && i0 / l == j0 / l;
        bool all_summary = j0 / l == (j1 - 1) / l && j0 % l >= l - p->summary;
        return causal_full && (one_block || all_summary) ? ATTN_TILE_FULL : ATTN_TILE_PARTIAL;
    }
    case ATTN_GLOBAL_LOCAL: {
        attn_tile band = band_tile(max64(-p->right, causal_lo), p->left, dlo, dhi);
        if (band == ATTN_TILE_FULL) return band;
        bool global = p->global_before[i1] > p->global_before[i0] ||
                      p->global_before[j1] > p->global_before[j0];
        if (global) return ATTN_TILE_PARTIAL;
        if (p->rand_pair)
            for (int64_t a = i0 / p->block; a <= (i1 - 1) / p->block; a++)
                for (int64_t b = j0 / p->block; b <= (j1 - 1) / p->block; b++)
                    if (p->rand_pair[a * p->blocks + b]) return ATTN_TILE_PARTIAL;
        return band;
    }
    }
    return ATTN_TILE_PARTIAL;
}

/* Positive remainder of a by b > 0. */
static int64_t pos_mod(int64_t a, int64_t b)
{
    int64_t m = a % b;
    return m < 0 ? m + b : m;
}

/* The element rule over a whole tile. Per element, allowed() costs several times the
 * tile's GEMM (integer divisions), so here each row is one contiguous run of keys it sees for
 * sure (its band, or its block) and, outside it, keys open to the row (a summary, global or
 * random-block key, a multiple of the stride) kept through a per-column mark (0: open,
 * -inf: hidden): vectorisable selects, divisions once per row and per column.
 * Columns go in chunks of at most MASK_CHUNK. */
enum { MASK_CHUNK = 64 };

/* row[c] = -inf where pen[c] is, for c in [0, n) outside [lo, hi] (a select, not an add:
 * an infinite score stays hidden) */
static void penalise_outside(float *row, const float *pen, int64_t n, int64_t lo, int64_t hi)
{
    int64_t a = lo < 0 ? 0 : lo > n ? n : lo, b = hi + 1 < 0 ? 0 : hi + 1 > n ? n : hi + 1;
    if (b < a) b = a;
    for (int64_t c = 0; c < a; c++) row[c] = pen[c] < 0.0f ? -INFINITY : row[c];
    for (int64_t c = b; c < n; c++) row[c] = pen[c] < 0.0f ? -INFINITY : row[c];
}

void attn_mask_tile(const attn_pattern *p, int64_t i0, int64_t br, int64_t j0, int64_t bc,
                    float *s, int64_t ld)
{
    float pen[MASK_CHUNK], all[MASK_CHUNK];
    int64_t col_block[MASK_CHUNK]; /* GLOBAL_LOCAL: the key's block of BigBird's random pairs */
    for (int64_t c = 0; c < MASK_CHUNK; c++) all[c] = -INFINITY;
    for (int64_t c0 = 0; c0 < bc; c0 += MASK_CHUNK) {
        int64_t n = bc - c0 < MASK_CHUNK ? bc - c0 : MASK_CHUNK, j = j0 + c0;
        if (p->kind == ATTN_FIXED) { /* the summary keys are open to every row */
            int64_t l = p->stride, m = j % l;
            for (int64_t c = 0; c < n; c++) {
                pen[c] = m >= l - p->summary ? 0.0f : -INFINITY;
                if (++m == l) m = 0;
            }
        } else if (p->kind == ATTN_GLOBAL_LOCAL && p->rand_pair) {
            int64_t l = p->block, blk = j / l, m = j % l;
            for (int64_t c = 0; c < n; c++) {
                col_block[c] = blk;
                if (++m == l) m = 0, blk++;
            }
        }
        const uint8_t *row_pairs = NULL; /* GLOBAL_LOCAL: pen holds the open keys of */
        bool pen_made = false;            /* the rows with these random pairs */
        for (int64_t r = 0; r < br; r++) {
            int64_t i = i0 + r;
            float *row = s + r * ld + c0;
            switch (p->kind) {
            case ATTN_LOCAL: /* -right <= i - j <= left */
                penalise_outside(row, all, n, i - p->left - j, i + p->right - j);
                break;
            case ATTN_STRIDED: { /* the band |i - j| <= l, and the multiples of l outside it */
                int64_t st = p->stride, lo = i - st - j, hi = i + st - j;
                float kept[MASK_CHUNK];
                int64_t first = pos_mod(i - j, st), nk = 0; /* first column with i - j = 0 mod l */
                for (int64_t c = first; c < n; c += st) kept[nk++] = row[c];
                penalise_outside(row, all, n, lo, hi);
                nk = 0;
                for (int64_t c = first; c < n; c += st) row[c] = kept[nk++];
                break;
            }
            case ATTN_FIXED: { /* the row's block, and the summary keys */
                int64_t start = i / p->stride * p->stride - j;
                penalise_outside(row, pen, n, start, start + p->stride - 1);
                break;
            }
            case ATTN_GLOBAL_LOCAL: {
                if (p->is_global[i]) break;
                const uint8_t *pairs = p->rand_pair ? p->rand_pair + (i / p->block) * p->blocks
                                                    : NULL;
                if (!pen_made || pairs != row_pairs) {
                    for (int64_t c = 0; c < n; c++)
                        pen[c] = p->is_global[j + c] || (pairs && pairs[col_block[c]]) ? 0.0f
                                                                                       : -INFINITY;
                    row_pairs = pairs;
                    pen_made = true;
                }
                penalise_outside(row, pen, n, i - p->left - j, i + p->right - j);
                break;
            }
            }
            if (p->causal) { /* keys after i are hidden whatever the pattern says */
                int64_t from = i - j + 1 < 0 ? 0 : i - j + 1;
                for (int64_t c = from; c < n; c++) row[c] = -INFINITY;
            }
        }
    }
}

void attn_blocks_free(attn_blocks *b)
{
    if (!b) return;
    free(b->row_ptr);
    free(b->col);
    free(b->row_kind);
    free(b->col_ptr);
    free(b->row);
    free(b->col_kind);
    free(b);
}

attn_blocks *attn_blocks_build(const attn_pattern *p, int64_t br, int64_t bc)
{
    int64_t T = p->T, nq = (T + br - 1) / br, nk = (T + bc - 1) / bc;
    attn_blocks *b = calloc(1, sizeof *b);
    uint8_t *kinds = malloc((size_t)(nq * nk > 0 ? nq * nk : 1));   /* the tile map, [nq,nk] */
    if (b) {
        b->q_tiles = nq;
        b->k_tiles = nk;
        b->row_ptr = calloc((size_t)nq + 1, sizeof(int64_t));
        b->col_ptr = calloc((size_t)nk + 1, sizeof(int64_t));
    }
    if (!b || !kinds || !b->row_ptr || !b->col_ptr) goto oom;
    int64_t live = 0;
    for (int64_t I = 0; I < nq; I++) {
        for (int64_t J = 0; J < nk; J++) {
            int64_t i1 = (I + 1) * br < T ? (I + 1) * br : T, j1 = (J + 1) * bc < T ? (J + 1) * bc : T;
            uint8_t k = (uint8_t)attn_classify(p, I * br, i1, J * bc, j1);
            kinds[I * nk + J] = k;
            if (k != ATTN_TILE_EMPTY) {
                live++;
                b->col_ptr[J + 1]++;
            }
        }
        b->row_ptr[I + 1] = live;
    }
    for (int64_t J = 0; J < nk; J++) b->col_ptr[J + 1] += b->col_ptr[J];
    size_t n = (size_t)(live > 0 ? live : 1);
    b->col = malloc(n * sizeof(int64_t));
    b->row = malloc(n * sizeof(int64_t));
    b->row_kind = malloc(n);
    b->col_kind = malloc(n);
    if (!b->col || !b->row || !b->row_kind || !b->col_kind) goto oom;
    int64_t e = 0;
    for (int64_t I = 0; I < nq; I++)
        for (int64_t J = 0; J < nk; J++)
            if (kinds[I * nk + J] != ATTN_TILE_EMPTY) {
                b->col[e] = J;
                b->row_kind[e++] = kinds[I * nk + J];
            }
    /* the transpose: query tiles ascending within each key tile */
    e = 0;
    for (int64_t J = 0; J < nk; J++)
        for (int64_t I = 0; I < nq; I++)
            if (kinds[I * nk + J] != ATTN_TILE_EMPTY) {
                b->row[e] = I;
                b->col_kind[e++] = kinds[I * nk + J];
            }
    free(kinds);
    return b;
oom:
    free(kinds);
    attn_blocks_free(b);
    xt_fail(XT_ERR_OOM, "attention: out of memory for the block list");
    return NULL;
}

/* ==== the ops ============================================================================ */

/* A pattern for q's sequence length (0 when q is unusable: the kernel's checks then fail
 * with the proper message before the pattern is used); NULL + error on OOM. */
static attn_pattern *pattern_new(const char *op, const xt_tensor *q, attn_kind kind,
                                 int32_t causal)
{
    attn_pattern *p = calloc(1, sizeof *p);
    if (!p) {
        xt_fail(XT_ERR_OOM, "%s: out of memory", op);
        return NULL;
    }
    p->kind = kind;
    p->causal = causal != 0;
    p->T = q && q->ndim >= 2 ? q->shape[q->ndim - 2] : 0;
    return p;
}

xt_tensor *xt_local_attention(xt_tensor *q, xt_tensor *k, xt_tensor *v, int64_t before,
                              int64_t after, int32_t causal, double scale)
{
    const char *op = "local_attention";
    if (before < 0 || after < 0)
        return xt_fail_null(XT_ERR_ARG,
                            "%s: the window must have before >= 0 and after >= 0 keys, got "
                            "before = %lld, after = %lld", op, (long long)before,
                            (long long)after);
    attn_pattern *p = pattern_new(op, q, ATTN_LOCAL, causal);
    if (!p) return NULL;
    p->left = before;
    p->right = after;
    return xt_attention_pattern(op, q, k, v, scale, p);
}

xt_tensor *xt_sparse_attention(xt_tensor *q, xt_tensor *k, xt_tensor *v, int32_t pattern,
                               int64_t stride, int64_t summary, int32_t causal, double scale)
{
    const char *op = "sparse_attention";
    if (pattern != XT_SPARSE_STRIDED && pattern != XT_SPARSE_FIXED)
        return xt_fail_null(XT_ERR_ARG,
                            "%s: unknown pattern %d (expected XT_SPARSE_STRIDED or "
                            "XT_SPARSE_FIXED)", op, (int)pattern);
    if (stride < 1)
        return xt_fail_null(XT_ERR_ARG, "%s: stride must be >= 1, got %lld", op,
                            (long long)stride);
    if (pattern == XT_SPARSE_FIXED && (summary < 0 || summary > stride))
        return xt_fail_null(XT_ERR_ARG,
                            "%s: the fixed pattern needs 0 <= summary <= stride, got summary "
                            "= %lld, stride = %lld", op, (long long)summary, (long long)stride);
    attn_pattern *p = pattern_new(op, q, pattern == XT_SPARSE_FIXED ? ATTN_FIXED : ATTN_STRIDED,
                                  causal);
    if (!p) return NULL;
    p->stride = stride;
    p->summary = pattern == XT_SPARSE_FIXED ? summary : 0;
    return xt_attention_pattern(op, q, k, v, scale, p);
}

/* Marks the global tokens of p (index: int64 values base .. base+T-1, any shape). */
static xt_status set_globals(const char *op, attn_pattern *p, xt_tensor *index, int64_t base)
{
    p->is_global = calloc((size_t)p->T + 1, 1);
    p->global_before = calloc((size_t)p->T + 1, sizeof(int64_t));
    if (!p->is_global || !p->global_before) return xt_fail(XT_ERR_OOM, "%s: out of memory", op);
    if (index) {
        if (index->dtype != XT_INT64)
            return xt_fail(XT_ERR_DTYPE, "%s: expected int64 global token indices, got %s", op,
                           xt_dtype_name(index->dtype));
        xt_tensor *c = xt_contiguous(index);
        if (!c) return xt_last_status();
        const int64_t *idx = c->data;
        int64_t n = xt_numel(c);
        for (int64_t i = 0; i < n; i++) {
            if ((uint64_t)idx[i] - (uint64_t)base >= (uint64_t)p->T) {
                xt_status st = xt_fail(XT_ERR_ARG,
                                       "%s: global token index %lld out of range (expected "
                                       "%lld .. %lld for T = %lld)", op, (long long)idx[i],
                                       (long long)base, (long long)(base + p->T - 1),
                                       (long long)p->T);
                xt_tensor_release(c);
                return st;
            }
            p->is_global[idx[i] - base] = 1;
        }
        xt_tensor_release(c);
    }
    for (int64_t t = 0; t < p->T; t++) p->global_before[t + 1] = p->global_before[t] + p->is_global[t];
    return XT_OK;
}

/* BigBird: query block a sees `count` distinct key blocks drawn from philox(seed, a * n + t)
 * by a partial Fisher-Yates shuffle (all of them when count >= n). */
static xt_status set_random_blocks(const char *op, attn_pattern *p, int64_t count,
                                   int64_t block, uint64_t seed)
{
    int64_t n = (p->T + block - 1) / block;
    p->block = block;
    p->blocks = n;
    p->rand_pair = calloc((size_t)(n * n > 0 ? n * n : 1), 1);
    int64_t *perm = malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    if (!p->rand_pair || !perm) {
        free(perm);
        return xt_fail(XT_ERR_OOM, "%s: out of memory", op);
    }
    for (int64_t a = 0; a < n; a++) {
        for (int64_t b = 0; b < n; b++) perm[b] = b;
        for (int64_t t = 0; t < count && t < n; t++) {
            uint32_t r[4];
            xt_philox(seed, (uint64_t)(a * n + t), r);
            int64_t pick = t + (int64_t)((((uint64_t)r[0] << 32) | r[1]) % (uint64_t)(n - t));
            int64_t tmp = perm[t];
            perm[t] = perm[pick];
            perm[pick] = tmp;
            p->rand_pair[a * n + perm[t]] = 1;
        }
    }
    free(perm);
    return XT_OK;
}

xt_tensor *xt_global_local_attention(xt_tensor *q, xt_tensor *k, xt_tensor *v, int64_t before,
                                     int64_t after, xt_tensor *global, int64_t base,
                                     int64_t random_blocks, int64_t block, uint64_t seed,
                                     int32_t causal, double scale)
{
    const char *op = "global_local_attention";
    if (before < 0 || after < 0)
        return xt_fail_null(XT_ERR_ARG,
                            "%s: the window must have before >= 0 and after >= 0 keys, got "
                            "before = %lld, after = %lld", op, (long long)before,
                            (long long)after);
    if (random_blocks < 0 || (random_blocks > 0 && block < 1))
        return xt_fail_null(XT_ERR_ARG,
                            "%s: random blocks need random_blocks >= 0 and block >= 1, got "
                            "random_blocks = %lld, block = %lld", op, (long long)random_blocks,
                            (long long)block);
    attn_pattern *p = pattern_new(op, q, ATTN_GLOBAL_LOCAL, causal);
    if (!p) return NULL;
    p->left = before;
    p->right = after;
    if (set_globals(op, p, global, base) != XT_OK ||
        (random_blocks > 0 && set_random_blocks(op, p, random_blocks, block, seed) != XT_OK)) {
        attn_pattern_free(p);
        return NULL;
    }
    return xt_attention_pattern(op, q, k, v, scale, p);
}
