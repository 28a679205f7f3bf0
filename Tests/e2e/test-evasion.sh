#!/usr/bin/env bash
# e2e-timeout: 240
# Issue 14: scans that used to slip past the rule, with real scanners in the lab.
#   1. `nmap -sS -f` (the TCP header in 8-byte IP fragments, so the flags are not in the first) against
#      `run --source pcap --block nftables`: the host reassembles and answers, so the agent does too: the scan is
#      reported and its source blocked.
#   2. The same against `run --source xdp --block xdp`: the program drops the fragments (RFC 1858), so the scanner
#      learns no port at all, and counts them in its pinned ct_guard_stats map.
#   3. An IPv6 scanner taking a new address of its /64 for every 3 ports, against pcap + nftables: counted as its
#      /64 (the unit blocked), reported once and blocked as the /64.
#   4. SYNs behind 7 and 20 IPv6 destination-options headers (past the 6 the XDP program follows), which Linux
#      answers: against pcap they are reported; against XDP they are dropped (never answered) and counted.
# Usage: BINARY
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-xdp.sh"
lab_require_root
lab_require_cmds nmap tcpdump python3 bpftool nft
bin=$(e2e_binary "$@")

lab_up
xdp_init
lab_listen victim 22 80 443

nmap_fragmented() { # NAME
    lab_exec attacker 90 nmap -n -Pn -sS -f -T4 -p 1-200 --max-retries 0 --max-rtt-timeout 100ms --host-timeout 40s \
        "$LAB_VICTIM_IP4" >"$LAB_TMP/$1.nmap" 2>&1 || true
    grep -q '1 host up' "$LAB_TMP/$1.nmap" || fail "nmap -f did not reach the victim: $(tail -n 5 "$LAB_TMP/$1.nmap")"
}

# 1. pcap + nftables.
lab_spawn victim pcap-agent "$bin" run --interface "$LAB_IF_VICTIM" --source pcap --block nftables --format json \
    --metrics-address none
agent=$LAB_LAST_PID
lab_register_nft_table inet conntrackr "$LAB_NS_VICTIM"
lab_wait_capture_started pcap-agent "$agent" 15
out=$LAB_TMP/pcap-agent.out
leak_capture_start nmap-f-pcap
nmap_fragmented nmap-f-pcap
learned=$(leak_capture_ports)
log "nmap -f against pcap + nftables: $learned ports answered"
wait_for_line "$out" '"event" *: *"blocked"' 10 || fail "no blocked event for nmap -f: $(head -c 400 "$out")"
assert_eq "$(events count "$out" event=port_scan src="$LAB_ATTACKER_IP4")" 1 "port_scan events for nmap -f (pcap)"
assert_eq "$(events count "$out" event=blocked src="$LAB_ATTACKER_IP4/32" reason=port_scan)" 1 \
    "blocked events for nmap -f (pcap)"
assert_int "$(events count "$out" event=new_connection src="$LAB_ATTACKER_IP4")" -ge 4 \
    "fragmented SYNs reported as new connections"
lab_connect client "$LAB_VICTIM_IP4" 22 80

# 3. A scanner rotating inside 2001:db8:bad::/64 (on the attacker's link; the victim has an on-link route to it).
for i in 1 2 3 4; do
    lab_run ip -n "$LAB_NS_ATTACKER" addr add "2001:db8:bad::$i/64" dev "$LAB_IF_ATTACKER" nodad
done
lab_run ip -n "$LAB_NS_VICTIM" -6 route add 2001:db8:bad::/64 dev "$LAB_IF_VICTIM"
lab_exec attacker 60 python3 - "$LAB_VICTIM_IP6" <<'EOF' >"$LAB_TMP/rotate.out" 2>&1 || fail "rotating scanner: $(cat "$LAB_TMP/rotate.out")"
import socket, sys
victim = sys.argv[1]
port = 1000
for address in range(1, 5):  # a new address of the /64 for every 3 ports: 12 ports in all
    for _ in range(3):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.settimeout(0.5)
        sock.bind((f"2001:db8:bad::{address}", 0))
        try:
            sock.connect((victim, port))
        except OSError:
            pass  # refused (no listener), or no answer once blocked
        sock.close()
        port += 1
EOF
wait_for 10 grep -q '"2001:db8:bad::/64"' "$out" || fail "the rotating scanner was not blocked: $(tail -n 5 "$out")"
assert_eq "$(events count "$out" event=port_scan dst="$LAB_VICTIM_IP6")" 1 "port_scan events for the rotating scanner"
assert_eq "$(events count "$out" event=blocked src=2001:db8:bad::/64 reason=port_scan)" 1 \
    "blocked events for the rotating scanner's /64"
lab_connect client "$LAB_VICTIM_IP6" 443

# 4. Long IPv6 header chains (the attacker's own address, so the victim's answers reach its tcpdump).
chains=$LAB_TMP/chains.syn
printf 'syn %s %s 45007 %s chain=%s\n' "$LAB_ATTACKER_IP6" "$LAB_VICTIM_IP6" 7007 7 "$LAB_ATTACKER_IP6" "$LAB_VICTIM_IP6" \
    7020 20 >"$chains"
send_chains() { lab_exec attacker 10 python3 "$E2E_TOOLS/syn_script.py" "$chains" >/dev/null || fail "sending chains failed"; }
leak_capture_start chains-pcap
send_chains
assert_eq "$(leak_capture_ports)" 2 "SYNs behind 7 and 20 extension headers the host answered"
wait_for_line "$out" '"dst_port" *: *7020' 5 || fail "the SYN behind 20 headers was not reported"
for port in 7007 7020; do
    assert_eq "$(events count "$out" event=new_connection src="$LAB_ATTACKER_IP6" dst_port="$port")" 1 \
        "the SYN to $port behind a long chain reported (pcap)"
done
lab_stop "$agent" INT 5
assert_eq "$LAB_EXIT_STATUS" 0 "pcap agent exit status (stderr: $(tail -n 3 "$LAB_TMP/pcap-agent.err"))"

# 2. XDP: the fragments never reach the host.
xdp_agent_start xdp-agent "$bin" --block xdp --block-ttl 600
agent=$XDP_AGENT
leak_capture_start nmap-f-xdp
nmap_fragmented nmap-f-xdp
learned=$(leak_capture_ports)
log "nmap -f against xdp + xdp: $learned ports answered"
assert_eq "$learned" 0 "ports nmap -f learned against XDP"
dropped=$(bpftool -j map dump pinned "$XDP_PINS/ct_guard_stats" | python3 -c '
import json, sys
total = 0
for entry in json.load(sys.stdin):
    entry = entry.get("formatted", entry)  # with BTF, bpftool also prints the value by field
    for cpu in entry.get("values", []):
        value = cpu["value"]
        if isinstance(value, dict):
            total += value["tiny_fragments"]
        else:  # raw bytes, little-endian: the first u64 is tiny_fragments
            total += int.from_bytes(bytes(int(b, 16) for b in value[:8]), "little")
print(total)')
log "tiny fragments dropped: $dropped"
# nmap -f sends each SYN as three fragments, the first two of which split the header's first 16 bytes.
assert_int "$dropped" -ge 200 "tiny fragments dropped by the XDP program"
lab_connect client "$LAB_VICTIM_IP4" 22 80
leak_capture_start chains-xdp
send_chains
assert_eq "$(leak_capture_ports)" 0 "SYNs behind long chains the host answered under XDP"
long_chains=$(bpftool -j map dump pinned "$XDP_PINS/ct_guard_stats" | python3 -c '
import json, sys
total = 0
for entry in json.load(sys.stdin):
    entry = entry.get("formatted", entry)
    for cpu in entry.get("values", []):
        value = cpu["value"]
        if isinstance(value, dict):
            total += value["long_header_chains"]
        else:  # raw bytes, little-endian: the second u64 is long_header_chains
            total += int.from_bytes(bytes(int(b, 16) for b in value[8:16]), "little")
print(total)')
assert_eq "$long_chains" 2 "long header chains dropped by the XDP program"
xdp_agent_stop "$agent" xdp-agent
log "evasion: nmap -f reported and blocked (pcap) or learned nothing (XDP); a scanner rotating in its /64 was blocked as the /64; SYNs behind long IPv6 chains reported (pcap) or dropped and counted (XDP)"
