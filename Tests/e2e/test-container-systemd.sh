#!/usr/bin/env bash
# e2e-timeout: 240
# Issue 5: deploy/systemd/conntrackr.service really runs the agent, under all of its hardening, with the shipped
# deploy/conntrackr.yaml. systemd itself runs as PID 1 of a podman container (the host here has no systemd),
# joined to the lab victim's network namespace: the unit's sandbox (capability bounding set, seccomp filter,
# read-only file system, address families) is what is under test, not the container's, which is privileged
# only so that systemd can build that sandbox.
#
# Checks: the service starts and captures, its process holds exactly the unit's capabilities with
# no-new-privileges and a seccomp filter, a real nmap scan is reported in the journal and counted in the metrics
# (and, in a blocking mode, the scanner is blocked and the client is not), and `systemctl stop` ends it with
# status 0.
#
# Run by `make container-test` (CONTAINER_IMAGE names the image to start from); needs podman.
# CONTAINER_TEST_MODE as in test-container.sh (pcap, xdp, nftables).
# Usage: test-container-systemd.sh [BINARY] (not used: the image carries its own)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_require_root
lab_require_cmds nmap python3

mode=${CONTAINER_TEST_MODE:-xdp}
case $mode in
    pcap) agent_mode=(--source pcap --block none) ;;
    xdp) agent_mode=(--source xdp --xdp-mode auto --block xdp) ;;
    nftables) agent_mode=(--source pcap --block nftables) ;;
    *) fail "CONTAINER_TEST_MODE must be pcap, xdp or nftables, not '$mode'" ;;
esac

image=${CONTAINER_IMAGE:-}
[[ -n "$image" ]] || skip "no image under test: run 'make container-test' (or set CONTAINER_IMAGE)"
container_sh=$E2E_REPO/deploy/container.sh
engine=$("$container_sh" engine 2>&1) || skip "$engine"
[[ "$engine" == podman ]] || skip "systemd as a container's PID 1 is tested with podman only (engine here: $engine)"
read -r -a engine_cmd <<<"$("$container_sh" cmd podman)"
read -r -a run_flags <<<"$("$container_sh" run-flags podman)"
"${engine_cmd[@]}" image inspect "$image" >/dev/null 2>&1 ||
    fail "image $image does not exist: build it with make image"
"$container_sh" can-run podman "$image" || skip "podman cannot start containers on this machine"

lab_init
s=$LAB_SUFFIX
name=conntrackr-systemd-$s
test_image=localhost/conntrackr-systemd-test:$s
lab_on_cleanup "timeout 30 ${engine_cmd[*]} rm -f -t 2 '$name'; timeout 30 ${engine_cmd[*]} image rm '$test_image'"
pin_dir=/sys/fs/bpf/conntrackr-stest-$s
lab_register_pin_dir "$pin_dir"

lab_up

# The image under test plus systemd, the unit and the configuration exactly as shipped. A drop-in only adds the
# flags that point the agent at the lab (flags win over the configuration file), and binds a per-run pin directory
# of the host's bpffs in place of /sys/fs/bpf/conntrackr, the same way.
context=$LAB_TMP/context
mkdir -p "$context"
cp "$E2E_REPO/deploy/systemd/conntrackr.service" "$E2E_REPO/deploy/systemd/conntrackr-tmpfiles.conf" \
    "$E2E_REPO/deploy/conntrackr.yaml" "$context/"
# The shipped tmpfiles.d line makes /sys/fs/bpf/conntrackr on the host's bpffs at the container's boot (removed
# again, if empty, when this run made it); this run's own directory is made here, the same way, for the drop-in.
[[ -e /sys/fs/bpf/conntrackr ]] || lab_on_cleanup "rmdir /sys/fs/bpf/conntrackr 2>/dev/null || true"
mkdir -p "$pin_dir"
cat >"$context/lab.conf" <<EOF
[Service]
BindPaths=
BindPaths=$pin_dir:/run/conntrackr/bpf
ExecStart=
ExecStart=/usr/local/bin/conntrackr run --config /etc/conntrackr/conntrackr.yaml --interface $LAB_IF_VICTIM ${agent_mode[*]} --pin-dir /run/conntrackr/bpf
EOF
cat >"$context/Containerfile" <<EOF
FROM $image
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd \\
    && rm -rf /var/lib/apt/lists/*
COPY conntrackr.service /etc/systemd/system/conntrackr.service
COPY lab.conf /etc/systemd/system/conntrackr.service.d/lab.conf
COPY conntrackr.yaml /etc/conntrackr/conntrackr.yaml
COPY conntrackr-tmpfiles.conf /etc/tmpfiles.d/conntrackr.conf
RUN systemctl enable conntrackr.service
ENTRYPOINT ["/lib/systemd/systemd"]
EOF
timeout 300 "${engine_cmd[@]}" build --network host "${run_flags[@]}" --layers=false -t "$test_image" "$context" \
    >"$LAB_TMP/build.log" 2>&1 || fail "building the systemd test image failed: $(tail -n 5 "$LAB_TMP/build.log")"

timeout 60 "${engine_cmd[@]}" run -d --name "$name" --privileged --systemd=always "${run_flags[@]}" \
    --network "ns:/run/netns/$LAB_NS_VICTIM" -v /sys/fs/bpf:/sys/fs/bpf "$test_image" >/dev/null ||
    fail "podman run of the systemd container failed"
in_ct() { timeout 20 "${engine_cmd[@]}" exec "$name" "$@"; }
journal() { in_ct journalctl -u conntrackr --no-pager -o cat 2>/dev/null || true; }
# The agent's own reason (its one-line error starts with "conntrackr: "), else the journal's last lines.
why() { journal | grep -m1 '^conntrackr: ' || journal | tail -n 5; }

state() { in_ct systemctl show -p ActiveState --value conntrackr 2>/dev/null || true; }
lab_wait_capture_started conntrackr.service --timeout 30 --interval 0.5 --log journal \
    --alive '[[ "$(state)" != failed ]]' --why 'echo "($(state)) $(why)"'
log "conntrackr.service is capturing on $LAB_IF_VICTIM"

# The service's process: the unit's four capabilities bound it; once started, the agent itself keeps only what its
# mode still uses (XDP blocking: BPF for the maps; detaching is closing the BPF link; nftables: NET_ADMIN for nft);
# no-new-privileges; a seccomp filter.
main_pid=$(in_ct systemctl show -p MainPID --value conntrackr)
status=$(in_ct cat "/proc/$main_pid/status")
cap_bnd=$(awk '/^CapBnd:/ {print $2}' <<<"$status")
cap_eff=$(awk '/^CapEff:/ {print $2}' <<<"$status")
# NET_ADMIN (12), NET_RAW (13), PERFMON (38), BPF (39).
expected=$(printf '%016x' $(((1 << 12) | (1 << 13) | (1 << 38) | (1 << 39))))
assert_eq "$cap_bnd" "$expected" "capability bounding set of the service"
case $mode in
    xdp) kept=$((1 << 39)) ;;
    nftables) kept=$((1 << 12)) ;;
    pcap) kept=0 ;;
esac
assert_eq "$cap_eff" "$(printf '%016x' "$kept")" "effective capabilities of the running agent ($mode)"
assert_eq "$(awk '/^NoNewPrivs:/ {print $2}' <<<"$status")" 1 "NoNewPrivs of the service"
assert_eq "$(awk '/^Seccomp:/ {print $2}' <<<"$status")" 2 "seccomp mode of the service (2 = filter)"

lab_exec attacker 90 nmap -n -Pn -sS -p 20-120 --max-retries 1 -T4 --host-timeout 60s "$LAB_VICTIM_IP4" \
    >"$LAB_TMP/nmap.out" 2>&1 || fail "nmap failed: $(tail -n 3 "$LAB_TMP/nmap.out")"
deadline=$((SECONDS + 10))
until journal | grep -q "\"event\":\"port_scan\",\"src\":\"$LAB_ATTACKER_IP4\""; do
    ((SECONDS < deadline)) || fail "no port_scan from $LAB_ATTACKER_IP4 in the journal: $(journal | tail -n 5)"
    sleep 0.3
done
if [[ "$mode" != pcap ]]; then
    deadline=$((SECONDS + 10))
    until journal | grep -q "\"event\":\"blocked\",\"src\":\"$LAB_ATTACKER_IP4/32\""; do
        ((SECONDS < deadline)) || fail "no blocked event for $LAB_ATTACKER_IP4 in the journal: $(journal | tail -n 5)"
        sleep 0.3
    done
    # Port 9 is closed on the victim: refused while reachable, a timeout once the SYN is dropped.
    lab_exec attacker 20 python3 "$E2E_TOOLS/connect.py" --timeout 3 --expect-timeout "$LAB_VICTIM_IP4" 9 \
        >/dev/null || fail "the scanner still reaches the victim after its block"
    lab_exec client 20 python3 "$E2E_TOOLS/connect.py" --timeout 3 --accept-refused "$LAB_VICTIM_IP4" 9 \
        >/dev/null || fail "the benign client no longer reaches the victim"
fi
scans=$(lab_exec victim 10 curl -sf http://127.0.0.1:9542/metrics |
    awk '$1 == "conntrackr_port_scans_total" {print $2}')
assert_eq "$scans" 1 "conntrackr_port_scans_total"

in_ct systemctl stop conntrackr
assert_eq "$(in_ct systemctl show -p Result --value conntrackr)" success "result of systemctl stop"
assert_eq "$(in_ct systemctl show -p ExecMainStatus --value conntrackr)" 0 "exit status of the service"
xdp_left=$(ip -n "$LAB_NS_VICTIM" -o link show dev "$LAB_IF_VICTIM" | grep -o 'prog/xdp[a-z]* id [0-9]*' || true)
[[ -z "$xdp_left" ]] || fail "an XDP program is still attached after the service stopped: $xdp_left"
log "conntrackr.service: capabilities $cap_eff, scan reported in the journal, stopped with status 0"
