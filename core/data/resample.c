/*
 * resample.c: resizing a box of a uint8 HWC image, separably: each output row or
 * column is a weighted sum of a few input ones ("taps"). One pass over rows into a float
 * intermediate [box_h, out_w, c], one pass over columns into uint8, rounded once.
 *
 * Bilinear samples at half-pixel centres without antialiasing, as PyTorch's
 * F.interpolate(mode='bilinear', align_corners=False): source coordinate
 * (o + 0.5) * in / out - 0.5, clamped at 0. Area averages the input over the output
 * pixel's footprint [o * in / out, (o + 1) * in / out), weighting partly covered input
 * pixels by the covered fraction (for integer ratios this is PyTorch's mode='area').
 */
#include "data.h"

#include <math.h>
#include <stdlib.h>

/* Taps of one axis: output o reads inputs first[o] .. first[o] + count[o] - 1 with
 * weights weight[o * max_taps + k]. */
typedef struct axis_taps {
    int64_t *first;
    int32_t *count;
    float *weight;
    int32_t max_taps;
} axis_taps;

static void axis_taps_free(axis_taps *t)
{
    free(t->first);
    free(t->count);
    free(t->weight);
}

static void bilinear_taps(int64_t in, int64_t out, axis_taps *t)
{
    double scale = (double)in / (double)out;
    for (int64_t o = 0; o < out; o++) {
        double x = ((double)o + 0.5) * scale - 0.5;
        if (x < 0) x = 0;
        int64_t i0 = (int64_t)x;
        double frac = x - (double)i0;
        t->first[o] = i0;
        t->weight[o * 2] = (float)(1.0 - frac);
        if (i0 + 1 < in) {
            t->count[o] = 2;
            t->weight[o * 2 + 1] = (float)frac;
        } else {  /* the last input: its neighbour would be itself */
            t->count[o] = 1;
            t->weight[o * 2] = 1.0f;
        }
    }
}

static void area_taps(int64_t in, int64_t out, axis_taps *t)
{
    double scale = (double)in / (double)out;
    for (int64_t o = 0; o < out; o++) {
        /* integer products divided once: exact whenever the bound is an integer */
        double start = (double)(o * in) / (double)out;
        double end = (double)((o + 1) * in) / (double)out;
        int64_t i0 = (int64_t)floor(start), i1 = (int64_t)ceil(end);
        if (i1 > in) i1 = in;
        if (i1 <= i0) i1 = i0 + 1;
        t->first[o] = i0;
        t->count[o] = (int32_t)(i1 - i0);
        for (int64_t i = i0; i < i1; i++) {
            double covered = fmin((double)i + 1, end) - fmax((double)i, start);
            t->weight[o * t->max_taps + (i - i0)] = (float)(covered / scale);
        }
    }
}

static xt_status axis_taps_make(int64_t in, int64_t out, int32_t interpolation, axis_taps *t)
{
    t->max_taps = 2;
    if (interpolation == XT_INTERP_AREA) t->max_taps = (int32_t)ceil((double)in / out) + 1;
    t->first = malloc(sizeof *t->first * (size_t)out);
    t->count = malloc(sizeof *t->count * (size_t)out);
    t->weight = malloc(sizeof *t->weight * (size_t)(out * t->max_taps));
    if (!t->first || !t->count || !t->weight) {
        axis_taps_free(t);
        return xt_fail(XT_ERR_OOM, "resize: out of memory for the interpolation weights");
    }
    if (interpolation == XT_INTERP_AREA)
        area_taps(in, out, t);
    else
        bilinear_taps(in, out, t);
    return XT_OK;
}

static inline uint8_t to_u8(float v)
{
    if (!(v > 0.0f)) return 0;
    if (v >= 255.0f) return 255;
    return (uint8_t)(v + 0.5f);
}

xt_status resample_box(const image_u8 *src, int64_t top, int64_t left, int64_t bh, int64_t bw,
                       int64_t out_h, int64_t out_w, int32_t interpolation,
                       transform_scratch *s, uint8_t *out)
{
    const int64_t c = src->c, in_stride = src->w * c, row_len = out_w * c;
    axis_taps ty = {0}, tx = {0};
    if (axis_taps_make(bh, out_h, interpolation, &ty)) return xt_last_status();
    if (axis_taps_make(bw, out_w, interpolation, &tx)) {
        axis_taps_free(&ty);
        return xt_last_status();
    }
    /* rows [bh, out_w, c] then one accumulator row [out_w, c] */
    size_t need = (size_t)((bh + 1) * row_len) * sizeof(float);
    if (s->rows_cap < need) {
        float *grown = realloc(s->rows, need);
        if (!grown) {
            axis_taps_free(&ty);
            axis_taps_free(&tx);
            return xt_fail(XT_ERR_OOM, "resize: out of memory for a %lldx%lld image",
                           (long long)bh, (long long)out_w);
        }
        s->rows = grown;
        s->rows_cap = need;
    }
    float *rows = s->rows, *acc = s->rows + bh * row_len;

    for (int64_t y = 0; y < bh; y++) {   /* horizontal pass */
        const uint8_t *in = src->data + (top + y) * in_stride + left * c;
        float *row = rows + y * row_len;
        for (int64_t ox = 0; ox < out_w; ox++) {
            const float *w = tx.weight + ox * tx.max_taps;
            const uint8_t *px = in + tx.first[ox] * c;
            for (int64_t ch = 0; ch < c; ch++) {
                float sum = 0.0f;
                for (int32_t k = 0; k < tx.count[ox]; k++) sum += w[k] * (float)px[k * c + ch];
                row[ox * c + ch] = sum;
            }
        }
    }
    for (int64_t oy = 0; oy < out_h; oy++) {   /* vertical pass */
        const float *w = ty.weight + oy * ty.max_taps;
        for (int64_t j = 0; j < row_len; j++) acc[j] = 0.0f;
        for (int32_t k = 0; k < ty.count[oy]; k++) {
            const float *row = rows + (ty.first[oy] + k) * row_len;
            for (int64_t j = 0; j < row_len; j++) acc[j] += w[k] * row[j];
        }
        uint8_t *o = out + oy * row_len;
        for (int64_t j = 0; j < row_len; j++) o[j] = to_u8(acc[j]);
    }
    axis_taps_free(&ty);
    axis_taps_free(&tx);
    return XT_OK;
}
