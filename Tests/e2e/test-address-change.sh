#!/usr/bin/env bash
# e2e-timeout: 120
# Issue 14: an address added to the victim after the agent started (a VIP after a failover, SLAAC, renumbering) is
# followed: the agent logs the change, SYNs to it are captured (the capture filter names only the host's
# addresses) and a scan of it is reported; once it is removed, SYNs to it are no longer reported. Usage: BINARY
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_require_root
lab_require_cmds nmap hping3 python3
bin=$(e2e_binary "$@")
vip=203.0.113.50

lab_up
lab_listen victim 22 80
lab_spawn victim agent "$bin" run --interface "$LAB_IF_VICTIM" --source pcap --format json --metrics-address none
agent=$LAB_LAST_PID
lab_wait_capture_started agent "$agent" 15
out=$LAB_TMP/agent.out

lab_run ip -n "$LAB_NS_VICTIM" addr add "$vip/24" dev "$LAB_IF_VICTIM"
wait_for_line "$LAB_TMP/agent.err" 'host addresses changed' 10 ||
    fail "the agent did not see the new address: $(tail -n 3 "$LAB_TMP/agent.err")"
assert_file_contains "$LAB_TMP/agent.err" "$vip" "the change names the new address"
wait_for_line "$LAB_TMP/agent.err" 'capture filter updated' 5 || fail "the capture filter was not updated"

lab_exec attacker 60 nmap -n -Pn -sS -p 20-40 --max-retries 0 -T4 --max-rtt-timeout 100ms --host-timeout 30s "$vip" \
    >"$LAB_TMP/nmap.out" 2>&1 || true
grep -q '1 host up' "$LAB_TMP/nmap.out" || fail "nmap did not reach $vip: $(tail -n 5 "$LAB_TMP/nmap.out")"
wait_for_line "$out" '"port_scan"' 10 || fail "no port_scan for the new address: $(head -c 300 "$out")"
assert_eq "$(events count "$out" event=port_scan src="$LAB_ATTACKER_IP4" dst="$vip")" 1 "port_scan events against $vip"

# Removed again: SYNs to it are no longer attempts against this host.
lab_run ip -n "$LAB_NS_VICTIM" addr del "$vip/24" dev "$LAB_IF_VICTIM"
filter_updates() { [[ $(grep -c 'capture filter updated' "$LAB_TMP/agent.err") -ge 2 ]]; }
wait_for 10 filter_updates || fail "the removal was not followed: $(tail -n 3 "$LAB_TMP/agent.err")"
before=$(events count "$out" event=new_connection dst="$vip")
lab_exec attacker 30 hping3 -q -S -p 22 -c 3 -i u100000 "$vip" >/dev/null 2>&1 || true
sleep 1
assert_eq "$(events count "$out" event=new_connection dst="$vip")" "$before" "attempts to the removed address"
lab_stop "$agent" INT 5
assert_eq "$LAB_EXIT_STATUS" 0 "agent exit status (stderr: $(tail -n 3 "$LAB_TMP/agent.err"))"
log "address change: $vip followed when added and when removed"
