/*
 * jpeg_check.c: a guard in front of stb_image's JPEG decoder.
 *
 * Debian's stb_image (v2.27) trusts two things our fuzzer showed it should not:
 *  - the 16 code-length counts of a DHT (define Huffman table) segment: when they add up
 *    to more than 256 it writes past the table's arrays (stbi__build_huffman);
 *  - that a scan only uses Huffman tables a DHT defined: an undefined table holds
 *    whatever memory it was given, and decoding with it indexes far outside the table.
 * Until Debian ships a fixed stb, image_probe.c runs this check first and refuses such
 * files.
 *
 * The walk follows the segments the way stb reads them, so every DHT and SOS that stb
 * would parse is seen: markers are found after skipping stray bytes and 0xFF fill bytes;
 * segments with a length are skipped by it; after a start-of-scan (SOS), entropy-coded
 * data is skipped up to the next 0xFF followed by a byte other than 0x00 (stuffing) or a
 * restart marker. Bytes past the end read as 0, as stbi__get8 returns them.
 */
#include <stdbool.h>
#include <stdint.h>

#include "image_internal.h"

typedef struct reader {
    const uint8_t *bytes;
    int64_t n, pos;
} reader;

typedef struct tables {
    bool defined[2][4];   /* [0: DC, 1: AC][table id] */
    bool frame_seen;      /* the first SOF0/1/2 decides, as in stb */
    bool progressive;     /* SOF2: scans carry either DC or AC coefficients */
} tables;

static int get8(reader *r) { return r->pos < r->n ? r->bytes[r->pos++] : (r->pos++, 0); }

static int get16(reader *r)
{
    int hi = get8(r);
    return hi << 8 | get8(r);
}

/* The tables of one DHT segment, read as stbi__process_marker reads them. */
static const char *read_huffman_tables(reader *r, tables *t)
{
    int length = get16(r) - 2;
    while (length > 0 && r->pos < r->n) {
        int q = get8(r), table_class = q >> 4, id = q & 15;
        int symbols = 0;
        for (int i = 0; i < 16; i++) symbols += get8(r);
        if (symbols > 256) return "a Huffman table with more than 256 symbols";
        if (table_class > 1 || id > 3) return NULL;   /* stb refuses the file itself */
        t->defined[table_class][id] = true;
        r->pos += symbols;
        length -= 17 + symbols;
    }
    return NULL;
}

/* A scan header: each component names a DC and an AC table. A baseline scan uses both; a
 * progressive scan uses the DC table when it starts at coefficient 0, else the AC table. */
static const char *check_scan_tables(reader *r, const tables *t)
{
    int64_t start = r->pos;
    int length = get16(r), components = get8(r);
    if (components < 1 || components > 4) return NULL;   /* stb refuses these */
    int dc_ids[4], ac_ids[4];
    for (int i = 0; i < components; i++) {
        get8(r);   /* component id */
        int q = get8(r);
        dc_ids[i] = q >> 4;
        ac_ids[i] = q & 15;
    }
    int spectral_start = get8(r);
    r->pos = start + length;
    bool uses_dc = !t->progressive || spectral_start == 0;
    bool uses_ac = !t->progressive || spectral_start > 0;
    for (int i = 0; i < components; i++) {
        if (dc_ids[i] > 3 || ac_ids[i] > 3) return NULL;   /* stb refuses these */
        if ((uses_dc && !t->defined[0][dc_ids[i]]) || (uses_ac && !t->defined[1][ac_ids[i]]))
            return "a scan uses a Huffman table that was never defined";
    }
    return NULL;
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

const char *xt_jpeg_check(const uint8_t *bytes, int64_t n)
{
    int64_t soi = 1;   /* stb accepts 0xFF fill bytes before the SOI marker */
    while (soi < n && bytes[soi] == 0xFF) soi++;
    if (n < 2 || bytes[0] != 0xFF || soi >= n || bytes[soi] != 0xD8) return NULL;   /* not JPEG */
    reader r = {bytes, n, soi + 1};
    tables t = {{{false}}, false, false};
    int pending = 0;   /* a marker found at the end of entropy-coded data */
    while (r.pos < r.n || pending) {
        int m = pending;
        pending = 0;
        if (!m) {
            if (get8(&r) != 0xFF) continue;   /* a stray byte */
            m = get8(&r);
            while (m == 0xFF && r.pos < r.n) m = get8(&r);
        }
        if (m == 0xD9) break;                                                /* end of image */
        if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD8)) continue;   /* no length */
        const char *problem = NULL;
        if (m == 0xC4) {
            problem = read_huffman_tables(&r, &t);
        } else if (m == 0xDA) {
            problem = check_scan_tables(&r, &t);
            pending = skip_entropy_data(&r);
        } else {
            if (!t.frame_seen && m >= 0xC0 && m <= 0xC2) {
                t.frame_seen = true;
                t.progressive = m == 0xC2;
            }
            int64_t start = r.pos;
            r.pos = start + get16(&r);
        }
        if (problem) return problem;
    }
    return NULL;
}
