// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* conntrackr's XDP program: drops packets from blocked prefixes and reports inbound connection attempts.
 *
 * For every frame:
 *   1. Parse Ethernet (up to CT_MAX_VLAN_TAGS 802.1Q/802.1ad tags) and the fixed IPv4 or IPv6 header.
 *   2. If the source lies in an unexpired blocked prefix and not in an allowlisted one: count and XDP_DROP.
 *      Dropped packets are never reported. Blocks of one IPv4 address or one IPv6 /64 are found with a hash
 *      lookup (a cost flat in the number of blocks), wider or other prefixes in an LPM trie.
 *   3. Follow IPv4 options and fragments or the IPv6 extension-header chain to TCP; for a SYN without ACK,
 *      write a struct ct_event into the ring buffer. An IPv6 packet from an IPv4-mapped source is malformed.
 *      A TCP fragment that splits the header's first 16 bytes (nmap -f) is dropped and counted (RFC 1858), and so
 *      is an IPv6 packet whose extension-header chain is longer than the parser follows.
 *   4. With the scan rule on (scan_config.port_threshold > 0): count the SYN's port for its (source unit,
 *      destination) pair (bpf/scan_rule.h, the rule user space applies too). The SYN that takes the pair over the
 *      threshold blocks the source's unit here and now, unless it is allowlisted or a limit refuses, and is
 *      dropped: the scanner gets answers on the threshold's worth of ports at most, at any rate. The event
 *      carries the verdict; user space reports it, owns expiry, and publishes the block.
 *   5. XDP_PASS. Whatever cannot be parsed passes: this program never drops what it does not understand.
 *
 * Parsing follows Sources/ConnCore/FrameParser.swift rule for rule (the same bounds, the same truncated and
 * malformed cases), so the XDP and pcap sources report the same attempts. Every read is preceded by a bounds
 * check against data_end, as the verifier demands.
 *
 * Blocking needs only the source address, so it applies as soon as the fixed IP header is valid: a blocked
 * source cannot slip through by sending fragments, other protocols or malformed TCP.
 */
#include <asm-generic/errno-base.h> /* EEXIST, which bpf_map_update_elem returns negated for BPF_NOEXIST */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "conntrackr.h"
#include "scan_rule.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

_Static_assert(CT_SCAN_RULE_MAX_THRESHOLD == CT_SCAN_MAX_THRESHOLD, "conntrackr.h and scan_rule.h disagree");

/* The scan rule and block policy (all zero: the rule is off). Set by the loader. */
const volatile struct ct_scan_config scan_config = {};

/* Ports that never count toward the scan rule, as user space ignores them. Set by the loader. */
const volatile uint64_t ignored_ports[CT_PORT_BITMAP_WORDS] = {};

/* The consumer is woken each time another this many bytes wait in the ring buffer; below that it polls on a
 * short timer. Waking it for every record costs a core at a few hundred thousand SYNs a second. Set by the loader. */
const volatile uint64_t wakeup_bytes = CT_DEFAULT_WAKEUP_BYTES;

/* What one event takes in the ring buffer: its 8-byte header and the record, rounded up to 8 bytes. */
#define CT_RECORD_BYTES ((BPF_RINGBUF_HDR_SZ + sizeof(struct ct_event) + 7) / 8 * 8)

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, CT_RINGBUF_BYTES);
} ct_events SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __uint(max_entries, CT_MAX_BLOCKED);
    __type(key, struct ct_lpm_v4_key);
    __type(value, struct ct_block_value);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} ct_block_v4 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __uint(max_entries, CT_MAX_BLOCKED);
    __type(key, struct ct_lpm_v6_key);
    __type(value, struct ct_block_value);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} ct_block_v6 SEC(".maps");

/* Blocks of exactly one IPv4 address or one IPv6 /64 (ct_block_is_exact): the program's own blocks and most of
 * user space's, found with one hash lookup whatever their number. Looked up before the tries, which keep the CIDR
 * blocks. Not preallocated: 2^18 entries would otherwise take tens of MiB whether used or not. Pinned, so that an
 * agent started over the pins of a version without them creates them (libbpf pins a missing map by name). */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __uint(max_entries, CT_MAX_EXACT_BLOCKED);
    __type(key, struct ct_exact_v4_key);
    __type(value, struct ct_block_value);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} ct_block_v4_exact SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __uint(max_entries, CT_MAX_EXACT_BLOCKED);
    __type(key, struct ct_exact_v6_key);
    __type(value, struct ct_block_value);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} ct_block_v6_exact SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __uint(max_entries, CT_MAX_ALLOWED);
    __type(key, struct ct_lpm_v4_key);
    __type(value, struct ct_allow_value);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} ct_allow_v4 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __uint(max_entries, CT_MAX_ALLOWED);
    __type(key, struct ct_lpm_v6_key);
    __type(value, struct ct_allow_value);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} ct_allow_v6 SEC(".maps");

/* Sources of scans, IPv6 ones as their block unit, and the destination they scan. */
struct ct_scan_key {
    uint8_t source[16]; /* IPv4-mapped, or IPv6 masked to scan_config.ipv6_prefix_len */
    uint8_t destination[16];
};

/* The scan rule's per-pair state. LRU, so that a spoofed flood from millions of sources evicts old pairs instead
 * of filling the map (a pair evicted is a pair counted afresh: pairs_inserted shows the churn).
 *
 * The loader cuts the value down to the slots the threshold uses (ct_scan_state_size), so key and value are given
 * as sizes, not BTF types: the kernel refuses a map whose value size differs from its BTF type's (or whose key
 * alone has a type). The verifier holds every access to that size; scan_slot and ct_scan_finish bound slot
 * indexes by the threshold in scan_config. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, CT_SCAN_MAX_PAIRS);
    __uint(key_size, sizeof(struct ct_scan_key));
    __uint(value_size, sizeof(struct ct_scan_state));
} ct_scan_pairs SEC(".maps");

/* Where a new pair is built before it is inserted (ct_scan_first): too big for the 512-byte BPF stack. Per CPU, so
 * that no other SYN writes it meanwhile (XDP runs with bottom halves off). Only its header and first slot are ever
 * written; the other slots stay zero. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, uint32_t);
    __type(value, struct ct_scan_state);
} ct_scan_fresh SEC(".maps");

/* --max-blocks-per-minute, exactly as user space applies it: the times of the last N blocks in a ring; a block is
 * refused while the one N blocks back is less than a minute old. */
struct ct_block_budget {
    struct bpf_spin_lock lock;
    uint32_t next;
    int64_t times[CT_MAX_BLOCKS_PER_MINUTE];
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, uint32_t);
    __type(value, struct ct_block_budget);
} ct_budget SEC(".maps");

/* How many prefixes are blocked, for --max-blocked: user space writes the exact count whenever it changes the
 * blocklist or sweeps it, and the program adds its own blocks in between. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} ct_blocked_count SEC(".maps");

/* Shared IPv6 units: units (sources masked to scan_config.ipv6_prefix_len) that hold an allowlisted address more
 * specific than the unit (a host address inside its /64). Blocking the unit would block that address, so each
 * source inside one is counted and blocked as its own /128 (a neighbour in the host's /64), as user space does
 * (SourceUnits). Synced by user space with the allowlist. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __uint(max_entries, CT_MAX_ALLOWED);
    __type(key, struct ct_lpm_v6_key);
    __type(value, struct ct_allow_value);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} ct_allow_v6_units SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, uint32_t);
    __type(value, struct ct_guard_stats);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} ct_guard_stats SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, uint32_t);
    __type(value, struct ct_scan_stats);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} ct_scan_stats SEC(".maps");

/* Pinned too, so that `conntrackr blocklist` and metrics can read it while the agent runs. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, uint32_t);
    __type(value, struct ct_stats);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} ct_stats SEC(".maps");

/* What the parser made of a frame past the point where blocking was decided. */
enum verdict {
    V_OTHER,     /* well-formed, not a connection attempt */
    V_MALFORMED, /* truncated or contradictory headers */
    V_ATTEMPT,   /* a SYN without ACK */
};

/* Big-endian loads byte by byte: packet data has no alignment guarantee. */
static __always_inline uint16_t load_be16(const uint8_t *p)
{
    return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}

static __always_inline int is_vlan(uint16_t ethertype)
{
    return ethertype == 0x8100 || ethertype == 0x88A8 || ethertype == 0x9100;
}

/* Whether the 16-byte address at `addr` is IPv4-mapped (::ffff:a.b.c.d: 80 zero bits, 16 one bits). Such a source
 * is not valid on the wire (RFC 4291 2.5.5.2), and user space cannot tell it from the IPv4 address it maps:
 * reported, it would make an uninvolved IPv4 host the scanner. */
static __always_inline int is_ipv4_mapped(const uint8_t *addr)
{
    uint8_t zero = 0;
#pragma unroll
    for (int i = 0; i < 10; i++)
        zero |= addr[i];
    return zero == 0 && addr[10] == 0xFF && addr[11] == 0xFF;
}

/* Whether a block entry (may be NULL) is in force: present and not expired. */
static __always_inline int in_force(const struct ct_block_value *block, int *expired)
{
    if (!block)
        return 0;
    uint64_t expires = block->expires_ns;
    if (expires != 0 && bpf_ktime_get_boot_ns() >= expires) {
        *expired = 1;
        return 0;
    }
    return 1;
}

/* Whether a packet whose source is `key` (the LPM form: the whole address) must be dropped: a blocked, unexpired
 * prefix holds it and no allowlisted prefix does. The exact-match map is looked up first, with the leading bytes
 * of the same address as its key (4 of IPv4, 8 of IPv6: the /32 or /64), then the trie; an expired exact entry
 * does not hide a CIDR block around it. The block maps are looked up before the allowlist because almost every
 * packet misses them, which saves the allowlist lookup on the common path; the allowlist still wins whenever both
 * match. One body for both families: the maps are the only difference. */
static __always_inline int must_drop(void *exact_map, void *lpm_map, void *allow_map, const void *key,
                                     struct ct_stats *stats)
{
    /* Both LPM keys are a 4-byte prefix length, then the address. */
    const uint8_t *address = (const uint8_t *)key + sizeof(uint32_t);
    int expired = 0;
    struct ct_block_value *block = bpf_map_lookup_elem(exact_map, address);
    if (!in_force(block, &expired)) {
        block = bpf_map_lookup_elem(lpm_map, key);
        if (!in_force(block, &expired)) {
            if (expired)
                stats->expired_hits++;
            return 0;
        }
    }
    if (bpf_map_lookup_elem(allow_map, key)) {
        stats->allow_overrides++;
        return 0;
    }
    /* The entry is shared by all CPUs. */
    __sync_fetch_and_add(&block->packets, 1);
    stats->dropped++;
    return 1;
}

/* TCP at `tcp`: a connection attempt when SYN is set and ACK is clear. Reads ports into the event fields. */
static __always_inline enum verdict parse_tcp(const uint8_t *tcp, const void *end, uint16_t *sport,
                                              uint16_t *dport)
{
    if ((const void *)(tcp + 20) > end)
        return V_MALFORMED;
    if ((tcp[12] >> 4) < 5)
        return V_MALFORMED;
    uint8_t flags = tcp[13];
    if (!(flags & 0x02) || (flags & 0x10))
        return V_OTHER;
    *sport = load_be16(tcp);
    *dport = load_be16(tcp + 2);
    return V_ATTEMPT;
}

/* Reserves, fills and submits one event. Returns 0, or -1 when the ring buffer is full. */
static __always_inline int report(const uint8_t *saddr, const uint8_t *daddr, int family, uint16_t sport,
                                  uint16_t dport, uint32_t ifindex, uint8_t verdict, uint64_t time_ns)
{
    struct ct_event *event = bpf_ringbuf_reserve(&ct_events, sizeof(*event), 0);
    if (!event)
        return -1;
    event->time_ns = time_ns;
    if (family == CT_FAMILY_IPV4) {
        /* IPv4-mapped form: 80 zero bits, 16 one bits, the address. */
        __builtin_memset(event->saddr, 0, 10);
        __builtin_memset(event->daddr, 0, 10);
        event->saddr[10] = 0xFF;
        event->saddr[11] = 0xFF;
        event->daddr[10] = 0xFF;
        event->daddr[11] = 0xFF;
        __builtin_memcpy(event->saddr + 12, saddr, 4);
        __builtin_memcpy(event->daddr + 12, daddr, 4);
    } else {
        __builtin_memcpy(event->saddr, saddr, 16);
        __builtin_memcpy(event->daddr, daddr, 16);
    }
    event->sport = sport;
    event->dport = dport;
    event->ifindex = ifindex;
    event->family = (uint8_t)family;
    event->verdict = verdict;
    __builtin_memset(event->pad, 0, sizeof(event->pad));
    /* Wake the consumer when this record carries the waiting data over a multiple of wakeup_bytes (the
     * reservation already counts in it): once per wakeup_bytes of records, not for every record while the
     * consumer lags. Each forced wake-up raises a self-IPI through irq_work, a VM exit on a virtual machine: waking
     * on every record cost the receive path 6 us a packet and overflowed the interface's ring at 300k SYN/s. A
     * boundary missed because another CPU's record got in between is made up by the next one, or by the reader's
     * timeout. */
    uint64_t waiting = bpf_ringbuf_query(&ct_events, BPF_RB_AVAIL_DATA);
    uint64_t step = wakeup_bytes ? wakeup_bytes : 1;
    int crossed = waiting >= CT_RECORD_BYTES && waiting / step != (waiting - CT_RECORD_BYTES) / step;
    /* The only record waiting: the consumer has caught up and sleeps, so a scan found in user space (pcap-free
     * detection above the kernel's threshold cap, or with enforcement off) is not held for the reader's timeout.
     * Under a flood the consumer lags and this is rare, so the batching above still holds. */
    int alone = waiting <= CT_RECORD_BYTES;
    /* A verdict is news user space must act on (report, publish, take over the block's expiry): wake it now. */
    bpf_ringbuf_submit(event, crossed || alone || verdict != CT_VERDICT_NONE ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
    return 0;
}

/* --- The scan rule --- */

/* Clears the bits of the 16-byte `addr` past `length`. */
static __always_inline void mask_prefix(uint8_t *addr, uint32_t length)
{
#pragma unroll
    for (int index = 0; index < 16; index++) {
        int bits = (int)length - index * 8;
        uint8_t mask = bits >= 8 ? 0xFF : bits <= 0 ? 0 : (uint8_t)(0xFF << (8 - bits));
        addr[index] &= mask;
    }
}

/* Takes a pair's lock word. Concurrent SYNs of one pair arrive on different CPUs (RSS spreads a scanner's source
 * ports over queues); the holder runs in softirq context for a few hundred nanoseconds, so a bounded spin always
 * suffices in practice. Returns 0 when it did not (the SYN is then not counted, and counted as untracked). */
static __always_inline int lock_pair(struct ct_scan_state *state)
{
    for (int attempt = 0; attempt < 1024; attempt++) {
        if (__sync_val_compare_and_swap(&state->busy, 0, 1) == 0)
            return 1;
    }
    return 0;
}

static __always_inline void unlock_pair(struct ct_scan_state *state)
{
    __sync_val_compare_and_swap(&state->busy, 1, 0);
}

/* The scan rule's per-slot step, run by bpf_loop so that the verifier checks it once. */
static long scan_slot(uint64_t index, void *context)
{
    uint32_t slot = (uint32_t)index;
    /* One register for the bounds check and the accesses: the verifier must see the check on the register used.
     * The bound is the slots the map's value holds (read-only data: a constant to the verifier). */
    asm volatile("" : "+r"(slot));
    if (slot >= ct_scan_slots_used(scan_config.port_threshold))
        return 1;
    asm volatile("" : "+r"(slot));
    ct_scan_slot(context, slot);
    return 0;
}

/* Spends one of the minute's blocks: 0, or -1 when the block N back is less than a minute old. */
static __always_inline int spend_block_budget(int64_t now)
{
    uint32_t zero = 0;
    struct ct_block_budget *budget = bpf_map_lookup_elem(&ct_budget, &zero);
    if (!budget)
        return -1;
    uint32_t limit = scan_config.max_blocks_per_minute;
    if (limit == 0 || limit > CT_MAX_BLOCKS_PER_MINUTE)
        limit = CT_MAX_BLOCKS_PER_MINUTE;
    int spent = -1;
    bpf_spin_lock(&budget->lock);
    uint32_t next = budget->next;
    if (next >= limit)
        next = 0;
    next &= CT_MAX_BLOCKS_PER_MINUTE - 1;
    int64_t then = budget->times[next];
    if (then == 0 || ct_elapsed(now, then) >= 60000000000LL) {
        budget->times[next] = now;
        budget->next = next + 1 >= limit ? 0 : next + 1;
        spent = 0;
    }
    bpf_spin_unlock(&budget->lock);
    return spent;
}

/* Blocks the source unit `unit` (prefix `length` bits of `family`), the same entry user space would make (in the
 * same map), unless
 * it is allowlisted or a limit refuses. Returns a CT_VERDICT_*. */
static __always_inline uint8_t block_unit(const uint8_t *source, const uint8_t *unit, uint32_t length, int family,
                                          int64_t now, struct ct_scan_stats *stats)
{
    if (family == CT_FAMILY_IPV4) {
        struct ct_lpm_v4_key key = { .prefixlen = 32 };
        __builtin_memcpy(key.addr, source, 4);
        if (bpf_map_lookup_elem(&ct_allow_v4, &key))
            goto allowlisted;
    } else {
        struct ct_lpm_v6_key key = { .prefixlen = 128 };
        __builtin_memcpy(key.addr, source, 16);
        if (bpf_map_lookup_elem(&ct_allow_v6, &key))
            goto allowlisted;
        key.prefixlen = length;
        __builtin_memcpy(key.addr, unit, 16);
        if (bpf_map_lookup_elem(&ct_allow_v6_units, &key))
            goto allowlisted;
    }
    uint32_t zero = 0;
    uint64_t *blocked = bpf_map_lookup_elem(&ct_blocked_count, &zero);
    if (!blocked)
        goto failed;
    if (*blocked >= scan_config.max_blocked) {
        stats->refused_full++;
        return CT_VERDICT_FULL;
    }
    if (spend_block_budget(now) < 0) {
        stats->refused_rate_limited++;
        return CT_VERDICT_RATE_LIMITED;
    }
    struct ct_block_value value = {
        .expires_ns = scan_config.block_ttl_ns > 0 ? (uint64_t)now + (uint64_t)scan_config.block_ttl_ns : 0,
        .packets = 1, /* the SYN that made it */
        .reason = CT_REASON_PORT_SCAN,
        .origin = CT_ORIGIN_LOCAL,
    };
    /* Into the map user space files the same prefix in (ct_block_is_exact): an IPv4 source is always a /32, an
     * IPv6 unit is exact when it is the /64 (the default). */
    long result;
    if (family == CT_FAMILY_IPV4) {
        struct ct_exact_v4_key key;
        __builtin_memcpy(key.addr, source, sizeof(key.addr));
        result = bpf_map_update_elem(&ct_block_v4_exact, &key, &value, BPF_ANY);
    } else if (ct_block_is_exact(CT_FAMILY_IPV6, length)) {
        struct ct_exact_v6_key key;
        __builtin_memcpy(key.addr, unit, sizeof(key.addr));
        result = bpf_map_update_elem(&ct_block_v6_exact, &key, &value, BPF_ANY);
    } else {
        struct ct_lpm_v6_key key = { .prefixlen = length };
        __builtin_memcpy(key.addr, unit, 16);
        result = bpf_map_update_elem(&ct_block_v6, &key, &value, BPF_ANY);
    }
    if (result != 0)
        goto failed;
    __sync_fetch_and_add(blocked, 1);
    stats->blocks++;
    return CT_VERDICT_BLOCKED;

allowlisted:
    stats->refused_allowlisted++;
    return CT_VERDICT_ALLOWLISTED;
failed:
    stats->refused_failed++;
    return CT_VERDICT_FAILED;
}

/* A SYN for the scan rule, handed to it in one piece. */
struct ct_scan_request {
    uint8_t source[16];      /* the address as on the wire: 4 bytes for IPv4, 16 for IPv6 */
    uint8_t destination[16];
    uint16_t port;
    uint8_t family;
    uint8_t pad[5];
    int64_t now;             /* the SYN's time, the one its event carries */
};

/* Counts a SYN under the scan rule and, when it takes the pair over the threshold (or the pair waits for a block
 * a limit refused), blocks the source's unit. Returns the verdict for the event: CT_VERDICT_NONE for SYNs that
 * change nothing, including a retry refused again.
 *
 * A global function: the verifier checks it once, on its own, instead of once per IPv4 and IPv6 call site. */
__attribute__((noinline)) int apply_scan_rule(struct ct_scan_request *request)
{
    if (!request)
        return CT_VERDICT_NONE;
    if ((ignored_ports[(request->port >> 6) & (CT_PORT_BITMAP_WORDS - 1)] >> (request->port & 63)) & 1)
        return CT_VERDICT_NONE; /* never counts, as in user space */
    const uint8_t *source = request->source;
    const uint8_t *destination = request->destination;
    int family = request->family;
    uint16_t port = request->port;
    uint32_t threshold = scan_config.port_threshold;
    if (threshold == 0 || threshold > CT_SCAN_MAX_THRESHOLD)
        return CT_VERDICT_NONE;
    uint32_t zero = 0;
    struct ct_scan_stats *stats = bpf_map_lookup_elem(&ct_scan_stats, &zero);
    if (!stats)
        return CT_VERDICT_NONE;

    struct ct_scan_key key = {};
    uint32_t length = 32;
    if (family == CT_FAMILY_IPV4) {
        key.source[10] = key.source[11] = 0xFF;
        key.destination[10] = key.destination[11] = 0xFF;
        __builtin_memcpy(key.source + 12, source, 4);
        __builtin_memcpy(key.destination + 12, destination, 4);
    } else {
        length = scan_config.ipv6_prefix_len;
        if (length == 0 || length > 128)
            length = 64;
        __builtin_memcpy(key.source, source, 16);
        mask_prefix(key.source, length);
        struct ct_lpm_v6_key unit = { .prefixlen = length };
        __builtin_memcpy(unit.addr, key.source, 16);
        if (length < 128 && bpf_map_lookup_elem(&ct_allow_v6_units, &unit)) {
            /* A shared unit: this source is its own unit. */
            length = 128;
            __builtin_memcpy(key.source, source, 16);
        }
        __builtin_memcpy(key.destination, destination, 16);
    }
    if (scan_config.one_destination)
        __builtin_memset(key.destination, 0, sizeof(key.destination)); /* all of the host's addresses as one */
    int64_t now = request->now;

    struct ct_scan_state *state = bpf_map_lookup_elem(&ct_scan_pairs, &key);
    if (!state) {
        /* A new pair goes in with this SYN already counted: one port never takes it over a threshold of 1 or
         * more, so there is nothing to lock, look at or decide. */
        struct ct_scan_state *fresh = bpf_map_lookup_elem(&ct_scan_fresh, &zero);
        if (!fresh)
            return CT_VERDICT_NONE;
        ct_scan_first(fresh, port, now);
        long inserted = bpf_map_update_elem(&ct_scan_pairs, &key, fresh, BPF_NOEXIST);
        if (inserted == 0) {
            stats->pairs_inserted++;
            return CT_VERDICT_NONE;
        }
        /* Another CPU inserted the pair first: this SYN is counted into its entry. */
        state = inserted == -EEXIST ? bpf_map_lookup_elem(&ct_scan_pairs, &key) : NULL;
        if (!state) {
            stats->untracked++;
            return CT_VERDICT_NONE;
        }
    }
    if (!lock_pair(state)) {
        stats->untracked++;
        return CT_VERDICT_NONE;
    }
    struct ct_scan_pass pass;
    if (ct_scan_begin(&pass, state, port, now, scan_config.window_ns))
        bpf_loop(ct_scan_slots_used(threshold), scan_slot, &pass, 0);
    int over = ct_scan_finish(&pass, threshold);
    int retry = !over && state->retry_block;
    state->retry_block = 0;
    unlock_pair(state);
    if (!over && !retry)
        return CT_VERDICT_NONE;

    if (over)
        stats->scans++;
    uint8_t verdict = block_unit(source, key.source, length, family, now, stats);
    if (verdict == CT_VERDICT_RATE_LIMITED || verdict == CT_VERDICT_FULL || verdict == CT_VERDICT_FAILED) {
        /* A limit that may lift: the pair's next SYN tries again, so a scanner cannot first spend the budget
         * (or fill the list) and then scan at leisure. (A byte store: no lock needed.) */
        state->retry_block = 1;
        return over ? verdict : CT_VERDICT_NONE;
    }
    if (retry)
        return verdict == CT_VERDICT_BLOCKED ? CT_VERDICT_BLOCKED_LATER : CT_VERDICT_NONE;
    return verdict;
}

/* Reports a SYN with the scan rule's verdict; XDP_DROP when the verdict blocked its source. */
static __always_inline int handle_attempt(struct xdp_md *ctx, const uint8_t *saddr, const uint8_t *daddr,
                                          int family, uint16_t sport, uint16_t dport, struct ct_stats *stats)
{
    uint8_t verdict = CT_VERDICT_NONE;
    /* One clock read for the rule and the event: on a virtual machine each costs tens of nanoseconds. */
    uint64_t now = bpf_ktime_get_boot_ns();
    if (scan_config.port_threshold != 0) {
        struct ct_scan_request request = { .port = dport, .family = (uint8_t)family, .now = (int64_t)now };
        if (family == CT_FAMILY_IPV4) {
            __builtin_memcpy(request.source, saddr, 4);
            __builtin_memcpy(request.destination, daddr, 4);
        } else {
            __builtin_memcpy(request.source, saddr, 16);
            __builtin_memcpy(request.destination, daddr, 16);
        }
        verdict = (uint8_t)apply_scan_rule(&request);
    }
    stats->syns++;
    if (report(saddr, daddr, family, sport, dport, ctx->ingress_ifindex, verdict, now) == 0)
        stats->events++;
    else
        stats->ringbuf_full++;
    if (verdict == CT_VERDICT_BLOCKED || verdict == CT_VERDICT_BLOCKED_LATER) {
        stats->dropped++;
        return XDP_DROP;
    }
    return XDP_PASS;
}

/* Evasions the program drops, each counted in its own field of struct ct_guard_stats. */
enum ct_evasion {
    /* A TCP fragment that splits the header's first 16 bytes (RFC 1858, RFC 3128): nmap -f sends SYNs so, and the
     * host would reassemble and answer one whose flags nothing saw. Dropping any fragment loses the whole packet. */
    CT_EVASION_TINY_FRAGMENT,
    /* An IPv6 packet whose extension-header chain goes on past CT_MAX_IPV6_EXTENSION_HEADERS: a SYN behind it would
     * be answered by the host and never seen here (legitimate traffic does not carry such chains). */
    CT_EVASION_LONG_HEADER_CHAIN,
};

/* Counts `evasion` and drops the packet. */
static __always_inline int drop_evasion(enum ct_evasion evasion)
{
    uint32_t zero = 0;
    struct ct_guard_stats *guard = bpf_map_lookup_elem(&ct_guard_stats, &zero);
    if (guard) {
        if (evasion == CT_EVASION_TINY_FRAGMENT)
            guard->tiny_fragments++;
        else
            guard->long_header_chains++;
    }
    return XDP_DROP;
}

/* IPv4 at `ip` (FrameParser.classifyIPv4). Returns XDP_DROP for blocked sources and tiny fragments, else XDP_PASS. */
static __always_inline int handle_ipv4(struct xdp_md *ctx, const uint8_t *ip, const void *end,
                                       struct ct_stats *stats)
{
    if ((const void *)(ip + 20) > end)
        goto malformed;
    uint8_t version_ihl = ip[0];
    uint32_t header_length = (uint32_t)(version_ihl & 0x0F) * 4;
    if ((version_ihl >> 4) != 4 || header_length < 20)
        goto malformed;
    uint32_t total_length = load_be16(ip + 2);
    if (total_length < header_length)
        goto malformed;

    struct ct_lpm_v4_key key = { .prefixlen = 32 };
    __builtin_memcpy(key.addr, ip + 12, 4);
    if (must_drop(&ct_block_v4_exact, &ct_block_v4, &ct_allow_v4, &key, stats))
        return XDP_DROP;

    if (ip[9] != 6) /* not TCP */
        return XDP_PASS;
    uint16_t fragment = load_be16(ip + 6);
    uint32_t fragment_offset = (uint32_t)(fragment & 0x1FFF) * 8;
    if (fragment_offset > 8) /* a later fragment: no TCP header here */
        return XDP_PASS;
    const uint8_t *tcp = ip + header_length;
    if ((const void *)tcp > end)
        goto malformed;
    /* The header split across fragments: the flags are not where a filter looks (FrameParser reassembles them). */
    if (fragment_offset == 8 || ((fragment & 0x2000) && total_length < header_length + 20)) {
        /* Its bytes among the header's first 16 must all be there, or the frame is cut short (FrameParser). */
        uint32_t wanted = total_length - header_length; /* total_length >= header_length, checked above */
        if (wanted > 16 - fragment_offset)
            wanted = 16 - fragment_offset;
        if ((const void *)(tcp + wanted) > end)
            goto malformed;
        return drop_evasion(CT_EVASION_TINY_FRAGMENT);
    }
    if (total_length < header_length + 20) /* the IP header says the TCP header is not all there */
        goto malformed;

    uint16_t sport = 0, dport = 0;
    switch (parse_tcp(tcp, end, &sport, &dport)) {
    case V_ATTEMPT:
        break;
    case V_MALFORMED:
        goto malformed;
    default:
        return XDP_PASS;
    }
    return handle_attempt(ctx, ip + 12, ip + 16, CT_FAMILY_IPV4, sport, dport, stats);

malformed:
    stats->malformed++;
    return XDP_PASS;
}

/* IPv6 at `ip` (FrameParser.classifyIPv6). Returns XDP_DROP for blocked sources and tiny fragments, else XDP_PASS. */
static __always_inline int handle_ipv6(struct xdp_md *ctx, const uint8_t *ip, const void *end,
                                       struct ct_stats *stats)
{
    if ((const void *)(ip + 40) > end)
        goto malformed;
    if ((ip[0] >> 4) != 6)
        goto malformed;

    struct ct_lpm_v6_key key = { .prefixlen = 128 };
    __builtin_memcpy(key.addr, ip + 8, 16);
    if (must_drop(&ct_block_v6_exact, &ct_block_v6, &ct_allow_v6, &key, stats))
        return XDP_DROP;
    /* Malformed past the block decision, as every other header fault is (FrameParser.classifyIPv6). */
    if (is_ipv4_mapped(ip + 8))
        goto malformed;

    uint8_t next_header = ip[6];
    uint32_t offset = 40;
    int more_fragments = 0;
    /* One pass more than the limit: the header past the limit is still checked (truncated, later fragment)
     * before the chain is judged too long, exactly as the Swift parser does. */
#pragma unroll
    for (int followed = 0; followed <= CT_MAX_IPV6_EXTENSION_HEADERS; followed++) {
        if (next_header == 6)
            break;
        /* Each header is at most 2048 bytes, so offset stays under 40 + 6 * 2048; the mask only tells the
         * verifier so. */
        const uint8_t *header = ip + (offset & 0x3FFF);
        uint32_t length;
        if (next_header == 0 || next_header == 43 || next_header == 60) {
            /* hop-by-hop, routing, destination options: length in 8-byte units past the first 8 */
            if ((const void *)(header + 2) > end)
                goto malformed;
            length = ((uint32_t)header[1] + 1) * 8;
        } else if (next_header == 44) {
            /* fragment: only the first fragment carries the TCP header, or its first bytes */
            if ((const void *)(header + 8) > end)
                goto malformed;
            uint16_t fragment_offset = load_be16(header + 2) & 0xFFF8;
            if (fragment_offset == 8 && header[0] == 6) {
                /* Its first 8 bytes (of the header's first 16) must be there if the IP header says so. */
                int64_t available = (int64_t)load_be16(ip + 4) + 40 - (int64_t)offset - 8;
                uint32_t wanted = available < 0 ? 0 : available > 8 ? 8 : (uint32_t)available;
                if ((const void *)(header + 8 + wanted) > end)
                    goto malformed;
                return drop_evasion(CT_EVASION_TINY_FRAGMENT);
            }
            if (fragment_offset)
                return XDP_PASS;
            more_fragments = load_be16(header + 2) & 1;
            length = 8;
        } else if (next_header == 51) {
            /* authentication header: length in 4-byte units minus 2 */
            if ((const void *)(header + 2) > end)
                goto malformed;
            length = ((uint32_t)header[1] + 2) * 4;
        } else {
            return XDP_PASS; /* no next header, ESP, UDP, ICMPv6, ... */
        }
        if (followed == CT_MAX_IPV6_EXTENSION_HEADERS)
            return drop_evasion(CT_EVASION_LONG_HEADER_CHAIN); /* too many headers to follow */
        next_header = header[0];
        offset += length;
    }
    /* Here next_header is TCP: every other way out of the loop returned. */
    uint32_t payload_length = load_be16(ip + 4);
    if (payload_length + 40 < offset + 20) {
        /* The first of several fragments with only some of the TCP header's bytes is tiny; anything else that
         * claims less than a header is malformed. */
        if (more_fragments && (const void *)(ip + (offset & 0x3FFF)) <= end) {
            int64_t available = (int64_t)payload_length + 40 - (int64_t)offset;
            uint32_t wanted = available < 0 ? 0 : available > 16 ? 16 : (uint32_t)available;
            if ((const void *)(ip + (offset & 0x3FFF) + wanted) > end)
                goto malformed;
            return drop_evasion(CT_EVASION_TINY_FRAGMENT);
        }
        goto malformed;
    }

    uint16_t sport = 0, dport = 0;
    switch (parse_tcp(ip + (offset & 0x3FFF), end, &sport, &dport)) {
    case V_ATTEMPT:
        break;
    case V_MALFORMED:
        goto malformed;
    default:
        return XDP_PASS;
    }
    return handle_attempt(ctx, ip + 8, ip + 24, CT_FAMILY_IPV6, sport, dport, stats);

malformed:
    stats->malformed++;
    return XDP_PASS;
}

SEC("xdp")
int conntrackr_xdp(struct xdp_md *ctx)
{
    const uint8_t *data = (const uint8_t *)(long)ctx->data;
    const void *end = (const void *)(long)ctx->data_end;
    uint32_t zero = 0;
    struct ct_stats *stats = bpf_map_lookup_elem(&ct_stats, &zero);
    if (!stats)
        return XDP_PASS; /* cannot happen: a one-entry array always has entry 0 */
    stats->frames++;

    if ((const void *)(data + 14) > end) {
        stats->malformed++;
        return XDP_PASS;
    }
    uint16_t ethertype = load_be16(data + 12);
    uint32_t offset = 14;
#pragma unroll
    for (int tags = 0; tags <= CT_MAX_VLAN_TAGS; tags++) {
        if (!is_vlan(ethertype))
            break;
        if (tags == CT_MAX_VLAN_TAGS || (const void *)(data + offset + 4) > end) {
            stats->malformed++; /* too many tags, or cut short */
            return XDP_PASS;
        }
        ethertype = load_be16(data + offset + 2);
        offset += 4;
    }
    if (ethertype == 0x0800)
        return handle_ipv4(ctx, data + offset, end, stats);
    if (ethertype == 0x86DD)
        return handle_ipv6(ctx, data + offset, end, stats);
    return XDP_PASS;
}
