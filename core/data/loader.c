/*
 * loader.c: the DataLoader's worker pool and its ordered queue.
 *
 * An epoch is a list of batches (slices of the epoch's sample order). Workers claim the
 * next unclaimed batch, build it without holding the lock, and put it in its slot of a
 * ring of `capacity` slots (batch b lives in slot b % capacity); the consumer takes
 * batches in order. Workers never run more than `capacity` batches ahead of the
 * consumer, so at most capacity batches exist at once.
 *
 * Everything shared is guarded by `lock`, except `generation`, which workers also read
 * between samples to abandon a batch early: starting an epoch or freeing the loader bumps
 * it, waits until no batch is in progress, and then owns the epoch state alone.
 */
#include "data.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SLOT_EMPTY = 0, SLOT_READY = 1 };

typedef struct batch_slot {
    int32_t state;
    int64_t batch;           /* which batch is READY here */
    xt_tensor *input;        /* owned until handed out */
    xt_tensor *target;
    xt_status status;        /* != XT_OK: the batch failed with `error` */
    char *error;             /* owned */
} batch_slot;

typedef struct worker {
    struct xt_loader *loader;
    pthread_t thread;
    transform_scratch scratch;
} worker;

struct xt_loader {
    data_source src;
    int32_t n_tf;
    xt_transform *tf;                 /* [n_tf], owned copy */
    int64_t batch_size, n_batches;
    uint64_t seed;
    bool shuffle, drop_last;

    int32_t n_workers, capacity;
    worker *workers;                  /* [n_workers] */
    int32_t n_started;                /* threads actually running */
    transform_scratch caller_scratch; /* workers == 0: batches built in next() */

    pthread_mutex_t lock;
    pthread_cond_t work_cv;           /* workers wait here for a claimable batch */
    pthread_cond_t ready_cv;          /* the consumer waits here for batches and idleness */
    /* epoch state, guarded by lock */
    bool epoch_active, stop;
    int64_t *order;                   /* [n]: the epoch's sample order */
    uint64_t aug_key;
    int64_t next_claim, next_out;
    int32_t in_flight;                /* batches being built right now */
    uint32_t generation;              /* written under lock, read atomically by workers */
    batch_slot *slots;                /* [capacity] */
};

static void slot_clear(batch_slot *slot)
{
    xt_tensor_release(slot->input);
    xt_tensor_release(slot->target);
    free(slot->error);
    memset(slot, 0, sizeof *slot);
}

static int64_t batch_count(const xt_loader *l, int64_t b)
{
    int64_t start = b * l->batch_size, n = l->src.n - start;
    return n < l->batch_size ? n : l->batch_size;
}

/* ---- the epoch's order ---------------------------------------------------------------
 * Fisher-Yates under the epoch's shuffle key: a function of (seed, epoch) alone. */
static void epoch_order(xt_loader *l, int64_t epoch)
{
    for (int64_t i = 0; i < l->src.n; i++) l->order[i] = i;
    if (!l->shuffle) return;
    sample_rng rng;
    sample_rng_init(&rng, data_epoch_key(l->seed, epoch, DATA_STREAM_SHUFFLE), 0);
    for (int64_t i = l->src.n - 1; i > 0; i--) {
        int64_t j = sample_rng_below(&rng, i + 1);
        int64_t tmp = l->order[i];
        l->order[i] = l->order[j];
        l->order[j] = tmp;
    }
}

/* ---- workers -------------------------------------------------------------------------- */

static void *worker_main(void *arg)
{
    worker *w = arg;
    xt_loader *l = w->loader;
    xt_set_grad_enabled(0);
    pthread_mutex_lock(&l->lock);
    while (!l->stop) {
        if (!(l->epoch_active && l->next_claim < l->n_batches &&
              l->next_claim < l->next_out + l->capacity)) {
            pthread_cond_wait(&l->work_cv, &l->lock);
            continue;
        }
        int64_t b = l->next_claim++;
        uint32_t generation = l->generation;
        l->in_flight++;
        pthread_mutex_unlock(&l->lock);

        xt_tensor *input = NULL, *target = NULL;
        cancel_token cancel = {&l->generation, generation};
        xt_status status = batch_build(&l->src, l->n_tf, l->tf, l->order + b * l->batch_size,
                                       batch_count(l, b), l->aug_key, &w->scratch, cancel,
                                       &input, &target);
        char *error = status != XT_OK ? strdup(xt_last_error()) : NULL;

        pthread_mutex_lock(&l->lock);
        l->in_flight--;
        if (generation == l->generation) {
            batch_slot *slot = &l->slots[b % l->capacity];
            *slot = (batch_slot){SLOT_READY, b, input, target, status, error};
            if (status != XT_OK && !error) slot->status = XT_ERR_OOM;   /* strdup failed */
        } else {   /* the epoch was abandoned while this batch was built */
            xt_tensor_release(input);
            xt_tensor_release(target);
            free(error);
        }
        pthread_cond_broadcast(&l->ready_cv);
    }
    pthread_mutex_unlock(&l->lock);
    return NULL;
}

/* Abandon the running epoch: bump the generation, wait for batches in progress, drop the
 * ready ones. Called with the lock held. */
static void abandon_epoch(xt_loader *l)
{
    __atomic_store_n(&l->generation, l->generation + 1, __ATOMIC_RELEASE);
    while (l->in_flight > 0) pthread_cond_wait(&l->ready_cv, &l->lock);
    for (int32_t i = 0; i < l->capacity; i++) slot_clear(&l->slots[i]);
    l->epoch_active = false;
}

/* ---- creation ------------------------------------------------------------------------- */

static xt_loader *loader_new(data_source *src, xt_tensor *labels, const xt_loader_options *opt,
                             int32_t n_tf, const xt_transform *tf)
{
    xt_loader *l = NULL;
    char shape[XT_SHAPE_STR];
    if (!opt) {
        xt_fail(XT_ERR_ARG, "DataLoader: options are NULL");
        goto fail;
    }
    if (opt->batch_size < 1 || opt->workers < 0 || opt->workers > 256 || opt->channels < 0 ||
        opt->channels > 4) {
        xt_fail(XT_ERR_ARG, "DataLoader: batch_size must be >= 1 (got %lld), workers in "
                "0..256 (got %d), channels in 0..4 (got %d)", (long long)opt->batch_size,
                opt->workers, opt->channels);
        goto fail;
    }
    if (!labels || labels->dtype != XT_INT64 || labels->ndim != 1 || labels->shape[0] != src->n) {
        xt_fail(XT_ERR_SHAPE, "DataLoader: labels must be int64 [%lld] (one per sample), got %s %s",
                (long long)src->n, labels ? xt_dtype_name(labels->dtype) : "NULL",
                labels ? xt_shape_str(shape, labels->ndim, labels->shape) : "");
        goto fail;
    }
    if (transforms_check(n_tf, tf, "DataLoader")) goto fail;

    l = calloc(1, sizeof *l);
    if (!l) {
        xt_fail(XT_ERR_OOM, "DataLoader: out of memory");
        goto fail;
    }
    l->src = *src;
    memset(src, 0, sizeof *src);
    l->n_tf = n_tf;
    l->batch_size = opt->batch_size;
    l->seed = opt->seed;
    l->shuffle = opt->shuffle != 0;
    l->drop_last = opt->drop_last != 0;
    l->n_batches = l->drop_last ? l->src.n / l->batch_size
                                : (l->src.n + l->batch_size - 1) / l->batch_size;
    l->n_workers = opt->workers;
    l->capacity = opt->workers * (opt->prefetch > 0 ? opt->prefetch : 2);
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->work_cv, NULL);
    pthread_cond_init(&l->ready_cv, NULL);

    l->src.labels = malloc(sizeof(int64_t) * (size_t)(l->src.n ? l->src.n : 1));
    l->order = malloc(sizeof(int64_t) * (size_t)(l->src.n ? l->src.n : 1));
    l->tf = malloc(sizeof *tf * (size_t)(n_tf ? n_tf : 1));
    l->slots = calloc((size_t)(l->capacity ? l->capacity : 1), sizeof *l->slots);
    l->workers = calloc((size_t)(l->n_workers ? l->n_workers : 1), sizeof *l->workers);
    if (!l->src.labels || !l->order || !l->tf || !l->slots || !l->workers) {
        xt_fail(XT_ERR_OOM, "DataLoader: out of memory for %lld samples", (long long)l->src.n);
        goto fail;
    }
    if (n_tf) memcpy(l->tf, tf, sizeof *tf * (size_t)n_tf);
    xt_tensor *labels_contig = xt_contiguous(labels);
    if (!labels_contig) goto fail;
    memcpy(l->src.labels, labels_contig->data, sizeof(int64_t) * (size_t)l->src.n);
    xt_tensor_release(labels_contig);
    for (int32_t i = 0; i < l->n_workers; i++) {
        l->workers[i].loader = l;
        if (pthread_create(&l->workers[i].thread, NULL, worker_main, &l->workers[i]) != 0) {
            xt_fail(XT_ERR_STATE, "DataLoader: could not start worker thread %d of %d", i + 1,
                    l->n_workers);
            goto fail;
        }
        l->n_started++;
    }
    return l;
fail:
    source_free(src);
    if (l) {
        char message[1024];
        snprintf(message, sizeof message, "%s", xt_last_error());
        xt_status status = xt_last_status();
        xt_loader_free(l);
        xt_fail(status, "%s", message);
    }
    return NULL;
}

xt_loader *xt_loader_new_memory(xt_tensor *images, xt_tensor *labels,
                                const xt_loader_options *options, int32_t n_transforms,
                                const xt_transform *transforms)
{
    char shape[XT_SHAPE_STR];
    data_source src = {SOURCE_MEMORY};
    if (!images || images->dtype != XT_UINT8 || images->ndim < 3 || images->ndim > 4)
        return xt_fail_null(XT_ERR_SHAPE, "DataLoader: images must be uint8 [N,H,W,C] or "
                            "[N,H,W], got %s %s", images ? xt_dtype_name(images->dtype) : "NULL",
                            images ? xt_shape_str(shape, images->ndim, images->shape) : "");
    src.images = xt_contiguous(images);
    if (!src.images) return NULL;
    src.n = images->shape[0];
    return loader_new(&src, labels, options, n_transforms, transforms);
}

xt_loader *xt_loader_new_files(int64_t n, const char *const *paths, xt_tensor *labels,
                               const xt_loader_options *options, int32_t n_transforms,
                               const xt_transform *transforms)
{
    if (n < 0 || (n > 0 && !paths))
        return xt_fail_null(XT_ERR_ARG, "DataLoader: bad list of %lld paths", (long long)n);
    data_source src = {SOURCE_FILES};
    src.n = n;
    src.channels = options ? options->channels : 0;
    src.paths = calloc((size_t)(n ? n : 1), sizeof *src.paths);
    if (!src.paths) return xt_fail_null(XT_ERR_OOM, "DataLoader: out of memory for %lld paths", (long long)n);
    for (int64_t i = 0; i < n; i++) {
        if (!paths[i] || !(src.paths[i] = strdup(paths[i]))) {
            xt_fail(paths[i] ? XT_ERR_OOM : XT_ERR_ARG, "DataLoader: path %lld is %s",
                    (long long)xt_shown(i), paths[i] ? "too large for memory" : "NULL");
            source_free(&src);
            return NULL;
        }
    }
    return loader_new(&src, labels, options, n_transforms, transforms);
}

void xt_loader_free(xt_loader *l)
{
    if (!l) return;
    pthread_mutex_lock(&l->lock);
    l->stop = true;
    if (l->slots) abandon_epoch(l);
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->lock);
    for (int32_t i = 0; i < l->n_started; i++) pthread_join(l->workers[i].thread, NULL);
    for (int32_t i = 0; i < l->n_workers && l->workers; i++) scratch_free(&l->workers[i].scratch);
    scratch_free(&l->caller_scratch);
    pthread_cond_destroy(&l->work_cv);
    pthread_cond_destroy(&l->ready_cv);
    pthread_mutex_destroy(&l->lock);
    source_free(&l->src);
    free(l->workers);
    free(l->slots);
    free(l->order);
    free(l->tf);
    free(l);
}

int64_t xt_loader_num_batches(const xt_loader *l) { return l ? l->n_batches : 0; }
int64_t xt_loader_num_samples(const xt_loader *l) { return l ? l->src.n : 0; }

/* ---- epochs --------------------------------------------------------------------------- */

xt_status xt_loader_start_epoch(xt_loader *l, int64_t epoch)
{
    if (!l) return xt_fail(XT_ERR_ARG, "DataLoader: loader is NULL");
    pthread_mutex_lock(&l->lock);
    abandon_epoch(l);
    epoch_order(l, epoch);
    l->aug_key = data_epoch_key(l->seed, epoch, DATA_STREAM_AUGMENT);
    l->next_claim = l->next_out = 0;
    l->epoch_active = true;
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->lock);
    return XT_OK;
}

int32_t xt_loader_next(xt_loader *l, xt_tensor **input, xt_tensor **target)
{
    *input = *target = NULL;
    if (!l) {
        xt_fail(XT_ERR_ARG, "DataLoader: loader is NULL");
        return -1;
    }
    pthread_mutex_lock(&l->lock);
    if (!l->epoch_active) {
        pthread_mutex_unlock(&l->lock);
        xt_fail(XT_ERR_STATE, "DataLoader: no epoch is running (start one first)");
        return -1;
    }
    if (l->next_out >= l->n_batches) {
        pthread_mutex_unlock(&l->lock);
        return 0;
    }
    int64_t b = l->next_out;
    if (l->n_workers == 0) {   /* build it here; no other thread touches the loader */
        l->next_out++;
        pthread_mutex_unlock(&l->lock);
        cancel_token never = {NULL, 0};
        if (batch_build(&l->src, l->n_tf, l->tf, l->order + b * l->batch_size,
                        batch_count(l, b), l->aug_key, &l->caller_scratch, never, input, target))
            return -1;
        return 1;
    }
    batch_slot *slot = &l->slots[b % l->capacity];
    while (!(slot->state == SLOT_READY && slot->batch == b))
        pthread_cond_wait(&l->ready_cv, &l->lock);
    batch_slot taken = *slot;
    memset(slot, 0, sizeof *slot);
    l->next_out++;
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->lock);
    if (taken.status != XT_OK) {
        xt_fail(taken.status, "%s", taken.error ? taken.error : "DataLoader: out of memory");
        slot_clear(&taken);
        return -1;
    }
    *input = taken.input;
    *target = taken.target;
    return 1;
}
