/*
 * stream_store.h: writing rows of an output around the caches.
 *
 * A plain store to a line that is not in the cache first reads the line from memory (read
 * for ownership); a non-temporal store writes it whole without that read. A kernel that
 * streams tensors far bigger than the caches (reads r, writes w of them) moves r + 2w
 * tensors' worth with plain stores and r + w with streaming ones. For an output small
 * enough to stay in the caches until the next op reads it, streaming would send that read
 * to memory instead, so kernels stream only when the memory they touch in one call passes
 * XT_STREAM_BYTES (the order of a last-level cache).
 *
 * Use: compute a row into a buffer on the stack, hand it to xt_store_row, and call
 * xt_store_fence once a thread's streaming stores are done (they are weakly ordered).
 */
#ifndef XT_OPS_STREAM_STORE_H
#define XT_OPS_STREAM_STORE_H
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE__)
#include <immintrin.h>
#endif

enum { XT_STREAM_BYTES = 32 << 20 };

/* for the row buffers: whole cache lines, aligned vector loads */
#define XT_ALIGNED __attribute__((aligned(64)))

/* Whether a kernel touching this many bytes in one call streams its outputs. */
static inline bool xt_streams(int64_t bytes) { return bytes > XT_STREAM_BYTES; }

#if defined(__AVX512F__)
enum { XT_STREAM_LANES = 16 };
#define XT_STREAM_ONE(dst, src) _mm512_stream_ps((dst), _mm512_loadu_ps(src))
#elif defined(__AVX__)
enum { XT_STREAM_LANES = 8 };
#define XT_STREAM_ONE(dst, src) _mm256_stream_ps((dst), _mm256_loadu_ps(src))
#elif defined(__SSE__)
enum { XT_STREAM_LANES = 4 };
#define XT_STREAM_ONE(dst, src) _mm_stream_ps((dst), _mm_loadu_ps(src))
#endif

/* dst[0..n) = src[0..n), around the caches where the machine can. */
static inline void xt_store_row(float *dst, const float *src, int64_t n)
{
    int64_t i = 0;
#ifdef XT_STREAM_ONE
    const uintptr_t align = XT_STREAM_LANES * sizeof(float);
    for (; i < n && ((uintptr_t)(dst + i) & (align - 1)) != 0; i++) dst[i] = src[i];
    for (; i + XT_STREAM_LANES <= n; i += XT_STREAM_LANES) XT_STREAM_ONE(dst + i, src + i);
#endif
    if (i < n) memcpy(dst + i, src + i, (size_t)(n - i) * sizeof *dst);
}

/* dst[0..n) = 0, around the caches where the machine can. */
static inline void xt_store_zeros(float *dst, int64_t n)
{
    int64_t i = 0;
#ifdef XT_STREAM_ONE
    static const float zeros[XT_STREAM_LANES];
    const uintptr_t align = XT_STREAM_LANES * sizeof(float);
    for (; i < n && ((uintptr_t)(dst + i) & (align - 1)) != 0; i++) dst[i] = 0.0f;
    for (; i + XT_STREAM_LANES <= n; i += XT_STREAM_LANES) XT_STREAM_ONE(dst + i, zeros);
#endif
    if (i < n) memset(dst + i, 0, (size_t)(n - i) * sizeof *dst);
}

/* Orders a thread's streaming stores before what follows (the end of a parallel region). */
static inline void xt_store_fence(void)
{
#if defined(__SSE__)
    _mm_sfence();
#endif
}

#endif
