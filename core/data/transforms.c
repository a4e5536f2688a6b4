/*
 * transforms.c: the per-sample augmentation pipeline. Geometric steps work on the
 * uint8 HWC image (as torchvision does on PIL images), each reading one scratch buffer
 * and writing the other; to_tensor and normalize then write float32 CHW straight into
 * the batch. Random choices come from the sample's own Philox stream.
 */
#include "data.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const TRANSFORM_NAMES[XT_TRANSFORM_KIND_COUNT] = {
    "random_crop", "random_horizontal_flip", "random_resized_crop", "resize", "center_crop",
    "to_tensor", "normalize",
};

const char *transform_name(int32_t kind)
{
    return kind >= 0 && kind < XT_TRANSFORM_KIND_COUNT ? TRANSFORM_NAMES[kind] : "?";
}

void scratch_free(transform_scratch *s)
{
    free(s->image[0]);
    free(s->image[1]);
    free(s->rows);
    memset(s, 0, sizeof *s);
}

uint8_t *scratch_image(transform_scratch *s, const uint8_t *keep, size_t nbytes)
{
    int k = keep == s->image[0] && keep != NULL ? 1 : 0;
    if (s->image_cap[k] < nbytes) {
        uint8_t *grown = realloc(s->image[k], nbytes);
        if (!grown) return xt_fail_null(XT_ERR_OOM, "transforms: out of memory for an image of %zu bytes", nbytes);
        s->image[k] = grown;
        s->image_cap[k] = nbytes;
    }
    return s->image[k];
}

/* ---- checking a pipeline ------------------------------------------------------------ */

static bool is_geometric(int32_t kind)
{
    return kind != XT_TRANSFORM_TO_TENSOR && kind != XT_TRANSFORM_NORMALIZE;
}

static xt_status check_one(const xt_transform *t, const char *where)
{
    switch (t->kind) {
    case XT_TRANSFORM_RANDOM_CROP:
        for (int k = 0; k < 4; k++)
            if (t->padding[k] < 0)
                return xt_fail(XT_ERR_ARG, "%s: padding must be >= 0, got %d", where, t->padding[k]);
        if (t->height <= 0 || t->width <= 0)
            return xt_fail(XT_ERR_ARG, "%s: the size must be positive, got %dx%d", where,
                           t->height, t->width);
        break;
    case XT_TRANSFORM_CENTER_CROP:
        if (t->height <= 0 || t->width <= 0)
            return xt_fail(XT_ERR_ARG, "%s: the size must be positive, got %dx%d", where,
                           t->height, t->width);
        break;
    case XT_TRANSFORM_RANDOM_HORIZONTAL_FLIP:
        if (!(t->p >= 0 && t->p <= 1))
            return xt_fail(XT_ERR_ARG, "%s: p must be in [0, 1], got %g", where, t->p);
        break;
    case XT_TRANSFORM_RANDOM_RESIZED_CROP:
        if (t->height <= 0 || t->width <= 0)
            return xt_fail(XT_ERR_ARG, "%s: the size must be positive, got %dx%d", where,
                           t->height, t->width);
        if (!(t->scale[0] > 0 && t->scale[0] <= t->scale[1] && t->scale[1] <= 1))
            return xt_fail(XT_ERR_ARG, "%s: scale must satisfy 0 < min <= max <= 1, got (%g, %g)",
                           where, t->scale[0], t->scale[1]);
        if (!(t->ratio[0] > 0 && t->ratio[0] <= t->ratio[1] && isfinite(t->ratio[1])))
            return xt_fail(XT_ERR_ARG, "%s: ratio must satisfy 0 < min <= max, got (%g, %g)",
                           where, t->ratio[0], t->ratio[1]);
        break;
    case XT_TRANSFORM_RESIZE:
        if (t->height <= 0 || t->width < 0)
            return xt_fail(XT_ERR_ARG, "%s: the size must be positive, got %dx%d", where,
                           t->height, t->width);
        break;
    case XT_TRANSFORM_TO_TENSOR:
    case XT_TRANSFORM_NORMALIZE:
        break;
    default:
        return xt_fail(XT_ERR_ARG, "%s: unknown transform kind %d", where, t->kind);
    }
    if (t->kind == XT_TRANSFORM_RESIZE || t->kind == XT_TRANSFORM_RANDOM_RESIZED_CROP)
        if (t->interpolation != XT_INTERP_BILINEAR && t->interpolation != XT_INTERP_AREA)
            return xt_fail(XT_ERR_ARG, "%s: interpolation must be bilinear or area, got %d",
                           where, t->interpolation);
    if (t->kind == XT_TRANSFORM_RANDOM_CROP || t->kind == XT_TRANSFORM_NORMALIZE) {
        if (t->n_values < 1 || t->n_values > XT_TRANSFORM_MAX_CHANNELS)
            return xt_fail(XT_ERR_ARG, "%s: give 1 to %d values (one per channel), got %d",
                           where, XT_TRANSFORM_MAX_CHANNELS, t->n_values);
        for (int k = 0; k < t->n_values; k++) {
            if (t->kind == XT_TRANSFORM_RANDOM_CROP && !(t->fill[k] >= 0 && t->fill[k] <= 255))
                return xt_fail(XT_ERR_ARG, "%s: fill must be in [0, 255], got %g", where, t->fill[k]);
            if (t->kind == XT_TRANSFORM_NORMALIZE &&
                !(isfinite(t->mean[k]) && isfinite(t->std[k]) && t->std[k] != 0))
                return xt_fail(XT_ERR_ARG, "%s: mean must be finite and std finite and nonzero, "
                               "got mean %g, std %g", where, t->mean[k], t->std[k]);
        }
    }
    return XT_OK;
}

xt_status transforms_check(int32_t n, const xt_transform *tf, const char *op)
{
    if (n < 0 || (n > 0 && !tf))
        return xt_fail(XT_ERR_ARG, "%s: bad transform list (%d entries)", op, n);
    bool seen_to_tensor = false;
    for (int32_t i = 0; i < n; i++) {
        char where[96];
        snprintf(where, sizeof where, "%s: transform %lld (%s)", op, (long long)xt_shown(i),
                 transform_name(tf[i].kind));
        if (check_one(&tf[i], where)) return xt_last_status();
        if (tf[i].kind == XT_TRANSFORM_TO_TENSOR) {
            if (seen_to_tensor) return xt_fail(XT_ERR_ARG, "%s: to_tensor appears twice", where);
            seen_to_tensor = true;
        } else if (is_geometric(tf[i].kind) && seen_to_tensor) {
            return xt_fail(XT_ERR_ARG, "%s: works on uint8 HWC images; put it before to_tensor",
                           where);
        } else if (tf[i].kind == XT_TRANSFORM_NORMALIZE && !seen_to_tensor) {
            return xt_fail(XT_ERR_ARG, "%s: works on float images; put it after to_tensor", where);
        }
    }
    return XT_OK;
}

xt_status xt_transforms_check(int32_t n_transforms, const xt_transform *transforms)
{
    return transforms_check(n_transforms, transforms, "transforms");
}

int32_t transforms_split(int32_t n, const xt_transform *tf)
{
    for (int32_t i = 0; i < n; i++)
        if (tf[i].kind == XT_TRANSFORM_TO_TENSOR) return i;
    return n;
}

/* ---- geometric steps ------------------------------------------------------------------ */

static xt_status check_values(const xt_transform *t, int64_t c)
{
    if (t->n_values != 1 && t->n_values != c)
        return xt_fail(XT_ERR_SHAPE, "%s: %d values given for an image of %lld channels",
                       transform_name(t->kind), t->n_values, (long long)c);
    return XT_OK;
}

/* Fill values and normalisation constants are kept per channel, for up to 4 channels
 * (gray, gray+alpha, RGB, RGBA). */
static xt_status check_channels(int64_t c)
{
    if (c < 1 || c > XT_TRANSFORM_MAX_CHANNELS)
        return xt_fail(XT_ERR_SHAPE, "transforms: images must have 1 to %d channels, got %lld",
                       XT_TRANSFORM_MAX_CHANNELS, (long long)c);
    return XT_OK;
}

/* out [h, w, c] = in[top + y, left + x], and fill where that lies outside the image. */
static void crop_fill(const image_u8 *in, int64_t top, int64_t left, int64_t h, int64_t w,
                      const uint8_t *fill, uint8_t *out)
{
    const int64_t c = in->c;
    int64_t x0 = left < 0 ? -left : 0, x1 = in->w - left;   /* [x0, x1) comes from in */
    if (x0 > w) x0 = w;
    if (x1 > w) x1 = w;
    if (x1 < x0) x1 = x0;
    for (int64_t y = 0; y < h; y++) {
        uint8_t *row = out + y * w * c;
        int64_t sy = top + y;
        bool inside = sy >= 0 && sy < in->h;
        int64_t a = inside ? x0 : w, b = inside ? x1 : w;
        for (int64_t x = 0; x < a; x++) memcpy(row + x * c, fill, (size_t)c);
        if (b > a) memcpy(row + a * c, in->data + (sy * in->w + left + a) * c, (size_t)((b - a) * c));
        for (int64_t x = b; x < w; x++) memcpy(row + x * c, fill, (size_t)c);
    }
}

static xt_status random_crop(const xt_transform *t, const image_u8 *in, sample_rng *rng,
                             uint8_t *out, image_u8 *res)
{
    if (check_values(t, in->c)) return xt_last_status();
    int64_t padded_h = in->h + t->padding[1] + t->padding[3];
    int64_t padded_w = in->w + t->padding[0] + t->padding[2];
    if (padded_h < t->height || padded_w < t->width)
        return xt_fail(XT_ERR_SHAPE, "random_crop: the crop %dx%d is larger than the padded "
                       "image %lldx%lld (pad more, or resize first)", t->height, t->width,
                       (long long)padded_h, (long long)padded_w);
    int64_t top = sample_rng_below(rng, padded_h - t->height + 1);
    int64_t left = sample_rng_below(rng, padded_w - t->width + 1);
    uint8_t fill[XT_TRANSFORM_MAX_CHANNELS];
    for (int64_t ch = 0; ch < in->c; ch++)
        fill[ch] = (uint8_t)lrint(t->fill[t->n_values == 1 ? 0 : ch]);
    crop_fill(in, top - t->padding[1], left - t->padding[0], t->height, t->width, fill, out);
    *res = (image_u8){out, t->height, t->width, in->c};
    return XT_OK;
}

/* torchvision rounds the centring offset with Python's round (half to even, as rint),
 * and pads with zeros when the crop is larger than the image. */
static int64_t center_offset(int64_t image, int64_t crop)
{
    if (crop > image) return -((crop - image) / 2);
    return (int64_t)rint((double)(image - crop) / 2.0);
}

static void center_crop(const xt_transform *t, const image_u8 *in, uint8_t *out, image_u8 *res)
{
    static const uint8_t zeros[XT_TRANSFORM_MAX_CHANNELS];
    crop_fill(in, center_offset(in->h, t->height), center_offset(in->w, t->width), t->height,
              t->width, zeros, out);
    *res = (image_u8){out, t->height, t->width, in->c};
}

static void horizontal_flip(const image_u8 *in, uint8_t *out)
{
    const int64_t c = in->c, w = in->w;
    for (int64_t y = 0; y < in->h; y++) {
        const uint8_t *src = in->data + y * w * c;
        uint8_t *dst = out + y * w * c;
        for (int64_t x = 0; x < w; x++) memcpy(dst + x * c, src + (w - 1 - x) * c, (size_t)c);
    }
}

/* The box of torchvision's RandomResizedCrop.get_params, Python's round as rint. */
static void resized_crop_box(const xt_transform *t, int64_t height, int64_t width,
                             sample_rng *rng, int64_t box[4])
{
    double area = (double)height * (double)width;
    double log_r0 = log(t->ratio[0]), log_r1 = log(t->ratio[1]);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target = area * (t->scale[0] + (t->scale[1] - t->scale[0]) * sample_rng_uniform(rng));
        double aspect = exp(log_r0 + (log_r1 - log_r0) * sample_rng_uniform(rng));
        int64_t w = (int64_t)rint(sqrt(target * aspect));
        int64_t h = (int64_t)rint(sqrt(target / aspect));
        if (w > 0 && w <= width && h > 0 && h <= height) {
            box[0] = sample_rng_below(rng, height - h + 1);
            box[1] = sample_rng_below(rng, width - w + 1);
            box[2] = h;
            box[3] = w;
            return;
        }
    }
    double in_ratio = (double)width / (double)height;
    int64_t w = width, h = height;
    if (in_ratio < t->ratio[0]) {
        h = (int64_t)rint((double)w / t->ratio[0]);
    } else if (in_ratio > t->ratio[1]) {
        w = (int64_t)rint((double)h * t->ratio[1]);
    }
    if (h < 1) h = 1;
    if (w < 1) w = 1;
    box[0] = (height - h) / 2;
    box[1] = (width - w) / 2;
    box[2] = h;
    box[3] = w;
}

/* Output size of Resize: exact, or the shorter side to height with the longer one
 * truncated as torchvision does (int(size * long / short)). */
static void resize_size(const xt_transform *t, const image_u8 *in, int64_t *oh, int64_t *ow)
{
    if (t->width > 0) {
        *oh = t->height;
        *ow = t->width;
    } else if (in->w <= in->h) {
        *ow = t->height;
        *oh = (int64_t)t->height * in->h / in->w;
    } else {
        *oh = t->height;
        *ow = (int64_t)t->height * in->w / in->h;
    }
}

xt_status transforms_geometric(const image_u8 *src, int32_t split, const xt_transform *tf,
                               sample_rng *rng, transform_scratch *s, image_u8 *out)
{
    image_u8 cur = *src;
    if (check_channels(cur.c)) return xt_last_status();
    for (int32_t i = 0; i < split; i++) {
        const xt_transform *t = &tf[i];
        if (cur.h <= 0 || cur.w <= 0)
            return xt_fail(XT_ERR_SHAPE, "%s: empty image (%lldx%lld)", transform_name(t->kind),
                           (long long)cur.h, (long long)cur.w);
        int64_t oh = cur.h, ow = cur.w;
        switch (t->kind) {
        case XT_TRANSFORM_RANDOM_CROP:
        case XT_TRANSFORM_CENTER_CROP:
        case XT_TRANSFORM_RANDOM_RESIZED_CROP:
            oh = t->height;
            ow = t->width;
            break;
        case XT_TRANSFORM_RESIZE:
            resize_size(t, &cur, &oh, &ow);
            if (oh < 1 || ow < 1)
                return xt_fail(XT_ERR_SHAPE, "resize: a %lldx%lld image would become %lldx%lld",
                               (long long)cur.h, (long long)cur.w, (long long)oh, (long long)ow);
            break;
        default:
            break;
        }
        if (t->kind == XT_TRANSFORM_RANDOM_HORIZONTAL_FLIP) {
            /* draw first, so the stream advances the same whether or not it flips */
            if (!(sample_rng_uniform(rng) < t->p)) continue;
        }
        uint8_t *dst = scratch_image(s, cur.data, (size_t)(oh * ow * cur.c));
        if (!dst) return xt_last_status();
        image_u8 next = {dst, oh, ow, cur.c};
        switch (t->kind) {
        case XT_TRANSFORM_RANDOM_CROP:
            if (random_crop(t, &cur, rng, dst, &next)) return xt_last_status();
            break;
        case XT_TRANSFORM_CENTER_CROP:
            center_crop(t, &cur, dst, &next);
            break;
        case XT_TRANSFORM_RANDOM_HORIZONTAL_FLIP:
            horizontal_flip(&cur, dst);
            break;
        case XT_TRANSFORM_RANDOM_RESIZED_CROP: {
            int64_t box[4];
            resized_crop_box(t, cur.h, cur.w, rng, box);
            if (resample_box(&cur, box[0], box[1], box[2], box[3], oh, ow, t->interpolation, s, dst))
                return xt_last_status();
            break;
        }
        case XT_TRANSFORM_RESIZE:
            if (resample_box(&cur, 0, 0, cur.h, cur.w, oh, ow, t->interpolation, s, dst))
                return xt_last_status();
            break;
        default:
            return xt_fail(XT_ERR_ARG, "transforms: %s is not a geometric step",
                           transform_name(t->kind));
        }
        cur = next;
    }
    *out = cur;
    return XT_OK;
}

/* ---- to_tensor and normalize ------------------------------------------------------------ */

xt_status transforms_to_float(const image_u8 *img, int32_t n, const xt_transform *tf, float *dst)
{
    const int64_t c = img->c, hw = img->h * img->w;
    /* normalize steps fold into one affine map per channel: x * scale + shift */
    double scale[XT_TRANSFORM_MAX_CHANNELS], shift[XT_TRANSFORM_MAX_CHANNELS];
    if (check_channels(c)) return xt_last_status();
    for (int64_t ch = 0; ch < c; ch++) {
        scale[ch] = 1.0 / 255.0;
        shift[ch] = 0.0;
    }
    for (int32_t i = 0; i < n; i++) {
        const xt_transform *t = &tf[i];
        if (t->kind != XT_TRANSFORM_NORMALIZE)
            return xt_fail(XT_ERR_ARG, "transforms: %s cannot follow to_tensor",
                           transform_name(t->kind));
        if (check_values(t, c)) return xt_last_status();
        for (int64_t ch = 0; ch < c; ch++) {
            int k = t->n_values == 1 ? 0 : (int)ch;
            scale[ch] /= t->std[k];
            shift[ch] = (shift[ch] - t->mean[k]) / t->std[k];
        }
    }
    for (int64_t ch = 0; ch < c; ch++) {
        float a = (float)scale[ch], b = (float)shift[ch];
        const uint8_t *src = img->data + ch;
        float *plane = dst + ch * hw;
        for (int64_t p = 0; p < hw; p++) plane[p] = (float)src[p * c] * a + b;
    }
    return XT_OK;
}

/* ---- one image, for tests and for Lua's transform(image) ---------------------------------- */

xt_tensor *xt_transform_apply(xt_tensor *image, int32_t n_transforms,
                              const xt_transform *transforms, uint64_t seed, int64_t epoch,
                              int64_t index)
{
    if (!image) return xt_fail_null(XT_ERR_ARG, "transform: image is NULL");
    if (image->dtype != XT_UINT8 || image->ndim != 3) {
        char shape[XT_SHAPE_STR];
        return xt_fail_null(XT_ERR_DTYPE, "transform: expected a uint8 image [H,W,C], got %s %s",
                            xt_dtype_name(image->dtype), xt_shape_str(shape, image->ndim, image->shape));
    }
    if (transforms_check(n_transforms, transforms, "transform")) return NULL;
    xt_tensor *contig = xt_contiguous(image);
    if (!contig) return NULL;
    image_u8 src = {contig->data, image->shape[0], image->shape[1], image->shape[2]}, out;
    int32_t split = transforms_split(n_transforms, transforms);
    sample_rng rng;
    sample_rng_init(&rng, data_epoch_key(seed, epoch, DATA_STREAM_AUGMENT), index);
    transform_scratch scratch = {0};
    xt_tensor *result = NULL;
    if (transforms_geometric(&src, split, transforms, &rng, &scratch, &out) == XT_OK) {
        if (split == n_transforms) {
            int64_t shape[3] = {out.h, out.w, out.c};
            result = xt_from_data(3, shape, XT_UINT8, out.data);
        } else {
            int64_t shape[3] = {out.c, out.h, out.w};
            result = xt_empty(3, shape, XT_FLOAT32);
            if (result && transforms_to_float(&out, n_transforms - split - 1,
                                              transforms + split + 1, result->data)) {
                xt_tensor_release(result);
                result = NULL;
            }
        }
    }
    scratch_free(&scratch);
    xt_tensor_release(contig);
    return result;
}
