/*
 * image.c: decoding PNG, JPEG, BMP, GIF (first frame) and PNM into uint8 [H,W,C] tensors
 * with stb_image (stb_impl.c). Thread-safe: the DataLoader's worker threads call
 * xt_image_decode and xt_image_load; nothing here touches shared state beyond the
 * allocator and the thread-local error slot.
 */
#include "internal.h"
#include "stb_impl.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Larger decoded images are refused before stb allocates them: a corrupt header can
 * claim any size, and no dataset image comes near this. */
static const int64_t XT_IMAGE_MAX_BYTES = (int64_t)1 << 30;

static const char *shown_name(const char *name) { return name && *name ? name : "<memory>"; }

xt_tensor *xt_image_decode(const uint8_t *bytes, int64_t nbytes, int32_t channels,
                           const char *name)
{
    name = shown_name(name);
    if (channels < 0 || channels > 4)
        return xt_fail_null(XT_ERR_ARG, "image.decode: %s: channels must be 0 (as in the file), "
                            "1, 2, 3 or 4, got %d", name, channels);
    if (!bytes || nbytes <= 0)
        return xt_fail_null(XT_ERR_IO, "image.decode: %s: empty data (0 bytes)", name);
    if (nbytes > INT_MAX)
        return xt_fail_null(XT_ERR_IO, "image.decode: %s: %lld bytes is more than the decoder "
                            "takes (2 GiB)", name, (long long)nbytes);

    int w, h, comp;
    if (!xt_stbi_info_from_memory(bytes, (int)nbytes, &w, &h, &comp))
        return xt_fail_null(XT_ERR_IO, "image.decode: %s: not a PNG, JPEG, BMP, GIF or PNM "
                            "image, or a corrupt one (%s)", name, xt_stbi_failure_reason());
    int32_t c = channels ? channels : comp;
    if ((int64_t)w * h * c > XT_IMAGE_MAX_BYTES)
        return xt_fail_null(XT_ERR_IO, "image.decode: %s: a %dx%d image with %d channels is "
                            "larger than the 1 GiB limit (corrupt header?)", name, w, h, c);

    int dw, dh, dcomp;
    uint8_t *pixels = xt_stbi_load_from_memory(bytes, (int)nbytes, &dw, &dh, &dcomp, channels);
    if (!pixels)
        return xt_fail_null(XT_ERR_IO, "image.decode: %s: corrupt or truncated image (%s)", name,
                            xt_stbi_failure_reason());
    c = channels ? channels : dcomp;
    int64_t shape[3] = {dh, dw, c};
    xt_tensor *t = xt_empty(3, shape, XT_UINT8);
    if (t) memcpy(t->data, pixels, (size_t)dh * (size_t)dw * (size_t)c);
    xt_stbi_image_free(pixels);
    return t;
}

/* The whole file in a malloc'd buffer; NULL + error naming the path. */
static uint8_t *read_file(const char *path, int64_t *nbytes, const char *op)
{
    FILE *f = fopen(path, "rb");
    if (!f) return xt_fail_null(XT_ERR_IO, "%s: cannot open %s: %s", op, path, strerror(errno));
    uint8_t *buf = NULL;
    int64_t size = 0, cap = 0;
    for (;;) {
        if (size == cap) {
            cap = cap ? cap * 2 : 1 << 16;
            uint8_t *grown = realloc(buf, (size_t)cap);
            if (!grown) {
                free(buf);
                fclose(f);
                return xt_fail_null(XT_ERR_OOM, "%s: %s: out of memory reading the file", op, path);
            }
            buf = grown;
        }
        size_t got = fread(buf + size, 1, (size_t)(cap - size), f);
        size += (int64_t)got;
        if (got == 0) break;
    }
    int failed = ferror(f);
    int err = errno;
    fclose(f);
    if (failed) {
        free(buf);
        return xt_fail_null(XT_ERR_IO, "%s: error reading %s: %s", op, path, strerror(err));
    }
    *nbytes = size;
    return buf;
}

xt_tensor *xt_image_load(const char *path, int32_t channels)
{
    if (!path) return xt_fail_null(XT_ERR_ARG, "image.load: path is NULL");
    int64_t nbytes = 0;
    uint8_t *bytes = read_file(path, &nbytes, "image.load");
    if (!bytes) return NULL;
    xt_tensor *t = xt_image_decode(bytes, nbytes, channels, path);
    free(bytes);
    return t;
}
