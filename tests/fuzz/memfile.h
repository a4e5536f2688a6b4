/*
 * memfile.h: the readers under fuzz take a path, so each input is written to an in-memory
 * file (memfd) and passed as /proc/self/fd/<n>; nothing touches the disk.
 */
#ifndef XT_FUZZ_MEMFILE_H
#define XT_FUZZ_MEMFILE_H
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* The path of a file now holding exactly data[0..size). */
static const char *memfile(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("xt_fuzz", 0);
        if (fd < 0) {
            perror("memfd_create");
            abort();
        }
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size)) {
        perror("memfile");
        abort();
    }
    return path;
}
#endif
