#!/usr/bin/env bash
# e2e-timeout: 90
# The lab itself: namespaces, addresses, isolation (no default route, nothing routed outside the lab ranges),
# reachability over IPv4 and IPv6, and that cleanup removes everything both on a normal exit and on SIGTERM.
# Needs no conntrackr binary (it is accepted and ignored), so a broken lab shows up on its own.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_require_root
lab_require_cmds ip nft python3

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
        ip netns exec "$LAB_NS_VICTIM" ip link set dev lo xdpgeneric obj /dev/null 2>/dev/null || true
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
done
log "lab self-test done"
