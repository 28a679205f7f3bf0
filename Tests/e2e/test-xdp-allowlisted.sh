#!/usr/bin/env bash
# e2e-timeout: 120
# Issue 3: a scanner on the allowlist (`--allow`) is reported, with the reason it was not blocked, and is never
# dropped: after its scan it still connects, and its connection is reported. Usage: test-xdp-allowlisted.sh BINARY
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-xdp.sh"
lab_require_root
lab_require_cmds nmap python3
bin=$(e2e_binary "$@")
xdp_family

lab_up
xdp_init
lab_listen victim 443
xdp_agent_start agent "$bin" --block xdp --allow "$attacker" --block-ttl 60
agent=$XDP_AGENT
out=$LAB_TMP/agent.out

xdp_nmap_scan
wait_for_line "$out" '"event" *: *"not_blocked"' 10 ||
    fail "no not_blocked event within 10 s of the scan: $(tail -c 400 "$out")"
lab_connect attacker "$victim" 443
sleep 0.5

assert_eq "$(events count "$out" event=port_scan src="$attacker" dst="$victim")" 1 "port_scan events for the attacker"
assert_eq "$(events count "$out" event=not_blocked src="$attacker")" 1 "not_blocked events for the attacker"
assert_match "$(events list "$out" reason event=not_blocked)" 'allowlisted' "the reason it was not blocked"
assert_eq "$(events count "$out" event=blocked)" 0 "blocked events"
assert_eq "$(events count "$out" event=new_connection src="$attacker" dst_port=443)" 1 \
    "the allowlisted scanner's later connection is reported"

xdp_agent_stop "$agent" agent
n=$(events check "$out" 2>&1) || fail "malformed output: $n"
log "allowlisted scanner reported ($n events), not blocked"
