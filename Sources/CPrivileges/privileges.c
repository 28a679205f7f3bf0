#include "ct_privileges.h"

#include <dirent.h>
#include <errno.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int capability_sets(struct __user_cap_data_struct data[2], int write) {
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    long result = write ? syscall(SYS_capset, &header, data) : syscall(SYS_capget, &header, data);
    return result == 0 ? 0 : -errno;
}

// Capabilities, the bounding set and no_new_privs are attributes of each thread, not of the process: the drop runs
// in every thread (here and in the signal handler below).
static int drop_in_this_thread(uint64_t keep) {
    struct __user_cap_data_struct data[2];
    int result = capability_sets(data, 0);
    if (result != 0) return result;
    // The bounding set first: dropping from it needs CAP_SETPCAP, which the next step removes. Without it (a
    // container started with --cap-drop ALL, a systemd unit with CapabilityBoundingSet=) the runtime has already
    // narrowed the bounding set, and the sets below are what is left to narrow.
    if (data[0].effective & (1U << CAP_SETPCAP)) {
        for (int cap = 0; cap <= 63; cap++) {
            if (keep & (1ULL << cap)) continue;
            if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) != 1) continue;  // unknown to this kernel, or already gone
            if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) return -errno;
        }
    }
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

static uint64_t broadcast_keep;
static atomic_int broadcast_done;
static atomic_int broadcast_error;

static void drop_handler(int signal) {
    (void)signal;
    int saved = errno;
    int result = drop_in_this_thread(broadcast_keep);
    if (result != 0) atomic_store(&broadcast_error, result);
    atomic_fetch_add(&broadcast_done, 1);
    errno = saved;
}

int ct_keep_only_capabilities(uint64_t keep) {
    int signal_number = SIGRTMIN + 4;
    struct sigaction action, previous;
    memset(&action, 0, sizeof action);
    action.sa_handler = drop_handler;
    action.sa_flags = SA_RESTART;
    sigemptyset(&action.sa_mask);
    if (sigaction(signal_number, &action, &previous) != 0) return -errno;
    broadcast_keep = keep;
    atomic_store(&broadcast_done, 0);
    atomic_store(&broadcast_error, 0);

    pid_t self = (pid_t)syscall(SYS_gettid);
    int signalled = 0;
    DIR *tasks = opendir("/proc/self/task");
    if (!tasks) {
        int error = -errno;
        sigaction(signal_number, &previous, NULL);
        return error;
    }
    struct dirent *entry;
    while ((entry = readdir(tasks)) != NULL) {
        pid_t tid = (pid_t)atoi(entry->d_name);
        if (tid <= 0 || tid == self) continue;
        if (syscall(SYS_tgkill, getpid(), tid, signal_number) == 0) signalled++;
    }
    closedir(tasks);

    int result = drop_in_this_thread(keep);
    // Wait (at most two seconds) for every signalled thread to have dropped.
    for (int waited = 0; atomic_load(&broadcast_done) < signalled && waited < 2000; waited++) {
        struct timespec pause = {.tv_sec = 0, .tv_nsec = 1000000};
        nanosleep(&pause, NULL);
    }
    sigaction(signal_number, &previous, NULL);
    if (result != 0) return result;
    if (atomic_load(&broadcast_error) != 0) return atomic_load(&broadcast_error);
    if (atomic_load(&broadcast_done) < signalled) return -ETIMEDOUT;
    return 0;
}

uint64_t ct_effective_capabilities(void) {
    struct __user_cap_data_struct data[2];
    if (capability_sets(data, 0) != 0) return 0;
    return (uint64_t)data[0].effective | ((uint64_t)data[1].effective << 32);
}
