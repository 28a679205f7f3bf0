#ifndef CONNTRACKR_CT_GZIP_H
#define CONNTRACKR_CT_GZIP_H

#include <stdint.h>
#include <stdio.h>

/// A gzip stream being inflated: an opaque handle owned by the caller, freed with ct_gzip_free after the FILE made
/// from it is closed.
struct ct_gzip;

/// Makes a stdio stream of the inflated content of the gzip data read from `fd` (a file or a pipe; concatenated
/// members are read one after the other), for libpcap's pcap_fopen_offline. `fd` is taken in every case: closing
/// the stream closes it, and it is closed when the stream cannot be made (NULL, errno set). On success `*gzip`
/// receives the handle through which ct_gzip_error and ct_gzip_compressed_offset answer.
FILE *ct_gzip_fdopen(int fd, unsigned buffer_bytes, struct ct_gzip **gzip);

/// zlib's text for the first error met (corrupt data, a stream cut short), or NULL while there is none.
const char *ct_gzip_error(const struct ct_gzip *gzip);

/// Compressed bytes consumed so far, for progress.
int64_t ct_gzip_compressed_offset(const struct ct_gzip *gzip);

/// Frees the handle; call it after closing the stream.
void ct_gzip_free(struct ct_gzip *gzip);

#endif
