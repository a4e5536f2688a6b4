/*
 * elementwise.h: the parallel strided loop that the element-wise op files
 * (elementwise.c: binary ops, where, masked_fill; unary.c: unary ops, clamp,
 * leaky_relu) share. Private to those two files.
 *
 * A loop runs a kernel over up to XT_ITER_MAX_OPS operands that share one
 * iteration shape; operand 0 is the output (or the tensor written in place),
 * the others broadcast to it. The kernel is called once per run of elements:
 * p[k] points at operand k's first element of the run, s[k] is its stride in
 * elements within the run (1: contiguous, 0: broadcast). A contiguous
 * same-shape job is a single run that the loop splits across threads.
 */
#ifndef XT_OPS_ELEMENTWISE_H
#define XT_OPS_ELEMENTWISE_H

#include "internal.h"

#include <math.h>

/* glibc's libmvec holds SIMD versions of these float functions (within 1-2 ulp
 * of the scalar ones; libm.so links it as needed). Declaring them as SIMD
 * functions lets the compiler vectorise the element-wise loops that call them,
 * which it otherwise does only under -ffast-math: exp, tanh, gelu and friends run
 * 10-30x faster. */
#if defined(__GLIBC__) && defined(__x86_64__) && defined(__OPTIMIZE__) && !defined(__FAST_MATH__)
#define XT_SIMD_MATH __attribute__((simd("notinbranch")))
float expf(float) XT_SIMD_MATH;
float expm1f(float) XT_SIMD_MATH;
float logf(float) XT_SIMD_MATH;
float log1pf(float) XT_SIMD_MATH;
float powf(float, float) XT_SIMD_MATH;
float sinf(float) XT_SIMD_MATH;
float cosf(float) XT_SIMD_MATH;
float tanhf(float) XT_SIMD_MATH;
float erfcf(float) XT_SIMD_MATH;
#endif

typedef void (*xt_run_fn)(const void *ctx, char *const *p, const int64_t *s, int64_t n);

typedef struct xt_loop {
    xt_iter it;
    char *base[XT_ITER_MAX_OPS];
    int64_t esize[XT_ITER_MAX_OPS];    /* bytes per element */
} xt_loop;

/* ops[0] has the iteration shape; ops[1..nops-1] broadcast to it. */
void xt_loop_init(xt_loop *l, int32_t nops, xt_tensor *const *ops);
/* Calls fn(ctx, ...) over every run, on several threads above XT_PARALLEL_GRAIN elements. */
void xt_loop_run(const xt_loop *l, xt_run_fn fn, const void *ctx);

#endif
