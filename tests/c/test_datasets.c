/*
 * test_datasets.c: the IDX and CIFAR readers on files the test writes (plain and gzip),
 * on Debian's Fashion-MNIST (values read independently with python's gzip module), and
 * every malformed-file error.
 */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "internal.h"

static char tmp_dir[] = "/tmp/xt_test_datasets_XXXXXX";
static const char *FASHION = "/usr/share/datasets/fashion-mnist";

static const char *tmp_path(char *buf, const char *name)
{
    snprintf(buf, 512, "%s/%s", tmp_dir, name);
    return buf;
}

static void write_bytes(const char *path, const void *data, size_t n, bool gzip)
{
    if (gzip) {
        gzFile g = gzopen(path, "wb");
        gzwrite(g, data, (unsigned)n);
        gzclose(g);
    } else {
        FILE *f = fopen(path, "wb");
        fwrite(data, 1, n, f);
        fclose(f);
    }
}

static bool error_has(const char *needle)
{
    if (strstr(xt_last_error(), needle)) return true;
    fprintf(stderr, "  expected an error containing \"%s\", got \"%s\"\n", needle, xt_last_error());
    return false;
}

static uint8_t u8(const xt_tensor *t, int64_t i) { return ((const uint8_t *)t->data)[i]; }

/* An IDX file of ubyte [2,3,4] holding 0..23 (+ extra trailing bytes). */
static size_t idx_bytes(uint8_t *buf, int extra)
{
    static const uint8_t header[] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4};
    memcpy(buf, header, sizeof header);
    for (int i = 0; i < 24 + extra; i++) buf[sizeof header + i] = (uint8_t)i;
    return sizeof header + 24 + (size_t)extra;
}

static void test_idx_written(void)
{
    char path[512];
    uint8_t buf[64];
    size_t n = idx_bytes(buf, 0);
    for (int gzip = 0; gzip <= 1; gzip++) {
        write_bytes(tmp_path(path, gzip ? "a.idx.gz" : "a.idx"), buf, n, gzip);
        xt_tensor *t = xt_read_idx(path);
        CHECK(t && t->dtype == XT_UINT8 && t->ndim == 3 && t->shape[0] == 2 && t->shape[1] == 3 &&
              t->shape[2] == 4);
        bool same = t != NULL;
        for (int i = 0; t && i < 24; i++) same = same && u8(t, i) == i;
        CHECK(same);
        xt_tensor_release(t);
    }
}

static void expect_idx_error(const uint8_t *bytes, size_t n, bool gzip, const char *name,
                             const char *needle)
{
    char path[512];
    write_bytes(tmp_path(path, name), bytes, n, gzip);
    xt_tensor *t = xt_read_idx(path);
    CHECK(t == NULL);
    CHECK(error_has(name) && error_has(needle));
    CHECK(xt_last_status() == XT_ERR_IO);
    xt_tensor_release(t);
}

static void test_idx_errors(void)
{
    char path[512];
    uint8_t buf[64];
    size_t n = idx_bytes(buf, 0);

    buf[1] = 7;
    expect_idx_error(buf, n, false, "magic.idx", "not an IDX file (magic bytes 00 07 08 03");
    buf[1] = 0;
    buf[2] = 0x0D;
    expect_idx_error(buf, n, true, "float.idx.gz", "element type 0x0d (float32)");
    buf[2] = 8;
    buf[3] = 0;
    expect_idx_error(buf, n, false, "ndim0.idx", "0 dims in the header");
    buf[3] = 3;
    expect_idx_error(buf, 3, false, "tiny.idx", "too short for an IDX header (3 bytes)");
    expect_idx_error(buf, 10, false, "cut_sizes.idx", "too short for an IDX header (10 bytes)");
    expect_idx_error(buf, n - 5, false, "short.idx", "the header's sizes [2,3,4] need 24 data "
                     "bytes, the file has 19");
    expect_idx_error(buf, n - 5, true, "short.idx.gz", "the file has 19");
    n = idx_bytes(buf, 3);
    expect_idx_error(buf, n, false, "long.idx", "more data after the 24 bytes");

    /* sizes whose product is absurd: refused before any allocation */
    static const uint8_t huge[] = {0, 0, 8, 3, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                   0xFF, 0xFF, 0xFF, 0xFF};
    expect_idx_error(huge, sizeof huge, false, "huge.idx", "implausible sizes");
    /* found by fuzz_idx: an empty tensor whose other sizes overflow its strides */
    static const uint8_t empty_huge[] = {0, 0, 8, 3, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
                                         0xFF, 0xFF, 0xFF, 0xFF};
    expect_idx_error(empty_huge, sizeof empty_huge, false, "empty_huge.idx", "implausible sizes");
    static const uint8_t empty[] = {0, 0, 8, 2, 0, 0, 0, 0, 0, 0, 0, 28};
    write_bytes(tmp_path(path, "empty.idx"), empty, sizeof empty, false);
    xt_tensor *t = xt_read_idx(path);
    CHECK(t && t->ndim == 2 && t->shape[0] == 0 && t->shape[1] == 28);
    xt_tensor_release(t);

    /* a gzip file cut short: zlib reports the damaged stream */
    n = idx_bytes(buf, 0);
    write_bytes(tmp_path(path, "whole.gz"), buf, n, true);
    FILE *f = fopen(path, "rb");
    uint8_t gz[256];
    size_t gz_n = fread(gz, 1, sizeof gz, f);
    fclose(f);
    expect_idx_error(gz, gz_n - 6, false, "cut.idx.gz", "cannot read the file");

    CHECK(xt_read_idx(tmp_path(path, "missing.idx")) == NULL);
    CHECK(error_has("cannot open") && error_has("missing.idx"));
}

/* Debian's dataset-fashion-mnist; the constants were read with python's gzip module. */
static void test_fashion_mnist(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/t10k-labels-idx1-ubyte.gz", FASHION);
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "test_datasets: %s is missing: install dataset-fashion-mnist\n", path);
        CHECK(!"Fashion-MNIST present");
        return;
    }
    xt_tensor *labels = xt_read_idx(path);
    CHECK(labels && labels->ndim == 1 && labels->shape[0] == 10000);
    static const uint8_t first[20] = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7, 4, 5, 7, 3, 4, 1, 2, 4, 8, 0};
    int64_t sum = 0;
    for (int i = 0; labels && i < 20; i++) CHECK(u8(labels, i) == first[i]);
    for (int64_t i = 0; labels && i < 10000; i++) sum += u8(labels, i);
    CHECK(sum == 45000);
    xt_tensor_release(labels);

    snprintf(path, sizeof path, "%s/t10k-images-idx3-ubyte.gz", FASHION);
    xt_tensor *images = xt_read_idx(path);
    CHECK(images && images->ndim == 3 && images->shape[0] == 10000 && images->shape[1] == 28 &&
          images->shape[2] == 28);
    if (images) {
        static const uint8_t row14[28] = {0, 0, 0, 0, 0, 0, 2, 4, 1, 0, 0, 0, 98, 136, 110, 109,
                                          110, 162, 135, 144, 149, 159, 167, 144, 158, 169, 119, 0};
        for (int x = 0; x < 28; x++) CHECK(u8(images, 14 * 28 + x) == row14[x]);
        int64_t total = 0;
        for (int64_t i = 0; i < xt_numel(images); i++) total += u8(images, i);
        CHECK(total == 573469082);
        CHECK(u8(images, 1234 * 784 + 10 * 28 + 10) == 173);
        CHECK(u8(images, 1234 * 784 + 20 * 28 + 5) == 204);
        CHECK(u8(images, 1234 * 784 + 3 * 28 + 17) == 149);
    }
    xt_tensor_release(images);
}

/* ---- CIFAR ---------------------------------------------------------------------------- */

/* Record r's pixel (channel ch, y, x) as the test writes it. */
static uint8_t cifar_pixel(int r, int ch, int y, int x) { return (uint8_t)(r * 7 + ch * 50 + y * 3 + x); }

static size_t cifar_file(const char *path, int records, int label_bytes, int cut)
{
    size_t record = (size_t)label_bytes + 3072, n = record * (size_t)records;
    uint8_t *buf = malloc(n);
    for (int r = 0; r < records; r++) {
        uint8_t *rec = buf + record * (size_t)r;
        for (int b = 0; b < label_bytes; b++) rec[b] = (uint8_t)(r * 3 + b * 40);
        for (int ch = 0; ch < 3; ch++)
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 32; x++)
                    rec[label_bytes + ch * 1024 + y * 32 + x] = cifar_pixel(r, ch, y, x);
    }
    write_bytes(path, buf, n - (size_t)cut, false);
    free(buf);
    return n;
}

static void test_cifar(void)
{
    char path[512];
    for (int label_bytes = 1; label_bytes <= 2; label_bytes++) {
        int records = label_bytes == 1 ? 3 : 1100;   /* 1100 crosses the reader's 1024-record chunk */
        cifar_file(tmp_path(path, "batch.bin"), records, label_bytes, 0);
        xt_tensor *labels = NULL;
        xt_tensor *images = xt_read_cifar(path, label_bytes, &labels);
        CHECK(images && images->ndim == 4 && images->shape[0] == records &&
              images->shape[1] == 32 && images->shape[2] == 32 && images->shape[3] == 3);
        CHECK(labels && labels->dtype == XT_UINT8 && labels->ndim == 2 &&
              labels->shape[0] == records && labels->shape[1] == label_bytes);
        if (!images || !labels) continue;
        bool same = true;
        for (int r = 0; r < records; r++) {
            for (int b = 0; b < label_bytes; b++)
                same = same && u8(labels, r * label_bytes + b) == (uint8_t)(r * 3 + b * 40);
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 32; x++)
                    for (int ch = 0; ch < 3; ch++)   /* HWC */
                        same = same && u8(images, (((int64_t)r * 32 + y) * 32 + x) * 3 + ch) ==
                                           cifar_pixel(r, ch, y, x);
        }
        CHECK(same);
        xt_tensor_release(images);
        xt_tensor_release(labels);
    }

    xt_tensor *labels = (xt_tensor *)1;
    cifar_file(tmp_path(path, "cut.bin"), 2, 1, 100);
    CHECK(xt_read_cifar(path, 1, &labels) == NULL && labels == NULL);
    CHECK(error_has("cut.bin") && error_has("size 6046 bytes is not a positive multiple of the "
                                            "3073-byte record"));
    cifar_file(tmp_path(path, "cifar100.bin"), 3, 2, 0);
    CHECK(xt_read_cifar(path, 1, &labels) == NULL && error_has("CIFAR-100 has 2"));
    CHECK(xt_read_cifar(path, 3, &labels) == NULL && error_has("label_bytes must be 1"));
    write_bytes(tmp_path(path, "empty.bin"), "", 0, false);
    CHECK(xt_read_cifar(path, 1, &labels) == NULL && error_has("size 0 bytes"));
    CHECK(xt_read_cifar(tmp_dir, 1, &labels) == NULL && error_has("not a regular file"));
    CHECK(xt_read_cifar(tmp_path(path, "missing.bin"), 1, &labels) == NULL);
    CHECK(error_has("cannot open") && error_has("missing.bin"));
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
    test_idx_written();
    test_idx_errors();
    test_fashion_mnist();
    test_cifar();
    remove_tmp_dir();
    return check_report("test_datasets");
}
