// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The lab's SYN generator (run by synflood.c with BPF_PROG_RUN in live-frames mode, never attached).
 *
 * The kernel hands this program the same SYN template again and again; each run turns it into a new connection
 * attempt (source address, ports and sequence number from a counter, checksums recomputed) and returns XDP_TX,
 * which live-frames mode turns into a redirect out of the ingress interface: the frame lands in the veth peer's
 * receive ring as an xdp_frame, the way a NIC delivers it, so the victim's XDP runs natively without a copy.
 *
 * Bounded on its own: after max_packets frames or max_ns nanoseconds it only returns XDP_DROP (nothing is sent),
 * whatever user space does. Pacing is done by the loader between runs of one batch.
 */
#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <stdint.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define ETH_LEN 14
#define FRAME_V4 (ETH_LEN + 20 + 20)
#define FRAME_V6 (ETH_LEN + 40 + 20)

/* Set by the loader before loading. Sources are src_base + index for index < src_count: added to the IPv4
 * address, OR-ed into bits 32-63 of the IPv6 address (so each IPv6 source has a /64 of its own). */
const volatile uint32_t family = 6;
const volatile uint8_t src_base[16];
const volatile uint32_t src_count = 1;
const volatile uint32_t dport_lo = 80;
const volatile uint32_t dport_span = 1;
const volatile uint64_t seed;
const volatile uint64_t max_packets;
const volatile uint64_t max_ns;

/* Read by the loader through the mmap-ed .bss. Only one CPU runs the program (the loader's thread). */
uint64_t sent;
uint64_t first_ns;
uint64_t last_ns;
uint32_t done;

/* splitmix64's finaliser: a bijection on 64 bits, so consecutive counters give well spread, distinct values. */
static __always_inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* Ones' complement sum of n 16-bit words in memory order; byte-order independent (RFC 1071). */
static __always_inline uint32_t sum16(const uint16_t *p, int n)
{
    uint32_t sum = 0;
#pragma unroll
    for (int i = 0; i < n; i++)
        sum += p[i];
    return sum;
}

static __always_inline uint16_t fold(uint32_t sum)
{
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

/* Ports and sequence number of attempt x, written into the TCP header at tcp; returns the source index. */
static __always_inline uint32_t fill_tcp(uint8_t *tcp, uint64_t x)
{
    uint32_t high = (uint32_t)(x >> 32);
    uint16_t sport = 32768 | (high & 0x7fff);
    uint16_t dport = (uint16_t)(dport_lo + (high >> 15) % dport_span);
    *(uint16_t *)(tcp + 0) = bpf_htons(sport);
    *(uint16_t *)(tcp + 2) = bpf_htons(dport);
    *(uint32_t *)(tcp + 4) = bpf_get_prandom_u32();
    *(uint16_t *)(tcp + 16) = 0;
    return src_count > 1 ? (uint32_t)(x % src_count) : 0;
}

SEC("xdp")
int synflood(struct xdp_md *ctx)
{
    uint8_t *data = (uint8_t *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    uint64_t now = bpf_ktime_get_ns();

    if (first_ns == 0)
        first_ns = now;
    if (sent >= max_packets || now - first_ns >= max_ns) {
        done = 1;
        return XDP_DROP;
    }
    uint64_t x = mix64(sent + seed);

    if (family == 4) {
        if ((void *)(data + FRAME_V4) > end)
            return XDP_ABORTED;
        uint8_t *ip = data + ETH_LEN, *tcp = ip + 20;
        uint32_t index = fill_tcp(tcp, x);
        uint32_t base = (uint32_t)src_base[0] << 24 | (uint32_t)src_base[1] << 16 | (uint32_t)src_base[2] << 8 |
                        src_base[3];
        *(uint32_t *)(ip + 12) = bpf_htonl(base + index);
        *(uint16_t *)(ip + 10) = 0;
        *(uint16_t *)(ip + 10) = fold(sum16((uint16_t *)ip, 10));
        /* Pseudo-header: addresses, protocol, TCP length. */
        uint32_t sum = sum16((uint16_t *)(ip + 12), 4) + bpf_htons(6) + bpf_htons(20) + sum16((uint16_t *)tcp, 10);
        *(uint16_t *)(tcp + 16) = fold(sum);
    } else {
        if ((void *)(data + FRAME_V6) > end)
            return XDP_ABORTED;
        uint8_t *ip = data + ETH_LEN, *tcp = ip + 40;
        uint32_t index = fill_tcp(tcp, x);
        uint32_t word = (uint32_t)src_base[4] << 24 | (uint32_t)src_base[5] << 16 | (uint32_t)src_base[6] << 8 |
                        src_base[7];
        *(uint32_t *)(ip + 12) = bpf_htonl(word | index);
        uint32_t sum = sum16((uint16_t *)(ip + 8), 16) + bpf_htons(20) + bpf_htons(6) + sum16((uint16_t *)tcp, 10);
        *(uint16_t *)(tcp + 16) = fold(sum);
    }
    sent++;
    last_ns = now;
    return XDP_TX;
}
