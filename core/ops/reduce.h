/*
 * reduce.h: the reduction engine that reduce.c (sum, mean, amax, amin, prod, logsumexp,
 * var) and sum_to.c run on, and the helpers the other reduction files (reduce_index.c,
 * reduce_cumsum.c, softmax.c) share. Private to those files.
 *
 * A plan looks at x through its strides: the kept dims (in x's order, which is the
 * output's order) and the reduced dims (largest stride first), size-1 dims dropped and
 * neighbours merged where the strides allow. It then runs in one of two modes, both
 * vectorised over a contiguous inner loop and parallel over the outputs:
 *
 *   rows     the innermost reduced dim has stride 1 (e.g. sum over the last dim): each
 *            output folds contiguous runs of x into one accumulator, in lanes.
 *   columns  otherwise, or when those runs are short (sum over the last dim of [N,3]):
 *            a block of neighbouring outputs folds one run of x per reduced element,
 *            element by element. Contiguous when the innermost kept dim has stride 1
 *            (sum over leading dims); a small stride is fine too (the short rows).
 *
 * When neither fits, xt_rplan_make copies x to contiguous first. When there are too
 * few outputs to keep the threads busy (a full sum, a sum over dim 0 of [N,3]), the
 * reduction is also cut into chunks whose partial results are combined in chunk order.
 * Every split is decided from the shapes alone, never from the thread count, so results
 * are bitwise the same on any number of threads.
 *
 * Accumulators are 8 bytes (xt_racc): double for float32 input, int64 for int64 input.
 */
#ifndef XT_OPS_REDUCE_H
#define XT_OPS_REDUCE_H

#include "internal.h"

#include <math.h>

/* glibc's libmvec holds SIMD versions of expf/logf; declaring them lets the compiler
 * vectorise the exp-sum loops (see elementwise.h, which does the same for its files). */
#if defined(__GLIBC__) && defined(__x86_64__) && defined(__OPTIMIZE__) && !defined(__FAST_MATH__)
float expf(float) __attribute__((simd("notinbranch")));
float logf(float) __attribute__((simd("notinbranch")));
#endif

typedef struct xt_rplan {
    const char *base;              /* x's first element */
    int64_t esize;                 /* bytes per element of x */
    int64_t n_out;                 /* outputs (product of the kept dims) */
    int64_t n_red;                 /* elements folded into each output */
    int32_t nk, nr;                /* kept / reduced dims after dropping 1s and merging */
    int64_t ksize[XT_MAX_DIMS], kstride[XT_MAX_DIMS];
    int64_t rsize[XT_MAX_DIMS], rstride[XT_MAX_DIMS];
    bool rows;                     /* rows mode, else columns mode (see above) */
    int64_t cstride;               /* columns mode: x's stride between neighbouring outputs */
} xt_rplan;

/* One accumulator: f for float32 input, i for int64. */
typedef union xt_racc {
    double f;
    int64_t i;
} xt_racc;

/* The kernels of one reduction. acc points at accumulators; shift, when the caller
 * passes one to xt_rplan_run, holds one double per output (the max for an exp-sum, the
 * mean for squared deviations) and points at the current output's. */
typedef struct xt_rkernel {
    xt_racc identity;              /* what an accumulator starts from */
    /* rows: fold the contiguous x[0..n) into the single accumulator *acc */
    void (*row)(void *acc, const void *x, int64_t n, const double *shift);
    /* columns: fold x[r * mstride + j * stride] into acc[j], j < n, r < m (shift[j] for
     * output j); the runs in order of r */
    void (*col)(void *acc, const void *x, int64_t n, int64_t stride, int64_t m,
                int64_t mstride, const double *shift);
    /* acc[j] = acc[j] folded with part[j]; acc holds the earlier part of the reduction */
    void (*combine)(void *acc, const void *part, int64_t n);
} xt_rkernel;

/* Plan a reduction of x over the dims whose bit is set in reduce_mask. Returns the
 * tensor the plan reads (+1: x itself or a contiguous copy made outside the graph), to
 * be released after xt_rplan_run; NULL on error. */
xt_tensor *xt_rplan_make(xt_rplan *plan, xt_tensor *x, uint32_t reduce_mask);
/* Fill acc[0..n_out) (the identity, then fold every element). shift: NULL or n_out doubles. */
xt_status xt_rplan_run(const xt_rplan *plan, const xt_rkernel *k, void *acc, const double *shift);
/* Two folds, the second shifted by the first: acc1 = fold k1; shift[o] = mid(acc1[o],
 * n_red); acc2 = fold k2 with shift. A block of outputs goes through both while its input
 * is in cache (the max then exp-sum of logsumexp, the mean then squared deviations of
 * var). shift: n_out doubles, written. */
typedef double (*xt_rmid_fn)(xt_racc first, int64_t n_red);
xt_status xt_rplan_run2(const xt_rplan *plan, const xt_rkernel *k1, void *acc1, xt_rmid_fn mid,
                        double *shift, const xt_rkernel *k2, void *acc2);

/* Kernels (reduce_kernels.c). f32: double accumulators; i64: int64 accumulators that
 * wrap around on overflow like two's-complement arithmetic. */
extern const xt_rkernel xt_rk_f32_sum, xt_rk_f32_prod, xt_rk_f32_max, xt_rk_f32_min;
extern const xt_rkernel xt_rk_f32_sumexp;   /* sum of exp(x - shift) */
extern const xt_rkernel xt_rk_f32_sqdev;    /* sum of (x - shift)^2 */
extern const xt_rkernel xt_rk_i64_sum, xt_rk_i64_prod, xt_rk_i64_max, xt_rk_i64_min;

/* ---- helpers shared by the reduction files (reduce_plan.c) ---------------------- */

/* Checks and normalises dims into a bit mask over x's dims (ndims == 0: all dims; a 0-d
 * tensor accepts dim 0 and -1). Errors name op: out of range, repeated. */
xt_status xt_reduce_mask(const xt_tensor *x, int32_t ndims, const int32_t *dims, const char *op,
                         uint32_t *mask);
/* The output shape of reducing x over mask: reduced dims dropped, or kept as 1. */
void xt_reduce_shape(const xt_tensor *x, uint32_t mask, int32_t keepdim, int32_t *ndim,
                     int64_t *shape);
/* t, shaped like the output of reducing a tensor of (ndim, shape) over mask with keepdim,
 * seen with ndim dims (a view sharing t's storage): size 1 on the reduced dims, or their
 * full size with stride 0 when full (the broadcast back to the input's shape). */
xt_tensor *xt_reduce_keep_view(xt_tensor *t, int32_t ndim, const int64_t *shape, uint32_t mask,
                               int32_t keepdim, bool full);
/* n 8-byte slots (at least one) from the tensor allocator, whose block cache hands a
 * large buffer back without page-faulting it in afresh; *hold owns them (release with
 * xt_storage_release). NULL + error naming op on OOM. */
void *xt_scratch(int64_t n, xt_storage **hold, const char *op);
/* t as a contiguous tensor (+1), copied outside the graph. */
xt_tensor *xt_dense(xt_tensor *t);

/* How many chunks to cut each of `tasks` reductions of n_red elements (work_per_task
 * elements of work each) into: 1 when there are enough tasks for the threads or too
 * little work to share; else enough for about XT_RED_MIN_TASKS tasks in all, each chunk
 * keeping at least XT_PARALLEL_GRAIN elements of work. Shapes only, never the thread
 * count, so the summation order (and so the result) is the same on any machine. */
int64_t xt_reduce_chunks(int64_t tasks, int64_t work_per_task, int64_t n_red);

/* Parallel tasks: enough of them for the threads (XT_RED_MIN_TASKS), and columns taken
 * in blocks of up to XT_RED_COL_BLOCK (8 KB of float32 per run: long contiguous reads,
 * while the block's accumulators stay in L1/L2). */
enum { XT_RED_MIN_TASKS = 64, XT_RED_COL_BLOCK = 2048 };
/* Block width for kernels whose columns are independent (argmax, cumsum along a leading
 * dim of [outer, D, inner]): as wide as XT_RED_COL_BLOCK, narrower (down to 256) while
 * there are fewer than XT_RED_MIN_TASKS blocks. */
int64_t xt_reduce_col_width(int64_t outer, int64_t inner);
/* Rows shorter than this go to columns mode; columns mode takes a stride up to
 * XT_RED_MAX_COL_STRIDE elements (a block of outputs still reads whole cache lines). */
enum { XT_RED_SHORT_ROW = 16, XT_RED_MAX_COL_STRIDE = 16 };

#endif
