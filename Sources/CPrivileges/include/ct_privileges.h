#ifndef CONNTRACKR_PRIVILEGES_H
#define CONNTRACKR_PRIVILEGES_H

#include <stdint.h>

/// Keeps only the capabilities whose bits are set in `keep` (bit N is capability N) in the effective, permitted
/// and inheritable sets, removes every other one from the bounding set, and sets no_new_privs, in every thread of
/// the process (these are per-thread attributes; each thread is signalled to drop its own, as libcap's psx does).
/// Returns 0, or a negative errno.
int ct_keep_only_capabilities(uint64_t keep);

/// The effective capability set of this process, as a bit mask.
uint64_t ct_effective_capabilities(void);

#endif
