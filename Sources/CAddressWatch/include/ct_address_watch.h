#ifndef CT_ADDRESS_WATCH_H
#define CT_ADDRESS_WATCH_H

/* A rtnetlink socket that hears about addresses added to or removed from this host's interfaces (RTM_NEWADDR,
 * RTM_DELADDR, IPv4 and IPv6). Needs no capability. */

/* Opens the socket, non-blocking and close-on-exec; returns its descriptor, or -errno. */
int ct_address_watch_open(void);

/* An eventfd to wake ct_address_watch_wait with (non-blocking, close-on-exec); its descriptor, or -errno. */
int ct_address_watch_wake_open(void);

/* Makes `wake_fd` readable, so that a waiting ct_address_watch_wait returns. 0, or -errno. */
int ct_address_watch_wake(int wake_fd);

/* Waits up to `timeout_ms` (-1: no limit) for messages on `fd` (or, when `fd` is -1, only for the timeout) and
 * reads every one queued, unless `wake_fd` (an eventfd) becomes readable first. Returns 1 when an address was
 * added or removed, 0 when nothing was (timeout, woken, other messages), -errno on failure. ENOBUFS (the kernel
 * dropped messages because the queue was full) counts as a change: what was lost is unknown. */
int ct_address_watch_wait(int fd, int wake_fd, int timeout_ms);

#endif
