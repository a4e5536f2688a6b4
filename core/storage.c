/*
 * storage.c: reference-counted, 64-byte aligned buffers and the tensor header
 * lifetime. Live bytes are counted so Lua can pace its garbage collector.
 */
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

void xt_count_alloc(int64_t nbytes);
void xt_count_free(int64_t nbytes);

enum { XT_ALIGN = 64 };

/*
 * The block cache. Freeing and re-mapping a large buffer costs a page fault per 4 KB on
 * the next use, which halves the speed of a training step's big temporaries. Large
 * blocks (>= 256 KB) are rounded up to one of four steps per power of two (at most 25%
 * slack) and, when released, kept in a free list for their size class, up to
 * XT_CACHE_LIMIT bytes in all. A block that does not fit first evicts the blocks of
 * classes nobody has asked for in the last XT_CACHE_STALE large allocations (a phase
 * that is over: evaluation at another batch size, a finished experiment), so that the
 * cache follows the working set; if it still does not fit it goes back to the system.
 */
enum { XT_CACHE_MIN = 256 * 1024, XT_CACHE_CLASSES = 4 * 48, XT_CACHE_STALE = 2048 };
static const int64_t XT_CACHE_LIMIT = (int64_t)1 << 30;

typedef struct cached_block { /* the head of a cached block (>= 256 KB: room to spare) */
    struct cached_block *next;
    int64_t size;
} cached_block;

static struct {
    pthread_mutex_t lock;
    cached_block *free_list[XT_CACHE_CLASSES];
    int64_t cached_bytes;
    uint64_t tick;                           /* large allocations so far */
    uint64_t last_asked[XT_CACHE_CLASSES];   /* the tick of each class's last allocation */
} cache = {PTHREAD_MUTEX_INITIALIZER, {0}, 0, 0, {0}};

/* Rounded size and size class of a request (class -1: not cached). */
static int64_t block_size(int64_t nbytes, int *size_class)
{
    int64_t padded = (nbytes + XT_ALIGN - 1) / XT_ALIGN * XT_ALIGN;
    if (padded == 0) padded = XT_ALIGN;
    *size_class = -1;
    if (padded < XT_CACHE_MIN) return padded;
    int k = 63 - __builtin_clzll((unsigned long long)padded);  /* 2^k <= padded < 2^(k+1) */
    int64_t step = ((int64_t)1 << k) / 4;
    int64_t rounded = (padded + step - 1) / step * step;
    int sub = (int)(rounded / step) - 4;                       /* 0..4 */
    if (sub == 4) { k++; sub = 0; }
    int c = k * 4 + sub;
    if (c < XT_CACHE_CLASSES) *size_class = c;
    return rounded;
}

static void *block_alloc(int64_t size, int size_class)
{
    if (size_class >= 0) {
        pthread_mutex_lock(&cache.lock);
        cache.last_asked[size_class] = ++cache.tick;
        cached_block *b = cache.free_list[size_class];
        if (b) {
            cache.free_list[size_class] = b->next;
            cache.cached_bytes -= size;
        }
        pthread_mutex_unlock(&cache.lock);
        if (b) return b;
    }
    void *p = aligned_alloc(XT_ALIGN, (size_t)size);
    if (!p && size_class >= 0) {  /* give the cache back to the system and try once more */
        xt_empty_cache();
        p = aligned_alloc(XT_ALIGN, (size_t)size);
    }
    return p;
}

/* Frees the cached blocks of stale classes (not asked for in XT_CACHE_STALE ticks), the
 * longest unasked first, until `need` more bytes fit. Called with the lock held. */
static void evict_stale(int64_t need)
{
    while (cache.cached_bytes + need > XT_CACHE_LIMIT) {
        int oldest = -1;
        for (int c = 0; c < XT_CACHE_CLASSES; c++)
            if (cache.free_list[c] && cache.tick - cache.last_asked[c] > XT_CACHE_STALE &&
                (oldest < 0 || cache.last_asked[c] < cache.last_asked[oldest]))
                oldest = c;
        if (oldest < 0) return;
        while (cache.free_list[oldest] && cache.cached_bytes + need > XT_CACHE_LIMIT) {
            cached_block *b = cache.free_list[oldest];
            cache.free_list[oldest] = b->next;
            cache.cached_bytes -= b->size;
            free(b);
        }
    }
}

static void block_free(void *p, int64_t size, int size_class)
{
    if (size_class >= 0) {
        pthread_mutex_lock(&cache.lock);
        if (cache.cached_bytes + size > XT_CACHE_LIMIT) evict_stale(size);
        bool keep = cache.cached_bytes + size <= XT_CACHE_LIMIT;
        if (keep) {
            cached_block *b = p;
            b->size = size;
            b->next = cache.free_list[size_class];
            cache.free_list[size_class] = b;
            cache.cached_bytes += size;
        }
        pthread_mutex_unlock(&cache.lock);
        if (keep) return;
    }
    free(p);
}

void xt_empty_cache(void)
{
    pthread_mutex_lock(&cache.lock);
    for (int c = 0; c < XT_CACHE_CLASSES; c++) {
        cached_block *b = cache.free_list[c];
        while (b) {
            cached_block *next = b->next;
            free(b);
            b = next;
        }
        cache.free_list[c] = NULL;
    }
    cache.cached_bytes = 0;
    pthread_mutex_unlock(&cache.lock);
}

int64_t xt_cached_bytes(void)
{
    pthread_mutex_lock(&cache.lock);
    int64_t n = cache.cached_bytes;
    pthread_mutex_unlock(&cache.lock);
    return n;
}

xt_storage *xt_storage_new(int64_t nbytes)
{
    if (nbytes < 0) return xt_fail_null(XT_ERR_ARG, "storage: negative size %lld", (long long)nbytes);
    xt_storage *s = calloc(1, sizeof *s);
    if (!s) return xt_fail_null(XT_ERR_OOM, "storage: out of memory");
    int size_class;
    int64_t size = block_size(nbytes, &size_class);
    s->data = block_alloc(size, size_class);
    if (!s->data) {
        free(s);
        return xt_fail_null(XT_ERR_OOM, "storage: out of memory allocating %lld bytes",
                            (long long)nbytes);
    }
    s->nbytes = nbytes;
    s->refcount = 1;
    xt_count_alloc(size);
    return s;
}

void xt_storage_retain(xt_storage *s) { __atomic_add_fetch(&s->refcount, 1, __ATOMIC_RELAXED); }

void xt_storage_release(xt_storage *s)
{
    if (!s) return;
    if (__atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
    int size_class;
    int64_t size = block_size(s->nbytes, &size_class);
    xt_count_free(size);
    block_free(s->data, size, size_class);
    free(s);
}

int64_t xt_dtype_size(int32_t dtype)
{
    switch (dtype) {
    case XT_FLOAT32: return 4;
    case XT_INT64: return 8;
    case XT_UINT8: return 1;
    default: return 0;
    }
}

const char *xt_dtype_name(int32_t dtype)
{
    switch (dtype) {
    case XT_FLOAT32: return "float32";
    case XT_INT64: return "int64";
    case XT_UINT8: return "uint8";
    default: return "unknown";
    }
}

void xt_set_contiguous_strides(int32_t ndim, const int64_t *shape, int64_t *strides)
{
    int64_t s = 1;
    for (int32_t i = ndim - 1; i >= 0; i--) {
        strides[i] = s;
        s *= shape[i] > 0 ? shape[i] : 1;
    }
}

xt_tensor *xt_tensor_new_view(xt_storage *s, int32_t dtype, int32_t ndim, const int64_t *shape,
                              const int64_t *strides, int64_t offset)
{
    xt_tensor *t = calloc(1, sizeof *t);
    if (!t) return xt_fail_null(XT_ERR_OOM, "tensor: out of memory");
    t->ndim = ndim;
    t->dtype = dtype;
    t->refcount = 1;
    for (int32_t i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->strides[i] = strides[i];
    }
    t->offset = offset;
    t->storage = s;
    xt_storage_retain(s);
    t->data = (char *)s->data + offset * xt_dtype_size(dtype);
    return t;
}

void xt_tensor_retain(xt_tensor *t)
{
    if (t) __atomic_add_fetch(&t->refcount, 1, __ATOMIC_RELAXED);
}

void xt_tensor_release(xt_tensor *t)
{
    if (!t) return;
    if (__atomic_sub_fetch(&t->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
    xt_storage_release(t->storage);
    xt_tensor_release(t->grad);
    xt_node_release(t->grad_fn);
    free(t);
}

int64_t xt_shape_numel(int32_t ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int32_t i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

int64_t xt_numel(const xt_tensor *t) { return xt_shape_numel(t->ndim, t->shape); }

int32_t xt_is_contiguous(const xt_tensor *t)
{
    int64_t s = 1;
    for (int32_t i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->strides[i] != s) return 0;
        s *= t->shape[i];
    }
    return 1;
}

uint32_t xt_tensor_version(const xt_tensor *t)
{
    return __atomic_load_n(&t->storage->version, __ATOMIC_RELAXED);
}

void xt_bump_version(xt_tensor *t)
{
    __atomic_add_fetch(&t->storage->version, 1, __ATOMIC_RELAXED);
}

xt_status xt_check_inplace(xt_tensor *t, const char *op)
{
    if (t->requires_grad && !t->grad_fn && xt_is_grad_enabled())
        return xt_fail(XT_ERR_STATE,
                       "%s: a leaf tensor that requires grad cannot be modified in place "
                       "(use xt.no_grad, or detach it first)", op);
    return XT_OK;
}
