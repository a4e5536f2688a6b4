/*
 * fuzz_image.c: libFuzzer harness for xt_image_decode. The first byte picks the channel
 * count (0..4); the rest is the file. Every input must decode or fail with a message,
 * never crash, leak or read out of bounds (ASan + UBSan).
 */
#include <stdlib.h>
#include <string.h>

#include "xt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int32_t channels = data[0] % 5;
    /* Headers declaring big images are checked (xt_image_info) but not decoded: they run the
     * same code as small ones and would only slow the fuzzer down with large allocations. */
    int64_t shape[3];
    xt_clear_error();
    if (xt_image_info(data + 1, (int64_t)size - 1, "fuzz", shape) == XT_OK &&
        shape[0] * shape[1] > (1 << 16))
        return 0;
    xt_clear_error();
    xt_tensor *t = xt_image_decode(data + 1, (int64_t)size - 1, channels, "fuzz");
    if (t) {
        /* the shape must describe exactly the decoded bytes; touch them all */
        if (t->ndim != 3 || t->dtype != XT_UINT8 || (channels && t->shape[2] != channels))
            abort();
        const uint8_t *p = t->data;
        unsigned sum = 0;
        for (int64_t i = 0; i < xt_numel(t); i++) sum += p[i];
        (void)sum;
        xt_tensor_release(t);
    } else if (xt_last_error()[0] == '\0') {
        abort();   /* a failure must say why */
    }
    return 0;
}
