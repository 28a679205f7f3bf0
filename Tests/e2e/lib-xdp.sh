# shellcheck shell=bash
# Tests/e2e/lib-xdp.sh: helpers of the XDP end-to-end tests. Source it after lib.sh and call xdp_init after lab_up.

# Makes sure bpffs is mounted and picks a pin directory of this run's own for the agent's maps (XDP_PINS), removed
# at cleanup, so the tests never touch the default /sys/fs/bpf/conntrackr.
xdp_init() {
    if ! mountpoint -q /sys/fs/bpf; then
        mount -t bpf bpf /sys/fs/bpf 2>/dev/null || skip "bpffs is not mounted at /sys/fs/bpf and cannot be"
    fi
    XDP_PINS=/sys/fs/bpf/conntrackr-e2e-$LAB_SUFFIX
    [[ -e "$XDP_PINS" ]] && fail "$XDP_PINS already exists (a previous run with the same suffix?)"
    lab_register_pin_dir "$XDP_PINS"
}

# lab_spawn for the victim, but entering only its network namespace. `ip netns exec` also gives the command a
# mount namespace with a fresh /sys, where bpffs is not mounted, so an agent started that way could neither reuse
# nor share the pinned maps (it stops with "not on a BPF filesystem"). `timeout --foreground` passes a signal to
# the agent once; without it timeout also signals its whole process group, so the agent would see every SIGINT
# twice and take the second for an impatient user's. Sets LAB_LAST_PID.
xdp_spawn_in_victim() { # NAME COMMAND...
    local name=$1
    shift
    : >"$LAB_TMP/$name.out"
    : >"$LAB_TMP/$name.err"
    timeout --foreground -k 5 "$LAB_SPAWN_MAX" nsenter --net="/run/netns/$LAB_NS_VICTIM" -- "$@" \
        >"$LAB_TMP/$name.out" 2>"$LAB_TMP/$name.err" </dev/null &
    LAB_LAST_PID=$!
    LAB_PIDS+=("$LAB_LAST_PID")
    log "lab: started $name (pid $LAB_LAST_PID) in the victim's network namespace: $*"
}

# Starts `conntrackr run --source xdp` on the victim's interface with the run's pin directory and JSON output
# (stdout in $LAB_TMP/NAME.out), and waits until it logs "capture started". Sets XDP_AGENT to its pid. Skips the
# test when the binary says it was built without the XDP source or blocker.
xdp_agent_start() { # NAME BINARY EXTRA-ARGS...
    local name=$1 bin=$2
    shift 2
    xdp_spawn_in_victim "$name" "$bin" run --interface "$LAB_IF_VICTIM" --source xdp --pin-dir "$XDP_PINS" \
        --format json --metrics-address none "$@"
    XDP_AGENT=$LAB_LAST_PID
    lab_wait_capture_started "$name" "$XDP_AGENT" 15 \
        --skip-if 'not available in this build' "the CLI has no XDP source or blocker yet"
}

# Stops an agent with SIGINT and checks that it exited 0 within 5 s and left no XDP program on the victim.
xdp_agent_stop() { # PID NAME
    lab_stop "$1" INT 5
    assert_eq "$LAB_STOP_TIMELY" 1 "$2 stopped within 5 s of SIGINT"
    assert_eq "$LAB_EXIT_STATUS" 0 "$2 exit status after SIGINT (stderr: $(tail -n 3 "$LAB_TMP/$2.err"))"
    assert_eq "$(lab_xdp_ifaces "$LAB_NS_VICTIM" | tr '\n' ' ')" "" "interfaces with XDP left in the victim after $2"
}

# The family-dependent addresses of a test: E2E_FAMILY=4 (default) or 6.
xdp_family() {
    case ${E2E_FAMILY:-4} in
        4) victim=$LAB_VICTIM_IP4 attacker=$LAB_ATTACKER_IP4 client=$LAB_CLIENT_IP4 nmap_family=() host_bits=32 ;;
        6) victim=$LAB_VICTIM_IP6 attacker=$LAB_ATTACKER_IP6 client=$LAB_CLIENT_IP6 nmap_family=(-6) host_bits=128 ;;
        *) fail "E2E_FAMILY must be 4 or 6" ;;
    esac
}

# A real SYN scan from the attacker over ports 20-120, bounded in time; fails when nmap does not reach the victim.
xdp_nmap_scan() {
    lab_spawn attacker nmap nmap "${nmap_family[@]}" -n -Pn -sS -p 20-120 --max-retries 1 -T4 --max-rtt-timeout 100ms --host-timeout 60s \
        "$victim"
    local scanner=$LAB_LAST_PID
    lab_wait_exit "$scanner" 90 || fail "nmap did not finish within 90 s"
    assert_eq "$LAB_EXIT_STATUS" 0 "nmap exit status ($(tail -n 3 "$LAB_TMP/nmap.err"))"
    grep -q '1 host up' "$LAB_TMP/nmap.out" || fail "nmap did not reach the victim: $(tail -n 5 "$LAB_TMP/nmap.out")"
}

# What a scanner learns, counted on its own side (LAB-NOTES): tcpdump in the attacker's namespace on the victim's
# answers. Sets LEAK_PID and LEAK_FILE.
leak_capture_start() { # NAME
    LEAK_FILE=$LAB_TMP/$1.pcap
    lab_spawn attacker "tcpdump-$1" tcpdump -i "$LAB_IF_ATTACKER" -U -n -w "$LEAK_FILE" \
        "tcp and (src host $LAB_VICTIM_IP4 or src host $LAB_VICTIM_IP6)"
    LEAK_PID=$LAB_LAST_PID
    sleep 1
}

# Stops the capture and prints the number of distinct victim ports that answered (SYN-ACK or RST).
leak_capture_ports() {
    sleep 1
    kill -INT "$LEAK_PID" 2>/dev/null || true
    lab_wait_exit "$LEAK_PID" 10 || true
    tcpdump -r "$LEAK_FILE" -nn 2>/dev/null | python3 -c '
import re, sys
ports = set()
for line in sys.stdin:
    m = re.search(r" IP6? (\S+)\.(\d+) > \S+: Flags \[([^\]]*)\]", line)
    if m and ("S" in m.group(3) or "R" in m.group(3)):
        ports.add(int(m.group(2)))
print(len(ports))'
}

# One scanner of the leak measurements (LAB-NOTES), from the attacker, bounded in time; its output in
# $LAB_TMP/KIND-TAG.out. hping3: 1 SYN/ms to the next port each time, 400 SYNs; nmap: -sS -T4 over ports 1-1000;
# nmap6: the same over IPv6, from the attacker's address in the victim's own /64; masscan: its own TCP stack at
# 100k packets/s over ports 1-1000 (it needs the victim's MAC as its router's, and sends from the attacker's own
# address, whose kernel resets the victim's answers, which tcpdump still sees). Sets LEAK_SCANNER and LEAK_BITS:
# the scanner's address and the prefix length it is blocked as.
leak_scan() { # KIND TAG
    local kind=$1 out=$LAB_TMP/$1-$2.out
    LEAK_SCANNER=$LAB_ATTACKER_IP4 LEAK_BITS=32
    case $kind in
        hping3) lab_exec attacker 30 hping3 -q -S -i u1000 -p ++1 -c 400 "$LAB_VICTIM_IP4" >"$out" 2>&1 || true ;;
        nmap) lab_exec attacker 120 nmap -n -Pn -sS -T4 -p 1-1000 --max-retries 0 --max-rtt-timeout 100ms \
            --host-timeout 12s "$LAB_VICTIM_IP4" >"$out" 2>&1 || true ;;
        nmap6) lab_exec attacker 120 nmap -6 -n -Pn -sS -T4 -p 1-1000 --max-retries 0 --max-rtt-timeout 100ms \
            --host-timeout 12s "$LAB_VICTIM_IP6" >"$out" 2>&1 || true
            LEAK_SCANNER=$LAB_ATTACKER_IP6 LEAK_BITS=128 ;;
        # (Its receive thread sometimes never returns once no packet comes: the time limit ends it.)
        masscan) lab_exec attacker 12 masscan "$LAB_VICTIM_IP4" -p 1-1000 --rate 100000 --wait 2 \
            --router-mac "$LAB_VICTIM_MAC" -e "$LAB_IF_ATTACKER" --adapter-ip "$LAB_ATTACKER_IP4" >"$out" 2>&1 || true ;;
        *) fail "leak_scan: unknown scanner $kind" ;;
    esac
}
