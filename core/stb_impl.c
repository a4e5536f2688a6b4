/*
 * stb_impl.c: the one translation unit that compiles the stb_image decoder and the
 * stb_image_write JPEG encoder (Debian's libstb-dev ships the headers and a non-PIC
 * static archive, so a shared libxt compiles its own copy).
 *
 * Restricted to the formats the datasets use; decoding works on memory only (image.c
 * reads files itself so I/O errors are reported with errno). stb keeps its failure
 * reason in a thread-local (STBI_THREAD_LOCAL is defined for C11), and we never set its
 * global flip/unpremultiply flags, so decoding is safe from the loader's worker threads.
 * CMake compiles this file without our warning flags: the code is upstream's.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Every allocation stb_image makes goes through these, so that one decode can be held to
 * a budget: a corrupt chunk length or a zlib stream that never ends would otherwise grow a
 * buffer to gigabytes before stb notices the data is not there. Thread-local, as decoding
 * runs on the loader's worker threads. */
static _Thread_local size_t alloc_limit;     /* 0: no limit */
static _Thread_local bool alloc_refused;

/* Zeroed, so that a corrupt file that leaves some of stb's state unset (a table never
 * defined) decodes the same way every time instead of reading leftover memory. */
static void *limited_malloc(size_t n)
{
    if (alloc_limit && n > alloc_limit) {
        alloc_refused = true;
        return NULL;
    }
    return calloc(1, n);
}

static void *limited_realloc(void *p, size_t n)
{
    if (alloc_limit && n > alloc_limit) {
        alloc_refused = true;
        return NULL;
    }
    return realloc(p, n);
}

#define STBI_MALLOC(n) limited_malloc(n)
#define STBI_REALLOC(p, n) limited_realloc(p, n)
#define STBI_FREE(p) free(p)
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
#define STBI_ONLY_PNM
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#define STBI_FAILURE_USERMSG
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#include <stb_image.h>

#define STBI_WRITE_NO_STDIO
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#include <stb_image_write.h>

#include "image_internal.h"

/* The static stb functions, re-exported under our names for image.c. */
unsigned char *xt_stbi_load_from_memory(const unsigned char *bytes, int len, int *w, int *h,
                                        int *comp, int req_comp, size_t max_alloc,
                                        bool *over_budget)
{
    alloc_limit = max_alloc;
    alloc_refused = false;
    unsigned char *pixels = stbi_load_from_memory(bytes, len, w, h, comp, req_comp);
    *over_budget = alloc_refused;
    alloc_limit = 0;
    return pixels;
}

/* The header of one known format (stb's own stbi_info tries every format in turn, so
 * its failure reason would come from whichever it tried last). */
int xt_stbi_probe(const unsigned char *bytes, int len, int format, xt_stbi_header *out)
{
    stbi__context s;
    stbi__start_mem(&s, bytes, len);
    memset(out, 0, sizeof *out);
    switch (format) {
    case XT_STB_PNG: return stbi__png_info(&s, &out->w, &out->h, &out->comp);
    case XT_STB_JPEG: return stbi__jpeg_info(&s, &out->w, &out->h, &out->comp);
    case XT_STB_GIF: return stbi__gif_info(&s, &out->w, &out->h, &out->comp);
    case XT_STB_BMP: {
        stbi__bmp_data info;
        info.all_a = 255;
        if (!stbi__bmp_parse_header(&s, &info)) return 0;
        out->w = (int)s.img_x;
        out->h = abs((int)s.img_y);   /* negative: rows stored top-down */
        out->comp = (info.bpp == 24 && info.ma == 0xff000000) ? 3 : (info.ma ? 4 : 3);
        out->bmp_bpp = info.bpp;
        out->bmp_offset = info.offset;
        return 1;
    }
    default: return stbi__err("unknown format", "unknown format");
    }
}

const char *xt_stbi_failure_reason(void) { return stbi_failure_reason(); }

void xt_stbi_image_free(void *pixels) { stbi_image_free(pixels); }

int xt_stbi_write_jpg(xt_stbi_write_fn *fn, void *ctx, int w, int h, int comp,
                      const void *pixels, int quality)
{
    return stbi_write_jpg_to_func(fn, ctx, w, h, comp, pixels, quality);
}
