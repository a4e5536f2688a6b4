/*
 * test_image.c: image decoding (stb_image) against files no code of ours wrote
 * (tests/fixtures/images, built byte by byte by make_image_fixtures.py, and BMP/PNM
 * built here), PNG and JPEG round trips through our writers, every error path, and
 * decoding from several threads at once.
 */
#include <dirent.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "internal.h"

static char tmp_dir[] = "/tmp/xt_test_image_XXXXXX";

static const char *tmp_path(char *buf, const char *name)
{
    snprintf(buf, 512, "%s/%s", tmp_dir, name);
    return buf;
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
}

static uint8_t *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(*n ? *n : 1);
    *n = fread(buf, 1, *n, f);
    fclose(f);
    return buf;
}

/* t is uint8 [h,w,c] holding exactly expect (h*w*c bytes, C order). */
static bool image_is(const xt_tensor *t, int64_t h, int64_t w, int64_t c, const uint8_t *expect)
{
    if (!t || t->dtype != XT_UINT8 || t->ndim != 3 || t->shape[0] != h || t->shape[1] != w ||
        t->shape[2] != c || !xt_is_contiguous(t)) {
        fprintf(stderr, "  image has the wrong dtype or shape\n");
        return false;
    }
    for (int64_t i = 0; i < h * w * c; i++) {
        if (((const uint8_t *)t->data)[i] != expect[i]) {
            fprintf(stderr, "  byte %lld: got %d, expected %d\n", (long long)i,
                    ((const uint8_t *)t->data)[i], expect[i]);
            return false;
        }
    }
    return true;
}

static bool error_has(const char *needle)
{
    if (strstr(xt_last_error(), needle)) return true;
    fprintf(stderr, "  expected an error containing \"%s\", got \"%s\"\n", needle, xt_last_error());
    return false;
}

static xt_tensor *load_fixture(const char *name, int32_t channels)
{
    char path[512];
    snprintf(path, sizeof path, "%s/images/%s", XT_FIXTURES_DIR, name);
    return xt_image_load(path, channels);
}

static void test_fixtures(void)
{
    xt_tensor *t = load_fixture("rgb_3x2.png", 0);
    static const uint8_t rgb[] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30, 40, 50, 60, 70, 80, 90};
    CHECK(image_is(t, 2, 3, 3, rgb));
    xt_tensor_release(t);

    /* gray from RGB: stb's integer luma (77 r + 150 g + 29 b) >> 8 */
    t = load_fixture("rgb_3x2.png", 1);
    uint8_t luma[6];
    for (int i = 0; i < 6; i++)
        luma[i] = (uint8_t)((rgb[3 * i] * 77 + rgb[3 * i + 1] * 150 + rgb[3 * i + 2] * 29) >> 8);
    CHECK(image_is(t, 2, 3, 1, luma));
    xt_tensor_release(t);

    t = load_fixture("rgb_3x2.png", 4);
    uint8_t rgba[24];
    for (int i = 0; i < 6; i++) {
        memcpy(rgba + 4 * i, rgb + 3 * i, 3);
        rgba[4 * i + 3] = 255;
    }
    CHECK(image_is(t, 2, 3, 4, rgba));
    xt_tensor_release(t);

    t = load_fixture("gray_alpha_2x2.png", 0);
    static const uint8_t ga[] = {0, 255, 85, 170, 170, 85, 255, 0};
    CHECK(image_is(t, 2, 2, 2, ga));
    xt_tensor_release(t);
    t = load_fixture("gray_alpha_2x2.png", 3);   /* gray replicated, alpha dropped */
    static const uint8_t ga_rgb[] = {0, 0, 0, 85, 85, 85, 170, 170, 170, 255, 255, 255};
    CHECK(image_is(t, 2, 2, 3, ga_rgb));
    xt_tensor_release(t);

    t = load_fixture("palette_trns_2x2.png", 0);
    static const uint8_t pal[] = {1, 2, 3, 255, 200, 100, 50, 128, 0, 0, 0, 255, 255, 255, 255, 255};
    CHECK(image_is(t, 2, 2, 4, pal));
    xt_tensor_release(t);

    t = load_fixture("rgb16_2x1.png", 0);   /* high bytes of 0x1234 0xABCD 0x00FF 0xFF00 ... */
    static const uint8_t rgb16[] = {0x12, 0xAB, 0x00, 0xFF, 0x80, 0x7F};
    CHECK(image_is(t, 1, 2, 3, rgb16));
    xt_tensor_release(t);

    t = load_fixture("two_frames_2x2.gif", 0);   /* the first frame, as RGBA */
    static const uint8_t gif[] = {0, 0, 0, 255, 255, 0, 0, 255, 0, 255, 0, 255, 0, 0, 255, 255};
    CHECK(image_is(t, 2, 2, 4, gif));
    xt_tensor_release(t);
}

/* A 24-bit bottom-up BMP and a binary PPM, written here by hand. */
static void test_bmp_pnm(void)
{
    /* 3x2 RGB pixels, top row first */
    static const uint8_t rgb[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18};
    uint8_t bmp[54 + 2 * 12] = {0};
    int row_bytes = 12;   /* 3 pixels * 3 bytes = 9, padded to 12 */
    uint32_t file_size = sizeof bmp;
    bmp[0] = 'B';
    bmp[1] = 'M';
    memcpy(bmp + 2, &file_size, 4);
    bmp[10] = 54;   /* pixel data offset */
    bmp[14] = 40;   /* BITMAPINFOHEADER */
    bmp[18] = 3;    /* width */
    bmp[22] = 2;    /* height > 0: bottom-up */
    bmp[26] = 1;    /* planes */
    bmp[28] = 24;   /* bits per pixel */
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 3; x++) {
            const uint8_t *px = rgb + (y * 3 + x) * 3;
            uint8_t *dst = bmp + 54 + (1 - y) * row_bytes + x * 3;
            dst[0] = px[2];
            dst[1] = px[1];
            dst[2] = px[0];
        }
    xt_tensor *t = xt_image_decode(bmp, sizeof bmp, 0, "hand.bmp");
    CHECK(image_is(t, 2, 3, 3, rgb));
    xt_tensor_release(t);

    uint8_t ppm[64];
    int header = snprintf((char *)ppm, sizeof ppm, "P6\n3 2\n255\n");
    memcpy(ppm + header, rgb, sizeof rgb);
    t = xt_image_decode(ppm, header + (int64_t)sizeof rgb, 0, "hand.ppm");
    CHECK(image_is(t, 2, 3, 3, rgb));
    xt_tensor_release(t);
}

/* A [h,w,c] image with varied values. */
static xt_tensor *pattern(int64_t h, int64_t w, int64_t c)
{
    int64_t shape[3] = {h, w, c};
    xt_tensor *t = xt_empty(3, shape, XT_UINT8);
    uint8_t *p = t->data;
    for (int64_t i = 0; i < h * w * c; i++) p[i] = (uint8_t)(i * 37 + i / 7);
    return t;
}

static int count_files(void)
{
    DIR *d = opendir(tmp_dir);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

static void test_png_round_trip(void)
{
    char path[512];
    for (int64_t c = 1; c <= 4; c++) {
        xt_tensor *t = pattern(5, 7, c);
        CHECK(xt_image_save_png(tmp_path(path, "rt.png"), t) == XT_OK);
        xt_tensor *back = xt_image_load(path, 0);
        CHECK(image_is(back, 5, 7, c, t->data));
        xt_tensor_release(back);
        xt_tensor_release(t);
    }
    /* [H,W] saves as gray */
    int64_t shape2[2] = {3, 4};
    xt_tensor *gray = xt_empty(2, shape2, XT_UINT8);
    for (int i = 0; i < 12; i++) ((uint8_t *)gray->data)[i] = (uint8_t)(i * 20);
    CHECK(xt_image_save_png(tmp_path(path, "gray.png"), gray) == XT_OK);
    xt_tensor *back = xt_image_load(path, 0);
    CHECK(image_is(back, 3, 4, 1, gray->data));
    xt_tensor_release(back);

    /* a non-contiguous view (the transpose) is written as it reads */
    xt_tensor *tr = xt_transpose(gray, 0, 1);
    CHECK(xt_image_save_png(tmp_path(path, "transposed.png"), tr) == XT_OK);
    xt_tensor *contig = xt_contiguous(tr);
    back = xt_image_load(path, 0);
    CHECK(image_is(back, 4, 3, 1, contig->data));
    xt_tensor_release(back);
    xt_tensor_release(contig);
    xt_tensor_release(tr);
    xt_tensor_release(gray);
    CHECK(count_files() == 3);   /* rt.png gray.png transposed.png: no temporary files left */
}

static void test_jpeg_round_trip(void)
{
    char path[512];
    /* a smooth image: JPEG keeps it within a few levels */
    int64_t shape[3] = {16, 24, 3};
    xt_tensor *t = xt_empty(3, shape, XT_UINT8);
    uint8_t *p = t->data;
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 24; x++) {
            p[(y * 24 + x) * 3 + 0] = (uint8_t)(40 + 8 * x);
            p[(y * 24 + x) * 3 + 1] = (uint8_t)(60 + 10 * y);
            p[(y * 24 + x) * 3 + 2] = 128;
        }
    CHECK(xt_image_save_jpeg(tmp_path(path, "smooth.jpg"), t, 95) == XT_OK);
    xt_tensor *back = xt_image_load(path, 0);
    CHECK(back && back->ndim == 3 && back->shape[0] == 16 && back->shape[1] == 24 &&
          back->shape[2] == 3);
    if (back && xt_numel(back) == xt_numel(t)) {
        double total = 0;
        int worst = 0;
        for (int64_t i = 0; i < xt_numel(t); i++) {
            int d = abs((int)((uint8_t *)back->data)[i] - p[i]);
            total += d;
            if (d > worst) worst = d;
        }
        printf("jpeg q95: mean abs error %.3f, max %d\n", total / (double)xt_numel(t), worst);
        CHECK(total / (double)xt_numel(t) < 2.0);
        CHECK(worst <= 12);
    }
    xt_tensor_release(back);
    xt_tensor_release(t);

    size_t n;
    uint8_t *jpg = read_bytes(path, &n);
    CHECK(xt_image_decode(jpg, (int64_t)n / 2, 0, "half.jpg") == NULL);
    CHECK(error_has("half.jpg: corrupt or truncated JPEG"));
    free(jpg);
}

/* Files stb v2.27 would decode without an error (zeros or uninitialised memory for the
 * missing rows) or that would overflow its buffers: image_probe.c refuses them. */
static void test_guarded_errors(void)
{
    static const uint8_t rgb[18] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18};
    uint8_t ppm[64];
    int header = snprintf((char *)ppm, sizeof ppm, "P6\n# a comment\n3 2\n255\n");
    memcpy(ppm + header, rgb, sizeof rgb);
    int64_t shape[3] = {0};
    CHECK(xt_image_info(ppm, header + 18, "ok.ppm", shape) == XT_OK);
    CHECK(shape[0] == 2 && shape[1] == 3 && shape[2] == 3);
    xt_tensor *t = xt_image_decode(ppm, header + 18, 0, "ok.ppm");
    CHECK(t && memcmp(t->data, rgb, 18) == 0);
    xt_tensor_release(t);
    CHECK(xt_image_decode(ppm, header + 17, 0, "cut.ppm") == NULL);
    CHECK(error_has("cut.ppm: truncated PNM: 3x2 pixels need 18 bytes, the file has 17"));
    static const char huge[] = "P5\n99999999999999999999 2\n255\n";
    CHECK(xt_image_decode((const uint8_t *)huge, sizeof huge - 1, 0, "huge.pgm") == NULL);
    CHECK(error_has("huge.pgm: corrupt PNM header"));
    static const char zero[] = "P5 0 2 255\n";
    CHECK(xt_image_decode((const uint8_t *)zero, sizeof zero - 1, 0, "zero.pgm") == NULL);
    CHECK(error_has("corrupt PNM header"));

    /* 16-bit PNM: stb v2.27 gets the byte order wrong and overran its buffer converting
     * channels (found by fuzz_image), so it is refused */
    static const uint8_t pgm16[] = "P5 2 1 65535\n\x12\x34\xAB\xCD";
    CHECK(xt_image_decode(pgm16, sizeof pgm16 - 1, 3, "gray16.pgm") == NULL);
    CHECK(error_has("gray16.pgm: 16-bit PNM (maximum value 65535) is not supported"));

    /* a 3x2 24-bit BMP: 54 header bytes + 2 rows of 12 */
    uint8_t bmp[78] = {'B', 'M', 78, 0, 0, 0, 0, 0, 0, 0, 54, 0, 0, 0, 40, 0, 0, 0, 3, 0, 0, 0, 2, 0,
                       0, 0, 1, 0, 24, 0};
    CHECK(xt_image_info(bmp, sizeof bmp, "ok.bmp", shape) == XT_OK && shape[0] == 2);
    t = xt_image_decode(bmp, sizeof bmp - 3, 0, "short_padding.bmp");   /* the last row's padding */
    CHECK(t != NULL);                                                    /* may be missing */
    xt_tensor_release(t);
    CHECK(xt_image_decode(bmp, sizeof bmp - 4, 0, "cut.bmp") == NULL);
    CHECK(error_has("cut.bmp: truncated BMP: 3x2 pixels at 24 bits end at byte 75, the file has 74"));

    /* found by fuzz_image: a DHT segment whose counts add up to more than 256 */
    char path[512];
    snprintf(path, sizeof path, "%s/images/bad_huffman.jpg", XT_FIXTURES_DIR);
    CHECK(xt_image_load(path, 0) == NULL);
    CHECK(error_has("bad_huffman.jpg: corrupt JPEG (a Huffman table with more than 256 symbols)"));

    /* found by fuzz_image: a scan naming DC table 3, which no DHT defined */
    snprintf(path, sizeof path, "%s/images/undefined_huffman.jpg", XT_FIXTURES_DIR);
    CHECK(xt_image_load(path, 0) == NULL);
    CHECK(error_has("undefined_huffman.jpg: corrupt JPEG (a scan uses a Huffman table that was "
                    "never defined)"));

    /* found by fuzz_image: an IDAT chunk claiming 256 MB, and a zlib stream that stb kept
     * expanding past the end of its data; both now fail fast, held to a memory budget */
    snprintf(path, sizeof path, "%s/images/huge_idat_chunk.png", XT_FIXTURES_DIR);
    CHECK(xt_image_load(path, 0) == NULL);
    CHECK(error_has("huge_idat_chunk.png: corrupt PNG: decoding a 3x10 image asked for more "
                    "memory than such an image needs"));
    snprintf(path, sizeof path, "%s/images/endless_zlib.png", XT_FIXTURES_DIR);
    CHECK(xt_image_load(path, 0) == NULL && error_has("endless_zlib.png: corrupt PNG"));

    /* a header declaring more than the limit */
    static const char big[] = "P6 20000 20000 255\n";
    CHECK(xt_image_info((const uint8_t *)big, sizeof big - 1, "big.ppm", shape) != XT_OK);
    CHECK(error_has("truncated PNM"));
    uint8_t png[33];
    /* 17000x17000 RGB: within stb's own limit (3 bytes a pixel), beyond ours (4) */
    memcpy(png, "\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\x42\x68\0\0\x42\x68\x08\x02\0\0\0", 29);
    memset(png + 29, 0, 4);   /* stb does not check the CRC */
    CHECK(xt_image_info(png, sizeof png, "big.png", shape) != XT_OK);
    CHECK(error_has("big.png: a 17000x17000 PNG image is larger than the decoder's limit"));
}

static void test_errors(void)
{
    char path[512], bad[512];
    size_t n;
    char fixture[512];
    snprintf(fixture, sizeof fixture, "%s/images/rgb_3x2.png", XT_FIXTURES_DIR);
    uint8_t *png = read_bytes(fixture, &n);
    CHECK(png != NULL);
    if (!png) return;

    /* truncated: the IDAT cut in half */
    write_bytes(tmp_path(bad, "truncated.png"), png, n / 2 + 8);
    CHECK(xt_image_load(bad, 0) == NULL);
    CHECK(error_has("truncated.png") && error_has("corrupt or truncated"));
    CHECK(xt_last_status() == XT_ERR_IO);

    /* corrupt: the zlib stream's bytes inverted */
    uint8_t *corrupt = malloc(n);
    memcpy(corrupt, png, n);
    for (size_t i = 41; i < n - 16; i++) corrupt[i] ^= 0xFF;
    CHECK(xt_image_decode(corrupt, (int64_t)n, 0, "corrupt.png") == NULL);
    CHECK(error_has("corrupt.png") && error_has("corrupt or truncated PNG (Corrupt PNG)"));
    free(corrupt);

    /* not an image at all */
    static const char text[] = "this is a text file, not an image";
    CHECK(xt_image_decode((const uint8_t *)text, sizeof text, 0, "notes.txt") == NULL);
    CHECK(error_has("notes.txt") && error_has("not a PNG, JPEG, BMP, GIF or PNM image (it starts "
                                              "with bytes 74 68 69 73)"));
    CHECK(xt_image_decode(png, 0, 0, NULL) == NULL && error_has("<memory>: empty"));
    CHECK(xt_image_decode(png, (int64_t)n, 5, "x.png") == NULL && error_has("channels must be"));

    CHECK(xt_image_load(tmp_path(path, "missing.png"), 0) == NULL);
    CHECK(error_has("cannot open") && error_has("missing.png") &&
          error_has("No such file or directory"));
    free(png);

    /* writing: wrong dtype, wrong shape, unwritable place, bad quality */
    int64_t chw[3] = {3, 4, 5};
    xt_tensor *f = xt_zeros(3, chw, XT_FLOAT32);
    CHECK(xt_image_save_png(tmp_path(path, "float.png"), f) == XT_ERR_DTYPE);
    CHECK(error_has("float.png") && error_has("float32") && error_has("xt.image.to_uint8"));
    xt_tensor_release(f);
    int64_t five[3] = {2, 2, 5};
    xt_tensor *u = xt_zeros(3, five, XT_UINT8);
    CHECK(xt_image_save_png(tmp_path(path, "five.png"), u) == XT_ERR_SHAPE);
    CHECK(error_has("[2,2,5]"));
    xt_tensor_release(u);
    int64_t one[1] = {4};
    u = xt_zeros(1, one, XT_UINT8);
    CHECK(xt_image_save_png(tmp_path(path, "flat.png"), u) == XT_ERR_SHAPE);
    xt_tensor_release(u);
    xt_tensor *img = pattern(2, 2, 3);
    CHECK(xt_image_save_png(tmp_path(path, "no/such/dir/x.png"), img) == XT_ERR_IO);
    CHECK(error_has("cannot create") && error_has("no/such/dir/x.png"));
    CHECK(xt_image_save_jpeg(tmp_path(path, "q.jpg"), img, 0) == XT_ERR_ARG);
    CHECK(error_has("quality"));
    xt_tensor_release(img);
}

/* ---- threads: the loader's workers decode concurrently ------------------------------ */

typedef struct decode_job {
    const uint8_t *good;
    size_t good_n;
    const uint8_t *expect;   /* the good image's pixels, [5,7,3] */
    int failures;
} decode_job;

static void *decode_many(void *arg)
{
    decode_job *job = arg;
    static const uint8_t junk[] = "GIF89a but not really";
    for (int i = 0; i < 200; i++) {
        xt_tensor *t = xt_image_decode(job->good, (int64_t)job->good_n, 0, "good.png");
        if (!t || memcmp(t->data, job->expect, 5 * 7 * 3) != 0) job->failures++;
        xt_tensor_release(t);
        /* errors stay on their own thread */
        if (xt_image_decode(junk, sizeof junk, 0, "junk.gif") != NULL ||
            !strstr(xt_last_error(), "junk.gif"))
            job->failures++;
    }
    return NULL;
}

static void test_threads(void)
{
    char path[512];
    xt_tensor *t = pattern(5, 7, 3);
    xt_image_save_png(tmp_path(path, "threads.png"), t);
    size_t n;
    uint8_t *bytes = read_bytes(path, &n);
    enum { THREADS = 4 };
    pthread_t threads[THREADS];
    decode_job jobs[THREADS];
    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (decode_job){bytes, n, t->data, 0};
        pthread_create(&threads[i], NULL, decode_many, &jobs[i]);
    }
    int failures = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
        failures += jobs[i].failures;
    }
    CHECK(failures == 0);
    free(bytes);
    xt_tensor_release(t);
}

static void remove_tmp_dir(void)
{
    DIR *d = opendir(tmp_dir);
    char path[512];
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') unlink(tmp_path(path, e->d_name));
    closedir(d);
    rmdir(tmp_dir);
}

int main(void)
{
    if (!mkdtemp(tmp_dir)) return 1;
    test_fixtures();
    test_bmp_pnm();
    test_png_round_trip();
    test_jpeg_round_trip();
    test_errors();
    test_guarded_errors();
    test_threads();
    remove_tmp_dir();
    return check_report("test_image");
}
