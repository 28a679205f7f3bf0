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

/* Capacities of the maps. The LPM block maps hold up to this many prefixes per address family (the exact-match
 * ones, CT_MAX_EXACT_BLOCKED below). */
#define CT_RINGBUF_BYTES (4u << 20)
#define CT_MAX_BLOCKED 65536u
#define CT_MAX_ALLOWED 4096u
/* Default for the program's `wakeup_bytes` setting: the consumer is woken once this much data waits. */
#define CT_DEFAULT_WAKEUP_BYTES (256u << 10)

/* Address families in events and prefixes. */
#define CT_FAMILY_IPV4 4
#define CT_FAMILY_IPV6 6

/* What the program's own scan rule decided at a SYN (struct ct_event.verdict). */
#define CT_VERDICT_NONE 0          /* not a SYN that took its pair over the threshold (or the rule is off) */
#define CT_VERDICT_BLOCKED 1       /* took its pair over: the source's unit is now blocked, this SYN dropped */
#define CT_VERDICT_ALLOWLISTED 2   /* took its pair over; not blocked: allowlisted */
#define CT_VERDICT_RATE_LIMITED 3  /* took its pair over; not blocked: max blocks per minute reached (retried) */
#define CT_VERDICT_FULL 4          /* took its pair over; not blocked: the blocklist is full (retried) */
#define CT_VERDICT_FAILED 5        /* took its pair over; not blocked: the map update failed (retried) */
#define CT_VERDICT_BLOCKED_LATER 6 /* a pair refused for a limit before: the block was retried and is now made */

/* The largest scan threshold the program holds ports for: CT_SCAN_MAX_THRESHOLD of scan_rule.h (the program
 * checks that they agree; user space sees only this header). */
#define CT_SCAN_RULE_MAX_THRESHOLD 32u

/* The most blocks per minute the program's budget can hold; a larger setting is capped here. */
#define CT_MAX_BLOCKS_PER_MINUTE 1024u
/* Pairs the program tracks for its scan rule (LRU: the least recently active go first). */
#define CT_SCAN_MAX_PAIRS 65536u

/* The program's scan rule and block policy, set by the loader (read-only data). A port_threshold of 0 turns the
 * rule off: the program then only reports and drops what user space blocked. */
struct ct_scan_config {
    /* A scan is more than this many distinct ports of one destination (1...CT_SCAN_MAX_THRESHOLD)... */
    uint32_t port_threshold;
    /* ...within this window. */
    uint32_t max_blocks_per_minute;
    int64_t window_ns;
    /* How long a block lasts; 0 until removed. */
    int64_t block_ttl_ns;
    /* The most blocked prefixes (as counted in ct_blocked_count). */
    uint64_t max_blocked;
    /* IPv6 sources are counted and blocked as this prefix of their address (1...128). */
    uint8_t ipv6_prefix_len;
    /* 1: every destination counts as one (--destination-unit host), as user space's ScanRule.destinationUnit. */
    uint8_t one_destination;
    uint8_t pad[6];
};

/* Ports that never count toward the scan rule (--ignore-ports): a 65,536-bit bitmap, port p is bit p % 64 of
 * word p / 64, as ScanRule.ignoredPorts keeps it in user space. */
#define CT_PORT_BITMAP_WORDS 1024

/* Counters of the scan rule, kept per CPU like struct ct_stats (a map of their own, so that ct_stats keeps its
 * layout and older pins stay usable). */
struct ct_scan_stats {
    /* SYNs that took a pair over the threshold. */
    uint64_t scans;
    /* Blocks the program made (retries included). */
    uint64_t blocks;
    uint64_t refused_allowlisted;
    uint64_t refused_rate_limited;
    uint64_t refused_full;
    uint64_t refused_failed;
    /* Pairs inserted into the LRU; above CT_SCAN_MAX_PAIRS each insert evicts the least recent pair. */
    uint64_t pairs_inserted;
    /* SYNs the rule could not track (the pair could not be inserted). */
    uint64_t untracked;
};

/* Counters of packets dropped to keep evasions out (RFC 1858, RFC 3128), per CPU, in a map of their own for the
 * same reason as struct ct_scan_stats. */
struct ct_guard_stats {
    /* TCP fragments that split the header's first 16 bytes (ports and flags): the first of several fragments with
     * fewer than 20 bytes of TCP, and fragments at offset 8 (nmap -f). Dropped, so the host never reassembles a
     * SYN whose flags no filter saw. */
    uint64_t tiny_fragments;
    /* IPv6 packets whose extension-header chain goes on past CT_MAX_IPV6_EXTENSION_HEADERS: the program cannot see
     * whether a SYN lies behind it, and Linux would still deliver one. */
    uint64_t long_header_chains;
};

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
    /* CT_VERDICT_*: what the program's scan rule decided at this SYN. */
    uint8_t verdict;
    uint8_t pad[6];
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

/* Keys of the exact-match block maps, looked up before the LPM tries: an IPv4 address (a /32 block), or the first
 * CT_EXACT_V6_PREFIX_LEN bits of an IPv6 address (a /64 block: the default block unit and the usual subnet size).
 * A hash lookup costs the same whatever the number of entries, where the trie's cost grows with it; the program's
 * own blocks and most of user space's have these shapes. The IPv6 key length is fixed, not the configured unit, so
 * that `conntrackr blocklist` (which does not know the agent's --ipv6-block-prefix) files a prefix where the
 * program looks for it; other units (e.g. --ipv6-block-prefix 128) go to the LPM trie as CIDR blocks do. */
#define CT_EXACT_V6_PREFIX_LEN 64u
/* Capacity of each exact-match map (allocated as entries arrive, not up front). */
#define CT_MAX_EXACT_BLOCKED (1u << 18)

struct ct_exact_v4_key {
    uint8_t addr[4];
};

struct ct_exact_v6_key {
    uint8_t addr[CT_EXACT_V6_PREFIX_LEN / 8];
};

/* Whether a blocked prefix of `family` and `length` bits lives in the exact-match map of its family (else in the
 * LPM trie): the one rule the program's own blocks and user space's (Sources/CXDP) follow. */
static inline __attribute__((always_inline)) int ct_block_is_exact(uint32_t family, uint32_t length)
{
    return family == CT_FAMILY_IPV4 ? length == 32 : family == CT_FAMILY_IPV6 && length == CT_EXACT_V6_PREFIX_LEN;
}

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
