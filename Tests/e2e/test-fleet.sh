#!/usr/bin/env bash
# e2e-timeout: 170
# Issue 6: two victims, each running `conntrackr run --block nftables --fleet-etcd` against a real etcd in the lab.
# A scan of victim A gets the scanner blocked on victim B, which never saw it, within a second; the block leaves
# both when its TTL ends; with etcd stopped, A keeps capturing and blocking, and a block made meanwhile reaches B
# once etcd is back. Usage: test-fleet.sh BINARY
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_require_root
lab_require_cmds nmap etcd python3 nft
bin=$(e2e_binary "$@")
lab_up --victim2
lab_listen victim 443
lab_listen victim2 443

etcd_url="http://$LAB_SWITCH_IP4:2379"
start_etcd() {
    lab_spawn switch etcd etcd --name lab --data-dir "$LAB_TMP/etcd" \
        --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
        --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
        --initial-cluster lab=http://127.0.0.1:2380
    etcd_pid=$LAB_LAST_PID
    wait_for 20 lab_ns_exec_quiet "$LAB_NS_SWITCH" etcdctl --endpoints "$etcd_url" endpoint health ||
        fail "etcd did not start: $(tail -n 5 "$LAB_TMP/etcd.err")"
}
start_etcd

ttl=12
for v in victim victim2; do
    ifname=$LAB_IF_VICTIM
    [[ $v == victim2 ]] && ifname=$LAB_IF_VICTIM2
    lab_spawn "$v" "agent-$v" "$bin" run --interface "$ifname" --format json --metrics-address none \
        --block nftables --block-ttl "$ttl" --fleet-etcd "$etcd_url"
    declare "pid_$v=$LAB_LAST_PID"
    lab_wait_capture_started "agent-$v" "$LAB_LAST_PID"
done
a_out=$LAB_TMP/agent-victim.out
b_out=$LAB_TMP/agent-victim2.out
wait_for_line "$LAB_TMP/agent-victim2.err" 'fleet connected' 15 || fail "B did not connect to etcd: $(tail -n 3 "$LAB_TMP/agent-victim2.err")"

# A scan of A only.
lab_exec attacker 60 nmap -n -Pn -sS -p 20-60 --max-retries 1 "$LAB_VICTIM_IP4" >/dev/null
wait_for_line "$b_out" '"event":"blocked"' 10 || fail "the scanner was not blocked on B: $(tail -c 300 "$b_out")"
assert_eq "$(events count "$b_out" event=port_scan)" 0 "B saw no scan itself"
assert_eq "$(events count "$b_out" event=blocked src="$LAB_ATTACKER_IP4/32" origin=fleet)" 1 "fleet block on B"
latency=$(python3 - "$a_out" "$b_out" <<'PY'
import json, sys
from datetime import datetime
def first(path):
    for line in open(path):
        e = json.loads(line)
        if e["event"] == "blocked":
            return datetime.strptime(e["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
print((first(sys.argv[2]) - first(sys.argv[1])).total_seconds())
PY
)
python3 -c "import sys; sys.exit(0 if $latency < 1.0 else 1)" || fail "B applied the block $latency s after A"
lab_connect attacker --timeout 2 --expect-timeout "$LAB_VICTIM2_IP4" 443
lab_connect client "$LAB_VICTIM2_IP4" 443

# The TTL ends: the block leaves both hosts, and the attacker gets through to B again.
wait_for_line "$b_out" '"event":"unblocked"' $((ttl + 15)) || fail "the block never left B"
wait_for_line "$a_out" '"event":"unblocked"' 10 || fail "the block never left A"
lab_connect attacker "$LAB_VICTIM2_IP4" 443

# etcd goes away: A keeps capturing and blocks the client's scan locally; B learns it after etcd returns.
lab_stop "$etcd_pid" TERM 10
lab_exec client 60 nmap -n -Pn -sS -p 100-140 --max-retries 1 "$LAB_VICTIM_IP4" >/dev/null
wait_for_line "$a_out" "\"event\":\"blocked\",\"src\":\"$LAB_CLIENT_IP4/32\"" 10 ||
    fail "A did not block the client while etcd was down: $(tail -c 300 "$a_out")"
assert_eq "$(events count "$b_out" event=blocked src="$LAB_CLIENT_IP4/32")" 0 "B cannot know yet"
start_etcd
wait_for_line "$b_out" "\"event\":\"blocked\",\"src\":\"$LAB_CLIENT_IP4/32\"" 30 ||
    fail "the block made while etcd was down did not reach B: $(tail -n 3 "$LAB_TMP/agent-victim2.err")"

for v in victim victim2; do
    pid_var=pid_$v
    lab_stop "${!pid_var}" INT 5
    assert_eq "$LAB_EXIT_STATUS" 0 "exit status of the agent on $v"
done
log "fleet: block shared in $latency s, lifted on both at its TTL, queued while etcd was down and delivered after"
