/*
 * context.c: the one explicit piece of process state: thread count, grad
 * mode, memory counters and the default generator. Grad mode is per thread
 * (worker threads never record graphs); the rest is process-wide.
 */
#include "internal.h"

#include <omp.h>

static int32_t num_threads;                 /* 0 until first set */
static _Thread_local int32_t grad_disabled; /* 0: grad mode on (the default) */
static int64_t live_bytes;                  /* atomic */
static int64_t allocated_total;             /* atomic */
static xt_rng default_rng = {0, 0};

void xt_set_num_threads(int32_t n)
{
    if (n <= 0) n = omp_get_num_procs();
    num_threads = n;
    omp_set_num_threads(n);
    xt_blas_set_threads(n);
}

int32_t xt_get_num_threads(void)
{
    return num_threads > 0 ? num_threads : omp_get_max_threads();
}

int32_t xt_is_grad_enabled(void) { return !grad_disabled; }

int32_t xt_set_grad_enabled(int32_t enabled)
{
    int32_t previous = !grad_disabled;
    grad_disabled = !enabled;
    return previous;
}

void xt_count_alloc(int64_t nbytes)
{
    __atomic_add_fetch(&live_bytes, nbytes, __ATOMIC_RELAXED);
    __atomic_add_fetch(&allocated_total, nbytes, __ATOMIC_RELAXED);
}

void xt_count_free(int64_t nbytes) { __atomic_sub_fetch(&live_bytes, nbytes, __ATOMIC_RELAXED); }

int64_t xt_live_bytes(void) { return __atomic_load_n(&live_bytes, __ATOMIC_RELAXED); }
int64_t xt_allocated_bytes_total(void)
{
    return __atomic_load_n(&allocated_total, __ATOMIC_RELAXED);
}

xt_rng *xt_default_rng(void) { return &default_rng; }

void xt_rng_seed(xt_rng *rng, uint64_t seed)
{
    rng->seed = seed;
    rng->offset = 0;
}

const char *xt_version(void) { return "0.1.0"; }

static int32_t message_base;

void xt_set_message_base(int32_t base) { message_base = base; }

int64_t xt_shown(int64_t zero_based) { return zero_based + message_base; }
