/* The C surface Swift sees of conntrackr's XDP program: load, attach, read the ring buffer and the statistics,
 * edit the pinned block and allow maps, and run the program on a test frame.
 *
 * Deliberately narrow and free of libbpf and <linux/bpf.h>: their `struct bpf_insn` clashes with libpcap's in
 * any Swift module that sees both. libbpf and the generated skeleton are included by cxdp.c only.
 *
 * Every function that can fail returns 0 (or a count) on success and a negative errno on failure, and writes
 * one line for the user into `err` (a buffer of `err_len` bytes, may be NULL). Errno values with a meaning of
 * their own here:
 *   -EPERM       a capability is missing (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON; root has them all)
 *   -ENOMEDIUM   the pin root is not on a BPF filesystem (bpffs not mounted)
 *   -ENOENT      no such pinned map (ct_maps_open without create), or no such entry
 *   -ENODEV      no such interface
 *   -EBUSY       the interface already has an XDP program attached
 *   -ENOSPC      the map is full
 *   -EINVAL      an invalid argument, or pinned maps of another layout (another conntrackr version)
 */
#ifndef CXDP_H
#define CXDP_H

#include <stddef.h>
#include <stdint.h>

#include "conntrackr.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The loaded program, its maps and its ring buffer consumer. Not attached until ct_program_attach. */
typedef struct ct_program ct_program;

/* The pinned maps alone, without the program: what `conntrackr blocklist` edits while the agent runs. */
typedef struct ct_maps ct_maps;

/* How to attach: the driver's native XDP, the kernel's generic (skb) XDP, or native with generic as fallback. */
enum ct_xdp_mode {
    CT_XDP_MODE_AUTO = 0,
    CT_XDP_MODE_NATIVE = 1,
    CT_XDP_MODE_GENERIC = 2,
};

/* The two LPM tables of each address family. */
enum ct_table {
    CT_TABLE_BLOCK = 0,
    CT_TABLE_ALLOW = 1,
};

/* An address prefix: `family` is CT_FAMILY_IPV4 (the address in addr[0..3]) or CT_FAMILY_IPV6 (addr[0..15]),
 * network byte order; `length` counts bits of that family (0...32 or 0...128). Host bits are ignored. */
struct ct_prefix {
    uint8_t addr[16];
    uint8_t family;
    uint8_t length;
};

/* --- The program --- */

/* Loads the program with its maps pinned by name under `pin_root` (created if missing), reusing the maps
 * already pinned there so that blocks survive a restart. `wakeup_bytes` is how much data must wait in the ring
 * buffer before the program wakes the consumer (0: CT_DEFAULT_WAKEUP_BYTES). `scan` turns on the program's own
 * scan rule and block policy (NULL: off); `ignored_ports` (CT_PORT_BITMAP_WORDS words, or NULL for none) are
 * ports that never count toward it. */
int ct_program_open(const char *pin_root, uint64_t wakeup_bytes, const struct ct_scan_config *scan,
                    const uint64_t *ignored_ports, ct_program **out, char *err, size_t err_len);

/* Attaches to the interface through a BPF link, which the kernel detaches when the process exits however it
 * exits. `used_mode` (may be NULL) receives CT_XDP_MODE_NATIVE or CT_XDP_MODE_GENERIC. */
int ct_program_attach(ct_program *program, int ifindex, enum ct_xdp_mode mode, enum ct_xdp_mode *used_mode,
                      char *err, size_t err_len);

/* Detaches from the interface, if attached. */
void ct_program_detach(ct_program *program);

/* Detaches, frees everything and closes every descriptor; the pinned maps stay. NULL is ignored. */
void ct_program_close(ct_program *program);

/* Waits up to `timeout_ms` (0: not at all, -1: forever) for the program's wake-up or ct_program_wake, then
 * copies up to `capacity` waiting events into `events` and sets `*count`. Records past `capacity` stay in the
 * ring for the next call. One thread at a time. */
int ct_program_poll(ct_program *program, int timeout_ms, struct ct_event *events, size_t capacity, size_t *count,
                    char *err, size_t err_len);

/* Makes the current and every later ct_program_poll return without waiting. Safe from any thread. */
void ct_program_wake(ct_program *program);

/* The program's per-CPU statistics, summed over CPUs. Safe from any thread. */
int ct_program_read_stats(ct_program *program, struct ct_stats *stats, char *err, size_t err_len);

/* The scan rule's per-CPU statistics, summed over CPUs. Safe from any thread. */
int ct_program_read_scan_stats(ct_program *program, struct ct_scan_stats *stats, char *err, size_t err_len);
/* Sums the evasion guards' per-CPU counters (struct ct_guard_stats). */
int ct_program_read_guard_stats(ct_program *program, struct ct_guard_stats *stats, char *err, size_t err_len);

/* Runs the program `repeat` times (at least once) on `frame` (at least 14 bytes) with BPF_PROG_TEST_RUN and
 * stores its last return value (XDP_DROP 1, XDP_PASS 2) in `verdict`. `ingress_ifindex` 0 lets the kernel pick
 * loopback. Maps and the ring buffer see each run as a received frame. */
int ct_program_test_run(ct_program *program, const void *frame, size_t frame_len, uint32_t ingress_ifindex,
                        uint32_t repeat, uint32_t *verdict, char *err, size_t err_len);

/* --- The pinned maps --- */

/* Opens the maps pinned under `pin_root`. When they are missing and `create` is nonzero, loads the program
 * once to create and pin them (the program itself is not attached and is unloaded again). */
int ct_maps_open(const char *pin_root, int create, ct_maps **out, char *err, size_t err_len);

/* Closes the descriptors; the pinned maps stay. NULL is ignored. */
void ct_maps_close(ct_maps *maps);

/* The program's statistics, summed over CPUs, from the pinned map. */
int ct_maps_read_stats(const ct_maps *maps, struct ct_stats *stats, char *err, size_t err_len);

/* How many prefixes the table of one family holds at most (its max_entries; for the block table, the exact-match
 * map's and the trie's together). */
uint32_t ct_maps_capacity(const ct_maps *maps, enum ct_table table, uint8_t family);

/* The block table of a family is two maps: exact-match (a /32, or an IPv6 /64: ct_block_is_exact in conntrackr.h)
 * and an LPM trie (every other prefix). The functions below put each prefix in its map and read both. */

/* Blocks `prefix`, or replaces its entry. With `keep_packets`, a replaced entry keeps its packet counter. */
int ct_block_put(const ct_maps *maps, const struct ct_prefix *prefix, const struct ct_block_value *value,
                 int keep_packets, char *err, size_t err_len);

/* The value of the longest blocked prefix that contains `prefix` and is no longer than it: the entry of
 * `prefix` itself when it is blocked. -ENOENT when none. */
int ct_block_lookup(const ct_maps *maps, const struct ct_prefix *prefix, struct ct_block_value *value, char *err,
                    size_t err_len);

/* How many entries the block maps of both families hold: the exact-match maps in `exact`, the tries in `trie`
 * (either may be NULL). Walks the keys: for diagnostics and tests, not for every block. */
int ct_block_count(const ct_maps *maps, uint64_t *exact, uint64_t *trie, char *err, size_t err_len);

/* Allowlists `prefix` (no-op when already listed). */
int ct_allow_put(const ct_maps *maps, const struct ct_prefix *prefix, char *err, size_t err_len);

/* Removes the exact `prefix` from a table; -ENOENT when it is not there. */
int ct_entry_delete(const ct_maps *maps, enum ct_table table, const struct ct_prefix *prefix, char *err,
                    size_t err_len);

/* Tells the program how many prefixes are blocked (for its --max-blocked check). */
int ct_maps_set_blocked_count(const ct_maps *maps, uint64_t count, char *err, size_t err_len);

/* Makes the IPv6 block units that hold an allowlisted address exactly `units` (IPv6 prefixes of the block
 * length): the program refuses to block them. */
int ct_maps_replace_allow_units(const ct_maps *maps, const struct ct_prefix *units, size_t count, char *err,
                                size_t err_len);

/* Called for each entry; return nonzero to stop. `value` is NULL for the allow table. */
typedef int (*ct_entry_visitor)(void *context, const struct ct_prefix *prefix, const struct ct_block_value *value);

/* Visits every entry of a table, IPv4 first (for blocks, each family's exact-match map before its trie). Entries added or removed meanwhile may or may not be visited. */
int ct_entry_foreach(const ct_maps *maps, enum ct_table table, ct_entry_visitor visitor, void *context, char *err,
                     size_t err_len);

#ifdef __cplusplus
}
#endif

#endif /* CXDP_H */
