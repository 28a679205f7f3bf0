#!/usr/bin/env bash
# e2e-timeout: 240
# Issue 13: a fleet that cannot be turned against itself. Two agents (the victim with XDP, victim2 with nftables)
# share blocks through a real etcd in the lab's switch namespace, and a poisoning writer beside them puts what the
# issue found into the store: a /1, a permanent record, expires_ns at Int64.max, non-canonical keys, a 1 MiB
# value, a burst of thousands of records and the etcd server's own address. Both agents stay up (the XDP one past
# the clamped expiry of the Int64.max record, whose unblocked event once trapped), apply none of the wide,
# malformed or infrastructure records, clamp the expiry of what they apply, keep to the fleet budget, and a client
# inside the poisoned /1 still connects. Then, with --fleet-min-reporters 2, a scan seen by one host is not
# applied on the other, and is once a second host reports it. Usage: test-fleet-poison.sh BINARY
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-xdp.sh"
lab_require_root
lab_require_cmds nmap etcd etcdctl python3 nft
bin=$(e2e_binary "$@")
lab_up --victim2
xdp_init
lab_listen victim 443
lab_listen victim2 443

etcd_url="http://$LAB_SWITCH_IP4:2379"
lab_spawn switch etcd etcd --name lab --data-dir "$LAB_TMP/etcd" \
    --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster lab=http://127.0.0.1:2380
wait_for 20 lab_ns_exec_quiet "$LAB_NS_SWITCH" etcdctl --endpoints "$etcd_url" endpoint health ||
    fail "etcd did not start: $(tail -n 5 "$LAB_TMP/etcd.err")"
ctl() { lab_exec switch 20 etcdctl --endpoints "$etcd_url" "$@"; }

ttl=20
budget=40
fleet_flags=(--block-ttl "$ttl" --fleet-etcd "$etcd_url" --fleet-max-blocks-per-minute "$budget")
start_agents() { # EXTRA-FLEET-ARGS...
    xdp_agent_start agent-victim "$bin" --block xdp "${fleet_flags[@]}" --fleet-host-name victim "$@"
    pid_a=$XDP_AGENT
    lab_spawn victim2 agent-victim2 "$bin" run --interface "$LAB_IF_VICTIM2" --format json --metrics-address none \
        --block nftables "${fleet_flags[@]}" --fleet-host-name victim2 "$@"
    pid_b=$LAB_LAST_PID
    lab_wait_capture_started agent-victim2 "$pid_b"
    for name in agent-victim agent-victim2; do
        wait_for_line "$LAB_TMP/$name.err" 'fleet connected' 15 ||
            fail "$name did not connect to etcd: $(tail -n 3 "$LAB_TMP/$name.err")"
    done
}
stop_agents() {
    xdp_agent_stop "$pid_a" agent-victim
    lab_stop "$pid_b" INT 5
    assert_eq "$LAB_EXIT_STATUS" 0 "exit status of the agent on victim2"
}
a_out=$LAB_TMP/agent-victim.out
b_out=$LAB_TMP/agent-victim2.out
start_agents

# The poisoning writer, in the switch namespace.
now_ns=$(date +%s%N)
record() { # PREFIX HOST [EXTRA-JSON]
    printf '{"prefix":"%s","host":"%s","reason":"port_scan","since_ns":%s%s}' "$1" "$2" "$now_ns" "${3:-}"
}
ctl put /conntrackr/blocks/evil/128.0.0.0_1 "$(record 128.0.0.0/1 evil ',"expires_ns":'$((now_ns + 600000000000)))" >/dev/null
ctl put /conntrackr/blocks/evil/198.51.100.200_32 "$(record 198.51.100.200/32 evil)" >/dev/null # permanent
ctl put /conntrackr/blocks/evil/198.51.100.201_32 \
    "$(record 198.51.100.201/32 evil ',"expires_ns":9223372036854775807')" >/dev/null
ctl put /conntrackr/blocks/evil/128.0.0.1_1 "$(record 128.0.0.0/1 evil)" >/dev/null           # an alias of the /1
ctl put /conntrackr/blocks/evil/198.51.100.202 "$(record 198.51.100.202/32 evil)" >/dev/null  # no length
ctl put /conntrackr/blocks/evil/198.51.100.20_32 "$(record 198.51.100.21/32 evil)" >/dev/null # another prefix's key
ctl put /conntrackr/blocks/198.51.100.203_32 "$(record 198.51.100.203/32 evil)" >/dev/null    # no host
python3 -c 'import sys; sys.stdout.write("x" * (1 << 20))' >"$LAB_TMP/big"
ctl put /conntrackr/blocks/evil/198.51.100.204_32 <"$LAB_TMP/big" >/dev/null || fail "could not write the 1 MiB value"
ctl put /conntrackr/blocks/evil/${LAB_SWITCH_IP4}_32 "$(record "$LAB_SWITCH_IP4/32" evil)" >/dev/null # etcd itself
# A burst of 3000 records (2001:db8:ff00::/40 /64s: inside the lab's range, no host there), through etcd's HTTP
# gateway on one connection.
burst=3000
lab_exec switch 120 python3 - "$LAB_SWITCH_IP4" "$burst" "$now_ns" <<'PY' || fail "the burst writer failed"
import base64, http.client, ipaddress, json, sys
host, count, now = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
connection = http.client.HTTPConnection(host, 2379, timeout=10)
b64 = lambda text: base64.b64encode(text.encode()).decode()
for index in range(count):
    prefix = str(ipaddress.ip_network("2001:db8:ff%02x:%x::/64" % (index // 4096, index % 4096 + 1)))
    key = "/conntrackr/blocks/storm/" + prefix.replace("/", "_")
    value = json.dumps({"prefix": prefix, "host": "storm", "reason": "port_scan", "since_ns": now,
                        "expires_ns": now + 600_000_000_000})
    connection.request("POST", "/v3/kv/put", json.dumps({"key": b64(key), "value": b64(value)}),
                       {"Content-Type": "application/json"})
    answer = connection.getresponse()
    answer.read()
    if answer.status != 200:
        sys.exit("put %d: HTTP %d" % (index, answer.status))
PY
log "poison written: wide, permanent, Int64.max, aliases, 1 MiB, $burst burst records, etcd's own address"

# Both agents took in every change (the burst's last record is in the store), and stay up.
sleep 3
for name in agent-victim agent-victim2; do
    pid_var=pid_a
    [[ $name == agent-victim2 ]] && pid_var=pid_b
    lab_alive "${!pid_var}" || fail "$name died: $(tail -n 5 "$LAB_TMP/$name.err")"
    grep -q 'fleet record refused' "$LAB_TMP/$name.err" || fail "$name logged no refusal"
    # Refusals are logged at a bounded rate: one line per reason per 10 s, not one per record.
    lines=$(grep -c 'fleet record refused' "$LAB_TMP/$name.err")
    assert_int "$lines" -le 20 "$name: refusal log lines for $burst+ refused records"
done

check_applied() { # OUT
    python3 - "$1" "$ttl" "$budget" "$LAB_SWITCH_IP4" <<'PY'
import datetime, ipaddress, json, sys
path, ttl, budget, etcd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
parse = lambda text: datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
fleet = [e for e in map(json.loads, open(path)) if e["event"] == "blocked" and e.get("origin") == "fleet"]
prefixes = {e["src"] for e in fleet}
wide = [p for p in prefixes if ipaddress.ip_network(p).prefixlen < (32 if ":" not in p else 64)]
bad = {"198.51.100.202/32", "198.51.100.21/32", "198.51.100.203/32", "198.51.100.204/32", etcd + "/32"}
problems = []
if wide: problems.append("wide prefixes applied: %s" % wide)
if prefixes & bad: problems.append("malformed or infrastructure records applied: %s" % (prefixes & bad))
for wanted in ("198.51.100.200/32", "198.51.100.201/32"):
    if wanted not in prefixes: problems.append("%s (clamped) not applied" % wanted)
for e in fleet:
    if e.get("expires") is None or parse(e["expires"]) > parse(e["time"]) + datetime.timedelta(seconds=ttl + 1):
        problems.append("expiry not clamped: %s" % e)
        break
if len(fleet) > budget: problems.append("%d fleet blocks applied in the first minute, budget %d" % (len(fleet), budget))
print("; ".join(problems) if problems else "ok %d fleet blocks" % len(fleet))
sys.exit(1 if problems else 0)
PY
}
for out in "$a_out" "$b_out"; do
    result=$(check_applied "$out") || fail "$(basename "$out"): $result"
    log "$(basename "$out"): $result"
done
assert_int "$(events count "$a_out" event=not_blocked src="$LAB_SWITCH_IP4")" -ge 1 "etcd's address refused on victim"

# A client inside the poisoned /1 still connects to both, and etcd is still reachable from both.
lab_connect client "$LAB_VICTIM_IP4" 443
lab_connect client "$LAB_VICTIM2_IP4" 443

# The Int64.max record's clamped expiry passes: the XDP agent lifts it, formats the event, and stays up.
wait_for_line "$a_out" '"event":"unblocked","src":"198.51.100.201/32"' $((ttl + 15)) ||
    fail "the clamped Int64.max block never left the XDP agent: $(tail -n 3 "$LAB_TMP/agent-victim.err")"
lab_alive "$pid_a" || fail "the XDP agent died at the expiry: $(tail -n 5 "$LAB_TMP/agent-victim.err")"
lab_alive "$pid_b" || fail "the nftables agent died: $(tail -n 5 "$LAB_TMP/agent-victim2.err")"
stop_agents

# K = 2, on a fresh key prefix: a scan seen by the victim alone is not applied on victim2.
: >"$a_out"
: >"$b_out"
fleet_flags+=(--fleet-prefix /k2/blocks/)
start_agents --fleet-min-reporters 2
lab_exec attacker 60 nmap -n -Pn -sS -p 20-60 --max-retries 1 "$LAB_VICTIM_IP4" >/dev/null
wait_for_line "$a_out" "\"src\":\"$LAB_ATTACKER_IP4/32\",\"reason\":\"port_scan\",\"origin\":\"local\"" 10 ||
    fail "the victim did not block the scan: $(tail -c 300 "$a_out")"
published() { ctl get /k2/blocks/victim/"$LAB_ATTACKER_IP4"_32 --print-value-only | grep -q port_scan; }
wait_for 10 published || fail "the victim did not publish its block under its own key"
sleep 2
assert_eq "$(events count "$b_out" event=blocked src="$LAB_ATTACKER_IP4/32")" 0 "blocks on victim2 after one report"
lab_connect attacker "$LAB_VICTIM2_IP4" 443
# A second host (the writer, standing for a third agent) reports the same scanner: now it is applied.
now_ns=$(date +%s%N)
ctl put /k2/blocks/victim3/"$LAB_ATTACKER_IP4"_32 \
    "$(record "$LAB_ATTACKER_IP4/32" victim3 ',"expires_ns":'$((now_ns + ttl * 1000000000)))" >/dev/null
wait_for_line "$b_out" "\"src\":\"$LAB_ATTACKER_IP4/32\",\"reason\":\"port_scan\",\"origin\":\"fleet\"" 10 ||
    fail "victim2 did not apply the block reported by two hosts: $(tail -n 3 "$LAB_TMP/agent-victim2.err")"
lab_connect attacker --timeout 2 --expect-timeout "$LAB_VICTIM2_IP4" 443
# The fleet-wide unblock deletes both reports, and both agents lift their copies.
removed=$(lab_exec victim 20 "$bin" blocklist remove --fleet-etcd "$etcd_url" --fleet-prefix /k2/blocks/ \
    "$LAB_ATTACKER_IP4") || fail "blocklist remove --fleet-etcd failed"
log "$removed"
assert_match "$removed" "victim3" "both reports deleted"
lifted() { (($(events count "$1" event=unblocked src="$LAB_ATTACKER_IP4/32" reason=removed) >= 1)); }
wait_for 5 lifted "$b_out" || fail "the fleet-wide unblock did not reach victim2"
wait_for 5 lifted "$a_out" || fail "the fleet-wide unblock did not lift the victim's own block"
lab_connect attacker "$LAB_VICTIM2_IP4" 443
stop_agents
log "fleet poison: wide, malformed, aliased, oversized and infrastructure records refused on both agents; clamped" \
    "expiries; budget of $budget kept against $burst records; client in the /1 connected; K=2 held"
