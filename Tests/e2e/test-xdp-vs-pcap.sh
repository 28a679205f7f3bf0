#!/usr/bin/env bash
# e2e-timeout: 120
# Issue 3: the same traffic seen through `--source pcap` and `--source xdp` gives the same events. Both agents
# watch the victim's interface at once (XDP passes every frame on to the stack, where libpcap sees it) while nmap
# scans and the client connects; their new_connection and port_scan events must be the same, apart from their
# timestamps. Usage: test-xdp-vs-pcap.sh BINARY
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-xdp.sh"
lab_require_root
lab_require_cmds nmap python3
bin=$(e2e_binary "$@")
xdp_family

lab_up
xdp_init
lab_listen victim 22 80 443
xdp_agent_start xdp "$bin"
xdp_agent=$XDP_AGENT
xdp_spawn_in_victim pcap "$bin" run --interface "$LAB_IF_VICTIM" --source pcap --format json --metrics-address none
pcap_agent=$LAB_LAST_PID
lab_wait_capture_started pcap "$pcap_agent" 15

xdp_nmap_scan
lab_connect client "$victim" 22 80 443
lab_connect client "${LAB_VICTIM_IP6}" 22
sleep 1 # both agents read at least every 100 ms

xdp_agent_stop "$xdp_agent" xdp
lab_stop "$pcap_agent" INT 5
assert_eq "$LAB_EXIT_STATUS" 0 "pcap agent exit status (stderr: $(tail -n 3 "$LAB_TMP/pcap.err"))"

# The events without their times, sorted: they must be the same lists.
summary() {
    python3 -c '
import json, sys
rows = []
for line in open(sys.argv[1]):
    if line.strip():
        e = json.loads(line)
        e.pop("time", None)
        rows.append(json.dumps(e, sort_keys=True))
print("\n".join(sorted(rows)))' "$1"
}
summary "$LAB_TMP/xdp.out" >"$LAB_TMP/xdp.summary" 2>&1 || fail "xdp output unreadable: $(tail -n 2 "$LAB_TMP/xdp.summary")"
summary "$LAB_TMP/pcap.out" >"$LAB_TMP/pcap.summary" 2>&1 || fail "pcap output unreadable: $(tail -n 2 "$LAB_TMP/pcap.summary")"
n=$(wc -l <"$LAB_TMP/xdp.summary")
assert_int "$n" -ge 105 "events seen by the XDP agent (101 scanned ports, 4 client connections, 1 scan)"
diff -u "$LAB_TMP/pcap.summary" "$LAB_TMP/xdp.summary" >"$LAB_TMP/diff" ||
    fail "pcap and xdp events differ: $(head -c 600 "$LAB_TMP/diff")"
assert_eq "$(events count "$LAB_TMP/xdp.out" event=port_scan src="$attacker")" 1 "port_scan events"
log "pcap and xdp agents reported the same $n events"
