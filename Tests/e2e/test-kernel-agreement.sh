#!/usr/bin/env bash
# e2e-timeout: 240
# Issue 12: one rule, two implementations, the same events. The same scripted traffic (forged SYNs, IPv4 and IPv6,
# sent by tools/syn_script.py) goes to `run --source xdp --block xdp` with the rule enforced in the XDP program, then
# with it in user space only (--no-kernel-enforcement), and a capture of the second run is replayed. The traffic
# walks the rule's edges: a scanner crossing it (and sending more once blocked), retransmissions that reach a port
# again, a window that slides past old ports, a fourth port just inside the window, an IPv6 scanner rotating its
# address inside its /64, an allowlisted scanner, and one spreading its ports over two of the victim's addresses
# (a scan only with --destination-unit host; all of it runs with each unit). Every port_scan, blocked, not_blocked
# and new_connection event must be the same in both runs (apart from times; the replay has no blocks), and each
# port_scan's time is its crossing SYN's. Usage: BINARY
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-xdp.sh"
lab_require_root
lab_require_cmds tcpdump python3
bin=$(e2e_binary "$@")

lab_up
xdp_init

victim=$LAB_VICTIM_IP4 victim6=$LAB_VICTIM_IP6 second=203.0.113.50
lab_run ip -n "$LAB_NS_VICTIM" addr add "$second/24" dev "$LAB_IF_VICTIM" # before the agents start: theirs too
script=$LAB_TMP/traffic.syn
{
    echo "# A: crosses the rule at its 4th port, then two more SYNs once its block is in force"
    for port in 1001 1002 1003 1004; do echo "syn 198.51.100.101 $victim 41001 $port"; echo "wait 10"; done
    echo "wait 300"
    echo "syn 198.51.100.101 $victim 41002 1005"; echo "syn 198.51.100.101 $victim 41003 1006"
    echo "# B: three ports, then retransmissions and a new connection to a port it already reached: no scan"
    for port in 2001 2002 2003; do echo "syn 198.51.100.102 $victim 42001 $port"; done
    echo "wait 200"
    echo "syn 198.51.100.102 $victim 42001 2001"; echo "syn 198.51.100.102 $victim 42001 2003"
    echo "syn 198.51.100.102 $victim 42002 2001"
    echo "# C: three ports, then the window slides past them before its 4th and 5th: no scan"
    for port in 3001 3002 3003; do echo "syn 198.51.100.103 $victim 43001 $port"; done
    echo "# D: three ports, its 4th one second later, inside the 2-second window: a scan"
    for port in 4001 4002 4003; do echo "syn 198.51.100.104 $victim 44001 $port"; done
    echo "# E: an IPv6 scanner taking a new address of its /64 for every port: one scan, blocked as the /64"
    for i in 1 2 3 4; do echo "syn 2001:db8:bad::$i $victim6 4500$i 500$i"; echo "wait 10"; done
    echo "# F: allowlisted: reported, never blocked, its SYNs still reach the host"
    for port in 6001 6002 6003 6004 6005; do echo "syn 198.51.100.106 $victim 46001 $port"; echo "wait 10"; done
    echo "# G: two ports on each of two of the victim's addresses: a scan only when the host counts as one"
    for port in 7001 7002; do echo "syn 198.51.100.107 $victim 47001 $port"; done
    for port in 7003 7004; do echo "syn 198.51.100.107 $second 47001 $port"; done
    echo "wait 1000"
    echo "syn 198.51.100.104 $victim 44001 4004"
    echo "wait 1300"
    echo "syn 198.51.100.103 $victim 43001 3004"; echo "syn 198.51.100.103 $victim 43001 3005"
    echo "syn 198.51.100.106 $victim 46001 6006"
} >"$script"

# One run of the script against a fresh agent (fresh pins: blocks of the previous run must not drop this one's).
run_once() { # NAME AGENT-ARGS...
    local name=$1
    shift
    xdp_agent_start "$name" "$bin" --block xdp --scan-ports 3 --scan-window 2 --block-ttl 600 \
        --allow 198.51.100.106 "$@"
    local agent=$XDP_AGENT
    lab_exec attacker 30 python3 "$E2E_TOOLS/syn_script.py" "$script" >"$LAB_TMP/$name.sent" 2>&1 \
        || fail "sending the script failed: $(cat "$LAB_TMP/$name.sent")"
    sleep 0.5 # a caught-up ring-buffer reader is woken at once; this is margin
    xdp_agent_stop "$agent" "$name"
    "$bin" blocklist flush --pin-dir "$XDP_PINS" >/dev/null
    events check "$LAB_TMP/$name.out" >/dev/null
}

for unit in address host; do
    run_once "kernel-$unit" --destination-unit "$unit"
    lab_spawn victim "tcpdump-$unit" tcpdump -i "$LAB_IF_VICTIM" -U -n -w "$LAB_TMP/user-$unit.pcap" tcp
    capture=$LAB_LAST_PID
    sleep 1
    run_once "user-$unit" --destination-unit "$unit" --no-kernel-enforcement
    sleep 0.5
    lab_stop "$capture" INT 5
    "$bin" replay "$LAB_TMP/user-$unit.pcap" --format json --scan-ports 3 --scan-window 2 --destination-unit "$unit" \
        >"$LAB_TMP/replay-$unit.out" 2>"$LAB_TMP/replay-$unit.err" \
        || fail "replay failed: $(tail -n 3 "$LAB_TMP/replay-$unit.err")"
done

# The events without their times, one per line, sorted; and a check that each port_scan's time is the time of a
# new_connection from its source (the SYN that crossed the rule).
python3 - "$LAB_TMP" address host <<'EOF' || fail "the runs disagree (see above)"
import json, sys
tmp = sys.argv[1]
def load(name, kinds):
    rows, times = [], {}
    for line in open(f"{tmp}/{name}.out"):
        e = json.loads(line)
        if e["event"] == "new_connection":
            times.setdefault(e["src"], set()).add(e["time"])
        if e["event"] not in kinds:
            continue
        rows.append(json.dumps({k: v for k, v in e.items() if k not in ("time", "expires")}, sort_keys=True))
    for line in open(f"{tmp}/{name}.out"):
        e = json.loads(line)
        if e["event"] == "port_scan" and e["time"] not in times.get(e["src"], ()):
            sys.exit(f"{name}: the port_scan of {e['src']} is not at the time of one of its SYNs: {e['time']}")
    return sorted(rows)
every = {"port_scan", "blocked", "not_blocked", "new_connection"}
failed = False
for unit in sys.argv[2:]:
    kernel, user = load(f"kernel-{unit}", every), load(f"user-{unit}", every)
    replay = load(f"replay-{unit}", {"port_scan", "new_connection"})
    user_without_blocks = [r for r in user if json.loads(r)["event"] in ("port_scan", "new_connection")]
    for name, theirs, ours in (("kernel vs user space", kernel, user), ("replay vs user space", replay, user_without_blocks)):
        if theirs != ours:
            failed = True
            print(f"--destination-unit {unit}, {name}: differ")
            for row in sorted(set(theirs) ^ set(ours)):
                print(("  only first:  " if row in theirs else "  only second: ") + row)
    scans = [json.loads(r) for r in kernel if json.loads(r)["event"] == "port_scan"]
    print(f"--destination-unit {unit}: {len(kernel)} events agree ({len(scans)} port scans: "
          + "; ".join(f"{s['src']} {','.join(map(str, s['ports']))}" for s in scans) + ")", file=sys.stderr)
sys.exit(1 if failed else 0)
EOF

# The expected decisions, so that two runs agreeing on a wrong answer still fail.
for name in kernel-address user-address kernel-host user-host; do
    out=$LAB_TMP/$name.out
    spread=$([[ $name == *-host ]] && echo 198.51.100.107 || true)
    assert_eq "$(events list "$out" src event=port_scan | sort | tr '\n' ' ')" \
        "198.51.100.101 198.51.100.104 198.51.100.106 ${spread:+$spread }2001:db8:bad::4 " "sources reported as scanning ($name)"
    assert_eq "$(events list "$out" ports event=port_scan src=198.51.100.104)" "4001,4002,4003,4004" "D's ports ($name)"
    assert_eq "$(events list "$out" src event=blocked | sort | tr '\n' ' ')" \
        "198.51.100.101/32 198.51.100.104/32 ${spread:+$spread/32 }2001:db8:bad::/64 " "blocked prefixes ($name)"
    assert_eq "$(events list "$out" reason event=not_blocked src=198.51.100.106)" "allowlisted: configured 198.51.100.106" "F's refusal ($name)"
    assert_eq "$(events count "$out" event=new_connection src=198.51.100.101)" 4 "A's SYNs seen (none once blocked) ($name)"
    assert_eq "$(events count "$out" event=new_connection src=198.51.100.102)" 4 "B's new connections ($name)"
    assert_eq "$(events count "$out" event=new_connection src=198.51.100.106)" 6 "F's SYNs, never dropped ($name)"
    if [[ -n $spread ]]; then
        assert_eq "$(events list "$out" ports event=port_scan src="$spread")" "7001,7002,7003,7004" "G's ports ($name)"
        assert_eq "$(events list "$out" dst event=port_scan src="$spread")" "$second" "G's scan names its last destination ($name)"
    fi
done
log "kernel and user-space enforcement agree on every event of the scripted traffic, with either destination unit, and the replay with them"
