/*
 * image.c: decoding PNG, JPEG, BMP, GIF (first frame) and PNM into uint8 [H,W,C] tensors
 * with stb_image (stb_impl.c), after image_probe.c has checked the header. Thread-safe: the DataLoader's worker threads call
 * xt_image_decode and xt_image_load; nothing here touches shared state beyond the
 * allocator and the thread-local error slot.
 */
#include "internal.h"
#include "image_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *shown_name(const char *name) { return name && *name ? name : "<memory>"; }

xt_tensor *xt_image_decode(const uint8_t *bytes, int64_t nbytes, int32_t channels,
                           const char *name)
{
    name = shown_name(name);
    if (channels < 0 || channels > 4)
        return xt_fail_null(XT_ERR_ARG, "image.decode: %s: channels must be 0 (as in the file), "
                            "1, 2, 3 or 4, got %d", name, channels);
    int64_t shape[3];   /* [H,W,C] as the header declares */
    if (xt_image_info(bytes, nbytes, name, shape)) return NULL;

    /* No buffer of a valid image is larger than 16-bit RGBA pixels (8 bytes each) with its
     * rows padded to whole JPEG blocks, or its compressed data twice over (stb's growing
     * PNG buffer); anything larger comes from corrupt data. */
    size_t budget = 8 * (size_t)(shape[0] + 32) * (size_t)(shape[1] + 32) +
                    2 * (size_t)nbytes + ((size_t)1 << 20);
    bool over_budget = false;
    int w, h, comp;
    uint8_t *pixels = xt_stbi_load_from_memory(bytes, (int)nbytes, &w, &h, &comp, channels,
                                               budget, &over_budget);
    if (!pixels && over_budget)
        return xt_fail_null(XT_ERR_IO, "image.decode: %s: corrupt %s: decoding a %lldx%lld image "
                            "asked for more memory than such an image needs", name,
                            xt_image_format_name(bytes, nbytes), (long long)shape[1],
                            (long long)shape[0]);
    if (!pixels)
        return xt_fail_null(XT_ERR_IO, "image.decode: %s: corrupt or truncated %s (%s)", name,
                            xt_image_format_name(bytes, nbytes), xt_stbi_failure_reason());
    if (w != shape[1] || h != shape[0]) {
        xt_stbi_image_free(pixels);
        return xt_fail_null(XT_ERR_IO, "image.decode: %s: corrupt %s: the header says %lldx%lld, "
                            "the decoder read %dx%d", name, xt_image_format_name(bytes, nbytes),
                            (long long)shape[1], (long long)shape[0], w, h);
    }
    shape[2] = channels ? channels : comp;
    xt_tensor *t = xt_empty(3, shape, XT_UINT8);
    if (t) memcpy(t->data, pixels, (size_t)(shape[0] * shape[1] * shape[2]));
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
