/* test_tensor.c: storage lifetime, creation, copy, RNG determinism, autograd plumbing. */
#include <string.h>
#include "check.h"

static void test_lifetime(void)
{
    int64_t before = xt_live_bytes();
    int64_t shape[2] = {3, 4};
    xt_tensor *t = xt_full(2, shape, XT_FLOAT32, 2.5);
    CHECK(t && t->ndim == 2 && xt_numel(t) == 12 && xt_is_contiguous(t));
    CHECK(((float *)t->data)[11] == 2.5f);
    CHECK(xt_live_bytes() > before);
    xt_tensor_release(t);
    CHECK(xt_live_bytes() == before);
}

static void test_bad_input(void)
{
    int64_t shape[2] = {3, -1};
    CHECK(xt_empty(2, shape, XT_FLOAT32) == NULL);
    CHECK(strstr(xt_last_error(), "negative size") != NULL);
    CHECK(xt_empty(9, shape, XT_FLOAT32) == NULL);
    CHECK(xt_empty(1, shape, 7) == NULL);
    CHECK(xt_arange(0, 1, 0, XT_FLOAT32) == NULL);
}

static void test_rng(void)
{
    int64_t n = 1001;
    xt_rng a = {42, 0}, b = {42, 0};
    xt_set_num_threads(1);
    xt_tensor *x = xt_randn(&a, 1, &n);
    xt_set_num_threads(2);
    xt_tensor *y = xt_randn(&b, 1, &n);
    CHECK(memcmp(x->data, y->data, (size_t)n * 4) == 0);
    CHECK(a.offset == b.offset && a.offset == 251);
    double mean = 0, var = 0;
    for (int64_t i = 0; i < n; i++) mean += ((float *)x->data)[i];
    mean /= (double)n;
    for (int64_t i = 0; i < n; i++) var += pow(((float *)x->data)[i] - mean, 2);
    var /= (double)n;
    CHECK(fabs(mean) < 0.1 && fabs(var - 1) < 0.1);
    xt_tensor *p = xt_randperm(&a, 10, 1);
    int seen[11] = {0};
    for (int i = 0; i < 10; i++) seen[((int64_t *)p->data)[i]]++;
    for (int i = 1; i <= 10; i++) CHECK(seen[i] == 1);
    xt_tensor_release(x);
    xt_tensor_release(y);
    xt_tensor_release(p);
}

static void test_copy_dtypes(void)
{
    int64_t shape[2] = {2, 3};
    float src[6] = {1.5f, -2.5f, 3, 4, 255, 256};
    xt_tensor *f = xt_from_data(2, shape, XT_FLOAT32, src);
    xt_tensor *i = xt_to_dtype(f, XT_INT64);
    xt_tensor *u = xt_to_dtype(f, XT_UINT8);
    CHECK(((int64_t *)i->data)[0] == 1 && ((int64_t *)i->data)[1] == -2);
    CHECK(((uint8_t *)u->data)[4] == 255 && ((uint8_t *)u->data)[5] == 0);
    /* broadcast copy of a row into a matrix */
    int64_t row_shape[1] = {3};
    xt_tensor *row = xt_arange(0, 3, 1, XT_FLOAT32);
    CHECK(row && row->shape[0] == 3);
    xt_tensor *m = xt_zeros(2, shape, XT_FLOAT32);
    CHECK(xt_copy_(m, row) == XT_OK);
    CHECK(((float *)m->data)[5] == 2.0f && ((float *)m->data)[3] == 0.0f);
    xt_tensor *wrong = xt_zeros(1, row_shape, XT_FLOAT32);
    CHECK(xt_copy_(wrong, m) != XT_OK);
    xt_tensor_release(wrong);
    xt_tensor_release(m);
    xt_tensor_release(row);
    xt_tensor_release(f);
    xt_tensor_release(i);
    xt_tensor_release(u);
}

static void test_leaf_rules(void)
{
    int64_t shape[1] = {4};
    xt_tensor *w = xt_zeros(1, shape, XT_FLOAT32);
    CHECK(xt_set_requires_grad(w, 1) == XT_OK);
    CHECK(xt_fill_(w, 1.0) != XT_OK);  /* leaf requiring grad */
    int32_t prev = xt_set_grad_enabled(0);
    CHECK(xt_fill_(w, 1.0) == XT_OK);
    xt_set_grad_enabled(prev);
    xt_tensor *i = xt_zeros(1, shape, XT_INT64);
    CHECK(xt_set_requires_grad(i, 1) != XT_OK);
    xt_tensor_release(i);
    xt_tensor_release(w);
}

/* The block cache follows the working set: a phase's blocks fill it, a later phase with
 * other sizes is kept once the first phase's classes have gone unasked for long enough. */
static xt_tensor *floats(int64_t n)
{
    int64_t shape[1] = {n};
    return xt_empty(1, shape, XT_FLOAT32);
}

static void test_cache_follows_phases(void)
{
    const int64_t MiB = 1 << 20;
    xt_empty_cache();
    xt_tensor *old[4];
    for (int i = 0; i < 4; i++) old[i] = floats(64 * MiB);  /* 4 x 256 MiB: the whole cache */
    for (int i = 0; i < 4; i++) xt_tensor_release(old[i]);
    CHECK(xt_cached_bytes() == 1024 * MiB);
    /* a new size that does not fit while the old phase is recent: back to the system */
    xt_tensor_release(floats(24 * MiB));
    CHECK(xt_cached_bytes() == 1024 * MiB);
    /* a long phase of 1 MiB blocks: the 256 MiB class goes stale and makes room */
    for (int i = 0; i < 3000; i++) xt_tensor_release(floats(MiB / 4));
    CHECK(xt_cached_bytes() < 1024 * MiB);
    int64_t before = xt_cached_bytes();
    xt_tensor_release(floats(24 * MiB));
    CHECK(xt_cached_bytes() == before + 96 * MiB);   /* 96 MiB: a class of its own size */
    /* a class in use is never evicted for another: the 96 MiB block is asked for again */
    xt_tensor *again = floats(24 * MiB);
    CHECK(xt_cached_bytes() == before);
    xt_tensor_release(again);
    xt_empty_cache();
    CHECK(xt_cached_bytes() == 0);
}

int main(void)
{
    test_lifetime();
    test_bad_input();
    test_rng();
    test_copy_dtypes();
    test_leaf_rules();
    test_cache_follows_phases();
    return check_report("test_tensor");
}
