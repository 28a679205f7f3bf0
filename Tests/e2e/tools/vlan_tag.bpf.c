// SPDX-License-Identifier: GPL-2.0
// tc programs that make the namespace lab carry VLAN-tagged frames, used only by record-captures.sh to record real
// 802.1Q and QinQ traffic: this kernel has neither the 8021q module nor bridge VLAN filtering, but tc's
// bpf_skb_vlan_push/pop do the tagging the way a switch port would. The attacker pushes the tags on egress and
// pops them on ingress; the victim pops them on ingress (after packet sockets, which see the tags, have run) and
// pushes them on egress only towards the attacker's MAC (packet sockets run after tc egress, so they see them too).
// Build: clang-14 -O2 -g -target bpf -I/usr/include/$(gcc -dumpmachine) -c vlan_tag.bpf.c -o vlan_tag.bpf.o
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define VLAN_INNER 100
#define VLAN_OUTER 200
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8

// The attacker's MAC in lib.sh (LAB_ATTACKER_MAC, 02:00:00:00:00:56).
static const unsigned char attacker_mac[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x56};

static __always_inline int to_attacker(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    unsigned char *dst = data;
    if (data + 6 > end)
        return 0;
    for (int i = 0; i < 6; i++)
        if (dst[i] != attacker_mac[i])
            return 0;
    return 1;
}

SEC("tc/push_8021q")
int push_8021q(struct __sk_buff *skb) {
    bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), VLAN_INNER);
    return TC_ACT_OK;
}

SEC("tc/push_qinq")
int push_qinq(struct __sk_buff *skb) {
    // The second push moves the first tag into the frame and becomes the outer one.
    bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), VLAN_INNER);
    bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021AD), VLAN_OUTER);
    return TC_ACT_OK;
}

SEC("tc/push_8021q_to_attacker")
int push_8021q_to_attacker(struct __sk_buff *skb) {
    if (to_attacker(skb))
        bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), VLAN_INNER);
    return TC_ACT_OK;
}

SEC("tc/push_qinq_to_attacker")
int push_qinq_to_attacker(struct __sk_buff *skb) {
    if (to_attacker(skb)) {
        bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), VLAN_INNER);
        bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021AD), VLAN_OUTER);
    }
    return TC_ACT_OK;
}

SEC("tc/pop")
int pop(struct __sk_buff *skb) {
    // Each pop removes the outer tag and moves the next one out of the frame; on an untagged frame it does nothing.
    bpf_skb_vlan_pop(skb);
    bpf_skb_vlan_pop(skb);
    return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
