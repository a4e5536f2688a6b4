/*
 * datasets.c: the bulk readers behind xt.data: IDX files (MNIST, Fashion-MNIST; gzip or
 * plain) and CIFAR binary batches. They parse whole files in C so Lua never loops over
 * bytes; every malformed file gives an error naming it and what was wrong.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

/* ---- IDX ----------------------------------------------------------------------------
 * A big-endian header: 0x00 0x00 <type> <ndim>, then ndim uint32 sizes, then the
 * elements in C order. Only type 0x08 (unsigned byte) occurs in the image datasets. */

/* Refuse headers that promise more than this many elements: a corrupt header can claim
 * anything, and the largest IDX dataset (MNIST-style 60000x28x28) is far below it. */
static const int64_t XT_IDX_MAX_ELEMENTS = (int64_t)1 << 34;

static const char *idx_type_name(int type)
{
    switch (type) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return "unknown";
    }
}

/* Read up to n bytes into buf; returns the count read (short only at the end of the
 * file), or -1 with the error set, naming path. */
static int64_t gz_read_all(gzFile f, void *buf, int64_t n, const char *path)
{
    int64_t done = 0;
    while (done < n) {
        int64_t chunk = n - done < (1 << 30) ? n - done : (1 << 30);
        int got = gzread(f, (char *)buf + done, (unsigned)chunk);
        int errnum = Z_OK;
        const char *message = got <= 0 ? gzerror(f, &errnum) : "";
        /* a truncated gzip stream reads short and leaves Z_BUF_ERROR behind */
        if (got < 0 || (got == 0 && errnum != Z_OK)) {
            xt_fail(XT_ERR_IO, "read_idx: %s: cannot read the file: %s", path,
                    errnum == Z_ERRNO ? strerror(errno) : message);
            return -1;
        }
        if (got == 0) break;
        done += got;
    }
    return done;
}

/* Exactly n more bytes of the header (after `before` bytes), else an error. */
static bool read_header(gzFile f, void *buf, int64_t n, int64_t before, const char *path)
{
    int64_t got = gz_read_all(f, buf, n, path);
    if (got == n) return true;
    if (got >= 0)
        xt_fail(XT_ERR_IO, "read_idx: %s: file too short for an IDX header (%lld bytes)", path,
                (long long)(before + got));
    return false;
}

xt_tensor *xt_read_idx(const char *path)
{
    if (!path) return xt_fail_null(XT_ERR_ARG, "read_idx: path is NULL");
    gzFile f = gzopen(path, "rb");   /* reads gzip and plain files alike */
    if (!f) return xt_fail_null(XT_ERR_IO, "read_idx: cannot open %s: %s", path, strerror(errno));
    xt_tensor *t = NULL;
    uint8_t *data = NULL;

    uint8_t magic[4];
    if (!read_header(f, magic, 4, 0, path)) goto done;
    if (magic[0] != 0 || magic[1] != 0) {
        xt_fail(XT_ERR_IO, "read_idx: %s: not an IDX file (magic bytes %02x %02x %02x %02x, "
                "expected 00 00 08 <ndim>)", path, magic[0], magic[1], magic[2], magic[3]);
        goto done;
    }
    if (magic[2] != 0x08) {
        xt_fail(XT_ERR_IO, "read_idx: %s: element type 0x%02x (%s); only unsigned bytes (0x08) "
                "are supported", path, magic[2], idx_type_name(magic[2]));
        goto done;
    }
    int32_t ndim = magic[3];
    if (ndim < 1 || ndim > XT_MAX_DIMS) {
        xt_fail(XT_ERR_IO, "read_idx: %s: %d dims in the header; expected 1 to %d", path, ndim,
                XT_MAX_DIMS);
        goto done;
    }
    uint8_t raw[4 * XT_MAX_DIMS];
    if (!read_header(f, raw, 4 * ndim, 4, path)) goto done;
    /* n: the element count; nonzero: the product of the nonzero sizes, which bounds the
     * strides of even an empty tensor */
    int64_t shape[XT_MAX_DIMS], n = 1, nonzero = 1;
    for (int32_t i = 0; i < ndim; i++) {
        const uint8_t *b = raw + 4 * i;
        shape[i] = (int64_t)b[0] << 24 | (int64_t)b[1] << 16 | (int64_t)b[2] << 8 | b[3];
        if (shape[i] != 0 && nonzero > XT_IDX_MAX_ELEMENTS / shape[i]) {
            char buf[XT_SHAPE_STR];
            xt_fail(XT_ERR_IO, "read_idx: %s: implausible sizes %s in the header (corrupt file?)",
                    path, xt_shape_str(buf, i + 1, shape));
            goto done;
        }
        n *= shape[i];
        if (shape[i] != 0) nonzero *= shape[i];
    }

    /* Read into a buffer that grows with the data actually present, so a header that
     * lies about the size cannot make us allocate it up front. */
    int64_t cap = n < (1 << 20) ? n : (1 << 20), have = 0;
    data = malloc((size_t)(cap ? cap : 1));
    while (data && have < n) {
        if (have == cap) {
            cap = cap * 2 < n ? cap * 2 : n;
            uint8_t *grown = realloc(data, (size_t)cap);
            if (!grown) break;
            data = grown;
        }
        int64_t got = gz_read_all(f, data + have, cap - have, path);
        if (got < 0) goto done;
        have += got;
        if (have < cap) {
            char buf[XT_SHAPE_STR];
            xt_fail(XT_ERR_IO, "read_idx: %s: file too short: the header's sizes %s need %lld "
                    "data bytes, the file has %lld", path, xt_shape_str(buf, ndim, shape),
                    (long long)n, (long long)have);
            goto done;
        }
    }
    if (!data || have < n) {
        xt_fail(XT_ERR_OOM, "read_idx: %s: out of memory reading %lld bytes", path, (long long)n);
        goto done;
    }
    char extra;
    int64_t more = gz_read_all(f, &extra, 1, path);   /* also catches a damaged gzip trailer */
    if (more < 0) goto done;
    if (more > 0) {
        char buf[XT_SHAPE_STR];
        xt_fail(XT_ERR_IO, "read_idx: %s: more data after the %lld bytes the header's sizes %s "
                "describe (wrong file or corrupt header)", path, (long long)n,
                xt_shape_str(buf, ndim, shape));
        goto done;
    }
    t = xt_from_data(ndim, shape, XT_UINT8, data);

done:
    free(data);
    gzclose(f);
    return t;
}

/* ---- CIFAR ------------------------------------------------------------------------
 * Fixed-size records: label_bytes label bytes (CIFAR-10: the class; CIFAR-100: coarse,
 * then fine), then a 32x32 image as 1024 red, 1024 green, 1024 blue bytes, rows top to
 * bottom. We return images HWC, as every other reader does. */

enum { CIFAR_SIDE = 32, CIFAR_PIXELS = 32 * 32, CIFAR_IMAGE_BYTES = 3 * 32 * 32 };

xt_tensor *xt_read_cifar(const char *path, int32_t label_bytes, xt_tensor **labels)
{
    if (labels) *labels = NULL;
    if (!path) return xt_fail_null(XT_ERR_ARG, "read_cifar: path is NULL");
    if (!labels) return xt_fail_null(XT_ERR_ARG, "read_cifar: %s: labels is NULL", path);
    if (label_bytes != 1 && label_bytes != 2)
        return xt_fail_null(XT_ERR_ARG, "read_cifar: %s: label_bytes must be 1 (CIFAR-10) or 2 "
                            "(CIFAR-100), got %d", path, label_bytes);
    FILE *f = fopen(path, "rb");
    if (!f)
        return xt_fail_null(XT_ERR_IO, "read_cifar: cannot open %s: %s", path, strerror(errno));
    xt_tensor *images = NULL, *lab = NULL;
    uint8_t *chunk = NULL;
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        xt_fail(XT_ERR_IO, "read_cifar: %s: not a regular file", path);
        goto fail;
    }
    int64_t record = label_bytes + CIFAR_IMAGE_BYTES, size = st.st_size;
    if (size == 0 || size % record != 0) {
        xt_fail(XT_ERR_IO, "read_cifar: %s: size %lld bytes is not a positive multiple of the "
                "%lld-byte record (%d label byte%s + 3072 pixel bytes): wrong file, truncated, "
                "or wrong label_bytes (CIFAR-10 has 1, CIFAR-100 has 2)", path, (long long)size,
                (long long)record, label_bytes, label_bytes == 1 ? "" : "s");
        goto fail;
    }
    int64_t n = size / record;
    int64_t image_shape[4] = {n, CIFAR_SIDE, CIFAR_SIDE, 3}, label_shape[2] = {n, label_bytes};
    images = xt_empty(4, image_shape, XT_UINT8);   /* [N,32,32,3] */
    lab = xt_empty(2, label_shape, XT_UINT8);      /* [N,label_bytes] */
    enum { RECORDS_PER_CHUNK = 1024 };
    chunk = malloc((size_t)(record * (n < RECORDS_PER_CHUNK ? n : RECORDS_PER_CHUNK)));
    if (!images || !lab || !chunk) {
        xt_fail(XT_ERR_OOM, "read_cifar: %s: out of memory for %lld images", path, (long long)n);
        goto fail;
    }
    uint8_t *out = images->data, *out_labels = lab->data;
    for (int64_t first = 0; first < n; first += RECORDS_PER_CHUNK) {
        int64_t count = n - first < RECORDS_PER_CHUNK ? n - first : RECORDS_PER_CHUNK;
        size_t got = fread(chunk, (size_t)record, (size_t)count, f);
        if ((int64_t)got != count) {
            xt_fail(XT_ERR_IO, "read_cifar: %s: read failed after %lld of %lld records: %s", path,
                    (long long)(first + (int64_t)got), (long long)n,
                    ferror(f) ? strerror(errno) : "the file got shorter");
            goto fail;
        }
        for (int64_t r = 0; r < count; r++) {
            const uint8_t *rec = chunk + r * record;
            memcpy(out_labels + (first + r) * label_bytes, rec, (size_t)label_bytes);
            const uint8_t *planes = rec + label_bytes;                /* [3,32,32] */
            uint8_t *hwc = out + (first + r) * CIFAR_IMAGE_BYTES;      /* [32,32,3] */
            for (int p = 0; p < CIFAR_PIXELS; p++) {
                hwc[3 * p + 0] = planes[p];
                hwc[3 * p + 1] = planes[CIFAR_PIXELS + p];
                hwc[3 * p + 2] = planes[2 * CIFAR_PIXELS + p];
            }
        }
    }
    free(chunk);
    fclose(f);
    *labels = lab;
    return images;

fail:
    free(chunk);
    fclose(f);
    xt_tensor_release(images);
    xt_tensor_release(lab);
    return NULL;
}
