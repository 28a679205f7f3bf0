#!/usr/bin/env bash
# e2e-timeout: 180
# Issue 3: `conntrackr run --source xdp --block xdp` on the victim's interface. A real `nmap -sS` from the attacker
# is reported and blocked; afterwards the attacker can no longer connect to a listening port (its SYNs are dropped
# in XDP and not reported) while the benign client still can. SIGINT detaches the program and the agent exits 0;
# a restarted agent reuses the pinned block at once; the block expires after its TTL (an `unblocked` event) and
# the attacker connects again. E2E_FAMILY=6 runs it over IPv6 (test-xdp-block-v6.sh), with scanners blocked as
# /128 since the lab's hosts share one /64. Usage: test-xdp-block.sh BINARY
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-xdp.sh"
lab_require_root
lab_require_cmds nmap python3
bin=$(e2e_binary "$@")
xdp_family
ttl=40

lab_up
xdp_init
lab_listen victim 22 80 443
xdp_agent_start agent "$bin" --block xdp --block-ttl "$ttl" --ipv6-block-prefix 128
agent=$XDP_AGENT
out=$LAB_TMP/agent.out

lab_connect client "$victim" 22 80
xdp_nmap_scan
wait_for_line "$out" '"event" *: *"blocked"' 10 || fail "no blocked event within 10 s of the scan: $(tail -c 400 "$out")"
blocked_at=$SECONDS

# The attacker is cut off (443 is outside nmap's range, so any event for it would come from this attempt); the
# client is not.
lab_connect attacker --timeout 2 --expect-timeout "$victim" 443
lab_connect client "$victim" 443
sleep 0.5 # the agent reads the ring buffer at least every 100 ms

assert_eq "$(events count "$out" event=port_scan src="$attacker" dst="$victim")" 1 "port_scan events for the attacker"
assert_eq "$(events count "$out" event=blocked src="$attacker/$host_bits" reason=port_scan)" 1 \
    "blocked events for the attacker's /$host_bits"
assert_eq "$(events count "$out" event=blocked)" 1 "blocked events in total"
assert_eq "$(events count "$out" event=new_connection src="$attacker" dst_port=443)" 0 \
    "new_connection events for the blocked attacker's later SYNs"
assert_eq "$(events count "$out" event=new_connection src="$client" dst="$victim")" 3 "client new_connection events"
expires=$(events list "$out" expires event=blocked)
[[ -n "$expires" ]] || fail "the blocked event has no expiry although --block-ttl $ttl"

xdp_agent_stop "$agent" agent
n=$(events check "$out" 2>&1) || fail "malformed output: $n"

# A new agent on the same pins drops the attacker at once: the unexpired block outlived the first agent.
xdp_agent_start agent2 "$bin" --block xdp --block-ttl "$ttl" --ipv6-block-prefix 128
agent2=$XDP_AGENT
out2=$LAB_TMP/agent2.out
lab_connect attacker --timeout 2 --expect-timeout "$victim" 443
lab_connect client "$victim" 22

# Expiry: the restarted agent lifts the block when its time is up and says so; the attacker gets through again.
wait_for_line "$out2" '"event" *: *"unblocked"' $((ttl + 15 - (SECONDS - blocked_at))) ||
    fail "no unblocked event within $((ttl + 15)) s of the block: $(tail -c 400 "$out2")"
assert_eq "$(events count "$out2" event=unblocked src="$attacker/$host_bits")" 1 "unblocked events for the attacker"
lab_connect attacker "$victim" 443
sleep 0.5
assert_eq "$(events count "$out2" event=new_connection src="$attacker" dst_port=443)" 1 \
    "the attacker's connection after expiry is reported again"
assert_eq "$(events count "$out2" event=blocked)" 0 "blocked events of the second agent"

xdp_agent_stop "$agent2" agent2
n=$(events check "$out2" 2>&1) || fail "malformed output: $n"
log "IPv${E2E_FAMILY:-4}: scanner blocked in XDP, block kept across a restart and lifted after $ttl s"
