/* Structures shared by the XDP program (bpf/conntrackr.bpf.c) and user space (Sources/CXDP).
 *
 * Only fixed-width types and explicit padding, so that the BPF target, the C loader and Swift (which imports
 * this header through Sources/CXDP/include/conntrackr.h, a symbolic link) agree on every offset. Changing a
 * layout changes the pinned maps' value sizes: an agent of the new layout then refuses the old pins with an
 * error naming them, instead of misreading them.
 */
#ifndef CONNTRACKR_H
#define CONNTRACKR_H

/* The BPF build is freestanding (-ffreestanding), so this is clang's own <stdint.h>, not glibc's. */
#include <stdint.h>

/* Where the maps that outlive the agent are pinned, unless configured otherwise. */
#define CT_DEFAULT_PIN_ROOT "/sys/fs/bpf/conntrackr"

/* Bounds the parser follows, the same as FrameParser.maxVLANTags and .maxIPv6ExtensionHeaders in Swift. */
#define CT_MAX_VLAN_TAGS 4
#define CT_MAX_IPV6_EXTENSION_HEADERS 6

/* Capacities of the maps. The block maps hold up to this many prefixes per address family. */
#define CT_RINGBUF_BYTES (4u << 20)
#define CT_MAX_BLOCKED 65536u
#define CT_MAX_ALLOWED 4096u
/* Default for the program's `wakeup_bytes` setting: the consumer is woken once this much data waits. */
#define CT_DEFAULT_WAKEUP_BYTES (256u << 10)

/* Address families in events and prefixes. */
#define CT_FAMILY_IPV4 4
#define CT_FAMILY_IPV6 6

/* One connection attempt (TCP SYN without ACK), as the program writes it into the ring buffer. */
struct ct_event {
    /* When the program saw the frame: CLOCK_BOOTTIME nanoseconds (bpf_ktime_get_boot_ns). */
    uint64_t time_ns;
    /* IPv6 addresses, or IPv4 addresses in their IPv4-mapped form ::ffff:a.b.c.d; network byte order. */
    uint8_t saddr[16];
    uint8_t daddr[16];
    /* Host byte order. */
    uint16_t sport;
    uint16_t dport;
    /* The interface the frame arrived on. */
    uint32_t ifindex;
    /* CT_FAMILY_IPV4 or CT_FAMILY_IPV6. */
    uint8_t family;
    uint8_t pad[7];
};

/* Keys of the LPM tries: a prefix length in bits and the address in network byte order. */
struct ct_lpm_v4_key {
    uint32_t prefixlen;
    uint8_t addr[4];
};

struct ct_lpm_v6_key {
    uint32_t prefixlen;
    uint8_t addr[16];
};

/* Why a prefix is blocked and where the block came from: stored for user space, ignored by the program. */
#define CT_REASON_PORT_SCAN 0
#define CT_REASON_MANUAL 1
#define CT_ORIGIN_LOCAL 0
#define CT_ORIGIN_FLEET 1

/* The value of a blocked prefix. */
struct ct_block_value {
    /* When the block lapses, in CLOCK_BOOTTIME nanoseconds; 0 blocks until removed. From then on the program
     * passes the prefix's packets again; user space removes the entry in its sweep. */
    uint64_t expires_ns;
    /* Packets dropped because of this entry (updated atomically by the program). */
    uint64_t packets;
    /* When the block was made, in wall-clock nanoseconds since the epoch (user space only). */
    int64_t since_ns;
    uint8_t reason;
    uint8_t origin;
    uint8_t pad[6];
};

/* The value of an allowlisted prefix: its presence is what counts. */
struct ct_allow_value {
    uint32_t flags; /* reserved, 0 */
};

/* Counters kept per CPU by the program; user space sums them. */
struct ct_stats {
    /* Frames the program ran on. */
    uint64_t frames;
    /* SYN-without-ACK segments seen (and not dropped). */
    uint64_t syns;
    /* Records submitted to the ring buffer. */
    uint64_t events;
    /* Records lost because the ring buffer was full. */
    uint64_t ringbuf_full;
    /* Packets dropped because their source is blocked. */
    uint64_t dropped;
    /* Frames the parser judged truncated or malformed (passed). */
    uint64_t malformed;
    /* Packets from a blocked prefix that were passed because their source is allowlisted. */
    uint64_t allow_overrides;
    /* Packets from a blocked prefix that were passed because the block had expired. */
    uint64_t expired_hits;
};

#endif /* CONNTRACKR_H */
