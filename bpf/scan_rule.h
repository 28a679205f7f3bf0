/* The port-scan rule as pure functions of (state, port, time), shared by the XDP program (bpf/conntrackr.bpf.c)
 * and a host build (Sources/CScanRule) that a Swift test runs against SlidingWindowScanDetector on seeded random
 * input: one rule, two compilers, proven to agree.
 *
 * The rule, exactly as Sources/ConnCore/SlidingWindowScanDetector.swift applies it to one (source, destination)
 * pair: a SYN at time t reaches its destination port; the pair is a scan when more than `threshold` distinct
 * ports were reached within (t - window, t]. A retransmission reaches its port again (refreshes its time). The
 * pair is reported once, when its count first goes over the threshold, and again only after a whole window
 * without any SYN of the pair.
 *
 * A pair holds up to CT_SCAN_SLOTS (port, time) slots; a slot whose time left the window is free. One observation
 * is ct_scan_begin, ct_scan_slot for each slot in use, then ct_scan_finish (ct_scan_observe does all three): the
 * program runs the per-slot step with bpf_loop, so the verifier checks it once instead of every path through 33
 * slots. Only the first threshold + 1 slots are ever used (ct_scan_slots_used): between SYNs at most `threshold`
 * are live, so one of them is always free, and a SYN looks at 4 slots under the default rule instead of 33. The
 * program's map holds only those (ct_scan_state_size, set at load time): 80 bytes a pair under the default rule,
 * each slot's time and port side by side after the header, where a SYN reads them in one or two cache lines.
 *
 * No helpers, no globals, no program context: it compiles for -target bpf and for the host alike. Times are
 * positive nanoseconds (0 marks a free slot) compared by wrapping difference, as the Swift code does.
 */
#ifndef CONNTRACKR_SCAN_RULE_H
#define CONNTRACKR_SCAN_RULE_H

#include <stdint.h>

/* The largest threshold the kernel applies; above it detection stays in user space. */
#define CT_SCAN_MAX_THRESHOLD 32
/* Ports held per pair: the threshold, plus the one that takes the count over it. */
#define CT_SCAN_SLOTS (CT_SCAN_MAX_THRESHOLD + 1)

/* A port the pair reached and when it last did: a slot. Free when its time is 0 or has left the window. The time
 * and the port side by side, so that the few slots a SYN looks at lie next to each other and to the header. */
struct ct_scan_slot {
    int64_t time;
    uint16_t port;
    uint8_t pad[6];
};

/* One pair's state. All zero is a pair never seen. Only its first ct_scan_slots_used(threshold) slots are ever
 * read or written: the program's map holds only those (ct_scan_state_size). */
struct ct_scan_state {
    /* The last SYN of the pair; a SYN a whole window later starts the pair afresh. */
    int64_t last_seen_ns;
    /* Taken (1) while a CPU updates the state: the program's own lock word (an LRU value cannot hold a
     * bpf_spin_lock). Not part of the rule. */
    uint32_t busy;
    /* Reported in the current active spell: nothing more is counted until a quiet window. */
    uint8_t reported;
    /* The program's own mark (not part of the rule): reported, but the block was refused for a limit that may
     * lift, so later SYNs of the pair retry it. */
    uint8_t retry_block;
    uint8_t pad[2];
    struct ct_scan_slot slots[CT_SCAN_SLOTS];
};

/* One observation in progress. */
struct ct_scan_pass {
    struct ct_scan_state *state;
    int64_t now;
    int64_t window_ns;
    /* Ports held within the window, this one included once found. */
    uint32_t live;
    /* The first free slot, or -1. */
    int32_t free;
    uint16_t port;
    uint8_t seen;
    uint8_t pad[5];
};

/* now - then, wrapping as two's complement (no undefined overflow). */
static inline __attribute__((always_inline)) int64_t ct_elapsed(int64_t now, int64_t then)
{
    return (int64_t)((uint64_t)now - (uint64_t)then);
}

/* Starts an observation of a SYN to `port` at `now`. Returns 0 when the pair is reported in its current spell
 * (nothing to count: skip the slots and finish), 1 otherwise. */
static inline __attribute__((always_inline)) int ct_scan_begin(struct ct_scan_pass *pass, struct ct_scan_state *state,
                                                               uint16_t port, int64_t now, int64_t window_ns)
{
    pass->state = state;
    pass->now = now;
    pass->window_ns = window_ns;
    pass->live = 0;
    pass->free = -1;
    pass->port = port;
    pass->seen = 0;
    if (ct_elapsed(now, state->last_seen_ns) >= window_ns) {
        /* Quiet for a whole window: every port it reached has aged out (their slots are free), and it may be
         * reported anew. */
        state->reported = 0;
        state->retry_block = 0;
    }
    if (ct_elapsed(now, state->last_seen_ns) > 0)
        state->last_seen_ns = now;
    return !state->reported;
}

/* Looks at slot `index`: refreshes it when it holds this port, counts it when it is within the window, and
 * remembers the first free one. */
static inline __attribute__((always_inline)) void ct_scan_slot(struct ct_scan_pass *pass, uint32_t index)
{
    if (index >= CT_SCAN_SLOTS)
        return;
    struct ct_scan_state *state = pass->state;
    struct ct_scan_slot *slot = &state->slots[index];
    int64_t then = slot->time;
    if (then == 0 || ct_elapsed(pass->now, then) >= pass->window_ns) {
        if (pass->free < 0)
            pass->free = (int32_t)index;
        return;
    }
    if (slot->port == pass->port) {
        if (ct_elapsed(pass->now, then) > 0)
            slot->time = pass->now;
        pass->seen = 1;
    }
    pass->live++;
}

/* The slots a pair uses under `threshold`: the threshold, plus the one that takes the count over it. */
static inline __attribute__((always_inline)) uint32_t ct_scan_slots_used(uint32_t threshold)
{
    return threshold < CT_SCAN_SLOTS ? threshold + 1 : CT_SCAN_SLOTS;
}

/* The bytes of a state whose first `slots` slots are used: the value size of the program's map, set at load time
 * to ct_scan_slots_used(threshold). */
static inline __attribute__((always_inline)) uint32_t ct_scan_state_size(uint32_t slots)
{
    return (uint32_t)__builtin_offsetof(struct ct_scan_state, slots) + slots * (uint32_t)sizeof(struct ct_scan_slot);
}

/* Ends the observation. Returns 1 when this SYN takes the pair over `threshold` (the one SYN the pair is reported
 * for; its ports are then the slots within the window), else 0. */
static inline __attribute__((always_inline)) int ct_scan_finish(struct ct_scan_pass *pass, uint32_t threshold)
{
    struct ct_scan_state *state = pass->state;
    if (state->reported)
        return 0;
    uint32_t live = pass->live;
    if (!pass->seen) {
        int32_t free = pass->free;
        /* A free slot always exists: between SYNs at most `threshold` of the threshold + 1 slots in use are live.
         * The bound is the slots in use, not CT_SCAN_SLOTS: the program's map holds no more. */
        if (free < 0 || (uint32_t)free >= ct_scan_slots_used(threshold))
            return 0;
        state->slots[free].port = pass->port;
        state->slots[free].time = pass->now;
        live++;
    }
    if (live > threshold) {
        state->reported = 1;
        return 1;
    }
    return 0;
}

/* A pair's first SYN: what ct_scan_observe makes of an all-zero state, for any threshold of 1 or more (one port
 * never takes a pair over it, so nothing is reported). Writes the header and the first slot and nothing else: the
 * caller's other slots must be zero. The program builds a new pair so and inserts it whole, with no lock taken and
 * no slot looked at: under a flood from ever new sources, nearly every SYN is a pair's first. */
static inline __attribute__((always_inline)) void ct_scan_first(struct ct_scan_state *state, uint16_t port,
                                                                int64_t now)
{
    /* ct_scan_begin moves last_seen_ns only forwards from 0; ct_scan_finish fills the first free slot, slot 0. */
    state->last_seen_ns = now > 0 ? now : 0;
    state->busy = 0;
    state->reported = 0;
    state->retry_block = 0;
    state->slots[0].time = now;
    state->slots[0].port = port;
}

/* ct_scan_begin, ct_scan_slot for each slot in use, ct_scan_finish: one SYN, as the program applies it. */
static inline __attribute__((always_inline)) int ct_scan_observe(struct ct_scan_state *state, uint16_t port,
                                                                 int64_t now, uint32_t threshold, int64_t window_ns)
{
    struct ct_scan_pass pass;
    if (ct_scan_begin(&pass, state, port, now, window_ns)) {
        uint32_t used = ct_scan_slots_used(threshold);
        for (uint32_t index = 0; index < used; index++)
            ct_scan_slot(&pass, index);
    }
    return ct_scan_finish(&pass, threshold);
}

#endif /* CONNTRACKR_SCAN_RULE_H */
