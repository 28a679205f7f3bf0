#ifndef CONNTRACKR_CT_DECOMPRESS_H
#define CONNTRACKR_CT_DECOMPRESS_H

#include <stdint.h>
#include <stdio.h>

/// A capture being read through a decompressing layer: an opaque handle owned by the caller, freed with
/// ct_decompress_free after the FILE made from it is closed.
struct ct_decompress;

/// Makes a stdio stream of the content of the data read from `fd` (a file or a pipe), for libpcap's
/// pcap_fopen_offline. The format is told by the first bytes read, not by a name: gzip (1f 8b; concatenated members
/// are read one after the other), zstd (28 b5 2f fd; concatenated frames likewise), anything else is passed through
/// as it is. `fd` is taken in every case: closing the stream closes it, and it is closed when the stream cannot be
/// made (NULL, errno set). `buffer_bytes` is the size of the compressed-input buffer. On success `*handle` receives
/// the handle through which ct_decompress_error and ct_decompress_bytes_read answer.
FILE *ct_decompress_fdopen(int fd, unsigned buffer_bytes, struct ct_decompress **handle);

/// The first error met (corrupt data, a stream cut short), as one line such as "gzip: unexpected end of file" or
/// "zstd: Data corruption detected", or NULL while there is none.
const char *ct_decompress_error(const struct ct_decompress *handle);

/// Bytes read from `fd` so far (compressed bytes), for progress.
int64_t ct_decompress_bytes_read(const struct ct_decompress *handle);

/// Frees the handle; call it after closing the stream.
void ct_decompress_free(struct ct_decompress *handle);

/// Makes stdio skip its lock on `stream` in every call: for a stream that one thread alone reads at a time (any
/// capture stream, plain or from ct_decompress_fdopen). libpcap reads each record with two freads, and once the
/// process has a second thread each of them takes and releases the stream's lock.
void ct_stream_lock_by_caller(FILE *stream);

#endif
