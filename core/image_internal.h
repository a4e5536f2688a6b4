/*
 * image_internal.h: what the image files share: the stb_image / stb_image_write entry
 * points (stb_impl.c, the one file that includes the stb implementation), the JPEG guard
 * (jpeg_check.c) and the format sniffing (image_probe.c).
 */
#ifndef XT_IMAGE_INTERNAL_H
#define XT_IMAGE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Decoded pixels, rows top to bottom, comp (or req_comp) bytes per pixel; free with
 * xt_stbi_image_free. NULL on failure, with the reason in xt_stbi_failure_reason();
 * *over_budget is set when the failure was an allocation above max_alloc bytes (0: none). */
unsigned char *xt_stbi_load_from_memory(const unsigned char *bytes, int len, int *w, int *h,
                                        int *comp, int req_comp, size_t max_alloc,
                                        bool *over_budget);
enum { XT_STB_PNG = 1, XT_STB_JPEG, XT_STB_GIF, XT_STB_BMP, XT_STB_PNM };
typedef struct xt_stbi_header {
    int w, h, comp;
    int bmp_bpp, bmp_offset;   /* BMP only: bits per pixel, where the pixel rows start */
} xt_stbi_header;
/* Parse the header of an image of the given format (not PNM: image_probe.c reads those).
 * 1 on success, else 0 with the reason in xt_stbi_failure_reason(). */
int xt_stbi_probe(const unsigned char *bytes, int len, int format, xt_stbi_header *out);
const char *xt_stbi_failure_reason(void);   /* thread-local */
void xt_stbi_image_free(void *pixels);

typedef void xt_stbi_write_fn(void *ctx, void *data, int size);
/* JPEG-encode w*h pixels of comp (1..4) bytes through fn; 0 on failure. */
int xt_stbi_write_jpg(xt_stbi_write_fn *fn, void *ctx, int w, int h, int comp,
                      const void *pixels, int quality);

/* jpeg_check.c: what is wrong with a JPEG that stb_image v2.27 would mishandle (a Huffman
 * table of more than 256 symbols, a scan using an undefined table), or NULL when nothing
 * is (also for data that is not a JPEG). */
const char *xt_jpeg_check(const uint8_t *bytes, int64_t n);

/* "PNG", "JPEG", "GIF", "BMP", "PNM", or "?" for bytes of no format we read. */
const char *xt_image_format_name(const uint8_t *bytes, int64_t nbytes);

#endif
