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

#include "stb_impl.h"

/* The static stb functions, re-exported under our names for image.c. */
unsigned char *xt_stbi_load_from_memory(const unsigned char *bytes, int len, int *w, int *h,
                                        int *comp, int req_comp)
{
    return stbi_load_from_memory(bytes, len, w, h, comp, req_comp);
}

int xt_stbi_info_from_memory(const unsigned char *bytes, int len, int *w, int *h, int *comp)
{
    return stbi_info_from_memory(bytes, len, w, h, comp);
}

const char *xt_stbi_failure_reason(void) { return stbi_failure_reason(); }

void xt_stbi_image_free(void *pixels) { stbi_image_free(pixels); }

int xt_stbi_write_jpg(xt_stbi_write_fn *fn, void *ctx, int w, int h, int comp,
                      const void *pixels, int quality)
{
    return stbi_write_jpg_to_func(fn, ctx, w, h, comp, pixels, quality);
}
