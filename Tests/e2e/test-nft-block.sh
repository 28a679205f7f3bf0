#!/usr/bin/env bash
# e2e-timeout: 170
# Issue 3's end-to-end test for `--source pcap --block nftables`: a real `nmap -sS` from the attacker is reported
# and blocked in conntrackr's own nftables table, after which the attacker can no longer connect to a listening
# port on the victim while the client still can; a scan from an allowlisted host (the client, --allow) is reported
# with the reason it was not blocked; the block expires after its TTL (an unblocked event, and the attacker gets
# through again); on SIGINT the agent exits 0 and its table is gone.
# E2E_FAMILY=6 runs the same over IPv6 (test-nft-block-v6.sh), blocking single addresses (--ipv6-block-prefix 128)
# because the lab's hosts share one /64 with the victim. Usage: test-nft-block.sh BINARY
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_require_root
lab_require_cmds nmap nft python3
bin=$(e2e_binary "$@")

family=${E2E_FAMILY:-4}
case $family in
    4) victim=$LAB_VICTIM_IP4 attacker=$LAB_ATTACKER_IP4 client=$LAB_CLIENT_IP4 nmap_family=() set=hosts4 host=32 ;;
    6) victim=$LAB_VICTIM_IP6 attacker=$LAB_ATTACKER_IP6 client=$LAB_CLIENT_IP6 nmap_family=(-6) set=units6_128 host=128 ;;
    *) fail "E2E_FAMILY must be 4 or 6" ;;
esac
ttl=20

lab_up
lab_listen victim 22 80 443
out=$LAB_TMP/agent.out

# Before the agent: both remote hosts reach the victim.
lab_connect attacker "$victim" 80
lab_connect client "$victim" 80

lab_spawn victim agent "$bin" run --interface "$LAB_IF_VICTIM" --source pcap --block nftables \
    --block-ttl "$ttl" --ipv6-block-prefix 128 --allow "$client" --format json
agent=$LAB_LAST_PID
# Until the CLI composes the nftables blocker, say so instead of failing on an unrelated line.
lab_wait_capture_started agent "$agent" 16 \
    --skip-if 'block nftables is not available in this build' "this build's CLI does not offer --block nftables yet"
lab_exec victim 5 nft list table inet conntrackr >/dev/null || fail "no table inet conntrackr in the victim"

# The scan: reported and blocked.
lab_spawn attacker nmap nmap "${nmap_family[@]}" -n -Pn -sS -p 20-120 --max-retries 1 -T4 --host-timeout 60s "$victim"
scanner=$LAB_LAST_PID
wait_for_line "$out" '"event" *: *"blocked"' 30 ||
    fail "no blocked event within 30 s of the scan; stdout so far: $(head -c 400 "$out")"
blocked_at=$SECONDS
lab_wait_exit "$scanner" 90 || fail "nmap did not finish within 90 s"
assert_eq "$(events count "$out" event=port_scan src="$attacker" dst="$victim")" 1 "port_scan events from the attacker"
assert_eq "$(events count "$out" event=blocked src="$attacker/$host" reason=port_scan)" 1 "blocked events for the attacker"
elements=$(lab_exec victim 5 nft list set inet conntrackr "$set")
[[ "$elements" == *"$attacker"* ]] || fail "the attacker is not in set $set: $elements"

# Dropped: the attacker's SYNs get no answer, while the client is served.
lab_exec attacker 20 python3 "$E2E_TOOLS/connect.py" --timeout 3 --expect-timeout "$victim" 80 >/dev/null ||
    fail "the blocked attacker could still connect to port 80"
lab_connect client "$victim" 22 80 443

# An allowlisted scanner is reported with the reason, not blocked, and still served.
lab_exec client 60 nmap "${nmap_family[@]}" -n -Pn -sS -p 20-40 --max-retries 1 -T4 --host-timeout 30s "$victim" \
    >/dev/null || fail "nmap from the client failed"
wait_for_line "$out" "\"event\" *: *\"not_blocked\"" 10 || fail "no not_blocked event for the allowlisted client"
assert_eq "$(events count "$out" event=port_scan src="$client" dst="$victim")" 1 "port_scan events from the client"
reason=$(events list "$out" reason event=not_blocked src="$client")
assert_match "$reason" "^allowlisted: configured " "not_blocked reason for the client"
assert_eq "$(events count "$out" event=blocked src="$client/$host")" 0 "blocked events for the client"
lab_connect client "$victim" 80

# Expiry: an unblocked event, the element gone, the attacker served again.
remaining=$((ttl + 15 - (SECONDS - blocked_at)))
wait_for_line "$out" '"event" *: *"unblocked"' "$remaining" ||
    fail "no unblocked event within $((ttl + 15)) s of the block (TTL $ttl s)"
assert_eq "$(events count "$out" event=unblocked src="$attacker/$host" reason=expired)" 1 "unblocked events for the attacker"
elements=$(lab_exec victim 5 nft list set inet conntrackr "$set")
[[ "$elements" != *"$attacker"* ]] || fail "the attacker is still in set $set after expiry: $elements"
lab_connect attacker "$victim" 80

# Exit: clean status, and the table is gone.
lab_stop "$agent" INT 5
assert_eq "$LAB_STOP_TIMELY" 1 "agent stopped within 5 s of SIGINT"
assert_eq "$LAB_EXIT_STATUS" 0 "agent exit status after SIGINT (stderr: $(tail -n 3 "$LAB_TMP/agent.err"))"
tables=$(lab_exec victim 5 nft list tables)
[[ "$tables" != *"conntrackr"* ]] || fail "the agent left its table behind: $tables"
n=$(events check "$out" 2>&1) || fail "malformed output: $n"
log "IPv$family: attacker blocked, dropped, expired; allowlisted client reported and served; table removed"
