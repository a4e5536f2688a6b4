/*
 * image_probe.c: everything checked before stb_image decodes a single pixel: the format
 * (from the magic bytes, so errors can name it), the size the header declares (refused
 * above 256 MiB decoded as RGBA), and the checks stb v2.27 lacks:
 *  - PNM and BMP rows are stored uncompressed, so a truncated file is recognised by its
 *    length; stb would return the missing rows as zeros (BMP) or uninitialised memory
 *    (PNM), never an error;
 *  - PNM header numbers: stb accumulates digits in an int without an overflow check;
 *  - 16-bit PNM: stb swaps the bytes and overruns its buffer converting channels;
 *  - JPEG Huffman tables that overflow stb's arrays, or that scans use undefined
 *    (jpeg_check.c).
 * Thread-safe: no state beyond the thread-local error slots.
 */
#include "internal.h"
#include "image_internal.h"

#include <string.h>

/* At most this many bytes decoded as RGBA (67 million pixels, 8192x8192): stb's GIF
 * decoder alone needs 9 bytes a pixel, and a worker thread should not take gigabytes
 * because a corrupt header asked for them. */
static const int64_t XT_IMAGE_MAX_BYTES = (int64_t)1 << 28;
enum { XT_IMAGE_MAX_SIDE = 1 << 24 };   /* stb's STBI_MAX_DIMENSIONS */

static const char *FORMAT_NAMES[] = {"?", "PNG", "JPEG", "GIF", "BMP", "PNM"};

/* The format stb would pick for these bytes, or 0. */
static int sniff_format(const uint8_t *b, int64_t n)
{
    static const uint8_t png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    if (n >= 8 && memcmp(b, png, 8) == 0) return XT_STB_PNG;
    if (n >= 6 && memcmp(b, "GIF8", 4) == 0 && (b[4] == '7' || b[4] == '9') && b[5] == 'a')
        return XT_STB_GIF;
    if (n >= 2 && b[0] == 'B' && b[1] == 'M') return XT_STB_BMP;
    if (n >= 2 && b[0] == 'P' && (b[1] == '5' || b[1] == '6')) return XT_STB_PNM;
    if (n >= 2 && b[0] == 0xFF) {   /* SOI, possibly after 0xFF fill bytes */
        int64_t i = 1;
        while (i < n && b[i] == 0xFF) i++;
        if (i < n && b[i] == 0xD8) return XT_STB_JPEG;
    }
    return 0;
}

/* ---- PNM (binary P5 gray, P6 RGB), read as stb reads it ------------------------------ */

static bool pnm_space(int c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

typedef struct pnm_reader {
    const uint8_t *b;
    int64_t n, pos;
    int c;   /* the current character, already consumed */
} pnm_reader;

static void pnm_next(pnm_reader *r) { r->c = r->pos < r->n ? r->b[r->pos++] : 0; }

static void pnm_skip_space(pnm_reader *r)
{
    for (;;) {
        while (r->pos < r->n && pnm_space(r->c)) pnm_next(r);
        if (r->pos >= r->n || r->c != '#') return;
        while (r->pos < r->n && r->c != '\n' && r->c != '\r') pnm_next(r);   /* a comment */
    }
}

/* A decimal number; -1 when it exceeds limit. */
static int64_t pnm_number(pnm_reader *r, int64_t limit)
{
    int64_t value = 0;
    while (r->pos < r->n && r->c >= '0' && r->c <= '9') {
        value = value * 10 + (r->c - '0');
        if (value > limit) return -1;
        pnm_next(r);
    }
    return value;
}

static xt_status probe_pnm(const uint8_t *b, int64_t n, const char *name, int64_t *shape)
{
    pnm_reader r = {b, n, 2, 0};
    int64_t comp = b[1] == '6' ? 3 : 1;
    pnm_next(&r);
    pnm_skip_space(&r);
    int64_t w = pnm_number(&r, XT_IMAGE_MAX_SIDE);
    pnm_skip_space(&r);
    int64_t h = pnm_number(&r, XT_IMAGE_MAX_SIDE);
    pnm_skip_space(&r);
    int64_t maxval = pnm_number(&r, 65535);
    if (w <= 0 || h <= 0 || maxval <= 0)
        return xt_fail(XT_ERR_IO, "image.decode: %s: corrupt PNM header (width, height and "
                       "maximum value must be 1..%d, 1..%d and 1..65535)", name,
                       XT_IMAGE_MAX_SIDE, XT_IMAGE_MAX_SIDE);
    /* stb v2.27 reads 16-bit samples in the wrong byte order and converts their channels
     * past its buffer (found by our fuzzer) */
    if (maxval > 255)
        return xt_fail(XT_ERR_IO, "image.decode: %s: 16-bit PNM (maximum value %lld) is not "
                       "supported; convert it to 8 bits", name, (long long)maxval);
    /* the pixels start after the one character that ended the maximum value */
    int64_t need = w * h * comp, have = n - r.pos;
    if (have < need)
        return xt_fail(XT_ERR_IO, "image.decode: %s: truncated PNM: %lldx%lld pixels need %lld "
                       "bytes, the file has %lld", name, (long long)w, (long long)h,
                       (long long)need, (long long)(have > 0 ? have : 0));
    shape[0] = h;
    shape[1] = w;
    shape[2] = comp;
    return XT_OK;
}

/* ---- BMP ---------------------------------------------------------------------------- */

static xt_status check_bmp_length(const xt_stbi_header *hd, int64_t n, const char *name)
{
    int64_t bpp = hd->bmp_bpp;
    if (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 16 && bpp != 24 && bpp != 32)
        return XT_OK;   /* stb refuses these itself */
    int64_t stride = (hd->w * bpp + 31) / 32 * 4;   /* rows are padded to 4 bytes */
    int64_t need = (int64_t)hd->bmp_offset + stride * (hd->h - 1) + (hd->w * bpp + 7) / 8;
    if (n < need)
        return xt_fail(XT_ERR_IO, "image.decode: %s: truncated BMP: %dx%d pixels at %d bits "
                       "end at byte %lld, the file has %lld", name, hd->w, hd->h, hd->bmp_bpp,
                       (long long)need, (long long)n);
    return XT_OK;
}

/* ---- the probe ------------------------------------------------------------------------ */

xt_status xt_image_info(const uint8_t *bytes, int64_t nbytes, const char *name, int64_t *shape)
{
    name = name && *name ? name : "<memory>";
    if (!shape) return xt_fail(XT_ERR_ARG, "image.info: %s: shape is NULL", name);
    if (!bytes || nbytes <= 0)
        return xt_fail(XT_ERR_IO, "image.decode: %s: empty data (0 bytes)", name);
    if (nbytes > INT32_MAX)
        return xt_fail(XT_ERR_IO, "image.decode: %s: %lld bytes is more than the decoder takes "
                       "(2 GiB)", name, (long long)nbytes);
    int format = sniff_format(bytes, nbytes);
    if (!format) {
        uint8_t head[4] = {0};
        memcpy(head, bytes, (size_t)(nbytes < 4 ? nbytes : 4));
        return xt_fail(XT_ERR_IO, "image.decode: %s: not a PNG, JPEG, BMP, GIF or PNM image (it "
                       "starts with bytes %02x %02x %02x %02x)", name, head[0], head[1], head[2],
                       head[3]);
    }
    if (format == XT_STB_PNM) {
        if (probe_pnm(bytes, nbytes, name, shape)) return xt_last_status();
    } else {
        const char *problem = format == XT_STB_JPEG ? xt_jpeg_check(bytes, nbytes) : NULL;
        if (problem) return xt_fail(XT_ERR_IO, "image.decode: %s: corrupt JPEG (%s)", name, problem);
        xt_stbi_header hd;
        if (!xt_stbi_probe(bytes, (int)nbytes, format, &hd))
            return xt_fail(XT_ERR_IO, "image.decode: %s: corrupt or truncated %s header (%s)", name,
                           FORMAT_NAMES[format], xt_stbi_failure_reason());
        if (hd.w <= 0 || hd.h <= 0 || hd.w > XT_IMAGE_MAX_SIDE || hd.h > XT_IMAGE_MAX_SIDE)
            return xt_fail(XT_ERR_IO, "image.decode: %s: corrupt %s header (size %dx%d)", name,
                           FORMAT_NAMES[format], hd.w, hd.h);
        if (format == XT_STB_BMP && check_bmp_length(&hd, nbytes, name)) return xt_last_status();
        shape[0] = hd.h;
        shape[1] = hd.w;
        shape[2] = hd.comp;
    }
    if (shape[0] * shape[1] * 4 > XT_IMAGE_MAX_BYTES)   /* 4: the most channels we decode to */
        return xt_fail(XT_ERR_IO, "image.decode: %s: a %lldx%lld %s image is larger than the "
                       "decoder's limit (256 MiB as RGBA; corrupt header?)", name,
                       (long long)shape[1], (long long)shape[0], FORMAT_NAMES[format]);
    return XT_OK;
}

const char *xt_image_format_name(const uint8_t *bytes, int64_t nbytes)
{
    return FORMAT_NAMES[bytes && nbytes > 0 ? sniff_format(bytes, nbytes) : 0];
}
