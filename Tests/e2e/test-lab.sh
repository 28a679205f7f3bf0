#!/usr/bin/env bash
# e2e-timeout: 90
# The lab itself: namespaces, addresses, isolation (no default route, nothing routed outside the lab ranges),
# reachability over IPv4 and IPv6, and that cleanup removes everything both on a normal exit and on SIGTERM.
# Needs no conntrackr binary (it is accepted and ignored), so a broken lab shows up on its own.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_require_root
lab_require_cmds ip nft python3
[[ -d /sys/fs/bpf ]] || skip "bpffs is not mounted at /sys/fs/bpf"

lab_up --victim2

for role in switch victim victim2 attacker client; do
    ns=$(lab_ns "$role")
    [[ -e /run/netns/$ns ]] || fail "namespace $ns missing"
    assert_match "$(ip -n "$ns" -o link show lo)" 'LOWER_UP' "lo up in $role"
    assert_eq "$(ip -n "$ns" route show default)" "" "IPv4 default route in $role"
    assert_eq "$(ip -n "$ns" -6 route show default)" "" "IPv6 default route in $role"
    # A route lookup sends nothing: addresses outside the lab ranges must be unroutable from every namespace.
    for outside in 192.0.2.1 8.8.8.8 fd00::1 2606:4700::1; do
        if ip -n "$ns" route get "$outside" >/dev/null 2>&1; then
            fail "$role has a route to $outside"
        fi
    done
done
# Only lab ranges are configured.
for role in switch victim victim2 attacker client; do
    while read -r addr; do
        case $addr in
            127.0.0.1/* | ::1/* | fe80:*) ;;
            203.0.113.* | 198.51.100.* | 2001:db8:*) ;;
            *) fail "$role has address $addr outside the lab ranges" ;;
        esac
    done < <(ip -n "$(lab_ns "$role")" -o addr show | awk '{print $4}')
done

# Every lab link carries the suffix.
for ns in "${LAB_NAMESPACES[@]}"; do
    while read -r link; do
        [[ "$link" == lo || "$link" == *"-$LAB_SUFFIX" ]] || fail "link $link in $ns lacks the suffix $LAB_SUFFIX"
    done < <(ip -n "$ns" -o link show | awk -F': ' '{sub(/@.*/, "", $2); print $2}')
done

lab_listen victim 22 80 443
lab_listen victim2 80
lab_connect client "$LAB_VICTIM_IP4" 22 80 443
lab_connect client "$LAB_VICTIM_IP6" 22 80 443
lab_connect attacker "$LAB_VICTIM2_IP4" 80
lab_connect attacker "$LAB_VICTIM2_IP6" 80
lab_connect attacker --accept-refused "$LAB_VICTIM_IP4" 23
assert_int "$(grep -c '^accepted' "$LAB_TMP/listen-victim-22.out")" -eq 6 "connections accepted by the victim"

# XDP detach as cleanup does it, with a real program attached in generic mode (skipped without clang-14, which
# make deps installs as Debian's clang).
if command -v clang-14 >/dev/null 2>&1; then
    printf '%s\n' '#include <linux/bpf.h>' '#include <bpf/bpf_helpers.h>' \
        'SEC("xdp") int pass(struct xdp_md *ctx) { return XDP_PASS; }' 'char LICENSE[] SEC("license") = "GPL";' \
        >"$LAB_TMP/pass.bpf.c"
    clang-14 -O2 -target bpf -I"/usr/include/$(uname -m)-linux-gnu" -c "$LAB_TMP/pass.bpf.c" -o "$LAB_TMP/pass.bpf.o" ||
        fail "cannot compile a trivial XDP program"
    lab_run ip -n "$LAB_NS_VICTIM" link set dev "$LAB_IF_VICTIM" xdpgeneric obj "$LAB_TMP/pass.bpf.o" sec xdp
    assert_eq "$(lab_xdp_ifaces "$LAB_NS_VICTIM")" "$LAB_IF_VICTIM" "interfaces with XDP after attaching"
    lab_detach_xdp "$LAB_NS_VICTIM"
    assert_eq "$(lab_xdp_ifaces "$LAB_NS_VICTIM")" "" "interfaces with XDP after lab_detach_xdp"
else
    log "clang-14 not installed: XDP detach not exercised"
fi

# wait_for_line is bounded and reports a timeout.
: >"$LAB_TMP/empty"
start=$SECONDS
if wait_for_line "$LAB_TMP/empty" 'never' 1; then fail "wait_for_line matched an empty file"; fi
assert_int $((SECONDS - start)) -le 3 "wait_for_line bounded"

# Cleanup, run in child shells with suffixes of their own: once on a normal (failing) exit, once on SIGTERM.
child_suffix() { printf 'c%s%s' "$1" "$((LAB_SUFFIX % 100000))"; }
for mode in exit term; do
    s=$(child_suffix "${mode:0:1}")
    LAB_SUFFIX=$s bash -c '
        . "$1/lib.sh"
        lab_up
        lab_spawn victim sleeper sleep 300
        echo "$LAB_LAST_PID" >"$2/sleeper.pid"
        ip netns exec "$LAB_NS_VICTIM" nft add table inet conntrackr_test
        # Registered things outside the lab namespaces: an (empty) nftables table in the root namespace and a
        # bpffs directory.
        nft add table inet "conntrackr_labtest_$LAB_SUFFIX"
        lab_register_nft_table inet "conntrackr_labtest_$LAB_SUFFIX"
        mkdir "/sys/fs/bpf/conntrackr-labtest-$LAB_SUFFIX"
        lab_register_pin_dir "/sys/fs/bpf/conntrackr-labtest-$LAB_SUFFIX"
        echo ready >"$2/child.$3"
        if [[ $3 == exit ]]; then exit 3; fi
        sleep 60 &
        wait
    ' child "$E2E_DIR" "$LAB_TMP" "$mode" >"$LAB_TMP/child-$mode.log" 2>&1 &
    child=$!
    wait_for_line "$LAB_TMP/child.$mode" ready 20 || fail "child lab ($mode) did not come up: $(tail -n 5 "$LAB_TMP/child-$mode.log")"
    sleeper=$(cat "$LAB_TMP/sleeper.pid")
    if [[ $mode == term ]]; then kill -TERM "$child"; fi
    rc=0
    wait "$child" || rc=$?
    [[ $mode == exit ]] && assert_eq "$rc" 3 "child exit status preserved through cleanup"
    [[ $mode == term ]] && assert_eq "$rc" 143 "child exit status after SIGTERM"
    left=$(ip netns list | awk '{print $1}' | grep -E -- "-$s\$" || true)
    assert_eq "$left" "" "namespaces left by the child lab ($mode)"
    if kill -0 "$sleeper" 2>/dev/null; then fail "process $sleeper started in the child lab ($mode) survived"; fi
    if nft list table inet "conntrackr_labtest_$s" >/dev/null 2>&1; then
        fail "registered nftables table conntrackr_labtest_$s survived the child lab ($mode)"
    fi
    [[ ! -e "/sys/fs/bpf/conntrackr-labtest-$s" ]] || fail "registered pin directory survived the child lab ($mode)"
done
log "lab self-test done"
