/* conntrackr's XDP loader: libbpf and the generated skeleton behind the narrow surface of include/cxdp.h. */
#define _GNU_SOURCE
#include "cxdp.h"

#include <errno.h>
#include <limits.h>
#include <net/if.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <linux/magic.h>

#include "conntrackr.skel.h"
#include "scan_rule.h"

/* Returned by the ring buffer callback when the caller's buffer is full. libbpf has already consumed the record
 * the callback copied, so nothing is lost; the rest wait for the next poll. */
#define CT_BATCH_FULL (-ENOBUFS)

struct ct_program {
    struct conntrackr *skel;
    struct ring_buffer *ring;
    int link_fd;
    int wake_fd;
    /* The caller's buffer during ct_program_poll. */
    struct ct_event *batch;
    size_t batch_capacity;
    size_t batch_count;
};

struct ct_maps {
    int fds[2][2]; /* [table][0 IPv4, 1 IPv6]: the LPM tries */
    uint32_t capacity[2][2];
    int exact_fds[2]; /* [0 IPv4, 1 IPv6]: the exact-match block maps (ct_block_is_exact) */
    uint32_t exact_capacity[2];
    int stats_fd;
    int blocked_count_fd;
    int allow_units_fd;
};

/* --- errors --- */

static int fail(char *err, size_t err_len, int code, const char *format, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t err_len, int code, const char *format, ...)
{
    if (err && err_len > 0) {
        va_list args;
        va_start(args, format);
        vsnprintf(err, err_len, format, args);
        va_end(args);
    }
    return code < 0 ? code : -EINVAL;
}

/* libbpf reports details through its print callback. Keep the first warning of the current call (it names the
 * cause; the verifier log that may follow is long) to put into our one-line errors; print nothing else unless
 * CONNTRACKR_LIBBPF_DEBUG is set. */
static __thread char first_warning[256];
static int libbpf_debug;
static pthread_once_t print_once = PTHREAD_ONCE_INIT;

static int print_libbpf(enum libbpf_print_level level, const char *format, va_list args)
{
    if (libbpf_debug)
        return vfprintf(stderr, format, args);
    if (level == LIBBPF_WARN && first_warning[0] == '\0') {
        vsnprintf(first_warning, sizeof(first_warning), format, args);
        size_t length = strlen(first_warning);
        while (length > 0 && (first_warning[length - 1] == '\n' || first_warning[length - 1] == ' '))
            first_warning[--length] = '\0';
    }
    return 0;
}

static void install_print(void)
{
    libbpf_debug = getenv("CONNTRACKR_LIBBPF_DEBUG") != NULL;
    libbpf_set_print(print_libbpf);
}

static void begin_call(void)
{
    pthread_once(&print_once, install_print);
    first_warning[0] = '\0';
}

/* ": <libbpf's first warning>" or ": <strerror>" */
static const char *detail(int code, char *buffer, size_t length)
{
    if (first_warning[0] != '\0')
        snprintf(buffer, length, "%s", first_warning);
    else
        snprintf(buffer, length, "%s", strerror(code < 0 ? -code : code));
    return buffer;
}

#define PRIVILEGE_HINT "needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (run as root)"

/* --- the pin root --- */

/* Checks that `root` is (or would be created) on a BPF filesystem and, with `create`, creates it. */
static int prepare_pin_root(const char *root, int create, char *err, size_t err_len)
{
    if (!root || root[0] != '/' || strlen(root) >= PATH_MAX - 32)
        return fail(err, err_len, -EINVAL, "the BPF pin directory must be an absolute path, not '%s'",
                    root ? root : "");
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s", root);
    /* Find the deepest directory that exists; it tells which filesystem the pins will land on. */
    struct statfs fs;
    while (statfs(path, &fs) != 0) {
        if (errno != ENOENT)
            return fail(err, err_len, -errno, "cannot inspect %s: %s", path, strerror(errno));
        char *slash = strrchr(path, '/');
        if (!slash || slash == path)
            return fail(err, err_len, -ENOMEDIUM, "%s is not on a BPF filesystem", root);
        *slash = '\0';
    }
    if (fs.f_type != BPF_FS_MAGIC)
        return fail(err, err_len, -ENOMEDIUM,
                    "%s is not on a BPF filesystem: mount one with `mount -t bpf bpf /sys/fs/bpf`", root);
    struct stat status;
    if (stat(root, &status) == 0) {
        if (!S_ISDIR(status.st_mode))
            return fail(err, err_len, -ENOTDIR, "the BPF pin path %s is not a directory", root);
        return 0;
    }
    if (!create)
        return 0;
    /* mkdir -p, one component after the other. */
    snprintf(path, sizeof(path), "%s", root);
    for (char *slash = strchr(path + 1, '/');; slash = strchr(slash + 1, '/')) {
        if (slash)
            *slash = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST) {
            int code = -errno;
            if (code == -EPERM || code == -EACCES)
                return fail(err, err_len, -EPERM, "cannot create %s: %s (run as root)", path, strerror(-code));
            return fail(err, err_len, code, "cannot create %s: %s", path, strerror(-code));
        }
        if (!slash)
            break;
        *slash = '/';
    }
    return 0;
}

/* --- the program --- */

static int copy_record(void *context, void *data, size_t size)
{
    struct ct_program *program = context;
    if (size < sizeof(struct ct_event))
        return 0; /* not ours: the program writes nothing shorter */
    memcpy(&program->batch[program->batch_count], data, sizeof(struct ct_event));
    program->batch_count++;
    return program->batch_count == program->batch_capacity ? CT_BATCH_FULL : 0;
}

int ct_program_open(const char *pin_root, uint64_t wakeup_bytes, const struct ct_scan_config *scan,
                    const uint64_t *ignored_ports, ct_program **out, char *err, size_t err_len)
{
    char why[300];
    begin_call();
    *out = NULL;
    int code = prepare_pin_root(pin_root, 1, err, err_len);
    if (code < 0)
        return code;

    struct ct_program *program = calloc(1, sizeof(*program));
    if (!program)
        return fail(err, err_len, -ENOMEM, "out of memory");
    program->link_fd = -1;
    program->wake_fd = -1;

    LIBBPF_OPTS(bpf_object_open_opts, options, .pin_root_path = pin_root);
    program->skel = conntrackr__open_opts(&options);
    if (!program->skel) {
        code = -errno;
        fail(err, err_len, code, "cannot open the XDP program: %s", detail(code, why, sizeof(why)));
        goto failed;
    }
    program->skel->rodata->wakeup_bytes = wakeup_bytes ? wakeup_bytes : CT_DEFAULT_WAKEUP_BYTES;
    if (scan)
        program->skel->rodata->scan_config = *scan;
    if (ignored_ports)
        memcpy((void *)program->skel->rodata->ignored_ports, ignored_ports,
               sizeof(program->skel->rodata->ignored_ports));
    /* Each pair's state holds only the slots the threshold uses (scan_rule.h): the program bounds its slot indexes
     * by the same threshold, and the verifier refuses it if the two ever disagree. */
    uint32_t slots = ct_scan_slots_used(scan ? scan->port_threshold : 0);
    code = bpf_map__set_value_size(program->skel->maps.ct_scan_pairs, ct_scan_state_size(slots));
    if (code < 0) {
        fail(err, err_len, code, "cannot size the scan rule's state: %s", detail(code, why, sizeof(why)));
        goto failed;
    }
    code = conntrackr__load(program->skel);
    if (code < 0) {
        if (code == -EPERM || code == -EACCES) {
            /* EACCES is also the verifier's refusal; only EPERM means a missing capability for certain. */
            if (code == -EPERM || geteuid() != 0) {
                fail(err, err_len, -EPERM, "loading the XDP program " PRIVILEGE_HINT ": %s",
                     detail(code, why, sizeof(why)));
                code = -EPERM;
                goto failed;
            }
        }
        if (strstr(first_warning, "reuse pinned map")) {
            fail(err, err_len, -EINVAL,
                 "the maps pinned under %s belong to another conntrackr version (remove that directory to start "
                 "afresh, which drops its blocks): %s",
                 pin_root, first_warning);
            code = -EINVAL;
            goto failed;
        }
        fail(err, err_len, code, "cannot load the XDP program: %s", detail(code, why, sizeof(why)));
        goto failed;
    }

    program->ring = ring_buffer__new(bpf_map__fd(program->skel->maps.ct_events), copy_record, program, NULL);
    if (!program->ring) {
        code = -errno;
        fail(err, err_len, code, "cannot map the ring buffer: %s", detail(code, why, sizeof(why)));
        goto failed;
    }
    /* libbpf watches the ring level-triggered, which makes every wait return while any record waits: under a
     * steady trickle the reader would spin through tiny batches. Edge-triggered, a wait ends only when the program
     * wakes the reader (once wakeup_bytes wait) or at its timeout, and records are read in large batches. */
    struct epoll_event ring_event = { .events = EPOLLIN | EPOLLET, .data.u64 = 0 };
    if (epoll_ctl(ring_buffer__epoll_fd(program->ring), EPOLL_CTL_MOD, bpf_map__fd(program->skel->maps.ct_events),
                  &ring_event) != 0) {
        code = -errno;
        fail(err, err_len, code, "cannot set up the ring buffer's wake-up: %s", strerror(errno));
        goto failed;
    }
    /* Our own descriptor in the ring's epoll set lets another thread end a poll at once (stop()). */
    program->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event wake = { .events = EPOLLIN, .data.u64 = UINT64_MAX };
    if (program->wake_fd < 0 ||
        epoll_ctl(ring_buffer__epoll_fd(program->ring), EPOLL_CTL_ADD, program->wake_fd, &wake) != 0) {
        code = -errno;
        fail(err, err_len, code, "cannot set up the ring buffer's wake-up: %s", strerror(errno));
        goto failed;
    }
    *out = program;
    return 0;

failed:
    ct_program_close(program);
    return code;
}

static int attach_once(struct ct_program *program, int ifindex, uint32_t flags)
{
    LIBBPF_OPTS(bpf_link_create_opts, options, .flags = flags);
    int fd = bpf_link_create(bpf_program__fd(program->skel->progs.conntrackr_xdp), ifindex, BPF_XDP, &options);
    if (fd < 0)
        return fd < -1 ? fd : -errno;
    program->link_fd = fd;
    return 0;
}

int ct_program_attach(ct_program *program, int ifindex, enum ct_xdp_mode mode, enum ct_xdp_mode *used_mode,
                      char *err, size_t err_len)
{
    char why[300];
    begin_call();
    if (program->link_fd >= 0)
        return fail(err, err_len, -EALREADY, "the XDP program is already attached");
    char name[IF_NAMESIZE] = "";
    if (ifindex <= 0 || !if_indextoname((unsigned)ifindex, name))
        return fail(err, err_len, -ENODEV, "no network interface with index %d", ifindex);

    int code;
    enum ct_xdp_mode tried = mode == CT_XDP_MODE_GENERIC ? CT_XDP_MODE_GENERIC : CT_XDP_MODE_NATIVE;
    code = attach_once(program, ifindex, tried == CT_XDP_MODE_NATIVE ? XDP_FLAGS_DRV_MODE : XDP_FLAGS_SKB_MODE);
    /* Native XDP is refused by drivers without it (EOPNOTSUPP) or in a configuration it cannot handle
     * (EINVAL: MTU, LRO, ...); auto falls back to generic then, but never past another program. */
    if (code < 0 && mode == CT_XDP_MODE_AUTO && code != -EBUSY && code != -EEXIST && code != -EPERM) {
        tried = CT_XDP_MODE_GENERIC;
        code = attach_once(program, ifindex, XDP_FLAGS_SKB_MODE);
    }
    if (code == 0) {
        if (used_mode)
            *used_mode = tried;
        return 0;
    }
    if (code == -EBUSY || code == -EEXIST)
        return fail(err, err_len, -EBUSY,
                    "%s already has an XDP program attached (another conntrackr? `ip link show %s` names it)", name,
                    name);
    if (code == -EPERM || code == -EACCES)
        return fail(err, err_len, -EPERM, "attaching XDP to %s " PRIVILEGE_HINT, name);
    return fail(err, err_len, code, "cannot attach XDP to %s in %s mode: %s", name,
                tried == CT_XDP_MODE_NATIVE ? "native" : "generic", detail(code, why, sizeof(why)));
}

void ct_program_detach(ct_program *program)
{
    if (program && program->link_fd >= 0) {
        close(program->link_fd); /* the link is not pinned, so closing it detaches the program */
        program->link_fd = -1;
    }
}

void ct_program_close(ct_program *program)
{
    if (!program)
        return;
    ct_program_detach(program);
    ring_buffer__free(program->ring);
    if (program->wake_fd >= 0)
        close(program->wake_fd);
    conntrackr__destroy(program->skel); /* unpins nothing: pins by name outlive the object */
    free(program);
}

int ct_program_poll(ct_program *program, int timeout_ms, struct ct_event *events, size_t capacity, size_t *count,
                    char *err, size_t err_len)
{
    *count = 0;
    if (capacity == 0)
        return 0;
    if (timeout_ms != 0) {
        /* The program submits with BPF_RB_NO_WAKEUP until enough data waits, so a timeout is normal and is
         * followed by a consume all the same. */
        struct epoll_event ready[2];
        if (epoll_wait(ring_buffer__epoll_fd(program->ring), ready, 2, timeout_ms) < 0 && errno != EINTR)
            return fail(err, err_len, -errno, "waiting for the ring buffer failed: %s", strerror(errno));
    }
    program->batch = events;
    program->batch_capacity = capacity;
    program->batch_count = 0;
    int consumed = ring_buffer__consume(program->ring);
    *count = program->batch_count;
    program->batch = NULL;
    if (consumed < 0 && consumed != CT_BATCH_FULL)
        return fail(err, err_len, consumed, "reading the ring buffer failed: %s", strerror(-consumed));
    return 0;
}

void ct_program_wake(ct_program *program)
{
    uint64_t one = 1;
    if (program && program->wake_fd >= 0 && write(program->wake_fd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is already non-zero, so poll returns at once anyway. */
    }
}

/* Sums a per-CPU value made of `fields` uint64_t counters (struct ct_stats, struct ct_scan_stats) into `out`. */
static int sum_per_cpu(int fd, uint64_t *out, size_t fields, const char *what, char *err, size_t err_len)
{
    memset(out, 0, fields * sizeof(uint64_t));
    int cpus = libbpf_num_possible_cpus();
    if (cpus <= 0)
        return fail(err, err_len, cpus < 0 ? cpus : -EINVAL, "cannot count the CPUs");
    uint64_t *per_cpu = calloc((size_t)cpus * fields, sizeof(uint64_t));
    if (!per_cpu)
        return fail(err, err_len, -ENOMEM, "out of memory");
    uint32_t zero = 0;
    if (bpf_map_lookup_elem(fd, &zero, per_cpu) != 0) {
        int code = -errno;
        free(per_cpu);
        return fail(err, err_len, code, "cannot read %s: %s", what, strerror(-code));
    }
    for (int cpu = 0; cpu < cpus; cpu++)
        for (size_t field = 0; field < fields; field++)
            out[field] += per_cpu[(size_t)cpu * fields + field];
    free(per_cpu);
    return 0;
}

_Static_assert(sizeof(struct ct_stats) % sizeof(uint64_t) == 0, "struct ct_stats is counters only");
_Static_assert(sizeof(struct ct_scan_stats) % sizeof(uint64_t) == 0, "struct ct_scan_stats is counters only");

static int read_stats(int fd, struct ct_stats *stats, char *err, size_t err_len)
{
    return sum_per_cpu(fd, (uint64_t *)stats, sizeof(*stats) / sizeof(uint64_t), "the XDP statistics", err, err_len);
}

int ct_program_read_stats(ct_program *program, struct ct_stats *stats, char *err, size_t err_len)
{
    return read_stats(bpf_map__fd(program->skel->maps.ct_stats), stats, err, err_len);
}

int ct_program_read_scan_stats(ct_program *program, struct ct_scan_stats *stats, char *err, size_t err_len)
{
    return sum_per_cpu(bpf_map__fd(program->skel->maps.ct_scan_stats), (uint64_t *)stats,
                       sizeof(*stats) / sizeof(uint64_t), "the scan rule's statistics", err, err_len);
}

_Static_assert(sizeof(struct ct_guard_stats) % sizeof(uint64_t) == 0, "struct ct_guard_stats is counters only");

int ct_program_read_guard_stats(ct_program *program, struct ct_guard_stats *stats, char *err, size_t err_len)
{
    return sum_per_cpu(bpf_map__fd(program->skel->maps.ct_guard_stats), (uint64_t *)stats,
                       sizeof(*stats) / sizeof(uint64_t), "the evasion guards' statistics", err, err_len);
}

int ct_program_test_run(ct_program *program, const void *frame, size_t frame_len, uint32_t ingress_ifindex,
                        uint32_t repeat, uint32_t *verdict, char *err, size_t err_len)
{
    begin_call();
    if (frame_len < 14 || frame_len > UINT32_MAX)
        return fail(err, err_len, -EINVAL, "a test frame needs at least 14 bytes, not %zu", frame_len);
    struct xdp_md context = { .data = 0, .data_end = (uint32_t)frame_len, .ingress_ifindex = ingress_ifindex };
    LIBBPF_OPTS(bpf_test_run_opts, options, .data_in = frame, .data_size_in = (uint32_t)frame_len,
                .repeat = repeat ? repeat : 1);
    if (ingress_ifindex != 0) {
        options.ctx_in = &context;
        options.ctx_size_in = sizeof(context);
    }
    int code = bpf_prog_test_run_opts(bpf_program__fd(program->skel->progs.conntrackr_xdp), &options);
    if (code != 0) {
        code = code < -1 ? code : -errno;
        return fail(err, err_len, code, "BPF_PROG_TEST_RUN failed: %s", strerror(-code));
    }
    *verdict = options.retval;
    return 0;
}

/* --- the pinned maps --- */

static const char *const map_names[2][2] = {
    [CT_TABLE_BLOCK] = { "ct_block_v4", "ct_block_v6" },
    [CT_TABLE_ALLOW] = { "ct_allow_v4", "ct_allow_v6" },
};
static const char *const exact_map_names[2] = { "ct_block_v4_exact", "ct_block_v6_exact" };

/* Opens one pinned map and checks that it is the map this code expects. */
static int open_pinned(const char *root, const char *name, uint32_t type, uint32_t key_size, uint32_t value_size,
                       int *fd_out, uint32_t *max_entries, char *err, size_t err_len)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", root, name);
    int fd = bpf_obj_get(path);
    if (fd < 0) {
        int code = -errno;
        if (code == -ENOENT)
            return fail(err, err_len, code, "no conntrackr maps pinned under %s (%s is missing)", root, name);
        if (code == -EPERM || code == -EACCES)
            return fail(err, err_len, -EPERM, "opening %s " PRIVILEGE_HINT, path);
        return fail(err, err_len, code, "cannot open %s: %s", path, strerror(-code));
    }
    struct bpf_map_info info;
    uint32_t length = sizeof(info);
    memset(&info, 0, sizeof(info));
    if (bpf_obj_get_info_by_fd(fd, &info, &length) != 0) {
        int code = -errno;
        close(fd);
        return fail(err, err_len, code, "cannot inspect %s: %s", path, strerror(-code));
    }
    if (info.type != type || info.key_size != key_size || info.value_size != value_size) {
        close(fd);
        return fail(err, err_len, -EINVAL,
                    "%s is not a map of this conntrackr version (remove %s to start afresh, which drops its "
                    "blocks)",
                    path, root);
    }
    *fd_out = fd;
    if (max_entries)
        *max_entries = info.max_entries;
    return 0;
}

static int open_all(const char *root, struct ct_maps *maps, char *err, size_t err_len)
{
    static const uint32_t key_sizes[2] = { sizeof(struct ct_lpm_v4_key), sizeof(struct ct_lpm_v6_key) };
    static const uint32_t value_sizes[2] = { sizeof(struct ct_block_value), sizeof(struct ct_allow_value) };
    for (int table = 0; table < 2; table++) {
        for (int family = 0; family < 2; family++) {
            int code = open_pinned(root, map_names[table][family], BPF_MAP_TYPE_LPM_TRIE, key_sizes[family],
                                   value_sizes[table], &maps->fds[table][family], &maps->capacity[table][family],
                                   err, err_len);
            if (code < 0)
                return code;
        }
    }
    static const uint32_t exact_key_sizes[2] = { sizeof(struct ct_exact_v4_key), sizeof(struct ct_exact_v6_key) };
    for (int family = 0; family < 2; family++) {
        /* Missing from the pins of a version without them: -ENOENT, and ct_maps_open's create path (libbpf) adds
         * them next to the old ones. */
        int code = open_pinned(root, exact_map_names[family], BPF_MAP_TYPE_HASH, exact_key_sizes[family],
                               sizeof(struct ct_block_value), &maps->exact_fds[family],
                               &maps->exact_capacity[family], err, err_len);
        if (code < 0)
            return code;
    }
    int code = open_pinned(root, "ct_stats", BPF_MAP_TYPE_PERCPU_ARRAY, sizeof(uint32_t), sizeof(struct ct_stats),
                           &maps->stats_fd, NULL, err, err_len);
    if (code < 0)
        return code;
    code = open_pinned(root, "ct_blocked_count", BPF_MAP_TYPE_ARRAY, sizeof(uint32_t), sizeof(uint64_t),
                       &maps->blocked_count_fd, NULL, err, err_len);
    if (code < 0)
        return code;
    return open_pinned(root, "ct_allow_v6_units", BPF_MAP_TYPE_HASH, sizeof(struct ct_lpm_v6_key),
                       sizeof(struct ct_allow_value), &maps->allow_units_fd, NULL, err, err_len);
}

static void close_all(struct ct_maps *maps)
{
    for (int table = 0; table < 2; table++)
        for (int family = 0; family < 2; family++)
            if (maps->fds[table][family] >= 0)
                close(maps->fds[table][family]);
    for (int family = 0; family < 2; family++)
        if (maps->exact_fds[family] >= 0)
            close(maps->exact_fds[family]);
    maps->exact_fds[0] = maps->exact_fds[1] = -1;
    if (maps->stats_fd >= 0)
        close(maps->stats_fd);
    if (maps->blocked_count_fd >= 0)
        close(maps->blocked_count_fd);
    if (maps->allow_units_fd >= 0)
        close(maps->allow_units_fd);
    for (int table = 0; table < 2; table++)
        maps->fds[table][0] = maps->fds[table][1] = -1;
    maps->stats_fd = maps->blocked_count_fd = maps->allow_units_fd = -1;
}

int ct_maps_open(const char *pin_root, int create, ct_maps **out, char *err, size_t err_len)
{
    begin_call();
    *out = NULL;
    int code = prepare_pin_root(pin_root, 0, err, err_len);
    if (code < 0)
        return code;
    struct ct_maps *maps = calloc(1, sizeof(*maps));
    if (!maps)
        return fail(err, err_len, -ENOMEM, "out of memory");
    for (int table = 0; table < 2; table++)
        maps->fds[table][0] = maps->fds[table][1] = -1;
    maps->exact_fds[0] = maps->exact_fds[1] = -1;
    maps->stats_fd = maps->blocked_count_fd = maps->allow_units_fd = -1;

    code = open_all(pin_root, maps, err, err_len);
    if (code == -ENOENT && create) {
        /* Nothing pinned yet, or not every map (pins of an older version): loading the program reuses what is
         * pinned, creates and pins the rest, and the maps outlive it. */
        close_all(maps);
        ct_program *program = NULL;
        code = ct_program_open(pin_root, 0, NULL, NULL, &program, err, err_len);
        if (code == 0) {
            ct_program_close(program);
            code = open_all(pin_root, maps, err, err_len);
        }
    }
    if (code < 0) {
        ct_maps_close(maps);
        return code;
    }
    *out = maps;
    return 0;
}

void ct_maps_close(ct_maps *maps)
{
    if (!maps)
        return;
    close_all(maps);
    free(maps);
}

int ct_maps_read_stats(const ct_maps *maps, struct ct_stats *stats, char *err, size_t err_len)
{
    return read_stats(maps->stats_fd, stats, err, err_len);
}

uint32_t ct_maps_capacity(const ct_maps *maps, enum ct_table table, uint8_t family)
{
    if ((table != CT_TABLE_BLOCK && table != CT_TABLE_ALLOW) ||
        (family != CT_FAMILY_IPV4 && family != CT_FAMILY_IPV6))
        return 0;
    int index = family == CT_FAMILY_IPV4 ? 0 : 1;
    return maps->capacity[table][index] + (table == CT_TABLE_BLOCK ? maps->exact_capacity[index] : 0);
}

/* The exact-match key for a block prefix. Returns the family index (0 IPv4, 1 IPv6), or -1 when the prefix is not
 * of an exact shape (it belongs in the LPM trie). */
union exact_key {
    struct ct_exact_v4_key v4;
    struct ct_exact_v6_key v6;
};

static int make_exact_key(const struct ct_prefix *prefix, union exact_key *key)
{
    if (!ct_block_is_exact(prefix->family, prefix->length))
        return -1;
    memset(key, 0, sizeof(*key));
    if (prefix->family == CT_FAMILY_IPV4) {
        memcpy(key->v4.addr, prefix->addr, sizeof(key->v4.addr));
        return 0;
    }
    memcpy(key->v6.addr, prefix->addr, sizeof(key->v6.addr));
    return 1;
}

/* The LPM key for a prefix, host bits cleared. Returns the family index (0 IPv4, 1 IPv6) or -EINVAL. */
union lpm_key {
    struct ct_lpm_v4_key v4;
    struct ct_lpm_v6_key v6;
};

static int make_key(const struct ct_prefix *prefix, union lpm_key *key)
{
    memset(key, 0, sizeof(*key));
    int bytes;
    uint8_t *addr;
    if (prefix->family == CT_FAMILY_IPV4 && prefix->length <= 32) {
        key->v4.prefixlen = prefix->length;
        addr = key->v4.addr;
        bytes = 4;
    } else if (prefix->family == CT_FAMILY_IPV6 && prefix->length <= 128) {
        key->v6.prefixlen = prefix->length;
        addr = key->v6.addr;
        bytes = 16;
    } else {
        return -EINVAL;
    }
    for (int index = 0; index < bytes; index++) {
        int bits = prefix->length - index * 8;
        uint8_t mask = bits >= 8 ? 0xFF : bits <= 0 ? 0 : (uint8_t)(0xFF << (8 - bits));
        addr[index] = prefix->addr[index] & mask;
    }
    return bytes == 4 ? 0 : 1;
}

static void prefix_from_key(int family_index, const union lpm_key *key, struct ct_prefix *prefix)
{
    memset(prefix, 0, sizeof(*prefix));
    if (family_index == 0) {
        prefix->family = CT_FAMILY_IPV4;
        prefix->length = (uint8_t)key->v4.prefixlen;
        memcpy(prefix->addr, key->v4.addr, 4);
    } else {
        prefix->family = CT_FAMILY_IPV6;
        prefix->length = (uint8_t)key->v6.prefixlen;
        memcpy(prefix->addr, key->v6.addr, 16);
    }
}

/* The error of a failed write to map `name`. */
static int write_failed(int code, const char *what, const char *name, char *err, size_t err_len)
{
    if (code == -ENOSPC || code == -E2BIG)
        return fail(err, err_len, -ENOSPC, "the %s map %s is full", what, name);
    if (code == -EPERM || code == -EACCES)
        return fail(err, err_len, -EPERM, "writing %s " PRIVILEGE_HINT, name);
    return fail(err, err_len, code, "cannot write %s: %s", name, strerror(-code));
}

/* Blocks an exact-shaped prefix in its hash map. The same prefix in the trie (written by a version without the
 * exact maps) is removed, so that it is listed, counted and removed once. */
static int put_exact(const ct_maps *maps, int family, const union exact_key *key, const union lpm_key *lpm_key,
                     const struct ct_block_value *value, int keep_packets, char *err, size_t err_len)
{
    int fd = maps->exact_fds[family];
    struct ct_block_value replacement = *value, current;
    /* A hash lookup is exact (unlike the trie's), so the counter can be read directly. */
    if (keep_packets && bpf_map_lookup_elem(fd, key, &current) == 0)
        replacement.packets = current.packets;
    if (bpf_map_update_elem(fd, key, &replacement, BPF_ANY) != 0)
        return write_failed(-errno, "block", exact_map_names[family], err, err_len);
    bpf_map_delete_elem(maps->fds[CT_TABLE_BLOCK][family], lpm_key);
    return 0;
}

static int put(const ct_maps *maps, enum ct_table table, const struct ct_prefix *prefix, const void *value,
               int keep_packets, char *err, size_t err_len)
{
    union lpm_key key;
    int family = make_key(prefix, &key);
    if (family < 0)
        return fail(err, err_len, -EINVAL, "invalid prefix (family %u, length %u)", prefix->family, prefix->length);
    union exact_key exact;
    if (table == CT_TABLE_BLOCK && make_exact_key(prefix, &exact) >= 0)
        return put_exact(maps, family, &exact, &key, value, keep_packets, err, err_len);
    int fd = maps->fds[table][family];
    /* NOEXIST first: an LPM lookup returns the longest match, not the exact prefix, so only a refused insert
     * proves that this exact prefix is present and that a lookup now returns its own value. */
    if (bpf_map_update_elem(fd, &key, value, BPF_NOEXIST) == 0)
        return 0;
    int code = -errno;
    if (code == -EEXIST) {
        struct ct_block_value replacement;
        if (table == CT_TABLE_BLOCK && keep_packets) {
            struct ct_block_value current;
            replacement = *(const struct ct_block_value *)value;
            if (bpf_map_lookup_elem(fd, &key, &current) == 0)
                replacement.packets = current.packets;
            value = &replacement;
        }
        if (bpf_map_update_elem(fd, &key, value, BPF_ANY) == 0)
            return 0;
        code = -errno;
    }
    return write_failed(code, table == CT_TABLE_BLOCK ? "block" : "allow", map_names[table][family], err, err_len);
}

int ct_block_put(const ct_maps *maps, const struct ct_prefix *prefix, const struct ct_block_value *value,
                 int keep_packets, char *err, size_t err_len)
{
    return put(maps, CT_TABLE_BLOCK, prefix, value, keep_packets, err, err_len);
}

int ct_block_lookup(const ct_maps *maps, const struct ct_prefix *prefix, struct ct_block_value *value, char *err,
                    size_t err_len)
{
    union lpm_key key;
    int family = make_key(prefix, &key);
    if (family < 0)
        return fail(err, err_len, -EINVAL, "invalid prefix (family %u, length %u)", prefix->family, prefix->length);
    /* The exact-match map first, as the program looks; the trie still answers for an exact-shaped prefix that a
     * version without the exact maps put there, and for the prefixes around one. */
    union exact_key exact;
    if (make_exact_key(prefix, &exact) >= 0 && bpf_map_lookup_elem(maps->exact_fds[family], &exact, value) == 0)
        return 0;
    if (bpf_map_lookup_elem(maps->fds[CT_TABLE_BLOCK][family], &key, value) == 0)
        return 0;
    int code = -errno;
    if (code == -ENOENT)
        return code;
    return fail(err, err_len, code, "cannot read %s: %s", map_names[CT_TABLE_BLOCK][family], strerror(-code));
}

/* How many keys map `fd` holds, walking at most `limit` steps. Returns the count or a negative errno. */
static int64_t count_keys(int fd, uint64_t limit)
{
    uint8_t current[sizeof(union lpm_key)], next[sizeof(union lpm_key)];
    int64_t count = 0;
    for (uint64_t step = 0; step < limit; step++) {
        if (bpf_map_get_next_key(fd, count ? current : NULL, next) != 0)
            return errno == ENOENT ? count : -errno;
        memcpy(current, next, sizeof(current));
        count++;
    }
    return count;
}

int ct_block_count(const ct_maps *maps, uint64_t *exact, uint64_t *trie, char *err, size_t err_len)
{
    uint64_t totals[2] = { 0, 0 };
    for (int family = 0; family < 2; family++) {
        int fds[2] = { maps->exact_fds[family], maps->fds[CT_TABLE_BLOCK][family] };
        uint32_t capacities[2] = { maps->exact_capacity[family], maps->capacity[CT_TABLE_BLOCK][family] };
        for (int kind = 0; kind < 2; kind++) {
            int64_t count = count_keys(fds[kind], 2 * (uint64_t)capacities[kind] + 16);
            if (count < 0)
                return fail(err, err_len, (int)count, "cannot count the block maps: %s", strerror((int)-count));
            totals[kind] += (uint64_t)count;
        }
    }
    if (exact)
        *exact = totals[0];
    if (trie)
        *trie = totals[1];
    return 0;
}

int ct_allow_put(const ct_maps *maps, const struct ct_prefix *prefix, char *err, size_t err_len)
{
    struct ct_allow_value value = { 0 };
    return put(maps, CT_TABLE_ALLOW, prefix, &value, 0, err, err_len);
}

int ct_entry_delete(const ct_maps *maps, enum ct_table table, const struct ct_prefix *prefix, char *err,
                    size_t err_len)
{
    if (table != CT_TABLE_BLOCK && table != CT_TABLE_ALLOW)
        return fail(err, err_len, -EINVAL, "no such table %d", table);
    union lpm_key key;
    int family = make_key(prefix, &key);
    if (family < 0)
        return fail(err, err_len, -EINVAL, "invalid prefix (family %u, length %u)", prefix->family, prefix->length);
    /* An exact-shaped block is removed from both maps: the trie may hold it from a version without the exact
     * maps. */
    union exact_key exact;
    int removed = 0;
    if (table == CT_TABLE_BLOCK && make_exact_key(prefix, &exact) >= 0) {
        if (bpf_map_delete_elem(maps->exact_fds[family], &exact) == 0)
            removed = 1;
        else if (errno != ENOENT)
            return write_failed(-errno, "block", exact_map_names[family], err, err_len);
    }
    if (bpf_map_delete_elem(maps->fds[table][family], &key) == 0)
        return 0;
    int code = -errno;
    if (code == -ENOENT)
        return removed ? 0 : code; /* not an error worth a message: the caller asked for something absent */
    if (code == -EPERM || code == -EACCES)
        return fail(err, err_len, -EPERM, "writing %s " PRIVILEGE_HINT, map_names[table][family]);
    return fail(err, err_len, code, "cannot delete from %s: %s", map_names[table][family], strerror(-code));
}

/* Visits the exact-match block map of one family. Returns 0, 1 when the visitor stopped, or a negative errno. */
static int foreach_exact(const ct_maps *maps, int family, ct_entry_visitor visitor, void *context, char *err,
                         size_t err_len)
{
    int fd = maps->exact_fds[family];
    union exact_key current, next;
    int first = 1;
    /* A hash walk restarts from the first bucket when the current key was deleted meanwhile: bound it. */
    uint64_t limit = 2 * (uint64_t)maps->exact_capacity[family] + 16;
    for (uint64_t step = 0; step < limit; step++) {
        if (bpf_map_get_next_key(fd, first ? NULL : &current, &next) != 0) {
            if (errno == ENOENT)
                return 0;
            int code = -errno;
            return fail(err, err_len, code, "cannot list %s: %s", exact_map_names[family], strerror(-code));
        }
        first = 0;
        current = next;
        struct ct_block_value value;
        if (bpf_map_lookup_elem(fd, &next, &value) != 0)
            continue; /* removed meanwhile */
        struct ct_prefix prefix;
        memset(&prefix, 0, sizeof(prefix));
        if (family == 0) {
            prefix.family = CT_FAMILY_IPV4;
            prefix.length = 32;
            memcpy(prefix.addr, next.v4.addr, sizeof(next.v4.addr));
        } else {
            prefix.family = CT_FAMILY_IPV6;
            prefix.length = CT_EXACT_V6_PREFIX_LEN;
            memcpy(prefix.addr, next.v6.addr, sizeof(next.v6.addr));
        }
        if (visitor(context, &prefix, &value))
            return 1;
    }
    return 0;
}

int ct_entry_foreach(const ct_maps *maps, enum ct_table table, ct_entry_visitor visitor, void *context, char *err,
                     size_t err_len)
{
    if (table != CT_TABLE_BLOCK && table != CT_TABLE_ALLOW)
        return fail(err, err_len, -EINVAL, "no such table %d", table);
    for (int family = 0; family < 2; family++) {
        if (table == CT_TABLE_BLOCK) {
            int code = foreach_exact(maps, family, visitor, context, err, err_len);
            if (code != 0)
                return code < 0 ? code : 0;
        }
        int fd = maps->fds[table][family];
        union lpm_key current, next;
        int first = 1;
        /* Deleting entries meanwhile can restart the trie's walk; bound it so that it always ends. */
        uint64_t limit = 2 * (uint64_t)maps->capacity[table][family] + 16;
        for (uint64_t step = 0; step < limit; step++) {
            if (bpf_map_get_next_key(fd, first ? NULL : &current, &next) != 0) {
                if (errno == ENOENT)
                    break;
                int code = -errno;
                return fail(err, err_len, code, "cannot list %s: %s", map_names[table][family], strerror(-code));
            }
            first = 0;
            current = next;
            struct ct_prefix prefix;
            prefix_from_key(family, &next, &prefix);
            if (table == CT_TABLE_BLOCK) {
                struct ct_block_value value;
                /* A stored key's lookup returns its own value: it is its own longest match. */
                if (bpf_map_lookup_elem(fd, &next, &value) != 0)
                    continue; /* removed meanwhile */
                if (visitor(context, &prefix, &value))
                    return 0;
            } else if (visitor(context, &prefix, NULL)) {
                return 0;
            }
        }
    }
    return 0;
}

int ct_maps_set_blocked_count(const ct_maps *maps, uint64_t count, char *err, size_t err_len)
{
    uint32_t zero = 0;
    if (bpf_map_update_elem(maps->blocked_count_fd, &zero, &count, BPF_ANY) != 0) {
        int code = -errno;
        if (code == -EPERM || code == -EACCES)
            return fail(err, err_len, -EPERM, "writing ct_blocked_count " PRIVILEGE_HINT);
        return fail(err, err_len, code, "cannot write ct_blocked_count: %s", strerror(-code));
    }
    return 0;
}

int ct_maps_replace_allow_units(const ct_maps *maps, const struct ct_prefix *units, size_t count, char *err,
                                size_t err_len)
{
    /* Delete what is there, then insert: the map is small (CT_MAX_ALLOWED) and rewritten only on reloads. */
    struct ct_lpm_v6_key key, next;
    int more = bpf_map_get_next_key(maps->allow_units_fd, NULL, &next) == 0;
    while (more) {
        key = next;
        more = bpf_map_get_next_key(maps->allow_units_fd, &key, &next) == 0;
        bpf_map_delete_elem(maps->allow_units_fd, &key);
    }
    for (size_t index = 0; index < count; index++) {
        union lpm_key unit;
        if (make_key(&units[index], &unit) != 1)
            return fail(err, err_len, -EINVAL, "an IPv6 block unit must be an IPv6 prefix");
        struct ct_allow_value value = { 0 };
        if (bpf_map_update_elem(maps->allow_units_fd, &unit.v6, &value, BPF_ANY) != 0) {
            int code = -errno;
            if (code == -EPERM || code == -EACCES)
                return fail(err, err_len, -EPERM, "writing ct_allow_v6_units " PRIVILEGE_HINT);
            return fail(err, err_len, code, "cannot write ct_allow_v6_units: %s", strerror(-code));
        }
    }
    return 0;
}
