/*
 * fuzz_idx.c: libFuzzer harness for xt_read_idx (IDX, gzip or plain): any file must load
 * or fail with a message, never crash, leak or over-read.
 */
#include "memfile.h"
#include "xt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    xt_clear_error();
    xt_tensor *t = xt_read_idx(memfile(data, size));
    if (t) {
        if (t->dtype != XT_UINT8) abort();
        const uint8_t *p = t->data;
        unsigned sum = 0;
        for (int64_t i = 0; i < xt_numel(t); i++) sum += p[i];
        (void)sum;
        xt_tensor_release(t);
    } else if (xt_last_error()[0] == '\0') {
        abort();
    }
    return 0;
}
