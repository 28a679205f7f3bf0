#!/usr/bin/env bash
# e2e-timeout: 120
# Issue 14: the allowlist changes in two ways after start, on SIGHUP (the allow file re-read) and when the host's
# addresses change, and neither undoes the other (one keeper applies both, AllowlistKeeper). Against
# `run --source pcap --block nftables` with an allow file: an address added to the file and a SIGHUP make forged
# scans "from" it reported but not blocked; after an address is added to the victim, a forged scan from it is
# again not blocked (the reload survived the address change), the new host address is allowlisted too, and a
# source in neither is blocked. Usage: BINARY
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_require_root
lab_require_cmds nft python3
bin=$(e2e_binary "$@")
friend=198.51.100.120 stranger=198.51.100.121 vip=203.0.113.51

lab_up
allow=$LAB_TMP/allow.txt
echo "# peers never to block" >"$allow"
chmod 644 "$allow"
lab_spawn victim agent "$bin" run --interface "$LAB_IF_VICTIM" --source pcap --block nftables --format json \
    --metrics-address none --allow-file "$allow" --scan-window 2
agent=$LAB_LAST_PID
lab_register_nft_table inet conntrackr "$LAB_NS_VICTIM"
lab_wait_capture_started agent "$agent" 15
out=$LAB_TMP/agent.out

forge() { # SOURCE FIRST-PORT: a forged scan of 4 ports of the victim
    local first=$2
    lab_exec attacker 10 python3 "$E2E_TOOLS/forge_syns.py" "$LAB_VICTIM_IP4" "$1" 1 "$first" $((first + 1)) \
        $((first + 2)) $((first + 3)) >/dev/null || fail "forging SYNs from $1 failed"
}
decisions() { # SOURCE: its not_blocked reasons and blocked prefixes so far, in order
    python3 -c '
import json, sys
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e["event"] == "not_blocked" and e["src"] == sys.argv[2]:
        print("not_blocked", e["reason"])
    elif e["event"] == "blocked" and e["src"].split("/")[0] == sys.argv[2]:
        print("blocked")' "$out" "$1" | paste -sd ';'
}

echo "$friend" >>"$allow"
kill -HUP "$(pgrep -P "$agent" | head -n 1 || echo "$agent")" 2>/dev/null || kill -HUP "$agent"
wait_for_line "$LAB_TMP/agent.err" 'allowlist reloaded' 10 || fail "no reload on SIGHUP: $(tail -n 3 "$LAB_TMP/agent.err")"
forge "$friend" 1001
wait_for 5 grep -q "\"$friend\"" "$out" || true
sleep 0.5
assert_eq "$(decisions "$friend")" "not_blocked allowlisted: configured $friend" "the friend's scan after the reload"

lab_run ip -n "$LAB_NS_VICTIM" addr add "$vip/24" dev "$LAB_IF_VICTIM"
wait_for_line "$LAB_TMP/agent.err" 'host addresses changed' 10 || fail "the new address was not followed"
sleep 2.2 # a whole window: the friend's pair may be reported again
forge "$friend" 2001
forge "$vip" 3001
forge "$stranger" 4001
sleep 1
assert_eq "$(decisions "$friend")" "not_blocked allowlisted: configured $friend;not_blocked allowlisted: configured $friend" \
    "the friend's scan after the address change (the reload stays)"
assert_eq "$(decisions "$vip")" "not_blocked allowlisted: host address $vip" "a forged scan from the new host address"
assert_eq "$(decisions "$stranger")" "blocked" "a scan from a source in neither"
elements=$(lab_exec victim 5 nft list set inet conntrackr hosts4)
[[ "$elements" == *"$stranger"* && "$elements" != *"$friend"* && "$elements" != *"$vip"* ]] ||
    fail "the nftables set is not what the events say: $elements"
lab_stop "$agent" INT 5
assert_eq "$LAB_EXIT_STATUS" 0 "agent exit status (stderr: $(tail -n 3 "$LAB_TMP/agent.err"))"
log "allowlist: a SIGHUP reload and an address change both hold; the stranger was blocked"
