#define _GNU_SOURCE
#include "ct_decompress.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

enum ct_format { CT_FORMAT_UNKNOWN, CT_FORMAT_PLAIN, CT_FORMAT_GZIP, CT_FORMAT_ZSTD };

struct ct_decompress {
    int fd;  // -1 once closed
    enum ct_format format;
    // Bytes read from fd and not yet handed on: [start, end) of input.
    unsigned char *input;
    size_t capacity, start, end;
    int at_eof;          // read(2) returned 0
    int64_t bytes_read;  // from fd, kept after close
    z_stream zlib;
    int zlib_ready;      // inflateInit2 succeeded (inflateEnd is due)
    int member_done;     // between gzip members
    ZSTD_DCtx *zstd;
    int frame_open;      // inside a zstd frame (ZSTD_decompressStream's last hint was not 0)
    int failed;
    char error[160];
};

static void ct_fail(struct ct_decompress *stream, const char *format, ...) {
    if (stream->failed) return;
    stream->failed = 1;
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(stream->error, sizeof stream->error, format, arguments);
    va_end(arguments);
}

/// Reads more of fd after what input holds (moved to its front first): 1 when bytes came, 0 at the end of the
/// file, -1 on a read error (recorded).
static int ct_fill(struct ct_decompress *stream) {
    if (stream->start > 0) {
        memmove(stream->input, stream->input + stream->start, stream->end - stream->start);
        stream->end -= stream->start;
        stream->start = 0;
    }
    if (stream->at_eof || stream->end == stream->capacity) return 0;
    while (1) {
        ssize_t got = read(stream->fd, stream->input + stream->end, stream->capacity - stream->end);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            ct_fail(stream, "read: %s", strerror(errno));
            return -1;
        }
        if (got == 0) {
            stream->at_eof = 1;
            return 0;
        }
        stream->end += (size_t)got;
        stream->bytes_read += got;
        return 1;
    }
}

static size_t ct_available(const struct ct_decompress *stream) { return stream->end - stream->start; }

/// Tells the format from the first bytes (up to 4, fewer only at the end of the file).
static int ct_sniff(struct ct_decompress *stream) {
    while (ct_available(stream) < 4) {
        int got = ct_fill(stream);
        if (got < 0) return -1;
        if (got == 0) break;
    }
    const unsigned char *bytes = stream->input + stream->start;
    size_t count = ct_available(stream);
    if (count >= 2 && bytes[0] == 0x1F && bytes[1] == 0x8B) {
        if (inflateInit2(&stream->zlib, 15 + 16) != Z_OK) {  // 15 + 16: a gzip wrapper, the largest window
            ct_fail(stream, "gzip: out of memory");
            return -1;
        }
        stream->zlib_ready = 1;
        stream->format = CT_FORMAT_GZIP;
    } else if (count >= 4 && bytes[0] == 0x28 && bytes[1] == 0xB5 && bytes[2] == 0x2F && bytes[3] == 0xFD) {
        stream->zstd = ZSTD_createDCtx();
        if (stream->zstd == NULL) {
            ct_fail(stream, "zstd: out of memory");
            return -1;
        }
        stream->format = CT_FORMAT_ZSTD;
    } else {
        stream->format = CT_FORMAT_PLAIN;
    }
    return 0;
}

static ssize_t ct_read_plain(struct ct_decompress *stream, char *buffer, size_t size) {
    size_t buffered = ct_available(stream);
    if (buffered > 0) {  // the sniffed bytes
        size_t count = buffered < size ? buffered : size;
        memcpy(buffer, stream->input + stream->start, count);
        stream->start += count;
        return (ssize_t)count;
    }
    while (1) {
        ssize_t got = read(stream->fd, buffer, size);
        if (got < 0 && errno == EINTR) continue;
        if (got > 0) stream->bytes_read += got;
        return got;
    }
}

/// One step of inflating: bytes made (> 0), 0 at the end (clean, or cut short: recorded), -1 on damage.
static ssize_t ct_read_gzip(struct ct_decompress *stream, char *buffer, size_t size) {
    // inflate takes unsigned counts.
    unsigned room = size > (1u << 30) ? (1u << 30) : (unsigned)size;
    while (1) {
        if (stream->member_done) {
            // After a member: another one, or the end (zlib's gzread ignores what follows that is not gzip).
            while (ct_available(stream) < 2) {
                int got = ct_fill(stream);
                if (got < 0) return -1;
                if (got == 0) break;
            }
            const unsigned char *bytes = stream->input + stream->start;
            if (ct_available(stream) < 2 || bytes[0] != 0x1F || bytes[1] != 0x8B) return 0;
            inflateReset(&stream->zlib);
            stream->member_done = 0;
        }
        if (ct_available(stream) == 0) {
            int got = ct_fill(stream);
            if (got < 0) return -1;
            if (got == 0) {
                ct_fail(stream, "gzip: unexpected end of file");
                return 0;
            }
        }
        size_t available = ct_available(stream);
        unsigned offered = available > (1u << 30) ? (1u << 30) : (unsigned)available;
        stream->zlib.next_in = stream->input + stream->start;
        stream->zlib.avail_in = offered;
        stream->zlib.next_out = (unsigned char *)buffer;
        stream->zlib.avail_out = room;
        int result = inflate(&stream->zlib, Z_NO_FLUSH);
        stream->start += offered - stream->zlib.avail_in;
        size_t made = room - stream->zlib.avail_out;
        if (result == Z_STREAM_END) {
            stream->member_done = 1;
        } else if (result != Z_OK && result != Z_BUF_ERROR) {
            ct_fail(stream, "gzip: %s", stream->zlib.msg != NULL ? stream->zlib.msg : zError(result));
            if (made == 0) {
                errno = EIO;
                return -1;
            }
        }
        if (made > 0) return (ssize_t)made;
    }
}

/// One step of ZSTD_decompressStream: bytes made (> 0), 0 at the end (clean, or cut short: recorded), -1 on damage.
static ssize_t ct_read_zstd(struct ct_decompress *stream, char *buffer, size_t size) {
    while (1) {
        if (ct_available(stream) == 0) {
            int got = ct_fill(stream);
            if (got < 0) return -1;
            if (got == 0) {
                if (stream->frame_open) ct_fail(stream, "zstd: unexpected end of file");
                return 0;
            }
        }
        ZSTD_inBuffer in = {stream->input + stream->start, ct_available(stream), 0};
        ZSTD_outBuffer out = {buffer, size, 0};
        size_t result = ZSTD_decompressStream(stream->zstd, &out, &in);
        stream->start += in.pos;
        if (ZSTD_isError(result)) {
            ct_fail(stream, "zstd: %s", ZSTD_getErrorName(result));
            if (out.pos == 0) {
                errno = EIO;
                return -1;
            }
            return (ssize_t)out.pos;
        }
        stream->frame_open = result != 0;
        if (out.pos > 0) return (ssize_t)out.pos;
    }
}

static ssize_t ct_decompress_read(void *cookie, char *buffer, size_t size) {
    struct ct_decompress *stream = cookie;
    if (stream->fd < 0 || stream->failed) {
        errno = EIO;
        return -1;
    }
    if (size == 0) return 0;
    if (stream->format == CT_FORMAT_UNKNOWN && ct_sniff(stream) < 0) {
        errno = EIO;
        return -1;
    }
    switch (stream->format) {
    case CT_FORMAT_GZIP: return ct_read_gzip(stream, buffer, size);
    case CT_FORMAT_ZSTD: return ct_read_zstd(stream, buffer, size);
    default: return ct_read_plain(stream, buffer, size);
    }
}

static int ct_decompress_close(void *cookie) {
    struct ct_decompress *stream = cookie;
    if (stream->fd >= 0) {
        close(stream->fd);
        stream->fd = -1;
    }
    if (stream->zlib_ready) {
        inflateEnd(&stream->zlib);
        stream->zlib_ready = 0;
    }
    if (stream->zstd != NULL) {
        ZSTD_freeDCtx(stream->zstd);
        stream->zstd = NULL;
    }
    free(stream->input);
    stream->input = NULL;
    return 0;
}

FILE *ct_decompress_fdopen(int fd, unsigned buffer_bytes, struct ct_decompress **result) {
    *result = NULL;
    struct ct_decompress *stream = calloc(1, sizeof *stream);
    if (stream != NULL) {
        stream->fd = fd;
        stream->capacity = buffer_bytes < 4096 ? 4096 : buffer_bytes;
        stream->input = malloc(stream->capacity);
    }
    if (stream == NULL || stream->input == NULL) {
        if (stream != NULL) free(stream);
        close(fd);
        errno = ENOMEM;
        return NULL;
    }
    cookie_io_functions_t functions = {
        .read = ct_decompress_read, .write = NULL, .seek = NULL, .close = ct_decompress_close};
    FILE *file = fopencookie(stream, "rb", functions);
    if (file == NULL) {
        int saved = errno;
        ct_decompress_close(stream);  // closes fd too: it is taken in every case
        free(stream);
        errno = saved;
        return NULL;
    }
    *result = stream;
    return file;
}

const char *ct_decompress_error(const struct ct_decompress *stream) { return stream->failed ? stream->error : NULL; }

int64_t ct_decompress_bytes_read(const struct ct_decompress *stream) { return stream->bytes_read; }

void ct_decompress_free(struct ct_decompress *stream) {
    if (stream == NULL) return;
    ct_decompress_close(stream);
    free(stream);
}

void ct_stream_lock_by_caller(FILE *stream) { __fsetlocking(stream, FSETLOCKING_BYCALLER); }
