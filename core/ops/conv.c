/*
 * conv.c: 2-D convolution with PyTorch's semantics (cross-correlation, zero padding,
 * stride, dilation, groups), forward and backward side by side.
 *
 * The general path lowers each image and group to one GEMM:
 *   cols [K = Cin/g*kh*kw, Ho*Wo]   im2col of the image's group channels
 *   out_g [Cout/g, Ho*Wo] = w_g [Cout/g, K] x cols
 * Columns are built a chunk of output rows at a time, so the buffer stays bounded for
 * large images; (image, chunk) tasks are spread over the OpenMP threads (see make_plan).
 *
 * A 1x1, stride-1, unpadded convolution needs no im2col: the image already is cols. A
 * depthwise convolution with one output per input channel has GEMMs of one row, so it runs
 * a direct kernel instead.
 *
 * Backward recomputes the columns from the saved input rather than keeping the im2col of
 * the whole batch alive, so memory stays linear in the input:
 *   dw_g += dout_g [Cout/g, P] x cols^T [P, K]     (per-thread partial sums, added at the end)
 *   dcols = w_g^T [K, Cout/g] x dout_g;  dx += col2im(dcols)
 *   db[c] = sum of dout[:, c] over N, Ho, Wo
 */
#include "internal.h"

#include <omp.h>
#include <string.h>

typedef struct conv_geom {
    int64_t n, cin, h, w;         /* input [n, cin, h, w] */
    int64_t cout, kh, kw;         /* weight [cout, cig, kh, kw] */
    int64_t ho, wo;               /* output [n, cout, ho, wo] */
    int64_t sh, sw, ph, pw, dh, dw;
    int64_t groups, cig, cog;     /* channels per group: in, out */
    int64_t k;                    /* cig * kh * kw: rows of cols, columns of w_g */
    int64_t p;                    /* ho * wo */
} conv_geom;

/* Output positions o in [0, n_out) with 0 <= o * stride + off < size: [*lo, *hi). */
static void valid_range(int64_t off, int64_t stride, int64_t size, int64_t n_out, int64_t *lo,
                        int64_t *hi)
{
    int64_t a = off >= 0 ? 0 : (-off + stride - 1) / stride;
    int64_t b = size - off <= 0 ? 0 : (size - off - 1) / stride + 1;
    if (b > n_out) b = n_out;
    if (a > b) a = b;
    *lo = a;
    *hi = b;
}

static bool is_pointwise(const conv_geom *g)
{
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0;
}

/* Each output channel reads its own input channel: the direct kernel (a GEMM would have one
 * row). When several outputs read the same channel (a stem on a 1-channel image: cin 1,
 * cout 32) the GEMM over its columns wins: 4x for that stem (bench/run.lua stem), and 1.2x
 * already at two outputs per channel (groups 32, 32 -> 64 channels, 3x3 on 28x28). */
static bool is_direct_depthwise(const conv_geom *g)
{
    return g->cig == 1 && g->cog == 1;
}

/* ---- im2col / col2im over output rows [oy0, oy1) --------------------------------------
 * x: nc channels [nc, h, w] of one image; cols [nc*kh*kw, (oy1-oy0)*wo] with row stride ld. */

static void im2col(const conv_geom *g, int64_t nc, const float *x, int64_t oy0, int64_t oy1,
                   float *cols, int64_t ld)
{
    const int64_t wo = g->wo;
    for (int64_t c = 0; c < nc; c++) {
        const float *plane = x + c * g->h * g->w;
        for (int64_t i = 0; i < g->kh; i++) {
            for (int64_t j = 0; j < g->kw; j++) {
                float *dst = cols + ((c * g->kh + i) * g->kw + j) * ld;
                const int64_t xoff = j * g->dw - g->pw;
                int64_t lo, hi;
                valid_range(xoff, g->sw, g->w, wo, &lo, &hi);
                for (int64_t oy = oy0; oy < oy1; oy++) {
                    float *d = dst + (oy - oy0) * wo;
                    const int64_t iy = oy * g->sh - g->ph + i * g->dh;
                    if (iy < 0 || iy >= g->h) {
                        memset(d, 0, (size_t)wo * sizeof *d);
                        continue;
                    }
                    const float *row = plane + iy * g->w + xoff;
                    for (int64_t ox = 0; ox < lo; ox++) d[ox] = 0;
                    if (g->sw == 1) {
                        for (int64_t ox = lo; ox < hi; ox++) d[ox] = row[ox];
                    } else {
                        for (int64_t ox = lo; ox < hi; ox++) d[ox] = row[ox * g->sw];
                    }
                    for (int64_t ox = hi; ox < wo; ox++) d[ox] = 0;
                }
            }
        }
    }
}

/* dx [nc, h, w] += col2im(cols [nc*kh*kw, (oy1-oy0)*wo], row stride ld). */
static void col2im_add(const conv_geom *g, int64_t nc, const float *cols, int64_t ld,
                       int64_t oy0, int64_t oy1, float *dx)
{
    const int64_t wo = g->wo;
    for (int64_t c = 0; c < nc; c++) {
        float *plane = dx + c * g->h * g->w;
        for (int64_t i = 0; i < g->kh; i++) {
            for (int64_t j = 0; j < g->kw; j++) {
                const float *src = cols + ((c * g->kh + i) * g->kw + j) * ld;
                const int64_t xoff = j * g->dw - g->pw;
                int64_t lo, hi;
                valid_range(xoff, g->sw, g->w, wo, &lo, &hi);
                for (int64_t oy = oy0; oy < oy1; oy++) {
                    const int64_t iy = oy * g->sh - g->ph + i * g->dh;
                    if (iy < 0 || iy >= g->h) continue;
                    const float *s = src + (oy - oy0) * wo;
                    float *row = plane + iy * g->w + xoff;
                    if (g->sw == 1) {
                        for (int64_t ox = lo; ox < hi; ox++) row[ox] += s[ox];
                    } else {
                        for (int64_t ox = lo; ox < hi; ox++) row[ox * g->sw] += s[ox];
                    }
                }
            }
        }
    }
}

/* ---- work split ----------------------------------------------------------------------------
 * Every GEMM runs single-threaded inside one OpenMP task: spreading whole images over the
 * two cores measured ~20% faster than one OpenBLAS-threaded GEMM per image, and a batch of
 * one image ran at a third of the speed with OpenBLAS threading. A task is one image's
 * chunk of output rows; the chunks are at most ~1M floats (4 MB) of columns per thread,
 * and are made smaller when the batch alone gives too few tasks to keep every thread busy
 * (smaller chunks that fit the L2 cache measured no faster otherwise: OpenBLAS packs its
 * operands anyway). */

typedef struct conv_plan {
    int nt;               /* threads */
    int64_t rows;         /* output rows per chunk */
    int64_t chunks;       /* chunks per image */
    int64_t per_thread;   /* floats of column buffer per thread */
} conv_plan;

/* True when n tasks keep nt threads about evenly busy. */
static bool balanced(int64_t n, int nt) { return n % nt == 0 || n >= 4 * nt; }

static conv_plan make_plan(const conv_geom *g)
{
    conv_plan pl;
    double macs = (double)g->n * (double)g->cout * (double)g->p * (double)g->k;
    pl.nt = macs < 4e6 ? 1 : omp_get_max_threads();
    int64_t cols = ((int64_t)1 << 20) / g->k;
    int64_t rows = cols / g->wo;
    if (rows < 1) rows = 1;
    if (rows > g->ho) rows = g->ho;
    int64_t chunks = (g->ho + rows - 1) / rows;
    while (pl.nt > 1 && !balanced(g->n * chunks, pl.nt) && chunks < g->ho) {
        chunks++;
        rows = (g->ho + chunks - 1) / chunks;
    }
    pl.rows = rows;
    pl.chunks = (g->ho + rows - 1) / rows;
    pl.per_thread = is_pointwise(g) ? 0 : g->k * rows * g->wo;
    return pl;
}

/* Scratch floats, from the storage allocator (cached, counted); NULL + error on OOM. */
static xt_storage *scratch(int64_t nfloats)
{
    return xt_storage_new((nfloats > 0 ? nfloats : 1) * (int64_t)sizeof(float));
}

/* The columns of channels [c0, c0+nc) of image x, output rows [oy0, oy1): built into buf,
 * or, for a pointwise conv, x itself (*ld = p). */
static const float *columns(const conv_geom *g, const float *x, int64_t c0, int64_t nc,
                            int64_t oy0, int64_t oy1, float *buf, int64_t *ld)
{
    const float *xc = x + c0 * g->h * g->w;
    if (is_pointwise(g)) {
        *ld = g->p;
        return xc + oy0 * g->wo;
    }
    *ld = (oy1 - oy0) * g->wo;
    im2col(g, nc, xc, oy0, oy1, buf, *ld);
    return buf;
}

/* ---- forward ---------------------------------------------------------------------------- */

/* out [n, cout, p] from x [n, cin, h, w]: one task per (image, chunk of output rows). */
static xt_status forward_gemm(const conv_geom *g, const float *x, const float *w,
                              const float *b, float *out)
{
    conv_plan pl = make_plan(g);
    xt_storage *buf = scratch(pl.per_thread * pl.nt);
    if (!buf) return xt_last_status();
    float *scratch_cols = buf->data;
#pragma omp parallel for num_threads(pl.nt) schedule(static) if (pl.nt > 1)
    for (int64_t task = 0; task < g->n * pl.chunks; task++) {
        const int64_t n = task / pl.chunks, oy0 = task % pl.chunks * pl.rows;
        const int64_t oy1 = oy0 + pl.rows < g->ho ? oy0 + pl.rows : g->ho;
        const int64_t np = (oy1 - oy0) * g->wo;
        float *cols = scratch_cols + omp_get_thread_num() * pl.per_thread;
        const float *xn = x + n * g->cin * g->h * g->w;
        float *on = out + n * g->cout * g->p + oy0 * g->wo;
        /* the GEMM adds onto the bias (with beta = 0 it would clear the output first, and
         * the bias would take another pass) */
        for (int64_t o = 0; b && o < g->cout; o++) {
            float *row = on + o * g->p, bo = b[o];
            for (int64_t i = 0; i < np; i++) row[i] = bo;
        }
        for (int64_t grp = 0; grp < g->groups; grp++) {
            int64_t ld;
            const float *c = columns(g, xn, grp * g->cig, g->cig, oy0, oy1, cols, &ld);
            xt_sgemm(false, false, g->cog, np, g->k, 1.0f, w + grp * g->cog * g->k, g->k, c, ld,
                     b ? 1.0f : 0.0f, on + grp * g->cog * g->p, g->p);
        }
    }
    xt_storage_release(buf);
    return XT_OK;
}

/* Depthwise (cig == 1): output channel o reads input channel o / cog. */
static void forward_depthwise(const conv_geom *g, const float *x, const float *w,
                              const float *b, float *out)
{
    const int64_t planes = g->n * g->cout;
    const int64_t kw = g->kw;
    int64_t lo[kw], hi[kw];
    for (int64_t j = 0; j < kw; j++) valid_range(j * g->dw - g->pw, g->sw, g->w, g->wo, &lo[j], &hi[j]);
#pragma omp parallel for schedule(static) if (planes * g->p * g->kh * kw > XT_PARALLEL_GRAIN)
    for (int64_t pl = 0; pl < planes; pl++) {
        const int64_t n = pl / g->cout, o = pl % g->cout;
        const float *xp = x + (n * g->cin + o / g->cog) * g->h * g->w;
        const float *wp = w + o * g->kh * kw;
        float *op = out + pl * g->p;
        const float bias = b ? b[o] : 0.0f;
        for (int64_t oy = 0; oy < g->ho; oy++) {
            float *orow = op + oy * g->wo;
            for (int64_t ox = 0; ox < g->wo; ox++) orow[ox] = bias;
            for (int64_t i = 0; i < g->kh; i++) {
                const int64_t iy = oy * g->sh - g->ph + i * g->dh;
                if (iy < 0 || iy >= g->h) continue;
                for (int64_t j = 0; j < kw; j++) {
                    const float *row = xp + iy * g->w + j * g->dw - g->pw;
                    const float wv = wp[i * kw + j];
                    if (g->sw == 1) {
#pragma omp simd
                        for (int64_t ox = lo[j]; ox < hi[j]; ox++) orow[ox] += wv * row[ox];
                    } else {
                        for (int64_t ox = lo[j]; ox < hi[j]; ox++)
                            orow[ox] += wv * row[ox * g->sw];
                    }
                }
            }
        }
    }
}

/* ---- backward ----------------------------------------------------------------------------- */

/* dw partial sums, one [cout, k] block per thread, added into dw at the end. When dx is
 * wanted and the images split evenly, the same task also does dx, reusing the columns'
 * buffer for dcols (an image's dx must stay within one task: its chunks overlap). */
static void backward_dw_task(const conv_geom *g, const conv_plan *pl, const float *x,
                             const float *w, const float *dout, int64_t task, float *cols,
                             float *dw_acc, double *db_acc, float *dx)
{
    const int64_t n = task / pl->chunks, oy0 = task % pl->chunks * pl->rows;
    const int64_t oy1 = oy0 + pl->rows < g->ho ? oy0 + pl->rows : g->ho;
    const int64_t np = (oy1 - oy0) * g->wo;
    const float *xn = x + n * g->cin * g->h * g->w;
    const float *dn = dout + n * g->cout * g->p + oy0 * g->wo;
    float *dxn = dx ? dx + n * g->cin * g->h * g->w : NULL;
    if (dxn && oy0 == 0 && !is_pointwise(g))
        memset(dxn, 0, (size_t)(g->cin * g->h * g->w) * sizeof(float));
    for (int64_t grp = 0; grp < g->groups; grp++) {
        const float *dg = dn + grp * g->cog * g->p;
        const float *wg = w + grp * g->cog * g->k;
        if (dw_acc) {
            int64_t ld;
            const float *c = columns(g, xn, grp * g->cig, g->cig, oy0, oy1, cols, &ld);
            xt_sgemm(false, true, g->cog, g->k, np, 1.0f, dg, g->p, c, ld, 1.0f,
                     dw_acc + grp * g->cog * g->k, g->k);
        }
        for (int64_t o = 0; db_acc && o < g->cog; o++) { /* the bias while dout is in cache */
            const float *row = dg + o * g->p;
            float sum = 0;
#pragma omp simd reduction(+ : sum)
            for (int64_t i = 0; i < np; i++) sum += row[i];
            db_acc[grp * g->cog + o] += sum;
        }
        if (!dxn) continue;
        float *dxg = dxn + grp * g->cig * g->h * g->w;
        if (is_pointwise(g)) {
            xt_sgemm(true, false, g->k, np, g->cog, 1.0f, wg, g->k, dg, g->p, 0.0f,
                     dxg + oy0 * g->wo, g->p);
        } else {
            xt_sgemm(true, false, g->k, np, g->cog, 1.0f, wg, g->k, dg, g->p, 0.0f, cols, np);
            col2im_add(g, g->cig, cols, np, oy0, oy1, dxg);
        }
    }
}

/* dx of image n, group grp, input channels [c0, c1) over every chunk: tasks that split an
 * image by channel, for batches too small to split by image. */
static void backward_dx_task(const conv_geom *g, const conv_plan *pl, const float *w,
                             const float *dout, int64_t n, int64_t grp, int64_t c0, int64_t c1,
                             float *cols, float *dx)
{
    const int64_t kk = g->kh * g->kw, m = (c1 - c0) * kk;
    const float *wg = w + grp * g->cog * g->k + c0 * kk;      /* columns [c0*kk, c1*kk) of w_g */
    const float *dg = dout + (n * g->cout + grp * g->cog) * g->p;
    float *dxc = dx + (n * g->cin + grp * g->cig + c0) * g->h * g->w;
    if (is_pointwise(g)) {
        xt_sgemm(true, false, m, g->p, g->cog, 1.0f, wg, g->k, dg, g->p, 0.0f, dxc, g->p);
        return;
    }
    memset(dxc, 0, (size_t)((c1 - c0) * g->h * g->w) * sizeof(float));
    for (int64_t oy0 = 0; oy0 < g->ho; oy0 += pl->rows) {
        const int64_t oy1 = oy0 + pl->rows < g->ho ? oy0 + pl->rows : g->ho;
        const int64_t np = (oy1 - oy0) * g->wo;
        xt_sgemm(true, false, m, np, g->cog, 1.0f, wg, g->k, dg + oy0 * g->wo, g->p, 0.0f, cols,
                 np);
        col2im_add(g, c1 - c0, cols, np, oy0, oy1, dxc);
    }
}

/* dx, dw and, with dw, db (in the same tasks; *db_done tells whether it was made). */
static xt_status backward_gemm(const conv_geom *g, const float *x, const float *w,
                               const float *dout, float *dx, float *dw, float *db, bool *db_done)
{
    conv_plan pl = make_plan(g);
    const int nt = pl.nt;
    /* dx rides along with dw when every task is a whole image and they split evenly */
    const bool by_image = pl.chunks == 1 && balanced(g->n, nt);
    const int64_t wsize = g->cout * g->k;
    if (!dw) db = NULL;
    *db_done = db != NULL;
    /* per thread: db partials (doubles, first: aligned), columns, dw partials */
    const int64_t bias_floats = db ? 2 * g->cout * nt : 0;
    xt_storage *buf = scratch(bias_floats + pl.per_thread * nt + (dw ? wsize * nt : 0));
    if (!buf) return xt_last_status();
    double *bias_partial = db ? (double *)buf->data : NULL;
    float *scratch_cols = (float *)buf->data + bias_floats, *partial = scratch_cols + pl.per_thread * nt;
    if (dw) memset(partial, 0, (size_t)(wsize * nt) * sizeof(float));
    if (db) memset(bias_partial, 0, (size_t)(g->cout * nt) * sizeof(double));
    if (dw || by_image) {
        float *dx_here = by_image ? dx : NULL;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t task = 0; task < g->n * pl.chunks; task++) {
            const int t = omp_get_thread_num();
            backward_dw_task(g, &pl, x, w, dout, task, scratch_cols + t * pl.per_thread,
                             dw ? partial + t * wsize : NULL, db ? bias_partial + t * g->cout : NULL,
                             dx_here);
        }
    }
    if (dx && !by_image) {
        /* split each group's channels into blocks so that the tasks balance */
        int64_t blocks = 1;
        while (nt > 1 && !balanced(g->n * g->groups * blocks, nt) && blocks < g->cig) blocks++;
        const int64_t bsize = (g->cig + blocks - 1) / blocks;
        blocks = (g->cig + bsize - 1) / bsize;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t task = 0; task < g->n * g->groups * blocks; task++) {
            const int64_t n = task / (g->groups * blocks), grp = task / blocks % g->groups;
            const int64_t c0 = task % blocks * bsize, c1 = c0 + bsize < g->cig ? c0 + bsize : g->cig;
            backward_dx_task(g, &pl, w, dout, n, grp, c0, c1,
                             scratch_cols + omp_get_thread_num() * pl.per_thread, dx);
        }
    }
    if (dw) {
        for (int64_t i = 0; i < wsize; i++) {
            float s = 0;
            for (int t = 0; t < nt; t++) s += partial[t * wsize + i];
            dw[i] = s;
        }
    }
    for (int64_t o = 0; db && o < g->cout; o++) {
        double s = 0;
        for (int t = 0; t < nt; t++) s += bias_partial[t * g->cout + o];
        db[o] = (float)s;
    }
    xt_storage_release(buf);
    return XT_OK;
}

/* dx [n, cin, h, w] = sum over output channels reading each input channel. */
static void backward_depthwise_dx(const conv_geom *g, const float *w, const float *dout,
                                  float *dx)
{
    const int64_t planes = g->n * g->cin;
    const int64_t kw = g->kw;
    int64_t lo[kw], hi[kw];
    for (int64_t j = 0; j < kw; j++) valid_range(j * g->dw - g->pw, g->sw, g->w, g->wo, &lo[j], &hi[j]);
#pragma omp parallel for schedule(static) if (planes * g->p * g->kh * kw > XT_PARALLEL_GRAIN)
    for (int64_t pl = 0; pl < planes; pl++) {
        const int64_t n = pl / g->cin, c = pl % g->cin;
        float *dxp = dx + pl * g->h * g->w;
        memset(dxp, 0, (size_t)(g->h * g->w) * sizeof(float));
        for (int64_t o = c * g->cog; o < (c + 1) * g->cog; o++) {
            const float *dp = dout + (n * g->cout + o) * g->p;
            const float *wp = w + o * g->kh * kw;
            for (int64_t oy = 0; oy < g->ho; oy++) {
                const float *drow = dp + oy * g->wo;
                for (int64_t i = 0; i < g->kh; i++) {
                    const int64_t iy = oy * g->sh - g->ph + i * g->dh;
                    if (iy < 0 || iy >= g->h) continue;
                    for (int64_t j = 0; j < kw; j++) {
                        float *row = dxp + iy * g->w + j * g->dw - g->pw;
                        const float wv = wp[i * kw + j];
                        if (g->sw == 1) {
#pragma omp simd
                            for (int64_t ox = lo[j]; ox < hi[j]; ox++) row[ox] += wv * drow[ox];
                        } else {
                            for (int64_t ox = lo[j]; ox < hi[j]; ox++)
                                row[ox * g->sw] += wv * drow[ox];
                        }
                    }
                }
            }
        }
    }
}

/* dw [cout, 1, kh, kw]: one output channel per iteration, summed over the batch. */
static void backward_depthwise_dw(const conv_geom *g, const float *x, const float *dout,
                                  float *dw)
{
    const int64_t kw = g->kw, kk = g->kh * kw;
    int64_t lo[kw], hi[kw];
    for (int64_t j = 0; j < kw; j++) valid_range(j * g->dw - g->pw, g->sw, g->w, g->wo, &lo[j], &hi[j]);
    /* image by image, all taps while its two planes are in cache (taps outermost would stream
     * the whole batch through memory kh*kw times) */
#pragma omp parallel for schedule(static) if (g->n * g->cout * g->p * kk > XT_PARALLEL_GRAIN)
    for (int64_t o = 0; o < g->cout; o++) {
        double acc[kk];
        for (int64_t d = 0; d < kk; d++) acc[d] = 0;
        for (int64_t n = 0; n < g->n; n++) {
            const float *xp = x + (n * g->cin + o / g->cog) * g->h * g->w;
            const float *dp = dout + (n * g->cout + o) * g->p;
            for (int64_t i = 0; i < g->kh; i++) {
                for (int64_t j = 0; j < kw; j++) {
                    float s = 0;
                    for (int64_t oy = 0; oy < g->ho; oy++) {
                        const int64_t iy = oy * g->sh - g->ph + i * g->dh;
                        if (iy < 0 || iy >= g->h) continue;
                        const float *row = xp + iy * g->w + j * g->dw - g->pw;
                        const float *drow = dp + oy * g->wo;
                        if (g->sw == 1) {
#pragma omp simd reduction(+ : s)
                            for (int64_t ox = lo[j]; ox < hi[j]; ox++) s += drow[ox] * row[ox];
                        } else {
                            for (int64_t ox = lo[j]; ox < hi[j]; ox++) s += drow[ox] * row[ox * g->sw];
                        }
                    }
                    acc[i * kw + j] += s;
                }
            }
        }
        for (int64_t d = 0; d < kk; d++) dw[o * kk + d] = (float)acc[d];
    }
}

/* db [cout] = sum of dout [n, cout, p] over n and p, in double. */
static void backward_bias(const conv_geom *g, const float *dout, float *db)
{
#pragma omp parallel for schedule(static) if (g->n * g->cout * g->p > XT_PARALLEL_GRAIN)
    for (int64_t c = 0; c < g->cout; c++) {
        double acc = 0;
        for (int64_t n = 0; n < g->n; n++) {
            const float *d = dout + (n * g->cout + c) * g->p;
            float s = 0;
#pragma omp simd reduction(+ : s)
            for (int64_t i = 0; i < g->p; i++) s += d[i];
            acc += s;
        }
        db[c] = (float)acc;
    }
}

/* ---- the op ------------------------------------------------------------------------------- */

static void geom_from_args(conv_geom *g, const int64_t *xs, const int64_t *ws, const int64_t *a)
{
    g->n = xs[0];
    g->cin = xs[1];
    g->h = xs[2];
    g->w = xs[3];
    g->cout = ws[0];
    g->kh = ws[2];
    g->kw = ws[3];
    g->sh = a[0];
    g->sw = a[1];
    g->ph = a[2];
    g->pw = a[3];
    g->dh = a[4];
    g->dw = a[5];
    g->groups = a[6];
    g->cig = g->cin / g->groups;
    g->cog = g->cout / g->groups;
    g->k = g->cig * g->kh * g->kw;
    g->ho = (g->h + 2 * g->ph - g->dh * (g->kh - 1) - 1) / g->sh + 1;
    g->wo = (g->w + 2 * g->pw - g->dw * (g->kw - 1) - 1) / g->sw + 1;
    g->p = g->ho * g->wo;
}

/* iargs: stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups.
 * saved: 0 x (contiguous), 1 w (contiguous). */
static xt_status conv2d_backward(xt_node *node, xt_tensor *dout, xt_tensor **dinputs)
{
    xt_tensor *x = xt_node_saved(node, 0), *w = xt_node_saved(node, 1);
    if (!x || !w) return xt_last_status();
    conv_geom g;
    geom_from_args(&g, x->shape, w->shape, node->iargs);
    xt_tensor *d = xt_contiguous(dout);
    if (!d) return xt_last_status();
    const float *dp = d->data;
    xt_tensor *dx = NULL, *dw = NULL, *db = NULL;
    xt_status st = XT_OK;
    bool db_done = false;
    if (xt_node_needs(node, 0) && !(dx = xt_empty(4, x->shape, XT_FLOAT32))) goto fail;
    if (xt_node_needs(node, 1) && !(dw = xt_empty(4, w->shape, XT_FLOAT32))) goto fail;
    if (xt_node_needs(node, 2) && !(db = xt_empty(1, &g.cout, XT_FLOAT32))) goto fail;
    if (is_direct_depthwise(&g)) {
        if (dx) backward_depthwise_dx(&g, w->data, dp, dx->data);
        if (dw) backward_depthwise_dw(&g, x->data, dp, dw->data);
    } else if (dx || dw) {
        st = backward_gemm(&g, x->data, w->data, dp, dx ? dx->data : NULL, dw ? dw->data : NULL,
                           db ? db->data : NULL, &db_done);
        if (st != XT_OK) goto fail;
    }
    if (db && !db_done) backward_bias(&g, dp, db->data);
    xt_tensor_release(d);
    dinputs[0] = dx;
    dinputs[1] = dw;
    dinputs[2] = db;
    return XT_OK;
fail:
    if (st == XT_OK) st = xt_last_status();
    xt_tensor_release(d);
    xt_tensor_release(dx);
    xt_tensor_release(dw);
    xt_tensor_release(db);
    return st;
}

/* t as a contiguous tensor (+1), copied outside the graph: the node goes on t itself, so a
 * strided input that requires grad does not also record a copy node that nobody uses. */
static xt_tensor *dense(xt_tensor *t)
{
    int32_t prev = xt_set_grad_enabled(0);
    xt_tensor *c = xt_contiguous(t);
    xt_set_grad_enabled(prev);
    return c;
}

static bool check_float(const xt_tensor *t, const char *what)
{
    if (t->dtype == XT_FLOAT32) return true;
    xt_fail(XT_ERR_DTYPE, "conv2d: %s must be float32, got %s", what, xt_dtype_name(t->dtype));
    return false;
}

xt_tensor *xt_conv2d(xt_tensor *x, xt_tensor *w, xt_tensor *b, int32_t stride_h,
                     int32_t stride_w, int32_t pad_h, int32_t pad_w, int32_t dilation_h,
                     int32_t dilation_w, int32_t groups)
{
    char s1[XT_SHAPE_STR], s2[XT_SHAPE_STR];
    if (!x || !w) return xt_fail_null(XT_ERR_ARG, "conv2d: %s is NULL", x ? "weight" : "input");
    if (x->ndim != 4)
        return xt_fail_null(XT_ERR_SHAPE, "conv2d: input must be 4-D [N,Cin,H,W], got shape %s",
                            xt_shape_str(s1, x->ndim, x->shape));
    if (w->ndim != 4)
        return xt_fail_null(XT_ERR_SHAPE,
                            "conv2d: weight must be 4-D [Cout,Cin/groups,kh,kw], got shape %s",
                            xt_shape_str(s1, w->ndim, w->shape));
    if (!check_float(x, "input") || !check_float(w, "weight") || (b && !check_float(b, "bias")))
        return NULL;
    if (stride_h < 1 || stride_w < 1)
        return xt_fail_null(XT_ERR_ARG, "conv2d: stride must be >= 1, got %dx%d", stride_h, stride_w);
    if (dilation_h < 1 || dilation_w < 1)
        return xt_fail_null(XT_ERR_ARG, "conv2d: dilation must be >= 1, got %dx%d", dilation_h,
                            dilation_w);
    if (pad_h < 0 || pad_w < 0)
        return xt_fail_null(XT_ERR_ARG, "conv2d: padding must be >= 0, got %dx%d", pad_h, pad_w);
    if (groups < 1) return xt_fail_null(XT_ERR_ARG, "conv2d: groups must be >= 1, got %d", groups);
    for (int32_t i = 0; i < 4; i++)
        if (w->shape[i] == 0)
            return xt_fail_null(XT_ERR_SHAPE, "conv2d: weight has shape %s; dim %lld is empty",
                                xt_shape_str(s1, 4, w->shape), (long long)xt_shown(i));
    if (x->shape[1] % groups != 0)
        return xt_fail_null(XT_ERR_SHAPE, "conv2d: groups %d does not divide the input's %lld channels",
                            groups, (long long)x->shape[1]);
    if (w->shape[0] % groups != 0)
        return xt_fail_null(XT_ERR_SHAPE,
                            "conv2d: groups %d does not divide the weight's %lld output channels",
                            groups, (long long)w->shape[0]);
    if (w->shape[1] * groups != x->shape[1])
        return xt_fail_null(XT_ERR_SHAPE, "conv2d: input has %lld channels, weight expects %lld (groups %d)",
                            (long long)x->shape[1], (long long)(w->shape[1] * groups), groups);
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
        return xt_fail_null(XT_ERR_SHAPE, "conv2d: bias must have shape [%lld], got %s",
                            (long long)w->shape[0], xt_shape_str(s1, b->ndim, b->shape));
    int64_t args[7] = {stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups};
    conv_geom g;
    geom_from_args(&g, x->shape, w->shape, args);
    if (g.h + 2 * g.ph - g.dh * (g.kh - 1) - 1 < 0 || g.w + 2 * g.pw - g.dw * (g.kw - 1) - 1 < 0)
        return xt_fail_null(XT_ERR_SHAPE,
                            "conv2d: input %s padded by %dx%d is smaller than the dilated kernel "
                            "%lldx%lld (weight %s); the output would be empty",
                            xt_shape_str(s1, 4, x->shape), pad_h, pad_w,
                            (long long)(g.dh * (g.kh - 1) + 1), (long long)(g.dw * (g.kw - 1) + 1),
                            xt_shape_str(s2, 4, w->shape));

    xt_tensor *xc = dense(x), *wc = dense(w), *bc = b ? dense(b) : NULL;
    int64_t oshape[4] = {g.n, g.cout, g.ho, g.wo};
    xt_tensor *out = xc && wc && (bc || !b) ? xt_empty(4, oshape, XT_FLOAT32) : NULL;
    if (!out) goto fail;
    const float *bp = bc ? bc->data : NULL;
    if (is_direct_depthwise(&g)) {
        forward_depthwise(&g, xc->data, wc->data, bp, out->data);
    } else if (forward_gemm(&g, xc->data, wc->data, bp, out->data) != XT_OK) {
        goto fail;
    }
    xt_tensor *inputs[3] = {x, w, b};
    if (xt_needs_grad(3, inputs)) {
        xt_node *node = xt_node_new("conv2d", conv2d_backward, 3, inputs);
        if (!node) goto fail;
        if (xt_node_save(node, xc) != XT_OK || xt_node_save(node, wc) != XT_OK) {
            xt_node_release(node);
            goto fail;
        }
        memcpy(node->iargs, args, sizeof args);
        xt_node_attach(node, out);
    }
    xt_tensor_release(xc);
    xt_tensor_release(wc);
    xt_tensor_release(bc);
    return out;
fail:
    xt_tensor_release(xc);
    xt_tensor_release(wc);
    xt_tensor_release(bc);
    xt_tensor_release(out);
    return NULL;
}
