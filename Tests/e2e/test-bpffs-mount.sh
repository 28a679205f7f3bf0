#!/usr/bin/env bash
# e2e-timeout: 180
# Issue 16, item 4: a start without friction. On a machine with no bpffs (here: a private mount namespace whose
# /sys/fs/bpf is hidden under an empty tmpfs), `conntrackr run --source xdp --block xdp` run as root mounts bpffs
# at /sys/fs/bpf itself, says so in one notice line, pins its maps there, captures and blocks a real nmap scan,
# and exits 0 on SIGINT. Without CAP_SYS_ADMIN it cannot mount, and stops with one line naming the fix. The host's
# /sys/fs/bpf is the same before and after (its filesystem, its mounts, no pin directory of this run).
# The agent starts as lib-xdp.sh starts it, entering only the victim's network namespace, but from a mount
# namespace of its own: `unshare --mount --propagation private`, so nothing it mounts reaches the host, and
# everything it mounted goes when it exits. Usage: test-bpffs-mount.sh BINARY
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-xdp.sh"
lab_require_root
lab_require_cmds nmap python3 unshare nsenter setpriv findmnt
bin=$(e2e_binary "$@")
xdp_family

# What the host's /sys/fs/bpf is: its filesystem type, and every mount at or under it.
host_bpffs_state() {
    printf '%s\n' "$(stat -f -c %T /sys/fs/bpf)"
    findmnt -rn -o TARGET,FSTYPE,ID | awk '$1 == "/sys/fs/bpf" || index($1, "/sys/fs/bpf/") == 1' | sort
}

lab_up
before=$(host_bpffs_state)
pins=/sys/fs/bpf/conntrackr-e2e-mount-$LAB_SUFFIX
[[ -e "$pins" ]] && fail "$pins already exists on the host"
lab_register_pin_dir "$pins" # only in case the agent escaped its namespace: it must not
lab_listen victim 22 80 443

# Starts the agent in a mount namespace of its own where /sys/fs/bpf holds an empty tmpfs (a fresh machine), then
# in the victim's network namespace. PREFIX (e.g. setpriv ..., after nsenter, which needs CAP_SYS_ADMIN itself)
# runs the agent with fewer privileges. Sets
# LAB_LAST_PID.
spawn_without_bpffs() { # NAME PREFIX-WORDS -- AGENT-ARGS...
    local name=$1
    shift
    local prefix=()
    while [[ $1 != -- ]]; do prefix+=("$1"); shift; done
    shift
    : >"$LAB_TMP/$name.out"
    : >"$LAB_TMP/$name.err"
    # `timeout --foreground` passes one SIGINT on (see lib-xdp.sh); unshare, sh and nsenter exec, so the agent
    # is the process that gets it.
    timeout --foreground -k 5 "$LAB_SPAWN_MAX" unshare --mount --propagation private -- sh -c '
        mount -t tmpfs -o size=64k,mode=0755 conntrackr-e2e-no-bpffs /sys/fs/bpf || exit 97
        exec "$@"' sh nsenter --net="/run/netns/$LAB_NS_VICTIM" -- "${prefix[@]}" "$bin" run \
        --interface "$LAB_IF_VICTIM" --pin-dir "$pins" --format json --metrics-address none "$@" \
        >"$LAB_TMP/$name.out" 2>"$LAB_TMP/$name.err" </dev/null &
    LAB_LAST_PID=$!
    LAB_PIDS+=("$LAB_LAST_PID")
    log "lab: started $name (pid $LAB_LAST_PID) without bpffs, in the victim's network namespace: ${prefix[*]} $bin run $*"
}

# 1. Without CAP_SYS_ADMIN the agent cannot mount bpffs: one line on stderr, naming the fix.
spawn_without_bpffs noadmin setpriv --bounding-set -sys_admin --inh-caps -sys_admin -- --source xdp --block xdp
lab_wait_exit "$LAB_LAST_PID" 20 || fail "the agent without CAP_SYS_ADMIN did not exit within 20 s"
assert_ne "$LAB_EXIT_STATUS" 97 "mounting the tmpfs over /sys/fs/bpf in the private namespace"
assert_eq "$LAB_EXIT_STATUS" 1 "exit status without CAP_SYS_ADMIN (stderr: $(tail -n 3 "$LAB_TMP/noadmin.err"))"
assert_line_count "$LAB_TMP/noadmin.err" 1 "stderr without CAP_SYS_ADMIN"
assert_file_contains "$LAB_TMP/noadmin.err" 'mount it first with `mount -t bpf bpf /sys/fs/bpf`' \
    "the failure names the fix"
log "without CAP_SYS_ADMIN: $(cat "$LAB_TMP/noadmin.err")"

# 2. As root it mounts bpffs where systemd would, logs it once, and runs: a scan is seen and blocked.
spawn_without_bpffs agent -- --source xdp --block xdp
agent=$LAB_LAST_PID
deadline=$((SECONDS + 15))
until grep -q 'capture started' "$LAB_TMP/agent.err"; do
    lab_alive "$agent" || fail "the agent exited before capture started: $(tail -n 5 "$LAB_TMP/agent.err")"
    ((SECONDS <= deadline)) || fail "no 'capture started' within 15 s: $(tail -n 5 "$LAB_TMP/agent.err")"
    sleep 0.1
done
assert_eq "$(grep -c 'mounted bpffs' "$LAB_TMP/agent.err")" 1 "notice lines saying bpffs was mounted"
assert_match "$(grep 'mounted bpffs' "$LAB_TMP/agent.err")" 'notice.*mount_point=/sys/fs/bpf' \
    "the notice names the mount point"
assert_eq "$(lab_xdp_ifaces "$LAB_NS_VICTIM" | tr '\n' ' ')" "$LAB_IF_VICTIM " "interfaces with XDP in the victim"
[[ -e "$pins" ]] && fail "$pins appeared on the host: the agent's bpffs is not private"

xdp_nmap_scan
out=$LAB_TMP/agent.out
wait_for_line "$out" '"event" *: *"blocked"' 10 || fail "no blocked event within 10 s of the scan: $(tail -c 400 "$out")"
assert_eq "$(events count "$out" event=port_scan src="$attacker" dst="$victim")" 1 "port_scan events for the attacker"
lab_connect attacker --timeout 2 --expect-timeout "$victim" 443

xdp_agent_stop "$agent" agent
n=$(events check "$out" 2>&1) || fail "malformed output: $n"

# 3. The host never saw any of it.
after=$(host_bpffs_state)
assert_eq "$after" "$before" "the host's /sys/fs/bpf (type and mounts) after the run"
[[ -e "$pins" ]] && fail "$pins exists on the host after the run"
log "bpffs mounted in a fresh mount namespace, scanner blocked, host's /sys/fs/bpf untouched ($(head -n 1 <<<"$after"))"
