/*
 * image_internal.h: what the image files share: the stb_image / stb_image_write entry
 * points (stb_impl.c, the one file that includes the stb implementation), the JPEG guard
 * (jpeg_check.c) and the format sniffing (image_probe.c).
 */
#ifndef XT_IMAGE_INTERNAL_H
#define XT_IMAGE_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

/* Decoded pixels, rows top to bottom, comp (or req_comp) bytes per pixel; free with
 * xt_stbi_image_free. NULL on failure, with the reason in xt_stbi_failure_reason(). */
unsigned char *xt_stbi_load_from_memory(const unsigned char *bytes, int len, int *w, int *h,
                                        int *comp, int req_comp);
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

/* jpeg_check.c: false when the bytes are a JPEG with a Huffman table that stb_image v2.27
 * would overflow (more than 256 symbols); true otherwise, also for non-JPEG data. */
bool xt_jpeg_huffman_tables_ok(const uint8_t *bytes, int64_t n);

/* "PNG", "JPEG", "GIF", "BMP", "PNM", or "?" for bytes of no format we read. */
const char *xt_image_format_name(const uint8_t *bytes, int64_t nbytes);

#endif
