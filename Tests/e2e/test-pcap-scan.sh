#!/usr/bin/env bash
# e2e-timeout: 120
# Issue 2's end-to-end test: `conntrackr run --source pcap` watches the victim's interface while a real
# `nmap -sS` comes from the attacker and a benign client opens connections to exactly 3 listening ports.
# Expected: one port_scan event for attacker -> victim with its ports ascending, every probed port seen as a
# new_connection, the client's 3 connections as new_connection events, and no port_scan for the client.
# E2E_FAMILY=6 runs the same over IPv6 (test-pcap-scan-v6.sh). Usage: test-pcap-scan.sh BINARY
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_require_root
lab_require_cmds nmap python3
bin=$(e2e_binary "$@")

family=${E2E_FAMILY:-4}
case $family in
    4) victim=$LAB_VICTIM_IP4 attacker=$LAB_ATTACKER_IP4 client=$LAB_CLIENT_IP4 nmap_family=() ;;
    6) victim=$LAB_VICTIM_IP6 attacker=$LAB_ATTACKER_IP6 client=$LAB_CLIENT_IP6 nmap_family=(-6) ;;
    *) fail "E2E_FAMILY must be 4 or 6" ;;
esac
first_port=20 last_port=120
client_ports=(22 80 443) # 22 and 80 are also inside nmap's range, so nmap finds them open

lab_up
lab_listen victim "${client_ports[@]}"
started=$(date +%s.%N)

lab_spawn victim agent "$bin" run --interface "$LAB_IF_VICTIM" --source pcap --format json
agent=$LAB_LAST_PID
lab_wait_capture_started agent "$agent" 15
out=$LAB_TMP/agent.out

# The scan and the client's connections run at the same time, as they would on a real host.
lab_spawn attacker nmap nmap "${nmap_family[@]}" -n -Pn -sS -p "$first_port-$last_port" --max-retries 1 -T4 \
    --host-timeout 60s "$victim"
scanner=$LAB_LAST_PID
lab_connect client "$victim" "${client_ports[@]}"
lab_wait_exit "$scanner" 90 || fail "nmap did not finish within 90 s"
assert_eq "$LAB_EXIT_STATUS" 0 "nmap exit status ($(tail -n 3 "$LAB_TMP/nmap.err"))"
grep -q '1 host up' "$LAB_TMP/nmap.out" || fail "nmap did not reach the victim: $(tail -n 5 "$LAB_TMP/nmap.out")"

# Events must reach stdout while the agent runs (a live monitor cannot hold them until exit).
wait_for_line "$out" '"event" *: *"port_scan"' 10 ||
    fail "no port_scan event on stdout within 10 s of the scan; stdout so far: $(head -c 300 "$out")"
for _ in $(seq 50); do
    [[ $(events count "$out" event=new_connection src="$client") -ge ${#client_ports[@]} ]] && break
    sleep 0.1
done

lab_stop "$agent" INT 5
assert_eq "$LAB_STOP_TIMELY" 1 "agent stopped within 5 s of SIGINT"
assert_eq "$LAB_EXIT_STATUS" 0 "agent exit status after SIGINT (stderr: $(tail -n 3 "$LAB_TMP/agent.err"))"
finished=$(date +%s.%N)

# Every line is one well-formed event, timed within this run.
n=$(events check "$out" --since "${started%.*}" --until "$((${finished%.*} + 1))" 2>&1) || fail "malformed output: $n"
log "agent printed $n events"

# The scan: reported exactly once for attacker -> victim, ports ascending, distinct, from the scanned range,
# more than the threshold (3).
assert_eq "$(events count "$out" event=port_scan src="$attacker" dst="$victim")" 1 "port_scan events attacker -> victim"
ports=$(events list "$out" ports event=port_scan src="$attacker" dst="$victim")
assert_ascending "$ports" "port_scan ports"
IFS=, read -r -a port_list <<<"$ports"
assert_int "${#port_list[@]}" -ge 4 "ports listed in the port_scan event"
for p in "${port_list[@]}"; do
    ((p >= first_port && p <= last_port)) || fail "port_scan lists port $p, outside the scanned $first_port-$last_port"
done

# Nothing else is a scan: not the client, not anyone.
assert_eq "$(events count "$out" event=port_scan src="$client")" 0 "port_scan events for the client"
assert_eq "$(events count "$out" event=port_scan)" 1 "port_scan events in total"

# The client's 3 connections, each once, to the 3 ports it used.
assert_eq "$(events count "$out" event=new_connection src="$client" dst="$victim")" 3 "client new_connection events"
assert_eq "$(events list "$out" dst_port event=new_connection src="$client" | sort -n | tr '\n' ' ')" \
    "$(printf '%s ' "${client_ports[@]}")" "client destination ports"

# Every port nmap probed arrived as a connection attempt: nothing missed, nothing invented.
got=$(events list "$out" dst_port event=new_connection src="$attacker" dst="$victim" | sort -n | uniq | tr '\n' ' ')
assert_eq "$got" "$(seq -s ' ' "$first_port" "$last_port") " "ports of the attacker's new_connection events"

# Only the lab's hosts appear, and only the victim as destination (inbound only).
assert_eq "$(events count "$out" dst="$victim")" "$n" "events whose destination is the victim"
log "IPv$family: scan reported on ports $ports; client's 3 connections reported; nothing else"
