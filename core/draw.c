/*
 * draw.c: drawing into uint8 images [H,W,C] for figures (training curves, annotated sample
 * grids): filled rectangles, thick line segments and text. Text uses stb_easy_font, a small
 * public-domain bitmap font made of rectangles, scaled by an integer factor.
 *
 * Everything clips to the image, so callers can draw with plot coordinates that stray
 * outside it. Coordinates are pixels from the top-left corner, 0-based (Lua passes 0-based
 * pixel positions too: they are positions, not indices).
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* stb_easy_font defines a few static functions we do not call. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-braces"
#include <stb_easy_font.h>
#pragma GCC diagnostic pop

static xt_status check_image(const xt_tensor *img, int32_t ncolour, const char *op)
{
    if (!img) return xt_fail(XT_ERR_ARG, "%s: image is NULL", op);
    if (img->dtype != XT_UINT8 || img->ndim != 3)
        return xt_fail(XT_ERR_ARG, "%s: expected a uint8 image [H,W,C], got a %s tensor with %d "
                       "dims", op, xt_dtype_name(img->dtype), img->ndim);
    if (ncolour != img->shape[2])
        return xt_fail(XT_ERR_ARG, "%s: the colour has %d channels, the image %lld", op, ncolour,
                       (long long)img->shape[2]);
    return xt_check_inplace((xt_tensor *)img, op);
}

/* Paint pixels x in [x0,x1), y in [y0,y1) (already clipped). */
static void fill(xt_tensor *img, int64_t x0, int64_t y0, int64_t x1, int64_t y1,
                 const uint8_t *colour)
{
    uint8_t *data = img->data;
    int64_t channels = img->shape[2];
    for (int64_t y = y0; y < y1; y++)
        for (int64_t x = x0; x < x1; x++) {
            uint8_t *p = data + y * img->strides[0] + x * img->strides[1];
            for (int64_t c = 0; c < channels; c++) p[c * img->strides[2]] = colour[c];
        }
}

static int64_t clip(double v, int64_t hi)
{
    if (!(v > 0)) return 0;   /* also NaN */
    if (v > (double)hi) return hi;
    return (int64_t)v;
}

static void fill_rect(xt_tensor *img, double x0, double y0, double x1, double y1,
                      const uint8_t *colour)
{
    int64_t h = img->shape[0], w = img->shape[1];
    fill(img, clip(floor(x0), w), clip(floor(y0), h), clip(ceil(x1), w), clip(ceil(y1), h),
         colour);
}

xt_status xt_draw_rect(xt_tensor *img, double x0, double y0, double x1, double y1,
                       int32_t ncolour, const uint8_t *colour)
{
    xt_status st = check_image(img, ncolour, "draw_rect");
    if (st != XT_OK) return st;
    fill_rect(img, fmin(x0, x1), fmin(y0, y1), fmax(x0, x1), fmax(y0, y1), colour);
    xt_bump_version(img);
    return XT_OK;
}

xt_status xt_draw_line(xt_tensor *img, double x0, double y0, double x1, double y1,
                       double thickness, int32_t ncolour, const uint8_t *colour)
{
    xt_status st = check_image(img, ncolour, "draw_line");
    if (st != XT_OK) return st;
    if (!(thickness > 0) || thickness > 1e4)
        return xt_fail(XT_ERR_ARG, "draw_line: thickness must be in (0, 10000], got %g", thickness);
    if (!isfinite(x0) || !isfinite(y0) || !isfinite(x1) || !isfinite(y1)) return XT_OK;
    /* A square brush stamped at every pixel step along the segment: simple, and thick lines
     * have no gaps at joints. Steps are capped so a wild coordinate cannot take forever. */
    double dx = x1 - x0, dy = y1 - y0;
    double len = fmax(fabs(dx), fabs(dy));
    double limit = 4.0 * (double)(img->shape[0] + img->shape[1]);
    int64_t steps = (int64_t)ceil(fmin(len, limit)) + 1;
    double r = thickness / 2;
    for (int64_t i = 0; i < steps; i++) {
        double t = steps > 1 ? (double)i / (double)(steps - 1) : 0;
        double x = x0 + t * dx, y = y0 + t * dy;
        fill_rect(img, x - r + 0.5, y - r + 0.5, x + r + 0.5, y + r + 0.5, colour);
    }
    xt_bump_version(img);
    return XT_OK;
}

/* Printable ASCII only: anything else would index outside stb_easy_font's tables. */
static char *printable_copy(const char *text)
{
    size_t n = strlen(text);
    char *s = malloc(n + 1);
    if (!s) return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)text[i];
        s[i] = (c == '\n' || (c >= 32 && c < 127)) ? (char)c : '?';
    }
    s[n] = 0;
    return s;
}

xt_status xt_draw_text(xt_tensor *img, double x, double y, const char *text, int32_t scale,
                       int32_t ncolour, const uint8_t *colour)
{
    xt_status st = check_image(img, ncolour, "draw_text");
    if (st != XT_OK) return st;
    if (!text) return xt_fail(XT_ERR_ARG, "draw_text: text is NULL");
    if (scale < 1 || scale > 64)
        return xt_fail(XT_ERR_ARG, "draw_text: scale must be in 1..64, got %d", scale);
    char *s = printable_copy(text);
    if (!s) return xt_fail(XT_ERR_OOM, "draw_text: out of memory");
    /* stb_easy_font emits 4 vertices of 16 bytes per quad, about 270 bytes per character. */
    size_t cap = 400 * (strlen(s) + 1);
    char *quads = malloc(cap);
    if (!quads) {
        free(s);
        return xt_fail(XT_ERR_OOM, "draw_text: out of memory");
    }
    int n = stb_easy_font_print(0, 0, s, NULL, quads, (int)cap);
    for (int q = 0; q < n; q++) {
        const float *v0 = (const float *)(quads + (size_t)q * 64);
        const float *v2 = (const float *)(quads + (size_t)q * 64 + 32);
        fill_rect(img, x + v0[0] * scale, y + v0[1] * scale, x + v2[0] * scale,
                  y + v2[1] * scale, colour);
    }
    free(quads);
    free(s);
    xt_bump_version(img);
    return XT_OK;
}

/* Size in pixels of text drawn at scale (for centring and right-aligning labels). */
void xt_text_size(const char *text, int32_t scale, int32_t *width, int32_t *height)
{
    char *s = text ? printable_copy(text) : NULL;
    *width = s ? stb_easy_font_width(s) * scale : 0;
    *height = s ? stb_easy_font_height(s) * scale : 0;
    free(s);
}
