#!/usr/bin/env bash
# e2e-timeout: 120
# Issues 4 and 7: a running XDP agent keeps only the capabilities it still uses and has no_new_privs; SIGTERM makes
# it exit 0 within a second with no XDP program left; `kill -9` leaves no program either (the BPF link dies with
# the process) and the pinned blocklist intact for the next agent; a second agent on a watched interface refuses
# with one clear line. Usage: test-signals-and-crash.sh BINARY
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-xdp.sh"
lab_require_root
lab_require_cmds python3
bin=$(e2e_binary "$@")

lab_up
xdp_init
lab_listen victim 443
xdp_prog_count() { lab_ns_exec_quiet "$LAB_NS_VICTIM" ip -d link show dev "$LAB_IF_VICTIM" | grep -c 'prog/xdp' || true; }
# The agent itself: the child of `timeout` (nsenter execs it), checked by name.
agent_pid() {
    local child
    child=$(pgrep -P "$1" | head -1)
    [[ "$(cat "/proc/$child/comm" 2>/dev/null)" == conntrackr ]] || fail "no conntrackr process under pid $1"
    echo "$child"
}
cli() { nsenter --net="/run/netns/$LAB_NS_VICTIM" -- "$bin" blocklist "$@" --pin-dir "$XDP_PINS"; }

# Privileges of a running agent.
xdp_agent_start first "$bin" --block xdp
agent=$XDP_AGENT
pid=$(agent_pid "$agent")
caps=$(awk '/^CapEff:/ {print $2}' "/proc/$pid/status")
bounding=$(awk '/^CapBnd:/ {print $2}' "/proc/$pid/status")
nnp=$(awk '/^NoNewPrivs:/ {print $2}' "/proc/$pid/status")
# CAP_BPF (39) only: detaching at exit is closing the program's BPF link (checked below by SIGINT and SIGKILL).
assert_eq "$caps" "0000008000000000" "effective capabilities of an XDP agent"
assert_eq "$bounding" "0000008000000000" "bounding set of an XDP agent"
assert_eq "$nnp" 1 "no_new_privs"
assert_file_contains "$LAB_TMP/first.err" "privileges dropped" "the log says privileges were dropped"

# A second agent on the same interface refuses with one line.
xdp_spawn_in_victim second "$bin" run --interface "$LAB_IF_VICTIM" --source xdp --pin-dir "$XDP_PINS" \
    --metrics-address none
second=$LAB_LAST_PID
lab_wait_exit "$second" 10 || fail "a second agent on the same interface kept running"
assert_ne "$LAB_EXIT_STATUS" 0 "exit status of the second agent"
assert_int "$LAB_EXIT_STATUS" -lt 128 "the second agent exited, not killed by a signal"
assert_eq "$(wc -l <"$LAB_TMP/second.err" | tr -d ' ')" 1 "one line from the second agent"
assert_match "$(cat "$LAB_TMP/second.err")" 'already' "the second agent names the attached program"

# SIGTERM: exit 0 within a second, program detached.
lab_stop "$agent" TERM 1
assert_eq "$LAB_STOP_TIMELY" 1 "stopped within 1 s of SIGTERM"
assert_eq "$LAB_EXIT_STATUS" 0 "exit status after SIGTERM"
assert_eq "$(xdp_prog_count)" 0 "XDP programs left after SIGTERM"

# kill -9 with a block in place: nothing stays attached, the pinned block stays, and the next agent enforces it.
xdp_agent_start third "$bin" --block xdp
cli add "$LAB_CLIENT_IP4" --ttl 300 >/dev/null
third_pid=$(agent_pid "$XDP_AGENT")
kill -9 "$third_pid"
lab_wait_exit "$XDP_AGENT" 5 || true
assert_eq "$(xdp_prog_count)" 0 "XDP programs left after kill -9"
assert_match "$(cli list)" "^$LAB_CLIENT_IP4/32  manual" "the pinned block after kill -9"
xdp_agent_start fourth "$bin" --block xdp
lab_connect client --timeout 2 --expect-timeout "$LAB_VICTIM_IP4" 443
assert_match "$(cli list)" "[1-9][0-9]* packets dropped" "the restarted agent drops the blocked client"
xdp_agent_stop "$XDP_AGENT" fourth
log "capabilities dropped, SIGTERM clean, kill -9 left nothing attached, blocks kept, second agent refused"
