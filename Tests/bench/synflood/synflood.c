// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* synflood: sends TCP SYNs out of a veth at millions of frames a second, for the namespace lab's benchmarks.
 *
 * It runs synflood.bpf.c with BPF_PROG_RUN in live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES): the kernel runs the
 * program on a SYN template in batches of 64 and sends each frame it returns XDP_TX for out of the interface given
 * as the ingress interface. On a veth the frames land in the peer's ring as xdp_frames, exactly as a NIC delivers
 * them (skb-based generators make veth's native XDP copy every packet; see Tests/bench/README.md).
 *
 *   synflood --interface IF --dst-mac MAC --dst ADDR --src ADDR [--src-count N] [--dport P | --dports LO-HI]
 *            [--rate PPS] --packets N --seconds S [--spare IF] [--seed N (default random)]
 *
 * Every address must lie in the lab's ranges (203.0.113.0/24, 198.51.100.0/24, 2001:db8::/32); anything else is
 * refused. Run it inside the generator's network namespace (the interface index is looked up there). Bounded in
 * frames and seconds twice: by this loop and by the program itself. Prints "sent=N seconds=S rate=R" on stdout.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "synflood.skel.h"

#define BATCH 64u
/* The most frames one paced call sends, and the backlog after which a late generator gives up catching up:
 * a veth ring holds 256 frames, so larger bursts would be lost in the lab rather than in the system measured. */
#define MAX_BURST (2 * BATCH)
#define MAX_BACKLOG (4 * BATCH)
#define UNPACED_REPEAT (1u << 20)
#define MAX_SECONDS 600.0

static volatile sig_atomic_t stop_requested;

static void on_signal(int signo)
{
    (void)signo;
    stop_requested = 1;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    fputs("synflood: ", stderr);
    vfprintf(stderr, fmt, args);
    fputc('\n', stderr);
    va_end(args);
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* the clock bpf_ktime_get_ns reads */
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Waits until ns: sleeps while the wait is long, spins for its last SPIN_NS, because a wake-up from sleep
 * comes tens to hundreds of microseconds late on a busy machine, which is several batches at a million a second. */
#define SPIN_NS 200000u
static void wait_until(uint64_t ns)
{
    uint64_t now = now_ns();
    if (ns > now + SPIN_NS) {
        uint64_t wake = ns - SPIN_NS;
        struct timespec ts = { .tv_sec = (time_t)(wake / 1000000000u), .tv_nsec = (long)(wake % 1000000000u) };
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR && !stop_requested) {
        }
    }
    while (now_ns() < ns && !stop_requested) {
    }
}

/* An address of the lab: 203.0.113.0/24, 198.51.100.0/24 or 2001:db8::/32. */
static bool in_lab(int family, const uint8_t *a)
{
    if (family == 4)
        return (a[0] == 203 && a[1] == 0 && a[2] == 113) || (a[0] == 198 && a[1] == 51 && a[2] == 100);
    return a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8;
}

static int parse_address(const char *text, uint8_t out[16])
{
    memset(out, 0, 16);
    if (inet_pton(AF_INET, text, out) == 1)
        return 4;
    if (inet_pton(AF_INET6, text, out) == 1)
        return 6;
    die("'%s' is not an IPv4 or IPv6 address", text);
}

static void parse_mac(const char *text, uint8_t out[6])
{
    unsigned int b[6];
    if (sscanf(text, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6)
        die("'%s' is not a MAC address", text);
    for (int i = 0; i < 6; i++)
        out[i] = (uint8_t)b[i];
}

static uint64_t parse_u64(const char *text, const char *what)
{
    char *end;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-')
        die("%s '%s' is not a non-negative integer", what, text);
    return value;
}

static bool interface_up(const char *name)
{
    struct ifreq ifr = { 0 };
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
    if (fd < 0 || ioctl(fd, SIOCGIFFLAGS, &ifr) != 0)
        die("cannot read the flags of %s: %s", name, strerror(errno));
    close(fd);
    return ifr.ifr_flags & IFF_UP;
}

static void interface_mac(const char *name, uint8_t out[6])
{
    struct ifreq ifr = { 0 };
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
    if (fd < 0 || ioctl(fd, SIOCGIFHWADDR, &ifr) != 0)
        die("cannot read the MAC address of %s: %s", name, strerror(errno));
    memcpy(out, ifr.ifr_hwaddr.sa_data, 6);
    close(fd);
}

/* The SYN every run starts from: Ethernet, IPv4 (DF, TTL 64) or IPv6 (hop limit 64), TCP with SYN, window 64240.
 * The program rewrites the source address's varying part, the ports, the sequence number and the checksums. Returns its length. */
static size_t build_template(uint8_t *frame, int family, const uint8_t src_mac[6], const uint8_t dst_mac[6],
                             const uint8_t src[16], const uint8_t dst[16])
{
    memcpy(frame, dst_mac, 6);
    memcpy(frame + 6, src_mac, 6);
    uint8_t *ip = frame + 14, *tcp;
    if (family == 4) {
        frame[12] = 0x08, frame[13] = 0x00;
        ip[0] = 0x45;
        ip[3] = 40;      /* total length */
        ip[6] = 0x40;    /* don't fragment */
        ip[8] = 64;      /* TTL */
        ip[9] = 6;       /* TCP */
        memcpy(ip + 12, src, 4);
        memcpy(ip + 16, dst, 4);
        tcp = ip + 20;
    } else {
        frame[12] = 0x86, frame[13] = 0xdd;
        ip[0] = 0x60;
        ip[5] = 20;      /* payload length */
        ip[6] = 6;       /* next header: TCP */
        ip[7] = 64;      /* hop limit */
        memcpy(ip + 8, src, 16);
        memcpy(ip + 24, dst, 16);
        tcp = ip + 40;
    }
    tcp[12] = 5 << 4; /* data offset: 20 bytes, no options */
    tcp[13] = 0x02;   /* SYN */
    tcp[14] = 0xfa, tcp[15] = 0xf0;
    return (size_t)(tcp + 20 - frame);
}

static void usage(void)
{
    fputs("usage: synflood --interface IF --dst-mac MAC --dst ADDR --src ADDR [--src-count N]\n"
          "                [--dport PORT | --dports LO-HI] [--rate PPS] --packets N --seconds S\n"
          "                [--spare IF] [--seed N]\n",
          stderr);
    exit(2);
}

int main(int argc, char **argv)
{
    const char *interface = NULL, *spare = NULL, *dst_mac_text = NULL, *dst_text = NULL, *src_text = NULL;
    uint64_t src_count = 1, dport_lo = 80, dport_hi = 80, rate = 0, packets = 0, seed = 0;
    bool seeded = false;
    double seconds = 0;
    static const struct option options[] = {
        { "interface", required_argument, NULL, 'i' }, { "spare", required_argument, NULL, 'S' },
        { "dst-mac", required_argument, NULL, 'm' },   { "dst", required_argument, NULL, 'd' },
        { "src", required_argument, NULL, 's' },       { "src-count", required_argument, NULL, 'n' },
        { "dport", required_argument, NULL, 'p' },     { "dports", required_argument, NULL, 'P' },
        { "rate", required_argument, NULL, 'r' },      { "packets", required_argument, NULL, 'c' },
        { "seconds", required_argument, NULL, 't' },   { "seed", required_argument, NULL, 'e' },
        { NULL, 0, NULL, 0 },
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'i': interface = optarg; break;
        case 'S': spare = optarg; break;
        case 'm': dst_mac_text = optarg; break;
        case 'd': dst_text = optarg; break;
        case 's': src_text = optarg; break;
        case 'n': src_count = parse_u64(optarg, "--src-count"); break;
        case 'p': dport_lo = dport_hi = parse_u64(optarg, "--dport"); break;
        case 'P': {
            char *dash = strchr(optarg, '-');
            if (!dash)
                die("--dports '%s' is not LO-HI", optarg);
            *dash = 0;
            dport_lo = parse_u64(optarg, "--dports");
            dport_hi = parse_u64(dash + 1, "--dports");
            break;
        }
        case 'r': rate = parse_u64(optarg, "--rate"); break;
        case 'c': packets = parse_u64(optarg, "--packets"); break;
        case 't': seconds = strtod(optarg, NULL); break;
        case 'e': seed = parse_u64(optarg, "--seed"), seeded = true; break;
        default: usage();
        }
    }
    if (!interface || !dst_mac_text || !dst_text || !src_text || optind != argc)
        usage();
    if (packets == 0 || !(seconds > 0 && seconds <= MAX_SECONDS))
        die("--packets N and --seconds S (at most %.0f) bound every run and are required", MAX_SECONDS);
    if (dport_lo == 0 || dport_lo > dport_hi || dport_hi > 65535)
        die("destination ports must be 1-65535, LO <= HI");
    if (src_count == 0 || src_count > (1u << 30))
        die("--src-count must be 1 to 2^30");

    uint8_t dst[16], src[16], src_mac[6], dst_mac[6];
    int family = parse_address(dst_text, dst);
    if (parse_address(src_text, src) != family)
        die("--src and --dst must be of one address family");
    if (!in_lab(family, dst) || !in_lab(family, src))
        die("addresses must lie in 203.0.113.0/24, 198.51.100.0/24 or 2001:db8::/32 (the lab's ranges)");
    if (family == 4 && (uint64_t)src[3] + src_count - 1 > 255)
        die("IPv4 sources %s + %" PRIu64 " leave the /24", src_text, src_count);
    if (family == 6) {
        /* The index is OR-ed into bits 32-63: they must be clear for the sources to be distinct. */
        uint32_t word = (uint32_t)src[4] << 24 | (uint32_t)src[5] << 16 | (uint32_t)src[6] << 8 | src[7];
        uint64_t mask = 1;
        while (mask < src_count)
            mask <<= 1;
        if (word & (uint32_t)(mask - 1))
            die("IPv6 base %s has bits set where the source index goes (bits 32-63)", src_text);
    }
    /* Attempt n is mix64(n + seed): runs with the same seed repeat each other's 4-tuples, which a receiver rightly
     * takes for retransmissions. A random seed keeps the runs of one benchmark apart. */
    if (!seeded && getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
        die("getrandom failed: %s", strerror(errno));
    parse_mac(dst_mac_text, dst_mac);
    int ifindex = (int)if_nametoindex(interface);
    if (!ifindex)
        die("no interface %s in this network namespace", interface);
    interface_mac(interface, src_mac);

    libbpf_set_strict_mode(LIBBPF_STRICT_ALL);
    struct synflood_bpf *skel = synflood_bpf__open();
    if (!skel)
        die("cannot open the BPF program: %s", strerror(errno));
    skel->rodata->family = (uint32_t)family;
    memcpy((void *)skel->rodata->src_base, src, 16);
    skel->rodata->src_count = (uint32_t)src_count;
    skel->rodata->dport_lo = (uint32_t)dport_lo;
    skel->rodata->dport_span = (uint32_t)(dport_hi - dport_lo + 1);
    skel->rodata->seed = seed;
    skel->rodata->max_packets = packets;
    skel->rodata->max_ns = (uint64_t)(seconds * 1e9);
    int err = synflood_bpf__load(skel);
    if (err)
        die("cannot load the BPF program: %s", strerror(-err));

    int prog = bpf_program__fd(skel->progs.synflood);
    int spare_link = -1;
    if (spare) {
        int spare_index = (int)if_nametoindex(spare);
        if (!spare_index)
            die("no interface %s in this network namespace", spare);
        if (interface_up(spare))
            die("the spare interface %s must be down", spare);
        /* Every BPF_PROG_RUN with repeat > 1 adds the program to the kernel's XDP dispatcher and removes it again;
         * each change rebuilds the dispatcher and waits in synchronize_rcu (about 17 ms here). While the program
         * is attached somewhere, both are mere reference counts. The spare veth is down and has no peer outside
         * this namespace, so the attached program never runs. A link: the kernel detaches it when this process
         * exits, however it exits. */
        LIBBPF_OPTS(bpf_link_create_opts, link_opts, .flags = XDP_FLAGS_SKB_MODE);
        spare_link = bpf_link_create(prog, spare_index, BPF_XDP, &link_opts);
        if (spare_link < 0)
            die("cannot attach the program to %s in generic mode: %s", spare, strerror(errno));
    }

    uint8_t frame[128] = { 0 };
    size_t frame_len = build_template(frame, family, src_mac, dst_mac, src, dst);
    struct xdp_md ctx_in = { .data_end = (uint32_t)frame_len, .ingress_ifindex = (uint32_t)ifindex };
    LIBBPF_OPTS(bpf_test_run_opts, run, .data_in = frame, .data_size_in = (uint32_t)frame_len, .ctx_in = &ctx_in,
                .ctx_size_in = sizeof(ctx_in), .flags = BPF_F_TEST_XDP_LIVE_FRAMES, .batch_size = BATCH);

    struct sigaction action = { .sa_handler = on_signal };
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);
    prctl(PR_SET_TIMERSLACK, 1UL); /* sleeps of tens of microseconds must not stretch by the default 50 */

    /* Paced: one call per batch or two when late, waiting until the next batch is due, so that at low rates the
     * generator leaves its core idle between batches (on two cores the victim's user space needs it). */
    uint64_t start = now_ns(), epoch = start, deadline = start + (uint64_t)(seconds * 1e9) + 1000000000u;
    uint64_t behind = 0;
    while (!stop_requested && !skel->bss->done) {
        uint64_t now = now_ns();
        if (now >= deadline)
            break;
        uint32_t repeat = UNPACED_REPEAT;
        if (rate) {
            uint64_t sent = skel->bss->sent;
            uint64_t due = (uint64_t)((unsigned __int128)(now - epoch) * rate / 1000000000u);
            if (due < sent + BATCH) {
                wait_until(epoch + (uint64_t)((unsigned __int128)(sent + BATCH) * 1000000000u / rate));
                continue;
            }
            if (due > sent + MAX_BACKLOG) { /* descheduled: resume the schedule from here, no burst */
                behind += due - sent - BATCH;
                epoch = now - (uint64_t)((unsigned __int128)(sent + BATCH) * 1000000000u / rate);
                due = sent + BATCH;
            }
            repeat = due - sent >= MAX_BURST ? MAX_BURST : BATCH;
        }
        run.repeat = repeat;
        if (bpf_prog_test_run_opts(prog, &run) != 0 && errno != EINTR)
            die("BPF_PROG_RUN failed: %s", strerror(errno));
    }

    uint64_t sent = skel->bss->sent;
    double elapsed = sent > 1 ? (double)(skel->bss->last_ns - skel->bss->first_ns) / 1e9 : 0;
    double achieved = elapsed > 0 ? (double)sent / elapsed : 0;
    printf("sent=%" PRIu64 " seconds=%.3f rate=%.0f\n", sent, elapsed, achieved);
    fprintf(stderr, "synflood: %" PRIu64 " SYNs in %.2f s (%.0f/s%s)\n", sent, elapsed, achieved,
            rate && behind ? ", fell behind the schedule at times" : "");
    if (spare_link >= 0)
        close(spare_link);
    synflood_bpf__destroy(skel);
    return 0;
}
