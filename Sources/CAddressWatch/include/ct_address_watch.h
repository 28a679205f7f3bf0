#ifndef CT_ADDRESS_WATCH_H
#define CT_ADDRESS_WATCH_H

/* A rtnetlink socket that hears about addresses added to or removed from this host's interfaces (RTM_NEWADDR,
 * RTM_DELADDR, IPv4 and IPv6). Needs no capability. */

/* Opens the socket, non-blocking and close-on-exec; returns its descriptor, or -errno. */
int ct_address_watch_open(void);

/* Waits up to `timeout_ms` for messages and reads every one queued. Returns 1 when an address was added or
 * removed, 0 when nothing was (timeout, other messages), -errno on failure. ENOBUFS (the kernel dropped messages
 * because the queue was full) counts as a change: what was lost is unknown. */
int ct_address_watch_wait(int fd, int timeout_ms);

#endif
