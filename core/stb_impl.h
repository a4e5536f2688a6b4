/*
 * stb_impl.h: the stb_image / stb_image_write entry points libxt uses (stb_impl.c), so
 * only one file includes the stb implementation.
 */
#ifndef XT_STB_IMPL_H
#define XT_STB_IMPL_H

/* Decoded pixels, rows top to bottom, comp (or req_comp) bytes per pixel; free with
 * xt_stbi_image_free. NULL on failure, with the reason in xt_stbi_failure_reason(). */
unsigned char *xt_stbi_load_from_memory(const unsigned char *bytes, int len, int *w, int *h,
                                        int *comp, int req_comp);
/* Header only: 1 and the size when stb recognises the image, else 0. */
int xt_stbi_info_from_memory(const unsigned char *bytes, int len, int *w, int *h, int *comp);
const char *xt_stbi_failure_reason(void);   /* thread-local */
void xt_stbi_image_free(void *pixels);

typedef void xt_stbi_write_fn(void *ctx, void *data, int size);
/* JPEG-encode w*h pixels of comp (1..4) bytes through fn; 0 on failure. */
int xt_stbi_write_jpg(xt_stbi_write_fn *fn, void *ctx, int w, int h, int comp,
                      const void *pixels, int quality);

#endif
