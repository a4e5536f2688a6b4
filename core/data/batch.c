/*
 * batch.c: building one batch. Each sample is read from the source (a view into the
 * in-memory images, or a decoded file), put through the geometric transforms, and
 * written by to_tensor/normalize straight into its row of the batch tensor.
 */
#include "data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void source_free(data_source *src)
{
    xt_tensor_release(src->images);
    if (src->paths)
        for (int64_t i = 0; i < src->n; i++) free(src->paths[i]);
    free(src->paths);
    free(src->labels);
    memset(src, 0, sizeof *src);
}

/* Sample `index` as a uint8 HWC image. A decoded file comes back in *owned (release it
 * when done); a memory sample is a view into the source. */
static xt_status source_image(const data_source *src, int64_t index, image_u8 *img,
                              xt_tensor **owned)
{
    *owned = NULL;
    if (src->kind == SOURCE_MEMORY) {
        const xt_tensor *t = src->images;
        int64_t h = t->shape[1], w = t->shape[2], c = t->ndim == 4 ? t->shape[3] : 1;
        *img = (image_u8){(const uint8_t *)t->data + index * h * w * c, h, w, c};
        return XT_OK;
    }
    xt_tensor *t = xt_image_load(src->paths[index], src->channels);
    if (!t) return xt_last_status();
    if (t->dtype != XT_UINT8 || t->ndim != 3 || !xt_is_contiguous(t)) {
        xt_tensor_release(t);
        return xt_fail(XT_ERR_IO, "image_load returned a %s tensor of %d dims, expected a "
                       "contiguous uint8 [H,W,C]", xt_dtype_name(t->dtype), t->ndim);
    }
    *img = (image_u8){t->data, t->shape[0], t->shape[1], t->shape[2]};
    *owned = t;
    return XT_OK;
}

/* "DataLoader: sample 18 (path): " before the current message; the path is left out
 * when the message already names it. */
static void name_sample(const data_source *src, int64_t index)
{
    char prefix[1200];
    const char *path = src->kind == SOURCE_FILES ? src->paths[index] : NULL;
    if (path && !strstr(xt_last_error(), path))
        snprintf(prefix, sizeof prefix, "DataLoader: sample %lld (%s): ", (long long)xt_shown(index), path);
    else
        snprintf(prefix, sizeof prefix, "DataLoader: sample %lld: ", (long long)xt_shown(index));
    xt_error_prefix(prefix);
}

static bool cancelled(cancel_token cancel)
{
    return cancel.flag && __atomic_load_n(cancel.flag, __ATOMIC_ACQUIRE) != cancel.expected;
}

xt_status batch_build(const data_source *src, int32_t n_tf, const xt_transform *tf,
                      const int64_t *indices, int64_t count, uint64_t aug_key,
                      transform_scratch *s, cancel_token cancel, xt_tensor **input,
                      xt_tensor **target)
{
    *input = *target = NULL;
    const int32_t split = transforms_split(n_tf, tf);
    const int32_t n_after = split < n_tf ? n_tf - split - 1 : 0;   /* the normalize steps */
    xt_tensor *in = NULL, *tg = xt_empty(1, &count, XT_INT64);
    if (!tg) return xt_last_status();
    int64_t first_shape[3] = {0, 0, 0};   /* [c, h, w] of the batch's first sample */
    int64_t *labels = tg->data;
    for (int64_t i = 0; i < count; i++) {
        if (cancelled(cancel)) {
            xt_fail(XT_ERR_STATE, "DataLoader: batch cancelled");
            goto fail;
        }
        int64_t index = indices[i];
        image_u8 img, out;
        xt_tensor *owned;
        if (source_image(src, index, &img, &owned)) {
            name_sample(src, index);
            goto fail;
        }
        sample_rng rng;
        sample_rng_init(&rng, aug_key, index);
        xt_status st = transforms_geometric(&img, split, tf, &rng, s, &out);
        if (st == XT_OK) {
            int64_t shape[3] = {out.c, out.h, out.w};
            if (i == 0) {
                int64_t batch_shape[4] = {count, out.c, out.h, out.w};
                memcpy(first_shape, shape, sizeof shape);
                in = xt_empty(4, batch_shape, XT_FLOAT32);
                st = in ? XT_OK : xt_last_status();
            } else if (memcmp(shape, first_shape, sizeof shape) != 0) {
                xt_fail(XT_ERR_SHAPE, "DataLoader: sample %lld is %lldx%lldx%lld (CxHxW) after "
                        "the transforms but sample %lld of its batch is %lldx%lldx%lld; add a "
                        "resize or crop transform so that every sample has one size",
                        (long long)xt_shown(index), (long long)shape[0], (long long)shape[1],
                        (long long)shape[2], (long long)xt_shown(indices[0]),
                        (long long)first_shape[0], (long long)first_shape[1],
                        (long long)first_shape[2]);
                xt_tensor_release(owned);
                goto fail;
            }
        }
        if (st == XT_OK) {
            float *row = (float *)in->data + i * out.c * out.h * out.w;
            st = transforms_to_float(&out, n_after, tf + n_tf - n_after, row);
        }
        xt_tensor_release(owned);
        if (st != XT_OK) {
            name_sample(src, index);
            goto fail;
        }
        labels[i] = src->labels[index];
    }
    if (count == 0) {   /* an empty batch has no sample to take its size from */
        int64_t empty_shape[4] = {0, 0, 0, 0};
        in = xt_empty(4, empty_shape, XT_FLOAT32);
        if (!in) goto fail;
    }
    *input = in;
    *target = tg;
    return XT_OK;
fail:
    xt_tensor_release(in);
    xt_tensor_release(tg);
    return xt_last_status();
}
