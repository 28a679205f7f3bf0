#include "ct_address_watch.h"

#include <errno.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

int ct_address_watch_open(void)
{
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0)
        return -errno;
    struct sockaddr_nl local;
    memset(&local, 0, sizeof(local));
    local.nl_family = AF_NETLINK;
    local.nl_groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
    if (bind(fd, (struct sockaddr *)&local, sizeof(local)) != 0) {
        int code = -errno;
        close(fd);
        return code;
    }
    return fd;
}

int ct_address_watch_wake_open(void)
{
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return fd < 0 ? -errno : fd;
}

int ct_address_watch_wake(int wake_fd)
{
    return eventfd_write(wake_fd, 1) == 0 ? 0 : -errno;
}

int ct_address_watch_wait(int fd, int wake_fd, int timeout_ms)
{
    /* A negative descriptor is ignored by poll(2). */
    struct pollfd readiness[2] = { { .fd = wake_fd, .events = POLLIN }, { .fd = fd, .events = POLLIN } };
    int ready = poll(readiness, 2, timeout_ms);
    if (ready < 0)
        return errno == EINTR ? 0 : -errno;
    if (ready == 0 || readiness[0].revents != 0 || fd < 0)
        return 0;
    int changed = 0;
    char buffer[8192] __attribute__((aligned(NLMSG_ALIGNTO)));
    for (;;) {
        ssize_t length = recv(fd, buffer, sizeof(buffer), 0);
        if (length < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return changed;
            if (errno == ENOBUFS)
                return 1;
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (length == 0)
            return changed;
        for (struct nlmsghdr *message = (struct nlmsghdr *)buffer; NLMSG_OK(message, (unsigned int)length);
             message = NLMSG_NEXT(message, length)) {
            if (message->nlmsg_type == RTM_NEWADDR || message->nlmsg_type == RTM_DELADDR)
                changed = 1;
        }
    }
}
