/*
 * xt.h: the one public header of libxt, the C core of xlua.
 *
 * Read it top to bottom as a tour: dtypes and errors, the tensor, lifetime,
 * creation, views, element-wise ops, reductions, linear algebra, autograd, images,
 * dataset files, files.
 *
 * The region between XT_API_BEGIN and XT_API_END is handed to LuaJIT's
 * ffi.cdef verbatim (tools/gen_cdef.lua extracts it at build time), so it
 * holds no preprocessor lines: constants are enums, and every type is spelled
 * out.
 *
 * Conventions
 *  - Every function that returns xt_tensor* returns a new reference (+1) that
 *    the caller releases with xt_tensor_release, or NULL on error. Every
 *    function that can fail without returning a pointer returns xt_status.
 *    On failure, xt_last_error() holds a message naming the op and what was
 *    wrong; the core never aborts or exits on user input.
 *  - Dimensions are 0-based here and may be negative (counted from the end).
 *    Functions that read or write index values take `base`: the value that
 *    denotes the first element (Lua passes 1, C callers 0).
 *  - Shapes use N batch, T time, D/C features or channels, H W image size.
 *  - An op whose input requires grad, while grad mode is on, records an
 *    autograd node on its result; xt_backward walks those nodes.
 */
#ifndef XT_H
#define XT_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* XT_API_BEGIN */

enum { XT_MAX_DIMS = 8 };

typedef enum xt_dtype {
    XT_FLOAT32 = 0,
    XT_INT64 = 1,
    XT_UINT8 = 2
} xt_dtype;

typedef enum xt_status {
    XT_OK = 0,
    XT_ERR_ARG = 1,      /* a bad argument: dim out of range, wrong count, ... */
    XT_ERR_SHAPE = 2,    /* shapes that do not fit together */
    XT_ERR_DTYPE = 3,    /* a dtype the op does not take */
    XT_ERR_OOM = 4,      /* an allocation failed */
    XT_ERR_IO = 5,       /* a file could not be read or written, or is corrupt */
    XT_ERR_STATE = 6     /* misuse of state: freed graph, in-place on saved tensor */
} xt_status;

/* ---- errors (thread-local) ---------------------------------------------- */

const char *xt_last_error(void);       /* message of the last failure on this thread */
xt_status xt_last_status(void);
void xt_clear_error(void);

/* ---- context: threads, grad mode, memory accounting ---------------------- */

void xt_set_num_threads(int32_t n);    /* OpenMP and OpenBLAS together; n <= 0: all cores */
int32_t xt_get_num_threads(void);
int32_t xt_is_grad_enabled(void);
int32_t xt_set_grad_enabled(int32_t enabled);   /* returns the previous mode */
int64_t xt_live_bytes(void);            /* bytes held by live storages now */
int64_t xt_allocated_bytes_total(void); /* bytes ever allocated (monotone), for GC pacing */
int64_t xt_cached_bytes(void);          /* freed large blocks kept for reuse (at most 1 GiB) */
void xt_empty_cache(void);              /* return the cached blocks to the system */
const char *xt_version(void);
/* Dims and indices in error messages count from this base (Lua sets 1; default 0). */
void xt_set_message_base(int32_t base);

/* ---- random numbers ------------------------------------------------------
 * Philox4x32-10, counter based: element i of a draw depends only on (seed,
 * offset + i), so results do not depend on the number of threads. A draw of
 * n values advances offset; saving {seed, offset} saves the generator. */

typedef struct xt_rng {
    uint64_t seed;
    uint64_t offset;
} xt_rng;

xt_rng *xt_default_rng(void);
void xt_rng_seed(xt_rng *rng, uint64_t seed);

/* ---- the tensor ---------------------------------------------------------
 * A strided view on a reference-counted storage. The fields are readable from
 * Lua; only the library writes them. */

typedef struct xt_storage xt_storage;
typedef struct xt_node xt_node;

typedef struct xt_tensor {
    int64_t shape[XT_MAX_DIMS];
    int64_t strides[XT_MAX_DIMS];  /* in elements; 0 for an expanded dim */
    int64_t offset;                /* in elements, from the storage's start */
    void *data;                    /* storage data + offset * element size */
    int32_t ndim;
    int32_t dtype;                 /* an xt_dtype */
    int32_t refcount;
    int32_t requires_grad;
    xt_storage *storage;           /* owned reference */
    struct xt_tensor *grad;        /* owned; NULL until a backward fills it */
    xt_node *grad_fn;              /* owned; NULL for leaves and constants */
} xt_tensor;

void xt_tensor_retain(xt_tensor *t);
void xt_tensor_release(xt_tensor *t);      /* NULL is a no-op; never fails */
int64_t xt_numel(const xt_tensor *t);
int32_t xt_is_contiguous(const xt_tensor *t);
int64_t xt_dtype_size(int32_t dtype);
const char *xt_dtype_name(int32_t dtype);
uint32_t xt_tensor_version(const xt_tensor *t);   /* bumped by in-place ops */

/* ---- creation ------------------------------------------------------------ */

xt_tensor *xt_empty(int32_t ndim, const int64_t *shape, int32_t dtype);
xt_tensor *xt_zeros(int32_t ndim, const int64_t *shape, int32_t dtype);
xt_tensor *xt_full(int32_t ndim, const int64_t *shape, int32_t dtype, double value);
xt_tensor *xt_from_data(int32_t ndim, const int64_t *shape, int32_t dtype, const void *data);
xt_tensor *xt_arange(double start, double end, double step, int32_t dtype);
xt_tensor *xt_linspace(double start, double end, int64_t steps, int32_t dtype);
xt_tensor *xt_eye(int64_t n, int64_t m, int32_t dtype);
xt_tensor *xt_rand(xt_rng *rng, int32_t ndim, const int64_t *shape);    /* U[0,1) float32 */
xt_tensor *xt_randn(xt_rng *rng, int32_t ndim, const int64_t *shape);   /* N(0,1) float32 */
xt_tensor *xt_randint(xt_rng *rng, int64_t low, int64_t high, int32_t ndim,
                      const int64_t *shape);                           /* [low,high) int64 */
xt_tensor *xt_randperm(xt_rng *rng, int64_t n, int64_t base);          /* base..base+n-1 */

/* In-place fills; they bump the version and refuse leaves that require grad
 * while grad mode is on. */
xt_status xt_fill_(xt_tensor *t, double value);
xt_status xt_copy_(xt_tensor *dst, xt_tensor *src);      /* src broadcasts to dst; any dtypes */
xt_status xt_uniform_(xt_tensor *t, xt_rng *rng, double low, double high);
xt_status xt_normal_(xt_tensor *t, xt_rng *rng, double mean, double std);
xt_status xt_bernoulli_(xt_tensor *t, xt_rng *rng, double p);   /* 1 with probability p */

/* ---- views and data movement --------------------------------------------
 * Views share storage with their input; the rest allocate. */

xt_tensor *xt_view(xt_tensor *t, int32_t ndim, const int64_t *shape);    /* one -1 allowed */
xt_tensor *xt_reshape(xt_tensor *t, int32_t ndim, const int64_t *shape); /* view, else copy */
xt_tensor *xt_permute(xt_tensor *t, int32_t ndim, const int32_t *dims);
xt_tensor *xt_transpose(xt_tensor *t, int32_t dim0, int32_t dim1);
xt_tensor *xt_narrow(xt_tensor *t, int32_t dim, int64_t start, int64_t length);
xt_tensor *xt_select(xt_tensor *t, int32_t dim, int64_t index);
xt_tensor *xt_squeeze(xt_tensor *t, int32_t dim);
xt_tensor *xt_squeeze_all(xt_tensor *t);
xt_tensor *xt_unsqueeze(xt_tensor *t, int32_t dim);
xt_tensor *xt_expand(xt_tensor *t, int32_t ndim, const int64_t *shape);  /* -1 keeps a dim */
xt_tensor *xt_flatten(xt_tensor *t, int32_t start_dim, int32_t end_dim);
xt_tensor *xt_contiguous(xt_tensor *t);   /* t itself (+1) when already contiguous */
xt_tensor *xt_clone(xt_tensor *t);
xt_tensor *xt_detach(xt_tensor *t);       /* shares storage, no grad history */
xt_tensor *xt_to_dtype(xt_tensor *t, int32_t dtype);

xt_tensor *xt_cat(int32_t n, xt_tensor *const *tensors, int32_t dim);
xt_tensor *xt_stack(int32_t n, xt_tensor *const *tensors, int32_t dim);
xt_tensor *xt_index_select(xt_tensor *t, int32_t dim, xt_tensor *index, int64_t base);
xt_tensor *xt_gather(xt_tensor *t, int32_t dim, xt_tensor *index, int64_t base);
/* out = t with src added at index along dim (out of place) */
xt_tensor *xt_scatter_add(xt_tensor *t, int32_t dim, xt_tensor *index, xt_tensor *src,
                          int64_t base);
xt_tensor *xt_masked_fill(xt_tensor *t, xt_tensor *mask, double value);  /* mask uint8 */
xt_tensor *xt_where(xt_tensor *cond, xt_tensor *a, xt_tensor *b);        /* cond uint8 */

/* ---- element-wise ---------------------------------------------------------
 * Binary ops broadcast with NumPy rules. float32 op int64/uint8 computes in
 * float32; int64 op int64 stays int64 (XT_DIV always gives float32);
 * comparisons give uint8 (0/1). */

typedef enum xt_unary_op {
    XT_NEG = 0, XT_ABS, XT_EXP, XT_LOG, XT_SQRT, XT_RSQRT, XT_TANH, XT_SIGMOID,
    XT_RELU, XT_GELU, XT_SILU, XT_SIN, XT_COS, XT_ELU, XT_LOG1P, XT_EXPM1,
    XT_SIGN, XT_FLOOR, XT_CEIL, XT_ROUND, XT_SQUARE, XT_RECIPROCAL,
    XT_UNARY_OP_COUNT
} xt_unary_op;

typedef enum xt_binary_op {
    XT_ADD = 0, XT_SUB, XT_MUL, XT_DIV, XT_POW, XT_MAXIMUM, XT_MINIMUM,
    XT_EQ, XT_NE, XT_LT, XT_LE, XT_GT, XT_GE,
    XT_BINARY_OP_COUNT
} xt_binary_op;

xt_tensor *xt_unary(int32_t op, xt_tensor *x);
xt_tensor *xt_binary(int32_t op, xt_tensor *a, xt_tensor *b);
/* a op s, or s op a when reversed != 0 (2 - x, 2 / x, 2 ^ x) */
xt_tensor *xt_binary_scalar(int32_t op, xt_tensor *a, double s, int32_t reversed);
xt_tensor *xt_clamp(xt_tensor *x, double low, double high);   /* +-inf for no bound */
xt_tensor *xt_leaky_relu(xt_tensor *x, double slope);
/* In-place a op= b (b broadcasts to a); no autograd node, bumps the version. */
xt_status xt_binary_(int32_t op, xt_tensor *a, xt_tensor *b);
xt_status xt_binary_scalar_(int32_t op, xt_tensor *a, double s);

/* ---- reductions -----------------------------------------------------------
 * Over the listed dims (ndims == 0: all dims; a dim listed twice is an error); keepdim
 * keeps them as size 1. float32 sums accumulate in double, in an order fixed by the
 * shapes, so results do not depend on the thread count.
 * dtypes: float32 gives float32 for every op. int64 gives int64 for sum, prod, max, min,
 * cumsum (wrapping on overflow) and float32 for logsumexp; mean and var refuse integers,
 * as PyTorch does. uint8: sum, prod and cumsum give int64 (a count over a 0/1 mask must
 * not wrap at 256), max/min and max_dim/min_dim values stay uint8. argmax/argmin take
 * every dtype; softmax/log_softmax take float32 only.
 * Over an empty dim: sum 0, prod 1, mean and var NaN, logsumexp -inf; max, min and the
 * index reductions refuse (there is no identity). NaN propagates through max/min and is
 * the extreme for max_dim/argmax; ties go to the first position. The gradient of max/min
 * over dims is shared among tied elements; that of max_dim/min_dim goes to the index. */

typedef enum xt_reduce_op {
    XT_SUM = 0, XT_MEAN, XT_MAX, XT_MIN, XT_PROD, XT_LOGSUMEXP,
    XT_REDUCE_OP_COUNT
} xt_reduce_op;

xt_tensor *xt_reduce(int32_t op, xt_tensor *x, int32_t ndims, const int32_t *dims,
                     int32_t keepdim);
xt_tensor *xt_var(xt_tensor *x, int32_t ndims, const int32_t *dims, double correction,
                  int32_t keepdim);
/* max/min along one dim with the position of the extreme (int64, from base). */
xt_tensor *xt_max_dim(xt_tensor *x, int32_t dim, int32_t keepdim, int64_t base,
                      xt_tensor **indices);
xt_tensor *xt_min_dim(xt_tensor *x, int32_t dim, int32_t keepdim, int64_t base,
                      xt_tensor **indices);
xt_tensor *xt_argmax(xt_tensor *x, int32_t dim, int32_t keepdim, int64_t base);
xt_tensor *xt_argmin(xt_tensor *x, int32_t dim, int32_t keepdim, int64_t base);
xt_tensor *xt_cumsum(xt_tensor *x, int32_t dim);
xt_tensor *xt_softmax(xt_tensor *x, int32_t dim);
xt_tensor *xt_log_softmax(xt_tensor *x, int32_t dim);
/* Sum x down to shape (the inverse of broadcasting); used for gradients. */
xt_tensor *xt_sum_to(xt_tensor *x, int32_t ndim, const int64_t *shape);

/* ---- linear algebra (OpenBLAS) --------------------------------------------- */

xt_tensor *xt_matmul(xt_tensor *a, xt_tensor *b);  /* NumPy matmul, batch dims broadcast */
xt_tensor *xt_bmm(xt_tensor *a, xt_tensor *b);     /* [B,n,k] x [B,k,m] */
/* y = x w^T + b: x [..., in], w [out, in], b [out] or NULL */
xt_tensor *xt_linear(xt_tensor *x, xt_tensor *w, xt_tensor *b);

/* ---- attention: softmax ----------------------------------------------------------
 * q [...,T,d], k [...,S,d], v [...,S,dv] with the same leading dims (usually [B,H]) ->
 * [...,T,dv]: softmax(scale * q k^T) v over the keys, row by row; scale <= 0 means
 * 1/sqrt(d). causal != 0: query i sees keys j <= i + S - T (the queries are the last T
 * positions; needs S >= T; S == T is the usual lower-triangular mask). Computed in tiles
 * with an online softmax (FlashAttention-2): extra memory is linear in T and S, only the
 * row logsumexp is kept, and the backward recomputes the tiles. q, k, v whose last dim is
 * contiguous (a head permuted out of [B,T,H,d], a narrowed cache) are read without a copy. */
xt_tensor *xt_scaled_dot_product_attention(xt_tensor *q, xt_tensor *k, xt_tensor *v,
                                           int32_t causal, double scale);
/* The same with dropout on the attention weights: each weight is zeroed with probability
 * p in [0,1) and the rest scaled by 1/(1-p); the mask comes from rng's Philox stream (which
 * advances) and is regenerated in the backward, never stored. p == 0 needs no rng. */
xt_tensor *xt_scaled_dot_product_attention_dropout(xt_tensor *q, xt_tensor *k, xt_tensor *v,
                                                   int32_t causal, double scale, double p,
                                                   xt_rng *rng);

/* ---- attention: block-sparse ----------------------------------------------------------
 * Self-attention (q [...,T,d], k [...,T,d], v [...,T,dv] -> [...,T,dv], scale <= 0 means
 * 1/sqrt(d)) where query i sees only the keys j of a fixed pattern, one softmax over them
 * (research/efficient_attention.md § 2.2-2.4). The tiled kernel of
 * xt_scaled_dot_product_attention visits only the key tiles the pattern touches, so time is
 * O(T * keys per query * d) and memory linear in T. causal != 0 also hides every j > i. A
 * query that sees no key gets 0.
 * Sliding window: key j is seen when i - before <= j <= i + after. */
xt_tensor *xt_local_attention(xt_tensor *q, xt_tensor *k, xt_tensor *v, int64_t before,
                              int64_t after, int32_t causal, double scale);
/* Sparse Transformer (Child et al. 2019), one softmax over the union of both halves:
 * XT_SPARSE_STRIDED: |i - j| <= stride, or (i - j) mod stride == 0 (summary unused);
 * XT_SPARSE_FIXED: floor(i/stride) == floor(j/stride), or j mod stride >= stride - summary
 * (the last `summary` keys of every block; 0 <= summary <= stride). */
typedef enum xt_sparse_pattern { XT_SPARSE_STRIDED = 0, XT_SPARSE_FIXED = 1 } xt_sparse_pattern;
xt_tensor *xt_sparse_attention(xt_tensor *q, xt_tensor *k, xt_tensor *v, int32_t pattern,
                               int64_t stride, int64_t summary, int32_t causal, double scale);
/* Longformer / BigBird: the sliding window (before, after), plus global tokens (global: int64
 * indices base .. base+T-1, any shape, or NULL) that see every key and are seen by every
 * query, plus (random_blocks > 0) BigBird's random blocks: query block i / block also sees
 * random_blocks distinct key blocks drawn from philox(seed). */
xt_tensor *xt_global_local_attention(xt_tensor *q, xt_tensor *k, xt_tensor *v, int64_t before,
                                     int64_t after, xt_tensor *global, int64_t base,
                                     int64_t random_blocks, int64_t block, uint64_t seed,
                                     int32_t causal, double scale);

/* ---- attention: efficient variants --------------------------------------------------------
 * Kernel ("linear") attention (Katharopoulos et al. 2020). With a positive feature map phi:
 *   out_i = phi(q_i) S / (phi(q_i) . z + eps),  S = sum_j phi(k_j) v_j^T,  z = sum_j phi(k_j)
 * over all keys j, or over j <= i when causal (which needs S == T). q [...,T,m], k [...,S,m],
 * v [...,S,dv] with the same leading dims (usually [B,H]) -> [...,T,dv].
 * feature_map: XT_FEATURE_ELU1 applies phi(x) = elu(x) + 1 itself; XT_FEATURE_IDENTITY takes
 * q and k as the features already (they must be positive, e.g. from xt_favor_features, or
 * the normaliser can vanish). Causal attention runs in chunks of `chunk` rows (<= 0: 64): a
 * masked chunk x chunk product inside a chunk, a running m x dv state across chunks. Time
 * O(T m dv + T chunk (m + dv)); besides the output only its normaliser [...,T] is kept for
 * the backward, and nothing of size T x T is formed. eps >= 0 is added to the normaliser
 * (1e-6 is usual). q, k, v with a contiguous last dim are read without a copy. */
typedef enum xt_feature_map { XT_FEATURE_ELU1 = 0, XT_FEATURE_IDENTITY = 1 } xt_feature_map;
xt_tensor *xt_linear_attention(xt_tensor *q, xt_tensor *k, xt_tensor *v, int32_t causal,
                               int64_t chunk, int32_t feature_map, double eps);
/* FAVOR+ positive random features (Performer, Choromanski et al. 2021): x [...,T,d] and
 * w [m,d] (one random direction per row, not trained as a rule) -> [...,T,m],
 *   phi(x)_r = m^(-1/2) (exp(w_r . x' - |x'|^2 / 2 - s) + eps),  x' = d^(-1/4) x,
 * so that phi(q) . phi(k) estimates exp(q . k / sqrt(d)) (times e^(-s) factors that cancel in
 * linear attention). The shift s keeps exp in range: XT_FAVOR_SHIFT_ROW subtracts each row's
 * max (queries), XT_FAVOR_SHIFT_UNIT one max per [T,m] slice (the keys of bidirectional
 * attention), XT_FAVOR_SHIFT_NONE nothing (the keys of causal attention: a max over the
 * sequence would let later keys change earlier outputs; the exponent is at most
 * max_r |w_r|^2 / 2 there). Gradients to x and w, exact (the shift included). */
typedef enum xt_favor_shift {
    XT_FAVOR_SHIFT_ROW = 0, XT_FAVOR_SHIFT_UNIT = 1, XT_FAVOR_SHIFT_NONE = 2
} xt_favor_shift;
xt_tensor *xt_favor_features(xt_tensor *x, xt_tensor *w, int32_t shift, double eps);

/* ---- neural-network kernels (forward and backward fused in C) -------------------
 * Images are [N,C,H,W]. Class targets are int64 counted from base. */

/* x [N,Cin,H,W], w [Cout,Cin/groups,kh,kw], b [Cout] or NULL -> [N,Cout,Ho,Wo] */
xt_tensor *xt_conv2d(xt_tensor *x, xt_tensor *w, xt_tensor *b, int32_t stride_h,
                     int32_t stride_w, int32_t pad_h, int32_t pad_w, int32_t dilation_h,
                     int32_t dilation_w, int32_t groups);
xt_tensor *xt_max_pool2d(xt_tensor *x, int32_t kernel_h, int32_t kernel_w, int32_t stride_h,
                         int32_t stride_w, int32_t pad_h, int32_t pad_w);
xt_tensor *xt_avg_pool2d(xt_tensor *x, int32_t kernel_h, int32_t kernel_w, int32_t stride_h,
                         int32_t stride_w, int32_t pad_h, int32_t pad_w,
                         int32_t count_include_pad);
xt_tensor *xt_adaptive_avg_pool2d(xt_tensor *x, int64_t out_h, int64_t out_w);

/* x [N,C,...]. training: normalise with batch statistics and update running_mean/var in
 * place (momentum as PyTorch, unbiased running var); else use the running statistics.
 * weight/bias [C] or NULL; running stats [C] or NULL (then training must be 1). */
xt_tensor *xt_batch_norm(xt_tensor *x, xt_tensor *weight, xt_tensor *bias,
                         xt_tensor *running_mean, xt_tensor *running_var, int32_t training,
                         double momentum, double eps);
/* Normalise over the last normalized_ndim dims; weight/bias shaped like them, or NULL. */
xt_tensor *xt_layer_norm(xt_tensor *x, int32_t normalized_ndim, xt_tensor *weight,
                         xt_tensor *bias, double eps);
/* x [N,C,...], C divisible by groups; weight/bias [C] or NULL. */
xt_tensor *xt_group_norm(xt_tensor *x, int32_t groups, xt_tensor *weight, xt_tensor *bias,
                         double eps);
/* Zero each element with probability p and scale the rest by 1/(1-p). */
xt_tensor *xt_dropout(xt_tensor *x, xt_rng *rng, double p);
/* weight [V,D], index int64 of any shape -> [..., D]; gradient to weight only. */
xt_tensor *xt_embedding(xt_tensor *weight, xt_tensor *index, int64_t base);

typedef enum xt_reduction { XT_REDUCTION_NONE = 0, XT_REDUCTION_MEAN = 1, XT_REDUCTION_SUM = 2 } xt_reduction;

/* logits [N,C] or [N,C,d1,...], target int64 [N] or [N,d1,...] with classes base..base+C-1;
 * weight [C] or NULL; targets equal to ignore_index contribute nothing (the mean is over
 * the others' weights, as PyTorch). label_smoothing in [0,1]. */
xt_tensor *xt_cross_entropy(xt_tensor *logits, xt_tensor *target, xt_tensor *weight,
                            int64_t ignore_index, double label_smoothing, int32_t reduction,
                            int64_t base);
xt_tensor *xt_nll_loss(xt_tensor *log_probs, xt_tensor *target, xt_tensor *weight,
                       int64_t ignore_index, int32_t reduction, int64_t base);
/* Numerically stable; pos_weight [C] (broadcast on the last dim) or NULL. */
xt_tensor *xt_bce_with_logits(xt_tensor *x, xt_tensor *target, xt_tensor *pos_weight,
                              int32_t reduction);

/* ---- attention: the AFT family ---------------------------------------------------------
 * Attention Free Transformer (Zhai et al. 2021). q, k, v, out [B,T,D]; per channel c:
 *   out[b,t,c] = sigmoid(q[b,t,c]) * sum_t' exp(k[b,t',c] + w[t,t']) v[b,t',c]
 *                                    / sum_t' exp(k[b,t',c] + w[t,t'])
 * causal != 0 limits the sums to t' <= t. Fused forward and backward (gradients to q, k, v
 * and w), stable for any range of k and w, memory linear in T besides w and its gradient. */
xt_tensor *xt_aft_full(xt_tensor *q, xt_tensor *k, xt_tensor *v, xt_tensor *w,
                       int32_t causal);                                  /* w [T,T] */
xt_tensor *xt_aft_simple(xt_tensor *q, xt_tensor *k, xt_tensor *v, int32_t causal); /* w = 0 */
/* w [T,T] used where |t - t'| < window (t - t' < window when causal); the bias outside the
 * window is 0, not -inf, so every key still contributes. window >= T is aft_full. */
xt_tensor *xt_aft_local(xt_tensor *q, xt_tensor *k, xt_tensor *v, xt_tensor *w, int64_t window,
                        int32_t causal);
/* q, v [B,C,H,W]; k [B,heads,H,W], one key per head shared by its C/heads channels;
 * w [heads,kh,kw], odd kernel: the bias from position (y,x) to (y+i-kh/2, x+j-kw/2) is
 * w[head,i,j] (a cross-correlation with zero padding), 0 beyond the kernel. */
xt_tensor *xt_aft_conv(xt_tensor *q, xt_tensor *k, xt_tensor *v, xt_tensor *w);

/* ---- DeLighT: group linear -----------------------------------------------------------
 * The group linear transformation (GLT) of DeLighT's DExTra (Mehta et al. 2021): the
 * features are cut into g groups and each group has its own matrix.
 *   x [..., din], w [g, din/g, dout/g], b [g, dout/g] or NULL -> y [..., dout]
 *   A[t,k,j] = b[k,j] + sum_a x[t, k*din/g + a] * w[k,a,j]      (group k: x's k-th slice)
 *   shuffle == 0: y[t, k*co + j] = A[t,k,j]; shuffle != 0: y[t, j*g + k] = A[t,k,j]
 * (co = dout/g): the shuffle interleaves the groups, element j of every group side by
 * side. One GEMM per group reads x in place (any row stride, unit column stride) and w's
 * [din/g, dout/g] matrices as stored or transposed; the backward applies the inverse
 * permutation. */
xt_tensor *xt_group_linear(xt_tensor *x, xt_tensor *w, xt_tensor *b, int32_t shuffle);
/* A whole DExTra layer in one op: the GLT above, where group k reads [prefix_k | x_k]
 * (prefix [..., dp] with x's leading dims, cut into g slices like x: DExTra's input mixer,
 * without building the concatenation; w [g, (dp + dx)/g, co]; prefix NULL: x alone), then
 * normalize != 0: LayerNorm of each chunk y[t, c*co .. (c+1)*co) on its own (its own mean
 * and biased variance, eps) with the affine ln_weight, ln_bias [co] (each may be NULL)
 * shared by the g chunks, then swish != 0: z * sigmoid(z). */
xt_tensor *xt_group_linear_ex(xt_tensor *x, xt_tensor *prefix, xt_tensor *w, xt_tensor *b,
                              int32_t shuffle, int32_t normalize, xt_tensor *ln_weight,
                              xt_tensor *ln_bias, double eps, int32_t swish);

/* ---- optimizer updates: one fused pass over a parameter, in place, no autograd ------
 * grad is the parameter's gradient; state tensors are float32 shaped like param.
 * step counts from 1. */
xt_status xt_sgd_step(xt_tensor *param, xt_tensor *grad, xt_tensor *momentum_buffer,
                      double lr, double momentum, double dampening, double weight_decay,
                      int32_t nesterov, int64_t step);
/* decoupled != 0: AdamW (weight decay applied to the parameter), else Adam (L2 in grad). */
xt_status xt_adam_step(xt_tensor *param, xt_tensor *grad, xt_tensor *exp_avg,
                       xt_tensor *exp_avg_sq, double lr, double beta1, double beta2,
                       double eps, double weight_decay, int32_t decoupled, int64_t step);
/* Sum of squares of every gradient, in double: for clip_grad_norm. */
double xt_sum_of_squares(int32_t n, xt_tensor *const *tensors);

/* ---- autograd --------------------------------------------------------------- */

xt_status xt_set_requires_grad(xt_tensor *t, int32_t requires_grad);  /* leaves only */
int32_t xt_is_leaf(const xt_tensor *t);
const char *xt_grad_fn_name(const xt_tensor *t);   /* NULL for leaves */
xt_tensor *xt_get_grad(xt_tensor *t);              /* +1 ref, or NULL (no error) */
xt_status xt_set_grad(xt_tensor *t, xt_tensor *grad);   /* grad may be NULL */
/* Backpropagate from root. grad: dL/droot, or NULL for a one-element root.
 * retain_graph != 0 keeps saved tensors for another backward. */
xt_status xt_backward(xt_tensor *root, xt_tensor *grad, int32_t retain_graph);

/* Backward step by step, for graphs that hold functions written in Lua. step runs C
 * nodes until the graph is done (0), a Lua node is ready (its id > 0) or an error (-1).
 * For a Lua node, waiting_dout gives its output gradient (+1 ref, NULL if none arrived)
 * and supply takes the gradient of its i-th input; then step again. end always. */
typedef struct xt_backward_run xt_backward_run;
xt_backward_run *xt_backward_begin(xt_tensor *root, xt_tensor *grad, int32_t retain_graph);
int64_t xt_backward_step(xt_backward_run *run);
xt_tensor *xt_backward_waiting_dout(xt_backward_run *run);
xt_status xt_backward_supply(xt_backward_run *run, int32_t input, xt_tensor *grad);
void xt_backward_end(xt_backward_run *run);
/* Make out the result of a Lua function of n inputs with id (> 0): 1 when a node was
 * recorded, 0 when no input needs grad, -1 on error. */
int32_t xt_record_lua(xt_tensor *out, const char *name, int64_t id, int32_t n,
                      xt_tensor *const *inputs);
/* Ids of Lua nodes freed since the last call (up to capacity); returns the count. */
int32_t xt_lua_nodes_freed(int64_t *ids, int32_t capacity);

/* ---- images -----------------------------------------------------------------
 * Images are uint8 [H,W,C], rows top to bottom, channels interleaved (gray, gray+alpha,
 * RGB, RGBA). channels 0 keeps the file's channel count, 1..4 converts to that many.
 * Decoding (stb_image: PNG, JPEG, BMP, GIF's first frame, PNM) is thread-safe and never
 * calls back into Lua, so the loader's worker threads use it. name (may be NULL) is the
 * file the bytes came from, for error messages. Writes are atomic (temp file + rename). */

xt_tensor *xt_image_decode(const uint8_t *bytes, int64_t nbytes, int32_t channels,
                           const char *name);
/* The header's size without decoding: shape[3] = {H, W, C as in the file}. Fails as
 * decode would on unknown formats, corrupt or truncated headers and oversized images. */
xt_status xt_image_info(const uint8_t *bytes, int64_t nbytes, const char *name, int64_t *shape);
xt_tensor *xt_image_load(const char *path, int32_t channels);
/* t uint8 [H,W] or [H,W,C], C 1..4; any strides. */
xt_status xt_image_save_png(const char *path, xt_tensor *t);
xt_status xt_image_save_jpeg(const char *path, xt_tensor *t, int32_t quality);   /* 1..100 */

/* ---- dataset files -----------------------------------------------------------
 * IDX (MNIST, Fashion-MNIST), gzip or plain: unsigned-byte data with the file's sizes,
 * e.g. uint8 [60000,28,28] images or [60000] labels.
 * CIFAR binary batches: records of label_bytes (1: CIFAR-10; 2: CIFAR-100 coarse, fine)
 * then a 32x32 RGB image; returns images uint8 [N,32,32,3] and *labels uint8
 * [N,label_bytes] as stored (0-based classes). */

xt_tensor *xt_read_idx(const char *path);
xt_tensor *xt_read_cifar(const char *path, int32_t label_bytes, xt_tensor **labels);

/* ---- data loading -------------------------------------------------------------
 * A loader turns a dataset into batches: images uint8 [N,H,W,C] in memory, or image
 * files decoded on the fly, each with an int64 label. A pool of worker threads decodes,
 * transforms and assembles whole batches (input [B,C,H,W] float32, target [B] int64)
 * ahead of the consumer and hands them out in order. An epoch's sample order depends
 * only on (seed, epoch), and every random choice a transform makes on a sample only on
 * (seed, epoch, sample index): batches are identical for any number of workers.
 *
 * A transform pipeline is an array of descriptors applied in order: geometric steps on
 * the uint8 HWC image, then TO_TENSOR (uint8 HWC -> float32 CHW in [0,1]; appended when
 * missing), then NORMALIZE steps. Interpolation is bilinear with half-pixel centres and
 * no antialiasing (as F.interpolate, align_corners=False) or exact area averaging. */

enum { XT_TRANSFORM_MAX_CHANNELS = 4 };

typedef enum xt_transform_kind {
    XT_TRANSFORM_RANDOM_CROP = 0,        /* height, width, padding, fill */
    XT_TRANSFORM_RANDOM_HORIZONTAL_FLIP, /* p */
    XT_TRANSFORM_RANDOM_RESIZED_CROP,    /* height, width, scale, ratio, interpolation */
    XT_TRANSFORM_RESIZE,                 /* height, width (0: shorter side to height), interp. */
    XT_TRANSFORM_CENTER_CROP,            /* height, width; zero padding when larger */
    XT_TRANSFORM_TO_TENSOR,
    XT_TRANSFORM_NORMALIZE,              /* mean, std: per channel (n_values = C) or all (1) */
    XT_TRANSFORM_KIND_COUNT
} xt_transform_kind;

typedef enum xt_interpolation {
    XT_INTERP_BILINEAR = 0,
    XT_INTERP_AREA = 1
} xt_interpolation;

/* The fields a kind does not list are ignored. As torchvision: RandomCrop pads with fill
 * then crops at a uniform offset; RandomResizedCrop tries 10 boxes of area in scale x the
 * image's and aspect ratio log-uniform in ratio, else a central box; Resize with width 0
 * keeps the aspect ratio, its shorter side becoming height. */
typedef struct xt_transform {
    int32_t kind;                        /* an xt_transform_kind */
    int32_t height, width;               /* output size */
    int32_t padding[4];                  /* left, top, right, bottom */
    int32_t interpolation;               /* an xt_interpolation */
    int32_t n_values;                    /* entries used in fill, mean, std: 1 or C */
    double p;                            /* probability of flipping */
    double scale[2];                     /* area fraction range */
    double ratio[2];                     /* aspect ratio (width / height) range */
    double fill[XT_TRANSFORM_MAX_CHANNELS];   /* 0..255 */
    double mean[XT_TRANSFORM_MAX_CHANNELS];
    double std[XT_TRANSFORM_MAX_CHANNELS];
} xt_transform;

/* Check a pipeline's parameters and order (the loader and xt_transform_apply do too). */
xt_status xt_transforms_check(int32_t n_transforms, const xt_transform *transforms);
/* Apply a pipeline to one image [H,W,C] uint8 with the random choices of sample `index`
 * in `epoch` of a loader seeded with `seed` -> float32 [C,H,W], or uint8 [H,W,C] when
 * the pipeline has no TO_TENSOR step. */
xt_tensor *xt_transform_apply(xt_tensor *image, int32_t n_transforms,
                              const xt_transform *transforms, uint64_t seed, int64_t epoch,
                              int64_t index);

typedef struct xt_loader xt_loader;

typedef struct xt_loader_options {
    int64_t batch_size;
    uint64_t seed;
    int32_t shuffle;
    int32_t drop_last;     /* drop the last batch when it is smaller than batch_size */
    int32_t workers;       /* threads; 0: batches are built in the caller's thread */
    int32_t prefetch;      /* batches in progress or ready per worker; <= 0: 2 */
    int32_t channels;      /* files: decode to this many channels (0: as stored) */
} xt_loader_options;

/* images uint8 [N,H,W,C] (or [N,H,W]: C = 1), labels int64 [N]; both are copied or
 * retained, the transforms copied. Labels are passed through as they are (Lua: 1-based). */
xt_loader *xt_loader_new_memory(xt_tensor *images, xt_tensor *labels,
                                const xt_loader_options *options, int32_t n_transforms,
                                const xt_transform *transforms);
/* n image files (paths copied), decoded by the workers with xt_image_load. */
xt_loader *xt_loader_new_files(int64_t n, const char *const *paths, xt_tensor *labels,
                               const xt_loader_options *options, int32_t n_transforms,
                               const xt_transform *transforms);
/* Stops the workers (mid-epoch too), joins them and frees everything. NULL: no-op. */
void xt_loader_free(xt_loader *loader);
int64_t xt_loader_num_batches(const xt_loader *loader);
int64_t xt_loader_num_samples(const xt_loader *loader);
/* Begin epoch `epoch` (any integer; a running epoch is abandoned). */
xt_status xt_loader_start_epoch(xt_loader *loader, int64_t epoch);
/* The epoch's next batch: 1 with *input, *target (new references), 0 when the epoch is
 * over, -1 on error (a failing sample: the message names it and its file). */
int32_t xt_loader_next(xt_loader *loader, xt_tensor **input, xt_tensor **target);

/* ---- files ------------------------------------------------------------------ */

xt_tensor *xt_load_npy(const char *path);               /* C-order <f4, <i8, |u1 */
xt_status xt_save_npy(const char *path, xt_tensor *t);

/* ---- drawing, for figures -------------------------------------------------------
 * Into a uint8 image [H,W,C] in place; colour has C entries. Coordinates are pixels from the
 * top-left corner (0-based positions, fractional allowed); drawing clips to the image. */
xt_status xt_draw_rect(xt_tensor *img, double x0, double y0, double x1, double y1,
                       int32_t ncolour, const uint8_t *colour);
xt_status xt_draw_line(xt_tensor *img, double x0, double y0, double x1, double y1,
                       double thickness, int32_t ncolour, const uint8_t *colour);
/* A small bitmap font (printable ASCII, '\n' starts a line); (x, y) is the top-left corner. */
xt_status xt_draw_text(xt_tensor *img, double x, double y, const char *text, int32_t scale,
                       int32_t ncolour, const uint8_t *colour);
void xt_text_size(const char *text, int32_t scale, int32_t *width, int32_t *height);

/* XT_API_END */

#ifdef __cplusplus
}
#endif

#endif
