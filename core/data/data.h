/*
 * data.h: what the data-loading files share (not public): the uint8 image a transform
 * works on, the per-sample random stream, per-worker scratch buffers, the sample source
 * and batch assembly. Everything here runs in loader worker threads: plain serial loops,
 * no OpenMP, no autograd, errors through the thread-local slot.
 */
#ifndef XT_DATA_H
#define XT_DATA_H

#include "internal.h"

#include <stddef.h>

/* A uint8 image, [h, w, c] contiguous (row stride w * c). Does not own data. */
typedef struct image_u8 {
    const uint8_t *data;
    int64_t h, w, c;
} image_u8;

/* ---- randomness ---------------------------------------------------------------
 * A loader's epoch has two keys derived from (seed, epoch): one for the shuffle, one
 * for augmentation. Sample `index` (its position in the dataset) draws from the Philox
 * counters (index << 20) + 0, 1, 2, ... under the augmentation key, so its random
 * choices do not depend on which worker, batch or thread handles it. */

enum { DATA_STREAM_SHUFFLE = 0, DATA_STREAM_AUGMENT = 1 };
uint64_t data_epoch_key(uint64_t seed, int64_t epoch, uint32_t stream);

typedef struct sample_rng {
    uint64_t key;
    uint64_t counter;
    uint32_t block[4];
    int32_t used;          /* lanes of block already handed out (4: draw a new block) */
} sample_rng;

void sample_rng_init(sample_rng *r, uint64_t key, int64_t index);
uint32_t sample_rng_u32(sample_rng *r);
double sample_rng_uniform(sample_rng *r);              /* [0, 1), 53 bits */
int64_t sample_rng_below(sample_rng *r, int64_t n);    /* [0, n), n >= 1 */

/* ---- transforms (transforms.c, resample.c) ------------------------------------- */

/* Buffers one thread reuses from sample to sample; zero-initialise, free with
 * scratch_free. Two image buffers let each geometric step read one and write the other. */
typedef struct transform_scratch {
    uint8_t *image[2];
    size_t image_cap[2];
    float *rows;           /* the resampler's intermediate [rows, out_w, c] */
    size_t rows_cap;
} transform_scratch;

void scratch_free(transform_scratch *s);
/* A buffer of at least nbytes that does not hold `keep` (grown as needed); NULL + error. */
uint8_t *scratch_image(transform_scratch *s, const uint8_t *keep, size_t nbytes);

const char *transform_name(int32_t kind);
/* Parameters and order of a pipeline: geometric steps (uint8 HWC), then at most one
 * to_tensor, then normalize steps. op names the caller in messages. */
xt_status transforms_check(int32_t n, const xt_transform *tf, const char *op);
/* Index of the to_tensor step, or n when the pipeline has none (it is implicit). */
int32_t transforms_split(int32_t n, const xt_transform *tf);

/* Run steps [0, split) on src; *out is src itself or an image in s. */
xt_status transforms_geometric(const image_u8 *src, int32_t split, const xt_transform *tf,
                               sample_rng *rng, transform_scratch *s, image_u8 *out);
/* to_tensor then the normalize steps tf[0..n): img -> dst [c, h, w] float32. */
xt_status transforms_to_float(const image_u8 *img, int32_t n, const xt_transform *tf,
                              float *dst);

/* Resample the box (top, left, bh, bw) of src to [out_h, out_w, c] (bilinear with
 * half-pixel centres, or exact area averaging); out holds out_h * out_w * c bytes. */
xt_status resample_box(const image_u8 *src, int64_t top, int64_t left, int64_t bh, int64_t bw,
                       int64_t out_h, int64_t out_w, int32_t interpolation,
                       transform_scratch *s, uint8_t *out);

/* ---- sources and batches (batch.c) ---------------------------------------------- */

enum { SOURCE_MEMORY = 0, SOURCE_FILES = 1 };

typedef struct data_source {
    int32_t kind;
    int64_t n;
    xt_tensor *images;     /* memory: contiguous uint8 [n, h, w, c], owned */
    char **paths;          /* files: n owned strings */
    int32_t channels;      /* files: decode to this many channels (0: as stored) */
    int64_t *labels;       /* [n], owned copy */
} data_source;

void source_free(data_source *src);

/* A cancellation check between samples: the build stops (XT_ERR_STATE) once *flag no
 * longer equals expected. flag NULL: never cancelled. */
typedef struct cancel_token {
    const uint32_t *flag;
    uint32_t expected;
} cancel_token;

/* Decode, transform and assemble samples indices[0..count) into input [count, c, h, w]
 * float32 and target [count] int64 (new references). aug_key: the epoch's augmentation
 * key. On error nothing is returned and the message names the sample (and file). */
xt_status batch_build(const data_source *src, int32_t n_tf, const xt_transform *tf,
                      const int64_t *indices, int64_t count, uint64_t aug_key,
                      transform_scratch *s, cancel_token cancel, xt_tensor **input,
                      xt_tensor **target);

#endif
