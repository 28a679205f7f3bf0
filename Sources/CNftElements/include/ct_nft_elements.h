#ifndef CONNTRACKR_CT_NFT_ELEMENTS_H
#define CONNTRACKR_CT_NFT_ELEMENTS_H

#include <stdint.h>

/// A netlink socket to nf_tables for changing set elements, with the buffer of the batch being built: an opaque
/// handle, used by one thread at a time.
struct ct_nft_socket;

/// What one message of a batch does to one element.
enum ct_nft_element_kind {
    /// Adds the element; the kernel refuses the batch (EEXIST) when the set holds the key already.
    CT_NFT_ELEMENT_CREATE = 0,
    /// Adds the element; an element the set holds already is left as it is.
    CT_NFT_ELEMENT_ADD = 1,
    /// Deletes the element; the kernel refuses the batch (ENOENT) when the set does not hold the key.
    CT_NFT_ELEMENT_DELETE = 2,
};

/// Opens a netlink socket to nf_tables in the calling thread's network namespace. NULL with errno set.
struct ct_nft_socket *ct_nft_socket_open(void);

/// Closes the socket and frees the handle.
void ct_nft_socket_close(struct ct_nft_socket *socket);

/// Starts a batch of element changes to `table` (a table of family `family`, such as NFPROTO_INET), dropping any
/// batch started and not sent.
void ct_nft_batch_start(struct ct_nft_socket *socket, uint8_t family, const char *table);

/// Appends a change to the element `key` (`key_length` bytes, an address in network order) of `set`. For additions,
/// `timeout_ms` (0: none) and `comment` (NULL: none; at most 128 bytes, as nft reads it back) are set too.
/// Returns 0, -EINVAL for a name or comment too long, or -ENOSPC when the batch is full (send it and start another).
int ct_nft_batch_append(struct ct_nft_socket *socket, enum ct_nft_element_kind kind, const char *set,
                        const uint8_t *key, uint32_t key_length, uint64_t timeout_ms, const char *comment);

/// Sends the batch in one sendmsg and reads the kernel's answer to each change. Returns 0 when the kernel applied the
/// batch; a positive errno when it refused it (it then applies none of it), with `*failed` set to the index of the
/// change it refused, or -1 when it refused the batch as a whole (EPERM without CAP_NET_ADMIN); a negative errno when
/// the socket failed (the answer then is unknown; ETIMEDOUT after `timeout_ms` without an answer).
int ct_nft_batch_send(struct ct_nft_socket *socket, uint32_t timeout_ms, int32_t *failed);

#endif
