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

#include <stdlib.h>
#include <string.h>

#include "image_internal.h"

/* The static stb functions, re-exported under our names for image.c. */
unsigned char *xt_stbi_load_from_memory(const unsigned char *bytes, int len, int *w, int *h,
                                        int *comp, int req_comp)
{
    return stbi_load_from_memory(bytes, len, w, h, comp, req_comp);
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
