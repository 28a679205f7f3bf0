#define _GNU_SOURCE
#include "ct_gzip.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

struct ct_gzip {
    gzFile file;      // NULL once the stream is closed
    int64_t offset;   // compressed offset, kept after close
    int failed;
    char error[160];
};

static void ct_gzip_record_error(struct ct_gzip *gzip) {
    if (gzip->failed) return;
    int code = Z_OK;
    const char *text = gzerror(gzip->file, &code);
    if (code == Z_OK || code == Z_STREAM_END) return;
    gzip->failed = 1;
    // zlib says "unexpected end of file" for a stream cut short, "incorrect header check" and the like for damage,
    // after the name it knows the file by ("<fd:3>: "), which says nothing to the user: the caller names the file.
    if (text != NULL && strncmp(text, "<fd:", 4) == 0) {
        const char *rest = strstr(text, ": ");
        if (rest != NULL) text = rest + 2;
    }
    snprintf(gzip->error, sizeof gzip->error, "gzip: %s", code == Z_ERRNO ? strerror(errno) : text);
}

static ssize_t ct_gzip_read(void *cookie, char *buffer, size_t size) {
    struct ct_gzip *gzip = cookie;
    if (gzip->file == NULL || gzip->failed) {
        errno = EIO;
        return -1;
    }
    // gzread takes an unsigned count.
    unsigned chunk = size > (1u << 30) ? (1u << 30) : (unsigned)size;
    int got = gzread(gzip->file, buffer, chunk);
    gzip->offset = gzoffset(gzip->file);
    if (got < 0) {
        ct_gzip_record_error(gzip);
        errno = EIO;
        return -1;
    }
    if (got == 0) ct_gzip_record_error(gzip);  // the end: clean, or a stream cut short (Z_BUF_ERROR)
    return got;
}

static int ct_gzip_close(void *cookie) {
    struct ct_gzip *gzip = cookie;
    if (gzip->file != NULL) {
        gzclose_r(gzip->file);
        gzip->file = NULL;
    }
    return 0;
}

FILE *ct_gzip_fdopen(int fd, unsigned buffer_bytes, struct ct_gzip **result) {
    *result = NULL;
    struct ct_gzip *gzip = calloc(1, sizeof *gzip);
    if (gzip == NULL) return NULL;
    gzip->file = gzdopen(fd, "rb");
    if (gzip->file == NULL) {
        close(fd);
        free(gzip);
        errno = ENOMEM;
        return NULL;
    }
    if (buffer_bytes > 0) gzbuffer(gzip->file, buffer_bytes);
    cookie_io_functions_t functions = {.read = ct_gzip_read, .write = NULL, .seek = NULL, .close = ct_gzip_close};
    FILE *stream = fopencookie(gzip, "rb", functions);
    if (stream == NULL) {
        int saved = errno;
        gzclose_r(gzip->file);  // closes fd too: it is taken in every case
        free(gzip);
        errno = saved;
        return NULL;
    }
    *result = gzip;
    return stream;
}

const char *ct_gzip_error(const struct ct_gzip *gzip) { return gzip->failed ? gzip->error : NULL; }

int64_t ct_gzip_compressed_offset(const struct ct_gzip *gzip) { return gzip->offset; }

void ct_gzip_free(struct ct_gzip *gzip) {
    if (gzip == NULL) return;
    ct_gzip_close(gzip);
    free(gzip);
}
