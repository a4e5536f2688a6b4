/*
 * test_loader.c: the DataLoader and its transforms. Each transform against results worked
 * out by hand on tiny images (crop with padding and fill, flip, bilinear and area resize,
 * shorter-side resize, centre crop with torchvision's rounding and zero padding,
 * random resized crop's fallback box, to_tensor + normalize); pipeline errors; the loader's
 * batches are the same for 0, 1 and 2 workers and any prefetch, and equal the single-image
 * transform of each sample; the shuffle depends only on (seed, epoch); drop_last; errors
 * raised in workers; abandoning an epoch and freeing the loader mid-epoch; PNG file sources
 * (same batches as memory, a corrupt or missing file named at its batch, mixed sizes).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "testlib.h"

enum { SEED = 20240612 };

/* ---- helpers ------------------------------------------------------------------------ */

static xt_tensor *image_u8(int64_t h, int64_t w, int64_t c, const uint8_t *data)
{
    int64_t shape[3] = {h, w, c};
    return xt_from_data(3, shape, XT_UINT8, data);
}

static xt_transform tf_of(int32_t kind)
{
    xt_transform t;
    memset(&t, 0, sizeof t);
    t.kind = kind;
    t.n_values = 1;
    t.p = 0.5;
    t.scale[0] = 0.08;
    t.scale[1] = 1;
    t.ratio[0] = 3.0 / 4;
    t.ratio[1] = 4.0 / 3;
    t.std[0] = 1;
    return t;
}

static xt_transform crop_tf(int32_t kind, int32_t h, int32_t w)
{
    xt_transform t = tf_of(kind);
    t.height = h;
    t.width = w;
    return t;
}

/* The uint8 result equals want (h*w*c values) and has shape [h, w, c]. */
static bool same_u8(const xt_tensor *got, int64_t h, int64_t w, int64_t c, const uint8_t *want)
{
    if (!got || got->dtype != XT_UINT8 || got->ndim != 3 || got->shape[0] != h ||
        got->shape[1] != w || got->shape[2] != c) {
        fprintf(stderr, "  wrong result tensor (%s)\n", got ? "shape" : xt_last_error());
        return false;
    }
    const uint8_t *p = got->data;
    for (int64_t i = 0; i < h * w * c; i++)
        if (p[i] != want[i]) {
            fprintf(stderr, "  element %lld: got %d, want %d\n", (long long)i, p[i], want[i]);
            return false;
        }
    return true;
}

static xt_tensor *apply1(xt_tensor *img, xt_transform t, int64_t index)
{
    return xt_transform_apply(img, 1, &t, SEED, 0, index);
}

/* ---- transforms against hand-computed results ------------------------------------------ */

static void test_random_crop(void)
{
    const uint8_t px[6] = {1, 2, 3, 4, 5, 6};   /* [2,3,1] */
    xt_tensor *img = image_u8(2, 3, 1, px);
    /* padding 1 on every side with fill 9: the padded image is 4x5 */
    const uint8_t padded[20] = {9, 9, 9, 9, 9,
                                9, 1, 2, 3, 9,
                                9, 4, 5, 6, 9,
                                9, 9, 9, 9, 9};
    xt_transform t = crop_tf(XT_TRANSFORM_RANDOM_CROP, 4, 5);
    for (int k = 0; k < 4; k++) t.padding[k] = 1;
    t.fill[0] = 9;
    xt_tensor *out = apply1(img, t, 0);
    CHECK(same_u8(out, 4, 5, 1, padded));   /* a crop the size of the padded image */
    xt_tensor_release(out);

    /* a 2x3 crop: one of the 3x3 windows of the padded image, every one of them occurring */
    t.height = 2;
    t.width = 3;
    int seen[3][3] = {{0}};
    bool all_windows = true;
    for (int64_t index = 0; index < 200; index++) {
        out = apply1(img, t, index);
        int found = 0;
        for (int top = 0; top < 3; top++)
            for (int left = 0; left < 3; left++) {
                bool match = out != NULL;
                for (int y = 0; y < 2 && match; y++)
                    for (int x = 0; x < 3; x++)
                        match = match && ((uint8_t *)out->data)[y * 3 + x] ==
                                                 padded[(top + y) * 5 + left + x];
                if (match && !found) {
                    seen[top][left]++;
                    found = 1;
                }
            }
        all_windows = all_windows && found;
        xt_tensor_release(out);
    }
    CHECK(all_windows);
    for (int top = 0; top < 3; top++)
        for (int left = 0; left < 3; left++) CHECK(seen[top][left] > 5);

    /* asymmetric padding (left 2, top 0, right 0, bottom 1) and a fill per channel */
    const uint8_t two[4] = {10, 20, 30, 40};   /* [1,2,2] */
    xt_tensor *img2 = image_u8(1, 2, 2, two);
    xt_transform t2 = crop_tf(XT_TRANSFORM_RANDOM_CROP, 2, 4);
    t2.padding[0] = 2;
    t2.padding[3] = 1;
    t2.n_values = 2;
    t2.fill[0] = 7;
    t2.fill[1] = 8;
    const uint8_t want2[16] = {7, 8, 7, 8, 10, 20, 30, 40,
                               7, 8, 7, 8, 7, 8, 7, 8};
    out = apply1(img2, t2, 3);
    CHECK(same_u8(out, 2, 4, 2, want2));
    xt_tensor_release(out);

    t.height = 5;   /* larger than the padded image */
    CHECK(apply1(img, t, 0) == NULL && test_error_has("larger than the padded image 4x5"));
    t2.n_values = 3;   /* three fill values for a 2-channel image */
    CHECK(apply1(img2, t2, 0) == NULL && test_error_has("3 values given for an image of 2 channels"));
    xt_tensor_release(img);
    xt_tensor_release(img2);
}

static void test_flip(void)
{
    const uint8_t px[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};   /* [2,3,2] */
    const uint8_t flipped[12] = {5, 6, 3, 4, 1, 2, 11, 12, 9, 10, 7, 8};
    xt_tensor *img = image_u8(2, 3, 2, px);
    xt_transform t = tf_of(XT_TRANSFORM_RANDOM_HORIZONTAL_FLIP);
    t.p = 1;
    xt_tensor *out = apply1(img, t, 0);
    CHECK(same_u8(out, 2, 3, 2, flipped));
    xt_tensor_release(out);
    t.p = 0;
    out = apply1(img, t, 0);
    CHECK(same_u8(out, 2, 3, 2, px));
    xt_tensor_release(out);
    t.p = 0.5;   /* about half of 400 samples flip, and each is one or the other */
    int flips = 0, others = 0;
    for (int64_t index = 0; index < 400; index++) {
        out = apply1(img, t, index);
        if (out && memcmp(out->data, flipped, 12) == 0)
            flips++;
        else if (!out || memcmp(out->data, px, 12) != 0)
            others++;
        xt_tensor_release(out);
    }
    printf("flip p=0.5: %d of 400 flipped\n", flips);
    CHECK(others == 0 && flips > 160 && flips < 240);
    t.p = 1.5;
    CHECK(apply1(img, t, 0) == NULL && test_error_has("p must be in [0, 1]"));
    xt_tensor_release(img);
}

static void test_resize(void)
{
    /* bilinear 2x2 -> 4x4: taps per axis are x0, .75x0+.25x1, .25x0+.75x1, x1 */
    const uint8_t px[4] = {0, 100, 200, 40};
    const uint8_t up[16] = {0, 25, 75, 100,
                            50, 59, 76, 85,        /* 58.75, 76.25 */
                            150, 126, 79, 55,      /* 126.25, 78.75 */
                            200, 160, 80, 40};
    xt_tensor *img = image_u8(2, 2, 1, px);
    xt_transform t = crop_tf(XT_TRANSFORM_RESIZE, 4, 4);
    xt_tensor *out = apply1(img, t, 0);
    CHECK(same_u8(out, 4, 4, 1, up));
    xt_tensor_release(out);
    xt_tensor_release(img);

    /* 4x4 -> 2x2: bilinear samples at 0.5 and 2.5 (pair means); area averages 2x2 blocks */
    const uint8_t px4[16] = {0, 10, 20, 30,
                             40, 50, 60, 70,
                             80, 90, 100, 110,
                             120, 130, 140, 150};
    const uint8_t down[4] = {25, 45, 105, 125};
    img = image_u8(4, 4, 1, px4);
    t = crop_tf(XT_TRANSFORM_RESIZE, 2, 2);
    out = apply1(img, t, 0);
    CHECK(same_u8(out, 2, 2, 1, down));
    xt_tensor_release(out);
    t.interpolation = XT_INTERP_AREA;
    out = apply1(img, t, 0);
    CHECK(same_u8(out, 2, 2, 1, down));
    xt_tensor_release(out);
    /* 4x4 -> 4x1 bilinear: columns sampled at 1.5, i.e. (x1 + x2) / 2 */
    t = crop_tf(XT_TRANSFORM_RESIZE, 4, 1);
    const uint8_t col[4] = {15, 55, 95, 135};
    out = apply1(img, t, 0);
    CHECK(same_u8(out, 4, 1, 1, col));
    xt_tensor_release(out);
    xt_tensor_release(img);

    /* area 1x3 -> 1x2: [0, 1.5) and [1.5, 3) with the middle pixel shared half and half */
    const uint8_t row3[3] = {0, 30, 60};
    const uint8_t row2[2] = {10, 50};
    img = image_u8(1, 3, 1, row3);
    t = crop_tf(XT_TRANSFORM_RESIZE, 1, 2);
    t.interpolation = XT_INTERP_AREA;
    out = apply1(img, t, 0);
    CHECK(same_u8(out, 1, 2, 1, row2));
    xt_tensor_release(out);
    xt_tensor_release(img);

    /* shorter side: 4x8 -> 2x4; 6x4 -> 4x3 (the longer side truncated: int(3 * 6 / 4)) */
    uint8_t zeros[48] = {0};
    img = image_u8(4, 8, 1, zeros);
    t = crop_tf(XT_TRANSFORM_RESIZE, 2, 0);
    out = apply1(img, t, 0);
    CHECK(out && out->shape[0] == 2 && out->shape[1] == 4);
    xt_tensor_release(out);
    xt_tensor_release(img);
    img = image_u8(6, 4, 2, zeros);
    t = crop_tf(XT_TRANSFORM_RESIZE, 3, 0);
    out = apply1(img, t, 0);
    CHECK(out && out->shape[0] == 4 && out->shape[1] == 3 && out->shape[2] == 2);
    xt_tensor_release(out);
    /* resizing to the same size changes nothing, for both interpolations */
    const uint8_t *same = px4;
    xt_tensor_release(img);
    img = image_u8(4, 4, 1, same);
    t = crop_tf(XT_TRANSFORM_RESIZE, 4, 4);
    out = apply1(img, t, 0);
    CHECK(same_u8(out, 4, 4, 1, px4));
    xt_tensor_release(out);
    t.interpolation = XT_INTERP_AREA;
    out = apply1(img, t, 0);
    CHECK(same_u8(out, 4, 4, 1, px4));
    xt_tensor_release(out);
    t.interpolation = 7;
    CHECK(apply1(img, t, 0) == NULL && test_error_has("interpolation must be bilinear or area"));
    xt_tensor_release(img);
}

/* Against PyTorch's F.interpolate (tests/fixtures/loader, make_loader_fixtures.py): ours is
 * the same value rounded to uint8, so within 0.5 of the reference. */
static void test_resize_fixtures(void)
{
    static const struct { const char *name; int32_t interpolation, h, w; } cases[] = {
        {"bilinear_26x20", XT_INTERP_BILINEAR, 26, 20}, {"bilinear_7x15", XT_INTERP_BILINEAR, 7, 15},
        {"bilinear_5x4", XT_INTERP_BILINEAR, 5, 4}, {"bilinear_13x10", XT_INTERP_BILINEAR, 13, 10},
        {"area_13x5", XT_INTERP_AREA, 13, 5}, {"area_1x2", XT_INTERP_AREA, 1, 2},
    };
    xt_tensor *img = test_fixture("loader", "image", "in");
    CHECK(img && img->dtype == XT_UINT8 && img->ndim == 3);
    for (size_t k = 0; img && k < sizeof cases / sizeof cases[0]; k++) {
        xt_transform t = crop_tf(XT_TRANSFORM_RESIZE, cases[k].h, cases[k].w);
        t.interpolation = cases[k].interpolation;
        xt_tensor *out = apply1(img, t, 0);
        xt_tensor *want = test_fixture("loader", cases[k].name, "out");   /* [C,h,w] */
        xt_tensor *hwc = out ? xt_permute(out, 3, (int32_t[]){2, 0, 1}) : NULL;
        xt_tensor *got = hwc ? xt_to_dtype(hwc, XT_FLOAT32) : NULL;
        CHECK(test_close(cases[k].name, got, want, 0.5 + 1e-3));
        xt_tensor_release(out);
        xt_tensor_release(hwc);
        xt_tensor_release(got);
        xt_tensor_release(want);
    }
    xt_tensor_release(img);
}

static void test_center_crop(void)
{
    uint8_t px[25];
    for (int i = 0; i < 25; i++) px[i] = (uint8_t)(i + 1);
    xt_tensor *img = image_u8(4, 5, 1, px);   /* rows 1..5, 6..10, 11..15, 16..20 */
    const uint8_t want[6] = {7, 8, 9, 12, 13, 14};   /* top 1, left 1 */
    xt_tensor *out = apply1(img, crop_tf(XT_TRANSFORM_CENTER_CROP, 2, 3), 0);
    CHECK(same_u8(out, 2, 3, 1, want));
    xt_tensor_release(out);
    xt_tensor_release(img);
    /* 5x5 -> 2x2: the offset round(1.5) is 2, as Python rounds half to even */
    img = image_u8(5, 5, 1, px);
    const uint8_t want_even[4] = {13, 14, 18, 19};
    out = apply1(img, crop_tf(XT_TRANSFORM_CENTER_CROP, 2, 2), 0);
    CHECK(same_u8(out, 2, 2, 1, want_even));
    xt_tensor_release(out);
    xt_tensor_release(img);
    /* a crop larger than the image pads with zeros: 2x2 -> 4x3, one row above, none left */
    img = image_u8(2, 2, 1, px);
    const uint8_t want_pad[12] = {0, 0, 0, 1, 2, 0, 3, 4, 0, 0, 0, 0};
    out = apply1(img, crop_tf(XT_TRANSFORM_CENTER_CROP, 4, 3), 0);
    CHECK(same_u8(out, 4, 3, 1, want_pad));
    xt_tensor_release(out);
    CHECK(apply1(img, crop_tf(XT_TRANSFORM_CENTER_CROP, 0, 3), 0) == NULL &&
          test_error_has("size must be positive"));
    xt_tensor_release(img);
}

static void test_random_resized_crop(void)
{
    uint8_t px[32];
    for (int i = 0; i < 32; i++) px[i] = (uint8_t)(7 * i);
    xt_tensor *img = image_u8(4, 8, 1, px);
    /* scale 1, ratio 1 on a 4x8 image: every try wants a 6x6 box, too tall, so the
     * fallback takes the central 4x4 box (left 2); resized to 4x4 it is that box */
    xt_transform t = crop_tf(XT_TRANSFORM_RANDOM_RESIZED_CROP, 4, 4);
    t.scale[0] = t.scale[1] = 1;
    t.ratio[0] = t.ratio[1] = 1;
    uint8_t want[16];
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++) want[y * 4 + x] = px[y * 8 + 2 + x];
    xt_tensor *out = apply1(img, t, 5);
    CHECK(same_u8(out, 4, 4, 1, want));
    xt_tensor_release(out);
    /* ratio 2 fits the whole 4x8 image (w = round(sqrt(32*2)) = 8, h = 4): resized to 2x4
     * it is the bilinear 2x downscale, i.e. the means of 2x2 blocks */
    t = crop_tf(XT_TRANSFORM_RANDOM_RESIZED_CROP, 2, 4);
    t.scale[0] = t.scale[1] = 1;
    t.ratio[0] = t.ratio[1] = 2;
    xt_tensor *whole = apply1(img, crop_tf(XT_TRANSFORM_RESIZE, 2, 4), 0);
    out = apply1(img, t, 1);
    CHECK(whole && same_u8(out, 2, 4, 1, whole->data));
    xt_tensor_release(out);
    xt_tensor_release(whole);
    /* default parameters: a 3x3 output whose pixels all come from the image's range */
    t = crop_tf(XT_TRANSFORM_RANDOM_RESIZED_CROP, 3, 3);
    bool in_range = true;
    for (int64_t index = 0; index < 50; index++) {
        out = apply1(img, t, index);
        in_range = in_range && out && out->shape[0] == 3 && out->shape[1] == 3;
        for (int i = 0; out && i < 9; i++) in_range = in_range && ((uint8_t *)out->data)[i] <= 217;
        xt_tensor_release(out);
    }
    CHECK(in_range);
    t.scale[0] = 0;
    CHECK(apply1(img, t, 0) == NULL && test_error_has("scale must satisfy"));
    t.scale[0] = 0.5;
    t.ratio[0] = 2;
    t.ratio[1] = 1;
    CHECK(apply1(img, t, 0) == NULL && test_error_has("ratio must satisfy"));
    xt_tensor_release(img);
}

static void test_to_tensor_normalize(void)
{
    const uint8_t px[6] = {0, 51, 255, 102, 153, 204};   /* [1,2,3] */
    xt_tensor *img = image_u8(1, 2, 3, px);
    xt_transform steps[2] = {tf_of(XT_TRANSFORM_TO_TENSOR), tf_of(XT_TRANSFORM_NORMALIZE)};
    xt_tensor *out = xt_transform_apply(img, 1, steps, SEED, 0, 0);   /* to_tensor only */
    CHECK(out && out->dtype == XT_FLOAT32 && out->ndim == 3 && out->shape[0] == 3 &&
          out->shape[1] == 1 && out->shape[2] == 2);
    const double chw[6] = {0, 0.4, 0.2, 0.6, 1, 0.8};   /* channel planes */
    for (int i = 0; out && i < 6; i++) CHECK_NEAR(test_f32(out)[i], chw[i], 1e-6);
    xt_tensor_release(out);

    steps[1].n_values = 3;
    const double mean[3] = {0.5, 0.25, 0.1}, std[3] = {0.5, 2, 0.25};
    for (int c = 0; c < 3; c++) {
        steps[1].mean[c] = mean[c];
        steps[1].std[c] = std[c];
    }
    out = xt_transform_apply(img, 2, steps, SEED, 0, 0);
    for (int i = 0; out && i < 6; i++)
        CHECK_NEAR(test_f32(out)[i], (chw[i] - mean[i / 2]) / std[i / 2], 1e-6);
    CHECK(out != NULL);
    xt_tensor_release(out);

    /* a pipeline without to_tensor gives uint8 HWC back; to_tensor is implicit in a loader */
    xt_transform none = tf_of(XT_TRANSFORM_RANDOM_HORIZONTAL_FLIP);
    none.p = 0;
    out = xt_transform_apply(img, 1, &none, SEED, 0, 0);
    CHECK(same_u8(out, 1, 2, 3, px));
    xt_tensor_release(out);

    /* errors: order, parameters, channel counts, input type */
    xt_transform wrong[2] = {tf_of(XT_TRANSFORM_NORMALIZE), tf_of(XT_TRANSFORM_TO_TENSOR)};
    CHECK(xt_transform_apply(img, 2, wrong, SEED, 0, 0) == NULL &&
          test_error_has("transform 0 (normalize): works on float images; put it after to_tensor"));
    xt_transform late[2] = {tf_of(XT_TRANSFORM_TO_TENSOR), crop_tf(XT_TRANSFORM_CENTER_CROP, 1, 1)};
    CHECK(xt_transform_apply(img, 2, late, SEED, 0, 0) == NULL &&
          test_error_has("put it before to_tensor"));
    xt_transform twice[2] = {tf_of(XT_TRANSFORM_TO_TENSOR), tf_of(XT_TRANSFORM_TO_TENSOR)};
    CHECK(xt_transform_apply(img, 2, twice, SEED, 0, 0) == NULL &&
          test_error_has("to_tensor appears twice"));
    steps[1].std[1] = 0;
    CHECK(xt_transform_apply(img, 2, steps, SEED, 0, 0) == NULL &&
          test_error_has("std finite and nonzero"));
    steps[1].std[1] = 1;
    steps[1].n_values = 2;
    CHECK(xt_transform_apply(img, 2, steps, SEED, 0, 0) == NULL &&
          test_error_has("normalize: 2 values given for an image of 3 channels"));
    xt_transform unknown = tf_of(99);
    CHECK(xt_transform_apply(img, 1, &unknown, SEED, 0, 0) == NULL &&
          test_error_has("unknown transform kind 99"));
    int64_t fshape[3] = {1, 2, 3};
    xt_tensor *f = xt_zeros(3, fshape, XT_FLOAT32);
    CHECK(xt_transform_apply(f, 1, steps, SEED, 0, 0) == NULL &&
          test_error_has("expected a uint8 image [H,W,C], got float32 [1,2,3]"));
    xt_tensor_release(f);
    uint8_t five[5] = {0};
    xt_tensor *img5 = image_u8(1, 1, 5, five);
    CHECK(xt_transform_apply(img5, 1, steps, SEED, 0, 0) == NULL &&
          test_error_has("1 to 4 channels, got 5"));
    xt_tensor_release(img5);
    xt_tensor_release(img);
}

/* ---- the loader ---------------------------------------------------------------------- */

typedef struct epoch_result {
    int64_t n_batches;
    xt_tensor *inputs[128];
    xt_tensor *targets[128];
} epoch_result;

static void epoch_free(epoch_result *r)
{
    for (int64_t b = 0; b < r->n_batches; b++) {
        xt_tensor_release(r->inputs[b]);
        xt_tensor_release(r->targets[b]);
    }
    r->n_batches = 0;
}

/* Run one epoch; false when a batch failed. */
static bool run_epoch(xt_loader *l, int64_t epoch, epoch_result *r)
{
    r->n_batches = 0;
    if (!l || xt_loader_start_epoch(l, epoch) != XT_OK) return false;
    xt_tensor *in, *tg;
    int32_t got;
    while ((got = xt_loader_next(l, &in, &tg)) == 1 && r->n_batches < 128) {
        r->inputs[r->n_batches] = in;
        r->targets[r->n_batches++] = tg;
    }
    return got == 0;
}

static bool same_tensor_bytes(const xt_tensor *a, const xt_tensor *b)
{
    return a && b && a->dtype == b->dtype && a->ndim == b->ndim &&
           memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim) == 0 &&
           memcmp(a->data, b->data, (size_t)(xt_numel(a) * xt_dtype_size(a->dtype))) == 0;
}

static bool same_epochs(const epoch_result *a, const epoch_result *b)
{
    if (a->n_batches != b->n_batches) return false;
    for (int64_t i = 0; i < a->n_batches; i++)
        if (!same_tensor_bytes(a->inputs[i], b->inputs[i]) ||
            !same_tensor_bytes(a->targets[i], b->targets[i]))
            return false;
    return true;
}

static xt_loader_options options(int64_t batch_size, int32_t shuffle, int32_t drop_last,
                                 int32_t workers)
{
    xt_loader_options o = {batch_size, SEED, shuffle, drop_last, workers, 0, 0};
    return o;
}

/* images [n,h,w,c] of random bytes, labels 1..n */
static void dataset(int64_t n, int64_t h, int64_t w, int64_t c, xt_tensor **images,
                    xt_tensor **labels)
{
    int64_t shape[4] = {n, h, w, c};
    xt_tensor *u = xt_randint(&test_rng, 0, 256, 4, shape);
    *images = xt_to_dtype(u, XT_UINT8);
    xt_tensor_release(u);
    *labels = xt_arange(1, (double)n + 1, 1, XT_INT64);
}

static void test_workers_agree(void)
{
    xt_tensor *images, *labels;
    dataset(23, 6, 5, 3, &images, &labels);
    xt_transform pipeline[4] = {crop_tf(XT_TRANSFORM_RANDOM_CROP, 4, 4),
                                tf_of(XT_TRANSFORM_RANDOM_HORIZONTAL_FLIP),
                                tf_of(XT_TRANSFORM_TO_TENSOR), tf_of(XT_TRANSFORM_NORMALIZE)};
    for (int k = 0; k < 4; k++) pipeline[0].padding[k] = 1;
    pipeline[3].n_values = 3;
    for (int c = 0; c < 3; c++) {
        pipeline[3].mean[c] = 0.4 + 0.05 * c;
        pipeline[3].std[c] = 0.2 + 0.03 * c;
    }
    epoch_result ref, other;
    xt_loader_options o = options(5, 1, 0, 0);
    xt_loader *l = xt_loader_new_memory(images, labels, &o, 4, pipeline);
    CHECK(l && xt_loader_num_batches(l) == 5 && xt_loader_num_samples(l) == 23);
    CHECK(run_epoch(l, 3, &ref) && ref.n_batches == 5);
    xt_loader_free(l);
    CHECK(ref.n_batches == 5 && ref.inputs[0]->ndim == 4 && ref.inputs[0]->shape[0] == 5 &&
          ref.inputs[0]->shape[1] == 3 && ref.inputs[0]->shape[2] == 4 &&
          ref.inputs[0]->shape[3] == 4 && ref.inputs[4]->shape[0] == 3 &&
          ref.targets[4]->shape[0] == 3 && ref.targets[0]->dtype == XT_INT64);

    /* every sample equals the single-image transform with the same (seed, epoch, index) */
    bool each_matches = ref.n_batches == 5;
    for (int64_t b = 0; b < ref.n_batches; b++)
        for (int64_t i = 0; i < ref.targets[b]->shape[0]; i++) {
            int64_t index = ((int64_t *)ref.targets[b]->data)[i] - 1;
            xt_tensor *one = xt_select(images, 0, index);
            xt_tensor *want = xt_transform_apply(one, 4, pipeline, SEED, 3, index);
            xt_tensor *got = xt_select(ref.inputs[b], 0, i);
            each_matches = each_matches && want && test_max_diff(got, want) == 0;
            xt_tensor_release(one);
            xt_tensor_release(want);
            xt_tensor_release(got);
        }
    CHECK(each_matches);

    const int32_t worker_counts[3] = {1, 2, 2}, prefetch[3] = {0, 1, 3};
    for (int k = 0; k < 3; k++) {
        o = options(5, 1, 0, worker_counts[k]);
        o.prefetch = prefetch[k];
        l = xt_loader_new_memory(images, labels, &o, 4, pipeline);
        CHECK(run_epoch(l, 3, &other));
        CHECK(same_epochs(&ref, &other));
        epoch_free(&other);
        /* and again, the same epoch after a different one */
        CHECK(run_epoch(l, 4, &other));
        CHECK(!same_epochs(&ref, &other));
        epoch_free(&other);
        CHECK(run_epoch(l, 3, &other));
        CHECK(same_epochs(&ref, &other));
        epoch_free(&other);
        xt_loader_free(l);
    }
    epoch_free(&ref);
    xt_tensor_release(images);
    xt_tensor_release(labels);
}

/* The epoch's sample order (0-based), read from the targets (labels are index + 1). */
static bool epoch_order(xt_loader *l, int64_t epoch, int64_t n, int64_t *order)
{
    epoch_result r;
    bool ok = run_epoch(l, epoch, &r);
    int64_t k = 0;
    for (int64_t b = 0; ok && b < r.n_batches; b++)
        for (int64_t i = 0; i < r.targets[b]->shape[0] && k < n; i++)
            order[k++] = ((int64_t *)r.targets[b]->data)[i] - 1;
    epoch_free(&r);
    return ok && k == n;
}

static bool is_permutation(const int64_t *order, int64_t n)
{
    bool seen[64] = {false};
    for (int64_t i = 0; i < n; i++) {
        if (order[i] < 0 || order[i] >= n || seen[order[i]]) return false;
        seen[order[i]] = true;
    }
    return true;
}

static void test_shuffle(void)
{
    enum { N = 40 };
    xt_tensor *images, *labels;
    dataset(N, 2, 2, 1, &images, &labels);
    int64_t a[N], b[N], c[N], d[N];
    xt_loader_options o = options(8, 1, 0, 0);
    xt_loader *l = xt_loader_new_memory(images, labels, &o, 0, NULL);
    CHECK(epoch_order(l, 1, N, a) && is_permutation(a, N));
    CHECK(epoch_order(l, 2, N, b) && is_permutation(b, N));
    CHECK(memcmp(a, b, sizeof a) != 0);                      /* epochs differ */
    CHECK(epoch_order(l, 1, N, c) && memcmp(a, c, sizeof a) == 0);   /* and repeat */
    xt_loader_free(l);
    /* another batch size and two workers: the same order for the same (seed, epoch) */
    o = options(3, 1, 0, 2);
    l = xt_loader_new_memory(images, labels, &o, 0, NULL);
    CHECK(epoch_order(l, 2, N, c) && memcmp(b, c, sizeof b) == 0);
    xt_loader_free(l);
    o.seed = SEED + 1;   /* another seed, another order */
    l = xt_loader_new_memory(images, labels, &o, 0, NULL);
    CHECK(epoch_order(l, 2, N, d) && is_permutation(d, N) && memcmp(b, d, sizeof b) != 0);
    xt_loader_free(l);
    o = options(7, 0, 0, 1);   /* no shuffle: dataset order */
    l = xt_loader_new_memory(images, labels, &o, 0, NULL);
    bool identity = epoch_order(l, 5, N, d);
    for (int64_t i = 0; i < N; i++) identity = identity && d[i] == i;
    CHECK(identity);
    xt_loader_free(l);
    xt_tensor_release(images);
    xt_tensor_release(labels);
}

static void test_drop_last(void)
{
    xt_tensor *images, *labels;
    dataset(23, 3, 3, 1, &images, &labels);
    for (int drop = 0; drop <= 1; drop++)
        for (int32_t workers = 0; workers <= 2; workers += 2) {
            xt_loader_options o = options(5, 1, drop, workers);
            xt_loader *l = xt_loader_new_memory(images, labels, &o, 0, NULL);
            epoch_result r;
            CHECK(l && xt_loader_num_batches(l) == (drop ? 4 : 5));
            CHECK(run_epoch(l, 0, &r) && r.n_batches == (drop ? 4 : 5));
            int64_t total = 0;
            for (int64_t b = 0; b < r.n_batches; b++) total += r.targets[b]->shape[0];
            CHECK(total == (drop ? 20 : 23));
            CHECK(r.n_batches < 1 || r.inputs[r.n_batches - 1]->shape[0] == (drop ? 5 : 3));
            epoch_free(&r);
            xt_tensor *in, *tg;
            CHECK(xt_loader_next(l, &in, &tg) == 0);   /* the epoch stays over */
            xt_loader_free(l);
        }
    /* a batch larger than the dataset: one short batch, or none with drop_last */
    xt_loader_options o = options(100, 0, 0, 0);
    xt_loader *l = xt_loader_new_memory(images, labels, &o, 0, NULL);
    CHECK(xt_loader_num_batches(l) == 1);
    xt_loader_free(l);
    o.drop_last = 1;
    l = xt_loader_new_memory(images, labels, &o, 0, NULL);
    epoch_result r;
    CHECK(xt_loader_num_batches(l) == 0 && run_epoch(l, 0, &r) && r.n_batches == 0);
    xt_loader_free(l);
    xt_tensor_release(images);
    xt_tensor_release(labels);
}

static void test_loader_errors(void)
{
    xt_tensor *images, *labels;
    dataset(10, 4, 4, 3, &images, &labels);
    xt_loader_options o = options(0, 0, 0, 0);
    CHECK(xt_loader_new_memory(images, labels, &o, 0, NULL) == NULL &&
          test_error_has("batch_size must be >= 1"));
    o = options(4, 0, 0, -1);
    CHECK(xt_loader_new_memory(images, labels, &o, 0, NULL) == NULL &&
          test_error_has("workers in 0..256"));
    o = options(4, 0, 0, 0);
    xt_tensor *short_labels = xt_narrow(labels, 0, 0, 9);
    CHECK(xt_loader_new_memory(images, short_labels, &o, 0, NULL) == NULL &&
          test_error_has("labels must be int64 [10] (one per sample), got int64 [9]"));
    xt_tensor_release(short_labels);
    CHECK(xt_loader_new_memory(labels, labels, &o, 0, NULL) == NULL &&
          test_error_has("images must be uint8 [N,H,W,C]"));
    xt_transform bad = tf_of(XT_TRANSFORM_NORMALIZE);
    CHECK(xt_loader_new_memory(images, labels, &o, 1, &bad) == NULL &&
          test_error_has("DataLoader: transform 0 (normalize): works on float images"));

    xt_loader *l = xt_loader_new_memory(images, labels, &o, 0, NULL);
    xt_tensor *in, *tg;
    CHECK(xt_loader_next(l, &in, &tg) == -1 && test_error_has("no epoch is running"));
    xt_loader_free(l);

    /* a crop larger than the images fails in the workers and surfaces at next() */
    xt_transform crop = crop_tf(XT_TRANSFORM_RANDOM_CROP, 6, 6);
    for (int32_t workers = 0; workers <= 2; workers++) {
        o = options(4, 1, 0, workers);
        l = xt_loader_new_memory(images, labels, &o, 1, &crop);
        CHECK(l && xt_loader_start_epoch(l, 0) == XT_OK);
        CHECK(xt_loader_next(l, &in, &tg) == -1 &&
              test_error_has("DataLoader: sample ") &&
              test_error_has("random_crop: the crop 6x6 is larger than the padded image 4x4"));
        CHECK(in == NULL && tg == NULL);
        CHECK(xt_loader_next(l, &in, &tg) == -1);   /* the next batch fails the same way */
        xt_loader_free(l);   /* with the third batch possibly still in a worker */
    }
    xt_tensor_release(images);
    xt_tensor_release(labels);
}

static void test_abandon_and_free(void)
{
    xt_tensor *images, *labels;
    dataset(600, 16, 16, 3, &images, &labels);
    xt_transform pipeline[2] = {crop_tf(XT_TRANSFORM_RANDOM_RESIZED_CROP, 12, 12),
                                tf_of(XT_TRANSFORM_RANDOM_HORIZONTAL_FLIP)};
    xt_loader_options o = options(8, 1, 0, 2);
    epoch_result ref;
    xt_loader *l = xt_loader_new_memory(images, labels, &o, 2, pipeline);
    CHECK(run_epoch(l, 9, &ref) && ref.n_batches == 75);
    xt_loader_free(l);

    /* start an epoch, take two batches, switch epochs twice, finish: same as fresh */
    l = xt_loader_new_memory(images, labels, &o, 2, pipeline);
    xt_tensor *in, *tg;
    CHECK(xt_loader_start_epoch(l, 9) == XT_OK);
    for (int k = 0; k < 2; k++) {
        CHECK(xt_loader_next(l, &in, &tg) == 1);
        xt_tensor_release(in);
        xt_tensor_release(tg);
    }
    CHECK(xt_loader_start_epoch(l, 1) == XT_OK && xt_loader_start_epoch(l, 9) == XT_OK);
    bool same = true;
    for (int64_t b = 0; b < ref.n_batches; b++) {
        same = same && xt_loader_next(l, &in, &tg) == 1 && same_tensor_bytes(in, ref.inputs[b]) &&
               same_tensor_bytes(tg, ref.targets[b]);
        xt_tensor_release(in);
        xt_tensor_release(tg);
    }
    CHECK(same && xt_loader_next(l, &in, &tg) == 0);
    xt_loader_free(l);
    epoch_free(&ref);

    /* free mid-epoch: after one batch, right after starting, and before any epoch */
    for (int k = 0; k < 3; k++) {
        l = xt_loader_new_memory(images, labels, &o, 2, pipeline);
        CHECK(l != NULL);
        if (k < 2) CHECK(xt_loader_start_epoch(l, 0) == XT_OK);
        if (k == 0) {
            CHECK(xt_loader_next(l, &in, &tg) == 1);
            xt_tensor_release(in);
            xt_tensor_release(tg);
        }
        xt_loader_free(l);
    }
    xt_loader_free(NULL);
    xt_tensor_release(images);
    xt_tensor_release(labels);
}

/* ---- file sources --------------------------------------------------------------------
 * PNG files written here: lossless, so a file loader must give the memory loader's batches. */

static char tmp_dir[64];

static const char *tmp_path(const char *name)
{
    static char path[4][128];
    static int next;
    char *p = path[next++ % 4];
    snprintf(p, sizeof path[0], "%s/%s", tmp_dir, name);
    return p;
}

static bool write_bytes(const char *path, const void *bytes, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    bool ok = fwrite(bytes, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

static void test_file_source(void)
{
    enum { N = 14 };
    xt_tensor *images, *labels;
    dataset(N, 6, 5, 3, &images, &labels);
    char names[N][128];
    const char *paths[N];
    bool written = true;
    for (int64_t i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof name, "%02d.png", (int)i);
        snprintf(names[i], sizeof names[i], "%s", tmp_path(name));
        paths[i] = names[i];
        xt_tensor *one = xt_select(images, 0, i);
        written = written && xt_image_save_png(paths[i], one) == XT_OK;
        xt_tensor_release(one);
    }
    CHECK(written);
    xt_transform pipeline[4] = {crop_tf(XT_TRANSFORM_RANDOM_CROP, 5, 5),
                                tf_of(XT_TRANSFORM_RANDOM_HORIZONTAL_FLIP),
                                tf_of(XT_TRANSFORM_TO_TENSOR), tf_of(XT_TRANSFORM_NORMALIZE)};
    pipeline[0].padding[0] = 2;
    pipeline[3].mean[0] = 0.5;
    pipeline[3].std[0] = 0.25;
    xt_loader_options o = options(4, 1, 0, 0);
    epoch_result ref, got;
    xt_loader *l = xt_loader_new_memory(images, labels, &o, 4, pipeline);
    CHECK(run_epoch(l, 2, &ref) && ref.n_batches == 4);
    xt_loader_free(l);
    for (int32_t workers = 0; workers <= 2; workers += 2) {
        o = options(4, 1, 0, workers);
        l = xt_loader_new_files(N, paths, labels, &o, 4, pipeline);
        CHECK(run_epoch(l, 2, &got) && same_epochs(&ref, &got));
        epoch_free(&got);
        xt_loader_free(l);
    }
    epoch_free(&ref);

    /* a corrupt file fails its batch (the second, without shuffling) and names the file;
     * the batches before it arrive */
    uint8_t head[60];   /* the first 60 bytes of a real PNG: a truncated file */
    FILE *f = fopen(paths[6], "rb");
    CHECK(f && fread(head, 1, sizeof head, f) == sizeof head);
    if (f) fclose(f);
    CHECK(write_bytes(paths[5], head, sizeof head));
    for (int32_t workers = 0; workers <= 2; workers++) {
        o = options(4, 0, 0, workers);
        l = xt_loader_new_files(N, paths, labels, &o, 0, NULL);
        xt_tensor *in, *tg;
        CHECK(l && xt_loader_start_epoch(l, 0) == XT_OK);
        CHECK(xt_loader_next(l, &in, &tg) == 1);
        xt_tensor_release(in);
        xt_tensor_release(tg);
        CHECK(xt_loader_next(l, &in, &tg) == -1 && test_error_has("DataLoader: sample 5") &&
              test_error_has(paths[5]) && test_error_has("corrupt"));
        if (workers == 0) printf("corrupt file: %s\n", xt_last_error());
        CHECK(xt_loader_next(l, &in, &tg) == 1);   /* the third batch is fine */
        xt_tensor_release(in);
        xt_tensor_release(tg);
        xt_loader_free(l);
    }
    /* a missing file */
    const char *missing[2] = {paths[0], tmp_path("missing.png")};
    xt_tensor *two_labels = xt_narrow(labels, 0, 0, 2);
    o = options(2, 0, 0, 1);
    l = xt_loader_new_files(2, missing, two_labels, &o, 0, NULL);
    CHECK(l && xt_loader_start_epoch(l, 0) == XT_OK);
    xt_tensor *in, *tg;
    CHECK(xt_loader_next(l, &in, &tg) == -1 && test_error_has("DataLoader: sample 1") &&
          test_error_has("missing.png"));
    xt_loader_free(l);

    /* files of different sizes: an error without a crop, a batch with one; a gray file
     * decoded to 3 channels */
    uint8_t gray[25];
    for (int i = 0; i < 25; i++) gray[i] = (uint8_t)(10 * i);
    xt_tensor *small = image_u8(5, 5, 1, gray);
    CHECK(xt_image_save_png(tmp_path("gray.png"), small) == XT_OK);
    const char *mixed[2] = {paths[0], tmp_path("gray.png")};
    o = options(2, 0, 0, 0);
    o.channels = 3;
    l = xt_loader_new_files(2, mixed, two_labels, &o, 0, NULL);
    CHECK(l && xt_loader_start_epoch(l, 0) == XT_OK);
    CHECK(xt_loader_next(l, &in, &tg) == -1 &&
          test_error_has("DataLoader: sample 1 is 3x5x5 (CxHxW) after the transforms but "
                         "sample 0 of its batch is 3x6x5; add a resize or crop"));
    xt_loader_free(l);
    xt_transform crop = crop_tf(XT_TRANSFORM_CENTER_CROP, 4, 4);
    l = xt_loader_new_files(2, mixed, two_labels, &o, 1, &crop);
    CHECK(l && xt_loader_start_epoch(l, 0) == XT_OK);
    CHECK(xt_loader_next(l, &in, &tg) == 1 && in->shape[0] == 2 && in->shape[1] == 3 &&
          in->shape[2] == 4 && in->shape[3] == 4);
    /* the gray image's [0..3, 0..3] (the offset round(0.5) is 0), in all three channels */
    bool gray_ok = in != NULL;
    for (int ch = 0; gray_ok && ch < 3; ch++)
        for (int y = 0; y < 4; y++)
            for (int x = 0; x < 4; x++)
                gray_ok = gray_ok && fabsf(test_f32(in)[((1 * 3 + ch) * 4 + y) * 4 + x] -
                                           gray[y * 5 + x] / 255.0f) < 1e-6f;
    CHECK(gray_ok);
    xt_tensor_release(in);
    xt_tensor_release(tg);
    xt_loader_free(l);
    const char *with_null[2] = {paths[0], NULL};
    CHECK(xt_loader_new_files(2, with_null, two_labels, &o, 0, NULL) == NULL &&
          test_error_has("path 1 is NULL"));
    xt_tensor_release(two_labels);
    xt_tensor_release(small);
    xt_tensor_release(images);
    xt_tensor_release(labels);
}

int main(void)
{
    test_seed("test_loader", SEED);
    test_random_crop();
    test_flip();
    test_resize();
    test_resize_fixtures();
    test_center_crop();
    test_random_resized_crop();
    test_to_tensor_normalize();
    test_workers_agree();
    test_shuffle();
    test_drop_last();
    test_loader_errors();
    test_abandon_and_free();
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/xt_test_loader_XXXXXX");
    if (mkdtemp(tmp_dir)) {
        test_file_source();
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", tmp_dir);
        CHECK(system(cmd) == 0);
    } else {
        CHECK(!"cannot make a temporary directory");
    }
    return check_report("test_loader");
}
