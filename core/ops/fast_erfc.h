/*
 * fast_erfc.h: a complementary error function that the compiler vectorises, for GELU, which
 * takes one erfc per element of large activations: libm's erfcf is a call the vectoriser
 * cannot see through, and made the exact GELU cost as much as the GEMMs around it.
 *
 * For z >= 0, erfc(z) = t exp(-z^2 + P(t)) with t = 1 / (1 + z/2) and P the degree-9
 * Chebyshev fit of Press et al. (Numerical Recipes, § 6.2), whose fractional error is below
 * 1.2e-7 for every z >= 0, so it stays accurate in the tail where erfc is tiny (the negative
 * half of GELU); in float arithmetic the result is within a few 1e-7 relative of erfcf for
 * |z| <= 4. For z < 0, erfc(z) = 2 - erfc(-z). The exp is xt_fast_expf; erfc underflows to 0
 * for z above about 9.3, as erfcf does. NaN stays NaN.
 */
#ifndef XT_FAST_ERFC_H
#define XT_FAST_ERFC_H

#include "fast_exp.h"

static inline float xt_fast_erfcf(float x)
{
    float z = fabsf(x);
    float t = 1.0f / fmaf(0.5f, z, 1.0f);
    float p = 0.17087277f;
    p = fmaf(p, t, -0.82215223f);
    p = fmaf(p, t, 1.48851587f);
    p = fmaf(p, t, -1.13520398f);
    p = fmaf(p, t, 0.27886807f);
    p = fmaf(p, t, -0.18628806f);
    p = fmaf(p, t, 0.09678418f);
    p = fmaf(p, t, 0.37409196f);
    p = fmaf(p, t, 1.00002368f);
    p = fmaf(p, t, -1.26551223f);
    float r = t * xt_fast_expf(fmaf(-z, z, p));
    return x < 0 ? 2.0f - r : r;
}

#endif
