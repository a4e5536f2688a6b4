/*
 * attn_patterns.h: the block-sparse attention patterns (research/efficient_attention.md
 * § 2.2–2.4) as seen by the tiled kernel of sdpa.c.
 *
 * A pattern is an element rule allowed(i, j) over query i and key j of one sequence (S == T),
 * plus a tile classifier that says, for a query tile x key tile rectangle, whether no element,
 * every element or only some are allowed. From the classifier, attn_blocks_build makes the
 * block list: for each query tile the key tiles to visit (CSR, ascending), and its transpose
 * (CSC) for the backward's key-tile pass. FULL tiles are computed as they are; PARTIAL tiles
 * get -inf scores where allowed() is false; EMPTY tiles are never visited. A classifier may
 * call a tile PARTIAL that is in fact empty or full (it only costs time), but EMPTY and FULL
 * must be exact.
 */
#ifndef XT_ATTN_PATTERNS_H
#define XT_ATTN_PATTERNS_H

#include "internal.h"

typedef enum attn_kind {
    ATTN_LOCAL,         /* -right <= i - j <= left */
    ATTN_STRIDED,       /* |i - j| <= stride, or (i - j) mod stride == 0 */
    ATTN_FIXED,         /* floor(i/stride) == floor(j/stride), or j mod stride >= stride - summary */
    ATTN_GLOBAL_LOCAL,  /* the ATTN_LOCAL band, or i or j a global token */
} attn_kind;

typedef enum attn_tile { ATTN_TILE_EMPTY, ATTN_TILE_FULL, ATTN_TILE_PARTIAL } attn_tile;

/* One pattern; every kind is intersected with j <= i when causal. Owned by the autograd node
 * (its extra) once the op has recorded one. */
typedef struct attn_pattern {
    attn_kind kind;
    int causal;
    int64_t T;
    int64_t left, right;      /* ATTN_LOCAL, ATTN_GLOBAL_LOCAL: keys before / after the query */
    int64_t stride, summary;  /* ATTN_STRIDED, ATTN_FIXED */
    uint8_t *is_global;       /* ATTN_GLOBAL_LOCAL: [T], owned */
    int64_t *global_before;   /* [T+1]: global tokens before position t, owned */
    /* ATTN_GLOBAL_LOCAL, BigBird's random blocks: query i also sees key j when
     * rand_pair[(i / block) * blocks + j / block] (NULL: none) */
    int64_t block, blocks;
    uint8_t *rand_pair;       /* [blocks, blocks], owned */
} attn_pattern;

void attn_pattern_free(void *pattern);

static inline bool attn_allowed(const attn_pattern *p, int64_t i, int64_t j)
{
    int64_t d = i - j;
    if (p->causal && d < 0) return false;
    switch (p->kind) {
    case ATTN_LOCAL: return d >= -p->right && d <= p->left;
    case ATTN_STRIDED: return (d >= -p->stride && d <= p->stride) || d % p->stride == 0;
    case ATTN_FIXED:
        return i / p->stride == j / p->stride || j % p->stride >= p->stride - p->summary;
    case ATTN_GLOBAL_LOCAL:
        return (d >= -p->right && d <= p->left) || p->is_global[i] || p->is_global[j] ||
               (p->rand_pair && p->rand_pair[(i / p->block) * p->blocks + j / p->block]);
    }
    return false;
}

/* s[r * ld + c] = -inf for each query i0 + r (r < br) and key j0 + c (c < bc) that
 * attn_allowed refuses; the rest of s is left as it is. */
void attn_mask_tile(const attn_pattern *p, int64_t i0, int64_t br, int64_t j0, int64_t bc,
                    float *s, int64_t ld);

/* The rectangle of queries [i0, i1) x keys [j0, j1). */
attn_tile attn_classify(const attn_pattern *p, int64_t i0, int64_t i1, int64_t j0, int64_t j1);

/* The block list of a pattern for tiles of br queries x bc keys. */
typedef struct attn_blocks {
    int64_t q_tiles, k_tiles;
    int64_t *row_ptr;     /* [q_tiles+1] into col / row_kind */
    int64_t *col;         /* key tile index of each entry, ascending within a query tile */
    uint8_t *row_kind;    /* attn_tile of each entry */
    int64_t *col_ptr;     /* [k_tiles+1] into row / col_kind (the transpose) */
    int64_t *row;
    uint8_t *col_kind;
} attn_blocks;

/* NULL + error on OOM. */
attn_blocks *attn_blocks_build(const attn_pattern *p, int64_t br, int64_t bc);
void attn_blocks_free(attn_blocks *b);

/* The tiled kernel of sdpa.c over a pattern: q, k, v [...,T,d] / [...,T,dv]; takes ownership
 * of pattern (freed here on failure, kept by the autograd node otherwise). */
xt_tensor *xt_attention_pattern(const char *op, xt_tensor *q, xt_tensor *k, xt_tensor *v,
                                double scale, attn_pattern *pattern);

#endif
