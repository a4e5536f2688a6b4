/*
 * test_npy.c: .npy loading and saving. Round trips of every dtype and odd shapes, files
 * written by NumPy itself (tests/fixtures/index/npy_*, made by make_index_fixtures.py)
 * read back and written byte for byte the same, every error path, the atomic save, and a
 * fuzz of truncated and corrupted files that must give errors, never crashes.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testlib.h"

static char dir[256];

static const char *tmp_path(const char *name)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

/* The whole file into a malloc'ed buffer; *n its length. */
static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)len + 1);
    *n = fread(buf, 1, (size_t)len, f);
    fclose(f);
    return buf;
}

static void spit(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
}

static bool same_bytes(const xt_tensor *a, const xt_tensor *b)
{
    if (!a || !b || a->dtype != b->dtype || !xt_same_shape(a, b)) return false;
    xt_tensor *ca = xt_contiguous((xt_tensor *)a), *cb = xt_contiguous((xt_tensor *)b);
    bool same = memcmp(ca->data, cb->data, (size_t)(xt_numel(a) * xt_dtype_size(a->dtype))) == 0;
    xt_tensor_release(ca);
    xt_tensor_release(cb);
    return same;
}

/* A header-only file with the given dict text (version 1.0), plus `data` zero bytes. */
static void write_raw(const char *path, const char *dict, size_t data)
{
    size_t dlen = strlen(dict), total = (10 + dlen + 1 + 63) / 64 * 64;
    unsigned char *buf = calloc(total + data, 1);
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (unsigned char)((total - 10) & 0xff);
    buf[9] = (unsigned char)((total - 10) >> 8);
    memcpy(buf + 10, dict, dlen);
    memset(buf + 10 + dlen, ' ', total - 11 - dlen);
    buf[total - 1] = '\n';
    spit(path, buf, total + data);
    free(buf);
}

static void test_round_trips(void)
{
    int64_t s3[3] = {2, 3, 4}, s1 = 5, s0[2] = {0, 3}, s8[8] = {1, 2, 1, 2, 1, 2, 1, 2};
    xt_tensor *bytes = xt_randint(&test_rng, 0, 256, 3, s3);
    xt_tensor *cases[6] = {
        test_randn(3, s3, 1, 0),
        xt_randint(&test_rng, -1000000000000LL, 1000000000000LL, 1, &s1),
        xt_to_dtype(bytes, XT_UINT8),
        xt_full(0, NULL, XT_FLOAT32, -2.5),
        xt_empty(2, s0, XT_INT64),
        test_randn(8, s8, 1, 0),
    };
    xt_tensor_release(bytes);
    for (int i = 0; i < 6; i++) {
        const char *p = tmp_path("rt.npy");
        CHECK(xt_save_npy(p, cases[i]) == XT_OK);
        xt_tensor *back = xt_load_npy(p);
        CHECK(same_bytes(back, cases[i]));
        xt_tensor_release(back);
        xt_tensor_release(cases[i]);
    }

    /* a transposed view saves its values in C order */
    int64_t s2[2] = {3, 4};
    xt_tensor *a = test_randn(2, s2, 1, 0), *at = xt_transpose(a, 0, 1);
    CHECK(xt_save_npy(tmp_path("t.npy"), at) == XT_OK);
    xt_tensor *back = xt_load_npy(tmp_path("t.npy"));
    CHECK(back && back->shape[0] == 4 && back->shape[1] == 3 && xt_is_contiguous(back));
    CHECK(test_max_diff(back, at) == 0);
    xt_tensor_release(back);

    /* saving over an existing file replaces it and leaves no temporary behind */
    CHECK(xt_save_npy(tmp_path("t.npy"), a) == XT_OK);
    back = xt_load_npy(tmp_path("t.npy"));
    CHECK(back && same_bytes(back, a));
    xt_tensor_release(back);
    DIR *d = opendir(dir);
    int leftovers = 0;
    for (struct dirent *e; (e = readdir(d));) leftovers += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    CHECK(leftovers == 0);
    xt_tensor_release(at);
    xt_tensor_release(a);
}

/* Files NumPy wrote: read them, and our save of the same tensor gives the same bytes. */
static void test_numpy_files(void)
{
    const char *names[3] = {"npy_f4", "npy_i8", "npy_u1"};
    const int32_t dtypes[3] = {XT_FLOAT32, XT_INT64, XT_UINT8};
    for (int i = 0; i < 3; i++) {
        xt_tensor *t = test_fixture("index", names[i], "v1");
        CHECK(t && t->dtype == dtypes[i] && t->ndim == 3 && t->shape[0] == 2 && t->shape[1] == 3 &&
              t->shape[2] == 4);
        if (!t) continue;
        for (int64_t k = 0; k < 24; k++) {  /* NumPy wrote arange(24) * 5 % 256 */
            int64_t idx[3] = {k / 12, k / 4 % 3, k % 4};
            CHECK(xt_get_as_double(t, idx) == (double)(k * 5 % 256));
        }
        CHECK(xt_save_npy(tmp_path("mine.npy"), t) == XT_OK);
        char ref[2048];
        snprintf(ref, sizeof ref, "%s/index/%s.v1.npy", XT_FIXTURES_DIR, names[i]);
        size_t n1 = 0, n2 = 0;
        unsigned char *mine = slurp(tmp_path("mine.npy"), &n1), *theirs = slurp(ref, &n2);
        CHECK(mine && theirs && n1 == n2 && memcmp(mine, theirs, n1) == 0);
        free(mine);
        free(theirs);
        xt_tensor *v2 = test_fixture("index", names[i], "v2");  /* format version 2.0 */
        CHECK(same_bytes(v2, t));
        xt_tensor_release(v2);
        xt_tensor_release(t);
    }
    xt_tensor *s = test_fixture("index", "npy_scalar", "v1");   /* 0-d */
    CHECK(s && s->ndim == 0 && s->dtype == XT_FLOAT32 && *(float *)s->data == 1.5f);
    xt_tensor_release(s);
}

static void test_errors(void)
{
    CHECK(!xt_load_npy(tmp_path("missing.npy")) && test_error_has("load_npy: ") &&
          test_error_has("missing.npy: No such file"));
    CHECK(!xt_load_npy(dir) && test_error_has("is a directory"));

    char f2[2048];
    snprintf(f2, sizeof f2, "%s/index/npy_f2.v1.npy", XT_FIXTURES_DIR);
    CHECK(!xt_load_npy(f2) && test_error_has("load_npy: ") &&
          test_error_has("npy_f2.v1.npy: unsupported dtype '<f2'"));
    snprintf(f2, sizeof f2, "%s/index/npy_fortran.v1.npy", XT_FIXTURES_DIR);
    CHECK(!xt_load_npy(f2) && test_error_has("Fortran-order arrays are not supported"));

    const char *p = tmp_path("bad.npy");
    spit(p, "hello world, not an array", 25);
    CHECK(!xt_load_npy(p) && test_error_has("not a .npy file (bad magic)"));
    spit(p, "\x93NUMPY\x04\x00\x10\x00", 10);
    CHECK(!xt_load_npy(p) && test_error_has("unsupported .npy version 4.0"));

    struct { const char *dict, *msg; } bad[] = {
        {"{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", "unsupported dtype '>f4'"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", "unsupported dtype '<f8'"},
        {"{'descr': '<u1', 'fortran_order': False, 'shape': (2,), }", "unsupported dtype '<u1'"},
        {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", "structured"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", "more dims"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", "non-negative"},
        {"{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2,), }", "True or False"},
        {"{'descr': '<f4', 'shape': (2,), }", "lacks"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", "unknown key"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2 3), }", "malformed"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } junk", "after the header"},
        {"['descr', '<f4']", "not a dict"},
        {"{'descr: '<f4', 'fortran_order': False, 'shape': (2,), }", "corrupt header"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }",
         "too large"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }",
         "too large"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_raw(p, bad[i].dict, 8);
        CHECK(!xt_load_npy(p) && test_error_has("load_npy: ") && test_error_has(bad[i].msg));
    }
    /* a shape far larger than the file: refused before allocating */
    write_raw(p, "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }", 16);
    CHECK(!xt_load_npy(p) && test_error_has("file is truncated: the header needs 4000000000000 "
                                            "data bytes, the file has 16"));
    write_raw(p, "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", 23);
    CHECK(!xt_load_npy(p) && test_error_has("needs 24 data bytes, the file has 23"));
    /* key order, double quotes, no trailing comma, Python 2's long suffix: all fine */
    write_raw(p, "{\"shape\": (3L, 1), \"fortran_order\": False, \"descr\": \"|u1\"}", 3);
    xt_tensor *t = xt_load_npy(p);
    CHECK(t && t->dtype == XT_UINT8 && t->ndim == 2 && t->shape[0] == 3 && t->shape[1] == 1);
    xt_tensor_release(t);
    /* trailing bytes after the data are ignored, as NumPy does */
    write_raw(p, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 12);
    t = xt_load_npy(p);
    CHECK(t && xt_numel(t) == 2);
    xt_tensor_release(t);

    int64_t two = 2;
    xt_tensor *x = xt_zeros(1, &two, XT_FLOAT32);
    CHECK(xt_save_npy(tmp_path("no/such/dir/x.npy"), x) == XT_ERR_IO &&
          test_error_has("save_npy: ") && test_error_has("cannot create a temporary file"));
    CHECK(xt_save_npy(NULL, x) == XT_ERR_ARG && test_error_has("save_npy: path is NULL"));
    CHECK(xt_save_npy(p, NULL) == XT_ERR_ARG && test_error_has("save_npy: tensor is NULL"));
    CHECK(!xt_load_npy(NULL) && test_error_has("load_npy: path is NULL"));
    xt_tensor_release(x);
}

/* Every truncation of a valid file must fail; random corruptions must fail or load, and
 * a load that succeeds must agree with its header (numel matching the file). */
static void test_fuzz(void)
{
    int64_t shape[2] = {3, 5};
    xt_tensor *t = test_randn(2, shape, 1, 0);
    const char *good = tmp_path("good.npy"), *p = tmp_path("fuzz.npy");
    CHECK(xt_save_npy(good, t) == XT_OK);
    size_t n = 0;
    unsigned char *bytes = slurp(good, &n);
    int truncated_failures = 0;
    for (size_t len = 0; len < n; len++) {
        spit(p, bytes, len);
        xt_tensor *u = xt_load_npy(p);
        truncated_failures += u == NULL && xt_last_error()[0] != '\0';
        xt_tensor_release(u);
    }
    CHECK(truncated_failures == (int)n);

    unsigned char *mut = malloc(n);
    int loaded = 0, failed = 0;
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(mut, bytes, n);
        uint32_t r[4];
        xt_philox(test_rng.seed, (uint64_t)iter, r);
        int flips = 1 + (int)(r[0] % 3);
        for (int k = 0; k < flips; k++) {
            /* mostly the preamble and header, where the parser is */
            uint32_t pos = (k == 0 ? r[1] : r[3] >> (8 * k)) % (iter % 4 == 0 ? n : 128);
            mut[pos] = (unsigned char)(r[2] >> (8 * k));
        }
        size_t len = iter % 3 == 0 ? n - r[3] % n : n;
        spit(p, mut, len);
        xt_clear_error();
        xt_tensor *u = xt_load_npy(p);
        if (u) {
            loaded++;
            xt_tensor_release(u);
        } else {
            failed++;
            CHECK(strncmp(xt_last_error(), "load_npy: ", 10) == 0);
        }
    }
    printf("fuzz: %d corrupted files loaded, %d refused\n", loaded, failed);
    CHECK(failed > 0);
    free(mut);
    free(bytes);
    xt_tensor_release(t);
}

static void cleanup(void)
{
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') unlink(tmp_path(e->d_name));
    closedir(d);
    rmdir(dir);
}

int main(void)
{
    test_seed("test_npy", 20240702);
    /* tmpfs when there is one: the fuzz rewrites a file thousands of times */
    const char *root = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof dir, "%s/xt_test_npy.XXXXXX", root);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trips();
    test_numpy_files();
    test_errors();
    test_fuzz();
    cleanup();
    return check_report("test_npy");
}
