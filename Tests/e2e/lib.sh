# shellcheck shell=bash
# Tests/e2e/lib.sh: the namespace lab and the helpers every end-to-end test sources.
#
#   . "$(dirname "$0")/lib.sh"
#   lab_require_root
#   lab_up                      # or: lab_up --victim2
#   lab_listen victim 22 80 443
#   lab_spawn victim agent "$BIN" run --interface "$LAB_IF_VICTIM" --source pcap --format json
#   ...
#
# The lab: one "switch" namespace holding a bridge, and one namespace per host (victim, attacker, client,
# optionally victim2), each joined to the bridge by a veth pair created directly inside the namespaces (the links
# never exist in the root namespace). Every namespace and link name carries a per-run suffix. Addresses come only
# from 203.0.113.0/24, 198.51.100.0/24 and 2001:db8::/32; there is no default route, only on-link routes between
# the two IPv4 /24s, so nothing can leave the lab.
#
# Result protocol (read by run-all.sh): exit 0 = pass; `skip REASON` prints "SKIP: REASON" and exits 77;
# `fail REASON` prints "FAIL: REASON" and exits 1. `fail` and the assert_* helpers must run in the test's own
# shell, not inside $(...), or they only end the subshell.
#
# Cleanup is registered with `trap ... EXIT INT TERM` by lab_up (and lab_init). It kills every process started in
# the lab, detaches XDP programs, deletes nftables tables named conntrackr* in the lab namespaces (and any table,
# interface or bpffs pin directory registered with lab_register_*), deletes the namespaces and removes the
# temporary directory (kept when the test failed, for the logs).

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
E2E_TOOLS=$E2E_DIR/tools
E2E_REPO=$(cd "$E2E_DIR/../.." && pwd)
E2E_CAPTURES=$E2E_REPO/Tests/ConnCaptureTests/Captures

# ---------------------------------------------------------------------------------------------------------------
# Addresses. Hosts share one L2 segment (the bridge); IPv4 victims live in 203.0.113.0/24, the remote hosts in
# 198.51.100.0/24, reached through on-link routes. IPv6 uses one /64 of 2001:db8::/32. The switch namespace holds
# .1 of each, for services a test wants inside the lab (etcd, Prometheus).
LAB_VICTIM_IP4=203.0.113.5
LAB_VICTIM2_IP4=203.0.113.6
LAB_ATTACKER_IP4=198.51.100.56
LAB_CLIENT_IP4=198.51.100.20
LAB_SWITCH_IP4=203.0.113.1
LAB_SWITCH_IP4B=198.51.100.1
LAB_VICTIM_IP6=2001:db8:1::5
LAB_VICTIM2_IP6=2001:db8:1::6
LAB_ATTACKER_IP6=2001:db8:1::56
LAB_CLIENT_IP6=2001:db8:1::20
LAB_SWITCH_IP6=2001:db8:1::1
LAB_VICTIM_MAC=02:00:00:00:00:05
LAB_VICTIM2_MAC=02:00:00:00:00:06
LAB_ATTACKER_MAC=02:00:00:00:00:56
LAB_CLIENT_MAC=02:00:00:00:00:20

# Bounds for every command the library runs.
: "${LAB_CMD_TIMEOUT:=10}"        # one ip/nft/ethtool call
: "${LAB_SPAWN_MAX:=600}"         # lifetime of a background process started with lab_spawn

LAB_PIDS=()
LAB_NAMESPACES=()
LAB_XDP_IFACES=()      # "NS IFACE" (NS may be "-" for the root namespace)
LAB_NFT_TABLES=()      # "NS FAMILY NAME"
LAB_PIN_DIRS=()
LAB_CLEANUP_HOOKS=()
LAB_INITIALIZED=0
LAB_CLEANED=0

# ---------------------------------------------------------------------------------------------------------------
# Results and logging

log() { printf '[%s] %s\n' "$(date +%H:%M:%S.%3N)" "$*" >&2; }
fail() { printf 'FAIL: %s\n' "$*"; exit 1; }
skip() { printf 'SKIP: %s\n' "$*"; exit 77; }

assert_eq() { # ACTUAL EXPECTED WHAT
    [[ "$1" == "$2" ]] || fail "$3: expected '$2', got '$1'"
}
assert_ne() { # ACTUAL UNEXPECTED WHAT
    [[ "$1" != "$2" ]] || fail "$3: did not expect '$2'"
}
assert_int() { # ACTUAL OP EXPECTED WHAT, OP one of -eq -ne -lt -le -gt -ge
    [[ "$1" =~ ^-?[0-9]+$ ]] || fail "$4: '$1' is not an integer"
    [ "$1" "$2" "$3" ] || fail "$4: expected $2 $3, got $1"
}
assert_match() { # STRING REGEX WHAT
    [[ "$1" =~ $2 ]] || fail "$3: '$1' does not match /$2/"
}
assert_file_contains() { # FILE FIXED-STRING WHAT
    grep -qF -- "$2" "$1" 2>/dev/null || fail "$3: '$2' not found in $1"
}
assert_file_lacks() { # FILE FIXED-STRING WHAT
    ! grep -qF -- "$2" "$1" 2>/dev/null || fail "$3: '$2' unexpectedly found in $1"
}
assert_line_count() { # FILE N WHAT
    local n
    n=$(wc -l <"$1")
    [[ "$n" == "$2" ]] || fail "$3: expected $2 line(s) in $(basename "$1"), got $n: $(head -c 400 "$1")"
}
assert_ascending() { # COMMA-LIST WHAT: strictly ascending integers, at least one
    local IFS=, prev=-1 p
    [[ -n "$1" ]] || fail "$2: empty list"
    for p in $1; do
        [[ "$p" =~ ^[0-9]+$ ]] || fail "$2: '$p' is not a number in [$1]"
        ((p > prev)) || fail "$2: not strictly ascending: [$1]"
        prev=$p
    done
}

# The binary under test, as an absolute path; fails when missing so a broken build is never a pass.
e2e_binary() { # "$@" of the test
    local bin=${1:-}
    [[ -n "$bin" ]] || fail "usage: $0 PATH-TO-conntrackr"
    [[ -x "$bin" ]] || fail "binary '$bin' not found or not executable (build it with make release)"
    (cd "$(dirname "$bin")" && printf '%s/%s\n' "$PWD" "$(basename "$bin")")
}

lab_require_root() {
    [[ $EUID -eq 0 ]] || skip "needs root (network namespaces, raw sockets)"
}

lab_require_cmds() { # CMD...
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || skip "'$c' is not installed (make test-deps installs it)"
    done
}

# ---------------------------------------------------------------------------------------------------------------
# Waiting, always bounded

# Waits until FILE has a line matching the extended regex PATTERN; returns 1 after TIMEOUT seconds.
wait_for_line() { # FILE PATTERN TIMEOUT
    local deadline=$((SECONDS + ${3:-10}))
    while ((SECONDS <= deadline)); do
        grep -qE -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# Waits until COMMAND succeeds; returns 1 after TIMEOUT seconds. COMMAND must itself be quick.
wait_for() { # TIMEOUT COMMAND...
    local deadline=$((SECONDS + $1))
    shift
    while ((SECONDS <= deadline)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------------------------------------------------------
# Names

lab_init() {
    ((LAB_INITIALIZED)) && return 0
    LAB_SUFFIX=${LAB_SUFFIX:-$$}
    # 9 characters keep the longest link name (ctbr-SUFFIX, swv-SUFFIX) within IFNAMSIZ.
    [[ "$LAB_SUFFIX" =~ ^[A-Za-z0-9]{1,9}$ ]] || fail "LAB_SUFFIX '$LAB_SUFFIX' must be 1-9 letters or digits"
    local s=$LAB_SUFFIX
    LAB_NS_SWITCH=ctr-sw-$s
    LAB_NS_VICTIM=ctr-vic-$s
    LAB_NS_VICTIM2=ctr-vic2-$s
    LAB_NS_ATTACKER=ctr-att-$s
    LAB_NS_CLIENT=ctr-cli-$s
    LAB_BRIDGE=ctbr-$s
    # Host-side interface of each host (inside its namespace) and its port on the bridge (in the switch).
    LAB_IF_VICTIM=ctv-$s
    LAB_IF_VICTIM2=ctw-$s
    LAB_IF_ATTACKER=cta-$s
    LAB_IF_CLIENT=ctc-$s
    LAB_PORT_VICTIM=swv-$s
    LAB_PORT_VICTIM2=sww-$s
    LAB_PORT_ATTACKER=swa-$s
    LAB_PORT_CLIENT=swc-$s
    LAB_TMP=$(mktemp -d "${TMPDIR:-/tmp}/ctr-e2e-$s.XXXXXX")
    trap lab_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    LAB_INITIALIZED=1
}

# The namespace of a role: victim, victim2, attacker, client, switch.
lab_ns() {
    case "$1" in
        victim) echo "$LAB_NS_VICTIM" ;;
        victim2) echo "$LAB_NS_VICTIM2" ;;
        attacker) echo "$LAB_NS_ATTACKER" ;;
        client) echo "$LAB_NS_CLIENT" ;;
        switch) echo "$LAB_NS_SWITCH" ;;
        *)
            echo "unknown lab role '$1'" >&2
            return 1
            ;;
    esac
}

# Runs a bounded command in the root namespace and fails the test with its stderr when it fails.
lab_run() { # COMMAND...
    local err
    if ! err=$(timeout "$LAB_CMD_TIMEOUT" "$@" 2>&1 >/dev/null); then
        fail "lab setup: '$*' failed: ${err:-timed out or no message}"
    fi
}

# ---------------------------------------------------------------------------------------------------------------
# Building the lab

# Builds the lab. Options: --victim2 adds the second victim (fleet tests).
lab_up() {
    local with_victim2=0 a
    for a in "$@"; do
        case "$a" in
            --victim2) with_victim2=1 ;;
            *) fail "lab_up: unknown option '$a'" ;;
        esac
    done
    lab_init
    log "lab: building with suffix $LAB_SUFFIX"

    lab_add_ns "$LAB_NS_SWITCH"
    lab_run ip -n "$LAB_NS_SWITCH" link add "$LAB_BRIDGE" address 02:00:00:00:00:01 type bridge \
        stp_state 0 forward_delay 0 mcast_snooping 0
    lab_run ip -n "$LAB_NS_SWITCH" link set "$LAB_BRIDGE" up
    lab_run ip -n "$LAB_NS_SWITCH" addr add "$LAB_SWITCH_IP4/24" dev "$LAB_BRIDGE"
    lab_run ip -n "$LAB_NS_SWITCH" addr add "$LAB_SWITCH_IP4B/24" dev "$LAB_BRIDGE"
    lab_run ip -n "$LAB_NS_SWITCH" addr add "$LAB_SWITCH_IP6/64" dev "$LAB_BRIDGE" nodad

    lab_add_host "$LAB_NS_VICTIM" "$LAB_IF_VICTIM" "$LAB_PORT_VICTIM" "$LAB_VICTIM_MAC" \
        "$LAB_VICTIM_IP4" 203.0.113.0/24 198.51.100.0/24 "$LAB_VICTIM_IP6"
    lab_add_host "$LAB_NS_ATTACKER" "$LAB_IF_ATTACKER" "$LAB_PORT_ATTACKER" "$LAB_ATTACKER_MAC" \
        "$LAB_ATTACKER_IP4" 198.51.100.0/24 203.0.113.0/24 "$LAB_ATTACKER_IP6"
    lab_add_host "$LAB_NS_CLIENT" "$LAB_IF_CLIENT" "$LAB_PORT_CLIENT" "$LAB_CLIENT_MAC" \
        "$LAB_CLIENT_IP4" 198.51.100.0/24 203.0.113.0/24 "$LAB_CLIENT_IP6"
    if ((with_victim2)); then
        lab_add_host "$LAB_NS_VICTIM2" "$LAB_IF_VICTIM2" "$LAB_PORT_VICTIM2" "$LAB_VICTIM2_MAC" \
            "$LAB_VICTIM2_IP4" 203.0.113.0/24 198.51.100.0/24 "$LAB_VICTIM2_IP6"
    fi
    lab_check_reachable
    log "lab: up (victim $LAB_VICTIM_IP4 / $LAB_VICTIM_IP6 on $LAB_IF_VICTIM in $LAB_NS_VICTIM)"
}

lab_add_ns() { # NAME
    [[ -e /run/netns/$1 ]] && fail "namespace $1 already exists (a previous run with the same suffix?)"
    lab_run ip netns add "$1"
    LAB_NAMESPACES+=("$1")
    lab_run ip -n "$1" link set lo up
    # No router solicitations or autoconfiguration: the lab's only addresses are the ones set here, and the
    # captures stay free of noise. IPv6 must be on (some CI images disable it by default for new namespaces).
    lab_run ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0 \
        net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0 \
        net.ipv6.conf.default.router_solicitations=0 net.ipv6.conf.all.router_solicitations=0
}

# Creates namespace NS with interface IF (MAC) joined to the bridge through PORT, its addresses and an on-link
# route to the other IPv4 /24 (no default route).
lab_add_host() { # NS IF PORT MAC IP4 OWN-NET4 OTHER-NET4 IP6
    local ns=$1 if=$2 port=$3 mac=$4 ip4=$5 other4=$7 ip6=$8
    lab_add_ns "$ns"
    lab_run ip link add name "$if" netns "$ns" address "$mac" type veth peer name "$port" netns "$LAB_NS_SWITCH"
    lab_run ip -n "$LAB_NS_SWITCH" link set "$port" master "$LAB_BRIDGE" up
    lab_run ip -n "$ns" link set "$if" up
    lab_run ip -n "$ns" addr add "$ip4/24" dev "$if"
    lab_run ip -n "$ns" addr add "$ip6/64" dev "$if" nodad
    lab_run ip -n "$ns" route add "$other4" dev "$if" scope link
    # Without checksum offload the sending stack writes complete TCP checksums, so captures taken in the lab
    # carry valid checksums (veth otherwise forwards partial ones that every capture reader flags as bad).
    if command -v ethtool >/dev/null 2>&1; then
        timeout "$LAB_CMD_TIMEOUT" ip netns exec "$ns" ethtool -K "$if" tx off >/dev/null 2>&1 || true
    fi
}

# One TCP connection attempt from the attacker to the switch over each family, so a broken lab fails here with a
# clear reason rather than later as a missing event. A refused connection (RST) proves reachability.
lab_check_reachable() {
    local dst out
    for dst in "$LAB_SWITCH_IP4" "$LAB_SWITCH_IP6"; do
        out=$(timeout 10 ip netns exec "$LAB_NS_ATTACKER" python3 "$E2E_TOOLS/connect.py" --timeout 3 \
            --accept-refused "$dst" 9 2>&1) || fail "lab: $dst unreachable from the attacker: $out"
    done
}

# ---------------------------------------------------------------------------------------------------------------
# Running things inside the lab

# Runs a command inside a role's namespace, bounded by TIMEOUT seconds, and returns its status. It runs in the
# background while the shell waits, because bash defers a trapped SIGTERM/SIGINT until a foreground command ends:
# `wait` is interrupted at once, so cleanup starts without waiting for a long nmap.
lab_exec() { # ROLE TIMEOUT COMMAND...
    local ns
    ns=$(lab_ns "$1") || fail "lab_exec: unknown lab role '$1'"
    local t=$2 pid rc=0
    shift 2
    # "<&0": an asynchronous command would otherwise get /dev/null as stdin (e.g. `lab_exec victim 5 nft -f - <<EOF`).
    timeout -k 5 "$t" ip netns exec "$ns" "$@" <&0 &
    pid=$!
    LAB_PIDS+=("$pid")
    wait "$pid" || rc=$?
    lab_forget_pid "$pid"
    return "$rc"
}

# Starts a command in the background inside a role's namespace, with stdout in $LAB_TMP/NAME.out and stderr in
# $LAB_TMP/NAME.err, killed at cleanup, and at most LAB_SPAWN_MAX seconds alive. Sets LAB_LAST_PID.
lab_spawn() { # ROLE NAME COMMAND...
    local ns
    ns=$(lab_ns "$1") || fail "lab_spawn: unknown lab role '$1'"
    local role=$1 name=$2
    shift 2
    : >"$LAB_TMP/$name.out"
    : >"$LAB_TMP/$name.err"
    timeout -k 5 "$LAB_SPAWN_MAX" ip netns exec "$ns" "$@" >"$LAB_TMP/$name.out" 2>"$LAB_TMP/$name.err" </dev/null &
    LAB_LAST_PID=$!
    LAB_PIDS+=("$LAB_LAST_PID")
    log "lab: started $name (pid $LAB_LAST_PID) in $role: $*"
}

# True while PID runs as a child of the test's shell. Checking the parent guards against pid reuse: once bash has
# reaped a child, its pid may belong to an unrelated process that must never be signalled.
lab_alive() {
    local ppid
    ppid=$(awk '/^PPid:/ {print $2}' "/proc/$1/status" 2>/dev/null) || return 1
    [[ "$ppid" == "$$" ]]
}

lab_forget_pid() { # PID: drop it from the cleanup list once it has been waited for
    local p keep=()
    for p in "${LAB_PIDS[@]}"; do [[ "$p" != "$1" ]] && keep+=("$p"); done
    LAB_PIDS=("${keep[@]}")
}

# Sends SIGNAL to a process started by lab_spawn and waits up to TIMEOUT seconds for it to exit (then SIGKILL).
# Sets LAB_EXIT_STATUS to its exit status (128+N when killed by signal N) and LAB_STOP_TIMELY to 1 when it exited
# within TIMEOUT.
lab_stop() { # PID [SIGNAL] [TIMEOUT]
    local pid=$1 sig=${2:-TERM} t=${3:-5} deadline
    LAB_STOP_TIMELY=1
    lab_alive "$pid" && kill -s "$sig" "$pid" 2>/dev/null
    deadline=$((SECONDS + t))
    while lab_alive "$pid" && ((SECONDS < deadline)); do sleep 0.05; done
    if lab_alive "$pid"; then
        LAB_STOP_TIMELY=0
        kill -s KILL "$pid" 2>/dev/null || true
    fi
    LAB_EXIT_STATUS=0
    wait "$pid" 2>/dev/null || LAB_EXIT_STATUS=$?
    lab_forget_pid "$pid"
}

# Waits for a process started by lab_spawn to exit by itself within TIMEOUT seconds; sets LAB_EXIT_STATUS.
# Returns 1 (after killing it) when it did not.
lab_wait_exit() { # PID TIMEOUT
    local deadline=$((SECONDS + $2))
    while lab_alive "$1" && ((SECONDS < deadline)); do sleep 0.05; done
    if lab_alive "$1"; then
        lab_stop "$1" KILL 2
        return 1
    fi
    LAB_EXIT_STATUS=0
    wait "$1" 2>/dev/null || LAB_EXIT_STATUS=$?
    lab_forget_pid "$1"
    return 0
}

# Starts a TCP listener on PORTs (IPv4 and IPv6) inside a role's namespace; accepted connections are closed at
# once. Returns when all ports are bound.
lab_listen() { # ROLE PORT...
    local role=$1
    shift
    local name=listen-$role-${1}
    lab_spawn "$role" "$name" python3 "$E2E_TOOLS/listen.py" "$@"
    wait_for_line "$LAB_TMP/$name.out" '^listening' 10 ||
        fail "listener in $role did not start: $(head -c 400 "$LAB_TMP/$name.err")"
}

# Opens one TCP connection from a role's namespace to HOST:PORT for each PORT and closes it; fails the test when
# one does not connect. Extra options for connect.py (e.g. --timeout 3.5 --expect-timeout) go before HOST.
lab_connect() { # ROLE [OPTIONS] HOST PORT...
    local role=$1 out
    shift
    out=$(lab_exec "$role" 60 python3 "$E2E_TOOLS/connect.py" "$@" 2>&1) ||
        fail "connect from $role ($*) failed: $out"
    log "lab: $role connect $*: $(tr '\n' ' ' <<<"$out")"
}

# The one wait for an agent's "capture started" line, which the agent logs once its capture handle is active
# (agreed with the CLI). NAME names the agent in messages. Every INTERVAL (0.1 s) it reads the log and returns
# once the line is there; skips the test (REASON: the matching line) when the log matches --skip-if's PATTERN;
# fails when the agent is no longer alive; fails after TIMEOUT (10) s. A failure ends with the log's last 5 lines,
# or with what the shell command --why CMD prints.
#   The log: $LAB_TMP/NAME.err, or --file FILE, or what the shell command --log CMD prints (run each round, e.g.
#   a container engine's `logs`, or journalctl).
#   Alive: while PID (a process of lab_spawn; its exit status then goes to LAB_EXIT_STATUS) runs, or while the
#   shell command --alive CMD succeeds; without either, only the timeout ends the wait.
# CMDs run in this shell, so they may call the test's functions. (Locals are _wc_*: the CMDs see them.)
_lab_capture_log() { # for lab_wait_capture_started, in its scope
    if [[ -n "$_wc_log" ]]; then eval "$_wc_log" || true; else cat -- "$_wc_file" 2>/dev/null || true; fi
}
_lab_capture_why() { # for lab_wait_capture_started: the log read again (the agent may just have written its error)
    if [[ -n "$_wc_why" ]]; then eval "$_wc_why"; else _lab_capture_log | tail -n 5; fi
}
lab_wait_capture_started() { # NAME [PID [TIMEOUT]] [--timeout S] [--interval S] [--file FILE | --log CMD]
    #                          [--alive CMD] [--skip-if PATTERN REASON] [--why CMD]
    local _wc_name=$1 _wc_pid= _wc_timeout=10 _wc_interval=0.1 _wc_file= _wc_log= _wc_alive= _wc_why=
    local _wc_skip_pattern= _wc_skip_reason= _wc_text _wc_line _wc_deadline
    shift
    if (($#)) && [[ "$1" != --* ]]; then _wc_pid=$1 && shift; fi
    if (($#)) && [[ "$1" != --* ]]; then _wc_timeout=$1 && shift; fi
    while (($#)); do
        case $1 in
            --timeout) _wc_timeout=$2 && shift 2 ;;
            --interval) _wc_interval=$2 && shift 2 ;;
            --file) _wc_file=$2 && shift 2 ;;
            --log) _wc_log=$2 && shift 2 ;;
            --alive) _wc_alive=$2 && shift 2 ;;
            --why) _wc_why=$2 && shift 2 ;;
            --skip-if) _wc_skip_pattern=$2 _wc_skip_reason=$3 && shift 3 ;;
            *) fail "lab_wait_capture_started: unknown argument '$1'" ;;
        esac
    done
    [[ -n "$_wc_file$_wc_log" ]] || _wc_file=$LAB_TMP/$_wc_name.err
    _wc_deadline=$((SECONDS + _wc_timeout))
    while ((SECONDS <= _wc_deadline)); do
        _wc_text=$(_lab_capture_log)
        grep -q 'capture started' <<<"$_wc_text" && return 0
        if [[ -n "$_wc_skip_pattern" ]] && _wc_line=$(grep -m1 -- "$_wc_skip_pattern" <<<"$_wc_text"); then
            skip "$_wc_skip_reason: $_wc_line"
        fi
        if [[ -n "$_wc_pid" ]] && ! lab_alive "$_wc_pid"; then
            wait "$_wc_pid" 2>/dev/null && LAB_EXIT_STATUS=0 || LAB_EXIT_STATUS=$?
            fail "$_wc_name exited (status $LAB_EXIT_STATUS) before capture started: $(_lab_capture_why)"
        fi
        if [[ -n "$_wc_alive" ]] && ! eval "$_wc_alive"; then
            fail "$_wc_name exited before capture started: $(_lab_capture_why)"
        fi
        sleep "$_wc_interval"
    done
    fail "$_wc_name did not log 'capture started' within $_wc_timeout s: $(_lab_capture_why)"
}

# The JSON-lines helper (count, list, check); see tools/events.py.
events() { python3 "$E2E_TOOLS/events.py" "$@"; }

# ---------------------------------------------------------------------------------------------------------------
# Things to undo at cleanup besides the lab namespaces

lab_register_xdp() { LAB_XDP_IFACES+=("${2:--} $1"); }             # IFACE [NS]
lab_register_nft_table() { LAB_NFT_TABLES+=("${3:--} $1 $2"); }    # FAMILY NAME [NS]
lab_register_pin_dir() {                                            # DIR (under /sys/fs/bpf)
    [[ "$1" == /sys/fs/bpf/?* && "$1" != *..* ]] || fail "lab_register_pin_dir: '$1' is not under /sys/fs/bpf"
    LAB_PIN_DIRS+=("$1")
}
lab_on_cleanup() { LAB_CLEANUP_HOOKS+=("$1"); }                     # SHELL-COMMAND, run first at cleanup

lab_ns_exec_quiet() { # NS COMMAND...: "-" is the root namespace
    local ns=$1
    shift
    if [[ "$ns" == - ]]; then
        timeout -k 2 "$LAB_CMD_TIMEOUT" "$@" >/dev/null 2>&1
    else
        timeout -k 2 "$LAB_CMD_TIMEOUT" ip netns exec "$ns" "$@" >/dev/null 2>&1
    fi
}

# Kills every process inside the namespaces: TERM, up to 2 s grace, then KILL. Only lab namespaces come here.
lab_kill_ns_procs() { # NS...
    local pids
    pids=$(lab_ns_pids "$@")
    [[ -z "$pids" ]] && return 0
    # shellcheck disable=SC2086
    kill -s TERM $pids 2>/dev/null
    for _ in $(seq 20); do
        [[ -z "$(lab_ns_pids "$@")" ]] && return 0
        sleep 0.1
    done
    pids=$(lab_ns_pids "$@")
    # shellcheck disable=SC2086
    [[ -n "$pids" ]] && kill -s KILL $pids 2>/dev/null
    return 0
}

lab_ns_pids() { # NS...: the pids inside those namespaces that still exist, space separated
    local ns
    for ns in "$@"; do
        [[ -e /run/netns/$ns ]] && timeout 5 ip netns pids "$ns" 2>/dev/null
    done | tr '\n' ' ' | sed 's/ *$//'
}

# The interfaces of a namespace that have an XDP program attached (any mode).
lab_xdp_ifaces() { # NS
    timeout 5 ip -n "$1" -o link show 2>/dev/null | awk -F': ' '/ prog\/xdp/ {sub(/@.*/, "", $2); print $2}'
}

# Detaches every XDP program in a lab namespace.
lab_detach_xdp() { # NS
    local iface
    for iface in $(lab_xdp_ifaces "$1"); do
        lab_detach_xdp_iface "$1" "$iface"
    done
}

# "xdp off" alone only detaches the mode the driver prefers (native on veth), so each mode is turned off.
lab_detach_xdp_iface() { # NS IFACE ("-" = root namespace)
    local mode
    for mode in xdpgeneric xdpdrv xdpoffload; do
        lab_ns_exec_quiet "$1" ip link set dev "$2" "$mode" off
    done
}

# Deletes nftables tables named conntrackr* inside a namespace ("-" = root namespace: only registered tables are
# deleted there, never found ones, because other agents may legitimately own them).
lab_delete_conntrackr_tables() { # NS
    local ns=$1 fam name
    while read -r fam name; do
        [[ -n "$name" ]] && lab_ns_exec_quiet "$ns" nft delete table "$fam" "$name"
    done < <(timeout 5 ip netns exec "$ns" nft list tables 2>/dev/null | awk '$1 == "table" && $3 ~ /^conntrackr/ {print $2, $3}')
}

lab_cleanup() {
    local rc=$?
    ((LAB_CLEANED)) && return "$rc"
    LAB_CLEANED=1
    trap - EXIT INT TERM
    set +e
    local hook pid ns entry fam name iface
    for hook in "${LAB_CLEANUP_HOOKS[@]}"; do eval "$hook" >/dev/null 2>&1; done
    # Processes started by the test: TERM, then KILL after 3 s.
    for pid in "${LAB_PIDS[@]}"; do lab_alive "$pid" && kill -s TERM "$pid" 2>/dev/null; done
    for _ in $(seq 30); do
        local alive=0
        for pid in "${LAB_PIDS[@]}"; do lab_alive "$pid" && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${LAB_PIDS[@]}"; do lab_alive "$pid" && kill -s KILL "$pid" 2>/dev/null; done
    for pid in "${LAB_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    # Anything else still running inside the lab (children that escaped, daemons a test started).
    lab_kill_ns_procs "${LAB_NAMESPACES[@]}"
    # bpffs pin directories the test registered (lab_register_pin_dir checked they are under /sys/fs/bpf); first,
    # because a pinned bpf_link keeps its XDP program attached until the pin goes.
    for entry in "${LAB_PIN_DIRS[@]}"; do rm -rf -- "$entry"; done
    # XDP programs: on every lab interface and on the registered ones.
    for ns in "${LAB_NAMESPACES[@]}"; do
        [[ -e /run/netns/$ns ]] && lab_detach_xdp "$ns"
    done
    for entry in "${LAB_XDP_IFACES[@]}"; do
        read -r ns iface <<<"$entry"
        lab_detach_xdp_iface "$ns" "$iface"
    done
    # nftables tables.
    for ns in "${LAB_NAMESPACES[@]}"; do
        [[ -e /run/netns/$ns ]] && lab_delete_conntrackr_tables "$ns"
    done
    for entry in "${LAB_NFT_TABLES[@]}"; do
        read -r ns fam name <<<"$entry"
        lab_ns_exec_quiet "$ns" nft delete table "$fam" "$name"
    done
    # Namespaces (deleting one deletes the veth ends in it, and with them their peers).
    for ns in "${LAB_NAMESPACES[@]}"; do
        [[ -e /run/netns/$ns ]] && timeout 10 ip netns del "$ns" 2>/dev/null
    done
    if [[ -n "${LAB_TMP:-}" && -d "$LAB_TMP" ]]; then
        if [[ $rc -eq 0 || $rc -eq 77 ]] && [[ -z "${E2E_KEEP_TMP:-}" ]]; then
            rm -rf -- "$LAB_TMP"
        else
            echo "lab: logs kept in $LAB_TMP" >&2
        fi
    fi
    return "$rc"
}

# Removes whatever a run with SUFFIX left behind (used by run-all.sh after a test that was killed outright).
# Prints the names of the namespaces it had to delete.
lab_reap() { # SUFFIX
    local s=$1 ns left=()
    [[ "$s" =~ ^[A-Za-z0-9]{1,9}$ ]] || return 0
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
        [[ "$ns" =~ ^ctr-(sw|vic|vic2|att|cli)-$s$ ]] && left+=("$ns")
    done
    ((${#left[@]})) || return 0
    lab_kill_ns_procs "${left[@]}"
    for ns in "${left[@]}"; do
        timeout 10 ip netns del "$ns" 2>/dev/null
        echo "$ns"
    done
}
