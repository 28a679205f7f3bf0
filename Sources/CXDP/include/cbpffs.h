/* The filesystem side of bpffs that Swift's Glibc module leaves out: <sys/vfs.h> (statfs's f_type) is not in it.
 * Kept apart from cxdp.h, which is the loader's surface. */
#ifndef CBPFFS_H
#define CBPFFS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The filesystem type (statfs's f_type, e.g. BPF_FS_MAGIC 0xcafe4a11) of the filesystem holding `path`, in
 * `type`. Returns 0, or a negative errno (and sets nothing). */
int ct_filesystem_type(const char *path, uint32_t *type);

#ifdef __cplusplus
}
#endif

#endif
