/*
 * reduce_kernels.c: the folds the reduction engine runs (reduce.h), for float32 (double
 * accumulators) and int64 (int64 accumulators).
 *
 * A row kernel folds a contiguous run into one accumulator through LANES independent
 * partial results (a fixed-width loop the compiler turns into vector registers), then
 * folds the lanes in order: the result depends only on the run, never on the machine's
 * vector width or the thread count. A column kernel folds m runs (run r at x + r * ms;
 * elements at stride s, and the compiler keeps a vectorised copy of the loop for s == 1)
 * element by element into as many accumulators.
 *
 * max/min propagate NaN, as PyTorch does: once an accumulator holds NaN it keeps it.
 */
#include "reduce.h"

enum { LANES = 16 };

/* ---- float32: sum ------------------------------------------------------------------- */

/* lane[0] + ... + lane[LANES-1] as a tree: short latency, and a fixed order. */
static double sum_lanes(double *lane)
{
    for (int w = LANES / 2; w >= 1; w /= 2)
        for (int j = 0; j < w; j++) lane[j] += lane[j + w];
    return lane[0];
}


static void f32_sum_row(void *acc, const void *xv, int64_t n, const double *shift)
{
    const float *x = xv;
    double s = 0;
    int64_t i = 0;
    if (n >= LANES) {
        double lane[LANES] = {0};
        for (; i + LANES <= n; i += LANES) {
#pragma omp simd
            for (int j = 0; j < LANES; j++) lane[j] += x[i + j];
        }
        s = sum_lanes(lane);
    }
    for (; i < n; i++) s += x[i];
    *(double *)acc += s;
}

static void f32_sum_col(void *acc, const void *xv, int64_t n, int64_t s, int64_t m,
                        int64_t ms, const double *shift)
{
    const float *x = xv;
    double *a = acc;
    int64_t r = 0;
    /* four runs at a time: a quarter of the accumulator traffic */
    for (; r + 4 <= m; r += 4) {
        const float *x0 = x + r * ms, *x1 = x0 + ms, *x2 = x1 + ms, *x3 = x2 + ms;
        for (int64_t j = 0; j < n; j++)
            a[j] += ((double)x0[j * s] + x1[j * s]) + ((double)x2[j * s] + x3[j * s]);
    }
    for (; r < m; r++)
        for (int64_t j = 0; j < n; j++) a[j] += x[r * ms + j * s];
}

static void f64_add(void *acc, const void *part, int64_t n)
{
    double *a = acc;
    const double *b = part;
    for (int64_t j = 0; j < n; j++) a[j] += b[j];
}

const xt_rkernel xt_rk_f32_sum = {{.f = 0.0}, f32_sum_row, f32_sum_col, f64_add};

/* ---- float32: prod ------------------------------------------------------------------- */

static void f32_prod_row(void *acc, const void *xv, int64_t n, const double *shift)
{
    const float *x = xv;
    double s = 1.0;
    int64_t i = 0;
    if (n >= LANES) {
        double lane[LANES];
        for (int j = 0; j < LANES; j++) lane[j] = 1.0;
        for (; i + LANES <= n; i += LANES) {
#pragma omp simd
            for (int j = 0; j < LANES; j++) lane[j] *= x[i + j];
        }
        for (int j = 0; j < LANES; j++) s *= lane[j];
    }
    for (; i < n; i++) s *= x[i];
    *(double *)acc *= s;
}

static void f32_prod_col(void *acc, const void *xv, int64_t n, int64_t s, int64_t m,
                        int64_t ms, const double *shift)
{
    double *a = acc;
    for (int64_t r = 0; r < m; r++) {
        const float *x = (const float *)xv + r * ms;
        for (int64_t j = 0; j < n; j++) a[j] *= x[j * s];
    }
}

static void f64_mul(void *acc, const void *part, int64_t n)
{
    double *a = acc;
    const double *b = part;
    for (int64_t j = 0; j < n; j++) a[j] *= b[j];
}

const xt_rkernel xt_rk_f32_prod = {{.f = 1.0}, f32_prod_row, f32_prod_col, f64_mul};

/* ---- float32: max and min ------------------------------------------------------------ */

/* a folded with b: b when it beats a or is NaN (so a NaN, once in, stays) */
static inline double fold_max(double a, double b) { return b > a || b != b ? b : a; }
static inline double fold_min(double a, double b) { return b < a || b != b ? b : a; }
static inline float fold_maxf(float a, float b) { return b > a || b != b ? b : a; }
static inline float fold_minf(float a, float b) { return b < a || b != b ? b : a; }

static void f32_max_row(void *acc, const void *xv, int64_t n, const double *shift)
{
    const float *x = xv;
    double m = *(double *)acc;
    int64_t i = 0;
    if (n >= LANES) {
        float lane[LANES];
        for (int j = 0; j < LANES; j++) lane[j] = x[j];
        for (i = LANES; i + LANES <= n; i += LANES) {
#pragma omp simd
            for (int j = 0; j < LANES; j++) lane[j] = fold_maxf(lane[j], x[i + j]);
        }
        for (int j = 0; j < LANES; j++) m = fold_max(m, (double)lane[j]);
    }
    for (; i < n; i++) m = fold_max(m, (double)x[i]);
    *(double *)acc = m;
}

static void f32_min_row(void *acc, const void *xv, int64_t n, const double *shift)
{
    const float *x = xv;
    double m = *(double *)acc;
    int64_t i = 0;
    if (n >= LANES) {
        float lane[LANES];
        for (int j = 0; j < LANES; j++) lane[j] = x[j];
        for (i = LANES; i + LANES <= n; i += LANES) {
#pragma omp simd
            for (int j = 0; j < LANES; j++) lane[j] = fold_minf(lane[j], x[i + j]);
        }
        for (int j = 0; j < LANES; j++) m = fold_min(m, (double)lane[j]);
    }
    for (; i < n; i++) m = fold_min(m, (double)x[i]);
    *(double *)acc = m;
}

static void f32_max_col(void *acc, const void *xv, int64_t n, int64_t s, int64_t m,
                        int64_t ms, const double *shift)
{
    const float *x = xv;
    double *a = acc;
    int64_t r = 0;
    for (; r + 4 <= m; r += 4) {   /* four runs per pass over the accumulators */
        const float *x0 = x + r * ms, *x1 = x0 + ms, *x2 = x1 + ms, *x3 = x2 + ms;
        for (int64_t j = 0; j < n; j++) {
            double v = fold_max(fold_max(a[j], (double)x0[j * s]), (double)x1[j * s]);
            a[j] = fold_max(fold_max(v, (double)x2[j * s]), (double)x3[j * s]);
        }
    }
    for (; r < m; r++)
        for (int64_t j = 0; j < n; j++) a[j] = fold_max(a[j], (double)x[r * ms + j * s]);
}

static void f32_min_col(void *acc, const void *xv, int64_t n, int64_t s, int64_t m,
                        int64_t ms, const double *shift)
{
    const float *x = xv;
    double *a = acc;
    int64_t r = 0;
    for (; r + 4 <= m; r += 4) {   /* four runs per pass over the accumulators */
        const float *x0 = x + r * ms, *x1 = x0 + ms, *x2 = x1 + ms, *x3 = x2 + ms;
        for (int64_t j = 0; j < n; j++) {
            double v = fold_min(fold_min(a[j], (double)x0[j * s]), (double)x1[j * s]);
            a[j] = fold_min(fold_min(v, (double)x2[j * s]), (double)x3[j * s]);
        }
    }
    for (; r < m; r++)
        for (int64_t j = 0; j < n; j++) a[j] = fold_min(a[j], (double)x[r * ms + j * s]);
}

static void f64_max(void *acc, const void *part, int64_t n)
{
    double *a = acc;
    const double *b = part;
    for (int64_t j = 0; j < n; j++) a[j] = fold_max(a[j], b[j]);
}

static void f64_min(void *acc, const void *part, int64_t n)
{
    double *a = acc;
    const double *b = part;
    for (int64_t j = 0; j < n; j++) a[j] = fold_min(a[j], b[j]);
}

const xt_rkernel xt_rk_f32_max = {{.f = -INFINITY}, f32_max_row, f32_max_col, f64_max};
const xt_rkernel xt_rk_f32_min = {{.f = INFINITY}, f32_min_row, f32_min_col, f64_min};

/* ---- float32: sum of exp(x - shift), sum of (x - shift)^2 -------------------------- */

static void f32_sumexp_row(void *acc, const void *xv, int64_t n, const double *shift)
{
    const float *x = xv;
    float m = (float)*shift;
    double s = 0;
    int64_t i = 0;
    if (n >= LANES) {
        double lane[LANES] = {0};
        for (; i + LANES <= n; i += LANES) {
#pragma omp simd
            for (int j = 0; j < LANES; j++) lane[j] += expf(x[i + j] - m);
        }
        s = sum_lanes(lane);
    }
    for (; i < n; i++) s += expf(x[i] - m);
    *(double *)acc += s;
}

static void f32_sumexp_col(void *acc, const void *xv, int64_t n, int64_t s, int64_t m,
                           int64_t ms, const double *shift)
{
    const float *x = xv;
    double *a = acc;
    int64_t r = 0;
    for (; r + 4 <= m; r += 4) {   /* four runs per pass over the accumulators */
        const float *x0 = x + r * ms, *x1 = x0 + ms, *x2 = x1 + ms, *x3 = x2 + ms;
        for (int64_t j = 0; j < n; j++) {
            float sh = (float)shift[j];
            a[j] += ((double)expf(x0[j * s] - sh) + expf(x1[j * s] - sh)) +
                    ((double)expf(x2[j * s] - sh) + expf(x3[j * s] - sh));
        }
    }
    for (; r < m; r++)
        for (int64_t j = 0; j < n; j++) a[j] += expf(x[r * ms + j * s] - (float)shift[j]);
}

const xt_rkernel xt_rk_f32_sumexp = {{.f = 0.0}, f32_sumexp_row, f32_sumexp_col, f64_add};

static void f32_sqdev_row(void *acc, const void *xv, int64_t n, const double *shift)
{
    const float *x = xv;
    double m = *shift;
    double s = 0;
    int64_t i = 0;
    if (n >= LANES) {
        double lane[LANES] = {0};
        for (; i + LANES <= n; i += LANES) {
#pragma omp simd
            for (int j = 0; j < LANES; j++) {
                double d = x[i + j] - m;
                lane[j] += d * d;
            }
        }
        s = sum_lanes(lane);
    }
    for (; i < n; i++) s += (x[i] - m) * (x[i] - m);
    *(double *)acc += s;
}

static void f32_sqdev_col(void *acc, const void *xv, int64_t n, int64_t s, int64_t m,
                          int64_t ms, const double *shift)
{
    const float *x = xv;
    double *a = acc;
    int64_t r = 0;
    for (; r + 4 <= m; r += 4) {   /* four runs per pass over the accumulators */
        const float *x0 = x + r * ms, *x1 = x0 + ms, *x2 = x1 + ms, *x3 = x2 + ms;
        for (int64_t j = 0; j < n; j++) {
            double d0 = x0[j * s] - shift[j], d1 = x1[j * s] - shift[j];
            double d2 = x2[j * s] - shift[j], d3 = x3[j * s] - shift[j];
            a[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
        }
    }
    for (; r < m; r++)
        for (int64_t j = 0; j < n; j++) {
            double d = x[r * ms + j * s] - shift[j];
            a[j] += d * d;
        }
}

const xt_rkernel xt_rk_f32_sqdev = {{.f = 0.0}, f32_sqdev_row, f32_sqdev_col, f64_add};

/* ---- int64 ----------------------------------------------------------------------------
 * Sums and products run in uint64_t, where overflow wraps (defined), then read back. */


static void i64_sum_row(void *acc, const void *xv, int64_t n, const double *shift)
{
    const uint64_t *x = xv;
    uint64_t s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i];   /* integer: any order gives the same sum */
    *(uint64_t *)acc += s;
}

static void i64_sum_col(void *acc, const void *xv, int64_t n, int64_t s, int64_t m,
                        int64_t ms, const double *shift)
{
    uint64_t *a = acc;
    for (int64_t r = 0; r < m; r++) {
        const uint64_t *x = (const uint64_t *)xv + r * ms;
        for (int64_t j = 0; j < n; j++) a[j] += x[j * s];
    }
}

static void i64_add(void *acc, const void *part, int64_t n) { i64_sum_col(acc, part, n, 1, 1, 0, NULL); }

const xt_rkernel xt_rk_i64_sum = {{.i = 0}, i64_sum_row, i64_sum_col, i64_add};

static void i64_prod_col(void *acc, const void *xv, int64_t n, int64_t s, int64_t m,
                        int64_t ms, const double *shift)
{
    uint64_t *a = acc;
    for (int64_t r = 0; r < m; r++) {
        const uint64_t *x = (const uint64_t *)xv + r * ms;
        for (int64_t j = 0; j < n; j++) a[j] *= x[j * s];
    }
}

static void i64_prod_row(void *acc, const void *xv, int64_t n, const double *shift)
{
    const uint64_t *x = xv;
    uint64_t s = 1;
    for (int64_t i = 0; i < n; i++) s *= x[i];
    *(uint64_t *)acc *= s;
}

static void i64_mul(void *acc, const void *part, int64_t n) { i64_prod_col(acc, part, n, 1, 1, 0, NULL); }

const xt_rkernel xt_rk_i64_prod = {{.i = 1}, i64_prod_row, i64_prod_col, i64_mul};

static void i64_max_row(void *acc, const void *xv, int64_t n, const double *shift)
{
    const int64_t *x = xv;
    int64_t m = *(int64_t *)acc;
    for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    *(int64_t *)acc = m;
}

static void i64_min_row(void *acc, const void *xv, int64_t n, const double *shift)
{
    const int64_t *x = xv;
    int64_t m = *(int64_t *)acc;
    for (int64_t i = 0; i < n; i++) m = x[i] < m ? x[i] : m;
    *(int64_t *)acc = m;
}

static void i64_max_col(void *acc, const void *xv, int64_t n, int64_t s, int64_t m,
                        int64_t ms, const double *shift)
{
    int64_t *a = acc;
    for (int64_t r = 0; r < m; r++) {
        const int64_t *x = (const int64_t *)xv + r * ms;
        for (int64_t j = 0; j < n; j++) a[j] = x[j * s] > a[j] ? x[j * s] : a[j];
    }
}

static void i64_min_col(void *acc, const void *xv, int64_t n, int64_t s, int64_t m,
                        int64_t ms, const double *shift)
{
    int64_t *a = acc;
    for (int64_t r = 0; r < m; r++) {
        const int64_t *x = (const int64_t *)xv + r * ms;
        for (int64_t j = 0; j < n; j++) a[j] = x[j * s] < a[j] ? x[j * s] : a[j];
    }
}

static void i64_max(void *acc, const void *part, int64_t n) { i64_max_col(acc, part, n, 1, 1, 0, NULL); }
static void i64_min(void *acc, const void *part, int64_t n) { i64_min_col(acc, part, n, 1, 1, 0, NULL); }

const xt_rkernel xt_rk_i64_max = {{.i = INT64_MIN}, i64_max_row, i64_max_col, i64_max};
const xt_rkernel xt_rk_i64_min = {{.i = INT64_MAX}, i64_min_row, i64_min_col, i64_min};
