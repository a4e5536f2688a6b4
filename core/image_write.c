/*
 * image_write.c: writing uint8 [H,W] or [H,W,C] tensors as 8-bit PNG (libpng) or JPEG
 * (stb_image_write). Files are written atomically: into a temporary file beside the
 * target, then renamed over it, so a reader never sees half an image.
 */
#include "internal.h"
#include "image_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Check t is an image (uint8 [H,W] or [H,W,C], C 1..4) and read its size. */
static xt_status image_shape(const xt_tensor *t, const char *op, const char *path, int *h, int *w,
                             int *c)
{
    char shape[XT_SHAPE_STR];
    if (!t) return xt_fail(XT_ERR_ARG, "%s: %s: tensor is NULL", op, path);
    if (t->dtype != XT_UINT8)
        return xt_fail(XT_ERR_DTYPE, "%s: %s: expected a uint8 image [H,W] or [H,W,C], got %s %s; "
                       "convert first, e.g. xt.image.to_uint8(t) for a float [C,H,W] image in "
                       "[0,1]", op, path, xt_dtype_name(t->dtype),
                       xt_shape_str(shape, t->ndim, t->shape));
    bool ok = (t->ndim == 2 || (t->ndim == 3 && t->shape[2] >= 1 && t->shape[2] <= 4)) &&
              t->shape[0] > 0 && t->shape[1] > 0 && t->shape[0] <= INT_MAX / 4 &&
              t->shape[1] <= INT_MAX / 4;
    if (!ok)
        return xt_fail(XT_ERR_SHAPE, "%s: %s: expected a uint8 image [H,W] or [H,W,C] with C "
                       "1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA), got %s", op, path,
                       xt_shape_str(shape, t->ndim, t->shape));
    *h = (int)t->shape[0];
    *w = (int)t->shape[1];
    *c = t->ndim == 3 ? (int)t->shape[2] : 1;
    return XT_OK;
}

/* A temporary file beside path: "<path>.tmp-<pid>-<n>", created with O_EXCL so two
 * writers (threads or processes) never share one, and with mode 0666 & ~umask as any
 * new file. */
typedef struct atomic_file {
    FILE *f;
    char tmp[4096];
} atomic_file;

static xt_status atomic_open(atomic_file *af, const char *path, const char *op)
{
    static uint64_t counter;   /* atomic */
    int fd = -1;
    for (int attempt = 0; fd < 0 && attempt < 100; attempt++) {
        uint64_t n = __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED);
        if ((size_t)snprintf(af->tmp, sizeof af->tmp, "%s.tmp-%ld-%llu", path, (long)getpid(),
                             (unsigned long long)n) >= sizeof af->tmp)
            return xt_fail(XT_ERR_IO, "%s: path too long: %s", op, path);
        fd = open(af->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) return xt_fail(XT_ERR_IO, "%s: cannot create %s: %s", op, af->tmp, strerror(errno));
    af->f = fdopen(fd, "wb");
    if (!af->f) {
        int err = errno;
        close(fd);
        unlink(af->tmp);
        return xt_fail(XT_ERR_IO, "%s: cannot write %s: %s", op, af->tmp, strerror(err));
    }
    return XT_OK;
}

/* Close, then rename over path when ok; otherwise remove the temporary file. No fsync:
 * the rename already keeps readers from seeing a partial image, and an export of 60000
 * images should not wait on the disk for each one. */
static xt_status atomic_close(atomic_file *af, const char *path, bool ok, const char *op)
{
    bool write_failed = ferror(af->f) != 0;
    int err = errno;
    if (fclose(af->f) != 0 && !write_failed) {
        write_failed = true;
        err = errno;
    }
    if (!ok || write_failed) {
        unlink(af->tmp);
        if (!ok) return XT_ERR_IO;   /* the caller set the message */
        return xt_fail(XT_ERR_IO, "%s: error writing %s: %s", op, path, strerror(err));
    }
    if (rename(af->tmp, path) != 0) {
        err = errno;
        unlink(af->tmp);
        return xt_fail(XT_ERR_IO, "%s: cannot rename %s to %s: %s", op, af->tmp, path,
                       strerror(err));
    }
    return XT_OK;
}

/* ---- PNG ------------------------------------------------------------------------- */

typedef struct png_failure {
    jmp_buf jump;
    char message[256];
} png_failure;

static void png_on_error(png_structp png, png_const_charp message)
{
    png_failure *failure = png_get_error_ptr(png);
    snprintf(failure->message, sizeof failure->message, "%s", message);
    longjmp(failure->jump, 1);
}

static void png_on_warning(png_structp png, png_const_charp message) {}

/* Encode rows into f; false with failure->message set on a libpng error. The pointers
 * libpng needs across the longjmp live in the caller's frame (volatile not needed). */
static bool png_encode(FILE *f, const uint8_t *pixels, int h, int w, int c, png_failure *failure,
                       png_bytep *rows)
{
    static const int color_types[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                                       PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, failure, png_on_error,
                                              png_on_warning);
    if (!png) {
        snprintf(failure->message, sizeof failure->message, "out of memory");
        return false;
    }
    png_infop info = png_create_info_struct(png);
    if (!info || setjmp(failure->jump)) {
        if (!info) snprintf(failure->message, sizeof failure->message, "out of memory");
        png_destroy_write_struct(&png, info ? &info : NULL);
        return false;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, color_types[c], PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    for (int y = 0; y < h; y++) rows[y] = (png_bytep)(pixels + (size_t)y * w * c);
    png_set_rows(png, info, rows);
    png_write_png(png, info, PNG_TRANSFORM_IDENTITY, NULL);
    png_destroy_write_struct(&png, &info);
    return true;
}

xt_status xt_image_save_png(const char *path, xt_tensor *t)
{
    const char *op = "image.save_png";
    if (!path) return xt_fail(XT_ERR_ARG, "%s: path is NULL", op);
    int h = 0, w = 0, c = 0;
    if (image_shape(t, op, path, &h, &w, &c)) return xt_last_status();
    xt_tensor *img = xt_contiguous(t);
    png_bytep *rows = malloc((size_t)h * sizeof *rows);
    if (!img || !rows) {
        xt_tensor_release(img);
        free(rows);
        return xt_fail(XT_ERR_OOM, "%s: %s: out of memory", op, path);
    }
    atomic_file af;
    xt_status st = atomic_open(&af, path, op);
    if (st == XT_OK) {
        png_failure failure = {.message = ""};
        bool ok = png_encode(af.f, img->data, h, w, c, &failure, rows);
        if (!ok) xt_fail(XT_ERR_IO, "%s: %s: libpng: %s", op, path, failure.message);
        st = atomic_close(&af, path, ok, op);
    }
    free(rows);
    xt_tensor_release(img);
    return st;
}

/* ---- JPEG -------------------------------------------------------------------------- */

static void write_to_file(void *ctx, void *data, int size)
{
    fwrite(data, 1, (size_t)size, (FILE *)ctx);
}

xt_status xt_image_save_jpeg(const char *path, xt_tensor *t, int32_t quality)
{
    const char *op = "image.save_jpeg";
    if (!path) return xt_fail(XT_ERR_ARG, "%s: path is NULL", op);
    if (quality < 1 || quality > 100)
        return xt_fail(XT_ERR_ARG, "%s: %s: quality must be in 1..100, got %d", op, path, quality);
    int h = 0, w = 0, c = 0;
    if (image_shape(t, op, path, &h, &w, &c)) return xt_last_status();
    if (h > 65535 || w > 65535)
        return xt_fail(XT_ERR_SHAPE, "%s: %s: JPEG holds at most 65535x65535 pixels, got %dx%d",
                       op, path, h, w);
    xt_tensor *img = xt_contiguous(t);
    if (!img) return xt_last_status();
    atomic_file af;
    xt_status st = atomic_open(&af, path, op);
    if (st == XT_OK) {
        bool ok = xt_stbi_write_jpg(write_to_file, af.f, w, h, c, img->data, quality) != 0;
        if (!ok) xt_fail(XT_ERR_IO, "%s: %s: the JPEG encoder failed", op, path);
        st = atomic_close(&af, path, ok, op);
    }
    xt_tensor_release(img);
    return st;
}
