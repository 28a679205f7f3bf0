#ifndef CONNTRACKR_CNFTABLES_SHIM_H
#define CONNTRACKR_CNFTABLES_SHIM_H
#include <nftables/libnftables.h>

/* setns(2) and CLONE_NEWNET are declared only with _GNU_SOURCE, which Swift's Glibc module is built without
 * (KernelNftables opens its handles in the blocker's network namespace). */
int setns(int fd, int nstype);
#define CT_CLONE_NEWNET 0x40000000

#endif
