#ifndef CONNTRACKR_CNFTABLES_SHIM_H
#define CONNTRACKR_CNFTABLES_SHIM_H
#include <nftables/libnftables.h>

/* setns(2) and CLONE_NEWNET are declared only with _GNU_SOURCE, which Swift's Glibc module is built without. */
int setns(int fd, int nstype);
#define CT_CLONE_NEWNET 0x40000000

/* A libnftables context whose netlink socket belongs to the network namespace open at `target`: the calling
 * thread enters it, creates the context (the socket is opened then, and stays in that namespace), and returns to
 * the namespace open at `home`. NULL with *step set to 1 (entering failed, errno set), 2 (nft_ctx_new failed) or
 * 3 (returning failed: the thread is left in `target`, so call this on a thread of its own). */
static inline struct nft_ctx *ct_nft_ctx_new_in(int target, int home, int *step) {
    *step = 0;
    if (setns(target, CT_CLONE_NEWNET) != 0) { *step = 1; return 0; }
    struct nft_ctx *ctx = nft_ctx_new(NFT_CTX_DEFAULT);
    if (setns(home, CT_CLONE_NEWNET) != 0) {
        *step = 3;
        if (ctx) nft_ctx_free(ctx);
        return 0;
    }
    if (!ctx) *step = 2;
    return ctx;
}
#endif
