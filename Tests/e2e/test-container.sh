#!/usr/bin/env bash
# e2e-timeout: 240
# Issue 5: the container image, run as the README says (host networking, the host's bpffs, named capabilities,
# no --privileged, no SYS_ADMIN), reports an nmap scan aimed at this host and, in a blocking mode, blocks the
# scanner; stopping it leaves no XDP program and no nftables table behind (only the pinned blocklist, which a
# restarted container enforces again at once).
#
# The host side is a veth in the root namespace (the container's "host network") with a lab address; its peer
# is in the attacker's namespace. Both addresses are /32s with peer routes, so nothing else in the root namespace
# is routed into the lab and the attacker can reach only that one address.
#
# Run by `make container-test` (which builds the image first): CONTAINER_IMAGE names the image. Skipped when
# unset (so `make e2e` does not test a stale image), when no engine works, or when the engine cannot start
# containers here. CONTAINER_TEST_MODE: pcap (detect only), xdp (--source xdp --block xdp), nftables
# (--source pcap --block nftables). CONTAINER_TEST_CAPS overrides the capabilities granted.
# Usage: test-container.sh [BINARY] (the binary is not used: the image carries its own)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_require_root
lab_require_cmds nmap python3 curl nft

# ---- the mode under test: XDP (the deployed default), or pcap or nftables through CONTAINER_TEST_MODE ----
mode=${CONTAINER_TEST_MODE:-xdp}
# Each mode gets the least it needs (the README's table), so a capability the agent starts to need shows up here.
case $mode in
    pcap) agent_mode=(--source pcap --block none) caps=(NET_RAW) ;;
    xdp) agent_mode=(--source xdp --xdp-mode auto --block xdp) caps=(NET_ADMIN BPF PERFMON) ;;
    nftables) agent_mode=(--source pcap --block nftables) caps=(NET_RAW NET_ADMIN) ;;
    *) fail "CONTAINER_TEST_MODE must be pcap, xdp or nftables, not '$mode'" ;;
esac
# CONTAINER_TEST_CAPS="NET_ADMIN BPF" tries another set (how the table of capabilities was established).
[[ -n "${CONTAINER_TEST_CAPS:-}" ]] && read -r -a caps <<<"$CONTAINER_TEST_CAPS"

image=${CONTAINER_IMAGE:-}
[[ -n "$image" ]] || skip "no image under test: run 'make container-test' (or set CONTAINER_IMAGE)"
container_sh=$E2E_REPO/deploy/container.sh
engine=$("$container_sh" engine 2>&1) || skip "$engine"
[[ "$engine" != buildah ]] || skip "only buildah works here: it builds the image but cannot run the agent"
read -r -a engine_cmd <<<"$("$container_sh" cmd "$engine")"
read -r -a run_flags <<<"$("$container_sh" run-flags "$engine")"
"${engine_cmd[@]}" image inspect "$image" >/dev/null 2>&1 ||
    fail "image $image does not exist: build it with make image"
"$container_sh" can-run "$engine" "$image" || skip "$engine cannot start containers on this machine"

lab_init
s=$LAB_SUFFIX
name=conntrackr-test-$s
lab_on_cleanup "timeout 30 ${engine_cmd[*]} rm -f -t 2 '$name'"

# Older default seccomp profiles allow bpf(2) only with SYS_ADMIN; podman's gets the two rules that CAP_BPF and
# CAP_PERFMON are enough for (deploy/seccomp/make-profile.py). docker 23+ and containerd 1.6.9+ already allow them.
security=()
if [[ "$mode" == xdp && "$engine" == podman ]]; then
    python3 "$E2E_REPO/deploy/seccomp/make-profile.py" >"$LAB_TMP/seccomp.json" ||
        fail "cannot write the seccomp profile"
    security=(--security-opt "seccomp=$LAB_TMP/seccomp.json")
fi

# ---- the lab: a root-namespace veth for the host, its peer in the attacker's namespace ----
host_if=cth-$s
octet=$((s % 200 + 20))
host_ip=203.0.113.$octet
attacker_ip=198.51.100.$octet
[[ -z "$(ip -o -4 addr show to "$host_ip/32")" ]] || fail "$host_ip is already on an interface of this host"
[[ -z "$(ip -4 route show to "$attacker_ip/32")" ]] || fail "a route to $attacker_ip already exists"
lab_add_ns "$LAB_NS_ATTACKER"
lab_on_cleanup "ip link del '$host_if'"
lab_run ip link add "$host_if" type veth peer name "$LAB_IF_ATTACKER" netns "$LAB_NS_ATTACKER"
# Only IPv4 on the link: no router solicitations or DAD noise from either end.
lab_run sysctl -qw "net.ipv6.conf.$host_if.disable_ipv6=1"
lab_run ip netns exec "$LAB_NS_ATTACKER" sysctl -qw "net.ipv6.conf.$LAB_IF_ATTACKER.disable_ipv6=1"
lab_run ip addr add "$host_ip/32" peer "$attacker_ip/32" dev "$host_if"
lab_run ip -n "$LAB_NS_ATTACKER" addr add "$attacker_ip/32" peer "$host_ip/32" dev "$LAB_IF_ATTACKER"
lab_run ip link set "$host_if" up
lab_run ip -n "$LAB_NS_ATTACKER" link set "$LAB_IF_ATTACKER" up
lab_register_xdp "$host_if"
pin_dir=/sys/fs/bpf/conntrackr-ctest-$s
lab_register_pin_dir "$pin_dir"
# Port 9 is closed on the host: a refusal (RST) proves the path works, a timeout that the SYN was dropped.
probe_port=9
wait_for 10 timeout 5 ip netns exec "$LAB_NS_ATTACKER" python3 "$E2E_TOOLS/connect.py" --timeout 1 \
    --accept-refused "$host_ip" "$probe_port" || fail "lab: $host_ip unreachable from the attacker"
log "lab: host $host_ip on $host_if (root namespace), attacker $attacker_ip in $LAB_NS_ATTACKER"

# nftables tables of the root namespace before the agent: stopping it must leave exactly these.
nft_tables() { timeout 5 nft list tables 2>/dev/null | sort; }
tables_before=$(nft_tables)
if [[ "$mode" == nftables ]]; then
    grep -qw conntrackr <<<"$tables_before" && skip "this host already has an nftables table named conntrackr"
    lab_register_nft_table inet conntrackr
fi

# A free loopback port for the metrics endpoint, so a real agent on 9542 is never disturbed.
metrics_port=$((20000 + s % 20000))
while ss -Hltn "sport = :$metrics_port" | grep -q .; do metrics_port=$((metrics_port + 1)); done
metrics=http://127.0.0.1:$metrics_port

# ---- the container, started as the README says ----
cap_flags=(--cap-drop ALL)
for c in "${caps[@]}"; do cap_flags+=(--cap-add "$c"); done
start_agent() {
    "${engine_cmd[@]}" rm -f "$name" >/dev/null 2>&1 || true
    # Read-only root as in the DaemonSet: the agent writes nothing but pins.
    timeout 60 "${engine_cmd[@]}" run -d --name "$name" --network host "${cap_flags[@]}" "${security[@]}" \
        --read-only "${run_flags[@]}" -v /sys/fs/bpf:/sys/fs/bpf "$image" \
        run --interface "$host_if" "${agent_mode[@]}" --pin-dir "$pin_dir" \
        --metrics-address "127.0.0.1:$metrics_port" --format json >/dev/null ||
        fail "$engine run failed"
    log "container $name started: ${agent_mode[*]}, capabilities ${caps[*]}"
}
fetch_logs() { # events to $LAB_TMP/agent.out, logs to $LAB_TMP/agent.err: what `podman logs` shows a user
    timeout 20 "${engine_cmd[@]}" logs "$name" >"$LAB_TMP/agent.out" 2>"$LAB_TMP/agent.err" || true
}
running() { [[ "$(timeout 10 "${engine_cmd[@]}" inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" == true ]]; }
wait_started() {
    lab_wait_capture_started "the container" --timeout 20 --interval 0.3 \
        --log 'fetch_logs; cat "$LAB_TMP/agent.err"' --alive running
}
wait_event() { # PATTERN (in the JSON output) TIMEOUT WHAT
    local deadline=$((SECONDS + $2))
    while ((SECONDS <= deadline)); do
        fetch_logs
        grep -qE -- "$1" "$LAB_TMP/agent.out" && return 0
        sleep 0.3
    done
    fail "no $3 in the container's output within $2 s; output: $(head -c 400 "$LAB_TMP/agent.out")"
}
stop_agent() { # checks a graceful exit on SIGTERM (podman/docker stop), as a rolling update or reboot does
    timeout 40 "${engine_cmd[@]}" stop -t 10 "$name" >/dev/null || fail "$engine stop failed"
    local code
    code=$("${engine_cmd[@]}" inspect -f '{{.State.ExitCode}}' "$name")
    fetch_logs
    assert_eq "$code" 0 "container exit status after SIGTERM (logs: $(tail -n 3 "$LAB_TMP/agent.err"))"
    "${engine_cmd[@]}" rm "$name" >/dev/null
}
attacker_probe() { # --accept-refused | --expect-timeout
    lab_exec attacker 30 python3 "$E2E_TOOLS/connect.py" --timeout 3 "$1" "$host_ip" "$probe_port"
}

started=$(date +%s)
start_agent
wait_started

# The container holds exactly the capabilities granted: never SYS_ADMIN.
pid=$("${engine_cmd[@]}" inspect -f '{{.State.Pid}}' "$name")
cap_eff=$(awk '/^CapEff:/ {print $2}' "/proc/$pid/status")
((((16#$cap_eff) >> 21 & 1) == 0)) || fail "the agent holds CAP_SYS_ADMIN (CapEff $cap_eff)"
log "agent pid $pid on the host, CapEff $cap_eff"

# Health and metrics from the host, as Prometheus and a liveness probe see them.
wait_for 10 curl -sf "$metrics/healthz" || fail "GET $metrics/healthz did not succeed"

# ---- the scan ----
lab_exec attacker 90 nmap -n -Pn -sS -p 20-120 --max-retries 1 -T4 --host-timeout 60s "$host_ip" \
    >"$LAB_TMP/nmap.out" 2>&1 || fail "nmap failed: $(tail -n 3 "$LAB_TMP/nmap.out")"
grep -q '1 host up' "$LAB_TMP/nmap.out" || fail "nmap did not reach $host_ip: $(tail -n 5 "$LAB_TMP/nmap.out")"
wait_event '"event" *: *"port_scan"' 10 "port_scan event"
assert_eq "$(events count "$LAB_TMP/agent.out" event=port_scan src="$attacker_ip" dst="$host_ip")" 1 \
    "port_scan events attacker -> host in the container's output"
ports=$(events list "$LAB_TMP/agent.out" ports event=port_scan src="$attacker_ip" dst="$host_ip")
assert_ascending "$ports" "port_scan ports"
log "the container reported the scan on ports $ports"

log "agent resident memory after the scan: $(awk '/^VmRSS:/ {print $2, $3}' "/proc/$pid/status")"
scans=$(curl -sf "$metrics/metrics" | awk '$1 == "conntrackr_port_scans_total" {print $2}')
assert_eq "$scans" 1 "conntrackr_port_scans_total from the host"

if [[ "$mode" == pcap ]]; then
    # Detection only: the attacker still reaches the host.
    attacker_probe --accept-refused >/dev/null || fail "detect-only mode blocked the attacker"
else
    wait_event '"event" *: *"blocked"' 10 "blocked event"
    assert_eq "$(events count "$LAB_TMP/agent.out" event=blocked src="$attacker_ip/32")" 1 "blocked events"
    attacker_probe --expect-timeout >/dev/null || fail "the scanner still reaches the host after its block"
    log "the scanner's SYNs are dropped"
fi

# ---- stop: the host is left as it was, apart from the pinned blocklist ----
stop_agent
finished=$(date +%s)
n=$(events check "$LAB_TMP/agent.out" --since "$started" --until "$((finished + 1))" 2>&1) ||
    fail "malformed output: $n"
xdp_left=$(ip -o link show dev "$host_if" | grep -o 'prog/xdp[a-z]* id [0-9]*' || true)
[[ -z "$xdp_left" ]] || fail "an XDP program is still attached to $host_if after the container stopped: $xdp_left"
assert_eq "$(nft_tables)" "$tables_before" "nftables tables after the container stopped"

if [[ "$mode" == xdp ]]; then
    [[ -d "$pin_dir" ]] && [[ -n "$(ls -A "$pin_dir")" ]] || fail "no pinned maps left in $pin_dir"
    # The block outlives the container: a new one enforces it at once, before any new scan.
    start_agent
    wait_started
    attacker_probe --expect-timeout >/dev/null || fail "a restarted container does not enforce the pinned block"
    stop_agent
    xdp_left=$(ip -o link show dev "$host_if" | grep -o 'prog/xdp[a-z]* id [0-9]*' || true)
    [[ -z "$xdp_left" ]] || fail "an XDP program is still attached after the second stop: $xdp_left"
    log "the pinned block outlived the container and was enforced by its successor"
fi
log "mode $mode: $n events, scan reported$([[ $mode == pcap ]] || echo ', scanner blocked'), host clean after stop"
