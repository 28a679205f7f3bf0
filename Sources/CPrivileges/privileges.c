#include "ct_privileges.h"

#include <errno.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static int capability_sets(struct __user_cap_data_struct data[2], int write) {
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    long result = write ? syscall(SYS_capset, &header, data) : syscall(SYS_capget, &header, data);
    return result == 0 ? 0 : -errno;
}

int ct_keep_only_capabilities(uint64_t keep) {
    // The bounding set first: dropping from it needs CAP_SETPCAP, which the next step removes.
    for (int cap = 0; cap <= 63; cap++) {
        if (keep & (1ULL << cap)) continue;
        if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) != 1) continue;  // unknown to this kernel, or already gone
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) return -errno;
    }
    struct __user_cap_data_struct data[2];
    int result = capability_sets(data, 0);
    if (result != 0) return result;
    for (int word = 0; word < 2; word++) {
        uint32_t mask = (uint32_t)(keep >> (32 * word));
        data[word].effective &= mask;
        data[word].permitted &= mask;
        data[word].inheritable &= mask;
    }
    result = capability_sets(data, 1);
    if (result != 0) return result;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -errno;
    return 0;
}

uint64_t ct_effective_capabilities(void) {
    struct __user_cap_data_struct data[2];
    if (capability_sets(data, 0) != 0) return 0;
    return (uint64_t)data[0].effective | ((uint64_t)data[1].effective << 32);
}
