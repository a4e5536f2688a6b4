/*
 * internal.h: what the op files share and the public header does not show:
 * storage, the autograd node, error helpers, shape helpers and the strided
 * iterator. Nothing here is visible to Lua.
 */
#ifndef XT_INTERNAL_H
#define XT_INTERNAL_H

#include "xt.h"

#include <stdarg.h>
#include <stdbool.h>

/* ---- errors ---------------------------------------------------------------
 * xt_fail formats the thread-local message and returns the status, so a
 * failing path reads `return xt_fail(XT_ERR_SHAPE, "add: ...")`. xt_fail_null
 * does the same for functions returning a pointer. */
xt_status xt_fail(xt_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void *xt_fail_null(xt_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefix the current message with "op: " context, e.g. when a backward fails. */
void xt_error_prefix(const char *prefix);

/* A 0-based dim or index as the user counts it, for error messages. */
int64_t xt_shown(int64_t zero_based);

/* Writes "[2,3,4]" into buf (at least XT_SHAPE_STR bytes). */
enum { XT_SHAPE_STR = 200 };
const char *xt_shape_str(char *buf, int32_t ndim, const int64_t *shape);

/* ---- storage ----------------------------------------------------------------- */

struct xt_storage {
    void *data;          /* 64-byte aligned */
    int64_t nbytes;
    int32_t refcount;    /* atomic */
    uint32_t version;    /* bumped by every in-place write, shared by all views */
};

xt_storage *xt_storage_new(int64_t nbytes);   /* NULL + error on OOM */
void xt_storage_retain(xt_storage *s);
void xt_storage_release(xt_storage *s);

/* A tensor header around an existing storage (the storage is retained). */
xt_tensor *xt_tensor_new_view(xt_storage *s, int32_t dtype, int32_t ndim, const int64_t *shape,
                              const int64_t *strides, int64_t offset);
void xt_set_contiguous_strides(int32_t ndim, const int64_t *shape, int64_t *strides);
void xt_bump_version(xt_tensor *t);
/* An in-place write to t is refused for a leaf that requires grad while grad
 * mode is on (the write would be invisible to autograd). */
xt_status xt_check_inplace(xt_tensor *t, const char *op);
/* attention ops: q [...,T,f], k [...,S,f], v [...,S,dv] (attn_args.c) */
xt_status xt_check_qkv(const char *op, const xt_tensor *q, const xt_tensor *k, const xt_tensor *v,
                       char feature);

/* dst[...] = src broadcast to dst's shape, any dtypes; no autograd, no checks (create.c). */
void xt_copy_kernel(xt_tensor *dst, const xt_tensor *src);

/* ---- small helpers --------------------------------------------------------- */

/* Normalises a possibly negative dim against ndim; error names op. */
xt_status xt_norm_dim(int32_t *dim, int32_t ndim, const char *op);
/* Broadcast shapes a and b into out (out_ndim). Error names op. */
xt_status xt_broadcast_shapes(int32_t an, const int64_t *as, int32_t bn, const int64_t *bs,
                              int32_t *out_ndim, int64_t *out_shape, const char *op);
/* Strides of t seen with shape (ndim >= t->ndim), 0 on broadcast dims. */
void xt_broadcast_strides(const xt_tensor *t, int32_t ndim, const int64_t *shape,
                          int64_t *strides);
bool xt_same_shape(const xt_tensor *a, const xt_tensor *b);
int64_t xt_shape_numel(int32_t ndim, const int64_t *shape);
/* Reads element i (in C order over t's shape) as double; slow, for small jobs. */
double xt_get_as_double(const xt_tensor *t, const int64_t *index);

/* ---- strided iteration ------------------------------------------------------
 * Up to 4 operands sharing one iteration shape. Dims are coalesced where every
 * operand is contiguous across them, so the innermost run is as long as
 * possible. A kernel loops over runs: for each outer index, `inner` elements
 * with per-operand inner strides. Strides are in elements. */
enum { XT_ITER_MAX_OPS = 4 };
typedef struct xt_iter {
    int32_t nops;
    int32_t ndim;                       /* after coalescing, >= 1 */
    int64_t shape[XT_MAX_DIMS];
    int64_t strides[XT_ITER_MAX_OPS][XT_MAX_DIMS];
    int64_t inner;                      /* shape[ndim-1] */
    int64_t outer;                      /* product of the other dims */
} xt_iter;

/* strides[k] are operand k's strides over (ndim, shape). */
void xt_iter_init(xt_iter *it, int32_t nops, int32_t ndim, const int64_t *shape,
                  int64_t strides[][XT_MAX_DIMS]);
/* Element offsets of each operand at the start of run `o` (0 <= o < outer). */
void xt_iter_offsets(const xt_iter *it, int64_t o, int64_t *offsets);

/* ---- autograd node ------------------------------------------------------------
 * An op that needs grad creates a node with one edge per tensor input. An edge
 * points either at the input's grad_fn (a node, retained) or at the input
 * itself when it is a leaf that requires grad (retained), or at nothing. The
 * backward function receives dout (shaped like the op's output) and fills
 * dinputs[i] (new references) for the edges that need grad; the engine sums
 * broadcast dims away, accumulates into the next nodes and into leaf .grad. */

enum { XT_NODE_MAX_SAVED = 6, XT_NODE_MAX_ARGS = 16 };

typedef struct xt_edge {
    xt_node *fn;          /* owned */
    xt_tensor *leaf;      /* owned */
    int32_t ndim;         /* the input's shape, for un-broadcasting */
    int64_t shape[XT_MAX_DIMS];
    int32_t dtype;
} xt_edge;

/* NULL for a node whose backward is written in Lua (iargs[0] is its id). */
typedef xt_status (*xt_backward_fn)(xt_node *node, xt_tensor *dout, xt_tensor **dinputs);

struct xt_node {
    int32_t refcount;
    const char *name;                   /* the op, e.g. "mul" */
    xt_backward_fn backward;
    int32_t n_inputs;
    xt_edge *inputs;                    /* n_inputs entries */
    int32_t n_saved;
    xt_tensor *saved[XT_NODE_MAX_SAVED];
    uint32_t saved_version[XT_NODE_MAX_SAVED];
    double fargs[XT_NODE_MAX_ARGS];     /* op parameters the backward needs */
    int64_t iargs[XT_NODE_MAX_ARGS];
    void *extra;                        /* op-owned data, freed with free_extra */
    void (*free_extra)(void *);
    bool released;                      /* saved tensors freed after a backward */
    char *lua_name;                     /* owned name of a node written in Lua */
    /* engine scratch */
    xt_tensor *dout;
    int32_t pending;
    int32_t mark;
};

/* True when grad mode is on and some input requires grad. */
bool xt_needs_grad(int32_t n, xt_tensor *const *inputs);
/* A node over n inputs (edges made from them); NULL + error on OOM. */
xt_node *xt_node_new(const char *name, xt_backward_fn backward, int32_t n,
                     xt_tensor *const *inputs);
/* Keep t for the backward (retained, version remembered). */
xt_status xt_node_save(xt_node *node, xt_tensor *t);
/* Attach node to out as its grad_fn (takes the caller's node reference). */
void xt_node_attach(xt_node *node, xt_tensor *out);
void xt_node_release(xt_node *node);
/* Does input i need a gradient? */
bool xt_node_needs(const xt_node *node, int32_t i);
/* Saved tensor i, checking its version: NULL + error if it was modified in place. */
xt_tensor *xt_node_saved(xt_node *node, int32_t i);

/* Record a node for out from inputs when needed; returns false on error (out is
 * left alone). Convenience for ops that save inputs/outputs by index:
 * save_mask bit i saves inputs[i]; bit 31 saves out. */
bool xt_record(xt_tensor *out, const char *name, xt_backward_fn backward, int32_t n,
               xt_tensor *const *inputs, uint32_t save_mask);
enum { XT_SAVE_OUT = 1u << 31 };

/* ---- threads --------------------------------------------------------------------- */
/* Work below this many elements runs on one thread. */
enum { XT_PARALLEL_GRAIN = 32768 };

/* ---- BLAS (blas.c: the only caller of cblas) ---------------------------------------
 * C[m,n] = alpha * op(A)[m,k] op(B)[k,n] + beta * C, row-major, leading dims given. */
void xt_sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
              const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
              int64_t ldc);
void xt_blas_set_threads(int32_t n);

/* Philox: 4 uniform uint32 for counter `ctr` under key `seed`. */
void xt_philox(uint64_t seed, uint64_t ctr, uint32_t out[4]);

#endif
