/*
 * jpeg_check.c: a guard in front of stb_image's JPEG decoder.
 *
 * Debian's stb_image (v2.27) trusts the 16 code-length counts of a DHT (define Huffman
 * table) segment: when they add up to more than 256 it writes past the table's arrays
 * (stbi__build_huffman), corrupting memory. Upstream fixed this in v2.28 by refusing such
 * tables; our fuzzer found it here. Until Debian ships the fix, image.c runs this check
 * first and refuses the file.
 *
 * The walk follows the segments the way stb reads them, so every DHT that stb would parse
 * is checked: markers are found after skipping stray bytes and 0xFF fill bytes; segments
 * with a length are skipped by it; after a start-of-scan (SOS), entropy-coded data is
 * skipped up to the next 0xFF followed by a byte other than 0x00 (stuffing) or a restart
 * marker. Bytes past the end read as 0, as stbi__get8 returns them.
 */
#include <stdbool.h>
#include <stdint.h>

#include "image_internal.h"

typedef struct reader {
    const uint8_t *bytes;
    int64_t n, pos;
} reader;

static int get8(reader *r) { return r->pos < r->n ? r->bytes[r->pos++] : (r->pos++, 0); }

static int get16(reader *r)
{
    int hi = get8(r);
    return hi << 8 | get8(r);
}

/* The tables of one DHT segment, read as stbi__process_marker reads them. */
static bool huffman_tables_ok(reader *r)
{
    int length = get16(r) - 2;
    while (length > 0 && r->pos < r->n) {
        get8(r);   /* table class and id */
        int symbols = 0;
        for (int i = 0; i < 16; i++) symbols += get8(r);
        if (symbols > 256) return false;
        r->pos += symbols;
        length -= 17 + symbols;
    }
    return true;
}

/* Skip entropy-coded data; returns the marker that ends it (0 at the end of the data). */
static int skip_entropy_data(reader *r)
{
    while (r->pos < r->n) {
        if (get8(r) != 0xFF) continue;
        int c = get8(r);
        while (c == 0xFF && r->pos < r->n) c = get8(r);
        if (c != 0 && !(c >= 0xD0 && c <= 0xD7)) return c;
    }
    return 0;
}

bool xt_jpeg_huffman_tables_ok(const uint8_t *bytes, int64_t n)
{
    int64_t soi = 1;   /* stb accepts 0xFF fill bytes before the SOI marker */
    while (soi < n && bytes[soi] == 0xFF) soi++;
    if (n < 2 || bytes[0] != 0xFF || soi >= n || bytes[soi] != 0xD8) return true;   /* not a JPEG */
    reader r = {bytes, n, soi + 1};
    int pending = 0;   /* a marker found at the end of entropy-coded data */
    while (r.pos < r.n || pending) {
        int m = pending;
        pending = 0;
        if (!m) {
            if (get8(&r) != 0xFF) continue;   /* a stray byte */
            m = get8(&r);
            while (m == 0xFF && r.pos < r.n) m = get8(&r);
        }
        if (m == 0xD9) break;                                   /* end of image */
        if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD8)) continue;   /* no length */
        if (m == 0xC4) {
            if (!huffman_tables_ok(&r)) return false;
            continue;
        }
        int64_t start = r.pos;
        r.pos = start + get16(&r);
        if (m == 0xDA) pending = skip_entropy_data(&r);
    }
    return true;
}
