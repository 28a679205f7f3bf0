#!/usr/bin/env bash
# e2e-timeout: 300
# Issue 12: with `run --source xdp --block xdp` the XDP program enforces the scan rule itself, so a scanner learns
# no more ports than the threshold, whatever its rate. What it learned is counted on the scanner's side: the
# distinct ports of the victim's answers (SYN-ACK or RST) captured in the attacker's namespace. Scanners: hping3
# at 1 SYN/ms to the next port each time, nmap -sS -T4 over 1000 ports, nmap -6 over 1000 ports from a neighbour in
# the victim's own /64 (the lab's): with the default --ipv6-block-prefix it is counted and blocked as its /128 (issue
# 14), never as the /64 that holds the victim. N = 3 and N = 7. A benign client, in the same /64, is served
# throughout. Usage: BINARY
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-xdp.sh"
lab_require_root
lab_require_cmds nmap hping3 masscan tcpdump python3
bin=$(e2e_binary "$@")

lab_up
xdp_init
lab_listen victim 22 80 443

# One scan against a fresh agent with threshold N (a fresh agent: a pair already reported is not reported again
# within its window, in the kernel as in user space); checks what the scanner learned and what the agent said.
scan_once() { # N KIND
    local n=$1 kind=$2 name=agent-$1-$2
    xdp_agent_start "$name" "$bin" --block xdp --scan-ports "$n" --block-ttl 600
    local agent=$XDP_AGENT out=$LAB_TMP/$name.out
    leak_capture_start "$kind-$n"
    leak_scan "$kind" "$n"
    local scanner=$LEAK_SCANNER bits=$LEAK_BITS
    local learned
    learned=$(leak_capture_ports)
    log "N=$n $kind: $learned ports answered"
    assert_int "$learned" -le "$n" "ports $kind learned with N=$n"
    assert_int "$learned" -ge 1 "ports $kind learned with N=$n (the capture sees answers)"
    lab_connect client "$LAB_VICTIM_IP4" 22 80
    lab_connect client "$LAB_VICTIM_IP6" 443
    sleep 0.5
    # The agent reports what the kernel decided: one scan and one block.
    assert_eq "$(events count "$out" event=port_scan src="$scanner")" 1 "port_scan events for $kind with N=$n"
    assert_eq "$(events count "$out" event=blocked src="$scanner/$bits" reason=port_scan)" 1 \
        "blocked events for $kind with N=$n"
    assert_eq "$(events count "$out" event=not_blocked)" 0 "not_blocked events with N=$n"
    assert_eq "$(events count "$out" event=new_connection src="$LAB_CLIENT_IP4")" 2 "client connections with N=$n"
    xdp_agent_stop "$agent" "$name"
    "$bin" blocklist flush --pin-dir "$XDP_PINS" >/dev/null
}

for n in 3 7; do
    kinds=(hping3 nmap nmap6)
    ((n == 3)) && kinds+=(masscan)
    for kind in "${kinds[@]}"; do scan_once "$n" "$kind"; done
done
log "zero leak: hping3, nmap, nmap -6 and masscan learned at most N ports, N = 3 and 7; the client was served throughout"

# A forged storm: 40 spoofed sources of 198.51.100.100-139 scanning 4 ports each get at most the per-minute budget
# of blocks (5), in the kernel, and the rest are reported as rate_limited; the client is served throughout.
xdp_agent_start storm "$bin" --block xdp --max-blocks-per-minute 5 --block-ttl 600
lab_exec attacker 30 python3 "$E2E_TOOLS/forge_syns.py" "$LAB_VICTIM_IP4" 198.51.100.100 40 1001 1002 1003 1004 \
    >"$LAB_TMP/forge.out" 2>&1 || fail "forging SYNs failed: $(cat "$LAB_TMP/forge.out")"
storm_reported() { [[ $(events count "$LAB_TMP/storm.out" event=port_scan) -ge 40 ]]; }
wait_for 10 storm_reported || fail "the storm's scans were not all reported: $(events count "$LAB_TMP/storm.out" event=port_scan)"
assert_eq "$(events count "$LAB_TMP/storm.out" event=blocked reason=port_scan)" 5 "blocks under a forged storm (budget 5)"
assert_eq "$(events count "$LAB_TMP/storm.out" event=not_blocked)" 35 "scanners refused under the storm"
assert_eq "$("$bin" blocklist list --pin-dir "$XDP_PINS" | grep -c '198\.51\.100\.1[0-3][0-9]')" 5 "blocklist entries after the storm"
lab_connect client "$LAB_VICTIM_IP4" 22 80
xdp_agent_stop "$XDP_AGENT" storm
"$bin" blocklist flush --pin-dir "$XDP_PINS" >/dev/null
log "forged storm: 40 spoofed scanners, 5 blocked (the budget), 35 refused; the client was served"
