/* The host build of the XDP program's scan rule (bpf/scan_rule.h), for the differential test against the Swift
 * detector. The rule itself is all in the header. */
#include "scan_rule.h"

int ct_scan_observe_host(struct ct_scan_state *state, uint16_t port, int64_t now, uint32_t threshold,
                         int64_t window_ns)
{
    return ct_scan_observe(state, port, now, threshold, window_ns);
}

void ct_scan_first_host(struct ct_scan_state *state, uint16_t port, int64_t now)
{
    ct_scan_first(state, port, now);
}
