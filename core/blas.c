/* blas.c: the only file that calls cblas; every GEMM in xt goes through here. */
#include "internal.h"

#include <cblas.h>

void openblas_set_num_threads(int num_threads);

void xt_sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
              const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
              int64_t ldc)
{
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (blasint)m, (blasint)n, (blasint)k, alpha, a,
                (blasint)lda, b, (blasint)ldb, beta, c, (blasint)ldc);
}

void xt_blas_set_threads(int32_t n) { openblas_set_num_threads(n); }
