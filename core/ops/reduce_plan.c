/*
 * reduce_plan.c: the reduction engine (see reduce.h): planning a reduction over x's
 * strides, running it in rows or columns mode on OpenMP threads, and the dim helpers the
 * reduction ops share.
 */
#include "reduce.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- dims ------------------------------------------------------------------------- */

xt_status xt_reduce_mask(const xt_tensor *x, int32_t ndims, const int32_t *dims, const char *op,
                         uint32_t *mask)
{
    *mask = 0;
    if (ndims < 0 || (ndims > 0 && !dims))
        return xt_fail(XT_ERR_ARG, "%s: invalid list of %d dims", op, ndims);
    if (ndims == 0) {
        *mask = x->ndim > 0 ? (1u << x->ndim) - 1 : 0;
        return XT_OK;
    }
    uint32_t seen = 0;
    for (int32_t i = 0; i < ndims; i++) {
        int32_t d = dims[i];
        if (xt_norm_dim(&d, x->ndim, op) != XT_OK) return xt_last_status();
        if (seen & (1u << d))
            return xt_fail(XT_ERR_ARG, "%s: dim %lld appears more than once in the list of dims",
                           op, (long long)xt_shown(d));
        seen |= 1u << d;
    }
    *mask = x->ndim > 0 ? seen : 0;
    return XT_OK;
}

void xt_reduce_shape(const xt_tensor *x, uint32_t mask, int32_t keepdim, int32_t *ndim,
                     int64_t *shape)
{
    int32_t n = 0;
    for (int32_t d = 0; d < x->ndim; d++) {
        if (!(mask & (1u << d))) shape[n++] = x->shape[d];
        else if (keepdim) shape[n++] = 1;
    }
    *ndim = n;
}

xt_tensor *xt_reduce_keep_view(xt_tensor *t, int32_t ndim, const int64_t *shape, uint32_t mask,
                               int32_t keepdim, bool full)
{
    int64_t vshape[XT_MAX_DIMS], vstrides[XT_MAX_DIMS];
    int32_t k = 0;   /* t's dim that goes with x's dim d */
    for (int32_t d = 0; d < ndim; d++) {
        bool reduced = (mask >> d) & 1u;
        if (reduced) {
            vshape[d] = full ? shape[d] : 1;
            vstrides[d] = 0;
            if (keepdim) k++;
        } else {
            vshape[d] = shape[d];
            vstrides[d] = t->strides[k++];
        }
    }
    return xt_tensor_new_view(t->storage, t->dtype, ndim, vshape, vstrides, t->offset);
}

void *xt_scratch(int64_t n, xt_storage **hold, const char *op)
{
    *hold = xt_storage_new(8 * (n > 0 ? n : 1));
    if (!*hold) {
        char prefix[64];
        snprintf(prefix, sizeof prefix, "%s: ", op);
        xt_error_prefix(prefix);
        return NULL;
    }
    return (*hold)->data;
}

xt_tensor *xt_dense(xt_tensor *t)
{
    int32_t prev = xt_set_grad_enabled(0);
    xt_tensor *c = xt_contiguous(t);
    xt_set_grad_enabled(prev);
    return c;
}

/* ---- planning --------------------------------------------------------------------- */

/* Appends a dim to a list, merging it into the previous one when the pair walks memory
 * like one dim (the previous stride is this stride times this size). */
static void push_dim(int32_t *n, int64_t *size, int64_t *stride, int64_t sz, int64_t st)
{
    if (*n > 0 && stride[*n - 1] == st * sz) {
        size[*n - 1] *= sz;
        stride[*n - 1] = st;
        return;
    }
    size[*n] = sz;
    stride[*n] = st;
    (*n)++;
}

/* false when neither mode applies to x's strides (x must then be made contiguous). */
static bool plan_build(xt_rplan *p, const xt_tensor *x, uint32_t mask)
{
    memset(p, 0, sizeof *p);
    p->base = x->data;
    p->esize = xt_dtype_size(x->dtype);
    p->n_out = p->n_red = 1;
    int64_t rs[XT_MAX_DIMS], rt[XT_MAX_DIMS];
    int32_t nr = 0;
    for (int32_t d = 0; d < x->ndim; d++) {
        int64_t sz = x->shape[d], st = x->strides[d];
        bool reduced = (mask >> d) & 1u;
        if (reduced) p->n_red *= sz;
        else p->n_out *= sz;
        if (sz == 1) continue;
        if (reduced) {
            rs[nr] = sz;
            rt[nr] = st;
            nr++;
        } else {
            push_dim(&p->nk, p->ksize, p->kstride, sz, st);
        }
    }
    /* The order in which reduced elements are visited is ours to choose: largest stride
     * first walks memory forwards for any permutation of x. Stable, so it is fixed. */
    for (int32_t i = 1; i < nr; i++)
        for (int32_t j = i; j > 0 && rt[j - 1] < rt[j]; j--) {
            int64_t a = rs[j], b = rt[j];
            rs[j] = rs[j - 1];
            rt[j] = rt[j - 1];
            rs[j - 1] = a;
            rt[j - 1] = b;
        }
    for (int32_t i = 0; i < nr; i++) push_dim(&p->nr, p->rsize, p->rstride, rs[i], rt[i]);

    bool can_rows = p->nr > 0 && p->rstride[p->nr - 1] == 1;
    bool can_cols = p->nk > 0 && p->kstride[p->nk - 1] <= XT_RED_MAX_COL_STRIDE;
    if (can_rows && (p->rsize[p->nr - 1] >= XT_RED_SHORT_ROW || !can_cols)) {
        p->rows = true;
    } else if (can_cols) {
        p->rows = false;
        p->cstride = p->kstride[p->nk - 1];
    } else if (p->nr == 0) {
        /* nothing to fold: each output is one element, a run of length 1 */
        p->nr = 1;
        p->rsize[0] = 1;
        p->rstride[0] = 1;
        p->rows = true;
    } else {
        return false;
    }
    return true;
}

xt_tensor *xt_rplan_make(xt_rplan *plan, xt_tensor *x, uint32_t reduce_mask)
{
    if (plan_build(plan, x, reduce_mask)) {
        xt_tensor_retain(x);
        return x;
    }
    xt_tensor *c = xt_dense(x);
    if (!c) return NULL;
    plan_build(plan, c, reduce_mask);   /* always succeeds on a contiguous tensor */
    return c;
}

/* ---- running ---------------------------------------------------------------------- */

/* Offset of the i-th (row-major) index over n dims. */
static int64_t index_offset(int32_t n, const int64_t *size, const int64_t *stride, int64_t i)
{
    int64_t off = 0;
    for (int32_t d = n - 1; d >= 0; d--) {
        off += (i % size[d]) * stride[d];
        i /= size[d];
    }
    return off;
}

/* An odometer over n dims: off follows the index as it counts up. */
typedef struct odometer {
    int32_t n;
    const int64_t *size, *stride;
    int64_t idx[XT_MAX_DIMS];
    int64_t off;
} odometer;

static void odo_seek(odometer *o, int32_t n, const int64_t *size, const int64_t *stride,
                     int64_t i)
{
    o->n = n;
    o->size = size;
    o->stride = stride;
    o->off = 0;
    for (int32_t d = n - 1; d >= 0; d--) {
        o->idx[d] = i % size[d];
        o->off += o->idx[d] * stride[d];
        i /= size[d];
    }
}

static void odo_next(odometer *o)
{
    for (int32_t d = o->n - 1; d >= 0; d--) {
        o->off += o->stride[d];
        if (++o->idx[d] < o->size[d]) return;
        o->off -= o->stride[d] * o->size[d];
        o->idx[d] = 0;
    }
}

int64_t xt_reduce_chunks(int64_t tasks, int64_t work_per_task, int64_t n_red)
{
    if (tasks >= XT_RED_MIN_TASKS || tasks * work_per_task < 2 * (int64_t)XT_PARALLEL_GRAIN)
        return 1;
    int64_t want = (XT_RED_MIN_TASKS + tasks - 1) / tasks;
    int64_t most = work_per_task / XT_PARALLEL_GRAIN;
    int64_t n = want < most ? want : most;
    if (n > n_red) n = n_red;
    return n > 1 ? n : 1;
}

int64_t xt_reduce_col_width(int64_t outer, int64_t inner)
{
    int64_t w = XT_RED_COL_BLOCK;
    while (w > 256 && outer * ((inner + w - 1) / w) < XT_RED_MIN_TASKS) w /= 2;
    return w;
}

/* ---- tasks -------------------------------------------------------------------------
 * The work is cut into tasks, each a contiguous range of outputs [o0, o1) and a chunk
 * [lo, hi) of their reductions. Rows mode: a block of whole outputs (one output when
 * the reductions are chunked, else enough for about XT_PARALLEL_GRAIN / 8 elements).
 * Columns mode: up to XT_RED_COL_BLOCK neighbours along the innermost kept dim. */

typedef struct task_layout {
    int64_t blocks;     /* output blocks */
    int64_t per;        /* rows mode: outputs per block */
    int64_t ncb;        /* columns mode: blocks per row of the innermost kept dim */
    int64_t nch;        /* chunks per reduction */
} task_layout;

static task_layout layout_of(const xt_rplan *p)
{
    task_layout t = {0, 1, 1, 1};
    if (p->rows) {
        t.nch = xt_reduce_chunks(p->n_out, p->n_red, p->n_red);
        if (t.nch == 1) {
            t.per = XT_PARALLEL_GRAIN / 8 / p->n_red;
            if (t.per < 1) t.per = 1;
        }
        t.blocks = (p->n_out + t.per - 1) / t.per;
    } else {
        int64_t L = p->ksize[p->nk - 1];
        int64_t width = L < XT_RED_COL_BLOCK ? L : XT_RED_COL_BLOCK;
        t.ncb = (L + XT_RED_COL_BLOCK - 1) / XT_RED_COL_BLOCK;
        t.blocks = p->n_out / L * t.ncb;
        t.nch = xt_reduce_chunks(t.blocks, p->n_red * width, p->n_red);
    }
    return t;
}

/* The outputs [*o0, *o1) of block b. */
static void block_range(const xt_rplan *p, const task_layout *t, int64_t b, int64_t *o0,
                        int64_t *o1)
{
    if (p->rows) {
        *o0 = b * t->per;
        *o1 = *o0 + t->per < p->n_out ? *o0 + t->per : p->n_out;
        return;
    }
    int64_t L = p->ksize[p->nk - 1], c0 = b % t->ncb * XT_RED_COL_BLOCK;
    *o0 = b / t->ncb * L + c0;
    *o1 = *o0 + (L - c0 < XT_RED_COL_BLOCK ? L - c0 : XT_RED_COL_BLOCK);
}

/* Folds reduction elements [lo, hi) of outputs [o0, o1) into dest[o0..o1) (which this
 * sets to the identity first). shift: NULL or indexed by output. */
static void fold_block(const xt_rplan *p, const xt_rkernel *k, xt_racc *dest,
                       const double *shift, int64_t o0, int64_t o1, int64_t lo, int64_t hi)
{
    for (int64_t o = o0; o < o1; o++) dest[o] = k->identity;
    if (!p->rows) {
        /* o0 .. o1 are neighbours along the innermost kept dim */
        int64_t L = p->ksize[p->nk - 1];
        int64_t kofs = index_offset(p->nk - 1, p->ksize, p->kstride, o0 / L) +
                       o0 % L * p->cstride;
        if (p->nr == 0) {   /* one element per output */
            k->col(dest + o0, p->base + kofs * p->esize, o1 - o0, p->cstride, 1, 0,
                   shift ? shift + o0 : NULL);
            return;
        }
        /* the runs along the innermost reduced dim go to the kernel together */
        int32_t last = p->nr - 1;
        odometer od;
        odo_seek(&od, p->nr, p->rsize, p->rstride, lo);
        for (int64_t r = lo; r < hi;) {
            int64_t m = p->rsize[last] - od.idx[last];
            if (m > hi - r) m = hi - r;
            k->col(dest + o0, p->base + (kofs + od.off) * p->esize, o1 - o0, p->cstride, m,
                   p->rstride[last], shift ? shift + o0 : NULL);
            r += m;
            od.idx[last] += m - 1;   /* to the run's last element, then one step on */
            od.off += (m - 1) * p->rstride[last];
            odo_next(&od);
        }
        return;
    }
    int64_t L = p->rsize[p->nr - 1];
    int32_t nro = p->nr - 1;            /* the reduced dims outside the runs */
    odometer ko;
    odo_seek(&ko, p->nk, p->ksize, p->kstride, o0);
    for (int64_t o = o0; o < o1; o++, odo_next(&ko)) {
        const double *sh = shift ? shift + o : NULL;
        if (nro == 0 && lo == 0 && hi == L) {   /* the common case: one run */
            k->row(dest + o, p->base + ko.off * p->esize, L, sh);
            continue;
        }
        odometer od;
        odo_seek(&od, nro, p->rsize, p->rstride, lo / L);
        int64_t col = lo % L;
        for (int64_t r = lo; r < hi;) {
            int64_t n = L - col < hi - r ? L - col : hi - r;
            k->row(dest + o, p->base + (ko.off + od.off + col) * p->esize, n, sh);
            r += n;
            col = 0;
            odo_next(&od);
        }
    }
}

/* One fold of a run: its kernel and accumulators, and (for all but the last stage) how
 * its result becomes the next stage's shift. */
typedef struct stage {
    const xt_rkernel *k;
    xt_racc *acc;
    xt_rmid_fn mid;
    double *shift_out;
} stage;

static void apply_mid(const stage *s, int64_t o0, int64_t o1, int64_t n_red)
{
    for (int64_t o = o0; o < o1; o++) s->shift_out[o] = s->mid(s->acc[o], n_red);
}

static xt_status run_stages(const xt_rplan *p, int32_t n, const stage *st, const double *shift)
{
    if (p->n_out == 0) return XT_OK;
    if (p->n_red == 0) {   /* nothing to fold: every stage gives its identity */
        for (int32_t i = 0; i < n; i++) {
            for (int64_t o = 0; o < p->n_out; o++) st[i].acc[o] = st[i].k->identity;
            if (i + 1 < n) apply_mid(&st[i], 0, p->n_out, 0);
        }
        return XT_OK;
    }
    task_layout t = layout_of(p);
    int64_t total = p->n_out * p->n_red;
    if (t.nch == 1) {
        /* every stage of a block in one go, while the block's input is in cache */
#pragma omp parallel for schedule(static) if (total > XT_PARALLEL_GRAIN && t.blocks > 1)
        for (int64_t b = 0; b < t.blocks; b++) {
            int64_t o0, o1;
            block_range(p, &t, b, &o0, &o1);
            for (int32_t i = 0; i < n; i++) {
                fold_block(p, st[i].k, st[i].acc, i ? st[i - 1].shift_out : shift, o0, o1, 0,
                           p->n_red);
                if (i + 1 < n) apply_mid(&st[i], o0, o1, p->n_red);
            }
        }
        return XT_OK;
    }
    /* chunked: each stage over everything, chunk 0 into acc and the others into part,
     * combined in chunk order */
    xt_racc *part = malloc(sizeof(xt_racc) * (size_t)(p->n_out * (t.nch - 1)));
    if (!part) return xt_fail(XT_ERR_OOM, "reduce: out of memory");
    for (int32_t i = 0; i < n; i++) {
        const double *sh = i ? st[i - 1].shift_out : shift;
        int64_t tasks = t.blocks * t.nch;
#pragma omp parallel for schedule(static)
        for (int64_t k = 0; k < tasks; k++) {
            int64_t b = k / t.nch, c = k % t.nch, o0, o1;
            block_range(p, &t, b, &o0, &o1);
            xt_racc *dest = c == 0 ? st[i].acc : part + (c - 1) * p->n_out;
            fold_block(p, st[i].k, dest, sh, o0, o1, p->n_red * c / t.nch,
                       p->n_red * (c + 1) / t.nch);
        }
        int64_t nb = (p->n_out + XT_RED_COL_BLOCK - 1) / XT_RED_COL_BLOCK;
#pragma omp parallel for schedule(static) if (p->n_out * t.nch > XT_PARALLEL_GRAIN)
        for (int64_t b = 0; b < nb; b++) {
            int64_t o0 = b * XT_RED_COL_BLOCK;
            int64_t o1 = o0 + XT_RED_COL_BLOCK < p->n_out ? o0 + XT_RED_COL_BLOCK : p->n_out;
            for (int64_t c = 1; c < t.nch; c++)
                st[i].k->combine(st[i].acc + o0, part + (c - 1) * p->n_out + o0, o1 - o0);
            if (i + 1 < n) apply_mid(&st[i], o0, o1, p->n_red);
        }
    }
    free(part);
    return XT_OK;
}

xt_status xt_rplan_run(const xt_rplan *p, const xt_rkernel *k, void *acc, const double *shift)
{
    stage s = {k, acc, NULL, NULL};
    return run_stages(p, 1, &s, shift);
}

xt_status xt_rplan_run2(const xt_rplan *p, const xt_rkernel *k1, void *acc1, xt_rmid_fn mid,
                        double *shift, const xt_rkernel *k2, void *acc2)
{
    stage s[2] = {{k1, acc1, mid, shift}, {k2, acc2, NULL, NULL}};
    return run_stages(p, 2, s, NULL);
}
