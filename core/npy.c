/*
 * npy.c: NumPy .npy files, for exchanging tensors with Python.
 *
 * The format: the magic "\x93NUMPY", a major and minor version byte, the header length
 * (2 bytes little-endian in version 1.0, 4 bytes in 2.0 and 3.0), then the header: a
 * Python dict literal such as {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 * padded with spaces and ended by '\n'; the data follows in C order.
 *
 * Reading takes versions 1.0, 2.0 and 3.0 with dtypes '<f4' (float32), '<i8' (int64) and
 * '|u1' (uint8), C order only. Everything read from the file is checked before it is
 * trusted: a bad magic, a header that does not parse, a shape whose data would be longer
 * than the file, are errors naming the file, never a crash or a huge allocation.
 *
 * Writing uses version 1.0 and is atomic: the bytes go to a new temporary file in the
 * target's directory, are flushed and fsync'ed, and the file is renamed over the target,
 * so a reader sees either the old file or the whole new one.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char NPY_MAGIC[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};
enum { NPY_MAX_HEADER = 1 << 20 };  /* real headers are ~100 bytes; refuse absurd ones */

static const struct {
    const char *descr;
    int32_t dtype;
} NPY_DTYPES[] = {{"<f4", XT_FLOAT32}, {"<i8", XT_INT64}, {"|u1", XT_UINT8}};

/* ---- the header dict ------------------------------------------------------------------ */

typedef struct npy_header {
    char descr[32];
    bool has_descr, has_order, has_shape;
    bool fortran_order;
    int32_t ndim;
    int64_t shape[XT_MAX_DIMS];
} npy_header;

/* A cursor over the header text; every parse_* returns false on malformed input and
 * leaves a reason in err (a static string). */
typedef struct cursor {
    const char *p, *end;
    const char *err;
} cursor;

static void skip_space(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static bool expect(cursor *c, char ch, const char *err)
{
    skip_space(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    c->err = err;
    return false;
}

/* A quoted Python string ('...' or "..."), no escapes (none occur in npy headers). */
static bool parse_string(cursor *c, char *out, size_t cap)
{
    skip_space(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) {
        c->err = "expected a quoted string";
        return false;
    }
    char q = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\' || n + 1 >= cap) {
            c->err = "a string in the header is too long or escaped";
            return false;
        }
        out[n++] = *c->p++;
    }
    if (c->p >= c->end) {
        c->err = "unterminated string";
        return false;
    }
    c->p++;
    out[n] = '\0';
    return true;
}

static bool parse_bool(cursor *c, bool *out)
{
    skip_space(c);
    size_t left = (size_t)(c->end - c->p);
    if (left >= 4 && memcmp(c->p, "True", 4) == 0) {
        c->p += 4;
        *out = true;
        return true;
    }
    if (left >= 5 && memcmp(c->p, "False", 5) == 0) {
        c->p += 5;
        *out = false;
        return true;
    }
    c->err = "fortran_order is not True or False";
    return false;
}

/* A tuple of non-negative integers: (), (5,), (2, 3). An 'L' suffix (Python 2) is allowed. */
static bool parse_shape(cursor *c, npy_header *h)
{
    if (!expect(c, '(', "shape is not a tuple")) return false;
    h->ndim = 0;
    for (;;) {
        skip_space(c);
        if (c->p < c->end && *c->p == ')') {
            c->p++;
            return true;
        }
        if (c->p >= c->end || *c->p < '0' || *c->p > '9') {
            c->err = "shape holds something other than non-negative integers";
            return false;
        }
        int64_t v = 0;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *c->p - '0', &v)) {
                c->err = "a size in shape is too large";
                return false;
            }
            c->p++;
        }
        if (c->p < c->end && *c->p == 'L') c->p++;
        if (h->ndim == XT_MAX_DIMS) {
            c->err = "shape has more dims than xt supports (8)";
            return false;
        }
        h->shape[h->ndim++] = v;
        skip_space(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
        } else if (!(c->p < c->end && *c->p == ')')) {
            c->err = "shape tuple is malformed";
            return false;
        }
    }
}

/* The dict: keys 'descr', 'fortran_order', 'shape' in any order, an optional trailing
 * comma, then only spaces and the final newline. */
static bool parse_header(cursor *c, npy_header *h)
{
    memset(h, 0, sizeof *h);
    if (!expect(c, '{', "header is not a dict")) return false;
    for (;;) {
        skip_space(c);
        if (c->p < c->end && *c->p == '}') {
            c->p++;
            break;
        }
        char key[32];
        if (!parse_string(c, key, sizeof key)) return false;
        if (!expect(c, ':', "expected ':' after a key")) return false;
        if (strcmp(key, "descr") == 0) {
            skip_space(c);
            if (c->p < c->end && *c->p == '[') {
                c->err = "descr is a structured dtype";
                return false;
            }
            if (!parse_string(c, h->descr, sizeof h->descr)) return false;
            h->has_descr = true;
        } else if (strcmp(key, "fortran_order") == 0) {
            if (!parse_bool(c, &h->fortran_order)) return false;
            h->has_order = true;
        } else if (strcmp(key, "shape") == 0) {
            if (!parse_shape(c, h)) return false;
            h->has_shape = true;
        } else {
            c->err = "unknown key in header";
            return false;
        }
        skip_space(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
        } else if (!(c->p < c->end && *c->p == '}')) {
            c->err = "expected ',' or '}' in header";
            return false;
        }
    }
    skip_space(c);
    if (c->p != c->end) {
        c->err = "unexpected bytes after the header dict";
        return false;
    }
    if (!h->has_descr || !h->has_order || !h->has_shape) {
        c->err = "header lacks descr, fortran_order or shape";
        return false;
    }
    return true;
}

/* ---- load --------------------------------------------------------------------------------- */

static uint32_t read_le(const unsigned char *p, int n)
{
    uint32_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* Reads exactly n bytes; false on a short read. */
static bool read_all(FILE *f, void *buf, size_t n) { return fread(buf, 1, n, f) == n; }

static xt_tensor *load_from(FILE *f, const char *path)
{
    unsigned char pre[12];
    if (!read_all(f, pre, 8) || memcmp(pre, NPY_MAGIC, 6) != 0)
        return xt_fail_null(XT_ERR_IO, "load_npy: %s: not a .npy file (bad magic)", path);
    int major = pre[6], minor = pre[7];
    if (major < 1 || major > 3 || minor != 0)
        return xt_fail_null(XT_ERR_IO, "load_npy: %s: unsupported .npy version %d.%d", path,
                            major, minor);
    int len_bytes = major == 1 ? 2 : 4;
    if (!read_all(f, pre + 8, (size_t)len_bytes))
        return xt_fail_null(XT_ERR_IO, "load_npy: %s: file is truncated in the header", path);
    uint32_t header_len = read_le(pre + 8, len_bytes);
    if (header_len > NPY_MAX_HEADER)
        return xt_fail_null(XT_ERR_IO, "load_npy: %s: header length %u is implausible", path,
                            header_len);
    char *text = malloc(header_len + 1);
    if (!text) return xt_fail_null(XT_ERR_OOM, "load_npy: %s: out of memory", path);
    if (!read_all(f, text, header_len)) {
        free(text);
        return xt_fail_null(XT_ERR_IO, "load_npy: %s: file is truncated in the header", path);
    }
    text[header_len] = '\0';
    npy_header h;
    cursor c = {text, text + header_len, NULL};
    bool ok = parse_header(&c, &h);
    free(text);
    if (!ok) return xt_fail_null(XT_ERR_IO, "load_npy: %s: corrupt header: %s", path, c.err);

    int32_t dtype = -1;
    for (size_t i = 0; i < sizeof NPY_DTYPES / sizeof NPY_DTYPES[0]; i++)
        if (strcmp(h.descr, NPY_DTYPES[i].descr) == 0) dtype = NPY_DTYPES[i].dtype;
    if (dtype < 0)
        return xt_fail_null(XT_ERR_DTYPE, "load_npy: %s: unsupported dtype '%s' (xt reads "
                            "'<f4' float32, '<i8' int64 and '|u1' uint8)", path, h.descr);
    if (h.fortran_order)
        return xt_fail_null(XT_ERR_IO, "load_npy: %s: Fortran-order arrays are not supported; "
                            "save with np.ascontiguousarray", path);

    int64_t numel = 1, nbytes;
    for (int32_t i = 0; i < h.ndim; i++)
        if (__builtin_mul_overflow(numel, h.shape[i], &numel))
            return xt_fail_null(XT_ERR_IO, "load_npy: %s: shape is too large", path);
    if (__builtin_mul_overflow(numel, xt_dtype_size(dtype), &nbytes))
        return xt_fail_null(XT_ERR_IO, "load_npy: %s: shape is too large", path);

    /* Check the file holds the data before allocating what the header asks for. */
    long pos = ftell(f);
    struct stat st;
    if (pos < 0 || fstat(fileno(f), &st) != 0)
        return xt_fail_null(XT_ERR_IO, "load_npy: %s: %s", path, strerror(errno));
    int64_t available = (int64_t)st.st_size - pos;
    if (S_ISREG(st.st_mode) && available < nbytes)
        return xt_fail_null(XT_ERR_IO, "load_npy: %s: file is truncated: the header needs %lld "
                            "data bytes, the file has %lld", path, (long long)nbytes,
                            (long long)(available > 0 ? available : 0));

    xt_tensor *t = xt_empty(h.ndim, h.shape, dtype);
    if (!t) return NULL;
    if (!read_all(f, t->data, (size_t)nbytes)) {
        xt_tensor_release(t);
        return xt_fail_null(XT_ERR_IO, "load_npy: %s: file is truncated in the data", path);
    }
    return t;
}

xt_tensor *xt_load_npy(const char *path)
{
    if (!path) return xt_fail_null(XT_ERR_ARG, "load_npy: path is NULL");
    FILE *f = fopen(path, "rb");
    if (!f) return xt_fail_null(XT_ERR_IO, "load_npy: %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        return xt_fail_null(XT_ERR_IO, "load_npy: %s: is a directory", path);
    }
    xt_tensor *t = load_from(f, path);
    fclose(f);
    return t;
}

/* ---- save ----------------------------------------------------------------------------------- */

/* The version 1.0 preamble and header for t into buf; returns its length (a multiple of
 * 64, as NumPy writes it, so the data is aligned). */
static size_t make_header(const xt_tensor *t, char *buf, size_t cap)
{
    const char *descr = "<f4";
    for (size_t i = 0; i < sizeof NPY_DTYPES / sizeof NPY_DTYPES[0]; i++)
        if (NPY_DTYPES[i].dtype == t->dtype) descr = NPY_DTYPES[i].descr;
    char shape[XT_MAX_DIMS * 24 + 4];
    int n = snprintf(shape, sizeof shape, "(");
    for (int32_t i = 0; i < t->ndim; i++)
        n += snprintf(shape + n, sizeof shape - (size_t)n, i ? ", %lld" : "%lld",
                      (long long)t->shape[i]);
    snprintf(shape + n, sizeof shape - (size_t)n, t->ndim == 1 ? ",)" : ")");
    char dict[sizeof shape + 80];
    int dlen = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                        descr, shape);
    size_t total = ((size_t)10 + (size_t)dlen + 1 + 63) / 64 * 64;  /* + '\n', padded */
    if (total > cap) return 0;
    memcpy(buf, NPY_MAGIC, 6);
    buf[6] = 1;
    buf[7] = 0;
    size_t header_len = total - 10;
    buf[8] = (char)(header_len & 0xff);
    buf[9] = (char)(header_len >> 8);
    memcpy(buf + 10, dict, (size_t)dlen);
    memset(buf + 10 + dlen, ' ', total - 10 - (size_t)dlen - 1);
    buf[total - 1] = '\n';
    return total;
}

static bool write_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* A new file next to path, opened exclusively; its name goes to tmp. -1 on error. */
static int open_temp(const char *path, char *tmp, size_t cap)
{
    static int counter;
    for (int attempt = 0; attempt < 100; attempt++) {
        int k = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
        int n = snprintf(tmp, cap, "%s.tmp.%ld.%d", path, (long)getpid(), k);
        if (n < 0 || (size_t)n >= cap) {
            errno = ENAMETOOLONG;
            return -1;
        }
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST) return fd;
    }
    return -1;
}

/* fsync the directory holding path, so the rename itself is durable (best effort). */
static void sync_dir(const char *path)
{
    char copy[4096];
    if (snprintf(copy, sizeof copy, "%s", path) >= (int)sizeof copy) return;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    fsync(fd);
    close(fd);
}

xt_status xt_save_npy(const char *path, xt_tensor *t)
{
    if (!path) return xt_fail(XT_ERR_ARG, "save_npy: path is NULL");
    if (!t) return xt_fail(XT_ERR_ARG, "save_npy: tensor is NULL");
    if (t->dtype != XT_FLOAT32 && t->dtype != XT_INT64 && t->dtype != XT_UINT8)
        return xt_fail(XT_ERR_DTYPE, "save_npy: %s: unsupported dtype %d", path, t->dtype);
    char header[512];
    size_t hlen = make_header(t, header, sizeof header);
    if (hlen == 0) return xt_fail(XT_ERR_ARG, "save_npy: %s: header does not fit", path);

    int32_t mode = xt_set_grad_enabled(0);
    xt_tensor *c = xt_contiguous(t);
    xt_set_grad_enabled(mode);
    if (!c) return xt_last_status();

    char tmp[4200];
    int fd = open_temp(path, tmp, sizeof tmp);
    if (fd < 0) {
        xt_tensor_release(c);
        return xt_fail(XT_ERR_IO, "save_npy: %s: cannot create a temporary file: %s", path,
                       strerror(errno));
    }
    size_t nbytes = (size_t)(xt_numel(c) * xt_dtype_size(c->dtype));
    const char *step = "write";
    bool ok = write_all(fd, header, hlen) && write_all(fd, c->data, nbytes);
    if (ok) {
        step = "fsync";
        ok = fsync(fd) == 0;
    }
    int err = errno;
    if (close(fd) != 0 && ok) {
        err = errno;
        step = "close";
        ok = false;
    }
    if (ok) {
        step = "rename";
        ok = rename(tmp, path) == 0;
        err = errno;
    }
    xt_tensor_release(c);
    if (!ok) {
        unlink(tmp);
        return xt_fail(XT_ERR_IO, "save_npy: %s: %s failed: %s", path, step, strerror(err));
    }
    sync_dir(path);
    return XT_OK;
}
