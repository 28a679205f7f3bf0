/* The XDP program's scan rule built for the host (see scan_rule.h). */
#ifndef CSCANRULE_H
#define CSCANRULE_H

#include "scan_rule.h"

/* ct_scan_observe, callable from Swift. */
int ct_scan_observe_host(struct ct_scan_state *state, uint16_t port, int64_t now, uint32_t threshold,
                         int64_t window_ns);

/* ct_scan_first, callable from Swift. */
void ct_scan_first_host(struct ct_scan_state *state, uint16_t port, int64_t now);

#endif
