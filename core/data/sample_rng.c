/*
 * sample_rng.c: the loader's random streams. Everything random in an epoch is a pure
 * function of (seed, epoch, stream) and, for augmentation, the sample's index, so the
 * result does not depend on the number of workers or on which one builds a batch.
 */
#include "data.h"

/* Epoch keys come from Philox itself under the user's seed, at counters 2*epoch and
 * 2*epoch + 1, so nearby seeds and epochs still give unrelated keys. */
uint64_t data_epoch_key(uint64_t seed, int64_t epoch, uint32_t stream)
{
    uint32_t r[4];
    xt_philox(seed, (uint64_t)epoch * 2u + stream, r);
    return ((uint64_t)r[0] << 32) | r[1];
}

/* 2^20 blocks of 4 draws per sample: far more than any pipeline uses. */
enum { SAMPLE_COUNTER_BITS = 20 };

void sample_rng_init(sample_rng *r, uint64_t key, int64_t index)
{
    r->key = key;
    r->counter = (uint64_t)index << SAMPLE_COUNTER_BITS;
    r->used = 4;
}

uint32_t sample_rng_u32(sample_rng *r)
{
    if (r->used == 4) {
        xt_philox(r->key, r->counter++, r->block);
        r->used = 0;
    }
    return r->block[r->used++];
}

double sample_rng_uniform(sample_rng *r)
{
    uint64_t hi = sample_rng_u32(r) >> 5, lo = sample_rng_u32(r) >> 6;   /* 27 + 26 bits */
    return (double)((hi << 26) | lo) * (1.0 / 9007199254740992.0);
}

/* The modulo bias of a 64-bit draw reduced to n (an image side, a dataset size) is below
 * n / 2^64: negligible. */
int64_t sample_rng_below(sample_rng *r, int64_t n)
{
    uint64_t u = ((uint64_t)sample_rng_u32(r) << 32) | sample_rng_u32(r);
    return (int64_t)(u % (uint64_t)n);
}
