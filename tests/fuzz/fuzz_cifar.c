/*
 * fuzz_cifar.c: libFuzzer harness for xt_read_cifar, read as CIFAR-10 (1 label byte) and
 * as CIFAR-100 (2): any file must load or fail with a message.
 */
#include "memfile.h"
#include "xt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = memfile(data, size);
    for (int32_t label_bytes = 1; label_bytes <= 2; label_bytes++) {
        xt_clear_error();
        xt_tensor *labels = NULL;
        xt_tensor *images = xt_read_cifar(path, label_bytes, &labels);
        if (images) {
            if (!labels || images->shape[0] * (label_bytes + 3072) != (int64_t)size) abort();
            xt_tensor_release(images);
            xt_tensor_release(labels);
        } else if (labels || xt_last_error()[0] == '\0') {
            abort();
        }
    }
    return 0;
}
