// Set element changes written to nf_tables over netlink with libnftnl and libmnl: one batch (BATCH_BEGIN, the
// NEWSETELEM/DELSETELEM messages, BATCH_END) per change of the blocker, one sendmsg, one acknowledgement per message.
// libnftables would parse a command and refresh its cache with netlink dumps first, which costs about a millisecond.
#include "ct_nft_elements.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <libnftnl/set.h>
#include <libnftnl/udata.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>

#ifndef NETLINK_CAP_ACK
#define NETLINK_CAP_ACK 10
#endif

enum {
    BATCH_BYTES = 64 * 1024,
    // The most one element message takes: two names of at most 255 bytes, a 16-byte key, a 128-byte comment and
    // their headers come to about 800 bytes.
    MESSAGE_ROOM = 1024,
    NAME_BYTES = 255,
    COMMENT_BYTES = NFTNL_UDATA_COMMENT_MAXLEN,
    KEY_BYTES = 16,
};

struct ct_nft_socket {
    struct mnl_socket *netlink;
    uint32_t next_seq;
    /// The sequence number of the batch's BATCH_BEGIN; its changes follow it one by one.
    uint32_t begin_seq;
    uint32_t changes;
    uint8_t family;
    char table[NAME_BYTES + 1];
    size_t used;
    char buffer[BATCH_BYTES];
};

struct ct_nft_socket *ct_nft_socket_open(void) {
    struct ct_nft_socket *socket = calloc(1, sizeof *socket);
    if (!socket) return NULL;
    socket->netlink = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
    if (!socket->netlink) goto fail;
    if (mnl_socket_bind(socket->netlink, 0, MNL_SOCKET_AUTOPID) < 0) goto fail;
    // Refusals then carry only the refused message's header, not the whole message back.
    int one = 1;
    (void)mnl_socket_setsockopt(socket->netlink, NETLINK_CAP_ACK, &one, sizeof one);
    socket->next_seq = (uint32_t)time(NULL);
    return socket;
fail: {
    int saved = errno;
    if (socket->netlink) mnl_socket_close(socket->netlink);
    free(socket);
    errno = saved;
    return NULL;
}
}

void ct_nft_socket_close(struct ct_nft_socket *socket) {
    if (!socket) return;
    mnl_socket_close(socket->netlink);
    free(socket);
}

void ct_nft_batch_start(struct ct_nft_socket *socket, uint8_t family, const char *table) {
    socket->family = family;
    // A name too long leaves the table empty, so that appending refuses it (EINVAL) rather than cut it.
    if (strlen(table) > NAME_BYTES) {
        socket->table[0] = 0;
    } else {
        strcpy(socket->table, table);
    }
    socket->begin_seq = socket->next_seq++;
    socket->changes = 0;
    struct nlmsghdr *begin = nftnl_batch_begin(socket->buffer, socket->begin_seq);
    socket->used = MNL_ALIGN(begin->nlmsg_len);
}

int ct_nft_batch_append(struct ct_nft_socket *socket, enum ct_nft_element_kind kind, const char *set,
                        const uint8_t *key, uint32_t key_length, uint64_t timeout_ms, const char *comment) {
    if (socket->table[0] == 0 || strlen(set) > NAME_BYTES || key_length == 0 || key_length > KEY_BYTES) return -EINVAL;
    if (comment && strlen(comment) > COMMENT_BYTES) return -EINVAL;
    // Room for this message and the BATCH_END after it.
    if (socket->used + MESSAGE_ROOM + MNL_NLMSG_HDRLEN + 64 > BATCH_BYTES) return -ENOSPC;

    struct nftnl_set *target = nftnl_set_alloc();
    struct nftnl_set_elem *element = nftnl_set_elem_alloc();
    if (!target || !element) {
        if (target) nftnl_set_free(target);
        if (element) nftnl_set_elem_free(element);
        return -ENOMEM;
    }
    nftnl_set_set_str(target, NFTNL_SET_TABLE, socket->table);
    nftnl_set_set_str(target, NFTNL_SET_NAME, set);
    nftnl_set_elem_set(element, NFTNL_SET_ELEM_KEY, key, key_length);
    if (kind != CT_NFT_ELEMENT_DELETE) {
        if (timeout_ms > 0) nftnl_set_elem_set_u64(element, NFTNL_SET_ELEM_TIMEOUT, timeout_ms);
        if (comment) {
            // The comment as nft writes it: a user-data record of type COMMENT holding the string and its NUL.
            struct nftnl_udata_buf *data = nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN);
            if (!data || !nftnl_udata_put_strz(data, NFTNL_UDATA_SET_ELEM_COMMENT, comment)) {
                if (data) nftnl_udata_buf_free(data);
                nftnl_set_elem_free(element);
                nftnl_set_free(target);
                return -ENOMEM;
            }
            nftnl_set_elem_set(element, NFTNL_SET_ELEM_USERDATA, nftnl_udata_buf_data(data),
                               nftnl_udata_buf_len(data));
            nftnl_udata_buf_free(data);
        }
    }
    nftnl_set_elem_add(target, element); // the set owns the element from here

    uint16_t type = kind == CT_NFT_ELEMENT_DELETE ? NFT_MSG_DELSETELEM : NFT_MSG_NEWSETELEM;
    uint16_t flags = NLM_F_ACK;
    if (kind == CT_NFT_ELEMENT_CREATE) flags |= NLM_F_CREATE | NLM_F_EXCL;
    if (kind == CT_NFT_ELEMENT_ADD) flags |= NLM_F_CREATE;
    struct nlmsghdr *message =
        nftnl_nlmsg_build_hdr(socket->buffer + socket->used, type, socket->family, flags, socket->next_seq++);
    nftnl_set_elems_nlmsg_build_payload(message, target);
    nftnl_set_free(target);
    socket->used += MNL_ALIGN(message->nlmsg_len);
    socket->changes += 1;
    return 0;
}

static int64_t now_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

int ct_nft_batch_send(struct ct_nft_socket *socket, uint32_t timeout_ms, int32_t *failed) {
    *failed = -1;
    struct nlmsghdr *end = nftnl_batch_end(socket->buffer + socket->used, socket->next_seq++);
    size_t length = socket->used + MNL_ALIGN(end->nlmsg_len);
    socket->used = 0;
    if (mnl_socket_sendto(socket->netlink, socket->buffer, length) < 0) return -errno;

    // Each change carries NLM_F_ACK, so the kernel answers each once it has processed the whole batch (a refused
    // one with its errno); a refusal of the batch as a whole (EPERM) answers BATCH_BEGIN alone. Answers to an
    // earlier batch whose wait timed out have older sequence numbers and are skipped.
    uint32_t answered = 0;
    int refused = 0;
    int64_t deadline = now_ms() + timeout_ms;
    char answer[MNL_SOCKET_BUFFER_SIZE];
    int fd = mnl_socket_get_fd(socket->netlink);
    while (answered < socket->changes) {
        int64_t left = deadline - now_ms();
        if (left <= 0) return -ETIMEDOUT;
        struct pollfd ready = {.fd = fd, .events = POLLIN};
        int polled = poll(&ready, 1, (int)left);
        if (polled < 0 && errno == EINTR) continue;
        if (polled < 0) return -errno;
        if (polled == 0) return -ETIMEDOUT;
        ssize_t received = mnl_socket_recvfrom(socket->netlink, answer, sizeof answer);
        if (received < 0 && errno == EINTR) continue;
        if (received < 0) return -errno;
        int remaining = (int)received;
        for (const struct nlmsghdr *message = (const struct nlmsghdr *)answer; mnl_nlmsg_ok(message, remaining);
             message = mnl_nlmsg_next(message, &remaining)) {
            if (message->nlmsg_type != NLMSG_ERROR || message->nlmsg_len < mnl_nlmsg_size(sizeof(int))) continue;
            int error = *(const int *)mnl_nlmsg_get_payload(message);
            uint32_t index = message->nlmsg_seq - socket->begin_seq - 1; // wraps past the batch for other answers
            if (message->nlmsg_seq == socket->begin_seq) {
                if (error != 0) return -error;
            } else if (index < socket->changes) {
                answered += 1;
                if (error != 0 && refused == 0) {
                    refused = -error;
                    *failed = (int32_t)index;
                }
            }
        }
    }
    return refused;
}
