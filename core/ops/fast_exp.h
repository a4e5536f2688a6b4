/*
 * fast_exp.h: an exp that the compiler vectorises, for kernels that take one exp per
 * element of a large buffer (feature maps of kernel attention). libm's expf is a call the
 * vectoriser cannot see through without -ffast-math.
 *
 * x = n ln2 + r with |r| <= ln2/2 (ln2 split in two parts so that r is exact to float
 * precision); e^r from its Taylor polynomial of degree 7 (truncation below 1e-8 relative);
 * 2^n built in the exponent bits. Results: relative error a few ulp for x in [-87.3, 88.3];
 * 0 below -87.3 (and for -inf); x above 88.3 saturates at e^88.3 (about 2.2e38, finite);
 * NaN stays NaN.
 */
#ifndef XT_FAST_EXP_H
#define XT_FAST_EXP_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float xt_fast_expf(float x)
{
    const float log2e = 1.44269504f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    float xc = x > -87.3f ? x : -87.3f;   /* NaN becomes -87.3 here and NaN again below */
    xc = xc < 88.3f ? xc : 88.3f;
    float n = floorf(xc * log2e + 0.5f);
    float r = fmaf(n, -ln2_lo, fmaf(n, -ln2_hi, xc));
    float p = 1.0f / 5040;
    p = fmaf(p, r, 1.0f / 720);
    p = fmaf(p, r, 1.0f / 120);
    p = fmaf(p, r, 1.0f / 24);
    p = fmaf(p, r, 1.0f / 6);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    int32_t bits = ((int32_t)n + 127) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    float y = p * two_n;
    y = x < -87.3f ? 0.0f : y;
    return x != x ? x : y;
}

#endif
